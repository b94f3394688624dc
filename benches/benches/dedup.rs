//! Dedup window memory and cost: bytes per remembered punch key and per
//! tracked device (growth of resident memory, so allocator overhead counts), and
//! the cost of a `WindowMap` insert and lookup at a million keys, and the
//! anti-cheat memory's cost per punch: the `WindowMap` it was (refusing
//! when full) against the `LruMap` it is (evicting), in the same run.
//!
//! `cargo bench -p fencegate-benches --bench dedup` prints the memory report
//! first, then runs the criterion benches.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group};
use fencegate::dedup::{LruMap, WindowMap};
use fencegate::fences::Fences;
use fencegate::pipeline::{Pipeline, PipelineConfig, PunchDecision, Scratch, Session};
use fencegate::rules::state::{EmployeeState, Mark};
use fencegate_schema::{
    Channel, Fix, Limits, PingBatchMsg, Position, PunchKind, PunchMethod, PunchMsg, Request,
    TerminalAuth, parse_frame,
};
use fencegate_spatial::{FenceIndex, FenceSet, FenceSpec, IndexOptions, LoadOptions, Point};
use flatbuffers::FlatBufferBuilder;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resident memory of this process, bytes (Linux `/proc/self/statm`).
fn rss() -> isize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: isize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

const T0: i64 = 1_790_000_000_000;
const HQ: (f64, f64) = (31.2304, 121.4737);

fn pipeline() -> Pipeline {
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
        node: "bench".into(),
        repeat_window_ms: 300_000,
        idempotency_horizon_ms: 86_400_000,
        heartbeat_ms: 300_000,
        cell_resolution: h3o::Resolution::Nine,
        max_punch_keys: 10_000_000,
        max_employees: 1_000_000,
        max_devices: 10_000_000,
    };
    Pipeline::new(cfg, fences, T0)
}

fn memory_report() {
    const N: usize = 200_000;
    let p = pipeline();
    let s = Session::new("acme", "terminal");
    let mut fbb = FlatBufferBuilder::new();
    let mut scratch = Scratch::default();
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            PunchMsg {
                punch_id: (i as u128 + 1).to_be_bytes(),
                employee_id: format!("employee-{i:08}"),
                kind: PunchKind::In,
                method: PunchMethod::Gps,
                device_time_ms: T0,
                position: Some(Position::new(HQ.0, HQ.1, 5.0)),
                bssids: vec![],
                ssid: None,
                qr_payload: None,
                terminal_auth: TerminalAuth::None,
                offline: false,
                mock_location: false,
            }
            .encode_into(&mut fbb)
            .to_vec()
        })
        .collect();
    let before = rss();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for d in 0..N {
        let s = Session::new("acme", &format!("truck-{d:08}"));
        let msg = PingBatchMsg {
            device_seq: 0,
            base_time_ms: T0,
            fixes: vec![Fix::new(
                (HQ.0 * 1e7) as i32 + d as i32,
                (HQ.1 * 1e7) as i32,
                0,
                50,
                0,
            )],
        };
        let bytes = msg.encode_into(&mut fbb).to_vec();
        let Ok(Request::PingBatch(v)) =
            parse_frame(&bytes, Channel::Datagram, T0, &Limits::default())
        else {
            unreachable!()
        };
        p.pings(T0, &s, &v, &mut scratch, &mut out);
        out.clear();
    }
    let bytes = rss() - before;
    let (_, devices) = p.dedup_sizes();
    println!(
        "device memory: {devices} devices -> {:.1} MiB, {:.0} bytes/device (fence ids shared, not copied)",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / devices as f64
    );
    let before = rss();
    for f in &frames {
        let Ok(Request::Punch(v)) = parse_frame(f, Channel::Stream, T0, &Limits::default()) else {
            unreachable!()
        };
        if let PunchDecision::Record { ack, pending, .. } = p.punch(T0, &s, &v, &mut scratch) {
            p.settle(
                &pending,
                fencegate::pipeline::Settled::Committed(ack.verdict),
            );
        }
    }
    let bytes = rss() - before;
    let (keys, _) = p.dedup_sizes();
    println!(
        "dedup memory: {N} accepted punches -> {keys} keys (id + repeat key each), {:.1} MiB, {:.0} bytes/key, {:.0} bytes/punch",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / keys as f64,
        bytes as f64 / N as f64
    );
}

