//! Serving client requests against one partition (one core's share of every shard it
//! hosts). Sans-I/O: `handle` turns a request datagram into a reply in the same buffer.
//! During a migration the partition's role for the shard decides who answers a request:
//! see `docs/migration.md` for the rules and why they keep every operation linearizable.

use crate::bulk::{self, BulkStats};
use crate::dedup::{delete_answer, repeat_answer, DedupVerdict, WriteDedup};
use crate::incoming::{Applied, DestinationRule, Incoming, IncomingStats};
use crate::lost::LostGroups;
use crate::outgoing::{Outgoing, OutgoingPlan, OutgoingStats, OwnedLateWrite, SourceRule};
use crate::pull::{self, PullStats};
use crate::returning::{ReturnStats, Returning};
use crate::stream::{self, Delivery};
use dataplane::port::AnswerInPlace;
use dataplane::wire::{
    self, BulkPull, BulkPullReply, Flags, HeaderRepr, KeyOp, MultiReplyWriter, Op, Protocol,
    PullBatch, Reply, ReplyItem, Request, Status, StreamMessage, WireError, HEADER_LEN,
};
use dataplane::Packet;
use kv::{key_hash, Lookup, Partition, PartitionMap};
use std::net::SocketAddrV4;
use std::time::Instant;

/// Why a datagram was dropped without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The datagram does not parse (truncated, bad magic or version, bad lengths, …).
    Malformed(WireError),
    /// A reply or other non-request arrived at a server.
    NotARequest,
    /// The header's key hash does not match the key: the switch would have steered it by a
    /// group the key is not in.
    HashMismatch,
    /// A late copy of a write the client already has its answer for.
    StaleWrite,
    /// A migration in for a shard this partition does not know, past `MAX_SHARDS`.
    TooManyShards,
}

/// Counters of one partition server; summed across cores for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServeCounters {
    pub gets: u64,
    pub get_hits: u64,
    pub puts: u64,
    pub deletes: u64,
    pub multi_requests: u64,
    pub multi_keys: u64,
    /// Retransmitted writes answered without applying them again.
    pub duplicate_writes: u64,
    /// Requests answered with `Status::Error`: unknown shard, key of another partition,
    /// broken dedup window, entry too long.
    pub error_replies: u64,
    /// Writes refused because key + value exceed `wire::MAX_ENTRY_LEN`.
    pub oversized_writes: u64,
    pub dropped_malformed: u64,
    pub dropped_not_request: u64,
    pub dropped_hash_mismatch: u64,
    pub dropped_stale_write: u64,
    /// Migration stream messages for new shards past `MAX_SHARDS`.
    pub dropped_too_many_shards: u64,
    /// Migrations in refused with `ERROR`: the partition holds data of the shard, or the
    /// source's partitions or group bits differ from ours.
    pub refused_inits: u64,
    /// Requests refused with `DATA_LOST`: their group was lost when a migration's other
    /// end restarted empty.
    pub data_lost_replies: u64,
    /// Migration stream messages of a stream this partition does not know (it restarted,
    /// or they overtook their INIT), answered `ERROR`; and probes answered the same.
    pub unknown_streams: u64,
}

impl ServeCounters {
    pub fn requests(&self) -> u64 {
        self.gets + self.puts + self.deletes + self.multi_requests
    }

    pub fn dropped(&self) -> u64 {
        self.dropped_malformed
            + self.dropped_not_request
            + self.dropped_hash_mismatch
            + self.dropped_stale_write
            + self.dropped_too_many_shards
    }

    fn count_drop(&mut self, reason: DropReason) {
        match reason {
            DropReason::Malformed(_) => self.dropped_malformed += 1,
            DropReason::NotARequest => self.dropped_not_request += 1,
            DropReason::HashMismatch => self.dropped_hash_mismatch += 1,
            DropReason::StaleWrite => self.dropped_stale_write += 1,
            DropReason::TooManyShards => self.dropped_too_many_shards += 1,
        }
    }

