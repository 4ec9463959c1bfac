//! Chain replication of a partition (CRAQ), the link layer: which bytes of the partition's
//! journal each replica holds, passes on and may forget, and when the tail has applied them
//! (committed). Sans-I/O: the partition server (`serve/chain.rs`) applies the records and
//! turns frames into datagrams; the coordinator gives the configuration.
//!
//! The head's journal is the chain's stream. Every replica keeps the stream from what the
//! tail has committed on (a successor spliced in after a failure may need any of it), passes
//! it to its successor in frames named by their byte offset (go-back-N: a frame that does
//! not start where the receiver is is a duplicate, its new suffix taken, or a gap, dropped),
//! and acknowledges upstream what it holds and what the tail has applied. A frame also
//! carries what its sender knows is committed, so replicas below the head learn it too.
//! Offsets belong to one chain: a replica joins empty, from a snapshot in the stream.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// Stream bytes in one frame: a frame and its header fit one datagram.
pub const FRAME_BYTES: usize = 1400;
/// Bytes a replica sends past what its successor acknowledged.
pub const WINDOW_BYTES: u64 = 64 * FRAME_BYTES as u64;
/// Without progress for this long, the window is sent again from what the successor holds.
pub const RETRANSMIT_AFTER: Duration = Duration::from_millis(2);
/// Packets a head holds for the commit of what they depend on; past it they are dropped
/// (counted): a reply is asked for again, a migration message retransmitted.
pub const MAX_HELD: usize = 16 * 1024;
/// Keys a replica tracks as written but not committed; past it every read goes to the tail.
pub const MAX_DIRTY: usize = 1 << 20;

/// Who replicates a partition, head first. Every change of it takes a new epoch; frames and
/// acknowledgements of another epoch are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainConfig {
    pub epoch: u32,
    /// This partition's address on each replica, head first and tail last.
    pub members: Vec<SocketAddrV4>,
    /// A replica copying the chain's state from the tail before it joins as the new tail.
    pub learner: Option<SocketAddrV4>,
}

impl ChainConfig {
    pub fn head(&self) -> SocketAddrV4 {
        self.members[0]
    }

    pub fn tail(&self) -> SocketAddrV4 {
        *self.members.last().expect("a chain has a member")
    }

    fn index_of(&self, me: SocketAddrV4) -> Option<usize> {
        self.members.iter().position(|&m| m == me)
    }

    /// Where `me` passes the stream: its successor, or the learner if it is the tail.
    pub fn downstream_of(&self, me: SocketAddrV4) -> Option<SocketAddrV4> {
        match self.index_of(me) {
            Some(i) if i + 1 < self.members.len() => Some(self.members[i + 1]),
            Some(_) => self.learner,
            None => None,
        }
    }

    /// Who passes the stream to `me`.
    pub fn upstream_of(&self, me: SocketAddrV4) -> Option<SocketAddrV4> {
        match self.index_of(me) {
            Some(0) => None,
            Some(i) => Some(self.members[i - 1]),
            None if self.learner == Some(me) => Some(self.tail()),
            None => None,
        }
    }
}

/// What this replica is in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Head,
    Middle,
    Tail,
    /// Copying the state; serves nothing yet.
    Learner,
    /// Not in the configuration (removed, or not yet told).
    Outside,
}

/// A frame to send: `len` bytes of the stream from `offset`, to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub to: SocketAddrV4,
    pub offset: u64,
    pub len: usize,
}

/// What an arriving frame brings.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Bytes from this offset on are new: appended to the stream (`bytes_from`).
    New { from: u64 },
    /// Nothing new (a retransmission); acknowledge again.
    Duplicate,
    /// It starts past the end of what is here (a frame before it was lost): dropped.
    Gap,
    /// Another epoch, or not from the upstream this configuration names: dropped.
    Stranger,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChainCounters {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub retransmissions: u64,
    pub frames_received: u64,
    pub duplicate_frames: u64,
    pub gap_frames: u64,
    pub stranger_messages: u64,
    pub held_dropped: u64,
}

