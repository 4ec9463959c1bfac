//! Ethernet II header (14 bytes): destination MAC, source MAC, EtherType.

use super::WireError;

pub const HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const BROADCAST: [u8; 6] = [0xFF; 6];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Parses the header and returns it with the payload that follows.
    pub fn parse(frame: &[u8]) -> Result<(EthernetRepr, &[u8]), WireError> {
        if frame.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let repr = EthernetRepr {
            dst: frame[0..6].try_into().unwrap(),
            src: frame[6..12].try_into().unwrap(),
            ethertype: u16::from_be_bytes([frame[12], frame[13]]),
        };
        Ok((repr, &frame[HEADER_LEN..]))
    }

    pub fn emit(&self, frame: &mut [u8]) -> Result<(), WireError> {
        let header = frame.get_mut(..HEADER_LEN).ok_or(WireError::TooLong)?;
        header[0..6].copy_from_slice(&self.dst);
        header[6..12].copy_from_slice(&self.src);
        header[12..14].copy_from_slice(&self.ethertype.to_be_bytes());
        Ok(())
    }
}
