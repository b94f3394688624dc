//! The QUIC edge: quinn endpoints, per-connection tasks, authentication,
//! and the three message paths of `docs/PROTOCOL.md`:
//!
//! - punches on bidirectional streams, one request and one ack each, the
//!   ack sent only after the record is durable in the log;
//! - ping batches in QUIC datagrams, no reply;
//! - backlog ping batches on unidirectional streams, length-prefixed.
//!
//! Only this module (through [`crate::clock`]) reads the clock and touches
//! sockets; it hands `now` and verified frames to the [`Pipeline`].

pub mod admission;
mod claim;
pub mod cpu_gate;
pub mod drops;
pub mod ping_rate;
pub mod priority;
pub mod tls;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fencegate_schema::{
    BusyMsg, Channel, HelloAckMsg, Limits, PunchAckRef, Reason, ReplyMsg, Request, Verdict, close,
    parse_frame, punch_id_of,
};
use flatbuffers::FlatBufferBuilder;
use quinn::VarInt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, Keyring};
use crate::backlog;
use crate::clock;
use crate::log::{LogError, LogHandle, PingAppendError, RecordBatch};
use crate::metrics::{EdgeMetrics, RefusedOn};
use crate::pipeline::{AckInfo, PendingPunch, Pipeline, PunchDecision, Scratch, Session};
use crate::rules::AccuracyPolicy;
use admission::{Admission, AdmissionSettings};

thread_local! {
    /// Per-worker-thread buffers: the pipeline runs synchronously between
    /// awaits, so one scratch per thread serves every connection on it.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    static REPLY: RefCell<FlatBufferBuilder<'static>> = RefCell::new(FlatBufferBuilder::with_capacity(256));
}

/// Retry-after for a resend that raced its first copy.
const IN_FLIGHT_RETRY_MS: u32 = 50;
/// Retry-after when the node sheds load.
const OVERLOAD_RETRY_MS: u32 = 200;
/// Retry-after when the log is at its size cap.
const LOG_FULL_RETRY_MS: u32 = 5_000;

/// Everything a connection task needs, shared by all of them.
#[derive(Debug)]
pub struct EdgeContext {
    /// The verification pipeline.
    pub pipeline: Arc<Pipeline>,
    /// The durable log records are appended to.
    pub log: LogHandle,
    /// Tenant keys for device tokens.
    pub keyring: Arc<Keyring>,
    /// Frame limits.
    pub limits: Limits,
    /// Edge settings.
    pub settings: EdgeSettings,
    /// Metric handles.
    pub metrics: EdgeMetrics,
    /// Connection set-up state of each listener ([`Lane`]): the main
    /// address and the punch-only address have their own set-up bound and
    /// admission, so a flood of one cannot refuse the other's connections.
    lanes: [SetupLane; 2],
    /// Admission control on punch sojourn (frame read → ack ready): refuses
    /// new connections and answers new punches `Busy` while over target.
    pub punch_admission: Admission,
    inflight: Arc<Semaphore>,
    connections: AtomicUsize,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// Tracks every connection and stream task, for draining.
    pub tasks: TaskTracker,
    /// Ping datagram token buckets, one per device across its connections.
    pub ping_buckets: ping_rate::DeviceBuckets,
    /// Cross-node claims (`[cluster]` with `claims = true`); `None` on a
    /// lone node. Set before the context is shared.
    pub cluster: Option<Arc<crate::cluster::PunchClaims>>,
    /// Seconds since the first endpoint started, advanced by one task for
    /// the node: a connection tallies its datagrams at the first one it
    /// reads in a new second ([`TallyWhen`]).
    tally_epoch: AtomicU64,
    tally_epoch_started: AtomicBool,
}

/// Edge settings, taken from `[quic]`.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Most open connections.
    pub max_connections: usize,
    /// Handshakes per second above which Retry is required.
    pub retry_above_handshakes_per_s: u32,
    /// Connections in set-up (handshake and Hello) above which new ones are
    /// refused.
    pub max_handshakes_in_flight: usize,
    /// Time a connection has, from the end of its handshake, to open and
    /// finish its Hello stream (`quic.hello_timeout_ms`).
    pub hello_timeout: Duration,
    /// How long a connection must have waited for its Hello before it may
    /// be evicted to make room (`quic.hello_evict_grace_ms`).
    pub hello_evict_grace: Duration,
    /// Time a punch stream has to deliver its frame and FIN, before it may
    /// take a node-wide in-flight slot (`quic.stream_read_timeout_ms`).
    pub stream_read_timeout: Duration,
    /// Ping datagrams per second per connection (`quic.ping_datagrams_per_s`).
    pub ping_datagrams_per_s: u32,
    /// Ping datagrams allowed at once above the rate (`quic.ping_burst`).
    pub ping_burst: u32,
    /// Whether to accept 0-RTT.
    pub zero_rtt: bool,
    /// Repeat window reported in HelloAck, seconds.
    pub repeat_window_s: u32,
    /// Admission control (`quic.admission_*`).
    pub admission: AdmissionSettings,
    /// How a new connection shed before the key exchange is turned away
    /// (`quic.shed_connections`).
    pub shed_connections: crate::config::ShedConnections,
}

impl EdgeContext {
    /// A context; `max_inflight_punches` bounds punches processed at once.
    pub fn new(
        pipeline: Arc<Pipeline>,
        log: LogHandle,
        keyring: Arc<Keyring>,
        limits: Limits,
        settings: EdgeSettings,
        max_inflight_punches: usize,
    ) -> Self {
        let admission = settings.admission;
        let max_setup = settings.max_handshakes_in_flight;
        Self {
            pipeline,
            log,
            keyring,
            limits,
            settings,
            metrics: EdgeMetrics::register(),
            lanes: [
                SetupLane::new(admission, max_setup),
                SetupLane::new(admission, max_setup),
            ],
            punch_admission: Admission::new(admission, clock::instant()),
            inflight: Arc::new(Semaphore::new(max_inflight_punches)),
            connections: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            ping_buckets: ping_rate::DeviceBuckets::default(),
            cluster: None,
            tally_epoch: AtomicU64::new(0),
            tally_epoch_started: AtomicBool::new(false),
        }
    }

