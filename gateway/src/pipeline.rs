//! The verification pipeline: a pure state machine, handed `now` and a
//! verified frame, returning a decision and the record bytes to log.
//!
//! authenticate (done once per connection, see [`Session`]) → validate (done
//! by the schema parser) → locate → dedup → classify → record.
//!
//! It owns no socket, no task and no clock, so tests drive it with a fake
//! clock and the benches measure it alone. The edge appends the record
//! bytes to the durable log, and only once they are durable does it call
//! [`Pipeline::settle`] and send the ack.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use fencegate_schema::{
    AttendanceRef, AttendanceStatus, FenceEventRef, FixReading, PingBatchView, PingRecordRef,
    Position, PunchKind, PunchMethod, PunchRecordRef, PunchView, Reason, RecordBodyRef, RecordRef,
    TerminalAuth, Transition, Verdict,
};
use fencegate_spatial::hash::FastMap;
use fencegate_spatial::{CellBox, CellShape, Classification, FenceKey, GridCell, Point, TenantKey};
use flatbuffers::FlatBufferBuilder;
use xxhash_rust::xxh3::{Xxh3, xxh3_64, xxh3_128};

// Defined below the pipeline (the config reads the rules, the metrics count
// the outcomes); re-exported where they have always been found.
use crate::budget::{Budgets, DeviceBucket, SharedBucket, TenantBudget};
pub use crate::config::FenceEventRules;
use crate::dedup::{LruMap, WindowMap};
use crate::fences::{FenceSnapshot, Fences};
pub use crate::metrics::PingOutcome;
use crate::metrics::{PipelineMetrics, RulesMetrics};
use crate::rules::judge::{GpsLookup, Location, gps_lookup, judge};
use crate::rules::state::{EMPLOYEE_MEMORY_MS, EmployeeState, Observed, QrUseKey};
use crate::rules::{AttendanceSettings, RulesHandle, TenantRules};

/// How long a device's last ping state is remembered without news. Longer
/// than the heartbeat so a device that pauses still gets its enter/exit
/// transitions right when it comes back.
const DEVICE_MEMORY_MS: i64 = 3_600_000;

/// Settings the pipeline is built with.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Node name written into records.
    pub node: Arc<str>,
    /// Repeat-merge window.
    pub repeat_window_ms: i64,
    /// How long a punch id is remembered (monotonic time).
    pub idempotency_horizon_ms: i64,
    /// Longest gap between forwarded pings of a device standing still.
    pub heartbeat_ms: i64,
    /// H3 resolution a device must leave for its ping to be forwarded.
    pub cell_resolution: h3o::Resolution,
    /// Most remembered punch ids, and most remembered repeat keys.
    pub max_punch_keys: usize,
    /// Most employees (and QR uses) the rules remember; best effort.
    pub max_employees: usize,
    /// Most remembered devices.
    pub max_devices: usize,
}

impl PipelineConfig {
    /// Settings from a compiled gateway configuration.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self {
            node: cfg.node_name.as_str().into(),
            repeat_window_ms: cfg.dedup.repeat_window.as_millis() as i64,
            idempotency_horizon_ms: cfg.dedup.idempotency_horizon.as_millis() as i64,
            heartbeat_ms: cfg.dedup.ping_heartbeat.as_millis() as i64,
            cell_resolution: cfg.dedup.ping_cell_resolution,
            max_punch_keys: cfg.dedup.max_punch_keys,
            max_employees: cfg.dedup.max_employees,
            max_devices: cfg.dedup.max_devices,
        }
    }
}

/// An authenticated connection's identity, with the hashes the dedup maps
/// key on computed once per connection instead of once per message.
#[derive(Debug, Clone)]
pub struct Session {
    /// The tenant every message of this connection belongs to.
    pub tenant: Arc<str>,
    /// The device, as named in its token.
    pub device: Arc<str>,
    tenant_tag: u64,
    device_tag: u64,
}

impl Session {
    /// A session for a verified tenant and device.
    pub fn new(tenant: &str, device: &str) -> Self {
        Self {
            tenant: tenant.into(),
            device: device.into(),
            tenant_tag: xxh3_64(tenant.as_bytes()),
            device_tag: xxh3_64(device.as_bytes()),
        }
    }

    /// The (tenant, device) hashes: a key for per-device state kept
    /// outside the pipeline (the edge's ping rate buckets).
    pub fn device_key(&self) -> (u64, u64) {
        (self.tenant_tag, self.device_tag)
    }
}

/// What the ack of a punch says; kept so every resend gets the same one.
#[derive(Debug, Clone, PartialEq)]
pub struct AckInfo {
    /// The record id the ack carries: the punch's own record, or for a
    /// repeat the record it was merged into.
    pub record_id: [u8; 16],
    /// The verdict.
    pub verdict: Verdict,
    /// Why, for anything but a plain accept.
    pub reason: Reason,
    /// A fence containing the position.
    pub fence_id: Option<Arc<str>>,
    /// The nearest fence of the tenant.
    pub nearest_fence_id: Option<Arc<str>>,
    /// Metres to the nearest fence's edge (0 inside).
    pub distance_m: f32,
}

#[derive(Debug, Clone)]
struct PunchEntry {
    /// Monotonic time the punch was decided at (see [`Pipeline::tick_at`]).
    mono_ms: i64,
    ack: AckInfo,
    /// The punch's own record id (differs from `ack.record_id` for repeats).
    own_record_id: [u8; 16],
    durable: bool,
}

#[derive(Debug, Clone, Copy)]
struct RepeatEntry {
    time_ms: i64,
    record_id: [u8; 16],
}

/// Fence event rules for every tenant: the node-wide rules and per-tenant
/// overrides, resolved once per ping batch.
#[derive(Debug, Clone, Default)]
pub struct PingEventSettings {
    default: FenceEventRules,
    /// Keyed by the tenant's hash, the same one [`Session`] computes once
    /// per connection, so a batch looks its tenant up without hashing text.
    tenants: FastMap<u64, FenceEventRules>,
}

impl PingEventSettings {
    /// `default` for every tenant except those in `overrides`.
    pub fn new<'a>(
        default: FenceEventRules,
        overrides: impl IntoIterator<Item = (&'a str, FenceEventRules)>,
    ) -> Self {
        Self {
            default,
            tenants: overrides
                .into_iter()
                .map(|(t, r)| (xxh3_64(t.as_bytes()), r))
                .collect(),
        }
    }

    /// Settings from a compiled gateway configuration (`[pings]`).
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self::new(
            cfg.pings.default,
            cfg.pings.tenants.iter().map(|(t, r)| (t.as_str(), *r)),
        )
    }

    /// The rules of `tenant`.
    pub fn for_tenant(&self, tenant: &str) -> FenceEventRules {
        self.by_tag(xxh3_64(tenant.as_bytes()))
    }

    fn by_tag(&self, tenant_tag: u64) -> FenceEventRules {
        if self.tenants.is_empty() {
            return self.default;
        }
        self.tenants
            .get(&tenant_tag)
            .copied()
            .unwrap_or(self.default)
    }
}

/// A device's live ping state: where it was at its newest fix, and which
/// fences downstream was told it is in.
#[derive(Debug, Clone, Default)]
struct DeviceState {
    /// Time of the newest fix; a fix at or before it is late (history).
    last_fix_ms: i64,
    last_forward_ms: i64,
    cell: u64,
    /// Fences containing the newest fix: what ping suppression compares.
    located: Box<[Arc<str>]>,
    /// The membership downstream was told (Inside, Enter, Exit). Differs
    /// from `located` only while a change is debounced (`dwell_ms`) or held
    /// by the exit margin.
    members: Box<[Arc<str>]>,
    /// Changes of membership seen but not yet emitted (`dwell_ms`): the
    /// fence and the time of the first fix of the unbroken run showing it.
    pending: Box<[Pending]>,
    /// Bits of the last located position and the snapshot it was located
    /// in: a device reporting the same position reuses the answer.
    position: (u64, u64),
    snapshot: u64,
    /// The lookup-grid cell of the newest live fix: when uniform, a fix in
    /// the same grid cell has the same fences (`located`) without a lookup.
    grid: GridCell,
    /// A box inside the H3 cell `cell`: a fix in it has that cell without
    /// an H3 conversion.
    cell_box: CellBox,
    /// Bumped by every batch that decided fixes of this device, so a batch
    /// prepared from a copy of the state can tell the copy is still current.
    seq: u32,
    /// The tenant and device by name (the map is keyed by their hashes),
    /// for the fleet live view; shared with the session, set once.
    owner: Option<(Arc<str>, Arc<str>)>,
}

/// A membership change awaiting `dwell_ms`: the fence, and the fix time
/// its unbroken run began.
type Pending = (Arc<str>, i64);

/// What a fix is to its device's live state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FixKind {
    /// Newer than the live state: may move it and emit events.
    Live,
    /// At or before the newest fix but not a copy of it: history.
    Late,
    /// The newest fix again (a resent datagram): dropped.
    Duplicate,
}

/// Sort key putting a fix's events in their emitted order: exits before
/// enters (a consumer never sees a device in two fences it is switching
/// between), then by fence id so the order does not depend on the index.
fn event_order(t: Transition) -> u8 {
    match t {
        Transition::Exit => 0,
        Transition::Enter => 1,
        _ => 2,
    }
}

/// Moves a device's told membership `members` toward the fences `located`
/// at a live fix of `time_ms`, under `rules`, and pushes the transitions to
/// emit into `events`. `exit_counts(id)` says whether this fix is clearly
/// enough outside fence `id` for an exit (the exit margin). `next` and
/// `keep` are scratch; `members` and `pending` are reallocated only when
/// they change, which is at transitions and debounce starts, not per fix.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn membership_step(
    members: &mut Box<[Arc<str>]>,
    pending: &mut Box<[Pending]>,
    located: &[Arc<str>],
    time_ms: i64,
    dwell_ms: i64,
    exit_counts: impl Fn(&str) -> bool,
    events: &mut Vec<(Arc<str>, Transition)>,
    next: &mut Vec<Arc<str>>,
    keep: &mut Vec<Pending>,
) {
    keep.clear();
    let mut decide = |f: &Arc<str>, t: Transition| {
        // A change keeps the time its unbroken run began; a run that broke
        // (the fix agreed with `members` again) was dropped from `pending`.
        let since = pending
            .iter()
            .find(|(p, _)| p == f)
            .map_or(time_ms, |(_, s)| *s);
        if time_ms - since >= dwell_ms {
            events.push((f.clone(), t));
        } else {
            keep.push((f.clone(), since));
        }
    };
    for m in members.iter() {
        if !contains(located, m) && exit_counts(m) {
            decide(m, Transition::Exit);
        }
    }
    for l in located {
        if !contains(members, l) {
            decide(l, Transition::Enter);
        }
    }
    if !events.is_empty() {
        next.clear();
        next.extend(
            members
                .iter()
                .filter(|m| !events.iter().any(|(e, _)| e == *m))
                .cloned(),
        );
        next.extend(
            events
                .iter()
                .filter(|(_, t)| *t == Transition::Enter)
                .map(|(e, _)| e.clone()),
        );
        *members = next.as_slice().into();
        next.clear();
    }
    if pending[..] != keep[..] {
        *pending = keep.as_slice().into();
    }
    keep.clear();
}

