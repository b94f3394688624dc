//! The results store: sqlx's `Any` driver over a SQLite file (the embedded
//! default, `<data_dir>/results.sqlite`) or PostgreSQL (a `postgres://`
//! URL). One schema (`schema.sql`) and one set of plain queries serve both:
//! `$n` placeholders (SQLite reads `$NNN` as the n-th argument), `ON
//! CONFLICT ... DO UPDATE`, and only BIGINT and TEXT columns, so no query
//! depends on the engine. The schema's one engine-specific word is
//! `WITHOUT ROWID` for `day_results` on SQLite (`SQLITE_ONLY`): a
//! storage layout, which no query sees.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fencegate_schema::{AttendanceStatus, PunchKind, Verdict};
use fencegate_spatial::hash::FastMap;
use serde::Serialize;
use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, Row, Transaction};

use crate::rules::day::DayPunch;

/// The schema, statement by statement (`;`-separated, comments allowed).
pub const SCHEMA: &str = include_str!("schema.sql");

/// The version of [`SCHEMA`] (`results_meta` key `schema_version`). A store
/// of another version is dropped and rebuilt from the log on open: results
/// are a view, and `CREATE TABLE IF NOT EXISTS` cannot add columns.
///
/// 6: `day_results` keyed date first (and `WITHOUT ROWID` on SQLite) with
/// `day_results_by_employee` beside it; covering indexes for a
/// department's month summary (`day_results_by_department`), a close's
/// punch reads (`punches_by_employee`) and its roster of a date
/// (`day_results_by_date`).
///
/// 7: `employee_months` keeps running sums within the month
/// (`<sum>_to_DD`, [`MONTH_SUMS`]) and is stored `WITHOUT ROWID` on
/// SQLite, so the dashboard's rankings read one row per employee and month
/// for any range; the partial indexes `day_results_late`, `_early` and
/// `_overtime`, through which they read the days of a part month, are
/// gone. Later, still 7: `day_results_by_date` is gone too; opening a
/// store drops it (`DROP INDEX IF EXISTS`), and its rows stay.
pub const SCHEMA_VERSION: i64 = 7;

/// The marker in [`SCHEMA`] of a table SQLite stores in its primary key's
/// order (`WITHOUT ROWID`): a comment to PostgreSQL, which has no such
/// option.
const SQLITE_ONLY: &str = "/* sqlite: WITHOUT ROWID */";

/// Every table of [`SCHEMA`], for dropping and clearing.
const TABLES: [&str; 14] = [
    "hr_records",
    "day_outbox",
    "day_results",
    "day_stats",
    "employee_months",
    "punch_stats",
    "punches",
    "decisions",
    "leave_entries",
    "corrections",
    "correction_evidence",
    "month_archives",
    "month_snapshots",
    "results_meta",
];

/// One row of `day_results`: a slot of an employee's day, or the whole day
/// (`slot` empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayRow {
    /// Tenant id.
    pub tenant: String,
    /// Employee id.
    pub employee: String,
    /// The day, `YYYY-MM-DD` in the tenant's zone (a cross-midnight shift's
    /// start date).
    pub date: String,
    /// Slot name; empty for the day row.
    pub slot: String,
    /// Department from the rules (or the punch record).
    pub department: Option<String>,
    /// Attendance group.
    pub group: String,
    /// Status (docs/ATTENDANCE.md, "Day results").
    pub status: String,
    /// Minutes late.
    pub late_min: i64,
    /// Minutes left early.
    pub early_min: i64,
    /// Minutes worked.
    pub worked_min: i64,
    /// Minutes of overtime.
    pub overtime_min: i64,
    /// First clock-in counted, unix ms.
    pub in_ms: Option<i64>,
    /// Last clock-out counted, unix ms.
    pub out_ms: Option<i64>,
    /// Whether the day has closed (missing and absent are final).
    pub closed: bool,
    /// How many times the row changed after it was first written.
    pub revision: i64,
}

impl DayRow {
    /// Whether two rows say the same thing (everything but the revision).
    pub fn same_result(&self, other: &DayRow) -> bool {
        DayRow {
            revision: 0,
            ..self.clone()
        } == DayRow {
            revision: 0,
            ..other.clone()
        }
    }
}

/// A punch record as stored in `punches`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PunchRow {
    /// Record id, UUID text.
    pub record_id: String,
    /// Its position in the log.
    pub lsn: i64,
    /// Tenant id.
    pub tenant: String,
    /// Employee id.
    pub employee: String,
    /// Clock-in or clock-out.
    pub kind: PunchKind,
    /// Attendance time, unix ms.
    pub at_ms: i64,
    /// Verdict.
    pub verdict: Verdict,
    /// Status.
    pub status: AttendanceStatus,
    /// Waits for a supervisor.
    pub needs_approval: bool,
    /// Anomaly flags.
    pub flags: i64,
    /// Department on the record.
    pub department: Option<String>,
    /// Slot label on the record.
    pub slot: Option<String>,
}

/// The results database.
#[derive(Debug, Clone)]
pub struct ResultsStore {
    pub(crate) pool: AnyPool,
    /// The URL it was opened with (a leader's own connection uses it).
    url: Arc<str>,
    /// PostgreSQL (shared by nodes: advisory locks) rather than SQLite.
    postgres: bool,
}

/// PostgreSQL advisory lock keys (one 64-bit space per database): the
/// schema while a node creates or replaces it, the stream materializer's
/// leadership, its transactions, and each tenant's HR writes (this key
/// plus a hash of the tenant id in the low bits).
pub(crate) mod lock_key {
    /// Creating or replacing the schema on open.
    pub const SCHEMA: i64 = 0x6667_0001_0000_0000;
    /// Held for as long as a node consumes the stream.
    pub const LEADER: i64 = 0x6667_0002_0000_0000;
    /// Taken by every transaction of a stream materializer.
    pub const APPLY: i64 = 0x6667_0003_0000_0000;
    /// The base of a tenant's HR write lock.
    pub const HR: i64 = 0x6667_0004_0000_0000;
}

/// A transaction on the results store.
pub type Tx = Transaction<'static, Any>;

/// Which rows [`ResultsStore::clear`] deletes: all but the schema version.
fn clear_filter(table: &str) -> &'static str {
    match table {
        "results_meta" => "key <> 'schema_version'",
        // Days noted and not yet sent downstream still have to go: a
        // rebuild keeps them (`Materializer::rebuild`).
        "day_outbox" => "1 = 0",
        _ => "1 = 1",
    }
}

/// The URL of a SQLite results file at `path` (created when missing).
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Where `fencegate results rebuild` builds a new SQLite store for the
/// live one at `live`: beside it, so the rename that puts it in place
/// stays on one file system.
pub fn rebuild_scratch_path(live: &Path) -> PathBuf {
    let mut name = live.file_name().unwrap_or_default().to_os_string();
    name.push(".rebuild");
    live.with_file_name(name)
}

/// The half-built file a `fencegate results rebuild` that stopped left
/// beside the SQLite store `url` names, if there is one: nothing reads it,
/// and it can be as large as the store.
pub fn leftover_rebuild(url: &str) -> Option<PathBuf> {
    sqlite_path(url)
        .map(|live| rebuild_scratch_path(&live))
        .filter(|p| p.exists())
}

/// The file a SQLite URL names (as [`sqlite_url`] writes them); `None`
/// for PostgreSQL and for in-memory databases.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Accepted => "accepted",
        Verdict::RepeatMerged => "repeat_merged",
        Verdict::OutOfRange => "out_of_range",
        _ => "rejected",
    }
}

fn verdict_of(s: &str) -> Verdict {
    match s {
        "accepted" => Verdict::Accepted,
        "repeat_merged" => Verdict::RepeatMerged,
        "out_of_range" => Verdict::OutOfRange,
        _ => Verdict::Rejected,
    }
}

/// The status column's spelling (the record API's names).
fn status_name(s: AttendanceStatus) -> &'static str {
    match s {
        AttendanceStatus::Normal => "normal",
        AttendanceStatus::Late => "late",
        AttendanceStatus::EarlyLeave => "early_leave",
        AttendanceStatus::OutOfRangePendingApproval => "out_of_range_pending_approval",
        AttendanceStatus::Field => "field",
        AttendanceStatus::RepeatMerged => "repeat_merged",
        AttendanceStatus::Rejected => "rejected",
        _ => "unclassified",
    }
}

fn status_of(s: &str) -> AttendanceStatus {
    match s {
        "normal" => AttendanceStatus::Normal,
        "late" => AttendanceStatus::Late,
        "early_leave" => AttendanceStatus::EarlyLeave,
        "out_of_range_pending_approval" => AttendanceStatus::OutOfRangePendingApproval,
        "field" => AttendanceStatus::Field,
        "repeat_merged" => AttendanceStatus::RepeatMerged,
        "rejected" => AttendanceStatus::Rejected,
        _ => AttendanceStatus::Unclassified,
    }
}

pub(crate) fn day_row(r: &AnyRow) -> Result<DayRow, sqlx::Error> {
    Ok(DayRow {
        tenant: r.try_get("tenant")?,
        employee: r.try_get("employee")?,
        date: r.try_get("date")?,
        slot: r.try_get("slot")?,
        department: r.try_get("department")?,
        group: r.try_get("grp")?,
        status: r.try_get("status")?,
        late_min: r.try_get("late_min")?,
        early_min: r.try_get("early_min")?,
        worked_min: r.try_get("worked_min")?,
        overtime_min: r.try_get("overtime_min")?,
        in_ms: r.try_get("in_ms")?,
        out_ms: r.try_get("out_ms")?,
        closed: r.try_get::<i64, _>("closed")? != 0,
        revision: r.try_get("revision")?,
    })
}

pub(crate) const DAY_COLUMNS: &str = "tenant, employee, date, slot, department, grp, status, late_min, early_min, worked_min, overtime_min, in_ms, out_ms, closed, revision";

