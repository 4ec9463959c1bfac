//! Serving client requests against one partition (one core's share of every shard it
//! hosts). Sans-I/O: `handle` turns a request datagram into a reply in the same buffer.
//! During a migration the partition's role for the shard decides who answers a request:
//! see `docs/migration.md` for the rules and why they keep every operation linearizable.

use crate::dedup::WriteDedup;
use crate::incoming::Incoming;
use crate::journal::{Journal, Record, ShardEvent, StreamOrigin};
use crate::lost::LostGroups;
use crate::outgoing::{Outgoing, OutgoingPlan, OutgoingStats};
use crate::returning::Returning;
use dataplane::port::AnswerInPlace;
use dataplane::wire::Flags;
use dataplane::Packet;
use kv::{Partition, PartitionMap};
use std::net::SocketAddrV4;
use std::time::Instant;

mod chain;
mod counters;
mod fast_path;
mod multi;
mod pulls;
mod receive;
mod recovery;
mod requests;

pub use counters::{DropReason, MigrationCounters, ServeCounters};
use fast_path::{get_answer, PREFETCH_CHUNK};
use multi::MultiOutcome;
use pulls::MAX_PARKED;
use receive::FinishedStream;
pub use recovery::Recovery;

/// What a partition does for a shard.
pub enum Role {
    /// It owns the shard's partition.
    Owned,
    /// The partition is migrating away (see `outgoing.rs`).
    Outgoing(Box<Outgoing>),
    /// The partition is migrating in (see `incoming.rs`).
    Incoming(Box<Incoming>),
    /// The partition moved: requests are answered MOVED with the new owner.
    Moved { to: SocketAddrV4, shard: u16 },
    /// A migration in was aborted: what is here goes back to the source, and requests are
    /// passed to it (see `returning.rs`).
    Returning(Box<Returning>),
    /// It owns the shard's partition, but a crash at the migration's other end lost some
    /// groups (see `lost.rs`): those are refused with DATA_LOST, the rest served.
    Damaged(Box<LostGroups>),
}

struct Shard {
    id: u16,
    table: Partition,
    role: Role,
    /// Where the tombstone sweep goes on (`sweep_tombstones`).
    sweep_cursor: usize,
}

impl Shard {
    /// The switch steered this request here as to a migration's destination, yet this
    /// partition owns the shard and holds nothing of it: its INIT has not arrived. Served
    /// here, a read would come from an empty table and a write would make that INIT
    /// refused (the table would no longer be empty); the client is asked to retry.
    fn steered_before_init(&self, flags: Flags) -> bool {
        matches!(self.role, Role::Owned)
            && flags.contains(Flags::REDIRECTED)
            && self.table.is_fresh()
    }

    /// Whether a delete here must leave a tombstone: while a migration may still bring an
    /// older copy of the key (a destination), must carry the delete on (a source), or
    /// takes the table back (an abort's return). A partition that owns the shard outright
    /// removes the key.
    fn keeps_tombstones(&self) -> bool {
        !matches!(self.role, Role::Owned | Role::Damaged(_))
    }

    /// Drops this shard's tombstones a slice at a time once it owns the shard outright
    /// (after a migration in, or one out that was called off).
    fn sweep_tombstones(&mut self) {
        if self.sweeping() {
            self.sweep_cursor = self
                .table
                .purge_tombstones_from(self.sweep_cursor, SWEEP_BUCKETS);
        }
    }

    fn sweeping(&self) -> bool {
        !self.keeps_tombstones() && self.table.tombstones() > 0
    }
}

/// Buckets of a table a poll sweeps for tombstones: each holds 7 slots, and a slot's entry
/// is read to tell a tombstone. A slice costs ~1.7 µs (`cargo bench -p kv --bench sweep`:
/// 18 ms for a table of 1 M keys); swept at once, 10 M keys would stall the core ~0.2 s.
const SWEEP_BUCKETS: usize = 16;

