//! One partition's durable log on disk (`--log-dir`): the partition server's journal
//! (`migration::journal`), appended to segment files before the replies it covers are sent.
//! `DIR/partition-P/segment-NNNNNNNN.log`, a new segment every `SEGMENT_BYTES`. At start
//! the segments are read back in order; a record the crash tore at the end of the last one
//! is cut off, and a bad record anywhere else refuses the start (the disk lost data that
//! was acknowledged, and serving without it could answer an older value).
//!
//! Compaction: once a log has grown by more than twice its last snapshot (and at least
//! `COMPACT_FLOOR`), a new segment is started and the partition writes a snapshot of itself
//! into its journal a slice per loop turn (`PartitionServer::begin_snapshot`), between the
//! changes it goes on making. Once the snapshot's end is on disk the older segments are
//! deleted: the log from the snapshot's start on replays to the whole partition, and until
//! then the older segments are still there (replaying both is as right). A log holds at
//! most its last snapshot plus `max(COMPACT_FLOOR, 2 × that snapshot)` and the changes made
//! while the next one is written: about three times the live data.

use migration::journal::Records;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// When an append reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fsync {
    /// Written to the file (the kernel's page cache) before the replies go: survives a
    /// crash of the process, not of the machine.
    Never,
    /// One fdatasync per loop turn that wrote, before the turn's replies go (group commit).
    Batch,
    /// One fdatasync per record: every write its own sync, the slow baseline.
    Always,
}

/// Where the server keeps its logs and how it syncs them.
#[derive(Debug, Clone)]
pub struct LogSpec {
    pub dir: PathBuf,
    pub fsync: Fsync,
}

/// A segment is closed and a new one opened once it holds this much.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// A log is not compacted before it has grown this much since its last snapshot.
pub const COMPACT_FLOOR: u64 = 64 << 20;

/// What the log did, for the final statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogStats {
    pub appended_bytes: u64,
    pub syncs: u64,
    pub segments: u64,
    pub compactions: u64,
    /// Bytes of the latest snapshot, and bytes appended since.
    pub snapshot_bytes: u64,
    pub since_snapshot: u64,
}

/// What opening an existing log found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opened {
    pub segments: u64,
    /// Bytes of valid records read back.
    pub bytes: u64,
    /// Bytes of a torn record cut off the end.
    pub torn_bytes: u64,
}

pub struct PartitionLog {
    dir: PathBuf,
    fsync: Fsync,
    file: File,
    segment: u64,
    segment_bytes: u64,
    /// The segment a snapshot under way started, and the bytes appended since.
    snapshot: Option<(u64, u64)>,
    pub stats: LogStats,
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("segment-{segment:08}.log"))
}