    /// The current tally second ([`EdgeContext::tally_epoch`]'s field).
    fn tally_epoch(&self) -> u64 {
        self.tally_epoch.load(Ordering::Relaxed)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connections accepted on `lane` and not yet authenticated.
    pub fn handshaking(&self, lane: Lane) -> usize {
        self.lane(lane).handshaking.load(Ordering::Relaxed)
    }

    /// The set-up state of `lane`.
    fn lane(&self, lane: Lane) -> &SetupLane {
        &self.lanes[lane as usize]
    }

    /// Turns away a new connection shed before any key exchange, the way
    /// `quic.shed_connections` says: unanswered (the client's QUIC stack
    /// resends its Initial, and a later copy may find room) or refused
    /// (`CONNECTION_REFUSED`: the client backs off and reconnects).
    fn turn_away(&self, incoming: quinn::Incoming) {
        match self.settings.shed_connections {
            crate::config::ShedConnections::Silent => incoming.ignore(),
            crate::config::ShedConnections::Refuse => incoming.refuse(),
        }
    }

    /// Counts a handshake attempt on `lane`; true when this second's count
    /// is over the Retry threshold.
    fn handshake_flood(&self, lane: Lane, now_ms: i64) -> bool {
        let l = self.lane(lane);
        let sec = now_ms / 1_000;
        if l.handshake_second.swap(sec, Ordering::Relaxed) != sec {
            l.handshakes_this_second.store(0, Ordering::Relaxed);
        }
        l.handshakes_this_second.fetch_add(1, Ordering::Relaxed)
            >= self.settings.retry_above_handshakes_per_s
    }
}

/// The listener a connection arrived on (docs/PROTOCOL.md §1, "Two
/// addresses").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// `quic.listen`: every message kind.
    Main = 0,
    /// `quic.punch_listen`: Hello and punches only. Its transport
    /// parameters allow no datagrams and no unidirectional streams, so a
    /// fleet's pings cannot reach its socket, its kernel buffer or its
    /// set-up bound.
    Punch = 1,
}

/// Connection set-up state of one listener: the connections in set-up,
/// the ones awaiting their Hello (eviction candidates), admission control
/// on set-up delay, and the handshake rate that triggers Retry. Kept per
/// listener so a flood on the main address (whose set-up delays grow when
/// its socket drops packets) does not refuse connections on the punch
/// address.
#[derive(Debug)]
struct SetupLane {
    /// Admission control on connection set-up delay (`Incoming` → Hello
    /// authenticated): its limit on connections in set-up, which falls
    /// while the typical set-up is over target, refuses new ones when full.
    admission: Admission,
    handshaking: Arc<AtomicUsize>,
    awaiting_hello: AwaitingHello,
    /// How long authenticated clients have recently taken from the end
    /// of the handshake to their Hello: stretches the eviction grace
    /// while real clients are slow (a fleet reconnecting at once).
    hello_delay: HelloDelay,
    handshake_second: AtomicI64,
    handshakes_this_second: AtomicU32,
}

impl SetupLane {
    fn new(settings: AdmissionSettings, max_setup: usize) -> Self {
        Self {
            admission: Admission::new(settings, clock::instant()).with_max_limit(max_setup),
            handshaking: Arc::new(AtomicUsize::new(0)),
            awaiting_hello: AwaitingHello::default(),
            hello_delay: HelloDelay::default(),
            handshake_second: AtomicI64::new(0),
            handshakes_this_second: AtomicU32::new(0),
        }
    }
}

/// Transport settings sized for very many small, mostly idle connections.
/// On the punch lane the peer may open no unidirectional stream and send no
/// datagram (quinn leaves `max_datagram_frame_size` out of the transport
/// parameters, so a DATAGRAM frame there is a protocol violation): pings
/// and backlogs belong on the main address.
pub fn transport_config(q: &crate::config::Quic, lane: Lane) -> quinn::TransportConfig {
    let (uni, datagrams) = match lane {
        Lane::Main => (q.max_uni_streams, Some(q.datagram_buffer)),
        Lane::Punch => (0, None),
    };
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(q.max_bidi_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(uni))
        .stream_receive_window(VarInt::from_u32(q.stream_window))
        .receive_window(VarInt::from_u32(q.connection_window))
        // Replies are tiny; a small send window keeps per-connection memory low.
        .send_window(u64::from(q.stream_window))
        .max_idle_timeout(Some(q.idle_timeout))
        .keep_alive_interval(q.keep_alive)
        .datagram_receive_buffer_size(datagrams)
        .datagram_send_buffer_size(0);
    t
}

/// Counts resumed handshakes: a ticket that decrypts is a resumption.
#[derive(Debug)]
struct CountingTicketer {
    inner: Arc<dyn rustls::server::ProducesTickets>,
    resumed: metrics::Counter,
}

impl rustls::server::ProducesTickets for CountingTicketer {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }
    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(plain)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let r = self.inner.decrypt(cipher);
        if r.is_some() {
            self.resumed.increment(1);
        }
        r
    }
}

/// Counts resumed handshakes with stateful tickets (0-RTT on): a ticket id
/// found in the cache is a resumption.
#[derive(Debug)]
struct CountingStore {
    inner: Arc<dyn rustls::server::StoresServerSessions>,
    resumed: metrics::Counter,
}

impl rustls::server::StoresServerSessions for CountingStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(key)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        // TLS 1.3 takes the session out, so a ticket resumes once.
        let r = self.inner.take(key);
        if r.is_some() {
            self.resumed.increment(1);
        }
        r
    }
    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// Builds the quinn server configuration of each listener, indexed by
/// [`Lane`]. Both share one TLS configuration, so a session ticket issued
/// on one address resumes on the other.
pub fn server_configs(
    id: &tls::ServerIdentity,
    q: &crate::config::Quic,
    metrics: &EdgeMetrics,
) -> anyhow::Result<[quinn::ServerConfig; 2]> {
    let mut crypto = tls::server_crypto(id, q.zero_rtt, q.session_cache)?;
    if crypto.ticketer.enabled() {
        crypto.ticketer = Arc::new(CountingTicketer {
            inner: crypto.ticketer.clone(),
            resumed: metrics.handshakes_resumed.clone(),
        });
    } else {
        crypto.session_storage = Arc::new(CountingStore {
            inner: crypto.session_storage.clone(),
            resumed: metrics.handshakes_resumed.clone(),
        });
    }
    let quic = Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
            .context("the TLS configuration cannot serve QUIC")?,
    );
    let config = |lane| {
        let mut cfg = quinn::ServerConfig::with_crypto(quic.clone());
        cfg.transport_config(Arc::new(transport_config(q, lane)));
        // Devices behind carrier NAT change address; let them migrate.
        cfg.migration(true);
        cfg.max_incoming(q.max_connections.min(1 << 16));
        cfg
    };
    Ok([config(Lane::Main), config(Lane::Punch)])
}

/// Binds `count` UDP sockets to `addr` (with `SO_REUSEPORT` when more than
/// one) and starts a quinn endpoint on each; `field` names the setting the
/// address came from, for the error when it is taken. With `gate`, reads
/// of every socket wait while it is closed (`cpu_gate.rs`).
pub fn bind_endpoints(
    field: &str,
    addr: SocketAddr,
    count: usize,
    server: quinn::ServerConfig,
    gate: Option<&Arc<cpu_gate::CpuGate>>,
) -> anyhow::Result<Vec<quinn::Endpoint>> {
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut out = Vec::with_capacity(count);
    let mut bound = addr;
    for i in 0..count {
        let domain = socket2::Domain::for_address(bound);
        let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
            .context("cannot create a UDP socket")?;
        #[cfg(unix)]
        if count > 1 {
            sock.set_reuse_port(true)
                .context("cannot set SO_REUSEPORT")?;
        }
        // Bursts of datagrams must not overflow the kernel buffer.
        let _ = sock.set_recv_buffer_size(4 << 20);
        let _ = sock.set_send_buffer_size(4 << 20);
        sock.bind(&bound.into()).with_context(|| {
            format!("{field} {bound}: cannot bind; is another process using it?")
        })?;
        sock.set_nonblocking(true)?;
        let udp: std::net::UdpSocket = sock.into();
        #[cfg(unix)]
        if let Some(inode) = drops::socket_inode(&udp) {
            drops::register(inode);
        }
        if i == 0 {
            // Port 0 (tests): the others join the port the first one got.
            bound = udp.local_addr()?;
        }
        let mut socket = quinn::Runtime::wrap_udp_socket(runtime.as_ref(), udp)
            .context("cannot start a QUIC endpoint")?;
        if let Some(gate) = gate {
            socket = gate.wrap(socket);
        }
        let ep = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server.clone()),
            socket,
            runtime.clone(),
        )
        .context("cannot start a QUIC endpoint")?;
        out.push(ep);
    }
    Ok(out)
}

