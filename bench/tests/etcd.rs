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

/// An etcd with its data under `dir`, serving clients on the returned URL.
fn start_etcd(dir: &Path) -> (Child, String) {
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let etcd = Command::new("etcd")
        .args(["--name", "test", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-cluster", &format!("test=http://127.0.0.1:{peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd starts (Debian's etcd-server: scripts/setup.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", client)).is_err() {
        assert!(Instant::now() < deadline, "etcd did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    (etcd, url)
}

/// A server whose output is appended to `log`.
fn server(addr: &str, etcd: &str, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_netmigrate"))
        .args(["server", "--listen", addr, "--etcd", etcd])
        .args(["--group-bits", "10", "--duration", "80"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("netmigrate starts")
}

#[test]
fn a_chain_in_etcd_survives_its_head_killed_and_takes_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd, url) = start_etcd(dir.path());
    let mut children = Children(vec![etcd]);
    let coordinator_log = dir.path().join("coordinator.log");
    children.0.push(
        Command::new(env!("CARGO_BIN_EXE_netmigrate"))
            .args(["coordinator", "--etcd", &url, "--replicas", "3", "--duration", "80"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&coordinator_log).unwrap())
            .spawn()
            .expect("the coordinator starts"),
    );
    let net = 150 + std::process::id() % 50; // 127.<net>.0.0/24, apart from other runs
    let replicas: Vec<String> = (1..=3).map(|k| format!("127.{net}.0.{k}:7100")).collect();
    let logs: Vec<_> = (1..=3).map(|k| dir.path().join(format!("server-{k}.log"))).collect();
    let start = |k: usize| server(&replicas[k], &url, &logs[k]);
    let mut servers: Vec<Child> = (0..3).map(start).collect();
    let report = dir.path().join("report.json");
    let mut ycsb = netmigrate(&[
        "ycsb",
        "--etcd",
        &url,
        "--group-bits",
        "10",
        "-w",
        "a",
        "--records",
        "2000",
        "--duration",
        "12",
        "--check",
        "--quiet",
        "--json",
        report.to_str().unwrap(),
    ]);
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
    let mut log = std::fs::read_to_string(&coordinator_log).unwrap();
    for path in &logs {
        log += &std::fs::read_to_string(path).unwrap_or_default();
    }
    assert!(status.success(), "the run failed; the processes said:\n{log}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["ops"]["failed"], 0, "{report}\n{log}");
    assert_eq!(report["consistency"]["violations"], 0, "{report}");
    assert!(report["consistency"]["checked_ops"].as_u64().unwrap() > 10_000);
    // The head was replaced by its successor, and the restarted one became a tail again.
    let (first, second, third) = (&replicas[0], &replicas[1], &replicas[2]);
    let replaced = format!("members {second},{third}, learner -");
    let rejoined = format!("members {second},{third},{first}, learner -");
    assert!(log.contains(&replaced), "{log}");
    assert!(log.contains(&rejoined), "{log}");
}
