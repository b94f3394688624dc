//! Day results from the JetStream stream every node forwards to
//! (`[cluster] results = "stream"`, docs/SCALING.md, "Day results on
//! several nodes").
//!
//! With several nodes, no node's log holds every punch: each node forwards
//! its own records to the one stream. So results are materialized from the
//! stream, through one durable pull consumer (`<stream>_results`, filtered
//! to the attendance subjects `<prefix>.*.punch`, where HR records travel
//! too), into the results store the nodes share (PostgreSQL), and every
//! node answers `/v1/days` and the dashboard from it alike.
//!
//! One node at a time consumes: the one holding a PostgreSQL session
//! advisory lock on a connection of its own (the *leader*); the others
//! retry every few seconds and take over within that when its connection
//! drops. Stream order is then the order records are applied in, so a
//! month archive sees what came before it in the stream, and every
//! transaction also takes a transaction lock, so a leader that lost its
//! lock without noticing cannot write beside the next one.
//!
//! The position that counts is the last stream sequence applied, committed
//! in the same transaction as the rows (`results_meta.stream_seq`); the
//! consumer's acknowledgement follows the commit and only spares
//! redelivery. A crash between the two redelivers a batch whose sequences
//! are at or below the stored one: skipped. When the consumer is ahead of
//! the store (the store was rebuilt, or restored from a backup), it is
//! recreated from the stored sequence.
//!
//! A SQLite store (one node, or each node its own copy) has no leader: the
//! consumer is named after the node, `<stream>_results_<node>`.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, stream::Stream};
use futures::StreamExt as _;
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;

use super::materialize::{Mark, MaterializeError, Materializer, STREAM_SEQ};
use super::store::{ResultsStore, lock_key};

/// Most stream messages applied in one transaction.
const BATCH: usize = 4_096;

/// How often an idle leader checks that the store still holds the
/// position it goes on from (`fencegate results rebuild` empties it).
const STORE_CHECK: Duration = Duration::from_secs(1);

/// How often a node that is not the leader tries to become it.
const FOLLOWER_RETRY: Duration = Duration::from_secs(2);

/// How long a fetched batch may wait for its acknowledgement: longer than
/// applying a batch takes, or it would be delivered again meanwhile.
const ACK_WAIT: Duration = Duration::from_secs(120);

/// Which stream to read, and under which consumer name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSource {
    /// The JetStream stream the NATS sink forwards to.
    pub stream: String,
    /// The sink's subject prefix: the consumer reads `<prefix>.*.punch`.
    pub subject_prefix: String,
    /// The durable consumer's name.
    pub durable: String,
}

impl StreamSource {
    /// The source for a results store shared by nodes (`shared`: one
    /// consumer) or kept by this node alone (one consumer per node).
    pub fn new(stream: &str, subject_prefix: &str, node: &str, shared: bool) -> Self {
        let durable = if shared {
            format!("{stream}_results")
        } else {
            // Consumer names may not hold '.', '*', '>' or white space.
            let node: String = node
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{stream}_results_{node}")
        };
        Self {
            stream: stream.to_owned(),
            subject_prefix: subject_prefix.to_owned(),
            durable,
        }
    }
}

/// A failure while consuming: the stream or the store. The loop retries.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("JetStream: {0}")]
    Nats(String),
    #[error("{0}")]
    Materialize(#[from] MaterializeError),
    #[error("results store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("lost the results leadership (its PostgreSQL connection failed: {0})")]
    LostLead(sqlx::Error),
}

fn nats(e: impl std::fmt::Display) -> StreamError {
    StreamError::Nats(e.to_string())
}

/// Materializes day results from the stream (module docs).
#[derive(Debug)]
pub struct StreamMaterializer {
    m: Materializer,
    js: jetstream::Context,
    source: StreamSource,
    leader: metrics::Gauge,
    pending: metrics::Gauge,
}

