//! Kernel UDP backend: one non-blocking socket, batched with recvmmsg/sendmmsg so one
//! system call moves a whole burst.

use super::{Packet, Pool, Port, PortStats, BUFFER_CAPACITY, BURST};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

pub struct UdpPort {
    socket: UdpSocket,
    addr: SocketAddrV4,
    pool: Pool,
    /// Buffers posted to the next recvmmsg; those not filled stay for the call after.
    staging: Vec<Box<Packet>>,
    stats: PortStats,
}

impl UdpPort {
    /// Socket buffer size asked for; bursts of small datagrams overflow the default.
    const SOCKET_BUFFER: libc::c_int = 8 << 20;

    pub fn bind(addr: SocketAddrV4) -> io::Result<UdpPort> {
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
            pool: Pool::default(),
            staging: Vec::with_capacity(BURST),
            stats: PortStats::default(),
        })
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
        // SAFETY: plain old data, zero-initialised and then filled in below.
        let mut names: [libc::sockaddr_in; BURST] = unsafe { zeroed() };
        let mut iovecs: [libc::iovec; BURST] = unsafe { zeroed() };
        let mut headers: [libc::mmsghdr; BURST] = unsafe { zeroed() };
        for i in 0..want {
            iovecs[i].iov_base = packets[i].buffer_mut().as_mut_ptr() as *mut libc::c_void;
            iovecs[i].iov_len = BUFFER_CAPACITY;
            headers[i].msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
            headers[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            headers[i].msg_hdr.msg_iov = &mut iovecs[i];
            headers[i].msg_hdr.msg_iovlen = 1;
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
        for (i, mut packet) in packets.drain(..received).enumerate() {
            let len = (headers[i].msg_len as usize).min(BUFFER_CAPACITY);
            packet.set_len(len);
            packet.src = from_sockaddr(&names[i]);
            packet.dst = self.addr;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += len as u64;
            rx.push(packet);
        }
        Ok(received)
    }

    fn send(&mut self, tx: &mut Vec<Box<Packet>>) -> io::Result<usize> {
        let mut sent_total = 0;
        while !tx.is_empty() {
            let count = tx.len().min(BURST);
            // SAFETY: plain old data, zero-initialised and then filled in below.
            let mut names: [libc::sockaddr_in; BURST] = unsafe { zeroed() };
            let mut iovecs: [libc::iovec; BURST] = unsafe { zeroed() };
            let mut headers: [libc::mmsghdr; BURST] = unsafe { zeroed() };
            for i in 0..count {
                names[i] = to_sockaddr(tx[i].dst);
                iovecs[i].iov_base = tx[i].payload().as_ptr() as *mut libc::c_void;
                iovecs[i].iov_len = tx[i].len();
                headers[i].msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
                headers[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                headers[i].msg_hdr.msg_iov = &mut iovecs[i];
                headers[i].msg_hdr.msg_iovlen = 1;
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
