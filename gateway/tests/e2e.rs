//! End to end over loopback QUIC: a real node, a real client, the records
//! read back from the durable log.

mod common;

use std::time::Duration;

use common::{GLOBEX, HQ, Node, now_ms, punch};
use fencegate::client::PunchReply;
use fencegate_schema::{
    Fix, FrameMsg, HelloMsg, PingBatchMsg, PunchKind, Reason, RecordBodyMsg, Transition, Verdict,
    close,
};
use flatbuffers::FlatBufferBuilder;

fn ack(r: PunchReply) -> fencegate_schema::PunchAckMsg {
    match r {
        PunchReply::Ack(a) => a,
        other => panic!("expected an ack, got {other:?}"),
    }
}

fn punch_records(node: &Node) -> Vec<fencegate_schema::PunchRecordMsg> {
    node.records()
        .into_iter()
        .filter_map(|r| match r.body {
            RecordBodyMsg::Punch(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn punch_is_acked_after_it_is_durable_and_a_resend_gets_the_same_ack() {
    let node = Node::start().await;
    let c = node.client("acme", "phone-1").await;
    let p = punch(1, "e-1", HQ);
    let a = ack(c.punch(&p).await.unwrap());
    assert_eq!(a.verdict, Verdict::Accepted);
    assert_eq!(a.fence_id.as_deref(), Some("hq-north"));
    assert_eq!(a.punch_id, Some(p.punch_id));
    // Durable before the ack: the record is already in the log.
    let recs = node.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(Some(recs[0].record_id), a.record_id);

    // Resend on a new connection, as after a lost ack and a reconnect.
    let c2 = node.client("acme", "phone-1").await;
    let again = ack(c2.punch(&p).await.unwrap());
    assert_eq!((again.verdict, again.record_id), (a.verdict, a.record_id));
    assert_eq!(node.records().len(), 1, "a resend is never recorded twice");
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_within_five_minutes_merge_and_older_ones_do_not() {
    let node = Node::start().await;
    let c = node.client("acme", "phone-1").await;
    // An offline punch taken six minutes ago is judged by its device time.
    let mut old = punch(10, "e-2", HQ);
    old.offline = true;
    old.device_time_ms = now_ms() - 6 * 60_000;
    let first = ack(c.punch(&old).await.unwrap());
    assert_eq!(first.verdict, Verdict::Accepted);
    // Now: more than five minutes after it, so not a repeat.
    let now = ack(c.punch(&punch(11, "e-2", HQ)).await.unwrap());
    assert_eq!(now.verdict, Verdict::Accepted);
    // A second clock-in a moment later merges into `now`.
    let rep = ack(c.punch(&punch(12, "e-2", HQ)).await.unwrap());
    assert_eq!(rep.verdict, Verdict::RepeatMerged);
    assert_eq!(rep.record_id, now.record_id);
    // A clock-out is its own punch.
    let mut out = punch(13, "e-2", HQ);
    out.kind = PunchKind::Out;
    assert_eq!(ack(c.punch(&out).await.unwrap()).verdict, Verdict::Accepted);
    let recs = punch_records(&node);
    assert_eq!(recs.len(), 4);
    let merged: Vec<_> = recs
        .iter()
        .filter(|p| p.verdict == Verdict::RepeatMerged)
        .collect();
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0].merged_into, now.record_id);
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_suppressed_while_standing_and_transitions_are_forwarded() {
    let node = Node::start().await;
    let c = node.client("acme", "truck-1").await;
    let mut fbb = FlatBufferBuilder::new();
    let away = (HQ.0 + 0.05, HQ.1);
    let fix =
        |at: (f64, f64), off: u32| Fix::new((at.0 * 1e7) as i32, (at.1 * 1e7) as i32, off, 30, 0);
    let t = now_ms() - 10_000;
    // Ten fixes standing still: one forwarded.
    let batch = PingBatchMsg {
        device_seq: 1,
        base_time_ms: t,
        fixes: (0..10).map(|i| fix(away, i * 100)).collect(),
    };
    c.ping(&batch, &mut fbb).unwrap();
    node.wait_records(1).await;
    // Into the fence, then out again.
    let batch = PingBatchMsg {
        device_seq: 2,
        base_time_ms: t + 2_000,
        fixes: vec![fix(HQ, 0), fix(HQ, 100), fix(away, 200)],
    };
    c.ping(&batch, &mut fbb).unwrap();
    let recs = node.wait_records(5).await;
    let pings = recs
        .iter()
        .filter(|r| matches!(r.body, RecordBodyMsg::Ping(_)))
        .count();
    let events: Vec<_> = recs
        .iter()
        .filter_map(|r| match &r.body {
            RecordBodyMsg::FenceEvent(e) => Some((e.fence_id.clone(), e.transition)),
            _ => None,
        })
        .collect();
    assert_eq!(pings, 3, "first fix, the move in, the move out");
    assert_eq!(
        events,
        [
            ("hq-north".to_owned(), Transition::Enter),
            ("hq-north".to_owned(), Transition::Exit)
        ]
    );

    // The backlog path: a long upload on a unidirectional stream; three
    // moves a kilometre apart each, starting `first` steps east of HQ.
    let moves = |seq: u64, first: f64, at: i64| -> Vec<PingBatchMsg> {
        (0..3)
            .map(|k| PingBatchMsg {
                device_seq: seq + k,
                base_time_ms: at + k as i64 * 1_000,
                fixes: vec![fix((HQ.0 + 0.01 * (k as f64 + first), HQ.1), 0)],
            })
            .collect()
    };
    c.backlog(&moves(10, 1.0, t + 5_000)).await.unwrap();
    let recs = node.wait_records(8).await;
    assert_eq!(recs.len(), 8, "three moves forwarded from the backlog");
    // A second upload on the same connection: its task takes a new stream
    // after the first one.
    c.backlog(&moves(20, 5.0, t + 9_000)).await.unwrap();
    let recs = node.wait_records(11).await;
    assert_eq!(
        recs.len(),
        11,
        "three more moves from a second backlog stream"
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_frame_gets_its_reason_code_and_leaves_no_record() {
    let node = Node::start().await;
    let c = node.client("acme", "phone-1").await;
    let reject = |r: PunchReply| match r {
        PunchReply::Ack(a) => {
            assert_eq!(a.verdict, Verdict::Rejected);
            assert!(a.record_id.is_none());
            a.reason
        }
        other => panic!("{other:?}"),
    };
    // Readable punches echo their id even when rejected (PROTOCOL §5.5).
    let echoed = |r: &PunchReply| match r {
        PunchReply::Ack(a) => a.punch_id,
        PunchReply::Busy { .. } => None,
    };
    let raw = |bytes: Vec<u8>| {
        let c = c.clone();
        async move {
            fencegate::client::decode_punch_reply(&c.raw_request(&bytes).await.unwrap()).unwrap()
        }
    };
    let r = raw(b"definitely not a flatbuffer".to_vec()).await;
    assert_eq!(echoed(&r), None, "nothing readable to echo");
    assert_eq!(reject(r), Reason::Malformed);
    assert_eq!(reject(raw(vec![0u8; 5_000]).await), Reason::Oversize);
    let mut fbb = FlatBufferBuilder::new();
    let batch = PingBatchMsg {
        device_seq: 0,
        base_time_ms: now_ms(),
        fixes: vec![Fix::new(0, 0, 0, 0, 0)],
    };
    let bytes = FrameMsg::PingBatch(batch).encode_into(&mut fbb).to_vec();
    assert_eq!(reject(raw(bytes).await), Reason::WrongChannel);
    let hello = FrameMsg::Hello(HelloMsg {
        token: "x".into(),
        device_id: "d".into(),
        client: None,
    })
    .encode_into(&mut fbb)
    .to_vec();
    assert_eq!(reject(raw(hello).await), Reason::WrongChannel);

    let mut p = punch(1, "e-1", HQ);
    p.device_time_ms = now_ms() + 3_600_000;
    let r = c.punch(&p).await.unwrap();
    assert_eq!(
        echoed(&r),
        Some(p.punch_id),
        "semantic rejection echoes the id"
    );
    assert_eq!(reject(r), Reason::FutureTimestamp);
    let mut p = punch(2, "e-1", (91.0, 0.0));
    p.position = Some(fencegate_schema::Position::new(91.0, 0.0, 5.0));
    assert_eq!(
        reject(c.punch(&p).await.unwrap()),
        Reason::LatitudeOutOfRange
    );
    let mut p = punch(3, "e-1", HQ);
    p.position = Some(fencegate_schema::Position::new(HQ.0, f64::NAN, 5.0));
    assert_eq!(reject(c.punch(&p).await.unwrap()), Reason::NotFinite);
    let p = punch(0, "e-1", HQ);
    let r = c.punch(&p).await.unwrap();
    assert_eq!(echoed(&r), None, "an all-zero id is not an id");
    assert_eq!(reject(r), Reason::InvalidPunchId);
    let mut p = punch(4, "e-1", HQ);
    p.employee_id = "x".repeat(500);
    let r = c.punch(&p).await.unwrap();
    assert_eq!(echoed(&r), Some(p.punch_id));
    assert_eq!(reject(r), Reason::FieldTooLong);

    // Nobody else's traffic noticed: the connection still works.
    assert_eq!(
        ack(c.punch(&punch(5, "e-1", HQ)).await.unwrap()).verdict,
        Verdict::Accepted
    );
    assert_eq!(node.records().len(), 1);
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// The close code and reason phrase a refused Hello gets.
async fn refused_hello(node: &Node, token: &str, device: &str) -> (u64, String) {
    let c = node.connector.handshake().await.unwrap();
    c.hello(token, device).await.unwrap_err();
    match c.connection().closed().await {
        quinn::ConnectionError::ApplicationClosed(a) => (
            a.error_code.into_inner(),
            String::from_utf8(a.reason.to_vec()).unwrap(),
        ),
        other => panic!("expected an application close, got {other:?}"),
    }
}

/// PROTOCOL §3/§8: the close code says what to do and the reason phrase is
/// exactly the `Reason` name. Red if a credential maps to another code, or
/// the phrase is prose again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_close_the_connection_with_their_code_and_reason_name() {
    let node = Node::start().await;
    let code = |c: u32| u64::from(c);
    // A token for phone-1 presented by phone-2: the token is bound to its device.
    let t = node.token("acme", "phone-1");
    assert_eq!(
        refused_hello(&node, &t, "phone-2").await,
        (code(close::BAD_TOKEN), "BadToken".into()),
        "device mismatch"
    );
    // A tampered token.
    let mut bad = t.clone();
    bad.pop();
    bad.push(if t.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(
        refused_hello(&node, &bad, "phone-1").await,
        (code(close::BAD_TOKEN), "BadToken".into())
    );
    // A tenant this node does not serve (a key of its own).
    let mut foreign = fencegate::auth::Keyring::default();
    foreign.insert(
        "initech",
        fencegate::auth::TenantKey::new(vec![3; 32]).unwrap(),
    );
    let ft = foreign.issue("initech", "d", now_ms() / 1000 + 60).unwrap();
    assert_eq!(
        refused_hello(&node, &ft, "d").await,
        (code(close::WRONG_TENANT), "WrongTenant".into())
    );
    // An expired token.
    let ring = fencegate::serve::keyring(&node.cfg).unwrap();
    let old = ring.issue("acme", "phone-1", now_ms() / 1000 - 1).unwrap();
    assert_eq!(
        refused_hello(&node, &old, "phone-1").await,
        (code(close::TOKEN_EXPIRED), "TokenExpired".into())
    );
    // A Hello that fails validation: PROTOCOL_VIOLATION, phrase = its reason.
    assert_eq!(
        refused_hello(&node, &"t".repeat(2_000), "phone-1").await,
        (code(close::PROTOCOL_VIOLATION), "FieldTooLong".into())
    );
    // A punch where the Hello belongs.
    let c = node.connector.handshake().await.unwrap();
    let mut fbb = FlatBufferBuilder::new();
    let frame = punch(1, "e-1", HQ).encode_into(&mut fbb).to_vec();
    c.raw_request(&frame).await.unwrap_err();
    match c.connection().closed().await {
        quinn::ConnectionError::ApplicationClosed(a) => {
            assert_eq!(a.error_code.into_inner(), code(close::NOT_AUTHENTICATED));
            assert_eq!(&a.reason[..], b"NotAuthenticated");
        }
        other => panic!("{other:?}"),
    }
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// PROTOCOL §2: a resumed connection carries its Hello and a punch in
/// 0-RTT, and a replay of that punch (the same punch id, again in 0-RTT on
/// another resumed connection) gets the same ack and makes no record. Red
/// if the gateway's tickets cannot carry early data (stateless tickets:
/// `accepted` resolves false), or if the replay is recorded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_punch_in_0rtt_is_accepted_and_its_replay_gets_the_same_ack() {
    let node = Node::start().await;
    let token = node.token("acme", "phone-1");
    // A first, full handshake leaves a ticket with the client. Every
    // connection stays open to the end: its ticket comes after its
    // handshake, and each resumption uses one ticket up.
    let first = node.connector.connect(&token, "phone-1").await.unwrap();
    let mut open = vec![first];

    let p = punch(7, "e-7", HQ);
    let mut in_0rtt = async |p: &fencegate_schema::PunchMsg| {
        let (c, accepted) = common::connect_0rtt(&node).await;
        // Hello and punch go out before the handshake completes: both
        // streams are opened and written in the first flight.
        let (hello, reply) = tokio::join!(c.hello(&token, "phone-1"), c.punch(p));
        hello.unwrap();
        let reply = reply.unwrap();
        assert!(accepted.await, "the gateway refused the 0-RTT data");
        open.push(c);
        ack(reply)
    };
    let a = in_0rtt(&p).await;
    assert_eq!(a.verdict, Verdict::Accepted);
    assert_eq!(a.punch_id, Some(p.punch_id));
    let replay = in_0rtt(&p).await;
    assert_eq!(
        (replay.verdict, replay.record_id),
        (a.verdict, a.record_id),
        "a replayed 0-RTT punch gets the first ack"
    );
    let recs = punch_records(&node);
    assert_eq!(
        recs.iter().filter(|r| r.punch_id == p.punch_id).count(),
        1,
        "the replay made no record"
    );
    for c in open {
        c.close();
    }
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_reach_another_tenants_fences() {
    let node = Node::start().await;
    let acme = node.client("acme", "phone-1").await;
    let a = ack(acme.punch(&punch(1, "e-1", GLOBEX)).await.unwrap());
    assert_eq!(a.verdict, Verdict::OutOfRange);
    assert_eq!(
        a.nearest_fence_id.as_deref(),
        Some("hq-north"),
        "never globex-1"
    );
    let globex = node.client("globex", "phone-9").await;
    let g = ack(globex.punch(&punch(1, "e-1", GLOBEX)).await.unwrap());
    assert_eq!(
        g.verdict,
        Verdict::Accepted,
        "same punch id, other tenant: its own punch"
    );
    assert_eq!(g.fence_id.as_deref(), Some("globex-1"));
    let tenants: Vec<_> = node.records().into_iter().map(|r| r.tenant).collect();
    assert_eq!(tenants, ["acme", "globex"]);
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_health_metrics_and_fence_roles() {
    let node = Node::start().await;
    let base = format!("http://{}", node.running.admin_addr);
    let http = |path: &str| {
        let url = format!("{base}{path}");
        async move { reqwest_lite(&url, "GET", None, None).await }
    };
    assert_eq!(http("/healthz").await.0, 200);
    let (code, body) = http("/readyz").await;
    assert_eq!(code, 200, "{body}");
    let c = node.client("acme", "phone-1").await;
    ack(c.punch(&punch(1, "e-1", HQ)).await.unwrap());
    let (_, metrics) = http("/metrics").await;
    // The recorder is process-wide and other tests punch too: at least ours.
    let accepted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fencegate_punches_total{verdict=\"accepted\"} "))
        .expect("the accepted-punch counter is exported")
        .parse()
        .unwrap();
    assert!(accepted >= 1.0, "{metrics}");
    assert!(metrics.contains("fencegate_connections"));

    let admin = std::fs::read_to_string(node.cfg.data_dir.join("admin.token")).unwrap();
    let (code, _) = reqwest_lite(&format!("{base}/v1/fences"), "GET", None, None).await;
    assert_eq!(code, 401);
    let (code, body) = reqwest_lite(
        &format!("{base}/v1/fences"),
        "GET",
        Some(admin.trim()),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("globex-1"));
    // An invalid replacement is refused with every problem, nothing swapped.
    let bad = r#"{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Point","coordinates":[121.47,31.23]},"properties":{"id":"tiny","tenant":"acme","radius_m":12}}]}"#;
    let (code, body) = reqwest_lite(
        &format!("{base}/v1/fences"),
        "PUT",
        Some(admin.trim()),
        Some(bad),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("12"), "{body}");
    // A valid one swaps atomically and reports the new version.
    let good = common::FENCES.replace("\"radius_m\":200", "\"radius_m\":900");
    let (code, body) = reqwest_lite(
        &format!("{base}/v1/fences"),
        "PUT",
        Some(admin.trim()),
        Some(&good),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"version\":2"), "{body}");
    // 600 m north is now inside the bigger circle.
    let a = ack(c
        .punch(&punch(2, "e-5", (HQ.0 + 0.0054, HQ.1)))
        .await
        .unwrap());
    assert_eq!(a.verdict, Verdict::Accepted);
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// A minimal HTTP/1.1 client over a TCP stream, enough for the admin API.
async fn reqwest_lite(
    url: &str,
    method: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let body = body.unwrap_or("");
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// `quic.shed_connections = "refuse"`: a connection beyond the set-up
/// bound is refused at once, and the client must reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_set_up_bound_are_refused_until_one_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.quic.shed_connections = fencegate::config::ShedConnections::Refuse;
    cfg.quic.max_handshakes_in_flight = 1;
    cfg.quic.hello_timeout = Duration::from_secs(30);
    // Long enough that a loaded machine cannot reach it during the test.
    cfg.quic.hello_evict_grace = Duration::from_secs(30);
    let node = Node::start_with(dir, cfg).await;
    // A connection that has shaken hands but not sent its Hello still holds
    // the only set-up slot, and within the eviction grace it is not closed
    // to make room (hostile_edge.rs covers the eviction after it) ...
    let silent = node.connector.handshake().await.unwrap();
    let e = node
        .connector
        .connect(&node.token("acme", "phone-2"), "phone-2")
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").to_lowercase().contains("refused"),
        "refused at once, before any key exchange: {e:#}"
    );
    // ... until it authenticates: then it is an ordinary connection and the
    // next one gets in.
    silent
        .hello(&node.token("acme", "phone-1"), "phone-1")
        .await
        .unwrap();
    let c = node.client("acme", "phone-2").await;
    assert_eq!(
        ack(c.punch(&punch(1, "e-1", HQ)).await.unwrap()).verdict,
        Verdict::Accepted
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}
