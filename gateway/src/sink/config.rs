//! `[[sinks]]`: where verified records go. Parsed raw (serde,
//! `deny_unknown_fields`), then compiled into [`SinkConfig`]s; compiling
//! reports every problem at once, together with the rest of the config.
//!
//! One flat table per sink, with a `type`; settings that do not apply to
//! the type are refused by name rather than silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ForwardSettings;
use crate::log::CursorStart;

/// One `[[sinks]]` block, as written.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    /// Name of the sink: used in metrics (`sink` label), logs, `/readyz`,
    /// and its log cursor `<log dir>/cursors/sink-<name>`. 1 to 48
    /// characters of a-z, 0-9, `-` and `_`. Renaming a sink starts it over
    /// from `start`.
    pub name: String,
    /// `"nats"` (JetStream), `"webhook"` (batched HTTP POSTs) or `"jsonl"`
    /// (JSON lines to a file or stdout).
    #[serde(rename = "type")]
    pub kind: String,
    /// Where a new sink starts reading the log: `"oldest"` (everything
    /// still stored) or `"latest"` (only records from now on). Ignored once
    /// the sink has a cursor.
    ///
    /// `"oldest"` unless set.
    pub start: Option<String>,
    /// Most records in one batch (one POST for a webhook; one window of
    /// pipelined publishes and one cursor step for NATS).
    ///
    /// nats `2048`, webhook `500`, jsonl `1024` unless set.
    pub max_batch: Option<usize>,
    /// Milliseconds a batch waits for more records after its first before
    /// it is sent anyway ("push to the ERP every 5 minutes" is `300000`).
    ///
    /// webhook `1000`, nats and jsonl `0` (send at once) unless set.
    pub batch_interval_ms: Option<u64>,
    /// Milliseconds to wait for a JetStream PubAck or an HTTP response
    /// before the batch is retried.
    ///
    /// nats `5000`, webhook `10000` unless set.
    pub timeout_ms: Option<u64>,
    /// First retry delay in milliseconds; it doubles per failure (with
    /// jitter) up to `retry_max_ms`.
    ///
    /// `100` unless set.
    pub retry_initial_ms: Option<u64>,
    /// Longest retry delay in milliseconds. Also the longest a recovered
    /// downstream waits before the sink notices, which bounds catch-up.
    ///
    /// `5000` unless set.
    pub retry_max_ms: Option<u64>,
    /// Longest time in milliseconds between cursor saves while records
    /// flow. After a crash at most this much is delivered again (and
    /// dropped downstream as duplicates).
    ///
    /// `250` unless set.
    pub checkpoint_interval_ms: Option<u64>,
    /// nats: publishes awaiting their PubAck at once (the pipelining
    /// window). async-nats stalls when more acks are pending than its limit
    /// (the context is built with twice this), so this is a hard bound.
    ///
    /// `1024` unless set.
    pub max_in_flight: Option<usize>,
    /// nats: server URL(s), comma-separated for a cluster
    /// (`"nats://n1:4222,nats://n2:4222"`). webhook: the `http://` or
    /// `https://` URL records are POSTed to.
    ///
    /// nats `"nats://127.0.0.1:4222"` unless set; required for webhook.
    pub url: Option<String>,
    /// nats: the JetStream stream, created at start if missing and
    /// verified if present (subjects, file storage, duplicate window).
    ///
    /// `"FENCEGATE"` unless set.
    pub stream: Option<String>,
    /// nats: first subject token(s); records go to
    /// `<prefix>.<tenant>.punch|ping|event|approval`.
    ///
    /// `"fencegate"` unless set.
    pub subject_prefix: Option<String>,
    /// nats: the stream's duplicate window in seconds, within which
    /// JetStream drops a message whose `Nats-Msg-Id` it has seen. At least
    /// 300: resends across nodes and redeliveries after a crash fall in it.
    ///
    /// `300` unless set.
    pub duplicate_window_s: Option<u64>,
    /// nats: replicas when the stream is created, and what an existing
    /// stream must have (3 in a 3-node cluster; see `ops/nats/`).
    ///
    /// `1` unless set.
    pub replicas: Option<usize>,
    /// nats: create the stream when it is missing. `false` only verifies
    /// (for streams managed with `ops/nats/stream.json`).
    ///
    /// `true` unless set.
    pub create_stream: Option<bool>,
    /// nats: `"flatbuffers"` (the schema's `Record`, identifier `FGK1`) or
    /// `"json"` (the same fields as `fencegate log tail --json`). The
    /// `Fencegate-Encoding` header says which.
    ///
    /// `"flatbuffers"` unless set.
    pub encoding: Option<String>,
    /// nats: a `.creds` file (JWT and NKey seed) to authenticate with.
    pub credentials_file: Option<PathBuf>,
    /// nats: environment variable holding an auth token.
    pub token_env: Option<String>,
    /// webhook: environment variable holding the HMAC-SHA256 signing secret
    /// (at least 16 bytes). Set exactly one of `secret_env`, `secret_file`.
    pub secret_env: Option<String>,
    /// webhook: file holding the signing secret (first line).
    pub secret_file: Option<PathBuf>,
    /// jsonl: file to append JSON lines to, or `"-"` for stdout.
    pub path: Option<PathBuf>,
    /// jsonl: `fdatasync` the file before a batch counts as delivered.
    ///
    /// `false` unless set.
    pub fsync: Option<bool>,
}