/// Accepts connections on `endpoint`, a listener of `lane`, until shutdown.
pub async fn run_endpoint(ctx: Arc<EdgeContext>, endpoint: quinn::Endpoint, lane: Lane) {
    if !ctx.tally_epoch_started.swap(true, Ordering::Relaxed) {
        let c = ctx.clone();
        ctx.tasks.spawn(async move {
            let mut every = tokio::time::interval(DATAGRAM_TALLY_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => { c.tally_epoch.fetch_add(1, Ordering::Relaxed); }
                    () = c.shutdown.cancelled() => break,
                }
            }
        });
    }
    // Kernel drops of the bound sockets (every endpoint's sampler shares
    // one registry, so none is counted twice).
    ctx.tasks.spawn(drops::run_sampler(
        ctx.metrics.datagrams_kernel.clone(),
        ctx.shutdown.clone(),
    ));
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => break },
            () = ctx.shutdown.cancelled() => break,
        };
        if ctx.connections() >= ctx.settings.max_connections {
            ctx.metrics.handshakes_failed.increment(1);
            ctx.turn_away(incoming);
            continue;
        }
        // One clock read per connection attempt: admission's `now`, and the
        // start of this connection's wait for the runtime.
        let arrived = clock::instant();
        let setup = ctx.lane(lane);
        let in_setup = ctx.handshaking(lane);
        let admitted = setup.admission.admit(arrived, in_setup);
        ctx.metrics.setup_limit[lane as usize].set(setup.admission.limit() as f64);
        ctx.metrics.in_setup[lane as usize].set(in_setup as f64);
        if ctx.punch_admission.overloaded(arrived) {
            // Punches stood above target for a whole interval: shed
            // before any key exchange (the client resends its Initial or
            // backs off, docs/PROTOCOL.md §9). A shed Initial costs a
            // fraction of a handshake.
            ctx.metrics.shed(RefusedOn::Connection, Reason::Overloaded);
            ctx.turn_away(incoming);
            continue;
        }
        if !admitted || in_setup >= ctx.settings.max_handshakes_in_flight {
            // The set-up limit (admission control's, or the hard bound)
            // is full. If one of its holders finished its handshake long
            // enough ago to have sent a Hello, it is idle (or hostile):
            // keeping it would lock real devices out until its Hello
            // deadline, and idle holders send no set-up samples, so the
            // limit would never rise. Its task sees the close and frees
            // the slot; this connection takes it meanwhile.
            let grace = setup
                .hello_delay
                .grace(ctx.settings.hello_evict_grace, ctx.settings.hello_timeout);
            if let Some(idle) = setup.awaiting_hello.evict_oldest(arrived, grace) {
                ctx.metrics.handshakes_evicted.increment(1);
                close_with(
                    &idle,
                    close::AUTH_TIMEOUT,
                    "AUTH_TIMEOUT",
                    &"evicted: no Hello while the set-up limit was full",
                );
            } else {
                // Every holder is really setting up. Shedding here costs
                // one Initial packet; accepting would queue the handshake
                // behind the others, past the point where its client gives
                // up, and spend a key exchange for nothing.
                if admitted {
                    ctx.metrics.handshakes_shed.increment(1);
                } else {
                    ctx.metrics.shed(RefusedOn::Connection, Reason::Overloaded);
                }
                ctx.turn_away(incoming);
                continue;
            }
        }
        if !incoming.remote_address_validated()
            && incoming.may_retry()
            && ctx.handshake_flood(lane, clock::unix_ms())
        {
            // Make the client prove its address before we spend a handshake on it.
            let _ = incoming.retry();
            continue;
        }
        let ctx2 = ctx.clone();
        let handshaking = Handshaking::start(&setup.handshaking);
        ctx.tasks.spawn(async move {
            let connecting = match incoming.accept() {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "handshake refused");
                    ctx2.metrics.handshakes_failed.increment(1);
                    return;
                }
            };
            let conn = if ctx2.settings.zero_rtt {
                match connecting.into_0rtt() {
                    Ok((conn, _accepted)) => conn,
                    Err(connecting) => match connecting.await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(error = %e, "handshake failed");
                            ctx2.metrics.handshakes_failed.increment(1);
                            return;
                        }
                    },
                }
            } else {
                match connecting.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "handshake failed");
                        ctx2.metrics.handshakes_failed.increment(1);
                        return;
                    }
                }
            };
            ctx2.metrics.handshakes_completed.increment(1);
            ctx2.connections.fetch_add(1, Ordering::Relaxed);
            ctx2.metrics.connections.increment(1.0);
            handle_connection(&ctx2, conn, lane, handshaking, arrived).await;
            ctx2.connections.fetch_sub(1, Ordering::Relaxed);
            ctx2.metrics.connections.decrement(1.0);
        });
    }
}

/// One connection being set up, from its first Initial packet to its
/// authenticated Hello; counted down when dropped, however that ends (done,
/// failed, timed out, or its task cancelled at shutdown). The Hello counts
/// because an overloaded node delays it as much as the handshake, and a
/// connection that misses the auth timeout wasted its key exchange.
struct Handshaking(Arc<AtomicUsize>);

