//! A partition server as a replica of its chain (`chain.rs`, docs/replication.md).
//!
//! The head serves every request as a lone server would, and its journal is the chain's
//! stream; what it sends (replies, migration messages) waits until the tail has applied the
//! stream up to the moment it was made (`gate`), so nothing leaves the head that a
//! successor taking its place would not know. The other replicas apply the stream as a
//! restart replays a log, pass it on, and answer reads of keys nothing uncommitted has
//! written (CRAQ's clean reads); a dirty key's read goes to the tail, anything else to the
//! head. A follower that becomes head ends the migrations its records show under way as a
//! restarted server does.

use super::recovery::Replay;
use super::*;
use crate::chain::{Arrival, ChainConfig, Frame, Place, Replica};
use crate::journal::parse_record;
use dataplane::wire::{self, HeaderRepr, Op, Status, HEADER_LEN};
use kv::key_hash;

pub(super) struct ChainState {
    pub(super) replica: Replica,
    /// What the records a follower applied say of migrations under way.
    pub(super) replay: Replay,
    /// The first bytes of a record the frames so far carried only in part.
    partial: Vec<u8>,
    capacity: usize,
    /// The frames due this turn (kept: nothing is allocated per turn).
    frames: Vec<Frame>,
}

fn chain_state(me: SocketAddrV4, capacity: usize) -> Box<ChainState> {
    Box::new(ChainState {
        replica: Replica::new(me),
        replay: Replay::new(capacity),
        partial: Vec::new(),
        capacity,
        frames: Vec::new(),
    })
}

/// The head's journal since the last call joins its chain's stream.
fn stream_journal(journal: &mut Journal, replica: &mut Replica) {
    journal.pass_to_chain(|records| replica.append(records));
}

/// In a `ChainAppendAck`'s `oldest_gap`: the tail's learner waits for a snapshot to start
/// from; every replica passes the request up to the head.
pub const SNAPSHOT_WANTED: u32 = 1;

/// The tail's request for a snapshot, to `to` (its upstream): an acknowledgement of what it
/// holds, with the request flag.
fn snapshot_request(replica: &Replica, epoch: u32, to: SocketAddrV4) -> Box<Packet> {
    let header = HeaderRepr {
        op: Op::ChainAppendAck,
        flags: Flags::default(),
        status: Status::Ok,
        shard: 0,
        seq: replica.end(),
        key_hash: replica.committed(),
        client: epoch,
        oldest_gap: SNAPSHOT_WANTED,
    };
    let mut packet = Packet::new_boxed();
    let len = wire::emit_with(&header, packet.buffer_mut(), |_| Ok(0)).expect("an ack fits");
    packet.set_len(len);
    packet.dst = to;
    packet
}

/// What a replica other than the head does with a client request.
pub(super) enum FollowerRule {
    Serve,
    /// Writes and multi-key requests belong to the head: MOVED teaches the client where.
    ToHead(SocketAddrV4),
    /// A dirty key's read: the tail knows which version is committed.
    ToTail(SocketAddrV4),
    RetryLater,
}

impl PartitionServer {
    /// Makes this partition the replica at `me` of a chain (or gives it the chain's next
    /// configuration). `capacity` sizes the shards a follower learns of. Returns true when
    /// the partition dropped what it held to start over as a learner (its log's records
    /// no longer build its state).
    pub fn configure_chain(
        &mut self,
        me: SocketAddrV4,
        config: ChainConfig,
        capacity: usize,
    ) -> bool {
        let mut state = self
            .chain
            .take()
            .unwrap_or_else(|| chain_state(me, capacity));
        let before = state.replica.place();
        let restart = state.replica.configure(config);
        let place = state.replica.place();
        if restart {
            // A learner starts from a snapshot in the stream: what it held is no one's.
            self.shards.clear();
            self.dedup = WriteDedup::default();
            self.parked.clear();
            self.extra.clear();
            state.partial.clear();
            state.replay = Replay::new(state.capacity);
        }
        self.journal.feed_chain(place == Place::Head);
        if place == Place::Head && before != Place::Head && before != Place::Outside {
            let replay = std::mem::replace(&mut state.replay, Replay::new(state.capacity));
            // Its own records follow what it applied, not a record its predecessor had
            // begun to pass on.
            state.replica.drop_partial();
            state.partial.clear();
            self.chain = Some(state);
            self.take_over(replay);
            return restart;
        }
        self.chain = Some(state);
        restart
    }

