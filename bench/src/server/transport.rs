//! Which packet I/O backend a command runs on, and binding ports on it.

use dataplane::port::{FaultConfig, MemoryNetwork, UdpOverlay, UdpPort};
use dataplane::wire::udp::UdpChecksum;
use dataplane::Port;
use std::io;
use std::net::SocketAddrV4;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// In-process channels (only within one process: `--embedded`).
    Memory,
    /// Kernel UDP sockets, batched with recvmmsg/sendmmsg.
    Udp,
    /// DPDK devices (kernel bypass); needs a build with `--features dpdk` and `--eal`.
    Dpdk,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Memory => "memory",
            Transport::Udp => "udp",
            Transport::Dpdk => "dpdk",
        }
    }
}

/// A backend instance ports are bound on.
#[derive(Clone)]
pub enum Fabric {
    Memory(MemoryNetwork),
    /// Kernel sockets; with `via`, every port sends through the software switch there.
    Udp {
        via: Option<SocketAddrV4>,
    },
    #[cfg(feature = "dpdk")]
    Dpdk(std::sync::Arc<dpdk::DpdkFabric>),
}

/// How `--transport dpdk` starts: the EAL arguments, and how frames get their UDP checksum
/// (None: as suits each device, see `DpdkDevice::open`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DpdkOptions<'a> {
    pub eal: Option<&'a str>,
    pub udp_checksum: Option<UdpChecksum>,
}

impl Fabric {
    /// The fabric of `transport`. For DPDK, `dpdk` says how to start it and `lanes` how many
    /// ports this process will bind (its partitions or client threads): the EAL starts here,
    /// and either every device it found gets one queue pair and one lane, or a single device
    /// gets a queue pair per lane with flow rules steering each lane's UDP port to its queue.
    pub fn new(
        transport: Transport,
        faults: FaultConfig,
        dpdk: DpdkOptions<'_>,
        lanes: usize,
    ) -> io::Result<Fabric> {
        Ok(match transport {
            Transport::Memory => Fabric::Memory(MemoryNetwork::with_faults(faults)),
            Transport::Udp => Fabric::Udp { via: None },
            #[cfg(feature = "dpdk")]
            Transport::Dpdk => Fabric::Dpdk(dpdk::DpdkFabric::start(dpdk, lanes)?),
            #[cfg(not(feature = "dpdk"))]
            Transport::Dpdk => {
                let _ = (dpdk, lanes);
                return Err(io::Error::other(
                    "this netmigrate was built without DPDK: rebuild with \
                     `cargo build --release --features dpdk` (scripts/setup.sh installs DPDK)",
                ));
            }
        })
    }

    /// Per-device counters of kernel-bypass devices (None for the other backends).
    pub fn device_report(&self) -> Option<String> {
        match self {
            #[cfg(feature = "dpdk")]
            Fabric::Dpdk(fabric) => Some(fabric.report()),
            _ => None,
        }
    }

    /// Waits up to `timeout` for every DPDK device's link (other backends have none): a
    /// client that sent before would see its first window refused and retransmitted until
    /// the link is up. Past the timeout it warns and goes on.
    pub fn wait_for_links(&self, timeout: Duration) -> io::Result<()> {
        match self {
            #[cfg(feature = "dpdk")]
            Fabric::Dpdk(fabric) => fabric.wait_for_links(timeout),
            _ => {
                let _ = timeout;
                Ok(())
            }
        }
    }

    /// Closes the backend; for DPDK, stops the devices and the EAL (at exit, after every
    /// port is dropped). Dropping the last handle does the same, so an early error return
    /// cleans up too.
    pub fn shutdown(self) {
        drop(self);
    }

    /// This fabric with every port's traffic going through the software switch at `switch`
    /// (kernel UDP only: in-process, the switch is the network's gateway).
    pub fn via(self, switch: Option<SocketAddrV4>) -> io::Result<Fabric> {
        match (self, switch) {
            (fabric, None) => Ok(fabric),
            (Fabric::Udp { .. }, Some(switch)) => Ok(Fabric::Udp { via: Some(switch) }),
            (_, Some(_)) => Err(io::Error::other(
                "--via works with --transport udp only (in-process, the switch is always on \
                 the path; over DPDK, the testbed's switch host is)",
            )),
        }
    }

    /// The port of a switch host at `addr`: every device of the fabric, each a link to one
    /// host (DPDK only; over kernel UDP the switch is the overlay's gateway).
    pub fn bind_switch(&self, addr: SocketAddrV4) -> io::Result<Box<dyn Port>> {
        match self {
            #[cfg(feature = "dpdk")]
            Fabric::Dpdk(fabric) => Ok(Box::new(dpdk::DpdkFabric::lease_all(fabric, addr)?)),
            _ => {
                let _ = addr;
                Err(io::Error::other(
                    "a switch host with devices needs --transport dpdk",
                ))
            }
        }
    }

