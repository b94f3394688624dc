//! The `fencegate` binary: serve, check configs and fences, issue device
//! tokens, locate points in batch, read the durable log, and print the
//! certificate fingerprint devices pin.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fencegate::cmd;
use fencegate::config::Config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// fencegate: a QUIC geofence ingestion gateway for attendance punches and
/// fleet location pings.
#[derive(Debug, Parser)]
#[command(name = "fencegate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (embedded defaults when no --config is given).
    Serve {
        /// Configuration file (see config/fencegate.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// This node's name in every record, overriding `node.name`: lets
        /// identical replicas (a Kubernetes StatefulSet) share one config.
        #[arg(long, env = "FENCEGATE_NODE_NAME")]
        node_name: Option<String>,
    },
    /// Validate a configuration file and the files it names (keys, tokens,
    /// fences, rules, TLS), listing every problem `serve` would refuse.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
        /// Check only the configuration text, not the files it names: for an
        /// image build, where keys, certificates and fences are mounted at
        /// run time.
        #[arg(long)]
        toml_only: bool,
    },
    /// Device tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Fence files.
    #[command(subcommand)]
    Fences(FencesCommand),
    /// Batch-evaluate points (CSV `id,lat,lon`) against fences, on all cores.
    Locate(cmd::locate::LocateArgs),
    /// The durable log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Print a site's current dynamic QR code (as a terminal QR with --render).
    Qr(cmd::qr::QrArgs),
    /// Export attendance records from the log as CSV or JSON lines.
    Export(cmd::export::ExportArgs),
    /// Sink maintenance: records a sink refused for good.
    #[command(subcommand)]
    Sinks(SinksCommand),
    /// The TLS certificate devices pin.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Ask a running node whether it is alive (or, with --ready, ready):
    /// exit 0 on HTTP 200, 1 otherwise. For container health checks.
    Health(cmd::health::HealthArgs),
    /// Holiday calendars.
    #[command(subcommand)]
    Holidays(HolidaysCommand),
    /// Attendance results (day results materialized from the log).
    #[command(subcommand)]
    Results(ResultsCommand),
    /// Seed a month of synthetic attendance for the sample tenants into a
    /// stopped node's log (then `serve` shows it at /ui/).
    Demo(cmd::demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum ResultsCommand {
    /// Empty the results store and rebuild it from the durable log (stop
    /// the node first).
    Rebuild(cmd::results::RebuildArgs),
}

#[derive(Debug, Subcommand)]
enum HolidaysCommand {
    /// Convert a downloaded holiday-cn or feiertage-api file into a calendar
    /// of the calendar folder.
    Import(cmd::holidays::ImportArgs),
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Print the served certificate's SHA-256 fingerprint (64 lowercase hex
    /// digits), the value a development client pins.
    Fingerprint(cmd::cert::FingerprintArgs),
}

#[derive(Debug, Subcommand)]
enum SinksCommand {
    /// List a sink's dead-lettered records (JSON lines, without their bytes).
    DeadLetter(cmd::sinks::DeadLetterArgs),
    /// Deliver a sink's dead-lettered records again; those refused again stay.
    ReplayDeadLetter(cmd::sinks::DeadLetterArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a token for one device of one tenant.
    Issue(cmd::token::IssueArgs),
}

#[derive(Debug, Subcommand)]
enum FencesCommand {
    /// Validate a GeoJSON fence file: a summary and every error.
    Check(cmd::fences::FencesCheckArgs),
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Print records (as JSON lines with --json).
    Tail(cmd::log::TailArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FENCEGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    // First: connection churn on huge pages costs a 2 MiB zeroing per
    // fault (fencegate::hugepages).
    if let Err(e) = fencegate::hugepages::disable_transparent_huge_pages() {
        eprintln!(
            "fencegate: warning: cannot turn transparent huge pages off ({e}); connection set-ups will cost more CPU"
        );
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, node_name } => {
            init_tracing();
            let mut cfg = match config {
                Some(p) => Config::load(&p)?,
                None => Config::embedded_defaults(),
            };
            if let Some(name) = node_name {
                anyhow::ensure!(
                    (1..=64).contains(&name.len()),
                    "--node-name (FENCEGATE_NODE_NAME) {name:?} must be 1 to 64 characters, e.g. fencegate-0"
                );
                cfg.node_name = name;
            }
            // The shared lane's workers (`quic.shared_lane_nice`); the
            // punch lane's runtime and the log writer are started from
            // this thread, which keeps the process's priority.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .thread_name("shared-lane")
                .on_thread_start(fencegate::edge::priority::shared_lane_hook(
                    cfg.quic.shared_lane_nice,
                ))
                .enable_all()
                .build()?;
            rt.block_on(fencegate::serve::serve(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file, toml_only } => match Config::load(&file).and_then(|cfg| {
            if toml_only {
                Ok(cfg)
            } else {
                fencegate::serve::check(&cfg).map(|_| cfg)
            }
        }) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} tenant(s), QUIC {}, admin {}, log {})",
                    file.display(),
                    cfg.tenants.len(),
                    cfg.quic_listen,
                    cfg.admin_listen,
                    cfg.log.dir.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprint!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Token(TokenCommand::Issue(args)) => {
            cmd::token::issue(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fences(FencesCommand::Check(args)) => cmd::fences::fences_check(&args),
        Command::Results(ResultsCommand::Rebuild(args)) => {
            cmd::results::rebuild(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => cmd::demo::demo(&args).map(|()| ExitCode::SUCCESS),
        Command::Holidays(HolidaysCommand::Import(args)) => {
            cmd::holidays::import(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Locate(args) => {
            cmd::locate::locate(&args)?; // prints its own summary to stderr
            Ok(ExitCode::SUCCESS)
        }
        Command::Qr(args) => {
            cmd::qr::qr(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sinks(SinksCommand::DeadLetter(args)) => {
            cmd::sinks::list(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sinks(SinksCommand::ReplayDeadLetter(args)) => {
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(cmd::sinks::replay(&args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(cmd::export::ExportArgs {
            command: Some(cmd::export::ExportCommand::Payroll(args)),
            ..
        }) => {
            cmd::payroll::payroll(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => {
            cmd::export::export(&args)?; // prints its own summary to stderr
            Ok(ExitCode::SUCCESS)
        }
        Command::Cert(CertCommand::Fingerprint(args)) => {
            cmd::cert::fingerprint_cmd(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Health(args) => Ok(if cmd::health::health(&args)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Log(LogCommand::Tail(args)) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(cmd::log::tail(&args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
