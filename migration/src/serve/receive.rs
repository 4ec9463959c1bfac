//! The receiving end of migration streams: INIT taken or refused, messages applied in
//! order and acknowledged, ended streams re-acknowledged, unknown streams answered, and
//! acknowledgements handed to the migrations they belong to.

use super::*;
use crate::chain::Place;
use crate::incoming::{Applied, Incoming};
use crate::returning::Returning;
use crate::stream::{self, Delivery};
use dataplane::wire::{self, HeaderRepr, Op, Status, StreamMessage};
use dataplane::Packet;
use kv::Partition;
use std::net::SocketAddrV4;

/// A migration stream that has terminated, remembered to re-acknowledge retransmissions.
pub(super) struct FinishedStream {
    source: SocketAddrV4,
    shard: u16,
    stream_id: u32,
    /// The last message applied; None for a migration in a replica learned had ended from
    /// its records (`Adopted`): all of it was applied, whatever the source's numbering.
    last_applied: Option<u64>,
    /// `Error` for a migration whose ABORT came before its INIT: nothing of it is here,
    /// and a late INIT of it must not start it.
    status: Status,
}

/// A migration in that ended here (`Adopted`), as a replica learns it from its records: a
/// successor taking over the chain's head answers the source's TERMINATE, sent again after
/// its predecessor died before acknowledging it.
pub(super) fn adopted_stream(shard: u16, origin: StreamOrigin) -> FinishedStream {
    FinishedStream {
        source: origin.source,
        shard,
        stream_id: origin.stream_id,
        last_applied: None,
        status: Status::Ok,
    }
}

/// Remembers an ended stream, to answer its retransmissions as it was answered.
pub(super) fn finish_stream(finished: &mut Vec<FinishedStream>, stream: FinishedStream) {
    if finished.len() == MAX_FINISHED_STREAMS {
        // Their sources were answered long ago; re-acks are for recent ones.
        finished.remove(0);
    }
    finished.push(stream);
}

/// Ended incoming streams a partition still re-acknowledges (one or two per migration).
pub(super) const MAX_FINISHED_STREAMS: usize = 64;

/// Whether a partition can take a migration in (its INIT).
pub(super) enum InitFit {
    Take,
    /// Not yet: a return to the same source is still ending. The source resends INIT.
    Wait,
    /// Never: answered `ERROR`, and the source calls the migration off.
    Refuse,
}

impl PartitionServer {
    /// Whether `shard` can take in a migration from `src`: only into a partition that holds
    /// nothing of the shard for anyone else, so a migration never merges into live data.
    pub(super) fn init_fit(shard: &Shard, src: SocketAddrV4, source_shard: u16) -> InitFit {
        let empty = shard.table.is_fresh();
        let fit = |free: bool| if free { InitFit::Take } else { InitFit::Refuse };
        match &shard.role {
            // The shard left this partition and comes back (A→B→A): what it held was freed
            // at the hand-over.
            Role::Owned | Role::Moved { .. } => fit(empty),
            Role::Returning(agent) if !agent.is_done() => InitFit::Wait,
            Role::Returning(_) => fit(empty),
            // The same source core started over with a new stream: the old one is dead (an
            // INIT that arrived after its abort was answered), and what it left here is a
            // copy of the source's data no client has seen.
            Role::Incoming(agent) => fit(agent.source == src && agent.source_shard == source_shard),
            Role::Outgoing(_) | Role::Damaged(_) => InitFit::Refuse,
        }
    }

