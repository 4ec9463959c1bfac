//! Command-line arguments.

use crate::server::transport::Transport;
use clap::{Args, Parser, Subcommand};
use dataplane::wire::udp::UdpChecksum;
use std::net::SocketAddrV4;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "netmigrate",
    version,
    about = "An in-memory key-value store whose shards migrate live between servers",
    long_about = "An in-memory key-value store whose shards migrate live between servers \
(NetMigrate, FAST'24), with a YCSB client that checks every run for linearizability.\n\n\
Start with `netmigrate ycsb --embedded`: server and client in one process."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a key-value server: one partition per core, partition p on UDP port base+p.
    Server(ServerArgs),
    /// Run the software switch: it forwards every datagram between hosts and steers the
    /// requests of a migrating shard to the source, both, or the destination by its
    /// Bloom-filter registers. Hosts reach it with `--via` (kernel-UDP overlay).
    Switch(SwitchArgs),
    /// Drive a server's control API (gRPC): start a migration, show its status, watch it
    /// until it ends, read counters.
    Migrate(MigrateArgs),
    /// Load records and run a YCSB workload against a server (or an embedded one).
    Ycsb(Box<YcsbArgs>),
    /// Migrate a shard live while a YCSB workload runs: client, software switch, source and
    /// destination in one process; reports before / during / after, the migration and its
    /// overhead, and checks linearizability with --check.
    Experiment(Box<ExperimentArgs>),
    /// Run no migration, Rocksteady, Fulva, source-based and NetMigrate (short, medium,
    /// long) one after the other on the same dataset and workload; print a table, write
    /// the `netmigrate.compare/1` JSON with --json and one figure with --plot.
    Compare(Box<CompareArgs>),
    /// Measure the round trip of one cache line between two cores. Cross-process benchmarks
    /// (memif, loopback) pay it for every exchange; on a VM it shows where the host placed
    /// the vCPUs. `scripts/bench-dpdk.sh` prints it beside each run.
    CoreLatency(CoreLatencyArgs),
    /// Simulate the whole system on one thread in virtual time, from seeds: servers, the
    /// switch, YCSB clients, a network that loses, duplicates, reorders and partitions,
    /// migrations back and forth, chained and aborted; each run checked for linearizability
    /// and its end state. A failing seed prints its last events and replays exactly.
    Simulate(SimulateArgs),
    /// Keep a chain of servers (`server --etcd`) configured by chain replication's rules,
    /// from etcd: form it once enough servers registered, take out a server whose lease
    /// ended (head: its successor heads; tail: its predecessor is the tail; middle:
    /// spliced), let a restarted one copy the state as a learner and join as the tail.
    /// Stateless beyond etcd: restart it any time.
    Coordinator(CoordinatorArgs),
    /// Check a history file (JSON lines, as `--history` writes them, or from any client in
    /// that vocabulary) for linearizability, key by key; exits 1 if a key's history is not
    /// linearizable or cannot be decided.
    CheckHistory(CheckHistoryArgs),
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Runs this many seeds, from --seed on.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// The first seed (with --seeds 1: replay exactly this one).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Protocols the shards migrate with, one per shard in turn (repeatable; default all
    /// four).
    #[arg(long, value_enum)]
    pub protocol: Vec<Protocol>,
    /// Probability that a hop loses a datagram.
    #[arg(long, default_value_t = 0.02)]
    pub loss: f64,
    /// Probability that a hop delivers a datagram twice.
    #[arg(long, default_value_t = 0.02)]
    pub duplicate: f64,
    /// Random extra delay per hop, in microseconds, on top of 5 µs: datagrams overtake
    /// each other (reordering).
    #[arg(long, default_value_t = 40)]
    pub jitter_us: u64,
    /// Hosts cut off from the switch per run (network partitions), each for 1–20 ms.
    #[arg(long, default_value_t = 2)]
    pub cuts: usize,
    /// Switch restarts per run: the switch comes back with empty registers and no pairs.
    #[arg(long, default_value_t = 1)]
    pub switch_restarts: usize,
    /// Keys per request of every client but each shard's first: multi-key GETs and PUTs of
    /// this many records (1: single-key only).
    #[arg(long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16))]
    pub keys_per_request: usize,
    /// Cells of the switch's counting filters and done filters: small ones make false
    /// positives (requests steered to a destination for groups it does not have) common.
    #[arg(long)]
    pub cbf_cells: Option<usize>,
    #[arg(long)]
    pub bf_cells: Option<usize>,
    /// Server crashes per run: the server is down for 1–20 ms and comes back with a new
    /// incarnation and what its durable log holds: every write it acknowledged, and where
    /// the shards it handed over went. A migration the crash cut short is not resumed: what
    /// only one end held must be refused (DATA_LOST or ERROR), never read stale.
    #[arg(long, default_value_t = 1)]
    pub crashes: usize,
    /// Servers keep no durable log: a crashed server comes back empty, and the shards it
    /// owned are lost (refused) from then on.
    #[arg(long)]
    pub no_logs: bool,
    /// Replicas per server: each server is a chain of this many processes (CRAQ; writes at
    /// the head, clean reads anywhere), and migrations run between chains' heads. A crash
    /// takes one replica out of its chain, which rejoins as a learner and becomes the tail
    /// once it has caught up. A destination's head that crashes mid-migration is replaced by
    /// its successor, which settles the migration with the source (rolled back, or ended
    /// past the cut-over); the head of a migration's source chain is not crashed (a
    /// successor does not take over a migration out yet).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
    /// With --replicas: every crash takes the head of a chain a migration is coming into,
    /// when there is one (otherwise a replica at random).
    #[arg(long, requires = "replicas")]
    pub crash_destination_heads: bool,
    /// Migrations per run (several shards at once; back to an earlier owner, or on to a
    /// third server).
    #[arg(long, default_value_t = 4)]
    pub migrations: usize,
    /// Chance that a migration is called off at a random point.
    #[arg(long, default_value_t = 0.25)]
    pub abort_chance: f64,
    /// Servers (at least 3, so that migrations can chain).
    #[arg(long, default_value_t = 3)]
    pub servers: usize,
    /// Partitions (cores) per server.
    #[arg(long, default_value_t = 2)]
    pub partitions: u32,
    /// Shards; shard k starts on server k − 1 (mod servers).
    #[arg(long, default_value_t = 3)]
    pub shards: u16,
    /// Records per shard.
    #[arg(long, default_value_t = 200)]
    pub records: u64,
    /// Operations each client starts at least (2 clients per shard, YCSB-A with 10 %
    /// deletes).
    #[arg(long, default_value_t = 300)]
    pub ops: u64,
    /// A run that has not ended after this much virtual time fails (a migration or an
    /// operation that never ends).
    #[arg(long, default_value_t = 10_000)]
    pub time_limit_ms: u64,
    /// Events a failing run prints (the last ones).
    #[arg(long, default_value_t = 400)]
    pub trace_events: usize,
    /// Print the last events of every run, not only of failing ones.
    #[arg(long)]
    pub trace: bool,
}

