use thiserror::Error;

/// Why a datagram was rejected. Every parser returns one of these instead of panicking, so a
/// core can count the reason and drop the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("datagram shorter than its layout requires")]
    Truncated,
    #[error("bytes left over after the message")]
    TrailingBytes,
    #[error("bad magic number")]
    BadMagic,
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    #[error("unknown op code {0:#04x}")]
    UnknownOp(u8),
    #[error("unknown status code {0}")]
    UnknownStatus(u8),
    #[error("op code {0:#04x} is not valid here")]
    UnexpectedOp(u8),
    #[error("key length must be 1..=255")]
    BadKeyLength,
    #[error("multi-key count must be 1..=16")]
    BadKeyCount,
    #[error("multi-key masks select no item, an item beyond the count, or an unselected half")]
    BadSelection,
    #[error("reserved bytes are not zero")]
    NonZeroReserved,
    #[error("message does not fit one frame")]
    TooLong,
    #[error("key hash in the header does not match the key")]
    HashMismatch,
    #[error("checksum does not verify")]
    BadChecksum,
    #[error("scan positions out of order (an empty run, or a reply going backwards)")]
    BadScanRange,
    #[error("a version or version clock of 2^63 or more")]
    VersionOutOfRange,
}
