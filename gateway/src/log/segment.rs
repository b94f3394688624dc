//! Segment files: names, listing, creation and the in-memory summary.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::format::SegmentHeader;
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
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<Lsn>, LogError> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| LogError::io("list", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| LogError::io("list", dir, e))?;
        if let Some(lsn) = ent.file_name().to_str().and_then(parse_segment_name) {
            out.push(lsn);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Syncs a folder so that file creations, renames and deletions in it are
/// durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("fsync folder", dir, e))
}

/// Creates the segment starting at `first` atomically (temporary name,
/// sync, rename, folder sync) and returns it open for appending, positioned
/// after the header.
pub(crate) fn create_segment(
    dir: &Path,
    first: Lsn,
    max_unsynced: u32,
) -> Result<(File, PathBuf), LogError> {
    let path = segment_path(dir, first);
    let tmp = dir.join(format!(".{}.tmp", segment_name(first)));
    let header = SegmentHeader {
        first_lsn: first,
        max_unsynced,
    }
    .encode();
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&header)?;
        f.sync_all()
    };
    write().map_err(|e| LogError::io("create segment", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| LogError::io("rename segment into place", &path, e))?;
    sync_dir(dir)?;
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
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
