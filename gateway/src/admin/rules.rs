//! The admin API's rules routes (mounted in `crate::admin`; the records and
//! QR routes of the table are in `records.rs` and `qr.rs`):
//! `/v1/rules` (read, change, audit), `/v1/records` and `/v1/qr/{site}`,
//! with the role boundaries of `crate::admin::Role`:
//!
//! | route | super | tenant | supervisor | employee |
//! |---|---|---|---|---|
//! | `GET /v1/rules` | whole file | own section | 403 | 403 |
//! | `PUT /v1/rules` | whole file | own section | 403 | 403 |
//! | `GET /v1/rules/audit` | all | changes to own section | 403 | 403 |
//! | `GET /v1/records` | any tenant | own tenant | own department's exceptions | own records |
//! | `GET /v1/qr/{site}` | any tenant (`?tenant=`) | own tenant | 403 | 403 |
//!
//! Nothing here changes a record; there is no such route for any role.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::admin::state::{AdminState, Role, authorize_token, error, forbidden_config};
use crate::clock;
use crate::rules::store::{self, AuditEntry};

// The routes' state lives with the rest of the admin state (below the
// routes, so the admin layer has no import circle).
pub use crate::admin::state::AttendanceApi;

fn api(state: &AdminState) -> &AttendanceApi {
    &state.attendance
}

/// `GET /v1/rules`: the rules as TOML.
pub async fn get_rules(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let token = match authorize_token(&state, &headers) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let a = api(&state);
    let text = a.rules.text();
    let body = match &token.role {
        Role::Super => (*text).clone(),
        Role::Tenant(t) => store::tenant_section(&text, t),
        other => return forbidden_config(other),
    };
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/toml"),
    );
    resp.headers_mut()
        .insert("x-rules-version", HeaderValue::from(a.rules.version()));
    resp
}

/// `PUT /v1/rules`: validate, persist, swap in and audit new rules.
pub async fn put_rules(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let token = match authorize_token(&state, &headers) {
        Ok(t) => t.clone(),
        Err(e) => return e.into_response(),
    };
    if !token.role.configures() {
        return forbidden_config(&token.role);
    }
    let a = api(&state);
    let Some(path) = a.source.path.clone() else {
        return error(
            StatusCode::CONFLICT,
            "this node has no rules file; set attendance.rules in its configuration to change rules at run time",
        );
    };
    let _guard = a.update.lock().await;
    let before = a.rules.text();
    let (new_text, scope) = match &token.role {
        Role::Tenant(t) => match store::merge_tenant_section(&before, &body, t) {
            Ok(text) => (text, t.clone()),
            Err(e) => {
                a.metrics.changes_refused.increment(1);
                return error(StatusCode::FORBIDDEN, e);
            }
        },
        _ => (body, "all".to_owned()),
    };
    let source = a.source.clone();
    let text = new_text.clone();
    // Compiling writes nothing; QR keys of new QR sites are created only
    // once the change is known to be valid and is being applied.
    let compiled = tokio::task::spawn_blocking(move || {
        source
            .compile(&text, "PUT /v1/rules")
            .map(|c| source.apply_keys(c, &text, "PUT /v1/rules"))
    })
    .await;
    let rules = match compiled {
        Ok(Ok(Ok(r))) => r,
        Ok(Ok(Err(e))) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the rules are valid but their QR keys could not be created: {e:#}; nothing was changed"
                ),
            );
        }
        Ok(Err(e)) => {
            a.metrics.changes_refused.increment(1);
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({
                    "error": format!("{} problem(s) in the rules; nothing was changed", e.problems.len()),
                    "problems": e.problems,
                })),
            )
                .into_response();
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rules check failed: {e}"),
            );
        }
    };
    // Shared: into the cluster's bucket first (refused on a conflict or an
    // outage, with nothing changed), then here as a local change.
    let shared = match &state.shared {
        Some(c) => match c.publish(crate::cluster::Doc::Rules, &new_text).await {
            Ok(rev) => Some((c, rev)),
            Err(e) => return crate::admin::state::share_error(&e),
        },
        None => None,
    };
    if let Err(e) = crate::persist::replace_text(&path, &new_text) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the rules are valid but could not be saved to {}: {e}; nothing was changed",
                path.display()
            ),
        );
    }
    let changed = store::tenants_changed(&before, &new_text);
    let entry = AuditEntry {
        time_ms: clock::unix_ms(),
        actor: token.name.clone(),
        role: token.role.name().into(),
        scope,
        version: a.rules.version() + 1,
        tenants_changed: changed.clone(),
        sha256_before: store::sha256_hex(&before),
        sha256_after: store::sha256_hex(&new_text),
    };
    let version = a.rules.store(rules, new_text);
    if let Some((c, rev)) = shared {
        c.set_served(crate::cluster::Doc::Rules, rev);
    }
    a.metrics.version.set(version as f64);
    a.metrics.changes.increment(1);
    let audit_path = a.source.audit_path();
    let audited = tokio::task::spawn_blocking(move || store::append_audit(&audit_path, &entry))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    if let Err(e) = &audited {
        tracing::error!(error = %e, "rules changed but the audit log could not be written");
    }
    tracing::info!(version, actor = %token.name, ?changed, "rules replaced through the admin API");
    axum::Json(json!({
        "version": version,
        "tenants_changed": changed,
        "audited": audited.is_ok(),
    }))
    .into_response()
}

/// `GET /v1/rules/audit`: every rule change (a tenant token: changes to
/// its section).
pub async fn get_audit(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let token = match authorize_token(&state, &headers) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    if !token.role.configures() {
        return forbidden_config(&token.role);
    }
    let path = api(&state).source.audit_path();
    let entries = match tokio::task::spawn_blocking(move || store::read_audit(&path)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the audit log: {e}"),
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let visible: Vec<AuditEntry> = match &token.role {
        Role::Tenant(t) => entries
            .into_iter()
            .filter(|e| e.tenants_changed.iter().any(|x| x == t))
            .collect(),
        _ => entries,
    };
    axum::Json(json!({ "entries": visible })).into_response()
}

/// Applies rules another node stored in the cluster's config bucket at
/// `revision`: compiled (and QR keys created) and saved as a local change,
/// unless this node already serves that revision or a later one.
pub(crate) async fn apply_shared_rules(
    state: &AdminState,
    revision: u64,
    text: String,
) -> Result<(), String> {
    let Some(shared) = &state.shared else {
        return Ok(());
    };
    let a = api(state);
    let _guard = a.update.lock().await;
    if revision <= shared.served(crate::cluster::Doc::Rules) {
        return Ok(());
    }
    let source = a.source.clone();
    let (rules, text) = tokio::task::spawn_blocking(move || {
        let compiled = source
            .compile(&text, "cluster config")
            .map_err(|e| e.problems.join("; "))?;
        source
            .apply_keys(compiled, &text, "cluster config")
            .map(|r| (r, text))
            .map_err(|e| format!("{e:#}"))
    })
    .await
    .map_err(|e| e.to_string())??;
    if let Some(path) = &a.source.path {
        crate::persist::replace_text(path, &text)
            .map_err(|e| format!("cannot save them to {}: {e}", path.display()))?;
    }
    let version = a.rules.store(rules, text);
    a.metrics.version.set(version as f64);
    shared.set_served(crate::cluster::Doc::Rules, revision);
    tracing::info!(version, revision, "rules replaced from the cluster");
    Ok(())
}
