//! Wire format: test vectors (also in docs/wire.md), round trips, and hostile input.

use dataplane::wire::{
    self, Flags, HeaderRepr, KeyOp, LateWrite, MigratedItem, MultiItem, MultiReplyWriter,
    MultiRequestItems, Op, Reply, ReplyItem, Request, Status, StreamMessage, WireError, HEADER_LEN,
    MAX_PAYLOAD,
};
use proptest::prelude::*;

fn header(op: Op) -> HeaderRepr {
    HeaderRepr {
        op,
        flags: Flags::default(),
        status: Status::Ok,
        shard: 0,
        seq: 1,
        key_hash: 0xC5FA_E977_BFC9_0C32, // CRC-64/Jones of "abcd"
        client: 0x0102_0304,
        oldest_gap: 0,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn get_request_vector() {
    let mut buf = [0u8; 64];
    let len =
        wire::emit_request(&header(Op::Get), &Request::Get { key: b"abcd" }, &mut buf).unwrap();
    assert_eq!(
        hex(&buf[..len]),
        "4e 4d 01 01 00 00 00 00 00 00 00 00 00 00 00 01 c5 fa e9 77 bf c9 0c 32 \
         01 02 03 04 00 00 00 00 04 61 62 63 64"
    );
}

#[test]
fn put_request_and_get_reply_vectors() {
    let mut buf = [0u8; 64];
    let len = wire::emit_request(
        &header(Op::Put),
        &Request::Put {
            key: b"abcd",
            value: b"xy",
        },
        &mut buf,
    )
    .unwrap();
    assert_eq!(hex(&buf[HEADER_LEN..len]), "04 00 02 61 62 63 64 78 79");
    let reply_header = HeaderRepr {
        flags: Flags::FROM_DESTINATION,
        ..header(Op::Get).reply(Status::Ok)
    };
    let len = wire::emit_reply(
        &reply_header,
        &Reply::Get {
            version: 7,
            value: b"xy",
        },
        &mut buf,
    )
    .unwrap();
    assert_eq!(
        hex(&buf[..len]),
        "4e 4d 01 81 01 00 00 00 00 00 00 00 00 00 00 01 c5 fa e9 77 bf c9 0c 32 \
         01 02 03 04 00 00 00 00 00 00 00 00 00 00 00 07 00 02 78 79"
    );
}

#[test]
fn rejects_hostile_headers_with_typed_errors() {
    let mut buf = [0u8; 64];
    let len =
        wire::emit_request(&header(Op::Get), &Request::Get { key: b"abcd" }, &mut buf).unwrap();
    let parse = |bytes: &[u8]| {
        wire::parse_header(bytes).and_then(|(h, body)| Request::parse(&h, body).map(|_| ()))
    };
    assert_eq!(parse(&buf[..len]), Ok(()));
    assert_eq!(parse(&buf[..10]), Err(WireError::Truncated));
    assert_eq!(parse(&buf[..len - 1]), Err(WireError::Truncated));
    assert_eq!(parse(&buf[..len + 1]), Err(WireError::TrailingBytes));
    let mut bad = buf;
    bad[0] = 0;
    assert_eq!(parse(&bad[..len]), Err(WireError::BadMagic));
    let mut bad = buf;
    bad[2] = 9;
    assert_eq!(parse(&bad[..len]), Err(WireError::BadVersion(9)));
    let mut bad = buf;
    bad[3] = 0x53;
    assert_eq!(parse(&bad[..len]), Err(WireError::UnknownOp(0x53)));
    let mut bad = buf;
    bad[3] = 0x10; // A migration op where a key-value request belongs.
    assert_eq!(parse(&bad[..len]), Err(WireError::UnexpectedOp(0x10)));
    let mut bad = buf;
    bad[5] = 77;
    assert_eq!(parse(&bad[..len]), Err(WireError::UnknownStatus(77)));
    let mut bad = buf;
    bad[HEADER_LEN] = 0;
    assert_eq!(parse(&bad[..HEADER_LEN + 1]), Err(WireError::BadKeyLength));
    assert_eq!(parse(&vec![0u8; MAX_PAYLOAD + 1]), Err(WireError::TooLong));
}

#[test]
fn emit_refuses_what_does_not_fit() {
    let mut buf = [0u8; 2048];
    let long_key = [1u8; 256];
    assert_eq!(
        wire::emit_request(&header(Op::Get), &Request::Get { key: &long_key }, &mut buf),
        Err(WireError::BadKeyLength)
    );
    let value = vec![0u8; MAX_PAYLOAD];
    assert_eq!(
        wire::emit_request(
            &header(Op::Put),
            &Request::Put {
                key: b"k",
                value: &value
            },
            &mut buf
        ),
        Err(WireError::TooLong)
    );
    let fits = vec![0u8; wire::MAX_VALUE_LEN];
    assert!(wire::emit_request(
        &header(Op::Put),
        &Request::Put {
            key: b"k",
            value: &fits
        },
        &mut buf
    )
    .is_ok());
}

/// The longest entry a server stores travels in every migration message that carries one.
#[test]
fn the_longest_stored_entry_fits_every_migration_message() {
    let key = [7u8; 255];
    let value = vec![1u8; wire::MAX_ENTRY_LEN - key.len()];
    let mut buf = [0u8; MAX_PAYLOAD];
    let late = StreamMessage::LateWrite(LateWrite {
        reply_to: std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 1),
        client: 1,
        seq: 2,
        oldest_gap: 0,
        key_hash: 3,
        key: &key,
        value: Some(&value),
    });
    assert!(wire::emit_with(&header(late.op()), &mut buf, |b| late.emit(b)).is_ok());
    let item = MigratedItem {
        key: &key,
        value: Some(&value),
        version: 1,
    };
    let mut items = Vec::new();
    let bulk_room = MAX_PAYLOAD - wire::HEADER_LEN - wire::BULK_REPLY_FIXED;
    assert!(
        wire::push_item(&mut items, bulk_room, &item),
        "a bulk-pull answer"
    );
    let longer = vec![1u8; value.len() + 1];
    let mut buf = [0u8; MAX_PAYLOAD];
    let late = StreamMessage::LateWrite(LateWrite {
        value: Some(&longer),
        ..match late {
            StreamMessage::LateWrite(l) => l,
            _ => unreachable!(),
        }
    });
    assert_eq!(
        wire::emit_with(&header(late.op()), &mut buf, |b| late.emit(b)),
        Err(WireError::TooLong),
        "MAX_ENTRY_LEN is the tightest bound"
    );
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..=255)
}

