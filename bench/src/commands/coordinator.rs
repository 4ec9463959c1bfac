//! `netmigrate coordinator`: keeps one chain's membership in etcd by chain replication's
//! rules (`membership::Coordinator`) until SIGINT/SIGTERM (or `--duration`).

use super::{fail, CommandError};
use crate::cli::CoordinatorArgs;
use crate::membership::{self, agent, Coordinator};
use dataplane::runner::shutdown_on_signals;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub fn run(args: CoordinatorArgs) -> Result<(), CommandError> {
    if args.etcd.etcd.is_empty() {
        return fail("--etcd names the etcd endpoints the chain's membership lives in");
    }
    if !(1..=16).contains(&args.replicas) {
        return fail(format!(
            "--replicas must be from 1 to 16, got {}",
            args.replicas
        ));
    }
    let mut directory = membership::connect(&args.etcd.etcd).map_err(CommandError)?;
    let stop = shutdown_on_signals()?;
    if let Some(seconds) = args.duration {
        stop_after(Arc::clone(&stop), seconds);
    }
    let mut coordinator = Coordinator::new(&args.etcd.chain_name, args.replicas);
    eprintln!(
        "netmigrate coordinator: chain {} ({} replicas) in etcd {}; Ctrl-C stops",
        args.etcd.chain_name,
        args.replicas,
        args.etcd.etcd.join(",")
    );
    agent::coordinate(directory.as_mut(), &mut coordinator, &stop);
    Ok(())
}

/// Sets `stop` after `seconds`.
fn stop_after(stop: Arc<AtomicBool>, seconds: f64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
        stop.store(true, Ordering::Relaxed);
    });
}
