//! `fencegate export`: attendance records from the durable log, as CSV or
//! JSON lines, by tenant and attendance time (through the per-segment time
//! index, so a day's export reads only the segments that hold that day).
//! Safe to run while the gateway writes the same log.

use std::io::Write as _;
use std::path::PathBuf;

use crate::config::Config;
use crate::log::query::{self as records, RecordQuery, Source};
use crate::persist;

/// Arguments of `fencegate export`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExportArgs {
    /// `export payroll`: a month's payroll from the results store instead
    /// of records from the log.
    #[command(subcommand)]
    pub command: Option<ExportCommand>,
    /// Tenant whose records to export.
    #[arg(long, required = true)]
    pub tenant: Option<String>,
    /// From (inclusive): unix ms, RFC 3339, or a date in the tenant's time zone.
    #[arg(long, required = true)]
    pub from: Option<String>,
    /// To: unix ms or RFC 3339 (exclusive), or a date (that whole day included).
    #[arg(long, required = true)]
    pub to: Option<String>,
    /// `csv` or `json` (one JSON object per line).
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// Only this employee.
    #[arg(long)]
    pub employee: Option<String>,
    /// Only this status (normal, late, early_leave, out_of_range_pending_approval,
    /// field, repeat_merged, rejected).
    #[arg(long)]
    pub status: Option<String>,
    /// Write here instead of stdout (`-` is stdout). A regular file is
    /// replaced atomically once the export is complete; a device, FIFO or
    /// symlink is written through.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Configuration file naming the data directory and rules (embedded
    /// defaults if omitted).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The subcommands of `fencegate export`.
#[derive(Debug, clap::Subcommand)]
pub enum ExportCommand {
    /// A month's payroll (summary per employee) as CSV or JSON.
    Payroll(Box<super::payroll::PayrollArgs>),
}

/// Writes the export and a one-line summary on stderr.
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    // Required by clap unless a subcommand is given (then this is not run).
    let (Some(tenant), Some(from), Some(to)) = (&args.tenant, &args.from, &args.to) else {
        anyhow::bail!("--tenant, --from and --to are required");
    };
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_defaults(),
    };
    anyhow::ensure!(
        cfg.tenants.iter().any(|(t, _)| t == tenant),
        "tenant '{}' is not served by this configuration (it serves {}); pass --config with the configuration of the node that serves it",
        tenant,
        cfg.tenants
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let csv = match args.format.as_str() {
        "csv" => true,
        "json" => false,
        f => anyhow::bail!("--format {f:?} is unknown; use csv or json"),
    };
    let (rules, _) = crate::rules::load::load(&cfg)?;
    let tz = rules.load().tenant(tenant).tz.clone();
    let q = RecordQuery {
        tenant: Some(tenant.clone()),
        from_ms: records::parse_time(from, &tz, false)
            .map_err(|e| anyhow::anyhow!("--from: {e}"))?,
        to_ms: records::parse_time(to, &tz, true).map_err(|e| anyhow::anyhow!("--to: {e}"))?,
        employee: args.employee.clone(),
        status: match &args.status {
            Some(s) => Some(records::parse_status(s).ok_or_else(|| {
                anyhow::anyhow!("--status {s:?} is unknown; use normal, late, early_leave, out_of_range_pending_approval, field, repeat_merged or rejected")
            })?),
            None => None,
        },
        limit: usize::MAX,
        after_lsn: None,
        max_scan: 0,
        deadline: None,
        ..RecordQuery::default()
    };
    anyhow::ensure!(
        q.to_ms > q.from_ms,
        "--to ({}) must be after --from ({}); --to is exclusive, and a date as --to includes that day",
        to,
        from
    );
    anyhow::ensure!(
        cfg.log.dir.is_dir(),
        "log directory {} does not exist; pass --config for the node's configuration",
        cfg.log.dir.display()
    );
    // `-` or no --output: stdout. A regular file is staged and renamed over
    // only once every record is written; a device, FIFO or symlink is written
    // through (see crate::persist).
    let target = args.output.clone().unwrap_or_else(|| PathBuf::from("-"));
    let out = persist::Output::create(&target)
        .map_err(|e| anyhow::anyhow!("--output {}: {e}", target.display()))?;
    let out = std::io::BufWriter::new(out);
    let mut sink = if csv {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(records::CSV_HEADER)?;
        Sink::Csv(Box::new(w))
    } else {
        Sink::Json(out)
    };
    let mut line: Vec<u8> = Vec::new();
    let mut failed: Option<std::io::Error> = None;
    let index_dir = cfg.data_dir.join("index").join("records");
    let stats = records::query(
        Source::Dir(&cfg.log.dir),
        &index_dir,
        &q,
        &mut |lsn, rec| {
            if failed.is_some() {
                return false;
            }
            let r = match &mut sink {
                Sink::Csv(w) => match records::csv_row(rec, &tz) {
                    Some(row) => w.write_record(&row).map_err(std::io::Error::other),
                    None => Ok(()),
                },
                Sink::Json(w) => {
                    line.clear();
                    serde_json::to_writer(&mut line, &records::to_json(lsn, rec))
                        .map_err(std::io::Error::other)
                        .and_then(|()| {
                            line.push(b'\n');
                            w.write_all(&line)
                        })
                }
            };
            if let Err(e) = r {
                failed = Some(e);
                return false;
            }
            true
        },
    )?;
    let finished = match failed {
        // Dropping an unfinished staged output discards it; the old file stays.
        Some(e) => Err(e),
        None => finish(sink),
    };
    match finished {
        // A closed pipe (e.g. `| head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(anyhow::anyhow!("--output {}: {e}", target.display())),
        Ok(()) => {}
    }
    eprintln!(
        "exported {} record(s); read {} of {} log segment(s) ({} records), the others skipped by the time index",
        stats.matched, stats.segments_read, stats.segments, stats.records_read
    );
    Ok(())
}

/// Flushes the output and commits it (the rename of a staged file).
fn finish(sink: Sink<std::io::BufWriter<persist::Output>>) -> std::io::Result<()> {
    let buf = match sink {
        Sink::Csv(w) => w.into_inner().map_err(|e| e.into_error())?,
        Sink::Json(w) => w,
    };
    buf.into_inner().map_err(|e| e.into_error())?.commit()
}

enum Sink<W: std::io::Write> {
    // Boxed: the CSV writer carries a large buffer state, the JSON one none.
    Csv(Box<csv::Writer<W>>),
    Json(W),
}
