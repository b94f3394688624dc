//! Start-up time of the durable log with a large log (issue 12).
//!
//! Ignored by default: it writes several GiB. Run it alone, with the size
//! and folder chosen for the machine (tmpfs keeps it off a full disk):
//!
//! ```text
//! FENCEGATE_STARTUP_GIB=4 FENCEGATE_STARTUP_DIR=/dev/shm/fg-startup \
//!   cargo test -p fencegate --test log_startup -- --ignored --nocapture
//! ```
//!
//! It builds the log through the public API (64 MiB segments, 4 MiB
//! batches of 1 KiB records), closes it, then opens it three times and
//! prints each `LogHandle::open` time. Then it opens it three more times,
//! each after dropping the log's files from the page cache
//! (`posix_fadvise(DONTNEED)` through `dd iflag=nocache`, which needs no
//! root and leaves the rest of the machine's cache alone), so the open
//! reads from the disk: the cold start after a reboot, except that the
//! kernel's inode and directory caches stay warm. The folder is deleted
//! afterwards, pass or fail.

use std::path::PathBuf;

use fencegate::log::{LogConfig, LogHandle, RecordBatch};

/// Deletes the folder when the test ends, however it ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cfg(dir: &std::path::Path) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.max_bytes = 64 << 30;
    c.retain_bytes = 32 << 30;
    c.retain_age = None;
    c
}

#[test]
#[ignore = "writes several GiB; run by hand (see the module docs)"]
fn open_time_with_a_large_log() {
    let gib: u64 = std::env::var("FENCEGATE_STARTUP_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let dir = PathBuf::from(
        std::env::var("FENCEGATE_STARTUP_DIR")
            .unwrap_or_else(|_| "/dev/shm/fencegate-startup".into()),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = Cleanup(dir.clone());

    let t = fencegate::clock::instant();
    {
        let (log, _) = LogHandle::open(cfg(&dir)).unwrap();
        let payload = [0x5au8; 1000];
        let per_batch = (4 << 20) / (payload.len() + 24) - 1;
        let mut batch = RecordBatch::with_capacity(per_batch, per_batch * payload.len());
        let mut time_ms = 1_700_000_000_000u64;
        while log.used_bytes() < gib << 30 {
            batch.clear();
            for _ in 0..per_batch {
                batch.push(&payload, time_ms);
                time_ms += 1;
            }
            log.append_batch_blocking(std::mem::take(&mut batch))
                .unwrap()
                .wait()
                .unwrap();
        }
        log.close();
    }
    println!("built {gib} GiB log in {:.1} s", t.elapsed().as_secs_f64());

    for run in 1..=3 {
        let t = fencegate::clock::instant();
        let (log, report) = LogHandle::open(cfg(&dir)).unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "open {run}: {secs:.3} s ({} segments, {} bytes)",
            report.segments, report.bytes
        );
        log.close();
    }

    for run in 1..=3 {
        let evicted = evict_page_cache(&dir);
        let t = fencegate::clock::instant();
        let (log, report) = LogHandle::open(cfg(&dir)).unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "cold open {run}: {secs:.3} s ({} segments, {} bytes; {evicted} files dropped from the page cache)",
            report.segments, report.bytes
        );
        log.close();
    }
}

/// Drops every file under `dir` from the page cache, so the next read of
/// it goes to the disk; returns how many files it dropped. The log's
/// files are synced (the log fsyncs every batch and `close` syncs the
/// rest), so no dirty page holds the advice back.
fn evict_page_cache(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let ok = std::process::Command::new("dd")
                .arg(format!("if={}", path.display()))
                .args(["iflag=nocache", "count=0", "status=none"])
                .status()
                .is_ok_and(|s| s.success());
            n += usize::from(ok);
        }
    }
    n
}