/// A compiled sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// The sink's name.
    pub name: String,
    /// Where a new cursor starts.
    pub start: CursorStart,
    /// Batching, retries and checkpoints.
    pub forward: ForwardSettings,
    /// The downstream.
    pub target: SinkTarget,
}

impl SinkConfig {
    /// The name of the sink's log cursor.
    pub fn cursor_name(&self) -> String {
        format!("{}{}", super::CURSOR_PREFIX, self.name)
    }
}

/// The downstream of a sink and its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkTarget {
    /// NATS JetStream.
    Nats(NatsConfig),
    /// Batched HTTP POSTs.
    Webhook(WebhookConfig),
    /// JSON lines.
    Jsonl(JsonlConfig),
}

impl SinkTarget {
    /// `nats`, `webhook` or `jsonl`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Nats(_) => "nats",
            Self::Webhook(_) => "webhook",
            Self::Jsonl(_) => "jsonl",
        }
    }
}

/// How records are encoded for NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The FlatBuffers `Record` exactly as logged.
    FlatBuffers,
    /// The JSON form (`record_json`).
    Json,
}

impl Encoding {
    /// The `Fencegate-Encoding` header value.
    pub fn header_value(self) -> &'static str {
        match self {
            Self::FlatBuffers => "flatbuffers",
            Self::Json => "json",
        }
    }
}

/// A JetStream sink.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsConfig {
    /// Server URLs.
    pub urls: Vec<String>,
    /// Stream name.
    pub stream: String,
    /// Subject prefix.
    pub subject_prefix: String,
    /// Duplicate window.
    pub duplicate_window: Duration,
    /// Replicas for a created stream.
    pub replicas: usize,
    /// Create the stream when missing.
    pub create_stream: bool,
    /// Record encoding.
    pub encoding: Encoding,
    /// Publishes awaiting their PubAck at once.
    pub max_in_flight: usize,
    /// PubAck and API timeout.
    pub timeout: Duration,
    /// `.creds` file.
    pub credentials_file: Option<PathBuf>,
    /// Environment variable with a token.
    pub token_env: Option<String>,
}

impl NatsConfig {
    /// Defaults for a server at `url` (tests and benches).
    pub fn new(url: &str) -> Self {
        Self {
            urls: vec![url.to_owned()],
            stream: "FENCEGATE".into(),
            subject_prefix: "fencegate".into(),
            duplicate_window: Duration::from_secs(300),
            replicas: 1,
            create_stream: true,
            encoding: Encoding::FlatBuffers,
            max_in_flight: 1024,
            timeout: Duration::from_secs(5),
            credentials_file: None,
            token_env: None,
        }
    }
}

/// Where a webhook's signing secret comes from (read at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// An environment variable.
    Env(String),
    /// A file's first line.
    File(PathBuf),
    /// The secret itself (tests and embedding; never from TOML).
    Inline(String),
}

/// A webhook sink.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// URL to POST to.
    pub url: String,
    /// Signing secret.
    pub secret: Secret,
    /// Response timeout.
    pub timeout: Duration,
}

/// A JSON-lines sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlConfig {
    /// File to append to; `None` is stdout.
    pub path: Option<PathBuf>,
    /// `fdatasync` each batch.
    pub fsync: bool,
}

