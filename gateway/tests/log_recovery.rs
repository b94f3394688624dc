//! Durable log recovery: torn tails are cut and reported, damage to synced
//! data is refused with the file and offset, the folder is locked.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use fencegate::log::{
    CursorStart, FsStorage, LogConfig, LogError, LogHandle, Lsn, RecordBatch, Storage, StorageFile,
};

fn cfg(dir: &Path) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.segment_bytes = 8 << 10;
    c.max_bytes = 64 << 20;
    c.retain_bytes = 32 << 20;
    c.max_batch_bytes = 16 << 10;
    c.max_record_bytes = 4 << 10;
    c.max_queued_bytes = 1 << 20;
    c
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// Writes `n` records of 100 bytes, one per sync, and closes the log.
fn fill(dir: &Path, n: u64) {
    let (log, _) = LogHandle::open(cfg(dir)).unwrap();
    for i in 0..n {
        log.append_blocking(&[i as u8; 100], i).unwrap();
    }
    log.close();
}

fn all_entries(log: &LogHandle) -> Vec<(Lsn, Vec<u8>)> {
    let mut r = log.reader(log.oldest()).unwrap();
    let mut v = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        v.push((e.lsn, e.payload.to_vec()));
    }
    v
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn torn_tail_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20);
    let last_full = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&last_full).unwrap().len();
    // A torn write: an entry header promising 100 bytes, then 10 of them.
    let mut torn = Vec::new();
    torn.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    torn.extend_from_slice(&100u32.to_le_bytes());
    torn.extend_from_slice(&20u64.to_le_bytes());
    torn.extend_from_slice(&0u64.to_le_bytes());
    torn.extend_from_slice(&[7u8; 10]);
    append_bytes(&last_full, &torn);

    let (log, report) = LogHandle::open(cfg(dir.path())).unwrap();
    let t = report.truncation.clone().expect("torn tail not reported");
    assert_eq!(t.segment, last_full);
    assert_eq!(
        (t.offset, t.bytes, t.intact_entries),
        (len, torn.len() as u64, 0)
    );
    assert_eq!(t.reason, "entry is cut short by the end of the file");
    assert_eq!(report.next_lsn, Lsn(20));
    assert!(report.to_string().contains("cut torn tail"), "{report}");
    assert_eq!(fs::metadata(&last_full).unwrap().len(), len);
    let got = all_entries(&log);
    assert_eq!(got.len(), 20);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, (l, p))| *l == Lsn(i as u64) && p == &vec![i as u8; 100])
    );
    // Appends continue right after the last intact entry.
    assert_eq!(log.append_blocking(b"next", 0).unwrap(), Lsn(20));
}

#[test]
fn torn_batch_with_intact_entries_after_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = LogHandle::open(cfg(dir.path())).unwrap();
    for i in 0..5u64 {
        log.append_blocking(b"acked", i).unwrap();
    }
    // One batch of four: pretend the page holding its first entry never
    // reached the disk while the later ones did.
    let mut b = RecordBatch::new();
    for i in 0..4u64 {
        b.push(&[0x55; 200], i);
    }
    log.append_batch_blocking(b).unwrap().wait().unwrap();
    log.close();
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let batch_start = 32 + 5 * (24 + 5);
    bytes[batch_start..batch_start + 224].fill(0);
    fs::write(&seg, &bytes).unwrap();

    let (log, report) = LogHandle::open(cfg(dir.path())).unwrap();
    let t = report.truncation.expect("torn batch not reported");
    assert_eq!((t.offset, t.intact_entries), (batch_start as u64, 3));
    assert_eq!(t.reason, "entry CRC mismatch");
    assert_eq!(report.next_lsn, Lsn(5));
    assert_eq!(all_entries(&log).len(), 5);
}

/// The footer sidecar of a segment (written when the segment is sealed).
fn footer_of(seg: &Path) -> PathBuf {
    PathBuf::from(format!("{}.footer", seg.display()))
}

/// Flips one bit inside the 4th entry's payload of `seg` and removes its
/// footer, as on a log written before footers existed. Returns the damaged
/// entry's offset.
fn damage_footerless(seg: &Path) -> u64 {
    let mut bytes = fs::read(seg).unwrap();
    let at = 32 + 3 * 124 + 50; // inside the 4th entry's payload
    bytes[at] ^= 0x01;
    fs::write(seg, &bytes).unwrap();
    let _ = fs::remove_file(footer_of(seg));
    (32 + 3 * 124) as u64
}

