#!/usr/bin/env python3
"""Control plane of the netmigrate Tofino program (tofino/p4/netmigrate.p4).

Implements the control-plane half of docs/switch.md over BF Runtime gRPC:

  run             start-up (clear tables, registers and counters; install routes, ARP
                  answers and the switch address from the ports file; create one mirror
                  session per pair slot), then the digest loop: SWITCH_INIT and
                  SWITCH_TERMINATE arrive as digests, are applied here, and are
                  acknowledged with a packet written to the CPU port.
  read-registers  pairs, nm_expected_seq and filter cells (optionally of one group).
  counters        the nm_decisions counters, by the names of docs/switch.md (and the
                  software switch's, e.g. multi_splits), plus Tofino-only ones, and
                  cbf_saturated (nm_cbf_saturated).
  hash            offline: the four filter indices of (dst_ip, dst_shard, group).
  selftest        offline: CRC check values and the ack encoder.

Needs the SDE's Python environment for the switch subcommands (bfrt_grpc is found
through $SDE_INSTALL); `hash` and `selftest` run anywhere with Python 3.
"""

import argparse
import collections
import ipaddress
import json
import logging
import os
import socket
import struct
import sys
import time

log = logging.getLogger("netmigrate")

# ---------------------------------------------------------------------------
# Constants: keep in step with tofino/p4/defines.p4 and docs/switch.md.
# ---------------------------------------------------------------------------

P4_NAME = "netmigrate"
MAX_PAIRS = 4
MAX_PARTITIONS = 64
MIRROR_SESSION_BASE = 1          # session of slot s: MIRROR_SESSION_BASE + s
DEFAULT_BF_CELLS = 1 << 17
DEFAULT_CBF_CELLS = 1 << 12
# Finished migrations (source, shard, stream id) remembered, so that a late copy of one's
# SWITCH_INIT does not install its pair again (RETIRED_STREAMS in tofino/src/spec.rs).
RETIRED_STREAMS = 64

NM_MAGIC = 0x4E4D
NM_VERSION = 1
NM_HEADER_LEN = 32
OP_SWITCH_INIT = 0x40
OP_SWITCH_GROUP_START = 0x41
OP_SWITCH_GROUP_COMPLETE = 0x42
OP_SWITCH_TERMINATE = 0x43
REPLY_BIT = 0x80
STATUS_OK = 0
STATUS_ERROR = 4

# nm_decisions indices (NM_CTR_* in defines.p4): docs/switch.md names first.
COUNTER_NAMES = [
    "forwarded", "to_source", "double_reads", "redirects",
    "multi_splits",                           # multi-key requests split between the two servers
    "false_in_flight", "false_done",          # software switch only: always 0 here
    "control_applied", "control_duplicates", "control_gaps", "malformed",
    "control_digests",      # Tofino-only: INIT/TERMINATE handed to this controller
    "control_errors",       # as the software switch's (GROUP_* only; INIT/TERMINATE: Core.stats)
    "arp",                  # Tofino-only: ARP requests answered or dropped
    "multi_recirculations", # Tofino-only: multi-key passes that went round again (count - 1 each)
]

COUNTER_NOTES = {
    "false_in_flight": "  (software switch only)",
    "false_done": "  (software switch only)",
    "multi_recirculations": "  (passes; recirculation-port load)",
}

# bfrt names (the P4 control instance names of netmigrate.p4).
T_PAIR = "NmIngress.nm_pair"
T_ROUTE = "NmIngress.ipv4_route"
T_ARP = "NmIngress.nm_arp"
T_SWITCH_ADDR = "NmIngress.nm_switch_addr"
T_NEIGHBOR = "NmEgress.nm_neighbor"
T_COUNTERS = "NmIngress.nm_decisions"
T_CBF_SATURATED = "NmIngress.nm_cbf_saturated"   # one cell: GROUP_STARTs that saturated a CBF cell
R_SEQ = "NmIngress.nm_expected_seq"
R_BLOOM = ["NmIngress.nm_bloom_%d" % i for i in range(1, 5)]
R_COUNTING_BLOOM = ["NmIngress.nm_counting_bloom_%d" % i for i in range(1, 5)]
LEARN_INIT = "nm_init_digest"
LEARN_TERMINATE = "nm_terminate_digest"

# ---------------------------------------------------------------------------
# Filter indices (the same computation as the data plane, for diagnostics).
# ---------------------------------------------------------------------------


def _reflect(value, width):
    out = 0
    for _ in range(width):
        out = (out << 1) | (value & 1)
        value >>= 1
    return out


def crc32(data, poly, reflected, init, xorout):
    """Bitwise CRC-32 in the Rocksoft model (refin = refout = reflected)."""
    crc = init
    for byte in data:
        if reflected:
            byte = _reflect(byte, 8)
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    if reflected:
        crc = _reflect(crc, 32)
    return crc ^ xorout


# docs/switch.md "Group id and filter indices", in index order 1..4. No two may be
# affine images of each other (CRC-32/MPEG-2, index 4 before, is CRC-32/BZIP2 ^ 0xFFFFFFFF).
CRC_CONFIGS = [
    ("CRC-32/ISCSI", 0x1EDC6F41, True, 0xFFFFFFFF, 0xFFFFFFFF),
    ("CRC-32/ISO-HDLC", 0x04C11DB7, True, 0xFFFFFFFF, 0xFFFFFFFF),
    ("CRC-32/BZIP2", 0x04C11DB7, False, 0xFFFFFFFF, 0xFFFFFFFF),
    ("CRC-32Q", 0x814141AB, False, 0x00000000, 0x00000000),
]


def group_of(key_hash, size_exp, remain_exp):
    return ((key_hash & 0xFFFFFFFF) & ((1 << size_exp) - 1)) >> remain_exp


