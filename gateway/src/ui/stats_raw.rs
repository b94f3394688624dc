//! The dashboard's chart numbers computed straight from the raw tables
//! (`day_results`, `punches`) with one `GROUP BY` each: how every chart
//! was answered before the aggregates of `results/schema.sql` existed.
//! [`super::stats`] answers from the aggregates; these are their
//! definition, kept as the oracle of the tests that hold both equal
//! (`tests/dashboard_stats.rs`) and as the same-run baseline of the
//! dashboard bench. Nothing in the product serves a chart from here: at
//! 100,000 employees a month each query reads 3.1 M rows (docs/PERFORMANCE.md).

use sqlx::{AnyPool, Row};

use super::stats::{Bucket, Causes, DeptStats, Filter, Overtime, Rank, Ranked, TrendPoint};

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

const NOT_EXPECTED: &str = "('rest_day', 'holiday', 'on_leave')";

/// Binds `$1` tenant, `$2`/`$3` the dates, `$4`/`$5` the department.
trait ScopedRaw<'q> {
    fn scoped_raw(self, f: &'q Filter) -> Self;
}

impl<'q> ScopedRaw<'q> for AnyQuery<'q> {
    fn scoped_raw(self, f: &'q Filter) -> Self {
        self.bind(&f.tenant)
            .bind(&f.from)
            .bind(&f.to)
            .bind(f.dept())
            .bind(f.dept())
    }
}

/// The attendance rate per day, week or month.
pub async fn attendance_trend(
    pool: &AnyPool,
    f: &Filter,
    bucket: Bucket,
) -> Result<Vec<TrendPoint>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT date, CAST(COUNT(*) AS BIGINT) AS expected, \
         CAST(SUM(CASE WHEN status = 'absent' THEN 0 ELSE 1 END) AS BIGINT) AS attended \
         FROM day_results WHERE tenant = $1 AND slot = '' AND date >= $2 AND date <= $3 \
         AND ($4 = '' OR department = $5) AND closed = 1 AND status NOT IN {NOT_EXPECTED} \
         GROUP BY date ORDER BY date"
    ))
    .scoped_raw(f)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<TrendPoint> = Vec::new();
    for r in &rows {
        let date: String = r.try_get("date")?;
        let label = bucket.label(&date);
        let expected: i64 = r.try_get("expected")?;
        let attended: i64 = r.try_get("attended")?;
        match out.last_mut() {
            Some(p) if p.label == label => {
                p.expected += expected;
                p.attended += attended;
            }
            _ => out.push(TrendPoint {
                label,
                expected,
                attended,
            }),
        }
    }
    Ok(out)
}

/// The ten employees late (or leaving early) on the most days, then by
/// minutes, then by id.
pub async fn top10(pool: &AnyPool, f: &Filter, rank: Rank) -> Result<Vec<Ranked>, sqlx::Error> {
    let col = match rank {
        Rank::Late => "late_min",
        Rank::Early => "early_min",
    };
    let rows = sqlx::query(&format!(
        "SELECT employee, COALESCE(MAX(department), '') AS department, CAST(COUNT(*) AS BIGINT) AS days, \
         CAST(SUM({col}) AS BIGINT) AS minutes FROM day_results \
         WHERE tenant = $1 AND slot = '' AND date >= $2 AND date <= $3 AND ($4 = '' OR department = $5) \
         AND {col} > 0 GROUP BY employee ORDER BY days DESC, minutes DESC, employee LIMIT 10"
    ))
    .scoped_raw(f)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Ranked {
                employee: r.try_get("employee")?,
                department: r.try_get("department")?,
                days: r.try_get("days")?,
                minutes: r.try_get("minutes")?,
            })
        })
        .collect()
}

/// Every department side by side (the radar's five axes).
pub async fn departments(pool: &AnyPool, f: &Filter) -> Result<Vec<DeptStats>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT COALESCE(department, '') AS dept, \
         CAST(SUM(CASE WHEN closed = 1 AND status NOT IN {NOT_EXPECTED} THEN 1 ELSE 0 END) AS BIGINT) AS expected, \
         CAST(SUM(CASE WHEN closed = 1 AND status NOT IN {NOT_EXPECTED} AND status <> 'absent' THEN 1 ELSE 0 END) AS BIGINT) AS attended, \
         CAST(SUM(CASE WHEN late_min > 0 THEN 1 ELSE 0 END) AS BIGINT) AS late_days, \
         CAST(SUM(CASE WHEN status IN ('missing_in', 'missing_out') THEN 1 ELSE 0 END) AS BIGINT) AS missing, \
         CAST(SUM(overtime_min) AS BIGINT) AS overtime, \
         CAST(SUM(CASE WHEN status = 'field' THEN 1 ELSE 0 END) AS BIGINT) AS field \
         FROM day_results WHERE tenant = $1 AND slot = '' AND date >= $2 AND date <= $3 \
         AND ($4 = '' OR department = $5) GROUP BY COALESCE(department, '') ORDER BY dept"
    ))
    .scoped_raw(f)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DeptStats {
                department: r.try_get("dept")?,
                expected: r.try_get("expected")?,
                attended: r.try_get("attended")?,
                late_days: r.try_get("late_days")?,
                missing: r.try_get("missing")?,
                overtime_min: r.try_get("overtime")?,
                field_days: r.try_get("field")?,
            })
        })
        .collect()
}

/// Counts abnormal punches (attendance time in `[from_ms, to_ms)`, the
/// filter's dates in the tenant's zone) and missing days.
pub async fn causes(
    pool: &AnyPool,
    f: &Filter,
    from_ms: i64,
    to_ms: i64,
) -> Result<Causes, sqlx::Error> {
    let punches = super::stats::punch_causes(pool, f, from_ms, to_ms).await?;
    let missing = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM day_results WHERE tenant = $1 AND slot = '' \
         AND date >= $2 AND date <= $3 AND ($4 = '' OR department = $5) AND status IN ('missing_in', 'missing_out')",
    )
    .scoped_raw(f)
    .fetch_one(pool)
    .await?;
    Ok(Causes {
        missing: missing.try_get("n")?,
        ..punches
    })
}

/// Overtime minutes by date and by employee.
pub async fn overtime(pool: &AnyPool, f: &Filter) -> Result<Overtime, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT date, CAST(SUM(overtime_min) AS BIGINT) AS m FROM day_results WHERE tenant = $1 AND slot = '' \
         AND date >= $2 AND date <= $3 AND ($4 = '' OR department = $5) GROUP BY date ORDER BY date",
    )
    .scoped_raw(f)
    .fetch_all(pool)
    .await?;
    let by_date = rows
        .iter()
        .map(|r| Ok((r.try_get("date")?, r.try_get("m")?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let rows = sqlx::query(
        "SELECT employee, COALESCE(MAX(department), '') AS department, CAST(SUM(overtime_min) AS BIGINT) AS m \
         FROM day_results WHERE tenant = $1 AND slot = '' AND date >= $2 AND date <= $3 \
         AND ($4 = '' OR department = $5) AND overtime_min > 0 GROUP BY employee ORDER BY m DESC, employee LIMIT 200",
    )
    .scoped_raw(f)
    .fetch_all(pool)
    .await?;
    let by_employee = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get("employee")?,
                r.try_get("department")?,
                r.try_get("m")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Overtime {
        by_date,
        by_employee,
    })
}

/// The departments a tenant's day results name (for the filter).
pub async fn department_names(pool: &AnyPool, tenant: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT DISTINCT department FROM day_results WHERE tenant = $1 AND department IS NOT NULL ORDER BY department",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| r.try_get("department")).collect()
}
