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
//!   single day, and a zone whose midnight is not on a whole UTC hour;
//! - the per-employee rankings (top 10 late and early, the overtime table)
//!   equal the raw `GROUP BY` for every range between the dates at the
//!   edges of the months: ranges that start or end mid-month or both, lie
//!   in one month or span two or three, a single day, the first or last
//!   day of a month, days 30 and 31, and ranges reaching past the data.
//!
//! On SQLite, and on a real PostgreSQL (one schema, one set of queries).

use fencegate::results::store::PunchRow;
use fencegate::results::{DayRow, ResultsStore};
use fencegate::ui::stats::{self, Bucket, Filter, MonthPart, Rank, month_span};
use fencegate::ui::stats_raw;
use fencegate_schema::{AttendanceStatus, PunchKind, Verdict, anomaly};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod results_rig;
use results_rig::aggregates;

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

/// The per-employee rankings of `f` from both paths.
async fn rankings_agree(store: &ResultsStore, f: &Filter) {
    let pool = store.pool();
    for rank in [Rank::Late, Rank::Early] {
        assert_eq!(
            stats::top10(pool, f, rank).await.unwrap(),
            stats_raw::top10(pool, f, rank).await.unwrap(),
            "top10 {rank:?} {f:?}"
        );
    }
    assert_eq!(
        stats::overtime(pool, f).await.unwrap().by_employee,
        stats_raw::overtime(pool, f).await.unwrap().by_employee,
        "overtime by employee {f:?}"
    );
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
        ("2026-01-21", "2026-02-27"), // two months, both ends mid-month
        ("2026-01-22", "2026-03-03"), // three months, the middle one whole
        ("2026-02-05", "2026-02-20"), // the middle of one month
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
    // The rankings over every range between dates at the months' edges
    // (running sums to the day before the first and to the last, the
    // total for a month's last day): 210 ranges, each in one month, two
    // or three; starting or ending on a month's first, last or a middle
    // day (days 30 and 31 of January and March, 27 and 28 of February);
    // one day long; before, at and past the data's ends (01-20, 03-05).
    let edges = [
        "2025-12-31",
        "2026-01-19",
        "2026-01-20",
        "2026-01-21",
        "2026-01-29",
        "2026-01-30",
        "2026-01-31",
        "2026-02-01",
        "2026-02-02",
        "2026-02-13",
        "2026-02-14",
        "2026-02-15",
        "2026-02-27",
        "2026-02-28",
        "2026-03-01",
        "2026-03-02",
        "2026-03-05",
        "2026-03-06",
        "2026-03-30",
        "2026-03-31",
    ];
    for (i, from) in edges.iter().enumerate() {
        for to in &edges[i..] {
            for department in [None, Some("ops")] {
                let f = Filter {
                    tenant: "acme".into(),
                    from: (*from).into(),
                    to: (*to).into(),
                    department: department.map(str::to_owned),
                };
                rankings_agree(store, &f).await;
            }
        }
    }
    // Decades: the months are read as a range, not named one by one.
    for department in [None, Some("ops")] {
        let f = Filter {
            tenant: "acme".into(),
            from: "1990-01-15".into(),
            to: "2099-12-30".into(),
            department: department.map(str::to_owned),
        };
        rankings_agree(store, &f).await;
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
fn a_range_is_read_as_its_first_and_last_month() {
    let part = |month: &str, first, last, len| MonthPart {
        month: month.into(),
        first,
        last,
        len,
    };
    let span = |from, to| {
        let s = month_span(from, to).unwrap();
        (s.first, s.last)
    };
    // A whole month.
    assert_eq!(
        span("2026-01-01", "2026-01-31"),
        (part("2026-01", 1, 31, 31), part("2026-01", 1, 31, 31))
    );
    // The last 31 days: the end of one month and the start of the next.
    assert_eq!(
        span("2026-01-18", "2026-02-17"),
        (part("2026-01", 18, 31, 31), part("2026-02", 1, 17, 28))
    );
    // Three months: the middle one is whole, and not named.
    assert_eq!(
        span("2026-01-10", "2026-03-05"),
        (part("2026-01", 10, 31, 31), part("2026-03", 1, 5, 31))
    );
    // One day; a leap February.
    assert_eq!(
        span("2028-02-29", "2028-02-29"),
        (part("2028-02", 29, 29, 29), part("2028-02", 29, 29, 29))
    );
    // Across a year's end.
    assert_eq!(
        span("2025-12-20", "2026-01-05"),
        (part("2025-12", 20, 31, 31), part("2026-01", 1, 5, 31))
    );
    // Every month read, the ends and those between.
    assert_eq!(
        month_span("2025-11-30", "2026-02-01").unwrap().months(),
        ["2025-11", "2025-12", "2026-01", "2026-02"]
    );
    assert_eq!(
        month_span("2026-02-03", "2026-02-05").unwrap().months(),
        ["2026-02"]
    );
    // Empty or not dates.
    assert_eq!(month_span("2026-02-02", "2026-02-01"), None);
    assert_eq!(month_span("2026-02-30", "2026-03-01"), None);
    assert_eq!(month_span("", "2026-03-01"), None);
}
