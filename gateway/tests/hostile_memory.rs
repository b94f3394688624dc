//! Attacks on the punch path's memory and rate with one device token
//! (issue 12, "budgets, not global cliffs"): each test names the attack and
//! checks that the attacker spends only its own device's or tenant's
//! budget. The pipeline tests run with a fake clock and no network; the
//! last one goes through a loopback node to see the `Busy` reply itself.

mod common;

use std::sync::Arc;

use fencegate::budget::{Budgets, Rate, TenantBudget};
use fencegate::fences::Fences;
use fencegate::pipeline::{Pipeline, PipelineConfig, PunchDecision, Scratch, Session};
use fencegate_schema::{
    Channel, Limits, Position, PunchKind, PunchMethod, PunchMsg, RecordBodyView, Request,
    TerminalAuth, Verdict, anomaly, parse_frame, parse_record,
};
use fencegate_spatial::{FenceIndex, FenceSet, FenceSpec, IndexOptions, LoadOptions, Point};
use flatbuffers::FlatBufferBuilder;

const T0: i64 = 1_790_000_000_000;
const MIN: i64 = 60_000;
const HQ: (f64, f64) = common::HQ;
const GLOBEX: (f64, f64) = common::GLOBEX;
/// 100 km north of each office: a minute later, an impossible move.
const FAR: f64 = 0.9;

fn fences() -> Arc<Fences> {
    let set = FenceSet::from_parts([
        FenceSpec::circle("hq-north", "acme", Point::new(HQ.0, HQ.1).unwrap(), 200.0),
        FenceSpec::circle(
            "globex-1",
            "globex",
            Point::new(GLOBEX.0, GLOBEX.1).unwrap(),
            300.0,
        ),
    ]);
    Arc::new(Fences::new(
        FenceIndex::build(set, &IndexOptions::default()),
        LoadOptions::default(),
    ))
}

/// A pipeline whose node-wide budgets are `node_keys` and `node_employees`,
/// with `budgets` applied.
fn pipeline(node_keys: usize, node_employees: usize, budgets: Budgets) -> Pipeline {
    let cfg = PipelineConfig {
        node: "n".into(),
        repeat_window_ms: 5 * MIN,
        idempotency_horizon_ms: 24 * 60 * MIN,
        heartbeat_ms: 5 * MIN,
        cell_resolution: h3o::Resolution::Nine,
        max_punch_keys: node_keys,
        max_employees: node_employees,
        max_devices: 1_000,
    };
    Pipeline::new(cfg, fences(), T0).with_budgets(budgets)
}

fn budgets(keys: usize, employees: usize) -> Budgets {
    Budgets {
        tenant: TenantBudget {
            max_punch_keys: keys,
            max_employees: employees,
            rate: None,
        },
        tenants: Vec::new(),
        device_rate: None,
    }
}

fn msg(id: u128, employee: &str, at: (f64, f64), t: i64) -> PunchMsg {
    PunchMsg {
        punch_id: id.to_be_bytes(),
        employee_id: employee.into(),
        kind: PunchKind::In,
        method: PunchMethod::Gps,
        device_time_ms: t,
        position: Some(Position::new(at.0, at.1, 10.0)),
        bssids: vec![],
        ssid: None,
        qr_payload: None,
        terminal_auth: TerminalAuth::None,
        offline: false,
        mock_location: false,
    }
}

/// An encoded record, shown by its length in failure messages.
struct Rec(Vec<u8>);

impl std::fmt::Debug for Rec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

/// What the edge does with one punch at `now`: decide, "write", mark
/// durable.
#[derive(Debug)]
enum Out {
    /// A new record: its verdict and anomaly flags, and the record.
    Record(Verdict, u64, Rec),
    Known,
    Full,
    RateLimited(u32),
}

