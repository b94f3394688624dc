//! What every admin route shares, below the router and the resources: the
//! state handlers get (`AdminState`), bearer tokens and their roles, and the
//! JSON error answers. Resource modules (`days.rs`, `rules.rs`,
//! `crate::ui`) import this, never the router, so the admin layer has no
//! import circle.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::fences::Fences;
use crate::log::LogHandle;

/// What a bearer token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Configures every tenant and exports; never edits a record.
    Super,
    /// Configures and exports only this tenant.
    Tenant(String),
    /// Reads the anomalies and pending approvals of one department.
    Supervisor {
        /// The tenant.
        tenant: String,
        /// The department.
        department: String,
    },
    /// Reads one employee's own records.
    Employee {
        /// The tenant.
        tenant: String,
        /// The employee id.
        employee: String,
    },
}

impl Role {
    /// Whether the role may read and change configuration (fences, rules,
    /// QR codes): super and tenant admins.
    pub fn configures(&self) -> bool {
        matches!(self, Role::Super | Role::Tenant(_))
    }

    /// The tenant the role is confined to (`None` for super).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Role::Super => None,
            Role::Tenant(t) => Some(t),
            Role::Supervisor { tenant, .. } | Role::Employee { tenant, .. } => Some(tenant),
        }
    }

    /// The role's name as written in `[[admin.tokens]]`.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Super => "super",
            Role::Tenant(_) => "tenant",
            Role::Supervisor { .. } => "supervisor",
            Role::Employee { .. } => "employee",
        }
    }
}

/// One accepted bearer token.
#[derive(Debug, Clone)]
pub struct AdminToken {
    /// Name for logs (never the secret).
    pub name: String,
    /// The secret.
    pub secret: String,
    /// What it may do.
    pub role: Role,
}

/// Shared state of the admin API.
pub struct AdminState {
    /// Current fences.
    pub fences: Arc<Fences>,
    /// The GeoJSON the current fences were built from.
    pub fences_geojson: ArcSwap<String>,
    /// Where accepted fence changes are persisted (so a restart keeps them).
    pub fences_path: PathBuf,
    /// The durable log (readiness).
    pub log: LogHandle,
    /// Prometheus renderer.
    pub prometheus: PrometheusHandle,
    /// Accepted tokens.
    pub tokens: Vec<AdminToken>,
    /// Serialises fence changes so two PUTs cannot interleave.
    pub fence_update: tokio::sync::Mutex<()>,
    /// Attendance rules, records and QR codes.
    pub attendance: Arc<AttendanceApi>,
    /// Health of each sink's forwarder: a sink that is down makes
    /// `/readyz` say "degraded" (still 200) while the log has room.
    pub sinks: Vec<Arc<crate::sink::SinkHealth>>,
    /// The day results store (`GET /v1/days`); `None` where results are not
    /// materialized.
    pub results: Option<crate::results::ResultsStore>,
    /// Fences and rules shared through the cluster's config bucket
    /// (`[cluster]` with `shared_config`); `None` on a lone node.
    pub shared: Option<Arc<crate::cluster::SharedConfig>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

/// A JSON error answer: `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// A 400 answer naming what is wrong with the request and how to fix it.
pub(crate) fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// Why a request was not authorised; small, so handlers can `?` it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unauthorized(pub(crate) &'static str);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        error(StatusCode::UNAUTHORIZED, self.0)
    }
}

pub(crate) fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<Role, Unauthorized> {
    authorize_token(state, headers).map(|t| t.role.clone())
}

/// The token a request carries, if it is one of ours.
pub(crate) fn authorize_token<'s>(
    state: &'s AdminState,
    headers: &HeaderMap,
) -> Result<&'s AdminToken, Unauthorized> {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(Unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`",
        ));
    };
    let Some(given) = auth.strip_prefix("Bearer ") else {
        return Err(Unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ));
    };
    state
        .tokens
        .iter()
        .find(|t| constant_time_eq(t.secret.as_bytes(), given.trim().as_bytes()))
        .ok_or(Unauthorized(
            "unknown bearer token: it matches no [[admin.tokens]] entry of this node; send the contents of one of their token files",
        ))
}

/// A 403 for a role that only reads records.
pub(crate) fn forbidden_config(role: &Role) -> Response {
    error(
        StatusCode::FORBIDDEN,
        format!(
            "a {} token reads attendance records only; configuration needs a super or tenant token",
            role.name()
        ),
    )
}

/// Tokens are secrets: compare without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}

/// The answer to a change the cluster's config bucket refused.
pub(crate) fn share_error(e: &crate::cluster::ShareError) -> Response {
    let status = match e {
        crate::cluster::ShareError::Conflict { .. } => StatusCode::CONFLICT,
        crate::cluster::ShareError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        crate::cluster::ShareError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

/// State of the attendance routes.
#[derive(Debug)]
pub struct AttendanceApi {
    /// The live rules.
    pub rules: Arc<crate::rules::store::RulesHandle>,
    /// Where they live and how they compile.
    pub source: crate::rules::store::RulesSource,
    /// Serialises rule changes so two PUTs cannot interleave.
    pub update: tokio::sync::Mutex<()>,
    /// Rule-change counters.
    pub metrics: crate::metrics::RulesMetrics,
    /// The per-segment time index of records.
    pub index_dir: PathBuf,
    /// Bounds on records queries.
    pub query_limits: crate::config::QueryLimits,
    /// One permit per records query running.
    pub queries: Arc<tokio::sync::Semaphore>,
}

impl AttendanceApi {
    /// The routes' state.
    pub fn new(
        rules: Arc<crate::rules::store::RulesHandle>,
        source: crate::rules::store::RulesSource,
        index_dir: PathBuf,
        query_limits: crate::config::QueryLimits,
    ) -> Self {
        let metrics = crate::metrics::RulesMetrics::register();
        metrics.version.set(rules.version() as f64);
        Self {
            rules,
            source,
            update: tokio::sync::Mutex::new(()),
            metrics,
            index_dir,
            queries: Arc::new(tokio::sync::Semaphore::new(query_limits.max_concurrent)),
            query_limits,
        }
    }
}