def filter_tuple(dst_ip, dst_shard, group):
    return struct.pack("!IHI", ip_to_int(dst_ip), dst_shard, group)


def filter_hashes(dst_ip, dst_shard, group):
    data = filter_tuple(dst_ip, dst_shard, group)
    return [crc32(data, poly, refl, init, xo) for (_, poly, refl, init, xo) in CRC_CONFIGS]


def cell_indices(hashes, cells, slot=0):
    """Register indices slot * cells + (h & (cells - 1))."""
    return [slot * cells + (h & (cells - 1)) for h in hashes]


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def ip_to_int(ip):
    if isinstance(ip, int):
        return ip
    return int(ipaddress.IPv4Address(ip))


def int_to_ip(value):
    return str(ipaddress.IPv4Address(value))


def mac_to_bytes(mac):
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError("bad MAC address %r" % mac)
    return bytes(int(p, 16) for p in parts)


def mac_to_int(mac):
    return int.from_bytes(mac_to_bytes(mac), "big")


def inet_checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


# ---------------------------------------------------------------------------
# Ports file
# ---------------------------------------------------------------------------

SPEEDS = {"1G": "BF_SPEED_1G", "10G": "BF_SPEED_10G", "25G": "BF_SPEED_25G",
          "40G": "BF_SPEED_40G", "50G": "BF_SPEED_50G", "100G": "BF_SPEED_100G",
          "200G": "BF_SPEED_200G", "400G": "BF_SPEED_400G"}
FECS = {"none": "BF_FEC_TYP_NONE", "rs": "BF_FEC_TYP_REED_SOLOMON",
        "fc": "BF_FEC_TYP_FIRECODE"}


class Host(object):
    def __init__(self, name, ip, mac, dev_port=None, port=None, speed=None, fec=None):
        self.name = name
        self.ip = str(ipaddress.IPv4Address(ip))
        self.mac = mac.lower()
        mac_to_bytes(self.mac)
        self.dev_port = dev_port
        self.port = port            # front-panel "1/0", resolved to dev_port at start-up
        self.speed = speed
        self.fec = fec


class PortsConfig(object):
    """The switch's address, its CPU interface and the hosts behind its ports."""

    def __init__(self, switch_ip, switch_mac, cpu_iface, hosts, routes):
        self.switch_ip = str(ipaddress.IPv4Address(switch_ip))
        self.switch_mac = switch_mac.lower()
        mac_to_bytes(self.switch_mac)
        self.cpu_iface = cpu_iface
        self.hosts = hosts
        self.routes = routes        # [(ipaddress.IPv4Network, Host)]
        self.by_ip = dict((h.ip, h) for h in hosts)

    @staticmethod
    def load(path):
        with open(path) as f:
            text = f.read()
        if path.endswith(".json"):
            doc = json.loads(text)
        else:
            try:
                import yaml
            except ImportError:
                raise SystemExit("PyYAML is needed for %s (pip install pyyaml), or use JSON" % path)
            doc = yaml.safe_load(text)
        return PortsConfig.from_doc(doc)

    @staticmethod
    def from_doc(doc):
        sw = doc.get("switch") or {}
        if "ip" not in sw or "mac" not in sw:
            raise ValueError("ports file: switch.ip and switch.mac are required")
        hosts = []
        for h in doc.get("hosts") or []:
            if "dev_port" not in h and "port" not in h:
                raise ValueError("ports file: host %s needs port or dev_port" % h.get("name"))
            hosts.append(Host(h.get("name", h["ip"]), h["ip"], h["mac"],
                              h.get("dev_port"), h.get("port"),
                              h.get("speed"), h.get("fec")))
        names = dict((h.name, h) for h in hosts)
        routes = []
        for r in doc.get("routes") or []:
            if r["via"] not in names:
                raise ValueError("ports file: route %s via unknown host %s" % (r["prefix"], r["via"]))
            routes.append((ipaddress.IPv4Network(r["prefix"]), names[r["via"]]))
        return PortsConfig(sw["ip"], sw["mac"], sw.get("cpu_iface"), hosts, routes)


# ---------------------------------------------------------------------------
# Acknowledgements
# ---------------------------------------------------------------------------


def build_ack(switch_mac, dst_mac, switch_ip, dst_ip, src_port, dst_port,
              op, status, shard, seq, client):
    """A control reply as a full Ethernet frame: op | 0x80, empty body, seq = last applied.

    It enters the pipeline on the CPU port and is routed by ipv4_route like any reply
    (which also sets the destination MAC), so dst_mac only needs to be plausible.
    """
    nm = struct.pack("!HBBBBHQQII", NM_MAGIC, NM_VERSION, op | REPLY_BIT, 0, status,
                     shard, seq & 0xFFFFFFFFFFFFFFFF, 0, client, 0)
    src = socket.inet_aton(switch_ip)
    dst = socket.inet_aton(dst_ip)
    udp_len = 8 + len(nm)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", src_port, dst_port, udp_len, 0)
    csum = inet_checksum(pseudo + udp + nm) or 0xFFFF
    udp = struct.pack("!HHHH", src_port, dst_port, udp_len, csum)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
    eth = mac_to_bytes(dst_mac) + mac_to_bytes(switch_mac) + struct.pack("!H", 0x0800)
    return eth + ip + udp + nm


class AckSender(object):
    """Writes acknowledgements to the kernel interface of the CPU port (packet-out).

    With the SDE's kernel packet driver (bf_kpkt) the PCIe CPU port is a netdev
    (typically bf_pci0); on boxes with CPU Ethernet ports it is that NIC. A frame
    written there enters the ingress pipeline at the CPU port.
    """

    def __init__(self, iface):
        self.iface = iface
        self.sock = None
        if iface:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            self.sock.bind((iface, 0))

    def send(self, frame):
        if self.sock is None:
            log.warning("no cpu_iface configured: acknowledgement not sent")
            return False
        self.sock.send(frame)
        return True


