//! HR records in the results store: approval decisions, leave, make-up
//! requests and their decisions (month archives are in
//! [`super::summary`]). Every HR decision is a record of the durable log
//! first (the admin routes append it and answer only once it is durable);
//! the materializer folds it in here in log order, so `fencegate results
//! rebuild` reproduces it. The queries the admin routes answer from are
//! here too.

use std::collections::BTreeSet;
use std::time::Duration;

use fencegate_schema::{HrView, PunchKind, RecordView};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::store::{ResultsStore, Tx};
use crate::rules::Rules;
use crate::rules::day::{self, Cover};
use crate::rules::schedule::day_of;

/// The deterministic record id of an HR record: the same request (same
/// tenant, kind and client-supplied id) always makes the same record id,
/// so downstreams drop a resent one as a duplicate.
pub fn hr_record_id(tenant: &str, kind: &str, id: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    for part in ["fencegate-hr", tenant, kind, id] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// A punch record as the approval routes need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PunchInfo {
    /// Record id (UUID text).
    pub record_id: String,
    /// Tenant.
    pub tenant: String,
    /// Employee.
    pub employee: String,
    /// Department on the record.
    pub department: Option<String>,
    /// `in` or `out`.
    pub kind: String,
    /// Attendance time, unix ms.
    pub at_ms: i64,
    /// Record status (the record API's names).
    pub status: String,
    /// Waits for a supervisor.
    pub needs_approval: bool,
}

/// A stored approval decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionRow {
    /// Client-supplied decision id.
    pub decision_id: String,
    /// The punch record decided.
    pub record_id: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// Admin token name of the decider.
    pub decider: Option<String>,
    /// The decider's role.
    pub role: Option<String>,
    /// Comment.
    pub comment: Option<String>,
    /// When it was decided (the record's gateway time), unix ms.
    pub at_ms: i64,
}

/// A stored leave entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaveRow {
    /// The HR system's id.
    pub source_id: String,
    /// Employee.
    pub employee: String,
    /// First day.
    pub from: String,
    /// Last day, inclusive.
    pub to: String,
    /// Leave type.
    pub leave_type: String,
    /// Admin token name that pushed it.
    pub entered_by: Option<String>,
    /// When it was recorded, unix ms.
    pub at_ms: i64,
}

/// A stored make-up request with its decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorrectionRow {
    /// Client-supplied request id.
    pub correction_id: String,
    /// Employee.
    pub employee: String,
    /// Department.
    pub department: Option<String>,
    /// Day, `YYYY-MM-DD`.
    pub date: String,
    /// Slot name.
    pub slot: Option<String>,
    /// `in` or `out`.
    pub kind: String,
    /// Time the make-up punch stands for, unix ms.
    pub at_ms: i64,
    /// Reason given.
    pub reason: Option<String>,
    /// Evidence reference.
    pub evidence_ref: Option<String>,
    /// Who filed it.
    pub requested_by: Option<String>,
    /// When it was filed, unix ms.
    pub requested_ms: i64,
    /// When it lapses without evidence, unix ms (0: no evidence owed).
    pub evidence_due_ms: i64,
    /// As stored: `pending`, `approved`, `rejected` or `lapsed` (a decision
    /// came after the deadline). A pending request past its deadline
    /// without evidence is lapsed too: see [`CorrectionRow::status_at`].
    pub status: String,
    /// The decision's id.
    pub decision_id: Option<String>,
    /// Who decided.
    pub decider: Option<String>,
    /// Decision comment.
    pub comment: Option<String>,
    /// When decided, unix ms.
    pub decided_ms: Option<i64>,
    /// Evidence attached after the request (`POST .../evidence`).
    pub attached_evidence: Option<String>,
    /// Who attached it.
    pub attached_by: Option<String>,
    /// When it was attached, unix ms.
    pub attached_ms: Option<i64>,
}

impl CorrectionRow {
    /// The evidence the request has: given with it, or attached later.
    pub fn evidence(&self) -> Option<&str> {
        self.evidence_ref
            .as_deref()
            .or(self.attached_evidence.as_deref())
    }

    /// Whether evidence is still owed (required by the group's policy when
    /// the request was filed, and neither given nor attached yet).
    pub fn owes_evidence(&self) -> bool {
        self.evidence_due_ms > 0 && self.evidence().is_none()
    }

