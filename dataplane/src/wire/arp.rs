//! ARP for IPv4 over Ethernet (28 bytes), enough to answer "who has" for our address and to
//! learn who asked.

use super::WireError;
use std::net::Ipv4Addr;

pub const PACKET_LEN: usize = 28;
pub const REQUEST: u16 = 1;
pub const REPLY: u16 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    pub fn parse(packet: &[u8]) -> Result<ArpRepr, WireError> {
        if packet.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        // Hardware Ethernet (1), protocol IPv4, address lengths 6 and 4.
        if packet[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
            return Err(WireError::UnexpectedOp(packet[7]));
        }
        let ip =
            |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
        Ok(ArpRepr {
            operation: u16::from_be_bytes([packet[6], packet[7]]),
            sender_mac: packet[8..14].try_into().unwrap(),
            sender_ip: ip(14),
            target_mac: packet[18..24].try_into().unwrap(),
            target_ip: ip(24),
        })
    }

    pub fn emit(&self, packet: &mut [u8]) -> Result<(), WireError> {
        let p = packet.get_mut(..PACKET_LEN).ok_or(WireError::TooLong)?;
        p[0..6].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
        p[6..8].copy_from_slice(&self.operation.to_be_bytes());
        p[8..14].copy_from_slice(&self.sender_mac);
        p[14..18].copy_from_slice(&self.sender_ip.octets());
        p[18..24].copy_from_slice(&self.target_mac);
        p[24..28].copy_from_slice(&self.target_ip.octets());
        Ok(())
    }
}
