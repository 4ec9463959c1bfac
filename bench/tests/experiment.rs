//! End-to-end migrations in one process (client, software switch, source and destination)
//! through the real command path, for every protocol, checked for linearizability.

use bench::cli::{Cli, Command};
use bench::commands::experiment;
use bench::report::Report;
use clap::Parser;

/// Each test runs a whole topology on 2 cores: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(args: &[&str]) -> Report {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut argv = vec!["netmigrate", "experiment", "--quiet", "--check"];
    argv.extend_from_slice(args);
    let Command::Experiment(args) = Cli::try_parse_from(argv).expect("arguments parse").command
    else {
        panic!("not an experiment");
    };
    experiment::execute(*args).expect("the experiment succeeds")
}

/// A finished, failure-free, linearizable migration that moved every record.
fn assert_finished_linearizable(report: &Report, records: u64) {
    assert!(report.ops.completed > 0);
    assert_eq!(report.ops.failed, 0, "failed operations");
    assert!(report.consistency.checked_ops > report.ops.completed);
    assert_eq!(
        report.consistency.violations, 0,
        "linearizability violations"
    );
    let migration = report.migration.as_ref().expect("a migration ran");
    assert!(
        migration["finished_at_s"].is_number(),
        "the migration finished"
    );
    // Deletes before the migration removed keys: what must move is what the source held.
    let held = migration["keys_at_start"].as_u64().unwrap();
    assert!(held <= records && held > records / 2, "{migration}");
    assert!(
        migration["keys_moved"].as_u64().unwrap() >= held,
        "every key the source held moved"
    );
    assert!(report.throughput_ops.during.is_some());
}

fn assert_migrated_cleanly(report: &Report, records: u64) {
    assert_finished_linearizable(report, records);
    let migration = report.migration.as_ref().expect("a migration ran");
    // Every key the source held moved, and none twice: keys deleted before the migration
    // and written again during it move too, but the keys are at most the records loaded.
    let (moved, held) = (
        migration["keys_moved"].as_u64().unwrap(),
        migration["keys_at_start"].as_u64().unwrap(),
    );
    assert!(
        held <= moved && moved <= records,
        "every key moved once: {migration}"
    );
    let server = report.server.as_ref().expect("server counters");
    let switch = &server["switch"]["counters"];
    assert_eq!(switch["pairs_installed"], 1);
    assert_eq!(switch["pairs_removed"], 1, "cut-over cleared the pair");
}

/// The fault-injection settings of the lossy runs: 2 % loss, duplication and reordering on
/// every hop, a write-heavy workload with deletes (tombstones are migrated, pulled and
/// returned like values), a short migration.
const LOSSY: &[&str] = &[
    "--workload",
    "a",
    "-p",
    "deleteproportion=0.1",
    "--records",
    "3000",
    "--duration",
    "2",
    "--migrate-at",
    "0.5",
    "--tail",
    "0.5",
    "--threads",
    "2",
    "--window",
    "16",
    "--group-bits",
    "8",
    "--partitions",
    "2",
    "--timeout-ms",
    "1",
    "--loss",
    "0.02",
    "--duplicate",
    "0.02",
    "--reorder",
    "0.02",
    "--preset",
    "short",
    "--capacity",
    "50000",
];

fn lossy_run(protocol: &str) -> Report {
    let mut args = vec!["--protocol", protocol];
    args.extend_from_slice(LOSSY);
    let report = run(&args);
    assert_eq!(report.protocol, protocol);
    assert_finished_linearizable(&report, 3000);
    assert!(report.client["injected"]["losses"].as_u64().unwrap() > 0);
    assert!(
        report.client["deletes_not_found"].as_u64().unwrap() > 0,
        "keys were deleted, and deleted again once gone"
    );
    let switch = &report.server.as_ref().unwrap()["switch"]["counters"];
    if protocol != "netmigrate" {
        assert_eq!(
            switch["pairs_installed"], 0,
            "the baselines bypass the switch"
        );
    }
    report
}

