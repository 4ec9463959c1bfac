//! Multi-key requests: each item decided on its own, like a single-key request.

use super::*;
use crate::dedup::{apply_write, repeat_answer, DedupVerdict, WriteId};
use crate::incoming::DestinationRule;
use crate::outgoing::SourceRule;
use dataplane::wire::{
    self, Flags, HeaderRepr, KeyOp, MultiReplyWriter, ReplyItem, Status, HEADER_LEN,
};
use kv::{key_hash, Lookup, Partition};
use std::net::SocketAddrV4;

/// How a multi-key request is answered.
pub(super) enum MultiOutcome {
    /// The reply is in the scratch buffer, this long; the items in `forward` go to the
    /// source.
    Built {
        len: usize,
        forward: u16,
    },
    /// Every item this server was asked for goes to the source (these).
    Forward(u16),
    Moved(SocketAddrV4, u16),
    Status(Status),
    /// Every item was a write the client already has its answer to.
    Stale,
}

/// What a partition does with one item of a multi-key request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ItemFate {
    Serve,
    /// A double-read half for a key the destination does not have: the source's half is
    /// the answer.
    Defer,
    /// Not here yet, or ownership is moving: the client asks again.
    RetryLater,
    /// The source owns it (a destination steered to by a false positive).
    Forward,
    /// Answered ERROR: a key of another partition, outside the client's dedup window, or
    /// to be passed on in a request too long to carry the reply-to trailer.
    Refuse,
    /// A write older than the client's floor: not answered.
    Stale,
}

/// Reads one item (writes are applied by `apply_write`).
pub(super) fn read_item<'t>(table: &'t Partition, item: wire::MultiItem<'_>) -> ReplyItem<'t> {
    // Keys of another partition were refused before (`ItemFate::Refuse`).
    match table.get(item.key_hash, item.key) {
        Lookup::Found { version, value } => ReplyItem {
            status: Status::Ok,
            version,
            value,
        },
        Lookup::Deleted { version } => ReplyItem {
            status: Status::NotFound,
            version,
            value: &[],
        },
        Lookup::Absent => ReplyItem {
            status: Status::NotFound,
            version: 0,
            value: &[],
        },
    }
}

