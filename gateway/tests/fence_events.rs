//! Fence events from pings: transitions only (issue 11).
//!
//! A differential proptest drives `Pipeline::pings` with random paths
//! (jitter, boundary crossings, overlapping fences, heartbeats, late and
//! duplicated fixes, fence snapshot swaps, gateway restarts, state expiry)
//! on a fake clock, and compares the emitted event stream exactly with a
//! per-device set-difference model over brute-force containment, with and
//! without the debounce rules. Plain tests pin the reported drive through
//! `lujiazui-tower`, a day of offline history, and each debounce rule.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fencegate::fences::{Fences, build_index};
use fencegate::pipeline::{
    FenceEventRules, PingEventSettings, PingOutcome, Pipeline, PipelineConfig, Scratch, Session,
};
use fencegate_schema::{
    Channel, Fix, Limits, PingBatchMsg, RecordBodyView, Request, Transition, parse_frame,
    parse_record,
};
use fencegate_spatial::{FenceIndex, FenceSet, FenceSpec, IndexOptions, LoadOptions, Point};
use flatbuffers::FlatBufferBuilder;
use proptest::prelude::*;

const T0: i64 = 1_790_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

fn config() -> PipelineConfig {
    PipelineConfig {
        node: "n".into(),
        repeat_window_ms: 300_000,
        idempotency_horizon_ms: 86_400_000,
        heartbeat_ms: 300_000,
        cell_resolution: h3o::Resolution::Nine,
        max_punch_keys: 1_000,
        max_employees: 1_000_000,
        max_devices: 1_000,
    }
}

/// A fix as a device sends it: 1e-7 degrees, decimetres of accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wire {
    lat_e7: i32,
    lon_e7: i32,
    time_ms: i64,
    acc_dm: u16,
}

impl Wire {
    fn at(lat: f64, lon: f64, time_ms: i64) -> Self {
        Self {
            lat_e7: (lat * 1e7).round() as i32,
            lon_e7: (lon * 1e7).round() as i32,
            time_ms,
            acc_dm: 50,
        }
    }

    /// The position exactly as the parser decodes it.
    fn point(&self) -> Point {
        Point::new(f64::from(self.lat_e7) * 1e-7, f64::from(self.lon_e7) * 1e-7).unwrap()
    }

    /// The accuracy exactly as the parser decodes it.
    fn accuracy_m(&self) -> f64 {
        f64::from(f32::from(self.acc_dm) * 0.1)
    }
}

/// One decoded output record, reduced to what the tests compare.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Event(String, Transition, i64),
    Ping {
        time_ms: i64,
        fences: BTreeSet<String>,
        heartbeat: bool,
        late: bool,
    },
}

fn decode(records: &[Vec<u8>]) -> Vec<Out> {
    records
        .iter()
        .map(|r| match parse_record(r).unwrap().body() {
            RecordBodyView::FenceEvent(e) => {
                Out::Event(e.fence_id().to_owned(), e.transition(), e.time_ms())
            }
            RecordBodyView::Ping(p) => Out::Ping {
                time_ms: p.time_ms(),
                fences: p
                    .fence_ids()
                    .map(|v| v.iter().map(str::to_owned).collect())
                    .unwrap_or_default(),
                heartbeat: p.heartbeat(),
                late: p.late(),
            },
            RecordBodyView::Punch(_) | RecordBodyView::Hr(_) | RecordBodyView::DayResult(_) => {
                panic!("a ping batch made a punch, HR or day record")
            }
        })
        .collect()
}

fn events(out: &[Out]) -> Vec<(String, Transition)> {
    out.iter()
        .filter_map(|o| match o {
            Out::Event(f, t, _) => Some((f.clone(), *t)),
            Out::Ping { .. } => None,
        })
        .collect()
}

