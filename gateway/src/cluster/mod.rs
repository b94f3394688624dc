//! What several gateway nodes share, kept in NATS JetStream (DESIGN.md,
//! Scale-out): nothing here is a home-made store.
//!
//! - [`claims`]: cross-node idempotency and repeat windows as
//!   create-if-absent keys of key-value buckets.

pub mod claims;

pub use claims::{Claim, Claims, ClaimsConfig, ClaimsError};
