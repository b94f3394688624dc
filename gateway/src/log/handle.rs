//! Opening the log and the handle appenders, readers and sinks share.

use std::fs;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use super::cursor::{self, Cursor, CursorStart};
use super::cursors::Cursors;
use super::format::{self, ENTRY_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::lock::DirLock;
use super::metrics::LogMetrics;
use super::reader::LogReader;
use super::recovery::{self, QuarantinedSegment, RecoveryReport};
use super::retention::{self, RetentionReport};
use super::segment::{self, SegmentInfo};
use super::shared::{Shared, StatCounters};
use super::storage::{FsStorage, Storage};
use super::writer::{self, Msg, Outcome, Request, Writer};
use super::{LogConfig, LogError, Lsn, LsnRange};

/// Counters since the log was opened, for tests, benches and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    /// Records made durable.
    pub records: u64,
    /// Batches committed (each completed its appends after its syncs).
    pub batches: u64,
    /// `fdatasync` calls on segments (a batch that rolls a segment syncs
    /// twice).
    pub fsyncs: u64,
    /// Entry bytes written (headers included).
    pub bytes_written: u64,
    /// Bytes the segments occupy on disk now.
    pub used_bytes: u64,
    /// LSN after the last synced entry.
    pub committed: Lsn,
    /// Appends refused because the queue was full.
    pub rejected_busy: u64,
    /// Appends refused because the log was at its size cap.
    pub rejected_full: u64,
}

/// Records packed for one [`LogHandle::append_batch`]: one allocation for
/// many records, and one completion for all of them.
#[derive(Debug, Default, Clone)]
pub struct RecordBatch {
    buf: Vec<u8>,
    count: u32,
    max_payload: usize,
}

impl RecordBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `records` records of `payload_bytes`
    /// payload bytes in total.
    pub fn with_capacity(records: usize, payload_bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(records * ENTRY_HEADER_LEN + payload_bytes),
            count: 0,
            max_payload: 0,
        }
    }

    /// Adds a record; `time_ms` is its time in ms since the Unix epoch.
    pub fn push(&mut self, payload: &[u8], time_ms: u64) {
        format::push_unstamped(&mut self.buf, payload, time_ms);
        self.count += 1;
        self.max_payload = self.max_payload.max(payload.len());
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the batch takes in the log (checked against `max_batch_bytes`).
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Removes every record, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.max_payload = 0;
    }
}

/// Why [`LogHandle::append_pings`] did not queue a ping batch.
#[derive(Debug)]
pub enum PingAppendError {
    /// Shed to keep the writer and the log's last space for punches.
    Shed,
    /// The log refused it as it would any append.
    Log(LogError),
}

/// Holds the writer while alive (see [`LogHandle::hold_writer`]).
#[doc(hidden)]
#[must_use = "the writer resumes when the hold is dropped"]
pub struct WriterHold<'a>(&'a LogHandle);

impl Drop for WriterHold<'_> {
    fn drop(&mut self) {
        self.0.shared().held.store(false, Ordering::Release);
    }
}

/// An append in flight. Resolves to the LSNs given to its records once they
/// are synced, or to the reason they were not written. Dropping it does not
/// cancel the append.
#[must_use = "an append is only durable once its Pending resolves to Ok"]
#[derive(Debug)]
pub struct Pending {
    rx: oneshot::Receiver<Result<Lsn, LogError>>,
    count: u32,
}

impl Pending {
    fn map(
        count: u32,
        r: Result<Result<Lsn, LogError>, oneshot::error::RecvError>,
    ) -> Result<LsnRange, LogError> {
        match r {
            Ok(Ok(first)) => Ok(LsnRange { first, count }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(LogError::Closed),
        }
    }

    /// Blocks the thread until the append is synced. Not for async code
    /// (it panics inside a tokio runtime); await the `Pending` there.
    pub fn wait(self) -> Result<LsnRange, LogError> {
        Self::map(self.count, self.rx.blocking_recv())
    }
}

impl Future for Pending {
    type Output = Result<LsnRange, LogError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let count = self.count;
        Pin::new(&mut self.rx).poll(cx).map(|r| Self::map(count, r))
    }
}

