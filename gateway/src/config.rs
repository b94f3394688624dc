//! Gateway configuration: parsed raw from TOML (`deny_unknown_fields`), then
//! compiled into a [`Config`] that reports **every** problem at once.
//!
//! The doc comments on the raw fields are the user documentation; the
//! commented example in `config/fencegate.toml` mirrors them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::budget::{RawBudgetTenant, RawBudgets};
use crate::log::LogConfig;

/// Every problem found in one configuration file, reported together so an
/// operator fixes them in one pass instead of one restart per mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// Where the configuration came from (a path, or "embedded defaults").
    pub source: String,
    /// One human-readable line per problem, naming the setting and the fix.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} problem(s) in the configuration:",
            self.source,
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The raw configuration file, exactly as written by the operator.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// This gateway node.
    pub node: RawNode,
    /// The QUIC edge that devices connect to.
    pub quic: RawQuic,
    /// The admin HTTP API (health, metrics, fences).
    pub admin: RawAdmin,
    /// Where the geofences come from and how they are validated.
    pub fences: RawFences,
    /// Limits applied to every incoming frame.
    pub limits: RawLimits,
    /// Duplicate and repeat suppression.
    pub dedup: RawDedup,
    /// Fence events from pings: debounce and exit hysteresis.
    pub pings: RawPings,
    /// The durable on-disk log every acknowledged record is written to.
    pub log: RawLog,
    /// The tenants this node serves. Each gets its own device-token key.
    pub tenants: Vec<RawTenant>,
    /// Attendance rules and punch verification (QR codes, offline punches).
    pub attendance: RawAttendance,
    /// Downstream sinks (`[[sinks]]`): NATS JetStream, webhook or JSON
    /// lines. Each gets a forwarder with its own persisted log cursor; see
    /// `crate::sink::RawSink` for the settings and docs/DOWNSTREAM.md.
    /// None unless set.
    pub sinks: Vec<crate::sink::RawSink>,
    /// Per-device and per-tenant punch rates, and tenants' own shares of
    /// the node's memory (`[budgets]`, docs/OPERATIONS.md "Budgets").
    pub budgets: RawBudgets,
    /// Several nodes sharing claims, fences and rules through NATS
    /// JetStream (`[cluster]`, docs/OPERATIONS.md "Cluster"). Off unless
    /// `enabled = true`.
    pub cluster: crate::cluster::RawCluster,
}

/// `[node]`: identity and storage of this gateway node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNode {
    /// Name of this node, written into every record so a downstream can tell
    /// which node verified it.
    ///
    /// `"fencegate-1"` unless set.
    pub name: String,
    /// Directory for the durable log, cursors, the dev certificate and dev
    /// tenant keys. Relative paths are relative to the working directory.
    ///
    /// `"./data"` unless set.
    pub data_dir: PathBuf,
}

impl Default for RawNode {
    fn default() -> Self {
        Self {
            name: "fencegate-1".into(),
            data_dir: PathBuf::from("./data"),
        }
    }
}

/// `[quic]`: the device-facing QUIC endpoint(s).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQuic {
    /// UDP address to listen on.
    ///
    /// `"127.0.0.1:4433"` unless set.
    pub listen: String,
    /// A second UDP address that serves punches only (docs/PROTOCOL.md §1,
    /// "Two addresses"): Hello and punch streams, no datagrams, no backlog
    /// streams. It has its own socket, kernel buffer, endpoint task and
    /// connection set-up bound, so a fleet flooding `listen` with pings
    /// cannot delay or refuse the 9:00 punches. Give phones and terminals
    /// this address and fleets `listen`.
    ///
    /// Unset unless set (one address serves everything).
    pub punch_listen: Option<String>,
    /// Number of UDP sockets bound to `listen` with `SO_REUSEPORT`, each
    /// driven by its own quinn endpoint. One endpoint is capped at about one
    /// core; several spread load across cores, at the cost that a client
    /// whose NAT rebinds its port may hash to another socket and lose its
    /// connection (see docs/OPERATIONS.md).
    ///
    /// `1` unless set.
    pub endpoints: usize,
    /// PEM certificate chain. Empty: a self-signed dev certificate is made
    /// under `<data_dir>/tls/` at first start and its SHA-256 fingerprint is
    /// printed so clients can pin it.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Host names the dev certificate is made for.
    ///
    /// `["localhost"]` unless set.
    pub dev_cert_names: Vec<String>,
    /// Most concurrent connections; new handshakes beyond it are refused.
    ///
    /// `100000` unless set.
    pub max_connections: usize,
    /// New handshakes per second above which clients must prove their
    /// address with a Retry round trip first (handshake-flood defence).
    ///
    /// `2000` unless set.
    pub retry_above_handshakes_per_s: u32,
    /// Connections in set-up (TLS handshake, then the Hello) above which
    /// new ones are refused at once (CONNECTION_REFUSED, no key exchange),
    /// so that under a peak the ones already started finish inside the
    /// clients' patience instead of all of them timing out together.
    ///
    /// `8192` unless set.
    pub max_handshakes_in_flight: usize,
    /// Seconds of silence after which a connection is closed.
    ///
    /// `60` unless set.
    pub idle_timeout_s: u64,
    /// Seconds between keep-alive packets the server sends; 0 disables.
    ///
    /// `20` unless set.
    pub keep_alive_s: u64,
    /// Concurrent bidirectional streams (punches in flight) per connection.
    ///
    /// `16` unless set.
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams (backlog uploads) per connection.
    ///
    /// `2` unless set.
    pub max_uni_streams: u32,
    /// Flow-control window per stream, in bytes.
    ///
    /// `65536` unless set.
    pub stream_window: u32,
    /// Flow-control window per connection, in bytes.
    ///
    /// `262144` unless set.
    pub connection_window: u32,
    /// Bytes of received datagrams buffered per connection before the
    /// oldest are dropped (and counted).
    ///
    /// Sized from the ping budget unless set: room for `ping_burst`
    /// datagrams plus two seconds at `ping_datagrams_per_s` (the longest
    /// stall of a connection's task worth riding out), each of the
    /// protocol's largest datagram (1452 bytes), at least 65536 and at
    /// most 8 MiB ([`datagram_buffer_for`]). `65536` with the default
    /// budget.
    pub datagram_buffer: Option<usize>,
    /// Milliseconds a new connection has, from the end of its handshake,
    /// to open its Hello stream and finish it; past it the connection is
    /// closed `AUTH_TIMEOUT`. Short, because a connection waiting for its
    /// Hello holds one of `max_handshakes_in_flight` set-up slots.
    ///
    /// `2000` unless set.
    pub hello_timeout_ms: u64,
    /// The least time, in milliseconds, a connection must have waited for
    /// its Hello before it may be closed to make room for a new one when
    /// `max_handshakes_in_flight` (or admission's set-up limit) is full. A
    /// client sends its Hello right after the handshake, so one silent for
    /// longer is idle, not slow; a shorter grace would close, at a 9:00
    /// peak, connections whose Hello is one round trip away. While the
    /// clients that do authenticate are slower (a fleet reconnecting at
    /// once), the grace stretches to three times their mean Hello delay,
    /// up to half of `hello_timeout_ms`.
    ///
    /// `200` unless set.
    pub hello_evict_grace_ms: u64,
    /// The old name of `hello_timeout_ms` (it was 5000 by default). Still
    /// parsed so that an old file gets a message naming the new setting
    /// rather than "unknown field"; setting it is an error.
    pub auth_timeout_ms: Option<u64>,
    /// Milliseconds a punch stream has, from being opened, to deliver its
    /// whole frame and FIN. The frame is read before the stream takes one
    /// of `max_inflight_punches`, so a stream that never finishes holds no
    /// node-wide slot; past the deadline it is reset with
    /// `PROTOCOL_VIOLATION` and counted.
    ///
    /// `2000` unless set.
    pub stream_read_timeout_ms: u64,
    /// Ping datagrams per second one connection (one device) may send in
    /// steady state (docs/PROTOCOL.md §10 asks for one); datagrams beyond
    /// the rate and `ping_burst` are dropped unread and counted in
    /// `fencegate_datagrams_dropped_total{reason="rate_limit"}`.
    ///
    /// `1` unless set.
    pub ping_datagrams_per_s: u32,
    /// Ping datagrams a connection may send at once above the rate (the
    /// token bucket's depth): room for a reconnect's catch-up or a batch
    /// split in two.
    ///
    /// `10` unless set.
    pub ping_burst: u32,
    /// Accept 0-RTT data from resumed sessions. Safe because punch ids are
    /// idempotent: a replayed 0-RTT punch gets the same ack and no new record.
    /// On, resumption is stateful (tickets are ids into a cache of
    /// `session_cache` sessions, as RFC 8446 requires for early data); off,
    /// tickets are stateless and the cache is unused.
    ///
    /// `true` unless set.
    pub zero_rtt: bool,
    /// With `zero_rtt`: most resumable sessions the node keeps in memory,
    /// one per device that connected recently (about 200 bytes each, so
    /// 65536 take about 13 MB). A device whose session was evicted (the
    /// oldest go first) pays one full handshake, without 0-RTT.
    ///
    /// `65536` unless set.
    pub session_cache: usize,
    /// Punches being processed at once across the node; beyond it new
    /// streams are answered `Busy` with a retry-after.
    ///
    /// `65536` unless set.
    pub max_inflight_punches: usize,
    /// Admission control's target queueing delay, in milliseconds: when
    /// every punch sojourn (frame read → ack ready) and every new
    /// connection's wait for the runtime stayed above it for a whole
    /// `admission_interval_ms`, the node refuses new connections before any
    /// key exchange (`CONNECTION_REFUSED`) and answers new punches `Busy`
    /// for the next interval (docs/PROTOCOL.md §10). `0` turns it off.
    ///
    /// `50` unless set.
    pub admission_target_ms: u64,
    /// Admission control's window, in milliseconds (see
    /// `admission_target_ms`).
    ///
    /// `100` unless set.
    pub admission_interval_ms: u64,
    /// Retry-after, in milliseconds, of the `Busy` sent to punches shed by
    /// admission control.
    ///
    /// `500` unless set.
    pub admission_retry_after_ms: u32,
    /// With `punch_listen` set: the nice value (0 to 19) of the threads
    /// that serve `listen` (pings, backlog streams, the admin API, results
    /// and sinks). The punch lane's thread and the log writer stay at the
    /// process's own, so under a ping flood the kernel gives a punch the
    /// CPU first and the flood's datagrams what is left. A process beside
    /// the gateway at nice 0 also comes before the pings. `0` keeps every
    /// thread equal; without `punch_listen` it has no effect.
    ///
    /// `10` unless set.
    pub shared_lane_nice: i32,
    /// How a new connection is turned away when the node sheds it before
    /// any key exchange (set-up limit full, punches over target, or
    /// `max_connections` reached): `"silent"` drops its Initial packet
    /// unanswered, and the client's QUIC stack sends it again on its own
    /// schedule (about 1, 2, 4 and 8 s later) until the node has room or
    /// the client's handshake timeout ends the attempt; `"refuse"` answers
    /// `CONNECTION_REFUSED`, and the client backs off and starts a new
    /// connection (docs/PROTOCOL.md §9). A silent shed costs the client
    /// nothing but a resent packet; a refused one costs it a new key share
    /// and Initial per retry, which a crowd refused at 3× capacity pays
    /// thousands of times a second (docs/PERFORMANCE.md, "Overload").
    ///
    /// `"silent"` unless set.
    pub shed_connections: ShedConnections,
    /// With `punch_listen` set and a CPU limit (`cpu_limit_cores`, or the
    /// cgroup's quota): the fraction of the limit the process may use before
    /// the shared lane stops reading `listen`'s sockets until it is back
    /// under. Under a quota the kernel stops every thread once a period's
    /// share is spent, the punch lane too, so a flood must not take the
    /// share; the datagrams it is not read wait in, and overflow from, the
    /// socket buffer (docs/OPERATIONS.md, "A node with a CPU limit"). `0`
    /// turns the gate off.
    ///
    /// `0.85` unless set.
    pub cpu_gate: f64,
    /// The node's CPU limit in cores, for `cpu_gate`. Unset: the cgroup's
    /// CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`); without either the
    /// gate stays off.
    pub cpu_limit_cores: Option<f64>,
}

