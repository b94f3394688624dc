//! Several gateway nodes on a NATS JetStream cluster, proven with kills:
//! three `fencegate serve` processes forward to a 3-node JetStream cluster
//! (stream replicas 3); devices spread over the nodes and, like the device
//! SDK, move to another node and resend the same punch id when theirs dies.
//! Mid-run one gateway node and one NATS node are SIGKILLed and restarted.
//! The stream must then hold every acknowledged punch exactly once. The
//! nodes run with `[cluster]` claims on, so a punch whose node died
//! between its claim and its commit is taken over by the resend.
//!
//!
//! The whole NATS cluster stopped under the three processes: every node
//! keeps acknowledging into its own log (claims fail open, marked) and
//! drains when the cluster returns; the stream then holds every
//! acknowledged punch exactly once.
//!
//! The `[cluster]` claims (in-process nodes, for reading their logs): a
//! repeat on another node within the window is merged, a resend to another
//! node gets the first ack and appends nothing, and each unreachable policy
//! answers as documented (fail open: accepted and marked; busy: `Busy`).

mod cluster_rig;
mod common;
mod sink_rig;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{GLOBEX, HQ, Node, now_ms, punch, read_records};
use fencegate::client::{Connector, PunchReply};
use fencegate::cluster::{CLAIM_UNCHECKED, OnUnreachable, RawCluster, RawClusterTenant};
use fencegate::edge::tls::Trust;
use fencegate::record_json::uuid;
use fencegate_schema::{PunchAckMsg, RecordBodyMsg, Verdict};
use fencegate_testkit::{GatewayProcess, NatsCluster};
use sink_rig::{punch_ids, read_stream};

const NODES: usize = 3;