/// What one day row (slot `''`) adds to the dashboard's aggregates
/// (`day_stats`, `employee_months`). The definitions are the charts'
/// (docs/DASHBOARD.md): expected is a closed row not `rest_day`, `holiday`
/// or `on_leave`; attended is expected and not `absent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DayCounts {
    day_rows: i64,
    expected: i64,
    attended: i64,
    late_days: i64,
    early_days: i64,
    missing: i64,
    field_days: i64,
    overtime_min: i64,
    late_min: i64,
    early_min: i64,
}

impl DayCounts {
    fn of(r: &DayRow) -> Self {
        let expected =
            r.closed && !matches!(r.status.as_str(), "rest_day" | "holiday" | "on_leave");
        Self {
            day_rows: 1,
            expected: i64::from(expected),
            attended: i64::from(expected && r.status != "absent"),
            late_days: i64::from(r.late_min > 0),
            early_days: i64::from(r.early_min > 0),
            missing: i64::from(matches!(r.status.as_str(), "missing_in" | "missing_out")),
            field_days: i64::from(r.status == "field"),
            overtime_min: r.overtime_min,
            late_min: r.late_min,
            early_min: r.early_min,
        }
    }

    fn plus(self, o: Self) -> Self {
        Self {
            day_rows: self.day_rows + o.day_rows,
            expected: self.expected + o.expected,
            attended: self.attended + o.attended,
            late_days: self.late_days + o.late_days,
            early_days: self.early_days + o.early_days,
            missing: self.missing + o.missing,
            field_days: self.field_days + o.field_days,
            overtime_min: self.overtime_min + o.overtime_min,
            late_min: self.late_min + o.late_min,
            early_min: self.early_min + o.early_min,
        }
    }

    fn minus(self, o: Self) -> Self {
        Self {
            day_rows: self.day_rows - o.day_rows,
            expected: self.expected - o.expected,
            attended: self.attended - o.attended,
            late_days: self.late_days - o.late_days,
            early_days: self.early_days - o.early_days,
            missing: self.missing - o.missing,
            field_days: self.field_days - o.field_days,
            overtime_min: self.overtime_min - o.overtime_min,
            late_min: self.late_min - o.late_min,
            early_min: self.early_min - o.early_min,
        }
    }

    fn day_part_is_zero(&self) -> bool {
        [
            self.day_rows,
            self.expected,
            self.attended,
            self.late_days,
            self.early_days,
            self.missing,
            self.field_days,
            self.overtime_min,
        ]
        .iter()
        .all(|v| *v == 0)
    }

    /// The `employee_months` part, in [`MONTH_SUMS`] order (the Rust side
    /// of the per-row expressions there).
    fn month_values(&self) -> [i64; 5] {
        [
            self.overtime_min,
            self.late_days,
            self.late_min,
            self.early_days,
            self.early_min,
        ]
    }
}

/// The five per-employee sums of `employee_months`, each with the value
/// one day row adds to it (an SQL expression over `day_results`, which
/// `recount_stats` sums; `DayCounts::month_values` is the same in Rust, in
/// this order). Their running-sum columns are laid out in this order: the
/// overtime table reads the most rows, and SQLite reaches a column by
/// walking the row's header up to it, so the columns it reads come first.
pub(crate) const MONTH_SUMS: [(&str, &str); 5] = [
    ("overtime_min", "overtime_min"),
    ("late_days", "CASE WHEN late_min > 0 THEN 1 ELSE 0 END"),
    ("late_min", "late_min"),
    ("early_days", "CASE WHEN early_min > 0 THEN 1 ELSE 0 END"),
    ("early_min", "early_min"),
];

/// The last day with a running-sum column: day 31's running sum is the
/// month's total, so a month's days need columns 1 to 30 only.
pub(crate) const RUN_DAYS: u32 = 30;

/// Where `schema.sql` has the running-sum columns written (inside
/// `employee_months`): 150 column definitions are kept in one place, here.
const RUN_MARKER: &str = "/* running sums */";

/// The column holding the running sum of `sum` (a [`MONTH_SUMS`] name) over
/// the month's days 1 to `day` (1 to [`RUN_DAYS`]).
pub(crate) fn run_column(sum: &str, day: u32) -> String {
    format!("{sum}_to_{day:02}")
}

/// Every running-sum column, in table order (by [`MONTH_SUMS`], then day).
fn run_columns() -> impl Iterator<Item = String> {
    MONTH_SUMS
        .iter()
        .flat_map(|(sum, _)| (1..=RUN_DAYS).map(move |d| run_column(sum, d)))
}

/// The day of the month of a `YYYY-MM-DD` date (1 to 31). A date without
/// one (never written by the materializer) counts as day 31: in the
/// month's totals, in no running sum.
fn day_of_month(date: &str) -> usize {
    date.get(8..10)
        .and_then(|d| d.parse::<usize>().ok())
        .filter(|d| (1..=31).contains(d))
        .unwrap_or(31)
}

/// The aggregates' key of a day row: its tenant, date, department (`''`
/// for none) and employee.
fn stats_key(r: &DayRow) -> (&str, &str, &str, &str) {
    (
        &r.tenant,
        &r.date,
        r.department.as_deref().unwrap_or(""),
        &r.employee,
    )
}

/// Moves the aggregates from what `old` counted to what `new` counts (a
/// row written, replaced or deleted): [`StatsDelta`] for one row. Slot
/// rows count for nothing; a move that changes no aggregate (most
/// rewrites of a day keep its key and its counts) writes nothing.
async fn move_stats(
    tx: &mut Tx,
    old: Option<&DayRow>,
    new: Option<&DayRow>,
) -> Result<(), sqlx::Error> {
    let mut delta = StatsDelta::default();
    delta.moved(old, new);
    delta.write(tx).await
}

/// One `employee_months` row's move: what it adds to each day's part of
/// the five sums ([`MONTH_SUMS`] order), from which the totals and running
/// sums follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MonthDelta {
    days: [[i64; 5]; 31],
}

impl MonthDelta {
    fn is_zero(&self) -> bool {
        self.days.iter().flatten().all(|v| *v == 0)
    }

    /// The row's values in [`month_upsert_columns`] order: the five
    /// totals, then every running sum ([`run_columns`] order).
    fn values(&self) -> Vec<i64> {
        let mut out = Vec::with_capacity(MONTH_WIDTH - 4);
        for s in 0..MONTH_SUMS.len() {
            out.push(self.days.iter().map(|d| d[s]).sum());
        }
        for s in 0..MONTH_SUMS.len() {
            let mut run = 0;
            for day in &self.days[..RUN_DAYS as usize] {
                run += day[s];
                out.push(run);
            }
        }
        out
    }
}

/// Values per `employee_months` row written: four key columns, five
/// totals, the running sums.
const MONTH_WIDTH: usize = 4 + MONTH_SUMS.len() * (1 + RUN_DAYS as usize);

/// The `employee_months` upsert's column list and its `DO UPDATE SET`
/// (every value column adds the new row's), made once.
fn month_upsert_columns() -> &'static (String, String) {
    static SQL: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let values: Vec<String> = MONTH_SUMS
            .iter()
            .map(|(sum, _)| (*sum).to_owned())
            .chain(run_columns())
            .collect();
        let columns = format!("tenant, month, department, employee, {}", values.join(", "));
        let set = values
            .iter()
            .map(|c| format!("{c} = employee_months.{c} + excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        (columns, set)
    })
}

/// The aggregates' moves of many day rows, summed per aggregate row before
/// they are written, in one multi-row statement per table (a day closed
/// for 100,000 employees moves about 40 `day_stats` rows, not 100,000).
/// Sums commute, so the tables end the same as with one move per row;
/// `tests/batched_results.rs` and `tests/dashboard_stats.rs` hold what is
/// kept equal to `recount_stats`.
#[derive(Debug, Default)]
pub(crate) struct StatsDelta {
    /// Per (tenant, date, department): the `day_stats` part. Hashed, and
    /// sorted only when written: a rebuild looks up 3 M day rows here at
    /// 100,000 employees, and a `BTreeMap` compared four strings a level.
    days: FastMap<(String, String, String), DayCounts>,
    /// Per (tenant, month, department, employee): the `employee_months`
    /// part, by day of the month.
    months: FastMap<(String, String, String, String), MonthDelta>,
    /// The key looked up in `days`, reused: a rebuild notes 3 M day rows
    /// at 100,000 employees, and owned keys made for each lookup were
    /// three allocations a row for keys that mostly exist.
    day_key: (String, String, String),
    /// As `day_key`, for `months` (four allocations a row).
    month_key: (String, String, String, String),
}

/// Makes `s` equal to `v`, reusing its allocation.
fn set_str(s: &mut String, v: &str) {
    s.clear();
    s.push_str(v);
}

impl StatsDelta {
    /// Notes `d` for `r`'s aggregate rows.
    fn add(&mut self, r: &DayRow, d: DayCounts) {
        let (tenant, date, department, employee) = stats_key(r);
        if !d.day_part_is_zero() {
            set_str(&mut self.day_key.0, tenant);
            set_str(&mut self.day_key.1, date);
            set_str(&mut self.day_key.2, department);
            let e = match self.days.get_mut(&self.day_key) {
                Some(e) => e,
                None => self.days.entry(self.day_key.clone()).or_default(),
            };
            *e = e.plus(d);
        }
        let values = d.month_values();
        if values.iter().any(|v| *v != 0) {
            let month = date.get(..7).unwrap_or(date);
            set_str(&mut self.month_key.0, tenant);
            set_str(&mut self.month_key.1, month);
            set_str(&mut self.month_key.2, department);
            set_str(&mut self.month_key.3, employee);
            let delta = match self.months.get_mut(&self.month_key) {
                Some(m) => m,
                None => self.months.entry(self.month_key.clone()).or_default(),
            };
            let day = &mut delta.days[day_of_month(date) - 1];
            for (sum, v) in day.iter_mut().zip(values) {
                *sum += v;
            }
        }
    }

