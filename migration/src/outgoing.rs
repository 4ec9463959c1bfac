//! The source side of a migration, for one partition of one shard: a sans-I/O state
//! machine driven by the partition's loop (`poll` and the acknowledgements it is given).
//!
//! NetMigrate, per group: freeze and announce it to the switch; once the switch has applied
//! the announcement, tell the destination (with the version floor and the write-dedup
//! entries it needs), ship the group's entries, and only after the destination has
//! *applied* all of them announce the group complete to the switch.
//!
//! Fulva and source-based ship groups the same way without the switch; Rocksteady's
//! destination pulls them instead (`bulk.rs`; the source answers and waits for
//! BULK_DONE). They differ in who serves the shard meanwhile (`Outgoing::rule`):
//! Rocksteady and Fulva hand ownership to the destination once it has applied INIT;
//! source-based keeps serving, re-ships what clients wrote to groups already shipped, and
//! ends with a stop-and-copy. See `docs/migration.md`.

use crate::bulk::BulkAnswer;
use crate::dedup::WriteDedup;
use crate::incoming::Incoming;
use crate::lost::LostGroups;
use crate::stream::StreamSender;
use crate::throttle::TokenBucket;
use crate::ticket::MigrationTicket;
use dataplane::wire::{
    self, LateWrite, MigratedItem, Protocol, ScanPosition, StreamMessage, SwitchControl,
};
use dataplane::Packet;
use kv::{Lookup, Partition, PartitionMap};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddrV4;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a group of the migrating partition stands, as the source sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupPhase {
    /// The source owns it: serve reads and writes.
    NotStarted,
    /// Announced to the switch, not yet acknowledged: no writes apply here any more; they
    /// are held until the destination is told.
    Freezing,
    /// Handed over: reads are served from the frozen copy, writes go to the destination.
    HandedOver,
}

/// Where to send a migration and at what speed.
#[derive(Debug, Clone)]
pub struct OutgoingPlan {
    pub shard: u16,
    /// Address of the destination's core for this partition.
    pub destination: SocketAddrV4,
    pub destination_shard: u16,
    /// The switch's control address.
    pub switch: SocketAddrV4,
    /// This server's address as the switch's pair table knows it (IPv4 of the shard).
    pub source: SocketAddrV4,
    pub items_per_s: Option<f64>,
    /// Groups handed over at once (each waits for round trips to the switch and the
    /// destination, so several overlap).
    pub pipeline: usize,
    pub protocol: Protocol,
    /// Shared by every partition of this migration (stream id, abort or cut-over).
    pub ticket: Arc<MigrationTicket>,
}

/// How the source answers a request for the migrating shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRule {
    Serve,
    /// A write for a group handed over (NetMigrate): pass it to the destination.
    Hold,
    /// Ownership is moving right now: ask again shortly.
    RetryLater,
    /// The destination serves it: answer MOVED.
    Moved,
    /// The destination restarted and lost the group's newer writes: answer DATA_LOST.
    DataLost,
}

/// Source-based: stop and copy once a catch-up round has at most this many keys to re-ship
/// (the artifact stops at 21).
const STOP_KEYS: usize = 64;
/// Source-based: stop after this many catch-up rounds even if writes keep up with them.
const MAX_ROUNDS: u32 = 16;

/// Progress counters, summed over partitions for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutgoingStats {
    pub groups: u64,
    pub groups_done: u64,
    /// Entries and tombstones the partition held when the migration started (INIT's count).
    pub keys_at_start: u64,
    pub keys_moved: u64,
    pub bytes_moved: u64,
    pub late_writes: u64,
    /// Late writes answered RETRY_LATER because `MAX_LATE_WRITES` were waiting.
    pub late_writes_refused: u64,
    pub dedup_entries: u64,
    pub stream_bytes: u64,
    pub retransmissions: u64,
    /// Source-based: keys re-shipped because a client wrote them after their group left.
    pub dirty_keys: u64,
    pub catch_up_rounds: u64,
    /// Keys the source answered pulls for, and the bytes of those answers.
    pub pulled_keys: u64,
    pub pull_bytes: u64,
    /// Rocksteady: bytes of bulk-pull answers sent (resends included).
    pub bulk_bytes: u64,
    pub finished: bool,
    /// The migration was aborted and the shard is the source's again.
    pub aborted: bool,
    /// Entries and tombstones the destination sent back after an abort.
    pub returned_keys: u64,
    /// NetMigrate: ERROR answers from the switch to control messages (its pair table is
    /// full, the shard is paired with another destination or by another migration, or it
    /// lost the pair). The switch does not steer such a migration, so it is called off.
    pub switch_refusals: u64,
    /// ERROR answers from the destination to INIT: it holds data of the shard, or its
    /// partitions or group bits differ. The migration is called off.
    pub destination_refusals: u64,
    /// The destination restarted empty after it had applied INIT (it answered `ERROR` for
    /// a stream it had known): groups of this partition only it held, lost and refused
    /// with DATA_LOST from then on.
    pub lost_groups: u64,
    /// A destination chain's new head took the migration over (its predecessor died).
    pub destination_takeovers: u64,
}