# ---------------------------------------------------------------------------
# The control-plane state machine (no BF Runtime here: see Backend)
# ---------------------------------------------------------------------------


class Backend(object):
    """What the state machine needs from the switch. BfrtBackend implements it."""

    def read_expected_seq(self, slot, partition):
        raise NotImplementedError

    def write_expected_seq(self, slot, partition, value):
        raise NotImplementedError

    def clear_slot(self, slot):
        raise NotImplementedError

    def install_pair(self, src_ip, shard, slot, dst_ip, dst_shard, size_exp, remain_exp, stream):
        raise NotImplementedError

    def remove_pair(self, src_ip, shard):
        raise NotImplementedError

    def set_mirror(self, slot, dev_port):
        """Point slot's session at dev_port and enable it; dev_port None disables it."""
        raise NotImplementedError


class Pair(object):
    def __init__(self, slot, dst_ip, dst_shard, size_exp, remain_exp, partitions, stream):
        self.slot = slot
        self.stream = stream
        self.dst_ip = dst_ip
        self.dst_shard = dst_shard
        self.size_exp = size_exp
        self.remain_exp = remain_exp
        self.partitions = partitions
        self.joined = set()
        self.terminated = set()

    def params(self):
        return (self.dst_ip, self.dst_shard, self.size_exp, self.remain_exp, self.partitions)


