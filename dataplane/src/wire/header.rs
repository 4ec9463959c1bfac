//! The fixed 32-byte common header. Every field sits at a fixed offset so a switch parses it
//! without variable-length logic; the key hash spares the switch from hashing keys.

use super::{Flags, Op, Status, WireError};

/// "NM" in ASCII.
pub const MAGIC: u16 = 0x4E4D;
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 32;

mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const OP: usize = 3;
    pub const FLAGS: usize = 4;
    pub const STATUS: usize = 5;
    pub const SHARD: Range<usize> = 6..8;
    pub const SEQ: Range<usize> = 8..16;
    pub const KEY_HASH: Range<usize> = 16..24;
    pub const CLIENT: Range<usize> = 24..28;
    pub const OLDEST_GAP: Range<usize> = 28..32;
}

/// A view of the common header at the front of a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    pub const fn new_unchecked(buffer: T) -> Header<T> {
        Header { buffer }
    }

    /// Wraps a buffer after checking that every accessor stays in bounds.
    pub fn new_checked(buffer: T) -> Result<Header<T>, WireError> {
        let header = Header::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn u16_at(&self, range: std::ops::Range<usize>) -> u16 {
        u16::from_be_bytes(self.buffer.as_ref()[range].try_into().unwrap())
    }
    fn u32_at(&self, range: std::ops::Range<usize>) -> u32 {
        u32::from_be_bytes(self.buffer.as_ref()[range].try_into().unwrap())
    }
    fn u64_at(&self, range: std::ops::Range<usize>) -> u64 {
        u64::from_be_bytes(self.buffer.as_ref()[range].try_into().unwrap())
    }

    pub fn magic(&self) -> u16 {
        self.u16_at(field::MAGIC)
    }
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    pub fn op_code(&self) -> u8 {
        self.buffer.as_ref()[field::OP]
    }
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS])
    }
    pub fn status_code(&self) -> u8 {
        self.buffer.as_ref()[field::STATUS]
    }
    pub fn shard(&self) -> u16 {
        self.u16_at(field::SHARD)
    }
    pub fn seq(&self) -> u64 {
        self.u64_at(field::SEQ)
    }
    /// CRC-64/Jones of the key for key-addressed ops (of the first key for multi-key ops).
    pub fn key_hash(&self) -> u64 {
        self.u64_at(field::KEY_HASH)
    }
    /// Identifies one client thread; with `seq` it names a request uniquely.
    pub fn client(&self) -> u32 {
        self.u32_at(field::CLIENT)
    }
    /// `seq` minus the oldest sequence number the client still awaits a reply for. Every
    /// request older than that has been answered, so a server may forget it and must never
    /// apply a late copy of it.
    pub fn oldest_gap(&self) -> u32 {
        self.u32_at(field::OLDEST_GAP)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    fn put(&mut self, range: std::ops::Range<usize>, bytes: &[u8]) {
        self.buffer.as_mut()[range].copy_from_slice(bytes);
    }
    pub fn set_magic(&mut self, value: u16) {
        self.put(field::MAGIC, &value.to_be_bytes())
    }
    pub fn set_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::VERSION] = value
    }
    pub fn set_op(&mut self, op: Op) {
        self.buffer.as_mut()[field::OP] = op as u8
    }
    pub fn set_flags(&mut self, flags: Flags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0
    }
    pub fn set_status(&mut self, status: Status) {
        self.buffer.as_mut()[field::STATUS] = status as u8
    }
    pub fn set_shard(&mut self, value: u16) {
        self.put(field::SHARD, &value.to_be_bytes())
    }
    pub fn set_seq(&mut self, value: u64) {
        self.put(field::SEQ, &value.to_be_bytes())
    }
    pub fn set_key_hash(&mut self, value: u64) {
        self.put(field::KEY_HASH, &value.to_be_bytes())
    }
    pub fn set_client(&mut self, value: u32) {
        self.put(field::CLIENT, &value.to_be_bytes())
    }
    pub fn set_oldest_gap(&mut self, value: u32) {
        self.put(field::OLDEST_GAP, &value.to_be_bytes())
    }
}

/// The header's fields, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    pub op: Op,
    pub flags: Flags,
    pub status: Status,
    pub shard: u16,
    pub seq: u64,
    pub key_hash: u64,
    pub client: u32,
    pub oldest_gap: u32,
}

impl HeaderRepr {
    pub fn parse<T: AsRef<[u8]>>(header: &Header<T>) -> Result<HeaderRepr, WireError> {
        header.check_len()?;
        // A view of exactly the header: its accessors need no bounds checks.
        let header = Header::new_unchecked(&header.buffer.as_ref()[..HEADER_LEN]);
        if header.magic() != MAGIC {
            return Err(WireError::BadMagic);
        }
        if header.version() != VERSION {
            return Err(WireError::BadVersion(header.version()));
        }
        Ok(HeaderRepr {
            op: Op::from_u8(header.op_code())?,
            flags: header.flags(),
            status: Status::from_u8(header.status_code())?,
            shard: header.shard(),
            seq: header.seq(),
            key_hash: header.key_hash(),
            client: header.client(),
            oldest_gap: header.oldest_gap(),
        })
    }

    /// Writes the header into the first `HEADER_LEN` bytes (the caller checked the length).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut Header<T>) {
        // A view of exactly the header: its setters need no bounds checks.
        let mut header = Header::new_unchecked(&mut header.buffer.as_mut()[..HEADER_LEN]);
        header.set_magic(MAGIC);
        header.set_version(VERSION);
        header.set_op(self.op);
        header.set_flags(self.flags);
        header.set_status(self.status);
        header.set_shard(self.shard);
        header.set_seq(self.seq);
        header.set_key_hash(self.key_hash);
        header.set_client(self.client);
        header.set_oldest_gap(self.oldest_gap);
    }

    /// The header of the reply to this request: same seq, shard, hash and client. The
    /// switch's DOUBLE_READ and REDIRECTED marks are echoed, so a client can tell the two
    /// halves of a double read apart (the destination's half was redirected).
    pub fn reply(&self, status: Status) -> HeaderRepr {
        HeaderRepr {
            op: self.op.reply(),
            flags: Flags(self.flags.0 & (Flags::DOUBLE_READ.0 | Flags::REDIRECTED.0)),
            status,
            ..*self
        }
    }
}