/// Sends `fixes` as one batch at gateway time `now`.
fn send(
    p: &Pipeline,
    s: &Session,
    now: i64,
    fixes: &[Wire],
    scratch: &mut Scratch,
) -> (PingOutcome, Vec<Vec<u8>>) {
    let base = fixes.iter().map(|f| f.time_ms).min().unwrap();
    let msg = PingBatchMsg {
        device_seq: 0,
        base_time_ms: base,
        fixes: fixes
            .iter()
            .map(|f| Fix::new(f.lat_e7, f.lon_e7, (f.time_ms - base) as u32, f.acc_dm, 0))
            .collect(),
    };
    let channel = if fixes.len() > 64 {
        Channel::Backlog
    } else {
        Channel::Datagram
    };
    let mut fbb = FlatBufferBuilder::new();
    let bytes = msg.encode_into(&mut fbb).to_vec();
    let Ok(Request::PingBatch(view)) = parse_frame(&bytes, channel, now, &Limits::default()) else {
        panic!("test batch must parse")
    };
    let mut out: Vec<Vec<u8>> = Vec::new();
    let o = p.pings(now, s, &view, scratch, &mut out);
    (o, out)
}

fn sample_fences() -> Arc<Fences> {
    let text = include_str!("../../config/fences.geojson");
    Arc::new(Fences::new(
        build_index(text, &LoadOptions::default()).unwrap(),
        LoadOptions::default(),
    ))
}

/// The reported drive: into `lujiazui-tower` (a square with a courtyard
/// hole), across several H3 cells inside, standing past three heartbeats,
/// across more cells, then out. Before the fix every forwarded ping inside
/// emitted Enter again (6 Enter + 1 Exit).
#[test]
fn the_lujiazui_tower_drive_emits_one_enter_and_one_exit() {
    let p = Pipeline::new(config(), sample_fences(), T0);
    let s = Session::new("acme", "van-7");
    let mut scratch = Scratch::default();
    let mut path = Vec::new();
    let mut t = T0;
    let mut step = |path: &mut Vec<Wire>, lat: f64, lon: f64, dt: i64| {
        t += dt;
        path.push(Wire::at(lat, lon, t));
    };
    // From the west, outside, into the west wing.
    for i in 0..=10 {
        step(
            &mut path,
            31.2385,
            121.4900 + f64::from(i) * 0.00085,
            10_000,
        );
    }
    // North through the west wing (lon 121.4975–121.4995): several cells.
    for i in 0..=12 {
        step(&mut path, 31.2380 + f64::from(i) * 0.0003, 121.4985, 10_000);
    }
    // Stand still for 16 minutes: three heartbeats.
    for _ in 0..96 {
        step(&mut path, 31.2416, 121.4985, 10_000);
    }
    // East along the north wing, then out to the north.
    for i in 0..=10 {
        step(&mut path, 31.2416, 121.4985 + f64::from(i) * 0.0004, 10_000);
    }
    for i in 1..=6 {
        step(&mut path, 31.2416 + f64::from(i) * 0.0005, 121.5025, 10_000);
    }
    let mut out = Vec::new();
    for w in &path {
        let (_, recs) = send(&p, &s, w.time_ms, &[*w], &mut scratch);
        out.extend(decode(&recs));
    }
    let tower: Vec<_> = events(&out)
        .into_iter()
        .filter(|(f, _)| f == "lujiazui-tower")
        .collect();
    assert_eq!(
        tower,
        [
            ("lujiazui-tower".to_owned(), Transition::Enter),
            ("lujiazui-tower".to_owned(), Transition::Exit)
        ]
    );
    let heartbeats = out
        .iter()
        .filter(|o| {
            matches!(
                o,
                Out::Ping {
                    heartbeat: true,
                    ..
                }
            )
        })
        .count();
    assert!(heartbeats >= 3, "the drive stood past three heartbeats");
    let cells_inside = out
        .iter()
        .filter(|o| matches!(o, Out::Ping { fences, heartbeat: false, .. } if fences.contains("lujiazui-tower")))
        .count();
    // The entry and two cell moves, plus three heartbeats: the six Enter
    // of the report.
    assert!(
        cells_inside >= 3,
        "the drive moved across cells inside: {cells_inside}"
    );
}

