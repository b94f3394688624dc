//! Day results on several nodes come from the stream: three `fencegate
//! serve` processes on a 3-node JetStream cluster share one PostgreSQL
//! results store, which one leader at a time fills from the stream every
//! node forwards to (`[cluster] results = "stream"`, docs/SCALING.md).
//!
//! An employee clocks in on node A and out on node B, another is decided on
//! through node C while its punch went through node B: every node answers
//! `/v1/days` the same, and the store equals an oracle (a fresh SQLite
//! store fed the stream's records in order by the plain materializer). A
//! node materializing its own log instead would miss the other nodes'
//! punches (no clock-out for the first employee) and disagree.
//!
//! Then the leader is SIGKILLed: another node takes over and a punch taken
//! meanwhile reaches the results. Then `fencegate results rebuild` empties
//! the store under the running leader: it reads the stream again and the
//! store equals the oracle again.

mod cluster_rig;
mod common;
mod sink_rig;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{HQ, now_ms, punch};
use fencegate::client::{Connector, PunchReply};
use fencegate::edge::tls::Trust;
use fencegate::results::{Materializer, ResultsStore};
use fencegate_schema::PunchKind;
use fencegate_testkit::{GatewayProcess, NatsCluster, Postgres};
use serde_json::Value;

const NODES: usize = 3;

/// Far from every test fence: an out-of-range punch, pending approval.
const FAR: (f64, f64) = (31.40, 121.80);

const RULES: &str = r#"
[tenants.acme]
timezone = "Asia/Shanghai"
default_group = "office"
[tenants.acme.groups.office]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
slots = [{ name = "day", start = "09:00", end = "18:00" }]
observe_holidays = false
close_after_min = 0
[tenants.acme.groups.office.corrections]
days_back = 3
monthly_quota = 1
[tenants.acme.departments.ops]
supervisor = "E0100"
[tenants.acme.departments.security]
supervisor = "E0200"
[tenants.acme.employees.E1001]
department = "ops"
[tenants.acme.employees.E2001]
department = "security"
[tenants.acme.employees.E3001]
department = "ops"
"#;

const SUPER: &str = "super-secret-0123456789";

/// Node `i`'s config: the cluster rig's, with a super token, the rules,
/// and the results in the PostgreSQL every node shares.
fn write_config(dir: &Path, i: usize, key: &Path, nats: &str, pg: &str) -> PathBuf {
    let d = cluster_rig::node_dir(dir, i);
    std::fs::write(d.join("rules.toml"), RULES).unwrap();
    std::fs::write(d.join("super.token"), SUPER).unwrap();
    let extra = format!(
        r#"
[attendance]
rules = "{d}/rules.toml"
results = "{pg}"
[[admin.tokens]]
name = "super"
role = "super"
token_file = "{d}/super.token"
"#,
        d = d.display()
    );
    cluster_rig::write_config(dir, i, key, nats, &extra)
}

