//! `netmigrate simulate`: the whole system on one thread in virtual time, everything drawn
//! from one seed — servers with several partitions, the software switch, YCSB clients (the
//! client engine users run, over simulated ports), a network that loses, duplicates,
//! delays, reorders and cuts hosts off, and migrations of several shards at once, back and
//! forth and chained, some of them called off. After each run: the whole history checked
//! for linearizability, and the end state (every key once at its shard's owner, no pair
//! left in the switch). A seed replays exactly; a failing one prints the events before it.

mod network;
mod trace;
mod world;

pub use network::Faults;
pub use world::RunStats;

use crate::linearizability;
use crate::workload::WorkloadSpec;
use migration::Protocol;
use world::World;

/// The checker's search budget per key: 50 times the default. After a crash, writes whose
/// outcome is open (refused or unanswered) pile up on a key, and one key in a couple of
/// thousand seeds needs more than the default to be decided (it then takes well under a
/// second).
const SEARCH_BUDGET_PER_KEY: u64 = 50 * linearizability::DEFAULT_BUDGET_PER_KEY;

/// What every run of a batch looks like (each seed draws its own plan within it).
#[derive(Debug, Clone)]
pub struct Config {
    pub servers: usize,
    /// Partitions (cores) per server.
    pub partitions: u32,
    pub group_bits: u8,
    /// Shards, ids 1..=shards; shard k starts on server (k − 1) mod servers.
    pub shards: u16,
    /// Shard k migrates with protocol `protocols[(k − 1) mod len]`.
    pub protocols: Vec<Protocol>,
    /// Records per shard, loaded through the client before the run.
    pub records: u64,
    pub workload: WorkloadSpec,
    pub clients_per_shard: usize,
    /// Keys per request of every client but a shard's first (multi-key GETs and PUTs when
    /// more than 1; deletes stay single-key).
    pub keys_per_request: usize,
    pub window: usize,
    /// Operations each client starts at least (it goes on while the plan runs).
    pub ops_per_client: u64,
    pub give_up_ms: u64,
    /// Migrations a run starts, one at a time per shard, `migration_gap_ns` apart at most.
    pub migrations: usize,
    pub migration_gap_ns: u64,
    pub migration_items_per_s: f64,
    /// Chance that a migration is called off at a random point.
    pub abort_chance: f64,
    /// Hosts cut off from the switch per run, each for up to `cut_max_ns`.
    pub cuts: usize,
    pub cut_gap_ns: u64,
    pub cut_max_ns: u64,
    /// Switch restarts per run (empty registers and pair table afterwards).
    pub switch_restarts: usize,
    /// Server crashes per run: down for up to `cut_max_ns`, then back with what its log
    /// holds (`durable_logs`) or empty.
    pub crashes: usize,
    /// Every partition server records its changes in a durable log (the loop's `--log-dir`),
    /// from which a crashed server is rebuilt.
    pub durable_logs: bool,
    /// Each server is a chain of this many replica processes (1: no replication).
    pub replicas: usize,
    /// Crashes take the head of a chain a migration is coming into, when there is one.
    pub crash_destination_heads: bool,
    /// Every server starts hosting every shard (empty where it is not the owner), as
    /// `netmigrate server --shard` does; otherwise only the shards it owns.
    pub host_every_shard: bool,
    pub faults: Faults,
    pub cbf_cells: usize,
    /// Cells of each done-Bloom filter (None: the switch's default for the group bits).
    pub bf_cells: Option<usize>,
    pub time_limit_ns: u64,
    /// Events a failing seed prints.
    pub trace_events: usize,
    /// Keep the trace of a run that passed too (`--trace`).
    pub trace_passed: bool,
}

impl Config {
    /// The default mix: 3 servers × 2 partitions, 3 shards (one per protocol in turn),
    /// 2 % loss, 2 % duplication, delays of 5–45 µs per hop, two hosts cut off, one
    /// switch restart and one server crash per run, four migrations, a quarter of them called off.
    pub fn default_mix(protocols: Vec<Protocol>) -> Config {
        let records = 200;
        let mut workload = WorkloadSpec::builtin("a").expect("workload a is built in");
        workload.delete = 0.1;
        workload.record_count = records;
        Config {
            servers: 3,
            partitions: 2,
            group_bits: 6,
            shards: 3,
            protocols,
            records,
            workload,
            clients_per_shard: 2,
            keys_per_request: 4,
            window: 4,
            ops_per_client: 300,
            give_up_ms: 2_000,
            migrations: 4,
            migration_gap_ns: 20_000_000,
            migration_items_per_s: 20_000.0,
            abort_chance: 0.25,
            cuts: 2,
            cut_gap_ns: 30_000_000,
            cut_max_ns: 20_000_000,
            switch_restarts: 1,
            crashes: 1,
            durable_logs: true,
            replicas: 1,
            crash_destination_heads: false,
            host_every_shard: true,
            faults: Faults {
                loss: 0.02,
                duplicate: 0.02,
                delay_ns: 5_000,
                jitter_ns: 40_000,
            },
            cbf_cells: tofino::spec::DEFAULT_CBF_CELLS,
            bf_cells: None,
            time_limit_ns: 30_000_000_000,
            trace_events: 400,
            trace_passed: false,
        }
    }
}

/// What one seed gave.
#[derive(Debug, Clone)]
pub struct SeedOutcome {
    pub seed: u64,
    pub stats: RunStats,
    pub checked_ops: u64,
    /// Everything that went wrong: violations, a run that did not end, a bad end state.
    pub problems: Vec<String>,
    /// The last events, when something went wrong.
    pub trace: Option<String>,
}

impl SeedOutcome {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Runs one seed.
pub fn run_seed(config: &Config, seed: u64) -> SeedOutcome {
    let mut world = match World::new(config, seed) {
        Ok(world) => world,
        Err(e) => {
            return SeedOutcome {
                seed,
                stats: RunStats::default(),
                checked_ops: 0,
                problems: vec![format!("cannot build the run: {e}")],
                trace: None,
            }
        }
    };
    let mut problems = Vec::new();
    let ran = world.run().and_then(|()| {
        world.start_read_back();
        world.run()
    });
    match ran {
        Ok(()) => problems.extend(world.check_end_state()),
        Err(e) => problems.push(e),
    }
    let history = world.history();
    let result = linearizability::check_with_budget(&history, SEARCH_BUDGET_PER_KEY);
    if result.violations > 0 {
        problems.push(format!(
            "{} key(s) not linearizable: {}",
            result.violations,
            result.examples.join("; ")
        ));
    }
    if result.unchecked_keys > 0 {
        problems.push(format!(
            "{} key(s) undecided by the checker",
            result.unchecked_keys
        ));
    }
    let trace = (config.trace_passed || !problems.is_empty()).then(|| world.trace.render());
    SeedOutcome {
        seed,
        stats: world.stats.clone(),
        checked_ops: result.checked_ops,
        problems,
        trace,
    }
}
