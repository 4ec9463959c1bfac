/* netmigrate switch pipeline: constants.
 *
 * The names repeat docs/switch.md and docs/wire.md (and tofino/src/spec.rs, the
 * software switch's copy); keep the three in step. Sizes are compile-time here,
 * start-up options in the software switch. Override on the bf-p4c command line,
 * e.g. -DBF_CELLS_LOG2=18 -DCBF_CELLS_LOG2=13.
 */
#ifndef _NETMIGRATE_DEFINES_P4_
#define _NETMIGRATE_DEFINES_P4_

/* ---------------------------------------------------------------- sizes */

/* Migration pairs the switch steers at once (nm_pair entries, register slots). */
#define MAX_PAIRS            4
#define NM_SLOT_BITS         2          /* log2(MAX_PAIRS) */

/* Source partitions per pair (nm_expected_seq cells per slot). */
#define MAX_PARTITIONS       64
#define NM_PARTITION_BITS    6          /* log2(MAX_PARTITIONS) */

/* Bloom filter cells per slot and per array. docs/switch.md: default
 * 2^(group_bits+1) for group_bits 16, i.e. 2^17, clamped to 2^10..2^20. */
#ifndef BF_CELLS_LOG2
#define BF_CELLS_LOG2        17
#endif
#define BF_CELLS             (1 << BF_CELLS_LOG2)

/* Counting Bloom filter cells per slot and per array (default 4096). */
#ifndef CBF_CELLS_LOG2
#define CBF_CELLS_LOG2       12
#endif
#define CBF_CELLS            (1 << CBF_CELLS_LOG2)

/* A counting-filter cell at this value is saturated and sticky: never decremented
 * again until the slot is cleared (tofino/src/spec.rs CBF_SATURATED = u8::MAX). */
#define CBF_SATURATED        255

#if BF_CELLS_LOG2 < 10 || BF_CELLS_LOG2 > 20
#error "BF_CELLS must be 2^10 .. 2^20 (docs/switch.md)"
#endif
#if CBF_CELLS_LOG2 < 4 || CBF_CELLS_LOG2 > 16
#error "CBF_CELLS must be 2^4 .. 2^16"
#endif

/* Register array sizes: one contiguous range of CELLS per slot, so the index
 * is slot * CELLS + index_i, i.e. the slot bits concatenated above the index. */
#define NM_BF_SIZE           (MAX_PAIRS * BF_CELLS)
#define NM_CBF_SIZE          (MAX_PAIRS * CBF_CELLS)
#define NM_SEQ_SIZE          (MAX_PAIRS * MAX_PARTITIONS)
#define NM_BF_INDEX_BITS     (NM_SLOT_BITS + BF_CELLS_LOG2)
#define NM_CBF_INDEX_BITS    (NM_SLOT_BITS + CBF_CELLS_LOG2)
#define NM_SEQ_INDEX_BITS    (NM_SLOT_BITS + NM_PARTITION_BITS)

#define IPV4_ROUTE_SIZE      64
#define NM_HOSTS_SIZE        64         /* nm_arp, nm_neighbor: one entry per host */

/* ---------------------------------------------------------------- wire (docs/wire.md) */

#define NM_MAGIC             0x4E4D
#define NM_VERSION           1
#define NM_MAGIC_VERSION     0x4E4D01   /* the first three payload bytes, for lookahead */
#define NM_HEADER_LEN        32

/* Requests the switch steers. */
#define NM_OP_GET            0x01
#define NM_OP_PUT            0x02
#define NM_OP_DELETE         0x03
#define NM_OP_MULTI_GET      0x04
#define NM_OP_MULTI_PUT      0x05
#define NM_OP_MULTI_DELETE   0x06

/* Switch control (source core -> switch). */
#define NM_OP_SWITCH_INIT            0x40
#define NM_OP_SWITCH_GROUP_START     0x41
#define NM_OP_SWITCH_GROUP_COMPLETE  0x42
#define NM_OP_SWITCH_TERMINATE       0x43
#define NM_OP_REPLY_BIT              0x80