class Core(object):
    """Applies SWITCH_INIT / SWITCH_TERMINATE digests; returns (status, reply seq).

    Pairs are keyed by (source IPv4 as int, source shard), the nm_pair key.
    """

    def __init__(self, backend, dst_port_of):
        self.backend = backend
        self.dst_port_of = dst_port_of      # dst IPv4 (int) -> dev_port or None
        self.pairs = {}
        # (source IPv4, shard, stream) of finished migrations, oldest first.
        self.retired = collections.deque(maxlen=RETIRED_STREAMS)
        self.free_slots = list(range(MAX_PAIRS))
        # Slots whose registers are known to be zero (cleared at start-up and at
        # pair removal); INIT clears any other slot before using it.
        self.clean_slots = set(range(MAX_PAIRS))
        self.stats = dict((k, 0) for k in ("init_applied", "init_duplicates", "init_errors",
                                           "terminate_applied", "terminate_duplicates",
                                           "terminate_gaps", "terminate_errors",
                                           "pairs_installed", "pairs_removed"))

    # -- SWITCH_INIT ---------------------------------------------------------

    def on_init(self, d):
        """Same outcomes as the software switch (tofino/src/pipeline.rs), plus refusals
        the Tofino tables need (size_exp/remain_exp range, destination port known)."""
        key = (d["src_ip"], d["shard"])
        seq = (d["seq_hi"] << 32) | d["seq_lo"]
        partition, stream = d["partition"], d["client"]
        params = (d["dst_ip"], d["dst_shard"], d["size_exp"], d["remain_exp"], d["partitions"])
        if seq == 0 and key + (stream,) in self.retired:
            # A late copy of a finished migration's INIT: acknowledged, installs nothing.
            self.stats["init_duplicates"] += 1
            return STATUS_OK, 0
        problem = self._check_init(d, seq)
        pair = self.pairs.get(key)
        if problem is None and pair is not None and pair.params()[:2] != params[:2]:
            problem = "another destination than the installed pair's %s:%d" % (
                int_to_ip(pair.dst_ip), pair.dst_shard)
        elif problem is None and pair is not None and pair.stream != stream:
            problem = "another migration (stream %d) of the shard is installed" % pair.stream
        if problem is not None:
            log.warning("SWITCH_INIT %s:%d partition %d refused: %s",
                        int_to_ip(key[0]), key[1], partition, problem)
            self.stats["init_errors"] += 1
            return STATUS_ERROR, seq

        if pair is None:
            if not self.free_slots:
                log.warning("SWITCH_INIT %s:%d: all %d pair slots in use",
                            int_to_ip(key[0]), key[1], MAX_PAIRS)
                self.stats["init_errors"] += 1
                return STATUS_ERROR, seq
            slot = self.free_slots.pop(0)
            try:
                # Registers first, the nm_pair entry last: the data plane never sees a
                # pair whose slot still holds another pair's state.
                if slot not in self.clean_slots:
                    self.backend.clear_slot(slot)
                self.clean_slots.discard(slot)
                self.backend.write_expected_seq(slot, partition, 1)
                self.backend.set_mirror(slot, self.dst_port_of(d["dst_ip"]))
                self.backend.install_pair(key[0], key[1], slot, d["dst_ip"], d["dst_shard"],
                                          d["size_exp"], d["remain_exp"], stream)
            except Exception:
                self.free_slots.insert(0, slot)
                raise
            pair = Pair(slot, *params, stream=stream)
            pair.joined.add(partition)
            self.pairs[key] = pair
            self.stats["pairs_installed"] += 1
            self.stats["init_applied"] += 1
            log.info("pair %s:%d -> %s:%d installed in slot %d (size_exp %d, remain_exp %d, "
                     "%d partitions); partition %d joined",
                     int_to_ip(key[0]), key[1], int_to_ip(d["dst_ip"]), d["dst_shard"], slot,
                     d["size_exp"], d["remain_exp"], d["partitions"], partition)
            return STATUS_OK, 0

        if partition not in pair.joined and partition not in pair.terminated:
            # (A late INIT of a partition that already ended does not join it again.)
            self.backend.write_expected_seq(pair.slot, partition, 1)
            pair.joined.add(partition)
            self.stats["init_applied"] += 1
            log.info("pair %s:%d: partition %d joined", int_to_ip(key[0]), key[1], partition)
        else:
            # A repeat: acknowledged without effect (INIT is seq 0 of its partition).
            self.stats["init_duplicates"] += 1
        return STATUS_OK, 0

    def _check_init(self, d, seq):
        if seq != 0:
            return "seq %d (SWITCH_INIT is seq 0)" % seq
        if d["partition"] >= MAX_PARTITIONS:
            return "partition %d >= MAX_PARTITIONS %d" % (d["partition"], MAX_PARTITIONS)
        if d["partitions"] > MAX_PARTITIONS:
            return "partitions %d > MAX_PARTITIONS %d" % (d["partitions"], MAX_PARTITIONS)
        if d["partition"] >= d["partitions"]:
            return "partition %d >= partitions %d" % (d["partition"], d["partitions"])
        # Tofino only: nm_group_mask and nm_group_shift cover these ranges.
        if not 1 <= d["size_exp"] <= 32:
            return "size_exp %d not in 1..32" % d["size_exp"]
        if not 0 <= d["remain_exp"] < d["size_exp"]:
            return "remain_exp %d not in 0..size_exp-1" % d["remain_exp"]
        # Tofino only: the slot's mirror session needs the destination's port.
        if self.dst_port_of(d["dst_ip"]) is None:
            return "destination %s is not in the ports file" % int_to_ip(d["dst_ip"])
        return None

    # -- SWITCH_TERMINATE ----------------------------------------------------

    def on_terminate(self, d):
        key = (d["src_ip"], d["shard"])
        seq = (d["seq_hi"] << 32) | d["seq_lo"]
        partition, stream = d["partition"], d["client"]
        if partition >= MAX_PARTITIONS:
            self.stats["terminate_errors"] += 1
            return STATUS_ERROR, seq
        pair = self.pairs.get(key)
        if pair is None:
            # Removed already (a repeat of the last TERMINATE), or the end of a migration
            # whose INIT was refused: nothing to forget. Retired, so that a late copy of
            # its INIT does not install the pair.
            self._retire(key, stream)
            self.stats["terminate_duplicates"] += 1
            return STATUS_OK, seq
        if pair.stream != stream:
            # The end of another migration of this shard (a late copy of an earlier one's,
            # or one whose INIT this pair's made the switch refuse): it holds nothing here.
            self._retire(key, stream)
            self.stats["terminate_duplicates"] += 1
            return STATUS_OK, seq
        if partition >= pair.partitions:
            self.stats["terminate_errors"] += 1
            return STATUS_ERROR, seq
        if partition not in pair.joined:
            # An abort before this partition's INIT was acknowledged: it sent nothing else
            # and is done with the pair, which goes once every partition is.
            if partition in pair.terminated:
                self.stats["terminate_duplicates"] += 1
                return STATUS_OK, seq
            return self._terminated(key, pair, partition, seq)

        # Safe against the data plane: it writes this cell only for a GROUP message
        # whose seq equals the cell, and every GROUP message of the partition has a
        # seq below its TERMINATE's. Reads take the largest value over the pipes
        # (only the source's ingress pipe sees the partition's messages).
        expected = self.backend.read_expected_seq(pair.slot, partition)
        if seq != expected:
            if seq < expected:
                self.stats["terminate_duplicates"] += 1
            else:
                self.stats["terminate_gaps"] += 1
            return STATUS_OK, max(expected - 1, 0)

        self.backend.write_expected_seq(pair.slot, partition, expected + 1)
        return self._terminated(key, pair, partition, seq)

    def _terminated(self, key, pair, partition, seq):
        pair.terminated.add(partition)
        self.stats["terminate_applied"] += 1
        log.info("pair %s:%d: partition %d terminated (%d of %d)", int_to_ip(key[0]), key[1],
                 partition, len(pair.terminated), pair.partitions)
        if len(pair.terminated) == pair.partitions:
            self._remove(key, pair)
        return STATUS_OK, seq

    def _retire(self, key, stream):
        if key + (stream,) not in self.retired:
            self.retired.append(key + (stream,))

    def _remove(self, key, pair):
        # Explicit cut-over: stop steering first, then wipe the slot for its next pair.
        self.backend.remove_pair(key[0], key[1])
        self.backend.set_mirror(pair.slot, None)
        del self.pairs[key]
        self._retire(key, pair.stream)
        try:
            self.backend.clear_slot(pair.slot)
            self.clean_slots.add(pair.slot)
        except Exception:
            log.exception("clearing slot %d failed; the next INIT will clear it", pair.slot)
        self.free_slots.append(pair.slot)
        self.stats["pairs_removed"] += 1
        log.info("pair %s:%d removed, slot %d free", int_to_ip(key[0]), key[1], pair.slot)


# ---------------------------------------------------------------------------
# BF Runtime
# ---------------------------------------------------------------------------


def import_bfrt():
    """bfrt_grpc lives in the SDE's site-packages; add the usual places to sys.path."""
    try:
        import bfrt_grpc.client as gc  # noqa: F401
        return gc
    except ImportError:
        pass
    sde = os.environ.get("SDE_INSTALL") or (os.path.join(os.environ["SDE"], "install")
                                            if "SDE" in os.environ else None)
    if sde:
        pyver = "python%d.%d" % sys.version_info[:2]
        for sub in ("lib/%s/site-packages" % pyver,
                    "lib/%s/site-packages/tofino" % pyver,
                    "lib/%s/site-packages/tofino/bfrt_grpc" % pyver):
            path = os.path.join(sde, sub)
            if os.path.isdir(path) and path not in sys.path:
                sys.path.append(path)
    try:
        import bfrt_grpc.client as gc
        return gc
    except ImportError:
        raise SystemExit("bfrt_grpc not found: run from the SDE environment (set SDE_INSTALL)")


