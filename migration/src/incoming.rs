//! The destination side of a migration, for one partition of one shard: applies the
//! source's stream strictly in order and knows which groups it has been handed, which
//! decides how the partition serves requests for them (see `serve/requests.rs`).

use crate::bulk::{BulkPuller, Replayed};
use crate::dedup::{apply_write, repeat_answer, DedupVerdict, WriteDedup, WriteId};
use crate::journal::{Journal, Record, StreamOrigin};
use crate::lost::LostGroups;
use crate::pull::Puller;
use crate::stream::StreamReceiver;
use dataplane::wire::{
    self, Flags, HeaderRepr, LateWrite, MigratedItem, Op, Protocol, Reply, Status, StreamMessage,
};
use dataplane::Packet;
use kv::{key_hash, Partition, PartitionMap, PutOutcome};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::ops::Range;
use std::time::{Duration, Instant};

/// Most entries an INIT makes a destination reserve room for (256 MiB of buckets): a
/// hostile INIT announcing 2^32 − 1 entries must not make the allocator abort.
pub const MAX_RESERVED_ENTRIES: usize = 1 << 24;

/// Counters of one incoming migration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IncomingStats {
    pub groups_started: u64,
    pub items_applied: u64,
    /// Migrated entries older than what the destination already had (a newer write won).
    pub items_stale: u64,
    pub late_writes: u64,
    /// Stream messages that parsed but made no sense (wrong group, bad hash): dropped.
    pub rejected: u64,
    pub finished: bool,
    /// The source restarted empty mid-migration (it answered a probe `ERROR`): groups not
    /// wholly here, lost and refused with DATA_LOST.
    pub lost_groups: u64,
}

impl IncomingStats {
    pub fn add(&mut self, s: &IncomingStats) {
        self.groups_started += s.groups_started;
        self.items_applied += s.items_applied;
        self.items_stale += s.items_stale;
        self.late_writes += s.late_writes;
        self.rejected += s.rejected;
        self.finished |= s.finished;
        self.lost_groups += s.lost_groups;
    }
}

pub struct Incoming {
    /// The source core's address (the stream's peer) and the shard there.
    pub source: SocketAddrV4,
    pub source_shard: u16,
    /// The id the source's stream carries (`stream.rs`).
    pub stream_id: u32,
    pub protocol: Protocol,
    groups: Range<u32>,
    /// Per group, whether it is here: handed over (NetMigrate: its writes apply here and its
    /// data follows in the stream) or complete (the baselines: all its data was applied).
    handed_over: Vec<bool>,
    /// NetMigrate: per group, whether all of its data was applied (GROUP_COMPLETE).
    complete: Vec<bool>,
    /// Groups below this are all here (Fulva's progress, announced to clients).
    migrated_upto: u32,
    receiver: StreamReceiver,
    pub puller: Puller,
    /// Rocksteady's bulk transfer (from INIT on).
    pub bulk: Option<BulkPuller>,
    hot: HotKeys,
    /// When the source's stream last brought something, and whether it answered the
    /// latest probe `ERROR` (it restarted).
    last_heard: Option<Instant>,
    source_lost: bool,
    takeover: Takeover,
    stats: IncomingStats,
}

/// A successor that took over the chain's head in the middle of a migration in holds every
/// record of it but none of the protocol's state (which groups are here, pulls, the
/// stream's position), so it serves nothing of the shard and asks the source to resolve
/// the migration with it: the source rolls it back (ABORT) or, past the cut-over, ends it
/// (TERMINATE), in a stream it restarts towards this replica (`docs/replication.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takeover {
    /// The partition's own migration (it took INIT itself).
    No,
    /// MIGRATE_TAKEOVER sent (last at this time), not answered yet.
    Asking(Option<Instant>),
    /// The source took it: its stream's ABORT or TERMINATE is on its way.
    Taken,
    /// The source knows no such migration any more: it ended with everything back there.
    Over,
}

/// A source silent this long is asked whether it still knows the stream: the destination
/// sends it the stream's acknowledgement again (PROBE's ack); a source that restarted
/// answers it `ERROR`.
const PROBE_AFTER: Duration = Duration::from_millis(10);

/// Fulva's sampled hot keys: misses sampled from double reads, the hottest pulled early,
/// and those announced to clients once applied so they read them here alone.
#[derive(Default)]
struct HotKeys {
    misses: u64,
    samples: HashMap<u64, (Vec<u8>, u32)>,
    last_pick: Option<Instant>,
    announced: VecDeque<u64>,
    replies: u64,
}

