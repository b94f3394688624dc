//! Durable log retention, size cap and cursors.

use std::path::Path;
use std::time::Duration;

use fencegate::log::{CursorStart, LogConfig, LogError, LogHandle, Lsn};

const HOUR_MS: u64 = 3_600_000;

/// 4 KiB segments of 32 entries (100-byte payloads, 124 bytes each).
fn cfg(dir: &Path) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.segment_bytes = 4096;
    c.max_bytes = 64 << 10;
    c.retain_bytes = 16 << 10;
    c.retain_age = None;
    c.max_batch_bytes = 2048;
    c.max_record_bytes = 1024;
    c.max_queued_bytes = 1 << 20;
    c
}

fn append_n(log: &LogHandle, n: u64, time_ms: u64) {
    for _ in 0..n {
        log.append_blocking(&[9u8; 100], time_ms).unwrap();
    }
}

#[test]
fn size_retention_waits_for_every_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = LogHandle::open(cfg(dir.path())).unwrap();
    let fast = log.cursor("fast", CursorStart::Oldest).unwrap();
    let slow = log.cursor("slow", CursorStart::Oldest).unwrap();
    append_n(&log, 320, 0); // ~40 KiB: ten segments, over the 16 KiB target
    let before = log.used_bytes();

    fast.store(log.committed()).unwrap();
    let r = log.retain(0).unwrap();
    assert_eq!(r.deleted_segments, 0, "slow is still at 0");
    assert_eq!(r.held_by, Some(("slow".to_owned(), Lsn(0))));
    assert_eq!(log.used_bytes(), before);

    slow.store(Lsn(100)).unwrap();
    let r = log.retain(0).unwrap();
    // Only whole segments below LSN 100 go: 0..32, 32..64, 64..96.
    assert_eq!(r.deleted_segments, 3);
    assert_eq!(r.oldest, Lsn(96));
    assert_eq!(log.oldest(), Lsn(96));
    assert_eq!(log.used_bytes(), before - r.freed_bytes);
    assert!(matches!(
        log.reader(Lsn(10)),
        Err(LogError::Trimmed {
            requested: Lsn(10),
            oldest: Lsn(96)
        })
    ));
    assert_eq!(
        log.reader(Lsn(96))
            .unwrap()
            .next_entry()
            .unwrap()
            .unwrap()
            .lsn,
        Lsn(96)
    );

    slow.store(log.committed()).unwrap();
    let r = log.retain(0).unwrap();
    assert!(r.held_by.is_none());
    assert!(
        log.used_bytes() <= 16 << 10,
        "size target not reached: {}",
        log.used_bytes()
    );
    let segs = log.segments();
    assert!(
        segs.last().unwrap().active,
        "the active segment is never deleted"
    );
}

#[test]
fn age_retention_deletes_old_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.retain_bytes = 48 << 10; // size alone would keep everything
    c.retain_age = Some(Duration::from_secs(3600));
    let (log, _) = LogHandle::open(c).unwrap();
    append_n(&log, 96, HOUR_MS); // three segments at t = 1 h
    append_n(&log, 40, 5 * HOUR_MS); // the rest at t = 5 h
    assert_eq!(
        log.retain(2 * HOUR_MS).unwrap().deleted_segments,
        0,
        "nothing is an hour old yet"
    );
    let r = log.retain(3 * HOUR_MS).unwrap();
    assert_eq!(r.deleted_segments, 3);
    assert_eq!(log.oldest(), Lsn(96));
    // Far in the future only the active segment remains.
    log.retain(100 * HOUR_MS).unwrap();
    let segs = log.segments();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].active);
    assert_eq!(log.append_blocking(b"still writable", 0).unwrap(), Lsn(136));
}

