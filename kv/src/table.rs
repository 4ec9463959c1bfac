//! One partition's table, MICA style: cache-line buckets of seven 8-byte slots, each slot a
//! 16-bit tag (high bits of the key hash) beside a 48-bit pointer to the entry block. A
//! lookup reads one bucket line and, on a tag match, the entry: two cache misses at most.
//! The home bucket is a monotone function of the key's 32-bit hash, so each migration group
//! is one run of buckets and a group scan touches nothing else.

use crate::item::{Item, ItemRef, HEADER};
use crate::layout::{GroupLayout, PartitionMap};
use std::ptr::NonNull;

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    Found {
        version: u64,
        value: &'a [u8],
    },
    /// Deleted; the tombstone keeps the delete's version so older data cannot resurrect it.
    Deleted {
        version: u64,
    },
    Absent,
}

/// A live entry or tombstone, as seen by a group scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub hash32: u32,
    pub key: &'a [u8],
    /// None for a tombstone.
    pub value: Option<&'a [u8]>,
    pub version: u64,
}

/// Whether `put_if_newer` applied the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Applied,
    /// The table already held this version or a newer one.
    Stale,
}

const SLOTS: usize = 7;
const POINTER_BITS: u32 = 48;
const POINTER_MASK: u64 = (1 << POINTER_BITS) - 1;
/// Buckets ahead of the one a group scan reads whose entries it starts loading.
const SCAN_AHEAD: usize = 4;

#[repr(C, align(64))]
#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Non-zero once an insert moved past this bucket because it was full: lookups then
    /// continue into the next bucket. Never cleared before the table is rebuilt.
    overflow: u64,
    /// 0 = empty; otherwise `tag << 48 | entry address`.
    slots: [u64; SLOTS],
}

fn tag_of(hash: u64) -> u64 {
    hash >> POINTER_BITS
}

impl Bucket {
    /// Bit `i` set when slot `i` carries `tag` (or, for tag 0, may be empty: callers check
    /// the slot). Four 16-byte compares of the line instead of seven tests.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[inline]
    fn tag_matches(&self, tag: u64) -> u32 {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is enabled (cfg); the bucket is one 64-byte-aligned line, read as four
        // aligned 16-byte lanes.
        unsafe {
            let wanted = _mm_set1_epi16(tag as u16 as i16);
            let line = (self as *const Bucket).cast::<__m128i>();
            // A matching tag sets the sign bit of its 64-bit half (the tag is its top 16 bits).
            let half_mask = |i: usize| {
                let equal = _mm_cmpeq_epi16(_mm_load_si128(line.add(i)), wanted);
                _mm_movemask_pd(_mm_castsi128_pd(equal)) as u32
            };
            let words = half_mask(0) | half_mask(1) << 2 | half_mask(2) << 4 | half_mask(3) << 6;
            words >> 1 // word 0 is `overflow`
        }
    }

    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    fn tag_matches(&self, tag: u64) -> u32 {
        (0..SLOTS)
            .filter(|&i| tag_of(self.slots[i]) == tag)
            .fold(0, |mask, i| mask | 1 << i)
    }

    /// The first occupied slot carrying `tag` for which `accept` holds.
    #[inline]
    fn find(&self, tag: u64, mut accept: impl FnMut(u64) -> bool) -> Option<usize> {
        let mut matches = self.tag_matches(tag);
        while matches != 0 {
            let i = matches.trailing_zeros() as usize;
            matches &= matches - 1;
            let slot = self.slots[i];
            if slot != 0 && accept(slot) {
                return Some(i);
            }
        }
        None
    }
}

fn encode(tag: u64, block: NonNull<u8>) -> u64 {
    let address = block.as_ptr() as u64;
    assert!(address <= POINTER_MASK, "entry address beyond 48 bits");
    tag << POINTER_BITS | address
}

