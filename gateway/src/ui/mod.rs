//! The HR statistics dashboard at `/ui/` on the admin listener: a static
//! page and a small hand-written script compiled into the binary, and
//! `/ui/api/...` routes answering server-rendered SVG (as HTML fragments)
//! and the CSV of the same numbers (docs/DASHBOARD.md).
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /ui/`, `/ui/app.js`, `/ui/app.css`, `/ui/i18n.json` | none | the page, its script, style and both label tables (no data) |
//! | `GET /ui/api/meta` | super, tenant, supervisor | who the token is, its tenants, departments, the tenant's zone and the default date range |
//! | `GET /ui/api/{chart}.html` | super, tenant, supervisor | a chart: SVG plus, for some, a table |
//! | `GET /ui/api/{chart}.csv` | super, tenant, supervisor | the numbers behind that chart |
//! | `GET /ui/api/live.html`, `.csv`, `.json` | super, tenant | the fleet live view: devices' newest positions over the fences, the last enter/exit events ([`live`]) |
//!
//! Scope is `GET /v1/days`'s: a supervisor sees its department, a tenant
//! admin its tenant, super the tenant it names; asking outside the scope is
//! 403, never silently narrowed. Employee tokens are refused: the dashboard
//! compares people. The token travels only in the `Authorization` header
//! (the script keeps it in `sessionStorage`), never in a URL.
//!
//! - [`stats`]: the numbers (SQL over the results store; a fold over log
//!   records for methods and locations);
//! - [`live`]: the fleet live view;
//! - [`svg`]: the charts;
//! - [`i18n`]: English and Chinese labels.

pub mod i18n;
pub mod live;
pub mod stats;
pub mod stats_raw;
pub mod svg;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::admin::state::{AdminState, Role, authorize_token, error};
use i18n::{Lang, t};
use stats::{Bucket, Filter, Rank};

/// The page's Content-Security-Policy: only this origin's script and
/// style, no inline script, no framing, fetches only to this origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The charts, in page order.
pub const CHARTS: [&str; 8] = [
    "trend", "late", "early", "radar", "causes", "heatmap", "overtime", "methods",
];

/// The dashboard's routes, merged into the admin router.
pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route(
            "/ui",
            get(|| async { axum::response::Redirect::permanent("/ui/") }),
        )
        .route("/ui/", get(index))
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/ui/i18n.json",
            get(|| async { asset(&i18n::tables_json().to_string(), "application/json") }),
        )
        .route("/ui/api/meta", get(meta))
        .route("/ui/api/{file}", get(chart))
}

fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn asset(body: &str, ctype: &'static str) -> Response {
    let mut resp = body.to_owned().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    secure(resp)
}

async fn index(headers: HeaderMap) -> Response {
    let lang = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Lang::En, Lang::from_accept_language);
    let html = INDEX_HTML
        .replace("{{lang}}", lang.tag())
        .replace("{{title}}", t(lang, "title"));
    asset(&html, "text/html; charset=utf-8")
}

// Boxed: the scope checks return them as the error of a `Result`, and a
// bare `Response` would make every such `Result` large.
fn forbidden(message: impl Into<String>) -> Box<Response> {
    Box::new(secure(error(StatusCode::FORBIDDEN, message)))
}

fn bad_request(message: impl Into<String>) -> Box<Response> {
    Box::new(secure(error(StatusCode::BAD_REQUEST, message)))
}

/// A request's resolved scope and options.
#[derive(Debug)]
struct Ask {
    filter: Filter,
    lang: Lang,
    tz: jiff::tz::TimeZone,
    role: Role,
}

fn today_in(tz: &jiff::tz::TimeZone) -> jiff::civil::Date {
    jiff::Timestamp::from_millisecond(crate::clock::unix_ms())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(tz.clone())
        .date()
}

/// Resolves the token and the parameters into a scope, as `GET /v1/days`
/// does: outside the token's scope is 403.
fn resolve(
    state: &AdminState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Ask, Box<Response>> {
    let token = authorize_token(state, headers).map_err(|e| Box::new(secure(e.into_response())))?;
    for k in params.keys() {
        if !matches!(
            k.as_str(),
            "tenant" | "from" | "to" | "department" | "lang" | "bucket"
        ) {
            return Err(bad_request(format!(
                "unknown parameter {k:?}; use tenant, from, to, department, lang, bucket"
            )));
        }
    }
    let role = token.role.clone();
    if let Role::Employee { .. } = role {
        return Err(forbidden(
            "an employee token reads its own days only (GET /v1/days); the dashboard needs a supervisor, tenant or super token",
        ));
    }
    let tenant = match (
        role.tenant(),
        params.get("tenant").filter(|s| !s.is_empty()),
    ) {
        (Some(own), Some(asked)) if asked != own => {
            return Err(forbidden(format!(
                "this token reads tenant '{own}' only; drop tenant= or use a token of tenant '{asked}'"
            )));
        }
        (Some(own), _) => own.to_owned(),
        (None, Some(asked)) => asked.clone(),
        (None, None) => {
            return Err(bad_request(
                "tenant is required with a super token: choose a tenant (tenant=<id>)",
            ));
        }
    };
    let mut department = params.get("department").filter(|s| !s.is_empty()).cloned();
    if let Role::Supervisor {
        tenant: tt,
        department: own,
    } = &role
    {
        if department.as_deref().is_some_and(|d| d != own) {
            return Err(forbidden(format!(
                "this supervisor token reads department '{own}' of tenant '{tt}' only; drop department= or ask for department={own}"
            )));
        }
        department = Some(own.clone());
    }
    let tz = state.attendance.rules.load().tenant(&tenant).tz.clone();
    let today = today_in(&tz);
    let parse = |k: &str, default: jiff::civil::Date| -> Result<jiff::civil::Date, Box<Response>> {
        match params.get(k).filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(s) if s.len() == 10 => s.parse().map_err(|_| {
                bad_request(format!(
                    "{k} {s:?} is not a date; write it as YYYY-MM-DD, e.g. 2026-03-04"
                ))
            }),
            Some(s) => Err(bad_request(format!(
                "{k} {s:?} is not a date; write it as YYYY-MM-DD, e.g. 2026-03-04"
            ))),
        }
    };
    let to = parse("to", today)?;
    let from = parse(
        "from",
        to.checked_sub(jiff::Span::new().days(30)).unwrap_or(to),
    )?;
    if from > to {
        return Err(bad_request(format!(
            "from {from} is after to {to}; swap them"
        )));
    }
    if (to - from).get_days() > 366 {
        return Err(bad_request(format!(
            "from {from} to {to} spans more than 366 days; ask for a year at most"
        )));
    }
    let lang = Lang::parse(params.get("lang").map_or("en", String::as_str));
    Ok(Ask {
        filter: Filter {
            tenant,
            from: from.to_string(),
            to: to.to_string(),
            department,
        },
        lang,
        tz,
        role,
    })
}

async fn meta(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = match authorize_token(&state, &headers) {
        Ok(t) => t.clone(),
        Err(e) => return secure(e.into_response()),
    };
    let tenants: Vec<String> = match token.role.tenant() {
        Some(t) => vec![t.to_owned()],
        None => {
            let rules = state.attendance.rules.load();
            let mut v: Vec<String> = rules.tenant_ids().map(str::to_owned).collect();
            v.sort();
            v
        }
    };
    let mut params = params;
    if token.role.tenant().is_none() && !params.contains_key("tenant") {
        if let Some(first) = tenants.first() {
            params.insert("tenant".into(), first.clone());
        }
    }
    let ask = match resolve(&state, &headers, &params) {
        Ok(a) => a,
        Err(e) => return *e,
    };
    let departments = match (&ask.role, &state.results) {
        (Role::Supervisor { department, .. }, _) => vec![department.clone()],
        (_, Some(store)) => stats::department_names(store.pool(), &ask.filter.tenant)
            .await
            .unwrap_or_default(),
        (_, None) => Vec::new(),
    };
    // Devices belong to no department: the live view is the tenant's.
    let mut charts: Vec<&str> = CHARTS.to_vec();
    if !matches!(ask.role, Role::Supervisor { .. }) {
        charts.push("live");
    }
    secure(
        axum::Json(json!({
            "role": ask.role.name(),
            "token_name": token.name,
            "tenants": tenants,
            "tenant": ask.filter.tenant,
            "departments": departments,
            "timezone": ask.tz.iana_name().unwrap_or("UTC"),
            "from": ask.filter.from,
            "to": ask.filter.to,
            "charts": charts,
        }))
        .into_response(),
    )
}

/// A chart's numbers as CSV rows and as markup, computed together.
struct Chart {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
    html: String,
}

fn store_error(e: impl std::fmt::Display) -> Response {
    secure(error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "results store: {e}; the day results are a view of the log, `fencegate results rebuild` recreates them"
        ),
    ))
}

async fn chart(
    State(state): State<Arc<AdminState>>,
    live: Option<axum::Extension<live::Live>>,
    headers: HeaderMap,
    Path(file): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some((name, ext)) = file.rsplit_once('.') else {
        return secure(error(
            StatusCode::NOT_FOUND,
            format!("no dashboard file {file:?}; ask for <chart>.html or <chart>.csv"),
        ));
    };
    if name == "live" && matches!(ext, "html" | "csv" | "json") {
        return match resolve(&state, &headers, &params) {
            Ok(ask) => live::answer(&state, live.as_ref().map(|e| &e.0), &ask, ext),
            Err(e) => *e,
        };
    }
    if !CHARTS.contains(&name) || !matches!(ext, "html" | "csv") {
        return secure(error(
            StatusCode::NOT_FOUND,
            format!(
                "no dashboard chart {file:?}; the charts are {} (each as .html or .csv) and live (.html, .csv or .json)",
                CHARTS.join(", ")
            ),
        ));
    }
    let ask = match resolve(&state, &headers, &params) {
        Ok(a) => a,
        Err(e) => return *e,
    };
    let Some(store) = &state.results else {
        return secure(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "day results are not materialized on this node; the dashboard reads them",
        ));
    };
    let bucket = match params.get("bucket").map(String::as_str) {
        None | Some("") => Bucket::Day,
        Some(b) => match Bucket::parse(b) {
            Some(b) => b,
            None => return *bad_request(format!("bucket {b:?}: use day, week or month")),
        },
    };
    let built = match name {
        "trend" => trend(store, &ask, bucket).await,
        "late" => top(store, &ask, Rank::Late).await,
        "early" => top(store, &ask, Rank::Early).await,
        "radar" => radar(store, &ask).await,
        "causes" => causes(store, &ask).await,
        "overtime" => overtime(store, &ask).await,
        "methods" | "heatmap" => from_log(&state, &ask, name).await,
        _ => unreachable!("checked against CHARTS"),
    };
    let chart = match built {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if ext == "html" {
        let mut resp = chart.html.into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return secure(resp);
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(&chart.head);
    for r in &chart.rows {
        let _ = w.write_record(r.iter().map(|c| spreadsheet_safe(c).into_owned()));
    }
    let body = w.into_inner().unwrap_or_default();
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let fname = format!(
        "attachment; filename=\"{name}-{}-{}.csv\"",
        ask.filter.from, ask.filter.to
    );
    if let Ok(v) = HeaderValue::from_str(&fname) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    secure(resp)
}

/// A CSV cell a spreadsheet will not run as a formula: employee and
/// department ids are tenant input, and HR opens these files in Excel. A
/// text cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading
/// `'`; numbers are left as they are.
fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && cell.parse::<f64>().is_err() {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

fn heads(lang: Lang, keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| t(lang, k).to_owned()).collect()
}