impl Handshaking {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connections that finished their handshake and have not yet sent their
/// Hello, oldest first: the candidates for eviction when the set-up bound
/// is full. A lock per connection set-up, never per record.
#[derive(Debug, Default)]
struct AwaitingHello {
    next: AtomicU64,
    conns: Mutex<BTreeMap<u64, (Instant, quinn::Connection)>>,
}

impl AwaitingHello {
    /// Registers `conn` as waiting for its Hello since `since`; the guard
    /// removes it when the Hello arrives or the connection ends.
    fn register(&self, conn: &quinn::Connection, since: Instant) -> AwaitingGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (since, conn.clone()));
        AwaitingGuard { reg: self, id }
    }

    /// Takes out the connection that has waited longest for its Hello, if
    /// it has waited at least `grace`.
    fn evict_oldest(&self, now: Instant, grace: Duration) -> Option<quinn::Connection> {
        let mut m = self.lock();
        let (&id, (since, _)) = m.first_key_value()?;
        if now.saturating_duration_since(*since) < grace {
            return None;
        }
        m.remove(&id).map(|(_, c)| c)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Instant, quinn::Connection)>> {
        // The map stays consistent even if a holder panicked: every
        // operation on it is a single insert or remove.
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running estimate of how long authenticated clients take from the end
/// of their handshake to their Hello, which sets the eviction grace.
///
/// A fixed grace cannot tell an idle connection from a slow real one. When
/// a fleet of thousands reconnects at once, its clients (and this node)
/// are short of CPU, their Hellos come hundreds of milliseconds after the
/// handshake, and a 200 ms grace closed connections whose key exchange was
/// already paid for: each eviction cost a second handshake and fed the
/// crowd (docs/PERFORMANCE.md, "Connect storm: evictions"). Idle or
/// hostile holders send no Hello and so add no sample: they cannot lower
/// the grace, and a client that authenticates slowly on purpose can raise
/// it only to half the Hello timeout.
#[derive(Debug, Default)]
struct HelloDelay {
    /// Exponentially weighted mean of recent Hello delays, µs.
    mean_us: AtomicU64,
}

impl HelloDelay {
    /// A sample's weight in the mean: 1/8, so that a few far clients do
    /// not move it, and a crowd of slow ones does within tens of set-ups.
    const WEIGHT_SHIFT: u32 = 3;
    /// The grace is this many times the mean delay.
    const GRACE_FACTOR: u32 = 3;

    /// Adds one authenticated connection's handshake → Hello delay.
    fn observe(&self, delay: Duration) {
        let sample = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        // Lost races only drop a sample; the mean stays a mean.
        let _ = self
            .mean_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mean| {
                let next = if sample >= mean {
                    mean + ((sample - mean) >> Self::WEIGHT_SHIFT)
                } else {
                    mean - ((mean - sample) >> Self::WEIGHT_SHIFT)
                };
                Some(next)
            });
    }

    /// The eviction grace: three times the mean delay, at least `floor`
    /// (`quic.hello_evict_grace_ms`) and at most half of `hello_timeout`.
    fn grace(&self, floor: Duration, hello_timeout: Duration) -> Duration {
        let mean = Duration::from_micros(self.mean_us.load(Ordering::Relaxed));
        let cap = (hello_timeout / 2).max(floor);
        (mean * Self::GRACE_FACTOR).clamp(floor, cap)
    }
}

/// Removes one connection from [`AwaitingHello`] when dropped.
struct AwaitingGuard<'a> {
    reg: &'a AwaitingHello,
    id: u64,
}

impl Drop for AwaitingGuard<'_> {
    fn drop(&mut self) {
        self.reg.lock().remove(&self.id);
    }
}

/// A token bucket for one device's ping datagrams, in thousandths of a
/// datagram so that integer arithmetic refills it exactly. It lives in
/// [`ping_rate::DeviceBuckets`], shared by the device's connections; the
/// time it is given is the one clock read each datagram already costs.
#[derive(Debug, Clone, Copy)]
struct PingBucket {
    level: u64,
    cap: u64,
    /// Thousandths of a datagram per millisecond = datagrams per second.
    per_ms: u64,
    last_ms: i64,
}

impl PingBucket {
    const ONE: u64 = 1_000;

    /// A full bucket: a device may send its burst at once after connecting.
    fn new(per_s: u32, burst: u32, now_ms: i64) -> Self {
        let cap = u64::from(burst.max(1)) * Self::ONE;
        Self {
            level: cap,
            cap,
            per_ms: u64::from(per_s),
            last_ms: now_ms,
        }
    }

    /// Refills for the time since the last datagram and takes one token;
    /// false when the datagram is over the rate. A wall clock stepped back
    /// refills nothing and restarts from the new time, so a step never
    /// starves a device for longer than the step's own refill.
    fn take(&mut self, now_ms: i64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms).max(0) as u64;
        self.last_ms = now_ms;
        self.level = self
            .level
            .saturating_add(elapsed.saturating_mul(self.per_ms))
            .min(self.cap);
        if self.level >= Self::ONE {
            self.level -= Self::ONE;
            true
        } else {
            false
        }
    }
}

/// The close code and `Reason` of a refused credential. A device id that
/// differs from the token's is a bad token: the token is bound to the
/// device it was issued for (docs/PROTOCOL.md §3).
fn auth_close(e: AuthError) -> (u32, Reason) {
    match e {
        AuthError::BadToken | AuthError::DeviceMismatch => (close::BAD_TOKEN, Reason::BadToken),
        AuthError::Expired => (close::TOKEN_EXPIRED, Reason::TokenExpired),
        AuthError::WrongTenant => (close::WRONG_TENANT, Reason::WrongTenant),
    }
}

/// Closes `conn` with `code` and, as the reason phrase, exactly the name
/// docs/PROTOCOL.md §8 promises (a `Reason` name such as `TokenExpired`, or
/// the close code's own name where no `Reason` fits): clients may match
/// on it. The human explanation goes to the log instead.
fn close_with(
    conn: &quinn::Connection,
    code: u32,
    phrase: &'static str,
    why: &dyn std::fmt::Display,
) {
    tracing::debug!(remote = %conn.remote_address(), code, phrase, "closing connection: {why}");
    conn.close(varint(code), phrase.as_bytes());
}

/// The phrase for a close caused by `r`: its name.
fn reason_name(r: Reason) -> &'static str {
    r.variant_name().unwrap_or("InternalError")
}

fn varint(code: u32) -> VarInt {
    VarInt::from_u32(code)
}

/// Why the Hello stream could not be read.
enum HelloStreamError {
    /// The connection ended (the client left, or it was evicted).
    Gone,
    /// The stream was opened but could not be read to its end.
    Read(quinn::ReadToEndError),
}

