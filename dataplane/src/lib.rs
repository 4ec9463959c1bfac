//! The dataplane: wire formats, the `Port` abstraction over packet I/O backends, and the
//! per-core loop runner. It knows nothing about key-value semantics or migration protocols.

#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod neighbours;
pub mod port;
pub mod runner;
pub mod wire;

pub use port::{Packet, Port, PortStats};
