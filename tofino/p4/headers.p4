/* netmigrate switch pipeline: headers and metadata. */
#ifndef _NETMIGRATE_HEADERS_P4_
#define _NETMIGRATE_HEADERS_P4_

typedef bit<48> mac_addr_t;
typedef bit<32> ipv4_addr_t;
typedef bit<NM_MIRROR_TYPE_WIDTH> nm_mirror_type_t;

typedef bit<NM_SLOT_BITS>      nm_slot_t;
typedef bit<NM_BF_INDEX_BITS>  nm_bf_index_t;
typedef bit<NM_CBF_INDEX_BITS> nm_cbf_index_t;
typedef bit<NM_SEQ_INDEX_BITS> nm_seq_index_t;
typedef bit<4>                 nm_ctr_index_t;

/* ---------------------------------------------------------------- internal headers */

/* Prepended by the ingress deparser to every packet going to egress, so the
 * egress parser can tell normal packets from mirror copies by the first byte. */
header nm_bridged_h {
    bit<8> pkt_type;                    /* NM_PKT_TYPE_NORMAL */
}

/* Prepended to the destination's copy (double read, multi-key split) by the mirror
 * engine: where the copy goes and what egress writes into it. dst_ip/dst_shard come
 * from the nm_pair hit of the original, so the copy cannot disagree with the pair the
 * controller installed. Every field is written absolutely or OR-ed, so the copy comes
 * out right whether the mirror engine took the packet before or after the ingress
 * rewrite. */
header nm_mirror_h {
    bit<8>      pkt_type;               /* NM_PKT_TYPE_MIRROR */
    ipv4_addr_t dst_ip;
    bit<16>     dst_shard;
    bit<8>      flags;                  /* OR-ed into the copy's flags: REDIRECTED, maybe DOUBLE_READ */
    bit<16>     serve;                  /* multi-key copy: its serve mask (to_dest) */
    bit<16>     halves;                 /* multi-key copy: its halves mask (halves | dr) */
}

/* In front of the Ethernet header of a multi-key request between two passes (it goes
 * out of the ingress deparser after the bridged header, stays in the packet through
 * egress as payload, and is parsed again on the recirculation port). 12 bytes.
 * The three decision masks are disjoint, as in tofino/src/pipeline.rs (steer_multi:
 * to_source, to_dest, double); the two halves masks are what each copy's halves
 * field becomes, accumulated item by item so that the last pass only copies them. */
header nm_recirc_h {
    bit<8>  pkt_type;                   /* NM_PKT_TYPE_RECIRC */
    bit<8>  index;                      /* the item the next pass examines, 1..15 */
    bit<16> to_source;                  /* selected items decided Source so far */
    bit<16> to_dest;                    /* selected items decided Redirect so far */
    bit<16> dr;                         /* selected items decided DoubleRead so far */
    bit<16> halves_source;              /* (halves | dr) & (to_source | dr) so far */
    bit<16> halves_dest;                /* (halves | dr) & (to_dest | dr) so far */
}

/* ---------------------------------------------------------------- packet headers */

header ethernet_h {
    mac_addr_t dst_addr;
    mac_addr_t src_addr;
    bit<16>    ether_type;
}

/* ARP for IPv4 over Ethernet (28 bytes). */
header arp_h {
    bit<16>     htype;
    bit<16>     ptype;
    bit<8>      hlen;
    bit<8>      plen;
    bit<16>     oper;
    mac_addr_t  sha;
    ipv4_addr_t spa;
    mac_addr_t  tha;
    ipv4_addr_t tpa;
}

header ipv4_h {
    bit<4>      version;
    bit<4>      ihl;
    bit<8>      diffserv;
    bit<16>     total_len;
    bit<16>     identification;
    bit<3>      flags;
    bit<13>     frag_offset;
    bit<8>      ttl;
    bit<8>      protocol;
    bit<16>     hdr_checksum;
    ipv4_addr_t src_addr;
    ipv4_addr_t dst_addr;
}

header udp_h {
    bit<16> src_port;
    bit<16> dst_port;
    bit<16> len;
    bit<16> checksum;
}

/* The 32-byte common header of docs/wire.md. The 64-bit fields are split in
 * 32-bit halves: Tofino PHV containers are at most 32 bits, and the switch only
 * needs seq[31:0] (control sequence numbers) and key_hash[31:0] (the group). */