/// Authenticates the connection with its first bidirectional stream, which
/// must be opened and finished within `hello_timeout` of the handshake: one
/// deadline for both, so a client cannot double it by opening the stream
/// late and then trickling it.
async fn authenticate(ctx: &EdgeContext, conn: &quinn::Connection) -> Option<Session> {
    let hello_stream = async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|_| HelloStreamError::Gone)?;
        let buf = recv
            .read_to_end(ctx.limits.max_frame_bytes)
            .await
            .map_err(HelloStreamError::Read)?;
        Ok((send, buf))
    };
    let (mut send, buf) = match tokio::time::timeout(ctx.settings.hello_timeout, hello_stream).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(HelloStreamError::Gone)) => return None,
        Ok(Err(HelloStreamError::Read(e))) => {
            // A stream reset or lost connection is the client going away,
            // not a refused frame: only an oversized Hello is counted.
            let r = if matches!(e, quinn::ReadToEndError::TooLong) {
                ctx.metrics.refused(RefusedOn::Hello, Reason::Oversize);
                Reason::Oversize
            } else {
                Reason::Malformed
            };
            close_with(
                conn,
                close::PROTOCOL_VIOLATION,
                reason_name(r),
                &format_args!("unreadable Hello stream: {e}"),
            );
            return None;
        }
        Err(_) => {
            // No Hello stream, or one still unfinished at the deadline: no
            // Hello in time (PROTOCOL §3), one code for both.
            ctx.metrics.hello_timeouts.increment(1);
            close_with(
                conn,
                close::AUTH_TIMEOUT,
                "AUTH_TIMEOUT",
                &"no finished Hello within quic.hello_timeout_ms",
            );
            return None;
        }
    };
    let now_ms = clock::unix_ms();
    let hello = match parse_frame(&buf, Channel::Stream, now_ms, &ctx.limits) {
        Ok(Request::Hello(h)) => h,
        Ok(_) => {
            ctx.metrics
                .refused(RefusedOn::Hello, Reason::NotAuthenticated);
            close_with(
                conn,
                close::NOT_AUTHENTICATED,
                reason_name(Reason::NotAuthenticated),
                &"the first stream must carry a Hello",
            );
            return None;
        }
        Err(r) => {
            ctx.metrics.refused(RefusedOn::Hello, r);
            close_with(
                conn,
                close::PROTOCOL_VIOLATION,
                reason_name(r),
                &format_args!("the Hello fails validation ({r:?})"),
            );
            return None;
        }
    };
    match ctx
        .keyring
        .verify(hello.token(), Some(hello.device_id()), now_ms / 1_000)
    {
        Ok(id) => {
            let session = Session::new(&id.tenant, &id.device);
            // The cap in force now; a rules change later applies to the
            // punches, not to this (informational) copy.
            let max_accuracy_m = match ctx.pipeline.rules().load().tenant(&id.tenant).accuracy {
                AccuracyPolicy::Tolerant { max_m } | AccuracyPolicy::Strict { max_m } => {
                    max_m.unwrap_or(0.0)
                }
            };
            let ack = ReplyMsg::HelloAck(HelloAckMsg {
                server_time_ms: now_ms,
                max_batch_fixes: ctx.limits.max_batch_fixes as u32,
                max_frame_bytes: ctx.limits.max_frame_bytes as u32,
                repeat_window_s: ctx.settings.repeat_window_s,
                max_accuracy_m,
            });
            let bytes = REPLY.with(|b| ack.encode_into(&mut b.borrow_mut()).to_vec());
            if send.write_all(&bytes).await.is_err() || send.finish().is_err() {
                return None;
            }
            Some(session)
        }
        Err(e) => {
            ctx.metrics.auth_failures.increment(1);
            let (code, reason) = auth_close(e);
            close_with(conn, code, reason_name(reason), &e);
            None
        }
    }
}

async fn handle_connection(
    ctx: &Arc<EdgeContext>,
    conn: quinn::Connection,
    lane: Lane,
    setup: Handshaking,
    arrived: Instant,
) {
    let handshaken = clock::instant();
    let waiting = ctx.lane(lane).awaiting_hello.register(&conn, handshaken);
    let Some(session) = authenticate(ctx, &conn).await else {
        return;
    };
    // Set-up delay for admission control: under overload the handshakes
    // in flight share the CPU and each one slows (the queue is the set of
    // handshakes, not a line before them). One round trip of it is the
    // client's (docs/OPERATIONS.md, "Clients far away"). The window's
    // median, measured from the fastest recent set-up, moves the set-up
    // limit (`admission.rs`).
    let authed = clock::instant();
    let setup_delay = authed.saturating_duration_since(arrived);
    ctx.lane(lane).admission.observe(authed, setup_delay);
    ctx.lane(lane)
        .hello_delay
        .observe(authed.saturating_duration_since(handshaken));
    ctx.metrics.setup_seconds[lane as usize].record(setup_delay.as_secs_f64());
    // Set up: from here on the connection no longer counts against
    // `max_handshakes_in_flight` and cannot be evicted.
    drop(waiting);
    drop(setup);
    let session = Arc::new(session);
    let device = session.device_key();
    ctx.ping_buckets.open(
        device,
        ctx.settings.ping_datagrams_per_s,
        ctx.settings.ping_burst,
        clock::unix_ms(),
    );
    // quinn drops the oldest datagram without telling when a connection's
    // receive buffer is full; `DatagramTally` tells it from quinn's count
    // of DATAGRAM frames received and the ones this loop read, about once
    // a second while datagrams come and once more at the close. It runs
    // at the first datagram read in a new second of the node's tally
    // clock; a timer is armed only for datagrams read after that in the
    // same second, so a device sending once a second or less often (a
    // fleet's usual rate) wakes this task once per datagram, not also
    // once a second for a timer.
    let mut tally = DatagramTally::default();
    let mut when = TallyWhen::new(ctx.tally_epoch());
    let tally_due = tokio::time::sleep(DATAGRAM_TALLY_EVERY);
    // Where a disarmed timer is parked: a deadline that passed unpolled
    // would still wake the task once.
    let parked = clock::tokio_now() + Duration::from_secs(365 * 86_400);
    // The futures that rarely complete live across the loop's turns: each
    // one registers a waiter when first polled and unregisters it when
    // dropped, under a lock (the shutdown token's is one lock for every
    // connection of the node). Made anew on every turn, that was two lock
    // round trips per future for every datagram a fleet sends.
    let shutdown = ctx.shutdown.cancelled();
    let accept_bi = conn.accept_bi();
    let accept_uni = conn.accept_uni();
    tokio::pin!(shutdown, accept_bi, accept_uni, tally_due);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => {
                let phrase = reason_name(Reason::ShuttingDown);
                close_with(&conn, close::SHUTTING_DOWN, phrase, &"gateway shutting down");
                break;
            }
            r = conn.read_datagram() => match r {
                Ok(d) => {
                    tally.read += 1;
                    on_datagram(ctx, &session, device, &d);
                    match when.read(ctx.tally_epoch()) {
                        TallyNow::Sample { disarm } => {
                            if disarm {
                                tally_due.as_mut().reset(parked);
                            }
                            tally.sample(&conn, &ctx.metrics, |d| {
                                on_datagram(ctx, &session, device, &d)
                            });
                        }
                        TallyNow::Arm => {
                            tally_due
                                .as_mut()
                                .reset(clock::tokio_now() + DATAGRAM_TALLY_EVERY);
                        }
                        TallyNow::Nothing => {}
                    }
                }
                Err(_) => break,
            },
            () = &mut tally_due, if when.armed => {
                when.fired(ctx.tally_epoch());
                tally.sample(&conn, &ctx.metrics, |d| on_datagram(ctx, &session, device, &d));
            }
            r = &mut accept_bi => match r {
                Ok((send, recv)) => {
                    accept_bi.set(conn.accept_bi());
                    let (ctx2, s2) = (ctx.clone(), session.clone());
                    ctx.tasks.spawn(async move { on_punch_stream(&ctx2, &s2, send, recv).await });
                }
                Err(_) => break,
            },
            r = &mut accept_uni => match r {
                Ok(recv) => {
                    accept_uni.set(conn.accept_uni());
                    let (ctx2, s2) = (ctx.clone(), session.clone());
                    ctx.tasks.spawn(async move { on_backlog_stream(&ctx2, &s2, recv).await });
                }
                Err(_) => break,
            },
        }
    }
    ctx.ping_buckets.close(device);
    tally.close(&conn, &ctx.metrics);
}

/// How often a connection's task counts the datagrams quinn discarded
/// from its full receive buffer: often enough that `/metrics` shows drops
/// during a burst, rarely enough that the lock `Connection::stats` takes
/// is no cost (at most about one per connection per second while
/// datagrams come, never one per datagram). Also the period of the node's
/// tally clock that tells a connection a new second has begun.
pub const DATAGRAM_TALLY_EVERY: Duration = Duration::from_secs(1);

