//! A device client over QUIC, used by the end-to-end tests and the load
//! harness, and a reference for third-party clients (`docs/PROTOCOL.md`).
//!
//! [`Connector::new`] is the simple form (one UDP socket, resumption on).
//! [`Connector::with_options`] is what the load harness uses: it can turn
//! session resumption off (so every connection pays a full handshake),
//! size the socket buffers, and send the Hello in 0-RTT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fencegate_schema::{
    FrameMsg, HelloAckMsg, HelloMsg, PingBatchMsg, PunchAckMsg, PunchMsg, Reason, ReplyMsg,
    Verdict, parse_reply,
};
use flatbuffers::FlatBufferBuilder;

use crate::edge::tls::{Trust, client_crypto};

/// A gateway's answer to one punch.
#[derive(Debug, Clone, PartialEq)]
pub enum PunchReply {
    /// The punch was decided (and, unless rejected, is durable).
    Ack(PunchAckMsg),
    /// Not processed: resend the same punch after `retry_after_ms`.
    Busy {
        /// Milliseconds to wait.
        retry_after_ms: u32,
        /// Why.
        reason: Reason,
    },
}

impl PunchReply {
    /// The verdict, or `None` for `Busy`.
    pub fn verdict(&self) -> Option<Verdict> {
        match self {
            Self::Ack(a) => Some(a.verdict),
            Self::Busy { .. } => None,
        }
    }
}

/// How a [`Connector`] connects; [`ConnectorOptions::new`] gives the
/// defaults [`Connector::new`] uses.
#[derive(Debug, Clone)]
pub struct ConnectorOptions {
    /// The gateway's QUIC address.
    pub server: SocketAddr,
    /// The name sent in SNI and checked against the certificate (unless the
    /// certificate is pinned).
    pub server_name: String,
    /// How the gateway's certificate is trusted.
    pub trust: Trust,
    /// Keep session tickets and resume with them. Off, every connection
    /// pays a full TLS handshake, as a phone with no ticket does.
    pub resumption: bool,
    /// With `resumption`: keep up to this many tickets per server instead
    /// of rustls's 8, the way many phones each hold a ticket from an
    /// earlier visit. 0 keeps rustls's in-memory cache.
    pub ticket_pool: usize,
    /// Offer 0-RTT on resumed connections ([`Connector::connect`] then sends
    /// the Hello before the handshake completes).
    pub zero_rtt: bool,
    /// QUIC keep-alive interval; `None` sends none.
    pub keep_alive: Option<Duration>,
    /// Kernel send and receive buffer size asked for the UDP socket, in
    /// bytes; 0 keeps the system default. Thousands of connections on one
    /// socket need more than the default to ride out bursts.
    pub socket_buffer: usize,
    /// How long one connection attempt's QUIC handshake may take before
    /// it is abandoned with an error, so that the caller backs off and
    /// starts a new attempt (docs/PROTOCOL.md §9). [`HANDSHAKE_TIMEOUT`]
    /// unless set.
    pub handshake_timeout: Duration,
}

