#!/usr/bin/env python3
"""Offline tests of the controller's state machine, acknowledgement encoder and filter
indices, and of the constants the P4 program, the controller and the docs share.

No SDE needed: python3 -m unittest discover -s tofino/controller -p 'test_*.py'
"""

import importlib.util
import logging
import ipaddress
import os
import random
import re
import socket
import struct
import unittest
import zlib

import netmigrate_controller as nc


def setUpModule():
    logging.disable(logging.CRITICAL)

HERE = os.path.dirname(os.path.abspath(__file__))
P4_DIR = os.path.join(HERE, "..", "p4")
REPO = os.path.join(HERE, "..", "..")


def ip(s):
    return int(ipaddress.IPv4Address(s))


class FakeBackend(nc.Backend):
    """The switch as the state machine sees it, with a log of operations."""

    def __init__(self):
        self.seq = {}
        self.pairs = {}
        self.mirrors = {}
        self.ops = []

    def read_expected_seq(self, slot, partition):
        return self.seq.get((slot, partition), 0)

    def write_expected_seq(self, slot, partition, value):
        self.ops.append(("seq", slot, partition, value))
        self.seq[(slot, partition)] = value

    def clear_slot(self, slot):
        self.ops.append(("clear", slot))
        for k in [k for k in self.seq if k[0] == slot]:
            del self.seq[k]

    def install_pair(self, src_ip, shard, slot, dst_ip, dst_shard, size_exp, remain_exp, stream):
        self.ops.append(("install", src_ip, shard, slot))
        self.pairs[(src_ip, shard)] = (slot, dst_ip, dst_shard, size_exp, remain_exp, stream)

    def remove_pair(self, src_ip, shard):
        self.ops.append(("remove", src_ip, shard))
        del self.pairs[(src_ip, shard)]

    def set_mirror(self, slot, dev_port):
        self.ops.append(("mirror", slot, dev_port))
        self.mirrors[slot] = dev_port

    # The data plane's nm_expected_seq_apply, for GROUP_* messages.
    def group_message(self, slot, partition, seq):
        old = self.seq.get((slot, partition), 0)
        if old != 0 and old == seq:
            self.seq[(slot, partition)] = old + 1
        return old


SRC, DST = ip("10.0.0.1"), ip("10.0.0.2")


def init(partition=0, partitions=2, src=SRC, shard=3, dst=DST, dst_shard=3, size_exp=32,
         remain_exp=16, seq=0, stream=7):
    return dict(src_ip=src, shard=shard, dst_ip=dst, dst_shard=dst_shard, size_exp=size_exp,
                remain_exp=remain_exp, partitions=partitions, partition=partition,
                seq_hi=seq >> 32, seq_lo=seq & 0xFFFFFFFF, client=stream, reply_ip=src,
                reply_port=40000, switch_port=9000)


def terminate(partition, seq, src=SRC, shard=3, stream=7):
    return dict(src_ip=src, shard=shard, partition=partition, seq_hi=seq >> 32,
                seq_lo=seq & 0xFFFFFFFF, client=stream, reply_ip=src, reply_port=40000,
                switch_port=9000)


