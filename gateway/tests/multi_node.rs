//! Several gateway nodes on a NATS JetStream cluster, proven with kills:
//! three `fencegate serve` processes forward to a 3-node JetStream cluster
//! (stream replicas 3); devices spread over the nodes and, like the device
//! SDK, move to another node and resend the same punch id when theirs dies.
//! Mid-run one gateway node and one NATS node are SIGKILLed and restarted.
//! The stream must then hold every acknowledged punch exactly once.
//!
//! (Cross-node repeat merging, that needs the shared claims of the
//! scale-out design, is not tested here yet: see docs/SCALING.md.)

mod common;
mod sink_rig;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{HQ, now_ms, punch};
use fencegate::client::{Connector, PunchReply};
use fencegate::edge::tls::Trust;
use fencegate::record_json::uuid;
use fencegate_testkit::{GatewayProcess, NatsCluster};
use sink_rig::{punch_ids, read_stream};

const NODES: usize = 3;

/// Node `i`'s config: its own data dir, the shared tenant key, the cluster.
fn write_config(dir: &Path, i: usize, key: &Path, nats_urls: &str) -> PathBuf {
    let d = dir.join(format!("node{i}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("fences.geojson"), common::FENCES).unwrap();
    let cfg = format!(
        r#"
[node]
name = "gw-{i}"
data_dir = "{d}/data"
[quic]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[fences]
path = "{d}/fences.geojson"
[[tenants]]
id = "acme"
key_file = "{key}"
[[sinks]]
name = "js"
type = "nats"
url = "{nats_urls}"
replicas = 3
timeout_ms = 2000
retry_initial_ms = 50
retry_max_ms = 500
"#,
        d = d.display(),
        key = key.display(),
    );
    let path = d.join("fencegate.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

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
    let key = dir.path().join("acme.key");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .and_then(|mut f| std::io::Write::write_all(&mut f, "5a".repeat(32).as_bytes()))
        .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_fencegate"));
    let configs: Vec<PathBuf> = (0..NODES)
        .map(|i| write_config(dir.path(), i, &key, &nats.urls()))
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
