//! Wire parsing benches: `parse_frame` (verifier + semantic checks) for a
//! punch and for ping batches of 1, 16 and 64 fixes, measured side by side
//! with two baselines on the same buffers:
//!
//! - `unchecked`: `flatbuffers::root_unchecked` and the same field reads,
//!   no verification at all (what reading costs by itself);
//! - `verifier`: the bounded flatbuffers verifier alone, no semantic checks.
//!
//! So `parse_frame − verifier` is the cost of our checks and
//! `verifier − unchecked` the cost of verification. Also the gateway's
//! per-punch encoders (PunchAck, Record) on a reused builder.
//!
//! Run: `cargo bench -p fencegate-benches --bench schema -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fencegate_schema::{
    AttendanceStatus, Channel, Fix, Frame, Limits, PingBatchMsg, Position, PunchAckRef, PunchKind,
    PunchMethod, PunchMsg, PunchRecordRef, Reason, RecordBodyRef, RecordRef, Request, TerminalAuth,
    Verdict, parse_frame, root_as_frame_with_opts,
};
use flatbuffers::FlatBufferBuilder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_750_000_000_000;

fn punch_frame() -> Vec<u8> {
    PunchMsg {
        punch_id: *b"\x01\x97\x6e\x2a\x5b\x3c\x7d\x10\x8e\x4f\x2a\x61\x9b\x0c\xd3\x55",
        employee_id: "E1001-shanghai".to_owned(),
        kind: PunchKind::In,
        method: PunchMethod::Gps,
        device_time_ms: NOW - 800,
        position: Some(Position::new(31.2304, 121.4737, 8.5)),
        bssids: Vec::new(),
        ssid: None,
        qr_payload: None,
        terminal_auth: TerminalAuth::None,
        offline: false,
        mock_location: false,
    }
    .encode_into(&mut FlatBufferBuilder::new())
    .to_vec()
}

fn batch_frame(n: usize, rng: &mut StdRng) -> Vec<u8> {
    PingBatchMsg {
        device_seq: 1,
        base_time_ms: NOW - 60_000,
        fixes: (0..n)
            .map(|i| {
                Fix::new(
                    rng.random_range(-900_000_000..=900_000_000),
                    rng.random_range(-1_800_000_000..=1_800_000_000),
                    i as u32 * 1_000,
                    rng.random_range(10..500),
                    0,
                )
            })
            .collect(),
    }
    .encode_into(&mut FlatBufferBuilder::new())
    .to_vec()
}

/// Reads every punch field a consumer would, from an already-trusted frame.
fn read_punch(frame: Frame<'_>) -> f64 {
    let p = frame.body_as_punch().expect("punch");
    let pos = p.position().expect("position");
    pos.lat()
        + pos.lon()
        + f64::from(pos.accuracy_m())
        + p.device_time_ms() as f64
        + p.employee_id().len() as f64
        + f64::from(p.punch_id().0[0])
}

/// Sums every fix of an already-trusted batch, as the pipeline would read them.
fn read_batch(frame: Frame<'_>) -> f64 {
    let b = frame.body_as_ping_batch().expect("batch");
    let base = b.base_time_ms();
    b.fixes()
        .iter()
        .map(|f| {
            f64::from(f.lat_e7()) * 1e-7
                + f64::from(f.lon_e7()) * 1e-7
                + f64::from(f.accuracy_dm())
                + (base + i64::from(f.offset_ms())) as f64
        })
        .sum()
}

