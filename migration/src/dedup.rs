//! At-most-once execution of client writes.
//!
//! Clients retransmit until answered, so a server can receive a write twice, and a late copy
//! could overwrite a newer value. Each request names its client, its sequence number and the
//! gap to the oldest sequence number that client still awaits. A server remembers, per
//! client, which writes at or after that floor it has applied; anything below the floor was
//! answered already and is never applied again. A repeat is answered as its first copy was:
//! a DELETE that found no key is remembered, so its retransmission says NOT_FOUND again.

use crate::journal::{Journal, Record};
use dataplane::wire::Status;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sequence numbers a client may have in flight beyond its oldest unanswered one.
pub const WINDOW: u64 = 4096;
/// Clients a partition keeps windows for (about 1 KiB each).
pub const MAX_CLIENTS: usize = 16_384;
/// A client silent this long is forgotten when room is needed: far longer than any client
/// keeps resending a write (ours gives up after `--give-up-ms`, 10 s by default, and refuses
/// a value this long), so no write of a live client can be applied twice.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(60);
/// A full table is searched for silent clients at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupVerdict {
    /// First time seen: apply it.
    Apply,
    /// Applied before and the client may still wait for the answer: answer as the first
    /// copy was (`found` is false for a DELETE that found no key), don't apply.
    Duplicate { found: bool },
    /// Older than the client's floor: the client has its answer; drop it.
    Stale,
    /// The client broke the window contract (gap ≥ WINDOW).
    OutOfWindow,
    /// A client not known here, and no room for its window (`MAX_CLIENTS`, none silent for
    /// `IDLE_EXPIRY`): refused, not applied.
    Full,
}

struct ClientWindow {
    floor: u64,
    applied: [u64; WORDS],
    /// Applied DELETEs that found no key (answered NOT_FOUND).
    not_found: [u64; WORDS],
    /// When the client was last heard from (None: before the partition was given a time).
    last_seen: Option<Instant>,
}

impl ClientWindow {
    fn bit(seq: u64) -> (usize, u64) {
        let slot = seq % WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    fn new(floor: u64) -> Self {
        ClientWindow {
            floor,
            applied: [0; WORDS],
            not_found: [0; WORDS],
            last_seen: None,
        }
    }

    fn advance(&mut self, floor: u64) {
        if floor <= self.floor {
            return;
        }
        if floor - self.floor >= WINDOW {
            self.applied = [0; WORDS];
            self.not_found = [0; WORDS];
        } else {
            for seq in self.floor..floor {
                let (word, mask) = Self::bit(seq);
                self.applied[word] &= !mask;
                self.not_found[word] &= !mask;
            }
        }
        self.floor = floor;
    }

    fn in_window(&self, seq: u64) -> bool {
        seq >= self.floor && seq - self.floor < WINDOW
    }

    /// Marks `seq` applied (and how it was answered).
    fn record(&mut self, seq: u64, found: bool) {
        let (word, mask) = Self::bit(seq);
        self.applied[word] |= mask;
        if found {
            self.not_found[word] &= !mask;
        } else {
            self.not_found[word] |= mask;
        }
    }
}

/// A bitmap of `seq % WINDOW`, as DEDUP_WINDOW carries it: big-endian words.
fn encode_bitmap(words: &[u64; WORDS]) -> [u8; (WINDOW / 8) as usize] {
    let mut bitmap = [0u8; (WINDOW / 8) as usize];
    for (chunk, word) in bitmap.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    bitmap
}

/// Whether `seq`'s bit is set in a bitmap encoded by `encode_bitmap`.
fn bitmap_has(bitmap: &[u8], seq: u64) -> bool {
    // Word `slot / 64` is stored big-endian, so bit b of it is in byte 7 − b / 8.
    let slot = (seq % WINDOW) as usize;
    let byte = slot / 64 * 8 + 7 - slot % 64 / 8;
    bitmap.get(byte).is_some_and(|b| b & (1 << (slot % 8)) != 0)
}

/// Per-client write windows of one partition, at most `MAX_CLIENTS` of them.
#[derive(Default)]
pub struct WriteDedup {
    clients: HashMap<u32, ClientWindow>,
    now: Option<Instant>,
    last_sweep: Option<Instant>,
    pub counters: DedupCounters,
}

/// What the bound on clients did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DedupCounters {
    /// Windows of clients silent for `IDLE_EXPIRY`, forgotten to make room.
    pub expired: u64,
    /// Writes of new clients refused for want of room (answered ERROR).
    pub refused_full: u64,
    /// Windows a migration brought for new clients, dropped for want of room.
    pub dropped_windows: u64,
}

