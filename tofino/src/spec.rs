//! Constants and hash definitions shared by the software switch and the P4 program
//! (`tofino/p4/defines.p4` repeats them under the same names). Layouts: `docs/switch.md`.

use crc::{Crc, CRC_32_AIXM, CRC_32_BZIP2, CRC_32_ISCSI, CRC_32_ISO_HDLC};
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
/// A counting-filter cell at this value is saturated: more groups than it can count were
/// in flight on it at once. It is never decremented again (until the pair's registers are
/// cleared), so it can cause false "in flight" decisions but never a false "not in flight".
pub const CBF_SATURATED: u8 = u8::MAX;
/// Finished migrations (source, shard, stream id) remembered, so that a late copy of one's
/// `SWITCH_INIT` does not install its pair again.
pub const RETIRED_STREAMS: usize = 64;

// The four hashes, index_1..index_4 of docs/switch.md. No two may be affine images of
// each other (CRC-32/MPEG-2, which was index_4, is CRC-32/BZIP2 XOR 0xFFFFFFFF and gave
// the filters three hashes, not four); see `tests` below.
static CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);
static CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);
static CRC32_BZIP2: Crc<u32> = Crc::<u32>::new(&CRC_32_BZIP2);
/// CRC-32Q (the catalogue's CRC-32/AIXM; Tofino's predefined `crc_32q`).
static CRC32Q: Crc<u32> = Crc::<u32>::new(&CRC_32_AIXM);

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
        CRC32Q.checksum(&tuple),
    ]
}

/// `SWITCH_GROUP_START` on a counting-filter cell: the new value, and whether this
/// increment saturated the cell. A saturated cell stays saturated.
pub fn cbf_increment(cell: u8) -> (u8, bool) {
    match cell {
        CBF_SATURATED => (cell, false),
        _ => (cell + 1, cell + 1 == CBF_SATURATED),
    }
}

/// `SWITCH_GROUP_COMPLETE` on a counting-filter cell: one less, except that an empty cell
/// stays 0 and a saturated one stays saturated. Its count of groups in flight was lost
/// when it saturated, so counting down from it could reach 0 while a group on it is still
/// in flight: a false negative, which would send that group's reads to the source only.
pub fn cbf_decrement(cell: u8) -> u8 {
    match cell {
        0 | CBF_SATURATED => cell,
        _ => cell - 1,
    }
}

