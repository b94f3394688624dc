//! Attendance results: materializing punch records into day results in
//! SQLite, against storing the same records alone (the floor: what the
//! store costs without computing any day), and closing a day for a roster,
//! in the same run; plus the pure day computation against one per-punch
//! judgement. And the same punches materialized from a JetStream stream
//! (`[cluster] results = "stream"`: fetch, apply, ack) against applying
//! them from the log, in the same run (`results/stream_2000_punches` vs
//! `results/apply_2000_punches`); the bench starts its own
//! `nats-server -js`.
//!
//! `cargo bench -p fencegate-benches --bench results`

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fencegate::results::store::PunchRow;
use fencegate::results::{Materializer, ResultsStore, StreamMaterializer, StreamSource};
use fencegate::rules::config::{CompileContext, compile_text, fixed_qr_keys};
use fencegate::rules::day::{DayPunch, compute};
use fencegate::rules::holidays::Calendars;
use fencegate::rules::schedule::day_number;
use fencegate::rules::{AttendanceSettings, Rules, RulesHandle};
use fencegate_schema::{
    AttendanceRef, AttendanceStatus, PunchKind, PunchMethod, PunchRecordRef, Reason, RecordBodyRef,
    RecordRef, Verdict,
};
use flatbuffers::FlatBufferBuilder;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tuesday 2025-03-04 09:00 in Shanghai.
const T0: i64 = 1_741_050_000_000;
const MIN: i64 = 60_000;
const EMPLOYEES: usize = 1_000;

fn rules_text() -> String {
    let mut s = String::from(
        r#"
[tenants.acme]
timezone = "Asia/Shanghai"
holidays = ["cn-2025"]
default_group = "office"
[tenants.acme.groups.office]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri"]
slots = [{ name = "day", start = "09:00", end = "18:00" }]
late_grace_min = 10
close_after_min = 60
[tenants.acme.departments.ops]
supervisor = "E0"
"#,
    );
    for i in 0..EMPLOYEES {
        s.push_str(&format!(
            "[tenants.acme.employees.E{i}]\ndepartment = \"ops\"\n"
        ));
    }
    s
}

fn rules(text: &str) -> Rules {
    let mut keys = fixed_qr_keys(1);
    let mut ctx = CompileContext {
        calendars: Calendars::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/holidays"),
        ),
        settings: AttendanceSettings::default(),
        qr_key: &mut keys,
    };
    compile_text(text, "bench", &["acme"], &mut ctx).unwrap_or_else(|e| panic!("{e}"))
}