class CoreTest(unittest.TestCase):
    def setUp(self):
        self.be = FakeBackend()
        self.core = nc.Core(self.be, {DST: 136, ip("10.0.0.3"): 144}.get)

    def test_init_installs_pair_after_registers(self):
        self.assertEqual(self.core.on_init(init()), (nc.STATUS_OK, 0))
        kinds = [op[0] for op in self.be.ops]
        # A clean slot is not cleared again; the nm_pair entry comes last.
        self.assertEqual(kinds, ["seq", "mirror", "install"])
        self.assertEqual(self.be.seq[(0, 0)], 1)
        self.assertEqual(self.be.mirrors[0], 136)
        self.assertEqual(self.be.pairs[(SRC, 3)], (0, DST, 3, 32, 16, 7))

    def test_repeat_init_acknowledged_without_effect(self):
        self.core.on_init(init())
        self.be.group_message(0, 0, 1)
        self.be.group_message(0, 0, 2)
        before = list(self.be.ops)
        self.assertEqual(self.core.on_init(init()), (nc.STATUS_OK, 0))
        self.assertEqual(self.be.ops, before)
        self.assertEqual(self.be.seq[(0, 0)], 3)

    def test_second_partition_joins(self):
        self.core.on_init(init(partition=0))
        self.assertEqual(self.core.on_init(init(partition=1)), (nc.STATUS_OK, 0))
        self.assertEqual(self.be.seq[(0, 1)], 1)
        self.assertEqual(len([o for o in self.be.ops if o[0] == "install"]), 1)

    def test_init_errors(self):
        bad = [init(seq=1), init(size_exp=0), init(size_exp=33), init(remain_exp=32),
               init(partitions=0), init(partitions=65), init(partition=2, partitions=2),
               init(partition=64, partitions=64), init(dst=ip("10.9.9.9"))]
        for d in bad:
            self.assertEqual(self.core.on_init(d)[0], nc.STATUS_ERROR, d)
        self.assertEqual(self.be.ops, [])
        self.core.on_init(init())
        # Same pair, another destination.
        self.assertEqual(self.core.on_init(init(partition=1, dst_shard=4))[0], nc.STATUS_ERROR)
        # Like the software switch, other parameters of a later INIT are not compared.
        self.assertEqual(self.core.on_init(init(partition=1, remain_exp=8))[0], nc.STATUS_OK)

    def test_slots_run_out_and_come_back(self):
        for shard in range(nc.MAX_PAIRS):
            self.assertEqual(self.core.on_init(init(shard=shard, partitions=1))[0], nc.STATUS_OK)
        self.assertEqual(self.core.on_init(init(shard=99, partitions=1))[0], nc.STATUS_ERROR)
        self.assertEqual(self.core.on_terminate(terminate(0, 1, shard=2)), (nc.STATUS_OK, 1))
        self.assertEqual(self.core.on_init(init(shard=99, partitions=1))[0], nc.STATUS_OK)
        self.assertEqual(self.be.pairs[(SRC, 99)][0], 2)

    def test_terminate_sequence_rules(self):
        self.core.on_init(init(partition=0))
        self.core.on_init(init(partition=1))
        for seq in (1, 2, 3):
            self.assertEqual(self.be.group_message(0, 0, seq), seq)
        # A gap: dropped, re-acknowledged with the last applied.
        self.assertEqual(self.core.on_terminate(terminate(0, 9)), (nc.STATUS_OK, 3))
        self.assertEqual(self.be.seq[(0, 0)], 4)
        # Applied once.
        self.assertEqual(self.core.on_terminate(terminate(0, 4)), (nc.STATUS_OK, 4))
        self.assertEqual(self.be.seq[(0, 0)], 5)
        # Retransmission: not applied again, pair still there (partition 1 is running).
        self.assertEqual(self.core.on_terminate(terminate(0, 4)), (nc.STATUS_OK, 4))
        self.assertIn((SRC, 3), self.be.pairs)
        # The last partition terminates: pair removed, slot cleared, mirror disabled.
        self.assertEqual(self.core.on_terminate(terminate(1, 1)), (nc.STATUS_OK, 1))
        self.assertNotIn((SRC, 3), self.be.pairs)
        self.assertEqual(self.be.ops[-3:], [("remove", SRC, 3), ("mirror", 0, None), ("clear", 0)])
        # A repeat for the removed pair is acknowledged Ok.
        self.assertEqual(self.core.on_terminate(terminate(1, 1)), (nc.STATUS_OK, 1))

    def test_terminate_unknown_partition(self):
        self.core.on_init(init(partition=0))
        self.assertEqual(self.core.on_terminate(terminate(5, 1))[0], nc.STATUS_ERROR)
        self.assertEqual(self.core.on_terminate(terminate(64, 1, shard=77))[0], nc.STATUS_ERROR)

    def test_an_abort_before_every_partition_joined_frees_the_pair(self):
        # As tofino/tests/pipeline.rs: the TERMINATE of a partition that never joined counts.
        self.core.on_init(init(partition=0, partitions=3, stream=21))
        self.be.group_message(0, 0, 1)
        self.assertEqual(self.core.on_terminate(terminate(0, 2, stream=21)), (nc.STATUS_OK, 2))
        self.assertEqual(self.core.on_terminate(terminate(1, 1, stream=21)), (nc.STATUS_OK, 1))
        self.assertIn((SRC, 3), self.be.pairs)
        # A late INIT of partition 1 does not make it join; its TERMINATE again is a repeat.
        applied = self.core.stats["terminate_applied"]
        self.assertEqual(self.core.on_init(init(partition=1, partitions=3, stream=21)),
                         (nc.STATUS_OK, 0))
        self.assertNotIn((0, 1), self.be.seq)
        self.assertEqual(self.core.on_terminate(terminate(1, 1, stream=21)), (nc.STATUS_OK, 1))
        self.assertEqual(self.core.stats["terminate_applied"], applied)
        self.assertEqual(self.core.on_terminate(terminate(2, 1, stream=21)), (nc.STATUS_OK, 1))
        self.assertNotIn((SRC, 3), self.be.pairs)
        # The next migration starts from clean registers: its seq 1 is applied.
        self.assertEqual(self.core.on_init(init(partition=0, stream=22)), (nc.STATUS_OK, 0))
        slot = self.be.pairs[(SRC, 3)][0]
        self.assertEqual(self.be.group_message(slot, 0, 1), 1)

    def test_a_later_migration_of_the_same_shard_is_told_apart_by_its_stream(self):
        # As tofino/tests/pipeline.rs; group messages check the stream in the data plane
        # (set_pair's stream against hdr.nm.client).
        self.core.on_init(init(partitions=1, stream=11))
        self.assertEqual(self.core.on_terminate(terminate(0, 1, stream=11)), (nc.STATUS_OK, 1))
        self.assertEqual(self.be.pairs, {})
        # A late INIT of the finished migration is acknowledged and installs nothing.
        self.assertEqual(self.core.on_init(init(partitions=1, stream=11)), (nc.STATUS_OK, 0))
        self.assertEqual(self.be.pairs, {})
        self.assertEqual(self.core.on_init(init(partitions=1, stream=12)), (nc.STATUS_OK, 0))
        self.assertEqual(self.be.pairs[(SRC, 3)][-1], 12)
        # A late TERMINATE of the first one does not end the second one.
        self.assertEqual(self.core.on_terminate(terminate(0, 1, stream=11)), (nc.STATUS_OK, 1))
        self.assertIn((SRC, 3), self.be.pairs)
        # A third migration of the shard is refused while the second one runs.
        self.assertEqual(self.core.on_init(init(partitions=1, stream=13))[0], nc.STATUS_ERROR)
        self.assertEqual(self.core.on_terminate(terminate(0, 1, stream=12)), (nc.STATUS_OK, 1))
        self.assertEqual(self.be.pairs, {})

    def test_a_refused_migration_is_retired_by_its_terminate(self):
        # As tofino/tests/pipeline.rs.
        self.core.on_init(init(partitions=1, stream=31))
        self.assertEqual(self.core.on_init(init(partitions=1, stream=32))[0], nc.STATUS_ERROR)
        self.assertEqual(self.core.on_terminate(terminate(0, 1, stream=32))[0], nc.STATUS_OK)
        self.assertEqual(self.core.on_terminate(terminate(0, 1, stream=31))[0], nc.STATUS_OK)
        self.assertEqual(self.core.on_init(init(partitions=1, stream=32)), (nc.STATUS_OK, 0))
        self.assertEqual(self.be.pairs, {})
        self.assertEqual(self.core.on_terminate(terminate(0, 1, stream=33))[0], nc.STATUS_OK)
        self.assertEqual(self.core.on_init(init(partitions=1, stream=33)), (nc.STATUS_OK, 0))
        self.assertEqual(self.be.pairs, {})

    def test_retired_streams_are_bounded(self):
        for stream in range(1, nc.RETIRED_STREAMS + 2):
            self.core.on_terminate(terminate(0, 1, stream=stream))
        self.assertEqual(len(self.core.retired), nc.RETIRED_STREAMS)
        self.assertNotIn((SRC, 3, 1), self.core.retired)

    def test_dirty_slot_is_cleared_before_reuse(self):
        self.core.on_init(init(partitions=1))
        self.core.clean_slots.discard(1)
        self.core.free_slots = [1] + [s for s in self.core.free_slots if s != 1]
        self.core.on_init(init(shard=5, partitions=1))
        self.assertIn(("clear", 1), self.be.ops)


class FakeData(object):
    def __init__(self, d):
        self.d = d

    def to_dict(self):
        return dict(self.d)


class FakeSender(object):
    def __init__(self):
        self.frames = []

    def send(self, frame):
        self.frames.append(frame)
        return True


class DigestTest(unittest.TestCase):
    def test_every_element_of_a_digest_list_is_handled(self):
        be = FakeBackend()
        core = nc.Core(be, {DST: 136}.get)
        cfg = nc.PortsConfig.from_doc({
            "switch": {"ip": "10.0.0.100", "mac": "02:00:00:00:00:64"},
            "hosts": [{"name": "a", "ip": "10.0.0.1", "mac": "02:00:00:00:00:01", "dev_port": 128},
                      {"name": "b", "ip": "10.0.0.2", "mac": "02:00:00:00:00:02", "dev_port": 136}]})
        sender = FakeSender()
        batch = [FakeData(init(partition=p, partitions=3)) for p in range(3)]
        n = nc.process_digest("nm_init_digest", batch, core.on_init, nc.OP_SWITCH_INIT, cfg, sender)
        self.assertEqual(n, 3)
        self.assertEqual(sorted(be.seq), [(0, 0), (0, 1), (0, 2)])


class AckTest(unittest.TestCase):
    def test_ack_frame(self):
        frame = nc.build_ack("02:00:00:00:00:64", "02:00:00:00:00:01", "10.0.0.100", "10.0.0.1",
                             9000, 40000, nc.OP_SWITCH_INIT, nc.STATUS_OK, 3, 5, 0x01020304)
        self.assertEqual(len(frame), 14 + 20 + 8 + 32)
        eth, iph, udp, nm = frame[:14], frame[14:34], frame[34:42], frame[42:]
        self.assertEqual(eth[12:14], b"\x08\x00")
        self.assertEqual(nc.inet_checksum(iph), 0)
        self.assertEqual(socket.inet_ntoa(iph[12:16]), "10.0.0.100")
        self.assertEqual(socket.inet_ntoa(iph[16:20]), "10.0.0.1")
        sport, dport, ulen, _ = struct.unpack("!HHHH", udp)
        self.assertEqual((sport, dport, ulen), (9000, 40000, 40))
        pseudo = iph[12:20] + struct.pack("!BBH", 0, 17, ulen)
        self.assertEqual(nc.inet_checksum(pseudo + udp + nm), 0)
        magic, version, op, flags, status, shard, seq, khash, client, gap = struct.unpack(
            "!HBBBBHQQII", nm)
        self.assertEqual((magic, version, op, flags, status, shard, seq, client),
                         (0x4E4D, 1, 0xC0, 0, 0, 3, 5, 0x01020304))