/// Probability that a group looks "done" (all four bits set) when `set` groups have set
/// their bits in arrays of `cells` cells: (1 − e^(−set/cells))^4, for four independent
/// hashes (`tests/pipeline.rs` measures it).
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
        assert_eq!(CRC32Q.checksum(b"123456789"), 0x3010_BF7F);
        // CRC-32Q as docs/switch.md, the P4 program and Tofino's `crc_32q` define it.
        let q = &CRC_32_AIXM;
        assert_eq!(
            (q.poly, q.init, q.refin, q.refout, q.xorout, q.check),
            (0x8141_41AB, 0, false, false, 0, 0x3010_BF7F)
        );
    }

    #[test]
    fn filter_index_vectors() {
        // (10.0.0.3, shard 1, group 0x1234), computed independently (a bit-by-bit CRC in
        // Python, and zlib for CRC-32); the P4 program's hash units must give the same.
        assert_eq!(
            filter_hashes(Ipv4Addr::new(10, 0, 0, 3), 1, 0x1234),
            [0x59AA_9FEB, 0xA160_4FF4, 0x9316_B8B4, 0x69CB_7429]
        );
    }

    #[test]
    fn counting_cells_saturate_and_then_stay() {
        for cell in 0..=u8::MAX {
            let (up, saturated) = cbf_increment(cell);
            assert_eq!(up, cell.saturating_add(1), "{cell}");
            assert_eq!(saturated, cell == CBF_SATURATED - 1, "{cell}");
            let down = cbf_decrement(cell);
            let want = if cell == CBF_SATURATED {
                cell
            } else {
                cell.saturating_sub(1)
            };
            assert_eq!(down, want, "{cell}");
        }
    }

    /// A small deterministic generator (SplitMix64), so the tests below never flake.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn random_tuple(rng: &mut u64) -> (Ipv4Addr, u16, u32) {
        let r = splitmix(rng);
        (
            Ipv4Addr::from(r as u32),
            (r >> 32) as u16,
            (r >> 48) as u32 ^ (splitmix(rng) as u32),
        )
    }

    /// CRC-32/BZIP2 is CRC-32/MPEG-2 XOR 0xFFFFFFFF: two such hashes pick mirror-image
    /// cells, so a filter built on them has one hash less than it counts. No two of the
    /// four hashes may differ by a constant, in all 32 bits or in the low bits an index
    /// keeps.
    #[test]
    fn no_two_filter_hashes_differ_by_a_constant() {
        let mut rng = 1;
        let samples: Vec<[u32; HASHES]> = (0..2000)
            .map(|_| {
                let (ip, shard, group) = random_tuple(&mut rng);
                filter_hashes(ip, shard, group)
            })
            .collect();
        for i in 0..HASHES {
            for j in i + 1..HASHES {
                for bits in 1..=32u32 {
                    let mask = u32::MAX >> (32 - bits);
                    let first = (samples[0][i] ^ samples[0][j]) & mask;
                    assert!(
                        samples.iter().any(|h| (h[i] ^ h[j]) & mask != first),
                        "hashes {} and {} differ by the constant {first:#x} in their low {bits} bits",
                        i + 1,
                        j + 1
                    );
                }
            }
        }
    }

    /// The rank over GF(2) of a set of vectors.
    fn rank(vectors: impl IntoIterator<Item = u64>) -> u32 {
        let mut basis: Vec<u64> = Vec::new();
        for mut v in vectors {
            for &b in &basis {
                v = v.min(v ^ b);
            }
            if v != 0 {
                basis.push(v);
            }
        }
        basis.len() as u32
    }

    /// Every CRC is affine in its input: h(g) = A·g ⊕ c for a fixed pair (destination,
    /// shard). So the low `k` bits (the index into a filter of 2^k cells) of any `r` of the
    /// four hashes are jointly uniform and independent over groups that vary in their low
    /// `b` bits exactly when the map g ↦ (those r indices) has rank r·k. This checks that
    /// for every subset of two, three or four hashes, every group width b in 12..=32 and
    /// every k with r·k ≤ b − 6, i.e. two indices into filters of up to 2^13 cells, three
    /// up to 2^8, all four up to 2^6 when groups use all 32 bits (and proportionally
    /// less for narrower groups). Two complementary hashes have rank k, not 2k.
    #[test]
    fn filter_indices_are_independent_over_the_group_bits() {
        let destinations = [
            (Ipv4Addr::new(10, 0, 0, 3), 1),
            (Ipv4Addr::new(192, 168, 7, 9), 513),
        ];
        let mut rng = 7;
        for (ip, shard) in destinations {
            let h = |group: u32| filter_hashes(ip, shard, group);
            let base = h(0);
            // Affine, so the rank below says everything about uniformity.
            for _ in 0..200 {
                let (a, b) = (splitmix(&mut rng) as u32, splitmix(&mut rng) as u32);
                let (ha, hb, hab) = (h(a), h(b), h(a ^ b));
                for i in 0..HASHES {
                    assert_eq!(
                        ha[i] ^ hb[i] ^ hab[i] ^ base[i],
                        0,
                        "hash {} is affine",
                        i + 1
                    );
                }
            }
            let columns: Vec<[u32; HASHES]> = (0..32)
                .map(|bit| {
                    let hb = h(1 << bit);
                    std::array::from_fn(|i| hb[i] ^ base[i])
                })
                .collect();
            for subset in 1u32..16 {
                let chosen: Vec<usize> = (0..HASHES).filter(|i| subset & 1 << i != 0).collect();
                let r = chosen.len() as u32;
                if r < 2 {
                    continue;
                }
                for group_bits in 12..=32u32 {
                    for k in (1..=32u32).take_while(|k| r * k + 6 <= group_bits) {
                        let mask = (1u64 << k) - 1;
                        let vectors = columns[..group_bits as usize].iter().map(|col| {
                            chosen.iter().enumerate().fold(0u64, |v, (n, &i)| {
                                v | (u64::from(col[i]) & mask) << (n as u32 * k)
                            })
                        });
                        let hashes: Vec<usize> = chosen.iter().map(|i| i + 1).collect();
                        assert_eq!(
                            rank(vectors),
                            r * k,
                            "indices {hashes:?} into 2^{k} cells over {group_bits} group bits"
                        );
                    }
                }
            }
        }
    }

    /// Two random groups should pick the same four cells of 16-cell arrays with
    /// probability 16^-4 (four independent hashes), not 16^-3.
    #[test]
    fn four_cells_of_two_random_groups_rarely_coincide() {
        let (groups, cells) = (3000u64, 16u32);
        let mut rng = 42;
        let mut seen = vec![0u32; (cells as usize).pow(HASHES as u32)];
        for _ in 0..groups {
            let hashes = filter_hashes(Ipv4Addr::new(10, 0, 0, 3), 1, splitmix(&mut rng) as u32);
            let key = hashes
                .iter()
                .fold(0usize, |key, h| key * cells as usize + (h % cells) as usize);
            seen[key] += 1;
        }
        let coinciding: u64 = seen
            .iter()
            .map(|&n| u64::from(n) * u64::from(n.saturating_sub(1)) / 2)
            .sum();
        let expected = (groups * (groups - 1) / 2) as f64 / f64::from(cells).powi(HASHES as i32);
        assert!(
            (coinciding as f64) < 1.5 * expected && (coinciding as f64) > 0.5 * expected,
            "{coinciding} pairs of groups share all four cells, {expected:.1} expected"
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
