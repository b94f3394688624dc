//! `fencegate sinks dead-letter` and `fencegate sinks replay-dead-letter`:
//! read and re-deliver the records a sink refused for good.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Config;
use crate::log::Lsn;
use crate::sink::{AnySink, Backoff, Batch, DeadLetter, DeadRecord, Sink as _, SinkConfig};

/// Arguments shared by the dead-letter commands.
#[derive(Debug, clap::Args)]
pub struct DeadLetterArgs {
    /// The sink's name (`[[sinks]] name`).
    #[arg(long)]
    pub sink: String,
    /// Configuration file (defaults to the embedded defaults' data dir).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

fn load(args: &DeadLetterArgs) -> anyhow::Result<(Config, DeadLetter)> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_defaults(),
    };
    let dl = DeadLetter::new(&cfg.data_dir.join("dead-letter"), &args.sink);
    Ok((cfg, dl))
}

fn sink_config<'a>(cfg: &'a Config, name: &str) -> anyhow::Result<&'a SinkConfig> {
    cfg.sinks.iter().find(|s| s.name == name).with_context(|| {
        let names: Vec<_> = cfg.sinks.iter().map(|s| s.name.as_str()).collect();
        format!(
            "sink '{name}' is not configured; the configured sinks are: {}",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )
    })
}

/// Prints one JSON line per dead-lettered record (without its bytes) and
/// a count on stderr.
pub fn list(args: &DeadLetterArgs) -> anyhow::Result<()> {
    let (_, dl) = load(args)?;
    let records = dl
        .list()
        .with_context(|| format!("cannot read {}", dl.dir().display()))?;
    for r in &records {
        let v = serde_json::json!({
            "lsn": r.lsn,
            "time_ms": r.time_ms,
            "record_id": r.record_id,
            "tenant": r.tenant,
            "kind": r.kind,
            "at_ms": r.at_ms,
            "error": r.error,
        });
        println!("{v}");
    }
    eprintln!(
        "sink '{}': {} dead-lettered record(s) in {}",
        args.sink,
        records.len(),
        dl.dir().display()
    );
    Ok(())
}

/// `fencegate sinks replay-dead-letter`: [`replay_sink`], then a summary
/// on stderr.
pub async fn replay(args: &DeadLetterArgs) -> anyhow::Result<()> {
    let (cfg, dl) = load(args)?;
    let r = replay_sink(&cfg, &args.sink).await?;
    eprintln!(
        "sink '{}': {} record(s) replayed, {} kept in {}",
        args.sink,
        r.replayed,
        r.kept,
        dl.dir().display()
    );
    if let Some(e) = r.unreachable {
        anyhow::bail!(
            "sink '{}' stopped answering during the replay ({e}); the rest is kept, run the replay again once it is back",
            args.sink
        );
    }
    Ok(())
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Records the sink accepted this time.
    pub replayed: usize,
    /// Records kept in the file (refused again, or not tried).
    pub kept: usize,
    /// The transient error that stopped the replay early, if one did.
    pub unreachable: Option<String>,
}

/// Delivers every dead-lettered record of sink `name` of `cfg` once more,
/// one record at a time; records refused again stay in the file. Transient
/// failures are retried a few times, then the rest is kept for the next
/// replay. Safe while the node runs: it appends new dead letters to a
/// fresh file meanwhile.
pub async fn replay_sink(cfg: &Config, name: &str) -> anyhow::Result<Replayed> {
    let dl = DeadLetter::new(&cfg.data_dir.join("dead-letter"), name);
    let sc = sink_config(cfg, name)?;
    let mut sink = AnySink::build(sc, &cfg.node_name)?;
    let files = tokio::task::spawn_blocking({
        let dl = dl.clone();
        move || dl.files()
    })
    .await?
    .with_context(|| format!("cannot read {}", dl.dir().display()))?;
    let (mut replayed, mut n_kept) = (0usize, 0usize);
    let mut unreachable = None;
    let mut batch = Batch::new(Lsn(0), 1);
    for file in files {
        let mut left: Vec<DeadRecord> = Vec::new();
        for r in &file.records {
            if unreachable.is_some() {
                left.push(r.clone());
                continue;
            }
            let payload = r.payload().with_context(|| {
                format!(
                    "record {} in {}: its payload is not base64",
                    r.record_id,
                    file.path.display()
                )
            })?;
            batch.reset(Lsn(r.lsn));
            batch.offer(Lsn(r.lsn), r.time_ms, &payload);
            batch.seal();
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
            loop {
                match sink.deliver(&batch).await {
                    Ok(_) => {
                        replayed += 1;
                        break;
                    }
                    Err(e) if e.is_permanent() => {
                        let mut again = r.clone();
                        again.error = e.to_string();
                        left.push(again);
                        break;
                    }
                    Err(e) if backoff.attempts() >= 5 => {
                        unreachable = Some(e.to_string());
                        left.push(r.clone());
                        break;
                    }
                    Err(_) => tokio::time::sleep(backoff.next_delay()).await,
                }
            }
        }
        n_kept += left.len();
        tokio::task::spawn_blocking({
            let dl = dl.clone();
            move || dl.settle(&file, &left)
        })
        .await?
        .with_context(|| format!("cannot update {}", dl.dir().display()))?;
    }
    Ok(Replayed {
        replayed,
        kept: n_kept,
        unreachable,
    })
}
