//! The partition's durable log, as records: what a restarted server needs to serve again what
//! it acknowledged. A partition server appends a record for every change it makes (a client
//! write with the identity that keeps it at-most-once, migrated data, dedup windows that came
//! with a migration, and its shards' roles) to its `Journal`; the server loop writes the
//! journal to disk before it sends the replies of the turn that made it, and replays the disk
//! into a new partition server after a restart (`PartitionServer::recover`). The journal is
//! bytes only: files, fsync and segments belong to the loop (`bench/src/server/log.rs`).
//!
//! A record is `len u32 · crc32 u32 · kind u8 · body`, big-endian like the wire; `len` counts
//! kind and body, and the CRC-32 (IEEE) covers them, so a torn or corrupt tail is found and cut.
//! A client write's change and its identity are one record: a tail torn between them cannot
//! leave a write applied that a retransmission would apply again.

use crate::lost::LostGroups;
use dataplane::wire::Protocol;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Bytes before a record's kind: length and checksum.
pub const RECORD_HEADER: usize = 8;
/// Longest record body: a DEDUP_WINDOW (two 512-byte bitmaps) or a client write (key and value
/// each below 64 KiB), or a DAMAGED record of up to 2^20 groups.
pub const MAX_RECORD: usize = 1 << 18;

const PUT: u8 = 1;
const DELETE: u8 = 2;
const DATA: u8 = 3;
const WINDOW: u8 = 4;
const REMEMBER: u8 = 5;
const SHARD: u8 = 6;
const DAMAGED: u8 = 7;
const SNAPSHOT: u8 = 8;
const ROLE: u8 = 9;

/// Where a migration in comes from: the source core, its shard there, the stream's id and
/// the protocol. INIT's record names it, so that a successor taking over the chain's head
/// can settle the migration with the source (`docs/replication.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOrigin {
    pub source: SocketAddrV4,
    pub shard: u16,
    pub stream_id: u32,
    pub protocol: Protocol,
}

/// What became of a shard here, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardEvent {
    /// The partition serves the shard (the server started with it).
    Hosted,
    /// A migration in started (its INIT was taken): the data that follows is the source's.
    Incoming(StreamOrigin),
    /// The migration in ended: the shard is this partition's.
    Adopted,
    /// A migration out started.
    Outgoing,
    /// A migration out was called off and everything came back: the shard is served here
    /// again.
    Kept,
    /// The shard moved on, to this owner.
    Moved { to: SocketAddrV4, shard: u16 },
    /// Nothing of the shard is here any more (an aborted migration in gave it all back).
    Released,
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A client PUT applied under `version`.
    Put {
        shard: u16,
        client: u32,
        seq: u64,
        version: u64,
        key: &'a [u8],
        value: &'a [u8],
    },
    /// A client DELETE applied under `version`: whether it found the key, and whether it
    /// left a tombstone (a migration needed one) or removed the key.
    Delete {
        shard: u16,
        client: u32,
        seq: u64,
        version: u64,
        found: bool,
        tombstone: bool,
        key: &'a [u8],
    },
    /// Data that came by migration, pull or return, applied if newer (`value` None: a
    /// tombstone).
    Data {
        shard: u16,
        version: u64,
        key: &'a [u8],
        value: Option<&'a [u8]>,
    },
    /// A client's write window that came with a migration.
    Window {
        client: u32,
        floor: u64,
        applied: &'a [u8],
        not_found: &'a [u8],
    },
    /// A client write that came with a migration's dedup entries.
    Remember {
        client: u32,
        seq: u64,
        found: bool,
    },
    Shard {
        shard: u16,
        event: ShardEvent,
    },
    /// A crash at a migration's other end lost these groups of the shard.
    Damaged {
        shard: u16,
        lost: LostGroups,
    },
    /// A snapshot of the partition starts (`begin`) or is complete: from its start on, the
    /// log holds the whole state, in `Role` records, its entries (as `Data`, interleaved
    /// with the changes made meanwhile) and the dedup windows. A compacted log starts with
    /// a snapshot; replay needs no marker, they tell the log files what may be deleted.
    Snapshot {
        begin: bool,
    },
    /// A snapshot's statement of a shard's role: like `Shard`, but it never empties the
    /// shard's table (its entries follow, and any replayed before it still stand).
    Role {
        shard: u16,
        event: ShardEvent,
    },
}

