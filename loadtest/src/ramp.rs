//! Saturation mode (`[ramp]`): the fleet's ping rate stepped up by
//! `ramp.factor` every step until the gateway saturates, and the knee
//! reported beside the raw-UDP baseline measured in the same run.
//!
//! A step is an ordinary fleet run (`run_on`) at one ping interval: a
//! fresh fleet connects, pings for `ramp.step_s`, and its datagrams are
//! reconciled with the gateway's counters. The knee is the last step
//! that passed: drops at most `max_drop_share` of what was sent, fix→log
//! p99 at most `max_p99_ms`, and the harness able to offer the step's
//! rate (a co-located harness that cannot is no measure of the gateway).
//! A step that fails runs once more; the ramp stops at a step that fails
//! twice in a row, at `max_steps`, or when
//! the interval reaches its floor; it is bounded in steps and each step in
//! time. After a failure, `ramp.refine` more steps bisect (geometrically)
//! between the fastest passing and the slowest failing rate, so the knee
//! is known to within `factor^(1/2^refine)` (about 6 % at ×1.25 and two
//! refinements) rather than to within a whole step.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::reconcile::Reconciliation;
use crate::report::Report;
use crate::scenario::{Ramp, Scenario};
use crate::target::Target;
use crate::world::World;
use crate::{BaselineKind, Options, baseline, fleet};

/// A step that sent less than this share of its scheduled fixes measured
/// the harness, not the gateway.
const MIN_SENT_SHARE: f64 = 0.9;

/// One step of the ramp.
#[derive(Debug, Clone, Serialize)]
pub struct RampStep {
    /// Step number, from 0.
    pub step: u32,
    /// Seconds between a device's datagrams in this step.
    pub ping_interval_s: f64,
    /// Fixes per second the schedule offered.
    pub offered_fixes_per_s: f64,
    /// Fixes per second the devices handed to QUIC.
    pub sent_fixes_per_s: f64,
    /// Fixes per second the gateway processed (its counters).
    pub processed_fixes_per_s: f64,
    /// Datagrams per second the gateway received (its quinn's count; the
    /// processed fixes ÷ batch when it does not export that).
    pub datagrams_per_s: f64,
    /// Share of the datagrams sent that were lost, any cause.
    pub drop_share: f64,
    /// Datagrams no counter explains (`null` without the gateway's
    /// received count).
    pub unexplained: Option<u64>,
    /// Fix → log p99, ms (`null` when the log could not be tailed or
    /// nothing was logged).
    pub p99_ms: Option<f64>,
    /// p99 of the harness's own lateness sending a datagram (due time →
    /// handed to QUIC), ms: the part of `p99_ms` a co-located harness
    /// short of CPU adds (`null` when nothing was sent).
    pub send_late_p99_ms: Option<f64>,
    /// Cores the gateway used (`null` when unmeasurable).
    pub gateway_cpu_cores: Option<f64>,
    /// Where the step's datagrams went (`null` without the gateway's
    /// received count).
    pub reconciliation: Option<Reconciliation>,
    /// Within every bound.
    pub passed: bool,
    /// Which bound it broke (empty when it passed).
    pub why: String,
    /// A refinement step: run after the ladder stopped, between its
    /// fastest passing and slowest failing rate (`ramp.refine`).
    pub refined: bool,
}

/// The whole ramp and its knee.
#[derive(Debug, Clone, Serialize)]
pub struct RampReport {
    /// The ramp's settings.
    pub settings: Ramp,
    /// Every step run, in order.
    pub steps: Vec<RampStep>,
    /// The last step within every bound (`null` if even the first broke
    /// one).
    pub knee: Option<RampStep>,
    /// Why the ramp stopped.
    pub stopped_by: String,
    /// The knee's datagrams per second ÷ the raw-UDP baseline's at the
    /// same datagram size (`null` without `--baseline raw-udp`).
    pub knee_baseline_ratio: Option<f64>,
}

