//! Admission control keyed on the node's own queueing delay (CoDel-style).
//!
//! The edge runs two controllers and reports to each how long work took
//! (`observe`): a punch's sojourn from its frame being read to its ack
//! being ready (log commit included), and a new connection's set-up from
//! its `Incoming` to its authenticated Hello. Under CPU overload the
//! handshakes in flight share the cores and each one slows: the queue is
//! the set of handshakes in progress, not a line in front of them, so the
//! set-up time is the delay that shows it. One round trip of it is the
//! client's; the window's minimum (below) keeps a slow or hostile client
//! from counting unless every set-up of the window is slow too.
//!
//! Time is cut into windows of `interval`. A window of at least
//! [`MIN_SAMPLES`] samples whose *smallest* delay stayed above `target`
//! means a standing queue, not a burst or a lone slow request (a burst
//! drains within the window and leaves at least one quick sample), and the
//! controller is overloaded for the whole next window. The punch
//! controller's verdict is acted on: the node refuses new connections
//! before any key exchange and answers new punches on open connections
//! `Busy` with a retry-after. The set-up controller's verdict is not: its
//! limit (below) governs connections, because a fleet far away makes every
//! set-up slow without any queue. A window without samples clears the state, so
//! the controller fails open and keeps probing: refusing everything yields
//! no samples, and the next window admits again.
//!
//! For connections a verdict per window is too coarse: the window that
//! admits would let every waiting client's retry in at once, and that
//! burst would be the next standing queue. So the set-up controller also
//! keeps a limit on connections in set-up, adjusted per window (AIMD) on
//! the window's *median* delay above a baseline, the fastest set-up of
//! recent windows: a window that used the limit (came within half of it)
//! and where more than half the samples were over the baseline plus
//! `target` cuts it by a quarter, a window
//! where fewer than a quarter were over and whose set-ups came near the
//! limit raises it by an eighth (between the two it holds). Under CPU
//! overload the set-up time is about the count in set-up × the CPU each
//! needs, so the limit settles where a typical set-up takes about
//! `target` more than the quickest. The baseline falls at once to a
//! window's fastest and rises towards it by at most [`BASE_CREEP_US`] per
//! window, and only in windows that did not use the limit: a queue of
//! set-ups cannot lift it, a fleet that moved farther away can. The
//! minimum alone is the wrong
//! statistic here: handshakes in flight share the CPU unevenly, and a
//! window whose median set-up took 120 ms still held one under 50 ms, so
//! a minimum-driven limit rose until the typical set-up took seconds
//! (issue 12, docs/PERFORMANCE.md "Overload"). The median alone is wrong
//! too: a set-up includes the client's round trip, and a fleet on 100 ms
//! mobile links would hold the limit at its floor. Measured from the
//! fastest, the median sees the spread that queueing adds, not the
//! distance every client shares. One slow client moves a median no more
//! than a minimum.
//!
//! After the limit moves, it is judged again only by a window in which at
//! least half the set-ups *started* after the move. A set-up that began
//! under the old limit shows the old limit's queue: had it counted, one
//! slow group admitted before a cut would cut again in each window it
//! took to finish, halving the limit for one overload, as a sender that
//! halved its window once per lost packet rather than once per round trip
//! would. So the limit moves at most once per window or per typical
//! set-up time, whichever is longer.
//! Such a window is judged on all its samples, not only the new ones: the
//! set-ups that started since the move and already finished are the
//! quick ones, and counting only them would read every queue as short.
//!
//! It is pure: callers pass `now` (an instant they already read for their
//! own latency metric), and state is a few atomics, so there is no lock,
//! allocation or clock read per record.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Settings of the admission controller (`[quic] admission_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Queueing delay the node tolerates; zero turns admission control off.
    pub target: Duration,
    /// Window over which the smallest delay must stay above `target` before
    /// the node sheds load, and for which it then sheds.
    pub interval: Duration,
    /// Retry-after sent in `Busy` to punches shed while overloaded.
    pub retry_after: Duration,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            target: Duration::from_millis(50),
            interval: Duration::from_millis(100),
            retry_after: Duration::from_millis(500),
        }
    }
}

