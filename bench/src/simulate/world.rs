//! One simulated run: servers with several partitions each, the software switch, YCSB
//! clients (the real client engine over simulated ports), the network between them, and the
//! migrations the run asks for, all on one thread in virtual time.

use super::network::{Hop, Network};
use super::trace::Trace;
use super::Config;
use crate::client::{Cluster, Engine, InsertCounter, Nanos, OpSource, Settings, ThreadResult};
use crate::linearizability::Op as HistoryOp;
use crate::workload::WorkloadSpec;
use dataplane::port::PortStats;
use dataplane::runner::Idle;
use dataplane::{Packet, Port};
use kv::{GroupLayout, PartitionMap};
use migration::chain::{ChainConfig, Place};
use migration::membership::Membership;
use migration::{MigrationTicket, OutgoingPlan, PartitionServer, Protocol, Role};
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The switch's address (control messages go here).
const SWITCH: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 254), 9000);
/// Partition p of a server listens on this port + p.
const BASE_PORT: u16 = 7100;
/// Operations each client of a shard a crash damaged still starts.
const AFTER_DAMAGE_OPS: u64 = 50;
/// How long after a migration its chains' heads are spared from crashes: their last role
/// change is committed well within it (a chain's round trip is ~0.1–2 ms here).
const MIGRATION_SETTLES_NS: u64 = 20_000_000;
/// Servers with a migration are polled this often.
const SERVER_TICK_NS: u64 = 20_000;
/// Entries of a snapshot (log compaction) a partition writes a tick: few, so that crashes
/// land in the middle of snapshots.
const SNAPSHOT_SLICE: usize = 16;

fn server_ip(server: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 2, server as u8 + 1)
}

fn client_addr(client: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, client as u8 + 1), 20_000)
}

/// A client engine's port: what the simulator delivers waits in `inbox`, what the engine
/// sends waits in `outbox` for the simulator to put on the network.
#[derive(Clone)]
struct SimPort {
    addr: SocketAddrV4,
    inbox: Arc<Mutex<VecDeque<Box<Packet>>>>,
    outbox: Arc<Mutex<Vec<Box<Packet>>>>,
}

impl Port for SimPort {
    fn recv(&mut self, rx: &mut Vec<Box<Packet>>, max: usize) -> io::Result<usize> {
        let mut inbox = self.inbox.lock().expect("inbox");
        let n = inbox.len().min(max);
        rx.extend(inbox.drain(..n));
        Ok(n)
    }

    fn send(&mut self, tx: &mut Vec<Box<Packet>>) -> io::Result<usize> {
        let n = tx.len();
        let mut outbox = self.outbox.lock().expect("outbox");
        for mut packet in tx.drain(..) {
            packet.src = self.addr;
            outbox.push(packet);
        }
        Ok(n)
    }

    fn alloc(&mut self) -> Box<Packet> {
        Packet::new_boxed()
    }

    fn release(&mut self, _packet: Box<Packet>) {}

    fn local_addr(&self) -> SocketAddrV4 {
        self.addr
    }

    fn stats(&self) -> PortStats {
        PortStats::default()
    }
}

struct Server {
    ip: Ipv4Addr,
    /// Drawn at every (re)start: a configuration sent to an earlier run is not applied.
    incarnation: u64,
    partitions: Vec<PartitionServer>,
    /// Each partition's durable log: what its journal held whenever it sent something
    /// (the loop writes the journal before it sends a turn's packets).
    logs: Vec<DiskLog>,
}

/// One partition's log on a simulated disk, compacted as the server's is: once it outgrows
/// its last snapshot the partition writes a new one into its journal, a slice a tick, and
/// when it is whole what came before it is dropped.
#[derive(Default)]
struct DiskLog {
    bytes: Vec<u8>,
    compacted_len: usize,
    compactions: u64,
    /// Where the snapshot under way starts (None: not started, or none under way).
    snapshot_from: Option<usize>,
    /// The partition has begun a snapshot whose first record its next commit brings.
    snapshot_begun: bool,
}

impl DiskLog {
    /// Bytes a log may grow to beyond twice its last snapshot before it is compacted (small,
    /// so that runs compact often).
    const SLACK: usize = 16 << 10;

    /// Makes `partition`'s changes durable, as the loop does before it sends.
    fn commit(&mut self, partition: &mut PartitionServer) {
        let journal = partition.take_journal();
        if std::mem::take(&mut self.snapshot_begun) {
            self.snapshot_from = Some(self.bytes.len());
        }
        self.bytes.extend_from_slice(&journal);
        match self.snapshot_from {
            Some(from) if !partition.snapshotting() => {
                self.bytes.drain(..from);
                self.compacted_len = self.bytes.len();
                self.compactions += 1;
                self.snapshot_from = None;
            }
            Some(_) => {}
            // A snapshot begun for a chain's learner is left to end (restarted whenever the
            // log grew, it never would).
            None if self.bytes.len() > 2 * self.compacted_len + Self::SLACK
                && !partition.snapshotting() =>
            {
                partition.begin_snapshot();
                self.snapshot_begun = true;
            }
            None => {}
        }
    }
}

impl Server {
    fn commit(&mut self, p: usize) {
        self.logs[p].commit(&mut self.partitions[p]);
    }

    fn addr(&self, partition: usize) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, BASE_PORT + partition as u16)
    }

    /// Names this run of the server (a restart takes a new one).
    fn set_incarnation(&mut self, incarnation: u64) {
        self.incarnation = incarnation;
        for partition in &mut self.partitions {
            partition.set_incarnation(incarnation);
        }
    }

    /// Requests its partitions refused with DATA_LOST (since it last started).
    fn data_lost_replies(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.counters().data_lost_replies)
            .sum()
    }
}

/// A logical server: the chain of replica processes (indexes into `World::servers`) that
/// serves it, as the coordinator configured it. Without replication, a chain of one that is
/// never configured (the server runs alone, as before chains existed).
struct Chain {
    membership: Membership<usize>,
    /// Until when its head is spared from crashes after a migration it took part in.
    migrated_until: Nanos,
}

/// A chain configuration for one replica's partition, due at `at`.
struct ConfigOnTheWay {
    at: Nanos,
    server: usize,
    incarnation: u64,
    partition: usize,
    config: ChainConfig,
}

/// The longest a replica takes to learn of its chain's new configuration.
const CONFIG_DELAY_MAX_NS: u64 = 1_000_000;