    /// Notes the move of the aggregates from what `old` counted to what
    /// `new` counts (a row written, replaced or deleted). Slot rows count
    /// for nothing; most rewrites of a day (a second punch, a revision)
    /// keep the same key, so the difference is noted once.
    pub(crate) fn moved(&mut self, old: Option<&DayRow>, new: Option<&DayRow>) {
        let old = old.filter(|r| r.slot.is_empty());
        let new = new.filter(|r| r.slot.is_empty());
        match (old, new) {
            (Some(o), Some(n)) if stats_key(o) == stats_key(n) => {
                self.add(n, DayCounts::of(n).minus(DayCounts::of(o)));
            }
            (o, n) => {
                if let Some(o) = o {
                    self.add(o, DayCounts::default().minus(DayCounts::of(o)));
                }
                if let Some(n) = n {
                    self.add(n, DayCounts::of(n));
                }
            }
        }
    }

    /// Writes the summed moves (upserts adding to each aggregate row, many
    /// rows each) and forgets them.
    pub(crate) async fn write(&mut self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        let sqlite = is_sqlite(tx);
        // In key order, as the `BTreeMap`s gave them: rows in key order
        // append to the tables' B-trees, and nodes sharing a PostgreSQL
        // store take their row locks in one order.
        let mut days: Vec<_> = std::mem::take(&mut self.days)
            .into_iter()
            .filter(|(_, d)| !d.day_part_is_zero())
            .collect();
        days.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for chunk in days.chunks(STATS_ROWS) {
            let sql = format!(
                "INSERT INTO day_stats (tenant, date, department, day_rows, expected, attended, late_days, early_days, missing, field_days, overtime_min) \
                 VALUES {} ON CONFLICT (tenant, date, department) DO UPDATE SET \
                 day_rows = day_stats.day_rows + excluded.day_rows, expected = day_stats.expected + excluded.expected, \
                 attended = day_stats.attended + excluded.attended, late_days = day_stats.late_days + excluded.late_days, \
                 early_days = day_stats.early_days + excluded.early_days, missing = day_stats.missing + excluded.missing, \
                 field_days = day_stats.field_days + excluded.field_days, overtime_min = day_stats.overtime_min + excluded.overtime_min",
                values_list(sqlite, chunk.len(), 11)
            );
            let mut q = sqlx::query(&sql);
            for ((tenant, date, department), d) in chunk {
                q = q
                    .bind(tenant)
                    .bind(date)
                    .bind(department)
                    .bind(d.day_rows)
                    .bind(d.expected)
                    .bind(d.attended)
                    .bind(d.late_days)
                    .bind(d.early_days)
                    .bind(d.missing)
                    .bind(d.field_days)
                    .bind(d.overtime_min);
            }
            q.execute(&mut **tx).await?;
        }
        let mut months: Vec<_> = std::mem::take(&mut self.months)
            .into_iter()
            .filter(|(_, d)| !d.is_zero())
            .collect();
        months.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let (columns, set) = month_upsert_columns();
        for chunk in months.chunks(MONTH_ROWS) {
            let sql = format!(
                "INSERT INTO employee_months ({columns}) VALUES {} \
                 ON CONFLICT (tenant, month, department, employee) DO UPDATE SET {set}",
                values_list(sqlite, chunk.len(), MONTH_WIDTH)
            );
            let mut q = sqlx::query(&sql);
            for ((tenant, month, department, employee), d) in chunk {
                q = q.bind(tenant).bind(month).bind(department).bind(employee);
                for v in d.values() {
                    q = q.bind(v);
                }
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// Aggregate rows per multi-row statement (11 parameters each: well
/// under SQLite's 32,766 and PostgreSQL's 65,535).
const STATS_ROWS: usize = 1_000;

/// `employee_months` rows per multi-row statement: [`MONTH_WIDTH`] (159)
/// parameters each, 31,800 in all, under SQLite's 32,766.
const MONTH_ROWS: usize = 200;

/// Day rows per multi-row upsert (15 parameters each).
const UPSERT_ROWS: usize = 1_000;

/// Employees per set query (`employee IN (...)`); every list is padded
/// to this length so the statement text, and its prepared statement, is
/// the same for every chunk.
pub(crate) const IN_CHUNK: usize = 500;

/// Dates per [`ResultsStore::rows_of_many`] (its `date IN` list, padded to
/// this length): a batch's chunk spans at most this many days.
pub(crate) const DATES_IN: usize = 32;

/// Whether the transaction is on SQLite: its multi-row statements take
/// anonymous `?` placeholders. sqlx finds the index of a `$n` parameter by
/// name, and SQLite looks a name up by walking a list, so binding `n`
/// named parameters costs O(n²): a 15,000-parameter upsert took most of a
/// second, and closing a day for 100,000 employees over three minutes.
pub(crate) fn is_sqlite(tx: &mut Tx) -> bool {
    (**tx).backend_name() == "SQLite"
}

/// The `n`-th (from 1) placeholder: `?` on SQLite (bound in order), `$n`
/// on PostgreSQL.
fn placeholder(s: &mut String, sqlite: bool, n: usize) {
    if sqlite {
        s.push('?');
    } else {
        let _ = write!(s, "${n}");
    }
}

/// `($1, ..., $k), ($k+1, ...), ...`: `rows` tuples of `width`
/// placeholders.
pub(crate) fn values_list(sqlite: bool, rows: usize, width: usize) -> String {
    let mut s = String::with_capacity(rows * width * 6);
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                s.push_str(", ");
            }
            placeholder(&mut s, sqlite, r * width + c + 1);
        }
        s.push(')');
    }
    s
}

/// `$first, ..., $first+IN_CHUNK-1`: an `IN` list of [`IN_CHUNK`]
/// placeholders.
fn in_list(sqlite: bool, first: usize) -> String {
    let mut s = String::with_capacity(IN_CHUNK * 6);
    for i in 0..IN_CHUNK {
        if i > 0 {
            s.push_str(", ");
        }
        placeholder(&mut s, sqlite, first + i);
    }
    s
}

/// The first three placeholders, before an [`in_list`] from 4.
fn first3(sqlite: bool) -> [&'static str; 3] {
    if sqlite {
        ["?", "?", "?"]
    } else {
        ["$1", "$2", "$3"]
    }
}

/// `employees` padded to [`IN_CHUNK`] with its last one (`IN` ignores
/// repeats).
fn padded<'a>(employees: &[&'a str]) -> impl Iterator<Item = &'a str> {
    assert!(
        !employees.is_empty() && employees.len() <= IN_CHUNK,
        "an IN list takes 1 to {IN_CHUNK} employees"
    );
    let last = employees[employees.len() - 1];
    employees
        .iter()
        .copied()
        .chain(std::iter::repeat(last))
        .take(IN_CHUNK)
}

/// Counts a newly stored punch in `punch_stats` when it has a cause of the
/// causes pie (most punches have none and cost no statement). The tests
/// in `charts_match_raw_tables` hold these rules equal to the chart's SQL
/// over `punches`. A make-up punch (inserted by `hr.rs`) is accepted,
/// normal and unflagged: it has no cause, so it needs no row here.
async fn add_punch_stats(tx: &mut Tx, p: &PunchRow) -> Result<(), sqlx::Error> {
    let mut stats = PunchStats::default();
    stats.add(p);
    stats.write(tx).await
}

/// `punch_stats` moves of new punches, summed per row (tenant, UTC hour,
/// department) before they are written in multi-row upserts: a batch of
/// 4,096 punches writes a few dozen rows, not a statement per punch.
#[derive(Debug, Default)]
struct PunchStats {
    /// Per (tenant, hour, department): late, early, out of range,
    /// rejected, anti-cheat.
    rows: BTreeMap<(String, i64, String), [i64; 5]>,
}

impl PunchStats {
    /// Counts a new punch where the causes pie reads it.
    fn add(&mut self, p: &PunchRow) {
        // By the stored spellings, as the chart's SQL over `punches` reads them.
        let (verdict, status) = (verdict_name(p.verdict), status_name(p.status));
        let offline = fencegate_schema::anomaly::OFFLINE as i64;
        let counts = [
            i64::from(status == "late"),
            i64::from(status == "early_leave"),
            i64::from(verdict == "out_of_range" || status == "out_of_range_pending_approval"),
            i64::from(verdict == "rejected"),
            i64::from(p.flags != 0 && p.flags != offline),
        ];
        if counts.iter().all(|c| *c == 0) {
            return;
        }
        let key = (
            p.tenant.clone(),
            p.at_ms.div_euclid(HOUR_MS),
            p.department.clone().unwrap_or_default(),
        );
        let row = self.rows.entry(key).or_default();
        for (sum, c) in row.iter_mut().zip(counts) {
            *sum += c;
        }
    }