header nm_h {
    bit<16> magic;                      /* NM_MAGIC */
    bit<8>  version;                    /* NM_VERSION */
    bit<8>  op;
    bit<8>  flags;
    bit<8>  status;
    bit<16> shard;
    bit<32> seq_hi;
    bit<32> seq_lo;
    bit<32> key_hash_hi;
    bit<32> key_hash_lo;
    bit<32> client;
    bit<32> oldest_gap;
}

/* Control bodies, docs/switch.md (big-endian, like every wire integer). */
header nm_init_h {                      /* SWITCH_INIT, 16 bytes */
    ipv4_addr_t src_ip;
    ipv4_addr_t dst_ip;
    bit<16>     dst_shard;
    bit<8>      size_exp;
    bit<8>      remain_exp;
    bit<16>     partitions;
    bit<16>     partition;
}

header nm_group_h {                     /* SWITCH_GROUP_START / _COMPLETE, 12 bytes */
    ipv4_addr_t src_ip;
    bit<16>     partition;
    bit<16>     reserved;               /* 0 */
    bit<32>     group;
}

header nm_terminate_h {                 /* SWITCH_TERMINATE, 8 bytes */
    ipv4_addr_t src_ip;
    bit<16>     partition;
    bit<16>     reserved;               /* 0 */
}

/* The fixed part of a multi-key request body (docs/wire.md), 8 bytes. Bit i of serve
 * and halves is item i (bit 0 = least significant bit of the big-endian u16). */
header nm_multi_h {
    bit<8>  count;                      /* 1..16 */
    bit<8>  reserved;                   /* 0 */
    bit<16> serve;                      /* items the receiving server answers */
    bit<16> halves;                     /* of those, halves of a double read */
    bit<16> reserved2;                  /* 0 */
}

/* One key hash of a multi-key request (CRC-64/Jones, like the header's). */
header nm_hash_h {
    bit<32> hi;
    bit<32> lo;
}

/* Runs of 8, 4 and 2 hashes a pass only carries over (never read or written by the
 * MAU), in 128-bit fields like IPv6 addresses. */
header nm_hashes_8_h {
    bit<128> h01;
    bit<128> h23;
    bit<128> h45;
    bit<128> h67;
}

header nm_hashes_4_h {
    bit<128> h01;
    bit<128> h23;
}

header nm_hashes_2_h {
    bit<128> h01;
}

/* One struct for ingress and egress; the deparsers emit in this order and skip
 * invalid headers. bridged/mirror are never valid on the wire; nm_recirc only on the
 * way to the recirculation port.
 *
 * A multi-key request's hashes before the one a pass examines (item index) are parsed
 * into nm_skip_8/4/2/1 by the binary digits of index (8 + 4 + 2 + 1 = 15 at most), so
 * that they are emitted again in place; the examined one goes to nm_key. The rest of
 * the hashes and the items stay payload. */
struct headers_t {
    nm_bridged_h   bridged;
    nm_mirror_h    mirror;
    nm_recirc_h    nm_recirc;
    ethernet_h     ethernet;
    arp_h          arp;
    ipv4_h         ipv4;
    udp_h          udp;
    nm_h           nm;
    nm_init_h      nm_init;
    nm_group_h     nm_group;
    nm_terminate_h nm_terminate;
    nm_multi_h     nm_multi;
    nm_hashes_8_h  nm_skip_8;
    nm_hashes_4_h  nm_skip_4;
    nm_hashes_2_h  nm_skip_2;
    nm_hash_h      nm_skip_1;
    nm_hash_h      nm_key;
}

/* ---------------------------------------------------------------- metadata */

struct ingress_metadata_t {
    /* Set by the parser (each field on one parser path only: Tofino 1 parsers
     * cannot overwrite a container, and unwritten metadata reads as 0). */
    bit<8>      kind;                   /* NM_KIND_* */
    ipv4_addr_t pair_ip;                /* nm_pair key: ipv4.dst (request) or body src_ip (control) */
    bit<16>     pair_shard;             /* nm_pair key: hdr.shard */
    bit<32>     group;                  /* body group (control); computed for requests */
    bit<32>     key_lo;                 /* request: low half of the key hash this pass decides on
                                         * (hdr.nm's for a single key, item index's for multi) */
    bit<1>      multi;                  /* a multi-key request */
    bit<8>      multi_index;            /* the item this pass examines (nm_recirc.index; 0 on the first pass) */
    bit<16>     item_bit;               /* the decided item's bit: 1 for a single key; for multi,
                                         * 1 << multi_index if serve selects it, else 0 (set by nm_item) */
    bit<16>     item_half;              /* multi: item_bit if halves has it, else 0 (nm_item) */

