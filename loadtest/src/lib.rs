//! fencegate-load: the load harness SREs prove a deployment with, and how
//! the project measures itself.
//!
//! A run takes a scenario (`loadtest/scenarios/*.toml`), builds a seeded
//! synthetic world (fences, employees, devices), points it at a gateway
//! (one started in-process on loopback, or remote ones: several nodes of a
//! deployment share the load, `spread`), offers the load
//! open-loop from every core, and reports what happened: a terminal
//! summary, `--json`, `--html`, an optional audit of the gateway's log
//! against every ack, and an optional raw-UDP baseline.
//!
//! Module map: `scenario` (files and overrides) → `world` (seeded
//! fences, employees, devices) → `target` (built-in or remote gateway) →
//! `spread` (which target each employee and device uses) →
//! `punch` / `fleet` (the loads) with `stats` (histograms) and `tail`
//! (ping→log latency) → `audit`, `probe` (gateway counters, memory),
//! `baseline` → `report` / `html`.

pub mod audit;
pub mod baseline;
pub mod clock;
pub mod fleet;
pub mod html;
pub mod ids;
pub mod probe;
pub mod punch;
pub mod ramp;
pub mod reconcile;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod spread;
pub mod stats;
pub mod tail;
pub mod target;
pub mod world;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fencegate::client::{Connector, ConnectorOptions};
use fencegate::log::Lsn;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::audit::Book;
use crate::fleet::{FleetCtx, Schedule};
use crate::ids::RunIds;
use crate::probe::GatewayCounts;
use crate::punch::{PunchCtx, PunchSchedule};
use crate::report::{MemoryReport, PingReport, PunchReport, Report};
use crate::scenario::{Handshake, Scenario};
use crate::spread::{Link, LinkCounts, Spread, TargetReport};
use crate::stats::Series;
use crate::tail::{Tail, TailSource};
use crate::target::{RemoteSpec, Target};
use crate::world::{Curve, World};

/// The baselines `--baseline` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselineKind {
    /// Raw loopback UDP datagrams at the scenario's datagram size.
    RawUdp,
}

/// Everything a run needs besides the scenario.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Remote gateways, each with its own log folder and `/metrics` (the
    /// nodes of one deployment share the load, see `spread`); none starts
    /// one in-process on loopback.
    pub remotes: Vec<RemoteSpec>,
    /// Share of the employees (0 to 1) whose later punches go to another
    /// target than their first (cross-node repeats and resends).
    pub move_share: f64,
    /// The gateway's process id, to sample its memory.
    pub gateway_pid: Option<u32>,
    /// The target's fences (GeoJSON); default: the scenario's synthetic ones.
    pub fences: Option<PathBuf>,
    /// Where the built-in gateway keeps its (temporary) data.
    pub data_dir: Option<PathBuf>,
    /// Reconcile acks with the log afterwards.
    pub audit: bool,
    /// Also reconcile with this JetStream stream (and, for the built-in
    /// gateway, forward to it through a NATS sink).
    pub jetstream: Option<audit::JetStreamSpec>,
    /// Measure a baseline first.
    pub baseline: Option<BaselineKind>,
    /// Draw the progress display.
    pub progress: bool,
    /// Client UDP endpoints (default: 2 per core).
    pub client_endpoints: Option<usize>,
    /// Nice value of the harness's fleet threads when a scenario runs
    /// punches beside a fleet (0: none). The flood stands for other
    /// devices, which in a deployment take no CPU from the gateway; on one
    /// machine it competes with the gateway's punch lane and the
    /// harness's own punches (docs/LOADTEST.md, "Punches beside a fleet").
    pub fleet_nice: i32,
    /// Nice value of every harness client thread, punches and fleet alike
    /// (0: none; a fleet beside punches takes the larger of this and
    /// `fleet_nice`). The clients stand for devices, which in a deployment
    /// are other machines: on one machine their handshakes take the CPU
    /// the built-in gateway serves them with (docs/LOADTEST.md, "Clients
    /// that are devices").
    pub client_nice: i32,
    /// Salt for the run's ids (default: random).
    pub run_salt: Option<u32>,
}

