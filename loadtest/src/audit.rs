//! The audit: after the run, reconcile what clients saw acknowledged with
//! what the gateway stored in its log.
//!
//! - Every acknowledged punch (`Accepted`, `OutOfRange`, `RepeatMerged`)
//!   has exactly one record with its punch id, carrying the verdict it was
//!   acknowledged with; the record id is the one the ack carried, or for a
//!   repeat, `merged_into` is, and the record merged into exists.
//! - A refused punch (an ack without a record id: the frame was invalid)
//!   has no record. A punch rejected by policy (`Rejected` with a record
//!   id, e.g. an unknown Wi-Fi) is recorded like any other.
//! - No ping record of the run appears twice.
//!
//! `lost` counts acknowledged punches without their record; `duplicated`
//! counts extra records (a second record of a punch, any record of a
//! refused punch, a repeated ping); `mismatched` counts records whose
//! verdict or id differ from the ack.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use fencegate::log::{LogReader, Lsn};
use fencegate_schema::{PunchAckMsg, RecordBodyView, Verdict, parse_record};
use serde::Serialize;

/// What a client was told about one punch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The record id the ack carried.
    pub record_id: Option<[u8; 16]>,
    /// The verdict.
    pub verdict: Verdict,
}

/// Every ack the clients received, by punch id.
#[derive(Debug, Default)]
pub struct Book {
    acked: Mutex<HashMap<[u8; 16], Acked>>,
}

impl Book {
    /// Notes the ack of `punch_id`. A different ack for a punch already
    /// noted (a resend answered differently) is a contract breach: the
    /// first ack is kept for the audit and returned as the error.
    pub fn acked(&self, punch_id: [u8; 16], ack: &PunchAckMsg) -> Result<(), Acked> {
        let new = Acked {
            record_id: ack.record_id,
            verdict: ack.verdict,
        };
        let mut m = self.acked.lock().unwrap_or_else(|p| p.into_inner());
        match m.entry(punch_id) {
            std::collections::hash_map::Entry::Occupied(e) if *e.get() != new => Err(*e.get()),
            std::collections::hash_map::Entry::Occupied(_) => Ok(()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(new);
                Ok(())
            }
        }
    }

    /// Number of acknowledged punches.
    pub fn len(&self) -> usize {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no punch was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The audit's findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    /// What was read.
    pub source: String,
    /// Log entries read.
    pub records_scanned: u64,
    /// Acknowledged punches checked.
    pub acked_punches: u64,
    /// Of those, refused ones (must have no record).
    pub refused_punches: u64,
    /// Punch records of this run found.
    pub punch_records: u64,
    /// Ping records of this run found.
    pub ping_records: u64,
    /// Enter/exit events of this run found.
    pub fence_events: u64,
    /// Acknowledged punches whose record is missing.
    pub lost: u64,
    /// Records that should not exist (second copies, records of refused
    /// punches, repeated pings).
    pub duplicated: u64,
    /// Records whose verdict or id differ from the ack.
    pub mismatched: u64,
    /// Ping records older than an earlier record of the same device (not a
    /// contract breach: reported for diagnosis).
    pub pings_out_of_order: u64,
    /// The first few problems, for a human.
    pub examples: Vec<String>,
}

impl AuditReport {
    /// Whether the contract held.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.mismatched == 0
    }

    fn example(&mut self, s: String) {
        if self.examples.len() < 10 {
            self.examples.push(s);
        }
    }
}

/// The first LSN of the newest segment in a log folder: every record
/// appended from now on is at or after it. `Lsn(0)` for an empty folder.
pub fn log_start(dir: &Path) -> Lsn {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Lsn(0);
    };
    rd.filter_map(|e| {
        let name = e.ok()?.file_name();
        let name = name.to_str()?;
        name.strip_suffix(".seg")?.parse::<u64>().ok()
    })
    .max()
    .map_or(Lsn(0), Lsn)
}

/// One stored record, as far as the audit cares.
#[derive(Debug, Clone, Copy)]
pub enum Seen<'a> {
    /// A punch record.
    Punch {
        /// Its punch id.
        punch_id: [u8; 16],
        /// Its own record id.
        record_id: [u8; 16],
        /// Its verdict.
        verdict: Verdict,
        /// For repeats, the record merged into.
        merged_into: Option<[u8; 16]>,
    },
    /// A ping record.
    Ping {
        /// The device.
        device: &'a str,
        /// The fix time.
        time_ms: i64,
    },
    /// An enter/exit event.
    Event {
        /// The device.
        device: &'a str,
    },
    /// An HR record (approval decision, make-up, leave, archive): no
    /// device wrote it, so the audit only counts it as scanned.
    Other,
}

