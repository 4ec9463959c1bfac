//! One client thread: issues requests within a window, matches replies by sequence number,
//! retransmits on timeout, records latency and (optionally) the history for the
//! linearizability check.

use super::source::{InsertCounter, OpSource, Planned, Records};
use super::timers::Timers;
use super::{Cluster, Progress, Settings, ThreadResult};
use crate::linearizability::{Op as HistoryOp, OpKind};
use crate::measure::Recorder;
use crate::value;
use crate::workload::WorkloadSpec;
use dataplane::port::BURST;
use dataplane::runner::{Backoff, Idle};
use dataplane::wire::{
    self, Flags, HeaderRepr, KeyOp, MultiItem, MultiReplyItems, MultiRequestItems, Op, Reply,
    Request, Status, MAX_KEYS,
};
use dataplane::{Packet, Port};
use migration::dedup::WINDOW;
use std::collections::HashSet;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The servers' dedup window: the span of sequence numbers in use must stay below it.
const RING: u64 = WINDOW;

/// Request slots for a window: room for the window, one multi-key request and as many
/// numbers again past an unanswered oldest request, within the dedup window. Fewer slots
/// than the dedup window keep them in the cache.
fn slot_count(window: usize) -> usize {
    (2 * (window + MAX_KEYS + 1))
        .next_power_of_two()
        .min(RING as usize)
}
/// A `RetryLater` answer is retried after this pause.
const RETRY_LATER_PAUSE: Duration = Duration::from_micros(200);

/// A time as nanoseconds since the engine's epoch: per request it is stored, compared and
/// subtracted, which costs a few instructions on a u64 and tens on an `Instant`.
pub type Nanos = u64;

fn nanos(duration: Duration) -> Nanos {
    duration.as_nanos().min(u128::from(u64::MAX)) as u64
}

fn nanos_since(epoch: Instant, at: Instant) -> Nanos {
    nanos(at.saturating_duration_since(epoch))
}

/// Operations per history chunk.
const HISTORY_CHUNK: usize = 1 << 16;
/// Hot keys a Fulva client remembers per partition before starting over.
const MAX_HOT_KEYS: usize = 4096;

/// A Fulva client's view of a partition that is migrating: where it comes from and how
/// far it got.
struct Tracking {
    source: (SocketAddrV4, u16),
    /// Groups below this are at the destination (as last announced).
    migrated_upto: u32,
    /// Keys the destination pulled early and announced.
    hot: HashSet<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Read,
    Update,
    Insert,
    RmwRead,
    RmwWrite,
    Delete,
}

struct Pending {
    seq: u64,
    purpose: Purpose,
    record: u64,
    /// Tag of the value a write carries.
    tag: u64,
    /// When the logical operation began (a read-modify-write spans two requests).
    op_start: Nanos,
    first_sent: Nanos,
    attempts: u32,
    /// Sends in a row that nothing answered (`FALL_BACK_AFTER`).
    unanswered_sends: u32,
    /// What one half of a double read said while the other is awaited.
    half: Option<Half>,
    /// Where this client last sent a double read of its own (Fulva): the destination and
    /// the source. Halves decide only within one pair: a source's answer and the deferral
    /// of a destination that pulls from another source say nothing together.
    double_pair: Option<(SocketAddrV4, SocketAddrV4)>,
    /// A multi-key request: its records and what each item got.
    multi: Option<Box<MultiPending>>,
}

/// The items of a multi-key request. Item `i` is the write `seq + i` (its tag and its
/// identity at the servers' dedup).
struct MultiPending {
    records: Records,
    /// Items answered for good (failed ones included).
    done: u16,
    /// Items answered ERROR.
    failed: u16,
    /// Per item: the tag read (None: not found); for a source half still waiting for the
    /// destination's, what the source said.
    observed: [Option<u64>; MAX_KEYS],
    /// Double-read items whose source half arrived first.
    source_halves: u16,
    /// Double-read items the destination said it does not have yet.
    deferred: u16,
}

impl MultiPending {
    fn new(records: Records) -> Self {
        MultiPending {
            records,
            done: 0,
            failed: 0,
            observed: [None; MAX_KEYS],
            source_halves: 0,
            deferred: 0,
        }
    }

    fn all(&self) -> u16 {
        wire::all_items(self.records.as_slice().len())
    }

    /// Forgets the halves awaiting their other half (the pair asked changed).
    fn forget_halves(&mut self) {
        self.source_halves = 0;
        self.deferred = 0;
    }

    /// Takes one item's answer. A double-read half decides only with the other half (the
    /// destination's answer wins unless it defers), exactly as for single-key reads.
    /// Returns whether the item now has its answer.
    fn take(
        &mut self,
        i: usize,
        observed: Option<u64>,
        half: bool,
        from_dest: bool,
        deferred: bool,
    ) -> bool {
        let bit = 1 << i;
        if self.done & bit != 0 {
            return false; // A late half: the item has its answer.
        }
        let decided = match (half, from_dest) {
            (false, _) => Some(observed),
            (true, true) if !deferred => Some(observed),
            (true, true) if self.source_halves & bit != 0 => Some(self.observed[i]),
            (true, true) => {
                self.deferred |= bit;
                None
            }
            (true, false) if self.deferred & bit != 0 => Some(observed),
            (true, false) => {
                self.source_halves |= bit;
                self.observed[i] = observed;
                None
            }
        };
        if let Some(answer) = decided {
            self.observed[i] = answer;
            self.done |= bit;
        }
        decided.is_some()
    }
}

/// The half of a double read that arrived first.
#[derive(Debug, Clone, Copy)]
enum Half {
    /// The source answered (tag read, None: not found), from this address.
    Source(Option<u64>, SocketAddrV4),
    /// A destination does not have the key yet (NOT_MIGRATED), on the destination's half
    /// (true) or on the source's (false: the server asked as the source has since become a
    /// destination of another migration): the other half is the answer.
    Deferred(bool),
}

impl Pending {
    fn is_write(&self) -> bool {
        !matches!(self.purpose, Purpose::Read | Purpose::RmwRead)
    }

    /// Whether a reply with this op answers the request. A whole multi-key request
    /// answered with a status only (MOVED, RETRY_LATER, ERROR) has a PUT reply's shape.
    fn answered_by(&self, op: Op) -> bool {
        match (self.multi.is_some(), self.is_write()) {
            (false, false) => op == Op::GetReply,
            (false, true) if self.purpose == Purpose::Delete => op == Op::DeleteReply,
            (false, true) => op == Op::PutReply,
            (true, false) => op == Op::MultiGetReply || op == Op::PutReply,
            (true, true) => op == Op::MultiPutReply || op == Op::PutReply,
        }
    }
}