    /// Whether the request had lapsed by `now_ms`: still pending, evidence
    /// owed, and its deadline passed. The deadline is in the request's
    /// record, so every reader (and a rebuild) agrees on it.
    pub fn lapsed_at(&self, now_ms: i64) -> bool {
        self.status == "lapsed"
            || (self.status == "pending" && self.owes_evidence() && now_ms > self.evidence_due_ms)
    }

    /// The status as of `now_ms`: `pending`, `approved`, `rejected` or
    /// `lapsed`.
    pub fn status_at(&self, now_ms: i64) -> &str {
        if self.lapsed_at(now_ms) {
            "lapsed"
        } else {
            &self.status
        }
    }
}

fn kind_name(k: PunchKind) -> &'static str {
    if k == PunchKind::Out { "out" } else { "in" }
}

fn decision_row(r: &AnyRow) -> Result<DecisionRow, sqlx::Error> {
    Ok(DecisionRow {
        decision_id: r.try_get("decision_id")?,
        record_id: r.try_get("record_id")?,
        decision: if r.try_get::<i64, _>("approve")? != 0 {
            "approve".into()
        } else {
            "reject".into()
        },
        decider: r.try_get("decider")?,
        role: r.try_get("role")?,
        comment: r.try_get("comment")?,
        at_ms: r.try_get("at_ms")?,
    })
}

fn leave_row(r: &AnyRow) -> Result<LeaveRow, sqlx::Error> {
    Ok(LeaveRow {
        source_id: r.try_get("source_id")?,
        employee: r.try_get("employee")?,
        from: r.try_get("from_date")?,
        to: r.try_get("to_date")?,
        leave_type: r.try_get("leave_type")?,
        entered_by: r.try_get("entered_by")?,
        at_ms: r.try_get("at_ms")?,
    })
}

/// A request with the evidence attached to it later; `WHERE` clauses name
/// `c.` columns.
const CORRECTION_SELECT: &str = "SELECT c.correction_id, c.employee, c.department, c.date, c.slot, c.kind, c.at_ms, c.reason, c.evidence_ref, \
     c.requested_by, c.requested_ms, c.evidence_due_ms, c.status, c.decision_id, c.decider, c.comment, c.decided_ms, \
     e.evidence_ref AS attached_evidence, e.attached_by, e.at_ms AS attached_ms \
     FROM corrections c LEFT JOIN correction_evidence e ON e.tenant = c.tenant AND e.correction_id = c.correction_id";

fn correction_row(r: &AnyRow) -> Result<CorrectionRow, sqlx::Error> {
    Ok(CorrectionRow {
        correction_id: r.try_get("correction_id")?,
        employee: r.try_get("employee")?,
        department: r.try_get("department")?,
        date: r.try_get("date")?,
        slot: r.try_get("slot")?,
        kind: r.try_get("kind")?,
        at_ms: r.try_get("at_ms")?,
        reason: r.try_get("reason")?,
        evidence_ref: r.try_get("evidence_ref")?,
        requested_by: r.try_get("requested_by")?,
        requested_ms: r.try_get("requested_ms")?,
        evidence_due_ms: r.try_get("evidence_due_ms")?,
        status: r.try_get("status")?,
        decision_id: r.try_get("decision_id")?,
        decider: r.try_get("decider")?,
        comment: r.try_get("comment")?,
        decided_ms: r.try_get("decided_ms")?,
        attached_evidence: r.try_get("attached_evidence")?,
        attached_by: r.try_get("attached_by")?,
        attached_ms: r.try_get("attached_ms")?,
    })
}

/// Which punches `GET /v1/approvals` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalFilter {
    /// Waiting for a decision.
    Pending,
    /// Decided.
    Decided,
    /// Both.
    All,
}