/// One core's partition of every shard the server hosts, with the core's write dedup.
pub struct PartitionServer {
    partition: u32,
    map: PartitionMap,
    shards: Vec<Shard>,
    dedup: WriteDedup,
    counters: ServeCounters,
    migration: MigrationCounters,
    finished_streams: Vec<FinishedStream>,
    /// The stats of the latest migration out once it ended.
    latest_outgoing: OutgoingStats,
    /// Per packet of the burst being served: shard index and key hash, for prefetching.
    targets: Vec<Option<(usize, u64)>>,
    /// Multi-key replies are built here: the request is still being read while they grow.
    scratch: Box<[u8; dataplane::port::BUFFER_CAPACITY]>,
    /// Packets produced outside the request → reply path (late-write replies, parked
    /// requests answered once their pull arrived).
    extra: Vec<Box<Packet>>,
    /// Reads waiting for a pull, by key hash.
    parked: Vec<(u64, Box<Packet>)>,
    /// The time its caller last gave it (`set_time`, `poll_migrations`).
    now: Instant,
    /// This run of the partition (`set_incarnation`): stream acknowledgements carry it, so
    /// a source tells a destination that restarted from one that has not yet seen INIT.
    incarnation: u64,
    /// What changed since the loop last wrote the log (`journal.rs`); disabled without one.
    journal: Journal,
    /// A snapshot of the partition being written into the journal (`recovery.rs`).
    snapshot: Option<recovery::SnapshotCursor>,
    /// This partition's replica of its chain, when replicated (`chain.rs`).
    chain: Option<Box<chain::ChainState>>,
}

/// Shards a partition holds at once. A migration in for a new shard adds one; past this,
/// its messages are counted and dropped, so a peer cannot grow the list without bound.
pub const MAX_SHARDS: usize = 64;

/// What became of a handled packet.
enum Action {
    /// The buffer holds a reply of this length; send it back where it came from, or to
    /// the reply-to address of a forwarded request.
    Reply(usize, Option<SocketAddrV4>),
    /// The buffer holds a request of this length to pass to another server.
    Forward(usize, SocketAddrV4),
    /// The buffer holds a finished datagram with its addresses set.
    Ready,
    /// Nothing to send (the request was taken over, e.g. queued as a late write).
    Consumed,
    /// A read that waits for a pull of its key (hash): keep a copy.
    Park(u64),
}

/// A DPDK port answers plain GETs in the mbufs they arrived in, ahead of the rest of their
/// burst. Only reads of shards this core owns outright qualify (`serve_plain_get`); a read
/// changes nothing, and nothing the burst's other datagrams do has been seen by anyone yet,
/// so answering it first is the network having delivered it first (see `AnswerInPlace`).
impl AnswerInPlace for PartitionServer {
    fn prepare(&mut self, payloads: &[&[u8]]) {
        for chunk in payloads.chunks(PREFETCH_CHUNK) {
            self.start_loads(chunk.iter().copied());
        }
    }

    fn answer(&mut self, len: usize, buf: &mut [u8]) -> Option<usize> {
        self.serve_plain_get(len, buf)
    }
}

impl PartitionServer {
    /// Partition `partition` of `map` for each shard in `shards`, sized for `capacity`
    /// entries per shard.
    pub fn new(map: &PartitionMap, partition: u32, shards: &[u16], capacity: usize) -> Self {
        PartitionServer {
            partition,
            map: *map,
            shards: shards
                .iter()
                .map(|&id| Shard {
                    id,
                    table: Partition::new(map, partition, capacity),
                    role: Role::Owned,
                    sweep_cursor: 0,
                })
                .collect(),
            dedup: WriteDedup::default(),
            counters: ServeCounters::default(),
            migration: MigrationCounters::default(),
            finished_streams: Vec::new(),
            latest_outgoing: OutgoingStats::default(),
            targets: Vec::new(),
            scratch: Box::new([0; dataplane::port::BUFFER_CAPACITY]),
            extra: Vec::new(),
            parked: Vec::new(),
            // A placeholder until the caller gives the time (before any migration runs).
            now: Instant::now(),
            incarnation: 0,
            journal: Journal::default(),
            snapshot: None,
            chain: None,
        }
    }

    /// Starts recording every change in the journal for a durable log, beginning with the
    /// shards this partition serves (a server with an empty log).
    pub fn enable_journal(&mut self) {
        self.journal = Journal::enabled();
        for shard in &self.shards {
            self.journal.record(&Record::Shard {
                shard: shard.id,
                event: ShardEvent::Hosted,
            });
        }
    }