#[test]
fn damage_in_a_closed_segment_a_cursor_still_needs_is_an_error_naming_file_offset_cursor_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = LogHandle::open(cfg(dir.path())).unwrap();
        // A sink that has forwarded nothing yet: every record is owed.
        log.cursor("nats", CursorStart::Oldest).unwrap();
        log.close();
    }
    fill(dir.path(), 200); // 8 KiB segments: several closed ones
    let segs = segments(dir.path());
    assert!(segs.len() >= 4);
    let victim = segs[1].clone();
    let offset = damage_footerless(&victim);
    let bytes = fs::read(&victim).unwrap();
    match LogHandle::open(cfg(dir.path())) {
        Err(LogError::Corrupt {
            path,
            offset: at,
            reason,
        }) => {
            assert_eq!(path, victim);
            assert_eq!(at, offset);
            assert!(reason.contains("CRC mismatch"), "{reason}");
            assert!(reason.contains("'nats' at LSN 0"), "{reason}");
            assert!(
                reason.contains("restore the file from a backup"),
                "{reason}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Nothing was cut or moved.
    assert_eq!(fs::read(&victim).unwrap(), bytes);
}

#[test]
fn damaged_old_segment_every_cursor_passed_is_quarantined_and_the_log_opens() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    assert!(segs.len() >= 4);
    let passed = {
        let (log, _) = LogHandle::open(cfg(dir.path())).unwrap();
        // The sink has forwarded everything (so retention could delete these
        // segments; it just has not yet).
        let c = log.cursor("nats", CursorStart::Latest).unwrap();
        c.store(log.committed()).unwrap();
        let end = log.committed();
        log.close();
        end
    };
    let victim = segs[1].clone();
    damage_footerless(&victim);
    let (log, report) = LogHandle::open(cfg(dir.path()))
        .expect("a damaged segment nobody needs must not stop the node");
    // The damaged segment and the intact one before it were moved aside.
    let q = &report.quarantined;
    assert_eq!(q.len(), 2, "{report}");
    assert!(!q[0].damaged && q[1].damaged, "{q:?}");
    assert_eq!(
        q[1].path,
        PathBuf::from(format!("{}.quarantined", victim.display()))
    );
    assert!(q[1].reason.contains("CRC mismatch"), "{}", q[1].reason);
    assert!(q[1].path.exists() && !victim.exists() && !segs[0].exists());
    assert_eq!(log.quarantined(), &q[..]);
    // The log continues from the next segment: contiguous, readable, writable.
    assert_eq!(log.oldest(), q[1].end_lsn);
    let entries = all_entries(&log);
    assert_eq!(entries.first().map(|e| e.0), Some(q[1].end_lsn));
    assert_eq!(entries.last().map(|e| e.0.0 + 1), Some(passed.0));
    log.append_blocking(b"after", 1).unwrap();
    log.close();
    // The next open is clean.
    let (_log, report) = LogHandle::open(cfg(dir.path())).unwrap();
    assert!(report.quarantined.is_empty(), "{report}");
}

#[test]
fn sealed_segment_cut_after_its_footer_was_written_is_quarantined_when_passed() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    let victim = segs[2].clone();
    assert!(footer_of(&victim).exists(), "a sealed segment has a footer");
    let len = fs::metadata(&victim).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let (log, report) = LogHandle::open(cfg(dir.path())).unwrap();
    let damaged: Vec<_> = report.quarantined.iter().filter(|q| q.damaged).collect();
    assert_eq!(damaged.len(), 1, "{report}");
    assert!(
        damaged[0].reason.contains("footer says"),
        "{}",
        damaged[0].reason
    );
    assert_eq!(report.quarantined.len(), 3, "segments 0 and 1 go with it");
    assert_eq!(log.oldest(), damaged[0].end_lsn);
}

#[test]
fn sealed_segment_with_a_footer_is_not_read_at_open_but_readers_still_check_it() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    assert!(segs.len() >= 4);
    let victim = segs[1].clone();
    assert!(footer_of(&victim).exists());
    let mut bytes = fs::read(&victim).unwrap();
    bytes[32 + 3 * 124 + 50] ^= 0x01; // inside an entry, length unchanged
    fs::write(&victim, &bytes).unwrap();
    let storage = Arc::new(ReadLog::default());
    let (log, report) = LogHandle::open_with(cfg(dir.path()), storage.clone())
        .expect("open trusts the footer and does not scan the segment");
    let read = storage.read_all_paths();
    for s in &segs[..segs.len() - 1] {
        assert!(
            !read.contains(s),
            "{} was read in full at open: {read:?}",
            s.display()
        );
    }
    assert!(
        read.contains(segs.last().unwrap()),
        "the tail is verified: {read:?}"
    );
    assert_eq!(report.trusted_by_footer, segs.len() - 1, "{report}");
    assert_eq!(report.verified_fully, 1, "{report}");
    // Reading through the segment still checks every CRC.
    let mut r = log.reader(log.oldest()).unwrap();
    let err = loop {
        match r.next_entry() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the damaged entry was read without an error"),
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("CRC"), "{err}");
}