#define NM_FLAG_FROM_DESTINATION     0x01
#define NM_FLAG_DOUBLE_READ          0x02
#define NM_FLAG_REDIRECTED           0x04
#define NM_FLAG_RETRANSMIT           0x08
#define NM_FLAG_FORWARDED            0x10
#define NM_FLAG_NOT_MIGRATED         0x20

#define NM_STATUS_OK                 0
#define NM_STATUS_ERROR              4

/* Control bodies (bytes after the common header), docs/switch.md. */
#define NM_INIT_BODY_LEN             16
#define NM_GROUP_BODY_LEN            12
#define NM_TERMINATE_BODY_LEN        8

/* UDP lengths (8-byte UDP header + payload) the switch accepts. Control messages
 * must be exact (the software switch rejects trailing bytes); a request needs at
 * least the common header. */
#define NM_UDP_LEN_MIN_REQUEST       (8 + NM_HEADER_LEN)
#define NM_UDP_LEN_INIT              (8 + NM_HEADER_LEN + NM_INIT_BODY_LEN)
#define NM_UDP_LEN_GROUP             (8 + NM_HEADER_LEN + NM_GROUP_BODY_LEN)
#define NM_UDP_LEN_TERMINATE         (8 + NM_HEADER_LEN + NM_TERMINATE_BODY_LEN)
/* A control reply has an empty body. */
#define NM_UDP_LEN_REPLY             (8 + NM_HEADER_LEN)
#define NM_IPV4_LEN_REPLY            (20 + NM_UDP_LEN_REPLY)

/* Multi-key requests (MULTI_GET/PUT/DELETE): after the common header, count u8,
 * reserved u8, serve u16, halves u16, reserved u16 (NM_MULTI_FIXED_LEN bytes), then
 * count key hashes of 8 bytes (item i's at byte 40 + 8 i of the payload), then the
 * items. The switch reads one hash per pass (see "Multi-key requests" in README.md)
 * and rewrites serve and halves only. */
#define NM_MULTI_MAX_KEYS            16
#define NM_MULTI_FIXED_LEN           8
#define NM_MULTI_HASH_LEN            8
/* The UDP length a request of count items needs to hold its hashes:
 * 8 + NM_HEADER_LEN + NM_MULTI_FIXED_LEN + 8 * count, i.e. 56 (count 1) .. 176 (count 16);
 * the const entries of nm_multi_count spell these values out. */
#define NM_UDP_LEN_MULTI_BASE        (8 + NM_HEADER_LEN + NM_MULTI_FIXED_LEN)

/* ---------------------------------------------------------------- packet classes */

/* What the ingress parser recognised (ig_md.kind). Requests whose FORWARDED flag
 * is set, replies, migration traffic and unknown ops stay NM_KIND_NONE: they are
 * forwarded by IPv4 destination only. */
#define NM_KIND_NONE                 0
#define NM_KIND_READ                 1  /* GET, MULTI_GET: double read when in flight */
#define NM_KIND_WRITE                2  /* PUT, DELETE, MULTI_PUT, MULTI_DELETE */
#define NM_KIND_INIT                 3
#define NM_KIND_GROUP_START          4
#define NM_KIND_GROUP_COMPLETE       5
#define NM_KIND_TERMINATE            6

/* Which register actions run on the filters (ig_md.filter_op). */
#define NM_FOP_NONE                  0
#define NM_FOP_READ                  1  /* a request: read all eight cells */
#define NM_FOP_START                 2  /* GROUP_START applied: CBF += 1 (up to CBF_SATURATED) */
#define NM_FOP_COMPLETE              3  /* GROUP_COMPLETE applied: CBF -= 1 (not from 0 or
                                           CBF_SATURATED), BF := 1 */

/* ---------------------------------------------------------------- counters */

