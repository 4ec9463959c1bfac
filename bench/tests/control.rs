//! The servers' control API (gRPC) refuses bad requests with messages that say what is
//! wrong, starts one migration at a time, and reports status and counters.

use bench::commands::server::spec;
use bench::server::control::{self, ControlClient};
use bench::server::transport::{DpdkOptions, Fabric, Transport};
use dataplane::port::FaultConfig;
use migration::control::proto::{self, Preset, Protocol};
use std::net::SocketAddr;

fn layout() -> bench::cli::LayoutArgs {
    bench::cli::LayoutArgs {
        partitions: 2,
        group_bits: 8,
        shard: 3,
    }
}

fn request(protocol: Protocol) -> proto::StartMigrationRequest {
    proto::StartMigrationRequest {
        shard: 3,
        destination: "10.0.0.3:7100".into(),
        destination_shard: 3,
        switch: "10.0.0.254:9000".into(),
        protocol: protocol.into(),
        preset: Preset::Medium.into(),
        items_per_s: None,
        pipeline: 0,
    }
}

#[test]
fn the_control_api_validates_starts_once_and_reports() {
    let fabric = Fabric::new(
        Transport::Memory,
        FaultConfig::default(),
        DpdkOptions::default(),
        1,
    )
    .unwrap();
    let mut server_spec = spec("10.0.0.2:7100".parse().unwrap(), &layout(), 1024, None).unwrap();
    server_spec.capacity = Some(100_000.0);
    let server = bench::server::start(&fabric, &server_spec).unwrap();
    let api = control::serve("127.0.0.1:0".parse().unwrap(), server.control()).unwrap();
    let addr: SocketAddr = api.addr();
    let mut client = ControlClient::connect(addr).unwrap();

    let refused = |client: &mut ControlClient, r: proto::StartMigrationRequest, says: &str| {
        let error = client.start_migration(r).expect_err("refused");
        assert!(error.contains(says), "{error:?} should say {says:?}");
    };
    refused(
        &mut client,
        proto::StartMigrationRequest {
            shard: 7,
            ..request(Protocol::Fulva)
        },
        "holds shard",
    );
    refused(
        &mut client,
        proto::StartMigrationRequest {
            shard: 70_000,
            ..request(Protocol::Fulva)
        },
        "not a shard id",
    );
    refused(&mut client, request(Protocol::Unspecified), "no protocol");
    refused(
        &mut client,
        proto::StartMigrationRequest {
            destination: "somewhere".into(),
            ..request(Protocol::Fulva)
        },
        "expected IPv4:port",
    );
    refused(
        &mut client,
        proto::StartMigrationRequest {
            switch: String::new(),
            ..request(Protocol::Netmigrate)
        },
        "switch",
    );
    refused(
        &mut client,
        proto::StartMigrationRequest {
            items_per_s: Some(-1.0),
            ..request(Protocol::Fulva)
        },
        "positive",
    );
    assert_eq!(
        client.status().unwrap().outgoing_active,
        0,
        "nothing started"
    );

    // A valid start: the budget is the preset's share of the server's capacity. (The
    // destination does not exist; the source keeps offering INIT.)
    let started = client
        .start_migration(request(Protocol::Rocksteady))
        .unwrap();
    assert_eq!(started.partitions, 2);
    assert_eq!(started.items_per_s, Some(25_000.0));
    assert_eq!(started.serve_per_s, Some(75_000.0));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while client.status().unwrap().outgoing_active < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "both partitions report the migration"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    refused(
        &mut client,
        request(Protocol::Rocksteady),
        "already under way",
    );

    // Abort: only a migration that was started; an abort waits for the destination to
    // send the shard back (here there is none, so it stays under way).
    let error = client.abort_migration(7).expect_err("nothing to abort");
    assert!(error.contains("no migration of shard 7"), "{error}");
    client.abort_migration(3).unwrap();
    client.abort_migration(3).expect("aborting twice is fine");

    // A watch streams updates; the client can stop it.
    let mut updates = 0;
    client
        .watch(
            proto::WatchRequest {
                interval_ms: 10,
                until_finished: true,
            },
            |status| {
                updates += 1;
                assert_eq!(status.outgoing_active, 2);
                updates < 3
            },
        )
        .unwrap();
    assert_eq!(updates, 3);

    let reports = client.reports().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(
        reports.iter().map(|r| r.partition).collect::<Vec<_>>(),
        [0, 1]
    );
    assert!(reports.iter().all(|r| r.migration.outgoing_active == 1));
    let counters = client.counters().unwrap();
    assert_eq!(counters.work_capacity, Some(100_000.0));

    drop(api);
    assert!(
        ControlClient::connect(addr).is_err(),
        "the API stopped with its server"
    );
    server.stop();
    fabric.shutdown();
}

/// Polls `done` for up to 10 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_start_is_all_partitions_or_none_and_starts_do_not_interleave() {
    use bench::server::partition_addr;
    use migration::ticket::MigrationTicket;
    use migration::{OutgoingPlan, Protocol as MigrationProtocol};
    use std::sync::Arc;

    let fabric = Fabric::new(
        Transport::Memory,
        FaultConfig::default(),
        DpdkOptions::default(),
        1,
    )
    .unwrap();
    let source = bench::server::start(
        &fabric,
        &spec("10.0.0.2:7100".parse().unwrap(), &layout(), 1024, None).unwrap(),
    )
    .unwrap();
    let destination = bench::server::start(
        &fabric,
        &spec("10.0.0.3:7100".parse().unwrap(), &layout(), 1024, None).unwrap(),
    )
    .unwrap();
    let control = source.control();
    let plan = |shard: u16, partition: u32| OutgoingPlan {
        shard,
        destination: partition_addr("10.0.0.3:7100".parse().unwrap(), partition),
        destination_shard: 3,
        switch: "0.0.0.0:0".parse().unwrap(),
        source: "10.0.0.2:7100".parse().unwrap(),
        items_per_s: None,
        pipeline: 64,
        protocol: MigrationProtocol::Fulva,
        ticket: Arc::new(MigrationTicket::new(0, 1)), // replaced by `migrate_out`
    };
    let status = |control: &bench::server::ServerControl| {
        proto::MigrationStatus::from(&control.migration_counters())
    };

    // Partition 1 is asked for a shard it does not host and refuses: no partition starts
    // (one that did would move its part of the shard alone, or pair the shard at the
    // switch for its part only).
    let error = control
        .migrate_out(|p| plan(if p == 1 { 9 } else { 3 }, p), None)
        .expect_err("partition 1 refuses");
    assert!(
        error.contains("partition 1") && error.contains("nothing was started"),
        "{error}"
    );
    std::thread::sleep(std::time::Duration::from_millis(50)); // two reports' time
    let s = status(&control);
    assert!(s.outgoing_active == 0 && !s.outgoing_aborted, "{s:?}");

    // Two starts at once: one wins every partition, the other none.
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let starts: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| control.migrate_out(|p| plan(3, p), None)))
            .collect();
        starts.into_iter().map(|s| s.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let refused = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(refused.contains("already migrating"), "{refused}");
    eventually("the winner's migration finishes", || {
        status(&control).outgoing_finished
    });
    destination.stop();
    source.stop();
    fabric.shutdown();
}
