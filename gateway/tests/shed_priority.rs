//! Silent shedding's queue (`edge::resent`, docs/OPERATIONS.md, "Overload"):
//! while a crowd the node shed silently waits, an attempt whose Initial
//! was shed before gets in ahead of a new arrival. Its own binary, because
//! it reads process-wide counters that other tests' sheds would move.

mod common;

use std::time::Duration;

use common::Node;

/// The current value of one exported series (`name{labels}`), 0 if absent.
fn metric(series: &str) -> f64 {
    fencegate::serve::prometheus()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

const RESENT: &str = r#"fencegate_handshakes_total{kind="resent"}"#;

/// With the set-up limit half full and nothing shed, a newcomer gets in at
/// its first Initial. Once a connection has been shed (the limit full), a
/// newcomer arriving with the limit half full is shed once and gets in on
/// its resend, and the shed connection gets in on its own: both are
/// counted as resent. Red without the queue: the second newcomer gets in
/// at once (one resent, not two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_arrival_yields_to_the_silently_shed_crowd() {
    let limit = fencegate::edge::admission::INITIAL_LIMIT;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    // Neither the Hello deadline nor eviction may free a slot, and the
    // limit may not move (it moves only at the end of a window).
    cfg.quic.hello_timeout = Duration::from_secs(60);
    cfg.quic.hello_evict_grace = Duration::from_secs(60);
    cfg.quic.admission_interval = Duration::from_secs(60);
    let node = Node::start_with(dir, cfg).await;
    let connect = |device: &'static str| {
        let (connector, token) = (node.connector.clone(), node.token("acme", device));
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(8), connector.connect(&token, device))
                .await
                .map_err(|_| anyhow::anyhow!("{device}: no connection within 8 s"))
                .and_then(|r| r)
        })
    };

    // Half the limit held, nothing shed: a newcomer gets in at once.
    let mut holders = Vec::new();
    for _ in 0..limit / 2 {
        holders.push(node.connector.handshake().await.unwrap());
    }
    let resent_before = metric(RESENT);
    connect("phone-z").await.unwrap().expect("phone-z gets in");
    assert_eq!(metric(RESENT), resent_before, "no crowd, no queue");

    // The limit full: the next connection is shed silently and waits.
    for _ in limit / 2..limit {
        holders.push(node.connector.handshake().await.unwrap());
    }
    let x = connect("phone-x");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!x.is_finished(), "phone-x is shed while the limit is full");

    // Half the holders leave: the limit is half full again, and a crowd
    // is waiting. A newcomer now yields: shed once, in on its resend.
    for h in holders.drain(..limit / 2) {
        h.connection().close(0u32.into(), b"bye");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let y = connect("phone-y");
    x.await
        .unwrap()
        .expect("the shed phone-x gets in on a resend");
    y.await.unwrap().expect("phone-y gets in on its resend");
    assert_eq!(
        metric(RESENT) - resent_before,
        2.0,
        "phone-x and phone-y each got in on a resent Initial"
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}
