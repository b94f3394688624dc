//! fencegate gateway: the QUIC edge, the pure verification pipeline, the
//! five-minute dedup windows, the durable log and the admin API.
//!
//! See `ARCHITECTURE.md` at the repository root for the code map and the
//! direction data flows.

pub mod admin;
pub mod auth;
pub mod backlog;
pub mod budget;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod dedup;
pub mod edge;
pub mod fences;
pub mod hugepages;
pub mod live;
pub mod log;
pub mod metrics;
pub mod persist;
pub mod pipeline;
pub mod record_json;
pub mod results;
pub mod rules;
pub mod serve;
pub mod sink;
pub mod ui;