/// The handle to an open log: append, read, manage cursors and retention.
/// Cheap to clone. The writer stops when [`LogHandle::close`] is called or
/// the last clone is dropped, after committing everything submitted before.
#[derive(Clone)]
pub struct LogHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    writer: Mutex<WriterSlot>,
}

/// Who runs the writer.
enum WriterSlot {
    /// Its own thread (production).
    Thread(JoinHandle<()>),
    /// The caller, through [`LogHandle::step`] (the power-loss simulation).
    Stepped(Box<Writer>),
    /// Stopped by [`LogHandle::close`].
    Stopped,
}

impl HandleInner {
    fn shutdown(&self) {
        let slot = std::mem::replace(
            &mut *self.writer.lock().unwrap_or_else(PoisonError::into_inner),
            WriterSlot::Stopped,
        );
        match slot {
            WriterSlot::Thread(join) => {
                // Queued behind every earlier append, so those are committed first.
                let _ = self.tx.send(Msg::Shutdown);
                if join.join().is_err() {
                    tracing::error!("durable log writer thread panicked");
                }
            }
            WriterSlot::Stepped(mut w) => {
                // Commit what was submitted, as the thread does on shutdown.
                while w.step() {}
                w.finish();
            }
            WriterSlot::Stopped => {}
        }
    }
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("dir", &self.inner.shared.cfg.dir)
            .finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Opens (or creates) the log in `cfg.dir`: locks the folder, recovers
    /// it (see the module docs), loads the cursors, starts a new segment and
    /// the writer thread. Register the metrics recorder before calling this.
    pub fn open(cfg: LogConfig) -> Result<(Self, RecoveryReport), LogError> {
        Self::open_with(cfg, Arc::new(FsStorage))
    }

    /// Like [`LogHandle::open`], with the segment files kept in `storage`
    /// instead of the local file system. The lock file and the cursors stay
    /// on the local file system in `cfg.dir`.
    pub fn open_with(
        cfg: LogConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<(Self, RecoveryReport), LogError> {
        Self::open_inner(cfg, storage, true)
    }

    /// Like [`LogHandle::open_with`] but without a writer thread: nothing is
    /// committed until the caller calls [`LogHandle::step`]. For the
    /// deterministic power-loss simulation; `max_batch_delay` should be zero
    /// there, because a step waits for it.
    #[doc(hidden)]
    pub fn open_stepped(
        cfg: LogConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<(Self, RecoveryReport), LogError> {
        Self::open_inner(cfg, storage, false)
    }

    /// Runs one group commit of a log opened with
    /// [`LogHandle::open_stepped`]: the same code the writer thread runs for
    /// one batch. Returns whether an append was waiting (always `false` for
    /// a log with a writer thread).
    #[doc(hidden)]
    pub fn step(&self) -> bool {
        match &mut *self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            WriterSlot::Stepped(w) => w.step(),
            WriterSlot::Thread(_) | WriterSlot::Stopped => false,
        }
    }

    fn open_inner(
        cfg: LogConfig,
        storage: Arc<dyn Storage>,
        thread: bool,
    ) -> Result<(Self, RecoveryReport), LogError> {
        cfg.validate()?;
        let dir = cfg.dir.clone();
        let cursor_dir = dir.join("cursors");
        fs::create_dir_all(&cursor_dir)
            .map_err(|e| LogError::io("create log folder", &cursor_dir, e))?;
        let lock = DirLock::acquire(&dir)?;
        let mut rec = recovery::recover(&*storage, &dir)?;
        let metrics = LogMetrics::register();
        metrics.capacity_bytes.set(cfg.max_bytes as f64);
        if let Some(t) = &rec.report.truncation {
            metrics.truncated_bytes.increment(t.bytes);
            tracing::warn!(report = %rec.report, "durable log cut a torn tail");
        }
        let cursors = Cursors::load(&dir, rec.next_lsn)?;
        recovery::settle_damage(&*storage, &dir, &mut rec, &cursors.list())?;
        if !rec.report.quarantined.is_empty() {
            metrics
                .segments_quarantined
                .increment(rec.report.quarantined.len() as u64);
            tracing::error!(report = %rec.report, "durable log quarantined segments at open");
        }
        let max_unsynced = cfg.max_batch_bytes as u32;
        let (file, path) = segment::create_segment(&*storage, &dir, rec.next_lsn, max_unsynced)?;
        let active = SegmentInfo {
            first_lsn: rec.next_lsn,
            end_lsn: rec.next_lsn,
            bytes: SEGMENT_HEADER_LEN as u64,
            min_time_ms: None,
            max_time_ms: None,
            active: true,
        };
        let mut segments = rec.segments;
        segments.push(active.clone());
        let used: u64 = segments.iter().map(|s| s.bytes).sum();
        metrics.segments.set(segments.len() as f64);
        metrics.used_bytes.set(used as f64);
        let (tx, rx) = mpsc::sync_channel(cfg.queue_capacity);
        let (committed_tx, committed) = watch::channel(rec.next_lsn);
        let shared = Arc::new(Shared {
            segments: Mutex::new(segments),
            used_bytes: AtomicU64::new(used),
            queued_bytes: AtomicUsize::new(0),
            queued_requests: AtomicUsize::new(0),
            held: AtomicBool::new(false),
            committed,
            failed: OnceLock::new(),
            closed: AtomicBool::new(false),
            stats: StatCounters::default(),
            cursors,
            metrics,
            quarantined: rec.report.quarantined.clone(),
            cfg,
            storage,
        });
        let w = Writer {
            rx,
            committed: committed_tx,
            shared: shared.clone(),
            file,
            path,
            active,
            next_lsn: rec.next_lsn,
            seg_crc: 0,
            buf: Vec::with_capacity(shared.cfg.max_batch_bytes.min(8 << 20)),
            batch: Vec::with_capacity(shared.cfg.max_batch_records.min(65536)),
            batch_bytes: 0,
            batch_records: 0,
            carry: None,
            _lock: lock,
        };
        let slot = if thread {
            let join = std::thread::Builder::new()
                .name("fencegate-log".into())
                .spawn(move || w.run())
                .map_err(|e| LogError::io("spawn writer thread for", &dir, e))?;
            WriterSlot::Thread(join)
        } else {
            WriterSlot::Stepped(Box::new(w))
        };
        let inner = HandleInner {
            tx,
            shared,
            writer: Mutex::new(slot),
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            rec.report,
        ))
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The settings the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.shared().cfg
    }

