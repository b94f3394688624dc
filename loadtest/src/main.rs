//! The `fencegate-load` binary: parses the command line, runs the scenario
//! (`fencegate_load::run`), prints the summary, writes `--json` and
//! `--html`, and exits non-zero when the audit finds a lost or duplicated
//! record.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use fencegate_load::audit::JetStreamSpec;
use fencegate_load::scenario::{Handshake, Overrides, Scenario};
use fencegate_load::target::RemoteSpec;
use fencegate_load::{BaselineKind, Options};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code when the audit finds lost, duplicated or mismatched records.
const EXIT_AUDIT_FAILED: u8 = 2;

/// Load harness for fencegate gateways: 9:00 peak and fleet scenarios,
/// audit, reports. See docs/LOADTEST.md.
#[derive(Debug, Parser)]
#[command(name = "fencegate-load", version)]
struct Cli {
    /// Scenario file (loadtest/scenarios/*.toml).
    #[arg(long, value_name = "FILE")]
    scenario: PathBuf,
    /// Seconds of offered load; a punch curve is compressed to fit unless
    /// --speed is given.
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Number of employees (punch loads).
    #[arg(long, value_name = "N")]
    employees: Option<u64>,
    /// Number of devices (fleet loads).
    #[arg(long, value_name = "N")]
    devices: Option<u64>,
    /// Time compression of the punch curve.
    #[arg(long, value_name = "X")]
    speed: Option<f64>,
    /// The gateway's QUIC address (host:port). Without it the harness
    /// starts its own gateway on loopback. Give it once per node to spread
    /// the load over several nodes of one deployment: each employee and
    /// device sticks to one (by a hash of its index).
    #[arg(long, value_name = "ADDR")]
    target: Vec<String>,
    /// Share of the employees (0 to 1) whose repeat and lost-ack resend go
    /// to another --target than their first punch: cross-node repeats and
    /// resends (needs two or more targets).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    move_share: f64,
    /// Reconcile every ack with the gateway's log after the run; exit 2 if
    /// anything acknowledged is lost or duplicated.
    #[arg(long)]
    audit: bool,
    /// Also measure a baseline in the same run and report the gateway's
    /// rate as a ratio of it.
    #[arg(long, value_enum, value_name = "KIND")]
    baseline: Option<BaselineKind>,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report with charts.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,

    /// Server name for SNI and certificate checks (default: the host of
    /// --target, or "localhost" for an IP address). Once for every target,
    /// or once per --target in the same order (as every per-target flag).
    #[arg(long, value_name = "NAME", requires = "target")]
    server_name: Vec<String>,
    /// PEM file of the CA that signed the gateway's certificate (per
    /// target, see --server-name).
    #[arg(long, value_name = "FILE", requires = "target")]
    ca_file: Vec<PathBuf>,
    /// SHA-256 fingerprint of the gateway's certificate, as `fencegate
    /// serve` prints it (pinning; for dev certificates; per target).
    #[arg(long, value_name = "FP", requires = "target")]
    fingerprint: Vec<String>,
    /// Tenant to load as (default: the scenario's world.tenant).
    #[arg(long, value_name = "T", requires = "target")]
    tenant: Option<String>,
    /// The tenant's device-token key file (the gateway's [[tenants]]
    /// key_file); the harness issues each device its token with it. The
    /// nodes of one deployment share it.
    #[arg(long, value_name = "FILE", requires = "target")]
    tenant_key_file: Option<PathBuf>,
    /// The gateway's log folder, for --audit and ping→log latency (per
    /// target: with several, give one per --target).
    #[arg(long, value_name = "DIR", requires = "target")]
    log_dir: Vec<PathBuf>,
    /// The gateway's admin metrics URL (http://host:9464/metrics), for its
    /// own counters in the report (per target; summed over them).
    #[arg(long, value_name = "URL", requires = "target")]
    metrics_url: Vec<String>,
    /// The gateway's punch-only address (its `quic.punch_listen`, per
    /// target): punches go there, pings and backlogs to --target.
    #[arg(long, value_name = "HOST:PORT", requires = "target")]
    punch_target: Vec<String>,
    /// The tenant's fences as GeoJSON, so inside/outside punches and routes
    /// aim at the gateway's real fences (default: the scenario's synthetic
    /// fences, which a remote gateway must have loaded).
    #[arg(long, value_name = "FILE")]
    fences: Option<PathBuf>,
    /// The gateway's process id, to measure its memory per connection.
    #[arg(long, value_name = "PID")]
    gateway_pid: Option<u32>,