impl ConnectorOptions {
    /// Defaults: resumption on, no 0-RTT, keep-alive every 10 s, system
    /// socket buffers.
    pub fn new(server: SocketAddr, server_name: &str, trust: Trust) -> Self {
        Self {
            server,
            server_name: server_name.to_owned(),
            trust,
            resumption: true,
            ticket_pool: 0,
            zero_rtt: false,
            keep_alive: Some(Duration::from_secs(10)),
            socket_buffer: 0,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// How long one connection attempt's handshake may take by default
/// ([`ConnectorOptions::handshake_timeout`]): room for an Initial and four
/// or five resends (docs/PROTOCOL.md §9).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The range a connection's first round-trip estimate is drawn from
/// (uniformly): its unanswered Initial is resent about 0.45 to 1.5 s after
/// the first, then at doubling intervals, rather than at the same 1 s for
/// every device that connected in the same instant (quinn's default is
/// 333 ms for all).
pub const INITIAL_RTT_JITTER: (Duration, Duration) =
    (Duration::from_millis(150), Duration::from_millis(500));

/// The first round-trip estimate for `uniform` in [0, 1): its place in
/// [`INITIAL_RTT_JITTER`].
fn initial_rtt(uniform: f64) -> Duration {
    let (lo, hi) = INITIAL_RTT_JITTER;
    lo + (hi - lo).mul_f64(uniform.clamp(0.0, 1.0))
}

/// A connection's transport settings: quinn's defaults, with
/// `keep_alive` and the first round-trip estimate `initial_rtt`.
fn transport(keep_alive: Option<Duration>, initial_rtt: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(keep_alive);
    t.initial_rtt(initial_rtt);
    t
}

/// Makes client endpoints that share one TLS configuration (and so one
/// session-ticket cache, which is what makes resumption work).
#[derive(Debug, Clone)]
pub struct Connector {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    server: SocketAddr,
    server_name: String,
    zero_rtt: bool,
    /// QUIC keep-alive interval of every connection.
    keep_alive: Option<Duration>,
    /// Longest QUIC handshake of one attempt.
    handshake_timeout: Duration,
}

impl Connector {
    /// A connector to `server`, trusting its certificate as `trust` says.
    /// Binds one local UDP socket on the matching loopback/any address.
    pub fn new(
        server: SocketAddr,
        server_name: &str,
        trust: Trust,
        zero_rtt: bool,
    ) -> anyhow::Result<Self> {
        let mut opts = ConnectorOptions::new(server, server_name, trust);
        opts.zero_rtt = zero_rtt;
        let mut c = Self::with_options(&opts)?;
        // The simple form has always awaited the full handshake before the
        // Hello; 0-RTT here only means the TLS config allows early data.
        c.zero_rtt = false;
        Ok(c)
    }

    /// A connector set up as `opts` says. Binds one local UDP socket.
    pub fn with_options(opts: &ConnectorOptions) -> anyhow::Result<Self> {
        let mut crypto = client_crypto(opts.trust.clone(), opts.zero_rtt)?;
        if !opts.resumption {
            crypto.resumption = rustls::client::Resumption::disabled();
        } else if opts.ticket_pool > 0 {
            crypto.resumption =
                rustls::client::Resumption::store(Arc::new(TicketPool::new(opts.ticket_pool)));
        }
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .context("the TLS configuration cannot serve QUIC")?;
        // Transport settings are each connection's own (`start`).
        let config = quinn::ClientConfig::new(Arc::new(quic));
        let bind: SocketAddr = if opts.server.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(bind),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .context("cannot create a client UDP socket")?;
        if opts.socket_buffer > 0 {
            // Best effort: the kernel caps it at net.core.{r,w}mem_max.
            let _ = sock.set_recv_buffer_size(opts.socket_buffer);
            let _ = sock.set_send_buffer_size(opts.socket_buffer);
        }
        sock.bind(&bind.into())
            .context("cannot bind a client UDP socket")?;
        sock.set_nonblocking(true)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            sock.into(),
            Arc::new(quinn::TokioRuntime),
        )
        .context("cannot start a client QUIC endpoint")?;
        Ok(Self {
            endpoint,
            config,
            server: opts.server,
            server_name: opts.server_name.clone(),
            zero_rtt: opts.zero_rtt,
            keep_alive: opts.keep_alive,
            handshake_timeout: opts.handshake_timeout,
        })
    }

    /// Connects and authenticates with `token` as `device`.
    pub async fn connect(&self, token: &str, device: &str) -> anyhow::Result<Client> {
        let connecting = self.start()?;
        if self.zero_rtt {
            match connecting.into_0rtt() {
                Ok((conn, accepted)) => {
                    // The Hello goes out in 0-RTT. If the server refuses the
                    // early data, quinn fails the stream and the Hello is
                    // sent again once the handshake completes.
                    let client = Client { conn };
                    match client.hello(token, device).await {
                        Ok(_) => return Ok(client),
                        Err(e) if accepted.await => return Err(e),
                        Err(_) => {
                            client.hello(token, device).await?;
                            return Ok(client);
                        }
                    }
                }
                Err(connecting) => {
                    let conn = self.finish_handshake(connecting).await?;
                    let client = Client { conn };
                    client.hello(token, device).await?;
                    return Ok(client);
                }
            }
        }
        let client = self.handshake_started(connecting).await?;
        client.hello(token, device).await?;
        Ok(client)
    }

    /// Starts a resumed connection and returns it at once, before the
    /// handshake completes, so that what the caller sends next (its Hello,
    /// then punches right behind it) goes out as 0-RTT data. The second
    /// value resolves to whether the gateway accepted the early data; if it
    /// did not, quinn fails the streams and the caller resends on a new
    /// connection. Fails when there is no ticket to resume with (connect
    /// normally first) or this connector was made without `zero_rtt`.
    pub fn connect_0rtt(&self) -> anyhow::Result<(Client, quinn::ZeroRttAccepted)> {
        match self.start()?.into_0rtt() {
            Ok((conn, accepted)) => Ok((Client { conn }, accepted)),
            Err(_) => anyhow::bail!(
                "no 0-RTT: no session ticket from this gateway yet (connect once first), or the connector was made without zero_rtt"
            ),
        }
    }

    /// Completes a QUIC handshake without authenticating, so a caller can
    /// time the handshake and the Hello separately; follow it with
    /// [`Client::hello`].
    pub async fn handshake(&self) -> anyhow::Result<Client> {
        let connecting = self.start()?;
        self.handshake_started(connecting).await
    }

    fn start(&self) -> anyhow::Result<quinn::Connecting> {
        // Each connection's own first round-trip estimate, drawn from
        // [`INITIAL_RTT_JITTER`]: QUIC resends an unanswered Initial at
        // about three times it, doubling, so a gateway that sheds a crowd
        // silently (docs/PROTOCOL.md §9) gets the crowd's resends spread
        // out instead of all at once.
        let mut config = self.config.clone();
        let rtt = initial_rtt(rand::random::<f64>());
        config.transport_config(Arc::new(transport(self.keep_alive, rtt)));
        self.endpoint
            .connect_with(config, self.server, &self.server_name)
            .context("cannot start a connection")
    }

    /// Waits for `connecting`'s handshake, at most the handshake timeout:
    /// a gateway that sheds silently never answers an attempt it keeps
    /// shedding, and an attempt can also stall (seen in connect storms,
    /// cause unknown); a new attempt is the way out of either.
    async fn finish_handshake(
        &self,
        connecting: quinn::Connecting,
    ) -> anyhow::Result<quinn::Connection> {
        match tokio::time::timeout(self.handshake_timeout, connecting).await {
            Ok(r) => r.context("QUIC handshake failed"),
            Err(_) => anyhow::bail!(
                "QUIC handshake: no answer within {:?}; back off and connect again",
                self.handshake_timeout
            ),
        }
    }

    async fn handshake_started(&self, connecting: quinn::Connecting) -> anyhow::Result<Client> {
        let conn = self.finish_handshake(connecting).await?;
        Ok(Client { conn })
    }

    /// The local endpoint (for stats or closing).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }
}

/// One authenticated device connection.
#[derive(Debug, Clone)]
pub struct Client {
    conn: quinn::Connection,
}

impl Client {
    async fn request(&self, frame: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (mut send, mut recv) = self.conn.open_bi().await.context("cannot open a stream")?;
        send.write_all(frame)
            .await
            .context("cannot send the frame")?;
        send.finish().context("cannot finish the stream")?;
        recv.read_to_end(64 * 1024).await.map_err(|e| {
            // Keep the typed cause in the chain: callers tell a reset
            // stream from a closed connection by downcasting it.
            anyhow::Error::new(e).context(format!("no reply ({:?})", self.conn.close_reason()))
        })
    }

    /// Authenticates the connection: sends the Hello on the first
    /// bidirectional stream and waits for the HelloAck, which it returns
    /// (the connection's limits). [`Connector::connect`] does this; call it
    /// yourself after [`Connector::handshake`] or [`Connector::connect_0rtt`].
    pub async fn hello(&self, token: &str, device: &str) -> anyhow::Result<HelloAckMsg> {
        let mut fbb = FlatBufferBuilder::new();
        let frame = FrameMsg::Hello(HelloMsg {
            token: token.to_owned(),
            device_id: device.to_owned(),
            client: Some(concat!("fencegate-client/", env!("CARGO_PKG_VERSION")).to_owned()),
        })
        .encode_into(&mut fbb)
        .to_vec();
        let reply = self.request(&frame).await?;
        let view =
            parse_reply(&reply).map_err(|r| anyhow::anyhow!("unreadable HelloAck: {r:?}"))?;
        match view.to_msg() {
            ReplyMsg::HelloAck(a) => Ok(a),
            other => anyhow::bail!("expected HelloAck, got {other:?}"),
        }
    }

    /// Sends a raw frame on a new bidirectional stream and returns the raw
    /// reply (for tests of malformed input).
    pub async fn raw_request(&self, frame: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.request(frame).await
    }

    /// Sends one punch and waits for its reply.
    pub async fn punch(&self, punch: &PunchMsg) -> anyhow::Result<PunchReply> {
        let mut fbb = FlatBufferBuilder::new();
        let frame = punch.encode_into(&mut fbb).to_vec();
        let reply = self.request(&frame).await?;
        decode_punch_reply(&reply)
    }

    /// Sends one punch and does not wait for its reply, as a device does
    /// whose ack is lost (the reply, if any, is discarded). Returns once
    /// the frame is handed to QUIC; resend the same punch to get its ack.
    pub async fn punch_unanswered(&self, punch: &PunchMsg) -> anyhow::Result<()> {
        let mut fbb = FlatBufferBuilder::new();
        let frame = punch.encode_into(&mut fbb);
        let (mut send, mut recv) = self.conn.open_bi().await.context("cannot open a stream")?;
        send.write_all(frame)
            .await
            .context("cannot send the frame")?;
        send.finish().context("cannot finish the stream")?;
        // Tell the gateway nobody will read the answer.
        let _ = recv.stop(quinn::VarInt::from_u32(0));
        Ok(())
    }

    /// Sends one ping batch as a QUIC datagram (no reply).
    pub fn ping(
        &self,
        batch: &PingBatchMsg,
        fbb: &mut FlatBufferBuilder<'_>,
    ) -> anyhow::Result<()> {
        let bytes = batch.encode_into(fbb);
        self.conn
            .send_datagram(bytes::Bytes::copy_from_slice(bytes))
            .context("cannot send the datagram")
    }

    /// Sends an already encoded ping-batch frame as one QUIC datagram.
    pub fn ping_frame(&self, frame: bytes::Bytes) -> Result<(), quinn::SendDatagramError> {
        self.conn.send_datagram(frame)
    }

    /// Uploads ping batches on one unidirectional stream, length-prefixed.
    pub async fn backlog(&self, batches: &[PingBatchMsg]) -> anyhow::Result<()> {
        let mut send = self.conn.open_uni().await?;
        let mut fbb = FlatBufferBuilder::new();
        for b in batches {
            let bytes = b.encode_into(&mut fbb);
            send.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
            send.write_all(bytes).await?;
        }
        send.finish()?;
        send.stopped().await?;
        Ok(())
    }

    /// The underlying connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Closes the connection normally.
    pub fn close(&self) {
        self.conn.close(
            quinn::VarInt::from_u32(fencegate_schema::close::NORMAL),
            b"bye",
        );
    }
}

/// A TLS session store holding up to `capacity` TLS 1.3 tickets per server
/// (rustls's own cache keeps 8). One client process standing in for many
/// phones needs one ticket per phone in flight, or most connections of a
/// burst would find no ticket and fall back to a full handshake.
#[derive(Debug)]
pub struct TicketPool {
    capacity: usize,
    servers: std::sync::Mutex<
        std::collections::HashMap<rustls::pki_types::ServerName<'static>, TicketEntry>,
    >,
}

#[derive(Debug, Default)]
struct TicketEntry {
    kx_hint: Option<rustls::NamedGroup>,
    tickets: std::collections::VecDeque<rustls::client::Tls13ClientSessionValue>,
}

impl TicketPool {
    /// A pool keeping up to `capacity` tickets per server name.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            servers: std::sync::Mutex::default(),
        }
    }

