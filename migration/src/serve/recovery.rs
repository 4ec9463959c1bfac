//! A restarted partition server rebuilt from its log (`journal.rs`): every shard it served
//! with the writes it acknowledged, the dedup windows that keep those writes at-most-once,
//! and where shards it handed over went. A migration the crash interrupted is not resumed:
//! its other end saw a new incarnation and refuses what only one side held (DATA_LOST), so a
//! migration in is dropped (the shard is not hosted here) and a migration out leaves every
//! group of the shard refused here, never served from a copy the destination may have
//! written past.

use super::*;
use crate::journal::{LogError, Record, Records, ShardEvent};
use kv::{key_hash, Partition};

/// What a replay found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovery {
    pub records: u64,
    /// Bytes of whole, valid records: a log longer than this ends in a torn record.
    pub valid_len: usize,
    /// Why the replay stopped before the end of the bytes, if it did.
    pub error: Option<LogError>,
    /// Records about a shard no earlier record made (an inconsistent log); skipped.
    pub orphans: u64,
    /// Shards served again, and shards refused because a migration was under way.
    pub shards: u32,
    pub interrupted: u32,
}

/// Where a snapshot under way has got to: the shards still to write (by id) and the next
/// group of the first.
pub(super) struct SnapshotCursor {
    shards: Vec<u16>,
    /// The next of the first shard's groups, in `spread_order`.
    next: u32,
}

/// The `i`-th group of `count` to snapshot: groups in bit-reversed order (None for an index
/// past `count`), so that every stretch of a snapshot spreads over the whole hash range. A
/// replay inserting a snapshot's entries in key-hash order would pile them into the first
/// buckets of a table still sized for fewer keys (its homes are monotone in the hash).
fn spread_order(i: u32, count: u32) -> Option<u32> {
    let bits = count.next_power_of_two().trailing_zeros();
    let group = if bits == 0 {
        0
    } else {
        i.reverse_bits() >> (32 - bits)
    };
    (group < count).then_some(group)
}

impl Replay {
    pub(super) fn new(capacity: usize) -> Self {
        Replay {
            capacity,
            interrupted: Vec::new(),
            snapshot_open: false,
        }
    }

    /// The migrations in under way by the records so far, taken out of the replay (each
    /// shard with its `ShardEvent::Incoming`).
    pub(super) fn take_incoming(&mut self) -> Vec<(u16, StreamOrigin)> {
        let mut incoming = Vec::new();
        self.interrupted.retain(|&(shard, what)| match what {
            Interrupted::In(event) => {
                incoming.push((shard, event));
                false
            }
            Interrupted::Out => true,
        });
        incoming
    }

    /// Whether the records so far end inside a snapshot: one its writer did not finish.
    pub(super) fn snapshot_open(&self) -> bool {
        self.snapshot_open
    }

    /// Whether a migration of `shard` is under way by the records so far.
    pub(super) fn migrating(&self, shard: u16) -> bool {
        self.interrupted.iter().any(|&(s, _)| s == shard)
    }
}

/// A shard's migration the replay has seen start and not end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interrupted {
    /// A migration in, from there.
    In(StreamOrigin),
    Out,
}

/// What a replay carries from record to record.
pub(super) struct Replay {
    /// Entries a shard the log hosts is sized for, as a server sizes the shards it starts
    /// with.
    capacity: usize,
    interrupted: Vec<(u16, Interrupted)>,
    /// A snapshot began and has not ended yet (by the records so far).
    snapshot_open: bool,
}

impl PartitionServer {
    /// Partition `partition` of `map` as its log `log` left it, with its journal enabled
    /// (new changes are appended to the same log). Sized for `capacity` entries a shard.
    pub fn recover(
        map: &PartitionMap,
        partition: u32,
        capacity: usize,
        log: &[u8],
    ) -> (PartitionServer, Recovery) {
        let mut server = PartitionServer::new(map, partition, &[], capacity);
        let mut recovery = Recovery::default();
        let mut replay = Replay::new(capacity);
        let mut records = Records::new(log);
        for record in records.by_ref() {
            recovery.records += 1;
            if !server.replay(&record, &mut replay) {
                recovery.orphans += 1;
            }
        }
        recovery.valid_len = records.valid_len();
        recovery.error = records.error();
        recovery.interrupted = server.end_interrupted(replay);
        recovery.shards = server.shards.len() as u32;
        server.journal = Journal::enabled();
        (server, recovery)
    }

