//! IPv4 header without options (20 bytes), with the header checksum computed in software
//! (virtual NICs such as veth leave checksums to the receiver's stack, which we replace).

use super::WireError;
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 20;
pub const PROTOCOL_UDP: u8 = 17;
const DEFAULT_TTL: u8 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Bytes after the IPv4 header.
    pub payload_len: usize,
}

/// The Internet checksum (RFC 1071) of `data`, starting from a partial sum (up to 20 bits,
/// such as a pseudo-header's). Summed as 64-bit words in the machine's byte order: a
/// one's-complement sum of byte-swapped words is the byte-swapped sum (RFC 1071 §2B), so one
/// swap at the end gives the big-endian sum. The words go into a 128-bit sum, one add and one
/// add-with-carry each, so no carry is lost and nothing needs vector set-up, which short
/// datagrams do not repay (`cargo bench -p dataplane --bench wire -- checksum`).
pub fn checksum(data: &[u8], sum: u32) -> u16 {
    let mut words = data.chunks_exact(8);
    let mut acc = 0u128;
    for word in &mut words {
        acc += u128::from(u64::from_ne_bytes(word.try_into().unwrap()));
    }
    // The last 0–7 bytes, each at its place in a zero-padded word (no memcpy call). Only a
    // byte's parity of place matters to a 16-bit one's-complement sum.
    let mut rest = words.remainder();
    let mut tail = 0u64;
    if let Some((word, more)) = rest.split_first_chunk::<4>() {
        tail = u64::from(u32::from_ne_bytes(*word));
        rest = more;
    }
    if let Some((pair, more)) = rest.split_first_chunk::<2>() {
        tail += u64::from(u16::from_ne_bytes(*pair)) << 32;
        rest = more;
    }
    if let [last] = rest {
        tail += u64::from(u16::from_ne_bytes([*last, 0])) << 48;
    }
    acc += u128::from(tail);
    // 128 → 64 bits with the end-around carry (the high half counts carries: small).
    let (low, carry) = (acc as u64).overflowing_add((acc >> 64) as u64);
    let folded = fold_wide(low + u64::from(carry));
    // The folded sum's bytes in memory order are the big-endian sum's.
    !fold(u32::from(u16::from_be_bytes(folded.to_ne_bytes())) + sum)
}

/// Whether a 20-byte header's checksum verifies (the same as `checksum(header, 0) == 0`),
/// in five word loads: every received frame is checked, and the general loop's set-up
/// costs more than the sum here.
pub fn header_checksum_verifies(header: &[u8; HEADER_LEN]) -> bool {
    let word = |at: usize| u64::from(u32::from_ne_bytes(header[at..at + 4].try_into().unwrap()));
    // All ones is all ones in either byte order.
    fold_wide(word(0) + word(4) + word(8) + word(12) + word(16)) == 0xFFFF
}

impl Ipv4Repr {
    /// Parses a header (options are skipped) and returns it with its payload. Fragments and
    /// bad header checksums are rejected.
    pub fn parse(packet: &[u8]) -> Result<(Ipv4Repr, &[u8]), WireError> {
        if packet.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if packet[0] >> 4 != 4 {
            return Err(WireError::BadVersion(packet[0] >> 4));
        }
        let header_len = usize::from(packet[0] & 0x0F) * 4;
        let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        if header_len < HEADER_LEN || total_len < header_len || packet.len() < total_len {
            return Err(WireError::Truncated);
        }
        let fragment = u16::from_be_bytes([packet[6], packet[7]]);
        if fragment & 0x3FFF != 0 {
            return Err(WireError::UnexpectedOp(packet[9])); // more-fragments or an offset
        }
        let verifies = match packet[..header_len].try_into() {
            Ok(plain) => header_checksum_verifies(plain),
            Err(_) => checksum(&packet[..header_len], 0) == 0, // with options
        };
        if !verifies {
            return Err(WireError::BadChecksum);
        }
        let ip =
            |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
        let repr = Ipv4Repr {
            src: ip(12),
            dst: ip(16),
            protocol: packet[9],
            payload_len: total_len - header_len,
        };
        Ok((repr, &packet[header_len..total_len]))
    }

