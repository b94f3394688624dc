//! fencegate wire schema.

#[path = "gen/mod.rs"]
pub mod generated;
