//! One DPDK Ethernet device: its mempool and its queue pairs.

use super::{error_text, sys, DpdkError};
use crate::wire::udp::UdpChecksum;
use std::ffi::CStr;
use std::sync::Arc;

/// Counters of a device (from `rte_eth_stats_get`), overall and per queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_no_mbuf: u64,
    pub queue_rx_packets: Vec<u64>,
    pub queue_tx_packets: Vec<u64>,
}

pub struct DpdkDevice {
    pub(super) port_id: u16,
    pub(super) pool: *mut sys::rte_mempool,
    pub(super) mac: [u8; 6],
    name: String,
    queues: u16,
    /// How this device's frames get their UDP checksum.
    pub(super) udp_checksum: UdpChecksum,
}

// SAFETY: the device handle and its mempool are thread-safe DPDK objects; each queue is
// driven by one thread at a time (see DpdkPort).
unsafe impl Send for DpdkDevice {}
unsafe impl Sync for DpdkDevice {}

impl DpdkDevice {
    const RX_DESCRIPTORS: u16 = 1024;
    const TX_DESCRIPTORS: u16 = 1024;
    const POOL_MBUFS: u32 = 8191;
    const POOL_CACHE: u32 = 256;

    /// Configures and starts device `port_id` with `queues` rx/tx queue pairs. Its frames'
    /// UDP checksums are filled in as `udp_checksum` says, or, if None, as suits the
    /// device: omitted on memif (shared memory: no wire to corrupt a frame), offloaded to a
    /// NIC that can compute them, computed here otherwise.
    pub fn open(
        port_id: u16,
        queues: u16,
        udp_checksum: Option<UdpChecksum>,
    ) -> Result<DpdkDevice, DpdkError> {
        // SAFETY: plain queries on a port id the caller got from the EAL.
        if unsafe { sys::rte_eth_dev_is_valid_port(port_id) } == 0 {
            return Err(DpdkError(format!(
                "no DPDK port {port_id}: {} device(s) found; add a --vdev (e.g. \
                 --vdev=net_memif0) or bind a NIC (scripts/bind-nic.sh) and check --eal",
                super::device_count()
            )));
        }
        let check = |what: &str, rc: i32| {
            if rc < 0 {
                Err(DpdkError(format!(
                    "port {port_id}: {what} failed: {}",
                    error_text(rc)
                )))
            } else {
                Ok(())
            }
        };
        let mut name_buf = [0 as libc::c_char; 64];
        // SAFETY: a buffer of RTE_ETH_NAME_MAX_LEN (64) bytes.
        unsafe { sys::rte_eth_dev_get_name_by_port(port_id, name_buf.as_mut_ptr()) };
        // SAFETY: NUL-terminated by DPDK (or all zero).
        let name = unsafe { CStr::from_ptr(name_buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: a valid port; fills info.
        check("read device info", unsafe {
            sys::rte_eth_dev_info_get(port_id, &mut info)
        })?;
        if queues > info.max_rx_queues || queues > info.max_tx_queues {
            return Err(DpdkError(format!(
                "DPDK device {name} has at most {} rx and {} tx queue(s), {queues} needed (one \
                 per partition or client thread): give each its own device instead (a VF or a \
                 --vdev each), or more queues (e.g. qpairs= for net_af_packet)",
                info.max_rx_queues, info.max_tx_queues
            )));
        }
        // SAFETY: a constant.
        let udp_offload = unsafe { sys::nm_tx_offload_udp_cksum() };
        let can_offload = info.tx_offload_capa & udp_offload != 0;
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: the PMD's NUL-terminated, static driver name.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        let udp_checksum = match udp_checksum {
            Some(UdpChecksum::Offloaded) if !can_offload => {
                return Err(DpdkError(format!(
                    "DPDK device {name} ({driver}) cannot compute UDP checksums (no \
                     RTE_ETH_TX_OFFLOAD_UDP_CKSUM): use --udp-checksum compute or auto"
                )))
            }
            Some(how) => how,
            None if driver == "net_memif" => UdpChecksum::Omitted,
            None if can_offload => UdpChecksum::Offloaded,
            None => UdpChecksum::Computed,
        };
        // SAFETY: returns the NUMA socket or -1.
        let socket = unsafe { sys::rte_eth_dev_socket_id(port_id) }.max(0);
        let pool_name = std::ffi::CString::new(format!("nm_pool_{port_id}")).unwrap();
        // SAFETY: valid arguments; returns NULL with rte_errno set on failure.
        let pool = unsafe {
            sys::rte_pktmbuf_pool_create(
                pool_name.as_ptr(),
                Self::POOL_MBUFS * u32::from(queues),
                Self::POOL_CACHE,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        if pool.is_null() {
            return Err(DpdkError(format!(
                "port {port_id}: cannot create the mbuf pool ({}): reserve hugepages or pass \
                 --in-memory / --no-huge -m 512 in --eal",
                error_text(super::last_error())
            )));
        }
        let mut conf = sys::rte_eth_conf::default();
        if udp_checksum == UdpChecksum::Offloaded {
            conf.txmode.offloads = udp_offload;
        }
        // SAFETY: the port is valid and stopped; conf lives across the call.
        check("configure", unsafe {
            sys::rte_eth_dev_configure(port_id, queues, queues, &conf)
        })?;
        for queue in 0..queues {
            // SAFETY: default queue configuration (NULL), a live pool.
            check("rx queue setup", unsafe {
                sys::rte_eth_rx_queue_setup(
                    port_id,
                    queue,
                    Self::RX_DESCRIPTORS,
                    socket as u32,
                    std::ptr::null(),
                    pool,
                )
            })?;
            // SAFETY: as above.
            check("tx queue setup", unsafe {
                sys::rte_eth_tx_queue_setup(
                    port_id,
                    queue,
                    Self::TX_DESCRIPTORS,
                    socket as u32,
                    std::ptr::null(),
                )
            })?;
        }
        // SAFETY: configured above.
        check("start", unsafe { sys::rte_eth_dev_start(port_id) })?;
        // Best effort: some virtual devices do not support promiscuous mode.
        // SAFETY: a started port.
        unsafe { sys::rte_eth_promiscuous_enable(port_id) };
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: writes 6 bytes into mac.
        check("read MAC address", unsafe {
            sys::rte_eth_macaddr_get(port_id, &mut mac)
        })?;
        Ok(DpdkDevice {
            port_id,
            pool,
            mac: mac.addr_bytes,
            name,
            queues,
            udp_checksum,
        })
    }

    /// How this device's frames get their UDP checksum.
    pub fn udp_checksum(&self) -> UdpChecksum {
        self.udp_checksum
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn queues(&self) -> u16 {
        self.queues
    }

    /// Whether the link is up: a NIC's takes a second or more after start, a memif's waits
    /// for its peer. Frames sent before are refused.
    pub fn link_up(&self) -> Result<bool, DpdkError> {
        // SAFETY: a started port.
        let rc = unsafe { sys::nm_link_up(self.port_id) };
        if rc < 0 {
            return Err(DpdkError(format!(
                "port {} ({}): cannot read the link status: {}",
                self.port_id,
                self.name,
                error_text(rc)
            )));
        }
        Ok(rc == 1)
    }

    /// Steers IPv4/UDP datagrams for `udp_port` to rx queue `queue` with an rte_flow rule:
    /// how one NIC feeds several partitions, each owning a UDP port and a queue (MICA's
    /// layout). Fails, with the PMD's reason, on devices without flow rules (memif,
    /// af_packet, and tap without the kernel's multiq qdisc, among others).
    /// The rule lasts as long as the returned `FlowRule`.
    pub fn steer_udp_port(
        self: &Arc<Self>,
        udp_port: u16,
        queue: u16,
    ) -> Result<FlowRule, DpdkError> {
        let mut why = [0 as libc::c_char; 256];
        let mut rule = std::ptr::null_mut();
        // SAFETY: a started port; `why` has the room we pass; `rule` receives the handle.
        let rc = unsafe {
            sys::nm_flow_steer_udp_port(
                self.port_id,
                udp_port,
                queue,
                &mut rule,
                why.as_mut_ptr(),
                why.len(),
            )
        };
        if rc == 0 {
            return Ok(FlowRule {
                device: Arc::clone(self),
                rule,
            });
        }
        // SAFETY: NUL-terminated by snprintf.
        let why = unsafe { CStr::from_ptr(why.as_ptr()) }.to_string_lossy();
        Err(DpdkError(format!(
            "DPDK device {} cannot steer UDP port {udp_port} to queue {queue} with a flow rule \
             ({why}): give each partition or client thread its own device instead (a VF or a \
             --vdev each)",
            self.name
        )))
    }

    pub fn stats(&self) -> DeviceStats {
        let mut raw = sys::rte_eth_stats::default();
        // SAFETY: a valid port; fills raw.
        unsafe { sys::rte_eth_stats_get(self.port_id, &mut raw) };
        let queues = usize::from(self.queues).min(raw.q_ipackets.len());
        DeviceStats {
            rx_packets: raw.ipackets,
            tx_packets: raw.opackets,
            rx_missed: raw.imissed,
            rx_errors: raw.ierrors,
            tx_errors: raw.oerrors,
            rx_no_mbuf: raw.rx_nombuf,
            queue_rx_packets: raw.q_ipackets[..queues].to_vec(),
            queue_tx_packets: raw.q_opackets[..queues].to_vec(),
        }
    }
}

/// A flow rule of a device, removed when dropped (before the device, which it keeps open).
pub struct FlowRule {
    device: Arc<DpdkDevice>,
    rule: *mut sys::rte_flow,
}

// SAFETY: rte_flow calls on a port are thread-safe unless the PMD says otherwise, and the
// handle is only used once, to destroy the rule.
unsafe impl Send for FlowRule {}

impl Drop for FlowRule {
    fn drop(&mut self) {
        // SAFETY: a rule created on this started device and not destroyed before.
        unsafe { sys::nm_flow_destroy(self.device.port_id, self.rule) };
    }
}

impl Drop for DpdkDevice {
    fn drop(&mut self) {
        // SAFETY: no queue of this device is used any more (ports borrow the device).
        unsafe {
            // Fails harmlessly on devices without flow rules.
            sys::nm_flow_flush(self.port_id);
            sys::rte_eth_dev_stop(self.port_id);
            sys::rte_eth_dev_close(self.port_id);
            sys::rte_mempool_free(self.pool);
        }
    }
}
