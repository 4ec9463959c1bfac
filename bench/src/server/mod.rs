//! The server: one loop per partition (here), each owning its port and its
//! `PartitionServer`; the ports it binds on (`transport.rs`, shared with the client and the
//! switch); and its control service (`control.rs`: migrations started, watched and called
//! off over gRPC). Requests reach the owning core by UDP port: partition `p` listens on
//! `base port + p`.

pub mod control;
pub mod log;
pub mod transport;

use crossbeam_channel::{Receiver, Sender};
use dataplane::port::{PortStats, Received, BURST};
use dataplane::runner::{spawn_loop, Idle, Placement};
use dataplane::{Packet, Port};
use kv::PartitionMap;
use log::{LogSpec, LogStats, PartitionLog};
use migration::chain::ChainConfig;
use migration::{
    MigrationCounters, MigrationTicket, OutgoingPlan, PartitionServer, ServeCounters, TokenBucket,
};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport::Fabric;

#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Address of partition 0; partition p uses port + p.
    pub base: SocketAddrV4,
    pub map: PartitionMap,
    pub shards: Vec<u16>,
    /// Entries each partition's table is sized for up front.
    pub capacity_per_partition: usize,
    /// Cores to pin partition loops to (partition p on cores[p % len]); None floats.
    pub cores: Option<Vec<usize>>,
    /// Work units (requests served + items migrated) per second per partition; None: as
    /// fast as the core goes. On a shared machine this keeps the servers, not the host,
    /// the bottleneck, like the paper's CPU budgets.
    pub capacity: Option<f64>,
    /// What partition loops do when idle (busy-poll for cores of their own).
    pub idle: Idle,
    /// Durable logs (`--log-dir`): each partition appends what it changes before it
    /// answers, and a restarted server is rebuilt from them. None: memory only.
    pub log: Option<LogSpec>,
    /// The chain this server is a replica of (`--chain`): every member's partition 0
    /// address, head first, this server's among them. None: not replicated.
    pub chain: Option<Vec<SocketAddrV4>>,
    /// A replica of a chain whose membership comes from the directory (`--etcd`): its
    /// partitions serve nothing until the first membership naming it arrives
    /// (`ServerControl::configure_chain`).
    pub awaits_membership: bool,
}

impl ServerSpec {
    pub fn partition_addr(&self, partition: u32) -> SocketAddrV4 {
        partition_addr(self.base, partition)
    }
}

pub fn partition_addr(base: SocketAddrV4, partition: u32) -> SocketAddrV4 {
    SocketAddrV4::new(*base.ip(), base.port() + partition as u16)
}

/// What one partition loop reports when it stops (and publishes every 10 ms meanwhile).
#[derive(Debug, Clone, Default)]
pub struct PartitionReport {
    pub partition: u32,
    pub counters: ServeCounters,
    pub migration: MigrationCounters,
    pub port: PortStats,
    pub entries: usize,
    pub log: LogStats,
    /// Where the partition stands in its chain (None: not replicated).
    pub chain: Option<ChainReport>,
}

/// A replica partition's view of its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainReport {
    pub epoch: u32,
    /// It is the tail, and its learner holds everything it holds.
    pub learner_caught_up: bool,
}

/// A command to a partition loop from the control plane.
pub enum Command {
    /// Would `MigrateOut` of this shard be taken? Asked of every partition before any
    /// starts, so that a start some partition refuses leaves nothing behind (a partition
    /// that started alone would pair the shard at the switch for its own part only).
    CheckMigrateOut {
        shard: u16,
        answer: Sender<Result<(), String>>,
    },
    /// Start migrating this partition of a shard away; `serve_per_s` caps serving while
    /// it runs (the rest of the capacity migrates).
    MigrateOut {
        plan: OutgoingPlan,
        serve_per_s: Option<f64>,
        started: Sender<Result<(), String>>,
    },
    /// The partition's chain has a new configuration.
    ConfigureChain(ChainConfig),
}

pub struct RunningServer {
    stop: Arc<AtomicBool>,
    loops: Vec<JoinHandle<PartitionReport>>,
    control: ServerControl,
    /// Drawn at start: tells this run of the server from earlier ones.
    pub incarnation: u64,
    /// Some partition was rebuilt from a log that held records.
    pub recovered: bool,
}

