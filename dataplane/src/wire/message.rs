//! Message bodies: everything after the common header. Lengths are explicit prefixes, so keys
//! (1–255 bytes) and values (up to what fits one frame) are variable.

use super::{HeaderRepr, Op, Status, WireError, HEADER_LEN, MAX_PAYLOAD};

/// Most keys one multi-key request may carry.
pub const MAX_KEYS: usize = 16;
/// Bytes of a PUT body before the key: key length (u8) and value length (u16).
pub(crate) const PUT_FIXED_LEN: usize = 3;
/// Bytes of a multi-key body before the hashes or items: count, reserved byte, and three
/// u16 masks (request: serve, halves, reserved; reply: answered, halves, deferred).
const MULTI_FIXED_LEN: usize = 8;
/// Offset in a datagram of a multi-key request's `serve` mask (u16): a switch rewrites it in
/// place when it splits the request between servers.
pub const MULTI_SERVE_AT: usize = HEADER_LEN + 2;
/// Offset in a datagram of a multi-key request's `halves` mask (u16).
pub const MULTI_HALVES_AT: usize = HEADER_LEN + 4;

/// The mask of the first `count` items.
pub fn all_items(count: usize) -> u16 {
    ((1u32 << count.min(MAX_KEYS)) - 1) as u16
}
const MAX_BODY: usize = MAX_PAYLOAD - HEADER_LEN;

/// The single-key operation a (multi-key) message performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyOp {
    Get,
    Put,
    Delete,
}

impl KeyOp {
    fn of(op: Op) -> Result<KeyOp, WireError> {
        Ok(match op {
            Op::Get | Op::MultiGet | Op::GetReply | Op::MultiGetReply => KeyOp::Get,
            Op::Put | Op::MultiPut | Op::PutReply | Op::MultiPutReply => KeyOp::Put,
            Op::Delete | Op::MultiDelete | Op::DeleteReply | Op::MultiDeleteReply => KeyOp::Delete,
            other => return Err(WireError::UnexpectedOp(other as u8)),
        })
    }

    pub fn single_op(self) -> Op {
        match self {
            KeyOp::Get => Op::Get,
            KeyOp::Put => Op::Put,
            KeyOp::Delete => Op::Delete,
        }
    }

    pub fn multi_op(self) -> Op {
        match self {
            KeyOp::Get => Op::MultiGet,
            KeyOp::Put => Op::MultiPut,
            KeyOp::Delete => Op::MultiDelete,
        }
    }
}

/// A bounds-checked reader over a body.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0 }
    }
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(len).ok_or(WireError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(WireError::Truncated)?;
        self.at = end;
        Ok(slice)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// An entry version or a version clock another server sent: below 2^63, so that a
    /// partition's clock, which only ever counts up from the largest it has seen, cannot wrap.
    pub(crate) fn version(&mut self) -> Result<u64, WireError> {
        let version = self.u64()?;
        if version > super::MAX_VERSION {
            return Err(WireError::VersionOutOfRange);
        }
        Ok(version)
    }
    pub(crate) fn key(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.u8()?;
        if len == 0 {
            return Err(WireError::BadKeyLength);
        }
        self.take(len as usize)
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }
    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

/// A bounds-checked writer over a body.
pub(crate) struct Writer<'b> {
    pub(crate) bytes: &'b mut [u8],
    pub(crate) at: usize,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(bytes: &'b mut [u8]) -> Self {
        let limit = bytes.len().min(MAX_BODY);
        Writer {
            bytes: &mut bytes[..limit],
            at: 0,
        }
    }
    pub(crate) fn put(&mut self, data: &[u8]) -> Result<(), WireError> {
        let end = self.at + data.len();
        self.bytes
            .get_mut(self.at..end)
            .ok_or(WireError::TooLong)?
            .copy_from_slice(data);
        self.at = end;
        Ok(())
    }
    pub(crate) fn key(&mut self, key: &[u8]) -> Result<(), WireError> {
        if key.is_empty() || key.len() > u8::MAX as usize {
            return Err(WireError::BadKeyLength);
        }
        self.put(&[key.len() as u8])?;
        self.put(key)
    }
    pub(crate) fn value_len(value: &[u8]) -> Result<[u8; 2], WireError> {
        u16::try_from(value.len())
            .map(u16::to_be_bytes)
            .map_err(|_| WireError::TooLong)
    }
}