/// When a connection tallies its datagrams: at the first one read in a
/// new second of the node's tally clock, or, for datagrams read after
/// that within the same second, when a timer armed at the first of them
/// fires. Every datagram read is tallied within about a second, and a
/// device that sends at most once a second never arms the timer.
#[derive(Debug)]
struct TallyWhen {
    /// The tally clock's second of the last tally.
    tallied: u64,
    /// A timer is set for datagrams read since then.
    armed: bool,
}

/// What a read asks of the connection's loop ([`TallyWhen::read`]).
#[derive(Debug, PartialEq, Eq)]
enum TallyNow {
    /// Tally now; `disarm`: a timer was set, and is no longer wanted.
    Sample { disarm: bool },
    /// Set the timer, [`DATAGRAM_TALLY_EVERY`] from now.
    Arm,
    /// A tally is already due.
    Nothing,
}

impl TallyWhen {
    fn new(epoch: u64) -> Self {
        Self {
            tallied: epoch,
            armed: false,
        }
    }

    /// A datagram was read while the tally clock reads `epoch`.
    fn read(&mut self, epoch: u64) -> TallyNow {
        if epoch != self.tallied {
            self.tallied = epoch;
            let disarm = std::mem::replace(&mut self.armed, false);
            TallyNow::Sample { disarm }
        } else if !self.armed {
            self.armed = true;
            TallyNow::Arm
        } else {
            TallyNow::Nothing
        }
    }

    /// The timer fired at `epoch`; the loop tallies.
    fn fired(&mut self, epoch: u64) {
        self.tallied = epoch;
        self.armed = false;
    }
}

/// Most datagrams a tally reads out of quinn's buffer before giving up on
/// this second's lower bound (datagrams arriving as fast as they are read
/// would otherwise keep it reading).
const DATAGRAM_TALLY_DRAIN: u64 = 4_096;

/// One connection's datagram accounting: DATAGRAM frames quinn received
/// (`fencegate_datagrams_received_total`), the ones the connection task
/// read, and the difference already counted as
/// `fencegate_datagrams_dropped_total{reason="buffer_full"}`.
#[derive(Debug, Default)]
struct DatagramTally {
    /// Datagrams taken from quinn by this connection's task.
    read: u64,
    /// quinn's DATAGRAM frame count already added to the received counter.
    received: u64,
    /// Datagrams already counted as dropped from a full buffer.
    dropped: u64,
}

impl DatagramTally {
    /// Counts what quinn received and dropped since the last sample.
    ///
    /// Received minus read is the drops plus what still waits in the
    /// buffer, and the waiting ones must not count: they will be read. So
    /// the received count is taken first, then the buffer is read empty
    /// (each datagram handed to `on_datagram`, as the loop would): every
    /// datagram received before the count was then either read or
    /// dropped, and received − read is at most the drops (reads of later
    /// arrivals only lower it). Counting only its growth keeps the
    /// counter a lower bound that the close makes exact.
    fn sample(
        &mut self,
        conn: &quinn::Connection,
        metrics: &EdgeMetrics,
        mut on_datagram: impl FnMut(bytes::Bytes),
    ) {
        use futures::FutureExt as _;
        let received = conn.stats().frame_rx.datagram;
        self.add_received(received, metrics);
        for _ in 0..DATAGRAM_TALLY_DRAIN {
            match conn.read_datagram().now_or_never() {
                Some(Ok(d)) => {
                    self.read += 1;
                    on_datagram(d);
                }
                // Closed: the close accounting counts the rest.
                Some(Err(_)) => return,
                None => {
                    self.add_dropped(received.saturating_sub(self.read), metrics);
                    return;
                }
            }
        }
    }

    /// At the connection's end: whatever was received and not read was
    /// dropped from the full buffer or left unread in it.
    fn close(&mut self, conn: &quinn::Connection, metrics: &EdgeMetrics) {
        let received = conn.stats().frame_rx.datagram;
        self.add_received(received, metrics);
        self.add_dropped(received.saturating_sub(self.read), metrics);
    }

    fn add_received(&mut self, received: u64, metrics: &EdgeMetrics) {
        if received > self.received {
            metrics
                .datagrams_received
                .increment(received - self.received);
            self.received = received;
        }
    }

    fn add_dropped(&mut self, dropped: u64, metrics: &EdgeMetrics) {
        if dropped > self.dropped {
            metrics
                .datagrams_buffer_full
                .increment(dropped - self.dropped);
            self.dropped = dropped;
        }
    }
}

fn on_datagram(ctx: &EdgeContext, session: &Session, device: (u64, u64), data: &[u8]) {
    let now_ms = clock::unix_ms();
    if !ctx.ping_buckets.take(device, now_ms) {
        // Over the device's rate (PROTOCOL §10): dropped before it costs a
        // parse, a lookup or a log write.
        ctx.metrics.datagrams_rate_limited.increment(1);
        return;
    }
    let t0 = clock::instant();
    let batch = match parse_frame(data, Channel::Datagram, now_ms, &ctx.limits) {
        Ok(Request::PingBatch(b)) => b,
        Ok(_) => {
            ctx.metrics
                .refused(RefusedOn::Datagram, Reason::WrongChannel);
            return;
        }
        Err(r) => {
            ctx.metrics.refused(RefusedOn::Datagram, r);
            return;
        }
    };
    let mut records = RecordBatch::with_capacity(batch.len() + 2, batch.len() * 160);
    SCRATCH.with(|s| {
        ctx.pipeline
            .pings(now_ms, session, &batch, &mut s.borrow_mut(), &mut records)
    });
    ctx.metrics.pipeline_seconds.record(t0.elapsed());
    if records.is_empty() {
        return;
    }
    // Pings are not acknowledged, so the datagram path does not wait for the
    // commit; a log that cannot take the batch drops it, counted. Pings
    // yield to punches: above the writer's ping watermark, or with the log
    // down to the punches' reserve, the batch is shed first.
    match ctx.log.append_pings(records) {
        Ok(_) => {}
        Err(PingAppendError::Shed) => ctx.metrics.datagrams_shed.increment(1),
        Err(PingAppendError::Log(e)) => {
            ctx.metrics.datagrams_dropped.increment(1);
            tracing::debug!(error = %e, "ping batch dropped");
        }
    }
}

