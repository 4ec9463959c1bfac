//! The servers' control API (gRPC, `migration/proto/server_control.proto`): the service a
//! `netmigrate server --control ADDR` runs beside its partition loops, and the blocking
//! client `netmigrate migrate` and the multi-process experiment use. The service only
//! sends commands to the loops and reads what they publish, so it never slows serving.

use crate::server::{partition_addr, PartitionReport, ServerControl};
use migration::control::{self, proto};
use migration::{MigrationBudget, MigrationCounters, OutgoingPlan};
use proto::server_control_client::ServerControlClient;
use proto::server_control_server::{ServerControl as ControlService, ServerControlServer};
use std::io;
use std::net::{SocketAddr, SocketAddrV4, TcpListener};
use std::pin::Pin;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Groups each source core hands over at once when a request leaves it open.
pub const DEFAULT_PIPELINE: usize = 64;
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(10);
/// How long a watch waits for a migration started just before it to show in the status.
const STATUS_SETTLES: Duration = Duration::from_millis(200);

/// A gRPC server on a thread of its own; stops when dropped.
pub struct ControlServer {
    addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

/// How long a stopping API waits for its clients to hang up (a blocking client that is
/// not polling never reads the GOAWAY) before closing their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

impl ControlServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `router` on `addr` (bound before returning, so a busy address is reported here)
/// on a one-thread tokio runtime.
pub fn spawn_grpc(addr: SocketAddr, router: tonic::service::Routes) -> io::Result<ControlServer> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("control API on {addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (shutdown, stopped) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => return eprintln!("control API on {addr}: {e}"),
                };
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let mut graceful = stopped.clone();
                let serve = tonic::transport::Server::builder()
                    .add_routes(router)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = graceful.wait_for(|stop| *stop).await;
                    });
                let mut forced = stopped;
                let deadline = async move {
                    let _ = forced.wait_for(|stop| *stop).await;
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                };
                tokio::select! {
                    served = serve => {
                        if let Err(e) = served {
                            eprintln!("control API on {addr} stopped: {e}");
                        }
                    }
                    () = deadline => {}
                }
            })
        })?;
    Ok(ControlServer {
        addr,
        shutdown,
        thread: Some(thread),
    })
}

/// Starts the control API of a running server.
pub fn serve(addr: SocketAddr, server: ServerControl) -> io::Result<ControlServer> {
    let routes = tonic::service::Routes::new(ServerControlServer::new(Service { server }));
    spawn_grpc(addr, routes)
}

struct Service {
    server: ServerControl,
}

fn parse_addr(field: &str, text: &str) -> Result<SocketAddrV4, Status> {
    text.parse()
        .map_err(|_| Status::invalid_argument(format!("{field}: expected IPv4:port, got {text:?}")))
}

fn shard_of(field: &str, value: u32) -> Result<u16, Status> {
    u16::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("{field}: {value} is not a shard id")))
}

/// Validates a start request, turns it into each partition's plan, and starts them.
fn start(
    server: &ServerControl,
    request: &proto::StartMigrationRequest,
) -> Result<proto::StartMigrationReply, Status> {
    let spec = server.spec();
    let shard = shard_of("shard", request.shard)?;
    if !spec.shards.contains(&shard) {
        return Err(Status::not_found(format!(
            "this server holds shard(s) {:?}, not {shard}",
            spec.shards
        )));
    }
    let protocol = control::protocol_of(request.protocol())
        .map_err(|e| Status::invalid_argument(format!("protocol: {e}")))?;
    let destination = parse_addr("destination", &request.destination)?;
    let switch = match (protocol, request.switch.as_str()) {
        (migration::Protocol::NetMigrate, "") => {
            return Err(Status::invalid_argument(
                "switch: NetMigrate needs the switch's control address",
            ))
        }
        (_, "") => SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
        (_, text) => parse_addr("switch", text)?,
    };
    if let Some(rate) = request.items_per_s {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Status::invalid_argument(format!(
                "items_per_s must be a positive number, got {rate}"
            )));
        }
    }
    let partitions = spec.map.partitions();
    if u32::from(destination.port()) + partitions > 65536 {
        return Err(Status::invalid_argument(format!(
            "destination port {} leaves no room for {partitions} partition ports",
            destination.port()
        )));
    }
    if server.migration_counters().outgoing_active > 0 {
        return Err(Status::failed_precondition(
            "a migration out of this server is already under way",
        ));
    }
    let budget = MigrationBudget::of(
        control::preset_of(request.preset()),
        spec.capacity,
        request.items_per_s,
    );
    let template = OutgoingPlan {
        shard,
        destination,
        destination_shard: shard_of("destination_shard", request.destination_shard)?,
        switch,
        source: spec.base,
        items_per_s: budget.items_per_s,
        pipeline: match request.pipeline {
            0 => DEFAULT_PIPELINE,
            n => n.min(1024) as usize,
        },
        protocol,
        ticket: Default::default(), // `migrate_out` gives the partitions one
    };
    server
        .migrate_out(
            |partition| OutgoingPlan {
                destination: partition_addr(destination, partition),
                ..template.clone()
            },
            budget.serve_per_s,
        )
        .map_err(Status::failed_precondition)?;
    Ok(proto::StartMigrationReply {
        partitions,
        items_per_s: budget.items_per_s,
        serve_per_s: budget.serve_per_s,
    })
}

