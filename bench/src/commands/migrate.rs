//! `netmigrate migrate`: the client of a server's control API.

use super::CommandError;
use crate::cli::{MigrateAction, MigrateArgs};
use crate::server::control::ControlClient;
use migration::control::{self, proto};

pub fn run(args: MigrateArgs) -> Result<(), CommandError> {
    match args.action {
        MigrateAction::Start(start) => {
            let mut client = ControlClient::connect(start.target.server).map_err(CommandError)?;
            let request = proto::StartMigrationRequest {
                shard: start.shard.into(),
                destination: start.destination.to_string(),
                destination_shard: start.destination_shard.unwrap_or(start.shard).into(),
                switch: start.switch.map(|s| s.to_string()).unwrap_or_default(),
                protocol: control::proto_protocol(start.protocol.wire()).into(),
                preset: control::proto_preset(start.preset.preset()).into(),
                items_per_s: start.rate,
                pipeline: start.pipeline,
            };
            let reply = client.start_migration(request).map_err(CommandError)?;
            let rate = |r: Option<f64>| r.map_or("uncapped".into(), |r| format!("{r:.0}/s"));
            println!(
                "migration of shard {} to {} started on {} partition(s) ({}): items {} and \
                 requests {} per source core",
                start.shard,
                start.destination,
                reply.partitions,
                start.protocol.name(),
                rate(reply.items_per_s),
                rate(reply.serve_per_s),
            );
            if start.watch {
                watch(&mut client, 1000)?;
            }
            Ok(())
        }
        MigrateAction::Abort(abort) => {
            let mut client = ControlClient::connect(abort.target.server).map_err(CommandError)?;
            client.abort_migration(abort.shard).map_err(CommandError)?;
            println!(
                "migration of shard {} called off; the destination is sending back what it holds",
                abort.shard
            );
            if abort.watch {
                watch(&mut client, 200)?;
            }
            Ok(())
        }
        MigrateAction::Status(target) => {
            let mut client = ControlClient::connect(target.server).map_err(CommandError)?;
            let status = client.status().map_err(CommandError)?;
            println!("{}", describe(&status));
            Ok(())
        }
        MigrateAction::Watch(watch_args) => {
            let mut client =
                ControlClient::connect(watch_args.target.server).map_err(CommandError)?;
            watch(&mut client, watch_args.interval_ms)
        }
        MigrateAction::Counters(target) => {
            let mut client = ControlClient::connect(target.server).map_err(CommandError)?;
            let reports = client.reports().map_err(CommandError)?;
            let partitions: Vec<_> = reports
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "partition": r.partition,
                        "entries": r.entries,
                        "serving": r.counters,
                        "migration": r.migration,
                        "port": {
                            "rx": r.port.rx_packets,
                            "tx": r.port.tx_packets,
                            "tx_dropped": r.port.tx_dropped,
                            "rx_rejected": r.port.rx_rejected,
                        },
                    })
                })
                .collect();
            let out = serde_json::to_string_pretty(&partitions).expect("JSON of counters");
            println!("{out}");
            Ok(())
        }
        MigrateAction::Switch(target) => {
            let state =
                crate::server::control::switch_state(target.control).map_err(CommandError)?;
            let out = serde_json::to_string_pretty(&state).expect("JSON of the switch state");
            println!("{out}");
            Ok(())
        }
    }
}

fn watch(client: &mut ControlClient, interval_ms: u32) -> Result<(), CommandError> {
    let request = proto::WatchRequest {
        interval_ms,
        until_finished: true,
    };
    client
        .watch(request, |status| {
            println!("{}", describe(status));
            true
        })
        .map_err(CommandError)?;
    let status = client.status().map_err(CommandError)?;
    if status.data_lost {
        return Err(CommandError(format!(
            "the migration failed: a crash lost data ({} groups refused with DATA_LOST)",
            status.lost_groups
        )));
    }
    Ok(())
}

/// One line per status: which side, and how far.
fn describe(s: &proto::MigrationStatus) -> String {
    let mut parts = Vec::new();
    if s.outgoing_active > 0 || s.groups > 0 {
        parts.push(format!(
            "out: {} partition(s) active, groups {}/{}, {} keys ({:.1} MB) moved, {} late \
             writes, {} resent{}",
            s.outgoing_active,
            s.groups_done,
            s.groups,
            s.keys_moved,
            s.bytes_moved as f64 / 1e6,
            s.late_writes,
            s.stream_retransmissions,
            if s.data_lost {
                format!(
                    ", FAILED: a crash lost data ({} groups refused with DATA_LOST)",
                    s.lost_groups
                )
            } else if s.outgoing_finished {
                ", finished".to_string()
            } else if s.outgoing_aborted && s.destination_refusals > 0 {
                format!(
                    ", aborted: the destination refused the shard ({} refusals; it holds \
                     data of the shard, or its --partitions or --group-bits differ)",
                    s.destination_refusals
                )
            } else if s.outgoing_aborted && s.switch_refusals > 0 {
                format!(
                    ", aborted: the switch refused to steer it ({} refusals; its pair table \
                     may be full, or the shard paired with another destination)",
                    s.switch_refusals
                )
            } else if s.outgoing_aborted {
                format!(", aborted ({} keys sent back)", s.returned_keys)
            } else {
                String::new()
            },
        ));
    }
    if s.incoming_active > 0 || s.items_applied > 0 {
        parts.push(format!(
            "in: {} partition(s) active, {} items applied ({} stale), {} keys pulled, {} bulk \
             pulls",
            s.incoming_active, s.items_applied, s.items_stale, s.pulled_keys, s.bulk_pull_requests
        ));
    }
    if s.returning_active > 0 {
        parts.push(format!(
            "back: {} partition(s) sending an aborted migration's data back",
            s.returning_active
        ));
    }
    if parts.is_empty() {
        "no migration".into()
    } else {
        parts.join("; ")
    }
}
