/* netmigrate switch pipeline for Tofino (TNA), implementing docs/switch.md.
 *
 * Ingress, per packet:
 *   ARP request          -> answered from nm_arp (hosts and the switch's own address)
 *   request (op 1..6)    -> nm_pair on (ipv4.dst, shard); hit: group id, four CRC-32
 *                           indices, read 4 BF + 4 CBF cells, nm_decide picks S1/S2/S3
 *                           for one item, nm_steer acts on the items decided so far;
 *                           miss: S4, forwarded by IPv4
 *   multi-key (op 4..6)  -> one item per pass: passes 1..count-1 recirculate with the
 *                           decisions so far in nm_recirc; the last one steers (source,
 *                           destination, or split in two by mirroring); see README.md
 *   GROUP_START/COMPLETE -> nm_pair on (body src_ip, shard); nm_expected_seq applies it at
 *                           most once; the filters are updated; the packet is turned around
 *   INIT/TERMINATE       -> digest to the controller (tofino/controller), packet dropped
 *   anything else        -> ipv4_route
 * Egress rewrites the destination's copy of a double read or of a split multi-key
 * request (ingress-to-egress mirror, one session per slot).
 *
 * UDP checksum: every packet whose netmigrate header the switch changes leaves with UDP
 * checksum 0 ("no checksum", RFC 768, accepted by Linux and by our DPDK path, which checks
 * IPv4 header checksums only). The IPv4 header checksum is recomputed in the deparsers.
 */

#include <core.p4>
#if __TARGET_TOFINO__ == 3
#include <t3na.p4>
#elif __TARGET_TOFINO__ == 2
#include <t2na.p4>
#else
#include <tna.p4>
#endif

#include "defines.p4"
#include "headers.p4"
#include "parsers.p4"

/* Metadata the parser writes on some paths only (kind, pair key, group, key_lo,
 * multi, multi_index, item_bit, the masks) must read as 0 on the others. */
@pa_auto_init_metadata

/* Filter cell of slot s: s * CELLS + (h & (CELLS - 1)), i.e. the slot above the low bits. */
#define NM_BF_INDEX(h)   (ig_md.slot ++ (h)[BF_CELLS_LOG2 - 1:0])
#define NM_CBF_INDEX(h)  (ig_md.slot ++ (h)[CBF_CELLS_LOG2 - 1:0])
#define NM_SEQ_INDEX     (ig_md.slot ++ hdr.nm_group.partition[NM_PARTITION_BITS - 1:0])

/* One Bloom filter array: 1-bit cells "group done". */
#define NM_BLOOM(i)                                                                        \
    Register<bit<1>, nm_bf_index_t>(NM_BF_SIZE, 0) nm_bloom_##i;                           \
    RegisterAction<bit<1>, nm_bf_index_t, bit<1>>(nm_bloom_##i) nm_bloom_##i##_read = {    \
        void apply(inout bit<1> value, out bit<1> rv) {                                    \
            rv = value;                                                                    \
        }                                                                                  \
    };                                                                                     \
    RegisterAction<bit<1>, nm_bf_index_t, bit<1>>(nm_bloom_##i) nm_bloom_##i##_set = {     \
        void apply(inout bit<1> value) {                                                   \
            value = 1;                                                                     \
        }                                                                                  \
    };

/* One counting Bloom filter array: 8-bit counters "group in flight". The decrement stops
 * at 0, so a lost or duplicated message can never wrap a counter (the artifact's signed
 * counters went negative, bug 18). A counter that reaches CBF_SATURATED (255) is
 * saturated, and sticky: more groups were in flight on it than it counts, so it is never
 * decremented again (counting down from it could reach 0 while a group on it is still in
 * flight, whose reads would then go to the source only: a stale read). It reads "in
 * flight" until the controller clears the slot when the pair is removed: false positives
 * only. _inc returns 1 when it saturates the cell (nm_cbf_saturated counts those STARTs).
 * The same arithmetic as tofino/src/spec.rs cbf_increment / cbf_decrement. */
#define NM_COUNTING_BLOOM(i)                                                                          \
    Register<bit<8>, nm_cbf_index_t>(NM_CBF_SIZE, 0) nm_counting_bloom_##i;                           \
    RegisterAction<bit<8>, nm_cbf_index_t, bit<1>>(nm_counting_bloom_##i) nm_counting_bloom_##i##_read = { \
        void apply(inout bit<8> value, out bit<1> rv) {                                               \
            if (value != 0) {                                                                         \
                rv = 1;                                                                               \
            } else {                                                                                  \
                rv = 0;                                                                               \
            }                                                                                         \
        }                                                                                             \
    };                                                                                                \
    RegisterAction<bit<8>, nm_cbf_index_t, bit<1>>(nm_counting_bloom_##i) nm_counting_bloom_##i##_inc = { \
        void apply(inout bit<8> value, out bit<1> rv) {                                               \
            if (value == CBF_SATURATED - 1) {                                                         \
                rv = 1;                                                                               \
            } else {                                                                                  \
                rv = 0;                                                                               \
            }                                                                                         \
            if (value != CBF_SATURATED) {                                                             \
                value = value + 1;                                                                    \
            }                                                                                         \
        }                                                                                             \
    };                                                                                                \
    RegisterAction<bit<8>, nm_cbf_index_t, bit<1>>(nm_counting_bloom_##i) nm_counting_bloom_##i##_dec = { \
        void apply(inout bit<8> value) {                                                              \
            if (value != 0 && value != CBF_SATURATED) {                                               \
                value = value - 1;                                                                    \
            }                                                                                         \
        }                                                                                             \
    };

/* group >> n needs a constant n on Tofino: one action per shift amount. */
#define NM_GROUP_SHIFT(n)                                                                  \
    action group_shift_##n() {                                                             \
        ig_md.group = ig_md.group >> n;                                                    \
    }

