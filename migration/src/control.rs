//! The control API (gRPC, `proto/server_control.proto`): the generated messages, service
//! and client, and their conversions to and from the migration's own types. The service
//! itself runs beside the partition loops (`bench::control`).

use crate::{MigrationCounters, Preset, Protocol};

/// Generated from `proto/server_control.proto` (package `netmigrate.server.v1`).
pub mod proto {
    tonic::include_proto!("netmigrate.server.v1");
}

/// The migration protocol a request names.
pub fn protocol_of(protocol: proto::Protocol) -> Result<Protocol, String> {
    Ok(match protocol {
        proto::Protocol::Unspecified => return Err("no protocol given".into()),
        proto::Protocol::Netmigrate => Protocol::NetMigrate,
        proto::Protocol::Rocksteady => Protocol::Rocksteady,
        proto::Protocol::Fulva => Protocol::Fulva,
        proto::Protocol::SourceBased => Protocol::SourceBased,
    })
}

pub fn proto_protocol(protocol: Protocol) -> proto::Protocol {
    match protocol {
        Protocol::NetMigrate => proto::Protocol::Netmigrate,
        Protocol::Rocksteady => proto::Protocol::Rocksteady,
        Protocol::Fulva => proto::Protocol::Fulva,
        Protocol::SourceBased => proto::Protocol::SourceBased,
    }
}

/// The preset a request names (unspecified: medium, the paper's default).
pub fn preset_of(preset: proto::Preset) -> Preset {
    match preset {
        proto::Preset::Short => Preset::Short,
        proto::Preset::Unspecified | proto::Preset::Medium => Preset::Medium,
        proto::Preset::Long => Preset::Long,
    }
}

pub fn proto_preset(preset: Preset) -> proto::Preset {
    match preset {
        Preset::Short => proto::Preset::Short,
        Preset::Medium => proto::Preset::Medium,
        Preset::Long => proto::Preset::Long,
    }
}

impl From<&MigrationCounters> for proto::MigrationStatus {
    fn from(c: &MigrationCounters) -> Self {
        // The latest migration out: earlier ones (finished or aborted) say nothing of it.
        let o = &c.latest_outgoing;
        proto::MigrationStatus {
            outgoing_active: c.outgoing_active,
            incoming_active: c.incoming_active,
            groups: o.groups,
            groups_done: o.groups_done,
            keys_moved: o.keys_moved,
            keys_at_start: o.keys_at_start,
            bytes_moved: o.bytes_moved,
            late_writes: o.late_writes,
            stream_retransmissions: o.retransmissions,
            items_applied: c.incoming.items_applied,
            items_stale: c.incoming.items_stale,
            pulled_keys: c.pulls.keys,
            bulk_pull_requests: c.bulk.requests,
            outgoing_finished: o.groups > 0
                && o.groups_done == o.groups
                && c.outgoing_active == 0
                && !o.aborted,
            outgoing_aborted: o.aborted && c.outgoing_active == 0,
            returned_keys: o.returned_keys,
            returning_active: c.returning_active,
            switch_refusals: o.switch_refusals,
            destination_refusals: o.destination_refusals,
            data_lost: o.lost_groups + c.incoming.lost_groups > 0,
            lost_groups: o.lost_groups + c.incoming.lost_groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_and_presets_round_trip() {
        for protocol in [
            Protocol::NetMigrate,
            Protocol::Rocksteady,
            Protocol::Fulva,
            Protocol::SourceBased,
        ] {
            assert_eq!(protocol_of(proto_protocol(protocol)), Ok(protocol));
        }
        assert!(protocol_of(proto::Protocol::Unspecified).is_err());
        for preset in [Preset::Short, Preset::Medium, Preset::Long] {
            assert_eq!(preset_of(proto_preset(preset)), preset);
        }
    }

    #[test]
    fn a_finished_migration_reads_as_finished() {
        let mut c = MigrationCounters::default();
        assert!(!proto::MigrationStatus::from(&c).outgoing_finished);
        c.latest_outgoing.groups = 4;
        c.latest_outgoing.groups_done = 4;
        c.outgoing_active = 1;
        assert!(!proto::MigrationStatus::from(&c).outgoing_finished);
        c.outgoing_active = 0;
        assert!(proto::MigrationStatus::from(&c).outgoing_finished);
    }
}