/// Reads length-prefixed ping batches from a unidirectional stream. Each
/// batch is awaited into the log before the next is read, so a slow log
/// pushes back on the sender through flow control.
async fn on_backlog_stream(ctx: &EdgeContext, session: &Session, mut recv: quinn::RecvStream) {
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; backlog::LEN_PREFIX];
        match recv.read_exact(&mut len).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return,
            Err(_) => {
                ctx.metrics.refused(RefusedOn::Backlog, Reason::Malformed);
                let _ = recv.stop(varint(close::PROTOCOL_VIOLATION));
                return;
            }
        }
        let len = match backlog::frame_len(len, ctx.limits.max_backlog_frame_bytes) {
            Ok(len) => len,
            Err(r) => {
                ctx.metrics.refused(RefusedOn::Backlog, r);
                let _ = recv.stop(varint(close::PROTOCOL_VIOLATION));
                return;
            }
        };
        buf.resize(len, 0);
        if recv.read_exact(&mut buf).await.is_err() {
            ctx.metrics.refused(RefusedOn::Backlog, Reason::Malformed);
            return;
        }
        let now_ms = clock::unix_ms();
        let batch = match parse_frame(&buf, Channel::Backlog, now_ms, &ctx.limits) {
            Ok(Request::PingBatch(b)) => b,
            Ok(_) => {
                ctx.metrics
                    .refused(RefusedOn::Backlog, Reason::WrongChannel);
                continue;
            }
            Err(r) => {
                ctx.metrics.refused(RefusedOn::Backlog, r);
                continue;
            }
        };
        let mut records = RecordBatch::with_capacity(batch.len(), batch.len() * 160);
        SCRATCH.with(|s| {
            ctx.pipeline
                .pings(now_ms, session, &batch, &mut s.borrow_mut(), &mut records)
        });
        if records.is_empty() {
            continue;
        }
        let pending = ctx.log.append_batch(records);
        match pending {
            Ok(p) => {
                if p.await.is_err() {
                    ctx.metrics.datagrams_dropped.increment(1);
                }
            }
            Err(_) => {
                ctx.metrics.datagrams_dropped.increment(1);
                let _ = recv.stop(varint(close::OVERLOADED));
                return;
            }
        }
    }
}

enum Answer {
    Ack(Option<[u8; 16]>, AckInfo),
    Busy(u32, Reason),
    /// The frame did not end in time: reset the stream, no reply.
    Reset,
}

async fn on_punch_stream(
    ctx: &EdgeContext,
    session: &Session,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let t0 = clock::instant();
    let (answer, read_at) = decide_punch(ctx, session, &mut recv).await;
    if matches!(answer, Answer::Reset) {
        // The client sees its stream reset with PROTOCOL_VIOLATION and
        // resends the punch (same id) on a new stream (PROTOCOL §10).
        let _ = recv.stop(varint(close::PROTOCOL_VIOLATION));
        let _ = send.reset(varint(close::PROTOCOL_VIOLATION));
        return;
    }
    let bytes = REPLY.with(|b| {
        let mut b = b.borrow_mut();
        match &answer {
            Answer::Ack(punch_id, a) => PunchAckRef {
                punch_id: *punch_id,
                record_id: (a.record_id != [0; 16]).then_some(a.record_id),
                verdict: a.verdict,
                reason: a.reason,
                fence_id: a.fence_id.as_deref(),
                nearest_fence_id: a.nearest_fence_id.as_deref(),
                distance_m: a.distance_m,
                server_time_ms: clock::unix_ms(),
            }
            .encode_into(&mut b)
            .to_vec(),
            Answer::Busy(retry_after_ms, reason) => {
                ctx.metrics.busy.increment(1);
                ReplyMsg::Busy(BusyMsg {
                    retry_after_ms: *retry_after_ms,
                    reason: *reason,
                })
                .encode_into(&mut b)
                .to_vec()
            }
            Answer::Reset => unreachable!("answered above"),
        }
    });
    // One clock read for both the latency metric and admission's sample.
    let done = clock::instant();
    if let Some(read_at) = read_at {
        // Only decided punches are samples: a cheap Busy would pull the
        // window's minimum down and hide a standing queue.
        ctx.punch_admission
            .observe(done, done.saturating_duration_since(read_at));
    }
    if send.write_all(&bytes).await.is_ok() {
        let _ = send.finish();
    }
    ctx.metrics
        .punch_ack_seconds
        .record(done.saturating_duration_since(t0));
}

fn rejected(reason: Reason) -> AckInfo {
    AckInfo {
        record_id: [0; 16],
        verdict: Verdict::Rejected,
        reason,
        fence_id: None,
        nearest_fence_id: None,
        distance_m: 0.0,
    }
}

/// Decides one punch stream; with a decided punch, also the instant its
/// frame had been read (the start of its sojourn in the node).
async fn decide_punch(
    ctx: &EdgeContext,
    session: &Session,
    recv: &mut quinn::RecvStream,
) -> (Answer, Option<Instant>) {
    let mut read_at = None;
    let answer = decide_punch_inner(ctx, session, recv, &mut read_at).await;
    (answer, read_at)
}

async fn decide_punch_inner(
    ctx: &EdgeContext,
    session: &Session,
    recv: &mut quinn::RecvStream,
    read_at: &mut Option<Instant>,
) -> Answer {
    // Read the whole frame, on a deadline, before taking anything
    // node-wide: a stream that never finishes then holds only its own
    // stream slot (at most `quic.max_bidi_streams` per connection, the
    // QUIC stream limit) and its frame buffer (at most 4096 bytes), for at
    // most `stream_read_timeout`, never one of `max_inflight_punches`.
    let read = tokio::time::timeout(
        ctx.settings.stream_read_timeout,
        recv.read_to_end(ctx.limits.max_frame_bytes),
    )
    .await;
    let buf = match read {
        Err(_) => {
            ctx.metrics.punch_stream_timeouts.increment(1);
            return Answer::Reset;
        }
        Ok(Ok(b)) => b,
        Ok(Err(quinn::ReadToEndError::TooLong)) => {
            ctx.metrics.refused(RefusedOn::Punch, Reason::Oversize);
            return Answer::Ack(None, rejected(Reason::Oversize));
        }
        Ok(Err(_)) => {
            ctx.metrics.refused(RefusedOn::Punch, Reason::Malformed);
            return Answer::Ack(None, rejected(Reason::Malformed));
        }
    };
    let t_pipe = clock::instant();
    if ctx.punch_admission.overloaded(t_pipe) {
        // Shed before the parse, the pipeline and the log: the cheapest
        // answer the client can act on (docs/PROTOCOL.md §9).
        ctx.metrics.shed(RefusedOn::Punch, Reason::Overloaded);
        let retry = ctx.punch_admission.settings().retry_after.as_millis();
        return Answer::Busy(u32::try_from(retry).unwrap_or(u32::MAX), Reason::Overloaded);
    }
    let Ok(_permit) = ctx.inflight.clone().try_acquire_owned() else {
        ctx.metrics.shed(RefusedOn::Punch, Reason::Overloaded);
        return Answer::Busy(OVERLOAD_RETRY_MS, Reason::Overloaded);
    };
    if ctx.shutdown.is_cancelled() {
        return Answer::Busy(OVERLOAD_RETRY_MS, Reason::ShuttingDown);
    }
    let now_ms = clock::unix_ms();
    let punch = match parse_frame(&buf, Channel::Stream, now_ms, &ctx.limits) {
        Ok(Request::Punch(p)) => p,
        Ok(_) => {
            ctx.metrics.refused(RefusedOn::Punch, Reason::WrongChannel);
            return Answer::Ack(None, rejected(Reason::WrongChannel));
        }
        Err(r) => {
            ctx.metrics.refused(RefusedOn::Punch, r);
            // Echo the id whenever the frame is readable enough to hold
            // one, so the client can match the rejection to its punch.
            return Answer::Ack(punch_id_of(&buf, &ctx.limits), rejected(r));
        }
    };
    let punch_id = Some(punch.punch_id());
    // Decide and submit to the log without awaiting, so the thread-local
    // scratch is never held across an await. With cluster claims the
    // record is copied out instead: the claims await the network first.
    let submitted = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        match ctx.pipeline.punch(now_ms, session, &punch, &mut s) {
            PunchDecision::Record {
                record,
                ack,
                pending,
            } => {
                if ctx.cluster.is_some() {
                    return Ok(Submitted::Claim(record.to_vec(), ack, pending));
                }
                match ctx.log.append(record, now_ms.max(0) as u64) {
                    Ok(p) => Ok(Submitted::Appended(p, ack, pending)),
                    Err(e) => {
                        ctx.pipeline
                            .settle(&pending, crate::pipeline::Settled::Failed);
                        Err(log_busy(&e))
                    }
                }
            }
            PunchDecision::Known(ack) => Err(Answer::Ack(punch_id, ack)),
            PunchDecision::InFlight => Err(Answer::Busy(IN_FLIGHT_RETRY_MS, Reason::Overloaded)),
            PunchDecision::Full => Err(Answer::Busy(OVERLOAD_RETRY_MS, Reason::Overloaded)),
            PunchDecision::RateLimited { retry_after_ms } => {
                Err(Answer::Busy(retry_after_ms, Reason::RateLimited))
            }
        }
    });
    ctx.metrics.pipeline_seconds.record(t_pipe.elapsed());
    let (commit, ack, pending, claimed) = match submitted {
        Ok(Submitted::Appended(p, ack, pending)) => (p, ack, pending, None),
        Ok(Submitted::Claim(record, ack, pending)) => {
            let cluster = ctx.cluster.as_ref().expect("checked above");
            match claim::claim_and_append(
                ctx, cluster, session, &punch, now_ms, record, ack, pending,
            )
            .await
            {
                Ok((p, ack, pending, claimed)) => (p, ack, pending, Some(claimed)),
                Err(answer) => return answer,
            }
        }
        Err(answer) => return answer,
    };
    match commit.await {
        Ok(_) => {
            *read_at = Some(t_pipe);
            ctx.pipeline
                .settle(&pending, crate::pipeline::Settled::Committed(ack.verdict));
            if let Some(c) = claimed {
                c.durable(ctx, &ack);
            }
            Answer::Ack(punch_id, ack)
        }
        Err(e) => {
            ctx.pipeline
                .settle(&pending, crate::pipeline::Settled::Failed);
            if let Some(c) = claimed {
                c.failed(ctx);
            }
            log_busy(&e)
        }
    }
}