/// A device's first fix after the gateway held no state for it reports its
/// starting state as Inside, never as a transition: at first contact, after
/// a restart (a new pipeline) and after the state expired.
#[test]
fn a_first_fix_without_live_state_reports_inside_not_enter() {
    let fences = sample_fences();
    let s = Session::new("acme", "van-8");
    let mut scratch = Scratch::default();
    let inside = Wire::at(31.2385, 121.4985, T0);
    let p = Pipeline::new(config(), fences.clone(), T0);
    let (_, recs) = send(&p, &s, T0, &[inside], &mut scratch);
    assert_eq!(
        events(&decode(&recs)),
        [("lujiazui-tower".to_owned(), Transition::Inside)]
    );
    // Standing on: nothing more.
    let w = Wire::at(31.2385, 121.4985, T0 + MIN);
    assert!(send(&p, &s, w.time_ms, &[w], &mut scratch).1.is_empty());
    // Restart.
    let p = Pipeline::new(config(), fences.clone(), T0 + 2 * MIN);
    let w = Wire::at(31.2385, 121.4985, T0 + 2 * MIN);
    let (_, recs) = send(&p, &s, w.time_ms, &[w], &mut scratch);
    assert_eq!(
        events(&decode(&recs)),
        [("lujiazui-tower".to_owned(), Transition::Inside)]
    );
    // Silent for over two hours: the state expires.
    let later = T0 + 2 * MIN + 2 * HOUR + MIN;
    p.tick(later);
    let w = Wire::at(31.2386, 121.4985, later);
    let (_, recs) = send(&p, &s, later, &[w], &mut scratch);
    assert_eq!(
        events(&decode(&recs)),
        [("lujiazui-tower".to_owned(), Transition::Inside)]
    );
    // First contact outside every fence: no event at all.
    let s2 = Session::new("acme", "van-9");
    let w = Wire::at(31.2300, 121.4900, later);
    let (_, recs) = send(&p, &s2, later, &[w], &mut scratch);
    assert!(events(&decode(&recs)).is_empty());
}

fn circle(id: &str, tenant: &str, lat: f64, lon: f64, r: f64) -> FenceSpec {
    FenceSpec::circle(id, tenant, Point::new(lat, lon).unwrap(), r)
}

/// A fence removed or added while the device stands still is an Exit or
/// an Enter at the next fix, though the device's position is unchanged.
#[test]
fn snapshot_swaps_exit_and_enter_a_standing_device() {
    let spot = (52.52, 13.405);
    let with = |ids: &[&str]| {
        FenceIndex::build(
            FenceSet::from_parts(
                ids.iter()
                    .map(|id| circle(id, "acme", spot.0, spot.1, 100.0)),
            ),
            &IndexOptions::default(),
        )
    };
    let fences = Arc::new(Fences::new(with(&["yard", "gate"]), LoadOptions::default()));
    let p = Pipeline::new(config(), fences.clone(), T0);
    let s = Session::new("acme", "forklift-1");
    let mut scratch = Scratch::default();
    let mut t = T0;
    let mut at = |t: i64| {
        let w = Wire::at(spot.0, spot.1, t);
        events(&decode(&send(&p, &s, t, &[w], &mut scratch).1))
    };
    assert_eq!(at(t).len(), 2, "Inside both");
    fences.store(with(&["yard"]));
    t += 1_000;
    assert_eq!(at(t), [("gate".to_owned(), Transition::Exit)]);
    fences.store(with(&["yard", "dock"]));
    t += 1_000;
    assert_eq!(at(t), [("dock".to_owned(), Transition::Enter)]);
    t += 1_000;
    assert!(at(t).is_empty(), "standing on after the swap");
}

