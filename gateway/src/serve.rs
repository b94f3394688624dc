//! `fencegate serve`: assembles the node from a compiled [`Config`] — keys,
//! fences, log, pipeline, QUIC endpoints, admin API, housekeeping — and
//! drains it on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use fencegate_schema::{RecordBodyView, parse_record};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::admin::{AdminState, AdminToken, Role};
use crate::auth::{Keyring, TenantKey};
use crate::clock;
use crate::config::{Config, ConfigErrors};
use crate::edge::{self, EdgeContext, EdgeSettings, tls};
use crate::fences::{self, Fences};
use crate::log::{LogHandle, Lsn};
use crate::pipeline::{Pipeline, PipelineConfig};

/// A running node, for tests and for the binary.
#[derive(Debug)]
pub struct Running {
    /// The QUIC address actually bound (useful with port 0).
    pub quic_addr: SocketAddr,
    /// The punch-only QUIC address actually bound (`quic.punch_listen`).
    pub punch_addr: Option<SocketAddr>,
    /// The admin address actually bound.
    pub admin_addr: SocketAddr,
    /// SHA-256 fingerprint of the served certificate.
    pub fingerprint: String,
    /// The edge context (pipeline, log, metrics).
    pub edge: Arc<EdgeContext>,
    endpoints: Vec<quinn::Endpoint>,
    /// The punch address's own runtime, when `quic.punch_listen` is set.
    _punch_lane: Option<LaneRuntime>,
    admin_task: tokio::task::JoinHandle<()>,
    housekeeping: tokio::task::JoinHandle<()>,
    forwarders: crate::sink::Forwarders,
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .expect("static buckets are valid")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// Loads every tenant's key; keys at default paths are generated when
/// missing (dev), keys at configured paths must exist.
pub fn keyring(cfg: &Config) -> anyhow::Result<Keyring> {
    let mut ring = Keyring::default();
    for (tenant, path) in &cfg.tenants {
        let generated_default = path.starts_with(cfg.data_dir.join("keys"));
        ring.insert(
            tenant.clone(),
            TenantKey::load_or_create(path, generated_default)?,
        );
    }
    Ok(ring)
}

/// The configured admin tokens, read from their files or environment
/// variables; changes nothing (`check-config` calls it too).
fn configured_admin_tokens(cfg: &Config) -> anyhow::Result<Vec<AdminToken>> {
    let mut out = Vec::new();
    for t in &cfg.admin_tokens {
        let secret = match (&t.token_file, &t.token_env) {
            (Some(f), _) => std::fs::read_to_string(f).with_context(|| {
                format!("admin token '{}': cannot read {}", t.name, f.display())
            })?,
            (_, Some(var)) => std::env::var(var).with_context(|| {
                format!(
                    "admin token '{}': environment variable {var} is not set",
                    t.name
                )
            })?,
            _ => unreachable!("validated by config"),
        };
        let secret = secret.lines().next().unwrap_or_default().trim().to_owned();
        anyhow::ensure!(
            secret.len() >= 16,
            "admin token '{}': the secret must be at least 16 characters",
            t.name
        );
        let tenant = t.tenant.clone().unwrap_or_default();
        let role = match t.role.as_str() {
            "tenant" => Role::Tenant(tenant),
            "supervisor" => Role::Supervisor {
                tenant,
                department: t.department.clone().unwrap_or_default(),
            },
            "employee" => Role::Employee {
                tenant,
                employee: t.employee.clone().unwrap_or_default(),
            },
            _ => Role::Super,
        };
        out.push(AdminToken {
            name: t.name.clone(),
            secret,
            role,
        });
    }
    Ok(out)
}

/// Every problem `serve` would meet in the files the configuration names
/// (tenant keys, admin tokens, fences, rules, TLS), found without changing
/// any file: `check-config` reports exactly what start-up refuses, and
/// start-up runs it first so both say the same. What the TOML alone decides
/// (ranges, the log's sizes) was already checked by [`Config::compile`].
pub fn check(cfg: &Config) -> Result<Checked, ConfigErrors> {
    let mut p = Vec::new();
    let mut fences = None;
    for (tenant, path) in &cfg.tenants {
        let generated_default = path.starts_with(cfg.data_dir.join("keys"));
        if path.exists() || !generated_default {
            if let Err(e) = TenantKey::load_or_create(path, false) {
                p.push(format!("tenant {tenant}: {e:#}"));
            }
        }
    }
    if let Err(e) = configured_admin_tokens(cfg) {
        p.push(format!("{e:#}"));
    }
    if cfg.fences.path.exists() || !cfg.allow_sample_fences {
        match read_fences(cfg) {
            Ok(index) => fences = Some(index),
            Err(e) => p.push(format!("{e:#}")),
        }
    }
    if let Err(rules) = crate::rules::load::check(cfg) {
        p.extend(rules);
    }
    if let Some((c, k)) = &cfg.quic.identity {
        if let Err(e) = tls::load_identity(c, k) {
            p.push(format!("{e:#}"));
        }
    }
    if p.is_empty() {
        Ok(Checked { fences })
    } else {
        Err(ConfigErrors {
            source: cfg.source.clone(),
            problems: p,
        })
    }
}

/// What [`check`] loaded on the way, so start-up does not load it twice.
#[derive(Debug)]
pub struct Checked {
    /// The fences file's text and index (`None`: missing, and the samples
    /// will be seeded).
    pub fences: Option<(String, fencegate_spatial::FenceIndex)>,
}

/// Reads and indexes the fences file.
fn read_fences(cfg: &Config) -> anyhow::Result<(String, fencegate_spatial::FenceIndex)> {
    let fence_text = std::fs::read_to_string(&cfg.fences.path).with_context(|| {
        format!(
            "fences.path {}: cannot read it; point it at a GeoJSON FeatureCollection",
            cfg.fences.path.display()
        )
    })?;
    let index = fences::build_index(&fence_text, &cfg.fences.load.clone())
        .map_err(|e| anyhow::anyhow!("fences.path {}: {e}", cfg.fences.path.display()))?;
    Ok((fence_text, index))
}

/// Resolves admin tokens from their files or environment variables. With no
/// token configured, a super-admin token is generated under the data dir.
fn admin_tokens(cfg: &Config) -> anyhow::Result<Vec<AdminToken>> {
    let mut out = configured_admin_tokens(cfg)?;
    if out.is_empty() {
        let path = cfg.data_dir.join("admin.token");
        if !path.exists() {
            let mut raw = [0u8; 24];
            rand::fill(&mut raw);
            crate::persist::create_new(&path, hex::encode(raw).as_bytes(), crate::persist::PRIVATE)
                .map_err(|e| anyhow::anyhow!("admin token {}: cannot create it: {e}; check that the data directory is writable", path.display()))?;
        }
        let secret = std::fs::read_to_string(&path)?.trim().to_owned();
        eprintln!(
            "admin API: no [[admin.tokens]] configured; a super-admin token is in {}",
            path.display()
        );
        out.push(AdminToken {
            name: "generated".into(),
            secret,
            role: Role::Super,
        });
    }
    Ok(out)
}

/// Replays the log's idempotency horizon into the pipeline's dedup maps,
/// so a resend after a restart gets the ack it got before, and the last
/// 24 h into the rules' employee memory (anti-cheat), as ATTENDANCE.md
/// promises.
fn replay(pipeline: &Pipeline, log: &LogHandle, now_ms: i64) -> anyhow::Result<u64> {
    let c = pipeline.config();
    let window = c
        .idempotency_horizon_ms
        .max(c.repeat_window_ms)
        .max(crate::rules::state::EMPLOYEE_MEMORY_MS)
        .max(pipeline.rules().load().memory_ms());
    let since = (now_ms - window).max(0) as u64;
    let start = log
        .segments()
        .iter()
        .find(|s| s.max_time_ms.is_some_and(|t| t >= since))
        .map_or(log.committed(), |s| s.first_lsn);
    let mut reader = log.reader(start)?;
    let mut n = 0;
    while let Some(e) = reader.next_entry()? {
        if e.time_ms < since {
            continue;
        }
        let Ok(rec) = parse_record(e.payload) else {
            continue;
        };
        if let RecordBodyView::Punch(p) = rec.body() {
            pipeline
                .replay_punch(now_ms, rec.tenant(), &p, rec.gateway_time_ms(), rec.record_id())
                .map_err(|e| {
                    anyhow::anyhow!(
                        "replaying the idempotency horizon from the log: {e}; the log holds more punches of tenant {:?} in the last dedup.idempotency_horizon_s = {} s than its share of dedup.max_punch_keys = {} allows: raise dedup.max_punch_keys (about 200 bytes each) or the tenant's [budgets.tenants.{}] max_punch_keys, or shorten the horizon",
                        rec.tenant(),
                        c.idempotency_horizon_ms / 1_000,
                        c.max_punch_keys,
                        rec.tenant()
                    )
                })?;
            n += 1;
        }
    }
    Ok(n)
}

/// Starts a node. Returns once every listener is bound.
pub async fn start(cfg: &Config) -> anyhow::Result<Running> {
    let prometheus = prometheus();
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("node.data_dir {}: cannot create it", cfg.data_dir.display()))?;
    let checked = check(cfg)?;
    let keyring = Arc::new(keyring(cfg)?);

