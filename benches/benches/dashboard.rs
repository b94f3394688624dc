//! The HR dashboard's chart queries (`fencegate::ui::stats`) on the
//! embedded SQLite results store at 100,000 employees × 31 days: 3.1 M day
//! rows and 6.2 M punch rows of one tenant, every query over the whole
//! month and every department (the largest answer a tenant admin can ask
//! for), the same for one department of 40, over 2026-01-02..31 (a range
//! that is not a whole month: the end of a month, the dashboard's default
//! "last 31 days" shape) and over 2026-01-09..23 (the middle half of a
//! month, the rankings' worst single-month case before the running sums).
//! The target is 300 ms per chart. Methods and locations read the
//! log, not the store, and are not measured here.
//!
//! `agg/...` is the product's path (the aggregates); `raw/...` the same
//! charts as one `GROUP BY` over the raw tables (`ui::stats_raw`, how the
//! charts were answered before), the same-run baseline. The whole-tenant
//! raw queries take 10–30 s each: filter them out (`-- agg`) unless they
//! are what you compare. `old/...` is the rankings' previous path (before
//! results schema 7), kept here as the same-run baseline of the running
//! sums: whole months from `employee_months`' totals, the other days of
//! the range from `day_results` through partial covering indexes, which
//! the bench creates for it (the product's schema no longer has them).
//!
//! `FENCEGATE_DASHBOARD_DAYS=59` seeds January and February instead (5.9 M
//! day rows) and adds the range 2026-01-16..02-14 (two half months: the
//! rankings read two rows per employee). The rows are generated inside
//! SQLite (`WITH RECURSIVE`), so setting up takes minutes, not an hour
//! through the materializer; the aggregates are then filled by
//! `ResultsStore::recount_stats`, which `tests/dashboard_stats.rs` holds
//! equal to what the materializer writes row by row. Set
//! `FENCEGATE_DASHBOARD_STORE` to a file path to keep the seeded store
//! there and reuse it in the next run (it is seeded again when its days
//! or its results schema version differ). Before measuring, the bench
//! checks that every chart of one department answers the same on both
//! paths, and every ranking of every range the same on the new and the
//! old path.
//!
//! `cargo bench -p fencegate-benches --bench dashboard`

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fencegate::results::ResultsStore;
use fencegate::ui::stats::{self, Bucket, Filter, Rank};
use fencegate::ui::stats_raw;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EMPLOYEES: i64 = 100_000;
/// Days seeded unless `FENCEGATE_DASHBOARD_DAYS` says otherwise.
const DAYS: i64 = 31;
/// 2026-01-01T00:00+08:00.
const DAY0_MS: i64 = 1_767_196_800_000;

/// The store's days: `FENCEGATE_DASHBOARD_DAYS`, else [`DAYS`].
fn days() -> i64 {
    std::env::var("FENCEGATE_DASHBOARD_DAYS").map_or(DAYS, |v| {
        v.parse()
            .ok()
            .filter(|d| (1..=365).contains(d))
            .expect("FENCEGATE_DASHBOARD_DAYS: a number of days from 1 to 365")
    })
}

/// Opens the store at `FENCEGATE_DASHBOARD_STORE` (else in `dir`) and
/// seeds it unless it already holds `days` seeded days (a store of another
/// results schema version was dropped by `open`, and is seeded again).
fn store(rt: &tokio::runtime::Runtime, dir: &Path, days: i64) -> ResultsStore {
    let path = std::env::var_os("FENCEGATE_DASHBOARD_STORE")
        .map_or_else(|| dir.join("results.sqlite"), PathBuf::from);
    let store = rt.block_on(ResultsStore::open_sqlite(&path)).unwrap();
    let seeded = rt.block_on(async {
        let mut tx = store.begin().await.unwrap();
        let v = ResultsStore::meta(&mut tx, "dashboard_bench_days")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        v
    });
    if seeded != Some(days) {
        let started = fencegate_benches::clock::now();
        rt.block_on(async {
            store.clear().await.unwrap();
            seed(&store, days).await;
            store.recount_stats().await.unwrap();
            let mut tx = store.begin().await.unwrap();
            ResultsStore::set_meta(&mut tx, "dashboard_bench_days", days)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        });
        eprintln!("seeded {days} days in {:.0?}", started.elapsed());
    }
    // The old path's partial covering indexes (results schema 6).
    for sql in old::INDEXES {
        rt.block_on(sqlx::query(sql).execute(store.pool())).unwrap();
    }
    store
}