/// The fences the run uses: `--fences`, or the scenario's synthetic ones.
pub fn fences_geojson(s: &Scenario, opts: &Options) -> anyhow::Result<String> {
    match &opts.fences {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("--fences {}: cannot read it", f.display())),
        None => Ok(world::synthetic_geojson(s)),
    }
}

/// Runs scenario `s` as `opts` says and returns the report.
pub fn run(s: &Scenario, opts: &Options) -> anyhow::Result<Report> {
    let geojson = fences_geojson(s, opts)?;
    let world = Arc::new(World::build(s, &geojson)?);
    anyhow::ensure!(
        (0.0..=1.0).contains(&opts.move_share),
        "--move-share {}: give a share from 0 to 1 (0.2: a fifth of the employees punch again on another target)",
        opts.move_share
    );
    anyhow::ensure!(
        opts.move_share == 0.0 || opts.remotes.len() >= 2,
        "--move-share needs at least two --target: employees move between targets"
    );
    let mut targets = if opts.remotes.is_empty() {
        vec![Target::start_builtin(
            s,
            &geojson,
            opts.data_dir.as_deref(),
            opts.jetstream.as_ref(),
        )?]
    } else {
        opts.remotes
            .iter()
            .map(|spec| Target::remote(spec, s))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let all_logs = targets.iter().all(|t| t.log_dir.is_some());
    if opts.audit && !all_logs && opts.jetstream.is_none() {
        anyhow::bail!(
            "--audit needs what the gateways stored: give --log-dir for every --target (the gateway's <data_dir>/log, on this host or mounted read-only) or --nats-url (their JetStream sink)"
        );
    }
    let result = match &s.ramp {
        Some(r) => ramp::run(s, r, opts, &world, &targets),
        None => run_on(s, opts, &world, &targets),
    };
    for t in &mut targets {
        t.shutdown();
    }
    result
}

/// Runs scenario `s` once against `targets` (a ramp runs it once a step).
pub(crate) fn run_on(
    s: &Scenario,
    opts: &Options,
    world: &Arc<World>,
    targets: &[Target],
) -> anyhow::Result<Report> {
    let builtin = targets.len() == 1 && targets[0].is_builtin();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let ids = Arc::new(RunIds::new(opts.run_salt.unwrap_or_else(rand::random)));

    let baseline = match opts.baseline {
        None => None,
        Some(BaselineKind::RawUdp) => {
            let size = match &s.fleet {
                Some(f) if s.punch.is_none() => fleet::datagram_size(f.batch),
                // A punch frame is about this size (see docs/PROTOCOL.md §12).
                _ => 160,
            };
            Some(baseline::raw_udp(size, Duration::from_secs(2))?)
        }
    };

    let fleet_nice = if s.punch.is_some() && s.fleet.is_some() {
        opts.fleet_nice.max(opts.client_nice)
    } else {
        opts.client_nice
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("load")
        .on_thread_start(fencegate::edge::priority::shared_lane_hook(fleet_nice))
        .enable_all()
        .build()
        .context("cannot start the harness runtime")?;
    // Punches beside a fleet run on a runtime thread and client sockets of
    // their own: the phones that punch are other devices than the fleet's
    // trackers, and on the shared workers a punch's tasks and packets
    // queued behind thousands of device tasks and the flood's endpoint
    // drivers, so the harness measured its own queue (docs/LOADTEST.md,
    // "Punches beside a fleet").
    let punch_lane = if s.punch.is_some() && s.fleet.is_some() {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("load-punch")
                .on_thread_start(fencegate::edge::priority::shared_lane_hook(
                    opts.client_nice,
                ))
                .enable_all()
                .build()
                .context("cannot start the harness's punch runtime")?,
        )
    } else {
        None
    };
    let endpoints = opts.client_endpoints.unwrap_or(cores * 2).max(1);
    let handshake = s.punch.as_ref().map_or(Handshake::Full, |p| p.handshake);
    // `endpoints` client sockets per target.
    let links: Arc<[Link]> = rt
        .block_on(async {
            targets
                .iter()
                .map(|target| {
                    let connect = |addr| {
                        (0..endpoints)
                            .map(|_| {
                                let mut o = ConnectorOptions::new(
                                    addr,
                                    &target.server_name,
                                    target.trust.clone(),
                                );
                                o.resumption = handshake != Handshake::Full;
                                o.zero_rtt = handshake == Handshake::ZeroRtt;
                                o.ticket_pool = 65_536;
                                o.socket_buffer = 4 << 20;
                                o.keep_alive = Some(Duration::from_secs(10));
                                Connector::with_options(&o)
                            })
                            .collect::<anyhow::Result<Vec<_>>>()
                    };
                    let connectors = connect(target.addr)?;
                    let punch_connectors = {
                        // quinn drives an endpoint on the runtime it is
                        // made in.
                        let _lane = punch_lane.as_ref().map(|r| r.enter());
                        match (target.punch_addr, &punch_lane) {
                            (Some(a), _) => connect(a)?,
                            (None, Some(_)) => connect(target.addr)?,
                            (None, None) => connectors.clone(),
                        }
                    };
                    Ok(Link {
                        name: target.addr.to_string(),
                        connectors,
                        punch_connectors,
                        issuer: target.issuer(),
                        counts: LinkCounts::default(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?
        .into();
    let spread = Spread::new(targets.len(), s.seed, opts.move_share);

    let js_from = match (&opts.jetstream, opts.audit) {
        (Some(spec), true) => Some(rt.block_on(async {
            if builtin {
                audit::ensure_stream(spec).await?;
            }
            audit::jetstream_position(spec).await
        })?),
        _ => None,
    };
    let started_unix_ms = clock::unix_ms();
    let log_from: Vec<Lsn> = targets.iter().map(log_position).collect();
    let book = Arc::new(Book::default());
    let bar = progress_bar(opts.progress);
    let pid = opts.gateway_pid;
    let peak_rss = Arc::new(AtomicU64::new(0));

    let outcome = rt.block_on(async {
        let before = scrape_all(targets).await?;
        let t0 = clock::now();
        let t0_unix = clock::unix_ms();
        let duration = Duration::from_secs_f64(s.duration_s);
        let drain = Duration::from_secs_f64(s.drain_s);

        // Memory sampler: the peak over the run.
        let sampler = {
            let peak = peak_rss.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(r) = probe::rss_bytes(pid) {
                        peak.fetch_max(r, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };

        // Fleet first: its devices connect before anyone punches.
        let mut fleet_state = None;
        if let Some(f) = &s.fleet {
            let ctx = Arc::new(FleetCtx {
                links: links.clone(),
                spread,
                world: world.clone(),
                seed: s.seed,
                route_share: f.route_share,
                speed_mps: f.speed_mps,
                ids: ids.clone(),
                series: Arc::new(Series::new(t0)),
                connect: Arc::new(Series::new(t0)),
                send_late: Arc::new(Series::new(t0)),
                counts: fleet::FleetCounts::default(),
            });
            bar.set_message(format!("connecting {} devices", f.devices));
            let rss_before = probe::rss_bytes(pid);
            let connect_deadline = clock::now()
                + Duration::from_secs_f64(f.devices as f64 / f.connect_rate)
                + Duration::from_secs(30);
            let tc = clock::now();
            let live = live_task(&bar, None, Some(ctx.connect.clone()), t0, "connect");
            let clients = fleet::connect_all(&ctx, f.devices, f.connect_rate, connect_deadline).await;
            live.abort();
            let connect_s = tc.elapsed().as_secs_f64();
            // Let handshake buffers go before measuring idle connections.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let rss_connected = probe::rss_bytes(pid);
            let connected = clients.iter().filter(|c| c.is_some()).count() as u64;
            let memory = match (rss_before, rss_connected) {
                (Some(a), Some(b)) if connected > 0 => Some(MemoryReport {
                    source: match pid {
                        Some(p) => format!("gateway process {p}"),
                        None if builtin => {
                            "this process: harness and built-in gateway together (an upper bound; use --gateway-pid with a separate gateway)".into()
                        }
                        None => "this process: the harness only (give --gateway-pid for the gateway's)".into(),
                    },
                    rss_before: a,
                    rss_connected: b,
                    connections: connected,
                    per_connection_bytes: b.saturating_sub(a) as f64 / connected as f64,
                    rss_peak: 0,
                }),
                _ => None,
            };
            let start_ms = clock::now().saturating_duration_since(t0).as_millis() as i64 + 200;
            let sched = Arc::new(Schedule::new(
                t0,
                t0_unix,
                start_ms,
                duration,
                f,
                s.seed,
            ));
            // Every target's log, when each is readable (a device's pings
            // are all in its target's log).
            let tail = if targets.iter().all(|t| tail_source(t).is_some()) {
                let mut tails = Vec::with_capacity(targets.len());
                for t in targets {
                    let src = tail_source(t).expect("checked above");
                    tails.push(Tail::start(src, log_position(t), sched.clone(), ids.clone(), ctx.series.clone())?);
                }
                Some(tails)
            } else {
                None
            };
            fleet_state = Some((ctx, sched, clients, tail, memory, connect_s));
        }

        let punch_ctx = s.punch.as_ref().map(|p| {
            Arc::new(PunchCtx {
                links: links.clone(),
                spread,
                world: world.clone(),
                seed: s.seed,
                mix: p.mix.clone(),
                speed: s.punch_speed().expect("a punch load has a speed"),
                timeout: Duration::from_secs_f64(p.timeout_s),
                ids: ids.clone(),
                series: Arc::new(Series::new(t0)),
                admitted: Arc::new(Series::new(t0)),
                ack_times: Default::default(),
                offer_window: Default::default(),
                connect: Arc::new(Series::new(t0)),
                book: book.clone(),
                outcomes: Default::default(),
            })
        });

        // Both loads start together at `load_t0`.
        let load_t0 = match &fleet_state {
            Some((_, sched, ..)) => t0 + Duration::from_millis(sched.start_ms as u64),
            None => clock::now(),
        };
        let offer_end = load_t0 + duration;
        let hard_end = offer_end + drain;
        bar.set_length(duration.as_secs().max(1));
        let live = live_task(
            &bar,
            punch_ctx.as_ref().map(|c| c.series.clone()),
            fleet_state.as_ref().map(|f| f.0.series.clone()),
            load_t0,
            "load",
        );

        let punch_fut = {
            let ctx = punch_ctx.clone();
            let sched = s.punch.as_ref().map(|p| PunchSchedule {
                employees: p.employees,
                curve: Curve::new(&p.cdf, p.window_s),
                t0: load_t0,
                offer_end,
                hard_end,
                max_in_flight: p.max_in_flight,
            });
            let lane = punch_lane.as_ref().map(|r| r.handle().clone());
            async move {
                if let (Some(ctx), Some(sched)) = (ctx, sched) {
                    match lane {
                        Some(lane) => {
                            match lane.spawn(punch::run(ctx, sched)).await {
                                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                                // Cancelled: the lane's runtime is only
                                // dropped after this future ends.
                                _ => {}
                            }
                        }
                        None => punch::run(ctx, sched).await,
                    }
                }
            }
        };
        let mut fleet_taken = fleet_state.take();
        let clients = fleet_taken.as_mut().map(|f| std::mem::take(&mut f.2));
        let fleet_fut = {
            let f = fleet_taken.as_ref().map(|f| (f.0.clone(), f.1.clone()));
            async move {
                if let (Some((ctx, sched)), Some(clients)) = (f, clients) {
                    let keep: Vec<_> = clients.iter().flatten().cloned().collect();
                    fleet::ping_all(&ctx, &sched, clients).await;
                    keep
                } else {
                    Vec::new()
                }
            }
        };
        let gateway_cpu = || {
            (opts.gateway_pid.is_some() || builtin)
                .then(|| probe::gateway_cpu_s(opts.gateway_pid))
                .flatten()
        };
        let cpu_from = (gateway_cpu(), clock::now());
        let ((), fleet_clients) = tokio::join!(punch_fut, fleet_fut);
        let cpu_cores = match (cpu_from, gateway_cpu()) {
            ((Some(a), t), Some(b)) => Some((b - a) / t.elapsed().as_secs_f64().max(1e-3)),
            _ => None,
        };
        live.abort();

        // Pings are not acknowledged: give the log a moment to commit what
        // is in flight before the tail stops reading.
        let mut fleet_report = None;
        if let Some((ctx, sched, _, tail, memory, connect_s)) = fleet_taken {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let tail = match tail {
                Some(tails) => Some(
                    tokio::task::spawn_blocking(move || {
                        let mut sum = tail::TailCounts::default();
                        for t in tails {
                            let c = t.finish()?;
                            sum.pings += c.pings;
                            sum.events += c.events;
                        }
                        anyhow::Ok(sum)
                    })
                    .await??,
                ),
                None => None,
            };
            for c in &fleet_clients {
                let open = c.connection().close_reason().is_none();
                c.close();
                if open {
                    // A lost one was counted when the device saw it go.
                    ctx.count_on_wire(c);
                }
            }
            fleet_report = Some((ctx, sched, tail, memory, connect_s));
        }
        let after = match &before {
            // Datagrams still unread when a connection closes, and kernel
            // drops (sampled once a second), are counted after the close.
            Some(b) if fleet_report.is_some() => settled_scrape(targets, b).await?,
            _ => scrape_all(targets).await?,
        };
        sampler.abort();
        bar.finish_and_clear();
        for c in links
            .iter()
            .flat_map(|l| l.connectors.iter().chain(&l.punch_connectors))
        {
            c.endpoint().close(quinn::VarInt::from_u32(0), b"done");
        }
        anyhow::Ok((before, after, punch_ctx, fleet_report, cpu_cores))
    })?;
    let (before, after, punch_ctx, fleet_report, cpu_cores) = outcome;
    let audit_jetstream = match (&opts.jetstream, js_from) {
        (Some(spec), Some(from)) => Some(rt.block_on(audit::audit_jetstream(
            spec,
            from,
            &book,
            ids.salt,
            &ids.prefix,
        ))?),
        _ => None,
    };
    rt.shutdown_timeout(Duration::from_secs(2));

    let gateway = match (&before, &after) {
        (Some(b), Some(a)) => Some(GatewayCounts::between(b, a)),
        _ => None,
    };

    let punches = punch_ctx.map(|ctx| punch_report(s, &ctx));
    let pings = fleet_report.map(|(ctx, sched, tail, memory, connect_s)| {
        let mut p = ping_report(s, &ctx, &sched, tail, gateway.as_ref(), connect_s);
        p.gateway_cpu_cores = cpu_cores;
        (p, memory)
    });
    let (pings, mut memory) = match pings {
        Some((p, m)) => (Some(p), m),
        None => (None, None),
    };
    if let Some(m) = &mut memory {
        m.rss_peak = peak_rss.load(Ordering::Relaxed);
    }

    // Every target's log or none: a punch acknowledged by a node whose
    // log is not read would count as lost.
    let logs: Option<Vec<(&std::path::Path, Lsn)>> = targets
        .iter()
        .zip(&log_from)
        .map(|(t, from)| t.log_dir.as_deref().map(|d| (d, *from)))
        .collect();
    let audit = match (logs, opts.audit) {
        (Some(logs), true) => Some(audit::audit_logs(&logs, &book, ids.salt, &ids.prefix)?),
        _ => None,
    };
    let audits = || audit.iter().chain(audit_jetstream.iter());
    let lost = audits().map(|a| a.lost).max();
    let duplicated = audits().map(|a| a.duplicated).max();

    let mut errors = std::collections::BTreeMap::new();
    for e in punches
        .iter()
        .flat_map(|p| p.errors.iter())
        .chain(pings.iter().flat_map(|p| p.errors.iter()))
    {
        *errors.entry(e.0.clone()).or_insert(0) += e.1;
    }
    let (primary, duration_s, offered, acked, acked_basis, latency) = match (&punches, &pings) {
        (Some(p), _) => (
            "punches",
            p.absorbed_s,
            p.offered,
            p.acked,
            "punch acks",
            p.latency_ms,
        ),
        (None, Some(p)) => {
            let (acked, basis) = match (p.gateway_processed, p.logged) {
                (Some(n), _) => (n, "gateway-processed"),
                (None, Some(n)) => (n, "logged"),
                (None, None) => (p.sent.fixes_sent, "sent"),
            };
            (
                "pings",
                p.ping_s,
                p.offered,
                acked,
                basis,
                p.latency_ms.unwrap_or_default(),
            )
        }
        (None, None) => unreachable!("a scenario has a punch or a fleet load"),
    };
    let achieved_rate = if duration_s > 0.0 {
        acked as f64 / duration_s
    } else {
        0.0
    };
    let baseline_ratio = baseline.as_ref().map(|b| {
        let gateway_rate = match (&punches, &pings) {
            (Some(p), _) => p.achieved_rate,
            (None, Some(_)) => achieved_rate / f64::from(s.fleet.as_ref().map_or(1, |f| f.batch)),
            (None, None) => 0.0,
        };
        gateway_rate / b.datagrams_per_s.max(1.0)
    });
    Ok(Report {
        scenario: s.name.clone(),
        description: s.description.clone(),
        seed: s.seed,
        run_id: ids.prefix.trim_end_matches('-').to_owned(),
        target: targets
            .iter()
            .map(|t| t.description.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        targets: links.iter().map(TargetReport::of).collect(),
        started_unix_ms,
        primary,
        duration_s,
        offered,
        acked,
        acked_basis,
        achieved_rate,
        latency_ms: latency,
        errors,
        lost,
        duplicated,
        baseline_ratio,
        punches,
        pings,
        gateway,
        memory,
        audit,
        audit_jetstream,
        baseline,
        machine: report::Machine::here(endpoints),
        settings: s.clone(),
        ramp: None,
    })
}

/// The targets' counters, summed over the targets (`None` unless every
/// target has a source: a partial sum would read as the whole).
async fn scrape_all(targets: &[Target]) -> anyhow::Result<Option<probe::Scrape>> {
    let mut sum: Option<probe::Scrape> = None;
    for t in targets {
        let Some(one) = probe::scrape(&t.metrics).await? else {
            return Ok(None);
        };
        sum = Some(match sum {
            None => one,
            Some(s) => s.plus(&one),
        });
    }
    Ok(sum)
}

/// The gateways' counters once the run's connections have ended there:
/// waits 1.2 s (one kernel-drop sample), then until the open connections
/// are back to `before`'s, at most 5 s more.
async fn settled_scrape(
    targets: &[Target],
    before: &probe::Scrape,
) -> anyhow::Result<Option<probe::Scrape>> {
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let open_before = before.get("fencegate_connections");
    let mut last = None;
    for _ in 0..50 {
        last = scrape_all(targets).await?;
        match &last {
            Some(a) if a.get("fencegate_connections") > open_before => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => break,
        }
    }
    Ok(last)
}

/// Where new records will appear in the target's log.
fn log_position(target: &Target) -> Lsn {
    match (target.builtin_log(), &target.log_dir) {
        (Some(log), _) => log.committed(),
        (None, Some(dir)) => audit::log_start(dir),
        (None, None) => Lsn(0),
    }
}

fn tail_source(target: &Target) -> Option<TailSource> {
    match (target.builtin_log(), &target.log_dir) {
        (Some(log), _) => Some(TailSource::InProcess(log)),
        (None, Some(dir)) => Some(TailSource::Dir(dir.clone())),
        (None, None) => None,
    }
}

fn punch_report(s: &Scenario, ctx: &PunchCtx) -> PunchReport {
    let series = ctx.series.report();
    let p = s.punch.as_ref().expect("a punch load");
    // From the first intended send (the curve's first employee) to the last ack.
    let absorbed_s = series.span_s;
    let outcomes = ctx
        .outcomes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut errors = series.errors.clone();
    for (k, n) in ctx.connect.report().errors {
        *errors.entry(k).or_insert(0) += n;
    }
    PunchReport {
        offered: series.offered,
        acked: series.done,
        absorbed_s,
        achieved_rate: if absorbed_s > 0.0 {
            series.done as f64 / absorbed_s
        } else {
            0.0
        },
        speed: ctx.speed,
        handshake: format!("{:?}", p.handshake).to_lowercase(),
        goodput_rate: punch::goodput_rate(ctx),
        latency_ms: series.latency_ms,
        admitted_latency_ms: ctx.admitted.report().latency_ms,
        connect_ms: ctx.connect.report().latency_ms,
        errors,
        outcomes,
        series,
    }
}

fn ping_report(
    s: &Scenario,
    ctx: &FleetCtx,
    sched: &Schedule,
    tail: Option<tail::TailCounts>,
    gateway: Option<&GatewayCounts>,
    connect_s: f64,
) -> PingReport {
    let f = s.fleet.as_ref().expect("a fleet load");
    let series = ctx.series.report();
    let connect = ctx.connect.report();
    let ping_s = (sched.end_ms - sched.start_ms) as f64 / 1_000.0;
    let mut errors = series.errors.clone();
    for (k, n) in &connect.errors {
        *errors.entry(k.clone()).or_insert(0) += n;
    }
    let processed = gateway.map(|g| g.pings_processed);
    let sent = ctx.outcomes(f.devices, connect_s);
    PingReport {
        reconciliation: gateway.and_then(|g| reconcile::Reconciliation::new(f.batch, &sent, g)),
        gateway_cpu_cores: None,
        offered: series.offered,
        ping_s,
        offered_rate: series.offered as f64 / ping_s,
        sent,
        gateway_processed: processed,
        processed_rate: processed.map(|n| n as f64 / ping_s),
        logged: tail.map(|t| t.pings),
        logged_rate: tail.map(|t| t.pings as f64 / ping_s),
        fence_events: tail.map(|t| t.events),
        latency_ms: tail.map(|_| series.latency_ms),
        connect_ms: connect.latency_ms,
        send_late_ms: ctx.send_late.report().latency_ms,
        errors,
        series,
    }
}

fn progress_bar(enabled: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(1),
        if enabled {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:24}] {pos}/{len}s {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

/// Redraws the progress line every half second from the live series.
fn live_task(
    bar: &ProgressBar,
    punches: Option<Arc<Series>>,
    pings: Option<Arc<Series>>,
    t0: Instant,
    phase: &'static str,
) -> tokio::task::JoinHandle<()> {
    let bar = bar.clone();
    tokio::spawn(async move {
        loop {
            let now = clock::now();
            bar.set_position(now.saturating_duration_since(t0).as_secs());
            let mut parts = vec![phase.to_owned()];
            let mut errors = std::collections::BTreeMap::new();
            for (name, s) in [("punch", &punches), ("ping", &pings)] {
                let Some(s) = s else { continue };
                let l = s.live(now);
                parts.push(format!(
                    "{name} offered {}/s done {}/s p99 {}",
                    l.offered_rate,
                    l.done_rate,
                    l.p99_ms.map_or("-".into(), |p| format!("{p:.1}ms"))
                ));
                for (k, n) in l.errors {
                    *errors.entry(k).or_insert(0u64) += n;
                }
            }
            if !errors.is_empty() {
                let mut e: Vec<(String, u64)> = errors.into_iter().collect();
                e.sort_by_key(|x| std::cmp::Reverse(x.1));
                let top: Vec<String> = e.iter().take(3).map(|(k, n)| format!("{k} {n}")).collect();
                parts.push(format!("errors: {}", top.join(", ")));
            }
            bar.set_message(parts.join(" · "));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}
