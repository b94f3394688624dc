//! Ping suppression reuses a standing device's last answer; a fence change
//! must still be noticed at once.

use std::sync::Arc;

use fencegate::fences::Fences;
use fencegate::pipeline::{Pipeline, PipelineConfig, Scratch, Session};
use fencegate_schema::{
    Channel, Fix, Limits, PingBatchMsg, RecordBodyView, Request, Transition, parse_frame,
    parse_record,
};
use fencegate_spatial::{FenceIndex, FenceSet, FenceSpec, IndexOptions, LoadOptions, Point};
use flatbuffers::FlatBufferBuilder;

const T0: i64 = 1_790_000_000_000;
const SPOT: (f64, f64) = (52.5200, 13.4050);

fn index(radius_m: f64) -> FenceIndex {
    let set = FenceSet::from_parts([FenceSpec::circle(
        "depot",
        "acme",
        Point::new(SPOT.0, SPOT.1 + 0.01).unwrap(),
        radius_m,
    )]);
    FenceIndex::build(set, &IndexOptions::default())
}

fn send(p: &Pipeline, s: &Session, t: i64) -> Vec<Vec<u8>> {
    let msg = PingBatchMsg {
        device_seq: 0,
        base_time_ms: t,
        fixes: vec![Fix::new(
            (SPOT.0 * 1e7) as i32,
            (SPOT.1 * 1e7) as i32,
            0,
            40,
            0,
        )],
    };
    let mut fbb = FlatBufferBuilder::new();
    let bytes = msg.encode_into(&mut fbb).to_vec();
    let Ok(Request::PingBatch(view)) =
        parse_frame(&bytes, Channel::Datagram, t, &Limits::default())
    else {
        panic!()
    };
    let mut out: Vec<Vec<u8>> = Vec::new();
    p.pings(t, s, &view, &mut Scratch::default(), &mut out);
    out
}

#[test]
fn a_standing_device_notices_a_fence_that_grows_around_it() {
    let fences = Arc::new(Fences::new(index(100.0), LoadOptions::default()));
    let cfg = PipelineConfig {
        node: "n".into(),
        repeat_window_ms: 300_000,
        idempotency_horizon_ms: 86_400_000,
        heartbeat_ms: 300_000,
        cell_resolution: h3o::Resolution::Nine,
        max_punch_keys: 1_000,
        max_employees: 1_000_000,
        max_devices: 1_000,
    };
    let p = Pipeline::new(cfg, fences.clone(), T0);
    let s = Session::new("acme", "pallet-1");
    assert_eq!(send(&p, &s, T0).len(), 1, "first fix forwarded");
    assert!(send(&p, &s, T0 + 1_000).is_empty(), "same spot: suppressed");
    // The depot fence is redrawn to cover the pallet (~680 m away).
    fences.store(index(1_000.0));
    let recs = send(&p, &s, T0 + 2_000);
    let events: Vec<_> = recs
        .iter()
        .filter_map(|r| match parse_record(r).unwrap().body() {
            RecordBodyView::FenceEvent(e) => Some((e.fence_id().to_owned(), e.transition())),
            _ => None,
        })
        .collect();
    assert_eq!(events, [("depot".to_owned(), Transition::Enter)]);
    assert!(
        send(&p, &s, T0 + 3_000).is_empty(),
        "and suppressed again after"
    );
}
