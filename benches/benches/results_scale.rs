//! Attendance results at the issue's scale: a tenant of 100,000 employees
//! (100 departments of 1,000, one 09:00–18:00 slot every day of the week)
//! and a month of punches, January 2026: 31 days × 2 punches, 3 % of the
//! employee days absent, about 6 M punch records. Release build, SQLite
//! file in a temporary folder.
//!
//! - `close_day/{batched,per_employee}`: closing 2026-01-31 for the whole
//!   roster with the month stored (30 days closed, the 31st's rows open),
//!   each iteration on a fresh copy of the same store file. `per_employee`
//!   is how days were closed before batching (`Recompute::PerEmployee`),
//!   the same-run baseline. Issue target: ≤ 10 s.
//! - `month_summary/department`: `ResultsStore::month_summary` for one
//!   department of 1,000 (31,000 day rows of 6.2 M). Target: ≤ 200 ms.
//! - `apply/4096_punches`: the materializer's apply of one log batch (4,096
//!   punch records of distinct employees, the next day) onto the month's
//!   store, in punches/s, against `insert_only/4096_punches`, the same rows
//!   stored alone (`insert_only`: a statement per punch, as before
//!   `insert_punches`; `insert_many`: multi-row statements, as the
//!   materializer stores them now). Target: 2× the node's peak punch rate
//!   (docs/PERFORMANCE.md).
//! - `rebuild_month`: `fencegate results rebuild`'s work
//!   (`Materializer::rebuild`: a log of a month into an empty store, every
//!   day closed) for `FENCEGATE_REBUILD_EMPLOYEES` employees (10,000
//!   unless set: 620,000 records; 100,000 is the issue's 6.2 M and takes
//!   minutes an iteration). Target at 100,000: ≤ 60 s. Beside it,
//!   `drain_then_close`: the same log through the node's own path (every
//!   batch's days recomputed, then the close), the same-run baseline.
//!
//! The month's rows are generated inside SQLite (`WITH RECURSIVE`, as the
//! dashboard bench does; the aggregates filled by `recount_stats`), which
//! takes a minute or two: run one group at a time,
//! `cargo bench -p fencegate-benches --bench results_scale -- close_day`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fencegate::log::{LogConfig, LogHandle, LogReader, Lsn, RecordBatch};
use fencegate::results::store::PunchRow;
use fencegate::results::{Materializer, Recompute, ResultsStore};
use fencegate::rules::config::{CompileContext, compile_text, fixed_qr_keys};
use fencegate::rules::holidays::Calendars;
use fencegate::rules::schedule::day_number;
use fencegate::rules::{AttendanceSettings, RulesHandle};
use fencegate_schema::{
    AttendanceRef, AttendanceStatus, PunchKind, PunchMethod, PunchRecordRef, Reason, RecordBodyRef,
    RecordRef, Verdict,
};
use flatbuffers::FlatBufferBuilder;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EMPLOYEES: usize = 100_000;
const DEPARTMENTS: usize = 100;
const DAYS: i64 = 31;
/// 2026-01-01T00:00+08:00.
const DAY0_MS: i64 = 1_767_196_800_000;
const DAY_MS: i64 = 86_400_000;
const MIN_MS: i64 = 60_000;
/// Records per log batch, and per materializer batch.
const BATCH: usize = 4_096;

fn name(i: usize) -> String {
    format!("E{i:06}")
}

fn rules_text(employees: usize) -> String {
    let mut s = String::from(
        r#"
[tenants.acme]
timezone = "Asia/Shanghai"
default_group = "office"
[tenants.acme.groups.office]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
slots = [{ name = "day", start = "09:00", end = "18:00" }]
late_grace_min = 10
close_after_min = 60
"#,
    );
    for d in 0..DEPARTMENTS {
        s.push_str(&format!(
            "[tenants.acme.departments.dept-{d}]\nsupervisor = \"{}\"\n",
            name(d)
        ));
    }
    for i in 0..employees {
        s.push_str(&format!(
            "[tenants.acme.employees.{}]\ndepartment = \"dept-{}\"\n",
            name(i),
            i % DEPARTMENTS
        ));
    }
    s
}