/// One replica's end of its chain's stream.
pub struct Replica {
    me: SocketAddrV4,
    config: Option<ChainConfig>,
    /// The stream from offset `base` on; its end is what this replica holds.
    stream: VecDeque<u8>,
    base: u64,
    /// Everything before it has been applied at the tail.
    committed: u64,
    /// Downstream: what it acknowledged holding, and what was sent.
    acked: u64,
    sent: u64,
    last_progress: Option<Instant>,
    /// The most its upstream said is committed.
    read_floor: u64,
    /// Where a record the frames so far brought only in part starts: kept, so that a
    /// snapshot starting there can still be passed to a learner.
    partial_from: Option<u64>,
    /// A learner waits for its first frame to learn where its stream starts.
    awaiting_start: bool,
    /// The tail of a chain with a learner: where the snapshot the learner starts from
    /// begins (None until one passes).
    learner_from: Option<u64>,
    /// The tail of a chain with a learner: where the snapshot the learner started from
    /// ends (the learner holds the whole state once it holds this much).
    learner_whole_at: Option<u64>,
    /// Packets the head sends once the stream up to their offset is committed.
    held: VecDeque<(u64, Box<dataplane::Packet>)>,
    /// Frames that arrived ahead of a missing one (the network reorders), by offset, until
    /// the gap is filled; at most a window's worth.
    stash: BTreeMap<u64, Vec<u8>>,
    stash_bytes: usize,
    /// When this tail last asked upstream for a snapshot for its learner.
    snapshot_asked_at: Option<Instant>,
    /// Downstream has acknowledged nothing in this configuration yet: an empty frame is
    /// sent now and then, so that it learns this replica's commit point (`announced_at`).
    announce: bool,
    announced_at: Option<Instant>,
    /// A frame of this configuration came from upstream (a new tail serves reads only after
    /// it: its predecessor may have committed more as the tail than it has heard of).
    heard_upstream: bool,
    /// Keys written by bytes not yet committed: key hash → end of its latest record.
    dirty: HashMap<u64, u64>,
    dirty_order: VecDeque<(u64, u64)>,
    pub counters: ChainCounters,
}

impl Replica {
    /// A replica at address `me`, with an empty stream and no configuration yet.
    pub fn new(me: SocketAddrV4) -> Self {
        Replica {
            me,
            config: None,
            stream: VecDeque::new(),
            base: 0,
            committed: 0,
            acked: 0,
            sent: 0,
            last_progress: None,
            read_floor: 0,
            partial_from: None,
            awaiting_start: false,
            learner_from: None,
            learner_whole_at: None,
            snapshot_asked_at: None,
            announce: false,
            announced_at: None,
            heard_upstream: false,
            held: VecDeque::new(),
            stash: BTreeMap::new(),
            stash_bytes: 0,
            dirty: HashMap::new(),
            dirty_order: VecDeque::new(),
            counters: ChainCounters::default(),
        }
    }

    pub fn config(&self) -> Option<&ChainConfig> {
        self.config.as_ref()
    }

    /// Who passes the stream to this replica.
    pub fn upstream(&self) -> Option<SocketAddrV4> {
        self.config.as_ref().and_then(|c| c.upstream_of(self.me))
    }

    /// Whether this replica is its chain's tail (a chain of one: head and tail).
    pub fn is_tail(&self) -> bool {
        self.config
            .as_ref()
            .is_some_and(|c| c.index_of(self.me) == Some(c.members.len() - 1))
    }

    pub fn place(&self) -> Place {
        let Some(config) = &self.config else {
            return Place::Outside;
        };
        match config.index_of(self.me) {
            Some(0) => Place::Head,
            Some(i) if i + 1 == config.members.len() => Place::Tail,
            Some(_) => Place::Middle,
            None if config.learner == Some(self.me) => Place::Learner,
            None => Place::Outside,
        }
    }

    /// Takes a new configuration. What it holds stays; the stream is sent downstream again
    /// from what is committed (a new successor drops what it already has). A replica that
    /// becomes a learner, or a learner whose tail changed, starts over empty: returns true
    /// then (its partition must drop what it holds).
    pub fn configure(&mut self, config: ChainConfig) -> bool {
        let was_learner = self.place() == Place::Learner;
        let upstream_before = self.upstream();
        let downstream_before = self.config.as_ref().and_then(|c| c.downstream_of(self.me));
        let learner_before = self.config.as_ref().and_then(|c| c.learner);
        let head_before = self.config.as_ref().map(ChainConfig::head);
        let head_changed = head_before != Some(config.head());
        let epoch_before = self.config.as_ref().map(|c| c.epoch);
        let new_epoch = epoch_before != Some(config.epoch);
        self.config = Some(config);
        // A learner copies a snapshot the head writes, and starts over in every new
        // configuration (as its tail does, below): either may have missed the one between,
        // in which the other restarted (a learner that crashed and came back at the same
        // address), the head changed mid-snapshot, or the tail did.
        let restart = self.place() == Place::Learner
            && (!was_learner || new_epoch || self.upstream() != upstream_before || head_changed);
        if restart {
            self.stream.clear();
            self.base = 0;
            self.committed = 0;
            self.read_floor = 0;
            self.partial_from = None;
            self.awaiting_start = true;
            self.dirty.clear();
            self.dirty_order.clear();
        }
        // Stashed frames were another configuration's (a new head may have written other
        // bytes where its predecessor's first part of a record was).
        self.stash.clear();
        self.stash_bytes = 0;
        let config = self.config.as_ref().expect("just set");
        let downstream_changed = config.downstream_of(self.me) != downstream_before;
        if downstream_changed {
            self.acked = self.committed.max(self.base);
            self.sent = self.acked;
            self.last_progress = None;
        }
        if downstream_changed || head_changed || config.learner != learner_before || new_epoch {
            // A learner (new, or started over in a new configuration) starts from the next
            // snapshot that passes.
            self.learner_from = None;
            self.learner_whole_at = None;
        }
        if self.is_tail() {
            self.set_committed(self.tail_commit_point());
        }
        // A learner serves nothing: only a member downstream needs the announcement.
        let config = self.config.as_ref().expect("just set");
        let downstream = config.downstream_of(self.me);
        self.announce = downstream.is_some() && downstream != config.learner;
        self.announced_at = None;
        self.heard_upstream = self.upstream().is_none();
        self.trim();
        restart
    }