impl WriteDedup {
    /// The time from now on (the partition's; it reads no clock).
    pub fn set_time(&mut self, now: Instant) {
        self.now = Some(now);
    }

    /// Whether `client` has a window here or one fits, forgetting silent clients if need
    /// be. Below the bound this is one comparison: no lookup on the write path.
    fn has_room_for(&mut self, client: u32) -> bool {
        if self.clients.len() < MAX_CLIENTS || self.clients.contains_key(&client) {
            return true;
        }
        let Some(now) = self.now else {
            return false;
        };
        if self
            .last_sweep
            .is_some_and(|at| now.duration_since(at) < SWEEP_EVERY)
        {
            return false;
        }
        self.last_sweep = Some(now);
        let before = self.clients.len();
        self.clients.retain(|_, window| {
            window
                .last_seen
                .is_some_and(|seen| now.duration_since(seen) < IDLE_EXPIRY)
        });
        self.counters.expired += (before - self.clients.len()) as u64;
        self.clients.len() < MAX_CLIENTS
    }

    /// Decides whether the write `(client, seq)` runs, and records it if so.
    pub fn admit(&mut self, client: u32, seq: u64, oldest_gap: u32) -> DedupVerdict {
        let gap = u64::from(oldest_gap);
        if gap >= WINDOW || gap > seq {
            return DedupVerdict::OutOfWindow;
        }
        let floor = seq - gap;
        if !self.has_room_for(client) {
            self.counters.refused_full += 1;
            return DedupVerdict::Full;
        }
        let now = self.now;
        let window = self
            .clients
            .entry(client)
            .or_insert_with(|| ClientWindow::new(floor));
        window.last_seen = now;
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
            DedupVerdict::Duplicate {
                found: window.not_found[word] & mask == 0,
            }
        } else {
            window.applied[word] |= mask;
            DedupVerdict::Apply
        }
    }

    /// The write `(client, seq)` just admitted was a DELETE that found no key: a repeat is
    /// answered NOT_FOUND too.
    pub fn found_nothing(&mut self, client: u32, seq: u64) {
        if let Some(window) = self.clients.get_mut(&client) {
            if window.in_window(seq) {
                window.record(seq, false);
            }
        }
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Records that `(client, seq)` was applied elsewhere (by a migration's source), and
    /// whether it found its key (`found` is false for a DELETE answered NOT_FOUND), so a
    /// retransmission arriving here is answered as it was there, without applying it again.
    pub fn remember(&mut self, client: u32, seq: u64, found: bool) {
        if !self.has_room_for(client) {
            self.counters.dropped_windows += 1;
            return;
        }
        let now = self.now;
        // Without a window, the client's floor is unknown: it may still await any earlier
        // write in the window, so none of them may look stale.
        let window = self
            .clients
            .entry(client)
            .or_insert_with(|| ClientWindow::new(seq.saturating_sub(WINDOW - 1)));
        window.last_seen = window.last_seen.or(now);
        if seq < window.floor {
            return; // The client has its answer already.
        }
        if seq - window.floor >= WINDOW {
            window.advance(seq - (WINDOW - 1));
        }
        window.record(seq, found);
    }

    /// Every client's window, in client order (so the messages that carry them are the
    /// same in every run).
    pub fn windows(&self) -> impl Iterator<Item = EncodedWindow> + '_ {
        let mut clients: Vec<_> = self.clients.iter().collect();
        clients.sort_unstable_by_key(|(&client, _)| client);
        clients.into_iter().map(|(&client, window)| EncodedWindow {
            client,
            floor: window.floor,
            applied: encode_bitmap(&window.applied),
            not_found: encode_bitmap(&window.not_found),
        })
    }

    /// Adds another server's window of `client` (from [`WriteDedup::windows`]): bitmaps
    /// of `seq % WINDOW` from `floor` on, of the writes applied and of the DELETEs among
    /// them that found no key.
    pub fn merge_window(&mut self, client: u32, floor: u64, applied: &[u8], not_found: &[u8]) {
        // The client told the other server its floor, so it awaits nothing older; but it
        // may await anything from the floor on, applied or not.
        if !self.has_room_for(client) {
            self.counters.dropped_windows += 1;
            return;
        }
        self.clients
            .entry(client)
            .or_insert_with(|| ClientWindow::new(floor))
            .advance(floor);
        // Saturating: a hostile floor near u64::MAX must not overflow.
        for seq in floor..floor.saturating_add(WINDOW) {
            if bitmap_has(applied, seq) {
                self.remember(client, seq, !bitmap_has(not_found, seq));
            }
        }
    }
}

