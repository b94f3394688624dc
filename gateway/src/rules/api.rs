//! The admin API's attendance routes (mounted in `crate::admin`):
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

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::records::{self, RecordQuery, Source};
use super::store::{self, AuditEntry, RulesHandle, RulesSource};
use crate::admin::state::{AdminState, Role, authorize_token, error, forbidden_config};
use crate::clock;
use crate::config::Config;

/// The example rules bundled into the binary, seeding `<data_dir>/rules.toml`
/// on embedded defaults.
pub const SAMPLE_RULES: &str = include_str!("../../../config/rules.toml");
/// The holiday calendars the example rules refer to, by file name.
pub const SAMPLE_HOLIDAYS: [(&str, &str); 6] = [
    (
        "cn-2025.toml",
        include_str!("../../../config/holidays/cn-2025.toml"),
    ),
    (
        "cn-2026.toml",
        include_str!("../../../config/holidays/cn-2026.toml"),
    ),
    (
        "cn-2027.toml",
        include_str!("../../../config/holidays/cn-2027.toml"),
    ),
    (
        "de-be-2025.csv",
        include_str!("../../../config/holidays/de-be-2025.csv"),
    ),
    (
        "de-be-2026.csv",
        include_str!("../../../config/holidays/de-be-2026.csv"),
    ),
    (
        "de-be-2027.csv",
        include_str!("../../../config/holidays/de-be-2027.csv"),
    ),
];

/// Most records one `GET /v1/records` returns unless `limit` says fewer.
const DEFAULT_LIMIT: usize = 10_000;
/// Most records one `GET /v1/records` may ask for.
const MAX_LIMIT: usize = 100_000;

// The routes' state lives with the rest of the admin state (below the
// routes, so the admin layer has no import circle).
pub use crate::admin::state::AttendanceApi;

/// Loads the rules of a configuration at start: seeds the example on
/// embedded defaults, compiles (every problem reported), and publishes.
pub fn load(cfg: &Config) -> anyhow::Result<(Arc<RulesHandle>, RulesSource)> {
    let source = source(cfg);
    if let (Some(path), true) = (&source.path, cfg.attendance.seed_sample_rules) {
        if !path.exists() {
            let dir = source.calendar_dir();
            for (name, text) in SAMPLE_HOLIDAYS {
                crate::persist::create_new(
                    &dir.join(name),
                    text.as_bytes(),
                    crate::persist::SHARED,
                )?;
            }
            crate::persist::create_new(path, SAMPLE_RULES.as_bytes(), crate::persist::SHARED)?;
        }
    }
    let (rules, text) = source.load()?;
    Ok((Arc::new(RulesHandle::new(rules, text)), source))
}

/// Where a node's rules live and what compiling them needs.
pub fn source(cfg: &Config) -> RulesSource {
    RulesSource {
        path: cfg.attendance.rules_path.clone(),
        holidays_dir: cfg.attendance.holidays_dir.clone(),
        data_dir: cfg.data_dir.clone(),
        settings: cfg.attendance.settings.clone(),
        tenants: cfg.tenants.iter().map(|(t, _)| t.clone()).collect(),
    }
}

