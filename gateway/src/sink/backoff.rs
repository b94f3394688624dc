//! Retry delays: exponential growth with full jitter, so many gateway nodes
//! that lost the same downstream do not retry in lockstep.

use std::time::Duration;

/// Exponential backoff with "full jitter": the n-th delay is drawn
/// uniformly from `[base/2, base]` where `base = min(max, initial * 2^n)`.
/// Keeping half of `base` as a floor avoids hammering a dead downstream
/// with near-zero delays while still spreading the retries.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and never waiting longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The next delay; `unit` is a uniform random number in `[0, 1)`.
    /// Deterministic in `unit` so it can be tested.
    pub fn next_with(&mut self, unit: f64) -> Duration {
        let factor = 1u64 << self.attempt.min(30);
        let base = self
            .initial
            .saturating_mul(u32::try_from(factor).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let unit = unit.clamp(0.0, 1.0);
        base.mul_f64(0.5 + 0.5 * unit)
    }

    /// The next delay, with jitter from the thread's random generator.
    pub fn next_delay(&mut self) -> Duration {
        self.next_with(rand::random::<f64>())
    }

    /// Failed attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let top: Vec<_> = (0..6).map(|_| b.next_with(1.0).as_millis()).collect();
        assert_eq!(top, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.next_with(0.0), Duration::from_millis(50));
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for i in 0..1000 {
            b.reset();
            for _ in 0..(i % 12) {
                b.next_delay();
            }
            let base = Duration::from_millis(100)
                .saturating_mul(1 << (i % 12))
                .min(Duration::from_secs(30));
            let d = b.next_delay();
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..200 {
            assert!(b.next_with(0.99) <= Duration::from_secs(60));
        }
    }
}
