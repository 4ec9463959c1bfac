//! The switch pipeline of NetMigrate: a migration-pair table and per-group Bloom-filter
//! (done) and counting-Bloom-filter (in flight) registers that steer each request to the
//! source, the destination, or both. One specification (`docs/switch.md`), two
//! implementations: the software switch here, and the P4-16 TNA program in `p4/`.

pub mod control;
pub mod pipeline;
pub mod run;
pub mod spec;

pub use pipeline::{Decision, Switch, SwitchConfig, SwitchCounters, SwitchSnapshot};
pub use run::RunningSwitch;