    pub fn add(&mut self, other: &ServeCounters) {
        self.gets += other.gets;
        self.get_hits += other.get_hits;
        self.puts += other.puts;
        self.deletes += other.deletes;
        self.multi_requests += other.multi_requests;
        self.multi_keys += other.multi_keys;
        self.duplicate_writes += other.duplicate_writes;
        self.error_replies += other.error_replies;
        self.oversized_writes += other.oversized_writes;
        self.dropped_malformed += other.dropped_malformed;
        self.dropped_not_request += other.dropped_not_request;
        self.dropped_hash_mismatch += other.dropped_hash_mismatch;
        self.dropped_stale_write += other.dropped_stale_write;
        self.dropped_too_many_shards += other.dropped_too_many_shards;
        self.refused_inits += other.refused_inits;
        self.data_lost_replies += other.data_lost_replies;
        self.unknown_streams += other.unknown_streams;
    }
}

/// What a partition does for a shard.
pub enum Role {
    /// It owns the shard's partition.
    Owned,
    /// The partition is migrating away (see `outgoing.rs`).
    Outgoing(Box<Outgoing>),
    /// The partition is migrating in (see `incoming.rs`).
    Incoming(Box<Incoming>),
    /// The partition moved: requests are answered MOVED with the new owner.
    Moved { to: SocketAddrV4, shard: u16 },
    /// A migration in was aborted: what is here goes back to the source, and requests are
    /// passed to it (see `returning.rs`).
    Returning(Box<Returning>),
    /// It owns the shard's partition, but a crash at the migration's other end lost some
    /// groups (see `lost.rs`): those are refused with DATA_LOST, the rest served.
    Damaged(Box<LostGroups>),
}

struct Shard {
    id: u16,
    table: Partition,
    role: Role,
}

/// A migration stream that has terminated, remembered to re-acknowledge retransmissions.
struct FinishedStream {
    source: SocketAddrV4,
    shard: u16,
    stream_id: u32,
    last_applied: u64,
    /// `Error` for a migration whose ABORT came before its INIT: nothing of it is here,
    /// and a late INIT of it must not start it.
    status: Status,
}

/// Remembers an ended stream, to answer its retransmissions as it was answered.
fn finish_stream(finished: &mut Vec<FinishedStream>, stream: FinishedStream) {
    if finished.len() == MAX_FINISHED_STREAMS {
        // Their sources were answered long ago; re-acks are for recent ones.
        finished.remove(0);
    }
    finished.push(stream);
}

/// Migration counters of a partition, over every migration it took part in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrationCounters {
    /// Every migration out, summed.
    pub outgoing: OutgoingStats,
    /// The latest migration out, running or ended (what a status reports).
    pub latest_outgoing: OutgoingStats,
    pub incoming: IncomingStats,
    /// Requests a destination passed to the source (the switch's false positives or races).
    pub forwarded: u64,
    /// Double-read halves a destination answered NOT_MIGRATED.
    pub not_migrated: u64,
    pub moved_replies: u64,
    /// Multi-key requests on a migrating shard with at least one key the partition could
    /// not serve yet (answered RETRY_LATER, for that key or the whole request).
    pub multi_retry_later: u64,
    /// Requests answered RETRY_LATER while ownership moves (single-key).
    pub retry_later: u64,
    /// Pulls this partition sent as a destination.
    pub pulls: PullStats,
    /// Rocksteady bulk pulls this partition sent as a destination.
    pub bulk: BulkStats,
    /// Reads a destination parked until a pull answered them.
    pub parked: u64,
    pub outgoing_active: u32,
    pub incoming_active: u32,
    /// Destinations sending an aborted migration's data back.
    pub returned: ReturnStats,
    pub returning_active: u32,
}

/// One core's partition of every shard the server hosts, with the core's write dedup.
pub struct PartitionServer {
    partition: u32,
    map: PartitionMap,
    shards: Vec<Shard>,
    dedup: WriteDedup,
    counters: ServeCounters,
    migration: MigrationCounters,
    finished_streams: Vec<FinishedStream>,
    /// The stats of the latest migration out once it ended.
    latest_outgoing: OutgoingStats,
    /// Per packet of the burst being served: shard index and key hash, for prefetching.
    targets: Vec<Option<(usize, u64)>>,
    /// Multi-key replies are built here: the request is still being read while they grow.
    scratch: Box<[u8; dataplane::port::BUFFER_CAPACITY]>,
    /// Packets produced outside the request → reply path (late-write replies, parked
    /// requests answered once their pull arrived).
    extra: Vec<Box<Packet>>,
    /// Reads waiting for a pull, by key hash.
    parked: Vec<(u64, Box<Packet>)>,
    /// The time its caller last gave it (`set_time`, `poll_migrations`).
    now: Instant,
    /// This run of the partition (`set_incarnation`): stream acknowledgements carry it, so
    /// a source tells a destination that restarted from one that has not yet seen INIT.
    incarnation: u64,
}

