//! The deterministic simulation: a seed replays exactly, and every protocol keeps its runs
//! linearizable with a correct end state under the default fault mix.

use bench::simulate::{run_seed, Config, RunStats};
use migration::Protocol;

/// The same seed gives the same run, event for event.
#[test]
fn a_seed_replays_exactly() {
    let config = Config::default_mix(vec![Protocol::NetMigrate, Protocol::Rocksteady]);
    let first = run_seed(&config, 7);
    let again = run_seed(&config, 7);
    assert!(first.passed(), "{:?}", first.problems);
    let summary = |o: &bench::simulate::SeedOutcome| {
        let s = &o.stats;
        (
            s.events,
            s.ops,
            s.lost,
            s.duplicated,
            s.migrations_finished,
            s.migrations_aborted,
            s.virtual_ms.to_bits(),
            o.checked_ops,
        )
    };
    assert_eq!(summary(&first), summary(&again));
    assert!(first.stats.migrations_finished + first.stats.migrations_aborted > 0);
    let other = run_seed(&config, 8);
    assert_ne!(
        summary(&first),
        summary(&other),
        "another seed, another run"
    );
}

const PROTOCOLS: [Protocol; 4] = [
    Protocol::NetMigrate,
    Protocol::Rocksteady,
    Protocol::Fulva,
    Protocol::SourceBased,
];

/// Runs `seeds` and asserts each passed (printing the failing one's trace); returns the
/// stats of every run.
fn run_passing(config: &Config, seeds: std::ops::RangeInclusive<u64>) -> Vec<RunStats> {
    seeds
        .map(|seed| {
            let outcome = run_seed(config, seed);
            assert!(
                outcome.passed(),
                "{:?}, seed {seed}: {:?}\n{}",
                config.protocols,
                outcome.problems,
                outcome.trace.unwrap_or_default()
            );
            outcome.stats
        })
        .collect()
}

/// Each protocol alone on every shard: migrations back and forth, chained and called off,
/// under loss, duplication, reordering, hosts cut off, a server crash and a switch restart.
#[test]
fn every_protocol_survives_the_default_mix() {
    for protocol in PROTOCOLS {
        let runs = run_passing(&Config::default_mix(vec![protocol]), 1..=12);
        let finished: u64 = runs.iter().map(|s| s.migrations_finished).sum();
        let aborted: u64 = runs.iter().map(|s| s.migrations_aborted).sum();
        assert!(
            finished > 12 && aborted > 0,
            "{protocol:?}: {finished} finished, {aborted} called off"
        );
    }
}

/// A switch that restarts mid-migration forgets the pair and its registers, so reads of
/// groups already handed over come to the NetMigrate source as plain reads. Served from the
/// frozen copy they were stale (13 of the first 50 seeds); the source asks again until the
/// refused control message has called the migration off and the groups are back.
#[test]
fn scenario_switch_restart_mid_migration() {
    let mut config = Config::default_mix(vec![Protocol::NetMigrate]);
    config.switch_restarts = 1;
    let runs = run_passing(&config, 1..=20);
    assert!(runs.iter().all(|s| s.switch_restarts == 1));
}

/// A server crashes, for each protocol alone, and comes back empty or with its log: a
/// migration it was part of is not resumed, so whatever only the other end held is lost
/// to it, and must be refused (DATA_LOST from the migration's other end, ERROR or DATA_LOST
/// from the restarted server), never answered from an older copy. Before the fix a source
/// took the restarted destination's ERROR for a clean abort and served its frozen copy
/// again, rolling back writes the destination had acknowledged (stale reads in a few
/// seeds).
#[test]
fn scenario_server_crash_mid_migration() {
    let mut refused = 0;
    for (protocol, durable_logs) in PROTOCOLS.iter().flat_map(|&p| [(p, true), (p, false)]) {
        let mut config = Config::default_mix(vec![protocol]);
        config.crashes = 1;
        config.durable_logs = durable_logs;
        let runs = run_passing(&config, 1..=10);
        assert!(runs.iter().all(|s| s.crashes == 1));
        refused += runs.iter().map(|s| s.data_lost_replies).sum::<u64>();
    }
    assert!(refused > 0, "no run lost data to a crash mid-migration");
}

