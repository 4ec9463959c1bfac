//! The partition server: request semantics, dedup of retransmitted writes, and hostile
//! input counted and dropped.

use dataplane::port::AnswerInPlace;
use dataplane::wire::{
    self, Flags, HeaderRepr, KeyOp, MultiItem, MultiRequestItems, Op, Reply, Request, Status,
    StreamMessage,
};
use dataplane::Packet;
use kv::{key_hash, GroupLayout, PartitionMap};
use migration::PartitionServer;
use std::net::{Ipv4Addr, SocketAddrV4};

const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5000);
const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7100);

fn server(partitions: u32) -> (PartitionServer, PartitionMap) {
    let map = PartitionMap::new(GroupLayout::new(8).unwrap(), partitions).unwrap();
    (PartitionServer::new(&map, 0, &[3], 16), map)
}

fn header(op: Op, seq: u64, key: &[u8]) -> HeaderRepr {
    HeaderRepr {
        op,
        flags: Flags::default(),
        status: Status::Ok,
        shard: 3,
        seq,
        key_hash: key_hash(key),
        client: 9,
        oldest_gap: 0,
    }
}

fn packet(header: &HeaderRepr, request: &Request) -> Box<Packet> {
    let mut p = Packet::new_boxed();
    let len = wire::emit_request(header, request, p.buffer_mut()).unwrap();
    p.set_len(len);
    p.src = CLIENT;
    p.dst = SERVER;
    p
}

/// Sends one request; returns the reply's header and an owned copy of its body.
fn call(
    s: &mut PartitionServer,
    header: &HeaderRepr,
    request: &Request,
) -> Option<(HeaderRepr, Vec<u8>)> {
    let mut p = packet(header, request);
    if !s.handle(&mut p) {
        return None;
    }
    assert_eq!(
        (p.src, p.dst),
        (SERVER, CLIENT),
        "the reply goes back to the client"
    );
    let (h, body) = wire::parse_header(p.payload()).unwrap();
    Some((h, body.to_vec()))
}

fn get(s: &mut PartitionServer, seq: u64, key: &[u8]) -> (Status, Vec<u8>) {
    let (h, body) = call(s, &header(Op::Get, seq, key), &Request::Get { key }).unwrap();
    assert_eq!((h.op, h.seq), (Op::GetReply, seq));
    match Reply::parse(&h, &body).unwrap() {
        Reply::Get { value, .. } => (h.status, value.to_vec()),
        other => panic!("unexpected {other:?}"),
    }
}

/// A key owned by partition 0 of `map`.
fn key_in_partition_0(map: &PartitionMap, n: u32) -> Vec<u8> {
    (n..)
        .map(|i| format!("key{i}").into_bytes())
        .find(|k| map.partition_of(key_hash(k)) == 0)
        .unwrap()
}

#[test]
fn get_put_delete() {
    let (mut s, map) = server(1);
    let k = key_in_partition_0(&map, 0);
    assert_eq!(get(&mut s, 1, &k).0, Status::NotFound);
    let (h, _) = call(
        &mut s,
        &header(Op::Put, 2, &k),
        &Request::Put {
            key: &k,
            value: b"v1",
        },
    )
    .unwrap();
    assert_eq!((h.op, h.status), (Op::PutReply, Status::Ok));
    assert_eq!(get(&mut s, 3, &k), (Status::Ok, b"v1".to_vec()));
    let (h, _) = call(
        &mut s,
        &header(Op::Delete, 4, &k),
        &Request::Delete { key: &k },
    )
    .unwrap();
    assert_eq!(h.status, Status::Ok);
    assert_eq!(get(&mut s, 5, &k).0, Status::NotFound);
    let (h, _) = call(
        &mut s,
        &header(Op::Delete, 6, &k),
        &Request::Delete { key: &k },
    )
    .unwrap();
    assert_eq!(h.status, Status::NotFound, "deleting a missing key says so");
    assert_eq!(s.counters().gets, 3);
    let table = s.table(3).unwrap();
    assert_eq!(
        (table.len(), table.tombstones()),
        (0, 0),
        "an owner outside any migration keeps no tombstone"
    );
}

#[test]
fn a_retransmitted_write_is_applied_once_and_a_late_copy_never() {
    let (mut s, map) = server(1);
    let k = key_in_partition_0(&map, 0);
    let first = header(Op::Put, 10, &k);
    call(
        &mut s,
        &first,
        &Request::Put {
            key: &k,
            value: b"old",
        },
    )
    .unwrap();
    // Retransmission while the client still waits: answered, not applied again.
    let (h, _) = call(
        &mut s,
        &first,
        &Request::Put {
            key: &k,
            value: b"old",
        },
    )
    .unwrap();
    assert_eq!(h.status, Status::Ok);
    assert_eq!(s.counters().duplicate_writes, 1);
    // A newer write from the same client, whose floor has passed seq 10.
    let newer = HeaderRepr {
        oldest_gap: 0,
        ..header(Op::Put, 11, &k)
    };
    call(
        &mut s,
        &newer,
        &Request::Put {
            key: &k,
            value: b"new",
        },
    )
    .unwrap();
    // The late copy of seq 10 arrives after: dropped, and the newer value stays.
    assert!(call(
        &mut s,
        &first,
        &Request::Put {
            key: &k,
            value: b"old"
        }
    )
    .is_none());
    assert_eq!(s.counters().dropped_stale_write, 1);
    assert_eq!(get(&mut s, 12, &k).1, b"new");
}

