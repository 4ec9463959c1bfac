//! `netmigrate ycsb`: load records, run a workload, summarise, optionally check the history
//! for linearizability and write the JSON report.

use super::server::{core_list, spec as server_spec};
use super::{fail, CommandError};
use crate::cli::YcsbArgs;
use crate::client::{
    self, ChainView, ClientAddrs, Cluster, InsertCounter, Phase, PhaseResult, Settings,
};
use crate::linearizability;
use crate::measure::micros;
use crate::membership::{self, agent};
use crate::report::{
    self, Consistency, LatencyReport, OpsReport, Percentiles, Report, Throughput, WorkloadReport,
};
use crate::server::transport::{DpdkOptions, Fabric, Transport};
use crate::server::{self, partition_addr};
use crate::workload::{Properties, WorkloadSpec};
use dataplane::port::FaultConfig;
use dataplane::runner::shutdown_on_signals;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEMORY_SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7100);
const MEMORY_CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 20000);
const UDP_SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7100);
// Unspecified, so the kernel picks the source address that routes to the server.
const UDP_CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);

/// The workload: built-in, then the property file, then `-p`, then `--records`.
pub fn workload_spec(args: &YcsbArgs) -> Result<WorkloadSpec, CommandError> {
    let Some(mut spec) = WorkloadSpec::builtin(&args.workload) else {
        return fail(format!(
            "unknown workload `{}`: choose one of {} (workload e needs range scans, which a \
             hash-partitioned store does not offer)",
            args.workload,
            WorkloadSpec::builtin_names().join(", ")
        ));
    };
    let mut props = Properties::new();
    if let Some(path) = &args.property_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CommandError(format!("cannot read {}: {e}", path.display())))?;
        props = Properties::parse(&text)
            .map_err(|e| CommandError(format!("{}: {e}", path.display())))?;
    }
    for item in &args.properties {
        let (key, value) = Properties::parse_override(item)
            .map_err(|e| CommandError(format!("-p {item}: {e}")))?;
        props.set(key, value);
    }
    for key in WorkloadSpec::unused_keys(&props) {
        eprintln!("netmigrate: note: property `{key}` is not used by this client");
    }
    spec.apply(&props)
        .map_err(|e| CommandError(e.to_string()))?;
    if let Some(records) = args.records {
        spec.record_count = records;
    }
    spec.validate().map_err(|e| CommandError(e.to_string()))?;
    Ok(spec)
}

pub(crate) fn settings(args: &YcsbArgs) -> Result<Settings, CommandError> {
    if args.threads == 0 || args.window == 0 {
        return fail("--threads and --window must be at least 1");
    }
    if args.window as u64 >= migration::dedup::WINDOW / 2 {
        return fail(format!(
            "--window must stay below {}",
            migration::dedup::WINDOW / 2
        ));
    }
    if !(args.timeout_ms > 0.0 && args.give_up_ms >= args.timeout_ms) {
        return fail("--timeout-ms must be positive and at most --give-up-ms");
    }
    // Servers forget a client's write window after this much silence; a write resent
    // later could be applied twice.
    let expiry_ms = migration::dedup::IDLE_EXPIRY.as_secs_f64() * 1000.0;
    if args.give_up_ms >= expiry_ms {
        return fail(format!(
            "--give-up-ms must stay below {expiry_ms} (the servers forget a client silent \
             that long)"
        ));
    }
    if !(args.link_timeout >= 0.0 && args.link_timeout <= 3600.0) {
        return fail("--link-timeout must be a number of seconds from 0 to 3600");
    }
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            return fail("--rate must be a positive number of operations per second");
        }
    }
    Ok(Settings {
        threads: args.threads,
        window: args.window,
        rate_per_thread: args.rate.map(|r| r / args.threads as f64),
        timeout: Duration::from_secs_f64(args.timeout_ms / 1000.0),
        max_timeout: Duration::from_secs_f64((args.timeout_ms / 1000.0 * 64.0).min(1.0)),
        give_up: Duration::from_secs_f64(args.give_up_ms / 1000.0),
        record_history: args.check || args.history.is_some() || args.read_back.is_some(),
        progress: !args.quiet,
        seed: args.seed,
        track_migrations: false,
        reads_at_tail: args.reads_at_tail,
        idle: args.idle.idle(),
    })
}