    pub fn bind(&self, addr: SocketAddrV4) -> io::Result<Box<dyn Port>> {
        Ok(match self {
            Fabric::Memory(network) => Box::new(network.bind(addr)?),
            Fabric::Udp { via: None } => Box::new(UdpPort::bind(addr)?),
            Fabric::Udp { via: Some(switch) } => {
                Box::new(UdpPort::bind_with(addr, UdpOverlay::Via(*switch))?)
            }
            #[cfg(feature = "dpdk")]
            Fabric::Dpdk(fabric) => Box::new(dpdk::DpdkFabric::lease(fabric, addr)?),
        })
    }
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use super::DpdkOptions;
    use dataplane::dpdk::{self as sys, DpdkDevice, DpdkPort, DpdkSwitchPort, FlowRule};
    use dataplane::port::{AnswerInPlace, PortStats, Received};
    use dataplane::wire::udp::UdpChecksum;
    use dataplane::{Packet, Port};
    use std::io;
    use std::net::SocketAddrV4;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// The devices of this process's EAL and how ports are placed on them: either each bound
    /// port leases one whole device (one queue pair), in device order, or, with one device
    /// and several lanes, each leases one queue of it, steered to by a flow rule on its UDP
    /// port.
    pub struct DpdkFabric {
        devices: Vec<Arc<DpdkDevice>>,
        /// Per device (or, when steered, per queue of device 0): whether it is leased.
        leased: Mutex<Vec<bool>>,
        steered: bool,
    }

    impl DpdkFabric {
        pub fn start(options: DpdkOptions<'_>, lanes: usize) -> io::Result<Arc<DpdkFabric>> {
            let Some(eal) = options.eal else {
                return Err(io::Error::other(
                    "--transport dpdk needs --eal, e.g. --eal \"-l 0-1 --no-pci --in-memory \
                     --vdev=net_memif0,role=server,socket=/tmp/netmigrate.sock\"",
                ));
            };
            sys::init_eal(eal).map_err(io::Error::other)?;
            // Once the EAL runs, a failure stops it again (and removes its runtime files).
            Self::open_devices(lanes, options.udp_checksum).inspect_err(|_| sys::cleanup())
        }

        fn open_devices(
            lanes: usize,
            udp_checksum: Option<UdpChecksum>,
        ) -> io::Result<Arc<DpdkFabric>> {
            let count = sys::device_count();
            if count == 0 {
                return Err(io::Error::other(
                    "the EAL found no Ethernet device: add --vdev=… to --eal (memif, \
                     af_packet, af_xdp, tap) or bind a NIC with scripts/bind-nic.sh",
                ));
            }
            let steered = count == 1 && lanes > 1;
            let queues = if steered {
                u16::try_from(lanes)
                    .map_err(|_| io::Error::other(format!("{lanes} lanes on one device")))?
            } else {
                1
            };
            let devices = (0..count)
                .map(|port| {
                    DpdkDevice::open(port, queues, udp_checksum)
                        .map(Arc::new)
                        .map_err(io::Error::other)
                })
                .collect::<io::Result<Vec<_>>>()?;
            for (port, device) in devices.iter().enumerate() {
                let mac = device.mac().map(|b| format!("{b:02x}")).join(":");
                eprintln!(
                    "dpdk: port {port} = {} ({mac}), {} queue pair(s), UDP checksums {}",
                    device.name(),
                    device.queues(),
                    device.udp_checksum().name()
                );
            }
            Ok(Arc::new(DpdkFabric {
                leased: Mutex::new(vec![false; if steered { lanes } else { devices.len() }]),
                devices,
                steered,
            }))
        }

