//! A destination's pulls of keys it needs before their group has arrived (Rocksteady's
//! PriorityPull; Fulva's early pulls of sampled hot keys). Sans-I/O. Pulls travel outside
//! the ordered stream: the source's copy is frozen, so a pull is an idempotent read that is
//! simply asked again until answered, and the answer is applied with `put_if_newer`, so it
//! never overwrites a newer write and may arrive in any order with the stream's data.

use dataplane::wire::{self, Flags, HeaderRepr, MigratedItem, Op, PullBatch, Status};
use dataplane::Packet;
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// Keys per pull message (the artifact's PRIORITY_PULL_BATCH_SIZE).
pub const PULL_BATCH: usize = 16;
/// A pull not answered within this is asked again (the source answers within a round trip;
/// a lost datagram costs this much).
const PULL_RTO: Duration = Duration::from_millis(2);

struct Wanted {
    key: Vec<u8>,
    /// Requests parked until the answer arrives (hotter keys are asked first).
    waiters: u32,
    /// Pulled because sampling found it hot (Fulva announces these once applied).
    hot: bool,
    sent_at: Option<Instant>,
}

/// Counters of a destination's pulls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PullStats {
    /// Keys asked for (once each, resends not counted).
    pub keys: u64,
    pub messages: u64,
    pub resent: u64,
    /// Bytes of pull requests sent and of answers received.
    pub bytes: u64,
}

impl PullStats {
    pub fn add(&mut self, other: &PullStats) {
        self.keys += other.keys;
        self.messages += other.messages;
        self.resent += other.resent;
        self.bytes += other.bytes;
    }
}

/// What an answer brought for one key.
pub struct Answered {
    pub hash: u64,
    pub hot: bool,
}

pub struct Puller {
    source: SocketAddrV4,
    source_shard: u16,
    /// The migration's stream id, carried in every pull (`stream.rs`).
    stream_id: u32,
    wanted: HashMap<u64, Wanted>,
    next_seq: u64,
    stats: PullStats,
}

impl Puller {
    pub fn new(source: SocketAddrV4, source_shard: u16, stream_id: u32) -> Self {
        Puller {
            source,
            source_shard,
            stream_id,
            wanted: HashMap::new(),
            next_seq: 0,
            stats: PullStats::default(),
        }
    }

    pub fn stats(&self) -> PullStats {
        self.stats
    }

    pub fn is_wanted(&self, hash: u64) -> bool {
        self.wanted.contains_key(&hash)
    }

    /// Asks for `key` (again: one more waiter). A request parked on it is a `waiter`.
    pub fn want(&mut self, hash: u64, key: &[u8], waiter: bool, hot: bool) {
        let entry = self.wanted.entry(hash).or_insert_with(|| {
            self.stats.keys += 1;
            Wanted {
                key: key.to_vec(),
                waiters: 0,
                hot: false,
                sent_at: None,
            }
        });
        entry.waiters += u32::from(waiter);
        entry.hot |= hot;
    }

    /// Sends what is unasked or overdue, in batches, keys with the most waiters first.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Box<Packet>>) {
        let mut due: Vec<(u32, u64)> = self
            .wanted
            .iter()
            .filter(|(_, w)| {
                w.sent_at
                    .is_none_or(|at| now.duration_since(at) >= PULL_RTO)
            })
            .map(|(&hash, w)| (w.waiters, hash))
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort_unstable_by(|a, b| b.cmp(a));
        for chunk in due.chunks(PULL_BATCH) {
            let mut items = Vec::new();
            for &(_, hash) in chunk {
                let wanted = self.wanted.get_mut(&hash).expect("collected above");
                if wanted.sent_at.is_some() {
                    self.stats.resent += 1;
                }
                wanted.sent_at = Some(now);
                let item = MigratedItem {
                    key: &wanted.key,
                    value: None,
                    version: 0,
                };
                wire::push_item(&mut items, wire::MAX_PAYLOAD, &item);
            }
            let batch = PullBatch {
                count: chunk.len() as u16,
                items: &items,
            };
            let header = HeaderRepr {
                op: Op::Pull,
                flags: Flags::default(),
                status: Status::Ok,
                shard: self.source_shard,
                seq: self.next_seq,
                key_hash: 0,
                // Answers echo it: a late answer to an earlier migration is not taken.
                client: self.stream_id,
                oldest_gap: 0,
            };
            self.next_seq += 1;
            let mut packet = Packet::new_boxed();
            let len = wire::emit_with(&header, packet.buffer_mut(), |b| batch.emit(b))
                .expect("16 keys of at most 255 bytes fit a frame");
            packet.set_len(len);
            packet.dst = self.source;
            self.stats.messages += 1;
            self.stats.bytes += len as u64;
            out.push(packet);
        }
    }

    /// An answer arrived for `hash` (applied by the caller); None when nobody wanted it
    /// any more (a duplicate answer).
    pub fn answered(&mut self, hash: u64) -> Option<Answered> {
        self.wanted.remove(&hash).map(|wanted| Answered {
            hash,
            hot: wanted.hot,
        })
    }

    /// Counts the bytes of an answer datagram.
    pub fn received(&mut self, bytes: usize) {
        self.stats.bytes += bytes as u64;
    }
}

