//! `fencegate log tail`: print the durable log's records.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use fencegate_schema::{RecordBodyView, parse_record};

use crate::config::Config;
use crate::log::{LogError, LogReader, Lsn};
use crate::record_json::{record_json, uuid};

/// Arguments of `fencegate log tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Log directory (defaults to the configured or embedded-default one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Configuration file naming the log directory.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Start at this LSN (0, or any LSN retention removed: the oldest record kept).
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Keep waiting for new records.
    #[arg(long)]
    pub follow: bool,
    /// One JSON object per line instead of a short text line.
    #[arg(long)]
    pub json: bool,
}

/// Prints records until caught up (or forever with `--follow`).
pub async fn tail(args: &TailArgs) -> anyhow::Result<()> {
    let dir = match (&args.dir, &args.config) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => Config::load(c)?.log.dir,
        (None, None) => Config::embedded_defaults().log.dir,
    };
    anyhow::ensure!(
        dir.is_dir(),
        "log directory {} does not exist; pass --dir or --config",
        dir.display()
    );
    let poll = Duration::from_millis(200);
    let mut reader = match LogReader::open_dir(&dir, Lsn(args.from), poll) {
        // Retention removed the start: begin at the oldest record kept.
        Err(LogError::Trimmed { oldest, .. }) => LogReader::open_dir(&dir, oldest, poll)?,
        r => r?,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        while let Some(e) = reader.next_entry()? {
            let line = match parse_record(e.payload) {
                Ok(rec) if args.json => {
                    let mut v = record_json(&rec);
                    v["lsn"] = e.lsn.0.into();
                    v.to_string()
                }
                Ok(rec) => summary(e.lsn, &rec),
                Err(r) => format!("{} <undecodable record: {r:?}>", e.lsn.0),
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(()); // stdout closed (e.g. piped into head)
            }
        }
        out.flush()?;
        if !args.follow {
            return Ok(());
        }
        reader.wait().await?;
    }
}

fn summary(lsn: Lsn, rec: &fencegate_schema::RecordView<'_>) -> String {
    let head = format!("{} {} {} ", lsn.0, rec.gateway_time_ms(), rec.tenant());
    match rec.body() {
        RecordBodyView::Punch(p) => format!(
            "{head}punch {} employee={} {:?} {:?} verdict={:?} fence={} nearest={} {:.0} m",
            uuid(&rec.record_id()),
            p.employee_id(),
            p.kind(),
            p.method(),
            p.verdict(),
            p.fence_ids().and_then(|f| f.iter().next()).unwrap_or("-"),
            p.nearest_fence_id().unwrap_or("-"),
            p.distance_m(),
        ),
        RecordBodyView::Ping(p) => format!(
            "{head}ping device={} {:.6},{:.6} fences={}{}{}",
            p.device_id(),
            p.lat(),
            p.lon(),
            p.fence_ids().map(|f| f.len()).unwrap_or(0),
            if p.heartbeat() { " heartbeat" } else { "" },
            if p.late() { " late" } else { "" }
        ),
        RecordBodyView::FenceEvent(e) => format!(
            "{head}event device={} {} {}",
            e.device_id(),
            // enter / exit / inside, the same words as the JSON output.
            e.transition()
                .variant_name()
                .unwrap_or("unknown")
                .to_ascii_lowercase(),
            e.fence_id()
        ),
        RecordBodyView::Hr(_) => format!("{head}hr {}", crate::record_json::record_json(rec)),
        RecordBodyView::DayResult(d) => format!(
            "{head}day employee={} date={} status={} revision={}",
            d.employee_id(),
            d.date(),
            d.status(),
            d.revision()
        ),
    }
}
