//! The numbers behind every dashboard chart: SQL over the day results
//! store (`day_results`, `punches`) and a pure fold over punch records of
//! the log (methods, devices and locations, which the store does not keep).
//! Nothing here renders; the SVG and the CSV of a chart are both drawn from
//! the same structs, so a download always equals what the chart shows.
//!
//! Every query reads the dashboard's aggregates (`day_stats`,
//! `employee_months`, `punch_stats` in `results/schema.sql`), which the
//! materializer keeps in the same transaction as the rows they count: a
//! month of a 100,000-employee tenant is about a thousand `day_stats` rows
//! instead of 3.1 M day rows, and a ranking reads one `employee_months` row
//! per employee and month whatever days of it the range covers (running
//! sums within the month). `stats_raw.rs` has the same charts
//! over the raw tables, the definition the tests hold these equal to.
//! Definitions (docs/DASHBOARD.md):
//!
//! - an *expected* employee day is a closed day row (`slot = ''`) whose
//!   status is not `rest_day`, `holiday` or `on_leave`; it is *attended*
//!   unless its status is `absent`;
//! - the attendance rate is attended / expected.

use std::collections::BTreeMap;

use fencegate_schema::{PunchMethod, RecordBodyView, RecordView};
use sqlx::{AnyPool, Row};

/// Which employee days a chart covers: one tenant, an inclusive range of
/// local dates (`YYYY-MM-DD` in the tenant's zone, as `day_results.date`),
/// optionally one department.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The tenant.
    pub tenant: String,
    /// First date, inclusive.
    pub from: String,
    /// Last date, inclusive.
    pub to: String,
    /// Only this department (a supervisor's is always set).
    pub department: Option<String>,
}

impl Filter {
    pub(crate) fn dept(&self) -> &str {
        self.department.as_deref().unwrap_or("")
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds the filter's scope to a day-results query: `$1` tenant, `$2`/`$3`
/// the date range, `$4`/`$5` the department (`$4 = '' OR department = $5`),
/// in that order, so every chart is scoped the same way.
trait Scoped<'q> {
    fn scoped(self, f: &'q Filter) -> Self;
}

impl<'q> Scoped<'q> for AnyQuery<'q> {
    fn scoped(self, f: &'q Filter) -> Self {
        self.bind(&f.tenant)
            .bind(&f.from)
            .bind(&f.to)
            .bind(f.dept())
            .bind(f.dept())
    }
}

/// How the attendance-rate trend groups days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// One point per date.
    Day,
    /// One point per ISO week (`2026-W07`).
    Week,
    /// One point per month (`2026-02`).
    Month,
}

impl Bucket {
    /// Parses `day`, `week` or `month`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    pub(crate) fn label(self, date: &str) -> String {
        match self {
            Self::Day => date.to_owned(),
            Self::Month => date.get(..7).unwrap_or(date).to_owned(),
            Self::Week => match date.parse::<jiff::civil::Date>() {
                Ok(d) => {
                    let w = d.iso_week_date();
                    format!("{:04}-W{:02}", w.year(), w.week())
                }
                Err(_) => date.to_owned(),
            },
        }
    }
}

/// One point of the attendance-rate trend.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendPoint {
    /// The date, week or month.
    pub label: String,
    /// Expected employee days.
    pub expected: i64,
    /// Attended employee days.
    pub attended: i64,
}

impl TrendPoint {
    /// Attended / expected, in percent (0 when nothing was expected).
    pub fn rate_pct(&self) -> f64 {
        pct(self.attended, self.expected)
    }
}

/// `part / whole` in percent, rounded to one decimal (the CSV and the
/// chart's labels show the same rounding).
pub fn pct(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        (part as f64 * 1000.0 / whole as f64).round() / 10.0
    }
}

/// The attendance rate per day, week or month.
pub async fn attendance_trend(
    pool: &AnyPool,
    f: &Filter,
    bucket: Bucket,
) -> Result<Vec<TrendPoint>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT date, CAST(SUM(expected) AS BIGINT) AS expected, CAST(SUM(attended) AS BIGINT) AS attended \
         FROM day_stats WHERE tenant = $1 AND date >= $2 AND date <= $3 AND ($4 = '' OR department = $5) \
         GROUP BY date HAVING SUM(expected) > 0 ORDER BY date",
    )
    .scoped(f)
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

