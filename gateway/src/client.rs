//! A device client over QUIC, used by the end-to-end tests and the load
//! harness, and a reference for third-party clients (`docs/PROTOCOL.md`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use fencegate_schema::{
    FrameMsg, HelloMsg, PingBatchMsg, PunchAckMsg, PunchMsg, Reason, ReplyMsg, ReplyView, Verdict,
    parse_reply,
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

/// Makes client endpoints that share one TLS configuration (and so one
/// session-ticket cache, which is what makes resumption work).
#[derive(Debug, Clone)]
pub struct Connector {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    server: SocketAddr,
    server_name: String,
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
        let crypto = client_crypto(trust, zero_rtt)?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .context("the TLS configuration cannot serve QUIC")?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(std::time::Duration::from_secs(10)));
        config.transport_config(Arc::new(transport));
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let endpoint = quinn::Endpoint::client(bind).context("cannot bind a client UDP socket")?;
        Ok(Self {
            endpoint,
            config,
            server,
            server_name: server_name.to_owned(),
        })
    }

    /// Connects and authenticates with `token` as `device`.
    pub async fn connect(&self, token: &str, device: &str) -> anyhow::Result<Client> {
        let connecting = self
            .endpoint
            .connect_with(self.config.clone(), self.server, &self.server_name)
            .context("cannot start a connection")?;
        let conn = connecting.await.context("QUIC handshake failed")?;
        let client = Client { conn };
        client.hello(token, device).await?;
        Ok(client)
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
        recv.read_to_end(64 * 1024)
            .await
            .map_err(|e| anyhow::anyhow!("no reply: {e} ({:?})", self.conn.close_reason()))
    }

    async fn hello(&self, token: &str, device: &str) -> anyhow::Result<()> {
        let mut fbb = FlatBufferBuilder::new();
        let frame = FrameMsg::Hello(HelloMsg {
            token: token.to_owned(),
            device_id: device.to_owned(),
            client: Some(concat!("fencegate-client/", env!("CARGO_PKG_VERSION")).to_owned()),
        })
        .encode_into(&mut fbb)
        .to_vec();
        let reply = self.request(&frame).await?;
        match parse_reply(&reply) {
            Ok(ReplyView::HelloAck(_)) => Ok(()),
            Ok(other) => anyhow::bail!("expected HelloAck, got {other:?}"),
            Err(r) => anyhow::bail!("unreadable HelloAck: {r:?}"),
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