/// A request body, borrowing keys and values from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    Get { key: &'a [u8] },
    Put { key: &'a [u8], value: &'a [u8] },
    Delete { key: &'a [u8] },
    Multi(MultiRequestItems<'a>),
}

impl<'a> Request<'a> {
    /// Parses the body that follows a request header.
    pub fn parse(header: &HeaderRepr, body: &'a [u8]) -> Result<Request<'a>, WireError> {
        if !header.op.is_key_addressed() {
            return Err(WireError::UnexpectedOp(header.op as u8));
        }
        let mut cursor = Cursor::new(body);
        let request = match header.op {
            Op::Get => Request::Get { key: cursor.key()? },
            Op::Delete => Request::Delete { key: cursor.key()? },
            Op::Put => {
                let key_len = cursor.u8()?;
                let value_len = cursor.u16()?;
                if key_len == 0 {
                    return Err(WireError::BadKeyLength);
                }
                Request::Put {
                    key: cursor.take(key_len as usize)?,
                    value: cursor.take(value_len as usize)?,
                }
            }
            op => {
                let items = MultiRequestItems::parse(KeyOp::of(op)?, &mut cursor)?;
                Request::Multi(items)
            }
        };
        cursor.finish()?;
        Ok(request)
    }

    pub fn op(&self) -> Op {
        match self {
            Request::Get { .. } => Op::Get,
            Request::Put { .. } => Op::Put,
            Request::Delete { .. } => Op::Delete,
            Request::Multi(items) => items.op.multi_op(),
        }
    }

    /// Writes the body into `body` and returns its length.
    pub fn emit(&self, body: &mut [u8]) -> Result<usize, WireError> {
        let mut writer = Writer::new(body);
        match *self {
            Request::Get { key } | Request::Delete { key } => writer.key(key)?,
            Request::Put { key, value } => {
                if key.is_empty() || key.len() > u8::MAX as usize {
                    return Err(WireError::BadKeyLength);
                }
                writer.put(&[key.len() as u8])?;
                writer.put(&Writer::value_len(value)?)?;
                writer.put(key)?;
                writer.put(value)?;
            }
            Request::Multi(items) => {
                writer.put(&[items.count, 0])?;
                writer.put(&items.serve.to_be_bytes())?;
                writer.put(&items.halves.to_be_bytes())?;
                writer.put(&[0; 2])?;
                writer.put(items.hashes)?;
                writer.put(items.items)?;
            }
        }
        Ok(writer.at)
    }
}

/// One key of a multi-key request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiItem<'a> {
    pub key_hash: u64,
    pub key: &'a [u8],
    /// The value to write (empty for GET and DELETE).
    pub value: &'a [u8],
}

/// The validated items of a multi-key request; iterating yields them in order.
///
/// A request always carries every item; `serve` says which of them the receiving server is
/// to answer (a switch that splits a request sends each server the same items with its own
/// mask), and `halves` which of those are one half of a double read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiRequestItems<'a> {
    pub op: KeyOp,
    count: u8,
    serve: u16,
    halves: u16,
    hashes: &'a [u8],
    items: &'a [u8],
}

impl<'a> MultiRequestItems<'a> {
    fn parse(op: KeyOp, cursor: &mut Cursor<'a>) -> Result<Self, WireError> {
        let (count, serve, halves, reserved_clear) = request_head(cursor)?;
        if !reserved_clear {
            return Err(WireError::NonZeroReserved);
        }
        let count = count as u8;
        let hashes = cursor.take(count as usize * 8)?;
        let items_start = cursor.rest();
        for _ in 0..count {
            match op {
                KeyOp::Get | KeyOp::Delete => {
                    cursor.key()?;
                }
                KeyOp::Put => {
                    let key_len = cursor.u8()?;
                    let value_len = cursor.u16()?;
                    if key_len == 0 {
                        return Err(WireError::BadKeyLength);
                    }
                    cursor.take(key_len as usize + value_len as usize)?;
                }
            }
        }
        let items = &items_start[..items_start.len() - cursor.rest().len()];
        Ok(MultiRequestItems {
            op,
            count,
            serve,
            halves,
            hashes,
            items,
        })
    }

    /// Every item the request carries, selected or not.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// The items (by index) this server is to answer.
    pub fn serve(&self) -> u16 {
        self.serve
    }

    /// The selected items that are one half of a double read.
    pub fn halves(&self) -> u16 {
        self.halves
    }

