//! The writer thread: group commit.
//!
//! One std thread owns the active segment. It blocks for the first append,
//! gathers more (for up to `max_batch_delay`, or whatever is already queued
//! when the delay is zero) until the batch is full, writes the batch with
//! one `write`, calls `fdatasync` once, publishes the new committed LSN and
//! only then completes every append of the batch.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Instant;

use tokio::sync::oneshot;

use super::format::{self, SEGMENT_HEADER_LEN, SegmentFooter};
use super::lock::DirLock;
use super::segment::{self, SegmentInfo};
use super::shared::Shared;
use super::storage::StorageFile;
use super::{LogError, Lsn};

/// Reads the monotonic clock. The log writer is an I/O edge like the QUIC
/// endpoint: it bounds the batch delay and times `fdatasync` for metrics.
pub(crate) fn monotonic_now() -> Instant {
    crate::clock::instant()
}

/// A message to the writer.
pub(crate) enum Msg {
    /// Records to append.
    Append(Request),
    /// Commit what was submitted before, then stop.
    Shutdown,
}

/// One append submission: one or more entries, encoded but not stamped.
pub(crate) struct Request {
    pub buf: Vec<u8>,
    pub count: u32,
    pub enqueued: Instant,
    pub done: oneshot::Sender<Result<Lsn, LogError>>,
    pub outcome: Outcome,
}

/// What the writer did with a request in the current batch.
#[derive(Clone, Copy)]
pub(crate) enum Outcome {
    Pending,
    Written(Lsn),
    Full,
}

pub(crate) struct Writer {
    pub rx: Receiver<Msg>,
    pub committed: tokio::sync::watch::Sender<Lsn>,
    pub shared: Arc<Shared>,
    /// The active segment, through the log's [`super::Storage`]: one
    /// virtual `append` and one `sync_data` per batch.
    pub file: Box<dyn StorageFile>,
    pub path: PathBuf,
    /// Summary of the active segment (mirrored into `shared.segments`).
    pub active: SegmentInfo,
    pub next_lsn: Lsn,
    /// CRC32C of the active segment's entries so far, for its footer. One
    /// hardware CRC pass over each batch's bytes, per batch, not per record.
    pub seg_crc: u32,
    pub buf: Vec<u8>,
    pub batch: Vec<Request>,
    pub batch_bytes: usize,
    pub batch_records: usize,
    pub carry: Option<Request>,
    pub _lock: DirLock,
}

impl Writer {
    /// The writer thread's loop: block for an append, commit a batch,
    /// repeat until shutdown.
    pub(crate) fn run(mut self) {
        loop {
            let first = match self.carry.take() {
                Some(r) => r,
                None => match self.rx.recv() {
                    Ok(Msg::Append(r)) => r,
                    Ok(Msg::Shutdown) | Err(_) => break,
                },
            };
            // Test hook (`LogHandle::hold_writer`): one atomic load per
            // batch when unused.
            while self.shared.held.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if self.cycle(first) {
                break;
            }
        }
        self.finish();
        // Dropping `rx` fails every append still queued with `Closed`.
    }

    /// One group commit driven by the caller instead of the thread (the
    /// power-loss simulation uses it to be deterministic): if an append is
    /// queued, gathers a batch exactly as [`Writer::run`] does and commits
    /// it. Returns whether there was anything to do.
    pub(crate) fn step(&mut self) -> bool {
        let first = match self.carry.take() {
            Some(r) => r,
            None => match self.rx.try_recv() {
                Ok(Msg::Append(r)) => r,
                Ok(Msg::Shutdown) | Err(_) => return false,
            },
        };
        // A stepped writer is never sent `Shutdown`; its owner stops stepping.
        let _ = self.cycle(first);
        true
    }