/// Ended incoming streams a partition still re-acknowledges (one or two per migration).
const MAX_FINISHED_STREAMS: usize = 64;

/// Shards a partition holds at once. A migration in for a new shard adds one; past this,
/// its messages are counted and dropped, so a peer cannot grow the list without bound.
pub const MAX_SHARDS: usize = 64;

/// Whether a partition can take a migration in (its INIT).
enum InitFit {
    Take,
    /// Not yet: a return to the same source is still ending. The source resends INIT.
    Wait,
    /// Never: answered `ERROR`, and the source calls the migration off.
    Refuse,
}

/// Most reads parked at once; beyond, the client is asked to retry.
const MAX_PARKED: usize = 4096;

/// Requests whose loads a burst starts together: a NIC burst. Their three lines each stay
/// well inside L1 and the core's outstanding-miss slots are kept busy. Measured with the
/// `serving` bench (10 M keys): whole-chunk passes beat a 16-deep rolling pipeline in 4 of 4
/// alternated runs.
const PREFETCH_CHUNK: usize = 32;

/// How a multi-key request is answered.
enum MultiOutcome {
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
enum ItemFate {
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

/// What became of a handled packet.
enum Action {
    /// The buffer holds a reply of this length; send it back where it came from, or to
    /// the reply-to address of a forwarded request.
    Reply(usize, Option<SocketAddrV4>),
    /// The buffer holds a request of this length to pass to another server.
    Forward(usize, SocketAddrV4),
    /// The buffer holds a finished datagram with its addresses set.
    Ready,
    /// Nothing to send (the request was taken over, e.g. queued as a late write).
    Consumed,
    /// A read that waits for a pull of its key (hash): keep a copy.
    Park(u64),
}

impl PartitionServer {
    /// Partition `partition` of `map` for each shard in `shards`, sized for `capacity`
    /// entries per shard.
    pub fn new(map: &PartitionMap, partition: u32, shards: &[u16], capacity: usize) -> Self {
        PartitionServer {
            partition,
            map: *map,
            shards: shards
                .iter()
                .map(|&id| Shard {
                    id,
                    table: Partition::new(map, partition, capacity),
                    role: Role::Owned,
                })
                .collect(),
            dedup: WriteDedup::default(),
            counters: ServeCounters::default(),
            migration: MigrationCounters::default(),
            finished_streams: Vec::new(),
            latest_outgoing: OutgoingStats::default(),
            targets: Vec::new(),
            scratch: Box::new([0; dataplane::port::BUFFER_CAPACITY]),
            extra: Vec::new(),
            parked: Vec::new(),
            // A placeholder until the caller gives the time (before any migration runs).
            now: Instant::now(),
            incarnation: 0,
        }
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// What the bound on write-dedup clients did (`dedup.rs`).
    pub fn dedup_counters(&self) -> crate::dedup::DedupCounters {
        self.dedup.counters
    }

    pub fn counters(&self) -> &ServeCounters {
        &self.counters
    }

    /// Migration counters, including those of migrations still running.
    pub fn migration_counters(&self) -> MigrationCounters {
        let mut counters = self.migration;
        counters.latest_outgoing = self.latest_outgoing;
        for shard in &self.shards {
            match &shard.role {
                Role::Outgoing(agent) => {
                    counters.outgoing.add(&agent.stats());
                    counters.latest_outgoing = agent.stats();
                    counters.outgoing_active += 1;
                }
                Role::Incoming(agent) => {
                    counters.incoming.add(&agent.stats());
                    counters.pulls.add(&agent.puller.stats());
                    if let Some(bulk) = &agent.bulk {
                        counters.bulk.add(&bulk.stats());
                    }
                    counters.incoming_active += 1;
                }
                Role::Returning(agent) => {
                    counters.returned.add(&agent.stats());
                    counters.returning_active += u32::from(!agent.is_done());
                }
                _ => {}
            }
        }
        counters
    }

    /// Live entries across every shard of this partition.
    pub fn entries(&self) -> usize {
        self.shards.iter().map(|s| s.table.len()).sum()
    }

    pub fn table(&self, shard: u16) -> Option<&Partition> {
        self.shards.iter().find(|s| s.id == shard).map(|s| &s.table)
    }

    pub fn table_mut(&mut self, shard: u16) -> Option<&mut Partition> {
        self.shards
            .iter_mut()
            .find(|s| s.id == shard)
            .map(|s| &mut s.table)
    }

    pub fn role(&self, shard: u16) -> Option<&Role> {
        self.shards.iter().find(|s| s.id == shard).map(|s| &s.role)
    }

    /// Whether `start_outgoing` would take a migration of `shard` away: the shard is here
    /// and neither migrating nor moved (nor still ending an aborted migration).
    pub fn check_outgoing(&self, shard: u16) -> Result<(), String> {
        let partition = self.partition;
        let Some(hosted) = self.shards.iter().find(|s| s.id == shard) else {
            return Err(format!("shard {shard} is not hosted here"));
        };
        if let Role::Damaged(lost) = &hosted.role {
            return Err(format!(
                "shard {shard} of partition {partition} lost {} groups in a crash; they \
                 cannot move",
                lost.count()
            ));
        }
        if !matches!(hosted.role, Role::Owned) {
            return Err(format!(
                "shard {shard} of partition {partition} is already migrating or moved"
            ));
        }
        Ok(())
    }

    /// Starts migrating this partition of `plan.shard` away.
    pub fn start_outgoing(&mut self, plan: OutgoingPlan) -> Result<(), String> {
        self.check_outgoing(plan.shard)?;
        let partition = self.partition;
        let Some(shard) = self.shards.iter_mut().find(|s| s.id == plan.shard) else {
            unreachable!("checked above");
        };
        let mut agent = Outgoing::new(plan, &self.map, partition);
        agent.start(&shard.table, &self.dedup);
        shard.role = Role::Outgoing(Box::new(agent));
        Ok(())
    }

    /// Whether a migration in or out of this partition has work to drive (timers,
    /// replies to send): any shard in a migrating role, or replies queued by one. The
    /// per-poll migration hooks return at once otherwise.
    #[inline]
    pub fn has_migrations(&self) -> bool {
        !self.extra.is_empty()
            || self.shards.iter().any(|s| match &s.role {
                Role::Owned | Role::Moved { .. } | Role::Damaged(_) => false,
                Role::Returning(agent) => !agent.is_finished(),
                Role::Incoming(_) | Role::Outgoing(_) => true,
            })
    }

    /// The time from now on: requests handled next see it (migration acknowledgements time
    /// round trips by it, bulk pulls spend budget by it). The server reads no clock.
    /// Names this run of the partition; a restarted server must take a new one (the
    /// server draws it at start). Stream acknowledgements carry it.
    pub fn set_incarnation(&mut self, incarnation: u64) {
        self.incarnation = incarnation;
    }

    #[inline]
    pub fn set_time(&mut self, now: Instant) {
        self.now = now;
        self.dedup.set_time(now);
    }

    /// Advances every migration of this partition (at `now`, which becomes the server's
    /// time); packets to send go to `out`.
    #[inline]
    pub fn poll_migrations(&mut self, now: Instant, out: &mut Vec<Box<Packet>>) {
        self.set_time(now);
        if self.has_migrations() {
            self.drive_migrations(now, out);
        }
    }

    #[inline(never)]
    fn drive_migrations(&mut self, now: Instant, out: &mut Vec<Box<Packet>>) {
        out.append(&mut self.extra);
        let mut source_lost = false;
        for shard in &mut self.shards {
            if let Role::Incoming(agent) = &mut shard.role {
                agent.poll(now, out);
                if let Some(lost) = agent.lost_with_source() {
                    // The source restarted: what is wholly here is this partition's now.
                    self.migration.incoming.add(&agent.stats());
                    self.migration.pulls.add(&agent.puller.stats());
                    shard.role = Role::Damaged(Box::new(lost));
                    source_lost = true;
                    continue;
                }
            }
            if let Role::Returning(agent) = &mut shard.role {
                agent.poll(now, &shard.table, &self.dedup, out);
                if agent.release_table() {
                    // Everything is back at the source.
                    shard.table = Partition::new(&self.map, self.partition, 0);
                }
            }
            let Role::Outgoing(agent) = &mut shard.role else {
                continue;
            };
            agent.poll(now, &shard.table, out);
            if agent.is_aborted() {
                self.migration.outgoing.add(&agent.stats());
                self.latest_outgoing = agent.stats();
                let lost = agent.lost_groups();
                shard.role = if lost.is_empty() {
                    Role::Owned
                } else {
                    Role::Damaged(Box::new(lost.clone()))
                };
            } else if agent.is_done() {
                self.migration.outgoing.add(&agent.stats());
                self.latest_outgoing = agent.stats();
                let (to, id) = (agent.plan().destination, agent.plan().destination_shard);
                shard.role = Role::Moved { to, shard: id };
                // The data lives at the destination now; free it here.
                shard.table = Partition::new(&self.map, self.partition, 0);
            }
        }
        if source_lost {
            // Reads parked for pulls from the lost source are answered as the rest now.
            self.release_parked(|_| true);
        }
    }

    /// Serves a burst in three passes over each chunk of up to `PREFETCH_CHUNK` packets:
    /// start loading every request's bucket, then (buckets landed) every entry, then serve.
    /// The loads of a chunk overlap, and the passes need no per-step bookkeeping. Returns,
    /// per packet, whether it is now a datagram to send.
    pub fn handle_burst(&mut self, packets: &mut [Box<Packet>], replies: &mut Vec<bool>) {
        replies.clear();
        for chunk in packets.chunks_mut(PREFETCH_CHUNK) {
            self.start_loads(chunk.iter().map(|packet| packet.payload()));
            for packet in chunk.iter_mut() {
                replies.push(self.handle(packet));
            }
        }
    }

    /// The first two passes of `handle_burst` over up to `PREFETCH_CHUNK` requests: their
    /// buckets, then their entries, start loading.
    fn start_loads<'p>(&mut self, payloads: impl Iterator<Item = &'p [u8]>) {
        self.targets.clear();
        for payload in payloads {
            let target = self.target(payload);
            if let Some((shard, hash)) = target {
                self.shards[shard].table.prefetch_slots(hash);
            }
            self.targets.push(target);
        }
        for &(shard, hash) in self.targets.iter().flatten() {
            self.shards[shard].table.prefetch_entry(hash);
        }
    }

