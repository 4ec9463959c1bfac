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

uint16_t nm_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t nm_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
int nm_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned n);
void nm_pktmbuf_free(struct rte_mbuf *m);
uint8_t *nm_mbuf_data(struct rte_mbuf *m);
uint16_t nm_mbuf_data_len(const struct rte_mbuf *m);
uint16_t nm_mbuf_tailroom(const struct rte_mbuf *m);
void nm_mbuf_set_len(struct rte_mbuf *m, uint16_t len);
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
