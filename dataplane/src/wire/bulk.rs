//! Rocksteady's bulk transfer, driven by the destination: it asks the source for the next
//! entries of a run of groups from a scan position, and says when it has everything.
//! Outside the ordered stream: the source's copy is frozen, so a request is an idempotent
//! read, asked again until answered. Layouts: `docs/wire.md`.

use super::message::{Cursor, Writer};
use super::{PullBatch, WireError};

/// Where a scan of the source's table stands: a group, and an opaque position in it that
/// only the source interprets (0: the group's first entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ScanPosition {
    pub group: u32,
    pub cursor: u32,
}

impl ScanPosition {
    pub fn start_of(group: u32) -> Self {
        ScanPosition { group, cursor: 0 }
    }

    fn read(c: &mut Cursor<'_>) -> Result<Self, WireError> {
        Ok(ScanPosition {
            group: c.u32()?,
            cursor: c.u32()?,
        })
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.put(&self.group.to_be_bytes())?;
        w.put(&self.cursor.to_be_bytes())
    }
}

/// `Op::BulkPull`: the entries of groups `[from.group, end_group)` from `from` on, at most
/// `max_items` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkPull {
    pub from: ScanPosition,
    pub end_group: u32,
    pub max_items: u16,
}

impl BulkPull {
    pub fn parse(body: &[u8]) -> Result<BulkPull, WireError> {
        let mut c = Cursor::new(body);
        let from = ScanPosition::read(&mut c)?;
        let end_group = c.u32()?;
        let max_items = c.u16()?;
        if c.u16()? != 0 {
            return Err(WireError::NonZeroReserved);
        }
        c.finish()?;
        if end_group <= from.group {
            return Err(WireError::BadScanRange);
        }
        Ok(BulkPull {
            from,
            end_group,
            max_items,
        })
    }

    pub fn emit(&self, body: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(body);
        self.from.write(&mut w)?;
        w.put(&self.end_group.to_be_bytes())?;
        w.put(&self.max_items.to_be_bytes())?;
        w.put(&[0; 2])?;
        Ok(w.at)
    }
}

/// `Op::BulkPullReply`: entries from `asked` up to (not including) `next`; `next.group ==
/// end_group` when the run is done. With status RETRY_LATER the source had no budget left:
/// no entries, `next == asked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkPullReply<'a> {
    pub asked: ScanPosition,
    pub next: ScanPosition,
    /// The entries, encoded as a pull answer's.
    pub entries: PullBatch<'a>,
}

impl<'a> BulkPullReply<'a> {
    pub fn parse(body: &'a [u8]) -> Result<BulkPullReply<'a>, WireError> {
        let mut c = Cursor::new(body);
        let asked = ScanPosition::read(&mut c)?;
        let next = ScanPosition::read(&mut c)?;
        if next < asked {
            return Err(WireError::BadScanRange);
        }
        Ok(BulkPullReply {
            asked,
            next,
            entries: PullBatch::parse(c.rest())?,
        })
    }

    pub fn emit(&self, body: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(body);
        self.asked.write(&mut w)?;
        self.next.write(&mut w)?;
        let at = w.at;
        Ok(at
            + self
                .entries
                .emit(body.get_mut(at..).ok_or(WireError::TooLong)?)?)
    }
}

/// Bytes of a bulk-pull reply before its items.
pub const BULK_REPLY_FIXED: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{push_item, MigratedItem};

    #[test]
    fn bulk_pulls_round_trip_and_reject_empty_runs() {
        let pull = BulkPull {
            from: ScanPosition {
                group: 7,
                cursor: 30,
            },
            end_group: 9,
            max_items: 64,
        };
        let mut buf = [0u8; 32];
        let len = pull.emit(&mut buf).unwrap();
        assert_eq!(BulkPull::parse(&buf[..len]), Ok(pull));
        assert!(BulkPull::parse(&buf[..len - 1]).is_err());
        let empty = BulkPull {
            end_group: 7,
            ..pull
        };
        let len = empty.emit(&mut buf).unwrap();
        assert!(BulkPull::parse(&buf[..len]).is_err());
    }

    #[test]
    fn bulk_replies_round_trip_and_reject_bad_input() {
        let mut items = Vec::new();
        let item = MigratedItem {
            key: b"user1",
            value: Some(b"v1"),
            version: 3,
        };
        assert!(push_item(&mut items, 1000, &item));
        let reply = BulkPullReply {
            asked: ScanPosition::start_of(4),
            next: ScanPosition {
                group: 5,
                cursor: 2,
            },
            entries: PullBatch {
                count: 1,
                items: &items,
            },
        };
        let mut buf = [0u8; 128];
        let len = reply.emit(&mut buf).unwrap();
        let parsed = BulkPullReply::parse(&buf[..len]).unwrap();
        assert_eq!(parsed, reply);
        assert_eq!(parsed.entries.items().collect::<Vec<_>>(), vec![item]);
        assert_eq!(BULK_REPLY_FIXED, len - items.len());
        buf[17] = 2; // claims a second item
        assert!(BulkPullReply::parse(&buf[..len]).is_err());
        let backwards = BulkPullReply {
            next: ScanPosition::start_of(3),
            ..reply
        };
        let len = backwards.emit(&mut buf).unwrap();
        assert!(BulkPullReply::parse(&buf[..len]).is_err());
    }
}