    /// The same items with another selection.
    pub fn select(self, serve: u16, halves: u16) -> Result<Self, WireError> {
        check_selection(self.len(), serve, halves)?;
        Ok(MultiRequestItems {
            serve,
            halves,
            ..self
        })
    }

    /// The selected items with their index, in order.
    pub fn selected(&self) -> impl Iterator<Item = (usize, MultiItem<'a>)> {
        let serve = self.serve;
        self.iter()
            .enumerate()
            .filter(move |(i, _)| serve & (1 << i) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> MultiItems<'a> {
        MultiItems {
            op: self.op,
            hashes: Cursor::new(self.hashes),
            items: Cursor::new(self.items),
        }
    }

    /// Builds a multi-key request body from items; `scratch` receives the encoded items and
    /// must outlive the returned view.
    pub fn build(
        op: KeyOp,
        items: &[MultiItem<'_>],
        scratch: &'a mut [u8],
    ) -> Result<MultiRequestItems<'a>, WireError> {
        if items.is_empty() || items.len() > MAX_KEYS {
            return Err(WireError::BadKeyCount);
        }
        let hash_len = items.len() * 8;
        let mut writer = Writer::new(scratch);
        for item in items {
            writer.put(&item.key_hash.to_be_bytes())?;
        }
        for item in items {
            match op {
                KeyOp::Get | KeyOp::Delete => writer.key(item.key)?,
                KeyOp::Put => {
                    if item.key.is_empty() || item.key.len() > u8::MAX as usize {
                        return Err(WireError::BadKeyLength);
                    }
                    writer.put(&[item.key.len() as u8])?;
                    writer.put(&Writer::value_len(item.value)?)?;
                    writer.put(item.key)?;
                    writer.put(item.value)?;
                }
            }
        }
        let len = writer.at;
        let (hashes, rest) = scratch.split_at(hash_len);
        Ok(MultiRequestItems {
            op,
            count: items.len() as u8,
            serve: all_items(items.len()),
            halves: 0,
            hashes,
            items: &rest[..len - hash_len],
        })
    }
}

/// What a switch reads and rewrites in a multi-key request, at fixed offsets and without
/// walking the variable-length items: the selection masks and each item's key hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiRoute {
    pub count: usize,
    pub serve: u16,
    pub halves: u16,
    hashes: [u64; MAX_KEYS],
}

impl MultiRoute {
    /// Reads a whole datagram (header included) of a multi-key request.
    pub fn read(payload: &[u8]) -> Result<Self, WireError> {
        let mut cursor = Cursor::new(payload.get(HEADER_LEN..).ok_or(WireError::Truncated)?);
        // A switch steers on the masks and hashes alone; servers check the reserved bytes.
        let (count, serve, halves, _) = request_head(&mut cursor)?;
        let mut hashes = [0; MAX_KEYS];
        for hash in &mut hashes[..count] {
            *hash = cursor.u64()?;
        }
        Ok(MultiRoute {
            count,
            serve,
            halves,
            hashes,
        })
    }

    /// The selected items' indices and key hashes.
    pub fn selected(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        (0..self.count)
            .filter(|i| self.serve & (1 << i) != 0)
            .map(|i| (i, self.hashes[i]))
    }

    /// Rewrites the masks of a datagram `read` accepted.
    pub fn write_selection(payload: &mut [u8], serve: u16, halves: u16) {
        payload[MULTI_SERVE_AT..MULTI_SERVE_AT + 2].copy_from_slice(&serve.to_be_bytes());
        payload[MULTI_HALVES_AT..MULTI_HALVES_AT + 2].copy_from_slice(&halves.to_be_bytes());
    }
}

/// The fixed part of a multi-key request body: the item count and the checked selection,
/// and whether the reserved bytes are zero.
fn request_head(cursor: &mut Cursor<'_>) -> Result<(usize, u16, u16, bool), WireError> {
    let count = cursor.u8()? as usize;
    if count == 0 || count > MAX_KEYS {
        return Err(WireError::BadKeyCount);
    }
    let reserved = cursor.u8()?;
    let (serve, halves, reserved_tail) = (cursor.u16()?, cursor.u16()?, cursor.u16()?);
    check_selection(count, serve, halves)?;
    Ok((count, serve, halves, reserved == 0 && reserved_tail == 0))
}

