//! One heap block per entry: a 16-byte header (version, value length, key length, flags,
//! 32-bit key hash) followed by the key and the value, so an entry costs one allocation and
//! nothing beyond the 8-byte table slot that owns it.

use std::alloc::{self, Layout};
use std::marker::PhantomData;
use std::ptr::NonNull;

const VERSION: usize = 0;
const VALUE_LEN: usize = 8;
const KEY_LEN: usize = 10;
const FLAGS: usize = 11;
const HASH32: usize = 12;
pub(crate) const HEADER: usize = 16;
const TOMBSTONE: u8 = 0x01;
const ALIGN: usize = 8;

fn layout(key_len: usize, value_len: usize) -> Layout {
    Layout::from_size_align(HEADER + key_len + value_len, ALIGN).expect("entry layout")
}

/// A borrowed view of an entry block.
#[derive(Clone, Copy)]
pub(crate) struct ItemRef<'a> {
    ptr: NonNull<u8>,
    _block: PhantomData<&'a [u8]>,
}

impl<'a> ItemRef<'a> {
    /// # Safety
    /// `ptr` must point at a live entry block that outlives `'a` and is not mutated meanwhile.
    pub unsafe fn from_raw(ptr: NonNull<u8>) -> Self {
        ItemRef {
            ptr,
            _block: PhantomData,
        }
    }

    fn byte(&self, at: usize) -> u8 {
        // SAFETY: at < HEADER, inside the block.
        unsafe { self.ptr.as_ptr().add(at).read() }
    }

    pub fn key_len(&self) -> usize {
        self.byte(KEY_LEN) as usize
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

    pub fn hash32(&self) -> u32 {
        // SAFETY: within the header, 4-aligned.
        unsafe { self.ptr.as_ptr().add(HASH32).cast::<u32>().read() }
    }

    pub fn is_tombstone(&self) -> bool {
        self.byte(FLAGS) & TOMBSTONE != 0
    }

    pub fn key(&self) -> &'a [u8] {
        // SAFETY: the block holds key_len key bytes after the header.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(HEADER), self.key_len()) }
    }

    pub fn value(&self) -> &'a [u8] {
        // SAFETY: the block holds value_len value bytes after the key.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().add(HEADER + self.key_len()),
                self.value_len(),
            )
        }
    }
}

/// An owned entry block. Not `Clone`: exactly one table slot owns each block.
pub(crate) struct Item {
    ptr: NonNull<u8>,
}

// SAFETY: an Item is a uniquely owned heap block, like a Box<[u8]>.
unsafe impl Send for Item {}
unsafe impl Sync for Item {}

impl Item {
    /// `value` None makes a tombstone.
    pub fn new(hash32: u32, key: &[u8], value: Option<&[u8]>, version: u64) -> Item {
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
        item.write_header(value_bytes.len() as u16, version, value.is_none());
        // SAFETY: the block has room for the header, the key and the value.
        unsafe {
            let base = ptr.as_ptr();
            base.add(KEY_LEN).write(key.len() as u8);
            base.add(HASH32).cast::<u32>().write(hash32);
            std::ptr::copy_nonoverlapping(key.as_ptr(), base.add(HEADER), key.len());
            std::ptr::copy_nonoverlapping(
                value_bytes.as_ptr(),
                base.add(HEADER + key.len()),
                value_bytes.len(),
            );
        }
        item
    }

    fn write_header(&mut self, value_len: u16, version: u64, tombstone: bool) {
        // SAFETY: the block is at least HEADER bytes and 8-aligned.
        unsafe {
            let base = self.ptr.as_ptr();
            base.add(VERSION).cast::<u64>().write(version);
            base.add(VALUE_LEN).cast::<u16>().write_unaligned(value_len);
            base.add(FLAGS).write(if tombstone { TOMBSTONE } else { 0 });
        }
    }

    pub fn as_ref(&self) -> ItemRef<'_> {
        // SAFETY: we own the block; the borrow of self keeps it alive and unchanged.
        unsafe { ItemRef::from_raw(self.ptr) }
    }

    /// Gives up ownership: the caller must turn the pointer back into an `Item` to free it.
    pub fn into_raw(self) -> NonNull<u8> {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }

    /// # Safety
    /// `ptr` must come from `into_raw` and be owned by nobody else.
    pub unsafe fn from_raw(ptr: NonNull<u8>) -> Item {
        Item { ptr }
    }

    /// Replaces value, version and tombstone flag, keeping key and hash. Reuses the block
    /// when the value length is unchanged (the common update); otherwise the block moves,
    /// so callers must re-read `into_raw`.
    pub fn overwrite(&mut self, value: Option<&[u8]>, version: u64) {
        let value_bytes = value.unwrap_or(&[]);
        assert!(value_bytes.len() <= u16::MAX as usize, "value too long");
        let (key_len, old_len) = (self.as_ref().key_len(), self.as_ref().value_len());
        if value_bytes.len() != old_len {
            let new_size = HEADER + key_len + value_bytes.len();
            // SAFETY: the block was allocated with this layout; new_size is non-zero.
            let raw =
                unsafe { alloc::realloc(self.ptr.as_ptr(), layout(key_len, old_len), new_size) };
            self.ptr = NonNull::new(raw)
                .unwrap_or_else(|| alloc::handle_alloc_error(layout(key_len, value_bytes.len())));
        }
        self.write_header(value_bytes.len() as u16, version, value.is_none());
        // SAFETY: the block has room for the new value after the key.
        unsafe {
            std::ptr::copy_nonoverlapping(
                value_bytes.as_ptr(),
                self.ptr.as_ptr().add(HEADER + key_len),
                value_bytes.len(),
            );
        }
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        let (key_len, value_len) = (self.as_ref().key_len(), self.as_ref().value_len());
        // SAFETY: allocated with this layout and not freed before.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout(key_len, value_len)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_resizes() {
        let mut item = Item::new(0xABCD, b"key", Some(b"value"), 7);
        let view = item.as_ref();
        assert_eq!(
            (view.key(), view.value(), view.version(), view.hash32()),
            (&b"key"[..], &b"value"[..], 7, 0xABCD)
        );
        assert!(!view.is_tombstone());
        item.overwrite(Some(b"a much longer value than before"), 9);
        assert_eq!(item.as_ref().value(), b"a much longer value than before");
        assert_eq!(item.as_ref().key(), b"key");
        item.overwrite(None, 10);
        let view = item.as_ref();
        assert!(view.is_tombstone());
        assert_eq!(
            (view.value(), view.version(), view.hash32()),
            (&b""[..], 10, 0xABCD)
        );
        let raw = item.into_raw();
        // SAFETY: just given up above.
        drop(unsafe { Item::from_raw(raw) });
    }
}