impl ResultsStore {
    /// Waits until the materializer has applied the log up to and including
    /// `lsn` (read-your-writes for the HR routes); false after `timeout`.
    pub async fn wait_applied(&self, lsn: u64, timeout: Duration) -> bool {
        let deadline = crate::clock::tokio_now() + timeout;
        // Bounded: 10 ms steps until the deadline.
        loop {
            if self.position().await.is_ok_and(|p| p > lsn) {
                return true;
            }
            if crate::clock::tokio_now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the HR record `record_id` is applied, by this node's
    /// materializer or (fed by the stream) any node's; false after
    /// `timeout`.
    pub async fn wait_hr_record(&self, record_id: &str, timeout: Duration) -> bool {
        let deadline = crate::clock::tokio_now() + timeout;
        // Bounded: 10 ms steps until the deadline.
        loop {
            if self.hr_record_applied(record_id).await.unwrap_or(false) {
                return true;
            }
            if crate::clock::tokio_now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The punch record `record_id` (any tenant: the caller scopes it).
    pub async fn punch_info(&self, record_id: &str) -> Result<Option<PunchInfo>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT record_id, tenant, employee, department, kind, at_ms, status, needs_approval FROM punches WHERE record_id = $1",
        )
        .bind(record_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| punch_info(&r)).transpose()
    }

    /// The decision with id `decision_id` of `tenant`.
    pub async fn decision_by_id(
        &self,
        tenant: &str,
        decision_id: &str,
    ) -> Result<Option<DecisionRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT decision_id, record_id, approve, decider, role, comment, at_ms FROM decisions WHERE tenant = $1 AND decision_id = $2",
        )
        .bind(tenant)
        .bind(decision_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| decision_row(&r)).transpose()
    }

