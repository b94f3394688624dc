//! Durable log: append/read round trips, group commit, backpressure and
//! follow mode.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fencegate::log::{LogConfig, LogError, LogHandle, LogReader, Lsn, RecordBatch};

fn small(dir: &Path) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.segment_bytes = 8 << 10;
    c.max_bytes = 64 << 20;
    c.retain_bytes = 32 << 20;
    c.max_batch_bytes = 32 << 10;
    c.max_record_bytes = 4 << 10;
    c.max_queued_bytes = 1 << 20;
    c
}

fn payload(i: u64) -> Vec<u8> {
    // Varying lengths, including empty, so framing bugs show.
    let n = (i * 37 % 300) as usize;
    (0..n).map(|k| (i as usize + k) as u8).collect()
}

fn read_all(r: &mut LogReader) -> Vec<(Lsn, u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        out.push((e.lsn, e.time_ms, e.payload.to_vec()));
    }
    out
}

#[test]
fn round_trip_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = LogHandle::open(small(dir.path())).unwrap();
    assert_eq!(report.next_lsn, Lsn(0));
    assert!(report.truncation.is_none());
    for i in 0..300u64 {
        assert_eq!(log.append_blocking(&payload(i), 1_000 + i).unwrap(), Lsn(i));
    }
    let mut batch = RecordBatch::with_capacity(100, 100 * 64);
    for i in 300..400u64 {
        batch.push(&payload(i), 1_000 + i);
    }
    let range = log.append_batch_blocking(batch).unwrap().wait().unwrap();
    assert_eq!(
        (range.first, range.count, range.end()),
        (Lsn(300), 100, Lsn(400))
    );
    assert_eq!(log.committed(), Lsn(400));
    assert!(
        log.segments().len() > 3,
        "8 KiB segments must have rolled: {:?}",
        log.segments()
    );

    let check = |got: Vec<(Lsn, u64, Vec<u8>)>, from: u64| {
        assert_eq!(got.len() as u64, 400 - from);
        for (k, (lsn, t, p)) in got.into_iter().enumerate() {
            let i = from + k as u64;
            assert_eq!((lsn, t), (Lsn(i), 1_000 + i));
            assert_eq!(p, payload(i), "payload of LSN {i}");
        }
    };
    check(read_all(&mut log.reader(Lsn(0)).unwrap()), 0);
    check(read_all(&mut log.reader(Lsn(257)).unwrap()), 257);
    let seg_times = log.segments();
    assert_eq!(seg_times[0].min_time_ms, Some(1_000));
    assert!(seg_times.windows(2).all(|w| w[0].end_lsn == w[1].first_lsn));
    log.close();
    assert!(matches!(log.append(b"x", 0), Err(LogError::Closed)));

    let (log, report) = LogHandle::open(small(dir.path())).unwrap();
    assert_eq!(
        (report.next_lsn, report.entries, report.oldest),
        (Lsn(400), 400, Lsn(0))
    );
    assert!(report.truncation.is_none(), "{report}");
    assert_eq!(log.append_blocking(b"after reopen", 9).unwrap(), Lsn(400));
    check(
        read_all(&mut LogReader::open_dir(dir.path(), Lsn(0), Duration::from_millis(10)).unwrap())
            [..400]
            .to_vec(),
        0,
    );
    let mut r = log.reader(Lsn(400)).unwrap();
    assert_eq!(r.next_entry().unwrap().unwrap().payload, b"after reopen");
    assert!(r.next_entry().unwrap().is_none());
}

#[test]
fn limits_are_enforced_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = LogHandle::open(small(dir.path())).unwrap();
    let big = vec![0u8; (4 << 10) + 1];
    assert!(matches!(
        log.append(&big, 0),
        Err(LogError::TooLarge {
            len: 4097,
            max: 4096
        })
    ));
    let mut batch = RecordBatch::new();
    for _ in 0..9 {
        batch.push(&[1u8; 4000], 0);
    }
    assert!(matches!(
        log.append_batch(batch),
        Err(LogError::TooLarge { max: 32768, .. })
    ));
    let empty = log
        .append_batch(RecordBatch::new())
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(empty.count, 0);
    assert_eq!(log.stats().records, 0);
}

