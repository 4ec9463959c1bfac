//! Bodies of migration-stream messages (source core → destination core) and of switch
//! control messages (source core → switch). Layouts: `docs/migration.md`, `docs/switch.md`.
//! Acknowledgements of both are the op with the reply bit, an empty body, and `seq` = the
//! last message applied in order.

use super::message::{Cursor, Writer};
use super::{Op, WireError};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Bytes of the reply-to trailer a `FORWARDED` request ends with: IPv4 address, UDP port,
/// two zero bytes.
pub const TRAILER_LEN: usize = 8;

/// Splits a forwarded request's payload into the request and the address to answer.
pub fn split_reply_to(payload: &[u8]) -> Result<(&[u8], SocketAddrV4), WireError> {
    let cut = payload
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or(WireError::Truncated)?;
    let (request, trailer) = payload.split_at(cut);
    let mut cursor = Cursor::new(trailer);
    let ip = Ipv4Addr::from(cursor.u32()?);
    let port = cursor.u16()?;
    if cursor.u16()? != 0 {
        return Err(WireError::NonZeroReserved);
    }
    Ok((request, SocketAddrV4::new(ip, port)))
}

/// Appends a reply-to trailer at `at` and returns the new length.
pub fn append_reply_to(
    buf: &mut [u8],
    at: usize,
    reply_to: SocketAddrV4,
) -> Result<usize, WireError> {
    let mut writer = Writer::new(buf.get_mut(at..).ok_or(WireError::TooLong)?);
    writer.put(&u32::from(*reply_to.ip()).to_be_bytes())?;
    writer.put(&reply_to.port().to_be_bytes())?;
    writer.put(&[0, 0])?;
    Ok(at + TRAILER_LEN)
}

/// One entry or tombstone carried by a data batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigratedItem<'a> {
    pub key: &'a [u8],
    /// None: a tombstone (the key was deleted at this version).
    pub value: Option<&'a [u8]>,
    pub version: u64,
}

/// Bytes an item takes in a batch besides its key and value.
pub const ITEM_OVERHEAD: usize = 12;
/// Bytes of a LATE_WRITE body besides key and value: reply-to address (6), kind, key
/// length, value length, reserved (2), client, seq, oldest gap, key hash.
pub(super) const LATE_WRITE_FIXED: usize = 36;
const TOMBSTONE: u8 = 1;

/// A client write the source received for a group it has already handed over; the
/// destination applies it (deduplicated) and answers `reply_to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateWrite<'a> {
    pub reply_to: SocketAddrV4,
    pub client: u32,
    pub seq: u64,
    pub oldest_gap: u32,
    pub key_hash: u64,
    pub key: &'a [u8],
    /// None: a delete.
    pub value: Option<&'a [u8]>,
}

/// Bytes of the dedup bitmap of one client window (4096 sequence numbers).
pub const DEDUP_BITMAP_LEN: usize = 512;

/// Which migration protocol a stream belongs to: it decides how the destination serves
/// the shard while the stream runs (`docs/migration.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Protocol {
    /// Switch-steered, per group (FAST'24).
    NetMigrate = 1,
    /// Ownership moves first; the destination pulls what it misses (SOSP'17).
    Rocksteady = 2,
    /// Writes go to the destination; clients track progress and double-read (Fulva).
    Fulva = 3,
    /// The source serves until a final stop-and-copy (Slacker/Remus style push).
    SourceBased = 4,
}

impl Protocol {
    pub fn from_u8(code: u8) -> Result<Protocol, WireError> {
        Ok(match code {
            1 => Protocol::NetMigrate,
            2 => Protocol::Rocksteady,
            3 => Protocol::Fulva,
            4 => Protocol::SourceBased,
            _ => return Err(WireError::NonZeroReserved),
        })
    }
}

