//! Datagrams quinn discards from a connection's full receive buffer
//! (issue 17, "every drop counted, by cause"): they show in
//! `fencegate_datagrams_dropped_total{reason="buffer_full"}` while the
//! connection still lives, not only after it closes, and once it closed
//! every DATAGRAM frame the gateway received is accounted for: read
//! (processed, over the rate, or refused) or dropped.

mod common;

use std::time::Duration;

use common::{Node, now_ms};
use fencegate_schema::{Fix, PingBatchMsg};
use flatbuffers::FlatBufferBuilder;

const BUFFER_FULL: &str = r#"fencegate_datagrams_dropped_total{reason="buffer_full"}"#;
const RECEIVED: &str = "fencegate_datagrams_received_total";
const RATE: &str = r#"fencegate_datagrams_dropped_total{reason="rate_limit"}"#;
const FIXES: u32 = 64;

/// The current value of one exported series (`name{labels}`), 0 if absent.
/// The recorder is process-wide and this binary's only test owns it.
fn metric(series: &str) -> f64 {
    fencegate::serve::prometheus()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Sum of every series of `name` whose labels contain `label`.
fn metric_sum(name: &str, label: &str) -> f64 {
    fencegate::serve::prometheus()
        .render()
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every fix the pipeline looked at, whatever its outcome (`untracked` is
/// a subset of `forwarded`).
fn fixes_processed() -> f64 {
    ["forwarded", "suppressed", "late", "duplicate"]
        .iter()
        .map(|o| metric(&format!("fencegate_pings_total{{outcome=\"{o}\"}}")))
        .sum()
}

/// Today's bug: buffer-full drops were added only when the connection
/// closed, so a long-lived device losing datagrams at saturation showed 0
/// drops on `/metrics` for as long as it stayed connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_full_drops_show_while_the_connection_lives_and_balance_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    // About three 1 KB datagrams fit: a burst overflows it long before the
    // connection's task has parsed and located 64 fixes a datagram.
    cfg.quic.datagram_buffer = 4_096;
    cfg.quic.ping_datagrams_per_s = 1_000_000;
    cfg.quic.ping_burst = 1_000_000;
    let node = Node::start_with(dir, cfg).await;
    let (drops0, received0, rate0) = (metric(BUFFER_FULL), metric(RECEIVED), metric(RATE));
    let refused0 = metric_sum("fencegate_refused_total", r#"channel="datagram""#);
    let fixes0 = fixes_processed();

    let c = node.client("acme", "tracker-burst").await;
    let mut fbb = FlatBufferBuilder::new();
    let mut seq = 0u64;
    let mut seen_live = None;
    // Bursts of 200 datagrams (below the client's 1 MiB send buffer, so
    // the client itself drops none), until the counter moves; bounded.
    for _burst in 0..10 {
        for _ in 0..200 {
            seq += 1;
            let fixes = (0..FIXES)
                .map(|j| {
                    // Far from every fence, a new spot each fix.
                    let k = (seq * u64::from(FIXES) + u64::from(j)) as i32;
                    Fix::new(313_000_000 + k * 37, 1_216_000_000 + k * 53, j * 10, 50, 0)
                })
                .collect();
            let batch = PingBatchMsg {
                device_seq: seq,
                base_time_ms: now_ms() - 1_000,
                fixes,
            };
            c.ping(&batch, &mut fbb).unwrap();
        }
        // The tally runs once a second: wait for two of them.
        for _ in 0..25 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let d = metric(BUFFER_FULL) - drops0;
            if d > 0.0 {
                seen_live = Some(d);
                break;
            }
        }
        if seen_live.is_some() {
            break;
        }
    }
    assert!(
        c.connection().close_reason().is_none(),
        "the connection is still open"
    );
    let live = seen_live.expect("buffer-full drops are counted while the connection is open");
    assert!(
        metric(RECEIVED) - received0 > 0.0,
        "received datagrams are counted while the connection is open"
    );

    // Close, and wait for the gateway's connection task to finish.
    c.close();
    let sent = c.connection().stats().frame_tx.datagram as f64;
    for _ in 0..50 {
        if metric("fencegate_connections") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric("fencegate_connections"), 0.0, "the connection ended");
    let drops = metric(BUFFER_FULL) - drops0;
    let received = metric(RECEIVED) - received0;
    let read = (fixes_processed() - fixes0) / f64::from(FIXES)
        + (metric(RATE) - rate0)
        + (metric_sum("fencegate_refused_total", r#"channel="datagram""#) - refused0);
    assert!(
        drops >= live,
        "the live count is a lower bound: {live} then {drops}"
    );
    assert!(
        received <= sent && received > 0.0,
        "{received} received of {sent} sent"
    );
    assert_eq!(
        received,
        read + drops,
        "every received datagram was read ({read}) or dropped ({drops})"
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}