async fn trend(
    store: &crate::results::ResultsStore,
    ask: &Ask,
    bucket: Bucket,
) -> Result<Chart, Response> {
    let pts = stats::attendance_trend(store.pool(), &ask.filter, bucket)
        .await
        .map_err(store_error)?;
    let l = ask.lang;
    let title = t(l, "chart_trend");
    let points: Vec<(String, f64)> = pts
        .iter()
        .map(|p| (p.label.clone(), p.rate_pct()))
        .collect();
    let html = if pts.is_empty() {
        svg::empty("trend", t(l, "no_data"))
    } else {
        svg::line("trend", title, &points, Some(100.0))
    };
    Ok(Chart {
        head: heads(l, &["period", "expected", "attended", "rate"]),
        rows: pts
            .iter()
            .map(|p| {
                vec![
                    p.label.clone(),
                    p.expected.to_string(),
                    p.attended.to_string(),
                    svg::num(p.rate_pct()),
                ]
            })
            .collect(),
        html,
    })
}

async fn top(
    store: &crate::results::ResultsStore,
    ask: &Ask,
    rank: Rank,
) -> Result<Chart, Response> {
    let list = stats::top10(store.pool(), &ask.filter, rank)
        .await
        .map_err(store_error)?;
    let l = ask.lang;
    let (name, title) = match rank {
        Rank::Late => ("late", t(l, "chart_late")),
        Rank::Early => ("early", t(l, "chart_early")),
    };
    let bars: Vec<(String, f64, String)> = list
        .iter()
        .map(|r| {
            (
                r.employee.clone(),
                r.days as f64,
                format!("({} {})", r.minutes, t(l, "minutes")),
            )
        })
        .collect();
    let html = if list.is_empty() {
        svg::empty(name, t(l, "no_data"))
    } else {
        svg::bars(name, title, &bars)
    };
    Ok(Chart {
        head: heads(l, &["employee", "department", "days", "minutes"]),
        rows: list
            .iter()
            .map(|r| {
                vec![
                    r.employee.clone(),
                    r.department.clone(),
                    r.days.to_string(),
                    r.minutes.to_string(),
                ]
            })
            .collect(),
        html,
    })
}

