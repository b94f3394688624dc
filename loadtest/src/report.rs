//! The run's report: the JSON document (`--json`), the terminal summary,
//! and the data the HTML page (`html.rs`) is drawn from.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::audit::AuditReport;
use crate::baseline::RawUdp;
use crate::fleet::FleetOutcomes;
use crate::probe::GatewayCounts;
use crate::punch::PunchOutcomes;
use crate::ramp::RampReport;
use crate::reconcile::Reconciliation;
use crate::scenario::Scenario;
use crate::stats::{Latency, SeriesReport};

/// Everything a run measured. The top-level fields describe the
/// scenario's primary load (punches when it has any, else pings); the
/// `punches` and `pings` sections hold each load in full.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Scenario description.
    pub description: String,
    /// Seed of the synthetic world.
    pub seed: u64,
    /// The run's id (salt of every id it used).
    pub run_id: String,
    /// What was loaded.
    pub target: String,
    /// What each target was given (one entry per `--target`; the built-in
    /// gateway's alone without one).
    pub targets: Vec<crate::spread::TargetReport>,
    /// Wall clock at the start, unix ms.
    pub started_unix_ms: i64,
    /// `"punches"` or `"pings"`: what the top-level fields describe.
    pub primary: &'static str,
    /// Seconds measured: for punches, from the first intended send to the
    /// last ack; for pings, the pinging phase.
    pub duration_s: f64,
    /// Requests offered (punches, or ping fixes).
    pub offered: u64,
    /// Requests acknowledged (punch acks; for pings, the fixes the gateway
    /// processed, see `acked_basis`).
    pub acked: u64,
    /// What `acked` counts for pings: `gateway-processed` (its counters),
    /// `logged` (records in its log), or `sent` (neither was readable).
    pub acked_basis: &'static str,
    /// `acked / duration_s`.
    pub achieved_rate: f64,
    /// Latency from intended send: punch → ack, or ping → log.
    pub latency_ms: Latency,
    /// Errors by kind (both loads).
    pub errors: BTreeMap<String, u64>,
    /// Acknowledged punches missing from what the gateway stored (`null`
    /// without `--audit`; the larger of the log's and JetStream's counts
    /// when both were audited).
    pub lost: Option<u64>,
    /// Records stored more than once, or stored though refused (`null`
    /// without `--audit`; the larger count when both were audited).
    pub duplicated: Option<u64>,
    /// Gateway rate ÷ raw loopback UDP datagram rate at the same datagram
    /// size (`null` without `--baseline raw-udp`). The gateway rate is
    /// punches/s for punch loads and datagrams/s for pings.
    pub baseline_ratio: Option<f64>,
    /// The punch load.
    pub punches: Option<PunchReport>,
    /// The fleet load.
    pub pings: Option<PingReport>,
    /// The gateway's own counters over the run.
    pub gateway: Option<GatewayCounts>,
    /// Resident memory.
    pub memory: Option<MemoryReport>,
    /// The audit of the gateway's log.
    pub audit: Option<AuditReport>,
    /// The audit of the JetStream stream (`--nats-url`).
    pub audit_jetstream: Option<AuditReport>,
    /// The raw-UDP baseline.
    pub baseline: Option<RawUdp>,
    /// Where it ran.
    pub machine: Machine,
    /// The scenario as run (after command-line overrides).
    pub settings: Scenario,
    /// The saturation ramp's steps and knee (`null` unless the scenario
    /// has a `[ramp]`); the top-level figures are then the knee step's.
    pub ramp: Option<RampReport>,
}

/// The punch load's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PunchReport {
    /// Punches offered (first punches and repeats).
    pub offered: u64,
    /// Punches acknowledged (final acks).
    pub acked: u64,
    /// From the first intended send to the last ack, seconds.
    pub absorbed_s: f64,
    /// `acked / absorbed_s`.
    pub achieved_rate: f64,
    /// Punches acked while load was offered, per second of the offered
    /// window (first to last intended send): the goodput under overload,
    /// excluding the catch-up after the offer ends.
    pub goodput_rate: f64,
    /// The curve's time compression.
    pub speed: f64,
    /// Handshake mode.
    pub handshake: String,
    /// Intended send → ack.
    pub latency_ms: Latency,
    /// For the attempt that was acked, its own start → ack (from its
    /// connection's start when it connected, else from its punch's send):
    /// what an admitted request costs, retries and backoff excluded.
    pub admitted_latency_ms: Latency,
    /// Handshake and Hello, per connection.
    pub connect_ms: Latency,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Outcome counts.
    pub outcomes: PunchOutcomes,
    /// Per second and distribution.
    pub series: SeriesReport,
}