/// The segment numbers in `dir`, in order.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(number) = name
            .strip_prefix("segment-")
            .and_then(|rest| rest.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

impl PartitionLog {
    /// Opens partition `partition`'s log under `spec.dir` (created if missing) and reads
    /// back what it holds: the valid records of every segment, in order.
    pub fn open(spec: &LogSpec, partition: u32) -> io::Result<(PartitionLog, Vec<u8>, Opened)> {
        let dir = spec.dir.join(format!("partition-{partition}"));
        fs::create_dir_all(&dir)?;
        let numbers = segments(&dir)?;
        let mut log = Vec::new();
        let mut opened = Opened::default();
        for (i, &number) in numbers.iter().enumerate() {
            let path = segment_path(&dir, number);
            let bytes = fs::read(&path)?;
            let mut records = Records::new(&bytes);
            records.by_ref().for_each(drop);
            let valid = records.valid_len();
            if let Some(error) = records.error() {
                if i + 1 < numbers.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: {error} at byte {valid}, before the last segment: the log lost \
                             records that may have been acknowledged; refusing to serve without \
                             them",
                            path.display()
                        ),
                    ));
                }
                // The last append before a crash, torn: it was never acknowledged.
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(valid as u64)?;
                file.sync_all()?;
                opened.torn_bytes = (bytes.len() - valid) as u64;
            }
            log.extend_from_slice(&bytes[..valid]);
        }
        opened.segments = numbers.len() as u64;
        opened.bytes = log.len() as u64;
        let segment = numbers.last().copied().unwrap_or(0);
        let path = segment_path(&dir, segment);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let segment_bytes = file.metadata()?.len();
        sync_dir(&dir)?;
        let partition_log = PartitionLog {
            dir,
            fsync: spec.fsync,
            file,
            segment,
            segment_bytes,
            snapshot: None,
            stats: LogStats {
                segments: numbers.len().max(1) as u64,
                // What a restart read back counts as grown: compacted at the first chance.
                since_snapshot: opened.bytes,
                ..LogStats::default()
            },
        };
        Ok((partition_log, log, opened))
    }

    /// Appends whole records (a journal taken from the partition server) and makes them as
    /// durable as the policy says before it returns.
    pub fn append(&mut self, records: &[u8]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.segment_bytes >= SEGMENT_BYTES {
            self.roll()?;
        }
        match self.fsync {
            Fsync::Never => self.file.write_all(records)?,
            Fsync::Batch => {
                self.file.write_all(records)?;
                self.sync()?;
            }
            Fsync::Always => {
                let mut at = 0;
                let mut each = Records::new(records);
                while each.next().is_some() {
                    self.file.write_all(&records[at..each.valid_len()])?;
                    self.sync()?;
                    at = each.valid_len();
                }
                // Anything the iterator could not read (never: the journal writes whole
                // records) still goes to disk rather than being dropped.
                self.file.write_all(&records[at..])?;
            }
        }
        self.segment_bytes += records.len() as u64;
        self.stats.appended_bytes += records.len() as u64;
        self.stats.since_snapshot += records.len() as u64;
        if let Some((_, bytes)) = &mut self.snapshot {
            *bytes += records.len() as u64;
        }
        Ok(())
    }

    /// Whether the log has outgrown its last snapshot (see the module's doc) and no
    /// snapshot is under way.
    pub fn needs_compaction(&self) -> bool {
        self.snapshot.is_none()
            && self.stats.since_snapshot > COMPACT_FLOOR.max(2 * self.stats.snapshot_bytes)
    }

    pub fn snapshot_under_way(&self) -> bool {
        self.snapshot.is_some()
    }

    /// A snapshot starts (`PartitionServer::begin_snapshot` just put its first record in the
    /// journal): the next append opens a new segment, where the compacted log will start.
    pub fn begin_snapshot(&mut self) -> io::Result<()> {
        self.roll()?;
        self.snapshot = Some((self.segment, 0));
        Ok(())
    }

    /// The snapshot's last record has been appended: once it is on disk, the segments
    /// before the snapshot's are deleted.
    pub fn finish_snapshot(&mut self) -> io::Result<()> {
        let Some((first, bytes)) = self.snapshot.take() else {
            return Ok(());
        };
        self.sync()?;
        for old in segments(&self.dir)?.into_iter().filter(|&n| n < first) {
            fs::remove_file(segment_path(&self.dir, old))?;
        }
        sync_dir(&self.dir)?;
        self.stats.compactions += 1;
        self.stats.segments = self.segment - first + 1;
        self.stats.snapshot_bytes = bytes;
        self.stats.since_snapshot = 0;
        Ok(())
    }

    /// Forgets every record so far: the partition dropped the state they build (it starts
    /// over as a chain's learner, from a snapshot the stream brings). A restart then finds
    /// only what came after.
    pub fn start_over(&mut self) -> io::Result<()> {
        self.roll()?;
        for old in segments(&self.dir)?
            .into_iter()
            .filter(|&n| n < self.segment)
        {
            fs::remove_file(segment_path(&self.dir, old))?;
        }
        sync_dir(&self.dir)?;
        self.snapshot = None;
        self.stats.segments = 1;
        self.stats.snapshot_bytes = 0;
        self.stats.since_snapshot = 0;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.stats.syncs += 1;
        self.file.sync_data()
    }

    fn roll(&mut self) -> io::Result<()> {
        self.file.sync_all()?;
        self.segment += 1;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, self.segment))?;
        sync_dir(&self.dir)?;
        self.segment_bytes = 0;
        self.stats.segments += 1;
        Ok(())
    }
}

