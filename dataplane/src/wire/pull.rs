//! Messages outside the ordered migration stream: a destination's pulls of keys it misses
//! (Rocksteady's PriorityPull, Fulva's sampled hot keys) and the progress trailer a Fulva
//! destination piggybacks on replies. Layouts: `docs/wire.md`.

use super::control::{check_items, data_items};
use super::message::{Cursor, Writer};
use super::{MigratedItem, WireError, HEADER_LEN};

/// A batch of keys asked for (`Op::Pull`: every item a version-0 tombstone, i.e. just a key)
/// or answered (`Op::PullReply`: the source's entry, tombstone, or a version-0 tombstone for
/// a key it never had).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullBatch<'a> {
    pub count: u16,
    /// Encoded item list: build with [`super::push_item`], read with [`PullBatch::items`].
    pub items: &'a [u8],
}

impl<'a> PullBatch<'a> {
    pub fn parse(body: &'a [u8]) -> Result<PullBatch<'a>, WireError> {
        let mut c = Cursor::new(body);
        let count = c.u16()?;
        if c.take(2)?.iter().any(|&b| b != 0) {
            return Err(WireError::NonZeroReserved);
        }
        let items = c.rest();
        check_items(items, count)?;
        Ok(PullBatch { count, items })
    }

    pub fn emit(&self, body: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(body);
        w.put(&self.count.to_be_bytes())?;
        w.put(&[0; 2])?;
        w.put(self.items)?;
        Ok(w.at)
    }

    pub fn items(&self) -> impl Iterator<Item = MigratedItem<'a>> {
        data_items(self.items)
    }
}

/// Fixed part of the progress trailer: hot-key count, reserved, migrated-up-to group.
const PROGRESS_FIXED: usize = 8;
/// Most hot keys one trailer announces.
pub const MAX_HOT_KEYS: usize = 32;

/// What a Fulva destination tells clients on a reply flagged `PROGRESS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    /// Every group of the replying partition below this one is at the destination.
    pub migrated_upto: u32,
    /// Key hashes the destination pulled early (8 bytes each, big-endian).
    hot: &'a [u8],
}

impl<'a> Progress<'a> {
    pub fn hot_keys(&self) -> impl Iterator<Item = u64> + 'a {
        self.hot
            .chunks_exact(8)
            .map(|h| u64::from_be_bytes(h.try_into().expect("8-byte chunk")))
    }
}

/// Appends a progress trailer at `at`; returns the new length.
pub fn append_progress(
    buf: &mut [u8],
    at: usize,
    migrated_upto: u32,
    hot: &[u64],
) -> Result<usize, WireError> {
    let hot = &hot[..hot.len().min(MAX_HOT_KEYS)];
    let mut w = Writer::new(buf.get_mut(at..).ok_or(WireError::TooLong)?);
    for hash in hot {
        w.put(&hash.to_be_bytes())?;
    }
    w.put(&(hot.len() as u16).to_be_bytes())?;
    w.put(&[0; 2])?;
    w.put(&migrated_upto.to_be_bytes())?;
    Ok(at + w.at)
}

/// Splits a reply flagged `PROGRESS` into the reply (at least a header long) and its
/// trailer.
pub fn split_progress(payload: &[u8]) -> Result<(&[u8], Progress<'_>), WireError> {
    let fixed_at = payload
        .len()
        .checked_sub(PROGRESS_FIXED)
        .ok_or(WireError::Truncated)?;
    let mut c = Cursor::new(&payload[fixed_at..]);
    let count = c.u16()? as usize;
    if c.u16()? != 0 {
        return Err(WireError::NonZeroReserved);
    }
    let migrated_upto = c.u32()?;
    if count > MAX_HOT_KEYS {
        return Err(WireError::TooLong);
    }
    // The reply keeps at least its header: readers index past it.
    let hot_at = fixed_at
        .checked_sub(count * 8)
        .filter(|&at| at >= HEADER_LEN)
        .ok_or(WireError::Truncated)?;
    Ok((
        &payload[..hot_at],
        Progress {
            migrated_upto,
            hot: &payload[hot_at..fixed_at],
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::push_item;

    #[test]
    fn pull_batches_round_trip_and_reject_bad_counts() {
        let mut items = Vec::new();
        let key = MigratedItem {
            key: b"user7",
            value: None,
            version: 0,
        };
        assert!(push_item(&mut items, 1000, &key));
        let found = MigratedItem {
            key: b"user8",
            value: Some(b"v"),
            version: 9,
        };
        assert!(push_item(&mut items, 1000, &found));
        let batch = PullBatch {
            count: 2,
            items: &items,
        };
        let mut buf = [0u8; 256];
        let len = batch.emit(&mut buf).unwrap();
        let parsed = PullBatch::parse(&buf[..len]).unwrap();
        assert_eq!(parsed.items().collect::<Vec<_>>(), vec![key, found]);
        buf[1] = 3; // claims a third item that is not there
        assert!(PullBatch::parse(&buf[..len]).is_err());
    }

    #[test]
    fn progress_trailer_round_trips_and_rejects_truncation() {
        let mut buf = [0u8; 128];
        buf[HEADER_LEN..HEADER_LEN + 5].copy_from_slice(b"reply");
        let len = append_progress(&mut buf, HEADER_LEN + 5, 77, &[1, u64::MAX]).unwrap();
        let (reply, progress) = split_progress(&buf[..len]).unwrap();
        assert_eq!(&reply[HEADER_LEN..], b"reply");
        assert_eq!(progress.migrated_upto, 77);
        assert_eq!(progress.hot_keys().collect::<Vec<_>>(), vec![1, u64::MAX]);
        assert!(split_progress(&buf[..7]).is_err());
        // A count larger than the payload holds.
        let len = append_progress(&mut buf, HEADER_LEN, 1, &[]).unwrap();
        buf[HEADER_LEN + 1] = 4;
        assert!(split_progress(&buf[..len]).is_err());
    }

    /// A trailer whose hot keys reach into the reply's header (a 40-byte datagram: a
    /// header, then a count of one hot key) is refused: the reply it would leave is
    /// shorter than a header, and a reader indexing past the header would panic.
    #[test]
    fn progress_trailer_never_leaves_less_than_a_header() {
        let mut buf = [0u8; HEADER_LEN + PROGRESS_FIXED];
        buf[HEADER_LEN + 1] = 1;
        assert_eq!(split_progress(&buf), Err(WireError::Truncated));
        for hot in 0..=4u8 {
            buf[HEADER_LEN + 1] = hot;
            if let Ok((reply, _)) = split_progress(&buf) {
                assert!(reply.len() >= HEADER_LEN, "{hot} hot keys");
            }
        }
    }
}
