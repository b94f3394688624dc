//! The batched ping path (`Pipeline::pings`: one device lock per batch,
//! lookups batched before it, H3 and lookups skipped when a cell box or a
//! uniform grid cell proves them unchanged) against the per-fix path it
//! replaced (`Pipeline::pings_per_fix`), differentially: the same batches
//! into two pipelines over the same fence snapshots must give the same
//! outcomes and the same records, field by field.
//!
//! The only allowed difference is the order of a ping record's fence ids
//! (the per-fix path reused a list in whatever order it was first found;
//! the set is the same, and the contract promises no order), so fence ids
//! are compared as sets.

use std::collections::BTreeSet;
use std::sync::Arc;

use fencegate::fences::Fences;
use fencegate::pipeline::{
    FenceEventRules, PingEventSettings, PingOutcome, Pipeline, PipelineConfig, Scratch, Session,
};
use fencegate_schema::{
    Channel, Fix, Limits, PingBatchMsg, RecordBodyView, Request, parse_frame, parse_record,
};
use fencegate_spatial::{FenceIndex, FenceSet, FenceSpec, IndexOptions, LoadOptions, Point};
use flatbuffers::FlatBufferBuilder;
use proptest::prelude::*;

const T0: i64 = 1_790_000_000_000;
const BASE: (f64, f64) = (31.23, 121.47);

fn config(resolution: u8, heartbeat_ms: i64) -> PipelineConfig {
    PipelineConfig {
        node: "n".into(),
        repeat_window_ms: 300_000,
        idempotency_horizon_ms: 86_400_000,
        heartbeat_ms,
        cell_resolution: h3o::Resolution::try_from(resolution).unwrap(),
        max_punch_keys: 1_000,
        max_employees: 1_000,
        max_devices: 1_000,
    }
}

fn circle(id: &str, tenant: &str, dlat: f64, dlon: f64, r: f64) -> FenceSpec {
    let p = Point::new(BASE.0 + dlat, BASE.1 + dlon).unwrap();
    FenceSpec::circle(id.to_owned(), tenant.to_owned(), p, r)
}

fn square(id: &str, dlat: f64, dlon: f64, half: f64) -> FenceSpec {
    let (la, lo) = (BASE.0 + dlat, BASE.1 + dlon);
    let ring = vec![
        [lo - half, la - half],
        [lo + half, la - half],
        [lo + half, la + half],
        [lo - half, la + half],
        [lo - half, la - half],
    ];
    FenceSpec::polygons(id.to_owned(), "acme".to_owned(), vec![vec![ring]])
}

/// Snapshots to swap between. Variant 0 has a 4 km circle (grid cells it
/// covers whole are uniform, with one fence), small fences inside it
/// (partial cells) and open ground (uniform, empty); variant 1 redraws
/// some; variant 2 builds with a tiny cell budget so the big fences go to
/// the oversize R-tree (no cell of acme is uniform); variant 3 has no acme
/// fence at all.
fn variant(k: u8) -> FenceIndex {
    let globex = circle("g-zone", "globex", 0.0, 0.0, 9_000.0);
    let specs = match k {
        0 | 2 => vec![
            circle("big", "acme", 0.0, 0.0, 4_000.0),
            circle("a", "acme", 0.004, 0.004, 300.0),
            square("sq", -0.01, 0.0, 0.004),
            circle("far", "acme", 0.06, 0.06, 2_500.0),
            globex,
        ],
        1 => vec![
            circle("big", "acme", 0.001, 0.0, 3_500.0),
            circle("a", "acme", 0.004, 0.004, 600.0),
            circle("b", "acme", -0.02, 0.02, 900.0),
            globex,
        ],
        _ => vec![globex],
    };
    let opts = IndexOptions {
        max_cells_per_fence: if k == 2 { 4 } else { 16_384 },
        ..IndexOptions::default()
    };
    FenceIndex::build(FenceSet::from_parts(specs), &opts)
}

#[derive(Debug, Clone)]
enum Op {
    /// A live fix of `device`, `dt_ms` after its newest, moved by
    /// (dlat, dlon) in 1e-7 degrees (0: the same position).
    Step {
        device: usize,
        dlat: i32,
        dlon: i32,
        dt_ms: i64,
    },
    /// A fix `back_ms` at or before the device's newest, somewhere else.
    Late {
        device: usize,
        back_ms: i64,
        dlat: i32,
    },
    /// The device's newest fix again.
    Duplicate { device: usize },
    /// End the batches being built: send them.
    Flush,
    /// A fence snapshot swap.
    Swap(u8),
}