/// The fleet load's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PingReport {
    /// Fixes offered by the schedule.
    pub offered: u64,
    /// Seconds of pinging.
    pub ping_s: f64,
    /// Offered fixes per second.
    pub offered_rate: f64,
    /// What the devices sent.
    pub sent: FleetOutcomes,
    /// Fixes the gateway processed (its counters), when readable.
    pub gateway_processed: Option<u64>,
    /// `gateway_processed / ping_s`.
    pub processed_rate: Option<f64>,
    /// Ping records of the run that reached the log, when readable.
    pub logged: Option<u64>,
    /// `logged / ping_s`.
    pub logged_rate: Option<f64>,
    /// Enter/exit events of the run in the log.
    pub fence_events: Option<u64>,
    /// Intended send → readable in the log, for logged pings.
    pub latency_ms: Option<Latency>,
    /// Handshake and Hello while connecting.
    pub connect_ms: Latency,
    /// How late the harness itself handed each datagram to QUIC after its
    /// due time. `latency_ms` counts from the due time, so a co-located
    /// harness short of CPU adds this to it.
    pub send_late_ms: Latency,
    /// Errors by kind (pings and connections).
    pub errors: BTreeMap<String, u64>,
    /// Per second (offered fixes; logged pings and their latency) and
    /// distribution.
    pub series: SeriesReport,
    /// Where every datagram went, reconciled with the gateway's counters
    /// (`null` without them, or from a gateway that does not count what it
    /// received).
    pub reconciliation: Option<Reconciliation>,
    /// Cores the gateway used while the devices pinged (its CPU seconds ÷
    /// wall seconds; `null` for a remote gateway without `--gateway-pid`).
    pub gateway_cpu_cores: Option<f64>,
}

/// Resident memory around the fleet's connect phase.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Whose memory: the gateway's process (`--gateway-pid`), or this
    /// process (harness and built-in gateway together, so an upper bound).
    pub source: String,
    /// Before any device connected, bytes.
    pub rss_before: u64,
    /// With every device connected and idle, bytes.
    pub rss_connected: u64,
    /// Connections open.
    pub connections: u64,
    /// `(rss_connected - rss_before) / connections`, bytes.
    pub per_connection_bytes: f64,
    /// Highest resident memory seen during the run, bytes.
    pub rss_peak: u64,
}

/// The machine the harness ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores available to the harness.
    pub cores: usize,
    /// OS and architecture.
    pub os: String,
    /// Harness version.
    pub harness: String,
    /// Client UDP endpoints used.
    pub client_endpoints: usize,
}

impl Machine {
    /// This machine.
    pub fn here(client_endpoints: usize) -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            harness: concat!("fencegate-load ", env!("CARGO_PKG_VERSION")).into(),
            client_endpoints,
        }
    }
}

impl Report {
    /// Whether the audit (if run) passed.
    pub fn audit_passed(&self) -> bool {
        self.audit.as_ref().is_none_or(AuditReport::passed)
            && self
                .audit_jetstream
                .as_ref()
                .is_none_or(AuditReport::passed)
    }