impl<'a> Seen<'a> {
    /// The audit's view of a verified record.
    pub fn of(rec: &fencegate_schema::RecordView<'a>) -> Self {
        match rec.body() {
            RecordBodyView::Punch(p) => Seen::Punch {
                punch_id: p.punch_id().0,
                record_id: rec.record_id(),
                verdict: p.verdict(),
                merged_into: p.merged_into().map(|u| u.0),
            },
            RecordBodyView::Ping(p) => Seen::Ping {
                device: p.device_id(),
                time_ms: p.time_ms(),
            },
            RecordBodyView::FenceEvent(e) => Seen::Event {
                device: e.device_id(),
            },
            RecordBodyView::Hr(_) | RecordBodyView::DayResult(_) => Seen::Other,
        }
    }
}

/// Reconciles the book with records fed one by one, from any source.
#[derive(Debug)]
pub struct Reconciler<'b> {
    acked: &'b HashMap<[u8; 16], Acked>,
    /// Whether a repeat has its own record here (the log: yes; a sink's
    /// downstream: no, repeats are not forwarded as new records).
    repeats_stored: bool,
    punch_prefix: [u8; 4],
    device_prefix: String,
    copies: HashMap<[u8; 16], u32>,
    record_ids: HashSet<[u8; 16]>,
    last_ping: HashMap<Box<str>, i64>,
    r: AuditReport,
}

impl<'b> Reconciler<'b> {
    fn new(
        acked: &'b HashMap<[u8; 16], Acked>,
        source: String,
        punch_prefix: [u8; 4],
        device_prefix: &str,
        repeats_stored: bool,
    ) -> Self {
        Self {
            acked,
            repeats_stored,
            punch_prefix,
            device_prefix: device_prefix.to_owned(),
            copies: HashMap::with_capacity(acked.len()),
            record_ids: HashSet::with_capacity(acked.len()),
            last_ping: HashMap::new(),
            r: AuditReport {
                source,
                acked_punches: acked.len() as u64,
                ..AuditReport::default()
            },
        }
    }

    /// Takes one stored record.
    pub fn see(&mut self, seen: Seen<'_>) {
        let r = &mut self.r;
        r.records_scanned += 1;
        match seen {
            Seen::Punch {
                punch_id: pid,
                record_id,
                verdict,
                merged_into,
            } => {
                if pid[..4] == self.punch_prefix {
                    // Any punch of the run, acked or not, can be merged into.
                    self.record_ids.insert(record_id);
                }
                let Some(a) = self.acked.get(&pid) else {
                    return;
                };
                r.punch_records += 1;
                let n = self.copies.entry(pid).or_default();
                *n += 1;
                if *n > 1 {
                    return;
                }
                let ok = match (a.record_id, a.verdict) {
                    (None, _) => true, // refused: counted as duplicated at the end
                    (Some(_), Verdict::RepeatMerged) => {
                        verdict == Verdict::RepeatMerged && merged_into == a.record_id
                    }
                    (Some(id), v) => verdict == v && record_id == id,
                };
                if !ok {
                    r.mismatched += 1;
                    r.example(format!(
                        "punch {}: acked {:?} record {}, stored {verdict:?} record {} merged_into {}",
                        hex::encode(pid),
                        a.verdict,
                        a.record_id.map(hex::encode).unwrap_or_default(),
                        hex::encode(record_id),
                        merged_into.map(hex::encode).unwrap_or_default(),
                    ));
                }
            }
            Seen::Ping { device, time_ms: t } => {
                if !device.starts_with(&self.device_prefix) {
                    return;
                }
                r.ping_records += 1;
                match self.last_ping.get_mut(device) {
                    Some(last) if t == *last => {
                        r.duplicated += 1;
                        r.example(format!("ping of {device} at {t} stored twice"));
                    }
                    Some(last) if t < *last => r.pings_out_of_order += 1,
                    Some(last) => *last = t,
                    None => {
                        self.last_ping.insert(device.into(), t);
                    }
                }
            }
            Seen::Event { device } => {
                if device.starts_with(&self.device_prefix) {
                    r.fence_events += 1;
                }
            }
            Seen::Other => {}
        }
    }

    /// Whether every acknowledged punch that must have a record has one
    /// (a source that fills up over time can stop waiting).
    pub fn complete(&self) -> bool {
        self.acked
            .iter()
            .all(|(pid, a)| match (a.record_id, a.verdict) {
                (None, _) => true,
                (Some(target), Verdict::RepeatMerged) if !self.repeats_stored => {
                    self.record_ids.contains(&target)
                }
                _ => self.copies.contains_key(pid),
            })
    }