class Bfrt(object):
    """A bound BF Runtime client and the netmigrate tables."""

    CHUNK = 2048    # entries per gRPC write/read batch

    def __init__(self, args, client_id, subscribe_learn):
        gc = import_bfrt()
        self.args = args
        self.gc = gc
        kwargs = {}
        if subscribe_learn and hasattr(gc, "Notifications"):
            try:
                kwargs["notifications"] = gc.Notifications(
                    enable_learn=True, enable_idletimeout=False, enable_port_status_change=False)
            except TypeError:
                pass
        self.interface = gc.ClientInterface(args.grpc_addr, client_id=client_id,
                                            device_id=args.device, num_tries=5, **kwargs)
        try:
            self.interface.bind_pipeline_config(args.p4_name)
        except Exception as e:
            if subscribe_learn:
                raise
            # A reader beside `run`: reads need no exclusive binding on the SDEs we know.
            log.debug("bind_pipeline_config as client %d: %s", client_id, e)
        self.info = self.interface.bfrt_info_get(args.p4_name)
        self.target = gc.Target(device_id=args.device, pipe_id=0xFFFF)
        # The compile-time sizes (BF_CELLS_LOG2, CBF_CELLS_LOG2): from the command line,
        # else from the register sizes in bf-rt.json, else the defaults of defines.p4.
        self.bf_cells = (1 << args.bf_cells_log2 if args.bf_cells_log2 is not None
                         else self._cells(R_BLOOM[0], DEFAULT_BF_CELLS))
        self.cbf_cells = (1 << args.cbf_cells_log2 if args.cbf_cells_log2 is not None
                          else self._cells(R_COUNTING_BLOOM[0], DEFAULT_CBF_CELLS))

    def table(self, name):
        return self.info.table_get(name)

    def _cells(self, name, default):
        try:
            size = self.table(name).info.size_get()
            if size and size % MAX_PAIRS == 0:
                return size // MAX_PAIRS
        except Exception:
            pass
        return default

    # -- generic helpers ----------------------------------------------------

    def clear_table(self, name):
        try:
            self.table(name).entry_del(self.target)
        except Exception as e:
            log.warning("clearing %s: %s", name, e)

    def key(self, name, fields):
        t = self.table(name)
        return t.make_key([self.gc.KeyTuple(*f) for f in fields])

    def data(self, name, fields, action=None):
        t = self.table(name)
        return t.make_data([self.gc.DataTuple(*f) for f in fields], action)

    def register_write(self, name, indices, value):
        t = self.table(name)
        field = name + ".f1"
        keys, datas = [], []
        for index in indices:
            keys.append(t.make_key([self.gc.KeyTuple("$REGISTER_INDEX", index)]))
            datas.append(t.make_data([self.gc.DataTuple(field, value)]))
            if len(keys) == self.CHUNK:
                t.entry_add(self.target, keys, datas)
                keys, datas = [], []
        if keys:
            t.entry_add(self.target, keys, datas)

    def register_read(self, name, indices):
        """{index: [value per pipe]} read from the hardware."""
        t = self.table(name)
        field = name + ".f1"
        out = {}
        indices = list(indices)
        for start in range(0, len(indices), self.CHUNK):
            keys = [t.make_key([self.gc.KeyTuple("$REGISTER_INDEX", i)])
                    for i in indices[start:start + self.CHUNK]]
            for data, key in t.entry_get(self.target, keys, {"from_hw": True}):
                index = key.to_dict()["$REGISTER_INDEX"]["value"]
                value = data.to_dict()[field]
                out[index] = value if isinstance(value, list) else [value]
        return out

    # -- start-up -------------------------------------------------------------

    def reset(self, keep_counters=False):
        for name in (T_PAIR, T_ROUTE, T_ARP, T_SWITCH_ADDR, T_NEIGHBOR):
            self.clear_table(name)
        # A register table clear resets every cell (all pipes) to its initial value 0.
        for name in [R_SEQ] + R_BLOOM + R_COUNTING_BLOOM:
            self.clear_table(name)
        if not keep_counters:
            self.clear_table(T_COUNTERS)
            self.clear_table(T_CBF_SATURATED)

    def resolve_ports(self, cfg, enable):
        port_str = None
        for h in cfg.hosts:
            if h.dev_port is None:
                if port_str is None:
                    port_str = self.table("$PORT_STR_INFO")
                resp = port_str.entry_get(
                    self.target, [port_str.make_key([self.gc.KeyTuple("$PORT_NAME", str(h.port))])],
                    {"from_hw": False})
                data, _ = next(resp)
                h.dev_port = data.to_dict()["$DEV_PORT"]
            if enable and h.speed:
                port = self.table("$PORT")
                try:
                    port.entry_add(self.target,
                                   [port.make_key([self.gc.KeyTuple("$DEV_PORT", h.dev_port)])],
                                   [port.make_data([
                                       self.gc.DataTuple("$SPEED", str_val=SPEEDS[h.speed.upper()]),
                                       self.gc.DataTuple("$FEC", str_val=FECS[(h.fec or "none").lower()]),
                                       self.gc.DataTuple("$PORT_ENABLE", bool_val=True)])])
                except Exception as e:
                    log.warning("enabling port %s (dev %d): %s", h.port, h.dev_port, e)
            log.info("host %s %s %s on dev_port %d", h.name, h.ip, h.mac, h.dev_port)

    def install_static(self, cfg):
        def route(prefix, host):
            t = self.table(T_ROUTE)
            t.entry_add(self.target,
                        [t.make_key([self.gc.KeyTuple("hdr.ipv4.dst_addr",
                                                      int(prefix.network_address),
                                                      prefix_len=prefix.prefixlen)])],
                        [t.make_data([self.gc.DataTuple("port", host.dev_port),
                                      self.gc.DataTuple("dst_mac", mac_to_int(host.mac))],
                                     "NmIngress.forward")])

        def arp(ip, mac):
            t = self.table(T_ARP)
            t.entry_add(self.target, [t.make_key([self.gc.KeyTuple("hdr.arp.tpa", ip_to_int(ip))])],
                        [t.make_data([self.gc.DataTuple("mac", mac_to_int(mac))],
                                     "NmIngress.arp_reply")])

        for h in cfg.hosts:
            route(ipaddress.IPv4Network(h.ip + "/32"), h)
            arp(h.ip, h.mac)
            t = self.table(T_NEIGHBOR)
            t.entry_add(self.target, [t.make_key([self.gc.KeyTuple("ipv4_dst", ip_to_int(h.ip))])],
                        [t.make_data([self.gc.DataTuple("dst_mac", mac_to_int(h.mac))],
                                     "NmEgress.set_dst_mac")])
        for prefix, h in cfg.routes:
            route(prefix, h)
        arp(cfg.switch_ip, cfg.switch_mac)
        t = self.table(T_SWITCH_ADDR)
        t.entry_add(self.target,
                    [t.make_key([self.gc.KeyTuple("hdr.ipv4.dst_addr", ip_to_int(cfg.switch_ip))])],
                    [t.make_data([], "NmIngress.to_switch")])

    def mirror_session(self, slot, dev_port, enable):
        t = self.table("$mirror.cfg")
        sid = MIRROR_SESSION_BASE + slot
        key = t.make_key([self.gc.KeyTuple("$sid", sid)])
        try:
            t.entry_del(self.target, [key])
        except Exception:
            pass
        t.entry_add(self.target, [key], [t.make_data([
            self.gc.DataTuple("$direction", str_val="INGRESS"),
            self.gc.DataTuple("$ucast_egress_port", dev_port),
            self.gc.DataTuple("$ucast_egress_port_valid", bool_val=True),
            self.gc.DataTuple("$session_enable", bool_val=enable)], "$normal")])

    # -- pairs ----------------------------------------------------------------

    def pair_entries(self):
        t = self.table(T_PAIR)
        out = []
        for data, key in t.entry_get(self.target, None, {"from_hw": False}):
            k = key.to_dict()
            d = data.to_dict()
            out.append((k["ipv4_dst"]["value"], k["shard"]["value"], d))
        return out

    def counters(self):
        t = self.table(T_COUNTERS)
        keys = [t.make_key([self.gc.KeyTuple("$COUNTER_INDEX", i)]) for i in range(len(COUNTER_NAMES))]
        out = {}
        for data, key in t.entry_get(self.target, keys, {"from_hw": True}):
            d = data.to_dict()
            out[key.to_dict()["$COUNTER_INDEX"]["value"]] = (d.get("$COUNTER_SPEC_PKTS", 0),
                                                              d.get("$COUNTER_SPEC_BYTES", 0))
        return out

    def cbf_saturated(self):
        t = self.table(T_CBF_SATURATED)
        keys = [t.make_key([self.gc.KeyTuple("$COUNTER_INDEX", 0)])]
        for data, _ in t.entry_get(self.target, keys, {"from_hw": True}):
            return data.to_dict().get("$COUNTER_SPEC_PKTS", 0)
        return 0


