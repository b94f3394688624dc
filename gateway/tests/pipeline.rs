//! Pipeline tests with a fake clock and no network: the five-minute
//! contract (idempotency, repeat merge, ping suppression, enter/exit) and
//! tenant isolation.

use std::sync::Arc;

use fencegate::fences::Fences;
use fencegate::pipeline::{PingOutcome, Pipeline, PipelineConfig, PunchDecision, Scratch, Session};
use fencegate_schema::{
    Channel, Fix, Limits, PingBatchMsg, Position, PunchKind, PunchMethod, PunchMsg, Reason,
    RecordBodyView, Request, TerminalAuth, Transition, Verdict, parse_frame, parse_record,
};
use fencegate_spatial::{FenceIndex, FenceSet, FenceSpec, IndexOptions, LoadOptions, Point};
use flatbuffers::FlatBufferBuilder;

const T0: i64 = 1_790_000_000_000;
const MIN: i64 = 60_000;
// Shanghai People's Square; acme's 200 m circle and globex's 300 m one 2 km east.
const HQ: (f64, f64) = (31.2304, 121.4737);
const GLOBEX: (f64, f64) = (31.2304, 121.4947);

fn pipeline() -> Pipeline {
    let set = FenceSet::from_parts([
        FenceSpec::circle("hq-north", "acme", Point::new(HQ.0, HQ.1).unwrap(), 200.0),
        FenceSpec::circle(
            "globex-1",
            "globex",
            Point::new(GLOBEX.0, GLOBEX.1).unwrap(),
            300.0,
        ),
    ]);
    let index = FenceIndex::build(set, &IndexOptions::default());
    let fences = Arc::new(Fences::new(index, LoadOptions::default()));
    let cfg = PipelineConfig {
        node: "test-node".into(),
        repeat_window_ms: 5 * MIN,
        idempotency_horizon_ms: 86_400_000,
        heartbeat_ms: 5 * MIN,
        cell_resolution: h3o::Resolution::Nine,
        max_punch_keys: 1_000,
        max_employees: 1_000_000,
        max_devices: 1_000,
    };
    Pipeline::new(cfg, fences, T0)
}

