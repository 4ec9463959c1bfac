use crc::{Crc, Table, CRC_64_REDIS};

/// CRC-64/Jones as Redis uses it (poly 0xAD93D23594C935A9, reflected, init 0, xorout 0),
/// slicing-by-16. A `static`, not a `const`: a const would copy the 32 KiB table per use.
static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// The 64-bit hash every component agrees on: clients put it in the header, switches take
/// groups from it, servers place the key with it.
pub fn key_hash(key: &[u8]) -> u64 {
    CRC64.checksum(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_check_value_and_reference_vectors() {
        assert_eq!(key_hash(b"123456789"), 0xE9C6_D914_C4B8_D9CA);
        // Vectors computed with the NetMigrate artifact's crc64.cpp.
        assert_eq!(key_hash(b"abcd"), 0xC5FA_E977_BFC9_0C32);
        assert_eq!(key_hash(&[1, 2, 3, 4]), 0x3EC7_8F44_1C7E_C54E);
    }
}