async fn radar(store: &crate::results::ResultsStore, ask: &Ask) -> Result<Chart, Response> {
    let depts = stats::departments(store.pool(), &ask.filter)
        .await
        .map_err(store_error)?;
    let l = ask.lang;
    let axes: Vec<String> = [
        "axis_attendance",
        "axis_late",
        "axis_missing",
        "axis_overtime",
        "axis_field",
    ]
    .iter()
    .map(|k| t(l, k).to_owned())
    .collect();
    // Rates are drawn on 0..100 %; counts against the largest department's.
    let max_missing = depts.iter().map(|d| d.missing).max().unwrap_or(0).max(1) as f64;
    let max_ot = depts
        .iter()
        .map(|d| d.overtime_h())
        .fold(0.0, f64::max)
        .max(1e-9);
    let series: Vec<(String, Vec<f64>, Vec<f64>)> = depts
        .iter()
        .map(|d| {
            let raw = vec![
                d.attendance_pct(),
                d.late_pct(),
                d.missing as f64,
                d.overtime_h(),
                d.field_pct(),
            ];
            let scaled = vec![
                raw[0] / 100.0,
                raw[1] / 100.0,
                raw[2] / max_missing,
                raw[3] / max_ot,
                raw[4] / 100.0,
            ];
            let name = if d.department.is_empty() {
                "(none)".to_owned()
            } else {
                d.department.clone()
            };
            (name, scaled, raw)
        })
        .collect();
    let html = if depts.is_empty() {
        svg::empty("radar", t(l, "no_data"))
    } else {
        svg::radar("radar", t(l, "chart_radar"), &axes, &series)
    };
    let mut head = vec![t(l, "department").to_owned()];
    head.extend(axes.iter().cloned());
    Ok(Chart {
        head,
        rows: series
            .iter()
            .map(|(n, _, raw)| {
                let mut r = vec![n.clone()];
                r.extend(raw.iter().map(|v| svg::num(*v)));
                r
            })
            .collect(),
        html,
    })
}