/// A clock-in and a clock-out per employee on 2025-03-04 (a fifth late).
fn records() -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut fbb = FlatBufferBuilder::new();
    for i in 0..EMPLOYEES {
        let employee = format!("E{i}");
        for (k, kind, at) in [
            (0, PunchKind::In, T0 - 5 * MIN + (i % 5) as i64 * 4 * MIN),
            (1, PunchKind::Out, T0 + 9 * 60 * MIN + (i % 7) as i64 * MIN),
        ] {
            let id = ((i as u128) << 1 | k).to_be_bytes();
            fbb.reset();
            let r = RecordRef {
                record_id: id,
                tenant: "acme",
                gateway_time_ms: at,
                node: Some("n1"),
                body: RecordBodyRef::Punch(PunchRecordRef {
                    punch_id: id,
                    employee_id: &employee,
                    device_id: "phone",
                    kind,
                    method: PunchMethod::Gps,
                    device_time_ms: at,
                    position: None,
                    verdict: Verdict::Accepted,
                    reason: Reason::None,
                    fence_ids: &[] as &[&str],
                    nearest_fence_id: None,
                    distance_m: 0.0,
                    offline: false,
                    mock_location: false,
                    status: AttendanceStatus::Normal,
                    anomaly_flags: 0,
                    slot: None,
                    merged_into: None,
                }),
            };
            let att = AttendanceRef {
                attendance_time_ms: at,
                department: Some("ops"),
                ..AttendanceRef::default()
            };
            out.push((
                out.len() as u64,
                r.encode_with_attendance(&att, &mut fbb).to_vec(),
            ));
        }
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh store in its own folder (kept alive with it).
fn fresh(rt: &tokio::runtime::Runtime) -> (tempfile::TempDir, ResultsStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(ResultsStore::open_sqlite(&dir.path().join("r.sqlite")))
        .unwrap();
    (dir, store)
}

fn bench_materialize(c: &mut Criterion) {
    let text = rules_text();
    let handle = Arc::new(RulesHandle::new(rules(&text), text));
    let entries = records();
    let rt = runtime();
    let now = T0 + 8 * 60 * MIN; // 17:00: the day is still open
    let mut g = c.benchmark_group("results");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(entries.len() as u64));
    g.bench_function("apply_2000_punches", |b| {
        b.iter_batched(
            || fresh(&rt),
            |(_dir, store)| {
                let m = Materializer::new(store, handle.clone());
                rt.block_on(m.apply(&entries, entries.len() as u64, now))
                    .unwrap()
            },
            BatchSize::PerIteration,
        );
    });
    // The peer: the same records parsed and stored, no day computed.
    let rows: Vec<PunchRow> = entries
        .iter()
        .map(|(lsn, bytes)| {
            let v = fencegate_schema::parse_record(bytes).unwrap();
            let fencegate_schema::RecordBodyView::Punch(p) = v.body() else {
                unreachable!()
            };
            PunchRow {
                record_id: fencegate::record_json::uuid(&v.record_id()),
                lsn: *lsn as i64,
                tenant: "acme".into(),
                employee: p.employee_id().into(),
                kind: p.kind(),
                at_ms: p.device_time_ms(),
                verdict: p.verdict(),
                status: p.status(),
                needs_approval: false,
                flags: 0,
                department: Some("ops".into()),
                slot: None,
            }
        })
        .collect();
    g.bench_function("insert_only_2000_punches", |b| {
        b.iter_batched(
            || fresh(&rt),
            |(_dir, store)| {
                rt.block_on(async {
                    let mut tx = store.begin().await.unwrap();
                    for r in &rows {
                        ResultsStore::insert_punch(&mut tx, r).await.unwrap();
                    }
                    tx.commit().await.unwrap();
                });
            },
            BatchSize::PerIteration,
        );
    });
    // Closing the day: 1,000 employees on the roster, punches stored.
    g.throughput(Throughput::Elements(EMPLOYEES as u64));
    let after = T0 + 10 * 60 * MIN + MIN; // 19:01, past 18:00 + 60 min
    g.bench_function("close_day_1000_employees", |b| {
        b.iter_batched(
            || {
                let (dir, store) = fresh(&rt);
                let m = Materializer::new(store, handle.clone());
                rt.block_on(m.apply(&entries, entries.len() as u64, now))
                    .unwrap();
                (dir, m)
            },
            |(_dir, m)| rt.block_on(m.close_due(after)).unwrap(),
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

fn bench_compute(c: &mut Criterion) {
    let text = rules_text();
    let r = rules(&text);
    let t = r.tenant("acme");
    let g0 = &t.groups[usize::from(t.default_group)];
    let day = day_number(2025, 3, 4);
    let punches = [
        DayPunch {
            kind: PunchKind::In,
            at_ms: T0 + 3 * MIN,
            verdict: Verdict::Accepted,
            status: AttendanceStatus::Normal,
            needs_approval: false,
            decision: None,
        },
        DayPunch {
            kind: PunchKind::Out,
            at_ms: T0 + 9 * 60 * MIN + 4 * MIN,
            verdict: Verdict::Accepted,
            status: AttendanceStatus::Normal,
            needs_approval: false,
            decision: None,
        },
    ];
    let mut g = c.benchmark_group("day");
    g.bench_function("compute_one_employee_day", |b| {
        b.iter(|| compute(t, g0, black_box(day), black_box(&punches)));
    });
    // The peer: the schedule's verdict on one punch (what each record got).
    g.bench_function("judge_one_punch", |b| {
        b.iter(|| {
            g0.time.judge(
                &t.tz,
                &t.tz_table,
                &t.holidays,
                PunchKind::In,
                black_box(T0 + 3 * MIN),
            )
        });
    });
    g.finish();
}

/// The punches of [`records`] published to a stream, then materialized
/// into a fresh store by the stream materializer (one durable consumer,
/// batches of up to 4,096, the sequence committed with the rows): from its
/// start until the store holds the last sequence. The store is polled
/// every 2 ms, so a figure can be up to 2 ms late.
fn bench_stream(c: &mut Criterion) {
    let text = rules_text();
    let handle = Arc::new(RulesHandle::new(rules(&text), text));
    let entries = records();
    let n = entries.len() as i64;
    let rt = runtime();
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = fencegate_testkit::NatsServer::start(nats_dir.path());
    let client = rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "FENCEGATE".into(),
            subjects: vec!["fencegate.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        for (_, bytes) in &entries {
            js.publish("fencegate.acme.punch", bytes.clone().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        client
    });
    let mut g = c.benchmark_group("results");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(entries.len() as u64));
    g.bench_function("stream_2000_punches", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (_dir, store) = fresh(&rt);
                let m = Materializer::new(store.clone(), handle.clone());
                let source = StreamSource::new("FENCEGATE", "fencegate", "bench", false);
                let stop = tokio_util::sync::CancellationToken::new();
                let start = fencegate_benches::clock::now();
                let (client, stop2) = (client.clone(), stop.clone());
                let task = rt.spawn(async move {
                    StreamMaterializer::new(m, client, source)
                        .run(stop2, Duration::from_secs(3_600))
                        .await;
                });
                rt.block_on(async {
                    loop {
                        let mut tx = store.begin().await.unwrap();
                        let seq = ResultsStore::meta(&mut tx, "stream_seq").await.unwrap();
                        tx.commit().await.unwrap();
                        if seq.unwrap_or(0) >= n {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                });
                total += start.elapsed();
                stop.cancel();
                rt.block_on(task).unwrap();
            }
            total
        });
    });
    g.finish();
}

criterion_group!(benches, bench_materialize, bench_stream, bench_compute);
criterion_main!(benches);