impl RampStep {
    fn from_report(step: u32, interval_s: f64, r: &Report, ramp: &Ramp) -> anyhow::Result<Self> {
        let p = r.pings.as_ref().context("a ramp step has a fleet load")?;
        let f = r
            .settings
            .fleet
            .as_ref()
            .context("a ramp step has a fleet")?;
        let secs = p.ping_s.max(1e-3);
        let batch = f64::from(f.batch.max(1));
        let offered = f.devices as f64 * batch / interval_s;
        let sent = p.sent.fixes_sent as f64 / secs;
        let processed = p.gateway_processed.map_or(0.0, |n| n as f64 / secs);
        let recon = p.reconciliation.as_ref();
        let datagrams_per_s = recon.map_or(processed / batch, |c| c.gateway_received as f64 / secs);
        let drop_share = match recon {
            Some(c) => c.drop_share,
            None if p.sent.fixes_sent > 0 => {
                1.0 - p.gateway_processed.unwrap_or(0) as f64 / p.sent.fixes_sent as f64
            }
            None => 0.0,
        };
        let p99_ms = p.latency_ms.filter(|l| l.count > 0).map(|l| l.p99);
        let send_late_p99_ms = (p.send_late_ms.count > 0).then_some(p.send_late_ms.p99);
        let mut why = Vec::new();
        if p.gateway_processed.is_none() {
            why.push("the gateway's counters are unreadable (give --metrics-url)".to_owned());
        }
        if drop_share > ramp.max_drop_share {
            why.push(format!(
                "drops {:.2} % > {:.2} %",
                drop_share * 100.0,
                ramp.max_drop_share * 100.0
            ));
        }
        if let Some(l) = p99_ms.filter(|l| *l > ramp.max_p99_ms) {
            why.push(format!("fix→log p99 {l:.1} ms > {} ms", ramp.max_p99_ms));
        }
        if sent < offered * MIN_SENT_SHARE {
            why.push(format!(
                "the harness sent {sent:.0} of {offered:.0} fixes/s scheduled (it is the bottleneck)"
            ));
        }
        if let Some(u) = recon.map(|c| c.unexplained).filter(|u| *u > 0) {
            why.push(format!("{u} datagrams unexplained"));
        }
        Ok(Self {
            step,
            ping_interval_s: interval_s,
            offered_fixes_per_s: offered,
            sent_fixes_per_s: sent,
            processed_fixes_per_s: processed,
            datagrams_per_s,
            drop_share,
            unexplained: recon.map(|c| c.unexplained),
            p99_ms,
            send_late_p99_ms,
            gateway_cpu_cores: p.gateway_cpu_cores,
            reconciliation: recon.cloned(),
            passed: why.is_empty(),
            why: why.join("; "),
            refined: false,
        })
    }

    /// The step's number, marked `r` when it is a refinement step.
    pub fn label(&self) -> String {
        if self.refined {
            format!("{}r", self.step)
        } else {
            self.step.to_string()
        }
    }

    /// One line for the terminal summary.
    pub fn line(&self) -> String {
        format!(
            "{:>4} {:>8.3} {:>10.0} {:>10.0} {:>10.0} {:>9.0} {:>7.2} {:>8} {:>7} {:>6} {:>5}  {}",
            self.label(),
            self.ping_interval_s,
            self.offered_fixes_per_s,
            self.sent_fixes_per_s,
            self.processed_fixes_per_s,
            self.datagrams_per_s,
            self.drop_share * 100.0,
            self.p99_ms.map_or("-".into(), |l| format!("{l:.1}")),
            self.send_late_p99_ms
                .map_or("-".into(), |l| format!("{l:.1}")),
            self.gateway_cpu_cores
                .map_or("-".into(), |c| format!("{c:.2}")),
            self.unexplained.map_or("-".into(), |u| u.to_string()),
            if self.passed { "ok" } else { &self.why }
        )
    }
}

impl RampReport {
    /// The terminal summary's ramp table and knee.
    pub fn summary(&self) -> String {
        let mut o = format!(
            "ramp     ×{} every {} s, then {} refinement step(s) (r) between the last pass and the failure; bounds: drops ≤ {:.2} %, fix→log p99 ≤ {} ms (late: the harness's own send lateness, p99)\n{:>4} {:>8} {:>10} {:>10} {:>10} {:>9} {:>7} {:>8} {:>7} {:>6} {:>5}\n",
            self.settings.factor,
            self.settings.step_s,
            self.settings.refine,
            self.settings.max_drop_share * 100.0,
            self.settings.max_p99_ms,
            "step",
            "interval",
            "offered/s",
            "sent/s",
            "processed",
            "dgrams/s",
            "drops%",
            "p99 ms",
            "late ms",
            "cpu",
            "unexp"
        );
        for s in &self.steps {
            o.push_str(&s.line());
            o.push('\n');
        }
        match &self.knee {
            Some(k) => o.push_str(&format!(
                "knee     step {}: {:.0} fixes/s processed, {:.0} datagrams/s, gateway CPU {}; {}; stopped: {}\n",
                k.label(),
                k.processed_fixes_per_s,
                k.datagrams_per_s,
                k.gateway_cpu_cores
                    .map_or("unmeasured".into(), |c| format!("{c:.2} cores")),
                self.knee_baseline_ratio.map_or("no baseline (add --baseline raw-udp)".into(), |r| format!(
                    "{r:.4} of raw UDP at the same size"
                )),
                self.stopped_by
            )),
            None => o.push_str(&format!(
                "knee     none: the first step already broke a bound ({})\n",
                self.stopped_by
            )),
        }
        o
    }
}

