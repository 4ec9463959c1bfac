//! One client thread's cost per request, measured without a second core: the YCSB client
//! (workload C, uniform keys over 200 000 records, window 128, as `scripts/bench-dpdk.sh`
//! runs it) sends its bursts to a port that serves them on the same thread with the real
//! server path. Each request's figure is the client's cost plus the server's; the server's
//! alone is `serving`'s `request_path_get_burst32` at the same key count and distribution.
//!
//! Between two processes, every burst also moves cache lines between the cores, which on a
//! VM costs whatever the host's placement of the vCPUs makes it; this figure leaves that
//! out, so it compares client changes reliably. `NM_CLIENT_RECORDS` changes the key count.

use bench::client::{self, Cluster, Settings};
use bench::workload::{Distribution, WorkloadSpec};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dataplane::runner::Idle;
use dataplane::{Packet, Port, PortStats};
use kv::{key_hash, GroupLayout, PartitionMap};
use migration::PartitionServer;
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const OPERATIONS: u64 = 200_000;
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7000);
const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7100);

/// A port whose sends are served at once, on the sending thread, by a partition server;
/// the replies wait to be received.
struct ServedHere {
    server: Arc<Mutex<PartitionServer>>,
    answered: VecDeque<Box<Packet>>,
    free: Vec<Box<Packet>>,
    replies: Vec<bool>,
}

impl Port for ServedHere {
    fn recv(&mut self, rx: &mut Vec<Box<Packet>>, max: usize) -> io::Result<usize> {
        let n = max.min(self.answered.len());
        rx.extend(self.answered.drain(..n));
        Ok(n)
    }

    fn send(&mut self, tx: &mut Vec<Box<Packet>>) -> io::Result<usize> {
        let sent = tx.len();
        self.server
            .lock()
            .expect("one thread uses the server")
            .handle_burst(tx, &mut self.replies);
        for (mut packet, &is_reply) in tx.drain(..).zip(&self.replies) {
            if is_reply {
                (packet.src, packet.dst) = (SERVER, CLIENT);
                self.answered.push_back(packet);
            } else {
                self.free.push(packet);
            }
        }
        Ok(sent)
    }

    fn alloc(&mut self) -> Box<Packet> {
        self.free.pop().unwrap_or_else(Packet::new_boxed)
    }

    fn release(&mut self, packet: Box<Packet>) {
        self.free.push(packet);
    }

    fn local_addr(&self) -> SocketAddrV4 {
        CLIENT
    }

    fn stats(&self) -> PortStats {
        PortStats::default()
    }
}

fn client_cost(c: &mut Criterion) {
    let records = match std::env::var("NM_CLIENT_RECORDS") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("NM_CLIENT_RECORDS={text} does not parse")),
        Err(_) => 200_000,
    };
    let mut spec = WorkloadSpec::builtin("c").unwrap();
    spec.record_count = records;
    spec.distribution = Distribution::from_name("uniform").unwrap();
    let map = PartitionMap::new(GroupLayout::new(16).unwrap(), 1).unwrap();
    let mut server = PartitionServer::new(&map, 0, &[0], records as usize);
    let table = server.table_mut(0).unwrap();
    let mut key = vec![0u8; spec.key_bytes];
    let value = vec![7u8; spec.value_bytes];
    for record in 0..records {
        let len = spec.key_of(record, &mut key);
        table.put(key_hash(&key[..len]), &key[..len], &value);
    }
    let server = Arc::new(Mutex::new(server));
    let cluster = Arc::new(Cluster {
        chain_view: None,
        partitions: vec![SERVER],
        map,
        shard: 0,
        replicas: Vec::new(),
    });
    let spec = Arc::new(spec);
    let settings = Settings {
        threads: 1,
        window: 128,
        rate_per_thread: None,
        timeout: Duration::from_millis(100),
        max_timeout: Duration::from_secs(1),
        give_up: Duration::from_secs(10),
        record_history: false,
        progress: false,
        seed: 1,
        track_migrations: false,
        reads_at_tail: false,
        idle: Idle::BusyPoll,
    };

    let mut group = c.benchmark_group("client_one_core");
    group.throughput(Throughput::Elements(OPERATIONS));
    group.sample_size(20);
    group.bench_function("get_uniform_window128_served_here", |b| {
        b.iter(|| {
            let port = ServedHere {
                server: Arc::clone(&server),
                answered: VecDeque::with_capacity(256),
                free: Vec::new(),
                replies: Vec::new(),
            };
            let result = client::run_on_this_thread(
                Box::new(port),
                Arc::clone(&cluster),
                Arc::clone(&spec),
                settings,
                OPERATIONS,
            );
            assert_eq!(
                (result.counters.completed, result.counters.failed),
                (OPERATIONS, 0),
                "every request must be answered"
            );
            black_box(result.recorder);
        })
    });
    group.finish();
}

criterion_group!(benches, client_cost);
criterion_main!(benches);