fn step() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => Just(0),
        4 => -300i32..300,          // a few metres of GPS jitter
        4 => -3_000i32..3_000,      // walking or driving
        1 => -800_000i32..800_000,  // a jump of up to ~9 km
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..2usize, step(), step(), prop_oneof![Just(1_000i64), 1i64..200_000]).prop_map(
            |(device, dlat, dlon, dt_ms)| Op::Step { device, dlat, dlon, dt_ms }
        ),
        2 => (0..2usize, 0i64..300_000, step()).prop_map(|(device, back_ms, dlat)| Op::Late {
            device,
            back_ms,
            dlat
        }),
        1 => (0..2usize).prop_map(|device| Op::Duplicate { device }),
        3 => Just(Op::Flush),
        1 => (0u8..4).prop_map(Op::Swap),
    ]
}

fn rules() -> impl Strategy<Value = FenceEventRules> {
    (
        prop_oneof![Just(0i64), Just(20_000)],
        prop_oneof![Just(None), Just(Some(10.0))],
    )
        .prop_map(|(dwell_ms, exit_margin_m)| FenceEventRules {
            dwell_ms,
            exit_margin_m,
        })
}

/// A decoded record, every field, fence ids as a set.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Event {
        id: [u8; 16],
        fence: String,
        transition: u8,
        time_ms: i64,
    },
    Ping {
        id: [u8; 16],
        time_ms: i64,
        lat: f64,
        lon: f64,
        h3_cell: u64,
        fences: BTreeSet<String>,
        heartbeat: bool,
        late: bool,
    },
}