impl OutgoingStats {
    pub fn add(&mut self, s: &OutgoingStats) {
        self.groups += s.groups;
        self.groups_done += s.groups_done;
        self.keys_at_start += s.keys_at_start;
        self.keys_moved += s.keys_moved;
        self.bytes_moved += s.bytes_moved;
        self.late_writes += s.late_writes;
        self.dedup_entries += s.dedup_entries;
        self.stream_bytes += s.stream_bytes;
        self.retransmissions += s.retransmissions;
        self.dirty_keys += s.dirty_keys;
        self.catch_up_rounds += s.catch_up_rounds;
        self.pulled_keys += s.pulled_keys;
        self.destination_takeovers += s.destination_takeovers;
        self.pull_bytes += s.pull_bytes;
        self.bulk_bytes += s.bulk_bytes;
        self.finished |= s.finished;
        self.aborted |= s.aborted;
        self.returned_keys += s.returned_keys;
        self.switch_refusals += s.switch_refusals;
        self.destination_refusals += s.destination_refusals;
        self.late_writes_refused += s.late_writes_refused;
        self.lost_groups += s.lost_groups;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for the switch to apply GROUP_START (control seq).
    SwitchStart(u64),
    /// Entries being pushed into the destination stream.
    Shipping,
    /// Waiting for the destination to apply everything up to this stream seq.
    Applying(u64),
    /// Waiting for the switch to apply GROUP_COMPLETE (control seq).
    SwitchComplete(u64),
    /// Done; leaves the pipeline once every group before it is done too.
    Finished,
}

/// An encoded data batch: item count, key and value bytes, items.
pub type Batch = (u16, u64, Vec<u8>);

struct Active {
    group: u32,
    step: Step,
    /// Encoded batches not yet pushed.
    batches: VecDeque<Batch>,
}

/// Encodes entries into batches that fit one frame each. Generic over how the entries are
/// visited (a group's scan, a list of keys), so the visit inlines into the encoding: every
/// entry a migration moves passes through `push`.
pub struct BatchEncoder {
    batches: VecDeque<Batch>,
    items: Vec<u8>,
    count: u16,
    bytes: u64,
}

impl Default for BatchEncoder {
    fn default() -> Self {
        BatchEncoder {
            batches: VecDeque::new(),
            // A frame's worth from the start: grown entry by entry, the buffer was
            // reallocated several times a batch.
            items: Vec::with_capacity(BATCH_BYTES),
            count: 0,
            bytes: 0,
        }
    }
}

impl BatchEncoder {
    /// Adds an entry (`value` None: a tombstone).
    #[inline]
    pub fn push(&mut self, key: &[u8], value: Option<&[u8]>, version: u64) {
        let item = MigratedItem {
            key,
            value,
            version,
        };
        if !wire::push_item(&mut self.items, BATCH_BYTES, &item) {
            let full = std::mem::replace(&mut self.items, Vec::with_capacity(BATCH_BYTES));
            self.batches.push_back((self.count, self.bytes, full));
            (self.count, self.bytes) = (0, 0);
            assert!(
                wire::push_item(&mut self.items, BATCH_BYTES, &item),
                "a stored entry fits one batch"
            );
        }
        self.count += 1;
        self.bytes += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
    }