/// A retransmitted DELETE is answered as its first copy was: NOT_FOUND if that found no
/// key (it was answered OK, version 0, which told the client the key had existed), OK if
/// it deleted one; a multi-key DELETE item the same.
#[test]
fn a_retransmitted_delete_is_answered_as_its_first_copy_was() {
    let (mut s, map) = server(1);
    let absent = key_in_partition_0(&map, 0);
    let present = key_in_partition_0(&map, 100);
    let put = header(Op::Put, 1, &present);
    call(
        &mut s,
        &put,
        &Request::Put {
            key: &present,
            value: b"v",
        },
    )
    .unwrap();
    for (seq, key, expected) in [(2, &absent, Status::NotFound), (3, &present, Status::Ok)] {
        let delete = HeaderRepr {
            oldest_gap: 1,
            ..header(Op::Delete, seq, key)
        };
        for copy in 0..2 {
            let (h, _) = call(&mut s, &delete, &Request::Delete { key }).unwrap();
            assert_eq!(h.status, expected, "seq {seq}, copy {copy}");
        }
    }
    assert_eq!(s.counters().duplicate_writes, 2);
    let multi = HeaderRepr {
        oldest_gap: 0,
        ..header(Op::MultiDelete, 4, &absent)
    };
    let items = [MultiItem {
        key_hash: key_hash(&absent),
        key: &absent,
        value: &[],
    }];
    let mut scratch = [0u8; 2048];
    let request =
        Request::Multi(MultiRequestItems::build(KeyOp::Delete, &items, &mut scratch).unwrap());
    for copy in 0..2 {
        let (h, body) = call(&mut s, &multi, &request).unwrap();
        let Reply::Multi(reply) = Reply::parse(&h, &body).unwrap() else {
            panic!("a multi-key reply");
        };
        let (_, item) = reply.iter().next().unwrap();
        assert_eq!(item.status, Status::NotFound, "copy {copy}");
    }
}

/// A request the switch steered here as to a migration's destination, for a shard this
/// partition owns but holds nothing of (its INIT has not arrived: a false positive of the
/// switch's filters), is asked again: read from the empty table it would be stale, and a
/// write taken here would make the INIT refused. Once the partition holds data, or for a
/// request not steered, it answers as the owner.
#[test]
fn a_partition_steered_to_before_its_init_answers_retry_later() {
    let (mut s, map) = server(1);
    let k = key_in_partition_0(&map, 0);
    let steered = |op, seq| HeaderRepr {
        flags: Flags::REDIRECTED,
        ..header(op, seq, &k)
    };
    let (h, _) = call(&mut s, &steered(Op::Get, 1), &Request::Get { key: &k }).unwrap();
    assert_eq!(h.status, Status::RetryLater);
    let put = Request::Put {
        key: &k,
        value: b"v",
    };
    let (h, _) = call(&mut s, &steered(Op::Put, 2), &put).unwrap();
    assert_eq!(h.status, Status::RetryLater);
    assert_eq!(s.entries(), 0, "nothing was written");
    assert_eq!(
        get(&mut s, 3, &k).0,
        Status::NotFound,
        "not steered: the owner answers"
    );
    let (h, _) = call(&mut s, &header(Op::Put, 4, &k), &put).unwrap();
    assert_eq!(h.status, Status::Ok);
    let (h, _) = call(&mut s, &steered(Op::Get, 5), &Request::Get { key: &k }).unwrap();
    assert_eq!(
        h.status,
        Status::Ok,
        "a partition holding data answers as the owner"
    );
    let delete = Request::Delete { key: &k };
    let (h, _) = call(&mut s, &header(Op::Delete, 6, &k), &delete).unwrap();
    assert_eq!(h.status, Status::Ok);
    assert_eq!(s.entries(), 0);
    let (h, _) = call(&mut s, &steered(Op::Get, 7), &Request::Get { key: &k }).unwrap();
    assert_eq!(
        h.status,
        Status::NotFound,
        "a partition whose keys were all deleted is empty, not waiting for an INIT"
    );
}