/// A day of 1 Hz history uploaded after the device's live state is newer:
/// every fix is logged, flagged late and located, none emits an event or is
/// suppressed, and the live state is untouched. Before the fix all of them
/// were discarded as stale.
#[test]
fn a_day_of_offline_history_uploads_without_events_or_loss() {
    let fences = sample_fences();
    let p = Pipeline::new(config(), fences, T0);
    let s = Session::new("acme", "truck-3");
    let mut scratch = Scratch::default();
    // hq-north: a 200 m circle at (31.2304, 121.4737). The device is live
    // outside it now.
    let now = T0 + 24 * HOUR + MIN;
    let live = Wire::at(31.2400, 121.4737, now);
    let (o, _) = send(&p, &s, now, &[live], &mut scratch);
    assert_eq!(o.forwarded, 1);
    // Yesterday it drove in and out of hq-north every ten minutes.
    let history: Vec<Wire> = (0..86_400i64)
        .map(|i| {
            let inside = (i / 600) % 2 == 0;
            let lat = if inside { 31.2304 } else { 31.2350 } + (i % 600) as f64 * 1e-7;
            Wire::at(lat, 121.4737, T0 + i * 1_000)
        })
        .collect();
    let mut total = PingOutcome::default();
    let (mut records, mut inside, mut late) = (0usize, 0usize, 0usize);
    for chunk in history.chunks(4_000) {
        let (o, recs) = send(&p, &s, now, chunk, &mut scratch);
        total.forwarded += o.forwarded;
        total.suppressed += o.suppressed;
        total.events += o.events;
        total.late += o.late;
        total.duplicates += o.duplicates;
        records += recs.len();
        for r in decode(&recs) {
            match r {
                Out::Ping {
                    fences, late: l, ..
                } => {
                    late += usize::from(l);
                    inside += usize::from(fences.contains("hq-north"));
                }
                Out::Event(..) => panic!("history emitted an event: {r:?}"),
            }
        }
    }
    assert_eq!(
        (
            total.late,
            total.forwarded,
            total.suppressed,
            total.events,
            total.duplicates
        ),
        (86_400, 0, 0, 0, 0)
    );
    assert_eq!(
        (records, late),
        (86_400, 86_400),
        "every fix logged, flagged late"
    );
    assert_eq!(inside, 43_200, "late fixes are located against fences");
    // The live state did not move: the same live spot is a repeat.
    let w = Wire {
        time_ms: now + 1_000,
        ..live
    };
    let (o, recs) = send(&p, &s, now + 1_000, &[w], &mut scratch);
    assert_eq!((o.suppressed, recs.len()), (1, 0));
    // A resend of the newest fix is a duplicate; a late fix at the same
    // time but elsewhere is history.
    let (o, _) = send(&p, &s, now + 1_000, &[w], &mut scratch);
    assert_eq!((o.duplicates, o.late), (1, 0));
    let moved = Wire {
        lat_e7: w.lat_e7 + 10,
        ..w
    };
    let (o, _) = send(&p, &s, now + 1_000, &[moved], &mut scratch);
    assert_eq!((o.duplicates, o.late), (0, 1));
}

