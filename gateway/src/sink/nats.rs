//! The NATS JetStream sink.
//!
//! - At connect it creates the configured stream (file storage, the four
//!   subject patterns, the duplicate window) or verifies that an existing
//!   one captures our subjects with file storage and a window at least as
//!   long as configured.
//! - Each record goes to `<prefix>.<tenant>.<punch|ping|event>`, with
//!   `Nats-Msg-Id` set to its record id; a punch awaiting a supervisor's
//!   approval is also published to `<prefix>.<tenant>.approval` with the
//!   id `<record id>:approval` (one stream de-duplicates by id across
//!   subjects, so the copy needs its own).
//! - Publishes are pipelined: up to `max_in_flight` are sent before the
//!   oldest PubAck is awaited. async-nats gives each unawaited ack future a
//!   permit from a fixed pool and blocks `publish` when the pool is empty,
//!   so holding more futures than the pool, unawaited, deadlocks. The
//!   context is built with a pool of twice the window, and the window is
//!   never exceeded: the oldest future is awaited before a new publish
//!   would pass it. The extra half absorbs futures dropped by a failed
//!   attempt (they keep their permit until their own timeout).
//! - A batch counts as delivered only when every PubAck of it arrived and
//!   names our stream.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr as _;
use std::time::Duration;

use async_nats::jetstream::context::{
    ContextBuilder, GetStreamErrorKind, PublishAckFuture, PublishErrorKind,
};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{ConnectOptions, HeaderMap, HeaderName, HeaderValue, ServerAddr, Subject};
use bytes::Bytes;
use fencegate_schema::parse_record;

use super::config::{Encoding, NatsConfig};
use super::{Batch, Delivered, RecordKind, Sink, SinkError};
use crate::record_json;

/// Header naming the payload encoding (`flatbuffers` or `json`).
pub const ENCODING_HEADER: &str = "Fencegate-Encoding";

/// The four subject patterns a stream must capture for `prefix`.
pub fn subject_patterns(prefix: &str) -> [String; 4] {
    ["punch", "ping", "event", "approval"].map(|k| format!("{prefix}.*.{k}"))
}

