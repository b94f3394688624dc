//! The durable log: fencegate's embedded default sink and the
//! store-and-forward buffer in front of every downstream.
//!
//! A record is acknowledged only after it is durable here: the writer calls
//! `fdatasync` on the segment before it completes any append in the batch.
//!
//! # Pieces
//!
//! - [`LogHandle::open`] recovers the directory (see *Recovery*) and starts one
//!   writer thread. It returns a [`LogHandle`] and a [`RecoveryReport`].
//! - [`LogHandle::append`] / [`LogHandle::append_batch`] submit records
//!   to a bounded queue and return a [`Pending`] future that resolves once the
//!   records are synced. The writer takes many submissions, writes them with
//!   one `write`, calls `fdatasync` once and completes them all (group
//!   commit). A full queue answers [`LogError::Busy`] at once; a log at its
//!   size cap answers [`LogError::Full`].
//! - [`LogReader`] reads committed entries from any LSN across segments, and
//!   can wait for new commits (follow mode).
//! - [`Storage`] is where segment files live: [`FsStorage`] (the default, used
//!   by [`LogHandle::open`]) or any other through [`LogHandle::open_with`].
//! - [`Cursor`] is a named, persisted position (one per sink). Retention
//!   ([`LogHandle::retain`]) never deletes a segment a cursor has not passed.
//!
//! # On-disk format (version 1, all integers little-endian)
//!
//! The directory holds `<first LSN, 20 digits>.seg` segment files, a
//! `cursors/` folder with one file per cursor, and a `LOCK` file that one
//! process holds (`flock`) while it writes.
//!
//! A segment starts with a 32-byte header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `FGLOGSEG` |
//! | 8 | 2 | format version (1) |
//! | 10 | 2 | flags (0) |
//! | 12 | 4 | `max_unsynced`: the most bytes its writer ever left un-synced |
//! | 16 | 8 | first LSN (equals the file name) |
//! | 24 | 4 | reserved (0) |
//! | 28 | 4 | CRC32C of bytes 0..28 |
//!
//! Entries follow back to back, each a 24-byte header and the payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | CRC32C of bytes 4..24+len (length, LSN, time and payload) |
//! | 4 | 4 | payload length `len` (at most 16 MiB) |
//! | 8 | 8 | LSN: one more than the previous entry's, across segments |
//! | 16 | 8 | time, ms since the Unix epoch, as given by the appender |
//! | 24 | len | payload: opaque bytes (a FlatBuffers `Record`) |
//!
//! The stored time drives age retention and the per-segment time range
//! ([`SegmentInfo`]), so a query for one day can skip segments outside it.
//!
//! A sealed segment (one the writer rolled away from, or the previous run's
//! last segment once recovery verified it) has a 64-byte footer in the
//! sidecar file `<first LSN, 20 digits>.seg.footer`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `FGLOGFTR` |
//! | 8 | 2 | format version (1) |
//! | 10 | 6 | flags and reserved (0) |
//! | 16 | 8 | first LSN (equals the segment's name) |
//! | 24 | 8 | end LSN: one past the last entry (entry count = end - first) |
//! | 32 | 8 | segment file length in bytes, header included |
//! | 40 | 8 | smallest entry time (ms since the Unix epoch) |
//! | 48 | 8 | largest entry time |
//! | 56 | 4 | CRC32C of the segment's entries (every byte after its header) |
//! | 60 | 4 | CRC32C of bytes 0..60 |
//!
//! It is written like a new segment (temporary name, sync, rename, folder
//! sync) after the segment's last entry is synced and before the next
//! segment is created. A sidecar rather than bytes at the end of the
//! segment keeps the segment format, readers and older builds unchanged:
//! an older build ignores `.footer` files (this one removes footers whose
//! segment is gone). A footer is only ever written for a non-empty segment.
//!
//! A cursor file holds the cursor's next LSN as decimal text and a newline.
//! It is replaced atomically: write `.<name>.tmp`, fsync, rename, fsync
//! the folder.
//!
//! # Recovery
//!
//! Open reads the last segment in full and, for every other (sealed)
//! segment with a valid footer, only the footer, the 32-byte header and the
//! file length: start-up time no longer grows with the log (measured in
//! docs/PERFORMANCE.md, "Log start-up"). Entry CRCs of trusted segments are
//! still checked by every [`LogReader`] that reads them.
//!
//! - A sealed segment without a footer (written by an older build, or its
//!   footer lost to a crash) or with a footer that fails its own CRC is
//!   read and CRC-checked in full once, and given a footer.
//! - A sealed segment fails its check when its header is bad, any entry in
//!   it is bad or short (full check), or its length or first LSN differs
//!   from its footer. Those bytes were synced and acknowledged, so it is
//!   never silently dropped:
//!   - if every persisted cursor has passed it (is at or beyond the next
//!     segment's first LSN), nothing is owed downstream: it is renamed to
//!     `<first LSN>.seg.quarantined`, together with every older segment (so
//!     the log stays one contiguous LSN range; those are intact and also
//!     passed by every cursor), logged at error level, counted in
//!     `fencegate_log_segments_quarantined_total` and listed in
//!     [`RecoveryReport::quarantined`] and [`LogHandle::quarantined`]
//!     (`/readyz` shows "degraded");
//!   - otherwise open fails with [`LogError::Corrupt`] naming the file, the
//!     offset, the cursors still behind and the fix (restore the file, or
//!     give the records up by moving those cursors past it). Starting
//!     without records a sink has not received would lose them silently.
//! - A gap in LSNs between segments is an error ([`LogError::Corrupt`]).
//! - In the last segment, the first bad or incomplete entry starts the torn
//!   tail. Everything from it to the end of the file is cut, and the
//!   [`RecoveryReport`] says what: file, offset, bytes, and how many intact
//!   entries were in the cut bytes. Those entries came from a batch whose
//!   `fdatasync` never finished, so none was acknowledged.
//! - The writer never has more than `max_unsynced` bytes (the batch limit,
//!   stored in the segment header) written but not synced. If an intact
//!   entry with a later LSN starts more than `max_unsynced` bytes past the
//!   first bad one, the damage is in synced data: open fails with
//!   [`LogError::Corrupt`] instead of cutting acknowledged records.
//!
//! Each open then starts a new segment, so a segment is only ever written by
//! one run, and its header's `max_unsynced` is the limit that run kept.
//!
//! # Why a kill cannot lose an acknowledged record
//!
//! - An append completes only after the `write` and the `fdatasync` of its
//!   batch returned. `fdatasync` also makes the new file length durable.
//! - A new segment is written to a temporary name, synced, renamed and the
//!   folder synced before any entry goes into it. A crash leaves either no
//!   segment or a complete header.
//! - After a `SIGKILL` the page cache still holds every written byte, so
//!   nothing is cut. After a power loss only the last batch, which nobody
//!   was told about, can be torn, and recovery cuts exactly that.
//! - If a `write` or `fdatasync` fails, the writer fails that batch and every
//!   later append ([`LogError::WriteFailed`]), because after a failed
//!   `fdatasync` the kernel may have dropped the dirty pages and a retry
//!   could report success for lost data. Reopening recovers.
//! - A cursor is persisted before retention may act on its new position.
//! - A footer is durable before the next segment exists, and trusted only
//!   if its CRC, first LSN and the file length agree; a crash while writing
//!   one leaves a temporary file (removed at open) and a segment that is
//!   verified in full instead.
//! - This is tested against simulated power loss, not only `SIGKILL`: the
//!   segment I/O goes through [`Storage`], and `tests/log_power_loss.rs` runs
//!   the writer on a disk that drops every unsynced byte and folder entry at a
//!   random operation (see "Power-loss simulation" in docs/OPERATIONS.md).
//!
//! Appends that were written but failed or not yet answered may still be in
//! the log after a restart: delivery is at least once, and downstream
//! de-duplicates by the record id inside the payload.

