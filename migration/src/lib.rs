//! The server role and (with later issues) the migration protocols, as sans-I/O state
//! machines: they consume datagrams and time and produce datagrams; they never touch a
//! socket. The per-core loop in `bench` drives them over any `dataplane` port.

pub mod dedup;
pub mod serve;

pub use dedup::{DedupVerdict, WriteDedup};
pub use serve::{DropReason, PartitionServer, ServeCounters};