    /// The end of the whole records held here: what this replica has applied.
    pub fn end(&self) -> u64 {
        self.partial_from.unwrap_or_else(|| self.received_end())
    }

    /// The end of the bytes received, a record's first part included.
    pub fn received_end(&self) -> u64 {
        self.base + self.stream.len() as u64
    }

    /// Forgets the first part of a record whose rest will never come (its sender failed
    /// and this replica heads the chain now).
    pub fn drop_partial(&mut self) {
        if let Some(from) = self.partial_from.take() {
            let keep = from.saturating_sub(self.base) as usize;
            self.stream.truncate(keep);
        }
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The head appends the journal of a turn (or a follower the bytes of a frame, then
    /// says where its whole records end: `set_partial_from`).
    pub fn append(&mut self, bytes: &[u8]) {
        if self.is_tail() {
            // What came before is committed (and forgotten, but what a learner still
            // needs); these bytes stay until the next append, for `snapshot_began`.
            self.trim();
        }
        self.stream.extend(bytes);
        if self.is_tail() && self.place() == Place::Head {
            // A chain of one: the head's journal brings whole records only. A follower's
            // bytes may end in part of a record: its tail commits once it knows where the
            // whole records end (`set_partial_from`, which always follows).
            self.set_committed(self.tail_commit_point());
        } else if !self.is_tail() && self.place() != Place::Head {
            // A middle replica also forgets as acknowledgements come; a learner only here.
            self.trim();
        }
    }

    /// Whether a tail may answer reads: it holds everything its upstream told it is
    /// committed in this configuration. A learner that just became the tail may lack what
    /// the old tail committed (and the head acknowledged) before it learned it was no longer
    /// the tail: it waits for its predecessor's word in the new configuration.
    pub fn tail_reads_allowed(&self) -> bool {
        self.is_tail() && self.heard_upstream && self.end() >= self.read_floor
    }

    /// The stream from `offset` on (as two slices of its ring).
    pub fn bytes_from(&self, offset: u64) -> (&[u8], &[u8]) {
        let skip = (offset.saturating_sub(self.base) as usize).min(self.stream.len());
        let (a, b) = self.stream.as_slices();
        if skip <= a.len() {
            (&a[skip..], b)
        } else {
            (&[], &b[skip - a.len()..])
        }
    }

    /// Copies `len` bytes of the stream from `offset` into `out`.
    pub fn copy_out(&self, offset: u64, len: usize, out: &mut [u8]) {
        let (a, b) = self.bytes_from(offset);
        let from_a = a.len().min(len);
        out[..from_a].copy_from_slice(&a[..from_a]);
        out[from_a..len].copy_from_slice(&b[..len - from_a]);
    }

    /// A frame of `len` bytes at `offset` from `from`, in `epoch`, whose sender knows
    /// `committed`. The caller appends the new bytes (`append`) as it applies them.
    pub fn arrive(
        &mut self,
        from: SocketAddrV4,
        epoch: u32,
        offset: u64,
        len: usize,
        committed: u64,
    ) -> Arrival {
        let Some(config) = &self.config else {
            self.counters.stranger_messages += 1;
            return Arrival::Stranger;
        };
        if config.epoch != epoch || config.upstream_of(self.me) != Some(from) {
            self.counters.stranger_messages += 1;
            return Arrival::Stranger;
        }
        self.counters.frames_received += 1;
        if std::mem::take(&mut self.awaiting_start) {
            self.base = offset;
        }
        let end = self.received_end();
        if offset > end {
            self.counters.gap_frames += 1;
            return Arrival::Gap;
        }
        self.read_floor = self.read_floor.max(committed);
        self.heard_upstream = true;
        if !self.is_tail() {
            // Never past what is here: the tail committed only what it holds.
            self.set_committed(committed.min(self.end().max(self.committed)));
        }
        if offset + len as u64 <= end {
            self.counters.duplicate_frames += 1;
            return Arrival::Duplicate;
        }
        Arrival::New { from: end }
    }

    /// Keeps a frame that arrived ahead of a missing one (`Arrival::Gap`), within a window
    /// of what is here; past it, or with the stash full, it is dropped (sent again).
    pub fn stash(&mut self, offset: u64, bytes: &[u8]) {
        let ahead = offset.saturating_sub(self.received_end());
        let fits = self.stash_bytes + bytes.len() <= WINDOW_BYTES as usize;
        if ahead <= WINDOW_BYTES && fits && !self.stash.contains_key(&offset) {
            self.stash_bytes += bytes.len();
            self.stash.insert(offset, bytes.to_vec());
        }
    }

    /// The next stashed frame that now starts within what is here (with its offset), for
    /// the caller to take as it takes an arriving frame's new bytes.
    pub fn unstash(&mut self) -> Option<(u64, Vec<u8>)> {
        loop {
            let (&offset, bytes) = self.stash.iter().next()?;
            if offset > self.received_end() {
                return None;
            }
            let bytes_len = bytes.len();
            let bytes = self.stash.remove(&offset).expect("just seen");
            self.stash_bytes -= bytes_len;
            if offset + bytes_len as u64 > self.received_end() {
                return Some((offset, bytes));
            }
        }
    }

    /// An acknowledgement from downstream: it holds `held`, the tail has applied `committed`.
    /// False if it is a stranger's.
    pub fn acknowledged(
        &mut self,
        from: SocketAddrV4,
        epoch: u32,
        held: u64,
        committed: u64,
        now: Instant,
    ) -> bool {
        let downstream = self.config.as_ref().and_then(|c| {
            (c.epoch == epoch)
                .then(|| c.downstream_of(self.me))
                .flatten()
        });
        if downstream != Some(from) {
            self.counters.stranger_messages += 1;
            return false;
        }
        self.announce = false;
        let held = held.min(self.end());
        if held > self.acked {
            self.acked = held;
            self.last_progress = Some(now);
        }
        self.sent = self.sent.max(self.acked);
        if self.is_tail() {
            // Its learner's: they hold the tail's commit point back once it caught up.
            self.set_committed(self.tail_commit_point());
        } else {
            self.set_committed(committed.min(self.end()));
        }
        self.trim();
        true
    }

    /// What the tail has committed: everything it applied; but once its learner has
    /// caught up (and may be made the tail at any moment), only what the learner holds
    /// too. Otherwise the old tail, still committing on its own until it learns of the
    /// promotion, could have acknowledged what its successor never gets if it then dies.
    fn tail_commit_point(&self) -> u64 {
        let end = self.end();
        let learner_caught_up = self
            .learner_whole_at
            .is_some_and(|whole| self.acked >= whole);
        if learner_caught_up {
            end.min(self.acked)
        } else {
            end
        }
    }

    fn set_committed(&mut self, committed: u64) {
        if committed <= self.committed {
            return;
        }
        self.committed = committed;
        while let Some(&(end, hash)) = self.dirty_order.front() {
            if end > committed {
                break;
            }
            self.dirty_order.pop_front();
            if self.dirty.get(&hash) == Some(&end) {
                self.dirty.remove(&hash);
            }
        }
    }

    /// Forgets what no replica can need again: what is committed and downstream holds
    /// (a learner's snapshot stays until the learner has it).
    fn trim(&mut self) {
        let downstream = self.config.as_ref().and_then(|c| c.downstream_of(self.me));
        let keep_from = if downstream.is_none() || self.learner_waits_for_snapshot() {
            self.committed
        } else {
            self.committed.min(self.acked)
        };
        let keep_from = keep_from.min(self.partial_from.unwrap_or(u64::MAX));
        let drop = keep_from
            .saturating_sub(self.base)
            .min(self.stream.len() as u64);
        self.stream.drain(..drop as usize);
        self.base += drop;
    }

    /// Whether this learner has yet to learn where its stream starts (its first frame
    /// must start with a snapshot).
    pub fn awaiting_start(&self) -> bool {
        self.awaiting_start
    }

    /// The bytes from `offset` on hold a record not yet whole (None: every record is).
    pub fn set_partial_from(&mut self, offset: Option<u64>) {
        self.partial_from = offset;
        if self.is_tail() {
            self.set_committed(self.tail_commit_point());
        }
    }

    /// The tail saw a snapshot start at `offset`: a learner waiting for one starts there.
    pub fn snapshot_began(&mut self, offset: u64) {
        let has_learner = self.config.as_ref().is_some_and(|c| c.learner.is_some());
        if self.is_tail() && has_learner && self.learner_from.is_none() {
            self.learner_from = Some(offset);
            self.acked = offset;
            self.sent = offset;
            self.last_progress = None;
        }
    }

    /// The tail saw a snapshot end at `offset`: a learner that started from one holds the
    /// whole state once it holds this.
    pub fn snapshot_ended(&mut self, offset: u64) {
        if self.learner_from.is_some_and(|from| from < offset) && self.learner_whole_at.is_none() {
            self.learner_whole_at = Some(offset);
        }
    }

    /// Whether this tail's learner waits for a snapshot to start from.
    pub fn learner_waits_for_snapshot(&self) -> bool {
        self.is_tail()
            && self.config.as_ref().is_some_and(|c| c.learner.is_some())
            && self.learner_from.is_none()
    }

    /// Whom this tail asks for a snapshot its learner can start from, when it is time to
    /// ask (again): its upstream, which passes the request to the head (`ChainAppendAck`
    /// with the request flag). None for a head that is its own tail: it begins one itself.
    pub fn snapshot_request_due(&mut self, now: Instant) -> Option<SocketAddrV4> {
        if !self.learner_waits_for_snapshot() {
            return None;
        }
        let upstream = self.upstream()?;
        let due = self
            .snapshot_asked_at
            .is_none_or(|at| now.duration_since(at) >= RETRANSMIT_AFTER);
        if due {
            self.snapshot_asked_at = Some(now);
        }
        due.then_some(upstream)
    }

    /// Whether the learner holds everything this tail holds (it may take the tail's place).
    pub fn learner_caught_up(&self) -> bool {
        self.is_tail()
            && self
                .learner_whole_at
                .is_some_and(|whole| self.acked >= whole)
            && self.acked == self.end()
    }

    /// Frames due at `now`: the window past what downstream holds, again from there if
    /// nothing moved for `RETRANSMIT_AFTER` while something is uncommitted (an empty frame
    /// asks an idle successor to acknowledge again).
    pub fn frames_due(&mut self, now: Instant, out: &mut Vec<Frame>) {
        let Some(to) = self.config.as_ref().and_then(|c| c.downstream_of(self.me)) else {
            return;
        };
        if self.learner_waits_for_snapshot() {
            return;
        }
        let end = self.end();
        let waiting = self.acked < end || self.committed < end;
        let since = *self.last_progress.get_or_insert(now);
        if waiting && now.duration_since(since) >= RETRANSMIT_AFTER {
            self.counters.retransmissions += 1;
            self.sent = self.acked;
            self.last_progress = Some(now);
            if self.sent == end {
                out.push(Frame {
                    to,
                    offset: end,
                    len: 0,
                });
            }
        }
        if !waiting {
            self.last_progress = Some(now);
        }
        let announce_due = self
            .announced_at
            .is_none_or(|at| now.duration_since(at) >= RETRANSMIT_AFTER);
        if self.announce && announce_due && self.sent >= end {
            // Nothing else to send: an empty frame at what downstream holds.
            self.announced_at = Some(now);
            out.push(Frame {
                to,
                offset: self.acked,
                len: 0,
            });
        }
        let limit = end.min(self.acked + WINDOW_BYTES);
        while self.sent < limit {
            let len = (limit - self.sent).min(FRAME_BYTES as u64) as usize;
            out.push(Frame {
                to,
                offset: self.sent,
                len,
            });
            self.counters.frames_sent += 1;
            self.counters.bytes_sent += len as u64;
            self.sent += len as u64;
        }
    }

    /// Marks `hash` written by the record ending at `end` (a follower applying it).
    pub fn wrote(&mut self, hash: u64, end: u64) {
        if end <= self.committed || self.dirty.len() >= MAX_DIRTY {
            return;
        }
        self.dirty.insert(hash, end);
        self.dirty_order.push_back((end, hash));
    }

    /// Whether a read of `hash` here may see a value the tail has not applied.
    pub fn is_dirty(&self, hash: u64) -> bool {
        self.dirty.len() >= MAX_DIRTY || self.dirty.contains_key(&hash)
    }

    /// Whether downstream has yet to hear from this replica in this configuration.
    pub fn announcing(&self) -> bool {
        self.announce
    }

    /// Whether the head has sent out things the tail has not yet applied.
    pub fn uncommitted(&self) -> bool {
        self.committed < self.end()
    }

    /// The head holds `packet` until what it depends on (the stream so far) is committed.
    pub fn hold(&mut self, packet: Box<dataplane::Packet>) {
        if self.held.len() >= MAX_HELD {
            self.counters.held_dropped += 1;
            return;
        }
        self.held.push_back((self.end(), packet));
    }

    /// Held packets whose stream is now committed.
    pub fn release(&mut self, out: &mut Vec<Box<dataplane::Packet>>) {
        while self
            .held
            .front()
            .is_some_and(|(at, _)| *at <= self.committed)
        {
            out.push(self.held.pop_front().expect("checked").1);
        }
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Bytes kept for downstream (for bounds and reports).
    pub fn kept_bytes(&self) -> usize {
        self.stream.len()
    }
}

impl std::fmt::Display for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} of epoch {}: holds up to {}, committed {}, downstream acked {} and sent {}, \
             {} packets held, {} bytes kept from {}",
            self.place(),
            self.config.as_ref().map_or(0, |c| c.epoch),
            self.end(),
            self.committed,
            self.acked,
            self.sent,
            self.held.len(),
            self.stream.len(),
            self.base
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr(i: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, i), 7100)
    }

    fn chain(epoch: u32, members: &[u8], learner: Option<u8>) -> ChainConfig {
        ChainConfig {
            epoch,
            members: members.iter().map(|&i| addr(i)).collect(),
            learner: learner.map(addr),
        }
    }

    /// Delivers every due frame from `from` to `to` (or loses them) and the acks back;
    /// returns the bytes `to` appended.
    fn pass(from: &mut Replica, to: &mut Replica, now: Instant, lose: bool) -> Vec<u8> {
        let mut appended = Vec::new();
        let mut frames = Vec::new();
        from.frames_due(now, &mut frames);
        for frame in frames {
            if lose {
                continue;
            }
            let mut bytes = vec![0; frame.len];
            from.copy_out(frame.offset, frame.len, &mut bytes);
            let epoch = from.config().unwrap().epoch;
            match to.arrive(from.me, epoch, frame.offset, frame.len, from.committed()) {
                Arrival::New { from: start } => {
                    let skip = (start - frame.offset) as usize;
                    to.append(&bytes[skip..]);
                    // Every frame of these tests ends with a whole record.
                    to.set_partial_from(None);
                    appended.extend_from_slice(&bytes[skip..]);
                }
                Arrival::Duplicate | Arrival::Gap => {}
                Arrival::Stranger => panic!("a stranger"),
            }
            let (held, committed) = (to.end(), to.committed());
            assert!(from.acknowledged(to.me, epoch, held, committed, now));
        }
        appended
    }

    #[test]
    fn the_head_learns_the_commit_once_the_tail_holds_the_bytes() {
        let config = chain(1, &[1, 2, 3], None);
        let mut r: Vec<Replica> = (1..=3).map(|i| Replica::new(addr(i))).collect();
        for replica in &mut r {
            replica.configure(config.clone());
        }
        let now = Instant::now();
        r[0].append(&[7; 3000]);
        assert!(r[0].uncommitted());
        let (head, rest) = r.split_at_mut(1);
        pass(&mut head[0], &mut rest[0], now, false);
        assert_eq!(rest[0].end(), 3000);
        assert_eq!(head[0].committed(), 0, "the middle is not the tail");
        let (middle, tail) = rest.split_at_mut(1);
        pass(&mut middle[0], &mut tail[0], now, false);
        assert_eq!(tail[0].committed(), 3000);
        assert_eq!(middle[0].committed(), 3000);
        // The head hears of it with the middle's next acknowledgement (a probe after the
        // retransmission timeout).
        pass(&mut head[0], &mut middle[0], now + RETRANSMIT_AFTER, false);
        assert_eq!(head[0].committed(), 3000);
        assert_eq!(head[0].kept_bytes(), 0, "committed bytes are forgotten");
    }

    #[test]
    fn lost_frames_are_sent_again_and_duplicates_change_nothing() {
        let config = chain(1, &[1, 2], None);
        let (mut a, mut b) = (Replica::new(addr(1)), Replica::new(addr(2)));
        a.configure(config.clone());
        b.configure(config);
        let t0 = Instant::now();
        a.append(&(0..=255).cycle().take(5000).collect::<Vec<u8>>());
        pass(&mut a, &mut b, t0, true);
        assert_eq!(b.end(), 0);
        let got = pass(&mut a, &mut b, t0 + RETRANSMIT_AFTER, false);
        assert_eq!(b.end(), 5000);
        assert_eq!(a.committed(), 5000);
        assert_eq!(got, (0..=255).cycle().take(5000).collect::<Vec<u8>>());
        // A stale frame again: a duplicate.
        let arrival = b.arrive(addr(1), 1, 0, 100, 0);
        assert_eq!(arrival, Arrival::Duplicate);
        // One from a stale epoch or another sender: dropped.
        assert_eq!(b.arrive(addr(1), 0, 5000, 10, 0), Arrival::Stranger);
        assert_eq!(b.arrive(addr(3), 1, 5000, 10, 0), Arrival::Stranger);
        // One past the end: a gap.
        assert_eq!(b.arrive(addr(1), 1, 6000, 10, 0), Arrival::Gap);
    }

    #[test]
    fn a_spliced_successor_gets_what_its_failed_predecessor_did_not_pass_on() {
        let mut r: Vec<Replica> = (1..=3).map(|i| Replica::new(addr(i))).collect();
        for replica in &mut r {
            replica.configure(chain(1, &[1, 2, 3], None));
        }
        let t0 = Instant::now();
        r[0].append(&[1; 2000]);
        let (head, rest) = r.split_at_mut(1);
        pass(&mut head[0], &mut rest[0], t0, false);
        // The middle fails before passing anything on: the head passes it to the tail.
        for i in [0, 2] {
            r[i].configure(chain(2, &[1, 3], None));
        }
        let (head, rest) = r.split_at_mut(1);
        pass(&mut head[0], &mut rest[1], t0, false);
        assert_eq!(rest[1].end(), 2000);
        assert_eq!(head[0].committed(), 2000);
    }

    #[test]
    fn a_tail_asks_upstream_for_its_learners_snapshot_until_one_begins() {
        let t0 = Instant::now();
        let mut tail = Replica::new(addr(2));
        tail.configure(chain(2, &[1, 2], Some(3)));
        assert_eq!(tail.snapshot_request_due(t0), Some(addr(1)));
        assert_eq!(tail.snapshot_request_due(t0), None, "not again at once");
        assert_eq!(
            tail.snapshot_request_due(t0 + RETRANSMIT_AFTER),
            Some(addr(1))
        );
        tail.append(&[0; 10]);
        tail.snapshot_began(10);
        let later = t0 + 4 * RETRANSMIT_AFTER;
        assert_eq!(tail.snapshot_request_due(later), None, "a snapshot began");
        let mut alone = Replica::new(addr(1));
        alone.configure(chain(2, &[1], Some(3)));
        assert!(alone.learner_waits_for_snapshot());
        assert_eq!(
            alone.snapshot_request_due(t0),
            None,
            "a head begins one itself"
        );
    }

    #[test]
    fn a_learner_starts_from_the_next_snapshot_and_catches_up() {
        let mut r: Vec<Replica> = (1..=2).map(|i| Replica::new(addr(i))).collect();
        for replica in &mut r {
            replica.configure(chain(1, &[1, 2], None));
        }
        let t0 = Instant::now();
        r[0].append(&[1; 1000]);
        let (a, b) = r.split_at_mut(1);
        pass(&mut a[0], &mut b[0], t0, false);
        let mut learner = Replica::new(addr(3));
        let with_learner = chain(2, &[1, 2], Some(3));
        for replica in r.iter_mut().chain([&mut learner]) {
            replica.configure(with_learner.clone());
        }
        assert_eq!(learner.place(), Place::Learner);
        assert!(r[1].learner_waits_for_snapshot());
        // A snapshot starts at 1000 (the head's next bytes).
        r[0].append(&[2; 500]);
        let (a, b) = r.split_at_mut(1);
        pass(&mut a[0], &mut b[0], t0, false);
        b[0].snapshot_began(1000);
        pass(&mut b[0], &mut learner, t0, false);
        assert_eq!(learner.end(), 1500);
        assert!(!r[1].learner_caught_up(), "the snapshot has not ended");
        r[1].snapshot_ended(1400);
        assert!(r[1].learner_caught_up());
        assert_eq!(
            r[1].committed(),
            1500,
            "the tail commits without its learner"
        );
    }

    #[test]
    fn a_caught_up_learner_holds_the_commit_point_and_reads_only_once_promoted_and_told() {
        let t0 = Instant::now();
        let (mut head, mut tail, mut learner) = (
            Replica::new(addr(1)),
            Replica::new(addr(2)),
            Replica::new(addr(3)),
        );
        for replica in [&mut head, &mut tail, &mut learner] {
            replica.configure(chain(2, &[1, 2], Some(3)));
        }
        head.append(&[1; 100]);
        pass(&mut head, &mut tail, t0, false);
        tail.snapshot_began(0);
        tail.snapshot_ended(50);
        pass(&mut tail, &mut learner, t0, false);
        assert!(tail.learner_caught_up());
        // New writes reach the tail before the promotion does: a tail whose learner caught
        // up commits only what the learner holds too (what it commits, the head
        // acknowledges; were it to die, only the learner would be left to hold it).
        head.append(&[2; 100]);
        pass(&mut head, &mut tail, t0, false);
        assert_eq!(
            (tail.end(), tail.committed(), learner.end()),
            (200, 100, 100)
        );
        learner.configure(chain(3, &[1, 2, 3], None));
        assert!(learner.is_tail());
        assert!(
            !learner.tail_reads_allowed(),
            "its predecessor has not spoken yet"
        );
        tail.configure(chain(3, &[1, 2, 3], None));
        assert!(tail.announcing());
        pass(&mut tail, &mut learner, t0, false);
        assert_eq!(learner.end(), 200);
        assert!(learner.tail_reads_allowed());
        assert!(!tail.announcing(), "acknowledged");
        // A predecessor with nothing new to send still tells its new successor where it is.
        let mut idle_tail = Replica::new(addr(3));
        idle_tail.configure(chain(4, &[2, 3], None));
        assert!(!idle_tail.tail_reads_allowed());
        tail.configure(chain(4, &[2, 3], None));
        pass(&mut tail, &mut idle_tail, t0, true);
        let again = t0 + RETRANSMIT_AFTER;
        let mut frames = Vec::new();
        tail.frames_due(again, &mut frames);
        assert_eq!(
            frames.len(),
            1,
            "the lost announcement is sent again: {frames:?}"
        );
    }

    #[test]
    fn a_tail_commits_no_part_of_a_record_it_holds_only_in_part() {
        let mut tail = Replica::new(addr(2));
        tail.configure(chain(1, &[1, 2], None));
        // 100 bytes arrive, of which the last 30 begin a record.
        tail.append(&[1; 100]);
        tail.set_partial_from(Some(70));
        assert_eq!((tail.end(), tail.committed()), (70, 70));
        tail.append(&[2; 10]);
        tail.set_partial_from(None);
        assert_eq!(tail.committed(), 110);
    }

    #[test]
    fn held_packets_leave_once_their_stream_is_committed() {
        let mut head = Replica::new(addr(1));
        let mut tail = Replica::new(addr(2));
        let config = chain(1, &[1, 2], None);
        head.configure(config.clone());
        tail.configure(config);
        head.append(&[1; 10]);
        head.hold(dataplane::Packet::new_boxed());
        let mut out = Vec::new();
        head.release(&mut out);
        assert!(out.is_empty());
        pass(&mut head, &mut tail, Instant::now(), false);
        head.release(&mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn frames_ahead_of_a_lost_one_wait_for_it() {
        let mut r = Replica::new(addr(2));
        r.configure(chain(1, &[1, 2], None));
        assert_eq!(r.arrive(addr(1), 1, 100, 100, 0), Arrival::Gap);
        r.stash(100, &[2; 100]);
        assert_eq!(r.arrive(addr(1), 1, 150, 100, 0), Arrival::Gap);
        r.stash(150, &[3; 100]);
        assert!(r.unstash().is_none(), "the gap is still open");
        assert_eq!(r.arrive(addr(1), 1, 0, 100, 0), Arrival::New { from: 0 });
        r.append(&[1; 100]);
        let (offset, bytes) = r.unstash().expect("now it fits");
        assert_eq!((offset, bytes.len()), (100, 100));
        r.append(&bytes);
        let (offset, bytes) = r.unstash().expect("and the next");
        assert_eq!(offset, 150);
        r.append(&bytes[(r.received_end() - offset) as usize..]);
        assert_eq!(r.received_end(), 250);
        assert!(r.unstash().is_none());
    }

    #[test]
    fn dirty_keys_are_clean_once_committed() {
        let mut r = Replica::new(addr(2));
        r.configure(chain(1, &[1, 2, 3], None));
        assert_eq!(r.arrive(addr(1), 1, 0, 100, 0), Arrival::New { from: 0 });
        r.append(&[0; 100]);
        r.wrote(42, 50);
        r.wrote(43, 100);
        assert!(r.is_dirty(42) && r.is_dirty(43));
        assert_eq!(r.arrive(addr(1), 1, 100, 0, 50), Arrival::Duplicate);
        assert!(!r.is_dirty(42) && r.is_dirty(43));
    }
}
