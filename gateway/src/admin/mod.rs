//! The admin HTTP API (axum): health, readiness, Prometheus metrics, and
//! fence management with bearer-token roles.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /healthz` | none | the process is up |
//! | `GET /readyz` | none | fences loaded and the log writable (503 otherwise); `"status": "degraded"` (still 200) while a sink is down, the log quarantined a segment at start (`log_quarantined`), or a tenant's holiday calendars end or turn provisional within 60 days (`calendar_warnings`) |
//! | `GET /metrics` | none | Prometheus text format |
//! | `GET /v1/fences` | super or tenant | the fences as GeoJSON (a tenant token sees only its own) |
//! | `PUT /v1/fences` | super or tenant | validate, persist and swap in new fences (a tenant token replaces only its own) |
//! | `GET /v1/rules` | super or tenant | the attendance rules as TOML (a tenant token sees only its section) |
//! | `PUT /v1/rules` | super or tenant | validate, persist, swap in and audit new rules (a tenant token replaces only its section) |
//! | `GET /v1/rules/audit` | super or tenant | the audit log of rule changes (a tenant token sees changes to its section) |
//! | `GET /v1/records` | every role | attendance records from the log: super and tenant tokens read their tenants', a supervisor its department's anomalies and pending approvals, an employee their own |
//! | `GET /v1/qr/{site}` | super or tenant | the site's current QR code (JSON, `?format=svg` for a screen, `?format=text`) |
//! | `GET /v1/days` | every role | day results (`tenant`, `date`, optional `department`, `employee`) from the results store, scoped as `/v1/records` (`days.rs`) |
//! | `GET /v1/leave`, `POST /v1/leave` | supervisor reads, tenant or super posts | leave and business trips pushed by an HR system (`leave.rs`) |
//! | `GET /v1/summary`, `POST /v1/summary/{month}/archive`, `GET /v1/export/payroll` | supervisor (department), tenant, super; archive: tenant or super | monthly summaries, month archives, payroll CSV/JSON (`summary.rs`) |
//! | `GET /v1/approvals`, `POST /v1/approvals/{record_id}/decision` | supervisor, tenant, super | punches waiting for approval and decisions on them, appended to the log before the answer (`approvals.rs`) |
//! | `GET /v1/corrections`, `POST /v1/corrections`, `POST /v1/corrections/{id}/evidence` | every role (an employee its own) | make-up punch requests (补卡) within the group's policy, and evidence attached before the deadline (`corrections.rs`) |
//! | `POST /v1/corrections/{id}/decision` | supervisor, tenant, super | decides a make-up request; approved, it is a make-up punch (`corrections.rs`) |
//!
//! No route changes a record: the log is append-only, for every role
//! including the super admin (a correction is a new punch or an approval
//! downstream). Handlers of the rules, records and QR routes are in `rules.rs`, `records.rs` and `qr.rs`.

use std::sync::Arc;

pub mod approvals;
pub mod corrections;
pub mod days;
pub mod leave;
pub mod qr;
pub mod records;
pub mod rules;
pub mod state;
pub mod summary;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

pub use state::{AdminState, AdminToken, Role};
pub(crate) use state::{authorize, authorize_token, error, forbidden_config, share_error};