fn punch_msg(id: u8, employee: &str, at: (f64, f64), t: i64) -> PunchMsg {
    PunchMsg {
        punch_id: [id; 16],
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

/// What the edge would do: decide, "write" the record, mark it durable.
fn punch(
    p: &Pipeline,
    now: i64,
    s: &Session,
    msg: &PunchMsg,
) -> (Verdict, Reason, [u8; 16], Option<Vec<u8>>) {
    let mut fbb = FlatBufferBuilder::new();
    let bytes = msg.encode_into(&mut fbb).to_vec();
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
            (ack.verdict, ack.reason, ack.record_id, Some(record))
        }
        PunchDecision::Known(ack) => (ack.verdict, ack.reason, ack.record_id, None),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn punch_inside_is_accepted_and_resend_gets_the_same_ack() {
    let p = pipeline();
    let s = Session::new("acme", "phone-1");
    let msg = punch_msg(1, "e-1", HQ, T0);
    let (v, r, id, rec) = punch(&p, T0, &s, &msg);
    assert_eq!((v, r), (Verdict::Accepted, Reason::None));
    let rec = rec.expect("a new punch writes a record");
    let view = parse_record(&rec).unwrap();
    assert_eq!(view.record_id(), id);
    let RecordBodyView::Punch(pr) = view.body() else {
        panic!("punch record")
    };
    assert_eq!(
        pr.fence_ids().unwrap().iter().collect::<Vec<_>>(),
        ["hq-north"]
    );

    // A resend a minute later, e.g. after a lost ack: same ack, no record.
    let (v2, _, id2, rec2) = punch(&p, T0 + MIN, &s, &msg);
    assert_eq!((v2, id2), (Verdict::Accepted, id));
    assert!(rec2.is_none());
}

#[test]
fn resend_while_first_copy_is_being_written_is_told_to_retry() {
    let p = pipeline();
    let s = Session::new("acme", "phone-1");
    let mut fbb = FlatBufferBuilder::new();
    let bytes = punch_msg(1, "e-1", HQ, T0).encode_into(&mut fbb).to_vec();
    let Ok(Request::Punch(view)) = parse_frame(&bytes, Channel::Stream, T0, &Limits::default())
    else {
        panic!()
    };
    let mut a = Scratch::default();
    let mut b = Scratch::default();
    let PunchDecision::Record { pending, .. } = p.punch(T0, &s, &view, &mut a) else {
        panic!()
    };
    assert!(matches!(
        p.punch(T0, &s, &view, &mut b),
        PunchDecision::InFlight
    ));
    // The write failed: the retry is decided afresh and writes a record.
    p.settle(&pending, fencegate::pipeline::Settled::Failed);
    assert!(matches!(
        p.punch(T0, &s, &view, &mut b),
        PunchDecision::Record { .. }
    ));
}

#[test]
fn repeat_within_five_minutes_is_merged_and_after_is_not() {
    let p = pipeline();
    let s = Session::new("acme", "phone-1");
    let (_, _, first, _) = punch(&p, T0, &s, &punch_msg(1, "e-1", HQ, T0));
    let t = T0 + 5 * MIN - 1;
    let (v, _, id, rec) = punch(&p, t, &s, &punch_msg(2, "e-1", HQ, t));
    assert_eq!(v, Verdict::RepeatMerged);
    assert_eq!(
        id, first,
        "a repeat is acked with the record it merged into"
    );
    let rec = parse_record(rec.as_deref().unwrap()).unwrap();
    let RecordBodyView::Punch(pr) = rec.body() else {
        panic!()
    };
    assert_eq!(pr.merged_into().map(|u| u.0), Some(first));

    // A clock-out is not a repeat of a clock-in.
    let mut out = punch_msg(3, "e-1", HQ, t);
    out.kind = PunchKind::Out;
    assert_eq!(punch(&p, t, &s, &out).0, Verdict::Accepted);

    p.tick(T0 + 5 * MIN);
    let t = T0 + 5 * MIN;
    let (v, _, id, _) = punch(&p, t, &s, &punch_msg(4, "e-1", HQ, t));
    assert_eq!(v, Verdict::Accepted);
    assert_ne!(id, first);
}

#[test]
fn out_of_range_punch_names_the_nearest_fence_and_distance() {
    let p = pipeline();
    let s = Session::new("acme", "phone-1");
    // 0.005° of latitude ≈ 556 m north of the centre: ≈ 356 m outside.
    let msg = punch_msg(1, "e-1", (HQ.0 + 0.005, HQ.1), T0);
    let mut fbb = FlatBufferBuilder::new();
    let bytes = msg.encode_into(&mut fbb).to_vec();
    let Ok(Request::Punch(view)) = parse_frame(&bytes, Channel::Stream, T0, &Limits::default())
    else {
        panic!()
    };
    let PunchDecision::Record { ack, .. } = p.punch(T0, &s, &view, &mut Scratch::default()) else {
        panic!()
    };
    assert_eq!(
        (ack.verdict, ack.reason),
        (Verdict::OutOfRange, Reason::OutOfRange)
    );
    assert_eq!(ack.nearest_fence_id.as_deref(), Some("hq-north"));
    assert!((ack.distance_m - 356.0).abs() < 3.0, "{}", ack.distance_m);
    // An out-of-range punch does not start a repeat window.
    let (v, ..) = punch(&p, T0 + MIN, &s, &punch_msg(2, "e-1", HQ, T0 + MIN));
    assert_eq!(v, Verdict::Accepted);
}

#[test]
fn tenants_never_see_each_others_fences_or_punch_ids() {
    let p = pipeline();
    let acme = Session::new("acme", "phone-1");
    let globex = Session::new("globex", "phone-1");
    // acme punching inside globex's fence is out of range, and the nearest
    // fence it is told about is its own.
    let msg = punch_msg(1, "e-1", GLOBEX, T0);
    let mut fbb = FlatBufferBuilder::new();
    let bytes = msg.encode_into(&mut fbb).to_vec();
    let Ok(Request::Punch(view)) = parse_frame(&bytes, Channel::Stream, T0, &Limits::default())
    else {
        panic!()
    };
    let PunchDecision::Record { ack, pending, .. } =
        p.punch(T0, &acme, &view, &mut Scratch::default())
    else {
        panic!()
    };
    p.settle(
        &pending,
        fencegate::pipeline::Settled::Committed(ack.verdict),
    );
    assert_eq!(ack.verdict, Verdict::OutOfRange);
    assert_eq!(ack.nearest_fence_id.as_deref(), Some("hq-north"));
    // The same punch id from globex is a different punch, not a resend.
    let (v, _, _, rec) = punch(&p, T0, &globex, &msg);
    assert_eq!(v, Verdict::Accepted);
    assert!(rec.is_some());
    // A tenant with no fences at all.
    let (v, r, ..) = punch(
        &p,
        T0,
        &Session::new("initech", "d"),
        &punch_msg(9, "e", HQ, T0),
    );
    assert_eq!((v, r), (Verdict::OutOfRange, Reason::NoFences));
}

#[test]
fn gps_punch_without_a_position_never_reaches_the_pipeline() {
    let mut msg = punch_msg(1, "e-1", HQ, T0);
    msg.position = None;
    let mut fbb = FlatBufferBuilder::new();
    let bytes = msg.encode_into(&mut fbb).to_vec();
    let r = parse_frame(&bytes, Channel::Stream, T0, &Limits::default());
    assert!(matches!(r, Err(Reason::PositionRequired)));
}

#[test]
fn wifi_punch_is_verified_by_bssid_and_an_unregistered_one_is_rejected_on_record() {
    // No rules registered any access point for acme: the BSSID proves
    // nothing, so the punch is refused, and the refusal is recorded (status
    // Rejected) so the ack's record id points at something.
    let p = pipeline();
    let s = Session::new("acme", "phone-1");
    let mut msg = punch_msg(1, "e-1", HQ, T0);
    msg.position = None;
    msg.method = PunchMethod::Wifi;
    msg.bssids = vec![[0, 1, 2, 3, 4, 5]];
    let (v, r, id, rec) = punch(&p, T0, &s, &msg);
    assert_eq!((v, r), (Verdict::Rejected, Reason::WifiUnknown));
    let rec = rec.unwrap();
    let view = parse_record(&rec).unwrap();
    assert_eq!(view.record_id(), id);
    let RecordBodyView::Punch(pr) = view.body() else {
        panic!()
    };
    assert_eq!(pr.status(), fencegate_schema::AttendanceStatus::Rejected);
    assert_eq!(pr.reason(), Reason::WifiUnknown);
}

#[test]
fn full_dedup_window_answers_busy_instead_of_risking_a_double_count() {
    let set = FenceSet::from_parts([FenceSpec::circle(
        "hq",
        "acme",
        Point::new(HQ.0, HQ.1).unwrap(),
        200.0,
    )]);
    let fences = Arc::new(Fences::new(
        FenceIndex::build(set, &IndexOptions::default()),
        LoadOptions::default(),
    ));
    let cfg = PipelineConfig {
        node: "n".into(),
        repeat_window_ms: 5 * MIN,
        idempotency_horizon_ms: 5 * MIN,
        heartbeat_ms: 5 * MIN,
        cell_resolution: h3o::Resolution::Nine,
        max_punch_keys: 4,
        max_employees: 1_000_000,
        max_devices: 1_000,
    };
    let p = Pipeline::new(cfg, fences, T0);
    let s = Session::new("acme", "d");
    let mut fulls = 0;
    for i in 0..5u8 {
        let mut fbb = FlatBufferBuilder::new();
        let bytes = punch_msg(i + 1, &format!("e-{i}"), HQ, T0)
            .encode_into(&mut fbb)
            .to_vec();
        let Ok(Request::Punch(view)) = parse_frame(&bytes, Channel::Stream, T0, &Limits::default())
        else {
            panic!()
        };
        if matches!(
            p.punch(T0, &s, &view, &mut Scratch::default()),
            PunchDecision::Full
        ) {
            fulls += 1;
        }
    }
    assert!(fulls >= 1, "a window of 4 punch ids cannot hold 5 punches");
    // Two horizons later the punch ids and repeat keys are gone and punches
    // flow again, for an employee the rules memory knows too.
    p.tick(T0 + 10 * MIN + 1);
    let (v, ..) = punch(
        &p,
        T0 + 10 * MIN + 1,
        &s,
        &punch_msg(99, "e-0", HQ, T0 + 10 * MIN + 1),
    );
    assert_eq!(v, Verdict::Accepted);
}

#[test]
fn replayed_log_restores_idempotency_after_a_restart() {
    let p = pipeline();
    let s = Session::new("acme", "phone-1");
    let msg = punch_msg(7, "e-7", HQ, T0);
    let (_, _, id, rec) = punch(&p, T0, &s, &msg);
    let rec = rec.unwrap();

    let fresh = pipeline();
    let view = parse_record(&rec).unwrap();
    let RecordBodyView::Punch(pr) = view.body() else {
        panic!()
    };
    fresh
        .replay_punch(
            T0 + MIN,
            view.tenant(),
            &pr,
            view.gateway_time_ms(),
            view.record_id(),
        )
        .unwrap();
    let (v, _, id2, rec2) = punch(&fresh, T0 + MIN, &s, &msg);
    assert_eq!((v, id2), (Verdict::Accepted, id));
    assert!(rec2.is_none(), "no second record after a restart");
    // And the repeat window came back too.
    let (v, _, first, _) = punch(
        &fresh,
        T0 + 2 * MIN,
        &s,
        &punch_msg(8, "e-7", HQ, T0 + 2 * MIN),
    );
    assert_eq!((v, first), (Verdict::RepeatMerged, id));
}

fn fix(at: (f64, f64), offset_ms: u32) -> Fix {
    Fix::new((at.0 * 1e7) as i32, (at.1 * 1e7) as i32, offset_ms, 50, 0)
}

fn pings(
    p: &Pipeline,
    now: i64,
    s: &Session,
    base: i64,
    fixes: Vec<Fix>,
) -> (PingOutcome, Vec<Vec<u8>>) {
    let msg = PingBatchMsg {
        device_seq: 0,
        base_time_ms: base,
        fixes,
    };
    let mut fbb = FlatBufferBuilder::new();
    let bytes = msg.encode_into(&mut fbb).to_vec();
    let Ok(Request::PingBatch(view)) =
        parse_frame(&bytes, Channel::Datagram, now, &Limits::default())
    else {
        panic!("test batch must parse")
    };
    let mut out: Vec<Vec<u8>> = Vec::new();
    let o = p.pings(now, s, &view, &mut Scratch::default(), &mut out);
    (o, out)
}

fn events(records: &[Vec<u8>]) -> Vec<(String, Transition)> {
    records
        .iter()
        .filter_map(|r| match parse_record(r).unwrap().body() {
            RecordBodyView::FenceEvent(e) => Some((e.fence_id().to_owned(), e.transition())),
            _ => None,
        })
        .collect()
}

#[test]
fn standing_still_is_suppressed_until_the_heartbeat() {
    let p = pipeline();
    let s = Session::new("acme", "truck-1");
    let away = (HQ.0 + 0.05, HQ.1);
    let (o, recs) = pings(
        &p,
        T0,
        &s,
        T0,
        vec![fix(away, 0), fix(away, 1_000), fix(away, 2_000)],
    );
    assert_eq!((o.forwarded, o.suppressed), (1, 2));
    assert_eq!(recs.len(), 1);
    // A duplicated datagram is dropped, not forwarded again.
    let (o, recs) = pings(&p, T0, &s, T0, vec![fix(away, 2_000)]);
    assert_eq!((o.duplicates, o.late, recs.len()), (1, 0, 0));
    // Just under five minutes: still suppressed. At five: a heartbeat.
    let (o, _) = pings(&p, T0 + 5 * MIN, &s, T0 + 5 * MIN - 1, vec![fix(away, 0)]);
    assert_eq!(o.suppressed, 1);
    let (o, recs) = pings(&p, T0 + 5 * MIN, &s, T0 + 5 * MIN, vec![fix(away, 0)]);
    assert_eq!(o.forwarded, 1);
    let RecordBodyView::Ping(pr) = parse_record(&recs[0]).unwrap().body() else {
        panic!()
    };
    assert!(pr.heartbeat());
}

#[test]
fn leaving_the_cell_forwards_and_crossing_a_fence_emits_enter_and_exit() {
    let p = pipeline();
    let s = Session::new("acme", "truck-1");
    let away = (HQ.0 + 0.05, HQ.1);
    let (o, _) = pings(&p, T0, &s, T0, vec![fix(away, 0)]);
    assert_eq!(o.events, 0, "the first fix sets the baseline");
    // Drive into the fence: enter event plus the ping.
    let (o, recs) = pings(&p, T0 + 1_000, &s, T0 + 1_000, vec![fix(HQ, 0)]);
    assert_eq!((o.forwarded, o.events), (1, 1));
    assert_eq!(events(&recs), [("hq-north".to_owned(), Transition::Enter)]);
    // Drive out: exit.
    let (o, recs) = pings(&p, T0 + 2_000, &s, T0 + 2_000, vec![fix(away, 0)]);
    assert_eq!(o.events, 1);
    assert_eq!(events(&recs), [("hq-north".to_owned(), Transition::Exit)]);
}

#[test]
fn a_device_of_another_tenant_sees_no_transitions_for_fences_not_its_own() {
    let p = pipeline();
    let s = Session::new("globex", "truck-9");
    let away = (HQ.0 + 0.05, HQ.1);
    pings(&p, T0, &s, T0, vec![fix(away, 0)]);
    let (o, _) = pings(&p, T0 + 1_000, &s, T0 + 1_000, vec![fix(HQ, 0)]);
    assert_eq!(o.events, 0, "hq-north belongs to acme");
}

fn pipeline_with(horizon_ms: i64, max_punch_keys: usize, max_employees: usize) -> Pipeline {
    let set = FenceSet::from_parts([FenceSpec::circle(
        "hq-north",
        "acme",
        Point::new(HQ.0, HQ.1).unwrap(),
        200.0,
    )]);
    let fences = Arc::new(Fences::new(
        FenceIndex::build(set, &IndexOptions::default()),
        LoadOptions::default(),
    ));
    let cfg = PipelineConfig {
        node: "n".into(),
        repeat_window_ms: 5 * MIN,
        idempotency_horizon_ms: horizon_ms,
        heartbeat_ms: 5 * MIN,
        cell_resolution: h3o::Resolution::Nine,
        max_punch_keys,
        max_employees,
        max_devices: 1_000,
    };
    Pipeline::new(cfg, fences, T0)
}

#[test]
fn resend_after_the_repeat_window_within_the_horizon_gets_the_same_ack() {
    let p = pipeline_with(24 * 60 * MIN, 1_000, 1_000);
    let s = Session::new("acme", "phone-1");
    let msg = punch_msg(1, "e-1", HQ, T0);
    let (v, _, id, rec) = punch(&p, T0, &s, &msg);
    assert_eq!(v, Verdict::Accepted);
    assert!(rec.is_some());
    // The ack was lost; the phone retries 6 minutes, then 23 hours later
    // (the housekeeping tick runs all along).
    for later in [6 * MIN, 23 * 60 * MIN] {
        p.tick(T0 + later);
        let (v2, _, id2, rec2) = punch(&p, T0 + later, &s, &msg);
        assert_eq!(
            (v2, id2),
            (Verdict::Accepted, id),
            "resend after {later} ms"
        );
        assert!(rec2.is_none(), "no second record after {later} ms");
    }
    // Past the horizon the id is forgotten: a resend is a new punch.
    let t = T0 + 24 * 60 * MIN + 1;
    p.tick(t);
    let (_, _, _, rec3) = punch(&p, t, &s, &punch_msg(1, "e-1", HQ, t));
    assert!(
        rec3.is_some(),
        "a resend past the horizon is decided afresh"
    );
}

#[test]
fn a_wall_clock_step_neither_clears_nor_pins_punch_ids() {
    let p = pipeline_with(60 * MIN, 1_000, 1_000);
    let s = Session::new("acme", "phone-1");
    let msg = punch_msg(1, "e-1", HQ, T0);
    let (_, _, id, _) = punch(&p, T0, &s, &msg);
    // NTP steps the wall clock two days ahead; one real minute has passed.
    let wall = T0 + 2 * 24 * 60 * MIN;
    p.tick_at(wall, T0 + MIN);
    let (v, _, id2, rec) = punch(&p, wall, &s, &punch_msg(1, "e-1", HQ, wall));
    assert_eq!((v, id2), (Verdict::Accepted, id));
    assert!(rec.is_none(), "the step must not clear the punch id");
    // The wall clock steps back to the start; real time goes past the horizon.
    p.tick_at(T0, T0 + 61 * MIN);
    let (_, _, _, rec) = punch(&p, T0, &s, &msg);
    assert!(
        rec.is_some(),
        "the horizon runs on the monotonic clock, not the wall clock"
    );
}

#[test]
fn a_punch_the_log_refused_leaves_no_trace_in_the_employee_memory() {
    let p = pipeline_with(60 * MIN, 1_000, 1_000);
    let s = Session::new("acme", "phone-1");
    let mut fbb = FlatBufferBuilder::new();
    // Two zero-accuracy fixes at one spot flag the second as a replayed fix.
    let mut a = punch_msg(1, "e-1", HQ, T0);
    a.position = Some(Position::new(HQ.0, HQ.1, 0.0));
    let bytes = a.encode_into(&mut fbb).to_vec();
    let Ok(Request::Punch(view)) = parse_frame(&bytes, Channel::Stream, T0, &Limits::default())
    else {
        panic!()
    };
    let PunchDecision::Record { pending, .. } = p.punch(T0, &s, &view, &mut Scratch::default())
    else {
        panic!()
    };
    p.settle(&pending, fencegate::pipeline::Settled::Failed);
    let mut b = punch_msg(2, "e-1", HQ, T0 + MIN);
    b.kind = PunchKind::Out;
    b.position = Some(Position::new(HQ.0, HQ.1, 0.0));
    let (_, _, _, rec) = punch(&p, T0 + MIN, &s, &b);
    let rec = rec.unwrap();
    let RecordBodyView::Punch(pr) = parse_record(&rec).unwrap().body() else {
        panic!()
    };
    assert_eq!(
        pr.anomaly_flags() & fencegate_schema::anomaly::ZERO_ACCURACY_REPEAT,
        0,
        "the refused punch's fix must not be remembered"
    );
    // Once durable, the memory does learn it.
    let mut c = punch_msg(3, "e-1", HQ, T0 + 2 * MIN);
    c.position = Some(Position::new(HQ.0, HQ.1, 0.0));
    c.kind = PunchKind::In;
    let rec = punch(&p, T0 + 2 * MIN, &s, &c).3.unwrap();
    let RecordBodyView::Punch(pr) = parse_record(&rec).unwrap().body() else {
        panic!()
    };
    assert_ne!(
        pr.anomaly_flags() & fencegate_schema::anomaly::ZERO_ACCURACY_REPEAT,
        0
    );
}

#[test]
fn a_full_employee_memory_judges_without_it_and_refuses_nobody() {
    let p = pipeline_with(60 * MIN, 1_000, 1);
    let s = Session::new("acme", "phone-1");
    for i in 0..20u8 {
        let (v, ..) = punch(&p, T0, &s, &punch_msg(i + 1, &format!("e-{i}"), HQ, T0));
        assert_eq!(v, Verdict::Accepted, "employee {i}");
    }
}

#[test]
fn replay_that_does_not_fit_the_punch_ids_fails_instead_of_forgetting() {
    let p = pipeline();
    let s = Session::new("acme", "phone-1");
    let mut records = Vec::new();
    for i in 0..5u8 {
        let t = T0 + i64::from(i) * 6 * MIN;
        records.push(
            punch(&p, t, &s, &punch_msg(i + 1, &format!("e-{i}"), HQ, t))
                .3
                .unwrap(),
        );
    }
    let now = T0 + 31 * MIN;
    let small = pipeline_with(24 * 60 * MIN, 4, 1_000);
    let results: Vec<_> = records
        .iter()
        .map(|r| {
            let v = parse_record(r).unwrap();
            let RecordBodyView::Punch(pr) = v.body() else {
                panic!()
            };
            small.replay_punch(now, v.tenant(), &pr, v.gateway_time_ms(), v.record_id())
        })
        .collect();
    assert!(results[..4].iter().all(Result::is_ok));
    assert!(results[4].is_err(), "the fifth punch id does not fit");
}
