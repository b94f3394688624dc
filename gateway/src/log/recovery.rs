//! Recovery on open: trust sealed segments by their footer, verify the
//! rest, cut a torn tail, quarantine damage nobody still needs, report.

use std::fmt;
use std::path::{Path, PathBuf};

use super::format::{
    self, Check, ENTRY_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentFooter, SegmentHeader,
};
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
    /// Leftover temporary files removed (a crash while creating a segment,
    /// a footer or a cursor leaves one), and footers whose segment is gone.
    pub removed_files: Vec<PathBuf>,
    /// Sealed segments trusted by their footer: not read at open.
    pub trusted_by_footer: usize,
    /// Segments read and CRC-checked in full: the last one, and sealed ones
    /// without a (valid) footer, such as segments written before footers
    /// existed. Each gets a footer afterwards, so this happens once.
    pub verified_fully: usize,
    /// Segments moved out of the log because a sealed segment failed its
    /// check and every cursor had passed it (see [`QuarantinedSegment`]).
    pub quarantined: Vec<QuarantinedSegment>,
}

/// A segment moved aside at open (renamed to `<first LSN>.seg.quarantined`
/// in the log folder). Its records had been forwarded by every sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedSegment {
    /// Where the file is now.
    pub path: PathBuf,
    /// First LSN the segment held.
    pub first_lsn: Lsn,
    /// LSN after its last entry (the next segment's first LSN).
    pub end_lsn: Lsn,
    /// Whether the segment itself failed its check; `false` for an intact
    /// segment older than a damaged one, moved aside with it so the log
    /// stays contiguous.
    pub damaged: bool,
    /// What was wrong, and what to do about it.
    pub reason: String,
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
            "log recovered: {} segments ({} trusted by footer, {} verified fully), {} entries, {} bytes, LSN {}..{}",
            self.segments,
            self.trusted_by_footer,
            self.verified_fully,
            self.entries,
            self.bytes,
            self.oldest,
            self.next_lsn
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
        for q in &self.quarantined {
            write!(
                f,
                "; quarantined '{}' (LSN {}..{}): {}",
                q.path.display(),
                q.first_lsn,
                q.end_lsn,
                q.reason
            )?;
        }
        Ok(())
    }
}

/// A sealed segment that failed its check at open. Whether that is fatal
/// depends on the cursors, which [`settle_damage`] decides.
pub(crate) struct Damage {
    pub path: PathBuf,
    pub first_lsn: Lsn,
    /// The next segment's first LSN: a damaged segment's own end is unknown.
    pub end_lsn: Lsn,
    pub offset: u64,
    pub reason: String,
}

/// Result of recovery: closed segments and where appends continue.
pub(crate) struct Recovered {
    pub segments: Vec<SegmentInfo>,
    pub next_lsn: Lsn,
    pub report: RecoveryReport,
    /// Damaged sealed segments, oldest first; not in `segments`.
    pub damaged: Vec<Damage>,
}

/// How one segment was checked.
enum Checked {
    /// Intact; the summary of its entries.
    Good(SegmentInfo),
    /// A sealed segment that failed its check: offset and reason.
    Bad(u64, String),
}

/// Reads up to the first `n` bytes of `path` (fewer if the file is shorter).
fn read_prefix(storage: &dyn Storage, path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let mut f = storage.open_read(path)?;
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = f.read(&mut out[got..])?;
        if k == 0 {
            break;
        }
        got += k;
    }
    out.truncate(got);
    Ok(out)
}

/// Reads and decodes the footer sidecar of the segment at `first`: `None`
/// when there is none, or when it is unreadable garbage (the segment is then
/// verified fully, as one written before footers existed).
fn read_footer(
    storage: &dyn Storage,
    dir: &Path,
    first: Lsn,
    buf: &mut Vec<u8>,
) -> Result<Option<SegmentFooter>, LogError> {
    let path = segment::footer_path(dir, first);
    match storage.read_all(&path, buf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("read segment footer", &path, e)),
    }
    match SegmentFooter::decode(buf) {
        Ok(f) => Ok(Some(f)),
        Err(reason) => {
            tracing::warn!(
                footer = %path.display(),
                reason,
                "ignoring a damaged segment footer; verifying the segment in full and rewriting the footer"
            );
            Ok(None)
        }
    }
}