/// Why a log does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogError {
    /// The bytes end inside a record: a write the crash cut short.
    Truncated,
    /// The checksum does not match: the record was torn or the disk corrupted it.
    BadChecksum,
    /// A length no record can have.
    BadLength(u32),
    UnknownKind(u8),
    /// The body does not fit its kind.
    Malformed(u8),
    UnknownEvent(u8),
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Truncated => write!(f, "the log ends inside a record"),
            LogError::BadChecksum => write!(f, "a record's checksum does not match"),
            LogError::BadLength(len) => write!(f, "a record claims {len} bytes"),
            LogError::UnknownKind(kind) => write!(f, "unknown record kind {kind}"),
            LogError::Malformed(kind) => write!(f, "a record of kind {kind} is malformed"),
            LogError::UnknownEvent(event) => write!(f, "unknown shard event {event}"),
        }
    }
}

impl std::error::Error for LogError {}

/// Records a partition server made and has not handed to its disk yet. A disabled journal
/// (no `--log-dir`) records nothing and costs a branch per change.
#[derive(Debug, Default)]
pub struct Journal {
    enabled: bool,
    bytes: Vec<u8>,
    /// The head of a replication chain also passes every record down its chain
    /// (`chain.rs`): a second copy, taken by the chain, not the disk.
    chain: Option<Vec<u8>>,
}

impl Journal {
    pub fn enabled() -> Self {
        Journal {
            enabled: true,
            ..Journal::default()
        }
    }

    /// Appends `record` (nothing when the journal is disabled).
    #[inline]
    pub fn record(&mut self, record: &Record<'_>) {
        if self.enabled {
            let start = self.bytes.len();
            record.emit(&mut self.bytes);
            if let Some(chain) = &mut self.chain {
                chain.extend_from_slice(&self.bytes[start..]);
            }
        } else if let Some(chain) = &mut self.chain {
            record.emit(chain);
        }
    }

    /// Appends records made elsewhere (a chain's stream, applied here) for the disk only.
    pub fn append_framed(&mut self, records: &[u8]) {
        if self.enabled {
            self.bytes.extend_from_slice(records);
        }
    }

    /// Copies every record from now on for the chain (`pass_to_chain`), or stops.
    pub fn feed_chain(&mut self, on: bool) {
        if on != self.chain.is_some() {
            self.chain = on.then(Vec::new);
        }
    }

    /// Hands the records made since the last call to the chain (the buffer is kept).
    pub fn pass_to_chain(&mut self, take: impl FnOnce(&[u8])) {
        if let Some(chain) = &mut self.chain {
            take(chain);
            chain.clear();
        }
    }

