//! At-most-once execution of client writes.
//!
//! Clients retransmit until answered, so a server can receive a write twice, and a late copy
//! could overwrite a newer value. Each request names its client, its sequence number and the
//! gap to the oldest sequence number that client still awaits. A server remembers, per
//! client, which writes at or after that floor it has applied; anything below the floor was
//! answered already and is never applied again.

use std::collections::HashMap;

/// Sequence numbers a client may have in flight beyond its oldest unanswered one.
pub const WINDOW: u64 = 4096;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupVerdict {
    /// First time seen: apply it.
    Apply,
    /// Applied before and the client may still wait for the answer: answer, don't apply.
    Duplicate,
    /// Older than the client's floor: the client has its answer; drop it.
    Stale,
    /// The client broke the window contract (gap ≥ WINDOW).
    OutOfWindow,
}

struct ClientWindow {
    floor: u64,
    applied: [u64; WORDS],
}

impl ClientWindow {
    fn bit(seq: u64) -> (usize, u64) {
        let slot = seq % WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    fn advance(&mut self, floor: u64) {
        if floor <= self.floor {
            return;
        }
        if floor - self.floor >= WINDOW {
            self.applied = [0; WORDS];
        } else {
            for seq in self.floor..floor {
                let (word, mask) = Self::bit(seq);
                self.applied[word] &= !mask;
            }
        }
        self.floor = floor;
    }
}

/// Per-client write windows of one partition.
#[derive(Default)]
pub struct WriteDedup {
    clients: HashMap<u32, ClientWindow>,
}

impl WriteDedup {
    /// Decides whether the write `(client, seq)` runs, and records it if so.
    pub fn admit(&mut self, client: u32, seq: u64, oldest_gap: u32) -> DedupVerdict {
        let gap = u64::from(oldest_gap);
        if gap >= WINDOW || gap > seq {
            return DedupVerdict::OutOfWindow;
        }
        let floor = seq - gap;
        let window = self.clients.entry(client).or_insert(ClientWindow {
            floor,
            applied: [0; WORDS],
        });
        window.advance(floor);
        if seq < window.floor {
            return DedupVerdict::Stale;
        }
        if seq - window.floor >= WINDOW {
            // A reordered packet from before a floor jump can't land here: floors only grow
            // and seq ≥ floor; this is a client that lied about its gap.
            return DedupVerdict::OutOfWindow;
        }
        let (word, mask) = ClientWindow::bit(seq);
        if window.applied[word] & mask != 0 {
            DedupVerdict::Duplicate
        } else {
            window.applied[word] |= mask;
            DedupVerdict::Apply
        }
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Records that `(client, seq)` was applied elsewhere (by a migration's source), so a
    /// retransmission arriving here is answered without applying it again.
    pub fn remember(&mut self, client: u32, seq: u64) {
        // Without a window, the client's floor is unknown: it may still await any earlier
        // write in the window, so none of them may look stale.
        let window = self.clients.entry(client).or_insert(ClientWindow {
            floor: seq.saturating_sub(WINDOW - 1),
            applied: [0; WORDS],
        });
        if seq < window.floor {
            return; // The client has its answer already.
        }
        if seq - window.floor >= WINDOW {
            window.advance(seq - (WINDOW - 1));
        }
        let (word, mask) = ClientWindow::bit(seq);
        window.applied[word] |= mask;
    }

    /// Every client's window: (client, floor, bitmap of seq % WINDOW, big-endian words), in
    /// client order, so the messages that carry them are the same in every run.
    pub fn windows(&self) -> impl Iterator<Item = (u32, u64, [u8; (WINDOW / 8) as usize])> + '_ {
        let mut clients: Vec<_> = self.clients.iter().collect();
        clients.sort_unstable_by_key(|(&client, _)| client);
        clients.into_iter().map(|(&client, window)| {
            let mut bitmap = [0u8; (WINDOW / 8) as usize];
            for (chunk, word) in bitmap.chunks_exact_mut(8).zip(window.applied) {
                chunk.copy_from_slice(&word.to_be_bytes());
            }
            (client, window.floor, bitmap)
        })
    }

    /// Adds another server's window of `client` (from [`WriteDedup::windows`]).
    pub fn merge_window(&mut self, client: u32, floor: u64, bitmap: &[u8]) {
        // The client told the other server its floor, so it awaits nothing older; but it
        // may await anything from the floor on, applied or not.
        let window = self.clients.entry(client).or_insert(ClientWindow {
            floor,
            applied: [0; WORDS],
        });
        window.advance(floor);
        // Saturating: a hostile floor near u64::MAX must not overflow.
        for seq in floor..floor.saturating_add(WINDOW) {
            // Word `slot / 64` is stored big-endian, so bit b of it is in byte 7 − b / 8.
            let slot = (seq % WINDOW) as usize;
            let byte = slot / 64 * 8 + 7 - slot % 64 / 8;
            if bitmap.get(byte).is_some_and(|b| b & (1 << (slot % 8)) != 0) {
                self.remember(client, seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_once_and_rejects_stale_copies() {
        let mut d = WriteDedup::default();
        assert_eq!(d.admit(1, 10, 0), DedupVerdict::Apply);
        assert_eq!(d.admit(1, 10, 0), DedupVerdict::Duplicate);
        assert_eq!(d.admit(1, 11, 1), DedupVerdict::Apply);
        // The client has its answer for 10 and 11; a late copy of 10 must not run.
        assert_eq!(d.admit(1, 12, 0), DedupVerdict::Apply);
        assert_eq!(d.admit(1, 10, 0), DedupVerdict::Stale);
        assert_eq!(
            d.admit(2, 10, 0),
            DedupVerdict::Apply,
            "clients are independent"
        );
        assert_eq!(d.admit(1, 5000, 4096), DedupVerdict::OutOfWindow);
        assert_eq!(d.admit(1, 3, 4), DedupVerdict::OutOfWindow);
    }

    #[test]
    fn windows_and_remembered_writes_carry_over() {
        let mut source = WriteDedup::default();
        for seq in [5, 6, 9] {
            assert_eq!(source.admit(3, seq, (seq - 5) as u32), DedupVerdict::Apply);
        }
        let mut destination = WriteDedup::default();
        for (client, floor, bitmap) in source.windows() {
            destination.merge_window(client, floor, &bitmap);
        }
        destination.remember(3, 12);
        for seq in [6, 9, 12] {
            assert_eq!(
                destination.admit(3, seq, (seq - 6) as u32),
                DedupVerdict::Duplicate,
                "seq {seq}"
            );
        }
        assert_eq!(destination.admit(3, 10, 4), DedupVerdict::Apply);
        assert_eq!(destination.admit(3, 4, 0), DedupVerdict::Stale);
    }

    #[test]
    fn merged_window_keeps_unapplied_writes_above_the_floor() {
        // The source applied 105 while 101 was still in flight (lost, or answered
        // RETRY_LATER); the destination must still apply 101 when it arrives.
        let mut source = WriteDedup::default();
        assert_eq!(source.admit(3, 105, 5), DedupVerdict::Apply);
        let mut destination = WriteDedup::default();
        for (client, floor, bitmap) in source.windows() {
            destination.merge_window(client, floor, &bitmap);
        }
        assert_eq!(destination.admit(3, 101, 1), DedupVerdict::Apply);
        assert_eq!(destination.admit(3, 105, 4), DedupVerdict::Duplicate);
        assert_eq!(destination.admit(3, 99, 0), DedupVerdict::Stale);
    }

    #[test]
    fn remembered_write_does_not_make_earlier_writes_stale() {
        let mut destination = WriteDedup::default();
        destination.remember(4, 50);
        assert_eq!(destination.admit(4, 48, 0), DedupVerdict::Apply);
        assert_eq!(destination.admit(4, 50, 2), DedupVerdict::Duplicate);
    }

    #[test]
    fn hostile_floors_and_sequence_numbers_do_not_overflow() {
        let mut d = WriteDedup::default();
        d.merge_window(1, u64::MAX - 3, &[0xFF; (WINDOW / 8) as usize]);
        d.remember(2, u64::MAX);
        d.remember(2, 0);
        assert_eq!(d.admit(2, u64::MAX, 0), DedupVerdict::Duplicate);
    }

    #[test]
    fn window_wraps_without_forgetting_recent_writes() {
        let mut d = WriteDedup::default();
        for seq in 0..3 * WINDOW {
            let gap = seq.min(WINDOW / 2) as u32;
            assert_eq!(d.admit(7, seq, gap), DedupVerdict::Apply, "seq {seq}");
            assert_eq!(d.admit(7, seq, gap), DedupVerdict::Duplicate);
            if seq >= 1 {
                let earlier = seq - 1;
                let expected = if earlier < seq - u64::from(gap) {
                    DedupVerdict::Stale
                } else {
                    DedupVerdict::Duplicate
                };
                assert_eq!(d.admit(7, earlier, 0), expected);
            }
        }
    }
}