fn key_op() -> impl Strategy<Value = KeyOp> {
    prop_oneof![Just(KeyOp::Get), Just(KeyOp::Put), Just(KeyOp::Delete)]
}

proptest! {
    #[test]
    fn single_key_requests_round_trip(k in key(), v in proptest::collection::vec(any::<u8>(), 0..1000),
                                      op in key_op(), seq: u64, hash: u64, client: u32, gap: u32, shard: u16) {
        let h = HeaderRepr { op: op.single_op(), seq, key_hash: hash, client, oldest_gap: gap, shard, ..header(Op::Get) };
        let request = match op {
            KeyOp::Get => Request::Get { key: &k },
            KeyOp::Put => Request::Put { key: &k, value: &v },
            KeyOp::Delete => Request::Delete { key: &k },
        };
        let mut buf = [0u8; 2048];
        match wire::emit_request(&h, &request, &mut buf) {
            Ok(len) => {
                let (parsed_h, body) = wire::parse_header(&buf[..len]).unwrap();
                prop_assert_eq!(parsed_h, h);
                prop_assert_eq!(Request::parse(&parsed_h, body).unwrap(), request);
            }
            Err(e) => {
                prop_assert_eq!(e, WireError::TooLong);
                prop_assert!(HEADER_LEN + 3 + k.len() + v.len() > MAX_PAYLOAD);
            }
        }
    }

    #[test]
    fn multi_key_requests_and_replies_round_trip(
        op in key_op(),
        items in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 1..20),
                                            proptest::collection::vec(any::<u8>(), 0..40)), 1..=16),
        serve_bits: u16, halves_bits: u16, deferred_bits: u16) {
        let multi: Vec<MultiItem> = items.iter().map(|(h, k, v)| MultiItem {
            key_hash: *h, key: k, value: if op == KeyOp::Put { v } else { &[] } }).collect();
        let mut scratch = [0u8; 2048];
        let view = MultiRequestItems::build(op, &multi, &mut scratch).unwrap();
        prop_assert_eq!(view.serve(), wire::all_items(multi.len()));
        // Any non-empty selection of the items, with halves among the selected.
        let serve = (serve_bits & wire::all_items(multi.len())).max(1);
        let halves = halves_bits & serve;
        let view = view.select(serve, halves).unwrap();
        let request = Request::Multi(view);
        let h = HeaderRepr { op: op.multi_op(), ..header(Op::Get) };
        let mut buf = [0u8; 2048];
        let len = wire::emit_request(&h, &request, &mut buf).unwrap();
        prop_assert_eq!(u16::from_be_bytes([buf[wire::MULTI_SERVE_AT], buf[wire::MULTI_SERVE_AT + 1]]), serve);
        prop_assert_eq!(u16::from_be_bytes([buf[wire::MULTI_HALVES_AT], buf[wire::MULTI_HALVES_AT + 1]]), halves);
        let (parsed_h, body) = wire::parse_header(&buf[..len]).unwrap();
        let Request::Multi(parsed) = Request::parse(&parsed_h, body).unwrap() else { panic!("not multi") };
        prop_assert_eq!(parsed.iter().collect::<Vec<_>>(), multi.clone());
        prop_assert_eq!((parsed.serve(), parsed.halves()), (serve, halves));
        let selected: Vec<usize> = parsed.selected().map(|(i, _)| i).collect();
        prop_assert_eq!(selected.len(), serve.count_ones() as usize);
        prop_assert!(selected.iter().all(|&i| serve & (1 << i) != 0));

        // The reply answers the selection, in index order.
        let mut reply_body = [0u8; 2048];
        let mut writer = MultiReplyWriter::new(op, &mut reply_body).unwrap();
        let replies: Vec<(usize, ReplyItem)> = parsed.selected().map(|(i, m)| (i, ReplyItem {
            status: if i % 2 == 0 { Status::Ok } else { Status::NotFound },
            version: i as u64 * 3,
            value: if op == KeyOp::Get { m.key } else { &[] },
        })).collect();
        for (i, r) in &replies { writer.push(*i, *r).unwrap(); }
        let body_len = writer.finish(halves, deferred_bits).unwrap();
        let rh = h.reply(Status::Ok);
        let Reply::Multi(parsed) = Reply::parse(&rh, &reply_body[..body_len]).unwrap() else { panic!("not multi") };
        prop_assert_eq!(parsed.iter().collect::<Vec<_>>(), replies);
        prop_assert_eq!((parsed.answered(), parsed.halves(), parsed.deferred()),
                        (serve, halves, deferred_bits & halves));
    }

    /// Masks that select nothing, an item beyond the count, or an unselected half are refused.
    #[test]
    fn bad_multi_key_selections_are_refused(count in 1usize..=16, serve: u16, halves: u16) {
        let keys: Vec<Vec<u8>> = (0..count).map(|i| vec![b'k', i as u8]).collect();
        let multi: Vec<MultiItem> = keys.iter().map(|k| MultiItem { key_hash: 7, key: k, value: &[] }).collect();
        let mut scratch = [0u8; 2048];
        let view = MultiRequestItems::build(KeyOp::Get, &multi, &mut scratch).unwrap();
        let valid = serve != 0 && serve & !wire::all_items(count) == 0 && halves & !serve == 0;
        let h = HeaderRepr { op: Op::MultiGet, ..header(Op::Get) };
        let mut buf = [0u8; 2048];
        let len = wire::emit_request(&h, &Request::Multi(view), &mut buf).unwrap();
        buf[wire::MULTI_SERVE_AT..wire::MULTI_SERVE_AT + 2].copy_from_slice(&serve.to_be_bytes());
        buf[wire::MULTI_HALVES_AT..wire::MULTI_HALVES_AT + 2].copy_from_slice(&halves.to_be_bytes());
        let (parsed_h, body) = wire::parse_header(&buf[..len]).unwrap();
        let parsed = Request::parse(&parsed_h, body);
        prop_assert_eq!(view.select(serve, halves).is_ok(), valid);
        if valid {
            prop_assert!(parsed.is_ok());
        } else {
            prop_assert_eq!(parsed.unwrap_err(), WireError::BadSelection);
        }
    }

    /// Any byte string either parses or yields a typed error; nothing panics.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600), fix_magic: bool) {
        let mut bytes = bytes;
        if fix_magic && bytes.len() >= 4 {
            bytes[0] = 0x4E; bytes[1] = 0x4D; bytes[2] = 1;
            bytes[3] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x81, 0x84, 0x85][bytes[3] as usize % 9];
        }
        if let Ok((h, body)) = wire::parse_header(&bytes) {
            if h.op.is_reply() {
                if let Ok(Reply::Multi(items)) = Reply::parse(&h, body) { let _ = items.iter().count(); }
            } else if let Ok(Request::Multi(items)) = Request::parse(&h, body) {
                prop_assert_eq!(items.iter().count(), items.len());
            }
        }
    }
}