fn handle(employees: usize) -> Arc<RulesHandle> {
    let text = rules_text(employees);
    let mut keys = fixed_qr_keys(1);
    let mut ctx = CompileContext {
        calendars: Calendars::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/holidays"),
        ),
        settings: AttendanceSettings::default(),
        qr_key: &mut keys,
    };
    let rules = compile_text(&text, "bench", &["acme"], &mut ctx).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(RulesHandle::new(rules, text))
}

/// Minutes after 08:50 of employee `i`'s clock-in on day `j` (late from
/// 21 on), and whether the day is absent.
fn day_of(i: usize, j: i64) -> (i64, bool) {
    let i = i as i64;
    ((i * 7 + j * 13) % 30, (i * 3 + j * 11) % 100 < 3)
}

/// The month's punches and day rows, generated inside SQLite: 30 days
/// closed, the 31st written as the materializer leaves it before the
/// close (rows of those who punched, open). The same rule as [`day_of`].
async fn seed(store: &ResultsStore) {
    let xs = "WITH RECURSIVE e(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM e WHERE i < $1), \
              d(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM d WHERE j < $2), \
              x AS (SELECT i, j, (i * 7 + j * 13) % 30 AS r, (i * 3 + j * 11) % 100 < 3 AS a FROM e, d)";
    sqlx::query(&format!(
        "{xs}, k(n) AS (SELECT 0 UNION ALL SELECT 1) \
         INSERT INTO punches (record_id, lsn, tenant, employee, kind, at_ms, verdict, status, needs_approval, \
         decision, flags, department, slot) \
         SELECT printf('%06d-%02d-%d', i, j, n), (i * 31 + j) * 2 + n, 'acme', printf('E%06d', i), \
         CASE n WHEN 0 THEN 'in' ELSE 'out' END, \
         $3 + j * 86400000 + CASE n WHEN 0 THEN 31800000 + r * 60000 ELSE 64800000 + (i % 20) * 60000 END, \
         'accepted', CASE WHEN n = 0 AND r >= 21 THEN 'late' ELSE 'normal' END, 0, NULL, 0, \
         'dept-' || (i % 100), NULL FROM x, k WHERE NOT a"
    ))
    .bind(EMPLOYEES as i64 - 1)
    .bind(DAYS - 1)
    .bind(DAY0_MS)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(&format!(
        "{xs}, s(slot) AS (SELECT '' UNION ALL SELECT 'day') \
         INSERT INTO day_results (tenant, employee, date, slot, department, grp, status, late_min, early_min, \
         worked_min, overtime_min, in_ms, out_ms, closed, revision) \
         SELECT 'acme', printf('E%06d', i), date('2026-01-01', '+' || j || ' days'), slot, 'dept-' || (i % 100), \
         'office', CASE WHEN a THEN 'absent' WHEN r >= 21 THEN 'late' ELSE 'normal' END, \
         CASE WHEN NOT a AND r >= 21 THEN r - 10 ELSE 0 END, 0, \
         CASE WHEN a THEN 0 ELSE 540 - MAX(0, r - 10) END, CASE WHEN a THEN 0 ELSE i % 20 END, \
         CASE WHEN a THEN NULL ELSE $3 + j * 86400000 + 31800000 + r * 60000 END, \
         CASE WHEN a THEN NULL ELSE $3 + j * 86400000 + 64800000 + (i % 20) * 60000 END, \
         CASE WHEN j < $2 THEN 1 ELSE 0 END, 0 FROM x, s WHERE j < $2 OR NOT a"
    ))
    .bind(EMPLOYEES as i64 - 1)
    .bind(DAYS - 1)
    .bind(DAY0_MS)
    .execute(store.pool())
    .await
    .unwrap();
    store.recount_stats().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let first = day_number(2026, 1, 1);
    ResultsStore::set_meta(&mut tx, "start:acme", i64::from(first))
        .await
        .unwrap();
    ResultsStore::set_meta(&mut tx, "closed:acme:office", i64::from(first + 29))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The seeded month's store file, made once per run, or kept at
/// `FENCEGATE_MONTH_STORE` (made there when missing) to skip seeding in the
/// next run.
fn month_store(rt: &tokio::runtime::Runtime, dir: &Path) -> PathBuf {
    let path = std::env::var_os("FENCEGATE_MONTH_STORE")
        .map_or_else(|| dir.join("month.sqlite"), PathBuf::from);
    if !path.exists() {
        let started = fencegate_benches::clock::now();
        let store = rt.block_on(ResultsStore::open_sqlite(&path)).unwrap();
        rt.block_on(seed(&store));
        rt.block_on(store.pool().close());
        eprintln!("seeded the month's store in {:.0?}", started.elapsed());
    }
    path
}

/// A copy of `base` to work on (the store is closed: one file).
fn copy_of(rt: &tokio::runtime::Runtime, base: &Path, dir: &Path) -> ResultsStore {
    let work = dir.join("work.sqlite");
    std::fs::copy(base, &work).unwrap();
    rt.block_on(ResultsStore::open_sqlite(&work)).unwrap()
}

/// A punch record of employee `i` at `at_ms`.
fn record(
    fbb: &mut FlatBufferBuilder<'_>,
    id: u128,
    i: usize,
    kind: PunchKind,
    at_ms: i64,
) -> Vec<u8> {
    let employee = name(i);
    let department = format!("dept-{}", i % DEPARTMENTS);
    fbb.reset();
    let r = RecordRef {
        record_id: id.to_be_bytes(),
        tenant: "acme",
        gateway_time_ms: at_ms,
        node: Some("n1"),
        body: RecordBodyRef::Punch(PunchRecordRef {
            punch_id: id.to_be_bytes(),
            employee_id: &employee,
            device_id: "phone",
            kind,
            method: PunchMethod::Gps,
            device_time_ms: at_ms,
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
        attendance_time_ms: at_ms,
        department: Some(&department),
        ..AttendanceRef::default()
    };
    r.encode_with_attendance(&att, fbb).to_vec()
}

/// Batch `k` of the apply bench: 4,096 distinct employees' clock-ins (then
/// clock-outs) on the days after the month.
fn apply_batch(k: usize) -> Vec<(u64, Vec<u8>)> {
    let per_day = EMPLOYEES / BATCH; // 24 batches of clock-ins, 24 of outs
    let day = (k / (2 * per_day)) as i64 + DAYS;
    let out = (k / per_day) % 2 == 1;
    let first = (k % per_day) * BATCH;
    let mut fbb = FlatBufferBuilder::new();
    (0..BATCH)
        .map(|n| {
            let i = first + n;
            let (r, _) = day_of(i, day);
            let (kind, at) = if out {
                (
                    PunchKind::Out,
                    DAY0_MS + day * DAY_MS + 64_800_000 + (i % 20) as i64 * MIN_MS,
                )
            } else {
                (
                    PunchKind::In,
                    DAY0_MS + day * DAY_MS + 31_800_000 + r * MIN_MS,
                )
            };
            let id = 1u128 << 100 | (k as u128) << 32 | n as u128;
            (id as u64, record(&mut fbb, id, i, kind, at))
        })
        .collect()
}

fn bench_month(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let rules = std::cell::OnceCell::new();
    let rules = || rules.get_or_init(|| handle(EMPLOYEES)).clone();
    let mut g = c.benchmark_group("results_100k");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(EMPLOYEES as u64));
    close_day(
        &mut g,
        &rt,
        dir.path(),
        rules(),
        "close_day/batched",
        Recompute::Batched,
    );
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("month_summary/department", |b| {
        let base = month_store(&rt, dir.path());
        let store = rt.block_on(ResultsStore::open_sqlite(&base)).unwrap();
        b.iter(|| {
            let s = rt
                .block_on(store.month_summary("acme", "2026-01", Some("dept-7")))
                .unwrap();
            assert_eq!(s.employees.len(), 1_000);
            s
        });
        rt.block_on(store.pool().close());
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("apply/4096_punches", |b| {
        let base = month_store(&rt, dir.path());
        let m = Materializer::new(copy_of(&rt, &base, dir.path()), rules());
        let mut k = 0;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = apply_batch(k);
                k += 1;
                let now = DAY0_MS + 31 * DAY_MS + 12 * 60 * MIN_MS;
                let started = fencegate_benches::clock::now();
                let a = rt.block_on(m.apply(&batch, k as u64, now)).unwrap();
                total += started.elapsed();
                assert_eq!(a.punches, BATCH);
            }
            total
        });
        rt.block_on(m.store().pool().close());
    });
    g.bench_function("insert_only/4096_punches", |b| {
        let base = month_store(&rt, dir.path());
        let store = copy_of(&rt, &base, dir.path());
        let mut k = 0;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let rows: Vec<PunchRow> = apply_batch(k)
                    .iter()
                    .map(|(lsn, bytes)| punch_row(*lsn, bytes))
                    .collect();
                k += 1;
                let started = fencegate_benches::clock::now();
                rt.block_on(async {
                    let mut tx = store.begin().await.unwrap();
                    for r in &rows {
                        ResultsStore::insert_punch(&mut tx, r).await.unwrap();
                    }
                    tx.commit().await.unwrap();
                });
                total += started.elapsed();
            }
            total
        });
        rt.block_on(store.pool().close());
    });
    g.bench_function("insert_many/4096_punches", |b| {
        let base = month_store(&rt, dir.path());
        let store = copy_of(&rt, &base, dir.path());
        let mut k = 0;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let rows: Vec<PunchRow> = apply_batch(k)
                    .iter()
                    .map(|(lsn, bytes)| punch_row(*lsn, bytes))
                    .collect();
                k += 1;
                let started = fencegate_benches::clock::now();
                rt.block_on(async {
                    let mut tx = store.begin().await.unwrap();
                    let new = ResultsStore::insert_punches(&mut tx, &rows).await.unwrap();
                    assert!(new.iter().all(|n| *n));
                    tx.commit().await.unwrap();
                });
                total += started.elapsed();
            }
            total
        });
        rt.block_on(store.pool().close());
    });
    // Last: about 11 iterations of the slow way.
    g.throughput(Throughput::Elements(EMPLOYEES as u64));
    close_day(
        &mut g,
        &rt,
        dir.path(),
        rules(),
        "close_day/per_employee",
        Recompute::PerEmployee,
    );
    g.finish();
}

