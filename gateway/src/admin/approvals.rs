//! Approval decisions: `GET /v1/approvals?tenant=T[&status=pending|decided|all][&department=D]`
//! and `POST /v1/approvals/{record_id}/decision`.
//!
//! A supervisor decides its department's punches, a tenant admin its
//! tenant's, super any; a record outside the token's scope is 404 (as if it
//! did not exist, so ids do not leak), an employee token is 403. A decision
//! is idempotent by its client-supplied `decision_id`: the same id again
//! gets the same answer; a new decision on a record already decided is 409
//! naming the decision in force. The decision is appended to the durable
//! log and answered only once it is durable (and, normally, materialized:
//! the answer waits up to [`APPLY_WAIT`] for the day result to follow).
//!
//! The helpers every HR route shares (tenant scope, body fields, appending
//! an HR record) are here too.

#![allow(
    clippy::result_large_err,
    reason = "the error is the HTTP answer itself, built once per refused request, never on a hot path"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fencegate_schema::{ApprovalDecisionMsg, HrMsg, RecordBodyMsg, RecordMsg};
use serde_json::{Map, Value, json};

use super::state::bad_request;
use super::{AdminState, AdminToken, Role, authorize_token, error};
use crate::results::ResultsStore;
use crate::results::hr::{ApprovalFilter, DecisionRow, PunchInfo, hr_record_id};

/// How long an HR route waits for the materializer to apply its record
/// before answering anyway (the record is durable either way).
pub const APPLY_WAIT: Duration = Duration::from_secs(10);

/// Serialises the HR writes of this node: check, append, apply, so two
/// requests never both pass a check the other would fail.
static HR_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longest client-supplied id or free-text field accepted.
pub(crate) const MAX_ID: usize = 128;
pub(crate) const MAX_TEXT: usize = 2_000;

pub(crate) fn unprocessable(message: impl Into<String>) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, message)
}

pub(crate) fn store_error(e: &sqlx::Error) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "results store: {e}; the results are a view of the log, `fencegate results rebuild` recreates them"
        ),
    )
}

/// The results store, or the 503 a node without one answers.
pub(crate) fn results(state: &AdminState) -> Result<&ResultsStore, Response> {
    state.results.as_ref().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "attendance results are not materialized on this node",
        )
    })
}

/// The request's token, refused (403) for employee tokens.
pub(crate) fn hr_token(state: &AdminState, headers: &HeaderMap) -> Result<AdminToken, Response> {
    let token = authorize_token(state, headers)
        .map_err(IntoResponse::into_response)?
        .clone();
    if matches!(token.role, Role::Employee { .. }) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "an employee token cannot use the HR routes; a supervisor (its department), tenant or super token can",
        ));
    }
    Ok(token)
}

/// The tenant a request is about: the token's own (an explicit other one
/// is 403), or `tenant=` for super (required).
pub(crate) fn scoped_tenant(
    role: &Role,
    params: &HashMap<String, String>,
) -> Result<String, Response> {
    match (role.tenant(), params.get("tenant")) {
        (Some(own), Some(asked)) if asked != own => Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "this token is for tenant '{own}' only; drop tenant= or use a token of tenant '{asked}'"
            ),
        )),
        (Some(own), _) => Ok(own.to_owned()),
        (None, Some(asked)) => Ok(asked.clone()),
        (None, None) => Err(bad_request(
            "tenant is required with a super token; add tenant=<id>",
        )),
    }
}