/// Rocksteady: clients move to the destination at once; reads of keys not there yet are
/// pulled (and the pulls survive loss).
#[test]
fn rocksteady_under_loss_duplication_and_reordering_is_linearizable() {
    let report = lossy_run("rocksteady");
    let overhead = report.overhead.as_ref().unwrap();
    assert!(
        overhead["priority_pulls"].as_u64().unwrap() > 0,
        "{overhead}"
    );
    assert!(overhead["moved_replies"].as_u64().unwrap() > 0);
    assert_eq!(overhead["double_reads"], 0);
}

/// Fulva: writes go to the destination, reads of what has not migrated go to both.
#[test]
fn fulva_under_loss_duplication_and_reordering_is_linearizable() {
    let report = lossy_run("fulva");
    let overhead = report.overhead.as_ref().unwrap();
    assert!(overhead["double_reads"].as_u64().unwrap() > 0, "{overhead}");
    assert!(overhead["client_extra_bytes_pct"].as_f64().unwrap() > 0.0);
}

/// Source-based: the source serves throughout, re-ships what was written after its group
/// left, and stops only for the final copy.
#[test]
fn source_based_under_loss_duplication_and_reordering_is_linearizable() {
    let report = lossy_run("source");
    let server = report.server.as_ref().unwrap();
    assert!(server["migration"]["catch_up_rounds"].as_u64().unwrap() >= 1);
    assert_eq!(report.overhead.as_ref().unwrap()["double_reads"], 0);
}

/// Loss, duplication and reordering on every hop (client, switch, servers, migration
/// streams): the migration still finishes, nothing fails, the history is linearizable.
#[test]
fn migration_under_loss_duplication_and_reordering_is_linearizable() {
    let report = lossy_run("netmigrate");
    assert_migrated_cleanly(&report, 3000);
    let migration = &report.server.as_ref().unwrap()["migration"];
    assert!(
        migration["stream_retransmissions"].as_u64().unwrap() > 0,
        "lost stream messages were retransmitted"
    );
}

/// Multi-key reads and writes (8 keys per request) under loss, duplication and reordering:
/// the switch splits requests whose keys sit on both servers, the servers answer their keys
/// and pass on what is not theirs, the client merges the answers, and the history is
/// linearizable key by key.
fn multi_key_lossy_run(protocol: &str) -> Report {
    let mut args = vec!["--protocol", protocol, "-p", "keysperrequest=8"];
    args.extend_from_slice(LOSSY);
    let report = run(&args);
    assert_finished_linearizable(&report, 3000);
    let client = &report.client;
    let (requests, keys) = (
        client["multi_key_requests"].as_u64().unwrap(),
        client["multi_key_keys"].as_u64().unwrap(),
    );
    assert!(requests > 0 && keys > 2 * requests, "{client}");
    report
}

#[test]
fn netmigrate_multi_key_requests_split_and_merge_linearizably() {
    let report = multi_key_lossy_run("netmigrate");
    assert_migrated_cleanly(&report, 3000);
    let switch = &report.server.as_ref().unwrap()["switch"]["counters"];
    assert!(switch["multi_splits"].as_u64().unwrap() > 0, "{switch}");
}

#[test]
fn rocksteady_multi_key_requests_pull_and_retry_linearizably() {
    let report = multi_key_lossy_run("rocksteady");
    let overhead = report.overhead.as_ref().unwrap();
    assert!(
        overhead["priority_pulls"].as_u64().unwrap() > 0,
        "{overhead}"
    );
}

