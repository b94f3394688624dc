//! Monthly summaries, month archives and the payroll export's rows, all
//! computed from `day_results` (docs/ATTENDANCE.md, "Monthly summary").
//!
//! A month is *live* until a tenant admin archives it: the `MonthArchive`
//! record (appended to the log first, like every HR decision) makes the
//! materializer close the tenant's due days up to the record's time and
//! store every employee's summary as a frozen snapshot. An archived month
//! always answers from its snapshot; a later change to one of its days
//! (a late offline punch, a decision, leave) shows as an *adjustment* in the
//! next month's summary: the live figures minus the frozen ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::store::{DayRow, ResultsStore, Tx};

/// One employee's month.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmployeeSummary {
    /// Employee id.
    pub employee: String,
    /// Department (of the latest day row).
    pub department: Option<String>,
    /// Days with slots (not rest days or holidays), leave days included.
    pub workdays_due: i64,
    /// Due days with at least one counted punch.
    pub days_worked: i64,
    /// Slots clocked in late.
    pub late_count: i64,
    /// Minutes late, summed.
    pub late_min: i64,
    /// Slots left early.
    pub early_count: i64,
    /// Minutes left early, summed.
    pub early_min: i64,
    /// Punches missing (缺卡): one per `missing_in`/`missing_out` slot, two
    /// per slot without any punch on a day otherwise worked.
    pub missing_punches: i64,
    /// Days absent.
    pub absences: i64,
    /// Days of leave by type (`business_trip` for trips).
    pub leave_days: BTreeMap<String, i64>,
    /// Minutes of overtime, summed (the API shows hours).
    pub overtime_min: i64,
    /// Days with a field punch (out of range, accepted or approved).
    pub field_days: i64,
}

impl EmployeeSummary {
    /// Overtime in hours, two decimals.
    pub fn overtime_hours(&self) -> f64 {
        (self.overtime_min as f64 / 60.0 * 100.0).round() / 100.0
    }

    /// The difference `self - frozen`, field by field; `None` when equal.
    pub fn minus(&self, frozen: &EmployeeSummary) -> Option<EmployeeSummary> {
        let mut leave = BTreeMap::new();
        for k in self.leave_days.keys().chain(frozen.leave_days.keys()) {
            let d = self.leave_days.get(k).copied().unwrap_or(0)
                - frozen.leave_days.get(k).copied().unwrap_or(0);
            if d != 0 {
                leave.insert(k.clone(), d);
            }
        }
        let d = EmployeeSummary {
            employee: self.employee.clone(),
            department: self.department.clone(),
            workdays_due: self.workdays_due - frozen.workdays_due,
            days_worked: self.days_worked - frozen.days_worked,
            late_count: self.late_count - frozen.late_count,
            late_min: self.late_min - frozen.late_min,
            early_count: self.early_count - frozen.early_count,
            early_min: self.early_min - frozen.early_min,
            missing_punches: self.missing_punches - frozen.missing_punches,
            absences: self.absences - frozen.absences,
            leave_days: leave,
            overtime_min: self.overtime_min - frozen.overtime_min,
            field_days: self.field_days - frozen.field_days,
        };
        let zero = EmployeeSummary {
            employee: d.employee.clone(),
            department: d.department.clone(),
            ..EmployeeSummary::default()
        };
        (d != zero).then_some(d)
    }
}

/// A month's summary as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthSummary {
    /// `YYYY-MM`.
    pub month: String,
    /// When it was archived (unix ms); `None` while live.
    pub archived_ms: Option<i64>,
    /// Per employee, by id.
    pub employees: Vec<EmployeeSummary>,
    /// Changes to the previous month after it was archived: live minus
    /// frozen, per employee that changed.
    pub adjustments: Vec<EmployeeSummary>,
    /// The previous month (`YYYY-MM`), which the adjustments are to.
    pub previous: String,
}

/// Whether `s` is a month `YYYY-MM`.
pub fn valid_month(s: &str) -> bool {
    s.len() == 7
        && s.as_bytes()[4] == b'-'
        && s[..4].parse::<u16>().is_ok_and(|y| y >= 1970)
        && s[5..].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
}

