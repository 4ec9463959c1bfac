//! The switch's decision table for every state and op, control-message idempotence, and
//! false positives of both filters.

use dataplane::wire::{self, Flags, HeaderRepr, Op, Request, Status, SwitchControl};
use dataplane::Packet;
use std::net::{Ipv4Addr, SocketAddrV4};
use tofino::{Decision, Switch, SwitchConfig};

const SWITCH: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 254), 7000);
const SOURCE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7100);
const DEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 20000);
const SHARD: u16 = 1;
const GROUP_BITS: u8 = 8;

fn switch(bf_cells: usize, cbf_cells: usize) -> Switch {
    Switch::new(SwitchConfig {
        address: SWITCH,
        bf_cells,
        cbf_cells,
    })
}

/// Sends a control message of migration 1; returns the reply's status and seq.
fn control(sw: &mut Switch, seq: u64, message: SwitchControl) -> (Status, u64) {
    control_of(sw, 1, seq, message)
}

/// Sends a control message of the migration whose stream id is `stream`.
fn control_of(sw: &mut Switch, stream: u32, seq: u64, message: SwitchControl) -> (Status, u64) {
    let header = HeaderRepr {
        op: message.op(),
        flags: Flags::default(),
        status: Status::Ok,
        shard: SHARD,
        seq,
        key_hash: 0,
        client: stream,
        oldest_gap: 0,
    };
    let mut p = Packet::new_boxed();
    let len = wire::emit_with(&header, p.buffer_mut(), |b| message.emit(b)).unwrap();
    p.set_len(len);
    p.src = SOURCE;
    p.dst = SWITCH;
    let (mut out, mut dropped) = (Vec::new(), Vec::new());
    sw.process(p, &mut out, &mut dropped);
    assert_eq!(out.len(), 1, "every control message is answered");
    let reply = &out[0];
    assert_eq!(reply.dst, SOURCE);
    let (h, body) = wire::parse_header(reply.payload()).unwrap();
    assert_eq!(h.op, header.op.reply());
    assert!(body.is_empty());
    (h.status, h.seq)
}

fn init(partitions: u16, partition: u16) -> SwitchControl {
    SwitchControl::Init {
        source_ip: *SOURCE.ip(),
        dest_ip: DEST_IP,
        dest_shard: SHARD,
        size_exp: 32,
        remain_exp: 32 - GROUP_BITS,
        partitions,
        partition,
    }
}

fn terminate(partition: u16) -> SwitchControl {
    SwitchControl::Terminate {
        source_ip: *SOURCE.ip(),
        partition,
    }
}

fn start(group: u32) -> SwitchControl {
    SwitchControl::GroupStart {
        source_ip: *SOURCE.ip(),
        partition: 0,
        group,
    }
}

fn complete(group: u32) -> SwitchControl {
    SwitchControl::GroupComplete {
        source_ip: *SOURCE.ip(),
        partition: 0,
        group,
    }
}

/// A key hash in `group` (the group is the top GROUP_BITS of the low 32 bits).
fn hash_in(group: u32) -> u64 {
    u64::from(group) << (32 - GROUP_BITS) | 0xABC
}

fn request(op: Op, group: u32) -> Box<Packet> {
    let key = b"k";
    let header = HeaderRepr {
        op,
        flags: Flags::default(),
        status: Status::Ok,
        shard: SHARD,
        seq: 7,
        key_hash: hash_in(group),
        client: 1,
        oldest_gap: 0,
    };
    let body = match op {
        Op::Get => Request::Get { key },
        Op::Put => Request::Put { key, value: b"v" },
        _ => Request::Delete { key },
    };
    let mut p = Packet::new_boxed();
    let len = wire::emit_request(&header, &body, p.buffer_mut()).unwrap();
    p.set_len(len);
    p.src = CLIENT;
    p.dst = SOURCE;
    p
}

/// Runs a request through; returns (destination, flags, shard) of each output packet.
fn route(sw: &mut Switch, op: Op, group: u32) -> Vec<(SocketAddrV4, Flags)> {
    let (mut out, mut dropped) = (Vec::new(), Vec::new());
    sw.process(request(op, group), &mut out, &mut dropped);
    out.iter()
        .map(|p| {
            assert_eq!(p.src, CLIENT, "the client's address is kept");
            let (h, _) = wire::parse_header(p.payload()).unwrap();
            (p.dst, h.flags)
        })
        .collect()
}

