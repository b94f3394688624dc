//! What several gateway nodes share, kept in NATS JetStream (DESIGN.md,
//! Scale-out): nothing here is a home-made store.
//!
//! - [`claims`]: cross-node idempotency and repeat windows as
//!   create-if-absent keys of key-value buckets.
//! - [`punch`]: the claims as the punch path uses them (policy, metrics,
//!   buckets opened in the background).
//! - [`settings`]: `[cluster]` and the NATS connection.
//! - [`shared`]: fences and rules in one key-value bucket, watched by
//!   every node.

pub mod claims;
pub mod punch;
pub mod settings;
pub mod shared;

pub use claims::{Claim, Claims, ClaimsConfig, ClaimsError, Stake};
pub use punch::{CLAIM_UNCHECKED, PunchClaims};
pub use settings::{ClusterSettings, OnUnreachable, RawCluster, RawClusterTenant, ResultsFrom};
pub use shared::{Doc, ShareError, SharedConfig};
