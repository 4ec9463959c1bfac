//! The documented contracts (docs/report.md): the compare document and every run report in
//! it hold to the schema, and a run's exported history is one other checkers can read and
//! ours gives the same verdict on.

use bench::cli::{Cli, Command};
use bench::commands::{check_history, compare, experiment, ycsb};
use bench::history;
use bench::linearizability::{self, OpKind};
use bench::report::Report;
use clap::Parser;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Each test runs a whole system; one at a time, so they do not starve each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn parse(args: &[&str]) -> Command {
    Cli::try_parse_from(args).expect("arguments parse").command
}

/// A directory of this test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("netmigrate-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- the report schema ---------------------------------------------------------------

const PROTOCOLS: &[&str] = &["none", "netmigrate", "rocksteady", "fulva", "source"];

fn number(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} must be a number, is {v}"))
}

fn count(v: &Value, what: &str) {
    assert!(v.is_u64(), "{what} must be a non-negative integer, is {v}");
}

fn text<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} must be a string, is {v}"))
}

fn one_of(v: &Value, what: &str, allowed: &[&str]) {
    let value = text(v, what);
    assert!(
        allowed.contains(&value),
        "{what} is {value}, not one of {allowed:?}"
    );
}

fn percentiles(v: &Value, what: &str) {
    for field in ["p50", "p99", "p999", "max"] {
        assert!(number(&v[field], what) >= 0.0, "{what}.{field}");
    }
}

/// Null when the run had no migration, of the given shape when it had one.
fn phases(v: &Value, what: &str, migrated: bool, each: impl Fn(&Value, &str)) {
    for phase in ["before", "during", "after"] {
        let value = &v[phase];
        if migrated {
            each(value, &format!("{what}.{phase}"));
        } else {
            assert!(
                value.is_null(),
                "{what}.{phase} without a migration: {value}"
            );
        }
    }
}

/// Checks one `netmigrate.report/1` document against docs/report.md: required fields,
/// types, allowed values.
fn check_report(r: &Value) {
    assert_eq!(r["schema"], "netmigrate.report/1");
    one_of(&r["command"], "command", &["ycsb", "experiment"]);
    one_of(&r["protocol"], "protocol", PROTOCOLS);
    one_of(&r["transport"], "transport", &["memory", "udp", "dpdk"]);
    let migrated = r["protocol"] != "none";
    match &r["policy"] {
        Value::Null => assert!(!migrated, "a migration names its policy"),
        policy => {
            assert!(migrated, "no migration, no policy: {policy}");
            text(policy, "policy");
        }
    }
    let w = &r["workload"];
    text(&w["name"], "workload.name");
    for field in ["read", "update", "insert", "scan", "rmw", "delete"] {
        let p = number(&w[field], field);
        assert!((0.0..=1.0).contains(&p), "workload.{field} = {p}");
    }
    one_of(
        &w["distribution"],
        "workload.distribution",
        &["zipfian", "uniform", "latest"],
    );
    number(&w["zipf_theta"], "workload.zipf_theta");
    for field in ["records", "key_bytes", "value_bytes", "client_threads"] {
        count(&w[field], field);
    }
    assert!(number(&r["duration_s"], "duration_s") > 0.0);
    number(&r["throughput_ops"]["overall"], "throughput_ops.overall");
    phases(
        &r["throughput_ops"],
        "throughput_ops",
        migrated,
        |v, what| {
            number(v, what);
        },
    );
    percentiles(&r["latency_us"]["overall"], "latency_us.overall");
    phases(&r["latency_us"], "latency_us", migrated, percentiles);
    for field in ["completed", "failed", "timeouts", "retries"] {
        count(&r["ops"][field], field);
    }
    for field in ["checked_ops", "violations"] {
        count(&r["consistency"][field], field);
    }
    if migrated {
        let m = &r["migration"];
        for field in ["started_at_s", "duration_s", "rate_mb_s", "downtime_ms"] {
            number(&m[field], &format!("migration.{field}"));
        }
        assert!(m["finished_at_s"].is_number() || m["finished_at_s"].is_null());
        for field in [
            "keys_at_start",
            "keys_moved",
            "bytes_moved",
            "groups",
            "lost_groups",
        ] {
            count(&m[field], field);
        }
        assert!(
            m["data_lost"].is_boolean(),
            "migration.data_lost: {}",
            m["data_lost"]
        );
        let o = &r["overhead"];
        for field in ["client_extra_bytes_pct", "server_extra_bytes_pct"] {
            number(&o[field], &format!("overhead.{field}"));
        }
        for field in ["double_reads", "priority_pulls", "redirects"] {
            count(&o[field], field);
        }
    } else {
        assert!(r["migration"].is_null() && r["overhead"].is_null());
    }
    let timeline = r["timeline"].as_array().expect("timeline is an array");
    assert!(!timeline.is_empty());
    for slot in timeline {
        for field in ["t_s", "p50_us", "p99_us"] {
            number(&slot[field], field);
        }
        count(&slot["ops"], "timeline ops");
    }
    assert!(r["figure"].is_null() || r["figure"].is_string());
}