proptest! {
    /// The in-place GET path agrees with the general one: it takes a datagram exactly when
    /// the general parse finds a GET with no flags and status OK, reads the same fields, and
    /// writes the same reply bytes. Datagrams are GETs with one field or length disturbed.
    #[test]
    fn the_plain_get_path_agrees_with_the_general_path(
        k in key(), seq: u64, hash: u64, client: u32, gap: u32, shard: u16,
        disturb in 0usize..10, at: usize, byte: u8, cut in 0usize..3,
        found: bool, version: u64, value in proptest::collection::vec(any::<u8>(), 0..1500),
    ) {
        let h = HeaderRepr { seq, key_hash: hash, client, oldest_gap: gap, shard, ..header(Op::Get) };
        let mut datagram = vec![0u8; MAX_PAYLOAD + 64];
        let mut len = wire::emit_request(&h, &Request::Get { key: &k }, &mut datagram).unwrap();
        match disturb {
            0..=3 => datagram[at % 6] = byte, // magic, version, op, flags, status
            4 => datagram[HEADER_LEN] = byte, // key length
            5 => len = at % len, // truncated, also inside the header
            6 => len += cut, // trailing bytes
            7 => len = MAX_PAYLOAD + 1 + cut, // too long
            _ => {} // untouched
        }
        let general = wire::parse_header(&datagram[..len]).ok().and_then(|(header, body)| {
            let plain = header.op == Op::Get && header.flags == Flags::default()
                && header.status == Status::Ok;
            match Request::parse(&header, body) {
                Ok(Request::Get { key }) if plain => Some((header, key.to_vec())),
                _ => None,
            }
        });
        let fast = wire::parse_plain_get(&datagram[..len]);
        prop_assert_eq!(fast.is_some(), general.is_some());
        let (Some(fast), Some((header, key))) = (fast, general) else { return Ok(()) };
        prop_assert_eq!(fast.shard, header.shard);
        prop_assert_eq!(fast.key_hash, header.key_hash);
        prop_assert_eq!(&datagram[fast.key.clone()], &key[..]);

        let (status, value) = if found { (Status::Ok, &value[..]) } else { (Status::NotFound, &[][..]) };
        let mut expected = datagram.clone();
        let expected_len = wire::emit_reply(&header.reply(status), &Reply::Get { version, value }, &mut expected);
        let got_len = wire::emit_plain_get_reply(&mut datagram, status, version, value);
        prop_assert_eq!(got_len, expected_len);
        if let Ok(reply_len) = got_len {
            prop_assert_eq!(&datagram[..reply_len], &expected[..reply_len]);
        }
    }
}

