use crc::{Crc, Table, CRC_64_REDIS};

/// CRC-64/Jones as Redis uses it (poly 0xAD93D23594C935A9, reflected, init 0, xorout 0).
/// Only its lookup tables are used here. A `static`, not a `const`: a const would copy the
/// 32 KiB of tables per use.
static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// The 64-bit hash every component agrees on: clients put it in the header, switches take
/// groups from it, servers place the key with it.
///
/// Slicing-by-8: keys are short (8 bytes in YCSB), and a byte-at-a-time loop would make
/// every byte wait for the one before it, a serial chain of eight table loads per 8-byte key.
/// One 8-byte step does eight independent loads instead.
pub fn key_hash(key: &[u8]) -> u64 {
    let tables = CRC64.table();
    let mut crc = 0u64;
    let mut words = key.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let x = crc ^ u64::from_le_bytes(bytes);
        // tables[k][b] is the CRC of byte b followed by k zero bytes.
        crc = tables[7][(x & 0xFF) as usize]
            ^ tables[6][((x >> 8) & 0xFF) as usize]
            ^ tables[5][((x >> 16) & 0xFF) as usize]
            ^ tables[4][((x >> 24) & 0xFF) as usize]
            ^ tables[3][((x >> 32) & 0xFF) as usize]
            ^ tables[2][((x >> 40) & 0xFF) as usize]
            ^ tables[1][((x >> 48) & 0xFF) as usize]
            ^ tables[0][(x >> 56) as usize];
    }
    for &byte in words.remainder() {
        crc = tables[0][((crc ^ u64::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_redis_check_value_and_reference_vectors() {
        assert_eq!(key_hash(b"123456789"), 0xE9C6_D914_C4B8_D9CA);
        // Vectors computed with the NetMigrate artifact's crc64.cpp.
        assert_eq!(key_hash(b"abcd"), 0xC5FA_E977_BFC9_0C32);
        assert_eq!(key_hash(&[1, 2, 3, 4]), 0x3EC7_8F44_1C7E_C54E);
    }

    proptest! {
        /// Every length a key may have (and the empty slice), against the crc crate's own
        /// implementation of the catalogue algorithm.
        #[test]
        fn agrees_with_the_reference_crc(key in proptest::collection::vec(any::<u8>(), 0..=255)) {
            prop_assert_eq!(key_hash(&key), CRC64.checksum(&key));
        }
    }
}