fn contains(set: &[Arc<str>], f: &Arc<str>) -> bool {
    set.iter().any(|x| Arc::ptr_eq(x, f) || x == f)
}

type PunchKey = (u64, u128);
type RepeatKey = (u64, u64, u8);

/// A punch the pipeline has decided on and whose record awaits the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PendingPunch {
    key: PunchKey,
    repeat: Option<RepeatKey>,
    record_id: [u8; 16],
    /// The QR code use this punch claimed, released if its record fails.
    qr: Option<QrUseKey>,
    status: AttendanceStatus,
    flags: u64,
    /// What the employee memory learns from this punch once it is durable.
    memory: Option<Remember>,
    /// The punch's attendance time (device time for offline punches): the
    /// instant its repeat window starts.
    at_ms: i64,
}

impl PendingPunch {
    /// The punch's own record id (what a repeat would be merged into).
    pub fn record_id(&self) -> [u8; 16] {
        self.record_id
    }

    /// The repeat window this punch opened, as its kind tag (the punch
    /// kind and dual-verification factor), when it opened one: an
    /// accepted punch not merged into an earlier one. A cluster claims
    /// this window across nodes (`crate::cluster`).
    pub fn repeat_kind(&self) -> Option<u8> {
        self.repeat.map(|(_, _, kind)| kind)
    }

    /// The punch's attendance time, milliseconds since the epoch.
    pub fn at_ms(&self) -> i64 {
        self.at_ms
    }
}

/// What the cluster's claims (`crate::cluster`) found for a punch the
/// pipeline decided on locally, handed to [`Pipeline::punch_claimed`] to
/// decide it again with that knowledge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimOutcome {
    /// Another node accepted this employee's punch of the same kind within
    /// the repeat window: merge into that record, as a local repeat would.
    pub merged_into: Option<[u8; 16]>,
    /// Anomaly bits to add to the record (the claims could not be made).
    pub flags: u64,
}

/// A change to one employee's memory, applied only once the punch's record
/// is durable.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Remember {
    key: (u64, u64),
    dual: Option<crate::rules::DualRule>,
    observed: Observed,
    counts: bool,
    /// When the punch was decided: the memory's "last seen".
    seen_ms: i64,
}

/// What became of a punch's record after [`PunchDecision::Record`]: the
/// edge's one answer back to the pipeline ([`Pipeline::settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The record is durable: resends now get its ack (with this verdict
    /// counted), and the employee memory learns the punch.
    Committed(Verdict),
    /// The record was not written (the log refused it, or the cluster's
    /// claims found it belongs elsewhere): the punch leaves no trace, so
    /// the client's retry is decided afresh.
    Failed,
}

/// The pipeline's answer to one punch.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned by value once per punch and matched at once; boxing the pending punch would allocate per punch"
)]
pub enum PunchDecision<'b> {
    /// A new record: append `record` to the log, and once it is durable
    /// call [`Pipeline::settle`] with [`Settled::Committed`] and send
    /// `ack`. If the append fails, settle it [`Settled::Failed`] and
    /// answer `Busy`.
    Record {
        /// Encoded `Record` to append.
        record: &'b [u8],
        /// The ack to send once durable.
        ack: AckInfo,
        /// Handle for [`Pipeline::settle`].
        pending: PendingPunch,
    },
    /// A resend of a punch whose record is already durable: send this ack.
    Known(AckInfo),
    /// A resend of a punch whose first copy is still being written: answer
    /// `Busy` with a short retry-after; the retry will get the ack.
    InFlight,
    /// The tenant's own idempotency window is full: answer
    /// `Busy(Overloaded)`. Another tenant's window is never this one.
    Full,
    /// The device or its tenant is over its punch rate (`[budgets]`):
    /// answer `Busy(RateLimited)` with this retry-after. Nothing was
    /// decided or remembered; the resend is decided afresh.
    RateLimited {
        /// Milliseconds until the bucket has a token for this punch.
        retry_after_ms: u32,
    },
}

/// Reusable per-task buffers, so the hot path allocates nothing per record.
pub struct Scratch {
    fbb: FlatBufferBuilder<'static>,
    keys: Vec<FenceKey>,
    ids: Vec<Arc<str>>,
    /// Fence events of the fix being decided, in emitted order.
    events: Vec<(Arc<str>, Transition)>,
    /// Builders for a device's new membership and pending changes.
    members: Vec<Arc<str>>,
    pending: Vec<Pending>,
    /// The slot label (`2025-03-04/day`) of the punch being decided.
    label: String,
    /// The ping batch being decided: its fixes and their answers.
    batch: BatchScratch,
}

impl Scratch {
    /// How many fixes the batched ping path has converted to an H3 cell
    /// with this scratch: the part of a fix's cost the cell box and shape
    /// exist to avoid, counted so tests can check they do.
    pub fn h3_conversions(&self) -> u64 {
        self.batch.conversions
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self {
            fbb: FlatBufferBuilder::with_capacity(1024),
            keys: Vec::with_capacity(16),
            ids: Vec::with_capacity(16),
            events: Vec::with_capacity(16),
            members: Vec::with_capacity(16),
            pending: Vec::with_capacity(16),
            label: String::with_capacity(96),
            batch: BatchScratch::default(),
        }
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scratch")
    }
}

/// Collects encoded records for one log write; `push` copies a record in.
pub trait RecordSink {
    /// Takes one encoded `Record` made at `time_ms`.
    fn push(&mut self, record: &[u8], time_ms: i64);
}

impl RecordSink for Vec<Vec<u8>> {
    fn push(&mut self, record: &[u8], _time_ms: i64) {
        Vec::push(self, record.to_vec());
    }
}

impl RecordSink for crate::log::RecordBatch {
    fn push(&mut self, record: &[u8], time_ms: i64) {
        crate::log::RecordBatch::push(self, record, time_ms.max(0) as u64);
    }
}

/// One tenant's share of the punch path's memory and rate: its own
/// idempotency window, repeat keys, anti-cheat memory and QR uses, each
/// bounded by the tenant's [`TenantBudget`], so no tenant can fill
/// another's.
struct TenantSlot {
    budget: TenantBudget,
    punch_ids: WindowMap<PunchKey, PunchEntry>,
    repeats: WindowMap<RepeatKey, RepeatEntry>,
    /// Per-employee memory for the rules (anti-cheat, minimum interval,
    /// dual verification), keyed by (tenant, employee). Best effort: when
    /// full it forgets the tenant's least recently seen employee.
    employees: LruMap<(u64, u64), EmployeeState>,
    /// QR codes used, once per employee, for as long as a code is valid.
    /// Best effort like `employees`.
    qr_uses: LruMap<QrUseKey, ()>,
    /// The tenant's punch rate bucket, shared by all its connections.
    rate: SharedBucket,
}

impl TenantSlot {
    fn new(
        cfg: &PipelineConfig,
        budget: TenantBudget,
        qr_window_ms: i64,
        now_ms: i64,
        mono_ms: i64,
    ) -> Self {
        let horizon = cfg.idempotency_horizon_ms.max(cfg.repeat_window_ms);
        Self {
            budget,
            punch_ids: WindowMap::new(horizon, budget.max_punch_keys, mono_ms),
            repeats: WindowMap::new(cfg.repeat_window_ms, budget.max_punch_keys, now_ms),
            employees: LruMap::new(EMPLOYEE_MEMORY_MS, budget.max_employees),
            qr_uses: LruMap::new(qr_window_ms.max(1), budget.max_employees),
            rate: SharedBucket::default(),
        }
    }
}

/// The verification pipeline, shared by every connection task.
pub struct Pipeline {
    cfg: PipelineConfig,
    fences: Arc<Fences>,
    rules: Arc<RulesHandle>,
    devices: WindowMap<(u64, u64), DeviceState>,
    /// Each tenant's punch-path memory, by tenant hash; made at the
    /// tenant's first punch (or replayed punch).
    tenants: dashmap::DashMap<u64, Arc<TenantSlot>>,
    /// Rates and shares; `tenant_budgets` is `budgets.tenants` by hash.
    budgets: Budgets,
    tenant_budgets: FastMap<u64, TenantBudget>,
    /// Device punch-rate buckets, by (tenant, device). An entry idle for
    /// the bucket's refill time is full again, so the map's window is that
    /// time and idle devices' buckets are dropped by rotation.
    device_buckets: WindowMap<(u64, u64), DeviceBucket>,
    /// How long a QR code use is remembered.
    qr_window_ms: i64,
    /// Monotonic milliseconds as of the last [`Pipeline::tick_at`]: the
    /// clock punch ids expire by, so a wall-clock step cannot clear them.
    /// Read once per punch (an atomic load, not a clock read); its one
    /// second of staleness is nothing next to a 24 h horizon.
    mono_ms: AtomicI64,
    /// Debounce and exit hysteresis of fence events, per tenant.
    ping_events: PingEventSettings,
    /// Each tenant's last enter/exit events, for the fleet live view.
    live: crate::live::LiveEvents,
    metrics: PipelineMetrics,
    rules_metrics: RulesMetrics,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("punch_keys", &self.dedup_sizes().0)
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

/// A record's id: XXH3-128 of `parts`, each framed by its length.
///
/// Hashed in one shot from a stack buffer when the framed parts fit (every
/// ping, event and punch key in practice): XXH3's one-shot and streaming
/// forms give the same digest, so ids are what the streaming hasher gave,
/// without setting up its state (a 192-byte secret copied and a buffer)
/// for every record, which was most of this function's cost.
fn record_id(parts: &[&[u8]]) -> [u8; 16] {
    const STACK: usize = 256;
    let framed: usize = parts.iter().map(|p| 4 + p.len()).sum();
    if framed <= STACK {
        let mut buf = [0u8; STACK];
        let mut at = 0;
        for p in parts {
            buf[at..at + 4].copy_from_slice(&(p.len() as u32).to_le_bytes());
            buf[at + 4..at + 4 + p.len()].copy_from_slice(p);
            at += 4 + p.len();
        }
        return xxh3_128(&buf[..at]).to_be_bytes();
    }
    let mut h = Xxh3::new();
    for p in parts {
        h.update(&(p.len() as u32).to_le_bytes());
        h.update(p);
    }
    h.digest128().to_be_bytes()
}

/// The repeat-merge key's kind tag: the punch kind, and for a
/// dual-verification factor which factor it is, so a fingerprint right
/// after the GPS punch it completes is not merged into it as a repeat.
fn kind_tag(kind: PunchKind, factor: u8) -> u8 {
    kind.0 | (factor << 4)
}

/// Which dual-verification factor a punch is (0: none, 1: first, 2: second).
fn factor_of(dual: Option<crate::rules::DualRule>, method: PunchMethod, auth: TerminalAuth) -> u8 {
    match dual {
        Some(d) if d.second.matches(method, auth) => 2,
        Some(d) if d.first.matches(method, auth) => 1,
        _ => 0,
    }
}

impl Pipeline {
    /// A pipeline over `fences` with no attendance rules configured (every
    /// tenant judged by [`TenantRules::unconfigured`]), starting at `now_ms`.
    ///
    /// [`TenantRules::unconfigured`]: crate::rules::TenantRules::unconfigured
    pub fn new(cfg: PipelineConfig, fences: Arc<Fences>, now_ms: i64) -> Self {
        let rules = Arc::new(RulesHandle::unconfigured(AttendanceSettings::default()));
        Self::with_rules(cfg, fences, rules, now_ms)
    }