proptest! {
    /// The client's reading of an unmarked GET reply agrees with the general parse: it takes a
    /// datagram exactly when `parse_header` + `Reply::parse` find a GET reply with no flags and
    /// status OK or NOT_FOUND, and reads the same status, seq, client and value.
    #[test]
    fn the_plain_get_reply_path_agrees_with_the_general_path(
        seq: u64, client: u32, version: u64, value in proptest::collection::vec(any::<u8>(), 0..1500),
        status_code in 0u8..6, disturb in 0usize..9, at: usize, byte: u8, cut in 0usize..3,
    ) {
        let h = HeaderRepr { seq, client, ..header(Op::Get) };
        let status = Status::from_u8(status_code.min(4)).unwrap();
        let mut datagram = vec![0u8; MAX_PAYLOAD + 64];
        let Ok(mut len) = wire::emit_reply(&h.reply(status), &Reply::Get { version, value: &value }, &mut datagram)
            else { return Ok(()) }; // too long for a frame
        match disturb {
            0..=2 => datagram[at % 6] = byte, // magic, version, op, flags, status
            3 => datagram[HEADER_LEN + 8 + at % 2] = byte, // value length
            4 => len = at % len, // truncated
            5 => len += cut, // trailing bytes
            6 => len = MAX_PAYLOAD + 1 + cut, // too long
            _ => {} // untouched
        }
        let general = wire::parse_header(&datagram[..len]).ok().and_then(|(header, body)| {
            let plain = header.op == Op::GetReply && header.flags == Flags::default()
                && matches!(header.status, Status::Ok | Status::NotFound);
            match Reply::parse(&header, body) {
                Ok(Reply::Get { value, .. }) if plain => Some((header, value.to_vec())),
                _ => None,
            }
        });
        let fast = wire::parse_plain_get_reply(&datagram[..len]);
        prop_assert_eq!(fast.is_some(), general.is_some());
        if let (Some(fast), Some((header, value))) = (fast, general) {
            prop_assert_eq!(fast.status, header.status);
            prop_assert_eq!(fast.seq, header.seq);
            prop_assert_eq!(fast.client, header.client);
            prop_assert_eq!(&datagram[fast.value], &value[..]);
        }
    }
}

