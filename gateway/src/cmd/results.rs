//! `fencegate results rebuild`: recreates the day results from the durable
//! log (DESIGN.md, contract 8: results are a view that can always be
//! rebuilt). It reads the log folder with the log's own folder reader, from
//! the oldest entry still stored, into an empty results store, then
//! closes every day whose time has come.
//!
//! A SQLite store is built in a new file beside the live one
//! (`results.sqlite.rebuild`), written without a journal, and renamed over
//! the live file when whole: a rebuild that stops leaves the live store as
//! it was, and the next rebuild deletes the half-built file. That needs
//! room for a second copy of the store. A PostgreSQL store is emptied and
//! rebuilt in place, marked until it is whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::log::{DirLock, LogError, LogReader, Lsn};
use anyhow::Context as _;

use crate::results::store::{rebuild_scratch_path, sqlite_path};
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
/// its materializer would otherwise go on writing the store being replaced
/// (SQLite) or from its own position in the emptied store (PostgreSQL).
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
    // The log's own lock, held to the end: a node running on this log
    // (which holds it) fails the rebuild here, before anything is
    // written, and no node starts on it while the store is replaced.
    let _lock = DirLock::acquire(&dir).map_err(|e| match e {
        LogError::Locked(dir) => anyhow::anyhow!(
            "log folder '{}' is held by a running node: stop it, then run `fencegate results rebuild` again",
            dir.display()
        ),
        e => e.into(),
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = &cfg.attendance.results_url;
    let now = crate::clock::unix_ms();
    let (applied, closed) = rt.block_on(async {
        let Some(live) = sqlite_path(url) else {
            // PostgreSQL: emptied and rebuilt in place, marked while it
            // runs (a node completes a rebuild that stopped halfway).
            let store = ResultsStore::open(url).await?;
            store.clear().await?;
            let m = Materializer::new(store, Arc::clone(&rules));
            return anyhow::Ok(m.rebuild(&mut reader, now).await?);
        };
        let built = rebuild_scratch_path(&live);
        // What a rebuild that died left.
        remove_sqlite_files(&built, &["", "-wal", "-shm", "-journal"])?;
        let store = ResultsStore::open_scratch(&built)
            .await
            .with_context(|| format!("cannot create {}", built.display()))?;
        let m = Materializer::new(store, Arc::clone(&rules));
        let done = m.rebuild(&mut reader, now).await?;
        m.store().clone().seal().await?;
        replace_live(&live, &built).await?;
        anyhow::Ok(done)
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

/// Deletes the files `path` + each of `suffixes` that exist: a SQLite
/// database (suffix "") and the files SQLite keeps beside it.
fn remove_sqlite_files(path: &Path, suffixes: &[&str]) -> anyhow::Result<()> {
    for suffix in suffixes {
        let mut f = path.as_os_str().to_os_string();
        f.push(suffix);
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("cannot remove {}", Path::new(&f).display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Puts the sealed store file `built` in place of the live SQLite store
/// `live`. The live store's WAL is checkpointed into its file and emptied
/// first: a WAL left beside the new file would be replayed into it on the
/// next open. Then the rename replaces the file in one step, so whenever
/// the process stops, `live` is either the old store, whole, or the new
/// one. A write transaction open on the live store, or a reader whose
/// snapshot still needs the WAL, makes the checkpoint fail after the busy
/// timeout, and nothing is replaced (a node is kept out by the log's
/// lock, taken before).
async fn replace_live(live: &Path, built: &Path) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    if live.exists() {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(live)
            .create_if_missing(false);
        let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&options)
            .await
            .with_context(|| format!("cannot open the live results store {}", live.display()))?;
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        anyhow::ensure!(
            busy == 0,
            "the results store {} is in use: stop the node, then run `fencegate results rebuild` again (the rebuilt store is left in {})",
            live.display(),
            built.display()
        );
        remove_sqlite_files(live, &["-wal", "-shm"])?;
    }
    std::fs::rename(built, live)
        .with_context(|| format!("cannot move {} to {}", built.display(), live.display()))?;
    if let Some(dir) = live.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(())
}