    let load_opts = cfg.fences.load.clone();
    let (fence_text, index) = match checked.fences {
        Some(loaded) => loaded,
        None => {
            if let Some(dir) = cfg.fences.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&cfg.fences.path, fences::SAMPLE_FENCES)
                .with_context(|| format!("cannot seed {}", cfg.fences.path.display()))?;
            read_fences(cfg)?
        }
    };
    let fences = Arc::new(Fences::new(index, load_opts));
    metrics::gauge!("fencegate_fences").set(fences.load().index().len() as f64);
    metrics::gauge!("fencegate_fence_snapshot_version").set(1.0);

    let (log, report) = LogHandle::open(cfg.log.clone())
        .map_err(|e| anyhow::anyhow!("log {}: {e}", cfg.log.dir.display()))?;
    if let Some(t) = &report.truncation {
        tracing::warn!(
            ?t,
            "recovery cut a torn tail from the log (never acknowledged)"
        );
        eprintln!("log recovery: cut a torn tail: {t:?}");
    }
    // Register every sink's cursor before anything can run retention.
    let forwarders = crate::sink::Forwarders::start(
        &cfg.sinks,
        &log,
        &cfg.node_name,
        &cfg.data_dir.join("dead-letter"),
    )?;
    let (rules, rules_source) = crate::rules::load::load(cfg)?;
    let now = clock::unix_ms();
    let pipeline = Arc::new(
        Pipeline::with_rules(
            PipelineConfig::from_config(cfg),
            fences.clone(),
            rules.clone(),
            now,
        )
        .with_ping_events(crate::pipeline::PingEventSettings::from_config(cfg))
        .with_budgets(cfg.budgets.clone()),
    );
    let mono = clock::MonoMs::starting_at(now);
    let replay_started = clock::instant();
    let replayed = replay(&pipeline, &log, now)?;
    tracing::info!(
        entries = report.entries,
        replayed,
        replay_ms = replay_started.elapsed().as_millis() as u64,
        next = %report.next_lsn,
        "log recovered"
    );

    let identity = match &cfg.quic.identity {
        Some((c, k)) => tls::load_identity(c, k)?,
        None => tls::dev_identity(&cfg.data_dir.join("tls"), &cfg.quic.dev_cert_names)?,
    };
    let settings = EdgeSettings {
        max_connections: cfg.quic.max_connections,
        retry_above_handshakes_per_s: cfg.quic.retry_above_handshakes_per_s,
        max_handshakes_in_flight: cfg.quic.max_handshakes_in_flight,
        hello_timeout: cfg.quic.hello_timeout,
        hello_evict_grace: cfg.quic.hello_evict_grace,
        stream_read_timeout: cfg.quic.stream_read_timeout,
        ping_datagrams_per_s: cfg.quic.ping_datagrams_per_s,
        ping_burst: cfg.quic.ping_burst,
        zero_rtt: cfg.quic.zero_rtt,
        repeat_window_s: cfg.dedup.repeat_window.as_secs() as u32,
        admission: edge::admission::AdmissionSettings {
            target: cfg.quic.admission_target,
            interval: cfg.quic.admission_interval,
            retry_after: cfg.quic.admission_retry_after,
        },
        shed_connections: cfg.quic.shed_connections,
    };
    let mut ctx = EdgeContext::new(
        pipeline.clone(),
        log.clone(),
        keyring,
        cfg.limits.clone(),
        settings,
        cfg.quic.max_inflight_punches,
    );
    let cluster_client = match &cfg.cluster {
        Some(c) => Some(crate::cluster::settings::connect(c, &cfg.node_name).await?),
        None => None,
    };
    if let (Some(c), Some(client)) = (&cfg.cluster, &cluster_client) {
        if c.claims {
            let repeat_ms = cfg.dedup.repeat_window.as_millis() as i64;
            let claims = Arc::new(crate::cluster::PunchClaims::new(
                c,
                &cfg.node_name,
                repeat_ms,
            ));
            tokio::spawn(claims.clone().open(
                client.clone(),
                crate::cluster::ClaimsConfig {
                    prefix: c.prefix.clone(),
                    idempotency_ttl: cfg.dedup.idempotency_horizon,
                    repeat_ttl: cfg.dedup.repeat_window,
                    replicas: c.replicas,
                    timeout: c.timeout,
                },
                ctx.shutdown.clone(),
            ));
            ctx.cluster = Some(claims);
        }
    }
    let ctx = Arc::new(ctx);
    let [server, punch_server] = edge::server_configs(&identity, &cfg.quic, &ctx.metrics)?;
    let gate = start_cpu_gate(&cfg.quic, cfg.quic_punch_listen.is_some());
    let mut endpoints = edge::bind_endpoints(
        "quic.listen",
        cfg.quic_listen,
        cfg.quic.endpoints,
        server,
        gate.as_ref(),
    )?;
    let quic_addr = endpoints[0].local_addr()?;
    for ep in &endpoints {
        tokio::spawn(edge::run_endpoint(
            ctx.clone(),
            ep.clone(),
            edge::Lane::Main,
        ));
    }
    let mut punch_addr = None;
    let mut punch_lane = None;
    if let Some(addr) = cfg.quic_punch_listen {
        // Its own runtime thread, not only its own socket: on the shared
        // workers a punch's handshake and stream tasks queue behind the
        // flood's datagram tasks (tokio has no priorities), and its
        // set-up delay trips admission. On a thread of its own the kernel
        // schedules it beside the workers, and a punch waits for CPU only
        // as long as a time slice. One thread: punches are few next to
        // pings (one socket, too, for the same reason).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("punch-lane")
            .enable_all()
            .build()
            .context("quic.punch_listen: cannot start the punch lane's runtime")?;
        let eps = {
            // quinn spawns the endpoint's driver on the runtime it is
            // created in.
            let _in_lane = rt.enter();
            edge::bind_endpoints("quic.punch_listen", addr, 1, punch_server, None)?
        };
        punch_addr = Some(eps[0].local_addr()?);
        rt.spawn(edge::run_endpoint(
            ctx.clone(),
            eps[0].clone(),
            edge::Lane::Punch,
        ));
        endpoints.extend(eps);
        punch_lane = Some(LaneRuntime(Some(rt)));
    }

    // Day results: a materialized view of the log (docs/ATTENDANCE.md, "Day
    // results"), or with several nodes of the stream they all forward to
    // (docs/SCALING.md). The log's cursor is registered before retention
    // can run; fed by the stream, the log keeps nothing back for results.
    let from_stream = match (&cfg.cluster, &cluster_client) {
        (Some(c), Some(client)) => c.results.clone().map(|s| (s, client.clone())),
        _ => None,
    };
    if from_stream.is_none() {
        log.cursor("results", crate::log::CursorStart::Oldest)
            .map_err(|e| anyhow::anyhow!("results cursor: {e}"))?;
    } else {
        log.remove_cursor("results")
            .map_err(|e| anyhow::anyhow!("results cursor: {e}"))?;
    }
    // Opened on a shared-lane worker, not on this thread: sqlx runs each
    // SQLite connection on a thread it starts from the opening one, which
    // inherits that thread's priority (`quic.shared_lane_nice`), and the
    // pool reopens its connections later from the shared lane anyway.
    let results_url = cfg.attendance.results_url.clone();
    let results = tokio::spawn(async move {
        crate::results::ResultsStore::open(&results_url).await
    })
    .await
    .context("the task opening the results store failed")?
    .with_context(|| {
            format!(
                "attendance.results {}: cannot open the results store; fix the path or URL, or remove the setting for <data_dir>/results.sqlite",
                cfg.attendance.results_url
            )
        })?;
    if let Some(left) = crate::results::store::leftover_rebuild(&cfg.attendance.results_url) {
        tracing::warn!(
            file = %left.display(),
            "a `fencegate results rebuild` that stopped before its end left this half-built store; nothing reads it: delete it, or run the rebuild again (node stopped), which deletes it first"
        );
    }
    let materializer = crate::results::Materializer::new(results.clone(), rules.clone());
    // Closed days and their later changes go downstream as records
    // (docs/ATTENDANCE.md, "Day results downstream"), from either source.
    tokio::spawn(crate::results::outbox::run(
        results.clone(),
        log.clone(),
        Some(cfg.node_name.clone()),
        ctx.shutdown.clone(),
        Duration::from_secs(1),
    ));
    match from_stream {
        Some((source, client)) => {
            tokio::spawn(
                crate::results::StreamMaterializer::new(materializer, client, source)
                    .run(ctx.shutdown.clone(), Duration::from_secs(60)),
            );
        }
        None => {
            tokio::spawn(materializer.run(
                log.clone(),
                ctx.shutdown.clone(),
                Duration::from_secs(60),
            ));
        }
    }

    let shared = match (&cfg.cluster, &cluster_client) {
        (Some(c), Some(client)) if c.shared_config => Some(Arc::new(
            crate::cluster::SharedConfig::new(client.clone(), c.timeout),
        )),
        _ => None,
    };
    let mut seed = vec![(crate::cluster::Doc::Fences, fence_text.clone())];
    if cfg.attendance.rules_path.is_some() {
        seed.push((crate::cluster::Doc::Rules, rules.text().to_string()));
    }
    let admin = Arc::new(AdminState {
        fences: fences.clone(),
        fences_geojson: ArcSwap::from_pointee(fence_text),
        fences_path: cfg.fences.path.clone(),
        log: log.clone(),
        prometheus: prometheus.clone(),
        tokens: admin_tokens(cfg)?,
        fence_update: tokio::sync::Mutex::new(()),
        attendance: Arc::new(crate::admin::state::AttendanceApi::new(
            rules,
            rules_source,
            cfg.data_dir.join("index").join("records"),
            cfg.admin_queries,
        )),
        sinks: forwarders.health().to_vec(),
        results: Some(results),
        shared: shared.clone(),
    });
    if let (Some(shared), Some(c)) = (shared, &cfg.cluster) {
        let state = Arc::downgrade(&admin);
        let apply: crate::cluster::shared::Apply = Arc::new(move |doc, revision, text| {
            let state = state.clone();
            Box::pin(async move {
                let Some(state) = state.upgrade() else {
                    return Ok(());
                };
                match doc {
                    crate::cluster::Doc::Fences => {
                        crate::admin::apply_shared_fences(&state, revision, text).await
                    }
                    crate::cluster::Doc::Rules => {
                        crate::admin::rules::apply_shared_rules(&state, revision, text).await
                    }
                }
            })
        });
        tokio::spawn(shared.run(
            c.prefix.clone(),
            c.replicas,
            seed,
            apply,
            ctx.shutdown.clone(),
        ));
    }
    let listener = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("admin.listen {}: cannot bind", cfg.admin_listen))?;
    let admin_addr = listener.local_addr()?;
    let shutdown = ctx.shutdown.clone();
    // The dashboard's fleet live view reads the pipeline's device state.
    let live = crate::ui::live::Live(pipeline.clone());
    let admin_task = tokio::spawn(async move {
        let app = crate::admin::router(admin).layer(axum::Extension(live));
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });

    let hk_ctx = ctx.clone();
    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = hk_ctx.shutdown.cancelled() => break,
            }
            let now = clock::unix_ms();
            hk_ctx.pipeline.tick_at(now, mono.now_ms());
            prometheus_upkeep(n);
            n += 1;
            if n % 30 == 0 {
                let log = hk_ctx.log.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = log.retain(now.max(0) as u64) {
                        tracing::warn!(error = %e, "log retention failed");
                    }
                })
                .await;
            }
        }
    });

    Ok(Running {
        quic_addr,
        punch_addr,
        admin_addr,
        fingerprint: identity.fingerprint.clone(),
        edge: ctx,
        endpoints,
        _punch_lane: punch_lane,
        admin_task,
        housekeeping,
        forwarders,
    })
}

