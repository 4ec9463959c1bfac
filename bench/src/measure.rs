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
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            overall: histogram(3),
            slots: Vec::new(),
        }
    }
}

impl Recorder {
    /// Records an operation that completed `at` after the run started.
    pub fn record(&mut self, at: Duration, latency_ns: u64) {
        let latency_ns = latency_ns.clamp(1, MAX_LATENCY_NS);
        self.overall.saturating_record(latency_ns);
        let slot = (at.as_nanos() / SLOT.as_nanos()) as usize;
        while self.slots.len() <= slot {
            self.slots.push(Slot {
                ops: 0,
                latency: histogram(2),
            });
        }
        self.slots[slot].ops += 1;
        self.slots[slot].latency.saturating_record(latency_ns);
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