/// The controller: see the module docs.
#[derive(Debug)]
pub struct Admission {
    settings: AdmissionSettings,
    /// Instants are stored as microseconds since this one.
    epoch: Instant,
    /// Start of the current window, µs since `epoch`.
    window_start_us: AtomicU64,
    /// Smallest delay seen in the current window, µs; `u64::MAX` when none.
    window_min_us: AtomicU64,
    /// Samples in the current window (low 32 bits) and, of them, those over
    /// the baseline plus `target` (high 32 bits): one word, so a window
    /// roll never splits a sample from its verdict.
    window_counts: AtomicU64,
    /// Of the window's samples, those that started after the limit last
    /// moved. A word of its own: a sample landing during a roll may count
    /// here in one window and in `window_counts` in the next, which moves
    /// the "at least half fresh" test by one sample at most.
    window_fresh: AtomicU64,
    /// When the limit last moved, µs since `epoch` (module docs).
    last_change_us: AtomicU64,
    /// The baseline, µs (module docs): the part of a set-up that is the
    /// nearest clients' round trip, not queueing; `u64::MAX` before the
    /// first window with samples.
    base_us: AtomicU64,
    /// `settings.target` in µs.
    target_us: u64,
    /// Verdict of the last finished window.
    overloaded: AtomicBool,
    /// Most connections in set-up admitted at once (see the module docs).
    limit: AtomicUsize,
    /// Largest in-set-up count seen in the current window.
    peak: AtomicUsize,
    /// Bounds of `limit`.
    min_limit: usize,
    max_limit: usize,
}

/// The set-up limit a node starts with: low enough that a 9:00 burst on a
/// fresh node does not start as a pile of slow handshakes, and raised by an
/// eighth per window while set-ups stay quick (per set-up time when a
/// set-up takes longer than a window: module docs).
pub const INITIAL_LIMIT: usize = 128;
/// Fewest samples in a window for it to count as overloaded: at the
/// rates where overload happens (hundreds of punches or set-ups per second)
/// a 100 ms window holds dozens.
pub const MIN_SAMPLES: u32 = 16;
/// Fewest samples in a window for it to move the set-up limit: fewer say
/// little about the median.
const MIN_LIMIT_SAMPLES: u32 = 8;
/// Most the baseline rises per window, µs: at the default 100 ms window,
/// 1 ms a window follows clients that moved 150 ms farther away within
/// 15 s of windows that left the limit unused.
pub const BASE_CREEP_US: u64 = 1_000;
/// The limit is never cut below this, so a node keeps admitting (and
/// measuring) however slow its set-ups are, and a fleet whose round trips
/// differ by more than the target (which the median reads as queueing)
/// still connects at 32 × (1 / set-up time) a second.
const MIN_LIMIT: usize = 32;

impl Admission {
    /// A controller whose first window starts at `now`.
    pub fn new(settings: AdmissionSettings, now: Instant) -> Self {
        Self {
            settings,
            epoch: now,
            window_start_us: AtomicU64::new(0),
            window_min_us: AtomicU64::new(u64::MAX),
            window_counts: AtomicU64::new(0),
            window_fresh: AtomicU64::new(0),
            last_change_us: AtomicU64::new(0),
            // No window judged yet: nothing counts as over until one is.
            base_us: AtomicU64::new(u64::MAX),
            target_us: u64::try_from(settings.target.as_micros()).unwrap_or(u64::MAX),
            overloaded: AtomicBool::new(false),
            limit: AtomicUsize::new(INITIAL_LIMIT),
            peak: AtomicUsize::new(0),
            min_limit: MIN_LIMIT,
            max_limit: usize::MAX,
        }
    }

    /// The same, with the set-up limit never above `max` (the hard bound,
    /// `quic.max_handshakes_in_flight`), or above the floor if `max` is
    /// below it.
    pub fn with_max_limit(mut self, max: usize) -> Self {
        self.max_limit = max.max(self.min_limit);
        self.limit = AtomicUsize::new(INITIAL_LIMIT.clamp(self.min_limit, self.max_limit));
        self
    }

