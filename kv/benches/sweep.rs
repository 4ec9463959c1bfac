//! The tombstone sweep a new owner runs after a migration, 16 buckets a poll: the whole sweep
//! of a table of 1 M keys (8-byte keys, 64-byte values) of which a tenth are tombstones, and
//! so what one poll's slice costs on average. Setup (filling the table) is not timed.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kv::{key_hash, GroupLayout, Partition, PartitionMap};

const KEYS: u64 = 1_000_000;
/// As the partition server's slice (`SWEEP_BUCKETS` in migration/src/serve/mod.rs).
const SLICE: usize = 16;

fn table() -> Partition {
    let map = PartitionMap::new(GroupLayout::new(16).unwrap(), 1).unwrap();
    let mut table = Partition::new(&map, 0, KEYS as usize);
    for i in 0..KEYS {
        let key = i.to_le_bytes();
        let value = (i % 10 != 0).then_some(&[7u8; 64][..]);
        table.put_if_newer(key_hash(&key), &key, value, i + 1);
    }
    table
}

fn sweep(c: &mut Criterion) {
    let mut group = c.benchmark_group("tombstone_sweep");
    group.sample_size(10);
    group.throughput(Throughput::Elements(KEYS));
    group.bench_function("1M_keys_tenth_deleted_16_buckets_a_slice", |b| {
        b.iter_batched_ref(
            table,
            |table| {
                let (mut cursor, mut slices) = (0, 0u64);
                while table.tombstones() > 0 {
                    cursor = table.purge_tombstones_from(cursor, SLICE);
                    slices += 1;
                }
                slices
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, sweep);
criterion_main!(benches);