    /// A migration stream message for a shard migrating in (or, after an abort, coming
    /// back): applied in order, then acknowledged in place.
    pub(super) fn on_stream_message(&mut self, packet: &mut Packet) -> Result<Action, DropReason> {
        if !self.answers_migrations() {
            // Only the head takes part: an `ERROR` from a follower (it holds migrations as
            // records only) would tell a source that nothing of its migration is here.
            return Err(DropReason::NotARequest);
        }
        let src = packet.src;
        let (header, body) = wire::parse_header(packet.payload()).map_err(DropReason::Malformed)?;
        let message = StreamMessage::parse(header.op, body).map_err(DropReason::Malformed)?;
        let stream_id = header.client;
        let incarnation = self.incarnation;
        let completed_group = match message {
            StreamMessage::GroupComplete { group } => Some(group),
            _ => None,
        };
        let is_init = matches!(message, StreamMessage::Init { .. }) && header.seq == 0;
        let position = self.shards.iter().position(|s| s.id == header.shard);
        let ours = position.is_some_and(|index| match &self.shards[index].role {
            Role::Incoming(agent) => agent.source == src && agent.stream_id == stream_id,
            Role::Outgoing(agent) => agent.accepts_return(src, stream_id),
            _ => false,
        });
        if !ours {
            if let Some(done) = self
                .finished_streams
                .iter()
                .find(|f| f.source == src && f.shard == header.shard && f.stream_id == stream_id)
            {
                let (last, status) = (done.last_applied.unwrap_or(header.seq), done.status);
                stream::acknowledge(packet, &header, last, status, incarnation);
                return Ok(Action::Ready);
            }
        }
        let (index, new_shard) = match position {
            Some(index) => (index, false),
            // A shard is added only by an INIT it takes (and removed again if refused):
            // anything else for a shard not here must not leave an empty one to serve.
            None if !is_init => {
                return Ok(self.answer_unknown_stream(
                    packet,
                    &header,
                    message == StreamMessage::Abort,
                ))
            }
            None if self.shards.len() >= MAX_SHARDS => return Err(DropReason::TooManyShards),
            None => {
                self.shards.push(Shard {
                    id: header.shard,
                    table: Partition::new(&self.map, self.partition, 0),
                    role: Role::Owned,
                    sweep_cursor: 0,
                });
                (self.shards.len() - 1, true)
            }
        };
        let shard = &mut self.shards[index];
        if !ours {
            // A new migration in: only as its first message.
            let (
                true,
                StreamMessage::Init {
                    source_shard,
                    partitions,
                    group_bits,
                    protocol,
                    ..
                },
            ) = (is_init, message)
            else {
                return Ok(self.answer_unknown_stream(
                    packet,
                    &header,
                    message == StreamMessage::Abort,
                ));
            };
            let same_layout = u32::from(partitions) == self.map.partitions()
                && group_bits == self.map.layout().group_bits();
            match Self::init_fit(shard, src, source_shard) {
                InitFit::Take if same_layout => {}
                InitFit::Wait => return Err(DropReason::NotARequest),
                InitFit::Take | InitFit::Refuse => {
                    if new_shard {
                        self.shards.pop();
                    }
                    self.counters.refused_inits += 1;
                    stream::acknowledge(packet, &header, header.seq, Status::Error, incarnation);
                    return Ok(Action::Ready);
                }
            }
            match &shard.role {
                Role::Returning(agent) => self.migration.returned.add(&agent.stats()),
                Role::Incoming(_) => shard.table = Partition::new(&self.map, self.partition, 0),
                _ => {}
            }
            self.journal.record(&Record::Shard {
                shard: header.shard,
                event: ShardEvent::Incoming(StreamOrigin {
                    source: src,
                    shard: source_shard,
                    stream_id,
                    protocol,
                }),
            });
            shard.role = Role::Incoming(Box::new(Incoming::new(
                src,
                source_shard,
                stream_id,
                &self.map,
                self.partition,
            )));
        }
        let incoming = match &mut shard.role {
            Role::Incoming(agent) => {
                agent.heard(self.now);
                &mut **agent
            }
            Role::Outgoing(agent) => {
                // What comes back is windows, entries and the end; nothing else applies.
                let returnable = matches!(
                    message,
                    StreamMessage::DedupWindow { .. }
                        | StreamMessage::Data { .. }
                        | StreamMessage::Terminate { .. }
                );
                if !returnable {
                    return Err(DropReason::NotARequest);
                }
                agent.returned_mut().expect("accepts_return checked")
            }
            _ => unreachable!("checked above"),
        };
        match incoming.receiver().classify(header.seq) {
            Delivery::Apply => {
                let applied = incoming.apply(
                    &message,
                    &mut shard.table,
                    &mut self.dedup,
                    &mut self.journal,
                    self.map.layout(),
                    header.shard,
                    &mut self.extra,
                );
                incoming.receiver().applied();
                let last = header.seq;
                if applied != Applied::Continue {
                    finish_stream(
                        &mut self.finished_streams,
                        FinishedStream {
                            source: src,
                            shard: header.shard,
                            stream_id,
                            last_applied: Some(last),
                            status: Status::Ok,
                        },
                    );
                }
                match (&mut shard.role, applied) {
                    (Role::Outgoing(agent), Applied::Terminated) => agent.finish_return(),
                    (Role::Incoming(incoming), Applied::Terminated | Applied::Aborted) => {
                        self.migration.add_incoming(incoming);
                        shard.role = if applied == Applied::Terminated {
                            self.journal.record(&Record::Shard {
                                shard: shard.id,
                                event: ShardEvent::Adopted,
                            });
                            Role::Owned
                        } else {
                            let origin = incoming.origin();
                            Role::Returning(Box::new(Returning::new(
                                origin,
                                &self.map,
                                self.partition,
                            )))
                        };
                    }
                    _ => {}
                }
                // Parked reads whose group is complete (or the whole shard) are served now
                // rather than when their pull answers; after an abort they go to the source.
                let layout = self.map.layout();
                if applied != Applied::Continue {
                    self.release_parked(|_| true);
                } else if let Some(group) = completed_group {
                    self.release_parked(|h| layout.group_of(h) == group);
                }
                // A message held because it came early is next now: applied (with those
                // after it), and this acknowledgement covers them.
                let last = match self.take_held(index) {
                    Some(mut next) => match self.on_stream_message(&mut next) {
                        Ok(Action::Ready) => wire::parse_header(next.payload())
                            .map_or(last, |(ack, _)| ack.seq.max(last)),
                        _ => last,
                    },
                    None => last,
                };
                stream::acknowledge(packet, &header, last, Status::Ok, incarnation);
                Ok(Action::Ready)
            }
            Delivery::Gap => {
                incoming.receiver().hold(header.seq, packet);
                match incoming.receiver().last_applied() {
                    Some(last) => {
                        stream::acknowledge(packet, &header, last, Status::Ok, incarnation);
                        Ok(Action::Ready)
                    }
                    None => Ok(Action::Consumed),
                }
            }
            Delivery::Duplicate => match incoming.receiver().last_applied() {
                Some(last) => {
                    stream::acknowledge(packet, &header, last, Status::Ok, incarnation);
                    Ok(Action::Ready)
                }
                None => Ok(Action::Consumed),
            },
        }
    }