fn send(p: &Pipeline, now: i64, s: &Session, m: &PunchMsg) -> Out {
    let mut fbb = FlatBufferBuilder::new();
    let bytes = m.encode_into(&mut fbb).to_vec();
    let Ok(Request::Punch(view)) = parse_frame(&bytes, Channel::Stream, now, &Limits::default())
    else {
        panic!("test frame must parse");
    };
    let mut scratch = Scratch::default();
    match p.punch(now, s, &view, &mut scratch) {
        PunchDecision::Record {
            record,
            ack,
            pending,
        } => {
            let record = record.to_vec();
            p.settle(
                &pending,
                fencegate::pipeline::Settled::Committed(ack.verdict),
            );
            let RecordBodyView::Punch(pr) = parse_record(&record).unwrap().body() else {
                panic!("punch record")
            };
            Out::Record(ack.verdict, pr.anomaly_flags(), Rec(record))
        }
        PunchDecision::Known(_) => Out::Known,
        PunchDecision::Full => Out::Full,
        PunchDecision::RateLimited { retry_after_ms } => Out::RateLimited(retry_after_ms),
        PunchDecision::InFlight => panic!("nothing is in flight here"),
    }
}

/// Whether `employee`'s anti-cheat memory works: a punch at `at`, then
/// one a minute later 100 km away, which only a remembered first fix can
/// flag as an impossible move.
fn memory_works(
    p: &Pipeline,
    now: i64,
    s: &Session,
    id: u128,
    employee: &str,
    at: (f64, f64),
) -> bool {
    let Out::Record(v, _, _) = send(p, now, s, &msg(id, employee, at, now)) else {
        panic!("{employee}'s first punch must be decided")
    };
    assert_eq!(v, Verdict::Accepted);
    let later = now + MIN;
    let far = (at.0 + FAR, at.1);
    match send(p, later, s, &msg(id + 1, employee, far, later)) {
        Out::Record(_, flags, _) => flags & anomaly::IMPOSSIBLE_SPEED != 0,
        other => panic!("{employee}'s second punch must be decided: {other:?}"),
    }
}

/// xorshift: the attacker's "random" employee ids, reproducibly.
fn ids(mut x: u64) -> impl Iterator<Item = u64> {
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some(x)
    })
}

/// The attack from the issue: ~1,000 punches with random employee ids from
/// one device. Before, the anti-cheat memory was one node-wide map that
/// stopped remembering when full, so after the flood every new employee
/// of every tenant was judged without memory (and before that, refused).
/// Now each tenant has its own share and a full share forgets its least
/// recently seen employee: the flood pushes out only its own tenant's
/// oldest entries and refuses nobody.
#[test]
fn a_device_filling_anti_cheat_memory_locks_out_nobody() {
    const SHARE: usize = 200;
    let p = pipeline(100_000, 2 * SHARE, budgets(10_000, SHARE));
    let acme = Session::new("acme", "phone-victim");
    let globex = Session::new("globex", "phone-g");
    let attacker = Session::new("acme", "hostile-1");
    // globex's employee is remembered before the flood.
    assert!(memory_works(&p, T0, &globex, 1, "g-old", GLOBEX));

    let mut now = T0 + 2 * MIN;
    for (i, e) in ids(0x9e37_79b9).take(1_000).enumerate() {
        now += 100;
        match send(
            &p,
            now,
            &attacker,
            &msg(1_000 + i as u128, &format!("x-{e:016x}"), HQ, now),
        ) {
            Out::Record(..) => {}
            other => panic!("flood punch {i} must be decided, not refused: {other:?}"),
        }
    }
    p.tick(now);
    assert_eq!(
        p.remembered_employees("acme"),
        SHARE,
        "acme's share is full"
    );
    assert_eq!(
        p.remembered_employees("globex"),
        1,
        "globex's share untouched"
    );

    // After the flood: new employees of both tenants are remembered, and
    // globex's employee from before still is.
    now += MIN;
    assert!(
        memory_works(&p, now, &globex, 10, "g-new", GLOBEX),
        "another tenant"
    );
    assert!(
        memory_works(&p, now, &acme, 20, "a-new", HQ),
        "the attacked tenant"
    );
    let later = now + 2 * MIN;
    let Out::Record(_, flags, _) = send(&p, later, &globex, &msg(30, "g-old", GLOBEX, later))
    else {
        panic!("decided")
    };
    // Back from 100 km away in minutes: flagged only if g-old's last fix
    // (from before the flood) is still remembered.
    assert_ne!(
        flags & anomaly::IMPOSSIBLE_SPEED,
        0,
        "g-old's memory survived"
    );
    assert_eq!(p.remembered_employees("acme"), SHARE, "bounded");
}