#[derive(Args, Debug)]
pub struct CheckHistoryArgs {
    /// The history: one JSON event per line (docs/report.md, "The history").
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

#[derive(Args, Debug)]
pub struct CoreLatencyArgs {
    /// The two cores, e.g. `0,1`. Both must be idle: a busy-polling loop on either
    /// distorts the figure.
    #[arg(long, default_value = "0,1")]
    pub cores: String,
    /// Round trips to time, in five batches.
    #[arg(long, default_value_t = 300_000)]
    pub rounds: u64,
}

/// Migration protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Switch-assisted (FAST'24): Bloom-filter registers steer each request.
    Netmigrate,
    /// Ownership transfer plus on-demand pulls (SOSP'17).
    Rocksteady,
    /// Client-tracked migration progress.
    Fulva,
    /// Source-based push with a final stop-and-copy.
    Source,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Netmigrate => "netmigrate",
            Protocol::Rocksteady => "rocksteady",
            Protocol::Fulva => "fulva",
            Protocol::Source => "source",
        }
    }

    pub fn wire(self) -> migration::Protocol {
        match self {
            Protocol::Netmigrate => migration::Protocol::NetMigrate,
            Protocol::Rocksteady => migration::Protocol::Rocksteady,
            Protocol::Fulva => migration::Protocol::Fulva,
            Protocol::Source => migration::Protocol::SourceBased,
        }
    }
}

