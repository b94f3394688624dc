//! Metric handles, registered once at start and reused on the hot path (no
//! per-record name lookup). Labels are low-cardinality: verdicts and reason
//! codes, never a device, employee or tenant id.
//!
//! Every metric name is listed in `docs/OPERATIONS.md`.

use fencegate_schema::{AnomalyBit, AttendanceStatus, Reason, Verdict};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// Pipeline counters: verdicts, ping suppression and dedup.
#[derive(Debug, Clone)]
pub struct PipelineMetrics {
    punch_accepted: Counter,
    punch_repeat: Counter,
    punch_out_of_range: Counter,
    punch_rejected: Counter,
    ping_forwarded: Counter,
    ping_suppressed: Counter,
    ping_late: Counter,
    ping_duplicate: Counter,
    ping_untracked: Counter,
    fence_events: Counter,
    /// Resends answered from the idempotency window.
    pub dedup_hits: Counter,
    /// Punches refused because the dedup window was full.
    pub dedup_full: Counter,
    /// Punch ids and repeat keys held.
    pub dedup_keys: Gauge,
    /// Devices whose last ping is held.
    pub devices: Gauge,
    /// `fencegate_dedup_devices_evicted_total`: devices forgotten to make
    /// room for a new one when `dedup.max_devices` was reached.
    pub devices_evicted: Counter,
    /// `fencegate_refused_total{channel="punch",reason="device_rate"}`:
    /// punches answered `Busy` because their device was over its rate.
    pub refused_device_rate: Counter,
    /// `fencegate_refused_total{channel="punch",reason="tenant_rate"}`:
    /// punches answered `Busy` because their tenant was over its rate.
    pub refused_tenant_rate: Counter,
    /// `fencegate_refused_total{channel="punch",reason="tenant_window"}`:
    /// punches answered `Busy` because their tenant's own idempotency
    /// window was full.
    pub refused_tenant_window: Counter,
}

impl PipelineMetrics {
    /// Registers the handles with the global recorder.
    pub fn register() -> Self {
        let punch = |v: &'static str| counter!("fencegate_punches_total", "verdict" => v);
        let ping = |o: &'static str| counter!("fencegate_pings_total", "outcome" => o);
        Self {
            punch_accepted: punch("accepted"),
            punch_repeat: punch("repeat_merged"),
            punch_out_of_range: punch("out_of_range"),
            punch_rejected: punch("rejected"),
            ping_forwarded: ping("forwarded"),
            ping_suppressed: ping("suppressed"),
            ping_late: ping("late"),
            ping_duplicate: ping("duplicate"),
            ping_untracked: ping("untracked"),
            fence_events: counter!("fencegate_fence_events_total"),
            dedup_hits: counter!("fencegate_dedup_hits_total"),
            dedup_full: counter!("fencegate_dedup_full_total"),
            dedup_keys: gauge!("fencegate_dedup_keys"),
            devices: gauge!("fencegate_dedup_devices"),
            devices_evicted: counter!("fencegate_dedup_devices_evicted_total"),
            refused_device_rate: counter!("fencegate_refused_total", "channel" => "punch", "reason" => "device_rate"),
            refused_tenant_rate: counter!("fencegate_refused_total", "channel" => "punch", "reason" => "tenant_rate"),
            refused_tenant_window: counter!("fencegate_refused_total", "channel" => "punch", "reason" => "tenant_window"),
        }
    }

    /// Counts one durable punch by verdict.
    pub fn punch(&self, v: Verdict) {
        match v {
            Verdict::Accepted => self.punch_accepted.increment(1),
            Verdict::RepeatMerged => self.punch_repeat.increment(1),
            Verdict::OutOfRange => self.punch_out_of_range.increment(1),
            _ => self.punch_rejected.increment(1),
        }
    }

    /// Adds one ping batch's outcome (summed by the caller, emitted once).
    pub fn pings(&self, o: &PingOutcome) {
        self.ping_forwarded.increment(u64::from(o.forwarded));
        self.ping_suppressed.increment(u64::from(o.suppressed));
        self.ping_late.increment(u64::from(o.late));
        self.ping_duplicate.increment(u64::from(o.duplicates));
        self.ping_untracked.increment(u64::from(o.untracked));
        self.fence_events.increment(u64::from(o.events));
    }
}

