//! The benches' clock read. Criterion times its own iterations; the few
//! benches that time a whole run themselves (forwarding a log, appending from
//! several threads) read the monotonic clock here, the one place allowed to.

use std::time::Instant;

/// A monotonic instant, for benches that time a run themselves.
#[allow(
    clippy::disallowed_methods,
    reason = "the benches' one clock read; a bench times itself"
)]
pub fn now() -> Instant {
    Instant::now()
}
