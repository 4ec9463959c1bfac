//! `netmigrate experiment`: the whole topology in one process (client, software switch,
//! source and destination servers), load, run a workload, migrate the shard at
//! `--migrate-at`, keep running until the migration has finished plus a tail, and report
//! before / during / after figures, the migration and its overhead.

use super::server::{core_list, spec as server_spec};
use super::ycsb::{
    build_report, faults, hint_failures, print_summary, report_load, settings, verify_history,
    workload_spec,
};
use super::{fail, CommandError};
use crate::cli::{ExperimentArgs, Protocol};
use crate::client::{self, ClientAddrs, Cluster, InsertCounter, Phase};
use crate::report::{self, Percentiles};
use crate::server::control::ControlClient;
use crate::server::transport::{DpdkOptions, Fabric, Transport};
use crate::server::{self, partition_addr, PartitionReport, RunningServer, ServerControl};
use dataplane::port::FaultConfig;
use dataplane::runner::{shutdown_on_signals, Idle, Placement};
use migration::control::{self, proto};
use migration::{MigrationBudget, MigrationCounters, OutgoingPlan};
use processes::{Addresses, Links, Processes, ServerSettings};
use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod processes;

/// Experiments started in this process (each multi-process one takes its own addresses).
static RUNS: AtomicU32 = AtomicU32::new(0);

const SWITCH: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 254), 9000);
const SOURCE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7100);
const DESTINATION: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 7100);
const DEFAULT_RECORDS: u64 = 200_000;
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 20000);
/// How long the client waits for its DPDK links to the switch (then it warns and sends anyway).
const LINK_TIMEOUT: Duration = Duration::from_secs(30);

/// When the migration ran, on the run's clock.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    started: Option<Duration>,
    /// When the migration ended: finished, or back at the source after an abort.
    finished: Option<Duration>,
    aborted_at: Option<Duration>,
    abort_refused: bool,
}

pub fn run(args: ExperimentArgs) -> Result<(), CommandError> {
    execute(args).map(|_| ())
}