    /// A pipeline over `fences` judging punches by `rules`, starting at
    /// `now_ms`.
    pub fn with_rules(
        cfg: PipelineConfig,
        fences: Arc<Fences>,
        rules: Arc<RulesHandle>,
        now_ms: i64,
    ) -> Self {
        // Each tenant's punch ids and repeat keys each get the tenant's
        // key budget; the rules' best-effort memory (employees, QR uses)
        // has its own, which forgets rather than refuses. Without
        // `with_budgets` every tenant may use the node's whole budget and
        // no rate applies.
        let qr_window = {
            let s = &rules.load().settings;
            (s.qr_skew_steps + 2) * s.qr_step_ms
        };
        let budgets = Budgets {
            tenant: TenantBudget {
                max_punch_keys: cfg.max_punch_keys,
                max_employees: cfg.max_employees,
                rate: None,
            },
            tenants: Vec::new(),
            device_rate: None,
        };
        Self {
            devices: WindowMap::new(DEVICE_MEMORY_MS, cfg.max_devices, now_ms),
            tenants: dashmap::DashMap::new(),
            budgets,
            tenant_budgets: FastMap::default(),
            device_buckets: WindowMap::new(1_000, cfg.max_devices, now_ms),
            qr_window_ms: qr_window,
            mono_ms: AtomicI64::new(now_ms),
            ping_events: PingEventSettings::default(),
            live: crate::live::LiveEvents::default(),
            metrics: PipelineMetrics::register(),
            rules_metrics: RulesMetrics::register(),
            rules,
            fences,
            cfg,
        }
    }

    /// This pipeline with fence event debounce and exit hysteresis set
    /// (both off unless this is called).
    pub fn with_ping_events(mut self, settings: PingEventSettings) -> Self {
        self.ping_events = settings;
        self
    }

    /// This pipeline with per-tenant shares and punch rate limits (see
    /// [`crate::config::Config::budgets`]). Call it before any punch or replay.
    pub fn with_budgets(mut self, budgets: Budgets) -> Self {
        let window = budgets
            .device_rate
            .map_or(1_000, |r| r.refill_ms().max(1_000));
        self.device_buckets = WindowMap::new(
            window,
            self.cfg.max_devices,
            self.mono_ms.load(Ordering::Relaxed),
        );
        self.tenant_budgets = budgets
            .tenants
            .iter()
            .map(|(t, b)| (xxh3_64(t.as_bytes()), *b))
            .collect();
        self.tenants.clear();
        self.budgets = budgets;
        self
    }

    /// The budgets this pipeline applies.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// The punch-path memory of the tenant whose hash is `tag`, made on
    /// first use with the tenant's budget.
    fn tenant(&self, tag: u64, now_ms: i64) -> Arc<TenantSlot> {
        if let Some(t) = self.tenants.get(&tag) {
            return t.clone();
        }
        self.tenants
            .entry(tag)
            .or_insert_with(|| {
                let budget = self
                    .tenant_budgets
                    .get(&tag)
                    .copied()
                    .unwrap_or(self.budgets.tenant);
                Arc::new(TenantSlot::new(
                    &self.cfg,
                    budget,
                    self.qr_window_ms,
                    now_ms,
                    self.mono_ms.load(Ordering::Relaxed),
                ))
            })
            .clone()
    }

    /// The rate-limit stage: takes a token from the device's bucket, then
    /// from its tenant's, or returns the milliseconds to wait. The device
    /// comes first, so a device over its own rate spends none of its
    /// tenant's tokens.
    fn over_rate(&self, now_ms: i64, session: &Session, slot: &TenantSlot) -> Option<u32> {
        if let Some(rate) = self.budgets.device_rate {
            let taken = self
                .device_buckets
                .with((session.tenant_tag, session.device_tag), |b| {
                    b.get_or_insert_with(DeviceBucket::default)
                        .take(rate, now_ms)
                });
            // Err: more devices than `dedup.max_devices` hold a bucket; the
            // device goes unmetered and its tenant's rate still applies.
            if let Ok(Err(wait)) = taken {
                self.metrics.refused_device_rate.increment(1);
                return Some(wait);
            }
        }
        if let Some(rate) = slot.budget.rate {
            if let Err(wait) = slot.rate.take(rate, now_ms) {
                self.metrics.refused_tenant_rate.increment(1);
                return Some(wait);
            }
        }
        None
    }

    /// The fence event rules this pipeline applies.
    pub fn ping_events(&self) -> &PingEventSettings {
        &self.ping_events
    }

    /// The fence snapshots this pipeline reads.
    pub fn fences(&self) -> &Arc<Fences> {
        &self.fences
    }

    /// The attendance rules this pipeline judges by.
    pub fn rules(&self) -> &Arc<RulesHandle> {
        &self.rules
    }

    /// The settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Expires old dedup generations, with the wall clock standing in for
    /// the monotonic one (tests and tools with a fake clock). Call about
    /// once a second.
    pub fn tick(&self, now_ms: i64) {
        self.tick_at(now_ms, now_ms);
    }

    /// Expires old dedup generations. `now_ms` is wall-clock time (repeat
    /// windows, device and employee memory follow the times punches and
    /// fixes carry); `mono_ms` is a monotonic clock in milliseconds that
    /// agrees with the wall clock at the pipeline's start (punch ids expire
    /// by it, so a wall-clock step neither clears nor pins them). Call
    /// about once a second.
    pub fn tick_at(&self, now_ms: i64, mono_ms: i64) {
        self.mono_ms.fetch_max(mono_ms, Ordering::Relaxed);
        let mono = self.mono_ms.load(Ordering::Relaxed);
        let mut keys = 0;
        let mut evicted = 0;
        for t in self.tenants.iter() {
            t.punch_ids.rotate(mono);
            t.repeats.rotate(now_ms);
            t.employees.expire(now_ms);
            t.qr_uses.expire(now_ms);
            keys += t.punch_ids.len() + t.repeats.len();
            evicted += t.employees.take_evicted() + t.qr_uses.take_evicted();
        }
        self.devices.rotate(now_ms);
        self.device_buckets.rotate(now_ms);
        self.metrics.dedup_keys.set(keys as f64);
        self.metrics.devices.set(self.devices.len() as f64);
        self.rules_metrics.memory_evicted.increment(evicted as u64);
    }

    /// The devices of `tenant` this node holds live state for, newest fix
    /// first, at most `limit`: where each was at its newest live fix and
    /// which fences downstream was told it is in. Reads the device map one
    /// shard at a time (for the dashboard's fleet live view, on request;
    /// the ping path keeps nothing extra for it).
    pub fn live_devices(&self, tenant: &str, limit: usize) -> Vec<crate::live::LiveDevice> {
        let mut out = Vec::new();
        self.devices.for_each(|_, st| {
            let Some((t, device)) = &st.owner else {
                return;
            };
            if &**t != tenant || st.last_fix_ms == 0 {
                return;
            }
            let mut fences: Vec<String> = st.members.iter().map(|f| f.to_string()).collect();
            fences.sort_unstable();
            out.push(crate::live::LiveDevice {
                device: device.to_string(),
                lat: f64::from_bits(st.position.0),
                lon: f64::from_bits(st.position.1),
                time_ms: st.last_fix_ms,
                fences,
            });
        });
        out.sort_by(|a, b| {
            b.time_ms
                .cmp(&a.time_ms)
                .then_with(|| a.device.cmp(&b.device))
        });
        out.truncate(limit);
        out
    }

    /// `tenant`'s last enter/exit events on this node, newest first.
    pub fn live_events(&self, tenant: &str) -> Vec<crate::live::LiveEvent> {
        self.live.of(tenant)
    }

    /// Number of remembered punch keys (every tenant's) and devices.
    pub fn dedup_sizes(&self) -> (usize, usize) {
        let keys = self
            .tenants
            .iter()
            .map(|t| t.punch_ids.len() + t.repeats.len())
            .sum();
        (keys, self.devices.len())
    }

    /// Employees held in the anti-cheat memory of `tenant`.
    pub fn remembered_employees(&self, tenant: &str) -> usize {
        self.tenants
            .get(&xxh3_64(tenant.as_bytes()))
            .map_or(0, |t| t.employees.len())
    }

