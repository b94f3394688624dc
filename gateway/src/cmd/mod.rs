//! The `fencegate` subcommands, one file each; `main.rs` only dispatches.

pub mod log;
pub mod token;
