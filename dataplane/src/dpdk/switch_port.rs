//! The switch host's port over several DPDK devices, one per link to a host. Every datagram
//! any device receives is the switch's to steer; what the switch sends leaves by the device
//! behind which its destination (address and UDP port: the partitions of one server share
//! its address, each on its own device) was last seen as a source, or by every device while
//! that destination is unknown (hosts drop datagrams that are not theirs), except the one it
//! came in by. Links must be point-to-point (memif, or a veth or cable to one host): the
//! gateway ports answer ARP for every other address.

use super::port::DpdkPort;
use crate::port::{Packet, PortStats};
use crate::Port;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddrV4;

/// Endpoints the switch remembers; a table this full is started over.
const MAX_ROUTES: usize = 1 << 16;

pub struct DpdkSwitchPort {
    links: Vec<DpdkPort>,
    /// The link each host endpoint was last seen behind.
    routes: HashMap<SocketAddrV4, usize>,
    /// The link polled first next time, so no link starves the others.
    first: usize,
    outgoing: Vec<Vec<Box<Packet>>>,
    /// Datagrams sent on every link because their destination was not known yet.
    flooded: u64,
}

impl DpdkSwitchPort {
    /// One link per gateway port (`DpdkPort::gateway`), in device order.
    pub fn new(mut links: Vec<DpdkPort>) -> io::Result<DpdkSwitchPort> {
        if links.is_empty() {
            return Err(io::Error::other(
                "a switch host needs at least one DPDK device",
            ));
        }
        let macs: Vec<[u8; 6]> = links.iter().map(DpdkPort::mac).collect();
        for link in &mut links {
            link.ignore_frames_from(macs.clone());
        }
        Ok(DpdkSwitchPort {
            outgoing: links.iter().map(|_| Vec::new()).collect(),
            links,
            routes: HashMap::new(),
            first: 0,
            flooded: 0,
        })
    }
}

impl Port for DpdkSwitchPort {
    fn recv(&mut self, rx: &mut Vec<Box<Packet>>, max: usize) -> io::Result<usize> {
        let before = rx.len();
        let count = self.links.len();
        for k in 0..count {
            let link = (self.first + k) % count;
            let room = max.saturating_sub(rx.len() - before);
            if room == 0 {
                break;
            }
            let start = rx.len();
            self.links[link].recv(rx, room)?;
            for packet in &rx[start..] {
                if self.routes.len() >= MAX_ROUTES && !self.routes.contains_key(&packet.src) {
                    // Invented sources cannot grow the table without bound: start over.
                    self.routes.clear();
                }
                self.routes.insert(packet.src, link);
            }
        }
        self.first = (self.first + 1) % count;
        Ok(rx.len() - before)
    }

    fn send(&mut self, tx: &mut Vec<Box<Packet>>) -> io::Result<usize> {
        for packet in tx.drain(..) {
            if let Some(&link) = self.routes.get(&packet.dst) {
                self.outgoing[link].push(packet);
                continue;
            }
            self.flooded += 1;
            let ingress = self.routes.get(&packet.src).copied();
            let mut targets = (0..self.links.len()).filter(|&link| Some(link) != ingress);
            let Some(first) = targets.next() else {
                self.links[0].release(packet);
                continue;
            };
            for link in targets {
                self.outgoing[link].push(packet.duplicate());
            }
            self.outgoing[first].push(packet);
        }
        let mut sent = 0;
        for (link, outgoing) in self.links.iter_mut().zip(&mut self.outgoing) {
            if !outgoing.is_empty() {
                sent += link.send(outgoing)?;
            }
        }
        Ok(sent)
    }

    fn alloc(&mut self) -> Box<Packet> {
        self.links[0].alloc()
    }

    fn release(&mut self, packet: Box<Packet>) {
        self.links[0].release(packet)
    }

    fn local_addr(&self) -> SocketAddrV4 {
        self.links[0].local_addr()
    }

    fn stats(&self) -> PortStats {
        let mut total = PortStats {
            flooded: self.flooded,
            ..PortStats::default()
        };
        for link in &self.links {
            total.add(&link.stats());
        }
        total
    }
}