fn to_dest() -> SocketAddrV4 {
    SocketAddrV4::new(DEST_IP, SOURCE.port())
}

#[test]
fn decision_table_for_every_state_and_op() {
    let mut sw = switch(1024, 256);
    // S4: no pair.
    for op in [Op::Get, Op::Put, Op::Delete] {
        assert_eq!(route(&mut sw, op, 5), vec![(SOURCE, Flags::default())]);
    }
    assert_eq!(control(&mut sw, 0, init(1, 0)), (Status::Ok, 0));
    // S1: not started.
    for op in [Op::Get, Op::Put, Op::Delete] {
        assert_eq!(route(&mut sw, op, 5), vec![(SOURCE, Flags::default())]);
    }
    assert_eq!(control(&mut sw, 1, start(5)), (Status::Ok, 1));
    // S2: in flight.
    let double = Flags::DOUBLE_READ;
    assert_eq!(
        route(&mut sw, Op::Get, 5),
        vec![
            (SOURCE, double),
            (to_dest(), double.with(Flags::REDIRECTED))
        ]
    );
    for op in [Op::Put, Op::Delete] {
        assert_eq!(route(&mut sw, op, 5), vec![(to_dest(), Flags::REDIRECTED)]);
    }
    // Other groups are untouched.
    assert_eq!(route(&mut sw, Op::Put, 6), vec![(SOURCE, Flags::default())]);
    assert_eq!(control(&mut sw, 2, complete(5)), (Status::Ok, 2));
    // S3: done.
    for op in [Op::Get, Op::Put, Op::Delete] {
        assert_eq!(route(&mut sw, op, 5), vec![(to_dest(), Flags::REDIRECTED)]);
    }
    let c = sw.counters();
    assert_eq!((c.double_reads, c.false_done, c.false_in_flight), (1, 0, 0));
    // Cut-over: the only partition terminates, the pair and its registers go.
    let terminate = SwitchControl::Terminate {
        source_ip: *SOURCE.ip(),
        partition: 0,
    };
    assert_eq!(control(&mut sw, 3, terminate), (Status::Ok, 3));
    assert_eq!(route(&mut sw, Op::Get, 5), vec![(SOURCE, Flags::default())]);
    assert_eq!(
        control(&mut sw, 3, terminate),
        (Status::Ok, 3),
        "a repeat is acknowledged"
    );
    assert!(sw.pairs().next().is_none());
    // A new migration of the same pair starts from clean registers.
    assert_eq!(control(&mut sw, 0, init(1, 0)), (Status::Ok, 0));
    assert_eq!(route(&mut sw, Op::Get, 5), vec![(SOURCE, Flags::default())]);
}

/// A multi-key request over groups 1 (not started), 2 (in flight) and 3 (done), twice each:
/// returns (destination, flags, serve, halves) of each packet it becomes.
fn route_multi(sw: &mut Switch, op: Op, groups: &[u32]) -> Vec<(SocketAddrV4, Flags, u16, u16)> {
    let keys: Vec<[u8; 1]> = (0..groups.len()).map(|i| [b'a' + i as u8]).collect();
    let items: Vec<wire::MultiItem> = groups
        .iter()
        .zip(&keys)
        .map(|(&g, k)| wire::MultiItem {
            key_hash: hash_in(g),
            key: k,
            value: if op == Op::MultiPut { b"v" } else { b"" },
        })
        .collect();
    let mut scratch = [0u8; 1024];
    let key_op = match op {
        Op::MultiGet => wire::KeyOp::Get,
        Op::MultiPut => wire::KeyOp::Put,
        _ => wire::KeyOp::Delete,
    };
    let view = wire::MultiRequestItems::build(key_op, &items, &mut scratch).unwrap();
    let header = HeaderRepr {
        op,
        flags: Flags::default(),
        status: Status::Ok,
        shard: SHARD,
        seq: 9,
        key_hash: hash_in(groups[0]),
        client: 1,
        oldest_gap: 0,
    };
    let mut p = Packet::new_boxed();
    let len = wire::emit_request(&header, &Request::Multi(view), p.buffer_mut()).unwrap();
    p.set_len(len);
    (p.src, p.dst) = (CLIENT, SOURCE);
    let (mut out, mut dropped) = (Vec::new(), Vec::new());
    sw.process(p, &mut out, &mut dropped);
    out.iter()
        .map(|p| {
            let (h, body) = wire::parse_header(p.payload()).unwrap();
            let Request::Multi(items) = Request::parse(&h, body).unwrap() else {
                panic!("still a multi-key request")
            };
            assert_eq!(items.len(), groups.len(), "every copy carries every item");
            (p.dst, h.flags, items.serve(), items.halves())
        })
        .collect()
}

