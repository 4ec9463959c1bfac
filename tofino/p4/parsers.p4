/* netmigrate switch pipeline: parsers and deparsers.
 *
 * Ingress: Ethernet -> (ARP | IPv4 -> UDP -> [magic+version] -> common header ->
 * control body | multi-key body and the first item's hash). A datagram is netmigrate
 * when its payload starts with 4E 4D 01 (docs/switch.md "Classification"), whatever
 * its UDP ports. On the recirculation port, a multi-key request between passes:
 * nm_recirc -> Ethernet -> IPv4 -> UDP -> header -> multi-key body -> the hashes
 * before item nm_recirc.index -> item index's hash.
 */
#ifndef _NETMIGRATE_PARSERS_P4_
#define _NETMIGRATE_PARSERS_P4_

parser NmIngressParser(
        packet_in pkt,
        out headers_t hdr,
        out ingress_metadata_t ig_md,
        out ingress_intrinsic_metadata_t ig_intr_md) {

    state start {
        pkt.extract(ig_intr_md);
        // We never resubmit; skip the port metadata that precedes every packet
        // (recirculated ones too).
        pkt.advance(PORT_METADATA_SIZE);
        transition select(ig_intr_md.ingress_port) {
            NM_RECIRC_PORT : check_recirc;
            default        : parse_ethernet;
        }
    }

    // Only multi-key requests this program recirculated come back with nm_recirc in
    // front; anything else on that port is parsed like a frame from a host.
    state check_recirc {
        transition select(pkt.lookahead<bit<8>>()) {
            NM_PKT_TYPE_RECIRC : parse_recirc;
            default            : parse_ethernet;
        }
    }

    state parse_ethernet {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            ETHERTYPE_IPV4 : parse_ipv4;
            ETHERTYPE_ARP  : parse_arp;
            default        : accept;
        }
    }

    state parse_arp {
        pkt.extract(hdr.arp);
        transition accept;
    }

    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        // Only option-less UDP at fragment offset 0 is looked into: the switch
        // rewrites and checksums a 20-byte IPv4 header only, and a netmigrate
        // datagram (<= 1472 bytes of payload) is never fragmented.
        transition select(hdr.ipv4.ihl, hdr.ipv4.frag_offset, hdr.ipv4.protocol) {
            (5, 0, IP_PROTOCOLS_UDP) : parse_udp;
            default                  : accept;
        }
    }

    state parse_udp {
        pkt.extract(hdr.udp);
        // Magic and version decide, not ports (servers and clients pick their own).
        transition select(pkt.lookahead<bit<24>>()) {
            NM_MAGIC_VERSION : parse_nm;
            default          : accept;
        }
    }

    state parse_nm {
        pkt.extract(hdr.nm);
        // Only requests whose FORWARDED flag is clear are steered; a forwarded
        // request is already at the server that owns its group.
        transition select(hdr.nm.op, hdr.nm.flags) {
            (NM_OP_GET,                   0 &&& NM_FLAG_FORWARDED) : nm_read;
            (NM_OP_MULTI_GET,             0 &&& NM_FLAG_FORWARDED) : nm_multi_read;
            (NM_OP_PUT,                   0 &&& NM_FLAG_FORWARDED) : nm_write;
            (NM_OP_DELETE,                0 &&& NM_FLAG_FORWARDED) : nm_write;
            (NM_OP_MULTI_PUT,             0 &&& NM_FLAG_FORWARDED) : nm_multi_write;
            (NM_OP_MULTI_DELETE,          0 &&& NM_FLAG_FORWARDED) : nm_multi_write;
            (NM_OP_SWITCH_INIT,           _)                       : parse_nm_init;
            (NM_OP_SWITCH_GROUP_START,    _)                       : parse_nm_group_start;
            (NM_OP_SWITCH_GROUP_COMPLETE, _)                       : parse_nm_group_complete;
            (NM_OP_SWITCH_TERMINATE,      _)                       : parse_nm_terminate;
            default                                                : accept;
        }
    }

    // A request is looked up by the address it was sent to (the source's).
    state nm_read {
        ig_md.kind = NM_KIND_READ;
        transition nm_single;
    }

    state nm_write {
        ig_md.kind = NM_KIND_WRITE;
        transition nm_single;
    }

    // A single-key request is decided as one item (bit 0) on the header's key hash.
    state nm_single {
        ig_md.pair_ip = hdr.ipv4.dst_addr;
        ig_md.pair_shard = hdr.nm.shard;
        ig_md.key_lo = hdr.nm.key_hash_lo;
        ig_md.item_bit = 1;
        transition accept;
    }

    state nm_multi_read {
        ig_md.kind = NM_KIND_READ;
        transition nm_multi_first;
    }

    state nm_multi_write {
        ig_md.kind = NM_KIND_WRITE;
        transition nm_multi_first;
    }

    // First pass of a multi-key request: item 0, whose hash follows the fixed body
    // (multi_index and the masks stay 0). A datagram too short for these 16 bytes is
    // a parser error and is forwarded unchanged (see the ingress control).
    state nm_multi_first {
        ig_md.pair_ip = hdr.ipv4.dst_addr;
        ig_md.pair_shard = hdr.nm.shard;
        ig_md.multi = 1;
        pkt.extract(hdr.nm_multi);
        transition parse_nm_key;
    }

    // The hash the pass decides on: item 0 on the first pass, item nm_recirc.index later.
    state parse_nm_key {
        pkt.extract(hdr.nm_key);
        ig_md.key_lo = hdr.nm_key.lo;
        transition accept;
    }

    // ---------------------------------------------------------------- later passes

    // [nm_recirc][Ethernet][IPv4][UDP][header][multi-key body]: the first pass checked
    // every layer and the length of the hashes, and nothing but this program sends
    // nm_recirc to the recirculation port, so no checks are repeated here.
    state parse_recirc {
        pkt.extract(hdr.nm_recirc);
        pkt.extract(hdr.ethernet);
        pkt.extract(hdr.ipv4);
        pkt.extract(hdr.udp);
        pkt.extract(hdr.nm);
        transition select(hdr.nm.op) {
            NM_OP_MULTI_GET    : recirc_read;
            NM_OP_MULTI_PUT    : recirc_write;
            NM_OP_MULTI_DELETE : recirc_write;
            default            : accept;        // never sent; kind NONE: forwarded
        }
    }

    state recirc_read {
        ig_md.kind = NM_KIND_READ;
        transition recirc_multi;
    }

    state recirc_write {
        ig_md.kind = NM_KIND_WRITE;
        transition recirc_multi;
    }

    // Restore what the earlier passes decided, then skip to hash number index: the
    // hashes before it are extracted (so that the deparser emits them again in place)
    // in runs of 8, 4, 2 and 1 by the binary digits of index; one select on index,
    // then fixed transitions (state skip_<run>_r<rest>: <rest> hashes follow in
    // smaller runs).
    state recirc_multi {
        ig_md.pair_ip = hdr.ipv4.dst_addr;
        ig_md.pair_shard = hdr.nm.shard;
        ig_md.multi = 1;
        ig_md.multi_index = hdr.nm_recirc.index;
        ig_md.mask_source = hdr.nm_recirc.to_source;
        ig_md.mask_dest = hdr.nm_recirc.to_dest;
        ig_md.mask_dr = hdr.nm_recirc.dr;
        ig_md.halves_source = hdr.nm_recirc.halves_source;
        ig_md.halves_dest = hdr.nm_recirc.halves_dest;
        pkt.extract(hdr.nm_multi);
        transition select(hdr.nm_recirc.index) {
             0 : parse_nm_key;
             1 : skip_1;
             2 : skip_2_r0;
             3 : skip_2_r1;
             4 : skip_4_r0;
             5 : skip_4_r1;
             6 : skip_4_r2;
             7 : skip_4_r3;
             8 : skip_8_r0;
             9 : skip_8_r1;
            10 : skip_8_r2;
            11 : skip_8_r3;
            12 : skip_8_r4;
            13 : skip_8_r5;
            14 : skip_8_r6;
            15 : skip_8_r7;
            default : accept;               // never sent (index < count <= 16)
        }
    }

    state skip_8_r0 { pkt.extract(hdr.nm_skip_8); transition parse_nm_key; }
    state skip_8_r1 { pkt.extract(hdr.nm_skip_8); transition skip_1; }
    state skip_8_r2 { pkt.extract(hdr.nm_skip_8); transition skip_2_r0; }
    state skip_8_r3 { pkt.extract(hdr.nm_skip_8); transition skip_2_r1; }
    state skip_8_r4 { pkt.extract(hdr.nm_skip_8); transition skip_4_r0; }
    state skip_8_r5 { pkt.extract(hdr.nm_skip_8); transition skip_4_r1; }
    state skip_8_r6 { pkt.extract(hdr.nm_skip_8); transition skip_4_r2; }
    state skip_8_r7 { pkt.extract(hdr.nm_skip_8); transition skip_4_r3; }
    state skip_4_r0 { pkt.extract(hdr.nm_skip_4); transition parse_nm_key; }
    state skip_4_r1 { pkt.extract(hdr.nm_skip_4); transition skip_1; }
    state skip_4_r2 { pkt.extract(hdr.nm_skip_4); transition skip_2_r0; }
    state skip_4_r3 { pkt.extract(hdr.nm_skip_4); transition skip_2_r1; }
    state skip_2_r0 { pkt.extract(hdr.nm_skip_2); transition parse_nm_key; }
    state skip_2_r1 { pkt.extract(hdr.nm_skip_2); transition skip_1; }
    state skip_1    { pkt.extract(hdr.nm_skip_1); transition parse_nm_key; }

    state parse_nm_init {
        pkt.extract(hdr.nm_init);
        ig_md.kind = NM_KIND_INIT;
        transition accept;
    }

    // Group messages are sent to the switch and name the pair by the source's
    // address (body) and shard (header): the same nm_pair key as a request.
    state parse_nm_group_start {
        pkt.extract(hdr.nm_group);
        ig_md.kind = NM_KIND_GROUP_START;
        ig_md.pair_ip = hdr.nm_group.src_ip;
        ig_md.pair_shard = hdr.nm.shard;
        ig_md.group = hdr.nm_group.group;
        transition accept;
    }

    state parse_nm_group_complete {
        pkt.extract(hdr.nm_group);
        ig_md.kind = NM_KIND_GROUP_COMPLETE;
        ig_md.pair_ip = hdr.nm_group.src_ip;
        ig_md.pair_shard = hdr.nm.shard;
        ig_md.group = hdr.nm_group.group;
        transition accept;
    }

    state parse_nm_terminate {
        pkt.extract(hdr.nm_terminate);
        ig_md.kind = NM_KIND_TERMINATE;
        transition accept;
    }
}