impl StreamMaterializer {
    /// A materializer reading `source` through `client` into `m`'s store.
    pub fn new(m: Materializer, client: async_nats::Client, source: StreamSource) -> Self {
        Self {
            m,
            js: jetstream::new(client),
            source,
            leader: metrics::gauge!("fencegate_results_stream_leader"),
            pending: metrics::gauge!("fencegate_results_stream_pending"),
        }
    }

    /// Consumes until `stop`, closing due days every `tick`. Errors are
    /// logged and retried: results lag, punches are unaffected.
    pub async fn run(self, stop: CancellationToken, tick: Duration) {
        loop {
            let r = self.lead(&stop, tick).await;
            self.leader.set(0.0);
            // Only the leader's lag counts: a follower's stale figure would
            // keep the results alert firing after a takeover.
            self.pending.set(0.0);
            match r {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, consumer = %self.source.durable, "results from the stream: retrying in 2 s (results lag, punches are unaffected)");
                    tokio::select! {
                        () = tokio::time::sleep(FOLLOWER_RETRY) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Waits to lead (PostgreSQL), then consumes while leading.
    async fn lead(&self, stop: &CancellationToken, tick: Duration) -> Result<(), StreamError> {
        let store = self.m.store().clone();
        let mut lock = if store.is_postgres() {
            match self.acquire(&store, stop).await? {
                Some(c) => Some(c),
                None => return Ok(()),
            }
        } else {
            None
        };
        self.leader.set(1.0);
        tracing::info!(consumer = %self.source.durable, "results: this node materializes the stream");
        if store
            .rebuild_stopped()
            .await
            .map_err(MaterializeError::from)?
        {
            // Emptied, the store has no stream position: the consumer
            // reads the stream again from its start.
            tracing::warn!(
                "a `fencegate results rebuild` stopped halfway in the results store; emptying it and materializing the stream again"
            );
            store.clear().await.map_err(MaterializeError::from)?;
        }
        // The sinks create the stream; until one has, wait as the leader.
        let mut waited = false;
        let stream = loop {
            match self.js.get_stream(&self.source.stream).await {
                Ok(s) => break s,
                Err(e) => {
                    if !waited {
                        tracing::warn!(stream = %self.source.stream, error = %e, "results: waiting for the stream (a NATS sink creates it)");
                        waited = true;
                    }
                    if let Some(c) = lock.as_mut() {
                        sqlx::query("SELECT CAST(1 AS BIGINT) AS ok")
                            .fetch_one(&mut *c)
                            .await
                            .map_err(StreamError::LostLead)?;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(FOLLOWER_RETRY) => {}
                        () = stop.cancelled() => return Ok(()),
                    }
                }
            }
        };
        let (mut consumer, mut after) = self.consumer(&stream, &store).await?;
        self.m.close_due(crate::clock::unix_ms()).await?;
        let mut last_tick = crate::clock::tokio_now();
        let mut last_check = last_tick;
        loop {
            if let Some(c) = lock.as_mut() {
                sqlx::query("SELECT CAST(1 AS BIGINT) AS ok")
                    .fetch_one(&mut *c)
                    .await
                    .map_err(StreamError::LostLead)?;
            }
            let n = match self.step(&consumer, &mut after).await {
                Ok(n) => n,
                Err(StreamError::Materialize(e @ MaterializeError::Moved { .. })) => {
                    // `fencegate results rebuild` emptied the store, or it
                    // was restored: read the stream again from its position.
                    tracing::warn!(error = %e, consumer = %self.source.durable, "results: the store moved under the consumer");
                    (consumer, after) = self.consumer(&stream, &store).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if last_tick.elapsed() >= tick {
                last_tick = crate::clock::tokio_now();
                self.m.close_due(crate::clock::unix_ms()).await?;
                if let Ok(info) = consumer.info().await {
                    self.pending.set(info.num_pending as f64);
                }
            }
            if n == BATCH {
                continue;
            }
            if n == 0 && last_check.elapsed() >= STORE_CHECK {
                // Idle: no batch would find a rebuilt store, so look.
                last_check = crate::clock::tokio_now();
                let mut tx = store.begin().await?;
                let stored = ResultsStore::meta(&mut tx, STREAM_SEQ).await?.unwrap_or(0);
                tx.commit().await?;
                if stored != after as i64 {
                    tracing::warn!(stored, expected = after, consumer = %self.source.durable, "results: the store moved under the consumer (rebuilt or restored); reading the stream again from its position");
                    (consumer, after) = self.consumer(&stream, &store).await?;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(if n == 0 { 50 } else { 5 })) => {}
                () = stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Fetches what the consumer has (up to [`BATCH`]), applies it in one
    /// transaction, then acknowledges it. Returns the messages fetched.
    async fn step(
        &self,
        consumer: &jetstream::consumer::PullConsumer,
        after: &mut u64,
    ) -> Result<usize, StreamError> {
        let mut batch = consumer
            .fetch()
            .max_messages(BATCH)
            .messages()
            .await
            .map_err(nats)?;
        let mut entries = Vec::new();
        let mut last = None;
        while let Some(m) = batch.next().await {
            let m = m.map_err(nats)?;
            let seq = m.info().map_err(nats)?.stream_sequence;
            entries.push((seq, m.payload.to_vec()));
            last = Some((seq, m));
        }
        let Some((seq, m)) = last else {
            return Ok(0);
        };
        let n = entries.len();
        let mark = Mark::Stream {
            last: seq,
            after: Some(*after),
        };
        self.m
            .apply_marked(&entries, mark, crate::clock::unix_ms())
            .await?;
        *after = (*after).max(seq);
        // AckPolicy::All: the last message acknowledges the batch.
        m.ack().await.map_err(nats)?;
        Ok(n)
    }

    /// Becomes the leader: a connection of its own holding the session
    /// lock. `None` when stopped first.
    async fn acquire(
        &self,
        store: &ResultsStore,
        stop: &CancellationToken,
    ) -> Result<Option<sqlx::AnyConnection>, StreamError> {
        let mut waiting = false;
        loop {
            let mut c = sqlx::AnyConnection::connect(store.url()).await?;
            let got: i64 = sqlx::query_scalar(
                "SELECT CAST(CASE WHEN pg_try_advisory_lock($1) THEN 1 ELSE 0 END AS BIGINT)",
            )
            .bind(lock_key::LEADER)
            .fetch_one(&mut c)
            .await?;
            if got == 1 {
                return Ok(Some(c));
            }
            drop(c);
            if !waiting {
                tracing::info!(consumer = %self.source.durable, "results: another node materializes the stream; standing by");
                waiting = true;
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOWER_RETRY) => {}
                () = stop.cancelled() => return Ok(None),
            }
        }
    }

    /// The durable consumer, created afresh just after the stored
    /// sequence (what an earlier leader fetched and never applied would
    /// otherwise wait out the ack wait), with that sequence.
    async fn consumer(
        &self,
        stream: &Stream,
        store: &ResultsStore,
    ) -> Result<(jetstream::consumer::PullConsumer, u64), StreamError> {
        let mut tx = store.begin().await?;
        let done = ResultsStore::meta(&mut tx, STREAM_SEQ)
            .await?
            .unwrap_or(0)
            .max(0) as u64;
        tx.commit().await?;
        let name = &self.source.durable;
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some("fencegate day results (docs/SCALING.md)".into()),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: done + 1,
            },
            ack_policy: AckPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: (2 * BATCH) as i64,
            filter_subject: format!("{}.*.punch", self.source.subject_prefix),
            ..pull::Config::default()
        };
        if let Ok(mut c) = stream.get_consumer::<pull::Config>(name).await {
            let info = c.info().await.map_err(nats)?;
            if info.ack_floor.stream_sequence > done {
                tracing::warn!(
                    consumer = %name,
                    acknowledged = info.ack_floor.stream_sequence,
                    stored = done,
                    "results: the consumer is ahead of the results store (rebuilt or restored); reading the stream again from the store's position"
                );
            }
            stream.delete_consumer(name).await.map_err(nats)?;
        }
        let c = stream
            .create_consumer(config)
            .await
            .map_err(|e| nats(format!("consumer {name}: {e}")))?;
        Ok((c, done))
    }
}
