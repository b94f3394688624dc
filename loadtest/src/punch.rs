//! The punch load: employees clocking in on an arrival curve. Each one
//! opens a new connection (full handshake or resumption), authenticates,
//! punches, waits for the ack and closes, retrying on failure the way the
//! protocol tells phones to (docs/PROTOCOL.md §9).
//!
//! With several targets each employee punches the one `spread.rs` gives
//! it; a mover sends its repeat, and its resend after a lost ack, to
//! another.
//!
//! Open loop: employee `i` is due at the curve's time for it, whatever
//! happened to the others, and its latency runs from that time. Retries
//! follow the SDK schedule ([`fencegate::client::Backoff`]): full jitter,
//! the gateway's retry-after honoured, in real time (not compressed).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fencegate::client::{Backoff, Client, PunchReply};
use fencegate_schema::{
    Position, PunchAckMsg, PunchKind, PunchMethod, PunchMsg, TerminalAuth, Verdict,
};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::audit::Book;
use crate::clock;
use crate::ids::RunIds;
use crate::rng::Rng;
use crate::scenario::PunchMix;
use crate::spread::{Link, LinkCounts, Spread};
use crate::stats::Series;
use crate::world::{self, Curve, PunchClass, World};

/// How far ahead an invalid punch's clock runs (beyond the 5-minute skew
/// the gateway allows).
const FUTURE_SKEW_MS: i64 = 3_600_000;

/// Everything the employee tasks share.
#[derive(Debug)]
pub struct PunchCtx {
    /// The targets: client endpoints, token issuers, counts.
    pub links: Arc<[Link]>,
    /// Which target each employee punches.
    pub spread: Spread,
    /// Fences and positions.
    pub world: Arc<World>,
    /// The world's seed.
    pub seed: u64,
    /// What the punches are.
    pub mix: PunchMix,
    /// Time compression of the curve (and of simulated waits).
    pub speed: f64,
    /// How long an employee keeps trying after its intended time.
    pub timeout: Duration,
    /// The run's ids.
    pub ids: Arc<RunIds>,
    /// Intended send time → ack.
    pub series: Arc<Series>,
    /// The acked attempt's own start → ack: from its connection's start
    /// when the attempt connected, else from its punch's send.
    pub admitted: Arc<Series>,
    /// When each final ack came, for the goodput over the offered window.
    pub ack_times: Mutex<Vec<Instant>>,
    /// First and last intended send of the schedule, set when it ends.
    pub offer_window: Mutex<Option<(Instant, Instant)>>,
    /// Connection set-up: handshake and Hello.
    pub connect: Arc<Series>,
    /// The acks, for the audit.
    pub book: Arc<Book>,
    /// Counts by outcome.
    pub outcomes: Mutex<PunchOutcomes>,
}

/// What the employees' punches came to.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PunchOutcomes {
    /// Employees whose intended time fell within the run.
    pub employees_offered: u64,
    /// Employees left out because their time fell after `duration_s`.
    pub employees_not_offered: u64,
    /// Second punches within the repeat window.
    pub repeats: u64,
    /// Punches whose first ack was (deliberately) lost and were resent.
    pub lost_acks: u64,
    /// Repeats and resends sent to another target than the employee's
    /// first (`--move-share`).
    pub moved: u64,
    /// Punches that got no final ack before their timeout.
    pub unacked: u64,
    /// Tasks still running when the run's time ran out.
    pub unfinished: u64,
    /// Acks by verdict.
    pub verdicts: BTreeMap<String, u64>,
    /// Acks whose verdict differs from what the punch was built to get,
    /// as `class: expected → got (reason)`. Expected when the target's
    /// fences differ from the world the harness assumed.
    pub unexpected_verdicts: BTreeMap<String, u64>,
    /// Seconds the schedule waited for an in-flight slot
    /// (`punch.max_in_flight`): the harness, not the gateway, was the limit.
    pub harness_wait_s: f64,
}