    /// Also audit the gateway's JetStream stream on this NATS server (and
    /// give the built-in gateway a NATS sink to it).
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// The JetStream stream the gateway's NATS sink writes.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "FENCEGATE",
        requires = "nats_url"
    )]
    nats_stream: String,
    /// The NATS sink's subject prefix.
    #[arg(
        long,
        value_name = "P",
        default_value = "fencegate",
        requires = "nats_url"
    )]
    nats_prefix: String,
    /// Seconds the JetStream audit waits for the sink to deliver every
    /// acknowledged punch.
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    audit_wait: f64,

    /// Connection set-up for punches (overrides punch.handshake).
    #[arg(long, value_enum)]
    handshake: Option<Handshake>,
    /// Seed of the synthetic world (overrides the scenario's).
    #[arg(long)]
    seed: Option<u64>,
    /// Client UDP endpoints (sockets) to spread connections over
    /// (default: 2 per core).
    #[arg(long, value_name = "N")]
    client_endpoints: Option<usize>,
    /// With punches beside a fleet: the nice value (0 to 19) of the
    /// harness's fleet threads, so that its flood, which stands for other
    /// devices, does not take the CPU from the punches it measures. 0
    /// keeps them equal.
    #[arg(long, value_name = "NICE", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    fleet_nice: i32,
    /// The nice value (0 to 19) of every harness client thread, so that
    /// the clients, which stand for devices on other machines, leave the
    /// CPU to the built-in gateway first. 0 keeps them equal.
    #[arg(long, value_name = "NICE", default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    client_nice: i32,
    /// Folder for the built-in gateway's temporary data (default: the
    /// system temp folder). Put it on the disk you want fsyncs measured on.
    #[arg(long, value_name = "DIR", conflicts_with = "target")]
    data_dir: Option<PathBuf>,
    /// Write the scenario's synthetic fences as GeoJSON to FILE and exit
    /// (to load them into a remote gateway for a load-test tenant).
    #[arg(long, value_name = "FILE")]
    write_fences: Option<PathBuf>,
    /// Write attendance rules registering the synthetic fences' Wi-Fi
    /// access points for the scenario's tenant to FILE and exit (merge them
    /// into a remote gateway's rules so Wi-Fi punches verify).
    #[arg(long, value_name = "FILE")]
    write_rules: Option<PathBuf>,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    // First: connection churn on huge pages costs a 2 MiB zeroing per
    // fault (fencegate::hugepages).
    if let Err(e) = fencegate::hugepages::disable_transparent_huge_pages() {
        eprintln!(
            "fencegate-load: warning: cannot turn transparent huge pages off ({e}); connection set-ups will cost more CPU"
        );
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fencegate-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One value of a per-target flag for each of `n` targets: the flag given
/// never (none), once (the same for all), or once per `--target` in order.
fn per_target<T: Clone>(flag: &str, values: &[T], n: usize) -> anyhow::Result<Vec<Option<T>>> {
    match values.len() {
        0 => Ok(vec![None; n]),
        1 => Ok(vec![Some(values[0].clone()); n]),
        k if k == n => Ok(values.iter().cloned().map(Some).collect()),
        k => anyhow::bail!(
            "--{flag} is given {k} times for {n} --target(s); give it once (the same for every target) or once per --target, in the same order"
        ),
    }
}

/// The `--target`s with their per-target settings.
fn remote_specs(cli: &Cli) -> anyhow::Result<Vec<RemoteSpec>> {
    let n = cli.target.len();
    let names = per_target("server-name", &cli.server_name, n)?;
    let cas = per_target("ca-file", &cli.ca_file, n)?;
    let fps = per_target("fingerprint", &cli.fingerprint, n)?;
    let logs = per_target("log-dir", &cli.log_dir, n)?;
    let metrics = per_target("metrics-url", &cli.metrics_url, n)?;
    let punch = per_target("punch-target", &cli.punch_target, n)?;
    anyhow::ensure!(
        n <= 1 || cli.punch_target.len() != 1,
        "--punch-target is given once for {n} targets: each node has its own punch address; give one per --target, in the same order"
    );
    anyhow::ensure!(
        n <= 1 || cli.log_dir.len() != 1,
        "--log-dir is given once for {n} targets: each node has its own log folder; give one per --target, in the same order"
    );
    anyhow::ensure!(
        n <= 1 || cli.metrics_url.len() != 1,
        "--metrics-url is given once for {n} targets: each node has its own /metrics; give one per --target, in the same order"
    );
    Ok(cli
        .target
        .iter()
        .enumerate()
        .map(|(i, t)| RemoteSpec {
            server_name: names[i].clone(),
            ca_file: cas[i].clone(),
            fingerprint: fps[i].clone(),
            tenant: cli.tenant.clone(),
            tenant_key_file: cli.tenant_key_file.clone(),
            log_dir: logs[i].clone(),
            metrics_url: metrics[i].clone(),
            punch_target: punch[i].clone(),
            ..RemoteSpec::new(t.clone())
        })
        .collect())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ov = Overrides {
        duration_s: cli.duration,
        employees: cli.employees,
        devices: cli.devices,
        speed: cli.speed,
        handshake: cli.handshake,
        seed: cli.seed,
    };
    let scenario = Scenario::load(&cli.scenario, &ov)?;
    if let Some(out) = &cli.write_fences {
        std::fs::write(out, fencegate_load::world::synthetic_geojson(&scenario))
            .with_context(|| format!("--write-fences {}: cannot write it", out.display()))?;
        eprintln!(
            "wrote {} synthetic fences of tenant '{}' to {}",
            scenario.world.fences,
            scenario.world.tenant,
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(out) = &cli.write_rules {
        std::fs::write(out, fencegate_load::world::synthetic_rules(&scenario))
            .with_context(|| format!("--write-rules {}: cannot write it", out.display()))?;
        eprintln!(
            "wrote attendance rules of tenant '{}' ({} sites) to {}",
            scenario.world.tenant,
            scenario.world.fences,
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let remotes = remote_specs(&cli)?;
    let opts = Options {
        remotes,
        move_share: cli.move_share,
        gateway_pid: cli.gateway_pid,
        fences: cli.fences.clone(),
        data_dir: cli.data_dir.clone(),
        audit: cli.audit,
        jetstream: cli.nats_url.as_ref().map(|url| JetStreamSpec {
            url: url.clone(),
            stream: cli.nats_stream.clone(),
            subject_prefix: cli.nats_prefix.clone(),
            tenant: cli
                .tenant
                .clone()
                .unwrap_or_else(|| scenario.world.tenant.clone()),
            wait: Duration::from_secs_f64(cli.audit_wait.max(0.0)),
        }),
        baseline: cli.baseline,
        progress: !cli.quiet,
        client_endpoints: cli.client_endpoints,
        fleet_nice: cli.fleet_nice,
        client_nice: cli.client_nice,
        run_salt: None,
    };
    let report = fencegate_load::run(&scenario, &opts)?;
    print!("{}", report.summary());
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("--json {}: cannot write it", path.display()))?;
    }
    if let Some(path) = &cli.html {
        std::fs::write(path, fencegate_load::html::render(&report))
            .with_context(|| format!("--html {}: cannot write it", path.display()))?;
    }
    if report.audit_passed() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "fencegate-load: the audit failed: acknowledged records are lost, duplicated or differ from their acks"
        );
        Ok(ExitCode::from(EXIT_AUDIT_FAILED))
    }
}