class FilterTest(unittest.TestCase):
    def test_crc_check_values(self):
        self.assertEqual(nc.cmd_selftest(None), 0)

    def test_iso_hdlc_is_zlib_crc32(self):
        data = nc.filter_tuple("10.1.2.3", 7, 123456)
        self.assertEqual(nc.filter_hashes("10.1.2.3", 7, 123456)[1], zlib.crc32(data))

    def test_no_two_hashes_differ_by_a_constant(self):
        # CRC-32/BZIP2 = CRC-32/MPEG-2 ^ 0xFFFFFFFF would give the filters three hashes,
        # not four (docs/switch.md, "Group id and filter indices").
        rng = random.Random(5)
        samples = [nc.filter_hashes(rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32))
                   for _ in range(200)]
        for i in range(4):
            for j in range(i + 1, 4):
                for bits in (1, 4, 12, 20, 32):
                    mask = (1 << bits) - 1
                    diffs = set((h[i] ^ h[j]) & mask for h in samples)
                    self.assertGreater(len(diffs), 1, (i + 1, j + 1, bits))

    def test_vectors_match_the_software_switch(self):
        # tofino/src/spec.rs computes them with the crc crate; here bit by bit.
        spec = read(os.path.join(REPO, "tofino", "src", "spec.rs"))
        m = re.search(r"filter_hashes\(Ipv4Addr::new\(10, 0, 0, 3\), 1, 0x1234\),\s*\[([^\]]*)\]", spec)
        want = [int(x.strip().replace("_", ""), 16) for x in m.group(1).split(",") if x.strip()]
        self.assertEqual(nc.filter_hashes("10.0.0.3", 1, 0x1234), want)

    def test_tuple_layout(self):
        self.assertEqual(nc.filter_tuple("10.0.0.2", 0x0102, 0x0A0B0C0D).hex(),
                         "0a0000020102" + "0a0b0c0d")

    def test_group_of(self):
        # docs/wire.md and REFERENCE-ARTIFACT.md section 3 vectors.
        self.assertEqual(nc.group_of(0xC5FAE977BFC90C32, 28, 11), 129313)
        self.assertEqual(nc.group_of(0x3EC78F441C7EC54E, 28, 11), 102360)
        self.assertEqual(nc.group_of(0xC5FAE977BFC90C32, 32, 16), 0xBFC9)

    def test_cell_indices(self):
        self.assertEqual(nc.cell_indices([0xFFFFFFFF, 0], 4096, slot=2), [3 * 4096 - 1, 2 * 4096])


def read(path):
    with open(path) as f:
        return f.read()


def defines():
    out = {}
    for m in re.finditer(r"^#define\s+(\w+)\s+(0x[0-9A-Fa-f]+|\d+)\b", read(os.path.join(P4_DIR, "defines.p4")), re.M):
        out[m.group(1)] = int(m.group(2), 0)
    return out


class ConsistencyTest(unittest.TestCase):
    """The P4 program, the controller and the docs must agree on shared names and numbers."""

    def test_sizes_and_codes(self):
        d = defines()
        self.assertEqual(d["MAX_PAIRS"], nc.MAX_PAIRS)
        self.assertEqual(1 << d["NM_SLOT_BITS"], d["MAX_PAIRS"])
        self.assertEqual(d["MAX_PARTITIONS"], nc.MAX_PARTITIONS)
        self.assertEqual(1 << d["NM_PARTITION_BITS"], d["MAX_PARTITIONS"])
        self.assertEqual(1 << d["BF_CELLS_LOG2"], nc.DEFAULT_BF_CELLS)
        self.assertEqual(1 << d["CBF_CELLS_LOG2"], nc.DEFAULT_CBF_CELLS)
        self.assertEqual(d["NM_MIRROR_SESSION_BASE"], nc.MIRROR_SESSION_BASE)
        self.assertEqual(d["NM_MAGIC"], nc.NM_MAGIC)
        self.assertEqual(d["NM_VERSION"], nc.NM_VERSION)
        self.assertEqual(d["NM_MAGIC_VERSION"], (nc.NM_MAGIC << 8) | nc.NM_VERSION)
        self.assertEqual(d["NM_OP_SWITCH_INIT"], nc.OP_SWITCH_INIT)
        self.assertEqual(d["NM_OP_SWITCH_TERMINATE"], nc.OP_SWITCH_TERMINATE)
        self.assertEqual(d["NM_OP_REPLY_BIT"], nc.REPLY_BIT)
        self.assertEqual(d["NM_STATUS_ERROR"], nc.STATUS_ERROR)
        self.assertEqual(d["NM_FLAG_DOUBLE_READ"], 0x02)
        self.assertEqual(d["NM_FLAG_REDIRECTED"], 0x04)
        self.assertEqual(d["NM_FLAG_FORWARDED"], 0x10)
        self.assertEqual([d["NM_OP_" + n] for n in ("GET", "PUT", "DELETE", "MULTI_GET",
                                                    "MULTI_PUT", "MULTI_DELETE")], [1, 2, 3, 4, 5, 6])

    def test_counter_names(self):
        d = defines()
        for i, name in enumerate(nc.COUNTER_NAMES):
            self.assertEqual(d["NM_CTR_" + name.upper()], i, name)
        self.assertLessEqual(len(nc.COUNTER_NAMES), d["NM_CTR_SIZE"])
        self.assertIn("multi_splits", nc.COUNTER_NAMES)
        docs = read(os.path.join(REPO, "docs", "switch.md"))
        section = docs[docs.index("## Counters"):]
        per_decision = section[section.index("Per decision:"):]
        per_decision = per_decision[:per_decision.index("\n\n")]
        names = re.findall(r"`(\w+)`", per_decision)
        self.assertEqual(names, nc.COUNTER_NAMES[:len(names)])
        # The saturation counter: its own P4 counter, the software switch's field.
        self.assertIn("`cbf_saturated`", section)
        self.assertIn("nm_cbf_saturated", read(os.path.join(P4_DIR, "netmigrate.p4")))
        rust = read(os.path.join(REPO, "tofino", "src", "pipeline.rs"))
        self.assertIn("pub cbf_saturated: u64,", rust)

    def test_crc_configurations_match_the_p4_program(self):
        p4 = read(os.path.join(P4_DIR, "netmigrate.p4"))
        polys = re.findall(r"CRCPolynomial<bit<32>>\(32w(0x[0-9A-F]+),\s*(true|false),\s*false,\s*false,"
                           r"\s*32w(0x[0-9A-F]+),\s*32w(0x[0-9A-F]+)\)\s*(\w+);", p4)
        self.assertEqual(len(polys), 4)
        by_name = dict((p[4], p) for p in polys)
        hashes = re.findall(r"Hash<bit<32>>\(HashAlgorithm_t.CUSTOM,\s*(\w+)\)\s*nm_hash_(\d)", p4)
        self.assertEqual([h[1] for h in hashes], ["1", "2", "3", "4"])
        for (poly_name, _), (_, poly, refl, init, xo) in zip(hashes, nc.CRC_CONFIGS):
            coeff, reversed_, p_init, p_xor, _ = by_name[poly_name]
            self.assertEqual((int(coeff, 16), reversed_ == "true", int(p_init, 16), int(p_xor, 16)),
                             (poly, refl, init, xo), poly_name)

    def test_docs_names_appear_in_p4(self):
        p4 = read(os.path.join(P4_DIR, "netmigrate.p4"))
        for name in ("nm_pair", "set_pair", "nm_expected_seq", "ipv4_route", "forward",
                     "nm_bloom_##i", "nm_counting_bloom_##i"):
            self.assertIn(name, p4)
        for i in range(1, 5):
            self.assertIn("NM_BLOOM(%d)" % i, p4)
            self.assertIn("NM_COUNTING_BLOOM(%d)" % i, p4)

    def test_retired_streams_match_the_software_switch(self):
        path = os.path.join(REPO, "tofino", "src", "spec.rs")
        m = re.search(r"pub const RETIRED_STREAMS: usize = (\d+);", read(path))
        self.assertEqual(int(m.group(1)), nc.RETIRED_STREAMS)

    def test_flags_match_the_rust_wire_code(self):
        path = os.path.join(REPO, "dataplane", "src", "wire", "op.rs")
        if not os.path.exists(path):
            self.skipTest("dataplane/src/wire/op.rs not found")
        rust = read(path)
        d = defines()
        for name in ("DOUBLE_READ", "REDIRECTED", "FORWARDED"):
            m = re.search(r"const %s: Flags = Flags\((0x[0-9A-Fa-f]+)\)" % name, rust)
            if m:
                self.assertEqual(int(m.group(1), 16), d["NM_FLAG_" + name], name)
        for rust_name, p4_name in (("SwitchInit", "NM_OP_SWITCH_INIT"),
                                   ("SwitchGroupStart", "NM_OP_SWITCH_GROUP_START"),
                                   ("SwitchGroupComplete", "NM_OP_SWITCH_GROUP_COMPLETE"),
                                   ("SwitchTerminate", "NM_OP_SWITCH_TERMINATE")):
            m = re.search(r"\b%s = (0x[0-9A-Fa-f]+)" % rust_name, rust)
            if m:
                self.assertEqual(int(m.group(1), 16), d[p4_name], rust_name)

    def test_ports_example_parses(self):
        if importlib.util.find_spec("yaml") is None:
            self.skipTest("PyYAML not installed")
        cfg = nc.PortsConfig.load(os.path.join(HERE, "ports.example.yaml"))
        self.assertTrue(cfg.hosts)
        self.assertEqual(len(set(h.ip for h in cfg.hosts)), len(cfg.hosts))


