//! Bytes the table spends per entry beyond its key and value, measured with a counting
//! allocator (requested bytes; the allocator's own size-class rounding is not included).
//! Run `cargo test -p kv --release --test overhead -- --nocapture` to see the figures.

use kv::{key_hash, GroupLayout, Partition, PartitionMap};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ENTRIES: usize = 1_000_000;
const KEY: usize = 8;
const VALUE: usize = 64;

/// Overhead per entry after inserting ENTRIES entries into a table sized for `capacity`.
fn overhead_per_entry(capacity: usize) -> f64 {
    let map = PartitionMap::new(GroupLayout::new(16).unwrap(), 1).unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let mut table = Partition::new(&map, 0, capacity);
    let value = [0u8; VALUE];
    for i in 0..ENTRIES as u64 {
        let key = i.to_be_bytes();
        table.put(key_hash(&key), &key, &value);
    }
    let used = (LIVE.load(Ordering::Relaxed) - before) as f64;
    assert_eq!(table.len(), ENTRIES);
    assert!(
        (used / ENTRIES as f64
            - table.overhead_bytes() as f64 / ENTRIES as f64
            - (KEY + VALUE) as f64)
            .abs()
            < 1.0,
        "the table's own overhead accounting agrees with the allocator"
    );
    used / ENTRIES as f64 - (KEY + VALUE) as f64
}

#[test]
fn overhead_per_entry_is_at_most_32_bytes_when_sized_up_front() {
    let sized = overhead_per_entry(ENTRIES);
    let grown = overhead_per_entry(1);
    println!("overhead per entry (8 B key, 64 B value): {sized:.1} B sized up front, {grown:.1} B grown from empty");
    assert!(sized <= 32.0, "{sized} B per entry");
    // Growth doubles at 80 % load, so a grown table is between 40 % and 80 % full.
    assert!(grown <= 12.0 + 12.0 / 0.4 + 1.0, "{grown} B per entry");
}