fn ms_range(ask: &Ask) -> Result<(i64, i64), Box<Response>> {
    stats::ms_range(&ask.filter.from, &ask.filter.to, &ask.tz).ok_or_else(|| {
        bad_request(format!(
            "from {} to {} is not a range of dates in {}",
            ask.filter.from,
            ask.filter.to,
            ask.tz.iana_name().unwrap_or("the tenant's zone")
        ))
    })
}

async fn causes(store: &crate::results::ResultsStore, ask: &Ask) -> Result<Chart, Response> {
    let (a, b) = ms_range(ask).map_err(|e| *e)?;
    let c = stats::causes(store.pool(), &ask.filter, a, b)
        .await
        .map_err(store_error)?;
    let l = ask.lang;
    let slices: Vec<(String, f64)> = c
        .slices()
        .iter()
        .map(|(k, v)| (t(l, k).to_owned(), *v as f64))
        .collect();
    let html = if slices.iter().all(|s| s.1 == 0.0) {
        svg::empty("causes", t(l, "no_data"))
    } else {
        svg::pie("causes", t(l, "chart_causes"), &slices)
    };
    Ok(Chart {
        head: heads(l, &["cause", "punches"]),
        rows: slices
            .iter()
            .map(|(k, v)| vec![k.clone(), svg::num(*v)])
            .collect(),
        html,
    })
}