/// A migration-stream message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMessage<'a> {
    Init {
        source_shard: u16,
        /// The source's partitions per server and group bits: a destination whose own
        /// differ would place keys in other groups and partitions, so it refuses.
        partitions: u16,
        group_bits: u8,
        /// Entries and tombstones the source partition holds (for sizing the table).
        entries: u32,
        source_clock: u64,
        protocol: Protocol,
        /// Rocksteady: bulk pulls the destination keeps in flight at once.
        parallel_pulls: u8,
    },
    GroupStart {
        group: u32,
        /// The source's version clock once the group froze: the destination's writes to
        /// the group must be newer.
        floor_clock: u64,
    },
    GroupComplete {
        group: u32,
    },
    /// The destination owns the shard from now on; its writes must be newer than
    /// `floor_clock`, the source's clock when it stopped.
    Terminate {
        floor_clock: u64,
    },
    /// The migration is called off: the destination sends back what it holds of the
    /// shard (its own stream, same stream id) and stops serving it. Empty body.
    Abort,
    /// Nothing to apply: a source whose destination has been silent asks whether the
    /// stream is still known there (a destination that restarted answers `ERROR`). Empty
    /// body.
    Probe,
    /// Entries of one group; `items` is the encoded list, iterate with [`data_items`].
    Data {
        group: u32,
        count: u16,
        items: &'a [u8],
    },
    /// Writes `(client, seq)` the source applied; `entries` is 12 bytes each, the top bit
    /// of `seq` set for a DELETE that found no key ([`dedup_entries`]).
    DedupEntries {
        entries: &'a [u8],
    },
    /// A whole client window of the source's write dedup: the writes applied from `floor`
    /// on, and the DELETEs among them that found no key (bitmaps of `seq % 4096`).
    DedupWindow {
        client: u32,
        floor: u64,
        bitmap: &'a [u8],
        not_found: &'a [u8],
    },
    LateWrite(LateWrite<'a>),
}

impl<'a> StreamMessage<'a> {
    pub fn op(&self) -> Op {
        match self {
            StreamMessage::Init { .. } => Op::MigrateInit,
            StreamMessage::GroupStart { .. } => Op::GroupStart,
            StreamMessage::GroupComplete { .. } => Op::GroupComplete,
            StreamMessage::Terminate { .. } => Op::Terminate,
            StreamMessage::Abort => Op::MigrateAbort,
            StreamMessage::Probe => Op::MigrateProbe,
            StreamMessage::Data { .. } => Op::MigrateData,
            StreamMessage::DedupEntries { .. } => Op::DedupEntries,
            StreamMessage::DedupWindow { .. } => Op::DedupWindow,
            StreamMessage::LateWrite(_) => Op::LateWrite,
        }
    }

