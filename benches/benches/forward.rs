//! Forwarding the durable log to a local JetStream stream with file storage
//! (issue 5's target: at least 100k records/s on this machine).
//!
//! The bench starts its own `nats-server -js` (Debian's package; `.ci/test`
//! installs it) on a free loopback port with its store in a temp folder,
//! preloads a log with `N` punch records, and per iteration runs a real
//! [`Forwarder`] with a [`NatsSink`] from a fresh cursor at the oldest
//! record into a fresh stream until every record's PubAck arrived. So one
//! iteration covers reading the log (CRC checks), verifying and routing each
//! record, the publishes, the PubAcks and the cursor checkpoints.
//!
//! Cases, compared in the same run:
//! - `forward_nats/flatbuffers/window/W`: the default encoding with `W`
//!   publishes in flight (1024 is the default; 64 shows what pipelining
//!   buys);
//! - `forward_nats/json/window/1024`: JSON encoding on request.
//!
//! Run: `cargo bench -p fencegate-benches --bench forward -- --warm-up-time 1 --measurement-time 10`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fencegate::log::{CursorStart, LogConfig, LogHandle, RecordBatch};
use fencegate::sink::config::{Encoding, NatsConfig};
use fencegate::sink::nats::NatsSink;
use fencegate::sink::{ForwardSettings, Forwarder, SinkHealth};
use fencegate_schema::{
    AttendanceStatus, Position, PunchKind, PunchMethod, PunchRecordMsg, Reason, RecordBodyMsg,
    RecordMsg, Verdict,
};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const N: u32 = 100_000;

/// A nats-server with its store in a temp folder that lives as long as it.
struct Nats {
    /// Kept for its `Drop`, which stops the server.
    _server: fencegate_testkit::NatsServer,
    pid: String,
    url: String,
    _store: tempfile::TempDir,
}

fn nats_server() -> Nats {
    let store = tempfile::tempdir().unwrap();
    let server = fencegate_testkit::NatsServer::start(store.path());
    Nats {
        pid: server.pid().expect("running").to_string(),
        url: server.url(),
        _server: server,
        _store: store,
    }
}

/// CPU seconds (user + system) a process has used so far, from
/// `/proc/<pid>/stat`: on a shared machine the wall time depends on what
/// else runs, the CPU per record far less.
fn cpu_s(pid: &str) -> f64 {
    let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = st.rfind(')').map(|i| &st[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat (utime, stime) in clock ticks of 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU used during the timed part of the iterations of one case.
#[derive(Default)]
struct Cpu {
    server_s: f64,
    bench_s: f64,
    records: u64,
}

fn record(i: u32) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[12..].copy_from_slice(&i.to_be_bytes());
    let msg = RecordMsg {
        record_id: id,
        tenant: if i % 4 == 0 { "globex" } else { "acme" }.into(),
        gateway_time_ms: 1_741_000_000_000,
        node: Some("fencegate-1".into()),
        body: RecordBodyMsg::Punch(PunchRecordMsg {
            punch_id: id,
            employee_id: format!("employee-{i}"),
            device_id: "terminal-7".into(),
            kind: PunchKind::In,
            method: PunchMethod::Gps,
            device_time_ms: 1_741_000_000_000,
            position: Some(Position::new(31.2304, 121.4737, 8.0)),
            verdict: Verdict::Accepted,
            reason: Reason::None,
            fence_ids: vec!["hq-north".into()],
            nearest_fence_id: Some("hq-north".into()),
            distance_m: 0.0,
            offline: false,
            mock_location: false,
            status: AttendanceStatus::Normal,
            anomaly_flags: 0,
            slot: Some("2025-03-04/day".into()),
            merged_into: None,
        }),
    };
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    msg.encode_into(&mut fbb).to_vec()
}

fn preload(dir: PathBuf) -> LogHandle {
    let mut cfg = LogConfig::new(dir);
    cfg.retain_age = None;
    let (log, _) = LogHandle::open(cfg).unwrap();
    let mut b = RecordBatch::new();
    for i in 0..N {
        b.push(&record(i), 1_741_000_000_000);
        if b.len() == 1024 || i + 1 == N {
            log.append_batch(std::mem::take(&mut b))
                .unwrap()
                .wait()
                .unwrap();
        }
    }
    log
}

/// Forwards the whole log once into a fresh stream; returns the time taken
/// and adds the CPU the server and this process used meanwhile to `cpu`.
async fn forward_once(
    log: &LogHandle,
    url: &str,
    run: u64,
    window: usize,
    encoding: Encoding,
    server_pid: &str,
    cpu: &mut Cpu,
) -> Duration {
    let mut cfg = NatsConfig::new(url);
    cfg.stream = format!("BENCH{run}");
    cfg.subject_prefix = format!("b{run}");
    cfg.max_in_flight = window;
    cfg.encoding = encoding;
    let cursor = log
        .cursor(&format!("bench-{run}"), CursorStart::Oldest)
        .unwrap();
    let health = Arc::new(SinkHealth::new(
        &format!("bench-{run}"),
        "nats",
        cursor.position(),
    ));
    let sink = NatsSink::new(cfg.clone(), "bench").unwrap();
    let settings = ForwardSettings {
        max_batch: 2048,
        ..ForwardSettings::default()
    };
    let stop = CancellationToken::new();
    let (s0, b0) = (cpu_s(server_pid), cpu_s("self"));
    let t0 = fencegate_benches::clock::now();
    let task = tokio::spawn(
        Forwarder::new(sink, log.clone(), cursor, settings, health.clone()).run(stop.clone()),
    );
    let end = log.committed();
    while health.position() < end {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let took = t0.elapsed();
    cpu.server_s += cpu_s(server_pid) - s0;
    cpu.bench_s += cpu_s("self") - b0;
    cpu.records += u64::from(N);
    stop.cancel();
    task.await.unwrap().unwrap();
    log.remove_cursor(&format!("bench-{run}")).unwrap();
    // Keep the server's disk use flat across iterations.
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    js.delete_stream(&cfg.stream).await.unwrap();
    took
}

fn forward(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let nats = nats_server();
    let dir = tempfile::tempdir().unwrap();
    let log = preload(dir.path().to_owned());
    let mut run = 0u64;
    let mut g = c.benchmark_group("forward_nats");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(N)));
    let cases = [
        ("flatbuffers", Encoding::FlatBuffers, 64),
        ("flatbuffers", Encoding::FlatBuffers, 1024),
        ("json", Encoding::Json, 1024),
    ];
    for (name, encoding, window) in cases {
        let mut cpu = Cpu::default();
        g.bench_with_input(
            BenchmarkId::new(format!("{name}/window"), window),
            &window,
            |b, &window| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        run += 1;
                        total += rt.block_on(forward_once(
                            &log, &nats.url, run, window, encoding, &nats.pid, &mut cpu,
                        ));
                    }
                    total
                });
            },
        );
        let per = |s: f64| s / cpu.records.max(1) as f64 * 1e6;
        println!(
            "forward_nats/{name}/window/{window}: CPU per record (warm-up included): nats-server {:.2} µs, forwarder process {:.2} µs",
            per(cpu.server_s),
            per(cpu.bench_s)
        );
    }
    g.finish();
    log.close();
}

criterion_group!(benches, forward);
criterion_main!(benches);
