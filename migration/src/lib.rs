//! The server role and the migration protocols, as sans-I/O state machines: they consume
//! datagrams and time and produce datagrams; they never touch a socket. The per-core loop
//! in `bench` drives them over any `dataplane` port.

pub mod bulk;
pub mod chain;
pub mod control;
pub mod dedup;
pub mod incoming;
pub mod journal;
pub mod lost;
pub mod membership;
pub mod outgoing;
pub mod pull;
pub mod returning;
pub mod serve;
pub mod stream;
pub mod throttle;
pub mod ticket;

pub use bulk::BulkStats;
pub use dataplane::wire::Protocol;
pub use dedup::{DedupVerdict, WriteDedup};
pub use incoming::{DestinationRule, Incoming, IncomingStats};
pub use journal::{Journal, LogError};
pub use lost::LostGroups;
pub use outgoing::{GroupPhase, Outgoing, OutgoingPlan, OutgoingStats, SourceRule};
pub use pull::PullStats;
pub use returning::{ReturnStats, Returning};
pub use serve::{
    DropReason, MigrationCounters, PartitionServer, Recovery, Role, ServeCounters, MAX_SHARDS,
};
pub use throttle::{MigrationBudget, Preset, TokenBucket};
pub use ticket::{MigrationTicket, PastCutOver};
