/* netmigrate switch pipeline: parsers and deparsers.
 *
 * Ingress: Ethernet -> (ARP | IPv4 -> UDP -> [magic+version] -> common header ->
 * control body). A datagram is netmigrate when its payload starts with
 * 4E 4D 01 (docs/switch.md "Classification"), whatever its UDP ports.
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
        // We never resubmit; skip the port metadata that precedes every packet.
        pkt.advance(PORT_METADATA_SIZE);
        transition parse_ethernet;
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
            (NM_OP_MULTI_GET,             0 &&& NM_FLAG_FORWARDED) : nm_read;
            (NM_OP_PUT,                   0 &&& NM_FLAG_FORWARDED) : nm_write;
            (NM_OP_DELETE,                0 &&& NM_FLAG_FORWARDED) : nm_write;
            (NM_OP_MULTI_PUT,             0 &&& NM_FLAG_FORWARDED) : nm_write;
            (NM_OP_MULTI_DELETE,          0 &&& NM_FLAG_FORWARDED) : nm_write;
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
        ig_md.pair_ip = hdr.ipv4.dst_addr;
        ig_md.pair_shard = hdr.nm.shard;
        transition accept;
    }

    state nm_write {
        ig_md.kind = NM_KIND_WRITE;
        ig_md.pair_ip = hdr.ipv4.dst_addr;
        ig_md.pair_shard = hdr.nm.shard;
        transition accept;
    }

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

        // Double read: the copy carries where it must go; egress rewrites it.
        if (ig_dprsr_md.mirror_type == NM_MIRROR_TYPE_I2E) {
            mirror.emit<nm_mirror_h>(ig_md.mirror_session,
                                     {ig_md.mirror_pkt_type, ig_md.dst_ip, ig_md.dst_shard});
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

        pkt.emit(hdr);
    }
}

/* Egress sees either a normal packet behind the bridged header or a double-read
 * copy behind the mirror header; only the copy is parsed further (it is a
 * request: Ethernet/IPv4/UDP/netmigrate, checked by ingress before mirroring). */
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

    state parse_mirror {
        pkt.extract(hdr.mirror);
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

    state parse_nm {
        pkt.extract(hdr.nm);
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
        // bridged and mirror were invalidated by the egress control.
        pkt.emit(hdr);
    }
}

#endif /* _NETMIGRATE_PARSERS_P4_ */