    pub fn parse(op: Op, body: &'a [u8]) -> Result<StreamMessage<'a>, WireError> {
        let mut c = Cursor::new(body);
        let message = match op {
            Op::MigrateInit => {
                let source_shard = c.u16()?;
                let partitions = c.u16()?;
                let entries = c.u32()?;
                let source_clock = c.version()?;
                let protocol = Protocol::from_u8(c.u8()?)?;
                let parallel_pulls = c.u8()?;
                let group_bits = c.u8()?;
                reserved(&mut c, 5)?;
                StreamMessage::Init {
                    source_shard,
                    partitions,
                    group_bits,
                    entries,
                    source_clock,
                    protocol,
                    parallel_pulls,
                }
            }
            Op::GroupStart => {
                let group = c.u32()?;
                reserved(&mut c, 4)?;
                StreamMessage::GroupStart {
                    group,
                    floor_clock: c.version()?,
                }
            }
            Op::GroupComplete => StreamMessage::GroupComplete { group: c.u32()? },
            Op::Terminate => StreamMessage::Terminate {
                floor_clock: c.version()?,
            },
            Op::MigrateAbort => StreamMessage::Abort,
            Op::MigrateProbe => StreamMessage::Probe,
            Op::MigrateData => {
                let group = c.u32()?;
                let count = c.u16()?;
                reserved(&mut c, 2)?;
                let items = c.rest();
                check_items(items, count)?;
                c.take(items.len())?;
                StreamMessage::Data {
                    group,
                    count,
                    items,
                }
            }
            Op::DedupEntries => {
                let count = c.u16()?;
                reserved(&mut c, 2)?;
                StreamMessage::DedupEntries {
                    entries: c.take(count as usize * 12)?,
                }
            }
            Op::DedupWindow => {
                let client = c.u32()?;
                reserved(&mut c, 4)?;
                let floor = c.u64()?;
                StreamMessage::DedupWindow {
                    client,
                    floor,
                    bitmap: c.take(DEDUP_BITMAP_LEN)?,
                    not_found: c.take(DEDUP_BITMAP_LEN)?,
                }
            }
            Op::LateWrite => {
                let ip = Ipv4Addr::from(c.u32()?);
                let port = c.u16()?;
                let kind = c.u8()?;
                let key_len = c.u8()?;
                let value_len = c.u16()?;
                reserved(&mut c, 2)?;
                let client = c.u32()?;
                let seq = c.u64()?;
                let oldest_gap = c.u32()?;
                let key_hash = c.u64()?;
                if key_len == 0 {
                    return Err(WireError::BadKeyLength);
                }
                let key = c.take(key_len as usize)?;
                let value = match kind {
                    2 => Some(c.take(value_len as usize)?),
                    3 if value_len == 0 => None,
                    _ => return Err(WireError::NonZeroReserved),
                };
                StreamMessage::LateWrite(LateWrite {
                    reply_to: SocketAddrV4::new(ip, port),
                    client,
                    seq,
                    oldest_gap,
                    key_hash,
                    key,
                    value,
                })
            }
            other => return Err(WireError::UnexpectedOp(other as u8)),
        };
        c.finish()?;
        Ok(message)
    }

    /// Writes the body and returns its length.
    pub fn emit(&self, body: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(body);
        match *self {
            StreamMessage::Init {
                source_shard,
                partitions,
                group_bits,
                entries,
                source_clock,
                protocol,
                parallel_pulls,
            } => {
                w.put(&source_shard.to_be_bytes())?;
                w.put(&partitions.to_be_bytes())?;
                w.put(&entries.to_be_bytes())?;
                w.put(&source_clock.to_be_bytes())?;
                w.put(&[protocol as u8, parallel_pulls, group_bits, 0, 0, 0, 0, 0])?;
            }
            StreamMessage::GroupStart { group, floor_clock } => {
                w.put(&group.to_be_bytes())?;
                w.put(&[0; 4])?;
                w.put(&floor_clock.to_be_bytes())?;
            }
            StreamMessage::GroupComplete { group } => w.put(&group.to_be_bytes())?,
            StreamMessage::Terminate { floor_clock } => w.put(&floor_clock.to_be_bytes())?,
            StreamMessage::Abort | StreamMessage::Probe => {}
            StreamMessage::Data {
                group,
                count,
                items,
            } => {
                w.put(&group.to_be_bytes())?;
                w.put(&count.to_be_bytes())?;
                w.put(&[0; 2])?;
                w.put(items)?;
            }
            StreamMessage::DedupEntries { entries } => {
                if entries.len() % 12 != 0 {
                    return Err(WireError::Truncated);
                }
                w.put(&((entries.len() / 12) as u16).to_be_bytes())?;
                w.put(&[0; 2])?;
                w.put(entries)?;
            }
            StreamMessage::DedupWindow {
                client,
                floor,
                bitmap,
                not_found,
            } => {
                if bitmap.len() != DEDUP_BITMAP_LEN || not_found.len() != DEDUP_BITMAP_LEN {
                    return Err(WireError::Truncated);
                }
                w.put(&client.to_be_bytes())?;
                w.put(&[0; 4])?;
                w.put(&floor.to_be_bytes())?;
                w.put(bitmap)?;
                w.put(not_found)?;
            }
            StreamMessage::LateWrite(late) => {
                if late.key.is_empty() || late.key.len() > u8::MAX as usize {
                    return Err(WireError::BadKeyLength);
                }
                let value = late.value.unwrap_or(&[]);
                w.put(&u32::from(*late.reply_to.ip()).to_be_bytes())?;
                w.put(&late.reply_to.port().to_be_bytes())?;
                w.put(&[if late.value.is_some() { 2 } else { 3 }])?;
                w.put(&[late.key.len() as u8])?;
                w.put(&Writer::value_len(value)?)?;
                w.put(&[0; 2])?;
                w.put(&late.client.to_be_bytes())?;
                w.put(&late.seq.to_be_bytes())?;
                w.put(&late.oldest_gap.to_be_bytes())?;
                w.put(&late.key_hash.to_be_bytes())?;
                w.put(late.key)?;
                w.put(value)?;
            }
        }
        Ok(w.at)
    }
}

fn reserved(c: &mut Cursor<'_>, len: usize) -> Result<(), WireError> {
    if c.take(len)?.iter().any(|&b| b != 0) {
        Err(WireError::NonZeroReserved)
    } else {
        Ok(())
    }
}

/// Checks that `items` holds exactly `count` well-formed items.
pub(super) fn check_items(items: &[u8], count: u16) -> Result<(), WireError> {
    let mut check = Cursor::new(items);
    for _ in 0..count {
        next_item(&mut check)?;
    }
    check.finish()
}

pub(super) fn next_item<'a>(c: &mut Cursor<'a>) -> Result<MigratedItem<'a>, WireError> {
    let key_len = c.u8()?;
    let flags = c.u8()?;
    let value_len = c.u16()?;
    let version = c.version()?;
    if key_len == 0 {
        return Err(WireError::BadKeyLength);
    }
    let key = c.take(key_len as usize)?;
    let value = match flags {
        0 => Some(c.take(value_len as usize)?),
        TOMBSTONE if value_len == 0 => None,
        _ => return Err(WireError::NonZeroReserved),
    };
    Ok(MigratedItem {
        key,
        value,
        version,
    })
}