/// Makes a new file's directory entry durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use migration::journal::{Journal, Record, ShardEvent};

    fn journal_of(n: u64) -> Vec<u8> {
        let mut journal = Journal::enabled();
        journal.record(&Record::Shard {
            shard: 1,
            event: ShardEvent::Hosted,
        });
        for i in 0..n {
            journal.record(&Record::Put {
                shard: 1,
                client: 7,
                seq: i,
                version: i + 1,
                key: &i.to_be_bytes(),
                value: b"value",
            });
        }
        journal.take()
    }

    #[test]
    fn appends_read_back_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        for fsync in [Fsync::Never, Fsync::Batch, Fsync::Always] {
            let spec = LogSpec {
                dir: dir.path().join(format!("{fsync:?}")),
                fsync,
            };
            let (mut log, existing, _) = PartitionLog::open(&spec, 3).unwrap();
            assert!(existing.is_empty());
            let (first, second) = (journal_of(5), journal_of(2));
            log.append(&first).unwrap();
            log.append(&second).unwrap();
            let syncs = match fsync {
                Fsync::Never => 0,
                Fsync::Batch => 2,
                Fsync::Always => 6 + 3,
            };
            assert_eq!(log.stats.syncs, syncs, "{fsync:?}");
            drop(log);
            // A crash tore the last append.
            let path = segment_path(&spec.dir.join("partition-3"), 0);
            let mut file = OpenOptions::new().append(true).open(&path).unwrap();
            let put = &journal_of(1)[20..]; // Past the 20-byte shard record.
            file.write_all(&put[..20]).unwrap();
            let (mut log, read, opened) = PartitionLog::open(&spec, 3).unwrap();
            assert_eq!(read, [first.clone(), second.clone()].concat());
            assert_eq!(opened.torn_bytes, 20);
            assert_eq!(fs::metadata(&path).unwrap().len(), read.len() as u64, "cut");
            log.append(&second).unwrap();
            let (_, again, opened) = PartitionLog::open(&spec, 3).unwrap();
            assert_eq!(again, [first, second.clone(), second].concat());
            assert_eq!(opened.torn_bytes, 0);
        }
    }

    #[test]
    fn a_log_started_over_reads_back_only_what_came_after() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LogSpec {
            dir: dir.path().to_path_buf(),
            fsync: Fsync::Batch,
        };
        let (mut log, _, _) = PartitionLog::open(&spec, 0).unwrap();
        log.append(&journal_of(20)).unwrap();
        log.roll().unwrap();
        log.append(&journal_of(20)).unwrap();
        log.begin_snapshot().unwrap();
        log.start_over().unwrap();
        assert!(!log.snapshot_under_way());
        let after = journal_of(3);
        log.append(&after).unwrap();
        drop(log);
        let (_, read, opened) = PartitionLog::open(&spec, 0).unwrap();
        assert_eq!(read, after);
        assert_eq!(opened.segments, 1);
    }

    #[test]
    fn a_finished_snapshot_deletes_the_segments_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LogSpec {
            dir: dir.path().to_path_buf(),
            fsync: Fsync::Batch,
        };
        let (mut log, _, _) = PartitionLog::open(&spec, 1).unwrap();
        log.append(&journal_of(50)).unwrap();
        log.roll().unwrap();
        log.append(&journal_of(50)).unwrap();
        log.begin_snapshot().unwrap();
        assert!(log.snapshot_under_way() && !log.needs_compaction());
        let mut snapshot = Journal::enabled();
        snapshot.record(&Record::Snapshot { begin: true });
        snapshot.record(&Record::Role {
            shard: 1,
            event: ShardEvent::Hosted,
        });
        let first = snapshot.take();
        log.append(&first).unwrap();
        let partition = dir.path().join("partition-1");
        assert_eq!(
            segments(&partition).unwrap(),
            [0, 1, 2],
            "kept until it is whole"
        );
        let mut rest = journal_of(2);
        snapshot.record(&Record::Snapshot { begin: false });
        rest.extend_from_slice(&snapshot.take());
        log.append(&rest).unwrap();
        log.finish_snapshot().unwrap();
        assert_eq!(log.stats.compactions, 1);
        assert_eq!(log.stats.snapshot_bytes, (first.len() + rest.len()) as u64);
        drop(log);
        assert_eq!(
            segments(&partition).unwrap(),
            [2],
            "the older segments are gone"
        );
        let (_, read, _) = PartitionLog::open(&spec, 1).unwrap();
        assert_eq!(read, [first, rest].concat());
    }

    #[test]
    fn a_bad_record_before_the_last_segment_refuses_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LogSpec {
            dir: dir.path().to_path_buf(),
            fsync: Fsync::Batch,
        };
        let (mut log, _, _) = PartitionLog::open(&spec, 0).unwrap();
        log.append(&journal_of(3)).unwrap();
        log.roll().unwrap();
        log.append(&journal_of(3)).unwrap();
        drop(log);
        let first = segment_path(&dir.path().join("partition-0"), 0);
        let mut bytes = fs::read(&first).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        fs::write(&first, bytes).unwrap();
        let error = PartitionLog::open(&spec, 0).err().expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("checksum"), "{error}");
    }
}