/// How the node turns away a new connection it sheds before the key
/// exchange (`quic.shed_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShedConnections {
    /// Drop the Initial packet unanswered; the client resends it.
    Silent,
    /// Answer `CONNECTION_REFUSED`; the client backs off and reconnects.
    Refuse,
}

/// `[quic]` compiled: every problem reported by [`Config::compile`], then
/// durations as [`Duration`] and the idle timeout in quinn's own type, so
/// nothing downstream re-checks or `expect`s a setting. The field docs are
/// [`RawQuic`]'s.
#[derive(Debug, Clone)]
pub struct Quic {
    /// UDP sockets bound to the listen address with `SO_REUSEPORT`.
    pub endpoints: usize,
    /// The operator's PEM certificate chain and key, or `None` for the
    /// dev certificate made under `<data_dir>/tls/`.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Host names the dev certificate is made for.
    pub dev_cert_names: Vec<String>,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// New handshakes per second above which clients must Retry first.
    pub retry_above_handshakes_per_s: u32,
    /// Connections in set-up above which new ones are refused at once.
    pub max_handshakes_in_flight: usize,
    /// Silence after which a connection is closed.
    pub idle_timeout: quinn::IdleTimeout,
    /// Keep-alive interval the server sends at; `None` sends none.
    pub keep_alive: Option<Duration>,
    /// Concurrent bidirectional streams per connection.
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams per connection.
    pub max_uni_streams: u32,
    /// Flow-control window per stream, in bytes.
    pub stream_window: u32,
    /// Flow-control window per connection, in bytes.
    pub connection_window: u32,
    /// Bytes of received datagrams buffered per connection.
    pub datagram_buffer: usize,
    /// Time a new connection has to finish its Hello.
    pub hello_timeout: Duration,
    /// Wait for its Hello after which a connection may be evicted.
    pub hello_evict_grace: Duration,
    /// Time a punch stream has to deliver its frame and FIN.
    pub stream_read_timeout: Duration,
    /// Ping datagrams per second one connection may send.
    pub ping_datagrams_per_s: u32,
    /// Ping datagrams a connection may send at once above the rate.
    pub ping_burst: u32,
    /// Whether 0-RTT data from resumed sessions is accepted.
    pub zero_rtt: bool,
    /// Resumable sessions kept in memory (with `zero_rtt`).
    pub session_cache: usize,
    /// Punches being processed at once across the node.
    pub max_inflight_punches: usize,
    /// Admission control's target queueing delay; zero turns it off.
    pub admission_target: Duration,
    /// Admission control's window.
    pub admission_interval: Duration,
    /// Retry-after of the `Busy` sent to punches shed by admission control.
    pub admission_retry_after: Duration,
    /// The nice value of the shared lane's threads when punches have their
    /// own address; 0 when they do not (or when set to 0).
    pub shared_lane_nice: i32,
    /// How a shed new connection is turned away.
    pub shed_connections: ShedConnections,
    /// The fraction of the CPU limit the process may use before `listen`'s
    /// reads pause; 0 (off) without `punch_listen`.
    pub cpu_gate: f64,
    /// `quic.cpu_limit_cores`, if set.
    pub cpu_limit_cores: Option<f64>,
}

impl Quic {
    /// Compiles checked settings (ranges are [`Config::compile`]'s
    /// problems; a value out of them is clamped here, never trusted).
    fn compile(q: RawQuic) -> Self {
        // At most 3,600,000 ms after the range check: a VarInt, so the
        // conversion cannot fail (quinn's limit is 2^62 ms).
        let idle_ms = q.idle_timeout_s.clamp(1, 3_600) as u32 * 1_000;
        Self {
            endpoints: q.endpoints,
            identity: q.cert.zip(q.key),
            dev_cert_names: q.dev_cert_names,
            max_connections: q.max_connections,
            retry_above_handshakes_per_s: q.retry_above_handshakes_per_s,
            max_handshakes_in_flight: q.max_handshakes_in_flight,
            idle_timeout: quinn::IdleTimeout::from(quinn::VarInt::from_u32(idle_ms)),
            keep_alive: (q.keep_alive_s > 0).then(|| Duration::from_secs(q.keep_alive_s)),
            max_bidi_streams: q.max_bidi_streams,
            max_uni_streams: q.max_uni_streams,
            stream_window: q.stream_window,
            connection_window: q.connection_window,
            datagram_buffer: q.datagram_buffer.unwrap_or_else(|| {
                datagram_buffer_for(
                    q.ping_burst,
                    q.ping_datagrams_per_s,
                    fencegate_schema::Limits::default().max_datagram_bytes,
                )
            }),
            hello_timeout: Duration::from_millis(q.hello_timeout_ms),
            hello_evict_grace: Duration::from_millis(q.hello_evict_grace_ms),
            stream_read_timeout: Duration::from_millis(q.stream_read_timeout_ms),
            ping_datagrams_per_s: q.ping_datagrams_per_s,
            ping_burst: q.ping_burst,
            zero_rtt: q.zero_rtt,
            session_cache: q.session_cache,
            max_inflight_punches: q.max_inflight_punches,
            admission_target: Duration::from_millis(q.admission_target_ms),
            admission_interval: Duration::from_millis(q.admission_interval_ms),
            admission_retry_after: Duration::from_millis(u64::from(q.admission_retry_after_ms)),
            shared_lane_nice: if q.punch_listen.is_some() {
                q.shared_lane_nice.clamp(0, 19)
            } else {
                0
            },
            shed_connections: q.shed_connections,
            cpu_gate: if q.punch_listen.is_some() {
                q.cpu_gate.clamp(0.0, 1.0)
            } else {
                0.0
            },
            cpu_limit_cores: q.cpu_limit_cores,
        }
    }
}