struct PartitionLoop {
    port: Box<dyn Port>,
    server: PartitionServer,
    /// The durable log the journal goes to before a turn's packets are sent.
    log: Option<PartitionLog>,
    rx: Vec<Box<Packet>>,
    tx: Vec<Box<Packet>>,
    /// The turn's packets while a chain's head decides which wait (`pass_down_the_chain`).
    gated: Vec<Box<Packet>>,
    replies: Vec<bool>,
    commands: Receiver<Command>,
    capacity: Option<f64>,
    serve_budget: TokenBucket,
    migrating: bool,
    published: Arc<Mutex<PartitionReport>>,
    next_publish: Instant,
    /// The clock as last read, and the polls since: see `poll`.
    now: Instant,
    polls: u32,
}

/// While nothing needs the time every poll, the clock (~25 ns on a VM) is read once in this
/// many polls, for publishing; commands are looked for as often.
const CLOCK_EVERY: u32 = 16;

impl PartitionLoop {
    fn poll(&mut self) -> usize {
        self.polls = self.polls.wrapping_add(1);
        let timed = self.serve_budget.rate().is_some()
            || self.server.has_migrations()
            || self.server.chain_busy();
        let round = self.polls % CLOCK_EVERY == 0;
        if timed || round {
            self.now = Instant::now();
        }
        let now = self.now;
        // Commands are rare (a migration starting): looked for once in `CLOCK_EVERY` polls.
        if round {
            if let Ok(command) = self.commands.try_recv() {
                self.execute(command);
            }
        }
        let allowed = self.serve_budget.available(now).min(BURST as u64) as usize;
        // Plain GETs are answered where they arrive when the port can (DPDK), the rest of
        // the burst is queued in `rx`.
        let received = if allowed > 0 {
            let answerer = &mut self.server;
            self.port
                .recv_answering(&mut self.rx, allowed, answerer)
                .unwrap_or_default()
        } else {
            Received::default()
        };
        // Only client requests use the serving share; migration messages and their acks
        // are paid for by the migration's own budget.
        let requests = self.rx.iter().filter(|p| is_client_request(p)).count();
        self.serve_budget
            .spend((received.answered + requests) as u64);
        if !self.rx.is_empty() {
            self.server.set_time(now);
            self.server.handle_burst(&mut self.rx, &mut self.replies);
            for (packet, reply) in self.rx.drain(..).zip(&self.replies) {
                if *reply {
                    self.tx.push(packet);
                } else {
                    self.port.release(packet);
                }
            }
        }
        // Rocksteady's replay of pulled data yields to client work: it runs after the
        // turn's requests, and takes a small share while requests keep the port busy.
        let busy = received.total() > 0 && received.total() == allowed;
        let replay = if busy { REPLAY_BUSY } else { REPLAY_IDLE };
        self.server.replay_migrations(replay);
        self.server.sweep_tombstones();
        self.server.snapshot_slice(SNAPSHOT_SLICE);
        // A migration this burst started (an INIT arrived) needs the time now, not the
        // clock of up to `CLOCK_EVERY` polls ago.
        let now = if !timed && self.server.has_migrations() {
            self.now = Instant::now();
            self.now
        } else {
            now
        };
        // Cheap when nothing migrates; drives agents' timers and late-write replies.
        self.server.poll_migrations(now, &mut self.tx);
        self.commit();
        if self.server.chain_place().is_some() {
            self.pass_down_the_chain(now);
        }
        let sent = self.tx.len();
        if !self.tx.is_empty() {
            // A failed send is counted by the port; clients and streams retransmit.
            let _ = self.port.send(&mut self.tx);
        }
        if now >= self.next_publish {
            self.publish(now);
        }
        received.total() + sent
    }

