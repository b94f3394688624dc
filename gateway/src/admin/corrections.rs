//! Make-up punches (补卡): `GET /v1/corrections?tenant=T[&status=][&employee=][&department=]`,
//! `POST /v1/corrections`, `POST /v1/corrections/{id}/evidence` and
//! `POST /v1/corrections/{id}/decision`.
//!
//! An employee files a request for a slot of a day it missed (an employee
//! token for itself; a supervisor, tenant admin or super on its behalf),
//! within its group's policy (`[tenants.<id>.groups.<name>.corrections]`:
//! how many days back, how many a month, whether evidence is required and
//! by when). A supervisor of the employee's department, a tenant admin or
//! super decides it; approved, it is a make-up punch at the slot's start
//! (clock-in) or end (clock-out) and the day result follows.
//!
//! Every step is a record of the durable log, answered once durable (as
//! approvals are): `Correction`, `CorrectionEvidence`, `CorrectionDecision`.
//! Client-supplied ids make each idempotent: the same request again gets
//! the same answer, a different one under a used id is 409. A request
//! outside the token's scope (another tenant, another department, no such
//! id) is 404, so ids do not leak.
//!
//! A request that owes evidence lapses at its `evidence_due_ms` (written
//! into its record when it was filed): the status is computed from that
//! deadline when read, and the materializer applies the same rule to each
//! record's own time, so a rebuild from the log agrees.

#![allow(
    clippy::result_large_err,
    reason = "the error is the HTTP answer itself, built once per refused request, never on a hot path"
)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fencegate_schema::{
    CorrectionDecisionMsg, CorrectionEvidenceMsg, CorrectionMsg, HrMsg, PunchKind,
};
use serde_json::{Map, Value, json};

use super::approvals::{
    MAX_ID, MAX_TEXT, append_hr, append_hr_at, body_object, decision_body, hr_lock, hr_token,
    in_scope, known_fields, known_params, opt_str, req_str, results, scoped_tenant, store_error,
    unprocessable,
};
use super::state::bad_request;
use super::{AdminState, AdminToken, Role, authorize_token, error};
use crate::results::ResultsStore;
use crate::results::hr::{CorrectionRow, day_of_date};
use crate::rules::schedule::slot_instants;
use crate::rules::{EvidencePolicy, TenantRules};

/// Longest evidence reference accepted (a file id or URL, not the file).
const MAX_EVIDENCE: usize = 512;

/// `ms` as a local time of the tenant, for messages and answers.
fn local_time(t: &TenantRules, ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| ms.to_string(),
        |ts| {
            ts.to_zoned(t.tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        },
    )
}

/// Today's day number in the tenant's zone.
fn today(t: &TenantRules, now_ms: i64) -> i32 {
    let local = now_ms + t.tz_table.offset_ms(&t.tz, now_ms);
    local.div_euclid(86_400_000) as i32
}

/// Whether `role` may see (and add evidence to) the request `c` of `tenant`:
/// an employee its own, the others as for approvals.
fn sees(role: &Role, tenant: &str, c: &CorrectionRow) -> bool {
    match role {
        Role::Employee {
            tenant: t,
            employee,
        } => t == tenant && *employee == c.employee,
        _ => in_scope(role, tenant, c.department.as_deref()),
    }
}

/// The answer for one request, its status as of `now_ms`.
fn correction_json(tenant: &str, t: &TenantRules, c: &CorrectionRow, now_ms: i64) -> Value {
    let status = c.status_at(now_ms);
    let decision = c.decision_id.as_ref().map(|id| {
        json!({
            "decision_id": id,
            "decision": if c.status == "approved" { "approve" } else { "reject" },
            "decider": c.decider,
            "comment": c.comment,
            "at_ms": c.decided_ms,
        })
    });
    json!({
        "correction_id": c.correction_id,
        "tenant": tenant,
        "employee": c.employee,
        "department": c.department,
        "date": c.date,
        "slot": c.slot,
        "kind": c.kind,
        "at_ms": c.at_ms,
        "reason": c.reason,
        "evidence_ref": c.evidence_ref,
        "evidence": c.evidence(),
        "evidence_attached_ms": c.attached_ms,
        "evidence_due_ms": (c.evidence_due_ms > 0).then_some(c.evidence_due_ms),
        "evidence_due": (c.evidence_due_ms > 0).then(|| local_time(t, c.evidence_due_ms)),
        "requested_by": c.requested_by,
        "requested_ms": c.requested_ms,
        "status": status,
        "decision": decision,
    })
}