/// One employee of a top-10 list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    /// Employee id.
    pub employee: String,
    /// Department (empty when none).
    pub department: String,
    /// Days late (or left early).
    pub days: i64,
    /// Minutes late (or early) over those days.
    pub minutes: i64,
}

/// Which top-10 list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    /// By days with `late_min > 0`.
    Late,
    /// By days with `early_min > 0`.
    Early,
}

/// The ten employees late (or leaving early) on the most days, then by
/// minutes, then by id.
pub async fn top10(pool: &AnyPool, f: &Filter, rank: Rank) -> Result<Vec<Ranked>, sqlx::Error> {
    let sum = match rank {
        Rank::Late => PerEmployee {
            days: Some("late_days"),
            minutes: "late_min",
        },
        Rank::Early => PerEmployee {
            days: Some("early_days"),
            minutes: "early_min",
        },
    };
    let rows = per_employee(pool, f, sum, "days DESC, minutes DESC, employee LIMIT 10").await?;
    Ok(rows
        .into_iter()
        .map(|(employee, department, days, minutes)| Ranked {
            employee,
            department,
            days,
            minutes,
        })
        .collect())
}

/// Which of `employee_months`' sums a per-employee ranking adds up (names
/// of `results::store::MONTH_SUMS`): minutes, and the days with minutes
/// (none for the overtime table).
#[derive(Debug, Clone, Copy)]
struct PerEmployee {
    days: Option<&'static str>,
    minutes: &'static str,
}

/// The days `first..=last` of `month` that a range covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthPart {
    /// `YYYY-MM`.
    pub month: String,
    /// First day of the month covered (1 to 31).
    pub first: u32,
    /// Last day of the month covered.
    pub last: u32,
    /// Days in the month.
    pub len: u32,
}

impl MonthPart {
    /// `sum` over the part's days, as an SQL expression over an
    /// `employee_months` row: the running sum to the last day (the total
    /// when that is the month's last) minus the running sum to the day
    /// before the first (none when the first is the 1st).
    fn sum_sql(&self, sum: &str) -> String {
        use crate::results::store::run_column;
        let to = if self.last >= self.len {
            sum.to_owned()
        } else {
            run_column(sum, self.last)
        };
        if self.first <= 1 {
            to
        } else {
            format!("({to} - {})", run_column(sum, self.first - 1))
        }
    }
}

/// The months a range of dates touches, as the rankings read them: the
/// first and the last (the same month when the range lies in one), each
/// with the days of it in the range; every month between is covered whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthSpan {
    /// The range's first month.
    pub first: MonthPart,
    /// The range's last month.
    pub last: MonthPart,
}

