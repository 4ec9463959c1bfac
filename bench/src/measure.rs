//! Latency and throughput recording: one overall histogram and one per 100-ms slot, per
//! client thread, merged at the end (no sharing on the fast path). A completion is recorded
//! once, into the current slot's full-precision histogram, which is added to the overall
//! one and to its slot's when the slot closes: one histogram update per operation, not two.

use hdrhistogram::Histogram;
use std::time::Duration;

pub const SLOT: Duration = Duration::from_millis(100);
const MAX_LATENCY_NS: u64 = 120_000_000_000;
/// Significant digits of the overall latency histogram, and of each slot's.
const OVERALL_DIGITS: u8 = 3;
const SLOT_DIGITS: u8 = 2;

fn histogram(significant_digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, significant_digits).expect("valid bounds")
}

#[derive(Clone)]
pub struct Slot {
    pub ops: u64,
    pub latency: Histogram<u64>,
}

/// Latencies in nanoseconds, overall and per time slot of the run. Read them (`overall`,
/// `slots`) after `finish`, or from a recorder others were merged into.
#[derive(Clone)]
pub struct Recorder {
    overall: Histogram<u64>,
    slots: Vec<Slot>,
    /// The current slot's latencies, at the overall histogram's precision, not yet added to
    /// `overall` nor to the slot.
    current: Histogram<u64>,
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
            overall: histogram(OVERALL_DIGITS),
            slots: Vec::new(),
            current: histogram(OVERALL_DIGITS),
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
        let at_ns = at.as_nanos() as u64;
        if !self.slot_ns.contains(&at_ns) && !self.enter_slot(at_ns) {
            // Completed in a slot already closed (a thread's completions come in time order,
            // so only a caller mixing threads' times gets here).
            let slot = self.slot_of(at_ns);
            self.overall.saturating_record(latency_ns);
            self.slots[slot].ops += 1;
            self.slots[slot].latency.saturating_record(latency_ns);
        } else {
            self.current.saturating_record(latency_ns);
            self.slots[self.slot].ops += 1;
        }
        if !self.tick_ns.contains(&at_ns) {
            self.mark_tick(at_ns);
        }
    }

    /// Adds what the current slot holds to the overall histogram and to the slot's: call it
    /// before reading them.
    pub fn finish(&mut self) {
        if !self.current.is_empty() {
            let slot = &mut self.slots[self.slot].latency;
            self.overall.add(&self.current).expect("same bounds");
            slot.add(&self.current).expect("same bounds");
            self.current.reset();
        }
    }

    pub fn overall(&self) -> &Histogram<u64> {
        debug_assert!(self.current.is_empty(), "read before finish");
        &self.overall
    }

    pub fn slots(&self) -> &[Slot] {
        debug_assert!(self.current.is_empty(), "read before finish");
        &self.slots
    }

    /// The slot `at_ns` falls in, created (with those before it) if need be.
    fn slot_of(&mut self, at_ns: u64) -> usize {
        let slot = (at_ns / SLOT.as_nanos() as u64) as usize;
        self.grow_slots(slot + 1);
        slot
    }

    fn grow_slots(&mut self, count: usize) {
        while self.slots.len() < count {
            self.slots.push(Slot {
                ops: 0,
                latency: histogram(SLOT_DIGITS),
            });
        }
    }

    /// Closes the current slot and opens the one `at_ns` falls in, unless that one is
    /// earlier (false).
    #[cold]
    fn enter_slot(&mut self, at_ns: u64) -> bool {
        let slot = self.slot_of(at_ns);
        if slot < self.slot {
            return false;
        }
        self.finish();
        let slot_ns = SLOT.as_nanos() as u64;
        self.slot = slot;
        self.slot_ns = slot as u64 * slot_ns..(slot as u64 + 1) * slot_ns;
        true
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

    /// Adds `other`'s operations, its current slot's included.
    pub fn merge(&mut self, other: &Recorder) {
        self.overall.add(&other.overall).expect("same bounds");
        self.overall.add(&other.current).expect("same bounds");
        self.grow_slots(other.slots.len());
        for (mine, theirs) in self.slots.iter_mut().zip(&other.slots) {
            mine.ops += theirs.ops;
            mine.latency.add(&theirs.latency).expect("same bounds");
        }
        if !other.current.is_empty() {
            let slot = &mut self.slots[other.slot].latency;
            slot.add(&other.current).expect("same bounds");
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
        debug_assert!(self.current.is_empty(), "read before finish");
        let mut merged = histogram(SLOT_DIGITS);
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
        a.finish();
        assert_eq!(
            a.slots().iter().map(|s| s.ops).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
        assert_eq!(a.overall().len(), 3);
        let (ops, h) = a.window(Duration::from_millis(100), Duration::from_millis(300));
        assert_eq!(ops, 2);
        assert!(h.value_at_quantile(1.0) >= 2_900);
    }

    /// A completion is counted once: in the overall histogram at full precision and in its
    /// slot's, whether the thread's recorder was finished or merged as it stood.
    #[test]
    fn each_completion_lands_once_in_the_overall_histogram_and_in_its_slot() {
        let mut thread = Recorder::default();
        for (ms, latency) in [(10, 1_234_567), (20, 1_234_567), (150, 7_654_321)] {
            thread.record(Duration::from_millis(ms), latency);
        }
        let mut merged = Recorder::default();
        merged.merge(&thread); // the last slot still open in `thread`
        thread.finish();
        thread.finish(); // harmless twice
        for r in [&merged, &thread] {
            let overall = r.overall();
            assert_eq!(overall.len(), 3);
            // Three significant digits overall: within 0.1 %.
            assert!(overall.value_at_quantile(1.0).abs_diff(7_654_321) <= 7_654);
            assert!(overall.value_at_quantile(0.5).abs_diff(1_234_567) <= 1_234);
            let slots = r.slots();
            assert_eq!(slots.iter().map(|s| s.ops).collect::<Vec<_>>(), [2, 1]);
            assert_eq!(
                slots.iter().map(|s| s.latency.len()).collect::<Vec<_>>(),
                [2, 1]
            );
            // Two in a slot: within 1 %.
            let last = slots[1].latency.value_at_quantile(1.0);
            assert!(last.abs_diff(7_654_321) <= 76_543);
        }
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
        for r in [&mut in_order, &mut as_they_came] {
            r.finish();
            let ops: Vec<u64> = r.slots().iter().map(|s| s.ops).collect();
            assert_eq!(ops, [4, 1, 1]);
            // Active ticks at 50, 55, 60, 150 and 250 ms: the longest gap is 150 → 250.
            let idle = r.longest_idle(ms(0), ms(300));
            assert_eq!(idle, Duration::from_micros(99_900));
            assert_eq!(r.longest_idle(ms(56), ms(60)), Duration::from_millis(4));
        }
    }
}