    /// Writes a 20-byte header. The checksum is summed from the fields' values, not read
    /// back from the bytes just written.
    pub fn emit(&self, packet: &mut [u8]) -> Result<(), WireError> {
        const VERSION_IHL_TOS: u16 = 0x4500;
        const DONT_FRAGMENT: u16 = 0x4000;
        let total = u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| WireError::TooLong)?;
        let h = packet.get_mut(..HEADER_LEN).ok_or(WireError::TooLong)?;
        let ttl_protocol = u16::from_be_bytes([DEFAULT_TTL, self.protocol]);
        let (src, dst) = (u32::from(self.src), u32::from(self.dst));
        let words = u32::from(VERSION_IHL_TOS)
            + u32::from(total)
            + u32::from(DONT_FRAGMENT)
            + u32::from(ttl_protocol)
            + (src >> 16)
            + (src & 0xFFFF)
            + (dst >> 16)
            + (dst & 0xFFFF);
        let sum = !fold(words);
        let mut header = [0u8; HEADER_LEN];
        header[0..2].copy_from_slice(&VERSION_IHL_TOS.to_be_bytes());
        header[2..4].copy_from_slice(&total.to_be_bytes());
        // Identification 0 (bytes 4..6): never fragmented.
        header[6..8].copy_from_slice(&DONT_FRAGMENT.to_be_bytes());
        header[8..10].copy_from_slice(&ttl_protocol.to_be_bytes());
        header[10..12].copy_from_slice(&sum.to_be_bytes());
        header[12..16].copy_from_slice(&self.src.octets());
        header[16..20].copy_from_slice(&self.dst.octets());
        h.copy_from_slice(&header);
        Ok(())
    }
}

/// A 64-bit one's-complement sum folded to 16 bits.
fn fold_wide(sum: u64) -> u16 {
    let sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    let sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    fold(sum as u32)
}

/// A one's-complement sum folded to 16 bits.
pub(crate) fn fold(mut sum: u32) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 as written: 16-bit words, end-around carry.
    fn reference(data: &[u8], start: u32) -> u16 {
        let mut sum = u64::from(start);
        for pair in data.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u64::from(word);
        }
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// Two all-ones words and a one: the 128-bit sum's halves overflow when added, the
    /// one carry random data practically never makes.
    #[test]
    fn the_end_around_carry_of_the_wide_sum_is_kept() {
        for extra in 0..8 {
            let mut data = vec![0xFF; 16];
            data.extend_from_slice(&1u64.to_ne_bytes());
            data.extend(std::iter::repeat_n(0xFF, extra));
            for start in [0, 1, 0xF_FFFF] {
                assert_eq!(
                    checksum(&data, start),
                    reference(&data, start),
                    "{extra} {start}"
                );
            }
        }
    }

    proptest! {
        /// The 20-byte check agrees with the general checksum, on random headers and on
        /// headers made valid.
        #[test]
        fn the_plain_header_check_agrees_with_the_checksum(mut header: [u8; HEADER_LEN], fix: bool) {
            if fix {
                header[10..12].fill(0);
                let sum = checksum(&header, 0);
                header[10..12].copy_from_slice(&sum.to_be_bytes());
            }
            prop_assert_eq!(header_checksum_verifies(&header), checksum(&header, 0) == 0);
            if fix {
                prop_assert!(header_checksum_verifies(&header));
            }
        }

        #[test]
        fn agrees_with_rfc_1071(
            data in proptest::collection::vec(any::<u8>(), 0..1600),
            start in 0u32..=0xF_FFFF,
        ) {
            prop_assert_eq!(checksum(&data, start), reference(&data, start));
        }

        /// Bytes near 0xFF make word adds carry out, near the sum's edge cases.
        #[test]
        fn agrees_with_rfc_1071_when_every_add_carries(
            data in proptest::collection::vec(prop_oneof![Just(0xFFu8), Just(0xFE), any::<u8>()], 0..1600),
            start in 0u32..=0xF_FFFF,
        ) {
            prop_assert_eq!(checksum(&data, start), reference(&data, start));
        }
    }

    #[test]
    fn all_ones_data_sums_to_zero_complement() {
        // 0xFFFF words: the sum stays 0xFFFF (negative zero), its complement 0.
        assert_eq!(checksum(&[0xFF; 64], 0), 0);
        assert_eq!(checksum(&[], 0), 0xFFFF);
        // A start sum above 16 bits folds its carry back in.
        assert_eq!(checksum(&[], 0x1_0000), 0xFFFE);
    }
}
