//! Recovery on open: verify every segment, cut a torn tail, report.

use std::fmt;
use std::path::{Path, PathBuf};

use super::format::{self, Check, ENTRY_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader};
use super::segment::{self, SegmentInfo};
use super::storage::Storage;
use super::{LogError, Lsn};

/// What recovery found and changed when the log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Closed segments kept (the new active segment is not counted).
    pub segments: usize,
    /// Entries in them.
    pub entries: u64,
    /// Bytes in them.
    pub bytes: u64,
    /// Oldest LSN still stored (equals `next_lsn` when the log is empty).
    pub oldest: Lsn,
    /// LSN the next append gets.
    pub next_lsn: Lsn,
    /// The torn tail cut from the last segment, if there was one.
    pub truncation: Option<Truncation>,
    /// Leftover temporary files removed (a crash while creating a segment
    /// or storing a cursor leaves one).
    pub removed_files: Vec<PathBuf>,
}

/// A torn tail cut from the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment that was cut.
    pub segment: PathBuf,
    /// Offset of the first bad or incomplete entry; the file now ends here.
    pub offset: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// Intact entries inside the removed bytes: written by a batch whose
    /// sync never finished, so never acknowledged.
    pub intact_entries: u64,
    /// Why the entry at `offset` was rejected.
    pub reason: &'static str,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log recovered: {} segments, {} entries, {} bytes, LSN {}..{}",
            self.segments, self.entries, self.bytes, self.oldest, self.next_lsn
        )?;
        match &self.truncation {
            Some(t) => write!(
                f,
                "; cut torn tail of '{}' at byte {} ({} bytes, {} intact unacknowledged entries): {}",
                t.segment.display(),
                t.offset,
                t.bytes,
                t.intact_entries,
                t.reason
            )?,
            None => f.write_str("; no torn tail")?,
        }
        if !self.removed_files.is_empty() {
            write!(f, "; removed {} temporary files", self.removed_files.len())?;
        }
        Ok(())
    }
}

/// Result of recovery: closed segments and where appends continue.
pub(crate) struct Recovered {
    pub segments: Vec<SegmentInfo>,
    pub next_lsn: Lsn,
    pub report: RecoveryReport,
}