/// MIGRATE_ABORT has an empty body: it round-trips, and trailing bytes are refused.
#[test]
fn abort_is_an_empty_stream_message() {
    let mut buf = [0u8; 64];
    let abort = StreamMessage::Abort;
    let len = wire::emit_with(&header(abort.op()), &mut buf, |b| abort.emit(b)).unwrap();
    assert_eq!((abort.op() as u8, len), (0x14, HEADER_LEN));
    let (parsed, body) = wire::parse_header(&buf[..len]).unwrap();
    assert_eq!(
        StreamMessage::parse(parsed.op, body),
        Ok(StreamMessage::Abort)
    );
    assert!(parsed.op.is_migration_stream());
    assert!(wire::Op::MigrateAbortAck.is_migration_stream_ack());
    assert!(StreamMessage::parse(parsed.op, &[0]).is_err());
}

/// Versions and version clocks from another server stay below 2^63: a forged clock of
/// u64::MAX would otherwise make the receiving partition's clock wrap to 0 on its next write.
#[test]
fn versions_and_clocks_of_2_63_or_more_are_refused() {
    use dataplane::wire::{push_item, MAX_VERSION};
    let round_trip = |message: StreamMessage<'_>| {
        let mut body = [0u8; 1500];
        let len = message.emit(&mut body).unwrap();
        StreamMessage::parse(message.op(), &body[..len]).map(|_| ())
    };
    for clock in [MAX_VERSION, MAX_VERSION + 1, u64::MAX] {
        let expected = if clock <= MAX_VERSION {
            Ok(())
        } else {
            Err(WireError::VersionOutOfRange)
        };
        assert_eq!(
            round_trip(StreamMessage::Terminate { floor_clock: clock }),
            expected
        );
        let start = StreamMessage::GroupStart {
            group: 3,
            floor_clock: clock,
        };
        assert_eq!(round_trip(start), expected);
        let mut items = Vec::new();
        let item = MigratedItem {
            key: b"k",
            value: Some(b"v"),
            version: clock,
        };
        assert!(push_item(&mut items, 1000, &item));
        let data = StreamMessage::Data {
            group: 3,
            count: 1,
            items: &items,
        };
        assert_eq!(round_trip(data), expected);
    }
}

