//! Segment files: names, listing, creation and the in-memory summary.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::format::{SegmentFooter, SegmentHeader};
use super::storage::{Storage, StorageFile};
use super::{LogError, Lsn};

/// Summary of one segment, kept in memory for retention and time queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// LSN of the segment's first entry (also its file name).
    pub first_lsn: Lsn,
    /// LSN after its last entry (equal to `first_lsn` when empty).
    pub end_lsn: Lsn,
    /// File size in bytes, header included.
    pub bytes: u64,
    /// Smallest entry time (ms since the Unix epoch), `None` when empty.
    pub min_time_ms: Option<u64>,
    /// Largest entry time, `None` when empty. Age retention uses it.
    pub max_time_ms: Option<u64>,
    /// Whether this is the segment being written (never deleted).
    pub active: bool,
}

impl SegmentInfo {
    pub(crate) fn note_time(&mut self, t: u64) {
        self.min_time_ms = Some(self.min_time_ms.map_or(t, |m| m.min(t)));
        self.max_time_ms = Some(self.max_time_ms.map_or(t, |m| m.max(t)));
    }
}

/// File name of the segment starting at `lsn`.
pub(crate) fn segment_name(lsn: Lsn) -> String {
    format!("{:020}.seg", lsn.0)
}

/// Path of the segment starting at `lsn`.
pub(crate) fn segment_path(dir: &Path, lsn: Lsn) -> PathBuf {
    dir.join(segment_name(lsn))
}

/// Path of the footer sidecar of the segment starting at `lsn`
/// (`<first LSN>.seg.footer`; see [`SegmentFooter`]).
pub(crate) fn footer_path(dir: &Path, lsn: Lsn) -> PathBuf {
    dir.join(format!("{}.footer", segment_name(lsn)))
}

/// Where a segment that failed its check at open is moved
/// (`<first LSN>.seg.quarantined`): out of the log, kept for inspection.
pub(crate) fn quarantine_path(dir: &Path, lsn: Lsn) -> PathBuf {
    dir.join(format!("{}.quarantined", segment_name(lsn)))
}

/// Parses a footer file name back to its segment's first LSN.
pub(crate) fn parse_footer_name(name: &str) -> Option<Lsn> {
    parse_segment_name(name.strip_suffix(".footer")?)
}

/// Writes the footer of a sealed segment durably: temporary name, sync,
/// rename, folder sync. A power cut leaves either no footer (recovery then
/// verifies the segment fully) or a complete one, never a torn one.
pub(crate) fn write_footer(
    storage: &dyn Storage,
    dir: &Path,
    footer: &SegmentFooter,
) -> Result<(), LogError> {
    let path = footer_path(dir, footer.first_lsn);
    let tmp = dir.join(format!(".{}.footer.tmp", segment_name(footer.first_lsn)));
    storage
        .create_synced(&tmp, &footer.encode())
        .map_err(|e| LogError::io("create segment footer", &tmp, e))?;
    storage
        .rename(&tmp, &path)
        .map_err(|e| LogError::io("rename segment footer into place", &path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io("fsync folder", dir, e))
}

/// Parses a segment file name back to its first LSN.
pub(crate) fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// Lists the segments in `dir`, sorted by first LSN.
pub(crate) fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Vec<Lsn>, LogError> {
    let names = storage
        .list(dir)
        .map_err(|e| LogError::io("list", dir, e))?;
    let mut out: Vec<Lsn> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    out.sort_unstable();
    Ok(out)
}

/// Syncs a folder on the local file system so that file creations, renames
/// and deletions in it are durable (the cursors folder; segment folders go
/// through [`Storage::sync_dir`]).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("fsync folder", dir, e))
}

/// Creates the segment starting at `first` atomically (temporary name,
/// sync, rename, folder sync) and returns it open for appending, positioned
/// after the header.
pub(crate) fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    first: Lsn,
    max_unsynced: u32,
) -> Result<(Box<dyn StorageFile>, PathBuf), LogError> {
    let path = segment_path(dir, first);
    let tmp = dir.join(format!(".{}.tmp", segment_name(first)));
    // An empty segment is replaced under the same name at the next open; a
    // footer left for that name (by a build that wrote one for an empty
    // segment, or by hand) would describe the wrong file. The folder sync
    // below makes the removal durable before any entry is written.
    let footer = footer_path(dir, first);
    if storage.exists(&footer) {
        storage
            .remove(&footer)
            .map_err(|e| LogError::io("remove stale segment footer", &footer, e))?;
    }
    let header = SegmentHeader {
        first_lsn: first,
        max_unsynced,
    }
    .encode();
    storage
        .create_synced(&tmp, &header)
        .map_err(|e| LogError::io("create segment", &tmp, e))?;
    storage
        .rename(&tmp, &path)
        .map_err(|e| LogError::io("rename segment into place", &path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io("fsync folder", dir, e))?;
    let file = storage
        .open_append(&path)
        .map_err(|e| LogError::io("open segment", &path, e))?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(Lsn(12)), "00000000000000000012.seg");
        assert_eq!(
            parse_segment_name("00000000000000000012.seg"),
            Some(Lsn(12))
        );
        assert_eq!(
            parse_segment_name(&segment_name(Lsn(u64::MAX))),
            Some(Lsn(u64::MAX))
        );
        for bad in [
            "12.seg",
            "0000000000000000001x.seg",
            "00000000000000000012.tmp",
            ".00000000000000000012.seg.tmp",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }
}