/// The ladder, then the refinement between its last passing and its
/// failing rate: calls `step(k, interval_ms, refined)` for each step to
/// run, which answers `None` when the step passed and `Some(why)` when it
/// failed (twice). Returns why the ladder stopped.
fn search(
    start_ms: f64,
    floor_ms: f64,
    ramp: &Ramp,
    batch: u32,
    mut step: impl FnMut(u32, f64, bool) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<String> {
    let mut stopped_by = format!("ramp.max_steps = {} reached", ramp.max_steps);
    let mut last_ms = f64::INFINITY;
    let mut passed_ms = None;
    let mut failed_ms = None;
    let mut k = 0;
    while k < ramp.max_steps {
        let ms = (start_ms / ramp.factor.powi(k as i32))
            .round()
            .max(floor_ms);
        if ms >= last_ms {
            stopped_by = format!(
                "the ping interval reached its floor ({ms} ms for {batch} fixes a datagram); add devices for more"
            );
            break;
        }
        last_ms = ms;
        let outcome = step(k, ms, false)?;
        k += 1;
        match outcome {
            None => passed_ms = Some(ms),
            Some(why) => {
                stopped_by = format!("step {}, twice: {why}", k - 1);
                failed_ms = Some(ms);
                break;
            }
        }
    }
    // Between the slowest failing and the fastest passing interval: the
    // geometric middle, halving the gap (in ratio) each time.
    if let (Some(mut lo), Some(mut hi)) = (passed_ms, failed_ms) {
        for _ in 0..ramp.refine {
            let mid = (lo * hi).sqrt().round();
            if mid >= lo || mid <= hi {
                break;
            }
            let outcome = step(k, mid, true)?;
            k += 1;
            match outcome {
                None => lo = mid,
                Some(_) => hi = mid,
            }
        }
    }
    Ok(stopped_by)
}

/// The passing step with the highest offered rate (the refinement's steps
/// run after the failing one, so it is not always the last that passed).
fn knee_of(steps: &[RampStep]) -> Option<usize> {
    steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.passed)
        .min_by(|a, b| a.1.ping_interval_s.total_cmp(&b.1.ping_interval_s))
        .map(|(i, _)| i)
}