/// The 409 for a request that lapsed, naming its deadline.
fn lapsed(t: &TenantRules, c: &CorrectionRow, what: &str) -> Response {
    error(
        StatusCode::CONFLICT,
        format!(
            "correction '{}' lapsed: its evidence was due by {} and none was attached, so it {what}; file a new request (it needs a new correction_id)",
            c.correction_id,
            local_time(t, c.evidence_due_ms)
        ),
    )
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no make-up request {id:?} in this token's scope; list them with GET /v1/corrections"
        ),
    )
}

/// The request `id` of `tenant` if `token` may see it, else the 404.
async fn visible(
    store: &ResultsStore,
    token: &AdminToken,
    tenant: &str,
    id: &str,
) -> Result<CorrectionRow, Response> {
    match store.correction(tenant, id).await {
        Ok(Some(c)) if sees(&token.role, tenant, &c) => Ok(c),
        Ok(_) => Err(not_found(id)),
        Err(e) => Err(store_error(&e)),
    }
}

/// `GET /v1/corrections`.
pub async fn get_corrections(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = match authorize_token(&state, &headers) {
        Ok(t) => t.clone(),
        Err(e) => return e.into_response(),
    };
    if let Err(r) = known_params(&params, &["tenant", "status", "employee", "department"]) {
        return r;
    }
    let tenant = match scoped_tenant(&token.role, &params) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let status = params.get("status").map_or("all", String::as_str);
    if !matches!(
        status,
        "all" | "pending" | "approved" | "rejected" | "lapsed"
    ) {
        return bad_request(format!(
            "status {status:?} is unknown; use pending, approved, rejected, lapsed or all (the default)"
        ));
    }
    let mut employee = params.get("employee").cloned();
    let department = params.get("department").cloned();
    match &token.role {
        Role::Employee { employee: own, .. } => {
            if employee.as_deref().is_some_and(|e| e != own) || department.is_some() {
                return error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "an employee token reads its own make-up requests only; drop employee= and department=, or ask for employee={own}"
                    ),
                );
            }
            employee = Some(own.clone());
        }
        Role::Supervisor {
            department: own, ..
        } if department.as_deref().is_some_and(|d| d != own) => {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "this supervisor token reads department '{own}' only; drop department= or ask for department={own}"
                ),
            );
        }
        _ => {}
    }
    let store = match results(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rows = match store.corrections(&tenant, employee.as_deref()).await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    let now = crate::clock::unix_ms();
    let rules = state.attendance.rules.load();
    let t = rules.tenant(&tenant);
    let items: Vec<Value> = rows
        .iter()
        .filter(|c| sees(&token.role, &tenant, c))
        .filter(|c| department.is_none() || c.department == department)
        .filter(|c| status == "all" || c.status_at(now) == status)
        .map(|c| correction_json(&tenant, t, c, now))
        .collect();
    axum::Json(json!({ "tenant": tenant, "corrections": items })).into_response()
}

/// A make-up request's body, checked for form (not yet against policy).
struct Request {
    correction_id: String,
    employee: Option<String>,
    date: String,
    slot: Option<String>,
    kind: PunchKind,
    reason: String,
    evidence_ref: Option<String>,
}

