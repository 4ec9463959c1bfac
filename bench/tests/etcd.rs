//! A chain whose membership lives in a real etcd (docs/replication.md): an etcd of the test's
//! own on loopback ports, `netmigrate coordinator`, three `netmigrate server --etcd`, and
//! YCSB-A through `ycsb --etcd --check` while the head is killed with SIGKILL, restarted,
//! and another replica killed. Needs the `etcd` feature and Debian's etcd-server
//! (scripts/setup.sh installs both's needs).
#![cfg(feature = "etcd")]

mod common;

use common::{netmigrate, wait_within, Children};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(90);

/// A loopback TCP port nothing listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// An etcd with its data under `dir`, serving clients on the returned URL. Ports are picked
/// free, but another test may pick the same one meanwhile: an etcd that could not bind (it
/// exits at once, while the other one answers on the port) is started again on others.
fn start_etcd(dir: &Path) -> (Child, String) {
    for attempt in 0..5 {
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut etcd = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(dir.join(format!("etcd-{attempt}")))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts (Debian's etcd-server: scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", client)).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        if etcd.try_wait().unwrap().is_none() && TcpStream::connect(("127.0.0.1", client)).is_ok() {
            return (etcd, url);
        }
        let _ = etcd.kill();
        let _ = etcd.wait();
    }
    panic!("etcd did not start (5 attempts)");
}

/// `netmigrate ARGS`, its error output appended to `log`.
fn logged(args: &[&str], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_netmigrate"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("netmigrate starts")
}

/// A server of chain `chain` in etcd.
fn server(chain: &str, addr: &str, etcd: &str, log: &Path, extra: &[&str]) -> Child {
    let args = [
        "server",
        "--listen",
        addr,
        "--etcd",
        etcd,
        "--chain-name",
        chain,
    ];
    let common = ["--group-bits", "10", "--duration", "80"];
    logged(&[&args[..], &common, extra].concat(), log)
}

/// `netmigrate coordinator` for chain `chain` of three.
fn coordinator(chain: &str, etcd: &str, log: &Path) -> Child {
    let args = [
        "coordinator",
        "--etcd",
        etcd,
        "--chain-name",
        chain,
        "--replicas",
        "3",
    ];
    logged(&[&args[..], &["--duration", "80"]].concat(), log)
}

/// A YCSB-A client of chain `chain` in etcd, with `extra` arguments.
fn ycsb(chain: &str, etcd: &str, extra: &[&str]) -> Child {
    let args = [
        "ycsb",
        "--etcd",
        etcd,
        "--chain-name",
        chain,
        "--group-bits",
        "10",
        "-w",
        "a",
    ];
    netmigrate(&[&args[..], &["--records", "2000", "--quiet"], extra].concat())
}

/// Everything the processes of a test printed.
fn logs_of(paths: &[std::path::PathBuf]) -> String {
    let texts = paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default());
    texts.collect::<Vec<_>>().join("")
}

#[test]
fn a_chain_in_etcd_survives_its_head_killed_and_takes_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd, url) = start_etcd(dir.path());
    let mut children = Children(vec![etcd]);
    let coordinator_log = dir.path().join("coordinator.log");
    children
        .0
        .push(coordinator("kill-head", &url, &coordinator_log));
    let net = 150 + std::process::id() % 50; // 127.<net>.0.0/24, apart from other runs
    let replicas: Vec<String> = (1..=3).map(|k| format!("127.{net}.0.{k}:7100")).collect();
    let logs: Vec<_> = (1..=3)
        .map(|k| dir.path().join(format!("server-{k}.log")))
        .collect();
    let start = |k: usize| server("kill-head", &replicas[k], &url, &logs[k], &[]);
    let mut servers: Vec<Child> = (0..3).map(start).collect();
    let report = dir.path().join("report.json");
    let json = [
        "--duration",
        "12",
        "--check",
        "--json",
        report.to_str().unwrap(),
    ];
    let mut ycsb = ycsb("kill-head", &url, &json);
    // The first three servers to register form the chain in address order: the first is
    // its head. It is killed, restarted empty, and another replica is killed after it
    // rejoined (as the tail).
    std::thread::sleep(Duration::from_secs(4));
    let _ = servers[0].kill();
    std::thread::sleep(Duration::from_secs(2));
    servers[0] = start(0);
    std::thread::sleep(Duration::from_secs(4));
    let _ = servers[1].kill();
    let status = wait_within(&mut ycsb, LIMIT, "ycsb");
    children.0.extend(servers);
    let log = std::fs::read_to_string(&coordinator_log).unwrap() + &logs_of(&logs);
    assert!(
        status.success(),
        "the run failed; the processes said:\n{log}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["ops"]["failed"], 0, "{report}\n{log}");
    assert_eq!(report["consistency"]["violations"], 0, "{report}");
    assert!(report["consistency"]["checked_ops"].as_u64().unwrap() > 10_000);
    // The head was replaced by its successor, and the restarted one became a tail again.
    // (The restart may register before the coordinator's turn that takes out the dead
    // process: it is then already the learner when the new membership is printed.)
    let (first, second, third) = (&replicas[0], &replicas[1], &replicas[2]);
    let replaced = format!("members {second},{third}, learner");
    let rejoined = format!("members {second},{third},{first}, learner -");
    assert!(log.contains(&replaced), "{log}");
    assert!(log.contains(&rejoined), "{log}");
}

#[test]
fn a_whole_chain_killed_and_restarted_from_its_logs_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd, url) = start_etcd(dir.path());
    let mut children = Children(vec![etcd]);
    let net = 100 + std::process::id() % 50;
    let replicas: Vec<String> = (1..=3).map(|k| format!("127.{net}.1.{k}:7100")).collect();
    let mut logs: Vec<_> = (1..=3)
        .map(|k| dir.path().join(format!("server-{k}.log")))
        .collect();
    let coordinator_log = dir.path().join("coordinator.log");
    let start_all = |children: &mut Vec<Child>| {
        children.push(coordinator("restart-all", &url, &coordinator_log));
        for k in 0..3 {
            let log_dir = dir.path().join(format!("log-{k}"));
            let durable = ["--log-dir", log_dir.to_str().unwrap(), "--fsync", "always"];
            children.push(server(
                "restart-all",
                &replicas[k],
                &url,
                &logs[k],
                &durable,
            ));
        }
    };
    let mut cluster = Vec::new();
    start_all(&mut cluster);
    let history = dir.path().join("history.jsonl");
    let history = history.to_str().unwrap();
    let mut run = ycsb(
        "restart-all",
        &url,
        &["--duration", "10", "--history", history],
    );
    // Every server and the coordinator die at once (SIGKILL) and start again.
    std::thread::sleep(Duration::from_secs(4));
    let mut dead = Children(cluster);
    dead.kill_all();
    let mut cluster = Vec::new();
    start_all(&mut cluster);
    children.0.extend(cluster);
    let status = wait_within(&mut run, LIMIT, "ycsb");
    logs.push(coordinator_log.clone());
    assert!(status.success(), "the run failed:\n{}", logs_of(&logs));
    let text = std::fs::read_to_string(history).expect("the history was written");
    let acknowledged = text.matches(r#""type": "ok", "f": "write""#).count();
    assert!(acknowledged > 1_000, "{acknowledged} acknowledged writes");
    let mut read_back = ycsb("restart-all", &url, &["--read-back", history]);
    let status = wait_within(&mut read_back, LIMIT, "ycsb --read-back");
    assert!(
        status.success(),
        "acknowledged writes are missing:\n{}",
        logs_of(&logs)
    );
}
