//! Follows the gateway's log during a fleet run and measures ping→log
//! latency: for each ping record of the run, from the intended send time
//! of the datagram that carried it (see `fleet::Schedule`) to the moment
//! the record is readable in the log.
//!
//! With the built-in gateway the tail reads committed (fsynced) entries as
//! each group commit completes. With a remote gateway's `--log-dir` it
//! polls the files every millisecond and sees entries once written, which
//! can be just before their fsync: latency there is a lower bound by up to
//! one fsync.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use fencegate::log::{LogHandle, LogReader, Lsn};
use fencegate_schema::{RecordBodyView, parse_record};

use crate::clock;
use crate::fleet::Schedule;
use crate::ids::RunIds;
use crate::stats::Series;

/// Where the tail reads.
#[derive(Debug, Clone)]
pub enum TailSource {
    /// The built-in gateway's log, committed entries only.
    InProcess(LogHandle),
    /// A log folder another process writes.
    Dir(PathBuf),
}

/// A running tail.
#[derive(Debug)]
pub struct Tail {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<anyhow::Result<TailCounts>>,
}

/// What the tail saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct TailCounts {
    /// Ping records of the run.
    pub pings: u64,
    /// Enter/exit events of the run.
    pub events: u64,
}

impl Tail {
    /// Starts following `src` from `from` on its own thread.
    pub fn start(
        src: TailSource,
        from: Lsn,
        sched: Arc<Schedule>,
        ids: Arc<RunIds>,
        series: Arc<Series>,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("log-tail".into())
            .spawn(move || follow(&src, from, &sched, &ids, &series, &stop2))?;
        Ok(Self { stop, handle })
    }

    /// Reads what is left and stops.
    pub fn finish(self) -> anyhow::Result<TailCounts> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the log tail panicked"))?
    }
}

fn follow(
    src: &TailSource,
    from: Lsn,
    sched: &Schedule,
    ids: &RunIds,
    series: &Series,
    stop: &AtomicBool,
) -> anyhow::Result<TailCounts> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let mut reader = match src {
        TailSource::InProcess(log) => log.reader(from),
        TailSource::Dir(d) => LogReader::open_dir(d, from, Duration::from_millis(1)),
    }
    .map_err(|e| anyhow::anyhow!("log tail: {e}"))?;
    let mut counts = TailCounts::default();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while let Some(e) = reader
            .next_entry()
            .map_err(|e| anyhow::anyhow!("log tail: {e}"))?
        {
            let Ok(rec) = parse_record(e.payload) else {
                continue;
            };
            match rec.body() {
                RecordBodyView::Ping(p) => {
                    let Some(d) = ids.device_index(p.device_id()) else {
                        continue;
                    };
                    let Some(due) = sched.due_of_fix(d, p.time_ms()) else {
                        continue;
                    };
                    let now = clock::now();
                    let seen_us = now.saturating_duration_since(sched.t0).as_micros() as i64;
                    let latency_us = (seen_us - due * 1_000).max(1) as u64;
                    series.done_us(now, latency_us, 1);
                    counts.pings += 1;
                }
                RecordBodyView::FenceEvent(ev) => {
                    if ids.device_index(ev.device_id()).is_some() {
                        counts.events += 1;
                    }
                }
                RecordBodyView::Punch(_) | RecordBodyView::Hr(_) | RecordBodyView::DayResult(_) => {
                }
            }
        }
        if stopping {
            return Ok(counts);
        }
        rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_millis(20), reader.wait()).await;
        });
    }
}