async fn get(admin: SocketAddr, path: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("http://{admin}{path}"))
        .bearer_auth(SUPER)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(status.is_success(), "GET {path}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

async fn leader_gauge(admin: SocketAddr) -> f64 {
    let Ok(r) = reqwest::get(format!("http://{admin}/metrics")).await else {
        return 0.0;
    };
    r.text()
        .await
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("fencegate_results_stream_leader"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The node whose materializer leads, once exactly one does.
async fn leader(gws: &[Option<GatewayProcess>], what: &str) -> usize {
    let mut leading = Vec::new();
    for _ in 0..600 {
        leading.clear();
        for (i, g) in gws.iter().enumerate() {
            if let Some(g) = g
                && leader_gauge(g.admin).await == 1.0
            {
                leading.push(i);
            }
        }
        if let [one] = leading[..] {
            return one;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: no single node leads the results consumer within 60 s (leading: {leading:?})");
}

/// `h:m` yesterday in Shanghai, unix ms, and yesterday's date.
fn yesterday_at(h: i8, m: i8) -> (i64, String) {
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let day = jiff::Timestamp::from_millisecond(now_ms())
        .unwrap()
        .to_zoned(tz.clone())
        .date()
        .yesterday()
        .unwrap();
    let ms = day
        .at(h, m, 0, 0)
        .to_zoned(tz)
        .unwrap()
        .timestamp()
        .as_millisecond();
    (ms, day.to_string())
}

/// One offline punch (taken yesterday at `h:m`, uploaded now) through node
/// `g`, acknowledged; its record id.
#[allow(
    clippy::too_many_arguments,
    reason = "a punch's fields, spelled out at each call"
)]
async fn punch_on(
    g: &GatewayProcess,
    token: &str,
    device: &str,
    id: u128,
    employee: &str,
    kind: PunchKind,
    at: (f64, f64),
    (h, m): (i8, i8),
) -> [u8; 16] {
    let client = Connector::new(
        g.quic,
        "localhost",
        Trust::Pinned(g.fingerprint.clone()),
        false,
    )
    .unwrap()
    .connect(token, device)
    .await
    .unwrap();
    let mut p = punch(id, employee, at);
    p.kind = kind;
    p.offline = true;
    p.device_time_ms = yesterday_at(h, m).0;
    let reply = client.punch(&p).await.unwrap();
    client.close();
    match reply {
        PunchReply::Ack(a) => a.record_id.unwrap(),
        other => panic!("{employee} on {}: {other:?}", g.quic),
    }
}

/// The oracle: every attendance record of the stream, in stream order,
/// through the plain materializer into a fresh SQLite store; its day rows
/// and HR rows, as of `now`.
async fn oracle(
    nats: &str,
    rules_cfg: &fencegate::config::Config,
    now: i64,
) -> (Vec<fencegate::results::DayRow>, Vec<String>) {
    let stored = sink_rig::read_stream(nats, "FENCEGATE").await;
    let entries: Vec<(u64, Vec<u8>)> = stored
        .into_iter()
        .filter(|s| s.subject.ends_with(".punch"))
        .enumerate()
        .map(|(i, s)| (i as u64 + 1, s.payload))
        .collect();
    let (rules, _) = fencegate::rules::load::load(rules_cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fresh = ResultsStore::open_sqlite(&dir.path().join("oracle.sqlite"))
        .await
        .unwrap();
    let m = Materializer::new(fresh.clone(), Arc::clone(&rules));
    m.apply(&entries, entries.len() as u64 + 1, now)
        .await
        .unwrap();
    m.close_due(now).await.unwrap();
    (
        fresh.all_rows().await.unwrap(),
        fresh.all_hr().await.unwrap(),
    )
}

/// Polls until the shared store says what the oracle says (day rows,
/// revisions aside, and HR rows); panics with both after 30 s.
async fn assert_store_equals_oracle(
    pg: &str,
    nats: &str,
    cfg: &fencegate::config::Config,
    what: &str,
) {
    let live = ResultsStore::open(pg).await.unwrap();
    let (rules, _) = fencegate::rules::load::load(cfg).unwrap();
    let mut last = String::new();
    for _ in 0..150 {
        let now = now_ms();
        let (rows, hr) = oracle(nats, cfg, now).await;
        // The leader closes due days on its own tick; as of the same time.
        Materializer::new(live.clone(), Arc::clone(&rules))
            .close_due(now)
            .await
            .unwrap();
        let (got, got_hr) = (live.all_rows().await.unwrap(), live.all_hr().await.unwrap());
        if got.len() == rows.len()
            && got.iter().zip(&rows).all(|(a, b)| a.same_result(b))
            && got_hr == hr
            && !rows.is_empty()
        {
            return;
        }
        last = format!("store {got:#?} {got_hr:#?}\noracle {rows:#?} {hr:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: the shared store never equalled the stream's oracle:\n{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_cluster_results_come_from_the_stream_alike_on_every_node() {
    tokio::time::timeout(Duration::from_secs(240), run())
        .await
        .expect("finishes within 4 minutes");
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg"));
    let pg_url = pg.url();
    let nats = NatsCluster::start(&dir.path().join("nats"), 3);
    let key = cluster_rig::write_key(dir.path());
    let bin = Path::new(env!("CARGO_BIN_EXE_fencegate"));
    let configs: Vec<PathBuf> = (0..NODES)
        .map(|i| write_config(dir.path(), i, &key, &nats.urls(), &pg_url))
        .collect();
    let mut gws: Vec<Option<GatewayProcess>> = configs
        .iter()
        .map(|c| Some(GatewayProcess::spawn(bin, c, &[])))
        .collect();
    let cfg = fencegate::config::Config::load(&configs[0]).unwrap();
    let keyring = fencegate::serve::keyring(&cfg).unwrap();
    let token = |d: &str| keyring.issue("acme", d, now_ms() / 1000 + 3600).unwrap();
    let nats_url = nats.url(0);
    let node = |gws: &[Option<GatewayProcess>], i: usize| gws[i].as_ref().unwrap().admin;

    let first = leader(&gws, "at start").await;

    // Yesterday, uploaded today (offline): in on node 0, out on node 1;
    // another employee late on node 2; an out-of-range punch on node 1,
    // decided through node 0.
    let g = |i: usize| gws[i].as_ref().unwrap();
    let (t0, t1, t2) = (token("t-0"), token("t-1"), token("t-2"));
    punch_on(g(0), &t0, "t-0", 1, "E1001", PunchKind::In, HQ, (8, 55)).await;
    punch_on(g(1), &t1, "t-1", 2, "E1001", PunchKind::Out, HQ, (18, 5)).await;
    punch_on(g(2), &t2, "t-2", 3, "E2001", PunchKind::In, HQ, (9, 20)).await;
    let far = punch_on(g(1), &t1, "t-1", 4, "E3001", PunchKind::In, FAR, (8, 50)).await;
    let far = fencegate::record_json::uuid(&far);
    // The decision route finds the punch in the shared store once the
    // leader applied it, whichever node took it.
    for _ in 0..300 {
        let v = get(node(&gws, 2), "/v1/approvals?tenant=acme").await;
        if v["approvals"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["record_id"] == far.as_str()))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/approvals/{far}/decision",
            node(&gws, 0)
        ))
        .bearer_auth(SUPER)
        .body(r#"{"decision_id": "d-1", "decision": "reject", "comment": "not on site"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Decided through node 0: node 2 lists it as decided.
    let decided = get(node(&gws, 2), "/v1/approvals?tenant=acme&status=decided").await;
    assert!(
        decided["approvals"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["record_id"] == far.as_str())),
        "{decided:#}"
    );

    // Every node answers the day alike; the clock-out taken by node 1
    // completes the day whose clock-in node 0 took.
    let yesterday = yesterday_at(0, 0).1;
    let days = format!("/v1/days?tenant=acme&date={yesterday}");
    let mut answers = Vec::new();
    for _ in 0..300 {
        answers.clear();
        for i in 0..NODES {
            answers.push(get(node(&gws, i), &days).await);
        }
        let e1001 = answers[0]["days"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["employee"] == "E1001").cloned());
        if answers.iter().all(|a| a == &answers[0])
            && answers[0]["days"].as_array().is_some_and(|a| a.len() == 3)
            && e1001.is_some_and(|d| d["in_ms"].is_i64() && d["out_ms"].is_i64())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "the nodes answer differently: {answers:#?}"
    );
    let e1001 = answers[0]["days"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["employee"] == "E1001").cloned())
        .unwrap_or_else(|| panic!("no E1001 day: {:#}", answers[0]));
    assert!(
        e1001["in_ms"].is_i64() && e1001["out_ms"].is_i64() && e1001["status"] == "normal",
        "E1001's day joins node 0's clock-in and node 1's clock-out: {e1001:#}"
    );
    assert_store_equals_oracle(&pg_url, &nats_url, &cfg, "three nodes").await;

    // The make-up quota (1 a month) holds across nodes: E3001 (whose punch
    // was rejected) asks to make up yesterday's clock-in on node 0 and its
    // clock-out on node 2 at once; exactly one is taken.
    let file = |i: usize, id: &'static str, kind: &'static str| {
        let admin = node(&gws, i);
        let date = yesterday.clone();
        async move {
            let body = serde_json::json!({
                "correction_id": id, "employee": "E3001", "date": date, "kind": kind,
                "reason": "forgot",
            });
            let r = reqwest::Client::new()
                .post(format!("http://{admin}/v1/corrections?tenant=acme"))
                .bearer_auth(SUPER)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (a, b) = tokio::join!(file(0, "c-in", "in"), file(2, "c-out", "out"));
    let taken = [&a, &b]
        .iter()
        .filter(|(code, _)| (200..300).contains(code))
        .count();
    let refused = [&a, &b]
        .iter()
        .filter(|(code, body)| *code == 422 && body.contains("monthly_quota"))
        .count();
    assert_eq!(
        (taken, refused),
        (1, 1),
        "one make-up taken, one over the quota: {a:?} {b:?}"
    );
    assert_store_equals_oracle(&pg_url, &nats_url, &cfg, "after the make-ups").await;

    // The leader dies: another node takes over, and a punch taken
    // meanwhile reaches the results.
    gws[first].take().unwrap().kill();
    let second = leader(&gws, "after the leader's kill").await;
    assert_ne!(second, first);
    let other = (0..NODES).find(|&i| gws[i].is_some()).unwrap();
    let tx = token("t-x");
    punch_on(
        g2(&gws, other),
        &tx,
        "t-x",
        5,
        "E2001",
        PunchKind::Out,
        HQ,
        (18, 30),
    )
    .await;
    assert_store_equals_oracle(&pg_url, &nats_url, &cfg, "after the leader's kill").await;
    gws[first] = Some(GatewayProcess::spawn(bin, &configs[first], &[]));

    // A rebuild under the running leader: the store is emptied, and read
    // again from the stream.
    let out = std::process::Command::new(bin)
        .args(["results", "rebuild", "--config"])
        .arg(&configs[0])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live = ResultsStore::open(&pg_url).await.unwrap();
    assert_store_equals_oracle(&pg_url, &nats_url, &cfg, "after a rebuild").await;
    assert!(!live.all_rows().await.unwrap().is_empty());
    drop(pg);
}

fn g2(gws: &[Option<GatewayProcess>], i: usize) -> &GatewayProcess {
    gws[i].as_ref().unwrap()
}