    /// Adds the sums to their rows and forgets them.
    async fn write(&mut self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        let sqlite = is_sqlite(tx);
        let rows: Vec<_> = std::mem::take(&mut self.rows).into_iter().collect();
        for chunk in rows.chunks(STATS_ROWS) {
            let sql = format!(
                "INSERT INTO punch_stats (tenant, hour, department, late, early, out_of_range, rejected, anti_cheat) \
                 VALUES {} ON CONFLICT (tenant, hour, department) DO UPDATE SET \
                 late = punch_stats.late + excluded.late, early = punch_stats.early + excluded.early, \
                 out_of_range = punch_stats.out_of_range + excluded.out_of_range, \
                 rejected = punch_stats.rejected + excluded.rejected, anti_cheat = punch_stats.anti_cheat + excluded.anti_cheat",
                values_list(sqlite, chunk.len(), 8)
            );
            let mut q = sqlx::query(&sql);
            for ((tenant, hour, department), c) in chunk {
                q = q.bind(tenant).bind(*hour).bind(department);
                for v in c {
                    q = q.bind(*v);
                }
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// Notes the employee days of `rows` that are written closed in
/// `day_outbox`, for the publisher (`results::outbox`), in the
/// transaction that writes them. A day noted again before it was sent is
/// sent once, with its newest result; a day noted while it is being sent
/// stays noted (its `seq` moved), and goes again.
async fn note_outbox<'a>(
    tx: &mut Tx,
    rows: impl Iterator<Item = &'a DayRow>,
) -> Result<(), sqlx::Error> {
    let keys: std::collections::BTreeSet<(&str, &str, &str)> = rows
        .filter(|r| r.closed)
        .map(|r| (r.tenant.as_str(), r.date.as_str(), r.employee.as_str()))
        .collect();
    let keys: Vec<_> = keys.into_iter().collect();
    let sqlite = is_sqlite(tx);
    let seq = fresh_outbox_seq();
    for chunk in keys.chunks(1_000) {
        let sql = format!(
            "INSERT INTO day_outbox (tenant, date, employee, seq) VALUES {} \
             ON CONFLICT (tenant, date, employee) DO UPDATE SET seq = day_outbox.seq + 1",
            values_list(sqlite, chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for (tenant, date, employee) in chunk {
            q = q.bind(*tenant).bind(*date).bind(*employee).bind(seq);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The seq of a new `day_outbox` note: the time in microseconds, and above
/// every seq this process handed out before. A note made after another was
/// sent and forgotten must not repeat the seq a publisher (another node's)
/// read before, or that publisher would forget the new note with its own
/// delete; and the record id follows the seq, so a day noted again with
/// the same content must get a new one or the downstream drops it as a
/// copy. The clock alone repeats within its tick (two notes in one
/// millisecond made one id); the process-wide floor does not.
fn fresh_outbox_seq() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = crate::clock::unix_us();
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .expect("the closure always returns Some");
    now.max(prev.saturating_add(1))
}

/// The `results_meta` key a bulk rebuild (`results/bulk.rs`) sets before
/// it writes anything and removes in the transaction that ends its bulk
/// part. A node's materializer that starts and finds it knows a rebuild
/// stopped halfway (its HR records applied, the days they touch not yet
/// written, aggregates still owed), and starts over
/// ([`ResultsStore::rebuild_stopped`]).
pub(crate) const REBUILD_RUNNING: &str = "rebuild_running";

/// Indexes of `punches` a bulk rebuild builds after storing the punches
/// instead of keeping them up row by row.
const BULK_INDEXES: [&str; 2] = ["punches_by_employee", "punches_by_time"];

/// Indexes of `day_results` a bulk rebuild builds after writing the
/// month's rows: it writes them in key order (date first), and finds the
/// few employees' rows it reads from the store by key.
const BULK_DAY_INDEXES: [&str; 2] = ["day_results_by_department", "day_results_by_employee"];

/// Who has a day row of a group on a range of dates
/// ([`ResultsStore::employees_between`]): read by the primary key, whose
/// dates lie together.
const EMPLOYEES_BETWEEN: &str = "SELECT employee, date FROM day_results \
     WHERE tenant = $1 AND date >= $2 AND date <= $3 AND grp = $4 AND slot = ''";

/// A date's day rows, optionally one department's or one employee's
/// ([`ResultsStore::days`]): empty strings stand for "any", so one
/// statement serves every filter, read by the primary key in its order.
fn days_of_date_sql() -> String {
    format!(
        "SELECT {DAY_COLUMNS} FROM day_results WHERE tenant = $1 AND date = $2 \
         AND ($3 = '' OR department = $4) AND ($5 = '' OR employee = $6) ORDER BY employee, slot"
    )
}

/// Punch rows per multi-row insert (12 parameters each).
const PUNCH_ROWS: usize = 1_000;

/// The width of a `punch_stats` bucket.
pub const HOUR_MS: i64 = 3_600_000;

impl ResultsStore {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) and creates
    /// the schema when missing.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        Self::open_as(url, false).await
    }

    /// Opens a new SQLite file at `path` for `fencegate results rebuild` to
    /// fill, then [`Self::seal`] and put in place of the live store. Its
    /// writes go straight to the file, neither journaled nor synced: a
    /// rebuild wrote every page twice through the WAL, and nothing of a
    /// half-built file is worth keeping. A process that dies leaves a file
    /// that may be corrupt and that no node opens; the next rebuild deletes
    /// it first (`cmd/results.rs`). Rolling back a transaction on it does
    /// not work: an error ends the rebuild.
    pub async fn open_scratch(path: &Path) -> Result<Self, sqlx::Error> {
        Self::open_as(&sqlite_url(path), true).await
    }

    /// Makes a store opened by [`Self::open_scratch`] an ordinary one: in
    /// WAL mode as every store a node opens, every page on disk (synced),
    /// and closed, so its file can be renamed into place.
    pub async fn seal(self) -> Result<(), sqlx::Error> {
        for pragma in ["PRAGMA synchronous = FULL", "PRAGMA journal_mode = WAL"] {
            sqlx::query(pragma).execute(&self.pool).await?;
        }
        self.pool.close().await;
        if let Some(path) = sqlite_path(&self.url) {
            std::fs::File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(sqlx::Error::Io)?;
        }
        Ok(())
    }

    async fn open_as(url: &str, scratch: bool) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        // SQLite allows one writer: one connection, so writers queue here
        // instead of failing with "database is locked".
        let sqlite = url.starts_with("sqlite:");
        let postgres = !sqlite;
        // PostgreSQL: an HR route may hold one connection for its tenant's
        // lock while it waits for the materializer, which needs its own.
        let max = if postgres { 8 } else { 1 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // A day's close rewrites a page per employee (rows
                        // are keyed employee first): ~400 MB at 100,000.
                        // With the default rollback journal every spill of
                        // the 2 MB cache synced the journal (a close took
                        // ~3 minutes); in WAL mode a spill is an append and
                        // only the commit syncs. NORMAL is still atomic: a
                        // power cut loses whole transactions, rows and the
                        // log position together, and the materializer reads
                        // those records again.
                        //
                        // Pages of 16 KiB in a new file (an existing file
                        // keeps its own): a month rebuilt at 100,000
                        // employees took 65–66 s against 67–72 s with 4 KiB
                        // (fewer pages to split, cache and write), and
                        // 58–61 s with the scratch file's unjournaled
                        // writes besides; the node's close, summary and
                        // apply did not move (docs/PERFORMANCE.md,
                        // "Scratch file and 16 KiB pages").
                        let journal = if scratch {
                            ["PRAGMA journal_mode = OFF", "PRAGMA synchronous = OFF"]
                        } else {
                            ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL"]
                        };
                        for pragma in ["PRAGMA page_size = 16384"]
                            .into_iter()
                            .chain(journal)
                            .chain(["PRAGMA cache_size = -65536"])
                        {
                            sqlx::Executor::execute(&mut *conn, pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let store = Self {
            pool,
            url: url.into(),
            postgres,
        };
        // One transaction (DDL is transactional in both databases) under a
        // lock: nodes sharing a PostgreSQL database start together, and
        // two concurrent `CREATE TABLE IF NOT EXISTS` of one table fail.
        let mut tx = store.begin().await?;
        if postgres {
            Self::lock_xact(&mut tx, lock_key::SCHEMA).await?;
        }
        let version =
            match sqlx::query("SELECT value FROM results_meta WHERE key = 'schema_version'")
                .fetch_optional(&mut *tx)
                .await
            {
                Ok(row) => row.and_then(|r| r.try_get::<i64, _>("value").ok()),
                Err(_) => {
                    // No table yet; PostgreSQL aborts a transaction at its
                    // first error, so start again (still under no schema).
                    tx.rollback().await?;
                    tx = store.begin().await?;
                    if postgres {
                        Self::lock_xact(&mut tx, lock_key::SCHEMA).await?;
                    }
                    None
                }
            };
        if version != Some(SCHEMA_VERSION) {
            // Older (or no) tables: the materializer starts again at the
            // log's oldest record (or the stream's first).
            for t in TABLES {
                sqlx::query(&format!("DROP TABLE IF EXISTS {t}"))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Self::apply_schema(&mut tx, sqlite).await?;
        Self::set_meta(&mut tx, "schema_version", SCHEMA_VERSION).await?;
        tx.commit().await?;
        Ok(store)
    }

    /// Creates what [`SCHEMA`] has and the store lacks (every statement is
    /// `IF NOT EXISTS`).
    async fn apply_schema(tx: &mut Tx, sqlite: bool) -> Result<(), sqlx::Error> {
        // Comments out first: a ';' in a comment is not a statement's end.
        let code: String = SCHEMA
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .map(|l| format!("{l}\n"))
            .collect();
        // `employee_months`'s 150 running-sum columns, made from the one
        // list the upserts and `recount_stats` are made from.
        let runs: String = run_columns()
            .map(|c| format!("{c} BIGINT NOT NULL, "))
            .collect();
        let code = code.replace(RUN_MARKER, &runs);
        for stmt in code.split(';') {
            if !stmt.trim().is_empty() {
                // SQLite-only table options, written as a comment that
                // PostgreSQL reads past.
                let stmt = if sqlite {
                    stmt.replace(SQLITE_ONLY, "WITHOUT ROWID")
                } else {
                    stmt.to_owned()
                };
                sqlx::query(&stmt).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// Whether the store holds no punch and no day row: a rebuild may then
    /// fill it in bulk (`results/bulk.rs`), every row it writes a new one.
    pub(crate) async fn is_empty_view(&self) -> Result<bool, sqlx::Error> {
        for sql in [
            "SELECT record_id FROM punches LIMIT 1",
            "SELECT employee FROM day_results LIMIT 1",
        ] {
            if sqlx::query(sql).fetch_optional(&self.pool).await?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether a bulk rebuild stopped halfway in this store
    /// ([`REBUILD_RUNNING`]): a node's materializer then starts over.
    pub async fn rebuild_stopped(&self) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        let v = Self::meta(&mut tx, REBUILD_RUNNING).await?;
        tx.commit().await?;
        Ok(v.is_some())
    }

    /// Drops the indexes of `punches` that only reads use
    /// ([`BULK_INDEXES`]): a rebuild stores millions of punches, and an
    /// index built once from sorted rows costs far less than one kept up
    /// row by row in employee order. [`Self::restore_indexes`] builds them
    /// again; a store opened without them (a rebuild killed halfway) gets
    /// them back on open, from [`SCHEMA`].
    pub(crate) async fn drop_bulk_indexes(&self) -> Result<(), sqlx::Error> {
        self.drop_indexes(&BULK_INDEXES).await
    }

    /// Drops the indexes of `day_results` that only reads after a rebuild
    /// use ([`BULK_DAY_INDEXES`]), while a rebuild's close writes every row
    /// of the month: as [`Self::drop_bulk_indexes`] for the punches.
    pub(crate) async fn drop_bulk_day_indexes(&self) -> Result<(), sqlx::Error> {
        self.drop_indexes(&BULK_DAY_INDEXES).await
    }

    async fn drop_indexes(&self, names: &[&str]) -> Result<(), sqlx::Error> {
        for index in names {
            sqlx::query(&format!("DROP INDEX IF EXISTS {index}"))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Builds every index of [`SCHEMA`] the store lacks.
    ///
    /// On SQLite each index's sort may use a second thread (`PRAGMA
    /// threads`), and runs with the usual page cache: with the bulk
    /// rebuild's 1 GiB one the sorter keeps runs of up to 512 MB in memory
    /// and sorts them as linked lists, which at 6 M punches took 35 s for
    /// two indexes where runs sized by a 64 MiB cache took 10 s
    /// (docs/PERFORMANCE.md, "Index builds").
    pub(crate) async fn restore_indexes(&self) -> Result<(), sqlx::Error> {
        if self.postgres {
            let mut tx = self.begin().await?;
            Self::lock_xact(&mut tx, lock_key::SCHEMA).await?;
            Self::apply_schema(&mut tx, false).await?;
            return tx.commit().await;
        }
        sqlx::query("PRAGMA threads = 2")
            .execute(&self.pool)
            .await?;
        let built = async {
            let mut tx = self.begin().await?;
            Self::apply_schema(&mut tx, true).await?;
            tx.commit().await
        }
        .await;
        // Back to one thread whether the build worked or not: the node's
        // own queries go on with this connection.
        let reset = sqlx::query("PRAGMA threads = 0")
            .execute(&self.pool)
            .await
            .map(drop);
        built.and(reset)
    }

    /// Takes the PostgreSQL advisory lock `key` until `tx` ends (waiting
    /// for it). PostgreSQL only: SQLite has one writer anyway.
    pub(crate) async fn lock_xact(tx: &mut Tx, key: i64) -> Result<(), sqlx::Error> {
        // The function returns `void`, which the `Any` driver cannot
        // decode: select a constant over it.
        sqlx::query("SELECT CAST(1 AS BIGINT) AS ok FROM (SELECT pg_advisory_xact_lock($1)) AS l")
            .bind(key)
            .fetch_one(&mut **tx)
            .await?;
        Ok(())
    }

    /// Whether the store is PostgreSQL (several nodes may share it).
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// The URL the store was opened with.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Whether the HR record `record_id` has been applied.
    pub async fn hr_record_applied(&self, record_id: &str) -> Result<bool, sqlx::Error> {
        Ok(
            sqlx::query("SELECT at_ms FROM hr_records WHERE record_id = $1")
                .bind(record_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Notes that the HR record `record_id` of `tenant` is applied (in the
    /// transaction that applies it).
    pub(crate) async fn note_hr_record(
        tx: &mut Tx,
        record_id: &str,
        tenant: &str,
        at_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO hr_records (record_id, tenant, at_ms) VALUES ($1, $2, $3) ON CONFLICT (record_id) DO NOTHING",
        )
        .bind(record_id)
        .bind(tenant)
        .bind(at_ms)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Opens the SQLite file at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Self, sqlx::Error> {
        Self::open(&sqlite_url(path)).await
    }

    /// Starts a transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): in WAL mode a deferred transaction that read
    /// first and then writes fails at once with SQLITE_BUSY when another
    /// connection (a CLI, a test, a second pool) committed in between,
    /// where an immediate one waits out the busy timeout instead.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        if self.postgres {
            self.pool.begin().await
        } else {
            self.pool.begin_with("BEGIN IMMEDIATE").await
        }
    }

    /// Deletes every row (before a rebuild).
    pub async fn clear(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        for t in TABLES {
            sqlx::query(&format!("DELETE FROM {t} WHERE {}", clear_filter(t)))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// The days noted for sending downstream (`day_outbox`), as
    /// `(tenant, date, employee)`.
    pub async fn day_outbox(&self) -> Result<Vec<(String, String, String)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT tenant, date, employee FROM day_outbox ORDER BY tenant, date, employee",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("tenant")?,
                    r.try_get("date")?,
                    r.try_get("employee")?,
                ))
            })
            .collect()
    }

    /// Makes `keep` the only days noted for sending downstream: a rebuild
    /// notes every day it closes, which were sent when they first closed;
    /// the days noted before it and not yet sent still go.
    pub async fn reset_day_outbox(
        &self,
        keep: &[(String, String, String)],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM day_outbox")
            .execute(&mut *tx)
            .await?;
        let sqlite = is_sqlite(&mut tx);
        let seq = fresh_outbox_seq();
        for chunk in keep.chunks(1_000) {
            let sql = format!(
                "INSERT INTO day_outbox (tenant, date, employee, seq) VALUES {}",
                values_list(sqlite, chunk.len(), 4)
            );
            let mut q = sqlx::query(&sql);
            for (tenant, date, employee) in chunk {
                q = q.bind(tenant).bind(date).bind(employee).bind(seq);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// A value of `results_meta`.
    pub async fn meta(tx: &mut Tx, key: &str) -> Result<Option<i64>, sqlx::Error> {
        let row = sqlx::query("SELECT value FROM results_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
        row.map(|r| r.try_get::<i64, _>("value")).transpose()
    }

    /// Sets a value of `results_meta`.
    pub async fn set_meta(tx: &mut Tx, key: &str, value: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO results_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Removes `key` from `results_meta`.
    pub(crate) async fn delete_meta(tx: &mut Tx, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM results_meta WHERE key = $1")
            .bind(key)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Gives SQLite a page cache of 1 GiB for a bulk rebuild (`on`), or
    /// the usual 64 MiB back. A rebuild's indexes outgrow the usual cache
    /// at 100,000 employees (the punches' key alone is 6 M random record
    /// ids), and each write that misses it reads a page from disk. Nothing
    /// on PostgreSQL, whose buffers are the server's.
    pub(crate) async fn set_bulk_cache(&self, on: bool) -> Result<(), sqlx::Error> {
        if !self.postgres {
            let kib = if on { 1_048_576 } else { 65_536 };
            sqlx::query(&format!("PRAGMA cache_size = -{kib}"))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Lowers every `closed:<tenant>:*` mark above `value` to it (an
    /// earlier day appeared: close it, and the ones after, again).
    pub async fn lower_closed(tx: &mut Tx, tenant: &str, value: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE results_meta SET value = $1 WHERE key LIKE $2 AND value > $1")
            .bind(value)
            .bind(format!("closed:{tenant}:%"))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Recomputes the dashboard's aggregates (`day_stats`,
    /// `employee_months`, `punch_stats`) from `day_results` and `punches`
    /// with `GROUP BY`. The materializer keeps them up to date row by row;
    /// this is their definition: the tests hold the two equal, and the
    /// dashboard bench fills its generated rows' aggregates with it.
    pub async fn recount_stats(&self) -> Result<(), sqlx::Error> {
        let offline = fencegate_schema::anomaly::OFFLINE as i64;
        let mut tx = self.begin().await?;
        for t in ["day_stats", "employee_months", "punch_stats"] {
            sqlx::query(&format!("DELETE FROM {t}"))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO day_stats (tenant, date, department, day_rows, expected, attended, late_days, early_days, missing, field_days, overtime_min) \
             SELECT tenant, date, COALESCE(department, ''), COUNT(*), \
             SUM(CASE WHEN closed = 1 AND status NOT IN ('rest_day', 'holiday', 'on_leave') THEN 1 ELSE 0 END), \
             SUM(CASE WHEN closed = 1 AND status NOT IN ('rest_day', 'holiday', 'on_leave', 'absent') THEN 1 ELSE 0 END), \
             SUM(CASE WHEN late_min > 0 THEN 1 ELSE 0 END), SUM(CASE WHEN early_min > 0 THEN 1 ELSE 0 END), \
             SUM(CASE WHEN status IN ('missing_in', 'missing_out') THEN 1 ELSE 0 END), \
             SUM(CASE WHEN status = 'field' THEN 1 ELSE 0 END), SUM(overtime_min) \
             FROM day_results WHERE slot = '' GROUP BY tenant, date, COALESCE(department, '')",
        )
        .execute(&mut *tx)
        .await?;
        // The running sum to day DD adds the rows of days 01 to DD (the
        // dates' day as text: '05' <= '12' as 5 <= 12).
        let mut columns = Vec::new();
        let mut sums = Vec::new();
        for (sum, value) in MONTH_SUMS {
            columns.push(sum.to_owned());
            sums.push(format!("SUM({value})"));
        }
        for (sum, value) in MONTH_SUMS {
            for d in 1..=RUN_DAYS {
                columns.push(run_column(sum, d));
                sums.push(format!(
                    "SUM(CASE WHEN substr(date, 9, 2) <= '{d:02}' THEN {value} ELSE 0 END)"
                ));
            }
        }
        sqlx::query(&format!(
            "INSERT INTO employee_months (tenant, month, department, employee, {}) \
             SELECT tenant, substr(date, 1, 7), COALESCE(department, ''), employee, {} \
             FROM day_results WHERE slot = '' AND (late_min <> 0 OR early_min <> 0 OR overtime_min <> 0) \
             GROUP BY tenant, substr(date, 1, 7), COALESCE(department, ''), employee",
            columns.join(", "),
            sums.join(", ")
        ))
        .execute(&mut *tx)
        .await?;
        // The hour is spelled out (not bound) so that PostgreSQL sees the
        // same expression in SELECT and GROUP BY.
        sqlx::query(&format!(
            "INSERT INTO punch_stats (tenant, hour, department, late, early, out_of_range, rejected, anti_cheat) \
             SELECT tenant, at_ms / {HOUR_MS}, COALESCE(department, ''), \
             SUM(CASE WHEN status = 'late' THEN 1 ELSE 0 END), SUM(CASE WHEN status = 'early_leave' THEN 1 ELSE 0 END), \
             SUM(CASE WHEN verdict = 'out_of_range' OR status = 'out_of_range_pending_approval' THEN 1 ELSE 0 END), \
             SUM(CASE WHEN verdict = 'rejected' THEN 1 ELSE 0 END), \
             SUM(CASE WHEN flags <> 0 AND flags <> $1 THEN 1 ELSE 0 END) \
             FROM punches WHERE status IN ('late', 'early_leave', 'out_of_range_pending_approval') \
             OR verdict IN ('out_of_range', 'rejected') OR (flags <> 0 AND flags <> $2) \
             GROUP BY tenant, at_ms / {HOUR_MS}, COALESCE(department, '')",
        ))
        .bind(offline)
        .bind(offline)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// The materializer's position (the next LSN to read), 0 when new.
    pub async fn position(&self) -> Result<u64, sqlx::Error> {
        let mut tx = self.begin().await?;
        let v = Self::meta(&mut tx, "next_lsn").await?;
        tx.commit().await?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// Stores a punch; a record already stored (re-read after a crash) is
    /// left as it is. Returns whether it was new.
    pub async fn insert_punch(tx: &mut Tx, p: &PunchRow) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO punches (record_id, lsn, tenant, employee, kind, at_ms, verdict, status, needs_approval, decision, flags, department, slot) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11, $12) ON CONFLICT (record_id) DO NOTHING",
        )
        .bind(&p.record_id)
        .bind(p.lsn)
        .bind(p.tenant.as_str())
        .bind(p.employee.as_str())
        .bind(if p.kind == PunchKind::Out { "out" } else { "in" })
        .bind(p.at_ms)
        .bind(verdict_name(p.verdict))
        .bind(status_name(p.status))
        .bind(i64::from(p.needs_approval))
        .bind(p.flags)
        .bind(p.department.clone())
        .bind(p.slot.clone())
        .execute(&mut **tx)
        .await?;
        let new = done.rows_affected() > 0;
        if new {
            add_punch_stats(tx, p).await?;
        }
        Ok(new)
    }

    /// Stores many punches, as [`Self::insert_punch`] does each, in
    /// multi-row statements (their `punch_stats` counts summed into one
    /// upsert): the materializer's batches, thousands of punches each.
    /// Returns, in `rows` order, whether each was new; of one record id
    /// given twice, only the first.
    pub async fn insert_punches(tx: &mut Tx, rows: &[PunchRow]) -> Result<Vec<bool>, sqlx::Error> {
        let sqlite = is_sqlite(tx);
        let mut new = Vec::with_capacity(rows.len());
        let mut stats = PunchStats::default();
        for chunk in rows.chunks(PUNCH_ROWS) {
            let sql = format!(
                "INSERT INTO punches (record_id, lsn, tenant, employee, kind, at_ms, verdict, status, needs_approval, flags, department, slot) \
                 VALUES {} ON CONFLICT (record_id) DO NOTHING RETURNING record_id",
                values_list(sqlite, chunk.len(), 12)
            );
            let mut q = sqlx::query(&sql);
            for p in chunk {
                q = bind_punch(q, p);
            }
            let mut stored = std::collections::HashSet::new();
            for r in q.fetch_all(&mut **tx).await? {
                stored.insert(r.try_get::<String, _>("record_id")?);
            }
            for p in chunk {
                // `remove`: a second copy of an id in the same chunk was
                // not the one stored.
                let is_new = stored.remove(&p.record_id);
                if is_new {
                    stats.add(p);
                }
                new.push(is_new);
            }
        }
        stats.write(tx).await?;
        Ok(new)
    }

    /// Stores punches none of which the store holds (a bulk rebuild into
    /// an empty store, which drops repeated record ids itself): as
    /// [`Self::insert_punches`] without asking which were new, so no row
    /// comes back per punch.
    pub(crate) async fn insert_fresh_punches(
        tx: &mut Tx,
        rows: &[PunchRow],
    ) -> Result<(), sqlx::Error> {
        let sqlite = is_sqlite(tx);
        let mut stats = PunchStats::default();
        for chunk in rows.chunks(PUNCH_ROWS) {
            let sql = format!(
                "INSERT INTO punches (record_id, lsn, tenant, employee, kind, at_ms, verdict, status, needs_approval, flags, department, slot) \
                 VALUES {} ON CONFLICT (record_id) DO NOTHING",
                values_list(sqlite, chunk.len(), 12)
            );
            let mut q = sqlx::query(&sql);
            for p in chunk {
                q = bind_punch(q, p);
                stats.add(p);
            }
            q.execute(&mut **tx).await?;
        }
        stats.write(tx).await
    }

    /// An employee's punches with attendance time in `[from_ms, to_ms)`.
    pub async fn punches_of(
        tx: &mut Tx,
        tenant: &str,
        employee: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DayPunch>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT kind, at_ms, verdict, status, needs_approval, decision FROM punches \
             WHERE tenant = $1 AND employee = $2 AND at_ms >= $3 AND at_ms < $4 ORDER BY at_ms, record_id",
        )
        .bind(tenant)
        .bind(employee)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&mut **tx)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                let verdict: String = r.try_get("verdict")?;
                let status: String = r.try_get("status")?;
                let decision: Option<i64> = r.try_get("decision")?;
                Ok(DayPunch {
                    kind: if kind == "out" {
                        PunchKind::Out
                    } else {
                        PunchKind::In
                    },
                    at_ms: r.try_get("at_ms")?,
                    verdict: verdict_of(&verdict),
                    status: status_of(&status),
                    needs_approval: r.try_get::<i64, _>("needs_approval")? != 0,
                    decision: decision.map(|d| d != 0),
                })
            })
            .collect()
    }

    /// The rows of one employee's day.
    pub async fn rows_of_day(
        tx: &mut Tx,
        tenant: &str,
        employee: &str,
        date: &str,
    ) -> Result<Vec<DayRow>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {DAY_COLUMNS} FROM day_results WHERE tenant = $1 AND employee = $2 AND date = $3"
        ))
        .bind(tenant)
        .bind(employee)
        .bind(date)
        .fetch_all(&mut **tx)
        .await?;
        rows.iter().map(day_row).collect()
    }

    /// Employees with a row for `date` in group `group` (to close days of
    /// employees the roster does not list).
    pub async fn employees_on(
        tx: &mut Tx,
        tenant: &str,
        date: &str,
        group: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT DISTINCT employee FROM day_results WHERE tenant = $1 AND date = $2 AND grp = $3 AND slot = ''",
        )
        .bind(tenant)
        .bind(date)
        .bind(group)
        .fetch_all(&mut **tx)
        .await?;
        rows.iter().map(|r| r.try_get("employee")).collect()
    }

    /// The punches of `employees` (1 to [`IN_CHUNK`]) with attendance
    /// time in `[from_ms, to_ms)`, each with its employee, in no
    /// particular order: [`punches_of`](Self::punches_of) for a chunk of a
    /// roster in one statement.
    pub(crate) async fn punches_of_many(
        tx: &mut Tx,
        tenant: &str,
        employees: &[&str],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, DayPunch)>, sqlx::Error> {
        let sqlite = is_sqlite(tx);
        let sql = format!(
            "SELECT employee, kind, at_ms, verdict, status, needs_approval, decision FROM punches \
             WHERE tenant = {} AND at_ms >= {} AND at_ms < {} AND employee IN ({})",
            first3(sqlite)[0],
            first3(sqlite)[1],
            first3(sqlite)[2],
            in_list(sqlite, 4)
        );
        let mut q = sqlx::query(&sql).bind(tenant).bind(from_ms).bind(to_ms);
        for e in padded(employees) {
            q = q.bind(e);
        }
        let rows = q.fetch_all(&mut **tx).await?;
        rows.iter()
            .map(|r| {
                let decision: Option<i64> = r.try_get("decision")?;
                Ok((
                    r.try_get("employee")?,
                    DayPunch {
                        kind: if r.try_get::<&str, _>("kind")? == "out" {
                            PunchKind::Out
                        } else {
                            PunchKind::In
                        },
                        at_ms: r.try_get("at_ms")?,
                        verdict: verdict_of(r.try_get("verdict")?),
                        status: status_of(r.try_get("status")?),
                        needs_approval: r.try_get::<i64, _>("needs_approval")? != 0,
                        decision: decision.map(|d| d != 0),
                    },
                ))
            })
            .collect()
    }

    /// Leave entries of `employees` (1 to [`IN_CHUNK`]) overlapping
    /// `from_date..=to_date`: `(employee, from_date, to_date, leave_type)`.
    pub(crate) async fn leave_of_many(
        tx: &mut Tx,
        tenant: &str,
        employees: &[&str],
        from_date: &str,
        to_date: &str,
    ) -> Result<Vec<(String, String, String, String)>, sqlx::Error> {
        let sqlite = is_sqlite(tx);
        let sql = format!(
            "SELECT employee, from_date, to_date, leave_type FROM leave_entries \
             WHERE tenant = {} AND from_date <= {} AND to_date >= {} AND employee IN ({})",
            first3(sqlite)[0],
            first3(sqlite)[1],
            first3(sqlite)[2],
            in_list(sqlite, 4)
        );
        let mut q = sqlx::query(&sql).bind(tenant).bind(to_date).bind(from_date);
        for e in padded(employees) {
            q = q.bind(e);
        }
        let rows = q.fetch_all(&mut **tx).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("employee")?,
                    r.try_get("from_date")?,
                    r.try_get("to_date")?,
                    r.try_get("leave_type")?,
                ))
            })
            .collect()
    }

    /// The stored rows of `employees` (1 to [`IN_CHUNK`]) on the days
    /// `first..=last` (at most [`DATES_IN`] of them), in no particular
    /// order.
    ///
    /// The dates go in an `IN` list, not a range: rows are keyed date
    /// first, and SQLite seeks an `IN` on the key's next column (the
    /// employee) only after equalities, so a range scanned every row of
    /// the days (200,000 a day at 100,000 employees) for each chunk.
    pub(crate) async fn rows_of_many(
        tx: &mut Tx,
        tenant: &str,
        employees: &[&str],
        first: i32,
        last: i32,
    ) -> Result<Vec<DayRow>, sqlx::Error> {
        assert!(
            first <= last && last - first < DATES_IN as i32,
            "rows_of_many reads 1 to {DATES_IN} days"
        );
        let sqlite = is_sqlite(tx);
        let mut dates = String::with_capacity(DATES_IN * 6);
        for i in 0..DATES_IN {
            if i > 0 {
                dates.push_str(", ");
            }
            placeholder(&mut dates, sqlite, 2 + i);
        }
        let sql = format!(
            "SELECT {DAY_COLUMNS} FROM day_results \
             WHERE tenant = {} AND date IN ({dates}) AND employee IN ({})",
            first3(sqlite)[0],
            in_list(sqlite, 2 + DATES_IN)
        );
        // Padded with the last date (`IN` ignores repeats), so the text,
        // and its prepared statement, is the same for every chunk.
        let days: Vec<String> = (0..DATES_IN as i32)
            .map(|i| date_string((first + i).min(last)))
            .collect();
        let mut q = sqlx::query(&sql).bind(tenant);
        for d in &days {
            q = q.bind(d);
        }
        for e in padded(employees) {
            q = q.bind(e);
        }
        let rows = q.fetch_all(&mut **tx).await?;
        rows.iter().map(day_row).collect()
    }

    /// `(employee, date)` of every day row of group `group` on
    /// `from_date..=to_date`: [`employees_on`](Self::employees_on) for a
    /// range of days.
    pub(crate) async fn employees_between(
        tx: &mut Tx,
        tenant: &str,
        group: &str,
        from_date: &str,
        to_date: &str,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let rows = sqlx::query(EMPLOYEES_BETWEEN)
            .bind(tenant)
            .bind(from_date)
            .bind(to_date)
            .bind(group)
            .fetch_all(&mut **tx)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("employee")?, r.try_get("date")?)))
            .collect()
    }

    /// Writes rows (insert or replace), each with the row of the same key
    /// as the transaction holds it now, as [`upsert_row`](Self::upsert_row)
    /// does one by one: the aggregates move by the summed differences
    /// ([`StatsDelta`]), the rows go in multi-row upserts. No two rows may
    /// share a key (PostgreSQL refuses to update a row twice in one
    /// statement).
    pub(crate) async fn upsert_rows(
        tx: &mut Tx,
        rows: &[(Option<DayRow>, DayRow)],
    ) -> Result<(), sqlx::Error> {
        let sqlite = is_sqlite(tx);
        let mut delta = StatsDelta::default();
        for (old, new) in rows {
            delta.moved(old.as_ref(), Some(new));
        }
        delta.write(tx).await?;
        // A day's close mostly flips `closed` on rows that are otherwise
        // the same: those go in an upsert that sets only `closed` and
        // `revision`, which no index holds, so the database rewrites the
        // row and leaves every index alone. Setting every column made
        // SQLite delete and re-insert each row's entries in the five
        // indexes that hold a set column (it decides by the columns set,
        // not by whether their values changed): 200,000 rows of a close at
        // 100,000 employees, a million index writes.
        let (closing, other): (Vec<_>, Vec<_>) = rows
            .iter()
            .partition(|(old, new)| old.as_ref().is_some_and(|o| only_closing(o, new)));
        for (set, rows) in [(DAY_CLOSE, closing), (DAY_UPSERT, other)] {
            for chunk in rows.chunks(UPSERT_ROWS) {
                let sql = format!(
                    "INSERT INTO day_results ({DAY_COLUMNS}) VALUES {} {set}",
                    values_list(sqlite, chunk.len(), 15)
                );
                let mut q = sqlx::query(&sql);
                for (_, r) in chunk {
                    q = bind_day_row(q, r);
                }
                q.execute(&mut **tx).await?;
            }
        }
        note_outbox(tx, rows.iter().map(|(_, r)| r)).await
    }

    /// Writes the rows of employee days a bulk rebuild computed, none of
    /// which the store holds (`results::bulk`), their aggregates' moves
    /// summed into `stats` for the caller to write once. Unlike
    /// [`Self::upsert_rows`] nothing is noted for sending downstream: a
    /// rebuild sends nothing of its own (docs/ATTENDANCE.md, "Day results
    /// downstream").
    pub(crate) async fn insert_rebuilt_rows(
        tx: &mut Tx,
        rows: &[DayRow],
        stats: &mut StatsDelta,
    ) -> Result<(), sqlx::Error> {
        let sqlite = is_sqlite(tx);
        for r in rows {
            stats.moved(None, Some(r));
        }
        for chunk in rows.chunks(UPSERT_ROWS) {
            let sql = format!(
                "INSERT INTO day_results ({DAY_COLUMNS}) VALUES {} {DAY_UPSERT}",
                values_list(sqlite, chunk.len(), 15)
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = bind_day_row(q, r);
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Writes a row (insert or replace). `old` is the row with the same
    /// key as the transaction holds it now (`None` when there is none): the
    /// dashboard's aggregates move by the difference, so a wrong `old`
    /// would leave them off until the next rebuild.
    pub async fn upsert_row(
        tx: &mut Tx,
        old: Option<&DayRow>,
        r: &DayRow,
    ) -> Result<(), sqlx::Error> {
        move_stats(tx, old, Some(r)).await?;
        let sql = format!(
            "INSERT INTO day_results ({DAY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) {DAY_UPSERT}"
        );
        bind_day_row(sqlx::query(&sql), r)
            .execute(&mut **tx)
            .await?;
        note_outbox(tx, std::iter::once(r)).await
    }

    /// Deletes rows of a day whose slot no longer exists (the rules
    /// changed the day's slots).
    /// `r` is the row as stored (its counts leave the aggregates).
    pub async fn delete_row(tx: &mut Tx, r: &DayRow) -> Result<(), sqlx::Error> {
        move_stats(tx, Some(r), None).await?;
        // A closed day lost a slot (the rules changed): it goes again.
        note_outbox(tx, std::iter::once(r)).await?;
        sqlx::query(
            "DELETE FROM day_results WHERE tenant = $1 AND employee = $2 AND date = $3 AND slot = $4",
        )
        .bind(&r.tenant)
        .bind(&r.employee)
        .bind(&r.date)
        .bind(&r.slot)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The rows of `tenant` on `date`, optionally of one department or one
    /// employee, ordered by employee then slot (the day row first).
    pub async fn days(
        &self,
        tenant: &str,
        date: &str,
        department: Option<&str>,
        employee: Option<&str>,
    ) -> Result<Vec<DayRow>, sqlx::Error> {
        let rows = sqlx::query(&days_of_date_sql())
            .bind(tenant)
            .bind(date)
            .bind(department.unwrap_or(""))
            .bind(department.unwrap_or(""))
            .bind(employee.unwrap_or(""))
            .bind(employee.unwrap_or(""))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(day_row).collect()
    }

    /// Every day row of the store, sorted (for comparing a rebuild).
    pub async fn all_rows(&self) -> Result<Vec<DayRow>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {DAY_COLUMNS} FROM day_results ORDER BY tenant, date, employee, slot"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(day_row).collect()
    }
}

// Read access for the HR dashboard (`crate::ui::stats`), which runs its own
// aggregate queries against the same tables; kept apart from the
// materializer's API above.
impl ResultsStore {
    /// The connection pool, for read-only aggregate queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// The conflict clause of a `day_results` upsert: every column but the key
/// takes the new row's value.
const DAY_UPSERT: &str = "ON CONFLICT (tenant, date, employee, slot) DO UPDATE SET \
    department = excluded.department, grp = excluded.grp, status = excluded.status, \
    late_min = excluded.late_min, early_min = excluded.early_min, worked_min = excluded.worked_min, \
    overtime_min = excluded.overtime_min, in_ms = excluded.in_ms, out_ms = excluded.out_ms, \
    closed = excluded.closed, revision = excluded.revision";

/// The conflict clause of an upsert of rows that differ from the stored
/// ones only in `closed` and `revision` ([`only_closing`]): no index holds
/// either, so the database leaves the indexes as they are.
const DAY_CLOSE: &str = "ON CONFLICT (tenant, date, employee, slot) DO UPDATE SET \
    closed = excluded.closed, revision = excluded.revision";

/// Whether `new` is `old` with only `closed` and `revision` changed (the
/// common case of a day's close).
fn only_closing(old: &DayRow, new: &DayRow) -> bool {
    // Every field named, so a new column cannot be forgotten here.
    let DayRow {
        tenant,
        employee,
        date,
        slot,
        department,
        group,
        status,
        late_min,
        early_min,
        worked_min,
        overtime_min,
        in_ms,
        out_ms,
        closed: _,
        revision: _,
    } = old;
    *tenant == new.tenant
        && *employee == new.employee
        && *date == new.date
        && *slot == new.slot
        && *department == new.department
        && *group == new.group
        && *status == new.status
        && *late_min == new.late_min
        && *early_min == new.early_min
        && *worked_min == new.worked_min
        && *overtime_min == new.overtime_min
        && *in_ms == new.in_ms
        && *out_ms == new.out_ms
}

/// Binds `p`'s 12 values in the multi-row punch inserts' column order.
fn bind_punch<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    p: &'q PunchRow,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    q.bind(p.record_id.as_str())
        .bind(p.lsn)
        .bind(p.tenant.as_str())
        .bind(p.employee.as_str())
        .bind(if p.kind == PunchKind::Out {
            "out"
        } else {
            "in"
        })
        .bind(p.at_ms)
        .bind(verdict_name(p.verdict))
        .bind(status_name(p.status))
        .bind(i64::from(p.needs_approval))
        .bind(p.flags)
        .bind(p.department.as_deref())
        .bind(p.slot.as_deref())
}

/// Binds `r`'s 15 values in `DAY_COLUMNS` order (one row of an upsert).
fn bind_day_row<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    r: &'q DayRow,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    // `&str`, not `&String`: sqlx's `Any` copies a `String` it binds by
    // reference, and a rebuild binds about 100 M values.
    q.bind(r.tenant.as_str())
        .bind(r.employee.as_str())
        .bind(r.date.as_str())
        .bind(r.slot.as_str())
        .bind(r.department.as_deref())
        .bind(r.group.as_str())
        .bind(r.status.as_str())
        .bind(r.late_min)
        .bind(r.early_min)
        .bind(r.worked_min)
        .bind(r.overtime_min)
        .bind(r.in_ms)
        .bind(r.out_ms)
        .bind(i64::from(r.closed))
        .bind(r.revision)
}

/// A day number as `YYYY-MM-DD`, the `date` column's form.
pub(super) fn date_string(day: i32) -> String {
    let (y, m, d) = crate::rules::schedule::civil_from_day(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The rows of one employee's day from a result.
pub(super) fn rows_of(
    tenant: &str,
    employee: &str,
    group: &str,
    r: &crate::rules::day::DayResult,
    closed: bool,
    department: Option<String>,
) -> Vec<DayRow> {
    let date = date_string(r.day);
    let base = DayRow {
        tenant: tenant.to_owned(),
        employee: employee.to_owned(),
        date,
        slot: String::new(),
        department,
        group: group.to_owned(),
        status: r.status.as_str().to_owned(),
        late_min: i64::from(r.late_min),
        early_min: i64::from(r.early_min),
        worked_min: i64::from(r.worked_min),
        overtime_min: i64::from(r.overtime_min),
        in_ms: r.slots.iter().filter_map(|s| s.in_ms).min(),
        out_ms: r.slots.iter().filter_map(|s| s.out_ms).max(),
        closed,
        revision: 0,
    };
    let mut rows = vec![base.clone()];
    for s in &r.slots {
        rows.push(DayRow {
            slot: s.name.clone(),
            status: s.status.as_str().to_owned(),
            late_min: i64::from(s.late_min),
            early_min: i64::from(s.early_min),
            worked_min: i64::from(s.worked_min),
            overtime_min: i64::from(s.overtime_min),
            in_ms: s.in_ms,
            out_ms: s.out_ms,
            ..base.clone()
        });
    }
    rows
}

/// SQLite's plan of `sql` with its parameters bound to `binds`, one line
/// per step: for tests that pin which index a statement reads.
#[cfg(test)]
pub(crate) async fn query_plan(store: &ResultsStore, sql: &str, binds: &[&str]) -> String {
    let text = format!("EXPLAIN QUERY PLAN {sql}");
    let mut q = sqlx::query(&text);
    for b in binds {
        q = q.bind(*b);
    }
    let rows = q.fetch_all(store.pool()).await.unwrap();
    rows.iter()
        .map(|r| r.try_get::<String, _>("detail").unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of the previous schema version (5: narrower indexes) is
    /// dropped and made again on open, as every version change is: its
    /// rows are a view, which the materializer rebuilds from the log.
    /// Two notes made within one clock tick get two seqs (and so two
    /// record ids): a day changed and changed back quickly is not dropped
    /// downstream as a copy of its first record.
    #[test]
    fn outbox_seqs_never_repeat_within_a_clock_tick() {
        let seqs: Vec<i64> = (0..10_000).map(|_| fresh_outbox_seq()).collect();
        assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
        let now = crate::clock::unix_us();
        assert!(seqs[0] > now - 60_000_000, "a seq is about the time in us");
    }

    #[tokio::test]
    async fn a_store_of_the_previous_version_is_made_again_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.sqlite");
        let old = ResultsStore::open_sqlite(&path).await.unwrap();
        for sql in [
            "DROP INDEX day_results_by_department",
            "CREATE INDEX day_results_by_department ON day_results (tenant, department, date)",
            "INSERT INTO results_meta (key, value) VALUES ('next_lsn', 42)",
            "UPDATE results_meta SET value = 5 WHERE key = 'schema_version'",
        ] {
            sqlx::query(sql).execute(old.pool()).await.unwrap();
        }
        old.pool().close().await;
        let store = ResultsStore::open_sqlite(&path).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        assert_eq!(
            ResultsStore::meta(&mut tx, "schema_version").await.unwrap(),
            Some(SCHEMA_VERSION)
        );
        assert_eq!(
            ResultsStore::meta(&mut tx, "next_lsn").await.unwrap(),
            None,
            "the materializer starts again at the log's oldest record"
        );
        let columns: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM pragma_index_info('day_results_by_department')")
                .fetch_one(&mut *tx)
                .await
                .unwrap()
                .try_get("n")
                .unwrap();
        assert_eq!(columns, 11, "the covering index of this version");
        tx.commit().await.unwrap();
    }

    /// A date's rows are read through the primary key (date first), in
    /// its order: with `day_results_by_date` gone, a plan that scanned the
    /// table or sorted a day's 300,000 rows at 100,000 employees would
    /// slow every close and the day listing.
    #[tokio::test]
    async fn a_dates_rows_are_read_by_the_primary_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultsStore::open_sqlite(&dir.path().join("r.sqlite"))
            .await
            .unwrap();
        let p = query_plan(
            &store,
            EMPLOYEES_BETWEEN,
            &["acme", "2026-01-01", "2026-01-31", "office"],
        )
        .await;
        assert!(
            p.contains("SEARCH day_results USING PRIMARY KEY (tenant=? AND date>? AND date<?)"),
            "{p}"
        );
        let p = query_plan(
            &store,
            &days_of_date_sql(),
            &["acme", "2026-01-31", "", "", "", ""],
        )
        .await;
        assert!(
            p.contains("SEARCH day_results USING PRIMARY KEY (tenant=? AND date=?)"),
            "{p}"
        );
        assert!(!p.contains("TEMP B-TREE"), "sorted by the key already: {p}");
    }

    /// A store made before `day_results_by_date` was dropped loses the
    /// index on open and keeps its rows and position: the table is the
    /// same, so nothing needs rebuilding.
    #[tokio::test]
    async fn opening_a_store_drops_the_old_date_index_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.sqlite");
        let old = ResultsStore::open_sqlite(&path).await.unwrap();
        for sql in [
            "CREATE INDEX day_results_by_date ON day_results (tenant, date, department, grp, slot, employee)",
            "INSERT INTO results_meta (key, value) VALUES ('next_lsn', 42)",
            "INSERT INTO day_results (tenant, employee, date, slot, department, grp, status, late_min, \
             early_min, worked_min, overtime_min, in_ms, out_ms, closed, revision) \
             VALUES ('acme', 'E1', '2026-01-05', '', 'ops', 'office', 'normal', 0, 0, 480, 0, NULL, NULL, 1, 1)",
        ] {
            sqlx::query(sql).execute(old.pool()).await.unwrap();
        }
        old.pool().close().await;
        let store = ResultsStore::open_sqlite(&path).await.unwrap();
        let indexes: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'index' AND name = 'day_results_by_date'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
        assert_eq!(indexes, 0);
        let mut tx = store.begin().await.unwrap();
        assert_eq!(
            ResultsStore::meta(&mut tx, "next_lsn").await.unwrap(),
            Some(42)
        );
        tx.commit().await.unwrap();
        let rows = store.days("acme", "2026-01-05", None, None).await.unwrap();
        assert_eq!(rows.len(), 1);
    }

    /// Two pools on one SQLite file (a gateway and a CLI or test beside
    /// it): transactions that read before they write must wait for the
    /// other writer, not fail with "database is locked" (a deferred
    /// transaction in WAL mode does, at once, when the other one commits
    /// between its read and its write).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_then_write_transactions_of_two_pools_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.sqlite");
        let a = ResultsStore::open_sqlite(&path).await.unwrap();
        let b = ResultsStore::open_sqlite(&path).await.unwrap();
        let bump = |store: ResultsStore, key: &'static str| async move {
            for _ in 0..200 {
                let mut tx = store.begin().await?;
                let v = ResultsStore::meta(&mut tx, "shared").await?.unwrap_or(0);
                tokio::task::yield_now().await;
                ResultsStore::set_meta(&mut tx, "shared", v + 1).await?;
                ResultsStore::set_meta(&mut tx, key, v).await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        };
        let (ra, rb) = tokio::join!(
            tokio::spawn(bump(a.clone(), "a")),
            tokio::spawn(bump(b.clone(), "b"))
        );
        ra.unwrap().unwrap();
        rb.unwrap().unwrap();
        let mut tx = a.begin().await.unwrap();
        // Serialized: no increment lost.
        assert_eq!(
            ResultsStore::meta(&mut tx, "shared").await.unwrap(),
            Some(400)
        );
    }
}
