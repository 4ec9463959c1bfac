use super::WireError;

/// Declares `Op` and `Op::ALL` from one list, so the decoding table cannot miss an op.
macro_rules! ops {
    ($($(#[$meta:meta])* $name:ident = $code:literal,)*) => {
        /// Operation codes. Requests use 0x01–0x7F; the reply to op `x` is `x | 0x80`.
        /// Ranges reserved now so that later protocols never renumber:
        /// 0x01–0x0F key-value, 0x10–0x2F migration control, 0x30–0x3F migration data,
        /// 0x40–0x4F switch control, 0x50–0x5F pulls outside the stream, 0x60–0x6F chain
        /// replication, 0x70–0x7F unassigned.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Op {
            $($(#[$meta])* $name = $code,)*
        }

        impl Op {
            /// Every op.
            pub const ALL: &'static [Op] = &[$(Op::$name,)*];
        }
    };
}

ops! {
    Get = 0x01,
    Put = 0x02,
    Delete = 0x03,
    MultiGet = 0x04,
    MultiPut = 0x05,
    MultiDelete = 0x06,
    // Migration control, source core → destination core (docs/migration.md).
    MigrateInit = 0x10,
    GroupStart = 0x11,
    GroupComplete = 0x12,
    Terminate = 0x13,
    MigrateAbort = 0x14,
    /// Is the stream still known there? (A source asks while its destination is silent.)
    MigrateProbe = 0x15,
    /// A destination chain's new head took over a migration in (its predecessor died):
    /// the source restarts its stream towards it and rolls the migration back or ends it.
    /// Sent by the destination; header only.
    MigrateTakeover = 0x16,
    // Migration data, source core → destination core.
    MigrateData = 0x30,
    DedupEntries = 0x31,
    DedupWindow = 0x32,
    LateWrite = 0x33,
    // Switch control, source core → switch (docs/switch.md).
    SwitchInit = 0x40,
    SwitchGroupStart = 0x41,
    SwitchGroupComplete = 0x42,
    SwitchTerminate = 0x43,
    // Keys a destination asks its source for, outside the stream (`PullBatch`).
    Pull = 0x50,
    // The next entries of a run of groups (Rocksteady's bulk transfer, `BulkPull`).
    BulkPull = 0x51,
    // The destination has pulled and replayed everything: the source may terminate.
    BulkDone = 0x52,
    // Chain replication (docs/replication.md): a replica passes its successor the next
    // bytes of the partition's journal; the acknowledgement says what the successor has
    // and what the tail has applied.
    ChainAppend = 0x60,
    GetReply = 0x81,
    PutReply = 0x82,
    DeleteReply = 0x83,
    MultiGetReply = 0x84,
    MultiPutReply = 0x85,
    MultiDeleteReply = 0x86,
    MigrateInitAck = 0x90,
    GroupStartAck = 0x91,
    GroupCompleteAck = 0x92,
    TerminateAck = 0x93,
    MigrateAbortAck = 0x94,
    MigrateProbeAck = 0x95,
    MigrateTakeoverAck = 0x96,
    MigrateDataAck = 0xB0,
    DedupEntriesAck = 0xB1,
    DedupWindowAck = 0xB2,
    LateWriteAck = 0xB3,
    SwitchInitAck = 0xC0,
    SwitchGroupStartAck = 0xC1,
    SwitchGroupCompleteAck = 0xC2,
    SwitchTerminateAck = 0xC3,
    PullReply = 0xD0,
    BulkPullReply = 0xD1,
    BulkDoneReply = 0xD2,
    ChainAppendAck = 0xE0,
}

const OP_BY_CODE: [Option<Op>; 256] = {
    let mut table = [None; 256];
    let mut i = 0;
    while i < Op::ALL.len() {
        table[Op::ALL[i] as usize] = Some(Op::ALL[i]);
        i += 1;
    }
    table
};

impl Op {
    pub const REPLY_BIT: u8 = 0x80;
    /// First and last op codes of the reserved ranges (see `docs/wire.md`).
    pub const MIGRATION_CONTROL: std::ops::RangeInclusive<u8> = 0x10..=0x2F;
    pub const MIGRATION_DATA: std::ops::RangeInclusive<u8> = 0x30..=0x3F;
    pub const SWITCH_CONTROL: std::ops::RangeInclusive<u8> = 0x40..=0x4F;

    /// The op of a code, by table: every packet's header is decoded through here.
    pub fn from_u8(code: u8) -> Result<Op, WireError> {
        OP_BY_CODE[usize::from(code)].ok_or(WireError::UnknownOp(code))
    }

    pub fn is_reply(self) -> bool {
        self as u8 & Self::REPLY_BIT != 0
    }

    /// Whether this is a client request whose key-hash field names a key (the switch
    /// steers on it).
    pub fn is_key_addressed(self) -> bool {
        matches!(self as u8, 0x01..=0x06)
    }

    /// A key-value reply (what clients receive).
    pub fn is_key_value_reply(self) -> bool {
        matches!(self as u8, 0x81..=0x86)
    }

    /// Migration stream messages between a source and a destination core (not acks).
    pub fn is_migration_stream(self) -> bool {
        Self::MIGRATION_CONTROL.contains(&(self as u8))
            || Self::MIGRATION_DATA.contains(&(self as u8))
    }

    /// Acknowledgements from the switch.
    pub fn is_switch_control_ack(self) -> bool {
        matches!(self as u8, 0xC0..=0xCF)
    }

    /// Acknowledgements of migration-stream messages.
    pub fn is_migration_stream_ack(self) -> bool {
        matches!(self as u8, 0x90..=0xBF)
    }

    /// Control messages addressed to the switch (not acks).
    pub fn is_switch_control(self) -> bool {
        Self::SWITCH_CONTROL.contains(&(self as u8))
    }

    /// Chain replication between the replicas of a partition (append or its ack).
    pub fn is_chain(self) -> bool {
        matches!((self as u8) & !Self::REPLY_BIT, 0x60..=0x6F)
    }

    /// A destination's pull (of keys, of a run of groups, or its end), or the answer.
    pub fn is_pull(self) -> bool {
        matches!((self as u8) & !Self::REPLY_BIT, 0x50..=0x52)
    }

    pub fn is_multi(self) -> bool {
        matches!((self as u8) & !Self::REPLY_BIT, 0x04..=0x06)
    }

    /// The reply op for a request op (identity for replies).
    pub fn reply(self) -> Op {
        Op::from_u8(self as u8 | Self::REPLY_BIT).expect("every request op has a reply op")
    }
}

/// Outcome carried by every reply (and by each item of a multi-key reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    /// The server no longer owns the shard; the client must address the new owner.
    Moved = 2,
    /// The server will have an answer soon (e.g. a pull is pending); retry the same request.
    RetryLater = 3,
    /// The request was understood but could not be served (e.g. unknown shard).
    Error = 4,
    /// The key's group was lost in a crash (a migration's other end restarted empty):
    /// refused rather than answered from an older copy.
    DataLost = 5,
}

impl Status {
    pub fn from_u8(code: u8) -> Result<Status, WireError> {
        Ok(match code {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Moved,
            3 => Status::RetryLater,
            4 => Status::Error,
            5 => Status::DataLost,
            other => return Err(WireError::UnknownStatus(other)),
        })
    }
}

/// Header flag bits. Unknown bits are carried, not rejected, so newer peers can add flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// Reply: the destination of a migration served this request.
    pub const FROM_DESTINATION: Flags = Flags(0x01);
    /// This packet is one half of a double read (set by the switch on both copies).
    pub const DOUBLE_READ: Flags = Flags(0x02);
    /// The switch redirected this request away from the server the client addressed.
    pub const REDIRECTED: Flags = Flags(0x04);
    /// Request: the client sent this sequence number before (informational).
    pub const RETRANSMIT: Flags = Flags(0x08);
    /// Request: a server passed this request on to the server that owns its group; the
    /// payload ends with an 8-byte reply-to trailer and the switch must not steer it.
    pub const FORWARDED: Flags = Flags(0x10);
    /// Reply from a migration's destination: it does not have this key's group yet; the
    /// other half of the double read (the source's) is the answer.
    pub const NOT_MIGRATED: Flags = Flags(0x20);
    /// Reply from a Fulva destination: the payload ends with a progress trailer
    /// (`split_progress`).
    pub const PROGRESS: Flags = Flags(0x40);

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    pub fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
}