    /* Per-item decisions accumulated over the passes (nm_recirc_h). From nm_recirc on
     * later passes, 0 on the first; nm_decide ORs item_bit (and item_half) in. */
    bit<16>     mask_source;
    bit<16>     mask_dest;
    bit<16>     mask_dr;
    bit<16>     halves_source;
    bit<16>     halves_dest;

    /* nm_switch_addr / nm_pair results. */
    bit<1>      to_switch;
    bit<1>      pair_hit;
    nm_slot_t   slot;
    ipv4_addr_t dst_ip;
    bit<16>     dst_shard;
    bit<8>      size_exp;
    bit<8>      remain_exp;
    bit<32>     pair_stream;            /* the installed migration's stream id */
    MirrorId_t  mirror_session;

    /* Filter indices: CRC-32 of (dst_ip, dst_shard, group); the low bits index a slot's range. */
    bit<32>     h1;
    bit<32>     h2;
    bit<32>     h3;
    bit<32>     h4;
    bit<2>      filter_op;              /* NM_FOP_* */
    bit<1>      cbf1;                   /* CBF_i[i_i] != 0; GROUP_START: it saturated */
    bit<1>      cbf2;
    bit<1>      cbf3;
    bit<1>      cbf4;
    bit<1>      bf1;                    /* BF_i[i_i] */
    bit<1>      bf2;
    bit<1>      bf3;
    bit<1>      bf4;

    /* Control sequence check. */
    bit<32>     ctl_seq;                /* seq[31:0], or 0 (never applies) when seq >= 2^32 */
    bit<1>      seq_big;                /* seq >= 2^32: a gap */
    bit<32>     seq_old;                /* nm_expected_seq before this message */
    bit<32>     seq_diff;               /* ctl_seq - seq_old */

    /* Multi-key bookkeeping (nm_item, nm_multi_count). */
    bit<8>      multi_next;             /* multi_index + 1 */
    bit<8>      multi_left;             /* count - multi_next: items after this one */
    bit<16>     multi_slack;            /* udp.len - length the hashes need; bit 15 set = too short or bad count */
    bit<16>     multi_outside;          /* serve bits at or above count (must be 0) */
    bit<16>     multi_stray;            /* halves bits outside serve (must be 0) */

    bit<1>      consumed;               /* answered, dropped or recirculated here: skip ipv4_route */
    bit<1>      ipv4_csum_update;
    bit<8>      mirror_pkt_type;
    bit<8>      mirror_flags;           /* nm_mirror_h.flags */
    bit<16>     mirror_serve;           /* nm_mirror_h.serve */
    bit<16>     mirror_halves;          /* nm_mirror_h.halves */
    nm_ctr_index_t ctr;
}

struct egress_metadata_t {
    bit<1> ipv4_csum_update;
}

/* Digests to the controller (SWITCH_INIT / SWITCH_TERMINATE). They carry what the
 * acknowledgement needs (where to answer, header fields to echo) besides the body.
 * 38 and 28 bytes: under Tofino's 48-byte learn quantum. */
struct nm_init_digest_t {
    ipv4_addr_t reply_ip;               /* ipv4.src of the message */
    bit<16>     reply_port;             /* udp.src */
    bit<16>     switch_port;            /* udp.dst: the ack's source port */
    bit<16>     shard;                  /* source shard (hdr.shard) */
    bit<32>     seq_hi;
    bit<32>     seq_lo;
    bit<32>     client;
    ipv4_addr_t src_ip;
    ipv4_addr_t dst_ip;
    bit<16>     dst_shard;
    bit<8>      size_exp;
    bit<8>      remain_exp;
    bit<16>     partitions;
    bit<16>     partition;
}

struct nm_terminate_digest_t {
    ipv4_addr_t reply_ip;
    bit<16>     reply_port;
    bit<16>     switch_port;
    bit<16>     shard;
    bit<32>     seq_hi;
    bit<32>     seq_lo;
    bit<32>     client;
    ipv4_addr_t src_ip;
    bit<16>     partition;
}

#endif /* _NETMIGRATE_HEADERS_P4_ */
