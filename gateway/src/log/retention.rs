//! Retention: delete the oldest closed segments by size and age, never
//! past a cursor.

use std::sync::atomic::Ordering;

use super::cursors::Cursors;
use super::segment::{self, SegmentInfo};
use super::shared::Shared;
use super::{LogError, Lsn};

/// What one retention pass did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// Segments deleted.
    pub deleted_segments: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Oldest LSN still stored afterwards.
    pub oldest: Lsn,
    /// The cursor that stopped retention from deleting a segment it wanted
    /// to delete (that sink is behind), with its position.
    pub held_by: Option<(String, Lsn)>,
}

pub(crate) fn retain(shared: &Shared, now_ms: u64) -> Result<RetentionReport, LogError> {
    let cfg = &shared.cfg;
    let age_ms = cfg
        .retain_age
        .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX));
    let mut report = RetentionReport::default();
    let victims: Vec<SegmentInfo> = {
        // Lock order: cursor table, then segments (as cursor registration).
        let table = shared.cursors.lock_table();
        let mut segs = shared.lock_segments();
        let min = Cursors::min(&table);
        let mut used = shared.used_bytes.load(Ordering::Acquire);
        let mut n = 0;
        // The last segment is the active one and is never deleted.
        while n + 1 < segs.len() {
            let s = &segs[n];
            let empty = s.end_lsn == s.first_lsn;
            let over_size = used > cfg.retain_bytes;
            let too_old = matches!((age_ms, s.max_time_ms), (Some(a), Some(t)) if t.saturating_add(a) < now_ms);
            if !(empty || over_size || too_old) {
                break;
            }
            if let Some((pos, name)) = min {
                if s.end_lsn > pos {
                    report.held_by = Some((name.to_owned(), pos));
                    break;
                }
            }
            used -= s.bytes;
            n += 1;
        }
        let victims = segs.drain(..n).collect();
        report.oldest = segs.first().map_or(Lsn(0), |s| s.first_lsn);
        shared.metrics.segments.set(segs.len() as f64);
        victims
    };
    // Unlink outside the lock so the writer's per-batch update never waits
    // on the file system. Readers use file names, so a reader that already
    // opened a deleted segment keeps reading it.
    let mut first_err = None;
    for v in &victims {
        // Footer first: a crash between the two leaves a segment without a
        // footer (verified in full once at the next open), never a footer
        // that a later segment of the same name could be mistaken for.
        let footer = segment::footer_path(&cfg.dir, v.first_lsn);
        if shared.storage.exists(&footer) {
            if let Err(e) = shared.storage.remove(&footer) {
                first_err.get_or_insert(LogError::io("delete segment footer", footer, e));
                continue;
            }
        }
        let path = segment::segment_path(&cfg.dir, v.first_lsn);
        match shared.storage.remove(&path) {
            Ok(()) => {
                shared.used_bytes.fetch_sub(v.bytes, Ordering::AcqRel);
                report.deleted_segments += 1;
                report.freed_bytes += v.bytes;
            }
            Err(e) => {
                first_err.get_or_insert(LogError::io("delete segment", path, e));
            }
        }
    }
    if report.deleted_segments > 0 {
        shared
            .metrics
            .segments_deleted
            .increment(report.deleted_segments as u64);
        shared
            .metrics
            .used_bytes
            .set(shared.used_bytes.load(Ordering::Relaxed) as f64);
        shared
            .storage
            .sync_dir(&cfg.dir)
            .map_err(|e| LogError::io("fsync folder", &cfg.dir, e))?;
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
