//! Values the client writes: each carries a tag naming the write that produced it, so a
//! read can be traced to exactly one write (what the linearizability check needs), and a
//! corrupted or foreign value is recognised.

/// Bytes at the front of every value: the tag and its complement.
pub const TAG_BYTES: usize = 16;

/// Bits of a tag that hold the writer's sequence number; the bits above name the writer.
const SEQ_BITS: u32 = 40;

/// A tag unique across the process: the writer (client thread) and its sequence number.
pub fn tag(writer: u32, seq: u64) -> u64 {
    (u64::from(writer) << SEQ_BITS) | (seq & ((1 << SEQ_BITS) - 1))
}

/// The tag as text, `w<writer>-<seq>`: how a history file names a write.
pub fn name(tag: u64) -> String {
    format!("w{}-{}", tag >> SEQ_BITS, tag & ((1 << SEQ_BITS) - 1))
}

/// Fills `out` with the value of `tag`: the tag, its complement, then filler derived from it.
pub fn encode(tag: u64, out: &mut [u8]) {
    out[..8].copy_from_slice(&tag.to_be_bytes());
    out[8..16].copy_from_slice(&(!tag).to_be_bytes());
    let filler = tag.to_le_bytes();
    for (i, byte) in out[TAG_BYTES..].iter_mut().enumerate() {
        *byte = filler[i % 8] ^ (i as u8);
    }
}

/// The tag of a value this client wrote, or None for a value nobody wrote this way.
pub fn decode(value: &[u8]) -> Option<u64> {
    if value.len() < TAG_BYTES {
        return None;
    }
    let tag = u64::from_be_bytes(value[..8].try_into().ok()?);
    let check = u64::from_be_bytes(value[8..16].try_into().ok()?);
    (check == !tag).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_reject_garbage() {
        let mut value = [0u8; 64];
        let t = tag(3, 99);
        encode(t, &mut value);
        assert_eq!(decode(&value), Some(t));
        value[9] ^= 1;
        assert_eq!(decode(&value), None);
        assert_eq!(decode(b"short"), None);
        assert_ne!(tag(1, 5), tag(2, 5));
        assert_eq!(name(tag(3, 99)), "w3-99");
    }
}
