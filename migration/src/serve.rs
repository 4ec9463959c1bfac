//! Serving client requests against one partition (one core's share of every shard it
//! hosts). Sans-I/O: `handle` turns a request datagram into a reply in the same buffer.

use crate::dedup::{DedupVerdict, WriteDedup};
use dataplane::wire::{
    self, HeaderRepr, KeyOp, MultiReplyWriter, Reply, ReplyItem, Request, Status, WireError,
    HEADER_LEN,
};
use dataplane::Packet;
use kv::{key_hash, Lookup, Partition, PartitionMap};

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
}

/// Counters of one partition server; summed across cores for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    /// broken dedup window.
    pub error_replies: u64,
    pub dropped_malformed: u64,
    pub dropped_not_request: u64,
    pub dropped_hash_mismatch: u64,
    pub dropped_stale_write: u64,
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
    }

    fn count_drop(&mut self, reason: DropReason) {
        match reason {
            DropReason::Malformed(_) => self.dropped_malformed += 1,
            DropReason::NotARequest => self.dropped_not_request += 1,
            DropReason::HashMismatch => self.dropped_hash_mismatch += 1,
            DropReason::StaleWrite => self.dropped_stale_write += 1,
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
        self.dropped_malformed += other.dropped_malformed;
        self.dropped_not_request += other.dropped_not_request;
        self.dropped_hash_mismatch += other.dropped_hash_mismatch;
        self.dropped_stale_write += other.dropped_stale_write;
    }
}

/// One core's partition of every shard the server hosts, with the core's write dedup.
pub struct PartitionServer {
    partition: u32,
    shards: Vec<(u16, Partition)>,
    dedup: WriteDedup,
    counters: ServeCounters,
    /// Per packet of the burst being served: shard index and key hash, for prefetching.
    targets: Vec<Option<(usize, u64)>>,
    /// Multi-key replies are built here: the request is still being read while they grow.
    scratch: Box<[u8; dataplane::port::BUFFER_CAPACITY]>,
}