/// Checks a sealed segment against its footer without reading its entries:
/// the header decodes and names the same first LSN, and the file length is
/// the one recorded when the segment was sealed.
fn check_by_footer(
    storage: &dyn Storage,
    path: &Path,
    first: Lsn,
    f: &SegmentFooter,
) -> Result<Checked, LogError> {
    if f.first_lsn != first {
        return Ok(Checked::Bad(
            0,
            format!(
                "its footer is for a segment starting at LSN {} but the file name says {first}",
                f.first_lsn
            ),
        ));
    }
    let len = storage
        .file_len(path)
        .map_err(|e| LogError::io("stat segment", path, e))?;
    if len != f.seg_len {
        return Ok(Checked::Bad(
            len.min(f.seg_len),
            format!(
                "the file is {len} bytes but its footer says {} (it was cut or written to after it was sealed)",
                f.seg_len
            ),
        ));
    }
    let head = read_prefix(storage, path, SEGMENT_HEADER_LEN)
        .map_err(|e| LogError::io("read segment header", path, e))?;
    match SegmentHeader::decode(&head) {
        Err(r) => return Ok(Checked::Bad(0, r.to_owned())),
        Ok(h) if h.first_lsn != first => {
            return Ok(Checked::Bad(
                16,
                format!(
                    "header says first LSN {} but the file name says {first}",
                    h.first_lsn
                ),
            ));
        }
        Ok(_) => {}
    }
    Ok(Checked::Good(SegmentInfo {
        first_lsn: first,
        end_lsn: f.end_lsn,
        bytes: f.seg_len,
        min_time_ms: Some(f.min_time_ms),
        max_time_ms: Some(f.max_time_ms),
        active: false,
    }))
}

/// Scans `dir` (which must exist and be locked by the caller).
///
/// Only the last segment (the previous run's active one) is read in full.
/// A sealed segment with a valid footer is trusted by it; one without is
/// read in full once and given a footer. A sealed segment that fails its
/// check is returned in [`Recovered::damaged`], not as an error: whether
/// it may be moved aside depends on the cursors ([`settle_damage`]).
pub(crate) fn recover(storage: &dyn Storage, dir: &Path) -> Result<Recovered, LogError> {
    let mut removed_files = remove_temp_files(storage, dir)?;
    let firsts = segment::list_segments(storage, dir)?;
    removed_files.extend(remove_orphan_footers(storage, dir, &firsts)?);
    let mut segments = Vec::with_capacity(firsts.len());
    let mut damaged = Vec::new();
    let mut new_footers = Vec::new();
    let mut truncation = None;
    let mut expected: Option<Lsn> = None;
    let (mut trusted_by_footer, mut verified_fully) = (0, 0);
    let mut buf = Vec::new();
    for (i, &first) in firsts.iter().enumerate() {
        let path = segment::segment_path(dir, first);
        let is_last = i + 1 == firsts.len();
        if let Some(e) = expected {
            if e != first {
                return Err(LogError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: format!(
                        "segment starts at LSN {first} but the previous segment ends at LSN {e}: a segment is missing"
                    ),
                });
            }
        }
        // The last segment is always read in full: it may end in a torn
        // batch, and it is at most one segment long.
        let footer = if is_last {
            None
        } else {
            read_footer(storage, dir, first, &mut buf)?
        };
        let checked = match &footer {
            Some(f) => {
                trusted_by_footer += 1;
                check_by_footer(storage, &path, first, f)?
            }
            None => {
                verified_fully += 1;
                let c = verify_fully(storage, &path, first, is_last, &mut buf, &mut truncation)?;
                if let Checked::Good(info) = &c {
                    if info.end_lsn > info.first_lsn {
                        new_footers.push(SegmentFooter {
                            first_lsn: first,
                            end_lsn: info.end_lsn,
                            seg_len: info.bytes,
                            min_time_ms: info.min_time_ms.unwrap_or(0),
                            max_time_ms: info.max_time_ms.unwrap_or(0),
                            entries_crc: crc32c::crc32c(
                                &buf[SEGMENT_HEADER_LEN..info.bytes as usize],
                            ),
                        });
                    }
                }
                c
            }
        };
        match checked {
            Checked::Good(info) => {
                expected = Some(info.end_lsn);
                segments.push(info);
            }
            Checked::Bad(offset, reason) => {
                // Only sealed segments come back `Bad`, so a next one exists
                // and its name gives where this one ended.
                let end_lsn = firsts[i + 1];
                damaged.push(Damage {
                    path,
                    first_lsn: first,
                    end_lsn,
                    offset,
                    reason,
                });
                expected = Some(end_lsn);
            }
        }
    }
    let next_lsn = expected.unwrap_or(Lsn(0));
    // An empty last segment is replaced by the new active one (same name).
    if segments
        .last()
        .is_some_and(|s| s.end_lsn == s.first_lsn && s.first_lsn == next_lsn)
    {
        segments.pop();
    }
    // Footers for what was verified in full, so the next open trusts them.
    // The last segment becomes sealed once this open starts a new one.
    for f in &new_footers {
        segment::write_footer(storage, dir, f)?;
    }
    let report = RecoveryReport {
        segments: 0,
        entries: 0,
        bytes: 0,
        oldest: next_lsn,
        next_lsn,
        truncation,
        removed_files,
        trusted_by_footer,
        verified_fully,
        quarantined: Vec::new(),
    };
    let mut rec = Recovered {
        segments,
        next_lsn,
        report,
        damaged,
    };
    rec.summarize();
    Ok(rec)
}

