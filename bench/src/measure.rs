//! Latency and throughput recording: one overall histogram and one per 100-ms slot, per
//! client thread, merged at the end (no sharing on the fast path).

use hdrhistogram::Histogram;
use std::time::Duration;

pub const SLOT: Duration = Duration::from_millis(100);
const MAX_LATENCY_NS: u64 = 120_000_000_000;

fn histogram(significant_digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, significant_digits).expect("valid bounds")
}

#[derive(Clone)]
pub struct Slot {
    pub ops: u64,
    pub latency: Histogram<u64>,
}

/// Latencies in nanoseconds, overall and per time slot of the run.
#[derive(Clone)]
pub struct Recorder {
    pub overall: Histogram<u64>,
    pub slots: Vec<Slot>,
    /// One bit per `TICK` of the run: did any operation complete in it (for downtime).
    activity: Vec<u64>,
}

/// Resolution of the downtime measurement.
pub const TICK: Duration = Duration::from_micros(100);

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            overall: histogram(3),
            slots: Vec::new(),
            activity: Vec::new(),
        }
    }
}

impl Recorder {
    /// Records an operation that completed `at` after the run started.
    pub fn record(&mut self, at: Duration, latency_ns: u64) {
        let latency_ns = latency_ns.clamp(1, MAX_LATENCY_NS);
        self.overall.saturating_record(latency_ns);
        // 64-bit divisions: this runs once per operation, and u128 division is a libcall.
        let at_ns = at.as_nanos() as u64;
        let slot = (at_ns / SLOT.as_nanos() as u64) as usize;
        while self.slots.len() <= slot {
            self.slots.push(Slot {
                ops: 0,
                latency: histogram(2),
            });
        }
        self.slots[slot].ops += 1;
        self.slots[slot].latency.saturating_record(latency_ns);
        let tick = (at_ns / TICK.as_nanos() as u64) as usize;
        if self.activity.len() <= tick / 64 {
            self.activity.resize(tick / 64 + 1, 0);
        }
        self.activity[tick / 64] |= 1 << (tick % 64);
    }

    /// The longest stretch within `[from, to)` in which no operation completed, to the
    /// resolution of `TICK`.
    pub fn longest_idle(&self, from: Duration, to: Duration) -> Duration {
        let first = (from.as_nanos() / TICK.as_nanos()) as usize;
        let last = (to.as_nanos() / TICK.as_nanos()) as usize;
        let (mut longest, mut current) = (0usize, 0usize);
        for tick in first..last {
            let active = self
                .activity
                .get(tick / 64)
                .is_some_and(|word| word & (1 << (tick % 64)) != 0);
            current = if active { 0 } else { current + 1 };
            longest = longest.max(current);
        }
        TICK * longest as u32
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.overall.add(&other.overall).expect("same bounds");
        while self.slots.len() < other.slots.len() {
            self.slots.push(Slot {
                ops: 0,
                latency: histogram(2),
            });
        }
        for (mine, theirs) in self.slots.iter_mut().zip(&other.slots) {
            mine.ops += theirs.ops;
            mine.latency.add(&theirs.latency).expect("same bounds");
        }
        if self.activity.len() < other.activity.len() {
            self.activity.resize(other.activity.len(), 0);
        }
        for (mine, theirs) in self.activity.iter_mut().zip(&other.activity) {
            *mine |= theirs;
        }
    }

    /// Merges the slots in `[from, to)` into one histogram (for before/during/after).
    pub fn window(&self, from: Duration, to: Duration) -> (u64, Histogram<u64>) {
        let mut merged = histogram(2);
        let mut ops = 0;
        let first = (from.as_nanos() / SLOT.as_nanos()) as usize;
        let last = (to.as_nanos() / SLOT.as_nanos()) as usize;
        for slot in self.slots.iter().take(last).skip(first) {
            ops += slot.ops;
            merged.add(&slot.latency).expect("same bounds");
        }
        (ops, merged)
    }
}

pub fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_merge() {
        let mut a = Recorder::default();
        a.record(Duration::from_millis(50), 1_000);
        a.record(Duration::from_millis(250), 3_000);
        let mut b = Recorder::default();
        b.record(Duration::from_millis(150), 2_000);
        a.merge(&b);
        assert_eq!(
            a.slots.iter().map(|s| s.ops).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
        assert_eq!(a.overall.len(), 3);
        let (ops, h) = a.window(Duration::from_millis(100), Duration::from_millis(300));
        assert_eq!(ops, 2);
        assert!(h.value_at_quantile(1.0) >= 2_900);
    }
}