#[test]
fn multi_key_requests_are_split_per_key() {
    let mut sw = switch(1024, 256);
    let groups = [1, 2, 3, 1, 2, 3];
    let (not_started, in_flight, done) = (0b001001, 0b010010, 0b100100);
    // No pair: unchanged.
    let unchanged = vec![(SOURCE, Flags::default(), 0b111111, 0)];
    assert_eq!(route_multi(&mut sw, Op::MultiGet, &groups), unchanged);
    assert_eq!(control(&mut sw, 0, init(1, 0)), (Status::Ok, 0));
    assert_eq!(control(&mut sw, 1, start(2)), (Status::Ok, 1));
    assert_eq!(control(&mut sw, 2, start(3)), (Status::Ok, 2));
    assert_eq!(control(&mut sw, 3, complete(3)), (Status::Ok, 3));
    let double = Flags::DOUBLE_READ;
    assert_eq!(
        route_multi(&mut sw, Op::MultiGet, &groups),
        vec![
            (SOURCE, double, not_started | in_flight, in_flight),
            (
                to_dest(),
                double.with(Flags::REDIRECTED),
                in_flight | done,
                in_flight
            ),
        ],
        "reads: in-flight keys to both as halves"
    );
    for op in [Op::MultiPut, Op::MultiDelete] {
        assert_eq!(
            route_multi(&mut sw, op, &groups),
            vec![
                (SOURCE, Flags::default(), not_started, 0),
                (to_dest(), Flags::REDIRECTED, in_flight | done, 0),
            ],
            "writes: in-flight and done keys to the destination"
        );
    }
    // All keys on one side: one packet, nothing split.
    assert_eq!(
        route_multi(&mut sw, Op::MultiPut, &[1, 1]),
        vec![(SOURCE, Flags::default(), 0b11, 0)]
    );
    assert_eq!(
        route_multi(&mut sw, Op::MultiGet, &[3, 3]),
        vec![(to_dest(), Flags::REDIRECTED, 0b11, 0)]
    );
    assert_eq!(
        route_multi(&mut sw, Op::MultiGet, &[2, 2]),
        vec![
            (SOURCE, double, 0b11, 0b11),
            (to_dest(), double.with(Flags::REDIRECTED), 0b11, 0b11),
        ]
    );
    let c = sw.counters();
    assert_eq!(
        (c.multi_splits, c.double_reads, c.redirects, c.to_source),
        (3, 1, 1, 1)
    );
}

#[test]
fn control_messages_apply_exactly_once_in_order() {
    let mut sw = switch(1024, 256);
    assert_eq!(
        control(&mut sw, 1, start(5)).0,
        Status::Error,
        "no pair yet"
    );
    assert_eq!(control(&mut sw, 0, init(2, 0)), (Status::Ok, 0));
    assert_eq!(
        control(&mut sw, 0, init(2, 0)),
        (Status::Ok, 0),
        "INIT repeats"
    );
    // A gap is not applied; the ack says what was.
    assert_eq!(control(&mut sw, 2, complete(5)), (Status::Ok, 0));
    assert_eq!(control(&mut sw, 1, start(5)), (Status::Ok, 1));
    assert_eq!(control(&mut sw, 1, start(5)), (Status::Ok, 1), "duplicate");
    assert_eq!(control(&mut sw, 2, complete(5)), (Status::Ok, 2));
    assert_eq!(
        control(&mut sw, 1, start(5)),
        (Status::Ok, 2),
        "late duplicate"
    );
    // Had the duplicate START counted twice, the group would still look in flight.
    assert_eq!(
        route(&mut sw, Op::Get, 5),
        vec![(to_dest(), Flags::REDIRECTED)]
    );
    let c = sw.counters();
    assert_eq!((c.control_duplicates, c.control_gaps), (3, 1));
    // The pair stays until every partition terminated.
    let terminate = SwitchControl::Terminate {
        source_ip: *SOURCE.ip(),
        partition: 0,
    };
    assert_eq!(control(&mut sw, 3, terminate), (Status::Ok, 3));
    assert!(
        sw.pairs().next().is_some(),
        "partition 1 has not joined or terminated"
    );
    // A different destination for an installed pair is refused.
    let other = SwitchControl::Init {
        source_ip: *SOURCE.ip(),
        dest_ip: Ipv4Addr::new(10, 0, 0, 9),
        dest_shard: SHARD,
        size_exp: 32,
        remain_exp: 32 - GROUP_BITS,
        partitions: 2,
        partition: 1,
    };
    assert_eq!(control(&mut sw, 0, other).0, Status::Error);
}

