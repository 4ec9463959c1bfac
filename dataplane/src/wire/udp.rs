//! UDP header (8 bytes) with the checksum over the IPv4 pseudo-header computed in software,
//! left to the NIC, or omitted (`UdpChecksum`).

use super::ipv4::{checksum, fold, PROTOCOL_UDP};
use super::WireError;
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

/// The one's-complement sum of the IPv4 pseudo-header a UDP checksum covers.
pub(crate) fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, udp_len: usize) -> u32 {
    let words = |ip: Ipv4Addr| {
        let o = ip.octets();
        u32::from(u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([o[2], o[3]]))
    };
    words(src) + words(dst) + u32::from(PROTOCOL_UDP) + udp_len as u32
}

/// How a sent datagram's UDP checksum is filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpChecksum {
    /// Computed here, over the pseudo-header, the header and the payload.
    Computed,
    /// Left to the NIC (transmit checksum offload): the field holds the pseudo-header's sum,
    /// which the NIC completes over the datagram.
    Offloaded,
    /// None: 0, which RFC 768 allows over IPv4. For links with no wire to corrupt a frame
    /// (memif's shared memory), as the kernel skips it on loopback.
    Omitted,
}

impl UdpChecksum {
    pub fn name(self) -> &'static str {
        match self {
            UdpChecksum::Computed => "computed",
            UdpChecksum::Offloaded => "offloaded",
            UdpChecksum::Omitted => "omitted",
        }
    }
}

impl UdpRepr {
    /// Parses the header and returns it with the payload. The checksum is not verified:
    /// senders behind checksum offload (veth) hand over datagrams whose checksum is only
    /// partial, and the Ethernet CRC already guards the frame.
    pub fn parse(datagram: &[u8]) -> Result<(UdpRepr, &[u8]), WireError> {
        if datagram.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(u16::from_be_bytes([datagram[4], datagram[5]]));
        if len < HEADER_LEN || len > datagram.len() {
            return Err(WireError::Truncated);
        }
        let repr = UdpRepr {
            src_port: u16::from_be_bytes([datagram[0], datagram[1]]),
            dst_port: u16::from_be_bytes([datagram[2], datagram[3]]),
        };
        Ok((repr, &datagram[HEADER_LEN..len]))
    }

    /// Writes the header in front of `payload_len` payload bytes already in place after it,
    /// with its checksum filled in as `how` says. The header's words enter a computed sum as
    /// values: only the payload is read back (a read of bytes just stored in smaller pieces
    /// stalls until they land).
    pub fn emit(
        &self,
        datagram: &mut [u8],
        payload_len: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        how: UdpChecksum,
    ) -> Result<(), WireError> {
        let len = HEADER_LEN + payload_len;
        let len16 = u16::try_from(len).map_err(|_| WireError::TooLong)?;
        let d = datagram.get_mut(..len).ok_or(WireError::TooLong)?;
        let sum = match how {
            UdpChecksum::Computed => {
                let header_sum =
                    u32::from(self.src_port) + u32::from(self.dst_port) + u32::from(len16);
                match checksum(
                    &d[HEADER_LEN..],
                    pseudo_header_sum(src, dst, len) + header_sum,
                ) {
                    0 => 0xFFFF, // 0 means "no checksum" in UDP
                    sum => sum,
                }
            }
            UdpChecksum::Offloaded => fold(pseudo_header_sum(src, dst, len)),
            UdpChecksum::Omitted => 0,
        };
        let mut header = [0u8; HEADER_LEN];
        header[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        header[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        header[4..6].copy_from_slice(&len16.to_be_bytes());
        header[6..8].copy_from_slice(&sum.to_be_bytes());
        d[..HEADER_LEN].copy_from_slice(&header);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::{EthernetRepr, ETHERTYPE_IPV4};
    use crate::wire::ipv4::Ipv4Repr;

    /// A frame we build parses back, and its checksums verify the way a kernel checks them.
    #[test]
    fn frame_round_trip_with_valid_checksums() {
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let payload = b"hello, netmigrate";
        let mut frame = [0u8; 128];
        let udp_at = 14 + 20;
        frame[udp_at + 8..udp_at + 8 + payload.len()].copy_from_slice(payload);
        UdpRepr {
            src_port: 5000,
            dst_port: 7100,
        }
        .emit(
            &mut frame[udp_at..],
            payload.len(),
            src,
            dst,
            UdpChecksum::Computed,
        )
        .unwrap();
        Ipv4Repr {
            src,
            dst,
            protocol: PROTOCOL_UDP,
            payload_len: 8 + payload.len(),
        }
        .emit(&mut frame[14..])
        .unwrap();
        EthernetRepr {
            dst: [2; 6],
            src: [4; 6],
            ethertype: ETHERTYPE_IPV4,
        }
        .emit(&mut frame)
        .unwrap();
        let len = udp_at + 8 + payload.len();
        let (eth, ip_packet) = EthernetRepr::parse(&frame[..len]).unwrap();
        assert_eq!(eth.ethertype, ETHERTYPE_IPV4);
        let (ip, datagram) = Ipv4Repr::parse(ip_packet).unwrap();
        assert_eq!((ip.src, ip.dst), (src, dst));
        let udp_sum = checksum(datagram, pseudo_header_sum(src, dst, datagram.len()));
        assert_eq!(udp_sum, 0, "UDP checksum verifies");
        let (udp, body) = UdpRepr::parse(datagram).unwrap();
        assert_eq!(
            (udp.src_port, udp.dst_port, body),
            (5000, 7100, &payload[..])
        );
        let mut corrupt = frame;
        corrupt[14 + 12] ^= 1;
        assert_eq!(
            Ipv4Repr::parse(&corrupt[14..len]).unwrap_err(),
            WireError::BadChecksum
        );
    }
}