fn parse_request(m: &Map<String, Value>) -> Result<Request, Response> {
    known_fields(
        m,
        &[
            "correction_id",
            "employee",
            "date",
            "slot",
            "kind",
            "reason",
            "evidence_ref",
        ],
    )?;
    let kind = match m.get("kind").and_then(Value::as_str) {
        Some("in") => PunchKind::In,
        Some("out") => PunchKind::Out,
        Some(other) => {
            return Err(unprocessable(format!(
                "kind {other:?} is unknown; use \"in\" (a missed clock-in) or \"out\" (a missed clock-out)"
            )));
        }
        None => {
            return Err(unprocessable(
                "kind is required: \"in\" (a missed clock-in) or \"out\" (a missed clock-out)",
            ));
        }
    };
    let date = req_str(
        m,
        "date",
        10,
        "the day of the missed punch, YYYY-MM-DD in the tenant's zone",
    )?;
    if date.len() != 10 || day_of_date(&date).is_none() {
        return Err(unprocessable(format!(
            "date {date:?} is not a date; write it as YYYY-MM-DD, e.g. 2025-03-04"
        )));
    }
    Ok(Request {
        correction_id: req_str(
            m,
            "correction_id",
            MAX_ID,
            "a client-chosen id (a UUID, say) that makes the request idempotent; resend the same id to retry",
        )?,
        employee: opt_str(m, "employee", MAX_ID)?,
        date,
        slot: opt_str(m, "slot", 32)?,
        kind,
        reason: req_str(
            m,
            "reason",
            MAX_TEXT,
            "why the punch is missing, for the supervisor who decides",
        )?,
        evidence_ref: opt_str(m, "evidence_ref", MAX_EVIDENCE)?,
    })
}

fn kind_name(k: PunchKind) -> &'static str {
    if k == PunchKind::Out { "out" } else { "in" }
}