/// Where a refused frame arrived: the `channel` label of
/// `fencegate_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedOn {
    /// The Hello stream (the connection is closed).
    Hello,
    /// A punch stream (answered `PunchAck` `Rejected`).
    Punch,
    /// A ping datagram (dropped, no reply).
    Datagram,
    /// A backlog frame on a unidirectional stream (dropped, no reply).
    Backlog,
    /// A new connection refused before its handshake (admission control).
    Connection,
}

impl RefusedOn {
    const ALL: [Self; 5] = [
        Self::Hello,
        Self::Punch,
        Self::Datagram,
        Self::Backlog,
        Self::Connection,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Punch => "punch",
            Self::Datagram => "datagram",
            Self::Backlog => "backlog",
            Self::Connection => "connection",
        }
    }
}

/// Edge counters: connections, handshakes, refusals, latencies.
#[derive(Debug, Clone)]
pub struct EdgeMetrics {
    /// Open connections.
    pub connections: Gauge,
    /// Completed handshakes, full and resumed alike.
    pub handshakes_completed: Counter,
    /// Resumed handshakes (a session ticket decrypted, or found in the
    /// session cache); a subset of the completed ones, so full = completed
    /// − resumed.
    pub handshakes_resumed: Counter,
    /// Handshakes that failed, or were refused at the connection cap.
    pub handshakes_failed: Counter,
    /// Handshakes refused because too many were already in progress
    /// (`quic.max_handshakes_in_flight`): load shed at a peak.
    pub handshakes_shed: Counter,
    /// Connections that finished their handshake but sent no Hello, closed
    /// `AUTH_TIMEOUT` to make room for a new connection when the set-up
    /// bound was full.
    pub handshakes_evicted: Counter,
    /// Connections closed for a bad credential.
    pub auth_failures: Counter,
    /// `fencegate_datagrams_dropped_total{reason="log_busy"}`: ping batches
    /// (datagram or backlog) the log could not take.
    pub datagrams_dropped: Counter,
    /// `fencegate_datagrams_dropped_total{reason="rate_limit"}`: datagrams
    /// over the connection's `quic.ping_datagrams_per_s` and burst.
    pub datagrams_rate_limited: Counter,
    /// `fencegate_datagrams_dropped_total{reason="buffer_full"}`: datagrams
    /// quinn discarded because the connection's receive buffer
    /// (`quic.datagram_buffer`) was full, or left unread at its close;
    /// added about once a second while datagrams come (a lower bound;
    /// `edge::TallyWhen`) and made exact when the connection ends.
    pub datagrams_buffer_full: Counter,
    /// `fencegate_datagrams_received_total`: QUIC DATAGRAM frames quinn
    /// received, read or not (added with `datagrams_buffer_full`): what a
    /// sender's count is reconciled with, received = read + buffer_full.
    pub datagrams_received: Counter,
    /// `fencegate_datagrams_dropped_total{reason="shed"}`: ping batches
    /// refused because the log writer's queue was above the pings'
    /// watermark or the log's free space was down to the punches' reserve
    /// (punches come first).
    pub datagrams_shed: Counter,
    /// `fencegate_datagrams_dropped_total{reason="kernel"}`: datagrams the
    /// kernel dropped because a QUIC socket's receive buffer was full
    /// (sampled from procfs once a second, `edge/drops.rs`).
    pub datagrams_kernel: Counter,
    /// `fencegate_edge_timeouts_total{cause="hello"}`: connections closed
    /// `AUTH_TIMEOUT` because no Hello came within `quic.hello_timeout_ms`.
    pub hello_timeouts: Counter,
    /// `fencegate_edge_timeouts_total{cause="punch_stream"}`: punch streams
    /// reset because their frame did not end within
    /// `quic.stream_read_timeout_ms`.
    pub punch_stream_timeouts: Counter,
    /// Streams answered `Busy`.
    pub busy: Counter,
    /// `fencegate_refused_total{channel, reason}`, indexed by
    /// `RefusedOn as usize`, then by reason code.
    refused: [Vec<Option<Counter>>; 5],
    /// `fencegate_punches_total{verdict="rejected"}`: the same series the
    /// pipeline counts policy rejections in, so the verdict counter covers
    /// every `Rejected` ack, validation rejections included.
    punch_rejected: Counter,
    /// Punch frame in → ack out, seconds (includes the log commit).
    pub punch_ack_seconds: Histogram,
    /// Time inside the pipeline per message, seconds.
    pub pipeline_seconds: Histogram,
    /// `fencegate_connection_setup_seconds{lane}`, indexed by
    /// `edge::Lane as usize`: a connection's first Initial packet to its
    /// authenticated Hello, the delay admission control judges (it
    /// includes about one round trip of the client, which is what an
    /// operator reads here to set `quic.admission_target_ms`).
    pub setup_seconds: [Histogram; 2],
    /// `fencegate_admission_setup_limit{lane}`: admission control's
    /// current limit on connections in set-up, by lane (set at each
    /// connection attempt).
    pub setup_limit: [Gauge; 2],
    /// `fencegate_connections_in_setup{lane}`: connections between their
    /// admitted Initial and their authenticated Hello, by lane, the count
    /// the limit above is compared with (set at each connection attempt).
    pub in_setup: [Gauge; 2],
}