/// Resident memory per remembered employee in the anti-cheat memory: the
/// `LruMap` it is (state, key, LRU links, hash index) and the `WindowMap`
/// it was, 200k employees each. Runs first, and keeps both maps alive, so
/// neither reuses memory another part of the report freed.
fn employee_memory_report() {
    const N: u64 = 200_000;
    let mark = Mark {
        at_ms: T0,
        record_id: [1; 16],
    };
    let before = rss();
    let lru: LruMap<(u64, u64), EmployeeState> = LruMap::new(86_400_000, 1_000_000);
    for k in 0..N {
        lru.with((7, k), T0, |s| {
            s.get_or_insert_with(Default::default).last_in = Some(mark)
        });
    }
    let lru_bytes = rss() - before;
    let before = rss();
    let window: WindowMap<(u64, u64), EmployeeState> = WindowMap::new(86_400_000, 1_000_000, T0);
    for k in 0..N {
        window
            .with((7, k), |s| {
                s.get_or_insert_with(Default::default).last_in = Some(mark)
            })
            .unwrap();
    }
    let window_bytes = rss() - before;
    println!(
        "employee memory: {N} employees -> LruMap {:.1} MiB, {:.0} bytes/employee; WindowMap (before) {:.1} MiB, {:.0} bytes/employee (EmployeeState is {} bytes)",
        lru_bytes as f64 / (1 << 20) as f64,
        lru_bytes as f64 / N as f64,
        window_bytes as f64 / (1 << 20) as f64,
        window_bytes as f64 / N as f64,
        std::mem::size_of::<EmployeeState>()
    );
    black_box((lru.len(), window.len()));
}

fn bench_window(c: &mut Criterion) {
    const KEYS: u64 = 1_000_000;
    let m: WindowMap<(u64, u128), [u8; 64]> = WindowMap::new(300_000, 10_000_000, T0);
    for k in 0..KEYS {
        m.insert((7, u128::from(k)), [0; 64]).unwrap();
    }
    let mut g = c.benchmark_group("dedup/window_map (1M keys)");
    g.throughput(Throughput::Elements(1));
    let mut k = 0u64;
    g.bench_function("lookup hit", |b| {
        b.iter(|| {
            k = (k + 7_919) % KEYS;
            black_box(m.get(&(7, u128::from(k)), |v| Some(v[0])))
        });
    });
    let mut n = KEYS;
    g.bench_function("insert new key", |b| {
        b.iter(|| {
            n += 1;
            black_box(m.insert((7, u128::from(n)), [0; 64]))
        });
    });
    g.finish();
}

/// What a punch does to the anti-cheat memory: read the employee's state
/// (the check), then change it once the punch is durable (remember). The
/// memory holds a million employees and is full, the state an attacker's
/// flood leaves it in. "known": the employee is remembered; "new": it is
/// not, so the window refuses it (the old behaviour: judged without
/// memory) and the LRU forgets its least recently seen entry to make room.
fn bench_employee_memory(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    const DAY: i64 = 86_400_000;
    let window: WindowMap<(u64, u64), EmployeeState> = WindowMap::new(DAY, N as usize, T0);
    let lru: LruMap<(u64, u64), EmployeeState> = LruMap::new(DAY, N as usize);
    let mark = |k: u64| Mark {
        at_ms: T0,
        record_id: u128::from(k).to_be_bytes(),
    };
    for k in 0..N {
        window
            .with((7, k), |s| {
                s.get_or_insert_with(Default::default).last_in = Some(mark(k))
            })
            .unwrap();
        lru.with((7, k), T0, |s| {
            s.get_or_insert_with(Default::default).last_in = Some(mark(k))
        });
    }
    let mut g = c.benchmark_group("dedup/employee memory per punch (1M employees, full)");
    g.throughput(Throughput::Elements(1));
    let mut k = 0u64;
    g.bench_function("before: WindowMap, known employee", |b| {
        b.iter(|| {
            k = (k + 7_919) % N;
            let key = (7, k);
            black_box(window.get(&key, |s| Some(s.last_in)));
            black_box(window.with(key, |s| {
                s.get_or_insert_with(Default::default).last_in = Some(mark(k))
            }))
        });
    });
    let mut n = 0u64;
    g.bench_function("after: LruMap, known employee", |b| {
        b.iter(|| {
            // The LRU's live keys drift upwards as "new" evicts; stay
            // within the most recent million.
            k = (k + 7_919) % N;
            let key = (7, n + k);
            black_box(lru.get(&key, T0, |s| s.last_in));
            lru.with(key, T0, |s| {
                s.get_or_insert_with(Default::default).last_in = Some(mark(k))
            });
        });
    });
    let mut fresh = N;
    g.bench_function("before: WindowMap, new employee (refused)", |b| {
        b.iter(|| {
            fresh += 1;
            let key = (7, fresh);
            black_box(window.get(&key, |s| Some(s.last_in)));
            black_box(window.with(key, |s| {
                s.get_or_insert_with(Default::default).last_in = Some(mark(fresh))
            }))
        });
    });
    g.bench_function("after: LruMap, new employee (evicts)", |b| {
        b.iter(|| {
            n += 1;
            let key = (7, N + n);
            black_box(lru.get(&key, T0, |s| s.last_in));
            lru.with(key, T0, |s| {
                s.get_or_insert_with(Default::default).last_in = Some(mark(n))
            });
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench_window, bench_employee_memory
}

fn main() {
    employee_memory_report();
    memory_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