/// Runs the experiment and returns its report (also written with `--json`).
pub fn execute(mut args: ExperimentArgs) -> Result<report::Report, CommandError> {
    if args.ycsb.idle.busy_poll {
        return fail(
            "--busy-poll is for `ycsb`, `server` and `switch` on cores of their own; an \
             experiment shares the cores among its switch, servers and client",
        );
    }
    let user_sized = args.ycsb.records.is_some()
        || args.ycsb.property_file.is_some()
        || args
            .ycsb
            .properties
            .iter()
            .any(|p| p.trim_start().starts_with("recordcount"));
    if !user_sized {
        // A dataset whose migration takes seconds here, not YCSB's 1000 records.
        args.ycsb.records = Some(DEFAULT_RECORDS);
    }
    let ycsb = &args.ycsb;
    let transport = ycsb.transport.unwrap_or(Transport::Memory);
    if transport == Transport::Dpdk && !cfg!(feature = "dpdk") {
        return fail(
            "--transport dpdk: this netmigrate was built without DPDK; rebuild with `cargo \
             build --release --features dpdk` (scripts/setup.sh installs DPDK)",
        );
    }
    if ycsb.eal.is_some() {
        return fail(
            "experiment builds every process's EAL arguments itself (--transport dpdk: memif \
             links to the switch); --eal is for `netmigrate server`, `ycsb` and `switch`",
        );
    }
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let addrs = match transport {
        Transport::Memory => Addresses::in_process(CLIENT, SWITCH, SOURCE, DESTINATION),
        _ => Addresses::for_run(run, transport),
    };
    if args.run.migrate_at < 0.0 || !args.run.migrate_at.is_finite() {
        return fail("--migrate-at must be a number of seconds ≥ 0");
    }
    if args
        .run
        .abort_after
        .is_some_and(|after| !(after.is_finite() && after >= 0.0))
    {
        return fail("--abort-after must be a number of seconds ≥ 0");
    }
    let spec = Arc::new(workload_spec(ycsb)?);
    let mut settings = settings(ycsb)?;
    settings.track_migrations = args.protocol == Protocol::Fulva;
    let faults: FaultConfig = faults(ycsb, transport)?;
    let stop = shutdown_on_signals()?;
    let capacity = (args.run.capacity > 0.0).then_some(args.run.capacity);
    let budget = MigrationBudget::of(args.preset.preset(), capacity, args.run.migration_rate);
    let map = super::server::partition_map(&ycsb.layout)?;
    let switch_config = args
        .run
        .filters
        .switch_config(addrs.switch, ycsb.layout.group_bits)
        .map_err(CommandError)?;
    let table_capacity = (spec.max_records() / u64::from(ycsb.layout.partitions)) as usize + 1024;
    let cores = core_list(ycsb.server_cores.as_deref())?;

    let (fabric, roles) = match transport {
        Transport::Memory => {
            let fabric = Fabric::new(Transport::Memory, faults, DpdkOptions::default(), 1)?;
            let Fabric::Memory(network) = &fabric else {
                unreachable!("memory fabric")
            };
            // The switch first: every other port sends through it.
            let switch = tofino::run::start(
                Box::new(network.bind_gateway(addrs.switch)?),
                switch_config,
                Placement::Floating,
                Idle::Share,
            )?;
            let mut source_spec =
                server_spec(addrs.source, &ycsb.layout, table_capacity, cores.clone())?;
            source_spec.capacity = capacity;
            let mut destination_spec = server_spec(addrs.destination, &ycsb.layout, 1024, cores)?;
            destination_spec.capacity = capacity;
            let source = server::start(&fabric, &source_spec)?;
            let destination = server::start(&fabric, &destination_spec)?;
            let roles = Roles::InProcess(Box::new(InProcessRoles {
                switch,
                source,
                destination,
            }));
            (fabric, roles)
        }
        _ => {
            let settings = ServerSettings {
                partitions: ycsb.layout.partitions,
                group_bits: ycsb.layout.group_bits,
                shard: ycsb.layout.shard,
                work_capacity: capacity,
                cores: ycsb.server_cores.clone(),
            };
            let switch_args = [
                ("--bf-cells", switch_config.bf_cells),
                ("--cbf-cells", switch_config.cbf_cells),
            ]
            .iter()
            .flat_map(|(flag, cells)| [flag.to_string(), cells.to_string()])
            .collect::<Vec<_>>();
            let links = match transport {
                Transport::Dpdk => Links::Dpdk {
                    client_threads: ycsb.threads,
                },
                _ => Links::Udp,
            };
            links.check(settings.partitions)?;
            let processes =
                Processes::start(&addrs, &links, &settings, table_capacity, &switch_args)?;
            let joined = match links {
                Links::Udp => "kernel UDP",
                Links::Dpdk { .. } => "DPDK memif links to the switch",
            };
            eprintln!(
                "roles: switch {}, source {}, destination {} (separate processes over \
                 {joined}; their logs, kept if the run fails: {})",
                addrs.switch,
                addrs.source,
                addrs.destination,
                processes.logs.display()
            );
            let fabric = match &links {
                Links::Udp => Fabric::new(transport, faults, DpdkOptions::default(), 1)?
                    .via(Some(addrs.switch))?,
                Links::Dpdk { .. } => {
                    let eal = links.host_eal(&processes.logs, "client", ycsb.threads);
                    let dpdk = DpdkOptions {
                        eal: eal.as_deref(),
                        udp_checksum: None,
                    };
                    let fabric = Fabric::new(transport, faults, dpdk, ycsb.threads)?;
                    // As `ycsb` does: the load starts once the links to the switch are up.
                    fabric.wait_for_links(LINK_TIMEOUT)?;
                    fabric
                }
            };
            (fabric, Roles::Processes(processes))
        }
    };

    let cluster = Arc::new(Cluster {
        chain_view: None,
        partitions: (0..map.partitions())
            .map(|p| partition_addr(addrs.source, p))
            .collect(),
        map,
        shard: ycsb.layout.shard,
        replicas: Vec::new(),
    });
    let inserts = Arc::new(InsertCounter::new(spec.record_count));
    let client_addrs = ClientAddrs { base: addrs.client };
    eprintln!(
        "netmigrate experiment: protocol {}, preset {}, workload {} ({} records, {} B \
         values), {} client thread(s) x {}, {} partition(s), 2^{} groups",
        args.protocol.name(),
        args.preset.preset().name(),
        spec.name,
        spec.record_count,
        spec.value_bytes,
        settings.threads,
        settings.window,
        cluster.map.partitions(),
        ycsb.layout.group_bits,
    );
    eprintln!(
        "capacity per server core: {}; migration {} items/s per core, serving while \
         migrating {}; switch BF {} cells x4, CBF {} cells x4",
        capacity.map_or("uncapped".into(), |c| format!("{c:.0} ops/s")),
        budget
            .items_per_s
            .map_or("unlimited".into(), |r| format!("{r:.0}")),
        budget
            .serve_per_s
            .map_or("uncapped".into(), |r| format!("{r:.0} ops/s")),
        switch_config.bf_cells,
        switch_config.cbf_cells,
    );

    let epoch = Instant::now();
    let phase = Phase::Load;
    let load = client::run_phase(
        phase,
        "load",
        &fabric,
        client_addrs,
        &cluster,
        &spec,
        settings,
        &inserts,
        epoch,
        &stop,
    )?;
    report_load(&load);
    if load.counters.failed > 0 {
        return fail("the load phase failed; not starting the experiment");
    }

    let run_epoch = Instant::now();
    let run_stop = Arc::new(AtomicBool::new(false));
    let timing = Arc::new(Mutex::new(Timing::default()));
    let plan = OutgoingPlan {
        shard: ycsb.layout.shard,
        destination: addrs.destination,
        destination_shard: ycsb.layout.shard,
        switch: addrs.switch,
        source: addrs.source,
        items_per_s: budget.items_per_s,
        pipeline: args.run.pipeline,
        protocol: args.protocol.wire(),
        ticket: Default::default(), // `migrate_out` gives the partitions one
    };
    let driver = roles.driver(
        &addrs,
        plan,
        budget.serve_per_s,
        args.preset.preset(),
        args.run.migration_rate,
    )?;
    let orchestrator = {
        let (run_stop, stop, timing) = (
            Arc::clone(&run_stop),
            Arc::clone(&stop),
            Arc::clone(&timing),
        );
        let settings = Orchestration {
            migrate_at: Duration::from_secs_f64(args.run.migrate_at),
            duration: Duration::from_secs_f64(ycsb.duration),
            tail: Duration::from_secs_f64(args.run.tail),
            give_up: Duration::from_secs_f64(args.run.max_migration_s),
            migrate: !args.run.no_migration,
            abort_after: args.run.abort_after.map(Duration::from_secs_f64),
            progress: !ycsb.quiet,
        };
        std::thread::Builder::new()
            .name("orchestrator".into())
            .spawn(move || orchestrate(settings, driver, run_epoch, &run_stop, &stop, &timing))?
    };
    let phase = Phase::Run {
        duration: None,
        operations: None,
    };
    let mut run = client::run_phase(
        phase,
        "run",
        &fabric,
        client_addrs,
        &cluster,
        &spec,
        settings,
        &inserts,
        run_epoch,
        &run_stop,
    )?;
    let orchestration = orchestrator
        .join()
        .map_err(|_| CommandError("the orchestrator thread panicked".into()))?;
    let finished = roles.finish(&addrs)?;
    fabric.shutdown();
    let timing = *timing.lock().expect("timing lock poisoned");
    if let Err(message) = &orchestration {
        eprintln!("netmigrate: {message}");
    }

    let consistency = verify_history(
        ycsb,
        Some(load.history),
        &mut run.history,
        run_epoch.duration_since(epoch),
    )?;
    let mut report = build_report(
        ycsb,
        &spec,
        transport,
        &run,
        consistency,
        Some(&finished.source),
    );
    report.command = "experiment".into();
    report.protocol = args.protocol.name().into();
    report.policy = Some(match args.run.migration_rate {
        Some(rate) => format!("rate {rate:.0} items/s"),
        None => args.preset.preset().name().into(),
    });
    if args.run.no_migration {
        report.protocol = "none".into();
        report.policy = None;
    }
    let mut migration = MigrationCounters::default();
    for r in finished.source.iter().chain(&finished.destination) {
        migration.add(&r.migration);
    }
    fill_migration(
        &mut report,
        &run.recorder,
        run.elapsed,
        timing,
        &migration,
        &run.counters,
    );
    report.server = Some(serde_json::json!({
        "source": report.server.take(),
        "destination": finished.destination.iter().map(|r| serde_json::json!({
            "partition": r.partition,
            "requests": r.counters.requests(),
            "entries": r.entries,
        })).collect::<Vec<_>>(),
        "capacity_ops_per_core": capacity,
        "migration_items_per_s_per_core": budget.items_per_s,
        "serve_while_migrating_per_core": budget.serve_per_s,
        "migration": {
            "groups": migration.outgoing.groups,
            "groups_done": migration.outgoing.groups_done,
            "late_writes": migration.outgoing.late_writes,
            "dedup_entries": migration.outgoing.dedup_entries,
            "stream_bytes": migration.outgoing.stream_bytes,
            "stream_retransmissions": migration.outgoing.retransmissions,
            "items_applied": migration.incoming.items_applied,
            "items_stale": migration.incoming.items_stale,
            "rejected": migration.incoming.rejected,
            "forwarded_to_source": migration.forwarded,
            "not_migrated_replies": migration.not_migrated,
            "moved_replies": migration.moved_replies,
            "retry_later_replies": migration.retry_later,
            "dirty_keys_reshipped": migration.outgoing.dirty_keys,
            "catch_up_rounds": migration.outgoing.catch_up_rounds,
            "pulled_keys": migration.pulls.keys,
            "pull_messages": migration.pulls.messages,
            "pulls_resent": migration.pulls.resent,
            "bulk_pull_requests": migration.bulk.requests,
            "bulk_pulls_resent": migration.bulk.resent,
            "bulk_pull_retry_later": migration.bulk.retry_later,
            "bulk_answer_bytes": migration.outgoing.bulk_bytes,
            "reads_parked": migration.parked,
        },
        "switch": finished.switch,
        "roles": if transport == Transport::Memory { "in-process" } else { "processes" },
    }));
    if let Some(path) = &args.plot {
        let figure = crate::plot::Figure {
            title: format!(
                "{} · YCSB-{} · {}",
                args.protocol.name(),
                spec.name,
                report.policy.as_deref().unwrap_or("")
            ),
            timeline: &report.timeline,
            migration: timing
                .started
                .zip(timing.finished)
                .map(|(s, f)| (s.as_secs_f64(), f.as_secs_f64())),
        };
        crate::plot::draw(path, &figure)
            .map_err(|e| CommandError(format!("cannot draw {}: {e}", path.display())))?;
        report.figure = Some(path.display().to_string());
        eprintln!("figure written to {}", path.display());
    }
    print_summary(&run, &report);
    print_migration(&report);
    if let Some(path) = &ycsb.json {
        report::write(&report, path)
            .map_err(|e| CommandError(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("report written to {}", path.display());
    }
    if run.counters.failed > 0 {
        hint_failures(&run);
    }
    orchestration.map_err(CommandError)?;
    Ok(report)
}

struct Orchestration {
    migrate_at: Duration,
    duration: Duration,
    tail: Duration,
    give_up: Duration,
    /// False for a run without migration (compare's `none`).
    migrate: bool,
    abort_after: Option<Duration>,
    progress: bool,
}

/// Starts the migration on time, shows its progress, and ends the run once both the
/// duration and the migration plus its tail are over.
fn orchestrate(
    settings: Orchestration,
    mut driver: Box<dyn Driver>,
    epoch: Instant,
    run_stop: &AtomicBool,
    stop: &AtomicBool,
    timing: &Mutex<Timing>,
) -> Result<(), String> {
    let result = orchestrate_until_over(&settings, driver.as_mut(), epoch, stop, timing);
    run_stop.store(true, Ordering::Relaxed);
    result
}

fn orchestrate_until_over(
    settings: &Orchestration,
    driver: &mut dyn Driver,
    epoch: Instant,
    stop: &AtomicBool,
    timing: &Mutex<Timing>,
) -> Result<(), String> {
    let interactive = std::io::stderr().is_terminal();
    let mut next_print = epoch + settings.migrate_at + Duration::from_secs(1);
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let elapsed = epoch.elapsed();
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut t = *timing.lock().expect("timing lock poisoned");
        if settings.migrate && t.started.is_none() && elapsed >= settings.migrate_at {
            driver
                .start()
                .map_err(|e| format!("cannot start the migration: {e}"))?;
            t.started = Some(elapsed);
            eprintln!("[migration] started at {:.2} s", elapsed.as_secs_f64());
        }
        if let (Some(started), None, Some(after)) = (t.started, t.finished, settings.abort_after) {
            if t.aborted_at.is_none() && !t.abort_refused && elapsed - started >= after {
                match driver.abort() {
                    Ok(()) => {
                        t.aborted_at = Some(elapsed);
                        eprintln!("[migration] aborted at {:.2} s", elapsed.as_secs_f64());
                    }
                    Err(refused) => {
                        t.abort_refused = true;
                        eprintln!("[migration] abort refused: {refused}");
                    }
                }
            }
        }
        if let (Some(started), None) = (t.started, t.finished) {
            let o = driver.source()?;
            if o.outgoing_aborted {
                t.finished = Some(elapsed);
                if o.destination_refusals > 0 {
                    eprintln!(
                        "[migration] the destination refused the shard ({} refusals): called off",
                        o.destination_refusals
                    );
                }
                if o.switch_refusals > 0 {
                    eprintln!(
                        "[migration] the switch refused to steer the migration ({} refusals): \
                         called off",
                        o.switch_refusals
                    );
                }
                eprintln!(
                    "[migration] back at the source at {:.2} s: {} keys sent back, {:.2} s \
                     after the abort",
                    elapsed.as_secs_f64(),
                    o.returned_keys,
                    (elapsed - t.aborted_at.unwrap_or(started)).as_secs_f64()
                );
            } else if o.outgoing_finished {
                t.finished = Some(elapsed);
                eprintln!(
                    "[migration] finished at {:.2} s: {} keys, {} groups in {:.2} s",
                    elapsed.as_secs_f64(),
                    o.keys_moved,
                    o.groups,
                    (elapsed - started).as_secs_f64()
                );
            } else if elapsed - started > settings.give_up {
                return Err(format!(
                    "the migration did not finish within {} s ({} of {} groups done)",
                    settings.give_up.as_secs(),
                    o.groups_done,
                    o.groups
                ));
            } else if settings.progress && Instant::now() >= next_print {
                next_print += Duration::from_secs(1);
                let applied = driver.destination()?.items_applied;
                let line = format!(
                    "[migration {:>5.1}s] groups {}/{}  keys moved {}  applied {}  {:.1} MB/s",
                    (elapsed - started).as_secs_f64(),
                    o.groups_done,
                    o.groups,
                    o.keys_moved,
                    applied,
                    o.bytes_moved as f64 / 1e6 / (elapsed - started).as_secs_f64().max(1e-3),
                );
                if interactive {
                    eprintln!("\r{line}\x1b[K");
                } else {
                    eprintln!("{line}");
                }
                let _ = std::io::stderr().flush();
            }
        }
        *timing.lock().expect("timing lock poisoned") = t;
        let over = elapsed >= settings.duration
            && (!settings.migrate
                || t.finished
                    .is_some_and(|finished| elapsed >= finished + settings.tail));
        if over {
            return Ok(());
        }
    }
}

/// Starts the migration and reads its progress, in this process or over the control API.
trait Driver: Send {
    fn start(&mut self) -> Result<(), String>;
    fn abort(&mut self) -> Result<(), String>;
    fn source(&mut self) -> Result<proto::MigrationStatus, String>;
    fn destination(&mut self) -> Result<proto::MigrationStatus, String>;
}

struct InProcessDriver {
    source: ServerControl,
    destination: ServerControl,
    plan: OutgoingPlan,
    serve_per_s: Option<f64>,
}

impl Driver for InProcessDriver {
    fn start(&mut self) -> Result<(), String> {
        self.source.migrate_out(
            |partition| OutgoingPlan {
                destination: partition_addr(self.plan.destination, partition),
                ..self.plan.clone()
            },
            self.serve_per_s,
        )
    }

    fn abort(&mut self) -> Result<(), String> {
        self.source.abort(self.plan.shard)
    }

    fn source(&mut self) -> Result<proto::MigrationStatus, String> {
        Ok((&self.source.migration_counters()).into())
    }

    fn destination(&mut self) -> Result<proto::MigrationStatus, String> {
        Ok((&self.destination.migration_counters()).into())
    }
}

/// Drives separate server processes through their control APIs; the source works out
/// the same budget from the same preset and capacity.
struct RemoteDriver {
    source: ControlClient,
    destination: ControlClient,
    request: proto::StartMigrationRequest,
}

impl Driver for RemoteDriver {
    fn start(&mut self) -> Result<(), String> {
        self.source
            .start_migration(self.request.clone())
            .map(|_| ())
    }

    fn abort(&mut self) -> Result<(), String> {
        let shard = u16::try_from(self.request.shard).expect("a shard id");
        self.source.abort_migration(shard)
    }

    fn source(&mut self) -> Result<proto::MigrationStatus, String> {
        self.source.status()
    }

    fn destination(&mut self) -> Result<proto::MigrationStatus, String> {
        self.destination.status()
    }
}

/// The switch and servers of a run.
enum Roles {
    InProcess(Box<InProcessRoles>),
    Processes(Processes),
}

struct InProcessRoles {
    switch: tofino::RunningSwitch,
    source: RunningServer,
    destination: RunningServer,
}

/// What the roles report at the end of a run.
struct Finished {
    source: Vec<PartitionReport>,
    destination: Vec<PartitionReport>,
    switch: serde_json::Value,
}

impl Roles {
    fn driver(
        &self,
        addrs: &Addresses,
        plan: OutgoingPlan,
        serve_per_s: Option<f64>,
        preset: migration::Preset,
        rate: Option<f64>,
    ) -> Result<Box<dyn Driver>, CommandError> {
        Ok(match self {
            Roles::InProcess(roles) => Box::new(InProcessDriver {
                source: roles.source.control(),
                destination: roles.destination.control(),
                plan,
                serve_per_s,
            }),
            Roles::Processes(_) => {
                let connect =
                    |data| ControlClient::connect(addrs.control_of(data)).map_err(CommandError);
                Box::new(RemoteDriver {
                    source: connect(addrs.source)?,
                    destination: connect(addrs.destination)?,
                    request: proto::StartMigrationRequest {
                        shard: plan.shard.into(),
                        destination: plan.destination.to_string(),
                        destination_shard: plan.destination_shard.into(),
                        switch: plan.switch.to_string(),
                        protocol: control::proto_protocol(plan.protocol).into(),
                        preset: control::proto_preset(preset).into(),
                        items_per_s: rate,
                        pipeline: plan.pipeline as u32,
                    },
                })
            }
        })
    }

    /// Stops every role and collects its final counters.
    fn finish(self, addrs: &Addresses) -> Result<Finished, CommandError> {
        match self {
            Roles::InProcess(roles) => {
                let InProcessRoles {
                    switch,
                    source,
                    destination,
                } = *roles;
                let source = source.stop();
                let destination = destination.stop();
                let (snapshot, port) = switch.stop();
                let mut switch = serde_json::to_value(snapshot).unwrap_or_default();
                switch["port"] = serde_json::json!({
                    "rx": port.rx_packets, "tx": port.tx_packets, "tx_dropped": port.tx_dropped,
                });
                Ok(Finished {
                    source,
                    destination,
                    switch,
                })
            }
            Roles::Processes(mut processes) => {
                processes.check_alive()?;
                // Partition loops publish every 10 ms: let the last turn's counters land.
                std::thread::sleep(Duration::from_millis(30));
                let reports = |data| {
                    ControlClient::connect(addrs.control_of(data))
                        .and_then(|mut client| client.reports())
                        .map_err(CommandError)
                };
                let finished = Finished {
                    source: reports(addrs.source)?,
                    destination: reports(addrs.destination)?,
                    switch: crate::server::control::switch_state(addrs.control_of(addrs.switch))
                        .map(|state| serde_json::to_value(state).unwrap_or_default())
                        .map_err(CommandError)?,
                };
                processes.stop();
                Ok(finished)
            }
        }
    }
}

/// Fills before / during / after, `migration` and `overhead`.
fn fill_migration(
    report: &mut report::Report,
    recorder: &crate::measure::Recorder,
    elapsed: Duration,
    timing: Timing,
    migration: &MigrationCounters,
    client: &client::Counters,
) {
    let Some(started) = timing.started else {
        return;
    };
    let finished = timing.finished.unwrap_or(elapsed);
    let window = |from: Duration, to: Duration| {
        let (ops, histogram) = recorder.window(from, to);
        let seconds = to.saturating_sub(from).as_secs_f64();
        (
            (seconds > 0.0).then(|| ops as f64 / seconds),
            Percentiles::of(&histogram),
        )
    };
    // Whole slots only: the slot the migration starts in counts as "during".
    let slot = crate::measure::SLOT;
    let start_slot = slot * (started.as_nanos() / slot.as_nanos()) as u32;
    let end_slot = slot * (finished.as_nanos() / slot.as_nanos()) as u32 + slot;
    let (before_ops, before_lat) = window(slot, start_slot); // Skip the warm-up slot.
    let (during_ops, during_lat) = window(start_slot, end_slot);
    let (after_ops, after_lat) = window(end_slot, elapsed);
    report.throughput_ops.before = before_ops;
    report.throughput_ops.during = during_ops;
    report.throughput_ops.after = after_ops;
    report.latency_us.before = before_ops.map(|_| before_lat);
    report.latency_us.during = during_ops.map(|_| during_lat);
    report.latency_us.after = after_ops.map(|_| after_lat);
    let duration = finished.saturating_sub(started).as_secs_f64();
    let o = &migration.outgoing;
    let downtime = recorder.longest_idle(started, finished);
    // The same measure over as long a stretch before the migration: what scheduling on this
    // host costs without any migration, the floor a downtime should be read against.
    let floor_from = started.saturating_sub(finished - started).max(slot);
    let downtime_floor = recorder.longest_idle(floor_from, started);
    report.migration = Some(serde_json::json!({
        "started_at_s": started.as_secs_f64(),
        "finished_at_s": timing.finished.map(|f| f.as_secs_f64()),
        "aborted": o.aborted,
        "aborted_at_s": timing.aborted_at.map(|a| a.as_secs_f64()),
        "returned_keys": o.returned_keys,
        "switch_refusals": o.switch_refusals,
        "destination_refusals": o.destination_refusals,
        "data_lost": o.lost_groups + migration.incoming.lost_groups > 0,
        "lost_groups": o.lost_groups + migration.incoming.lost_groups,
        "duration_s": duration,
        "keys_at_start": o.keys_at_start,
        "keys_moved": o.keys_moved,
        "bytes_moved": o.bytes_moved,
        "groups": o.groups,
        "rate_mb_s": if duration > 0.0 { o.bytes_moved as f64 / 1e6 / duration } else { 0.0 },
        "downtime_ms": downtime.as_secs_f64() * 1e3,
        "downtime_resolution_ms": crate::measure::TICK.as_secs_f64() * 1e3,
        "downtime_floor_ms": downtime_floor.as_secs_f64() * 1e3,
    }));
    let client_extra = if client.bytes > 0 {
        100.0 * client.extra_bytes as f64 / client.bytes as f64
    } else {
        0.0
    };
    let server_extra = if client.bytes > 0 {
        // Everything servers sent each other beyond the entries' keys and values.
        let sent = o.stream_bytes + o.bulk_bytes + migration.pulls.bytes + migration.bulk.bytes;
        let extra = sent.saturating_sub(o.bytes_moved);
        100.0 * extra as f64 / client.bytes as f64
    } else {
        0.0
    };
    report.overhead = Some(serde_json::json!({
        "client_extra_bytes_pct": client_extra,
        "server_extra_bytes_pct": server_extra,
        "double_reads": client.double_reads,
        "priority_pulls": migration.pulls.keys,
        "redirects": client.redirected,
        "forwarded_by_destination": migration.forwarded,
        "moved_replies": client.moved,
        "retry_later": client.retry_later,
    }));
}

fn print_migration(report: &report::Report) {
    let t = &report.throughput_ops;
    let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    let p = |v: &Option<Percentiles>| {
        v.as_ref()
            .map_or("-".into(), |l| format!("p50 {:.1} p99 {:.1}", l.p50, l.p99))
    };
    eprintln!(
        "throughput (ops/s): before {}  during {}  after {}",
        fmt(t.before),
        fmt(t.during),
        fmt(t.after)
    );
    let l = &report.latency_us;
    eprintln!(
        "latency (us): before {}  during {}  after {}",
        p(&l.before),
        p(&l.during),
        p(&l.after)
    );
    if let Some(m) = &report.migration {
        eprintln!("migration: {m}");
    }
    if let Some(o) = &report.overhead {
        eprintln!("overhead: {o}");
    }
}