/// `POST /v1/corrections` with `{"correction_id", "employee", "date",
/// "slot", "kind": "in"|"out", "reason", "evidence_ref"}`.
pub async fn post_correction(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let token = match authorize_token(&state, &headers) {
        Ok(t) => t.clone(),
        Err(e) => return e.into_response(),
    };
    if let Err(r) = known_params(&params, &["tenant"]) {
        return r;
    }
    let tenant = match scoped_tenant(&token.role, &params) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let req = match body_object(&body).and_then(|m| parse_request(&m)) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let rules = state.attendance.rules.load();
    let t = rules.tenant(&tenant);
    // Whose make-up: an employee files for itself, a supervisor for its
    // department (anyone else is as unknown to it as a missing id).
    let employee = match (&token.role, req.employee.as_deref()) {
        (Role::Employee { employee: own, .. }, None) => own.clone(),
        (Role::Employee { employee: own, .. }, Some(e)) if e == own => own.clone(),
        (Role::Employee { employee: own, .. }, Some(_)) => {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "an employee token files make-up requests for itself only; drop employee= or set it to {own:?}"
                ),
            );
        }
        (_, None) => {
            return unprocessable("employee is required: the employee id the make-up is for");
        }
        (Role::Supervisor { department, .. }, Some(e)) => {
            let theirs = t.employee(e).and_then(|x| x.department.as_deref());
            if theirs != Some(department.as_str()) {
                return error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no employee {e:?} in department '{department}'; a supervisor files make-ups for its department's employees"
                    ),
                );
            }
            e.to_owned()
        }
        (_, Some(e)) => e.to_owned(),
    };
    let listed = t.employee(&employee);
    let group = t.group_of(listed);
    let policy = group.corrections;
    let store = match results(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let _guard = match hr_lock(store).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let now = crate::clock::unix_ms();
    // Idempotency first: a resend gets its answer even if the policy
    // would refuse it now (its quota is full with itself).
    match store.correction(&tenant, &req.correction_id).await {
        Ok(Some(old)) => {
            let same = old.employee == employee
                && old.date == req.date
                && req
                    .slot
                    .as_ref()
                    .is_none_or(|s| old.slot.as_ref() == Some(s))
                && old.kind == kind_name(req.kind)
                && old.reason.as_deref() == Some(req.reason.as_str())
                && old.evidence_ref == req.evidence_ref;
            if same && sees(&token.role, &tenant, &old) {
                return axum::Json(correction_json(&tenant, t, &old, now)).into_response();
            }
            return error(
                StatusCode::CONFLICT,
                format!(
                    "correction_id {:?} already names another make-up request (of {} for {} {}); use a new correction_id for another request",
                    req.correction_id,
                    old.employee,
                    old.date,
                    old.slot.as_deref().unwrap_or("")
                ),
            );
        }
        Ok(None) => {}
        Err(e) => return store_error(&e),
    }
    let cid = &req.correction_id;
    if policy.monthly_quota == 0 {
        return unprocessable(format!(
            "correction '{cid}': group '{}' takes no make-up requests (corrections.monthly_quota = 0); ask the tenant admin to set a quota",
            group.name
        ));
    }
    let Some(day) = day_of_date(&req.date) else {
        return unprocessable(format!("date {:?} is not a date", req.date));
    };
    let back = today(t, now) - day;
    if back < 0 {
        return unprocessable(format!(
            "correction '{cid}': date {} is in the future; a make-up is for a slot that has passed",
            req.date
        ));
    }
    if back > policy.days_back {
        return unprocessable(format!(
            "correction '{cid}': date {} is {back} days back; group '{}' allows {} (corrections.days_back); ask the tenant admin for a manual fix",
            req.date, group.name, policy.days_back
        ));
    }
    let slots = group.time.slots_on(day, &t.holidays);
    if slots.is_empty() {
        return unprocessable(format!(
            "correction '{cid}': group '{}' has no slot on {} (a rest day, a holiday or a free schedule); there is no punch to make up",
            group.name, req.date
        ));
    }
    let names = || {
        slots
            .iter()
            .map(|s| &*s.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let slot = match req.slot.as_deref() {
        Some(name) => match slots.iter().find(|s| &*s.name == name) {
            Some(s) => s,
            None => {
                return unprocessable(format!(
                    "slot {name:?} is not a slot of group '{}' on {}; use one of {}",
                    group.name,
                    req.date,
                    names()
                ));
            }
        },
        None if slots.len() == 1 => &slots[0],
        None => {
            return unprocessable(format!(
                "slot is required: group '{}' has several slots on {} ({}); name the one missed",
                group.name,
                req.date,
                names()
            ));
        }
    };
    let (start, end) = slot_instants(&t.tz, &t.tz_table, day, slot);
    let at_ms = if req.kind == PunchKind::Out {
        end
    } else {
        start
    };
    if at_ms > now {
        return unprocessable(format!(
            "correction '{cid}': the {} of slot '{}' on {} ({}) is still ahead; punch then instead",
            if req.kind == PunchKind::Out {
                "clock-out"
            } else {
                "clock-in"
            },
            slot.name,
            req.date,
            local_time(t, at_ms)
        ));
    }
    if policy.evidence == EvidencePolicy::None && req.evidence_ref.is_some() {
        return unprocessable(format!(
            "evidence_ref: group '{}' takes no evidence (corrections.evidence = \"none\"); drop evidence_ref",
            group.name
        ));
    }
    let month = &req.date[..7];
    let this_month = match store.corrections_in_month(&tenant, &employee, month).await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    let live: Vec<&CorrectionRow> = this_month
        .iter()
        .filter(|c| matches!(c.status_at(now), "pending" | "approved"))
        .collect();
    if let Some(dup) = live.iter().find(|c| {
        c.date == req.date
            && c.slot.as_deref() == Some(&*slot.name)
            && c.kind == kind_name(req.kind)
    }) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "correction '{}' ({}) already asks to make up the {} of slot '{}' on {}; wait for its decision instead of filing another",
                dup.correction_id,
                dup.status_at(now),
                kind_name(req.kind),
                slot.name,
                req.date
            ),
        );
    }
    if live.len() >= policy.monthly_quota as usize {
        return unprocessable(format!(
            "correction '{cid}': employee {employee} already has {} make-up requests for {month}; group '{}' allows {} a month (corrections.monthly_quota; rejected and lapsed requests do not count)",
            live.len(),
            group.name,
            policy.monthly_quota
        ));
    }
    let evidence_due_ms =
        if policy.evidence == EvidencePolicy::Required && req.evidence_ref.is_none() {
            now + policy.evidence_within_ms
        } else {
            0
        };
    let department = listed
        .and_then(|e| e.department.as_deref())
        .map(str::to_owned);
    let msg = HrMsg::Correction(CorrectionMsg {
        correction_id: cid.clone(),
        employee_id: employee.clone(),
        date: req.date.clone(),
        slot: Some(slot.name.to_string()),
        kind: req.kind,
        at_ms,
        reason: Some(req.reason.clone()),
        evidence_ref: req.evidence_ref.clone(),
        requested_by: Some(token.name.clone()),
        department: department.clone(),
        evidence_due_ms,
    });
    let requested_ms = match append_hr_at(&state, store, &tenant, "correction", cid, now, msg).await
    {
        Ok(at) => at,
        Err(r) => return r,
    };
    let row = match store.correction(&tenant, cid).await {
        Ok(Some(row)) => row,
        // Durable but not yet materialized: answer from the record.
        Ok(None) => CorrectionRow {
            correction_id: cid.clone(),
            employee,
            department,
            date: req.date.clone(),
            slot: Some(slot.name.to_string()),
            kind: kind_name(req.kind).to_owned(),
            at_ms,
            reason: Some(req.reason.clone()),
            evidence_ref: req.evidence_ref.clone(),
            requested_by: Some(token.name.clone()),
            requested_ms,
            evidence_due_ms,
            status: "pending".into(),
            decision_id: None,
            decider: None,
            comment: None,
            decided_ms: None,
            attached_evidence: None,
            attached_by: None,
            attached_ms: None,
        },
        Err(e) => return store_error(&e),
    };
    axum::Json(correction_json(&tenant, t, &row, now)).into_response()
}

