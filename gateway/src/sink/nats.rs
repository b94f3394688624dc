//! The NATS JetStream sink.
//!
//! - At connect it creates the configured stream (file storage, the four
//!   subject patterns, the duplicate window) or verifies that an existing
//!   one captures our subjects with file storage, the configured replicas
//!   and a window at least as long as configured.
//! - Each record goes to `<prefix>.<tenant>.<punch|ping|event>`, with
//!   `Nats-Msg-Id` set to its record id; a punch awaiting a supervisor's
//!   approval is also published to `<prefix>.<tenant>.approval` with the
//!   id `<record id>:approval` (one stream de-duplicates by id across
//!   subjects, so the copy needs its own).
//! - Publishes are pipelined with core NATS publishes that name a reply
//!   subject in one wildcard subscription of ours (`<inbox>.<slot>`); the
//!   server sends each PubAck there. We do not use async-nats's JetStream
//!   `send_publish`: it costs a fresh inbox string, a oneshot channel, a
//!   semaphore permit, a timer and a boxed future per message, and holding
//!   more of its ack futures than its permit pool, unawaited, deadlocks.
//!   Here the window is a ring of `max_in_flight` slots: message `n` of an
//!   attempt uses slot `n % max_in_flight`, and is only sent once message
//!   `n - max_in_flight` is confirmed, so a slot names exactly one pending
//!   message and at most `max_in_flight` publishes await their PubAck.
//! - A batch counts as delivered only when every PubAck of it arrived and
//!   names our stream. Any failure (a timeout, an error PubAck, no stream)
//!   fails the attempt and drops the ack subscription: the retry uses a new
//!   inbox, so a late PubAck of the failed attempt can never confirm a
//!   message of the next one.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::context::{ContextBuilder, GetStreamErrorKind};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{ConnectOptions, HeaderMap, HeaderName, ServerAddr, StatusCode, Subject};
use bytes::Bytes;
use fencegate_schema::parse_record;
use futures::{FutureExt as _, StreamExt as _};
use tokio::time::{Instant, Sleep};

use super::config::{Encoding, NatsConfig};
use super::{Batch, Delivered, RecordKind, Sink, SinkError};
use crate::record_json;

/// Header naming the payload encoding (`flatbuffers` or `json`).
pub const ENCODING_HEADER: &str = "Fencegate-Encoding";
const ENCODING_NAME: HeaderName = HeaderName::from_static(ENCODING_HEADER);

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
    // The server reports an unset replica count as 0 in some versions;
    // it means one.
    let replicas = have.num_replicas.max(1);
    if replicas != cfg.replicas {
        p.push(format!(
            "it has {replicas} replica(s), the sink's replicas = {want}; a PubAck promises \
             what the stream's replicas give (docs/DOWNSTREAM.md), so change the stream \
             (`nats stream edit {name} --replicas {want}`: JetStream re-replicates it in place) \
             or set the sink's replicas = {replicas} if that is the intended durability",
            want = cfg.replicas,
            name = cfg.stream,
        ));
    }
    p
}

/// How many slots must be free before a publisher blocked on a full window
/// resumes: waking per PubAck would cost a task switch per record, and an
/// eighth of the window keeps the pipeline full.
const RESUME_DIVISOR: usize = 8;

struct Conn {
    client: async_nats::Client,
    js: jetstream::Context,
    /// Cleared when a publish finds no stream (the server lost it), so the
    /// next attempt creates or verifies it again.
    stream_ok: bool,
    /// The PubAck subscription; dropped after a failed attempt.
    acks: Option<AckInbox>,
}

/// One wildcard subscription that receives the PubAcks of our publishes.
struct AckInbox {
    sub: async_nats::Subscriber,
    /// `<inbox>.<slot>` for every slot of the window, built once per
    /// subscription so a publish only clones a shared subject.
    replies: Vec<Subject>,
    /// Length of `<inbox>.`: the slot number follows it.
    prefix_len: usize,
}