/// The items of a validated `Data` message.
pub fn data_items(items: &[u8]) -> impl Iterator<Item = MigratedItem<'_>> {
    let mut cursor = Cursor::new(items);
    std::iter::from_fn(move || next_item(&mut cursor).ok())
}

/// In a `DedupEntries` entry's `seq`: the write was a DELETE that found no key.
pub const DEDUP_NOT_FOUND: u64 = 1 << 63;

/// The `(client, seq, found)` entries of a validated `DedupEntries` message (`found` is
/// false for a DELETE that found no key).
pub fn dedup_entries(entries: &[u8]) -> impl Iterator<Item = (u32, u64, bool)> + '_ {
    entries.chunks_exact(12).map(|e| {
        let seq = u64::from_be_bytes(e[4..].try_into().unwrap());
        (
            u32::from_be_bytes(e[..4].try_into().unwrap()),
            seq & !DEDUP_NOT_FOUND,
            seq & DEDUP_NOT_FOUND == 0,
        )
    })
}

/// Appends one migrated item to an encoded item list; returns false (writing nothing) when
/// it does not fit.
pub fn push_item(list: &mut Vec<u8>, limit: usize, item: &MigratedItem<'_>) -> bool {
    let value = item.value.unwrap_or(&[]);
    if item.key.is_empty() || item.key.len() > u8::MAX as usize || value.len() > u16::MAX as usize {
        return false;
    }
    if list.len() + ITEM_OVERHEAD + item.key.len() + value.len() > limit {
        return false;
    }
    // The fixed part built on the stack and copied once: a migration encodes every entry
    // it moves through here.
    let mut fixed = [0u8; ITEM_OVERHEAD];
    fixed[0] = item.key.len() as u8;
    fixed[1] = if item.value.is_some() { 0 } else { TOMBSTONE };
    fixed[2..4].copy_from_slice(&(value.len() as u16).to_be_bytes());
    fixed[4..].copy_from_slice(&item.version.to_be_bytes());
    list.reserve(ITEM_OVERHEAD + item.key.len() + value.len());
    list.extend_from_slice(&fixed);
    list.extend_from_slice(item.key);
    list.extend_from_slice(value);
    true
}