/// Refuses parameters other than `allowed`.
pub(crate) fn known_params(
    params: &HashMap<String, String>,
    allowed: &[&str],
) -> Result<(), Response> {
    for k in params.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(bad_request(format!(
                "unknown parameter {k:?}; use {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// The JSON object of a request body.
pub(crate) fn body_object(body: &str) -> Result<Map<String, Value>, Response> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request("the body must be a JSON object")),
        Err(e) => Err(bad_request(format!(
            "the body is not JSON ({e}); send a JSON object with Content-Type: application/json"
        ))),
    }
}

/// A required string field of at most `max` characters.
pub(crate) fn req_str(
    m: &Map<String, Value>,
    field: &str,
    max: usize,
    what: &str,
) -> Result<String, Response> {
    match m.get(field) {
        None | Some(Value::Null) => Err(unprocessable(format!("{field} is required: {what}"))),
        Some(Value::String(s)) if s.trim().is_empty() => Err(unprocessable(format!(
            "{field} is empty; it must be {what}"
        ))),
        Some(Value::String(s)) if s.chars().count() > max => Err(unprocessable(format!(
            "{field} is longer than {max} characters; shorten it"
        ))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(unprocessable(format!("{field} must be a string: {what}"))),
    }
}

/// An optional string field of at most `max` characters.
pub(crate) fn opt_str(
    m: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Option<String>, Response> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() > max => Err(unprocessable(format!(
            "{field} is longer than {max} characters; shorten it"
        ))),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(unprocessable(format!("{field} must be a string or null"))),
    }
}

/// Refuses body fields other than `allowed`.
pub(crate) fn known_fields(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), Response> {
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(unprocessable(format!(
                "unknown field {k:?}; the fields are {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// The body of a decision, on an approval or a make-up request: a
/// client-chosen `decision_id`, `decision` (approve or reject) and an
/// optional `comment`, nothing else.
pub(crate) fn decision_body(
    m: &Map<String, Value>,
) -> Result<(String, bool, Option<String>), Response> {
    known_fields(m, &["decision_id", "decision", "comment"])?;
    Ok((
        req_str(
            m,
            "decision_id",
            MAX_ID,
            "a client-chosen id (a UUID, say) that makes the decision idempotent; resend the same id to retry",
        )?,
        decision_field(m)?,
        opt_str(m, "comment", MAX_TEXT)?,
    ))
}

/// `approve` / `reject` from the `decision` field.
fn decision_field(m: &Map<String, Value>) -> Result<bool, Response> {
    match m.get("decision").and_then(Value::as_str) {
        Some("approve") => Ok(true),
        Some("reject") => Ok(false),
        Some(other) => Err(unprocessable(format!(
            "decision {other:?} is unknown; use \"approve\" or \"reject\""
        ))),
        None => Err(unprocessable(
            "decision is required: \"approve\" or \"reject\"",
        )),
    }
}

/// Appends an HR record for `tenant` (its record id derived from `kind`
/// and `id`), waits until it is durable, then up to [`APPLY_WAIT`] until
/// the materializer has applied it. Returns the record's time.
pub(crate) async fn append_hr(
    state: &AdminState,
    store: &ResultsStore,
    tenant: &str,
    kind: &str,
    id: &str,
    body: HrMsg,
) -> Result<i64, Response> {
    append_hr_at(
        state,
        store,
        tenant,
        kind,
        id,
        crate::clock::unix_ms(),
        body,
    )
    .await
}

/// [`append_hr`] with the record's time given: a route that judged the
/// request at `now` (and wrote deadlines from it) records that same time.
pub(crate) async fn append_hr_at(
    state: &AdminState,
    store: &ResultsStore,
    tenant: &str,
    kind: &str,
    id: &str,
    now: i64,
    body: HrMsg,
) -> Result<i64, Response> {
    let msg = RecordMsg {
        record_id: hr_record_id(tenant, kind, id),
        tenant: tenant.to_owned(),
        gateway_time_ms: now,
        node: None,
        body: RecordBodyMsg::Hr(body),
    };
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let bytes = msg.encode_into(&mut fbb);
    let pending = state.log.append(bytes, now.max(0) as u64).map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the durable log refused the record ({e}); retry with the same id"),
        )
    })?;
    let range = pending.await.map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the durable log did not commit the record ({e}); retry with the same id"),
        )
    })?;
    // By record id, not log position: with several nodes the record is
    // applied from the stream, by whichever node materializes it.
    if !store
        .wait_hr_record(&crate::record_json::uuid(&msg.record_id), APPLY_WAIT)
        .await
    {
        tracing::warn!(
            lsn = range.first.0,
            "HR record is durable but not yet materialized; results lag"
        );
    }
    Ok(now)
}

/// Held while an HR route checks, appends and waits for its record to be
/// applied: this node's lock, and with a PostgreSQL store (which nodes
/// share) a transaction holding an advisory lock, so two nodes never both
/// pass a check (a make-up quota, an idempotent id) the other would fail.
pub(crate) struct HrGuard {
    _node: tokio::sync::MutexGuard<'static, ()>,
    /// Rolled back when dropped, which releases the advisory lock.
    _cluster: Option<crate::results::store::Tx>,
}

/// Takes the [`HrGuard`]; 503 when the shared store does not answer.
pub(crate) async fn hr_lock(store: &ResultsStore) -> Result<HrGuard, Response> {
    // This node's lock first: a node's waiting requests then hold no
    // connection of the store's pool (the materializer needs one).
    let node = HR_WRITES.lock().await;
    let cluster = if store.is_postgres() {
        let locked = async {
            let mut tx = store.begin().await?;
            ResultsStore::lock_xact(&mut tx, crate::results::store::lock_key::HR).await?;
            Ok::<_, sqlx::Error>(tx)
        };
        match tokio::time::timeout(APPLY_WAIT, locked).await {
            Ok(Ok(tx)) => Some(tx),
            Ok(Err(e)) => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the results store did not answer ({e}); retry with the same id"),
                ));
            }
            Err(_) => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "another node's HR write held the cluster's HR lock for 10 s; retry with the same id",
                ));
            }
        }
    } else {
        None
    };
    Ok(HrGuard {
        _node: node,
        _cluster: cluster,
    })
}

/// Whether `role` may see a record of `tenant` and `department`.
pub(crate) fn in_scope(role: &Role, tenant: &str, department: Option<&str>) -> bool {
    match role {
        Role::Super => true,
        Role::Tenant(t) => t == tenant,
        Role::Supervisor {
            tenant: t,
            department: d,
        } => t == tenant && department == Some(d.as_str()),
        Role::Employee { .. } => false,
    }
}

