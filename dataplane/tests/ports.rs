//! The port backends: delivery, addressing, batching, and the fault injector.

use dataplane::port::{FaultConfig, MemoryNetwork, UdpOverlay, UdpPort};
use dataplane::{Packet, Port};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

fn addr(last: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, last), port)
}

fn send_numbered(port: &mut dyn Port, to: SocketAddrV4, count: u32) {
    let mut tx = Vec::new();
    for i in 0..count {
        let mut packet = port.alloc();
        packet.buffer_mut()[..4].copy_from_slice(&i.to_be_bytes());
        packet.set_len(4);
        packet.dst = to;
        tx.push(packet);
        if tx.len() == 32 {
            port.send(&mut tx).unwrap();
        }
    }
    port.send(&mut tx).unwrap();
}

/// Receives until `expect` packets arrived or a second passed.
fn drain(port: &mut dyn Port, expect: usize) -> Vec<Box<Packet>> {
    let mut rx = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    while rx.len() < expect && Instant::now() < deadline {
        port.recv(&mut rx, 32).unwrap();
        // Let the sender's delayed packets come due.
        std::thread::sleep(Duration::from_micros(50));
    }
    rx
}

fn numbers(packets: &[Box<Packet>]) -> Vec<u32> {
    packets
        .iter()
        .map(|p| u32::from_be_bytes(p.payload()[..4].try_into().unwrap()))
        .collect()
}

#[test]
fn memory_ports_deliver_in_order_with_addresses() {
    let net = MemoryNetwork::new();
    let (a, b) = (addr(1, 1), addr(2, 2));
    let mut pa = net.bind(a).unwrap();
    let mut pb = net.bind(b).unwrap();
    assert!(net.bind(a).is_err(), "an address binds once");
    send_numbered(&mut pa, b, 100);
    let got = drain(&mut pb, 100);
    assert_eq!(numbers(&got), (0..100).collect::<Vec<_>>());
    assert!(got.iter().all(|p| p.src == a && p.dst == b));
    // Unknown destinations are dropped and counted, not an error.
    send_numbered(&mut pa, addr(9, 9), 3);
    assert_eq!(pa.stats().tx_dropped, 3);
    drop(pb);
    assert!(net.bind(b).is_ok(), "a dropped port frees its address");
}

#[test]
fn fault_injection_loses_duplicates_and_reorders_reproducibly() {
    let run = |seed| {
        let net = MemoryNetwork::with_faults(FaultConfig {
            loss: 0.1,
            duplicate: 0.1,
            reorder: 0.1,
            seed,
        });
        let (a, b) = (addr(1, 1), addr(2, 2));
        let mut pa = net.bind(a).unwrap();
        let mut pb = net.bind(b).unwrap();
        send_numbered(&mut pa, b, 2000);
        std::thread::sleep(Duration::from_millis(2));
        pa.send(&mut Vec::new()).unwrap(); // releases delayed packets that came due
        let got = numbers(&drain(&mut pb, 2000));
        (got, pa.stats())
    };
    let (got, stats) = run(7);
    assert!(
        stats.injected_losses > 100
            && stats.injected_duplicates > 100
            && stats.injected_reorders > 100
    );
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert!(got.len() > unique.len(), "some packets arrived twice");
    assert!(unique.len() < 2000, "some packets were lost");
    assert!(
        got.windows(2).any(|w| w[0] > w[1]),
        "some packets were overtaken"
    );
    // Which packets are lost or doubled depends only on the seed; where a delayed packet
    // lands depends on timing.
    let sorted = |mut v: Vec<u32>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(run(7).0),
        sorted(got),
        "the same seed gives the same faults"
    );
}

#[test]
fn udp_ports_batch_over_loopback() {
    let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    let mut pa = UdpPort::bind(any).unwrap();
    let mut pb = UdpPort::bind(any).unwrap();
    send_numbered(&mut pa, pb.local_addr(), 200);
    let got = drain(&mut pb, 200);
    assert_eq!(got.len(), 200);
    assert!(got
        .iter()
        .all(|p| p.src == pa.local_addr() && p.dst == pb.local_addr()));
    assert_eq!(pb.stats().rx_packets, 200);
    // Replies go back to the source address.
    let mut replies: Vec<_> = got
        .into_iter()
        .map(|mut p| {
            p.swap_addresses();
            p
        })
        .collect();
    pb.send(&mut replies).unwrap();
    assert_eq!(drain(&mut pa, 200).len(), 200);
}

#[test]
fn the_udp_overlay_carries_addresses_through_the_switch_and_rejects_impostors() {
    let loopback = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    let mut switch = UdpPort::bind_with(loopback, UdpOverlay::Gateway).unwrap();
    let via = UdpOverlay::Via(switch.local_addr());
    // Behind the switch, an unspecified IP becomes the one routed to the switch.
    let mut a = UdpPort::bind_with(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), via).unwrap();
    assert_eq!(*a.local_addr().ip(), Ipv4Addr::LOCALHOST);
    let mut b = UdpPort::bind_with(loopback, via).unwrap();

    send_numbered(&mut a, b.local_addr(), 100);
    // The switch sees each datagram as it would be on a real network…
    let mut seen = drain(&mut switch, 100);
    assert_eq!(numbers(&seen), (0..100).collect::<Vec<_>>());
    assert!(seen
        .iter()
        .all(|p| p.src == a.local_addr() && p.dst == b.local_addr()));
    // …and sends it on keeping its source, as if it had come straight from `a`.
    switch.send(&mut seen).unwrap();
    let got = drain(&mut b, 100);
    assert_eq!(numbers(&got), (0..100).collect::<Vec<_>>());
    assert!(got
        .iter()
        .all(|p| p.src == a.local_addr() && p.dst == b.local_addr()));

    // A plain datagram straight to `b`, not from the switch, is not believed.
    let mut direct = UdpPort::bind(loopback).unwrap();
    send_numbered(&mut direct, b.local_addr(), 3);
    // The switch refuses a tunnel that names someone else as its source, and one too short.
    let forger = std::net::UdpSocket::bind(loopback).unwrap();
    let mut forged = [0u8; 16];
    dataplane::wire::tunnel::TunnelRepr {
        src: a.local_addr(),
        dst: b.local_addr(),
    }
    .emit((&mut forged[..12]).try_into().unwrap());
    forger.send_to(&forged, switch.local_addr()).unwrap();
    forger.send_to(&forged[..5], switch.local_addr()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut rx = Vec::new();
    while (b.stats().rx_rejected < 3 || switch.stats().rx_rejected < 2) && Instant::now() < deadline
    {
        b.recv(&mut rx, 32).unwrap();
        switch.recv(&mut rx, 32).unwrap();
    }
    assert!(rx.is_empty(), "nothing unbelievable gets through");
    assert_eq!(b.stats().rx_rejected, 3);
    assert_eq!(switch.stats().rx_rejected, 2);
}

#[test]
fn a_rebound_address_is_found_again() {
    let net = MemoryNetwork::new();
    let (a, b) = (addr(1, 1), addr(2, 2));
    let mut pa = net.bind(a).unwrap();
    let pb = net.bind(b).unwrap();
    send_numbered(&mut pa, b, 1); // caches the route to b
    drop(pb);
    let mut pb = net.bind(b).unwrap();
    send_numbered(&mut pa, b, 5);
    assert_eq!(numbers(&drain(&mut pb, 5)), vec![0, 1, 2, 3, 4]);
    assert_eq!(pa.stats().tx_dropped, 0);
}