impl EdgeMetrics {
    /// Registers the handles with the global recorder, one refusal counter
    /// per channel and reason code, so counting never looks a name up.
    pub fn register() -> Self {
        let refused = RefusedOn::ALL.map(|on| {
            let mut by_reason = vec![None; usize::from(Reason::ENUM_MAX) + 1];
            for r in Reason::ENUM_VALUES {
                let name = r.variant_name().unwrap_or("unknown");
                by_reason[usize::from(r.0)] = Some(counter!(
                    "fencegate_refused_total",
                    "channel" => on.label(),
                    "reason" => name
                ));
            }
            by_reason
        });
        Self {
            connections: gauge!("fencegate_connections"),
            handshakes_completed: counter!("fencegate_handshakes_total", "kind" => "completed"),
            handshakes_resumed: counter!("fencegate_handshakes_total", "kind" => "resumed"),
            handshakes_failed: counter!("fencegate_handshakes_total", "kind" => "failed"),
            handshakes_shed: counter!("fencegate_handshakes_total", "kind" => "shed"),
            handshakes_evicted: counter!("fencegate_handshakes_total", "kind" => "evicted"),
            auth_failures: counter!("fencegate_auth_failures_total"),
            datagrams_dropped: counter!("fencegate_datagrams_dropped_total", "reason" => "log_busy"),
            datagrams_rate_limited: counter!("fencegate_datagrams_dropped_total", "reason" => "rate_limit"),
            datagrams_buffer_full: counter!("fencegate_datagrams_dropped_total", "reason" => "buffer_full"),
            datagrams_received: counter!("fencegate_datagrams_received_total"),
            datagrams_shed: counter!("fencegate_datagrams_dropped_total", "reason" => "shed"),
            datagrams_kernel: counter!("fencegate_datagrams_dropped_total", "reason" => "kernel"),
            hello_timeouts: counter!("fencegate_edge_timeouts_total", "cause" => "hello"),
            punch_stream_timeouts: counter!("fencegate_edge_timeouts_total", "cause" => "punch_stream"),
            busy: counter!("fencegate_busy_total"),
            refused,
            punch_rejected: counter!("fencegate_punches_total", "verdict" => "rejected"),
            punch_ack_seconds: histogram!("fencegate_punch_ack_seconds"),
            pipeline_seconds: histogram!("fencegate_pipeline_seconds"),
            setup_seconds: ["main", "punch"]
                .map(|l| histogram!("fencegate_connection_setup_seconds", "lane" => l)),
            setup_limit: ["main", "punch"]
                .map(|l| gauge!("fencegate_admission_setup_limit", "lane" => l)),
            in_setup: ["main", "punch"]
                .map(|l| gauge!("fencegate_connections_in_setup", "lane" => l)),
        }
    }

