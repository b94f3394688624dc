//! Attacks on the edge found from outside with one device token or none
//! (issue 12, "budgets, not global cliffs"): each test is named after the
//! attack and checks that the attacker spends only its own budget, never
//! a node-wide one another device needs. Loopback only, a few connections
//! and a few seconds each.

mod common;

use std::time::Duration;

use common::{HQ, Node, now_ms, punch};
use fencegate::client::PunchReply;
use fencegate_schema::{Fix, PingBatchMsg, RecordBodyMsg, Verdict, close};
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

/// Sends `n` one-fix ping datagrams, `gap` apart, alternating between two
/// spots 15 km apart and outside every fence: each fix leaves the last
/// one's cell, so the pipeline forwards (logs) every ping it reads.
async fn far_pings(c: &fencegate::client::Client, n: usize, gap: Duration) {
    let mut fbb = FlatBufferBuilder::new();
    let spots = [(31.30, 121.60), (31.40, 121.70)];
    for i in 0..n {
        let (lat, lon) = spots[i % 2];
        let batch = PingBatchMsg {
            device_seq: 0,
            base_time_ms: now_ms(),
            fixes: vec![Fix::new((lat * 1e7) as i32, (lon * 1e7) as i32, 0, 50, 0)],
        };
        c.ping(&batch, &mut fbb).unwrap();
        tokio::time::sleep(gap).await;
    }
}

/// The code of the application close that ended `conn`, waiting at most 5 s.
async fn close_code(conn: &quinn::Connection) -> Option<u64> {
    match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => Some(c.error_code.into_inner()),
        _ => None,
    }
}

/// Today's bug: a punch stream took its node-wide permit before an
/// untimed read, so streams that never FIN held every permit and every
/// other device was answered Busy/Overloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_punch_streams_without_fin_do_not_starve_another_device() {
    const SLOTS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.quic.max_inflight_punches = SLOTS;
    cfg.quic.stream_read_timeout = Duration::from_millis(1_500);
    let node = Node::start_with(dir, cfg).await;
    let timeouts = r#"fencegate_edge_timeouts_total{cause="punch_stream"}"#;
    let timeouts_before = metric(timeouts);

    // The attacker: one authenticated device holding as many punch streams
    // as the node has in-flight slots, 40 bytes each and never a FIN.
    let attacker = node.client("acme", "hostile-1").await;
    let mut held = Vec::new();
    for _ in 0..SLOTS {
        let (mut send, recv) = attacker.connection().open_bi().await.unwrap();
        send.write_all(&[0x42; 40]).await.unwrap();
        // Kept, not dropped: dropping a send stream would finish it.
        held.push((send, recv));
    }
    // Let the gateway accept every held stream before the victim punches.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let victim = node.client("acme", "phone-1").await;
    let reply = tokio::time::timeout(Duration::from_secs(1), victim.punch(&punch(1, "e-1", HQ)))
        .await
        .expect("the victim's punch is answered promptly")
        .unwrap();
    match reply {
        PunchReply::Ack(a) => assert_eq!(a.verdict, Verdict::Accepted),
        other => panic!("held streams must not take node-wide slots: {other:?}"),
    }

    // The held streams are reset at the read deadline, with the documented
    // code, and counted.
    let (_, recv) = &mut held[0];
    let r = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(4096))
        .await
        .expect("a held stream is reset at quic.stream_read_timeout_ms");
    match r {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            assert_eq!(code.into_inner(), u64::from(close::PROTOCOL_VIOLATION));
        }
        other => panic!("expected a reset with PROTOCOL_VIOLATION, got {other:?}"),
    }
    assert!(metric(timeouts) - timeouts_before >= 1.0);
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// Today's bug: connections that finished the handshake and never sent a
/// Hello held every set-up slot until the Hello deadline, and every real
/// device was refused meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_handshakes_filling_the_set_up_bound_do_not_lock_out_real_devices() {
    silent_handshakes_do_not_lock_out_real_devices(Some(4), 4).await;
}

/// The same with the default bound (8192): admission control's own limit
/// on connections in set-up (128 at start) was full first, and it refused
/// before the eviction behind the hard bound was ever tried, so 128
/// silent handshakes every Hello deadline locked every real device out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_handshakes_filling_the_admission_limit_do_not_lock_out_real_devices() {
    silent_handshakes_do_not_lock_out_real_devices(None, fencegate::edge::admission::INITIAL_LIMIT)
        .await;
}