/// Compiles the rules file without applying it (no QR key is created):
/// `check-config` and the start of `serve` both call it, so a file `serve`
/// would refuse is refused by `check-config` too. A missing file that
/// start-up would seed from the bundled example is fine.
pub fn check(cfg: &Config) -> Result<(), Vec<String>> {
    let source = source(cfg);
    let Some(path) = &source.path else {
        return Ok(());
    };
    if !path.exists() && cfg.attendance.seed_sample_rules {
        return Ok(());
    }
    let at = format!("attendance.rules {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![format!(
            "{at}: cannot read the rules file: {e}; point attendance.rules at a rules file (see config/rules.toml)"
        )]
    })?;
    source
        .compile(&text, &path.display().to_string())
        .map(|_| ())
        .map_err(|e| e.problems.iter().map(|p| format!("{at}: {p}")).collect())
}

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

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// `GET /v1/records?tenant&from&to&employee&status&limit&format`.
pub async fn get_records(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = match authorize_token(&state, &headers) {
        Ok(t) => t.clone(),
        Err(e) => return e.into_response(),
    };
    for k in params.keys() {
        if !matches!(
            k.as_str(),
            "tenant" | "from" | "to" | "employee" | "status" | "limit" | "format" | "after"
        ) {
            return bad_request(format!(
                "unknown parameter {k:?}; use tenant, from, to, employee, status, limit, format, after"
            ));
        }
    }
    let asked_tenant = params.get("tenant").cloned();
    let asked_employee = params.get("employee").cloned();
    let mut q = RecordQuery {
        tenant: asked_tenant.clone(),
        employee: asked_employee.clone(),
        ..RecordQuery::default()
    };
    // The role decides the scope; asking outside it is refused, not
    // silently narrowed, so a caller never mistakes a filtered answer.
    if let Some(own) = token.role.tenant() {
        if let Some(asked) = asked_tenant.as_deref().filter(|t| *t != own) {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "this token reads tenant '{own}' only; drop tenant= or use a token of tenant '{asked}'"
                ),
            );
        }
        q.tenant = Some(own.to_owned());
    }
    match &token.role {
        Role::Supervisor { tenant, department } => {
            // An employee outside the department (or unknown to the rules:
            // the answer must not tell the two apart) is outside the scope.
            if let Some(e) = asked_employee.as_deref() {
                let rules = api(&state).rules.load();
                let theirs = rules
                    .tenant(tenant)
                    .employees
                    .get(e)
                    .and_then(|x| x.department.clone());
                if theirs.as_deref() != Some(department.as_str()) {
                    return error(
                        StatusCode::FORBIDDEN,
                        format!(
                            "this supervisor token reads department '{department}' of tenant '{tenant}' only, and employee {e:?} is not in it; drop employee= or ask for an employee of '{department}'"
                        ),
                    );
                }
            }
            q.department = Some(department.clone());
            q.exceptions_only = true;
        }
        Role::Employee { employee, .. } => {
            if asked_employee.as_deref().is_some_and(|e| e != employee) {
                return error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "an employee token reads its own records only; drop employee= or ask for employee={employee}"
                    ),
                );
            }
            q.employee = Some(employee.clone());
        }
        _ => {}
    }
    let rules = api(&state).rules.load();
    let tz = q
        .tenant
        .as_deref()
        .map_or(jiff::tz::TimeZone::UTC, |t| rules.tenant(t).tz.clone());
    drop(rules);
    let (Some(from), Some(to)) = (params.get("from"), params.get("to")) else {
        return bad_request(
            "from and to are required: unix ms, RFC 3339 or a date in the tenant's time zone (to=2025-03-04 includes that day)",
        );
    };
    q.from_ms = match records::parse_time(from, &tz, false) {
        Ok(t) => t,
        Err(e) => return bad_request(format!("from: {e}")),
    };
    q.to_ms = match records::parse_time(to, &tz, true) {
        Ok(t) => t,
        Err(e) => return bad_request(format!("to: {e}")),
    };
    if q.to_ms <= q.from_ms {
        return bad_request(format!(
            "to ({to}) must be after from ({from}); to is exclusive, and a date as to includes that day"
        ));
    }
    if let Some(s) = params.get("status") {
        match records::parse_status(s) {
            Some(st) => q.status = Some(st),
            None => {
                return bad_request(format!(
                    "status {s:?} is unknown; use normal, late, early_leave, out_of_range_pending_approval, field, repeat_merged or rejected"
                ));
            }
        }
    }
    q.limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(l)) if (1..=MAX_LIMIT).contains(&l) => l,
        Some(_) => return bad_request(format!("limit must be 1 to {MAX_LIMIT}")),
    };
    let csv = match params.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(f) => return bad_request(format!("format {f:?} is unknown; use json or csv")),
    };
    q.after_lsn = match params.get("after").map(|a| a.parse::<u64>()) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => {
            return bad_request(
                "after must be the next_after of a cut answer (a log position, a whole number)",
            );
        }
    };
    let a = api(&state);
    let Ok(permit) = a.queries.clone().try_acquire_owned() else {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} records queries are running, the most admin.max_concurrent_queries allows; retry in a second",
                a.query_limits.max_concurrent
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    q.max_scan = a.query_limits.max_scan;
    let deadline = clock::instant() + a.query_limits.timeout;
    q.deadline = Some(deadline);
    let log = state.log.clone();
    let index_dir = a.index_dir.clone();
    // The answer streams: rows go out in chunks through a small channel as
    // the log is read, so memory per query is a few chunks whatever the
    // limit, and a slow reader slows the scan instead of piling rows up.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = ChunkOut {
            tx,
            rt,
            deadline,
            buf: Vec::with_capacity(CHUNK_BYTES + 4_096),
            open: true,
        };
        // One small CSV writer per row, appending to the chunk (a row is
        // quoted by the csv crate, never by hand).
        let csv_row = |buf: &mut Vec<u8>, row: &[String]| {
            let mut w = csv::WriterBuilder::new()
                .buffer_capacity(512)
                .from_writer(buf);
            let _ = w.write_record(row);
            let _ = w.flush();
        };
        if csv {
            let header: Vec<String> = records::CSV_HEADER
                .iter()
                .map(|h| (*h).to_owned())
                .collect();
            csv_row(&mut out.buf, &header);
        } else {
            out.buf.extend_from_slice(b"{\"records\":[");
        }
        let mut first = true;
        let result = records::query(Source::Handle(&log), &index_dir, &q, &mut |lsn, rec| {
            if csv {
                if let Some(row) = records::csv_row(rec, &tz) {
                    csv_row(&mut out.buf, &row);
                }
            } else {
                if !first {
                    out.buf.push(b',');
                }
                first = false;
                let _ = serde_json::to_writer(&mut out.buf, &records::to_json(lsn, rec));
            }
            out.flush_if_full()
        });
        // The end says how the answer went: the stats (with `truncated`,
        // `cut` and `next_after`), or the error that ended it, since the
        // status line went out with the first chunk.
        let (stats, failure) = match result {
            Ok(s) => (s, None),
            Err(e) => (
                records::QueryStats::default(),
                Some(format!("reading the log: {e}")),
            ),
        };
        if csv {
            if let Some(e) = &failure {
                out.buf.extend_from_slice(
                    format!("#error,{}\n", e.replace(['\n', ','], " ")).as_bytes(),
                );
            } else if stats.truncated {
                let next = stats.next_after.map_or(String::new(), |n| n.to_string());
                let cut = stats.cut.map_or("limit", records::Cut::name);
                out.buf.extend_from_slice(
                    format!("#truncated,cut={cut},next_after={next}\n").as_bytes(),
                );
            }
        } else {
            out.buf.extend_from_slice(b"],\"stats\":");
            let _ = serde_json::to_writer(&mut out.buf, &stats);
            if let Some(e) = &failure {
                out.buf.extend_from_slice(b",\"error\":");
                let _ = serde_json::to_writer(&mut out.buf, e);
            }
            out.buf.push(b'}');
        }
        out.flush();
    });
    let body = axum::body::Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/json"
    };
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Bytes gathered before a chunk of a records answer is sent.
const CHUNK_BYTES: usize = 64 * 1024;

