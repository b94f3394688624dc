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

/// Wall-clock time, unix microseconds.
#[allow(clippy::disallowed_methods, reason = "the edge's one wall-clock read")]
pub fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A monotonic instant, for latency measurement at the edge.
#[allow(
    clippy::disallowed_methods,
    reason = "the edge's one monotonic-clock read"
)]
pub fn instant() -> std::time::Instant {
    std::time::Instant::now()
}

/// A tokio instant, for timers in async tasks (sink lingers and deadlines).
/// tokio's clock is the monotonic clock, except that tests may pause and
/// advance it, which is why timers use it rather than [`instant`].
#[allow(
    clippy::disallowed_methods,
    reason = "the one tokio clock read; timers in forwarders and sinks"
)]
pub fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// Monotonic milliseconds on the wall clock's scale: equal to the wall
/// clock when made, then advanced only by elapsed time. Expiry that must not
/// follow a wall-clock step (punch-id idempotency) runs on it, while records
/// keep the wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct MonoMs {
    wall0: i64,
    t0: std::time::Instant,
}

impl MonoMs {
    /// A clock that reads `wall_ms` now.
    pub fn starting_at(wall_ms: i64) -> Self {
        Self {
            wall0: wall_ms,
            t0: instant(),
        }
    }

    /// Milliseconds: the start's wall time plus the time elapsed since.
    pub fn now_ms(&self) -> i64 {
        self.wall0 + self.t0.elapsed().as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mono_starts_at_the_given_wall_time_and_never_goes_back() {
        let c = MonoMs::starting_at(1_000);
        let a = c.now_ms();
        assert!((1_000..1_000 + 5_000).contains(&a), "{a}");
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(c.now_ms() >= a + 5);
    }
}

/// CPU time the whole process has used (every thread, user and system),
/// for the shared lane's CPU gate (`edge/cpu_gate.rs`). Not the monotonic
/// clock: it advances only while some thread of the process runs.
#[cfg(unix)]
pub fn process_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the
    // call, and CLOCK_PROCESS_CPUTIME_ID is a clock every Unix has; the call
    // writes only `ts`. Exercised by `process_cpu_advances_with_work`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(all(test, unix))]
mod cpu_tests {
    #[test]
    fn process_cpu_advances_with_work() {
        let before = super::process_cpu();
        // Work the optimizer cannot remove, for well over the clock's
        // resolution.
        let mut x = 1u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        std::hint::black_box(x);
        let after = super::process_cpu();
        assert!(
            after > before + std::time::Duration::from_millis(1),
            "{before:?} -> {after:?}"
        );
    }
}