    /// A replica's turn ends with the chain: a head holds what it would send until the
    /// tail has what it depends on; every replica passes the stream on and sends what was
    /// held and is now committed (`PartitionServer::gate`, `poll_chain`).
    #[inline(never)]
    fn pass_down_the_chain(&mut self, now: Instant) {
        // Both vectors keep their capacity: nothing is allocated per turn.
        std::mem::swap(&mut self.tx, &mut self.gated);
        for packet in self.gated.drain(..) {
            if let Some(packet) = self.server.gate(packet) {
                self.tx.push(packet);
            }
        }
        self.server.poll_chain(now, &mut self.tx);
    }

    /// Writes what the turn changed to the log, as durable as `--fsync` says, before the
    /// turn's replies and acknowledgements go out. A log that cannot be written stops the
    /// process: answering without it would acknowledge what a restart loses.
    fn commit(&mut self) {
        let Some(log) = &mut self.log else {
            return;
        };
        if self.server.journal_is_empty() {
            return;
        }
        let records = self.server.take_journal();
        let mut written = log.append(&records);
        if written.is_ok() {
            if log.snapshot_under_way() && !self.server.snapshotting() {
                written = log.finish_snapshot();
            } else if log.needs_compaction() && !self.server.snapshotting() {
                // Written a slice a turn (`poll`), between the turns' own changes. (A
                // snapshot already under way, begun for a chain's learner, is not restarted:
                // restarted whenever the log grows, it would never end.)
                self.server.begin_snapshot();
                written = log.begin_snapshot();
            }
        }
        if let Err(e) = written {
            stop_unlogged(self.server.partition(), &e);
        }
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::CheckMigrateOut { shard, answer } => {
                let _ = answer.send(self.server.check_outgoing(shard));
            }
            Command::MigrateOut {
                plan,
                serve_per_s,
                started,
            } => {
                let result = self.server.start_outgoing(plan);
                if result.is_ok() {
                    self.migrating = true;
                    if serve_per_s.is_some() {
                        self.serve_budget = budget(serve_per_s);
                    }
                }
                // The asker may have given up waiting.
                let _ = started.send(result);
            }
            Command::ConfigureChain(config) => {
                let me = self.port.local_addr();
                let started_over = self.server.configure_chain(me, config, 0);
                if let (true, Some(log)) = (started_over, &mut self.log) {
                    if let Err(e) = log.start_over() {
                        stop_unlogged(self.server.partition(), &e);
                    }
                }
            }
        }
    }

    fn publish(&mut self, now: Instant) {
        self.next_publish = now + Duration::from_millis(10);
        let report = self.report();
        let counters = &report.migration;
        if self.migrating && counters.outgoing_active == 0 && counters.incoming_active == 0 {
            // Finished: serving gets the whole capacity back.
            self.migrating = false;
            self.serve_budget = budget(self.capacity);
        }
        if counters.incoming_active > 0 {
            self.migrating = true;
        }
        *self.published.lock().expect("report lock poisoned") = report;
    }

    fn report(&self) -> PartitionReport {
        PartitionReport {
            partition: self.server.partition(),
            counters: *self.server.counters(),
            migration: self.server.migration_counters(),
            port: self.port.stats(),
            entries: self.server.entries(),
            log: self.log.as_ref().map(|l| l.stats).unwrap_or_default(),
            chain: self.server.chain_replica().map(|r| ChainReport {
                epoch: r.config().map_or(0, |c| c.epoch),
                learner_caught_up: r.learner_caught_up(),
            }),
        }
    }
}

/// A log that cannot be written stops the process: answering without it would acknowledge
/// what a restart loses.
fn stop_unlogged(partition: u32, e: &io::Error) -> ! {
    eprintln!(
        "netmigrate server: partition {partition}: cannot write its log: {e}; stopping before \
         acknowledging what it would lose"
    );
    std::process::exit(1);
}

/// Entries of a snapshot of the partition (log compaction) journaled per loop turn.
const SNAPSHOT_SLICE: usize = 256;

/// Pulled entries a destination replays per loop turn when the port was busy / idle.
const REPLAY_BUSY: usize = 32;
const REPLAY_IDLE: usize = 512;

fn is_client_request(packet: &Packet) -> bool {
    dataplane::wire::Header::new_checked(packet.payload())
        .ok()
        .and_then(|h| dataplane::wire::Op::from_u8(h.op_code()).ok())
        .is_some_and(|op| op.is_key_addressed())
}

