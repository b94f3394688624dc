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

use super::store::{DAY_COLUMNS, DayRow, ResultsStore, Tx, day_row};

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

/// Every day row of `tenant` in `month` (optionally one department's).
async fn month_rows(
    tx: &mut Tx,
    tenant: &str,
    month: &str,
    department: Option<&str>,
) -> Result<Vec<DayRow>, sqlx::Error> {
    // Two statements, not `($4 = '' OR department = $4)`: the OR keeps the
    // planner off `day_results_by_department`, and a department's month
    // then scans every department's day rows (6 M at 100,000 employees).
    let q = match department {
        Some(_) => format!(
            "SELECT {DAY_COLUMNS} FROM day_results WHERE tenant = $1 AND department = $4 \
             AND date >= $2 AND date <= $3 ORDER BY employee, date, slot"
        ),
        None => format!(
            "SELECT {DAY_COLUMNS} FROM day_results WHERE tenant = $1 AND date >= $2 AND date <= $3 \
             ORDER BY employee, date, slot"
        ),
    };
    let mut q = sqlx::query(&q)
        .bind(tenant)
        .bind(format!("{month}-01"))
        .bind(format!("{month}-31"));
    if let Some(d) = department {
        q = q.bind(d);
    }
    let rows = q.fetch_all(&mut **tx).await?;
    rows.iter().map(day_row).collect()
}

/// The live summary of `tenant`'s `month` from its day rows.
pub(crate) async fn live(
    tx: &mut Tx,
    tenant: &str,
    month: &str,
    department: Option<&str>,
) -> Result<Vec<EmployeeSummary>, sqlx::Error> {
    let rows = month_rows(tx, tenant, month, department).await?;
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
    Ok(summarize(&rows, |employee, date| {
        entries
            .iter()
            .find(|(e, f, t, _)| e == employee && f.as_str() <= date && t.as_str() >= date)
            .map(|(_, _, _, ty)| ty.clone())
    }))
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
