//! The state the log's parts share: the handle, the writer thread, readers,
//! cursors and retention all hold one `Arc<Shared>`. It sits below all of
//! them and imports none of them back, so the log reads top-down:
//! `handle` → `writer`/`reader`/`cursor`/`retention` → `shared` → `cursors`,
//! `segment`, `storage`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::watch;

use super::cursors::Cursors;
use super::metrics::LogMetrics;
use super::recovery::QuarantinedSegment;
use super::segment::SegmentInfo;
use super::storage::Storage;
use super::{LogConfig, Lsn};

/// State shared by the handle, the writer, readers and cursors.
pub(crate) struct Shared {
    pub cfg: LogConfig,
    /// Where the segment files live.
    pub storage: Arc<dyn Storage>,
    /// Every segment on disk, oldest first; the last one is active.
    pub segments: Mutex<Vec<SegmentInfo>>,
    pub used_bytes: AtomicU64,
    pub queued_bytes: AtomicUsize,
    /// Appends waiting for the writer (submitted, not yet taken into a
    /// batch), for the pings' watermark.
    pub queued_requests: AtomicUsize,
    /// Test hook ([`LogHandle::hold_writer`]): while set, the writer takes
    /// no new batch, so a test can fill the queue deterministically.
    pub held: AtomicBool,
    /// LSN after the last synced entry. The writer owns the sender, so
    /// followers see the watch close when the writer stops.
    pub committed: watch::Receiver<Lsn>,
    /// Set once when a write or sync fails.
    pub failed: OnceLock<std::io::ErrorKind>,
    pub closed: AtomicBool,
    pub stats: StatCounters,
    pub cursors: Cursors,
    pub metrics: LogMetrics,
    /// Segments moved aside when the log was opened (for `/readyz`).
    pub quarantined: Vec<QuarantinedSegment>,
}

impl Shared {
    pub(crate) fn lock_segments(&self) -> MutexGuard<'_, Vec<SegmentInfo>> {
        // A panic while holding the lock leaves a consistent list (every
        // update is a single assignment or push), so keep going.
        self.segments.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn oldest(&self) -> Lsn {
        self.lock_segments().first().map_or(Lsn(0), |s| s.first_lsn)
    }
}

#[derive(Default)]
pub(crate) struct StatCounters {
    pub records: AtomicU64,
    pub batches: AtomicU64,
    pub fsyncs: AtomicU64,
    pub bytes_written: AtomicU64,
    pub rejected_busy: AtomicU64,
    pub rejected_full: AtomicU64,
}