    /// The records made since the last call, to write to disk before the replies they
    /// cover go out.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Record<'_> {
    /// Appends the framed record to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; RECORD_HEADER]);
        self.emit_body(out);
        let body = &out[start + RECORD_HEADER..];
        let (len, crc) = (body.len() as u32, crc32fast::hash(body));
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    }

    fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Record::Put {
                shard,
                client,
                seq,
                version,
                key,
                value,
            } => {
                out.push(PUT);
                out.extend_from_slice(&shard.to_be_bytes());
                out.extend_from_slice(&client.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Record::Delete {
                shard,
                client,
                seq,
                version,
                found,
                tombstone,
                key,
            } => {
                out.push(DELETE);
                out.extend_from_slice(&shard.to_be_bytes());
                out.extend_from_slice(&client.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                out.push(u8::from(*found) | u8::from(*tombstone) << 1);
                put_bytes(out, key);
            }
            Record::Data {
                shard,
                version,
                key,
                value,
            } => {
                out.push(DATA);
                out.extend_from_slice(&shard.to_be_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                out.push(u8::from(value.is_none()));
                put_bytes(out, key);
                put_bytes(out, value.unwrap_or(&[]));
            }
            Record::Window {
                client,
                floor,
                applied,
                not_found,
            } => {
                out.push(WINDOW);
                out.extend_from_slice(&client.to_be_bytes());
                out.extend_from_slice(&floor.to_be_bytes());
                put_bytes(out, applied);
                put_bytes(out, not_found);
            }
            Record::Remember { client, seq, found } => {
                out.push(REMEMBER);
                out.extend_from_slice(&client.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.push(u8::from(*found));
            }
            Record::Shard { shard, event } => emit_event(out, SHARD, *shard, event),
            Record::Role { shard, event } => emit_event(out, ROLE, *shard, event),
            Record::Damaged { shard, lost } => {
                out.push(DAMAGED);
                out.extend_from_slice(&shard.to_be_bytes());
                let groups = lost.groups();
                out.extend_from_slice(&groups.start.to_be_bytes());
                out.extend_from_slice(&(groups.len() as u32).to_be_bytes());
                let mut bits = vec![0u8; groups.len().div_ceil(8)];
                for group in groups.clone().filter(|&g| lost.contains(g)) {
                    let i = (group - groups.start) as usize;
                    bits[i / 8] |= 0x80 >> (i % 8);
                }
                out.extend_from_slice(&bits);
            }
            Record::Snapshot { begin } => {
                out.push(SNAPSHOT);
                out.push(u8::from(*begin));
            }
        }
    }
}

/// A `SHARD` or `ROLE` record's body: the shard, the event, and the other end (the new
/// owner of `Moved`; the source and stream of `Incoming`).
fn emit_event(out: &mut Vec<u8>, kind: u8, shard: u16, event: &ShardEvent) {
    out.push(kind);
    out.extend_from_slice(&shard.to_be_bytes());
    let (code, peer, peer_shard, stream_id, protocol) = match *event {
        ShardEvent::Hosted => (1, None, 0, 0, 0),
        ShardEvent::Incoming(o) => (2, Some(o.source), o.shard, o.stream_id, o.protocol as u8),
        ShardEvent::Adopted => (3, None, 0, 0, 0),
        ShardEvent::Outgoing => (4, None, 0, 0, 0),
        ShardEvent::Kept => (5, None, 0, 0, 0),
        ShardEvent::Moved { to, shard } => (6, Some(to), shard, 0, 0),
        ShardEvent::Released => (7, None, 0, 0, 0),
    };
    out.push(code);
    let peer = peer.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    out.extend_from_slice(&peer.ip().octets());
    out.extend_from_slice(&peer.port().to_be_bytes());
    out.extend_from_slice(&peer_shard.to_be_bytes());
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.push(protocol);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads one record from the front of `bytes`: the record and the bytes it took.
pub fn parse_record(bytes: &[u8]) -> Result<(Record<'_>, usize), LogError> {
    let header = bytes.get(..RECORD_HEADER).ok_or(LogError::Truncated)?;
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
    if len == 0 || len as usize > MAX_RECORD {
        return Err(LogError::BadLength(len));
    }
    let end = RECORD_HEADER + len as usize;
    let body = bytes.get(RECORD_HEADER..end).ok_or(LogError::Truncated)?;
    if crc32fast::hash(body) != crc {
        return Err(LogError::BadChecksum);
    }
    let kind = body[0];
    let mut r = Reader { rest: &body[1..] };
    let record = parse_body(kind, &mut r).ok_or(LogError::Malformed(kind))??;
    if !r.rest.is_empty() {
        return Err(LogError::Malformed(kind));
    }
    Ok((record, end))
}

/// The body of a record of `kind`; None when it is too short (malformed).
fn parse_body<'a>(kind: u8, r: &mut Reader<'a>) -> Option<Result<Record<'a>, LogError>> {
    Some(Ok(match kind {
        PUT => Record::Put {
            shard: r.u16()?,
            client: r.u32()?,
            seq: r.u64()?,
            version: r.u64()?,
            key: r.bytes()?,
            value: r.bytes()?,
        },
        DELETE => {
            let (shard, client, seq, version, flags) =
                (r.u16()?, r.u32()?, r.u64()?, r.u64()?, r.u8()?);
            Record::Delete {
                shard,
                client,
                seq,
                version,
                found: flags & 1 != 0,
                tombstone: flags & 2 != 0,
                key: r.bytes()?,
            }
        }
        DATA => {
            let (shard, version, tombstone, key, value) =
                (r.u16()?, r.u64()?, r.u8()?, r.bytes()?, r.bytes()?);
            Record::Data {
                shard,
                version,
                key,
                value: (tombstone == 0).then_some(value),
            }
        }
        WINDOW => Record::Window {
            client: r.u32()?,
            floor: r.u64()?,
            applied: r.bytes()?,
            not_found: r.bytes()?,
        },
        REMEMBER => Record::Remember {
            client: r.u32()?,
            seq: r.u64()?,
            found: r.u8()? != 0,
        },
        SHARD => {
            let (shard, event) = (r.u16()?, parse_event(r)?);
            match event {
                Ok(event) => Record::Shard { shard, event },
                Err(e) => return Some(Err(e)),
            }
        }
        ROLE => {
            let (shard, event) = (r.u16()?, parse_event(r)?);
            match event {
                Ok(event) => Record::Role { shard, event },
                Err(e) => return Some(Err(e)),
            }
        }
        DAMAGED => {
            let (shard, first, count) = (r.u16()?, r.u32()?, r.u32()?);
            let bits = r.take((count as usize).div_ceil(8))?;
            let mut lost = LostGroups::new(first..first.checked_add(count)?);
            for i in 0..count as usize {
                if bits[i / 8] & 0x80 >> (i % 8) != 0 {
                    lost.mark(first + i as u32);
                }
            }
            Record::Damaged { shard, lost }
        }
        SNAPSHOT => Record::Snapshot {
            begin: r.u8()? != 0,
        },
        other => return Some(Err(LogError::UnknownKind(other))),
    }))
}

/// A shard event's code and new owner; None when too short.
fn parse_event(r: &mut Reader<'_>) -> Option<Result<ShardEvent, LogError>> {
    let code = r.u8()?;
    let ip = Ipv4Addr::from(r.u32()?);
    let (port, to_shard, stream_id, protocol) = (r.u16()?, r.u16()?, r.u32()?, r.u8()?);
    Some(Ok(match code {
        1 => ShardEvent::Hosted,
        2 => ShardEvent::Incoming(StreamOrigin {
            source: SocketAddrV4::new(ip, port),
            shard: to_shard,
            stream_id,
            protocol: match Protocol::from_u8(protocol) {
                Ok(protocol) => protocol,
                Err(_) => return Some(Err(LogError::UnknownEvent(code))),
            },
        }),
        3 => ShardEvent::Adopted,
        4 => ShardEvent::Outgoing,
        5 => ShardEvent::Kept,
        6 => ShardEvent::Moved {
            to: SocketAddrV4::new(ip, port),
            shard: to_shard,
        },
        7 => ShardEvent::Released,
        other => return Some(Err(LogError::UnknownEvent(other))),
    }))
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.rest.get(..n)?, &self.rest[n..]);
        self.rest = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

/// The records of a log, in order, and where the valid part ends: at the end, or where the
/// first record that does not decode starts (a crash's torn tail; the caller cuts it, or
/// refuses a log whose bad record is followed by more data).
pub struct Records<'a> {
    bytes: &'a [u8],
    at: usize,
    error: Option<LogError>,
}

