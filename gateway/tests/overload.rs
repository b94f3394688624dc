//! Overload as a first-class state (issue 12): punches come first, pings
//! are shed (counted) before a punch is refused, and admission control
//! refuses new connections before any key exchange when the node's own
//! queueing delay stands above target. Each test drives the overload
//! deterministically (the log writer held by a test hook, or a log filled
//! to its cap), never by timing luck; loopback only, a few seconds each.

mod common;

use std::time::Duration;

use common::{HQ, Node, now_ms, punch};
use fencegate::client::PunchReply;
use fencegate::log::{LogConfig, LogError, LogHandle, PingAppendError, RecordBatch};
use fencegate_schema::{Fix, PingBatchMsg, Reason, Verdict};
use flatbuffers::FlatBufferBuilder;

/// The current value of one exported series (`name{labels}`), 0 if absent.
/// The recorder is process-wide, so callers compare before and after.
fn metric(series: &str) -> f64 {
    fencegate::serve::prometheus()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn ping_batch(records: usize, bytes: usize) -> RecordBatch {
    let mut b = RecordBatch::new();
    for _ in 0..records {
        b.push(&vec![0x50; bytes], 1);
    }
    b
}

/// Red if pings and punches shared the writer's queue as equals: the
/// pings would fill it and the punches after them be refused `Busy`.
#[test]
fn pings_are_shed_before_a_punch_is_refused_when_the_writer_queue_fills() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LogConfig::new(dir.path().join("log"));
    cfg.max_record_bytes = 4096;
    cfg.max_batch_bytes = 64 << 10;
    cfg.max_queued_bytes = 1 << 20;
    let (log, _) = LogHandle::open(cfg).unwrap();
    // Nothing drains while held: the queue only grows.
    let hold = log.hold_writer();
    let mut queued_pings = Vec::new();
    let shed_after = loop {
        match log.append_pings(ping_batch(8, 100)) {
            Ok(p) => queued_pings.push(p),
            Err(PingAppendError::Shed) => break queued_pings.len(),
            Err(PingAppendError::Log(e)) => panic!("a ping was refused, not shed: {e}"),
        }
        assert!(queued_pings.len() < 10_000, "pings were never shed");
    };
    assert!(shed_after > 0, "pings get the writer while it keeps up");
    // Pings stay shed while the queue is above their watermark...
    assert!(matches!(
        log.append_pings(ping_batch(1, 100)),
        Err(PingAppendError::Shed)
    ));
    // ...and punches still queue: the rest of the queue is theirs.
    let punches: Vec<_> = (0..200)
        .map(|i| {
            log.append(&[0x70; 200], i)
                .unwrap_or_else(|e| panic!("punch {i} refused while pings are shed: {e}"))
        })
        .collect();
    drop(hold);
    for p in punches {
        p.wait().expect("every queued punch is made durable");
    }
    for p in queued_pings {
        p.wait()
            .expect("pings queued before the watermark are kept");
    }
}

/// Red if pings could fill the log to its cap: the last sixteenth of
/// `max_bytes` is the punches' reserve.
#[test]
fn pings_are_shed_before_a_punch_finds_the_log_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LogConfig::new(dir.path().join("log"));
    cfg.segment_bytes = 32 << 10;
    cfg.max_bytes = 256 << 10;
    cfg.retain_bytes = 192 << 10;
    cfg.max_record_bytes = 4096;
    cfg.max_batch_bytes = 16 << 10;
    cfg.max_queued_bytes = 64 << 10;
    let (log, _) = LogHandle::open(cfg).unwrap();
    let mut pings = 0;
    loop {
        match log.append_pings(ping_batch(4, 200)) {
            Ok(p) => {
                p.wait().unwrap();
                pings += 1;
            }
            Err(PingAppendError::Shed) => break,
            Err(PingAppendError::Log(e)) => panic!("a ping hit the log's cap: {e}"),
        }
        assert!(pings < 10_000, "pings were never shed");
    }
    // The reserve takes at least a dozen punches of this size.
    for i in 0..12 {
        log.append(&[0x70; 200], i)
            .unwrap_or_else(|e| panic!("punch {i} refused with pings shed: {e}"))
            .wait()
            .unwrap_or_else(|e| panic!("punch {i} not made durable: {e}"));
    }
    // And the cap still holds for punches, once the reserve is used.
    let full = (0..10_000).find_map(|i| match log.append(&[0x70; 200], i) {
        Ok(p) => p.wait().err(),
        Err(e) => Some(e),
    });
    assert!(matches!(full, Some(LogError::Full { .. })), "{full:?}");
}