    /// The decision in force on punch `record_id` (the first one).
    pub async fn decision_of(
        &self,
        tenant: &str,
        record_id: &str,
    ) -> Result<Option<DecisionRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT decision_id, record_id, approve, decider, role, comment, at_ms FROM decisions WHERE tenant = $1 AND record_id = $2 ORDER BY at_ms, decision_id LIMIT 1",
        )
        .bind(tenant)
        .bind(record_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| decision_row(&r)).transpose()
    }

    /// Punches of `tenant` that needed approval, with their decision.
    pub async fn approvals(
        &self,
        tenant: &str,
        department: Option<&str>,
        filter: ApprovalFilter,
    ) -> Result<Vec<(PunchInfo, Option<DecisionRow>)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT record_id, tenant, employee, department, kind, at_ms, status, needs_approval FROM punches \
             WHERE tenant = $1 AND needs_approval = 1 AND ($2 = '' OR department = $2) ORDER BY at_ms, record_id",
        )
        .bind(tenant)
        .bind(department.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let p = punch_info(r)?;
            let d = self.decision_of(tenant, &p.record_id).await?;
            let keep = match filter {
                ApprovalFilter::Pending => d.is_none(),
                ApprovalFilter::Decided => d.is_some(),
                ApprovalFilter::All => true,
            };
            if keep {
                out.push((p, d));
            }
        }
        Ok(out)
    }

    /// Leave entries of `tenant` (of one employee, or of a department's
    /// employees by `filter`), by start date.
    pub async fn leave_entries(
        &self,
        tenant: &str,
        employee: Option<&str>,
    ) -> Result<Vec<LeaveRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT source_id, employee, from_date, to_date, leave_type, entered_by, at_ms FROM leave_entries \
             WHERE tenant = $1 AND ($2 = '' OR employee = $2) ORDER BY from_date, source_id",
        )
        .bind(tenant)
        .bind(employee.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(leave_row).collect()
    }

    /// The leave entry `source_id` of `tenant`.
    pub async fn leave_by_source(
        &self,
        tenant: &str,
        source_id: &str,
    ) -> Result<Option<LeaveRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT source_id, employee, from_date, to_date, leave_type, entered_by, at_ms FROM leave_entries WHERE tenant = $1 AND source_id = $2",
        )
        .bind(tenant)
        .bind(source_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| leave_row(&r)).transpose()
    }

    /// Make-up requests of `tenant` (one employee's, or all), by date.
    pub async fn corrections(
        &self,
        tenant: &str,
        employee: Option<&str>,
    ) -> Result<Vec<CorrectionRow>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "{CORRECTION_SELECT} WHERE c.tenant = $1 AND ($2 = '' OR c.employee = $2) ORDER BY c.date, c.correction_id"
        ))
        .bind(tenant)
        .bind(employee.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(correction_row).collect()
    }

    /// The make-up request `correction_id` of `tenant`.
    pub async fn correction(
        &self,
        tenant: &str,
        correction_id: &str,
    ) -> Result<Option<CorrectionRow>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "{CORRECTION_SELECT} WHERE c.tenant = $1 AND c.correction_id = $2"
        ))
        .bind(tenant)
        .bind(correction_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| correction_row(&r)).transpose()
    }

    /// The make-up request of `tenant` decided by decision `decision_id`.
    pub async fn correction_by_decision(
        &self,
        tenant: &str,
        decision_id: &str,
    ) -> Result<Option<CorrectionRow>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "{CORRECTION_SELECT} WHERE c.tenant = $1 AND c.decision_id = $2"
        ))
        .bind(tenant)
        .bind(decision_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| correction_row(&r)).transpose()
    }

    /// `employee`'s make-up requests of `tenant` for days in `month`
    /// (`YYYY-MM`), any status (the quota counts the live ones).
    pub async fn corrections_in_month(
        &self,
        tenant: &str,
        employee: &str,
        month: &str,
    ) -> Result<Vec<CorrectionRow>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "{CORRECTION_SELECT} WHERE c.tenant = $1 AND c.employee = $2 AND c.date >= $3 AND c.date <= $4 ORDER BY c.date, c.correction_id"
        ))
        .bind(tenant)
        .bind(employee)
        .bind(format!("{month}-01"))
        .bind(format!("{month}-31"))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(correction_row).collect()
    }

    /// Approved make-up requests of `tenant` for `date` (the marker on
    /// `GET /v1/days`).
    pub async fn approved_makeups(
        &self,
        tenant: &str,
        date: &str,
    ) -> Result<Vec<CorrectionRow>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "{CORRECTION_SELECT} WHERE c.tenant = $1 AND c.date = $2 AND c.status = 'approved' ORDER BY c.employee, c.correction_id"
        ))
        .bind(tenant)
        .bind(date)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(correction_row).collect()
    }

    /// Every HR row of the store as text lines, sorted (for comparing a
    /// rebuild with the incremental store).
    pub async fn all_hr(&self) -> Result<Vec<String>, sqlx::Error> {
        let mut out = Vec::new();
        for (table, cols) in [
            (
                "decisions",
                "tenant, decision_id, record_id, approve, decider, comment, at_ms",
            ),
            (
                "leave_entries",
                "tenant, source_id, employee, from_date, to_date, leave_type, at_ms",
            ),
            (
                "corrections",
                "tenant, correction_id, employee, date, kind, at_ms, status, decision_id, decided_ms",
            ),
            (
                "correction_evidence",
                "tenant, correction_id, evidence_ref, attached_by, at_ms",
            ),
            ("month_archives", "tenant, month, archived_ms"),
            ("month_snapshots", "tenant, month, employee, summary"),
            (
                "punches",
                "record_id, tenant, employee, kind, at_ms, decision, makeup",
            ),
        ] {
            let rows = sqlx::query(&format!("SELECT {cols} FROM {table}"))
                .fetch_all(&self.pool)
                .await?;
            for r in &rows {
                let mut line = format!("{table}:");
                for i in 0..cols.split(',').count() {
                    let cell = r
                        .try_get::<Option<String>, _>(i)
                        .ok()
                        .flatten()
                        .or_else(|| {
                            r.try_get::<Option<i64>, _>(i)
                                .ok()
                                .flatten()
                                .map(|v| v.to_string())
                        })
                        .unwrap_or_else(|| "NULL".into());
                    line.push_str(&cell);
                    line.push('|');
                }
                out.push(line);
            }
        }
        out.sort();
        Ok(out)
    }
}

fn punch_info(r: &AnyRow) -> Result<PunchInfo, sqlx::Error> {
    Ok(PunchInfo {
        record_id: r.try_get("record_id")?,
        tenant: r.try_get("tenant")?,
        employee: r.try_get("employee")?,
        department: r.try_get("department")?,
        kind: r.try_get("kind")?,
        at_ms: r.try_get("at_ms")?,
        status: r.try_get("status")?,
        needs_approval: r.try_get::<i64, _>("needs_approval")? != 0,
    })
}

/// What covers `employee`'s `date` (`YYYY-MM-DD`): a business trip wins
/// over other leave when both do.
pub(crate) async fn cover_of(
    tx: &mut Tx,
    tenant: &str,
    employee: &str,
    date: &str,
) -> Result<Option<Cover>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT leave_type FROM leave_entries WHERE tenant = $1 AND employee = $2 AND from_date <= $3 AND to_date >= $3",
    )
    .bind(tenant)
    .bind(employee)
    .bind(date)
    .fetch_all(&mut **tx)
    .await?;
    let mut cover = None;
    for r in &rows {
        let t: String = r.try_get("leave_type")?;
        if t == "business_trip" {
            return Ok(Some(Cover::BusinessTrip));
        }
        cover = Some(Cover::Leave);
    }
    Ok(cover)
}

