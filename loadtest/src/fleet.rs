//! The fleet load: long-lived devices, each sending a datagram of `batch`
//! positions every `ping_interval_s`, random-walking or driving routes
//! through fences.
//!
//! The schedule is fixed before the first datagram: device `d` sends its
//! `k`-th datagram at `start + base[d] + k·interval`, and the last fix in it
//! carries exactly that time. The log tail (`tail.rs`) recovers each logged
//! ping's intended send time from its device and fix time alone, so
//! ping→log latency is measured from when the datagram was due, with no
//! per-datagram bookkeeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fencegate::client::Client;
use fencegate_schema::{Fix, PingBatchMsg};
use flatbuffers::FlatBufferBuilder;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::clock;
use crate::ids::RunIds;
use crate::punch::error_kind;
use crate::rng::Rng;
use crate::scenario::FleetLoad;
use crate::spread::{Link, LinkCounts, Spread};
use crate::stats::Series;
use crate::world::{self, World};

/// When every device sends.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The run's clock origin.
    pub t0: Instant,
    /// Wall clock at `t0`, unix ms.
    pub t0_unix_ms: i64,
    /// First possible send, ms after `t0`.
    pub start_ms: i64,
    /// No datagram is due at or after this, ms after `t0`.
    pub end_ms: i64,
    /// Milliseconds between a device's datagrams.
    pub interval_ms: i64,
    /// Milliseconds between fixes in a datagram.
    pub fix_ms: i64,
    /// Fixes per datagram.
    pub batch: u32,
    /// Each device's offset within the interval, ms.
    pub base_ms: Vec<i64>,
}

impl Schedule {
    /// A schedule for the fleet `f` starting at `start_ms` for `length`.
    pub fn new(
        t0: Instant,
        t0_unix_ms: i64,
        start_ms: i64,
        length: Duration,
        f: &FleetLoad,
        seed: u64,
    ) -> Self {
        let (batch, devices) = (f.batch, f.devices);
        let interval_ms = ((f.ping_interval_s * 1_000.0).round() as i64).max(1);
        let fix_ms = if batch > 1 {
            (interval_ms / i64::from(batch)).max(1)
        } else {
            interval_ms
        };
        let base_ms = (0..devices)
            .map(|d| Rng::derive(seed, 5, d).below(interval_ms as u64) as i64)
            .collect();
        Self {
            t0,
            t0_unix_ms,
            start_ms,
            end_ms: start_ms + length.as_millis() as i64,
            interval_ms,
            fix_ms,
            batch,
            base_ms,
        }
    }

    /// When device `d`'s `k`-th datagram is due, ms after `t0`.
    pub fn due_ms(&self, d: usize, k: i64) -> i64 {
        self.start_ms + self.base_ms[d] + k * self.interval_ms
    }

    /// The due time (ms after `t0`) of the datagram that carried device
    /// `d`'s fix taken at `fix_unix_ms`: the first send at or after it.
    pub fn due_of_fix(&self, d: usize, fix_unix_ms: i64) -> Option<i64> {
        let rel = fix_unix_ms - self.t0_unix_ms;
        let first = self.start_ms + *self.base_ms.get(d)?;
        let after = (rel - first).max(0);
        let k = (after + self.interval_ms - 1) / self.interval_ms;
        Some(first + k * self.interval_ms)
    }
}

/// Everything the device tasks share.
#[derive(Debug)]
pub struct FleetCtx {
    /// The targets: client endpoints, token issuers, counts.
    pub links: Arc<[Link]>,
    /// Which target each device uses.
    pub spread: Spread,
    /// Fences and positions.
    pub world: Arc<World>,
    /// The world's seed.
    pub seed: u64,
    /// Share of devices on routes.
    pub route_share: f64,
    /// Device speeds, m/s.
    pub speed_mps: [f64; 2],
    /// The run's ids.
    pub ids: Arc<RunIds>,
    /// Fixes offered (per second) and, filled by the log tail, logged
    /// pings with their latency.
    pub series: Arc<Series>,
    /// Connection set-up (handshake and Hello) while the fleet connects.
    pub connect: Arc<Series>,
    /// The harness's own lateness: a datagram's due time → handed to QUIC.
    pub send_late: Arc<Series>,
    /// Counts.
    pub counts: FleetCounts,
}

/// Counts kept while the fleet runs.
#[derive(Debug, Default)]
pub struct FleetCounts {
    connected: AtomicU64,
    datagrams: AtomicU64,
    fixes_sent: AtomicU64,
    reconnects: AtomicU64,
    datagram_bytes: AtomicU64,
    on_wire: AtomicU64,
}

/// What the fleet did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetOutcomes {
    /// Devices asked for.
    pub devices: u64,
    /// Devices connected when pinging began.
    pub connected: u64,
    /// Seconds the connect phase took.
    pub connect_s: f64,
    /// Datagrams handed to QUIC.
    pub datagrams_sent: u64,
    /// Fixes in them.
    pub fixes_sent: u64,
    /// Mean datagram size, bytes.
    pub datagram_bytes: f64,
    /// Reconnections after a lost connection.
    pub reconnects: u64,
    /// DATAGRAM frames the devices' QUIC connections put on the wire
    /// (quinn's count, read when each connection ended): `datagrams_sent`
    /// minus this is what the harness's own send buffers dropped.
    pub datagrams_on_wire: u64,
}