/// A switch control message body (`docs/switch.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchControl {
    Init {
        source_ip: Ipv4Addr,
        dest_ip: Ipv4Addr,
        dest_shard: u16,
        size_exp: u8,
        remain_exp: u8,
        partitions: u16,
        partition: u16,
    },
    GroupStart {
        source_ip: Ipv4Addr,
        partition: u16,
        group: u32,
    },
    GroupComplete {
        source_ip: Ipv4Addr,
        partition: u16,
        group: u32,
    },
    Terminate {
        source_ip: Ipv4Addr,
        partition: u16,
    },
}

impl SwitchControl {
    pub fn op(&self) -> Op {
        match self {
            SwitchControl::Init { .. } => Op::SwitchInit,
            SwitchControl::GroupStart { .. } => Op::SwitchGroupStart,
            SwitchControl::GroupComplete { .. } => Op::SwitchGroupComplete,
            SwitchControl::Terminate { .. } => Op::SwitchTerminate,
        }
    }

    pub fn source_ip(&self) -> Ipv4Addr {
        match *self {
            SwitchControl::Init { source_ip, .. }
            | SwitchControl::GroupStart { source_ip, .. }
            | SwitchControl::GroupComplete { source_ip, .. }
            | SwitchControl::Terminate { source_ip, .. } => source_ip,
        }
    }

    pub fn partition(&self) -> u16 {
        match *self {
            SwitchControl::Init { partition, .. }
            | SwitchControl::GroupStart { partition, .. }
            | SwitchControl::GroupComplete { partition, .. }
            | SwitchControl::Terminate { partition, .. } => partition,
        }
    }

    pub fn parse(op: Op, body: &[u8]) -> Result<SwitchControl, WireError> {
        let mut c = Cursor::new(body);
        let source_ip = Ipv4Addr::from(c.u32()?);
        let message = match op {
            Op::SwitchInit => SwitchControl::Init {
                source_ip,
                dest_ip: Ipv4Addr::from(c.u32()?),
                dest_shard: c.u16()?,
                size_exp: c.u8()?,
                remain_exp: c.u8()?,
                partitions: c.u16()?,
                partition: c.u16()?,
            },
            Op::SwitchGroupStart | Op::SwitchGroupComplete => {
                let partition = c.u16()?;
                reserved(&mut c, 2)?;
                let group = c.u32()?;
                if op == Op::SwitchGroupStart {
                    SwitchControl::GroupStart {
                        source_ip,
                        partition,
                        group,
                    }
                } else {
                    SwitchControl::GroupComplete {
                        source_ip,
                        partition,
                        group,
                    }
                }
            }
            Op::SwitchTerminate => {
                let partition = c.u16()?;
                reserved(&mut c, 2)?;
                SwitchControl::Terminate {
                    source_ip,
                    partition,
                }
            }
            other => return Err(WireError::UnexpectedOp(other as u8)),
        };
        c.finish()?;
        Ok(message)
    }

    pub fn emit(&self, body: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(body);
        w.put(&u32::from(self.source_ip()).to_be_bytes())?;
        match *self {
            SwitchControl::Init {
                dest_ip,
                dest_shard,
                size_exp,
                remain_exp,
                partitions,
                partition,
                ..
            } => {
                w.put(&u32::from(dest_ip).to_be_bytes())?;
                w.put(&dest_shard.to_be_bytes())?;
                w.put(&[size_exp, remain_exp])?;
                w.put(&partitions.to_be_bytes())?;
                w.put(&partition.to_be_bytes())?;
            }
            SwitchControl::GroupStart {
                partition, group, ..
            }
            | SwitchControl::GroupComplete {
                partition, group, ..
            } => {
                w.put(&partition.to_be_bytes())?;
                w.put(&[0; 2])?;
                w.put(&group.to_be_bytes())?;
            }
            SwitchControl::Terminate { partition, .. } => {
                w.put(&partition.to_be_bytes())?;
                w.put(&[0; 2])?;
            }
        }
        Ok(w.at)
    }
}
