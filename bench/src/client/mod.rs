//! The YCSB client: threads that each drive their own port, plus the orchestration of the
//! load and run phases and the live progress line.

mod engine;
mod source;
mod timers;

pub use engine::{Counters, Engine, Nanos};
pub use source::{InsertCounter, OpSource};

use crate::linearizability::Op as HistoryOp;
use crate::measure::Recorder;
use crate::server::transport::Fabric;
use crate::workload::WorkloadSpec;
use dataplane::port::PortStats;
use kv::PartitionMap;
use std::io::{self, IsTerminal, Write};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where requests go: one server address per partition, and the shard.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub partitions: Vec<SocketAddrV4>,
    pub map: PartitionMap,
    pub shard: u16,
    /// Per partition of a replicated server: its chain, head first (reads spread over it,
    /// docs/replication.md). Empty: every request goes to `partitions`.
    pub replicas: Vec<Vec<SocketAddrV4>>,
    /// The chain's members as the directory has them now (`--etcd`): client loops follow
    /// each new epoch. None: the replicas above stay.
    pub chain_view: Option<Arc<ChainView>>,
}

/// A chain's current members (partition 0 addresses, head first), published by a thread
/// that reads the directory and read by the client loops now and then.
#[derive(Debug, Default)]
pub struct ChainView {
    epoch: AtomicU64,
    members: std::sync::Mutex<Vec<SocketAddrV4>>,
    closed: AtomicBool,
}

impl ChainView {
    pub fn publish(&self, epoch: u32, members: &[SocketAddrV4]) {
        if self.epoch.load(Ordering::Acquire) == u64::from(epoch) {
            return;
        }
        *self.members.lock().expect("chain view lock poisoned") = members.to_vec();
        self.epoch.store(u64::from(epoch), Ordering::Release);
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn members(&self) -> Vec<SocketAddrV4> {
        self.members
            .lock()
            .expect("chain view lock poisoned")
            .clone()
    }

    /// The run is over: the thread publishing the view may stop.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// How the client behaves (all phases).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub threads: usize,
    /// Requests each thread keeps in flight (closed loop).
    pub window: usize,
    /// Open loop: operations per second each thread starts.
    pub rate_per_thread: Option<f64>,
    /// First retransmission timeout; doubles per attempt up to `max_timeout`.
    pub timeout: Duration,
    pub max_timeout: Duration,
    /// A request unanswered for this long fails.
    pub give_up: Duration,
    pub record_history: bool,
    pub progress: bool,
    pub seed: u64,
    /// Fulva's client: once told a partition moved, track the migration's progress from
    /// the destination's replies and read what has not migrated from both sides.
    pub track_migrations: bool,
    /// A replicated server: single-key reads go to the chain's tail only (chain replication
    /// without apportioned queries), not spread over the chain (CRAQ).
    pub reads_at_tail: bool,
    /// What client threads do while no reply arrives.
    pub idle: dataplane::runner::Idle,
}

/// Counters all threads add to, read by the progress line.
#[derive(Default)]
pub struct Progress {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub retries: AtomicU64,
}

pub struct ThreadResult {
    /// When the thread's last operation ended (before its results were assembled).
    pub finished: Instant,
    pub recorder: Recorder,
    pub history: Vec<HistoryOp>,
    pub counters: Counters,
    pub port: PortStats,
}

/// Everything a phase produced, merged over threads.
pub struct PhaseResult {
    pub recorder: Recorder,
    pub history: Vec<HistoryOp>,
    pub counters: Counters,
    pub elapsed: Duration,
    pub port: PortStats,
}

/// What a phase does.
pub enum Phase {
    /// Insert every record once.
    Load,
    /// Run the workload for a duration or an operation count.
    Run {
        duration: Option<Duration>,
        operations: Option<u64>,
    },
    /// Read every record once (after a restart: what did the servers keep?).
    ReadBack,
}

/// Client-side addressing: where thread `t` binds.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddrs {
    pub base: SocketAddrV4,
}

impl ClientAddrs {
    fn of(&self, thread: usize) -> SocketAddrV4 {
        if self.base.port() == 0 {
            self.base // Kernel sockets pick an ephemeral port each.
        } else {
            SocketAddrV4::new(*self.base.ip(), self.base.port() + thread as u16)
        }
    }
}

static NEXT_WRITER: AtomicU64 = AtomicU64::new(1);

