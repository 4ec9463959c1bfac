//! A `Port` moves batches of datagrams, each with its IPv4/UDP addressing, over reusable
//! buffers. Backends: in-process channels (`memory`) and kernel UDP sockets (`udp`); the
//! DPDK backend (feature `dpdk`) also answers datagrams in place (`recv_answering`).

mod fault;
mod memory;
mod udp;

pub use fault::FaultConfig;
pub use memory::{MemoryNetwork, MemoryPort};
pub use udp::{UdpOverlay, UdpPort};

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Room for one jumbo-free Ethernet payload plus slack; every buffer has this capacity.
pub const BUFFER_CAPACITY: usize = 2048;
/// Packets moved per call at most, like a NIC burst.
pub const BURST: usize = 32;

/// One datagram and its addressing. Buffers are boxed once and then recycled.
pub struct Packet {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    len: usize,
    data: [u8; BUFFER_CAPACITY],
}

impl Packet {
    pub fn new_boxed() -> Box<Packet> {
        Box::new(Packet {
            src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            dst: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            len: 0,
            data: [0; BUFFER_CAPACITY],
        })
    }

    pub fn payload(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// The whole buffer, for writing a payload before `set_len`.
    pub fn buffer_mut(&mut self) -> &mut [u8; BUFFER_CAPACITY] {
        &mut self.data
    }

    /// The payload and the whole buffer at once, for building a reply in place.
    pub fn payload_and_buffer(&mut self) -> (usize, &mut [u8; BUFFER_CAPACITY]) {
        (self.len, &mut self.data)
    }

    pub fn set_len(&mut self, len: usize) {
        assert!(len <= BUFFER_CAPACITY, "payload longer than the buffer");
        self.len = len;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Turns a received request around: the reply goes back where the request came from,
    /// from the address the request was sent to.
    pub fn swap_addresses(&mut self) {
        std::mem::swap(&mut self.src, &mut self.dst);
    }
}

impl Packet {
    /// A copy in a new buffer (fault injection duplicates packets).
    pub fn duplicate(&self) -> Box<Packet> {
        let mut copy = Packet::new_boxed();
        copy.src = self.src;
        copy.dst = self.dst;
        copy.len = self.len;
        copy.data[..self.len].copy_from_slice(self.payload());
        copy
    }
}

/// Counters every port keeps; backends add what they can observe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets dropped on send: queue full, no route, or the kernel refused them.
    pub tx_dropped: u64,
    /// Datagrams dropped on receipt because their addressing could not be believed: a
    /// tunnel header missing, or a sender that is not the switch (or not who it claims).
    pub rx_rejected: u64,
    /// Packets the fault injector dropped, duplicated or delayed.
    pub injected_losses: u64,
    pub injected_duplicates: u64,
    pub injected_reorders: u64,
    /// A switch host's datagrams sent out of every link but the ingress one, for want of a
    /// route to their destination yet.
    pub flooded: u64,
}

impl PortStats {
    pub fn add(&mut self, other: &PortStats) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.tx_dropped += other.tx_dropped;
        self.rx_rejected += other.rx_rejected;
        self.injected_losses += other.injected_losses;
        self.injected_duplicates += other.injected_duplicates;
        self.injected_reorders += other.injected_reorders;
        self.flooded += other.flooded;
    }
}

/// Batched packet I/O. A port owns a pool of buffers: `recv` fills buffers from it, `send`
/// returns sent buffers to it, and `alloc`/`release` let the caller take and give back
/// buffers, so the steady state allocates nothing.
pub trait Port: Send {
    /// Appends up to `max` received packets to `rx` and returns how many.
    fn recv(&mut self, rx: &mut Vec<Box<Packet>>, max: usize) -> io::Result<usize>;
    /// Sends and drains `tx`. Packets that cannot be sent are dropped and counted, like a
    /// NIC with a full ring; the return value is the number handed to the medium.
    fn send(&mut self, tx: &mut Vec<Box<Packet>>) -> io::Result<usize>;
    /// Receives like `recv`, except that the datagrams `answerer` answers where they lie go
    /// straight back to their senders (from the address they were sent to) instead of to
    /// `rx`. Ports whose receive buffers are their send buffers (DPDK) do this without a
    /// copy; the others answer nothing in place.
    ///
    /// The answered datagrams are answered before the rest of the burst is handled, which
    /// is the network delivering them first: fine for reads, which change nothing, as long
    /// as `answerer` answers only what the rest of the burst cannot change (see
    /// `AnswerInPlace`).
    fn recv_answering(
        &mut self,
        rx: &mut Vec<Box<Packet>>,
        max: usize,
        answerer: &mut dyn AnswerInPlace,
    ) -> io::Result<Received> {
        let _ = answerer;
        let queued = self.recv(rx, max)?;
        Ok(Received {
            queued,
            answered: 0,
        })
    }
    /// A free buffer to build a packet in.
    fn alloc(&mut self) -> Box<Packet>;
    /// Gives a buffer back to the pool.
    fn release(&mut self, packet: Box<Packet>);
    fn local_addr(&self) -> SocketAddrV4;
    fn stats(&self) -> PortStats;
}

/// What `Port::recv_answering` took in: datagrams appended to `rx`, and datagrams answered
/// in place (and handed to the medium, or dropped and counted if it refused them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    pub queued: usize,
    pub answered: usize,
}

impl Received {
    pub fn total(&self) -> usize {
        self.queued + self.answered
    }
}

/// Answers some datagrams in the buffer they arrived in. A burst is first shown whole
/// (`prepare`), then offered datagram by datagram (`answer`) in arrival order.
///
/// Whatever is answered here is answered ahead of the burst's other datagrams, so answer
/// only requests whose reply no datagram can change by arriving with them: reads of data
/// this server owns outright. Answering such a read first is a reordering the network could
/// have made, and none of the burst's effects has been seen by anyone yet.
pub trait AnswerInPlace {
    /// Sees the burst's payloads before any is answered, to start loading what answering
    /// them will touch.
    fn prepare(&mut self, payloads: &[&[u8]]);
    /// Turns the datagram `buf[..len]` into its reply in `buf` and returns the reply's
    /// length, or None, with `buf[..len]` left as it was, to leave the datagram to be
    /// received as a `Packet`.
    fn answer(&mut self, len: usize, buf: &mut [u8]) -> Option<usize>;
}

/// A recycling stack of buffers, bounded so a burst of releases cannot hoard memory.
#[derive(Default)]
pub(crate) struct Pool {
    free: Vec<Box<Packet>>,
}

impl Pool {
    const MAX_FREE: usize = 4 * 1024;

    pub fn take(&mut self) -> Box<Packet> {
        self.free.pop().unwrap_or_else(Packet::new_boxed)
    }

    pub fn give(&mut self, packet: Box<Packet>) {
        if self.free.len() < Self::MAX_FREE {
            self.free.push(packet);
        }
    }
}
