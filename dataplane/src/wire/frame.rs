//! One UDP datagram in an Ethernet II / IPv4 frame (no options, no VLAN tag): the framing a
//! port that talks Ethernet (DPDK) writes around a payload already in place, so a reply can
//! be built where its request arrived.

use super::ethernet::{self, EthernetRepr, ETHERTYPE_IPV4};
use super::ipv4::{self, Ipv4Repr, PROTOCOL_UDP};
use super::udp::{self, UdpChecksum, UdpRepr};
use super::WireError;
use std::net::SocketAddrV4;

/// Bytes in front of the payload: Ethernet, IPv4 without options, UDP.
pub const FRAME_OVERHEAD: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN;

/// An IPv4/UDP frame read at fixed offsets by `parse_udp_frame`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFrame {
    pub src_mac: [u8; 6],
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// Where the UDP payload lies in the frame (from `FRAME_OVERHEAD`).
    pub payload: std::ops::Range<usize>,
}

/// The frame as an unfragmented IPv4/UDP datagram with a plain 20-byte IPv4 header and a
/// valid header checksum, read at fixed offsets: the frames ports receive nearly always.
/// None for anything else (ARP, IPv4 options, fragments, other protocols, bad lengths or
/// checksum), which the general parse (`EthernetRepr`, `Ipv4Repr`, `UdpRepr`) then reads
/// or refuses; where this one accepts a frame, the general parse reads the same fields.
/// The UDP checksum is not verified, as in `UdpRepr::parse`.
pub fn parse_udp_frame(frame: &[u8]) -> Option<UdpFrame> {
    let h: &[u8; FRAME_OVERHEAD] = frame.get(..FRAME_OVERHEAD)?.try_into().ok()?;
    let be16 = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    let at_ip = ethernet::HEADER_LEN;
    // EtherType IPv4; version 4 with a 5-word header; no more-fragments flag or offset; UDP.
    if be16(12) != ETHERTYPE_IPV4
        || h[at_ip] != 0x45
        || be16(at_ip + 6) & 0x3FFF != 0
        || h[at_ip + 9] != PROTOCOL_UDP
    {
        return None;
    }
    let ip_total = usize::from(be16(at_ip + 2));
    let udp_len = usize::from(be16(at_ip + ipv4::HEADER_LEN + 4));
    let fits = at_ip + ip_total <= frame.len()
        && udp_len >= udp::HEADER_LEN
        && ipv4::HEADER_LEN + udp_len <= ip_total;
    let ip_header = h[at_ip..at_ip + ipv4::HEADER_LEN]
        .try_into()
        .expect("20 bytes");
    if !fits || !ipv4::header_checksum_verifies(ip_header) {
        return None;
    }
    let addr = |at: usize, port_at: usize| {
        SocketAddrV4::new(
            [h[at], h[at + 1], h[at + 2], h[at + 3]].into(),
            be16(port_at),
        )
    };
    let at_udp = at_ip + ipv4::HEADER_LEN;
    Some(UdpFrame {
        src_mac: h[6..12].try_into().expect("6 bytes"),
        src: addr(at_ip + 12, at_udp),
        dst: addr(at_ip + 16, at_udp + 2),
        payload: FRAME_OVERHEAD..at_udp + udp_len,
    })
}

/// The link-layer ends of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Macs {
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