/// A client: loads its shard (the first of each shard) and runs the workload.
struct Client {
    engine: Engine,
    port: SimPort,
    source: OpSource,
    shard: u16,
    phase: Phase,
    started: u64,
    histories: Vec<ThreadResult>,
}

/// What a client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Loading its shard (its first client); the load's engine is replaced by the run's
    /// once it is done.
    Load,
    /// Running the workload.
    Run,
    /// After the run: reading every record once, so the history holds what each key ended
    /// as and the checker sees that nothing was lost.
    ReadBack,
    Done,
}

/// One migration the run started.
struct Migration {
    shard: u16,
    from: usize,
    to: usize,
    protocol: Protocol,
    ticket: Arc<MigrationTicket>,
    abort_at: Option<u64>,
}

/// How a run ended, for the summary and the checks.
#[derive(Debug, Default, Clone)]
pub struct RunStats {
    pub events: u64,
    pub ops: u64,
    pub failed: u64,
    pub migrations_finished: u64,
    pub migrations_aborted: u64,
    pub cuts: u64,
    pub switch_restarts: u64,
    pub crashes: u64,
    /// Requests the servers refused with DATA_LOST (crashed servers' counts are gone).
    pub data_lost_replies: u64,
    /// Shards a crash damaged: one whose owner crashed without a log, or whose migration a
    /// crash cut short.
    pub damaged_shards: u64,
    /// Logs replaced by a snapshot of their partition.
    pub log_compactions: u64,
    /// Replicated servers: crashes of a chain's head, and crashed replicas that copied
    /// their chain's state and became its tail again.
    pub head_crashes: u64,
    /// Head crashes while a migration came into the chain (its successor took it over).
    pub takeover_crashes: u64,
    pub rejoined: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub virtual_ms: f64,
}

pub struct World {
    config: Config,
    rng: fastrand::Rng,
    epoch: Instant,
    now: Nanos,
    map: PartitionMap,
    spec: Arc<WorkloadSpec>,
    /// The workload of the multi-key clients (`Config::keys_per_request`).
    multi_spec: Arc<WorkloadSpec>,
    servers: Vec<Server>,
    /// Per logical server: its chain of replicas (`Config::replicas`).
    chains: Vec<Chain>,
    switch: tofino::Switch,
    network: Network,
    clients: Vec<Client>,
    /// Per shard (index = shard id − 1): the server that owns it, and its migration.
    owner: Vec<usize>,
    active: Vec<Option<Migration>>,
    inserts: Vec<Arc<InsertCounter>>,
    migrations_left: usize,
    next_migration_at: Nanos,
    cuts_left: usize,
    next_cut_at: Nanos,
    /// Switch restarts still to come (each with empty registers and pair table).
    switch_restarts_left: usize,
    next_switch_restart_at: Nanos,
    switch_config: tofino::SwitchConfig,
    crashes_left: usize,
    next_crash_at: Nanos,
    /// Per shard: a crash touched its data (its owner, or a migration's end, crashed), so
    /// it is not expected whole at the end; what was lost must only never be read stale.
    damaged: Vec<bool>,
    /// Servers that crashed (by address).
    crashed: Vec<Ipv4Addr>,
    next_stream_id: u32,
    next_writer: u32,
    /// Chain configurations on their way to replicas: each learns of a new configuration
    /// at its own moment, as processes reading a directory do.
    configs_on_the_way: Vec<ConfigOnTheWay>,
    pub trace: Trace,
    pub stats: RunStats,
}

impl World {
    pub fn new(config: &Config, seed: u64) -> Result<World, String> {
        let layout = GroupLayout::new(config.group_bits).map_err(|e| e.to_string())?;
        let map = PartitionMap::new(layout, config.partitions).map_err(|e| e.to_string())?;
        let mut rng = fastrand::Rng::with_seed(seed);
        let shards = config.shards as usize;
        let owner: Vec<usize> = (0..shards).map(|s| s % config.servers).collect();
        let replicas = config.replicas.max(1);
        let servers = (0..config.servers * replicas)
            .map(|s| {
                // As `netmigrate server --shard` starts them: every server hosts every shard,
                // empty where it is not the owner, so a destination owns an empty shard until
                // its INIT arrives. Or only the shards it owns.
                let held: Vec<u16> = (1..=config.shards)
                    .filter(|&id| config.host_every_shard || owner[id as usize - 1] == s / replicas)
                    .collect();
                let partitions = (0..config.partitions).map(|p| {
                    let mut partition = PartitionServer::new(&map, p, &held, 64);
                    if config.durable_logs {
                        partition.enable_journal();
                    }
                    partition
                });
                let mut server = Server {
                    ip: server_ip(s),
                    incarnation: 0,
                    partitions: partitions.collect(),
                    logs: (0..config.partitions).map(|_| DiskLog::default()).collect(),
                };
                // As the server does at start: its shards are in the log before it serves.
                for p in 0..server.partitions.len() {
                    server.commit(p);
                }
                server
            })
            .collect();
        let mut switch_config = tofino::SwitchConfig::new(SWITCH, config.group_bits);
        switch_config.cbf_cells = config.cbf_cells;
        if let Some(cells) = config.bf_cells {
            switch_config.bf_cells = cells;
        }
        let network = Network::new(config.faults, rng.u64(..));
        let spec = Arc::new(config.workload.clone());
        let mut multi = config.workload.clone();
        multi.keys_per_request = config.keys_per_request;
        let multi_spec = Arc::new(multi);
        let mut world = World {
            config: config.clone(),
            epoch: Instant::now(),
            now: 0,
            map,
            spec,
            multi_spec,
            servers,
            chains: (0..config.servers)
                .map(|c| Chain {
                    membership: Membership::new((c * replicas..(c + 1) * replicas).collect()),
                    migrated_until: 0,
                })
                .collect(),
            switch: tofino::Switch::new(switch_config),
            switch_config,
            switch_restarts_left: config.switch_restarts,
            next_switch_restart_at: 0,
            crashes_left: config.crashes,
            next_crash_at: 0,
            damaged: vec![false; shards],
            crashed: Vec::new(),
            network,
            clients: Vec::new(),
            owner,
            active: (0..shards).map(|_| None).collect(),
            inserts: (0..shards)
                .map(|_| Arc::new(InsertCounter::new(0)))
                .collect(),
            migrations_left: config.migrations,
            next_migration_at: 0,
            cuts_left: config.cuts,
            next_cut_at: 0,
            next_stream_id: 1,
            next_writer: 1,
            configs_on_the_way: Vec::new(),
            trace: Trace::new(config.trace_events),
            stats: RunStats::default(),
            rng: fastrand::Rng::with_seed(rng.u64(..)),
        };
        world.next_migration_at = world.rng.u64(0..=config.migration_gap_ns);
        world.next_cut_at = world.rng.u64(0..=config.cut_gap_ns);
        world.next_switch_restart_at = world.rng.u64(0..=config.migration_gap_ns * 2);
        world.next_crash_at = world.rng.u64(0..=config.migration_gap_ns * 3);
        for s in 0..world.servers.len() {
            let incarnation = world.rng.u64(1..);
            world.servers[s].set_incarnation(incarnation);
        }
        if world.replicated() {
            for c in 0..world.chains.len() {
                world.configure_chain(c, true);
            }
        }
        for shard in 1..=config.shards {
            for i in 0..config.clients_per_shard {
                world.add_client(shard, i == 0);
            }
        }
        Ok(world)
    }

