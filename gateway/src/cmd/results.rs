//! `fencegate results rebuild`: recreates the day results from the durable
//! log (DESIGN.md, contract 8: results are a view that can always be
//! rebuilt). It reads the log folder with the log's own folder reader, from
//! the oldest entry still stored, into an emptied results store, then
//! closes every day whose time has come.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::log::{LogError, LogReader, Lsn};
use crate::results::{Materializer, ResultsStore};

/// Arguments of `fencegate results rebuild`.
#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Configuration file naming the data directory, log, rules and results
    /// store (embedded defaults if omitted).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs the rebuild and prints a summary on stderr. Stop the node first:
/// its materializer would otherwise go on from its own position in the
/// emptied store.
pub fn rebuild(args: &RebuildArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_defaults(),
    };
    if let Some(source) = cfg.cluster.as_ref().and_then(|c| c.results.as_ref()) {
        // Fed by the stream: the node that materializes it notices the
        // emptied store at its next batch and reads the stream again from
        // its first record (docs/SCALING.md, "Day results on several
        // nodes"). No node's log holds every record, so none is read here.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let store = ResultsStore::open(&cfg.attendance.results_url).await?;
            store.clear().await?;
            anyhow::Ok(())
        })?;
        eprintln!(
            "emptied the day results in {}; the node materializing stream {} (consumer {}) reads it again from its first record",
            cfg.attendance.results_url, source.stream, source.durable
        );
        return Ok(());
    }
    let (rules, _) = crate::rules::load::load(&cfg)?;
    let dir = cfg.log.dir.clone();
    let poll = Duration::from_millis(100);
    let mut reader = match LogReader::open_dir(&dir, Lsn(0), poll) {
        Err(LogError::Trimmed { oldest, .. }) => LogReader::open_dir(&dir, oldest, poll)?,
        other => other?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (applied, closed) = rt.block_on(async {
        let store = ResultsStore::open(&cfg.attendance.results_url).await?;
        store.clear().await?;
        let m = Materializer::new(store, Arc::clone(&rules));
        let now = crate::clock::unix_ms();
        anyhow::Ok(m.rebuild(&mut reader, now).await?)
    })?;
    eprintln!(
        "rebuilt day results in {} from {}: {} log entries, {} punches, {} employee days recomputed, {} closed",
        cfg.attendance.results_url,
        dir.display(),
        applied.entries,
        applied.punches,
        applied.days,
        closed
    );
    Ok(())
}
