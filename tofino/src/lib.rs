//! The switch pipeline (NetMigrate's Bloom-filter steering). The software switch and the
//! P4-16 program arrive with the NetMigrate issue; this crate is reserved so the dependency
//! direction (`tofino` depends on `dataplane` only) is fixed from the start.