/// Fills the set-up slots with `silent` handshakes that send no Hello
/// (`bound`: `quic.max_handshakes_in_flight`, or the default), then shows
/// two real devices getting in, each by evicting the oldest silent one.
async fn silent_handshakes_do_not_lock_out_real_devices(bound: Option<usize>, silent_n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    if let Some(b) = bound {
        cfg.quic.max_handshakes_in_flight = b;
    }
    // Long, so that getting in cannot be the deadline freeing a slot.
    cfg.quic.hello_timeout = Duration::from_secs(30);
    let node = Node::start_with(dir, cfg).await;
    let evicted = r#"fencegate_handshakes_total{kind="evicted"}"#;
    let evicted_before = metric(evicted);

    let mut silent = Vec::new();
    for _ in 0..silent_n {
        silent.push(node.connector.handshake().await.unwrap());
    }
    // Past the eviction grace: these are idle, not one round trip from
    // their Hello.
    tokio::time::sleep(Duration::from_millis(400)).await;

    for (i, device) in ["phone-1", "phone-2"].into_iter().enumerate() {
        if i > 0 {
            // The attacker refills the bound after each eviction.
            silent.push(node.connector.handshake().await.unwrap());
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        // Bounded: a shed connection is not answered (the default), so
        // without the eviction this would wait for the Hello deadline.
        let c = tokio::time::timeout(
            Duration::from_secs(5),
            node.connector.connect(&node.token("acme", device), device),
        )
        .await
        .expect("a real device gets in promptly while idle handshakes fill the set-up bound")
        .expect("a real device gets in while idle handshakes fill the set-up bound");
        let r = c
            .punch(&punch(i as u128 + 1, &format!("e-{i}"), HQ))
            .await
            .unwrap();
        assert_eq!(r.verdict(), Some(Verdict::Accepted), "{r:?}");
        // The oldest silent connection made room, closed AUTH_TIMEOUT
        // (the refill is younger than every original one).
        assert_eq!(
            close_code(silent[i].connection()).await,
            Some(u64::from(close::AUTH_TIMEOUT))
        );
    }
    assert!(metric(evicted) - evicted_before >= 2.0);
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// `quic.shed_connections = "silent"` (the default): a connection beyond
/// the set-up bound gets no answer, and the same connection attempt gets
/// in once a slot frees, through the Initial its QUIC stack resends: the
/// device spends no second key share. Red with `"refuse"` (the connect
/// fails at once) or with a shed that loses the attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_set_up_bound_wait_unanswered_and_get_in_when_one_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    assert_eq!(
        cfg.quic.shed_connections,
        fencegate::config::ShedConnections::Silent,
        "the default"
    );
    cfg.quic.max_handshakes_in_flight = 1;
    cfg.quic.hello_timeout = Duration::from_secs(30);
    cfg.quic.hello_evict_grace = Duration::from_secs(30);
    let node = Node::start_with(dir, cfg).await;
    let shed = r#"fencegate_handshakes_total{kind="shed"}"#;
    let shed_before = metric(shed);
    let silent = node.connector.handshake().await.unwrap();
    let (connector, token) = (node.connector.clone(), node.token("acme", "phone-2"));
    let waiting = tokio::spawn(async move { connector.connect(&token, "phone-2").await });
    // Past the client's first resend (about 1 s): still nothing back.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!waiting.is_finished(), "a shed connection is not answered");
    assert!(
        metric(shed) - shed_before >= 2.0,
        "the first Initial and its resend were shed and counted"
    );
    silent
        .hello(&node.token("acme", "phone-1"), "phone-1")
        .await
        .unwrap();
    let c = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("a resent Initial finds the freed slot")
        .unwrap()
        .expect("the waiting connection gets in");
    let r = c.punch(&punch(1, "e-1", HQ)).await.unwrap();
    assert_eq!(r.verdict(), Some(Verdict::Accepted), "{r:?}");
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// Today's bug: nothing enforced PROTOCOL §10's one datagram per second
/// per device, so one device could write pings into the durable log as
/// fast as it could send them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_above_the_device_rate_is_dropped_and_counted() {
    const SENT: usize = 200;
    let node = Node::start().await;
    let (rate, burst) = (
        f64::from(node.cfg.quic.ping_datagrams_per_s),
        f64::from(node.cfg.quic.ping_burst),
    );
    let dropped = r#"fencegate_datagrams_dropped_total{reason="rate_limit"}"#;
    let dropped_before = metric(dropped);

    let c = node.client("acme", "tracker-1").await;
    let started = fencegate::clock::tokio_now();
    far_pings(&c, SENT, Duration::from_millis(5)).await;
    let elapsed_s = started.elapsed().as_secs_f64();
    // Let the gateway drain what it received.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let logged = node
        .records()
        .into_iter()
        .filter(|r| matches!(&r.body, RecordBodyMsg::Ping(p) if p.device_id == "tracker-1"))
        .count();
    // The burst, plus the rate over the flood (and the drain), plus one
    // for a refill landing on the boundary.
    let allowed = (burst + rate * (elapsed_s + 0.5).ceil() + 1.0) as usize;
    assert!(logged >= 1, "the rate limit must not drop everything");
    assert!(
        logged <= allowed,
        "{logged} pings logged from {SENT} datagrams in {elapsed_s:.2} s; at most {allowed} allowed"
    );
    let counted = metric(dropped) - dropped_before;
    assert!(
        counted >= (SENT - allowed - 20) as f64,
        "every datagram over the rate is counted: {counted}"
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// Today's bug (measured with `loadtest/scenarios/ping-flood.toml`): pings
/// and punches shared one UDP socket and one connection set-up bound, so a
/// fleet whose datagrams overflowed the socket, or whose set-up delays
/// tripped admission, got the 9:00 punches refused with it. With
/// `quic.punch_listen`, punches have an address of their own: here the
/// main address's set-up bound is held full and a punch on the punch
/// address still gets in, while that address refuses what belongs on the
/// main one (datagrams, backlog streams).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn punches_on_their_own_address_get_in_while_the_main_one_is_full() {
    const SET_UP: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.quic_punch_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.quic.max_handshakes_in_flight = SET_UP;
    // Neither the deadline nor eviction may free a slot during the test.
    cfg.quic.hello_timeout = Duration::from_secs(30);
    cfg.quic.hello_evict_grace = Duration::from_secs(30);
    let node = Node::start_with(dir, cfg).await;
    let punch_addr = node.running.punch_addr.expect("quic.punch_listen is bound");
    assert_ne!(punch_addr, node.running.quic_addr);

    // The main address's set-up bound, held full by silent handshakes.
    let mut silent = Vec::new();
    for _ in 0..SET_UP {
        silent.push(node.connector.handshake().await.unwrap());
    }
    // Shed silently (the default): no answer within the client's first
    // resends.
    let shed = tokio::time::timeout(
        Duration::from_secs(2),
        node.connector
            .connect(&node.token("acme", "tracker-1"), "tracker-1"),
    )
    .await;
    assert!(
        !matches!(shed, Ok(Ok(_))),
        "the main address's set-up bound is full"
    );

    let punches = fencegate::client::Connector::new(
        punch_addr,
        "localhost",
        fencegate::edge::tls::Trust::Pinned(node.running.fingerprint.clone()),
        true,
    )
    .unwrap();
    let phone = punches
        .connect(&node.token("acme", "phone-1"), "phone-1")
        .await
        .expect("the punch address has its own set-up bound");
    let r = phone.punch(&punch(1, "e-1", HQ)).await.unwrap();
    assert_eq!(r.verdict(), Some(Verdict::Accepted), "{r:?}");

    // Pings and backlogs are refused by the transport parameters, before
    // any byte reaches the gateway's code.
    assert_eq!(phone.connection().max_datagram_size(), None);
    let mut fbb = FlatBufferBuilder::new();
    let batch = PingBatchMsg {
        device_seq: 0,
        base_time_ms: now_ms(),
        fixes: vec![Fix::new(312_304_000, 1_214_737_000, 0, 50, 0)],
    };
    let e = phone.ping(&batch, &mut fbb).unwrap_err();
    assert!(
        matches!(
            e.downcast_ref::<quinn::SendDatagramError>(),
            Some(quinn::SendDatagramError::UnsupportedByPeer)
        ),
        "{e:#}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), phone.connection().open_uni())
            .await
            .is_err(),
        "the punch address allows no unidirectional stream"
    );
    drop(silent);
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// Measured with `ping-flood.toml` on a node held to half a core by a CPU
/// quota: the flood took whatever punches left, the quota stopped the
/// whole process every period, punch lane included, and punch p99 rose
/// 3.8× (docs/PERFORMANCE.md, "The CPU gate"). With a CPU limit the
/// shared lane's socket is not read while the process is over
/// `quic.cpu_gate` of it. Here the limit is set far below what any process
/// uses, so the gate is closed nearly always: the flood's reads are held
/// (counted), a punch on the punch address still gets in, and pings still
/// trickle through the gate's forced openings. Red when the gate is not
/// wired to the main address's sockets (nothing is held) or never reopens
/// (no ping gets through). A gated punch address would still pass here
/// (forced openings let a handshake through); `serve.rs` binds it with no
/// gate, and the flood measurement is what shows its latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_over_the_cpu_limit_is_held_at_the_socket_and_punches_still_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.quic_punch_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.quic.cpu_gate = 0.85;
    cfg.quic.cpu_limit_cores = Some(0.001);
    cfg.quic.ping_datagrams_per_s = 10_000;
    cfg.quic.ping_burst = 10_000;
    let node = Node::start_with(dir, cfg).await;
    let held = "fencegate_cpu_gate_deferred_reads_total";
    let held_before = metric(held);

    let c = node.client("acme", "tracker-1").await;
    far_pings(&c, 300, Duration::from_millis(2)).await;

    let punches = fencegate::client::Connector::new(
        node.running.punch_addr.expect("quic.punch_listen is bound"),
        "localhost",
        fencegate::edge::tls::Trust::Pinned(node.running.fingerprint.clone()),
        true,
    )
    .unwrap();
    let phone = tokio::time::timeout(
        Duration::from_secs(5),
        punches.connect(&node.token("acme", "phone-1"), "phone-1"),
    )
    .await
    .expect("the punch address is never gated")
    .unwrap();
    let r = phone.punch(&punch(1, "e-1", HQ)).await.unwrap();
    assert_eq!(r.verdict(), Some(Verdict::Accepted), "{r:?}");

    assert!(
        metric(held) > held_before,
        "the main address's reads were never held"
    );
    let deadline = fencegate::clock::tokio_now() + Duration::from_secs(5);
    let pings = loop {
        let n = node
            .records()
            .into_iter()
            .filter(|r| matches!(&r.body, RecordBodyMsg::Ping(p) if p.device_id == "tracker-1"))
            .count();
        if n > 0 || fencegate::clock::tokio_now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        pings > 0,
        "the gate's forced openings let some pings through"
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// A fleet reconnecting at once leaves its clients short of CPU, so their
/// Hellos come hundreds of milliseconds after the handshake. With a fixed
/// 200 ms grace the gateway closed such connections, whose key exchange
/// was already paid, to make room for newcomers: 657–1,139 evictions in
/// some 10,000-device storms, each a second handshake for its device.
/// The grace now follows the Hello delays of clients that did
/// authenticate. Red with the fixed grace: the slow clients are evicted.
/// Idle holders are still evicted once past the stretched grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_real_clients_in_a_storm_are_not_evicted_and_idle_ones_still_are() {
    const BOUND: usize = 4;
    const SLOW: Duration = Duration::from_millis(400);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.quic.max_handshakes_in_flight = BOUND;
    cfg.quic.hello_timeout = Duration::from_secs(30);
    assert_eq!(cfg.quic.hello_evict_grace, Duration::from_millis(200));
    let node = Node::start_with(dir, cfg).await;

    // The storm so far: clients whose Hello comes 400 ms after their
    // handshake, a bound's worth at a time (no newcomer meanwhile).
    for round in 0..4 {
        let mut group = Vec::new();
        for i in 0..BOUND {
            let (connector, token) = (
                node.connector.clone(),
                node.token("acme", &format!("slow-{round}-{i}")),
            );
            group.push(tokio::spawn(async move {
                let c = connector.handshake().await.unwrap();
                tokio::time::sleep(SLOW).await;
                c.hello(&token, &format!("slow-{round}-{i}")).await.unwrap();
            }));
        }
        for g in group {
            g.await.unwrap();
        }
    }

    // A bound's worth of slow clients again, and a newcomer past the
    // 200 ms floor: it must wait, not take a slow client's slot.
    let slow: Vec<_> = (0..BOUND)
        .map(|i| {
            let (connector, token) = (
                node.connector.clone(),
                node.token("acme", &format!("late-{i}")),
            );
            tokio::spawn(async move {
                let c = connector.handshake().await.unwrap();
                tokio::time::sleep(SLOW + Duration::from_millis(300)).await;
                c.hello(&token, &format!("late-{i}")).await
            })
        })
        .collect();
    tokio::time::sleep(SLOW).await;
    let (connector, token) = (node.connector.clone(), node.token("acme", "phone-1"));
    let newcomer = tokio::spawn(async move { connector.connect(&token, "phone-1").await });
    for s in slow {
        let r = s.await.unwrap();
        assert!(
            r.is_ok(),
            "a client whose Hello is as slow as the storm's was evicted: {r:?}"
        );
    }
    tokio::time::timeout(Duration::from_secs(10), newcomer)
        .await
        .expect("the newcomer gets in once the slow clients authenticate")
        .unwrap()
        .expect("the newcomer gets in");

    // Idle holders: evicted once they have waited past the stretched
    // grace (three times the ~0.4 s mean), well before the Hello deadline.
    let mut silent = Vec::new();
    for _ in 0..BOUND {
        silent.push(node.connector.handshake().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let c = tokio::time::timeout(
        Duration::from_secs(5),
        node.connector
            .connect(&node.token("acme", "phone-2"), "phone-2"),
    )
    .await
    .expect("a real device gets in past idle holders")
    .expect("a real device gets in past idle holders");
    let r = c.punch(&punch(1, "e-1", HQ)).await.unwrap();
    assert_eq!(r.verdict(), Some(Verdict::Accepted), "{r:?}");
    assert_eq!(
        close_code(silent[0].connection()).await,
        Some(u64::from(close::AUTH_TIMEOUT))
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}