impl Recovered {
    /// Recomputes the report's totals from `segments`.
    fn summarize(&mut self) {
        let r = &mut self.report;
        r.segments = self.segments.len();
        r.entries = self
            .segments
            .iter()
            .map(|s| s.end_lsn.0 - s.first_lsn.0)
            .sum();
        r.bytes = self.segments.iter().map(|s| s.bytes).sum();
        r.oldest = self.segments.first().map_or(self.next_lsn, |s| s.first_lsn);
    }
}

/// Reads a segment in full and checks every entry. In the last segment a
/// torn tail is cut (or, if intact entries follow beyond what a crash can
/// tear, open fails); in a sealed one any damage is returned as `Bad`.
fn verify_fully(
    storage: &dyn Storage,
    path: &Path,
    first: Lsn,
    is_last: bool,
    buf: &mut Vec<u8>,
    truncation: &mut Option<Truncation>,
) -> Result<Checked, LogError> {
    storage
        .read_all(path, buf)
        .map_err(|e| LogError::io("read segment", path, e))?;
    let corrupt = |offset: usize, reason: String| LogError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let header = match SegmentHeader::decode(buf) {
        Ok(h) => h,
        Err(r) if is_last => return Err(corrupt(0, r.to_owned())),
        Err(r) => return Ok(Checked::Bad(0, r.to_owned())),
    };
    if header.first_lsn != first {
        let reason = format!(
            "header says first LSN {} but the file name says {first}",
            header.first_lsn
        );
        return if is_last {
            Err(corrupt(16, reason))
        } else {
            Ok(Checked::Bad(16, reason))
        };
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
            return Ok(Checked::Bad(
                off as u64,
                format!("{reason} in a closed segment (synced, acknowledged data)"),
            ));
        }
        let tail = scan_tail(buf, off, info.end_lsn, header.max_unsynced as usize);
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
            .truncate_synced(path, off as u64)
            .map_err(|e| LogError::io("truncate torn tail of", path, e))?;
        *truncation = Some(Truncation {
            segment: path.to_path_buf(),
            offset: off as u64,
            bytes: (buf.len() - off) as u64,
            intact_entries: tail.intact,
            reason,
        });
        buf.truncate(off);
        break;
    }
    info.bytes = off as u64;
    Ok(Checked::Good(info))
}

