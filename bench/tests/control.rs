//! The servers' control API (gRPC) refuses bad requests with messages that say what is
//! wrong, starts one migration at a time, and reports status and counters.

use bench::commands::server::spec;
use bench::control::{self, ControlClient};
use bench::transport::{Fabric, Transport};
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
    let fabric = Fabric::new(Transport::Memory, FaultConfig::default(), None, 1).unwrap();
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
