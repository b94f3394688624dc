//! The shared lane's CPU gate (`quic.cpu_gate`), for a node with a CPU
//! limit.
//!
//! Under a CPU quota (a container's CPU limit: cgroup v2 `cpu.max`, v1
//! `cpu.cfs_quota_us`) the kernel stops the whole process once a period's
//! share is spent, until the next period begins. The punch lane stops with
//! the flood: the shared lane's nice value (`priority.rs`) orders threads
//! only inside the share, not the stop. A ping flood that takes whatever
//! punches leave therefore makes every step of a punch wait for the next
//! period (docs/PERFORMANCE.md, "A true 2× flood").
//!
//! The gate keeps the process under a fraction of its limit by pausing
//! reads of the shared lane's sockets (`quic.listen`) while the process is
//! over it. The flood waits in, and overflows from, the kernel's socket
//! buffer (counted as `reason="kernel"` drops), which costs the node
//! nothing, and punches keep what they need. The punch lane's socket is
//! never gated, so the gate runs only with `quic.punch_listen` set.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::clock;

/// How often, at most, the gate reads the process's CPU clock: only when
/// a gated socket is read and this long has passed since the last look
/// (an idle node never looks). Quota periods are commonly 2–100 ms.
pub const TICK: Duration = Duration::from_millis(1);
/// CPU time, at the gated rate, the process may save up while under it:
/// enough for a burst of punches' handshakes, small next to a period.
const BURST: Duration = Duration::from_millis(5);
/// CPU time, at the gated rate, the process may owe: after a long burst
/// the gate reopens within this, not after the whole burst is paid back.
const DEBT: Duration = Duration::from_millis(20);
/// Shortest wait of a closed gate before it looks again. A timer's wake
/// costs tens of microseconds on a virtual machine; the flood's datagrams
/// are shed while it waits, which is the point.
const MIN_WAIT: Duration = Duration::from_millis(2);
/// Longest the shared lane is held shut. After it, reads go on for
/// [`MIN_OPEN`] however far over the process is: when punches alone use
/// the budget, fleets still finish handshakes and keep-alives, slowly.
pub const MAX_CLOSED: Duration = Duration::from_millis(90);
/// How long a forced opening lasts (see [`MAX_CLOSED`]).
pub const MIN_OPEN: Duration = Duration::from_millis(10);

/// The process's CPU limit in cores from its cgroup's quota (the smallest
/// on the path from its own cgroup up to the root); `None` without one.
pub fn cgroup_cpu_limit() -> Option<f64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    limit_under(Path::new("/sys/fs/cgroup"), &own)
}

/// [`cgroup_cpu_limit`] for a cgroup mount at `root` and a process whose
/// `/proc/self/cgroup` reads `proc_cgroup`.
pub fn limit_under(root: &Path, proc_cgroup: &str) -> Option<f64> {
    let mut best: Option<f64> = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim().trim_start_matches('/');
        let found = if controllers.is_empty() {
            // cgroup v2: one hierarchy, `cpu.max` = "<quota|max> <period>".
            ancestors(root, rel)
                .filter_map(|d| read_v2(&d.join("cpu.max")))
                .reduce(f64::min)
        } else if controllers.split(',').any(|c| c == "cpu") {
            // cgroup v1: the cpu controller's own mount, named by its
            // controllers ("cpu", or "cpu,cpuacct" with a "cpu" link).
            [controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu"]
                .into_iter()
                .map(|m| root.join(m))
                .find(|base| base.is_dir())
                .and_then(|base| {
                    ancestors(&base, rel)
                        .filter_map(|d| read_v1(&d))
                        .reduce(f64::min)
                })
        } else {
            None
        };
        if let Some(cores) = found {
            best = Some(best.map_or(cores, |b: f64| b.min(cores)));
        }
    }
    best
}

/// `base/rel`, then each of its parents up to `base` itself.
fn ancestors<'a>(base: &'a Path, rel: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
    Path::new(rel).ancestors().map(move |p| base.join(p))
}