/// The source's answer to a pull, written over the request in `buf`: each key's entry, its
/// tombstone, or a version-0 tombstone when the source never had it. Keys that do not fit
/// one frame are left out; the destination asks again. Returns the reply length.
pub fn answer(
    header: &HeaderRepr,
    keys: &PullBatch<'_>,
    table: &kv::Partition,
    buf: &mut [u8],
) -> usize {
    let mut items = Vec::new();
    let mut count = 0u16;
    let limit = wire::MAX_PAYLOAD - wire::HEADER_LEN - 4;
    for wanted in keys.items() {
        let hash = kv::key_hash(wanted.key);
        let (value, version) = if table.owns(hash) {
            match table.get(hash, wanted.key) {
                kv::Lookup::Found { version, value } => (Some(value), version),
                kv::Lookup::Deleted { version } => (None, version),
                kv::Lookup::Absent => (None, 0),
            }
        } else {
            continue; // Not this partition's key: the destination asked the wrong core.
        };
        let item = MigratedItem {
            key: wanted.key,
            value,
            version,
        };
        if !wire::push_item(&mut items, limit, &item) {
            break;
        }
        count += 1;
    }
    let reply_header = HeaderRepr {
        op: Op::PullReply,
        ..header.reply(Status::Ok)
    };
    let batch = PullBatch {
        count,
        items: &items,
    };
    wire::emit_with(&reply_header, buf, |b| batch.emit(b)).expect("built to fit one frame")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn source() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7100)
    }

    fn keys_of(packet: &Packet) -> Vec<Vec<u8>> {
        let (_, body) = wire::parse_header(packet.payload()).unwrap();
        let batch = PullBatch::parse(body).unwrap();
        batch.items().map(|i| i.key.to_vec()).collect()
    }

    #[test]
    fn hottest_keys_go_first_and_unanswered_ones_are_asked_again() {
        let mut puller = Puller::new(source(), 1, 1);
        let now = Instant::now();
        for i in 0..20u64 {
            let key = format!("k{i}");
            for _ in 0..=(i % 3) {
                puller.want(i, key.as_bytes(), true, false);
            }
        }
        let mut out = Vec::new();
        puller.poll(now, &mut out);
        assert_eq!(out.len(), 2, "20 keys in batches of 16");
        let first = keys_of(&out[0]);
        assert_eq!(first.len(), PULL_BATCH);
        assert!(first.iter().take(6).all(|k| {
            let i: u64 = std::str::from_utf8(&k[1..]).unwrap().parse().unwrap();
            i % 3 == 2
        }));
        out.clear();
        puller.poll(now, &mut out);
        assert!(out.is_empty(), "nothing is overdue yet");
        assert!(puller.answered(2).is_some());
        assert!(
            puller.answered(2).is_none(),
            "a duplicate answer wants nothing"
        );
        puller.poll(now + PULL_RTO, &mut out);
        let again: usize = out.iter().map(|p| keys_of(p).len()).sum();
        assert_eq!(again, 19, "every unanswered key is asked again");
        assert_eq!(puller.stats().keys, 20);
        assert_eq!(puller.stats().resent, 19);
    }

    #[test]
    fn the_source_answers_entries_tombstones_and_absent_keys() {
        let map = kv::PartitionMap::new(kv::GroupLayout::new(8).unwrap(), 1).unwrap();
        let mut table = kv::Partition::new(&map, 0, 16);
        let (a, b, c) = (b"a".as_slice(), b"b".as_slice(), b"c".as_slice());
        let va = table.put(kv::key_hash(a), a, b"1");
        table.put(kv::key_hash(b), b, b"2");
        let (vb, _) = table.delete(kv::key_hash(b), b);
        let mut puller = Puller::new(source(), 1, 1);
        for key in [a, b, c] {
            puller.want(kv::key_hash(key), key, true, false);
        }
        let mut out = Vec::new();
        puller.poll(Instant::now(), &mut out);
        let request = &mut out[0];
        let (header, body) = wire::parse_header(request.payload()).unwrap();
        let body = body.to_vec();
        let keys = PullBatch::parse(&body).unwrap();
        let len = answer(&header, &keys, &table, request.buffer_mut());
        let (reply_header, body) = wire::parse_header(&request.buffer_mut()[..len]).unwrap();
        assert_eq!(reply_header.op, Op::PullReply);
        let mut items: Vec<_> = PullBatch::parse(body)
            .unwrap()
            .items()
            .map(|i| (i.key.to_vec(), i.value.map(<[u8]>::to_vec), i.version))
            .collect();
        items.sort();
        assert_eq!(
            items,
            vec![
                (a.to_vec(), Some(b"1".to_vec()), va),
                (b.to_vec(), None, vb),
                (c.to_vec(), None, 0),
            ]
        );
    }
}