#[test]
fn log_without_footers_opens_verifies_once_and_gets_footers() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    for s in &segs {
        let _ = fs::remove_file(footer_of(s));
    }
    let (log, report) = LogHandle::open(cfg(dir.path())).unwrap();
    assert_eq!(report.trusted_by_footer, 0, "{report}");
    assert_eq!(report.verified_fully, segs.len(), "{report}");
    assert_eq!(all_entries(&log).len(), 200);
    log.close();
    for s in &segs {
        assert!(footer_of(s).exists(), "{} got no footer", s.display());
    }
    let (log, report) = LogHandle::open(cfg(dir.path())).unwrap();
    assert!(report.trusted_by_footer >= segs.len(), "{report}");
    assert_eq!(report.verified_fully, 1, "{report}");
    assert_eq!(all_entries(&log).len(), 200);
}

/// The file system, recording every path read in full through the trait.
#[derive(Default)]
struct ReadLog {
    read_all: Mutex<Vec<PathBuf>>,
}

impl ReadLog {
    fn read_all_paths(&self) -> Vec<PathBuf> {
        self.read_all.lock().unwrap().clone()
    }
}

impl Storage for ReadLog {
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        FsStorage.list(dir)
    }
    fn create_synced(&self, path: &Path, contents: &[u8]) -> std::io::Result<()> {
        FsStorage.create_synced(path, contents)
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn StorageFile>> {
        FsStorage.open_append(path)
    }
    fn open_read(&self, path: &Path) -> std::io::Result<Box<dyn StorageFile>> {
        FsStorage.open_read(path)
    }
    fn read_all(&self, path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
        self.read_all.lock().unwrap().push(path.to_path_buf());
        FsStorage.read_all(path, buf)
    }
    fn truncate_synced(&self, path: &Path, len: u64) -> std::io::Result<()> {
        FsStorage.truncate_synced(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        FsStorage.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        FsStorage.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        FsStorage.sync_dir(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        FsStorage.exists(path)
    }
    fn file_len(&self, path: &Path) -> std::io::Result<u64> {
        FsStorage.file_len(path)
    }
}

#[test]
fn damage_far_before_the_end_of_the_last_segment_is_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = 1 << 20;
    c.max_record_bytes = 1 << 10;
    c.max_batch_bytes = 4 << 10;
    let (log, _) = LogHandle::open(c.clone()).unwrap();
    for i in 0..200u64 {
        log.append_blocking(&[1u8; 100], i).unwrap();
    }
    log.close();
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[32 + 10 * 124 + 30] ^= 0x80; // entry 10 of 200: ~23 KiB before the end
    fs::write(&seg, &bytes).unwrap();
    let err = LogHandle::open(c).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, LogError::Corrupt { offset, .. } if offset == (32 + 10 * 124) as u64),
        "{msg}"
    );
    assert!(msg.contains("not a torn write"), "{msg}");
    assert_eq!(
        fs::read(&seg).unwrap(),
        bytes,
        "synced data must not be cut"
    );
}

#[test]
fn missing_middle_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    fs::remove_file(&segs[2]).unwrap();
    let msg = LogHandle::open(cfg(dir.path())).unwrap_err().to_string();
    assert!(msg.contains("a segment is missing"), "{msg}");
    assert!(msg.contains(&segs[3].display().to_string()), "{msg}");
}

#[test]
fn second_open_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = LogHandle::open(cfg(dir.path())).unwrap();
    assert!(matches!(
        LogHandle::open(cfg(dir.path())),
        Err(LogError::Locked(_))
    ));
    log.close();
    let (again, _) = LogHandle::open(cfg(dir.path())).unwrap();
    again.close();
}

#[test]
fn leftover_temp_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 3);
    let tmp = dir.path().join(".00000000000000000099.seg.tmp");
    fs::write(&tmp, b"half a header").unwrap();
    let (_log, report) = LogHandle::open(cfg(dir.path())).unwrap();
    assert_eq!(report.removed_files, vec![tmp.clone()]);
    assert!(!tmp.exists());
    assert_eq!(report.next_lsn, Lsn(3));
}

#[test]
fn cursor_past_the_end_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = LogHandle::open(cfg(dir.path())).unwrap();
    log.append_blocking(b"a", 0).unwrap();
    log.cursor("nats", CursorStart::Latest).unwrap();
    log.close();
    fs::write(dir.path().join("cursors/nats"), "99\n").unwrap();
    let msg = LogHandle::open(cfg(dir.path())).unwrap_err().to_string();
    assert!(
        msg.contains("cursor 'nats' is at LSN 99") && msg.contains("remove"),
        "{msg}"
    );
}