impl<'a> Records<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Records {
            bytes,
            at: 0,
            error: None,
        }
    }

    /// Bytes of whole, valid records read so far.
    pub fn valid_len(&self) -> usize {
        self.at
    }

    /// Why reading stopped before the end, if it did.
    pub fn error(&self) -> Option<LogError> {
        self.error
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.error.is_some() || self.at == self.bytes.len() {
            return None;
        }
        match parse_record(&self.bytes[self.at..]) {
            Ok((record, len)) => {
                self.at += len;
                Some(record)
            }
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Record<'static>> {
        let mut lost = LostGroups::new(16..40);
        lost.mark(17);
        lost.mark(39);
        vec![
            Record::Put {
                shard: 3,
                client: 7,
                seq: 11,
                version: 12,
                key: b"key",
                value: b"value",
            },
            Record::Delete {
                shard: 3,
                client: 7,
                seq: 12,
                version: 13,
                found: true,
                tombstone: false,
                key: b"key",
            },
            Record::Data {
                shard: 4,
                version: 9,
                key: b"k",
                value: None,
            },
            Record::Data {
                shard: 4,
                version: 10,
                key: b"k",
                value: Some(b""),
            },
            Record::Window {
                client: 9,
                floor: 100,
                applied: &[0xAA; 512],
                not_found: &[0x01; 512],
            },
            Record::Remember {
                client: 9,
                seq: 101,
                found: false,
            },
            Record::Shard {
                shard: 3,
                event: ShardEvent::Moved {
                    to: "10.0.0.2:7100".parse().unwrap(),
                    shard: 5,
                },
            },
            Record::Shard {
                shard: 3,
                event: ShardEvent::Adopted,
            },
            Record::Damaged { shard: 3, lost },
            Record::Snapshot { begin: true },
            Record::Role {
                shard: 3,
                event: ShardEvent::Incoming(StreamOrigin {
                    source: "10.0.0.1:7100".parse().unwrap(),
                    shard: 2,
                    stream_id: 77,
                    protocol: Protocol::Rocksteady,
                }),
            },
            Record::Snapshot { begin: false },
        ]
    }

    #[test]
    fn every_record_reads_back_as_written() {
        let records = every_kind();
        let mut bytes = Vec::new();
        for record in &records {
            record.emit(&mut bytes);
        }
        let mut read = Records::new(&bytes);
        let back: Vec<_> = read.by_ref().collect();
        assert_eq!(back, records);
        assert_eq!((read.valid_len(), read.error()), (bytes.len(), None));
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_valid_part_where_it_starts() {
        let mut bytes = Vec::new();
        for record in &every_kind() {
            record.emit(&mut bytes);
        }
        let whole = bytes.len();
        let mut last = Vec::new();
        every_kind()[0].emit(&mut last);
        bytes.extend_from_slice(&last);
        for cut in 1..last.len() {
            let mut read = Records::new(&bytes[..whole + cut]);
            assert_eq!(read.by_ref().count(), every_kind().len(), "cut at {cut}");
            assert_eq!(read.valid_len(), whole);
            assert_eq!(read.error(), Some(LogError::Truncated), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let mut read = Records::new(&flipped);
        assert_eq!(read.by_ref().count(), every_kind().len());
        assert_eq!(read.error(), Some(LogError::BadChecksum));
    }

    #[test]
    fn hostile_bytes_give_an_error_not_a_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut valid = Vec::new();
        for record in &every_kind() {
            record.emit(&mut valid);
        }
        for _ in 0..20_000 {
            let mut bytes = valid.clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..bytes.len());
                bytes[i] = rng.u8(..);
            }
            bytes.truncate(rng.usize(..=bytes.len()));
            let mut read = Records::new(&bytes);
            read.by_ref().for_each(drop);
            assert!(read.valid_len() <= bytes.len());
        }
        // A record whose checksum matches a malformed body.
        let mut forged = Vec::new();
        let body = [PUT, 0, 1];
        forged.extend_from_slice(&(body.len() as u32).to_be_bytes());
        forged.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        forged.extend_from_slice(&body);
        assert_eq!(parse_record(&forged).unwrap_err(), LogError::Malformed(PUT));
    }

    #[test]
    fn a_disabled_journal_records_nothing() {
        let records = [
            Record::Put {
                shard: 1,
                client: 2,
                seq: 3,
                version: 4,
                key: b"k",
                value: b"v",
            },
            Record::Shard {
                shard: 1,
                event: ShardEvent::Hosted,
            },
        ];
        let mut journal = Journal::default();
        records.iter().for_each(|r| journal.record(r));
        assert!(journal.is_empty());
        let mut journal = Journal::enabled();
        records.iter().for_each(|r| journal.record(r));
        let bytes = journal.take();
        assert_eq!(Records::new(&bytes).count(), 2);
        assert!(journal.is_empty());
    }
}