mod cursor;
mod cursors;
mod format;
mod handle;
mod lock;
mod metrics;
pub mod query;
mod reader;
mod recovery;
mod retention;
mod segment;
mod shared;
#[doc(hidden)]
pub mod sim;
mod storage;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use cursor::{Cursor, CursorStart};
pub use handle::{LogHandle, LogStats, Pending, PingAppendError, RecordBatch, WriterHold};
pub(crate) use lock::DirLock;
pub use metrics::LogMetrics;
pub use reader::{Entry, LogReader};
pub use recovery::{QuarantinedSegment, RecoveryReport, Truncation};
pub use retention::RetentionReport;
pub use segment::SegmentInfo;
pub use storage::{FsStorage, Storage, StorageFile};

/// Log sequence number: the position of an entry in the log. The first
/// entry of a new log is 0 and every append takes the next number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The LSNs given to the records of one append: `first .. first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsnRange {
    /// LSN of the first record.
    pub first: Lsn,
    /// Number of records.
    pub count: u32,
}

impl LsnRange {
    /// The LSN after the last record of the range.
    pub fn end(&self) -> Lsn {
        Lsn(self.first.0 + u64::from(self.count))
    }
}

/// Bytes a segment and an entry header add to a batch: a batch of
/// `max_batch_bytes` must fit twice in `max_bytes` with them.
pub const BATCH_OVERHEAD_BYTES: u64 =
    (format::SEGMENT_HEADER_LEN + format::ENTRY_HEADER_LEN) as u64;

