//! The only place the gateway reads the clock. Everything below the edge is
//! handed `now` (see `clippy.toml`), so tests can drive it with a fake clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time, unix milliseconds.
#[allow(clippy::disallowed_methods, reason = "the edge's one wall-clock read")]
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A monotonic instant, for latency measurement at the edge.
#[allow(
    clippy::disallowed_methods,
    reason = "the edge's one monotonic-clock read"
)]
pub fn instant() -> std::time::Instant {
    std::time::Instant::now()
}