impl Default for RawQuic {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4433".into(),
            punch_listen: None,
            endpoints: 1,
            cert: None,
            key: None,
            dev_cert_names: vec!["localhost".into()],
            max_connections: 100_000,
            retry_above_handshakes_per_s: 2_000,
            max_handshakes_in_flight: 8192,
            idle_timeout_s: 60,
            keep_alive_s: 20,
            max_bidi_streams: 16,
            max_uni_streams: 2,
            stream_window: 65_536,
            connection_window: 262_144,
            datagram_buffer: None,
            hello_timeout_ms: 2_000,
            hello_evict_grace_ms: 200,
            auth_timeout_ms: None,
            stream_read_timeout_ms: 2_000,
            ping_datagrams_per_s: 1,
            ping_burst: 10,
            zero_rtt: true,
            session_cache: 65_536,
            max_inflight_punches: 65_536,
            admission_target_ms: 50,
            admission_interval_ms: 100,
            admission_retry_after_ms: 500,
            shared_lane_nice: 10,
            shed_connections: ShedConnections::Silent,
            cpu_gate: 0.85,
            cpu_limit_cores: None,
        }
    }
}

/// How much a connection's datagram buffer holds when
/// `quic.datagram_buffer` is not set: a full burst of `burst` datagrams
/// plus two seconds at `per_s` (a connection whose task stalls that long,
/// behind a log append or the scheduler, loses nothing it was allowed to
/// send), each `datagram_bytes` long. At least 64 KiB, so a default
/// connection keeps its former room; at most 8 MiB, because the buffer is
/// per connection and a node holds thousands.
pub fn datagram_buffer_for(burst: u32, per_s: u32, datagram_bytes: usize) -> usize {
    const STALL_S: u64 = 2;
    let datagrams = u64::from(burst) + u64::from(per_s) * STALL_S;
    let bytes = datagrams.saturating_mul(datagram_bytes as u64);
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .clamp(65_536, 8 << 20)
}

/// `[admin]`: the admin HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// TCP address of the admin API (`/healthz`, `/readyz`, `/metrics`,
    /// `/v1/fences`). Keep it on a private interface.
    ///
    /// `"127.0.0.1:9464"` unless set.
    pub listen: String,
    /// Bearer tokens allowed to call `/v1/...`. Health and metrics need none.
    pub tokens: Vec<RawAdminToken>,
    /// Most `GET /v1/records` queries running at once; more are answered
    /// 429 with `Retry-After`, so readers cannot take the node's blocking
    /// threads and disk from the log and the forwarders.
    ///
    /// `4` unless set.
    pub max_concurrent_queries: usize,
    /// Longest one records query may run. Past it the answer ends early
    /// and says where to resume (`next_after`).
    ///
    /// `10` unless set.
    pub query_timeout_s: u64,
    /// Most log records one records query reads (matching or not). Past it
    /// the answer ends early and says where to resume.
    ///
    /// `5000000` unless set.
    pub max_scan_records: u64,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            tokens: Vec::new(),
            max_concurrent_queries: 4,
            query_timeout_s: 10,
            max_scan_records: 5_000_000,
        }
    }
}

/// Bounds on the admin API's records queries (from `[admin]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Most queries at once.
    pub max_concurrent: usize,
    /// Longest one query runs.
    pub timeout: Duration,
    /// Most records one query reads.
    pub max_scan: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        let r = RawAdmin::default();
        Self {
            max_concurrent: r.max_concurrent_queries,
            timeout: Duration::from_secs(r.query_timeout_s),
            max_scan: r.max_scan_records,
        }
    }
}

/// One admin bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminToken {
    /// Name shown in logs (never the secret).
    pub name: String,
    /// File holding the secret token (first line). Keep secrets out of the
    /// config file so it can be committed.
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the secret token.
    pub token_env: Option<String>,
    /// `"super"` (configures every tenant and exports, never edits a
    /// record), `"tenant"` (the same, confined to `tenant`), `"supervisor"`
    /// (reads the anomalies and pending approvals of `department` in
    /// `tenant`) or `"employee"` (reads `employee`'s own records in
    /// `tenant`).
    pub role: String,
    /// The tenant a `"tenant"`, `"supervisor"` or `"employee"` token is
    /// confined to.
    pub tenant: Option<String>,
    /// The department a `"supervisor"` token reads.
    #[serde(default)]
    pub department: Option<String>,
    /// The employee id an `"employee"` token reads.
    #[serde(default)]
    pub employee: Option<String>,
}

/// `[fences]`: where fences come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFences {
    /// GeoJSON FeatureCollection of fences; `PUT /v1/fences` rewrites it.
    /// (With no config file at all, `<data_dir>/fences.geojson` is used,
    /// seeded from the bundled samples.)
    ///
    /// `"config/fences.geojson"` unless set.
    pub path: PathBuf,
    /// Smallest circle radius accepted, in metres.
    ///
    /// `50` unless set.
    pub min_radius_m: f64,
    /// Largest circle radius accepted, in metres.
    ///
    /// `5000` unless set.
    pub max_radius_m: f64,
}

impl Default for RawFences {
    fn default() -> Self {
        Self {
            path: PathBuf::from("config/fences.geojson"),
            min_radius_m: 50.0,
            max_radius_m: 5_000.0,
        }
    }
}

/// `[fences]`, compiled: the fence file and the bounds fences are loaded
/// with (also by `PUT /v1/fences`).
#[derive(Debug, Clone)]
pub struct FenceSource {
    /// The GeoJSON FeatureCollection of fences.
    pub path: PathBuf,
    /// Circle radius bounds.
    pub load: fencegate_spatial::LoadOptions,
}

/// `[limits]`: per-frame limits (see docs/PROTOCOL.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// How far a device clock may run ahead of the gateway's, in seconds,
    /// before its timestamps are refused as `FutureTimestamp`.
    ///
    /// `300` unless set.
    pub max_future_skew_s: u64,
    /// Most fixes in one ping datagram.
    ///
    /// `64` unless set.
    pub max_batch_fixes: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_future_skew_s: 300,
            max_batch_fixes: 64,
        }
    }
}

/// `[dedup]`: idempotency, repeat merge and ping suppression.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDedup {
    /// How long a repeat punch (same employee, same kind) is merged into the
    /// first accepted one.
    ///
    /// `300` (five minutes) unless set.
    pub repeat_window_s: u64,
    /// How long a punch id is remembered, so a resend (after a lost ack, a
    /// reconnect or a phone that retries the next morning) gets the ack the
    /// first copy got and is never recorded twice. Measured on the
    /// monotonic clock, so a wall-clock step neither shortens nor extends
    /// it. Must be at least `repeat_window_s`. At start the gateway replays
    /// this much of the log (and at least the 24 h the anti-cheat memory
    /// covers).
    ///
    /// `86400` (24 hours) unless set.
    pub idempotency_horizon_s: u64,
    /// Longest gap between forwarded pings of a device that stands still.
    ///
    /// `300` unless set.
    pub ping_heartbeat_s: u64,
    /// H3 resolution whose cell a device must leave for its ping to be
    /// forwarded (9 ≈ 0.1 km² cells).
    ///
    /// `9` unless set.
    pub ping_cell_resolution: u8,
    /// Most remembered punch ids, and separately most remembered repeat
    /// keys (employee and kind). When either is full, new punches are
    /// answered `Busy` with a retry-after rather than risk counting one
    /// twice. A punch id costs about 200 bytes while remembered (see
    /// `docs/PERFORMANCE.md`), so the default holds a day of 2 million
    /// punches in about 400 MB.
    ///
    /// `2000000` unless set.
    pub max_punch_keys: usize,
    /// Most employees the attendance rules remember (anti-cheat: last fix,
    /// last clock-in, dual-verification first factor) and most QR uses.
    /// This memory is best effort: when full, a punch of a further
    /// employee is judged without it (counted in
    /// `fencegate_rules_memory_full_total`), never refused.
    ///
    /// `1000000` unless set.
    pub max_employees: usize,
    /// Most devices whose last ping is remembered. When full, pings of
    /// further devices are forwarded unsuppressed (nothing is lost; the
    /// downstream sees more pings) and counted.
    ///
    /// `1000000` unless set.
    pub max_devices: usize,
}