# ---------------------------------------------------------------------------
# A model of the P4 request path built from the program's own text
# ---------------------------------------------------------------------------
#
# There is no P4 compiler here. These tests read the const tables (keys, entries in
# order, defaults) and the action bodies of netmigrate.p4 with regular expressions,
# execute them on a dictionary of fields (sequential P4 semantics, results cut to the
# field widths of headers.p4), and drive them with a hand-written copy of the ingress
# control flow. What they check is the decision logic, the table entries and the
# field rewrites, against the multi-key behaviour of the software switch; they cannot
# check that bf-p4c accepts or places the program.


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


class P4Program(object):
    EXTRA_WIDTHS = {"ig_dprsr_md.mirror_type": 3, "ig_dprsr_md.drop_ctl": 3,
                    "ig_dprsr_md.digest_type": 3, "ig_tm_md.ucast_egress_port": 9,
                    "eg_dprsr_md.drop_ctl": 3}

    def __init__(self):
        self.defines = self._defines()
        self.p4 = self._expand_group_shift(strip_comments(read(os.path.join(P4_DIR, "netmigrate.p4"))))
        self.headers = strip_comments(read(os.path.join(P4_DIR, "headers.p4")))
        self.parsers = strip_comments(read(os.path.join(P4_DIR, "parsers.p4")))
        self.types = self._types()
        self._actions, self._tables, self._compiled = {}, {}, {}
        self.widths = dict(self.EXTRA_WIDTHS)
        for inst, typ in self.types["headers_t"].items():
            for field, width in self.types[typ].items():
                self.widths["hdr.%s.%s" % (inst, field)] = width
        for prefix, struct in (("ig_md", "ingress_metadata_t"), ("eg_md", "egress_metadata_t")):
            for field, width in self.types[struct].items():
                self.widths["%s.%s" % (prefix, field)] = width

    @staticmethod
    def _defines():
        """Object-like macros of defines.p4, evaluated; where #if branches define a name
        twice, the first (Tofino 1) definition."""
        out = {}
        text = strip_comments(read(os.path.join(P4_DIR, "defines.p4")))
        for name, value in re.findall(r"^#define\s+(\w+)[ \t]+([^\n]+)$", text, re.M):
            if name in out:
                continue
            py = re.sub(r"\b0x[0-9A-Fa-f]+|\b\d+|[A-Za-z_]\w*",
                        lambda m: m.group(0) if m.group(0)[0].isdigit() else str(out[m.group(0)]),
                        value.strip())
            out[name] = eval(py, {})
        return out

    @staticmethod
    def _expand_group_shift(text):
        """Expands the one function-like macro that defines actions, NM_GROUP_SHIFT(n)."""
        m = re.search(r"#define NM_GROUP_SHIFT\(n\)((?:[^\n]*\\\n)*[^\n]*)", text)
        body = m.group(1).replace("\\\n", "\n")
        def expand(call):
            k = call.group(1)
            return re.sub(r"\bn\b", k, body.replace("##n", k)) + "\n"
        return text[:m.end()] + re.sub(r"NM_GROUP_SHIFT\((\d+)\)", expand, text[m.end():])

    def num(self, token):
        token = token.strip()
        m = re.match(r"^\d+w(.+)$", token)
        if m:
            token = m.group(1)
        if token in self.defines:
            return self.defines[token]
        return int(token, 0)

    def _types(self):
        typedefs = {"mac_addr_t": 48, "ipv4_addr_t": 32, "MirrorId_t": 10, "PortId_t": 9}
        for m in re.finditer(r"typedef bit<(\w+)>\s+(\w+);", self.headers):
            typedefs[m.group(2)] = self.num(m.group(1))
        types = {}
        for m in re.finditer(r"(?:header|struct) (\w+) \{(.*?)\}", self.headers, re.S):
            fields = {}
            for line in m.group(2).splitlines():
                f = re.match(r"\s*(bit<(\w+)>|\w+)\s+(\w+);", line)
                if not f:
                    continue
                typ, width, name = f.groups()
                if width is not None:
                    fields[name] = self.num(width)
                else:
                    fields[name] = typedefs.get(typ, typ)    # a width, or a header type
            types[m.group(1)] = fields
        return types

    def header_bytes(self, typ):
        bits = sum(self.types[typ].values())
        assert bits % 8 == 0, typ
        return bits // 8

    # -- actions ---------------------------------------------------------------

    def action(self, name):
        if name not in self._actions:
            self._actions[name] = self._parse_action(name)
        return self._actions[name]

    def _parse_action(self, name):
        m = re.search(r"\baction %s\(([^)]*)\)\s*\{(.*?)\n    \}" % name, self.p4, re.S)
        if m is None:
            raise KeyError("action %s not found" % name)
        params = [p.split()[-1] for p in m.group(1).split(",") if p.strip()]
        stmts = [st.strip() for st in m.group(2).split(";") if st.strip()]
        return params, stmts

    def eval(self, expr, env, scope):
        def token(m):
            tok = m.group(0)
            if tok[0].isdigit():
                return str(self.num(tok))
            if tok in scope:
                return str(scope[tok])
            if tok in self.defines:
                return str(self.defines[tok])
            if "." in tok:
                return "env.get(%r, 0)" % tok
            raise KeyError("unknown name %s in %r" % (tok, expr))
        key = (expr, tuple(sorted(scope.items())))
        if key not in self._compiled:
            py = re.sub(r"\d+w0x[0-9A-Fa-f]+|\d+w\d+|0x[0-9A-Fa-f]+|\d+|[A-Za-z_][\w.]*", token, expr)
            self._compiled[key] = compile(py, "<p4 %s>" % expr, "eval")
        return eval(self._compiled[key], {"env": env})

    def run_action(self, name, env, args=()):
        params, stmts = self.action(name)
        scope = dict(zip(params, args))
        for st in stmts:
            m = re.match(r"^([\w.]+)\.(setValid|setInvalid)\(\)$", st)
            if m:
                env[m.group(1) + ".$valid"] = 1 if m.group(2) == "setValid" else 0
                continue
            m = re.match(r"^([\w.]+)\s*=\s*(.+)$", st, re.S)
            if m is None:
                raise ValueError("cannot model statement %r of %s" % (st, name))
            lhs = m.group(1)
            env[lhs] = self.eval(m.group(2), env, scope) & ((1 << self.widths[lhs]) - 1)
        return name

    # -- tables ----------------------------------------------------------------

    def table(self, name):
        if name not in self._tables:
            self._tables[name] = self._parse_table(name)
        return self._tables[name]

    def _parse_table(self, name):
        m = re.search(r"\btable %s \{(.*?)\n    \}" % name, self.p4, re.S)
        body = m.group(1)
        keys = re.findall(r"([\w.]+)\s*:\s*(?:exact|ternary|lpm)\b",
                          re.search(r"key = \{(.*?)\}", body, re.S).group(1))
        d = re.search(r"default_action = (\w+)\((.*?)\);", body)
        default = (d.group(1), [self.num(a) for a in d.group(2).split(",") if a.strip()])
        entries = []
        block = re.search(r"const entries = \{(.*?)\n        \}", body, re.S)
        for line in (block.group(1).splitlines() if block else []):
            e = re.match(r"\s*(\(.*?\)|[^:(]+?)\s*:\s*(\w+)\((.*?)\);\s*$", line)
            if not e:
                continue
            specs = [k.strip() for k in e.group(1).strip().strip("()").split(",")]
            assert len(specs) == len(keys), (name, line)
            args = [self.num(a) for a in e.group(3).split(",") if a.strip()]
            entries.append((specs, e.group(2), args))
        return keys, entries, default

    def matches(self, spec, value):
        if spec == "_":
            return True
        if "&&&" in spec:
            v, mask = [self.num(x) for x in spec.split("&&&")]
            return value & mask == v & mask
        return value == self.num(spec)

    def apply(self, name, env):
        """First matching const entry (entries match in the order written), else the default."""
        keys, entries, default = self.table(name)
        values = [env.get(k, 0) for k in keys]
        for specs, action, args in entries:
            if all(self.matches(sp, v) for sp, v in zip(specs, values)):
                return self.run_action(action, env, args)
        return self.run_action(default[0], env, default[1])