    /// The journal's records since the last call: the loop writes them to its log before
    /// it sends the replies of the turn that made them.
    pub fn take_journal(&mut self) -> Vec<u8> {
        self.journal.take()
    }

    pub fn journal_is_empty(&self) -> bool {
        self.journal.is_empty()
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// What the bound on write-dedup clients did (`dedup.rs`).
    pub fn dedup_counters(&self) -> crate::dedup::DedupCounters {
        self.dedup.counters
    }

    pub fn counters(&self) -> &ServeCounters {
        &self.counters
    }

    /// Migration counters, including those of migrations still running.
    pub fn migration_counters(&self) -> MigrationCounters {
        let mut counters = self.migration;
        counters.latest_outgoing = self.latest_outgoing;
        for shard in &self.shards {
            match &shard.role {
                Role::Outgoing(agent) => {
                    counters.outgoing.add(&agent.stats());
                    counters.latest_outgoing = agent.stats();
                    counters.outgoing_active += 1;
                }
                Role::Incoming(agent) => {
                    counters.incoming.add(&agent.stats());
                    counters.pulls.add(&agent.puller.stats());
                    if let Some(bulk) = &agent.bulk {
                        counters.bulk.add(&bulk.stats());
                    }
                    counters.incoming_active += 1;
                }
                Role::Returning(agent) => {
                    counters.returned.add(&agent.stats());
                    counters.returning_active += u32::from(!agent.is_done());
                }
                _ => {}
            }
        }
        counters
    }

    /// Live entries across every shard of this partition.
    pub fn entries(&self) -> usize {
        self.shards.iter().map(|s| s.table.len()).sum()
    }

    pub fn table(&self, shard: u16) -> Option<&Partition> {
        self.shards.iter().find(|s| s.id == shard).map(|s| &s.table)
    }

    pub fn table_mut(&mut self, shard: u16) -> Option<&mut Partition> {
        self.shards
            .iter_mut()
            .find(|s| s.id == shard)
            .map(|s| &mut s.table)
    }

    pub fn role(&self, shard: u16) -> Option<&Role> {
        self.shards.iter().find(|s| s.id == shard).map(|s| &s.role)
    }

    /// Whether `start_outgoing` would take a migration of `shard` away: the shard is here
    /// and neither migrating nor moved (nor still ending an aborted migration).
    pub fn check_outgoing(&self, shard: u16) -> Result<(), String> {
        let partition = self.partition;
        let Some(hosted) = self.shards.iter().find(|s| s.id == shard) else {
            return Err(format!("shard {shard} is not hosted here"));
        };
        if let Role::Damaged(lost) = &hosted.role {
            return Err(format!(
                "shard {shard} of partition {partition} lost {} groups in a crash; they \
                 cannot move",
                lost.count()
            ));
        }
        if !matches!(hosted.role, Role::Owned) {
            return Err(format!(
                "shard {shard} of partition {partition} is already migrating or moved"
            ));
        }
        Ok(())
    }

    /// The control plane saw the destination chain of `shard`'s migration out get a new
    /// head at `to` (its old head died). The migration is settled with it as when the new
    /// head asks (MIGRATE_TAKEOVER), which it cannot if its predecessor died before
    /// INIT reached it. False when no migration of `shard` is left to settle.
    pub fn destination_replaced(&mut self, shard: u16, to: SocketAddrV4) -> bool {
        self.shards
            .iter_mut()
            .find(|s| s.id == shard)
            .is_some_and(|s| match &mut s.role {
                Role::Outgoing(agent) => agent.take_over_destination(to),
                _ => false,
            })
    }

    /// Starts migrating this partition of `plan.shard` away.
    pub fn start_outgoing(&mut self, plan: OutgoingPlan) -> Result<(), String> {
        self.check_outgoing(plan.shard)?;
        let partition = self.partition;
        let Some(shard) = self.shards.iter_mut().find(|s| s.id == plan.shard) else {
            unreachable!("checked above");
        };
        let mut agent = Outgoing::new(plan, &self.map, partition);
        agent.start(&shard.table, &self.dedup);
        shard.role = Role::Outgoing(Box::new(agent));
        self.journal.record(&Record::Shard {
            shard: shard.id,
            event: ShardEvent::Outgoing,
        });
        Ok(())
    }

    /// Sweeps a slice of tombstones from each shard this partition owns outright and
    /// still holds some of. Tombstones matter only while a migration could bring an older
    /// copy or must carry a delete on; after it they would only take room. Call every
    /// poll: a slice is small.
    pub fn sweep_tombstones(&mut self) {
        let replay = self.chain.as_ref().map(|c| &c.replay);
        for shard in &mut self.shards {
            if !replay.is_some_and(|r| r.migrating(shard.id)) {
                shard.sweep_tombstones();
            }
        }
    }

    /// Whether `sweep_tombstones` has work left. A follower keeps the tombstones of a shard
    /// its records show migrating, as its head does: a successor taking over the
    /// migration sends them back to the source if it is called off.
    pub fn sweeping(&self) -> bool {
        let replay = self.chain.as_ref().map(|c| &c.replay);
        self.shards
            .iter()
            .any(|s| s.sweeping() && !replay.is_some_and(|r| r.migrating(s.id)))
    }

    /// Reads parked for a pull, still unanswered.
    pub fn parked_reads(&self) -> usize {
        self.parked.len()
    }

    /// Whether a migration in or out of this partition has work to drive (timers,
    /// replies to send): any shard in a migrating role, or replies queued by one. The
    /// per-poll migration hooks return at once otherwise.
    #[inline]
    pub fn has_migrations(&self) -> bool {
        !self.extra.is_empty()
            || self.shards.iter().any(|s| match &s.role {
                Role::Owned | Role::Moved { .. } | Role::Damaged(_) => false,
                Role::Returning(agent) => !agent.is_finished(),
                Role::Incoming(_) | Role::Outgoing(_) => true,
            })
    }

    /// The time from now on: requests handled next see it (migration acknowledgements time
    /// round trips by it, bulk pulls spend budget by it). The server reads no clock.
    /// Names this run of the partition; a restarted server must take a new one (the
    /// server draws it at start). Stream acknowledgements carry it.
    pub fn set_incarnation(&mut self, incarnation: u64) {
        self.incarnation = incarnation;
    }

    #[inline]
    pub fn set_time(&mut self, now: Instant) {
        self.now = now;
        self.dedup.set_time(now);
    }

    /// Advances every migration of this partition (at `now`, which becomes the server's
    /// time); packets to send go to `out`.
    #[inline]
    pub fn poll_migrations(&mut self, now: Instant, out: &mut Vec<Box<Packet>>) {
        self.set_time(now);
        if self.has_migrations() {
            self.drive_migrations(now, out);
        }
    }

    #[inline(never)]
    fn drive_migrations(&mut self, now: Instant, out: &mut Vec<Box<Packet>>) {
        out.append(&mut self.extra);
        let mut source_lost = false;
        for shard in &mut self.shards {
            if let Role::Incoming(agent) = &mut shard.role {
                agent.poll(now, out);
                if agent.is_over_at_source() {
                    // Taken over, and the source had it all back already: clients still
                    // addressing this partition go there.
                    let (to, id) = (agent.source, agent.source_shard);
                    self.journal.record(&Record::Shard {
                        shard: shard.id,
                        event: ShardEvent::Moved { to, shard: id },
                    });
                    shard.table = Partition::new(&self.map, self.partition, 0);
                    shard.role = Role::Moved { to, shard: id };
                    continue;
                }
                if let Some(lost) = agent.lost_with_source() {
                    // The source restarted: what is wholly here is this partition's now.
                    self.migration.add_incoming(agent);
                    self.journal.record(&Record::Damaged {
                        shard: shard.id,
                        lost: lost.clone(),
                    });
                    shard.role = Role::Damaged(Box::new(lost));
                    source_lost = true;
                    continue;
                }
            }
            if let Role::Returning(agent) = &mut shard.role {
                agent.poll(now, &shard.table, &self.dedup, out);
                if agent.release_table() {
                    // Everything is back at the source. Logged as moved there: replayed (a
                    // restart, or a replica taking the head's place), a client still
                    // addressing this partition is sent to the source, not refused.
                    shard.table = Partition::new(&self.map, self.partition, 0);
                    let (to, id) = (agent.origin.source, agent.origin.shard);
                    self.journal.record(&Record::Shard {
                        shard: shard.id,
                        event: ShardEvent::Moved { to, shard: id },
                    });
                }
            }
            let Role::Outgoing(agent) = &mut shard.role else {
                continue;
            };
            agent.poll(now, &shard.table, out);
            if agent.is_aborted() {
                self.migration.outgoing.add(&agent.stats());
                self.latest_outgoing = agent.stats();
                let lost = agent.lost_groups();
                shard.role = if lost.is_empty() {
                    self.journal.record(&Record::Shard {
                        shard: shard.id,
                        event: ShardEvent::Kept,
                    });
                    Role::Owned
                } else {
                    self.journal.record(&Record::Damaged {
                        shard: shard.id,
                        lost: lost.clone(),
                    });
                    Role::Damaged(Box::new(lost.clone()))
                };
            } else if agent.is_done() {
                self.migration.outgoing.add(&agent.stats());
                self.latest_outgoing = agent.stats();
                let (to, id) = (agent.plan().destination, agent.plan().destination_shard);
                shard.role = Role::Moved { to, shard: id };
                let moved = ShardEvent::Moved { to, shard: id };
                self.journal.record(&Record::Shard {
                    shard: shard.id,
                    event: moved,
                });
                // The data lives at the destination now; free it here.
                shard.table = Partition::new(&self.map, self.partition, 0);
            }
        }
        if source_lost {
            // Reads parked for pulls from the lost source are answered as the rest now.
            self.release_parked(|_| true);
        }
    }

    /// Serves a burst in three passes over each chunk of up to `PREFETCH_CHUNK` packets:
    /// start loading every request's bucket, then (buckets landed) every entry, then serve.
    /// The loads of a chunk overlap, and the passes need no per-step bookkeeping. Returns,
    /// per packet, whether it is now a datagram to send.
    pub fn handle_burst(&mut self, packets: &mut [Box<Packet>], replies: &mut Vec<bool>) {
        replies.clear();
        for chunk in packets.chunks_mut(PREFETCH_CHUNK) {
            self.start_loads(chunk.iter().map(|packet| packet.payload()));
            for packet in chunk.iter_mut() {
                replies.push(self.handle(packet));
            }
        }
    }

    /// Handles one datagram in place: a request becomes its reply (or a request forwarded
    /// to the server that owns its group), a migration message its acknowledgement.
    /// Returns false when there is nothing to send (a drop is counted with its reason).
    /// Out of line: inlined into `handle_burst`'s loop it cost 18 more instructions per
    /// GET (`scripts/bench-instructions.sh`).
    #[inline(never)]
    pub fn handle(&mut self, packet: &mut Packet) -> bool {
        let (len, buf) = packet.payload_and_buffer();
        if let Some(reply_len) = self.serve_plain_get(len, buf) {
            packet.set_len(reply_len);
            packet.swap_addresses();
            return true;
        }
        self.handle_general(packet)
    }

    /// Everything but a plain GET; out of line, so the plain GET does not pay for its frame.
    #[inline(never)]
    fn handle_general(&mut self, packet: &mut Packet) -> bool {
        match self.handle_payload(packet) {
            Ok(Action::Reply(len, reply_to)) => {
                packet.set_len(len);
                packet.swap_addresses();
                if let Some(to) = reply_to {
                    packet.dst = to;
                }
                true
            }
            Ok(Action::Forward(len, to)) => {
                packet.set_len(len);
                packet.dst = to;
                true
            }
            Ok(Action::Ready) => true,
            Ok(Action::Consumed) => false,
            Ok(Action::Park(hash)) => {
                self.migration.parked += 1;
                let mut copy = Packet::new_boxed();
                copy.buffer_mut()[..packet.len()].copy_from_slice(packet.payload());
                copy.set_len(packet.len());
                (copy.src, copy.dst) = (packet.src, packet.dst);
                self.parked.push((hash, copy));
                false
            }
            Err(reason) => {
                self.counters.count_drop(reason);
                false
            }
        }
    }
}
