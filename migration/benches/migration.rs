//! The migration path alone, one core each side, no network: a source partition scans its
//! groups and encodes what it sends into stream batches (`outgoing::encode_group`, as every
//! protocol that ships groups does), and a destination decodes the batches and applies them
//! (`Incoming::apply`: `put_if_newer` and the journal, off here as without `--log-dir`).
//! 10 M entries of 8-byte keys and 64-byte values, and 16-byte keys with 1-KiB values (1 M:
//! the same bytes would need 10 GB twice over). Throughput is keys and values moved.
//!
//! `NM_MIGRATION_RECORDS` changes the entry count. `NM_MIGRATION_ONCE=source|destination`
//! runs one pass of that side and exits, without criterion, for callgrind
//! (`scripts/bench-instructions.sh migration`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::wire::StreamMessage;
use kv::{key_hash, GroupLayout, Partition, PartitionMap};
use migration::outgoing::{encode_group, Batch};
use migration::{Incoming, Journal, WriteDedup};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// The allocator the `netmigrate` binary uses, so entries are laid out as in the server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Groups of the migrating partition, as the serving bench and the artifact use.
const GROUP_BITS: u8 = 16;
const SHARD: u16 = 1;

/// Entry sizes measured: key bytes, value bytes, entries by default.
const SHAPES: [(usize, usize, u64); 2] = [(8, 64, 10_000_000), (16, 1024, 1_000_000)];

fn map() -> PartitionMap {
    PartitionMap::new(GroupLayout::new(GROUP_BITS).expect("group bits"), 1).expect("map")
}

/// `NM_MIGRATION_RECORDS`, or `default`.
fn records(default: u64) -> u64 {
    match std::env::var("NM_MIGRATION_RECORDS") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("NM_MIGRATION_RECORDS={text} is not a count")),
        Err(_) => default,
    }
}

/// The key of entry `i`: its number, big-endian, padded to `len` bytes.
fn key(i: u64, len: usize) -> Vec<u8> {
    let mut key = vec![0u8; len];
    key[len - 8..].copy_from_slice(&i.to_be_bytes());
    key
}

/// A source partition holding `records` entries of the given shape.
fn source_table(key_len: usize, value_len: usize, records: u64) -> Partition {
    let mut table = Partition::new(&map(), 0, records as usize);
    let value = vec![0x5Au8; value_len];
    for i in 0..records {
        let key = key(i, key_len);
        table.put(key_hash(&key), &key, &value);
    }
    table
}

/// The source's side: every group scanned and encoded into batches of one frame each, each
/// handed to `send` (the bench drops it, as a stream frees a batch once it is acknowledged).
#[inline(never)]
fn pass_source(table: &Partition, mut send: impl FnMut(u32, Batch)) {
    for group in map().groups_of(0) {
        for batch in encode_group(table, group) {
            send(group, batch);
        }
    }
}

/// Every batch the source sends, kept (the destination's input).
fn sent_by(table: &Partition) -> Vec<(u32, Batch)> {
    let mut sent = Vec::new();
    pass_source(table, |group, batch| sent.push((group, batch)));
    sent
}

/// The destination's side: every batch decoded and applied to `table`, as its stream
/// messages are.
#[inline(never)]
fn pass_destination(sent: &[(u32, Batch)], table: &mut Partition) {
    let source = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7100);
    let map = map();
    let mut incoming = Incoming::new(source, SHARD, 1, &map, 0);
    let (mut dedup, mut journal, mut out) = (WriteDedup::default(), Journal::default(), Vec::new());
    for (group, (count, _, items)) in sent {
        let message = StreamMessage::Data {
            group: *group,
            count: *count,
            items,
        };
        let layout = map.layout();
        incoming.apply(
            &message,
            table,
            &mut dedup,
            &mut journal,
            layout,
            SHARD,
            &mut out,
        );
    }
    assert_eq!(incoming.stats().rejected, 0, "every entry belongs here");
}

/// Entries and key+value bytes the batches carry.
fn carried(sent: &[(u32, Batch)]) -> (u64, u64) {
    sent.iter().fold((0, 0), |(n, b), (_, (count, bytes, _))| {
        (n + u64::from(*count), b + bytes)
    })
}

fn migration(c: &mut Criterion) {
    if let Ok(side) = std::env::var("NM_MIGRATION_ONCE") {
        return once(&side);
    }
    for (key_len, value_len, default) in SHAPES {
        let records = records(default);
        let table = source_table(key_len, value_len, records);
        let sent = sent_by(&table);
        let (entries, bytes) = carried(&sent);
        assert_eq!(entries, records, "every entry is sent once");
        let mut group = c.benchmark_group(format!("migration_{key_len}B_keys_{value_len}B_values"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(20))
            .throughput(Throughput::Bytes(bytes));
        group.bench_function(format!("source_scan_encode_{records}"), |b| {
            b.iter(|| {
                pass_source(&table, |_, batch| {
                    black_box(batch);
                })
            })
        });
        group.bench_function(format!("destination_decode_apply_{records}"), |b| {
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    // A table sized as INIT sizes it, made outside the timing.
                    let mut table = Partition::new(&map(), 0, records as usize);
                    let start = Instant::now();
                    pass_destination(&sent, &mut table);
                    spent += start.elapsed();
                    assert_eq!(table.len() as u64, records);
                }
                spent
            })
        });
        group.finish();
    }
}

/// One pass of one side for callgrind: its instructions over the entries, printed.
fn once(side: &str) {
    let (key_len, value_len, default) = SHAPES[0];
    let records = records(default);
    let table = source_table(key_len, value_len, records);
    match side {
        "source" => pass_source(&table, |_, batch| {
            black_box(batch);
        }),
        "destination" => {
            let sent = sent_by(&table);
            let mut destination = Partition::new(&map(), 0, records as usize);
            pass_destination(&sent, &mut destination);
        }
        other => panic!("NM_MIGRATION_ONCE={other}: source or destination"),
    }
    println!("entries={records}");
}

criterion_group!(benches, migration);
criterion_main!(benches);
