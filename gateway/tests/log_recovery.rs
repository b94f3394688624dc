//! Durable log recovery: torn tails are cut and reported, damage to synced
//! data is refused with the file and offset, the folder is locked.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use fencegate::log::{CursorStart, LogConfig, LogError, LogHandle, Lsn, RecordBatch};

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

#[test]
fn damage_in_a_closed_segment_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200); // 8 KiB segments: several closed ones
    let segs = segments(dir.path());
    assert!(segs.len() >= 4);
    let victim = segs[1].clone();
    let mut bytes = fs::read(&victim).unwrap();
    let at = 32 + 3 * 124 + 50; // inside the 4th entry's payload
    bytes[at] ^= 0x01;
    fs::write(&victim, &bytes).unwrap();
    match LogHandle::open(cfg(dir.path())) {
        Err(LogError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            assert_eq!(path, victim);
            assert_eq!(offset, (32 + 3 * 124) as u64);
            assert!(reason.contains("CRC mismatch"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Nothing was cut.
    assert_eq!(fs::read(&victim).unwrap(), bytes);
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