fn bench_punch(c: &mut Criterion) {
    let limits = Limits::default();
    let opts = limits.verifier_options();
    let buf = punch_frame();
    assert!(matches!(
        parse_frame(&buf, Channel::Stream, NOW, &limits),
        Ok(Request::Punch(_))
    ));

    let mut g = c.benchmark_group("punch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("unchecked", |b| {
        b.iter(|| {
            // SAFETY: `buf` was built by our encoder and passed parse_frame
            // just above, so it is a valid Frame with a Punch body.
            let frame = unsafe { flatbuffers::root_unchecked::<Frame<'_>>(black_box(&buf)) };
            read_punch(frame)
        });
    });
    g.bench_function("verifier", |b| {
        b.iter(|| read_punch(root_as_frame_with_opts(&opts, black_box(&buf)).expect("valid")));
    });
    g.bench_function("parse_frame", |b| {
        b.iter(
            || match parse_frame(black_box(&buf), Channel::Stream, NOW, &limits) {
                Ok(Request::Punch(p)) => {
                    let (lat, lon, acc) = p.position().expect("gps");
                    lat + lon
                        + f64::from(acc)
                        + p.device_time_ms() as f64
                        + p.employee_id().len() as f64
                        + f64::from(p.punch_id()[0])
                }
                _ => unreachable!("valid punch"),
            },
        );
    });
    g.finish();
}

fn bench_ping_batch(c: &mut Criterion) {
    let limits = Limits::default();
    let opts = limits.verifier_options();
    let mut rng = StdRng::seed_from_u64(7);
    let mut g = c.benchmark_group("ping_batch");
    for n in [1usize, 16, 64] {
        let buf = batch_frame(n, &mut rng);
        assert!(matches!(
            parse_frame(&buf, Channel::Datagram, NOW, &limits),
            Ok(Request::PingBatch(_))
        ));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("unchecked", n), &buf, |b, buf| {
            b.iter(|| {
                // SAFETY: `buf` was built by our encoder and passed
                // parse_frame above, so it is a valid Frame with a PingBatch.
                let frame = unsafe { flatbuffers::root_unchecked::<Frame<'_>>(black_box(buf)) };
                read_batch(frame)
            });
        });
        g.bench_with_input(BenchmarkId::new("verifier", n), &buf, |b, buf| {
            b.iter(|| read_batch(root_as_frame_with_opts(&opts, black_box(buf)).expect("valid")));
        });
        g.bench_with_input(BenchmarkId::new("parse_frame", n), &buf, |b, buf| {
            b.iter(
                || match parse_frame(black_box(buf), Channel::Datagram, NOW, &limits) {
                    Ok(Request::PingBatch(batch)) => batch
                        .fixes()
                        .map(|f| f.lat + f.lon + f64::from(f.accuracy_m) + f.time_ms as f64)
                        .sum::<f64>(),
                    _ => unreachable!("valid batch"),
                },
            );
        });
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut fbb = FlatBufferBuilder::with_capacity(1024);
    let fences = ["acme-hq-north", "acme-campus"];
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("punch_ack", |b| {
        b.iter(|| {
            let ack = PunchAckRef {
                punch_id: Some([1; 16]),
                record_id: Some([2; 16]),
                verdict: Verdict::Accepted,
                reason: Reason::None,
                fence_id: Some(fences[0]),
                nearest_fence_id: Some(fences[0]),
                distance_m: 0.0,
                server_time_ms: black_box(NOW),
            };
            ack.encode_into(&mut fbb).len()
        });
    });
    g.bench_function("punch_record", |b| {
        b.iter(|| {
            let rec: RecordRef<'_> = RecordRef {
                record_id: [2; 16],
                tenant: "acme",
                gateway_time_ms: black_box(NOW),
                node: Some("gw-1"),
                body: RecordBodyRef::Punch(PunchRecordRef {
                    punch_id: [1; 16],
                    employee_id: "E1001-shanghai",
                    device_id: "android-8f3e",
                    kind: PunchKind::In,
                    method: PunchMethod::Gps,
                    device_time_ms: NOW - 800,
                    position: Some(Position::new(31.2304, 121.4737, 8.5)),
                    verdict: Verdict::Accepted,
                    reason: Reason::None,
                    fence_ids: &fences,
                    nearest_fence_id: Some(fences[0]),
                    distance_m: 0.0,
                    offline: false,
                    mock_location: false,
                    status: AttendanceStatus::Normal,
                    anomaly_flags: 0,
                    slot: Some("2025-06-15/day"),
                    merged_into: None,
                }),
            };
            rec.encode_into(&mut fbb).len()
        });
    });
    g.finish();
}

criterion_group!(benches, bench_punch, bench_ping_batch, bench_encode);
criterion_main!(benches);