    fn settings(&mut self, shard: u16) -> Settings {
        Settings {
            threads: 1,
            window: self.config.window,
            rate_per_thread: None,
            timeout: Duration::from_micros(500),
            max_timeout: Duration::from_millis(20),
            give_up: Duration::from_millis(self.config.give_up_ms),
            record_history: true,
            progress: false,
            seed: self.rng.u64(..),
            track_migrations: self.protocol_of(shard) == Protocol::Fulva,
            reads_at_tail: false,
            idle: Idle::Share,
        }
    }

    fn protocol_of(&self, shard: u16) -> Protocol {
        let protocols = &self.config.protocols;
        protocols[(shard as usize - 1) % protocols.len()]
    }

    fn cluster(&self, shard: u16) -> Arc<Cluster> {
        let server = &self.servers[self.head(self.owner[shard as usize - 1])];
        Arc::new(Cluster {
            chain_view: None,
            partitions: (0..self.config.partitions as usize)
                .map(|p| server.addr(p))
                .collect(),
            map: self.map,
            shard,
            replicas: Vec::new(),
        })
    }

    fn engine(&mut self, port: &SimPort, shard: u16, spec: &Arc<WorkloadSpec>) -> Engine {
        let writer = self.next_writer;
        self.next_writer += 1;
        let mut engine = Engine::new(
            Box::new(port.clone()),
            self.cluster(shard),
            Arc::clone(spec),
            self.settings(shard),
            writer,
            writer,
            self.epoch,
        );
        if self.replicated() {
            let chain = self.owner[shard as usize - 1];
            for p in 0..self.config.partitions as usize {
                let replicas = self.chain_addrs(chain, p);
                engine.follow_chain(p, &replicas, &replicas);
            }
        }
        engine
    }

    /// A shard moved from chain `from` to its new owner's: its clients spread reads over
    /// the new chain (MOVED already brought their writes to its head).
    fn follow_moved_shard(&mut self, shard: u16, from: usize) {
        let to = self.owner[shard as usize - 1];
        for p in 0..self.config.partitions as usize {
            let old = self.chain_addrs(from, p);
            let new = self.chain_addrs(to, p);
            for client in self.clients.iter_mut().filter(|c| c.shard == shard) {
                client.engine.follow_chain(p, &old, &new);
            }
        }
    }

    fn replicated(&self) -> bool {
        self.config.replicas > 1
    }

    /// The head of logical server `chain`.
    fn head(&self, chain: usize) -> usize {
        *self.chains[chain].membership.head()
    }

    /// Partition `p`'s address on each member of `chain`, head first.
    fn chain_addrs(&self, chain: usize, p: usize) -> Vec<SocketAddrV4> {
        let members = self.chains[chain].membership.members.iter();
        members.map(|&s| self.servers[s].addr(p)).collect()
    }

    /// Gives every replica of `chain` (and its learner) the chain's configuration, as the
    /// coordinator does through etcd: each replica learns of it at its own moment (at once
    /// when `at_once`, as a chain starts); clients of its shards follow a new head.
    fn configure_chain(&mut self, chain: usize, at_once: bool) {
        let c = &self.chains[chain].membership;
        let (members, learner, epoch) = (c.members.clone(), c.learner, c.epoch);
        self.settle_with_new_head(chain);
        for p in 0..self.config.partitions as usize {
            let config = ChainConfig {
                epoch,
                members: members.iter().map(|&s| self.servers[s].addr(p)).collect(),
                learner: learner.map(|s| self.servers[s].addr(p)),
            };
            for &s in members.iter().chain(learner.iter()) {
                let delay = if at_once {
                    0
                } else {
                    self.rng.u64(0..=CONFIG_DELAY_MAX_NS)
                };
                self.configs_on_the_way.push(ConfigOnTheWay {
                    at: self.now + delay,
                    server: s,
                    incarnation: self.servers[s].incarnation,
                    partition: p,
                    config: config.clone(),
                });
            }
            // Every process that ever served this chain (replicas never change chains).
            let replicas = self.config.replicas;
            let old: Vec<SocketAddrV4> = (chain * replicas..(chain + 1) * replicas)
                .map(|s| self.servers[s].addr(p))
                .collect();
            for client in &mut self.clients {
                let shard = client.shard as usize - 1;
                if self.owner[shard] == chain {
                    client.engine.follow_chain(p, &old, &config.members);
                } else if self.active[shard].as_ref().is_some_and(|m| m.to == chain) {
                    // Sent to the migration's destination: follow its new head.
                    client.engine.follow_head(p, &old, config.members[0]);
                }
            }
        }
        self.deliver_configs();
    }

    /// The control plane tells the source of every migration into `chain` where its head
    /// is now (`PartitionServer::destination_replaced`): a head that died before INIT
    /// reached its successor leaves no one there to ask the source.
    fn settle_with_new_head(&mut self, chain: usize) {
        let head = self.head(chain);
        let into: Vec<(u16, usize)> = self
            .active
            .iter()
            .flatten()
            .filter(|m| m.to == chain)
            .map(|m| (m.shard, m.from))
            .collect();
        for (shard, from) in into {
            let source = self.head(from);
            for p in 0..self.config.partitions as usize {
                let to = self.servers[head].addr(p);
                self.servers[source].partitions[p].destination_replaced(shard, to);
            }
        }
    }

