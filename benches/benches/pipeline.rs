//! The pipeline alone, at 100k fences: per ping fix (locate, H3 cell,
//! suppression, record encoding when forwarded; batched against the
//! per-fix path in the same run) and per punch (idempotency,
//! locate, repeat merge, record encoding). Frames are parsed outside the
//! timed loop; `benches/schema.rs` measures parsing.
//!
//! `cargo bench -p fencegate-benches --bench pipeline`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fencegate::fences::Fences;
use fencegate::pipeline::{Pipeline, PipelineConfig, PunchDecision, RecordSink, Scratch, Session};
use fencegate_benches::{synthetic_fences, synthetic_points, tenant_name};
use fencegate_schema::{
    Channel, Fix, Limits, PingBatchMsg, Position, PunchKind, PunchMethod, PunchMsg, Request,
    TerminalAuth, parse_frame,
};
use fencegate_spatial::{FenceIndex, IndexOptions, LoadOptions};
use flatbuffers::FlatBufferBuilder;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: i64 = 1_790_000_000_000;

/// Counts records without keeping them: what the sink costs is the log's
/// business, measured in `benches/log.rs`.
struct CountingSink(usize);

impl RecordSink for CountingSink {
    fn push(&mut self, record: &[u8], _time_ms: i64) {
        self.0 += black_box(record.len());
    }
}

fn pipeline(n: usize) -> Pipeline {
    let set = synthetic_fences(n, 42);
    let index = FenceIndex::build(set, &IndexOptions::default());
    let fences = Arc::new(Fences::new(index, LoadOptions::default()));
    let cfg = PipelineConfig {
        node: "bench".into(),
        repeat_window_ms: 300_000,
        idempotency_horizon_ms: 86_400_000,
        heartbeat_ms: 300_000,
        cell_resolution: h3o::Resolution::Nine,
        max_punch_keys: 50_000_000,
        max_employees: 1_000_000,
        max_devices: 10_000_000,
    };
    Pipeline::new(cfg, fences, T0)
}

fn fix(lat: f64, lon: f64, off: u32) -> Fix {
    Fix::new((lat * 1e7) as i32, (lon * 1e7) as i32, off, 50, 0)
}

/// How the fixes of a device move between one fix and the next.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// Every fix somewhere else (km apart): every fix converted to a new H3
    /// cell, looked up and forwarded. The worst case.
    Teleporting,
    /// Driving at 15 m/s with a fix a second: a new H3 cell (resolution 9)
    /// every ten or so fixes.
    Driving,
    /// Parked, with 1–3 m of GPS jitter on every fix.
    Jittering,
    /// Every fix at exactly the same spot (the common case for parked
    /// assets whose receiver reports a held position).
    Standing,
}

/// A fleet of 10k devices; each round one device sends one 64-fix batch
/// later than its previous one. Each path is run through the batched
/// `pings` and, in the same run, through `pings_per_fix` (the path before
/// it, kept as the baseline) on its own pipeline.
fn bench_pings(c: &mut Criterion) {
    const DEVICES: usize = 10_000;
    const M_PER_DEG: f64 = 111_195.0;
    let n = 100_000;
    let probes = synthetic_points(DEVICES * 4, 7, &synthetic_fences(n, 42));
    let sessions: Vec<Session> = (0..DEVICES)
        .map(|d| Session::new(&tenant_name(probes[d].tenant), &format!("truck-{d}")))
        .collect();
    let limits = Limits::default();
    let mut group = c.benchmark_group("pipeline/ping");
    group.throughput(Throughput::Elements(64));
    let paths = [
        (Path::Teleporting, "moving"),
        (Path::Driving, "driving"),
        (Path::Jittering, "jittering"),
        (Path::Standing, "standing"),
    ];
    for (path, name) in paths {
        for batched in [true, false] {
            let p = pipeline(n);
            let mut scratch = Scratch::default();
            let mut sink = CountingSink(0);
            let mut fbb = FlatBufferBuilder::new();
            let mut round: usize = 0;
            // Where each device is, and its heading (radians).
            let mut at: Vec<(f64, f64, f64)> = (0..DEVICES)
                .map(|d| (probes[d].point.lat(), probes[d].point.lon(), d as f64 * 0.7))
                .collect();
            let how = if batched {
                "batched"
            } else {
                "per-fix (before)"
            };
            group.bench_function(
                BenchmarkId::new(
                    name,
                    format!("{how}, 64 fixes/batch, 10k devices, 100k fences"),
                ),
                |b| {
                    b.iter_batched(
                        || {
                            round += 1;
                            let d = round % DEVICES;
                            let base = T0 + (round / DEVICES) as i64 * 64_000;
                            let fixes = (0..64)
                                .map(|i| {
                                    let (lat, lon) = match path {
                                        Path::Teleporting => {
                                            let pr = probes[(d * 4 + i + round) % probes.len()];
                                            (pr.point.lat(), pr.point.lon())
                                        }
                                        Path::Driving => {
                                            let (lat, lon, h) = &mut at[d];
                                            *lat += 15.0 / M_PER_DEG * h.cos();
                                            *lon += 15.0 / (M_PER_DEG * lat.to_radians().cos())
                                                * h.sin();
                                            (*lat, *lon)
                                        }
                                        Path::Jittering => {
                                            let (lat, lon, _) = at[d];
                                            let j = ((round * 64 + i) % 7) as f64 - 3.0;
                                            (lat + j / M_PER_DEG, lon - j / M_PER_DEG)
                                        }
                                        Path::Standing => {
                                            (probes[d].point.lat(), probes[d].point.lon())
                                        }
                                    };
                                    fix(lat, lon, i as u32 * 1_000)
                                })
                                .collect();
                            let msg = PingBatchMsg {
                                device_seq: round as u64,
                                base_time_ms: base,
                                fixes,
                            };
                            (d, msg.encode_into(&mut fbb).to_vec(), base + 64_000)
                        },
                        |(d, bytes, now)| {
                            // Parsing is included: it is part of every datagram's cost.
                            let Ok(Request::PingBatch(view)) =
                                parse_frame(&bytes, Channel::Datagram, now, &limits)
                            else {
                                unreachable!()
                            };
                            if batched {
                                black_box(p.pings(
                                    now,
                                    &sessions[d],
                                    &view,
                                    &mut scratch,
                                    &mut sink,
                                ))
                            } else {
                                black_box(p.pings_per_fix(
                                    now,
                                    &sessions[d],
                                    &view,
                                    &mut scratch,
                                    &mut sink,
                                ))
                            }
                        },
                        BatchSize::SmallInput,
                    );
                },
            );
        }
    }
    group.finish();
}

