//! `netmigrate simulate`: runs seeds of the deterministic simulation and says, per batch,
//! what they exercised and whether every run held.

use super::{fail, CommandError};
use crate::cli::SimulateArgs;
use crate::simulate::{self, Config, SeedOutcome};
use std::time::Instant;

/// Seeds summarised per line.
const BATCH: u64 = 100;

pub fn config(args: &SimulateArgs) -> Result<Config, CommandError> {
    for (name, p) in [
        ("--loss", args.loss),
        ("--duplicate", args.duplicate),
        ("--abort-chance", args.abort_chance),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return fail(format!("{name} is a probability between 0 and 1, got {p}"));
        }
    }
    if args.loss >= 0.5 {
        return fail("--loss must stay below 0.5: nothing would get through");
    }
    if args.servers < 2 || args.servers > 200 {
        return fail("--servers must be from 2 to 200 (3 or more let migrations chain)");
    }
    if args.shards == 0 || args.shards > 50 || args.partitions == 0 || args.partitions > 16 {
        return fail("--shards must be from 1 to 50 and --partitions from 1 to 16");
    }
    if args.records == 0 || args.seeds == 0 {
        return fail("--records and --seeds must be at least 1");
    }
    let protocols = if args.protocol.is_empty() {
        vec![
            migration::Protocol::NetMigrate,
            migration::Protocol::Rocksteady,
            migration::Protocol::Fulva,
            migration::Protocol::SourceBased,
        ]
    } else {
        args.protocol.iter().map(|p| p.wire()).collect()
    };
    let mut config = Config::default_mix(protocols);
    config.servers = args.servers;
    config.partitions = args.partitions;
    config.shards = args.shards;
    config.records = args.records;
    config.workload.record_count = args.records;
    config.ops_per_client = args.ops;
    config.migrations = args.migrations;
    config.abort_chance = args.abort_chance;
    config.cuts = args.cuts;
    config.switch_restarts = args.switch_restarts;
    config.crashes = args.crashes;
    config.durable_logs = !args.no_logs;
    config.replicas = usize::from(args.replicas);
    config.crash_destination_heads = args.crash_destination_heads;
    if let Some(cells) = args.cbf_cells {
        config.cbf_cells = cells;
    }
    config.bf_cells = args.bf_cells;
    config.keys_per_request = args.keys_per_request;
    config.faults.loss = args.loss;
    config.faults.duplicate = args.duplicate;
    config.faults.jitter_ns = args.jitter_us * 1000;
    config.time_limit_ns = args.time_limit_ms.saturating_mul(1_000_000);
    config.trace_events = args.trace_events;
    config.trace_passed = args.trace;
    Ok(config)
}

pub fn run(args: SimulateArgs) -> Result<(), CommandError> {
    let config = config(&args)?;
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut batch = Totals::default();
    let last = args.seed.saturating_add(args.seeds - 1);
    for seed in args.seed..=last {
        let outcome = simulate::run_seed(&config, seed);
        if !outcome.passed() || args.trace {
            report(&outcome, &args);
        }
        if !outcome.passed() {
            failed.push(seed);
        }
        batch.add(&outcome);
        if (seed - args.seed + 1) % BATCH == 0 || seed == last {
            let first = seed - (seed - args.seed) % BATCH;
            println!(
                "seeds {first}-{seed}: {} ({:.1} s)",
                batch.line(),
                started.elapsed().as_secs_f64()
            );
            batch = Totals::default();
        }
    }
    if !failed.is_empty() {
        return fail(format!(
            "{} of {} seeds failed: {}",
            failed.len(),
            args.seeds,
            failed
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    println!("simulate: {} seeds passed", args.seeds);
    Ok(())
}

fn report(outcome: &SeedOutcome, args: &SimulateArgs) {
    if let Some(trace) = &outcome.trace {
        eprintln!("--- seed {}: last events", outcome.seed);
        eprint!("{trace}");
    }
    for problem in &outcome.problems {
        eprintln!("seed {}: {problem}", outcome.seed);
    }
    if !outcome.passed() {
        let protocols: String = args
            .protocol
            .iter()
            .map(|p| format!(" --protocol {}", p.name()))
            .collect();
        eprintln!(
            "seed {}: replay with `netmigrate simulate --seeds 1 --seed {}{protocols}` (and the \
             same fault flags)",
            outcome.seed, outcome.seed
        );
    }
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    passed: u64,
    events: u64,
    ops: u64,
    failed_ops: u64,
    checked: u64,
    finished: u64,
    aborted: u64,
    cuts: u64,
    switch_restarts: u64,
    crashes: u64,
    data_lost: u64,
    damaged: u64,
    compactions: u64,
    head_crashes: u64,
    takeover_crashes: u64,
    rejoined: u64,
    lost: u64,
}

impl Totals {
    fn add(&mut self, o: &SeedOutcome) {
        self.seeds += 1;
        self.passed += u64::from(o.passed());
        self.events += o.stats.events;
        self.ops += o.stats.ops;
        self.failed_ops += o.stats.failed;
        self.checked += o.checked_ops;
        self.finished += o.stats.migrations_finished;
        self.aborted += o.stats.migrations_aborted;
        self.cuts += o.stats.cuts;
        self.switch_restarts += o.stats.switch_restarts;
        self.crashes += o.stats.crashes;
        self.data_lost += o.stats.data_lost_replies;
        self.damaged += o.stats.damaged_shards;
        self.compactions += o.stats.log_compactions;
        self.head_crashes += o.stats.head_crashes;
        self.takeover_crashes += o.stats.takeover_crashes;
        self.rejoined += o.stats.rejoined;
        self.lost += o.stats.lost;
    }

    fn line(&self) -> String {
        let chains = if self.rejoined + self.head_crashes > 0 {
            format!(
                "; chains: {} heads crashed ({} of them while a migration came in), {} replicas \
                 rejoined",
                self.head_crashes, self.takeover_crashes, self.rejoined
            )
        } else {
            String::new()
        };
        format!(
            "{} of {} passed; {} events, {} ops ({} failed or refused), {} checked; migrations {} \
             finished, {} called off; {} hosts cut off; {} switch restarts; {} server crashes \
             ({} shards damaged, {} requests refused DATA_LOST){chains}; {} log compactions; \
             {} datagrams lost",
            self.passed,
            self.seeds,
            self.events,
            self.ops,
            self.failed_ops,
            self.checked,
            self.finished,
            self.aborted,
            self.cuts,
            self.switch_restarts,
            self.crashes,
            self.damaged,
            self.data_lost,
            self.compactions,
            self.lost
        )
    }
}