impl PartitionServer {
    /// Serves the selected items of a multi-key request. Each item is decided on its own,
    /// like a single-key request: served, deferred (a double-read half the destination does
    /// not have), retried later, or passed to the source. A write item's identity for
    /// dedup is `seq + index`, so any split of a request is applied at most once per item.
    pub(super) fn serve_multi(
        &mut self,
        shard_index: usize,
        header: &HeaderRepr,
        items: wire::MultiRequestItems<'_>,
        request_len: usize,
    ) -> Result<MultiOutcome, DropReason> {
        self.counters.multi_requests += 1;
        self.counters.multi_keys += u64::from(items.serve().count_ones());
        if items.iter().any(|item| key_hash(item.key) != item.key_hash) {
            return Err(DropReason::HashMismatch);
        }
        let layout = self.map.layout();
        let is_read = items.op == KeyOp::Get;
        let is_delete = items.op == KeyOp::Delete;
        let forwarded = header.flags.contains(Flags::FORWARDED);
        let is_half = |i: usize| items.halves() & (1 << i) != 0;
        let mut fates = [ItemFate::Serve; wire::MAX_KEYS];
        let mut reply_flags = Flags::default();
        if self.shards[shard_index].steered_before_init(header.flags) {
            self.migration.multi_retry_later += 1;
            return Ok(MultiOutcome::Status(Status::RetryLater));
        }
        let keep_tombstone = self.shards[shard_index].keeps_tombstones();
        let shard_id = self.shards[shard_index].id;
        let Shard { table, role, .. } = &mut self.shards[shard_index];
        match role {
            Role::Owned => {}
            Role::Damaged(lost) => {
                if items
                    .selected()
                    .any(|(_, item)| lost.contains(layout.group_of(item.key_hash)))
                {
                    self.counters.data_lost_replies += 1;
                    return Ok(MultiOutcome::Status(Status::DataLost));
                }
            }
            Role::Moved { to, shard } => return Ok(MultiOutcome::Moved(*to, *shard)),
            // As for single keys: passed here by someone else, never passed on twice.
            Role::Returning(_) if forwarded => {
                self.migration.multi_retry_later += 1;
                return Ok(MultiOutcome::Status(Status::RetryLater));
            }
            // A client that followed MOVED here: send it back to the source.
            Role::Returning(agent) if !header.flags.contains(Flags::REDIRECTED) => {
                return Ok(MultiOutcome::Moved(agent.origin.source, agent.origin.shard))
            }
            // Steered here: the source decides (it asks to retry what is not back yet).
            Role::Returning(_) => fates = [ItemFate::Forward; wire::MAX_KEYS],
            Role::Outgoing(agent) => {
                for (i, item) in items.selected() {
                    let group = layout.group_of(item.key_hash);
                    fates[i] = match agent.rule(group, is_read, is_half(i), forwarded) {
                        SourceRule::Serve => ItemFate::Serve,
                        SourceRule::DataLost => {
                            self.counters.data_lost_replies += 1;
                            return Ok(MultiOutcome::Status(Status::DataLost));
                        }
                        SourceRule::Moved => {
                            let plan = agent.plan();
                            return Ok(MultiOutcome::Moved(
                                plan.destination,
                                plan.destination_shard,
                            ));
                        }
                        // A write for a group handed over is the destination's to apply.
                        SourceRule::Hold | SourceRule::RetryLater => ItemFate::RetryLater,
                    };
                }
            }
            Role::Incoming(agent) => {
                reply_flags = Flags::FROM_DESTINATION;
                for (i, item) in items.selected() {
                    let group = layout.group_of(item.key_hash);
                    let present = || !matches!(table.get(item.key_hash, item.key), Lookup::Absent);
                    let op = (is_read, is_delete);
                    fates[i] = match agent.rule(group, op, is_half(i), forwarded, present) {
                        DestinationRule::Serve => ItemFate::Serve,
                        DestinationRule::NotMigrated => {
                            agent.sample_miss(item.key_hash, item.key);
                            self.migration.not_migrated += 1;
                            ItemFate::Defer
                        }
                        DestinationRule::Pull => {
                            // Not parked: the pull brings the key, the client asks again.
                            agent.puller.want(item.key_hash, item.key, false, false);
                            ItemFate::RetryLater
                        }
                        DestinationRule::RetryLater => ItemFate::RetryLater,
                        DestinationRule::Forward => ItemFate::Forward,
                    };
                }
            }
        }
        // A copy passed on carries the reply-to trailer, and must still fit one frame.
        let can_forward = request_len + wire::TRAILER_LEN <= wire::MAX_PAYLOAD;
        for (i, item) in items.selected() {
            if !table.owns(item.key_hash) || (fates[i] == ItemFate::Forward && !can_forward) {
                fates[i] = ItemFate::Refuse;
            }
        }
        let (mut applied, mut repeated_not_found) = (0u16, 0u16);
        if !is_read {
            for (i, item) in items.selected() {
                if fates[i] != ItemFate::Serve {
                    continue;
                }
                let (Some(seq), Some(gap)) = (
                    header.seq.checked_add(i as u64),
                    header.oldest_gap.checked_add(i as u32),
                ) else {
                    fates[i] = ItemFate::Refuse;
                    continue;
                };
                match self.dedup.admit(header.client, seq, gap) {
                    DedupVerdict::Apply => {
                        applied |= 1 << i;
                        if let Role::Outgoing(agent) = role {
                            agent.dirtied(layout.group_of(item.key_hash), item.key_hash, item.key);
                        }
                    }
                    DedupVerdict::Duplicate { found } => {
                        self.counters.duplicate_writes += 1;
                        repeated_not_found |= u16::from(!found) << i;
                    }
                    // The client has its answer: nothing to say about this item.
                    DedupVerdict::Stale => fates[i] = ItemFate::Stale,
                    DedupVerdict::OutOfWindow | DedupVerdict::Full => fates[i] = ItemFate::Refuse,
                }
            }
        }
        let mut writer = MultiReplyWriter::new(items.op, &mut self.scratch[HEADER_LEN..])
            .expect("scratch holds a multi-key reply header");
        let (mut deferred, mut forward, mut retry_later) = (0u16, 0u16, false);
        for (i, item) in items.selected() {
            let answer = |status| ReplyItem {
                status,
                version: 0,
                value: &[],
            };
            let reply = match fates[i] {
                ItemFate::Serve if applied & (1 << i) != 0 => {
                    // The item's identity for dedup (checked above to fit).
                    let seq = header.seq + i as u64;
                    let id = WriteId {
                        shard: shard_id,
                        client: header.client,
                        seq,
                    };
                    let value = (items.op == KeyOp::Put).then_some(item.value);
                    let store = (&mut *table, &mut self.dedup, &mut self.journal);
                    let (status, version) =
                        apply_write(store, id, item.key_hash, item.key, value, keep_tombstone);
                    if let Role::Outgoing(agent) = role {
                        agent.applied_write(header.client, seq, status == Status::Ok);
                    }
                    ReplyItem {
                        status,
                        version,
                        value: &[],
                    }
                }
                ItemFate::Serve if is_read => read_item(table, item),
                ItemFate::Serve => {
                    let (status, version) = repeat_answer(repeated_not_found & (1 << i) == 0);
                    ReplyItem {
                        status,
                        version,
                        value: &[],
                    }
                }
                ItemFate::Defer => {
                    deferred |= 1 << i;
                    answer(Status::NotFound)
                }
                ItemFate::RetryLater => {
                    retry_later = true;
                    answer(Status::RetryLater)
                }
                ItemFate::Refuse => {
                    self.counters.error_replies += 1;
                    answer(Status::Error)
                }
                ItemFate::Forward => {
                    forward |= 1 << i;
                    continue;
                }
                ItemFate::Stale => continue,
            };
            if writer.push(i, reply).is_err() {
                // The values do not fit one frame: the client must ask for fewer keys.
                return Ok(MultiOutcome::Status(Status::Error));
            }
        }
        if retry_later {
            self.migration.multi_retry_later += 1;
        }
        let Ok(body_len) = writer.finish(items.halves(), deferred) else {
            // Nothing answered here: every item goes to the source, or was stale.
            return Ok(if forward != 0 {
                MultiOutcome::Forward(forward)
            } else {
                MultiOutcome::Stale
            });
        };
        let mut reply_header = header.reply(Status::Ok);
        reply_header.flags = reply_header.flags.with(reply_flags);
        HeaderRepr::emit(
            &reply_header,
            &mut wire::Header::new_unchecked(&mut self.scratch[..HEADER_LEN]),
        );
        Ok(MultiOutcome::Built {
            len: HEADER_LEN + body_len,
            forward,
        })
    }

    /// Passes the items in `selection` of a multi-key request to the source of the shard
    /// migrating in; the reply goes straight to `requester`.
    pub(super) fn forward_selection(
        &mut self,
        shard_index: usize,
        header: &HeaderRepr,
        selection: u16,
        len: usize,
        buf: &mut [u8],
        requester: SocketAddrV4,
    ) -> Result<Action, DropReason> {
        let to = match &self.shards[shard_index].role {
            Role::Incoming(agent) => (agent.source, agent.source_shard),
            Role::Returning(agent) => (agent.origin.source, agent.origin.shard),
            _ => return Err(DropReason::NotARequest),
        };
        let halves =
            u16::from_be_bytes([buf[wire::MULTI_HALVES_AT], buf[wire::MULTI_HALVES_AT + 1]]);
        buf[wire::MULTI_SERVE_AT..wire::MULTI_SERVE_AT + 2]
            .copy_from_slice(&selection.to_be_bytes());
        buf[wire::MULTI_HALVES_AT..wire::MULTI_HALVES_AT + 2]
            .copy_from_slice(&(halves & selection).to_be_bytes());
        self.forward(header, len, buf, requester, to)
    }
}