/// Key equality without a call to `memcmp` for the short keys of key-value workloads
/// (YCSB's are 8–24 bytes): 8-byte words, the last one overlapping the one before.
#[inline]
fn keys_equal(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    if !(8..=32).contains(&len) {
        return a == b;
    }
    let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().unwrap());
    let mut at = 0;
    while at + 8 < len {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    word(a, len - 8) == word(b, len - 8)
}

fn block_of(slot: u64) -> NonNull<u8> {
    NonNull::new((slot & POINTER_MASK) as *mut u8).expect("occupied slot")
}

pub struct Partition {
    layout: GroupLayout,
    /// First 32-bit hash this partition owns and how many hashes it owns.
    hash_start: u32,
    hash_span: u64,
    /// `home = (offset · home_multiplier) >> 32`, a monotone map of the span onto buckets.
    home_multiplier: u64,
    buckets: Vec<Bucket>,
    live: usize,
    tombstones: usize,
    clock: u64,
}

impl Partition {
    /// Load factor (of slots) at which the table doubles.
    const MAX_LOAD_NUM: usize = 4;
    const MAX_LOAD_DEN: usize = 5;
    const MIN_BUCKETS: usize = 4;

    /// The table of partition `partition` of `map`, sized for `capacity` entries.
    pub fn new(map: &PartitionMap, partition: u32, capacity: usize) -> Partition {
        let (hash_start, hash_span) = map.hash_span_of(partition);
        let mut table = Partition {
            layout: map.layout(),
            hash_start,
            hash_span,
            home_multiplier: 0,
            buckets: Vec::new(),
            live: 0,
            tombstones: 0,
            clock: 0,
        };
        table.resize(Self::buckets_for(capacity));
        table
    }

    /// Grows the table (once) so that `entries` more fit without growing again: a
    /// migration's destination calls this before the data arrives, so no rehash of a big
    /// table stalls its core mid-migration.
    pub fn reserve(&mut self, entries: usize) {
        let needed = Self::buckets_for(self.live + self.tombstones + entries).next_power_of_two();
        if needed > self.buckets.len() {
            self.resize(needed);
        }
    }

    fn buckets_for(entries: usize) -> usize {
        (entries * Self::MAX_LOAD_DEN).div_ceil(Self::MAX_LOAD_NUM * SLOTS)
    }

    /// Whether a key hash belongs to this partition.
    pub fn owns(&self, hash: u64) -> bool {
        u64::from((hash as u32).wrapping_sub(self.hash_start)) < self.hash_span
    }

    fn home(&self, hash32: u32) -> usize {
        let offset = u64::from(hash32.wrapping_sub(self.hash_start));
        let home = ((offset * self.home_multiplier) >> 32) as usize;
        home.min(self.buckets.len() - 1)
    }

    fn next(&self, bucket: usize) -> usize {
        if bucket + 1 == self.buckets.len() {
            0
        } else {
            bucket + 1
        }
    }