    /// The batches, the last one partly filled.
    pub fn finish(mut self) -> VecDeque<Batch> {
        if self.count > 0 {
            self.batches.push_back((self.count, self.bytes, self.items));
        }
        self.batches
    }
}

/// Every entry and tombstone of `group` in `table`, as batches.
pub fn encode_group(table: &Partition, group: u32) -> VecDeque<Batch> {
    let mut encoder = BatchEncoder::default();
    table.for_each_in_group(group, |entry| {
        encoder.push(entry.key, entry.value, entry.version)
    });
    encoder.finish()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// INIT sent to the switch (NetMigrate) and the destination; no group starts before
    /// both applied it.
    Init {
        switch: Option<u64>,
        destination: u64,
    },
    Groups,
    /// Source-based: re-shipping keys written after their group left, round by round;
    /// waits for the destination to apply the round's last message.
    CatchingUp {
        round: u32,
        applied: u64,
    },
    /// TERMINATE sent to the destination.
    Terminating(u64),
    /// TERMINATE sent to the switch; the source answers MOVED from now on.
    CuttingOver(u64),
    Done,
    /// Aborted: ABORT sent to the destination, which sends back what it holds
    /// (`returned`); the source serves what the destination never had.
    Aborting,
    /// NetMigrate: everything is back; TERMINATE sent to the switch so it forgets the
    /// pair. The source serves the whole shard.
    Unpairing(u64),
    Aborted,
}

/// Room for the items of one data batch (the rest of the frame is header and batch header).
const BATCH_BYTES: usize = wire::MAX_PAYLOAD - wire::HEADER_LEN - 8;
// Every stored entry fits one batch: client writes and migrated or pulled entries longer
// than MAX_ENTRY_LEN are refused (`wire::entry_fits`).
const _: () = assert!(wire::MAX_ENTRY_LEN + wire::ITEM_OVERHEAD <= BATCH_BYTES);
/// Late writes waiting at once, held for a freezing group or queued in the destination
/// stream; past it, clients are asked to retry.
const MAX_LATE_WRITES: usize = 4096;
/// DEDUP_ENTRIES items in one message (12 bytes each).
const DEDUP_ENTRIES_PER_BATCH: usize = (BATCH_BYTES - 4) / 12;
/// Destination stream window (messages). Data is pushed only while the stream holds less
/// than this, so a late write queues behind at most a window of data.
pub(crate) const STREAM_WINDOW: usize = 64;
/// Groups frozen but not yet fully pushed into the stream.
const UNSHIPPED_GROUPS: usize = 2;
/// A stream with nothing in flight this long gets a PROBE: a destination that restarted
/// answers it `ERROR`, and the source learns the loss even while it has nothing to send
/// (Rocksteady's source waits for pulls).
const PROBE_AFTER: Duration = Duration::from_millis(10);

pub struct Outgoing {
    plan: OutgoingPlan,
    map: PartitionMap,
    partition: u32,
    groups: Range<u32>,
    phases: Vec<GroupPhase>,
    next_group: u32,
    active: VecDeque<Active>,
    to_destination: StreamSender,
    to_switch: StreamSender,
    stage: Stage,
    dedup_log: Vec<(u32, u64)>,
    held: Vec<(u32, OwnedLateWrite)>,
    budget: TokenBucket,
    /// Source-based: keys written after their group was shipped (key → hash).
    dirty: HashMap<Vec<u8>, u64>,
    /// Source-based: the final stop-and-copy began; the source serves nothing more.
    stopped: bool,
    /// Rocksteady: scan positions answered (a resent request's answer moves no new keys).
    bulk_answered: HashSet<ScanPosition>,
    /// After an abort: applies what the destination sends back (its own stream).
    returned: Option<Box<Incoming>>,
    /// The ABORT's stream seq, once sent: an `ERROR` answering it means nothing is there.
    abort_seq: Option<u64>,
    /// When the destination last acknowledged anything, or was last probed.
    quiet_since: Option<Instant>,
    /// The destination's incarnation, from its first acknowledgement.
    destination_incarnation: Option<u64>,
    /// Groups the destination lost when it restarted.
    lost: LostGroups,
    /// Counted as ready to cut over by the ticket.
    ready_to_commit: bool,
    stats: OutgoingStats,
}

/// A late write kept until its group's destination has been told.
#[derive(Debug, Clone)]
pub struct OwnedLateWrite {
    pub reply_to: SocketAddrV4,
    pub client: u32,
    pub seq: u64,
    pub oldest_gap: u32,
    pub key_hash: u64,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl OwnedLateWrite {
    fn view(&self) -> LateWrite<'_> {
        LateWrite {
            reply_to: self.reply_to,
            client: self.client,
            seq: self.seq,
            oldest_gap: self.oldest_gap,
            key_hash: self.key_hash,
            key: &self.key,
            value: self.value.as_deref(),
        }
    }
}

impl Outgoing {
    pub fn new(plan: OutgoingPlan, map: &PartitionMap, partition: u32) -> Self {
        let groups = map.groups_of(partition);
        let budget = TokenBucket::new(
            plan.items_per_s,
            plan.items_per_s
                .map_or(1.0, |rate| (rate / 100.0).max(64.0)),
        );
        let id = plan.ticket.stream_id();
        Outgoing {
            to_destination: StreamSender::new(plan.destination, STREAM_WINDOW, id),
            to_switch: StreamSender::new(plan.switch, plan.pipeline.max(1) * 2, id),
            map: *map,
            partition,
            phases: vec![GroupPhase::NotStarted; groups.len()],
            next_group: groups.start,
            groups,
            active: VecDeque::new(),
            stage: Stage::Groups, // replaced by `start`
            dedup_log: Vec::new(),
            held: Vec::new(),
            budget,
            dirty: HashMap::new(),
            stopped: false,
            bulk_answered: HashSet::new(),
            returned: None,
            abort_seq: None,
            quiet_since: None,
            destination_incarnation: None,
            lost: LostGroups::new(map.groups_of(partition)),
            ready_to_commit: false,
            stats: OutgoingStats::default(),
            plan,
        }
    }

    /// Sends INIT to the switch (NetMigrate) and the destination, with the source's
    /// write-dedup windows so the destination never applies a write twice.
    pub fn start(&mut self, table: &Partition, dedup: &WriteDedup) {
        self.stats.groups = self.groups.len() as u64;
        let plan = self.plan.clone();
        let switch = (plan.protocol == Protocol::NetMigrate).then(|| {
            let control = SwitchControl::Init {
                source_ip: *plan.source.ip(),
                dest_ip: *plan.destination.ip(),
                dest_shard: plan.destination_shard,
                size_exp: kv::SIZE_EXP,
                remain_exp: kv::SIZE_EXP - self.map.layout().group_bits(),
                partitions: self.map.partitions() as u16,
                partition: self.partition as u16,
            };
            self.tell_switch(&control)
        });
        let init = StreamMessage::Init {
            source_shard: plan.shard,
            partitions: self.map.partitions() as u16,
            group_bits: self.map.layout().group_bits(),
            entries: (table.len() + table.tombstones()).min(u32::MAX as usize) as u32,
            source_clock: table.clock(),
            protocol: plan.protocol,
            parallel_pulls: plan.pipeline.clamp(1, 255) as u8,
        };
        self.stats.keys_at_start = (table.len() + table.tombstones()) as u64;
        let mut destination = self.tell_destination(&init);
        for window in dedup.windows() {
            // Ownership may move once the windows are there, not just INIT.
            destination = self.tell_destination(&window.message());
        }
        self.stage = Stage::Init {
            switch,
            destination,
        };
    }

    pub fn stats(&self) -> OutgoingStats {
        let mut stats = self.stats;
        stats.stream_bytes = self.to_destination.bytes_sent + self.to_switch.bytes_sent;
        stats.retransmissions =
            self.to_destination.retransmissions + self.to_switch.retransmissions;
        stats
    }

    pub fn plan(&self) -> &OutgoingPlan {
        &self.plan
    }

