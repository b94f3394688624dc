//! The QUIC edge.
pub mod tls;