fn budget(rate: Option<f64>) -> TokenBucket {
    // A burst of 1 ms worth of work, at least one receive burst.
    TokenBucket::new(rate, rate.map_or(1.0, |r| (r / 1000.0).max(BURST as f64)))
}

/// Binds every partition's port and starts its loop.
pub fn start(fabric: &Fabric, spec: &ServerSpec) -> io::Result<RunningServer> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    let mut commands = Vec::new();
    let mut published_reports = Vec::new();
    let incarnation = draw_incarnation();
    let mut recovered = false;
    for partition in 0..spec.map.partitions() {
        let addr = spec.partition_addr(partition);
        let port = fabric.bind(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind partition {partition} at {addr}: {e}"),
            )
        })?;
        let (command_tx, command_rx) = crossbeam_channel::unbounded();
        let published = Arc::new(Mutex::new(PartitionReport {
            partition,
            ..PartitionReport::default()
        }));
        commands.push(command_tx);
        published_reports.push(Arc::clone(&published));
        let (mut server, log, from_log) = partition_server(spec, partition)?;
        recovered |= from_log;
        server.set_incarnation(incarnation);
        if let Some(members) = &spec.chain {
            // A fixed chain, the same on every replica (no coordinator moves it yet).
            let config = ChainConfig {
                epoch: 1,
                members: members
                    .iter()
                    .map(|&m| partition_addr(m, partition))
                    .collect(),
                learner: None,
            };
            server.configure_chain(addr, config, spec.capacity_per_partition);
        } else if spec.awaits_membership {
            server.await_chain(addr, spec.capacity_per_partition);
        }
        let state = PartitionLoop {
            port,
            server,
            log,
            rx: Vec::with_capacity(BURST),
            tx: Vec::with_capacity(BURST),
            gated: Vec::new(),
            replies: Vec::with_capacity(BURST),
            commands: command_rx,
            capacity: spec.capacity,
            serve_budget: budget(spec.capacity),
            migrating: false,
            published,
            next_publish: Instant::now(),
            now: Instant::now(),
            polls: 0,
        };
        let placement = match &spec.cores {
            Some(cores) => Placement::Core(cores[partition as usize % cores.len()]),
            None => Placement::Floating,
        };
        let handle = spawn_loop(
            format!("server-p{partition}"),
            placement,
            spec.idle,
            Arc::clone(&stop),
            state,
            PartitionLoop::poll,
            |state| state.report(),
        )?;
        loops.push(handle);
    }
    Ok(RunningServer {
        incarnation,
        recovered,
        stop,
        loops,
        control: ServerControl {
            spec: spec.clone(),
            commands,
            published: published_reports,
            tickets: Arc::default(),
            starting: Arc::default(),
        },
    })
}

/// Partition `partition`'s server: from its log if it has one (the log's shards win over
/// `spec.shards`), else new with `spec.shards`, recording from the start if logs are kept.
/// True when it came from a log.
fn partition_server(
    spec: &ServerSpec,
    partition: u32,
) -> io::Result<(PartitionServer, Option<PartitionLog>, bool)> {
    let capacity = spec.capacity_per_partition;
    let Some(log_spec) = &spec.log else {
        let server = PartitionServer::new(&spec.map, partition, &spec.shards, capacity);
        return Ok((server, None, false));
    };
    let (mut log, records, opened) = PartitionLog::open(log_spec, partition)
        .map_err(|e| io::Error::new(e.kind(), format!("the log of partition {partition}: {e}")))?;
    if records.is_empty() {
        let mut server = PartitionServer::new(&spec.map, partition, &spec.shards, capacity);
        server.enable_journal();
        log.append(&server.take_journal())?;
        return Ok((server, Some(log), false));
    }
    let started = Instant::now();
    let (server, recovery) = PartitionServer::recover(&spec.map, partition, capacity, &records);
    eprintln!(
        "partition {partition}: recovered {} records ({:.1} MB, {} segment(s)) in {:.2} s: \
         {} entries in {} shard(s), {} migration(s) cut short and refused{}",
        recovery.records,
        opened.bytes as f64 / 1e6,
        opened.segments,
        started.elapsed().as_secs_f64(),
        server.entries(),
        recovery.shards,
        recovery.interrupted,
        match opened.torn_bytes {
            0 => String::new(),
            torn => format!("; a torn record of {torn} bytes cut off the end"),
        }
    );
    Ok((server, Some(log), true))
}