impl Default for RawDedup {
    fn default() -> Self {
        Self {
            repeat_window_s: 300,
            idempotency_horizon_s: 86_400,
            ping_heartbeat_s: 300,
            ping_cell_resolution: 9,
            max_punch_keys: 2_000_000,
            max_employees: 1_000_000,
            max_devices: 1_000_000,
        }
    }
}

/// `[dedup]`, compiled: windows as durations and the ping cell resolution as
/// an H3 resolution, so no user of it converts or re-checks a raw number.
/// See [`RawDedup`] for what each setting means and its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dedup {
    /// See [`RawDedup::repeat_window_s`].
    pub repeat_window: Duration,
    /// See [`RawDedup::idempotency_horizon_s`].
    pub idempotency_horizon: Duration,
    /// See [`RawDedup::ping_heartbeat_s`].
    pub ping_heartbeat: Duration,
    /// See [`RawDedup::ping_cell_resolution`].
    pub ping_cell_resolution: h3o::Resolution,
    /// See [`RawDedup::max_punch_keys`].
    pub max_punch_keys: usize,
    /// See [`RawDedup::max_employees`].
    pub max_employees: usize,
    /// See [`RawDedup::max_devices`].
    pub max_devices: usize,
}

/// `[pings]`: fence events from location pings. Both settings are off
/// unless set, and then every membership change is an Enter or Exit at the
/// first fix that shows it.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawPings {
    /// Seconds a fence membership change must persist, measured in fix
    /// time, before its Enter or Exit is emitted: a device jittering across
    /// an edge for less than this emits nothing.
    ///
    /// `0` (off) unless set; at most 86400.
    pub dwell_s: u64,
    /// Accuracy-aware exit hysteresis, metres: a device in a fence counts
    /// as having left it only at a fix whose distance outside the fence's
    /// edge minus the fix's accuracy exceeds this margin. `0` still makes
    /// exits accuracy-aware.
    ///
    /// Off (plain containment) unless set; 0 to 10000.
    pub exit_margin_m: Option<f64>,
    /// Per-tenant overrides (`[pings.tenants.acme]`); a setting left out
    /// there keeps the node-wide value.
    pub tenants: std::collections::BTreeMap<String, RawPingsTenant>,
}

/// `[pings.tenants.<id>]`: one tenant's overrides of `[pings]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPingsTenant {
    /// See [`RawPings::dwell_s`].
    pub dwell_s: Option<u64>,
    /// See [`RawPings::exit_margin_m`].
    pub exit_margin_m: Option<f64>,
}

/// Compiled `[pings]` settings.
#[derive(Debug, Clone, Default)]
pub struct PingsConfig {
    /// The node-wide fence event rules.
    pub default: FenceEventRules,
    /// Tenants with their own rules (overrides merged over the default).
    pub tenants: Vec<(String, FenceEventRules)>,
}

/// The longest `dwell_s`: beyond a day the device state has long expired.
const MAX_DWELL_S: u64 = 86_400;
/// The largest `exit_margin_m`, metres.
const MAX_EXIT_MARGIN_M: f64 = 10_000.0;

fn compile_pings(raw: &RawPings, tenants: &[RawTenant], p: &mut Vec<String>) -> PingsConfig {
    let check = |p: &mut Vec<String>, at: &str, dwell: Option<u64>, margin: Option<f64>| {
        if let Some(d) = dwell.filter(|&d| d > MAX_DWELL_S) {
            p.push(format!(
                "{at}dwell_s = {d} is out of range; use 0 (off) to {MAX_DWELL_S} seconds"
            ));
        }
        if let Some(m) =
            margin.filter(|m| !(m.is_finite() && (0.0..=MAX_EXIT_MARGIN_M).contains(m)))
        {
            p.push(format!(
                "{at}exit_margin_m = {m} is out of range; use 0 to {MAX_EXIT_MARGIN_M} metres, or leave it out for plain containment"
            ));
        }
    };
    check(p, "pings.", Some(raw.dwell_s), raw.exit_margin_m);
    let default = FenceEventRules {
        dwell_ms: raw.dwell_s as i64 * 1_000,
        exit_margin_m: raw.exit_margin_m,
    };
    let mut out = Vec::new();
    for (id, t) in &raw.tenants {
        let at = format!("pings.tenants.{id}.");
        if !tenants.iter().any(|k| &k.id == id) {
            p.push(format!(
                "pings.tenants.{id}: no [[tenants]] block has id {id:?}; add one or remove the override"
            ));
        }
        check(p, &at, t.dwell_s, t.exit_margin_m);
        out.push((
            id.clone(),
            FenceEventRules {
                dwell_ms: t.dwell_s.map_or(default.dwell_ms, |d| d as i64 * 1_000),
                exit_margin_m: t.exit_margin_m.or(default.exit_margin_m),
            },
        ));
    }
    PingsConfig {
        default,
        tenants: out,
    }
}

/// `[log]`: the durable log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// Log directory. Empty: `<data_dir>/log`.
    pub dir: Option<PathBuf>,
    /// Size at which a segment file is closed and a new one started.
    ///
    /// `67108864` (64 MiB) unless set.
    pub segment_bytes: u64,
    /// Cap on the log's size on disk. When reached, punches are answered
    /// `Busy`/`LogFull` with a retry-after until retention frees space.
    ///
    /// `10737418240` (10 GiB) unless set.
    pub max_bytes: u64,
    /// Segments older than this are deleted once every sink has passed them.
    ///
    /// `168` (a week) unless set.
    pub max_age_h: u64,
    /// Longest wait, in microseconds, for more records to share one fsync.
    /// 0 syncs as soon as the writer is free; appends arriving during one
    /// fsync still share the next (see docs/PERFORMANCE.md).
    ///
    /// `0` unless set.
    pub commit_delay_us: u64,
    /// Most records written by one group commit.
    ///
    /// `8192` unless set.
    pub commit_max_records: usize,
}

impl Default for RawLog {
    /// The log's own defaults ([`LogConfig::new`]): one set, not two.
    fn default() -> Self {
        let d = LogConfig::new("");
        Self {
            dir: None,
            segment_bytes: d.segment_bytes,
            max_bytes: d.max_bytes,
            max_age_h: d.retain_age.map_or(0, |a| a.as_secs() / 3_600),
            commit_delay_us: d.max_batch_delay.as_micros() as u64,
            commit_max_records: d.max_batch_records,
        }
    }
}

/// Turns `[log]` into the log's settings, naming the TOML field of every
/// problem: `serve` opens the log with exactly what this returns, so
/// `check-config` rejects whatever the log would refuse.
fn compile_log(raw: &RawLog, data_dir: &Path, p: &mut Vec<String>) -> LogConfig {
    let mut l = LogConfig::new(raw.dir.clone().unwrap_or_else(|| data_dir.join("log")));
    if raw.segment_bytes < (1 << 20) {
        p.push(format!(
            "log.segment_bytes = {} is below 1 MiB",
            raw.segment_bytes
        ));
    }
    // Retention frees whole segments and must leave a quarter of the cap
    // free; one write batch must fit twice.
    let min_max = (raw.segment_bytes.saturating_mul(4))
        .max(2 * (l.max_batch_bytes as u64 + crate::log::BATCH_OVERHEAD_BYTES));
    if raw.max_bytes < min_max {
        p.push(format!(
            "log.max_bytes = {} is below {min_max}: it must hold 4 × log.segment_bytes ({}) and two write batches of {} bytes; raise it",
            raw.max_bytes,
            raw.segment_bytes.saturating_mul(4),
            l.max_batch_bytes
        ));
    }
    if raw.commit_max_records == 0 {
        p.push("log.commit_max_records must be at least 1".into());
    }
    if raw.commit_delay_us > 100_000 {
        p.push(format!(
            "log.commit_delay_us = {} exceeds 100000 (100 ms); acks would wait that long",
            raw.commit_delay_us
        ));
    }
    l.segment_bytes = raw.segment_bytes;
    l.max_bytes = raw.max_bytes;
    l.retain_bytes = raw.max_bytes / 4 * 3;
    l.retain_age = Some(Duration::from_secs(raw.max_age_h.saturating_mul(3_600)));
    l.max_batch_delay = Duration::from_micros(raw.commit_delay_us);
    l.max_batch_records = raw.commit_max_records;
    // Whatever the checks above missed, the log's own check still catches
    // here rather than when `serve` opens the log.
    if p.is_empty() {
        if let Err(e) = l.validate() {
            p.push(format!("log: {e}"));
        }
    }
    l
}