impl MonthSpan {
    /// Every month from the first to the last (`YYYY-MM`).
    pub fn months(&self) -> Vec<String> {
        let parse = |m: &str| format!("{m}-01").parse::<jiff::civil::Date>().ok();
        let (Some(mut m), Some(last)) = (parse(&self.first.month), parse(&self.last.month)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while m <= last {
            out.push(m.strftime("%Y-%m").to_string());
            match m.last_of_month().tomorrow() {
                Ok(next) => m = next,
                Err(_) => break,
            }
        }
        out
    }
}

/// The months of `[from, to]` (see [`MonthSpan`]); `None` when a date does
/// not parse or the range is empty.
pub fn month_span(from: &str, to: &str) -> Option<MonthSpan> {
    use jiff::civil::Date;
    let (from, to): (Date, Date) = (from.parse().ok()?, to.parse().ok()?);
    if from > to {
        return None;
    }
    let part = |d: Date, first: i8, last: i8| MonthPart {
        month: d.strftime("%Y-%m").to_string(),
        first: first.unsigned_abs().into(),
        last: last.unsigned_abs().into(),
        len: d.days_in_month().unsigned_abs().into(),
    };
    if (from.year(), from.month()) == (to.year(), to.month()) {
        let p = part(from, from.day(), to.day());
        return Some(MonthSpan {
            first: p.clone(),
            last: p,
        });
    }
    Some(MonthSpan {
        first: part(from, from.day(), from.days_in_month()),
        last: part(to, 1, to.day()),
    })
}

/// The most months a ranking names one by one (ten years).
const MONTHS_IN: usize = 120;

/// `(employee, department, days, minutes)` summed over the filter's range
/// for employees with minutes, ordered and limited by `order`.
///
/// One scan of `employee_months` over the range's months, one row per
/// employee, month and department: a month covered whole adds its totals,
/// the range's first and last month the part in range, from the running
/// sums (`MonthPart::sum_sql`). So any range reads the same rows as its
/// whole months would, and no day rows (docs/DASHBOARD.md, "How the
/// numbers are kept"). The department shown is the greatest among the
/// rows with minutes in range, as `MAX(department)` over the day rows
/// that count: a department's row with minutes only outside the range
/// does not count. (Minutes are never negative, as everywhere the
/// aggregates count them: a row's part is positive exactly when one of
/// its days in range counts.)
async fn per_employee(
    pool: &AnyPool,
    f: &Filter,
    sum: PerEmployee,
    order: &str,
) -> Result<Vec<(String, String, i64, i64)>, sqlx::Error> {
    let Some(span) = month_span(&f.from, &f.to) else {
        return Ok(Vec::new());
    };
    let one_month = span.first.month == span.last.month;
    // Placeholders in order, each bound once (as every engine reads them):
    // the tenant, every month of the range (an `IN` list, so that one
    // department's rows are found by the key (tenant, month, department)
    // instead of by reading every department's), the two months at the
    // ends, the department.
    // A range of decades is read as a range of months instead (any
    // length within the engines' limits on parameters): its rankings are
    // slow anyway, a department's no slower than the tenant's.
    let months = span.months();
    let listed = months.len() <= MONTHS_IN;
    let months = if listed {
        months
    } else {
        vec![span.first.month.clone(), span.last.month.clone()]
    };
    let mut n = 1;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let month_list: Vec<String> = months.iter().map(|_| next()).collect();
    let month_sql = if listed {
        format!("month IN ({})", month_list.join(", "))
    } else {
        format!("month >= {} AND month <= {}", month_list[0], month_list[1])
    };
    let ends = (!one_month).then(|| (next(), next()));
    let dept = f.dept();
    let dept_sql = if dept.is_empty() {
        String::new()
    } else {
        format!("AND department = {}", next())
    };
    // The part in range of a row's sum.
    let in_range = |s: &str| match &ends {
        None => span.first.sum_sql(s),
        Some((first, last)) => format!(
            "CASE month WHEN {first} THEN {} WHEN {last} THEN {} ELSE {s} END",
            span.first.sum_sql(s),
            span.last.sum_sql(s)
        ),
    };
    // Only rows with minutes in range: a row's days in range are counted
    // days with minutes, so the rows left out add nothing but their
    // department, which must not show (and the grouping, nearly all of a
    // ranking's cost, groups fewer rows).
    let days = sum.days.map_or_else(|| "0".to_owned(), in_range);
    let minutes = in_range(sum.minutes);
    let sql = format!(
        "SELECT employee, MAX(department) AS department, \
         CAST(SUM({days}) AS BIGINT) AS days, CAST(SUM({minutes}) AS BIGINT) AS minutes \
         FROM employee_months WHERE tenant = $1 AND {month_sql} {dept_sql} AND {minutes} > 0 \
         GROUP BY employee ORDER BY {order}"
    );
    let mut q = sqlx::query(&sql).bind(&f.tenant);
    for m in &months {
        q = q.bind(m);
    }
    if ends.is_some() {
        q = q.bind(&span.first.month).bind(&span.last.month);
    }
    if !dept.is_empty() {
        q = q.bind(dept);
    }
    let rows = q.fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("employee")?,
                r.try_get("department")?,
                r.try_get("days")?,
                r.try_get("minutes")?,
            ))
        })
        .collect()
}

/// One department's axes of the radar.
#[derive(Debug, Clone, PartialEq)]
pub struct DeptStats {
    /// Department (empty: employees without one).
    pub department: String,
    /// Expected employee days (closed).
    pub expected: i64,
    /// Attended of those.
    pub attended: i64,
    /// Day rows with `late_min > 0`.
    pub late_days: i64,
    /// Day rows `missing_in` or `missing_out`.
    pub missing: i64,
    /// Overtime, minutes.
    pub overtime_min: i64,
    /// Day rows `field`.
    pub field_days: i64,
}

impl DeptStats {
    /// Attendance rate, percent.
    pub fn attendance_pct(&self) -> f64 {
        pct(self.attended, self.expected)
    }
    /// Late days over attended days, percent.
    pub fn late_pct(&self) -> f64 {
        pct(self.late_days, self.attended)
    }
    /// Field days over attended days, percent.
    pub fn field_pct(&self) -> f64 {
        pct(self.field_days, self.attended)
    }
    /// Overtime in hours, one decimal.
    pub fn overtime_h(&self) -> f64 {
        hours(self.overtime_min)
    }
}