class BfrtBackend(Backend):
    def __init__(self, bfrt, mirror_fallback_port):
        self.b = bfrt
        self.mirror_fallback_port = mirror_fallback_port

    def _seq_index(self, slot, partition):
        return slot * MAX_PARTITIONS + partition

    def read_expected_seq(self, slot, partition):
        index = self._seq_index(slot, partition)
        return max(self.b.register_read(R_SEQ, [index])[index])

    def write_expected_seq(self, slot, partition, value):
        self.b.register_write(R_SEQ, [self._seq_index(slot, partition)], value)

    def clear_slot(self, slot):
        started = time.time()
        self.b.register_write(R_SEQ, range(slot * MAX_PARTITIONS, (slot + 1) * MAX_PARTITIONS), 0)
        for name in R_COUNTING_BLOOM:
            self.b.register_write(name, range(slot * self.b.cbf_cells, (slot + 1) * self.b.cbf_cells), 0)
        for name in R_BLOOM:
            self.b.register_write(name, range(slot * self.b.bf_cells, (slot + 1) * self.b.bf_cells), 0)
        log.info("slot %d cleared in %.1f s", slot, time.time() - started)

    def install_pair(self, src_ip, shard, slot, dst_ip, dst_shard, size_exp, remain_exp, stream):
        t = self.b.table(T_PAIR)
        gc = self.b.gc
        t.entry_add(self.b.target,
                    [t.make_key([gc.KeyTuple("ipv4_dst", src_ip), gc.KeyTuple("shard", shard)])],
                    [t.make_data([gc.DataTuple("slot", slot), gc.DataTuple("dst_ip", dst_ip),
                                  gc.DataTuple("dst_shard", dst_shard),
                                  gc.DataTuple("size_exp", size_exp),
                                  gc.DataTuple("remain_exp", remain_exp),
                                  gc.DataTuple("stream", stream)], "NmIngress.set_pair")])

    def remove_pair(self, src_ip, shard):
        t = self.b.table(T_PAIR)
        gc = self.b.gc
        t.entry_del(self.b.target,
                    [t.make_key([gc.KeyTuple("ipv4_dst", src_ip), gc.KeyTuple("shard", shard)])])

    def set_mirror(self, slot, dev_port):
        if dev_port is None:
            self.b.mirror_session(slot, self.mirror_fallback_port, False)
        else:
            self.b.mirror_session(slot, dev_port, True)