/// A start that some partition refused: the partitions that did start must not move the
/// shard alone, so the migration is aborted (they take the shard back, as after any abort).
fn call_back(ticket: &MigrationTicket, refused: String) -> String {
    // Nothing has committed this early, so the abort is always taken.
    let _ = ticket.abort();
    format!("{refused}; any partition that had started was called back")
}

/// Sends commands to a running server's partitions and reads what they publish; clones
/// share the server.
#[derive(Clone)]
pub struct ServerControl {
    spec: ServerSpec,
    commands: Vec<Sender<Command>>,
    published: Vec<Arc<Mutex<PartitionReport>>>,
    /// The latest migration out of each shard (to abort it).
    tickets: Arc<Mutex<HashMap<u16, Arc<MigrationTicket>>>>,
    /// Held while a migration starts: two starts whose commands interleaved could each
    /// win some of the partitions and split the shard between two destinations.
    starting: Arc<Mutex<()>>,
}

impl RunningServer {
    pub fn control(&self) -> ServerControl {
        self.control.clone()
    }
}

impl ServerControl {
    pub fn spec(&self) -> &ServerSpec {
        &self.spec
    }

    /// Starts migrating every partition of a shard; `plan(p)` is partition p's plan (its
    /// ticket is replaced by one the partitions share). Returns once every partition has
    /// started, or with the first partition's refusal.
    pub fn migrate_out(
        &self,
        plan: impl Fn(u32) -> OutgoingPlan,
        serve_per_s: Option<f64>,
    ) -> Result<(), String> {
        let _one_start_at_a_time = self.starting.lock().expect("start lock poisoned");
        self.check_migrate_out(&plan)?;
        let ticket = Arc::new(MigrationTicket::fresh(self.commands.len() as u32));
        let shard = plan(0).shard;
        let mut answers = Vec::new();
        for (partition, commands) in self.commands.iter().enumerate() {
            let (started, answer) = crossbeam_channel::bounded(1);
            let plan = OutgoingPlan {
                ticket: Arc::clone(&ticket),
                ..plan(partition as u32)
            };
            let sent = commands.send(Command::MigrateOut {
                plan,
                serve_per_s,
                started,
            });
            if sent.is_err() {
                return Err(call_back(
                    &ticket,
                    format!("partition {partition} has stopped"),
                ));
            }
            answers.push(answer);
        }
        for (partition, answer) in answers.into_iter().enumerate() {
            let refused = match answer.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(())) => continue,
                Ok(Err(refused)) => format!("partition {partition}: {refused}"),
                Err(_) => format!("partition {partition} did not answer"),
            };
            return Err(call_back(&ticket, refused));
        }
        // Only a migration that started can be aborted.
        self.tickets
            .lock()
            .expect("tickets lock poisoned")
            .insert(shard, ticket);
        Ok(())
    }

    /// Asks every partition whether it would start its part. A shard is only ever taken
    /// away by `migrate_out` (under `starting`), so a partition that says yes here still
    /// does when the start comes.
    fn check_migrate_out(&self, plan: &impl Fn(u32) -> OutgoingPlan) -> Result<(), String> {
        if self.spec.chain.is_some() || self.spec.awaits_membership {
            return Err(
                "this server is a replica of a chain (--chain, --etcd): migrations between \
                        chains run in the simulator only so far (docs/replication.md)"
                    .into(),
            );
        }
        let mut answers = Vec::new();
        for (partition, commands) in self.commands.iter().enumerate() {
            let (answer, answered) = crossbeam_channel::bounded(1);
            let shard = plan(partition as u32).shard;
            if commands
                .send(Command::CheckMigrateOut { shard, answer })
                .is_err()
            {
                return Err(format!(
                    "partition {partition} has stopped; nothing was started"
                ));
            }
            answers.push(answered);
        }
        for (partition, answered) in answers.into_iter().enumerate() {
            match answered.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(())) => {}
                Ok(Err(refused)) => {
                    return Err(format!(
                        "partition {partition}: {refused}; nothing was started"
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "partition {partition} did not answer; nothing was started"
                    ))
                }
            }
        }
        Ok(())
    }

    /// Calls off the migration of `shard` out of this server: every partition gets the
    /// shard back (watch `outgoing_active` fall to 0 with `aborted` set). Refused once a
    /// partition has begun the cut-over.
    pub fn abort(&self, shard: u16) -> Result<(), String> {
        let tickets = self.tickets.lock().expect("tickets lock poisoned");
        let Some(ticket) = tickets.get(&shard) else {
            return Err(format!(
                "no migration of shard {shard} out of this server was started"
            ));
        };
        ticket.abort().map_err(|refused| refused.to_string())
    }

    /// Each partition's latest report (refreshed every 10 ms).
    /// Gives every partition its chain's configuration from the chain's `members`.
    pub fn configure_chain(&self, members: &crate::membership::ChainMembers) {
        for (partition, commands) in self.commands.iter().enumerate() {
            let config = crate::membership::partition_config(members, partition as u32);
            // A loop that stopped has nothing left to configure.
            let _ = commands.send(Command::ConfigureChain(config));
        }
    }

    pub fn reports(&self) -> Vec<PartitionReport> {
        self.published
            .iter()
            .map(|r| r.lock().expect("report lock poisoned").clone())
            .collect()
    }

    /// Migration counters summed over partitions (refreshed every 10 ms).
    pub fn migration_counters(&self) -> MigrationCounters {
        let mut total = MigrationCounters::default();
        for report in self.reports() {
            total.add(&report.migration);
        }
        total
    }
}