/* Index into the nm_decisions counter array. Indices 0..10 are the names of
 * docs/switch.md in its order (false_in_flight and false_done stay 0: only the
 * software switch, which keeps exact group states, can tell); 12 is the software
 * switch's control_errors (GROUP_* only here: INIT/TERMINATE errors are counted by
 * the controller); 11, 13 and 14 are Tofino-only. The controller prints them by these
 * names.
 *
 * One count per packet and pass: a multi-key request that hits a pair is counted once
 * as multi_recirculations for each of its count - 1 recirculating passes, then once
 * by its outcome (to_source, redirects, double_reads or multi_splits). */
#define NM_CTR_FORWARDED             0
#define NM_CTR_TO_SOURCE             1
#define NM_CTR_DOUBLE_READS          2
#define NM_CTR_REDIRECTS             3
#define NM_CTR_MULTI_SPLITS          4  /* multi-key requests split between source and destination */
#define NM_CTR_FALSE_IN_FLIGHT       5
#define NM_CTR_FALSE_DONE            6
#define NM_CTR_CONTROL_APPLIED       7
#define NM_CTR_CONTROL_DUPLICATES    8
#define NM_CTR_CONTROL_GAPS          9
#define NM_CTR_MALFORMED             10
#define NM_CTR_CONTROL_DIGESTS       11 /* INIT/TERMINATE handed to the controller */
#define NM_CTR_CONTROL_ERRORS        12 /* GROUP_* answered Error: no pair, partition not joined */
#define NM_CTR_ARP                   13 /* ARP requests answered (or dropped) */
#define NM_CTR_MULTI_RECIRCULATIONS  14 /* Tofino-only: passes of a multi-key request that recirculate */
#define NM_CTR_SIZE                  16

/* ---------------------------------------------------------------- internal */

/* Digest types (ig_dprsr_md.digest_type). */
#define NM_DIGEST_INIT               1
#define NM_DIGEST_TERMINATE          2

/* First byte of what egress sees in front of the packet, and of the recirculation
 * header in front of a recirculated request. Unicast MAC addresses have an even first
 * byte, so NORMAL and RECIRC (odd) are never taken for the start of an Ethernet frame. */
#define NM_PKT_TYPE_NORMAL           1  /* bridged metadata */
#define NM_PKT_TYPE_MIRROR           2  /* ingress-to-egress mirror (double read / split copy) */
#define NM_PKT_TYPE_RECIRC           3  /* nm_recirc_h: a multi-key request between passes */

/* Where a multi-key request recirculates between passes: a recirculation port of the
 * pipe the hosts are on (registers are per pipe). Tofino 1: pipe-local port 68 of
 * pipe 0 (196, 324, 452 for pipes 1..3). Tofino 2: port 6 of pipe 0, as in public
 * TNA programs; not checked against a Tofino 2 here. Override with
 * -DNM_RECIRC_PORT=<dev_port>. */
#ifndef NM_RECIRC_PORT
#if __TARGET_TOFINO__ == 1
#define NM_RECIRC_PORT               68
#else
#define NM_RECIRC_PORT               6
#endif
#endif

/* Mirror session of pair slot s: NM_MIRROR_SESSION_BASE + s (Tofino 1 normal
 * sessions are 1..1015). The controller points session s at the destination's port. */
#define NM_MIRROR_SESSION_BASE       1

#if __TARGET_TOFINO__ == 1
#define NM_MIRROR_TYPE_WIDTH         3
#else
#define NM_MIRROR_TYPE_WIDTH         4
#endif
#define NM_MIRROR_TYPE_I2E           1

#define ETHERTYPE_IPV4               0x0800
#define ETHERTYPE_ARP                0x0806
#define IP_PROTOCOLS_UDP             17
#define ARP_HTYPE_ETHERNET           1
#define ARP_OPER_REQUEST             1
#define ARP_OPER_REPLY               2

#endif /* _NETMIGRATE_DEFINES_P4_ */
