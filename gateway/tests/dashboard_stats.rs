//! The dashboard's aggregates (`day_stats`, `employee_months`,
//! `punch_stats`) against the raw tables they summarize. Random day rows
//! are written, rewritten (a reopened day, a new revision, a department
//! that changes), and deleted through `ResultsStore::upsert_row` and
//! `delete_row`, as the materializer does, and random punches stored
//! through `insert_punch`; then
//!
//! - the aggregates kept row by row equal `recount_stats` (their
//!   definition as `GROUP BY`s over the raw tables), and
//! - every chart answered from the aggregates (`ui::stats`) equals the same
//!   chart as one `GROUP BY` over `day_results` / `punches`
//!   (`ui::stats_raw`), for whole and partial months, one department, a
//!   single day, and a zone whose midnight is not on a whole UTC hour.
//!
//! On SQLite, and on a real PostgreSQL (one schema, one set of queries).

use fencegate::results::store::PunchRow;
use fencegate::results::{DayRow, ResultsStore};
use fencegate::ui::stats::{self, Bucket, Filter, Rank, split_range};
use fencegate::ui::stats_raw;
use fencegate_schema::{AttendanceStatus, PunchKind, Verdict, anomaly};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Row;

const EMPLOYEES: usize = 24;
/// 2026-01-20 .. 2026-03-05: three months, partly.
const FIRST: &str = "2026-01-20";
const DAYS: i64 = 45;

const STATUSES: [&str; 11] = [
    "normal",
    "late",
    "early_leave",
    "absent",
    "missing_in",
    "missing_out",
    "field",
    "rest_day",
    "holiday",
    "on_leave",
    "out_of_range_pending_approval",
];

fn date(i: i64) -> String {
    let d: jiff::civil::Date = FIRST.parse().unwrap();
    d.checked_add(jiff::Span::new().days(i))
        .unwrap()
        .to_string()
}

fn department(rng: &mut StdRng) -> Option<String> {
    match rng.random_range(0..4) {
        0 => None,
        1 => Some("ops".into()),
        2 => Some("sales".into()),
        _ => Some("lab".into()),
    }
}

fn random_row(rng: &mut StdRng, tenant: &str, employee: &str, day: i64, slot: &str) -> DayRow {
    let minutes = |rng: &mut StdRng| {
        if rng.random_bool(0.6) {
            0
        } else {
            rng.random_range(1..200)
        }
    };
    DayRow {
        tenant: tenant.into(),
        employee: employee.into(),
        date: date(day),
        slot: slot.into(),
        department: department(rng),
        group: "office".into(),
        status: STATUSES[rng.random_range(0..STATUSES.len())].into(),
        late_min: minutes(rng),
        early_min: minutes(rng),
        worked_min: rng.random_range(0..600),
        overtime_min: minutes(rng),
        in_ms: None,
        out_ms: None,
        closed: rng.random_bool(0.7),
        revision: 0,
    }
}

/// 2026-01-20T00:00Z.
const T0_MS: i64 = 1_768_867_200_000;

fn random_punch(rng: &mut StdRng, n: usize, tenant: &str) -> PunchRow {
    let verdicts = [
        Verdict::Accepted,
        Verdict::RepeatMerged,
        Verdict::OutOfRange,
        Verdict::Rejected,
    ];
    let statuses = [
        AttendanceStatus::Normal,
        AttendanceStatus::Late,
        AttendanceStatus::EarlyLeave,
        AttendanceStatus::OutOfRangePendingApproval,
        AttendanceStatus::Field,
        AttendanceStatus::Rejected,
    ];
    let flags = [0, anomaly::OFFLINE as i64, 4, 4 | anomaly::OFFLINE as i64];
    PunchRow {
        record_id: format!("p-{n}"),
        lsn: n as i64,
        tenant: tenant.into(),
        employee: format!("E{}", rng.random_range(0..EMPLOYEES)),
        kind: if rng.random_bool(0.5) {
            PunchKind::In
        } else {
            PunchKind::Out
        },
        // Any minute of the days, so punches fall on every hour's edge.
        at_ms: T0_MS + rng.random_range(0..DAYS * 1_440) * 60_000,
        verdict: verdicts[rng.random_range(0..verdicts.len())],
        status: statuses[rng.random_range(0..statuses.len())],
        needs_approval: false,
        flags: flags[rng.random_range(0..flags.len())],
        department: department(rng),
        slot: None,
    }
}