P4 = None


def p4():
    global P4
    if P4 is None:
        P4 = P4Program()
    return P4


SRC_IP, SRC_SHARD, DST_IP, DST_SHARD = ip("10.0.0.1"), 3, ip("10.0.0.2"), 5
OP_GET, OP_PUT, OP_DELETE, OP_MULTI_GET, OP_MULTI_PUT, OP_MULTI_DELETE = 1, 2, 3, 4, 5, 6
MULTI_OPS = (OP_MULTI_GET, OP_MULTI_PUT, OP_MULTI_DELETE)
DOUBLE_READ, REDIRECTED = 0x02, 0x04


def filter_bits(state, rng):
    """(cbf1..4, bf1..4) of a group in state S1 (not started), S2 (in flight) or S3 (done);
    partial patterns stand for other groups' cells."""
    def some_not_all():
        bits = [rng.randint(0, 1) for _ in range(4)]
        if all(bits):
            bits[rng.randrange(4)] = 0
        return bits
    if state == "S1":
        return some_not_all() + some_not_all()
    if state == "S2":
        return [1, 1, 1, 1] + [rng.randint(0, 1) for _ in range(4)]
    return some_not_all() + [1, 1, 1, 1]


def request(op, hashes, serve=None, halves=0, flags=0, count=None, udp_len=None):
    env = {"hdr.ipv4.dst_addr": SRC_IP, "hdr.nm.shard": SRC_SHARD, "hdr.nm.op": op,
           "hdr.nm.flags": flags, "hdr.nm.key_hash_lo": hashes[0] & 0xFFFFFFFF,
           "hdr.udp.checksum": 0xBEEF}
    if op in MULTI_OPS:
        n = len(hashes)
        env.update({"hdr.nm_multi.$valid": 1,
                    "hdr.nm_multi.count": n if count is None else count,
                    "hdr.nm_multi.serve": (1 << n) - 1 if serve is None else serve,
                    "hdr.nm_multi.halves": halves,
                    "hdr.udp.len": 8 + 32 + 8 + 8 * n + 6 * n if udp_len is None else udp_len})
    else:
        env["hdr.udp.len"] = 8 + 32 + 5 if udp_len is None else udp_len
    return env


def model_pass(prog, packet, hashes, recirc, filters, pair, copy_of):
    """One ingress pass (and the egress rewrite of a mirror copy). Returns
    ("recirc", nm_recirc fields, counter) or ("out", [packets], counter)."""
    d = prog.defines
    env = dict(packet)
    op = env["hdr.nm.op"]
    multi = op in MULTI_OPS
    # Parser (parsers.p4): kind, key_lo, item_bit / multi, index and masks.
    env["ig_md.kind"] = d["NM_KIND_READ"] if op in (OP_GET, OP_MULTI_GET) else d["NM_KIND_WRITE"]
    if not multi:
        env["ig_md.key_lo"] = env["hdr.nm.key_hash_lo"]
        env["ig_md.item_bit"] = 1
    else:
        env["ig_md.multi"] = 1
        index = 0
        if recirc is not None:
            index = recirc["index"]
            assert 0 < index < 16, index
            env["ig_md.multi_index"] = index
            env["ig_md.mask_source"] = recirc["to_source"]
            env["ig_md.mask_dest"] = recirc["to_dest"]
            env["ig_md.mask_dr"] = recirc["dr"]
            env["ig_md.halves_source"] = recirc["halves_source"]
            env["ig_md.halves_dest"] = recirc["halves_dest"]
        env["ig_md.key_lo"] = hashes[index] & 0xFFFFFFFF
    # Ingress control (netmigrate.p4 apply), request path.
    env["ig_md.ctr"] = d["NM_CTR_FORWARDED"]
    if multi:
        prog.apply("nm_item", env)
        prog.apply("nm_multi_count", env)
    steered = env["hdr.udp.len"] >= d["NM_HEADER_LEN"] + 8 and pair
    if multi and (env.get("ig_md.multi_slack", 0) >> 15 or env["hdr.nm_multi.serve"] == 0 or
                  env.get("ig_md.multi_outside", 0) or env.get("ig_md.multi_stray", 0)):
        steered = False
    if not steered:
        out = dict((k, v) for k, v in packet.items())
        return "out", [out], "forwarded"
    env.update({"ig_md.pair_hit": 1, "ig_md.dst_ip": DST_IP, "ig_md.dst_shard": DST_SHARD,
                "ig_md.size_exp": 32, "ig_md.remain_exp": 16})
    prog.apply("nm_group_mask", env)
    prog.apply("nm_group_shift", env)
    bits = filters.get(env["ig_md.group"], [0] * 8)
    for i in range(4):
        env["ig_md.cbf%d" % (i + 1)] = bits[i]
        env["ig_md.bf%d" % (i + 1)] = bits[4 + i]
    prog.apply("nm_decide", env)
    left = env.get("ig_md.multi_left", 0)
    counter = lambda: nc.COUNTER_NAMES[env["ig_md.ctr"]]
    if left != 0 and left >> 4 == 0:
        prog.run_action("recirculate", env)
        assert env["hdr.nm_recirc.$valid"] == 1
        assert env["ig_tm_md.ucast_egress_port"] == d["NM_RECIRC_PORT"]
        assert env["ig_md.consumed"] == 1
        fields = ("pkt_type", "index", "to_source", "to_dest", "dr", "halves_source",
                  "halves_dest")
        return "recirc", dict((f, env["hdr.nm_recirc." + f]) for f in fields), counter()
    prog.apply("nm_steer", env)
    original = dict((k, v) for k, v in env.items() if k.startswith("hdr."))
    if original["hdr.ipv4.dst_addr"] != packet["hdr.ipv4.dst_addr"]:
        assert env.get("ig_md.ipv4_csum_update") == 1
    outs = [original]
    if env.get("ig_dprsr_md.mirror_type", 0) == d["NM_MIRROR_TYPE_I2E"]:
        base = original if copy_of == "deparsed" else packet
        copy = dict((k, v) for k, v in base.items() if k.startswith("hdr."))
        copy.update({"hdr.mirror.$valid": 1, "hdr.mirror.dst_ip": env["ig_md.dst_ip"],
                     "hdr.mirror.dst_shard": env["ig_md.dst_shard"],
                     "hdr.mirror.flags": env.get("ig_md.mirror_flags", 0),
                     "hdr.mirror.serve": env.get("ig_md.mirror_serve", 0),
                     "hdr.mirror.halves": env.get("ig_md.mirror_halves", 0)})
        prog.run_action("redirect_copy", copy)
        if copy.get("hdr.nm_multi.$valid"):
            prog.run_action("select_copy_items", copy)
        assert copy["eg_md.ipv4_csum_update"] == 1
        outs.append(copy)
    return "out", outs, counter()


