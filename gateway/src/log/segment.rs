//! Segment files: names, listing, creation and the in-memory summary.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::format::SegmentHeader;
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