    /// Tickets held for `server_name`.
    pub fn len(&self, server_name: &str) -> usize {
        let Ok(name) = rustls::pki_types::ServerName::try_from(server_name.to_owned()) else {
            return 0;
        };
        self.lock().get(&name).map_or(0, |e| e.tickets.len())
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<rustls::pki_types::ServerName<'static>, TicketEntry>,
    > {
        // A panic elsewhere cannot leave the map inconsistent: every
        // operation is a single insert or pop.
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl rustls::client::ClientSessionStore for TicketPool {
    fn set_kx_hint(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        group: rustls::NamedGroup,
    ) {
        self.lock().entry(server_name).or_default().kx_hint = Some(group);
    }

    fn kx_hint(
        &self,
        server_name: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::NamedGroup> {
        self.lock()
            .get(&server_name.to_owned())
            .and_then(|e| e.kx_hint)
    }

    // QUIC is TLS 1.3 only: there are no TLS 1.2 sessions to keep.
    fn set_tls12_session(
        &self,
        _: rustls::pki_types::ServerName<'static>,
        _: rustls::client::Tls12ClientSessionValue,
    ) {
    }

    fn tls12_session(
        &self,
        _: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &rustls::pki_types::ServerName<'static>) {}

    fn insert_tls13_ticket(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        let mut map = self.lock();
        let e = map.entry(server_name).or_default();
        if e.tickets.len() >= self.capacity {
            e.tickets.pop_front();
        }
        e.tickets.push_back(value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        // Newest first: it is the least likely to have expired.
        self.lock()
            .get_mut(server_name)
            .and_then(|e| e.tickets.pop_back())
    }
}

/// Decodes a reply to a punch stream.
pub fn decode_punch_reply(reply: &[u8]) -> anyhow::Result<PunchReply> {
    let view = parse_reply(reply).map_err(|r| anyhow::anyhow!("unreadable reply: {r:?}"))?;
    match view.to_msg() {
        ReplyMsg::PunchAck(a) => Ok(PunchReply::Ack(a)),
        ReplyMsg::Busy(b) => Ok(PunchReply::Busy {
            retry_after_ms: b.retry_after_ms,
            reason: b.reason,
        }),
        other => anyhow::bail!("expected PunchAck or Busy, got {other:?}"),
    }
}

/// The retry schedule of docs/PROTOCOL.md §9, "Backoff and jitter", as a
/// device SDK should run it: exponential backoff with full jitter that
/// honours the gateway's retry-after. Pure (the caller passes a uniform
/// random number), so it can be tested and reused by any client.
///
/// After the `n`-th consecutive failure (`n` from 0) the wait is
/// `retry_after + uniform[0, min(cap, unit × 2^n))`, where `unit` is the
/// `Busy`'s `retry_after_ms` when there is one, the refused base (4 s)
/// after a refused connection (`CONNECTION_REFUSED`, which carries no
/// retry-after: the gateway refuses only when overloaded, see
/// [`is_refused`]), and `base` (1 s) after a lost connection, a timeout or
/// a reset; `retry_after` is 0 without a `Busy`.
/// A success resets `n`. Full jitter spreads the devices refused in the
/// same instant over the whole window, so their retries do not arrive as a
/// second spike; the doubling makes a crowd back off until the gateway
/// admits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// The window after the first failure without a retry-after.
    pub const BASE: Duration = Duration::from_secs(1);
    /// The largest window.
    pub const CAP: Duration = Duration::from_secs(30);
    /// The window after the first refused connection. A gateway refuses
    /// only when its own queue stands above target, and with thousands of
    /// devices refused at once, each retry costs it (and the device) a new
    /// key share and Initial packet: come back in seconds, not
    /// milliseconds.
    pub const REFUSED_BASE: Duration = Duration::from_secs(4);
    /// The documented schedule: [`Backoff::BASE`], [`Backoff::CAP`].
    pub fn new() -> Self {
        Self::with(Self::BASE, Self::CAP)
    }

    /// A schedule with another base and cap (tests, time-compressed loads).
    pub fn with(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
        }
    }

    /// The wait before the next attempt, after a failure; `retry_after` is
    /// the `Busy`'s, `None` for anything else; `uniform` is a random number
    /// in [0, 1).
    pub fn next_wait(&mut self, retry_after: Option<Duration>, uniform: f64) -> Duration {
        let unit = retry_after.filter(|d| !d.is_zero()).unwrap_or(self.base);
        self.wait(retry_after.unwrap_or_default(), unit, uniform)
    }

    /// The wait after a refused connection (`CONNECTION_REFUSED`, see
    /// [`is_refused`]): no retry-after, [`Backoff::REFUSED_BASE`] as the
    /// unit (scaled like `base` in a [`Backoff::with`] schedule).
    pub fn next_wait_refused(&mut self, uniform: f64) -> Duration {
        let unit = Self::REFUSED_BASE.mul_f64(self.base.as_secs_f64() / Self::BASE.as_secs_f64());
        self.wait(Duration::ZERO, unit, uniform)
    }

    fn wait(&mut self, retry_after: Duration, unit: Duration, uniform: f64) -> Duration {
        let window = unit
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        retry_after + window.mul_f64(uniform.clamp(0.0, 1.0))
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Whether a connect failed because the gateway refused the connection
/// before its handshake (QUIC `CONNECTION_REFUSED`): it is overloaded, so
/// back off with [`Backoff::next_wait_refused`].
pub fn is_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<quinn::ConnectionError>(),
            Some(quinn::ConnectionError::ConnectionClosed(cc))
                if cc.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED
        )
    })
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway that never answers (it sheds every copy of the attempt,
    /// or the attempt's packets are lost) ends the attempt at the
    /// handshake timeout with an error the caller backs off on, instead of
    /// after quinn's 30 s idle timeout. Red without the timeout (the outer
    /// 5 s bound fires).
    #[tokio::test]
    async fn an_unanswered_handshake_ends_at_the_handshake_timeout() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut opts = ConnectorOptions::new(
            silent.local_addr().unwrap(),
            "localhost",
            Trust::Pinned("00".repeat(32)),
        );
        opts.handshake_timeout = Duration::from_millis(300);
        let connector = Connector::with_options(&opts).unwrap();
        let e = tokio::time::timeout(Duration::from_secs(5), connector.handshake())
            .await
            .expect("the attempt ends at its handshake timeout")
            .unwrap_err();
        assert!(format!("{e:#}").contains("no answer within 300ms"), "{e:#}");
    }

    /// Devices that connect in the same instant must not resend their
    /// Initials in step: the estimates cover the documented range (150 to
    /// 500 ms, so first resends 0.45 to 1.5 s apart), and the draws a
    /// connector makes are spread over it. Red with a fixed estimate.
    #[test]
    fn each_connection_draws_its_own_first_rtt_estimate() {
        assert_eq!(initial_rtt(0.0), Duration::from_millis(150));
        assert_eq!(initial_rtt(0.5), Duration::from_millis(325));
        assert!(initial_rtt(0.999_999) < Duration::from_millis(500));
        let draws: Vec<Duration> = (0..200)
            .map(|_| initial_rtt(rand::random::<f64>()))
            .collect();
        let (min, max) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(
            *max - *min > Duration::from_millis(250),
            "200 draws span {min:?}..{max:?}"
        );
    }

    #[test]
    fn backoff_windows_double_up_to_the_cap_with_full_jitter() {
        let mut b = Backoff::new();
        // The top of each window (uniform just below 1), then its bottom.
        let tops: Vec<u64> = (0..7)
            .map(|_| b.next_wait(None, 0.999_999).as_millis() as u64)
            .collect();
        assert_eq!(tops, [999, 1_999, 3_999, 7_999, 15_999, 29_999, 29_999]);
        assert_eq!(
            b.next_wait(None, 0.0),
            Duration::ZERO,
            "full jitter reaches 0"
        );
        b.reset();
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn a_refused_connection_backs_off_from_the_refused_base() {
        let mut b = Backoff::new();
        assert_eq!(b.next_wait_refused(0.5), Duration::from_secs(2));
        assert_eq!(b.next_wait_refused(0.5), Duration::from_secs(4));
        assert_eq!(b.next_wait_refused(0.999_999).as_secs(), 15, "up to 16 s");
        assert_eq!(
            b.next_wait_refused(0.999_999).as_secs(),
            29,
            "capped at 30 s"
        );
    }

    #[test]
    fn backoff_never_waits_less_than_the_retry_after() {
        let mut b = Backoff::new();
        let ra = Duration::from_millis(500);
        assert_eq!(b.next_wait(Some(ra), 0.0), ra);
        // The window grows from the retry-after, not from the base.
        assert_eq!(b.next_wait(Some(ra), 0.5), ra + Duration::from_millis(500));
        assert_eq!(
            b.next_wait(Some(ra), 0.5),
            ra + Duration::from_millis(1_000)
        );
    }
}
