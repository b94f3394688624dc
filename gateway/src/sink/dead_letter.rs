//! A per-sink dead-letter folder: records a sink refused for good (an HTTP
//! 4xx other than 408/425/429, which no retry changes), kept so the cursor
//! can move on and retention never waits on them.
//!
//! `<data_dir>/dead-letter/<sink>/<lsn>.jsonl` holds the records one refused
//! batch left, one JSON object per line, with the record's raw bytes in
//! base64 next to its identity and the error, so an operator can read what
//! was refused and replay it once the receiver is fixed
//! (`fencegate sinks replay-dead-letter`).
//!
//! Each file is written whole and never appended to ([`persist::atomic_replace`]:
//! temporary file, fsync, rename, folder fsync) before the forwarder moves
//! its cursor past the records: once the log's segment is deleted, the file
//! is the only copy. Because a file is complete the moment it appears and the
//! forwarder never touches it again, a replay can run while the node runs
//! without a lock: it rewrites or removes only files it read. A batch
//! dead-lettered twice (a crash before the cursor moved) writes the same
//! file again with the same records.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::batch::BatchRecord;
use crate::persist;

/// One dead-lettered record, as a line of a dead-letter file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadRecord {
    /// The record's log sequence number.
    pub lsn: u64,
    /// Log time, ms since the Unix epoch.
    pub time_ms: u64,
    /// The record id, in the UUID form downstreams see.
    pub record_id: String,
    /// The record's tenant.
    pub tenant: String,
    /// `punch`, `ping` or `event`.
    pub kind: String,
    /// When it was dead-lettered, ms since the Unix epoch.
    pub at_ms: i64,
    /// Why the sink refused it.
    pub error: String,
    /// The encoded `Record`, base64 (standard alphabet).
    pub payload_b64: String,
}

impl DeadRecord {
    /// The line for `record`, refused with `error` at `at_ms`.
    pub fn new(record: &BatchRecord<'_>, error: &str, at_ms: i64) -> Self {
        Self {
            lsn: record.lsn().0,
            time_ms: record.time_ms(),
            record_id: crate::record_json::uuid(&record.record_id()),
            tenant: record.tenant().to_owned(),
            kind: record.kind().token().to_owned(),
            at_ms,
            error: error.to_owned(),
            payload_b64: base64::engine::general_purpose::STANDARD.encode(record.payload()),
        }
    }

    /// The encoded record.
    pub fn payload(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.payload_b64)
    }
}

/// One dead-letter file and its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its records, in LSN order.
    pub records: Vec<DeadRecord>,
}

/// The dead-letter folder of one sink.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    dir: PathBuf,
}

impl DeadLetter {
    /// The dead letters of sink `sink` under `root` (the node's
    /// `<data_dir>/dead-letter`). Nothing is created until the first write.
    pub fn new(root: &Path, sink: &str) -> Self {
        Self {
            dir: root.join(sink),
        }
    }

    /// The sink's dead-letter folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `records` (one refused batch's, in LSN order) durable as one
    /// file named after the first LSN. Blocking: call from a blocking thread.
    pub fn write(&self, records: &[DeadRecord]) -> std::io::Result<()> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{:020}.jsonl", first.lsn));
        persist::atomic_replace(&path, &encode(records)?, persist::PRIVATE)
    }

    /// Every dead-letter file, oldest LSN first.
    pub fn files(&self) -> std::io::Result<Vec<DeadFile>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut paths = Vec::new();
        for e in entries {
            let p = e?.path();
            // Temporary files of a write in progress start with a dot.
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !name.starts_with('.') && name.ends_with(".jsonl") {
                paths.push(p);
            }
        }
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path)?;
                let records = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(serde_json::from_str)
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "{}: not a dead-letter file ({e}); move it out of the folder",
                                path.display()
                            ),
                        )
                    })?;
                Ok(DeadFile { path, records })
            })
            .collect()
    }

    /// Every dead-lettered record, oldest LSN first.
    pub fn list(&self) -> std::io::Result<Vec<DeadRecord>> {
        Ok(self.files()?.into_iter().flat_map(|f| f.records).collect())
    }

    /// After a replay of `file`: keeps only `left` (the records refused
    /// again or not tried), or removes the file when none is left.
    pub fn settle(&self, file: &DeadFile, left: &[DeadRecord]) -> std::io::Result<()> {
        if left.is_empty() {
            match std::fs::remove_file(&file.path) {
                Ok(()) => persist::sync_dir(&self.dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        } else if left.len() < file.records.len() {
            persist::atomic_replace(&file.path, &encode(left)?, persist::PRIVATE)
        } else {
            Ok(())
        }
    }
}

fn encode(records: &[DeadRecord]) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::with_capacity(records.len() * 256);
    for r in records {
        serde_json::to_writer(&mut text, r).map_err(std::io::Error::other)?;
        text.push(b'\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(lsn: u64) -> DeadRecord {
        DeadRecord {
            lsn,
            time_ms: 1,
            record_id: "00".repeat(16),
            tenant: "acme".into(),
            kind: "punch".into(),
            at_ms: 2,
            error: "HTTP 413".into(),
            payload_b64: base64::engine::general_purpose::STANDARD.encode([lsn as u8; 3]),
        }
    }

    #[test]
    fn write_list_settle_keeps_only_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let d = DeadLetter::new(&dir.path().join("dead-letter"), "erp");
        assert!(d.list().unwrap().is_empty());
        d.write(&[rec(10), rec(12)]).unwrap();
        d.write(&[rec(3)]).unwrap();
        assert_eq!(d.list().unwrap(), vec![rec(3), rec(10), rec(12)]);
        // Writing the same batch again (a crash before the cursor moved)
        // leaves one copy.
        d.write(&[rec(10), rec(12)]).unwrap();
        let files = d.files().unwrap();
        assert_eq!(files.len(), 2);
        d.settle(&files[1], &[rec(12)]).unwrap();
        d.settle(&files[0], &[]).unwrap();
        assert_eq!(d.list().unwrap(), vec![rec(12)]);
        assert_eq!(d.list().unwrap()[0].payload().unwrap(), vec![12u8; 3]);
    }

    #[test]
    fn a_foreign_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = DeadLetter::new(dir.path(), "erp");
        std::fs::create_dir_all(d.dir()).unwrap();
        std::fs::write(d.dir().join("notes.jsonl"), "hello\n").unwrap();
        // A temporary file of a write in progress is not read.
        std::fs::write(d.dir().join(".00000000000000000001.jsonl.x.tmp"), "{").unwrap();
        let e = d.list().unwrap_err();
        assert!(e.to_string().contains("notes.jsonl"), "{e}");
    }
}
