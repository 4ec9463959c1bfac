//! `netmigrate switch`: the software switch as its own process. Over kernel UDP it is the
//! gateway of an overlay: hosts started with `--via` send everything through it.

use super::{fail, CommandError};
use crate::cli::SwitchArgs;
use crate::server::transport::{DpdkOptions, Fabric, Transport};
use dataplane::port::{FaultConfig, UdpOverlay, UdpPort};
use dataplane::runner::{shutdown_on_signals, Placement};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub fn run(args: SwitchArgs) -> Result<(), CommandError> {
    if args.transport == Transport::Memory {
        return fail(
            "the memory transport connects threads of one process only; `netmigrate \
             experiment` runs its own in-process switch. Use --transport udp or dpdk",
        );
    }
    if args.transport == Transport::Udp && args.eal.is_some() {
        return fail("--eal is for --transport dpdk; over kernel UDP the switch has no devices");
    }
    if args.listen.ip().is_unspecified() {
        return fail(
            "--listen needs the switch's own address (hosts send migration control messages \
             to it), not 0.0.0.0",
        );
    }
    let config = args
        .filters
        .switch_config(args.listen, args.group_bits)
        .map_err(CommandError)?;
    let signals = shutdown_on_signals()?;
    let fabric = Fabric::new(
        args.transport,
        FaultConfig::default(),
        DpdkOptions {
            eal: args.eal.as_deref(),
            udp_checksum: args.udp_checksum.choice(),
        },
        1,
    )?;
    let port = match args.transport {
        Transport::Dpdk => fabric.bind_switch(args.listen)?,
        _ => Box::new(
            UdpPort::bind_with(args.listen, UdpOverlay::Gateway)
                .map_err(|e| CommandError(format!("cannot listen on {}: {e}", args.listen)))?,
        ),
    };
    let switch = tofino::run::start(port, config, Placement::Floating, args.idle.idle())?;
    let control = args
        .control
        .map(|addr| {
            let routes = tonic::service::Routes::new(switch.control_service());
            crate::server::control::spawn_grpc(addr, routes)
        })
        .transpose()?;
    let attached = match args.transport {
        Transport::Dpdk => "DPDK: one link per device".to_string(),
        _ => format!("kernel-UDP overlay: start hosts with --via {}", args.listen),
    };
    eprintln!(
        "netmigrate switch: on {} ({attached}), Bloom filter {} cells x4, counting filter {} \
         cells x4; Ctrl-C stops",
        args.listen, config.bf_cells, config.cbf_cells
    );
    if let Some(control) = &control {
        eprintln!("control API (gRPC) on {}", control.addr());
    }
    let started = Instant::now();
    let deadline = args.duration.map(Duration::from_secs_f64);
    while !signals.load(Ordering::Relaxed) && deadline.is_none_or(|d| started.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(control);
    let (snapshot, port) = switch.stop();
    let c = &snapshot.counters;
    eprintln!(
        "switch: forwarded {}, to source {}, double reads {}, redirects {}, multi-key splits {}, \
         false in-flight {}, false done {}, saturated filter cells {}; control applied {} (duplicates {}, gaps {}, errors \
         {}), pairs installed {} removed {}, malformed {}; port rx {} tx {} tx-dropped {} rejected {} \
         flooded {}",
        c.forwarded,
        c.to_source,
        c.double_reads,
        c.redirects,
        c.multi_splits,
        c.false_in_flight,
        c.false_done,
        c.cbf_saturated,
        c.control_applied,
        c.control_duplicates,
        c.control_gaps,
        c.control_errors,
        c.pairs_installed,
        c.pairs_removed,
        c.malformed,
        port.rx_packets,
        port.tx_packets,
        port.tx_dropped,
        port.rx_rejected,
        port.flooded,
    );
    if let Some(devices) = fabric.device_report() {
        eprint!("{devices}");
    }
    fabric.shutdown();
    Ok(())
}