/// The day number of the last day of `YYYY-MM` (`None` if not a month).
pub fn last_day_of(month: &str) -> Option<i32> {
    if !valid_month(month) {
        return None;
    }
    let y: i16 = month[..4].parse().ok()?;
    let m: i8 = month[5..].parse().ok()?;
    let first = jiff::civil::Date::new(y, m, 1).ok()?;
    Some(crate::rules::schedule::day_of(first.last_of_month()))
}

/// The month before `YYYY-MM`.
pub fn previous_month(month: &str) -> String {
    let y: i32 = month[..4].parse().unwrap_or(1970);
    let m: i32 = month[5..].parse().unwrap_or(1);
    if m == 1 {
        format!("{:04}-12", y - 1)
    } else {
        format!("{y:04}-{:02}", m - 1)
    }
}

/// Summarizes day rows (any order, day and slot rows) per employee;
/// `leave_type` names the leave covering an employee's date.
pub fn summarize(
    rows: &[DayRow],
    leave_type: impl Fn(&str, &str) -> Option<String>,
) -> Vec<EmployeeSummary> {
    let mut by: BTreeMap<&str, EmployeeSummary> = BTreeMap::new();
    // Day status per (employee, date), for slot rows.
    let mut day_status: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.slot.is_empty()) {
        day_status.insert((&r.employee, &r.date), &r.status);
        let s = by.entry(&r.employee).or_insert_with(|| EmployeeSummary {
            employee: r.employee.clone(),
            ..EmployeeSummary::default()
        });
        if r.department.is_some() {
            s.department.clone_from(&r.department);
        }
        s.overtime_min += r.overtime_min;
        if matches!(r.status.as_str(), "rest_day" | "holiday") {
            continue;
        }
        s.workdays_due += 1;
        if r.in_ms.is_some() || r.out_ms.is_some() {
            s.days_worked += 1;
        }
        match r.status.as_str() {
            "absent" => s.absences += 1,
            "on_leave" => {
                let t = leave_type(&r.employee, &r.date).unwrap_or_else(|| "leave".into());
                *s.leave_days.entry(t).or_default() += 1;
            }
            "business_trip" => *s.leave_days.entry("business_trip".into()).or_default() += 1,
            _ => {}
        }
    }
    let mut field_days: BTreeMap<(&str, &str), ()> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.slot.is_empty()) {
        let Some(s) = by.get_mut(r.employee.as_str()) else {
            continue;
        };
        if r.late_min > 0 {
            s.late_count += 1;
            s.late_min += r.late_min;
        }
        if r.early_min > 0 {
            s.early_count += 1;
            s.early_min += r.early_min;
        }
        let day = day_status
            .get(&(r.employee.as_str(), r.date.as_str()))
            .copied()
            .unwrap_or("");
        match r.status.as_str() {
            "missing_in" | "missing_out" => s.missing_punches += 1,
            "absent" if day != "absent" => s.missing_punches += 2,
            "field" => {
                field_days.insert((&r.employee, &r.date), ());
            }
            _ => {}
        }
    }
    for (employee, date) in field_days.keys() {
        let _ = date;
        if let Some(s) = by.get_mut(employee) {
            s.field_days += 1;
        }
    }
    by.into_values().collect()
}

/// The per-employee sums of a month's day rows (slot `''`), in SQL: what
/// [`summarize`] counts from them, grouped in the database so that a
/// department's month sends ~1,000 rows to the client instead of its
/// 62,000 day and slot rows (sqlx costs tens of µs a row: fetching them
/// took ~2 s at 100,000 employees). `$1` tenant, `$2`/`$3` the month's
/// first and last date, `$4` the department where `filter` uses it.
/// `dept_date` is the latest date with a department: that day's row names
/// the employee's department. Every sum is cast to BIGINT (PostgreSQL's
/// `SUM` of BIGINT is NUMERIC, which `Any` cannot decode). On SQLite a
/// department's month reads only `day_results_by_department`, which
/// covers every column used here.
fn month_days_sql(filter: &str) -> String {
    format!(
        "SELECT s.employee AS employee, \
           (SELECT r.department FROM day_results r WHERE r.tenant = $1 AND r.employee = s.employee \
            AND r.date = s.dept_date AND r.slot = '') AS department, \
           CAST(s.overtime_min AS BIGINT) AS overtime_min, CAST(s.workdays_due AS BIGINT) AS workdays_due, \
           CAST(s.days_worked AS BIGINT) AS days_worked, CAST(s.absences AS BIGINT) AS absences, \
           CAST(s.leave_rows AS BIGINT) AS leave_rows, CAST(s.trips AS BIGINT) AS trips \
         FROM (SELECT employee, MAX(CASE WHEN department IS NOT NULL THEN date END) AS dept_date, \
             SUM(overtime_min) AS overtime_min, \
             SUM(CASE WHEN status NOT IN ('rest_day', 'holiday') THEN 1 ELSE 0 END) AS workdays_due, \
             SUM(CASE WHEN status NOT IN ('rest_day', 'holiday') \
                 AND (in_ms IS NOT NULL OR out_ms IS NOT NULL) THEN 1 ELSE 0 END) AS days_worked, \
             SUM(CASE WHEN status = 'absent' THEN 1 ELSE 0 END) AS absences, \
             SUM(CASE WHEN status = 'on_leave' THEN 1 ELSE 0 END) AS leave_rows, \
             SUM(CASE WHEN status = 'business_trip' THEN 1 ELSE 0 END) AS trips \
           FROM day_results WHERE tenant = $1 {filter} AND date >= $2 AND date <= $3 AND slot = '' \
           GROUP BY employee) AS s"
    )
}

