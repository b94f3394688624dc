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
//!
//! With the cgroup's quota in view, the gate also learns from the
//! kernel's own count of throttled periods ([`RateControl`]): a rolling
//! bucket cannot see the periods, and the kernel can.

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
/// Longest the shared lane is held shut at the configured rate (longer
/// while the kernel's throttling has cut it, [`CpuBucket::set_rate`]).
/// After it, reads go on for [`MIN_OPEN`] however far over the process
/// is: when punches alone use the budget, fleets still finish handshakes
/// and keep-alives, slowly.
pub const MAX_CLOSED: Duration = Duration::from_millis(90);
/// How long a forced opening lasts (see [`MAX_CLOSED`]).
pub const MIN_OPEN: Duration = Duration::from_millis(10);

/// A CPU quota found in the process's cgroups: the one that binds.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// The limit in cores (quota / period).
    pub cores: f64,
    /// The quota's period: how long a throttled process waits at most.
    pub period: Duration,
    /// The cgroup's `cpu.stat`, where the kernel counts throttled periods.
    pub stat: PathBuf,
}

impl Quota {
    /// How many of the cgroup's periods the kernel has throttled so far
    /// (`nr_throttled` in `cpu.stat`, v1 and v2 alike); `None` when the
    /// file cannot be read.
    pub fn throttled(&self) -> Option<u64> {
        nr_throttled(&std::fs::read_to_string(&self.stat).ok()?)
    }
}

/// The `nr_throttled` count of a `cpu.stat` file's text.
fn nr_throttled(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|n| n.trim().parse().ok())
}

/// The process's binding CPU quota (the smallest on the path from its own
/// cgroup up to the root); `None` without one.
pub fn cgroup_cpu_quota() -> Option<Quota> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    quota_under(Path::new("/sys/fs/cgroup"), &own)
}

/// [`cgroup_cpu_quota`] for a cgroup mount at `root` and a process whose
/// `/proc/self/cgroup` reads `proc_cgroup`.
pub fn quota_under(root: &Path, proc_cgroup: &str) -> Option<Quota> {
    let smaller = |a: Quota, b: Quota| if b.cores < a.cores { b } else { a };
    let mut best: Option<Quota> = None;
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
                .filter_map(|d| read_v2(&d))
                .reduce(smaller)
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
                        .reduce(smaller)
                })
        } else {
            None
        };
        if let Some(q) = found {
            best = Some(match best {
                Some(b) => smaller(b, q),
                None => q,
            });
        }
    }
    best
}

/// `base/rel`, then each of its parents up to `base` itself.
fn ancestors<'a>(base: &'a Path, rel: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
    Path::new(rel).ancestors().map(move |p| base.join(p))
}

/// A v2 cgroup folder's quota (`cpu.max`).
fn read_v2(dir: &Path) -> Option<Quota> {
    let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
    let mut it = text.split_whitespace();
    let quota: f64 = it.next()?.parse().ok()?; // "max": no limit
    let period: f64 = it.next()?.parse().ok()?;
    quota_of(quota, period, dir)
}

/// A v1 cpu controller folder's quota.
fn read_v1(dir: &Path) -> Option<Quota> {
    let read = |name: &str| -> Option<f64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let quota = read("cpu.cfs_quota_us")?; // -1: no limit
    let period = read("cpu.cfs_period_us")?;
    quota_of(quota, period, dir)
}

/// A quota of `quota_us` per `period_us` in the cgroup folder `dir`.
fn quota_of(quota_us: f64, period_us: f64, dir: &Path) -> Option<Quota> {
    (quota_us > 0.0 && period_us > 0.0).then(|| Quota {
        cores: quota_us / period_us,
        period: Duration::from_secs_f64(period_us / 1e6),
        stat: dir.join("cpu.stat"),
    })
}

/// The shortest quota period the gate learns from the kernel's throttling
/// at. A period shorter than this stops a throttled process for under
/// half of it, less than a punch's own round trips; and such periods
/// throttle often however little the process uses (29 % of 2 ms periods
/// with punches alone, docs/PERFORMANCE.md), so cutting on them would
/// starve fleets for nothing. The bucket alone holds those.
pub const FEEDBACK_MIN_PERIOD: Duration = Duration::from_millis(5);

/// How often, at most, the gate reads the kernel's throttle count: a
/// file read, so far rarer than [`TICK`]; and never more often than the
/// quota's period, the unit the kernel throttles in.
pub const FEEDBACK: Duration = Duration::from_millis(100);