async fn seed(store: &ResultsStore, days: i64) {
    // A Thursday start: days 2, 3, 9, 10, ... are the weekend.
    sqlx::query(
        "WITH RECURSIVE e(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM e WHERE i < $1), \
         d(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM d WHERE j < $2), \
         x AS (SELECT i, j, (i * 7 + j * 13) % 100 AS r FROM e, d) \
         INSERT INTO day_results (tenant, employee, date, slot, department, grp, status, late_min, early_min, \
         worked_min, overtime_min, in_ms, out_ms, closed, revision) \
         SELECT 'acme', printf('E%06d', i), date('2026-01-01', '+' || j || ' days'), '', 'dept-' || (i % 40), 'office', \
         CASE WHEN (j + 4) % 7 IN (5, 6) THEN 'rest_day' WHEN r < 3 THEN 'absent' WHEN r < 10 THEN 'late' \
              WHEN r < 14 THEN 'early_leave' WHEN r < 16 THEN 'missing_out' WHEN r < 20 THEN 'field' ELSE 'normal' END, \
         CASE WHEN r >= 3 AND r < 10 THEN r * 3 ELSE 0 END, CASE WHEN r >= 10 AND r < 14 THEN r ELSE 0 END, \
         480, CASE WHEN r > 60 THEN r - 60 ELSE 0 END, NULL, NULL, 1, 0 FROM x",
    )
    .bind(EMPLOYEES - 1)
    .bind(days - 1)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "WITH RECURSIVE e(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM e WHERE i < $1), \
         d(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM d WHERE j < $2), \
         k(n) AS (SELECT 0 UNION ALL SELECT 1) \
         INSERT INTO punches (record_id, lsn, tenant, employee, kind, at_ms, verdict, status, needs_approval, \
         decision, flags, department, slot) \
         SELECT printf('%06d-%02d-%d', i, j, n), (i * 31 + j) * 2 + n, 'acme', printf('E%06d', i), \
         CASE n WHEN 0 THEN 'in' ELSE 'out' END, $3 + j * 86400000 + 32400000 + n * 32400000 + i % 3600000, \
         CASE WHEN (i + j) % 50 = 0 THEN 'out_of_range' WHEN (i + j) % 97 = 0 THEN 'rejected' ELSE 'accepted' END, \
         CASE WHEN (i * 7 + j * 13) % 100 BETWEEN 3 AND 9 AND n = 0 THEN 'late' ELSE 'normal' END, \
         0, NULL, CASE WHEN (i + j) % 200 = 0 THEN 4 ELSE 0 END, 'dept-' || (i % 40), NULL \
         FROM e, d, k",
    )
    .bind(EMPLOYEES - 1)
    .bind(days - 1)
    .bind(DAY0_MS)
    .execute(store.pool())
    .await
    .unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let days = days();
    let store = store(&rt, dir.path(), days);
    let pool = store.pool();
    let all = Filter {
        tenant: "acme".into(),
        from: "2026-01-01".into(),
        to: "2026-01-31".into(),
        department: None,
    };
    let one = Filter {
        department: Some("dept-7".into()),
        ..all.clone()
    };
    let range = |from: &str, to: &str| Filter {
        from: from.into(),
        to: to.into(),
        ..all.clone()
    };
    let unaligned = range("2026-01-02", "2026-01-31");
    let mid = range("2026-01-09", "2026-01-23");
    let halves = range("2026-01-16", "2026-02-14");
    // The causes' attendance-time range of a filter's dates (+08:00).
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let ms = |f: &Filter| stats::ms_range(&f.from, &f.to, &tz).unwrap();
    let (a, b) = ms(&all);
    assert_eq!((a, b), (DAY0_MS, DAY0_MS + DAYS * 86_400_000));
    let mut scopes = vec![
        ("tenant", &all),
        ("department", &one),
        ("tenant_unaligned", &unaligned),
        ("tenant_mid", &mid),
    ];
    if days >= 45 {
        scopes.push(("tenant_halves", &halves));
    }
    rt.block_on(async {
        let f = &one;
        assert_eq!(
            stats::attendance_trend(pool, f, Bucket::Day).await.unwrap(),
            stats_raw::attendance_trend(pool, f, Bucket::Day)
                .await
                .unwrap()
        );
        assert_eq!(
            stats::top10(pool, f, Rank::Late).await.unwrap(),
            stats_raw::top10(pool, f, Rank::Late).await.unwrap()
        );
        assert_eq!(
            stats::departments(pool, f).await.unwrap(),
            stats_raw::departments(pool, f).await.unwrap()
        );
        assert_eq!(
            stats::causes(pool, f, a, b).await.unwrap(),
            stats_raw::causes(pool, f, a, b).await.unwrap()
        );
        assert_eq!(
            stats::overtime(pool, f).await.unwrap(),
            stats_raw::overtime(pool, f).await.unwrap()
        );
        for (scope, f) in &scopes {
            assert_eq!(
                stats::top10(pool, f, Rank::Late).await.unwrap(),
                old::top10_late(pool, f).await,
                "top 10 late, {scope}"
            );
            assert_eq!(
                stats::overtime(pool, f).await.unwrap().by_employee,
                old::overtime_by_employee(pool, f).await,
                "overtime by employee, {scope}"
            );
        }
    });
    let mut g = c.benchmark_group(format!("dashboard_100k_x{days}"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    for &(scope, f) in &scopes {
        g.bench_function(format!("agg/trend_by_day/{scope}"), |bch| {
            bch.iter(|| {
                rt.block_on(stats::attendance_trend(pool, f, Bucket::Day))
                    .unwrap()
            })
        });
        g.bench_function(format!("agg/top10_late/{scope}"), |bch| {
            bch.iter(|| rt.block_on(stats::top10(pool, f, Rank::Late)).unwrap())
        });
        // Early leavers read the running sums laid out last (the deepest
        // columns of the row): the rankings' slowest layout case.
        g.bench_function(format!("agg/top10_early/{scope}"), |bch| {
            bch.iter(|| rt.block_on(stats::top10(pool, f, Rank::Early)).unwrap())
        });
        g.bench_function(format!("agg/departments/{scope}"), |bch| {
            bch.iter(|| rt.block_on(stats::departments(pool, f)).unwrap())
        });
        let (a, b) = ms(f);
        g.bench_function(format!("agg/causes/{scope}"), |bch| {
            bch.iter(|| rt.block_on(stats::causes(pool, f, a, b)).unwrap())
        });
        g.bench_function(format!("agg/overtime/{scope}"), |bch| {
            bch.iter(|| rt.block_on(stats::overtime(pool, f)).unwrap())
        });
        g.bench_function(format!("old/top10_late/{scope}"), |bch| {
            bch.iter(|| rt.block_on(old::top10_late(pool, f)))
        });
        g.bench_function(format!("old/overtime_by_employee/{scope}"), |bch| {
            bch.iter(|| rt.block_on(old::overtime_by_employee(pool, f)))
        });
    }
    g.bench_function("agg/department_names/tenant", |bch| {
        bch.iter(|| rt.block_on(stats::department_names(pool, "acme")).unwrap())
    });
    for (scope, f) in [("tenant", &all), ("department", &one)] {
        g.bench_function(format!("raw/trend_by_day/{scope}"), |bch| {
            bch.iter(|| {
                rt.block_on(stats_raw::attendance_trend(pool, f, Bucket::Day))
                    .unwrap()
            })
        });
        g.bench_function(format!("raw/top10_late/{scope}"), |bch| {
            bch.iter(|| rt.block_on(stats_raw::top10(pool, f, Rank::Late)).unwrap())
        });
        g.bench_function(format!("raw/departments/{scope}"), |bch| {
            bch.iter(|| rt.block_on(stats_raw::departments(pool, f)).unwrap())
        });
        g.bench_function(format!("raw/causes/{scope}"), |bch| {
            bch.iter(|| rt.block_on(stats_raw::causes(pool, f, a, b)).unwrap())
        });
        g.bench_function(format!("raw/overtime/{scope}"), |bch| {
            bch.iter(|| rt.block_on(stats_raw::overtime(pool, f)).unwrap())
        });
    }
    g.finish();
}

/// The rankings' path before results schema 7, the same-run baseline of
/// the running sums: a month is read whole from `employee_months`' totals
/// when every row it can have lies in the range (the range covers it, or
/// its uncovered days have no rows), the other days of the range from
/// `day_results` through a partial covering index of the rows that count.
mod old {
    use fencegate::ui::stats::{Filter, Ranked};
    use sqlx::{AnyPool, Row};

    /// The partial covering indexes the old path read day rows through.
    pub const INDEXES: [&str; 2] = [
        "CREATE INDEX IF NOT EXISTS day_results_late ON day_results (tenant, date, employee, department, late_min) WHERE slot = '' AND late_min > 0",
        "CREATE INDEX IF NOT EXISTS day_results_overtime ON day_results (tenant, date, employee, department, overtime_min) WHERE slot = '' AND overtime_min > 0",
    ];

    /// Whole months and the other days' ranges of `[from, to]`, given the
    /// first and last date with rows.
    fn split(f: &Filter, lo: &str, hi: &str) -> (Vec<String>, Vec<(String, String)>) {
        use jiff::civil::Date;
        let (from, to): (Date, Date) = (f.from.parse().unwrap(), f.to.parse().unwrap());
        let (lo, hi): (Date, Date) = (lo.parse().unwrap(), hi.parse().unwrap());
        let (mut months, mut days) = (Vec::new(), Vec::new());
        let (a, b) = (from.max(lo), to.min(hi));
        let mut m = a.first_of_month();
        while a <= b && m <= b {
            let last = m.last_of_month();
            if from <= m.max(lo) && to >= last.min(hi) {
                months.push(m.strftime("%Y-%m").to_string());
            } else {
                days.push((a.max(m).to_string(), b.min(last).to_string()));
            }
            m = last.tomorrow().unwrap();
        }
        (months, days)
    }

    async fn per_employee(
        pool: &AnyPool,
        f: &Filter,
        (month_days, day_days, col): (&str, &str, &str),
        order: &str,
    ) -> Vec<(String, String, i64, i64)> {
        let r =
            sqlx::query("SELECT MIN(date) AS lo, MAX(date) AS hi FROM day_stats WHERE tenant = $1")
                .bind(&f.tenant)
                .fetch_one(pool)
                .await
                .unwrap();
        let (lo, hi): (String, String) = (r.try_get("lo").unwrap(), r.try_get("hi").unwrap());
        let (months, days) = split(f, &lo, &hi);
        let dept = f.department.clone().unwrap_or_default();
        let mut sql = Vec::new();
        let mut binds = Vec::new();
        let mut n = 0;
        for m in &months {
            sql.push(format!(
                "SELECT employee, department, {month_days} AS days, {col} AS minutes FROM employee_months \
                 WHERE tenant = ${} AND month = ${} AND (${} = '' OR department = ${}) AND {col} > 0",
                n + 1,
                n + 2,
                n + 3,
                n + 4
            ));
            n += 4;
            binds.push(vec![
                f.tenant.clone(),
                m.clone(),
                dept.clone(),
                dept.clone(),
            ]);
        }
        for (d0, d1) in &days {
            sql.push(format!(
                "SELECT employee, COALESCE(department, '') AS department, {day_days} AS days, {col} AS minutes FROM day_results \
                 WHERE tenant = ${} AND slot = '' AND date >= ${} AND date <= ${} AND (${} = '' OR department = ${}) AND {col} > 0",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5
            ));
            n += 5;
            binds.push(vec![
                f.tenant.clone(),
                d0.clone(),
                d1.clone(),
                dept.clone(),
                dept.clone(),
            ]);
        }
        if sql.is_empty() {
            return Vec::new();
        }
        let sql = format!(
            "SELECT employee, MAX(department) AS department, CAST(SUM(days) AS BIGINT) AS days, \
             CAST(SUM(minutes) AS BIGINT) AS minutes FROM ({}) u GROUP BY employee ORDER BY {order}",
            sql.join(" UNION ALL ")
        );
        let mut q = sqlx::query(&sql);
        for v in binds.iter().flatten() {
            q = q.bind(v);
        }
        q.fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.try_get("employee").unwrap(),
                    r.try_get("department").unwrap(),
                    r.try_get("days").unwrap(),
                    r.try_get("minutes").unwrap(),
                )
            })
            .collect()
    }

    /// `ui::stats::top10(.., Rank::Late)` the old way.
    pub async fn top10_late(pool: &AnyPool, f: &Filter) -> Vec<Ranked> {
        per_employee(
            pool,
            f,
            ("late_days", "1", "late_min"),
            "days DESC, minutes DESC, employee LIMIT 10",
        )
        .await
        .into_iter()
        .map(|(employee, department, days, minutes)| Ranked {
            employee,
            department,
            days,
            minutes,
        })
        .collect()
    }

    /// `ui::stats::overtime(..).by_employee` the old way.
    pub async fn overtime_by_employee(pool: &AnyPool, f: &Filter) -> Vec<(String, String, i64)> {
        per_employee(
            pool,
            f,
            ("0", "0", "overtime_min"),
            "minutes DESC, employee LIMIT 200",
        )
        .await
        .into_iter()
        .map(|(e, d, _, m)| (e, d, m))
        .collect()
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
