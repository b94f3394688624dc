//! Forwarders: deliver the durable log downstream, at least once, per sink.
//!
//! Each configured sink gets one [`Forwarder`] with its own persisted log
//! [`Cursor`](crate::log::Cursor). The forwarder reads a [`Batch`] of
//! entries from the cursor's position, hands it to the sink, and only when
//! the sink says every record is confirmed downstream does it move the
//! cursor past the batch. A failure leaves the cursor where it was: the
//! same entries are offered again after a backoff with jitter, so nothing
//! the log holds is ever skipped. Records carry deterministic ids, so a
//! downstream drops what it already has (JetStream by `Nats-Msg-Id`, a
//! webhook receiver by the batch's idempotency key or the record ids).
//!
//! Retention never deletes a segment some sink's cursor has not passed, so
//! a downstream outage only grows the log. When the log reaches its size
//! cap, new punches are refused with a retry-after until a sink catches up
//! and retention frees space (a forwarder runs retention itself after it
//! persists its cursor while the log is full).
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the [`Sink`] trait, [`SinkError`], [`Forwarders`] (one task per sink plus a gauge monitor) |
//! | `forwarder.rs` | the loop: read a batch, deliver with retries, checkpoint the cursor |
//! | `batch.rs` | [`Batch`]: payloads in one buffer, per-record routing index |
//! | `backoff.rs` | [`Backoff`]: exponential with jitter |
//! | `dead_letter.rs` | [`DeadLetter`]: records a sink refused for good, kept per sink so the cursor moves on |
//! | `health.rs` | [`SinkHealth`]: lag, rate, retries, last error; `/readyz` and `/metrics` |
//! | `config.rs` | `[[sinks]]`: raw TOML, validation reporting every problem |
//! | `nats.rs` | JetStream: stream create-or-verify, pipelined publishes, PubAck per record |
//! | `webhook.rs` | batched, signed HTTP POSTs with an idempotency key |
//! | `jsonl.rs` | JSON lines to a file or stdout |
//!
//! See `docs/DOWNSTREAM.md` for the operator's view.

mod backoff;
mod batch;
pub mod config;
pub mod dead_letter;
mod forwarder;
mod health;
pub mod jsonl;
pub mod nats;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
pub use batch::{Batch, BatchRecord, Offered, RecordKind};
pub use config::{RawSink, SinkConfig, SinkTarget};
pub use dead_letter::{DeadLetter, DeadRecord};
pub use forwarder::{ForwardSettings, Forwarder};
pub use health::{LastError, SinkHealth, SinkState, SinkStatus};

use crate::clock;
use crate::log::{LogError, LogHandle};

/// Prefix of the log cursors that belong to sinks (`sink-<name>`).
pub const CURSOR_PREFIX: &str = "sink-";

/// What a sink reports about a confirmed batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Messages the downstream already had (JetStream flags them in the
    /// PubAck); they are confirmed all the same.
    pub duplicates: u64,
}

/// A downstream that confirms what it received.
///
/// The forwarder calls [`Sink::deliver`] with one batch at a time and moves
/// the cursor past it only on `Ok`. On `Err` the same batch (possibly grown
/// by later entries after a restart) is offered again, so a sink must
/// tolerate seeing records it already delivered; it marks every record with
/// its deterministic id so the downstream can drop the copy.
pub trait Sink: Send + 'static {
    /// Delivers every record of `batch` (sealed, in LSN order) and returns
    /// once the downstream confirmed all of them. Work in flight must stay
    /// bounded (a sink never holds more unconfirmed messages than it was
    /// configured for).
    fn deliver(
        &mut self,
        batch: &Batch,
    ) -> impl Future<Output = Result<Delivered, SinkError>> + Send;
}

/// Why a delivery attempt failed. A transient failure is retried after a
/// backoff; a permanent one ([`SinkError::is_permanent`]) sends the records
/// the sink refuses to its dead-letter file. The variant picks the `kind`
/// label of `fencegate_sink_errors_total`.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Could not connect to the downstream.
    #[error("cannot connect to {target}: {message}")]
    Connect {
        /// The address tried.
        target: String,
        /// The reason given.
        message: String,
    },
    /// The downstream did not confirm in time.
    #[error("no {what} within {after_ms} ms")]
    Timeout {
        /// What was awaited (an ack, a response).
        what: &'static str,
        /// The configured timeout.
        after_ms: u64,
    },
    /// The downstream refused the data (a JetStream error, a stream that
    /// does not capture the subject).
    #[error("downstream refused the records: {0}")]
    Rejected(String),
    /// An HTTP receiver answered with a non-2xx status.
    #[error("HTTP {status} from the receiver{}: {body}", retry_after.map(|d| format!(" (retry after {} s)", d.as_secs())).unwrap_or_default())]
    Http {
        /// The status code.
        status: u16,
        /// The receiver's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
        /// The start of the response body.
        body: String,
    },
    /// A local I/O error (the JSON-lines file).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The downstream is set up differently than configured (for example
    /// a JetStream stream with a shorter duplicate window); an operator must
    /// fix one of them. Retried, so the sink resumes once fixed.
    #[error("configuration mismatch: {0}")]
    Config(String),
    /// Reading the log failed.
    #[error("reading the log: {0}")]
    Log(#[from] LogError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl SinkError {
    /// The error class, a fixed low-cardinality label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::Rejected(_) => "rejected",
            Self::Http { .. } => "http",
            Self::Io(_) | Self::Log(_) => "io",
            Self::Config(_) => "config",
            Self::Other(_) => "other",
        }
    }

    /// Whether retrying the same records can never succeed: an HTTP 4xx
    /// other than 408 (timeout), 425 (too early) and 429 (too many
    /// requests), i.e. the receiver refuses the content itself (400, 413,
    /// 422, ...). The forwarder then delivers the batch record by record
    /// and dead-letters only the records refused, instead of retrying one
    /// poison batch forever while the log fills. Everything else (network,
    /// timeouts, 5xx, JetStream refusals, which are stream settings an
    /// operator fixes) is transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Http { status, .. } => {
                (400..500).contains(status) && !matches!(status, 408 | 425 | 429)
            }
            _ => false,
        }
    }

    /// How long the downstream asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The running forwarders of a node: one task per configured sink and a