    /// Counts one frame refused by validation on `on`, by reason code. A
    /// refused punch is also a `Rejected` punch.
    pub fn refused(&self, on: RefusedOn, r: Reason) {
        if let Some(Some(c)) = self.refused[on as usize].get(usize::from(r.0)) {
            c.increment(1);
        }
        if on == RefusedOn::Punch {
            self.punch_rejected.increment(1);
        }
    }

    /// Counts one request shed under load on `on` (a connection refused, a
    /// punch answered `Busy`), by reason, in the same
    /// `fencegate_refused_total{channel,reason}` series; unlike
    /// [`EdgeMetrics::refused`] it is no verdict, so `Rejected` is not
    /// counted.
    pub fn shed(&self, on: RefusedOn, r: Reason) {
        if let Some(Some(c)) = self.refused[on as usize].get(usize::from(r.0)) {
            c.increment(1);
        }
    }
}

/// Attendance counters: punches by status and anomaly flags by kind, and
/// rule changes. Labels are the fixed status and flag names.
#[derive(Debug, Clone)]
pub struct RulesMetrics {
    status: Vec<Counter>,
    anomalies: Vec<Counter>,
    /// Rules snapshot version in force.
    pub version: Gauge,
    /// Accepted rule changes (`PUT /v1/rules`).
    pub changes: Counter,
    /// Refused rule changes (invalid rules or a forbidden section).
    pub changes_refused: Counter,
    /// Entries the anti-cheat memory (employees and QR uses) forgot to
    /// make room: the tenant's least recently seen, never another
    /// tenant's; nothing is refused.
    pub memory_evicted: Counter,
}

fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl RulesMetrics {
    /// Registers the handles with the global recorder.
    pub fn register() -> Self {
        let status = AttendanceStatus::ENUM_VALUES
            .iter()
            .map(|s| {
                let name = snake(s.variant_name().unwrap_or("unknown"));
                counter!("fencegate_punch_status_total", "status" => name)
            })
            .collect();
        let anomalies = AnomalyBit::ENUM_VALUES
            .iter()
            .map(|b| {
                let name = snake(b.variant_name().unwrap_or("unknown"));
                counter!("fencegate_punch_anomalies_total", "flag" => name)
            })
            .collect();
        Self {
            status,
            anomalies,
            version: gauge!("fencegate_rules_version"),
            changes: counter!("fencegate_rules_changes_total", "result" => "applied"),
            changes_refused: counter!("fencegate_rules_changes_total", "result" => "refused"),
            memory_evicted: counter!("fencegate_rules_memory_evicted_total"),
        }
    }

    /// Counts one durable punch by status and by each anomaly flag it has.
    pub fn punch(&self, status: AttendanceStatus, flags: u64) {
        if let Some(c) = self.status.get(usize::from(status.0)) {
            c.increment(1);
        }
        let mut f = flags;
        while f != 0 {
            let bit = f.trailing_zeros() as usize;
            if let Some(c) = self.anomalies.get(bit) {
                c.increment(1);
            }
            f &= f - 1;
        }
    }
}

/// Counts of what one ping batch produced. Every fix is counted in exactly
/// one of `forwarded`, `suppressed`, `late` and `duplicates`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PingOutcome {
    /// Live fixes forwarded as ping records (moves, heartbeats, transitions).
    pub forwarded: u32,
    /// Live fixes suppressed as repeats.
    pub suppressed: u32,
    /// Fence events emitted (Enter, Exit and the starting-state Inside).
    pub events: u32,
    /// Fixes at or before the device's newest (offline history, reordered
    /// datagrams): logged as ping records flagged `late`, never suppressed.
    pub late: u32,
    /// Copies of the device's newest fix (a resent datagram), dropped.
    pub duplicates: u32,
    /// Fixes of devices beyond `max_devices`, forwarded unsuppressed (a
    /// subset of `forwarded`).
    pub untracked: u32,
}