/// A v2 `cpu.max` file's limit in cores.
fn read_v2(file: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut it = text.split_whitespace();
    let quota: f64 = it.next()?.parse().ok()?; // "max": no limit
    let period: f64 = it.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// A v1 cpu controller folder's limit in cores.
fn read_v1(dir: &Path) -> Option<f64> {
    let read = |name: &str| -> Option<f64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let quota = read("cpu.cfs_quota_us")?; // -1: no limit
    let period = read("cpu.cfs_period_us")?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// The gate's decision from the process's CPU use: a bucket of CPU time
/// filled at the gated rate (`quic.cpu_gate` × the limit) and drained by
/// what every thread of the process used. Reads go on while it holds
/// something; it may save up [`BURST`] and owe [`DEBT`] at that rate.
#[derive(Debug, Clone)]
pub struct CpuBucket {
    /// Cores the process may use before the shared lane pauses.
    rate: f64,
    /// CPU seconds in hand; negative while the process owes.
    balance: f64,
    cap: f64,
    floor: f64,
    closed_for: Duration,
    forced_open_left: Duration,
}

impl CpuBucket {
    /// A full bucket for a process that may use `cores`.
    pub fn new(cores: f64) -> Self {
        let cap = cores * BURST.as_secs_f64();
        Self {
            rate: cores,
            balance: cap,
            cap,
            floor: -cores * DEBT.as_secs_f64(),
            closed_for: Duration::ZERO,
            forced_open_left: Duration::ZERO,
        }
    }

    /// Accounts `wall` time passed and `cpu` time the process used in it;
    /// returns whether the shared lane may read.
    pub fn step(&mut self, wall: Duration, cpu: Duration) -> bool {
        self.balance = (self.balance + self.rate * wall.as_secs_f64() - cpu.as_secs_f64())
            .clamp(self.floor, self.cap);
        if !self.forced_open_left.is_zero() {
            self.forced_open_left = self.forced_open_left.saturating_sub(wall);
            if !self.forced_open_left.is_zero() {
                return true;
            }
        }
        if self.balance >= 0.0 {
            self.closed_for = Duration::ZERO;
            return true;
        }
        self.closed_for += wall;
        if self.closed_for >= MAX_CLOSED {
            self.closed_for = Duration::ZERO;
            self.forced_open_left = MIN_OPEN;
            return true;
        }
        false
    }

    /// How long a closed gate should wait before it looks again: until
    /// the bucket is paid back if the process used nothing meanwhile, or
    /// until [`MAX_CLOSED`] forces it open, and at least [`MIN_WAIT`].
    pub fn wait(&self) -> Duration {
        let repay = Duration::from_secs_f64((-self.balance).max(0.0) / self.rate);
        repay
            .min(MAX_CLOSED.saturating_sub(self.closed_for))
            .max(MIN_WAIT)
    }
}

/// The decision shared by every gated socket of the shared lane: whether
/// reads may go on, re-made from the process's CPU clock by whichever
/// socket is read first once [`TICK`] has passed.
pub struct CpuGate {
    /// Monotonic origin of `looked_ns`.
    t0: Instant,
    /// When the decision was last made, nanoseconds after `t0`.
    looked_ns: AtomicU64,
    closed: AtomicBool,
    /// How long a socket finding the gate closed waits (nanoseconds).
    wait_ns: AtomicU64,
    state: Mutex<Looked>,
    /// The process's CPU clock ([`clock::process_cpu`]; tests give theirs).
    cpu: fn() -> Duration,
    closings: metrics::Counter,
    deferred: metrics::Counter,
}

/// The bucket and the clocks' readings when it was last stepped.
struct Looked {
    bucket: CpuBucket,
    wall: Instant,
    cpu: Duration,
}

impl fmt::Debug for CpuGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuGate")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl CpuGate {
    /// An open gate for a process that may use `cores` before the shared
    /// lane's reads pause.
    pub fn new(cores: f64) -> Self {
        Self::with_cpu_clock(cores, clock::process_cpu)
    }

    /// [`CpuGate::new`] reading CPU time from `cpu`.
    pub fn with_cpu_clock(cores: f64, cpu: fn() -> Duration) -> Self {
        let now = clock::instant();
        Self {
            t0: now,
            looked_ns: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            wait_ns: AtomicU64::new(0),
            state: Mutex::new(Looked {
                bucket: CpuBucket::new(cores),
                wall: now,
                cpu: cpu(),
            }),
            cpu,
            closings: metrics::counter!("fencegate_cpu_gate_closings_total"),
            deferred: metrics::counter!("fencegate_cpu_gate_deferred_reads_total"),
        }
    }

    /// `None` while reads may go on; else how long to wait before asking
    /// again. Reads the CPU clock at most once per [`TICK`] across all
    /// sockets (a socket that finds another one deciding takes the last
    /// decision).
    fn check(&self, now: Instant) -> Option<Duration> {
        let now_ns = now.saturating_duration_since(self.t0).as_nanos() as u64;
        let last = self.looked_ns.load(Ordering::Acquire);
        if now_ns >= last + TICK.as_nanos() as u64
            && let Ok(mut st) = self.state.try_lock()
        {
            let cpu = (self.cpu)();
            let wall = now.saturating_duration_since(st.wall);
            let used = cpu.saturating_sub(st.cpu);
            (st.wall, st.cpu) = (now, cpu);
            let open = st.bucket.step(wall, used);
            self.wait_ns
                .store(st.bucket.wait().as_nanos() as u64, Ordering::Relaxed);
            if !open && !self.closed.load(Ordering::Relaxed) {
                self.closings.increment(1);
            }
            self.closed.store(!open, Ordering::Release);
            self.looked_ns.store(now_ns, Ordering::Release);
        }
        self.closed
            .load(Ordering::Acquire)
            .then(|| Duration::from_nanos(self.wait_ns.load(Ordering::Relaxed)).max(MIN_WAIT))
    }

    /// Wraps `inner` so that its reads wait while the gate is closed.
    pub fn wrap(self: &Arc<Self>, inner: Arc<dyn AsyncUdpSocket>) -> Arc<dyn AsyncUdpSocket> {
        Arc::new(GatedSocket {
            inner,
            gate: self.clone(),
            timer: Mutex::new(None),
        })
    }
}

/// A socket of the shared lane whose reads wait while its [`CpuGate`] is
/// closed. Sends are never held: they carry ACKs and handshakes already
/// paid for.
struct GatedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    gate: Arc<CpuGate>,
    /// While closed: when to look again (it wakes quinn's endpoint driver,
    /// whose read is what was held).
    timer: Mutex<Option<Pin<Box<tokio::time::Sleep>>>>,
}

