//! The run report (`--json PATH`), schema `netmigrate.report/1`. A stable contract: fields
//! are added, never renamed or removed. Every field is described in `docs/report.md`.

use crate::measure::{micros, Recorder, SLOT};
use hdrhistogram::Histogram;
use serde::Serialize;

pub const SCHEMA: &str = "netmigrate.report/1";

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub command: String,
    pub protocol: String,
    pub policy: Option<String>,
    pub transport: String,
    pub workload: WorkloadReport,
    pub duration_s: f64,
    pub throughput_ops: Throughput,
    pub latency_us: LatencyReport,
    pub ops: OpsReport,
    pub consistency: Consistency,
    pub migration: Option<serde_json::Value>,
    pub overhead: Option<serde_json::Value>,
    pub timeline: Vec<TimelineSlot>,
    pub figure: Option<String>,
    /// Client-side detail beyond the contract (retransmissions, ignored replies, …).
    pub client: serde_json::Value,
    /// Server-side counters, when the servers ran in this process.
    pub server: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    pub name: String,
    pub read: f64,
    pub update: f64,
    pub insert: f64,
    pub scan: f64,
    pub rmw: f64,
    pub delete: f64,
    pub distribution: String,
    pub zipf_theta: f64,
    pub records: u64,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub client_threads: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub overall: f64,
    pub before: Option<f64>,
    pub during: Option<f64>,
    pub after: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles {
                p50: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        Percentiles {
            p50: micros(histogram.value_at_quantile(0.50)),
            p99: micros(histogram.value_at_quantile(0.99)),
            p999: micros(histogram.value_at_quantile(0.999)),
            max: micros(histogram.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub overall: Percentiles,
    pub before: Option<Percentiles>,
    pub during: Option<Percentiles>,
    pub after: Option<Percentiles>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct OpsReport {
    pub completed: u64,
    pub failed: u64,
    pub timeouts: u64,
    pub retries: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Consistency {
    pub checked_ops: u64,
    pub violations: u64,
    /// `ycsb --read-back`: keys read back, and keys whose read-back alone contradicts the
    /// history (a write acknowledged before the restart that the servers no longer have).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_back_keys: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_keys: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct TimelineSlot {
    pub t_s: f64,
    pub ops: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One entry per 100-ms slot, stamped with the slot's end.
pub fn timeline(recorder: &Recorder) -> Vec<TimelineSlot> {
    recorder
        .slots()
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            let (p50, p99) = if slot.latency.is_empty() {
                (0.0, 0.0)
            } else {
                (
                    micros(slot.latency.value_at_quantile(0.5)),
                    micros(slot.latency.value_at_quantile(0.99)),
                )
            };
            TimelineSlot {
                t_s: (i + 1) as f64 * SLOT.as_secs_f64(),
                ops: slot.ops,
                p50_us: p50,
                p99_us: p99,
            }
        })
        .collect()
}

pub fn write(report: &Report, path: &std::path::Path) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    // Write beside the target and rename, so a reader never sees half a report.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json + "\n")?;
    std::fs::rename(&tmp, path)
}