/// Closing 2026-01-31 for the roster, each iteration on a fresh copy of
/// the month's store.
fn close_day(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    rules: Arc<RulesHandle>,
    label: &str,
    how: Recompute,
) {
    // Past 2026-01-31 18:00 + 60 min.
    let after = DAY0_MS + 30 * DAY_MS + 19 * 60 * MIN_MS + MIN_MS;
    g.bench_function(label, |b| {
        let base = month_store(rt, dir);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = Materializer::new(copy_of(rt, &base, dir), rules.clone());
                let started = fencegate_benches::clock::now();
                let n = rt.block_on(m.close_due_with(after, how)).unwrap();
                total += started.elapsed();
                assert_eq!(n, EMPLOYEES, "one day closed for the roster");
                rt.block_on(m.store().pool().close());
            }
            total
        });
    });
}

/// The row `insert_punch` stores for a record.
fn punch_row(lsn: u64, bytes: &[u8]) -> PunchRow {
    let v = fencegate_schema::parse_record(bytes).unwrap();
    let fencegate_schema::RecordBodyView::Punch(p) = v.body() else {
        unreachable!()
    };
    PunchRow {
        record_id: fencegate::record_json::uuid(&v.record_id()),
        lsn: lsn as i64,
        tenant: "acme".into(),
        employee: p.employee_id().into(),
        kind: p.kind(),
        at_ms: p.device_time_ms(),
        verdict: p.verdict(),
        status: p.status(),
        needs_approval: false,
        flags: 0,
        department: v.attendance().and_then(|a| a.department).map(str::to_owned),
        slot: None,
    }
}

