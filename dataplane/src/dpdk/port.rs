//! A `Port` on one queue pair of a DPDK device. Received frames are parsed (Ethernet, ARP,
//! IPv4, UDP); a datagram answered in place (`recv_answering`) goes back out in the mbuf it
//! came in, with its headers turned around, and any other has its payload copied into the
//! port's recycled buffers. Sent datagrams are framed into mbufs taken from the device's
//! pool in bulk. No heap allocation per packet.

use super::device::DpdkDevice;
use super::sys;
use crate::neighbours::Neighbours;
use crate::port::{AnswerInPlace, Packet, Pool, PortStats, Received, BURST};
use crate::wire::arp::{self, ArpRepr};
use crate::wire::ethernet::{self, EthernetRepr, BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::frame::{
    endpoint_word, parse_udp_frame, word_endpoint, FrameHeaders, Macs, FRAME_OVERHEAD,
};
use crate::wire::ipv4::{Ipv4Repr, PROTOCOL_UDP};
use crate::wire::udp::{UdpChecksum, UdpRepr};
use crate::Port;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

/// A received datagram for this port: where its payload lies in its frame, and its sender.
#[derive(Clone, Copy)]
struct Arrival {
    at: usize,
    len: usize,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    src_mac: [u8; 6],
}

pub struct DpdkPort {
    device: Arc<DpdkDevice>,
    queue: u16,
    addr: SocketAddrV4,
    /// MAC addresses learned from ARP and from received datagrams.
    neighbours: Neighbours,
    pool: Pool,
    /// A burst's mbufs, with each one's data pointer and its length (received) or room
    /// (taken to send), filled by the shim in one call per burst. Before a transmit, the
    /// first entries of `mbufs` and `lens` are the frames to send and their lengths.
    mbufs: [*mut sys::rte_mbuf; BURST],
    data: [*mut u8; BURST],
    lens: [u16; BURST],
    /// Received mbufs' rooms (data offset to the end of the buffer; 0 if the mbuf may not
    /// be written and sent back: chained, indirect or shared).
    rooms: [u16; BURST],
    /// Received mbufs not sent back in place, to free.
    unsent: [*mut sys::rte_mbuf; BURST],
    /// Received mbufs kept to send from (`spare[..spare_len]`, last kept on top): a frame
    /// goes out in an mbuf that has just come in, still in the cache, and neither takes a
    /// round trip through the pool.
    spare: [*mut sys::rte_mbuf; SPARE],
    spare_len: usize,
    /// The headers of the last frame sent, for the next one between the same ends.
    headers: FrameHeaders,
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

/// Received mbufs a port keeps to send from: two bursts, a burst of replies and a burst of
/// requests in flight.
const SPARE: usize = 2 * BURST;

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
            rooms: [0; BURST],
            unsent: [std::ptr::null_mut(); BURST],
            spare: [std::ptr::null_mut(); SPARE],
            spare_len: 0,
            headers: FrameHeaders::default(),
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
        let mut port = DpdkPort::new(device, queue, addr);
        port.gateway = true;
        port
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

    /// Handles one received frame: a datagram for us is returned, an ARP request for our
    /// address is answered, anything else is counted and dropped.
    fn accept(&mut self, frame: &[u8], arp_replies: &mut Vec<ArpRepr>) -> Option<Arrival> {
        // Nearly every frame: a datagram for this host's port, read at fixed offsets.
        // Anything else takes the general parse below, which also counts what it drops.
        if !self.gateway {
            if let Some(udp) = parse_udp_frame(frame) {
                let ours = udp.dst == self.addr
                    && udp.payload.len() <= crate::port::BUFFER_CAPACITY
                    && !self.own_macs.contains(&udp.src_mac);
                if ours {
                    return Some(self.arrived(udp.src_mac, udp.src, udp.dst, udp.payload));
                }
            }
        }
        let Ok((eth, payload)) = EthernetRepr::parse(frame) else {
            self.rx_ignored += 1;
            return None;
        };
        if self.own_macs.contains(&eth.src) {
            self.rx_ignored += 1;
            return None;
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
                    return None;
                };
                let Ok((udp, body)) = UdpRepr::parse(datagram) else {
                    self.rx_ignored += 1;
                    return None;
                };
                let for_us = self.gateway || udp.dst_port == self.addr.port();
                if !for_us || body.len() > crate::port::BUFFER_CAPACITY {
                    self.rx_ignored += 1;
                    return None;
                }
                let at = body.as_ptr() as usize - frame.as_ptr() as usize;
                let src = SocketAddrV4::new(ip.src, udp.src_port);
                let dst = SocketAddrV4::new(ip.dst, udp.dst_port);
                return Some(self.arrived(eth.src, src, dst, at..at + body.len()));
            }
            _ => self.rx_ignored += 1,
        }
        None
    }

    /// A datagram for this port arrived: its sender's MAC address is learned and it is
    /// counted.
    fn arrived(
        &mut self,
        src_mac: [u8; 6],
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: std::ops::Range<usize>,
    ) -> Arrival {
        self.neighbours.learn(*src.ip(), src_mac);
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += payload.len() as u64;
        Arrival {
            at: payload.start,
            len: payload.len(),
            src,
            dst,
            src_mac,
        }
    }

    /// Copies an arrived datagram's payload into a buffer of the pool and appends it to `rx`.
    fn queue_copy(&mut self, frame: &[u8], arrival: &Arrival, rx: &mut Vec<Box<Packet>>) {
        let mut packet = self.pool.take();
        let body = &frame[arrival.at..arrival.at + arrival.len];
        packet.buffer_mut()[..body.len()].copy_from_slice(body);
        packet.set_len(body.len());
        packet.src = arrival.src;
        packet.dst = arrival.dst;
        rx.push(packet);
    }

    /// Offers received frame `i`'s datagram to `answerer` in its mbuf and returns the
    /// length of the reply written over it, if answered. Only frames whose payload lies
    /// right after plain headers (no IPv4 options) in one-segment mbufs qualify.
    fn answer_in_place(
        &mut self,
        i: usize,
        arrival: &Arrival,
        answerer: &mut dyn AnswerInPlace,
    ) -> Option<usize> {
        let room = usize::from(self.rooms[i]);
        if arrival.at != FRAME_OVERHEAD || room < FRAME_OVERHEAD {
            return None;
        }
        // SAFETY: a received one-segment mbuf we own; `room` bytes from `data[i]` lie in its
        // buffer, and the payload slices given to `prepare` are no longer used.
        let frame = unsafe { std::slice::from_raw_parts_mut(self.data[i], room) };
        answerer.answer(arrival.len, &mut frame[FRAME_OVERHEAD..])
    }

    /// Turns received frame `i`, answered in place with `reply_len` bytes, into the reply's
    /// frame (back to the sender, from the address it wrote to) and returns its length.
    fn frame_reply(&mut self, i: usize, arrival: &Arrival, reply_len: usize) -> Option<u16> {
        // SAFETY: as in `answer_in_place`, which checked the room.
        let frame =
            unsafe { std::slice::from_raw_parts_mut(self.data[i], usize::from(self.rooms[i])) };
        let macs = Macs {
            src: self.device.mac,
            dst: arrival.src_mac,
        };
        let how = self.device.udp_checksum;
        let framed = self
            .headers
            .emit(frame, reply_len, arrival.dst, arrival.src, macs, how);
        debug_assert!(framed.is_ok(), "a reply within the room frames in it");
        self.stats.tx_bytes += reply_len as u64;
        framed.ok().map(|len| len as u16)
    }

    /// Sends the frames built in `self.mbufs[..count]`, each `self.lens[i]` bytes long (the
    /// shim frees what the queue refuses). `datagrams`: they are all IPv4/UDP frames, whose
    /// UDP checksum the NIC completes if the device offloads it.
    fn transmit(&mut self, count: usize, datagrams: bool) -> usize {
        let udp_offload = datagrams && self.device.udp_checksum == UdpChecksum::Offloaded;
        // SAFETY: the first `count` mbufs are ours and hold complete frames of those lengths.
        let sent = usize::from(unsafe {
            sys::nm_tx_frames(
                self.device.port_id,
                self.queue,
                self.mbufs.as_mut_ptr(),
                self.lens.as_ptr(),
                count as u16,
                i32::from(udp_offload),
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
        self.transmit(count, false);
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

    /// Receives up to `max` frames (at most a burst) into `mbufs`, `data`, `lens`, `rooms`.
    fn rx_burst(&mut self, max: usize) -> usize {
        self.register_thread_once();
        let want = max.min(BURST) as u16;
        // SAFETY: room for `want` mbufs in each array; the driver hands us ownership of each.
        usize::from(unsafe {
            sys::nm_rx_frames(
                self.device.port_id,
                self.queue,
                self.mbufs.as_mut_ptr(),
                self.data.as_mut_ptr(),
                self.lens.as_mut_ptr(),
                self.rooms.as_mut_ptr(),
                want,
            )
        })
    }

    /// Received frame `i`. It lives in the mbuf, not in `self`.
    fn frame<'m>(&self, i: usize) -> &'m [u8] {
        // SAFETY: a received mbuf we own until it is freed or sent; `lens[i]` bytes from
        // `data[i]` are its frame.
        unsafe { std::slice::from_raw_parts(self.data[i], usize::from(self.lens[i])) }
    }

    /// Keeps received mbuf `i` to send from, if it may be written and sent (it has a room)
    /// and the spare stack has room; false if it is to be freed.
    fn keep(&mut self, i: usize) -> bool {
        if self.rooms[i] == 0 || self.spare_len == SPARE {
            return false;
        }
        self.spare[self.spare_len] = self.mbufs[i];
        self.spare_len += 1;
        true
    }

    /// Takes `count` mbufs into `self.mbufs`, their rooms into `self.data` / `self.lens`:
    /// kept ones first, then the device's pool; all or none.
    fn alloc_mbufs(&mut self, count: usize) -> bool {
        let reused = count.min(self.spare_len);
        let from = self.spare_len - reused;
        self.mbufs[..reused].copy_from_slice(&self.spare[from..self.spare_len]);
        self.spare_len = from;
        // SAFETY: kept mbufs are ours, direct, in one segment and referenced by nothing else
        // (`keep`); the pool fills the next `count - reused` slots of our arrays, or none.
        let rc = unsafe {
            sys::nm_reuse_frames(
                self.mbufs.as_mut_ptr(),
                self.data.as_mut_ptr(),
                self.lens.as_mut_ptr(),
                reused as u32,
            );
            if reused == count {
                0
            } else {
                sys::nm_alloc_frames(
                    self.device.pool,
                    self.mbufs[reused..].as_mut_ptr(),
                    self.data[reused..].as_mut_ptr(),
                    self.lens[reused..].as_mut_ptr(),
                    (count - reused) as u32,
                )
            }
        };
        if rc != 0 {
            // The kept mbufs, made fresh, still lie above `spare_len`.
            self.spare_len = from + reused;
            self.stats.tx_dropped += count as u64;
        }
        rc == 0
    }
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        // SAFETY: kept mbufs are ours; the device (and its pool) outlives this port.
        unsafe { sys::nm_free_bulk(self.spare.as_mut_ptr(), self.spare_len as u32) };
    }
}

impl Port for DpdkPort {
    fn recv(&mut self, rx: &mut Vec<Box<Packet>>, max: usize) -> io::Result<usize> {
        let received = self.rx_burst(max);
        let before = rx.len();
        let mut arp_replies = Vec::new();
        let mut unsent = 0;
        for i in 0..received {
            let frame = self.frame(i);
            if let Some(arrival) = self.accept(frame, &mut arp_replies) {
                self.queue_copy(frame, &arrival, rx);
            }
            if !self.keep(i) {
                self.unsent[unsent] = self.mbufs[i];
                unsent += 1;
            }
        }
        // SAFETY: ours, and every payload was copied out.
        unsafe { sys::nm_free_bulk(self.unsent.as_mut_ptr(), unsent as u32) };
        self.send_arp_replies(&arp_replies);
        Ok(rx.len() - before)
    }

    fn recv_answering(
        &mut self,
        rx: &mut Vec<Box<Packet>>,
        max: usize,
        answerer: &mut dyn AnswerInPlace,
    ) -> io::Result<Received> {
        if self.gateway {
            // A switch host forwards datagrams; it answers none.
            let queued = self.recv(rx, max)?;
            return Ok(Received {
                queued,
                answered: 0,
            });
        }
        let received = self.rx_burst(max);
        if received == 0 {
            return Ok(Received::default());
        }
        let mut arp_replies = Vec::new();
        let mut arrivals = [None; BURST];
        let mut payloads: [&[u8]; BURST] = [&[]; BURST];
        let mut datagrams = 0;
        for (i, arrival) in arrivals.iter_mut().enumerate().take(received) {
            let frame = self.frame(i);
            *arrival = self.accept(frame, &mut arp_replies);
            if let Some(a) = arrival {
                payloads[datagrams] = &frame[a.at..a.at + a.len];
                datagrams += 1;
            }
        }
        answerer.prepare(&payloads[..datagrams]);
        // Every reply is written before any is framed: checksumming a payload right after
        // writing it would wait for its stores to land. Mbufs not answered go to `unsent`.
        let mut replies = [(0, 0); BURST];
        let (mut answered, mut unsent) = (0, 0);
        for (i, arrival) in arrivals.iter().enumerate().take(received) {
            if let Some(arrival) = arrival {
                if let Some(reply_len) = self.answer_in_place(i, arrival, answerer) {
                    replies[answered] = (i, reply_len);
                    answered += 1;
                    continue;
                }
                self.queue_copy(self.frame(i), arrival, rx);
            }
            if !self.keep(i) {
                self.unsent[unsent] = self.mbufs[i];
                unsent += 1;
            }
        }
        // Framed replies move to the front of `mbufs`; one that failed to frame (cannot
        // happen within the room) is dropped rather than sent empty.
        let mut ready = 0;
        for &(i, reply_len) in &replies[..answered] {
            let mbuf = self.mbufs[i];
            match arrivals[i].and_then(|a| self.frame_reply(i, &a, reply_len)) {
                Some(len) => {
                    self.mbufs[ready] = mbuf;
                    self.lens[ready] = len;
                    ready += 1;
                }
                None => {
                    self.stats.tx_dropped += 1;
                    self.unsent[unsent] = mbuf;
                    unsent += 1;
                }
            }
        }
        // SAFETY: ours, neither sent nor kept, and every payload left to `rx` was copied out.
        unsafe { sys::nm_free_bulk(self.unsent.as_mut_ptr(), unsent as u32) };
        if ready > 0 {
            let sent = self.transmit(ready, true);
            self.stats.tx_packets += sent as u64;
        }
        self.send_arp_replies(&arp_replies);
        Ok(Received {
            queued: datagrams - answered,
            answered,
        })
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
            // Datagram `built` goes into mbuf `built`; one too long for it leaves the mbuf to
            // the next. All are copied before any is framed: checksumming a payload right
            // after copying it would wait for the copy's stores to land.
            // Per datagram: its ends as `endpoint_word`s and its payload's length.
            let mut ends = [(0, 0, 0); BURST];
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
                ends[built] = (
                    endpoint_word(from),
                    endpoint_word(packet.dst),
                    payload.len(),
                );
                self.pool.give(packet);
                built += 1;
            }
            for (k, &(from, to, payload_len)) in ends[..built].iter().enumerate() {
                let (from, to) = (word_endpoint(from), word_endpoint(to));
                let macs = Macs {
                    src: self.device.mac,
                    dst: self.neighbours.get(*to.ip()).unwrap_or(BROADCAST),
                };
                let how = self.device.udp_checksum;
                let framed = self
                    .headers
                    .emit(self.room(k), payload_len, from, to, macs, how);
                debug_assert!(framed.is_ok(), "the frame fits the mbuf");
                self.lens[k] = (FRAME_OVERHEAD + payload_len) as u16;
                self.stats.tx_bytes += payload_len as u64;
            }
            if built < count {
                // SAFETY: taken above and left unused, still ours.
                unsafe {
                    sys::nm_free_bulk(self.mbufs[built..].as_mut_ptr(), (count - built) as u32)
                };
            }
            let sent = self.transmit(built, true);
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
