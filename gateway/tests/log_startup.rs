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
//! prints each `LogHandle::open` time. The folder is deleted afterwards,
//! pass or fail.

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
}
