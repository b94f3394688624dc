//! Per-sink health: what `/readyz` and `/metrics` say about each forwarder.
//!
//! The forwarder updates plain atomics; a monitor task (see
//! [`super::Forwarders`]) turns them into gauges once a second, so the
//! delivery path never touches the metrics recorder per record. Metric
//! handles are registered once per sink with the sink's name as the only
//! label (low cardinality: sinks come from the config).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use metrics::{Counter, Gauge, counter, gauge};
use serde::Serialize;

use super::SinkError;
use crate::log::Lsn;

/// Where a forwarder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkState {
    /// Connecting or not yet delivered anything.
    Starting,
    /// The last delivery (or connect) succeeded.
    Up,
    /// The last delivery failed; it is being retried with backoff. The log
    /// keeps every record meanwhile.
    Down,
    /// The forwarder stopped (shutdown).
    Stopped,
}

impl SinkState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Up,
            2 => Self::Down,
            3 => Self::Stopped,
            _ => Self::Starting,
        }
    }
}

/// The last error a sink met, for `/readyz` (never a metric label).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Short error class (also the `kind` label of the error counter).
    pub kind: &'static str,
    /// What went wrong and, where known, what to do.
    pub message: String,
}

/// A sink's health at one moment, as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkStatus {
    /// The sink's configured name.
    pub name: String,
    /// `nats`, `webhook` or `jsonl`.
    pub kind: &'static str,
    /// Up, down, starting or stopped.
    pub state: SinkState,
    /// Log entries not yet delivered (committed end minus the delivered
    /// position).
    pub lag_records: u64,
    /// Age of the oldest entry not yet delivered, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Records delivered since start.
    pub delivered: u64,
    /// Failed delivery attempts since start.
    pub retries: u64,
    /// Records the sink refused for good and that went to its dead-letter
    /// file since start (`fencegate sinks dead-letter` lists them).
    pub dead_lettered: u64,
    /// The position confirmed downstream (next LSN to deliver).
    pub position: u64,
    /// The most recent error, if any since start.
    pub last_error: Option<LastError>,
}

/// Error classes with their own counter handle.
const ERROR_KINDS: [&str; 7] = [
    "connect", "timeout", "rejected", "http", "io", "config", "other",
];

struct Handles {
    delivered: Counter,
    retries: Counter,
    duplicates: Counter,
    skipped_merged: Counter,
    skipped_invalid: Counter,
    dead_lettered: Counter,
    errors: [Counter; ERROR_KINDS.len()],
    lag_records: Gauge,
    lag_seconds: Gauge,
    up: Gauge,
    last_error_time: Gauge,
    rate: Gauge,
    position: Gauge,
}

/// Shared health of one sink's forwarder.
pub struct SinkHealth {
    name: String,
    kind: &'static str,
    state: AtomicU8,
    /// Next LSN to deliver (everything below is confirmed downstream).
    confirmed: AtomicU64,
    /// Log time of the oldest undelivered entry the forwarder has read,
    /// `u64::MAX` when none is pending.
    pending_since_ms: AtomicU64,
    delivered: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
    last_error: Mutex<Option<LastError>>,
    /// (delivered count, ms) at the previous monitor tick, for the rate.
    rate_mark: Mutex<(u64, i64)>,
    m: Handles,
}