/// `[attendance]`: attendance rules and punch verification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAttendance {
    /// The attendance rules file (time zones, schedules, holidays, sites,
    /// Wi-Fi, QR, terminals, employees; see config/rules.toml and
    /// docs/ATTENDANCE.md). `PUT /v1/rules` changes it (a tenant token only
    /// its own section, in place). Holiday calendars in it are names looked
    /// up in `holidays_dir`. Empty: no rules file, every
    /// tenant is judged by the defaults (and `PUT /v1/rules` is refused).
    /// (With no config file at all, `<data_dir>/rules.toml` is used, seeded
    /// from the bundled example.)
    pub rules: Option<PathBuf>,
    /// The operator's folder of holiday calendars (`<name>.toml` or
    /// `<name>.csv`). Rules name calendars (`holidays = ["cn-2025"]`); a
    /// name is looked up here and nowhere else, so tenants cannot make the
    /// gateway read other files. `holidays/` beside the rules file unless set.
    pub holidays_dir: Option<PathBuf>,
    /// Oldest offline punch accepted, in hours, judged by its device time;
    /// older ones are refused as `OfflineTooOld`.
    ///
    /// `72` unless set.
    pub offline_window_h: u64,
    /// Seconds between QR code rotations.
    ///
    /// `30` unless set.
    pub qr_step_s: u64,
    /// Steps after its own that a QR code is still accepted (scanning takes
    /// a moment).
    ///
    /// `1` unless set.
    pub qr_skew_steps: u32,
    /// An online punch whose device clock differs from the gateway's by
    /// more than this many seconds is flagged `ClockSkew`.
    ///
    /// `300` unless set.
    pub clock_skew_s: u64,
    /// Where day results are materialized (docs/ATTENDANCE.md, "Day
    /// results"): a `postgres://` URL, or a SQLite file path (relative to
    /// the working directory), created when missing.
    ///
    /// `<data_dir>/results.sqlite` unless set.
    pub results: Option<String>,
}

impl Default for RawAttendance {
    fn default() -> Self {
        Self {
            rules: None,
            holidays_dir: None,
            offline_window_h: 72,
            qr_step_s: 30,
            qr_skew_steps: 1,
            clock_skew_s: 300,
            results: None,
        }
    }
}

/// Compiled `[attendance]` settings.
#[derive(Debug, Clone)]
pub struct AttendanceConfig {
    /// The rules file, if any.
    pub rules_path: Option<PathBuf>,
    /// The calendar folder, if set (else `holidays/` beside the rules file).
    pub holidays_dir: Option<PathBuf>,
    /// Settings handed to the rules.
    pub settings: crate::rules::AttendanceSettings,
    /// Whether the bundled example rules may seed a missing rules file.
    pub seed_sample_rules: bool,
    /// The results store's URL (`sqlite://...` or `postgres://...`).
    pub results_url: String,
}

/// `[[tenants]]`: one tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    /// Tenant id, as used in fences (`tenant` property) and device tokens.
    pub id: String,
    /// File holding this tenant's device-token key (32+ random bytes, hex or
    /// raw). Empty: `<data_dir>/keys/<id>.key`, generated at first start.
    pub key_file: Option<PathBuf>,
}

/// A compiled, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (a path, or "embedded defaults"):
    /// names it in the problems `serve` and `check-config` report.
    pub source: String,
    /// Node name written into records.
    pub node_name: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// QUIC listen address.
    pub quic_listen: SocketAddr,
    /// The punch-only QUIC address (`quic.punch_listen`), if any.
    pub quic_punch_listen: Option<SocketAddr>,
    /// The QUIC settings, compiled.
    pub quic: Quic,
    /// Admin API listen address.
    pub admin_listen: SocketAddr,
    /// Admin tokens (secrets resolved at start, not here).
    pub admin_tokens: Vec<RawAdminToken>,
    /// Bounds on records queries.
    pub admin_queries: QueryLimits,
    /// Where fences come from and the bounds they are loaded with.
    pub fences: FenceSource,
    /// Whether the bundled sample fences may stand in for a missing file.
    pub allow_sample_fences: bool,
    /// Frame limits (`[limits]` over the protocol's defaults).
    pub limits: fencegate_schema::Limits,
    /// Dedup windows and memory bounds, compiled.
    pub dedup: Dedup,
    /// Fence event debounce and hysteresis (`[pings]`).
    pub pings: PingsConfig,
    /// The durable log's settings, compiled and checked (`log.dir` is the
    /// resolved folder).
    pub log: LogConfig,
    /// Tenants and where their keys live (resolved).
    pub tenants: Vec<(String, PathBuf)>,
    /// Attendance rules and settings.
    pub attendance: AttendanceConfig,
    /// Downstream sinks (validated), in config order.
    pub sinks: Vec<crate::sink::SinkConfig>,
    /// Punch rate limits and tenants' shares (`[budgets]`, validated).
    pub budgets: crate::budget::Budgets,
    /// `[cluster]`, when enabled.
    pub cluster: Option<crate::cluster::ClusterSettings>,
}

impl Config {
    /// The configuration used when `fencegate serve` gets no `--config`.
    pub fn embedded_defaults() -> Self {
        let mut raw = RawConfig {
            tenants: ["acme", "globex"]
                .into_iter()
                .map(|id| RawTenant {
                    id: id.into(),
                    key_file: None,
                })
                .collect(),
            ..RawConfig::default()
        };
        // Fences live under the data dir, seeded from the bundled samples,
        // so admin API changes never write into a source checkout.
        raw.fences.path = raw.node.data_dir.join("fences.geojson");
        raw.attendance.rules = Some(raw.node.data_dir.join("rules.toml"));
        let mut cfg = Self::compile(raw, "embedded defaults").expect("embedded defaults are valid");
        cfg.allow_sample_fences = true;
        cfg.attendance.seed_sample_rules = true;
        cfg
    }