    /// Whether to admit a new connection at `now`, with `in_setup`
    /// connections already in set-up: below the current limit.
    pub fn admit(&self, now: Instant, in_setup: usize) -> bool {
        if !self.enabled() {
            return true;
        }
        self.roll(now);
        self.peak.fetch_max(in_setup + 1, Ordering::Relaxed);
        in_setup < self.limit.load(Ordering::Relaxed)
    }

    /// The current set-up limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The settings in force.
    pub fn settings(&self) -> &AdmissionSettings {
        &self.settings
    }

    /// Whether the controller is on (a non-zero target).
    pub fn enabled(&self) -> bool {
        !self.settings.target.is_zero()
    }

    /// Reports that node-side work waited `delay`, at `now`.
    pub fn observe(&self, now: Instant, delay: Duration) {
        if !self.enabled() {
            return;
        }
        // Roll first, so the sample lands in the window it belongs to and
        // one slow sample after a quiet spell is judged with its window's
        // others, not alone.
        self.roll(now);
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX - 1);
        self.window_min_us.fetch_min(us, Ordering::Relaxed);
        let started = self.micros(now).saturating_sub(us);
        if started >= self.last_change_us.load(Ordering::Relaxed) {
            self.window_fresh.fetch_add(1, Ordering::Relaxed);
        }
        let over = us
            > self
                .base_us
                .load(Ordering::Relaxed)
                .saturating_add(self.target_us);
        self.window_counts
            .fetch_add(1 | (u64::from(over) << 32), Ordering::Relaxed);
    }

    /// Whether to shed new work at `now`.
    pub fn overloaded(&self, now: Instant) -> bool {
        if !self.enabled() {
            return false;
        }
        self.roll(now);
        self.overloaded.load(Ordering::Relaxed)
    }

    /// Closes the current window if `interval` has passed: its smallest
    /// delay decides the verdict for the next window, its median (against
    /// the baseline) the set-up limit. One thread wins the
    /// compare-exchange; the others see the new window.
    fn roll(&self, now: Instant) {
        let t = self.micros(now);
        let start = self.window_start_us.load(Ordering::Relaxed);
        let interval = u64::try_from(self.settings.interval.as_micros()).unwrap_or(u64::MAX);
        if t < start.saturating_add(interval) {
            return;
        }
        if self
            .window_start_us
            .compare_exchange(start, t, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let min = self.window_min_us.swap(u64::MAX, Ordering::AcqRel);
        let counts = self.window_counts.swap(0, Ordering::AcqRel);
        let fresh = self.window_fresh.swap(0, Ordering::AcqRel);
        let (samples, over_target) = (counts & u64::from(u32::MAX), counts >> 32);
        // A window that ended more than one interval ago says nothing about
        // now, and one without samples means nothing waited: both admit.
        let stale = t >= start.saturating_add(interval.saturating_mul(2));
        // A standing queue needs traffic: a few slow requests on an idle
        // node (a slow fsync, a debug build) are not overload.
        let over = !stale && samples >= u64::from(MIN_SAMPLES) && min > self.target_us;
        self.overloaded.store(over, Ordering::Relaxed);
        let peak = self.peak.swap(0, Ordering::Relaxed);
        let limit = self.limit.load(Ordering::Relaxed);
        // The limit was used: the window's set-ups could have queued on
        // each other. Only then do its delays say anything about the limit.
        let used = peak * 2 >= limit;
        if min != u64::MAX {
            // Down at once; up by at most BASE_CREEP_US, and only from a
            // window that left the limit unused, so a queue of set-ups
            // cannot lift it while a fleet that moved away can.
            let base = self.base_us.load(Ordering::Relaxed);
            let next = if base == u64::MAX {
                min
            } else if used {
                min.min(base)
            } else {
                min.min(base.saturating_add(BASE_CREEP_US))
            };
            self.base_us.store(next, Ordering::Relaxed);
        }
        // The median: more than half over the baseline plus target cuts,
        // fewer than a quarter raises, between holds; both only when the
        // limit was used, and only by a window mostly of set-ups that
        // started after its last move. Not the verdict: every client far
        // away makes every sample slow alike.
        let current = !stale && used && fresh * 2 >= samples;
        let judged = current && samples >= u64::from(MIN_LIMIT_SAMPLES);
        let next = if judged && over_target * 2 > samples {
            (limit - limit / 4).max(self.min_limit)
        } else if current && samples > 0 && over_target * 4 < samples {
            (limit + (limit / 8).max(1)).min(self.max_limit)
        } else {
            limit
        };
        if next != limit {
            self.limit.store(next, Ordering::Relaxed);
            self.last_change_us.store(t, Ordering::Relaxed);
        }
    }

    /// `now` in µs since `epoch`.
    fn micros(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ctl(t0: Instant) -> Admission {
        Admission::new(
            AdmissionSettings {
                target: ms(50),
                interval: ms(100),
                retry_after: ms(500),
            },
            t0,
        )
    }

    #[test]
    fn a_window_whose_every_delay_is_over_target_sheds_the_next_window() {
        let t0 = crate::clock::instant();
        let a = ctl(t0);
        for i in 0..20 {
            a.observe(t0 + ms(i * 5), ms(80));
        }
        assert!(
            !a.overloaded(t0 + ms(99)),
            "judged only when the window ends"
        );
        assert!(a.overloaded(t0 + ms(100)));
        assert!(a.overloaded(t0 + ms(150)), "for the whole next window");
    }

    #[test]
    fn one_quick_sample_means_a_burst_not_a_standing_queue() {
        let t0 = crate::clock::instant();
        let a = ctl(t0);
        for i in 0..20 {
            a.observe(t0 + ms(i * 5), ms(if i == 7 { 5 } else { 900 }));
        }
        assert!(!a.overloaded(t0 + ms(100)));
    }

    /// `MIN_SAMPLES` slow samples at `at`.
    fn slow(a: &Admission, at: Instant, delay: Duration) {
        for _ in 0..MIN_SAMPLES {
            a.observe(at, delay);
        }
    }

    #[test]
    fn a_few_slow_requests_on_a_quiet_node_are_not_overload() {
        let t0 = crate::clock::instant();
        let a = ctl(t0);
        for _ in 0..MIN_SAMPLES - 1 {
            a.observe(t0 + ms(10), ms(500));
        }
        assert!(!a.overloaded(t0 + ms(110)));
    }

    #[test]
    fn a_window_without_samples_admits_again() {
        let t0 = crate::clock::instant();
        let a = ctl(t0);
        slow(&a, t0 + ms(10), ms(500));
        assert!(a.overloaded(t0 + ms(110)));
        // Shedding everything yields no samples: the next window probes.
        assert!(!a.overloaded(t0 + ms(210)));
    }

    #[test]
    fn a_verdict_from_long_ago_is_stale() {
        let t0 = crate::clock::instant();
        let a = ctl(t0);
        slow(&a, t0 + ms(10), ms(500));
        // Nothing checked for a second: the old window says nothing now.
        assert!(!a.overloaded(t0 + ms(1_000)));
    }

    #[test]
    fn the_set_up_limit_falls_while_over_target_and_rises_while_used_and_quick() {
        let t0 = crate::clock::instant();
        // One window per 100 ms step: its first call closes the window
        // before; samples late in it (a set-up of `delay` < 90 ms started
        // after that roll and any move of the limit in it), then a
        // connection attempt with `in_setup` already in set-up.
        let step = |a: &Admission, i: u64, delay: u64, in_setup: Option<usize>| {
            let t = t0 + ms(100 * i);
            let _ = a.overloaded(t);
            slow(a, t + ms(90), ms(delay));
            a.admit(t + ms(91), in_setup.unwrap_or(a.limit() - 1))
        };
        let a = ctl(t0).with_max_limit(200);
        assert_eq!(a.limit(), 128);
        assert!(a.admit(t0, 127));
        assert!(!a.admit(t0, 128), "at the limit");
        // A quick window that used the limit: the baseline is 5 ms, and
        // 128 → 144.
        mixed(&a, t0 + ms(10), 0, 16);
        // Slow windows (each set-up started after the last cut): 144 → 108
        // → 81 → 61, then the floor.
        for i in 1..=4 {
            step(&a, i, 80, None);
        }
        assert_eq!(a.limit(), 61);
        assert!(!a.admit(t0 + ms(492), 61));
        for i in 5..=20 {
            step(&a, i, 80, None);
        }
        assert_eq!(a.limit(), MIN_LIMIT);
        // Quick windows that use the limit raise it, up to the hard bound.
        for i in 21..60 {
            assert!(step(&a, i, 5, None));
        }
        assert_eq!(a.limit(), 200);
        // Quick windows that leave it unused do not.
        let b = ctl(t0);
        for i in 1..10 {
            assert!(step(&b, i, 5, Some(1)));
        }
        assert_eq!(b.limit(), INITIAL_LIMIT);
    }

    /// One window at `t`: `slow_n` samples of 60 ms (over the 5 ms
    /// baseline plus the 50 ms target), `quick_n` of 5 ms.
    fn mixed(a: &Admission, t: Instant, slow_n: u32, quick_n: u32) {
        for _ in 0..slow_n {
            a.observe(t, ms(60));
        }
        for _ in 0..quick_n {
            a.observe(t, ms(5));
        }
    }

    #[test]
    fn a_window_whose_median_is_slow_cuts_the_limit_though_its_fastest_was_quick() {
        // Handshakes in flight share the CPU unevenly: a few finish quickly
        // while most wait. The old rule (cut only when even the fastest was
        // over target) let the limit rise while typical set-ups took
        // seconds.
        let t0 = crate::clock::instant();
        let a = ctl(t0);
        mixed(&a, t0 + ms(10), 0, 16);
        assert!(a.admit(t0 + ms(110), 0));
        assert_eq!(a.limit(), 128);
        mixed(&a, t0 + ms(120), 12, 4);
        assert!(a.admit(t0 + ms(130), 127), "the limit is used");
        assert!(a.admit(t0 + ms(210), 0));
        assert_eq!(a.limit(), 96, "three quarters of 128");
        assert!(
            !a.overloaded(t0 + ms(210)),
            "the overload verdict still needs every sample slow"
        );
    }

    #[test]
    fn a_few_slow_set_ups_neither_cut_nor_raise_and_a_quick_majority_raises() {
        let t0 = crate::clock::instant();
        let a = ctl(t0);
        // A quick window that leaves the limit unused sets the baseline
        // (5 ms) and moves nothing.
        mixed(&a, t0 + ms(10), 0, 16);
        assert!(a.admit(t0 + ms(110), 0));
        assert_eq!(a.limit(), 128);
        // Between a quarter and a half over target, the limit used: hold.
        mixed(&a, t0 + ms(120), 6, 10);
        assert!(a.admit(t0 + ms(130), 127));
        assert!(a.admit(t0 + ms(210), 0));
        assert_eq!(a.limit(), 128);
        // One slow client among many quick ones, the limit used: raise.
        mixed(&a, t0 + ms(220), 1, 15);
        assert!(a.admit(t0 + ms(230), 127));
        assert!(a.admit(t0 + ms(310), 0));
        assert_eq!(a.limit(), 144);
        // Too few samples to say where the median is: hold.
        mixed(&a, t0 + ms(380), 7, 0);
        assert!(a.admit(t0 + ms(385), 143));
        assert!(a.admit(t0 + ms(410), 0));
        assert_eq!(a.limit(), 144);
        // Slow, but the limit unused: the set-ups were not queued on each
        // other, so no cut.
        mixed(&a, t0 + ms(420), 16, 0);
        assert!(a.admit(t0 + ms(510), 0));
        assert_eq!(a.limit(), 144);
    }

    #[test]
    fn clients_far_away_do_not_sink_the_limit() {
        // Every set-up takes a 150-180 ms round trip: no queueing, so the
        // limit must not fall (the median alone would cut it to the floor).
        let t0 = crate::clock::instant();
        let a = ctl(t0);
        for w in 0..10u64 {
            let t = t0 + ms(100 * w + 10);
            for i in 0..16u64 {
                a.observe(t, ms(150 + i * 2));
            }
            assert!(a.admit(t + ms(1), a.limit() - 1));
        }
        assert!(a.limit() >= INITIAL_LIMIT, "limit {}", a.limit());
        // Queueing on top of the distance: the typical set-up 120 ms more
        // than the fastest, and the limit falls.
        let before = a.limit();
        for w in 10..20u64 {
            let t = t0 + ms(100 * w + 10);
            a.observe(t, ms(150));
            for _ in 0..15 {
                a.observe(t, ms(270));
            }
            assert!(!a.admit(t + ms(1), a.limit()));
        }
        assert!(a.limit() < before, "limit {} from {before}", a.limit());
    }

    #[test]
    fn a_queue_that_slows_every_set_up_alike_does_not_lift_the_baseline() {
        // Baseline 5 ms, then every set-up 120 ms while the limit is used:
        // the limit keeps falling to the floor and the baseline stays. Had
        // it crept up with these windows (1 ms each), the cuts would stop.
        let t0 = crate::clock::instant();
        let a = ctl(t0);
        mixed(&a, t0 + ms(10), 0, 16);
        for w in 1..100u64 {
            let t = t0 + ms(100 * w + 10);
            for _ in 0..16 {
                a.observe(t, ms(120));
            }
            assert!(!a.admit(t + ms(1), a.limit()));
        }
        assert_eq!(a.limit(), MIN_LIMIT);
        assert_eq!(a.base_us.load(Ordering::Relaxed), 5_000);
        // Once the limit is left unused, the baseline follows the new
        // round trip up, 1 ms a window (nine windows judged here: the
        // first of these loops judges the last used one).
        for w in 100..110u64 {
            let t = t0 + ms(100 * w + 10);
            a.observe(t, ms(120));
            assert!(a.admit(t + ms(1), 0));
        }
        assert_eq!(a.base_us.load(Ordering::Relaxed), 5_000 + 9 * BASE_CREEP_US);
    }

    #[test]
    fn a_slow_group_admitted_before_a_cut_cuts_once_not_in_every_window_it_finishes() {
        // Set-ups of 250 ms finish over several 100 ms windows; those that
        // started under the old limit say nothing about the new one.
        let t0 = crate::clock::instant();
        let a = ctl(t0);
        let window = |at: u64, in_setup: usize| {
            for _ in 0..16 {
                a.observe(t0 + ms(at), ms(250));
            }
            assert!(!a.admit(t0 + ms(at + 5), in_setup + 1));
        };
        mixed(&a, t0 + ms(10), 0, 16);
        assert!(a.admit(t0 + ms(110), 0), "baseline 5 ms, limit unused");
        window(200, 127);
        assert!(a.admit(t0 + ms(210), 0));
        assert_eq!(a.limit(), 96, "cut once: 128 → 96");
        // Two windows of set-ups that started before the cut: hold,
        // though the limit is used and the overload verdict sees them.
        window(300, 95);
        assert!(
            a.overloaded(t0 + ms(310)),
            "the verdict counts every sample"
        );
        assert_eq!(a.limit(), 96);
        window(400, 95);
        assert!(a.admit(t0 + ms(410), 0));
        assert_eq!(a.limit(), 96);
        // Set-ups that started after the cut and are still slow: cut again.
        window(500, 95);
        assert!(a.admit(t0 + ms(510), 0));
        assert_eq!(a.limit(), 72);
    }

    #[test]
    fn a_zero_target_turns_it_off() {
        let t0 = crate::clock::instant();
        let a = Admission::new(
            AdmissionSettings {
                target: Duration::ZERO,
                ..AdmissionSettings::default()
            },
            t0,
        );
        for _ in 0..MIN_SAMPLES {
            a.observe(t0 + ms(10), Duration::from_secs(10));
        }
        assert!(!a.overloaded(t0 + ms(110)));
        assert!(a.admit(t0 + ms(120), usize::MAX - 1), "no limit either");
    }
}