async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Where devices connect: the nodes' current addresses (a restarted node
/// gets new ports, as a replaced pod gets a new address behind the
/// balancer).
type Directory = Arc<Mutex<Vec<(SocketAddr, String)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_cluster_kills_lose_no_acked_punch_and_store_none_twice() {
    tokio::time::timeout(Duration::from_secs(240), run())
        .await
        .expect("finishes within 4 minutes");
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::start(&dir.path().join("nats"), 3);
    let key = cluster_rig::write_key(dir.path());
    let bin = Path::new(env!("CARGO_BIN_EXE_fencegate"));
    let configs: Vec<PathBuf> = (0..NODES)
        .map(|i| cluster_rig::write_config(dir.path(), i, &key, &nats.urls(), ""))
        .collect();
    let mut gws: Vec<GatewayProcess> = configs
        .iter()
        .map(|c| GatewayProcess::spawn(bin, c, &[]))
        .collect();
    let directory: Directory = Arc::new(Mutex::new(
        gws.iter()
            .map(|g| (g.quic, g.fingerprint.clone()))
            .collect(),
    ));
    let cfg = fencegate::config::Config::load(&configs[0]).unwrap();
    let keyring = fencegate::serve::keyring(&cfg).unwrap();

    let acked: Arc<Mutex<Vec<[u8; 16]>>> = Arc::default();
    let moved = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..(2 * NODES) {
        let device = format!("terminal-{w}");
        let token = keyring
            .issue("acme", &device, now_ms() / 1000 + 3600)
            .unwrap();
        let (acked, moved, stop, directory) = (
            acked.clone(),
            moved.clone(),
            stop.clone(),
            directory.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut node = w % NODES;
            let mut i = 0u128;
            let mut pending: Option<fencegate_schema::PunchMsg> = None;
            while !stop.load(Ordering::Relaxed) {
                let (addr, fp) = directory.lock().unwrap()[node].clone();
                let Ok(connector) = Connector::new(addr, "localhost", Trust::Pinned(fp), false)
                else {
                    node = (node + 1) % NODES;
                    continue;
                };
                let Ok(client) = connector.connect(&token, &device).await else {
                    node = (node + 1) % NODES;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                while !stop.load(Ordering::Relaxed) {
                    let p = pending.take().unwrap_or_else(|| {
                        i += 1;
                        punch(((w as u128) << 64) | i, &format!("e-{w}-{i}"), HQ)
                    });
                    match client.punch(&p).await {
                        Ok(PunchReply::Ack(a)) => {
                            acked.lock().unwrap().push(a.record_id.unwrap());
                        }
                        Ok(PunchReply::Busy { .. }) => {
                            pending = Some(p);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => {
                            // The node died (or the ack was lost): resend the
                            // same punch id to the next node.
                            pending = Some(p);
                            moved.fetch_add(1, Ordering::Relaxed);
                            node = (node + 1) % NODES;
                            break;
                        }
                    }
                }
                client.close();
            }
        }));
    }
    let wait_acked = |n: usize| {
        let acked = acked.clone();
        async move {
            for _ in 0..1200 {
                if acked.lock().unwrap().len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("load stalled below {n} acked punches");
        }
    };
    wait_acked(600).await;
    // A gateway node and a NATS node die without warning.
    gws[1].kill();
    nats.kill(2);
    wait_acked(1_500).await;
    // Both come back: the gateway from its own log (same data dir, new
    // ports), the NATS node from its store.
    gws[1] = GatewayProcess::spawn(bin, &configs[1], &[]);
    directory.lock().unwrap()[1] = (gws[1].quic, gws[1].fingerprint.clone());
    nats.restart(2);
    wait_acked(2_500).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    // Every node forwards everything it logged.
    for g in &gws {
        let mut caught_up = false;
        for _ in 0..600 {
            let lag = metric(g.admin, "fencegate_sink_lag_records{sink=\"js\"}").await;
            if lag == Some(0.0) {
                caught_up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            caught_up,
            "node {} did not catch up with the stream",
            g.admin
        );
    }
    let acked: Vec<[u8; 16]> = acked.lock().unwrap().clone();
    let unique: HashSet<[u8; 16]> = acked.iter().copied().collect();
    let stored = read_stream(&nats.url(0), "FENCEGATE").await;
    let ids = punch_ids(&stored);
    let missing = unique
        .iter()
        .filter(|id| !ids.contains_key(&uuid(id)))
        .count();
    let doubled = ids.values().filter(|n| **n > 1).count();
    eprintln!(
        "acked {} ({} unique), resent to another node {}, stream records {}",
        acked.len(),
        unique.len(),
        moved.load(Ordering::Relaxed),
        ids.len()
    );
    assert!(
        moved.load(Ordering::Relaxed) > 0,
        "no device had to move: the kill did not land mid-run"
    );
    assert_eq!(missing, 0, "acknowledged punches missing from the stream");
    assert_eq!(doubled, 0, "punches stored twice");
    for g in &mut gws {
        g.stop();
    }
}

/// Punches `per_node` new punches into every node at once (one terminal
/// per node, a new employee each), retrying `Busy`; returns each ack's
/// record id and the longest wait for an ack.
async fn punch_every_node(
    gws: &[GatewayProcess],
    keyring: &fencegate::auth::Keyring,
    base: u128,
    per_node: u128,
) -> (Vec<[u8; 16]>, Duration) {
    let mut tasks = Vec::new();
    for (n, g) in gws.iter().enumerate() {
        let device = format!("terminal-{n}");
        let token = keyring
            .issue("acme", &device, now_ms() / 1000 + 3600)
            .unwrap();
        let (addr, fp) = (g.quic, g.fingerprint.clone());
        tasks.push(tokio::spawn(async move {
            let connector = Connector::new(addr, "localhost", Trust::Pinned(fp), false).unwrap();
            let client = connector.connect(&token, &device).await.unwrap();
            let (mut ids, mut slowest) = (Vec::new(), Duration::ZERO);
            for k in 0..per_node {
                let id = base + ((n as u128) << 32) + k;
                let p = punch(id, &format!("nd-{id:x}"), HQ);
                let t0 = fencegate::clock::instant();
                let ack = loop {
                    match client.punch(&p).await.unwrap() {
                        PunchReply::Ack(a) => break a,
                        PunchReply::Busy { retry_after_ms, .. } => {
                            tokio::time::sleep(Duration::from_millis(retry_after_ms.into())).await;
                        }
                    }
                };
                slowest = slowest.max(t0.elapsed());
                assert_eq!(ack.verdict, Verdict::Accepted, "node {n}: {ack:?}");
                ids.push(ack.record_id.unwrap());
            }
            client.close();
            (ids, slowest)
        }));
    }
    let (mut ids, mut slowest) = (Vec::new(), Duration::ZERO);
    for t in tasks {
        let (i, s) = t.await.unwrap();
        ids.extend(i);
        slowest = slowest.max(s);
    }
    (ids, slowest)
}

/// Waits until `f` of node `admin`'s metric `name` holds, at most `within`.
async fn wait_metric(
    admin: SocketAddr,
    name: &str,
    within: Duration,
    f: impl Fn(f64) -> bool,
) -> bool {
    let deadline = fencegate::clock::tokio_now() + within;
    while fencegate::clock::tokio_now() < deadline {
        if metric(admin, name).await.is_some_and(&f) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

const LAG: &str = "fencegate_sink_lag_records{sink=\"js\"}";

/// The whole NATS cluster stopped under three gateway nodes: every node
/// keeps acknowledging punches into its own log, and when the cluster
/// returns every node drains, so the stream holds every acknowledged punch
/// exactly once. Claims stay on (`on_unreachable = fail_open`, the
/// default): the punches of the outage are accepted after the claim
/// timeout, marked `CLAIM_UNCHECKED`, and the mark travels to the stream,
/// so a consumer can tell which punches no cross-node check saw. The NATS
/// nodes are stopped with SIGTERM, not killed: this test is about the
/// gateways' side; what a NATS node loses to a kill depends on its
/// `sync_interval` (docs/DOWNSTREAM.md), and the kill test above kills one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_nats_down_nodes_ack_locally_and_drain_on_return() {
    tokio::time::timeout(Duration::from_secs(180), nats_down())
        .await
        .expect("finishes within 3 minutes");
}

async fn nats_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::start(&dir.path().join("nats"), 3);
    let key = cluster_rig::write_key(dir.path());
    let bin = Path::new(env!("CARGO_BIN_EXE_fencegate"));
    let configs: Vec<PathBuf> = (0..NODES)
        .map(|i| cluster_rig::write_config(dir.path(), i, &key, &nats.urls(), ""))
        .collect();
    let mut gws: Vec<GatewayProcess> = configs
        .iter()
        .map(|c| GatewayProcess::spawn(bin, c, &[]))
        .collect();
    let cfg = fencegate::config::Config::load(&configs[0]).unwrap();
    let keyring = fencegate::serve::keyring(&cfg).unwrap();

    // NATS up: every node acknowledges and forwards.
    let (before, _) = punch_every_node(&gws, &keyring, 0x10 << 64, 5).await;
    for g in &gws {
        assert!(
            wait_metric(g.admin, LAG, Duration::from_secs(30), |v| v == 0.0).await,
            "node {} did not forward before the outage",
            g.admin
        );
    }

    // The whole cluster down: every node still acknowledges, each within
    // the claim timeout and a commit, and its sink's lag grows.
    for i in 0..3 {
        nats.stop(i);
    }
    let (during, slowest) = punch_every_node(&gws, &keyring, 0x20 << 64, 8).await;
    assert_eq!(during.len(), 8 * NODES);
    assert!(
        slowest < Duration::from_secs(5),
        "an ack during the outage took {slowest:?}"
    );
    for g in &gws {
        assert!(
            wait_metric(g.admin, LAG, Duration::from_secs(10), |v| v >= 8.0).await,
            "node {}: its outage punches are not waiting in its log",
            g.admin
        );
        assert!(
            metric(g.admin, "fencegate_claims_unreachable_total")
                .await
                .is_some_and(|v| v >= 8.0),
            "node {}: the unchecked claims were not counted",
            g.admin
        );
    }

    // The cluster returns: every node drains within a bound.
    let t0 = fencegate::clock::instant();
    nats.start_stopped();
    for g in &gws {
        assert!(
            wait_metric(g.admin, LAG, Duration::from_secs(60), |v| v == 0.0).await,
            "node {} did not drain within 60 s of NATS's return",
            g.admin
        );
    }
    eprintln!(
        "{} punches acknowledged during the outage (slowest ack {slowest:?}); all nodes drained {:?} after NATS was started again (its start included)",
        during.len(),
        t0.elapsed()
    );

    // Every acknowledged punch exactly once; the outage's ones marked.
    let stored = read_stream(&nats.url(0), "FENCEGATE").await;
    let ids = punch_ids(&stored);
    for (phase, acked) in [("before", &before), ("during", &during)] {
        for id in acked {
            assert_eq!(
                ids.get(&uuid(id)).copied(),
                Some(1),
                "punch {} acknowledged {phase} the outage is in the stream {} time(s)",
                uuid(id),
                ids.get(&uuid(id)).copied().unwrap_or(0)
            );
        }
    }
    let during_ids: HashSet<String> = during.iter().map(uuid).collect();
    let mut marked = 0;
    for s in stored.iter().filter(|s| during_ids.contains(&s.msg_id)) {
        let rec = fencegate_schema::parse_record(&s.payload).unwrap().to_msg();
        if let RecordBodyMsg::Punch(p) = rec.body {
            assert_ne!(
                p.anomaly_flags & CLAIM_UNCHECKED,
                0,
                "an outage punch reached the stream unmarked"
            );
            marked += 1;
        }
    }
    assert_eq!(marked, during.len());
    for g in &mut gws {
        g.stop();
    }
}

/// An in-process node of a `[cluster]` on `urls` (claims only; no sink:
/// the tests read each node's own log, so day results come from it too).
async fn cluster_node(urls: &str, replicas: usize, tweak: impl FnOnce(&mut RawCluster)) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = RawCluster {
        enabled: true,
        urls: urls.split(',').map(str::to_owned).collect(),
        replicas,
        timeout_ms: 500,
        results: fencegate::cluster::ResultsFrom::Log,
        ..RawCluster::default()
    };
    tweak(&mut cluster);
    let cfg = sink_rig::config_with(dir.path(), vec![], |raw| raw.cluster = cluster);
    Node::start_with(dir, cfg).await
}

/// Waits until a node's claims buckets are open.
async fn claims_open(n: &Node) {
    let c = n.running.edge.cluster.clone().expect("claims configured");
    assert!(
        sink_rig::wait_until(Duration::from_secs(20), || c.buckets().is_some()).await,
        "the claims buckets did not open within 20 s"
    );
}

async fn ack(n: &Node, tenant: &str, p: &fencegate_schema::PunchMsg) -> PunchAckMsg {
    let c = n.client(tenant, "terminal-1").await;
    let r = c.punch(p).await.unwrap();
    c.close();
    match r {
        PunchReply::Ack(a) => a,
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// Punch records of every node's log: (node, punch id, verdict, record id,
/// merged into, anomaly flags).
type Logged = (usize, [u8; 16], Verdict, [u8; 16], Option<[u8; 16]>, u64);

fn punches(nodes: &[&Node]) -> Vec<Logged> {
    let mut out = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for r in read_records(&n.log_dir()) {
            if let RecordBodyMsg::Punch(p) = r.body {
                out.push((
                    i,
                    p.punch_id,
                    p.verdict,
                    r.record_id,
                    p.merged_into,
                    p.anomaly_flags,
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_repeat_on_another_node_is_merged_and_a_resend_gets_the_first_ack() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::start(dir.path(), 3);
    let urls = nats.urls();
    let a = cluster_node(&urls, 3, |_| {}).await;
    let b = cluster_node(&urls, 3, |_| {}).await;
    let c = cluster_node(&urls, 3, |_| {}).await;
    for n in [&a, &b, &c] {
        claims_open(n).await;
    }

    // 8:58 on node A, 9:01 on node B: one accepted record, one repeat.
    let p1 = punch(0x1001, "E-7", HQ);
    let first = ack(&a, "acme", &p1).await;
    assert_eq!(first.verdict, Verdict::Accepted);
    let r1 = first.record_id.unwrap();
    let p2 = punch(0x1002, "E-7", HQ);
    let second = ack(&b, "acme", &p2).await;
    assert_eq!(
        (second.verdict, second.record_id),
        (Verdict::RepeatMerged, Some(r1)),
        "node B accepted a repeat of node A's punch"
    );

    // Resends of both to node C: the first acks, nothing appended on C.
    for (p, want) in [(&p2, &second), (&p1, &first)] {
        let again = ack(&c, "acme", p).await;
        assert_eq!(
            (again.verdict, again.record_id),
            (want.verdict, want.record_id),
            "a resend to another node got another ack"
        );
    }

    // The resends answered on C left A's repeat window in place: the
    // employee's next press, on C, still merges into A's record. (A
    // release is spawned after its answer: give one time to land.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = ack(&c, "acme", &punch(0x1004, "E-7", HQ)).await;
    assert_eq!(
        (third.verdict, third.record_id),
        (Verdict::RepeatMerged, Some(r1)),
        "a resend answered with another node's ack released that node's repeat window"
    );

    let logged = punches(&[&a, &b, &c]);
    let accepted: Vec<_> = logged.iter().filter(|l| l.2 == Verdict::Accepted).collect();
    assert_eq!(accepted.len(), 1, "accepted records: {logged:?}");
    assert_eq!((accepted[0].0, accepted[0].3), (0, r1));
    assert!(
        logged
            .iter()
            .any(|l| l.0 == 1 && l.2 == Verdict::RepeatMerged && l.4 == Some(r1)),
        "node B logged no repeat merged into A's record: {logged:?}"
    );
    assert!(
        logged
            .iter()
            .all(|l| l.0 != 2 || (l.1 == punch(0x1004, "E-7", HQ).punch_id && l.4 == Some(r1))),
        "node C appended a resend: {logged:?}"
    );
    assert!(logged.iter().all(|l| l.5 & CLAIM_UNCHECKED == 0));

    // The whole NATS cluster down: the claims time out and acme (fail
    // open) is accepted, marked, and counted.
    for i in 0..3 {
        nats.kill(i);
    }
    let t0 = fencegate::clock::instant();
    let open = ack(&a, "acme", &punch(0x1003, "E-8", HQ)).await;
    assert_eq!(open.verdict, Verdict::Accepted);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "an unreachable cluster held the ack for {:?}",
        t0.elapsed()
    );
    let marked = punches(&[&a])
        .into_iter()
        .find(|l| Some(l.3) == open.record_id)
        .expect("the fail-open punch is in node A's log");
    assert_ne!(
        marked.5 & CLAIM_UNCHECKED,
        0,
        "the fail-open record is unmarked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_claims_unreachable_fail_open_marks_and_busy_refuses() {
    // Nothing listens on the port: the buckets never open.
    let dead = format!("nats://127.0.0.1:{}", fencegate_testkit::free_port());
    let n = cluster_node(&dead, 1, |c| {
        c.on_unreachable = OnUnreachable::FailOpen;
        c.busy_retry_after_ms = 1_500;
        c.tenants.insert(
            "globex".into(),
            RawClusterTenant {
                on_unreachable: Some(OnUnreachable::Busy),
            },
        );
    })
    .await;
    let counted = || {
        fencegate::serve::prometheus()
            .render()
            .lines()
            .find(|l| l.starts_with("fencegate_claims_unreachable_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = counted();

    // acme fails open: accepted, its record marked, the spell counted.
    let a = ack(&n, "acme", &punch(0x2001, "E-1", HQ)).await;
    assert_eq!(a.verdict, Verdict::Accepted);
    let logged = punches(&[&n]);
    assert_eq!(logged.len(), 1);
    assert_ne!(logged[0].5 & CLAIM_UNCHECKED, 0, "the record is not marked");
    assert!(
        counted() > before,
        "fencegate_claims_unreachable_total did not move"
    );

    // globex is busy: nothing accepted, nothing logged, retry as set.
    let c = n.client("globex", "terminal-1").await;
    let r = c.punch(&punch(0x2002, "G-1", GLOBEX)).await.unwrap();
    c.close();
    assert!(
        matches!(
            r,
            PunchReply::Busy {
                retry_after_ms: 1_500,
                ..
            }
        ),
        "globex got {r:?}"
    );
    assert_eq!(punches(&[&n]).len(), 1, "the busy punch was logged");
}

/// acme's fences moved 5 km north of HQ: a punch at HQ is out of range.
const MOVED: &str = r#"{"type":"FeatureCollection","features":[
 {"type":"Feature","geometry":{"type":"Point","coordinates":[121.4737,31.2754]},"properties":{"id":"hq-moved","tenant":"acme","site":"sh","radius_m":200}},
 {"type":"Feature","geometry":{"type":"Point","coordinates":[121.4947,31.2304]},"properties":{"id":"globex-1","tenant":"globex","radius_m":300}}
]}"#;

async fn put_fences(n: &Node, body: &str) -> (u16, serde_json::Value) {
    let token = std::fs::read_to_string(n.cfg.data_dir.join("admin.token")).unwrap();
    let r = reqwest::Client::new()
        .put(format!("http://{}/v1/fences", n.running.admin_addr))
        .bearer_auth(token.trim())
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn shared_open(n: &Node) {
    for _ in 0..400 {
        let (_, body) = sink_rig::readyz(n.running.admin_addr).await;
        if body["cluster_config"]["open"] == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cluster config bucket did not open within 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_fence_change_through_a_is_served_by_c_within_2s() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 3);
    let urls = nats.urls();
    let a = cluster_node(&urls, 3, |_| {}).await;
    let c = cluster_node(&urls, 3, |_| {}).await;
    shared_open(&a).await;
    shared_open(&c).await;
    let before = ack(&c, "acme", &punch(0x3000, "F-0", HQ)).await;
    assert_eq!(before.fence_id.as_deref(), Some("hq-north"));

    // A document that fails validation is refused by the writer and
    // never reaches the bucket (C keeps its fences).
    let (code, _) = put_fences(&a, r#"{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Point","coordinates":[121.47,31.23]},"properties":{"id":"tiny","tenant":"acme","radius_m":1}}]}"#).await;
    assert_eq!(code, 422);

    let (code, body) = put_fences(&a, MOVED).await;
    assert_eq!(code, 200, "{body}");
    let revision = body["cluster_revision"]
        .as_u64()
        .expect("a cluster revision");
    let t0 = fencegate::clock::instant();
    let mut served = None;
    for i in 0..40u128 {
        let r = ack(&c, "acme", &punch(0x3001 + i, &format!("F-after-{i}"), HQ)).await;
        if r.verdict != Verdict::Accepted {
            served = Some((t0.elapsed(), r));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (took, r) = served.expect("node C never served the change");
    assert!(
        took < Duration::from_secs(2),
        "node C served it after {took:?}"
    );
    assert_eq!(
        (r.verdict, r.nearest_fence_id.as_deref()),
        (Verdict::OutOfRange, Some("hq-moved"))
    );
    // Both nodes report the revision they serve.
    for n in [&a, &c] {
        let (_, body) = sink_rig::readyz(n.running.admin_addr).await;
        assert_eq!(
            body["cluster_config"]["fences_revision"], revision,
            "{body}"
        );
    }
    // C's file holds it too: a restart without NATS serves it.
    let saved = std::fs::read_to_string(&c.cfg.fences.path).unwrap();
    assert!(saved.contains("hq-moved"));
}