/// Debounce: a change shorter than `dwell_ms` emits nothing; one that
/// persists emits at the first fix at least `dwell_ms` after it began.
#[test]
fn dwell_debounces_jitter_across_an_edge() {
    let spot = (52.52, 13.405);
    let fences = Arc::new(Fences::new(
        FenceIndex::build(
            FenceSet::from_parts([circle("yard", "acme", spot.0, spot.1, 100.0)]),
            &IndexOptions::default(),
        ),
        LoadOptions::default(),
    ));
    let rules = FenceEventRules {
        dwell_ms: 30_000,
        exit_margin_m: None,
    };
    let p = Pipeline::new(config(), fences, T0).with_ping_events(PingEventSettings::new(
        Default::default(),
        [("acme", rules)],
    ));
    let s = Session::new("acme", "pallet-2");
    let mut scratch = Scratch::default();
    let inside = (spot.0, spot.1);
    let outside = (spot.0 + 0.0015, spot.1); // ~167 m north
    let mut send_at = |at: (f64, f64), t: i64| {
        let w = Wire::at(at.0, at.1, T0 + t);
        events(&decode(&send(&p, &s, T0 + t, &[w], &mut scratch).1))
    };
    assert!(send_at(outside, 0).is_empty());
    // In for 20 s, out again: nothing.
    assert!(send_at(inside, 10_000).is_empty());
    assert!(send_at(inside, 29_999).is_empty());
    assert!(send_at(outside, 30_000).is_empty());
    // In for good: Enter once it has lasted 30 s.
    assert!(send_at(inside, 40_000).is_empty());
    assert!(send_at(inside, 69_999).is_empty());
    assert_eq!(
        send_at(inside, 70_000),
        [("yard".to_owned(), Transition::Enter)]
    );
    assert!(send_at(inside, 80_000).is_empty());
}

/// Exit margin: a fix just outside the edge, or far outside with a poor
/// accuracy, does not count as leaving; a clear one does.
#[test]
fn exit_margin_holds_a_device_near_the_edge() {
    let spot = (52.52, 13.405);
    let fences = Arc::new(Fences::new(
        FenceIndex::build(
            FenceSet::from_parts([circle("yard", "acme", spot.0, spot.1, 100.0)]),
            &IndexOptions::default(),
        ),
        LoadOptions::default(),
    ));
    let rules = FenceEventRules {
        dwell_ms: 0,
        exit_margin_m: Some(20.0),
    };
    let p = Pipeline::new(config(), fences, T0).with_ping_events(PingEventSettings::new(rules, []));
    let s = Session::new("acme", "pallet-3");
    let mut scratch = Scratch::default();
    // 1e-5 degree of latitude is about 1.11 m.
    let north = |m: f64| (spot.0 + m / 111_195.0, spot.1);
    let mut send_at = |at: (f64, f64), acc_dm: u16, t: i64| {
        let w = Wire {
            acc_dm,
            ..Wire::at(at.0, at.1, T0 + t)
        };
        events(&decode(&send(&p, &s, T0 + t, &[w], &mut scratch).1))
    };
    assert_eq!(
        send_at(spot, 50, 0),
        [("yard".to_owned(), Transition::Inside)]
    );
    // 10 m outside, 5 m accuracy: 5 m, not over the 20 m margin.
    assert!(send_at(north(110.0), 50, 1_000).is_empty());
    // 60 m outside but 50 m accuracy: 10 m.
    assert!(send_at(north(160.0), 500, 2_000).is_empty());
    // 60 m outside, 5 m accuracy: 55 m, an exit.
    assert_eq!(
        send_at(north(160.0), 50, 3_000),
        [("yard".to_owned(), Transition::Exit)]
    );
    // Entering is plain containment.
    assert_eq!(
        send_at(north(99.0), 50, 4_000),
        [("yard".to_owned(), Transition::Enter)]
    );
}

// ---------------------------------------------------------------------------
// The differential oracle.

/// Origin of the synthetic fence area.
const BASE: (f64, f64) = (31.2000, 121.5000);

fn poly(id: &str, lat: f64, lon: f64, half: f64, hole: f64) -> FenceSpec {
    let ring = |h: f64| {
        vec![
            [lon - h, lat - h],
            [lon + h, lat - h],
            [lon + h, lat + h],
            [lon - h, lat + h],
            [lon - h, lat - h],
        ]
    };
    FenceSpec::polygons(id, "acme", vec![vec![ring(half), ring(hole)]])
}

