//! The software switch's control API (gRPC, `proto/switch_control.proto`): counters, pairs
//! and registers, read under the pipeline's lock between two bursts.

use crate::pipeline::Switch;
use proto::switch_control_server::{SwitchControl, SwitchControlServer};
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// Generated from `proto/switch_control.proto` (package `netmigrate.switch.v1`).
pub mod proto {
    tonic::include_proto!("netmigrate.switch.v1");
}

/// Cells one ReadRegisters call may return.
pub const MAX_CELLS_PER_READ: u32 = 1 << 16;

pub struct Service {
    pipeline: Arc<Mutex<Switch>>,
}

impl Service {
    pub fn new(pipeline: Arc<Mutex<Switch>>) -> SwitchControlServer<Service> {
        SwitchControlServer::new(Service { pipeline })
    }

    fn pipeline(&self) -> Result<std::sync::MutexGuard<'_, Switch>, Status> {
        self.pipeline
            .lock()
            .map_err(|_| Status::internal("the switch loop panicked"))
    }
}

pub fn state_of(snapshot: &crate::SwitchSnapshot) -> proto::SwitchState {
    let counters = serde_json::to_value(snapshot.counters)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    proto::SwitchState {
        counters,
        pairs: snapshot
            .pairs
            .iter()
            .map(|p| proto::Pair {
                slot: p.slot as u32,
                source: p.source.clone(),
                destination: p.destination.clone(),
                partitions: p.partitions.into(),
                groups_done: p.groups_done,
                groups_in_flight: p.groups_in_flight,
                bf_cells_set: p.bf_cells_set.to_vec(),
                false_done_rate: p.false_done_rate,
            })
            .collect(),
        bf_cells: snapshot.bf_cells as u64,
        cbf_cells: snapshot.cbf_cells as u64,
    }
}

#[tonic::async_trait]
impl SwitchControl for Service {
    async fn snapshot(
        &self,
        _: Request<proto::SnapshotRequest>,
    ) -> Result<Response<proto::SwitchState>, Status> {
        let snapshot = self.pipeline()?.snapshot();
        Ok(Response::new(state_of(&snapshot)))
    }

    async fn read_registers(
        &self,
        request: Request<proto::ReadRegistersRequest>,
    ) -> Result<Response<proto::Registers>, Status> {
        let r = request.into_inner();
        let counting = match r.filter() {
            proto::Filter::Bloom => false,
            proto::Filter::Counting => true,
            proto::Filter::Unspecified => {
                return Err(Status::invalid_argument("filter: BLOOM or COUNTING"))
            }
        };
        if r.count > MAX_CELLS_PER_READ {
            return Err(Status::invalid_argument(format!(
                "count: at most {MAX_CELLS_PER_READ} cells per call"
            )));
        }
        let offset = usize::try_from(r.offset)
            .map_err(|_| Status::invalid_argument("offset out of range"))?;
        let cells = self
            .pipeline()?
            .read_registers(
                counting,
                r.array as usize,
                r.slot as usize,
                offset,
                r.count as usize,
            )
            .map_err(Status::out_of_range)?;
        Ok(Response::new(proto::Registers {
            cells: cells.into_iter().map(u32::from).collect(),
        }))
    }
}