    /// Makes this partition a replica at `me` of a chain it has not been told yet: it
    /// serves nothing (RETRY_LATER) until its first configuration (`configure_chain`).
    pub fn await_chain(&mut self, me: SocketAddrV4, capacity: usize) {
        if self.chain.is_none() {
            self.chain = Some(chain_state(me, capacity));
        }
    }

    /// A follower became head. A migration in its records show under way is taken over:
    /// the source settles it with this replica (`Incoming::taken_over`). One out ends as a
    /// restart ends it, journaled (and so passed down the chain).
    fn take_over(&mut self, mut replay: Replay) {
        if replay.snapshot_open() && !self.snapshotting() {
            // Its predecessor died in the middle of a snapshot, whose start a tail may have
            // taken for its learner's: a whole one of its own ends it.
            self.begin_snapshot();
        }
        for (id, origin) in replay.take_incoming() {
            let (map, partition) = (self.map, self.partition);
            if let Some(s) = self.shards.iter_mut().find(|s| s.id == id) {
                s.role = Role::Incoming(Box::new(Incoming::taken_over(origin, &map, partition)));
            }
        }
        let before: Vec<u16> = self.shards.iter().map(|s| s.id).collect();
        self.end_interrupted(replay);
        for id in before {
            match self.shards.iter().find(|s| s.id == id).map(|s| &s.role) {
                None => self.journal.record(&Record::Shard {
                    shard: id,
                    event: ShardEvent::Released,
                }),
                Some(Role::Damaged(lost)) => {
                    let lost = LostGroups::clone(lost);
                    self.journal.record(&Record::Damaged { shard: id, lost });
                }
                Some(_) => {}
            }
        }
    }

    /// A snapshot begins (or ends) at the end of the stream so far: a head that is also the
    /// tail feeds its learner from there (other tails see the markers in the stream,
    /// `apply_stream`).
    pub(super) fn snapshot_marker_in_chain(&mut self, begin: bool) {
        let Some(state) = &mut self.chain else {
            return;
        };
        if state.replica.place() == Place::Head {
            stream_journal(&mut self.journal, &mut state.replica);
            let at = state.replica.end();
            if begin {
                state.replica.snapshot_began(at);
            } else {
                state.replica.snapshot_ended(at);
            }
        }
    }

    /// This replica's place in its chain (None: not replicated).
    pub fn chain_place(&self) -> Option<Place> {
        self.chain.as_ref().map(|c| c.replica.place())
    }

    pub fn chain_replica(&self) -> Option<&Replica> {
        self.chain.as_ref().map(|c| &c.replica)
    }

    /// Passes `packet` on, or (the head, with part of its stream not yet at the tail)
    /// holds it until that part is committed (`poll_chain` sends it then).
    pub fn gate(&mut self, packet: Box<Packet>) -> Option<Box<Packet>> {
        let Some(state) = &mut self.chain else {
            return Some(packet);
        };
        if state.replica.place() != Place::Head {
            return Some(packet);
        }
        stream_journal(&mut self.journal, &mut state.replica);
        if !state.replica.uncommitted() {
            return Some(packet);
        }
        state.replica.hold(packet);
        None
    }

    /// Whether the chain has work at any time: frames to pass on or packets held.
    pub fn chain_busy(&self) -> bool {
        self.chain.as_ref().is_some_and(|c| {
            let r = &c.replica;
            r.uncommitted()
                || r.held() > 0
                || r.learner_caught_up()
                || r.learner_waits_for_snapshot()
                || r.announcing()
        })
    }

