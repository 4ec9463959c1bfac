//! Which packet I/O backend a command runs on, and binding ports on it.

use dataplane::port::{FaultConfig, MemoryNetwork, UdpPort};
use dataplane::Port;
use std::io;
use std::net::SocketAddrV4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// In-process channels (only within one process: `--embedded`).
    Memory,
    /// Kernel UDP sockets, batched with recvmmsg/sendmmsg.
    Udp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Memory => "memory",
            Transport::Udp => "udp",
        }
    }
}

/// A backend instance ports are bound on.
#[derive(Clone)]
pub enum Fabric {
    Memory(MemoryNetwork),
    Udp,
}

impl Fabric {
    pub fn new(transport: Transport, faults: FaultConfig) -> Fabric {
        match transport {
            Transport::Memory => Fabric::Memory(MemoryNetwork::with_faults(faults)),
            Transport::Udp => Fabric::Udp,
        }
    }

    pub fn bind(&self, addr: SocketAddrV4) -> io::Result<Box<dyn Port>> {
        Ok(match self {
            Fabric::Memory(network) => Box::new(network.bind(addr)?),
            Fabric::Udp => Box::new(UdpPort::bind(addr)?),
        })
    }
}