/// Connects every device at `connect_rate` per second (open loop), giving
/// up on a device at `deadline`. Returns each device's client.
pub async fn connect_all(
    ctx: &Arc<FleetCtx>,
    devices: u64,
    connect_rate: f64,
    deadline: Instant,
) -> Vec<Option<Client>> {
    let t = clock::now();
    let mut out: Vec<Option<Client>> = vec![None; devices as usize];
    let mut set = JoinSet::new();
    // Bounds the handshakes in flight, not the rate: the rate is the schedule.
    let sem = Arc::new(Semaphore::new(4_096));
    for d in 0..devices {
        let at = t + Duration::from_secs_f64(d as f64 / connect_rate);
        if at > clock::now() {
            tokio::time::sleep_until(at.into()).await;
        }
        let permit = sem.clone().acquire_owned().await.expect("never closed");
        let ctx = ctx.clone();
        set.spawn(async move {
            let _permit = permit;
            (d, connect_one(&ctx, d, at, deadline).await)
        });
        while let Some(r) = set.try_join_next() {
            if let Ok((d, c)) = r {
                out[d as usize] = c;
            }
        }
    }
    while let Some(r) = set.join_next().await {
        if let Ok((d, c)) = r {
            out[d as usize] = c;
        }
    }
    out
}

async fn connect_one(
    ctx: &FleetCtx,
    d: u64,
    intended: Instant,
    deadline: Instant,
) -> Option<Client> {
    let id = ctx.ids.device(d);
    let link = &ctx.links[ctx.spread.device(d)];
    let token = match link.issuer.token(&id) {
        Ok(t) => t,
        Err(e) => {
            ctx.connect.error(clock::now(), &format!("token: {e}"));
            return None;
        }
    };
    let connector = link.connector(d);
    let mut rng = Rng::derive(ctx.seed, 6, d);
    let mut backoff = Duration::from_millis(500);
    loop {
        if clock::now() >= deadline {
            ctx.connect
                .error(clock::now(), "connect: gave up at the deadline");
            return None;
        }
        match tokio::time::timeout_at(deadline.into(), connector.connect(&token, &id)).await {
            Ok(Ok(c)) => {
                ctx.connect.done(intended, clock::now(), 1);
                ctx.counts.connected.fetch_add(1, Ordering::Relaxed);
                LinkCounts::bump(&link.counts.devices_connected);
                return Some(c);
            }
            Ok(Err(e)) => {
                ctx.connect.error(clock::now(), &error_kind("connect", &e));
                tokio::time::sleep(backoff.mul_f64(1.0 + rng.f64())).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(_) => {}
        }
    }
}

/// Pings on `sched` from every connected device until the schedule ends.
pub async fn ping_all(ctx: &Arc<FleetCtx>, sched: &Arc<Schedule>, clients: Vec<Option<Client>>) {
    let mut set = JoinSet::new();
    for (d, c) in clients.into_iter().enumerate() {
        let (ctx, sched) = (ctx.clone(), sched.clone());
        set.spawn(async move { device(&ctx, &sched, d, c).await });
    }
    while set.join_next().await.is_some() {}
}

async fn device(ctx: &FleetCtx, sched: &Schedule, d: usize, mut conn: Option<Client>) {
    let mut mover = world::device(
        &ctx.world,
        ctx.seed,
        ctx.route_share,
        ctx.speed_mps,
        d as u64,
    );
    let mut rng = Rng::derive(ctx.seed, 7, d as u64);
    let mut fbb = FlatBufferBuilder::with_capacity(2_048);
    let batch = sched.batch;
    let mut msg = PingBatchMsg {
        device_seq: 0,
        base_time_ms: 0,
        fixes: Vec::with_capacity(batch as usize),
    };
    let dt_s = sched.fix_ms as f64 / 1_000.0;
    let link = &ctx.links[ctx.spread.device(d as u64)];
    let accuracy_dm = rng.range(30.0, 150.0) as u16;
    let mut reconnected = false;
    for k in 0.. {
        let due = sched.due_ms(d, k);
        if due >= sched.end_ms {
            break;
        }
        let at = sched.t0 + Duration::from_millis(due as u64);
        if at > clock::now() {
            tokio::time::sleep_until(at.into()).await;
        }
        ctx.series.offered(at, u64::from(batch));
        let last_fix = sched.t0_unix_ms + due;
        msg.device_seq = k as u64 + 1;
        msg.base_time_ms = last_fix - i64::from(batch - 1) * sched.fix_ms;
        msg.fixes.clear();
        for j in 0..batch {
            mover.step(dt_s, &mut rng);
            msg.fixes.push(Fix::new(
                (mover.lat * 1e7).round() as i32,
                (mover.lon * 1e7).round() as i32,
                (i64::from(j) * sched.fix_ms) as u32,
                accuracy_dm,
                0,
            ));
        }
        if conn.is_none() {
            conn = reconnect(ctx, d).await;
            reconnected = true;
        }
        let Some(c) = &conn else {
            ctx.series.error(clock::now(), "ping: not connected");
            continue;
        };
        let frame = msg.encode_into(&mut fbb);
        let len = frame.len();
        match c.ping_frame(Bytes::copy_from_slice(frame)) {
            Ok(()) => {
                ctx.send_late.done(at, clock::now(), 1);
                ctx.counts.datagrams.fetch_add(1, Ordering::Relaxed);
                LinkCounts::bump(&link.counts.datagrams_sent);
                ctx.counts
                    .fixes_sent
                    .fetch_add(u64::from(batch), Ordering::Relaxed);
                ctx.counts
                    .datagram_bytes
                    .fetch_add(len as u64, Ordering::Relaxed);
            }
            Err(quinn::SendDatagramError::TooLarge) => {
                let max = c.connection().max_datagram_size().unwrap_or(0);
                ctx.series.error(
                    clock::now(),
                    &format!(
                        "ping: datagram of {len} bytes exceeds the path's {max}; shrink fleet.batch"
                    ),
                );
            }
            Err(quinn::SendDatagramError::ConnectionLost(e)) => {
                ctx.series
                    .error(clock::now(), &format!("ping: connection lost ({e})"));
                ctx.count_on_wire(c);
                conn = None;
                reconnected = true;
            }
            Err(e) => {
                ctx.series.error(clock::now(), &format!("ping: {e}"));
            }
        }
    }
    if let Some(c) = conn {
        if reconnected {
            // Not among the clients the caller closes and counts.
            ctx.count_on_wire(&c);
        }
        // Keep the connection until every device is done, so the gateway's
        // connection count stays flat through the run; the caller closes
        // the endpoints.
        drop(c);
    }
}

async fn reconnect(ctx: &FleetCtx, d: usize) -> Option<Client> {
    let id = ctx.ids.device(d as u64);
    let link = &ctx.links[ctx.spread.device(d as u64)];
    let token = link.issuer.token(&id).ok()?;
    let connector = link.connector(d as u64);
    ctx.counts.reconnects.fetch_add(1, Ordering::Relaxed);
    match tokio::time::timeout(Duration::from_secs(5), connector.connect(&token, &id)).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            ctx.series.error(clock::now(), &error_kind("reconnect", &e));
            None
        }
        Err(_) => {
            ctx.series.error(clock::now(), "reconnect: timed out");
            None
        }
    }
}

