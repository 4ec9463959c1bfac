//! Wire formats, smoltcp style: each layout is a zero-copy view over a byte buffer
//! (`Header<T>`) plus an owned or borrowed representation (`HeaderRepr`, `Request`, `Reply`)
//! with `parse` and `emit`. Byte layouts and test vectors are in `docs/wire.md`.

pub mod arp;
mod bulk;
mod control;
mod error;
pub mod ethernet;
pub mod frame;
mod header;
pub mod ipv4;
mod message;
mod op;
mod plain_get;
mod pull;
pub mod tunnel;
pub mod udp;

pub use bulk::{BulkPull, BulkPullReply, ScanPosition, BULK_REPLY_FIXED};
pub use control::{
    append_reply_to, data_items, dedup_entries, push_item, split_reply_to, LateWrite, MigratedItem,
    Protocol, StreamMessage, SwitchControl, DEDUP_BITMAP_LEN, DEDUP_NOT_FOUND, ITEM_OVERHEAD,
    TRAILER_LEN,
};
pub use error::WireError;
pub use header::{Header, HeaderRepr, HEADER_LEN, MAGIC, VERSION};
pub use message::{
    all_items, KeyOp, MultiItem, MultiItems, MultiReplyItems, MultiReplyWriter, MultiRequestItems,
    MultiRoute, Reply, ReplyItem, Request, MAX_KEYS, MULTI_HALVES_AT, MULTI_SERVE_AT,
};
pub use op::{Flags, Op, Status};
pub use plain_get::{
    emit_plain_get_reply, parse_plain_get, parse_plain_get_reply, PlainGet, PlainGetReply,
};
pub use pull::{append_progress, split_progress, Progress, PullBatch, MAX_HOT_KEYS};

/// Largest UDP payload that fits one 1500-byte Ethernet frame (1500 − 20 IPv4 − 8 UDP).
pub const MAX_PAYLOAD: usize = 1472;
/// Longest key: keys are length-prefixed by one byte and may not be empty.
pub const MAX_KEY_LEN: usize = 255;
/// Longest value of a single PUT with a 1-byte key that still fits one frame, and the value
/// of its GET reply. Longer keys leave less room: every message must fit `MAX_PAYLOAD`.
pub const MAX_VALUE_LEN: usize = MAX_PAYLOAD - HEADER_LEN - message::PUT_FIXED_LEN - 1;

/// Largest entry version or version clock a migration message may carry (2^63 − 1); larger
/// ones are refused with `WireError::VersionOutOfRange`.
pub const MAX_VERSION: u64 = (1 << 63) - 1;

/// Longest key plus value a server stores. Every migration message must carry an entry in
/// one frame, and a write passed on in the stream (LATE_WRITE) has the most overhead; a
/// longer write is refused with ERROR.
pub const MAX_ENTRY_LEN: usize = MAX_PAYLOAD - HEADER_LEN - control::LATE_WRITE_FIXED;

/// Whether an entry (key and value) is short enough to travel in every migration message:
/// longer client writes are refused, and longer migrated or pulled entries are not stored.
pub fn entry_fits(key: &[u8], value: &[u8]) -> bool {
    key.len() + value.len() <= MAX_ENTRY_LEN
}

/// Splits a datagram into its validated header and the body that follows it.
pub fn parse_header(payload: &[u8]) -> Result<(HeaderRepr, &[u8]), WireError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(WireError::TooLong);
    }
    let header = HeaderRepr::parse(&Header::new_checked(payload)?)?;
    Ok((header, &payload[HEADER_LEN..]))
}

/// Writes a whole request datagram (header and body) and returns its length.
pub fn emit_request(
    header: &HeaderRepr,
    request: &Request,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let (head, body) = split_mut(buf)?;
    header.emit(&mut Header::new_unchecked(head));
    Ok(HEADER_LEN + request.emit(body)?)
}

/// Writes a whole reply datagram (header and body) and returns its length.
pub fn emit_reply(header: &HeaderRepr, reply: &Reply, buf: &mut [u8]) -> Result<usize, WireError> {
    let (head, body) = split_mut(buf)?;
    header.emit(&mut Header::new_unchecked(head));
    Ok(HEADER_LEN + reply.emit(body)?)
}

/// Writes a header and a body produced by `body` (migration and switch control messages).
pub fn emit_with(
    header: &HeaderRepr,
    buf: &mut [u8],
    body: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
) -> Result<usize, WireError> {
    let (head, rest) = split_mut(buf)?;
    header.emit(&mut Header::new_unchecked(head));
    Ok(HEADER_LEN + body(rest)?)
}

fn split_mut(buf: &mut [u8]) -> Result<(&mut [u8], &mut [u8]), WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::TooLong);
    }
    Ok(buf.split_at_mut(HEADER_LEN))
}