/// Whether `name` is a usable sink name.
pub fn valid_sink_name(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn valid_stream_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_subject_prefix(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Compiles every `[[sinks]]` block, pushing one line per problem onto
/// `problems` (named `sinks[i] ('name'): ...`). Returns the sinks that
/// compiled.
pub fn compile(raw: &[RawSink], problems: &mut Vec<String>) -> Vec<SinkConfig> {
    let mut out = Vec::with_capacity(raw.len());
    let mut names = std::collections::HashSet::new();
    for (i, r) in raw.iter().enumerate() {
        let at = format!("sinks[{i}] ('{}')", r.name);
        let before = problems.len();
        if !valid_sink_name(&r.name) {
            problems.push(format!(
                "{at}: name must be 1 to 48 characters of a-z, 0-9, '-' or '_' (it names the sink's cursor and metrics)"
            ));
        }
        if !names.insert(r.name.as_str()) {
            problems.push(format!(
                "{at}: the name is used by another sink; each sink needs its own name (and cursor)"
            ));
        }
        if let Some(s) = compile_one(r, &at, problems) {
            if problems.len() == before {
                out.push(s);
            }
        }
    }
    out
}

/// Pushes a problem for each set field that `kind` does not use.
fn refuse_foreign(r: &RawSink, at: &str, kind: &str, allowed: &[&str], p: &mut Vec<String>) {
    let set: [(&str, bool); 14] = [
        ("max_in_flight", r.max_in_flight.is_some()),
        ("url", r.url.is_some()),
        ("stream", r.stream.is_some()),
        ("subject_prefix", r.subject_prefix.is_some()),
        ("duplicate_window_s", r.duplicate_window_s.is_some()),
        ("replicas", r.replicas.is_some()),
        ("create_stream", r.create_stream.is_some()),
        ("encoding", r.encoding.is_some()),
        ("credentials_file", r.credentials_file.is_some()),
        ("token_env", r.token_env.is_some()),
        ("secret_env", r.secret_env.is_some()),
        ("secret_file", r.secret_file.is_some()),
        ("path", r.path.is_some()),
        ("fsync", r.fsync.is_some()),
    ];
    for (field, is_set) in set {
        if is_set && !allowed.contains(&field) {
            p.push(format!(
                "{at}: `{field}` does not apply to type = \"{kind}\"; remove it"
            ));
        }
    }
}

fn compile_one(r: &RawSink, at: &str, p: &mut Vec<String>) -> Option<SinkConfig> {
    let start = match r.start.as_deref() {
        None | Some("oldest") => CursorStart::Oldest,
        Some("latest") => CursorStart::Latest,
        Some(other) => {
            p.push(format!(
                "{at}: start = {other:?} is unknown; use \"oldest\" or \"latest\""
            ));
            CursorStart::Oldest
        }
    };
    let (def_batch, def_interval, def_timeout) = match r.kind.as_str() {
        "nats" => (2048, 0, 5_000),
        "webhook" => (500, 1_000, 10_000),
        "jsonl" => (1024, 0, 5_000),
        other => {
            p.push(format!(
                "{at}: type = {other:?} is unknown; use \"nats\", \"webhook\" or \"jsonl\""
            ));
            return None;
        }
    };
    let max_batch = r.max_batch.unwrap_or(def_batch);
    if !(1..=65_536).contains(&max_batch) {
        p.push(format!(
            "{at}: max_batch = {max_batch} is out of range; use 1 to 65536"
        ));
    }
    let interval = r.batch_interval_ms.unwrap_or(def_interval);
    if interval > 3_600_000 {
        p.push(format!(
            "{at}: batch_interval_ms = {interval} exceeds one hour (3600000); records would wait that long"
        ));
    }
    let timeout_ms = r.timeout_ms.unwrap_or(def_timeout);
    if !(100..=300_000).contains(&timeout_ms) {
        p.push(format!(
            "{at}: timeout_ms = {timeout_ms} is out of range; use 100 to 300000"
        ));
    }
    if r.kind == "jsonl" && r.timeout_ms.is_some() {
        p.push(format!(
            "{at}: `timeout_ms` does not apply to type = \"jsonl\"; remove it"
        ));
    }
    let retry_initial = r.retry_initial_ms.unwrap_or(100);
    let retry_max = r.retry_max_ms.unwrap_or(5_000);
    if retry_initial == 0 || retry_initial > retry_max {
        p.push(format!(
            "{at}: retry_initial_ms = {retry_initial} must be at least 1 and at most retry_max_ms ({retry_max})"
        ));
    }
    if retry_max > 600_000 {
        p.push(format!(
            "{at}: retry_max_ms = {retry_max} exceeds 10 minutes (600000); a recovered downstream would wait that long"
        ));
    }
    let checkpoint = r.checkpoint_interval_ms.unwrap_or(250);
    if !(10..=60_000).contains(&checkpoint) {
        p.push(format!(
            "{at}: checkpoint_interval_ms = {checkpoint} is out of range; use 10 to 60000"
        ));
    }
    let forward = ForwardSettings {
        max_batch,
        max_batch_bytes: 8 << 20,
        linger: Duration::from_millis(interval),
        checkpoint_interval: Duration::from_millis(checkpoint),
        retry_initial: Duration::from_millis(retry_initial),
        retry_max: Duration::from_millis(retry_max),
    };
    let timeout = Duration::from_millis(timeout_ms);
    let target = match r.kind.as_str() {
        "nats" => {
            refuse_foreign(
                r,
                at,
                "nats",
                &[
                    "max_in_flight",
                    "url",
                    "stream",
                    "subject_prefix",
                    "duplicate_window_s",
                    "replicas",
                    "create_stream",
                    "encoding",
                    "credentials_file",
                    "token_env",
                ],
                p,
            );
            let url = r.url.as_deref().unwrap_or("nats://127.0.0.1:4222");
            let urls: Vec<String> = url.split(',').map(|u| u.trim().to_owned()).collect();
            for u in &urls {
                if u.parse::<async_nats::ServerAddr>().is_err() {
                    p.push(format!(
                        "{at}: url {u:?} is not a NATS server address; write it like \"nats://127.0.0.1:4222\""
                    ));
                }
            }
            let stream = r.stream.clone().unwrap_or_else(|| "FENCEGATE".into());
            if !valid_stream_name(&stream) {
                p.push(format!(
                    "{at}: stream {stream:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'"
                ));
            }
            let prefix = r
                .subject_prefix
                .clone()
                .unwrap_or_else(|| "fencegate".into());
            if !valid_subject_prefix(&prefix) {
                p.push(format!(
                    "{at}: subject_prefix {prefix:?} must be dot-separated tokens of A-Z, a-z, 0-9, '-' or '_' (no wildcards)"
                ));
            }
            let dup = r.duplicate_window_s.unwrap_or(300);
            if !(300..=7 * 86_400).contains(&dup) {
                p.push(format!(
                    "{at}: duplicate_window_s = {dup} is out of range; use 300 (five minutes, the dedup contract) to 604800"
                ));
            }
            let replicas = r.replicas.unwrap_or(1);
            if !(1..=5).contains(&replicas) {
                p.push(format!(
                    "{at}: replicas = {replicas} is out of range; JetStream allows 1 to 5"
                ));
            }
            let encoding = match r.encoding.as_deref() {
                None | Some("flatbuffers") => Encoding::FlatBuffers,
                Some("json") => Encoding::Json,
                Some(o) => {
                    p.push(format!(
                        "{at}: encoding = {o:?} is unknown; use \"flatbuffers\" or \"json\""
                    ));
                    Encoding::FlatBuffers
                }
            };
            let max_in_flight = r.max_in_flight.unwrap_or(1024);
            if !(1..=8192).contains(&max_in_flight) {
                p.push(format!(
                    "{at}: max_in_flight = {max_in_flight} is out of range; use 1 to 8192"
                ));
            }
            if r.credentials_file.is_some() && r.token_env.is_some() {
                p.push(format!(
                    "{at}: set at most one of credentials_file or token_env"
                ));
            }
            SinkTarget::Nats(NatsConfig {
                urls,
                stream,
                subject_prefix: prefix,
                duplicate_window: Duration::from_secs(dup),
                replicas,
                create_stream: r.create_stream.unwrap_or(true),
                encoding,
                max_in_flight,
                timeout,
                credentials_file: r.credentials_file.clone(),
                token_env: r.token_env.clone(),
            })
        }
        "webhook" => {
            refuse_foreign(r, at, "webhook", &["url", "secret_env", "secret_file"], p);
            let url = r.url.clone().unwrap_or_default();
            match reqwest::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => p.push(format!(
                    "{at}: url {url:?} must be an http:// or https:// URL (the receiver records are POSTed to)"
                )),
            }
            let secret = match (&r.secret_env, &r.secret_file) {
                (Some(e), None) => Secret::Env(e.clone()),
                (None, Some(f)) => Secret::File(f.clone()),
                _ => {
                    p.push(format!(
                        "{at}: set exactly one of secret_env or secret_file: every batch is signed (HMAC-SHA256)"
                    ));
                    Secret::Inline(String::new())
                }
            };
            SinkTarget::Webhook(WebhookConfig {
                url,
                secret,
                timeout,
            })
        }
        _ => {
            refuse_foreign(r, at, "jsonl", &["path", "fsync"], p);
            let path = match &r.path {
                None => {
                    p.push(format!(
                        "{at}: set `path` to a file to append to, or \"-\" for stdout"
                    ));
                    None
                }
                Some(x) if x.as_os_str() == "-" => None,
                Some(x) => Some(x.clone()),
            };
            SinkTarget::Jsonl(JsonlConfig {
                path,
                fsync: r.fsync.unwrap_or(false),
            })
        }
    };
    Some(SinkConfig {
        name: r.name.clone(),
        start,
        forward,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<SinkConfig>, Vec<String>> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            sinks: Vec<RawSink>,
        }
        let d: Doc = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut p = Vec::new();
        let s = compile(&d.sinks, &mut p);
        if p.is_empty() { Ok(s) } else { Err(p) }
    }

    #[test]
    fn defaults_per_type() {
        let s = parse(
            r#"
            [[sinks]]
            name = "js"
            type = "nats"
            [[sinks]]
            name = "erp"
            type = "webhook"
            url = "https://erp.example/fencegate"
            secret_env = "ERP_SECRET"
            [[sinks]]
            name = "dev"
            type = "jsonl"
            path = "-"
            "#,
        )
        .unwrap();
        let SinkTarget::Nats(n) = &s[0].target else {
            panic!()
        };
        assert_eq!(n, &NatsConfig::new("nats://127.0.0.1:4222"));
        assert_eq!(s[0].forward.max_batch, 2048);
        assert_eq!(s[0].cursor_name(), "sink-js");
        assert_eq!(s[0].start, CursorStart::Oldest);
        assert_eq!(s[1].forward.linger, Duration::from_secs(1));
        assert_eq!(s[1].forward.max_batch, 500);
        assert!(
            matches!(&s[1].target, SinkTarget::Webhook(w) if w.secret == Secret::Env("ERP_SECRET".into()))
        );
        assert!(matches!(&s[2].target, SinkTarget::Jsonl(j) if j.path.is_none() && !j.fsync));
    }

    #[test]
    fn reports_every_problem() {
        let p = parse(
            r#"
            [[sinks]]
            name = "Bad Name"
            type = "nats"
            url = "not a url at all"
            stream = "a.b"
            subject_prefix = "x.*"
            duplicate_window_s = 60
            replicas = 7
            encoding = "xml"
            max_in_flight = 0
            path = "/tmp/x"
            [[sinks]]
            name = "erp"
            type = "webhook"
            url = "ftp://x"
            [[sinks]]
            name = "erp"
            type = "jsonl"
            timeout_ms = 5
            [[sinks]]
            name = "q"
            type = "kafka"
            start = "middle"
            "#,
        )
        .unwrap_err();
        let all = p.join("\n");
        for needle in [
            "sinks[0] ('Bad Name'): name",
            "not a NATS server address",
            "stream \"a.b\"",
            "subject_prefix",
            "duplicate_window_s = 60",
            "replicas = 7",
            "encoding = \"xml\"",
            "max_in_flight = 0",
            "`path` does not apply to type = \"nats\"",
            "sinks[1] ('erp'): url \"ftp://x\"",
            "secret_env or secret_file",
            "sinks[2] ('erp'): the name is used by another sink",
            "set `path`",
            "`timeout_ms` does not apply",
            "type = \"kafka\" is unknown",
            "start = \"middle\"",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn the_commented_examples_in_the_sample_config_compile() {
        let text = include_str!("../../../config/fencegate.toml");
        let tail = &text[text.find("# Downstream sinks").expect("the sinks section")..];
        let uncommented: String = tail
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                *l == "[[sinks]]"
                    || l.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let s = parse(&uncommented).unwrap();
        assert_eq!(
            s.iter().map(|s| s.target.kind()).collect::<Vec<_>>(),
            ["nats", "webhook", "jsonl"]
        );
        assert_eq!(s[1].forward.linger, Duration::from_secs(300));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse("[[sinks]]\nname = \"a\"\ntype = \"jsonl\"\npath = \"-\"\nbatch = 3\n")
            .unwrap_err();
        assert!(e[0].contains("batch"), "{e:?}");
    }

    #[test]
    fn cluster_urls_and_latest_start() {
        let s = parse(
            r#"
            [[sinks]]
            name = "js"
            type = "nats"
            url = "nats://n1:4222, nats://n2:4222,tls://n3:4222"
            start = "latest"
            replicas = 3
            encoding = "json"
            "#,
        )
        .unwrap();
        let SinkTarget::Nats(n) = &s[0].target else {
            panic!()
        };
        assert_eq!(n.urls.len(), 3);
        assert_eq!(n.urls[1], "nats://n2:4222");
        assert_eq!((n.replicas, n.encoding), (3, Encoding::Json));
        assert_eq!(s[0].start, CursorStart::Latest);
    }
}
