//! YCSB-style workload definition: property files, workload specs and the
//! per-thread random generators that drive a benchmark client.
//!
//! This file is written to be usable verbatim as `workload/mod.rs` in another
//! crate: it only declares the submodules and re-exports their public items.

mod generator;
mod properties;
mod spec;

pub use generator::{
    fnvhash64, zeta, KeyChooser, Operation, OperationChooser, ScrambledZipfian, SkewedLatest,
    Uniform, Zipfian,
};
pub use properties::{Properties, PropertiesError};
pub use spec::{Distribution, SpecError, WorkloadSpec, MAX_VALUE_BYTES, MIN_VALUE_BYTES};