/// Whether the stream subject `filter` (which may hold `*` and `>`)
/// matches every subject the pattern `pattern` (which may hold `*`) can
/// produce.
pub fn covers(filter: &str, pattern: &str) -> bool {
    let mut f = filter.split('.');
    let mut p = pattern.split('.');
    loop {
        match (f.next(), p.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b && b != "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// What is wrong with an existing stream's configuration for `cfg`; empty
/// when it fits.
pub fn stream_mismatches(cfg: &NatsConfig, have: &stream::Config) -> Vec<String> {
    let mut p = Vec::new();
    for want in subject_patterns(&cfg.subject_prefix) {
        if !have.subjects.iter().any(|s| covers(s, &want)) {
            p.push(format!(
                "it does not capture {want} (its subjects: {:?})",
                have.subjects
            ));
        }
    }
    if have.storage != StorageType::File {
        p.push(
            "it uses memory storage; records must survive a NATS restart (use file storage)".into(),
        );
    }
    if have.duplicate_window < cfg.duplicate_window {
        p.push(format!(
            "its duplicate_window is {} s, below the configured {} s",
            have.duplicate_window.as_secs(),
            cfg.duplicate_window.as_secs()
        ));
    }
    p
}

struct Conn {
    js: jetstream::Context,
    /// Cleared when a publish finds no stream (the server lost it), so the
    /// next attempt creates or verifies it again.
    stream_ok: bool,
}

/// Publishes batches to a JetStream stream; see the module docs.
pub struct NatsSink {
    cfg: NatsConfig,
    node: String,
    token: Option<String>,
    creds: Option<String>,
    conn: Option<Conn>,
    /// `[punch, ping, event, approval]` subjects per tenant (tenants are
    /// few and come from the config).
    subjects: HashMap<Box<str>, [Subject; 4]>,
    inflight: VecDeque<PublishAckFuture>,
    encoding_name: HeaderName,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("urls", &self.cfg.urls)
            .field("stream", &self.cfg.stream)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// A sink for `cfg`; reads the token or credentials now so a missing
    /// secret stops the node at start. Connects on first delivery.
    pub fn new(cfg: NatsConfig, node: &str) -> anyhow::Result<Self> {
        let token = match &cfg.token_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                anyhow::anyhow!("token_env: environment variable {var} is not set")
            })?),
            None => None,
        };
        let creds = match &cfg.credentials_file {
            Some(f) => Some(std::fs::read_to_string(f).map_err(|e| {
                anyhow::anyhow!("credentials_file {}: cannot read it: {e}", f.display())
            })?),
            None => None,
        };
        let window = cfg.max_in_flight;
        Ok(Self {
            cfg,
            node: node.to_owned(),
            token,
            creds,
            conn: None,
            subjects: HashMap::new(),
            inflight: VecDeque::with_capacity(window),
            encoding_name: HeaderName::from_str(ENCODING_HEADER).expect("a valid header name"),
        })
    }

    async fn connect(&self) -> Result<jetstream::Context, SinkError> {
        let target = self.cfg.urls.join(",");
        let addrs: Vec<ServerAddr> = self
            .cfg
            .urls
            .iter()
            .filter_map(|u| u.parse().ok())
            .collect();
        let mut opts = ConnectOptions::new()
            .name(format!("fencegate {}", self.node))
            .connection_timeout(self.cfg.timeout)
            .request_timeout(Some(self.cfg.timeout))
            // Reconnect quickly: records wait in the log meanwhile, and a
            // fast return shortens the catch-up.
            .reconnect_delay_callback(|n| {
                Duration::from_millis((n as u64).saturating_mul(100).min(2_000))
            });
        if let Some(t) = &self.token {
            opts = opts.token(t.clone());
        }
        if let Some(c) = &self.creds {
            opts = opts.credentials(c).map_err(|e| SinkError::Connect {
                target: target.clone(),
                message: format!("credentials_file: {e}"),
            })?;
        }
        let client = opts.connect(addrs).await.map_err(|e| SinkError::Connect {
            target: target.clone(),
            message: e.to_string(),
        })?;
        Ok(ContextBuilder::new()
            .timeout(self.cfg.timeout)
            .ack_timeout(self.cfg.timeout)
            .max_ack_inflight(self.cfg.max_in_flight * 2)
            .backpressure_on_inflight(true)
            .build(client))
    }

    /// Creates the stream or verifies the existing one.
    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<(), SinkError> {
        let name = &self.cfg.stream;
        let have = match js.get_stream(name).await {
            Ok(s) => s.cached_info().config.clone(),
            Err(e) => {
                let missing = matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND);
                if !missing {
                    return Err(SinkError::Connect {
                        target: self.cfg.urls.join(","),
                        message: format!("stream info for {name}: {e}"),
                    });
                }
                if !self.cfg.create_stream {
                    return Err(SinkError::Config(format!(
                        "stream {name} does not exist and create_stream = false; create it (see ops/nats/stream.json) or allow the gateway to"
                    )));
                }
                let want = stream::Config {
                    name: name.clone(),
                    description: Some(
                        "fencegate verified records (punches, pings, fence events, approvals)"
                            .into(),
                    ),
                    subjects: subject_patterns(&self.cfg.subject_prefix).into(),
                    storage: StorageType::File,
                    duplicate_window: self.cfg.duplicate_window,
                    num_replicas: self.cfg.replicas,
                    ..Default::default()
                };
                let s = js.create_stream(want).await.map_err(|e| {
                    SinkError::Rejected(format!("cannot create stream {name}: {e}"))
                })?;
                tracing::info!(stream = %name, "created JetStream stream");
                s.cached_info().config.clone()
            }
        };
        let p = stream_mismatches(&self.cfg, &have);
        if p.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Config(format!(
                "stream {name}: {}; fix the stream (ops/nats/stream.json) or the sink's settings",
                p.join("; ")
            )))
        }
    }

    async fn ready(&mut self) -> Result<jetstream::Context, SinkError> {
        if let Some(c) = &self.conn {
            if c.stream_ok {
                return Ok(c.js.clone());
            }
        }
        let js = match &self.conn {
            Some(c) => c.js.clone(),
            None => self.connect().await?,
        };
        // Keep the connection even if the stream check fails: async-nats
        // reconnects by itself, and the next attempt only re-checks.
        self.conn = Some(Conn {
            js: js.clone(),
            stream_ok: false,
        });
        self.ensure_stream(&js).await?;
        if let Some(c) = &mut self.conn {
            c.stream_ok = true;
        }
        Ok(js)
    }

    fn subjects(&mut self, tenant: &str) -> &[Subject; 4] {
        if !self.subjects.contains_key(tenant) {
            let p = &self.cfg.subject_prefix;
            let s = ["punch", "ping", "event", "approval"]
                .map(|k| Subject::from(format!("{p}.{tenant}.{k}")));
            self.subjects.insert(tenant.into(), s);
        }
        &self.subjects[tenant]
    }

    fn publish_error(&mut self, e: &async_nats::jetstream::context::PublishError) -> SinkError {
        match e.kind() {
            PublishErrorKind::TimedOut => SinkError::Timeout {
                what: "JetStream PubAck",
                after_ms: self.cfg.timeout.as_millis() as u64,
            },
            PublishErrorKind::StreamNotFound => {
                if let Some(c) = &mut self.conn {
                    c.stream_ok = false;
                }
                SinkError::Rejected(format!(
                    "no stream captures the subject (is stream {} gone?): {e}",
                    self.cfg.stream
                ))
            }
            PublishErrorKind::BrokenPipe => SinkError::Connect {
                target: self.cfg.urls.join(","),
                message: e.to_string(),
            },
            _ => SinkError::Rejected(e.to_string()),
        }
    }

    fn check_ack(&self, ack: &PublishAck, dup: &mut u64) -> Result<(), SinkError> {
        if ack.stream != self.cfg.stream {
            return Err(SinkError::Config(format!(
                "the subject is captured by stream {}, not the configured {}",
                ack.stream, self.cfg.stream
            )));
        }
        if ack.duplicate {
            *dup += 1;
        }
        Ok(())
    }

    async fn await_oldest(&mut self, dup: &mut u64) -> Result<(), SinkError> {
        if let Some(f) = self.inflight.pop_front() {
            match f.await {
                Ok(ack) => self.check_ack(&ack, dup)?,
                Err(e) => return Err(self.publish_error(&e)),
            }
        }
        Ok(())
    }

    async fn publish(
        &mut self,
        js: &jetstream::Context,
        subject: Subject,
        payload: Bytes,
        msg_id: String,
        dup: &mut u64,
    ) -> Result<(), SinkError> {
        // Never hold more unawaited ack futures than the window.
        if self.inflight.len() >= self.cfg.max_in_flight {
            self.await_oldest(dup).await?;
        }
        let mut h = HeaderMap::new();
        h.insert(
            async_nats::header::NATS_MESSAGE_ID,
            HeaderValue::from(msg_id),
        );
        h.insert(self.encoding_name.clone(), self.cfg.encoding.header_value());
        let msg = PublishMessage::build().payload(payload).headers(h);
        match js.send_publish(subject, msg).await {
            Ok(f) => {
                self.inflight.push_back(f);
                Ok(())
            }
            Err(e) => Err(self.publish_error(&e)),
        }
    }

    async fn deliver_batch(&mut self, batch: &Batch) -> Result<Delivered, SinkError> {
        let js = self.ready().await?;
        self.inflight.clear();
        let mut dup = 0;
        for rec in batch.records() {
            let [punch, ping, event, approval] = self.subjects(rec.tenant()).clone();
            let subject = match rec.kind() {
                RecordKind::Punch => punch,
                RecordKind::Ping => ping,
                RecordKind::Event => event,
            };
            let payload = match self.cfg.encoding {
                Encoding::FlatBuffers => rec.payload_bytes(),
                Encoding::Json => {
                    let view = parse_record(rec.payload())
                        .map_err(|r| SinkError::Other(format!("record re-parse failed: {r:?}")))?;
                    let v = record_json::record_json(&view);
                    Bytes::from(
                        serde_json::to_vec(&v).map_err(|e| SinkError::Other(e.to_string()))?,
                    )
                }
            };
            let id = record_json::uuid(&rec.record_id());
            if rec.needs_approval() {
                let approval_id = format!("{id}:approval");
                self.publish(&js, subject, payload.clone(), id, &mut dup)
                    .await?;
                self.publish(&js, approval, payload, approval_id, &mut dup)
                    .await?;
            } else {
                self.publish(&js, subject, payload, id, &mut dup).await?;
            }
        }
        while !self.inflight.is_empty() {
            self.await_oldest(&mut dup).await?;
        }
        Ok(Delivered { duplicates: dup })
    }
}