control NmIngressDeparser(
        packet_out pkt,
        inout headers_t hdr,
        in ingress_metadata_t ig_md,
        in ingress_intrinsic_metadata_for_deparser_t ig_dprsr_md) {

    Checksum() ipv4_checksum;
    Mirror() mirror;
    Digest<nm_init_digest_t>() nm_init_digest;
    Digest<nm_terminate_digest_t>() nm_terminate_digest;

    apply {
        // Only packets whose IPv4 header the ingress changed (redirect, control
        // reply) get a new header checksum; others keep the sender's.
        if (ig_md.ipv4_csum_update == 1) {
            hdr.ipv4.hdr_checksum = ipv4_checksum.update({
                hdr.ipv4.version,
                hdr.ipv4.ihl,
                hdr.ipv4.diffserv,
                hdr.ipv4.total_len,
                hdr.ipv4.identification,
                hdr.ipv4.flags,
                hdr.ipv4.frag_offset,
                hdr.ipv4.ttl,
                hdr.ipv4.protocol,
                hdr.ipv4.src_addr,
                hdr.ipv4.dst_addr});
        }

        // Double read or multi-key split: the copy carries where it must go and what
        // egress writes into it.
        if (ig_dprsr_md.mirror_type == NM_MIRROR_TYPE_I2E) {
            mirror.emit<nm_mirror_h>(ig_md.mirror_session,
                                     {ig_md.mirror_pkt_type, ig_md.dst_ip, ig_md.dst_shard,
                                      ig_md.mirror_flags, ig_md.mirror_serve, ig_md.mirror_halves});
        }

        // Digests are generated even though the packet itself is dropped
        // (drop_ctl suppresses unicast/mirror copies, not learning).
        if (ig_dprsr_md.digest_type == NM_DIGEST_INIT) {
            nm_init_digest.pack({
                hdr.ipv4.src_addr,
                hdr.udp.src_port,
                hdr.udp.dst_port,
                hdr.nm.shard,
                hdr.nm.seq_hi,
                hdr.nm.seq_lo,
                hdr.nm.client,
                hdr.nm_init.src_ip,
                hdr.nm_init.dst_ip,
                hdr.nm_init.dst_shard,
                hdr.nm_init.size_exp,
                hdr.nm_init.remain_exp,
                hdr.nm_init.partitions,
                hdr.nm_init.partition});
        } else if (ig_dprsr_md.digest_type == NM_DIGEST_TERMINATE) {
            nm_terminate_digest.pack({
                hdr.ipv4.src_addr,
                hdr.udp.src_port,
                hdr.udp.dst_port,
                hdr.nm.shard,
                hdr.nm.seq_hi,
                hdr.nm.seq_lo,
                hdr.nm.client,
                hdr.nm_terminate.src_ip,
                hdr.nm_terminate.partition});
        }

        // A request on its way to the recirculation port leaves with nm_recirc between
        // the bridged header and Ethernet (headers_t order); egress passes it on as payload.
        pkt.emit(hdr);
    }
}

