//! What a partition counts: requests served, datagrams dropped and why, and its
//! migrations (summed across cores for reports).

use crate::bulk::BulkStats;
use crate::incoming::{Incoming, IncomingStats};
use crate::outgoing::OutgoingStats;
use crate::pull::PullStats;
use crate::returning::ReturnStats;
use dataplane::wire::WireError;

/// Why a datagram was dropped without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The datagram does not parse (truncated, bad magic or version, bad lengths, …).
    Malformed(WireError),
    /// A reply or other non-request arrived at a server.
    NotARequest,
    /// The header's key hash does not match the key: the switch would have steered it by a
    /// group the key is not in.
    HashMismatch,
    /// A late copy of a write the client already has its answer for.
    StaleWrite,
    /// A migration in for a shard this partition does not know, past `MAX_SHARDS`.
    TooManyShards,
    /// A chain message from outside the configuration (another epoch or sender), or a
    /// stream frame whose records do not parse.
    Chain,
}

/// Counters of one partition server; summed across cores for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServeCounters {
    pub gets: u64,
    pub get_hits: u64,
    pub puts: u64,
    pub deletes: u64,
    pub multi_requests: u64,
    pub multi_keys: u64,
    /// Retransmitted writes answered without applying them again.
    pub duplicate_writes: u64,
    /// Requests answered with `Status::Error`: unknown shard, key of another partition,
    /// broken dedup window, entry too long.
    pub error_replies: u64,
    /// Writes refused because key + value exceed `wire::MAX_ENTRY_LEN`.
    pub oversized_writes: u64,
    pub dropped_malformed: u64,
    pub dropped_not_request: u64,
    pub dropped_hash_mismatch: u64,
    pub dropped_stale_write: u64,
    /// Migration stream messages for new shards past `MAX_SHARDS`.
    pub dropped_too_many_shards: u64,
    /// Migrations in refused with `ERROR`: the partition holds data of the shard, or the
    /// source's partitions or group bits differ from ours.
    pub refused_inits: u64,
    /// Requests refused with `DATA_LOST`: their group was lost when a migration's other
    /// end restarted empty.
    pub data_lost_replies: u64,
    /// Migration stream messages of a stream this partition does not know (it restarted,
    /// or they overtook their INIT), answered `ERROR`; and probes answered the same.
    pub unknown_streams: u64,
    /// Chain-replication messages dropped (`DropReason::Chain`).
    #[serde(default)]
    pub dropped_chain: u64,
}

impl ServeCounters {
    pub fn requests(&self) -> u64 {
        self.gets + self.puts + self.deletes + self.multi_requests
    }

    pub fn dropped(&self) -> u64 {
        self.dropped_malformed
            + self.dropped_not_request
            + self.dropped_hash_mismatch
            + self.dropped_stale_write
            + self.dropped_too_many_shards
            + self.dropped_chain
    }

    pub(super) fn count_drop(&mut self, reason: DropReason) {
        match reason {
            DropReason::Malformed(_) => self.dropped_malformed += 1,
            DropReason::NotARequest => self.dropped_not_request += 1,
            DropReason::HashMismatch => self.dropped_hash_mismatch += 1,
            DropReason::StaleWrite => self.dropped_stale_write += 1,
            DropReason::TooManyShards => self.dropped_too_many_shards += 1,
            DropReason::Chain => self.dropped_chain += 1,
        }
    }

    pub fn add(&mut self, other: &ServeCounters) {
        self.gets += other.gets;
        self.get_hits += other.get_hits;
        self.puts += other.puts;
        self.deletes += other.deletes;
        self.multi_requests += other.multi_requests;
        self.multi_keys += other.multi_keys;
        self.duplicate_writes += other.duplicate_writes;
        self.error_replies += other.error_replies;
        self.oversized_writes += other.oversized_writes;
        self.dropped_malformed += other.dropped_malformed;
        self.dropped_not_request += other.dropped_not_request;
        self.dropped_hash_mismatch += other.dropped_hash_mismatch;
        self.dropped_stale_write += other.dropped_stale_write;
        self.dropped_too_many_shards += other.dropped_too_many_shards;
        self.refused_inits += other.refused_inits;
        self.data_lost_replies += other.data_lost_replies;
        self.unknown_streams += other.unknown_streams;
    }
}

/// Migration counters of a partition, over every migration it took part in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrationCounters {
    /// Every migration out, summed.
    pub outgoing: OutgoingStats,
    /// The latest migration out, running or ended (what a status reports).
    pub latest_outgoing: OutgoingStats,
    pub incoming: IncomingStats,
    /// Requests a destination passed to the source (the switch's false positives or races).
    pub forwarded: u64,
    /// Double-read halves a destination answered NOT_MIGRATED.
    pub not_migrated: u64,
    pub moved_replies: u64,
    /// Multi-key requests on a migrating shard with at least one key the partition could
    /// not serve yet (answered RETRY_LATER, for that key or the whole request).
    pub multi_retry_later: u64,
    /// Requests answered RETRY_LATER while ownership moves (single-key).
    pub retry_later: u64,
    /// Pulls this partition sent as a destination.
    pub pulls: PullStats,
    /// Rocksteady bulk pulls this partition sent as a destination.
    pub bulk: BulkStats,
    /// Reads a destination parked until a pull answered them.
    pub parked: u64,
    pub outgoing_active: u32,
    pub incoming_active: u32,
    /// Destinations sending an aborted migration's data back.
    pub returned: ReturnStats,
    pub returning_active: u32,
}

impl MigrationCounters {
    /// Adds what a migration in did, once it ended (terminated, aborted, or its source
    /// lost).
    pub(super) fn add_incoming(&mut self, agent: &Incoming) {
        self.incoming.add(&agent.stats());
        self.pulls.add(&agent.puller.stats());
        if let Some(bulk) = &agent.bulk {
            self.bulk.add(&bulk.stats());
        }
    }

    pub fn add(&mut self, other: &MigrationCounters) {
        self.outgoing.add(&other.outgoing);
        self.latest_outgoing.add(&other.latest_outgoing);
        self.incoming.add(&other.incoming);
        self.forwarded += other.forwarded;
        self.not_migrated += other.not_migrated;
        self.moved_replies += other.moved_replies;
        self.multi_retry_later += other.multi_retry_later;
        self.retry_later += other.retry_later;
        self.pulls.add(&other.pulls);
        self.bulk.add(&other.bulk);
        self.parked += other.parked;
        self.outgoing_active += other.outgoing_active;
        self.incoming_active += other.incoming_active;
        self.returned.add(&other.returned);
        self.returning_active += other.returning_active;
    }
}
