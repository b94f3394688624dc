//! The forwarder loop of one sink: read a batch from the cursor, deliver it
//! with retries, move and persist the cursor.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dead_letter::{DeadLetter, DeadRecord};
use super::health::{SinkHealth, SinkState};
use super::{Backoff, Batch, Sink, SinkError};
use crate::clock;
use crate::log::{Cursor, LogError, LogHandle, LogReader, Lsn};

/// How a forwarder batches, retries and checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSettings {
    /// Most log entries in one batch.
    pub max_batch: usize,
    /// Most payload bytes in one batch (a batch is closed once it passes
    /// this).
    pub max_batch_bytes: usize,
    /// How long a batch waits for more entries after its first one before
    /// it is delivered anyway; zero delivers whatever is available at once.
    pub linger: Duration,
    /// Longest time between persisting the cursor while records flow. A
    /// crash redelivers at most this much (downstreams drop the copies).
    pub checkpoint_interval: Duration,
    /// First retry delay after a failure.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl Default for ForwardSettings {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            max_batch_bytes: 4 << 20,
            linger: Duration::ZERO,
            checkpoint_interval: Duration::from_millis(250),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}

/// Delivers one sink's share of the log: at least once, in LSN order,
/// moving the sink's cursor only past batches the sink confirmed.
pub struct Forwarder<S> {
    sink: S,
    log: LogHandle,
    cursor: Cursor,
    settings: ForwardSettings,
    health: Arc<SinkHealth>,
    dead_letter: Option<DeadLetter>,
}

impl<S> std::fmt::Debug for Forwarder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("cursor", &self.cursor)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why the loop ended.
enum Exit {
    Stopped,
    LogClosed,
}

impl<S: Sink> Forwarder<S> {
    /// A forwarder delivering `log` from `cursor` to `sink`.
    pub fn new(
        sink: S,
        log: LogHandle,
        cursor: Cursor,
        settings: ForwardSettings,
        health: Arc<SinkHealth>,
    ) -> Self {
        Self {
            sink,
            log,
            cursor,
            settings,
            health,
            dead_letter: None,
        }
    }

    /// Sends records the sink refuses for good ([`SinkError::is_permanent`])
    /// to `dead_letter` and moves on. Without one, every failure is retried
    /// (the cursor waits).
    pub fn with_dead_letter(mut self, dead_letter: DeadLetter) -> Self {
        self.dead_letter = Some(dead_letter);
        self
    }

