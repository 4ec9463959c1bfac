//! One heap block per entry: a 12-byte header (version, value length, key length, flags)
//! followed by the key and the value, so an entry costs one allocation and no pointers
//! beyond the table slot that owns it.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

const VERSION: usize = 0;
const VALUE_LEN: usize = 8;
const KEY_LEN: usize = 10;
const FLAGS: usize = 11;
pub(crate) const HEADER: usize = 12;
const TOMBSTONE: u8 = 0x01;
const ALIGN: usize = 8;

/// An owned entry block. Not `Clone`: exactly one table slot owns each block.
pub(crate) struct Item {
    ptr: NonNull<u8>,
}

// SAFETY: an Item is a uniquely owned heap block, like a Box<[u8]>.
unsafe impl Send for Item {}
unsafe impl Sync for Item {}

fn layout(key_len: usize, value_len: usize) -> Layout {
    Layout::from_size_align(HEADER + key_len + value_len, ALIGN).expect("entry layout")
}

impl Item {
    /// `value` None makes a tombstone.
    pub fn new(key: &[u8], value: Option<&[u8]>, version: u64) -> Item {
        assert!(
            !key.is_empty() && key.len() <= u8::MAX as usize,
            "key length 1..=255"
        );
        let value_bytes = value.unwrap_or(&[]);
        assert!(value_bytes.len() <= u16::MAX as usize, "value too long");
        let layout = layout(key.len(), value_bytes.len());
        // SAFETY: the layout has a non-zero size (the header).
        let raw = unsafe { alloc::alloc(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        let mut item = Item { ptr };
        item.write_header(
            key.len() as u8,
            value_bytes.len() as u16,
            version,
            value.is_none(),
        );
        item.bytes_mut()[HEADER..HEADER + key.len()].copy_from_slice(key);
        item.value_mut().copy_from_slice(value_bytes);
        item
    }

    fn write_header(&mut self, key_len: u8, value_len: u16, version: u64, tombstone: bool) {
        // SAFETY: the block is at least HEADER bytes and 8-aligned.
        unsafe {
            let base = self.ptr.as_ptr();
            base.add(VERSION).cast::<u64>().write(version);
            base.add(VALUE_LEN).cast::<u16>().write_unaligned(value_len);
            base.add(KEY_LEN).write(key_len);
            base.add(FLAGS).write(if tombstone { TOMBSTONE } else { 0 });
        }
    }

    fn header_byte(&self, at: usize) -> u8 {
        // SAFETY: at < HEADER.
        unsafe { self.ptr.as_ptr().add(at).read() }
    }

    pub fn key_len(&self) -> usize {
        self.header_byte(KEY_LEN) as usize
    }

    pub fn value_len(&self) -> usize {
        // SAFETY: within the header.
        unsafe {
            self.ptr
                .as_ptr()
                .add(VALUE_LEN)
                .cast::<u16>()
                .read_unaligned() as usize
        }
    }

    pub fn version(&self) -> u64 {
        // SAFETY: the version sits 8-aligned at the front of the block.
        unsafe { self.ptr.as_ptr().cast::<u64>().read() }
    }

    pub fn is_tombstone(&self) -> bool {
        self.header_byte(FLAGS) & TOMBSTONE != 0
    }

    fn size(&self) -> usize {
        HEADER + self.key_len() + self.value_len()
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the block holds exactly `size()` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.size()) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we own the block uniquely.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.size()) }
    }

    /// The block's address, for prefetching.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn key(&self) -> &[u8] {
        &self.bytes()[HEADER..HEADER + self.key_len()]
    }

    pub fn value(&self) -> &[u8] {
        &self.bytes()[HEADER + self.key_len()..]
    }

    fn value_mut(&mut self) -> &mut [u8] {
        let start = HEADER + self.key_len();
        &mut self.bytes_mut()[start..]
    }

    /// Replaces value, version and tombstone flag, keeping the key. Reuses the block when
    /// the value length is unchanged (the common update).
    pub fn overwrite(&mut self, value: Option<&[u8]>, version: u64) {
        let value_bytes = value.unwrap_or(&[]);
        assert!(value_bytes.len() <= u16::MAX as usize, "value too long");
        let key_len = self.key_len();
        if value_bytes.len() != self.value_len() {
            let old = layout(key_len, self.value_len());
            let new_size = HEADER + key_len + value_bytes.len();
            // SAFETY: the block was allocated with `old`; new_size is non-zero.
            let raw = unsafe { alloc::realloc(self.ptr.as_ptr(), old, new_size) };
            self.ptr = NonNull::new(raw)
                .unwrap_or_else(|| alloc::handle_alloc_error(layout(key_len, value_bytes.len())));
        }
        self.write_header(
            key_len as u8,
            value_bytes.len() as u16,
            version,
            value.is_none(),
        );
        self.value_mut().copy_from_slice(value_bytes);
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout and not freed before.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout(self.key_len(), self.value_len())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_resizes() {
        let mut item = Item::new(b"key", Some(b"value"), 7);
        assert_eq!(
            (item.key(), item.value(), item.version()),
            (&b"key"[..], &b"value"[..], 7)
        );
        assert!(!item.is_tombstone());
        item.overwrite(Some(b"a much longer value than before"), 9);
        assert_eq!(item.value(), b"a much longer value than before");
        assert_eq!(item.key(), b"key");
        item.overwrite(None, 10);
        assert!(item.is_tombstone());
        assert_eq!(item.value(), b"");
        assert_eq!(item.version(), 10);
    }
}
