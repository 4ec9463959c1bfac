//! One partition's table: linear probing over a slot array whose home slot is a monotone
//! function of the key's 32-bit hash. Monotone homes keep each migration group in one run
//! of slots, so a group is scanned without touching the rest of the table.

use crate::item::{Item, HEADER};
use crate::layout::{GroupLayout, PartitionMap};

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

pub struct Partition {
    layout: GroupLayout,
    /// First 32-bit hash this partition owns and how many hashes it owns.
    hash_start: u32,
    hash_span: u64,
    /// `home = (offset · home_multiplier) >> 32`, a monotone map of the span onto the slots.
    home_multiplier: u64,
    tags: Vec<u32>,
    items: Vec<Option<Item>>,
    live: usize,
    tombstones: usize,
    clock: u64,
}

impl Partition {
    /// Load factor at which the table grows, and the growth factor.
    const MAX_LOAD_NUM: usize = 4;
    const MAX_LOAD_DEN: usize = 5;
    const MIN_SLOTS: usize = 16;

    /// The table of partition `partition` of `map`, sized for `capacity` entries.
    pub fn new(map: &PartitionMap, partition: u32, capacity: usize) -> Partition {
        let (hash_start, hash_span) = map.hash_span_of(partition);
        let mut table = Partition {
            layout: map.layout(),
            hash_start,
            hash_span,
            home_multiplier: 0,
            tags: Vec::new(),
            items: Vec::new(),
            live: 0,
            tombstones: 0,
            clock: 0,
        };
        table.resize(Self::slots_for(capacity));
        table
    }

    fn slots_for(entries: usize) -> usize {
        (entries * Self::MAX_LOAD_DEN / Self::MAX_LOAD_NUM + 1).max(Self::MIN_SLOTS)
    }

    /// Whether a key hash belongs to this partition.
    pub fn owns(&self, hash: u64) -> bool {
        u64::from((hash as u32).wrapping_sub(self.hash_start)) < self.hash_span
    }

    fn home(&self, hash32: u32) -> usize {
        let offset = u64::from(hash32.wrapping_sub(self.hash_start));
        let home = ((offset * self.home_multiplier) >> 32) as usize;
        home.min(self.tags.len() - 1)
    }

    fn next(&self, slot: usize) -> usize {
        if slot + 1 == self.tags.len() {
            0
        } else {
            slot + 1
        }
    }

    fn find(&self, hash32: u32, key: &[u8]) -> Result<usize, usize> {
        let mut slot = self.home(hash32);
        loop {
            match &self.items[slot] {
                None => return Err(slot),
                Some(item) if self.tags[slot] == hash32 && item.key() == key => return Ok(slot),
                Some(_) => slot = self.next(slot),
            }
        }
    }

    pub fn get(&self, hash: u64, key: &[u8]) -> Lookup<'_> {
        match self.find(hash as u32, key) {
            Ok(slot) => {
                let item = self.items[slot].as_ref().expect("found slot is occupied");
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
            Err(_) => Lookup::Absent,
        }
    }

    /// Starts loading the slots a lookup of `hash` reads first. Serving a burst, a core
    /// prefetches every request's slots, then every entry (`prefetch_entry`), then serves:
    /// the cache misses of the burst overlap instead of queueing one after another.
    pub fn prefetch_slots(&self, hash: u64) {
        let slot = self.home(hash as u32);
        prefetch(self.tags.as_ptr().wrapping_add(slot).cast());
        prefetch(self.items.as_ptr().wrapping_add(slot).cast());
    }

    /// Starts loading the entry in `hash`'s home slot (after `prefetch_slots` brought the
    /// slot itself in).
    pub fn prefetch_entry(&self, hash: u64) {
        if let Some(item) = &self.items[self.home(hash as u32)] {
            prefetch(item.as_ptr());
        }
    }

    /// A client write: stores the value under a fresh version and returns the version.
    pub fn put(&mut self, hash: u64, key: &[u8], value: &[u8]) -> u64 {
        self.clock += 1;
        let version = self.clock;
        self.store(hash as u32, key, Some(value), version);
        version
    }

    /// A client delete: leaves a tombstone with a fresh version. Returns the version and
    /// whether a live value was removed.
    pub fn delete(&mut self, hash: u64, key: &[u8]) -> (u64, bool) {
        let existed = matches!(self.get(hash, key), Lookup::Found { .. });
        self.clock += 1;
        let version = self.clock;
        self.store(hash as u32, key, None, version);
        (version, existed)
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
        self.store(hash as u32, key, value, version);
        PutOutcome::Applied
    }