/// The per-employee sums of a month's slot rows, as [`month_days_sql`]
/// for the day rows. A slot `absent` on a day whose own row (among the
/// rows read: `filter` applies inside too) is not `absent` counts two
/// missing punches: the `NOT EXISTS` looks that day row up by its key, for
/// the few absent slots only. A day with any `field` slot is one field day.
fn month_slots_sql(filter: &str) -> String {
    format!(
        "SELECT employee, \
           CAST(SUM(CASE WHEN late_min > 0 THEN 1 ELSE 0 END) AS BIGINT) AS late_count, \
           CAST(SUM(CASE WHEN late_min > 0 THEN late_min ELSE 0 END) AS BIGINT) AS late_min, \
           CAST(SUM(CASE WHEN early_min > 0 THEN 1 ELSE 0 END) AS BIGINT) AS early_count, \
           CAST(SUM(CASE WHEN early_min > 0 THEN early_min ELSE 0 END) AS BIGINT) AS early_min, \
           CAST(SUM(CASE WHEN status IN ('missing_in', 'missing_out') THEN 1 \
               WHEN status = 'absent' AND NOT EXISTS (SELECT 1 FROM day_results x \
                 WHERE x.tenant = $1 AND x.employee = day_results.employee AND x.date = day_results.date \
                 AND x.slot = '' AND x.status = 'absent' {filter}) THEN 2 ELSE 0 END) AS BIGINT) AS missing, \
           CAST(COUNT(DISTINCT CASE WHEN status = 'field' THEN date END) AS BIGINT) AS field_days \
         FROM day_results WHERE tenant = $1 {filter} AND date >= $2 AND date <= $3 AND slot <> '' \
         GROUP BY employee"
    )
}

/// The dates of `on_leave` day rows in the month (their leave type is
/// looked up per day, as [`summarize`] does): few rows.
fn month_leave_days_sql(filter: &str) -> String {
    format!(
        "SELECT employee, date FROM day_results WHERE tenant = $1 {filter} \
         AND date >= $2 AND date <= $3 AND slot = '' AND status = 'on_leave'"
    )
}

/// Runs one of the month's statements with `$1`..`$3` (and `$4`, the
/// department, when filtered).
async fn month_query(
    tx: &mut Tx,
    sql: &str,
    tenant: &str,
    month: &str,
    department: Option<&str>,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let mut q = sqlx::query(sql)
        .bind(tenant)
        .bind(format!("{month}-01"))
        .bind(format!("{month}-31"));
    if let Some(d) = department {
        q = q.bind(d);
    }
    q.fetch_all(&mut **tx).await
}

