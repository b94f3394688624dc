//! Shared rig of the sink tests: a real `nats-server -js` on a free
//! loopback port with its own store folder (stop, kill, restart), a gateway
//! node with sinks, and readers of what reached the stream.

#![allow(
    dead_code,
    reason = "each sink test binary uses a different part of the rig"
)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use fencegate::config::{Config, RawConfig, RawTenant};
use fencegate::sink::RawSink;
use futures::StreamExt as _;

/// A node config like `common::config`, with `sinks` and log settings.
pub fn config_with(dir: &Path, sinks: Vec<RawSink>, log: impl FnOnce(&mut RawConfig)) -> Config {
    std::fs::write(dir.join("fences.geojson"), crate::common::FENCES).unwrap();
    let mut raw = RawConfig::default();
    raw.node.data_dir = dir.join("data");
    raw.quic.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.fences.path = dir.join("fences.geojson");
    raw.tenants = ["acme", "globex"]
        .into_iter()
        .map(|id| RawTenant {
            id: id.into(),
            key_file: None,
        })
        .collect();
    raw.sinks = sinks;
    // The sink tests fire bursts of punches from one terminal: no device
    // punch rate (tests/hostile_memory.rs covers it).
    raw.budgets.device_punches_per_s = 0.0;
    log(&mut raw);
    Config::compile(raw, "test").unwrap()
}

/// A NATS sink block for tests: fast retries so outages end quickly.
pub fn nats_sink(name: &str, url: &str) -> RawSink {
    RawSink {
        name: name.into(),
        kind: "nats".into(),
        url: Some(url.into()),
        timeout_ms: Some(2_000),
        retry_initial_ms: Some(50),
        retry_max_ms: Some(500),
        ..RawSink::default()
    }
}

/// One message as stored in the stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subject: String,
    pub msg_id: String,
    pub encoding: String,
    pub payload: Vec<u8>,
}

/// Every message of `stream`, in stream order.
pub async fn read_stream(url: &str, stream: &str) -> Vec<Stored> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut s = js.get_stream(stream).await.unwrap();
    let total = s.info().await.unwrap().state.messages as usize;
    if total == 0 {
        return Vec::new();
    }
    let consumer = s
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let mut batch = consumer
            .fetch()
            .max_messages(1000.min(total - out.len()))
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        let before = out.len();
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            let h = m.headers.clone().unwrap_or_default();
            out.push(Stored {
                subject: m.subject.to_string(),
                msg_id: h
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default(),
                encoding: h
                    .get("Fencegate-Encoding")
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default(),
                payload: m.payload.to_vec(),
            });
        }
        assert!(
            out.len() > before,
            "the stream stopped delivering at {} of {total}",
            out.len()
        );
    }
    out
}

/// Message count of `stream` (0 until it exists).
pub async fn stream_len(url: &str, stream: &str) -> u64 {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.unwrap().state.messages,
        Err(_) => 0,
    }
}

/// Record ids (as UUID text) of the `.punch` messages, with their counts.
pub fn punch_ids(stored: &[Stored]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in stored.iter().filter(|s| s.subject.ends_with(".punch")) {
        *m.entry(s.msg_id.clone()).or_default() += 1;
    }
    m
}

/// Polls `f` every 20 ms until it returns true or `within` passes.
pub async fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = fencegate::clock::tokio_now() + within;
    while fencegate::clock::tokio_now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// A synthetic punch record (id `n`), as the pipeline would log it.
pub fn punch_record(
    n: u32,
    tenant: &str,
    verdict: fencegate_schema::Verdict,
    status: fencegate_schema::AttendanceStatus,
) -> fencegate_schema::RecordMsg {
    use fencegate_schema::*;
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(b"SYNT");
    id[12..].copy_from_slice(&n.to_be_bytes());
    RecordMsg {
        record_id: id,
        tenant: tenant.into(),
        gateway_time_ms: crate::common::now_ms(),
        node: Some("synthetic".into()),
        body: RecordBodyMsg::Punch(PunchRecordMsg {
            punch_id: id,
            employee_id: format!("e-{n}"),
            device_id: "terminal-s".into(),
            kind: PunchKind::In,
            method: PunchMethod::Gps,
            device_time_ms: crate::common::now_ms(),
            position: Some(Position::new(31.2304, 121.4737, 8.0)),
            verdict,
            reason: Reason::None,
            fence_ids: vec!["hq-north".into()],
            nearest_fence_id: Some("hq-north".into()),
            distance_m: 0.0,
            offline: false,
            mock_location: false,
            status,
            anomaly_flags: 0,
            slot: None,
            merged_into: None,
        }),
    }
}

/// Appends `records` to the node's log before the node starts (the log is
/// opened and closed here), returning the committed end.
pub async fn preload(cfg: &Config, records: &[Vec<u8>]) -> fencegate::log::Lsn {
    let (log, _) = fencegate::log::LogHandle::open(cfg.log.clone()).unwrap();
    let now = crate::common::now_ms() as u64;
    for chunk in records.chunks(1024) {
        let mut b = fencegate::log::RecordBatch::new();
        for r in chunk {
            b.push(r, now);
        }
        log.append_batch(b).unwrap().await.unwrap();
    }
    let end = log.committed();
    tokio::task::spawn_blocking(move || log.close())
        .await
        .unwrap();
    end
}

/// Encodes a record message.
pub fn encode(r: &fencegate_schema::RecordMsg) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    r.encode_into(&mut fbb).to_vec()
}

/// `GET /readyz` of a node: (status code, body).
pub async fn readyz(admin: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap())
}