/// monitor that refreshes the lag and rate gauges once a second.
#[derive(Debug)]
pub struct Forwarders {
    health: Vec<Arc<SinkHealth>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
}

impl Forwarders {
    /// No sinks.
    pub fn none() -> Self {
        Self {
            health: Vec::new(),
            tasks: Vec::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Registers every sink's cursor (before retention may run), removes
    /// cursors of sinks no longer configured, builds the sinks (resolving
    /// secrets) and starts one forwarder per sink. Must run inside a tokio
    /// runtime. `node` names this gateway to downstreams; records a sink
    /// refuses for good go to `<dead_letter_dir>/<sink>.jsonl`.
    pub fn start(
        sinks: &[SinkConfig],
        log: &LogHandle,
        node: &str,
        dead_letter_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let cursors: Vec<_> = sinks
            .iter()
            .map(|s| {
                log.cursor(&s.cursor_name(), s.start)
                    .with_context(|| format!("sink '{}': cannot register its log cursor", s.name))
            })
            .collect::<Result<_, _>>()?;
        prune_cursors(log, sinks)?;
        let stop = CancellationToken::new();
        let mut out = Self {
            health: Vec::new(),
            tasks: Vec::new(),
            stop: stop.clone(),
        };
        for (s, cursor) in sinks.iter().zip(cursors) {
            let health = Arc::new(SinkHealth::new(&s.name, s.target.kind(), cursor.position()));
            let settings = s.forward.clone();
            let sink = AnySink::build(s, node)?;
            let f = Forwarder::new(sink, log.clone(), cursor, settings, health.clone())
                .with_dead_letter(DeadLetter::new(dead_letter_dir, &s.name));
            let task = tokio::spawn(f.run_logged(stop.clone()));
            out.health.push(health);
            out.tasks.push(task);
        }
        if !out.health.is_empty() {
            out.tasks
                .push(tokio::spawn(monitor(out.health.clone(), log.clone(), stop)));
        }
        Ok(out)
    }

    /// Every sink's health, in config order (for `/readyz`).
    pub fn health(&self) -> &[Arc<SinkHealth>] {
        &self.health
    }

    /// Stops every forwarder: in-flight deliveries are abandoned (their
    /// records stay in the log and are delivered after the restart), and
    /// each cursor is persisted at the last confirmed position. Waits up to
    /// `grace`.
    pub async fn stop(self, grace: Duration) {
        self.stop.cancel();
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("sink forwarders did not stop within {grace:?}");
        }
    }
}

/// One configured sink of any kind, so the forwarder and the dead-letter
/// replay build sinks the same way.
#[derive(Debug)]
pub enum AnySink {
    /// NATS JetStream (boxed: it is by far the largest, and built once).
    Nats(Box<nats::NatsSink>),
    /// HTTP webhook.
    Webhook(webhook::WebhookSink),
    /// JSON lines.
    Jsonl(jsonl::JsonlSink),
}

impl AnySink {
    /// Builds the sink `s` describes (resolving its secrets). `node` names
    /// this gateway to downstreams.
    pub fn build(s: &SinkConfig, node: &str) -> anyhow::Result<Self> {
        Ok(match &s.target {
            SinkTarget::Nats(c) => Self::Nats(Box::new(
                nats::NatsSink::new(c.clone(), node)
                    .with_context(|| format!("sink '{}'", s.name))?,
            )),
            SinkTarget::Webhook(c) => Self::Webhook(
                webhook::WebhookSink::new(c.clone(), node)
                    .with_context(|| format!("sink '{}'", s.name))?,
            ),
            SinkTarget::Jsonl(c) => Self::Jsonl(jsonl::JsonlSink::new(c.clone())),
        })
    }
}

impl Sink for AnySink {
    async fn deliver(&mut self, batch: &Batch) -> Result<Delivered, SinkError> {
        match self {
            Self::Nats(s) => s.deliver(batch).await,
            Self::Webhook(s) => s.deliver(batch).await,
            Self::Jsonl(s) => s.deliver(batch).await,
        }
    }
}

/// Deletes `sink-*` cursors of sinks that are no longer configured: a
/// forgotten cursor would hold back retention until the log is full.
fn prune_cursors(log: &LogHandle, sinks: &[SinkConfig]) -> anyhow::Result<()> {
    for (name, pos) in log.cursors() {
        let Some(sink) = name.strip_prefix(CURSOR_PREFIX) else {
            continue;
        };
        if sinks.iter().any(|s| s.name == sink) {
            continue;
        }
        tracing::warn!(
            cursor = %name,
            position = %pos,
            "sink '{sink}' is no longer configured; removing its cursor so it stops holding back retention"
        );
        eprintln!(
            "sinks: removed the cursor of sink '{sink}' (at LSN {pos}); it is no longer configured"
        );
        log.remove_cursor(&name)
            .with_context(|| format!("cannot remove the cursor of the removed sink '{sink}'"))?;
    }
    Ok(())
}

async fn monitor(health: Vec<Arc<SinkHealth>>, log: LogHandle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let committed = log.committed();
        let now = clock::unix_ms();
        for h in &health {
            h.refresh_gauges(committed, now);
        }
    }
}