/// The day number of a `YYYY-MM-DD` date, if it is one.
pub fn day_of_date(s: &str) -> Option<i32> {
    s.parse::<jiff::civil::Date>().ok().map(day_of)
}

/// Longest leave entry accepted, days (a year and a day: leap years).
pub const MAX_LEAVE_DAYS: i32 = 366;

/// An employee day touched by a record: (tenant, employee, day number).
pub(crate) type Touched = BTreeSet<(String, String, i32)>;

/// Folds one HR record into the store and notes the employee days it
/// changes. Month archives are the caller's ([`super::summary`]).
pub(crate) async fn apply_hr(
    tx: &mut Tx,
    rules: &Rules,
    view: &RecordView<'_>,
    h: HrView<'_>,
    lsn: u64,
    touched: &mut Touched,
) -> Result<(), sqlx::Error> {
    let tenant = view.tenant();
    let at = view.gateway_time_ms();
    match h {
        HrView::Decision(d) => {
            let record_id = crate::record_json::uuid(&d.target_record_id().0);
            let inserted = sqlx::query(
                "INSERT INTO decisions (tenant, decision_id, record_id, approve, decider, role, comment, at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant, decision_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(d.decision_id())
            .bind(&record_id)
            .bind(i64::from(d.approve()))
            .bind(d.decider())
            .bind(d.role())
            .bind(d.comment())
            .bind(at)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(());
            }
            // The first decision on a punch wins (two nodes racing); later
            // ones are kept in `decisions` but change nothing.
            let updated = sqlx::query(
                "UPDATE punches SET decision = $1 WHERE record_id = $2 AND tenant = $3 AND decision IS NULL",
            )
            .bind(i64::from(d.approve()))
            .bind(&record_id)
            .bind(tenant)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if updated > 0 {
                touch_punch(tx, rules, tenant, &record_id, touched).await?;
            }
        }
        HrView::Leave(l) => {
            let inserted = sqlx::query(
                "INSERT INTO leave_entries (tenant, source_id, employee, from_date, to_date, leave_type, entered_by, at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant, source_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(l.source_id())
            .bind(l.employee_id())
            .bind(l.from_date())
            .bind(l.to_date())
            .bind(l.leave_type())
            .bind(l.entered_by())
            .bind(at)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if let (1, Some(from), Some(to)) = (
                inserted,
                day_of_date(l.from_date()),
                day_of_date(l.to_date()),
            ) {
                for d in from..=to.min(from + MAX_LEAVE_DAYS) {
                    touched.insert((tenant.to_owned(), l.employee_id().to_owned(), d));
                }
            }
        }
        HrView::Correction(c) => {
            sqlx::query(
                "INSERT INTO corrections (tenant, correction_id, employee, department, date, slot, kind, at_ms, reason, evidence_ref, requested_by, requested_ms, evidence_due_ms, status) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'pending') ON CONFLICT (tenant, correction_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(c.correction_id())
            .bind(c.employee_id())
            .bind(c.department())
            .bind(c.date())
            .bind(c.slot())
            .bind(kind_name(c.kind()))
            .bind(c.at_ms())
            .bind(c.reason())
            .bind(c.evidence_ref())
            .bind(c.requested_by())
            .bind(at)
            .bind(c.evidence_due_ms())
            .execute(&mut **tx)
            .await?;
        }
        HrView::CorrectionDecision(d) => {
            let Some(c) = sqlx::query(&format!(
                "{CORRECTION_SELECT} WHERE c.tenant = $1 AND c.correction_id = $2"
            ))
            .bind(tenant)
            .bind(d.correction_id())
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| correction_row(&r))
            .transpose()?
            else {
                return Ok(());
            };
            if c.status != "pending" {
                return Ok(());
            }
            // The route refuses both cases below; applying the same rule
            // to the record's own time keeps a rebuild (and a racing node's
            // decision) the same. Past the deadline without evidence the
            // request has lapsed, whatever the decision; an approval while
            // evidence is still owed changes nothing.
            let (status, decided) = if c.lapsed_at(at) {
                ("lapsed", false)
            } else if d.approve() && c.owes_evidence() {
                return Ok(());
            } else if d.approve() {
                ("approved", true)
            } else {
                ("rejected", true)
            };
            let (decision_id, decider, comment) = if decided {
                (Some(d.decision_id()), d.decider(), d.comment())
            } else {
                (None, None, None)
            };
            sqlx::query(
                "UPDATE corrections SET status = $1, decision_id = $2, decider = $3, comment = $4, decided_ms = $5 WHERE tenant = $6 AND correction_id = $7",
            )
            .bind(status)
            .bind(decision_id)
            .bind(decider)
            .bind(comment)
            .bind(at)
            .bind(tenant)
            .bind(d.correction_id())
            .execute(&mut **tx)
            .await?;
            if status == "approved" {
                let record_id = format!("makeup:{}", c.correction_id);
                sqlx::query(
                    "INSERT INTO punches (record_id, lsn, tenant, employee, kind, at_ms, verdict, status, needs_approval, decision, flags, department, slot, makeup) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'accepted', 'normal', 0, NULL, 0, $7, $8, 1) ON CONFLICT (record_id) DO NOTHING",
                )
                .bind(&record_id)
                .bind(lsn as i64)
                .bind(tenant)
                .bind(&c.employee)
                .bind(&c.kind)
                .bind(c.at_ms)
                .bind(c.department.clone())
                .bind(c.slot.clone())
                .execute(&mut **tx)
                .await?;
                touch_punch(tx, rules, tenant, &record_id, touched).await?;
            }
        }
        HrView::CorrectionEvidence(e) => {
            let Some(c) = sqlx::query(&format!(
                "{CORRECTION_SELECT} WHERE c.tenant = $1 AND c.correction_id = $2"
            ))
            .bind(tenant)
            .bind(e.correction_id())
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| correction_row(&r))
            .transpose()?
            else {
                return Ok(());
            };
            // Only onto a pending request without evidence, and not after
            // its deadline (judged by the record's time, as the route does).
            if c.status != "pending" || c.evidence().is_some() || c.lapsed_at(at) {
                return Ok(());
            }
            sqlx::query(
                "INSERT INTO correction_evidence (tenant, correction_id, evidence_ref, attached_by, at_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, correction_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(e.correction_id())
            .bind(e.evidence_ref())
            .bind(e.attached_by())
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        HrView::MonthArchive(_) => {}
    }
    Ok(())
}

/// Notes the day the stored punch `record_id` counts for.
async fn touch_punch(
    tx: &mut Tx,
    rules: &Rules,
    tenant: &str,
    record_id: &str,
    touched: &mut Touched,
) -> Result<(), sqlx::Error> {
    let Some(r) = sqlx::query("SELECT employee, kind, at_ms FROM punches WHERE record_id = $1")
        .bind(record_id)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(());
    };
    let employee: String = r.try_get("employee")?;
    let kind: String = r.try_get("kind")?;
    let at_ms: i64 = r.try_get("at_ms")?;
    let t = rules.tenant(tenant);
    let group = t.group_of(t.employee(&employee));
    let kind = if kind == "out" {
        PunchKind::Out
    } else {
        PunchKind::In
    };
    let d = day::attributed_day(t, group, kind, at_ms);
    touched.insert((tenant.to_owned(), employee, d));
    Ok(())
}

/// Gives a punch just stored the first decision already stored for it (by
/// decision time, then id): from the stream a decision can arrive before
/// the punch it decides. The punch's day is recomputed by the caller.
pub(crate) async fn adopt_decision(
    tx: &mut Tx,
    tenant: &str,
    record_id: &str,
) -> Result<(), sqlx::Error> {
    let first = sqlx::query(
        "SELECT approve FROM decisions WHERE tenant = $1 AND record_id = $2 ORDER BY at_ms, decision_id LIMIT 1",
    )
    .bind(tenant)
    .bind(record_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(r) = first {
        let approve: i64 = r.try_get("approve")?;
        sqlx::query(
            "UPDATE punches SET decision = $1 WHERE record_id = $2 AND tenant = $3 AND decision IS NULL",
        )
        .bind(approve)
        .bind(record_id)
        .bind(tenant)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
