//! `netmigrate core-latency`: how long one cache line takes to go from one core to another
//! and back. Every cross-process benchmark here (memif, loopback) pays this per burst and
//! per shared line, and on a VM it is decided by where the host puts the vCPUs: on this
//! project's 2-vCPU test VM it moves between ~70 ns and ~340 ns from one minute to the next,
//! and the memif GET benchmark moves with it (see the README).

use super::{fail, CommandError};
use crate::cli::CoreLatencyArgs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The measurement gives up after this long (the other core may be busy polling).
const DEADLINE: Duration = Duration::from_secs(10);
const BATCHES: u64 = 5;

/// One cache line, alone on its line and the next (adjacent-line prefetch).
#[repr(align(128))]
struct Line(AtomicU64);

/// Round-trip times of the batches, in nanoseconds, sorted.
pub struct CoreLatency {
    pub batches: Vec<f64>,
}

impl CoreLatency {
    pub fn median(&self) -> f64 {
        self.batches[self.batches.len() / 2]
    }
}

pub fn run(args: CoreLatencyArgs) -> Result<(), CommandError> {
    let (a, b) = parse_pair(&args.cores)?;
    if args.rounds < BATCHES {
        return fail(format!("--rounds must be at least {BATCHES}"));
    }
    let latency = measure(a, b, args.rounds)?;
    let (min, max) = (
        latency.batches[0],
        latency.batches[latency.batches.len() - 1],
    );
    println!(
        "core-latency: cores {a} and {b}, round trip {:.1} ns (median of {BATCHES} batches of \
         {}; min {min:.1}, max {max:.1})",
        latency.median(),
        args.rounds / BATCHES,
    );
    Ok(())
}

fn parse_pair(text: &str) -> Result<(usize, usize), CommandError> {
    let ids: Result<Vec<usize>, _> = text.split(',').map(|s| s.trim().parse()).collect();
    match ids.as_deref() {
        Ok(&[a, b]) if a != b => Ok((a, b)),
        Ok(&[_, _]) => fail("--cores needs two different cores"),
        _ => fail(format!(
            "--cores {text:?}: give two core ids separated by a comma, e.g. 0,1"
        )),
    }
}

fn check_available(core: usize) -> Result<(), CommandError> {
    let known = core_affinity::get_core_ids().unwrap_or_default();
    if known.iter().any(|c| c.id == core) {
        return Ok(());
    }
    let ids: Vec<String> = known.iter().map(|c| c.id.to_string()).collect();
    fail(format!(
        "core {core} is not available to this process (available: {})",
        ids.join(",")
    ))
}

fn pin(core: usize) -> Result<(), CommandError> {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        return fail(format!("cannot pin a thread to core {core}"));
    }
    Ok(())
}

/// Spins until `line` holds `value`; false if `stop` was raised or the deadline passed.
fn wait_for(line: &Line, value: u64, stop: &AtomicBool, deadline: Instant) -> bool {
    let mut spins = 0u32;
    while line.0.load(Ordering::Acquire) != value {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins % 4096 == 0 && (stop.load(Ordering::Relaxed) || Instant::now() > deadline) {
            return false;
        }
    }
    true
}

/// Bounces a line between core `a` (this thread, pinned for the measurement) and core `b`
/// `rounds` times and times it in batches.
pub fn measure(a: usize, b: usize, rounds: u64) -> Result<CoreLatency, CommandError> {
    check_available(a)?;
    check_available(b)?;
    let line = Arc::new(Line(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + DEADLINE;
    let responder = {
        let (line, stop) = (Arc::clone(&line), Arc::clone(&stop));
        std::thread::spawn(move || -> Result<(), CommandError> {
            pin(b)?;
            for round in 0..rounds {
                if !wait_for(&line, 2 * round + 1, &stop, deadline) {
                    return Ok(());
                }
                line.0.store(2 * round + 2, Ordering::Release);
            }
            Ok(())
        })
    };
    let measured = pin(a).and_then(|()| {
        let per_batch = rounds / BATCHES;
        let mut batches = Vec::new();
        for batch in 0..BATCHES {
            let start = Instant::now();
            for round in batch * per_batch..(batch + 1) * per_batch {
                line.0.store(2 * round + 1, Ordering::Release);
                if !wait_for(&line, 2 * round + 2, &stop, deadline) {
                    return fail(format!(
                        "core {b} did not answer within {} s: is it busy (a busy-polling \
                         loop, another benchmark)?",
                        DEADLINE.as_secs()
                    ));
                }
            }
            batches.push(start.elapsed().as_nanos() as f64 / per_batch as f64);
        }
        batches.sort_by(f64::total_cmp);
        Ok(CoreLatency { batches })
    });
    stop.store(true, Ordering::Relaxed);
    let answered = responder.join().expect("the responder thread panicked");
    // The responder's own failure (it could not pin) explains a timeout here.
    answered?;
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_pairs_are_two_different_ids() {
        assert_eq!(parse_pair("0,1").unwrap(), (0, 1));
        assert_eq!(parse_pair(" 3 , 2").unwrap(), (3, 2));
        for bad in ["0", "0,0", "0,1,2", "a,b", ""] {
            assert!(parse_pair(bad).is_err(), "{bad:?} accepted");
        }
    }
}
