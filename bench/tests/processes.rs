//! The experiment with every role in its own process (`--transport udp`): a `netmigrate
//! switch` and two `netmigrate server`s behind the kernel-UDP overlay, the migration
//! started and watched over the servers' control APIs (gRPC), checked for linearizability.

mod common;

use common::{wait_within, Children};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A run's whole budget: it normally takes about 10 s.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Each run is five processes on 2 cores: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(protocol: &str, extra: &[&str]) -> serde_json::Value {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let json: PathBuf = std::env::temp_dir().join(format!(
        "netmigrate-processes-{}-{protocol}.json",
        std::process::id()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_netmigrate"))
        .args(["experiment", "--transport", "udp", "--quiet", "--check"])
        .args(["--protocol", protocol, "--preset", "short"])
        .args([
            "--records",
            "20000",
            "--duration",
            "4",
            "--migrate-at",
            "1",
            "--tail",
            "0.5",
        ])
        .args([
            "--group-bits",
            "10",
            "--partitions",
            "2",
            "--max-migration-s",
            "60",
        ])
        .args(extra)
        .arg("--json")
        .arg(&json)
        .spawn()
        .expect("netmigrate starts");
    let status = wait_within(&mut child, RUN_LIMIT, "the experiment");
    assert!(status.success(), "the experiment failed: {status}");
    let text = std::fs::read_to_string(&json).expect("the report was written");
    let _ = std::fs::remove_file(&json);
    serde_json::from_str(&text).expect("the report is JSON")
}

fn assert_clean_migration(report: &serde_json::Value, protocol: &str) {
    assert_eq!(report["protocol"], protocol);
    assert_eq!(report["transport"], "udp");
    assert_eq!(report["ops"]["failed"], 0, "failed operations");
    assert_eq!(report["consistency"]["violations"], 0, "linearizability");
    assert!(report["consistency"]["checked_ops"].as_u64().unwrap() > 20_000);
    let migration = &report["migration"];
    assert!(
        migration["finished_at_s"].is_number(),
        "the migration finished"
    );
    assert_eq!(migration["keys_moved"], 20_000, "every record moved once");
    let server = &report["server"];
    assert_eq!(server["roles"], "processes");
    // Counters came back over the control API from both servers.
    let entries: u64 = server["destination"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["entries"].as_u64().unwrap())
        .sum();
    assert!(entries >= 20_000, "the destination holds every record");
}

#[test]
fn netmigrate_across_processes_through_the_switch() {
    let report = run("netmigrate", &[]);
    assert_clean_migration(&report, "netmigrate");
    let switch = &report["server"]["switch"]["counters"];
    assert_eq!(switch["pairs_installed"], 1);
    assert_eq!(switch["pairs_removed"], 1, "cut-over cleared the pair");
    assert!(
        switch["redirects"].as_u64().unwrap() > 0,
        "the switch steered requests"
    );
}

#[test]
fn rocksteady_across_processes() {
    let report = run("rocksteady", &[]);
    assert_clean_migration(&report, "rocksteady");
    assert_eq!(report["server"]["switch"]["counters"]["pairs_installed"], 0);
}

/// `--abort-after` across processes: the abort goes over the source's control API, the
/// destination process sends the shard back, and the switch process forgets the pair.
#[test]
fn an_abort_across_processes_gives_the_shard_back() {
    let report = run(
        "netmigrate",
        &["--migration-rate", "3000", "--abort-after", "0.5"],
    );
    assert_eq!(report["ops"]["failed"], 0, "failed operations");
    assert_eq!(report["consistency"]["violations"], 0, "linearizability");
    let migration = &report["migration"];
    assert_eq!(migration["aborted"], true, "{migration}");
    assert!(migration["returned_keys"].as_u64().unwrap() > 0);
    let entries = |side: &str| -> u64 {
        report["server"][side]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["entries"].as_u64().unwrap())
            .sum()
    };
    assert!(entries("source") >= 20_000, "the source holds every record");
    assert_eq!(
        entries("destination"),
        0,
        "the destination let go of its copy"
    );
    let switch = &report["server"]["switch"]["counters"];
    assert_eq!(switch["pairs_removed"], 1, "the switch forgot the pair");
}

/// Runs `netmigrate args` to its end within `limit`; panics if it fails or overruns.
fn run_to_end(args: &[&str], limit: Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_netmigrate"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("netmigrate starts");
    let what = format!("`netmigrate {}`", args.join(" "));
    let status = wait_within(&mut child, limit, &what);
    assert!(status.success(), "{what}: {status}");
}

/// A shard migrated from server A to server B and back to A (`netmigrate migrate start`
/// twice over the control API) while YCSB runs against it through the switch: both
/// migrations finish, no operation fails, the history is linearizable. (A's partition,
/// `Moved` after the first migration, used to drop the INIT of the second, which then
/// never finished.)
#[test]
fn a_shard_migrates_there_and_back_across_processes() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let net = 100 + std::process::id() % 100; // 127.<net>.0.0/24, apart from other runs
    let control_base = 42_000 + (std::process::id() % 500) * 8;
    let addr = |host: u32| format!("127.{net}.0.{host}");
    let (switch, a, b) = (
        format!("{}:9000", addr(254)),
        format!("{}:7100", addr(2)),
        format!("{}:7100", addr(3)),
    );
    let control = |i: u32| format!("127.0.0.1:{}", control_base + i);
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_netmigrate"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("netmigrate starts")
    };
    let mut children = Children(Vec::new());
    children.0.push(spawn(&[
        "switch",
        "--listen",
        &switch,
        "--control",
        &control(0),
        "--group-bits",
        "10",
    ]));
    for (server, i) in [(&a, 1), (&b, 2)] {
        children.0.push(spawn(&[
            "server",
            "--listen",
            server,
            "--via",
            &switch,
            "--control",
            &control(i),
            "--group-bits",
            "10",
            "--work-capacity",
            "150000",
        ]));
    }
    std::thread::sleep(Duration::from_millis(500));
    let json = std::env::temp_dir().join(format!(
        "netmigrate-there-and-back-{}.json",
        std::process::id()
    ));
    let json_arg = json.to_str().unwrap().to_string();
    let ycsb = std::thread::spawn({
        let (a, switch) = (a.clone(), switch.clone());
        move || {
            run_to_end(
                &[
                    "ycsb",
                    "--server",
                    &a,
                    "--via",
                    &switch,
                    "--group-bits",
                    "10",
                    "--records",
                    "10000",
                    "--duration",
                    "8",
                    "--check",
                    "--quiet",
                    "--json",
                    &json_arg,
                ],
                RUN_LIMIT,
            )
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    for (from, to) in [(control(1), &b), (control(2), &a)] {
        run_to_end(
            &[
                "migrate",
                "start",
                "--server",
                &from,
                "--destination",
                to,
                "--switch",
                &switch,
                "--preset",
                "short",
                "--watch",
            ],
            Duration::from_secs(60),
        );
    }
    ycsb.join().expect("the client ran");
    let text = std::fs::read_to_string(&json).expect("the report was written");
    let _ = std::fs::remove_file(&json);
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(report["ops"]["failed"], 0, "failed operations");
    assert_eq!(report["consistency"]["violations"], 0, "linearizability");
    assert!(report["ops"]["completed"].as_u64().unwrap() > 10_000);
}
