//! Single-key requests: who answers them by the partition's role for the shard (owner,
//! migration source or destination, moved, returning, damaged), and the replies built
//! in place.

use super::chain::FollowerRule;
use super::*;
use crate::dedup::{apply_write, repeat_answer, DedupVerdict, WriteId};
use crate::incoming::{DestinationRule, Incoming};
use crate::outgoing::{OwnedLateWrite, SourceRule};
use dataplane::wire::{self, Flags, HeaderRepr, KeyOp, Op, Reply, Request, Status, HEADER_LEN};
use dataplane::Packet;
use kv::{key_hash, Lookup};
use std::net::SocketAddrV4;

/// Fulva: now and then a destination reply carries the partition's progress and the hot
/// keys pulled early, so clients stop double-reading what is here. Returns the new length.
pub(super) fn announce_progress(agent: &mut Incoming, len: usize, buf: &mut [u8]) -> usize {
    let Some((migrated_upto, hot)) = agent.progress_due() else {
        return len;
    };
    let room = wire::MAX_PAYLOAD.min(buf.len());
    let Ok(new_len) = wire::append_progress(&mut buf[..room], len, migrated_upto, &hot) else {
        return len; // No room after a large value: the next reply announces it.
    };
    let mut header = wire::Header::new_unchecked(&mut buf[..HEADER_LEN]);
    let flags = header.flags().with(Flags::PROGRESS);
    header.set_flags(flags);
    new_len
}

