//! Chain replication across real processes (docs/replication.md): three `netmigrate
//! server`s started with the same `--chain`, YCSB-A through the head, and every record read
//! back at the tail, which holds only what is committed: what the head acknowledged is there.

mod common;

use common::{netmigrate, wait_within, Children};
use std::process::{Command, Output};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_chain_of_three_processes_keeps_what_its_head_acknowledged_at_its_tail() {
    let dir = tempfile::tempdir().unwrap();
    let net = 100 + std::process::id() % 50; // 127.<net>.0.0/24, apart from other runs
    let replicas: Vec<String> = (1..=3).map(|k| format!("127.{net}.0.{k}:7100")).collect();
    let chain = replicas.join(",");
    let _servers = Children(
        replicas
            .iter()
            .map(|addr| {
                let args = ["server", "--listen", addr, "--chain", &chain];
                netmigrate(&[&args[..], &["--group-bits", "10", "--duration", "50"]].concat())
            })
            .collect(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let history = dir.path().join("history.jsonl");
    let history = history.to_str().unwrap();
    // `target`: `--server ADDR` or `--chain ADDR,…`.
    let ycsb = |target: &[&str], extra: &[&str]| {
        let common = [
            "ycsb",
            "--group-bits",
            "10",
            "-w",
            "a",
            "--records",
            "2000",
            "--quiet",
        ];
        netmigrate(&[&common[..], target, extra].concat())
    };
    let (head, tail) = (&replicas[0], &replicas[2]);
    let mut run = ycsb(
        &["--server", head],
        &["--duration", "2", "--check", "--history", history],
    );
    assert!(
        wait_within(&mut run, LIMIT, "ycsb").success(),
        "the run failed"
    );
    let text = std::fs::read_to_string(history).expect("the history was written");
    let acknowledged = text.matches(r#""type": "ok", "f": "write""#).count();
    assert!(acknowledged > 1_000, "{acknowledged} acknowledged writes");
    let mut read_back = ycsb(&["--server", tail], &["--read-back", history]);
    let status = wait_within(&mut read_back, LIMIT, "ycsb --read-back");
    assert!(status.success(), "the tail is missing acknowledged writes");
    // Reads spread over the chain (CRAQ) while writes go on: still linearizable.
    let spread = dir.path().join("spread.jsonl");
    let extra = [
        "--duration",
        "2",
        "--check",
        "--history",
        spread.to_str().unwrap(),
    ];
    let mut run = ycsb(&["--chain", &chain], &extra);
    assert!(wait_within(&mut run, LIMIT, "ycsb --chain").success());
}

#[test]
fn a_chain_that_does_not_name_the_server_is_refused() {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_netmigrate"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:7100",
            "--chain",
            "127.0.0.2:7100,127.0.0.3:7100",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--chain"), "{stderr}");
}
