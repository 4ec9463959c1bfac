//! The key hash every request pays twice (client and server): ours against the crc crate's
//! slicing-by-16, which handles keys shorter than 16 bytes one byte at a time.

use crc::{Crc, Table, CRC_64_REDIS};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

static REFERENCE: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

fn key_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("key_hash");
    group.throughput(Throughput::Elements(1));
    for len in [8usize, 24, 64] {
        let key: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
        group.bench_function(format!("ours_{len}B"), |b| {
            b.iter(|| kv::key_hash(black_box(&key)))
        });
        group.bench_function(format!("crc_crate_{len}B"), |b| {
            b.iter(|| REFERENCE.checksum(black_box(&key)))
        });
    }
    group.finish();
}

criterion_group!(benches, key_hash);
criterion_main!(benches);
