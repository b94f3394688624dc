//! Monthly summaries and payroll:
//! `GET /v1/summary?tenant=T&month=YYYY-MM[&department=D]`,
//! `POST /v1/summary/{month}/archive?tenant=T` and
//! `GET /v1/export/payroll?tenant=T&month=YYYY-MM[&format=csv|json][&department=D]`.
//!
//! A supervisor reads its department's; a tenant admin or super any, and
//! only they archive. Archiving appends a `MonthArchive` record to the log
//! before the answer; the month then answers from its frozen snapshot, and
//! later changes to its days are adjustments in the next month's summary
//! (`crate::results::summary`). The payroll CSV is UTF-8 with a BOM.

#![allow(
    clippy::result_large_err,
    reason = "the error is the HTTP answer itself, built once per refused request, never on a hot path"
)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fencegate_schema::{HrMsg, MonthArchiveMsg};

use super::approvals::{
    append_hr, hr_lock, hr_token, known_params, results, scoped_tenant, store_error,
};
use super::state::bad_request;
use super::{AdminState, AdminToken, Role, error};
use crate::results::summary::{self, payroll_csv, summary_json, valid_month};

/// The tenant, month and department of a summary request.
fn summary_scope(
    token: &AdminToken,
    params: &HashMap<String, String>,
    month: Option<&String>,
) -> Result<(String, String, Option<String>), Response> {
    let tenant = scoped_tenant(&token.role, params)?;
    let Some(month) = month else {
        return Err(bad_request("month is required: YYYY-MM, e.g. 2025-03"));
    };
    if !valid_month(month) {
        return Err(bad_request(format!(
            "month {month:?} is not a month; write it as YYYY-MM, e.g. 2025-03"
        )));
    }
    let mut department = params.get("department").cloned();
    if let Role::Supervisor {
        department: own, ..
    } = &token.role
    {
        if department.as_deref().is_some_and(|d| d != own) {
            return Err(error(
                StatusCode::FORBIDDEN,
                format!(
                    "this supervisor token reads department '{own}' only; drop department= or ask for department={own}"
                ),
            ));
        }
        department = Some(own.clone());
    }
    Ok((tenant, month.clone(), department))
}

/// `GET /v1/summary`.
pub async fn get_summary(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = match hr_token(&state, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Err(r) = known_params(&params, &["tenant", "month", "department"]) {
        return r;
    }
    let (tenant, month, department) = match summary_scope(&token, &params, params.get("month")) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let store = match results(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match store
        .month_summary(&tenant, &month, department.as_deref())
        .await
    {
        Ok(s) => axum::Json(summary_json(&tenant, &s)).into_response(),
        Err(e) => store_error(&e),
    }
}

/// `POST /v1/summary/{month}/archive`.
pub async fn post_archive(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(month): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = match hr_token(&state, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !token.role.configures() {
        return error(
            StatusCode::FORBIDDEN,
            "archiving a month needs a tenant or super token; a supervisor token reads summaries only",
        );
    }
    if let Err(r) = known_params(&params, &["tenant"]) {
        return r;
    }
    let (tenant, month, _) = match summary_scope(&token, &params, Some(&month)) {
        Ok(x) => x,
        Err(r) => return r,
    };
    // A month is frozen once every day of it has closed, for every group
    // of the tenant: a snapshot taken earlier would freeze days that are
    // still open ("not yet" missing), and a rebuild could not say which
    // of them the archive saw.
    {
        let rules = state.attendance.rules.load();
        let t = rules.tenant(&tenant);
        if let Some(last) = crate::results::summary::last_day_of(&month) {
            let closes = t
                .groups
                .iter()
                .map(|g| crate::rules::day::close_ms(t, g, last))
                .max()
                .unwrap_or(i64::MIN);
            let now = crate::clock::unix_ms();
            if now < closes {
                let at = jiff::Timestamp::from_millisecond(closes)
                    .map(|ts| ts.to_string())
                    .unwrap_or_default();
                return error(
                    StatusCode::CONFLICT,
                    format!(
                        "month {month} of tenant '{tenant}' is not over: its last day closes at {at}; archive it after that"
                    ),
                );
            }
        }
    }
    let store = match results(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let _guard = match hr_lock(store).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    match store.is_archived(&tenant, &month).await {
        Ok(true) => {}
        Ok(false) => {
            let msg = HrMsg::MonthArchive(MonthArchiveMsg {
                month: month.clone(),
                archived_by: Some(token.name.clone()),
            });
            if let Err(r) = append_hr(&state, store, &tenant, "archive", &month, msg).await {
                return r;
            }
        }
        Err(e) => return store_error(&e),
    }
    match store.month_summary(&tenant, &month, None).await {
        Ok(s) => axum::Json(summary_json(&tenant, &s)).into_response(),
        Err(e) => store_error(&e),
    }
}

/// `GET /v1/export/payroll`.
pub async fn get_payroll(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = match hr_token(&state, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Err(r) = known_params(&params, &["tenant", "month", "department", "format"]) {
        return r;
    }
    let (tenant, month, department) = match summary_scope(&token, &params, params.get("month")) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let csv = match params.get("format").map(String::as_str) {
        None | Some("csv") => true,
        Some("json") => false,
        Some(f) => return bad_request(format!("format {f:?} is unknown; use csv or json")),
    };
    let store = match results(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let s = match store
        .month_summary(&tenant, &month, department.as_deref())
        .await
    {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    if !csv {
        return axum::Json(summary::payroll_json(&tenant, &s)).into_response();
    }
    match payroll_csv(&tenant, &s) {
        Ok(bytes) => {
            let mut resp = bytes.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!(
                "attachment; filename=\"payroll-{tenant}-{month}.csv\""
            )) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("payroll CSV: {e}"),
        ),
    }
}