/// Settings of the durable log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Folder holding the segments, cursors and lock file; created if missing.
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it would grow past
    /// this many bytes. Retention deletes whole segments, so this is also
    /// the granularity at which space is freed.
    ///
    /// 64 MiB unless set.
    pub segment_bytes: u64,
    /// Size cap of the whole log (all segments). An append that would pass
    /// it fails with [`LogError::Full`] until retention frees space.
    /// At least twice `segment_bytes`, so a full log always has a closed
    /// segment that retention can delete.
    ///
    /// 10 GiB unless set.
    pub max_bytes: u64,
    /// Retention deletes the oldest segments (that every cursor has passed)
    /// while the log is larger than this. At most `max_bytes - segment_bytes`.
    ///
    /// Three quarters of `max_bytes` unless set.
    pub retain_bytes: u64,
    /// Retention deletes segments whose newest entry is older than this
    /// (and that every cursor has passed). `None` keeps entries regardless
    /// of age.
    ///
    /// Seven days unless set.
    pub retain_age: Option<Duration>,
    /// How long the writer waits for more appends after the first one of a
    /// batch before it syncs. Zero syncs as soon as the writer is free; the
    /// appends that arrive during one sync still share the next one.
    ///
    /// Zero unless set (measured in docs/PERFORMANCE.md).
    pub max_batch_delay: Duration,
    /// Most records synced by one `fdatasync`.
    ///
    /// 8192 unless set.
    pub max_batch_records: usize,
    /// Most bytes (headers included) written by one batch; this also bounds
    /// what a crash can tear. A single append must fit in it.
    ///
    /// 4 MiB unless set.
    pub max_batch_bytes: usize,
    /// Largest payload of one record.
    ///
    /// 1 MiB unless set.
    pub max_record_bytes: usize,
    /// Most appends waiting for the writer; more get [`LogError::Busy`].
    ///
    /// 16384 unless set.
    pub queue_capacity: usize,
    /// Most bytes waiting for the writer; more get [`LogError::Busy`].
    ///
    /// 64 MiB unless set.
    pub max_queued_bytes: usize,
}