async fn overtime(store: &crate::results::ResultsStore, ask: &Ask) -> Result<Chart, Response> {
    let o = stats::overtime(store.pool(), &ask.filter)
        .await
        .map_err(store_error)?;
    let l = ask.lang;
    let points: Vec<(String, f64)> = o
        .by_date
        .iter()
        .map(|(d, m)| (d.clone(), stats::hours(*m)))
        .collect();
    let html = if points.is_empty() {
        svg::empty("overtime", t(l, "no_data"))
    } else {
        let rows: Vec<Vec<String>> = o
            .by_employee
            .iter()
            .map(|(e, d, m)| vec![e.clone(), d.clone(), svg::num(stats::hours(*m))])
            .collect();
        format!(
            "{}{}",
            svg::line("overtime", t(l, "chart_overtime"), &points, None),
            svg::table(
                "overtime",
                &[t(l, "employee"), t(l, "department"), t(l, "hours")],
                &rows
            )
        )
    };
    Ok(Chart {
        head: heads(l, &["date", "hours"]),
        rows: points
            .iter()
            .map(|(d, h)| vec![d.clone(), svg::num(*h)])
            .collect(),
        html,
    })
}

/// Fence outlines of `tenant` from the fence GeoJSON: polygons as given,
/// circles as 48-gons.
fn fence_outlines(geojson: &str, tenant: &str) -> Vec<svg::Outline> {
    let doc: Value = serde_json::from_str(geojson).unwrap_or(Value::Null);
    let ring = |v: &Value| -> Vec<(f64, f64)> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
            .collect()
    };
    let mut out = Vec::new();
    for f in doc["features"].as_array().into_iter().flatten() {
        if f["properties"]["tenant"].as_str() != Some(tenant) {
            continue;
        }
        let id = f["properties"]["id"].as_str().unwrap_or("").to_owned();
        let g = &f["geometry"];
        let c = &g["coordinates"];
        let rings: Vec<svg::Ring> = match g["type"].as_str() {
            Some("Point") => {
                let (Some(lon), Some(lat), Some(r)) = (
                    c[0].as_f64(),
                    c[1].as_f64(),
                    f["properties"]["radius_m"].as_f64(),
                ) else {
                    continue;
                };
                let dlat = r / 111_195.0;
                let dlon = dlat / lat.to_radians().cos().max(1e-6);
                vec![
                    (0..48)
                        .map(|i| {
                            let a = std::f64::consts::TAU * f64::from(i) / 48.0;
                            (lon + dlon * a.cos(), lat + dlat * a.sin())
                        })
                        .collect(),
                ]
            }
            Some("Polygon") => c.as_array().into_iter().flatten().map(ring).collect(),
            Some("MultiPolygon") => c
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|p| p.as_array().into_iter().flatten().map(ring))
                .collect(),
            _ => continue,
        };
        out.push((id, rings));
    }
    out
}

/// Groups located hexagons into map panels around the tenant's sites:
/// fences whose centres lie within ~5 km of each other form one panel
/// (Shanghai HQ and Lujiazui together, Shenzhen apart), and each hexagon
/// joins the panel of its nearest fence, so a field punch is drawn beside
/// the site it missed. The four busiest panels are drawn.
fn panels(bins: &[stats::HexBin], fences: &[svg::Outline]) -> Vec<svg::MapPanel> {
    const REACH_DEG: f64 = 0.05; // about 5 km
    let centre = |rings: &[svg::Ring]| -> (f64, f64) {
        let r = rings.first().map_or(&[][..], Vec::as_slice);
        let n = r.len().max(1) as f64;
        (
            r.iter().map(|p| p.0).sum::<f64>() / n,
            r.iter().map(|p| p.1).sum::<f64>() / n,
        )
    };
    let dist = |a: (f64, f64), b: (f64, f64)| {
        let k = a.1.to_radians().cos();
        ((a.0 - b.0) * k).hypot(a.1 - b.1)
    };
    let centres: Vec<(f64, f64)> = fences.iter().map(|f| centre(&f.1)).collect();
    // Single-link clusters of fence centres (a handful of fences per tenant).
    let mut cluster: Vec<usize> = (0..fences.len()).collect();
    for i in 0..fences.len() {
        for j in 0..i {
            if dist(centres[i], centres[j]) < REACH_DEG {
                let (from, to) = (cluster[i], cluster[j]);
                for c in &mut cluster {
                    if *c == from {
                        *c = to;
                    }
                }
            }
        }
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<&stats::HexBin>> =
        std::collections::BTreeMap::new();
    for b in bins {
        let c = h3o::LatLng::from(b.cell);
        let p = (c.lng(), c.lat());
        let nearest = centres
            .iter()
            .enumerate()
            .min_by(|x, y| dist(*x.1, p).total_cmp(&dist(*y.1, p)))
            .map_or(usize::MAX, |(i, _)| cluster[i]);
        groups.entry(nearest).or_default().push(b);
    }
    let mut groups: Vec<(usize, Vec<&stats::HexBin>)> = groups.into_iter().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.1.iter().map(|b| b.punches).sum::<i64>()));
    groups.truncate(4);
    groups
        .into_iter()
        .map(|(k, hexes)| svg::MapPanel {
            fences: fences
                .iter()
                .zip(&cluster)
                .filter(|(_, c)| **c == k)
                .map(|(f, _)| f.clone())
                .collect(),
            hexes: hexes
                .iter()
                .map(|b| {
                    let ring: Vec<(f64, f64)> = b
                        .cell
                        .boundary()
                        .iter()
                        .map(|v| (v.lng(), v.lat()))
                        .collect();
                    (
                        ring,
                        b.punches,
                        b.out_of_range,
                        b.cell.to_string(),
                        b.nearest_fence.clone(),
                    )
                })
                .collect(),
        })
        .collect()
}