/// Two migrations of the same shard through the switch, one after the other: the late
/// copies of the first one's messages (INIT, a group message, TERMINATE) change nothing
/// of the second one's state, and the second one's messages all apply.
#[test]
fn a_later_migration_of_the_same_shard_is_told_apart_by_its_stream() {
    let mut sw = switch(1024, 256);
    let (first, second) = (11, 12);
    assert_eq!(control_of(&mut sw, first, 0, init(1, 0)), (Status::Ok, 0));
    assert_eq!(control_of(&mut sw, first, 1, start(5)), (Status::Ok, 1));
    assert_eq!(control_of(&mut sw, first, 2, complete(5)), (Status::Ok, 2));
    assert_eq!(control_of(&mut sw, first, 3, terminate(0)), (Status::Ok, 3));
    assert!(sw.pairs().next().is_none(), "cut over");
    // A late INIT of the finished migration is acknowledged, and installs nothing.
    assert_eq!(control_of(&mut sw, first, 0, init(1, 0)), (Status::Ok, 0));
    assert!(sw.pairs().next().is_none(), "not installed again");
    assert_eq!(control_of(&mut sw, second, 0, init(1, 0)), (Status::Ok, 0));
    assert_eq!(sw.pairs().next().map(|p| p.stream), Some(second));
    // The first migration's START of group 5, late: refused, and the group not started.
    assert_eq!(control_of(&mut sw, first, 1, start(5)).0, Status::Error);
    assert_eq!(route(&mut sw, Op::Get, 5), vec![(SOURCE, Flags::default())]);
    // The second migration's own seq 1 is applied, not taken for a duplicate.
    assert_eq!(control_of(&mut sw, second, 1, start(7)), (Status::Ok, 1));
    assert_eq!(route(&mut sw, Op::Get, 7).len(), 2, "double read");
    // A late TERMINATE of the first migration does not end the second one.
    assert_eq!(control_of(&mut sw, first, 3, terminate(0)).0, Status::Ok);
    assert_eq!(sw.pairs().next().map(|p| p.stream), Some(second));
    assert_eq!(control_of(&mut sw, second, 2, complete(7)), (Status::Ok, 2));
    assert_eq!(
        route(&mut sw, Op::Get, 7),
        vec![(to_dest(), Flags::REDIRECTED)]
    );
    // While it runs, the shard cannot be paired by a third migration.
    assert_eq!(control_of(&mut sw, 13, 0, init(1, 0)).0, Status::Error);
    assert_eq!(sw.counters().pairs_installed, 2);
}