        pub fn wait_for_links(&self, timeout: Duration) -> io::Result<()> {
            let started = Instant::now();
            let mut told = false;
            loop {
                let mut down = Vec::new();
                for (port, device) in self.devices.iter().enumerate() {
                    if !device.link_up().map_err(io::Error::other)? {
                        down.push(format!("{port} ({})", device.name()));
                    }
                }
                if down.is_empty() {
                    if told {
                        eprintln!(
                            "dpdk: links up after {:.1} s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                    return Ok(());
                }
                let waited = started.elapsed();
                if waited >= timeout {
                    eprintln!(
                        "netmigrate: warning: the link of port {} is still down after {:.0} s; \
                         sending anyway (requests are retransmitted until --give-up-ms)",
                        down.join(", port "),
                        timeout.as_secs_f64()
                    );
                    return Ok(());
                }
                if !told && waited >= Duration::from_millis(200) {
                    eprintln!(
                        "dpdk: waiting up to {:.0} s for the link of port {} (a memif waits \
                         for its peer, a NIC needs a second or more)",
                        timeout.as_secs_f64(),
                        down.join(", port ")
                    );
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// One line per device from `rte_eth_stats`, with per-queue packet counts.
        pub fn report(&self) -> String {
            let mut out = String::new();
            for (port, device) in self.devices.iter().enumerate() {
                let s = device.stats();
                out.push_str(&format!(
                    "dpdk port {port} ({}): rx {} tx {} missed {} rx-errors {} tx-errors {} \
                     no-mbuf {}; per queue rx {:?} tx {:?}\n",
                    device.name(),
                    s.rx_packets,
                    s.tx_packets,
                    s.rx_missed,
                    s.rx_errors,
                    s.tx_errors,
                    s.rx_no_mbuf,
                    s.queue_rx_packets,
                    s.queue_tx_packets
                ));
            }
            out
        }

        pub fn lease(fabric: &Arc<DpdkFabric>, addr: SocketAddrV4) -> io::Result<LeasedPort> {
            let mut leased = fabric.leased.lock().expect("lease lock");
            let Some(index) = leased.iter().position(|used| !used) else {
                return Err(io::Error::other(format!(
                    "all {} DPDK lane(s) are in use: give each partition or client thread its \
                     own device (a --vdev each), or use a single device, whose queues are \
                     then shared out by flow rules",
                    leased.len()
                )));
            };
            let (port, rule) = if fabric.steered {
                let device = &fabric.devices[0];
                let queue = index as u16;
                let rule = device
                    .steer_udp_port(addr.port(), queue)
                    .map_err(io::Error::other)?;
                (DpdkPort::new(Arc::clone(device), queue, addr), Some(rule))
            } else {
                let device = &fabric.devices[index];
                (DpdkPort::new(Arc::clone(device), 0, addr), None)
            };
            leased[index] = true;
            Ok(LeasedPort {
                port,
                rule,
                fabric: Arc::clone(fabric),
                index,
            })
        }
    }

    impl DpdkFabric {
        /// Every device as one link of a switch host at `addr`.
        pub fn lease_all(
            fabric: &Arc<DpdkFabric>,
            addr: SocketAddrV4,
        ) -> io::Result<DpdkSwitchPort> {
            let mut leased = fabric.leased.lock().expect("lease lock");
            if fabric.steered || leased.iter().any(|&used| used) {
                return Err(io::Error::other("a DPDK device is already in use"));
            }
            leased.iter_mut().for_each(|used| *used = true);
            let links = fabric
                .devices
                .iter()
                .map(|device| DpdkPort::gateway(Arc::clone(device), 0, addr))
                .collect();
            DpdkSwitchPort::new(links)
        }
    }

    impl Drop for DpdkFabric {
        /// The last handle stops the devices, then the EAL, unless a device is still in use
        /// elsewhere (then the process is going down with it anyway).
        fn drop(&mut self) {
            let mut still_used = false;
            for device in std::mem::take(&mut self.devices) {
                still_used |= Arc::strong_count(&device) > 1;
                drop(device);
            }
            if !still_used {
                sys::cleanup();
            }
        }
    }

    /// A DPDK port that gives its device (or its queue and flow rule) back when dropped.
    pub struct LeasedPort {
        port: DpdkPort,
        /// Steers this port's UDP port to its queue while leased (a single shared device).
        rule: Option<FlowRule>,
        fabric: Arc<DpdkFabric>,
        index: usize,
    }

    impl Drop for LeasedPort {
        fn drop(&mut self) {
            // The rule goes before the queue is free for another lease.
            drop(self.rule.take());
            if let Ok(mut leased) = self.fabric.leased.lock() {
                leased[self.index] = false;
            }
        }
    }

    impl Port for LeasedPort {
        fn recv(&mut self, rx: &mut Vec<Box<Packet>>, max: usize) -> io::Result<usize> {
            self.port.recv(rx, max)
        }
        fn recv_answering(
            &mut self,
            rx: &mut Vec<Box<Packet>>,
            max: usize,
            answerer: &mut dyn AnswerInPlace,
        ) -> io::Result<Received> {
            self.port.recv_answering(rx, max, answerer)
        }
        fn send(&mut self, tx: &mut Vec<Box<Packet>>) -> io::Result<usize> {
            self.port.send(tx)
        }
        fn alloc(&mut self) -> Box<Packet> {
            self.port.alloc()
        }
        fn release(&mut self, packet: Box<Packet>) {
            self.port.release(packet)
        }
        fn local_addr(&self) -> SocketAddrV4 {
            self.port.local_addr()
        }
        fn stats(&self) -> PortStats {
            self.port.stats()
        }
    }
}