/// Servers crash while no migration runs. With a durable log each comes back with every
/// write it acknowledged, its dedup windows and its shards: nothing is refused, and the
/// read-back after the run finds every key as the history says. Without a log the same
/// seeds lose the crashed owner's shards (refused from then on).
#[test]
fn scenario_owner_crash_recovers_from_its_log() {
    let mut config = Config::default_mix(PROTOCOLS.to_vec());
    config.migrations = 0;
    config.switch_restarts = 0;
    config.crashes = 2;
    let runs = run_passing(&config, 1..=20);
    assert!(runs.iter().all(|s| s.crashes == 2 && s.damaged_shards == 0));
    assert_eq!(runs.iter().map(|s| s.data_lost_replies).sum::<u64>(), 0);
    config.durable_logs = false;
    let runs = run_passing(&config, 1..=20);
    assert!(runs.iter().all(|s| s.damaged_shards > 0));
}

/// Every server is a chain of three replicas (CRAQ) and replicas crash: heads, middles,
/// tails and learners, four a run, while shards migrate between the chains' heads. A crashed
/// replica leaves its chain at once and rejoins empty, copying the state from a snapshot in
/// the stream before it becomes the tail again. Nothing acknowledged may be lost (the
/// read-back finds every write) and nothing is refused: a head's replies wait until its
/// successors hold what they depend on. With the head answering at once, every one of 200
/// seeds failed; with followers serving reads of keys written but not yet committed, 4 of
/// 200; with followers applying a snapshot's role statements, reads between "hosted" and
/// "outgoing" were stale. (Heads of a migration's source chain are spared: a successor does
/// not take over a migration out yet.)
#[test]
fn scenario_replicas_crash_in_their_chains() {
    let mut config = Config::default_mix(PROTOCOLS.to_vec());
    config.replicas = 3;
    config.crashes = 4;
    let runs = run_passing(&config, 1..=24);
    assert!(runs.iter().all(|s| s.crashes == 4 && s.damaged_shards == 0));
    assert_eq!(runs.iter().map(|s| s.data_lost_replies).sum::<u64>(), 0);
    assert!(runs.iter().map(|s| s.head_crashes).sum::<u64>() > 5);
    assert!(runs.iter().map(|s| s.rejoined).sum::<u64>() > 60);
    assert!(runs.iter().map(|s| s.migrations_finished).sum::<u64>() > 40);
}

/// A destination's probe (sent unasked while the source is silent) reached the source before
/// any acknowledgement of the migration: taken for the destination's incarnation, its zero
/// made the destination's next ERROR (a message that overtook INIT) look like a restart,
/// and the called-off Fulva migration left the shard damaged, 896 operations refused
/// (`--replicas 3 --crashes 4`, seed 1494).
#[test]
fn scenario_a_destinations_probe_is_not_taken_for_its_incarnation() {
    let mut config = Config::default_mix(PROTOCOLS.to_vec());
    config.replicas = 3;
    config.crashes = 4;
    let runs = run_passing(&config, 1494..=1494);
    assert_eq!((runs[0].damaged_shards, runs[0].failed), (0, 0));
}

/// Every crash takes the head of a chain a migration is coming into, for each protocol
/// alone: its successor holds the migration's records but none of its state, and settles it
/// with the source, which calls the migration off (the successor sends back what it holds)
/// or, past the cut-over, sends it TERMINATE again. Each ends finished or called off, with
/// nothing lost or refused.
#[test]
fn scenario_destination_heads_crash_mid_migration() {
    let mut taken_over = 0;
    for protocol in PROTOCOLS {
        let mut config = Config::default_mix(vec![protocol]);
        config.replicas = 3;
        config.crashes = 4;
        config.crash_destination_heads = true;
        let runs = run_passing(&config, 1..=8);
        assert!(runs.iter().all(|s| s.damaged_shards == 0 && s.failed == 0));
        assert_eq!(runs.iter().map(|s| s.data_lost_replies).sum::<u64>(), 0);
        taken_over += runs.iter().map(|s| s.takeover_crashes).sum::<u64>();
    }
    assert!(
        taken_over > 20,
        "{taken_over} destination heads crashed mid-migration"
    );
}

/// Seeds of `--replicas 3 --crashes 4` that failed while a destination's successor took a
/// migration over: 11 (a follower had swept the tombstones of a shard migrating in, so the
/// return after the call-off brought a deleted key's older copy back: stale reads), 161
/// (the old head had applied TERMINATE but died before acknowledging it; its successor
/// answered the TERMINATE sent again ERROR, and the migration never ended) and 487 (the
/// source's answer to a repeated MIGRATE_TAKEOVER was taken for the acknowledgement of the
/// return's first message, and the return never ended).
#[test]
fn scenario_taken_over_migrations_that_failed_before() {
    let mut config = Config::default_mix(PROTOCOLS.to_vec());
    config.replicas = 3;
    config.crashes = 4;
    for seed in [11, 161, 487] {
        let runs = run_passing(&config, seed..=seed);
        assert_eq!((runs[0].damaged_shards, runs[0].failed), (0, 0));
    }
}
