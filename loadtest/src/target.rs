//! The gateway under test: one the harness starts in-process on loopback
//! (the default), or a remote one named with `--target` and reached with
//! the operator's credentials.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fencegate::auth::{Keyring, TenantKey};
use fencegate::config::{Config, RawAdminToken, RawConfig, RawTenant};
use fencegate::edge::tls::Trust;
use fencegate::serve::Running;
use rustls::pki_types::{CertificateDer, pem::PemObject as _};

use crate::clock;
use crate::scenario::Scenario;

/// How the harness reaches a remote gateway (`--target` and friends).
#[derive(Debug, Clone)]
pub struct RemoteSpec {
    /// `--target`: host:port of the gateway's QUIC listener.
    pub target: String,
    /// `--server-name`: SNI and certificate name.
    pub server_name: Option<String>,
    /// `--ca-file`: PEM roots the gateway's certificate chains to.
    pub ca_file: Option<PathBuf>,
    /// `--fingerprint`: the pinned SHA-256 of the gateway's certificate.
    pub fingerprint: Option<String>,
    /// `--tenant`: the tenant to load (default: the scenario's).
    pub tenant: Option<String>,
    /// `--tenant-key-file`: that tenant's device-token key.
    pub tenant_key_file: Option<PathBuf>,
    /// `--log-dir`: the gateway's log folder, for the audit and ping→log
    /// latency.
    pub log_dir: Option<PathBuf>,
    /// `--metrics-url`: the gateway's admin `/metrics`.
    pub metrics_url: Option<String>,
    /// `--punch-target`: host:port of the gateway's punch-only listener
    /// (`quic.punch_listen`), where punches go instead of `target`.
    pub punch_target: Option<String>,
}

impl RemoteSpec {
    /// A spec for `target` with nothing else set.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            server_name: None,
            ca_file: None,
            fingerprint: None,
            tenant: None,
            tenant_key_file: None,
            log_dir: None,
            metrics_url: None,
            punch_target: None,
        }
    }
}

/// Where the gateway's own counters come from.
#[derive(Debug, Clone)]
pub enum MetricsSource {
    /// Not available.
    None,
    /// The in-process gateway's Prometheus recorder.
    InProcess,
    /// A gateway's admin `/metrics` URL (`http://host:port/metrics`).
    Url(String),
}

/// The built-in gateway: its runtime, its node and its temporary folder.
struct BuiltIn {
    rt: tokio::runtime::Runtime,
    running: Option<Running>,
    _dir: Option<tempfile::TempDir>,
}

/// A gateway to load.
pub struct Target {
    /// QUIC address.
    pub addr: SocketAddr,
    /// The punch-only QUIC address, when the gateway has one: punches go
    /// there, pings and backlogs to `addr`.
    pub punch_addr: Option<SocketAddr>,
    /// Name for SNI.
    pub server_name: String,
    /// How its certificate is trusted.
    pub trust: Trust,
    /// The tenant loaded.
    pub tenant: String,
    /// The gateway's log directory, when readable from here.
    pub log_dir: Option<PathBuf>,
    /// Gateway counters.
    pub metrics: MetricsSource,
    /// One line describing the target, for reports.
    pub description: String,
    issuer: Arc<Issuer>,
    builtin: Option<BuiltIn>,
}

/// Issues device tokens for the loaded tenant; shared by the load tasks.
#[derive(Debug)]
pub struct Issuer {
    keyring: Keyring,
    tenant: String,
}

