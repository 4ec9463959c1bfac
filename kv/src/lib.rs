//! The key-value store's partitioned hash table.
//!
//! A key's CRC-64/Jones hash decides everything: its migration group (from the low 32 bits,
//! as the switch computes it), the partition (core) that owns the group, and its slot in that
//! partition's table. Groups do not depend on the table's size, so a table may grow while its
//! partition migrates (see `layout`).

mod hash;
mod item;
mod layout;
mod table;

pub use hash::key_hash;
pub use layout::{GroupLayout, LayoutError, PartitionMap, SIZE_EXP};
pub use table::{Entry, Lookup, Partition, PutOutcome};