/// `--udp-checksum`: how DPDK frames get their UDP checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UdpChecksumArg {
    /// Omitted on memif (shared memory, no wire to corrupt a frame: 0, which RFC 768 allows,
    /// as the kernel skips it on loopback), offloaded to a device that can compute it (a NIC;
    /// tap), computed in software otherwise (af_packet, af_xdp).
    Auto,
    /// Always computed in software.
    Compute,
    /// Always left to the NIC (fails on a device without UDP checksum offload).
    Offload,
    /// Always 0 (no checksum).
    Omit,
}

impl UdpChecksumArg {
    /// The way asked for; None leaves it to each device.
    pub fn choice(self) -> Option<UdpChecksum> {
        match self {
            UdpChecksumArg::Auto => None,
            UdpChecksumArg::Compute => Some(UdpChecksum::Computed),
            UdpChecksumArg::Offload => Some(UdpChecksum::Offloaded),
            UdpChecksumArg::Omit => Some(UdpChecksum::Omitted),
        }
    }
}

/// The paper's migration presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PresetArg {
    /// Half of each source core migrates.
    Short,
    /// A quarter of each source core migrates.
    Medium,
    /// A tenth of each source core migrates.
    Long,
}

impl PresetArg {
    pub fn preset(self) -> migration::Preset {
        match self {
            PresetArg::Short => migration::Preset::Short,
            PresetArg::Medium => migration::Preset::Medium,
            PresetArg::Long => migration::Preset::Long,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ExperimentArgs {
    /// Migration protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Netmigrate)]
    pub protocol: Protocol,
    /// Share of each source core given to migration (with --capacity) or a fixed rate.
    #[arg(long, value_enum, default_value_t = PresetArg::Medium)]
    pub preset: PresetArg,
    /// Draw throughput and p50/p99 latency over time, with the migration marked, as a PNG.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub run: MigrationRunArgs,
    #[command(flatten)]
    pub ycsb: YcsbArgs,
}

/// How a migration experiment runs (shared by `experiment` and `compare`).
#[derive(Args, Debug, Clone)]
pub struct MigrationRunArgs {
    /// Seconds into the run at which the migration starts.
    #[arg(long, default_value_t = 5.0)]
    pub migrate_at: f64,
    /// Seconds the run goes on after the migration finished (it runs at least --duration).
    #[arg(long, default_value_t = 2.0)]
    pub tail: f64,
    /// Migrate this many items per second per source core instead of the preset's share.
    #[arg(long, value_name = "ITEMS_PER_S")]
    pub migration_rate: Option<f64>,
    /// Work units per second each server core can do (one request served or one item
    /// migrated each), shared by serving and migrating like the paper's CPU budgets; 0
    /// turns the cap off (a testbed with real cores per server). The default keeps the
    /// servers, not this 2-core host, the bottleneck.
    #[arg(long, default_value_t = 150_000.0)]
    pub capacity: f64,
    /// Groups each source core hands over at once (Rocksteady: bulk pulls each destination
    /// core keeps in flight, over as many runs of groups).
    #[arg(long, default_value_t = crate::server::control::DEFAULT_PIPELINE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub pipeline: usize,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Give up if the migration has not finished after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    pub max_migration_s: f64,
    /// Call the migration off this many seconds after it started: the destination sends
    /// back what it holds and the source serves the whole shard again (refused, and the
    /// migration finishes, if the cut-over has begun by then).
    #[arg(long, value_name = "SECONDS")]
    pub abort_after: Option<f64>,
    /// Run the same topology without migrating (compare's `none` run).
    #[arg(skip)]
    pub no_migration: bool,
}

/// `netmigrate compare`: every protocol, one after the other, on the same data and load.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// Preset (share of each source core given to migration) for the three baselines;
    /// NetMigrate runs all three presets.
    #[arg(long, value_enum, default_value_t = PresetArg::Medium)]
    pub baseline_preset: PresetArg,
    /// Draw one PNG with a throughput panel per protocol (the paper's figure 4).
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub run: MigrationRunArgs,
    #[command(flatten)]
    pub ycsb: YcsbArgs,
}

/// How loops wait when they find no work.
#[derive(Args, Debug, Clone, Copy)]
pub struct IdleArgs {
    /// Poll without ever yielding or sleeping when idle, as DPDK lcores do: for loops with
    /// cores of their own (a testbed, `scripts/bench-dpdk.sh`). In `ycsb`, for the client
    /// threads and an embedded server's partitions; `experiment` and `compare` refuse it.
    /// The default spins, then yields, then naps, so that loops can share cores.
    #[arg(long)]
    pub busy_poll: bool,
}

impl IdleArgs {
    pub fn idle(self) -> dataplane::runner::Idle {
        if self.busy_poll {
            dataplane::runner::Idle::BusyPoll
        } else {
            dataplane::runner::Idle::Share
        }
    }
}

/// Where the chain's membership lives (a build with the `etcd` feature).
#[derive(Args, Debug, Clone)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated (e.g. http://127.0.0.1:2379): the chain's membership
    /// lives there (docs/replication.md).
    #[arg(long, value_delimiter = ',', value_name = "URL,...")]
    pub etcd: Vec<String>,
    /// The chain's name in etcd (one etcd can hold several chains).
    #[arg(long, default_value = "main", value_name = "NAME")]
    pub chain_name: String,
}

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Replicas the chain starts with: it forms once this many servers registered.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Stop by itself after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    pub duration: Option<f64>,
}