#[test]
fn wrong_partition_unknown_shard_and_bad_hash() {
    let (mut s, map) = server(2);
    let foreign = (0..)
        .map(|i| format!("key{i}").into_bytes())
        .find(|k| map.partition_of(key_hash(k)) == 1)
        .unwrap();
    let (h, _) = call(
        &mut s,
        &header(Op::Get, 1, &foreign),
        &Request::Get { key: &foreign },
    )
    .unwrap();
    assert_eq!(h.status, Status::Error);
    let mine = key_in_partition_0(&map, 0);
    let other_shard = HeaderRepr {
        shard: 4,
        ..header(Op::Get, 2, &mine)
    };
    assert_eq!(
        call(&mut s, &other_shard, &Request::Get { key: &mine })
            .unwrap()
            .0
            .status,
        Status::Error
    );
    let lying = HeaderRepr {
        key_hash: 1,
        ..header(Op::Get, 3, &mine)
    };
    assert!(call(&mut s, &lying, &Request::Get { key: &mine }).is_none());
    assert_eq!(s.counters().dropped_hash_mismatch, 1);
    assert_eq!(s.counters().error_replies, 2);
}

/// An entry no migration message could carry is refused, not stored (it would stop the
/// partition's migration later).
#[test]
fn writes_longer_than_an_entry_may_be_are_refused() {
    let (mut s, map) = server(1);
    let key = key_in_partition_0(&map, 0);
    let longest = vec![5u8; wire::MAX_ENTRY_LEN - key.len()];
    let put = |s: &mut PartitionServer, seq, value: &[u8]| {
        let request = Request::Put { key: &key, value };
        call(s, &header(Op::Put, seq, &key), &request)
            .unwrap()
            .0
            .status
    };
    assert_eq!(put(&mut s, 1, &longest), Status::Ok);
    let longer = vec![5u8; longest.len() + 1];
    assert_eq!(put(&mut s, 2, &longer), Status::Error);
    assert_eq!(s.counters().oversized_writes, 1);
    assert_eq!(
        get(&mut s, 3, &key).1,
        longest,
        "the refused write changed nothing"
    );
}

#[test]
fn malformed_datagrams_are_counted_and_dropped() {
    let (mut s, map) = server(1);
    let k = key_in_partition_0(&map, 0);
    let good = packet(&header(Op::Get, 1, &k), &Request::Get { key: &k });
    for cut in 0..good.len() {
        let mut p = good.duplicate();
        p.set_len(cut);
        assert!(!s.handle(&mut p));
    }
    let mut reply = good.duplicate();
    reply.buffer_mut()[3] = Op::GetReply as u8;
    assert!(!s.handle(&mut reply));
    assert_eq!(s.counters().dropped_malformed, good.len() as u64);
    assert_eq!(s.counters().dropped_not_request, 1);
    let mut fine = good.duplicate();
    assert!(s.handle(&mut fine), "the intact datagram is still served");
}

#[test]
fn multi_key_requests() {
    let (mut s, map) = server(1);
    let keys: Vec<Vec<u8>> = (0..8).map(|i| key_in_partition_0(&map, i * 100)).collect();
    let items: Vec<MultiItem> = keys
        .iter()
        .map(|k| MultiItem {
            key_hash: key_hash(k),
            key: k,
            value: k,
        })
        .collect();
    let mut scratch = [0u8; 2048];
    let put = Request::Multi(MultiRequestItems::build(KeyOp::Put, &items, &mut scratch).unwrap());
    let (h, body) = call(&mut s, &header(Op::MultiPut, 1, &keys[0]), &put).unwrap();
    assert_eq!((h.op, h.status), (Op::MultiPutReply, Status::Ok));
    let Reply::Multi(replies) = Reply::parse(&h, &body).unwrap() else {
        panic!()
    };
    assert!(replies.iter().all(|(_, r)| r.status == Status::Ok));
    let mut scratch = [0u8; 2048];
    let get = Request::Multi(MultiRequestItems::build(KeyOp::Get, &items, &mut scratch).unwrap());
    let (h, body) = call(&mut s, &header(Op::MultiGet, 2, &keys[0]), &get).unwrap();
    let Reply::Multi(replies) = Reply::parse(&h, &body).unwrap() else {
        panic!()
    };
    let values: Vec<Vec<u8>> = replies.iter().map(|(_, r)| r.value.to_vec()).collect();
    assert_eq!(values, keys, "each key was stored under itself");
    assert_eq!(s.counters().multi_keys, 16);
}

