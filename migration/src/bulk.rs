//! Rocksteady's bulk transfer, driven by the destination (sans-I/O).
//!
//! The destination splits the partition's groups into runs and pulls them in parallel, one
//! request in flight per run: each answer says where the next one starts, and the next
//! request goes out as soon as the answer arrives, before its entries are replayed
//! (pipelining). Replay happens when the serving loop has time for it (`Incoming::replay`),
//! after the client requests of the same turn; answers wait in a bounded queue meanwhile,
//! and a run whose queue is full stops asking. The source answers from its frozen copy at
//! the rate its migration budget allows. Once every run is replayed the destination says
//! so (BULK_DONE, asked again until answered) and the source terminates the stream.

use dataplane::wire::{
    self, BulkPull, BulkPullReply, Flags, HeaderRepr, MigratedItem, Op, PullBatch, ScanPosition,
    Status,
};
use dataplane::Packet;
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::ops::Range;
use std::time::{Duration, Instant};

/// A request not answered within this is asked again.
const BULK_RTO: Duration = Duration::from_millis(4);
/// After a RETRY_LATER (the source's budget is spent), ask again after this.
const RETRY_PAUSE: Duration = Duration::from_micros(500);
/// Entries asked for per request (a frame holds fewer unless values are tiny).
const MAX_ITEMS: u16 = 512;
/// Answers a run may have waiting for replay before it stops asking.
const QUEUED_PER_RUN: usize = 2;
/// Most groups one answer scans (bounds the source's time per request when groups are
/// sparse).
const MAX_GROUPS_PER_ANSWER: u32 = 1024;

/// Counters of a destination's bulk transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BulkStats {
    /// Requests sent, and how many of them were resends.
    pub requests: u64,
    pub resent: u64,
    /// Answers the source sent while its budget was spent.
    pub retry_later: u64,
    /// Answers that were duplicates or arrived after a resend was answered.
    pub duplicates: u64,
    /// Bytes of requests sent (the source counts its answers).
    pub bytes: u64,
}

impl BulkStats {
    pub fn add(&mut self, other: &BulkStats) {
        self.requests += other.requests;
        self.resent += other.resent;
        self.retry_later += other.retry_later;
        self.duplicates += other.duplicates;
        self.bytes += other.bytes;
    }
}

struct Run {
    /// Where the next request starts; the run is done once `next.group == end`.
    next: ScanPosition,
    end: u32,
    /// When the outstanding request was sent.
    asked_at: Option<Instant>,
    /// Don't ask before this (after a RETRY_LATER).
    pause_until: Option<Instant>,
    /// Its answers waiting for replay.
    queued: usize,
}

impl Run {
    fn is_done(&self) -> bool {
        self.next.group >= self.end
    }
}

/// An answer waiting for replay.
struct Answer {
    run: usize,
    asked: ScanPosition,
    next: ScanPosition,
    items: Vec<u8>,
}

/// What replaying answers did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Entries handed to `apply`.
    pub items: usize,
    /// Groups every entry of which is now applied, in runs `[start, end)`.
    pub complete: Vec<Range<u32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DoneNotice {
    NotYet,
    Sent(Instant),
    Answered,
}

pub struct BulkPuller {
    source: SocketAddrV4,
    source_shard: u16,
    /// The migration's stream id: requests carry it and answers echo it.
    stream_id: u32,
    runs: Vec<Run>,
    queue: VecDeque<Answer>,
    done: DoneNotice,
    next_seq: u64,
    stats: BulkStats,
}

