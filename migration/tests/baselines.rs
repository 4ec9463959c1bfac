//! The baselines' state machines (Rocksteady, Fulva, source-based) between two partition
//! servers over a network that loses, duplicates and reorders datagrams, with a client
//! that writes and reads while the shard moves: every read must see the last write. The
//! same under an abort half-way, and a second migration after it. And NetMigrate through
//! the software switch: a migration it refuses to steer, and one aborted and migrated again
//! with the first one's control messages delivered late. And a destination that is a chain
//! of two whose head dies mid-migration: its successor settles the migration with the source.

use dataplane::wire::{self, Flags, HeaderRepr, Op, Protocol, Reply, Request, Status};
use dataplane::Packet;
use kv::{key_hash, GroupLayout, PartitionMap};
use migration::chain::ChainConfig;
use migration::{MigrationTicket, OutgoingPlan, PartitionServer, Role, SourceRule};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5000);
const SOURCE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7100);
const DESTINATION: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 7100);
/// The destination's successor in its chain (with `Cluster::with_successor`).
const SUCCESSOR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 4), 7100);
const SWITCH: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 254), 9000);
const SHARD: u16 = 1;
const KEYS: usize = 300;

/// A network that drops, duplicates and reorders datagrams (deterministically, by seed).
struct Network {
    in_flight: Vec<Box<Packet>>,
    rng: fastrand::Rng,
    fault: f64,
}

impl Network {
    fn send(&mut self, packet: Box<Packet>) {
        if self.rng.f64() < self.fault {
            return; // lost
        }
        if self.rng.f64() < self.fault {
            self.in_flight.push(packet.duplicate());
        }
        self.in_flight.push(packet);
    }

    /// Takes a random datagram (reordering), or None.
    fn take(&mut self) -> Option<Box<Packet>> {
        if self.in_flight.is_empty() {
            return None;
        }
        let i = if self.rng.f64() < self.fault {
            self.rng.usize(..self.in_flight.len())
        } else {
            0
        };
        Some(self.in_flight.remove(i))
    }
}

fn is_terminate(packet: &Packet) -> bool {
    wire::parse_header(packet.payload()).is_ok_and(|(header, _)| header.op == Op::Terminate)
}

struct Cluster {
    source: PartitionServer,
    destination: PartitionServer,
    network: Network,
    to_client: Vec<Box<Packet>>,
    plan: OutgoingPlan,
    /// When set, every datagram passes this switch after the faulty network, and control
    /// messages are answered by it.
    switch: Option<tofino::Switch>,
    /// When set, a copy of every control message to the switch is kept here, to be
    /// delivered much later (an extreme reordering).
    held_back: Option<Vec<Box<Packet>>>,
    /// When set, the destination is the head of a chain of two, and this is its successor.
    successor: Option<PartitionServer>,
    /// The destination died: nothing reaches it any more.
    destination_dead: bool,
    /// TERMINATE never reaches the destination, which dies as soon as the cut-over is taken
    /// (the control plane telling the source when `Some(true)`).
    dies_at_cut_over: Option<bool>,
}

