//! The `fencegate` subcommands, one file each; `main.rs` only dispatches.

pub mod fences;
pub mod locate;
pub mod log;
pub mod token;