/// A selection names at least one of the `count` items, and only selected items are halves.
fn check_selection(count: usize, serve: u16, halves: u16) -> Result<(), WireError> {
    if serve == 0 || serve & !all_items(count) != 0 || halves & !serve != 0 {
        return Err(WireError::BadSelection);
    }
    Ok(())
}

/// Iterator over the items of a validated multi-key request.
pub struct MultiItems<'a> {
    op: KeyOp,
    hashes: Cursor<'a>,
    items: Cursor<'a>,
}

impl<'a> Iterator for MultiItems<'a> {
    type Item = MultiItem<'a>;

    // The items were validated by `MultiRequestItems::parse`, so the reads cannot fail; a
    // failure ends the iteration instead of panicking all the same.
    fn next(&mut self) -> Option<MultiItem<'a>> {
        let key_hash = self.hashes.u64().ok()?;
        let (key, value) = match self.op {
            KeyOp::Get | KeyOp::Delete => (self.items.key().ok()?, &[][..]),
            KeyOp::Put => {
                let key_len = self.items.u8().ok()?;
                let value_len = self.items.u16().ok()?;
                let key = self.items.take(key_len as usize).ok()?;
                (key, self.items.take(value_len as usize).ok()?)
            }
        };
        Some(MultiItem {
            key_hash,
            key,
            value,
        })
    }
}

/// The outcome of one key: status, the entry's version, and (for GET) the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyItem<'a> {
    pub status: Status,
    pub version: u64,
    pub value: &'a [u8],
}

/// A reply body. Single-key replies carry their status in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    Get {
        version: u64,
        value: &'a [u8],
    },
    Put {
        version: u64,
    },
    Delete {
        version: u64,
    },
    Multi(MultiReplyItems<'a>),
    /// Status MOVED, any op: the shard's partition now lives at `to` as shard `shard`.
    Moved {
        to: std::net::SocketAddrV4,
        shard: u16,
    },
}

impl<'a> Reply<'a> {
    pub fn parse(header: &HeaderRepr, body: &'a [u8]) -> Result<Reply<'a>, WireError> {
        if !header.op.is_key_value_reply() {
            return Err(WireError::UnexpectedOp(header.op as u8));
        }
        let mut cursor = Cursor::new(body);
        let reply = match header.op {
            _ if header.status == Status::Moved => {
                let ip = std::net::Ipv4Addr::from(cursor.u32()?);
                let port = cursor.u16()?;
                Reply::Moved {
                    to: std::net::SocketAddrV4::new(ip, port),
                    shard: cursor.u16()?,
                }
            }
            Op::GetReply => {
                let version = cursor.u64()?;
                let len = cursor.u16()?;
                Reply::Get {
                    version,
                    value: cursor.take(len as usize)?,
                }
            }
            Op::PutReply => Reply::Put {
                version: cursor.u64()?,
            },
            Op::DeleteReply => Reply::Delete {
                version: cursor.u64()?,
            },
            op => Reply::Multi(MultiReplyItems::parse(KeyOp::of(op)?, &mut cursor)?),
        };
        cursor.finish()?;
        Ok(reply)
    }

    /// Writes the body of a single-key reply; multi-key replies are built with
    /// [`MultiReplyWriter`].
    pub fn emit(&self, body: &mut [u8]) -> Result<usize, WireError> {
        let mut writer = Writer::new(body);
        match *self {
            Reply::Get { version, value } => {
                writer.put(&version.to_be_bytes())?;
                writer.put(&Writer::value_len(value)?)?;
                writer.put(value)?;
            }
            Reply::Put { version } | Reply::Delete { version } => {
                writer.put(&version.to_be_bytes())?
            }
            Reply::Multi(items) => {
                writer.put(&[items.count, 0])?;
                writer.put(&items.answered.to_be_bytes())?;
                writer.put(&items.halves.to_be_bytes())?;
                writer.put(&items.deferred.to_be_bytes())?;
                writer.put(items.items)?;
            }
            Reply::Moved { to, shard } => {
                writer.put(&u32::from(*to.ip()).to_be_bytes())?;
                writer.put(&to.port().to_be_bytes())?;
                writer.put(&shard.to_be_bytes())?;
            }
        }
        Ok(writer.at)
    }
}

/// The validated items of a multi-key reply: the items of the request's selection this
/// server answered, in index order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiReplyItems<'a> {
    pub op: KeyOp,
    count: u8,
    /// The request's items (by index) answered here.
    answered: u16,
    /// The answered items that are one half of a double read.
    halves: u16,
    /// Halves the destination does not have yet (NOT_MIGRATED per item): the source's half
    /// is the answer.
    deferred: u16,
    items: &'a [u8],
}

