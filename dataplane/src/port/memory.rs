//! In-process backend: every bound address owns a bounded channel, and sending moves the
//! boxed buffer to the receiver's channel, so nothing is copied. A full channel drops the
//! packet like a full NIC ring would.

use super::fault::{Fate, FaultInjector};
use super::{FaultConfig, Packet, Pool, Port, PortStats};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Default)]
struct Registry {
    ports: HashMap<SocketAddrV4, Sender<Box<Packet>>>,
    /// A switch every other port sends through (see [`MemoryNetwork::bind_gateway`]).
    gateway: Option<SocketAddrV4>,
}

/// The in-process "network": a registry of bound addresses. Clones share it.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    registry: Arc<Mutex<Registry>>,
    faults: FaultConfig,
}

impl MemoryNetwork {
    /// Packets a port's receive channel holds before senders drop.
    pub const QUEUE_DEPTH: usize = 8192;

    pub fn new() -> Self {
        Self::default()
    }

    /// A network whose every port injects these faults on send.
    pub fn with_faults(faults: FaultConfig) -> Self {
        MemoryNetwork {
            registry: Arc::default(),
            faults,
        }
    }

    pub fn bind(&self, addr: SocketAddrV4) -> io::Result<MemoryPort> {
        self.bind_port(addr, false)
    }

    /// Binds the network's switch: from now on every other port's packets go to it first,
    /// with their destination unchanged, and it sends them on keeping their source address
    /// (like a switch between hosts). Bind it before the ports that should use it.
    pub fn bind_gateway(&self, addr: SocketAddrV4) -> io::Result<MemoryPort> {
        {
            let registry = self.registry.lock().expect("registry lock poisoned");
            if let Some(existing) = registry.gateway {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("the in-process network already has a switch at {existing}"),
                ));
            }
        }
        let port = self.bind_port(addr, true)?;
        self.registry
            .lock()
            .expect("registry lock poisoned")
            .gateway = Some(addr);
        Ok(port)
    }

    fn bind_port(&self, addr: SocketAddrV4, transparent: bool) -> io::Result<MemoryPort> {
        let (tx, rx) = crossbeam_channel::bounded(Self::QUEUE_DEPTH);
        let mut registry = self.registry.lock().expect("registry lock poisoned");
        if registry.ports.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already bound on the in-process network"),
            ));
        }
        registry.ports.insert(addr, tx);
        let stream = u64::from(u32::from(*addr.ip())) << 16 | u64::from(addr.port());
        Ok(MemoryPort {
            addr,
            transparent,
            rx,
            routes: HashMap::new(),
            network: self.clone(),
            pool: Pool::default(),
            faults: self
                .faults
                .is_active()
                .then(|| FaultInjector::new(self.faults, stream)),
            stats: PortStats::default(),
        })
    }

    /// Where a packet to `addr` goes first: the gateway, unless the sender is the gateway.
    fn route(&self, addr: &SocketAddrV4, from_gateway: bool) -> Option<Sender<Box<Packet>>> {
        let registry = self.registry.lock().ok()?;
        let hop = match registry.gateway {
            Some(gateway) if !from_gateway => gateway,
            _ => *addr,
        };
        registry.ports.get(&hop).cloned()
    }
}

pub struct MemoryPort {
    addr: SocketAddrV4,
    /// The gateway: sends keep their source address and go straight to their destination.
    transparent: bool,
    rx: Receiver<Box<Packet>>,
    /// Senders looked up once from the shared registry, so sending takes no lock.
    routes: HashMap<SocketAddrV4, Sender<Box<Packet>>>,
    network: MemoryNetwork,
    pool: Pool,
    faults: Option<FaultInjector>,
    stats: PortStats,
}

impl MemoryPort {
    fn deliver(&mut self, packet: Box<Packet>) {
        let dst = packet.dst;
        let sender = match self.routes.get(&dst) {
            Some(sender) => sender,
            None => match self.network.route(&dst, self.transparent) {
                Some(sender) => self.routes.entry(dst).or_insert(sender),
                None => {
                    self.stats.tx_dropped += 1;
                    self.pool.give(packet);
                    return;
                }
            },
        };
        let bytes = packet.len() as u64;
        match sender.try_send(packet) {
            Ok(()) => {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += bytes;
            }
            Err(TrySendError::Full(packet)) => {
                self.stats.tx_dropped += 1;
                self.pool.give(packet);
            }
            Err(TrySendError::Disconnected(packet)) => {
                // The receiver went away, and the address may have been bound again since:
                // look it up afresh and try once more.
                self.routes.remove(&dst);
                let retry = match self.network.route(&dst, self.transparent) {
                    Some(sender) => sender.try_send(packet).map(|()| sender),
                    None => Err(TrySendError::Disconnected(packet)),
                };
                match retry {
                    Ok(sender) => {
                        self.routes.insert(dst, sender);
                        self.stats.tx_packets += 1;
                        self.stats.tx_bytes += bytes;
                    }
                    Err(error) => {
                        self.stats.tx_dropped += 1;
                        self.pool.give(error.into_inner());
                    }
                }
            }
        }
    }

    fn flush_delayed(&mut self) {
        let Some(faults) = self.faults.as_mut() else {
            return;
        };
        let due: Vec<_> = faults.due(Instant::now()).collect();
        for packet in due {
            self.deliver(packet);
        }
    }
}

impl Port for MemoryPort {
    fn recv(&mut self, rx: &mut Vec<Box<Packet>>, max: usize) -> io::Result<usize> {
        self.flush_delayed();
        let mut received = 0;
        while received < max {
            match self.rx.try_recv() {
                Ok(packet) => {
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += packet.len() as u64;
                    rx.push(packet);
                    received += 1;
                }
                Err(_) => break,
            }
        }
        Ok(received)
    }

    fn send(&mut self, tx: &mut Vec<Box<Packet>>) -> io::Result<usize> {
        let count = tx.len();
        for mut packet in tx.drain(..) {
            if !self.transparent {
                packet.src = self.addr;
            }
            let fate = match self.faults.as_mut() {
                Some(faults) => faults.fate(),
                None => Fate::Deliver,
            };
            match fate {
                Fate::Deliver => self.deliver(packet),
                Fate::Drop => {
                    self.stats.injected_losses += 1;
                    self.pool.give(packet);
                }
                Fate::Duplicate => {
                    self.stats.injected_duplicates += 1;
                    let copy = packet.duplicate();
                    self.deliver(packet);
                    self.deliver(copy);
                }
                Fate::Delay => {
                    self.stats.injected_reorders += 1;
                    if let Some(faults) = self.faults.as_mut() {
                        faults.delay(packet);
                    }
                }
            }
        }
        self.flush_delayed();
        Ok(count)
    }

    fn alloc(&mut self) -> Box<Packet> {
        self.pool.take()
    }

    fn release(&mut self, packet: Box<Packet>) {
        self.pool.give(packet)
    }

    fn local_addr(&self) -> SocketAddrV4 {
        self.addr
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

impl Drop for MemoryPort {
    fn drop(&mut self) {
        if let Ok(mut registry) = self.network.registry.lock() {
            registry.ports.remove(&self.addr);
            if registry.gateway == Some(self.addr) {
                registry.gateway = None;
            }
        }
    }
}
