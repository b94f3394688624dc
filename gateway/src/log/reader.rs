//! Sequential reader over the log's segments.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::format::{
    self, Check, ENTRY_HEADER_LEN, HARD_MAX_RECORD_BYTES, SEGMENT_HEADER_LEN, SegmentHeader,
};
use super::segment;
use super::shared::Shared;
use super::storage::{FsStorage, Storage, StorageFile};
use super::{LogError, Lsn};

/// One entry as stored: its LSN, the time the appender gave and the
/// payload (borrowed from the reader's buffer until the next read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Log sequence number.
    pub lsn: Lsn,
    /// Time given at append, ms since the Unix epoch.
    pub time_ms: u64,
    /// The record bytes.
    pub payload: &'a [u8],
}

/// What bounds a reader.
enum Bound {
    /// In the writing process: read only synced entries, wait on the watch.
    Committed(watch::Receiver<Lsn>),
    /// A folder some other process may be writing (tools such as
    /// `fencegate log tail`): read every intact entry, poll for more.
    Files { poll: Duration },
}

/// Reads entries in LSN order from a start LSN, across segments, checking
/// every CRC. [`LogReader::next_entry`] returns `None` once it has caught
/// up; [`LogReader::wait`] then waits for more (follow mode).
///
/// Reads are blocking file I/O on data that is usually still in the page
/// cache; a forwarder can call them from a task, a long catch-up belongs on
/// a blocking thread.
pub struct LogReader {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    bound: Bound,
    /// Entries below this are skipped (the requested start).
    from: Lsn,
    /// Current segment file and its path.
    file: Option<(Box<dyn StorageFile>, PathBuf)>,
    /// First LSN of the current segment.
    cur_first: Lsn,
    /// LSN of the next entry in the current file.
    next: Lsn,
    /// File offset of `buf[0]`.
    buf_off: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

const READ_CHUNK: usize = 256 << 10;

/// Fills `buf` from `f` (a short file is `UnexpectedEof`), like
/// [`std::io::Read::read_exact`].
fn read_exact(f: &mut dyn StorageFile, mut buf: &mut [u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match f.read(buf) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("dir", &self.dir)
            .field("position", &self.position())
            .finish()
    }
}

impl LogReader {
    pub(crate) fn in_process(shared: Arc<Shared>, from: Lsn) -> Result<Self, LogError> {
        let rx = shared.committed.clone();
        Self::open(
            shared.storage.clone(),
            shared.cfg.dir.clone(),
            from,
            Bound::Committed(rx),
        )
    }

    /// Opens a reader on a log folder without the writer: for tools, which
    /// may run while a gateway writes the same folder. It returns every
    /// intact entry on disk (an entry being written may show up a poll
    /// later), and [`LogReader::wait`] polls every `poll`.
    pub fn open_dir(dir: impl Into<PathBuf>, from: Lsn, poll: Duration) -> Result<Self, LogError> {
        Self::open(Arc::new(FsStorage), dir.into(), from, Bound::Files { poll })
    }

    fn open(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        from: Lsn,
        bound: Bound,
    ) -> Result<Self, LogError> {
        let segs = segment::list_segments(&*storage, &dir)?;
        let mut r = Self {
            dir,
            storage,
            bound,
            from,
            file: None,
            cur_first: from,
            next: from,
            buf_off: 0,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        };
        match segs.iter().rev().find(|&&first| first <= from) {
            Some(&first) => r.open_segment(first)?,
            None => {
                if let Some(&oldest) = segs.first() {
                    return Err(LogError::Trimmed {
                        requested: from,
                        oldest,
                    });
                }
                // Empty folder: wait for the segment that will hold `from`.
            }
        }
        Ok(r)
    }

    /// The LSN of the next entry this reader returns.
    pub fn position(&self) -> Lsn {
        self.next.max(self.from)
    }

    /// The LSN below which entries are readable now (`u64::MAX` for a
    /// folder reader, which is bounded by what is on disk).
    fn limit(&self) -> Lsn {
        match &self.bound {
            Bound::Committed(rx) => *rx.borrow(),
            Bound::Files { .. } => Lsn(u64::MAX),
        }
    }

    /// Opens the segment starting at `first` and positions at its first entry.
    fn open_segment(&mut self, first: Lsn) -> Result<(), LogError> {
        let path = segment::segment_path(&self.dir, first);
        let mut f = self
            .storage
            .open_read(&path)
            .map_err(|e| LogError::io("open segment", &path, e))?;
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        read_exact(&mut *f, &mut h).map_err(|e| LogError::io("read segment header", &path, e))?;
        let header = SegmentHeader::decode(&h).map_err(|r| LogError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: r.to_owned(),
        })?;
        if header.first_lsn != first {
            return Err(LogError::Corrupt {
                path,
                offset: 16,
                reason: "header LSN does not match the file name".into(),
            });
        }
        self.file = Some((f, path));
        self.cur_first = first;
        self.next = first;
        self.buf_off = SEGMENT_HEADER_LEN as u64;
        self.start = 0;
        self.end = 0;
        Ok(())
    }

