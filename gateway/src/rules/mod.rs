//! Attendance rules: how, where and when an employee punched, judged
//! against the tenant's rules. This is the pipeline's *classify* step.
//!
//! - [`config`]: the rules file (`config/rules.toml`, also `PUT /v1/rules`),
//!   parsed raw and compiled into a [`Rules`] snapshot, reporting every
//!   problem at once.
//! - [`schedule`]: fixed, shift and free schedules, grace minutes,
//!   cross-midnight shifts, judged in the tenant's time zone with jiff.
//! - [`holidays`]: holiday calendars with make-up workdays, from files.
//! - [`qr`]: rotating per-site QR codes (HMAC of site and time step).
//! - [`state`]: what the pipeline remembers per employee between punches
//!   (anti-cheat, minimum interval, dual verification) and QR uses.
//! - [`judge`](mod@judge): the per-punch decision, pure and allocation-free.
//! - [`day`]: day results (slot statuses, late/early/worked/overtime
//!   minutes, close times) from an employee's punches, pure.
//! - Records queries (`GET /v1/records`, `fencegate export`) are not
//!   here: they read the durable log, so they live with it (`log/query.rs`).
//! - [`store`]: the live snapshot, atomic swaps and the audit log of changes.
//!
//! Like the rest of the pipeline, nothing here reads the clock: every
//! function is handed the time. See docs/ATTENDANCE.md.

pub mod calendar;
pub mod config;
pub mod day;
pub mod holidays;
pub mod judge;
pub mod load;
pub mod qr;
pub mod schedule;
pub mod state;
pub mod store;

use std::sync::Arc;

use fencegate_schema::{PunchMethod, TerminalAuth};
use jiff::tz::TimeZone;

pub use config::{RawRules, RulesErrors};
pub use holidays::Holidays;
pub use judge::{Judgement, judge};
pub use schedule::{Schedule, Slot, TimeRules, Timing};
pub use store::RulesHandle;

/// Maps for the per-punch lookups (tenant, employee, terminal, BSSID), with
/// the spatial index's folded-multiply hasher: a few nanoseconds for an id.
/// The maps are built from the operator's rules and only looked up per
/// punch, so a device choosing keys cannot grow them or make them collide.
pub use fencegate_spatial::hash::FastMap;

/// How far (metres) a position carried by a Wi-Fi, QR or terminal punch may
/// be from the verified site before it is flagged `EvidenceMismatch`, unless
/// the tenant sets `evidence_max_distance_m`: well beyond a Wi-Fi access
/// point's range plus a poor fix, well below a commute.
pub const DEFAULT_EVIDENCE_MAX_DISTANCE_M: f64 = 1_000.0;

/// Node-wide attendance settings from the gateway configuration
/// (`[attendance]` in fencegate.toml).
#[derive(Debug, Clone, PartialEq)]
pub struct AttendanceSettings {
    /// How old an offline punch may be, judged by its device time.
    pub offline_window_ms: i64,
    /// Length of one QR code step.
    pub qr_step_ms: i64,
    /// Steps after its own that a QR code is still accepted.
    pub qr_skew_steps: i64,
    /// Device and gateway clocks further apart than this on an online punch
    /// set the `ClockSkew` flag.
    pub clock_skew_ms: i64,
}

impl Default for AttendanceSettings {
    fn default() -> Self {
        Self {
            offline_window_ms: 72 * 3_600_000,
            qr_step_ms: 30_000,
            qr_skew_steps: 1,
            clock_skew_ms: 300_000,
        }
    }
}

/// What happens to a GPS punch outside every fence of its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfRangePolicy {
    /// Recorded as `Rejected` with reason `OutOfRange`.
    Reject,
    /// Accepted as a field punch (status `Field`).
    Field,
    /// Recorded pending the supervisor's approval (verdict `OutOfRange`).
    Approval,
}

/// How the accuracy radius of a GPS fix is used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AccuracyPolicy {
    /// The fix's point decides; a radius above `max_m` (if set) is refused
    /// as `AccuracyTooLow`.
    Tolerant {
        /// Largest accepted radius, metres.
        max_m: Option<f32>,
    },
    /// The whole accuracy disc must be inside a fence (or outside all of
    /// them); a disc across a fence edge is refused as `AccuracyTooLow`.
    Strict {
        /// Largest accepted radius, metres.
        max_m: Option<f32>,
    },
}

/// One way of proving presence, as used by dual verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// A GPS punch.
    Gps,
    /// A Wi-Fi punch.
    Wifi,
    /// A QR punch.
    Qr,
    /// A terminal punch with any identification.
    Terminal,
    /// A terminal punch identified by face.
    Face,
    /// A terminal punch identified by fingerprint.
    Fingerprint,
    /// A terminal punch identified by NFC.
    Nfc,
}

