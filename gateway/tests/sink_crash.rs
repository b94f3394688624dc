//! Gateway kill -9 mid-forward: SIGKILL the real `fencegate` binary while it
//! ingests and forwards to JetStream, restart it, and check that the stream
//! holds every acknowledged record exactly once (no gap) and that the
//! records delivered again after the restart were dropped by msg-id.

mod common;
mod sink_rig;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{HQ, now_ms, punch};
use fencegate::client::{Connector, PunchReply};
use fencegate::edge::tls::Trust;
use fencegate::record_json::uuid;
use fencegate_testkit::NatsServer;
use sink_rig::{punch_ids, read_stream, stream_len};

fn write_config(dir: &Path, nats_url: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("fences.geojson"), common::FENCES).unwrap();
    // A long checkpoint interval: the cursor is not persisted before the
    // kill, so the restart delivers everything again and JetStream must
    // drop what it already has.
    let cfg = format!(
        r#"
[node]
data_dir = "{d}/data"
[quic]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[fences]
path = "{d}/fences.geojson"
[[tenants]]
id = "acme"
# One terminal sends a burst of punches: no device punch rate.
[budgets]
device_punches_per_s = 0
[[sinks]]
name = "js"
type = "nats"
url = "{nats_url}"
checkpoint_interval_ms = 60000
retry_initial_ms = 50
retry_max_ms = 500
"#,
        d = dir.display()
    );
    let path = dir.join("fencegate.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

struct Gateway {
    child: Child,
    quic: SocketAddr,
    admin: SocketAddr,
    fingerprint: String,
}

/// Starts the binary and reads its addresses and fingerprint from the banner.
fn spawn(config: &Path) -> Gateway {
    let s = common::serve_binary(config);
    Gateway {
        child: s.child,
        quic: s.quic,
        admin: s.admin,
        fingerprint: s.fingerprint,
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_forward_then_restart_leaves_no_gap_and_no_duplicate() {
    tokio::time::timeout(Duration::from_secs(180), kill_9_mid_forward())
        .await
        .expect("finishes within 3 minutes");
}

async fn kill_9_mid_forward() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&dir.path().join("nats"));
    let config = write_config(dir.path(), &nats.url());
    let mut gw = spawn(&config);
    let cfg = fencegate::config::Config::load(&config).unwrap();
    let token = fencegate::serve::keyring(&cfg)
        .unwrap()
        .issue("acme", "terminal-1", now_ms() / 1000 + 3600)
        .unwrap();
    let connector = Connector::new(
        gw.quic,
        "localhost",
        Trust::Pinned(gw.fingerprint.clone()),
        false,
    )
    .unwrap();
    let client = connector.connect(&token, "terminal-1").await.unwrap();
    let acked: Arc<Mutex<Vec<[u8; 16]>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..8u128 {
        let (c, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u128;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let p = punch((w << 64) | i, &format!("k-{w}-{i}"), HQ);
                match c.punch(&p).await {
                    Ok(PunchReply::Ack(a)) => acked.lock().unwrap().push(a.record_id.unwrap()),
                    Ok(PunchReply::Busy { .. }) => {}
                    Err(_) => return, // the server died under us
                }
            }
        }));
    }
    // Kill while records are being ingested and forwarded.
    let url = nats.url();
    let mut forwarded = 0;
    for _ in 0..600 {
        forwarded = stream_len(&url, "FENCEGATE").await;
        if forwarded >= 1_000 && acked.lock().unwrap().len() >= 2_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(forwarded >= 1_000, "forwarding never got going");
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    client.close();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let acked: HashSet<[u8; 16]> = acked.lock().unwrap().iter().copied().collect();
    let before_restart = stream_len(&url, "FENCEGATE").await;

    // Restart: the sink resumes from its persisted cursor (the oldest
    // record here) and delivers everything again.
    let mut gw2 = spawn(&config);
    let done = {
        let mut ok = false;
        for _ in 0..600 {
            let lag = metric(gw2.admin, "fencegate_sink_lag_records{sink=\"js\"}").await;
            let pos = metric(gw2.admin, "fencegate_sink_delivered_total{sink=\"js\"}").await;
            if lag == Some(0.0) && pos.is_some_and(|p| p > 0.0) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ok
    };
    assert!(done, "the restarted gateway did not catch up");
    let duplicates = metric(gw2.admin, "fencegate_sink_duplicates_total{sink=\"js\"}")
        .await
        .unwrap_or(0.0);
    gw2.child.kill().unwrap();
    gw2.child.wait().unwrap();

    let stored = read_stream(&url, "FENCEGATE").await;
    let ids = punch_ids(&stored);
    let doubled = ids.values().filter(|n| **n > 1).count();
    let missing = acked
        .iter()
        .filter(|id| !ids.contains_key(&uuid(id)))
        .count();
    eprintln!(
        "acked {}, in stream before restart {before_restart}, after {}, redelivered and dropped as duplicates {duplicates}",
        acked.len(),
        ids.len()
    );
    assert_eq!(
        missing, 0,
        "gap: acknowledged records missing from the stream"
    );
    assert_eq!(doubled, 0, "records stored twice");
    assert!(
        duplicates >= before_restart as f64 * 0.9,
        "the restart should redeliver what the stream had ({before_restart}) and JetStream drop it; dropped {duplicates}"
    );
    // Every stored record was logged (nothing invented).
    let logged: HashSet<String> = common::read_records(&cfg.log.dir)
        .iter()
        .map(|r| uuid(&r.record_id))
        .collect();
    assert!(ids.keys().all(|id| logged.contains(id)));
}