    /// The shard index and key hash a single-key request will touch, from its header only.
    fn target(&self, payload: &[u8]) -> Option<(usize, u64)> {
        let header = wire::Header::new_checked(payload).ok()?;
        let op = wire::Op::from_u8(header.op_code()).ok()?;
        if !op.is_key_addressed() || op.is_multi() {
            return None;
        }
        let shard = self.shards.iter().position(|s| s.id == header.shard())?;
        Some((shard, header.key_hash()))
    }

    /// Handles one datagram in place: a request becomes its reply (or a request forwarded
    /// to the server that owns its group), a migration message its acknowledgement.
    /// Returns false when there is nothing to send (a drop is counted with its reason).
    /// Out of line: inlined into `handle_burst`'s loop it cost 18 more instructions per
    /// GET (`scripts/bench-instructions.sh`).
    #[inline(never)]
    pub fn handle(&mut self, packet: &mut Packet) -> bool {
        let (len, buf) = packet.payload_and_buffer();
        if let Some(reply_len) = self.serve_plain_get(len, buf) {
            packet.set_len(reply_len);
            packet.swap_addresses();
            return true;
        }
        self.handle_general(packet)
    }

    /// Everything but a plain GET; out of line, so the plain GET does not pay for its frame.
    #[inline(never)]
    fn handle_general(&mut self, packet: &mut Packet) -> bool {
        match self.handle_payload(packet) {
            Ok(Action::Reply(len, reply_to)) => {
                packet.set_len(len);
                packet.swap_addresses();
                if let Some(to) = reply_to {
                    packet.dst = to;
                }
                true
            }
            Ok(Action::Forward(len, to)) => {
                packet.set_len(len);
                packet.dst = to;
                true
            }
            Ok(Action::Ready) => true,
            Ok(Action::Consumed) => false,
            Ok(Action::Park(hash)) => {
                self.migration.parked += 1;
                let mut copy = Packet::new_boxed();
                copy.buffer_mut()[..packet.len()].copy_from_slice(packet.payload());
                copy.set_len(packet.len());
                (copy.src, copy.dst) = (packet.src, packet.dst);
                self.parked.push((hash, copy));
                false
            }
            Err(reason) => {
                self.counters.count_drop(reason);
                false
            }
        }
    }

