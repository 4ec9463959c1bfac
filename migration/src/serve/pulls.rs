//! Pulls between a destination and its source: single keys (parked reads), Rocksteady's
//! bulk transfer, and replaying what arrived.

use super::*;
use crate::bulk;
use crate::incoming::Incoming;
use crate::pull;
use dataplane::wire::{
    self, BulkPull, BulkPullReply, HeaderRepr, Op, Protocol, PullBatch, Status, HEADER_LEN,
};
use dataplane::Packet;
use kv::{Partition, PutOutcome};
use std::net::SocketAddrV4;

/// Most reads parked at once; beyond, the client is asked to retry.
pub(super) const MAX_PARKED: usize = 4096;

impl PartitionServer {
    /// The source answers a destination's pull from its frozen copy.
    pub(super) fn answer_pull(
        &mut self,
        header: &HeaderRepr,
        len: usize,
        buf: &mut [u8],
    ) -> Result<Action, DropReason> {
        // The answer overwrites the request: read the keys from a copy.
        let body = &mut self.scratch[..len - HEADER_LEN];
        body.copy_from_slice(&buf[HEADER_LEN..len]);
        let keys = PullBatch::parse(body).map_err(DropReason::Malformed)?;
        let Some(shard) = self.shards.iter_mut().find(|s| s.id == header.shard) else {
            return Err(DropReason::NotARequest);
        };
        let Role::Outgoing(agent) = &mut shard.role else {
            // Not migrating (any more): the destination has everything by now.
            return Err(DropReason::NotARequest);
        };
        let reply_len = pull::answer(header, &keys, &shard.table, buf);
        agent.answered_pull(u64::from(keys.count), reply_len);
        Ok(Action::Reply(reply_len, None))
    }

    /// A destination applies the source's answer to its pull and serves the reads parked
    /// on those keys.
    pub(super) fn on_pull_reply(
        &mut self,
        src: SocketAddrV4,
        header: &HeaderRepr,
        len: usize,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        let batch = PullBatch::parse(&buf[HEADER_LEN..len]).map_err(DropReason::Malformed)?;
        let (table, agent, shard) = incoming_in(&mut self.shards, src, header)?;
        let journal = &mut self.journal;
        agent.puller.received(len);
        let mut released = Vec::new();
        for item in batch.items() {
            let hash = kv::key_hash(item.key);
            if !table.owns(hash) || !wire::entry_fits(item.key, item.value.unwrap_or(&[])) {
                agent.reject_item();
                continue;
            }
            if table.put_if_newer(hash, item.key, item.value, item.version) == PutOutcome::Applied {
                journal.record(&Record::Data {
                    shard,
                    version: item.version,
                    key: item.key,
                    value: item.value,
                });
            }
            if let Some(answered) = agent.puller.answered(hash) {
                if answered.hot {
                    agent.announce(hash);
                }
                released.push(answered.hash);
            }
        }
        self.release_parked(|h| released.contains(&h));
        Ok(())
    }

    /// The source answers a bulk pull from its frozen copy, as its migration budget allows.
    pub(super) fn answer_bulk_pull(
        &mut self,
        src: SocketAddrV4,
        header: &HeaderRepr,
        len: usize,
        buf: &mut [u8],
    ) -> Result<Action, DropReason> {
        let pull = BulkPull::parse(&buf[HEADER_LEN..len]).map_err(DropReason::Malformed)?;
        let shard = self
            .shards
            .iter_mut()
            .find(|s| s.id == header.shard)
            .ok_or(DropReason::NotARequest)?;
        // Only the Rocksteady destination reads the frozen copy (and spends its budget).
        let Role::Outgoing(agent) = &mut shard.role else {
            return Err(DropReason::NotARequest);
        };
        if agent.plan().destination != src || agent.plan().protocol != Protocol::Rocksteady {
            return Err(DropReason::NotARequest);
        }
        let budget_left = agent.bulk_budget_left(self.now);
        let answer = bulk::answer(header, &pull, &shard.table, budget_left, buf);
        agent.answered_bulk(pull.from, &answer);
        Ok(Action::Reply(answer.len, None))
    }

