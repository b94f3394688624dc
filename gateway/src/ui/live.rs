//! The fleet live view (`/ui/api/live.html`, `.csv`, `.json`): a tenant's
//! devices where their newest live fix put them, over the tenant's fences,
//! and the tenant's last enter/exit events (docs/DASHBOARD.md, "Fleet live
//! view"). Positions are read from the pipeline's device state when asked
//! ([`Pipeline::live_devices`]); events from the ring the pipeline fills as
//! it emits them ([`crate::live`]). The view is this node's.
//!
//! Scope: a tenant admin sees its tenant, super the tenant it names. A
//! supervisor is refused: devices (trucks, phones on a fleet) belong to the
//! tenant, not to a department, so there is no department slice to show.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::i18n::t;
use super::{Ask, fence_outlines, secure, svg};
use crate::admin::state::{AdminState, Role, error};
use crate::pipeline::Pipeline;

/// Most devices one answer lists (newest fix first).
pub const MAX_DEVICES: usize = 2_000;

/// How far from a device a fence may lie and still be drawn on its map
/// (degrees, about 5 km): a fleet in Shanghai is not squeezed into one map
/// with the tenant's site in Shenzhen.
const NEAR_DEG: f64 = 0.05;

/// The pipeline, for the admin router (an axum extension set by
/// `serve.rs`; without it the view answers 503).
#[derive(Clone)]
pub struct Live(pub Arc<Pipeline>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

/// `unix ms` as `YYYY-MM-DD HH:MM:SS` in the tenant's zone.
fn local(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|ts| {
            ts.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// Answers `live.{ext}` for `ask`'s tenant.
pub(super) fn answer(state: &AdminState, live: Option<&Live>, ask: &Ask, ext: &str) -> Response {
    if let Role::Supervisor { tenant, department } = &ask.role {
        return secure(error(
            StatusCode::FORBIDDEN,
            format!(
                "the fleet live view shows tenant '{tenant}''s devices, which belong to no department; a supervisor token (department '{department}') cannot read it: use a tenant token"
            ),
        ));
    }
    let Some(Live(pipeline)) = live else {
        return secure(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this process runs no gateway pipeline; the fleet live view is served by a node (`fencegate serve`)",
        ));
    };
    let tenant = &ask.filter.tenant;
    let devices = pipeline.live_devices(tenant, MAX_DEVICES);
    let events = pipeline.live_events(tenant);
    let l = ask.lang;
    match ext {
        "json" => {
            let body = json!({
                "tenant": tenant,
                "devices": devices.iter().map(|d| json!({
                    "device": d.device,
                    "lat": d.lat,
                    "lon": d.lon,
                    "time_ms": d.time_ms,
                    "fences": d.fences,
                })).collect::<Vec<_>>(),
                "events": events.iter().map(|e| json!({
                    "device": &*e.device,
                    "fence": &*e.fence,
                    "transition": e.transition,
                    "time_ms": e.time_ms,
                    "lat": e.lat,
                    "lon": e.lon,
                })).collect::<Vec<_>>(),
            });
            secure(axum::Json(body).into_response())
        }
        "csv" => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let _ = w.write_record([
                t(l, "live_device"),
                t(l, "time"),
                t(l, "latitude"),
                t(l, "longitude"),
                t(l, "in_fences"),
            ]);
            for d in &devices {
                let _ = w.write_record([
                    super::spreadsheet_safe(&d.device).as_ref(),
                    &local(d.time_ms, &ask.tz),
                    &format!("{:.6}", d.lat),
                    &format!("{:.6}", d.lon),
                    super::spreadsheet_safe(&d.fences.join(" ")).as_ref(),
                ]);
            }
            let mut resp = w.into_inner().unwrap_or_default().into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"live.csv\""),
            );
            secure(resp)
        }
        _ => {
            let html = if devices.is_empty() {
                svg::empty("live", t(l, "no_devices"))
            } else {
                let near = |rings: &[svg::Ring]| {
                    rings.iter().flatten().any(|&(lon, lat)| {
                        devices.iter().any(|d| {
                            (d.lon - lon).abs() < NEAR_DEG && (d.lat - lat).abs() < NEAR_DEG
                        })
                    })
                };
                let fences: Vec<svg::Outline> =
                    fence_outlines(&state.fences_geojson.load(), tenant)
                        .into_iter()
                        .filter(|f| near(&f.1))
                        .collect();
                let dots: Vec<svg::DeviceDot> = devices
                    .iter()
                    .map(|d| {
                        let where_ = if d.fences.is_empty() {
                            t(l, "outside").to_owned()
                        } else {
                            d.fences.join(", ")
                        };
                        (
                            d.device.clone(),
                            (d.lon, d.lat),
                            d.fences.clone(),
                            format!("{}: {where_}, {}", d.device, local(d.time_ms, &ask.tz)),
                        )
                    })
                    .collect();
                svg::live_map("live", t(l, "chart_live"), &fences, &dots)
            };
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    vec![
                        local(e.time_ms, &ask.tz),
                        e.device.to_string(),
                        t(l, e.transition).to_owned(),
                        e.fence.to_string(),
                    ]
                })
                .collect();
            let table = svg::table(
                "events",
                &[
                    t(l, "time"),
                    t(l, "live_device"),
                    t(l, "event"),
                    t(l, "fence"),
                ],
                &rows,
            );
            let html = format!(
                "{html}<h3 class=\"events\">{}</h3>{table}",
                svg::esc(t(l, "last_events"))
            );
            let mut resp = html.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            secure(resp)
        }
    }
}