/// One miss in this many is sampled (the artifact samples 1 %).
const SAMPLE_EVERY: u64 = 16;
/// How often the hottest samples are pulled.
const PICK_EVERY: Duration = Duration::from_millis(10);
/// Distinct keys sampled between two picks; past it, only known keys gain hits.
const MAX_SAMPLES: usize = 4096;
/// Keys pulled per pick.
const PICK_KEYS: usize = 16;
/// One reply in this many carries the progress trailer.
const ANNOUNCE_EVERY: u64 = 16;

/// How the destination answers a request for the migrating shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationRule {
    /// Serve it from the local table.
    Serve,
    /// Not here yet: answer the double read's half NOT_MIGRATED (the source's half answers).
    NotMigrated,
    /// Not here yet: park the request and pull the key.
    Pull,
    /// Pass it to the source (NetMigrate: the group is still the source's).
    Forward,
    /// Ask the client to retry (the source still serves, or its hand-over is in flight).
    RetryLater,
}

/// What applying a stream message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Continue,
    /// TERMINATE: the destination now owns every group of the shard.
    Terminated,
    /// ABORT: the source takes the shard back; send it what is here.
    Aborted,
}

impl Incoming {
    pub fn new(
        source: SocketAddrV4,
        source_shard: u16,
        stream_id: u32,
        map: &PartitionMap,
        partition: u32,
    ) -> Self {
        let groups = map.groups_of(partition);
        Incoming {
            source,
            source_shard,
            stream_id,
            protocol: Protocol::NetMigrate, // INIT names it
            handed_over: vec![false; groups.len()],
            complete: vec![false; groups.len()],
            migrated_upto: groups.start,
            groups,
            receiver: StreamReceiver::default(),
            puller: Puller::new(source, source_shard, stream_id),
            bulk: None,
            hot: HotKeys::default(),
            last_heard: None,
            source_lost: false,
            takeover: Takeover::No,
            stats: IncomingStats::default(),
        }
    }

    /// The migration in that a replica's records show under way, taken over by it as its
    /// chain's new head: it asks the source to resolve it (`Takeover`). The source's stream
    /// starts again after INIT, which the records hold.
    pub fn taken_over(origin: StreamOrigin, map: &PartitionMap, partition: u32) -> Self {
        let (source, shard, id) = (origin.source, origin.shard, origin.stream_id);
        let mut incoming = Incoming::new(source, shard, id, map, partition);
        incoming.protocol = origin.protocol;
        incoming.receiver = StreamReceiver::after_init();
        incoming.takeover = Takeover::Asking(None);
        incoming
    }

    /// Where this migration comes from (its log record names it).
    pub fn origin(&self) -> StreamOrigin {
        StreamOrigin {
            source: self.source,
            shard: self.source_shard,
            stream_id: self.stream_id,
            protocol: self.protocol,
        }
    }

    /// The source's answer to MIGRATE_TAKEOVER: `ERROR` means it knows no such migration
    /// (it ended, everything back at the source).
    pub fn on_takeover_answer(&mut self, from: SocketAddrV4, ack: &HeaderRepr) {
        let ours = from == self.source && ack.client == self.stream_id;
        if ours && matches!(self.takeover, Takeover::Asking(_)) {
            self.takeover = match ack.status {
                Status::Ok => Takeover::Taken,
                _ => Takeover::Over,
            };
        }
    }

    /// A taken-over migration the source no longer knows: everything is back there.
    pub fn is_over_at_source(&self) -> bool {
        self.takeover == Takeover::Over
    }

    /// Asks the source to resolve a taken-over migration, every stream timeout until it
    /// answers.
    fn ask_takeover(&mut self, now: Instant, out: &mut Vec<Box<Packet>>) {
        let Takeover::Asking(last) = self.takeover else {
            return;
        };
        if last.is_some_and(|at| now.duration_since(at) < crate::stream::RTO) {
            return;
        }
        self.takeover = Takeover::Asking(Some(now));
        out.push(self.to_source(Op::MigrateTakeover, 0));
    }

    /// A header-only message to the source about this stream.
    fn to_source(&self, op: Op, seq: u64) -> Box<Packet> {
        let header = HeaderRepr {
            op,
            flags: Flags::default(),
            status: Status::Ok,
            shard: self.source_shard,
            seq,
            key_hash: 0,
            client: self.stream_id,
            oldest_gap: 0,
        };
        let mut packet = Packet::new_boxed();
        let len = wire::emit_with(&header, packet.buffer_mut(), |_| Ok(0)).expect("a header fits");
        packet.set_len(len);
        packet.dst = self.source;
        packet
    }