/// Minutes as hours, one decimal.
pub fn hours(min: i64) -> f64 {
    (min as f64 / 6.0).round() / 10.0
}

/// Every department side by side (the radar's five axes).
pub async fn departments(pool: &AnyPool, f: &Filter) -> Result<Vec<DeptStats>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT department AS dept, CAST(SUM(expected) AS BIGINT) AS expected, \
         CAST(SUM(attended) AS BIGINT) AS attended, CAST(SUM(late_days) AS BIGINT) AS late_days, \
         CAST(SUM(missing) AS BIGINT) AS missing, CAST(SUM(overtime_min) AS BIGINT) AS overtime, \
         CAST(SUM(field_days) AS BIGINT) AS field \
         FROM day_stats WHERE tenant = $1 AND date >= $2 AND date <= $3 AND ($4 = '' OR department = $5) \
         GROUP BY department HAVING SUM(day_rows) > 0 ORDER BY dept",
    )
    .scoped(f)
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

/// Abnormal punches and days by cause (the pie), in a fixed order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Causes {
    /// Punches judged late.
    pub late: i64,
    /// Punches judged early leave.
    pub early: i64,
    /// Day rows with a missing clock-in or clock-out.
    pub missing: i64,
    /// GPS punches outside every fence.
    pub out_of_range: i64,
    /// Punches rejected by the rules (Wi-Fi, QR, terminal or dual checks).
    pub rejected: i64,
    /// Punches carrying an anti-cheat flag (any but `offline`).
    pub anti_cheat: i64,
}