/// The gated rate, learnt from the kernel's throttling. The bucket's
/// rolling average does not see the kernel's periods: datagrams read just
/// before the gate closes are still being processed after it, and a burst
/// of punch handshakes lands inside one period; either can spend a
/// period's share and stop the whole process, punch lane included, until
/// the next. So each feedback window in which the kernel throttled the
/// cgroup cuts the rate by a quarter, and each without raises it by a
/// fiftieth of the configured rate, never above it nor below a fifth of
/// it (fleets still get something when punches alone throttle).
#[derive(Debug, Clone)]
pub struct RateControl {
    top: f64,
    rate: f64,
    last: Option<u64>,
}

impl RateControl {
    /// Starts at `top` cores (the limit × `quic.cpu_gate`).
    pub fn new(top: f64) -> Self {
        Self {
            top,
            rate: top,
            last: None,
        }
    }

    /// The rate after a window that ended with the kernel's count at
    /// `throttled` (`None`: unreadable, the rate stays).
    pub fn window(&mut self, throttled: Option<u64>) -> f64 {
        if let Some(now) = throttled {
            match self.last {
                Some(before) if now > before => self.rate *= 0.75,
                Some(_) => self.rate += self.top / 50.0,
                None => {}
            }
            self.rate = self.rate.clamp(self.top / 5.0, self.top);
            self.last = Some(now);
        }
        self.rate
    }
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
    /// How long the lane stays shut before a forced opening: [`MAX_CLOSED`]
    /// at the configured rate, longer while the kernel's throttling has
    /// cut it ([`CpuBucket::set_rate`]).
    max_closed: Duration,
    /// The configured rate, which the forced openings are spaced from.
    top: f64,
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
            max_closed: MAX_CLOSED,
            top: cores,
            forced_open_left: Duration::ZERO,
        }
    }

    /// Moves the gated rate to `cores`, keeping the balance's sign: the
    /// saved-up and owed amounts scale with the rate, and forced openings
    /// come as much rarer as the rate is below the configured one (each
    /// lets a backlog in, which can spend a period's share at once).
    pub fn set_rate(&mut self, cores: f64) {
        self.max_closed = MAX_CLOSED.mul_f64((self.top / cores).max(1.0));
        self.rate = cores;
        self.cap = cores * BURST.as_secs_f64();
        self.floor = -cores * DEBT.as_secs_f64();
        self.balance = self.balance.clamp(self.floor, self.cap);
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
        if self.closed_for >= self.max_closed {
            self.closed_for = Duration::ZERO;
            self.forced_open_left = MIN_OPEN;
            return true;
        }
        false
    }

    /// How long a closed gate should wait before it looks again: until
    /// the bucket is paid back if the process used nothing meanwhile, or
    /// until a forced opening is due, and at least [`MIN_WAIT`].
    pub fn wait(&self) -> Duration {
        let repay = Duration::from_secs_f64((-self.balance).max(0.0) / self.rate);
        repay
            .min(self.max_closed.saturating_sub(self.closed_for))
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
    throttled: metrics::Counter,
    rate: metrics::Gauge,
}

/// The bucket and the clocks' readings when it was last stepped.
struct Looked {
    bucket: CpuBucket,
    wall: Instant,
    cpu: Duration,
    feedback: Option<Feedback>,
}

/// Reads the kernel's throttle count of the cgroup ([`Quota::throttled`];
/// tests give theirs).
pub type ThrottleCount = Box<dyn FnMut() -> Option<u64> + Send>;

/// The gate's learning from the kernel ([`RateControl`]).
struct Feedback {
    control: RateControl,
    count: ThrottleCount,
    every: Duration,
    last: Instant,
    seen: Option<u64>,
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
    /// lane's reads pause; with the cgroup's `quota` (of a period of at
    /// least [`FEEDBACK_MIN_PERIOD`]), that rate is lowered while the
    /// kernel throttles ([`RateControl`]).
    pub fn new(cores: f64, quota: Option<Quota>) -> Self {
        let feedback = quota.filter(|q| q.period >= FEEDBACK_MIN_PERIOD).map(|q| {
            let every = q.period.max(FEEDBACK);
            let count: ThrottleCount = Box::new(move || q.throttled());
            (every, count)
        });
        Self::with_clocks(cores, clock::process_cpu, feedback)
    }