    /// The findings.
    pub fn finish(mut self) -> AuditReport {
        let r = &mut self.r;
        for (pid, a) in self.acked {
            let n = u64::from(self.copies.get(pid).copied().unwrap_or(0));
            if a.record_id.is_none() {
                r.refused_punches += 1;
                if n > 0 {
                    r.duplicated += n;
                    r.example(format!(
                        "punch {} was refused but left {n} record(s)",
                        hex::encode(pid)
                    ));
                }
                continue;
            }
            if a.verdict == Verdict::RepeatMerged && !self.repeats_stored {
                if n > 0 {
                    r.duplicated += n;
                    r.example(format!(
                        "repeat {} was forwarded as a record of its own",
                        hex::encode(pid)
                    ));
                }
            } else if n == 0 {
                r.lost += 1;
                r.example(format!(
                    "punch {} acked {:?} (record {}) has no record",
                    hex::encode(pid),
                    a.verdict,
                    a.record_id.map(hex::encode).unwrap_or_default()
                ));
            } else if n > 1 {
                r.duplicated += n - 1;
                r.example(format!("punch {} stored {n} times", hex::encode(pid)));
            }
            if a.verdict == Verdict::RepeatMerged {
                if let Some(target) = a.record_id {
                    if !self.record_ids.contains(&target) {
                        r.lost += 1;
                        r.example(format!(
                            "punch {} was merged into record {}, which is missing",
                            hex::encode(pid),
                            hex::encode(target)
                        ));
                    }
                }
            }
        }
        self.r
    }
}

/// Reconciles `book` with the log in `dir` from `from`. The run's punch
/// ids start with `punch_prefix`; its devices' ids with `device_prefix`.
pub fn audit_log(
    dir: &Path,
    from: Lsn,
    book: &Book,
    punch_prefix: [u8; 4],
    device_prefix: &str,
) -> anyhow::Result<AuditReport> {
    audit_logs(&[(dir, from)], book, punch_prefix, device_prefix)
}

/// Reconciles `book` with several nodes' logs at once (each from its own
/// position): every acknowledged punch must be in exactly one of them, a
/// repeat may be merged into a record another node logged, and a resend
/// answered by another node must have left no record there.
pub fn audit_logs(
    logs: &[(&Path, Lsn)],
    book: &Book,
    punch_prefix: [u8; 4],
    device_prefix: &str,
) -> anyhow::Result<AuditReport> {
    let acked = book.acked.lock().unwrap_or_else(|p| p.into_inner());
    let source = logs
        .iter()
        .map(|(dir, from)| format!("log {} from LSN {}", dir.display(), from.0))
        .collect::<Vec<_>>()
        .join(", ");
    let mut rec = Reconciler::new(&acked, source, punch_prefix, device_prefix, true);
    for (dir, from) in logs {
        let mut reader = LogReader::open_dir(dir, *from, Duration::from_millis(10))
            .map_err(|e| anyhow::anyhow!("audit: cannot read the log {}: {e}", dir.display()))?;
        while let Some(e) = reader
            .next_entry()
            .map_err(|e| anyhow::anyhow!("audit: reading {}: {e}", dir.display()))?
        {
            match parse_record(e.payload) {
                Ok(r) => rec.see(Seen::of(&r)),
                Err(_) => rec.r.records_scanned += 1,
            }
        }
    }
    Ok(rec.finish())
}

/// Where the JetStream audit reads (`--nats-url` and friends).
#[derive(Debug, Clone)]
pub struct JetStreamSpec {
    /// Server URL(s).
    pub url: String,
    /// The stream the gateway's NATS sink writes.
    pub stream: String,
    /// The sink's subject prefix.
    pub subject_prefix: String,
    /// The tenant.
    pub tenant: String,
    /// Longest wait for the sink to deliver every acknowledged punch.
    pub wait: Duration,
}

async fn stream(spec: &JetStreamSpec) -> anyhow::Result<async_nats::jetstream::stream::Stream> {
    let client = async_nats::connect(spec.url.as_str())
        .await
        .with_context(|| format!("--nats-url {}: cannot connect", spec.url))?;
    let js = async_nats::jetstream::new(client);
    js.get_stream(&spec.stream).await.with_context(|| {
        format!(
            "--nats-stream {}: no such stream on {} (the gateway's [[sinks]] stream; its sink creates it with its first delivery)",
            spec.stream, spec.url
        )
    })
}

/// Creates the stream the way the gateway's NATS sink would (its four
/// subject patterns, file storage, a 5-minute duplicate window) when it
/// does not exist yet. For the built-in gateway only: its sink creates the
/// stream with its first delivery, and the audit needs it before.
pub async fn ensure_stream(spec: &JetStreamSpec) -> anyhow::Result<()> {
    if stream(spec).await.is_ok() {
        return Ok(());
    }
    let client = async_nats::connect(spec.url.as_str())
        .await
        .with_context(|| format!("--nats-url {}: cannot connect", spec.url))?;
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: spec.stream.clone(),
        subjects: fencegate::sink::nats::subject_patterns(&spec.subject_prefix).to_vec(),
        storage: async_nats::jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(300),
        ..Default::default()
    })
    .await
    .with_context(|| format!("--nats-stream {}: cannot create it", spec.stream))?;
    Ok(())
}