/// An abort can come before every partition's INIT was acknowledged. The TERMINATE of a
/// partition that never joined still counts, so the pair is removed, and the next
/// migration of the shard starts from clean registers (its seq 1 is applied, not answered
/// from the aborted migration's sequence).
#[test]
fn an_abort_before_every_partition_joined_frees_the_pair() {
    let mut sw = switch(1024, 256);
    assert_eq!(control_of(&mut sw, 21, 0, init(3, 0)), (Status::Ok, 0));
    assert_eq!(control_of(&mut sw, 21, 1, start(5)), (Status::Ok, 1));
    assert_eq!(control_of(&mut sw, 21, 2, terminate(0)), (Status::Ok, 2));
    assert_eq!(control_of(&mut sw, 21, 1, terminate(1)), (Status::Ok, 1));
    assert!(sw.pairs().next().is_some(), "partition 2 has not ended");
    // A late INIT of partition 1, which ended without joining, does not make it join
    // (its TERMINATE would then be applied a second time).
    let applied = sw.counters().control_applied;
    assert_eq!(control_of(&mut sw, 21, 0, init(3, 1)), (Status::Ok, 0));
    assert_eq!(control_of(&mut sw, 21, 1, terminate(1)), (Status::Ok, 1));
    assert_eq!(sw.counters().control_applied, applied);
    assert_eq!(control_of(&mut sw, 21, 1, terminate(2)), (Status::Ok, 1));
    assert!(sw.pairs().next().is_none(), "every partition ended");
    assert_eq!(control_of(&mut sw, 22, 0, init(2, 0)), (Status::Ok, 0));
    assert_eq!(route(&mut sw, Op::Get, 5), vec![(SOURCE, Flags::default())]);
    assert_eq!(control_of(&mut sw, 22, 1, start(5)), (Status::Ok, 1));
    assert_eq!(route(&mut sw, Op::Get, 5).len(), 2, "applied: double read");
    // A partition of the running migration cannot send group messages before its INIT.
    let other_partition = SwitchControl::GroupStart {
        source_ip: *SOURCE.ip(),
        partition: 1,
        group: 9,
    };
    assert_eq!(control_of(&mut sw, 22, 1, other_partition).0, Status::Error);
}

/// A migration whose INIT the switch refused ends with a TERMINATE all the same (its abort).
/// The switch retires its stream then, so a late copy of that INIT never installs a pair
/// nobody would end (which would refuse every later migration of the shard).
#[test]
fn a_refused_migration_is_retired_by_its_terminate() {
    let mut sw = switch(1024, 256);
    // Refused while another migration of the shard runs; it ends, then the other one.
    assert_eq!(control_of(&mut sw, 31, 0, init(1, 0)).0, Status::Ok);
    assert_eq!(control_of(&mut sw, 32, 0, init(1, 0)).0, Status::Error);
    assert_eq!(control_of(&mut sw, 32, 1, terminate(0)).0, Status::Ok);
    assert_eq!(control_of(&mut sw, 31, 1, terminate(0)).0, Status::Ok);
    assert!(sw.pairs().next().is_none());
    assert_eq!(control_of(&mut sw, 32, 0, init(1, 0)), (Status::Ok, 0));
    assert!(sw.pairs().next().is_none(), "the refused one's late INIT");
    // Refused with no pair installed (a full table, say): it ends, then its INIT comes late.
    assert_eq!(control_of(&mut sw, 33, 1, terminate(0)).0, Status::Ok);
    assert_eq!(control_of(&mut sw, 33, 0, init(1, 0)), (Status::Ok, 0));
    assert!(
        sw.pairs().next().is_none(),
        "the second refused one's late INIT"
    );
    assert_eq!(sw.counters().pairs_installed, 1);
}

#[test]
fn false_positives_of_both_filters_follow_the_filters_and_are_counted() {
    // Tiny filters: 16 cells per array for 256 groups.
    let mut sw = switch(16, 16);
    control(&mut sw, 0, init(1, 0));
    let mut seq = 1;
    for group in 0..64 {
        control(&mut sw, seq, start(group));
        control(&mut sw, seq + 1, complete(group));
        seq += 2;
    }
    control(&mut sw, seq, start(200));
    let mut false_done = 0;
    let mut false_in_flight = 0;
    for group in 64..256 {
        let (decision, _) = sw.decide(*SOURCE.ip(), SHARD, hash_in(group), Op::Get);
        match decision {
            Decision::Redirect if group != 200 => false_done += 1,
            Decision::DoubleRead if group != 200 => false_in_flight += 1,
            _ => {}
        }
    }
    assert!(false_done > 0, "64 groups fill most of 16 cells");
    let c = sw.counters();
    assert_eq!(c.false_done, false_done);
    assert_eq!(c.false_in_flight, false_in_flight);
    // The in-flight group is never taken for anything else (no false negatives).
    let (decision, _) = sw.decide(*SOURCE.ip(), SHARD, hash_in(200), Op::Put);
    assert_eq!(decision, Decision::Redirect);
    let snapshot = sw.snapshot();
    assert!(snapshot.pairs[0].false_done_rate > 0.5);
}