/// A server answers only the items a request selects, and a write item is applied at most
/// once whatever selections its retransmissions carry: its identity is `seq + index`.
#[test]
fn multi_key_selections_answer_and_apply_each_item_once() {
    let (mut s, map) = server(1);
    let keys: Vec<Vec<u8>> = (0..6).map(|i| key_in_partition_0(&map, i * 50)).collect();
    let items: Vec<MultiItem> = keys
        .iter()
        .map(|k| MultiItem {
            key_hash: key_hash(k),
            key: k,
            value: b"first",
        })
        .collect();
    let mut scratch = [0u8; 2048];
    let put = MultiRequestItems::build(KeyOp::Put, &items, &mut scratch).unwrap();
    let answered = |s: &mut PartitionServer, selection: u16, seq: u64| {
        let request = Request::Multi(put.select(selection, 0).unwrap());
        let (h, body) = call(s, &header(Op::MultiPut, seq, &keys[0]), &request).unwrap();
        let Reply::Multi(replies) = Reply::parse(&h, &body).unwrap() else {
            panic!("a multi-key reply")
        };
        assert_eq!(
            replies.answered(),
            selection,
            "only the selection is answered"
        );
        replies
            .iter()
            .map(|(i, r)| (i, r.status, r.version != 0))
            .collect::<Vec<_>>()
    };
    // Items 0, 2 and 4 first; then a retransmission selecting everything.
    let first = answered(&mut s, 0b010101, 10);
    assert!(first
        .iter()
        .all(|&(_, status, applied)| status == Status::Ok && applied));
    let again = answered(&mut s, 0b111111, 10);
    for (i, status, applied) in again {
        assert_eq!(status, Status::Ok);
        assert_eq!(applied, i % 2 == 1, "item {i} applied exactly once");
    }
    assert_eq!(s.counters().duplicate_writes, 3);
    // A newer write of key 1 is not undone by a late copy of the old request.
    let newer = Request::Put {
        key: &keys[1],
        value: b"newer",
    };
    let still_awaiting_10 = HeaderRepr {
        oldest_gap: 20,
        ..header(Op::Put, 30, &keys[1])
    };
    call(&mut s, &still_awaiting_10, &newer).unwrap();
    assert_eq!(answered(&mut s, 0b000010, 10), [(1, Status::Ok, false)]);
    assert_eq!(get(&mut s, 31, &keys[1]), (Status::Ok, b"newer".to_vec()));
}

/// The prefetching burst path answers exactly like one-at-a-time handling, for bursts of
/// every length mixing reads, writes and malformed datagrams.
#[test]
fn bursts_answer_like_single_requests() {
    let (mut single, map) = server(1);
    let (mut burst_server, _) = server(1);
    let keys: Vec<Vec<u8>> = (0..40).map(|i| key_in_partition_0(&map, i * 7)).collect();
    let mut seq = 0;
    for len in [1usize, 5, 31, 32, 33] {
        let mut packets: Vec<Box<Packet>> = (0..len)
            .map(|i| {
                seq += 1;
                let k = &keys[(i * 13 + len) % keys.len()];
                match i % 4 {
                    0 | 1 => packet(&header(Op::Get, seq, k), &Request::Get { key: k }),
                    2 => packet(
                        &header(Op::Put, seq, k),
                        &Request::Put {
                            key: k,
                            value: &seq.to_be_bytes(),
                        },
                    ),
                    _ => {
                        let mut p = packet(&header(Op::Get, seq, k), &Request::Get { key: k });
                        p.set_len(i % 30); // truncated
                        p
                    }
                }
            })
            .collect();
        let expected: Vec<Option<Vec<u8>>> = packets
            .iter()
            .map(|p| {
                let mut copy = p.duplicate();
                single.handle(&mut copy).then(|| copy.payload().to_vec())
            })
            .collect();
        let mut replies = Vec::new();
        burst_server.handle_burst(&mut packets, &mut replies);
        let got: Vec<Option<Vec<u8>>> = packets
            .iter()
            .zip(&replies)
            .map(|(p, &reply)| reply.then(|| p.payload().to_vec()))
            .collect();
        assert_eq!(got, expected, "burst of {len}");
    }
    assert_eq!(single.counters(), burst_server.counters());
}

/// Answering in place (what a DPDK port does with the burst it received) gives a plain GET
/// exactly the reply `handle` gives it, and leaves every other datagram untouched, to be
/// handled as a packet: writes, marked GETs, other shards, malformed input.
#[test]
fn answering_in_place_gives_plain_gets_the_reply_of_handle_and_leaves_the_rest() {
    let (mut reference, map) = server(1);
    let (mut in_place, _) = server(1);
    let keys: Vec<Vec<u8>> = (0..24).map(|i| key_in_partition_0(&map, i * 5)).collect();
    for s in [&mut reference, &mut in_place] {
        for (i, k) in keys.iter().enumerate().step_by(2) {
            let put = Request::Put {
                key: k,
                value: &[i as u8; 64],
            };
            call(s, &header(Op::Put, 1000 + i as u64, k), &put).unwrap();
        }
    }
    // Reads of keys no write in the burst touches (answering them first is a reordering),
    // half of them stored and half missing; writes of the others.
    let mut burst: Vec<(Box<Packet>, bool)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let seq = i as u64 + 1;
        let get = Request::Get { key: k };
        let (p, plain) = match i % 6 {
            0..=2 => (packet(&header(Op::Get, seq, k), &get), true),
            3 => (
                packet(
                    &header(Op::Put, seq, b"w"),
                    &Request::Put {
                        key: b"w",
                        value: b"v",
                    },
                ),
                false,
            ),
            4 => {
                let marked = HeaderRepr {
                    flags: Flags::REDIRECTED,
                    ..header(Op::Get, seq, k)
                };
                (packet(&marked, &get), false)
            }
            _ if i % 12 == 11 => {
                let mut p = packet(&header(Op::Get, seq, k), &get);
                let len = p.len();
                p.set_len(len - 1); // truncated key
                (p, false)
            }
            _ => {
                let other_shard = HeaderRepr {
                    shard: 4,
                    ..header(Op::Get, seq, k)
                };
                (packet(&other_shard, &get), false)
            }
        };
        burst.push((p, plain));
    }
    let payloads: Vec<Vec<u8>> = burst.iter().map(|(p, _)| p.payload().to_vec()).collect();
    let views: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    in_place.prepare(&views);
    for (mut p, plain) in burst {
        let mut expected = p.duplicate();
        let expected_reply = reference
            .handle(&mut expected)
            .then(|| expected.payload().to_vec());
        let request = p.payload().to_vec();
        let len = p.len();
        match in_place.answer(len, p.buffer_mut()) {
            Some(reply_len) => {
                assert!(plain, "only plain GETs are answered in place");
                assert_eq!(
                    Some(&p.buffer_mut()[..reply_len]),
                    expected_reply.as_deref()
                );
            }
            None => {
                assert!(!plain, "a plain GET is answered in place");
                assert_eq!(&p.buffer_mut()[..len], &request[..], "left untouched");
                let reply = in_place.handle(&mut p).then(|| p.payload().to_vec());
                assert_eq!(reply, expected_reply);
            }
        }
    }
    assert_eq!(reference.counters(), in_place.counters());
}