/// `compare --json` writes one report per run: the protocol in `protocol` (one of the five
/// values), NetMigrate's preset in `policy`; every report holds to the schema.
#[test]
fn compare_document_holds_to_the_report_schema() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("compare-schema");
    let json = dir.join("compare.json");
    let history = dir.join("h.jsonl");
    let Command::Compare(args) = parse(&[
        "netmigrate",
        "compare",
        "--quiet",
        "--records",
        "2000",
        "--duration",
        "1.2",
        "--migrate-at",
        "0.3",
        "--tail",
        "0.2",
        "--group-bits",
        "8",
        "--capacity",
        "50000",
        "--json",
        json.to_str().unwrap(),
        "--history",
        history.to_str().unwrap(),
    ]) else {
        panic!("not compare");
    };
    compare::run(*args).expect("compare runs");
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("JSON");
    assert_eq!(document["schema"], "netmigrate.compare/1");
    let runs = document["runs"].as_array().expect("runs");
    let seen: Vec<(&str, Option<&str>)> = runs
        .iter()
        .map(|r| (r["protocol"].as_str().unwrap(), r["policy"].as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("none", None),
            ("rocksteady", Some("medium")),
            ("fulva", Some("medium")),
            ("source", Some("medium")),
            ("netmigrate", Some("short")),
            ("netmigrate", Some("medium")),
            ("netmigrate", Some("long")),
        ]
    );
    for run in runs {
        check_report(run);
        assert_eq!(run["command"], "experiment");
    }
    // One history per run, named after it.
    for name in [
        "none",
        "rocksteady",
        "fulva",
        "source",
        "netmigrate-short",
        "netmigrate-medium",
        "netmigrate-long",
    ] {
        let path = dir.join(&format!("h.{name}.jsonl"));
        assert!(path.is_file(), "{} was written", path.display());
    }
}

// ---- the history ---------------------------------------------------------------------

fn read_history(path: &Path) -> Vec<linearizability::Op> {
    let file = std::fs::File::open(path).expect("history file");
    history::read(std::io::BufReader::new(file)).expect("the history reads back")
}

fn check_file(path: &Path) -> Result<(), String> {
    let Command::CheckHistory(args) =
        parse(&["netmigrate", "check-history", path.to_str().unwrap()])
    else {
        panic!("not check-history");
    };
    check_history::run(args).map_err(|e| e.to_string())
}

/// Every line is an event of the documented shape; returns them parsed.
fn events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut last_time = 0;
    text.lines()
        .map(|line| {
            let e: Value = serde_json::from_str(line).expect("a JSON object per line");
            count(&e["process"], "process");
            one_of(&e["type"], "type", &["invoke", "ok", "fail", "info"]);
            one_of(&e["f"], "f", &["read", "write", "delete"]);
            count(&e["key"], "key");
            assert!(e["value"].is_null() || e["value"].is_string(), "{line}");
            let time = e["time"].as_u64().expect("time");
            assert!(time >= last_time, "events in time order: {line}");
            last_time = time;
            e
        })
        .collect()
}

/// YCSB-B with deletes under loss, duplication and reordering: the exported history has
/// invoke and ok events for reads, writes and deletes, reads back whole, and our checker
/// gives the same verdict on the file as it gave in the run.
#[test]
fn exported_history_reads_back_and_checks_the_same() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("history");
    let path = dir.join("h.jsonl");
    let Command::Ycsb(args) = parse(&[
        "netmigrate",
        "ycsb",
        "--quiet",
        "--embedded",
        "--workload",
        "bd",
        "-p",
        "deleteproportion=0.1",
        "--records",
        "500",
        "--operations",
        "30000",
        "--threads",
        "2",
        "--window",
        "8",
        "--timeout-ms",
        "1",
        "--loss",
        "0.03",
        "--duplicate",
        "0.03",
        "--reorder",
        "0.03",
        "--check",
        "--history",
        path.to_str().unwrap(),
    ]) else {
        panic!("not ycsb");
    };
    let report: Report = ycsb::execute(*args).expect("the run succeeds");
    assert_eq!(report.consistency.violations, 0);
    assert!(report.client["deletes"].as_u64().unwrap() > 0);

    let events = events(&path);
    let mut kinds: HashMap<(String, String), u64> = HashMap::new();
    for e in &events {
        let key = (
            e["f"].as_str().unwrap().into(),
            e["type"].as_str().unwrap().into(),
        );
        *kinds.entry(key).or_default() += 1;
    }
    for f in ["read", "write", "delete"] {
        for kind in ["invoke", "ok"] {
            assert!(
                kinds.contains_key(&(f.into(), kind.into())),
                "{f} {kind}: {kinds:?}"
            );
        }
    }
    let deletes_found = events
        .iter()
        .filter(|e| e["f"] == "delete" && e["type"] == "ok")
        .filter(|e| e["existed"].is_boolean())
        .count();
    assert!(
        deletes_found > 0,
        "a delete's ok says whether the key existed"
    );

    let ops = read_history(&path);
    // Load and run: every operation the client recorded, each once.
    assert_eq!(2 * ops.len(), events.len());
    let again = linearizability::check(&ops);
    assert_eq!(again.violations, 0);
    assert_eq!(again.checked_ops, report.consistency.checked_ops);
    check_file(&path).expect("check-history accepts the run's history");
}