/// `POST /v1/corrections/{id}/evidence` with `{"evidence_ref": "..."}`:
/// evidence for a pending request, before its deadline.
pub async fn post_evidence(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let token = match authorize_token(&state, &headers) {
        Ok(t) => t.clone(),
        Err(e) => return e.into_response(),
    };
    if let Err(r) = known_params(&params, &["tenant"]) {
        return r;
    }
    let tenant = match scoped_tenant(&token.role, &params) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let evidence_ref = match body_object(&body).and_then(|m| {
        known_fields(&m, &["evidence_ref"])?;
        req_str(
            &m,
            "evidence_ref",
            MAX_EVIDENCE,
            "a reference to the evidence (a boarding pass's file id, a ticket number)",
        )
    }) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let store = match results(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rules = state.attendance.rules.load();
    let t = rules.tenant(&tenant);
    let _guard = match hr_lock(store).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let now = crate::clock::unix_ms();
    let c = match visible(store, &token, &tenant, &id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match c.evidence() {
        Some(e) if e == evidence_ref => {
            return axum::Json(correction_json(&tenant, t, &c, now)).into_response();
        }
        Some(e) => {
            return error(
                StatusCode::CONFLICT,
                format!("correction '{id}' already has evidence {e:?}; evidence is attached once"),
            );
        }
        None => {}
    }
    if c.lapsed_at(now) {
        return lapsed(t, &c, "takes no evidence any more");
    }
    if c.status != "pending" {
        return error(
            StatusCode::CONFLICT,
            format!(
                "correction '{id}' is already {}; evidence is for pending requests",
                c.status
            ),
        );
    }
    let group = t.group_of(t.employee(&c.employee));
    if group.corrections.evidence == EvidencePolicy::None {
        return unprocessable(format!(
            "evidence_ref: group '{}' takes no evidence (corrections.evidence = \"none\"); the request is decided without it",
            group.name
        ));
    }
    let msg = HrMsg::CorrectionEvidence(CorrectionEvidenceMsg {
        correction_id: id.clone(),
        evidence_ref,
        attached_by: Some(token.name.clone()),
        employee_id: Some(c.employee.clone()),
    });
    if let Err(r) = append_hr(&state, store, &tenant, "correction-evidence", &id, msg).await {
        return r;
    }
    match store.correction(&tenant, &id).await {
        // The deadline passed between the check and the record: the
        // record is in the log, but (as in a rebuild) it came too late.
        Ok(Some(after)) if after.lapsed_at(crate::clock::unix_ms()) => {
            lapsed(t, &after, "took no evidence any more")
        }
        Ok(Some(after)) => axum::Json(correction_json(&tenant, t, &after, now)).into_response(),
        Ok(None) => not_found(&id),
        Err(e) => store_error(&e),
    }
}

/// `POST /v1/corrections/{id}/decision` with `{"decision_id", "decision":
/// "approve"|"reject", "comment"}`.
pub async fn post_decision(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let token = match hr_token(&state, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Err(r) = known_params(&params, &["tenant"]) {
        return r;
    }
    let tenant = match scoped_tenant(&token.role, &params) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let parsed = body_object(&body).and_then(|m| decision_body(&m));
    let (decision_id, approve, comment) = match parsed {
        Ok(x) => x,
        Err(r) => return r,
    };
    let store = match results(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rules = state.attendance.rules.load();
    let t = rules.tenant(&tenant);
    let _guard = match hr_lock(store).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let now = crate::clock::unix_ms();
    let c = match visible(store, &token, &tenant, &id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let wanted = if approve { "approved" } else { "rejected" };
    match store.correction_by_decision(&tenant, &decision_id).await {
        Ok(Some(d)) if d.correction_id == c.correction_id && d.status == wanted => {
            return axum::Json(correction_json(&tenant, t, &d, now)).into_response();
        }
        Ok(Some(d)) => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "decision id {decision_id:?} was already used: correction '{}' was {} by it; use a new decision id for another decision",
                    d.correction_id, d.status
                ),
            );
        }
        Ok(None) => {}
        Err(e) => return store_error(&e),
    }
    if c.lapsed_at(now) {
        return lapsed(t, &c, "cannot be decided");
    }
    if c.status != "pending" {
        return error(
            StatusCode::CONFLICT,
            format!(
                "correction '{id}' is already {} by decision {:?}; a decision is final",
                c.status,
                c.decision_id.as_deref().unwrap_or("")
            ),
        );
    }
    if approve && c.owes_evidence() {
        return error(
            StatusCode::CONFLICT,
            format!(
                "correction '{id}' still owes its evidence (due by {}); attach it with POST /v1/corrections/{id}/evidence before approving, or reject the request",
                local_time(t, c.evidence_due_ms)
            ),
        );
    }
    let msg = HrMsg::CorrectionDecision(CorrectionDecisionMsg {
        correction_id: id.clone(),
        decision_id: decision_id.clone(),
        approve,
        decider: Some(token.name.clone()),
        role: Some(token.role.name().to_owned()),
        comment: comment.clone(),
        employee_id: Some(c.employee.clone()),
        kind: if c.kind == "out" {
            PunchKind::Out
        } else {
            PunchKind::In
        },
        at_ms: c.at_ms,
        slot: c.slot.clone(),
    });
    let at_ms = match append_hr(
        &state,
        store,
        &tenant,
        "correction-decision",
        &decision_id,
        msg,
    )
    .await
    {
        Ok(at) => at,
        Err(r) => return r,
    };
    let after = match store.correction(&tenant, &id).await {
        Ok(Some(after)) => after,
        Ok(None) => return not_found(&id),
        Err(e) => return store_error(&e),
    };
    if after.lapsed_at(at_ms) && after.status != "approved" && after.status != "rejected" {
        // The deadline passed between the check and the record.
        return lapsed(t, &after, "could not be decided");
    }
    if after.status == "pending" {
        // Durable, not yet materialized: answer from the record.
        let decided = CorrectionRow {
            status: wanted.to_owned(),
            decision_id: Some(decision_id),
            decider: Some(token.name.clone()),
            comment,
            decided_ms: Some(at_ms),
            ..after
        };
        return axum::Json(correction_json(&tenant, t, &decided, now)).into_response();
    }
    axum::Json(correction_json(&tenant, t, &after, now)).into_response()
}