/// A reply that does not fit the buffer it would be built in (an mbuf smaller than usual)
/// is not answered in place, and the request is left as it was.
#[test]
fn a_reply_too_long_for_its_buffer_is_left_to_the_packet_path() {
    let (mut s, map) = server(1);
    let key = key_in_partition_0(&map, 1);
    call(
        &mut s,
        &header(Op::Put, 1, &key),
        &Request::Put {
            key: &key,
            value: &[7; 200],
        },
    )
    .unwrap();
    let p = packet(&header(Op::Get, 2, &key), &Request::Get { key: &key });
    let mut short = p.payload().to_vec();
    short.resize(p.len() + 50, 0);
    let before = short.clone();
    assert_eq!(s.answer(p.len(), &mut short), None);
    assert_eq!(short, before);
    assert_eq!(s.counters().gets, 0, "nothing counted");
    let mut room = p.payload().to_vec();
    room.resize(2048, 0);
    assert!(s.answer(p.len(), &mut room).is_some());
    assert_eq!(s.counters().gets, 1);
}

/// A migration stream message from a peer: `message` on stream `stream_id` for `shard`.
fn stream_packet(shard: u16, seq: u64, stream_id: u32, message: &StreamMessage) -> Box<Packet> {
    let header = HeaderRepr {
        op: message.op(),
        flags: Flags::default(),
        status: Status::Ok,
        shard,
        seq,
        key_hash: 0,
        client: stream_id,
        oldest_gap: 0,
    };
    let mut p = Packet::new_boxed();
    let len = wire::emit_with(&header, p.buffer_mut(), |body| message.emit(body)).unwrap();
    p.set_len(len);
    p.src = CLIENT;
    p.dst = SERVER;
    p
}

fn init(entries: u32, group_bits: u8, partitions: u16) -> StreamMessage<'static> {
    init_of(wire::Protocol::Rocksteady, entries, group_bits, partitions)
}

fn init_of(
    protocol: wire::Protocol,
    entries: u32,
    group_bits: u8,
    partitions: u16,
) -> StreamMessage<'static> {
    StreamMessage::Init {
        source_shard: 3,
        partitions,
        group_bits,
        entries,
        source_clock: 1,
        protocol,
        parallel_pulls: 4,
    }
}

/// Hostile but well-formed migration messages: an INIT announcing 2^32 − 1 entries is
/// taken without reserving room for them (the allocator used to abort the process), and
/// INITs for ever new shards stop adding shards at `MAX_SHARDS`, counted.
#[test]
fn hostile_inits_are_bounded() {
    let (mut s, _) = server(1);
    let mut p = stream_packet(40, 0, 1, &init(u32::MAX, 8, 1));
    assert!(s.handle(&mut p), "the INIT is acknowledged");
    let (ack, _) = wire::parse_header(p.payload()).unwrap();
    assert_eq!((ack.op, ack.status), (Op::MigrateInitAck, Status::Ok));
    for shard in 100..100 + migration::MAX_SHARDS as u16 {
        let mut p = stream_packet(shard, 0, 2, &init(10, 8, 1));
        s.handle(&mut p);
    }
    assert!(s.counters().dropped_too_many_shards > 0);
    assert!(s.role(100 + migration::MAX_SHARDS as u16 - 1).is_none());
}