    /// Applies the configurations due now. One for an earlier run of its replica, or older
    /// than the replica's own, is dropped (a process polling the directory never goes back).
    fn deliver_configs(&mut self) {
        let now = self.now;
        let (mut due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.configs_on_the_way)
            .into_iter()
            .partition(|c| c.at <= now);
        self.configs_on_the_way = later;
        due.sort_by_key(|c| (c.at, c.config.epoch));
        for c in due {
            let server = &mut self.servers[c.server];
            if server.incarnation != c.incarnation {
                continue;
            }
            let addr = server.addr(c.partition);
            let partition = &mut server.partitions[c.partition];
            let known = partition
                .chain_replica()
                .and_then(|r| r.config())
                .map_or(0, |k| k.epoch);
            if c.config.epoch > known {
                let note = format!(
                    "replica {} partition {} takes {:?}",
                    c.server, c.partition, c.config
                );
                partition.configure_chain(addr, c.config, 64);
                let replica = partition
                    .chain_replica()
                    .map(|r| r.to_string())
                    .unwrap_or_default();
                self.trace.note(now, format!("{note}: {replica}"));
            }
        }
    }

    fn add_client(&mut self, shard: u16, loader: bool) {
        let port = SimPort {
            addr: client_addr(self.clients.len()),
            inbox: Arc::default(),
            outbox: Arc::default(),
        };
        // A shard's first client loads it, then runs single-key requests; the others run
        // multi-key ones.
        let spec = if loader {
            Arc::clone(&self.spec)
        } else {
            Arc::clone(&self.multi_spec)
        };
        let engine = self.engine(&port, shard, &spec);
        let source = if loader {
            OpSource::load(0..self.config.records)
        } else {
            OpSource::run(&spec, self.rng.u64(..), None)
        };
        self.clients.push(Client {
            engine,
            port,
            source,
            shard,
            phase: if loader { Phase::Load } else { Phase::Run },
            started: 0,
            histories: Vec::new(),
        });
    }