impl PartitionServer {
    /// Partition `partition` of `map` for each shard in `shards`, sized for `capacity`
    /// entries per shard.
    pub fn new(map: &PartitionMap, partition: u32, shards: &[u16], capacity: usize) -> Self {
        PartitionServer {
            partition,
            shards: shards
                .iter()
                .map(|&shard| (shard, Partition::new(map, partition, capacity)))
                .collect(),
            dedup: WriteDedup::default(),
            counters: ServeCounters::default(),
            targets: Vec::new(),
            scratch: Box::new([0; dataplane::port::BUFFER_CAPACITY]),
        }
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    pub fn counters(&self) -> &ServeCounters {
        &self.counters
    }

    /// Live entries across every shard of this partition.
    pub fn entries(&self) -> usize {
        self.shards.iter().map(|(_, table)| table.len()).sum()
    }

    pub fn table(&self, shard: u16) -> Option<&Partition> {
        self.shards
            .iter()
            .find(|(s, _)| *s == shard)
            .map(|(_, t)| t)
    }

    pub fn table_mut(&mut self, shard: u16) -> Option<&mut Partition> {
        self.shards
            .iter_mut()
            .find(|(s, _)| *s == shard)
            .map(|(_, t)| t)
    }

    /// Serves a burst as a software pipeline: while request `i` is served, the entry of
    /// request `i + D` and the bucket of request `i + 2D` are being fetched, so each cache
    /// miss has had `D` requests' worth of time to land. Returns, per packet, whether it is
    /// now a reply to send.
    pub fn handle_burst(&mut self, packets: &mut [Box<Packet>], replies: &mut Vec<bool>) {
        const D: usize = 16;
        replies.clear();
        self.targets.clear();
        for packet in packets.iter() {
            let target = self.target(packet);
            self.targets.push(target);
        }
        let n = packets.len();
        for step in 0..n + 2 * D {
            if let Some(&Some((shard, hash))) = self.targets.get(step) {
                self.shards[shard].1.prefetch_slots(hash);
            }
            if let Some(&Some((shard, hash))) =
                step.checked_sub(D).and_then(|i| self.targets.get(i))
            {
                self.shards[shard].1.prefetch_entry(hash);
            }
            if let Some(i) = step.checked_sub(2 * D).filter(|&i| i < n) {
                replies.push(self.handle(&mut packets[i]));
            }
        }
    }

    /// The shard index and key hash a single-key request will touch, from its header only.
    fn target(&self, packet: &Packet) -> Option<(usize, u64)> {
        let header = wire::Header::new_checked(packet.payload()).ok()?;
        let op = wire::Op::from_u8(header.op_code()).ok()?;
        if !op.is_key_addressed() || op.is_multi() {
            return None;
        }
        let shard = self.shards.iter().position(|(s, _)| *s == header.shard())?;
        Some((shard, header.key_hash()))
    }

    /// Turns the request in `packet` into its reply, in place. Returns false when the
    /// packet must be dropped (the reason is counted).
    pub fn handle(&mut self, packet: &mut Packet) -> bool {
        match self.handle_payload(packet) {
            Ok(len) => {
                packet.set_len(len);
                packet.swap_addresses();
                true
            }
            Err(reason) => {
                self.counters.count_drop(reason);
                false
            }
        }
    }

    fn handle_payload(&mut self, packet: &mut Packet) -> Result<usize, DropReason> {
        let (len, buf) = packet.payload_and_buffer();
        let (header, body) = wire::parse_header(&buf[..len]).map_err(DropReason::Malformed)?;
        if header.op.is_reply() {
            return Err(DropReason::NotARequest);
        }
        let request = Request::parse(&header, body).map_err(DropReason::Malformed)?;
        let shard_index = self.shards.iter().position(|(s, _)| *s == header.shard);
        let Some(shard_index) = shard_index else {
            return Ok(self.error_reply(&header, buf));
        };
        match request {
            Request::Get { key } => {
                self.counters.gets += 1;
                let hash = self.checked_hash(&header, key)?;
                let table = &self.shards[shard_index].1;
                if !table.owns(hash) {
                    return Ok(self.error_reply(&header, buf));
                }
                let (status, version, value) = match table.get(hash, key) {
                    Lookup::Found { version, value } => {
                        self.counters.get_hits += 1;
                        (Status::Ok, version, value)
                    }
                    Lookup::Deleted { version } => (Status::NotFound, version, &[][..]),
                    Lookup::Absent => (Status::NotFound, 0, &[][..]),
                };
                let reply = Reply::Get { version, value };
                Ok(
                    wire::emit_reply(&header.reply(status), &reply, &mut buf[..])
                        .expect("a stored value fits a reply"),
                )
            }
            Request::Put { key, value } => {
                self.counters.puts += 1;
                let hash = self.checked_hash(&header, key)?;
                if !self.shards[shard_index].1.owns(hash) {
                    return Ok(self.error_reply(&header, buf));
                }
                let version = match self
                    .dedup
                    .admit(header.client, header.seq, header.oldest_gap)
                {
                    DedupVerdict::Apply => self.shards[shard_index].1.put(hash, key, value),
                    DedupVerdict::Duplicate => {
                        self.counters.duplicate_writes += 1;
                        0
                    }
                    DedupVerdict::Stale => return Err(DropReason::StaleWrite),
                    DedupVerdict::OutOfWindow => return Ok(self.error_reply(&header, buf)),
                };
                Ok(self.write_reply(&header, Reply::Put { version }, buf))
            }
            Request::Delete { key } => {
                self.counters.deletes += 1;
                let hash = self.checked_hash(&header, key)?;
                if !self.shards[shard_index].1.owns(hash) {
                    return Ok(self.error_reply(&header, buf));
                }
                let (status, version) =
                    match self
                        .dedup
                        .admit(header.client, header.seq, header.oldest_gap)
                    {
                        DedupVerdict::Apply => {
                            let (version, existed) = self.shards[shard_index].1.delete(hash, key);
                            (
                                if existed {
                                    Status::Ok
                                } else {
                                    Status::NotFound
                                },
                                version,
                            )
                        }
                        DedupVerdict::Duplicate => {
                            self.counters.duplicate_writes += 1;
                            (Status::Ok, 0)
                        }
                        DedupVerdict::Stale => return Err(DropReason::StaleWrite),
                        DedupVerdict::OutOfWindow => return Ok(self.error_reply(&header, buf)),
                    };
                let reply = Reply::Delete { version };
                Ok(
                    wire::emit_reply(&header.reply(status), &reply, &mut buf[..])
                        .expect("a delete reply fits"),
                )
            }
            Request::Multi(items) => {
                self.counters.multi_requests += 1;
                self.counters.multi_keys += items.len() as u64;
                for item in items.iter() {
                    if key_hash(item.key) != item.key_hash {
                        return Err(DropReason::HashMismatch);
                    }
                }
                let verdict = match items.op {
                    KeyOp::Get => DedupVerdict::Apply,
                    KeyOp::Put | KeyOp::Delete => {
                        self.dedup
                            .admit(header.client, header.seq, header.oldest_gap)
                    }
                };
                let apply = match verdict {
                    DedupVerdict::Apply => true,
                    DedupVerdict::Duplicate => {
                        self.counters.duplicate_writes += 1;
                        false
                    }
                    DedupVerdict::Stale => return Err(DropReason::StaleWrite),
                    DedupVerdict::OutOfWindow => return Ok(self.error_reply(&header, buf)),
                };
                let table = &mut self.shards[shard_index].1;
                let mut writer = MultiReplyWriter::new(items.op, &mut self.scratch[HEADER_LEN..])
                    .expect("scratch holds a multi-key reply header");
                for item in items.iter() {
                    let reply = execute_item(table, items.op, item, apply);
                    if writer.push(reply).is_err() {
                        // The values do not fit one frame: the client must ask for fewer keys.
                        return Ok(self.error_reply(&header, buf));
                    }
                }
                let body_len = writer.finish().expect("at least one item");
                HeaderRepr::emit(
                    &header.reply(Status::Ok),
                    &mut wire::Header::new_unchecked(&mut self.scratch[..HEADER_LEN]),
                );
                let total = HEADER_LEN + body_len;
                buf[..total].copy_from_slice(&self.scratch[..total]);
                Ok(total)
            }
        }
    }

    fn checked_hash(&self, header: &HeaderRepr, key: &[u8]) -> Result<u64, DropReason> {
        let hash = key_hash(key);
        if hash == header.key_hash {
            Ok(hash)
        } else {
            Err(DropReason::HashMismatch)
        }
    }

    fn write_reply(&mut self, header: &HeaderRepr, reply: Reply, buf: &mut [u8]) -> usize {
        wire::emit_reply(&header.reply(Status::Ok), &reply, buf).expect("a write reply fits")
    }

    fn error_reply(&mut self, header: &HeaderRepr, buf: &mut [u8]) -> usize {
        self.counters.error_replies += 1;
        let reply = match header.op.reply() {
            wire::Op::GetReply => Reply::Get {
                version: 0,
                value: &[],
            },
            wire::Op::DeleteReply => Reply::Delete { version: 0 },
            _ => Reply::Put { version: 0 },
        };
        let reply_header = HeaderRepr {
            // Multi-key errors answer with a single-key shaped body; the status says it all.
            op: if header.op.is_multi() {
                wire::Op::PutReply
            } else {
                header.op.reply()
            },
            ..header.reply(Status::Error)
        };
        wire::emit_reply(&reply_header, &reply, buf).expect("an error reply fits")
    }
}

fn execute_item<'t>(
    table: &'t mut Partition,
    op: KeyOp,
    item: wire::MultiItem<'_>,
    apply: bool,
) -> ReplyItem<'t> {
    let hash = item.key_hash;
    if !table.owns(hash) {
        return ReplyItem {
            status: Status::Error,
            version: 0,
            value: &[],
        };
    }
    let (status, version) = match (op, apply) {
        (KeyOp::Get, _) => {
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
        (_, false) => (Status::Ok, 0),
        (KeyOp::Put, true) => (Status::Ok, table.put(hash, item.key, item.value)),
        (KeyOp::Delete, true) => {
            let (version, existed) = table.delete(hash, item.key);
            (
                if existed {
                    Status::Ok
                } else {
                    Status::NotFound
                },
                version,
            )
        }
    };
    ReplyItem {
        status,
        version,
        value: &[],
    }
}