pub(crate) fn faults(args: &YcsbArgs, transport: Transport) -> Result<FaultConfig, CommandError> {
    let faults = FaultConfig {
        loss: args.loss,
        duplicate: args.duplicate,
        reorder: args.reorder,
        seed: args.seed,
    };
    for (name, p) in [
        ("--loss", args.loss),
        ("--duplicate", args.duplicate),
        ("--reorder", args.reorder),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return fail(format!("{name} is a probability between 0 and 1, got {p}"));
        }
    }
    if faults.loss + faults.duplicate + faults.reorder > 1.0 {
        return fail("--loss, --duplicate and --reorder together exceed 1");
    }
    if faults.is_active() && transport != Transport::Memory {
        return fail("fault injection (--loss/--duplicate/--reorder) needs the memory transport");
    }
    Ok(faults)
}

pub fn run(args: YcsbArgs) -> Result<(), CommandError> {
    execute(args).map(|_| ())
}

/// Runs the command and returns its report (also written with `--json`).
pub fn execute(args: YcsbArgs) -> Result<Report, CommandError> {
    let spec = Arc::new(workload_spec(&args)?);
    let settings = settings(&args)?;
    let transport = args.transport.unwrap_or(if args.embedded {
        Transport::Memory
    } else {
        Transport::Udp
    });
    if transport == Transport::Memory && !args.embedded {
        return fail("the memory transport only reaches a server in this process: add --embedded");
    }
    let fault_config = faults(&args, transport)?;
    // An embedded server binds its partitions on the same fabric.
    let lanes = args.threads
        + if args.embedded {
            args.layout.partitions as usize
        } else {
            0
        };
    let dpdk = DpdkOptions {
        eal: args.eal.as_deref(),
        udp_checksum: args.udp_checksum.choice(),
    };
    let fabric = Fabric::new(transport, fault_config, dpdk, lanes)?.via(args.via)?;
    if args.reads_at_tail && args.chain.is_empty() && args.etcd.etcd.is_empty() {
        return fail("--reads-at-tail needs a chain: --chain or --etcd");
    }
    if !args.chain.is_empty() && args.embedded {
        return fail("--chain names separate server processes; it cannot go with --embedded");
    }
    let followed = if args.etcd.etcd.is_empty() {
        None
    } else {
        if args.embedded || !args.chain.is_empty() || args.server.is_some() {
            return fail("--etcd finds the chain's servers itself: it cannot go with --embedded, --chain or --server");
        }
        Some(follow_chain_in_etcd(&args)?)
    };
    let chain: Vec<SocketAddrV4> = match &followed {
        Some(view) => view.0.members(),
        None => args.chain.clone(),
    };
    let server = chain.first().copied().or(args.server);
    let (server_base, client_base) = match transport {
        Transport::Memory => (server.unwrap_or(MEMORY_SERVER), MEMORY_CLIENT),
        Transport::Udp => (server.unwrap_or(UDP_SERVER), UDP_CLIENT),
        Transport::Dpdk => (
            server.unwrap_or(MEMORY_SERVER),
            SocketAddrV4::new(args.client_ip, MEMORY_CLIENT.port()),
        ),
    };
    let stop = shutdown_on_signals()?;
    if !args.embedded {
        fabric.wait_for_links(Duration::from_secs_f64(args.link_timeout))?;
    }

    let embedded = if args.embedded {
        let capacity = (spec.max_records() / u64::from(args.layout.partitions)) as usize + 1024;
        let cores = core_list(args.server_cores.as_deref())?;
        let mut server_spec = server_spec(server_base, &args.layout, capacity, cores)?;
        server_spec.idle = args.idle.idle();
        Some(server::start(&fabric, &server_spec)?)
    } else {
        None
    };
    let map = super::server::partition_map(&args.layout)?;
    let cluster = Arc::new(Cluster {
        chain_view: followed.as_ref().map(|view| Arc::clone(&view.0)),
        partitions: (0..map.partitions())
            .map(|p| partition_addr(server_base, p))
            .collect(),
        replicas: (0..map.partitions())
            .filter(|_| !chain.is_empty())
            .map(|p| chain.iter().map(|&m| partition_addr(m, p)).collect())
            .collect(),
        map,
        shard: args.layout.shard,
    });
    let inserts = Arc::new(InsertCounter::new(spec.record_count));
    let addrs = ClientAddrs { base: client_base };
    print_banner(&args, &spec, transport, &settings);

    let epoch = Instant::now();
    if let Some(path) = &args.read_back {
        let read = client::run_phase(
            Phase::ReadBack,
            "read-back",
            &fabric,
            addrs,
            &cluster,
            &spec,
            settings,
            &inserts,
            epoch,
            &stop,
        )?;
        fabric.shutdown();
        return read_back(&args, &spec, transport, path, read);
    }
    let load = if args.skip_load {
        None
    } else {
        let phase = Phase::Load;
        let load = client::run_phase(
            phase, "load", &fabric, addrs, &cluster, &spec, settings, &inserts, epoch, &stop,
        )?;
        report_load(&load);
        Some(load)
    };
    let run_epoch = Instant::now();
    let phase = Phase::Run {
        duration: args
            .operations
            .is_none()
            .then(|| Duration::from_secs_f64(args.duration)),
        operations: args.operations,
    };
    let mut run = client::run_phase(
        phase, "run", &fabric, addrs, &cluster, &spec, settings, &inserts, run_epoch, &stop,
    )?;
    let server_reports = embedded.map(|s| s.stop());
    fabric.shutdown();

    let consistency = verify_history(
        &args,
        load.map(|l| l.history),
        &mut run.history,
        run_epoch.duration_since(epoch),
    )?;

    let report = build_report(
        &args,
        &spec,
        transport,
        &run,
        consistency,
        server_reports.as_deref(),
    );
    print_summary(&run, &report);
    if let Some(reports) = &server_reports {
        eprint!("{}", server::format_reports(reports));
    }
    if let Some(path) = &args.json {
        report::write(&report, path)
            .map_err(|e| CommandError(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("report written to {}", path.display());
    }
    if run.counters.failed > 0 {
        hint_failures(&run);
    }
    Ok(report)
}

/// The chain's view, closed (its thread stops) when the command returns.
struct FollowedChain(Arc<ChainView>);

impl Drop for FollowedChain {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// `--etcd`: waits (up to --link-timeout) for the chain's membership, then keeps it current
/// from a thread of its own.
fn follow_chain_in_etcd(args: &YcsbArgs) -> Result<FollowedChain, CommandError> {
    let mut directory = membership::connect(&args.etcd.etcd).map_err(CommandError)?;
    let chain = args.etcd.chain_name.clone();
    let deadline = Instant::now() + Duration::from_secs_f64(args.link_timeout);
    let view = Arc::new(ChainView::default());
    loop {
        let members = directory
            .members(&chain)
            .map_err(|e| CommandError(e.to_string()))?;
        if let Some((members, _)) = members {
            agent::publish(&view, &members);
            break;
        }
        if Instant::now() >= deadline {
            return fail(format!(
                "chain {chain} has no membership in etcd yet (is `netmigrate coordinator` \
                 running, and have enough servers registered?)"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let followed = Arc::clone(&view);
    std::thread::spawn(move || agent::follow_members(directory.as_mut(), &chain, &followed));
    Ok(FollowedChain(view))
}

/// `--read-back`: the earlier run's history with the reads of every record appended after
/// its end, checked; a key that is linearizable without its read-back and not with it lost
/// a write the servers acknowledged (or kept one they never should have).
fn read_back(
    args: &YcsbArgs,
    spec: &crate::workload::WorkloadSpec,
    transport: Transport,
    path: &std::path::Path,
    read: PhaseResult,
) -> Result<Report, CommandError> {
    let file = std::fs::read(path)
        .map_err(|e| CommandError(format!("cannot read {}: {e}", path.display())))?;
    let (earlier, history) = crate::history::read_and_append(&file, &read.history)
        .map_err(|e| CommandError(format!("{}: {e}", path.display())))?;
    let before = linearizability::check(&earlier);
    let keys = read.history.len() as u64;
    eprintln!(
        "read-back: {keys} records read ({} failed), checked against {}:",
        read.counters.failed,
        path.display()
    );
    let after = check_and_print(&history);
    let missing = after.violations.saturating_sub(before.violations);
    eprintln!(
        "read-back: {missing} key(s) whose read-back contradicts the history (writes \
         acknowledged and not kept), {} violation(s) before it",
        before.violations
    );
    let consistency = Consistency {
        checked_ops: after.checked_ops,
        violations: after.violations,
        read_back_keys: Some(keys),
        missing_keys: Some(missing),
    };
    let report = build_report(args, spec, transport, &read, consistency, None);
    if let Some(json) = &args.json {
        report::write(&report, json)
            .map_err(|e| CommandError(format!("cannot write {}: {e}", json.display())))?;
    }
    if after.violations > 0 || after.unchecked_keys > 0 || read.counters.failed > 0 {
        return fail(format!(
            "read-back: {missing} key(s) lost acknowledged writes, {} violation(s) in all, {} \
             undecided, {} read(s) failed",
            after.violations, after.unchecked_keys, read.counters.failed
        ));
    }
    Ok(report)
}

/// Prints the load phase's outcome (and hints when it failed).
pub(crate) fn report_load(load: &PhaseResult) {
    eprintln!(
        "load: {} records in {:.2} s ({:.0} ops/s), {} failed",
        load.counters.completed,
        load.elapsed.as_secs_f64(),
        load.counters.completed as f64 / load.elapsed.as_secs_f64(),
        load.counters.failed
    );
    if load.counters.failed > 0 {
        hint_failures(load);
    }
}

/// Writes the load and run histories as one (`--history`) and checks them for
/// linearizability (`--check`), printing the verdict. The run's times move to the load's
/// clock, which starts first.
pub(crate) fn verify_history(
    args: &YcsbArgs,
    load: Option<Vec<linearizability::Op>>,
    run: &mut Vec<linearizability::Op>,
    run_offset: Duration,
) -> Result<Consistency, CommandError> {
    let offset = run_offset.as_nanos() as u64;
    let mut history = load.unwrap_or_default();
    for op in run.iter_mut() {
        op.call_ns += offset;
        op.return_ns = op.return_ns.map(|r| r + offset);
        op.end_ns += offset;
    }
    history.append(run);
    if let Some(path) = &args.history {
        let started = Instant::now();
        crate::history::write(&history, path)
            .map_err(|e| CommandError(format!("cannot write {}: {e}", path.display())))?;
        eprintln!(
            "history: {} operations written to {} in {:.1} s",
            history.len(),
            path.display(),
            started.elapsed().as_secs_f64()
        );
    }
    if !args.check {
        return Ok(Consistency::default());
    }
    let result = check_and_print(&history);
    Ok(Consistency {
        checked_ops: result.checked_ops,
        violations: result.violations,
        ..Consistency::default()
    })
}

/// Checks a history for linearizability and prints the verdict and the first violations.
pub(crate) fn check_and_print(history: &[linearizability::Op]) -> linearizability::CheckReport {
    let started = Instant::now();
    let result = linearizability::check(history);
    eprintln!(
        "consistency: {} operations on {} keys checked in {:.1} s: {} violation(s), {} key(s) \
         undecided",
        result.checked_ops,
        result.keys,
        started.elapsed().as_secs_f64(),
        result.violations,
        result.unchecked_keys
    );
    for example in &result.examples {
        eprintln!("  violation: {example}");
    }
    result
}

pub(crate) fn hint_failures(phase: &PhaseResult) {
    let c = &phase.counters;
    if c.error_replies > 0 {
        eprintln!(
            "netmigrate: {} request(s) were answered with an error: do --partitions, \
             --group-bits and --shard match the server's?",
            c.error_replies
        );
    }
    if c.data_lost > 0 {
        eprintln!(
            "netmigrate: {} request(s) were refused with DATA_LOST: a crash during a \
             migration lost their keys' data (see the server's migration status)",
            c.data_lost
        );
    }
    if c.timeouts > 0 {
        eprintln!(
            "netmigrate: {} request(s) got no answer within --give-up-ms: is the server \
             running at the address given by --server?",
            c.timeouts
        );
    }
}

fn print_banner(args: &YcsbArgs, spec: &WorkloadSpec, transport: Transport, settings: &Settings) {
    eprintln!(
        "netmigrate ycsb: workload {} (read {} update {} insert {} rmw {} delete {}, {} {}), {} \
         records, {} B keys, {} B values",
        spec.name,
        spec.read,
        spec.update,
        spec.insert,
        spec.rmw,
        spec.delete,
        spec.distribution.name(),
        spec.zipf_theta,
        spec.record_count,
        spec.key_bytes,
        spec.value_bytes
    );
    eprintln!(
        "transport {}{}, {} partition(s), {} client thread(s) x {} outstanding{}",
        transport.name(),
        if args.embedded {
            " (embedded server)"
        } else {
            ""
        },
        args.layout.partitions,
        settings.threads,
        settings.window,
        args.rate
            .map_or(String::new(), |r| format!(", open loop at {r:.0} ops/s")),
    );
}

pub(crate) fn build_report(
    args: &YcsbArgs,
    spec: &WorkloadSpec,
    transport: Transport,
    run: &PhaseResult,
    consistency: Consistency,
    servers: Option<&[server::PartitionReport]>,
) -> Report {
    let c = &run.counters;
    let seconds = run.elapsed.as_secs_f64();
    Report {
        schema: report::SCHEMA,
        command: "ycsb".into(),
        protocol: "none".into(),
        policy: None,
        transport: transport.name().into(),
        workload: WorkloadReport {
            name: spec.name.clone(),
            read: spec.read,
            update: spec.update,
            insert: spec.insert,
            scan: spec.scan,
            rmw: spec.rmw,
            delete: spec.delete,
            distribution: spec.distribution.name().into(),
            zipf_theta: spec.zipf_theta,
            records: spec.record_count,
            key_bytes: spec.key_bytes,
            value_bytes: spec.value_bytes,
            client_threads: args.threads,
        },
        duration_s: seconds,
        throughput_ops: Throughput {
            overall: c.completed as f64 / seconds,
            before: None,
            during: None,
            after: None,
        },
        latency_us: LatencyReport {
            overall: Percentiles::of(run.recorder.overall()),
            before: None,
            during: None,
            after: None,
        },
        ops: OpsReport {
            completed: c.completed,
            failed: c.failed,
            timeouts: c.timeouts,
            retries: c.retries,
        },
        consistency,
        migration: None,
        overhead: None,
        timeline: report::timeline(&run.recorder),
        figure: None,
        client: serde_json::json!({
            "window": args.window,
            "rate_ops": args.rate,
            "not_found": c.not_found,
            "deletes": c.deletes,
            "deletes_not_found": c.deletes_not_found,
            "error_replies": c.error_replies,
            "data_lost": c.data_lost,
            "retry_later": c.retry_later,
            "multi_key_requests": c.multi_requests,
            "multi_key_keys": c.multi_keys,
            "ignored_replies": c.ignored_replies,
            "malformed_replies": c.malformed_replies,
            "tx_packets": run.port.tx_packets,
            "rx_packets": run.port.rx_packets,
            "tx_dropped": run.port.tx_dropped,
            "injected": {
                "loss": args.loss, "duplicate": args.duplicate, "reorder": args.reorder,
                "losses": run.port.injected_losses,
                "duplicates": run.port.injected_duplicates,
                "reorders": run.port.injected_reorders,
            },
        }),
        server: servers.map(|reports| {
            serde_json::json!(reports
                .iter()
                .map(|r| serde_json::json!({
                    "partition": r.partition,
                    "requests": r.counters.requests(),
                    "entries": r.entries,
                    "duplicate_writes": r.counters.duplicate_writes,
                    "error_replies": r.counters.error_replies,
                    "dropped_malformed": r.counters.dropped_malformed,
                    "dropped_hash_mismatch": r.counters.dropped_hash_mismatch,
                    "dropped_stale_write": r.counters.dropped_stale_write,
                    "dropped_not_request": r.counters.dropped_not_request,
                }))
                .collect::<Vec<_>>())
        }),
    }
}

pub(crate) fn print_summary(run: &PhaseResult, report: &Report) {
    let c = &run.counters;
    let l = &report.latency_us.overall;
    eprintln!(
        "run: {:.2} s, {} operations, {:.0} ops/s",
        report.duration_s, c.completed, report.throughput_ops.overall
    );
    eprintln!(
        "latency (us): p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (mean {:.1})",
        l.p50,
        l.p99,
        l.p999,
        l.max,
        micros(run.recorder.overall().mean() as u64)
    );
    eprintln!(
        "ops: completed {}, failed {}, timeouts {}, retries {}, not found {}, ignored replies {}",
        c.completed, c.failed, c.timeouts, c.retries, c.not_found, c.ignored_replies
    );
    if c.multi_requests > 0 {
        eprintln!(
            "multi-key: {} requests, {} keys ({:.1} keys per request)",
            c.multi_requests,
            c.multi_keys,
            c.multi_keys as f64 / c.multi_requests as f64
        );
    }
}
