//! Durable log group commit, with a real `fdatasync` on this machine's disk.
//!
//! Four producer threads append 200-byte records and keep many appends in
//! flight; the writer syncs at most `k` records at a time (`max_batch_records`
//! = 1, 64, 1024), so the cases compare one sync per record with group
//! commit in the same run (4096 is the default limit):
//!
//! - `log_commit_singles/k`: one record per append (the punch path: one
//!   oneshot and one allocation per record);
//! - `log_commit_batched/k`: `RecordBatch`es of 64 records per append (the
//!   datagram ping path).
//!
//! Throughput is records per second made durable (every append awaited).
//! The log lives in `FENCEGATE_BENCH_DIR` if set, else the system temp
//! folder; it must be on the disk you mean to measure (not tmpfs).
//!
//! Run: `cargo bench -p fencegate-benches --bench log -- --warm-up-time 1 --measurement-time 3`

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fencegate::log::{LogConfig, LogError, LogHandle, Pending, RecordBatch};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PRODUCERS: usize = 4;
const RECORD: usize = 200;

fn bench_dir() -> PathBuf {
    std::env::var_os("FENCEGATE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

fn open(k: usize) -> (tempfile::TempDir, LogHandle) {
    let dir = tempfile::Builder::new()
        .prefix("fencegate-log-bench")
        .tempdir_in(bench_dir())
        .unwrap();
    let mut cfg = LogConfig::new(dir.path());
    cfg.max_bytes = 64 << 30;
    cfg.retain_bytes = 32 << 30;
    cfg.max_batch_records = k;
    cfg.max_batch_bytes = 8 << 20;
    cfg.max_queued_bytes = 64 << 20;
    cfg.queue_capacity = 65536;
    let (log, _) = LogHandle::open(cfg).unwrap();
    (dir, log)
}

/// Waits for the oldest in-flight append.
fn settle(inflight: &mut VecDeque<Pending>) {
    if let Some(p) = inflight.pop_front() {
        p.wait().unwrap();
    }
}

/// Appends `records` records from `PRODUCERS` threads, `per_append` records
/// per append, keeping up to `window` appends in flight per thread.
fn run(log: &LogHandle, records: u64, per_append: usize, window: usize) -> Duration {
    let payload = [0x5au8; RECORD];
    let start = fencegate_benches::clock::now();
    std::thread::scope(|s| {
        for _ in 0..PRODUCERS {
            s.spawn(|| {
                let appends = records / (PRODUCERS * per_append) as u64;
                let mut inflight = VecDeque::with_capacity(window);
                let mut batch = RecordBatch::with_capacity(per_append, per_append * RECORD);
                for i in 0..appends {
                    if inflight.len() == window {
                        settle(&mut inflight);
                    }
                    let mut submit = || {
                        if per_append == 1 {
                            log.append(&payload, i)
                        } else {
                            for _ in 0..per_append {
                                batch.push(&payload, i);
                            }
                            log.append_batch(std::mem::take(&mut batch))
                        }
                    };
                    loop {
                        match submit() {
                            Ok(p) => break inflight.push_back(p),
                            Err(LogError::Busy) => settle(&mut inflight),
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                while !inflight.is_empty() {
                    settle(&mut inflight);
                }
            });
        }
    });
    start.elapsed()
}

fn group_commit(c: &mut Criterion) {
    for (name, per_append) in [("log_commit_singles", 1usize), ("log_commit_batched", 64)] {
        let mut g = c.benchmark_group(name);
        g.sample_size(10);
        for k in [1usize, 64, 1024, 4096] {
            if k < per_append {
                // A 64-record append is one write; a limit below that is moot.
                continue;
            }
            // Enough records per iteration for a few dozen syncs.
            let records = (k.max(per_append) * 16 * PRODUCERS) as u64;
            // Enough in flight to fill a batch of k twice over.
            let window = (2 * k / (PRODUCERS * per_append)).max(2);
            let (_dir, log) = open(k);
            g.throughput(Throughput::Elements(records));
            g.bench_with_input(BenchmarkId::from_parameter(k), &k, |b, _| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| run(&log, records, per_append, window))
                        .sum()
                });
            });
            let s = log.stats();
            eprintln!(
                "{name}/{k}: {} records in {} syncs ({:.1} records per sync)",
                s.records,
                s.fsyncs,
                s.records as f64 / s.fsyncs.max(1) as f64
            );
            log.close();
        }
        g.finish();
    }
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