/// The live summary of `tenant`'s `month` from its day rows: the sums of
/// [`summarize`], computed by the database ([`month_days_sql`],
/// [`month_slots_sql`]); `tests/summary_sql.rs` holds the two equal.
pub(crate) async fn live(
    tx: &mut Tx,
    tenant: &str,
    month: &str,
    department: Option<&str>,
) -> Result<Vec<EmployeeSummary>, sqlx::Error> {
    // Two statement texts, not `($4 = '' OR department = $4)`: the OR keeps
    // the planner off `day_results_by_department`, and a department's month
    // then scans every department's day rows (6 M at 100,000 employees).
    let filter = if department.is_some() {
        "AND department = $4"
    } else {
        ""
    };
    let days = month_query(tx, &month_days_sql(filter), tenant, month, department).await?;
    let leave = sqlx::query(
        "SELECT employee, from_date, to_date, leave_type FROM leave_entries \
         WHERE tenant = $1 AND from_date <= $3 AND to_date >= $2 AND leave_type <> 'business_trip' ORDER BY source_id",
    )
    .bind(tenant)
    .bind(format!("{month}-01"))
    .bind(format!("{month}-31"))
    .fetch_all(&mut **tx)
    .await?;
    let mut entries: Vec<(String, String, String, String)> = Vec::with_capacity(leave.len());
    for r in &leave {
        entries.push((
            r.try_get("employee")?,
            r.try_get("from_date")?,
            r.try_get("to_date")?,
            r.try_get("leave_type")?,
        ));
    }
    let mut by: BTreeMap<String, EmployeeSummary> = BTreeMap::new();
    let mut any_leave = false;
    for r in &days {
        let mut s = EmployeeSummary {
            employee: r.try_get("employee")?,
            department: r.try_get("department")?,
            workdays_due: r.try_get("workdays_due")?,
            days_worked: r.try_get("days_worked")?,
            absences: r.try_get("absences")?,
            overtime_min: r.try_get("overtime_min")?,
            ..EmployeeSummary::default()
        };
        let trips: i64 = r.try_get("trips")?;
        if trips > 0 {
            s.leave_days.insert("business_trip".into(), trips);
        }
        any_leave |= r.try_get::<i64, _>("leave_rows")? > 0;
        by.insert(s.employee.clone(), s);
    }
    // Slot rows count only for employees with a day row in the month.
    for r in month_query(tx, &month_slots_sql(filter), tenant, month, department).await? {
        let employee: String = r.try_get("employee")?;
        let Some(s) = by.get_mut(&employee) else {
            continue;
        };
        s.late_count = r.try_get("late_count")?;
        s.late_min = r.try_get("late_min")?;
        s.early_count = r.try_get("early_count")?;
        s.early_min = r.try_get("early_min")?;
        s.missing_punches = r.try_get("missing")?;
        s.field_days = r.try_get("field_days")?;
    }
    // `on_leave` days, by the leave entry covering each.
    if any_leave {
        for r in month_query(tx, &month_leave_days_sql(filter), tenant, month, department).await? {
            let employee: String = r.try_get("employee")?;
            let date: String = r.try_get("date")?;
            let Some(s) = by.get_mut(&employee) else {
                continue;
            };
            let t = entries
                .iter()
                .find(|(e, f, t, _)| {
                    *e == employee && f.as_str() <= date.as_str() && t.as_str() >= date.as_str()
                })
                .map_or_else(|| "leave".to_owned(), |(_, _, _, ty)| ty.clone());
            *s.leave_days.entry(t).or_default() += 1;
        }
    }
    // By employee id as the bytes sort (as `summarize`'s map does; the
    // database's collation may differ).
    Ok(by.into_values().collect())
}

/// The frozen summary of an archived month, or `None` while it is live.
async fn frozen(
    tx: &mut Tx,
    tenant: &str,
    month: &str,
    department: Option<&str>,
) -> Result<Option<(i64, Vec<EmployeeSummary>)>, sqlx::Error> {
    let Some(a) =
        sqlx::query("SELECT archived_ms FROM month_archives WHERE tenant = $1 AND month = $2")
            .bind(tenant)
            .bind(month)
            .fetch_optional(&mut **tx)
            .await?
    else {
        return Ok(None);
    };
    let at: i64 = a.try_get("archived_ms")?;
    let rows = sqlx::query(
        "SELECT summary FROM month_snapshots WHERE tenant = $1 AND month = $2 AND ($3 = '' OR department = $3) ORDER BY employee",
    )
    .bind(tenant)
    .bind(month)
    .bind(department.unwrap_or(""))
    .fetch_all(&mut **tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let text: String = r.try_get("summary")?;
        out.push(
            serde_json::from_str(&text)
                .map_err(|e| sqlx::Error::Decode(format!("month snapshot: {e}").into()))?,
        );
    }
    Ok(Some((at, out)))
}