impl BulkPuller {
    /// Pulls `groups` of `source` in `parallel` runs of about equal size.
    pub fn new(
        source: SocketAddrV4,
        source_shard: u16,
        stream_id: u32,
        groups: Range<u32>,
        parallel: usize,
    ) -> Self {
        let total = u64::from(groups.end - groups.start);
        let parallel = (parallel.max(1) as u64).min(total.max(1));
        let runs = (0..parallel)
            .map(|i| {
                let start = groups.start + (total * i / parallel) as u32;
                let end = groups.start + (total * (i + 1) / parallel) as u32;
                Run {
                    next: ScanPosition::start_of(start),
                    end,
                    asked_at: None,
                    pause_until: None,
                    queued: 0,
                }
            })
            .filter(|run| !run.is_done())
            .collect();
        BulkPuller {
            source,
            source_shard,
            stream_id,
            runs,
            queue: VecDeque::new(),
            done: DoneNotice::NotYet,
            next_seq: 0,
            stats: BulkStats::default(),
        }
    }

    pub fn stats(&self) -> BulkStats {
        self.stats
    }

    /// Every run pulled and replayed, and the source told so.
    pub fn is_finished(&self) -> bool {
        self.done == DoneNotice::Answered
    }

    /// Sends the requests that are due: a run with nothing in flight and room in the
    /// queue, a request overdue, or the done notice.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Box<Packet>>) {
        for index in 0..self.runs.len() {
            let run = &self.runs[index];
            let due = match run.asked_at {
                None => run.queued < QUEUED_PER_RUN,
                Some(at) => now.duration_since(at) >= BULK_RTO,
            };
            if run.is_done() || !due || run.pause_until.is_some_and(|until| now < until) {
                continue;
            }
            if run.asked_at.is_some() {
                self.stats.resent += 1;
            }
            let request = BulkPull {
                from: run.next,
                end_group: run.end,
                max_items: MAX_ITEMS,
            };
            self.runs[index].asked_at = Some(now);
            self.runs[index].pause_until = None;
            out.push(self.request(Op::BulkPull, |b| request.emit(b)));
        }
        let all_replayed = self.runs.iter().all(Run::is_done) && self.queue.is_empty();
        let notice_due = match self.done {
            DoneNotice::NotYet => true,
            DoneNotice::Sent(at) => now.duration_since(at) >= BULK_RTO,
            DoneNotice::Answered => false,
        };
        if all_replayed && notice_due {
            if matches!(self.done, DoneNotice::Sent(_)) {
                self.stats.resent += 1;
            }
            self.done = DoneNotice::Sent(now);
            out.push(self.request(Op::BulkDone, |_| Ok(0)));
        }
    }

    fn request(
        &mut self,
        op: Op,
        body: impl FnOnce(&mut [u8]) -> Result<usize, wire::WireError>,
    ) -> Box<Packet> {
        let header = HeaderRepr {
            op,
            flags: Flags::default(),
            status: Status::Ok,
            shard: self.source_shard,
            seq: self.next_seq,
            key_hash: 0,
            client: self.stream_id,
            oldest_gap: 0,
        };
        self.next_seq += 1;
        let mut packet = Packet::new_boxed();
        let len = wire::emit_with(&header, packet.buffer_mut(), body)
            .expect("a bulk request fits a frame");
        packet.set_len(len);
        packet.dst = self.source;
        self.stats.requests += 1;
        self.stats.bytes += len as u64;
        packet
    }

    /// An answer from the source. Accepted when it answers a
    /// run's outstanding request; a duplicate or a late answer to a resent request is not.
    pub fn on_reply(&mut self, status: Status, reply: &BulkPullReply<'_>, now: Instant) {
        let Some(index) = self
            .runs
            .iter()
            .position(|run| run.asked_at.is_some() && run.next == reply.asked)
        else {
            self.stats.duplicates += 1;
            return;
        };
        let run = &mut self.runs[index];
        if status == Status::RetryLater {
            self.stats.retry_later += 1;
            run.asked_at = None;
            run.pause_until = Some(now + RETRY_PAUSE);
            return;
        }
        if reply.next.group > run.end {
            self.stats.duplicates += 1; // Not an answer to this run's request.
            return;
        }
        run.asked_at = None;
        run.next = reply.next;
        run.queued += 1;
        self.queue.push_back(Answer {
            run: index,
            asked: reply.asked,
            next: reply.next,
            items: reply.entries.items.to_vec(),
        });
    }

    /// The source answered the done notice.
    pub fn on_done_reply(&mut self) {
        if matches!(self.done, DoneNotice::Sent(_)) {
            self.done = DoneNotice::Answered;
        }
    }

    /// Replays queued answers, whole answers at a time, until about `max_items` entries
    /// were applied; `apply` gets each entry and the groups its answer covers.
    pub fn replay(
        &mut self,
        max_items: usize,
        mut apply: impl FnMut(MigratedItem<'_>, Range<u32>),
    ) -> Replayed {
        let mut replayed = Replayed::default();
        while replayed.items < max_items {
            let Some(answer) = self.queue.pop_front() else {
                break;
            };
            // A scan stopped inside `next.group` sent some of its entries.
            let last = answer.next.group + u32::from(answer.next.cursor > 0);
            for item in wire::data_items(&answer.items) {
                apply(item, answer.asked.group..last);
                replayed.items += 1;
            }
            self.runs[answer.run].queued -= 1;
            if answer.next.group > answer.asked.group {
                replayed
                    .complete
                    .push(answer.asked.group..answer.next.group);
            }
        }
        replayed
    }
}