/// An INIT whose group bits or partitions differ from the destination's is answered
/// `ERROR` and counted, and so is one into a partition that holds data of the shard.
#[test]
fn inits_that_do_not_fit_are_answered_error() {
    let (mut s, map) = server(1);
    for (shard, message) in [(40, init(10, 7, 1)), (41, init(10, 8, 2))] {
        let mut p = stream_packet(shard, 0, 1, &message);
        assert!(s.handle(&mut p));
        let (ack, _) = wire::parse_header(p.payload()).unwrap();
        assert_eq!(
            (ack.op, ack.status),
            (Op::MigrateInitAck, Status::Error),
            "shard {shard}"
        );
    }
    // Shard 3 holds a key.
    let key = key_in_partition_0(&map, 1);
    let put = Request::Put {
        key: &key,
        value: b"v",
    };
    call(&mut s, &header(Op::Put, 1, &key), &put).unwrap();
    let mut p = stream_packet(3, 0, 1, &init(10, 8, 1));
    assert!(s.handle(&mut p));
    let (ack, _) = wire::parse_header(p.payload()).unwrap();
    assert_eq!(ack.status, Status::Error);
    assert_eq!(s.counters().refused_inits, 3);
}

/// An ABORT that overtakes its migration's INIT (lost, or delayed) is answered `ERROR`
/// (nothing of it here); the INIT, when it comes late, is answered the same and starts
/// nothing. (It used to start the migration in: the destination then waited forever for
/// a source that had taken the shard back.)
#[test]
fn an_init_that_comes_after_its_abort_starts_nothing() {
    let (mut s, _) = server(1);
    let mut abort = stream_packet(40, 3, 7, &StreamMessage::Abort);
    assert!(s.handle(&mut abort));
    let (ack, _) = wire::parse_header(abort.payload()).unwrap();
    assert_eq!((ack.op, ack.status), (Op::MigrateAbortAck, Status::Error));
    let mut late = stream_packet(40, 0, 7, &init(10, 8, 1));
    assert!(s.handle(&mut late));
    let (ack, _) = wire::parse_header(late.payload()).unwrap();
    assert_eq!(ack.status, Status::Error, "the late INIT is refused");
    assert!(
        !matches!(s.role(40), Some(migration::Role::Incoming(_))),
        "nothing migrates in"
    );
    // A new migration of the same shard (another stream) is taken.
    let mut fresh = stream_packet(40, 0, 8, &init(10, 8, 1));
    assert!(s.handle(&mut fresh));
    assert!(matches!(s.role(40), Some(migration::Role::Incoming(_))));
}

/// NetMigrate destination: a plain read (not a double read of the switch's) of a key not
/// here yet, in a group handed over whose data is still coming, goes to the source, which
/// still has it; once the group is complete, a key that is not here is absent. (It used to
/// be answered NOT_FOUND at once: a stale read, found by `netmigrate simulate` in a
/// migration back to the origin, where clients still address the origin.)
#[test]
fn a_destination_does_not_answer_for_keys_still_coming() {
    let (mut s, map) = server(1);
    let key = key_in_partition_0(&map, 5);
    let group = map.layout().group_of(key_hash(&key));
    let mut init = stream_packet(3, 0, 9, &init_of(wire::Protocol::NetMigrate, 10, 8, 1));
    assert!(s.handle(&mut init));
    let start = StreamMessage::GroupStart {
        group,
        floor_clock: 1,
    };
    assert!(s.handle(&mut stream_packet(3, 1, 9, &start)));
    let reader = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 6000);
    let read = |s: &mut PartitionServer| {
        let mut p = packet(&header(Op::Get, 1, &key), &Request::Get { key: &key });
        p.src = reader;
        assert!(s.handle(&mut p));
        let (h, _) = wire::parse_header(p.payload()).unwrap();
        (p.dst, h.op, h.status)
    };
    assert_eq!(
        read(&mut s).0,
        CLIENT,
        "passed to the source (the stream's sender)"
    );
    let complete = StreamMessage::GroupComplete { group };
    assert!(s.handle(&mut stream_packet(3, 2, 9, &complete)));
    assert_eq!(read(&mut s), (reader, Op::GetReply, Status::NotFound));
}

/// A destination answers a DELETE only once it knows whether the key existed: NetMigrate
/// asks the client again while the key's group data is still coming; Rocksteady pulls the
/// key first (the request waits parked), as for a read. (It used to delete at once and
/// answer NOT_FOUND for a key that existed at the source: found by `netmigrate simulate`
/// once the checker held deletes to their answers.)
#[test]
fn a_destination_answers_a_delete_only_once_it_knows_the_key() {
    for protocol in [wire::Protocol::NetMigrate, wire::Protocol::Rocksteady] {
        let (mut s, map) = server(1);
        let key = key_in_partition_0(&map, 5);
        let group = map.layout().group_of(key_hash(&key));
        assert!(s.handle(&mut stream_packet(3, 0, 9, &init_of(protocol, 10, 8, 1))));
        if protocol == wire::Protocol::NetMigrate {
            // Handed over; its data still coming. (Rocksteady's groups come by pulls.)
            let start = StreamMessage::GroupStart {
                group,
                floor_clock: 1,
            };
            assert!(s.handle(&mut stream_packet(3, 1, 9, &start)));
        }
        let mut delete = packet(&header(Op::Delete, 1, &key), &Request::Delete { key: &key });
        let answered = s.handle(&mut delete);
        match protocol {
            wire::Protocol::NetMigrate => {
                let (h, _) = wire::parse_header(delete.payload()).unwrap();
                assert!(answered);
                assert_eq!((h.op, h.status), (Op::DeleteReply, Status::RetryLater));
            }
            _ => assert!(!answered, "{protocol:?}: parked until the key is pulled"),
        }
        assert!(
            matches!(
                s.table(3).unwrap().get(key_hash(&key), &key),
                kv::Lookup::Absent
            ),
            "{protocol:?}: nothing deleted yet"
        );
    }
}