/// A history in which one read returns a value overwritten before the read began is
/// refused, by the checker and by `check-history`.
#[test]
fn a_stale_read_in_a_history_is_refused() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("stale");
    let path = dir.join("h.jsonl");
    let Command::Experiment(args) = parse(&[
        "netmigrate",
        "experiment",
        "--quiet",
        "--protocol",
        "netmigrate",
        "--workload",
        "a",
        "--records",
        "300",
        "--duration",
        "1",
        "--migrate-at",
        "0.3",
        "--tail",
        "0.2",
        "--group-bits",
        "8",
        "--history",
        path.to_str().unwrap(),
    ]) else {
        panic!("not experiment");
    };
    experiment::execute(*args).expect("the experiment runs");
    check_file(&path).expect("the untouched history is linearizable");

    // Find a read that saw write B of its key where an earlier write A of that key had
    // completed before B began, and make the read return A instead.
    let ops = read_history(&path);
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut writes: HashMap<u64, Vec<&linearizability::Op>> = HashMap::new();
    for op in &ops {
        if let (OpKind::Write(_), Some(_)) = (op.kind, op.return_ns) {
            writes.entry(op.key).or_default().push(op);
        }
    }
    let stale = ops.iter().find_map(|read| {
        let OpKind::Read(Some(seen)) = read.kind else {
            return None;
        };
        let of_key = writes.get(&read.key)?;
        let newer = of_key.iter().find(|w| w.kind == OpKind::Write(seen))?;
        if read.call_ns <= newer.return_ns? {
            return None; // The read may have taken effect before the newer write.
        }
        let older = of_key
            .iter()
            .find(|w| w.return_ns.unwrap() < newer.call_ns)?;
        Some((read, newer, older))
    });
    let (read, newer, older) = stale.expect("some read follows two writes of its key");
    // The file's text of an event: the one of `process` at `time` of this type.
    let event = |process: u64, kind: &str, time: u64| -> Value {
        lines
            .iter()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .find(|e| e["process"] == process && e["type"] == kind && e["time"] == time)
            .expect("the event is in the file")
    };
    let seen = event(newer.process, "invoke", newer.call_ns)["value"].clone();
    let older = event(older.process, "invoke", older.call_ns)["value"].clone();
    let at = read.return_ns.unwrap();
    let mut edited = 0;
    let text: Vec<String> = lines
        .iter()
        .map(|line| {
            let mut e: Value = serde_json::from_str(line).unwrap();
            if e["process"] == read.process && e["type"] == "ok" && e["time"] == at {
                assert_eq!(e["value"], seen);
                e["value"] = older.clone();
                edited += 1;
                e.to_string()
            } else {
                line.clone()
            }
        })
        .collect();
    assert_eq!(edited, 1);
    std::fs::write(&path, text.join("\n") + "\n").unwrap();

    assert_eq!(linearizability::check(&read_history(&path)).violations, 1);
    let refused = check_file(&path).expect_err("a stale read is refused");
    assert!(refused.contains("not linearizable"), "{refused}");
}

/// Malformed history files are refused with the line that is wrong.
#[test]
fn malformed_histories_are_refused_with_their_line() {
    let cases = [
        ("not json\n", "line 1"),
        (
            concat!(
                r#"{"process": 1, "type": "invoke", "f": "read", "key": 1, "value": null, "time": 1}"#,
                "\n",
                r#"{"process": 1, "type": "invoke", "f": "read", "key": 1, "value": null, "time": 2}"#,
                "\n"
            ),
            "line 2: process 1 invokes",
        ),
        (
            concat!(
                r#"{"process": 4, "type": "ok", "f": "read", "key": 1, "value": null, "time": 1}"#,
                "\n"
            ),
            "never invoked",
        ),
        (
            concat!(
                r#"{"process": 1, "type": "invoke", "f": "read", "key": 1, "value": null, "time": 1}"#,
                "\n",
                r#"{"process": 1, "type": "ok", "f": "write", "key": 1, "value": "x", "time": 2}"#,
                "\n"
            ),
            "completes a write",
        ),
        (
            r#"{"process": 1, "type": "begin", "f": "read", "key": 1, "value": null, "time": 1}"#,
            "line 1",
        ),
    ];
    for (text, expected) in cases {
        let error = history::read(text.as_bytes()).expect_err(text).to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
}