control NmIngress(
        inout headers_t hdr,
        inout ingress_metadata_t ig_md,
        in ingress_intrinsic_metadata_t ig_intr_md,
        in ingress_intrinsic_metadata_from_parser_t ig_prsr_md,
        inout ingress_intrinsic_metadata_for_deparser_t ig_dprsr_md,
        inout ingress_intrinsic_metadata_for_tm_t ig_tm_md) {

    /* Packets (and bytes) per decision, indexed by NM_CTR_* (defines.p4). */
    Counter<bit<32>, nm_ctr_index_t>(NM_CTR_SIZE, CounterType_t.PACKETS_AND_BYTES) nm_decisions;
    /* Applied GROUP_STARTs that saturated a counting-filter cell (docs/switch.md
     * cbf_saturated). A counter of its own: nm_decisions counts the packet already. */
    Counter<bit<32>, bit<1>>(1, CounterType_t.PACKETS) nm_cbf_saturated;

    action drop() {
        ig_dprsr_md.drop_ctl = 1;
    }

    /* ------------------------------------------------------------ IPv4 routing */

    action forward(PortId_t port, mac_addr_t dst_mac) {
        ig_tm_md.ucast_egress_port = port;
        hdr.ethernet.dst_addr = dst_mac;
    }

    table ipv4_route {
        key = { hdr.ipv4.dst_addr : lpm; }
        actions = { forward; drop; }
        // Unknown destinations are dropped (the artifact's default was a no-op
        // that left the egress port unset, bug 15).
        const default_action = drop();
        size = IPV4_ROUTE_SIZE;
    }

    /* ------------------------------------------------------------ ARP */

    // Answer "who has tpa" for every host of the ports file and for the switch's own
    // address, so hosts need no static neighbour entries and no L2 flooding is needed.
    action arp_reply(mac_addr_t mac) {
        ipv4_addr_t target = hdr.arp.tpa;
        hdr.arp.oper = ARP_OPER_REPLY;
        hdr.arp.tha = hdr.arp.sha;
        hdr.arp.tpa = hdr.arp.spa;
        hdr.arp.sha = mac;
        hdr.arp.spa = target;
        hdr.ethernet.dst_addr = hdr.ethernet.src_addr;
        hdr.ethernet.src_addr = mac;
        ig_tm_md.ucast_egress_port = ig_intr_md.ingress_port;
    }

    table nm_arp {
        key = { hdr.arp.tpa : exact; }
        actions = { arp_reply; drop; }
        const default_action = drop();
        size = NM_HOSTS_SIZE;
    }

    /* ------------------------------------------------------------ switch address */

    action to_switch() {
        ig_md.to_switch = 1;
    }

    // Control messages count only when sent to the switch's own address.
    table nm_switch_addr {
        key = { hdr.ipv4.dst_addr : exact; }
        actions = { to_switch; NoAction; }
        const default_action = NoAction();
        size = 4;
    }

    /* ------------------------------------------------------------ migration pairs */

    // stream: the migration's stream id (its control messages' hdr.nm.client), so group
    // messages of another migration of the same shard never touch this pair's registers.
    action set_pair(nm_slot_t slot, ipv4_addr_t dst_ip, bit<16> dst_shard,
                    bit<8> size_exp, bit<8> remain_exp, bit<32> stream) {
        ig_md.pair_hit = 1;
        ig_md.slot = slot;
        ig_md.dst_ip = dst_ip;
        ig_md.dst_shard = dst_shard;
        ig_md.size_exp = size_exp;
        ig_md.remain_exp = remain_exp;
        ig_md.pair_stream = stream;
        ig_md.mirror_session = (MirrorId_t)slot + NM_MIRROR_SESSION_BASE;
    }

    // Keyed by the source's (address, shard). The parser fills the key: ipv4.dst and
    // hdr.shard for a request, body src_ip and hdr.shard for a group message, so one
    // lookup serves both and they index the same filter cells.
    table nm_pair {
        key = {
            ig_md.pair_ip    : exact @name("ipv4_dst");
            ig_md.pair_shard : exact @name("shard");
        }
        actions = { set_pair; NoAction; }
        const default_action = NoAction();
        size = MAX_PAIRS;
    }

    /* ------------------------------------------------------------ group id */

    // group = ((key_hash & 0xFFFFFFFF) & (2^size_exp - 1)) >> remain_exp, in two tables
    // like the artifact: Tofino has no variable-width mask or shift. key_lo is the
    // header's key hash for a single key, the examined item's for a multi-key request.
    action group_mask(bit<32> mask) {
        ig_md.group = ig_md.key_lo & mask;
    }

    table nm_group_mask {
        key = { ig_md.size_exp : exact; }
        actions = { group_mask; NoAction; }
        // size_exp 1..32 only; the controller refuses a pair with any other value.
        const default_action = NoAction();
        size = 32;
        const entries = {
             1 : group_mask(32w0x00000001);
             2 : group_mask(32w0x00000003);
             3 : group_mask(32w0x00000007);
             4 : group_mask(32w0x0000000F);
             5 : group_mask(32w0x0000001F);
             6 : group_mask(32w0x0000003F);
             7 : group_mask(32w0x0000007F);
             8 : group_mask(32w0x000000FF);
             9 : group_mask(32w0x000001FF);
            10 : group_mask(32w0x000003FF);
            11 : group_mask(32w0x000007FF);
            12 : group_mask(32w0x00000FFF);
            13 : group_mask(32w0x00001FFF);
            14 : group_mask(32w0x00003FFF);
            15 : group_mask(32w0x00007FFF);
            16 : group_mask(32w0x0000FFFF);
            17 : group_mask(32w0x0001FFFF);
            18 : group_mask(32w0x0003FFFF);
            19 : group_mask(32w0x0007FFFF);
            20 : group_mask(32w0x000FFFFF);
            21 : group_mask(32w0x001FFFFF);
            22 : group_mask(32w0x003FFFFF);
            23 : group_mask(32w0x007FFFFF);
            24 : group_mask(32w0x00FFFFFF);
            25 : group_mask(32w0x01FFFFFF);
            26 : group_mask(32w0x03FFFFFF);
            27 : group_mask(32w0x07FFFFFF);
            28 : group_mask(32w0x0FFFFFFF);
            29 : group_mask(32w0x1FFFFFFF);
            30 : group_mask(32w0x3FFFFFFF);
            31 : group_mask(32w0x7FFFFFFF);
            32 : group_mask(32w0xFFFFFFFF);
        }
    }

    NM_GROUP_SHIFT(1)  NM_GROUP_SHIFT(2)  NM_GROUP_SHIFT(3)  NM_GROUP_SHIFT(4)
    NM_GROUP_SHIFT(5)  NM_GROUP_SHIFT(6)  NM_GROUP_SHIFT(7)  NM_GROUP_SHIFT(8)
    NM_GROUP_SHIFT(9)  NM_GROUP_SHIFT(10) NM_GROUP_SHIFT(11) NM_GROUP_SHIFT(12)
    NM_GROUP_SHIFT(13) NM_GROUP_SHIFT(14) NM_GROUP_SHIFT(15) NM_GROUP_SHIFT(16)
    NM_GROUP_SHIFT(17) NM_GROUP_SHIFT(18) NM_GROUP_SHIFT(19) NM_GROUP_SHIFT(20)
    NM_GROUP_SHIFT(21) NM_GROUP_SHIFT(22) NM_GROUP_SHIFT(23) NM_GROUP_SHIFT(24)
    NM_GROUP_SHIFT(25) NM_GROUP_SHIFT(26) NM_GROUP_SHIFT(27) NM_GROUP_SHIFT(28)
    NM_GROUP_SHIFT(29) NM_GROUP_SHIFT(30) NM_GROUP_SHIFT(31)

    table nm_group_shift {
        key = { ig_md.remain_exp : exact; }
        actions = {
            group_shift_1;  group_shift_2;  group_shift_3;  group_shift_4;
            group_shift_5;  group_shift_6;  group_shift_7;  group_shift_8;
            group_shift_9;  group_shift_10; group_shift_11; group_shift_12;
            group_shift_13; group_shift_14; group_shift_15; group_shift_16;
            group_shift_17; group_shift_18; group_shift_19; group_shift_20;
            group_shift_21; group_shift_22; group_shift_23; group_shift_24;
            group_shift_25; group_shift_26; group_shift_27; group_shift_28;
            group_shift_29; group_shift_30; group_shift_31;
            NoAction;
        }
        // remain_exp 0: no shift.
        const default_action = NoAction();
        size = 32;
        const entries = {
             1 : group_shift_1();
             2 : group_shift_2();
             3 : group_shift_3();
             4 : group_shift_4();
             5 : group_shift_5();
             6 : group_shift_6();
             7 : group_shift_7();
             8 : group_shift_8();
             9 : group_shift_9();
            10 : group_shift_10();
            11 : group_shift_11();
            12 : group_shift_12();
            13 : group_shift_13();
            14 : group_shift_14();
            15 : group_shift_15();
            16 : group_shift_16();
            17 : group_shift_17();
            18 : group_shift_18();
            19 : group_shift_19();
            20 : group_shift_20();
            21 : group_shift_21();
            22 : group_shift_22();
            23 : group_shift_23();
            24 : group_shift_24();
            25 : group_shift_25();
            26 : group_shift_26();
            27 : group_shift_27();
            28 : group_shift_28();
            29 : group_shift_29();
            30 : group_shift_30();
            31 : group_shift_31();
        }
    }

    /* ------------------------------------------------------------ filter indices */

    // The four CRC-32 configurations of docs/switch.md, over
    // dst_ip (4 bytes) || dst_shard (2 bytes) || group (4 bytes), big-endian, in
    // field-list order. CRCPolynomial(coeff, reversed, msb, extended, init, xor):
    // reversed = reflected input and output (as in Intel's tna_custom_hash example,
    // whose reversed CRC-32 matches Python's zlib.crc32). They are the SDE's predefined
    // crc_32c, crc_32, crc_32_bzip2 and crc_32q (same polynomial, reflection, init and
    // final xor). No two may be affine images of each other: index 4 was CRC-32/MPEG-2,
    // which is CRC-32/BZIP2 XOR 0xFFFFFFFF, so the filters had three hashes, not four.
    CRCPolynomial<bit<32>>(32w0x1EDC6F41, true,  false, false, 32w0xFFFFFFFF, 32w0xFFFFFFFF) crc32_iscsi;
    CRCPolynomial<bit<32>>(32w0x04C11DB7, true,  false, false, 32w0xFFFFFFFF, 32w0xFFFFFFFF) crc32_iso_hdlc;
    CRCPolynomial<bit<32>>(32w0x04C11DB7, false, false, false, 32w0xFFFFFFFF, 32w0xFFFFFFFF) crc32_bzip2;
    CRCPolynomial<bit<32>>(32w0x814141AB, false, false, false, 32w0x00000000, 32w0x00000000) crc32_q;
    Hash<bit<32>>(HashAlgorithm_t.CUSTOM, crc32_iscsi)    nm_hash_1;
    Hash<bit<32>>(HashAlgorithm_t.CUSTOM, crc32_iso_hdlc) nm_hash_2;
    Hash<bit<32>>(HashAlgorithm_t.CUSTOM, crc32_bzip2)    nm_hash_3;
    Hash<bit<32>>(HashAlgorithm_t.CUSTOM, crc32_q)        nm_hash_4;

    action compute_indices() {
        ig_md.h1 = nm_hash_1.get({ig_md.dst_ip, ig_md.dst_shard, ig_md.group});
        ig_md.h2 = nm_hash_2.get({ig_md.dst_ip, ig_md.dst_shard, ig_md.group});
        ig_md.h3 = nm_hash_3.get({ig_md.dst_ip, ig_md.dst_shard, ig_md.group});
        ig_md.h4 = nm_hash_4.get({ig_md.dst_ip, ig_md.dst_shard, ig_md.group});
    }

    /* ------------------------------------------------------------ filters */

    NM_BLOOM(1)
    NM_BLOOM(2)
    NM_BLOOM(3)
    NM_BLOOM(4)
    NM_COUNTING_BLOOM(1)
    NM_COUNTING_BLOOM(2)
    NM_COUNTING_BLOOM(3)
    NM_COUNTING_BLOOM(4)

    /* ------------------------------------------------------------ control sequence */

    // Next sequence number to apply per (slot, partition); 0 = partition not joined
    // (the controller writes 1 when it acknowledges SWITCH_INIT). Applies a message
    // only if its seq is the expected one, then expects the next; returns the value
    // before the message, from which "applied" (old == seq) and the last applied
    // sequence number (old - 1) both follow.
    Register<bit<32>, nm_seq_index_t>(NM_SEQ_SIZE, 0) nm_expected_seq;
    RegisterAction<bit<32>, nm_seq_index_t, bit<32>>(nm_expected_seq) nm_expected_seq_apply = {
        void apply(inout bit<32> value, out bit<32> rv) {
            rv = value;
            if (value != 0 && value == ig_md.ctl_seq) {
                value = value + 1;
            }
        }
    };

    /* ------------------------------------------------------------ multi-key items */

    // The item a pass examines (pass k examines item k, so a request of count items
    // takes count passes): its bit if serve selects it, else 0 (the filters are read,
    // the decision is not recorded: only selected items are decided), its bit in
    // halves, the next index, and how many items follow. An index without an entry
    // (never sent) leaves multi_left 0: no further pass.
    action set_item(bit<16> mask, bit<8> next_index) {
        ig_md.item_bit = hdr.nm_multi.serve & mask;
        ig_md.item_half = hdr.nm_multi.halves & mask;
        ig_md.multi_next = next_index;
        ig_md.multi_left = hdr.nm_multi.count - next_index;
    }

    table nm_item {
        key = { ig_md.multi_index : exact; }
        actions = { set_item; NoAction; }
        const default_action = NoAction();
        size = NM_MULTI_MAX_KEYS;
        const entries = {
             0 : set_item(16w0x0001,  1);
             1 : set_item(16w0x0002,  2);
             2 : set_item(16w0x0004,  3);
             3 : set_item(16w0x0008,  4);
             4 : set_item(16w0x0010,  5);
             5 : set_item(16w0x0020,  6);
             6 : set_item(16w0x0040,  7);
             7 : set_item(16w0x0080,  8);
             8 : set_item(16w0x0100,  9);
             9 : set_item(16w0x0200, 10);
            10 : set_item(16w0x0400, 11);
            11 : set_item(16w0x0800, 12);
            12 : set_item(16w0x1000, 13);
            13 : set_item(16w0x2000, 14);
            14 : set_item(16w0x4000, 15);
            15 : set_item(16w0x8000, 16);
        }
    }

    // What tofino/src/pipeline.rs (wire::MultiRoute::read) refuses to steer: count
    // outside 1..16, a datagram shorter than its hashes (NM_UDP_LEN_MULTI_BASE +
    // 8 * count UDP bytes), serve 0 or naming an item at or above count, halves
    // outside serve. Such a request is forwarded unchanged; its server rejects it.
    action multi_min_len(bit<16> udp_len, bit<16> outside) {
        ig_md.multi_slack = hdr.udp.len - udp_len;
        ig_md.multi_outside = hdr.nm_multi.serve & outside;
        ig_md.multi_stray = hdr.nm_multi.halves & ~hdr.nm_multi.serve;
    }

    action multi_bad_count() {
        ig_md.multi_slack = 16w0x8000;
    }

    table nm_multi_count {
        key = { hdr.nm_multi.count : exact; }
        actions = { multi_min_len; multi_bad_count; }
        const default_action = multi_bad_count();
        size = NM_MULTI_MAX_KEYS;
        const entries = {
             1 : multi_min_len(56, 16w0xFFFE);
             2 : multi_min_len(64, 16w0xFFFC);
             3 : multi_min_len(72, 16w0xFFF8);
             4 : multi_min_len(80, 16w0xFFF0);
             5 : multi_min_len(88, 16w0xFFE0);
             6 : multi_min_len(96, 16w0xFFC0);
             7 : multi_min_len(104, 16w0xFF80);
             8 : multi_min_len(112, 16w0xFF00);
             9 : multi_min_len(120, 16w0xFE00);
            10 : multi_min_len(128, 16w0xFC00);
            11 : multi_min_len(136, 16w0xF800);
            12 : multi_min_len(144, 16w0xF000);
            13 : multi_min_len(152, 16w0xE000);
            14 : multi_min_len(160, 16w0xC000);
            15 : multi_min_len(168, 16w0x8000);
            16 : multi_min_len(176, 16w0x0000);
        }
    }

    /* ------------------------------------------------------------ decisions */

    // The decision for one key (tofino/src/pipeline.rs Switch::decide), for single-key
    // and multi-key requests alike: the key's bit goes into the mask of its decision
    // (to_source, to_dest, dr: disjoint, as steer_multi keeps them), and its halves bit
    // (a double read: its own bit) into the halves of the copies that will carry it.
    // item_bit is 1 and item_half 0 for a single key, so its masks end up 0 or 1; a
    // multi-key request's accumulate over its passes. Nothing else is written here:
    // nm_steer acts once every item is decided.
    action decide_source() {
        ig_md.mask_source = ig_md.mask_source | ig_md.item_bit;
        ig_md.halves_source = ig_md.halves_source | ig_md.item_half;
    }

    action decide_redirect() {
        ig_md.mask_dest = ig_md.mask_dest | ig_md.item_bit;
        ig_md.halves_dest = ig_md.halves_dest | ig_md.item_half;
    }

    action decide_double_read() {
        ig_md.mask_dr = ig_md.mask_dr | ig_md.item_bit;
        ig_md.halves_source = ig_md.halves_source | ig_md.item_bit;
        ig_md.halves_dest = ig_md.halves_dest | ig_md.item_bit;
    }

    // docs/switch.md "Decision": in_flight = all four counters non-zero (S2),
    // done = all four bits set (S3); neither: S1, the source. A read (GET, MULTI_GET)
    // in flight is read twice; a write in flight, or any op on a done group, goes to
    // the destination. Ternary entries match in the order written.
    table nm_decide {
        key = {
            ig_md.kind : ternary;
            ig_md.cbf1 : ternary;
            ig_md.cbf2 : ternary;
            ig_md.cbf3 : ternary;
            ig_md.cbf4 : ternary;
            ig_md.bf1  : ternary;
            ig_md.bf2  : ternary;
            ig_md.bf3  : ternary;
            ig_md.bf4  : ternary;
        }
        actions = { decide_double_read; decide_redirect; decide_source; }
        const default_action = decide_source();
        size = 4;
        const entries = {
            (NM_KIND_READ,  1, 1, 1, 1, _, _, _, _) : decide_double_read();
            (NM_KIND_WRITE, 1, 1, 1, 1, _, _, _, _) : decide_redirect();
            (_,             _, _, _, _, 1, 1, 1, 1) : decide_redirect();
        }
    }

    /* ------------------------------------------------------------ steering */

    // Once every item is decided (one pass for a single key, count passes for a
    // multi-key request), nm_steer acts on the masks like steer_multi:
    //   to_dest, dr both 0      the source, unchanged            to_source
    //   to_source, dr both 0    the destination                  redirect, multi_redirect
    //   otherwise               original to the source, mirror   double_read,
    //                           copy redirected to the           multi_double_read,
    //                           destination                      multi_split(_double_read)
    // The source's copy serves to_source | dr, the destination's to_dest | dr; both get
    // halves |= dr (cut to their own serve) and, if dr is not empty, DOUBLE_READ. Counted
    // double_reads when every selected key is a double read, else multi_splits.

    action to_source() {
        ig_md.ctr = NM_CTR_TO_SOURCE;
    }

    // Redirect: the destination answers the client directly (ports and source address
    // are kept; servers of a pair listen on the same UDP ports).
    action redirect() {
        hdr.ipv4.dst_addr = ig_md.dst_ip;
        hdr.nm.shard = ig_md.dst_shard;
        hdr.nm.flags = hdr.nm.flags | NM_FLAG_REDIRECTED;
        hdr.udp.checksum = 0;
        ig_md.ipv4_csum_update = 1;
        ig_md.ctr = NM_CTR_REDIRECTS;
    }

    // Double read: the original goes to the source, a mirror copy to the destination
    // (rewritten in egress). Both copies carry DOUBLE_READ.
    action double_read() {
        hdr.nm.flags = hdr.nm.flags | NM_FLAG_DOUBLE_READ;
        hdr.udp.checksum = 0;
        ig_dprsr_md.mirror_type = NM_MIRROR_TYPE_I2E;
        ig_md.mirror_pkt_type = NM_PKT_TYPE_MIRROR;
        ig_md.mirror_flags = NM_FLAG_DOUBLE_READ | NM_FLAG_REDIRECTED;
        ig_md.ctr = NM_CTR_DOUBLE_READS;
    }

    // Multi-key, every selected item to the destination: a redirect with
    // serve = to_dest, halves = halves & to_dest.
    action multi_redirect() {
        hdr.ipv4.dst_addr = ig_md.dst_ip;
        hdr.nm.shard = ig_md.dst_shard;
        hdr.nm.flags = hdr.nm.flags | NM_FLAG_REDIRECTED;
        hdr.nm_multi.serve = ig_md.mask_dest;
        hdr.nm_multi.halves = ig_md.halves_dest;
        hdr.udp.checksum = 0;
        ig_md.ipv4_csum_update = 1;
        ig_md.ctr = NM_CTR_REDIRECTS;
    }

    // Multi-key, both servers: the original keeps the items for the source, a mirror
    // copy (egress: redirect_copy, select_copy_items) takes those for the destination.
    action multi_split() {
        hdr.nm_multi.serve = ig_md.mask_source;
        hdr.nm_multi.halves = ig_md.halves_source;
        hdr.udp.checksum = 0;
        ig_dprsr_md.mirror_type = NM_MIRROR_TYPE_I2E;
        ig_md.mirror_pkt_type = NM_PKT_TYPE_MIRROR;
        ig_md.mirror_flags = NM_FLAG_REDIRECTED;
        ig_md.mirror_serve = ig_md.mask_dest;
        ig_md.mirror_halves = ig_md.halves_dest;
        ig_md.ctr = NM_CTR_MULTI_SPLITS;
    }

    // ... with double reads: dr goes to both, both carry DOUBLE_READ.
    action multi_split_double_read() {
        hdr.nm_multi.serve = ig_md.mask_source | ig_md.mask_dr;
        hdr.nm_multi.halves = ig_md.halves_source;
        hdr.nm.flags = hdr.nm.flags | NM_FLAG_DOUBLE_READ;
        hdr.udp.checksum = 0;
        ig_dprsr_md.mirror_type = NM_MIRROR_TYPE_I2E;
        ig_md.mirror_pkt_type = NM_PKT_TYPE_MIRROR;
        ig_md.mirror_flags = NM_FLAG_DOUBLE_READ | NM_FLAG_REDIRECTED;
        ig_md.mirror_serve = ig_md.mask_dest | ig_md.mask_dr;
        ig_md.mirror_halves = ig_md.halves_dest;
        ig_md.ctr = NM_CTR_MULTI_SPLITS;
    }

    // ... every selected item a double read: the same packets, counted as a double read.
    action multi_double_read() {
        hdr.nm_multi.serve = ig_md.mask_dr;
        hdr.nm_multi.halves = ig_md.halves_source;
        hdr.nm.flags = hdr.nm.flags | NM_FLAG_DOUBLE_READ;
        hdr.udp.checksum = 0;
        ig_dprsr_md.mirror_type = NM_MIRROR_TYPE_I2E;
        ig_md.mirror_pkt_type = NM_PKT_TYPE_MIRROR;
        ig_md.mirror_flags = NM_FLAG_DOUBLE_READ | NM_FLAG_REDIRECTED;
        ig_md.mirror_serve = ig_md.mask_dr;
        ig_md.mirror_halves = ig_md.halves_dest;
        ig_md.ctr = NM_CTR_DOUBLE_READS;
    }

    // Ternary entries match in the order written; a value without a mask is exact.
    // A single key has exactly one of its three masks set to 1.
    table nm_steer {
        key = {
            ig_md.multi       : ternary;
            ig_md.mask_source : ternary;
            ig_md.mask_dest   : ternary;
            ig_md.mask_dr     : ternary;
        }
        actions = {
            to_source; redirect; double_read;
            multi_redirect; multi_split; multi_split_double_read; multi_double_read;
        }
        const default_action = to_source();
        size = 8;
        const entries = {
            (_, _, 0, 0) : to_source();
            (0, 0, _, 0) : redirect();
            (1, 0, _, 0) : multi_redirect();
            (0, _, _, _) : double_read();
            (1, 0, 0, _) : multi_double_read();
            (1, _, _, 0) : multi_split();
            (1, _, _, _) : multi_split_double_read();
        }
    }

    /* ------------------------------------------------------------ recirculation */

    // Items remain: the packet goes round again, unchanged, with the next index and the
    // decisions so far in nm_recirc in front of its Ethernet header.
    action recirculate() {
        hdr.nm_recirc.setValid();
        hdr.nm_recirc.pkt_type = NM_PKT_TYPE_RECIRC;
        hdr.nm_recirc.index = ig_md.multi_next;
        hdr.nm_recirc.to_source = ig_md.mask_source;
        hdr.nm_recirc.to_dest = ig_md.mask_dest;
        hdr.nm_recirc.dr = ig_md.mask_dr;
        hdr.nm_recirc.halves_source = ig_md.halves_source;
        hdr.nm_recirc.halves_dest = ig_md.halves_dest;
        ig_tm_md.ucast_egress_port = NM_RECIRC_PORT;
        ig_md.consumed = 1;
        ig_md.ctr = NM_CTR_MULTI_RECIRCULATIONS;
    }

    /* ------------------------------------------------------------ control replies */

    // Turn a group message around: back to its sender from the switch's address and
    // port, op | 0x80, empty body. The lengths are constants because the message
    // length was checked to be exact.
    action control_reply(bit<8> status) {
        ipv4_addr_t ip = hdr.ipv4.src_addr;
        hdr.ipv4.src_addr = hdr.ipv4.dst_addr;
        hdr.ipv4.dst_addr = ip;
        bit<16> port = hdr.udp.src_port;
        hdr.udp.src_port = hdr.udp.dst_port;
        hdr.udp.dst_port = port;
        // The switch's MAC (the request's destination) becomes the source; ipv4_route
        // sets the destination MAC.
        hdr.ethernet.src_addr = hdr.ethernet.dst_addr;
        hdr.nm.op = hdr.nm.op | NM_OP_REPLY_BIT;
        hdr.nm.flags = 0;
        hdr.nm.status = status;
        hdr.nm_group.setInvalid();
        hdr.ipv4.total_len = NM_IPV4_LEN_REPLY;
        hdr.udp.len = NM_UDP_LEN_REPLY;
        hdr.udp.checksum = 0;
        ig_md.ipv4_csum_update = 1;
    }

    // Duplicate or gap: answer with the last sequence number applied.
    action reply_last_applied() {
        hdr.nm.seq_hi = 0;
        hdr.nm.seq_lo = ig_md.seq_old - 1;
    }

    action send_digest(bit<3> digest_type) {
        ig_dprsr_md.digest_type = digest_type;
        ig_md.ctr = NM_CTR_CONTROL_DIGESTS;
    }

    /* ------------------------------------------------------------ pipeline */

    apply {
        // Every packet to egress carries the bridged header: egress tells a mirror
        // copy from a normal packet by its first byte.
        hdr.bridged.setValid();
        hdr.bridged.pkt_type = NM_PKT_TYPE_NORMAL;
        // A recirculated request's nm_recirc is in ig_md now (parser); it goes out
        // again only if recirculate() runs, so every other outcome strips it.
        hdr.nm_recirc.setInvalid();
        ig_md.ctr = NM_CTR_FORWARDED;
        ig_md.filter_op = NM_FOP_NONE;
        ig_md.consumed = 0;
        ig_md.ipv4_csum_update = 0;

        if (hdr.arp.isValid()) {
            ig_md.consumed = 1;
            ig_md.ctr = NM_CTR_ARP;
            if (hdr.arp.htype == ARP_HTYPE_ETHERNET && hdr.arp.ptype == ETHERTYPE_IPV4 &&
                    hdr.arp.oper == ARP_OPER_REQUEST) {
                nm_arp.apply();
            } else {
                drop();
            }
        } else if (ig_prsr_md.parser_err != 0) {
            // E.g. a datagram that starts like netmigrate but is shorter than its header.
            // Like the software switch, route it unchanged (counted as forwarded); its
            // server drops it. (Reading parser_err also keeps the parser from dropping it.)
        } else if (hdr.nm.isValid()) {
            // Independent lookups, so they can share the first stage.
            nm_switch_addr.apply();
            if (ig_md.kind != NM_KIND_NONE) {
                nm_pair.apply();
            }
            if (ig_md.multi == 1) {
                nm_item.apply();
                nm_multi_count.apply();
            }
            // Control sequence numbers are u64 on the wire and u32 in nm_expected_seq;
            // one that does not fit can never be the expected one.
            if (hdr.nm.seq_hi == 0) {
                ig_md.ctl_seq = hdr.nm.seq_lo;
                ig_md.seq_big = 0;
            } else {
                ig_md.ctl_seq = 0;
                ig_md.seq_big = 1;
            }

            if (ig_md.to_switch == 1) {
                // Netmigrate datagrams to the switch's own address are control messages;
                // a malformed one (wrong length, reserved bytes, another op) is dropped.
                if (ig_md.kind == NM_KIND_INIT) {
                    // Table and register-range writes are control-plane work.
                    ig_md.consumed = 1;
                    drop();
                    if (hdr.udp.len == NM_UDP_LEN_INIT) {
                        send_digest(NM_DIGEST_INIT);
                    } else {
                        ig_md.ctr = NM_CTR_MALFORMED;
                    }
                } else if (ig_md.kind == NM_KIND_TERMINATE) {
                    ig_md.consumed = 1;
                    drop();
                    if (hdr.udp.len == NM_UDP_LEN_TERMINATE && hdr.nm_terminate.reserved == 0) {
                        send_digest(NM_DIGEST_TERMINATE);
                    } else {
                        ig_md.ctr = NM_CTR_MALFORMED;
                    }
                } else if (ig_md.kind != NM_KIND_GROUP_START && ig_md.kind != NM_KIND_GROUP_COMPLETE) {
                    ig_md.consumed = 1;
                    ig_md.ctr = NM_CTR_MALFORMED;
                    drop();
                } else if (hdr.udp.len != NM_UDP_LEN_GROUP || hdr.nm_group.reserved != 0) {
                    ig_md.consumed = 1;
                    ig_md.ctr = NM_CTR_MALFORMED;
                    drop();
                } else if (ig_md.pair_hit == 0 || hdr.nm_group.partition[15:NM_PARTITION_BITS] != 0 ||
                           ig_md.pair_stream != hdr.nm.client) {
                    // No such pair (never installed, or already removed), a partition
                    // beyond MAX_PARTITIONS, or a late message of another migration of
                    // the shard. The reply is routed back to the sender.
                    control_reply(NM_STATUS_ERROR);
                    ig_md.ctr = NM_CTR_CONTROL_ERRORS;
                } else {
                    ig_md.seq_old = nm_expected_seq_apply.execute(NM_SEQ_INDEX);
                    ig_md.seq_diff = ig_md.ctl_seq - ig_md.seq_old;
                    if (ig_md.seq_old == 0) {
                        // The partition has not joined (no acknowledged SWITCH_INIT).
                        control_reply(NM_STATUS_ERROR);
                        ig_md.ctr = NM_CTR_CONTROL_ERRORS;
                    } else if (ig_md.seq_diff == 0) {
                        // Applied exactly once: update the filters below.
                        if (ig_md.kind == NM_KIND_GROUP_START) {
                            ig_md.filter_op = NM_FOP_START;
                        } else {
                            ig_md.filter_op = NM_FOP_COMPLETE;
                        }
                        control_reply(NM_STATUS_OK);
                        ig_md.ctr = NM_CTR_CONTROL_APPLIED;
                    } else {
                        // Retransmission (seq < expected) or gap (seq > expected): not
                        // applied, re-acknowledged with the last applied seq.
                        control_reply(NM_STATUS_OK);
                        reply_last_applied();
                        if (ig_md.seq_big == 0 && ig_md.seq_diff[31:31] == 1) {
                            ig_md.ctr = NM_CTR_CONTROL_DUPLICATES;
                        } else {
                            ig_md.ctr = NM_CTR_CONTROL_GAPS;
                        }
                    }
                }
            } else if (ig_md.kind == NM_KIND_READ || ig_md.kind == NM_KIND_WRITE) {
                if (hdr.udp.len < NM_UDP_LEN_MIN_REQUEST) {
                    // Shorter than its header: not steered, forwarded like the software
                    // switch does with anything it cannot parse.
                } else if (ig_md.multi == 1 &&
                           (ig_md.multi_slack[15:15] == 1 || hdr.nm_multi.serve == 0 ||
                            ig_md.multi_outside != 0 || ig_md.multi_stray != 0)) {
                    // A multi-key request the software switch cannot read (nm_multi_count):
                    // not steered either.
                } else if (ig_md.pair_hit == 1) {
                    nm_group_mask.apply();
                    nm_group_shift.apply();
                    ig_md.filter_op = NM_FOP_READ;
                }
                // else S4: no pair, forwarded by IPv4, single-key and multi-key alike
                // (a multi-key request without a pair never recirculates; the
                // artifact's recirculated forever, REFERENCE-ARTIFACT §9.14).
                // A recirculated request whose pair was removed between its passes
                // also ends here: forwarded unchanged to the source.
            }
            // Everything else (replies, migration traffic, control messages addressed
            // elsewhere, forwarded requests) is forwarded by IPv4.
        }

        // The filters: each array is touched at most once per packet.
        if (ig_md.filter_op != NM_FOP_NONE) {
            compute_indices();
            if (ig_md.filter_op == NM_FOP_READ) {
                ig_md.cbf1 = nm_counting_bloom_1_read.execute(NM_CBF_INDEX(ig_md.h1));
                ig_md.cbf2 = nm_counting_bloom_2_read.execute(NM_CBF_INDEX(ig_md.h2));
                ig_md.cbf3 = nm_counting_bloom_3_read.execute(NM_CBF_INDEX(ig_md.h3));
                ig_md.cbf4 = nm_counting_bloom_4_read.execute(NM_CBF_INDEX(ig_md.h4));
                ig_md.bf1 = nm_bloom_1_read.execute(NM_BF_INDEX(ig_md.h1));
                ig_md.bf2 = nm_bloom_2_read.execute(NM_BF_INDEX(ig_md.h2));
                ig_md.bf3 = nm_bloom_3_read.execute(NM_BF_INDEX(ig_md.h3));
                ig_md.bf4 = nm_bloom_4_read.execute(NM_BF_INDEX(ig_md.h4));
                nm_decide.apply();
                // multi_left is 0 for a single key and on a multi-key request's last
                // pass; it is at most 15 (count <= 16, checked above), so the high
                // bits only guard against an index the parser could not have produced.
                if (ig_md.multi_left != 0 && ig_md.multi_left[7:4] == 0) {
                    recirculate();
                } else {
                    nm_steer.apply();
                }
            } else if (ig_md.filter_op == NM_FOP_START) {
                // cbf1..4 are free on this path: 1 where this START saturated the cell.
                ig_md.cbf1 = nm_counting_bloom_1_inc.execute(NM_CBF_INDEX(ig_md.h1));
                ig_md.cbf2 = nm_counting_bloom_2_inc.execute(NM_CBF_INDEX(ig_md.h2));
                ig_md.cbf3 = nm_counting_bloom_3_inc.execute(NM_CBF_INDEX(ig_md.h3));
                ig_md.cbf4 = nm_counting_bloom_4_inc.execute(NM_CBF_INDEX(ig_md.h4));
                if (ig_md.cbf1 == 1 || ig_md.cbf2 == 1 || ig_md.cbf3 == 1 || ig_md.cbf4 == 1) {
                    nm_cbf_saturated.count(0);
                }
            } else {
                nm_counting_bloom_1_dec.execute(NM_CBF_INDEX(ig_md.h1));
                nm_counting_bloom_2_dec.execute(NM_CBF_INDEX(ig_md.h2));
                nm_counting_bloom_3_dec.execute(NM_CBF_INDEX(ig_md.h3));
                nm_counting_bloom_4_dec.execute(NM_CBF_INDEX(ig_md.h4));
                nm_bloom_1_set.execute(NM_BF_INDEX(ig_md.h1));
                nm_bloom_2_set.execute(NM_BF_INDEX(ig_md.h2));
                nm_bloom_3_set.execute(NM_BF_INDEX(ig_md.h3));
                nm_bloom_4_set.execute(NM_BF_INDEX(ig_md.h4));
            }
        }

        // Requests (possibly redirected), control replies and everything else; not
        // ARP answers, dropped control messages or requests going round again.
        if (ig_md.consumed == 0 && hdr.ipv4.isValid()) {
            ipv4_route.apply();
        }

        nm_decisions.count(ig_md.ctr);
    }
}