/// The in-flight window of one attempt: which ring slots await a PubAck.
struct Window {
    /// `pending[n % len]`: message `n` was sent and is not yet confirmed.
    pending: Vec<bool>,
    /// Messages sent in this attempt.
    sent: u64,
    /// The oldest unconfirmed message (`== sent` when all are confirmed).
    oldest: u64,
    /// PubAcks flagged duplicate.
    duplicates: u64,
    /// When a PubAck last arrived (or the attempt started); the timeout
    /// counts from here.
    progress_at: Instant,
    /// A PubAck arrived since `progress_at` was last set: the clock is read
    /// once per wait, not once per PubAck.
    acked: bool,
}

impl Window {
    fn touch(&mut self) {
        if std::mem::take(&mut self.acked) {
            self.progress_at = crate::clock::tokio_now();
        }
    }

    fn in_flight(&self) -> usize {
        (self.sent - self.oldest) as usize
    }
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
    /// Reused across attempts (one allocation per sink).
    pending: Vec<bool>,
    /// `{"stream":"<name>",`: how a PubAck from our stream starts, so the
    /// common PubAck is checked without a JSON parse.
    ack_prefix: Vec<u8>,
    /// The ack timer, created once and re-armed only when it fires (a
    /// timer per record would take the timer wheel's lock per record).
    timer: Option<Pin<Box<Sleep>>>,
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
        let window = cfg.max_in_flight.max(1);
        let ack_prefix = format!("{{\"stream\":\"{}\",", cfg.stream).into_bytes();
        Ok(Self {
            cfg,
            node: node.to_owned(),
            token,
            creds,
            conn: None,
            subjects: HashMap::new(),
            pending: vec![false; window],
            ack_prefix,
            timer: None,
        })
    }

    fn window(&self) -> usize {
        self.pending.len()
    }

    async fn connect(&self) -> Result<async_nats::Client, SinkError> {
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
        opts.connect(addrs).await.map_err(|e| SinkError::Connect {
            target: target.clone(),
            message: e.to_string(),
        })
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

    /// Connects, creates or verifies the stream, and subscribes the PubAck
    /// inbox, as far as that is not done yet; returns the client.
    async fn ready(&mut self) -> Result<async_nats::Client, SinkError> {
        if self.conn.is_none() {
            let client = self.connect().await?;
            let js = ContextBuilder::new()
                .timeout(self.cfg.timeout)
                .build(client.clone());
            // Keep the connection even if the stream check fails: async-nats
            // reconnects by itself, and the next attempt only re-checks.
            self.conn = Some(Conn {
                client,
                js,
                stream_ok: false,
                acks: None,
            });
        }
        let Some(conn) = &self.conn else {
            unreachable!("connected above")
        };
        if !conn.stream_ok {
            let js = conn.js.clone();
            self.ensure_stream(&js).await?;
        }
        let window = self.window();
        let Some(conn) = &mut self.conn else {
            unreachable!("connected above")
        };
        conn.stream_ok = true;
        if conn.acks.is_none() {
            let inbox = conn.client.new_inbox();
            let sub = conn
                .client
                .subscribe(format!("{inbox}.*"))
                .await
                .map_err(|e| SinkError::Connect {
                    target: self.cfg.urls.join(","),
                    message: format!("cannot subscribe the PubAck inbox: {e}"),
                })?;
            let replies = (0..window)
                .map(|i| Subject::from(format!("{inbox}.{i}")))
                .collect();
            conn.acks = Some(AckInbox {
                sub,
                replies,
                prefix_len: inbox.len() + 1,
            });
        }
        Ok(conn.client.clone())
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

    fn timeout_error(&self, what: &'static str) -> SinkError {
        SinkError::Timeout {
            what,
            after_ms: self.cfg.timeout.as_millis() as u64,
        }
    }

    /// Handles one message of the ack inbox.
    fn on_ack(
        &mut self,
        prefix_len: usize,
        win: &mut Window,
        m: &async_nats::Message,
    ) -> Result<(), SinkError> {
        let w = win.pending.len();
        let slot = m
            .subject
            .as_str()
            .get(prefix_len..)
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&s| s < w && win.pending[s]);
        let Some(slot) = slot else {
            // Nothing of this attempt waits on it; each attempt has its own
            // inbox, so this is not a PubAck we could owe a record to.
            tracing::debug!(subject = %m.subject, "ignoring an unexpected message in the PubAck inbox");
            return Ok(());
        };
        match m.status {
            None | Some(StatusCode::OK) => {}
            Some(StatusCode::NO_RESPONDERS) => {
                if let Some(c) = &mut self.conn {
                    c.stream_ok = false;
                }
                return Err(SinkError::Rejected(format!(
                    "no stream captures the subject (is stream {} gone?)",
                    self.cfg.stream
                )));
            }
            Some(s) => {
                return Err(SinkError::Rejected(format!(
                    "NATS answered the publish with status {s}: {}",
                    m.description.as_deref().unwrap_or("")
                )));
            }
        }
        match read_ack(&self.ack_prefix, &self.cfg.stream, &m.payload)? {
            Ack::Stored => {}
            Ack::Duplicate => win.duplicates += 1,
        }
        win.pending[slot] = false;
        win.acked = true;
        while win.oldest < win.sent && !win.pending[(win.oldest % w as u64) as usize] {
            win.oldest += 1;
        }
        Ok(())
    }

    /// Receives PubAcks until at most `target` messages are in flight. What
    /// already arrived is taken without a timer; only a real wait arms it.
    async fn settle(
        &mut self,
        acks: &mut AckInbox,
        win: &mut Window,
        target: usize,
    ) -> Result<(), SinkError> {
        while win.in_flight() > target {
            let next = match acks.sub.next().now_or_never() {
                Some(m) => m,
                None => {
                    win.touch();
                    let timer = self.timer.as_mut().expect("armed by the attempt");
                    tokio::select! {
                        biased;
                        m = acks.sub.next() => m,
                        () = timer.as_mut() => {
                            win.touch();
                            if expired(timer, win.progress_at, self.cfg.timeout) {
                                return Err(self.timeout_error("JetStream PubAck"));
                            }
                            continue;
                        }
                    }
                }
            };
            let Some(m) = next else {
                return Err(SinkError::Connect {
                    target: self.cfg.urls.join(","),
                    message: "the PubAck subscription closed".into(),
                });
            };
            self.on_ack(acks.prefix_len, win, &m)?;
        }
        Ok(())
    }

    /// Sends one message into the window, first waiting for room.
    async fn send(
        &mut self,
        client: &async_nats::Client,
        acks: &mut AckInbox,
        win: &mut Window,
        subject: Subject,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<(), SinkError> {
        let w = win.pending.len();
        if win.in_flight() >= w {
            self.settle(acks, win, w - (w / RESUME_DIVISOR).max(1))
                .await?;
        }
        let slot = (win.sent % w as u64) as usize;
        // async-nats takes an owned header map; this map and its values are
        // the per-record allocations left on the publish path.
        let mut h = HeaderMap::new();
        h.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        h.insert(ENCODING_NAME, self.cfg.encoding.header_value());
        let publish =
            client.publish_with_reply_and_headers(subject, acks.replies[slot].clone(), h, payload);
        tokio::pin!(publish);
        let timer = self.timer.as_mut().expect("armed by the attempt");
        loop {
            // The client's command queue is full only while it cannot
            // write (NATS down): bound that wait like a PubAck's.
            tokio::select! {
                biased;
                r = &mut publish => {
                    r.map_err(|e| match e.kind() {
                        async_nats::client::PublishErrorKind::Send => SinkError::Connect {
                            target: self.cfg.urls.join(","),
                            message: e.to_string(),
                        },
                        _ => SinkError::Rejected(e.to_string()),
                    })?;
                    break;
                }
                () = timer.as_mut() => {
                    win.touch();
                    if expired(timer, win.progress_at, self.cfg.timeout) {
                        return Err(self.timeout_error("NATS publish"));
                    }
                }
            }
        }
        win.pending[slot] = true;
        win.sent += 1;
        Ok(())
    }

    async fn publish_batch(
        &mut self,
        client: &async_nats::Client,
        acks: &mut AckInbox,
        win: &mut Window,
        batch: &Batch,
    ) -> Result<(), SinkError> {
        let mut id_buf = [0u8; APPROVAL_ID_LEN];
        for rec in batch.records() {
            let subjects = self.subjects(rec.tenant());
            let subject = match rec.kind() {
                RecordKind::Punch => subjects[0].clone(),
                RecordKind::Ping => subjects[1].clone(),
                RecordKind::Event => subjects[2].clone(),
            };
            let approval = rec.needs_approval().then(|| subjects[3].clone());
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
            write_msg_id(&rec.record_id(), &mut id_buf);
            let id = std::str::from_utf8(&id_buf).expect("hex digits and ASCII are UTF-8");
            match approval {
                None => {
                    self.send(client, acks, win, subject, &id[..UUID_LEN], payload)
                        .await?;
                }
                Some(approval) => {
                    self.send(client, acks, win, subject, &id[..UUID_LEN], payload.clone())
                        .await?;
                    self.send(client, acks, win, approval, id, payload).await?;
                }
            }
        }
        self.settle(acks, win, 0).await
    }

    async fn deliver_batch(&mut self, batch: &Batch) -> Result<Delivered, SinkError> {
        let client = self.ready().await?;
        let Some(mut acks) = self.conn.as_mut().and_then(|c| c.acks.take()) else {
            unreachable!("ready() subscribes the inbox")
        };
        let now = crate::clock::tokio_now();
        let deadline = now + self.cfg.timeout;
        match &mut self.timer {
            Some(t) => t.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.fill(false);
        let mut win = Window {
            pending,
            sent: 0,
            oldest: 0,
            duplicates: 0,
            progress_at: now,
            acked: false,
        };
        let r = self
            .publish_batch(&client, &mut acks, &mut win, batch)
            .await;
        self.pending = win.pending;
        r?;
        // Only a clean attempt keeps its inbox; after a failure `acks` is
        // dropped here (unsubscribed) and the retry gets a new one.
        if let Some(c) = &mut self.conn {
            c.acks = Some(acks);
        }
        Ok(Delivered {
            duplicates: win.duplicates,
        })
    }
}

/// Whether no PubAck arrived for `timeout` since `progress_at`; if not
/// yet, re-arms `timer` for that moment.
fn expired(timer: &mut Pin<Box<Sleep>>, progress_at: Instant, timeout: Duration) -> bool {
    let deadline = progress_at + timeout;
    if crate::clock::tokio_now() >= deadline {
        return true;
    }
    timer.as_mut().reset(deadline);
    false
}

/// Length of a record id as a UUID (`8-4-4-4-12` hex digits).
const UUID_LEN: usize = 36;
const APPROVAL_SUFFIX: &[u8] = b":approval";
/// Length of the approval copy's id, `<uuid>:approval`.
const APPROVAL_ID_LEN: usize = UUID_LEN + APPROVAL_SUFFIX.len();

/// Writes `<uuid>:approval` for `id` into `out` without allocating; the
/// first [`UUID_LEN`] bytes are the record's `Nats-Msg-Id` (the same text
/// as `record_json::uuid`).
fn write_msg_id(id: &[u8; 16], out: &mut [u8; APPROVAL_ID_LEN]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut o = 0;
    for (i, b) in id.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[usize::from(b >> 4)];
        out[o + 1] = HEX[usize::from(b & 0xf)];
        o += 2;
    }
    out[UUID_LEN..].copy_from_slice(APPROVAL_SUFFIX);
}

/// A PubAck that confirms the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    /// Stored in our stream.
    Stored,
    /// Our stream already had this `Nats-Msg-Id` (within its duplicate
    /// window); confirmed all the same.
    Duplicate,
}