    /// The chain's packets due at `now`: stream frames for the successor (or learner),
    /// and what the head held that is now committed.
    pub fn poll_chain(&mut self, now: Instant, out: &mut Vec<Box<Packet>>) {
        let Some(state) = &mut self.chain else {
            return;
        };
        if state.replica.place() == Place::Head {
            stream_journal(&mut self.journal, &mut state.replica);
        }
        state.replica.release(out);
        state.replica.frames_due(now, &mut state.frames);
        let epoch = state.replica.config().map_or(0, |c| c.epoch);
        if let Some(to) = state.replica.snapshot_request_due(now) {
            out.push(snapshot_request(&state.replica, epoch, to));
        }
        for frame in state.frames.drain(..) {
            let header = HeaderRepr {
                op: Op::ChainAppend,
                flags: Flags::default(),
                status: Status::Ok,
                shard: 0,
                seq: frame.offset,
                key_hash: state.replica.committed(),
                client: epoch,
                oldest_gap: 0,
            };
            let mut packet = Packet::new_boxed();
            let replica = &state.replica;
            let len = wire::emit_with(&header, packet.buffer_mut(), |body| {
                replica.copy_out(frame.offset, frame.len, &mut body[..frame.len]);
                Ok(frame.len)
            })
            .expect("a frame fits a datagram");
            packet.set_len(len);
            packet.dst = frame.to;
            out.push(packet);
        }
        // A learner waits on a head that is its own tail.
        let waits = self
            .chain_replica()
            .is_some_and(|r| r.place() == Place::Head && r.learner_waits_for_snapshot());
        if waits {
            self.begin_snapshot_for_learner();
        }
    }

    /// The head begins a snapshot a learner can start from, unless one is under way (the
    /// tail asks again if that one began too early for its learner).
    fn begin_snapshot_for_learner(&mut self) {
        if !self.snapshotting() {
            self.begin_snapshot();
        }
    }

    /// A frame of the stream from upstream: its new records applied, passed on later,
    /// and acknowledged in place.
    pub(super) fn on_chain_append(
        &mut self,
        packet: &mut Packet,
        header: &HeaderRepr,
    ) -> Result<Action, DropReason> {
        let Some(mut state) = self.chain.take() else {
            return Err(DropReason::Chain);
        };
        let result = self.take_frame(&mut state, packet, header);
        let (held, committed) = (state.replica.end(), state.replica.committed());
        self.chain = Some(state);
        result?;
        let ack = HeaderRepr {
            op: Op::ChainAppendAck,
            seq: held,
            key_hash: committed,
            ..*header
        };
        let len = wire::emit_with(&ack, packet.buffer_mut(), |_| Ok(0)).expect("an ack fits");
        Ok(Action::Reply(len, None))
    }

    fn take_frame(
        &mut self,
        state: &mut ChainState,
        packet: &Packet,
        header: &HeaderRepr,
    ) -> Result<(), DropReason> {
        let body = &packet.payload()[HEADER_LEN..];
        let (offset, epoch) = (header.seq, header.client);
        let starts_snapshot = || {
            matches!(
                parse_record(body),
                Ok((Record::Snapshot { begin: true }, _))
            )
        };
        if state.replica.awaiting_start() && !starts_snapshot() {
            // A learner starts where a snapshot does; a frame that overtook that one
            // comes again.
            return Ok(());
        }
        let arrival = state
            .replica
            .arrive(packet.src, epoch, offset, body.len(), header.key_hash);
        match arrival {
            Arrival::Stranger => return Err(DropReason::Chain),
            Arrival::Duplicate => return Ok(()),
            Arrival::Gap => {
                state.replica.stash(offset, body);
                return Ok(());
            }
            Arrival::New { from } => self.apply_stream(state, &body[(from - offset) as usize..])?,
        }
        // Frames that came ahead of this one may now follow it.
        while let Some((at, bytes)) = state.replica.unstash() {
            let skip = (state.replica.received_end() - at) as usize;
            self.apply_stream(state, &bytes[skip..])?;
        }
        Ok(())
    }

