//! End-to-end YCSB runs through the real command path (server and client in one process).

use bench::cli::{Cli, Command};
use bench::commands::ycsb;
use bench::report::Report;
use clap::Parser;

/// Each test runs a whole system (server and client threads); run them one at a time so
/// they measure the system, not each other on 2 cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(args: &[&str]) -> Report {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut argv = vec!["netmigrate", "ycsb", "--quiet"];
    argv.extend_from_slice(args);
    let Command::Ycsb(args) = Cli::try_parse_from(argv).expect("arguments parse").command else {
        panic!("not a ycsb command");
    };
    ycsb::execute(*args).expect("the run succeeds")
}

fn assert_clean(report: &Report) {
    assert!(report.ops.completed > 0, "no operation completed");
    assert_eq!(report.ops.failed, 0, "failed operations");
    assert!(
        report.consistency.checked_ops > report.ops.completed,
        "history not checked"
    );
    assert_eq!(
        report.consistency.violations, 0,
        "linearizability violations"
    );
}

/// Loss, duplication and reordering in the in-process network: retransmission and server
/// dedup keep YCSB-A free of failures and violations.
#[test]
fn ycsb_a_survives_loss_duplication_and_reordering() {
    let report = run(&[
        "--embedded",
        "--workload",
        "a",
        "--records",
        "2000",
        "--operations",
        "40000",
        "--threads",
        "2",
        "--window",
        "16",
        "--partitions",
        "2",
        "--timeout-ms",
        "1",
        "--loss",
        "0.05",
        "--duplicate",
        "0.05",
        "--reorder",
        "0.05",
        "--check",
    ]);
    assert_clean(&report);
    assert!(report.ops.retries > 0, "loss must force retransmissions");
    let injected = &report.client["injected"];
    assert!(injected["losses"].as_u64().unwrap() > 0);
    assert!(injected["duplicates"].as_u64().unwrap() > 0);
    assert!(injected["reorders"].as_u64().unwrap() > 0);
    let duplicates: u64 = report
        .server
        .as_ref()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["duplicate_writes"].as_u64().unwrap())
        .sum();
    assert!(
        duplicates > 0,
        "the servers must have suppressed re-executed writes"
    );
}

/// Workloads with inserts (D, latest) and read-modify-write (F).
#[test]
fn workloads_d_and_f_are_linearizable() {
    for workload in ["d", "f"] {
        let report = run(&[
            "--embedded",
            "--workload",
            workload,
            "--records",
            "1000",
            "--operations",
            "20000",
            "--check",
        ]);
        assert_clean(&report);
        assert_eq!(report.workload.name, workload);
    }
}

/// The same path over kernel UDP sockets on loopback, in open-loop mode.
#[test]
fn udp_loopback_open_loop() {
    let report = run(&[
        "--embedded",
        "--transport",
        "udp",
        "--server",
        "127.0.0.1:47100",
        "--partitions",
        "2",
        "--records",
        "2000",
        "--duration",
        "1",
        "--rate",
        "20000",
        "--check",
    ]);
    assert_clean(&report);
    let rate = report.throughput_ops.overall;
    assert!(
        (10_000.0..=25_000.0).contains(&rate),
        "open loop held {rate} ops/s"
    );
    assert_eq!(report.transport, "udp");
    assert!(!report.timeline.is_empty());
}

/// Busy-polling client threads and server partitions serve the same run (no loop ever
/// yields or naps; on 2 cores the two loops take one each).
#[test]
fn busy_polling_loops_run_clean() {
    let report = run(&[
        "--embedded",
        "--busy-poll",
        "--records",
        "2000",
        "--duration",
        "1",
        "--check",
    ]);
    assert_clean(&report);
}

#[test]
fn bad_input_is_refused_with_a_message() {
    let parse = |args: &[&str]| {
        let mut argv = vec!["netmigrate", "ycsb", "--quiet"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Ycsb(a),
            }) => ycsb::execute(*a).map(|_| ()).map_err(|e| e.to_string()),
            Ok(_) => unreachable!(),
            Err(e) => Err(e.to_string()),
        }
    };
    assert!(parse(&["--workload", "e"]).unwrap_err().contains("scans"));
    assert!(parse(&["--transport", "memory"])
        .unwrap_err()
        .contains("--embedded"));
    assert!(parse(&["--embedded", "--loss", "2"])
        .unwrap_err()
        .contains("probability"));
    assert!(parse(&["--embedded", "-p", "requestdistribution=hotspot"]).is_err());
    assert!(parse(&["--embedded", "--window", "0"]).is_err());
}