/// Per-thread counters, published to `Progress` in batches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub completed: u64,
    pub failed: u64,
    pub timeouts: u64,
    pub retries: u64,
    pub not_found: u64,
    /// Deletes answered, and those answered NOT_FOUND (the key was absent).
    pub deletes: u64,
    pub deletes_not_found: u64,
    pub error_replies: u64,
    /// Requests refused with DATA_LOST: their group was lost in a crash.
    pub data_lost: u64,
    pub ignored_replies: u64,
    pub malformed_replies: u64,
    pub retry_later: u64,
    /// Reads the switch doubled (both halves seen).
    pub double_reads: u64,
    /// Replies from a server other than the one addressed (redirects by the switch).
    pub redirected: u64,
    pub moved: u64,
    /// Reply and request bytes a run without migration would not have had: second halves
    /// of double reads, resends after MOVED or RETRY_LATER.
    pub extra_bytes: u64,
    /// Bytes of requests and replies (the denominator of the extra share).
    pub bytes: u64,
    /// Multi-key requests completed, and the keys they carried.
    pub multi_requests: u64,
    pub multi_keys: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.timeouts += other.timeouts;
        self.retries += other.retries;
        self.not_found += other.not_found;
        self.deletes += other.deletes;
        self.deletes_not_found += other.deletes_not_found;
        self.error_replies += other.error_replies;
        self.data_lost += other.data_lost;
        self.ignored_replies += other.ignored_replies;
        self.malformed_replies += other.malformed_replies;
        self.retry_later += other.retry_later;
        self.double_reads += other.double_reads;
        self.redirected += other.redirected;
        self.moved += other.moved;
        self.extra_bytes += other.extra_bytes;
        self.bytes += other.bytes;
        self.multi_requests += other.multi_requests;
        self.multi_keys += other.multi_keys;
    }
}

/// Sends of one request in a row that nothing answered before its partition's route goes
/// back home (`Engine::transmit`).
const FALL_BACK_AFTER: u32 = 3;