    /// Who answers a request for `group`; `present` says whether the key has an entry or
    /// tombstone here (looked up only when the answer depends on it).
    /// `(is_read, is_delete)` says what the request does. A DELETE's answer (OK or
    /// NOT_FOUND) reads the key, so a delete of a key not here yet waits for it like a read.
    pub fn rule(
        &self,
        group: u32,
        (is_read, is_delete): (bool, bool),
        double_read: bool,
        forwarded: bool,
        present: impl Fn() -> bool,
    ) -> DestinationRule {
        if self.takeover != Takeover::No {
            // Which groups are here died with the old head; the source's TERMINATE or
            // ABORT settles the shard.
            return DestinationRule::RetryLater;
        }
        let here = self.has_group(group);
        match self.protocol {
            Protocol::NetMigrate => match (here, is_read && double_read, forwarded) {
                (true, true, _) if !present() => DestinationRule::NotMigrated,
                // A plain read the switch did not double (a client that addresses this
                // server itself, e.g. from before an earlier migration): while the group's
                // data is still coming, a key not here yet is the source's to answer.
                (true, false, false) if is_read && !self.is_complete(group) && !present() => {
                    DestinationRule::Forward
                }
                // A delete of a key whose data may still come: whether it existed is not
                // known yet, so the client asks again once it is.
                (true, false, false) if is_delete && !self.is_complete(group) && !present() => {
                    DestinationRule::RetryLater
                }
                (true, _, _) => DestinationRule::Serve,
                (false, true, _) => DestinationRule::NotMigrated,
                (false, false, true) => DestinationRule::RetryLater,
                (false, false, false) => DestinationRule::Forward,
            },
            // The shard is the source's until TERMINATE.
            Protocol::SourceBased => DestinationRule::RetryLater,
            // Writes are newer than anything the source has; reads of what is here are
            // current; a missing key may be the source's.
            Protocol::Rocksteady | Protocol::Fulva => {
                if here || (!is_read && !is_delete) || present() {
                    DestinationRule::Serve
                } else if is_read && double_read && self.protocol == Protocol::Fulva {
                    DestinationRule::NotMigrated
                } else {
                    DestinationRule::Pull
                }
            }
        }
    }

    /// A double-read miss (Fulva): every `SAMPLE_EVERY`th is counted towards hotness.
    pub fn sample_miss(&mut self, hash: u64, key: &[u8]) {
        self.hot.misses += 1;
        let room = self.hot.samples.len() < MAX_SAMPLES || self.hot.samples.contains_key(&hash);
        if self.hot.misses % SAMPLE_EVERY == 0 && room {
            self.hot
                .samples
                .entry(hash)
                .or_insert_with(|| (key.to_vec(), 0))
                .1 += 1;
        }
    }

