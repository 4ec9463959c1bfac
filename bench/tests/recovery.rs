//! Durable logs across real processes: a cluster of `netmigrate server`s under YCSB-A, every
//! server killed with SIGKILL mid-run and started again on its log (`--fsync always`), and
//! every write it acknowledged read back (`ycsb --read-back`, which checks the run's history
//! with the reads appended).

mod common;

use common::{netmigrate, wait_within, Children};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn server(addr: &str, shard: &str, log_dir: &Path) -> Child {
    netmigrate(&[
        "server",
        "--listen",
        addr,
        "--shard",
        shard,
        "--group-bits",
        "10",
        "--log-dir",
        log_dir.to_str().unwrap(),
        "--fsync",
        "always",
    ])
}

/// Three servers, a shard each, under YCSB-A; all three killed with SIGKILL one second into
/// the run, then started again on their logs: each history, with every record read back
/// after the restart, is linearizable, so no acknowledged write was lost.
#[test]
fn a_cluster_killed_with_sigkill_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let net = 150 + std::process::id() % 50; // 127.<net>.0.0/24, apart from other runs
    let hosts: Vec<(String, String)> = (1..=3)
        .map(|k| (format!("127.{net}.0.{}:7100", k + 1), k.to_string()))
        .collect();
    let log_dir = |shard: &str| dir.path().join(format!("server-{shard}"));
    let history = |shard: &str| dir.path().join(format!("history-{shard}.jsonl"));
    let mut servers = Children(
        hosts
            .iter()
            .map(|(addr, shard)| server(addr, shard, &log_dir(shard)))
            .collect(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let ycsb = |addr: &str, shard: &str, extra: &[&str]| {
        let mut args = vec![
            "ycsb",
            "--server",
            addr,
            "--shard",
            shard,
            "--group-bits",
            "10",
            "-w",
            "a",
            "--records",
            "2000",
            "--give-up-ms",
            "1000",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        netmigrate(&args)
    };
    let histories: Vec<String> = hosts
        .iter()
        .map(|(_, shard)| history(shard).to_str().unwrap().to_string())
        .collect();
    let mut clients: Vec<Child> = hosts
        .iter()
        .zip(&histories)
        .map(|((addr, shard), h)| ycsb(addr, shard, &["--duration", "3", "--history", h]))
        .collect();
    std::thread::sleep(Duration::from_millis(2_000));
    servers.kill_all();
    for client in &mut clients {
        // Its operations after the kill fail (outcome unknown), which the history says.
        wait_within(client, LIMIT, "ycsb");
    }
    for h in &histories {
        let text = std::fs::read_to_string(h).expect("the history was written");
        let acknowledged = text.matches(r#""type": "ok", "f": "write""#).count();
        assert!(
            acknowledged > 1_000,
            "{h}: {acknowledged} acknowledged writes"
        );
    }
    servers.0 = hosts
        .iter()
        .map(|(addr, shard)| server(addr, shard, &log_dir(shard)))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for ((addr, shard), h) in hosts.iter().zip(&histories) {
        let mut read_back = ycsb(addr, shard, &["--read-back", h]);
        let status = wait_within(&mut read_back, LIMIT, "ycsb --read-back");
        assert!(
            status.success(),
            "shard {shard}: the read-back found acknowledged writes missing"
        );
    }
}