/// A partition rebuilt from its log serves what it acknowledged, and a retransmission of a
/// write applied before the restart is answered as a repeat, not applied over a later one.
#[test]
fn a_partition_recovered_from_its_log_serves_what_it_acknowledged_once() {
    let (mut s, map) = server(1);
    s.enable_journal();
    let (a, b, gone) = (
        key_in_partition_0(&map, 0),
        key_in_partition_0(&map, 100),
        key_in_partition_0(&map, 200),
    );
    let put = |s: &mut PartitionServer, seq, key: &[u8], value: &[u8]| {
        let (h, _) = call(s, &header(Op::Put, seq, key), &Request::Put { key, value }).unwrap();
        assert_eq!(h.status, Status::Ok);
    };
    put(&mut s, 1, &a, b"a1");
    put(&mut s, 2, &a, b"a2");
    put(&mut s, 3, &b, b"b1");
    put(&mut s, 4, &gone, b"x");
    let delete = |s: &mut PartitionServer, seq, key: &[u8]| {
        call(s, &header(Op::Delete, seq, key), &Request::Delete { key })
            .unwrap()
            .0
            .status
    };
    assert_eq!(delete(&mut s, 5, &gone), Status::Ok);
    assert_eq!(delete(&mut s, 6, &gone), Status::NotFound);
    let mut log = s.take_journal();
    // A torn record at the end: the crash cut its write short.
    let whole = log.len();
    put(&mut s, 7, &b, b"b2");
    let torn = s.take_journal();
    log.extend_from_slice(&torn[..torn.len() - 3]);

    let (mut r, recovery) = PartitionServer::recover(&map, 0, 16, &log);
    assert_eq!(recovery.valid_len, whole, "{recovery:?}");
    assert_eq!(recovery.error, Some(migration::LogError::Truncated));
    assert_eq!((recovery.shards, recovery.orphans), (1, 0), "{recovery:?}");
    assert_eq!(get(&mut r, 10, &a), (Status::Ok, b"a2".to_vec()));
    assert_eq!(
        get(&mut r, 11, &b),
        (Status::Ok, b"b1".to_vec()),
        "seq 7 never became durable"
    );
    assert_eq!(get(&mut r, 12, &gone).0, Status::NotFound);
    // Late copies of writes applied before the crash.
    put(&mut r, 1, &a, b"a1");
    assert_eq!(
        get(&mut r, 13, &a),
        (Status::Ok, b"a2".to_vec()),
        "not applied again"
    );
    assert_eq!(
        delete(&mut r, 6, &gone),
        Status::NotFound,
        "answered as the first copy"
    );
    assert_eq!(r.counters().duplicate_writes, 2);
    // The recovered partition goes on recording: a second restart keeps both runs.
    put(&mut r, 20, &b, b"b3");
    log.truncate(recovery.valid_len);
    log.extend_from_slice(&r.take_journal());
    let (mut again, _) = PartitionServer::recover(&map, 0, 16, &log);
    assert_eq!(get(&mut again, 14, &b), (Status::Ok, b"b3".to_vec()));
    assert_eq!(get(&mut again, 15, &a), (Status::Ok, b"a2".to_vec()));
}

/// A snapshot (what a compacted log starts with) replays to the same partition: values,
/// deletes and the dedup windows that keep a late copy of a write from being applied.
#[test]
fn a_snapshot_replays_to_the_same_partition() {
    let (mut s, map) = server(1);
    s.enable_journal();
    let (a, gone) = (key_in_partition_0(&map, 0), key_in_partition_0(&map, 100));
    for (seq, key, value) in [(1, &a, &b"a1"[..]), (2, &a, b"a2"), (3, &gone, b"x")] {
        let request = Request::Put { key, value };
        assert_eq!(
            call(&mut s, &header(Op::Put, seq, key), &request)
                .unwrap()
                .0
                .status,
            Status::Ok
        );
    }
    let delete = Request::Delete { key: &gone };
    call(&mut s, &header(Op::Delete, 4, &gone), &delete).unwrap();
    let mut log = s.take_journal();
    log.extend_from_slice(&s.snapshot());
    let (mut r, recovery) = PartitionServer::recover(&map, 0, 16, &log);
    assert_eq!(recovery.error, None);
    assert_eq!(get(&mut r, 10, &a), (Status::Ok, b"a2".to_vec()));
    assert_eq!(get(&mut r, 11, &gone).0, Status::NotFound);
    let late = Request::Put {
        key: &a,
        value: b"a1",
    };
    // The window kept the client's floor (4): a copy from before it is dropped unanswered.
    assert!(call(&mut r, &header(Op::Put, 1, &a), &late).is_none());
    assert_eq!(
        get(&mut r, 12, &a),
        (Status::Ok, b"a2".to_vec()),
        "a repeat, not applied"
    );
    assert_eq!(r.snapshot(), s.snapshot(), "the same state");
}