#[test]
fn concurrent_appenders_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small(dir.path());
    cfg.segment_bytes = 1 << 20;
    cfg.max_batch_delay = Duration::from_millis(2);
    let (log, _) = LogHandle::open(cfg).unwrap();
    let log = Arc::new(log);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut lsns = Vec::new();
                for i in 0..100u64 {
                    lsns.push(
                        log.append_blocking(format!("t{t}-{i}").as_bytes(), i)
                            .unwrap(),
                    );
                }
                lsns
            })
        })
        .collect();
    let mut all: Vec<Lsn> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 800, "every append got its own LSN");
    let s = log.stats();
    assert_eq!(s.records, 800);
    // Eight appenders each waiting on their own ack: one sync carries
    // several of them, so there are far fewer syncs than records.
    assert!(
        s.fsyncs * 3 <= s.records,
        "group commit did not batch: {s:?}"
    );
    assert_eq!(
        s.batches, s.fsyncs,
        "no segment rolled, so one sync per batch: {s:?}"
    );
}

#[test]
fn full_queue_answers_busy_and_the_rest_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small(dir.path());
    cfg.queue_capacity = 1;
    cfg.max_batch_records = 1;
    let (log, _) = LogHandle::open(cfg).unwrap();
    let mut pending = Vec::new();
    let mut busy = 0;
    // Each record needs its own fdatasync, so a tight loop of 500
    // submissions outruns the writer and meets the one-slot queue full.
    for i in 0..500u64 {
        match log.append(b"punch", i) {
            Ok(p) => pending.push(p),
            Err(LogError::Busy) => busy += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(busy > 0, "a one-slot queue never filled");
    let n = pending.len() as u64;
    let lsns: Vec<Lsn> = pending
        .into_iter()
        .map(|p| p.wait().unwrap().first)
        .collect();
    assert_eq!(lsns, (0..n).map(Lsn).collect::<Vec<_>>());
    assert_eq!(log.stats().rejected_busy, busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_mode_sees_new_commits_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = LogHandle::open(small(dir.path())).unwrap();
    log.append(b"old", 1).unwrap().await.unwrap();
    let mut r = log.reader(log.committed()).unwrap();
    assert!(r.next_entry().unwrap().is_none());
    let writer = log.clone();
    let task = tokio::spawn(async move {
        for i in 0..50u64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            writer
                .append(format!("new-{i}").as_bytes(), i)
                .unwrap()
                .await
                .unwrap();
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 50 {
        tokio::time::timeout(Duration::from_secs(10), r.wait())
            .await
            .expect("no commit seen")
            .unwrap();
        while let Some(e) = r.next_entry().unwrap() {
            seen.push(String::from_utf8(e.payload.to_vec()).unwrap());
        }
    }
    task.await.unwrap();
    assert_eq!(
        seen,
        (0..50).map(|i| format!("new-{i}")).collect::<Vec<_>>()
    );
    // The writer stops on close, and a follower waiting for more hears it.
    let closer = log.clone();
    tokio::task::spawn_blocking(move || closer.close())
        .await
        .unwrap();
    assert!(matches!(r.wait().await, Err(LogError::Closed)));
}

#[tokio::test]
async fn folder_reader_follows_another_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = LogHandle::open(small(dir.path())).unwrap();
    let mut r = LogReader::open_dir(dir.path(), Lsn(0), Duration::from_millis(5)).unwrap();
    assert!(r.next_entry().unwrap().is_none());
    // Enough to roll segments between polls.
    let mut batch = RecordBatch::new();
    for i in 0..200u64 {
        batch.push(&payload(i), i);
        if batch.encoded_len() > 12 << 10 {
            log.append_batch(std::mem::take(&mut batch))
                .unwrap()
                .await
                .unwrap();
        }
    }
    log.append_batch(batch).unwrap().await.unwrap();
    let mut got = Vec::new();
    for _ in 0..100 {
        while let Some(e) = r.next_entry().unwrap() {
            got.push(e.lsn);
        }
        if got.len() == 200 {
            break;
        }
        r.wait().await.unwrap();
    }
    assert_eq!(got, (0..200).map(Lsn).collect::<Vec<_>>());
}