    fn item(&self, slot: u64) -> ItemRef<'_> {
        // SAFETY: an occupied slot owns a live block, borrowed here for as long as `self`.
        unsafe { ItemRef::from_raw(block_of(slot)) }
    }

    /// The bucket and slot holding `key`.
    #[inline(always)]
    fn locate(&self, hash: u64, key: &[u8]) -> Option<(usize, usize)> {
        let tag = tag_of(hash);
        let mut bucket = self.home(hash as u32);
        for _ in 0..self.buckets.len() {
            let b = &self.buckets[bucket];
            if let Some(i) = b.find(tag, |slot| keys_equal(self.item(slot).key(), key)) {
                return Some((bucket, i));
            }
            if b.overflow == 0 {
                return None;
            }
            bucket = self.next(bucket);
        }
        None
    }

    pub fn get(&self, hash: u64, key: &[u8]) -> Lookup<'_> {
        match self.locate(hash, key) {
            Some((bucket, i)) => {
                let item = self.item(self.buckets[bucket].slots[i]);
                if item.is_tombstone() {
                    Lookup::Deleted {
                        version: item.version(),
                    }
                } else {
                    Lookup::Found {
                        version: item.version(),
                        value: item.value(),
                    }
                }
            }
            None => Lookup::Absent,
        }
    }

    /// Starts loading the buckets a lookup of `hash` reads first: its home bucket and the
    /// next one, where keys go when their home is full (at the table's top load, one key in
    /// ten lives past its home bucket, six in a hundred in the next one; see
    /// `most_keys_live_in_their_home_bucket_or_the_next`). Serving a burst, a core
    /// prefetches every request's buckets, then every entry (`prefetch_entry`), then serves:
    /// the cache misses of the burst overlap instead of queueing one after another.
    #[inline]
    pub fn prefetch_slots(&self, hash: u64) {
        let home = self.buckets.as_ptr().wrapping_add(self.home(hash as u32));
        prefetch(home.cast());
        // Past the last bucket this loads nothing useful, and harms nothing (a hint).
        prefetch(home.wrapping_add(1).cast());
    }

    /// Starts loading the entry whose tag matches in `hash`'s home bucket or, when the home
    /// bucket overflowed, in the next one (after `prefetch_slots` brought both in). Left to
    /// itself the compiler kept it out of line, 11 more instructions per GET.
    #[inline(always)]
    pub fn prefetch_entry(&self, hash: u64) {
        let tag = tag_of(hash);
        let home = self.home(hash as u32);
        let bucket = &self.buckets[home];
        let slot = match bucket.find(tag, |_| true) {
            Some(i) => bucket.slots[i],
            None if bucket.overflow != 0 => {
                let next = &self.buckets[self.next(home)];
                match next.find(tag, |_| true) {
                    Some(i) => next.slots[i],
                    None => return,
                }
            }
            None => return,
        };
        // Header, key and a small value span two lines.
        let block = block_of(slot).as_ptr();
        prefetch(block);
        prefetch(block.wrapping_add(64));
    }

    /// A client write: stores the value under a fresh version and returns the version.
    pub fn put(&mut self, hash: u64, key: &[u8], value: &[u8]) -> u64 {
        self.clock += 1;
        let version = self.clock;
        self.store(hash, key, Some(value), version);
        version
    }

    /// A client delete: leaves a tombstone with a fresh version. Returns the version and
    /// whether a live value was removed.
    pub fn delete(&mut self, hash: u64, key: &[u8]) -> (u64, bool) {
        let existed = matches!(self.get(hash, key), Lookup::Found { .. });
        self.clock += 1;
        let version = self.clock;
        self.store(hash, key, None, version);
        (version, existed)
    }

    /// A client delete no migration needs to see (the partition owns the key outright):
    /// the entry goes and leaves no tombstone. Returns the version, as `delete` does, and
    /// whether a live value was removed.
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> (u64, bool) {
        self.clock += 1;
        let version = self.clock;
        let existed = match self.locate(hash, key) {
            Some((bucket, i)) => self.clear_slot(bucket, i),
            None => false,
        };
        (version, existed)
    }

    /// Frees the entry in a slot; true if it was live, false if a tombstone. The bucket's
    /// overflow mark stays: keys that moved past it are still found.
    fn clear_slot(&mut self, bucket: usize, i: usize) -> bool {
        let slot = std::mem::take(&mut self.buckets[bucket].slots[i]);
        // SAFETY: the slot owned the block and has just been cleared.
        let item = unsafe { Item::from_raw(block_of(slot)) };
        let live = !item.as_ref().is_tombstone();
        if live {
            self.live -= 1;
        } else {
            self.tombstones -= 1;
        }
        live
    }

    /// Data that arrives by migration or pull: applied only if newer than what the table
    /// holds, so it never overwrites a later client write or resurrects a deleted key.
    /// `value` None is a tombstone.
    pub fn put_if_newer(
        &mut self,
        hash: u64,
        key: &[u8],
        value: Option<&[u8]>,
        version: u64,
    ) -> PutOutcome {
        let current = match self.get(hash, key) {
            Lookup::Found { version, .. } | Lookup::Deleted { version } => Some(version),
            Lookup::Absent => None,
        };
        self.clock = self.clock.max(version);
        if current.is_some_and(|current| current >= version) {
            return PutOutcome::Stale;
        }
        self.store(hash, key, value, version);
        PutOutcome::Applied
    }

    fn store(&mut self, hash: u64, key: &[u8], value: Option<&[u8]>, version: u64) {
        if let Some((bucket, i)) = self.locate(hash, key) {
            let slot = &mut self.buckets[bucket].slots[i];
            // SAFETY: the slot owns the block; it is re-encoded below, since overwrite may
            // move it.
            let mut item = unsafe { Item::from_raw(block_of(*slot)) };
            match (item.as_ref().is_tombstone(), value.is_some()) {
                (true, true) => (self.tombstones -= 1, self.live += 1),
                (false, false) => (self.live -= 1, self.tombstones += 1),
                _ => ((), ()),
            };
            item.overwrite(value, version);
            *slot = encode(tag_of(*slot), item.into_raw());
            return;
        }
        if (self.live + self.tombstones + 1) * Self::MAX_LOAD_DEN
            > self.buckets.len() * SLOTS * Self::MAX_LOAD_NUM
        {
            self.resize(self.buckets.len() * 2);
        }
        let item = Item::new(hash as u32, key, value, version);
        self.insert_slot(hash as u32, encode(tag_of(hash), item.into_raw()));
        if value.is_some() {
            self.live += 1;
        } else {
            self.tombstones += 1;
        }
    }

    /// Puts an encoded slot in the first free slot from its home bucket on, marking the
    /// full buckets it passes.
    fn insert_slot(&mut self, hash32: u32, encoded: u64) {
        let mut bucket = self.home(hash32);
        loop {
            let b = &mut self.buckets[bucket];
            if let Some(free) = b.slots.iter_mut().find(|s| **s == 0) {
                *free = encoded;
                return;
            }
            b.overflow = 1;
            bucket = self.next(bucket);
        }
    }

    fn resize(&mut self, buckets: usize) {
        let buckets = buckets.max(Self::MIN_BUCKETS);
        let old = std::mem::replace(&mut self.buckets, huge_page_vec(buckets, Bucket::default));
        self.home_multiplier =
            ((buckets as u128) << 32).div_ceil(u128::from(self.hash_span)) as u64;
        for slot in old.iter().flat_map(|b| b.slots).filter(|&s| s != 0) {
            let hash32 = self.item(slot).hash32();
            self.insert_slot(hash32, slot);
        }
    }

    /// Drops the tombstones of up to `buckets` buckets from `cursor` on, so that a table
    /// too big to purge at once (a scan of every entry) is purged a slice per poll. Returns
    /// the cursor to go on from; it wraps around, and a table that grew in between moved
    /// its entries, so a sweep goes on until `tombstones()` is 0.
    pub fn purge_tombstones_from(&mut self, cursor: usize, buckets: usize) -> usize {
        let mut bucket = cursor % self.buckets.len();
        for _ in 0..buckets.min(self.buckets.len()) {
            if self.tombstones == 0 {
                break;
            }
            for i in 0..SLOTS {
                let slot = self.buckets[bucket].slots[i];
                if slot != 0 && self.item(slot).is_tombstone() {
                    self.clear_slot(bucket, i);
                }
            }
            bucket = self.next(bucket);
        }
        bucket
    }

    /// Visits every entry and tombstone of one migration group.
    pub fn for_each_in_group(&self, group: u32, mut visit: impl FnMut(Entry<'_>)) {
        self.scan_group(group, 0, |entry| {
            visit(entry);
            true
        });
    }

    /// Visits the entries of one migration group from `cursor` (0: the first) until `visit`
    /// returns false; returns the cursor of the entry it refused, None once the group is
    /// done. A cursor stays valid while the table is not written (a migration source's
    /// frozen copy), so a scan can resume where a full frame stopped it.
    pub fn scan_group(
        &self,
        group: u32,
        cursor: u32,
        mut visit: impl FnMut(Entry<'_>) -> bool,
    ) -> Option<u32> {
        let shift = self.layout.remain_exp();
        let first_hash = (u64::from(group) << shift) as u32;
        if !self.owns(u64::from(first_hash)) {
            return None;
        }
        let last_hash = first_hash.wrapping_add(((1u64 << shift) - 1) as u32);
        let (first, last) = (self.home(first_hash), self.home(last_hash));
        let buckets = self.buckets.len();
        let (first_step, first_slot) = (cursor as usize / SLOTS, cursor as usize % SLOTS);
        for step in first_step..buckets {
            let bucket = (first + step) % buckets;
            // Past the group's home buckets, entries can only sit where an overflow led.
            if step > last - first && self.buckets[(bucket + buckets - 1) % buckets].overflow == 0 {
                break;
            }
            // The entries live apart from their buckets: their loads, started a few
            // buckets ahead, overlap instead of each one stalling the scan.
            for &slot in &self.buckets[(bucket + SCAN_AHEAD) % buckets].slots {
                if slot != 0 {
                    prefetch(block_of(slot).as_ptr());
                }
            }
            let from = if step == first_step { first_slot } else { 0 };
            for (i, &slot) in self.buckets[bucket].slots.iter().enumerate().skip(from) {
                if slot == 0 {
                    continue;
                }
                let item = self.item(slot);
                if self.layout.group_of(u64::from(item.hash32())) != group {
                    continue;
                }
                let entry = Entry {
                    hash32: item.hash32(),
                    key: item.key(),
                    value: (!item.is_tombstone()).then(|| item.value()),
                    version: item.version(),
                };
                if !visit(entry) {
                    return Some((step * SLOTS + i) as u32);
                }
            }
        }
        None
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn tombstones(&self) -> usize {
        self.tombstones
    }

    /// Nothing was ever stored here, nor a version adopted: a table as `new` made it. (A
    /// table whose keys were all removed is empty, not fresh.)
    pub fn is_fresh(&self) -> bool {
        self.clock == 0 && self.live + self.tombstones == 0
    }

    /// The highest version this partition has assigned or accepted.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Makes every later client write newer than `version` (a destination adopting a
    /// source's data calls this before serving writes).
    pub fn advance_clock(&mut self, version: u64) {
        self.clock = self.clock.max(version);
    }

    /// Bytes the table spends beyond keys and values: buckets plus entry headers (not
    /// counting the allocator's own rounding).
    pub fn overhead_bytes(&self) -> usize {
        self.buckets.len() * size_of::<Bucket>() + (self.live + self.tombstones) * HEADER
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for slot in self
            .buckets
            .iter()
            .flat_map(|b| b.slots)
            .filter(|&s| s != 0)
        {
            // SAFETY: every occupied slot owns its block; the table is going away.
            drop(unsafe { Item::from_raw(block_of(slot)) });
        }
    }
}

fn prefetch(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(address.cast(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// A vector of `len` elements whose memory is asked to be backed by transparent huge pages
/// when it is large: the slot arrays are read at random, and 4-KiB pages would add a TLB
/// miss to almost every lookup.
fn huge_page_vec<T>(len: usize, fill: impl Fn() -> T) -> Vec<T> {
    const HUGE_PAGE: usize = 2 << 20;
    let mut vec = Vec::with_capacity(len);
    let bytes = len * size_of::<T>();
    if bytes >= 2 * HUGE_PAGE {
        let start = vec.as_ptr() as usize;
        let aligned = start.next_multiple_of(HUGE_PAGE);
        let length = (start + bytes - aligned) / HUGE_PAGE * HUGE_PAGE;
        // SAFETY: the range lies inside the vector's own allocation; madvise only changes
        // how the kernel backs it. Failure (no THP) is harmless.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, length, libc::MADV_HUGEPAGE);
        }
    }
    vec.extend((0..len).map(|_| fill()));
    vec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_equal_agrees_with_slice_equality() {
        let base: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..=40 {
            let a = &base[..len];
            assert!(keys_equal(a, a), "len {len}");
            assert!(!keys_equal(a, &base[..len.saturating_sub(1)]) || len == 0);
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 0x40;
                assert!(!keys_equal(a, &b), "len {len}, byte {at} differs");
            }
        }
    }
    use crate::{key_hash, GroupLayout, PartitionMap};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn single(bits: u8) -> Partition {
        let map = PartitionMap::new(GroupLayout::new(bits).unwrap(), 1).unwrap();
        Partition::new(&map, 0, 4)
    }

    #[test]
    fn tag_matches_marks_exactly_the_slots_with_the_tag() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..2000 {
            let tag = [0, 0xffff, random() >> 48][round % 3];
            // The overflow word carries the tag too: it must never be reported.
            let mut bucket = Bucket {
                overflow: tag << POINTER_BITS | 1,
                ..Bucket::default()
            };
            for slot in bucket.slots.iter_mut() {
                *slot = match random() % 3 {
                    0 => 0,
                    1 => tag << POINTER_BITS | (random() & POINTER_MASK),
                    _ => random(),
                };
            }
            let expected = (0..SLOTS)
                .filter(|&i| tag_of(bucket.slots[i]) == tag)
                .fold(0, |mask, i| mask | 1 << i);
            assert_eq!(bucket.tag_matches(tag), expected, "tag {tag:#x}");
        }
    }

    #[test]
    fn keys_sharing_a_hash_are_told_apart_by_key() {
        let map = PartitionMap::new(GroupLayout::new(4).unwrap(), 1).unwrap();
        let mut table = Partition::new(&map, 0, 64);
        // Zero and non-zero tags; more keys than one bucket holds, so they overflow.
        for hash in [0x0000_0000_1234_5678, 0xabcd_0000_1234_5678] {
            let keys: Vec<Vec<u8>> = (0..20u8).map(|i| vec![b'k', i]).collect();
            for (i, key) in keys.iter().enumerate() {
                table.put(hash, key, &[i as u8; 3]);
            }
            for (i, key) in keys.iter().enumerate() {
                let found = matches!(table.get(hash, key),
                    Lookup::Found { value, .. } if value == [i as u8; 3]);
                assert!(found, "key {i} under hash {hash:#x}");
            }
            assert_eq!(table.get(hash, b"other"), Lookup::Absent);
        }
    }

    /// What `prefetch_slots` relies on: filled to its top load with random keys (hashed YCSB
    /// keys are), a table keeps about nine keys in ten in their home bucket, and nearly all
    /// the rest in the next. (Sequential 8-byte keys cluster: their CRC-64 values are
    /// structured, and about a fifth live past their home.)
    #[test]
    fn most_keys_live_in_their_home_bucket_or_the_next() {
        let n = 200_000u64;
        let map = PartitionMap::new(GroupLayout::new(16).unwrap(), 1).unwrap();
        let mut t = Partition::new(&map, 0, n as usize);
        let key = |i: u64| {
            // splitmix64: random-looking, distinct 8-byte keys.
            let z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)).to_le_bytes()
        };
        for i in 0..n {
            t.put(key_hash(&key(i)), &key(i), &[7; 64]);
        }
        assert!(
            t.buckets.len() * SLOTS * 3 < n as usize * 4,
            "filled past 75 %"
        );
        let mut at_distance = [0u64; 3];
        for i in 0..n {
            let hash = key_hash(&key(i));
            let (bucket, _) = t.locate(hash, &key(i)).unwrap();
            let distance = (bucket + t.buckets.len() - t.home(hash as u32)) % t.buckets.len();
            at_distance[distance.min(2)] += 1;
        }
        let share = |count: u64| count as f64 / n as f64;
        assert!(share(at_distance[0]) > 0.85, "{at_distance:?}");
        assert!(
            share(at_distance[0] + at_distance[1]) > 0.93,
            "{at_distance:?}"
        );
    }

    #[test]
    fn put_get_delete_and_versions() {
        let mut t = single(8);
        let h = key_hash(b"k");
        assert_eq!(t.get(h, b"k"), Lookup::Absent);
        let v1 = t.put(h, b"k", b"one");
        let v2 = t.put(h, b"k", b"two!");
        assert!(v2 > v1);
        assert_eq!(
            t.get(h, b"k"),
            Lookup::Found {
                version: v2,
                value: b"two!"
            }
        );
        let (v3, existed) = t.delete(h, b"k");
        assert!(existed && v3 > v2);
        assert_eq!(t.get(h, b"k"), Lookup::Deleted { version: v3 });
        assert_eq!((t.len(), t.tombstones()), (0, 1));
    }

    #[test]
    fn a_sweep_the_table_outgrows_midway_still_ends_with_no_tombstone() {
        let mut t = single(8);
        let key = |i: u32| i.to_le_bytes();
        for i in 0..200 {
            t.put_if_newer(key_hash(&key(i)), &key(i), None, 1);
        }
        let mut cursor = t.purge_tombstones_from(0, 2);
        let before = t.buckets.len();
        for i in 200..2000 {
            t.put(key_hash(&key(i)), &key(i), b"v");
        }
        assert!(t.buckets.len() > before, "the table grew mid-sweep");
        let mut slices = 0;
        while t.tombstones() > 0 {
            cursor = t.purge_tombstones_from(cursor, 2);
            slices += 1;
            assert!(slices < 10 * t.buckets.len(), "the sweep never ends");
        }
        assert_eq!(t.len(), 1800);
        for i in 0..2000 {
            let found = matches!(t.get(key_hash(&key(i)), &key(i)), Lookup::Found { .. });
            assert_eq!(found, i >= 200, "key {i}");
        }
    }

    #[test]
    fn put_if_newer_never_overwrites_newer_data_or_resurrects() {
        let mut t = single(8);
        let h = key_hash(b"k");
        assert_eq!(
            t.put_if_newer(h, b"k", Some(b"old"), 5),
            PutOutcome::Applied
        );
        let fresh = t.put(h, b"k", b"client");
        assert!(fresh > 5, "client writes after migrated data are newer");
        assert_eq!(
            t.put_if_newer(h, b"k", Some(b"older"), 5),
            PutOutcome::Stale
        );
        let (deleted, _) = t.delete(h, b"k");
        assert_eq!(
            t.put_if_newer(h, b"k", Some(b"zombie"), deleted - 1),
            PutOutcome::Stale
        );
        assert_eq!(t.get(h, b"k"), Lookup::Deleted { version: deleted });
        assert_eq!(
            t.put_if_newer(h, b"k", Some(b"new"), deleted + 10),
            PutOutcome::Applied
        );
        assert_eq!(
            t.get(h, b"k"),
            Lookup::Found {
                version: deleted + 10,
                value: b"new"
            }
        );
    }

    #[derive(Debug, Clone)]
    enum Action {
        Put(u16, u8),
        Delete(u16),
        Remove(u16),
        Purge,
        /// A purge a few buckets at a time from a cursor, until no tombstone is left.
        Sweep(u16, u8),
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            6 => (0u16..300, any::<u8>()).prop_map(|(k, v)| Action::Put(k, v)),
            3 => (0u16..300).prop_map(Action::Delete),
            2 => (0u16..300).prop_map(Action::Remove),
            1 => Just(Action::Purge),
            1 => (any::<u16>(), 1u8..8).prop_map(|(c, b)| Action::Sweep(c, b)),
        ]
    }

    proptest! {
        /// The table agrees with a HashMap model through growth, deletes and purges, for
        /// several partitions, and group scans return exactly each group's keys.
        #[test]
        fn behaves_like_a_map(actions in proptest::collection::vec(action(), 1..400),
                              bits in 1u8..=12, parts in 1u32..=3, part_pick: u32) {
            let layout = GroupLayout::new(bits).unwrap();
            prop_assume!(u64::from(parts) <= layout.group_count());
            let map = PartitionMap::new(layout, parts).unwrap();
            let mine = part_pick % parts;
            let mut table = Partition::new(&map, mine, 1);
            let mut model: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
            let key_of = |k: u16| format!("key-{k}").into_bytes();
            for action in actions {
                match action {
                    Action::Put(k, v) => {
                        let key = key_of(k);
                        let h = key_hash(&key);
                        if !table.owns(h) { continue; }
                        let value = vec![v; (v % 40) as usize];
                        table.put(h, &key, &value);
                        model.insert(key, Some(value));
                    }
                    Action::Delete(k) => {
                        let key = key_of(k);
                        let h = key_hash(&key);
                        if !table.owns(h) { continue; }
                        table.delete(h, &key);
                        model.insert(key, None);
                    }
                    Action::Remove(k) => {
                        let key = key_of(k);
                        let h = key_hash(&key);
                        if !table.owns(h) { continue; }
                        let live = matches!(model.remove(&key), Some(Some(_)));
                        prop_assert_eq!(table.remove(h, &key).1, live);
                    }
                    Action::Purge => {
                        table.purge_tombstones_from(0, usize::MAX);
                        model.retain(|_, v| v.is_some());
                    }
                    Action::Sweep(cursor, buckets) => {
                        let mut cursor = usize::from(cursor);
                        while table.tombstones() > 0 {
                            cursor = table.purge_tombstones_from(cursor, usize::from(buckets));
                        }
                        model.retain(|_, v| v.is_some());
                    }
                }
            }
            for k in 0..300 {
                let key = key_of(k);
                let h = key_hash(&key);
                if table.owns(h) && !model.contains_key(&key) {
                    prop_assert_eq!(table.get(h, &key), Lookup::Absent);
                }
            }
            prop_assert_eq!(table.tombstones(), model.values().filter(|v| v.is_none()).count());
            for (key, value) in &model {
                let got = table.get(key_hash(key), key);
                let agrees = match value {
                    Some(v) => matches!(got, Lookup::Found { value, .. } if value == &v[..]),
                    None => matches!(got, Lookup::Deleted { .. }),
                };
                prop_assert!(agrees, "key {:?}: model {:?}, table {:?}", key, value, got);
            }
            prop_assert_eq!(table.len(), model.values().filter(|v| v.is_some()).count());
            let mut scanned = 0;
            for group in map.groups_of(mine) {
                table.for_each_in_group(group, |entry| {
                    assert_eq!(layout.group_of(u64::from(entry.hash32)), group);
                    assert_eq!(model.get(entry.key).map(|v| v.as_deref()), Some(entry.value));
                    scanned += 1;
                });
            }
            prop_assert_eq!(scanned, model.len());
            // Scanning a frame at a time (at most 3 entries per call) visits the same.
            let mut resumed = 0;
            for group in map.groups_of(mine) {
                let mut cursor = Some(0);
                while let Some(from) = cursor {
                    let mut taken = 0;
                    cursor = table.scan_group(group, from, |_| {
                        taken += 1;
                        taken <= 3
                    });
                    resumed += taken.min(3);
                }
            }
            prop_assert_eq!(resumed, model.len());
        }
    }
}
