//! Durable log crash safety with a real process: a child (this test binary
//! re-run in child mode) appends from several threads and prints every LSN
//! it was acknowledged; the parent kills it with SIGKILL mid-burst, reopens
//! the log and checks every acknowledged record is there exactly once.
//!
//! SIGKILL keeps the page cache, so this proves the process side (nothing
//! acknowledged before its write, recovery and reopen after a kill); power
//! loss is covered by the torn-tail tests in `log_recovery.rs`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fencegate::log::{LogConfig, LogHandle, Lsn, RecordBatch};

const CHILD_ENV: &str = "FENCEGATE_LOG_CRASH_CHILD";
const TEST_NAME: &str = "sigkill_mid_burst_keeps_every_acknowledged_record";

fn cfg(dir: &Path) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.segment_bytes = 64 << 10; // many rolls during the burst
    c.max_bytes = 1 << 30;
    c.retain_bytes = 512 << 20;
    c.max_batch_bytes = 32 << 10;
    c.max_record_bytes = 1024;
    c.max_queued_bytes = 1 << 20;
    c
}

fn payload(thread: u64, i: u64) -> Vec<u8> {
    let mut p = format!("t{thread}-i{i}-").into_bytes();
    p.resize(120, b'x');
    p
}

/// Child mode: append until killed, printing `ACK <lsn> <thread> <i>` for
/// single appends and `ACKB <first> <thread> <i> <count>` for batches.
fn child(dir: &str) -> ! {
    let (log, _) = LogHandle::open(cfg(Path::new(dir))).unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in (0..).step_by(8) {
                    if t == 3 {
                        // One thread appends batches, as the ping path does.
                        let mut b = RecordBatch::new();
                        for k in 0..8 {
                            b.push(&payload(t, i + k), i + k);
                        }
                        let r = log.append_batch_blocking(b).unwrap().wait().unwrap();
                        println!("ACKB {} {t} {i} {}", r.first, r.count);
                    } else {
                        for k in 0..8 {
                            let lsn = log.append_blocking(&payload(t, i + k), i + k).unwrap();
                            println!("ACK {lsn} {t} {}", i + k);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    unreachable!("the child appends until it is killed");
}

#[test]
fn sigkill_mid_burst_keeps_every_acknowledged_record() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut kid = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = kid.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // acked LSN -> (thread, i)
    let mut acked: HashMap<u64, (u64, u64)> = HashMap::new();
    fn note(acked: &mut HashMap<u64, (u64, u64)>, line: &str) {
        let f: Vec<u64> = line
            .split(' ')
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        if line.starts_with("ACK ") && f.len() == 3 {
            acked.insert(f[0], (f[1], f[2]));
        } else if line.starts_with("ACKB ") && f.len() == 4 {
            for k in 0..f[3] {
                acked.insert(f[0] + k, (f[1], f[2] + k));
            }
        }
    }
    while acked.len() < 3000 {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => note(&mut acked, &line),
            Err(e) => {
                let _ = kid.kill();
                panic!(
                    "child stopped acknowledging after {} acks: {e}",
                    acked.len()
                );
            }
        }
    }
    kid.kill().unwrap(); // SIGKILL, mid-burst
    kid.wait().unwrap();
    // Acks printed before the kill are acknowledged too.
    reader.join().unwrap();
    for line in rx.try_iter() {
        note(&mut acked, &line);
    }

    let (log, report) = LogHandle::open(cfg(dir.path())).unwrap();
    assert!(
        report.truncation.is_none(),
        "a process kill tore nothing: {report}"
    );
    let mut r = log.reader(Lsn(0)).unwrap();
    let mut seen = HashSet::new();
    let mut stored = HashMap::new();
    while let Some(e) = r.next_entry().unwrap() {
        assert!(
            seen.insert(e.payload.to_vec()),
            "record stored twice at LSN {}",
            e.lsn
        );
        stored.insert(e.lsn.0, e.payload.to_vec());
    }
    for (lsn, (t, i)) in &acked {
        assert_eq!(
            stored.get(lsn),
            Some(&payload(*t, *i)),
            "acknowledged LSN {lsn} (t{t} i{i}) lost or changed"
        );
    }
    assert!(stored.len() >= acked.len());
}