/// A new punch's record: appended, or awaiting its cluster claims.
enum Submitted {
    Appended(crate::log::Pending, AckInfo, PendingPunch),
    Claim(Vec<u8>, AckInfo, PendingPunch),
}

fn log_busy(e: &LogError) -> Answer {
    match e {
        LogError::Full { .. } => Answer::Busy(LOG_FULL_RETRY_MS, Reason::LogFull),
        LogError::Busy => Answer::Busy(OVERLOAD_RETRY_MS, Reason::Overloaded),
        LogError::Closed => Answer::Busy(OVERLOAD_RETRY_MS, Reason::ShuttingDown),
        _ => {
            tracing::error!(error = %e, "log append failed");
            Answer::Busy(LOG_FULL_RETRY_MS, Reason::InternalError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{HelloDelay, PingBucket, TallyNow, TallyWhen};
    use std::time::Duration;

    #[test]
    fn a_tally_runs_at_the_first_read_of_each_second_and_a_timer_covers_the_rest() {
        use TallyNow::{Arm, Nothing, Sample};
        let mut w = TallyWhen::new(5);
        // (tally clock second, read (true) or timer fired (false), asked)
        let steps: [(u64, bool, Option<TallyNow>, &str); 9] = [
            (5, true, Some(Arm), "a read in the second of the last tally"),
            (5, true, Some(Nothing), "the timer already covers it"),
            (
                6,
                true,
                Some(Sample { disarm: true }),
                "a new second: tally now, timer off",
            ),
            (6, true, Some(Arm), "read after it, same second"),
            (6, false, None, "the timer fires: the loop tallies"),
            (6, true, Some(Arm), "a later read in that second arms again"),
            (8, true, Some(Sample { disarm: true }), "a new second"),
            (
                10,
                true,
                Some(Sample { disarm: false }),
                "every 2 s: no timer",
            ),
            (
                12,
                true,
                Some(Sample { disarm: false }),
                "tallies at each read",
            ),
        ];
        for (epoch, read, asked, why) in steps {
            if read {
                assert_eq!(Some(w.read(epoch)), asked, "{why}");
            } else {
                assert!(w.armed, "{why}: the timer was armed");
                w.fired(epoch);
            }
        }
        assert!(!w.armed, "a tally at a read forgets the timer");
    }

    /// The eviction grace is the configured floor until clients are seen
    /// to be slow, three times their mean Hello delay then, and never more
    /// than half the Hello deadline, however slowly a client authenticates.
    #[test]
    fn the_eviction_grace_follows_slow_hellos_between_the_floor_and_half_the_deadline() {
        let ms = Duration::from_millis;
        let (floor, deadline) = (ms(200), ms(2_000));
        let d = HelloDelay::default();
        assert_eq!(d.grace(floor, deadline), floor, "no sample yet");
        for _ in 0..64 {
            d.observe(ms(5));
        }
        assert_eq!(d.grace(floor, deadline), floor, "quick clients");
        // One far client moves the mean by an eighth of the difference.
        d.observe(ms(805));
        let g = d.grace(floor, deadline);
        assert!(g > floor && g < ms(400), "{g:?}");
        // A crowd of slow clients stretches it within tens of set-ups.
        for _ in 0..40 {
            d.observe(ms(300));
        }
        let g = d.grace(floor, deadline);
        assert!(g > ms(850) && g <= ms(900), "{g:?}");
        // A client authenticating slowly on purpose cannot push it past
        // half the deadline.
        for _ in 0..200 {
            d.observe(ms(60_000));
        }
        assert_eq!(d.grace(floor, deadline), ms(1_000));
        // A floor above half the deadline wins.
        assert_eq!(d.grace(ms(1_500), deadline), ms(1_500));
    }

    #[test]
    fn ping_bucket_lets_the_burst_through_then_the_rate() {
        let mut b = PingBucket::new(1, 10, 0);
        assert_eq!((0..100).filter(|_| b.take(0)).count(), 10, "the burst");
        assert!(!b.take(999), "less than a second refills nothing whole");
        assert!(b.take(1_000), "one second refills one");
        assert!(!b.take(1_000));
        // A long silence refills the burst, never more.
        assert_eq!((0..100).filter(|_| b.take(3_600_000)).count(), 10);
    }

    #[test]
    fn ping_bucket_survives_a_wall_clock_step_back() {
        let mut b = PingBucket::new(2, 1, 10_000_000);
        assert!(b.take(10_000_000));
        // The clock steps back an hour: no refill for the step, and the
        // rate resumes from the new time instead of waiting an hour.
        assert!(!b.take(6_400_000));
        assert!(b.take(6_400_500));
    }
}
