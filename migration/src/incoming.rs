//! The destination side of a migration, for one partition of one shard: applies the
//! source's stream strictly in order and knows which groups it has been handed, which
//! decides how the partition serves requests for them (see `serve.rs`).

use crate::dedup::{DedupVerdict, WriteDedup};
use dataplane::wire::{self, Flags, HeaderRepr, LateWrite, Op, Reply, Status, StreamMessage};
use dataplane::Packet;
use kv::{key_hash, Partition, PartitionMap, PutOutcome};
use std::net::SocketAddrV4;
use std::ops::Range;

use crate::stream::StreamReceiver;

/// Counters of one incoming migration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncomingStats {
    pub groups_started: u64,
    pub items_applied: u64,
    /// Migrated entries older than what the destination already had (a newer write won).
    pub items_stale: u64,
    pub late_writes: u64,
    /// Stream messages that parsed but made no sense (wrong group, bad hash): dropped.
    pub rejected: u64,
    pub finished: bool,
}

impl IncomingStats {
    pub fn add(&mut self, s: &IncomingStats) {
        self.groups_started += s.groups_started;
        self.items_applied += s.items_applied;
        self.items_stale += s.items_stale;
        self.late_writes += s.late_writes;
        self.rejected += s.rejected;
        self.finished |= s.finished;
    }
}

pub struct Incoming {
    /// The source core's address (the stream's peer) and the shard there.
    pub source: SocketAddrV4,
    pub source_shard: u16,
    groups: Range<u32>,
    handed_over: Vec<bool>,
    receiver: StreamReceiver,
    stats: IncomingStats,
}

/// What applying a stream message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Continue,
    /// TERMINATE: the destination now owns every group of the shard.
    Terminated,
}

impl Incoming {
    pub fn new(
        source: SocketAddrV4,
        source_shard: u16,
        map: &PartitionMap,
        partition: u32,
    ) -> Self {
        let groups = map.groups_of(partition);
        Incoming {
            source,
            source_shard,
            handed_over: vec![false; groups.len()],
            groups,
            receiver: StreamReceiver::default(),
            stats: IncomingStats::default(),
        }
    }

    pub fn stats(&self) -> IncomingStats {
        self.stats
    }

    pub fn receiver(&mut self) -> &mut StreamReceiver {
        &mut self.receiver
    }

    /// Whether the source has handed this group over (its writes apply here).
    pub fn has_group(&self, group: u32) -> bool {
        self.handed_over
            .get(group.wrapping_sub(self.groups.start) as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Applies the next in-order stream message. Late writes are answered through `out`.
    pub fn apply(
        &mut self,
        message: &StreamMessage<'_>,
        table: &mut Partition,
        dedup: &mut WriteDedup,
        layout: kv::GroupLayout,
        destination_shard: u16,
        out: &mut Vec<Box<Packet>>,
    ) -> Applied {
        match *message {
            StreamMessage::Init {
                source_clock,
                entries,
                ..
            } => {
                table.advance_clock(source_clock);
                table.reserve(entries as usize);
            }
            StreamMessage::DedupWindow {
                client,
                floor,
                bitmap,
            } => dedup.merge_window(client, floor, bitmap),
            StreamMessage::DedupEntries { entries } => {
                for (client, seq) in wire::dedup_entries(entries) {
                    dedup.remember(client, seq);
                }
            }
            StreamMessage::GroupStart { group, floor_clock } => {
                table.advance_clock(floor_clock);
                match self
                    .handed_over
                    .get_mut(group.wrapping_sub(self.groups.start) as usize)
                {
                    Some(slot) => {
                        if !*slot {
                            self.stats.groups_started += 1;
                        }
                        *slot = true;
                    }
                    None => self.stats.rejected += 1,
                }
            }
            StreamMessage::GroupComplete { .. } => {}
            StreamMessage::Data { group, items, .. } => {
                for item in wire::data_items(items) {
                    let hash = key_hash(item.key);
                    if layout.group_of(hash) != group || !table.owns(hash) {
                        self.stats.rejected += 1;
                        continue;
                    }
                    match table.put_if_newer(hash, item.key, item.value, item.version) {
                        PutOutcome::Applied => self.stats.items_applied += 1,
                        PutOutcome::Stale => self.stats.items_stale += 1,
                    }
                }
            }
            StreamMessage::LateWrite(late) => {
                self.stats.late_writes += 1;
                if let Some(reply) =
                    apply_late_write(&late, table, dedup, destination_shard, layout, self)
                {
                    out.push(reply);
                }
            }
            StreamMessage::Terminate => {
                self.stats.finished = true;
                return Applied::Terminated;
            }
        }
        Applied::Continue
    }
}

/// Applies a write the source passed on and builds the client's reply (None: a stale copy,
/// or a message that makes no sense, which is counted).
fn apply_late_write(
    late: &LateWrite<'_>,
    table: &mut Partition,
    dedup: &mut WriteDedup,
    shard: u16,
    layout: kv::GroupLayout,
    incoming: &mut Incoming,
) -> Option<Box<Packet>> {
    let hash = key_hash(late.key);
    if hash != late.key_hash || !table.owns(hash) || !incoming.has_group(layout.group_of(hash)) {
        incoming.stats.rejected += 1;
        return None;
    }
    let op = if late.value.is_some() {
        Op::PutReply
    } else {
        Op::DeleteReply
    };
    let (status, version) = match dedup.admit(late.client, late.seq, late.oldest_gap) {
        DedupVerdict::Apply => match late.value {
            Some(value) => (Status::Ok, table.put(hash, late.key, value)),
            None => {
                let (version, existed) = table.delete(hash, late.key);
                (
                    if existed {
                        Status::Ok
                    } else {
                        Status::NotFound
                    },
                    version,
                )
            }
        },
        DedupVerdict::Duplicate => (Status::Ok, 0),
        DedupVerdict::Stale => return None,
        DedupVerdict::OutOfWindow => (Status::Error, 0),
    };
    let header = HeaderRepr {
        op,
        flags: Flags::FROM_DESTINATION,
        status,
        shard,
        seq: late.seq,
        key_hash: hash,
        client: late.client,
        oldest_gap: late.oldest_gap,
    };
    let reply = if late.value.is_some() {
        Reply::Put { version }
    } else {
        Reply::Delete { version }
    };
    let mut packet = Packet::new_boxed();
    let len = wire::emit_reply(&header, &reply, packet.buffer_mut()).expect("a write reply fits");
    packet.set_len(len);
    packet.dst = late.reply_to;
    Some(packet)
}