    /// Reads and compiles a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            source: source.clone(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        Self::parse(&text, &source)
    }

    /// Parses and compiles TOML text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, ConfigErrors> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigErrors {
            source: source.into(),
            problems: vec![e.to_string().trim_end().replace('\n', "\n    ")],
        })?;
        Self::compile(raw, source)
    }

    /// Validates a raw configuration, collecting every problem.
    pub fn compile(raw: RawConfig, source: &str) -> Result<Self, ConfigErrors> {
        let mut p = Vec::new();
        let addr = |p: &mut Vec<String>, field: &str, v: &str| -> SocketAddr {
            v.parse().unwrap_or_else(|_| {
                p.push(format!(
                    "{field} = {v:?} is not an IP:port address; write it like \"127.0.0.1:4433\""
                ));
                SocketAddr::from(([127, 0, 0, 1], 0))
            })
        };
        let quic_listen = addr(&mut p, "quic.listen", &raw.quic.listen);
        let quic_punch_listen = raw
            .quic
            .punch_listen
            .as_ref()
            .map(|v| addr(&mut p, "quic.punch_listen", v));
        if let Some(pl) = quic_punch_listen {
            if pl == quic_listen && pl.port() != 0 {
                p.push(format!(
                    "quic.punch_listen = \"{pl}\" is quic.listen's address; give punches another port (for example {}:{})",
                    pl.ip(),
                    pl.port().wrapping_add(1)
                ));
            }
        }
        let admin_listen = addr(&mut p, "admin.listen", &raw.admin.listen);

        if raw.node.name.is_empty() || raw.node.name.len() > 64 {
            p.push("node.name must be 1 to 64 characters".into());
        }
        let q = &raw.quic;
        if !(1..=64).contains(&q.endpoints) {
            p.push(format!(
                "quic.endpoints = {} is out of range; use 1 to 64 (about one per core)",
                q.endpoints
            ));
        }
        if q.cert.is_some() != q.key.is_some() {
            p.push("quic.cert and quic.key must be set together (or both left out for a dev certificate)".into());
        }
        if q.max_connections == 0 {
            p.push("quic.max_connections must be at least 1".into());
        }
        if q.idle_timeout_s == 0 || q.idle_timeout_s > 3_600 {
            p.push(format!(
                "quic.idle_timeout_s = {} is out of range; use 1 to 3600",
                q.idle_timeout_s
            ));
        }
        if q.keep_alive_s >= q.idle_timeout_s && q.keep_alive_s != 0 {
            p.push(format!(
                "quic.keep_alive_s = {} must be below quic.idle_timeout_s = {} or the connection idles out between keep-alives",
                q.keep_alive_s, q.idle_timeout_s
            ));
        }
        if q.max_bidi_streams == 0 {
            p.push(
                "quic.max_bidi_streams must be at least 1: punches travel on bidirectional streams"
                    .into(),
            );
        }
        if q.stream_window < 4_096 {
            p.push(format!(
                "quic.stream_window = {} is below 4096, the largest punch frame",
                q.stream_window
            ));
        }
        if q.connection_window < q.stream_window {
            p.push("quic.connection_window must be at least quic.stream_window".into());
        }
        if q.zero_rtt && q.session_cache == 0 {
            p.push(
                "quic.session_cache must be at least 1 with quic.zero_rtt = true (0-RTT needs the session cache); set zero_rtt = false to turn it off".into(),
            );
        }
        if q.max_handshakes_in_flight == 0 {
            p.push("quic.max_handshakes_in_flight must be at least 1".into());
        }
        if let Some(ms) = q.auth_timeout_ms {
            p.push(format!(
                "quic.auth_timeout_ms = {ms} was renamed: write `hello_timeout_ms = {ms}` instead (default 2000)"
            ));
        }
        if !(1..=60_000).contains(&q.hello_timeout_ms) {
            p.push(format!(
                "quic.hello_timeout_ms = {} is out of range; use 1 to 60000 (default 2000)",
                q.hello_timeout_ms
            ));
        }
        if !(1..=60_000).contains(&q.stream_read_timeout_ms) {
            p.push(format!(
                "quic.stream_read_timeout_ms = {} is out of range; use 1 to 60000 (default 2000)",
                q.stream_read_timeout_ms
            ));
        }
        if q.ping_datagrams_per_s == 0 || q.ping_datagrams_per_s > 1_000_000 {
            p.push(format!(
                "quic.ping_datagrams_per_s = {} is out of range; use 1 to 1000000 (default 1, docs/PROTOCOL.md §10)",
                q.ping_datagrams_per_s
            ));
        }
        if let Some(b) = q.datagram_buffer {
            let max = fencegate_schema::Limits::default().max_datagram_bytes;
            if b < max {
                p.push(format!(
                    "quic.datagram_buffer = {b} is below one datagram ({max} bytes); raise it, or leave it out to size it from the ping budget"
                ));
            }
        }
        if q.ping_burst == 0 || q.ping_burst > 1_000_000 {
            p.push(format!(
                "quic.ping_burst = {} is out of range; use 1 to 1000000 (default 10)",
                q.ping_burst
            ));
        }
        if !(0.0..=1.0).contains(&q.cpu_gate) {
            p.push(format!(
                "quic.cpu_gate = {} is out of range; use a fraction of the CPU limit from 0 (off) to 1 (default 0.85)",
                q.cpu_gate
            ));
        }
        if let Some(c) = q.cpu_limit_cores
            && !(c > 0.0 && c <= 4096.0)
        {
            p.push(format!(
                "quic.cpu_limit_cores = {c} is out of range; give the node's CPU limit in cores (for example 0.5 or 4), or leave it out to read the cgroup's quota"
            ));
        }
        if !(0..=19).contains(&q.shared_lane_nice) {
            p.push(format!(
                "quic.shared_lane_nice = {} is out of range; use 0 (the shared lane's threads as the punch lane's) to 19 (default 10)",
                q.shared_lane_nice
            ));
        }
        if q.max_inflight_punches == 0 {
            p.push("quic.max_inflight_punches must be at least 1".into());
        }
        if q.admission_target_ms > 0 && !(1..=60_000).contains(&q.admission_interval_ms) {
            p.push(format!(
                "quic.admission_interval_ms = {} is out of range; use 1 to 60000 (default 100), or set quic.admission_target_ms = 0 to turn admission control off",
                q.admission_interval_ms
            ));
        }
        if raw.admin.max_concurrent_queries == 0
            || raw.admin.query_timeout_s == 0
            || raw.admin.max_scan_records == 0
        {
            p.push(
                "admin.max_concurrent_queries, admin.query_timeout_s and admin.max_scan_records must be at least 1 (defaults 4, 10, 5000000)"
                    .into(),
            );
        }
        for (i, t) in raw.admin.tokens.iter().enumerate() {
            let at = format!("admin.tokens[{i}] ('{}')", t.name);
            let (tenant, dept, emp) = (
                t.tenant.is_some(),
                t.department.is_some(),
                t.employee.is_some(),
            );
            match (t.role.as_str(), tenant, dept, emp) {
                ("super", false, false, false)
                | ("tenant", true, false, false)
                | ("supervisor", true, true, false)
                | ("employee", true, false, true) => {}
                ("super", ..) => p.push(format!(
                    "{at}: a super token has no tenant, department or employee; remove them"
                )),
                ("tenant", ..) => p.push(format!(
                    "{at}: role \"tenant\" needs `tenant = \"...\"` and no department or employee"
                )),
                ("supervisor", ..) => p.push(format!(
                    "{at}: role \"supervisor\" needs `tenant = \"...\"` and `department = \"...\"` (and no employee)"
                )),
                ("employee", ..) => p.push(format!(
                    "{at}: role \"employee\" needs `tenant = \"...\"` and `employee = \"...\"` (and no department)"
                )),
                (r, ..) => p.push(format!(
                    "{at}: role {r:?} is unknown; use \"super\", \"tenant\", \"supervisor\" or \"employee\""
                )),
            }
            if t.token_file.is_some() == t.token_env.is_some() {
                p.push(format!("{at}: set exactly one of token_file or token_env"));
            }
        }
        let f = &raw.fences;
        if !(f.min_radius_m.is_finite() && f.min_radius_m > 0.0) {
            p.push("fences.min_radius_m must be a positive number of metres".into());
        }
        if !(f.max_radius_m.is_finite() && f.max_radius_m >= f.min_radius_m) {
            p.push("fences.max_radius_m must be at least fences.min_radius_m".into());
        }
        if raw.limits.max_batch_fixes == 0 || raw.limits.max_batch_fixes > 64 {
            p.push(format!(
                "limits.max_batch_fixes = {} is out of range; use 1 to 64 (a datagram holds at most 64 fixes)",
                raw.limits.max_batch_fixes
            ));
        }
        let d = &raw.dedup;
        if d.repeat_window_s < 60 {
            p.push(format!(
                "dedup.repeat_window_s = {} is below 60; the contract promises five-minute repeat merging (300)",
                d.repeat_window_s
            ));
        }
        if d.idempotency_horizon_s < d.repeat_window_s {
            p.push(format!(
                "dedup.idempotency_horizon_s = {} is shorter than dedup.repeat_window_s = {}; a resend must be recognised at least as long as a repeat is merged (86400 recommended)",
                d.idempotency_horizon_s, d.repeat_window_s
            ));
        }
        if d.idempotency_horizon_s > 7 * 86_400 {
            p.push(format!(
                "dedup.idempotency_horizon_s = {} is over 7 days; the log is replayed over the horizon at start, so keep it at most 604800",
                d.idempotency_horizon_s
            ));
        }
        if d.ping_heartbeat_s == 0 {
            p.push("dedup.ping_heartbeat_s must be at least 1".into());
        }
        let ping_cell_resolution = h3o::Resolution::try_from(d.ping_cell_resolution)
            .unwrap_or_else(|_| {
                p.push(format!(
                    "dedup.ping_cell_resolution = {} is not an H3 resolution; use 0 to 15",
                    d.ping_cell_resolution
                ));
                h3o::Resolution::Nine
            });
        let dedup = Dedup {
            repeat_window: Duration::from_secs(d.repeat_window_s),
            idempotency_horizon: Duration::from_secs(d.idempotency_horizon_s),
            ping_heartbeat: Duration::from_secs(d.ping_heartbeat_s),
            ping_cell_resolution,
            max_punch_keys: d.max_punch_keys,
            max_employees: d.max_employees,
            max_devices: d.max_devices,
        };
        if d.max_punch_keys < 1_000 || d.max_devices < 1_000 || d.max_employees < 1_000 {
            p.push(
                "dedup.max_punch_keys, dedup.max_devices and dedup.max_employees must be at least 1000"
                    .into(),
            );
        }
        if raw.tenants.is_empty() {
            p.push("no [[tenants]]: add at least one, e.g. [[tenants]] id = \"acme\"".into());
        }
        let a = &raw.attendance;
        if !(1..=720).contains(&a.offline_window_h) {
            p.push(format!(
                "attendance.offline_window_h = {} is out of range; use 1 to 720 hours",
                a.offline_window_h
            ));
        }
        if !(5..=3_600).contains(&a.qr_step_s) {
            p.push(format!(
                "attendance.qr_step_s = {} is out of range; use 5 to 3600 seconds",
                a.qr_step_s
            ));
        }
        if a.qr_skew_steps > 10 {
            p.push(format!(
                "attendance.qr_skew_steps = {} is above 10; a code would stay valid too long",
                a.qr_skew_steps
            ));
        }
        if !(1..=86_400).contains(&a.clock_skew_s) {
            p.push(format!(
                "attendance.clock_skew_s = {} is out of range; use 1 to 86400 seconds",
                a.clock_skew_s
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in raw.tenants.iter().enumerate() {
            if !valid_tenant_id(&t.id) {
                p.push(format!(
                    "tenants[{i}]: id {:?} must be 1 to 64 characters of a-z, 0-9, '-' or '_' (it becomes a NATS subject token)",
                    t.id
                ));
            }
            if !seen.insert(t.id.as_str()) {
                p.push(format!("tenants[{i}]: id {:?} appears twice", t.id));
            }
        }
        let pings = compile_pings(&raw.pings, &raw.tenants, &mut p);
        let tenant_ids: Vec<String> = raw.tenants.iter().map(|t| t.id.clone()).collect();
        let budgets = crate::budget::compile(
            &raw.budgets,
            &tenant_ids,
            d.max_punch_keys,
            d.max_employees,
            &mut p,
        );
        let sinks = crate::sink::config::compile(&raw.sinks, &mut p);
        let cluster = crate::cluster::settings::compile(
            &raw.cluster,
            &tenant_ids,
            &sinks,
            &raw.node.name,
            raw.attendance
                .results
                .as_deref()
                .is_some_and(is_postgres_url),
            &mut p,
        );
        let log = compile_log(&raw.log, &raw.node.data_dir, &mut p);
        if !p.is_empty() {
            return Err(ConfigErrors {
                source: source.into(),
                problems: p,
            });
        }
        let data_dir = raw.node.data_dir.clone();
        let tenants = raw
            .tenants
            .iter()
            .map(|t| {
                let key = t
                    .key_file
                    .clone()
                    .unwrap_or_else(|| data_dir.join("keys").join(format!("{}.key", t.id)));
                (t.id.clone(), key)
            })
            .collect();
        Ok(Self {
            source: source.into(),
            node_name: raw.node.name,
            data_dir,
            quic_listen,
            quic_punch_listen,
            quic: Quic::compile(raw.quic),
            admin_listen,
            admin_queries: QueryLimits {
                max_concurrent: raw.admin.max_concurrent_queries,
                timeout: Duration::from_secs(raw.admin.query_timeout_s),
                max_scan: raw.admin.max_scan_records,
            },
            admin_tokens: raw.admin.tokens,
            fences: FenceSource {
                path: raw.fences.path,
                load: fencegate_spatial::LoadOptions {
                    min_radius_m: raw.fences.min_radius_m,
                    max_radius_m: raw.fences.max_radius_m,
                },
            },
            allow_sample_fences: false,
            limits: fencegate_schema::Limits {
                max_future_skew_ms: raw.limits.max_future_skew_s as i64 * 1_000,
                max_batch_fixes: raw.limits.max_batch_fixes as usize,
                ..fencegate_schema::Limits::default()
            },
            dedup,
            pings,
            log,
            tenants,
            attendance: AttendanceConfig {
                rules_path: raw.attendance.rules.clone(),
                holidays_dir: raw.attendance.holidays_dir.clone(),
                settings: crate::rules::AttendanceSettings {
                    offline_window_ms: raw.attendance.offline_window_h as i64 * 3_600_000,
                    qr_step_ms: raw.attendance.qr_step_s as i64 * 1_000,
                    qr_skew_steps: i64::from(raw.attendance.qr_skew_steps),
                    clock_skew_ms: raw.attendance.clock_skew_s as i64 * 1_000,
                },
                seed_sample_rules: false,
                results_url: match raw.attendance.results.as_deref() {
                    Some(u) if is_postgres_url(u) => u.to_owned(),
                    Some(path) => crate::results::store::sqlite_url(Path::new(path)),
                    None => {
                        crate::results::store::sqlite_url(&raw.node.data_dir.join("results.sqlite"))
                    }
                },
            },
            sinks,
            budgets,
            cluster,
        })
    }
}

/// Whether `attendance.results` names PostgreSQL (else a SQLite file).
fn is_postgres_url(u: &str) -> bool {
    u.starts_with("postgres://") || u.starts_with("postgresql://")
}

/// Whether `id` is a usable tenant id: it appears in NATS subjects and file
/// names, so it is restricted to a safe alphabet.
pub fn valid_tenant_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Fence event rules of one tenant: debounce and exit hysteresis. Both are
/// off unless configured (`[pings]` in fencegate.toml), and then every
/// membership change is emitted at the first fix that shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FenceEventRules {
    /// A membership change must persist this long, measured in fix time,
    /// before its Enter or Exit is emitted: a device jittering across an
    /// edge for less than this emits nothing. 0 emits at once.
    pub dwell_ms: i64,
    /// Accuracy-aware exit hysteresis. When set, a fence the device is in
    /// counts as left only at a fix whose distance outside the fence's edge
    /// minus its accuracy exceeds this many metres; a fence that no longer
    /// exists is left at once. `None`: plain containment.
    pub exit_margin_m: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_compile() {
        let c = Config::embedded_defaults();
        assert_eq!(c.quic_listen.to_string(), "127.0.0.1:4433");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.log.dir, PathBuf::from("./data/log"));
        assert_eq!(c.tenants.len(), 2);
    }

    #[test]
    fn an_empty_log_section_is_the_log_s_own_defaults() {
        let c = Config::parse("[[tenants]]\nid = \"acme\"", "test").unwrap();
        assert_eq!(c.log, LogConfig::new("./data/log"));
        let example =
            Config::parse(include_str!("../../config/fencegate.toml"), "example").unwrap();
        let mut want = LogConfig::new(example.log.dir.clone());
        want.dir = example.log.dir.clone();
        assert_eq!(
            example.log, want,
            "config/fencegate.toml shows other log defaults"
        );
    }

    #[test]
    fn log_problems_name_the_toml_field() {
        let e = Config::parse(
            "[log]\nsegment_bytes = 100\nmax_bytes = 1000\ncommit_max_records = 0\ncommit_delay_us = 5000000",
            "t",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "log.segment_bytes = 100 ",
            "log.max_bytes = 1000 ",
            "log.commit_max_records",
            "log.commit_delay_us = 5000000",
        ] {
            assert!(e.contains(want), "{want} missing from: {e}");
        }
    }

    #[test]
    fn example_config_compiles() {
        let text = include_str!("../../config/fencegate.toml");
        Config::parse(text, "config/fencegate.toml").unwrap();
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = r#"
            [quic]
            listen = "nowhere"
            endpoints = 0
            keep_alive_s = 90
            idle_timeout_s = 60
            [dedup]
            repeat_window_s = 10
            [log]
            segment_bytes = 10
            [[tenants]]
            id = "Bad Tenant"
        "#;
        let err = Config::parse(text, "t.toml").unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "quic.listen",
            "quic.endpoints",
            "keep_alive_s",
            "repeat_window_s",
            "segment_bytes",
            "tenants[0]",
        ] {
            assert!(all.contains(needle), "missing {needle} in:\n{all}");
        }
        assert!(err.problems.len() >= 6);
    }

    /// The compiled `[quic]` keeps each setting's unit: seconds and
    /// milliseconds as the raw names say, 0 keep-alive as none.
    #[test]
    fn quic_compiles_durations_in_their_units() {
        let base = "[[tenants]]\nid = \"acme\"\n";
        let c = Config::parse(
            &format!(
                "[quic]\nidle_timeout_s = 90\nkeep_alive_s = 0\nhello_evict_grace_ms = 250\nadmission_retry_after_ms = 700\n{base}"
            ),
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.quic.idle_timeout,
            quinn::IdleTimeout::try_from(Duration::from_secs(90)).unwrap()
        );
        assert_eq!(c.quic.keep_alive, None);
        assert_eq!(c.quic.hello_evict_grace, Duration::from_millis(250));
        assert_eq!(c.quic.admission_retry_after, Duration::from_millis(700));
        let d = Config::parse(base, "t.toml").unwrap();
        assert_eq!(d.quic.keep_alive, Some(Duration::from_secs(20)));
        assert_eq!(d.quic.identity, None);
    }

    /// Left out, the datagram buffer follows the ping budget (a fleet
    /// allowed 100 datagrams/s in bursts of 100 gets room for 300), keeps
    /// 64 KiB at the defaults, and never exceeds 8 MiB; set, it is used
    /// as is unless it cannot hold one datagram.
    #[test]
    fn datagram_buffer_is_sized_from_the_ping_budget() {
        let base = "[[tenants]]\nid = \"acme\"\n";
        let at = |quic: &str| Config::parse(&format!("[quic]\n{quic}\n{base}"), "t.toml");
        assert_eq!(at("").unwrap().quic.datagram_buffer, 65_536);
        assert_eq!(
            at("ping_burst = 100\nping_datagrams_per_s = 100")
                .unwrap()
                .quic
                .datagram_buffer,
            300 * 1_452
        );
        assert_eq!(
            at("ping_burst = 1000000\nping_datagrams_per_s = 1000000")
                .unwrap()
                .quic
                .datagram_buffer,
            8 << 20
        );
        let set = "datagram_buffer = 4096\nping_burst = 100\nping_datagrams_per_s = 100";
        assert_eq!(at(set).unwrap().quic.datagram_buffer, 4_096);
        let err = at("datagram_buffer = 1000").unwrap_err().to_string();
        assert!(
            err.contains("quic.datagram_buffer = 1000 is below one datagram (1452 bytes)"),
            "{err}"
        );
    }

    #[test]
    fn punch_listen_is_optional_and_must_not_be_the_main_address() {
        let base = "[[tenants]]\nid = \"acme\"\n";
        let at = |quic: &str| Config::parse(&format!("[quic]\n{quic}\n{base}"), "t.toml");
        assert_eq!(at("").unwrap().quic_punch_listen, None);
        let c = at("punch_listen = \"0.0.0.0:4434\"").unwrap();
        assert_eq!(c.quic_punch_listen, Some("0.0.0.0:4434".parse().unwrap()));
        let err = at("listen = \"0.0.0.0:4433\"\npunch_listen = \"0.0.0.0:4433\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("quic.punch_listen = \"0.0.0.0:4433\" is quic.listen's address; give punches another port (for example 0.0.0.0:4434)"),
            "{err}"
        );
        let err = at("punch_listen = \"port 4434\"").unwrap_err().to_string();
        assert!(
            err.contains("quic.punch_listen = \"port 4434\" is not an IP:port address"),
            "{err}"
        );
    }

    /// The shared lane is lowered only when punches have an address of
    /// their own (otherwise punches are on it too), and a value outside
    /// 0..=19 is refused by name.
    #[test]
    fn shared_lane_nice_applies_only_with_a_punch_address() {
        let base = "[[tenants]]\nid = \"acme\"\n";
        let at = |quic: &str| Config::parse(&format!("[quic]\n{quic}\n{base}"), "t.toml");
        assert_eq!(at("").unwrap().quic.shared_lane_nice, 0);
        assert_eq!(
            at("shared_lane_nice = 15").unwrap().quic.shared_lane_nice,
            0
        );
        let with = "punch_listen = \"127.0.0.1:4434\"";
        assert_eq!(at(with).unwrap().quic.shared_lane_nice, 10);
        let c = at(&format!("{with}\nshared_lane_nice = 0")).unwrap();
        assert_eq!(c.quic.shared_lane_nice, 0);
        let err = at(&format!("{with}\nshared_lane_nice = 25"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("quic.shared_lane_nice = 25 is out of range; use 0 (the shared lane's threads as the punch lane's) to 19 (default 10)"),
            "{err}"
        );
    }

    /// The CPU gate runs only beside a punch address (without one, gating
    /// `listen` would gate punches too); out-of-range values are refused by
    /// name.
    #[test]
    fn cpu_gate_applies_only_with_a_punch_address_and_ranges_are_checked() {
        let base = "[[tenants]]\nid = \"acme\"\n";
        let at = |quic: &str| Config::parse(&format!("[quic]\n{quic}\n{base}"), "t.toml");
        assert_eq!(at("").unwrap().quic.cpu_gate, 0.0);
        let with = "punch_listen = \"127.0.0.1:4434\"";
        let c = at(with).unwrap();
        assert_eq!((c.quic.cpu_gate, c.quic.cpu_limit_cores), (0.85, None));
        let c = at(&format!("{with}\ncpu_gate = 0.5\ncpu_limit_cores = 1.5")).unwrap();
        assert_eq!((c.quic.cpu_gate, c.quic.cpu_limit_cores), (0.5, Some(1.5)));
        let err = at(&format!("{with}\ncpu_gate = 1.5\ncpu_limit_cores = 0"))
            .unwrap_err()
            .to_string();
        for want in [
            "quic.cpu_gate = 1.5 is out of range; use a fraction of the CPU limit from 0 (off) to 1 (default 0.85)",
            "quic.cpu_limit_cores = 0 is out of range; give the node's CPU limit in cores",
        ] {
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn edge_budgets_default_and_errors_name_the_setting_and_fix() {
        let base = "[[tenants]]\nid = \"acme\"\n";
        let c = Config::parse(base, "t.toml").unwrap();
        assert_eq!(
            (
                c.quic.hello_timeout.as_millis(),
                c.quic.stream_read_timeout.as_millis(),
                c.quic.ping_datagrams_per_s,
                c.quic.ping_burst
            ),
            (2_000, 2_000, 1, 10)
        );
        let err = Config::parse(
            &format!(
                "[quic]\nauth_timeout_ms = 5000\nhello_timeout_ms = 0\nstream_read_timeout_ms = 0\nping_datagrams_per_s = 0\nping_burst = 0\n{base}"
            ),
            "t.toml",
        )
        .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "write `hello_timeout_ms = 5000` instead",
            "quic.hello_timeout_ms = 0 is out of range",
            "quic.stream_read_timeout_ms = 0 is out of range",
            "quic.ping_datagrams_per_s = 0 is out of range",
            "quic.ping_burst = 0 is out of range",
        ] {
            assert!(all.contains(needle), "missing {needle} in:\n{all}");
        }
    }

    #[test]
    fn pings_overrides_merge_over_the_node_defaults_and_errors_name_the_fix() {
        let base = "[[tenants]]\nid = \"acme\"\n[[tenants]]\nid = \"globex\"\n";
        let c = Config::parse(
            &format!("[pings]\ndwell_s = 30\n[pings.tenants.acme]\nexit_margin_m = 25.0\n{base}"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.pings.default.dwell_ms, 30_000);
        assert_eq!(c.pings.default.exit_margin_m, None);
        assert_eq!(
            c.pings.tenants,
            [(
                "acme".to_owned(),
                FenceEventRules {
                    dwell_ms: 30_000,
                    exit_margin_m: Some(25.0)
                }
            )]
        );
        let off = Config::parse(base, "t.toml").unwrap();
        assert_eq!(off.pings.default, Default::default(), "off unless set");

        let err = Config::parse(
            &format!(
                "[pings]\ndwell_s = 100000\nexit_margin_m = -1.0\n[pings.tenants.initech]\ndwell_s = 5\n{base}"
            ),
            "t.toml",
        )
        .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "pings.dwell_s = 100000 is out of range",
            "pings.exit_margin_m = -1 is out of range",
            "pings.tenants.initech: no [[tenants]] block",
        ] {
            assert!(all.contains(needle), "missing {needle} in:\n{all}");
        }
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let err = Config::parse("[quic]\nlisten_addr = \"x\"\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn tenant_ids_are_subject_safe() {
        assert!(valid_tenant_id("acme-01"));
        assert!(!valid_tenant_id(""));
        assert!(!valid_tenant_id("a.b"));
        assert!(!valid_tenant_id("A"));
        assert!(!valid_tenant_id(&"a".repeat(65)));
    }
}