/// Methods and the heatmap read the punch records of the log (the store
/// keeps neither method nor position), under the records query's bounds.
async fn from_log(state: &Arc<AdminState>, ask: &Ask, name: &str) -> Result<Chart, Response> {
    let (a, b) = ms_range(ask).map_err(|e| *e)?;
    let permit = state
        .attendance
        .queries
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            secure(error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many record queries at once on this node; retry in a few seconds",
            ))
        })?;
    let limits = state.attendance.query_limits;
    let q = crate::log::query::RecordQuery {
        tenant: Some(ask.filter.tenant.clone()),
        from_ms: a,
        to_ms: b,
        max_scan: limits.max_scan,
        deadline: Some(crate::clock::instant() + limits.timeout),
        limit: usize::MAX,
        ..Default::default()
    };
    let log = state.log.clone();
    let index_dir = state.attendance.index_dir.clone();
    let filter = ask.filter.clone();
    let fold = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut fold = stats::PunchFold::default();
        let r = crate::log::query::query(
            crate::log::query::Source::Handle(&log),
            &index_dir,
            &q,
            &mut |_, rec| {
                fold.add(&filter, a, b, rec);
                true
            },
        );
        r.map(|_| fold)
    })
    .await
    .map_err(|e| {
        secure(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("log query: {e}"),
        ))
    })?
    .map_err(|e| {
        secure(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the log: {e}"),
        ))
    })?;
    let l = ask.lang;
    if name == "methods" {
        let mut rows: Vec<(String, f64, String)> = fold
            .methods
            .iter()
            .map(|(k, v)| (t(l, k).to_owned(), *v as f64, String::new()))
            .collect();
        rows.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        let html = if rows.is_empty() {
            svg::empty("methods", t(l, "no_data"))
        } else {
            let dev: Vec<Vec<String>> = fold
                .terminals
                .iter()
                .map(|(d, n)| vec![d.clone(), n.to_string()])
                .collect();
            format!(
                "{}{}",
                svg::bars("methods", t(l, "chart_methods"), &rows),
                svg::table("devices", &[t(l, "device"), t(l, "punches")], &dev)
            )
        };
        return Ok(Chart {
            head: heads(l, &["method", "punches"]),
            rows: rows
                .iter()
                .map(|(k, v, _)| vec![k.clone(), svg::num(*v)])
                .collect(),
            html,
        });
    }
    let bins: Vec<stats::HexBin> = fold.bins.into_values().collect();
    let outlines = fence_outlines(&state.fences_geojson.load(), &ask.filter.tenant);
    let html = if bins.is_empty() {
        svg::empty("heatmap", t(l, "no_data"))
    } else {
        svg::heatmap(
            "heatmap",
            t(l, "chart_heatmap"),
            &panels(&bins, &outlines),
            (t(l, "out_of_range"), t(l, "nearest_fence")),
        )
    };
    Ok(Chart {
        head: heads(l, &["cell", "punches", "out_of_range", "nearest_fence"]),
        rows: bins
            .iter()
            .map(|b| {
                vec![
                    b.cell.to_string(),
                    b.punches.to_string(),
                    b.out_of_range.to_string(),
                    b.nearest_fence.clone(),
                ]
            })
            .collect(),
        html,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_never_start_a_formula() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(spreadsheet_safe("-12.5"), "-12.5");
        assert_eq!(spreadsheet_safe("E1001"), "E1001");
    }
}
