//! Crash safety: SIGKILL the real `fencegate` binary in the middle of a
//! burst of punches, restart it, and check that every punch a client saw
//! acknowledged is in the log exactly once, and that resends after the
//! restart get the ack they got before.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{HQ, now_ms, punch, read_records};
use fencegate::client::{Connector, PunchReply};
use fencegate::edge::tls::Trust;
use fencegate_schema::{RecordBodyMsg, Verdict};

/// Punch id → the record id its ack carried.
type Acked = HashMap<[u8; 16], Option<[u8; 16]>>;

fn write_config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("fences.geojson"), common::FENCES).unwrap();
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
# One terminal sends thousands of punches as fast as it can: no device rate.
[budgets]
device_punches_per_s = 0
"#,
        d = dir.display()
    );
    let path = dir.join("fencegate.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Starts the binary and reads the bound address and fingerprint from its banner.
fn spawn(config: &Path) -> (Child, SocketAddr, String) {
    let s = common::serve_binary(config);
    (s.child, s.quic, s.fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_no_acknowledged_punch_and_duplicates_none() {
    tokio::time::timeout(Duration::from_secs(180), kill_9_mid_burst())
        .await
        .expect("the crash test finishes within 3 minutes");
}

async fn kill_9_mid_burst() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (mut child, addr, fp) = spawn(&config);
    let cfg = fencegate::config::Config::load(&config).unwrap();
    let ring = fencegate::serve::keyring(&cfg).unwrap();
    let token = ring
        .issue("acme", "terminal-1", now_ms() / 1000 + 3600)
        .unwrap();

    let connector = Connector::new(addr, "localhost", Trust::Pinned(fp), false).unwrap();
    let client = connector.connect(&token, "terminal-1").await.unwrap();
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..8u128 {
        let (c, acked) = (client.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000u128 {
                // Distinct employees, so every punch is a new accepted record.
                let p = punch(1 + w * 1_000_000 + i, &format!("e-{w}-{i}"), HQ);
                match c.punch(&p).await {
                    Ok(PunchReply::Ack(a)) => {
                        assert_eq!(a.verdict, Verdict::Accepted);
                        acked.lock().unwrap().insert(p.punch_id, a.record_id);
                    }
                    Ok(PunchReply::Busy { .. }) => {}
                    Err(_) => return, // the server died under us
                }
            }
        }));
    }
    // Let the burst run, then kill without warning.
    let mut waited = 0;
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        waited += 1;
        assert!(
            waited < 12_000,
            "only {} punches acked in 60 s",
            acked.lock().unwrap().len()
        );
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Fail the requests still waiting on the dead server at once.
    client.close();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    // Restart: recovery runs, and the dedup window is rebuilt from the log.
    let (mut child, addr, fp) = spawn(&config);
    let records = read_records(&cfg.log.dir);
    let mut seen: HashMap<[u8; 16], usize> = HashMap::new();
    for r in &records {
        if let RecordBodyMsg::Punch(p) = &r.body {
            *seen.entry(p.punch_id).or_default() += 1;
        }
    }
    let lost: Vec<_> = acked.keys().filter(|id| !seen.contains_key(*id)).collect();
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(lost.is_empty(), "{} acknowledged punches lost", lost.len());
    assert!(
        doubled.is_empty(),
        "{} punches recorded twice",
        doubled.len()
    );

    // Resend a sample of acknowledged punches to the restarted node: same
    // record id, no new record.
    let connector = Connector::new(addr, "localhost", Trust::Pinned(fp), false).unwrap();
    let client = connector.connect(&token, "terminal-1").await.unwrap();
    let before = read_records(&cfg.log.dir).len();
    for (id, record_id) in acked.iter().take(50) {
        let mut p = punch(u128::from_be_bytes(*id), "resend", HQ);
        p.punch_id = *id;
        let PunchReply::Ack(a) = client.punch(&p).await.unwrap() else {
            panic!("busy on resend")
        };
        assert_eq!(a.record_id, *record_id);
    }
    assert_eq!(
        read_records(&cfg.log.dir).len(),
        before,
        "resends wrote nothing"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_in_flight_punches() {
    let node = common::Node::start().await;
    let c = node.client("acme", "terminal-2").await;
    let mut tasks = Vec::new();
    for i in 0..64u128 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.punch(&punch(100 + i, &format!("g-{i}"), HQ)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let log_dir = node.log_dir();
    node.running.shutdown(Duration::from_secs(5)).await;
    let mut acked = Vec::new();
    for t in tasks {
        if let Ok(Ok(PunchReply::Ack(a))) = t.await {
            acked.push(a.punch_id.unwrap());
        }
    }
    let stored: Vec<[u8; 16]> = read_records(&log_dir)
        .into_iter()
        .filter_map(|r| match r.body {
            RecordBodyMsg::Punch(p) => Some(p.punch_id),
            _ => None,
        })
        .collect();
    for id in &acked {
        assert!(
            stored.contains(id),
            "an acknowledged punch is missing after shutdown"
        );
    }
}