    /// Applies the whole records `fresh` completes (with what earlier frames left of one),
    /// journals them for this replica's disk and keeps them to pass on. A frame whose
    /// records do not parse is dropped whole: nothing of it is applied.
    fn apply_stream(&mut self, state: &mut ChainState, fresh: &[u8]) -> Result<(), DropReason> {
        let start = state.replica.received_end() - state.partial.len() as u64;
        let mut pending = std::mem::take(&mut state.partial);
        let kept = pending.len();
        pending.extend_from_slice(fresh);
        let mut whole = 0;
        while whole < pending.len() {
            match parse_record(&pending[whole..]) {
                Ok((_, len)) => whole += len,
                Err(crate::journal::LogError::Truncated) => break,
                Err(_) => {
                    pending.truncate(kept);
                    state.partial = pending;
                    return Err(DropReason::Chain);
                }
            }
        }
        state.replica.append(fresh);
        let mut at = 0;
        while at < whole {
            let (record, len) = parse_record(&pending[at..]).expect("checked above");
            let end = start + (at + len) as u64;
            match &record {
                Record::Put { key, .. } | Record::Delete { key, .. } | Record::Data { key, .. } => {
                    state.replica.wrote(key_hash(key), end);
                }
                Record::Snapshot { begin: true } => state.replica.snapshot_began(start + at as u64),
                Record::Snapshot { begin: false } => state.replica.snapshot_ended(end),
                _ => {}
            }
            // A snapshot's statement of a shard's role is for a replica building its state
            // (a learner, or a restart replaying its log). One that already holds the state
            // skips it: applied, the statements pass through other roles on the way (a
            // migrating shard is stated hosted, then outgoing), and a read landing between
            // them would be served as if the shard were not migrating.
            let restated = matches!(record, Record::Role { .. });
            if !restated || state.replica.place() == Place::Learner {
                self.replay(&record, &mut state.replay);
            }
            at += len;
        }
        self.journal.append_framed(&pending[..whole]);
        state.partial = pending.split_off(whole);
        let partial_from = (!state.partial.is_empty()).then_some(start + whole as u64);
        state.replica.set_partial_from(partial_from);
        Ok(())
    }

    /// An acknowledgement from downstream. A middle replica passes what the tail has
    /// applied on upstream at once (in place); the head releases what it held.
    pub(super) fn on_chain_ack(
        &mut self,
        packet: &mut Packet,
        header: &HeaderRepr,
    ) -> Result<Action, DropReason> {
        let Some(state) = &mut self.chain else {
            return Err(DropReason::Chain);
        };
        let before = state.replica.committed();
        let known = state.replica.acknowledged(
            packet.src,
            header.client,
            header.seq,
            header.key_hash,
            self.now,
        );
        if !known {
            return Err(DropReason::Chain);
        }
        let committed = state.replica.committed();
        let snapshot_wanted = header.oldest_gap & SNAPSHOT_WANTED != 0;
        if snapshot_wanted && state.replica.place() == Place::Head {
            self.begin_snapshot_for_learner();
            return Ok(Action::Consumed);
        }
        match state.replica.upstream() {
            Some(to) if committed > before || snapshot_wanted => {
                let ack = HeaderRepr {
                    seq: state.replica.end(),
                    key_hash: committed,
                    ..*header
                };
                let len =
                    wire::emit_with(&ack, packet.buffer_mut(), |_| Ok(0)).expect("an ack fits");
                packet.src = packet.dst;
                Ok(Action::Forward(len, to))
            }
            _ => Ok(Action::Consumed),
        }
    }

    /// What a replica other than the head does with a client request (None: the head, or
    /// no chain, serves it as always).
    /// `shard_index`: the request's shard here, if hosted (None and not a learner or
    /// outsider: the caller answers ERROR).
    pub(super) fn follower_rule(
        &self,
        shard_index: Option<usize>,
        header: &HeaderRepr,
        forwarded: bool,
    ) -> Option<FollowerRule> {
        let state = self.chain.as_ref()?;
        let replica = &state.replica;
        Some(match replica.place() {
            Place::Head => return None,
            // Not serving yet (or any more): a write goes to the head it knows of, which a
            // client sent here by a stale word may not have learned; the rest asks again.
            Place::Learner | Place::Outside => match replica.config() {
                Some(config) if header.op != Op::Get && !forwarded => {
                    FollowerRule::ToHead(config.head())
                }
                _ => FollowerRule::RetryLater,
            },
            Place::Middle | Place::Tail => {
                let shard = self.shards[shard_index?].id;
                let config = replica.config()?;
                if header.op != Op::Get {
                    if forwarded {
                        FollowerRule::RetryLater
                    } else {
                        FollowerRule::ToHead(config.head())
                    }
                } else if state.replay.migrating(shard) {
                    // Only the head knows which groups have moved; passed on, a read
                    // would look like one the migration's other end passed.
                    FollowerRule::RetryLater
                } else if replica.is_tail() {
                    if replica.tail_reads_allowed() {
                        FollowerRule::Serve
                    } else {
                        FollowerRule::RetryLater
                    }
                } else if !replica.is_dirty(header.key_hash) {
                    FollowerRule::Serve
                } else if forwarded {
                    FollowerRule::RetryLater
                } else {
                    FollowerRule::ToTail(config.tail())
                }
            }
        })
    }
}
