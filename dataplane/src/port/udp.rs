//! Kernel UDP backend: one non-blocking socket, batched with recvmmsg/sendmmsg so one
//! system call moves a whole burst. With an overlay (`UdpOverlay`), every datagram goes
//! through a software switch with a tunnel header (`wire::tunnel`) read and written by
//! scatter/gather, so the payload is never copied.

use super::{Packet, Pool, Port, PortStats, BUFFER_CAPACITY, BURST};
use crate::wire::tunnel::{TunnelRepr, TUNNEL_LEN};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

/// How a UDP port reaches the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpOverlay {
    /// Each datagram goes straight to its destination address.
    Direct,
    /// Each datagram goes to the software switch at this address, tunnelled with its own
    /// addresses; only tunnelled datagrams from the switch are accepted.
    Via(SocketAddrV4),
    /// This port is the software switch: it accepts tunnelled datagrams whose claimed source
    /// is their real sender, and sends each to its destination, tunnelled with its source.
    Gateway,
}

pub struct UdpPort {
    socket: UdpSocket,
    addr: SocketAddrV4,
    overlay: UdpOverlay,
    pool: Pool,
    /// Buffers posted to the next recvmmsg; those not filled stay for the call after.
    staging: Vec<Box<Packet>>,
    stats: PortStats,
}

impl UdpPort {
    /// Socket buffer size asked for; bursts of small datagrams overflow the default.
    const SOCKET_BUFFER: libc::c_int = 8 << 20;

    pub fn bind(addr: SocketAddrV4) -> io::Result<UdpPort> {
        Self::bind_with(addr, UdpOverlay::Direct)
    }

    pub fn bind_with(addr: SocketAddrV4, overlay: UdpOverlay) -> io::Result<UdpPort> {
        // The tunnel names the sender, which the switch checks against the real one, so
        // a tunnelled port needs a specific IP: behind a switch, the one routed to it.
        let addr = match overlay {
            UdpOverlay::Via(switch) if addr.ip().is_unspecified() => {
                SocketAddrV4::new(local_ip_towards(switch)?, addr.port())
            }
            UdpOverlay::Gateway if addr.ip().is_unspecified() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{addr}: the software switch needs a specific IP to listen on"),
                ))
            }
            _ => addr,
        };
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            // Best effort: the kernel caps this at net.core.{r,w}mem_max.
            set_socket_option(&socket, option, Self::SOCKET_BUFFER);
        }
        let addr = match socket.local_addr()? {
            std::net::SocketAddr::V4(v4) => v4,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{other} is not an IPv4 address"),
                ))
            }
        };
        Ok(UdpPort {
            socket,
            addr,
            overlay,
            pool: Pool::default(),
            staging: Vec::with_capacity(BURST),
            stats: PortStats::default(),
        })
    }
}

/// The addresses a tunnelled datagram of `received` bytes from `sender` claims, if they may
/// be believed: behind a switch, only the switch sends; as the switch, a sender may only
/// name itself as the source.
fn untunnel(
    overlay: UdpOverlay,
    received: usize,
    sender: SocketAddrV4,
    tunnel: &[u8; TUNNEL_LEN],
) -> Option<(SocketAddrV4, SocketAddrV4)> {
    if received < TUNNEL_LEN {
        return None;
    }
    let TunnelRepr { src, dst } = TunnelRepr::parse(tunnel);
    let believed = match overlay {
        UdpOverlay::Via(switch) => sender == switch,
        UdpOverlay::Gateway => sender == src,
        UdpOverlay::Direct => true,
    };
    believed.then_some((src, dst))
}

/// The source IP the kernel would use to reach `peer` (connecting a UDP socket sends
/// nothing).
fn local_ip_towards(peer: SocketAddrV4) -> io::Result<Ipv4Addr> {
    let probe = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    probe.connect(peer)?;
    match probe.local_addr()? {
        std::net::SocketAddr::V4(v4) => Ok(*v4.ip()),
        other => Err(io::Error::other(format!("{other} is not an IPv4 address"))),
    }
}

fn set_socket_option(socket: &UdpSocket, option: libc::c_int, value: libc::c_int) {
    // SAFETY: a valid fd, a pointer to a c_int and its size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            &value as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn to_sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut raw: libc::sockaddr_in = unsafe { zeroed() };
    raw.sin_family = libc::AF_INET as libc::sa_family_t;
    raw.sin_port = addr.port().to_be();
    raw.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    raw
}

fn from_sockaddr(raw: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr)),
        u16::from_be(raw.sin_port),
    )
}