    /// Decides one verified punch from `session` at `now_ms`.
    pub fn punch<'b>(
        &self,
        now_ms: i64,
        session: &Session,
        punch: &PunchView<'_>,
        scratch: &'b mut Scratch,
    ) -> PunchDecision<'b> {
        self.decide(now_ms, session, punch, scratch, None)
    }

    /// Decides again a punch that [`Pipeline::punch`] answered with
    /// `Record` (`pending`), whose record was not appended, with what the
    /// cluster's claims found: merged into another node's record, or
    /// marked. The punch keeps its place in the idempotency window (a
    /// concurrent resend still gets `InFlight`) and is not charged to the
    /// rate limits again. Returns `Record` (or `Full`).
    pub fn punch_claimed<'b>(
        &self,
        now_ms: i64,
        session: &Session,
        punch: &PunchView<'_>,
        scratch: &'b mut Scratch,
        pending: &PendingPunch,
        outcome: ClaimOutcome,
    ) -> PunchDecision<'b> {
        // Undo what the first decision took besides its punch id: it is
        // taken again below (or, merged, not at all).
        let slot = self.tenant(pending.key.0, now_ms);
        let rid = pending.record_id;
        if let Some(r) = pending.repeat {
            slot.repeats.remove_if(&r, |e| e.record_id == rid);
        }
        if let Some(q) = pending.qr {
            slot.qr_uses.remove(&q);
        }
        self.decide(now_ms, session, punch, scratch, Some(outcome))
    }

    /// One punch through the stages, in order: a resend is answered from
    /// the idempotency window and a new punch pays the rate limits
    /// ([`Pipeline::resend_or_rate`]); [`locate`] places its position;
    /// [`classify`] judges it by the rules; [`Pipeline::merge`] applies
    /// once-only QR codes, the repeat window and the employee memory;
    /// [`Pipeline::take_punch_id`] claims its id; [`encode_punch`] writes
    /// the record. A stage that refuses returns the decision early.
    fn decide<'b>(
        &self,
        now_ms: i64,
        session: &Session,
        punch: &PunchView<'_>,
        scratch: &'b mut Scratch,
        claimed: Option<ClaimOutcome>,
    ) -> PunchDecision<'b> {
        let id = punch.punch_id();
        let key: PunchKey = (session.tenant_tag, u128::from_be_bytes(id));
        let mono = self.mono_ms.load(Ordering::Relaxed);
        let slot = self.tenant(session.tenant_tag, now_ms);
        if claimed.is_none() {
            if let Some(answer) = self.resend_or_rate(now_ms, mono, session, &slot, &key) {
                return answer;
            }
        }

        let snap = self.fences.load();
        let rules = self.rules.load();
        let cx = PunchCx {
            now_ms,
            session,
            punch,
            snap: &snap,
            settings: &rules.settings,
            tenant: rules.tenant(&session.tenant),
            own_record_id: record_id(&[b"punch", session.tenant.as_bytes(), &id]),
        };
        let mut ack = AckInfo {
            record_id: cx.own_record_id,
            verdict: Verdict::Accepted,
            reason: Reason::None,
            fence_id: None,
            nearest_fence_id: None,
            distance_m: 0.0,
        };
        let place = locate(&cx, &mut ack, scratch);
        let mut judged = classify(&cx, &place, &mut ack, scratch, claimed);
        let Some(merge) = self.merge(&cx, &slot, &mut judged, &mut ack, claimed) else {
            return self.full();
        };
        if let Some(answer) = self.take_punch_id(&cx, &slot, key, mono, &ack, &merge, claimed) {
            return answer;
        }
        encode_punch(
            &cx,
            &self.cfg.node,
            &place,
            &judged,
            ack,
            merge,
            key,
            scratch,
        )
    }

    /// The idempotency and rate stage: a punch id seen within the horizon
    /// gets its first answer again (whatever the rate); a new punch spends
    /// a rate token before anything costly (locate, judge, record).
    fn resend_or_rate<'b>(
        &self,
        now_ms: i64,
        mono: i64,
        session: &Session,
        slot: &TenantSlot,
        key: &PunchKey,
    ) -> Option<PunchDecision<'b>> {
        let horizon = self
            .cfg
            .idempotency_horizon_ms
            .max(self.cfg.repeat_window_ms);
        let live = |e: &PunchEntry| mono - e.mono_ms < horizon;
        if let Some(e) = slot.punch_ids.get(key, |e| live(e).then(|| e.clone())) {
            self.metrics.dedup_hits.increment(1);
            return Some(if e.durable {
                PunchDecision::Known(e.ack)
            } else {
                PunchDecision::InFlight
            });
        }
        self.over_rate(now_ms, session, slot)
            .map(|retry_after_ms| PunchDecision::RateLimited { retry_after_ms })
    }

    /// The merge stage: a QR code is good once per employee; an accepted
    /// punch within the repeat window of an earlier one (here, or on
    /// another node per `claimed`) merges into it; the employee memory is
    /// consulted (it learns the punch in [`Pipeline::settle`]). `None` when
    /// the repeat window is full.
    fn merge(
        &self,
        cx: &PunchCx<'_>,
        slot: &TenantSlot,
        judged: &mut Judged<'_>,
        ack: &mut AckInfo,
        claimed: Option<ClaimOutcome>,
    ) -> Option<Merge> {
        let (session, punch) = (cx.session, cx.punch);
        let emp_tag = xxh3_64(punch.employee_id().as_bytes());
        let mut merge = Merge::default();
        if let Some((site_tag, step)) = judged.j.qr_use {
            let qkey: QrUseKey = (session.tenant_tag, emp_tag, site_tag, step);
            if slot.qr_uses.insert_new(qkey, cx.now_ms, ()) {
                merge.qr = Some(qkey);
            } else {
                ack.verdict = Verdict::Rejected;
                ack.reason = Reason::QrReplay;
                judged.status = AttendanceStatus::Rejected;
            }
        }
        if ack.verdict == Verdict::Rejected {
            return Some(merge);
        }
        let (at_ms, method) = (judged.j.at_ms, punch.method());
        let dual = judged.j.group.dual;
        let factor = factor_of(dual, method, punch.terminal_auth());
        let rkey: RepeatKey = (session.tenant_tag, emp_tag, kind_tag(punch.kind(), factor));
        // Only accepted punches merge (contract 3); pending ones stand alone.
        let accepted = ack.verdict == Verdict::Accepted;
        let window = self.cfg.repeat_window_ms;
        let first = claimed
            .and_then(|c| c.merged_into)
            .or_else(|| {
                slot.repeats.get(&rkey, |e| {
                    (at_ms >= e.time_ms && at_ms - e.time_ms < window).then_some(e.record_id)
                })
            })
            .filter(|_| accepted);
        // Compare with the employee's earlier punches (and remember this
        // one, unless it is merged as a repeat).
        let observed = Observed {
            at_ms,
            kind: punch.kind(),
            method,
            auth: punch.terminal_auth(),
            fix: if method == PunchMethod::Gps {
                punch.position()
            } else {
                None
            },
            record_id: cx.own_record_id,
        };
        // Read only: the memory learns this punch once it is durable
        // (`settle`), so a punch the log refused leaves no trace.
        let ekey = (session.tenant_tag, emp_tag);
        let obs = slot
            .employees
            .get(&ekey, cx.now_ms, |st| st.check(cx.tenant, dual, &observed))
            .unwrap_or_else(|| EmployeeState::default().check(cx.tenant, dual, &observed));
        merge.memory = Some(Remember {
            key: ekey,
            dual,
            observed,
            counts: first.is_none(),
            seen_ms: cx.now_ms,
        });
        judged.flags |= obs.flags;
        merge.paired_with = obs.paired_with;
        match first.or(obs.merged_into.filter(|_| accepted)) {
            _ if !accepted => {}
            Some(first) => {
                ack.verdict = Verdict::RepeatMerged;
                ack.record_id = first;
                judged.status = AttendanceStatus::RepeatMerged;
                merge.merged_into = Some(first);
            }
            None => {
                let entry = RepeatEntry {
                    time_ms: at_ms,
                    record_id: cx.own_record_id,
                };
                if slot.repeats.insert(rkey, entry).is_err() {
                    merge.release(slot, cx.own_record_id);
                    return None;
                }
                merge.repeat = Some(rkey);
            }
        }
        Some(merge)
    }

    /// The punch id stage: the id becomes this punch's (in flight) unless
    /// a concurrent copy won it (`InFlight`) or the window is full. Decided
    /// again after the claims, the id is already ours and only its ack
    /// changes. Returns the refusal, having released what
    /// [`Pipeline::merge`] took.
    #[allow(clippy::too_many_arguments)]
    fn take_punch_id<'b>(
        &self,
        cx: &PunchCx<'_>,
        slot: &TenantSlot,
        key: PunchKey,
        mono: i64,
        ack: &AckInfo,
        merge: &Merge,
        claimed: Option<ClaimOutcome>,
    ) -> Option<PunchDecision<'b>> {
        let own_record_id = cx.own_record_id;
        let taken = claimed.is_some()
            && slot.punch_ids.update(&key, |e| {
                if e.own_record_id == own_record_id {
                    e.ack = ack.clone();
                }
            });
        if taken {
            return None;
        }
        let horizon = self
            .cfg
            .idempotency_horizon_ms
            .max(self.cfg.repeat_window_ms);
        let live = move |e: &PunchEntry| mono - e.mono_ms < horizon;
        let entry = || PunchEntry {
            mono_ms: mono,
            ack: ack.clone(),
            own_record_id,
            durable: false,
        };
        match slot.punch_ids.get_or_insert(key, live, entry) {
            Ok(Ok(())) => None,
            // A concurrent copy of the same punch won the race.
            Ok(Err(_raced)) => {
                merge.release(slot, own_record_id);
                Some(PunchDecision::InFlight)
            }
            Err(_) => {
                merge.release(slot, own_record_id);
                Some(self.full())
            }
        }
    }

    fn full<'b>(&self) -> PunchDecision<'b> {
        self.metrics.dedup_full.increment(1);
        self.metrics.refused_tenant_window.increment(1);
        PunchDecision::Full
    }

    /// Settles a punch [`Pipeline::punch`] answered with `Record`, once
    /// the edge knows what became of the record: the one entry point back
    /// from the log (and the cluster's claims) into the pipeline.
    pub fn settle(&self, pending: &PendingPunch, outcome: Settled) {
        match outcome {
            Settled::Committed(verdict) => self.committed(pending, verdict),
            Settled::Failed => self.forget(pending),
        }
    }

    /// The record of `pending` is durable: resends now get its ack, and the
    /// employee memory learns the punch.
    fn committed(&self, pending: &PendingPunch, verdict: Verdict) {
        let slot = self.tenant(pending.key.0, pending.memory.map_or(0, |m| m.seen_ms));
        slot.punch_ids.update(&pending.key, |e| {
            if e.own_record_id == pending.record_id {
                e.durable = true;
            }
        });
        if let Some(m) = &pending.memory {
            // Best effort: a full memory forgets the tenant's least
            // recently seen employee (counted at the tick) to make room.
            slot.employees.with(m.key, m.seen_ms, |slot| {
                slot.get_or_insert_with(EmployeeState::default).remember(
                    m.dual,
                    &m.observed,
                    m.counts,
                );
            });
        }
        self.metrics.punch(verdict);
        self.rules_metrics.punch(pending.status, pending.flags);
    }

    /// The record of `pending` could not be written: forget it, so the
    /// client's retry is decided afresh.
    fn forget(&self, pending: &PendingPunch) {
        let rid = pending.record_id;
        let slot = self.tenant(pending.key.0, pending.memory.map_or(0, |m| m.seen_ms));
        slot.punch_ids
            .remove_if(&pending.key, |e| e.own_record_id == rid);
        if let Some(r) = pending.repeat {
            slot.repeats.remove_if(&r, |e| e.record_id == rid);
        }
        if let Some(q) = pending.qr {
            slot.qr_uses.remove(&q);
        }
    }

    /// Rebuilds the dedup windows and the rules' memory (minimum interval,
    /// dual verification, last fix, QR uses) from a punch record read back
    /// from the log at start, so resends after a restart get the ack they
    /// got before and the rules see the punches made before it. Each map
    /// takes only what is still live at `now_ms`.
    ///
    /// Call it before any traffic, while the pipeline's monotonic clock
    /// still reads the wall-clock time it started at: a replayed punch id
    /// keeps the age its record's gateway time gives it.
    ///
    /// Fails when the tenant's punch ids or repeat keys do not fit its
    /// share (`dedup.max_punch_keys`, see [`Budgets`]): starting anyway
    /// would forget acks the contract promises to repeat.
    pub fn replay_punch(
        &self,
        now_ms: i64,
        tenant: &str,
        rec: &fencegate_schema::PunchRecord<'_>,
        gateway_time_ms: i64,
        record_id: [u8; 16],
    ) -> Result<(), crate::dedup::Full> {
        let tenant_tag = xxh3_64(tenant.as_bytes());
        let slot = self.tenant(tenant_tag, now_ms);
        let id = rec.punch_id().0;
        let merged_into = rec.merged_into().map(|u| u.0);
        let ack = AckInfo {
            record_id: merged_into.unwrap_or(record_id),
            verdict: rec.verdict(),
            reason: rec.reason(),
            fence_id: rec.fence_ids().and_then(|v| v.iter().next().map(Arc::from)),
            nearest_fence_id: rec.nearest_fence_id().map(Arc::from),
            distance_m: rec.distance_m(),
        };
        let horizon = self
            .cfg
            .idempotency_horizon_ms
            .max(self.cfg.repeat_window_ms);
        if now_ms - gateway_time_ms < horizon {
            slot.punch_ids.insert(
                (tenant_tag, u128::from_be_bytes(id)),
                PunchEntry {
                    mono_ms: gateway_time_ms,
                    ack,
                    own_record_id: record_id,
                    durable: true,
                },
            )?;
        }
        let at = match rec.attendance_time_ms() {
            0 if rec.offline() => rec.device_time_ms(),
            0 => gateway_time_ms,
            t => t,
        };
        let rules = self.rules.load();
        let tenant_rules = rules.tenant(tenant);
        let emp_tag = xxh3_64(rec.employee_id().as_bytes());
        let dual = tenant_rules
            .group_of(tenant_rules.employee(rec.employee_id()))
            .dual;
        let factor = factor_of(dual, rec.method(), rec.terminal_auth());
        let auth = rec.terminal_auth();
        // Attendance time may lie ahead of the gateway's (clock skew), so
        // the repeat window is measured generously here; the punch path
        // checks the exact distance between attendance times.
        if rec.verdict() == Verdict::Accepted && now_ms - at < 2 * self.cfg.repeat_window_ms {
            slot.repeats.insert(
                (tenant_tag, emp_tag, kind_tag(rec.kind(), factor)),
                RepeatEntry {
                    time_ms: at,
                    record_id,
                },
            )?;
        }
        if rec.verdict() == Verdict::Rejected || now_ms - at >= EMPLOYEE_MEMORY_MS {
            return Ok(());
        }
        let observed = Observed {
            at_ms: at,
            kind: rec.kind(),
            method: rec.method(),
            auth,
            fix: rec
                .position()
                .filter(|_| rec.method() == PunchMethod::Gps)
                .map(|p| (p.lat(), p.lon(), p.accuracy_m())),
            record_id,
        };
        // Seen when it was punched (not now), so the memory expires 24 h
        // after the punch as it would have without the restart.
        slot.employees
            .with((tenant_tag, emp_tag), at.min(now_ms), |slot| {
                slot.get_or_insert_with(EmployeeState::default).remember(
                    dual,
                    &observed,
                    rec.verdict() != Verdict::RepeatMerged,
                )
            });
        if rec.method() == PunchMethod::Qr {
            // The code's own step is not in the record: block every step it
            // could have been, which only ever refuses a second scan.
            if let Some(site) = rec.site() {
                let s = &rules.settings;
                let step = crate::rules::qr::step_of(at, s.qr_step_ms);
                let qr_window = (s.qr_skew_steps + 2) * s.qr_step_ms;
                if now_ms - at < qr_window {
                    for st in step - s.qr_skew_steps..=step {
                        // Best effort, like the employee memory.
                        slot.qr_uses.insert_new(
                            (tenant_tag, emp_tag, xxh3_64(site.as_bytes()), st),
                            now_ms,
                            (),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Processes one verified ping batch from `session`, pushing every
    /// record to forward into `sink`: ping records and fence events.
    ///
    /// A live fix (newer than the device's newest) may move the device's
    /// state: it emits `Inside` per containing fence when the gateway held no
    /// state for the device, else an `Exit` or `Enter` per fence its
    /// membership lost or gained (after the tenant's [`FenceEventRules`]),
    /// and its ping record is suppressed while the device stays in its cell
    /// and fences, up to the heartbeat. A late fix (at or before the newest:
    /// offline history) is always logged, flagged `late`, and changes
    /// nothing.
    ///
    /// This is the per-fix path the batched [`Pipeline::pings`] replaced:
    /// it takes the device's entry lock and looks the position up (under
    /// that lock) for every fix that moved, and converts every such fix to
    /// an H3 cell. Kept as the oracle of the differential test
    /// (`tests/pings_batched.rs`) and the same-run baseline of the pipeline
    /// bench; do not mix it with `pings` on one pipeline (it does not keep
    /// the state `pings` uses to skip work).
    #[doc(hidden)]
    pub fn pings_per_fix(
        &self,
        now_ms: i64,
        session: &Session,
        batch: &PingBatchView<'_>,
        scratch: &mut Scratch,
        sink: &mut impl RecordSink,
    ) -> PingOutcome {
        let snap = self.fences.load();
        let tenant = snap.tenant(&session.tenant);
        let rules = self.ping_events.by_tag(session.tenant_tag);
        let mut out = PingOutcome::default();
        let dkey = (session.tenant_tag, session.device_tag);
        let version = snap.version();
        let locate = |scratch: &mut Scratch, lat: f64, lon: f64| -> u64 {
            let point = Point::new(lat, lon).expect("the parser checked the range");
            if let Some(t) = tenant {
                snap.index().locate(point, Some(t), &mut scratch.keys);
                for k in &scratch.keys {
                    scratch.ids.push(snap.id(*k).clone());
                }
            }
            u64::from(fencegate_spatial::cell_of(point, self.cfg.cell_resolution))
        };
        for fix in batch.fixes() {
            let position = (fix.lat.to_bits(), fix.lon.to_bits());
            scratch.keys.clear();
            scratch.ids.clear();
            scratch.events.clear();
            let mut cell = 0;
            let mut heartbeat = false;
            let mut forward = false;
            // An exit counts at once unless the exit margin holds the
            // device in: then only when the fix, less its accuracy, is more
            // than the margin outside the fence's edge. A fence gone from
            // the snapshot has no edge to be near.
            let exit_counts = |id: &str| -> bool {
                let Some(margin) = rules.exit_margin_m else {
                    return true;
                };
                let Some(f) = tenant.and_then(|t| snap.fence_by_id(t, id)) else {
                    return true;
                };
                let p = Point::new(fix.lat, fix.lon).expect("the parser checked the range");
                f.distance_m(p) - f64::from(fix.accuracy_m) > margin
            };
            // Decide under the device's entry lock, then build records after.
            let tracked = self.devices.with(dkey, |slot| {
                let st = slot.get_or_insert_with(DeviceState::default);
                if st.owner.is_none() {
                    st.owner = Some((session.tenant.clone(), session.device.clone()));
                }
                let fresh = st.last_fix_ms == 0 && st.last_forward_ms == 0;
                if !fresh && fix.time_ms <= st.last_fix_ms {
                    // Only a copy of the newest fix is dropped: the state
                    // remembers no older ones (memory stays one entry per
                    // device), so an older fix sent twice is logged twice
                    // with the same record id, and downstream drops the
                    // second by that id.
                    return if fix.time_ms == st.last_fix_ms && st.position == position {
                        FixKind::Duplicate
                    } else {
                        FixKind::Late
                    };
                }
                // A device that has not moved reuses its last answer: no
                // locate and no H3 cell, together most of a fix's cost.
                let unmoved = !fresh && st.position == position && st.snapshot == version;
                cell = if unmoved {
                    st.cell
                } else {
                    locate(scratch, fix.lat, fix.lon)
                };
                let located: &[Arc<str>] = if unmoved { &st.located } else { &scratch.ids };
                let relocated = !unmoved && !same_set(&st.located, located);
                if fresh {
                    // No live state (first contact, restart, expiry): the
                    // device's starting state, not a transition.
                    scratch
                        .events
                        .extend(located.iter().map(|f| (f.clone(), Transition::Inside)));
                    st.members = located.into();
                } else if !st.pending.is_empty() || !same_set(&st.members, located) {
                    membership_step(
                        &mut st.members,
                        &mut st.pending,
                        located,
                        fix.time_ms,
                        rules.dwell_ms,
                        exit_counts,
                        &mut scratch.events,
                        &mut scratch.members,
                        &mut scratch.pending,
                    );
                }
                if scratch.events.len() > 1 {
                    scratch.events.sort_unstable_by(|a, b| {
                        (event_order(a.1), &a.0).cmp(&(event_order(b.1), &b.0))
                    });
                }
                if fresh || relocated || st.cell != cell || !scratch.events.is_empty() {
                    forward = true;
                } else if fix.time_ms - st.last_forward_ms >= self.cfg.heartbeat_ms {
                    forward = true;
                    heartbeat = true;
                }
                if unmoved && forward {
                    scratch.ids.extend(st.located.iter().cloned());
                }
                if fresh || relocated {
                    st.located = scratch.ids.as_slice().into();
                }
                st.last_fix_ms = fix.time_ms;
                st.cell = cell;
                st.position = position;
                st.snapshot = version;
                if forward {
                    st.last_forward_ms = fix.time_ms;
                }
                FixKind::Live
            });
            let mut late = false;
            match tracked {
                Ok(FixKind::Live) => {}
                Ok(FixKind::Duplicate) => {
                    out.duplicates += 1;
                    continue;
                }
                Ok(FixKind::Late) => {
                    // History: located like any fix (outside the lock),
                    // logged, and nothing else.
                    cell = locate(scratch, fix.lat, fix.lon);
                    late = true;
                    out.late += 1;
                }
                Err(_) => {
                    // No state to compare with: forwarded as is, and no
                    // events (an Inside per fix would flood downstream).
                    cell = locate(scratch, fix.lat, fix.lon);
                    out.untracked += 1;
                }
            }
            if !(forward || late || tracked.is_err()) {
                out.suppressed += 1;
                continue;
            }
            let time = fix.time_ms.to_le_bytes();
            let lat_b = fix.lat.to_le_bytes();
            let lon_b = fix.lon.to_le_bytes();
            // Events first, so a consumer sees the exit before the ping that
            // is already outside.
            for (f, transition) in &scratch.events {
                let rid = record_id(&[
                    b"event",
                    session.tenant.as_bytes(),
                    session.device.as_bytes(),
                    f.as_bytes(),
                    &[transition.0],
                    &time,
                ]);
                let rec = RecordRef::<&str> {
                    record_id: rid,
                    tenant: &session.tenant,
                    gateway_time_ms: now_ms,
                    node: Some(&self.cfg.node),
                    body: RecordBodyRef::FenceEvent(FenceEventRef {
                        device_id: &session.device,
                        fence_id: f,
                        transition: *transition,
                        time_ms: fix.time_ms,
                        lat: fix.lat,
                        lon: fix.lon,
                    }),
                };
                sink.push(rec.encode_into(&mut scratch.fbb), now_ms);
                out.events += 1;
                self.live.note(
                    &session.tenant,
                    &session.device,
                    f,
                    *transition,
                    (fix.time_ms, fix.lat, fix.lon),
                );
            }
            // The same id whether the fix arrives live or late, so a fix
            // forwarded live and uploaded again in a backlog is one record
            // downstream.
            let rid = record_id(&[
                b"ping",
                session.tenant.as_bytes(),
                session.device.as_bytes(),
                &time,
                &lat_b,
                &lon_b,
            ]);
            let rec = RecordRef {
                record_id: rid,
                tenant: &session.tenant,
                gateway_time_ms: now_ms,
                node: Some(&self.cfg.node),
                body: RecordBodyRef::Ping(PingRecordRef {
                    device_id: &session.device,
                    time_ms: fix.time_ms,
                    lat: fix.lat,
                    lon: fix.lon,
                    accuracy_m: fix.accuracy_m,
                    h3_cell: cell,
                    fence_ids: &scratch.ids,
                    heartbeat,
                    late,
                }),
            };
            sink.push(rec.encode_into(&mut scratch.fbb), now_ms);
            if !late {
                out.forwarded += 1;
            }
        }
        self.metrics.pings(&out);
        out
    }

    /// Processes one verified ping batch from `session`, pushing every
    /// record to forward into `sink`: ping records and fence events.
    ///
    /// A live fix (newer than the device's newest) may move the device's
    /// state: it emits `Inside` per containing fence when the gateway held no
    /// state for the device, else an `Exit` or `Enter` per fence its
    /// membership lost or gained (after the tenant's [`FenceEventRules`]),
    /// and its ping record is suppressed while the device stays in its cell
    /// and fences, up to the heartbeat. A late fix (at or before the newest:
    /// offline history) is always logged, flagged `late`, and changes
    /// nothing.
    ///
    /// The work per fix is proportional to what changed: a fix inside the
    /// box of the previous fix's H3 cell ([`CellBox`]) keeps that cell
    /// without a conversion, and a fix in the same uniform lookup-grid cell
    /// keeps the previous fences without a lookup; the lookups a batch does
    /// need are issued together ([`FenceIndex::locate_batch_cells`]) before
    /// the device's state is locked, and the state is locked once per batch,
    /// not per fix. The answers equal [`Pipeline::pings_per_fix`]'s
    /// (`tests/pings_batched.rs`).
    ///
    /// [`FenceIndex::locate_batch_cells`]: fencegate_spatial::FenceIndex::locate_batch_cells
    pub fn pings(
        &self,
        now_ms: i64,
        session: &Session,
        batch: &PingBatchView<'_>,
        scratch: &mut Scratch,
        sink: &mut impl RecordSink,
    ) -> PingOutcome {
        let snap = self.fences.load();
        let tenant = snap.tenant(&session.tenant);
        let rules = self.ping_events.by_tag(session.tenant_tag);
        let mut out = PingOutcome::default();
        let dkey = (session.tenant_tag, session.device_tag);
        let version = snap.version();
        let b = &mut scratch.batch;
        b.fixes.clear();
        b.fixes.extend(batch.fixes());

        // 1. A copy of the device's state (read lock, released at once).
        let view = self
            .devices
            .get(&dkey, |st| Some(StateView::of(st, version)));
        // The memory is best effort: a new device makes room by forgetting
        // one not seen for longest (by generation) rather than going
        // untracked. A race can still fill the map; that batch is then
        // forwarded untracked, as before.
        if view.is_none() && self.devices.len() >= self.cfg.max_devices && self.devices.evict_one()
        {
            self.metrics.devices_evicted.increment(1);
        }
        // 2. Cells and fences of every fix, no lock held.
        b.answer(&snap, tenant, self.cfg.cell_resolution, view.as_ref());

        // 3. Decide every fix under the device's entry lock, taken once.
        scratch.ids.clear();
        scratch.events.clear();
        b.decided.clear();
        let Scratch {
            batch: b,
            ids,
            events: fix_events,
            members,
            pending,
            ..
        } = scratch;
        let res = self.cfg.cell_resolution;
        let cx = FixCx {
            snap: &snap,
            tenant,
            rules,
            version,
            heartbeat_ms: self.cfg.heartbeat_ms,
        };
        let tracked = self.devices.with(dkey, |slot| {
            let st = slot.get_or_insert_with(DeviceState::default);
            if st.owner.is_none() {
                st.owner = Some((session.tenant.clone(), session.device.clone()));
            }
            // The answers that say "the fences the state holds" were made
            // from a copy; if another batch of this device moved the state
            // since (two connections, or datagrams racing a backlog), make
            // them again from the state as it is: rare, and then under the
            // lock.
            if b.uses_state && view.is_none_or(|v| v.seq != st.seq) {
                let now = StateView::of(st, version);
                b.answer(&snap, tenant, res, Some(&now));
            }
            // Which answer `st.located` is the list of: `Loc::State` until a
            // lookup's answer replaces it.
            let mut current = Loc::State;
            let mut bufs = FixBufs {
                ids,
                events: fix_events,
                members,
                pending,
            };
            for i in 0..b.fixes.len() {
                decide_fix(&cx, st, b, i, &mut current, &mut bufs, &mut out);
            }
            st.seq = st.seq.wrapping_add(1);
        });
        if tracked.is_err() {
            // No state to compare with (`dedup.max_devices` reached):
            // every fix forwarded as is, and no events (an Inside per fix
            // would flood downstream).
            if b.uses_state {
                b.answer(&snap, tenant, res, None);
            }
            for i in 0..b.fixes.len() {
                let ids_at = ids.len();
                push_ids(&b.keys, b.answers[i].loc, &snap, &[], ids);
                out.untracked += 1;
                b.decided.push(Decided {
                    fix: i as u32,
                    kind: Kind::Untracked,
                    cell: b.answers[i].cell,
                    ids: (ids_at as u32, ids.len() as u32),
                    events: (0, 0),
                });
            }
        }

        // 4. Records, after the lock.
        self.encode_pings(now_ms, session, scratch, sink, &mut out);
        scratch.batch.events.clear();
        scratch.ids.clear();
        self.metrics.pings(&out);
        out
    }

    /// The records stage of a ping batch, after the device's lock: each
    /// decided fix's fence events (first, so a consumer sees the exit
    /// before the ping that is already outside), then its ping record.
    fn encode_pings(
        &self,
        now_ms: i64,
        session: &Session,
        scratch: &mut Scratch,
        sink: &mut impl RecordSink,
        out: &mut PingOutcome,
    ) {
        let Scratch {
            batch: b, ids, fbb, ..
        } = scratch;
        for d in &b.decided {
            let fix = b.fixes[d.fix as usize];
            let time = fix.time_ms.to_le_bytes();
            // Events first, so a consumer sees the exit before the ping that
            // is already outside.
            for (f, transition) in &b.events[d.events.0 as usize..d.events.1 as usize] {
                let rid = record_id(&[
                    b"event",
                    session.tenant.as_bytes(),
                    session.device.as_bytes(),
                    f.as_bytes(),
                    &[transition.0],
                    &time,
                ]);
                let rec = RecordRef::<&str> {
                    record_id: rid,
                    tenant: &session.tenant,
                    gateway_time_ms: now_ms,
                    node: Some(&self.cfg.node),
                    body: RecordBodyRef::FenceEvent(FenceEventRef {
                        device_id: &session.device,
                        fence_id: f,
                        transition: *transition,
                        time_ms: fix.time_ms,
                        lat: fix.lat,
                        lon: fix.lon,
                    }),
                };
                sink.push(rec.encode_into(fbb), now_ms);
                out.events += 1;
                self.live.note(
                    &session.tenant,
                    &session.device,
                    f,
                    *transition,
                    (fix.time_ms, fix.lat, fix.lon),
                );
            }
            let rid = record_id(&[
                b"ping",
                session.tenant.as_bytes(),
                session.device.as_bytes(),
                &time,
                &fix.lat.to_le_bytes(),
                &fix.lon.to_le_bytes(),
            ]);
            let late = d.kind == Kind::Late;
            let rec = RecordRef {
                record_id: rid,
                tenant: &session.tenant,
                gateway_time_ms: now_ms,
                node: Some(&self.cfg.node),
                body: RecordBodyRef::Ping(PingRecordRef {
                    device_id: &session.device,
                    time_ms: fix.time_ms,
                    lat: fix.lat,
                    lon: fix.lon,
                    accuracy_m: fix.accuracy_m,
                    h3_cell: d.cell,
                    fence_ids: &ids[d.ids.0 as usize..d.ids.1 as usize],
                    heartbeat: d.kind == Kind::Heartbeat,
                    late,
                }),
            };
            sink.push(rec.encode_into(fbb), now_ms);
            if !late {
                out.forwarded += 1;
            }
        }
    }
}

/// What every stage of one punch's decision reads.
struct PunchCx<'a> {
    now_ms: i64,
    session: &'a Session,
    punch: &'a PunchView<'a>,
    snap: &'a FenceSnapshot,
    settings: &'a AttendanceSettings,
    tenant: &'a TenantRules,
    own_record_id: [u8; 16],
}

/// Where [`locate`] placed a punch.
struct Place<'a> {
    /// What the rules judge by: the GPS lookup's outcome, or `NotUsed`
    /// for a punch verified by other evidence.
    location: Location,
    /// The lookup's outcome for a Wi-Fi, QR or terminal punch's position,
    /// compared with the verified site but not judged.
    informational: Location,
    /// The site of the fence the position is in.
    fence_site: Option<&'a str>,
}

/// What [`classify`] made of a punch, refined by [`Pipeline::merge`].
struct Judged<'r> {
    j: crate::rules::judge::Judgement<'r>,
    status: AttendanceStatus,
    flags: u64,
}

/// What [`Pipeline::merge`] took for a punch, released if it goes no
/// further.
#[derive(Default)]
struct Merge {
    qr: Option<QrUseKey>,
    repeat: Option<RepeatKey>,
    memory: Option<Remember>,
    merged_into: Option<[u8; 16]>,
    paired_with: Option<[u8; 16]>,
}

impl Merge {
    fn release(&self, slot: &TenantSlot, own_record_id: [u8; 16]) {
        if let Some(r) = self.repeat {
            slot.repeats.remove_if(&r, |e| e.record_id == own_record_id);
        }
        if let Some(k) = self.qr {
            slot.qr_uses.remove(&k);
        }
    }
}

/// The locate stage: where the punch's position is, by the tenant's
/// accuracy policy. Fills the ack's fence fields and `scratch.ids` (every
/// fence containing the position, for the record).
fn locate<'a>(cx: &PunchCx<'a>, ack: &mut AckInfo, scratch: &mut Scratch) -> Place<'a> {
    scratch.ids.clear();
    scratch.keys.clear();
    let snap = cx.snap;
    let method = cx.punch.method();
    let position = cx.punch.position();
    let lookup = gps_lookup(cx.tenant.accuracy, method, position.map_or(0.0, |p| p.2));
    let mut place = Place {
        location: Location::NotUsed,
        informational: Location::NotUsed,
        fence_site: None,
    };
    let Some((lat, lon, acc)) = position else {
        return place;
    };
    let point = Point::new(lat, lon).expect("the parser checked the range");
    let location = match (lookup, snap.tenant(&cx.session.tenant)) {
        (GpsLookup::TooInaccurate, _) => Location::TooInaccurate,
        (_, None) => Location::NoFences,
        (GpsLookup::Strict, Some(tenant)) => {
            match snap.index().classify(point, f64::from(acc), Some(tenant)) {
                Classification::Inside { fence, .. } => {
                    place.fence_site = inside(snap, point, tenant, fence, ack, scratch);
                    Location::Inside
                }
                Classification::Outside {
                    nearest,
                    distance_m,
                } => {
                    ack.nearest_fence_id = Some(snap.id(nearest).clone());
                    ack.distance_m = distance_m as f32;
                    Location::Outside
                }
                Classification::Uncertain {
                    fence,
                    inside,
                    distance_m,
                } => {
                    ack.nearest_fence_id = Some(snap.id(fence).clone());
                    ack.distance_m = if inside { 0.0 } else { distance_m as f32 };
                    Location::Uncertain
                }
                Classification::NoFences => Location::NoFences,
            }
        }
        (_, Some(tenant)) => {
            snap.index().locate(point, Some(tenant), &mut scratch.keys);
            if let Some(&first) = scratch.keys.first() {
                place.fence_site = inside(snap, point, tenant, first, ack, scratch);
                Location::Inside
            } else {
                if let Some((k, d)) = snap.index().nearest(point, Some(tenant)) {
                    ack.nearest_fence_id = Some(snap.id(k).clone());
                    ack.distance_m = d as f32;
                }
                Location::Outside
            }
        }
    };
    if lookup == GpsLookup::Informational {
        // Wi-Fi, QR and terminal punches are verified by their own
        // evidence; a position they carry is recorded, not judged (but
        // compared with the verified site in `classify`).
        place.informational = location;
    } else {
        place.location = location;
    }
    place
}

