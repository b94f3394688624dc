//! `GET /v1/qr/{site}`: a site's current rotating QR code (super: any
//! tenant with `?tenant=`; tenant: its own; others 403).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::admin::state::{
    AdminState, Role, authorize_token, bad_request, error, forbidden_config,
};
use crate::clock;

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
    let a = &state.attendance;
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
    let step = crate::rules::qr::step_of(now, settings.qr_step_ms);
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
        Some("svg") => match crate::rules::qr::render_svg(&code) {
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
