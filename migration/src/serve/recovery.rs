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

/// A shard's migration the replay has seen start and not end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interrupted {
    In,
    Out,
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
        let mut interrupted: Vec<(u16, Interrupted)> = Vec::new();
        let mut records = Records::new(log);
        for record in records.by_ref() {
            recovery.records += 1;
            if record == Record::Checkpoint {
                // A compacted log: the whole state follows.
                server = PartitionServer::new(map, partition, &[], capacity);
                interrupted.clear();
                continue;
            }
            if !server.replay(&record, &mut interrupted) {
                recovery.orphans += 1;
            }
        }
        recovery.valid_len = records.valid_len();
        recovery.error = records.error();
        for (shard, what) in interrupted {
            recovery.interrupted += 1;
            match what {
                Interrupted::In => server.shards.retain(|s| s.id != shard),
                Interrupted::Out => {
                    let groups = map.groups_of(partition);
                    let mut lost = LostGroups::new(groups.clone());
                    groups.for_each(|group| lost.mark(group));
                    if let Some(s) = server.shards.iter_mut().find(|s| s.id == shard) {
                        s.role = Role::Damaged(Box::new(lost));
                        s.table = Partition::new(map, partition, 0);
                    }
                }
            }
        }
        recovery.shards = server.shards.len() as u32;
        server.journal = Journal::enabled();
        (server, recovery)
    }

    /// Applies one record; false when it names a shard no earlier record made.
    fn replay(&mut self, record: &Record<'_>, interrupted: &mut Vec<(u16, Interrupted)>) -> bool {
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
            Record::Shard { shard, event } => return self.replay_event(shard, event, interrupted),
            Record::Checkpoint => unreachable!("handled by recover"),
            Record::Damaged { shard, ref lost } => {
                interrupted.retain(|&(s, _)| s != shard);
                let Some(s) = self.shards.iter_mut().find(|s| s.id == shard) else {
                    return false;
                };
                s.role = Role::Damaged(Box::new(lost.clone()));
            }
        }
        true
    }

    /// The partition's whole state as a log that starts with a checkpoint: each shard's
    /// role and entries (tombstones too), and the dedup windows. Written in place of the
    /// log it compacts, it replays to the same partition.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut journal = Journal::enabled();
        journal.checkpoint();
        for shard in &self.shards {
            let id = shard.id;
            let (first, data, then) = match &shard.role {
                Role::Owned | Role::Damaged(_) => (ShardEvent::Hosted, true, None),
                Role::Moved { to, shard } => {
                    let (to, shard) = (*to, *shard);
                    (
                        ShardEvent::Hosted,
                        false,
                        Some(ShardEvent::Moved { to, shard }),
                    )
                }
                Role::Outgoing(_) => (ShardEvent::Hosted, true, Some(ShardEvent::Outgoing)),
                // Taken only once its migration ends (`Adopted`, further on in the log).
                Role::Incoming(_) | Role::Returning(_) => (ShardEvent::Incoming, true, None),
            };
            journal.shard(id, first);
            if data {
                for group in self.map.groups_of(self.partition) {
                    shard.table.for_each_in_group(group, |entry| {
                        journal.data(id, entry.version, entry.key, entry.value);
                    });
                }
            }
            if let Some(event) = then {
                journal.shard(id, event);
            }
            if let Role::Damaged(lost) = &shard.role {
                journal.damaged(id, lost);
            }
        }
        for window in self.dedup.windows() {
            journal.window(
                window.client,
                window.floor,
                &window.applied,
                &window.not_found,
            );
        }
        journal.take()
    }

    fn replay_event(
        &mut self,
        shard: u16,
        event: ShardEvent,
        interrupted: &mut Vec<(u16, Interrupted)>,
    ) -> bool {
        interrupted.retain(|&(s, _)| s != shard);
        let fresh = Partition::new(&self.map, self.partition, 0);
        let position = self.shards.iter().position(|s| s.id == shard);
        let index = match (position, event) {
            (Some(index), _) => index,
            (None, ShardEvent::Hosted | ShardEvent::Incoming) => {
                self.shards.push(Shard {
                    id: shard,
                    table: fresh,
                    role: Role::Owned,
                    sweep_cursor: 0,
                });
                return self.replay_event(shard, event, interrupted);
            }
            (None, _) => return false,
        };
        let s = &mut self.shards[index];
        match event {
            ShardEvent::Hosted | ShardEvent::Adopted | ShardEvent::Kept => s.role = Role::Owned,
            ShardEvent::Incoming => {
                s.role = Role::Owned;
                s.table = fresh;
                interrupted.push((shard, Interrupted::In));
            }
            ShardEvent::Outgoing => interrupted.push((shard, Interrupted::Out)),
            ShardEvent::Moved { to, shard: id } => {
                s.role = Role::Moved { to, shard: id };
                s.table = fresh;
            }
            ShardEvent::Released => {
                self.shards.remove(index);
            }
        }
        true
    }
}
