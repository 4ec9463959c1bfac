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
    /// The slot and the tick the last operation fell in, as nanosecond ranges: a thread's
    /// completions come in time order, so most fall in the same slot and in a tick already
    /// marked, and skip the two 64-bit divisions (tens of cycles each).
    slot_ns: std::ops::Range<u64>,
    slot: usize,
    tick_ns: std::ops::Range<u64>,
}

/// Resolution of the downtime measurement.
pub const TICK: Duration = Duration::from_micros(100);

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            overall: histogram(3),
            slots: Vec::new(),
            activity: Vec::new(),
            slot_ns: 0..0,
            slot: 0,
            tick_ns: 0..0,
        }
    }
}

impl Recorder {
    /// Records an operation that completed `at` after the run started.
    pub fn record(&mut self, at: Duration, latency_ns: u64) {
        let latency_ns = latency_ns.clamp(1, MAX_LATENCY_NS);
        self.overall.saturating_record(latency_ns);
        let at_ns = at.as_nanos() as u64;
        if !self.slot_ns.contains(&at_ns) {
            self.enter_slot(at_ns);
        }
        let slot = &mut self.slots[self.slot];
        slot.ops += 1;
        slot.latency.saturating_record(latency_ns);
        if !self.tick_ns.contains(&at_ns) {
            self.mark_tick(at_ns);
        }
    }

    /// Makes the slot `at_ns` falls in the current one.
    #[cold]
    fn enter_slot(&mut self, at_ns: u64) {
        let slot_ns = SLOT.as_nanos() as u64;
        let slot = (at_ns / slot_ns) as usize;
        while self.slots.len() <= slot {
            self.slots.push(Slot {
                ops: 0,
                latency: histogram(2),
            });
        }
        self.slot = slot;
        self.slot_ns = slot as u64 * slot_ns..(slot as u64 + 1) * slot_ns;
    }

    /// Marks the tick `at_ns` falls in as active and makes it the current one.
    #[cold]
    fn mark_tick(&mut self, at_ns: u64) {
        let tick_ns = TICK.as_nanos() as u64;
        let tick = (at_ns / tick_ns) as usize;
        if self.activity.len() <= tick / 64 {
            self.activity.resize(tick / 64 + 1, 0);
        }
        self.activity[tick / 64] |= 1 << (tick % 64);
        self.tick_ns = tick as u64 * tick_ns..(tick as u64 + 1) * tick_ns;
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

    /// Completions out of time order land in their own slot and tick, as in order.
    #[test]
    fn slots_and_ticks_do_not_depend_on_the_order_of_completions() {
        let ms = |m: u64| Duration::from_micros(m * 1000);
        let times = [ms(50), ms(60), ms(250), ms(55), ms(150), ms(60)];
        let mut in_order = Recorder::default();
        let mut sorted = times;
        sorted.sort();
        for at in sorted {
            in_order.record(at, 1_000);
        }
        let mut as_they_came = Recorder::default();
        for at in times {
            as_they_came.record(at, 1_000);
        }
        for r in [&in_order, &as_they_came] {
            let ops: Vec<u64> = r.slots.iter().map(|s| s.ops).collect();
            assert_eq!(ops, [4, 1, 1]);
            // Active ticks at 50, 55, 60, 150 and 250 ms: the longest gap is 150 → 250.
            let idle = r.longest_idle(ms(0), ms(300));
            assert_eq!(idle, Duration::from_micros(99_900));
            assert_eq!(r.longest_idle(ms(56), ms(60)), Duration::from_millis(4));
        }
    }
}