impl Port for UdpPort {
    fn recv(&mut self, rx: &mut Vec<Box<Packet>>, max: usize) -> io::Result<usize> {
        let want = max.min(BURST);
        if want == 0 {
            return Ok(0);
        }
        while self.staging.len() < want {
            self.staging.push(self.pool.take());
        }
        let packets = &mut self.staging;
        let tunnelled = self.overlay != UdpOverlay::Direct;
        // SAFETY: plain old data, zero-initialised and then filled in below.
        let mut names: [libc::sockaddr_in; BURST] = unsafe { zeroed() };
        let mut tunnels = [[0u8; TUNNEL_LEN]; BURST];
        let mut iovecs: [[libc::iovec; 2]; BURST] = unsafe { zeroed() };
        let mut headers: [libc::mmsghdr; BURST] = unsafe { zeroed() };
        for i in 0..want {
            let payload = libc::iovec {
                iov_base: packets[i].buffer_mut().as_mut_ptr() as *mut libc::c_void,
                iov_len: BUFFER_CAPACITY,
            };
            let segments = if tunnelled {
                iovecs[i][0] = libc::iovec {
                    iov_base: tunnels[i].as_mut_ptr() as *mut libc::c_void,
                    iov_len: TUNNEL_LEN,
                };
                iovecs[i][1] = payload;
                2
            } else {
                iovecs[i][0] = payload;
                1
            };
            headers[i].msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
            headers[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            headers[i].msg_hdr.msg_iov = iovecs[i].as_mut_ptr();
            headers[i].msg_hdr.msg_iovlen = segments;
        }
        // SAFETY: every header points at live buffers of the stated sizes for the call.
        let received = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                headers.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        let received = received as usize;
        let mut accepted = 0;
        for (i, mut packet) in packets.drain(..received).enumerate() {
            let sender = from_sockaddr(&names[i]);
            let mut len = headers[i].msg_len as usize;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += len as u64;
            let addressing = if tunnelled {
                len = len.saturating_sub(TUNNEL_LEN);
                untunnel(
                    self.overlay,
                    headers[i].msg_len as usize,
                    sender,
                    &tunnels[i],
                )
            } else {
                Some((sender, self.addr))
            };
            let Some((src, dst)) = addressing else {
                self.stats.rx_rejected += 1;
                self.pool.give(packet);
                continue;
            };
            packet.set_len(len.min(BUFFER_CAPACITY));
            packet.src = src;
            packet.dst = dst;
            rx.push(packet);
            accepted += 1;
        }
        Ok(accepted)
    }

    fn send(&mut self, tx: &mut Vec<Box<Packet>>) -> io::Result<usize> {
        let mut sent_total = 0;
        while !tx.is_empty() {
            let count = tx.len().min(BURST);
            // SAFETY: plain old data, zero-initialised and then filled in below.
            let mut names: [libc::sockaddr_in; BURST] = unsafe { zeroed() };
            let mut tunnels = [[0u8; TUNNEL_LEN]; BURST];
            let mut iovecs: [[libc::iovec; 2]; BURST] = unsafe { zeroed() };
            let mut headers: [libc::mmsghdr; BURST] = unsafe { zeroed() };
            for i in 0..count {
                let packet = &tx[i];
                let payload = libc::iovec {
                    iov_base: packet.payload().as_ptr() as *mut libc::c_void,
                    iov_len: packet.len(),
                };
                let (next_hop, tunnel) = match self.overlay {
                    UdpOverlay::Direct => (packet.dst, None),
                    UdpOverlay::Via(switch) => (switch, Some(self.addr)),
                    UdpOverlay::Gateway => (packet.dst, Some(packet.src)),
                };
                names[i] = to_sockaddr(next_hop);
                let segments = match tunnel {
                    Some(src) => {
                        TunnelRepr {
                            src,
                            dst: packet.dst,
                        }
                        .emit(&mut tunnels[i]);
                        iovecs[i][0] = libc::iovec {
                            iov_base: tunnels[i].as_mut_ptr() as *mut libc::c_void,
                            iov_len: TUNNEL_LEN,
                        };
                        iovecs[i][1] = payload;
                        2
                    }
                    None => {
                        iovecs[i][0] = payload;
                        1
                    }
                };
                headers[i].msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
                headers[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                headers[i].msg_hdr.msg_iov = iovecs[i].as_mut_ptr();
                headers[i].msg_hdr.msg_iovlen = segments;
            }
            // SAFETY: every header points at live buffers of the stated sizes for the call.
            let sent = unsafe {
                libc::sendmmsg(
                    self.socket.as_raw_fd(),
                    headers.as_mut_ptr(),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            // A refused packet (full socket buffer, unreachable port) is dropped like on a
            // NIC; the protocol above retransmits.
            let sent = if sent < 0 { 0 } else { sent as usize };
            let dropped_first = sent == 0;
            let done = if dropped_first { 1 } else { sent };
            for packet in tx.drain(..done) {
                if dropped_first {
                    self.stats.tx_dropped += 1;
                } else {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += packet.len() as u64;
                }
                self.pool.give(packet);
            }
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