    /// Pulls the hottest samples now and then (Fulva), and sends due pulls.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Box<Packet>>) {
        if self.takeover != Takeover::No {
            self.ask_takeover(now, out);
            if self.takeover == Takeover::Taken {
                self.probe_if_silent(now, out);
            }
            return;
        }
        let pick_due = self
            .hot
            .last_pick
            .is_none_or(|at| now.duration_since(at) >= PICK_EVERY);
        if self.protocol == Protocol::Fulva && pick_due && !self.hot.samples.is_empty() {
            self.hot.last_pick = Some(now);
            let mut samples: Vec<_> = self.hot.samples.drain().collect();
            // Hottest first; ties by hash, so every run picks the same.
            samples.sort_unstable_by_key(|(hash, (_, hits))| (std::cmp::Reverse(*hits), *hash));
            for (hash, (key, _)) in samples.into_iter().take(PICK_KEYS) {
                self.puller.want(hash, &key, false, true);
            }
        }
        self.puller.poll(now, out);
        if let Some(bulk) = &mut self.bulk {
            bulk.poll(now, out);
        }
        self.probe_if_silent(now, out);
    }

    /// The source's stream brought a message (at `now`).
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
    }

    fn probe_if_silent(&mut self, now: Instant, out: &mut Vec<Box<Packet>>) {
        let heard = *self.last_heard.get_or_insert(now);
        if now.duration_since(heard) < PROBE_AFTER {
            return;
        }
        self.last_heard = Some(now);
        let seq = self.receiver.last_applied().unwrap_or(0);
        out.push(self.to_source(Op::MigrateProbeAck, seq));
    }

    /// An answer to the probe: `ERROR` means the source no longer knows the stream.
    pub fn on_probe_answer(&mut self, from: SocketAddrV4, ack: &HeaderRepr) {
        if from == self.source && ack.client == self.stream_id && ack.status == Status::Error {
            self.source_lost = true;
        }
    }

    /// The source restarted: the groups whose data is not wholly here are lost. The
    /// partition serves the rest as their owner from now on.
    pub fn lost_with_source(&mut self) -> Option<LostGroups> {
        if !self.source_lost {
            return None;
        }
        let mut lost = LostGroups::new(self.groups.clone());
        for group in self.groups.clone() {
            let whole = match self.protocol {
                Protocol::NetMigrate => self.is_complete(group),
                Protocol::Rocksteady | Protocol::Fulva => self.has_group(group),
                Protocol::SourceBased => false,
            };
            if !whole {
                lost.mark(group);
            }
        }
        self.stats.lost_groups = u64::from(lost.count());
        Some(lost)
    }

    /// A pulled entry that could not be stored (of another partition, or too long).
    pub fn reject_item(&mut self) {
        self.stats.rejected += 1;
    }

    /// A pulled hot key is here: announce it.
    pub fn announce(&mut self, hash: u64) {
        if self.hot.announced.len() == wire::MAX_HOT_KEYS {
            self.hot.announced.pop_front();
        }
        self.hot.announced.push_back(hash);
    }

    /// Fulva: whether this reply should carry the progress trailer; if so, the progress.
    pub fn progress_due(&mut self) -> Option<(u32, Vec<u64>)> {
        if self.protocol != Protocol::Fulva {
            return None;
        }
        self.hot.replies += 1;
        (self.hot.replies % ANNOUNCE_EVERY == 0).then(|| {
            (
                self.migrated_upto,
                self.hot.announced.iter().copied().collect(),
            )
        })
    }

    pub fn stats(&self) -> IncomingStats {
        self.stats
    }

    pub fn receiver(&mut self) -> &mut StreamReceiver {
        &mut self.receiver
    }

    /// A group's place in the per-group flags (past their end for a group of another
    /// partition).
    fn index(&self, group: u32) -> usize {
        group.wrapping_sub(self.groups.start) as usize
    }

    /// NetMigrate: whether all of this group's data was applied here.
    fn is_complete(&self, group: u32) -> bool {
        self.complete.get(self.index(group)) == Some(&true)
    }

    /// Whether the source has handed this group over (its writes apply here).
    pub fn has_group(&self, group: u32) -> bool {
        self.handed_over.get(self.index(group)) == Some(&true)
    }

    /// Applies the next in-order stream message to `destination_shard`'s table; what it
    /// changes is recorded in `journal`. Late writes are answered through `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        message: &StreamMessage<'_>,
        table: &mut Partition,
        dedup: &mut WriteDedup,
        journal: &mut Journal,
        layout: kv::GroupLayout,
        destination_shard: u16,
        out: &mut Vec<Box<Packet>>,
    ) -> Applied {
        match *message {
            StreamMessage::Init {
                source_clock,
                entries,
                protocol,
                parallel_pulls,
                ..
            } => {
                self.protocol = protocol;
                table.advance_clock(source_clock);
                // Sized up front to spare the core a rehash mid-migration, but never past
                // MAX_RESERVED_ENTRIES: the count is the peer's word. Beyond it the table
                // grows as entries arrive.
                table.reserve((entries as usize).min(MAX_RESERVED_ENTRIES));
                if protocol == Protocol::Rocksteady {
                    self.bulk = Some(BulkPuller::new(
                        self.source,
                        self.source_shard,
                        self.stream_id,
                        self.groups.clone(),
                        usize::from(parallel_pulls),
                    ));
                }
            }
            StreamMessage::DedupWindow {
                client,
                floor,
                bitmap,
                not_found,
            } => {
                dedup.merge_window(client, floor, bitmap, not_found);
                journal.record(&Record::Window {
                    client,
                    floor,
                    applied: bitmap,
                    not_found,
                });
            }
            StreamMessage::DedupEntries { entries } => {
                for (client, seq, found) in wire::dedup_entries(entries) {
                    dedup.remember(client, seq, found);
                    journal.record(&Record::Remember { client, seq, found });
                }
            }
            StreamMessage::GroupStart { group, floor_clock } => {
                table.advance_clock(floor_clock);
                self.arrived(group);
            }
            StreamMessage::GroupComplete { group } => {
                if self.protocol == Protocol::NetMigrate {
                    let index = self.index(group);
                    if let Some(done) = self.complete.get_mut(index) {
                        *done = true;
                    }
                } else {
                    self.arrived(group);
                }
            }
            StreamMessage::Data { group, items, .. } => {
                for item in wire::data_items(items) {
                    let groups = group..group + 1;
                    self.apply_item(table, journal, destination_shard, layout, groups, &item);
                }
            }
            StreamMessage::LateWrite(late) => {
                self.stats.late_writes += 1;
                let store = (table, dedup, journal);
                if let Some(reply) = apply_late_write(&late, store, destination_shard, layout, self)
                {
                    out.push(reply);
                }
            }
            StreamMessage::Terminate { floor_clock } => {
                table.advance_clock(floor_clock);
                self.stats.finished = true;
                return Applied::Terminated;
            }
            StreamMessage::Abort => return Applied::Aborted,
            StreamMessage::Probe => {}
        }
        Applied::Continue
    }
}