    /// Ends the migrations a replay saw start and not end, as a crash ended them: a
    /// migration in is dropped, one out leaves the shard refused. Returns how many.
    pub(super) fn end_interrupted(&mut self, replay: Replay) -> u32 {
        let (map, partition) = (self.map, self.partition);
        for &(shard, what) in &replay.interrupted {
            match what {
                Interrupted::In(_) => self.shards.retain(|s| s.id != shard),
                Interrupted::Out => {
                    let groups = map.groups_of(partition);
                    let mut lost = LostGroups::new(groups.clone());
                    groups.for_each(|group| lost.mark(group));
                    if let Some(s) = self.shards.iter_mut().find(|s| s.id == shard) {
                        s.role = Role::Damaged(Box::new(lost));
                        s.table = Partition::new(&map, partition, 0);
                    }
                }
            }
        }
        replay.interrupted.len() as u32
    }

    /// Applies one record; false when it names a shard no earlier record made.
    pub(super) fn replay(&mut self, record: &Record<'_>, replay: &mut Replay) -> bool {
        match *record {
            Record::Put {
                shard,
                client,
                seq,
                version,
                key,
                value,
            } => {
                self.dedup.remember(client, seq, true);
                let Some(table) = self.table_mut(shard) else {
                    return false;
                };
                table.put_if_newer(key_hash(key), key, Some(value), version);
            }
            Record::Delete {
                shard,
                client,
                seq,
                version,
                found,
                tombstone,
                key,
            } => {
                self.dedup.remember(client, seq, found);
                let Some(table) = self.table_mut(shard) else {
                    return false;
                };
                if tombstone {
                    table.put_if_newer(key_hash(key), key, None, version);
                } else {
                    table.remove(key_hash(key), key);
                    table.advance_clock(version);
                }
            }
            Record::Data {
                shard,
                version,
                key,
                value,
            } => {
                let Some(table) = self.table_mut(shard) else {
                    return false;
                };
                table.put_if_newer(key_hash(key), key, value, version);
            }
            Record::Window {
                client,
                floor,
                applied,
                not_found,
            } => self.dedup.merge_window(client, floor, applied, not_found),
            Record::Remember { client, seq, found } => self.dedup.remember(client, seq, found),
            Record::Shard { shard, event } => return self.replay_event(shard, event, true, replay),
            Record::Role { shard, event } => return self.replay_event(shard, event, false, replay),
            Record::Snapshot { begin } => replay.snapshot_open = begin,
            Record::Damaged { shard, ref lost } => {
                replay.interrupted.retain(|&(s, _)| s != shard);
                let Some(s) = self.shards.iter_mut().find(|s| s.id == shard) else {
                    return false;
                };
                s.role = Role::Damaged(Box::new(lost.clone()));
            }
        }
        true
    }

    /// Starts a snapshot of the partition in its journal (`journal.rs`, `Record::Snapshot`):
    /// each shard's role now; its entries follow a slice at a time (`snapshot_slice`), then
    /// the dedup windows. Changes made meanwhile are journaled as always, after the state
    /// they change, so the log from the snapshot's start on replays to the partition.
    pub fn begin_snapshot(&mut self) {
        self.snapshot_marker_in_chain(true);
        self.journal.record(&Record::Snapshot { begin: true });
        let mut ids: Vec<u16> = self.shards.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        for shard in &self.shards {
            // A shard is made by `Hosted` (or `Incoming`); the other roles follow it.
            let (made, then) = match &shard.role {
                Role::Owned | Role::Damaged(_) => (ShardEvent::Hosted, None),
                &Role::Moved { to, shard } => {
                    (ShardEvent::Hosted, Some(ShardEvent::Moved { to, shard }))
                }
                Role::Outgoing(_) => (ShardEvent::Hosted, Some(ShardEvent::Outgoing)),
                // Given back whole: clients still addressing it go to the source.
                Role::Returning(agent) if agent.is_done() => {
                    let (to, shard) = (agent.origin.source, agent.origin.shard);
                    (ShardEvent::Hosted, Some(ShardEvent::Moved { to, shard }))
                }
                // Taken only once its migration ends (`Adopted`, further on in the log).
                Role::Incoming(agent) => (ShardEvent::Incoming(agent.origin()), None),
                Role::Returning(agent) => (ShardEvent::Incoming(agent.origin), None),
            };
            self.journal.record(&Record::Role {
                shard: shard.id,
                event: made,
            });
            if let Some(event) = then {
                self.journal.record(&Record::Role {
                    shard: shard.id,
                    event,
                });
            }
            if let Role::Damaged(lost) = &shard.role {
                self.journal.record(&Record::Damaged {
                    shard: shard.id,
                    lost: LostGroups::clone(lost),
                });
            }
        }
        self.snapshot = Some(SnapshotCursor {
            shards: ids,
            next: 0,
        });
    }

