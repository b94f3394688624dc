//! Measurements: latency histograms (HdrHistogram, microseconds), per-second
//! time series and error counts, shared by every load task.
//!
//! Latency is always measured from a request's **intended** send time, so a
//! gateway (or a harness) that stalls cannot hide the wait: the requests
//! that should have gone out during the stall are late, and their latency
//! says so (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram records, µs (10 minutes); above saturates.
const MAX_US: u64 = 600_000_000;

fn hist(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, sigfig).expect("static bounds are valid")
}

/// One second of one series.
#[derive(Debug)]
struct Second {
    offered: u64,
    done: u64,
    errors: u64,
    /// Latencies completed in this second (2 significant figures: enough
    /// for charts, small enough to keep one per second of a long soak).
    hist: Option<Histogram<u64>>,
}

impl Second {
    fn new() -> Self {
        Self {
            offered: 0,
            done: 0,
            errors: 0,
            hist: None,
        }
    }
}

#[derive(Debug)]
struct Inner {
    total: Histogram<u64>,
    secs: Vec<Second>,
    errors: BTreeMap<String, u64>,
    offered: u64,
    done: u64,
    first_offered: Option<Instant>,
    last_done: Option<Instant>,
}

/// A measured series: requests offered and completed over time, their
/// latency, and the errors met on the way.
#[derive(Debug)]
pub struct Series {
    t0: Instant,
    inner: Mutex<Inner>,
}

/// A latency summary, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Number of samples.
    pub count: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1_000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1_000.0,
            count: h.len(),
        }
    }
}

/// One second of a finished series, for the time-series charts.
#[derive(Debug, Clone, Serialize)]
pub struct SecondReport {
    /// Seconds since the run started.
    pub t: u32,
    /// Requests whose intended send time fell in this second.
    pub offered: u64,
    /// Requests completed in this second.
    pub done: u64,
    /// Errors met in this second.
    pub errors: u64,
    /// Latency of the requests completed in this second (absent when none).
    pub latency_ms: Option<Latency>,
}

/// A bucket of the latency distribution.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Upper bound of the bucket, ms.
    pub le_ms: f64,
    /// Samples in the bucket.
    pub count: u64,
}

/// A finished series.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesReport {
    /// Requests offered.
    pub offered: u64,
    /// Requests completed.
    pub done: u64,
    /// Seconds from the first intended send to the last completion.
    pub span_s: f64,
    /// Latency over the whole run.
    pub latency_ms: Latency,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Per second.
    pub timeline: Vec<SecondReport>,
    /// Latency distribution in logarithmic buckets (4 per power of ten).
    pub distribution: Vec<Bucket>,
}

/// What the progress display shows.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Offered in the last complete second.
    pub offered_rate: u64,
    /// Completed in the last complete second.
    pub done_rate: u64,
    /// p99 of what completed in the last complete second, ms.
    pub p99_ms: Option<f64>,
    /// Offered so far.
    pub offered: u64,
    /// Completed so far.
    pub done: u64,
    /// Errors by kind so far.
    pub errors: BTreeMap<String, u64>,
}