/// Runs one phase on `settings.threads` threads and merges their results. `epoch` is time
/// zero for latencies' timestamps and the history.
#[allow(clippy::too_many_arguments)]
pub fn run_phase(
    phase: Phase,
    label: &str,
    fabric: &Fabric,
    addrs: ClientAddrs,
    cluster: &Arc<Cluster>,
    spec: &Arc<WorkloadSpec>,
    settings: Settings,
    inserts: &Arc<InsertCounter>,
    epoch: Instant,
    stop: &Arc<AtomicBool>,
) -> io::Result<PhaseResult> {
    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let deadline = match &phase {
        Phase::Run {
            duration: Some(d), ..
        } => Some(started + *d),
        _ => None,
    };
    let mut handles = Vec::new();
    for thread in 0..settings.threads {
        let port = fabric.bind(addrs.of(thread)).map_err(|e| {
            io::Error::new(e.kind(), format!("client thread {thread} cannot bind: {e}"))
        })?;
        let writer = NEXT_WRITER.fetch_add(1, Ordering::Relaxed) as u32;
        let client_id = fastrand::u32(..) ^ writer.rotate_left(16);
        let source = match &phase {
            Phase::Load => OpSource::load(share(spec.record_count, settings.threads, thread)),
            Phase::ReadBack => {
                OpSource::read_back(share(spec.record_count, settings.threads, thread))
            }
            Phase::Run { operations, .. } => OpSource::run(
                spec,
                settings.seed ^ u64::from(writer).wrapping_mul(0x9E37_79B9),
                operations.map(|n| share(n, settings.threads, thread).count() as u64),
            ),
        };
        let engine = Engine::new(
            port,
            Arc::clone(cluster),
            Arc::clone(spec),
            settings,
            client_id,
            writer,
            epoch,
        );
        let (inserts, stop, progress) =
            (Arc::clone(inserts), Arc::clone(stop), Arc::clone(&progress));
        handles.push(
            std::thread::Builder::new()
                .name(format!("client-{thread}"))
                .spawn(move || engine.run(source, &inserts, deadline, &stop, &progress))?,
        );
    }
    let total = match &phase {
        Phase::Load | Phase::ReadBack => Some(spec.record_count),
        Phase::Run { operations, .. } => *operations,
    };
    show_progress(
        label,
        &handles,
        &progress,
        started,
        deadline,
        total,
        settings.progress,
    );
    let mut merged = PhaseResult {
        recorder: Recorder::default(),
        history: Vec::new(),
        counters: Counters::default(),
        elapsed: Duration::ZERO,
        port: PortStats::default(),
    };
    let mut finished = started;
    for handle in handles {
        let result = handle
            .join()
            .map_err(|_| io::Error::other("a client thread panicked"))?;
        finished = finished.max(result.finished);
        merged.recorder.merge(&result.recorder);
        merged.history.extend(result.history);
        merged.counters.add(&result.counters);
        merged.port.add(&result.port);
    }
    merged.elapsed = finished.duration_since(started);
    Ok(merged)
}

/// Runs `operations` of the workload as one client thread on the calling thread, over
/// `port`, without a progress line: for benchmarks that measure the client's own cost.
pub fn run_on_this_thread(
    port: Box<dyn dataplane::Port>,
    cluster: Arc<Cluster>,
    spec: Arc<WorkloadSpec>,
    settings: Settings,
    operations: u64,
) -> ThreadResult {
    let writer = NEXT_WRITER.fetch_add(1, Ordering::Relaxed) as u32;
    let source = OpSource::run(&spec, settings.seed, Some(operations));
    let inserts = InsertCounter::new(spec.record_count);
    let engine = Engine::new(
        port,
        cluster,
        spec,
        settings,
        writer,
        writer,
        Instant::now(),
    );
    engine.run(
        source,
        &inserts,
        None,
        &AtomicBool::new(false),
        &Progress::default(),
    )
}

/// The `thread`-th of `threads` near-equal shares of `0..n`.
fn share(n: u64, threads: usize, thread: usize) -> std::ops::Range<u64> {
    let threads = threads as u64;
    let thread = thread as u64;
    (n * thread / threads)..(n * (thread + 1) / threads)
}

/// Prints a progress line about once a second until every thread has finished.
fn show_progress<T>(
    label: &str,
    handles: &[std::thread::JoinHandle<T>],
    progress: &Progress,
    started: Instant,
    deadline: Option<Instant>,
    total: Option<u64>,
    enabled: bool,
) {
    let interactive = io::stderr().is_terminal();
    let mut last = (Instant::now(), 0u64);
    let mut next_print = Instant::now() + Duration::from_secs(1);
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        if !enabled || Instant::now() < next_print {
            continue;
        }
        next_print += Duration::from_secs(1);
        let now = Instant::now();
        let done = progress.completed.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, done);
        let goal = match (total, deadline) {
            (Some(total), _) => format!("{:.0}%", 100.0 * done as f64 / total.max(1) as f64),
            (None, Some(deadline)) => format!(
                "{:.0}s left",
                deadline.saturating_duration_since(now).as_secs_f64()
            ),
            (None, None) => String::new(),
        };
        let line = format!(
            "[{label} {:>5.1}s] {:>12} ops  {:>10.0} ops/s  retries {}  failed {}  {goal}",
            now.duration_since(started).as_secs_f64(),
            done,
            rate,
            progress.retries.load(Ordering::Relaxed),
            progress.failed.load(Ordering::Relaxed),
        );
        if interactive {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        let _ = io::stderr().flush();
    }
    if enabled && interactive {
        eprintln!();
    }
}
