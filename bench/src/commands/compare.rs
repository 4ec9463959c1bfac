//! `netmigrate compare`: no migration, the three baselines and NetMigrate at its three
//! presets, one after the other on the same dataset, workload and machine; a table on
//! stdout, the `netmigrate.compare/1` JSON (one `netmigrate.report/1` per run, schemas in
//! `docs/report.md`) and one figure with a panel per run.

use super::experiment;
use super::CommandError;
use crate::cli::{CompareArgs, ExperimentArgs, PresetArg, Protocol};
use crate::report::Report;
use std::path::{Path, PathBuf};

pub const SCHEMA: &str = "netmigrate.compare/1";

/// One run of the comparison.
struct Run {
    label: &'static str,
    protocol: Option<Protocol>,
    preset: Option<PresetArg>,
}

fn runs(baseline_preset: PresetArg) -> Vec<Run> {
    let baseline = |label, protocol| Run {
        label,
        protocol: Some(protocol),
        preset: Some(baseline_preset),
    };
    let netmigrate = |label, preset| Run {
        label,
        protocol: Some(Protocol::Netmigrate),
        preset: Some(preset),
    };
    vec![
        Run {
            label: "none",
            protocol: None,
            preset: None,
        },
        baseline("rocksteady", Protocol::Rocksteady),
        baseline("fulva", Protocol::Fulva),
        baseline("source", Protocol::Source),
        netmigrate("netmigrate-short", PresetArg::Short),
        netmigrate("netmigrate-medium", PresetArg::Medium),
        netmigrate("netmigrate-long", PresetArg::Long),
    ]
}

pub fn run(args: CompareArgs) -> Result<(), CommandError> {
    if args.ycsb.transport == Some(crate::server::transport::Transport::Dpdk) {
        return super::fail(
            "--transport dpdk: compare runs every protocol in this one process, and DPDK's EAL \
             starts only once per process; run `netmigrate experiment --transport dpdk \
             --protocol P` for each protocol instead, or compare in-process (default) or over \
             kernel UDP (--transport udp)",
        );
    }
    if args.ycsb.idle.busy_poll {
        return super::fail(
            "--busy-poll: compare runs its switch, servers and client on shared cores; use it \
             with `ycsb`, `server` and `switch` on cores of their own",
        );
    }
    let plan = runs(args.baseline_preset);
    let mut reports = Vec::new();
    let started = std::time::Instant::now();
    for (i, run) in plan.iter().enumerate() {
        eprintln!(
            "[compare {}/{}] {} ({:.0} s elapsed)",
            i + 1,
            plan.len(),
            run.label,
            started.elapsed().as_secs_f64()
        );
        let mut ycsb = args.ycsb.clone();
        ycsb.json = None; // The comparison writes one document.
        ycsb.history = args
            .ycsb
            .history
            .as_deref()
            .map(|path| history_path(path, run.label));
        let mut run_args = args.run.clone();
        run_args.no_migration = run.protocol.is_none();
        let experiment = ExperimentArgs {
            protocol: run.protocol.unwrap_or(Protocol::Netmigrate),
            preset: run.preset.unwrap_or(args.baseline_preset),
            plot: None,
            run: run_args,
            ycsb,
        };
        let report = experiment::execute(experiment)
            .map_err(|e| CommandError(format!("the {} run failed: {e}", run.label)))?;
        reports.push(report);
    }
    print!("{}", table(&reports));
    if let Some(path) = &args.plot {
        draw(path, &reports)?;
        for report in &mut reports {
            report.figure = Some(path.display().to_string());
        }
        eprintln!("figure written to {}", path.display());
    }
    if let Some(path) = &args.ycsb.json {
        let document = serde_json::json!({ "schema": SCHEMA, "runs": reports });
        let text = serde_json::to_string_pretty(&document).expect("a report serializes");
        std::fs::write(path, text + "\n")
            .map_err(|e| CommandError(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("comparison written to {}", path.display());
    }
    eprintln!(
        "compare: {} runs in {:.0} s",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The history file of one run: `label` added before the extension of `path`.
fn history_path(path: &Path, label: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(extension) => format!("{stem}.{label}.{}", extension.to_string_lossy()),
        None => format!("{stem}.{label}"),
    };
    path.with_file_name(name)
}

/// A run's name in the table and the figure: the protocol, and NetMigrate's preset.
fn run_name(report: &Report) -> String {
    match (&report.protocol[..], &report.policy) {
        ("netmigrate", Some(policy)) => format!("netmigrate-{policy}"),
        (protocol, _) => protocol.to_string(),
    }
}

fn draw(path: &Path, reports: &[Report]) -> Result<(), CommandError> {
    let figures: Vec<_> = reports
        .iter()
        .map(|r| crate::plot::Figure {
            title: run_name(r),
            timeline: &r.timeline,
            migration: r
                .migration
                .as_ref()
                .and_then(|m| Some((m["started_at_s"].as_f64()?, m["finished_at_s"].as_f64()?))),
        })
        .collect();
    let workload = reports.first().map_or("", |r| r.workload.name.as_str());
    let title = format!("throughput during migration · YCSB-{workload}");
    crate::plot::draw_comparison(path, &title, &figures)
        .map_err(|e| CommandError(format!("cannot draw {}: {e}", path.display())))
}

/// The comparison table: one row per run.
fn table(reports: &[Report]) -> String {
    let mut out = format!(
        "{:<18} {:>8} {:>24} {:>16} {:>12} {:>14} {:>7} {:>5}\n",
        "protocol",
        "migr s",
        "kops/s before/during/after",
        "during p50/p99",
        "down/floor ms",
        "extra % cl/srv",
        "failed",
        "viol"
    );
    let kops = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0}", v / 1e3));
    for r in reports {
        let number = |v: Option<&serde_json::Value>, key: &str| v.and_then(|v| v[key].as_f64());
        let migration = r.migration.as_ref();
        let overhead = r.overhead.as_ref();
        let during = r
            .latency_us
            .during
            .map_or("-".to_string(), |l| format!("{:.0}/{:.0}", l.p50, l.p99));
        let optional =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        out.push_str(&format!(
            "{:<18} {:>8} {:>24} {:>16} {:>12} {:>14} {:>7} {:>5}\n",
            run_name(r),
            optional(number(migration, "duration_s"), 2),
            format!(
                "{}/{}/{}",
                kops(r.throughput_ops.before.or(Some(r.throughput_ops.overall))),
                kops(r.throughput_ops.during),
                kops(r.throughput_ops.after)
            ),
            during,
            match (
                number(migration, "downtime_ms"),
                number(migration, "downtime_floor_ms")
            ) {
                (Some(d), Some(f)) => format!("{d:.1}/{f:.1}"),
                _ => "-".into(),
            },
            match (
                number(overhead, "client_extra_bytes_pct"),
                number(overhead, "server_extra_bytes_pct")
            ) {
                (Some(c), Some(s)) => format!("{c:.2}/{s:.1}"),
                _ => "-".into(),
            },
            r.ops.failed,
            r.consistency.violations,
        ));
    }
    out
}