    /// A stream message (not its INIT) for a stream this partition does not know: an
    /// ABORT whose INIT never arrived, or a partition that restarted and lost the stream
    /// (or a message that overtook its INIT: the source tells that case by this
    /// partition's incarnation, unchanged since INIT's acknowledgement).
    pub(super) fn answer_unknown_stream(
        &mut self,
        packet: &mut Packet,
        header: &HeaderRepr,
        is_abort: bool,
    ) -> Action {
        self.counters.unknown_streams += 1;
        if is_abort {
            // Nothing of this migration is here: say so, and the source takes the shard
            // back at once. The stream is over: its INIT, if it comes late, is answered
            // the same and starts nothing.
            finish_stream(
                &mut self.finished_streams,
                FinishedStream {
                    source: packet.src,
                    shard: header.shard,
                    stream_id: header.client,
                    last_applied: Some(header.seq),
                    status: Status::Error,
                },
            );
        }
        stream::acknowledge(packet, header, header.seq, Status::Error, self.incarnation);
        Action::Ready
    }

    /// The message a shard's incoming stream (or a return to it) held and can apply next.
    pub(super) fn take_held(&mut self, index: usize) -> Option<Box<Packet>> {
        match &mut self.shards.get_mut(index)?.role {
            Role::Incoming(agent) => agent.receiver().take_next(),
            Role::Outgoing(agent) => agent.returned_mut()?.receiver().take_next(),
            _ => None,
        }
    }

    /// MIGRATE_TAKEOVER: the destination chain's new head took over a migration out of
    /// this partition. Answered `OK` when the migration restarts its stream towards it,
    /// `ERROR` when no such migration is left to settle. Only a chain's head (or a lone
    /// server) answers: a replica that holds the migration only as records knows nothing
    /// of its state, and its `ERROR` would make the new head drop what it holds.
    pub(super) fn on_takeover(&mut self, packet: &mut Packet, header: &HeaderRepr) -> Action {
        if !self.answers_migrations() {
            return Action::Consumed;
        }
        let from = packet.src;
        let taken = self
            .shards
            .iter_mut()
            .find(|s| s.id == header.shard)
            .is_some_and(|shard| match &mut shard.role {
                Role::Outgoing(agent) if agent.plan().ticket.stream_id() == header.client => {
                    agent.take_over_destination(from)
                }
                _ => false,
            });
        if !taken {
            self.counters.unknown_streams += 1;
        }
        let status = if taken { Status::Ok } else { Status::Error };
        stream::acknowledge(packet, header, 0, status, self.incarnation);
        Action::Ready
    }

    /// A lone server, or its chain's head: the replica that runs migrations.
    fn answers_migrations(&self) -> bool {
        matches!(self.chain_place(), None | Some(Place::Head))
    }

    /// An acknowledgement goes to the migration it belongs to. A destination's probe (MIGRATE_PROBE's acknowledgement) that no migration here
    /// knows is answered `ERROR`: this partition no longer sends that stream (it
    /// restarted).
    pub(super) fn on_ack(&mut self, packet: &mut Packet, header: &HeaderRepr) -> Action {
        let known = self.give_ack(packet.src, header);
        if known || header.op != Op::MigrateProbeAck || header.status != Status::Ok {
            return Action::Consumed;
        }
        self.counters.unknown_streams += 1;
        stream::acknowledge(packet, header, header.seq, Status::Error, self.incarnation);
        Action::Ready
    }

    /// Gives an acknowledgement to the migration it belongs to; false if none knows it.
    fn give_ack(&mut self, src: SocketAddrV4, header: &HeaderRepr) -> bool {
        let now = self.now;
        if header.op == Op::MigrateTakeoverAck {
            // An answer, not an acknowledgement of any stream: taken for one by the return
            // the same migration starts here, it acknowledged the return's first message.
            for shard in &mut self.shards {
                if let Role::Incoming(agent) = &mut shard.role {
                    agent.on_takeover_answer(src, header);
                }
            }
            return true;
        }
        let mut known = false;
        for shard in &mut self.shards {
            match &mut shard.role {
                Role::Outgoing(agent) => {
                    known |= agent.sends_to(src, header);
                    agent.on_ack(src, header, now);
                }
                Role::Returning(agent) => agent.on_ack(src, header, now),
                Role::Incoming(agent) if header.op == Op::MigrateProbeAck => {
                    agent.on_probe_answer(src, header);
                }
                _ => {}
            }
        }
        known
    }
}