/// The decoding table: every op decodes from its own code, every request op has its reply
/// op, and any other code is refused with a typed error.
#[test]
fn every_op_code_decodes_and_nothing_else() {
    for &op in Op::ALL {
        assert_eq!(Op::from_u8(op as u8), Ok(op));
        assert!(
            Op::from_u8(op as u8 | Op::REPLY_BIT).is_ok(),
            "{op:?} has a reply"
        );
    }
    let known = (0..=255u8)
        .filter(|&code| Op::from_u8(code).is_ok())
        .count();
    assert_eq!(known, Op::ALL.len());
    assert_eq!(Op::from_u8(0x00), Err(WireError::UnknownOp(0x00)));
    assert_eq!(Op::from_u8(0xFF), Err(WireError::UnknownOp(0xFF)));
}

proptest! {
    /// The ports' fixed-offset reading of a received frame agrees with the general parse: it
    /// takes a frame exactly when Ethernet, IPv4 and UDP parse it as an IPv4/UDP datagram
    /// with a plain 20-byte header, and reads the same addresses and payload. Frames are
    /// valid ones with one header byte disturbed, cut short or padded.
    #[test]
    fn the_fixed_offset_frame_parse_agrees_with_the_general_parse(
        payload in proptest::collection::vec(any::<u8>(), 0..1472),
        src: ([u8; 4], u16), dst: ([u8; 4], u16), macs: ([u8; 6], [u8; 6]),
        disturb in 0usize..6, at: usize, byte: u8, cut in 0usize..64,
    ) {
        use dataplane::wire::ethernet::{EthernetRepr, ETHERTYPE_IPV4};
        use dataplane::wire::frame::{self, Macs, FRAME_OVERHEAD};
        use dataplane::wire::ipv4::{Ipv4Repr, PROTOCOL_UDP};
        use dataplane::wire::udp::UdpRepr;
        use std::net::SocketAddrV4;
        let from = SocketAddrV4::new(src.0.into(), src.1);
        let to = SocketAddrV4::new(dst.0.into(), dst.1);
        let mut buf = vec![0u8; FRAME_OVERHEAD + payload.len() + 64];
        buf[FRAME_OVERHEAD..FRAME_OVERHEAD + payload.len()].copy_from_slice(&payload);
        let macs = Macs { src: macs.0, dst: macs.1 };
        let how = dataplane::wire::udp::UdpChecksum::Computed;
        let mut len = frame::emit_udp_frame(&mut buf, payload.len(), from, to, macs, how).unwrap();
        match disturb {
            0 => buf[at % FRAME_OVERHEAD] = byte, // any header byte
            1 => {
                // An IPv4 header byte, with the header checksum made valid again.
                buf[14 + at % 20] = byte;
                buf[24..26].fill(0);
                let sum = dataplane::wire::ipv4::checksum(&buf[14..34], 0);
                buf[24..26].copy_from_slice(&sum.to_be_bytes());
            }
            2 => len = at % len, // cut short
            3 => len += cut, // Ethernet padding after the datagram
            _ => {} // untouched
        }
        let frame = &buf[..len];
        let general = EthernetRepr::parse(frame).ok()
            .filter(|(eth, _)| eth.ethertype == ETHERTYPE_IPV4 && frame.get(14) == Some(&0x45))
            .and_then(|(eth, packet)| Ipv4Repr::parse(packet).ok().map(|ip| (eth, ip)))
            .filter(|(_, (ip, _))| ip.protocol == PROTOCOL_UDP)
            .and_then(|(eth, (ip, datagram))| {
                let (udp, body) = UdpRepr::parse(datagram).ok()?;
                let at = body.as_ptr() as usize - frame.as_ptr() as usize;
                Some((eth.src, SocketAddrV4::new(ip.src, udp.src_port),
                      SocketAddrV4::new(ip.dst, udp.dst_port), at..at + body.len()))
            });
        let fast = frame::parse_udp_frame(frame).map(|f| (f.src_mac, f.src, f.dst, f.payload));
        prop_assert_eq!(fast, general);
    }
}