/// The stream's next sequence number: every message of a run that starts
/// now has at least this sequence. Called before the run, so an
/// unreachable server fails the run at once rather than after it.
pub async fn jetstream_position(spec: &JetStreamSpec) -> anyhow::Result<u64> {
    let mut s = stream(spec).await?;
    let info = s
        .info()
        .await
        .with_context(|| format!("--nats-stream {}: cannot read its state", spec.stream))?;
    Ok(info.state.last_sequence + 1)
}

/// Reconciles `book` with what reached the JetStream stream from sequence
/// `from_seq` on: the tenant's punch, ping and event subjects. Waits up to
/// `spec.wait` for the sink to catch up (a downstream lags the log by
/// design); whatever is still missing then is lost.
pub async fn audit_jetstream(
    spec: &JetStreamSpec,
    from_seq: u64,
    book: &Book,
    punch_prefix: [u8; 4],
    device_prefix: &str,
) -> anyhow::Result<AuditReport> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    use futures::StreamExt as _;

    let stream = stream(spec).await?;
    let tenant_subjects = format!("{}.{}.", spec.subject_prefix, spec.tenant);
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from_seq,
            },
            ack_policy: AckPolicy::None,
            // No filter: a stream's subjects may be any superset of the
            // sink's patterns. Other tenants and approval copies are
            // skipped below; reading starts at the run, so this is bounded.
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .context("audit: cannot create a JetStream consumer")?;
    let acked = book.acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut rec = Reconciler::new(
        &acked,
        format!(
            "JetStream stream {} on {} ({}.{}.*) from sequence {from_seq}",
            spec.stream, spec.url, spec.subject_prefix, spec.tenant
        ),
        punch_prefix,
        device_prefix,
        false,
    );
    let deadline = crate::clock::tokio_now() + spec.wait;
    let mut bad_ids = 0u64;
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1_000)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .context("audit: JetStream fetch failed")?;
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("audit: JetStream message: {e}"))?;
            got += 1;
            match m.subject.strip_prefix(tenant_subjects.as_str()) {
                Some("punch" | "ping" | "event") => {}
                // Approval copies (`<id>:approval`) duplicate a punch on
                // purpose; other subjects are not the gateway's.
                _ => continue,
            }
            let h = m.headers.clone().unwrap_or_default();
            let msg_id = h
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().replace('-', ""))
                .unwrap_or_default();
            let encoding = h
                .get("Fencegate-Encoding")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_else(|| "flatbuffers".into());
            let json: serde_json::Value;
            let seen = if encoding == "json" {
                json = serde_json::from_slice(&m.payload).unwrap_or_default();
                seen_json(&json)
            } else {
                parse_record(&m.payload).ok().map(|r| Seen::of(&r))
            };
            let Some(seen) = seen else {
                rec.r.records_scanned += 1;
                continue;
            };
            if let Seen::Punch { record_id, .. } = seen {
                if msg_id != hex::encode(record_id) {
                    bad_ids += 1;
                }
            }
            rec.see(seen);
        }
        if got == 0 {
            if rec.complete() || crate::clock::tokio_now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut r = rec.finish();
    if bad_ids > 0 {
        r.mismatched += bad_ids;
        r.example(format!(
            "{bad_ids} punch message(s) whose Nats-Msg-Id is not their record id"
        ));
    }
    Ok(r)
}

fn uuid_bytes(v: &serde_json::Value) -> Option<[u8; 16]> {
    let s = v.as_str()?.replace('-', "");
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A record in the JSON encoding (`fencegate log tail --json` fields).
fn seen_json(v: &serde_json::Value) -> Option<Seen<'_>> {
    match v.get("type")?.as_str()? {
        "punch" => Some(Seen::Punch {
            punch_id: uuid_bytes(v.get("punch_id")?)?,
            record_id: uuid_bytes(v.get("record_id")?)?,
            verdict: match v.get("verdict")?.as_str()? {
                "accepted" => Verdict::Accepted,
                "repeat_merged" => Verdict::RepeatMerged,
                "out_of_range" => Verdict::OutOfRange,
                _ => Verdict::Rejected,
            },
            merged_into: v.get("merged_into").and_then(uuid_bytes),
        }),
        "ping" => Some(Seen::Ping {
            device: v.get("device_id")?.as_str()?,
            time_ms: v.get("time_ms")?.as_i64()?,
        }),
        "event" => Some(Seen::Event {
            device: v.get("device_id")?.as_str()?,
        }),
        _ => None,
    }
}