/// Fence snapshot variants the paths swap between: overlapping circles, a
/// polygon with a hole, a fence redrawn under the same id, a fence removed,
/// one added, and every acme fence gone. A globex fence covers the whole
/// area and must never reach an acme device.
fn variant(k: u8) -> FenceIndex {
    let (la, lo) = BASE;
    let globex = circle("g-zone", "globex", la, lo, 2_000.0);
    let specs = match k {
        0 => vec![
            circle("a-circle", "acme", la, lo, 150.0),
            circle("b-circle", "acme", la, lo + 0.0015, 120.0),
            poly("c-poly", la + 0.001, lo, 0.0008, 0.0002),
            globex,
        ],
        1 => vec![
            circle("a-circle", "acme", la, lo, 250.0),
            poly("c-poly", la + 0.001, lo, 0.0008, 0.0002),
            circle("d-circle", "acme", la - 0.001, lo + 0.001, 100.0),
            globex,
        ],
        _ => vec![globex],
    };
    FenceIndex::build(FenceSet::from_parts(specs), &IndexOptions::default())
}

/// Points near the fences' edges and centres, for paths to jump between.
const SPOTS: [(f64, f64); 8] = [
    (0.0, 0.0),
    (0.00135, 0.0),
    (0.0, 0.0015),
    (0.0, 0.00265),
    (0.001, 0.0),
    (0.0018, 0.0),
    (-0.001, 0.001),
    (-0.002, -0.002),
];

#[derive(Debug, Clone)]
enum Op {
    /// A live fix: move by a jitter step after `dt_ms`.
    Step {
        dlat: i32,
        dlon: i32,
        dt_ms: i64,
        acc_dm: u16,
    },
    /// A live fix at a spot near a fence edge.
    Jump {
        spot: usize,
        dt_ms: i64,
        acc_dm: u16,
    },
    /// A fix `back_ms` at or before the newest, somewhere else.
    Late { back_ms: i64, spot: usize },
    /// The newest fix resent.
    Duplicate,
    /// A fence snapshot swap.
    Swap(u8),
    /// A gateway restart: a new pipeline, no device state.
    Restart,
    /// Over two hours of silence: the device state expires.
    Pause,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (-3_000i32..3_000, -3_000i32..3_000, 1_000i64..400_000, 0u16..400).prop_map(
            |(dlat, dlon, dt_ms, acc_dm)| Op::Step { dlat, dlon, dt_ms, acc_dm }
        ),
        4 => (0..SPOTS.len(), 1_000i64..120_000, 0u16..400)
            .prop_map(|(spot, dt_ms, acc_dm)| Op::Jump { spot, dt_ms, acc_dm }),
        2 => (0i64..600_000, 0..SPOTS.len()).prop_map(|(back_ms, spot)| Op::Late { back_ms, spot }),
        1 => Just(Op::Duplicate),
        1 => (0u8..3).prop_map(Op::Swap),
        1 => Just(Op::Restart),
        1 => Just(Op::Pause),
    ]
}

fn rules() -> impl Strategy<Value = FenceEventRules> {
    (
        prop_oneof![Just(0i64), Just(20_000), Just(120_000)],
        prop_oneof![Just(None), Just(Some(0.0)), Just(Some(15.0))],
    )
        .prop_map(|(dwell_ms, exit_margin_m)| FenceEventRules {
            dwell_ms,
            exit_margin_m,
        })
}

/// The model of one device's live state.
#[derive(Debug, Clone)]
struct Live {
    members: BTreeSet<String>,
    /// Change first seen at (fix time) for fences not yet emitted.
    pending: BTreeMap<String, i64>,
    newest: Wire,
}

/// Fences of acme containing `p`, by brute force over every fence.
fn containing(index: &FenceIndex, p: Point) -> BTreeSet<String> {
    index
        .fences()
        .iter()
        .filter(|f| f.tenant_name() == "acme" && f.contains(p))
        .map(|f| f.id().to_owned())
        .collect()
}