/// MOVED: any key-value reply op (a whole multi-key request: 0x82) with status 2 and an
/// 8-byte body, the new owner's partition address and its shard id.
#[test]
fn moved_reply_vector() {
    let to = std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 0, 2), 7101);
    let mut buf = [0u8; 64];
    let len = wire::emit_reply(
        &header(Op::Get).reply(Status::Moved),
        &Reply::Moved { to, shard: 1 },
        &mut buf,
    )
    .unwrap();
    assert_eq!(
        hex(&buf[..len]),
        "4e 4d 01 81 00 02 00 00 00 00 00 00 00 00 00 01 c5 fa e9 77 bf c9 0c 32 \
         01 02 03 04 00 00 00 00 0a 00 00 02 1b bd 00 01"
    );
    let (h, body) = wire::parse_header(&buf[..len]).unwrap();
    assert_eq!((h.op, h.status, h.shard), (Op::GetReply, Status::Moved, 0));
    assert_eq!(Reply::parse(&h, body), Ok(Reply::Moved { to, shard: 1 }));
    // The whole-request answer to a MULTI_GET has the PUT reply's op and the same body.
    let multi = HeaderRepr {
        op: Op::PutReply,
        ..header(Op::MultiGet).reply(Status::Moved)
    };
    let len = wire::emit_reply(&multi, &Reply::Moved { to, shard: 1 }, &mut buf).unwrap();
    assert_eq!(hex(&buf[3..6]), "82 00 02");
    let (h, body) = wire::parse_header(&buf[..len]).unwrap();
    assert_eq!(Reply::parse(&h, body), Ok(Reply::Moved { to, shard: 1 }));
    assert_eq!(Reply::parse(&h, &body[..7]), Err(WireError::Truncated));
}

