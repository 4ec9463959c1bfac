//! One UDP datagram in an Ethernet II / IPv4 frame (no options, no VLAN tag): the framing a
//! port that talks Ethernet (DPDK) writes around a payload already in place, so a reply can
//! be built where its request arrived.

use super::ethernet::{self, EthernetRepr, ETHERTYPE_IPV4};
use super::ipv4::{self, Ipv4Repr, PROTOCOL_UDP};
use super::udp::{self, UdpRepr};
use super::WireError;
use std::net::SocketAddrV4;

/// Bytes in front of the payload: Ethernet, IPv4 without options, UDP.
pub const FRAME_OVERHEAD: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN;

/// The link-layer ends of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Macs {
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

/// Writes the Ethernet, IPv4 and UDP headers, with both checksums, in front of the
/// `payload_len` bytes at `frame[FRAME_OVERHEAD..]`, and returns the frame's length.
pub fn emit_udp_frame(
    frame: &mut [u8],
    payload_len: usize,
    from: SocketAddrV4,
    to: SocketAddrV4,
    macs: Macs,
) -> Result<usize, WireError> {
    let total = FRAME_OVERHEAD + payload_len;
    let frame = frame.get_mut(..total).ok_or(WireError::TooLong)?;
    let (src, dst) = (*from.ip(), *to.ip());
    let at_ip = ethernet::HEADER_LEN;
    let at_udp = at_ip + ipv4::HEADER_LEN;
    UdpRepr {
        src_port: from.port(),
        dst_port: to.port(),
    }
    .emit(&mut frame[at_udp..], payload_len, src, dst)?;
    Ipv4Repr {
        src,
        dst,
        protocol: PROTOCOL_UDP,
        payload_len: udp::HEADER_LEN + payload_len,
    }
    .emit(&mut frame[at_ip..])?;
    EthernetRepr {
        dst: macs.dst,
        src: macs.src,
        ethertype: ETHERTYPE_IPV4,
    }
    .emit(frame)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::checksum;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// The UDP checksum of a received datagram verifies, as the receiving kernel checks it.
    fn udp_checksum_verifies(ip: &Ipv4Repr, datagram: &[u8]) -> bool {
        checksum(
            datagram,
            udp::pseudo_header_sum(ip.src, ip.dst, datagram.len()),
        ) == 0
    }

    proptest! {
        /// A frame written over an older one (a request answered in place) parses back to
        /// exactly the addresses and payload asked for, with checksums a kernel accepts.
        #[test]
        fn a_frame_parses_back_with_valid_checksums(
            stale in proptest::collection::vec(any::<u8>(), 1600),
            payload in proptest::collection::vec(any::<u8>(), 0..1472),
            (from_ip, to_ip) in (any::<u32>(), any::<u32>()),
            (from_port, to_port) in (any::<u16>(), any::<u16>()),
            (src_mac, dst_mac) in (any::<[u8; 6]>(), any::<[u8; 6]>()),
        ) {
            let mut frame = stale;
            frame[FRAME_OVERHEAD..FRAME_OVERHEAD + payload.len()].copy_from_slice(&payload);
            let from = SocketAddrV4::new(from_ip.into(), from_port);
            let to = SocketAddrV4::new(to_ip.into(), to_port);
            let macs = Macs { src: src_mac, dst: dst_mac };
            let len = emit_udp_frame(&mut frame, payload.len(), from, to, macs).unwrap();
            prop_assert_eq!(len, FRAME_OVERHEAD + payload.len());

            let (eth, packet) = EthernetRepr::parse(&frame[..len]).unwrap();
            prop_assert_eq!((eth.src, eth.dst, eth.ethertype), (src_mac, dst_mac, ETHERTYPE_IPV4));
            let (ip, datagram) = Ipv4Repr::parse(packet).unwrap();
            prop_assert_eq!((ip.src, ip.dst, ip.protocol), (*from.ip(), *to.ip(), PROTOCOL_UDP));
            prop_assert!(udp_checksum_verifies(&ip, datagram));
            let (udp, body) = UdpRepr::parse(datagram).unwrap();
            prop_assert_eq!((udp.src_port, udp.dst_port), (from_port, to_port));
            prop_assert_eq!(body, &payload[..]);
        }
    }

    #[test]
    fn a_frame_longer_than_its_buffer_is_refused() {
        let mut frame = [0u8; 100];
        let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        let macs = Macs {
            src: [0; 6],
            dst: [0; 6],
        };
        assert_eq!(
            emit_udp_frame(&mut frame, 100 - FRAME_OVERHEAD + 1, any, any, macs),
            Err(WireError::TooLong)
        );
        assert_eq!(
            emit_udp_frame(&mut frame, 100 - FRAME_OVERHEAD, any, any, macs),
            Ok(100)
        );
    }
}
