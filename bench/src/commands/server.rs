//! `netmigrate server`: serve until SIGINT/SIGTERM (or `--duration`), then print the
//! final statistics.

use super::{fail, CommandError};
use crate::cli::{LayoutArgs, ServerArgs};
use crate::membership::agent::ServerAgent;
use crate::membership::{self, Registration, ServerId};
use crate::server::transport::{DpdkOptions, Fabric, Transport};
use crate::server::{self, ServerSpec};
use dataplane::port::FaultConfig;
use dataplane::runner::{parse_core_list, shutdown_on_signals, Idle};
use kv::{GroupLayout, PartitionMap};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn partition_map(layout: &LayoutArgs) -> Result<PartitionMap, CommandError> {
    let groups = GroupLayout::new(layout.group_bits).map_err(|e| CommandError(e.to_string()))?;
    PartitionMap::new(groups, layout.partitions).map_err(|e| CommandError(e.to_string()))
}

pub fn core_list(text: Option<&str>) -> Result<Option<Vec<usize>>, CommandError> {
    text.map(parse_core_list)
        .transpose()
        .map_err(|e| CommandError(format!("--cores: {e}")))
}

pub fn spec(
    listen: SocketAddrV4,
    layout: &LayoutArgs,
    capacity: usize,
    cores: Option<Vec<usize>>,
) -> Result<ServerSpec, CommandError> {
    let map = partition_map(layout)?;
    if u32::from(listen.port()) + map.partitions() > 65536 {
        return fail(format!(
            "--listen port {} leaves no room for {} partition ports",
            listen.port(),
            map.partitions()
        ));
    }
    Ok(ServerSpec {
        capacity: None,
        base: listen,
        map,
        shards: vec![layout.shard],
        capacity_per_partition: capacity,
        cores,
        idle: Idle::Share,
        log: None,
        chain: None,
        awaits_membership: false,
    })
}

pub fn run(args: ServerArgs) -> Result<(), CommandError> {
    if args.transport == Transport::Memory {
        return fail(
            "the memory transport connects threads of one process only; \
             run `netmigrate ycsb --embedded` for an in-process server and client, \
             or use `--transport udp`",
        );
    }
    let cores = core_list(args.cores.as_deref())?;
    let mut spec = spec(args.listen, &args.layout, args.capacity, cores)?;
    spec.idle = args.idle.idle();
    spec.log = args.log_dir.clone().map(|dir| server::log::LogSpec {
        dir,
        fsync: args.fsync,
    });
    if !args.chain.is_empty() {
        if args.chain.len() < 2 || !args.chain.contains(&args.listen) {
            return fail(format!(
                "--chain names every replica's --listen address, head first (at least two), \
                 this server's ({}) among them; got {:?}",
                args.listen, args.chain
            ));
        }
        spec.chain = Some(args.chain.clone());
    }
    let directory = if args.etcd.etcd.is_empty() {
        None
    } else {
        if !args.chain.is_empty() {
            return fail("--chain is a fixed chain; with --etcd the coordinator keeps the chain");
        }
        if args.lease_ttl < 2 {
            return fail("--lease-ttl must be at least 2 seconds (etcd's shortest lease)");
        }
        spec.awaits_membership = true;
        Some(membership::connect(&args.etcd.etcd).map_err(CommandError)?)
    };
    if let Some(capacity) = args.work_capacity {
        if !(capacity.is_finite() && capacity > 0.0) {
            return fail(format!(
                "--work-capacity must be a positive number of operations per second, got {capacity}"
            ));
        }
        spec.capacity = Some(capacity);
    }
    let signals = shutdown_on_signals()?;
    let lanes = spec.map.partitions() as usize;
    let fabric = Fabric::new(
        args.transport,
        FaultConfig::default(),
        DpdkOptions {
            eal: args.eal.as_deref(),
            udp_checksum: args.udp_checksum.choice(),
        },
        lanes,
    )?
    .via(args.via)?;
    let running = server::start(&fabric, &spec)?;
    let control = args
        .control
        .map(|addr| crate::server::control::serve(addr, running.control()))
        .transpose()?;
    let last = spec.partition_addr(spec.map.partitions() - 1);
    eprintln!(
        "netmigrate server: {} partition(s) over {} on {} udp ports {}..={}, shard {}, {} \
         groups (remain_exp {}); Ctrl-C stops",
        spec.map.partitions(),
        args.transport.name(),
        args.listen.ip(),
        args.listen.port(),
        last.port(),
        args.layout.shard,
        spec.map.layout().group_count(),
        spec.map.layout().remain_exp(),
    );
    if let Some(control) = &control {
        eprintln!("control API (gRPC) on {}", control.addr());
    }
    let agent_stop = Arc::new(AtomicBool::new(false));
    let agent = directory.map(|mut directory| {
        let agent = ServerAgent {
            chain: args.etcd.chain_name.clone(),
            registration: Registration {
                id: ServerId {
                    addr: args.listen,
                    incarnation: running.incarnation,
                },
                recovered: running.recovered,
            },
            ttl: Duration::from_secs(args.lease_ttl),
        };
        eprintln!(
            "replica of chain {} in etcd {} (incarnation {:#x}{}); waits for its membership",
            agent.chain,
            args.etcd.etcd.join(","),
            running.incarnation,
            if running.recovered {
                ", from its log"
            } else {
                ""
            }
        );
        let (control, stop) = (running.control(), Arc::clone(&agent_stop));
        std::thread::spawn(move || agent.run(directory.as_mut(), &control, &stop))
    });
    let started = Instant::now();
    let deadline = args.duration.map(Duration::from_secs_f64);
    while !signals.load(Ordering::Relaxed)
        && deadline.is_none_or(|d| started.elapsed() < d)
        && running.is_running()
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(control);
    agent_stop.store(true, Ordering::Relaxed);
    if let Some(agent) = agent {
        let _ = agent.join();
    }
    let reports = running.stop();
    eprint!("{}", server::format_reports(&reports));
    if let Some(devices) = fabric.device_report() {
        eprint!("{devices}");
    }
    fabric.shutdown();
    Ok(())
}
