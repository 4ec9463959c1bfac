//! Header parse + emit: what every packet costs before any key-value work.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dataplane::wire::{self, Flags, HeaderRepr, Op, Request, Status};

fn header_parse_emit(c: &mut Criterion) {
    let header = HeaderRepr {
        op: Op::Get,
        flags: Flags::default(),
        status: Status::Ok,
        shard: 0,
        seq: 1,
        key_hash: 0xC5FA_E977_BFC9_0C32,
        client: 7,
        oldest_gap: 0,
    };
    let mut request = [0u8; 64];
    let len =
        wire::emit_request(&header, &Request::Get { key: b"12345678" }, &mut request).unwrap();
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));
    group.bench_function("header_parse_emit", |b| {
        let mut out = [0u8; 64];
        b.iter(|| {
            let (parsed, body) = wire::parse_header(black_box(&request[..len])).unwrap();
            let reply = parsed.reply(Status::Ok);
            reply.emit(&mut wire::Header::new_unchecked(&mut out[..]));
            black_box((body.len(), &out));
        })
    });
    group.bench_function("get_request_parse", |b| {
        b.iter(|| {
            let (parsed, body) = wire::parse_header(black_box(&request[..len])).unwrap();
            black_box(Request::parse(&parsed, body).unwrap());
        })
    });
    group.finish();
}

/// The UDP checksum every DPDK send computes (a GET reply with a 64-byte value is ~100 bytes).
fn internet_checksum(c: &mut Criterion) {
    let datagram: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(31)).collect();
    let mut group = c.benchmark_group("checksum");
    group.throughput(Throughput::Elements(1));
    group.bench_function("udp_100B", |b| {
        b.iter(|| dataplane::wire::ipv4::checksum(black_box(&datagram), 0x1234))
    });
    group.finish();
}

criterion_group!(benches, header_parse_emit, internet_checksum);
criterion_main!(benches);