impl PunchCtx {
    fn outcomes(&self) -> std::sync::MutexGuard<'_, PunchOutcomes> {
        self.outcomes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// When the punch load runs.
#[derive(Debug, Clone)]
pub struct PunchSchedule {
    /// Number of employees.
    pub employees: u64,
    /// The arrival curve.
    pub curve: Curve,
    /// Second 0 of the curve.
    pub t0: Instant,
    /// No employee is started at or after this.
    pub offer_end: Instant,
    /// Everything still running is abandoned at this point.
    pub hard_end: Instant,
    /// Most employees in flight.
    pub max_in_flight: usize,
}

/// Runs the punch load to completion (or `hard_end`).
pub async fn run(ctx: Arc<PunchCtx>, s: PunchSchedule) {
    let sem = Arc::new(Semaphore::new(s.max_in_flight));
    let mut tasks = JoinSet::new();
    let mut waited = Duration::ZERO;
    let mut window: Option<(Instant, Instant)> = None;
    for i in 0..s.employees {
        let sim = s.curve.employee_time(i, s.employees, ctx.seed);
        let at = s.t0 + Duration::from_secs_f64(sim / ctx.speed);
        if at >= s.offer_end {
            ctx.outcomes().employees_not_offered = s.employees - i;
            break;
        }
        if at > clock::now() {
            tokio::time::sleep_until(at.into()).await;
        }
        ctx.series.offered(at, 1);
        window = Some((window.map_or(at, |w| w.0), at));
        ctx.outcomes().employees_offered += 1;
        let permit = match sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let w = clock::now();
                let p = sem
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                waited += w.elapsed();
                p
            }
        };
        tasks.spawn(employee(ctx.clone(), i, at, permit));
        while tasks.try_join_next().is_some() {}
    }
    *ctx.offer_window.lock().unwrap_or_else(|p| p.into_inner()) = window;
    let _ = tokio::time::timeout_at(s.hard_end.into(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let mut o = ctx.outcomes();
    o.unfinished = tasks.len() as u64;
    o.harness_wait_s = waited.as_secs_f64();
    tasks.abort_all();
}

/// Acked punches per second over the offered window (first to last
/// intended send): what the gateway delivered while it was offered load,
/// not what it caught up on afterwards.
pub fn goodput_rate(ctx: &PunchCtx) -> f64 {
    let Some((first, last)) = *ctx.offer_window.lock().unwrap_or_else(|p| p.into_inner()) else {
        return 0.0;
    };
    let span = last.saturating_duration_since(first).as_secs_f64();
    if span <= 0.0 {
        return 0.0;
    }
    let acked = ctx
        .ack_times
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|&&t| t <= last)
        .count();
    acked as f64 / span
}

async fn employee(ctx: Arc<PunchCtx>, i: u64, intended: Instant, _permit: OwnedSemaphorePermit) {
    let plan = world::employee(&ctx.world, ctx.seed, &ctx.mix, i);
    let phone = ctx.ids.phone(i);
    let route = |target: usize| -> Option<Route<'_>> {
        let link = &ctx.links[target];
        match link.issuer.token(&phone) {
            Ok(token) => Some(Route {
                target,
                link,
                token,
                i,
            }),
            Err(e) => {
                ctx.series.error(clock::now(), &format!("token: {e}"));
                None
            }
        }
    };
    let home = ctx.spread.employee(i);
    LinkCounts::bump(&ctx.links[home].counts.punches_offered);
    let Some(first) = route(home) else { return };
    let later = match ctx.spread.moved(i) {
        Some(t) => match route(t) {
            Some(r) => Some(r),
            None => return,
        },
        None => None,
    };
    let mut rng = plan.rng.clone();
    let (method, bssids) = match plan.class {
        PunchClass::Wifi => (PunchMethod::Wifi, ctx.world.bssids(plan.fence)),
        PunchClass::NoBssids => (PunchMethod::Wifi, Vec::new()),
        _ => (PunchMethod::Gps, Vec::new()),
    };
    let msg = PunchMsg {
        punch_id: ctx.ids.punch_id(&mut rng),
        employee_id: ctx.ids.employee(i),
        kind: PunchKind::In,
        method,
        device_time_ms: 0,
        position: plan
            .position
            .map(|(lat, lon)| Position::new(lat, lon, plan.accuracy_m)),
        bssids,
        ssid: None,
        qr_payload: None,
        terminal_auth: TerminalAuth::None,
        offline: false,
        mock_location: false,
    };
    let expect = match plan.class {
        PunchClass::Inside | PunchClass::Wifi => Verdict::Accepted,
        PunchClass::Outside => Verdict::OutOfRange,
        PunchClass::FutureClock | PunchClass::NoBssids => Verdict::Rejected,
    };
    let who = Who {
        phone: &phone,
        class: plan.class,
        first,
        later,
    };
    let first = attempt(
        &ctx,
        &who,
        false,
        msg.clone(),
        intended,
        expect,
        plan.lost_ack_resend_s,
        &mut rng,
    )
    .await;
    let (Some((ack, acked_at)), Some(after_s)) = (first, plan.repeat_after_s) else {
        return;
    };
    // The employee presses again a little later: a new punch id, the same
    // kind, inside the repeat window.
    let at = (intended + Duration::from_secs_f64(after_s / ctx.speed)).max(acked_at);
    tokio::time::sleep_until(at.into()).await;
    ctx.series.offered(at, 1);
    ctx.outcomes().repeats += 1;
    let to = who.later();
    LinkCounts::bump(&to.link.counts.punches_offered);
    if to.target != who.first.target {
        LinkCounts::bump(&to.link.counts.punches_moved_in);
        ctx.outcomes().moved += 1;
    }
    let second = PunchMsg {
        punch_id: ctx.ids.punch_id(&mut rng),
        ..msg
    };
    let expect = if ack.verdict == Verdict::Accepted {
        Verdict::RepeatMerged
    } else {
        ack.verdict
    };
    attempt(&ctx, &who, true, second, at, expect, None, &mut rng).await;
}