impl Cluster {
    fn new(protocol: Protocol, seed: u64) -> (Cluster, Vec<Vec<u8>>) {
        let map = PartitionMap::new(GroupLayout::new(6).unwrap(), 1).unwrap();
        let mut source = PartitionServer::new(&map, 0, &[SHARD], 1024);
        let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("key{i}").into_bytes()).collect();
        for key in &keys {
            source
                .table_mut(SHARD)
                .unwrap()
                .put(key_hash(key), key, b"initial");
        }
        let plan = OutgoingPlan {
            shard: SHARD,
            destination: DESTINATION,
            destination_shard: SHARD,
            switch: SWITCH,
            source: SOURCE,
            items_per_s: Some(3_000.0),
            pipeline: 4,
            protocol,
            ticket: Default::default(),
        };
        source.start_outgoing(plan.clone()).unwrap();
        let cluster = Cluster {
            source,
            destination: PartitionServer::new(&map, 0, &[], 16),
            network: Network {
                in_flight: Vec::new(),
                rng: fastrand::Rng::with_seed(seed),
                fault: 0.05,
            },
            to_client: Vec::new(),
            plan,
            switch: None,
            held_back: None,
            successor: None,
            destination_dead: false,
            dies_at_cut_over: None,
        };
        (cluster, keys)
    }

    /// The destination becomes the head of a chain of two (journals on), before anything
    /// reaches it.
    fn with_successor(mut self) -> Self {
        let map = PartitionMap::new(GroupLayout::new(6).unwrap(), 1).unwrap();
        let mut successor = PartitionServer::new(&map, 0, &[], 16);
        let config = ChainConfig {
            epoch: 1,
            members: vec![DESTINATION, SUCCESSOR],
            learner: None,
        };
        for (server, me) in [
            (&mut self.destination, DESTINATION),
            (&mut successor, SUCCESSOR),
        ] {
            server.enable_journal();
            server.configure_chain(me, config.clone(), 16);
        }
        self.successor = Some(successor);
        self
    }

    /// The destination dies; its successor becomes the chain's head, and the control plane
    /// tells the source (when `tell_source`; otherwise the successor asks it alone).
    fn replace_destination(&mut self, tell_source: bool) {
        self.destination_dead = true;
        let config = ChainConfig {
            epoch: 2,
            members: vec![SUCCESSOR],
            learner: None,
        };
        let successor = self.successor.as_mut().expect("a chain of two");
        successor.configure_chain(SUCCESSOR, config, 16);
        if tell_source {
            self.source.destination_replaced(SHARD, SUCCESSOR);
        }
    }

    /// The destination's chain's live head.
    fn destination_head(&self) -> &PartitionServer {
        match (&self.successor, self.destination_dead) {
            (Some(successor), true) => successor,
            _ => &self.destination,
        }
    }

    /// Delivers one datagram (if any), through the switch if there is one, and polls both
    /// servers.
    fn step(&mut self) {
        if let Some(packet) = self.network.take() {
            match self.switch.as_mut() {
                Some(switch) => {
                    let (mut out, mut dropped) = (Vec::new(), Vec::new());
                    switch.process(packet, &mut out, &mut dropped);
                    for packet in out {
                        self.deliver(packet);
                    }
                }
                None => self.deliver(packet),
            }
        }
        self.poll();
        if let Some(tell_source) = self.dies_at_cut_over {
            if self.plan.ticket.is_committed() && !self.destination_dead {
                self.replace_destination(tell_source);
            }
        }
    }

    fn deliver(&mut self, mut packet: Box<Packet>) {
        let server = match (packet.dst, self.successor.as_mut()) {
            (SOURCE, _) => &mut self.source,
            (DESTINATION, _) if self.destination_dead => return,
            (DESTINATION, _) if self.dies_at_cut_over.is_some() && is_terminate(&packet) => return,
            (DESTINATION, _) => &mut self.destination,
            (SUCCESSOR, Some(successor)) => successor,
            (CLIENT, _) => return self.to_client.push(packet),
            (other, _) => panic!("no host at {other}"),
        };
        if server.handle(&mut packet) {
            // A chain's head answers once its successor holds what the answer depends on.
            if let Some(packet) = server.gate(packet) {
                self.network.send(packet);
            }
        }
    }

    fn poll(&mut self) {
        let now = Instant::now();
        let mut servers = vec![(&mut self.source, SOURCE)];
        if !self.destination_dead {
            servers.push((&mut self.destination, DESTINATION));
        }
        servers.extend(self.successor.as_mut().map(|s| (s, SUCCESSOR)));
        for (server, addr) in servers {
            let mut out = Vec::new();
            server.replay_migrations(64);
            server.poll_migrations(now, &mut out);
            let mut out: Vec<_> = out.into_iter().filter_map(|p| server.gate(p)).collect();
            server.poll_chain(now, &mut out);
            for mut packet in out {
                packet.src = addr;
                if let (Some(held), SWITCH) = (self.held_back.as_mut(), packet.dst) {
                    held.push(packet.duplicate());
                }
                self.network.send(packet);
            }
        }
    }

    /// Migrates the shard again, with a new ticket (and so a new stream id).
    fn restart(&mut self) {
        self.plan.ticket = Arc::new(MigrationTicket::fresh(1));
        self.source.start_outgoing(self.plan.clone()).unwrap();
    }

    /// The abort is over: the source serves the whole shard, the destination holds none.
    fn returned(&self) -> bool {
        let destination = self.destination_head();
        matches!(self.source.role(SHARD), Some(Role::Owned))
            && destination.migration_counters().returning_active == 0
            && matches!(
                destination.role(SHARD),
                Some(Role::Returning(_) | Role::Moved { .. })
            )
    }

    fn migrated(&self) -> bool {
        matches!(self.source.role(SHARD), Some(Role::Moved { .. }))
            && matches!(self.destination_head().role(SHARD), Some(Role::Owned))
    }

    /// Migrates the shard from the destination back to the source (its origin), with the
    /// same protocol and a new ticket.
    fn migrate_back(&mut self) {
        let back = OutgoingPlan {
            destination: SOURCE,
            source: DESTINATION,
            ticket: Arc::new(MigrationTicket::fresh(1)),
            ..self.plan.clone()
        };
        self.destination.start_outgoing(back).unwrap();
    }

    fn migrated_back(&self) -> bool {
        matches!(self.source.role(SHARD), Some(Role::Owned))
            && matches!(self.destination.role(SHARD), Some(Role::Moved { .. }))
    }
}