/// The sending end of a streamed records answer, on a blocking thread.
struct ChunkOut {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    rt: tokio::runtime::Handle,
    deadline: std::time::Instant,
    buf: Vec<u8>,
    open: bool,
}

impl ChunkOut {
    /// Sends what is gathered once it fills a chunk; false once the reader
    /// is gone or too slow to take the answer before the deadline.
    fn flush_if_full(&mut self) -> bool {
        if self.buf.len() >= CHUNK_BYTES {
            self.flush();
        }
        self.open
    }

    /// Sends what is gathered. A reader slower than the deadline loses the
    /// rest: the query's thread and permit are never held longer.
    fn flush(&mut self) {
        if !self.open || self.buf.is_empty() {
            return;
        }
        let chunk = bytes::Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES + 4_096),
        ));
        let left = self.deadline.saturating_duration_since(clock::instant());
        let tx = &self.tx;
        let sent = self
            .rt
            .block_on(async { tokio::time::timeout(left, tx.send(Ok(chunk))).await });
        self.open = matches!(sent, Ok(Ok(())));
    }
}

/// `GET /v1/qr/{site}?tenant&format`: the site's current QR code.
pub async fn get_qr(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    UrlPath(site): UrlPath<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = match authorize_token(&state, &headers) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let tenant = match &token.role {
        Role::Super => match params.get("tenant") {
            Some(t) => t.clone(),
            None => return bad_request("a super token names the tenant: ?tenant=<id>"),
        },
        Role::Tenant(t) => {
            if let Some(asked) = params.get("tenant").filter(|x| *x != t) {
                return error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "this token reads tenant '{t}' only; drop tenant= or use a token of tenant '{asked}'"
                    ),
                );
            }
            t.clone()
        }
        other => return forbidden_config(other),
    };
    let a = api(&state);
    let rules = a.rules.load();
    let settings = rules.settings.clone();
    let Some(key) = rules
        .tenant(&tenant)
        .sites
        .iter()
        .find(|s| *s.name == *site)
        .and_then(|s| s.qr.clone())
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "tenant '{tenant}' has no QR site '{site}'; set qr = true under [tenants.{tenant}.sites.{site}]"
            ),
        );
    };
    drop(rules);
    let now = clock::unix_ms();
    let step = super::qr::step_of(now, settings.qr_step_ms);
    let code = key.0.code(&tenant, &site, step);
    let next_ms = (step + 1) * settings.qr_step_ms;
    match params.get("format").map(String::as_str) {
        None | Some("json") => axum::Json(json!({
            "tenant": tenant,
            "site": site,
            "code": code,
            "step": step,
            "shown_until_ms": next_ms,
            "valid_until_ms": next_ms + settings.qr_skew_steps * settings.qr_step_ms,
        }))
        .into_response(),
        Some("text") => code.into_response(),
        Some("svg") => match super::qr::render_svg(&code) {
            Ok(svg) => {
                let mut resp = svg.into_response();
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("image/svg+xml"),
                );
                // A screen reloading on this header always shows a live code.
                let refresh = ((next_ms - now) / 1_000).max(1);
                if let Ok(v) = HeaderValue::from_str(&refresh.to_string()) {
                    h.insert("refresh", v);
                }
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                resp
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Some(f) => bad_request(format!("format {f:?} is unknown; use json, text or svg")),
    }
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