impl LogConfig {
    /// The defaults above, with the log kept in `dir`. These are the only
    /// defaults of the log: `[log]` in the node's TOML starts from them.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let max_bytes = 10 << 30;
        Self {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            max_bytes,
            retain_bytes: max_bytes / 4 * 3,
            retain_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_batch_delay: Duration::ZERO,
            max_batch_records: 8192,
            max_batch_bytes: 4 << 20,
            max_record_bytes: 1 << 20,
            queue_capacity: 16384,
            max_queued_bytes: 64 << 20,
        }
    }

    /// Checks the settings and lists every problem in one error.
    pub fn validate(&self) -> Result<(), LogError> {
        let mut p: Vec<String> = Vec::new();
        let hdr = BATCH_OVERHEAD_BYTES;
        if self.segment_bytes < 4096 {
            p.push(format!(
                "segment_bytes {} is below the minimum 4096",
                self.segment_bytes
            ));
        }
        if self.max_bytes < self.segment_bytes.saturating_mul(2) {
            p.push(format!(
                "max_bytes {} must be at least twice segment_bytes ({}) so a full log can free a closed segment",
                self.max_bytes, self.segment_bytes
            ));
        }
        if self.retain_bytes > self.max_bytes.saturating_sub(self.segment_bytes) {
            p.push(format!(
                "retain_bytes {} must be at most max_bytes - segment_bytes ({}) so retention leaves room to write",
                self.retain_bytes,
                self.max_bytes.saturating_sub(self.segment_bytes)
            ));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > format::HARD_MAX_RECORD_BYTES {
            p.push(format!(
                "max_record_bytes {} must be between 1 and {}",
                self.max_record_bytes,
                format::HARD_MAX_RECORD_BYTES
            ));
        }
        if self.max_batch_bytes < self.max_record_bytes + format::ENTRY_HEADER_LEN
            || self.max_batch_bytes > format::HARD_MAX_BATCH_BYTES
        {
            p.push(format!(
                "max_batch_bytes {} must be between max_record_bytes + 24 ({}) and {}",
                self.max_batch_bytes,
                self.max_record_bytes + format::ENTRY_HEADER_LEN,
                format::HARD_MAX_BATCH_BYTES
            ));
        }
        if (self.max_batch_bytes as u64).saturating_add(hdr) > self.max_bytes / 2 {
            p.push(format!(
                "max_batch_bytes {} must be at most half of max_bytes ({})",
                self.max_batch_bytes, self.max_bytes
            ));
        }
        if self.max_batch_records == 0 {
            p.push("max_batch_records must be at least 1".into());
        }
        if self.queue_capacity == 0 {
            p.push("queue_capacity must be at least 1".into());
        }
        if self.max_queued_bytes < self.max_batch_bytes {
            p.push(format!(
                "max_queued_bytes {} must be at least max_batch_bytes ({})",
                self.max_queued_bytes, self.max_batch_bytes
            ));
        }
        if self.max_batch_delay > Duration::from_secs(1) {
            p.push(format!(
                "max_batch_delay {:?} is above the maximum 1 s (every ack waits for it)",
                self.max_batch_delay
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(LogError::InvalidConfig(format!(
                "log config '{}': {}",
                self.dir.display(),
                p.join("; ")
            )))
        }
    }
}

/// Everything that can go wrong in the log. The variants returned on the
/// append path (`Busy`, `Full`, `TooLarge`, `WriteFailed`, `Closed`) do not
/// allocate.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The submission queue is full: the writer is behind. Retry later.
    #[error("durable log is busy: the submission queue is full, retry later")]
    Busy,
    /// The log reached its size cap; it accepts appends again once retention
    /// frees space (which waits for every cursor to pass old segments).
    #[error(
        "durable log is full: {used} of {max} bytes used; appends resume when retention frees space"
    )]
    Full {
        /// Bytes the log occupies.
        used: u64,
        /// The configured cap (`max_bytes`).
        max: u64,
    },
    /// One record or one batch is larger than the configured limit.
    #[error("log append of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the rejected record or batch.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },
    /// A write or sync failed earlier; the writer refuses appends until the
    /// log is reopened (see the module docs for why it does not retry).
    #[error(
        "durable log writer stopped after a failed write or fsync ({kind}); restart to recover"
    )]
    WriteFailed {
        /// Kind of the I/O error that stopped the writer.
        kind: std::io::ErrorKind,
    },
    /// The log was closed (or its writer thread ended).
    #[error("durable log is closed")]
    Closed,
    /// Another process (or handle) holds the log folder.
    #[error("log folder '{0}' is locked by another process; stop it or use another folder")]
    Locked(PathBuf),
    /// An I/O operation on a log file failed.
    #[error("log I/O: {op} '{path}': {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Synced data is damaged; the log refuses to drop it silently.
    #[error("log corrupt: '{path}' at byte {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage in the file.
        offset: u64,
        /// What is wrong (and, where useful, what to do).
        reason: String,
    },
    /// The requested LSN was deleted by retention.
    #[error("LSN {requested} is no longer in the log (oldest retained is {oldest})")]
    Trimmed {
        /// The LSN asked for.
        requested: Lsn,
        /// The oldest LSN still stored.
        oldest: Lsn,
    },
    /// A cursor name is unusable as a file name.
    #[error(
        "cursor name '{0}' is invalid: use 1-64 characters from A-Z a-z 0-9 _ - . not starting with '.'"
    )]
    InvalidCursorName(String),
    /// A persisted cursor points past the end of the log.
    #[error(
        "cursor '{name}' is at LSN {position}, past the end of the log ({end}); the log was replaced or cut: \
         remove '{path}' to restart that sink from the oldest record"
    )]
    CursorAhead {
        /// Cursor name.
        name: String,
        /// Its stored position.
        position: Lsn,
        /// The log's next LSN.
        end: Lsn,
        /// The cursor's file.
        path: PathBuf,
    },
    /// A cursor was moved or created outside the stored range.
    #[error(
        "cursor '{name}': LSN {position} is outside the log (oldest stored {oldest:?}, committed end {committed}); \
         a cursor may only point at stored or the next committed entry"
    )]
    CursorOutOfRange {
        /// Cursor name.
        name: String,
        /// The position asked for.
        position: Lsn,
        /// Oldest stored LSN, when that was the bound broken.
        oldest: Option<Lsn>,
        /// The committed end.
        committed: Lsn,
    },
    /// The cursor was removed with `remove_cursor`; register it again.
    #[error("cursor '{0}' was removed; register it again to use it")]
    CursorRemoved(String),
    /// The configuration is unusable; every problem is listed.
    #[error("{0}")]
    InvalidConfig(String),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        LogConfig::new("data/log").validate().unwrap();
    }

    #[test]
    fn validate_lists_every_problem() {
        let mut c = LogConfig::new("x");
        c.segment_bytes = 10;
        c.max_record_bytes = 0;
        c.queue_capacity = 0;
        c.max_batch_records = 0;
        let msg = c.validate().unwrap_err().to_string();
        for part in [
            "segment_bytes 10",
            "max_record_bytes 0",
            "queue_capacity",
            "max_batch_records",
        ] {
            assert!(msg.contains(part), "{part} missing from: {msg}");
        }
    }
}