    fn store(&mut self, hash32: u32, key: &[u8], value: Option<&[u8]>, version: u64) {
        match self.find(hash32, key) {
            Ok(slot) => {
                let item = self.items[slot].as_mut().expect("found slot is occupied");
                match (item.is_tombstone(), value.is_some()) {
                    (true, true) => (self.tombstones -= 1, self.live += 1),
                    (false, false) => (self.live -= 1, self.tombstones += 1),
                    _ => ((), ()),
                };
                item.overwrite(value, version);
            }
            Err(_) => {
                if (self.live + self.tombstones + 1) * Self::MAX_LOAD_DEN
                    > self.tags.len() * Self::MAX_LOAD_NUM
                {
                    self.resize(self.tags.len() * 2);
                }
                let slot = self.find(hash32, key).expect_err("key is not in the table");
                self.tags[slot] = hash32;
                self.items[slot] = Some(Item::new(key, value, version));
                if value.is_some() {
                    self.live += 1;
                } else {
                    self.tombstones += 1;
                }
            }
        }
    }

    fn resize(&mut self, slots: usize) {
        let slots = slots.max(Self::MIN_SLOTS);
        let old_tags = std::mem::replace(&mut self.tags, huge_page_vec(slots, || 0));
        let old_items = std::mem::replace(&mut self.items, huge_page_vec(slots, || None));
        self.home_multiplier = ((slots as u128) << 32).div_ceil(u128::from(self.hash_span)) as u64;
        for (tag, item) in old_tags.into_iter().zip(old_items) {
            if let Some(item) = item {
                let mut slot = self.home(tag);
                while self.items[slot].is_some() {
                    slot = self.next(slot);
                }
                self.tags[slot] = tag;
                self.items[slot] = Some(item);
            }
        }
    }

    /// Removes a slot's entry and shifts later entries of its probe run back, so lookups
    /// never need tombstone slots.
    fn remove_slot(&mut self, mut hole: usize) -> Option<Item> {
        let removed = self.items[hole].take();
        let mut slot = hole;
        loop {
            slot = self.next(slot);
            let Some(_) = &self.items[slot] else { break };
            let home = self.home(self.tags[slot]);
            // The entry may move into the hole only if its home is not after the hole
            // (cyclically, between hole and slot).
            let stays = if hole <= slot {
                hole < home && home <= slot
            } else {
                hole < home || home <= slot
            };
            if !stays {
                self.items[hole] = self.items[slot].take();
                self.tags[hole] = self.tags[slot];
                hole = slot;
            }
        }
        removed
    }

    /// Drops every tombstone; call when no migration needs them any more.
    pub fn purge_tombstones(&mut self) -> usize {
        let mut purged = 0;
        let mut slot = 0;
        while slot < self.items.len() {
            if self.items[slot].as_ref().is_some_and(Item::is_tombstone) {
                self.remove_slot(slot);
                purged += 1;
                // The shift may have moved another entry into this slot: look again.
                continue;
            }
            slot += 1;
        }
        self.tombstones -= purged;
        purged
    }

    /// Visits every entry and tombstone of one migration group.
    pub fn for_each_in_group(&self, group: u32, mut visit: impl FnMut(Entry<'_>)) {
        let shift = self.layout.remain_exp();
        let first_hash = (u64::from(group) << shift) as u32;
        if !self.owns(u64::from(first_hash)) {
            return;
        }
        let last_hash = first_hash.wrapping_add(((1u64 << shift) - 1) as u32);
        let (first, last) = (self.home(first_hash), self.home(last_hash));
        let mut slot = first;
        for step in 0..self.tags.len() {
            let within_homes = step <= last - first;
            match &self.items[slot] {
                None if !within_homes => break,
                None => {}
                Some(item) if self.layout.group_of(u64::from(self.tags[slot])) == group => {
                    visit(Entry {
                        hash32: self.tags[slot],
                        key: item.key(),
                        value: (!item.is_tombstone()).then(|| item.value()),
                        version: item.version(),
                    });
                }
                Some(_) => {}
            }
            slot = self.next(slot);
        }
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

    /// The highest version this partition has assigned or accepted.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Makes every later client write newer than `version` (a destination adopting a
    /// source's data calls this before serving writes).
    pub fn advance_clock(&mut self, version: u64) {
        self.clock = self.clock.max(version);
    }

    pub fn slots(&self) -> usize {
        self.tags.len()
    }

    /// Bytes the table spends beyond keys and values: slot arrays plus entry headers (not
    /// counting the allocator's own rounding).
    pub fn overhead_bytes(&self) -> usize {
        self.tags.len() * (size_of::<u32>() + size_of::<Option<Item>>())
            + (self.live + self.tombstones) * HEADER
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
    use crate::{key_hash, GroupLayout, PartitionMap};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn single(bits: u8) -> Partition {
        let map = PartitionMap::new(GroupLayout::new(bits).unwrap(), 1).unwrap();
        Partition::new(&map, 0, 4)
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
        Purge,
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            6 => (0u16..300, any::<u8>()).prop_map(|(k, v)| Action::Put(k, v)),
            3 => (0u16..300).prop_map(Action::Delete),
            1 => Just(Action::Purge),
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
                    Action::Purge => {
                        table.purge_tombstones();
                        model.retain(|_, v| v.is_some());
                    }
                }
            }
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
        }
    }
}