    /// [`CpuGate::new`] reading CPU time from `cpu` and, every so often,
    /// the kernel's throttle count from `feedback`.
    pub fn with_clocks(
        cores: f64,
        cpu: fn() -> Duration,
        feedback: Option<(Duration, ThrottleCount)>,
    ) -> Self {
        let now = clock::instant();
        let rate = metrics::gauge!("fencegate_cpu_gate_rate_cores");
        rate.set(cores);
        Self {
            t0: now,
            looked_ns: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            wait_ns: AtomicU64::new(0),
            state: Mutex::new(Looked {
                bucket: CpuBucket::new(cores),
                wall: now,
                cpu: cpu(),
                feedback: feedback.map(|(every, count)| Feedback {
                    control: RateControl::new(cores),
                    count,
                    every,
                    last: now,
                    seen: None,
                }),
            }),
            cpu,
            closings: metrics::counter!("fencegate_cpu_gate_closings_total"),
            deferred: metrics::counter!("fencegate_cpu_gate_deferred_reads_total"),
            throttled: metrics::counter!("fencegate_cpu_throttled_periods_total"),
            rate,
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
            let st = &mut *st;
            if let Some(fb) = st.feedback.as_mut()
                && now.saturating_duration_since(fb.last) >= fb.every
            {
                fb.last = now;
                let count = (fb.count)();
                if let (Some(before), Some(after)) = (fb.seen, count) {
                    self.throttled.increment(after.saturating_sub(before));
                }
                fb.seen = count.or(fb.seen);
                let rate = fb.control.window(count);
                st.bucket.set_rate(rate);
                self.rate.set(rate);
            }
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

        // The kernel's throttling cut the rate to a fifth: forced openings
        // come five times as far apart, each as long.
        b.set_rate(0.1);
        let open: Vec<bool> = (0..1_000)
            .map(|_| b.step(MS, Duration::from_micros(1_100)))
            .collect();
        let runs: Vec<(bool, usize)> = open
            .chunk_by(|a, b| a == b)
            .map(|r| (r[0], r.len()))
            .collect();
        let inner = &runs[1..runs.len() - 1];
        assert!(inner.len() >= 2, "{runs:?}");
        for (o, len) in inner {
            let want = if *o { MIN_OPEN } else { 5 * MAX_CLOSED - MS };
            assert_eq!(*len as u128, want.as_millis(), "{runs:?}");
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// The cores and period of the quota found, and its `cpu.stat`'s
    /// folder relative to `root`.
    fn found(root: &Path, own: &str) -> Option<(f64, Duration, PathBuf)> {
        quota_under(root, own).map(|q| {
            let dir = q.stat.parent().unwrap().strip_prefix(root).unwrap();
            (q.cores, q.period, dir.to_path_buf())
        })
    }

    #[test]
    fn quotas_are_read_from_v1_and_v2_with_the_smallest_ancestor_winning() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // v2: a limit on the parent (1.5 cores) and a smaller one below.
        write(&root.join("v2/kube/pod/cpu.max"), "50000 100000\n");
        write(&root.join("v2/kube/cpu.max"), "150000 100000\n");
        write(&root.join("v2/cpu.max"), "max 100000\n");
        let v2 = root.join("v2");
        let pod = Some((0.5, 100 * MS, PathBuf::from("kube/pod")));
        assert_eq!(found(&v2, "0::/kube/pod\n"), pod);
        write(&root.join("v2/kube/pod/cpu.max"), "max 100000\n");
        let parent = Some((1.5, 100 * MS, PathBuf::from("kube")));
        assert_eq!(found(&v2, "0::/kube/pod\n"), parent);
        // v1, the controller mounted as "cpu,cpuacct"; cpuset lines ignored.
        let v1 = root.join("v1");
        write(&v1.join("cpu,cpuacct/fg/cpu.cfs_quota_us"), "1000\n");
        write(&v1.join("cpu,cpuacct/fg/cpu.cfs_period_us"), "2000\n");
        write(&v1.join("cpu,cpuacct/cpu.cfs_quota_us"), "-1\n");
        write(&v1.join("cpu,cpuacct/cpu.cfs_period_us"), "100000\n");
        let own = "3:cpuset:/\n2:cpu,cpuacct:/fg\n1:name=systemd:/\n0::/\n";
        let fg = Some((0.5, 2 * MS, PathBuf::from("cpu,cpuacct/fg")));
        assert_eq!(found(&v1, own), fg);
        // No quota anywhere: no limit.
        assert_eq!(found(&v1, "2:cpu,cpuacct:/\n"), None);
        assert_eq!(found(&root.join("none"), "0::/\n"), None);
    }

    #[test]
    fn the_throttle_count_is_read_from_v1_and_v2_cpu_stat() {
        let v1 = "nr_periods 8071\nnr_throttled 1370\nthrottled_time 2907141683\n";
        let v2 = "usage_usec 5063\nuser_usec 3797\nsystem_usec 1265\n\
                  nr_periods 12\nnr_throttled 3\nthrottled_usec 9003\n";
        assert_eq!(nr_throttled(v1), Some(1370));
        assert_eq!(nr_throttled(v2), Some(3));
        assert_eq!(nr_throttled("usage_usec 5\n"), None);
        let dir = tempfile::tempdir().unwrap();
        let q = Quota {
            cores: 0.5,
            period: 10 * MS,
            stat: dir.path().join("cpu.stat"),
        };
        assert_eq!(q.throttled(), None, "a missing file reads as unknown");
        write(&q.stat, v1);
        assert_eq!(q.throttled(), Some(1370));
    }

    #[test]
    fn the_rate_is_cut_by_a_quarter_per_throttled_window_and_won_back_slowly() {
        let mut c = RateControl::new(1.0);
        // (the kernel's count at the window's end, the rate after it)
        let table: &[(Option<u64>, f64)] = &[
            (Some(40), 1.0),  // first reading: nothing to compare with
            (Some(40), 1.0),  // no throttle: already at the top
            (Some(43), 0.75), // throttled: a quarter off
            (Some(44), 0.5625),
            (None, 0.5625),     // unreadable: held
            (Some(44), 0.5825), // a quiet window: + top / 50
            (Some(44), 0.6025),
        ];
        for (i, (count, rate)) in table.iter().enumerate() {
            let got = c.window(*count);
            assert!((got - rate).abs() < 1e-9, "window {i}: {got} != {rate}");
        }
        // Throttled for ever: held at a fifth of the top, not starved.
        for n in 0..40 {
            c.window(Some(100 + n));
        }
        assert!((c.window(Some(200)) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn a_rate_change_keeps_the_bucket_within_its_new_bounds() {
        let mut b = CpuBucket::new(1.0);
        b.set_rate(0.5);
        // Saved up 5 ms at 1 core; 2.5 ms at half a core. Spending 3.1 ms
        // in 1 ms of wall time (+0.5 ms earned) leaves it owing: closed.
        assert!(!b.step(MS, 3 * MS + MS / 10));
        // Owing at most DEBT at the new rate (10 ms of CPU): 20 idle
        // steps of 0.5 ms repay any debt.
        b.step(MS, 100 * MS);
        let reopened = (1..=30).find(|_| b.step(MS, Duration::ZERO));
        assert_eq!(reopened, Some(20));
    }

    /// The fake clocks of the feedback test: CPU nanoseconds, and the
    /// kernel's throttle count.
    static FB_CPU_NS: AtomicU64 = AtomicU64::new(0);
    static FB_THROTTLED: AtomicU64 = AtomicU64::new(0);

    fn fb_cpu() -> Duration {
        Duration::from_nanos(FB_CPU_NS.load(Ordering::SeqCst))
    }

    /// Steps `gate` through `ms` milliseconds of half a core used, the
    /// kernel throttling in each when `throttling`; the step at which it
    /// first closed.
    fn half_a_core(gate: &CpuGate, from: Instant, ms: u32, throttling: bool) -> Option<u32> {
        (1..=ms).find(|k| {
            FB_CPU_NS.fetch_add(500_000, Ordering::SeqCst);
            if throttling {
                FB_THROTTLED.fetch_add(1, Ordering::SeqCst);
            }
            gate.check(from + *k * MS).is_some()
        })
    }

    #[test]
    fn a_gate_told_of_throttling_closes_below_its_configured_rate_and_reopens() {
        let count: ThrottleCount = Box::new(|| Some(FB_THROTTLED.load(Ordering::SeqCst)));
        let told = CpuGate::with_clocks(1.0, fb_cpu, Some((10 * MS, count)));
        let deaf = CpuGate::with_clocks(1.0, fb_cpu, None);
        let t0 = clock::instant();
        // Half a core against a gated rate of one: never over it.
        assert_eq!(half_a_core(&deaf, t0, 300, true), None);
        // The kernel throttles all the same (a burst inside each period):
        // three cuts take the rate under half a core, and the gate closes.
        let closed = half_a_core(&told, t0 + 300 * MS, 300, true);
        assert!(
            matches!(closed, Some(k) if k <= 100),
            "closed at {closed:?} ms"
        );
        // The kernel stops throttling: the rate is won back and the gate
        // opens for good within a second or two.
        let mut open_for = 0;
        for k in 1..=3_000 {
            FB_CPU_NS.fetch_add(500_000, Ordering::SeqCst);
            let open = told.check(t0 + (600 + k) * MS).is_none();
            open_for = if open { open_for + 1 } else { 0 };
        }
        assert!(open_for >= 1_000, "open for the last {open_for} ms only");
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
        let gate = Arc::new(CpuGate::with_clocks(0.5, fake_cpu, None));
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