    /// Gathers a batch starting with `first` and commits it. Returns whether
    /// a shutdown was received while gathering.
    fn cycle(&mut self, first: Request) -> bool {
        let delay = self.shared.cfg.max_batch_delay;
        let mut shutdown = false;
        self.take(first);
        let deadline = (!delay.is_zero()).then(|| monotonic_now() + delay);
        while !self.batch_full() {
            let msg = match deadline {
                None => match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                },
                Some(d) => match self
                    .rx
                    .recv_timeout(d.saturating_duration_since(monotonic_now()))
                {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            };
            match msg {
                Msg::Append(r) if self.fits(&r) => self.take(r),
                Msg::Append(r) => {
                    self.carry = Some(r);
                    break;
                }
                Msg::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
        }
        self.commit();
        shutdown
    }

    /// Marks the log closed (a stepped writer's owner calls it when done).
    pub(crate) fn finish(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

    fn take(&mut self, r: Request) {
        self.shared
            .queued_bytes
            .fetch_sub(r.buf.len(), Ordering::Relaxed);
        self.shared.queued_requests.fetch_sub(1, Ordering::Relaxed);
        self.batch_bytes += r.buf.len();
        self.batch_records += r.count as usize;
        self.batch.push(r);
    }

    fn fits(&self, r: &Request) -> bool {
        let cfg = &self.shared.cfg;
        self.batch_bytes + r.buf.len() <= cfg.max_batch_bytes
            && self.batch_records + r.count as usize <= cfg.max_batch_records
    }

    fn batch_full(&self) -> bool {
        let cfg = &self.shared.cfg;
        self.batch_records >= cfg.max_batch_records || self.batch_bytes >= cfg.max_batch_bytes
    }

    fn commit(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        if let Some(&kind) = self.shared.failed.get() {
            self.fail_batch(kind);
            return;
        }
        match self.write_batch() {
            Ok(()) => self.complete_batch(),
            Err(e) => {
                let kind = match &e {
                    LogError::Io { source, .. } => source.kind(),
                    _ => std::io::ErrorKind::Other,
                };
                tracing::error!(error = %e, "durable log write failed; refusing appends until restart");
                self.shared.metrics.write_errors.increment(1);
                let _ = self.shared.failed.set(kind);
                self.fail_batch(kind);
            }
        }
    }

    /// Writes and syncs the batch (rolling segments as needed); records the
    /// outcome of every request.
    fn write_batch(&mut self) -> Result<(), LogError> {
        let cfg = &self.shared.cfg;
        let (max_bytes, segment_bytes) = (cfg.max_bytes, cfg.segment_bytes);
        let used0 = self.shared.used_bytes.load(Ordering::Acquire);
        let mut added = 0u64;
        let mut lsn = self.next_lsn;
        self.buf.clear();
        for i in 0..self.batch.len() {
            let len = self.batch[i].buf.len() as u64;
            let seg_len = self.active.bytes + self.buf.len() as u64;
            let roll = seg_len > SEGMENT_HEADER_LEN as u64 && seg_len + len > segment_bytes;
            let header = if roll { SEGMENT_HEADER_LEN as u64 } else { 0 };
            if used0 + added + header + len > max_bytes {
                self.batch[i].outcome = Outcome::Full;
                continue;
            }
            if roll {
                self.roll(lsn)?;
                added += header;
            }
            let start = self.buf.len();
            self.buf.extend_from_slice(&self.batch[i].buf);
            let first = lsn;
            let mut off = start;
            while off < self.buf.len() {
                let (n, t) = format::stamp(&mut self.buf[off..], lsn);
                self.active.note_time(t);
                lsn.0 += 1;
                off += n;
            }
            added += len;
            self.batch[i].outcome = Outcome::Written(first);
        }
        self.flush_and_sync()?;
        self.active.end_lsn = lsn;
        self.next_lsn = lsn;
        self.shared.used_bytes.fetch_add(added, Ordering::AcqRel);
        {
            let mut segs = self.shared.lock_segments();
            if let Some(last) = segs.last_mut() {
                *last = self.active.clone();
            }
        }
        self.committed.send_replace(lsn);
        Ok(())
    }

    /// Writes the pending bytes to the active segment and syncs it.
    fn flush_and_sync(&mut self) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .append(&self.buf)
            .map_err(|e| LogError::io("write segment", &self.path, e))?;
        let t0 = monotonic_now();
        self.file
            .sync_data()
            .map_err(|e| LogError::io("fdatasync segment", &self.path, e))?;
        let m = &self.shared.metrics;
        m.fsync_seconds.record(t0.elapsed().as_secs_f64());
        m.fsyncs.increment(1);
        m.bytes_written.increment(self.buf.len() as u64);
        self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .bytes_written
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.active.bytes += self.buf.len() as u64;
        self.seg_crc = crc32c::crc32c_append(self.seg_crc, &self.buf);
        self.buf.clear();
        Ok(())
    }

    /// Seals the active segment (its pending bytes synced, then its footer
    /// written durably) and starts a new one at `next`. The footer is
    /// durable before the next segment exists, so a segment followed by
    /// another one never has a footer that its own bytes contradict.
    fn roll(&mut self, next: Lsn) -> Result<(), LogError> {
        self.flush_and_sync()?;
        self.active.end_lsn = next;
        let dir = &self.shared.cfg.dir;
        // `roll` is only called for a segment holding entries, so both
        // times are set; the fallback keeps the footer valid regardless.
        let footer = SegmentFooter {
            first_lsn: self.active.first_lsn,
            end_lsn: next,
            seg_len: self.active.bytes,
            min_time_ms: self.active.min_time_ms.unwrap_or(0),
            max_time_ms: self.active.max_time_ms.unwrap_or(0),
            entries_crc: self.seg_crc,
        };
        segment::write_footer(&*self.shared.storage, dir, &footer)?;
        self.seg_crc = 0;
        let (file, path) = segment::create_segment(
            &*self.shared.storage,
            dir,
            next,
            self.shared.cfg.max_batch_bytes as u32,
        )?;
        let sealed = std::mem::replace(
            &mut self.active,
            SegmentInfo {
                first_lsn: next,
                end_lsn: next,
                bytes: SEGMENT_HEADER_LEN as u64,
                min_time_ms: None,
                max_time_ms: None,
                active: true,
            },
        );
        self.file = file;
        self.path = path;
        let n = {
            let mut segs = self.shared.lock_segments();
            if let Some(last) = segs.last_mut() {
                *last = SegmentInfo {
                    active: false,
                    ..sealed
                };
            }
            segs.push(self.active.clone());
            segs.len()
        };
        self.shared.metrics.segments.set(n as f64);
        Ok(())
    }

    fn complete_batch(&mut self) {
        let m = &self.shared.metrics;
        let stats = &self.shared.stats;
        let oldest = self.batch[0].enqueued;
        let used = self.shared.used_bytes.load(Ordering::Relaxed);
        let max = self.shared.cfg.max_bytes;
        let (mut records, mut full) = (0u64, 0u64);
        for r in &self.batch {
            match r.outcome {
                Outcome::Written(_) => records += u64::from(r.count),
                Outcome::Full => full += 1,
                Outcome::Pending => {}
            }
        }
        // Counted before anyone is answered, so an appender that got its
        // ack reads stats that include it (CI caught `stats().records`
        // one batch behind the acks).
        stats.records.fetch_add(records, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        if full > 0 {
            m.rejected_full.increment(full);
            stats.rejected_full.fetch_add(full, Ordering::Relaxed);
        }
        m.records.increment(records);
        for r in self.batch.drain(..) {
            let res = match r.outcome {
                Outcome::Written(first) => Ok(first),
                Outcome::Full => Err(LogError::Full { used, max }),
                Outcome::Pending => Err(LogError::Closed),
            };
            // The appender may have given up waiting; that is fine.
            let _ = r.done.send(res);
        }
        m.commit_latency.record(oldest.elapsed().as_secs_f64());
        m.batch_records.record(records as f64);
        m.used_bytes.set(used as f64);
        self.batch_bytes = 0;
        self.batch_records = 0;
    }

    fn fail_batch(&mut self, kind: std::io::ErrorKind) {
        for r in self.batch.drain(..) {
            let _ = r.done.send(Err(LogError::WriteFailed { kind }));
        }
        self.batch_bytes = 0;
        self.batch_records = 0;
    }
}