    /// Makes at least `need` unread bytes available if the file has them;
    /// returns how many are available.
    fn fill(&mut self, need: usize) -> Result<usize, LogError> {
        if self.end - self.start >= need {
            return Ok(self.end - self.start);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.buf_off += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        if need > self.buf.len() {
            self.buf.resize(need.next_power_of_two(), 0);
        }
        let Some((f, path)) = self.file.as_mut() else {
            return Ok(0);
        };
        while self.end < need {
            match f.read(&mut self.buf[self.end..]) {
                Ok(0) => break,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(LogError::io("read segment", path.as_path(), e)),
            }
        }
        Ok(self.end)
    }

    /// Whether a segment file starting at the reader's next LSN exists.
    fn next_segment_exists(&self) -> bool {
        self.storage
            .exists(&segment::segment_path(&self.dir, self.next))
    }

    /// Whether the current segment's name now points at another file.
    fn replaced(&self) -> bool {
        self.file
            .as_ref()
            .is_some_and(|(f, path)| f.replaced_at(path))
    }

    /// Whether any segment after the current one exists (then damage in the
    /// current one is corruption, not an entry still being written).
    fn later_segment_exists(&self) -> Result<bool, LogError> {
        let cur = self.file.as_ref().map(|(_, p)| p.as_path());
        let first = cur
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .and_then(segment::parse_segment_name);
        Ok(segment::list_segments(&*self.storage, &self.dir)?
            .into_iter()
            .any(|s| first.is_none_or(|f| s > f)))
    }

    fn corrupt(&self, reason: &str) -> LogError {
        let path = self
            .file
            .as_ref()
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| self.dir.clone());
        LogError::Corrupt {
            path,
            offset: self.buf_off + self.start as u64,
            reason: reason.to_owned(),
        }
    }

    /// The next entry, or `None` when the reader has caught up.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_>>, LogError> {
        let (at, len, lsn, time_ms) = loop {
            if self.next >= self.limit() {
                return Ok(None);
            }
            if self.file.is_none() {
                match self.open_segment(self.next) {
                    Ok(()) => {}
                    Err(LogError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                        return match self.bound {
                            Bound::Files { .. } => Ok(None),
                            Bound::Committed(_) => {
                                let oldest = segment::list_segments(&*self.storage, &self.dir)?
                                    .first()
                                    .copied()
                                    .unwrap_or(self.next);
                                Err(LogError::Trimmed {
                                    requested: self.next,
                                    oldest,
                                })
                            }
                        };
                    }
                    Err(e) => return Err(e),
                }
            }
            let avail = self.fill(ENTRY_HEADER_LEN)?;
            let problem = if avail >= ENTRY_HEADER_LEN {
                let h = format::EntryHeader::read(&self.buf[self.start..]);
                let total = h.entry_len();
                if h.len as usize > HARD_MAX_RECORD_BYTES {
                    "entry length exceeds the 16 MiB format limit"
                } else if self.fill(total)? < total {
                    "entry is cut short by the end of the file"
                } else {
                    match format::check_entry(&self.buf[self.start..self.start + total], self.next)
                    {
                        Check::Ok(h) => {
                            let at = self.start;
                            self.start += total;
                            self.next.0 += 1;
                            if h.lsn < self.from {
                                continue;
                            }
                            break (at, h.len as usize, h.lsn, h.time_ms);
                        }
                        Check::Incomplete => "entry is cut short by the end of the file",
                        Check::Bad(r) => r,
                    }
                }
            } else if avail == 0 {
                // End of this segment. Past its first entry, the next entry
                // is in the segment named after it, once that exists.
                let moved_on = self.next != self.cur_first;
                match self.bound {
                    Bound::Committed(_) if moved_on => {}
                    Bound::Committed(_) => {
                        return Err(self.corrupt("committed entries are missing from the segment"));
                    }
                    Bound::Files { .. } if moved_on && self.next_segment_exists() => {}
                    // A restarted writer replaces an empty last segment
                    // with a new file of the same name: follow it.
                    Bound::Files { .. } if !moved_on && self.replaced() => {}
                    Bound::Files { .. } => return Ok(None),
                }
                self.file = None;
                continue;
            } else {
                "entry header is cut short by the end of the file"
            };
            // Committed entries are complete, so anything wrong is damage.
            // A folder reader may have met an entry still being written,
            // unless a later segment exists.
            if matches!(self.bound, Bound::Committed(_)) || self.later_segment_exists()? {
                return Err(self.corrupt(problem));
            }
            return Ok(None);
        };
        Ok(Some(Entry {
            lsn,
            time_ms,
            payload: &self.buf[at + ENTRY_HEADER_LEN..at + ENTRY_HEADER_LEN + len],
        }))
    }

    /// Waits until an entry past the ones read may be available: a new
    /// commit (in-process reader) or one poll interval (folder reader).
    /// Fails with `Closed` when the log closes.
    pub async fn wait(&mut self) -> Result<(), LogError> {
        let next = self.position();
        match &mut self.bound {
            Bound::Committed(rx) => rx
                .wait_for(|c| *c > next)
                .await
                .map(|_| ())
                .map_err(|_| LogError::Closed),
            Bound::Files { poll } => {
                tokio::time::sleep(*poll).await;
                Ok(())
            }
        }
    }
}