def model_request(prog, packet, hashes, filters, pair=lambda n: True, copy_of="deparsed"):
    """Every pass of one request: (packets out, counter per pass)."""
    recirc, counters = None, []
    for n in range(1, 17):
        kind, result, counter = model_pass(prog, packet, hashes, recirc, filters, pair(n), copy_of)
        counters.append(counter)
        if kind == "out":
            return result, counters
        recirc = result
    raise AssertionError("more than 16 passes")


def summary(packet):
    """Where a packet goes and what the servers see of it."""
    if (packet["hdr.ipv4.dst_addr"], packet["hdr.nm.shard"]) == (SRC_IP, SRC_SHARD):
        where = "source"
    elif (packet["hdr.ipv4.dst_addr"], packet["hdr.nm.shard"]) == (DST_IP, DST_SHARD):
        where = "dest"
    else:
        where = "elsewhere"
    return (where, packet.get("hdr.nm_multi.serve"), packet.get("hdr.nm_multi.halves"),
            packet["hdr.nm.flags"])


def spec_outcome(op, hashes, states, serve, halves, flags):
    """What the software switch does (tofino/src/pipeline.rs: process for one key,
    steer_multi for several), from the groups' exact states; None if it does not steer."""
    multi = op in MULTI_OPS
    read = op in (OP_GET, OP_MULTI_GET)
    n = len(states)
    if multi and (serve == 0 or serve >> n or halves & ~serve):
        return None                      # MultiRoute::read refuses it: forwarded
    to_source = to_dest = double = 0
    for i, state in enumerate(states):
        if multi and not serve >> i & 1:
            continue
        bit = 1 << i if multi else 1
        if state == "S1":
            to_source |= bit
        elif state == "S2" and read:
            double |= bit
        else:
            to_dest |= bit
    if not multi:
        if to_source:
            return [("source", None, None, flags)], "to_source"
        if to_dest:
            return [("dest", None, None, flags | REDIRECTED)], "redirects"
        return [("source", None, None, flags | DOUBLE_READ),
                ("dest", None, None, flags | DOUBLE_READ | REDIRECTED)], "double_reads"
    if to_dest == 0 and double == 0:
        return [("source", serve, halves, flags)], "to_source"
    marked = flags | (DOUBLE_READ if double else 0)
    halves |= double
    if to_source == 0 and double == 0:
        return [("dest", to_dest, halves & to_dest, marked | REDIRECTED)], "redirects"
    counter = "double_reads" if to_source == 0 and to_dest == 0 else "multi_splits"
    s_serve, d_serve = to_source | double, to_dest | double
    return [("source", s_serve, halves & s_serve, marked),
            ("dest", d_serve, halves & d_serve, marked | REDIRECTED)], counter