/// A log of the month for `employees`: each day's clock-ins, then its
/// clock-outs, in time order. Returns the record count.
fn write_log(dir: &Path, employees: usize) -> usize {
    let mut cfg = LogConfig::new(dir);
    cfg.retain_age = None;
    let (log, _) = LogHandle::open(cfg).unwrap();
    let mut fbb = FlatBufferBuilder::new();
    let mut batch = RecordBatch::new();
    let mut n = 0usize;
    for j in 0..DAYS {
        for out in [false, true] {
            for i in 0..employees {
                let (r, absent) = day_of(i, j);
                if absent {
                    continue;
                }
                let (kind, at) = if out {
                    (
                        PunchKind::Out,
                        DAY0_MS + j * DAY_MS + 64_800_000 + (i % 20) as i64 * MIN_MS,
                    )
                } else {
                    (
                        PunchKind::In,
                        DAY0_MS + j * DAY_MS + 31_800_000 + r * MIN_MS,
                    )
                };
                batch.push(&record(&mut fbb, n as u128, i, kind, at), at as u64);
                n += 1;
                if batch.len() == BATCH {
                    log.append_batch_blocking(std::mem::take(&mut batch))
                        .unwrap()
                        .wait()
                        .unwrap();
                }
            }
        }
    }
    if !batch.is_empty() {
        log.append_batch_blocking(batch).unwrap().wait().unwrap();
    }
    log.close();
    n
}