impl Factor {
    /// Whether a punch made by `method` (with `auth` for terminals) is this
    /// factor.
    pub fn matches(self, method: PunchMethod, auth: TerminalAuth) -> bool {
        match self {
            Factor::Gps => method == PunchMethod::Gps,
            Factor::Wifi => method == PunchMethod::Wifi,
            Factor::Qr => method == PunchMethod::Qr,
            Factor::Terminal => method == PunchMethod::Terminal,
            Factor::Face => method == PunchMethod::Terminal && auth == TerminalAuth::Face,
            Factor::Fingerprint => {
                method == PunchMethod::Terminal && auth == TerminalAuth::Fingerprint
            }
            Factor::Nfc => method == PunchMethod::Terminal && auth == TerminalAuth::Nfc,
        }
    }
}

/// Dual verification: a `second` factor punch must follow a `first` factor
/// punch of the same kind within `within_ms`, or it is flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DualRule {
    /// The factor that comes first (e.g. GPS at the gate).
    pub first: Factor,
    /// The factor that completes it (e.g. a fingerprint at the door).
    pub second: Factor,
    /// Longest gap between them.
    pub within_ms: i64,
}

/// An attendance group: a schedule, its dual-verification rule and its
/// make-up policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Group name, written into records.
    pub name: Arc<str>,
    /// Its time rules.
    pub time: TimeRules,
    /// Dual verification, if the group uses it.
    pub dual: Option<DualRule>,
    /// What its employees may ask for as make-up punches.
    pub corrections: CorrectionPolicy,
}

/// Whether a make-up request must carry evidence (a boarding pass, a
/// ticket, a doctor's note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidencePolicy {
    /// Never asked for; a request or attachment carrying some is refused,
    /// so no personal documents are collected where the policy wants none.
    None,
    /// May be given with the request or attached while it is pending.
    Optional,
    /// Must be given with the request or attached within the group's
    /// deadline, or the request lapses.
    Required,
}

impl EvidencePolicy {
    /// The name used in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            EvidencePolicy::None => "none",
            EvidencePolicy::Optional => "optional",
            EvidencePolicy::Required => "required",
        }
    }
}

/// A group's make-up punch policy (`[tenants.<id>.groups.<name>.corrections]`,
/// docs/ATTENDANCE.md "Make-up punches").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrectionPolicy {
    /// How many days before today (in the tenant's zone) a slot may be made
    /// up; 0: today's slots only.
    pub days_back: i32,
    /// Requests per employee per calendar month of the day made up;
    /// pending and approved ones count, rejected and lapsed ones do not.
    /// 0 turns make-ups off for the group.
    pub monthly_quota: u32,
    /// Whether evidence is asked for.
    pub evidence: EvidencePolicy,
    /// With required evidence: how long after the request it may be
    /// attached before the request lapses, ms.
    pub evidence_within_ms: i64,
}

/// Make-up days back unless a group sets `days_back` (DingTalk's default
/// window for 补卡).
pub const DEFAULT_CORRECTION_DAYS_BACK: i32 = 30;
/// Make-up requests per employee and month unless a group sets
/// `monthly_quota`.
pub const DEFAULT_CORRECTION_QUOTA: u32 = 5;
/// Hours to attach required evidence unless a group sets
/// `evidence_within_h`.
pub const DEFAULT_EVIDENCE_WITHIN_H: f64 = 24.0;

impl Default for CorrectionPolicy {
    fn default() -> Self {
        Self {
            days_back: DEFAULT_CORRECTION_DAYS_BACK,
            monthly_quota: DEFAULT_CORRECTION_QUOTA,
            evidence: EvidencePolicy::Optional,
            evidence_within_ms: (DEFAULT_EVIDENCE_WITHIN_H * 3_600_000.0) as i64,
        }
    }
}

/// An employee as the rules know them.
#[derive(Debug, Clone, PartialEq)]
pub struct Employee {
    /// Index into [`TenantRules::groups`].
    pub group: u16,
    /// Department, for approval routing and supervisor access.
    pub department: Option<Arc<str>>,
    /// Who approves this employee's exceptions.
    pub supervisor: Option<Arc<str>>,
    /// Devices bound to the employee; a punch from another device (other
    /// than a trusted terminal) is flagged `UnusualDevice`. Empty: no
    /// binding, nothing flagged.
    pub devices: Box<[Box<str>]>,
}

/// A site: a place employees punch at, by fence, Wi-Fi, QR or terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Site name (as in the fences' `site` property), written into records.
    pub name: Arc<str>,
    /// Hash of the name, for QR use keys.
    pub tag: u64,
    /// The site's QR key, when it shows QR codes.
    pub qr: Option<QrKeyed>,
}

/// A QR-enabled site's key.
#[derive(Debug, Clone, PartialEq)]
pub struct QrKeyed(pub qr::QrKey);