/// One way to one target for one employee: its link and the token its
/// issuer gave the employee's phone.
struct Route<'a> {
    target: usize,
    link: &'a Link,
    token: String,
    /// The employee, for the connector choice.
    i: u64,
}

struct Who<'a> {
    phone: &'a str,
    class: PunchClass,
    /// Where the first punch goes.
    first: Route<'a>,
    /// Where later punches go, when the employee moves.
    later: Option<Route<'a>>,
}

impl Who<'_> {
    fn later(&self) -> &Route<'_> {
        self.later.as_ref().unwrap_or(&self.first)
    }
}

/// Makes one punch until it has a final ack or its time runs out; starts
/// on the employee's later target when `later`, and moves there after a
/// lost ack. Returns the ack and when it came.
#[allow(
    clippy::too_many_arguments,
    reason = "one punch's whole context; a struct would only rename it"
)]
async fn attempt(
    ctx: &PunchCtx,
    who: &Who<'_>,
    later: bool,
    mut msg: PunchMsg,
    intended: Instant,
    expect: Verdict,
    mut lose_ack: Option<f64>,
    rng: &mut Rng,
) -> Option<(PunchAckMsg, Instant)> {
    let deadline = intended + ctx.timeout;
    let mut backoff = Backoff::new();
    let mut conn: Option<Client> = None;
    let mut resent = false;
    let mut route = if later { who.later() } else { &who.first };
    let error = |route: &Route<'_>, kind: &str| {
        ctx.series.error(clock::now(), kind);
        LinkCounts::bump(&route.link.counts.punch_errors);
    };
    loop {
        let now = clock::now();
        // This attempt's own start, for the admitted latency.
        let attempt_start = now;
        if now >= deadline {
            ctx.series.error(now, "timeout: no final ack");
            ctx.outcomes().unacked += 1;
            if let Some(c) = conn {
                c.close();
            }
            return None;
        }
        let client = match &conn {
            Some(c) => c.clone(),
            None => {
                let t = clock::now();
                match tokio::time::timeout_at(
                    deadline.into(),
                    route
                        .link
                        .punch_connector(route.i)
                        .connect(&route.token, who.phone),
                )
                .await
                {
                    Ok(Ok(c)) => {
                        ctx.connect.done(t, clock::now(), 1);
                        conn = Some(c.clone());
                        c
                    }
                    Ok(Err(e)) => {
                        // CONNECTION_REFUSED carries no retry-after: the
                        // documented refused base, doubled per failure,
                        // full jitter.
                        error(route, &error_kind("connect", &e));
                        let wait = if fencegate::client::is_refused(&e) {
                            backoff.next_wait_refused(rng.f64())
                        } else {
                            backoff.next_wait(None, rng.f64())
                        };
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Err(_) => continue,
                }
            }
        };
        msg.device_time_ms = clock::unix_ms()
            + if who.class == PunchClass::FutureClock {
                FUTURE_SKEW_MS
            } else {
                0
            };
        if let Some(resend_s) = lose_ack.take() {
            // Send, then lose the connection before the ack can be read:
            // the gateway may or may not have the punch. The resend must
            // get the one ack either way.
            let _ = client.punch_unanswered(&msg).await;
            tokio::time::sleep(Duration::from_millis(rng.below(5))).await;
            client.close();
            conn = None;
            ctx.outcomes().lost_acks += 1;
            resent = true;
            // A mover resends to its other target: the resend must get the
            // first ack from a node that never saw the punch.
            let to = who.later();
            if to.target != route.target {
                LinkCounts::bump(&to.link.counts.punches_moved_in);
                ctx.outcomes().moved += 1;
            }
            route = to;
            tokio::time::sleep(Duration::from_secs_f64(resend_s / ctx.speed)).await;
            continue;
        }
        match tokio::time::timeout_at(deadline.into(), client.punch(&msg)).await {
            Err(_) => continue,
            Ok(Ok(PunchReply::Ack(a))) => {
                let at = clock::now();
                client.close();
                LinkCounts::bump(&route.link.counts.punches_acked);
                ctx.series.done(intended, at, 1);
                ctx.admitted.done(attempt_start, at, 1);
                ctx.ack_times
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(at);
                if a.punch_id.is_some_and(|p| p != msg.punch_id) {
                    ctx.series.error(at, "ack names another punch id");
                }
                if let Err(old) = ctx.book.acked(msg.punch_id, &a) {
                    ctx.series.error(
                        at,
                        &format!(
                            "resend answered differently: {:?} then {:?}",
                            old.verdict, a.verdict
                        ),
                    );
                }
                let mut o = ctx.outcomes();
                *o.verdicts.entry(format!("{:?}", a.verdict)).or_default() += 1;
                if a.verdict != expect {
                    *o.unexpected_verdicts
                        .entry(format!(
                            "{}: expected {expect:?}, got {:?} ({:?})",
                            who.class.name(),
                            a.verdict,
                            a.reason
                        ))
                        .or_default() += 1;
                }
                return Some((a, at));
            }
            Ok(Ok(PunchReply::Busy {
                retry_after_ms,
                reason,
            })) => {
                // A resend that overtakes its first copy's commit is told to
                // come back shortly: the protocol working, not overload.
                let kind = if resent {
                    format!("busy: {reason:?} (resend while its first copy commits)")
                } else {
                    format!("busy: {reason:?}")
                };
                error(route, &kind);
                let retry_after = Duration::from_millis(u64::from(retry_after_ms));
                tokio::time::sleep(backoff.next_wait(Some(retry_after), rng.f64())).await;
            }
            Ok(Err(e)) => {
                error(route, &error_kind("punch", &e));
                client.close();
                conn = None;
                tokio::time::sleep(backoff.next_wait(None, rng.f64())).await;
            }
        }
    }
}