fn bench_rebuild(c: &mut Criterion) {
    // The rebuild logs each step's duration (`FENCEGATE_LOG=info`).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("FENCEGATE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let employees: usize = std::env::var("FENCEGATE_REBUILD_EMPLOYEES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let started = fencegate_benches::clock::now();
    let records = write_log(&log_dir, employees);
    eprintln!("wrote {records} records in {:.0?}", started.elapsed());
    let rules = handle(employees);
    // 2026-02-02 12:00: every day of January has closed.
    let now = DAY0_MS + 32 * DAY_MS + 4 * 60 * MIN_MS;
    let mut g = c.benchmark_group(format!("results_{}k", employees / 1_000));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(records as u64));
    // `rebuild_month`: the CLI's path. `drain_then_close`: the same log
    // through the node's path (each batch's days recomputed as it
    // commits, then the close), the same-run baseline.
    for (name, rebuild) in [("rebuild_month", true), ("drain_then_close", false)] {
        let mut k = 0;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    k += 1;
                    let path = dir.path().join(format!("{name}-{k}.sqlite"));
                    // The CLI's store: a scratch file, sealed at the end.
                    let started = fencegate_benches::clock::now();
                    let store = if rebuild {
                        rt.block_on(ResultsStore::open_scratch(&path)).unwrap()
                    } else {
                        rt.block_on(ResultsStore::open_sqlite(&path)).unwrap()
                    };
                    let m = Materializer::new(store, rules.clone());
                    let mut reader =
                        LogReader::open_dir(&log_dir, Lsn(0), Duration::from_millis(100)).unwrap();
                    let (applied, closed) = if rebuild {
                        rt.block_on(m.rebuild(&mut reader, now)).unwrap()
                    } else {
                        let applied = rt.block_on(m.drain(&mut reader, now)).unwrap();
                        (applied, rt.block_on(m.close_due(now)).unwrap())
                    };
                    if rebuild {
                        rt.block_on(m.store().clone().seal()).unwrap();
                    }
                    let took = started.elapsed();
                    total += took;
                    // Criterion's analysis needs ten of these; at 100,000
                    // employees one run (`--profile-time 1`) is what fits,
                    // so each iteration says what it took.
                    eprintln!("{name}: {employees} employees, {records} records: {took:.2?}");
                    assert_eq!(applied.punches, records);
                    assert!(closed >= employees, "{closed} closed");
                    rt.block_on(m.store().pool().close());
                    for ext in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
                    }
                }
                total
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench_month, bench_rebuild);
criterion_main!(benches);