    /// [`Forwarder::run`], logging how it ended.
    pub async fn run_logged(self, stop: CancellationToken) {
        let name = self.health.name().to_owned();
        match self.run(stop).await {
            Ok(pos) => tracing::info!(sink = %name, position = %pos, "sink forwarder stopped"),
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "sink forwarder stopped: cannot persist its cursor")
            }
        }
    }

    /// Runs until `stop` is cancelled or the log closes, then persists the
    /// cursor at the last confirmed position and returns it.
    pub async fn run(mut self, stop: CancellationToken) -> Result<Lsn, LogError> {
        let mut ckpt = Checkpoint::new(
            self.cursor.clone(),
            self.log.clone(),
            self.health.clone(),
            self.settings.checkpoint_interval,
        );
        let mut next = self.cursor.position();
        let _ = self.forward(&mut next, &mut ckpt, &stop).await;
        self.health.set_state(SinkState::Stopped);
        self.health.pending(None);
        ckpt.finish(next).await
    }

    async fn forward(
        &mut self,
        next: &mut Lsn,
        ckpt: &mut Checkpoint,
        stop: &CancellationToken,
    ) -> Exit {
        let mut backoff = Backoff::new(self.settings.retry_initial, self.settings.retry_max);
        let mut batch = Batch::new(*next, self.settings.max_batch.min(4096));
        let mut reader: Option<LogReader> = None;
        loop {
            // (Re)open the reader at the confirmed position.
            let r = match reader.as_mut() {
                Some(r) => r,
                None => match self.cursor.reader() {
                    Ok(r) => reader.insert(r),
                    Err(e) => {
                        if self.pause(&SinkError::Log(e), &mut backoff, stop).await {
                            return Exit::Stopped;
                        }
                        continue;
                    }
                },
            };
            batch.reset(*next);
            match self.fill(r, &mut batch, ckpt, *next, stop).await {
                Ok(None) => {}
                Ok(Some(exit)) => return exit,
                Err(e) => {
                    // Drop the reader and start again from the confirmed position.
                    reader = None;
                    if self.pause(&SinkError::Log(e), &mut backoff, stop).await {
                        return Exit::Stopped;
                    }
                    continue;
                }
            }
            batch.seal();
            self.health.pending(batch.first_time_ms());
            let mut duplicates = 0;
            let mut delivered = batch.len() as u64;
            if !batch.is_empty() {
                loop {
                    let res = tokio::select! {
                        r = self.sink.deliver(&batch) => r,
                        () = stop.cancelled() => return Exit::Stopped,
                    };
                    match res {
                        Ok(d) => {
                            duplicates = d.duplicates;
                            backoff.reset();
                            break;
                        }
                        Err(e) if e.is_permanent() && self.dead_letter.is_some() => {
                            self.health.failed(&e, clock::unix_ms());
                            match self.isolate(&batch, &mut backoff, stop).await {
                                Some((ok, dup)) => {
                                    (delivered, duplicates) = (ok, dup);
                                    break;
                                }
                                None => return Exit::Stopped,
                            }
                        }
                        Err(e) => {
                            if self.pause(&e, &mut backoff, stop).await {
                                return Exit::Stopped;
                            }
                        }
                    }
                }
            }
            *next = batch.end_lsn();
            self.health.confirmed(
                *next,
                delivered,
                duplicates,
                batch.merged(),
                batch.invalid(),
            );
            ckpt.maybe(*next, false);
        }
    }

    /// The sink refused `batch` for good: deliver it one record at a time,
    /// so only the records it refuses are dead-lettered (durably, before the
    /// cursor moves past them) and the rest go through. Transient failures
    /// of a single record are retried as usual. Returns (delivered,
    /// duplicates), or `None` when stopped.
    async fn isolate(
        &mut self,
        batch: &Batch,
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Option<(u64, u64)> {
        let dl = self.dead_letter.clone().expect("checked by the caller");
        let (mut delivered, mut duplicates) = (0, 0);
        let mut dead = Vec::new();
        let mut one = Batch::new(batch.first_lsn(), 1);
        for rec in batch.records() {
            one.reset(rec.lsn());
            one.offer(rec.lsn(), rec.time_ms(), rec.payload());
            one.seal();
            loop {
                let res = tokio::select! {
                    r = self.sink.deliver(&one) => r,
                    () = stop.cancelled() => return None,
                };
                match res {
                    Ok(d) => {
                        delivered += 1;
                        duplicates += d.duplicates;
                        backoff.reset();
                        break;
                    }
                    Err(e) if e.is_permanent() => {
                        tracing::warn!(
                            sink = %self.health.name(),
                            lsn = %rec.lsn(),
                            record_id = %hex::encode(rec.record_id()),
                            error = %e,
                            "the sink refused a record for good; it goes to the dead-letter file"
                        );
                        dead.push(DeadRecord::new(&rec, &e.to_string(), clock::unix_ms()));
                        break;
                    }
                    Err(e) => {
                        if self.pause(&e, backoff, stop).await {
                            return None;
                        }
                    }
                }
            }
        }
        // The dead letters must be durable before the cursor passes them:
        // retention may then delete the only other copy.
        let n = dead.len() as u64;
        loop {
            let (dl, dead) = (dl.clone(), dead.clone());
            let res = tokio::task::spawn_blocking(move || dl.write(&dead)).await;
            match res {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    if self.pause(&SinkError::Io(e), backoff, stop).await {
                        return None;
                    }
                }
                Err(e) => {
                    if self
                        .pause(&SinkError::Other(e.to_string()), backoff, stop)
                        .await
                    {
                        return None;
                    }
                }
            }
        }
        self.health.dead_lettered(n);
        Some((delivered, duplicates))
    }

    /// Records a failure and sleeps the backoff delay; true when stopped.
    async fn pause(&self, e: &SinkError, backoff: &mut Backoff, stop: &CancellationToken) -> bool {
        self.health.failed(e, clock::unix_ms());
        let delay = backoff
            .next_delay()
            .max(e.retry_after().unwrap_or_default());
        tracing::warn!(
            sink = %self.health.name(),
            attempt = backoff.attempts(),
            retry_in_ms = delay.as_millis() as u64,
            error = %e,
            "sink delivery failed; the records stay in the log and are retried"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => false,
            () = stop.cancelled() => true,
        }
    }

    /// Fills `batch` from `reader`: everything available up to the batch
    /// limits, waiting for new commits while the batch is empty and, with a
    /// linger, until the linger ends or the batch is full.
    async fn fill(
        &self,
        reader: &mut LogReader,
        batch: &mut Batch,
        ckpt: &mut Checkpoint,
        next: Lsn,
        stop: &CancellationToken,
    ) -> Result<Option<Exit>, LogError> {
        let s = &self.settings;
        let mut deadline: Option<Instant> = None;
        loop {
            let full = off_the_reactor(|| read_available(reader, batch, s))?;
            if batch.entries() > 0 && deadline.is_none() && !s.linger.is_zero() {
                deadline = Some(crate::clock::tokio_now() + s.linger);
            }
            if full || (batch.entries() > 0 && s.linger.is_zero()) {
                return Ok(None);
            }
            if deadline.is_some_and(|d| d <= crate::clock::tokio_now()) {
                return Ok(None);
            }
            if batch.entries() == 0 {
                // Caught up: nothing pending; persist the position soon.
                self.health.pending(None);
                if self.health.state() == SinkState::Starting {
                    self.health.set_state(SinkState::Up);
                }
            } else {
                self.health.pending(batch.first_time_ms());
            }
            ckpt.maybe(next, false);
            let ckpt_wait = ckpt.wait_hint(next);
            tokio::select! {
                r = reader.wait() => match r {
                    Ok(()) => {}
                    Err(LogError::Closed) => return Ok(Some(Exit::LogClosed)),
                    Err(e) => return Err(e),
                },
                () = sleep_until_opt(deadline) => {}
                () = sleep_opt(ckpt_wait) => {}
                () = stop.cancelled() => return Ok(Some(Exit::Stopped)),
            }
        }
    }
}

