//! The benchmark side of netmigrate: YCSB workloads and client, measurement, the
//! linearizability checker, reports, and the subcommands of the `netmigrate` binary.

pub mod cli;
pub mod client;
pub mod commands;
pub mod history;
pub mod linearizability;
pub mod measure;
pub mod membership;
pub mod plot;
pub mod report;
pub mod server;
pub mod simulate;
pub mod value;
pub mod workload;