    /// Whether a snapshot is under way.
    pub fn snapshotting(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Journals the entries of the next groups of the snapshot under way, about
    /// `max_entries` of them (whole groups), and ends it once every shard is done.
    pub fn snapshot_slice(&mut self, max_entries: usize) {
        let Some(cursor) = &mut self.snapshot else {
            return;
        };
        let groups = self.map.groups_of(self.partition);
        // Entries written and groups scanned: a slice of a sparse table ends too.
        let (mut written, mut scanned) = (0, 0);
        while written < max_entries && scanned < max_entries {
            let Some(&id) = cursor.shards.first() else {
                break;
            };
            let count = groups.len() as u32;
            if cursor.next == count.next_power_of_two() {
                cursor.shards.remove(0);
                cursor.next = 0;
                continue;
            }
            let group = spread_order(cursor.next, count).map(|g| groups.start + g);
            cursor.next += 1;
            // A shard released meanwhile has nothing left to write.
            let shard = self.shards.iter().find(|s| s.id == id);
            if let (Some(shard), Some(group)) = (shard, group) {
                let journal = &mut self.journal;
                shard.table.for_each_in_group(group, |entry| {
                    journal.record(&Record::Data {
                        shard: id,
                        version: entry.version,
                        key: entry.key,
                        value: entry.value,
                    });
                    written += 1;
                });
                scanned += 1;
            }
        }
        if cursor.shards.is_empty() {
            self.snapshot = None;
            for window in self.dedup.windows() {
                self.journal.record(&Record::Window {
                    client: window.client,
                    floor: window.floor,
                    applied: &window.applied,
                    not_found: &window.not_found,
                });
            }
            self.journal.record(&Record::Snapshot { begin: false });
            self.snapshot_marker_in_chain(false);
        }
    }

    /// A whole snapshot at once, as the log it would compact to starts (for tests and the
    /// simulator's checks): call with the journal taken.
    pub fn snapshot(&mut self) -> Vec<u8> {
        self.begin_snapshot();
        while self.snapshotting() {
            self.snapshot_slice(usize::MAX);
        }
        self.journal.take()
    }

    /// A shard's role changes; a `Shard` record (`empties`) also empties the table where
    /// the change did, a snapshot's `Role` statement never does.
    fn replay_event(
        &mut self,
        shard: u16,
        event: ShardEvent,
        empties: bool,
        replay: &mut Replay,
    ) -> bool {
        let interrupted = &mut replay.interrupted;
        if event == ShardEvent::Adopted {
            let incoming = interrupted.iter().find_map(|&(s, what)| match what {
                Interrupted::In(incoming) if s == shard => Some(incoming),
                _ => None,
            });
            if let Some(origin) = incoming {
                let done = super::receive::adopted_stream(shard, origin);
                super::receive::finish_stream(&mut self.finished_streams, done);
            }
        }
        interrupted.retain(|&(s, _)| s != shard);
        let fresh = |capacity| Partition::new(&self.map, self.partition, capacity);
        let Some(index) = self.shards.iter().position(|s| s.id == shard) else {
            // Only `Hosted` or `Incoming` makes a shard; a migration in sizes its table
            // from INIT, as it did when it ran.
            let capacity = match event {
                ShardEvent::Hosted => replay.capacity,
                ShardEvent::Incoming(_) => 0,
                _ => return false,
            };
            self.shards.push(Shard {
                id: shard,
                table: fresh(capacity),
                role: Role::Owned,
                sweep_cursor: 0,
            });
            return self.replay_event(shard, event, empties, replay);
        };
        let s = &mut self.shards[index];
        match event {
            ShardEvent::Hosted | ShardEvent::Adopted | ShardEvent::Kept => s.role = Role::Owned,
            ShardEvent::Incoming(origin) => {
                s.role = Role::Owned;
                if empties {
                    s.table = fresh(0);
                }
                interrupted.push((shard, Interrupted::In(origin)));
            }
            ShardEvent::Outgoing => interrupted.push((shard, Interrupted::Out)),
            ShardEvent::Moved { to, shard: id } => {
                s.role = Role::Moved { to, shard: id };
                s.table = fresh(0);
            }
            ShardEvent::Released => {
                self.shards.remove(index);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::spread_order;

    #[test]
    fn the_spread_order_visits_every_group_once_and_spreads_each_stretch() {
        for count in [1u32, 2, 3, 7, 8, 100, 1024] {
            let order: Vec<u32> = (0..count.next_power_of_two())
                .filter_map(|i| spread_order(i, count))
                .collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..count).collect::<Vec<_>>(), "{count}");
        }
        // The first eighth of 1024 groups covers every eighth of the range.
        let first: Vec<u32> = (0..128).filter_map(|i| spread_order(i, 1024)).collect();
        for eighth in 0..8 {
            assert_eq!(first.iter().filter(|&&g| g / 128 == eighth).count(), 16);
        }
    }
}