/// A position inside `fence`: the ack names it, and `scratch.ids` gets
/// every fence of the tenant containing the position. Returns the fence's
/// site.
fn inside<'a>(
    snap: &'a FenceSnapshot,
    point: Point,
    tenant: TenantKey,
    fence: FenceKey,
    ack: &mut AckInfo,
    scratch: &mut Scratch,
) -> Option<&'a str> {
    ack.fence_id = Some(snap.id(fence).clone());
    ack.nearest_fence_id = ack.fence_id.clone();
    if scratch.keys.is_empty() {
        snap.index().locate(point, Some(tenant), &mut scratch.keys);
    }
    for k in &scratch.keys {
        scratch.ids.push(snap.id(*k).clone());
    }
    snap.index().fence(fence).site()
}

/// The classify stage: the attendance rules' judgement, with an anomaly
/// flag when a position lies far from the site other evidence verified,
/// and the flags the cluster's claims added.
fn classify<'r>(
    cx: &PunchCx<'r>,
    place: &Place<'_>,
    ack: &mut AckInfo,
    scratch: &mut Scratch,
    claimed: Option<ClaimOutcome>,
) -> Judged<'r> {
    let j = judge(
        cx.now_ms,
        cx.settings,
        cx.tenant,
        &cx.session.device,
        cx.punch,
        place.location,
        &mut scratch.label,
    );
    ack.verdict = j.verdict;
    ack.reason = j.reason;
    let mut flags = j.flags | claimed.map_or(0, |c| c.flags);
    if let (Some(site), Some((_, _, acc))) = (j.site, cx.punch.position()) {
        let name = &*cx.tenant.sites[usize::from(site)].name;
        let at_site = place.informational == Location::Inside
            && scratch
                .keys
                .iter()
                .any(|k| cx.snap.index().fence(*k).site() == Some(name));
        if crate::rules::judge::evidence_disagrees(
            cx.tenant,
            place.informational,
            at_site,
            ack.distance_m,
            acc,
        ) {
            flags |= fencegate_schema::anomaly::EVIDENCE_MISMATCH;
        }
    }
    Judged {
        status: j.status,
        flags,
        j,
    }
}