    pub fn phase(&self, group: u32) -> GroupPhase {
        self.phases
            .get(group.wrapping_sub(self.groups.start) as usize)
            .copied()
            .unwrap_or(GroupPhase::NotStarted)
    }

    /// The source stopped serving this partition of the shard: every group's data is
    /// applied at the destination and TERMINATE is on its way, so a write held now would
    /// queue behind TERMINATE and never be applied.
    pub fn is_moved(&self) -> bool {
        matches!(
            self.stage,
            Stage::Terminating(_) | Stage::CuttingOver(_) | Stage::Done
        )
    }

    /// Who answers a request for `group` (see the module comment). `double_read`: the
    /// switch sent it as a double read's source half; `forwarded`: the destination passed
    /// it on.
    pub fn rule(
        &self,
        group: u32,
        is_read: bool,
        double_read: bool,
        forwarded: bool,
    ) -> SourceRule {
        if self.lost.contains(group) {
            return SourceRule::DataLost;
        }
        let transferring = matches!(self.stage, Stage::Init { .. });
        match self.stage {
            // The source's copy of what the destination held may be stale until it is
            // back; what never left (and source-based's whole shard) is current.
            Stage::Aborting => {
                return match self.plan.protocol {
                    Protocol::NetMigrate if self.phase(group) == GroupPhase::NotStarted => {
                        SourceRule::Serve
                    }
                    Protocol::SourceBased => SourceRule::Serve,
                    _ => SourceRule::RetryLater,
                }
            }
            Stage::Unpairing(_) | Stage::Aborted => return SourceRule::Serve,
            _ => {}
        }
        match self.plan.protocol {
            Protocol::NetMigrate if self.is_moved() => SourceRule::Moved,
            Protocol::NetMigrate if !is_read && self.phase(group) != GroupPhase::NotStarted => {
                SourceRule::Hold
            }
            // A plain read of a group handed over comes here only from a switch that no
            // longer steers the migration (it restarted): writes since went to the
            // destination, so the frozen copy may be stale. The refused control message
            // calls the migration off; until the group is back, ask again.
            Protocol::NetMigrate
                if !double_read && !forwarded && self.phase(group) == GroupPhase::HandedOver =>
            {
                SourceRule::RetryLater
            }
            Protocol::NetMigrate => SourceRule::Serve,
            // Until the destination has INIT and the dedup windows, nothing is written here;
            // but a client still addressing the destination (from before an earlier
            // migration of the shard) may write there as soon as INIT is applied, so the
            // copy here is not known current for reads either. Both wait the round trip.
            Protocol::Rocksteady | Protocol::Fulva if transferring => SourceRule::RetryLater,
            Protocol::Rocksteady => SourceRule::Moved,
            // Fulva clients read what has not migrated from both sides; the source's copy
            // is frozen, and the client prefers the destination's when it has the key.
            Protocol::Fulva if is_read && double_read && self.stage != Stage::Done => {
                SourceRule::Serve
            }
            Protocol::Fulva => SourceRule::Moved,
            Protocol::SourceBased if self.stopped => SourceRule::Moved,
            Protocol::SourceBased => SourceRule::Serve,
        }
    }

    /// Source-based: a client wrote `key` here; if its group was shipped already, the
    /// write must be shipped again.
    pub fn dirtied(&mut self, group: u32, hash: u64, key: &[u8]) {
        if self.plan.protocol == Protocol::SourceBased
            && self.phase(group) != GroupPhase::NotStarted
            && !self.is_aborting()
        {
            self.dirty.insert(key.to_vec(), hash);
        }
    }

    /// Counts a pull this source answered.
    pub fn answered_pull(&mut self, keys: u64, bytes: usize) {
        self.stats.pulled_keys += keys;
        self.stats.pull_bytes += bytes as u64;
    }

    /// Rocksteady: whether the migration budget lets the source answer a bulk pull now.
    pub fn bulk_budget_left(&mut self, now: Instant) -> bool {
        self.budget.available(now) > 0
    }

    /// Rocksteady: the source answered a bulk pull from `asked`.
    pub fn answered_bulk(&mut self, asked: ScanPosition, answer: &BulkAnswer) {
        self.budget.spend(u64::from(answer.entries));
        self.stats.bulk_bytes += answer.len as u64;
        if answer.next > asked && self.bulk_answered.insert(asked) {
            self.stats.keys_moved += u64::from(answer.entries);
            self.stats.bytes_moved += answer.bytes;
            self.stats.groups_done += u64::from(answer.next.group - asked.group);
        }
    }

