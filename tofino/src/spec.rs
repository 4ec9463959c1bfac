//! Constants and hash definitions shared by the software switch and the P4 program
//! (`tofino/p4/defines.p4` repeats them under the same names). Layouts: `docs/switch.md`.

use crc::{Crc, CRC_32_BZIP2, CRC_32_ISCSI, CRC_32_ISO_HDLC, CRC_32_MPEG_2};
use std::net::Ipv4Addr;

/// Migration pairs the switch tracks at once (`nm_pair` entries and register slots).
pub const MAX_PAIRS: usize = 4;
/// Source partitions (cores) per pair, each with its own control sequence.
pub const MAX_PARTITIONS: usize = 64;
/// Counting-Bloom-filter cells per array (groups in flight are few at any time).
pub const DEFAULT_CBF_CELLS: usize = 4096;
/// Bounds of the Bloom-filter size per array.
pub const MIN_BF_CELLS: usize = 1 << 10;
pub const MAX_BF_CELLS: usize = 1 << 20;
/// Hash functions (= register arrays) per filter.
pub const HASHES: usize = 4;
/// Finished migrations (source, shard, stream id) remembered, so that a late copy of one's
/// `SWITCH_INIT` does not install its pair again.
pub const RETIRED_STREAMS: usize = 64;

static CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);
static CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);
static CRC32_BZIP2: Crc<u32> = Crc::<u32>::new(&CRC_32_BZIP2);
static CRC32_MPEG2: Crc<u32> = Crc::<u32>::new(&CRC_32_MPEG_2);

/// Bloom-filter cells per array by default: 8 bits per group over the four arrays, the
/// paper's sweet spot, within the bounds above.
pub fn default_bf_cells(group_bits: u8) -> usize {
    (1usize << (u32::from(group_bits) + 1)).clamp(MIN_BF_CELLS, MAX_BF_CELLS)
}

/// The group a key hash belongs to under a pair's `size_exp` / `remain_exp`.
pub fn group_of(key_hash: u64, size_exp: u8, remain_exp: u8) -> u32 {
    let low = key_hash as u32;
    let masked = if size_exp >= 32 {
        low
    } else {
        low & ((1u32 << size_exp) - 1)
    };
    masked.checked_shr(u32::from(remain_exp)).unwrap_or(0)
}

/// The four CRC-32 values of (destination IPv4, destination shard, group).
pub fn filter_hashes(dest_ip: Ipv4Addr, dest_shard: u16, group: u32) -> [u32; HASHES] {
    let mut tuple = [0u8; 10];
    tuple[..4].copy_from_slice(&dest_ip.octets());
    tuple[4..6].copy_from_slice(&dest_shard.to_be_bytes());
    tuple[6..].copy_from_slice(&group.to_be_bytes());
    [
        CRC32C.checksum(&tuple),
        CRC32.checksum(&tuple),
        CRC32_BZIP2.checksum(&tuple),
        CRC32_MPEG2.checksum(&tuple),
    ]
}

/// Probability that a group looks "done" (all four bits set) when `set` groups have set
/// their bits in arrays of `cells` cells: (1 − e^(−set/cells))^4.
pub fn false_done_rate(set: u64, cells: usize) -> f64 {
    (1.0 - (-(set as f64) / cells as f64).exp()).powi(HASHES as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_catalogue_check_values() {
        // The standard check values of "123456789" pin each configuration.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
        assert_eq!(CRC32_BZIP2.checksum(b"123456789"), 0xFC89_1918);
        assert_eq!(CRC32_MPEG2.checksum(b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn filter_index_vectors() {
        // (10.0.0.3, shard 1, group 0x1234), computed independently (a bit-by-bit CRC in
        // Python, and zlib for CRC-32); the P4 program's hash units must give the same.
        assert_eq!(
            filter_hashes(Ipv4Addr::new(10, 0, 0, 3), 1, 0x1234),
            [0x59AA_9FEB, 0xA160_4FF4, 0x9316_B8B4, 0x6CE9_474B]
        );
    }

    #[test]
    fn group_matches_the_artifact_vectors() {
        // REFERENCE-ARTIFACT §3: size_exp 28, remain_exp 11.
        assert_eq!(group_of(0xC5FA_E977_BFC9_0C32, 28, 11), 129_313);
        assert_eq!(group_of(0x3EC7_8F44_1C7E_C54E, 28, 11), 102_360);
        assert_eq!(group_of(0xFFFF_FFFF, 32, 16), 0xFFFF);
    }

    #[test]
    fn false_done_rate_grows_with_filled_groups() {
        assert!(false_done_rate(0, 1024) == 0.0);
        let half = false_done_rate(65_536, 131_072);
        assert!((half - 0.0239).abs() < 0.001, "{half}");
    }
}
