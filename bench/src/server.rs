//! Runs a server: one loop per partition, each owning its port and its `PartitionServer`.
//! Requests reach the owning core by UDP port: partition `p` listens on `base port + p`.

use crate::transport::Fabric;
use dataplane::port::{PortStats, BURST};
use dataplane::runner::{spawn_loop, Placement};
use dataplane::{Packet, Port};
use kv::PartitionMap;
use migration::{PartitionServer, ServeCounters};
use std::io;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Address of partition 0; partition p uses port + p.
    pub base: SocketAddrV4,
    pub map: PartitionMap,
    pub shards: Vec<u16>,
    /// Entries each partition's table is sized for up front.
    pub capacity_per_partition: usize,
    /// Cores to pin partition loops to (partition p on cores[p % len]); None floats.
    pub cores: Option<Vec<usize>>,
}

impl ServerSpec {
    pub fn partition_addr(&self, partition: u32) -> SocketAddrV4 {
        partition_addr(self.base, partition)
    }
}

pub fn partition_addr(base: SocketAddrV4, partition: u32) -> SocketAddrV4 {
    SocketAddrV4::new(*base.ip(), base.port() + partition as u16)
}

/// What one partition loop reports when it stops.
#[derive(Debug, Clone, Default)]
pub struct PartitionReport {
    pub partition: u32,
    pub counters: ServeCounters,
    pub port: PortStats,
    pub entries: usize,
}

pub struct RunningServer {
    stop: Arc<AtomicBool>,
    loops: Vec<JoinHandle<PartitionReport>>,
}

struct PartitionLoop {
    port: Box<dyn Port>,
    server: PartitionServer,
    rx: Vec<Box<Packet>>,
    tx: Vec<Box<Packet>>,
    replies: Vec<bool>,
}

impl PartitionLoop {
    fn poll(&mut self) -> usize {
        let received = self.port.recv(&mut self.rx, BURST).unwrap_or(0);
        self.server.handle_burst(&mut self.rx, &mut self.replies);
        for (packet, reply) in self.rx.drain(..).zip(&self.replies) {
            if *reply {
                self.tx.push(packet);
            } else {
                self.port.release(packet);
            }
        }
        if !self.tx.is_empty() {
            // A failed send is counted by the port; clients retransmit.
            let _ = self.port.send(&mut self.tx);
        }
        received
    }
}

/// Binds every partition's port and starts its loop.
pub fn start(fabric: &Fabric, spec: &ServerSpec) -> io::Result<RunningServer> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for partition in 0..spec.map.partitions() {
        let addr = spec.partition_addr(partition);
        let port = fabric.bind(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind partition {partition} at {addr}: {e}"),
            )
        })?;
        let state = PartitionLoop {
            port,
            server: PartitionServer::new(
                &spec.map,
                partition,
                &spec.shards,
                spec.capacity_per_partition,
            ),
            rx: Vec::with_capacity(BURST),
            tx: Vec::with_capacity(BURST),
            replies: Vec::with_capacity(BURST),
        };
        let placement = match &spec.cores {
            Some(cores) => Placement::Core(cores[partition as usize % cores.len()]),
            None => Placement::Floating,
        };
        let handle = spawn_loop(
            format!("server-p{partition}"),
            placement,
            Arc::clone(&stop),
            state,
            PartitionLoop::poll,
            move |state| PartitionReport {
                partition,
                counters: *state.server.counters(),
                port: state.port.stats(),
                entries: state.server.entries(),
            },
        )?;
        loops.push(handle);
    }
    Ok(RunningServer { stop, loops })
}

impl RunningServer {
    pub fn is_running(&self) -> bool {
        self.loops.iter().all(|handle| !handle.is_finished())
    }

    pub fn stop(self) -> Vec<PartitionReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.loops
            .into_iter()
            .map(|handle| handle.join().expect("partition loop panicked"))
            .collect()
    }
}

/// The server's final statistics, one line per partition and a total.
pub fn format_reports(reports: &[PartitionReport]) -> String {
    let mut total = ServeCounters::default();
    let mut out = String::new();
    for r in reports {
        total.add(&r.counters);
        out.push_str(&format!(
            "partition {:>2}: {:>10} requests ({} get, {} put, {} delete, {} multi), {} entries, \
             {} duplicate writes, {} error replies, {} dropped (malformed {}, hash {}, stale {}, \
             not a request {}); port rx {} tx {} tx-dropped {}\n",
            r.partition,
            r.counters.requests(),
            r.counters.gets,
            r.counters.puts,
            r.counters.deletes,
            r.counters.multi_requests,
            r.entries,
            r.counters.duplicate_writes,
            r.counters.error_replies,
            r.counters.dropped(),
            r.counters.dropped_malformed,
            r.counters.dropped_hash_mismatch,
            r.counters.dropped_stale_write,
            r.counters.dropped_not_request,
            r.port.rx_packets,
            r.port.tx_packets,
            r.port.tx_dropped,
        ));
    }
    out.push_str(&format!(
        "total       : {:>10} requests, {} dropped, {} error replies\n",
        total.requests(),
        total.dropped(),
        total.error_replies
    ));
    out
}