/// The encode stage: the punch record, written into `scratch`'s builder,
/// and what [`Pipeline::settle`] needs once the log has answered.
#[allow(clippy::too_many_arguments)]
fn encode_punch<'b>(
    cx: &PunchCx<'_>,
    node: &str,
    place: &Place<'_>,
    judged: &Judged<'_>,
    ack: AckInfo,
    merge: Merge,
    key: PunchKey,
    scratch: &'b mut Scratch,
) -> PunchDecision<'b> {
    let (j, punch) = (&judged.j, cx.punch);
    let site = match j.site {
        Some(i) => Some(&*cx.tenant.sites[usize::from(i)].name),
        None => place.fence_site,
    };
    let employee = j.employee;
    let attendance = AttendanceRef {
        site,
        department: employee.and_then(|e| e.department.as_deref()),
        supervisor: employee.and_then(|e| e.supervisor.as_deref()),
        needs_approval: j.needs_approval && ack.verdict == Verdict::OutOfRange,
        paired_with: merge.paired_with,
        attendance_time_ms: j.at_ms,
        group: Some(&j.group.name),
        terminal_auth: punch.terminal_auth(),
    };
    let slot = (!scratch.label.is_empty()).then_some(scratch.label.as_str());
    let position = punch.position();
    let (lat, lon, acc) = position.unwrap_or((0.0, 0.0, -1.0));
    let record = RecordRef {
        record_id: cx.own_record_id,
        tenant: &cx.session.tenant,
        gateway_time_ms: cx.now_ms,
        node: Some(node),
        body: RecordBodyRef::Punch(PunchRecordRef {
            punch_id: punch.punch_id(),
            employee_id: punch.employee_id(),
            device_id: &cx.session.device,
            kind: punch.kind(),
            method: punch.method(),
            device_time_ms: punch.device_time_ms(),
            position: position.map(|_| Position::new(lat, lon, acc)),
            verdict: ack.verdict,
            reason: ack.reason,
            fence_ids: &scratch.ids,
            nearest_fence_id: ack.nearest_fence_id.as_deref(),
            distance_m: ack.distance_m,
            offline: punch.offline(),
            mock_location: punch.mock_location(),
            status: judged.status,
            anomaly_flags: judged.flags,
            slot,
            merged_into: merge.merged_into,
        }),
    };
    let bytes = record.encode_with_attendance(&attendance, &mut scratch.fbb);
    PunchDecision::Record {
        record: bytes,
        ack,
        pending: PendingPunch {
            key,
            repeat: merge.repeat,
            record_id: cx.own_record_id,
            qr: merge.qr,
            status: judged.status,
            flags: judged.flags,
            memory: merge.memory,
            at_ms: j.at_ms,
        },
    }
}

