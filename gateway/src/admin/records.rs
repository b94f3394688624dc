//! `GET /v1/records`: attendance records read back from the log
//! (`crate::log::query`), streamed as JSON lines or CSV, with the role
//! boundaries of `crate::admin::Role` (super: any tenant; tenant: its own;
//! supervisor: its department's exceptions; employee: its own records).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::admin::state::{AdminState, Role, authorize_token, bad_request, error};
use crate::clock;
use crate::log::query::{self as records, RecordQuery, Source};

/// Most records one `GET /v1/records` returns unless `limit` says fewer.
const DEFAULT_LIMIT: usize = 10_000;
/// Most records one `GET /v1/records` may ask for.
const MAX_LIMIT: usize = 100_000;

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
                let rules = state.attendance.rules.load();
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
    let rules = state.attendance.rules.load();
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
    let a = &state.attendance;
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