/// A client with one request outstanding: retransmits, follows MOVED, waits on
/// RETRY_LATER, merges the halves of a double read, and returns the answer.
struct Client {
    route: SocketAddrV4,
    seq: u64,
    moved: u64,
    retried_later: u64,
}

impl Client {
    fn call(&mut self, cluster: &mut Cluster, key: &[u8], value: Option<&[u8]>) -> Option<Vec<u8>> {
        self.seq += 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut resend_at = Instant::now();
        let mut half = None;
        let mut unanswered = 0;
        while Instant::now() < deadline {
            if Instant::now() >= resend_at {
                // As the YCSB client does: a server MOVED sent it to that stays silent may
                // be gone (a destination's head that died); the source answers MOVED anew.
                unanswered += 1;
                if unanswered > 3 {
                    (self.route, unanswered) = (SOURCE, 0);
                }
                let request = match value {
                    Some(value) => Request::Put { key, value },
                    None => Request::Get { key },
                };
                let header = HeaderRepr {
                    op: request.op(),
                    flags: Flags::default(),
                    status: Status::Ok,
                    shard: SHARD,
                    seq: self.seq,
                    key_hash: key_hash(key),
                    client: 7,
                    oldest_gap: 0,
                };
                let mut packet = Packet::new_boxed();
                let len = wire::emit_request(&header, &request, packet.buffer_mut()).unwrap();
                packet.set_len(len);
                (packet.src, packet.dst) = (CLIENT, self.route);
                cluster.network.send(packet);
                resend_at = Instant::now() + Duration::from_millis(3);
            }
            cluster.step();
            for reply in std::mem::take(&mut cluster.to_client) {
                let (header, _) = wire::parse_header(reply.payload()).unwrap();
                let payload = if header.flags.contains(Flags::PROGRESS) {
                    wire::split_progress(reply.payload()).unwrap().0
                } else {
                    reply.payload()
                };
                let body = &payload[wire::HEADER_LEN..];
                if header.seq != self.seq {
                    continue; // a late or duplicated answer to an earlier request
                }
                unanswered = 0;
                let double_read = header.flags.contains(Flags::DOUBLE_READ);
                let from_destination = header.flags.contains(Flags::REDIRECTED);
                match (header.status, Reply::parse(&header, body).unwrap()) {
                    // The source handed the group over: the destination's half answers.
                    (Status::Moved, _) if double_read && !from_destination => {}
                    (Status::Ok | Status::NotFound, Reply::Get { value, .. }) if double_read => {
                        let answer = (header.status == Status::Ok).then(|| value.to_vec());
                        let defers = header.flags.contains(Flags::NOT_MIGRATED);
                        match (from_destination, defers, half.take()) {
                            (true, false, _) => return answer,
                            (true, true, Some(Half::Source(source))) => return source,
                            (true, true, _) => half = Some(Half::DestinationDefers),
                            (false, _, Some(Half::DestinationDefers)) => return answer,
                            (false, _, _) => half = Some(Half::Source(answer)),
                        }
                    }
                    (Status::Moved, Reply::Moved { to, .. }) => {
                        self.moved += 1;
                        self.route = to;
                        if to == DESTINATION && cluster.destination_dead {
                            // MOVED names the chain's head it knew; the client knows the
                            // chain's members (its directory) and goes to the head now.
                            self.route = SUCCESSOR;
                        }
                        resend_at = Instant::now();
                    }
                    (Status::RetryLater, _) => {
                        self.retried_later += 1;
                        resend_at = Instant::now() + Duration::from_micros(200);
                    }
                    (Status::Ok, Reply::Get { value, .. }) => return Some(value.to_vec()),
                    (Status::NotFound, Reply::Get { .. }) => return None,
                    (Status::Ok, Reply::Put { .. }) => return Some(Vec::new()),
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        }
        panic!(
            "request {} unanswered for 10 s (route {}), source {:?} destination {:?}",
            self.seq,
            self.route,
            cluster.source.migration_counters().outgoing,
            cluster.destination_head().migration_counters()
        );
    }
}

/// The half of a NetMigrate double read that came first (as the YCSB client merges them:
/// the destination's answer wins unless it defers with NOT_MIGRATED).
enum Half {
    Source(Option<Vec<u8>>),
    DestinationDefers,
}

/// A client's workload and what it expects every key to hold.
struct Workload {
    keys: Vec<Vec<u8>>,
    model: HashMap<Vec<u8>, Vec<u8>>,
    rng: fastrand::Rng,
    op: u64,
}

impl Workload {
    fn new(keys: Vec<Vec<u8>>, seed: u64) -> Self {
        let model = keys
            .iter()
            .map(|k| (k.clone(), b"initial".to_vec()))
            .collect();
        Workload {
            keys,
            model,
            rng: fastrand::Rng::with_seed(seed ^ 0xABCD),
            op: 0,
        }
    }

    /// Writes and reads random keys until `done`: each read returns the last value written.
    fn run_until(
        &mut self,
        cluster: &mut Cluster,
        client: &mut Client,
        what: &str,
        done: impl Fn(&Cluster) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(cluster) {
            assert!(Instant::now() < deadline, "{what} did not happen in time");
            let key = self.keys[self.rng.usize(..self.keys.len())].clone();
            self.op += 1;
            if self.rng.bool() {
                let value = format!("v{}", self.op).into_bytes();
                client.call(cluster, &key, Some(&value));
                self.model.insert(key, value);
            } else {
                let read = client.call(cluster, &key, None);
                assert_eq!(
                    read.as_ref(),
                    self.model.get(&key),
                    "{what}: stale read of {key:?}"
                );
            }
        }
    }

    /// Reads every key: each holds the last value written.
    fn check_all(&self, cluster: &mut Cluster, client: &mut Client, what: &str) {
        for key in &self.keys {
            let read = client.call(cluster, key, None);
            assert_eq!(read.as_ref(), self.model.get(key), "{what}: {key:?}");
        }
    }
}

fn client() -> Client {
    Client {
        route: SOURCE,
        seq: 0,
        moved: 0,
        retried_later: 0,
    }
}

/// Writes and reads random keys until the shard has moved, then reads every key: each read
/// returns the last value written.
fn migrate_under_faults(protocol: Protocol, seed: u64) -> (Cluster, Client) {
    let (mut cluster, keys) = Cluster::new(protocol, seed);
    let mut client = client();
    let mut workload = Workload::new(keys, seed);
    let what = format!("{protocol:?} migration");
    workload.run_until(&mut cluster, &mut client, &what, Cluster::migrated);
    workload.check_all(&mut cluster, &mut client, &what);
    assert!(client.moved > 0, "{protocol:?}: the client followed MOVED");
    (cluster, client)
}

/// Aborts a migration half-way under faults: the shard comes back to the source with every
/// write (also those the destination applied), and a second migration to the same
/// destination then completes (its stream is told apart from the aborted one's).
fn abort_under_faults(protocol: Protocol, seed: u64) -> Cluster {
    let (mut cluster, keys) = Cluster::new(protocol, seed);
    let mut client = client();
    let mut workload = Workload::new(keys, seed);
    let what = format!("{protocol:?}, seed {seed}");
    abort_half_way(&mut cluster, &mut client, &mut workload, &what);
    workload.check_all(&mut cluster, &mut client, &what);
    let outgoing = cluster.source.migration_counters().outgoing;
    assert!(
        outgoing.aborted && !outgoing.finished,
        "{what}: {outgoing:?}"
    );
    cluster.restart();
    workload.run_until(&mut cluster, &mut client, &what, Cluster::migrated);
    workload.check_all(&mut cluster, &mut client, &what);
    cluster
}

#[test]
fn rocksteady_moves_ownership_first_and_pulls_what_reads_miss() {
    for seed in 1..=3 {
        let (cluster, _) = migrate_under_faults(Protocol::Rocksteady, seed);
        let counters = cluster.destination.migration_counters();
        assert!(
            counters.pulls.keys > 0,
            "reads of keys not there yet were pulled: {counters:?}"
        );
        let source = cluster.source.migration_counters().outgoing;
        assert!(source.pulled_keys > 0);
        // The bulk transfer: the destination pulled every key once, in parallel runs,
        // asking again what the network lost.
        assert_eq!(source.keys_moved, KEYS as u64, "{source:?}");
        assert_eq!(source.groups_done, source.groups);
        assert!(
            counters.bulk.requests > 4 && counters.bulk.resent > 0,
            "{counters:?}"
        );
        assert_eq!(
            counters.incoming.items_applied + counters.incoming.items_stale,
            KEYS as u64
        );
    }
}

#[test]
fn fulva_destination_serves_writes_and_pulls_single_reads() {
    for seed in 1..=3 {
        migrate_under_faults(Protocol::Fulva, seed);
    }
}

#[test]
fn source_based_reships_late_writes_and_stops_only_at_the_end() {
    for seed in 1..=3 {
        let (cluster, client) = migrate_under_faults(Protocol::SourceBased, seed);
        let outgoing = cluster.source.migration_counters().outgoing;
        assert!(outgoing.catch_up_rounds >= 1);
        assert!(
            outgoing.dirty_keys > 0,
            "writes after a group left were re-shipped"
        );
        assert!(client.moved >= 1);
    }
}

/// A shard migrated to the destination and back to its origin (A→B→A) under loss,
/// duplication and reordering, with every protocol (NetMigrate through the switch): the
/// origin, which had handed the shard over and holds nothing of it, takes the migration
/// back in, and every read sees the last write. (The origin used to drop the second INIT,
/// since its partition was `Moved`, not free: the migration back never finished.)
#[test]
fn a_shard_migrates_back_to_its_origin() {
    for protocol in [
        Protocol::NetMigrate,
        Protocol::Rocksteady,
        Protocol::Fulva,
        Protocol::SourceBased,
    ] {
        for seed in 1..=2 {
            let (mut cluster, keys) = Cluster::new(protocol, seed);
            if protocol == Protocol::NetMigrate {
                cluster.switch = Some(tofino::Switch::new(tofino::SwitchConfig::new(SWITCH, 6)));
            }
            let mut client = client();
            let mut workload = Workload::new(keys, seed);
            let what = format!("{protocol:?} A→B→A, seed {seed}");
            workload.run_until(&mut cluster, &mut client, &what, Cluster::migrated);
            cluster.migrate_back();
            workload.run_until(&mut cluster, &mut client, &what, Cluster::migrated_back);
            workload.check_all(&mut cluster, &mut client, &what);
            let back = cluster.destination.migration_counters().outgoing;
            assert!(back.finished && back.keys_moved > 0, "{what}: {back:?}");
            if let Some(switch) = &cluster.switch {
                let counters = switch.counters();
                assert_eq!(
                    (counters.pairs_installed, counters.pairs_removed),
                    (2, 2),
                    "{what}: {counters:?}"
                );
            }
        }
    }
}

/// Runs the workload until a quarter of the keys reached the destination, aborts the
/// migration, and runs it on until the shard is back at the source.
fn abort_half_way(cluster: &mut Cluster, client: &mut Client, workload: &mut Workload, what: &str) {
    workload.run_until(cluster, client, what, |c| {
        c.destination.migration_counters().incoming.items_applied >= KEYS as u64 / 4
    });
    cluster.plan.ticket.abort().expect("not cutting over yet");
    workload.run_until(cluster, client, what, Cluster::returned);
}

#[test]
fn aborted_baselines_give_the_shard_back_and_migrate_again() {
    for protocol in [Protocol::Rocksteady, Protocol::Fulva, Protocol::SourceBased] {
        for seed in 1..=3 {
            let cluster = abort_under_faults(protocol, seed);
            let returned = cluster.destination.migration_counters().returned;
            assert_eq!(returned.returns, 1, "{protocol:?}: {returned:?}");
            if protocol == Protocol::SourceBased {
                // Its source kept every write: nothing comes back.
                assert_eq!(returned.keys_returned, 0);
            } else {
                assert!(returned.keys_returned > 0, "{protocol:?}: {returned:?}");
            }
        }
    }
}

/// A destination that already holds data of the shard, or whose partitions or group bits
/// differ from the source's, answers the INIT `ERROR` (a migration never merges into live
/// data, nor scatters keys over other groups); the source then calls the migration off by
/// itself, its ABORT ends at once (the destination holds nothing of it), the destination's
/// own data stays, and every key reads as before. (A refused INIT used to be dropped
/// without an answer, and the migration hung.)
#[test]
fn a_destination_that_cannot_take_the_shard_refuses_it_and_the_migration_is_called_off() {
    let mine = b"destination's own".as_slice();
    for (what, group_bits, holds_data) in [
        ("holds data of the shard", 6, true),
        ("has other group bits", 7, false),
    ] {
        let (mut cluster, keys) = Cluster::new(Protocol::Rocksteady, 11);
        cluster.network.fault = 0.0;
        let map = PartitionMap::new(GroupLayout::new(group_bits).unwrap(), 1).unwrap();
        cluster.destination = PartitionServer::new(&map, 0, &[SHARD], 16);
        if holds_data {
            let table = cluster.destination.table_mut(SHARD).unwrap();
            table.put(key_hash(mine), mine, b"kept");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(cluster.source.role(SHARD), Some(Role::Owned))
            || cluster.source.migration_counters().outgoing_active > 0
        {
            assert!(
                Instant::now() < deadline,
                "{what}: the migration was called off"
            );
            cluster.step();
        }
        assert!(cluster.destination.counters().refused_inits > 0, "{what}");
        let outgoing = cluster.source.migration_counters().outgoing;
        assert!(
            outgoing.aborted && outgoing.destination_refusals > 0 && outgoing.returned_keys == 0,
            "{what}: {outgoing:?}"
        );
        assert!(matches!(cluster.destination.role(SHARD), Some(Role::Owned)));
        if holds_data {
            let table = cluster.destination.table(SHARD).unwrap();
            assert!(matches!(
                table.get(key_hash(mine), mine),
                kv::Lookup::Found { .. }
            ));
        }
        let mut client = client();
        let workload = Workload::new(keys, 11);
        workload.check_all(&mut cluster, &mut client, what);
    }
}

/// Once a partition has begun the cut-over, an abort is refused and the migration ends.
#[test]
fn an_abort_after_the_cut_over_began_is_refused() {
    let (mut cluster, _) = Cluster::new(Protocol::Fulva, 5);
    cluster.network.fault = 0.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.migrated() {
        assert!(Instant::now() < deadline);
        cluster.step();
    }
    assert!(cluster.plan.ticket.abort().is_err());
    assert!(!cluster.source.migration_counters().outgoing.aborted);
}

#[test]
fn who_answers_while_ownership_moves() {
    let rule = |protocol| {
        let (mut cluster, _) = Cluster::new(protocol, 9);
        let group = 0;
        let source = &cluster.source;
        let before = source_rule(source, group);
        // Let INIT reach the destination without faults.
        cluster.network.fault = 0.0;
        for _ in 0..1000 {
            cluster.step();
        }
        (before, source_rule(&cluster.source, group))
    };
    use SourceRule::*;
    // (read, double read, write) before and after the destination applied INIT. Before,
    // reads wait too: a client still addressing the destination (from an earlier
    // migration of the shard) may already write there.
    assert_eq!(
        rule(Protocol::Rocksteady),
        ([RetryLater, RetryLater, RetryLater], [Moved, Moved, Moved])
    );
    assert_eq!(
        rule(Protocol::Fulva),
        ([RetryLater, RetryLater, RetryLater], [Moved, Serve, Moved])
    );
    assert_eq!(
        rule(Protocol::SourceBased),
        ([Serve, Serve, Serve], [Serve, Serve, Serve])
    );
}

fn source_rule(server: &PartitionServer, group: u32) -> [SourceRule; 3] {
    let Some(Role::Outgoing(agent)) = server.role(SHARD) else {
        panic!("migrating out");
    };
    [
        agent.rule(group, true, false, false),
        agent.rule(group, true, true, false),
        agent.rule(group, false, false, false),
    ]
}

#[test]
fn pull_answers_for_unknown_shards_are_dropped_not_panicking() {
    let map = PartitionMap::new(GroupLayout::new(6).unwrap(), 1).unwrap();
    let mut server = PartitionServer::new(&map, 0, &[SHARD], 16);
    for op in [Op::Pull, Op::PullReply] {
        let batch = wire::PullBatch {
            count: 0,
            items: &[],
        };
        assert!(!server.handle(&mut pull_message(op, CLIENT, |b| batch.emit(b))));
    }
    assert_eq!(server.counters().dropped_not_request, 2);
}

/// A pull-family message (outside the stream) for the shard, from `from`.
fn pull_message(
    op: Op,
    from: SocketAddrV4,
    body: impl FnOnce(&mut [u8]) -> Result<usize, wire::WireError>,
) -> Box<Packet> {
    let header = HeaderRepr {
        op,
        flags: Flags::default(),
        status: Status::Ok,
        shard: SHARD,
        seq: 0,
        key_hash: 0,
        client: 0,
        oldest_gap: 0,
    };
    let mut packet = Packet::new_boxed();
    let len = wire::emit_with(&header, packet.buffer_mut(), body).unwrap();
    packet.set_len(len);
    packet.src = from;
    packet
}

fn bulk_done_from(server: &mut PartitionServer, from: SocketAddrV4) -> bool {
    server.handle(&mut pull_message(Op::BulkDone, from, |_| Ok(0)))
}

/// BULK_DONE ends a Rocksteady source's transfer only from its destination, and only once
/// the source can act on it: answered too early, the destination would stop asking and the
/// migration would never end.
#[test]
fn bulk_done_is_taken_from_the_destination_once_ownership_moved() {
    let (mut cluster, _) = Cluster::new(Protocol::Rocksteady, 7);
    assert!(
        !bulk_done_from(&mut cluster.source, DESTINATION),
        "INIT not yet acknowledged: no answer, the destination asks again"
    );
    assert!(
        !bulk_done_from(&mut cluster.source, CLIENT),
        "not the destination"
    );
    assert_eq!(cluster.source.counters().dropped_not_request, 1);
    // Deliver INIT and the windows without loss, so ownership moves.
    cluster.network.fault = 0.0;
    while matches!(
        cluster.source.role(SHARD),
        Some(Role::Outgoing(agent)) if agent.rule(0, false, false, false) != SourceRule::Moved
    ) {
        cluster.step();
    }
    cluster.network.in_flight.clear();
    assert!(
        bulk_done_from(&mut cluster.source, DESTINATION),
        "taken and answered"
    );
    assert!(
        bulk_done_from(&mut cluster.source, DESTINATION),
        "answered again"
    );
}

/// A switch that cannot steer the migration (here: its pair table is full) answers INIT
/// with ERROR. The source must not go on as if it steered: with reads still reaching the
/// source, a group handed over would be read stale there. It calls the migration off
/// instead, and the shard stays whole at the source.
#[test]
fn a_migration_the_switch_refuses_is_called_off() {
    for seed in 1..=3 {
        let (mut cluster, keys) = Cluster::new(Protocol::NetMigrate, seed);
        let mut switch = tofino::Switch::new(tofino::SwitchConfig::new(SWITCH, 6));
        fill_pair_table(&mut switch);
        cluster.switch = Some(switch);
        let mut client = client();
        let mut workload = Workload::new(keys, seed);
        let what = format!("refused NetMigrate, seed {seed}");
        workload.run_until(&mut cluster, &mut client, &what, |c| {
            c.source.migration_counters().outgoing.aborted
        });
        workload.check_all(&mut cluster, &mut client, &what);
        let outgoing = cluster.source.migration_counters().outgoing;
        assert!(outgoing.switch_refusals > 0, "{what}: {outgoing:?}");
        assert!(
            !outgoing.finished && outgoing.groups_done == 0,
            "{what}: {outgoing:?}"
        );
        assert!(matches!(cluster.source.role(SHARD), Some(Role::Owned)));
        assert_eq!(client.moved, 0, "{what}: the source kept the shard");
        let switch = cluster.switch.as_ref().expect("set above").counters();
        assert_eq!(
            switch.pairs_installed,
            tofino::spec::MAX_PAIRS as u64,
            "{switch:?}"
        );
    }
}

/// NetMigrate through the software switch, aborted half-way and then migrated again to the
/// same destination, under loss, duplication and reordering; and every control message of
/// the first migration delivered once more, late: while the second one runs and after it
/// ended. The switch tells the two apart by their stream ids. A late copy of the first
/// one's group messages must not take the place of the second one's (its seq 1 would then
/// be answered as a duplicate without being applied, and the source would hand over a
/// group whose reads the switch still sends to it), and a late INIT must not install the
/// pair again.
#[test]
fn netmigrate_through_the_switch_aborts_and_migrates_again() {
    for seed in 1..=3 {
        let (mut cluster, keys) = Cluster::new(Protocol::NetMigrate, seed);
        cluster.switch = Some(tofino::Switch::new(tofino::SwitchConfig::new(SWITCH, 6)));
        cluster.held_back = Some(Vec::new());
        let mut client = client();
        let mut workload = Workload::new(keys, seed);
        let what = format!("NetMigrate through the switch, seed {seed}");
        abort_half_way(&mut cluster, &mut client, &mut workload, &what);
        let late = cluster.held_back.take().expect("set above");
        assert!(late.len() > 3, "{what}: INIT, group messages, TERMINATE");
        cluster.restart();
        let stream = cluster.plan.ticket.stream_id();
        workload.run_until(&mut cluster, &mut client, &what, |c| {
            let switch = c.switch.as_ref().expect("set above");
            switch.pairs().any(|pair| pair.stream == stream)
        });
        let deliver_late = |cluster: &mut Cluster| {
            let copies = late.iter().map(|packet| packet.duplicate());
            cluster.network.in_flight.extend(copies);
        };
        deliver_late(&mut cluster);
        workload.run_until(&mut cluster, &mut client, &what, Cluster::migrated);
        workload.check_all(&mut cluster, &mut client, &what);
        deliver_late(&mut cluster);
        while !cluster.network.in_flight.is_empty() {
            cluster.step();
        }
        let outgoing = cluster.source.migration_counters().outgoing;
        assert_eq!(outgoing.switch_refusals, 0, "{what}: {outgoing:?}");
        let switch = cluster.switch.as_ref().expect("set above");
        let counters = switch.counters();
        assert_eq!(
            (counters.pairs_installed, counters.pairs_removed),
            (2, 2),
            "{what}: one pair per migration, each removed at its end: {counters:?}"
        );
        assert_eq!(switch.pairs().count(), 0, "{what}");
    }
}

/// Installs a pair for each slot of the switch's table, from sources other than ours.
fn fill_pair_table(switch: &mut tofino::Switch) {
    for i in 0..tofino::spec::MAX_PAIRS {
        let source = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, i as u8 + 1), 7100);
        let init = wire::SwitchControl::Init {
            source_ip: *source.ip(),
            dest_ip: *DESTINATION.ip(),
            dest_shard: SHARD,
            size_exp: kv::SIZE_EXP,
            remain_exp: kv::SIZE_EXP - 6,
            partitions: 1,
            partition: 0,
        };
        let header = HeaderRepr {
            op: init.op(),
            flags: Flags::default(),
            status: Status::Ok,
            shard: SHARD,
            seq: 0,
            key_hash: 0,
            client: 1,
            oldest_gap: 0,
        };
        let mut packet = Packet::new_boxed();
        let len = wire::emit_with(&header, packet.buffer_mut(), |b| init.emit(b)).unwrap();
        packet.set_len(len);
        (packet.src, packet.dst) = (source, SWITCH);
        let (mut out, mut dropped) = (Vec::new(), Vec::new());
        switch.process(packet, &mut out, &mut dropped);
        let (reply, _) = wire::parse_header(out[0].payload()).unwrap();
        assert_eq!(reply.status, Status::Ok, "slot {i} installed");
    }
}

/// A Fulva source serves the source's half of a double read, but a half meant for the
/// destination (REDIRECTED) is answered MOVED: the client sending it tracks a migration
/// that has since ended, and would take the source's frozen copy for the destination's
/// answer. (Found by `netmigrate simulate`: a stale NOT_FOUND after a shard moved on.)
#[test]
fn a_source_answers_only_the_source_half_of_a_double_read() {
    let (mut cluster, keys) = Cluster::new(Protocol::Fulva, 9);
    cluster.network.fault = 0.0;
    for _ in 0..1000 {
        cluster.step();
    }
    let key = &keys[0];
    let ask = |cluster: &mut Cluster, flags: Flags| {
        let request = Request::Get { key };
        let header = HeaderRepr {
            op: Op::Get,
            flags,
            status: Status::Ok,
            shard: SHARD,
            seq: 1,
            key_hash: kv::key_hash(key),
            client: 77,
            oldest_gap: 0,
        };
        let mut packet = Packet::new_boxed();
        let len = wire::emit_request(&header, &request, packet.buffer_mut()).unwrap();
        packet.set_len(len);
        (packet.src, packet.dst) = (CLIENT, SOURCE);
        assert!(cluster.source.handle(&mut packet));
        wire::parse_header(packet.payload()).unwrap().0.status
    };
    assert_eq!(ask(&mut cluster, Flags::DOUBLE_READ), Status::Ok);
    let meant_for_destination = Flags::DOUBLE_READ.with(Flags::REDIRECTED);
    assert_eq!(ask(&mut cluster, meant_for_destination), Status::Moved);
}

/// The destination is the head of a chain of two and dies mid-migration, for every protocol
/// (NetMigrate through the switch), under loss, duplication and reordering. Its successor
/// holds the migration's records but none of its state: killed half-way, the source calls
/// the migration off and the successor sends back what it holds; killed once the cut-over
/// was taken, the source sends it TERMINATE again and it adopts the shard. Either way every
/// read sees the last write, whether the control plane tells the source of the new head or
/// the new head asks the source itself (MIGRATE_TAKEOVER).
#[test]
fn a_destinations_successor_settles_the_migration_with_the_source() {
    for protocol in [
        Protocol::NetMigrate,
        Protocol::Rocksteady,
        Protocol::Fulva,
        Protocol::SourceBased,
    ] {
        for (seed, tell_source) in [(1, true), (2, false)] {
            for past_cut_over in [false, true] {
                let (cluster, keys) = Cluster::new(protocol, seed);
                let mut cluster = cluster.with_successor();
                if protocol == Protocol::NetMigrate {
                    cluster.switch =
                        Some(tofino::Switch::new(tofino::SwitchConfig::new(SWITCH, 6)));
                }
                let mut client = client();
                let mut workload = Workload::new(keys, seed);
                let what = format!(
                    "{protocol:?}, seed {seed}, source told {tell_source}, past the cut-over \
                     {past_cut_over}"
                );
                if past_cut_over {
                    cluster.dies_at_cut_over = Some(tell_source);
                } else {
                    workload.run_until(&mut cluster, &mut client, &what, |c| {
                        c.destination.migration_counters().incoming.items_applied >= KEYS as u64 / 4
                    });
                    cluster.replace_destination(tell_source);
                    if client.route == DESTINATION {
                        client.route = SUCCESSOR; // clients follow the chain's new head
                    }
                }
                let ended = |c: &Cluster| c.returned() || c.migrated();
                workload.run_until(&mut cluster, &mut client, &what, ended);
                workload.check_all(&mut cluster, &mut client, &what);
                assert_eq!(cluster.migrated(), past_cut_over, "{what}");
                let outgoing = cluster.source.migration_counters().outgoing;
                assert_eq!(outgoing.aborted, !past_cut_over, "{what}: {outgoing:?}");
                assert_eq!(outgoing.destination_takeovers, 1, "{what}: {outgoing:?}");
            }
        }
    }
}