/// Archives `tenant`'s `month` at `at_ms` (the record's time): stores the
/// live summary as the snapshot. A month already archived stays as it was.
pub(crate) async fn archive(
    tx: &mut Tx,
    tenant: &str,
    month: &str,
    at_ms: i64,
    by: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO month_archives (tenant, month, archived_ms, archived_by) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant, month) DO NOTHING",
    )
    .bind(tenant)
    .bind(month)
    .bind(at_ms)
    .bind(by)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    for s in live(tx, tenant, month, None).await? {
        let text = serde_json::to_string(&s)
            .map_err(|e| sqlx::Error::Encode(format!("month snapshot: {e}").into()))?;
        sqlx::query(
            "INSERT INTO month_snapshots (tenant, month, employee, department, summary) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant)
        .bind(month)
        .bind(&s.employee)
        .bind(s.department.clone())
        .bind(text)
        .execute(&mut **tx)
        .await?;
    }
    Ok(true)
}

impl ResultsStore {
    /// `tenant`'s summary of `month` (`YYYY-MM`): frozen when archived,
    /// live otherwise, with the adjustments to the previous month if that
    /// one is archived.
    pub async fn month_summary(
        &self,
        tenant: &str,
        month: &str,
        department: Option<&str>,
    ) -> Result<MonthSummary, sqlx::Error> {
        let mut tx = self.begin().await?;
        let (archived_ms, employees) = match frozen(&mut tx, tenant, month, department).await? {
            Some((at, s)) => (Some(at), s),
            None => (None, live(&mut tx, tenant, month, department).await?),
        };
        let previous = previous_month(month);
        let mut adjustments = Vec::new();
        if let Some((_, old)) = frozen(&mut tx, tenant, &previous, department).await? {
            let now = live(&mut tx, tenant, &previous, department).await?;
            for n in &now {
                let base = old
                    .iter()
                    .find(|o| o.employee == n.employee)
                    .cloned()
                    .unwrap_or_else(|| EmployeeSummary {
                        employee: n.employee.clone(),
                        ..EmployeeSummary::default()
                    });
                adjustments.extend(n.minus(&base));
            }
        }
        tx.commit().await?;
        Ok(MonthSummary {
            month: month.to_owned(),
            archived_ms,
            employees,
            adjustments,
            previous,
        })
    }

    /// Whether `tenant`'s `month` is archived.
    pub async fn is_archived(&self, tenant: &str, month: &str) -> Result<bool, sqlx::Error> {
        let row =
            sqlx::query("SELECT 1 AS one FROM month_archives WHERE tenant = $1 AND month = $2")
                .bind(tenant)
                .bind(month)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }
}

/// The payroll export's columns, in order (docs/ATTENDANCE.md, "Payroll
/// export").
pub const PAYROLL_COLUMNS: [&str; 18] = [
    "tenant",
    "month",
    "employee",
    "department",
    "archived",
    "workdays_due",
    "days_worked",
    "late_count",
    "late_min",
    "early_count",
    "early_min",
    "missing_punches",
    "absences",
    "leave_days",
    "leave_by_type",
    "overtime_hours",
    "field_days",
    "adjustments",
];

/// The adjustments of one employee as text: `<previous month>: field
/// +n, ...` (empty when none).
fn adjustment_text(previous: &str, a: Option<&EmployeeSummary>) -> String {
    let Some(a) = a else {
        return String::new();
    };
    let mut parts = Vec::new();
    for (name, v) in [
        ("workdays_due", a.workdays_due),
        ("days_worked", a.days_worked),
        ("late_count", a.late_count),
        ("late_min", a.late_min),
        ("early_count", a.early_count),
        ("early_min", a.early_min),
        ("missing_punches", a.missing_punches),
        ("absences", a.absences),
        ("overtime_min", a.overtime_min),
        ("field_days", a.field_days),
    ] {
        if v != 0 {
            parts.push(format!("{name} {v:+}"));
        }
    }
    for (k, v) in &a.leave_days {
        parts.push(format!("leave:{k} {v:+}"));
    }
    format!("{previous}: {}", parts.join(", "))
}

