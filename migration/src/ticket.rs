//! One migration of one shard, shared by its source partitions and the control plane that
//! started it: the id its streams carry, and whether it may still be called off.
//!
//! Every partition of the shard must end the same way (all moved, or all back at the
//! source). So a source partition *commits* before it sends TERMINATE, and an abort is
//! taken only while no partition has committed; once one has, the abort is refused and
//! every partition cuts over. The commit is taken only once every partition is ready to
//! cut over (its data all at the destination, or, source-based, its last round due): a
//! destination chain's new head that took over the migration is then sent TERMINATE, never
//! the rest of a migration whose state died with its predecessor (`docs/replication.md`).
//! This is the one piece of state the partitions of a migration share: atomics, touched at
//! a few stage changes, never per request.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const RUNNING: u8 = 0;
const ABORTING: u8 = 1;
const CUTTING_OVER: u8 = 2;

#[derive(Debug)]
pub struct MigrationTicket {
    stream_id: u32,
    fate: AtomicU8,
    /// Source partitions taking part, and how many of them are ready to cut over.
    partitions: u32,
    ready: AtomicU32,
}

/// Why an abort was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastCutOver;

impl std::fmt::Display for PastCutOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the migration is already cutting over (a source partition has sent TERMINATE) \
             and will finish",
        )
    }
}

impl MigrationTicket {
    /// A migration of `partitions` source partitions.
    pub fn new(stream_id: u32, partitions: u32) -> Self {
        MigrationTicket {
            stream_id,
            fate: AtomicU8::new(RUNNING),
            partitions: partitions.max(1),
            ready: AtomicU32::new(0),
        }
    }

    /// A ticket whose stream id differs from earlier migrations between the same cores
    /// (taken from the wall clock, so also across restarts).
    pub fn fresh(partitions: u32) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Fold the clock so that consecutive migrations get different ids; 0 is left to
        // streams that predate ids.
        let id = (nanos ^ (nanos >> 32) ^ (nanos >> 64)) as u32;
        MigrationTicket::new(id.max(1), partitions)
    }

    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// Calls the migration off, unless a partition has committed to the cut-over.
    /// Aborting twice is fine.
    pub fn abort(&self) -> Result<(), PastCutOver> {
        match self
            .fate
            .compare_exchange(RUNNING, ABORTING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            Err(ABORTING) => Ok(()),
            Err(_) => Err(PastCutOver),
        }
    }

    /// A source partition is ready to send TERMINATE (`counted`: its own flag, so that it
    /// is counted once). True once it may: every partition is ready and the migration was
    /// not aborted; from then on no abort is taken. False while others are not ready yet
    /// (ask again later) or after an abort.
    pub fn commit(&self, counted: &mut bool) -> bool {
        if !std::mem::replace(counted, true) {
            self.ready.fetch_add(1, Ordering::AcqRel);
        }
        if self.ready.load(Ordering::Acquire) < self.partitions {
            return false;
        }
        match self
            .fate
            .compare_exchange(RUNNING, CUTTING_OVER, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == CUTTING_OVER,
        }
    }

    /// The migration was called off (each partition turns to it on its next poll).
    pub fn abort_requested(&self) -> bool {
        self.fate.load(Ordering::Acquire) == ABORTING
    }

    /// Every partition is committed to the cut-over.
    pub fn is_committed(&self) -> bool {
        self.fate.load(Ordering::Acquire) == CUTTING_OVER
    }
}

impl Default for MigrationTicket {
    fn default() -> Self {
        MigrationTicket::fresh(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_and_commit_exclude_each_other() {
        let ticket = MigrationTicket::new(7, 1);
        assert!(ticket.abort().is_ok());
        assert!(ticket.abort().is_ok(), "idempotent");
        assert!(
            !ticket.commit(&mut false),
            "an aborted migration never cuts over"
        );
        assert!(ticket.abort_requested());

        let ticket = MigrationTicket::new(7, 1);
        let mut counted = false;
        assert!(ticket.commit(&mut counted));
        assert!(ticket.commit(&mut counted), "committing again is fine");
        assert!(ticket.is_committed());
        assert_eq!(ticket.abort(), Err(PastCutOver));
        assert!(!ticket.abort_requested());
    }

    #[test]
    fn the_commit_waits_for_every_partition() {
        let ticket = MigrationTicket::new(7, 3);
        let mut ready = [false; 3];
        assert!(!ticket.commit(&mut ready[0]));
        assert!(!ticket.commit(&mut ready[0]), "a partition counts once");
        assert!(!ticket.commit(&mut ready[1]));
        assert!(
            ticket.abort().is_ok(),
            "not committed yet: the abort is taken"
        );
        assert!(!ticket.commit(&mut ready[2]), "aborted");

        let ticket = MigrationTicket::new(7, 2);
        let mut ready = [false; 2];
        assert!(!ticket.commit(&mut ready[0]));
        assert!(ticket.commit(&mut ready[1]));
        assert!(ticket.commit(&mut ready[0]));
        assert_eq!(ticket.abort(), Err(PastCutOver));
    }

    #[test]
    fn fresh_tickets_get_nonzero_distinct_ids() {
        let a = MigrationTicket::fresh(1);
        std::thread::sleep(std::time::Duration::from_millis(1));
        let b = MigrationTicket::fresh(1);
        assert_ne!(a.stream_id(), 0);
        assert_ne!(a.stream_id(), b.stream_id());
    }
}
