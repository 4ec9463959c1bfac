#!/usr/bin/env python3
"""Offline tests of the controller's state machine, acknowledgement encoder and filter
indices, and of the constants the P4 program, the controller and the docs share.

No SDE needed: python3 -m unittest discover -s tofino/controller -p 'test_*.py'
"""

import importlib.util
import logging
import ipaddress
import os
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

    def install_pair(self, src_ip, shard, slot, dst_ip, dst_shard, size_exp, remain_exp):
        self.ops.append(("install", src_ip, shard, slot))
        self.pairs[(src_ip, shard)] = (slot, dst_ip, dst_shard, size_exp, remain_exp)

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
         remain_exp=16, seq=0):
    return dict(src_ip=src, shard=shard, dst_ip=dst, dst_shard=dst_shard, size_exp=size_exp,
                remain_exp=remain_exp, partitions=partitions, partition=partition,
                seq_hi=seq >> 32, seq_lo=seq & 0xFFFFFFFF, client=7, reply_ip=src,
                reply_port=40000, switch_port=9000)


def terminate(partition, seq, src=SRC, shard=3):
    return dict(src_ip=src, shard=shard, partition=partition, seq_hi=seq >> 32,
                seq_lo=seq & 0xFFFFFFFF, client=7, reply_ip=src, reply_port=40000,
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
        self.assertEqual(self.be.pairs[(SRC, 3)], (0, DST, 3, 32, 16))

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
        self.assertEqual(self.core.on_terminate(terminate(1, 1))[0], nc.STATUS_ERROR)
        self.assertEqual(self.core.on_terminate(terminate(5, 1))[0], nc.STATUS_ERROR)
        self.assertEqual(self.core.on_terminate(terminate(64, 1, shard=77))[0], nc.STATUS_ERROR)

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
        docs = read(os.path.join(REPO, "docs", "switch.md"))
        section = docs[docs.index("## Counters"):]
        names = re.findall(r"`(\w+)`", section)
        self.assertEqual(names, nc.COUNTER_NAMES[:len(names)])

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


if __name__ == "__main__":
    unittest.main()