/// What the source sent in answer to a bulk pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkAnswer {
    /// Reply length.
    pub len: usize,
    /// Where the destination's next request for this run starts (`== asked` if none sent).
    pub next: ScanPosition,
    pub entries: u16,
    /// Key and value bytes of those entries.
    pub bytes: u64,
}

/// The source's answer to a bulk pull, written over the request in `buf`: entries of
/// `pull`'s run from its position, as many as fit one frame, or RETRY_LATER when the
/// migration budget is spent (`budget_left` false). The same request always gets the same
/// entries (the copy is frozen), so a resent one moves nothing new.
pub fn answer(
    header: &HeaderRepr,
    pull: &BulkPull,
    table: &kv::Partition,
    budget_left: bool,
    buf: &mut [u8],
) -> BulkAnswer {
    let limit = wire::MAX_PAYLOAD - wire::HEADER_LEN - wire::BULK_REPLY_FIXED;
    let max = if budget_left { pull.max_items } else { 0 };
    let mut items = Vec::new();
    let mut count = 0u16;
    let mut bytes = 0u64;
    let mut next = pull.from;
    let last_group = pull
        .end_group
        .min(pull.from.group.saturating_add(MAX_GROUPS_PER_ANSWER));
    while max > 0 && next.group < last_group {
        let stopped = table.scan_group(next.group, next.cursor, |entry| {
            let item = MigratedItem {
                key: entry.key,
                value: entry.value,
                version: entry.version,
            };
            if count == max || !wire::push_item(&mut items, limit, &item) {
                return false;
            }
            count += 1;
            bytes += (entry.key.len() + entry.value.map_or(0, <[u8]>::len)) as u64;
            true
        });
        match stopped {
            Some(cursor) => {
                next.cursor = cursor;
                break;
            }
            None => next = ScanPosition::start_of(next.group + 1),
        }
    }
    let status = if max == 0 {
        Status::RetryLater
    } else {
        Status::Ok
    };
    let reply_header = HeaderRepr {
        op: Op::BulkPullReply,
        ..header.reply(status)
    };
    let reply = BulkPullReply {
        asked: pull.from,
        next,
        entries: PullBatch {
            count,
            items: &items,
        },
    };
    let len = wire::emit_with(&reply_header, buf, |b| reply.emit(b)).expect("built to fit a frame");
    BulkAnswer {
        len,
        next,
        entries: count,
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn source() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7100)
    }

    fn table_with(keys: usize) -> (kv::PartitionMap, kv::Partition) {
        let map = kv::PartitionMap::new(kv::GroupLayout::new(6).unwrap(), 1).unwrap();
        let mut table = kv::Partition::new(&map, 0, keys);
        for i in 0..keys {
            let key = format!("key{i}");
            table.put(kv::key_hash(key.as_bytes()), key.as_bytes(), &[7u8; 100]);
        }
        (map, table)
    }

    /// Answers `packet` (a request) at the source, returning the reply's status and body.
    fn serve(packet: &mut Packet, table: &kv::Partition, budget_left: bool) -> (Status, Vec<u8>) {
        let (header, body) = wire::parse_header(packet.payload()).unwrap();
        let pull = BulkPull::parse(body).unwrap();
        let len = answer(&header, &pull, table, budget_left, packet.buffer_mut()).len;
        let (reply_header, body) = wire::parse_header(&packet.buffer_mut()[..len]).unwrap();
        (reply_header.status, body.to_vec())
    }

    #[test]
    fn parallel_runs_fetch_every_entry_once_through_loss_and_duplicates() {
        let (map, table) = table_with(500);
        let groups = map.groups_of(0);
        let mut puller = BulkPuller::new(source(), 1, 1, groups.clone(), 4);
        let mut now = Instant::now();
        let mut applied = std::collections::HashMap::new();
        let mut complete = Vec::new();
        let mut step = 0u64;
        while !puller.is_finished() {
            let mut out = Vec::new();
            puller.poll(now, &mut out);
            for mut packet in out {
                step += 1;
                if step % 5 == 0 {
                    continue; // lost
                }
                let (header, _) = wire::parse_header(packet.payload()).unwrap();
                if header.op == Op::BulkDone {
                    puller.on_done_reply();
                    continue;
                }
                let budget_left = step % 7 != 0;
                let (status, body) = serve(&mut packet, &table, budget_left);
                let reply = BulkPullReply::parse(&body).unwrap();
                puller.on_reply(status, &reply, now);
                if step % 3 == 0 {
                    puller.on_reply(status, &reply, now); // duplicated
                }
            }
            let replayed = puller.replay(usize::MAX, |item, groups| {
                let group = map.layout().group_of(kv::key_hash(item.key));
                assert!(groups.contains(&group), "{group} in {groups:?}");
                *applied.entry(item.key.to_vec()).or_insert(0) += 1;
            });
            complete.extend(replayed.complete.into_iter().flatten());
            now += Duration::from_millis(1);
            assert!(step < 100_000, "the transfer makes progress");
        }
        assert_eq!(applied.len(), 500);
        assert!(
            applied.values().all(|&n| n == 1),
            "no entry is replayed twice"
        );
        complete.sort_unstable();
        assert_eq!(
            complete,
            groups.collect::<Vec<_>>(),
            "every group completes once"
        );
        let stats = puller.stats();
        assert!(stats.resent > 0 && stats.duplicates > 0 && stats.retry_later > 0);
    }

    #[test]
    fn a_run_stops_asking_while_its_answers_wait_for_replay() {
        let (map, table) = table_with(2000);
        let mut puller = BulkPuller::new(source(), 1, 1, map.groups_of(0), 1);
        let now = Instant::now();
        for _ in 0..QUEUED_PER_RUN {
            let mut out = Vec::new();
            puller.poll(now, &mut out);
            assert_eq!(out.len(), 1);
            let (status, body) = serve(&mut out[0], &table, true);
            puller.on_reply(status, &BulkPullReply::parse(&body).unwrap(), now);
        }
        let mut out = Vec::new();
        puller.poll(now, &mut out);
        assert!(out.is_empty(), "the queue is full");
        let replayed = puller.replay(1, |_, _| {});
        assert!(replayed.items > 1, "whole answers are replayed");
        puller.poll(now, &mut out);
        assert_eq!(out.len(), 1, "room again: the next request goes out");
    }

    #[test]
    fn a_spent_budget_answers_retry_later_without_entries() {
        let (map, table) = table_with(10);
        let mut puller = BulkPuller::new(source(), 1, 1, map.groups_of(0), 1);
        let mut out = Vec::new();
        puller.poll(Instant::now(), &mut out);
        let (status, body) = serve(&mut out[0], &table, false);
        assert_eq!(status, Status::RetryLater);
        let reply = BulkPullReply::parse(&body).unwrap();
        assert_eq!((reply.entries.count, reply.next), (0, reply.asked));
    }
}