impl Causes {
    /// `(key, count)` in the pie's order; keys name the i18n labels.
    pub fn slices(&self) -> [(&'static str, i64); 6] {
        [
            ("cause_late", self.late),
            ("cause_early", self.early),
            ("cause_missing", self.missing),
            ("cause_out_of_range", self.out_of_range),
            ("cause_rejected", self.rejected),
            ("cause_anti_cheat", self.anti_cheat),
        ]
    }
}

/// Counts abnormal punches (attendance time in `[from_ms, to_ms)`, the
/// filter's dates in the tenant's zone) and missing days. Whole hours come
/// from `punch_stats`; the parts of an hour at either end (a zone whose
/// offset is not whole hours) from `punches`.
pub async fn causes(
    pool: &AnyPool,
    f: &Filter,
    from_ms: i64,
    to_ms: i64,
) -> Result<Causes, sqlx::Error> {
    use crate::results::store::HOUR_MS;
    let first = from_ms.div_euclid(HOUR_MS) + i64::from(from_ms.rem_euclid(HOUR_MS) != 0);
    let end = to_ms.div_euclid(HOUR_MS);
    let mut c = Causes::default();
    let mut add = |o: Causes| {
        c.late += o.late;
        c.early += o.early;
        c.out_of_range += o.out_of_range;
        c.rejected += o.rejected;
        c.anti_cheat += o.anti_cheat;
    };
    if first >= end {
        add(punch_causes(pool, f, from_ms, to_ms).await?);
    } else {
        let r = sqlx::query(
            "SELECT CAST(COALESCE(SUM(late), 0) AS BIGINT) AS late, CAST(COALESCE(SUM(early), 0) AS BIGINT) AS early, \
             CAST(COALESCE(SUM(out_of_range), 0) AS BIGINT) AS oor, CAST(COALESCE(SUM(rejected), 0) AS BIGINT) AS rejected, \
             CAST(COALESCE(SUM(anti_cheat), 0) AS BIGINT) AS cheat \
             FROM punch_stats WHERE tenant = $1 AND hour >= $2 AND hour < $3 AND ($4 = '' OR department = $5)",
        )
        .bind(&f.tenant)
        .bind(first)
        .bind(end)
        .bind(f.dept())
        .bind(f.dept())
        .fetch_one(pool)
        .await?;
        add(Causes {
            late: r.try_get("late")?,
            early: r.try_get("early")?,
            missing: 0,
            out_of_range: r.try_get("oor")?,
            rejected: r.try_get("rejected")?,
            anti_cheat: r.try_get("cheat")?,
        });
        for (a, b) in [(from_ms, first * HOUR_MS), (end * HOUR_MS, to_ms)] {
            if a < b {
                add(punch_causes(pool, f, a, b).await?);
            }
        }
    }
    let missing = sqlx::query(
        "SELECT CAST(COALESCE(SUM(missing), 0) AS BIGINT) AS n FROM day_stats WHERE tenant = $1 \
         AND date >= $2 AND date <= $3 AND ($4 = '' OR department = $5)",
    )
    .scoped(f)
    .fetch_one(pool)
    .await?;
    c.missing = missing.try_get("n")?;
    Ok(c)
}

/// The causes of punches with attendance time in `[from_ms, to_ms)` of
/// the filter's tenant and department (`missing`, a day-row count, is 0).
/// [`causes`] reads these for the parts of hours at the edges of a range
/// (`punches_by_time` makes that a short range scan); `stats_raw.rs` for
/// the whole range.
pub async fn punch_causes(
    pool: &AnyPool,
    f: &Filter,
    from_ms: i64,
    to_ms: i64,
) -> Result<Causes, sqlx::Error> {
    // Flags are compared as "flags minus the offline bit is not zero", which
    // needs no bitwise operator (not every engine spells it alike).
    let offline = fencegate_schema::anomaly::OFFLINE as i64;
    let r = sqlx::query(
        "SELECT CAST(COALESCE(SUM(CASE WHEN status = 'late' THEN 1 ELSE 0 END), 0) AS BIGINT) AS late, \
         CAST(COALESCE(SUM(CASE WHEN status = 'early_leave' THEN 1 ELSE 0 END), 0) AS BIGINT) AS early, \
         CAST(COALESCE(SUM(CASE WHEN verdict = 'out_of_range' OR status = 'out_of_range_pending_approval' THEN 1 ELSE 0 END), 0) AS BIGINT) AS oor, \
         CAST(COALESCE(SUM(CASE WHEN verdict = 'rejected' THEN 1 ELSE 0 END), 0) AS BIGINT) AS rejected, \
         CAST(COALESCE(SUM(CASE WHEN flags <> 0 AND flags <> $6 THEN 1 ELSE 0 END), 0) AS BIGINT) AS cheat \
         FROM punches WHERE tenant = $1 AND at_ms >= $2 AND at_ms < $3 AND ($4 = '' OR department = $5)",
    )
    .bind(&f.tenant)
    .bind(from_ms)
    .bind(to_ms)
    .bind(f.dept())
    .bind(f.dept())
    .bind(offline)
    .fetch_one(pool)
    .await?;
    Ok(Causes {
        late: r.try_get("late")?,
        early: r.try_get("early")?,
        missing: 0,
        out_of_range: r.try_get("oor")?,
        rejected: r.try_get("rejected")?,
        anti_cheat: r.try_get("cheat")?,
    })
}

/// Overtime: hours per date (the line) and per employee (the table).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overtime {
    /// `(date, minutes)` for every date with day rows in range.
    pub by_date: Vec<(String, i64)>,
    /// Employees with overtime, most first: `(employee, department,
    /// minutes)`.
    pub by_employee: Vec<(String, String, i64)>,
}