    /// Rocksteady: the destination has pulled and replayed every group; end the stream.
    /// Returns whether the notice is taken (answer it): not while INIT is still being
    /// acknowledged, so the destination keeps asking until the source can act on it.
    pub fn bulk_done(&mut self, table: &Partition) -> bool {
        if self.plan.protocol != Protocol::Rocksteady {
            return false;
        }
        match self.stage {
            Stage::Groups => {
                self.terminate(table);
                // Not taken if the migration was aborted meanwhile.
                matches!(self.stage, Stage::Terminating(_))
            }
            Stage::Init { .. } | Stage::CatchingUp { .. } => false,
            Stage::Terminating(_) | Stage::CuttingOver(_) | Stage::Done => true,
            Stage::Aborting | Stage::Unpairing(_) | Stage::Aborted => false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// The abort finished: the source owns the whole shard again.
    pub fn is_aborted(&self) -> bool {
        self.stage == Stage::Aborted
    }

    /// The migration is being (or was) called off.
    pub fn is_aborting(&self) -> bool {
        matches!(
            self.stage,
            Stage::Aborting | Stage::Unpairing(_) | Stage::Aborted
        )
    }

    /// After an abort: whether a stream message from `from` on stream `stream_id` is
    /// part of what the destination sends back.
    pub fn accepts_return(&self, from: SocketAddrV4, stream_id: u32) -> bool {
        self.stage == Stage::Aborting
            && from == self.plan.destination
            && stream_id == self.plan.ticket.stream_id()
    }

    /// The receiver of what the destination sends back (while aborting).
    pub fn returned_mut(&mut self) -> Option<&mut Incoming> {
        self.returned.as_deref_mut()
    }

    /// The destination's TERMINATE of the return was applied: the source serves the
    /// shard again, and (NetMigrate) tells the switch to forget the pair.
    pub fn finish_return(&mut self) {
        if let Some(returned) = self.returned.take() {
            let stats = returned.stats();
            self.stats.returned_keys += stats.items_applied + stats.items_stale;
        }
        self.stats.aborted = true;
        self.stage = if self.plan.protocol == Protocol::NetMigrate {
            Stage::Unpairing(self.tell_switch(&self.switch_terminate()))
        } else {
            Stage::Aborted
        };
    }

    /// A client write the source applied itself (its group is not started), and whether
    /// it found its key (false for a DELETE answered NOT_FOUND): the destination must
    /// learn it, so a retransmission that reaches it is answered the same and not
    /// re-applied. The log goes out a batch at a time, so it stays bounded.
    pub fn applied_write(&mut self, client: u32, seq: u64, found: bool) {
        if !self.is_aborting() {
            let flag = if found { 0 } else { wire::DEDUP_NOT_FOUND };
            self.dedup_log.push((client, seq | flag));
            if self.dedup_log.len() >= DEDUP_ENTRIES_PER_BATCH {
                self.flush_dedup_log();
            }
        }
    }

    /// A client write for a group the source has frozen: held until the destination knows
    /// the group, then passed on in the stream; the destination answers the client.
    /// Returns false, taking nothing, when `MAX_LATE_WRITES` wait already (held, or queued
    /// for a slow destination): the client is asked to retry.
    pub fn late_write(&mut self, group: u32, write: OwnedLateWrite) -> bool {
        if self.held.len() >= MAX_LATE_WRITES || self.to_destination.pending() >= MAX_LATE_WRITES {
            self.stats.late_writes_refused += 1;
            return false;
        }
        self.stats.late_writes += 1;
        match self.phase(group) {
            GroupPhase::HandedOver => {
                let message = StreamMessage::LateWrite(write.view());
                self.tell_destination(&message);
            }
            _ => self.held.push((group, write)),
        }
        true
    }

    /// An acknowledgement from the destination or the switch.
    pub fn on_ack(&mut self, from: SocketAddrV4, ack: &wire::HeaderRepr, now: Instant) {
        if ack.op.is_switch_control_ack() {
            if self.to_switch.owns_ack(from, ack) {
                if ack.status == wire::Status::Error && !self.is_refusal_harmless(ack.op) {
                    self.switch_refused(ack.seq, now);
                } else {
                    self.to_switch.on_ack(ack.seq, now);
                }
            }
        } else if self.to_destination.owns_ack(from, ack) {
            if ack.status == wire::Status::Error {
                self.on_destination_error(ack.seq, ack.key_hash);
                return;
            }
            // A destination's probe (MIGRATE_PROBE's acknowledgement, sent unasked) does not
            // carry its incarnation: taken for one, it made the next ERROR look like a
            // restart, and the migration lost every group.
            if ack.op != wire::Op::MigrateProbeAck {
                self.destination_incarnation.get_or_insert(ack.key_hash);
            }
            self.quiet_since = Some(now);
            self.to_destination.on_ack(ack.seq, now);
        }
    }

    /// The destination does not know this migration's stream. If another incarnation of it
    /// acknowledged INIT, it restarted and lost what it held; the same one answered a
    /// message that overtook INIT. Otherwise nothing of the migration is there: it refused
    /// INIT (it holds data of the shard, or its partitions or group bits differ), or the
    /// ABORT came before INIT; the migration is called off with nothing to take back.
    fn on_destination_error(&mut self, seq: u64, incarnation: u64) {
        const INIT_SEQ: u64 = 0;
        let answers_init_or_abort = seq == INIT_SEQ || self.abort_seq == Some(seq);
        if let Some(known) = self.destination_incarnation {
            if known != incarnation {
                self.lose_destination();
            }
        } else if self.stage == Stage::Aborting && answers_init_or_abort {
            self.finish_return();
        } else if seq == INIT_SEQ && !self.is_aborting() {
            self.stats.destination_refusals += 1;
            let _ = self.plan.ticket.abort();
        }
    }

    /// The destination restarted empty: the groups whose newer writes only it held are
    /// lost (NetMigrate: those handed over; Rocksteady and Fulva: all, ownership moved at
    /// INIT; source-based: all once the source stopped, none before). The migration ends
    /// here, for every partition; the shard stays the source's, those groups refused.
    fn lose_destination(&mut self) {
        if self.stage == Stage::Aborted || matches!(self.stage, Stage::Unpairing(_)) {
            return;
        }
        let everything = match self.plan.protocol {
            Protocol::NetMigrate => self.is_moved(),
            Protocol::Rocksteady | Protocol::Fulva => true,
            Protocol::SourceBased => self.stopped,
        };
        for group in self.groups.clone() {
            if everything || self.phase(group) == GroupPhase::HandedOver {
                self.lost.mark(group);
            }
        }
        self.stats.lost_groups = u64::from(self.lost.count());
        let _ = self.plan.ticket.abort();
        self.active.clear();
        self.held.clear();
        self.dirty.clear();
        self.dedup_log.clear();
        self.returned = None;
        self.finish_return();
    }

    /// The destination chain's new head, at `to`, took the migration over (its predecessor
    /// died: MIGRATE_TAKEOVER). It holds everything its predecessor acknowledged but none of
    /// the protocol's state (which groups it holds, pulls, the stream's position), so the
    /// migration cannot go on as it was. Past the commit every partition is ready to cut
    /// over: the stream goes on to the new head (what was not acknowledged, then TERMINATE).
    /// Before it the migration is called off, for every partition, and the stream starts
    /// again with ABORT; the new head sends back what it holds. False when nothing is left
    /// to settle with it: the migration ended, everything back here.
    pub fn take_over_destination(&mut self, to: SocketAddrV4) -> bool {
        let ended = matches!(
            self.stage,
            Stage::Unpairing(_) | Stage::Aborted | Stage::CuttingOver(_) | Stage::Done
        );
        if ended || self.plan.destination == to {
            return !ended;
        }
        self.stats.destination_takeovers += 1;
        let committed = self.plan.ticket.abort().is_err();
        self.plan.destination = to;
        self.destination_incarnation = None;
        self.quiet_since = None;
        self.to_destination.redirect(to, committed);
        if !committed {
            self.begin_abort();
            return true;
        }
        // Stages waiting on a message of the old numbering wait for the last one now.
        let last = self.to_destination.next_seq() - 1;
        self.stage = match self.stage {
            Stage::Terminating(_) => Stage::Terminating(last),
            Stage::CatchingUp { round, .. } => Stage::CatchingUp {
                round,
                applied: last,
            },
            stage => stage,
        };
        true
    }

    /// Whether this acknowledgement is from this migration's destination, for its stream.
    pub fn sends_to(&self, from: SocketAddrV4, ack: &wire::HeaderRepr) -> bool {
        self.to_destination.owns_ack(from, ack)
    }

    /// The groups the destination lost (empty unless it restarted).
    pub fn lost_groups(&self) -> &LostGroups {
        &self.lost
    }

    /// A refused TERMINATE while unpairing after an abort: the switch holds nothing of
    /// this partition's to forget. (Ours answers such a TERMINATE `Ok`; a switch that
    /// refuses one of a partition that never joined is not waited for.)
    fn is_refusal_harmless(&self, op: wire::Op) -> bool {
        op == wire::Op::SwitchTerminateAck && matches!(self.stage, Stage::Unpairing(_))
    }

    /// The switch refused a control message: it does not steer this migration, so the
    /// source must not act as if it did (a group handed over while the switch still sends
    /// its reads here would be read stale). The migration is called off, for every
    /// partition of the shard; the refused message stays unacknowledged until the
    /// unpairing TERMINATE's answer covers it. Once a partition has committed to the
    /// cut-over the call-off is refused and this partition goes on as if applied: for a
    /// TERMINATE that is right (every group is at the destination and the source answers
    /// MOVED); a pair lost while other partitions still move groups is not recovered.
    fn switch_refused(&mut self, seq: u64, now: Instant) {
        self.stats.switch_refusals += 1;
        // An abort taken here reaches every partition at its next poll, this one included.
        if self.plan.ticket.abort().is_err() {
            self.to_switch.on_ack(seq, now);
        }
    }

    /// Advances the migration: groups through their steps, streams, retransmissions.
    pub fn poll(&mut self, now: Instant, table: &Partition, out: &mut Vec<Box<Packet>>) {
        let abortable = matches!(
            self.stage,
            Stage::Init { .. } | Stage::Groups | Stage::CatchingUp { .. }
        );
        if abortable && self.plan.ticket.abort_requested() {
            self.begin_abort();
        }
        match self.stage {
            Stage::Init {
                switch,
                destination,
            } => {
                let switch_ready = switch.is_none_or(|seq| self.to_switch.is_acked(seq));
                if switch_ready && self.to_destination.is_acked(destination) {
                    self.stage = Stage::Groups;
                }
            }
            // Rocksteady: the destination pulls; the source waits for its BULK_DONE. Once
            // it came, the partition cuts over with the others, even if the destination
            // that sent it was replaced meanwhile (its successor pulls nothing).
            Stage::Groups if self.plan.protocol == Protocol::Rocksteady => {
                if self.ready_to_commit {
                    self.terminate(table);
                }
            }
            Stage::Groups => {
                self.advance_groups(now, table);
                if self.next_group == self.groups.end && self.active.is_empty() {
                    if self.plan.protocol == Protocol::SourceBased {
                        self.catch_up(0, table);
                    } else {
                        self.terminate(table);
                    }
                }
            }
            Stage::CatchingUp { round, applied } => {
                if self.to_destination.is_acked(applied) {
                    self.catch_up(round + 1, table);
                }
            }
            Stage::Terminating(seq) if self.plan.protocol != Protocol::NetMigrate => {
                if self.to_destination.is_acked(seq) {
                    self.stage = Stage::Done;
                    self.stats.finished = true;
                }
            }
            Stage::Terminating(seq) => {
                if self.to_destination.is_acked(seq) {
                    let seq = self.tell_switch(&self.switch_terminate());
                    self.stage = Stage::CuttingOver(seq);
                }
            }
            Stage::CuttingOver(seq) => {
                if self.to_switch.is_acked(seq) {
                    self.stage = Stage::Done;
                    self.stats.finished = true;
                }
            }
            Stage::Done | Stage::Aborting | Stage::Aborted => {}
            Stage::Unpairing(seq) => {
                if self.to_switch.is_acked(seq) {
                    self.stage = Stage::Aborted;
                }
            }
        }
        self.probe_if_quiet(now);
        self.to_switch.poll(now, out);
        self.to_destination.poll(now, out);
    }

    /// While the destination holds the migration's state and has acknowledged nothing for
    /// a while, a PROBE finds out whether it still does (a restarted one answers it with
    /// its new incarnation; so does every message it is resent).
    fn probe_if_quiet(&mut self, now: Instant) {
        let holding = self.destination_incarnation.is_some()
            && matches!(
                self.stage,
                Stage::Init { .. } | Stage::Groups | Stage::CatchingUp { .. } | Stage::Aborting
            );
        if !holding || self.to_destination.pending() >= STREAM_WINDOW {
            return;
        }
        let since = *self.quiet_since.get_or_insert(now);
        if now.duration_since(since) >= PROBE_AFTER {
            self.tell_destination(&StreamMessage::Probe);
            self.quiet_since = Some(now);
        }
    }

    /// Source-based: re-ships the keys written since their group left; once a round is
    /// small enough (or enough rounds ran), stops serving and ships the last of them.
    fn catch_up(&mut self, round: u32, table: &Partition) {
        let last_round = self.dirty.len() <= STOP_KEYS || round >= MAX_ROUNDS;
        let layout = self.map.layout();
        let mut dirty: Vec<(u32, Vec<u8>, u64)> = self
            .dirty
            .drain()
            .map(|(key, hash)| (layout.group_of(hash), key, hash))
            .collect();
        dirty.sort_unstable();
        self.stats.dirty_keys += dirty.len() as u64;
        self.stats.catch_up_rounds += 1;
        let mut run_start = 0;
        while run_start < dirty.len() {
            let group = dirty[run_start].0;
            let run_end = dirty[run_start..]
                .iter()
                .position(|d| d.0 != group)
                .map_or(dirty.len(), |n| run_start + n);
            let mut encoder = BatchEncoder::default();
            for (_, key, hash) in &dirty[run_start..run_end] {
                match table.get(*hash, key) {
                    Lookup::Found { version, value } => encoder.push(key, Some(value), version),
                    Lookup::Deleted { version } => encoder.push(key, None, version),
                    Lookup::Absent => {}
                }
            }
            self.push_batches(group, encoder.finish());
            run_start = run_end;
        }
        // An aborted migration keeps catching up until `poll` sees the abort.
        if last_round && self.plan.ticket.commit(&mut self.ready_to_commit) {
            self.stopped = true;
            self.terminate(table);
        } else {
            let applied = self.to_destination.next_seq() - 1;
            self.stage = Stage::CatchingUp { round, applied };
        }
    }

    /// Ends the stream with TERMINATE, unless the migration was aborted (then `poll`
    /// turns to the abort).
    fn terminate(&mut self, table: &Partition) {
        if !self.plan.ticket.commit(&mut self.ready_to_commit) {
            return;
        }
        self.flush_dedup_log();
        let terminate = StreamMessage::Terminate {
            floor_clock: table.clock(),
        };
        let seq = self.tell_destination(&terminate);
        self.stage = Stage::Terminating(seq);
    }

    /// Calls the migration off: nothing more goes to the destination after ABORT, and
    /// writes held for it are dropped unanswered (clients resend them and are asked to
    /// retry until the shard is back).
    fn begin_abort(&mut self) {
        self.abort_seq = Some(self.tell_destination(&StreamMessage::Abort));
        self.active.clear();
        self.held.clear();
        self.dirty.clear();
        self.dedup_log.clear();
        self.returned = Some(Box::new(Incoming::new(
            self.plan.destination,
            self.plan.destination_shard,
            self.plan.ticket.stream_id(),
            &self.map,
            self.partition,
        )));
        self.stage = Stage::Aborting;
    }

    fn push_batches(&mut self, group: u32, batches: VecDeque<Batch>) {
        for batch in batches {
            self.push_batch(group, batch);
        }
    }

    /// Pushes one data batch into the destination stream, paid from the budget.
    fn push_batch(&mut self, group: u32, (count, bytes, items): Batch) {
        self.budget.spend(u64::from(count));
        let message = StreamMessage::Data {
            group,
            count,
            items: &items,
        };
        self.tell_destination(&message);
        self.stats.keys_moved += u64::from(count);
        self.stats.bytes_moved += bytes;
    }

    fn advance_groups(&mut self, now: Instant, table: &Partition) {
        // Start new groups while the pipeline has room, but freeze a group only when its
        // data is about to ship: a frozen group's writes wait for the destination to learn
        // the group, which sits behind the data shipped before it.
        let unshipped = |a: &Active| matches!(a.step, Step::SwitchStart(_) | Step::Shipping);
        while self.active.len() < self.plan.pipeline.max(1)
            && self.active.iter().filter(|a| unshipped(a)).count() < UNSHIPPED_GROUPS
            && self.next_group < self.groups.end
        {
            let group = self.next_group;
            self.next_group += 1;
            if self.plan.protocol == Protocol::NetMigrate {
                self.set_phase(group, GroupPhase::Freezing);
                let control = SwitchControl::GroupStart {
                    source_ip: *self.plan.source.ip(),
                    partition: self.partition as u16,
                    group,
                };
                let seq = self.tell_switch(&control);
                self.active.push_back(Active {
                    group,
                    step: Step::SwitchStart(seq),
                    batches: VecDeque::new(),
                });
            } else {
                self.active.push_back(Active {
                    group,
                    step: Step::Shipping,
                    batches: VecDeque::new(),
                });
                let index = self.active.len() - 1;
                self.hand_over(index, table);
            }
        }
        let mut index = 0;
        while index < self.active.len() {
            let group = self.active[index].group;
            match self.active[index].step {
                Step::SwitchStart(seq) if self.to_switch.is_acked(seq) => {
                    self.hand_over(index, table);
                    continue; // Re-examine: shipping may proceed right away.
                }
                Step::Shipping => {
                    if !self.ship(index, now) {
                        break; // Out of budget: later groups wait too, in order.
                    }
                    continue;
                }
                Step::Applying(seq)
                    if self.to_destination.is_acked(seq)
                        && self.plan.protocol != Protocol::NetMigrate =>
                {
                    self.stats.groups_done += 1;
                    self.active[index].step = Step::Finished;
                }
                Step::Applying(seq) if self.to_destination.is_acked(seq) => {
                    let control = SwitchControl::GroupComplete {
                        source_ip: *self.plan.source.ip(),
                        partition: self.partition as u16,
                        group,
                    };
                    let seq = self.tell_switch(&control);
                    self.active[index].step = Step::SwitchComplete(seq);
                }
                Step::SwitchComplete(seq) if self.to_switch.is_acked(seq) => {
                    self.stats.groups_done += 1;
                    self.active[index].step = Step::Finished;
                }
                _ => {}
            }
            index += 1;
        }
        while self
            .active
            .front()
            .is_some_and(|a| a.step == Step::Finished)
        {
            self.active.pop_front();
        }
    }

    /// The switch now steers the group's writes to the destination: tell the destination
    /// (dedup entries first, then the version floor), pass on held writes, and snapshot the
    /// frozen group into batches.
    /// (The baselines skip the switch and the destination's hand-over: the snapshot is
    /// all there is.)
    fn hand_over(&mut self, index: usize, table: &Partition) {
        let group = self.active[index].group;
        self.set_phase(group, GroupPhase::HandedOver);
        if self.plan.protocol == Protocol::NetMigrate {
            self.flush_dedup_log();
            let start = StreamMessage::GroupStart {
                group,
                floor_clock: table.clock(),
            };
            self.tell_destination(&start);
            let held = std::mem::take(&mut self.held);
            for (held_group, write) in held {
                if held_group == group {
                    let message = StreamMessage::LateWrite(write.view());
                    self.tell_destination(&message);
                } else {
                    self.held.push((held_group, write));
                }
            }
        }
        self.active[index].batches = encode_group(table, group);
        self.active[index].step = Step::Shipping;
    }

    /// Pushes the group's batches as the budget allows; false when the budget ran out.
    fn ship(&mut self, index: usize, now: Instant) -> bool {
        let group = self.active[index].group;
        while let Some((count, _, _)) = self.active[index].batches.front() {
            if self.budget.available(now) < u64::from(*count).min(64)
                || self.to_destination.pending() >= STREAM_WINDOW
            {
                return false;
            }
            let batch = self.active[index].batches.pop_front().expect("front");
            self.push_batch(group, batch);
        }
        if self.plan.protocol != Protocol::NetMigrate {
            // Tells the destination every entry of the group is there.
            self.tell_destination(&StreamMessage::GroupComplete { group });
        }
        // The last message pushed for this group (its GroupStart if it had no entries).
        let last = self.to_destination.next_seq() - 1;
        self.active[index].step = Step::Applying(last);
        true
    }

    fn flush_dedup_log(&mut self) {
        let log = std::mem::take(&mut self.dedup_log);
        for chunk in log.chunks(DEDUP_ENTRIES_PER_BATCH) {
            let mut entries = Vec::with_capacity(chunk.len() * 12);
            for (client, seq) in chunk {
                entries.extend_from_slice(&client.to_be_bytes());
                entries.extend_from_slice(&seq.to_be_bytes());
            }
            let message = StreamMessage::DedupEntries { entries: &entries };
            self.tell_destination(&message);
        }
        self.stats.dedup_entries += log.len() as u64;
    }

    /// This partition is done with the pair (cut over, or back after an abort).
    fn switch_terminate(&self) -> SwitchControl {
        SwitchControl::Terminate {
            source_ip: *self.plan.source.ip(),
            partition: self.partition as u16,
        }
    }

    fn tell_switch(&mut self, control: &SwitchControl) -> u64 {
        let shard = self.plan.shard;
        self.to_switch
            .push(control.op(), shard, |b| control.emit(b))
    }

    fn tell_destination(&mut self, message: &StreamMessage<'_>) -> u64 {
        let shard = self.plan.destination_shard;
        self.to_destination
            .push(message.op(), shard, |b| message.emit(b))
    }

    fn set_phase(&mut self, group: u32, phase: GroupPhase) {
        if let Some(slot) = self
            .phases
            .get_mut(group.wrapping_sub(self.groups.start) as usize)
        {
            *slot = phase;
        }
    }
}