/// Starts the shared lane's CPU gate (`edge/cpu_gate.rs`) when the node
/// has a CPU limit below the machine's cores (a quota at or above them
/// never stops it), punches have their own address, and `quic.cpu_gate`
/// is not 0.
fn start_cpu_gate(
    q: &crate::config::Quic,
    punch_listen: bool,
) -> Option<Arc<edge::cpu_gate::CpuGate>> {
    // The cgroup's quota, when there is one, also tells the gate when the
    // kernel throttles, even under a smaller quic.cpu_limit_cores.
    let quota = edge::cpu_gate::cgroup_cpu_quota();
    let (limit, source) = match (q.cpu_limit_cores, &quota) {
        (Some(c), _) => (c, "quic.cpu_limit_cores"),
        (None, Some(quota)) => (quota.cores, "the cgroup's CPU quota"),
        (None, None) => return None,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if limit >= cores as f64 {
        return None;
    }
    if !punch_listen {
        // Punches share `listen`, so gating it would gate them too.
        tracing::info!(
            limit_cores = limit,
            "CPU limit from {source}, and no quic.punch_listen: a ping flood can spend the quota punches need; give punches their own address to turn the CPU gate on (docs/OPERATIONS.md, \"A node with a CPU limit\")"
        );
        return None;
    }
    if q.cpu_gate <= 0.0 {
        return None;
    }
    let gated = limit * q.cpu_gate;
    metrics::gauge!("fencegate_cpu_limit_cores").set(limit);
    let period_ms = quota.as_ref().map(|q| q.period.as_secs_f64() * 1e3);
    let gate = Arc::new(edge::cpu_gate::CpuGate::new(gated, quota));
    tracing::info!(
        limit_cores = limit,
        gated_cores = gated,
        quota_period_ms = period_ms,
        "CPU limit from {source}: quic.listen's reads pause while the process uses more than quic.cpu_gate of it"
    );
    Some(gate)
}

/// The punch lane's runtime. Dropped without blocking, because the node
/// that owns it is dropped (or shut down) from async code, where a
/// runtime's blocking drop would panic; by then its connections have
/// drained (`Running::shutdown`) or the node is being torn down anyway.
#[derive(Debug)]
struct LaneRuntime(Option<tokio::runtime::Runtime>);

impl Drop for LaneRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn prometheus_upkeep(n: u64) {
    // Histograms in the exporter keep raw samples until rendered; drain them
    // regularly even when nobody scrapes, so memory stays bounded.
    if n % 10 == 0 {
        prometheus().run_upkeep();
    }
}

impl Running {
    /// Stops accepting, drains in-flight work, makes the final log commit
    /// and returns. Nothing acknowledged is lost: an ack is only ever sent
    /// after its record is durable.
    pub async fn shutdown(self, grace: Duration) {
        for ep in &self.endpoints {
            ep.set_server_config(None);
        }
        self.edge.shutdown.cancel();
        self.edge.tasks.close();
        if tokio::time::timeout(grace, self.edge.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain timed out; closing remaining connections");
        }
        for ep in &self.endpoints {
            ep.close(
                quinn::VarInt::from_u32(fencegate_schema::close::SHUTTING_DOWN),
                b"shutting down",
            );
        }
        for ep in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
        }
        let _ = self.admin_task.await;
        let _ = self.housekeeping.await;
        // Forwarders stop after the edge drained; each persists its cursor.
        self.forwarders.stop(Duration::from_secs(5)).await;
        let log = self.edge.log.clone();
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
    }

    /// The log position committed so far.
    pub fn committed(&self) -> Lsn {
        self.edge.log.committed()
    }

    /// Health of every configured sink's forwarder, in config order.
    pub fn sinks(&self) -> &[Arc<crate::sink::SinkHealth>] {
        self.forwarders.health()
    }
}

