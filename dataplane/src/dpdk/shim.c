#include "shim.h"

#include <errno.h>
#include <stdio.h>

#include <rte_ip.h>

uint16_t nm_rx_frames(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint8_t **data,
                      uint16_t *lens, uint16_t *rooms, uint16_t n) {
    uint16_t received = rte_eth_rx_burst(port, queue, pkts, n);
    for (uint16_t i = 0; i < received; i++) {
        struct rte_mbuf *m = pkts[i];
        data[i] = rte_pktmbuf_mtod(m, uint8_t *);
        /* The burst's frames load together, before the first is parsed. */
        rte_prefetch0(data[i]);
        lens[i] = rte_pktmbuf_data_len(m);
        /* Only a buffer this mbuf alone owns, in one segment, may be written and sent. */
        int own = m->nb_segs == 1 && RTE_MBUF_DIRECT(m) && rte_mbuf_refcnt_read(m) == 1;
        rooms[i] = own ? rte_pktmbuf_data_len(m) + rte_pktmbuf_tailroom(m) : 0;
    }
    return received;
}

void nm_free_bulk(struct rte_mbuf **pkts, unsigned n) { rte_pktmbuf_free_bulk(pkts, n); }

int nm_alloc_frames(struct rte_mempool *pool, struct rte_mbuf **pkts, uint8_t **data,
                    uint16_t *rooms, unsigned n) {
    int rc = rte_pktmbuf_alloc_bulk(pool, pkts, n);
    if (rc != 0)
        return rc;
    for (unsigned i = 0; i < n; i++) {
        data[i] = rte_pktmbuf_mtod(pkts[i], uint8_t *);
        rooms[i] = rte_pktmbuf_data_len(pkts[i]) + rte_pktmbuf_tailroom(pkts[i]);
    }
    return 0;
}

void nm_reuse_frames(struct rte_mbuf **pkts, uint8_t **data, uint16_t *rooms, unsigned n) {
    for (unsigned i = 0; i < n; i++) {
        rte_pktmbuf_reset(pkts[i]);
        data[i] = rte_pktmbuf_mtod(pkts[i], uint8_t *);
        rooms[i] = rte_pktmbuf_tailroom(pkts[i]);
    }
}

uint16_t nm_tx_frames(uint16_t port, uint16_t queue, struct rte_mbuf **pkts,
                      const uint16_t *lens, uint16_t n, int udp_offload) {
    for (uint16_t i = 0; i < n; i++) {
        struct rte_mbuf *m = pkts[i];
        m->data_len = lens[i];
        m->pkt_len = lens[i];
        m->nb_segs = 1;
        m->next = NULL;
        if (udp_offload) {
            m->ol_flags = RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_UDP_CKSUM;
            m->l2_len = sizeof(struct rte_ether_hdr);
            m->l3_len = sizeof(struct rte_ipv4_hdr);
        }
    }
    uint16_t sent = rte_eth_tx_burst(port, queue, pkts, n);
    if (sent < n)
        rte_pktmbuf_free_bulk(pkts + sent, n - sent);
    return sent;
}

uint64_t nm_tx_offload_udp_cksum(void) { return RTE_ETH_TX_OFFLOAD_UDP_CKSUM; }

int nm_link_up(uint16_t port) {
    struct rte_eth_link link;
    int rc = rte_eth_link_get_nowait(port, &link);
    return rc < 0 ? rc : link.link_status == RTE_ETH_LINK_UP;
}

int nm_errno(void) { return rte_errno; }

unsigned nm_lcore_id(void) { return rte_lcore_id(); }

int nm_flow_steer_udp_port(uint16_t port, uint16_t udp_port, uint16_t queue,
                           struct rte_flow **rule, char *why, size_t why_len) {
    struct rte_flow_attr attr = {.ingress = 1};
    struct rte_flow_item_udp udp_spec = {.hdr.dst_port = rte_cpu_to_be_16(udp_port)};
    struct rte_flow_item_udp udp_mask = {.hdr.dst_port = RTE_BE16(0xffff)};
    struct rte_flow_item pattern[] = {
        {.type = RTE_FLOW_ITEM_TYPE_ETH},
        {.type = RTE_FLOW_ITEM_TYPE_IPV4},
        {.type = RTE_FLOW_ITEM_TYPE_UDP, .spec = &udp_spec, .mask = &udp_mask},
        {.type = RTE_FLOW_ITEM_TYPE_END},
    };
    struct rte_flow_action_queue to_queue = {.index = queue};
    struct rte_flow_action actions[] = {
        {.type = RTE_FLOW_ACTION_TYPE_QUEUE, .conf = &to_queue},
        {.type = RTE_FLOW_ACTION_TYPE_END},
    };
    struct rte_flow_error error = {0};
    *rule = NULL;
    int rc = rte_flow_validate(port, &attr, pattern, actions, &error);
    if (rc == 0) {
        *rule = rte_flow_create(port, &attr, pattern, actions, &error);
        if (*rule == NULL)
            rc = rte_errno != 0 ? -rte_errno : -EIO;
    }
    if (rc != 0 && why_len > 0) {
        snprintf(why, why_len, "%s", error.message ? error.message : rte_strerror(-rc));
    }
    return rc;
}

int nm_flow_destroy(uint16_t port, struct rte_flow *rule) {
    struct rte_flow_error error = {0};
    return rte_flow_destroy(port, rule, &error);
}

int nm_flow_flush(uint16_t port) {
    struct rte_flow_error error = {0};
    return rte_flow_flush(port, &error);
}