impl<'a> MultiReplyItems<'a> {
    fn parse(op: KeyOp, cursor: &mut Cursor<'a>) -> Result<Self, WireError> {
        let count = cursor.u8()?;
        if count == 0 || count as usize > MAX_KEYS {
            return Err(WireError::BadKeyCount);
        }
        if cursor.u8()? != 0 {
            return Err(WireError::NonZeroReserved);
        }
        let (answered, halves, deferred) = (cursor.u16()?, cursor.u16()?, cursor.u16()?);
        if answered.count_ones() != u32::from(count) {
            return Err(WireError::BadKeyCount);
        }
        if halves & !answered != 0 || deferred & !halves != 0 {
            return Err(WireError::BadSelection);
        }
        let start = cursor.rest();
        for _ in 0..count {
            Status::from_u8(cursor.u8()?)?;
            cursor.u64()?;
            if op == KeyOp::Get {
                let len = cursor.u16()?;
                cursor.take(len as usize)?;
            }
        }
        let items = &start[..start.len() - cursor.rest().len()];
        Ok(MultiReplyItems {
            op,
            count,
            answered,
            halves,
            deferred,
            items,
        })
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn answered(&self) -> u16 {
        self.answered
    }

    pub fn halves(&self) -> u16 {
        self.halves
    }

    pub fn deferred(&self) -> u16 {
        self.deferred
    }

    /// The answered items with the index of the request item each answers.
    pub fn iter(&self) -> impl Iterator<Item = (usize, ReplyItem<'a>)> {
        let op = self.op;
        let mut cursor = Cursor::new(self.items);
        let mut left = self.answered;
        std::iter::from_fn(move || {
            let index = left.trailing_zeros() as usize;
            left &= left.checked_sub(1)?;
            let status = Status::from_u8(cursor.u8().ok()?).ok()?;
            let version = cursor.u64().ok()?;
            let value = if op == KeyOp::Get {
                let len = cursor.u16().ok()?;
                cursor.take(len as usize).ok()?
            } else {
                &[]
            };
            Some((
                index,
                ReplyItem {
                    status,
                    version,
                    value,
                },
            ))
        })
    }
}

/// Appends the items of a multi-key reply to a body, one at a time, in index order.
pub struct MultiReplyWriter<'b> {
    op: KeyOp,
    writer: Writer<'b>,
    answered: u16,
}

impl<'b> MultiReplyWriter<'b> {
    pub fn new(op: KeyOp, body: &'b mut [u8]) -> Result<Self, WireError> {
        let mut writer = Writer::new(body);
        writer.put(&[0; MULTI_FIXED_LEN])?;
        Ok(MultiReplyWriter {
            op,
            writer,
            answered: 0,
        })
    }

    /// Appends the answer to the request's item `index`, which must follow every index
    /// pushed before.
    pub fn push(&mut self, index: usize, item: ReplyItem<'_>) -> Result<(), WireError> {
        if index >= MAX_KEYS || (self.answered >> index) != 0 {
            return Err(WireError::BadSelection);
        }
        self.writer.put(&[item.status as u8])?;
        self.writer.put(&item.version.to_be_bytes())?;
        if self.op == KeyOp::Get {
            self.writer.put(&Writer::value_len(item.value)?)?;
            self.writer.put(item.value)?;
        }
        self.answered |= 1 << index;
        Ok(())
    }

    /// Writes the count and masks and returns the body length. `halves` and `deferred`
    /// are kept to the answered items.
    pub fn finish(self, halves: u16, deferred: u16) -> Result<usize, WireError> {
        if self.answered == 0 {
            return Err(WireError::BadKeyCount);
        }
        let halves = halves & self.answered;
        let deferred = deferred & halves;
        self.writer.bytes[0] = self.answered.count_ones() as u8;
        self.writer.bytes[2..4].copy_from_slice(&self.answered.to_be_bytes());
        self.writer.bytes[4..6].copy_from_slice(&halves.to_be_bytes());
        self.writer.bytes[6..8].copy_from_slice(&deferred.to_be_bytes());
        Ok(self.writer.at)
    }
}