/// Runs a node until SIGTERM or Ctrl-C, then drains it.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let running = start(&cfg).await?;
    let tenants: Vec<&str> = cfg.tenants.iter().map(|(t, _)| t.as_str()).collect();
    eprintln!(
        "fencegate {} serving\n  QUIC   {} (ALPN fencegate/1){}\n  admin  http://{}\n  certificate SHA-256 {}\n  tenants {}\n  fences {} from {}\n  log    {}\n  sinks  {}\nIssue a device token with: fencegate token issue --tenant {} --device DEVICE",
        env!("CARGO_PKG_VERSION"),
        running.quic_addr,
        running
            .punch_addr
            .map(|a| format!("\n  punches only {a}"))
            .unwrap_or_default(),
        running.admin_addr,
        running.fingerprint,
        tenants.join(", "),
        running.edge.pipeline.fences().load().index().len(),
        cfg.fences.path.display(),
        cfg.log.dir.display(),
        sink_summary(&cfg),
        tenants.first().copied().unwrap_or("TENANT"),
    );
    wait_for_signal().await;
    eprintln!("shutting down: draining in-flight punches and committing the log");
    running.shutdown(Duration::from_secs(10)).await;
    eprintln!("stopped");
    Ok(())
}

fn sink_summary(cfg: &Config) -> String {
    if cfg.sinks.is_empty() {
        return "none (records stay in the log; see [[sinks]] in config/fencegate.toml)".into();
    }
    cfg.sinks
        .iter()
        .map(|s| format!("{} ({})", s.name, s.target.kind()))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