/// Everything the rules say about one tenant, compiled for per-punch use.
#[derive(Debug, Clone)]
pub struct TenantRules {
    /// Tenant id.
    pub id: Arc<str>,
    /// Time zone every schedule of the tenant is judged in.
    pub tz: TimeZone,
    /// Its offsets as a table, for fast per-punch conversions.
    pub tz_table: schedule::TzTable,
    /// Holidays and make-up workdays.
    pub holidays: Holidays,
    /// Attendance groups; `default_group` applies to unlisted employees.
    pub groups: Vec<Group>,
    /// Index of the default group.
    pub default_group: u16,
    /// Employees with a group, department, supervisor or bound devices.
    pub employees: FastMap<Box<str>, Employee>,
    /// Sites.
    pub sites: Vec<Site>,
    /// Registered access points (BSSID as a u64) → site index.
    pub wifi: FastMap<u64, u16>,
    /// Trusted terminal device ids → site index.
    pub terminals: FastMap<Box<str>, u16>,
    /// GPS punches outside every fence.
    pub out_of_range: OutOfRangePolicy,
    /// GPS accuracy handling.
    pub accuracy: AccuracyPolicy,
    /// A clock-out this soon after the employee's clock-in is merged into
    /// it (0: off).
    pub min_interval_ms: i64,
    /// Implied speed between consecutive punch fixes of one employee above
    /// which `ImpossibleSpeed` is flagged, in metres per second (0: off).
    pub impossible_speed_mps: f64,
    /// A Wi-Fi, QR or terminal punch whose position is further than this
    /// from the site its evidence verified is flagged `EvidenceMismatch`,
    /// metres (0: off).
    pub evidence_max_distance_m: f64,
}

impl TenantRules {
    /// The rules of a tenant with no section in the rules file: UTC, a free
    /// schedule, out-of-range punches sent to approval, no sites (so Wi-Fi,
    /// QR and terminal punches are refused: nothing is registered to verify
    /// them against), impossible speed flagged above 300 km/h.
    pub fn unconfigured(id: &str) -> Self {
        Self {
            id: id.into(),
            tz: TimeZone::UTC,
            tz_table: schedule::TzTable::new(&TimeZone::UTC),
            holidays: Holidays::default(),
            groups: vec![Group {
                name: "default".into(),
                time: TimeRules::free(),
                dual: None,
                corrections: CorrectionPolicy::default(),
            }],
            default_group: 0,
            employees: FastMap::default(),
            sites: Vec::new(),
            wifi: FastMap::default(),
            terminals: FastMap::default(),
            out_of_range: OutOfRangePolicy::Approval,
            accuracy: AccuracyPolicy::Tolerant { max_m: None },
            min_interval_ms: 0,
            impossible_speed_mps: 300.0 / 3.6,
            evidence_max_distance_m: DEFAULT_EVIDENCE_MAX_DISTANCE_M,
        }
    }

    /// The employee's entry, if listed.
    pub fn employee(&self, id: &str) -> Option<&Employee> {
        self.employees.get(id)
    }

    /// The group an employee is judged by.
    pub fn group_of(&self, e: Option<&Employee>) -> &Group {
        let i = e.map_or(self.default_group, |e| e.group);
        &self.groups[usize::from(i)]
    }

    /// The site of the first registered BSSID among `seen`.
    pub fn wifi_site(&self, seen: impl Iterator<Item = [u8; 6]>) -> Option<u16> {
        for b in seen {
            if let Some(&s) = self.wifi.get(&bssid_key(b)) {
                return Some(s);
            }
        }
        None
    }

    /// The site a trusted terminal is bound to.
    pub fn terminal_site(&self, device: &str) -> Option<u16> {
        self.terminals.get(device).copied()
    }
}

/// A BSSID as a map key.
pub fn bssid_key(b: [u8; 6]) -> u64 {
    let mut k = [0u8; 8];
    k[..6].copy_from_slice(&b);
    u64::from_le_bytes(k)
}

/// A compiled rules snapshot: every configured tenant, and the settings.
#[derive(Debug, Clone)]
pub struct Rules {
    tenants: FastMap<Box<str>, TenantRules>,
    fallback: TenantRules,
    /// Node-wide settings.
    pub settings: AttendanceSettings,
}

impl Rules {
    /// Rules with no tenant configured: every tenant gets
    /// [`TenantRules::unconfigured`].
    pub fn unconfigured(settings: AttendanceSettings) -> Self {
        Self {
            tenants: FastMap::default(),
            fallback: TenantRules::unconfigured(""),
            settings,
        }
    }

    /// Rules from compiled tenants.
    pub fn new(tenants: Vec<TenantRules>, settings: AttendanceSettings) -> Self {
        Self {
            tenants: tenants
                .into_iter()
                .map(|t| (Box::<str>::from(&*t.id), t))
                .collect(),
            fallback: TenantRules::unconfigured(""),
            settings,
        }
    }

    /// The rules of `tenant` (the unconfigured defaults when it has no
    /// section).
    pub fn tenant(&self, tenant: &str) -> &TenantRules {
        self.tenants.get(tenant).unwrap_or(&self.fallback)
    }

    /// Whether `tenant` has a section.
    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }

    /// Configured tenant ids.
    pub fn tenant_ids(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(|k| &**k)
    }

    /// How far back the pipeline must replay the log at start to rebuild
    /// what the rules remember (minimum interval, dual verification).
    pub fn memory_ms(&self) -> i64 {
        let mut m = 0;
        for t in self.tenants.values() {
            m = m.max(t.min_interval_ms);
            for g in &t.groups {
                if let Some(d) = g.dual {
                    m = m.max(d.within_ms);
                }
            }
        }
        m
    }
}