class MultiKeyModelTest(unittest.TestCase):
    """The P4 tables and actions, run by the model above, against the specification."""

    def setUp(self):
        import random
        self.prog = p4()
        self.rng = random.Random(7)

    def case(self, op, states, serve=None, halves=0, flags=0):
        n = len(states)
        # One group per item (group = hash[31:16] with size_exp 32, remain_exp 16).
        hashes = [(0x1234 << 32) | ((100 + i) << 16) | self.rng.randrange(1 << 16) for i in range(n)]
        filters = dict((100 + i, filter_bits(st, self.rng)) for i, st in enumerate(states))
        if serve is None:
            serve = (1 << n) - 1
        packet = request(op, hashes, serve=serve, halves=halves, flags=flags)
        outcome = spec_outcome(op, hashes, states, serve, halves, flags)
        if outcome is None:
            outs, counters = model_request(self.prog, packet, hashes, filters)
            self.assertEqual((outs, counters), ([packet], ["forwarded"]), (op, states, serve, halves))
            return
        want, want_counter = outcome
        for copy_of in ("deparsed", "received"):
            outs, counters = model_request(self.prog, packet, hashes, filters, copy_of=copy_of)
            what = (op, states, serve, halves, flags, copy_of)
            self.assertEqual(sorted(summary(p) for p in outs), sorted(want), what)
            self.assertEqual(counters[-1], want_counter, what)
            passes = n if op in MULTI_OPS else 1
            self.assertEqual(counters, ["multi_recirculations"] * (passes - 1) + [want_counter], what)
            for p in outs:
                if p == packet or all(p.get(k) == v for k, v in packet.items()):
                    continue
                # Anything rewritten leaves with UDP checksum 0 (README: deviations).
                self.assertEqual(p["hdr.udp.checksum"], 0, what)
            if want_counter == "to_source":
                self.assertEqual(len(outs), 1)
                for k, v in packet.items():
                    self.assertEqual(outs[0].get(k), v, (what, k))

    def test_single_key_requests_unchanged_by_the_refactor(self):
        for op in (OP_GET, OP_PUT, OP_DELETE):
            for state in ("S1", "S2", "S3"):
                for flags in (0, 0x08):
                    self.case(op, [state], flags=flags)

    def test_every_combination_of_up_to_three_items(self):
        import itertools
        for op in MULTI_OPS:
            for n in (1, 2, 3):
                for states in itertools.product(("S1", "S2", "S3"), repeat=n):
                    self.case(op, list(states))

    def test_serve_selects_items_and_halves_accumulate(self):
        import itertools
        for op in (OP_MULTI_GET, OP_MULTI_PUT):
            for states in itertools.product(("S1", "S2", "S3"), repeat=3):
                for serve in range(8):
                    for halves in range(8):
                        if halves & ~serve == 0:
                            self.case(op, list(states), serve=serve, halves=halves, flags=0x08)

    def test_selections_the_software_switch_refuses_are_forwarded(self):
        # serve 0, serve naming an item at or above count, halves outside serve.
        for serve, halves in ((0, 0), (0b1000, 0), (0b10111, 0), (0b011, 0b100), (0b001, 0b010)):
            self.case(OP_MULTI_GET, ["S3", "S2", "S1"], serve=serve, halves=halves)

    def test_up_to_sixteen_items(self):
        for _ in range(300):
            op = self.rng.choice(MULTI_OPS)
            n = self.rng.randint(1, 16)
            states = [self.rng.choice(("S1", "S2", "S3")) for _ in range(n)]
            serve = self.rng.randrange(1, 1 << n) if self.rng.random() < 0.3 else (1 << n) - 1
            halves = serve & self.rng.randrange(1 << n) if self.rng.random() < 0.3 else 0
            self.case(op, states, serve=serve, halves=halves)

    def test_the_software_switch_test_vectors(self):
        # tofino/tests/pipeline.rs multi_key_requests_are_split_per_key: groups
        # 1 (not started), 2 (in flight), 3 (done), twice each.
        states = ["S1", "S2", "S3", "S1", "S2", "S3"]
        got = self._route(OP_MULTI_GET, states)
        self.assertEqual(got, sorted([("source", 0b011011, 0b010010, DOUBLE_READ),
                                      ("dest", 0b110110, 0b010010, DOUBLE_READ | REDIRECTED)]))
        for op in (OP_MULTI_PUT, OP_MULTI_DELETE):
            self.assertEqual(self._route(op, states),
                             sorted([("source", 0b001001, 0, 0), ("dest", 0b110110, 0, REDIRECTED)]))
        self.assertEqual(self._route(OP_MULTI_PUT, ["S1", "S1"]), [("source", 0b11, 0, 0)])
        self.assertEqual(self._route(OP_MULTI_GET, ["S3", "S3"]), [("dest", 0b11, 0, REDIRECTED)])
        self.assertEqual(self._route(OP_MULTI_GET, ["S2", "S2"]),
                         sorted([("source", 0b11, 0b11, DOUBLE_READ),
                                 ("dest", 0b11, 0b11, DOUBLE_READ | REDIRECTED)]))

    def _route(self, op, states):
        hashes = [(100 + i) << 16 for i in range(len(states))]
        filters = dict((100 + i, filter_bits(st, self.rng)) for i, st in enumerate(states))
        outs, _ = model_request(self.prog, request(op, hashes), hashes, filters)
        return sorted(summary(p) for p in outs)

    def test_no_pair_is_one_pass_unchanged(self):
        hashes = [i << 16 for i in range(1, 17)]
        packet = request(OP_MULTI_GET, hashes)
        outs, counters = model_request(self.prog, packet, hashes, {}, pair=lambda n: False)
        self.assertEqual(counters, ["forwarded"])
        self.assertEqual(outs, [packet])

    def test_pair_removed_between_passes(self):
        hashes = [i << 16 for i in range(1, 6)]
        filters = dict((i, [0, 0, 0, 0, 1, 1, 1, 1]) for i in range(1, 6))
        packet = request(OP_MULTI_PUT, hashes)
        outs, counters = model_request(self.prog, packet, hashes, filters, pair=lambda n: n < 3)
        self.assertEqual(counters, ["multi_recirculations"] * 2 + ["forwarded"])
        self.assertEqual(outs, [packet])

    def test_malformed_multi_key_bodies_are_not_steered(self):
        hashes = [i << 16 for i in range(1, 4)]
        filters = dict((i, [0, 0, 0, 0, 1, 1, 1, 1]) for i in range(1, 4))
        for count, udp_len in ((0, None), (17, None), (3, 8 + 32 + 8 + 8 * 3 - 1)):
            packet = request(OP_MULTI_GET, hashes, count=count, udp_len=udp_len)
            outs, counters = model_request(self.prog, packet, hashes, filters)
            self.assertEqual((outs, counters), ([packet], ["forwarded"]), (count, udp_len))
        # Exactly long enough for the hashes: steered (all done: redirected).
        packet = request(OP_MULTI_GET, hashes, udp_len=8 + 32 + 8 + 8 * 3)
        outs, counters = model_request(self.prog, packet, hashes, filters)
        self.assertEqual(counters[-1], "redirects")


class MultiKeyLayoutTest(unittest.TestCase):
    """Header sizes, the recirculation parser's hash selection, and table contents."""

    def setUp(self):
        self.prog = p4()

    def test_header_sizes(self):
        sizes = dict((t, self.prog.header_bytes(t)) for t in (
            "nm_h", "nm_multi_h", "nm_hash_h", "nm_hashes_8_h", "nm_hashes_4_h",
            "nm_hashes_2_h", "nm_recirc_h", "nm_mirror_h"))
        self.assertEqual(sizes, {"nm_h": 32, "nm_multi_h": 8, "nm_hash_h": 8,
                                 "nm_hashes_8_h": 64, "nm_hashes_4_h": 32, "nm_hashes_2_h": 16,
                                 "nm_recirc_h": 12, "nm_mirror_h": 12})
        d = self.prog.defines
        self.assertEqual(d["NM_MULTI_FIXED_LEN"], sizes["nm_multi_h"])
        self.assertEqual(d["NM_MULTI_HASH_LEN"], sizes["nm_hash_h"])
        self.assertEqual(d["NM_MULTI_MAX_KEYS"], 16)

    def test_mirror_emit_matches_the_mirror_header(self):
        m = re.search(r"mirror\.emit<nm_mirror_h>\([^,]+,\s*\{(.*?)\}\);", self.prog.parsers, re.S)
        emitted = [f.strip() for f in m.group(1).split(",")]
        self.assertEqual(len(emitted), len(self.prog.types["nm_mirror_h"]))
        self.assertEqual(emitted[3:], ["ig_md.mirror_flags", "ig_md.mirror_serve",
                                       "ig_md.mirror_halves"])

    def test_deparse_order_keeps_the_wire_order(self):
        order = list(self.prog.types["headers_t"])
        self.assertLess(order.index("bridged"), order.index("nm_recirc"))
        self.assertEqual(order.index("nm_recirc") + 1, order.index("ethernet"))
        i = order.index("nm_multi")
        self.assertEqual(order[i:i + 6], ["nm_multi", "nm_skip_8", "nm_skip_4", "nm_skip_2",
                                          "nm_skip_1", "nm_key"])

    def test_recirculation_parser_skips_exactly_index_hashes(self):
        text = self.prog.parsers
        skips = dict((s, (h, t)) for s, h, t in re.findall(
            r"state (skip_\w+)\s*\{\s*pkt\.extract\(hdr\.(\w+)\);\s*transition (\w+);\s*\}", text))
        body = re.search(r"state recirc_multi \{(.*?)\n    \}", text, re.S).group(1)
        select = re.search(r"transition select\(hdr\.nm_recirc\.index\) \{(.*?)\}", body, re.S).group(1)
        entries = dict((int(k), v) for k, v in re.findall(r"(\d+)\s*:\s*(\w+);", select))
        self.assertEqual(sorted(entries), list(range(16)))
        hdr_types = self.prog.types["headers_t"]
        for index in range(16):
            state, skipped, last = entries[index], 0, None
            while state != "parse_nm_key":
                h, state = skips[state]
                size = self.prog.header_bytes(hdr_types[h])
                # Runs in decreasing size: the deparser's order (8, 4, 2, 1) is the wire order.
                self.assertTrue(last is None or size < last, (index, h))
                skipped, last = skipped + size, size
            self.assertEqual(skipped, 8 * index, index)

    def test_item_and_count_tables(self):
        keys, entries, default = self.prog.table("nm_item")
        self.assertEqual(keys, ["ig_md.multi_index"])
        self.assertEqual([(int(sp[0]), args) for sp, _, args in entries],
                         [(k, [1 << k, k + 1]) for k in range(16)])
        self.assertEqual(default[0], "NoAction")
        keys, entries, default = self.prog.table("nm_multi_count")
        d = self.prog.defines
        base = 8 + d["NM_HEADER_LEN"] + d["NM_MULTI_FIXED_LEN"]
        self.assertEqual([(int(sp[0]), args) for sp, _, args in entries],
                         [(k, [base + d["NM_MULTI_HASH_LEN"] * k, 0xFFFF & ~((1 << k) - 1)])
                          for k in range(1, 17)])
        self.assertEqual(default[0], "multi_bad_count")

    def test_decide_table_is_the_single_key_decision(self):
        d = self.prog.defines
        import itertools
        for kind in (d["NM_KIND_READ"], d["NM_KIND_WRITE"]):
            for bits in itertools.product((0, 1), repeat=8):
                env = {"ig_md.kind": kind, "ig_md.item_bit": 1}
                for i in range(4):
                    env["ig_md.cbf%d" % (i + 1)], env["ig_md.bf%d" % (i + 1)] = bits[i], bits[4 + i]
                action = self.prog.apply("nm_decide", env)
                in_flight, done = all(bits[:4]), all(bits[4:])
                if in_flight and kind == d["NM_KIND_READ"]:
                    want = "decide_double_read"
                elif in_flight or done:
                    want = "decide_redirect"
                else:
                    want = "decide_source"
                self.assertEqual(action, want, (kind, bits))

    def test_client_requests_only_read_the_filters(self):
        # Counting-filter and Bloom-filter updates stay on the GROUP_* path.
        apply = self.prog.p4[self.prog.p4.index("apply {"):]
        read_branch = apply[apply.index("if (ig_md.filter_op == NM_FOP_READ)"):
                            apply.index("else if (ig_md.filter_op == NM_FOP_START)")]
        executed = re.findall(r"(nm_\w+?)\.execute", read_branch)
        self.assertEqual(len(executed), 8)
        self.assertTrue(all(e.endswith("_read") for e in executed), executed)
        self.assertEqual(read_branch.count("nm_decide.apply()"), 1)
        self.assertEqual(self.prog.p4.count("table nm_decide"), 1)