/// How a server lays out its data; client and server must agree.
#[derive(Args, Debug, Clone)]
pub struct LayoutArgs {
    /// Partitions (serving cores) of the server; partition p listens on base port + p.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub partitions: u32,
    /// Migration groups are 2^BITS runs of the key-hash space (the switch's size_exp is 32,
    /// remain_exp is 32 − BITS).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=24))]
    pub group_bits: u8,
    /// Shard id requests carry.
    #[arg(long, default_value_t = 0)]
    pub shard: u16,
}

/// The software switch's filter sizes.
#[derive(Args, Debug, Clone)]
pub struct FilterArgs {
    /// Switch Bloom-filter cells per array (power of two; default 2^(group bits + 1)).
    #[arg(long)]
    pub bf_cells: Option<usize>,
    /// Switch counting-Bloom-filter cells per array (power of two; default 4096).
    #[arg(long)]
    pub cbf_cells: Option<usize>,
}

impl FilterArgs {
    /// The switch at `address` for shards of 2^`group_bits` groups, with these filters.
    pub fn switch_config(
        &self,
        address: SocketAddrV4,
        group_bits: u8,
    ) -> Result<tofino::SwitchConfig, String> {
        let mut config = tofino::SwitchConfig::new(address, group_bits);
        config.bf_cells = self.bf_cells.unwrap_or(config.bf_cells);
        config.cbf_cells = self.cbf_cells.unwrap_or(config.cbf_cells);
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args, Debug)]
pub struct SwitchArgs {
    /// Packet I/O backend (kernel UDP: hosts send through it with `--via`).
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    pub transport: Transport,
    /// The switch's address: hosts' `--via`, and where migration control messages go.
    #[arg(long, default_value = "127.0.0.254:9000")]
    pub listen: SocketAddrV4,
    /// Group bits of the shards it will see, to size the Bloom filters (8 bits per group).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=24))]
    pub group_bits: u8,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Stop by itself after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Serve the control API (gRPC: counters, pairs, registers) on this TCP address, e.g.
    /// 127.0.0.1:50050.
    #[arg(long, value_name = "ADDR")]
    pub control: Option<std::net::SocketAddr>,
    /// EAL arguments for `--transport dpdk`: one device per link to a host, e.g.
    /// `-l 0 --no-pci --no-huge -m 512 --vdev=net_memif0,role=server,socket=/tmp/client.sock
    /// --vdev=net_memif1,role=server,socket=/tmp/source.sock …`. The switch learns which
    /// host is behind which device from the traffic (and floods until it knows).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub eal: Option<String>,
    /// With `--transport dpdk`: how frames get their UDP checksum.
    #[arg(long, value_enum, default_value_t = UdpChecksumArg::Auto)]
    pub udp_checksum: UdpChecksumArg,
    #[command(flatten)]
    pub idle: IdleArgs,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub action: MigrateAction,
}