/// Reads a PubAck payload. `prefix` is `{"stream":"<stream>",`, how
/// nats-server starts every successful PubAck of our stream; those are
/// checked without a JSON parse. Anything else (an error, another stream)
/// is parsed to say what it is.
fn read_ack(prefix: &[u8], stream: &str, payload: &[u8]) -> Result<Ack, SinkError> {
    if payload.starts_with(prefix) {
        // The server writes the `duplicate` field only when it is true
        // (omitempty); look at its value all the same.
        let dup = find(&payload[prefix.len()..], b"\"duplicate\"").is_some_and(|at| {
            let rest = &payload[prefix.len() + at + b"\"duplicate\"".len()..];
            let rest = rest.trim_ascii_start();
            rest.strip_prefix(b":")
                .is_some_and(|r| r.trim_ascii_start().starts_with(b"true"))
        });
        return Ok(if dup { Ack::Duplicate } else { Ack::Stored });
    }
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
        SinkError::Other(format!(
            "unreadable PubAck {:?}: {e}",
            String::from_utf8_lossy(payload)
        ))
    })?;
    if let Some(err) = v.get("error") {
        return Err(SinkError::Rejected(format!(
            "JetStream refused the message: {err}"
        )));
    }
    match v.get("stream").and_then(|s| s.as_str()) {
        Some(s) if s == stream => Ok(
            if v.get("duplicate").and_then(|d| d.as_bool()) == Some(true) {
                Ack::Duplicate
            } else {
                Ack::Stored
            },
        ),
        Some(s) => Err(SinkError::Config(format!(
            "the subject is captured by stream {s}, not the configured {stream}"
        ))),
        None => Err(SinkError::Other(format!(
            "unexpected PubAck {:?}",
            String::from_utf8_lossy(payload)
        ))),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Sink for NatsSink {
    async fn deliver(&mut self, batch: &Batch) -> Result<Delivered, SinkError> {
        self.deliver_batch(batch).await
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
        // An unset replica count (0) is one replica.
        let one = stream::Config {
            num_replicas: 1,
            ..ok.clone()
        };
        assert!(stream_mismatches(&cfg, &one).is_empty());
        let bad = stream::Config {
            subjects: vec!["fencegate.*.punch".into()],
            storage: StorageType::Memory,
            duplicate_window: Duration::from_secs(120),
            num_replicas: 3,
            ..ok
        };
        let p = stream_mismatches(&cfg, &bad).join("\n");
        for n in [
            "fencegate.*.ping",
            "fencegate.*.event",
            "fencegate.*.approval",
            "memory storage",
            "120 s",
            "it has 3 replica(s), the sink's replicas = 1",
            "nats stream edit FENCEGATE --replicas 1",
        ] {
            assert!(p.contains(n), "{n} missing in {p}");
        }
    }

    #[test]
    fn msg_ids_match_the_record_json_uuid() {
        let id = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 1, 2, 3, 4, 5, 0xfe, 0xff,
        ];
        let mut buf = [0u8; APPROVAL_ID_LEN];
        write_msg_id(&id, &mut buf);
        let s = std::str::from_utf8(&buf).unwrap();
        assert_eq!(&s[..UUID_LEN], record_json::uuid(&id));
        assert_eq!(s, format!("{}:approval", record_json::uuid(&id)));
    }

    #[test]
    fn pubacks_are_read_fast_and_errors_by_parse() {
        let p = br#"{"stream":"FENCEGATE","#;
        let r = |b: &[u8]| read_ack(p, "FENCEGATE", b);
        // nats-server 2.9 writes stored acks by hand, duplicates by json.Marshal.
        assert_eq!(
            r(br#"{"stream":"FENCEGATE", "seq": 12}"#).unwrap(),
            Ack::Stored
        );
        assert_eq!(
            r(br#"{"stream":"FENCEGATE","seq":12,"duplicate":true}"#).unwrap(),
            Ack::Duplicate
        );
        assert_eq!(
            r(br#"{"stream":"FENCEGATE","domain":"hub","seq":3,"duplicate": true}"#).unwrap(),
            Ack::Duplicate
        );
        assert_eq!(
            r(br#"{"stream":"FENCEGATE","seq":3,"duplicate":false}"#).unwrap(),
            Ack::Stored
        );
        assert!(matches!(
            r(br#"{"stream":"FENCEGATE2","seq":3}"#),
            Err(SinkError::Config(_))
        ));
        assert!(matches!(
            r(br#"{"error":{"code":503,"err_code":10077,"description":"resource limits exceeded"}}"#),
            Err(SinkError::Rejected(m)) if m.contains("resource limits")
        ));
        assert!(matches!(r(b"garbage"), Err(SinkError::Other(_))));
    }
}