    fn handle_payload(&mut self, packet: &mut Packet) -> Result<Action, DropReason> {
        let (src, local) = (packet.src, packet.dst);
        let (len, buf) = packet.payload_and_buffer();
        let (header, _) = wire::parse_header(&buf[..len]).map_err(DropReason::Malformed)?;
        if header.op.is_migration_stream() {
            return self.on_stream_message(packet);
        }
        if header.op.is_migration_stream_ack() || header.op.is_switch_control_ack() {
            let known = self.on_ack(src, &header);
            if !known && header.op == Op::MigrateProbeAck && header.status == Status::Ok {
                // A destination asks whether this partition still sends it the stream:
                // not any more (it restarted).
                self.counters.unknown_streams += 1;
                let reply = header.reply(Status::Error);
                let len = wire::emit_with(
                    &HeaderRepr {
                        op: header.op,
                        ..reply
                    },
                    buf,
                    |_| Ok(0),
                )
                .expect("an ack fits");
                packet.set_len(len);
                packet.swap_addresses();
                return Ok(Action::Ready);
            }
            return Ok(Action::Consumed);
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
        let Some(shard_index) = self.shards.iter().position(|s| s.id == header.shard) else {
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
                let (to, shard) = (agent.source, agent.source_shard);
                return Ok(Action::Reply(
                    self.moved_reply(&header, to, shard, buf),
                    reply_to,
                ));
            }
            Role::Returning(agent) => {
                // Steered here (the switch, or a Fulva double read): the source decides
                // (it asks to retry what it does not have back yet).
                let to = (agent.source, agent.source_shard);
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

    /// Most requests, answered in place without the general dispatch of `handle_payload`: a
    /// GET that neither the switch nor a server marked (no flags), of a shard this core owns
    /// outright (no migration). Any other case is None, left to the general path, which
    /// gives the same answer here and also counts what it drops. Inlined into both callers
    /// (`handle`, and `answer` for a DPDK port): with two callers the compiler kept it out
    /// of line, which cost 29 instructions per GET (`scripts/bench-instructions.sh`).
    #[inline(always)]
    fn serve_plain_get(&mut self, len: usize, buf: &mut [u8]) -> Option<usize> {
        let get = wire::parse_plain_get(&buf[..len])?;
        let shard = self.shards.iter().find(|s| s.id == get.shard)?;
        if !matches!(shard.role, Role::Owned) {
            return None;
        }
        let key = &buf[get.key];
        let hash = key_hash(key);
        if hash != get.key_hash || !shard.table.owns(hash) {
            return None;
        }
        let (status, version, value) = get_answer(shard.table.get(hash, key));
        // A buffer too short for the reply (an mbuf smaller than usual) is left as it was.
        let reply_len = wire::emit_plain_get_reply(buf, status, version, value).ok()?;
        self.counters.gets += 1;
        self.counters.get_hits += u64::from(status == Status::Ok);
        Some(reply_len)
    }

    /// Passes a request to the server that owns it; the reply goes straight to `requester`.
    fn forward(
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

    /// The source answers a destination's pull from its frozen copy.
    fn answer_pull(
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
    fn on_pull_reply(
        &mut self,
        src: SocketAddrV4,
        header: &HeaderRepr,
        len: usize,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        let batch = PullBatch::parse(&buf[HEADER_LEN..len]).map_err(DropReason::Malformed)?;
        let (table, agent) = self.incoming_from(src, header)?;
        agent.puller.received(len);
        let mut released = Vec::new();
        for item in batch.items() {
            let hash = kv::key_hash(item.key);
            if !table.owns(hash) {
                continue;
            }
            table.put_if_newer(hash, item.key, item.value, item.version);
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
    fn answer_bulk_pull(
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
    fn on_bulk_pull_reply(
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
    fn on_bulk_done(
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
    fn incoming_from(
        &mut self,
        source: SocketAddrV4,
        reply: &HeaderRepr,
    ) -> Result<(&mut Partition, &mut Incoming), DropReason> {
        self.shards
            .iter_mut()
            .find_map(|s| match &mut s.role {
                Role::Incoming(agent)
                    if agent.source == source
                        && agent.source_shard == reply.shard
                        && agent.stream_id == reply.client =>
                {
                    Some((&mut s.table, &mut **agent))
                }
                _ => None,
            })
            .ok_or(DropReason::NotARequest)
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
    fn replay_incoming(&mut self, max_items: usize) -> usize {
        let layout = self.map.layout();
        let mut items = 0;
        let mut complete = Vec::new();
        for shard in &mut self.shards {
            if let Role::Incoming(agent) = &mut shard.role {
                let replayed =
                    agent.replay(&mut shard.table, layout, max_items.saturating_sub(items));
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
    fn release_parked(&mut self, which: impl Fn(u64) -> bool) {
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

    fn serve_get(
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
    fn serve_write(
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
        let (status, version) = match verdict {
            DedupVerdict::Apply => {
                let answer = match value {
                    Some(value) => (
                        Status::Ok,
                        shard.table.put(hash, &buf[key.clone()], &buf[value]),
                    ),
                    None => delete_answer(&mut shard.table, hash, &buf[key.clone()]),
                };
                let found = answer.0 == Status::Ok;
                if !found {
                    self.dedup.found_nothing(header.client, header.seq);
                }
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

    /// Serves the selected items of a multi-key request. Each item is decided on its own,
    /// like a single-key request: served, deferred (a double-read half the destination does
    /// not have), retried later, or passed to the source. A write item's identity for
    /// dedup is `seq + index`, so any split of a request is applied at most once per item.
    fn serve_multi(
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
                return Ok(MultiOutcome::Moved(agent.source, agent.source_shard))
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
                    let reply = execute_item(table, items.op, item);
                    // The item's identity for dedup (checked above to fit).
                    let seq = header.seq + i as u64;
                    let found = reply.status == Status::Ok;
                    if !found {
                        self.dedup.found_nothing(header.client, seq);
                    }
                    if let Role::Outgoing(agent) = role {
                        agent.applied_write(header.client, seq, found);
                    }
                    reply
                }
                ItemFate::Serve if is_read => execute_item(table, items.op, item),
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
    fn forward_selection(
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
            Role::Returning(agent) => (agent.source, agent.source_shard),
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

    /// Whether `shard` can take in a migration from `src`: only into a partition that holds
    /// nothing of the shard for anyone else, so a migration never merges into live data.
    fn init_fit(shard: &Shard, src: SocketAddrV4, source_shard: u16) -> InitFit {
        let empty = shard.table.len() + shard.table.tombstones() == 0;
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
    fn on_stream_message(&mut self, packet: &mut Packet) -> Result<Action, DropReason> {
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
                let (last, status) = (done.last_applied, done.status);
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
                            last_applied: last,
                            status: Status::Ok,
                        },
                    );
                }
                match (&mut shard.role, applied) {
                    (Role::Outgoing(agent), Applied::Terminated) => agent.finish_return(),
                    (Role::Incoming(incoming), Applied::Terminated | Applied::Aborted) => {
                        self.migration.incoming.add(&incoming.stats());
                        self.migration.pulls.add(&incoming.puller.stats());
                        if let Some(bulk) = &incoming.bulk {
                            self.migration.bulk.add(&bulk.stats());
                        }
                        shard.role = if applied == Applied::Terminated {
                            Role::Owned
                        } else {
                            Role::Returning(Box::new(Returning::new(
                                src,
                                incoming.source_shard,
                                stream_id,
                                incoming.protocol,
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
    fn answer_unknown_stream(
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
                    last_applied: header.seq,
                    status: Status::Error,
                },
            );
        }
        stream::acknowledge(packet, header, header.seq, Status::Error, self.incarnation);
        Action::Ready
    }

    /// The message a shard's incoming stream (or a return to it) held and can apply next.
    fn take_held(&mut self, index: usize) -> Option<Box<Packet>> {
        match &mut self.shards.get_mut(index)?.role {
            Role::Incoming(agent) => agent.receiver().take_next(),
            Role::Outgoing(agent) => agent.returned_mut()?.receiver().take_next(),
            _ => None,
        }
    }

    /// Gives an acknowledgement to the migration it belongs to; false if none knows it.
    fn on_ack(&mut self, src: SocketAddrV4, header: &HeaderRepr) -> bool {
        let now = self.now;
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

    fn checked_hash(&self, header: &HeaderRepr, key: &[u8]) -> Result<u64, DropReason> {
        let hash = key_hash(key);
        if hash == header.key_hash {
            Ok(hash)
        } else {
            Err(DropReason::HashMismatch)
        }
    }

    fn moved_reply(
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

    fn not_migrated_reply(&mut self, header: &HeaderRepr, buf: &mut [u8]) -> usize {
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

    fn status_reply(&mut self, header: &HeaderRepr, status: Status, buf: &mut [u8]) -> usize {
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

    fn data_lost_reply(&mut self, header: &HeaderRepr, buf: &mut [u8]) -> usize {
        self.counters.data_lost_replies += 1;
        self.status_reply(header, Status::DataLost, buf)
    }

    fn error_reply(&mut self, header: &HeaderRepr, buf: &mut [u8]) -> usize {
        self.counters.error_replies += 1;
        self.status_reply(header, Status::Error, buf)
    }
}

/// A DPDK port answers plain GETs in the mbufs they arrived in, ahead of the rest of their
/// burst. Only reads of shards this core owns outright qualify (`serve_plain_get`); a read
/// changes nothing, and nothing the burst's other datagrams do has been seen by anyone yet,
/// so answering it first is the network having delivered it first (see `AnswerInPlace`).
impl AnswerInPlace for PartitionServer {
    fn prepare(&mut self, payloads: &[&[u8]]) {
        for chunk in payloads.chunks(PREFETCH_CHUNK) {
            self.start_loads(chunk.iter().copied());
        }
    }

    fn answer(&mut self, len: usize, buf: &mut [u8]) -> Option<usize> {
        self.serve_plain_get(len, buf)
    }
}

impl MigrationCounters {
    pub fn add(&mut self, other: &MigrationCounters) {
        self.outgoing.add(&other.outgoing);
        self.latest_outgoing.add(&other.latest_outgoing);
        self.incoming.add(&other.incoming);
        self.forwarded += other.forwarded;
        self.not_migrated += other.not_migrated;
        self.moved_replies += other.moved_replies;
        self.multi_retry_later += other.multi_retry_later;
        self.retry_later += other.retry_later;
        self.pulls.add(&other.pulls);
        self.bulk.add(&other.bulk);
        self.parked += other.parked;
        self.outgoing_active += other.outgoing_active;
        self.incoming_active += other.incoming_active;
        self.returned.add(&other.returned);
        self.returning_active += other.returning_active;
    }
}

/// Fulva: now and then a destination reply carries the partition's progress and the hot
/// keys pulled early, so clients stop double-reading what is here. Returns the new length.
fn announce_progress(agent: &mut Incoming, len: usize, buf: &mut [u8]) -> usize {
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

/// A GET's status, version and value from a lookup (a tombstone answers with its version).
fn get_answer(lookup: Lookup<'_>) -> (Status, u64, &[u8]) {
    match lookup {
        Lookup::Found { version, value } => (Status::Ok, version, value),
        Lookup::Deleted { version } => (Status::NotFound, version, &[]),
        Lookup::Absent => (Status::NotFound, 0, &[]),
    }
}

/// Where `part`, a slice of `buf`, lies in it: keys and values are kept as ranges of the
/// buffer, which the reply overwrites.
fn range_in(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// A write of an entry longer than any migration message could carry (`MAX_ENTRY_LEN`).
fn request_too_long(request: &Request<'_>) -> bool {
    match request {
        Request::Put { key, value } => key.len() + value.len() > wire::MAX_ENTRY_LEN,
        Request::Multi(items) => {
            items.op == KeyOp::Put
                && items
                    .iter()
                    .any(|item| item.key.len() + item.value.len() > wire::MAX_ENTRY_LEN)
        }
        Request::Get { .. } | Request::Delete { .. } => false,
    }
}

fn execute_item<'t>(
    table: &'t mut Partition,
    op: KeyOp,
    item: wire::MultiItem<'_>,
) -> ReplyItem<'t> {
    // Keys of another partition were refused before (`ItemFate::Refuse`).
    let hash = item.key_hash;
    let (status, version) = match op {
        KeyOp::Get => {
            return match table.get(hash, item.key) {
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
        KeyOp::Put => (Status::Ok, table.put(hash, item.key, item.value)),
        KeyOp::Delete => delete_answer(table, hash, item.key),
    };
    ReplyItem {
        status,
        version,
        value: &[],
    }
}