/// An abort half-way under loss, duplication and reordering: the destination sends back
/// what it holds (also what clients wrote there), both partitions end back at the source,
/// and the history is linearizable.
fn aborted_lossy_run(protocol: &str, extra: &[&str]) -> Report {
    let mut args = vec![
        "--protocol",
        protocol,
        "--migration-rate",
        "2000",
        "--abort-after",
        "0.3",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(LOSSY);
    let report = run(&args);
    assert_eq!(report.ops.failed, 0, "{protocol}: failed operations");
    assert_eq!(report.consistency.violations, 0, "{protocol}: violations");
    assert!(report.consistency.checked_ops > report.ops.completed);
    let migration = report.migration.as_ref().expect("a migration ran");
    assert_eq!(migration["aborted"], true, "{migration}");
    assert!(
        migration["finished_at_s"].is_number(),
        "the shard came back"
    );
    let (moved, returned) = (
        migration["keys_moved"].as_u64().unwrap(),
        migration["returned_keys"].as_u64().unwrap(),
    );
    assert!(moved > 0 && moved < 3000, "aborted half-way: {moved} moved");
    assert!(returned > 0, "what the destination held came back");
    assert!(report.client["injected"]["losses"].as_u64().unwrap() > 0);
    report
}

/// NetMigrate: the switch also forgets the pair.
#[test]
fn netmigrate_abort_under_loss_gives_the_shard_back_linearizably() {
    let report = aborted_lossy_run("netmigrate", &[]);
    let switch = &report.server.as_ref().unwrap()["switch"]["counters"];
    assert_eq!(switch["pairs_installed"], 1);
    assert_eq!(switch["pairs_removed"], 1, "the switch forgot the pair");
}

/// The same with multi-key requests: keys the switch still steers to the destination while
/// it hands the shard back are passed to the source.
#[test]
fn netmigrate_abort_with_multi_key_requests_is_linearizable() {
    let report = aborted_lossy_run("netmigrate", &["-p", "keysperrequest=8"]);
    assert!(report.client["multi_key_requests"].as_u64().unwrap() > 0);
}

/// Fulva: clients that followed MOVED to the destination (and double-read both sides)
/// are sent back to the source.
#[test]
fn fulva_abort_under_loss_gives_the_shard_back_linearizably() {
    let report = aborted_lossy_run("fulva", &[]);
    let overhead = report.overhead.as_ref().expect("overhead");
    assert!(
        overhead["moved_replies"].as_u64().unwrap() >= 2,
        "to the destination and back: {overhead}"
    );
}

/// Tiny switch filters make false positives of both filters common: the destination
/// passes what it does not own back to the source, and the run stays correct.
fn false_positive_run(extra: &[&str]) -> Report {
    let mut args = vec![
        "--workload",
        "a",
        "--records",
        "2000",
        "--duration",
        "1.5",
        "--migrate-at",
        "0.3",
        "--tail",
        "0.3",
        "--window",
        "8",
        "--group-bits",
        "10",
        "--bf-cells",
        "16",
        "--cbf-cells",
        "16",
        "--migration-rate",
        "4000",
        "--capacity",
        "0",
    ];
    args.extend_from_slice(extra);
    let report = run(&args);
    assert_migrated_cleanly(&report, 2000);
    let switch = &report.server.as_ref().unwrap()["switch"]["counters"];
    let false_positives =
        switch["false_done"].as_u64().unwrap() + switch["false_in_flight"].as_u64().unwrap();
    assert!(
        false_positives > 0,
        "the tiny filters produced false positives"
    );
    report
}

#[test]
fn switch_false_positives_stay_correct() {
    false_positive_run(&[]);
}

/// With multi-key requests, the destination answers the keys it holds and passes the
/// others (false positives) to the source in a copy of the request.
#[test]
fn switch_false_positives_with_multi_key_requests_stay_correct() {
    let report = false_positive_run(&["-p", "keysperrequest=8"]);
    let overhead = report.overhead.as_ref().unwrap();
    assert!(
        overhead["forwarded_by_destination"].as_u64().unwrap() > 0,
        "{overhead}"
    );
}

#[test]
fn unimplemented_transports_are_refused_clearly() {
    let argv = ["netmigrate", "experiment", "--quiet", "--transport", "dpdk"];
    let Command::Experiment(parsed) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not an experiment");
    };
    let error = experiment::execute(*parsed).expect_err("refused");
    assert!(error.0.contains("built without DPDK"), "{}", error.0);
}

/// An experiment's switch, servers and client share the cores: busy-polling loops would
/// starve each other, so the flag is refused before anything starts.
#[test]
fn busy_polling_is_refused_by_experiment_and_compare() {
    let argv = ["netmigrate", "experiment", "--quiet", "--busy-poll"];
    let Command::Experiment(parsed) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not an experiment");
    };
    let error = experiment::execute(*parsed).expect_err("refused");
    assert!(error.0.contains("--busy-poll"), "{}", error.0);

    let argv = ["netmigrate", "compare", "--quiet", "--busy-poll"];
    let Command::Compare(parsed) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not a compare");
    };
    let error = bench::commands::compare::run(*parsed).expect_err("refused");
    assert!(error.0.contains("--busy-poll"), "{}", error.0);
}