impl Series {
    /// A series whose second 0 starts at `t0`.
    pub fn new(t0: Instant) -> Self {
        Self {
            t0,
            inner: Mutex::new(Inner {
                total: hist(3),
                secs: Vec::new(),
                errors: BTreeMap::new(),
                offered: 0,
                done: 0,
                first_offered: None,
                last_done: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sec(inner: &mut Inner, t0: Instant, at: Instant) -> &mut Second {
        let i = at.saturating_duration_since(t0).as_secs() as usize;
        if inner.secs.len() <= i {
            inner.secs.resize_with(i + 1, Second::new);
        }
        &mut inner.secs[i]
    }

    /// `n` requests were due at `at`.
    pub fn offered(&self, at: Instant, n: u64) {
        let mut g = self.lock();
        g.offered += n;
        g.first_offered = Some(g.first_offered.map_or(at, |f| f.min(at)));
        Self::sec(&mut g, self.t0, at).offered += n;
    }

    /// `n` requests intended for `intended` completed at `at`.
    pub fn done(&self, intended: Instant, at: Instant, n: u64) {
        let us = at.saturating_duration_since(intended).as_micros() as u64;
        self.done_us(at, us.max(1), n);
    }

    /// `n` requests completed at `at` after `latency_us` microseconds.
    pub fn done_us(&self, at: Instant, latency_us: u64, n: u64) {
        let us = latency_us.clamp(1, MAX_US);
        let mut g = self.lock();
        g.done += n;
        g.last_done = Some(g.last_done.map_or(at, |l| l.max(at)));
        let _ = g.total.record_n(us, n);
        let s = Self::sec(&mut g, self.t0, at);
        s.done += n;
        let _ = s.hist.get_or_insert_with(|| hist(2)).record_n(us, n);
    }

    /// An error of `kind` happened at `at`.
    pub fn error(&self, at: Instant, kind: &str) {
        let mut g = self.lock();
        *g.errors.entry(kind.to_owned()).or_default() += 1;
        Self::sec(&mut g, self.t0, at).errors += 1;
    }

    /// Counts so far.
    pub fn counts(&self) -> (u64, u64) {
        let g = self.lock();
        (g.offered, g.done)
    }

    /// The figures for the progress display at `now`.
    pub fn live(&self, now: Instant) -> Live {
        let g = self.lock();
        let cur = now.saturating_duration_since(self.t0).as_secs() as usize;
        let last = cur.checked_sub(1).and_then(|i| g.secs.get(i));
        Live {
            offered_rate: last.map_or(0, |s| s.offered),
            done_rate: last.map_or(0, |s| s.done),
            p99_ms: last
                .and_then(|s| s.hist.as_ref())
                .map(|h| h.value_at_quantile(0.99) as f64 / 1_000.0),
            offered: g.offered,
            done: g.done,
            errors: g.errors.clone(),
        }
    }

    /// The finished series.
    pub fn report(&self) -> SeriesReport {
        let g = self.lock();
        let timeline = g
            .secs
            .iter()
            .enumerate()
            .map(|(t, s)| SecondReport {
                t: t as u32,
                offered: s.offered,
                done: s.done,
                errors: s.errors,
                latency_ms: s.hist.as_ref().map(Latency::of),
            })
            .collect();
        let span_s = match (g.first_offered, g.last_done) {
            (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
            _ => 0.0,
        };
        SeriesReport {
            offered: g.offered,
            done: g.done,
            span_s,
            latency_ms: Latency::of(&g.total),
            errors: g.errors.clone(),
            timeline,
            distribution: distribution(&g.total),
        }
    }
}

/// Buckets with upper bounds at 1, 1.8, 3.2, 5.6 × 10^k µs: four per
/// decade, from the fastest sample's bucket to the slowest's.
fn distribution(h: &Histogram<u64>) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut bounds = Vec::new();
    let mut decade = 1.0f64;
    while bounds.last().is_none_or(|&b: &u64| b < h.max()) {
        for s in [1.0, 1.778, 3.162, 5.623] {
            bounds.push((decade * s).round() as u64);
        }
        decade *= 10.0;
    }
    let mut counts = vec![0u64; bounds.len()];
    for v in h.iter_recorded() {
        let value = h.highest_equivalent(v.value_iterated_to());
        let i = bounds.partition_point(|&b| b < value).min(bounds.len() - 1);
        counts[i] += v.count_at_value();
    }
    let first = counts.iter().position(|&c| c > 0).unwrap_or(0);
    let last = counts.iter().rposition(|&c| c > 0).unwrap_or(0);
    (first..=last)
        .map(|i| Bucket {
            le_ms: bounds[i] as f64 / 1_000.0,
            count: counts[i],
        })
        .collect()
}

/// Duration as fractional milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_from_the_intended_time() {
        let t0 = crate::clock::now();
        let s = Series::new(t0);
        s.offered(t0, 2);
        // Intended at t0, done 1.5 s later: the whole wait is latency.
        s.done(t0, t0 + Duration::from_millis(1_500), 1);
        s.done(
            t0 + Duration::from_millis(1_000),
            t0 + Duration::from_millis(1_010),
            1,
        );
        s.error(t0, "connect:timeout");
        let r = s.report();
        assert_eq!((r.offered, r.done), (2, 2));
        assert!(
            (r.latency_ms.max - 1_500.0).abs() < 2.0,
            "{:?}",
            r.latency_ms
        );
        assert!((r.latency_ms.p50 - 10.0).abs() < 0.1, "{:?}", r.latency_ms);
        assert_eq!(r.errors["connect:timeout"], 1);
        assert_eq!(r.timeline.len(), 2);
        assert_eq!(r.timeline[1].done, 2);
        let total: u64 = r.distribution.iter().map(|b| b.count).sum();
        assert_eq!(total, 2);
    }
}