/// Writes, rewrites and deletes random rows as the materializer does (the
/// old row read in the same transaction), and stores random punches.
async fn churn(store: &ResultsStore, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0;
    for round in 0..12 {
        let mut tx = store.begin().await.unwrap();
        for _ in 0..120 {
            let tenant = if rng.random_bool(0.85) {
                "acme"
            } else {
                "globex"
            };
            let employee = format!("E{}", rng.random_range(0..EMPLOYEES));
            let day = rng.random_range(0..DAYS);
            let old = ResultsStore::rows_of_day(&mut tx, tenant, &employee, &date(day))
                .await
                .unwrap();
            match rng.random_range(0..10) {
                // The rules dropped the day's slot, or the whole day.
                0 => {
                    if let Some(o) = old.first() {
                        ResultsStore::delete_row(&mut tx, o).await.unwrap();
                    }
                }
                _ => {
                    let day_row = random_row(&mut rng, tenant, &employee, day, "");
                    // A slot row shares its day's department, as the
                    // materializer writes them.
                    let slot_row = DayRow {
                        department: day_row.department.clone(),
                        ..random_row(&mut rng, tenant, &employee, day, "day")
                    };
                    for mut row in [day_row, slot_row] {
                        let was = old.iter().find(|o| o.slot == row.slot);
                        if let Some(o) = was {
                            row.revision = o.revision + 1;
                        }
                        ResultsStore::upsert_row(&mut tx, was, &row).await.unwrap();
                    }
                }
            }
            for _ in 0..3 {
                n += 1;
                let p = random_punch(&mut rng, n, tenant);
                ResultsStore::insert_punch(&mut tx, &p).await.unwrap();
                // Stored again (a re-read after a crash): counted once.
                if n % 7 == 0 {
                    assert!(!ResultsStore::insert_punch(&mut tx, &p).await.unwrap());
                }
            }
        }
        // A make-up punch as `results/hr.rs` inserts it: accepted, normal,
        // unflagged, so it counts for no cause and touches no aggregate.
        sqlx::query(
            "INSERT INTO punches (record_id, lsn, tenant, employee, kind, at_ms, verdict, status, needs_approval, decision, flags, department, slot, makeup) \
             VALUES ($1, 0, 'acme', 'E1', 'in', $2, 'accepted', 'normal', 0, NULL, 0, 'ops', NULL, 1)",
        )
        .bind(format!("makeup:{round}"))
        .bind(T0_MS + i64::from(round) * 86_400_000 + 9 * 3_600_000)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

/// Every aggregate row with something in it, as text, sorted.
async fn aggregates(store: &ResultsStore) -> Vec<String> {
    let mut out = Vec::new();
    for (table, key, cols) in [
        (
            "day_stats",
            "tenant, date, department",
            "day_rows, expected, attended, late_days, early_days, missing, field_days, overtime_min",
        ),
        (
            "employee_months",
            "tenant, month, department, employee",
            "late_days, late_min, early_days, early_min, overtime_min",
        ),
        (
            "punch_stats",
            "tenant, CAST(hour AS TEXT), department",
            "late, early, out_of_range, rejected, anti_cheat",
        ),
    ] {
        let rows = sqlx::query(&format!("SELECT {key}, {cols} FROM {table}"))
            .fetch_all(store.pool())
            .await
            .unwrap();
        let nk = key.split(", ").count();
        let nc = cols.split(", ").count();
        for r in &rows {
            let vals: Vec<i64> = (nk..nk + nc).map(|i| r.try_get(i).unwrap()).collect();
            if vals.iter().all(|v| *v == 0) {
                continue;
            }
            let keys: Vec<String> = (0..nk).map(|i| r.try_get(i).unwrap()).collect();
            out.push(format!("{table} {keys:?} {vals:?}"));
        }
    }
    out.sort();
    out
}

/// Every chart of `f` from both paths; `tz` turns the dates into the
/// causes' time range.
async fn charts_agree(store: &ResultsStore, f: &Filter, tz: &str) {
    let pool = store.pool();
    for bucket in [Bucket::Day, Bucket::Week, Bucket::Month] {
        assert_eq!(
            stats::attendance_trend(pool, f, bucket).await.unwrap(),
            stats_raw::attendance_trend(pool, f, bucket).await.unwrap(),
            "trend {bucket:?} {f:?}"
        );
    }
    for rank in [Rank::Late, Rank::Early] {
        assert_eq!(
            stats::top10(pool, f, rank).await.unwrap(),
            stats_raw::top10(pool, f, rank).await.unwrap(),
            "top10 {rank:?} {f:?}"
        );
    }
    assert_eq!(
        stats::departments(pool, f).await.unwrap(),
        stats_raw::departments(pool, f).await.unwrap(),
        "departments {f:?}"
    );
    let tz = jiff::tz::TimeZone::get(tz).unwrap();
    let (a, b) = stats::ms_range(&f.from, &f.to, &tz).unwrap();
    assert_eq!(
        stats::causes(pool, f, a, b).await.unwrap(),
        stats_raw::causes(pool, f, a, b).await.unwrap(),
        "causes {f:?} {tz:?}"
    );
    assert_eq!(
        stats::overtime(pool, f).await.unwrap(),
        stats_raw::overtime(pool, f).await.unwrap(),
        "overtime {f:?}"
    );
}

async fn suite(store: &ResultsStore) {
    churn(store, 14).await;
    let kept = aggregates(store).await;
    assert!(kept.len() > 300, "{} aggregate rows", kept.len());
    let mut nonzero_cause = false;
    for row in &kept {
        nonzero_cause |= row.starts_with("punch_stats");
    }
    assert!(
        nonzero_cause,
        "the punches gave the causes nothing to count"
    );

    let ranges = [
        ("2026-01-20", "2026-03-05"), // the whole span: Feb whole, Jan and Mar partly
        ("2026-02-01", "2026-02-28"), // one whole month
        ("2026-01-25", "2026-02-10"), // across a month's end
        ("2026-02-10", "2026-02-10"), // one day
        ("2026-01-01", "2026-12-31"), // wider than the data: every month whole
        ("2026-02-03", "2026-03-31"), // to past the last row: March whole
    ];
    for (from, to) in ranges {
        for department in [None, Some("ops"), Some("nobody")] {
            let f = Filter {
                tenant: "acme".into(),
                from: from.into(),
                to: to.into(),
                department: department.map(str::to_owned),
            };
            charts_agree(store, &f, "Asia/Shanghai").await;
        }
    }
    // Midnight at 18:15 UTC: the causes read the hours' edges from punches.
    let f = Filter {
        tenant: "acme".into(),
        from: "2026-01-27".into(),
        to: "2026-02-14".into(),
        department: None,
    };
    charts_agree(store, &f, "Asia/Kathmandu").await;
    assert_eq!(
        stats::department_names(store.pool(), "acme").await.unwrap(),
        stats_raw::department_names(store.pool(), "acme")
            .await
            .unwrap()
    );

    // The definition gives the same tables.
    store.recount_stats().await.unwrap();
    assert_eq!(aggregates(store).await, kept);
}

#[tokio::test]
async fn aggregates_equal_the_raw_tables_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = ResultsStore::open_sqlite(&dir.path().join("results.sqlite"))
        .await
        .unwrap();
    suite(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_equal_the_raw_tables_postgres() {
    let pg_dir = tempfile::tempdir().unwrap();
    let pg = fencegate_testkit::Postgres::start(pg_dir.path());
    let store = ResultsStore::open(&pg.url()).await.unwrap();
    suite(&store).await;
}

#[test]
fn a_range_splits_into_whole_months_and_days() {
    let s = |from, to, lo, hi| split_range(from, to, lo, hi).unwrap();
    let months = |a: &str, b: &str| Some((a.to_owned(), b.to_owned()));
    let days = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    // A whole month.
    let p = s("2026-01-01", "2026-01-31", "2025-06-01", "2026-05-01");
    assert_eq!(p.months, months("2026-01", "2026-01"));
    assert!(p.days.is_empty());
    // The last 31 days: both ends are parts of months.
    let p = s("2026-01-18", "2026-02-17", "2025-06-01", "2026-05-01");
    assert_eq!(p.months, None);
    assert_eq!(
        p.days,
        days(&[("2026-01-18", "2026-01-31"), ("2026-02-01", "2026-02-17")])
    );
    // The same when the data ends on the 17th: February so far is whole.
    let p = s("2026-01-18", "2026-02-17", "2025-06-01", "2026-02-17");
    assert_eq!(p.months, months("2026-02", "2026-02"));
    assert_eq!(p.days, days(&[("2026-01-18", "2026-01-31")]));
    // Three months, the middle one whole; data starts on the 20th.
    let p = s("2026-01-10", "2026-03-05", "2026-01-20", "2026-03-31");
    assert_eq!(p.months, months("2026-01", "2026-02"));
    assert_eq!(p.days, days(&[("2026-03-01", "2026-03-05")]));
    // Nothing in range.
    let p = s("2026-04-01", "2026-04-30", "2026-01-20", "2026-03-31");
    assert_eq!((p.months, p.days.len()), (None, 0));
}
