//! Leave and business trips: `GET /v1/leave?tenant=T[&employee=E]` and
//! `POST /v1/leave?tenant=T` with `{"source_id", "employee", "from", "to",
//! "type"}` (an HR system pushes approved leave; `type` is free, e.g.
//! annual, sick, personal; `business_trip` is a trip).
//!
//! Posting is for tenant and super tokens (the HR system's); reading also
//! for a supervisor (its department's employees). The entry is appended to
//! the log before the answer and covers the employee's missing punches and
//! absences on those days (`on_leave`, `business_trip`). Idempotent by
//! `source_id`: the same entry again is the same answer, a different entry
//! under a used id is 409.

#![allow(
    clippy::result_large_err,
    reason = "the error is the HTTP answer itself, built once per refused request, never on a hot path"
)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fencegate_schema::{HrMsg, LeaveEntryMsg};
use serde_json::json;

use super::approvals::{
    append_hr, body_object, hr_lock, hr_token, known_fields, known_params, req_str, results,
    scoped_tenant, store_error, unprocessable,
};
use super::{AdminState, Role, error};
use crate::results::hr::{LeaveRow, MAX_LEAVE_DAYS, day_of_date};

/// `GET /v1/leave`.
pub async fn get_leave(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = match hr_token(&state, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Err(r) = known_params(&params, &["tenant", "employee"]) {
        return r;
    }
    let tenant = match scoped_tenant(&token.role, &params) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let store = match results(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut rows = match store
        .leave_entries(&tenant, params.get("employee").map(String::as_str))
        .await
    {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    if let Role::Supervisor { department, .. } = &token.role {
        let rules = state.attendance.rules.load();
        let t = rules.tenant(&tenant);
        rows.retain(|r| {
            t.employee(&r.employee)
                .and_then(|e| e.department.as_deref())
                == Some(department.as_str())
        });
    }
    axum::Json(json!({ "tenant": tenant, "leave": rows })).into_response()
}

/// `POST /v1/leave`.
pub async fn post_leave(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let token = match hr_token(&state, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !token.role.configures() {
        return error(
            StatusCode::FORBIDDEN,
            "leave is pushed by the HR system with a tenant or super token; a supervisor token reads it only",
        );
    }
    if let Err(r) = known_params(&params, &["tenant"]) {
        return r;
    }
    let tenant = match scoped_tenant(&token.role, &params) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let m = match body_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let parsed =
        known_fields(&m, &["source_id", "employee", "from", "to", "type"]).and_then(|()| {
            Ok((
                req_str(
                    &m,
                    "source_id",
                    128,
                    "the HR system's id of the entry (resending it is safe)",
                )?,
                req_str(&m, "employee", 128, "the employee id")?,
                req_str(&m, "from", 10, "the first day, YYYY-MM-DD")?,
                req_str(&m, "to", 10, "the last day (inclusive), YYYY-MM-DD")?,
                req_str(
                    &m,
                    "type",
                    32,
                    "the leave type, e.g. annual, sick, personal, business_trip",
                )?,
            ))
        });
    let (source_id, employee, from, to, leave_type) = match parsed {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (Some(f), Some(t)) = (day_of_date(&from), day_of_date(&to)) else {
        return unprocessable(format!(
            "from {from:?} / to {to:?}: write both as YYYY-MM-DD, e.g. 2025-03-04"
        ));
    };
    if from.len() != 10 || to.len() != 10 {
        return unprocessable("from and to must be written as YYYY-MM-DD (zero-padded)");
    }
    if t < f {
        return unprocessable(format!("to {to} is before from {from}; swap them"));
    }
    if t - f >= MAX_LEAVE_DAYS {
        return unprocessable(format!(
            "from {from} to {to} spans more than {MAX_LEAVE_DAYS} days; push long leave as several entries"
        ));
    }
    if !leave_type
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return unprocessable(format!(
            "type {leave_type:?} must be lower-case letters, digits and '_' (e.g. annual, sick, business_trip)"
        ));
    }
    let store = match results(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let _guard = match hr_lock(store).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let wanted = |at_ms: i64| LeaveRow {
        source_id: source_id.clone(),
        employee: employee.clone(),
        from: from.clone(),
        to: to.clone(),
        leave_type: leave_type.clone(),
        entered_by: Some(token.name.clone()),
        at_ms,
    };
    match store.leave_by_source(&tenant, &source_id).await {
        Ok(Some(old)) => {
            let same = LeaveRow {
                entered_by: old.entered_by.clone(),
                ..wanted(old.at_ms)
            };
            if same == old {
                return axum::Json(old).into_response();
            }
            return error(
                StatusCode::CONFLICT,
                format!(
                    "source_id {source_id:?} already names leave of {} from {} to {} ({}); use a new source_id for another entry",
                    old.employee, old.from, old.to, old.leave_type
                ),
            );
        }
        Ok(None) => {}
        Err(e) => return store_error(&e),
    }
    let msg = HrMsg::Leave(LeaveEntryMsg {
        source_id: source_id.clone(),
        employee_id: employee.clone(),
        from_date: from.clone(),
        to_date: to.clone(),
        leave_type: leave_type.clone(),
        entered_by: Some(token.name.clone()),
    });
    match append_hr(&state, store, &tenant, "leave", &source_id, msg).await {
        Ok(at_ms) => axum::Json(wanted(at_ms)).into_response(),
        Err(r) => r,
    }
}
