//! The sinks that need no NATS: the webhook (an in-process axum receiver
//! that answers 500 and then recovers) and JSON lines.

mod common;
mod sink_rig;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{HQ, Node, punch};
use fencegate::client::PunchReply;
use fencegate::record_json::uuid;
use fencegate::sink::RawSink;
use fencegate::sink::webhook::verify_signature;
use fencegate_schema::{AttendanceStatus, Verdict};
use sink_rig::{config_with, encode, preload, punch_record, wait_until};

const SECRET: &str = "webhook-test-secret-0123456789";

#[derive(Default)]
struct Receiver {
    /// (idempotency key, status answered, record ids in the body).
    requests: Vec<(String, u16, Vec<String>)>,
    failures_left: u32,
    bad_signatures: u32,
}

async fn receive(
    State(rx): State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let now_s = common::now_ms() / 1000;
    let sig = headers
        .get("fencegate-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut rx = rx.lock().unwrap();
    if !verify_signature(SECRET.as_bytes(), sig, &body, now_s, 300) {
        rx.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["idempotency_key"], key.as_str());
    let ids: Vec<String> = doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(doc["count"], ids.len());
    let status = if rx.failures_left > 0 {
        rx.failures_left -= 1;
        500
    } else {
        200
    };
    rx.requests.push((key, status, ids));
    StatusCode::from_u16(status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_500s_with_the_same_key_then_delivers_every_record_once() {
    let rx = Arc::new(Mutex::new(Receiver {
        failures_left: 3,
        ..Receiver::default()
    }));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let sink = RawSink {
        name: "erp".into(),
        kind: "webhook".into(),
        url: Some(format!("http://{addr}/hook")),
        secret_file: Some(secret_file),
        max_batch: Some(40),
        batch_interval_ms: Some(300),
        retry_initial_ms: Some(50),
        retry_max_ms: Some(200),
        ..RawSink::default()
    };
    let cfg = config_with(dir.path(), vec![sink], |_| {});
    // A merged repeat in the log is not sent.
    let merged = punch_record(
        9,
        "acme",
        Verdict::RepeatMerged,
        AttendanceStatus::RepeatMerged,
    );
    preload(&cfg, &[encode(&merged)]).await;
    let node = Node::start_with(dir, cfg).await;
    let c = node.client("acme", "terminal-1").await;
    let mut acked = Vec::new();
    for i in 0..100u128 {
        let PunchReply::Ack(a) = c.punch(&punch(1 + i, &format!("w{i}"), HQ)).await.unwrap() else {
            panic!("busy")
        };
        acked.push(uuid(&a.record_id.unwrap()));
    }
    let h = node.running.sinks()[0].clone();
    assert!(
        wait_until(Duration::from_secs(20), || h.position()
            == node.running.committed())
        .await,
        "the webhook sink did not drain: {h:?}"
    );
    let rx = std::mem::take(&mut *rx.lock().unwrap());
    assert_eq!(rx.bad_signatures, 0);
    // The first batch failed three times and was retried with the same key.
    let first_key = &rx.requests[0].0;
    assert!(rx.requests[..4].iter().all(|r| &r.0 == first_key));
    assert_eq!(
        rx.requests[..4].iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![500, 500, 500, 200]
    );
    assert_eq!(
        rx.requests[0].2, rx.requests[3].2,
        "a retried batch carries the same records"
    );
    // Accepted batches hold every acknowledged record exactly once, in
    // batches of at most max_batch.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, status, ids) in rx.requests.iter().filter(|r| r.1 == 200) {
        assert_eq!(*status, 200);
        assert!(ids.len() <= 40);
        for id in ids {
            *seen.entry(id).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 100);
    assert!(seen.values().all(|n| *n == 1));
    for id in &acked {
        assert!(seen.contains_key(id.as_str()), "acked {id} not delivered");
    }
    assert!(!seen.contains_key(uuid(&merged.record_id).as_str()));
    assert!(h.retries() >= 3);
    let e = h.last_error().unwrap();
    assert_eq!(e.kind, "http");
    assert!(e.message.contains("500"), "{}", e.message);
    node.running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_writes_one_line_per_record_and_latest_skips_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("out/all.jsonl");
    let new = dir.path().join("out/new.jsonl");
    let sink = |name: &str, path: &std::path::Path, start: &str| RawSink {
        name: name.into(),
        kind: "jsonl".into(),
        path: Some(path.to_owned()),
        start: Some(start.into()),
        fsync: Some(true),
        ..RawSink::default()
    };
    let cfg = config_with(
        dir.path(),
        vec![sink("all", &all, "oldest"), sink("new", &new, "latest")],
        |_| {},
    );
    let old = punch_record(1, "globex", Verdict::Accepted, AttendanceStatus::Normal);
    preload(&cfg, &[encode(&old)]).await;
    let node = Node::start_with(dir, cfg).await;
    let c = node.client("acme", "terminal-1").await;
    let mut acked = Vec::new();
    for i in 0..10u128 {
        let PunchReply::Ack(a) = c.punch(&punch(1 + i, &format!("j{i}"), HQ)).await.unwrap() else {
            panic!("busy")
        };
        acked.push(uuid(&a.record_id.unwrap()));
    }
    // A repeat of j0 within five minutes: merged, not written.
    let r = c.punch(&punch(99, "j0", HQ)).await.unwrap();
    assert_eq!(r.verdict(), Some(Verdict::RepeatMerged));
    let committed = node.running.committed();
    assert!(
        wait_until(Duration::from_secs(10), || node
            .running
            .sinks()
            .iter()
            .all(|h| h.position() == committed))
        .await
    );
    let lines = |p: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let a = lines(&all);
    let n = lines(&new);
    assert_eq!(a.len(), 11, "the old record and ten new ones");
    assert_eq!(a[0]["record_id"], uuid(&old.record_id));
    assert_eq!(a[0]["tenant"], "globex");
    assert_eq!(n.len(), 10, "start = latest skips what was logged before");
    for (line, id) in n.iter().zip(&acked) {
        assert_eq!(line["record_id"], id.as_str());
        assert_eq!(line["type"], "punch");
        assert_eq!(line["verdict"], "accepted");
        // docs/ATTENDANCE.md: every record carries both, the JSON form too.
        assert_eq!(line["terminal_auth"], "none", "a GPS punch: {line}");
        assert!(
            line["attendance_time_ms"].as_i64().unwrap_or(0) > 0,
            "{line}"
        );
    }
    node.running.shutdown(Duration::from_secs(5)).await;
}

/// A receiver that refuses (413) any batch holding the poison employee's
/// punch, until it is fixed, and records what it accepted.
#[derive(Default)]
struct Picky {
    accepted: Vec<String>,
    refused: u32,
    fixed: bool,
}

async fn picky(State(rx): State<Arc<Mutex<Picky>>>, body: axum::body::Bytes) -> StatusCode {
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let records = doc["records"].as_array().unwrap();
    let mut rx = rx.lock().unwrap();
    if !rx.fixed && records.iter().any(|r| r["employee_id"] == "poison") {
        rx.refused += 1;
        return StatusCode::PAYLOAD_TOO_LARGE;
    }
    for r in records {
        rx.accepted
            .push(r["record_id"].as_str().unwrap().to_owned());
    }
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_413_dead_letters_the_one_record_and_the_rest_flows_then_replays() {
    let rx = Arc::new(Mutex::new(Picky::default()));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(picky))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let sink = RawSink {
        name: "erp".into(),
        kind: "webhook".into(),
        url: Some(format!("http://{addr}/hook")),
        secret_file: Some(secret_file),
        max_batch: Some(10),
        batch_interval_ms: Some(200),
        retry_initial_ms: Some(20),
        retry_max_ms: Some(100),
        ..RawSink::default()
    };
    let cfg = config_with(dir.path(), vec![sink], |_| {});
    let node = Node::start_with(dir, cfg.clone()).await;
    let c = node.client("acme", "terminal-1").await;
    let mut acked = Vec::new();
    let mut poison = None;
    for i in 0..30u128 {
        let employee = if i == 13 {
            "poison".to_owned()
        } else {
            format!("d{i}")
        };
        let PunchReply::Ack(a) = c.punch(&punch(1 + i, &employee, HQ)).await.unwrap() else {
            panic!("busy")
        };
        let id = uuid(&a.record_id.unwrap());
        if i == 13 {
            poison = Some(id);
        } else {
            acked.push(id);
        }
    }
    let poison = poison.unwrap();
    let h = node.running.sinks()[0].clone();
    // Without dead-lettering the cursor would wait on the poison batch forever.
    assert!(
        wait_until(Duration::from_secs(20), || h.position()
            == node.running.committed())
        .await,
        "the sink is stuck behind a record its receiver refuses: {h:?}"
    );
    {
        let rx = rx.lock().unwrap();
        assert!(rx.refused >= 2, "the batch, then the record alone");
        let mut got = rx.accepted.clone();
        got.sort();
        let mut want = acked.clone();
        want.sort();
        assert_eq!(got, want, "every other record exactly once");
    }
    assert_eq!(h.dead_letters(), 1);
    let dl = fencegate::sink::DeadLetter::new(&cfg.data_dir.join("dead-letter"), "erp");
    let dead = dl.list().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].record_id, poison);
    assert!(dead[0].error.contains("413"), "{}", dead[0].error);

    // Still refused: a replay keeps it.
    let r = fencegate::cmd::sinks::replay_sink(&cfg, "erp")
        .await
        .unwrap();
    assert_eq!((r.replayed, r.kept), (0, 1));
    // The receiver is fixed: the replay delivers it and empties the file.
    rx.lock().unwrap().fixed = true;
    let r = fencegate::cmd::sinks::replay_sink(&cfg, "erp")
        .await
        .unwrap();
    assert_eq!((r.replayed, r.kept, r.unreachable), (1, 0, None));
    assert!(dl.list().unwrap().is_empty());
    assert!(rx.lock().unwrap().accepted.contains(&poison));
    node.running.shutdown(Duration::from_secs(5)).await;
}

/// Day results reach a real sink from a running node (docs/ATTENDANCE.md,
/// "Day results downstream"): the node's materializer closes yesterday
/// (its only slot ended long ago) for the roster, and its publisher puts
/// each closed day into the log, from where the JSON lines sink writes it.
/// Red when the node never starts the publisher, when days are not noted
/// as they close, or when the sink cannot carry the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_days_reach_the_sink_as_day_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/days.jsonl");
    std::fs::write(
        dir.path().join("rules.toml"),
        r#"
[tenants.acme]
timezone = "UTC"
default_group = "dawn"

[tenants.acme.groups.dawn]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
slots = [{ name = "dawn", start = "00:00", end = "00:30" }]
close_after_min = 0

[tenants.acme.employees.e-1]
[tenants.acme.employees.e-2]
[tenants.acme.employees.e-3]
"#,
    )
    .unwrap();
    let rules = dir.path().join("rules.toml");
    let cfg = config_with(
        dir.path(),
        vec![RawSink {
            name: "days".into(),
            kind: "jsonl".into(),
            path: Some(out.clone()),
            start: Some("oldest".into()),
            ..RawSink::default()
        }],
        |raw| raw.attendance.rules = Some(rules),
    );
    // e-3 and e-1 clocked in yesterday at 00:10 UTC; e-2 never did. More
    // than a materializer batch (4,096) of another tenant's punches lie
    // between e-3's and e-1's: a node that closed days before reading its
    // log to the end would send e-1 as absent first.
    let yesterday = (common::now_ms() / 86_400_000 - 1) * 86_400_000;
    let punched = |n: u32| {
        let mut rec = punch_record(n, "acme", Verdict::Accepted, AttendanceStatus::Normal);
        rec.gateway_time_ms = yesterday + 10 * 60_000;
        if let fencegate_schema::RecordBodyMsg::Punch(p) = &mut rec.body {
            p.device_time_ms = rec.gateway_time_ms;
        }
        encode(&rec)
    };
    let mut records = vec![punched(3)];
    records.extend((0..4_200).map(|i| {
        encode(&punch_record(
            1_000 + i,
            "globex",
            Verdict::Accepted,
            AttendanceStatus::Normal,
        ))
    }));
    records.push(punched(1));
    preload(&cfg, &records).await;
    let node = Node::start_with(dir, cfg).await;
    let date = jiff::Timestamp::from_millisecond(yesterday)
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string();
    let days = |p: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["type"] == "day_result")
            .collect()
    };
    // Today closed too unless the test runs before 00:30 UTC: yesterday's
    // days are the ones compared.
    let yesterdays = |p: &std::path::Path| -> Vec<serde_json::Value> {
        days(p)
            .into_iter()
            .filter(|d| d["date"] == date.as_str())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || yesterdays(&out).len() >= 3).await,
        "no day results in the sink: {:#?}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
    let mut got: Vec<(String, String, String)> = yesterdays(&out)
        .iter()
        .map(|d| {
            assert_eq!(d["tenant"], "acme");
            assert_eq!(d["slots"][0]["slot"], "dawn", "{d}");
            // Written once: never closed before the log was read through
            // (a close after the first batch writes e-1 absent, then
            // rewrites it: revision 1).
            assert_eq!(d["revision"], 0, "{d}");
            (
                d["employee_id"].as_str().unwrap().to_owned(),
                d["date"].as_str().unwrap().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    // One record each: nobody was sent as absent before their punch was
    // read.
    assert_eq!(
        got,
        vec![
            ("e-1".into(), date.clone(), "missing_out".into()),
            ("e-2".into(), date.clone(), "absent".into()),
            ("e-3".into(), date, "missing_out".into()),
        ]
    );
    node.running.shutdown(Duration::from_secs(5)).await;
}
