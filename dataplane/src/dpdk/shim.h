/* The DPDK surface netmigrate uses. Fast-path functions are static inline in DPDK's
 * headers and rte_errno is a thread-local, so bindgen cannot bind them: these wrappers
 * (shim.c) give them a linkable symbol. */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_flow.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

/* The fast path works a burst per call, so crossing from Rust costs once per burst, not
 * per frame. */

/* Receives up to `n` frames into `pkts`, with each one's data pointer, length, and room
 * (data offset to the end of its buffer; 0 for a chained, indirect or shared mbuf, which
 * cannot be written and sent back as it is). */
uint16_t nm_rx_frames(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint8_t **data,
                      uint16_t *lens, uint16_t *rooms, uint16_t n);
/* Frees `n` mbufs (received frames, or taken ones left unused). */
void nm_free_bulk(struct rte_mbuf **pkts, unsigned n);
/* Takes `n` mbufs from `pool`, or none (returns non-zero), with each one's data pointer and
 * room (data offset to the end of its buffer). */
int nm_alloc_frames(struct rte_mempool *pool, struct rte_mbuf **pkts, uint8_t **data,
                    uint16_t *rooms, unsigned n);
/* Makes `n` received mbufs (each direct, one segment, its own only holder) fresh again, as
 * nm_alloc_frames hands them out, with each one's data pointer and room: a port sends from
 * the mbufs it received instead of a round trip through the pool. */
void nm_reuse_frames(struct rte_mbuf **pkts, uint8_t **data, uint16_t *rooms, unsigned n);
/* Gives each of `n` mbufs its frame length (one segment) and, with `udp_offload`, asks
 * the NIC for the UDP checksum of its IPv4/UDP frame (plain headers); sends them; frees
 * those the queue refuses. Returns how many were sent. */
uint16_t nm_tx_frames(uint16_t port, uint16_t queue, struct rte_mbuf **pkts,
                      const uint16_t *lens, uint16_t n, int udp_offload);
/* RTE_ETH_TX_OFFLOAD_UDP_CKSUM (a macro bindgen cannot evaluate). */
uint64_t nm_tx_offload_udp_cksum(void);
/* 1 if the port's link is up, 0 if down, a negative errno if the PMD cannot tell. */
int nm_link_up(uint16_t port);
int nm_errno(void);
unsigned nm_lcore_id(void);

/* Flow steering: IPv4/UDP datagrams to `udp_port` go to rx queue `queue`. Returns 0 with the
 * rule in `*rule`, or a negative errno with the PMD's explanation in `why` (NUL-terminated,
 * at most `why_len`). */
int nm_flow_steer_udp_port(uint16_t port, uint16_t udp_port, uint16_t queue,
                           struct rte_flow **rule, char *why, size_t why_len);
/* Removes one rule made by nm_flow_steer_udp_port. */
int nm_flow_destroy(uint16_t port, struct rte_flow *rule);
/* Removes every flow rule of `port` (before it stops). */
int nm_flow_flush(uint16_t port);
