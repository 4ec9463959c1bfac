//! Where a client thread's operations come from: the load phase inserts a range of records,
//! the run phase draws operations and keys from the workload's generators.

use crate::workload::{KeyChooser, Operation, OperationChooser, WorkloadSpec};
use dataplane::wire::MAX_KEYS;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One logical operation to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planned {
    Read(u64),
    Update(u64),
    Insert(u64),
    ReadModifyWrite(u64),
    /// A single-key delete, also when `keysperrequest` > 1.
    Delete(u64),
    /// A multi-key GET or PUT (`keysperrequest` > 1) of distinct records.
    MultiRead(Records),
    MultiUpdate(Records),
}

/// Up to `MAX_KEYS` distinct record numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Records {
    numbers: [u64; MAX_KEYS],
    len: u8,
}

impl Records {
    /// Draws `count` distinct records (fewer if the generator keeps repeating itself, as
    /// a skewed one over few records does).
    pub(crate) fn draw(count: usize, mut next: impl FnMut() -> u64) -> Self {
        let mut records = Records {
            numbers: [0; MAX_KEYS],
            len: 0,
        };
        for _ in 0..count * 4 {
            if records.len as usize == count.min(MAX_KEYS) {
                break;
            }
            let record = next();
            if !records.as_slice().contains(&record) {
                records.numbers[records.len as usize] = record;
                records.len += 1;
            }
        }
        records
    }

    pub fn as_slice(&self) -> &[u64] {
        &self.numbers[..self.len as usize]
    }

    /// Keeps the records `keep` accepts, in order.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        let mut kept = 0;
        for i in 0..self.len as usize {
            if keep(self.numbers[i]) {
                self.numbers[kept] = self.numbers[i];
                kept += 1;
            }
        }
        self.len = kept as u8;
    }
}

/// Records that exist: the loaded ones plus inserts acknowledged without gaps, so readers
/// only pick keys whose insert has completed (YCSB's acknowledged counter).
pub struct InsertCounter {
    next: AtomicU64,
    limit: AtomicU64,
    done_out_of_order: Mutex<BTreeSet<u64>>,
}

impl InsertCounter {
    pub fn new(loaded: u64) -> Self {
        InsertCounter {
            next: AtomicU64::new(loaded),
            limit: AtomicU64::new(loaded),
            done_out_of_order: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn claim(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub fn acknowledge(&self, record: u64) {
        let mut done = self.done_out_of_order.lock().expect("insert counter lock");
        if record < self.limit.load(Ordering::Relaxed) {
            return; // A loaded record: it existed all along.
        }
        done.insert(record);
        let mut limit = self.limit.load(Ordering::Relaxed);
        while done.remove(&limit) {
            limit += 1;
        }
        self.limit.store(limit, Ordering::Release);
    }

    /// The load is over: every record below `records` counts as existing from now on,
    /// answered or not (one whose insert failed may be absent; its outcome is open, and the
    /// history says so).
    pub fn settle(&self, records: u64) {
        let mut done = self.done_out_of_order.lock().expect("insert counter lock");
        let limit = self.limit.load(Ordering::Relaxed).max(records);
        done.retain(|&record| record >= limit);
        self.limit.store(limit, Ordering::Release);
        self.next.fetch_max(limit, Ordering::Relaxed);
    }

    /// Every record below this exists.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }
}

pub enum OpSource {
    /// Insert records `next..end`.
    Load { next: u64, end: u64 },
    /// Read records `next..end`, once each.
    ReadBack { next: u64, end: u64 },
    Run {
        operations: OperationChooser,
        keys: KeyChooser,
        /// Operations this thread may still start (None: until the deadline).
        remaining: Option<u64>,
        keys_per_request: usize,
    },
}

impl OpSource {
    pub fn load(records: std::ops::Range<u64>) -> Self {
        OpSource::Load {
            next: records.start,
            end: records.end,
        }
    }

    pub fn read_back(records: std::ops::Range<u64>) -> Self {
        OpSource::ReadBack {
            next: records.start,
            end: records.end,
        }
    }

    pub fn run(spec: &WorkloadSpec, seed: u64, operations: Option<u64>) -> Self {
        OpSource::Run {
            operations: OperationChooser::new(spec, seed),
            keys: KeyChooser::new(spec, seed ^ 0x5EED),
            remaining: operations,
            keys_per_request: spec.keys_per_request,
        }
    }

    pub fn next(&mut self, inserts: &InsertCounter) -> Option<Planned> {
        match self {
            OpSource::Load { next, end } => {
                if next < end {
                    *next += 1;
                    Some(Planned::Insert(*next - 1))
                } else {
                    None
                }
            }
            OpSource::ReadBack { next, end } => (next < end).then(|| {
                *next += 1;
                Planned::Read(*next - 1)
            }),
            OpSource::Run {
                operations,
                keys,
                remaining,
                keys_per_request,
            } => {
                if let Some(left) = remaining {
                    if *left == 0 {
                        return None;
                    }
                    *left -= 1;
                }
                let limit = inserts.limit();
                let mut batch = || Records::draw(*keys_per_request, || keys.next_record(limit));
                Some(match operations.next() {
                    Operation::Read if *keys_per_request > 1 => Planned::MultiRead(batch()),
                    Operation::Update if *keys_per_request > 1 => Planned::MultiUpdate(batch()),
                    Operation::Read => Planned::Read(keys.next_record(inserts.limit())),
                    Operation::Update => Planned::Update(keys.next_record(inserts.limit())),
                    Operation::Insert => Planned::Insert(inserts.claim()),
                    Operation::ReadModifyWrite => {
                        Planned::ReadModifyWrite(keys.next_record(inserts.limit()))
                    }
                    Operation::Delete => Planned::Delete(keys.next_record(inserts.limit())),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_distinct_and_filtered_in_order() {
        let mut draws = [5u64, 5, 7, 5, 9, 11].into_iter();
        let mut records = Records::draw(4, || draws.next().unwrap_or(3));
        assert_eq!(records.as_slice(), [5, 7, 9, 11]);
        records.retain(|r| r != 7);
        assert_eq!(records.as_slice(), [5, 9, 11]);
        let stuck = Records::draw(3, || 1);
        assert_eq!(
            stuck.as_slice(),
            [1],
            "a generator that repeats itself gives fewer"
        );
    }

    #[test]
    fn insert_limit_waits_for_gaps() {
        let counter = InsertCounter::new(10);
        let (a, b, c) = (counter.claim(), counter.claim(), counter.claim());
        assert_eq!((a, b, c), (10, 11, 12));
        counter.acknowledge(b);
        assert_eq!(counter.limit(), 10, "11 done but 10 still pending");
        counter.acknowledge(a);
        assert_eq!(counter.limit(), 12);
        counter.acknowledge(c);
        assert_eq!(counter.limit(), 13);
    }
}
