//! `GET /v1/days?tenant=T&date=YYYY-MM-DD[&department=D][&employee=E]`: day
//! results from the results store, scoped by role exactly as
//! `GET /v1/records` is (an employee its own, a supervisor its department,
//! a tenant admin its tenant, super any tenant). Asking outside the scope
//! is refused (403), never silently narrowed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::state::bad_request;
use super::{AdminState, Role, authorize_token, error};
use crate::results::DayRow;
use crate::results::hr::CorrectionRow;

fn forbidden(message: impl Into<String>) -> Response {
    error(StatusCode::FORBIDDEN, message)
}

/// Whether `s` is a calendar date `YYYY-MM-DD`.
fn valid_date(s: &str) -> bool {
    s.len() == 10 && s.parse::<jiff::civil::Date>().is_ok()
}

fn fields(r: &DayRow) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("status".into(), r.status.clone().into());
    m.insert("late_min".into(), r.late_min.into());
    m.insert("early_min".into(), r.early_min.into());
    m.insert("worked_min".into(), r.worked_min.into());
    m.insert("overtime_min".into(), r.overtime_min.into());
    m.insert("in_ms".into(), r.in_ms.into());
    m.insert("out_ms".into(), r.out_ms.into());
    m
}

/// The rows of a day grouped per employee: the day's fields, then `slots`.
/// A slot an approved make-up request filled carries `made_up` (the kinds
/// and request ids), and so does its day.
fn render(rows: &[DayRow], makeups: &[CorrectionRow]) -> Vec<Value> {
    let made_up = |employee: &str, slot: Option<&str>| -> Vec<Value> {
        makeups
            .iter()
            .filter(|c| c.employee == employee && slot.is_none_or(|s| c.slot.as_deref() == Some(s)))
            .map(|c| json!({ "kind": c.kind, "correction_id": c.correction_id, "slot": c.slot }))
            .collect()
    };
    let mut out: Vec<Value> = Vec::new();
    for r in rows.iter().filter(|r| r.slot.is_empty()) {
        let mut m = fields(r);
        m.insert("employee".into(), r.employee.clone().into());
        m.insert("department".into(), r.department.clone().into());
        m.insert("group".into(), r.group.clone().into());
        m.insert("closed".into(), r.closed.into());
        m.insert("revision".into(), r.revision.into());
        let day_made_up = made_up(&r.employee, None);
        if !day_made_up.is_empty() {
            m.insert("made_up".into(), day_made_up.into());
        }
        let slots: Vec<Value> = rows
            .iter()
            .filter(|s| !s.slot.is_empty() && s.employee == r.employee)
            .map(|s| {
                let mut f = fields(s);
                f.insert("slot".into(), s.slot.clone().into());
                let mine = made_up(&s.employee, Some(&s.slot));
                if !mine.is_empty() {
                    f.insert("made_up".into(), mine.into());
                }
                Value::Object(f)
            })
            .collect();
        m.insert("slots".into(), slots.into());
        out.push(Value::Object(m));
    }
    out
}

/// `GET /v1/days`.
pub async fn get_days(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = match authorize_token(&state, &headers) {
        Ok(t) => t.clone(),
        Err(e) => return e.into_response(),
    };
    for k in params.keys() {
        if !matches!(k.as_str(), "tenant" | "date" | "department" | "employee") {
            return bad_request(format!(
                "unknown parameter {k:?}; use tenant, date, department, employee"
            ));
        }
    }
    let Some(date) = params.get("date") else {
        return bad_request(
            "date is required: the day as YYYY-MM-DD in the tenant's time zone (a night shift's start date)",
        );
    };
    if !valid_date(date) {
        return bad_request(format!(
            "date {date:?} is not a date; write it as YYYY-MM-DD, e.g. 2025-03-04"
        ));
    }
    let mut department = params.get("department").cloned();
    let mut employee = params.get("employee").cloned();
    let tenant = match (token.role.tenant(), params.get("tenant")) {
        (Some(own), Some(asked)) if asked != own => {
            return forbidden(format!(
                "this token reads tenant '{own}' only; drop tenant= or use a token of tenant '{asked}'"
            ));
        }
        (Some(own), _) => own.to_owned(),
        (None, Some(asked)) => asked.clone(),
        (None, None) => {
            return bad_request(
                "tenant is required with a super token: day results are kept per tenant; add tenant=<id>",
            );
        }
    };
    match &token.role {
        Role::Supervisor {
            tenant: t,
            department: own,
        } => {
            if department.as_deref().is_some_and(|d| d != own) {
                return forbidden(format!(
                    "this supervisor token reads department '{own}' of tenant '{t}' only; drop department= or ask for department={own}"
                ));
            }
            if let Some(e) = employee.as_deref() {
                // Outside the department or unknown to the rules: the answer
                // must not tell the two apart.
                let rules = state.attendance.rules.load();
                let theirs = rules
                    .tenant(t)
                    .employees
                    .get(e)
                    .and_then(|x| x.department.clone());
                if theirs.as_deref() != Some(own.as_str()) {
                    return forbidden(format!(
                        "this supervisor token reads department '{own}' of tenant '{t}' only, and employee {e:?} is not in it; drop employee= or ask for an employee of '{own}'"
                    ));
                }
            }
            department = Some(own.clone());
        }
        Role::Employee { employee: own, .. } => {
            if employee.as_deref().is_some_and(|e| e != own) {
                return forbidden(format!(
                    "an employee token reads its own days only; drop employee= or ask for employee={own}"
                ));
            }
            if department.is_some() {
                return forbidden("an employee token reads its own days only; drop department=");
            }
            employee = Some(own.clone());
        }
        _ => {}
    }
    let Some(store) = &state.results else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "day results are not materialized on this node",
        );
    };
    let days = store
        .days(&tenant, date, department.as_deref(), employee.as_deref())
        .await;
    let makeups = match &days {
        Ok(rows) if !rows.is_empty() => store.approved_makeups(&tenant, date).await,
        _ => Ok(Vec::new()),
    };
    match days.and_then(|rows| Ok((rows, makeups?))) {
        Ok((rows, makeups)) => axum::Json(json!({
            "tenant": tenant,
            "date": date,
            "days": render(&rows, &makeups),
        }))
        .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "results store: {e}; the day results are a view of the log, `fencegate results rebuild` recreates them"
            ),
        ),
    }
}