impl std::fmt::Debug for SinkHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHealth")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("state", &self.state())
            .field("confirmed", &self.confirmed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SinkHealth {
    /// Registers the sink's metric handles (once per sink) and starts it at
    /// `position`.
    pub fn new(name: &str, kind: &'static str, position: Lsn) -> Self {
        let n = name.to_owned();
        let errors = ERROR_KINDS
            .map(|k| counter!("fencegate_sink_errors_total", "sink" => n.clone(), "kind" => k));
        let m = Handles {
            delivered: counter!("fencegate_sink_delivered_total", "sink" => n.clone()),
            retries: counter!("fencegate_sink_retries_total", "sink" => n.clone()),
            duplicates: counter!("fencegate_sink_duplicates_total", "sink" => n.clone()),
            skipped_merged: counter!("fencegate_sink_skipped_total", "sink" => n.clone(), "reason" => "repeat_merged"),
            skipped_invalid: counter!("fencegate_sink_skipped_total", "sink" => n.clone(), "reason" => "invalid"),
            dead_lettered: counter!("fencegate_sink_dead_letter_total", "sink" => n.clone()),
            errors,
            lag_records: gauge!("fencegate_sink_lag_records", "sink" => n.clone()),
            lag_seconds: gauge!("fencegate_sink_lag_seconds", "sink" => n.clone()),
            up: gauge!("fencegate_sink_up", "sink" => n.clone()),
            last_error_time: gauge!("fencegate_sink_last_error_timestamp_seconds", "sink" => n.clone()),
            rate: gauge!("fencegate_sink_delivery_rate", "sink" => n.clone()),
            position: gauge!("fencegate_sink_position", "sink" => n),
        };
        m.position.set(position.0 as f64);
        Self {
            name: name.to_owned(),
            kind,
            state: AtomicU8::new(0),
            confirmed: AtomicU64::new(position.0),
            pending_since_ms: AtomicU64::new(u64::MAX),
            delivered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            last_error: Mutex::new(None),
            rate_mark: Mutex::new((0, 0)),
            m,
        }
    }

    /// The sink's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `nats`, `webhook` or `jsonl`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Current state.
    pub fn state(&self) -> SinkState {
        SinkState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether the sink is failing (for `/readyz`'s "degraded").
    pub fn is_down(&self) -> bool {
        self.state() == SinkState::Down
    }

    /// The position confirmed downstream.
    pub fn position(&self) -> Lsn {
        Lsn(self.confirmed.load(Ordering::Acquire))
    }

    /// Records delivered since start.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Failed attempts since start.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The most recent error.
    pub fn last_error(&self) -> Option<LastError> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_state(&self, s: SinkState) {
        self.state.store(s as u8, Ordering::Release);
        self.m.up.set(if s == SinkState::Up { 1.0 } else { 0.0 });
    }

    /// A batch is pending whose oldest entry was logged at `time_ms`.
    pub(crate) fn pending(&self, time_ms: Option<u64>) {
        let v = time_ms.unwrap_or(u64::MAX);
        self.pending_since_ms.store(v, Ordering::Release);
    }

    /// A batch was confirmed downstream.
    pub(crate) fn confirmed(
        &self,
        end: Lsn,
        delivered: u64,
        duplicates: u64,
        merged: u32,
        invalid: u32,
    ) {
        self.confirmed.store(end.0, Ordering::Release);
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.m.delivered.increment(delivered);
        if duplicates > 0 {
            self.m.duplicates.increment(duplicates);
        }
        if merged > 0 {
            self.m.skipped_merged.increment(u64::from(merged));
        }
        if invalid > 0 {
            self.m.skipped_invalid.increment(u64::from(invalid));
        }
        self.set_state(SinkState::Up);
    }

    /// A delivery or connect attempt failed at `now_ms`.
    pub(crate) fn failed(&self, e: &SinkError, now_ms: i64) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.m.retries.increment(1);
        let kind = e.kind();
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.m.errors[i].increment(1);
        }
        self.m.last_error_time.set(now_ms as f64 / 1000.0);
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(LastError {
            at_ms: now_ms,
            kind,
            message: e.to_string(),
        });
        self.set_state(SinkState::Down);
    }

    /// `n` records the sink refused for good were written to its
    /// dead-letter file.
    pub(crate) fn dead_lettered(&self, n: u64) {
        if n > 0 {
            self.dead_lettered.fetch_add(n, Ordering::Relaxed);
            self.m.dead_lettered.increment(n);
        }
    }

    /// Records sent to the dead-letter file since start.
    pub fn dead_letters(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    /// The persisted cursor moved to `pos`.
    pub(crate) fn persisted(&self, pos: Lsn) {
        self.m.position.set(pos.0 as f64);
    }

    /// The sink's status given the log's committed end and the time.
    pub fn status(&self, committed: Lsn, now_ms: i64) -> SinkStatus {
        let (lag_records, lag_seconds) = self.lag(committed, now_ms);
        SinkStatus {
            name: self.name.clone(),
            kind: self.kind,
            state: self.state(),
            lag_records,
            lag_seconds,
            delivered: self.delivered(),
            retries: self.retries(),
            dead_lettered: self.dead_letters(),
            position: self.position().0,
            last_error: self.last_error(),
        }
    }

    fn lag(&self, committed: Lsn, now_ms: i64) -> (u64, f64) {
        let lag = committed.0.saturating_sub(self.position().0);
        let since = self.pending_since_ms.load(Ordering::Acquire);
        let secs = if lag == 0 || since == u64::MAX {
            0.0
        } else {
            (now_ms.max(0) as u64).saturating_sub(since) as f64 / 1000.0
        };
        (lag, secs)
    }

    /// Refreshes the lag and rate gauges (called by the monitor task).
    pub(crate) fn refresh_gauges(&self, committed: Lsn, now_ms: i64) {
        let (lag, secs) = self.lag(committed, now_ms);
        self.m.lag_records.set(lag as f64);
        self.m.lag_seconds.set(secs);
        let delivered = self.delivered();
        let mut mark = self
            .rate_mark
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (prev, at) = *mark;
        if at > 0 && now_ms > at {
            let rate = (delivered - prev) as f64 * 1000.0 / (now_ms - at) as f64;
            self.m.rate.set(rate);
        }
        *mark = (delivered, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_and_state() {
        let h = SinkHealth::new("t", "jsonl", Lsn(5));
        assert_eq!(h.state(), SinkState::Starting);
        let s = h.status(Lsn(5), 10_000);
        assert_eq!((s.lag_records, s.lag_seconds), (0, 0.0));
        h.pending(Some(7_000));
        let s = h.status(Lsn(15), 10_000);
        assert_eq!((s.lag_records, s.lag_seconds), (10, 3.0));
        h.failed(
            &SinkError::Timeout {
                what: "ack",
                after_ms: 5,
            },
            10_000,
        );
        assert!(h.is_down());
        let e = h.last_error().unwrap();
        assert_eq!((e.kind, e.at_ms), ("timeout", 10_000));
        h.confirmed(Lsn(15), 9, 1, 1, 0);
        h.pending(None);
        assert_eq!(h.state(), SinkState::Up);
        let s = h.status(Lsn(15), 11_000);
        assert_eq!(
            (s.lag_records, s.delivered, s.retries, s.position),
            (0, 9, 1, 15)
        );
        assert!(s.last_error.is_some(), "the last error stays visible");
    }
}