/// Whether `s` is a record id as the API prints them (UUID form).
fn valid_record_id(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn uuid_bytes(s: &str) -> [u8; 16] {
    let hexed: String = s.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    // Checked by valid_record_id first.
    if let Ok(v) = hex::decode(hexed) {
        out.copy_from_slice(&v[..16]);
    }
    out
}

fn decision_json(p: &PunchInfo, d: &DecisionRow) -> Value {
    json!({
        "decision_id": d.decision_id,
        "record_id": d.record_id,
        "tenant": p.tenant,
        "employee": p.employee,
        "decision": d.decision,
        "comment": d.comment,
        "decider": d.decider,
        "role": d.role,
        "at_ms": d.at_ms,
    })
}

/// `GET /v1/approvals`.
pub async fn get_approvals(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = match hr_token(&state, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Err(r) = known_params(&params, &["tenant", "status", "department"]) {
        return r;
    }
    let tenant = match scoped_tenant(&token.role, &params) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let filter = match params.get("status").map(String::as_str) {
        None | Some("pending") => ApprovalFilter::Pending,
        Some("decided") => ApprovalFilter::Decided,
        Some("all") => ApprovalFilter::All,
        Some(other) => {
            return bad_request(format!(
                "status {other:?} is unknown; use pending (the default), decided or all"
            ));
        }
    };
    let mut department = params.get("department").cloned();
    if let Role::Supervisor {
        department: own, ..
    } = &token.role
    {
        if department.as_deref().is_some_and(|d| d != own) {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "this supervisor token decides department '{own}' only; drop department= or ask for department={own}"
                ),
            );
        }
        department = Some(own.clone());
    }
    let store = match results(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match store
        .approvals(&tenant, department.as_deref(), filter)
        .await
    {
        Ok(list) => {
            let items: Vec<Value> = list
                .iter()
                .map(|(p, d)| {
                    json!({
                        "record_id": p.record_id,
                        "employee": p.employee,
                        "department": p.department,
                        "kind": p.kind,
                        "at_ms": p.at_ms,
                        "status": p.status,
                        "decision": d.as_ref().map(|d| decision_json(p, d)),
                    })
                })
                .collect();
            axum::Json(json!({ "tenant": tenant, "approvals": items })).into_response()
        }
        Err(e) => store_error(&e),
    }
}

/// `POST /v1/approvals/{record_id}/decision` with
/// `{"decision_id": "...", "decision": "approve"|"reject", "comment": "..."}`.
pub async fn post_decision(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(record_id): Path<String>,
    body: String,
) -> Response {
    let token = match hr_token(&state, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let record_id = record_id.to_ascii_lowercase();
    if !valid_record_id(&record_id) {
        return bad_request(format!(
            "{record_id:?} is not a record id; use a record_id from GET /v1/approvals (8-4-4-4-12 hex)"
        ));
    }
    let m = match body_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let (decision_id, approve, comment) = match decision_body(&m) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let store = match results(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let _guard = match hr_lock(store).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            format!(
                "no punch record {record_id} in this token's scope; list decidable records with GET /v1/approvals"
            ),
        )
    };
    let punch = match store.punch_info(&record_id).await {
        Ok(Some(p)) if in_scope(&token.role, &p.tenant, p.department.as_deref()) => p,
        Ok(_) => return not_found(),
        Err(e) => return store_error(&e),
    };
    let wanted = if approve { "approve" } else { "reject" };
    match store.decision_by_id(&punch.tenant, &decision_id).await {
        Ok(Some(d)) if d.record_id == record_id && d.decision == wanted => {
            return axum::Json(decision_json(&punch, &d)).into_response();
        }
        Ok(Some(d)) => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "decision id {decision_id:?} was already used to {} record {}; use a new decision id for another decision",
                    d.decision, d.record_id
                ),
            );
        }
        Ok(None) => {}
        Err(e) => return store_error(&e),
    }
    if !punch.needs_approval {
        return unprocessable(format!(
            "record {record_id} does not wait for approval (status {}); only punches recorded out of range under out_of_range = \"approval\" do",
            punch.status
        ));
    }
    match store.decision_of(&punch.tenant, &record_id).await {
        Ok(Some(d)) => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "record {record_id} is already decided: {} by decision {:?}; a decision is final (a rejected punch can be made up with POST /v1/corrections)",
                    d.decision, d.decision_id
                ),
            );
        }
        Ok(None) => {}
        Err(e) => return store_error(&e),
    }
    let msg = HrMsg::Decision(ApprovalDecisionMsg {
        target_record_id: uuid_bytes(&record_id),
        decision_id: decision_id.clone(),
        approve,
        decider: Some(token.name.clone()),
        role: Some(token.role.name().to_owned()),
        comment: comment.clone(),
        employee_id: Some(punch.employee.clone()),
        department: punch.department.clone(),
    });
    let at_ms = match append_hr(&state, store, &punch.tenant, "decision", &decision_id, msg).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let d = DecisionRow {
        decision_id,
        record_id: record_id.clone(),
        decision: wanted.to_owned(),
        decider: Some(token.name.clone()),
        role: Some(token.role.name().to_owned()),
        comment,
        at_ms,
    };
    axum::Json(decision_json(&punch, &d)).into_response()
}
