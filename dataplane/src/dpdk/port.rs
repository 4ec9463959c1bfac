//! A `Port` on one queue pair of a DPDK device. Received frames are parsed (Ethernet, ARP,
//! IPv4, UDP) and their payload copied into the port's recycled buffers; sent datagrams are
//! framed into mbufs taken from the device's pool in bulk. No heap allocation per packet.

use super::device::DpdkDevice;
use super::sys;
use crate::neighbours::Neighbours;
use crate::port::{Packet, Pool, PortStats, BURST};
use crate::wire::arp::{self, ArpRepr};
use crate::wire::ethernet::{self, EthernetRepr, BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::ipv4::{self, Ipv4Repr, PROTOCOL_UDP};
use crate::wire::udp::{self, UdpRepr};
use crate::Port;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

const FRAME_OVERHEAD: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN;

pub struct DpdkPort {
    device: Arc<DpdkDevice>,
    queue: u16,
    addr: SocketAddrV4,
    /// MAC addresses learned from ARP and from received datagrams.
    neighbours: Neighbours,
    pool: Pool,
    /// A burst's mbufs, with each one's data pointer and its length (received) or room
    /// (taken to send), filled by the shim in one call per burst.
    mbufs: [*mut sys::rte_mbuf; BURST],
    data: [*mut u8; BURST],
    lens: [u16; BURST],
    stats: PortStats,
    /// Frames not for this port (other address, other protocol, malformed).
    pub rx_ignored: u64,
    /// The driving thread is an EAL lcore, or could not become one (warned once).
    registered: bool,
    /// A switch host's port: takes every UDP datagram whatever its destination, answers
    /// ARP for every address but the asker's, and sends with each packet's own source.
    gateway: bool,
    /// A gateway's own MAC addresses (all the switch's links): frames from them are its
    /// own, come back over a shared segment, and are dropped.
    own_macs: Vec<[u8; 6]>,
}

// SAFETY: one thread drives a port (its queue pair) at a time; mbuf pointers are owned.
unsafe impl Send for DpdkPort {}

impl DpdkPort {
    /// A port on queue `queue` of `device`, answering for `addr`.
    pub fn new(device: Arc<DpdkDevice>, queue: u16, addr: SocketAddrV4) -> DpdkPort {
        DpdkPort {
            device,
            queue,
            addr,
            neighbours: Neighbours::default(),
            pool: Pool::default(),
            mbufs: [std::ptr::null_mut(); BURST],
            data: [std::ptr::null_mut(); BURST],
            lens: [0; BURST],
            stats: PortStats::default(),
            rx_ignored: 0,
            registered: false,
            gateway: false,
            own_macs: Vec::new(),
        }
    }

    pub fn mac(&self) -> [u8; 6] {
        self.device.mac
    }

    /// Frames from these MAC addresses (the switch's own links) are dropped.
    pub fn ignore_frames_from(&mut self, macs: Vec<[u8; 6]>) {
        self.own_macs = macs;
    }

    /// A switch host's port on queue `queue` of `device` (see `gateway`); `addr` is the
    /// switch's own address.
    pub fn gateway(device: Arc<DpdkDevice>, queue: u16, addr: SocketAddrV4) -> DpdkPort {
        DpdkPort {
            gateway: true,
            ..DpdkPort::new(device, queue, addr)
        }
    }

    /// Teaches the port a neighbour's MAC address (otherwise learned from its traffic).
    pub fn add_neighbour(&mut self, ip: Ipv4Addr, mac: [u8; 6]) {
        self.neighbours.learn(ip, mac);
    }

    /// The room of the `i`th mbuf taken by `alloc_mbufs`. It lives in the mbuf, not in
    /// `self`: write the frame, then its length into `self.lens[i]`.
    fn room<'m>(&self, i: usize) -> &'m mut [u8] {
        // SAFETY: an mbuf we own and have not sent; `lens[i]` bytes from `data[i]` lie in its
        // buffer, which nothing else references.
        unsafe { std::slice::from_raw_parts_mut(self.data[i], usize::from(self.lens[i])) }
    }

    /// Handles one received frame: a datagram for us goes to `rx`, an ARP request for our
    /// address is answered, anything else is counted and dropped.
    fn accept(&mut self, frame: &[u8], rx: &mut Vec<Box<Packet>>, arp_replies: &mut Vec<ArpRepr>) {
        let Ok((eth, payload)) = EthernetRepr::parse(frame) else {
            self.rx_ignored += 1;
            return;
        };
        if self.own_macs.contains(&eth.src) {
            self.rx_ignored += 1;
            return;
        }
        match eth.ethertype {
            ETHERTYPE_ARP => match ArpRepr::parse(payload) {
                Ok(request) => {
                    self.neighbours.learn(request.sender_ip, request.sender_mac);
                    // A gateway stands for every other host, but not for a probe (an asker
                    // without an address yet) nor an announcement of the asker's own.
                    let ours = if self.gateway {
                        request.target_ip != request.sender_ip
                            && !request.sender_ip.is_unspecified()
                    } else {
                        request.target_ip == *self.addr.ip()
                    };
                    if request.operation == arp::REQUEST && ours {
                        arp_replies.push(ArpRepr {
                            operation: arp::REPLY,
                            sender_mac: self.device.mac,
                            sender_ip: request.target_ip,
                            target_mac: request.sender_mac,
                            target_ip: request.sender_ip,
                        });
                    }
                }
                Err(_) => self.rx_ignored += 1,
            },
            ETHERTYPE_IPV4 => {
                let datagram = Ipv4Repr::parse(payload).ok().filter(|(ip, _)| {
                    let steerable = !ip.dst.is_broadcast() && !ip.dst.is_multicast();
                    ip.protocol == PROTOCOL_UDP
                        && (ip.dst == *self.addr.ip() || (self.gateway && steerable))
                });
                let Some((ip, datagram)) = datagram else {
                    self.rx_ignored += 1;
                    return;
                };
                let Ok((udp, body)) = UdpRepr::parse(datagram) else {
                    self.rx_ignored += 1;
                    return;
                };
                let for_us = self.gateway || udp.dst_port == self.addr.port();
                if !for_us || body.len() > crate::port::BUFFER_CAPACITY {
                    self.rx_ignored += 1;
                    return;
                }
                self.neighbours.learn(ip.src, eth.src);
                let mut packet = self.pool.take();
                packet.buffer_mut()[..body.len()].copy_from_slice(body);
                packet.set_len(body.len());
                packet.src = SocketAddrV4::new(ip.src, udp.src_port);
                packet.dst = SocketAddrV4::new(ip.dst, udp.dst_port);
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += body.len() as u64;
                rx.push(packet);
            }
            _ => self.rx_ignored += 1,
        }
    }

    /// Sends the frames built in `self.mbufs[..count]`, each `self.lens[i]` bytes long (the
    /// shim frees what the queue refuses).
    fn transmit(&mut self, count: usize) -> usize {
        // SAFETY: the first `count` mbufs are ours and hold complete frames of those lengths.
        let sent = usize::from(unsafe {
            sys::nm_tx_frames(
                self.device.port_id,
                self.queue,
                self.mbufs.as_mut_ptr(),
                self.lens.as_ptr(),
                count as u16,
            )
        });
        self.stats.tx_dropped += (count - sent) as u64;
        sent
    }

    fn send_arp_replies(&mut self, replies: &[ArpRepr]) {
        let count = replies.len().min(BURST);
        if count == 0 || !self.alloc_mbufs(count) {
            return;
        }
        for (i, reply) in replies[..count].iter().enumerate() {
            let frame = self.room(i);
            let eth = EthernetRepr {
                dst: reply.target_mac,
                src: self.device.mac,
                ethertype: ETHERTYPE_ARP,
            };
            let built = eth
                .emit(frame)
                .and_then(|()| reply.emit(&mut frame[ethernet::HEADER_LEN..]));
            debug_assert!(built.is_ok(), "an mbuf holds an ARP frame");
            self.lens[i] = (ethernet::HEADER_LEN + arp::PACKET_LEN) as u16;
        }
        self.transmit(count);
    }

    /// The thread driving this port becomes an EAL lcore (per-lcore mempool caches) the
    /// first time it uses the port, and the port stays with it. A thread that cannot become
    /// one still works, without the pool's per-lcore cache.
    fn register_thread_once(&mut self) {
        if self.registered {
            return;
        }
        self.registered = true;
        // SAFETY: reads the calling thread's lcore id.
        if unsafe { sys::nm_lcore_id() } != u32::MAX {
            return;
        }
        if let Err(error) = super::register_thread() {
            eprintln!("netmigrate: warning: {error}");
        }
    }

    /// Takes `count` mbufs into `self.mbufs`, their rooms into `self.data` / `self.lens`.
    fn alloc_mbufs(&mut self, count: usize) -> bool {
        // SAFETY: fills `count` slots of our arrays from the device's pool, or none.
        let rc = unsafe {
            sys::nm_alloc_frames(
                self.device.pool,
                self.mbufs.as_mut_ptr(),
                self.data.as_mut_ptr(),
                self.lens.as_mut_ptr(),
                count as u32,
            )
        };
        if rc != 0 {
            self.stats.tx_dropped += count as u64;
        }
        rc == 0
    }
}

impl Port for DpdkPort {
    fn recv(&mut self, rx: &mut Vec<Box<Packet>>, max: usize) -> io::Result<usize> {
        self.register_thread_once();
        let want = max.min(BURST) as u16;
        // SAFETY: room for `want` mbuf pointers; the driver hands us ownership of each.
        let received = usize::from(unsafe {
            sys::nm_rx_frames(
                self.device.port_id,
                self.queue,
                self.mbufs.as_mut_ptr(),
                self.data.as_mut_ptr(),
                self.lens.as_mut_ptr(),
                want,
            )
        });
        let before = rx.len();
        let mut arp_replies = Vec::new();
        for i in 0..received {
            // SAFETY: a received frame we own until freed below.
            let frame =
                unsafe { std::slice::from_raw_parts(self.data[i], usize::from(self.lens[i])) };
            self.accept(frame, rx, &mut arp_replies);
        }
        // SAFETY: ours, and every payload was copied out.
        unsafe { sys::nm_free_bulk(self.mbufs.as_mut_ptr(), received as u32) };
        self.send_arp_replies(&arp_replies);
        Ok(rx.len() - before)
    }

    fn send(&mut self, tx: &mut Vec<Box<Packet>>) -> io::Result<usize> {
        self.register_thread_once();
        let mut sent_total = 0;
        while !tx.is_empty() {
            let count = tx.len().min(BURST);
            if !self.alloc_mbufs(count) {
                for packet in tx.drain(..count) {
                    self.pool.give(packet);
                }
                continue;
            }
            // Frame `built` goes into mbuf `built`; a datagram too long for it leaves the
            // mbuf to the next one.
            let mut built = 0;
            for packet in tx.drain(..count) {
                let frame = self.room(built);
                let payload = packet.payload();
                let total = FRAME_OVERHEAD + payload.len();
                if total > frame.len() {
                    self.stats.tx_dropped += 1;
                    self.pool.give(packet);
                    continue;
                }
                frame[FRAME_OVERHEAD..total].copy_from_slice(payload);
                let from = if self.gateway { packet.src } else { self.addr };
                let (src, dst) = (*from.ip(), *packet.dst.ip());
                let udp = UdpRepr {
                    src_port: from.port(),
                    dst_port: packet.dst.port(),
                };
                let ip = Ipv4Repr {
                    src,
                    dst,
                    protocol: PROTOCOL_UDP,
                    payload_len: udp::HEADER_LEN + payload.len(),
                };
                let eth = EthernetRepr {
                    dst: self.neighbours.get(dst).unwrap_or(BROADCAST),
                    src: self.device.mac,
                    ethertype: ETHERTYPE_IPV4,
                };
                let at_ip = ethernet::HEADER_LEN;
                let at_udp = at_ip + ipv4::HEADER_LEN;
                let framed = udp
                    .emit(&mut frame[at_udp..], payload.len(), src, dst)
                    .and_then(|()| ip.emit(&mut frame[at_ip..]))
                    .and_then(|()| eth.emit(frame));
                debug_assert!(framed.is_ok(), "the frame fits the mbuf");
                self.lens[built] = total as u16;
                self.stats.tx_bytes += payload.len() as u64;
                self.pool.give(packet);
                built += 1;
            }
            if built < count {
                // SAFETY: taken above and left unused, still ours.
                unsafe {
                    sys::nm_free_bulk(self.mbufs[built..].as_mut_ptr(), (count - built) as u32)
                };
            }
            let sent = self.transmit(built);
            self.stats.tx_packets += sent as u64;
            sent_total += sent;
        }
        Ok(sent_total)
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