/// Overtime minutes by date and by employee.
pub async fn overtime(pool: &AnyPool, f: &Filter) -> Result<Overtime, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT date, CAST(SUM(overtime_min) AS BIGINT) AS m FROM day_stats WHERE tenant = $1 \
         AND date >= $2 AND date <= $3 AND ($4 = '' OR department = $5) GROUP BY date HAVING SUM(day_rows) > 0 ORDER BY date",
    )
    .scoped(f)
    .fetch_all(pool)
    .await?;
    let by_date = rows
        .iter()
        .map(|r| Ok((r.try_get("date")?, r.try_get("m")?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let sum = PerEmployee {
        days: None,
        minutes: "overtime_min",
    };
    let by_employee = per_employee(pool, f, sum, "minutes DESC, employee LIMIT 200")
        .await?
        .into_iter()
        .map(|(e, d, _, m)| (e, d, m))
        .collect();
    Ok(Overtime {
        by_date,
        by_employee,
    })
}

/// The departments a tenant's day results name (for the filter).
pub async fn department_names(pool: &AnyPool, tenant: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT DISTINCT department FROM day_stats WHERE tenant = $1 AND department <> '' AND day_rows > 0 ORDER BY department",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| r.try_get("department")).collect()
}

/// The name of a punch method, as the methods chart labels it.
pub fn method_key(m: PunchMethod) -> &'static str {
    match m {
        PunchMethod::Gps => "method_gps",
        PunchMethod::Wifi => "method_wifi",
        PunchMethod::Qr => "method_qr",
        PunchMethod::Terminal => "method_terminal",
        _ => "method_other",
    }
}

/// One H3 hexagon of the location heatmap.
#[derive(Debug, Clone, PartialEq)]
pub struct HexBin {
    /// The H3 cell.
    pub cell: h3o::CellIndex,
    /// Punches in it.
    pub punches: i64,
    /// Of those, outside every fence.
    pub out_of_range: i64,
    /// The nearest fence of its out-of-range punches (the first seen).
    pub nearest_fence: String,
}

/// What the log-based charts need from punch records, folded one record at
/// a time (the log is read once for both charts).
#[derive(Debug, Clone, Default)]
pub struct PunchFold {
    /// Punches per method key ([`method_key`]), in a fixed order.
    pub methods: BTreeMap<&'static str, i64>,
    /// Terminal punches per terminal device id.
    pub terminals: BTreeMap<String, i64>,
    /// Located punches per H3 cell.
    pub bins: BTreeMap<u64, HexBin>,
}

/// The H3 resolution of the heatmap: resolution 9 cells are about 0.1 km²
/// (a building and its forecourt), fine enough to tell a fence from the
/// street beside it.
pub const HEAT_RESOLUTION: h3o::Resolution = h3o::Resolution::Nine;

impl PunchFold {
    /// Adds one record if it is a punch of the filter's tenant and
    /// department with attendance time in `[from_ms, to_ms)`.
    pub fn add(&mut self, f: &Filter, from_ms: i64, to_ms: i64, rec: &RecordView<'_>) {
        if rec.tenant() != f.tenant {
            return;
        }
        let RecordBodyView::Punch(p) = rec.body() else {
            return;
        };
        let att = rec.attendance().unwrap_or_default();
        if let Some(d) = &f.department
            && att.department != Some(d.as_str())
        {
            return;
        }
        let at = crate::log::query::attendance_time(rec);
        if at < from_ms || at >= to_ms {
            return;
        }
        *self.methods.entry(method_key(p.method())).or_default() += 1;
        if p.method() == PunchMethod::Terminal {
            *self.terminals.entry(p.device_id().to_owned()).or_default() += 1;
        }
        let Some(pos) = p.position() else {
            return;
        };
        let Ok(ll) = h3o::LatLng::new(pos.lat(), pos.lon()) else {
            return;
        };
        let cell = ll.to_cell(HEAT_RESOLUTION);
        let bin = self.bins.entry(u64::from(cell)).or_insert_with(|| HexBin {
            cell,
            punches: 0,
            out_of_range: 0,
            nearest_fence: String::new(),
        });
        bin.punches += 1;
        let inside = p.fence_ids().is_some_and(|f| !f.is_empty());
        if !inside {
            bin.out_of_range += 1;
            if bin.nearest_fence.is_empty() {
                bin.nearest_fence = p.nearest_fence_id().unwrap_or("").to_owned();
            }
        }
    }
}

/// The unix-ms range `[from, to + 1 day)` of local dates in `tz`.
pub fn ms_range(from: &str, to: &str, tz: &jiff::tz::TimeZone) -> Option<(i64, i64)> {
    let a: jiff::civil::Date = from.parse().ok()?;
    let b: jiff::civil::Date = to.parse().ok()?;
    let b = b.tomorrow().ok()?;
    let a = a.to_zoned(tz.clone()).ok()?.timestamp().as_millisecond();
    let b = b.to_zoned(tz.clone()).ok()?.timestamp().as_millisecond();
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn week_and_month_labels() {
        assert_eq!(Bucket::Week.label("2026-01-01"), "2026-W01");
        assert_eq!(Bucket::Week.label("2025-12-29"), "2026-W01");
        assert_eq!(Bucket::Month.label("2026-02-17"), "2026-02");
    }

    #[test]
    fn percent_rounds_to_one_decimal() {
        assert_eq!(pct(2, 3), 66.7);
        assert_eq!(pct(1, 0), 0.0);
        assert_eq!(hours(90), 1.5);
    }

    #[test]
    fn local_dates_cover_whole_days() {
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        let (a, b) = ms_range("2026-03-01", "2026-03-01", &tz).unwrap();
        assert_eq!(b - a, 86_400_000);
        // 2026-03-01T00:00+08:00
        assert_eq!(a, 1_772_294_400_000);
    }
}