fn bench_punches(c: &mut Criterion) {
    let n = 100_000;
    let p = pipeline(n);
    let probes = synthetic_points(4_096, 9, &synthetic_fences(n, 42));
    let limits = Limits::default();
    let mut group = c.benchmark_group("pipeline/punch");
    group.throughput(Throughput::Elements(1));
    let mut scratch = Scratch::default();
    let mut i: u64 = 0;
    // The same pipeline with punch rate limits on (a device and a tenant
    // bucket per punch), set high enough never to refuse: their cost, in
    // the same run as the plain case.
    let limited = pipeline(n).with_budgets(fencegate::budget::Budgets {
        tenant: fencegate::budget::TenantBudget {
            max_punch_keys: 50_000_000,
            max_employees: 1_000_000,
            rate: Some(fencegate::budget::Rate {
                per_s: 1e6,
                burst: 1_000_000,
            }),
        },
        tenants: Vec::new(),
        device_rate: Some(fencegate::budget::Rate {
            per_s: 1e6,
            burst: 1_000_000,
        }),
    });
    for (name, p) in [
        ("new punch, 100k fences", &p),
        ("new punch, 100k fences, rate limits on", &limited),
    ] {
        group.bench_function(name, |b| {
            let mut fbb = FlatBufferBuilder::new();
            b.iter_batched(
                || {
                    i += 1;
                    let pr = probes[(i as usize) % probes.len()];
                    let msg = PunchMsg {
                        punch_id: (u128::from(i) + 1).to_be_bytes(),
                        employee_id: format!("e-{i}"),
                        kind: PunchKind::In,
                        method: PunchMethod::Gps,
                        device_time_ms: T0,
                        position: Some(Position::new(pr.point.lat(), pr.point.lon(), 10.0)),
                        bssids: vec![],
                        ssid: None,
                        qr_payload: None,
                        terminal_auth: TerminalAuth::None,
                        offline: false,
                        mock_location: false,
                    };
                    (
                        Session::new(&tenant_name(pr.tenant), "phone"),
                        msg.encode_into(&mut fbb).to_vec(),
                    )
                },
                |(s, bytes)| {
                    // Parsing a punch is measured in benches/schema.rs (~0.3 µs);
                    // it stays here because the view borrows the frame.
                    let Ok(Request::Punch(view)) =
                        parse_frame(&bytes, Channel::Stream, T0, &limits)
                    else {
                        unreachable!()
                    };
                    match p.punch(T0, &s, &view, &mut scratch) {
                        PunchDecision::Record {
                            record,
                            ack,
                            pending,
                        } => {
                            black_box(record.len());
                            p.settle(
                                &pending,
                                fencegate::pipeline::Settled::Committed(ack.verdict),
                            );
                        }
                        other => {
                            black_box(&other);
                        }
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4));
    targets = bench_pings, bench_punches
}
criterion_main!(benches);