#[test]
fn hostile_control_input_is_counted_and_dropped() {
    let mut sw = switch(1024, 256);
    let mut p = Packet::new_boxed();
    p.buffer_mut()[..5].copy_from_slice(b"junk!");
    p.set_len(5);
    p.src = SOURCE;
    p.dst = SWITCH;
    let (mut out, mut dropped) = (Vec::new(), Vec::new());
    sw.process(p, &mut out, &mut dropped);
    assert!(out.is_empty());
    assert_eq!(dropped.len(), 1);
    assert_eq!(sw.counters().malformed, 1);
    // Non-netmigrate traffic between hosts is forwarded untouched.
    let mut p = Packet::new_boxed();
    p.set_len(3);
    p.src = CLIENT;
    p.dst = SOURCE;
    sw.process(p, &mut out, &mut dropped);
    assert_eq!(out.len(), 1);
}

#[test]
fn registers_read_back_what_groups_set() {
    let mut sw = switch(1024, 1024);
    assert_eq!(control(&mut sw, 0, init(1, 0)), (Status::Ok, 0));
    assert_eq!(control(&mut sw, 1, start(5)), (Status::Ok, 1));
    assert_eq!(control(&mut sw, 2, start(6)), (Status::Ok, 2));
    assert_eq!(control(&mut sw, 3, complete(6)), (Status::Ok, 3));
    let slot = sw.pairs().next().unwrap().slot;
    let hashes = |group| tofino::spec::filter_hashes(DEST_IP, SHARD, group);
    for array in 0..4 {
        let counting = sw.read_registers(true, array, slot, 0, 1024).unwrap();
        let bloom = sw.read_registers(false, array, slot, 0, 1024).unwrap();
        // Group 5 is in flight, group 6 done: each sets its own cell of every array.
        let (c5, b6) = (
            hashes(5)[array] as usize & 1023,
            hashes(6)[array] as usize & 1023,
        );
        assert!(counting[c5] >= 1, "array {array}");
        assert_eq!(bloom[b6], 1, "array {array}");
        let in_flight: u32 = counting.iter().map(|&c| u32::from(c)).sum();
        assert_eq!(in_flight, 1, "only group 5 is in flight in array {array}");
        assert_eq!(bloom.iter().filter(|&&b| b != 0).count(), 1);
    }
    // A window of cells reads the same cells.
    let whole = sw.read_registers(false, 0, slot, 0, 1024).unwrap();
    assert_eq!(
        sw.read_registers(false, 0, slot, 100, 24).unwrap(),
        whole[100..124]
    );
    // Out of range: refused with a message, never a panic.
    assert!(sw.read_registers(false, 4, slot, 0, 1).is_err());
    assert!(sw
        .read_registers(false, 0, tofino::spec::MAX_PAIRS, 0, 1)
        .is_err());
    assert!(sw.read_registers(true, 0, slot, 1000, 25).is_err());
    assert!(sw.read_registers(true, 0, slot, usize::MAX, 2).is_err());
}

/// A small deterministic generator (SplitMix64), so the statistical tests never flake.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A pair whose group is the whole low 32 bits of the key hash (size_exp 32, remain_exp
/// 0), so any u32 is a group and `u64::from(group)` a key hash in it.
fn init_all_groups() -> SwitchControl {
    SwitchControl::Init {
        source_ip: *SOURCE.ip(),
        dest_ip: DEST_IP,
        dest_shard: SHARD,
        size_exp: 32,
        remain_exp: 0,
        partitions: 1,
        partition: 0,
    }
}