/// RETRY_LATER and ERROR (and a duplicate write's OK) carry the op's reply body with
/// version 0: a GET reply's 10 bytes (no value), a PUT or DELETE reply's 8.
#[test]
fn status_only_reply_vectors() {
    let mut buf = [0u8; 64];
    let len = wire::emit_reply(
        &header(Op::Get).reply(Status::RetryLater),
        &Reply::Get {
            version: 0,
            value: b"",
        },
        &mut buf,
    )
    .unwrap();
    assert_eq!(
        hex(&buf[..len]),
        "4e 4d 01 81 00 03 00 00 00 00 00 00 00 00 00 01 c5 fa e9 77 bf c9 0c 32 \
         01 02 03 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    );
    let (h, body) = wire::parse_header(&buf[..len]).unwrap();
    assert_eq!(
        Reply::parse(&h, body),
        Ok(Reply::Get {
            version: 0,
            value: b""
        })
    );
    let len = wire::emit_reply(
        &header(Op::Put).reply(Status::Error),
        &Reply::Put { version: 0 },
        &mut buf,
    )
    .unwrap();
    assert_eq!(
        hex(&buf[..len]),
        "4e 4d 01 82 00 04 00 00 00 00 00 00 00 00 00 01 c5 fa e9 77 bf c9 0c 32 \
         01 02 03 04 00 00 00 00 00 00 00 00 00 00 00 00"
    );
    let (h, body) = wire::parse_header(&buf[..len]).unwrap();
    assert_eq!(Reply::parse(&h, body), Ok(Reply::Put { version: 0 }));
    for (op, status, reply, code) in [
        (
            Op::Delete,
            Status::Error,
            Reply::Delete { version: 0 },
            "83 00 04",
        ),
        // A retransmitted write, applied before: OK, version 0.
        (
            Op::Delete,
            Status::Ok,
            Reply::Delete { version: 0 },
            "83 00 00",
        ),
        (Op::Put, Status::Ok, Reply::Put { version: 0 }, "82 00 00"),
    ] {
        let len = wire::emit_reply(&header(op).reply(status), &reply, &mut buf).unwrap();
        assert_eq!((hex(&buf[3..6]), len), (code.to_string(), HEADER_LEN + 8));
        assert_eq!(hex(&buf[HEADER_LEN..len]), "00 00 00 00 00 00 00 00");
        let (h, body) = wire::parse_header(&buf[..len]).unwrap();
        assert_eq!(Reply::parse(&h, body), Ok(reply));
    }
}

/// Fulva's progress trailer: after the reply, `n × hot key hash` · `n u16` · 2 zero bytes ·
/// `migrated_upto u32`, read from the end of the datagram.
#[test]
fn progress_trailer_vector() {
    use dataplane::wire::{append_progress, split_progress};
    let abcd = 0xC5FA_E977_BFC9_0C32;
    let reply_header = HeaderRepr {
        flags: Flags::FROM_DESTINATION.with(Flags::PROGRESS),
        ..header(Op::Get).reply(Status::Ok)
    };
    let reply = Reply::Get {
        version: 7,
        value: b"xy",
    };
    let mut buf = [0u8; 128];
    let len = wire::emit_reply(&reply_header, &reply, &mut buf).unwrap();
    let len = append_progress(&mut buf, len, 0xBF00, &[abcd]).unwrap();
    assert_eq!(
        hex(&buf[..len]),
        "4e 4d 01 81 41 00 00 00 00 00 00 00 00 00 00 01 c5 fa e9 77 bf c9 0c 32 \
         01 02 03 04 00 00 00 00 00 00 00 00 00 00 00 07 00 02 78 79 \
         c5 fa e9 77 bf c9 0c 32 00 01 00 00 00 00 bf 00"
    );
    let (h, _) = wire::parse_header(&buf[..len]).unwrap();
    assert!(h.flags.contains(Flags::PROGRESS));
    let (rest, progress) = split_progress(&buf[..len]).unwrap();
    assert_eq!(progress.migrated_upto, 0xBF00);
    assert_eq!(progress.hot_keys().collect::<Vec<_>>(), vec![abcd]);
    assert_eq!(Reply::parse(&h, &rest[HEADER_LEN..]), Ok(reply));
    // Left on, the trailer is trailing bytes to the reply's parser.
    assert_eq!(
        Reply::parse(&h, &buf[HEADER_LEN..len]),
        Err(WireError::TrailingBytes)
    );
    // Without hot keys: 8 bytes.
    let len = append_progress(&mut buf, 44, 0xBF00, &[]).unwrap();
    assert_eq!(hex(&buf[44..len]), "00 00 00 00 00 00 bf 00");
    // A count above 32 or non-zero reserved bytes are refused.
    let mut bad = buf;
    bad[len - 7] = 33;
    assert_eq!(split_progress(&bad[..len]).unwrap_err(), WireError::TooLong);
    let mut bad = buf;
    bad[len - 5] = 1;
    assert_eq!(
        split_progress(&bad[..len]).unwrap_err(),
        WireError::NonZeroReserved
    );
}