impl Issuer {
    /// A device token for `device`, valid for a day.
    pub fn token(&self, device: &str) -> anyhow::Result<String> {
        self.keyring
            .issue(&self.tenant, device, clock::unix_ms() / 1_000 + TOKEN_TTL_S)
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// Token lifetime: long enough for any bounded run.
const TOKEN_TTL_S: i64 = 24 * 3_600;

impl Target {
    /// Starts a gateway in this process on loopback, port 0, in a fresh
    /// folder under `data_dir` (or the system temp dir), serving the
    /// scenario's tenant and the fences in `fences_geojson`. It runs on its
    /// own Tokio runtime with one worker per core, as a separate process
    /// would.
    /// With `jetstream`, the gateway also forwards to that stream through
    /// a NATS sink.
    pub fn start_builtin(
        s: &Scenario,
        fences_geojson: &str,
        data_dir: Option<&Path>,
        jetstream: Option<&crate::audit::JetStreamSpec>,
    ) -> anyhow::Result<Self> {
        let dir = match data_dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("--data-dir {}: cannot create it", d.display()))?;
                tempfile::Builder::new()
                    .prefix("fencegate-load-")
                    .tempdir_in(d)
            }
            None => tempfile::Builder::new().prefix("fencegate-load-").tempdir(),
        }
        .context("cannot make a folder for the built-in gateway")?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cfg = builtin_config(s, dir.path(), fences_geojson, cores, jetstream)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .thread_name("gateway")
            .on_thread_start(fencegate::edge::priority::shared_lane_hook(
                cfg.quic.shared_lane_nice,
            ))
            .enable_all()
            .build()
            .context("cannot start the gateway runtime")?;
        let running = rt
            .block_on(fencegate::serve::start(&cfg))
            .context("the built-in gateway did not start")?;
        let keyring = fencegate::serve::keyring(&cfg)?;
        Ok(Self {
            addr: running.quic_addr,
            punch_addr: running.punch_addr,
            server_name: "localhost".into(),
            trust: Trust::Pinned(running.fingerprint.clone()),
            tenant: s.world.tenant.clone(),
            log_dir: Some(cfg.log.dir.clone()),
            metrics: MetricsSource::InProcess,
            description: format!(
                "built-in gateway on {}{} ({} endpoint(s), log in {})",
                running.quic_addr,
                running
                    .punch_addr
                    .map(|a| format!(", punches on {a}"))
                    .unwrap_or_default(),
                cfg.quic.endpoints,
                cfg.log.dir.display()
            ),
            issuer: Arc::new(Issuer {
                keyring,
                tenant: s.world.tenant.clone(),
            }),
            builtin: Some(BuiltIn {
                rt,
                running: Some(running),
                _dir: Some(dir),
            }),
        })
    }

    /// A remote gateway. Every missing credential is reported at once.
    pub fn remote(spec: &RemoteSpec, s: &Scenario) -> anyhow::Result<Self> {
        let (log_dir, metrics_url) = (spec.log_dir.clone(), spec.metrics_url.clone());
        let mut problems = Vec::new();
        let addr = match spec.target.to_socket_addrs() {
            Ok(mut a) => a.next(),
            Err(e) => {
                problems.push(format!(
                    "--target {}: not a reachable host:port ({e}); write it like gw.example.com:4433",
                    spec.target
                ));
                None
            }
        };
        let punch_addr = spec.punch_target.as_ref().and_then(|p| {
            match p.to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(a)) => Some(a),
                Ok(None) | Err(_) => {
                    problems.push(format!(
                        "--punch-target {p}: not a reachable host:port; write it like gw.example.com:4434 (the gateway's quic.punch_listen)"
                    ));
                    None
                }
            }
        });
        let host = spec
            .target
            .rsplit_once(':')
            .map_or(spec.target.as_str(), |(h, _)| h)
            .trim_matches(['[', ']']);
        let server_name = spec.server_name.clone().unwrap_or_else(|| {
            if host.parse::<std::net::IpAddr>().is_ok() {
                "localhost".into()
            } else {
                host.to_owned()
            }
        });
        let trust = match (&spec.ca_file, &spec.fingerprint) {
            (Some(_), Some(_)) => {
                problems.push("give either --ca-file or --fingerprint, not both".into());
                None
            }
            (Some(f), None) => match load_roots(f) {
                Ok(r) => Some(Trust::Roots(r)),
                Err(e) => {
                    problems.push(format!("{e:#}"));
                    None
                }
            },
            (None, Some(fp)) => {
                if let Some(hex) = fencegate::edge::tls::normalize_fingerprint(fp) {
                    Some(Trust::Pinned(hex))
                } else {
                    problems.push(format!(
                        "--fingerprint {fp}: not a SHA-256 fingerprint; copy the one `fencegate serve` prints (64 hex digits, colons optional)"
                    ));
                    None
                }
            }
            (None, None) => {
                problems.push(
                    "a remote target needs --ca-file (the CA that signed its certificate) or --fingerprint (its pinned certificate)"
                        .into(),
                );
                None
            }
        };
        let tenant = spec
            .tenant
            .clone()
            .unwrap_or_else(|| s.world.tenant.clone());
        let mut keyring = Keyring::default();
        match &spec.tenant_key_file {
            Some(f) => match TenantKey::load_or_create(f, false) {
                Ok(k) => keyring.insert(tenant.clone(), k),
                Err(e) => problems.push(format!("--tenant-key-file: {e:#}")),
            },
            None => problems.push(format!(
                "a remote target needs --tenant-key-file: the key of tenant '{tenant}' (the gateway's [[tenants]] key_file), so the harness can issue device tokens"
            )),
        }
        if let Some(d) = &log_dir {
            if !d.is_dir() {
                problems.push(format!(
                    "--log-dir {}: not a directory; give the gateway's log folder (<data_dir>/log unless [log] dir is set)",
                    d.display()
                ));
            }
        }
        if !problems.is_empty() {
            anyhow::bail!("cannot reach the target:\n  - {}", problems.join("\n  - "));
        }
        let addr = addr.expect("checked above");
        let metrics = metrics_url.map_or(MetricsSource::None, MetricsSource::Url);
        Ok(Self {
            addr,
            punch_addr,
            description: format!(
                "remote gateway {} ({addr}{}), server name {server_name}",
                spec.target,
                punch_addr
                    .map(|a| format!(", punches on {a}"))
                    .unwrap_or_default()
            ),
            server_name,
            trust: trust.expect("checked above"),
            tenant: tenant.clone(),
            log_dir,
            metrics,
            issuer: Arc::new(Issuer {
                keyring,
                tenant: tenant.clone(),
            }),
            builtin: None,
        })
    }

    /// The token issuer for the load tasks.
    pub fn issuer(&self) -> Arc<Issuer> {
        self.issuer.clone()
    }

    /// The built-in gateway's log handle, for reading committed entries
    /// as they commit.
    pub fn builtin_log(&self) -> Option<fencegate::log::LogHandle> {
        self.builtin
            .as_ref()
            .and_then(|b| b.running.as_ref())
            .map(|r| r.edge.log.clone())
    }

    /// Whether the gateway runs in this process (its memory is then mixed
    /// with the harness's).
    pub fn is_builtin(&self) -> bool {
        self.builtin.is_some()
    }

    /// Stops the built-in gateway (draining it); nothing for a remote one.
    pub fn shutdown(&mut self) {
        if let Some(mut b) = self.builtin.take() {
            if let Some(r) = b.running.take() {
                b.rt.block_on(r.shutdown(Duration::from_secs(5)));
            }
            b.rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn load_roots(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let roots = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("--ca-file {}: cannot read it", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--ca-file {}: not a PEM certificate file", path.display()))?;
    anyhow::ensure!(
        !roots.is_empty(),
        "--ca-file {}: holds no certificate",
        path.display()
    );
    Ok(roots)
}

/// The built-in gateway's configuration: loopback, port 0, the scenario's
/// tenant and fences, an admin token in the folder (so nothing is printed),
/// and the scenario's `[gateway]` settings.
fn builtin_config(
    s: &Scenario,
    dir: &Path,
    fences_geojson: &str,
    cores: usize,
    jetstream: Option<&crate::audit::JetStreamSpec>,
) -> anyhow::Result<Config> {
    let fences = dir.join("fences.geojson");
    std::fs::write(&fences, fences_geojson)
        .with_context(|| format!("cannot write {}", fences.display()))?;
    let admin = dir.join("admin.token");
    let mut secret = [0u8; 24];
    rand::fill(&mut secret);
    std::fs::write(&admin, hex::encode(secret))?;
    let mut raw = RawConfig::default();
    raw.node.name = "fencegate-load".into();
    raw.node.data_dir = dir.join("data");
    raw.quic.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    // Through serde, so fields the gateway adds later keep their defaults.
    let token: RawAdminToken = toml::from_str(&format!(
        "name = \"loadtest\"\nrole = \"super\"\ntoken_file = {}\n",
        toml::Value::String(admin.display().to_string())
    ))
    .context("built-in gateway: admin token settings")?;
    raw.admin.tokens = vec![token];
    raw.fences.path = fences;
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, crate::world::synthetic_rules(s))
        .with_context(|| format!("cannot write {}", rules.display()))?;
    raw.attendance.rules = Some(rules);
    raw.tenants = vec![RawTenant {
        id: s.world.tenant.clone(),
        key_file: None,
    }];
    let g = &s.gateway;
    raw.quic.endpoints = g.endpoints.unwrap_or(cores);
    if let Some(r) = g.ping_cell_resolution {
        raw.dedup.ping_cell_resolution = r;
    }
    if let Some(d) = g.commit_delay_us {
        raw.log.commit_delay_us = d;
    }
    if let Some(r) = g.retry_above_handshakes_per_s {
        raw.quic.retry_above_handshakes_per_s = r;
    }
    if let Some(m) = g.max_connections {
        raw.quic.max_connections = m;
    }
    if let Some(m) = g.max_handshakes_in_flight {
        raw.quic.max_handshakes_in_flight = m;
    }
    if let Some(t) = g.admission_target_ms {
        raw.quic.admission_target_ms = t;
    }
    if let Some(m) = g.shed_connections {
        raw.quic.shed_connections = m;
    }
    if let Some(r) = g.ping_datagrams_per_s {
        raw.quic.ping_datagrams_per_s = r;
    }
    if let Some(b) = g.ping_burst {
        raw.quic.ping_burst = b;
    }
    if let Some(b) = g.datagram_buffer {
        raw.quic.datagram_buffer = Some(b);
    }
    if g.punch_listen {
        raw.quic.punch_listen = Some("127.0.0.1:0".into());
    }
    if let Some(js) = jetstream {
        raw.sinks = vec![fencegate::sink::RawSink {
            name: "loadtest".into(),
            kind: "nats".into(),
            url: Some(js.url.clone()),
            stream: Some(js.stream.clone()),
            subject_prefix: Some(js.subject_prefix.clone()),
            ..Default::default()
        }];
    }
    // Every punch of a run must stay in the dedup window.
    let punches = s.punch.as_ref().map_or(0, |p| p.employees as usize * 2);
    raw.dedup.max_punch_keys = raw.dedup.max_punch_keys.max(punches * 2 + 1_000);
    let devices = s.fleet.as_ref().map_or(0, |f| f.devices as usize);
    // A ramp connects a fresh fleet each step.
    let fleets = s.ramp.as_ref().map_or(1, |r| r.max_steps as usize);
    raw.dedup.max_devices = raw.dedup.max_devices.max(devices * fleets + 1_000);
    Config::compile(raw, "built-in gateway").map_err(|e| anyhow::anyhow!("{e}"))
}