/// One client's window as DEDUP_WINDOW carries it: bitmaps of `seq % WINDOW` in big-endian
/// 64-bit words.
pub struct EncodedWindow {
    pub client: u32,
    pub floor: u64,
    pub applied: [u8; (WINDOW / 8) as usize],
    pub not_found: [u8; (WINDOW / 8) as usize],
}

impl EncodedWindow {
    /// The DEDUP_WINDOW message that carries it.
    pub fn message(&self) -> dataplane::wire::StreamMessage<'_> {
        dataplane::wire::StreamMessage::DedupWindow {
            client: self.client,
            floor: self.floor,
            bitmap: &self.applied,
            not_found: &self.not_found,
        }
    }
}

/// A client write: the shard it changes here, and its identity for dedup.
#[derive(Debug, Clone, Copy)]
pub struct WriteId {
    pub shard: u16,
    pub client: u32,
    pub seq: u64,
}

/// Applies a client write the dedup admitted, a PUT (`value` Some) or a DELETE, and returns
/// its answer: status (a DELETE that found no key is NOT_FOUND) and version. A DELETE leaves
/// a tombstone while a migration needs one (`keep_tombstone`) and removes the key otherwise.
/// The change and its identity go to `journal` as one record, and a DELETE that found
/// nothing to `dedup`, so a repeat is answered as this copy was.
pub fn apply_write(
    (table, dedup, journal): (&mut kv::Partition, &mut WriteDedup, &mut Journal),
    id: WriteId,
    hash: u64,
    key: &[u8],
    value: Option<&[u8]>,
    keep_tombstone: bool,
) -> (Status, u64) {
    let WriteId { shard, client, seq } = id;
    let Some(value) = value else {
        let (version, found) = if keep_tombstone {
            table.delete(hash, key)
        } else {
            table.remove(hash, key)
        };
        if !found {
            dedup.found_nothing(client, seq);
        }
        journal.record(&Record::Delete {
            shard,
            client,
            seq,
            version,
            found,
            tombstone: keep_tombstone,
            key,
        });
        return (if found { Status::Ok } else { Status::NotFound }, version);
    };
    let version = table.put(hash, key, value);
    journal.record(&Record::Put {
        shard,
        client,
        seq,
        version,
        key,
        value,
    });
    (Status::Ok, version)
}

