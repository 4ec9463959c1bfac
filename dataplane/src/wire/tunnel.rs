//! The kernel-UDP overlay's tunnel header (12 bytes). On loopback a software switch is not
//! on the path between hosts, so ports that use one send every datagram to it, prefixed with
//! the IPv4/UDP addresses the datagram would carry on a real network; the switch sends it on
//! with the same prefix. Layout (big-endian): source IPv4, source port, destination IPv4,
//! destination port. See `docs/wire.md` § "Kernel-UDP overlay".

use std::net::{Ipv4Addr, SocketAddrV4};

pub const TUNNEL_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelRepr {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

impl TunnelRepr {
    /// Every 12 bytes are some pair of addresses; the port checks them against the sender.
    pub fn parse(bytes: &[u8; TUNNEL_LEN]) -> TunnelRepr {
        let addr = |b: &[u8]| {
            SocketAddrV4::new(
                Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                u16::from_be_bytes([b[4], b[5]]),
            )
        };
        TunnelRepr {
            src: addr(&bytes[..6]),
            dst: addr(&bytes[6..]),
        }
    }

    pub fn emit(&self, out: &mut [u8; TUNNEL_LEN]) {
        for (half, addr) in out.chunks_exact_mut(6).zip([self.src, self.dst]) {
            half[..4].copy_from_slice(&addr.ip().octets());
            half[4..].copy_from_slice(&addr.port().to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_vector() {
        let repr = TunnelRepr {
            src: "127.0.0.1:20000".parse().unwrap(),
            dst: "127.0.0.2:7101".parse().unwrap(),
        };
        let mut bytes = [0u8; TUNNEL_LEN];
        repr.emit(&mut bytes);
        assert_eq!(
            bytes,
            [127, 0, 0, 1, 0x4E, 0x20, 127, 0, 0, 2, 0x1B, 0xBD],
            "docs/wire.md's vector"
        );
        assert_eq!(TunnelRepr::parse(&bytes), repr);
    }
}
