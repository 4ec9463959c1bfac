//! Retransmission timers. First transmissions all use the same timeout, so their deadlines
//! arrive in order and a FIFO holds them at O(1) per request; only retransmissions (with
//! backoff) and retry-later pauses go to a heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// A timer names a request's sequence number and the attempt it was armed for, so a timer
/// outlived by a later transmission or by the answer is recognised as stale. Deadlines are
/// the engine's times (nanoseconds since its epoch).
type Timer = (u64, u64, u32);

#[derive(Default)]
pub struct Timers {
    in_order: VecDeque<Timer>,
    any_order: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    /// `in_order` promises that `deadline` is not before any deadline pushed in order so far.
    #[inline]
    pub fn push(&mut self, deadline: u64, seq: u64, attempt: u32, in_order: bool) {
        let in_order = in_order
            && self
                .in_order
                .back()
                .is_none_or(|&(last, _, _)| last <= deadline);
        if in_order {
            self.in_order.push_back((deadline, seq, attempt));
        } else {
            self.any_order.push(Reverse((deadline, seq, attempt)));
        }
    }

    /// The earliest deadline, if any timer is armed (stale ones included: they pop and
    /// are ignored).
    pub fn next_deadline(&self) -> Option<u64> {
        let fifo = self.in_order.front().map(|&(at, _, _)| at);
        let heap = self.any_order.peek().map(|Reverse((at, _, _))| *at);
        fifo.into_iter().chain(heap).min()
    }

    /// The next timer due at `now`, earliest first.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, u32)> {
        let fifo = self.in_order.front().map(|&(at, _, _)| at);
        let heap = self.any_order.peek().map(|Reverse((at, _, _))| *at);
        let take_fifo = match (fifo, heap) {
            (Some(f), Some(h)) => f <= h,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if take_fifo {
            let &(at, seq, attempt) = self.in_order.front()?;
            (at <= now).then(|| {
                self.in_order.pop_front();
                (seq, attempt)
            })
        } else {
            let Reverse((at, seq, attempt)) = *self.any_order.peek()?;
            (at <= now).then(|| {
                self.any_order.pop();
                (seq, attempt)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_come_out_earliest_first() {
        let at = |ms: u64| 1_000_000 + ms * 1_000_000;
        let mut timers = Timers::default();
        timers.push(at(10), 1, 1, true);
        timers.push(at(20), 2, 1, true);
        timers.push(at(5), 3, 2, false);
        timers.push(at(15), 4, 1, true); // after 20 in the FIFO would break order: goes to the heap
        assert_eq!(timers.pop_due(at(1)), None);
        let order: Vec<_> = std::iter::from_fn(|| timers.pop_due(at(100))).collect();
        assert_eq!(order, vec![(3, 2), (1, 1), (4, 1), (2, 1)]);
    }
}