#[test]
fn size_cap_answers_full_until_retention_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_bytes = 16 << 10;
    c.retain_bytes = 8 << 10;
    let (log, _) = LogHandle::open(c).unwrap();
    let sink = log.cursor("sink", CursorStart::Oldest).unwrap();
    let mut written = 0u64;
    let err = loop {
        match log.append_blocking(&[3u8; 100], 0) {
            Ok(l) => {
                assert_eq!(l, Lsn(written));
                written += 1;
            }
            Err(e) => break e,
        }
        assert!(written < 1000, "the cap never applied");
    };
    assert!(matches!(err, LogError::Full { max: 16384, .. }), "{err}");
    assert!(!log.is_writable());
    assert!(log.used_bytes() <= 16 << 10);
    assert!(log.stats().rejected_full >= 1);

    // The sink has not delivered anything: retention may not help.
    let r = log.retain(0).unwrap();
    assert_eq!(
        (r.deleted_segments, r.held_by.as_ref().map(|h| h.0.as_str())),
        (0, Some("sink"))
    );
    assert!(matches!(
        log.append(&[3u8; 100], 0),
        Err(LogError::Full { .. })
    ));

    // The sink catches up; retention frees space; appends resume where
    // they stopped, with no gap.
    sink.store(log.committed()).unwrap();
    assert!(log.retain(0).unwrap().deleted_segments > 0);
    assert!(log.is_writable());
    assert_eq!(log.append_blocking(b"after", 0).unwrap(), Lsn(written));
}

#[test]
fn cursors_persist_and_move_within_the_stored_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = cfg(dir.path());
    cfg.retain_bytes = 4096;
    let (log, _) = LogHandle::open(cfg.clone()).unwrap();
    append_n(&log, 100, 0);
    let c = log.cursor("nats", CursorStart::At(Lsn(40))).unwrap();
    assert_eq!(c.position(), Lsn(40));
    // Registering again returns the stored position, not the new start.
    assert_eq!(
        log.cursor("nats", CursorStart::Latest).unwrap().position(),
        Lsn(40)
    );
    assert_eq!(
        log.cursor("webhook", CursorStart::Latest)
            .unwrap()
            .position(),
        Lsn(100)
    );
    c.store(Lsn(70)).unwrap();
    assert!(matches!(
        c.store(Lsn(101)),
        Err(LogError::CursorOutOfRange {
            committed: Lsn(100),
            ..
        })
    ));
    assert!(matches!(
        log.cursor("../etc", CursorStart::Oldest),
        Err(LogError::InvalidCursorName(_))
    ));
    assert!(matches!(
        log.cursor("x", CursorStart::At(Lsn(500))),
        Err(LogError::CursorOutOfRange {
            position: Lsn(500),
            ..
        })
    ));
    let mut r = c.reader().unwrap();
    assert_eq!(r.next_entry().unwrap().unwrap().lsn, Lsn(70));
    log.close();

    let (log, _) = LogHandle::open(cfg).unwrap();
    assert_eq!(
        log.cursors(),
        vec![
            ("nats".to_owned(), Lsn(70)),
            ("webhook".to_owned(), Lsn(100))
        ]
    );
    let c = log.cursor("nats", CursorStart::Oldest).unwrap();
    // Rewinding to redeliver is allowed while the entries are stored...
    c.store(Lsn(5)).unwrap();
    log.cursor("webhook", CursorStart::Oldest)
        .unwrap()
        .store(Lsn(100))
        .unwrap();
    c.store(Lsn(100)).unwrap();
    log.retain(0).unwrap();
    let oldest = log.oldest();
    assert!(oldest > Lsn(5));
    // ...but not below what retention already deleted.
    assert!(
        matches!(c.store(Lsn(5)), Err(LogError::CursorOutOfRange { oldest: Some(o), .. }) if o == oldest)
    );

    // A removed cursor no longer holds back retention and cannot be stored.
    assert!(log.remove_cursor("webhook").unwrap());
    assert!(!log.remove_cursor("webhook").unwrap());
    assert_eq!(log.cursors().len(), 1);
    assert!(!dir.path().join("cursors/webhook").exists());
}

#[tokio::test]
async fn store_async_persists() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = LogHandle::open(cfg(dir.path())).unwrap();
    log.append(b"r", 0).unwrap().await.unwrap();
    let c = log.cursor("jsonl", CursorStart::Oldest).unwrap();
    c.store_async(Lsn(1)).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cursors/jsonl")).unwrap(),
        "1\n"
    );
}