/// A short, stable name for an error, for the error table: the phase and
/// the QUIC-level cause when there is one.
pub fn error_kind(phase: &str, e: &anyhow::Error) -> String {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<quinn::ConnectionError>() {
            return format!("{phase}: {}", connection_error(c));
        }
        if let Some(c) = cause.downcast_ref::<quinn::ConnectError>() {
            return format!("{phase}: {c}");
        }
        if let Some(r) = cause.downcast_ref::<quinn::ReadToEndError>() {
            return match r {
                quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(c)) => {
                    format!("{phase}: no reply, {}", connection_error(c))
                }
                quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)) => {
                    format!("{phase}: no reply, stream reset (code {code})")
                }
                other => format!("{phase}: no reply, {other}"),
            };
        }
        if let Some(w) = cause.downcast_ref::<quinn::WriteError>() {
            return match w {
                quinn::WriteError::ConnectionLost(c) => {
                    format!("{phase}: cannot send, {}", connection_error(c))
                }
                other => format!("{phase}: cannot send, {other}"),
            };
        }
    }
    let text = e.to_string();
    let first = text.split([':', '(']).next().unwrap_or_default().trim();
    format!("{phase}: {first}")
}

fn connection_error(c: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as E;
    match c {
        E::TimedOut => "timed out".into(),
        E::ApplicationClosed(a) => format!(
            "closed by the gateway (code {:#x} {})",
            a.error_code.into_inner(),
            String::from_utf8_lossy(&a.reason)
        ),
        E::ConnectionClosed(c) => format!("closed ({})", c.error_code),
        E::Reset => "reset".into(),
        E::TransportError(t) => format!("transport error ({})", t.code),
        E::VersionMismatch => "version mismatch".into(),
        E::LocallyClosed => "closed locally".into(),
        E::CidsExhausted => "connection ids exhausted".into(),
    }
}