/// Where a fix's fences come from, decided before the device's state is
/// locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    /// The list the device's state holds for its newest live fix
    /// (`DeviceState::located`): the fix is at the same position or in the
    /// same uniform grid cell.
    State,
    /// `BatchScratch::keys[start..end]`: looked up for this batch.
    Keys(u32, u32),
}

/// A fix's H3 cell and fences, as decided before the lock.
#[derive(Debug, Clone, Copy)]
struct Answer {
    cell: u64,
    /// A box inside `cell`, for the next fix's cheap check.
    cell_box: CellBox,
    grid: GridCell,
    loc: Loc,
}

/// How a fix's fences were found in the first pass of [`BatchScratch::answer`].
#[derive(Debug, Clone, Copy)]
enum Src {
    /// Known at once (the state's list).
    Known(Loc),
    /// The answer of lookup `q` of the first round.
    Query(u32),
    /// In the grid cell of lookup `q`, at another position: that answer if
    /// the cell turns out uniform, else a lookup of its own.
    SameCell(u32),
    /// At the position of fix `i` (an earlier fix): its answer.
    SameAs(u32),
}

/// What the device's state looked like when a batch began.
#[derive(Debug, Clone, Copy)]
struct StateView {
    seq: u32,
    position: (u64, u64),
    cell: u64,
    cell_box: CellBox,
    grid: GridCell,
    /// The state holds no fix yet: nothing in it describes a position.
    fresh: bool,
    /// `located` holds the fences of `position` in this snapshot.
    located_valid: bool,
}

impl StateView {
    fn of(st: &DeviceState, version: u64) -> Self {
        let fresh = st.last_fix_ms == 0 && st.last_forward_ms == 0;
        Self {
            seq: st.seq,
            position: st.position,
            cell: st.cell,
            cell_box: if fresh { CellBox::EMPTY } else { st.cell_box },
            grid: st.grid,
            fresh,
            located_valid: !fresh && st.snapshot == version,
        }
    }
}

/// What a decided fix becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Suppressed,
    Forward,
    Heartbeat,
    Late,
    Untracked,
}

/// A fix that becomes records: where its fence ids and events are in the
/// batch's flat lists.
#[derive(Debug, Clone, Copy)]
struct Decided {
    fix: u32,
    kind: Kind,
    cell: u64,
    ids: (u32, u32),
    events: (u32, u32),
}

/// Per-task buffers of the ping path, reused from batch to batch.
#[derive(Default)]
struct BatchScratch {
    fixes: Vec<FixReading>,
    answers: Vec<Answer>,
    src: Vec<Src>,
    /// Lookups of the current round, and which fix each one is for.
    queries: Vec<(Point, Option<TenantKey>)>,
    query_fix: Vec<u32>,
    /// Per lookup of the first round: its fences in `keys`, and its grid cell.
    ranges: Vec<(u32, u32)>,
    cells: Vec<GridCell>,
    keys: Vec<FenceKey>,
    /// Whether an answer is `Loc::State` (then it needs the state unchanged).
    uses_state: bool,
    /// The fences of the fix being decided, when they are not the state's.
    located: Vec<Arc<str>>,
    events: Vec<(Arc<str>, Transition)>,
    decided: Vec<Decided>,
    /// H3 conversions made so far ([`Scratch::h3_conversions`]).
    conversions: u64,
}