impl Incoming {
    /// Rocksteady: replays about `max_items` pulled entries into `shard`'s table (recorded
    /// in `journal`); groups it completed are here.
    pub fn replay(
        &mut self,
        table: &mut Partition,
        journal: &mut Journal,
        shard: u16,
        layout: kv::GroupLayout,
        max_items: usize,
    ) -> Replayed {
        let Some(mut bulk) = self.bulk.take() else {
            return Replayed::default();
        };
        let replayed = bulk.replay(max_items, |item, groups| {
            self.apply_item(table, journal, shard, layout, groups, &item)
        });
        for groups in &replayed.complete {
            for group in groups.clone() {
                self.arrived(group);
            }
        }
        self.bulk = Some(bulk);
        replayed
    }

    /// Applies one migrated entry of `groups` unless a newer write is here already.
    fn apply_item(
        &mut self,
        table: &mut Partition,
        journal: &mut Journal,
        shard: u16,
        layout: kv::GroupLayout,
        groups: Range<u32>,
        item: &MigratedItem<'_>,
    ) {
        let hash = key_hash(item.key);
        let fits = wire::entry_fits(item.key, item.value.unwrap_or(&[]));
        if !fits || !groups.contains(&layout.group_of(hash)) || !table.owns(hash) {
            self.stats.rejected += 1;
            return;
        }
        match table.put_if_newer(hash, item.key, item.value, item.version) {
            PutOutcome::Applied => {
                self.stats.items_applied += 1;
                journal.record(&Record::Data {
                    shard,
                    version: item.version,
                    key: item.key,
                    value: item.value,
                });
            }
            PutOutcome::Stale => self.stats.items_stale += 1,
        }
    }

    fn arrived(&mut self, group: u32) {
        let index = self.index(group);
        match self.handed_over.get_mut(index) {
            Some(slot) => {
                if !*slot {
                    self.stats.groups_started += 1;
                }
                *slot = true;
            }
            None => self.stats.rejected += 1,
        }
        while self.has_group(self.migrated_upto) {
            self.migrated_upto += 1;
        }
    }
}

/// Applies a write the source passed on and builds the client's reply (None: a stale copy,
/// or a message that makes no sense, which is counted).
fn apply_late_write(
    late: &LateWrite<'_>,
    (table, dedup, journal): (&mut Partition, &mut WriteDedup, &mut Journal),
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
    let absent = || matches!(table.get(hash, late.key), kv::Lookup::Absent);
    let (status, version) =
        if late.value.is_none() && !incoming.is_complete(layout.group_of(hash)) && absent() {
            // A delete of a key whose data may still come in the stream: whether it existed
            // is not known yet. Not applied (nor recorded); the client asks again.
            (Status::RetryLater, 0)
        } else {
            admit_late_write(late, (table, dedup, journal), shard, hash)?
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

/// Applies a late write once (dedup), and what its answer says: status and version. None
/// for a copy older than the client's floor (it has its answer).
fn admit_late_write(
    late: &LateWrite<'_>,
    (table, dedup, journal): (&mut Partition, &mut WriteDedup, &mut Journal),
    shard: u16,
    hash: u64,
) -> Option<(Status, u64)> {
    let (client, seq) = (late.client, late.seq);
    Some(match dedup.admit(client, seq, late.oldest_gap) {
        // A destination keeps tombstones: the source's older copy may still arrive.
        DedupVerdict::Apply => apply_write(
            (table, dedup, journal),
            WriteId { shard, client, seq },
            hash,
            late.key,
            late.value,
            true,
        ),
        DedupVerdict::Duplicate { found } => repeat_answer(found),
        DedupVerdict::Stale => return None,
        DedupVerdict::OutOfWindow | DedupVerdict::Full => (Status::Error, 0),
    })
}