/// A ping flood during punches: the writer is held (a slow disk) while
/// datagrams pour in; pings are shed and counted, and every punch sent
/// meanwhile is acked once the writer resumes, none answered `Busy`. Red
/// without the pings' watermark (the punches would meet a queue the pings
/// filled) or without counting (`reason="shed"` would stay 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_during_punches_is_shed_and_counted_and_every_punch_is_acked() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    // The flood is within each connection's rate: what is shed here is
    // shed by priority, not by the per-device limit.
    cfg.quic.ping_datagrams_per_s = 1_000_000;
    cfg.quic.ping_burst = 1_000_000;
    // Punches wait for the held writer; that wait must not turn into
    // admission control refusing the next ones in this test.
    cfg.quic.admission_target = Duration::ZERO;
    let node = Node::start_with(dir, cfg).await;
    let shed = r#"fencegate_datagrams_dropped_total{reason="shed"}"#;
    let busy = "fencegate_busy_total";
    let (shed_before, busy_before) = (metric(shed), metric(busy));

    let hold = node.running.edge.log.hold_writer();
    let flooders = [
        node.client("acme", "tracker-1").await,
        node.client("acme", "tracker-2").await,
    ];
    let mut fbb = FlatBufferBuilder::new();
    // Fixes 15 km apart, outside every fence: each leaves the last one's
    // cell, so the pipeline logs every fix it is given.
    let fixes: Vec<Fix> = (0..32)
        .map(|i| {
            let (lat, lon) = if i % 2 == 0 {
                (31.30, 121.60)
            } else {
                (31.40, 121.70)
            };
            Fix::new((lat * 1e7) as i32, (lon * 1e7) as i32, i * 10, 50, 0)
        })
        .collect();
    let batch = PingBatchMsg {
        device_seq: 0,
        base_time_ms: now_ms(),
        fixes,
    };
    let deadline = fencegate::clock::tokio_now() + Duration::from_secs(20);
    let mut sent = 0u64;
    while metric(shed) <= shed_before {
        assert!(
            fencegate::clock::tokio_now() < deadline,
            "no ping shed after {sent} datagrams"
        );
        for c in &flooders {
            c.ping(&batch, &mut fbb).unwrap();
            sent += 1;
        }
        // Paced under quinn's receive buffer, so the drops are the log's.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // Punches from other devices while pings are being shed.
    let mut punches = Vec::new();
    for i in 0..10u128 {
        let c = node.client("acme", &format!("phone-{i}")).await;
        punches.push(tokio::spawn(async move {
            let r = c.punch(&punch(100 + i, &format!("e-{i}"), HQ)).await;
            (c, r)
        }));
    }
    // Keep flooding a little while the punches queue.
    for _ in 0..50 {
        for c in &flooders {
            let _ = c.ping(&batch, &mut fbb);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(hold);
    for p in punches {
        let (_c, r) = tokio::time::timeout(Duration::from_secs(10), p)
            .await
            .expect("every punch is answered once the writer resumes")
            .unwrap();
        match r.unwrap() {
            PunchReply::Ack(a) => assert_eq!(a.verdict, Verdict::Accepted),
            other => panic!("a punch was refused while pings could be shed: {other:?}"),
        }
    }
    assert!(metric(shed) > shed_before, "shed pings are counted");
    assert_eq!(metric(busy), busy_before, "no punch was answered Busy");
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// The node's own queueing delay above target for a whole interval: new
/// connections are refused before any key exchange (`CONNECTION_REFUSED`),
/// punches on open connections get a cheap `Busy` with the retry-after,
/// both counted by reason; once the interval passes without samples the
/// node admits again. The delay is made real and deterministic by holding
/// the log writer under a window of punches. Red without admission control (the new
/// connection gets in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_new_connections_when_the_queueing_delay_is_over_target() {
    const INTERVAL_MS: u64 = 1_500;
    const HELD_MS: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.quic.admission_target = Duration::from_millis(50);
    cfg.quic.admission_interval = Duration::from_millis(INTERVAL_MS);
    cfg.quic.admission_retry_after = Duration::from_millis(700);
    // Refused, so that the client sees the shed at once; silent shedding
    // (the default) is hostile_edge.rs's.
    cfg.quic.shed_connections = fencegate::config::ShedConnections::Refuse;
    let node = Node::start_with(dir, cfg).await;
    let conn_refused = r#"fencegate_refused_total{channel="connection",reason="Overloaded"}"#;
    let punch_shed = r#"fencegate_refused_total{channel="punch",reason="Overloaded"}"#;
    let (conn_before, punch_before) = (metric(conn_refused), metric(punch_shed));

    // Enough devices for a window of punches (a lone slow punch on a
    // quiet node is not overload), each within its stream limit.
    let mut devices = Vec::new();
    for d in 0..3 {
        devices.push(node.client("acme", &format!("phone-{d}")).await);
    }
    let a = devices[0].clone();
    // Let the window holding the (quick) connection samples close.
    tokio::time::sleep(Duration::from_millis(INTERVAL_MS + 100)).await;

    // 24 punches whose commit waits HELD_MS: sojourns far over target, the
    // only samples of their window.
    let hold = node.running.edge.log.hold_writer();
    let sent = fencegate::clock::tokio_now();
    let slow: Vec<_> = (0..24u128)
        .map(|i| {
            let c = devices[i as usize % devices.len()].clone();
            tokio::spawn(async move { c.punch(&punch(10 + i, &format!("e-{i}"), HQ)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(HELD_MS)).await;
    drop(hold);
    for s in slow {
        let r = s.await.unwrap().unwrap();
        assert_eq!(r.verdict(), Some(Verdict::Accepted), "{r:?}");
    }

    // Past the end of that window: the node is overloaded for the next one.
    tokio::time::sleep_until(sent + Duration::from_millis(INTERVAL_MS + 100)).await;
    let Err(refused) = node
        .connector
        .connect(&node.token("acme", "phone-b"), "phone-b")
        .await
    else {
        panic!("a new connection is refused while the node is over target");
    };
    let code = refused
        .chain()
        .find_map(|c| match c.downcast_ref::<quinn::ConnectionError>() {
            Some(quinn::ConnectionError::ConnectionClosed(c)) => Some(c.error_code),
            _ => None,
        });
    assert_eq!(
        code,
        Some(quinn::TransportErrorCode::CONNECTION_REFUSED),
        "{refused:#}"
    );
    match a.punch(&punch(2, "e-100", HQ)).await.unwrap() {
        PunchReply::Busy {
            retry_after_ms,
            reason,
        } => {
            assert_eq!(reason, Reason::Overloaded);
            assert_eq!(retry_after_ms, 700, "admission_retry_after_ms");
        }
        other => panic!("a punch on an open connection gets Busy: {other:?}"),
    }
    assert!(metric(conn_refused) - conn_before >= 1.0);
    assert!(metric(punch_shed) - punch_before >= 1.0);

    // Shedding leaves no samples: a window later the node admits again.
    tokio::time::sleep(Duration::from_millis(2 * INTERVAL_MS + 100)).await;
    let b = node.client("acme", "phone-b").await;
    let r = b.punch(&punch(2, "e-100", HQ)).await.unwrap();
    assert_eq!(r.verdict(), Some(Verdict::Accepted), "{r:?}");
    node.running.shutdown(Duration::from_secs(2)).await;
}