    /// Submits one record. Fails at once with `Busy` (queue full), `Full`
    /// (size cap), `TooLarge`, `WriteFailed` or `Closed`; otherwise returns a
    /// [`Pending`] that resolves to the record's LSN once it is synced.
    pub fn append(&self, payload: &[u8], time_ms: u64) -> Result<Pending, LogError> {
        let max = self.shared().cfg.max_record_bytes;
        if payload.len() > max {
            return Err(LogError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let mut buf = Vec::with_capacity(ENTRY_HEADER_LEN + payload.len());
        format::push_unstamped(&mut buf, payload, time_ms);
        self.submit(buf, 1, false)
    }

    /// Submits many records with one completion; they get consecutive LSNs.
    /// Same failures as [`LogHandle::append`], for the whole batch.
    pub fn append_batch(&self, batch: RecordBatch) -> Result<Pending, LogError> {
        self.check_batch(&batch)?;
        self.submit(batch.buf, batch.count, false)
    }

    /// Submits a batch of pings, which yield to punches: it is shed (nothing
    /// queued, [`PingAppendError::Shed`]) when the writer's queue is above
    /// the pings' watermark (half of one group commit's bytes, or half of
    /// `queue_capacity` appends) or when the log's free space is down to
    /// the punches' reserve (the last sixteenth of `max_bytes`). Punches,
    /// appended with [`LogHandle::append`], may use the whole queue and the
    /// whole log: a ping flood fills at most half of any group commit and
    /// cannot make the log full for punches. One load of two counters per
    /// batch, no lock.
    pub fn append_pings(&self, batch: RecordBatch) -> Result<Pending, PingAppendError> {
        self.check_batch(&batch).map_err(PingAppendError::Log)?;
        if self.sheds_pings(batch.buf.len()) {
            return Err(PingAppendError::Shed);
        }
        self.submit(batch.buf, batch.count, false)
            .map_err(PingAppendError::Log)
    }

    /// Whether a ping batch of `len` bytes would be shed now (see
    /// [`LogHandle::append_pings`]).
    pub fn sheds_pings(&self, len: usize) -> bool {
        let sh = self.shared();
        let cfg = &sh.cfg;
        let watermark_bytes = cfg.max_queued_bytes.min(cfg.max_batch_bytes) / 2;
        let watermark_requests = (cfg.queue_capacity / 2).max(1);
        let reserve = cfg.max_bytes / 16;
        sh.queued_bytes.load(Ordering::Relaxed) + len > watermark_bytes
            || sh.queued_requests.load(Ordering::Relaxed) >= watermark_requests
            || sh.used_bytes.load(Ordering::Relaxed) + len as u64 + reserve > cfg.max_bytes
    }

    /// Test hook: the writer takes no new batch until the returned guard is
    /// dropped, so appends queue up (each test that uses it shows pings
    /// shed while punches still queue). Appends already in a batch finish.
    #[doc(hidden)]
    pub fn hold_writer(&self) -> WriterHold<'_> {
        self.shared().held.store(true, Ordering::Release);
        WriterHold(self)
    }

    /// Appends one record and blocks until it is synced, waiting for queue
    /// space instead of failing with `Busy`. For benches and tools; not for
    /// async code.
    pub fn append_blocking(&self, payload: &[u8], time_ms: u64) -> Result<Lsn, LogError> {
        let max = self.shared().cfg.max_record_bytes;
        if payload.len() > max {
            return Err(LogError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let mut buf = Vec::with_capacity(ENTRY_HEADER_LEN + payload.len());
        format::push_unstamped(&mut buf, payload, time_ms);
        Ok(self.submit(buf, 1, true)?.wait()?.first)
    }

    /// Submits a batch, waiting for queue space instead of failing with
    /// `Busy`; returns the [`Pending`] to wait on. For benches and tools.
    pub fn append_batch_blocking(&self, batch: RecordBatch) -> Result<Pending, LogError> {
        self.check_batch(&batch)?;
        self.submit(batch.buf, batch.count, true)
    }

    fn check_batch(&self, batch: &RecordBatch) -> Result<(), LogError> {
        let cfg = &self.shared().cfg;
        if batch.max_payload > cfg.max_record_bytes {
            return Err(LogError::TooLarge {
                len: batch.max_payload,
                max: cfg.max_record_bytes,
            });
        }
        if batch.buf.len() > cfg.max_batch_bytes {
            return Err(LogError::TooLarge {
                len: batch.buf.len(),
                max: cfg.max_batch_bytes,
            });
        }
        Ok(())
    }

    fn submit(&self, buf: Vec<u8>, count: u32, block: bool) -> Result<Pending, LogError> {
        let sh = self.shared();
        if let Some(&kind) = sh.failed.get() {
            return Err(LogError::WriteFailed { kind });
        }
        if sh.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let (done, rx) = oneshot::channel();
        if count == 0 {
            let _ = done.send(Ok(*sh.committed.borrow()));
            return Ok(Pending { rx, count });
        }
        let len = buf.len();
        let used = sh.used_bytes.load(Ordering::Acquire);
        if used + len as u64 > sh.cfg.max_bytes {
            sh.metrics.rejected_full.increment(1);
            sh.stats.rejected_full.fetch_add(1, Ordering::Relaxed);
            return Err(LogError::Full {
                used,
                max: sh.cfg.max_bytes,
            });
        }
        let queued = sh.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if !block && queued + len > sh.cfg.max_queued_bytes {
            sh.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(self.busy());
        }
        sh.queued_requests.fetch_add(1, Ordering::Relaxed);
        let req = Request {
            buf,
            count,
            enqueued: writer::monotonic_now(),
            done,
            outcome: Outcome::Pending,
        };
        let sent = if block {
            self.inner
                .tx
                .send(Msg::Append(req))
                .map_err(|_| LogError::Closed)
        } else {
            self.inner
                .tx
                .try_send(Msg::Append(req))
                .map_err(|e| match e {
                    TrySendError::Full(_) => self.busy(),
                    TrySendError::Disconnected(_) => LogError::Closed,
                })
        };
        if let Err(e) = sent {
            sh.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            sh.queued_requests.fetch_sub(1, Ordering::Relaxed);
            return Err(e);
        }
        Ok(Pending { rx, count })
    }

    fn busy(&self) -> LogError {
        let sh = self.shared();
        sh.metrics.rejected_busy.increment(1);
        sh.stats.rejected_busy.fetch_add(1, Ordering::Relaxed);
        LogError::Busy
    }

    /// LSN after the last synced entry: every LSN below it is durable.
    pub fn committed(&self) -> Lsn {
        *self.shared().committed.borrow()
    }

    /// A watch of [`LogHandle::committed`], updated after every sync.
    pub fn subscribe(&self) -> watch::Receiver<Lsn> {
        self.shared().committed.clone()
    }

    /// Oldest LSN still stored.
    pub fn oldest(&self) -> Lsn {
        self.shared().oldest()
    }

    /// The segments on disk, oldest first (the last is active), with their
    /// LSN and time ranges.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared().lock_segments().clone()
    }

    /// Bytes the segments occupy.
    pub fn used_bytes(&self) -> u64 {
        self.shared().used_bytes.load(Ordering::Relaxed)
    }

    /// Whether appends can currently succeed: the writer runs, no write has
    /// failed and the log is below its size cap (for `/readyz`).
    pub fn is_writable(&self) -> bool {
        let sh = self.shared();
        sh.failed.get().is_none()
            && !sh.closed.load(Ordering::Acquire)
            && self.used_bytes() + (ENTRY_HEADER_LEN + sh.cfg.max_record_bytes) as u64
                <= sh.cfg.max_bytes
    }

    /// Segments moved aside (renamed to `*.seg.quarantined`) when the log
    /// was opened, because a sealed segment failed its check after every
    /// cursor had passed it. Empty on a healthy log; `/readyz` shows it so
    /// an operator looks at the disk.
    pub fn quarantined(&self) -> &[QuarantinedSegment] {
        &self.shared().quarantined
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        let s = &self.shared().stats;
        LogStats {
            records: s.records.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
            used_bytes: self.used_bytes(),
            committed: self.committed(),
            rejected_busy: s.rejected_busy.load(Ordering::Relaxed),
            rejected_full: s.rejected_full.load(Ordering::Relaxed),
        }
    }

    /// A reader of committed entries starting at `from` (which may be the
    /// current end, to follow only new entries). Fails with `Trimmed` if
    /// retention already deleted `from`.
    pub fn reader(&self, from: Lsn) -> Result<LogReader, LogError> {
        LogReader::in_process(self.shared().clone(), from)
    }

    /// Returns the named cursor, creating it at `start` if it does not
    /// exist yet (a persisted position always wins over `start`). Register
    /// every sink's cursor at start-up: retention waits for all of them.
    pub fn cursor(&self, name: &str, start: CursorStart) -> Result<Cursor, LogError> {
        cursor::register(self.shared(), name, start)
    }

    /// Deletes a cursor (a sink removed from the config) so it no longer
    /// holds back retention. Returns whether it existed.
    pub fn remove_cursor(&self, name: &str) -> Result<bool, LogError> {
        self.shared().cursors.remove(name)
    }

    /// Every cursor and its position, sorted by name.
    pub fn cursors(&self) -> Vec<(String, Lsn)> {
        self.shared().cursors.list()
    }

    /// Deletes old segments: while the log is larger than `retain_bytes`, or
    /// a segment's newest entry is older than `retain_age` at `now_ms`
    /// (ms since the Unix epoch), but never the active segment and never a
    /// segment some cursor has not passed. Blocking file I/O: call it from
    /// a blocking task every few seconds and whenever appends fail `Full`.
    pub fn retain(&self, now_ms: u64) -> Result<RetentionReport, LogError> {
        retention::retain(self.shared(), now_ms)
    }

    /// Commits everything submitted so far, stops the writer and releases
    /// the folder lock. Later appends fail with `Closed`. Blocks (joins the
    /// writer thread).
    pub fn close(&self) {
        self.inner.shutdown();
    }
}