# ---------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------


def digest_dict(data):
    """Learn data as {field: int}; bfrt returns ints for unannotated fields."""
    d = data.to_dict()
    out = {}
    for k, v in d.items():
        if isinstance(v, (bytes, bytearray)):
            v = int.from_bytes(bytes(v), "big")
        out[k] = v
    return out


def cmd_run(args):
    cfg = PortsConfig.load(args.ports)
    b = Bfrt(args, args.client_id, subscribe_learn=True)
    log.info("connected to %s, program %s (BF_CELLS %d, CBF_CELLS %d)",
             args.grpc_addr, args.p4_name, b.bf_cells, b.cbf_cells)
    if not args.no_reset:
        b.reset(keep_counters=args.keep_counters)
    b.resolve_ports(cfg, args.enable_ports)
    b.install_static(cfg)
    fallback_port = cfg.hosts[0].dev_port if cfg.hosts else 0
    for slot in range(MAX_PAIRS):
        b.mirror_session(slot, fallback_port, False)   # pointed and enabled by SWITCH_INIT
    port_of = dict((ip_to_int(h.ip), h.dev_port) for h in cfg.hosts)
    core = Core(BfrtBackend(b, fallback_port), port_of.get)
    iface = args.cpu_iface or cfg.cpu_iface
    if not iface:
        log.warning("no CPU interface (switch.cpu_iface / --cpu-iface): SWITCH_INIT and "
                    "SWITCH_TERMINATE will be applied but never acknowledged")
    sender = AckSender(iface)
    learn = {}
    for name, handler, op in ((LEARN_INIT, core.on_init, OP_SWITCH_INIT),
                              (LEARN_TERMINATE, core.on_terminate, OP_SWITCH_TERMINATE)):
        obj = b.info.learn_get(name)
        learn[obj.info.id_get()] = (name, obj, handler, op)
    log.info("waiting for digests")

    last_stats, last_logged = time.time(), None
    while True:
        try:
            digest = b.interface.digest_get(timeout=1)
        except KeyboardInterrupt:
            break
        except RuntimeError:
            digest = None      # timeout
        if digest is not None:
            entry = learn.get(digest.digest_id)
            if entry is None:
                log.warning("digest of unknown id %s", digest.digest_id)
            else:
                name, obj, handler, op = entry
                process_digest(name, obj.make_data_list(digest), handler, op, cfg, sender)
        if time.time() - last_stats >= args.stats_interval:
            last_stats = time.time()
            if core.stats != last_logged:
                last_logged = dict(core.stats)
                log.info("control: %s", " ".join("%s=%d" % kv for kv in sorted(core.stats.items())))
    return 0


def process_digest(name, data_list, handler, op, cfg, sender):
    """Apply and acknowledge every element of one digest list.

    The switch batches digests; the artifact looked at element 0 only and lost the
    rest (REFERENCE-ARTIFACT.md section 9, item 12). Returns the number acknowledged.
    """
    sent = 0
    for data in data_list:
        d = digest_dict(data)
        try:
            status, seq = handler(d)
        except Exception:
            log.exception("%s %r failed; not acknowledged (the source retransmits)", name, d)
            continue
        reply_ip = int_to_ip(d["reply_ip"])
        host = cfg.by_ip.get(reply_ip)
        frame = build_ack(cfg.switch_mac, host.mac if host else "ff:ff:ff:ff:ff:ff",
                          cfg.switch_ip, reply_ip, d["switch_port"], d["reply_port"],
                          op, status, d["shard"], seq, d["client"])
        if sender.send(frame):
            sent += 1
        log.debug("%s from %s: status %d seq %d", name, reply_ip, status, seq)
    return sent


def cmd_counters(args):
    b = Bfrt(args, args.client_id, subscribe_learn=False)
    values = b.counters()
    for i, name in enumerate(COUNTER_NAMES):
        pkts, byts = values.get(i, (0, 0))
        note = COUNTER_NOTES.get(name, "")
        print("%-20s %14d packets %16d bytes%s" % (name, pkts, byts, note))
    print("%-20s %14d packets  (GROUP_STARTs that saturated a counting-filter cell)" % (
        "cbf_saturated", b.cbf_saturated()))
    return 0


def cmd_read_registers(args):
    b = Bfrt(args, args.client_id, subscribe_learn=False)
    pairs = b.pair_entries()
    print("nm_pair (%d of %d):" % (len(pairs), MAX_PAIRS))
    slots = {}
    for src_ip, shard, d in pairs:
        slot = d.get("slot")
        slots[slot] = (src_ip, shard, d)
        print("  %s:%d -> slot %s dst %s:%s size_exp %s remain_exp %s" % (
            int_to_ip(src_ip), shard, slot, int_to_ip(d.get("dst_ip", 0)), d.get("dst_shard"),
            d.get("size_exp"), d.get("remain_exp")))
    wanted = [args.slot] if args.slot is not None else sorted(s for s in slots if s is not None) or [0]
    for slot in wanted:
        print("slot %d (per-pipe values):" % slot)
        seqs = b.register_read(R_SEQ, range(slot * MAX_PARTITIONS, (slot + 1) * MAX_PARTITIONS))
        for index in sorted(seqs):
            if any(seqs[index]):
                print("  nm_expected_seq[partition %d] = %s" % (index - slot * MAX_PARTITIONS, seqs[index]))
        for name in R_COUNTING_BLOOM:
            cells = b.register_read(name, range(slot * b.cbf_cells, (slot + 1) * b.cbf_cells))
            nonzero = [(i - slot * b.cbf_cells, v) for i, v in sorted(cells.items()) if any(v)]
            shown = ", ".join("%d:%s" % c for c in nonzero[:args.limit])
            more = " ..." if len(nonzero) > args.limit else ""
            print("  %s: %d non-zero %s%s" % (name.split(".")[-1], len(nonzero), shown, more))
        if args.all_cells:
            for name in R_BLOOM:
                cells = b.register_read(name, range(slot * b.bf_cells, (slot + 1) * b.bf_cells))
                ones = sum(1 for v in cells.values() if any(v))
                print("  %s: %d of %d cells set" % (name.split(".")[-1], ones, b.bf_cells))
        if args.group is not None:
            if slot in slots:
                dst_ip, dst_shard = slots[slot][2].get("dst_ip"), slots[slot][2].get("dst_shard")
            else:
                dst_ip, dst_shard = ip_to_int(args.dst_ip), args.dst_shard
            hashes = filter_hashes(dst_ip, dst_shard, args.group)
            cbf = [b.register_read(n, [i])[i] for n, i in
                   zip(R_COUNTING_BLOOM, cell_indices(hashes, b.cbf_cells, slot))]
            bf = [b.register_read(n, [i])[i] for n, i in
                  zip(R_BLOOM, cell_indices(hashes, b.bf_cells, slot))]
            print("  group %d: CBF %s BF %s" % (args.group, cbf, bf))
            in_flight = all(any(v) for v in cbf)
            done = all(any(v) for v in bf)
            print("  state (any pipe): %s" % ("S2 in flight" if in_flight else
                                               "S3 done" if done else "S1 not started"))
    return 0