fn partition_counters(report: &PartitionReport) -> proto::PartitionCounters {
    let c = &report.counters;
    proto::PartitionCounters {
        partition: report.partition,
        requests: c.requests(),
        gets: c.gets,
        puts: c.puts,
        deletes: c.deletes,
        multi_requests: c.multi_requests,
        duplicate_writes: c.duplicate_writes,
        error_replies: c.error_replies,
        dropped: c.dropped(),
        entries: report.entries as u64,
        rx_packets: report.port.rx_packets,
        tx_packets: report.port.tx_packets,
        tx_dropped: report.port.tx_dropped,
        rx_rejected: report.port.rx_rejected,
        migration: Some((&report.migration).into()),
        migration_json: serde_json::to_string(&report.migration).unwrap_or_default(),
        serve_json: serde_json::to_string(&report.counters).unwrap_or_default(),
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<proto::MigrationStatus, Status>> + Send>>;

#[tonic::async_trait]
impl ControlService for Service {
    async fn start_migration(
        &self,
        request: Request<proto::StartMigrationRequest>,
    ) -> Result<Response<proto::StartMigrationReply>, Status> {
        // Waits (briefly) for every partition loop to take the command.
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || start(&server, request.get_ref()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(Response::new)
    }

    async fn abort_migration(
        &self,
        request: Request<proto::AbortMigrationRequest>,
    ) -> Result<Response<proto::AbortMigrationReply>, Status> {
        let shard = shard_of("shard", request.get_ref().shard)?;
        self.server
            .abort(shard)
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(proto::AbortMigrationReply {}))
    }

    async fn status(
        &self,
        _: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::MigrationStatus>, Status> {
        Ok(Response::new((&self.server.migration_counters()).into()))
    }

    type WatchMigrationStream = StatusStream;

    async fn watch_migration(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<StatusStream>, Status> {
        let request = request.into_inner();
        let interval = match request.interval_ms {
            0 => Duration::from_secs(1),
            ms => Duration::from_millis(u64::from(ms)).max(MIN_WATCH_INTERVAL),
        };
        let server = self.server.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let status = || proto::MigrationStatus::from(&server.migration_counters());
            let idle = |s: &proto::MigrationStatus| {
                s.outgoing_active == 0 && s.incoming_active == 0 && s.returning_active == 0
            };
            // Partitions publish every 10 ms: a migration started just now may not show yet.
            let settled = tokio::time::Instant::now() + STATUS_SETTLES;
            while idle(&status()) && tokio::time::Instant::now() < settled {
                tokio::time::sleep(MIN_WATCH_INTERVAL).await;
            }
            let mut ticks = tokio::time::interval(interval);
            loop {
                ticks.tick().await;
                let status = status();
                let idle = idle(&status);
                if tx.send(Ok(status)).await.is_err() || (request.until_finished && idle) {
                    break; // The client hung up, or there is nothing left to watch.
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn counters(
        &self,
        _: Request<proto::CountersRequest>,
    ) -> Result<Response<proto::ServerCounters>, Status> {
        Ok(Response::new(proto::ServerCounters {
            partitions: self
                .server
                .reports()
                .iter()
                .map(partition_counters)
                .collect(),
            work_capacity: self.server.spec().capacity,
        }))
    }
}

/// A blocking client of a server's control API.
pub struct ControlClient {
    runtime: tokio::runtime::Runtime,
    client: ServerControlClient<tonic::transport::Channel>,
    addr: SocketAddr,
}

fn rpc_error(addr: SocketAddr, status: Status) -> String {
    format!("server {addr}: {}", status.message())
}

/// Runs one unary call of a blocking client to its end.
fn unary<T>(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    call: impl std::future::Future<Output = Result<Response<T>, Status>>,
) -> Result<T, String> {
    runtime
        .block_on(call)
        .map(Response::into_inner)
        .map_err(|s| rpc_error(addr, s))
}

impl ControlClient {
    pub fn connect(addr: SocketAddr) -> Result<ControlClient, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2));
        let client = runtime
            .block_on(ServerControlClient::connect(endpoint))
            .map_err(|e| {
                format!("cannot reach the control API at {addr} ({e}): is `netmigrate server --control {addr}` running?")
            })?;
        Ok(ControlClient {
            runtime,
            client,
            addr,
        })
    }

    pub fn start_migration(
        &mut self,
        request: proto::StartMigrationRequest,
    ) -> Result<proto::StartMigrationReply, String> {
        unary(
            &self.runtime,
            self.addr,
            self.client.start_migration(request),
        )
    }

    pub fn abort_migration(&mut self, shard: u16) -> Result<(), String> {
        let request = proto::AbortMigrationRequest {
            shard: u32::from(shard),
        };
        unary(
            &self.runtime,
            self.addr,
            self.client.abort_migration(request),
        )
        .map(drop)
    }

    pub fn status(&mut self) -> Result<proto::MigrationStatus, String> {
        unary(
            &self.runtime,
            self.addr,
            self.client.status(proto::StatusRequest {}),
        )
    }

    pub fn counters(&mut self) -> Result<proto::ServerCounters, String> {
        unary(
            &self.runtime,
            self.addr,
            self.client.counters(proto::CountersRequest {}),
        )
    }

    /// Calls `each` with every update of a watch until it returns false or the stream ends.
    pub fn watch(
        &mut self,
        request: proto::WatchRequest,
        mut each: impl FnMut(&proto::MigrationStatus) -> bool,
    ) -> Result<(), String> {
        let addr = self.addr;
        let client = &mut self.client;
        self.runtime.block_on(async move {
            let mut stream = client
                .watch_migration(request)
                .await
                .map_err(|s| rpc_error(addr, s))?
                .into_inner();
            while let Some(status) = stream.message().await.map_err(|s| rpc_error(addr, s))? {
                if !each(&status) {
                    break;
                }
            }
            Ok(())
        })
    }

    /// The server's partitions' reports, as the in-process server gives them.
    pub fn reports(&mut self) -> Result<Vec<PartitionReport>, String> {
        let counters = self.counters()?;
        counters
            .partitions
            .iter()
            .map(|p| {
                let migration: MigrationCounters = serde_json::from_str(&p.migration_json)
                    .map_err(|e| format!("server {}: bad migration counters: {e}", self.addr))?;
                let counters = serde_json::from_str(&p.serve_json)
                    .map_err(|e| format!("server {}: bad serving counters: {e}", self.addr))?;
                Ok(PartitionReport {
                    partition: p.partition,
                    counters,
                    migration,
                    port: dataplane::PortStats {
                        rx_packets: p.rx_packets,
                        tx_packets: p.tx_packets,
                        tx_dropped: p.tx_dropped,
                        rx_rejected: p.rx_rejected,
                        ..Default::default()
                    },
                    entries: p.entries as usize,
                    // Not carried by the control API: the server prints them when it stops.
                    log: Default::default(),
                    chain: None,
                })
            })
            .collect()
    }
}

/// The software switch's counters, pairs and filter occupancy, read over its control API.
pub fn switch_state(addr: SocketAddr) -> Result<tofino::control::proto::SwitchState, String> {
    use tofino::control::proto::{switch_control_client::SwitchControlClient, SnapshotRequest};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2));
        let mut client = SwitchControlClient::connect(endpoint).await.map_err(|e| {
            format!(
                "cannot reach the switch's control API at {addr} ({e}): is `netmigrate switch \
                 --control {addr}` running?"
            )
        })?;
        client
            .snapshot(SnapshotRequest {})
            .await
            .map(Response::into_inner)
            .map_err(|s| format!("switch {addr}: {}", s.message()))
    })
}