/// Before, `dedup.max_punch_keys` was node-wide: one tenant's device could
/// fill the idempotency window and every tenant's new punches were
/// answered Busy. Now each tenant's window is its own.
#[test]
fn one_tenant_filling_its_idempotency_window_does_not_refuse_another_tenant() {
    const SHARE: usize = 50;
    let p = pipeline(2 * SHARE, 10_000, budgets(SHARE, 10_000));
    let attacker = Session::new("acme", "hostile-1");
    let mut fulls = 0;
    let mut first = None;
    for i in 0..(SHARE as u128 + 10) {
        let m = msg(1 + i, &format!("x-{i}"), HQ, T0);
        match send(&p, T0, &attacker, &m) {
            Out::Record(..) => {
                first.get_or_insert(m);
            }
            Out::Full => fulls += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fulls, 10, "acme is refused once its own window is full");
    // A resend of a recorded acme punch still gets its ack.
    assert!(matches!(
        send(&p, T0, &attacker, &first.unwrap()),
        Out::Known
    ));
    // globex is untouched: all its punches are decided.
    let g = Session::new("globex", "phone-g");
    for i in 0..SHARE as u128 {
        let out = send(&p, T0, &g, &msg(10_000 + i, &format!("g-{i}"), GLOBEX, T0));
        assert!(matches!(out, Out::Record(Verdict::Accepted, ..)), "{out:?}");
    }
}

/// The start-up check (the replayed horizon must fit) is per tenant: a
/// tenant whose log holds more punch ids than its share fails the start,
/// naming the share, even when the node as a whole has room.
#[test]
fn replay_must_fit_each_tenants_own_window() {
    let p = pipeline(1_000, 10_000, budgets(1_000, 10_000));
    let s = Session::new("acme", "phone-1");
    let records: Vec<Vec<u8>> = (0..6u128)
        .map(|i| {
            let t = T0 + i as i64 * 6 * MIN;
            match send(&p, t, &s, &msg(1 + i, &format!("e-{i}"), HQ, t)) {
                Out::Record(_, _, r) => r.0,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    let now = T0 + 40 * MIN;
    let replay = |b: Budgets| {
        let small = pipeline(1_000, 10_000, b);
        records
            .iter()
            .map(|r| {
                let v = parse_record(r).unwrap();
                let RecordBodyView::Punch(pr) = v.body() else {
                    panic!()
                };
                small.replay_punch(now, v.tenant(), &pr, v.gateway_time_ms(), v.record_id())
            })
            .collect::<Vec<_>>()
    };
    // acme's own share is 5: the sixth punch id does not fit.
    let mut b = budgets(1_000, 10_000);
    b.tenants.push((
        "acme".into(),
        TenantBudget {
            max_punch_keys: 5,
            max_employees: 10_000,
            rate: None,
        },
    ));
    let r = replay(b);
    assert!(r[..5].iter().all(Result::is_ok));
    let err = r[5].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("(5 keys)") && err.contains("max_punch_keys"),
        "{err}"
    );
    // Another tenant's small share does not limit acme.
    let mut b = budgets(1_000, 10_000);
    b.tenants.push((
        "globex".into(),
        TenantBudget {
            max_punch_keys: 5,
            max_employees: 10_000,
            rate: None,
        },
    ));
    assert!(replay(b).iter().all(Result::is_ok));
}

/// A device over its punch rate is answered Busy with the time until its
/// bucket has a token, spending none of its tenant's; another device of
/// the same tenant is served meanwhile, and a tenant over its rate does
/// not slow another tenant.
#[test]
fn a_device_over_its_punch_rate_gets_busy_with_retry_after_while_another_device_is_served() {
    let mut b = budgets(10_000, 10_000);
    b.device_rate = Some(Rate {
        per_s: 1.0,
        burst: 3,
    });
    b.tenant.rate = Some(Rate {
        per_s: 1.0,
        burst: 6,
    });
    let p = pipeline(10_000, 10_000, b);
    let hostile = Session::new("acme", "hostile-1");
    let mut outs = Vec::new();
    for i in 0..20u128 {
        outs.push(send(
            &p,
            T0,
            &hostile,
            &msg(1 + i, &format!("x-{i}"), HQ, T0),
        ));
    }
    assert!(outs[..3].iter().all(|o| matches!(o, Out::Record(..))));
    assert!(
        outs[3..]
            .iter()
            .all(|o| matches!(o, Out::RateLimited(1_000))),
        "{:?}",
        &outs[3..]
    );
    // The 17 refusals spent nothing of acme's 6: three more devices get in.
    for d in 0..3u128 {
        let s = Session::new("acme", &format!("phone-{d}"));
        let out = send(&p, T0, &s, &msg(100 + d, &format!("e-{d}"), HQ, T0));
        assert!(matches!(out, Out::Record(Verdict::Accepted, ..)), "{out:?}");
    }
    // acme is now over its own rate; globex is not.
    let s = Session::new("acme", "phone-9");
    assert!(matches!(
        send(&p, T0, &s, &msg(200, "e-9", HQ, T0)),
        Out::RateLimited(_)
    ));
    let g = Session::new("globex", "phone-g");
    assert!(matches!(
        send(&p, T0, &g, &msg(300, "g-1", GLOBEX, T0)),
        Out::Record(Verdict::Accepted, ..)
    ));
    // After the retry-after the same punch gets through.
    let later = T0 + 1_000;
    assert!(matches!(
        send(&p, later, &hostile, &msg(4, "x-3", HQ, T0)),
        Out::Record(..)
    ));
}

/// The same through a node on loopback: the `Busy` reply carries the
/// retry-after, the refusal is counted by reason, and another device is
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_over_its_punch_rate_is_answered_busy_over_quic() {
    use fencegate::client::PunchReply;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.budgets.device_rate = Some(fencegate::budget::Rate {
        per_s: 0.2,
        burst: 2,
    });
    let node = common::Node::start_with(dir, cfg).await;
    let series = r#"fencegate_refused_total{channel="punch",reason="device_rate"}"#;
    let metric = || {
        fencegate::serve::prometheus()
            .render()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let before = metric();
    let hostile = node.client("acme", "hostile-1").await;
    let mut replies = Vec::new();
    for i in 0..4u128 {
        replies.push(
            hostile
                .punch(&common::punch(1 + i, &format!("x-{i}"), HQ))
                .await
                .unwrap(),
        );
    }
    assert!(
        replies[..2]
            .iter()
            .all(|r| r.verdict() == Some(Verdict::Accepted)),
        "{replies:?}"
    );
    for r in &replies[2..] {
        match r {
            // 5 s a token: the wait until the next one, never more.
            PunchReply::Busy {
                retry_after_ms,
                reason,
            } => {
                assert!((1..=5_000).contains(retry_after_ms), "{r:?}");
                assert_eq!(*reason, fencegate_schema::Reason::RateLimited, "{r:?}");
            }
            other => panic!("expected Busy with a retry-after: {other:?}"),
        }
    }
    assert!(metric() - before >= 2.0);
    let other = node.client("acme", "phone-1").await;
    let r = other.punch(&common::punch(100, "e-1", HQ)).await.unwrap();
    assert_eq!(r.verdict(), Some(Verdict::Accepted));
    node.running
        .shutdown(std::time::Duration::from_secs(2))
        .await;
}