/// The payroll rows of a summary: one per employee, then one per employee
/// who only has adjustments. Values as text, in [`PAYROLL_COLUMNS`] order.
pub fn payroll_rows(tenant: &str, s: &MonthSummary) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut row = |e: &EmployeeSummary, adj: Option<&EmployeeSummary>, counted: bool| {
        let leave_total: i64 = e.leave_days.values().sum();
        let by_type = e
            .leave_days
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(";");
        let n = |v: i64| if counted { v.to_string() } else { "0".into() };
        out.push(vec![
            tenant.to_owned(),
            s.month.clone(),
            e.employee.clone(),
            e.department.clone().unwrap_or_default(),
            s.archived_ms.is_some().to_string(),
            n(e.workdays_due),
            n(e.days_worked),
            n(e.late_count),
            n(e.late_min),
            n(e.early_count),
            n(e.early_min),
            n(e.missing_punches),
            n(e.absences),
            n(leave_total),
            if counted { by_type } else { String::new() },
            if counted {
                format!("{:.2}", e.overtime_hours())
            } else {
                "0.00".into()
            },
            n(e.field_days),
            adjustment_text(&s.previous, adj),
        ]);
    };
    for e in &s.employees {
        let adj = s.adjustments.iter().find(|a| a.employee == e.employee);
        row(e, adj, true);
    }
    for a in &s.adjustments {
        if !s.employees.iter().any(|e| e.employee == a.employee) {
            row(a, Some(a), false);
        }
    }
    out
}

/// The payroll export as CSV: UTF-8 with a byte-order mark (spreadsheet
/// tools read it as UTF-8 then), a header row of [`PAYROLL_COLUMNS`].
pub fn payroll_csv(tenant: &str, s: &MonthSummary) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
    w.write_record(PAYROLL_COLUMNS)?;
    for r in payroll_rows(tenant, s) {
        w.write_record(&r)?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// One employee's summary as JSON (overtime in hours).
pub fn employee_json(e: &EmployeeSummary) -> serde_json::Value {
    serde_json::json!({
        "employee": e.employee,
        "department": e.department,
        "workdays_due": e.workdays_due,
        "days_worked": e.days_worked,
        "late_count": e.late_count,
        "late_min": e.late_min,
        "early_count": e.early_count,
        "early_min": e.early_min,
        "missing_punches": e.missing_punches,
        "absences": e.absences,
        "leave_days": e.leave_days,
        "overtime_hours": e.overtime_hours(),
        "field_days": e.field_days,
    })
}

/// A summary as JSON: `employees`, `adjustments` (to `previous`).
pub fn summary_json(tenant: &str, s: &MonthSummary) -> serde_json::Value {
    serde_json::json!({
        "tenant": tenant,
        "month": s.month,
        "archived": s.archived_ms.is_some(),
        "archived_ms": s.archived_ms,
        "employees": s.employees.iter().map(employee_json).collect::<Vec<_>>(),
        "adjustments": {
            "month": s.previous,
            "employees": s.adjustments.iter().map(employee_json).collect::<Vec<_>>(),
        },
    })
}

/// The payroll export as JSON: `columns` and one object per row.
pub fn payroll_json(tenant: &str, s: &MonthSummary) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = payroll_rows(tenant, s)
        .into_iter()
        .map(|r| {
            let m: serde_json::Map<String, serde_json::Value> = PAYROLL_COLUMNS
                .iter()
                .zip(r)
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v)))
                .collect();
            serde_json::Value::Object(m)
        })
        .collect();
    serde_json::json!({
        "tenant": tenant,
        "month": s.month,
        "archived": s.archived_ms.is_some(),
        "columns": PAYROLL_COLUMNS,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A department's month is read from `day_results_by_department`
    /// alone: its rows lie together there, where in the table they are
    /// spread over a page each (the 2.5 s the summary took at 100,000
    /// employees was mostly those page reads and the rows sent).
    #[tokio::test]
    async fn a_departments_month_reads_only_the_covering_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultsStore::open_sqlite(&dir.path().join("r.sqlite"))
            .await
            .unwrap();
        let filter = "AND department = $4";
        for sql in [
            month_days_sql(filter),
            month_slots_sql(filter),
            month_leave_days_sql(filter),
        ] {
            let p = crate::results::store::query_plan(
                &store,
                &sql,
                &["acme", "2026-01-01", "2026-01-31", "dept-7"],
            )
            .await;
            assert!(
                p.contains("USING COVERING INDEX day_results_by_department (tenant=? AND department=? AND date>? AND date<?)"),
                "{p}"
            );
            assert!(!p.contains("SCAN day_results"), "{p}");
        }
    }
}
