//! The per-core loop runner: pins a thread to a core, calls its poll function until told to
//! stop, and backs off when idle so that several loops can share few cores.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A flag that SIGINT and SIGTERM raise. The second signal exits at once, so a stuck run
/// can still be interrupted.
pub fn shutdown_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// What a loop does when its polls find no work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Spin briefly, then yield, then nap: several loops share few cores.
    #[default]
    Share,
    /// Spin only, like a DPDK lcore: the loop owns its core. No wake-up delay after a
    /// yield or a nap, at the price of a core at 100 % whatever the load.
    BusyPoll,
}

/// Idle back-off: spin briefly (lowest latency), then yield, then sleep in short naps; or,
/// with `Idle::BusyPoll`, spin only.
#[derive(Debug, Default)]
pub struct Backoff {
    idle_polls: u32,
    idle: Idle,
}

impl Backoff {
    const SPIN_POLLS: u32 = 256;
    const YIELD_POLLS: u32 = 512;
    const NAP: Duration = Duration::from_micros(50);

    pub fn new(idle: Idle) -> Backoff {
        Backoff {
            idle_polls: 0,
            idle,
        }
    }

    /// Call after each poll with whether it did any work.
    pub fn after_poll(&mut self, did_work: bool) {
        match self.next_wait(did_work) {
            Wait::None => {}
            Wait::Spin => std::hint::spin_loop(),
            Wait::Yield => std::thread::yield_now(),
            Wait::Nap => std::thread::sleep(Self::NAP),
        }
    }

    fn next_wait(&mut self, did_work: bool) -> Wait {
        if did_work {
            self.idle_polls = 0;
            return Wait::None;
        }
        if self.idle == Idle::BusyPoll {
            return Wait::Spin;
        }
        self.idle_polls = self.idle_polls.saturating_add(1);
        if self.idle_polls < Self::SPIN_POLLS {
            Wait::Spin
        } else if self.idle_polls < Self::YIELD_POLLS {
            Wait::Yield
        } else {
            Wait::Nap
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    None,
    Spin,
    Yield,
    Nap,
}

/// Where a loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Let the OS schedule the thread.
    Floating,
    /// Pin to this core id.
    Core(usize),
}

/// Runs `poll` on its own thread until `stop` is raised; `poll` returns the amount of work
/// it did (0 = idle). Returns what `finish` returns after the last poll.
pub fn spawn_loop<S, F, D, R>(
    name: String,
    placement: Placement,
    idle: Idle,
    stop: Arc<AtomicBool>,
    mut state: S,
    mut poll: F,
    finish: D,
) -> std::io::Result<JoinHandle<R>>
where
    S: Send + 'static,
    F: FnMut(&mut S) -> usize + Send + 'static,
    D: FnOnce(S) -> R + Send + 'static,
    R: Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(move || {
        if let Placement::Core(id) = placement {
            // Pinning can fail in containers with restricted CPU sets; running unpinned
            // is still correct.
            core_affinity::set_for_current(core_affinity::CoreId { id });
        }
        let mut backoff = Backoff::new(idle);
        while !stop.load(Ordering::Relaxed) {
            let work = poll(&mut state);
            backoff.after_poll(work > 0);
        }
        finish(state)
    })
}

/// The cores this process may run on (its affinity mask), in order.
pub fn allowed_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect()
}

/// Parses a core list such as `0-3,6` into core ids.
pub fn parse_core_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{s}` in core list `{text}` is not a core number"))
        };
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (parse(lo)?, parse(hi)?);
                if lo > hi {
                    return Err(format!("range `{part}` in core list `{text}` is reversed"));
                }
                cores.extend(lo..=hi);
            }
            None => cores.push(parse(part)?),
        }
    }
    if cores.is_empty() {
        return Err(format!("core list `{text}` names no core"));
    }
    Ok(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_parse_and_reject_garbage() {
        assert_eq!(parse_core_list("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(parse_core_list("3").unwrap(), vec![3]);
        assert!(parse_core_list("2-1").is_err());
        assert!(parse_core_list("a").is_err());
        assert!(parse_core_list("").is_err());
    }

    #[test]
    fn sharing_backs_off_to_naps_and_busy_polling_never_leaves_the_core() {
        let mut sharing = Backoff::new(Idle::Share);
        let waits: Vec<Wait> = (0..Backoff::YIELD_POLLS + 10)
            .map(|_| sharing.next_wait(false))
            .collect();
        assert_eq!(waits[0], Wait::Spin);
        assert!(waits.contains(&Wait::Yield));
        assert_eq!(waits.last(), Some(&Wait::Nap));
        assert_eq!(sharing.next_wait(true), Wait::None);
        assert_eq!(
            sharing.next_wait(false),
            Wait::Spin,
            "work resets the back-off"
        );

        let mut busy = Backoff::new(Idle::BusyPoll);
        assert!((0..10 * Backoff::YIELD_POLLS).all(|_| busy.next_wait(false) == Wait::Spin));
    }

    #[test]
    fn loop_stops_when_flag_raised_and_returns_state() {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn_loop(
            "t".into(),
            Placement::Floating,
            Idle::Share,
            Arc::clone(&stop),
            0u64,
            |n| {
                *n += 1;
                usize::from(*n % 2 == 0)
            },
            |n| n,
        )
        .unwrap();
        while !handle.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
            stop.store(true, Ordering::Relaxed);
        }
        assert!(handle.join().unwrap() > 0);
    }
}
