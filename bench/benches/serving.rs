//! One core's serving cost, 8-byte keys and 64-byte values, zipf 0.99 (scrambled) over 10 M
//! keys: kv get/put, and the full request path (parse → lookup → build reply in place).
//!
//! For diagnosis, `NM_SERVING_RECORDS`, `NM_SERVING_DISTRIBUTION` (zipfian, uniform, ...),
//! `NM_SERVING_BURST` and `NM_SERVING_SAMPLES` change the key count, the key distribution, the
//! burst size and how many precomputed requests are cycled through. The default 65 536 come
//! back every pass, but with a last-level cache of a few MB their cold keys do not stay
//! cached: timed in alternation, a stream of 1 M requests cost the same per request.

use bench::workload::{KeyChooser, WorkloadSpec};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::port::AnswerInPlace;
use dataplane::wire::{self, Flags, HeaderRepr, Request, Status};
use dataplane::Packet;
use kv::{key_hash, GroupLayout, PartitionMap};
use migration::PartitionServer;

/// The allocator the `netmigrate` binary uses, so entries are laid out as in the server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: u64 = 10_000_000;
/// Precomputed operations cycled through by default.
const SAMPLES_DEFAULT: usize = 1 << 16;
const BURST: usize = 32;

/// `NM_SERVING_<name>` parsed, or `default` when unset.
fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(format!("NM_SERVING_{name}")) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("NM_SERVING_{name}={text} does not parse")),
        Err(_) => default,
    }
}

struct Setup {
    server: PartitionServer,
    keys: Vec<[u8; 8]>,
    hashes: Vec<u64>,
    gets: Vec<Vec<u8>>,
    puts: Vec<Vec<u8>>,
}

fn setup() -> Setup {
    let samples = knob("SAMPLES", SAMPLES_DEFAULT);
    let mut spec = WorkloadSpec::builtin("c").unwrap();
    let records = knob("RECORDS", RECORDS);
    spec.record_count = records;
    if let Ok(name) = std::env::var("NM_SERVING_DISTRIBUTION") {
        spec.distribution = bench::workload::Distribution::from_name(&name)
            .unwrap_or_else(|| panic!("NM_SERVING_DISTRIBUTION={name} is not a distribution"));
    }
    let map = PartitionMap::new(GroupLayout::new(16).unwrap(), 1).unwrap();
    let mut server = PartitionServer::new(&map, 0, &[0], records as usize);
    let table = server.table_mut(0).unwrap();
    let value = [7u8; 64];
    let mut key = [0u8; 8];
    for record in 0..records {
        spec.key_of(record, &mut key);
        table.put(key_hash(&key), &key, &value);
    }
    let mut chooser = KeyChooser::new(&spec, 1);
    let mut keys = Vec::with_capacity(samples);
    for _ in 0..samples {
        spec.key_of(chooser.next_record(records), &mut key);
        keys.push(key);
    }
    let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
    let datagram = |i: usize, request: Request| {
        let header = HeaderRepr {
            op: request.op(),
            flags: Flags::default(),
            status: Status::Ok,
            shard: 0,
            seq: i as u64 + 1,
            key_hash: hashes[i],
            client: 1,
            oldest_gap: 0,
        };
        let mut buf = [0u8; 256];
        let len = wire::emit_request(&header, &request, &mut buf).unwrap();
        buf[..len].to_vec()
    };
    let gets = (0..samples)
        .map(|i| datagram(i, Request::Get { key: &keys[i] }))
        .collect();
    let puts = (0..samples)
        .map(|i| {
            datagram(
                i,
                Request::Put {
                    key: &keys[i],
                    value: &value,
                },
            )
        })
        .collect();
    Setup {
        server,
        keys,
        hashes,
        gets,
        puts,
    }
}

fn serving(c: &mut Criterion) {
    let mut s = setup();
    let samples = s.keys.len();
    let mut group = c.benchmark_group("serving_10M_zipf099");
    group.throughput(Throughput::Elements(samples as u64));
    group.sample_size(20);

    group.bench_function("kv_get", |b| {
        let table = s.server.table(0).unwrap();
        b.iter(|| {
            for i in 0..samples {
                black_box(table.get(s.hashes[i], &s.keys[i]));
            }
        })
    });
    group.bench_function("kv_put", |b| {
        let value = [9u8; 64];
        b.iter(|| {
            let table = s.server.table_mut(0).unwrap();
            for i in 0..samples {
                black_box(table.put(s.hashes[i], &s.keys[i], &value));
            }
        })
    });
    // The NIC would have written the request into the buffer; copying it in stands for that.
    let mut packet = Packet::new_boxed();
    group.bench_function("request_path_get", |b| {
        b.iter(|| {
            for request in &s.gets {
                packet.buffer_mut()[..request.len()].copy_from_slice(request);
                packet.set_len(request.len());
                black_box(s.server.handle(&mut packet));
            }
        })
    });
    // As the server loop runs it: bursts of 32, prefetched.
    let burst_size = knob("BURST", BURST);
    let mut burst: Vec<Box<Packet>> = (0..burst_size).map(|_| Packet::new_boxed()).collect();
    let mut replies = Vec::with_capacity(burst_size);
    group.bench_function("request_path_get_burst32", |b| {
        b.iter(|| {
            for requests in s.gets.chunks(burst_size) {
                for (packet, request) in burst.iter_mut().zip(requests) {
                    packet.buffer_mut()[..request.len()].copy_from_slice(request);
                    packet.set_len(request.len());
                }
                s.server.handle_burst(&mut burst, &mut replies);
                black_box(&replies);
            }
        })
    });
    // As a DPDK server answers plain GETs: in the receive buffers, a port burst (32) at a
    // time, after showing the burst to `prepare` (`Port::recv_answering`).
    let mut buffers = vec![[0u8; 2048]; BURST];
    group.bench_function("request_path_get_in_place32", |b| {
        b.iter(|| {
            for requests in s.gets.chunks(BURST) {
                for (buffer, request) in buffers.iter_mut().zip(requests) {
                    buffer[..request.len()].copy_from_slice(request);
                }
                let mut payloads: [&[u8]; BURST] = [&[]; BURST];
                for ((payload, buffer), request) in payloads.iter_mut().zip(&buffers).zip(requests)
                {
                    *payload = &buffer[..request.len()];
                }
                s.server.prepare(&payloads[..requests.len()]);
                for (buffer, request) in buffers.iter_mut().zip(requests) {
                    black_box(s.server.answer(request.len(), buffer));
                }
            }
        })
    });
    // Writes carry fresh sequence numbers per pass so the dedup admits them.
    let mut pass = 0u64;
    group.bench_function("request_path_put", |b| {
        b.iter_batched(
            || {
                pass += 1;
                pass * samples as u64
            },
            |base| {
                for (i, request) in s.puts.iter().enumerate() {
                    packet.buffer_mut()[..request.len()].copy_from_slice(request);
                    packet.buffer_mut()[8..16].copy_from_slice(&(base + i as u64).to_be_bytes());
                    packet.set_len(request.len());
                    black_box(s.server.handle(&mut packet));
                }
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, serving);
criterion_main!(benches);