/* Egress sees either a normal packet behind the bridged header or a double-read /
 * split copy behind the mirror header; only the copy is parsed further (it is a
 * request: Ethernet/IPv4/UDP/netmigrate, checked by ingress before mirroring). A
 * normal packet bound for the recirculation port keeps nm_recirc as payload. */
parser NmEgressParser(
        packet_in pkt,
        out headers_t hdr,
        out egress_metadata_t eg_md,
        out egress_intrinsic_metadata_t eg_intr_md) {

    state start {
        pkt.extract(eg_intr_md);
        transition select(pkt.lookahead<bit<8>>()) {
            NM_PKT_TYPE_MIRROR : parse_mirror;
            default            : parse_bridged;
        }
    }

    state parse_bridged {
        pkt.extract(hdr.bridged);
        transition accept;
    }

    // Whether the mirror engine copies the packet as it entered ingress or as the
    // ingress deparser emitted it is not settled here (README.md, risks). Either way
    // the copy is right: a bridged header (emitted) or an nm_recirc header (received
    // on the recirculation port) in front of Ethernet is recognised by its odd first
    // byte, which no unicast destination MAC has, and dropped by the egress control.
    state parse_mirror {
        pkt.extract(hdr.mirror);
        transition select(pkt.lookahead<bit<8>>()) {
            NM_PKT_TYPE_NORMAL : parse_mirror_bridged;
            NM_PKT_TYPE_RECIRC : parse_mirror_recirc;
            default            : parse_ethernet;
        }
    }

    state parse_mirror_bridged {
        pkt.extract(hdr.bridged);
        transition select(pkt.lookahead<bit<8>>()) {
            NM_PKT_TYPE_RECIRC : parse_mirror_recirc;
            default            : parse_ethernet;
        }
    }

    state parse_mirror_recirc {
        pkt.extract(hdr.nm_recirc);
        transition parse_ethernet;
    }

    state parse_ethernet {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            ETHERTYPE_IPV4 : parse_ipv4;
            default        : accept;
        }
    }

    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        transition select(hdr.ipv4.ihl, hdr.ipv4.frag_offset, hdr.ipv4.protocol) {
            (5, 0, IP_PROTOCOLS_UDP) : parse_udp;
            default                  : accept;
        }
    }

    state parse_udp {
        pkt.extract(hdr.udp);
        transition parse_nm;
    }

    // A multi-key copy gets its own serve and halves masks.
    state parse_nm {
        pkt.extract(hdr.nm);
        transition select(hdr.nm.op) {
            NM_OP_MULTI_GET    : parse_nm_multi;
            NM_OP_MULTI_PUT    : parse_nm_multi;
            NM_OP_MULTI_DELETE : parse_nm_multi;
            default            : accept;
        }
    }

    state parse_nm_multi {
        pkt.extract(hdr.nm_multi);
        transition accept;
    }
}

control NmEgressDeparser(
        packet_out pkt,
        inout headers_t hdr,
        in egress_metadata_t eg_md,
        in egress_intrinsic_metadata_for_deparser_t eg_dprsr_md) {

    Checksum() ipv4_checksum;

    apply {
        if (eg_md.ipv4_csum_update == 1) {
            hdr.ipv4.hdr_checksum = ipv4_checksum.update({
                hdr.ipv4.version,
                hdr.ipv4.ihl,
                hdr.ipv4.diffserv,
                hdr.ipv4.total_len,
                hdr.ipv4.identification,
                hdr.ipv4.flags,
                hdr.ipv4.frag_offset,
                hdr.ipv4.ttl,
                hdr.ipv4.protocol,
                hdr.ipv4.src_addr,
                hdr.ipv4.dst_addr});
        }
        // bridged, mirror and a copy's nm_recirc were invalidated by the egress control.
        pkt.emit(hdr);
    }
}

#endif /* _NETMIGRATE_PARSERS_P4_ */