/// How a repeated write is answered: as its first copy was, version 0 (the version it got
/// is not kept).
pub fn repeat_answer(found: bool) -> (Status, u64) {
    (if found { Status::Ok } else { Status::NotFound }, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_once_and_rejects_stale_copies() {
        let mut d = WriteDedup::default();
        assert_eq!(d.admit(1, 10, 0), DedupVerdict::Apply);
        assert_eq!(d.admit(1, 10, 0), DedupVerdict::Duplicate { found: true });
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
        for w in source.windows() {
            destination.merge_window(w.client, w.floor, &w.applied, &w.not_found);
        }
        destination.remember(3, 12, true);
        for seq in [6, 9, 12] {
            assert_eq!(
                destination.admit(3, seq, (seq - 6) as u32),
                DedupVerdict::Duplicate { found: true },
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
        for w in source.windows() {
            destination.merge_window(w.client, w.floor, &w.applied, &w.not_found);
        }
        assert_eq!(destination.admit(3, 101, 1), DedupVerdict::Apply);
        assert_eq!(
            destination.admit(3, 105, 4),
            DedupVerdict::Duplicate { found: true }
        );
        assert_eq!(destination.admit(3, 99, 0), DedupVerdict::Stale);
    }

    #[test]
    fn remembered_write_does_not_make_earlier_writes_stale() {
        let mut destination = WriteDedup::default();
        destination.remember(4, 50, true);
        assert_eq!(destination.admit(4, 48, 0), DedupVerdict::Apply);
        assert_eq!(
            destination.admit(4, 50, 2),
            DedupVerdict::Duplicate { found: true }
        );
    }

    #[test]
    fn hostile_floors_and_sequence_numbers_do_not_overflow() {
        let mut d = WriteDedup::default();
        d.merge_window(1, u64::MAX - 3, &[0xFF; (WINDOW / 8) as usize], &[]);
        d.remember(2, u64::MAX, true);
        d.remember(2, 0, true);
        assert_eq!(
            d.admit(2, u64::MAX, 0),
            DedupVerdict::Duplicate { found: true }
        );
    }

    #[test]
    fn window_wraps_without_forgetting_recent_writes() {
        let mut d = WriteDedup::default();
        for seq in 0..3 * WINDOW {
            let gap = seq.min(WINDOW / 2) as u32;
            assert_eq!(d.admit(7, seq, gap), DedupVerdict::Apply, "seq {seq}");
            assert_eq!(
                d.admit(7, seq, gap),
                DedupVerdict::Duplicate { found: true }
            );
            if seq >= 1 {
                let earlier = seq - 1;
                let expected = if earlier < seq - u64::from(gap) {
                    DedupVerdict::Stale
                } else {
                    DedupVerdict::Duplicate { found: true }
                };
                assert_eq!(d.admit(7, earlier, 0), expected);
            }
        }
    }

    #[test]
    fn a_repeated_delete_is_answered_as_its_first_copy_was() {
        let mut source = WriteDedup::default();
        assert_eq!(source.admit(5, 20, 0), DedupVerdict::Apply);
        source.found_nothing(5, 20);
        assert_eq!(source.admit(5, 21, 1), DedupVerdict::Apply);
        assert_eq!(
            source.admit(5, 20, 0),
            DedupVerdict::Duplicate { found: false }
        );
        assert_eq!(
            source.admit(5, 21, 1),
            DedupVerdict::Duplicate { found: true }
        );
        // Carried to a migration's destination, by window and by entry.
        let mut destination = WriteDedup::default();
        for w in source.windows() {
            destination.merge_window(w.client, w.floor, &w.applied, &w.not_found);
        }
        destination.remember(5, 22, false);
        assert_eq!(
            destination.admit(5, 20, 0),
            DedupVerdict::Duplicate { found: false }
        );
        assert_eq!(
            destination.admit(5, 21, 1),
            DedupVerdict::Duplicate { found: true }
        );
        assert_eq!(
            destination.admit(5, 22, 2),
            DedupVerdict::Duplicate { found: false }
        );
    }

    #[test]
    fn a_full_table_forgets_only_clients_silent_long_enough() {
        let start = Instant::now();
        let mut d = WriteDedup::default();
        d.set_time(start);
        for client in 0..MAX_CLIENTS as u32 {
            assert_eq!(d.admit(client, 1, 0), DedupVerdict::Apply);
        }
        // Everyone is recent: a new client is refused, and nobody is forgotten.
        d.set_time(start + IDLE_EXPIRY / 2);
        assert_eq!(
            d.admit(1, 2, 0),
            DedupVerdict::Apply,
            "a known client goes on"
        );
        assert_eq!(d.admit(u32::MAX, 1, 0), DedupVerdict::Full);
        assert_eq!(d.counters.refused_full, 1);
        // Later, everyone but client 1 has been silent long enough.
        d.set_time(start + IDLE_EXPIRY + SWEEP_EVERY);
        assert_eq!(d.admit(u32::MAX, 1, 0), DedupVerdict::Apply);
        assert_eq!(d.counters.expired, MAX_CLIENTS as u64 - 1);
        assert_eq!(d.admit(1, 2, 0), DedupVerdict::Duplicate { found: true });
    }
}
