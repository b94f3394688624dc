//! The harness's clock reads. Load generation is timed against a monotonic
//! clock; device timestamps in frames need the wall clock.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A monotonic instant.
#[allow(
    clippy::disallowed_methods,
    reason = "the load harness is a binary; it times requests"
)]
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock time, unix milliseconds.
#[allow(
    clippy::disallowed_methods,
    reason = "the load harness is a binary; device frames carry wall time"
)]
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A tokio instant, for deadlines of async loops (the audit's wait).
#[allow(
    clippy::disallowed_methods,
    reason = "the load harness is a binary; its async loops have deadlines"
)]
pub fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}
