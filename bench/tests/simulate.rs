//! The deterministic simulation: a seed replays exactly, and every protocol keeps its runs
//! linearizable with a correct end state under the default fault mix.

use bench::simulate::{run_seed, Config};
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

/// Each protocol alone on every shard: migrations back and forth, chained and called off,
/// under loss, duplication, reordering and hosts cut off.
#[test]
fn every_protocol_survives_the_default_mix() {
    for protocol in [
        Protocol::NetMigrate,
        Protocol::Rocksteady,
        Protocol::Fulva,
        Protocol::SourceBased,
    ] {
        let config = Config::default_mix(vec![protocol]);
        let (mut finished, mut aborted) = (0, 0);
        for seed in 1..=12 {
            let outcome = run_seed(&config, seed);
            assert!(
                outcome.passed(),
                "{protocol:?}, seed {seed}: {:?}\n{}",
                outcome.problems,
                outcome.trace.unwrap_or_default()
            );
            finished += outcome.stats.migrations_finished;
            aborted += outcome.stats.migrations_aborted;
        }
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
    let mut restarts = 0;
    for seed in 1..=20 {
        let outcome = run_seed(&config, seed);
        assert!(
            outcome.passed(),
            "seed {seed}: {:?}\n{}",
            outcome.problems,
            outcome.trace.unwrap_or_default()
        );
        restarts += outcome.stats.switch_restarts;
    }
    assert_eq!(restarts, 20);
}

/// A server crashes and comes back empty, for each protocol alone: whatever only it held is
/// lost, and must be refused (DATA_LOST from the migration's other end, ERROR from the
/// empty server), never answered from an older copy. Before the fix a source took the
/// restarted destination's ERROR for a clean abort and served its frozen copy again,
/// rolling back writes the destination had acknowledged (stale reads in a few seeds).
#[test]
fn scenario_server_crash_mid_migration() {
    let mut refused = 0;
    for protocol in [
        Protocol::NetMigrate,
        Protocol::Rocksteady,
        Protocol::Fulva,
        Protocol::SourceBased,
    ] {
        let mut config = Config::default_mix(vec![protocol]);
        config.crashes = 1;
        for seed in 1..=10 {
            let outcome = run_seed(&config, seed);
            assert!(
                outcome.passed(),
                "{protocol:?}, seed {seed}: {:?}\n{}",
                outcome.problems,
                outcome.trace.unwrap_or_default()
            );
            assert_eq!(outcome.stats.crashes, 1);
            refused += outcome.stats.data_lost_replies;
        }
    }
    assert!(refused > 0, "no run lost data to a crash mid-migration");
}