    /// A destination queues a bulk-pull answer for replay (`replay_migrations`).
    pub(super) fn on_bulk_pull_reply(
        &mut self,
        src: SocketAddrV4,
        header: &HeaderRepr,
        body: &[u8],
    ) -> Result<(), DropReason> {
        let reply = BulkPullReply::parse(body).map_err(DropReason::Malformed)?;
        let now = self.now;
        self.incoming_from(src, header)?
            .1
            .bulk
            .as_mut()
            .ok_or(DropReason::NotARequest)?
            .on_reply(header.status, &reply, now);
        Ok(())
    }

    /// The destination has everything: the source ends the stream. Answered every time
    /// (the destination asks until answered), also after the source finished.
    pub(super) fn on_bulk_done(
        &mut self,
        src: SocketAddrV4,
        header: &HeaderRepr,
        buf: &mut [u8],
    ) -> Result<Action, DropReason> {
        let shard = self
            .shards
            .iter_mut()
            .find(|s| s.id == header.shard)
            .ok_or(DropReason::NotARequest)?;
        match &mut shard.role {
            // Only the destination may end the transfer: it is the one with the data.
            Role::Outgoing(agent) if agent.plan().destination == src => {
                if !agent.bulk_done(&shard.table) {
                    return Ok(Action::Consumed);
                }
            }
            Role::Moved { to, .. } if *to == src => {}
            _ => return Err(DropReason::NotARequest),
        }
        let reply = HeaderRepr {
            op: Op::BulkDoneReply,
            ..header.reply(Status::Ok)
        };
        let len = wire::emit_with(&reply, buf, |_| Ok(0)).expect("a header fits");
        Ok(Action::Reply(len, None))
    }

    /// The migration in from `source`'s `shard` whose stream id an answer (`reply`) echoes.
    pub(super) fn incoming_from(
        &mut self,
        source: SocketAddrV4,
        reply: &HeaderRepr,
    ) -> Result<(&mut Partition, &mut Incoming), DropReason> {
        incoming_in(&mut self.shards, source, reply).map(|(table, agent, _)| (table, agent))
    }

    /// Rocksteady: replays about `max_items` bulk-pulled entries, after the turn's client
    /// requests (the caller decides how much a turn may spend), and serves the reads parked
    /// on groups that completed. Returns the entries replayed.
    #[inline]
    pub fn replay_migrations(&mut self, max_items: usize) -> usize {
        if !self
            .shards
            .iter()
            .any(|s| matches!(s.role, Role::Incoming(_)))
        {
            return 0;
        }
        self.replay_incoming(max_items)
    }

    #[inline(never)]
    pub(super) fn replay_incoming(&mut self, max_items: usize) -> usize {
        let layout = self.map.layout();
        let mut items = 0;
        let mut complete = Vec::new();
        for shard in &mut self.shards {
            if let Role::Incoming(agent) = &mut shard.role {
                let budget = max_items.saturating_sub(items);
                let journal = &mut self.journal;
                let replayed = agent.replay(&mut shard.table, journal, shard.id, layout, budget);
                items += replayed.items;
                complete.extend(replayed.complete);
            }
        }
        if !complete.is_empty() {
            self.release_parked(|h| {
                let group = layout.group_of(h);
                complete.iter().any(|groups| groups.contains(&group))
            });
        }
        items
    }

    /// Serves again the parked reads `which` selects; their replies go out on the next poll.
    pub(super) fn release_parked(&mut self, which: impl Fn(u64) -> bool) {
        if self.parked.is_empty() {
            return;
        }
        let (released, kept) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|(hash, _)| which(*hash));
        self.parked = kept;
        let released: Vec<(u64, Box<Packet>)> = released;
        for (_, mut packet) in released {
            // A read that still cannot be served parks itself again.
            if self.handle(&mut packet) {
                self.extra.push(packet);
            }
        }
    }
}

/// The shard migrating in from `source` that `reply` answers (by its source shard and
/// stream id): its table, its agent and its id here.
fn incoming_in<'s>(
    shards: &'s mut [Shard],
    source: SocketAddrV4,
    reply: &HeaderRepr,
) -> Result<(&'s mut Partition, &'s mut Incoming, u16), DropReason> {
    shards
        .iter_mut()
        .find_map(|s| match &mut s.role {
            Role::Incoming(agent)
                if agent.source == source
                    && agent.source_shard == reply.shard
                    && agent.stream_id == reply.client =>
            {
                Some((&mut s.table, &mut **agent, s.id))
            }
            _ => None,
        })
        .ok_or(DropReason::NotARequest)
}