impl FleetCtx {
    /// Adds the DATAGRAM frames `c`'s connection has sent to the on-wire
    /// count: once per connection, when it is closed or lost.
    pub fn count_on_wire(&self, c: &Client) {
        let n = c.connection().stats().frame_tx.datagram;
        self.counts.on_wire.fetch_add(n, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn outcomes(&self, devices: u64, connect_s: f64) -> FleetOutcomes {
        let datagrams = self.counts.datagrams.load(Ordering::Relaxed);
        let bytes = self.counts.datagram_bytes.load(Ordering::Relaxed);
        FleetOutcomes {
            devices,
            connected: self.counts.connected.load(Ordering::Relaxed),
            connect_s,
            datagrams_sent: datagrams,
            fixes_sent: self.counts.fixes_sent.load(Ordering::Relaxed),
            datagram_bytes: if datagrams > 0 {
                bytes as f64 / datagrams as f64
            } else {
                0.0
            },
            reconnects: self.counts.reconnects.load(Ordering::Relaxed),
            datagrams_on_wire: self.counts.on_wire.load(Ordering::Relaxed),
        }
    }
}

/// The encoded size of a full datagram of `batch` fixes (for the raw-UDP
/// baseline at the same size).
pub fn datagram_size(batch: u32) -> usize {
    let msg = PingBatchMsg {
        device_seq: 1,
        base_time_ms: 1_750_000_000_000,
        fixes: (0..batch)
            .map(|j| Fix::new(312_304_000, 1_214_737_000, j * 31, 80, 0))
            .collect(),
    };
    msg.encode_into(&mut FlatBufferBuilder::new()).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fix_maps_back_to_its_datagrams_due_time() {
        let t0 = clock::now();
        let f = FleetLoad {
            devices: 3,
            ping_interval_s: 2.0,
            batch: 64,
            route_share: 0.3,
            speed_mps: [2.0, 25.0],
            connect_rate: 100.0,
        };
        let s = Schedule::new(t0, 1_000_000, 500, Duration::from_secs(10), &f, 9);
        assert_eq!(s.fix_ms, 31);
        for d in 0..3 {
            for k in 0..5 {
                let due = s.due_ms(d, k);
                let last = s.t0_unix_ms + due;
                let first = last - 63 * s.fix_ms;
                assert_eq!(s.due_of_fix(d, last), Some(due));
                assert_eq!(s.due_of_fix(d, first), Some(due), "d {d} k {k}");
            }
        }
    }

    #[test]
    fn a_full_batch_fits_a_datagram() {
        // 64 fixes must fit the 1200-byte floor of any QUIC path.
        assert!(datagram_size(64) < 1_150, "{}", datagram_size(64));
    }
}