/// The router: every admin route on one state.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/fences", get(get_fences).put(put_fences))
        .route(
            "/v1/rules",
            get(self::rules::get_rules).put(self::rules::put_rules),
        )
        .route("/v1/rules/audit", get(self::rules::get_audit))
        .route("/v1/records", get(self::records::get_records))
        .route("/v1/qr/{site}", get(self::qr::get_qr))
        .route("/v1/days", get(days::get_days))
        .route("/v1/approvals", get(approvals::get_approvals))
        .route(
            "/v1/approvals/{record_id}/decision",
            axum::routing::post(approvals::post_decision),
        )
        .route(
            "/v1/corrections",
            get(corrections::get_corrections).post(corrections::post_correction),
        )
        .route(
            "/v1/corrections/{id}/evidence",
            axum::routing::post(corrections::post_evidence),
        )
        .route(
            "/v1/corrections/{id}/decision",
            axum::routing::post(corrections::post_decision),
        )
        .route("/v1/leave", get(leave::get_leave).post(leave::post_leave))
        .route("/v1/summary", get(summary::get_summary))
        .route(
            "/v1/summary/{month}/archive",
            axum::routing::post(summary::post_archive),
        )
        .route("/v1/export/payroll", get(summary::get_payroll))
        .merge(crate::ui::routes())
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let snap = state.fences.load();
    let mut problems = Vec::new();
    if snap.index().is_empty() {
        problems.push("no fences loaded");
    }
    if !state.log.is_writable() {
        problems.push("the durable log is not writable (full or failed)");
    }
    // A sink that is down does not make the node unready: records are
    // still acknowledged into the log, which is the buffer for exactly
    // this. It only degrades until the log reaches its cap.
    let committed = state.log.committed();
    let now = crate::clock::unix_ms();
    let sinks: Vec<_> = state
        .sinks
        .iter()
        .map(|h| h.status(committed, now))
        .collect();
    let down: Vec<&str> = state
        .sinks
        .iter()
        .filter(|h| h.is_down())
        .map(|h| h.name())
        .collect();
    // Segments moved aside at open held only records every sink had
    // forwarded, so they do not make the node unready; they degrade it so
    // an operator looks at the disk that damaged them.
    let quarantined: Vec<_> = state
        .log
        .quarantined()
        .iter()
        .map(|q| {
            json!({
                "path": q.path.display().to_string(),
                "first_lsn": q.first_lsn.0,
                "end_lsn": q.end_lsn.0,
                "damaged": q.damaged,
                "reason": q.reason,
            })
        })
        .collect();
    // Holiday calendars that run out (or turn provisional) within 60 days
    // degrade the node: punches are still judged, but a holiday or make-up
    // workday past the end would be judged as an ordinary day.
    let calendar_warnings: Vec<String> = calendar_reports(&state, now)
        .into_iter()
        .filter_map(|r| r.warning)
        .collect();
    let status = match (
        problems.is_empty(),
        down.is_empty() && quarantined.is_empty() && calendar_warnings.is_empty(),
    ) {
        (false, _) => "unavailable",
        (true, false) => "degraded",
        (true, true) => "ready",
    };
    let body = json!({
        "ready": problems.is_empty(),
        "status": status,
        "fence_version": snap.version(),
        "fences": snap.index().len(),
        "log_bytes": state.log.used_bytes(),
        "problems": problems,
        "sinks_down": down,
        "sinks": sinks,
        "log_quarantined": quarantined,
        "calendar_warnings": calendar_warnings,
        "cluster_config": state.shared.as_ref().map(|c| json!({
            "open": c.is_open(),
            "fences_revision": c.served(crate::cluster::Doc::Fences),
            "rules_revision": c.served(crate::cluster::Doc::Rules),
        })),
    });
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Every tenant's calendar coverage now, and the gauges set from it:
/// `fencegate_holiday_calendar_min_days_covered` (the fewest days ahead any
/// tenant's calendars reach) and `fencegate_holiday_calendar_warnings` (how
/// many tenants' calendars end or turn provisional within 60 days). No
/// tenant label: `/readyz` names them. Computed when asked (a handful of
/// tenants), never per record.
fn calendar_reports(
    state: &AdminState,
    now_ms: i64,
) -> Vec<crate::rules::holidays::CalendarReport> {
    use crate::rules::holidays::{CALENDAR_HORIZON_DAYS, calendar_reports};
    let rules = state.attendance.rules.load();
    let reports = calendar_reports(&rules, now_ms, CALENDAR_HORIZON_DAYS);
    let min = reports
        .iter()
        .map(|r| r.coverage.covered_days)
        .min()
        .unwrap_or(0);
    let warned = reports.iter().filter(|r| r.warning.is_some()).count();
    metrics::gauge!("fencegate_holiday_calendar_min_days_covered").set(f64::from(min));
    metrics::gauge!("fencegate_holiday_calendar_warnings").set(warned as f64);
    reports
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    calendar_reports(&state, crate::clock::unix_ms());
    let mut resp = state.prometheus.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

fn features_of(doc: &Value) -> impl Iterator<Item = &Value> {
    doc.get("features")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn tenant_of(feature: &Value) -> Option<&str> {
    feature.get("properties")?.get("tenant")?.as_str()
}

async fn get_fences(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let role = match authorize(&state, &headers) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if !role.configures() {
        return forbidden_config(&role);
    }
    let version = state.fences.load().version();
    let text = state.fences_geojson.load();
    let body = match role {
        Role::Super => (**text).clone(),
        Role::Supervisor { .. } | Role::Employee { .. } => return forbidden_config(&role),
        Role::Tenant(t) => {
            let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let mine: Vec<&Value> = features_of(&doc)
                .filter(|f| tenant_of(f) == Some(&t))
                .collect();
            json!({ "type": "FeatureCollection", "features": mine }).to_string()
        }
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/geo+json"),
    );
    h.insert("x-fence-version", HeaderValue::from(version));
    resp
}

async fn put_fences(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let role = match authorize(&state, &headers) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let _guard = state.fence_update.lock().await;
    let new_text = match &role {
        Role::Super => body,
        Role::Supervisor { .. } | Role::Employee { .. } => return forbidden_config(&role),
        Role::Tenant(t) => {
            // A tenant admin replaces its own fences and keeps everyone else's.
            let incoming: Value = match serde_json::from_str(&body) {
                Ok(v) => v,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
            };
            for (i, f) in features_of(&incoming).enumerate() {
                if tenant_of(f) != Some(t) {
                    return error(
                        StatusCode::FORBIDDEN,
                        format!(
                            "feature {i}: a '{t}' token may only submit fences with \"tenant\": \"{t}\""
                        ),
                    );
                }
            }
            let current: Value =
                serde_json::from_str(&state.fences_geojson.load()).unwrap_or(Value::Null);
            let mut all: Vec<Value> = features_of(&current)
                .filter(|f| tenant_of(f) != Some(t))
                .cloned()
                .collect();
            all.extend(features_of(&incoming).cloned());
            json!({ "type": "FeatureCollection", "features": all }).to_string()
        }
    };
    let opts = state.fences.options().clone();
    let text = new_text.clone();
    let built = tokio::task::spawn_blocking(move || crate::fences::build_index(&text, &opts)).await;
    let index = match built {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("index build failed: {e}"),
            );
        }
    };
    // Shared: into the cluster's bucket first (refused on a conflict or an
    // outage, with nothing changed), then here as a local change.
    let shared = match &state.shared {
        Some(c) => match c.publish(crate::cluster::Doc::Fences, &new_text).await {
            Ok(rev) => Some((c, rev)),
            Err(e) => return share_error(&e),
        },
        None => None,
    };
    if let Err(e) = crate::persist::replace_text(&state.fences_path, &new_text) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "fences are valid but could not be saved to {}: {e}",
                state.fences_path.display()
            ),
        );
    }
    let count = index.len();
    let version = state.fences.store(index);
    state.fences_geojson.store(Arc::new(new_text));
    if let Some((c, rev)) = shared {
        c.set_served(crate::cluster::Doc::Fences, rev);
    }
    tracing::info!(version, count, "fences replaced through the admin API");
    axum::Json(json!({
        "version": version,
        "fences": count,
        "cluster_revision": shared.map(|(_, rev)| rev),
    }))
    .into_response()
}

/// Applies fences another node stored in the cluster's config bucket at
/// `revision`: validated and saved as a local change, unless this node
/// already serves that revision or a later one.
pub(crate) async fn apply_shared_fences(
    state: &AdminState,
    revision: u64,
    text: String,
) -> Result<(), String> {
    let Some(shared) = &state.shared else {
        return Ok(());
    };
    let _guard = state.fence_update.lock().await;
    if revision <= shared.served(crate::cluster::Doc::Fences) {
        return Ok(());
    }
    let opts = state.fences.options().clone();
    let (index, text) = tokio::task::spawn_blocking(move || {
        crate::fences::build_index(&text, &opts).map(|i| (i, text))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    crate::persist::replace_text(&state.fences_path, &text)
        .map_err(|e| format!("cannot save them to {}: {e}", state.fences_path.display()))?;
    let version = state.fences.store(index);
    state.fences_geojson.store(Arc::new(text));
    shared.set_served(crate::cluster::Doc::Fences, revision);
    tracing::info!(version, revision, "fences replaced from the cluster");
    Ok(())
}