/// Scans `dir` (which must exist and be locked by the caller).
pub(crate) fn recover(storage: &dyn Storage, dir: &Path) -> Result<Recovered, LogError> {
    let removed_files = remove_temp_files(storage, dir)?;
    let firsts = segment::list_segments(storage, dir)?;
    let mut segments = Vec::with_capacity(firsts.len());
    let mut truncation = None;
    let mut expected: Option<Lsn> = None;
    let mut buf = Vec::new();
    for (i, &first) in firsts.iter().enumerate() {
        let path = segment::segment_path(dir, first);
        let is_last = i + 1 == firsts.len();
        storage
            .read_all(&path, &mut buf)
            .map_err(|e| LogError::io("read segment", &path, e))?;
        let corrupt = |offset: usize, reason: String| LogError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        let header = SegmentHeader::decode(&buf).map_err(|r| corrupt(0, r.to_owned()))?;
        if header.first_lsn != first {
            return Err(corrupt(
                16,
                format!(
                    "header says first LSN {} but the file name says {first}",
                    header.first_lsn
                ),
            ));
        }
        if let Some(e) = expected {
            if e != first {
                return Err(corrupt(
                    0,
                    format!(
                        "segment starts at LSN {first} but the previous segment ends at LSN {e}: a segment is missing"
                    ),
                ));
            }
        }
        let mut info = SegmentInfo {
            first_lsn: first,
            end_lsn: first,
            bytes: 0,
            min_time_ms: None,
            max_time_ms: None,
            active: false,
        };
        let mut off = SEGMENT_HEADER_LEN;
        while off < buf.len() {
            let reason = match format::check_entry(&buf[off..], info.end_lsn) {
                Check::Ok(h) => {
                    info.note_time(h.time_ms);
                    info.end_lsn.0 += 1;
                    off += h.entry_len();
                    continue;
                }
                Check::Incomplete => "entry is cut short by the end of the file",
                Check::Bad(r) => r,
            };
            if !is_last {
                return Err(corrupt(
                    off,
                    format!("{reason} in a closed segment (synced, acknowledged data)"),
                ));
            }
            let tail = scan_tail(&buf, off, info.end_lsn, header.max_unsynced as usize);
            if let Some(at) = tail.synced_entry_at {
                return Err(corrupt(
                    off,
                    format!(
                        "{reason}, but an intact later entry follows at byte {at}, beyond the {} bytes a crash can \
                         tear: this is damage to synced data, not a torn write; copy the file aside for \
                         inspection, and truncate it at byte {off} only if losing the entries after it is acceptable",
                        header.max_unsynced
                    ),
                ));
            }
            storage
                .truncate_synced(&path, off as u64)
                .map_err(|e| LogError::io("truncate torn tail of", &path, e))?;
            truncation = Some(Truncation {
                segment: path.clone(),
                offset: off as u64,
                bytes: (buf.len() - off) as u64,
                intact_entries: tail.intact,
                reason,
            });
            break;
        }
        info.bytes = off as u64;
        expected = Some(info.end_lsn);
        segments.push(info);
    }
    let next_lsn = expected.unwrap_or(Lsn(0));
    // An empty last segment is replaced by the new active one (same name).
    if segments.last().is_some_and(|s| s.end_lsn == s.first_lsn) {
        segments.pop();
    }
    let report = RecoveryReport {
        segments: segments.len(),
        entries: segments.iter().map(|s| s.end_lsn.0 - s.first_lsn.0).sum(),
        bytes: segments.iter().map(|s| s.bytes).sum(),
        oldest: segments.first().map_or(next_lsn, |s| s.first_lsn),
        next_lsn,
        truncation,
        removed_files,
    };
    Ok(Recovered {
        segments,
        next_lsn,
        report,
    })
}

struct TailScan {
    /// Intact entries found inside the tearable window.
    intact: u64,
    /// Offset of an intact entry beyond the tearable window, if any.
    synced_entry_at: Option<usize>,
}

/// Looks for intact entries after the first bad one at `cut`. Entries of
/// the torn batch may survive past a torn page; anything intact starting
/// `max_unsynced` or more bytes past `cut` cannot belong to that batch.
fn scan_tail(buf: &[u8], cut: usize, expect: Lsn, max_unsynced: usize) -> TailScan {
    let mut out = TailScan {
        intact: 0,
        synced_entry_at: None,
    };
    let window_end = cut.saturating_add(max_unsynced);
    let max_entries = ((buf.len() - cut) / ENTRY_HEADER_LEN) as u64 + 1;
    let mut o = cut + 1;
    while o + ENTRY_HEADER_LEN <= buf.len() {
        let lsn = format::le_u64(buf, o + 8);
        // Cheap filter first: only a plausible LSN is worth a CRC.
        if lsn > expect.0 && lsn - expect.0 <= max_entries {
            if let Check::Ok(h) = format::check_entry(&buf[o..], Lsn(lsn)) {
                if o >= window_end {
                    out.synced_entry_at = Some(o);
                    return out;
                }
                out.intact += 1;
                o += h.entry_len();
                continue;
            }
        }
        o += 1;
    }
    out
}

/// Removes `.*.tmp` leftovers of interrupted segment creations and cursor
/// stores. Both folders go through `storage` (which is the local file system
/// in production; a simulated disk holds no cursor files).
fn remove_temp_files(storage: &dyn Storage, dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut removed = Vec::new();
    for d in [dir.to_path_buf(), dir.join("cursors")] {
        let names = match storage.list(&d) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(LogError::io("list", &d, e)),
        };
        for name in names {
            if name.starts_with('.') && name.ends_with(".tmp") {
                let p = d.join(name);
                storage
                    .remove(&p)
                    .map_err(|e| LogError::io("remove temporary file", &p, e))?;
                removed.push(p);
            }
        }
    }
    Ok(removed)
}