fn decode(records: &[Vec<u8>]) -> Vec<Out> {
    records
        .iter()
        .map(|r| {
            let rec = parse_record(r).unwrap();
            let id = rec.record_id();
            match rec.body() {
                RecordBodyView::FenceEvent(e) => Out::Event {
                    id,
                    fence: e.fence_id().to_owned(),
                    transition: e.transition().0,
                    time_ms: e.time_ms(),
                },
                RecordBodyView::Ping(p) => Out::Ping {
                    id,
                    time_ms: p.time_ms(),
                    lat: p.lat(),
                    lon: p.lon(),
                    h3_cell: p.h3_cell(),
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
            }
        })
        .collect()
}

type Wire = (i32, i32, i64);

/// Sends `fixes` as one batch to both paths; returns both answers.
fn send(
    new: &Pipeline,
    old: &Pipeline,
    s: &Session,
    fixes: &[Wire],
    scratch: &mut (Scratch, Scratch),
) -> ((PingOutcome, Vec<Out>), (PingOutcome, Vec<Out>)) {
    let base = fixes.iter().map(|f| f.2).min().unwrap();
    let now = fixes.iter().map(|f| f.2).max().unwrap() + 1_000;
    let msg = PingBatchMsg {
        device_seq: 0,
        base_time_ms: base,
        fixes: fixes
            .iter()
            .map(|f| Fix::new(f.0, f.1, (f.2 - base) as u32, 50, 0))
            .collect(),
    };
    let mut fbb = FlatBufferBuilder::new();
    let bytes = msg.encode_into(&mut fbb).to_vec();
    let Ok(Request::PingBatch(view)) =
        parse_frame(&bytes, Channel::Backlog, now, &Limits::default())
    else {
        panic!("test batch must parse")
    };
    let (mut a, mut b): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    let oa = new.pings(now, s, &view, &mut scratch.0, &mut a);
    let ob = old.pings_per_fix(now, s, &view, &mut scratch.1, &mut b);
    ((oa, decode(&a)), (ob, decode(&b)))
}

fn run(
    ops: &[Op],
    res: u8,
    heartbeat_ms: i64,
    rules: FenceEventRules,
) -> Result<u64, TestCaseError> {
    let fences = Arc::new(Fences::new(variant(0), LoadOptions::default()));
    let settings = PingEventSettings::new(rules, []);
    let cfg = config(res, heartbeat_ms);
    let new = Pipeline::new(cfg.clone(), fences.clone(), T0).with_ping_events(settings.clone());
    let old = Pipeline::new(cfg, fences.clone(), T0).with_ping_events(settings);
    let sessions = [Session::new("acme", "van-1"), Session::new("acme", "van-2")];
    let lat0 = (BASE.0 * 1e7) as i32;
    let lon0 = (BASE.1 * 1e7) as i32;
    // Devices start at spots inside the big circle and on open ground.
    let mut newest: [Wire; 2] = [(lat0 + 1_000, lon0, T0), (lat0 + 450_000, lon0, T0)];
    let mut pending: [Vec<Wire>; 2] = [Vec::new(), Vec::new()];
    let mut scratch = (Scratch::default(), Scratch::default());
    let mut records = 0u64;
    let flush = |pending: &mut [Vec<Wire>; 2],
                 scratch: &mut (Scratch, Scratch),
                 records: &mut u64|
     -> Result<(), TestCaseError> {
        for (d, fixes) in pending.iter_mut().enumerate() {
            if fixes.is_empty() {
                continue;
            }
            let (a, b) = send(&new, &old, &sessions[d], fixes, scratch);
            prop_assert_eq!(&a, &b, "batch {:?}", fixes);
            *records += a.1.len() as u64;
            fixes.clear();
        }
        Ok(())
    };
    for op in ops {
        match *op {
            Op::Step {
                device,
                dlat,
                dlon,
                dt_ms,
            } => {
                let (la, lo, t) = newest[device];
                let w = (la + dlat, lo + dlon, t + dt_ms);
                newest[device] = w;
                pending[device].push(w);
            }
            Op::Late {
                device,
                back_ms,
                dlat,
            } => {
                let (la, lo, t) = newest[device];
                pending[device].push((la + dlat, lo, (t - back_ms).max(T0)));
            }
            Op::Duplicate { device } => pending[device].push(newest[device]),
            Op::Flush => flush(&mut pending, &mut scratch, &mut records)?,
            Op::Swap(k) => {
                flush(&mut pending, &mut scratch, &mut records)?;
                fences.store(variant(k));
            }
        }
        for p in &mut pending {
            if p.len() == 64 {
                let mut one = [std::mem::take(p), Vec::new()];
                flush(&mut one, &mut scratch, &mut records)?;
            }
        }
    }
    flush(&mut pending, &mut scratch, &mut records)?;
    Ok(records)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn batched_pings_equal_the_per_fix_path(
        ops in prop::collection::vec(op(), 1..200),
        res in prop_oneof![Just(7u8), Just(9), Just(11), Just(13)],
        heartbeat_ms in prop_oneof![Just(60_000i64), Just(300_000)],
        rules in rules(),
    ) {
        run(&ops, res, heartbeat_ms, rules)?;
    }
}

/// A long drive in small steps through full, partial and empty grid
/// cells, in full batches: the case the skips are for, pinned so it runs
/// even when the generator draws few long paths.
#[test]
fn a_long_drive_in_full_batches_equals_the_per_fix_path() {
    let mut ops = Vec::new();
    for k in 0..2_000 {
        // ~15 m a second eastward, with a little northward drift and jitter.
        ops.push(Op::Step {
            device: 0,
            dlat: if k % 7 == 0 { 40 } else { -3 },
            dlon: 1_600,
            dt_ms: 1_000,
        });
        ops.push(Op::Step {
            device: 1,
            dlat: if k % 3 == 0 { 5 } else { -5 },
            dlon: if k % 2 == 0 { 8 } else { -8 },
            dt_ms: 1_000,
        });
        if k == 900 {
            ops.push(Op::Swap(1));
        }
    }
    for res in [9, 12] {
        let n = run(&ops, res, 300_000, FenceEventRules::default()).unwrap();
        assert!(n > 10, "the drive forwarded {n} records");
    }
}

/// The ping-suppression memory is best effort: when `max_devices` is
/// reached, a new device makes room by forgetting one not seen since the
/// last rotation, and is tracked (its Inside event, then suppression)
/// instead of forwarded untracked. Red without the eviction: the third
/// device is untracked.
#[test]
fn a_full_device_memory_forgets_a_stale_device_instead_of_tracking_none() {
    let fences = Arc::new(Fences::new(variant(0), LoadOptions::default()));
    let cfg = PipelineConfig {
        max_devices: 2,
        ..config(9, 300_000)
    };
    let p = Pipeline::new(cfg, fences, T0);
    let inside = ((BASE.0 * 1e7) as i32 + 1_000, (BASE.1 * 1e7) as i32);
    let mut scratch = Scratch::default();
    let mut one = |s: &Session, t: i64| {
        let msg = PingBatchMsg {
            device_seq: 0,
            base_time_ms: t,
            fixes: vec![Fix::new(inside.0, inside.1, 0, 50, 0)],
        };
        let mut fbb = FlatBufferBuilder::new();
        let bytes = msg.encode_into(&mut fbb).to_vec();
        let Ok(Request::PingBatch(view)) =
            parse_frame(&bytes, Channel::Datagram, t, &Limits::default())
        else {
            panic!("test batch must parse")
        };
        let mut out: Vec<Vec<u8>> = Vec::new();
        p.pings(t, s, &view, &mut scratch, &mut out)
    };
    let (a, b, c) = (
        Session::new("acme", "stale"),
        Session::new("acme", "fresh"),
        Session::new("acme", "new"),
    );
    assert_eq!(one(&a, T0).events, 1);
    // An hour on (the device memory's window), `stale` is in the previous
    // generation; `fresh` is seen now.
    let later = T0 + 3_600_000;
    p.tick(later);
    assert_eq!(one(&b, later).events, 1);
    let o = one(&c, later + 1_000);
    assert_eq!(o.untracked, 0, "{o:?}");
    assert_eq!(o.events, 1, "the new device's starting state");
    // `fresh` kept its state: its next fix is suppressed, no new Inside.
    let o = one(&b, later + 2_000);
    assert_eq!((o.suppressed, o.events), (1, 0), "{o:?}");
    assert_eq!(p.dedup_sizes().1, 2);
}

/// A parked device whose spot is in its H3 cell but outside the cell's
/// box (the state keeps only the box) pays one H3 conversion per batch:
/// the first fix outside the box converts and builds the cell's full
/// shape, which then holds the batch's other fixes. Red when a batch that
/// starts from the state's box never builds the shape: every fix converts
/// (64 a batch).
#[test]
fn a_device_lingering_outside_its_cell_box_converts_once_per_batch() {
    use fencegate_spatial::{CellBox, CellIndex, CellShape, Resolution};
    let fences = Arc::new(Fences::new(variant(0), LoadOptions::default()));
    let p = Pipeline::new(config(9, 300_000), fences, T0);
    // Nine tenths of the way from the cell's centre to a vertex: in the
    // cell and its shape, outside its box.
    let cell: CellIndex =
        fencegate_spatial::cell_of(Point::new(BASE.0 + 0.02, BASE.1).unwrap(), Resolution::Nine);
    let centre = h3o::LatLng::from(cell);
    let vertex = cell.boundary()[0];
    let spot = (
        centre.lat() + 0.9 * (vertex.lat() - centre.lat()),
        centre.lng() + 0.9 * (vertex.lng() - centre.lng()),
    );
    let cell_box = CellBox::of(cell);
    assert!(
        !cell_box.contains(spot.0, spot.1),
        "the spot must be outside the box"
    );
    assert!(CellShape::of(cell).contains(spot.0, spot.1));
    let session = Session::new("acme", "parked");
    let mut scratch = Scratch::default();
    let mut fbb = FlatBufferBuilder::new();
    let mut per_batch = Vec::new();
    for b in 0..5i64 {
        let base = T0 + b * 64_000;
        // Up to ±30 cm of jitter (1e-7° is about 1 cm): every fix moves.
        let fixes = (0..64)
            .map(|i| {
                let j = ((i * 7 + b as i32) % 61) - 30;
                let lat = (spot.0 * 1e7).round() as i32 + j;
                let lon = (spot.1 * 1e7).round() as i32 - j;
                Fix::new(lat, lon, i as u32 * 1_000, 50, 0)
            })
            .collect();
        let msg = PingBatchMsg {
            device_seq: b as u64,
            base_time_ms: base,
            fixes,
        };
        let bytes = msg.encode_into(&mut fbb).to_vec();
        let now = base + 64_000;
        let Ok(Request::PingBatch(view)) =
            parse_frame(&bytes, Channel::Datagram, now, &Limits::default())
        else {
            panic!("test batch must parse")
        };
        let before = scratch.h3_conversions();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let o = p.pings(now, &session, &view, &mut scratch, &mut out);
        assert_eq!(o.untracked, 0, "{o:?}");
        per_batch.push(scratch.h3_conversions() - before);
    }
    // The first batch converts its first fix and then its second (the
    // device is fresh, so no cell is known to linger in before it).
    assert!(per_batch[0] <= 2, "first batch: {per_batch:?}");
    assert!(
        per_batch[1..].iter().all(|&n| n == 1),
        "each later batch should convert its first fix only: {per_batch:?}"
    );
}