impl BatchScratch {
    /// Finds the H3 cell and fences of every fix in `self.fixes`, doing only
    /// the work the previous fix (or, for the first, the state `view`)
    /// cannot prove unnecessary: an H3 conversion when the fix is outside
    /// the previous cell's box, a lookup when it is neither at the previous
    /// position nor in the previous fix's uniform grid cell. Lookups run
    /// in at most two `locate_batch_cells` calls.
    fn answer(
        &mut self,
        snap: &FenceSnapshot,
        tenant: Option<TenantKey>,
        res: h3o::Resolution,
        view: Option<&StateView>,
    ) {
        let index = snap.index();
        self.answers.clear();
        self.src.clear();
        self.queries.clear();
        self.query_fix.clear();
        self.keys.clear();
        self.uses_state = false;
        // The reference: the previous fix, or the state for the first.
        let mut known = view.is_some_and(|v| !v.fresh);
        let mut pos = view.map_or((0, 0), |v| v.position);
        let mut cell = view.map_or(0, |v| v.cell);
        // The previous cell's shape, built only once a device lingers in a
        // cell (a second conversion gave the same cell), so a device that
        // changes cell at every fix pays no boundary computation.
        // The state keeps only the box: `shaped` stays false until the full
        // shape is built, so a device lingering outside its box converts
        // once per batch, not at every fix.
        let mut shape = view.map_or(CellShape::EMPTY, |v| CellShape::from_box(v.cell_box));
        let mut shaped = false;
        let mut grid = view.map_or(GridCell::default(), |v| v.grid);
        // Some(true): the reference's grid cell is known uniform;
        // None: pending on lookup `head`.
        let mut uniform = Some(view.is_some_and(|v| v.located_valid && v.grid.uniform));
        let mut src = match view {
            Some(v) if v.located_valid => Some(Src::Known(Loc::State)),
            _ => None,
        };
        let mut head = 0u32;
        for (i, fix) in self.fixes.iter().enumerate() {
            let p = Point::new(fix.lat, fix.lon).expect("the parser checked the range");
            let here = (fix.lat.to_bits(), fix.lon.to_bits());
            let same_pos = known && here == pos;
            if !same_pos && !shape.contains(fix.lat, fix.lon) {
                let c = u64::from(fencegate_spatial::cell_of(p, res));
                self.conversions += 1;
                if c != cell || !known {
                    shape = CellShape::EMPTY;
                    shaped = false;
                } else if !shaped {
                    shape =
                        CellShape::of(fencegate_spatial::CellIndex::try_from(c).expect("a cell"));
                    shaped = true;
                }
                cell = c;
            }
            let key = index.grid_cell_key(p);
            let s = match (tenant, src) {
                // No fences for the tenant: nothing to look up.
                (None, _) => Src::Known(Loc::Keys(0, 0)),
                (_, Some(prev)) if same_pos => match prev {
                    Src::Known(l) => Src::Known(l),
                    _ => Src::SameAs(i as u32 - 1),
                },
                (_, Some(Src::Known(l))) if key == grid.key && uniform == Some(true) => {
                    Src::Known(l)
                }
                (_, Some(_)) if key == grid.key && uniform.is_none() => Src::SameCell(head),
                _ => {
                    head = self.queries.len() as u32;
                    self.queries.push((p, tenant));
                    self.query_fix.push(i as u32);
                    uniform = None;
                    Src::Query(head)
                }
            };
            self.uses_state |= matches!(s, Src::Known(Loc::State));
            grid.key = key;
            known = true;
            pos = here;
            src = Some(s);
            self.src.push(s);
            self.answers.push(Answer {
                cell,
                cell_box: shape.cell_box,
                grid: GridCell {
                    key,
                    uniform: false,
                },
                loc: match s {
                    Src::Known(l) => l,
                    _ => Loc::Keys(0, 0),
                },
            });
        }
        if let Some(v) = view.filter(|v| v.located_valid) {
            // Answers reusing the state's list are in the state's grid cell.
            for (a, s) in self.answers.iter_mut().zip(&self.src) {
                if matches!(s, Src::Known(Loc::State)) {
                    a.grid = v.grid;
                }
            }
        }
        if self.queries.is_empty() {
            return;
        }
        // First round: one lookup per grid cell the batch entered.
        self.lookup(index, 0);
        let first = self.queries.len();
        self.queries.clear();
        self.query_fix.clear();
        for i in 0..self.answers.len() {
            match self.src[i] {
                Src::Query(q) => {
                    let (s, e) = self.ranges[q as usize];
                    self.answers[i].loc = Loc::Keys(s, e);
                    self.answers[i].grid = self.cells[q as usize];
                }
                Src::SameCell(q) if self.cells[q as usize].uniform => {
                    let (s, e) = self.ranges[q as usize];
                    self.answers[i].loc = Loc::Keys(s, e);
                    self.answers[i].grid = self.cells[q as usize];
                }
                Src::SameCell(_) => {
                    let f = &self.fixes[i];
                    let p = Point::new(f.lat, f.lon).expect("the parser checked the range");
                    self.queries.push((p, tenant));
                    self.query_fix.push(i as u32);
                }
                _ => {}
            }
        }
        if !self.queries.is_empty() {
            // Second round: positions in grid cells that were not uniform.
            self.lookup(index, first);
            for (q, &i) in self.query_fix.iter().enumerate() {
                let (s, e) = self.ranges[first + q];
                self.answers[i as usize].loc = Loc::Keys(s, e);
                self.answers[i as usize].grid = self.cells[first + q];
            }
        }
        for i in 0..self.answers.len() {
            if let Src::SameAs(j) = self.src[i] {
                let a = self.answers[j as usize];
                self.answers[i].loc = a.loc;
                self.answers[i].grid = a.grid;
            }
        }
    }

    /// Looks up `self.queries`, appending each one's fences to `keys` and
    /// its range and grid cell at `ranges[base + q]`, `cells[base + q]`.
    fn lookup(&mut self, index: &fencegate_spatial::FenceIndex, base: usize) {
        self.ranges.truncate(base);
        self.cells.truncate(base);
        let start = self.keys.len() as u32;
        self.ranges
            .resize(base + self.queries.len(), (start, start));
        self.cells
            .resize(base + self.queries.len(), GridCell::default());
        let (ranges, cells, keys) = (&mut self.ranges, &mut self.cells, &mut self.keys);
        index.locate_batch_cells(
            &self.queries,
            |q, k| {
                let r = &mut ranges[base + q];
                if r.0 == r.1 {
                    r.0 = keys.len() as u32;
                    r.1 = r.0;
                }
                keys.push(k);
                r.1 += 1;
            },
            |q, c| cells[base + q] = c,
        );
    }
}

/// Appends the fence ids of `loc` to `out`: `state` for [`Loc::State`],
/// else the looked-up `keys` it names.
/// What deciding the fixes of one ping batch reads.
struct FixCx<'a> {
    snap: &'a FenceSnapshot,
    tenant: Option<TenantKey>,
    rules: FenceEventRules,
    /// The snapshot's version: a device state located in it is current.
    version: u64,
    heartbeat_ms: i64,
}

/// The buffers deciding fixes writes into, lent from [`Scratch`].
struct FixBufs<'s> {
    /// Fence ids of every decided fix, in order (ranges in `Decided`).
    ids: &'s mut Vec<Arc<str>>,
    /// The events of the fix being decided.
    events: &'s mut Vec<(Arc<str>, Transition)>,
    members: &'s mut Vec<Arc<str>>,
    pending: &'s mut Vec<Pending>,
}

/// The decide stage for fix `i` of a batch, under the device's lock: a
/// copy of the newest fix is dropped and an older fix kept as history
/// (late); a newer one steps the fence membership (events, after
/// `dwell_ms` and the exit margin) and is forwarded, suppressed, or sent
/// as a heartbeat. `current` says which answer `st.located` lists.
///
/// Inlined into its one caller: a standing fix costs about 0.08 µs, so
/// a call per fix would show (measured: batched standing 5.3-5.9 µs per
/// 64-fix batch as a call vs 4.1-5.1 µs inline before the split).
#[inline(always)]
fn decide_fix(
    cx: &FixCx<'_>,
    st: &mut DeviceState,
    b: &mut BatchScratch,
    i: usize,
    current: &mut Loc,
    bufs: &mut FixBufs<'_>,
    out: &mut PingOutcome,
) {
    let fix = b.fixes[i];
    let a = b.answers[i];
    let position = (fix.lat.to_bits(), fix.lon.to_bits());
    let fresh = st.last_fix_ms == 0 && st.last_forward_ms == 0;
    if !fresh && fix.time_ms <= st.last_fix_ms {
        // See `pings_per_fix`: only a copy of the newest fix is
        // dropped; an older one is history.
        if fix.time_ms == st.last_fix_ms && st.position == position {
            out.duplicates += 1;
        } else {
            let ids_at = bufs.ids.len();
            push_ids(&b.keys, a.loc, cx.snap, &st.located, bufs.ids);
            out.late += 1;
            b.decided.push(Decided {
                fix: i as u32,
                kind: Kind::Late,
                cell: a.cell,
                ids: (ids_at as u32, bufs.ids.len() as u32),
                events: (0, 0),
            });
        }
        return;
    }
    let exit_counts = |id: &str| -> bool {
        let Some(margin) = cx.rules.exit_margin_m else {
            return true;
        };
        let Some(f) = cx.tenant.and_then(|t| cx.snap.fence_by_id(t, id)) else {
            return true;
        };
        let p = Point::new(fix.lat, fix.lon).expect("the parser checked the range");
        f.distance_m(p) - f64::from(fix.accuracy_m) > margin
    };
    // The same fences as the state holds: no list to build.
    let same = !fresh && a.loc == *current && st.snapshot == cx.version;
    b.located.clear();
    if !same {
        push_ids(&b.keys, a.loc, cx.snap, &st.located, &mut b.located);
    }
    let located: &[Arc<str>] = if same { &st.located } else { &b.located };
    let relocated = !same && !same_set(&st.located, located);
    let mut ev = std::mem::take(bufs.events);
    ev.clear();
    if fresh {
        ev.extend(located.iter().map(|f| (f.clone(), Transition::Inside)));
        st.members = located.into();
    } else if !st.pending.is_empty() || !same_set(&st.members, located) {
        membership_step(
            &mut st.members,
            &mut st.pending,
            located,
            fix.time_ms,
            cx.rules.dwell_ms,
            exit_counts,
            &mut ev,
            bufs.members,
            bufs.pending,
        );
    }
    if ev.len() > 1 {
        ev.sort_unstable_by(|a, b| (event_order(a.1), &a.0).cmp(&(event_order(b.1), &b.0)));
    }
    let mut kind = Kind::Suppressed;
    if fresh || relocated || st.cell != a.cell || !ev.is_empty() {
        kind = Kind::Forward;
    } else if fix.time_ms - st.last_forward_ms >= cx.heartbeat_ms {
        kind = Kind::Heartbeat;
    }
    let ids_at = bufs.ids.len();
    if kind != Kind::Suppressed {
        bufs.ids.extend(located.iter().cloned());
        st.last_forward_ms = fix.time_ms;
    }
    // The state keeps the exact list of its newest fix, so a
    // later fix reusing it gets the list a lookup would give.
    if !same && (fresh || st.located[..] != b.located[..]) {
        st.located = b.located.as_slice().into();
    }
    if !same {
        *current = a.loc;
    }
    st.last_fix_ms = fix.time_ms;
    st.cell = a.cell;
    st.cell_box = a.cell_box;
    st.grid = a.grid;
    st.position = position;
    st.snapshot = cx.version;
    let ev_at = b.events.len();
    b.events.append(&mut ev);
    *bufs.events = ev;
    if kind == Kind::Suppressed {
        out.suppressed += 1;
    } else {
        b.decided.push(Decided {
            fix: i as u32,
            kind,
            cell: a.cell,
            ids: (ids_at as u32, bufs.ids.len() as u32),
            events: (ev_at as u32, b.events.len() as u32),
        });
    }
}

fn push_ids(
    keys: &[FenceKey],
    loc: Loc,
    snap: &FenceSnapshot,
    state: &[Arc<str>],
    out: &mut Vec<Arc<str>>,
) {
    match loc {
        Loc::State => out.extend(state.iter().cloned()),
        Loc::Keys(s, e) => out.extend(
            keys[s as usize..e as usize]
                .iter()
                .map(|k| snap.id(*k).clone()),
        ),
    }
}

fn same_set(a: &[Arc<str>], b: &[Arc<str>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| Arc::ptr_eq(x, y) || x == y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The record id as it was computed before the one-shot form: the
    /// streaming hasher over the length-framed parts.
    fn streamed(parts: &[&[u8]]) -> [u8; 16] {
        let mut h = Xxh3::new();
        for p in parts {
            h.update(&(p.len() as u32).to_le_bytes());
            h.update(p);
        }
        h.digest128().to_be_bytes()
    }

    proptest! {
        /// Ids must not change across an upgrade: a fix forwarded by an old
        /// node and uploaded again to a new one is one record downstream.
        /// Parts up to 8 × 80 bytes cover both the stack buffer (≤ 256
        /// framed bytes) and the streaming fallback.
        #[test]
        fn record_ids_are_the_streamed_digest_of_the_framed_parts(
            parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..8)
        ) {
            let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(record_id(&parts), streamed(&parts));
        }
    }

    #[test]
    fn a_ping_id_at_the_stack_buffers_edge_is_the_streamed_one() {
        // 4 parts framed to exactly 256 bytes, then one byte more.
        for extra in [0usize, 1] {
            let long = vec![7u8; 256 - 4 * 4 - 3 - 2 - 8 + extra];
            let parts: [&[u8]; 4] = [b"png", b"ac", &long, &1_700_000_000_000i64.to_le_bytes()];
            assert_eq!(record_id(&parts), streamed(&parts), "extra {extra}");
        }
    }
}