def cmd_hash(args):
    if args.group is not None:
        group = args.group
    else:
        group = group_of(int(args.key_hash, 0), args.size_exp, args.remain_exp)
    hashes = filter_hashes(args.dst_ip, args.dst_shard, group)
    print("tuple %s group %d" % (filter_tuple(args.dst_ip, args.dst_shard, group).hex(), group))
    for i, ((name, _, _, _, _), h) in enumerate(zip(CRC_CONFIGS, hashes)):
        print("index_%d %-16s crc 0x%08x  bf[%d]  cbf[%d]" % (
            i + 1, name, h, args.slot * args.bf_cells + (h & (args.bf_cells - 1)),
            args.slot * args.cbf_cells + (h & (args.cbf_cells - 1))))
    return 0


def cmd_selftest(_args):
    # Check values of "123456789" (reveng CRC catalogue).
    checks = [0xE3069283, 0xCBF43926, 0xFC891918, 0x3010BF7F]
    ok = True
    for (name, poly, refl, init, xo), want in zip(CRC_CONFIGS, checks):
        got = crc32(b"123456789", poly, refl, init, xo)
        print("%-16s 0x%08x %s" % (name, got, "ok" if got == want else "WRONG (0x%08x)" % want))
        ok = ok and got == want
    return 0 if ok else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grpc-addr", default="localhost:50052", help="bf_switchd's BF Runtime gRPC server")
    p.add_argument("--p4-name", default=P4_NAME)
    p.add_argument("--device", type=int, default=0)
    p.add_argument("--client-id", type=int, default=None,
                   help="BF Runtime client id (default 0 for run, 1 for the readers)")
    p.add_argument("--bf-cells-log2", type=int, help="BF_CELLS_LOG2 the program was compiled with")
    p.add_argument("--cbf-cells-log2", type=int, help="CBF_CELLS_LOG2 the program was compiled with")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd")

    r = sub.add_parser("run", help="start-up, then handle SWITCH_INIT/TERMINATE digests")
    r.add_argument("--ports", required=True, help="ports file (YAML or .json), see ports.example.yaml")
    r.add_argument("--cpu-iface", help="CPU port netdev for acknowledgements (overrides the ports file)")
    r.add_argument("--enable-ports", action="store_true", help="add hosts' ports with their speed/fec")
    r.add_argument("--no-reset", action="store_true", help="do not clear tables and registers first")
    r.add_argument("--keep-counters", action="store_true")
    r.add_argument("--stats-interval", type=float, default=10.0)

    rr = sub.add_parser("read-registers", help="print pairs, sequence registers and filter cells")
    rr.add_argument("--slot", type=int)
    rr.add_argument("--group", type=int, help="also print the eight cells of this group")
    rr.add_argument("--dst-ip", default="0.0.0.0", help="for --group when the slot has no pair")
    rr.add_argument("--dst-shard", type=int, default=0)
    rr.add_argument("--all-cells", action="store_true", help="also count set BF cells (slow)")
    rr.add_argument("--limit", type=int, default=32, help="non-zero CBF cells shown per array")

    sub.add_parser("counters", help="print nm_decisions")

    h = sub.add_parser("hash", help="offline: filter indices of a group")
    h.add_argument("--dst-ip", required=True)
    h.add_argument("--dst-shard", type=int, required=True)
    h.add_argument("--group", type=int)
    h.add_argument("--key-hash", help="instead of --group: the header's key hash (0x...)")
    h.add_argument("--size-exp", type=int, default=32)
    h.add_argument("--remain-exp", type=int, default=16)
    h.add_argument("--slot", type=int, default=0)
    h.add_argument("--bf-cells", type=int, default=DEFAULT_BF_CELLS)
    h.add_argument("--cbf-cells", type=int, default=DEFAULT_CBF_CELLS)

    sub.add_parser("selftest", help="offline: CRC check values")

    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    if args.cmd is None:
        p.print_help()
        return 2
    if args.client_id is None:
        args.client_id = 0 if args.cmd == "run" else 1
    if args.cmd == "hash" and args.group is None and args.key_hash is None:
        p.error("hash needs --group or --key-hash")
    return {"run": cmd_run, "counters": cmd_counters, "read-registers": cmd_read_registers,
            "hash": cmd_hash, "selftest": cmd_selftest}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