impl RunningServer {
    pub fn is_running(&self) -> bool {
        self.loops.iter().all(|handle| !handle.is_finished())
    }

    pub fn stop(self) -> Vec<PartitionReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.loops
            .into_iter()
            .map(|handle| handle.join().expect("partition loop panicked"))
            .collect()
    }
}

/// The server's final statistics, one line per partition and a total.
pub fn format_reports(reports: &[PartitionReport]) -> String {
    let mut total = ServeCounters::default();
    let mut out = String::new();
    for r in reports {
        total.add(&r.counters);
        out.push_str(&format!(
            "partition {:>2}: {:>10} requests ({} get, {} put, {} delete, {} multi), {} entries, \
             {} duplicate writes, {} error replies, {} dropped (malformed {}, hash {}, stale {}, \
             not a request {}); port rx {} tx {} tx-dropped {}\n",
            r.partition,
            r.counters.requests(),
            r.counters.gets,
            r.counters.puts,
            r.counters.deletes,
            r.counters.multi_requests,
            r.entries,
            r.counters.duplicate_writes,
            r.counters.error_replies,
            r.counters.dropped(),
            r.counters.dropped_malformed,
            r.counters.dropped_hash_mismatch,
            r.counters.dropped_stale_write,
            r.counters.dropped_not_request,
            r.port.rx_packets,
            r.port.tx_packets,
            r.port.tx_dropped,
        ));
        if r.log.appended_bytes > 0 {
            out.push_str(&format!(
                "              log: {:.1} MB appended, {} syncs, {} segment(s), {} compaction(s) \
                 (last snapshot {:.1} MB)\n",
                r.log.appended_bytes as f64 / 1e6,
                r.log.syncs,
                r.log.segments,
                r.log.compactions,
                r.log.snapshot_bytes as f64 / 1e6,
            ));
        }
    }
    out.push_str(&format!(
        "total       : {:>10} requests, {} dropped, {} error replies\n",
        total.requests(),
        total.dropped(),
        total.error_replies
    ));
    out
}

/// A new name for this run of the server (never 0), so that a migration's other end can
/// tell it restarted: the wall clock's nanoseconds, mixed with the process id.
fn draw_incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed =
        (nanos ^ u64::from(std::process::id()).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    mixed.max(1)
}