#[derive(Subcommand, Debug)]
pub enum MigrateAction {
    /// Start migrating a shard of the server to a destination server.
    Start(MigrateStartArgs),
    /// Call off a shard's migration out of the server: the destination sends back what it
    /// holds and the server serves the whole shard again. Refused once the cut-over began.
    Abort(MigrateAbortArgs),
    /// Print the migrations the server takes part in, once.
    Status(ControlTarget),
    /// Print progress every --interval-ms until no migration is active.
    Watch(MigrateWatchArgs),
    /// Print the server's serving and migration counters per partition (JSON).
    Counters(ControlTarget),
    /// Print the software switch's counters, pairs and filter occupancy (JSON).
    Switch(SwitchTarget),
}

#[derive(Args, Debug, Clone)]
pub struct SwitchTarget {
    /// The switch's control address (its `--control`).
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub control: std::net::SocketAddr,
}

#[derive(Args, Debug, Clone)]
pub struct ControlTarget {
    /// The server's control address (its `--control`).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub server: std::net::SocketAddr,
}

#[derive(Args, Debug)]
pub struct MigrateAbortArgs {
    #[command(flatten)]
    pub target: ControlTarget,
    /// The shard whose migration out of the server is called off.
    #[arg(long, default_value_t = 0)]
    pub shard: u16,
    /// Print progress until the shard is back.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Args, Debug)]
pub struct MigrateWatchArgs {
    #[command(flatten)]
    pub target: ControlTarget,
    /// Milliseconds between updates.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u32,
}

#[derive(Args, Debug)]
pub struct MigrateStartArgs {
    #[command(flatten)]
    pub target: ControlTarget,
    /// The destination server's partition-0 data address (its `--listen`).
    #[arg(long)]
    pub destination: SocketAddrV4,
    /// The software switch's address (NetMigrate only; its `--listen`).
    #[arg(long)]
    pub switch: Option<SocketAddrV4>,
    #[arg(long, value_enum, default_value_t = Protocol::Netmigrate)]
    pub protocol: Protocol,
    /// Share of each source core given to migration (of the server's --work-capacity).
    #[arg(long, value_enum, default_value_t = PresetArg::Medium)]
    pub preset: PresetArg,
    /// Migrate this many items per second per source core instead of the preset's share.
    #[arg(long, value_name = "ITEMS_PER_S")]
    pub rate: Option<f64>,
    /// The shard to migrate.
    #[arg(long, default_value_t = 0)]
    pub shard: u16,
    /// Its id on the destination (default: the same).
    #[arg(long)]
    pub destination_shard: Option<u16>,
    /// Groups each source core hands over at once.
    #[arg(long, default_value_t = crate::server::control::DEFAULT_PIPELINE as u32, value_parser = clap::builder::RangedU64ValueParser::<u32>::new().range(1..=1024))]
    pub pipeline: u32,
    /// Then watch it until it ends.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Packet I/O backend. `memory` exists only inside one process (`ycsb --embedded`).
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    pub transport: Transport,
    /// Address of partition 0.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub listen: SocketAddrV4,
    /// Send and receive everything through the software switch at this address
    /// (`netmigrate switch`; kernel UDP only).
    #[arg(long, value_name = "SWITCH")]
    pub via: Option<SocketAddrV4>,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Cores to pin partition loops to, e.g. `0-3` (default: not pinned).
    #[arg(long)]
    pub cores: Option<String>,
    /// Entries each partition's table is sized for before it has to grow.
    #[arg(long, default_value_t = 1 << 20)]
    pub capacity: usize,
    /// Keep a durable log here (`partition-P/segment-N.log`): every write is appended
    /// before it is acknowledged, and a server started again on the same directory serves
    /// what it acknowledged (its shards come from the log, not from --shard).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// When the log reaches the disk: `batch` syncs once per loop turn before its replies
    /// go (group commit), `always` once per write, `never` leaves it to the kernel
    /// (survives a crash of the process, not of the machine).
    #[arg(long, value_enum, default_value_t = crate::server::log::Fsync::Batch)]
    pub fsync: crate::server::log::Fsync,
    /// Replicate every partition on a chain of servers (CRAQ, docs/replication.md): every
    /// replica's --listen address, head first and comma-separated, this server's among them;
    /// each replica is started with the same list. Clients write to the head and may read
    /// from any replica. The chain is fixed: a replica that stops is not replaced (with
    /// --etcd, `netmigrate coordinator` keeps a chain that replaces it). Migrations of
    /// replicated servers run in the simulator only.
    #[arg(long, value_delimiter = ',', value_name = "ADDR,ADDR,...")]
    pub chain: Vec<SocketAddrV4>,
    // --etcd: a replica of the chain whose membership etcd holds (`netmigrate coordinator`
    // keeps it): the server registers with a lease, serves nothing until a membership names
    // it, and follows every new one.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Seconds the server's etcd lease lasts without renewal: how soon the coordinator
    /// takes a stopped server out of its chain.
    #[arg(long, default_value_t = 2)]
    pub lease_ttl: u64,
    /// Stop by itself after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Serve the control API (gRPC, `netmigrate migrate`) on this TCP address, e.g.
    /// 127.0.0.1:50051.
    #[arg(long, value_name = "ADDR")]
    pub control: Option<std::net::SocketAddr>,
    /// Work units per second each partition can do (a request served or an item migrated
    /// each), shared by serving and migrating like the paper's CPU budgets; a migration's
    /// preset takes its share of it. Default: uncapped (real cores per server).
    #[arg(long, value_name = "OPS_PER_S")]
    pub work_capacity: Option<f64>,
    /// EAL arguments for `--transport dpdk`, e.g.
    /// `-l 0-1 --no-pci --in-memory --vdev=net_memif0,role=server,socket=/tmp/nm.sock`.
    /// Partition p serves on DPDK device p, at the --listen address; or, with a single device
    /// (a NIC port), on its queue p, steered to by a flow rule on the partition's UDP port.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub eal: Option<String>,
    /// With `--transport dpdk`: how frames get their UDP checksum.
    #[arg(long, value_enum, default_value_t = UdpChecksumArg::Auto)]
    pub udp_checksum: UdpChecksumArg,
    #[command(flatten)]
    pub idle: IdleArgs,
}

#[derive(Args, Debug, Clone)]
pub struct YcsbArgs {
    /// Built-in workload: a, b, c, d, f, the write-ratio variants 10, 20, 30, or bd (B with
    /// deletes: 95 % reads, 2.5 % updates, 2.5 % deletes). `-p deleteproportion=F` adds
    /// deletes to any workload. (E is not offered: a hash-partitioned store has no key
    /// order to scan.)
    #[arg(long, short = 'w', default_value = "b")]
    pub workload: String,
    /// YCSB property file (recordcount, operationcount, readproportion, …) applied on top
    /// of the built-in workload.
    #[arg(short = 'P', value_name = "FILE")]
    pub property_file: Option<PathBuf>,
    /// Set one property, e.g. `-p readproportion=0.9` (repeatable; wins over -P).
    #[arg(short = 'p', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// Records to load (YCSB `recordcount`).
    #[arg(long)]
    pub records: Option<u64>,
    /// Seconds to run the workload (ignored when --operations is given).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Operations to run instead of a duration (YCSB `operationcount`).
    #[arg(long)]
    pub operations: Option<u64>,
    /// Client threads, each with its own port.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Requests each thread keeps outstanding (closed loop).
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Open loop: total operations per second to start (the window still caps what is in
    /// flight).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Initial retransmission timeout in milliseconds (doubles per attempt).
    #[arg(long, default_value_t = 2.0)]
    pub timeout_ms: f64,
    /// A request unanswered for this many milliseconds fails (below 60000: the servers
    /// forget a client silent that long).
    #[arg(long, default_value_t = 10_000.0)]
    pub give_up_ms: f64,
    /// Skip the load phase (the server already holds the records).
    #[arg(long)]
    pub skip_load: bool,
    /// Instead of a workload, read every record once and check the history of an earlier
    /// run (its `--history` file) with these reads appended after its end: after servers
    /// were killed and restarted on their logs, every write they acknowledged must be read
    /// back. Prints the keys whose read-back contradicts the history; exits non-zero if any.
    #[arg(long, value_name = "HISTORY", conflicts_with_all = ["embedded", "operations"])]
    pub read_back: Option<PathBuf>,
    /// Record every operation and check the history for linearizability.
    #[arg(long)]
    pub check: bool,
    /// Write the JSON report here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write every operation of the run (load included) here as JSON lines for
    /// Jepsen-style checkers (Knossos, Porcupine): invoke and ok/info events with process,
    /// key, value and time (docs/report.md). `compare` writes one file per run, the run's
    /// name added before the extension (h.jsonl: h.none.jsonl, h.rocksteady.jsonl, …).
    /// `netmigrate check-history PATH` checks such a file.
    #[arg(long, value_name = "PATH")]
    pub history: Option<PathBuf>,
    /// Seed for the workload generators.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,

    /// Run the server in this process (on the in-process backend unless --transport says
    /// otherwise).
    #[arg(long)]
    pub embedded: bool,
    /// Packet I/O backend (default: memory when embedded, udp otherwise).
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,
    /// Address of the server's partition 0 (default 127.0.0.1:7100; in-process 10.0.0.2:7100).
    #[arg(long)]
    pub server: Option<SocketAddrV4>,
    /// The server is a chain of replicas (`server --chain`): the same list, head first.
    /// Requests go to the head (the first; --server is not used), single-key reads spread
    /// over every replica (CRAQ: a replica answers a key nothing uncommitted has written and
    /// passes the rest on).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "ADDR,ADDR,...",
        conflicts_with = "server"
    )]
    pub chain: Vec<SocketAddrV4>,
    /// With --chain or --etcd: every single-key read goes to the chain's tail (chain
    /// replication without CRAQ's apportioned queries), to compare with reads spread over
    /// the chain.
    #[arg(long)]
    pub reads_at_tail: bool,
    // --etcd: follow the chain whose membership etcd holds (`server --etcd`): requests go
    // to its head, reads spread over its members, and each new membership is followed.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Reach the server through the software switch at this address (`netmigrate
    /// switch`; kernel UDP only).
    #[arg(long, value_name = "SWITCH")]
    pub via: Option<SocketAddrV4>,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Embedded server: cores to pin its partitions to.
    #[arg(long)]
    pub server_cores: Option<String>,
    /// EAL arguments for `--transport dpdk` (client thread t uses DPDK device t, or, with a
    /// single device, its queue t, steered to by a flow rule on the thread's UDP port).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub eal: Option<String>,
    /// With `--transport dpdk`: how frames get their UDP checksum.
    #[arg(long, value_enum, default_value_t = UdpChecksumArg::Auto)]
    pub udp_checksum: UdpChecksumArg,
    /// The client's own IPv4 address on the DPDK devices.
    #[arg(long, default_value = "10.0.0.1")]
    pub client_ip: std::net::Ipv4Addr,
    /// Seconds to wait for the DPDK devices' links before the first request (a memif link
    /// waits for its peer, a NIC's comes up a second or more after start); then it warns and
    /// sends anyway. 0 does not wait.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub link_timeout: f64,
    #[command(flatten)]
    pub idle: IdleArgs,

    /// In-process backend: probability that a packet is lost.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// In-process backend: probability that a packet is delivered twice.
    #[arg(long, default_value_t = 0.0)]
    pub duplicate: f64,
    /// In-process backend: probability that a packet is held back and overtaken.
    #[arg(long, default_value_t = 0.0)]
    pub reorder: f64,
}