pub struct Engine {
    port: Box<dyn Port>,
    cluster: Arc<Cluster>,
    /// Per partition: the server and shard requests go to (MOVED answers update it).
    routes: Vec<(SocketAddrV4, u16)>,
    /// Per partition: where the shard lives as far as this client was told (the servers
    /// it started with, or its chain's head), not where MOVED sent it.
    homes: Vec<(SocketAddrV4, u16)>,
    /// Per partition, with `track_migrations`: the migration under way.
    tracking: Vec<Option<Tracking>>,
    /// Per partition of a replicated shard: its chain, head first. Single-key reads go to
    /// any of them (CRAQ) while the route still names the head.
    read_replicas: Vec<Vec<SocketAddrV4>>,
    spec: Arc<WorkloadSpec>,
    settings: Settings,
    client_id: u32,
    writer: u32,
    epoch: Instant,
    next_seq: u64,
    floor: u64,
    slots: Vec<Option<Pending>>,
    outstanding: usize,
    timers: Timers,
    rx: Vec<Box<Packet>>,
    tx: Vec<Box<Packet>>,
    recorder: Recorder,
    /// Fixed-size chunks: growing one huge vector would stall the thread while it copies.
    history: Vec<Vec<HistoryOp>>,
    /// The history's process of each request slot: item i of a request in the slot is
    /// process `id * MAX_KEYS + i` of this writer. A slot takes a new id after an unknown
    /// outcome.
    slot_process: Vec<u64>,
    next_process: u64,
    counters: Counters,
    published: Counters,
    /// The chain membership epoch last followed (`Cluster::chain_view`).
    chain_epoch: u64,
    key: Vec<u8>,
    value: Vec<u8>,
    /// Keys, values and encoded body of the multi-key request being sent.
    multi_keys: Vec<u8>,
    multi_values: Vec<u8>,
    multi_body: Vec<u8>,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        port: Box<dyn Port>,
        cluster: Arc<Cluster>,
        spec: Arc<WorkloadSpec>,
        settings: Settings,
        client_id: u32,
        writer: u32,
        epoch: Instant,
    ) -> Self {
        Engine {
            port,
            routes: cluster
                .partitions
                .iter()
                .map(|&addr| (addr, cluster.shard))
                .collect(),
            homes: cluster
                .partitions
                .iter()
                .map(|&addr| (addr, cluster.shard))
                .collect(),
            tracking: cluster.partitions.iter().map(|_| None).collect(),
            read_replicas: (0..cluster.partitions.len())
                .map(|p| cluster.replicas.get(p).cloned().unwrap_or_default())
                .collect(),
            cluster,
            key: vec![0; spec.key_bytes],
            value: vec![0; spec.value_bytes],
            multi_keys: vec![0; MAX_KEYS * spec.key_bytes],
            multi_values: vec![0; MAX_KEYS * spec.value_bytes],
            multi_body: vec![0; dataplane::port::BUFFER_CAPACITY],
            spec,
            settings,
            client_id,
            writer,
            epoch,
            next_seq: 1,
            floor: 1,
            slots: (0..slot_count(settings.window)).map(|_| None).collect(),
            slot_process: (0..slot_count(settings.window) as u64).collect(),
            next_process: slot_count(settings.window) as u64,
            outstanding: 0,
            timers: Timers::default(),
            rx: Vec::with_capacity(BURST),
            tx: Vec::with_capacity(BURST),
            recorder: Recorder::default(),
            history: Vec::new(),
            counters: Counters::default(),
            published: Counters::default(),
            chain_epoch: 0,
        }
    }

    /// Runs the source dry (or until `deadline` / `stop`), then waits for what is in flight.
    pub fn run(
        mut self,
        mut source: OpSource,
        inserts: &InsertCounter,
        deadline: Option<Instant>,
        stop: &AtomicBool,
        progress: &Progress,
    ) -> ThreadResult {
        let interval = self
            .settings
            .rate_per_thread
            .map(|rate| Duration::from_secs_f64(1.0 / rate));
        let mut next_due = Instant::now();
        let mut exhausted = false;
        let mut polls: u32 = 0;
        // Waiting for replies spins first (lowest latency), then yields the core, unless the
        // thread busy-polls.
        let mut backoff = Backoff::new(self.settings.idle);
        loop {
            let now = Instant::now();
            let now_ns = self.since_epoch(now);
            if !exhausted && (stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| now >= d)) {
                exhausted = true;
            }
            if !exhausted {
                exhausted = match interval {
                    None => self.start_operations(&mut source, inserts, now_ns),
                    Some(interval) => {
                        let mut dry = false;
                        while !dry && now >= next_due && self.can_issue() {
                            next_due += interval;
                            dry = self.start_one(&mut source, inserts, now_ns);
                        }
                        dry
                    }
                };
            }
            self.flush();
            // One clock read per poll when nothing arrives: timers need only the poll's time.
            let epoch = self.epoch;
            let clock = || nanos_since(epoch, Instant::now());
            let (received, arrived) = self.take_replies(inserts, clock);
            let now_ns = arrived.unwrap_or(now_ns);
            self.expire_timers(now_ns, inserts);
            self.flush();
            polls = polls.wrapping_add(1);
            if polls % 64 == 0 {
                self.publish(progress);
                self.follow_chain_view();
            }
            if exhausted && self.outstanding == 0 {
                break;
            }
            backoff.after_poll(received > 0);
            if interval.is_some() && self.outstanding == 0 && self.settings.idle == Idle::Share {
                // Open loop and idle: nap until the next operation is due.
                let wait = next_due.saturating_duration_since(Instant::now());
                if wait > Duration::from_micros(100) {
                    std::thread::sleep(wait - Duration::from_micros(50));
                }
            }
        }
        self.publish(progress);
        self.finish(Instant::now())
    }

    /// The thread's results, once nothing is outstanding; `finished` is when its last
    /// operation ended.
    pub fn finish(mut self, finished: Instant) -> ThreadResult {
        self.recorder.finish();
        ThreadResult {
            finished,
            recorder: self.recorder,
            history: self.history.concat(),
            counters: self.counters,
            port: self.port.stats(),
        }
    }

    /// Starts operations from `source` while the window has room; true once the source is
    /// dry. Requests are queued: `flush` sends them.
    #[inline]
    pub fn start_operations(
        &mut self,
        source: &mut OpSource,
        inserts: &InsertCounter,
        now: Nanos,
    ) -> bool {
        while self.can_issue() {
            if self.start_one(source, inserts, now) {
                return true;
            }
        }
        false
    }

    /// Starts the source's next operation; true if it had none.
    #[inline(always)]
    fn start_one(&mut self, source: &mut OpSource, inserts: &InsertCounter, now: Nanos) -> bool {
        match source.next(inserts) {
            Some(planned) => {
                self.start(planned, now);
                false
            }
            None => true,
        }
    }

    /// Operations started and not yet ended.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// When `expire_timers` next has something to do (a retransmission or a retry after
    /// RETRY_LATER), if anything is armed.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        self.timers.next_deadline()
    }

    /// Room for one more logical operation. The sequence span keeps `window` numbers spare
    /// so that every outstanding read-modify-write can still send its write half, and room
    /// for the numbers of one multi-key request, without reaching the slot of the oldest
    /// unanswered request.
    fn can_issue(&self) -> bool {
        self.outstanding < self.settings.window
            && self.next_seq - self.floor
                < self.slots.len() as u64 - 1 - self.settings.window as u64 - MAX_KEYS as u64
    }

    fn slot_of(&self, seq: u64) -> usize {
        seq as usize & (self.slots.len() - 1)
    }

    fn publish(&mut self, progress: &Progress) {
        let c = &self.counters;
        let p = &self.published;
        progress
            .completed
            .fetch_add(c.completed - p.completed, Ordering::Relaxed);
        progress
            .failed
            .fetch_add(c.failed - p.failed, Ordering::Relaxed);
        progress
            .retries
            .fetch_add(c.retries - p.retries, Ordering::Relaxed);
        self.published = self.counters;
    }

    fn since_epoch(&self, at: Instant) -> Nanos {
        nanos_since(self.epoch, at)
    }

    fn start(&mut self, planned: Planned, now: Nanos) {
        let (purpose, record) = match planned {
            Planned::Read(r) => (Purpose::Read, r),
            Planned::Update(r) => (Purpose::Update, r),
            Planned::Insert(r) => (Purpose::Insert, r),
            Planned::ReadModifyWrite(r) => (Purpose::RmwRead, r),
            Planned::Delete(r) => (Purpose::Delete, r),
            Planned::MultiRead(records) => return self.start_multi(Purpose::Read, records, now),
            Planned::MultiUpdate(records) => {
                return self.start_multi(Purpose::Update, records, now)
            }
        };
        self.issue(purpose, record, now, now);
    }

    /// A multi-key request takes the records of the first one's partition (one server
    /// core serves it); a single record left is an ordinary request.
    fn start_multi(&mut self, purpose: Purpose, mut records: Records, now: Nanos) {
        let (spec, map) = (&self.spec, &self.cluster.map);
        let partition_of = |record: u64| {
            let mut key = [0u8; wire::MAX_KEY_LEN];
            let len = spec.key_of(record, &mut key);
            map.partition_of(kv::key_hash(&key[..len]))
        };
        let first = partition_of(records.as_slice()[0]);
        records.retain(|record| partition_of(record) == first);
        let first_record = records.as_slice()[0];
        if records.as_slice().len() == 1 {
            return self.issue(purpose, first_record, now, now);
        }
        let multi = MultiPending::new(records);
        self.issue_with(purpose, first_record, Some(Box::new(multi)), now, now);
    }

    fn issue(&mut self, purpose: Purpose, record: u64, op_start: Nanos, now: Nanos) {
        self.issue_with(purpose, record, None, op_start, now);
    }

    #[inline]
    fn issue_with(
        &mut self,
        purpose: Purpose,
        record: u64,
        multi: Option<Box<MultiPending>>,
        op_start: Nanos,
        now: Nanos,
    ) {
        let seq = self.next_seq;
        // A multi-key request spends a sequence number per item (`seq + i`).
        self.next_seq += multi
            .as_ref()
            .map_or(1, |m| m.records.as_slice().len() as u64);
        let pending = Pending {
            seq,
            purpose,
            record,
            tag: value::tag(self.writer, seq),
            op_start,
            first_sent: now,
            attempts: 0,
            unanswered_sends: 0,
            half: None,
            double_pair: None,
            multi,
        };
        let index = self.slot_of(seq);
        let slot = &mut self.slots[index];
        assert!(slot.is_none(), "sequence window overrun at seq {seq}");
        *slot = Some(pending);
        self.outstanding += 1;
        self.transmit(seq, now);
    }

    /// Builds and queues the request for `seq` (first send or retransmission).
    fn transmit(&mut self, seq: u64, now: Nanos) {
        let index = self.slot_of(seq);
        let Some(pending) = self.slots[index].as_mut() else {
            return;
        };
        pending.attempts += 1;
        pending.unanswered_sends += 1;
        let attempt = pending.attempts;
        let lost = pending.unanswered_sends > FALL_BACK_AFTER;
        if lost {
            pending.unanswered_sends = 0;
        }
        let (purpose, record, tag) = (pending.purpose, pending.record, pending.tag);
        let is_write = !matches!(purpose, Purpose::Read | Purpose::RmwRead);
        let unanswered = pending
            .multi
            .as_ref()
            .map(|m| (m.records, m.all() & !m.done));
        let (request, hash) = if let Some((records, serve)) = unanswered {
            let (kb, vb) = (self.spec.key_bytes, self.spec.value_bytes);
            for (i, &record) in records.as_slice().iter().enumerate() {
                self.spec
                    .key_of(record, &mut self.multi_keys[i * kb..(i + 1) * kb]);
                if is_write {
                    let tag = value::tag(self.writer, seq + i as u64);
                    value::encode(tag, &mut self.multi_values[i * vb..(i + 1) * vb]);
                }
            }
            // On the stack: a multi-key request is built on every send.
            let count = records.as_slice().len();
            let items: [MultiItem; MAX_KEYS] = std::array::from_fn(|i| {
                let key = &self.multi_keys[i * kb..(i + 1) * kb];
                MultiItem {
                    key_hash: if i < count { kv::key_hash(key) } else { 0 },
                    key,
                    value: if is_write {
                        &self.multi_values[i * vb..(i + 1) * vb]
                    } else {
                        &[]
                    },
                }
            });
            let items = &items[..count];
            let op = if is_write { KeyOp::Put } else { KeyOp::Get };
            // Only the items still unanswered: the others have their answer.
            let view = MultiRequestItems::build(op, items, &mut self.multi_body)
                .and_then(|view| view.select(serve, 0))
                .expect("keysperrequest was checked to fit one frame");
            (Request::Multi(view), items[0].key_hash)
        } else {
            let key_len = self.spec.key_of(record, &mut self.key);
            let key = &self.key[..key_len];
            let request = if purpose == Purpose::Delete {
                Request::Delete { key }
            } else if is_write {
                value::encode(tag, &mut self.value);
                Request::Put {
                    key,
                    value: &self.value,
                }
            } else {
                Request::Get { key }
            };
            (request, kv::key_hash(key))
        };
        let partition = self.cluster.map.partition_of(hash) as usize;
        // A request MOVED sent elsewhere went unanswered `FALL_BACK_AFTER` times in a row:
        // that server may be gone (a migration's destination whose head died, with no one
        // to tell this client). The partition's requests go home again, which answers MOVED
        // to wherever the shard is now.
        let home = self.homes[partition];
        if lost && self.tracking[partition].is_none() && self.routes[partition] != home {
            self.routes[partition] = home;
        }
        let (mut server, shard) = self.routes[partition];
        let replicas = &self.read_replicas[partition];
        let tracked = self.tracking[partition].is_some();
        if matches!(request, Request::Get { .. }) && !tracked && replicas.first() == Some(&server) {
            server = if self.settings.reads_at_tail {
                replicas[replicas.len() - 1]
            } else {
                replicas[(seq as usize + attempt as usize) % replicas.len()]
            };
        }
        let header = HeaderRepr {
            op: request.op(),
            flags: if attempt > 1 {
                Flags::RETRANSMIT
            } else {
                Flags::default()
            },
            status: Status::Ok,
            shard,
            seq,
            key_hash: hash,
            client: self.client_id,
            oldest_gap: (seq - self.floor) as u32,
        };
        // Fulva: a read of a group not yet migrated (and not announced hot) goes to both.
        let group = self.cluster.map.layout().group_of(hash);
        let double_from = self.tracking[partition]
            .as_ref()
            .filter(|_| unanswered.is_none())
            .filter(|t| !is_write && group >= t.migrated_upto && !t.hot.contains(&hash))
            .map(|t| t.source);
        let pair = double_from.map(|(source, _)| (server, source));
        if let Some(pending) = self.slots[index].as_mut() {
            if pending.double_pair != pair {
                pending.double_pair = pair;
                pending.half = None;
                if let Some(multi) = &mut pending.multi {
                    multi.forget_halves();
                }
            }
        }
        let copies = match double_from {
            Some((source, source_shard)) => [
                Some((
                    server,
                    HeaderRepr {
                        flags: header
                            .flags
                            .with(Flags::DOUBLE_READ)
                            .with(Flags::REDIRECTED),
                        ..header
                    },
                )),
                Some((
                    source,
                    HeaderRepr {
                        flags: header.flags.with(Flags::DOUBLE_READ),
                        shard: source_shard,
                        ..header
                    },
                )),
            ],
            None => [Some((server, header)), None],
        };
        for (copy, (to, header)) in copies.into_iter().flatten().enumerate() {
            let mut packet = self.port.alloc();
            let len = wire::emit_request(&header, &request, packet.buffer_mut())
                .expect("workload keys and values fit one frame");
            packet.set_len(len);
            packet.dst = to;
            self.counters.bytes += len as u64;
            if copy > 0 {
                self.counters.extra_bytes += len as u64;
            }
            self.tx.push(packet);
        }
        if self.tx.len() >= BURST {
            self.flush();
        }
        let backoff = self.settings.timeout * 2u32.saturating_pow(attempt.min(16) - 1);
        let deadline = now + nanos(backoff.min(self.settings.max_timeout));
        self.timers.push(deadline, seq, attempt, attempt == 1);
    }

    /// Sends the requests queued so far.
    pub fn flush(&mut self) {
        if !self.tx.is_empty() {
            // Sends that fail are dropped like lost packets and retransmitted later.
            let _ = self.port.send(&mut self.tx);
        }
    }

    /// Handles the replies that arrived: how many, and the time (`clock`, read once and
    /// only if any did) they are handled at.
    #[inline]
    pub fn take_replies(
        &mut self,
        inserts: &InsertCounter,
        clock: impl FnOnce() -> Nanos,
    ) -> (usize, Option<Nanos>) {
        let _ = self.port.recv(&mut self.rx, BURST);
        let received = self.rx.len();
        if received == 0 {
            return (0, None);
        }
        let now = clock();
        let mut rx = std::mem::take(&mut self.rx);
        for packet in rx.drain(..) {
            self.on_reply(packet.src, packet.payload(), now, inserts);
            self.port.release(packet);
        }
        self.rx = rx;
        (received, Some(now))
    }

    /// Most replies: an unmarked GET reply that answers an outstanding single-key read,
    /// read at fixed offsets. Anything else (false) is left to `on_reply`'s general path,
    /// which handles it the same way and also counts what it ignores.
    fn on_plain_get_reply(&mut self, payload: &[u8], now: Nanos, inserts: &InsertCounter) -> bool {
        let Some(reply) = wire::parse_plain_get_reply(payload) else {
            return false;
        };
        let slot = self.slot_of(reply.seq);
        let answers = reply.client == self.client_id
            && self.slots[slot].as_ref().is_some_and(|p| {
                p.seq == reply.seq && p.multi.is_none() && p.answered_by(Op::GetReply)
            });
        if !answers {
            return false;
        }
        self.counters.bytes += payload.len() as u64;
        let observed = (reply.status == Status::Ok)
            .then(|| value::decode(&payload[reply.value]).unwrap_or(u64::MAX));
        self.complete(reply.seq, now, Outcome::Done(observed), inserts);
        true
    }

    #[inline]
    fn on_reply(
        &mut self,
        from: SocketAddrV4,
        payload: &[u8],
        now: Nanos,
        inserts: &InsertCounter,
    ) {
        if self.on_plain_get_reply(payload, now, inserts) {
            return;
        }
        self.counters.bytes += payload.len() as u64;
        let parsed = wire::parse_header(payload).and_then(|(header, _)| {
            let payload = if header.flags.contains(Flags::PROGRESS) {
                let (reply, progress) = wire::split_progress(payload)?;
                self.counters.extra_bytes += (payload.len() - reply.len()) as u64;
                self.track_progress(header.key_hash, &progress);
                reply
            } else {
                payload
            };
            let body = &payload[wire::HEADER_LEN..];
            Ok((header, Reply::parse(&header, body)?))
        });
        let Ok((header, reply)) = parsed else {
            self.counters.malformed_replies += 1;
            return;
        };
        let slot = self.slot_of(header.seq);
        let matches = header.client == self.client_id
            && self.slots[slot]
                .as_ref()
                .is_some_and(|p| p.seq == header.seq && p.answered_by(header.op));
        // The half of a double read from a pair of servers asked before the shard moved on
        // answers nothing now.
        let stale_half = matches
            && header.flags.contains(Flags::DOUBLE_READ)
            && self.slots[slot]
                .as_ref()
                .and_then(|p| p.double_pair)
                .is_some_and(|(destination, source)| from != destination && from != source);
        let matches = matches && !stale_half;
        if matches {
            if let Some(pending) = self.slots[slot].as_mut() {
                pending.unanswered_sends = 0;
            }
        }
        if let (Status::Moved, Reply::Moved { to, shard }) = (header.status, &reply) {
            if matches {
                self.follow_moved(&header, *to, *shard);
            } else {
                // A late or duplicated MOVED may be from a migration since superseded (the
                // shard went back): it moves no route. Only the tracked source saying it
                // handed everything over still ends a Fulva client's double reads.
                self.source_handed_over(from, &header);
            }
        }
        if !matches {
            // A duplicate, a late answer to a retransmitted request, or not ours (or the
            // half of a double read that arrived after the other one decided, or from a
            // pair of servers asked before the shard moved on).
            self.counters.ignored_replies += 1;
            if Flags(payload[4]).contains(Flags::DOUBLE_READ) {
                self.counters.extra_bytes += payload.len() as u64;
            }
            return;
        }
        if header.flags.contains(Flags::REDIRECTED) && !header.flags.contains(Flags::DOUBLE_READ) {
            self.counters.redirected += 1;
        }
        match header.status {
            Status::Ok if matches!(reply, Reply::Multi(_)) => {
                let Reply::Multi(items) = reply else {
                    unreachable!("matched above")
                };
                let (complete, retry) = self.merge_multi(slot, header.flags, &items, payload.len());
                if complete {
                    self.complete(header.seq, now, Outcome::Done(None), inserts);
                } else if retry {
                    self.counters.retry_later += 1;
                    let attempt = self.slots[slot].as_ref().map_or(0, |p| p.attempts);
                    self.timers
                        .push(now + nanos(RETRY_LATER_PAUSE), header.seq, attempt, false);
                }
            }
            Status::Ok | Status::NotFound
                if self.slots[slot].as_ref().is_some_and(|p| p.multi.is_some()) =>
            {
                // A multi-key request's answer always carries its items.
                self.counters.malformed_replies += 1;
            }
            // Only a delete is answered by a DELETE reply (`answered_by`).
            Status::Ok | Status::NotFound if header.op == Op::DeleteReply => {
                // A copy of a delete already applied is answered as its first copy was.
                let existed = Some(header.status == Status::Ok);
                self.complete(header.seq, now, Outcome::Deleted { existed }, inserts);
            }
            Status::Ok | Status::NotFound => {
                let observed = match reply {
                    Reply::Get { value, .. } if header.status == Status::Ok => {
                        Some(value::decode(value).unwrap_or(u64::MAX))
                    }
                    _ => None,
                };
                let observed =
                    if header.op == Op::GetReply && header.flags.contains(Flags::DOUBLE_READ) {
                        let (flags, len) = (header.flags, payload.len());
                        match self.merge_double_read(slot, from, flags, observed, len) {
                            Some(answer) => answer,
                            None => return, // The other half decides.
                        }
                    } else {
                        observed
                    };
                self.complete(header.seq, now, Outcome::Done(observed), inserts);
            }
            Status::RetryLater => {
                self.counters.retry_later += 1;
                self.counters.extra_bytes += payload.len() as u64;
                let attempt = self.slots[slot].as_ref().map_or(0, |p| p.attempts);
                self.timers
                    .push(now + nanos(RETRY_LATER_PAUSE), header.seq, attempt, false);
            }
            Status::Moved => {
                // The partition moved: address the new owner from now on, and resend.
                self.counters.moved += 1;
                self.counters.extra_bytes += payload.len() as u64;
                self.transmit(header.seq, now);
            }
            Status::Error => {
                self.counters.error_replies += 1;
                self.complete(header.seq, now, Outcome::Failed, inserts);
            }
            // Refused, not answered: a write may have been applied before the loss, so the
            // history says its outcome is unknown.
            Status::DataLost => {
                self.counters.data_lost += 1;
                self.complete(header.seq, now, Outcome::Failed, inserts);
            }
        }
    }

    /// Follows a new epoch of the chain's membership (`Cluster::chain_view`): every
    /// partition's requests go to the new head, reads spread over the new members.
    fn follow_chain_view(&mut self) {
        let Some(view) = &self.cluster.chain_view else {
            return;
        };
        let epoch = view.epoch();
        if epoch == self.chain_epoch {
            return;
        }
        self.chain_epoch = epoch;
        let members = view.members();
        if members.is_empty() {
            return;
        }
        for partition in 0..self.routes.len() {
            let addr = |m: &SocketAddrV4| crate::server::partition_addr(*m, partition as u32);
            let replicas: Vec<SocketAddrV4> = members.iter().map(addr).collect();
            // Whatever replica it addressed, the partition's requests go to the new head.
            let old = [self.routes[partition].0];
            self.follow_chain(partition, &old, &replicas);
        }
    }

    /// The coordinator changed a chain: requests of `partition` routed to any of `old`
    /// go to the head of `replicas`, and its reads spread over `replicas` (head first).
    pub fn follow_chain(
        &mut self,
        partition: usize,
        old: &[SocketAddrV4],
        replicas: &[SocketAddrV4],
    ) {
        self.follow_head(partition, old, replicas[0]);
        if let Some(spread) = self.read_replicas.get_mut(partition) {
            spread.clear();
            spread.extend_from_slice(replicas);
        }
    }

    /// A chain has a new head: requests of `partition` routed to any of `old` (the chain's
    /// replicas) go to `head`. (A client sent to a migration's destination follows its
    /// chain's head this way, while its reads stay with the shard's owner.)
    pub fn follow_head(&mut self, partition: usize, old: &[SocketAddrV4], head: SocketAddrV4) {
        let routes = self.routes.get_mut(partition).into_iter();
        for route in routes.chain(self.homes.get_mut(partition)) {
            if old.contains(&route.0) {
                route.0 = head;
            }
        }
    }

    /// A partition moved: address the new owner. A Fulva client starts tracking the
    /// migration; the source answering MOVED to the source's half of a double read means
    /// it has handed everything over.
    fn follow_moved(&mut self, header: &HeaderRepr, to: SocketAddrV4, shard: u16) {
        let partition = self.cluster.map.partition_of(header.key_hash) as usize;
        let Some(route) = self.routes.get_mut(partition) else {
            return;
        };
        if !self.settings.track_migrations {
            *route = (to, shard);
            return;
        }
        let tracking = &mut self.tracking[partition];
        let source_half =
            header.flags.contains(Flags::DOUBLE_READ) && !header.flags.contains(Flags::REDIRECTED);
        let back_to_source = tracking.as_ref().is_some_and(|t| t.source == (to, shard));
        if source_half {
            *tracking = None;
        } else if back_to_source {
            // The migration was aborted: the source owns it all again.
            *tracking = None;
            *route = (to, shard);
        } else if *route != (to, shard) {
            *tracking = Some(Tracking {
                source: *route,
                migrated_upto: self.cluster.map.groups_of(partition as u32).start,
                hot: HashSet::new(),
            });
            *route = (to, shard);
        }
    }

    /// A MOVED to the source's half of a double read that answers nothing outstanding: if
    /// it comes from the source being tracked, that source has handed everything over.
    fn source_handed_over(&mut self, from: SocketAddrV4, header: &HeaderRepr) {
        let source_half =
            header.flags.contains(Flags::DOUBLE_READ) && !header.flags.contains(Flags::REDIRECTED);
        let partition = self.cluster.map.partition_of(header.key_hash) as usize;
        if let Some(tracking) = self.tracking.get_mut(partition) {
            if source_half && tracking.as_ref().is_some_and(|t| t.source.0 == from) {
                *tracking = None;
            }
        }
    }

    /// A Fulva destination told how far its partition got and which keys it pulled early.
    fn track_progress(&mut self, key_hash: u64, progress: &wire::Progress<'_>) {
        let partition = self.cluster.map.partition_of(key_hash) as usize;
        let Some(Some(tracking)) = self.tracking.get_mut(partition) else {
            return;
        };
        tracking.migrated_upto = tracking.migrated_upto.max(progress.migrated_upto);
        if tracking.hot.len() >= MAX_HOT_KEYS {
            tracking.hot.clear();
        }
        tracking.hot.extend(progress.hot_keys());
    }

    /// Combines the halves of a double read: the destination's answer wins when it has the
    /// key's group; when it defers (NOT_MIGRATED), the source's half is the answer. Returns
    /// the answer once decided, None while the other half is awaited.
    fn merge_double_read(
        &mut self,
        slot: usize,
        from: SocketAddrV4,
        flags: Flags,
        observed: Option<u64>,
        bytes: usize,
    ) -> Option<Option<u64>> {
        let pending = self.slots[slot].as_mut()?;
        if pending.half.is_some() {
            self.counters.extra_bytes += bytes as u64;
        }
        let from_destination = flags.contains(Flags::REDIRECTED);
        let defers = flags.contains(Flags::NOT_MIGRATED);
        let decided = match (from_destination, defers, pending.half) {
            (true, false, _) => Some(observed),
            // Only a destination defers, whichever half it answers: a deferral is never
            // the answer.
            // The server that answered as the source now defers: it has since become a
            // destination (A→B→A), and its answer from before is not current.
            (_, true, Some(Half::Source(_, at))) if at == from => {
                pending.half = None;
                None
            }
            (_, true, Some(Half::Source(source, _))) => Some(source),
            (side, true, Some(Half::Deferred(other))) if side != other => {
                // Both halves deferred (the shard moved on meanwhile): ask both again.
                pending.half = None;
                None
            }
            (side, true, _) => {
                pending.half = Some(Half::Deferred(side));
                None
            }
            (false, false, Some(Half::Deferred(_))) => Some(observed),
            (false, false, _) => {
                pending.half = Some(Half::Source(observed, from));
                None
            }
        };
        if decided.is_some() {
            self.counters.double_reads += 1;
        }
        decided
    }

    /// Takes the items a multi-key reply answers. Returns whether every item now has its
    /// answer, and whether some item is to be asked for again (RETRY_LATER).
    fn merge_multi(
        &mut self,
        slot: usize,
        flags: Flags,
        items: &MultiReplyItems<'_>,
        bytes: usize,
    ) -> (bool, bool) {
        let Some(multi) = self.slots[slot]
            .as_mut()
            .and_then(|p| p.multi.as_deref_mut())
        else {
            return (false, false);
        };
        let from_dest = flags.contains(Flags::REDIRECTED);
        let (mut retry, mut news) = (false, false);
        for (i, item) in items.iter() {
            let bit = 1u16 << i;
            if multi.all() & !multi.done & bit == 0 {
                continue; // Answered already (or not an item of ours).
            }
            news = true;
            let observed = match item.status {
                Status::Ok if items.op == KeyOp::Get => {
                    Some(value::decode(item.value).unwrap_or(u64::MAX))
                }
                Status::Ok | Status::NotFound => None,
                Status::RetryLater => {
                    retry = true;
                    continue;
                }
                Status::Moved | Status::Error | Status::DataLost => {
                    if item.status == Status::DataLost {
                        self.counters.data_lost += 1;
                    } else {
                        self.counters.error_replies += 1;
                    }
                    multi.failed |= bit;
                    multi.done |= bit;
                    continue;
                }
            };
            let half = items.halves() & bit != 0;
            if multi.take(i, observed, half, from_dest, items.deferred() & bit != 0) && half {
                self.counters.double_reads += 1;
            }
        }
        if !news || retry {
            self.counters.extra_bytes += bytes as u64;
        }
        (multi.done == multi.all(), retry)
    }

    /// Retransmits, or gives up on, the requests whose timers are due at `now`.
    pub fn expire_timers(&mut self, now: Nanos, inserts: &InsertCounter) {
        while let Some((seq, attempt)) = self.timers.pop_due(now) {
            if seq < self.floor {
                continue; // Answered: every number below the floor is.
            }
            let Some(pending) = self.slots[self.slot_of(seq)].as_ref() else {
                continue;
            };
            if pending.seq != seq || pending.attempts != attempt {
                continue; // Completed, or re-armed by a later transmission.
            }
            if now.saturating_sub(pending.first_sent) >= nanos(self.settings.give_up) {
                self.counters.timeouts += 1;
                self.complete(seq, now, Outcome::Failed, inserts);
            } else {
                self.counters.retries += 1;
                self.transmit(seq, now);
            }
        }
    }

    fn complete(&mut self, seq: u64, now: Nanos, outcome: Outcome, inserts: &InsertCounter) {
        let index = self.slot_of(seq);
        let Some(pending) = self.slots[index].take() else {
            return;
        };
        self.outstanding -= 1;
        while self.floor < self.next_seq
            && self.slots[self.slot_of(self.floor)]
                .as_ref()
                .is_none_or(|p| p.seq != self.floor)
        {
            self.floor += 1;
        }
        if self.settings.record_history {
            self.record_history(&pending, &outcome, now);
        }
        let failed_items = pending.multi.as_ref().map_or(0, |m| m.failed);
        match outcome {
            Outcome::Failed => {
                self.counters.failed += 1;
                return;
            }
            _ if failed_items != 0 => {
                self.counters.failed += 1;
                return;
            }
            Outcome::Done(None) if !pending.is_write() && pending.multi.is_none() => {
                self.counters.not_found += 1
            }
            Outcome::Deleted { existed } => {
                self.counters.deletes += 1;
                self.counters.deletes_not_found += u64::from(existed == Some(false));
            }
            Outcome::Done(_) => {}
        }
        if let Some(multi) = &pending.multi {
            self.counters.multi_requests += 1;
            self.counters.multi_keys += multi.records.as_slice().len() as u64;
        }
        match pending.purpose {
            Purpose::RmwRead => {
                // The write half continues the same logical operation.
                self.issue(Purpose::RmwWrite, pending.record, pending.op_start, now);
                return;
            }
            Purpose::Insert => inserts.acknowledge(pending.record),
            _ => {}
        }
        self.counters.completed += 1;
        let latency = now.saturating_sub(pending.op_start);
        self.recorder.record(Duration::from_nanos(now), latency);
    }

    /// Adds the operation to the history: one entry per key, each with the request's
    /// interval and the process that issued it. An operation without an answer may or may
    /// not have happened (no return) and retires its process: the slot's next operation is
    /// another process, as Jepsen-style checkers expect after an unknown outcome.
    fn record_history(&mut self, pending: &Pending, outcome: &Outcome, now: Nanos) {
        let slot = self.slot_of(pending.seq);
        let process = (u64::from(self.writer) << 32) | (self.slot_process[slot] * MAX_KEYS as u64);
        let mut entries = [None; MAX_KEYS];
        match &pending.multi {
            Some(multi) => {
                for (i, &key) in multi.records.as_slice().iter().enumerate() {
                    // Items answered before a time-out still have their answer.
                    let answered = (multi.done & !multi.failed) & (1 << i) != 0;
                    let kind = if pending.is_write() {
                        OpKind::Write(value::tag(self.writer, pending.seq + i as u64))
                    } else {
                        OpKind::Read(answered.then_some(multi.observed[i]).flatten())
                    };
                    entries[i] = Some((key, kind, answered));
                }
            }
            None => {
                let kind = match (pending.purpose, *outcome) {
                    (Purpose::Delete, Outcome::Deleted { existed }) => OpKind::Delete(existed),
                    (Purpose::Delete, _) => OpKind::Delete(None),
                    _ if pending.is_write() => OpKind::Write(pending.tag),
                    (_, Outcome::Done(observed)) => OpKind::Read(observed),
                    _ => OpKind::Read(None),
                };
                entries[0] = Some((pending.record, kind, !matches!(outcome, Outcome::Failed)));
            }
        }
        let mut retire = false;
        for (item, (key, kind, answered)) in entries.into_iter().flatten().enumerate() {
            retire |= !answered;
            let op = HistoryOp {
                key,
                process: process + item as u64,
                call_ns: pending.first_sent,
                return_ns: answered.then_some(now),
                end_ns: now,
                kind,
            };
            if self
                .history
                .last()
                .is_none_or(|chunk| chunk.len() == HISTORY_CHUNK)
            {
                self.history.push(Vec::with_capacity(HISTORY_CHUNK));
            }
            self.history
                .last_mut()
                .expect("a chunk was just ensured")
                .push(op);
        }
        if retire {
            self.slot_process[slot] = self.next_process;
            self.next_process += 1;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Answered; for reads, the tag of the value read (None: not found).
    Done(Option<u64>),
    /// A delete answered OK (the key existed), NOT_FOUND, or OK to a copy already applied
    /// (None: the first answer said which).
    Deleted { existed: Option<bool> },
    /// No valid answer: timed out, or answered ERROR.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::port::PortStats;
    use std::net::Ipv4Addr;

    /// A port that keeps what is sent, for an engine driven by hand.
    struct Captured(Vec<Box<Packet>>);

    impl Port for Captured {
        fn recv(&mut self, _: &mut Vec<Box<Packet>>, _: usize) -> std::io::Result<usize> {
            Ok(0)
        }
        fn send(&mut self, tx: &mut Vec<Box<Packet>>) -> std::io::Result<usize> {
            let n = tx.len();
            self.0.append(tx);
            Ok(n)
        }
        fn alloc(&mut self) -> Box<Packet> {
            Packet::new_boxed()
        }
        fn release(&mut self, _: Box<Packet>) {}
        fn local_addr(&self) -> SocketAddrV4 {
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5000)
        }
        fn stats(&self) -> PortStats {
            PortStats::default()
        }
    }

    /// A MOVED that answers no outstanding request (late, or a duplicate from before the
    /// shard came back) leaves the route alone; one that answers a request is followed.
    /// (A late MOVED used to re-route the partition's requests.)
    /// An engine of one partition at `origin`, driven by hand.
    fn engine_at(origin: SocketAddrV4) -> Engine {
        let map = kv::PartitionMap::new(kv::GroupLayout::new(8).unwrap(), 1).unwrap();
        let cluster = Arc::new(Cluster {
            chain_view: None,
            partitions: vec![origin],
            map,
            shard: 1,
            replicas: Vec::new(),
        });
        let settings = Settings {
            threads: 1,
            window: 4,
            rate_per_thread: None,
            timeout: Duration::from_millis(1),
            max_timeout: Duration::from_millis(10),
            give_up: Duration::from_secs(1),
            record_history: false,
            progress: false,
            seed: 1,
            track_migrations: false,
            reads_at_tail: false,
            idle: Idle::Share,
        };
        let spec = Arc::new(WorkloadSpec::builtin("c").unwrap());
        let port = Box::new(Captured(Vec::new()));
        Engine::new(port, cluster, spec, settings, 9, 9, Instant::now())
    }

    /// Only a destination defers (NOT_MIGRATED), on whichever half it answers: after the
    /// shard moved on, the server asked as the source may itself be a destination. Two
    /// deferrals decide nothing; a destination's answer decides. (A deferral on the
    /// source's half used to be taken as the source's answer: a stale NOT_FOUND, found by
    /// `netmigrate simulate`.)
    #[test]
    fn a_deferral_is_never_the_answer_of_a_double_read() {
        let origin = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7100);
        let mut engine = engine_at(origin);
        engine.start(Planned::Read(3), 0);
        let slot = engine.slot_of(1);
        let half = Flags::DOUBLE_READ.with(Flags::FROM_DESTINATION);
        let deferral = half.with(Flags::NOT_MIGRATED);
        let redirected = |flags: Flags| flags.with(Flags::REDIRECTED);
        let destination = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 7100);
        assert_eq!(
            engine.merge_double_read(slot, origin, deferral, None, 40),
            None
        );
        assert_eq!(
            engine.merge_double_read(slot, destination, redirected(deferral), None, 40),
            None,
            "both halves deferred: undecided"
        );
        assert_eq!(
            engine.merge_double_read(slot, destination, redirected(half), Some(5), 40),
            Some(Some(5))
        );
    }

    /// A shard that moved A→B and straight back B→A while a double read was out: A answered
    /// the source's half before, and defers now as the destination of the move back. Its
    /// old answer is not current (the key may have been deleted at B meanwhile), so the
    /// deferral decides nothing and both are asked again. (Taken together they read a
    /// deleted key's old value: `simulate --replicas 3 --crashes 4 --crash-destination-heads`
    /// seed 1072.)
    #[test]
    fn a_source_answer_is_not_confirmed_by_the_same_server_deferring_later() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7100);
        let b = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 7100);
        let mut engine = engine_at(a);
        engine.start(Planned::Read(3), 0);
        let slot = engine.slot_of(1);
        let source_half = Flags::DOUBLE_READ;
        // On the source's half, as A answers it now (not redirected by the switch).
        let deferral = Flags::DOUBLE_READ
            .with(Flags::FROM_DESTINATION)
            .with(Flags::NOT_MIGRATED);
        assert_eq!(
            engine.merge_double_read(slot, a, source_half, Some(7), 40),
            None
        );
        assert_eq!(
            engine.merge_double_read(slot, a, deferral, None, 40),
            None,
            "the same server deferring later confirms nothing"
        );
        assert_eq!(
            engine.merge_double_read(slot, b, source_half, None, 40),
            None
        );
        assert_eq!(
            engine.merge_double_read(slot, a, deferral, None, 40),
            Some(None),
            "a deferral from the other server decides"
        );
    }

    #[test]
    fn only_a_matched_moved_moves_the_route() {
        let origin = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7100);
        let elsewhere = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 7100);
        let mut engine = engine_at(origin);
        let inserts = InsertCounter::new(1000);
        engine.start(Planned::Read(3), 0);
        let moved = |seq: u64| {
            let header = HeaderRepr {
                op: Op::GetReply,
                flags: Flags::default(),
                status: Status::Moved,
                shard: 1,
                seq,
                key_hash: 0,
                client: 9,
                oldest_gap: 0,
            };
            let reply = Reply::Moved {
                to: elsewhere,
                shard: 1,
            };
            let mut buf = vec![0; 128];
            let len = wire::emit_reply(&header, &reply, &mut buf).unwrap();
            buf.truncate(len);
            buf
        };
        engine.on_reply(origin, &moved(77), 1, &inserts);
        assert_eq!(engine.routes[0], (origin, 1), "a late MOVED moves nothing");
        engine.on_reply(origin, &moved(1), 2, &inserts);
        assert_eq!(
            engine.routes[0],
            (elsewhere, 1),
            "the answer to seq 1 is followed"
        );
    }

    fn pending(records: usize) -> MultiPending {
        let mut draws = 0..;
        MultiPending::new(Records::draw(records, || draws.next().unwrap()))
    }

    /// Item 0 plain, item 1 a double read where the destination has the key, item 2 one
    /// where it defers, each half arriving in either order.
    #[test]
    fn multi_key_answers_merge_item_by_item() {
        for source_first in [true, false] {
            let mut m = pending(3);
            assert!(
                m.take(0, Some(7), false, true, false),
                "a plain answer decides"
            );
            let source = |m: &mut MultiPending| {
                (
                    m.take(1, Some(10), true, false, false),
                    m.take(2, Some(20), true, false, false),
                )
            };
            let dest = |m: &mut MultiPending| {
                (
                    m.take(1, Some(11), true, true, false),
                    m.take(2, None, true, true, true),
                )
            };
            let (first, second) = if source_first {
                (source(&mut m), dest(&mut m))
            } else {
                (dest(&mut m), source(&mut m))
            };
            // The destination's answer decides at once; a deferral waits for the source.
            if source_first {
                assert_eq!((first, second), ((false, false), (true, true)));
            } else {
                assert_eq!((first, second), ((true, false), (false, true)));
            }
            assert_eq!(m.done, m.all());
            assert_eq!(m.observed[..3], [Some(7), Some(11), Some(20)]);
        }
    }
}