/// Writes the Ethernet, IPv4 and UDP headers, with the IPv4 checksum and the UDP one as
/// `udp_checksum` says, in front of the `payload_len` bytes at `frame[FRAME_OVERHEAD..]`,
/// and returns the frame's length.
pub fn emit_udp_frame(
    frame: &mut [u8],
    payload_len: usize,
    from: SocketAddrV4,
    to: SocketAddrV4,
    macs: Macs,
    udp_checksum: UdpChecksum,
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
    .emit(&mut frame[at_udp..], payload_len, src, dst, udp_checksum)?;
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

/// The headers last written by `FrameHeaders::emit`, copied in front of the next payload
/// that goes between the same ends with the same length, as a client's requests to one
/// server and a server's replies to one client nearly always do. Headers whose UDP checksum
/// covers the payload (`UdpChecksum::Computed`) are written anew every time.
#[derive(Debug)]
pub struct FrameHeaders {
    /// What the headers depend on, packed by `frame_ends` (`NO_ENDS` before any frame).
    ends: FrameEnds,
    headers: [u8; FRAME_OVERHEAD],
}

/// Addresses, MACs, payload length and checksum way, packed into words that compare in a
/// few instructions.
type FrameEnds = [u64; 4];

/// No frame's ends: an address word has 48 bits.
const NO_ENDS: FrameEnds = [u64::MAX; 4];

/// An IPv4 address and UDP port in one word (address << 16 | port), which moves and compares
/// as a whole: a `SocketAddrV4` stored as a 4- and a 2-byte piece and then loaded whole
/// makes the load wait for store forwarding to fail.
pub fn endpoint_word(endpoint: SocketAddrV4) -> u64 {
    (u64::from(u32::from(*endpoint.ip())) << 16) | u64::from(endpoint.port())
}

/// The endpoint of an `endpoint_word`.
pub fn word_endpoint(word: u64) -> SocketAddrV4 {
    SocketAddrV4::new(((word >> 16) as u32).into(), word as u16)
}

fn frame_ends(
    payload_len: usize,
    from: SocketAddrV4,
    to: SocketAddrV4,
    macs: Macs,
    udp_checksum: UdpChecksum,
) -> FrameEnds {
    // Built and compared in registers: a 16-byte load of words just stored in pieces
    // would wait for store forwarding to fail (it showed as the hot spot of this function).
    let mac = |m: [u8; 6]| {
        u64::from(u32::from_le_bytes([m[0], m[1], m[2], m[3]]))
            | (u64::from(u16::from_le_bytes([m[4], m[5]])) << 32)
    };
    [
        endpoint_word(from) | ((udp_checksum as u64) << 48),
        endpoint_word(to),
        mac(macs.src),
        mac(macs.dst) | ((payload_len as u64) << 48),
    ]
}

impl Default for FrameHeaders {
    fn default() -> Self {
        FrameHeaders {
            ends: NO_ENDS,
            headers: [0; FRAME_OVERHEAD],
        }
    }
}

impl FrameHeaders {
    /// As `emit_udp_frame`, with the same bytes.
    pub fn emit(
        &mut self,
        frame: &mut [u8],
        payload_len: usize,
        from: SocketAddrV4,
        to: SocketAddrV4,
        macs: Macs,
        udp_checksum: UdpChecksum,
    ) -> Result<usize, WireError> {
        if payload_len > usize::from(u16::MAX) {
            // Past an IPv4 datagram's length, as `emit_udp_frame` says too; within it the
            // length packs into `frame_ends`' 16 bits exactly.
            return Err(WireError::TooLong);
        }
        let ends = frame_ends(payload_len, from, to, macs, udp_checksum);
        let differ = ends
            .iter()
            .zip(&self.ends)
            .fold(0, |acc, (a, b)| acc | (a ^ b));
        if differ == 0 {
            let total = FRAME_OVERHEAD + payload_len;
            let frame = frame.get_mut(..total).ok_or(WireError::TooLong)?;
            frame[..FRAME_OVERHEAD].copy_from_slice(&self.headers);
            return Ok(total);
        }
        let total = emit_udp_frame(frame, payload_len, from, to, macs, udp_checksum)?;
        if udp_checksum != UdpChecksum::Computed {
            self.headers.copy_from_slice(&frame[..FRAME_OVERHEAD]);
            self.ends = ends;
        }
        Ok(total)
    }
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
            let len = emit_udp_frame(&mut frame, payload.len(), from, to, macs, UdpChecksum::Computed)
                .unwrap();
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

        /// The three ways of filling in the UDP checksum give the same frame but for that
        /// field: omitted, it is 0; offloaded, it is what a NIC completes into the checksum
        /// computed here (the pseudo-header's sum, summed on over the datagram).
        #[test]
        fn an_offloaded_checksum_completes_to_the_computed_one_and_an_omitted_one_is_zero(
            payload in proptest::collection::vec(any::<u8>(), 0..1472),
            (from_ip, to_ip) in (any::<u32>(), any::<u32>()),
            (from_port, to_port) in (any::<u16>(), any::<u16>()),
        ) {
            let from = SocketAddrV4::new(from_ip.into(), from_port);
            let to = SocketAddrV4::new(to_ip.into(), to_port);
            let macs = Macs { src: [2; 6], dst: [4; 6] };
            let frame_with = |how| {
                let mut frame = vec![0u8; FRAME_OVERHEAD + payload.len()];
                frame[FRAME_OVERHEAD..].copy_from_slice(&payload);
                emit_udp_frame(&mut frame, payload.len(), from, to, macs, how).unwrap();
                frame
            };
            let computed = frame_with(UdpChecksum::Computed);
            let at = FRAME_OVERHEAD - 2;
            let field = |frame: &[u8]| u16::from_be_bytes([frame[at], frame[at + 1]]);
            for how in [UdpChecksum::Offloaded, UdpChecksum::Omitted] {
                let frame = frame_with(how);
                prop_assert_eq!(&frame[..at], &computed[..at]);
                prop_assert_eq!(&frame[at + 2..], &computed[at + 2..]);
            }
            prop_assert_eq!(field(&frame_with(UdpChecksum::Omitted)), 0);
            // What the NIC does: the one's complement of the sum over the UDP datagram with
            // the field as it is, 0 sent as 0xFFFF.
            let offloaded = frame_with(UdpChecksum::Offloaded);
            let completed = match checksum(&offloaded[FRAME_OVERHEAD - udp::HEADER_LEN..], 0) {
                0 => 0xFFFF,
                sum => sum,
            };
            prop_assert_eq!(completed, field(&computed));
        }
    }

    proptest! {
        /// An endpoint comes back whole from its word.
        #[test]
        fn an_endpoint_word_gives_the_endpoint_back(ip in any::<u32>(), port in any::<u16>()) {
            let endpoint = SocketAddrV4::new(ip.into(), port);
            prop_assert_eq!(word_endpoint(endpoint_word(endpoint)), endpoint);
        }

        /// Frames written through the cache, to a few ends and lengths in any order, are
        /// byte for byte those `emit_udp_frame` writes.
        #[test]
        fn cached_headers_are_the_headers_emit_udp_frame_writes(
            frames in proptest::collection::vec(
                (0..3usize, 0..3usize, 0..3usize, 0..2usize, any::<u8>()),
                1..40,
            ),
        ) {
            let addr = |i: usize| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i as u8), 7100 + i as u16);
            let ways = [UdpChecksum::Omitted, UdpChecksum::Offloaded, UdpChecksum::Computed];
            let mut cache = FrameHeaders::default();
            for (to, len, how, mac, fill) in frames {
                let macs = Macs { src: [2; 6], dst: [mac as u8; 6] };
                let payload_len = 40 + 24 * len;
                let mut expected = vec![fill; 200];
                let mut cached = vec![!fill; 200];
                cached[FRAME_OVERHEAD..].copy_from_slice(&expected[FRAME_OVERHEAD..]);
                let a = emit_udp_frame(&mut expected, payload_len, addr(9), addr(to), macs, ways[how]);
                let b = cache.emit(&mut cached, payload_len, addr(9), addr(to), macs, ways[how]);
                prop_assert_eq!(a, b);
                prop_assert_eq!(&expected[..FRAME_OVERHEAD + payload_len], &cached[..FRAME_OVERHEAD + payload_len]);
            }
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
            emit_udp_frame(
                &mut frame,
                100 - FRAME_OVERHEAD + 1,
                any,
                any,
                macs,
                UdpChecksum::Computed
            ),
            Err(WireError::TooLong)
        );
        assert_eq!(
            emit_udp_frame(
                &mut frame,
                100 - FRAME_OVERHEAD,
                any,
                any,
                macs,
                UdpChecksum::Computed
            ),
            Ok(100)
        );
    }
}