/// What the model expects a live fix `w` to emit, updating `live`.
fn model_live(
    live: &mut Option<Live>,
    index: &FenceIndex,
    rules: FenceEventRules,
    w: Wire,
) -> Vec<(String, Transition)> {
    let now_in = containing(index, w.point());
    let Some(st) = live else {
        *live = Some(Live {
            members: now_in.clone(),
            pending: BTreeMap::new(),
            newest: w,
        });
        return now_in
            .into_iter()
            .map(|f| (f, Transition::Inside))
            .collect();
    };
    st.newest = w;
    let exit_counts = |id: &str| match rules.exit_margin_m {
        None => true,
        Some(margin) => index
            .fences()
            .iter()
            .find(|f| f.tenant_name() == "acme" && f.id() == id)
            .is_none_or(|f| f.distance_m(w.point()) - w.accuracy_m() > margin),
    };
    let exits: Vec<String> = st
        .members
        .difference(&now_in)
        .filter(|f| exit_counts(f))
        .cloned()
        .collect();
    let enters: Vec<String> = now_in.difference(&st.members).cloned().collect();
    let mut pending = BTreeMap::new();
    let mut out = Vec::new();
    for (list, t) in [(exits, Transition::Exit), (enters, Transition::Enter)] {
        for f in list {
            let since = st.pending.get(&f).copied().unwrap_or(w.time_ms);
            if w.time_ms - since >= rules.dwell_ms {
                out.push((f, t));
            } else {
                pending.insert(f, since);
            }
        }
    }
    for (f, t) in &out {
        if *t == Transition::Exit {
            st.members.remove(f);
        } else {
            st.members.insert(f.clone());
        }
    }
    st.pending = pending;
    out
}

