//! One migration of one shard, shared by its source partitions and the control plane that
//! started it: the id its streams carry, and whether it may still be called off.
//!
//! Every partition of the shard must end the same way (all moved, or all back at the
//! source). So a source partition *commits* before it sends TERMINATE, and an abort is
//! taken only while no partition has committed; once one has, the abort is refused and
//! every partition cuts over. This is the one piece of state the partitions of a
//! migration share: an atomic, touched at a few stage changes, never per request.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const RUNNING: u8 = 0;
const ABORTING: u8 = 1;
const CUTTING_OVER: u8 = 2;

#[derive(Debug)]
pub struct MigrationTicket {
    stream_id: u32,
    fate: AtomicU8,
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
    pub fn new(stream_id: u32) -> Self {
        MigrationTicket {
            stream_id,
            fate: AtomicU8::new(RUNNING),
        }
    }

    /// A ticket whose stream id differs from earlier migrations between the same cores
    /// (taken from the wall clock, so also across restarts).
    pub fn fresh() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Fold the clock so that consecutive migrations get different ids; 0 is left to
        // streams that predate ids.
        let id = (nanos ^ (nanos >> 32) ^ (nanos >> 64)) as u32;
        MigrationTicket::new(id.max(1))
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

    /// A source partition is about to send TERMINATE: true if it may (the migration was
    /// not aborted), and from now on no abort is taken.
    pub fn commit(&self) -> bool {
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
}

impl Default for MigrationTicket {
    fn default() -> Self {
        MigrationTicket::fresh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_and_commit_exclude_each_other() {
        let ticket = MigrationTicket::new(7);
        assert!(ticket.abort().is_ok());
        assert!(ticket.abort().is_ok(), "idempotent");
        assert!(!ticket.commit(), "an aborted migration never cuts over");
        assert!(ticket.abort_requested());

        let ticket = MigrationTicket::new(7);
        assert!(ticket.commit());
        assert!(ticket.commit(), "every partition may commit");
        assert_eq!(ticket.abort(), Err(PastCutOver));
        assert!(!ticket.abort_requested());
    }

    #[test]
    fn fresh_tickets_get_nonzero_distinct_ids() {
        let a = MigrationTicket::fresh();
        std::thread::sleep(std::time::Duration::from_millis(1));
        let b = MigrationTicket::fresh();
        assert_ne!(a.stream_id(), 0);
        assert_ne!(a.stream_id(), b.stream_id());
    }
}