/// Decides what to do with damaged sealed segments, given every persisted
/// cursor. If some cursor has not passed one, its records are still owed
/// downstream: open fails, naming the segment, the cursors and the fix.
/// Otherwise the damaged segments, and every older segment (so the log
/// stays one contiguous LSN range), are renamed to `*.seg.quarantined` and
/// listed in the report.
pub(crate) fn settle_damage(
    storage: &dyn Storage,
    dir: &Path,
    rec: &mut Recovered,
    cursors: &[(String, Lsn)],
) -> Result<(), LogError> {
    let Some(cut) = rec.damaged.iter().map(|d| d.end_lsn).max() else {
        return Ok(());
    };
    for d in &rec.damaged {
        let behind: Vec<String> = cursors
            .iter()
            .filter(|(_, pos)| *pos < d.end_lsn)
            .map(|(name, pos)| format!("'{name}' at LSN {pos}"))
            .collect();
        if !behind.is_empty() {
            return Err(LogError::Corrupt {
                path: d.path.clone(),
                offset: d.offset,
                reason: format!(
                    "{} in a sealed segment holding LSN {}..{}, and cursor {} has not passed it: those records are \
                     still owed downstream, so the log refuses to start. Fix: restore the file from a backup and \
                     restart; or, if the records are lost for good, stop the node, write {} into the cursor file \
                     of each cursor named (in '{}') and restart: the segment is then moved aside as \
                     '{}' and the node starts",
                    d.reason,
                    d.first_lsn,
                    d.end_lsn,
                    behind.join(", "),
                    d.end_lsn,
                    dir.join("cursors").display(),
                    segment::quarantine_path(dir, d.first_lsn).display()
                ),
            });
        }
    }
    let mut moved: Vec<QuarantinedSegment> = Vec::new();
    for s in rec.segments.iter().filter(|s| s.first_lsn < cut) {
        moved.push(QuarantinedSegment {
            path: segment::quarantine_path(dir, s.first_lsn),
            first_lsn: s.first_lsn,
            end_lsn: s.end_lsn,
            damaged: false,
            reason: "intact, but older than a damaged segment: moved aside with it so the log stays one \
                     contiguous LSN range (every cursor had passed it)"
                .into(),
        });
    }
    for d in &rec.damaged {
        moved.push(QuarantinedSegment {
            path: segment::quarantine_path(dir, d.first_lsn),
            first_lsn: d.first_lsn,
            end_lsn: d.end_lsn,
            damaged: true,
            reason: format!(
                "{} at byte {}; every cursor had passed it, so nothing is owed downstream. Fix: inspect or \
                 delete the file; nothing else is needed",
                d.reason, d.offset
            ),
        });
    }
    moved.sort_by_key(|q| q.first_lsn);
    for q in &moved {
        let from = segment::segment_path(dir, q.first_lsn);
        storage
            .rename(&from, &q.path)
            .map_err(|e| LogError::io("quarantine segment", &from, e))?;
        let footer = segment::footer_path(dir, q.first_lsn);
        if storage.exists(&footer) {
            storage
                .remove(&footer)
                .map_err(|e| LogError::io("remove footer of quarantined segment", &footer, e))?;
        }
        tracing::error!(
            segment = %from.display(),
            moved_to = %q.path.display(),
            first_lsn = q.first_lsn.0,
            end_lsn = q.end_lsn.0,
            reason = %q.reason,
            "durable log quarantined a segment"
        );
    }
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io("fsync folder", dir, e))?;
    rec.segments.retain(|s| s.first_lsn >= cut);
    rec.damaged.clear();
    rec.report.quarantined = moved;
    rec.summarize();
    Ok(())
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

/// Removes footers whose segment is gone (retention deletes the footer
/// first, but an older build deletes only the segment).
fn remove_orphan_footers(
    storage: &dyn Storage,
    dir: &Path,
    firsts: &[Lsn],
) -> Result<Vec<PathBuf>, LogError> {
    let names = storage
        .list(dir)
        .map_err(|e| LogError::io("list", dir, e))?;
    let mut removed = Vec::new();
    for name in names {
        if let Some(lsn) = segment::parse_footer_name(&name) {
            if firsts.binary_search(&lsn).is_err() {
                let p = dir.join(name);
                storage
                    .remove(&p)
                    .map_err(|e| LogError::io("remove orphan segment footer", &p, e))?;
                removed.push(p);
            }
        }
    }
    Ok(removed)
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