/// Reads committed entries into `batch` until the log has no more or the
/// batch is full; returns whether it is full.
fn read_available(
    reader: &mut LogReader,
    batch: &mut Batch,
    s: &ForwardSettings,
) -> Result<bool, LogError> {
    while (batch.entries() as usize) < s.max_batch && batch.payload_bytes() < s.max_batch_bytes {
        match reader.next_entry()? {
            Some(e) => {
                batch.offer(e.lsn, e.time_ms, e.payload);
            }
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// Runs blocking log reads so they do not stall the runtime's worker: a
/// catch-up after an outage reads gigabytes, which would otherwise hold a
/// worker (and the QUIC connections on it) for as long. On a multi-thread
/// runtime the worker's other tasks move elsewhere while `f` runs; a
/// current-thread runtime (tests) has no other worker, so `f` just runs.
fn off_the_reactor<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Persists the cursor off the delivery path: at most one store in flight,
/// at most one per interval while records flow, and a final one on stop.
/// Each store is followed by a retention pass when the log is full, so a
/// sink that catches up frees space for new punches at once.
struct Checkpoint {
    cursor: Cursor,
    log: LogHandle,
    health: Arc<SinkHealth>,
    interval: Duration,
    stored: Lsn,
    last: Instant,
    inflight: Option<JoinHandle<Result<Lsn, LogError>>>,
}

impl Checkpoint {
    fn new(cursor: Cursor, log: LogHandle, health: Arc<SinkHealth>, interval: Duration) -> Self {
        let stored = cursor.position();
        Self {
            cursor,
            log,
            health,
            interval,
            stored,
            last: crate::clock::tokio_now(),
            inflight: None,
        }
    }

    fn collect(&mut self) {
        let Some(h) = self.inflight.as_mut() else {
            return;
        };
        let Some(res) = h.now_or_never() else {
            return;
        };
        self.inflight = None;
        match res {
            Ok(Ok(pos)) => {
                self.stored = pos;
                self.health.persisted(pos);
            }
            Ok(Err(e)) => tracing::error!(
                sink = %self.health.name(),
                error = %e,
                "cannot persist the sink cursor; retrying (a restart would redeliver more)"
            ),
            Err(e) => {
                tracing::error!(sink = %self.health.name(), error = %e, "cursor store task failed")
            }
        }
    }

    /// Stores `pos` if it moved and the interval passed (or `force`).
    fn maybe(&mut self, pos: Lsn, force: bool) {
        self.collect();
        if self.inflight.is_some() || pos == self.stored {
            return;
        }
        if !force && self.last.elapsed() < self.interval {
            return;
        }
        self.last = crate::clock::tokio_now();
        let (cursor, log) = (self.cursor.clone(), self.log.clone());
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            cursor.store(pos)?;
            if !log.is_writable() {
                let report = log.retain(clock::unix_ms().max(0) as u64)?;
                if report.deleted_segments > 0 {
                    tracing::info!(
                        freed_bytes = report.freed_bytes,
                        segments = report.deleted_segments,
                        "log was full; a sink caught up and retention freed space"
                    );
                }
            }
            Ok(pos)
        }));
    }

    /// How long until a pending position should be stored, if one is.
    fn wait_hint(&self, pos: Lsn) -> Option<Duration> {
        if pos == self.stored && self.inflight.is_none() {
            return None;
        }
        Some(
            self.interval
                .saturating_sub(self.last.elapsed())
                .max(Duration::from_millis(5)),
        )
    }

    /// Waits for the store in flight, then stores `pos`.
    async fn finish(mut self, pos: Lsn) -> Result<Lsn, LogError> {
        if let Some(h) = self.inflight.take() {
            if let Ok(Ok(p)) = h.await {
                self.stored = p;
            }
        }
        if pos != self.stored {
            match self.cursor.store_async(pos).await {
                Ok(()) => {}
                // The log closed first; the last stored position stands.
                Err(LogError::Closed) => return Ok(self.stored),
                Err(e) => return Err(e),
            }
            self.health.persisted(pos);
        }
        Ok(pos)
    }
}