control NmEgress(
        inout headers_t hdr,
        inout egress_metadata_t eg_md,
        in egress_intrinsic_metadata_t eg_intr_md,
        in egress_intrinsic_metadata_from_parser_t eg_prsr_md,
        inout egress_intrinsic_metadata_for_deparser_t eg_dprsr_md,
        inout egress_intrinsic_metadata_for_output_port_t eg_oport_md) {

    action set_dst_mac(mac_addr_t dst_mac) {
        hdr.ethernet.dst_addr = dst_mac;
    }

    // The copy's next hop: the mirror session chose the port, this the MAC.
    table nm_neighbor {
        key = { hdr.mirror.dst_ip : exact @name("ipv4_dst"); }
        actions = { set_dst_mac; NoAction; }
        const default_action = NoAction();
        size = NM_HOSTS_SIZE;
    }

    // The destination's copy (double read, multi-key split) becomes a redirect to the
    // pair's destination. All its fields are set here (flags OR-ed, serve and halves
    // absolutely), so the copy is right whether the mirror engine took the packet
    // before or after the ingress rewrite.
    action redirect_copy() {
        hdr.ipv4.dst_addr = hdr.mirror.dst_ip;
        hdr.nm.shard = hdr.mirror.dst_shard;
        hdr.nm.flags = hdr.nm.flags | hdr.mirror.flags;
        hdr.udp.checksum = 0;
        eg_md.ipv4_csum_update = 1;
    }

    // A multi-key copy answers the items decided for the destination.
    action select_copy_items() {
        hdr.nm_multi.serve = hdr.mirror.serve;
        hdr.nm_multi.halves = hdr.mirror.halves;
    }

    apply {
        eg_md.ipv4_csum_update = 0;
        if (hdr.mirror.isValid()) {
            if (hdr.nm.isValid()) {
                redirect_copy();
                if (hdr.nm_multi.isValid()) {
                    select_copy_items();
                }
                nm_neighbor.apply();
            } else {
                eg_dprsr_md.drop_ctl = 1;
            }
            hdr.mirror.setInvalid();
        }
        hdr.bridged.setInvalid();
        // Only a mirror copy has it parsed (a copy of the packet as received on the
        // recirculation port); a packet going round keeps it as unparsed payload.
        hdr.nm_recirc.setInvalid();
    }
}

Pipeline(NmIngressParser(),
         NmIngress(),
         NmIngressDeparser(),
         NmEgressParser(),
         NmEgress(),
         NmEgressDeparser()) pipe;

Switch(pipe) main;