impl Sink for NatsSink {
    async fn deliver(&mut self, batch: &Batch) -> Result<Delivered, SinkError> {
        let r = self.deliver_batch(batch).await;
        if r.is_err() {
            // Futures of a failed attempt are dropped: async-nats's acker
            // releases their permits when they resolve or time out.
            self.inflight.clear();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_coverage() {
        assert!(covers("fencegate.*.punch", "fencegate.*.punch"));
        assert!(covers("fencegate.>", "fencegate.*.punch"));
        assert!(covers("fencegate.*.*", "fencegate.*.ping"));
        assert!(covers(">", "fencegate.*.ping"));
        assert!(!covers("fencegate.acme.punch", "fencegate.*.punch"));
        assert!(!covers("fencegate.*", "fencegate.*.punch"));
        assert!(!covers("fencegate.*.punch.x", "fencegate.*.punch"));
        assert!(!covers("other.>", "fencegate.*.punch"));
    }

    #[test]
    fn mismatches_are_all_listed() {
        let cfg = NatsConfig::new("nats://127.0.0.1:4222");
        let ok = stream::Config {
            name: "FENCEGATE".into(),
            subjects: vec!["fencegate.>".into()],
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        };
        assert!(stream_mismatches(&cfg, &ok).is_empty());
        let bad = stream::Config {
            subjects: vec!["fencegate.*.punch".into()],
            storage: StorageType::Memory,
            duplicate_window: Duration::from_secs(120),
            ..ok
        };
        let p = stream_mismatches(&cfg, &bad).join("\n");
        for n in [
            "fencegate.*.ping",
            "fencegate.*.event",
            "fencegate.*.approval",
            "memory storage",
            "120 s",
        ] {
            assert!(p.contains(n), "{n} missing in {p}");
        }
    }
}