/// Runs the ramp of scenario `s` against `targets`. The report's top-level
/// figures are the knee step's (the first step's when none passed), with
/// the ramp, the baseline and the knee's ratio to it attached.
pub(crate) fn run(
    s: &Scenario,
    ramp: &Ramp,
    opts: &Options,
    world: &Arc<World>,
    targets: &[Target],
) -> anyhow::Result<Report> {
    let f = s.fleet.as_ref().context("[ramp] needs a [fleet]")?;
    let baseline = match opts.baseline {
        Some(BaselineKind::RawUdp) => Some(baseline::raw_udp(
            fleet::datagram_size(f.batch),
            Duration::from_secs(2),
        )?),
        None => None,
    };
    let step_opts = Options {
        baseline: None,
        ..opts.clone()
    };
    // The scenario check's floor: at least 1 ms between the batch's fixes.
    let floor_ms = f64::from(f.batch.max(10));
    let mut steps: Vec<RampStep> = Vec::new();
    let mut reports = Vec::new();
    let stopped_by = search(
        f.ping_interval_s * 1_000.0,
        floor_ms,
        ramp,
        f.batch,
        |k, ms, refined| {
            let mut step = s.clone();
            step.ramp = None;
            step.duration_s = ramp.step_s;
            step.drain_s = step.drain_s.min(10.0);
            if let Some(sf) = step.fleet.as_mut() {
                sf.ping_interval_s = ms / 1_000.0;
            }
            // A step that breaks a bound runs once more before it counts as
            // failed: on a shared machine one fsync stall can put a 4 s
            // step's p99 over its bound below the real knee.
            let mut retried = false;
            loop {
                let r = crate::run_on(&step, &step_opts, world, targets)
                    .with_context(|| format!("ramp step {k} (ping interval {ms} ms)"))?;
                let mut st = RampStep::from_report(k, ms / 1_000.0, &r, ramp)?;
                st.refined = refined;
                let passed = st.passed;
                let why = st.why.clone();
                if !passed && !retried {
                    st.why.push_str(" (runs again)");
                }
                steps.push(st);
                reports.push(r);
                if passed {
                    return Ok(None);
                }
                if retried {
                    return Ok(Some(why));
                }
                retried = true;
            }
        },
    )?;
    let knee = knee_of(&steps);
    let mut report = reports.swap_remove(knee.unwrap_or(0));
    let knee = knee.map(|i| steps[i].clone());
    let knee_baseline_ratio = match (&knee, &baseline) {
        (Some(k), Some(b)) => Some(k.datagrams_per_s / b.datagrams_per_s.max(1.0)),
        _ => None,
    };
    report.baseline_ratio = match &baseline {
        Some(b) => report.pings.as_ref().map(|p| {
            p.processed_rate.unwrap_or(0.0) / f64::from(f.batch.max(1)) / b.datagrams_per_s.max(1.0)
        }),
        None => None,
    };
    report.baseline = baseline;
    report.settings = s.clone();
    report.ramp = Some(RampReport {
        settings: ramp.clone(),
        steps,
        knee,
        stopped_by,
        knee_baseline_ratio,
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `search` against a gateway that passes every interval of at
    /// least `knee_ms`; returns the intervals tried (and whether each was
    /// a refinement) and why the ladder stopped.
    fn tried(ramp: &Ramp, start_ms: f64, knee_ms: f64) -> (Vec<(f64, bool)>, String) {
        let mut seen = Vec::new();
        let why = search(start_ms, 64.0, ramp, 64, |_, ms, refined| {
            seen.push((ms, refined));
            Ok((ms < knee_ms).then(|| format!("{ms} ms is past the knee")))
        })
        .unwrap();
        (seen, why)
    }

    #[test]
    fn refinement_bisects_between_the_last_pass_and_the_failure() {
        let ramp = Ramp::default();
        let (seen, why) = tried(&ramp, 1_000.0, 110.0);
        let ladder: Vec<f64> = seen.iter().filter(|s| !s.1).map(|s| s.0).collect();
        assert_eq!(
            ladder,
            [
                1000.0, 800.0, 640.0, 512.0, 410.0, 328.0, 262.0, 210.0, 168.0, 134.0, 107.0
            ]
        );
        assert!(why.starts_with("step 10, twice"), "{why}");
        // √(134·107) ≈ 120 passes, then √(120·107) ≈ 113 passes.
        let refined: Vec<f64> = seen.iter().filter(|s| s.1).map(|s| s.0).collect();
        assert_eq!(refined, [120.0, 113.0]);

        // A failing middle narrows from the other side.
        let (seen, _) = tried(&ramp, 1_000.0, 125.0);
        let refined: Vec<f64> = seen.iter().filter(|s| s.1).map(|s| s.0).collect();
        assert_eq!(refined, [120.0, 127.0]);
    }

    #[test]
    fn no_refinement_without_both_a_pass_and_a_failure() {
        let ramp = Ramp::default();
        // The first step already fails.
        let (seen, _) = tried(&ramp, 100.0, 500.0);
        assert_eq!(seen, [(100.0, false)]);
        // Never fails: the floor ends the ladder.
        let (seen, why) = tried(&ramp, 100.0, 0.0);
        assert!(seen.iter().all(|s| !s.1), "{seen:?}");
        assert!(why.contains("floor"), "{why}");
        // Turned off.
        let off = Ramp {
            refine: 0,
            ..Ramp::default()
        };
        let (seen, _) = tried(&off, 1_000.0, 110.0);
        assert!(seen.iter().all(|s| !s.1), "{seen:?}");
    }

    fn step(interval_s: f64, passed: bool) -> RampStep {
        RampStep {
            step: 0,
            ping_interval_s: interval_s,
            offered_fixes_per_s: 0.0,
            sent_fixes_per_s: 0.0,
            processed_fixes_per_s: 0.0,
            datagrams_per_s: 0.0,
            drop_share: 0.0,
            unexplained: None,
            p99_ms: None,
            send_late_p99_ms: None,
            gateway_cpu_cores: None,
            reconciliation: None,
            passed,
            why: String::new(),
            refined: false,
        }
    }

    #[test]
    fn the_knee_is_the_fastest_passing_step_not_the_last() {
        // Ladder 0.134 passes, 0.107 fails twice, refinement 0.120 passes,
        // 0.113 fails.
        let steps = [
            step(0.134, true),
            step(0.107, false),
            step(0.107, false),
            step(0.120, true),
            step(0.113, false),
            step(0.113, false),
        ];
        assert_eq!(knee_of(&steps), Some(3));
        assert_eq!(knee_of(&steps[1..3]), None);
    }
}