/// Where `part`, a slice of `buf`, lies in it: keys and values are kept as ranges of the
/// buffer, which the reply overwrites.
pub(super) fn range_in(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// A write of an entry longer than any migration message could carry (`MAX_ENTRY_LEN`).
pub(super) fn request_too_long(request: &Request<'_>) -> bool {
    match request {
        Request::Put { key, value } => !wire::entry_fits(key, value),
        Request::Multi(items) => {
            items.op == KeyOp::Put
                && items
                    .iter()
                    .any(|item| !wire::entry_fits(item.key, item.value))
        }
        Request::Get { .. } | Request::Delete { .. } => false,
    }
}

impl PartitionServer {
    pub(super) fn handle_payload(&mut self, packet: &mut Packet) -> Result<Action, DropReason> {
        let (src, local) = (packet.src, packet.dst);
        let (len, buf) = packet.payload_and_buffer();
        let (header, _) = wire::parse_header(&buf[..len]).map_err(DropReason::Malformed)?;
        match header.op {
            Op::ChainAppend => return self.on_chain_append(packet, &header),
            Op::ChainAppendAck => return self.on_chain_ack(packet, &header),
            _ => {}
        }
        if header.op == Op::MigrateTakeover {
            return Ok(self.on_takeover(packet, &header));
        }
        if header.op.is_migration_stream() {
            return self.on_stream_message(packet);
        }
        if header.op.is_migration_stream_ack() || header.op.is_switch_control_ack() {
            return Ok(self.on_ack(packet, &header));
        }
        if header.op == Op::Pull {
            return self.answer_pull(&header, len, buf);
        }
        if header.op == Op::PullReply {
            self.on_pull_reply(src, &header, len, buf)?;
            return Ok(Action::Consumed);
        }
        match header.op {
            Op::BulkPull => return self.answer_bulk_pull(src, &header, len, buf),
            Op::BulkPullReply => {
                self.on_bulk_pull_reply(src, &header, &buf[HEADER_LEN..len])?;
                return Ok(Action::Consumed);
            }
            Op::BulkDone => return self.on_bulk_done(src, &header, buf),
            Op::BulkDoneReply => {
                self.incoming_from(src, &header)?
                    .1
                    .bulk
                    .as_mut()
                    .ok_or(DropReason::NotARequest)?
                    .on_done_reply();
                return Ok(Action::Consumed);
            }
            _ => {}
        }
        if !header.op.is_key_addressed() {
            return Err(DropReason::NotARequest);
        }
        // A forwarded request ends with the address its reply goes to.
        let (request_len, reply_to) = if header.flags.contains(Flags::FORWARDED) {
            let (request, to) = wire::split_reply_to(&buf[..len]).map_err(DropReason::Malformed)?;
            (request.len(), Some(to))
        } else {
            (len, None)
        };
        let requester = reply_to.unwrap_or(src);
        let body = &buf[HEADER_LEN.min(request_len)..request_len];
        let request = Request::parse(&header, body).map_err(DropReason::Malformed)?;
        if request_too_long(&request) {
            self.counters.oversized_writes += 1;
            return Ok(Action::Reply(self.error_reply(&header, buf), reply_to));
        }
        let shard_index = self.shards.iter().position(|s| s.id == header.shard);
        // A replica that holds nothing yet (a learner, or one not told its chain) asks
        // again later whatever the shard: it may be the shard's next tail.
        if let Some(rule) = self.follower_rule(shard_index, &header, reply_to.is_some()) {
            match rule {
                FollowerRule::Serve => {}
                FollowerRule::ToHead(head) => {
                    let shard = header.shard;
                    return Ok(Action::Reply(
                        self.moved_reply(&header, head, shard, buf),
                        reply_to,
                    ));
                }
                FollowerRule::ToTail(tail) => {
                    return self.forward(&header, len, buf, requester, (tail, header.shard))
                }
                FollowerRule::RetryLater => {
                    return Ok(Action::Reply(
                        self.status_reply(&header, Status::RetryLater, buf),
                        reply_to,
                    ));
                }
            }
        }
        let Some(shard_index) = shard_index else {
            return Ok(Action::Reply(self.error_reply(&header, buf), reply_to));
        };
        let range_of = |s: &[u8]| range_in(buf, s);
        let (hash, key, value) = match request {
            Request::Get { key } => (self.checked_hash(&header, key)?, range_of(key), None),
            Request::Put { key, value } => (
                self.checked_hash(&header, key)?,
                range_of(key),
                Some(range_of(value)),
            ),
            Request::Delete { key } => (self.checked_hash(&header, key)?, range_of(key), None),
            Request::Multi(items) => {
                return match self.serve_multi(shard_index, &header, items, request_len)? {
                    MultiOutcome::Built {
                        len: total,
                        forward,
                    } => {
                        if forward == 0 {
                            buf[..total].copy_from_slice(&self.scratch[..total]);
                            return Ok(Action::Reply(total, reply_to));
                        }
                        // Answered in part here: the answer goes out on its own, the rest
                        // of the request to the source.
                        let mut reply = Packet::new_boxed();
                        reply.buffer_mut()[..total].copy_from_slice(&self.scratch[..total]);
                        reply.set_len(total);
                        (reply.src, reply.dst) = (local, requester);
                        self.extra.push(reply);
                        self.forward_selection(shard_index, &header, forward, len, buf, requester)
                    }
                    MultiOutcome::Forward(selection) => {
                        self.forward_selection(shard_index, &header, selection, len, buf, requester)
                    }
                    MultiOutcome::Moved(to, shard) => Ok(Action::Reply(
                        self.moved_reply(&header, to, shard, buf),
                        reply_to,
                    )),
                    MultiOutcome::Status(status) => {
                        if status == Status::Error {
                            self.counters.error_replies += 1;
                        }
                        Ok(Action::Reply(
                            self.status_reply(&header, status, buf),
                            reply_to,
                        ))
                    }
                    MultiOutcome::Stale => Err(DropReason::StaleWrite),
                };
            }
        };
        match header.op {
            Op::Get => self.counters.gets += 1,
            Op::Put => self.counters.puts += 1,
            _ => self.counters.deletes += 1,
        }
        if !self.shards[shard_index].table.owns(hash) {
            return Ok(Action::Reply(self.error_reply(&header, buf), reply_to));
        }
        let group = self.map.layout().group_of(hash);
        let is_read = header.op == Op::Get;
        let is_delete = header.op == Op::Delete;
        let double_read = header.flags.contains(Flags::DOUBLE_READ);
        let mut reply_flags = Flags::default();
        if self.shards[shard_index].steered_before_init(header.flags) {
            self.migration.retry_later += 1;
            return Ok(Action::Reply(
                self.status_reply(&header, Status::RetryLater, buf),
                reply_to,
            ));
        }
        match &mut self.shards[shard_index].role {
            Role::Owned => {}
            Role::Damaged(lost) if lost.contains(group) => {
                return Ok(Action::Reply(self.data_lost_reply(&header, buf), reply_to));
            }
            Role::Damaged(_) => {}
            Role::Moved { to, shard } => {
                let (to, shard) = (*to, *shard);
                return Ok(Action::Reply(
                    self.moved_reply(&header, to, shard, buf),
                    reply_to,
                ));
            }
            // A double read's half meant for the destination (REDIRECTED) is no source
            // half here: a client tracking a migration that has since ended takes it for
            // the destination's answer, so it is answered as a plain request (MOVED).
            Role::Outgoing(agent) => match agent.rule(
                group,
                is_read,
                double_read && !header.flags.contains(Flags::REDIRECTED),
                header.flags.contains(Flags::FORWARDED),
            ) {
                SourceRule::Serve => {}
                SourceRule::DataLost => {
                    return Ok(Action::Reply(self.data_lost_reply(&header, buf), reply_to));
                }
                SourceRule::Moved => {
                    let (to, shard) = (agent.plan().destination, agent.plan().destination_shard);
                    return Ok(Action::Reply(
                        self.moved_reply(&header, to, shard, buf),
                        reply_to,
                    ));
                }
                SourceRule::RetryLater => {
                    self.migration.retry_later += 1;
                    return Ok(Action::Reply(
                        self.status_reply(&header, Status::RetryLater, buf),
                        reply_to,
                    ));
                }
                SourceRule::Hold => {
                    // Frozen here: the destination applies it and answers the client.
                    let write = OwnedLateWrite {
                        reply_to: requester,
                        client: header.client,
                        seq: header.seq,
                        oldest_gap: header.oldest_gap,
                        key_hash: hash,
                        key: buf[key].to_vec(),
                        value: value.map(|v| buf[v].to_vec()),
                    };
                    if agent.late_write(group, write) {
                        return Ok(Action::Consumed);
                    }
                    self.migration.retry_later += 1;
                    return Ok(Action::Reply(
                        self.status_reply(&header, Status::RetryLater, buf),
                        reply_to,
                    ));
                }
            },
            Role::Incoming(_) => {
                reply_flags = Flags::FROM_DESTINATION;
                let Shard { table, role, .. } = &mut self.shards[shard_index];
                let Role::Incoming(agent) = role else {
                    unreachable!("matched above")
                };
                let forwarded = header.flags.contains(Flags::FORWARDED);
                let present = || !matches!(table.get(hash, &buf[key.clone()]), Lookup::Absent);
                let op = (is_read, is_delete);
                match agent.rule(group, op, double_read, forwarded, present) {
                    DestinationRule::Serve => {}
                    DestinationRule::NotMigrated => {
                        agent.sample_miss(hash, &buf[key.clone()]);
                        self.migration.not_migrated += 1;
                        return Ok(Action::Reply(
                            self.not_migrated_reply(&header, buf),
                            reply_to,
                        ));
                    }
                    DestinationRule::Pull if self.parked.len() < MAX_PARKED => {
                        agent.puller.want(hash, &buf[key.clone()], true, false);
                        return Ok(Action::Park(hash));
                    }
                    DestinationRule::Pull | DestinationRule::RetryLater => {
                        // Passed here by the source while the group's hand-over is on its
                        // way (NetMigrate), or the source still owns the shard: ask again.
                        self.migration.retry_later += 1;
                        return Ok(Action::Reply(
                            self.status_reply(&header, Status::RetryLater, buf),
                            reply_to,
                        ));
                    }
                    DestinationRule::Forward => {
                        // The switch steered it here by a false positive (or the group is
                        // still the source's): the source owns it.
                        let to = (agent.source, agent.source_shard);
                        return self.forward(&header, len, buf, requester, to);
                    }
                }
            }
            Role::Returning(_) if reply_to.is_some() => {
                // Passed here by someone else: never passed on twice.
                self.migration.retry_later += 1;
                return Ok(Action::Reply(
                    self.status_reply(&header, Status::RetryLater, buf),
                    reply_to,
                ));
            }
            Role::Returning(agent) if !header.flags.contains(Flags::REDIRECTED) => {
                // A client that followed MOVED here: send it back to the source.
                let (to, shard) = (agent.origin.source, agent.origin.shard);
                return Ok(Action::Reply(
                    self.moved_reply(&header, to, shard, buf),
                    reply_to,
                ));
            }
            Role::Returning(agent) => {
                // Steered here (the switch, or a Fulva double read): the source decides
                // (it asks to retry what it does not have back yet).
                let to = (agent.origin.source, agent.origin.shard);
                return self.forward(&header, len, buf, requester, to);
            }
        }
        let mut len = match value {
            _ if is_read => self.serve_get(shard_index, &header, hash, key, reply_flags, buf),
            value => {
                match self.serve_write(shard_index, &header, hash, key, value, reply_flags, buf)? {
                    Some(len) => len,
                    None => return Ok(Action::Reply(self.error_reply(&header, buf), reply_to)),
                }
            }
        };
        if let Role::Incoming(agent) = &mut self.shards[shard_index].role {
            len = announce_progress(agent, len, buf);
        }
        Ok(Action::Reply(len, reply_to))
    }

    /// Passes a request to the server that owns it; the reply goes straight to `requester`.
    pub(super) fn forward(
        &mut self,
        header: &HeaderRepr,
        len: usize,
        buf: &mut [u8],
        requester: SocketAddrV4,
        (to, shard): (SocketAddrV4, u16),
    ) -> Result<Action, DropReason> {
        self.migration.forwarded += 1;
        let mut forwarded = *header;
        forwarded.flags = header.flags.with(Flags::FORWARDED);
        forwarded.shard = shard;
        HeaderRepr::emit(&forwarded, &mut wire::Header::new_unchecked(&mut buf[..]));
        let len =
            wire::append_reply_to(&mut buf[..], len, requester).map_err(DropReason::Malformed)?;
        Ok(Action::Forward(len, to))
    }

    pub(super) fn serve_get(
        &mut self,
        shard_index: usize,
        header: &HeaderRepr,
        hash: u64,
        key: std::ops::Range<usize>,
        flags: Flags,
        buf: &mut [u8],
    ) -> usize {
        let table = &self.shards[shard_index].table;
        let (status, version, value) = get_answer(table.get(hash, &buf[key]));
        self.counters.get_hits += u64::from(status == Status::Ok);
        let mut reply_header = header.reply(status);
        reply_header.flags = reply_header.flags.with(flags);
        let reply = Reply::Get { version, value };
        wire::emit_reply(&reply_header, &reply, buf).expect("a stored value fits a reply")
    }

    /// Applies a PUT (value Some) or DELETE; None when the client broke its window or no
    /// room is left for a new client's window (answered ERROR).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn serve_write(
        &mut self,
        shard_index: usize,
        header: &HeaderRepr,
        hash: u64,
        key: std::ops::Range<usize>,
        value: Option<std::ops::Range<usize>>,
        flags: Flags,
        buf: &mut [u8],
    ) -> Result<Option<usize>, DropReason> {
        let is_put = value.is_some();
        let verdict = self
            .dedup
            .admit(header.client, header.seq, header.oldest_gap);
        let shard = &mut self.shards[shard_index];
        let keep_tombstone = shard.keeps_tombstones();
        let (status, version) = match verdict {
            DedupVerdict::Apply => {
                let id = WriteId {
                    shard: shard.id,
                    client: header.client,
                    seq: header.seq,
                };
                let store = (&mut shard.table, &mut self.dedup, &mut self.journal);
                let value = value.map(|value| &buf[value]);
                let answer = apply_write(store, id, hash, &buf[key.clone()], value, keep_tombstone);
                let found = answer.0 == Status::Ok;
                if let Role::Outgoing(agent) = &mut shard.role {
                    agent.applied_write(header.client, header.seq, found);
                    agent.dirtied(self.map.layout().group_of(hash), hash, &buf[key]);
                }
                answer
            }
            DedupVerdict::Duplicate { found } => {
                self.counters.duplicate_writes += 1;
                repeat_answer(found)
            }
            DedupVerdict::Stale => return Err(DropReason::StaleWrite),
            DedupVerdict::OutOfWindow | DedupVerdict::Full => return Ok(None),
        };
        let mut reply_header = header.reply(status);
        reply_header.flags = reply_header.flags.with(flags);
        let reply = if is_put {
            Reply::Put { version }
        } else {
            Reply::Delete { version }
        };
        Ok(Some(
            wire::emit_reply(&reply_header, &reply, buf).expect("a write reply fits"),
        ))
    }

    pub(super) fn checked_hash(&self, header: &HeaderRepr, key: &[u8]) -> Result<u64, DropReason> {
        let hash = key_hash(key);
        if hash == header.key_hash {
            Ok(hash)
        } else {
            Err(DropReason::HashMismatch)
        }
    }

    pub(super) fn moved_reply(
        &mut self,
        header: &HeaderRepr,
        to: SocketAddrV4,
        shard: u16,
        buf: &mut [u8],
    ) -> usize {
        self.migration.moved_replies += 1;
        let reply_header = HeaderRepr {
            op: if header.op.is_multi() {
                Op::PutReply
            } else {
                header.op.reply()
            },
            ..header.reply(Status::Moved)
        };
        wire::emit_reply(&reply_header, &Reply::Moved { to, shard }, buf)
            .expect("a moved reply fits")
    }

    pub(super) fn not_migrated_reply(&mut self, header: &HeaderRepr, buf: &mut [u8]) -> usize {
        let mut reply_header = header.reply(Status::NotFound);
        reply_header.flags = reply_header
            .flags
            .with(Flags::FROM_DESTINATION)
            .with(Flags::NOT_MIGRATED);
        let reply = Reply::Get {
            version: 0,
            value: &[],
        };
        wire::emit_reply(&reply_header, &reply, buf).expect("an empty reply fits")
    }

    pub(super) fn status_reply(
        &mut self,
        header: &HeaderRepr,
        status: Status,
        buf: &mut [u8],
    ) -> usize {
        let reply = match header.op.reply() {
            wire::Op::GetReply => Reply::Get {
                version: 0,
                value: &[],
            },
            wire::Op::DeleteReply => Reply::Delete { version: 0 },
            _ => Reply::Put { version: 0 },
        };
        let reply_header = HeaderRepr {
            // Multi-key answers without items use a single-key shaped body.
            op: if header.op.is_multi() {
                wire::Op::PutReply
            } else {
                header.op.reply()
            },
            ..header.reply(status)
        };
        wire::emit_reply(&reply_header, &reply, buf).expect("a status reply fits")
    }

    pub(super) fn data_lost_reply(&mut self, header: &HeaderRepr, buf: &mut [u8]) -> usize {
        self.counters.data_lost_replies += 1;
        self.status_reply(header, Status::DataLost, buf)
    }

    pub(super) fn error_reply(&mut self, header: &HeaderRepr, buf: &mut [u8]) -> usize {
        self.counters.error_replies += 1;
        self.status_reply(header, Status::Error, buf)
    }
}
