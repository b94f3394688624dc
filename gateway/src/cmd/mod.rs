//! The `fencegate` subcommands, one file each; `main.rs` only dispatches.

pub mod cert;
pub mod demo;
pub mod export;
pub mod fences;
pub mod health;
pub mod holidays;
pub mod locate;
pub mod log;
pub mod payroll;
pub mod qr;
pub mod results;
pub mod sinks;
pub mod token;