fn run_path(ops: &[Op], rules: FenceEventRules, as_override: bool) -> Result<(), TestCaseError> {
    let fences = Arc::new(Fences::new(variant(0), LoadOptions::default()));
    let mut index = variant(0);
    // The rules apply to acme either node-wide or as its override (with a
    // different globex override, so a lookup by the wrong tenant shows).
    let settings = || {
        let other = FenceEventRules {
            dwell_ms: 7_000,
            exit_margin_m: Some(1.0),
        };
        if as_override {
            PingEventSettings::new(Default::default(), [("acme", rules), ("globex", other)])
        } else {
            PingEventSettings::new(rules, [("globex", other)])
        }
    };
    let mut clock = T0;
    let mut p = Pipeline::new(config(), fences.clone(), clock).with_ping_events(settings());
    let s = Session::new("acme", "dev-1");
    let mut scratch = Scratch::default();
    let mut live: Option<Live> = None;
    let (mut lat, mut lon) = ((BASE.0 * 1e7) as i32, (BASE.1 * 1e7) as i32);
    let mut last_forward = i64::MIN;
    for (i, op) in ops.iter().enumerate() {
        let mut fix = |dt: i64, la: i32, lo: i32, acc_dm: u16| {
            clock += dt;
            Wire {
                lat_e7: la,
                lon_e7: lo,
                time_ms: clock,
                acc_dm,
            }
        };
        let w = match *op {
            Op::Step {
                dlat,
                dlon,
                dt_ms,
                acc_dm,
            } => {
                let box_e7 = 30_000;
                lat = (lat + dlat).clamp(
                    (BASE.0 * 1e7) as i32 - box_e7,
                    (BASE.0 * 1e7) as i32 + box_e7,
                );
                lon = (lon + dlon).clamp(
                    (BASE.1 * 1e7) as i32 - box_e7,
                    (BASE.1 * 1e7) as i32 + box_e7,
                );
                fix(dt_ms, lat, lon, acc_dm)
            }
            Op::Jump {
                spot,
                dt_ms,
                acc_dm,
            } => {
                lat = ((BASE.0 + SPOTS[spot].0) * 1e7).round() as i32;
                lon = ((BASE.1 + SPOTS[spot].1) * 1e7).round() as i32;
                fix(dt_ms, lat, lon, acc_dm)
            }
            Op::Late { back_ms, spot } => {
                let Some(st) = &live else { continue };
                let w = Wire {
                    time_ms: st.newest.time_ms - back_ms,
                    ..Wire::at(BASE.0 + SPOTS[spot].0, BASE.1 + SPOTS[spot].1, 0)
                };
                // The pipeline drops only a copy of the newest fix: same
                // time and position (accuracy is not compared).
                let dup = w.time_ms == st.newest.time_ms
                    && (w.lat_e7, w.lon_e7) == (st.newest.lat_e7, st.newest.lon_e7);
                let (o, recs) = send(&p, &s, clock, &[w], &mut scratch);
                let out = decode(&recs);
                if dup {
                    prop_assert_eq!((o.duplicates, out.len()), (1, 0), "op {}", i);
                } else {
                    prop_assert_eq!((o.late, o.events), (1, 0), "op {}", i);
                    prop_assert_eq!(
                        &out,
                        &vec![Out::Ping {
                            time_ms: w.time_ms,
                            fences: containing(&index, w.point()),
                            heartbeat: false,
                            late: true,
                        }],
                        "op {}: a late fix is logged, located, and nothing else",
                        i
                    );
                }
                continue;
            }
            Op::Duplicate => {
                let Some(st) = &live else { continue };
                let (o, recs) = send(&p, &s, clock, &[st.newest], &mut scratch);
                prop_assert_eq!((o.duplicates, recs.len()), (1, 0), "op {}", i);
                continue;
            }
            Op::Swap(k) => {
                fences.store(variant(k));
                index = variant(k);
                continue;
            }
            Op::Restart => {
                p = Pipeline::new(config(), fences.clone(), clock).with_ping_events(settings());
                live = None;
                continue;
            }
            Op::Pause => {
                clock += 2 * HOUR + MIN;
                p.tick(clock);
                live = None;
                continue;
            }
        };
        p.tick(clock);
        let fresh = live.is_none();
        let want = model_live(&mut live, &index, rules, w);
        let (o, recs) = send(&p, &s, clock, &[w], &mut scratch);
        let out = decode(&recs);
        prop_assert_eq!(events(&out), want.clone(), "op {}: {:?}", i, op);
        prop_assert_eq!(o.events as usize, want.len());
        // Whatever is forwarded is the located ping, after its events; a
        // fix with events is always forwarded, and the heartbeat holds.
        let pings: Vec<&Out> = out
            .iter()
            .filter(|o| matches!(o, Out::Ping { .. }))
            .collect();
        if !want.is_empty() || fresh || w.time_ms - last_forward >= 300_000 {
            prop_assert_eq!(pings.len(), 1, "op {}: must be forwarded", i);
        }
        if let Some(Out::Ping {
            fences: f, late, ..
        }) = pings.first()
        {
            prop_assert!(!late);
            prop_assert_eq!(f, &containing(&index, w.point()));
            let ping_last = matches!(out.last(), Some(Out::Ping { .. }));
            prop_assert!(ping_last, "op {}: events come before the ping", i);
            last_forward = w.time_ms;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Without debounce: events are exactly the set difference of
    /// membership before and after each live fix.
    #[test]
    fn events_match_the_set_difference_model(ops in prop::collection::vec(op(), 1..120)) {
        run_path(&ops, FenceEventRules::default(), false)?;
    }

    /// With dwell and exit margin (node-wide or as the tenant's override).
    #[test]
    fn events_match_the_model_with_debounce(
        ops in prop::collection::vec(op(), 1..120),
        rules in rules(),
        as_override in any::<bool>(),
    ) {
        run_path(&ops, rules, as_override)?;
    }
}