    /// The terminal summary.
    pub fn summary(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "\nfencegate-load · {} · {}",
            self.scenario, self.description
        );
        let _ = writeln!(o, "target   {}", self.target);
        let _ = writeln!(
            o,
            "run      {} · seed {} · {} cores · {} client endpoint(s)",
            self.run_id, self.seed, self.machine.cores, self.machine.client_endpoints
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<22} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "", "offered", "done", "rate/s", "p50 ms", "p90 ms", "p99 ms", "p99.9", "max ms"
        );
        let row =
            |o: &mut String, name: &str, off: Option<u64>, done: u64, rate: f64, l: &Latency| {
                let _ = writeln!(
                    o,
                    "{:<22} {:>9} {:>9} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                    name,
                    off.map_or("-".into(), |n| n.to_string()),
                    done,
                    rate,
                    l.p50,
                    l.p90,
                    l.p99,
                    l.p999,
                    l.max
                );
            };
        if let Some(p) = &self.punches {
            row(
                &mut o,
                "punch → ack",
                Some(p.offered),
                p.acked,
                p.achieved_rate,
                &p.latency_ms,
            );
            row(
                &mut o,
                "  admitted attempt",
                None,
                p.admitted_latency_ms.count,
                p.goodput_rate,
                &p.admitted_latency_ms,
            );
            row(
                &mut o,
                &format!("  connect ({})", p.handshake),
                None,
                p.connect_ms.count,
                0.0,
                &p.connect_ms,
            );
        }
        if let Some(p) = &self.pings {
            let lat = p.latency_ms.unwrap_or_default();
            row(
                &mut o,
                "ping fixes → log",
                Some(p.offered),
                p.logged.unwrap_or(0),
                p.logged_rate.unwrap_or(0.0),
                &lat,
            );
            row(
                &mut o,
                "  device connect",
                None,
                p.connect_ms.count,
                0.0,
                &p.connect_ms,
            );
            row(
                &mut o,
                "  harness send late",
                None,
                p.send_late_ms.count,
                0.0,
                &p.send_late_ms,
            );
        }
        let _ = writeln!(o);
        if let Some(p) = &self.punches {
            let oc = &p.outcomes;
            let _ = writeln!(
                o,
                "punches  absorbed in {:.1} s at speed ×{:.1} · {} employees ({} not offered) · {} repeats · {} lost acks resent · {} unacked",
                p.absorbed_s,
                p.speed,
                oc.employees_offered,
                oc.employees_not_offered,
                oc.repeats,
                oc.lost_acks,
                oc.unacked
            );
            let v: Vec<String> = oc
                .verdicts
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(o, "         verdicts: {}", v.join(", "));
            for (k, n) in &oc.unexpected_verdicts {
                let _ = writeln!(o, "         unexpected: {k} × {n}");
            }
            if oc.harness_wait_s > 0.0 {
                let _ = writeln!(
                    o,
                    "         the harness waited {:.1} s for in-flight slots (punch.max_in_flight)",
                    oc.harness_wait_s
                );
            }
            if oc.moved > 0 {
                let _ = writeln!(
                    o,
                    "         {} repeats and resends went to another target than the employee's first",
                    oc.moved
                );
            }
        }
        if self.targets.len() > 1 {
            let _ = writeln!(
                o,
                "targets  {:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
                "", "offered", "acked", "errors", "moved in", "devices", "datagrams"
            );
            for t in &self.targets {
                let _ = writeln!(
                    o,
                    "         {:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
                    t.target,
                    t.punches_offered,
                    t.punches_acked,
                    t.punch_errors,
                    t.punches_moved_in,
                    t.devices_connected,
                    t.datagrams_sent
                );
            }
        }
        if let Some(p) = &self.pings {
            let s = &p.sent;
            let _ = writeln!(
                o,
                "pings    {}/{} devices connected in {:.1} s · {:.0} fixes/s offered over {:.1} s · {} datagrams of {:.0} B sent",
                s.connected,
                s.devices,
                s.connect_s,
                p.offered_rate,
                p.ping_s,
                s.datagrams_sent,
                s.datagram_bytes
            );
            if let (Some(n), Some(r)) = (p.gateway_processed, p.processed_rate) {
                let _ = writeln!(
                    o,
                    "         gateway processed {n} fixes ({r:.0}/s); {} logged as ping records, {} enter/exit events{}",
                    p.logged.map_or("?".into(), |n| n.to_string()),
                    p.fence_events.map_or("?".into(), |n| n.to_string()),
                    p.gateway_cpu_cores
                        .map_or(String::new(), |c| format!("; gateway CPU {c:.2} cores"))
                );
            }
            match &p.reconciliation {
                Some(r) => {
                    let _ = writeln!(o, "reconcile datagrams: {}", r.line());
                }
                None => {
                    let _ = writeln!(
                        o,
                        "reconcile not possible: the gateway's counters are unreadable (give --metrics-url) or it does not export fencegate_datagrams_received_total"
                    );
                }
            }
        }
        if let Some(g) = &self.gateway {
            let hs: Vec<String> = g
                .handshakes
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(
                o,
                "gateway  handshakes: {} · busy {} · datagrams dropped {} · pings {:?}",
                if hs.is_empty() {
                    "-".into()
                } else {
                    hs.join(", ")
                },
                g.busy,
                g.datagrams_dropped,
                g.pings
            );
            if !g.refused.is_empty() {
                let _ = writeln!(o, "         refused: {:?}", g.refused);
            }
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                o,
                "memory   {:.1} KB per connection ({} connections; {} → {} MB; peak {} MB; {})",
                m.per_connection_bytes / 1_024.0,
                m.connections,
                m.rss_before >> 20,
                m.rss_connected >> 20,
                m.rss_peak >> 20,
                m.source
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(o, "errors   none");
        } else {
            let _ = writeln!(o, "errors");
            for (k, n) in &self.errors {
                let _ = writeln!(o, "  {n:>8}  {k}");
            }
        }
        if let Some(b) = &self.baseline {
            let _ = writeln!(
                o,
                "baseline raw loopback UDP: {:.0} datagrams/s of {} B (one sender, one receiver); gateway at {}",
                b.datagrams_per_s,
                b.datagram_bytes,
                self.baseline_ratio
                    .map_or("-".into(), |r| format!("{r:.4} of it"))
            );
        }
        if let Some(r) = &self.ramp {
            o.push_str(&r.summary());
        }
        if self.audit.is_none() && self.audit_jetstream.is_none() {
            let _ = writeln!(o, "audit    not run (add --audit)");
        }
        for a in self.audit.iter().chain(self.audit_jetstream.iter()) {
            let _ = writeln!(
                o,
                "audit    {} · {} acked punches ({} refused) · lost {} · duplicated {} · mismatched {} · {} records scanned ({})",
                if a.passed() { "PASSED" } else { "FAILED" },
                a.acked_punches,
                a.refused_punches,
                a.lost,
                a.duplicated,
                a.mismatched,
                a.records_scanned,
                a.source
            );
            for e in &a.examples {
                let _ = writeln!(o, "         {e}");
            }
        }
        o
    }
}