/// The measured false-"done" rate of a small Bloom filter (1024 cells per array, as many
/// random groups done) is what four independent hashes give, (1 − e^(−n/m))^4 ≈ 0.16,
/// and what the snapshot estimates from the cells set. With two complementary hashes
/// (CRC-32/BZIP2 and CRC-32/MPEG-2) it was ≈ 0.25, the rate of three.
#[test]
fn false_done_rate_of_a_small_filter_is_that_of_four_independent_hashes() {
    let cells = 1024;
    let mut sw = switch(cells, 16);
    assert_eq!(control(&mut sw, 0, init_all_groups()), (Status::Ok, 0));
    let mut rng = 2024;
    let mut done = std::collections::HashSet::new();
    let mut seq = 1;
    while done.len() < cells {
        let group = splitmix(&mut rng) as u32;
        if done.insert(group) {
            assert_eq!(control(&mut sw, seq, start(group)), (Status::Ok, seq));
            assert_eq!(
                control(&mut sw, seq + 1, complete(group)),
                (Status::Ok, seq + 1)
            );
            seq += 2;
        }
    }
    let (mut asked, mut false_done) = (0u64, 0u64);
    while asked < 40_000 {
        let group = splitmix(&mut rng) as u32;
        if done.contains(&group) {
            continue;
        }
        asked += 1;
        let (decision, _) = sw.decide(*SOURCE.ip(), SHARD, u64::from(group), Op::Get);
        match decision {
            Decision::Redirect => false_done += 1,
            Decision::Source => {}
            other => panic!("no group is in flight, got {other:?}"),
        }
    }
    assert_eq!(sw.counters().false_done, false_done);
    let measured = false_done as f64 / asked as f64;
    let estimated = sw.snapshot().pairs[0].false_done_rate;
    let formula = tofino::spec::false_done_rate(cells as u64, cells);
    // 40 000 draws: the binomial deviation is about 1% of the rate; the run is seeded.
    assert!(
        (measured / estimated - 1.0).abs() < 0.1,
        "measured {measured:.4}, estimated from the cells set {estimated:.4}"
    );
    assert!(
        (measured / formula - 1.0).abs() < 0.15,
        "measured {measured:.4}, (1 − e^(−n/m))^4 = {formula:.4}"
    );
}

/// More than 255 groups in flight on one counting-filter cell: the cell saturates. Had it
/// stayed at 255 and counted down with every completion, it would read 0 while the last
/// group is still in flight, and that group's reads would go to the source only (a stale
/// read once the destination takes writes). A saturated cell stays set until the pair's
/// registers are cleared: a false "in flight" (a double read) at worst.
#[test]
fn a_saturated_counting_cell_never_hides_a_group_in_flight() {
    let cbf_cells = 16;
    let mut sw = switch(1024, cbf_cells);
    assert_eq!(control(&mut sw, 0, init_all_groups()), (Status::Ok, 0));
    let hashes = |group| tofino::spec::filter_hashes(DEST_IP, SHARD, group);
    let cell = |group| hashes(group)[0] as usize % cbf_cells;
    let last = 1u32;
    // 300 more groups on the last one's cell of the first array.
    let others: Vec<u32> = (2..).filter(|&g| cell(g) == cell(last)).take(300).collect();
    let mut seq = 1;
    for &group in std::iter::once(&last).chain(&others) {
        assert_eq!(control(&mut sw, seq, start(group)), (Status::Ok, seq));
        seq += 1;
    }
    for &group in &others {
        assert_eq!(control(&mut sw, seq, complete(group)), (Status::Ok, seq));
        seq += 1;
    }
    let (decision, _) = sw.decide(*SOURCE.ip(), SHARD, u64::from(last), Op::Get);
    assert_eq!(
        decision,
        Decision::DoubleRead,
        "the last group is still in flight"
    );
    let slot = sw.pairs().next().unwrap().slot;
    let counting = sw.read_registers(true, 0, slot, 0, cbf_cells).unwrap();
    assert_eq!(counting[cell(last)], 255, "saturated, and stays so");
    let (decision, _) = sw.decide(*SOURCE.ip(), SHARD, u64::from(last), Op::Put);
    assert_eq!(decision, Decision::Redirect);
    assert_eq!(
        sw.counters().cbf_saturated,
        1,
        "one START saturated the cell"
    );
    // Once it completes, the group is done; the cell stays set until the pair goes.
    assert_eq!(control(&mut sw, seq, complete(last)), (Status::Ok, seq));
    let counting = sw.read_registers(true, 0, slot, 0, cbf_cells).unwrap();
    assert_eq!(counting[cell(last)], 255);
    assert_ne!(
        sw.decide(*SOURCE.ip(), SHARD, u64::from(last), Op::Get).0,
        Decision::Source
    );
    // The cut-over clears the slot: the next migration starts from zero.
    assert_eq!(
        control(&mut sw, seq + 1, terminate(0)),
        (Status::Ok, seq + 1)
    );
    assert_eq!(
        control_of(&mut sw, 2, 0, init_all_groups()),
        (Status::Ok, 0)
    );
    let slot = sw.pairs().next().unwrap().slot;
    assert!(sw
        .read_registers(true, 0, slot, 0, cbf_cells)
        .unwrap()
        .iter()
        .all(|&c| c == 0));
}