class CountingFilterActionsTest(unittest.TestCase):
    """The counting filter's RegisterActions (NM_COUNTING_BLOOM in netmigrate.p4), run
    on every 8-bit value: the same cell arithmetic as tofino/src/pipeline.rs."""

    def setUp(self):
        self.prog = p4()
        m = re.search(r"#define NM_COUNTING_BLOOM\(i\)((?:[^\n]*\\\n)*[^\n]*)", self.prog.p4)
        self.macro = m.group(1).replace("\\\n", "\n")

    @staticmethod
    def _braced(text, start):
        """The text between the brace at or after start and its match."""
        open_at = text.index("{", start)
        depth = 0
        for i in range(open_at, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[open_at + 1:i]
        raise ValueError("unbalanced braces")

    def action(self, suffix):
        """The RegisterAction nm_counting_bloom_##i##_<suffix> as a Python function
        value -> (new value, rv): its apply body translated statement by statement."""
        decl = re.search(r"nm_counting_bloom_##i##_%s = \{" % suffix, self.macro)
        self.assertIsNotNone(decl, suffix)
        outer = self._braced(self.macro, decl.end() - 1)
        m = re.search(r"void apply\(([^)]*)\)", outer)
        params = [p.split()[-1] for p in m.group(1).split(",")]
        body = self._braced(outer, m.end())
        widths = {"value": 8, "rv": 1}
        lines, depth = ["def run(value):", "    rv = None"], 1
        token = re.compile(r"\}\s*else\s+if\s*\((.*?)\)\s*\{|\}\s*else\s*\{|if\s*\((.*?)\)\s*\{|\}|([^;{}]+);",
                           re.S)
        def expr(text):
            text = re.sub(r"\b\d+w(\d+)\b", r"\1", text)
            text = re.sub(r"\b[A-Z_][A-Z0-9_]*\b", lambda m: str(self.prog.defines[m.group(0)]), text)
            return text.replace("&&", " and ").replace("||", " or ")
        pos = 0
        for t in token.finditer(body):
            self.assertEqual(body[pos:t.start()].strip(), "", "cannot model %r" % body[pos:t.start()])
            pos = t.end()
            text = t.group(0)
            if t.group(1) is not None:
                depth -= 1
                lines.append("    " * depth + "elif %s:" % expr(t.group(1)))
                depth += 1
            elif re.match(r"\}\s*else", text):
                lines.append("    " * (depth - 1) + "else:")
            elif t.group(2) is not None:
                lines.append("    " * depth + "if %s:" % expr(t.group(2)))
                depth += 1
            elif text == "}":
                depth -= 1
            else:
                lhs, rhs = [x.strip() for x in t.group(3).split("=", 1)]
                self.assertIn(lhs, widths)
                lines.append("    " * depth + "%s = (%s) & %d" % (lhs, expr(rhs), (1 << widths[lhs]) - 1))
        self.assertEqual(body[pos:].strip(), "")
        lines.append("    return value, rv")
        scope = {}
        exec("\n".join(lines), scope)
        return scope["run"], "rv" in params

    def test_read_is_not_zero(self):
        run, has_rv = self.action("read")
        self.assertTrue(has_rv)
        for v in range(256):
            self.assertEqual(run(v), (v, int(v != 0)), v)

    def test_increment_saturates_and_reports_it(self):
        run, has_rv = self.action("inc")
        self.assertTrue(has_rv, "the increment reports a cell it saturates")
        for v in range(256):
            self.assertEqual(run(v), (min(v + 1, 255), int(v == 254)), v)

    def test_saturation_value_matches_the_software_switch(self):
        self.assertEqual(self.prog.defines["CBF_SATURATED"], 255)
        spec = read(os.path.join(REPO, "tofino", "src", "spec.rs"))
        self.assertIn("pub const CBF_SATURATED: u8 = u8::MAX;", spec)

    def test_a_saturated_cell_is_never_decremented(self):
        # Sticky at 255: more than 255 groups in flight on a cell must not let it reach 0
        # while one of them is still in flight (a false negative: a stale read).
        run, _ = self.action("dec")
        for v in range(256):
            want = v if v in (0, 255) else v - 1
            self.assertEqual(run(v)[0], want, v)

    def test_saturations_are_counted_on_the_start_path(self):
        apply = self.prog.p4[self.prog.p4.index("apply {"):]
        start = apply[apply.index("else if (ig_md.filter_op == NM_FOP_START)"):]
        start = start[:start.index("} else {")]
        self.assertEqual(len(re.findall(r"nm_counting_bloom_\d_inc\.execute", start)), 4)
        self.assertIn("nm_cbf_saturated.count(", start)
        self.assertIn("NmIngress.nm_cbf_saturated", nc.T_CBF_SATURATED)


if __name__ == "__main__":
    unittest.main()