    fn instant(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.now)
    }

    fn shard_loaded(&self, shard: u16) -> bool {
        self.inserts[shard as usize - 1].limit() >= self.config.records
    }

    /// Runs until every migration ended and every client did its operations (then drains),
    /// or the virtual time limit; Err says what did not end.
    pub fn run(&mut self) -> Result<(), String> {
        loop {
            self.deliver_due();
            self.deliver_configs();
            self.step_clients();
            self.step_servers();
            self.step_plan();
            self.stats.events += 1;
            let issuing = self.issuing();
            let quiet = !issuing
                && self.clients.iter().all(|c| c.engine.outstanding() == 0)
                && self.clients.iter().all(|c| c.phase != Phase::ReadBack)
                && !self.background_work()
                && self.active.iter().all(Option::is_none)
                && self.network.in_flight() == 0;
            if quiet {
                return Ok(());
            }
            let Some(next) = self.next_event(issuing) else {
                return Err("nothing left to happen, yet the run has not ended".into());
            };
            if next > self.config.time_limit_ns {
                return Err(format!(
                    "the run did not end within {} ms of virtual time: {}",
                    self.config.time_limit_ns / 1_000_000,
                    self.stuck()
                ));
            }
            self.now = next.max(self.now);
        }
    }

    /// Whether a server still sweeps tombstones, writes a snapshot or replicates, or a
    /// chain still waits for a replica to join.
    fn background_work(&self) -> bool {
        self.chains
            .iter()
            .any(|c| c.membership.learner.is_some() || !c.membership.waiting.is_empty())
            || !self.configs_on_the_way.is_empty()
            || self.servers.iter().any(|s| {
                s.partitions
                    .iter()
                    .any(|p| p.sweeping() || p.snapshotting() || p.chain_busy())
            })
    }

    /// After a run: a client per shard no crash damaged reads every record once. Call
    /// `run` again to carry the reads out.
    pub fn start_read_back(&mut self) {
        for shard in 1..=self.config.shards {
            if self.damaged[shard as usize - 1] {
                continue;
            }
            let port = SimPort {
                addr: client_addr(self.clients.len()),
                inbox: Arc::default(),
                outbox: Arc::default(),
            };
            let spec = Arc::clone(&self.spec);
            let engine = self.engine(&port, shard, &spec);
            self.clients.push(Client {
                engine,
                port,
                source: OpSource::read_back(0..self.config.records),
                shard,
                phase: Phase::ReadBack,
                started: 0,
                histories: Vec::new(),
            });
        }
    }

    /// Clients keep starting operations until the plan has run out and each did its share.
    fn issuing(&self) -> bool {
        self.migrations_left > 0
            || self.cuts_left > 0
            || self.switch_restarts_left > 0
            || self.crashes_left > 0
            || self.active.iter().any(Option::is_some)
            || self.clients.iter().any(|c| {
                // A shard a crash damaged may never finish loading: its clients do not
                // hold the run up.
                !self.damaged[c.shard as usize - 1]
                    && (c.phase == Phase::Load
                        || (c.phase == Phase::Run && c.started < self.config.ops_per_client))
            })
    }

    fn stuck(&self) -> String {
        let mut what = Vec::new();
        for m in self.active.iter().flatten() {
            what.push(format!(
                "{:?} migration of shard {} from server {} to {} still running",
                m.protocol, m.shard, m.from, m.to
            ));
            for (side, chain) in [("source", m.from), ("destination", m.to)] {
                let server = self.head(chain);
                for (p, partition) in self.servers[server].partitions.iter().enumerate() {
                    let c = partition.counters();
                    what.push(format!(
                        "{side} partition {p}: role {}, dropped {} malformed, {} not a request, \
                         {} stale writes; {} INITs refused",
                        role_name(partition.role(m.shard)),
                        c.dropped_malformed,
                        c.dropped_not_request,
                        c.dropped_stale_write,
                        c.refused_inits
                    ));
                }
            }
        }
        let waiting: usize = self.clients.iter().map(|c| c.engine.outstanding()).sum();
        if waiting > 0 {
            what.push(format!("{waiting} client operations outstanding"));
        }
        if self.replicated() {
            for (c, chain) in self.chains.iter().enumerate() {
                let chain = &chain.membership;
                what.push(format!(
                    "chain {c}: members {:?}, learner {:?}, waiting {:?}",
                    chain.members, chain.learner, chain.waiting
                ));
            }
        }
        for (s, server) in self.servers.iter().enumerate() {
            for (p, partition) in server.partitions.iter().enumerate() {
                if let Some(replica) = partition.chain_replica().filter(|r| {
                    partition.chain_busy() || r.config().is_some_and(|c| c.learner.is_some())
                }) {
                    what.push(format!("replica {s} partition {p}: {replica}"));
                }
            }
        }
        what.join("; ")
    }

    fn next_event(&self, issuing: bool) -> Option<Nanos> {
        let mut next = self.network.next_arrival();
        let mut consider = |t: Option<Nanos>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Nanos| n.min(t)));
            }
        };
        for client in &self.clients {
            consider(client.engine.poll_timeout());
        }
        for config in &self.configs_on_the_way {
            consider(Some(config.at));
        }
        let migrating = self
            .servers
            .iter()
            .any(|s| s.partitions.iter().any(PartitionServer::has_migrations));
        if migrating || self.background_work() || self.active.iter().any(Option::is_some) {
            consider(Some(self.now + SERVER_TICK_NS));
        }
        if issuing {
            if self.migrations_left > 0 {
                consider(Some(self.next_migration_at));
            }
            if self.switch_restarts_left > 0 {
                consider(Some(self.next_switch_restart_at));
            }
            if self.crashes_left > 0 {
                consider(Some(self.next_crash_at));
            }
            if self.cuts_left > 0 {
                consider(Some(self.next_cut_at));
            }
            for m in self.active.iter().flatten() {
                consider(m.abort_at);
            }
        }
        next
    }

    /// Delivers every datagram due now: to the switch, or to its destination host.
    fn deliver_due(&mut self) {
        while let Some((hop, packet)) = self.network.arrive(self.now) {
            self.trace.record(self.now, hop, &packet);
            match hop {
                Hop::ToSwitch => {
                    let (mut out, mut dropped) = (Vec::new(), Vec::new());
                    self.switch.process(packet, &mut out, &mut dropped);
                    for packet in out {
                        self.network.send(self.now, Hop::ToHost, packet);
                    }
                }
                Hop::ToHost => self.deliver_to_host(packet),
            }
        }
    }

    fn deliver_to_host(&mut self, mut packet: Box<Packet>) {
        let dst = packet.dst;
        if let Some(client) = self.clients.iter().find(|c| c.port.addr == dst) {
            client.port.inbox.lock().expect("inbox").push_back(packet);
            return;
        }
        let now = self.instant();
        let Some(server) = self.servers.iter_mut().find(|s| s.ip == *dst.ip()) else {
            return; // Nobody there: lost.
        };
        let Some(p) = (dst.port().checked_sub(BASE_PORT))
            .map(usize::from)
            .filter(|&p| p < server.partitions.len())
        else {
            return;
        };
        let partition = &mut server.partitions[p];
        partition.set_time(now);
        let reply = partition.handle(&mut packet);
        server.commit(p);
        let mut out = Vec::new();
        if reply {
            // A head's packets wait for the tail (`PartitionServer::gate`).
            out.extend(server.partitions[p].gate(packet));
        }
        server.partitions[p].poll_chain(now, &mut out);
        let addr = server.addr(p);
        for mut packet in out {
            if packet.src.port() == 0 {
                packet.src = addr;
            }
            self.network.send(self.now, Hop::ToSwitch, packet);
        }
    }

    fn step_clients(&mut self) {
        let now = self.now;
        let issuing = self.issuing();
        for i in 0..self.clients.len() {
            let shard = self.clients[i].shard;
            let loaded = self.shard_loaded(shard);
            // Clients of a damaged shard do their share and stop: mostly refusals.
            let done = self.damaged[shard as usize - 1]
                && self.clients[i].started >= self.config.ops_per_client;
            let client = &mut self.clients[i];
            let inserts = Arc::clone(&self.inserts[client.shard as usize - 1]);
            client.engine.take_replies(&inserts, || now);
            client.engine.expire_timers(now, &inserts);
            let starts = match client.phase {
                Phase::Load | Phase::ReadBack => true,
                Phase::Run => loaded && issuing && !done,
                Phase::Done => false,
            };
            if starts {
                let before = client.engine.outstanding();
                let dry = client
                    .engine
                    .start_operations(&mut client.source, &inserts, now);
                client.started += client.engine.outstanding().saturating_sub(before) as u64;
                if dry && client.engine.outstanding() == 0 {
                    match client.phase {
                        Phase::Load => {
                            self.finish_loading(i);
                            continue;
                        }
                        Phase::ReadBack => client.phase = Phase::Done,
                        Phase::Run | Phase::Done => {}
                    }
                }
            }
            let client = &mut self.clients[i];
            client.engine.flush();
            let out: Vec<_> = client
                .port
                .outbox
                .lock()
                .expect("outbox")
                .drain(..)
                .collect();
            for packet in out {
                self.network.send(now, Hop::ToSwitch, packet);
            }
        }
    }

    /// A loader is done: its history is kept and it runs the workload from now on.
    fn finish_loading(&mut self, i: usize) {
        let shard = self.clients[i].shard;
        let port = self.clients[i].port.clone();
        let spec = Arc::clone(&self.spec);
        let engine = self.engine(&port, shard, &spec);
        let (finished, seed) = (self.instant(), self.rng.u64(..));
        let source = OpSource::run(&self.spec, seed, None);
        // A crash can leave an insert's outcome open: the run goes on with every record
        // counted as loaded (one whose insert failed may be absent, as its history allows).
        self.inserts[shard as usize - 1].settle(self.config.records);
        let client = &mut self.clients[i];
        let loader = std::mem::replace(&mut client.engine, engine);
        client.histories.push(loader.finish(finished));
        client.source = source;
        client.phase = Phase::Run;
        client.started = 0;
    }

    fn step_servers(&mut self) {
        let now = self.instant();
        let mut out = Vec::new();
        for server in &mut self.servers {
            for (p, partition) in server.partitions.iter_mut().enumerate() {
                partition.sweep_tombstones();
                if partition.snapshotting() {
                    partition.snapshot_slice(SNAPSHOT_SLICE);
                    server.logs[p].commit(partition);
                }
                let mut send = Vec::new();
                if partition.has_migrations() {
                    partition.replay_migrations(64);
                    partition.poll_migrations(now, &mut out);
                    server.logs[p].commit(partition);
                    send.extend(out.drain(..).filter_map(|packet| partition.gate(packet)));
                }
                partition.poll_chain(now, &mut send);
                // Sent from this partition's address, as its port would.
                let addr = SocketAddrV4::new(server.ip, BASE_PORT + p as u16);
                for mut packet in send {
                    packet.src = addr;
                    self.network.send(self.now, Hop::ToSwitch, packet);
                }
            }
        }
    }

    /// Starts and aborts migrations and cuts hosts off, as the plan says.
    fn step_plan(&mut self) {
        self.end_migrations();
        if self.replicated() {
            self.coordinate_chains();
        }
        for m in self.active.iter_mut().flatten() {
            if m.abort_at.is_some_and(|at| at <= self.now) {
                m.abort_at = None;
                let taken = m.ticket.abort().is_ok();
                self.trace.note(
                    self.now,
                    format!("abort of shard {}'s migration (taken: {taken})", m.shard),
                );
            }
        }
        if self.migrations_left > 0 && self.now >= self.next_migration_at {
            self.start_migration();
            self.next_migration_at = self.now + self.rng.u64(0..=self.config.migration_gap_ns);
        }
        if self.switch_restarts_left > 0 && self.now >= self.next_switch_restart_at {
            // A restarted switch has empty registers and no pairs.
            self.switch_restarts_left -= 1;
            self.stats.switch_restarts += 1;
            self.switch = tofino::Switch::new(self.switch_config);
            self.trace
                .note(self.now, "the switch restarts, empty".into());
            self.next_switch_restart_at =
                self.now + self.rng.u64(0..=self.config.migration_gap_ns * 2);
        }
        if self.crashes_left > 0 && self.now >= self.next_crash_at {
            self.crash_server();
        }
        if self.cuts_left > 0 && self.now >= self.next_cut_at {
            self.cuts_left -= 1;
            self.stats.cuts += 1;
            let host = if self.rng.bool() {
                self.servers[self.rng.usize(..self.servers.len())].ip
            } else {
                *self.clients[self.rng.usize(..self.clients.len())]
                    .port
                    .addr
                    .ip()
            };
            let until = self.now + self.rng.u64(1_000_000..=self.config.cut_max_ns);
            self.network.cut_off(host, until);
            self.trace.note(
                self.now,
                format!("{host} cut off for {} µs", (until - self.now) / 1000),
            );
            self.next_cut_at = self.now + self.rng.u64(0..=self.config.cut_gap_ns);
        }
    }

    /// A server crashes: it is down for a while and comes back empty, a new incarnation
    /// with no shards. The shards it owned, and those migrating to or from it, are damaged.
    fn crash_server(&mut self) {
        if self.replicated() {
            return self.crash_replica();
        }
        self.crashes_left -= 1;
        self.stats.crashes += 1;
        let s = self.rng.usize(..self.servers.len());
        self.stats.data_lost_replies += self.servers[s].data_lost_replies();
        let incarnation = self.rng.u64(1..);
        let server = &mut self.servers[s];
        for log in &mut server.logs {
            // A snapshot the crash cut short: the disk keeps what came before it.
            log.snapshot_from = None;
            log.snapshot_begun = false;
        }
        server.partitions = (0..self.config.partitions)
            .map(|p| match self.config.durable_logs {
                true => {
                    let log = &server.logs[p as usize].bytes;
                    PartitionServer::recover(&self.map, p, 64, log).0
                }
                false => PartitionServer::new(&self.map, p, &[], 64),
            })
            .collect();
        server.set_incarnation(incarnation);
        self.crashed.push(server.ip);
        for shard in 0..self.owner.len() {
            let migrating = self.active[shard]
                .as_ref()
                .is_some_and(|m| m.from == s || m.to == s);
            // With a log the owner comes back with the shard; a migration is not resumed.
            let lost_owner = self.owner[shard] == s && !self.config.durable_logs;
            if lost_owner || migrating {
                self.damaged[shard] = true;
            }
        }
        // Clients of a damaged shard go on for a few more operations (refusals, and reads
        // that must not see lost writes), then stop: every write answered with a refusal
        // has an open outcome, and too many on a key outgrow the checker's search.
        let floor = self.config.ops_per_client.saturating_sub(AFTER_DAMAGE_OPS);
        for client in &mut self.clients {
            if self.damaged[client.shard as usize - 1] {
                client.started = client.started.max(floor);
            }
        }
        let until = self.down_for_a_while(s);
        self.trace.note(
            self.now,
            format!(
                "server {s} crashes; back {} in {} µs",
                if self.config.durable_logs {
                    "from its log"
                } else {
                    "empty"
                },
                (until - self.now) / 1000
            ),
        );
        self.next_crash_at = self.now + self.rng.u64(0..=self.config.migration_gap_ns * 3);
    }

    /// A crashed server is unreachable for 1 ms to `cut_max_ns`; returns until when.
    fn down_for_a_while(&mut self, s: usize) -> Nanos {
        let until = self.now + self.rng.u64(1_000_000..=self.config.cut_max_ns);
        self.network.cut_off(self.servers[s].ip, until);
        until
    }

    /// A replica crashes: the coordinator takes it out of its chain at once (a real one
    /// when its lease ends), and it restarts empty after a while, to rejoin as a learner.
    /// Only a chain of two or more loses a member, so every chain keeps a replica.
    fn crash_replica(&mut self) {
        self.crashes_left -= 1;
        // The head of a migration's source chain is spared, and for a while after the
        // migration ended (until its last role change is surely committed): a successor
        // does not take over a migration out yet (docs/replication.md). A destination's
        // head is not: its successor settles the migration with the source.
        let now = self.now;
        let migrating = |c: usize| {
            let mut active = self.active.iter().flatten();
            active.any(|m| m.from == c) || self.chains[c].migrated_until > now
        };
        let candidates: Vec<usize> = (0..self.servers.len())
            .filter(|&s| {
                self.chains.iter().enumerate().any(|(i, c)| {
                    let spared = migrating(i) && *c.membership.head() == s;
                    c.membership.can_lose(&s) && !spared
                })
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let coming_in: Vec<usize> = self
            .active
            .iter()
            .flatten()
            .map(|m| self.head(m.to))
            .filter(|s| candidates.contains(s))
            .collect();
        self.stats.crashes += 1;
        let s = if self.config.crash_destination_heads && !coming_in.is_empty() {
            coming_in[self.rng.usize(..coming_in.len())]
        } else {
            candidates[self.rng.usize(..candidates.len())]
        };
        self.stats.takeover_crashes += u64::from(coming_in.contains(&s));
        let chain = self
            .chains
            .iter()
            .position(|c| c.membership.can_lose(&s))
            .expect("a candidate is in a chain");
        let place = self.chains[chain]
            .membership
            .fail(&s)
            .expect("it can be lost");
        self.stats.head_crashes += u64::from(place == Place::Head);
        self.stats.data_lost_replies += self.servers[s].data_lost_replies();
        let incarnation = self.rng.u64(1..);
        let server = &mut self.servers[s];
        // It comes back empty, serving nothing until its chain names it (as `server --etcd`
        // does): a learner's state is copied from its chain.
        let addrs: Vec<SocketAddrV4> = (0..self.config.partitions as usize)
            .map(|p| server.addr(p))
            .collect();
        server.partitions = addrs
            .iter()
            .enumerate()
            .map(|(p, &addr)| {
                let mut partition = PartitionServer::new(&self.map, p as u32, &[], 64);
                if self.config.durable_logs {
                    partition.enable_journal();
                }
                partition.await_chain(addr, 64);
                partition
            })
            .collect();
        server.logs = (0..self.config.partitions)
            .map(|_| DiskLog::default())
            .collect();
        server.set_incarnation(incarnation);
        self.chains[chain].membership.join(s);
        self.configure_chain(chain, false);
        let until = self.down_for_a_while(s);
        self.trace.note(
            self.now,
            format!(
                "replica {s} ({place:?} of chain {chain}) crashes; rejoins in {} µs",
                (until - self.now) / 1000
            ),
        );
        self.next_crash_at = self.now + self.rng.u64(0..=self.config.migration_gap_ns * 3);
    }

    /// The coordinator's work on each chain: a waiting replica becomes the learner, and a
    /// learner that holds everything the tail holds (in every partition) becomes the tail.
    /// (The tail asks the head for the snapshot its learner starts from.)
    fn coordinate_chains(&mut self) {
        for chain in 0..self.chains.len() {
            if self.chains[chain].membership.admit_learner() {
                self.configure_chain(chain, false);
                let learner = self.chains[chain].membership.learner;
                self.trace.note(
                    self.now,
                    format!("replica {learner:?} joins chain {chain} as learner"),
                );
            }
            let c = &self.chains[chain].membership;
            let Some(learner) = c.learner else {
                continue;
            };
            let (tail, epoch) = (*c.tail(), c.epoch);
            // The tail's report counts only for the current configuration, as a server's
            // agent reports it (`membership::agent`).
            let caught_up = self.servers[tail].partitions.iter().all(|p| {
                p.chain_replica().is_some_and(|r| {
                    r.config().is_some_and(|c| c.epoch == epoch) && r.learner_caught_up()
                })
            });
            if caught_up && self.chains[chain].membership.promote_learner(epoch) {
                self.stats.rejoined += 1;
                self.configure_chain(chain, false);
                self.trace.note(
                    self.now,
                    format!("replica {learner} is chain {chain}'s tail"),
                );
            }
        }
    }

    /// Whether a configuration of `chain` is still on its way to one of its replicas.
    fn reconfiguring(&self, chain: usize) -> bool {
        let replicas = self.config.replicas.max(1);
        let of_chain = chain * replicas..(chain + 1) * replicas;
        self.configs_on_the_way
            .iter()
            .any(|c| of_chain.contains(&c.server))
    }

    /// Starts a migration of an idle, loaded shard to another server, if there is one.
    fn start_migration(&mut self) {
        let idle: Vec<u16> = (1..=self.config.shards)
            .filter(|&s| {
                let slot = s as usize - 1;
                self.active[slot].is_none() && self.shard_loaded(s) && !self.damaged[slot]
            })
            .collect();
        if self.damaged.iter().all(|&d| d) {
            self.migrations_left = 0; // Nothing left that may move.
        }
        if idle.is_empty() {
            return;
        }
        let shard = idle[self.rng.usize(..idle.len())];
        let from = self.owner[shard as usize - 1];
        let mut to = self.rng.usize(..self.chains.len() - 1);
        if to >= from {
            to += 1;
        }
        if self.reconfiguring(from) || self.reconfiguring(to) {
            // Its head may not know it is the head yet: the migration waits for its turn.
            return;
        }
        self.migrations_left -= 1;
        // Between chains, the heads migrate (their followers replicate what they do).
        let (from_head, to_head) = (self.head(from), self.head(to));
        let protocol = self.protocol_of(shard);
        let ticket = Arc::new(MigrationTicket::new(
            self.next_stream_id,
            self.config.partitions,
        ));
        self.next_stream_id += 1;
        for p in 0..self.config.partitions as usize {
            let plan = OutgoingPlan {
                shard,
                destination: self.servers[to_head].addr(p),
                destination_shard: shard,
                switch: SWITCH,
                source: self.servers[from_head].addr(p),
                items_per_s: Some(self.config.migration_items_per_s),
                pipeline: 4,
                protocol,
                ticket: Arc::clone(&ticket),
            };
            let partition = &mut self.servers[from_head].partitions[p];
            partition.set_time(self.epoch + Duration::from_nanos(self.now));
            if let Err(e) = partition.start_outgoing(plan) {
                self.trace
                    .note(self.now, format!("shard {shard}: start refused: {e}"));
            }
        }
        let abort_at = (self.rng.f64() < self.config.abort_chance)
            .then(|| self.now + self.rng.u64(0..=self.config.migration_gap_ns));
        self.trace.note(
            self.now,
            format!(
                "{protocol:?} migration of shard {shard}: server {from} → {to}{}",
                if abort_at.is_some() {
                    ", to be aborted"
                } else {
                    ""
                }
            ),
        );
        self.active[shard as usize - 1] = Some(Migration {
            shard,
            from,
            to,
            protocol,
            ticket,
            abort_at,
        });
    }

    /// Migrations whose every partition ended (moved, or back at the source after an abort,
    /// and the destination done sending back) are retired, and the owner updated.
    fn end_migrations(&mut self) {
        for slot in 0..self.active.len() {
            let Some(m) = &self.active[slot] else {
                continue;
            };
            let roles = |chain: usize| {
                self.servers[self.head(chain)]
                    .partitions
                    .iter()
                    .map(move |p| (p.role(m.shard), p.migration_counters()))
            };
            // A crashed end holds nothing of the shard any more (role None).
            let source_done =
                roles(m.from).all(|(role, _)| !matches!(role, Some(Role::Outgoing(_))));
            let destination_done = roles(m.to).all(|(role, counters)| {
                !matches!(role, Some(Role::Incoming(_))) && counters.returning_active == 0
            });
            if !(source_done && destination_done) {
                continue;
            }
            let moved = roles(m.from).all(|(role, _)| matches!(role, Some(Role::Moved { .. })));
            let (shard, to) = (m.shard, m.to);
            self.chains[m.from].migrated_until = self.now + MIGRATION_SETTLES_NS;
            if moved {
                let from = m.from;
                self.owner[slot] = to;
                self.stats.migrations_finished += 1;
                if self.replicated() {
                    self.follow_moved_shard(shard, from);
                }
            } else {
                self.stats.migrations_aborted += 1;
            }
            self.trace.note(
                self.now,
                format!(
                    "shard {shard}: migration {}",
                    if moved { "finished" } else { "called off" }
                ),
            );
            self.active[slot] = None;
        }
    }

    /// Ends every client and returns the whole history, keys made unique across shards.
    pub fn history(&mut self) -> Vec<HistoryOp> {
        let finished = self.instant();
        let mut history = Vec::new();
        let clients = std::mem::take(&mut self.clients);
        for client in clients {
            let shard = u64::from(client.shard);
            let mut results = client.histories;
            results.push(client.engine.finish(finished));
            for result in results {
                self.stats.failed += result.counters.failed;
                self.stats.ops += result.counters.completed;
                history.extend(result.history.into_iter().map(|mut op| {
                    op.key |= shard << 48;
                    op
                }));
            }
        }
        self.stats.virtual_ms = self.now as f64 / 1e6;
        self.stats.damaged_shards = self.damaged.iter().filter(|&&d| d).count() as u64;
        self.stats.log_compactions += self
            .servers
            .iter()
            .flat_map(|s| &s.logs)
            .map(|log| log.compactions)
            .sum::<u64>();
        self.stats.lost = self.network.lost;
        self.stats.data_lost_replies += self
            .servers
            .iter()
            .map(Server::data_lost_replies)
            .sum::<u64>();
        self.stats.duplicated = self.network.duplicated;
        history
    }

    /// The end state: each shard's keys only at its owner, with no tombstone left (which
    /// keys live is the read-back's to show, in the history); nothing waits for a pull;
    /// the switch holds no pair; no partition is still migrating.
    pub fn check_end_state(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (s, server) in self.servers.iter().enumerate() {
            let parked: usize = server.partitions.iter().map(|p| p.parked_reads()).sum();
            if parked > 0 {
                problems.push(format!("server {s} still holds {parked} parked read(s)"));
            }
        }
        for shard in 1..=self.config.shards {
            let chain = &self.chains[self.owner[shard as usize - 1]].membership;
            // Every replica of the owning chain holds the shard; without replication the
            // chain is the owner alone.
            let owner = chain.members[0];
            let holds = |s: usize| chain.members.contains(&s);
            if self.damaged[shard as usize - 1] {
                problems.extend(self.check_damaged(shard));
                continue;
            }
            let entries_at = |s: usize| -> Vec<usize> {
                let partitions = self.servers[s].partitions.iter();
                partitions
                    .map(|p| p.table(shard).map_or(0, |t| t.len()))
                    .collect()
            };
            for &s in &chain.members[1..] {
                let (head, replica) = (entries_at(owner), entries_at(s));
                if head != replica {
                    problems.push(format!(
                        "shard {shard}: replica {s} holds {replica:?} keys per partition, its \
                         head (server {owner}) {head:?}"
                    ));
                }
            }
            for (s, server) in self.servers.iter().enumerate() {
                let tables = || server.partitions.iter().filter_map(|p| p.table(shard));
                let live: usize = tables().map(|t| t.len()).sum();
                let tombstones: usize = tables().map(|t| t.tombstones()).sum();
                let owner = if holds(s) { s } else { owner };
                if s != owner && live + tombstones > 0 {
                    problems.push(format!(
                        "shard {shard}: server {s} holds {live} keys and {tombstones} \
                         tombstones, not being its owner (server {owner})"
                    ));
                }
                if s == owner && (live as u64 > self.config.records || tombstones > 0) {
                    problems.push(format!(
                        "shard {shard}: its owner (server {s}) holds {live} keys of {} and \
                         {tombstones} tombstones",
                        self.config.records
                    ));
                }
                for (p, partition) in server.partitions.iter().enumerate() {
                    let role = partition.role(shard);
                    let fine = match role {
                        None => s != owner,
                        Some(Role::Owned) => true,
                        Some(Role::Moved { .. }) => s != owner,
                        Some(Role::Returning(_)) => s != owner,
                        _ => false,
                    };
                    if !fine {
                        problems.push(format!(
                            "shard {shard}: server {s} partition {p} ends in role {}",
                            role_name(role)
                        ));
                    }
                }
            }
        }
        // A NetMigrate source that crashed cannot tell the switch to forget its pair (see
        // docs/simulation.md); every other pair must be gone.
        let crashed_source = |ip: Ipv4Addr| self.crashed.contains(&ip);
        let pairs = self
            .switch
            .pairs()
            .filter(|pair| !crashed_source(pair.source_ip))
            .count();
        if pairs > 0 {
            problems.push(format!("the switch still holds {pairs} pair(s)"));
        }
        problems
    }
}

impl World {
    /// A shard a crash touched: nothing of it is still migrating anywhere.
    fn check_damaged(&self, shard: u16) -> Vec<String> {
        let mut problems = Vec::new();
        for (s, server) in self.servers.iter().enumerate() {
            for (p, partition) in server.partitions.iter().enumerate() {
                let role = partition.role(shard);
                if matches!(role, Some(Role::Incoming(_)) | Some(Role::Outgoing(_))) {
                    problems.push(format!(
                        "shard {shard} (damaged by a crash): server {s} partition {p} ends in \
                         role {}",
                        role_name(role)
                    ));
                }
            }
        }
        problems
    }
}

fn role_name(role: Option<&Role>) -> &'static str {
    match role {
        None => "none",
        Some(Role::Owned) => "owned",
        Some(Role::Moved { .. }) => "moved",
        Some(Role::Incoming(_)) => "incoming",
        Some(Role::Outgoing(_)) => "outgoing",
        Some(Role::Returning(_)) => "returning",
        Some(Role::Damaged(_)) => "damaged",
    }
}