/// A chain frame: `body` at stream `offset`, from `from` in `epoch`, to SERVER.
fn chain_frame(from: SocketAddrV4, epoch: u32, offset: u64, body: &[u8]) -> Box<Packet> {
    let header = HeaderRepr {
        op: Op::ChainAppend,
        flags: Flags::default(),
        status: Status::Ok,
        shard: 0,
        seq: offset,
        key_hash: 0,
        client: epoch,
        oldest_gap: 0,
    };
    let mut p = Packet::new_boxed();
    let len = wire::emit_with(&header, p.buffer_mut(), |out| {
        out[..body.len()].copy_from_slice(body);
        Ok(body.len())
    })
    .unwrap();
    p.set_len(len);
    (p.src, p.dst) = (from, SERVER);
    p
}

/// A middle replica takes its predecessor's frames in order, applies their records and
/// acknowledges what it holds; a frame from another epoch or sender, or whose records do
/// not parse, is counted and dropped with nothing applied.
#[test]
fn a_replica_applies_its_predecessors_frames_and_drops_anyone_elses() {
    use migration::chain::ChainConfig;
    use migration::journal::Record;
    let head = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 7100);
    let tail = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 8), 7100);
    let (mut server, _) = server(1);
    let config = ChainConfig {
        epoch: 4,
        members: vec![head, SERVER, tail],
        learner: None,
    };
    server.configure_chain(SERVER, config, 16);
    let mut records = Vec::new();
    Record::Put {
        shard: 3,
        client: 7,
        seq: 1,
        version: 1,
        key: b"k",
        value: b"v",
    }
    .emit(&mut records);

    for (from, epoch) in [(head, 3), (tail, 4)] {
        let mut stranger = chain_frame(from, epoch, 0, &records);
        assert!(!server.handle(&mut stranger));
    }
    let mut garbage = records.clone();
    garbage[10] ^= 0xFF;
    let mut corrupt = chain_frame(head, 4, 0, &garbage);
    assert!(!server.handle(&mut corrupt));
    assert_eq!(server.counters().dropped_chain, 3);
    assert_eq!(server.entries(), 0, "nothing of a dropped frame is applied");

    // The record in two frames: applied once whole, acknowledged in place.
    let (first, second) = records.split_at(5);
    let mut part = chain_frame(head, 4, 0, first);
    assert!(server.handle(&mut part));
    assert_eq!(server.entries(), 0);
    let mut rest = chain_frame(head, 4, 5, second);
    assert!(server.handle(&mut rest));
    let (ack, _) = wire::parse_header(rest.payload()).unwrap();
    assert_eq!(
        (ack.op, ack.seq, rest.dst),
        (Op::ChainAppendAck, records.len() as u64, head)
    );
    assert_eq!(server.entries(), 1);
    // A write at a follower is sent to the head.
    let mut put = packet(
        &header(Op::Put, 1, b"x"),
        &Request::Put {
            key: b"x",
            value: b"y",
        },
    );
    assert!(server.handle(&mut put));
    let (reply, _) = wire::parse_header(put.payload()).unwrap();
    assert_eq!(reply.status, Status::Moved);
}

#[test]
fn a_replica_holding_nothing_yet_asks_clients_to_retry_whatever_the_shard() {
    use migration::chain::ChainConfig;
    let head = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 7100);
    let (mut server, _) = server(1);
    let get_of_shard = |server: &mut PartitionServer, shard: u16| {
        let mut get = packet(
            &HeaderRepr {
                shard,
                ..header(Op::Get, 1, b"k")
            },
            &Request::Get { key: b"k" },
        );
        assert!(server.handle(&mut get));
        wire::parse_header(get.payload()).unwrap().0.status
    };
    // Not told its chain yet: it may become anyone's replica.
    server.await_chain(SERVER, 16);
    assert_eq!(get_of_shard(&mut server, 3), Status::RetryLater);
    assert_eq!(get_of_shard(&mut server, 9), Status::RetryLater);
    // A learner has dropped its shards until its snapshot comes: not ERROR either.
    let config = ChainConfig {
        epoch: 2,
        members: vec![head],
        learner: Some(SERVER),
    };
    server.configure_chain(SERVER, config, 16);
    assert_eq!(get_of_shard(&mut server, 3), Status::RetryLater);
}