impl fmt::Debug for GatedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedSocket")
            .field("inner", &self.inner)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for GatedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // One monotonic read per read call (a batch of datagrams); the CPU
        // clock is read at most once per TICK.
        while let Some(wait) = self.gate.check(clock::instant()) {
            let mut timer = self.timer.lock().unwrap_or_else(|e| e.into_inner());
            let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
            if sleep.as_mut().poll(cx).is_pending() {
                self.gate.deferred.increment(1);
                return Poll::Pending;
            }
            // Waited at least MIN_WAIT (> TICK): look again.
            *timer = None;
        }
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_bucket_closes_over_its_rate_and_opens_when_paid_back() {
        // 0.4 cores, so 2 ms saved at most; each step is 1 ms of wall time.
        let mut b = CpuBucket::new(0.4);
        // Under the rate: always open.
        for _ in 0..50 {
            assert!(b.step(MS, MS / 4));
        }
        // Two cores' worth, 1.6 ms over each step: the 2 ms saved lasts one.
        let steps: Vec<bool> = (0..3).map(|_| b.step(MS, 2 * MS)).collect();
        assert_eq!(steps, [true, false, false]);
        // Owing 1.2 ms + 1.6 ms = 2.8 ms; at 0.1 ms of CPU a step, each
        // pays back 0.3 ms, so it opens on the tenth step.
        let idle: Vec<bool> = (0..10)
            .map(|_| b.step(MS, Duration::from_micros(100)))
            .collect();
        assert_eq!(
            idle,
            [
                false, false, false, false, false, false, false, false, false, true
            ]
        );
    }

    #[test]
    fn the_debt_is_bounded_so_a_long_burst_does_not_starve_the_lane() {
        let mut b = CpuBucket::new(0.5);
        // 60 ms at two cores: without a floor it would owe 87.5 ms of CPU.
        for _ in 0..60 {
            b.step(MS, 2 * MS);
        }
        // Owing at most DEBT × rate = 10 ms of CPU, 20–21 idle steps repay
        // it, well before MAX_CLOSED would force an opening (31 steps on).
        let reopened = (1..=40).find(|_| b.step(MS, Duration::ZERO));
        assert!(
            matches!(reopened, Some(n) if n <= 21),
            "reopened after {reopened:?} idle steps"
        );
    }

    #[test]
    fn a_lane_held_shut_for_max_closed_is_let_through_for_min_open() {
        let mut b = CpuBucket::new(0.5);
        // Punches alone over the budget (1.1 cores against 0.5): the gate
        // would never open on its balance.
        let open: Vec<bool> = (0..200)
            .map(|_| b.step(MS, Duration::from_micros(1_100)))
            .collect();
        let first_forced = open
            .iter()
            .enumerate()
            .skip(10)
            .find(|(_, o)| **o)
            .map(|(i, _)| i)
            .expect("forced open within 200 ms");
        let closed_before = open[..first_forced]
            .iter()
            .rev()
            .take_while(|o| !**o)
            .count();
        assert_eq!(closed_before as u128, MAX_CLOSED.as_millis() - 1);
        let open_run = open[first_forced..].iter().take_while(|o| **o).count();
        assert_eq!(open_run as u128, MIN_OPEN.as_millis());
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn limits_are_read_from_v1_and_v2_with_the_smallest_ancestor_winning() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // v2: a limit on the parent (1.5 cores) and a smaller one below.
        write(&root.join("v2/kube/pod/cpu.max"), "50000 100000\n");
        write(&root.join("v2/kube/cpu.max"), "150000 100000\n");
        write(&root.join("v2/cpu.max"), "max 100000\n");
        assert_eq!(limit_under(&root.join("v2"), "0::/kube/pod\n"), Some(0.5));
        write(&root.join("v2/kube/pod/cpu.max"), "max 100000\n");
        assert_eq!(limit_under(&root.join("v2"), "0::/kube/pod\n"), Some(1.5));
        // v1, the controller mounted as "cpu,cpuacct"; cpuset lines ignored.
        let v1 = root.join("v1");
        write(&v1.join("cpu,cpuacct/fg/cpu.cfs_quota_us"), "1000\n");
        write(&v1.join("cpu,cpuacct/fg/cpu.cfs_period_us"), "2000\n");
        write(&v1.join("cpu,cpuacct/cpu.cfs_quota_us"), "-1\n");
        write(&v1.join("cpu,cpuacct/cpu.cfs_period_us"), "100000\n");
        let own = "3:cpuset:/\n2:cpu,cpuacct:/fg\n1:name=systemd:/\n0::/\n";
        assert_eq!(limit_under(&v1, own), Some(0.5));
        // No quota anywhere: no limit.
        assert_eq!(limit_under(&v1, "2:cpu,cpuacct:/\n"), None);
        assert_eq!(limit_under(&root.join("none"), "0::/\n"), None);
    }

    /// The fake CPU clock of the socket test, nanoseconds.
    static FAKE_CPU_NS: AtomicU64 = AtomicU64::new(0);

    fn fake_cpu() -> Duration {
        Duration::from_nanos(FAKE_CPU_NS.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_gated_socket_holds_its_datagrams_while_the_process_is_over_and_reads_them_after() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_nonblocking(true).unwrap();
        let addr = udp.local_addr().unwrap();
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, udp).unwrap();
        let gate = Arc::new(CpuGate::with_cpu_clock(0.5, fake_cpu));
        let sock = gate.wrap(inner);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"ping", addr).unwrap();
        let mut buf = [0u8; 64];
        let recv = |cx: &mut Context<'_>, buf: &mut [u8; 64]| {
            let mut bufs = [IoSliceMut::new(buf)];
            let mut meta = [RecvMeta::default()];
            sock.poll_recv(cx, &mut bufs, &mut meta)
                .map(|r| r.map(|_| meta[0].len))
        };

        // The process used a whole second of CPU at once (far over half a
        // core): with the datagram waiting, the read is held.
        FAKE_CPU_NS.fetch_add(1_000_000_000, Ordering::SeqCst);
        tokio::time::sleep(2 * TICK).await;
        let held_at = clock::instant();
        let first = std::future::poll_fn(|cx| Poll::Ready(recv(cx, &mut buf))).await;
        assert!(first.is_pending(), "read while over the limit: {first:?}");

        // Nothing more used: the gate's own timer wakes the read once the
        // debt (at most DEBT of the gated rate) is repaid, and it gets the
        // datagram that waited.
        let len = tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| recv(cx, &mut buf)),
        )
        .await
        .expect("the gate's timer must wake the held read")
        .unwrap();
        assert_eq!((len, &buf[..4]), (4, &b"ping"[..]));
        let held = clock::instant() - held_at;
        assert!(held >= DEBT / 2, "held for only {held:?}");
    }
}
