//! The rules file: parsed raw (serde, `deny_unknown_fields`), then compiled
//! into [`Rules`], reporting **every** problem at once. The doc comments on
//! the raw fields are the user documentation; `config/rules.toml` is the
//! commented example and docs/ATTENDANCE.md the guide.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::tz::TimeZoneDatabase;
use serde::{Deserialize, Serialize};

use super::holidays::Calendars;
use super::qr::QrKey;
use super::schedule::{Schedule, Slot, TimeRules, day_of};
use super::{
    AccuracyPolicy, AttendanceSettings, CorrectionPolicy, DualRule, Employee, EvidencePolicy,
    Factor, FastMap, Group, Holidays, OutOfRangePolicy, QrKeyed, Rules, Site, TenantRules,
    bssid_key,
};

/// Every problem found in a rules file, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesErrors {
    /// Where the rules came from (a path, or "PUT /v1/rules").
    pub source: String,
    /// One line per problem, naming the setting and the fix.
    pub problems: Vec<String>,
}

impl fmt::Display for RulesErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} problem(s) in the attendance rules:",
            self.source,
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RulesErrors {}

/// The rules file: one `[tenants.<id>]` section per tenant. A tenant with
/// no section is judged by the defaults described in docs/ATTENDANCE.md.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    /// Rules per tenant id.
    #[serde(default)]
    pub tenants: BTreeMap<String, RawTenantRules>,
}

/// `[tenants.<id>]`: one tenant's rules.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenantRules {
    /// IANA time zone every schedule of the tenant is judged in, e.g.
    /// `"Asia/Shanghai"`. Required.
    pub timezone: String,
    /// Holiday calendars by name, e.g. `["cn-2025"]`: files the operator
    /// keeps in the calendar folder (`[attendance] holidays_dir`), never
    /// paths. Several may apply; their days are merged with `holiday_dates`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
    /// The tenant's own extra holidays and make-up workdays, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holiday_dates: Option<RawHolidayDates>,
    /// Group for employees not listed under `employees` (or listed without
    /// a group). Required when any group is defined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_group: Option<String>,
    /// GPS punch outside every fence: `"reject"`, `"field"` (accepted as a
    /// field punch) or `"approval"` (recorded pending the supervisor's
    /// approval).
    ///
    /// `"approval"` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_range: Option<String>,
    /// GPS accuracy policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<RawAccuracy>,
    /// A clock-out within this many minutes of the employee's clock-in is
    /// merged into the clock-in (an accidental second press, not a
    /// clock-out).
    ///
    /// `0` (off) unless set.
    #[serde(default)]
    pub min_interval_min: u32,
    /// Implied speed between consecutive punch fixes of one employee above
    /// which the punch is flagged `ImpossibleSpeed`, km/h; 0 turns it off.
    ///
    /// `300` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impossible_speed_kmh: Option<f64>,
    /// A Wi-Fi, QR or terminal punch that also carries a GPS position
    /// further than this many metres (after subtracting the fix's accuracy)
    /// from the site its evidence verified, or inside only fences of other
    /// sites, is flagged `EvidenceMismatch`; 0 turns it off.
    ///
    /// `1000` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_max_distance_m: Option<f64>,
    /// Attendance groups by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, RawGroup>,
    /// Departments by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub departments: BTreeMap<String, RawDepartment>,
    /// Employees by employee id (as devices send it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub employees: BTreeMap<String, RawEmployee>,
    /// Sites by name (the same names as the fences' `site` property).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sites: BTreeMap<String, RawSite>,
}

/// `holiday_dates = { off = [...], workdays = [...] }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHolidayDates {
    /// Days off: `"YYYY-MM-DD"` or an inclusive `"YYYY-MM-DD..YYYY-MM-DD"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub off: Vec<String>,
    /// Make-up workdays, in the same form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workdays: Vec<String>,
}

/// `accuracy = { policy = "...", max_m = ... }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccuracy {
    /// `"tolerant"`: the fix's point decides. `"strict"`: the whole accuracy
    /// disc must be inside a fence (or outside all), else `AccuracyTooLow`.
    pub policy: String,
    /// Largest accepted accuracy radius in metres; a worse fix is refused
    /// as `AccuracyTooLow`. No cap unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_m: Option<f32>,
}

/// `[tenants.<id>.groups.<name>]`: an attendance group.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    /// `"fixed"` (the same slots on fixed weekdays), `"shift"` (a rotation
    /// of shifts) or `"free"` (no fixed hours).
    pub schedule: String,
    /// Fixed: the workdays, e.g. `["mon", "tue", "wed", "thu", "fri"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workdays: Vec<String>,
    /// Fixed: the day's slots, e.g. `[{ name = "day", start = "09:00", end = "18:00" }]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<RawSlot>,
    /// Shift: the shifts worked; an end at or before the start ends on the
    /// next day (`start = "22:00", end = "06:00"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shifts: Vec<RawSlot>,
    /// Shift: one entry per day of the cycle, a shift name or `"rest"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotation: Vec<String>,
    /// Shift: the date (`YYYY-MM-DD`) the rotation's first entry applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_start: Option<String>,
    /// Minutes after a slot's start that a clock-in is still on time
    /// (inclusive: with 10, a 09:00 start accepts 09:10).
    ///
    /// `0` unless set.
    #[serde(default)]
    pub late_grace_min: u32,
    /// Minutes before a slot's end that a clock-out is still on time.
    ///
    /// `0` unless set.
    #[serde(default)]
    pub early_grace_min: u32,
    /// Whether the tenant's holiday calendars apply (holidays off, make-up
    /// workdays on).
    ///
    /// `true` for fixed schedules, `false` for shifts, unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observe_holidays: Option<bool>,
    /// Dual verification for this group's employees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual: Option<RawDual>,
    /// Minutes before a slot's start from which a clock-in counts for that
    /// slot (never before the previous slot's end); earlier clock-ins are
    /// outside every window (label `<date>/outside`). 0 to 720.
    ///
    /// `240` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_before_min: Option<u32>,
    /// Minutes after a slot's end until which a clock-out counts for that
    /// slot (never after the next slot's start). 0 to 720.
    ///
    /// `720` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_after_min: Option<u32>,
    /// A clock-in this many minutes or more after its slot's start is still
    /// `late` on the record but counts as a missing clock-in in the day
    /// results (DingTalk's 旷工迟到). 1 to 720.
    ///
    /// Off (only late) unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_missing_min: Option<u32>,
    /// Minutes after the day's last slot ends (after midnight on a day
    /// without slots) at which the day's results close: missing punches and
    /// absences become final. A punch that arrives later (an offline
    /// upload) still reopens and recomputes the day. 0 to 2880.
    ///
    /// `out_after_min` unless set (when no clock-out can count any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_after_min: Option<u32>,
    /// Make-up punch (补卡) policy: how far back, how many a month, and
    /// whether evidence is required by when.
    ///
    /// The defaults of [`RawCorrections`] unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrections: Option<RawCorrections>,
}

/// `[tenants.<id>.groups.<name>.corrections]`: the group's make-up punch
/// policy (docs/ATTENDANCE.md, "Make-up punches").
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCorrections {
    /// How many days before today (in the tenant's zone) a slot may still
    /// be made up; 0 allows today's slots only. 0 to 366.
    ///
    /// `30` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_back: Option<u32>,
    /// Make-up requests per employee per calendar month (the month of the
    /// day made up); pending and approved requests count, rejected and
    /// lapsed ones do not. 0 turns make-ups off for the group. 0 to 100.
    ///
    /// `5` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_quota: Option<u32>,
    /// `"none"` (evidence is refused), `"optional"` or `"required"` (a
    /// request without it lapses unless it is attached within
    /// `evidence_within_h`).
    ///
    /// `"optional"` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// With `evidence = "required"`: hours after the request within which
    /// the evidence must be attached, else the request lapses (fractions
    /// allowed, e.g. 1.5). Above 0, at most 720.
    ///
    /// `24` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_within_h: Option<f64>,
}

/// A slot or shift.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlot {
    /// Name written into the record's slot label (`2025-03-04/<name>`).
    pub name: String,
    /// Start, `HH:MM` local time.
    pub start: String,
    /// End, `HH:MM` local time.
    pub end: String,
}

/// `dual = { first = "gps", second = "fingerprint", within_min = 15 }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDual {
    /// The first factor: `gps`, `wifi`, `qr`, `terminal`, `face`,
    /// `fingerprint` or `nfc`.
    pub first: String,
    /// The factor that completes it.
    pub second: String,
    /// Longest gap in minutes; a second factor later than this after the
    /// first, or without one, is flagged `DualVerificationGap`.
    pub within_min: u32,
}

/// `[tenants.<id>.departments.<name>]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDepartment {
    /// Employee id of the supervisor who approves the department's
    /// exceptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<String>,
}

/// `[tenants.<id>.employees.<employee id>]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmployee {
    /// Attendance group (the tenant's `default_group` unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Supervisor (the department's unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<String>,
    /// Device ids bound to the employee; punches from any other device
    /// (except trusted terminals) are flagged `UnusualDevice`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

/// `[tenants.<id>.sites.<name>]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    /// BSSIDs (access point MAC addresses, `aa:bb:cc:dd:ee:ff`) of the site.
    /// An SSID alone is never trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wifi: Vec<String>,
    /// Whether the site shows rotating QR codes (`fencegate qr --site`,
    /// `GET /v1/qr/<site>`).
    #[serde(default)]
    pub qr: bool,
    /// Device ids of trusted terminals (face, fingerprint, NFC) at the site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terminals: Vec<String>,
}

/// Gets (or first creates) the QR key of a tenant's site.
pub type QrKeySource<'a> = dyn FnMut(&str, &str) -> Result<[u8; 32], String> + 'a;

/// What compiling needs from outside the text: the operator's holiday
/// calendars, and the QR key of a site.
pub struct CompileContext<'a> {
    /// The calendars tenants may name (see [`Calendars`]).
    pub calendars: Calendars,
    /// Node-wide settings.
    pub settings: AttendanceSettings,
    /// Returns the QR key of a tenant's site (loading or creating it).
    pub qr_key: &'a mut QrKeySource<'a>,
}

impl fmt::Debug for CompileContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompileContext")
            .field("calendars", &self.calendars.names().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Parses rules text; `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<RawRules, RulesErrors> {
    toml::from_str(text).map_err(|e| RulesErrors {
        source: source.into(),
        problems: vec![e.to_string().trim_end().replace('\n', "\n    ")],
    })
}

/// Parses and compiles rules text.
pub fn compile_text(
    text: &str,
    source: &str,
    known_tenants: &[&str],
    ctx: &mut CompileContext<'_>,
) -> Result<Rules, RulesErrors> {
    let raw = parse(text, source)?;
    compile(&raw, source, known_tenants, ctx)
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn parse_hhmm(s: &str) -> Option<i32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
}

fn parse_factor(s: &str) -> Option<Factor> {
    Some(match s {
        "gps" => Factor::Gps,
        "wifi" => Factor::Wifi,
        "qr" => Factor::Qr,
        "terminal" => Factor::Terminal,
        "face" => Factor::Face,
        "fingerprint" => Factor::Fingerprint,
        "nfc" => Factor::Nfc,
        _ => return None,
    })
}

/// Parses `aa:bb:cc:dd:ee:ff` (or `-` separated).
pub fn parse_bssid(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for o in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn compile_slots(raw: &[RawSlot], at: &str, p: &mut Vec<String>) -> Vec<Slot> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, s) in raw.iter().enumerate() {
        let here = format!("{at}[{i}] ('{}')", s.name);
        if !valid_name(&s.name) || s.name.len() > 32 {
            p.push(format!(
                "{here}: name must be 1 to 32 characters of a-z, 0-9, '-' or '_'"
            ));
        }
        if !names.insert(s.name.as_str()) {
            p.push(format!(
                "{here}: the name appears twice; give each slot its own name"
            ));
        }
        let start = parse_hhmm(&s.start);
        let end = parse_hhmm(&s.end);
        if start.is_none() {
            p.push(format!(
                "{here}: start {:?} is not a time; write it as HH:MM, e.g. \"09:00\"",
                s.start
            ));
        }
        if end.is_none() {
            p.push(format!(
                "{here}: end {:?} is not a time; write it as HH:MM, e.g. \"18:00\"",
                s.end
            ));
        }
        if let (Some(a), Some(b)) = (start, end) {
            if a == b {
                p.push(format!(
                    "{here}: start and end are both {}; a slot needs a length",
                    s.start
                ));
            }
            out.push(Slot {
                name: s.name.as_str().into(),
                start_min: a,
                end_min: b,
            });
        }
    }
    out
}

fn compile_corrections(
    c: Option<&RawCorrections>,
    at: &str,
    p: &mut Vec<String>,
) -> CorrectionPolicy {
    let mut out = CorrectionPolicy::default();
    let Some(c) = c else {
        return out;
    };
    let at = format!("{at}.corrections");
    if let Some(d) = c.days_back {
        if d > 366 {
            p.push(format!(
                "{at}: days_back = {d} is above 366; use 0 (today's slots only) to 366"
            ));
        }
        out.days_back = d.min(366) as i32;
    }
    if let Some(q) = c.monthly_quota {
        if q > 100 {
            p.push(format!(
                "{at}: monthly_quota = {q} is above 100; use 0 (make-ups off) to 100 requests per employee and month"
            ));
        }
        out.monthly_quota = q.min(100);
    }
    out.evidence = match c.evidence.as_deref() {
        None | Some("optional") => EvidencePolicy::Optional,
        Some("none") => EvidencePolicy::None,
        Some("required") => EvidencePolicy::Required,
        Some(other) => {
            p.push(format!(
                "{at}: evidence = {other:?} is unknown; use \"none\", \"optional\" or \"required\""
            ));
            EvidencePolicy::Optional
        }
    };
    if let Some(h) = c.evidence_within_h {
        if !(h.is_finite() && h > 0.0 && h <= 720.0) {
            p.push(format!(
                "{at}: evidence_within_h = {h} is out of range; use a number of hours above 0 and at most 720 (30 days), e.g. 4"
            ));
        } else if out.evidence != EvidencePolicy::Required {
            p.push(format!(
                "{at}: evidence_within_h applies only to evidence = \"required\" (this group's is \"{}\"); set evidence = \"required\" or remove evidence_within_h",
                out.evidence.as_str()
            ));
        } else {
            out.evidence_within_ms = (h * 3_600_000.0).round() as i64;
        }
    }
    out
}

fn compile_group(name: &str, g: &RawGroup, at: &str, p: &mut Vec<String>) -> Group {
    let schedule = match g.schedule.as_str() {
        "fixed" => {
            if !g.shifts.is_empty() || !g.rotation.is_empty() || g.rotation_start.is_some() {
                p.push(format!(
                    "{at}: shifts, rotation and rotation_start belong to schedule = \"shift\"; a fixed schedule uses workdays and slots"
                ));
            }
            let mut workdays = [false; 7];
            if g.workdays.is_empty() {
                p.push(format!(
                    "{at}: a fixed schedule needs workdays, e.g. workdays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]"
                ));
            }
            for d in &g.workdays {
                match WEEKDAYS.iter().position(|w| w == d) {
                    Some(i) => workdays[i] = true,
                    None => p.push(format!(
                        "{at}: workday {d:?} is not one of mon, tue, wed, thu, fri, sat, sun"
                    )),
                }
            }
            let mut slots = compile_slots(&g.slots, &format!("{at}.slots"), p);
            if g.slots.is_empty() {
                p.push(format!(
                    "{at}: a fixed schedule needs slots, e.g. slots = [{{ name = \"day\", start = \"09:00\", end = \"18:00\" }}]"
                ));
            }
            slots.sort_by_key(|s| s.start_min);
            Schedule::Fixed {
                workdays,
                slots: slots.into(),
            }
        }
        "shift" => {
            if !g.slots.is_empty() || !g.workdays.is_empty() {
                p.push(format!(
                    "{at}: slots and workdays belong to schedule = \"fixed\"; a shift schedule uses shifts and rotation"
                ));
            }
            let shifts = compile_slots(&g.shifts, &format!("{at}.shifts"), p);
            if g.shifts.is_empty() {
                p.push(format!(
                    "{at}: a shift schedule needs shifts, e.g. shifts = [{{ name = \"night\", start = \"22:00\", end = \"06:00\" }}]"
                ));
            }
            if g.shifts.len() > 255 {
                p.push(format!("{at}: at most 255 shifts"));
            }
            let mut rotation = Vec::new();
            for r in &g.rotation {
                if r == "rest" {
                    rotation.push(None);
                } else if let Some(i) = shifts.iter().position(|s| &*s.name == r) {
                    rotation.push(Some(i as u8));
                } else {
                    p.push(format!(
                        "{at}: rotation entry {r:?} is neither \"rest\" nor one of the shifts"
                    ));
                }
            }
            if g.rotation.is_empty() {
                p.push(format!(
                    "{at}: a shift schedule needs a rotation, e.g. rotation = [\"night\", \"night\", \"rest\", \"rest\"]"
                ));
            }
            let anchor = match &g.rotation_start {
                Some(s) => match s.parse::<jiff::civil::Date>() {
                    Ok(d) => day_of(d),
                    Err(_) => {
                        p.push(format!(
                            "{at}: rotation_start {s:?} is not a date; write it as YYYY-MM-DD"
                        ));
                        0
                    }
                },
                None => {
                    p.push(format!(
                        "{at}: a shift schedule needs rotation_start = \"YYYY-MM-DD\", the day the rotation's first entry applies to"
                    ));
                    0
                }
            };
            if rotation.is_empty() {
                rotation.push(None);
            }
            Schedule::Shift {
                shifts: shifts.into(),
                rotation: rotation.into(),
                anchor,
            }
        }
        "free" => {
            if !g.slots.is_empty() || !g.shifts.is_empty() || !g.rotation.is_empty() {
                p.push(format!(
                    "{at}: a free schedule has no slots, shifts or rotation; remove them, or use schedule = \"fixed\" or \"shift\""
                ));
            }
            Schedule::Free
        }
        other => {
            p.push(format!(
                "{at}: schedule {other:?} is unknown; use \"fixed\", \"shift\" or \"free\""
            ));
            Schedule::Free
        }
    };
    for (v, field) in [
        (g.late_grace_min, "late_grace_min"),
        (g.early_grace_min, "early_grace_min"),
    ] {
        if v > 240 {
            p.push(format!(
                "{at}: {field} = {v} is above 240 minutes; grace is for minutes, not hours"
            ));
        }
    }
    let dual = g.dual.as_ref().and_then(|d| {
        let first = parse_factor(&d.first);
        let second = parse_factor(&d.second);
        for (f, v, field) in [(first, &d.first, "first"), (second, &d.second, "second")] {
            if f.is_none() {
                p.push(format!(
                    "{at}.dual: {field} = {v:?} is not a factor; use gps, wifi, qr, terminal, face, fingerprint or nfc"
                ));
            }
        }
        if !(1..=720).contains(&d.within_min) {
            p.push(format!(
                "{at}.dual: within_min = {} is out of range; use 1 to 720",
                d.within_min
            ));
        }
        if first.is_some() && first == second {
            p.push(format!(
                "{at}.dual: first and second are the same factor; dual verification needs two"
            ));
        }
        Some(DualRule {
            first: first?,
            second: second?,
            within_ms: i64::from(d.within_min) * 60_000,
        })
    });
    let observe_holidays = g
        .observe_holidays
        .unwrap_or(matches!(schedule, Schedule::Fixed { .. }));
    for (v, field) in [
        (g.in_before_min, "in_before_min"),
        (g.out_after_min, "out_after_min"),
    ] {
        if v.is_some_and(|v| v > 720) {
            p.push(format!(
                "{at}: {field} = {} is above 720; a punch window reaches at most 12 hours past its slot",
                v.unwrap_or(0)
            ));
        }
    }
    if g.close_after_min.is_some_and(|v| v > 2880) {
        p.push(format!(
            "{at}: close_after_min = {} is above 2880 (two days); results close at most two days after the last slot",
            g.close_after_min.unwrap_or(0)
        ));
    }
    if let Some(v) = g.late_missing_min {
        if !(1..=720).contains(&v) {
            p.push(format!(
                "{at}: late_missing_min = {v} is out of range; use 1 to 720, or leave it out to count every late clock-in as late"
            ));
        }
    }
    Group {
        name: name.into(),
        time: TimeRules {
            schedule,
            late_grace_min: g.late_grace_min as i32,
            early_grace_min: g.early_grace_min as i32,
            observe_holidays,
            in_before_min: g
                .in_before_min
                .map_or(super::schedule::DEFAULT_IN_BEFORE_MIN, |v| {
                    v.min(720) as i32
                }),
            out_after_min: g
                .out_after_min
                .map_or(super::schedule::DEFAULT_OUT_AFTER_MIN, |v| {
                    v.min(720) as i32
                }),
            late_missing_min: g.late_missing_min.map(|v| v.min(720) as i32),
            close_after_min: g.close_after_min.map_or(
                g.out_after_min
                    .map_or(super::schedule::DEFAULT_OUT_AFTER_MIN, |v| {
                        v.min(720) as i32
                    }),
                |v| v.min(2880) as i32,
            ),
        },
        dual,
        corrections: compile_corrections(g.corrections.as_ref(), at, p),
    }
}

fn compile_tenant(
    id: &str,
    t: &RawTenantRules,
    ctx: &mut CompileContext<'_>,
    p: &mut Vec<String>,
) -> TenantRules {
    let at = format!("tenants.{id}");
    let mut out = TenantRules::unconfigured(id);
    match TimeZoneDatabase::bundled().get(&t.timezone) {
        Ok(tz) => {
            out.tz_table = super::schedule::TzTable::new(&tz);
            out.tz = tz;
        }
        Err(_) => p.push(format!(
            "{at}: timezone {:?} is not an IANA time zone; write it like \"Asia/Shanghai\" or \"Europe/Berlin\"",
            t.timezone
        )),
    }
    for name in &t.holidays {
        let mut local = Vec::new();
        if let Some(h) = ctx.calendars.get(name, &mut local) {
            out.holidays.merge(h);
        }
        p.extend(local.into_iter().map(|e| format!("{at}.holidays: {e}")));
    }
    if let Some(d) = &t.holiday_dates {
        let h = Holidays::from_lists(&d.off, &d.workdays, &format!("{at}.holiday_dates"), p);
        out.holidays.merge(&h);
    }
    out.out_of_range = match t.out_of_range.as_deref() {
        None | Some("approval") => OutOfRangePolicy::Approval,
        Some("reject") => OutOfRangePolicy::Reject,
        Some("field") => OutOfRangePolicy::Field,
        Some(other) => {
            p.push(format!(
                "{at}: out_of_range = {other:?} is unknown; use \"reject\", \"field\" or \"approval\""
            ));
            OutOfRangePolicy::Approval
        }
    };
    if let Some(a) = &t.accuracy {
        if let Some(m) = a.max_m {
            if !(m.is_finite() && m > 0.0) {
                p.push(format!(
                    "{at}.accuracy: max_m = {m} must be a positive number of metres"
                ));
            }
        }
        out.accuracy = match a.policy.as_str() {
            "tolerant" => AccuracyPolicy::Tolerant { max_m: a.max_m },
            "strict" => AccuracyPolicy::Strict { max_m: a.max_m },
            other => {
                p.push(format!(
                    "{at}.accuracy: policy {other:?} is unknown; use \"tolerant\" or \"strict\""
                ));
                AccuracyPolicy::Tolerant { max_m: a.max_m }
            }
        };
    }
    if t.min_interval_min > 720 {
        p.push(format!(
            "{at}: min_interval_min = {} is above 720 (12 hours); use 0 (off) to 720",
            t.min_interval_min
        ));
    }
    out.min_interval_ms = i64::from(t.min_interval_min) * 60_000;
    if let Some(kmh) = t.impossible_speed_kmh {
        if !(kmh.is_finite() && kmh >= 0.0) {
            p.push(format!(
                "{at}: impossible_speed_kmh = {kmh} must be 0 (off) or a positive speed"
            ));
        } else {
            out.impossible_speed_mps = kmh / 3.6;
        }
    }

    if let Some(m) = t.evidence_max_distance_m {
        if !(m.is_finite() && m >= 0.0) {
            p.push(format!(
                "{at}: evidence_max_distance_m = {m} must be 0 (off) or a positive number of metres"
            ));
        } else {
            out.evidence_max_distance_m = m;
        }
    }

    // Groups.
    out.groups.clear();
    let mut group_index: FastMap<&str, u16> = FastMap::default();
    for (name, g) in &t.groups {
        let gat = format!("{at}.groups.{name}");
        if !valid_name(name) {
            p.push(format!(
                "{gat}: the name must be 1 to 64 characters of a-z, 0-9, '-' or '_'"
            ));
        }
        group_index.insert(name, out.groups.len() as u16);
        out.groups.push(compile_group(name, g, &gat, p));
    }
    if t.groups.len() > usize::from(u16::MAX) {
        p.push(format!("{at}: at most 65535 groups"));
    }
    match (&t.default_group, t.groups.is_empty()) {
        (None, true) => {
            out.groups.push(TenantRules::unconfigured(id).groups.remove(0));
            out.default_group = 0;
        }
        (None, false) => p.push(format!(
            "{at}: default_group is missing; name the group for employees not listed, e.g. default_group = \"{}\"",
            t.groups.keys().next().map_or("office", String::as_str)
        )),
        (Some(g), _) => match group_index.get(g.as_str()) {
            Some(&i) => out.default_group = i,
            None => p.push(format!(
                "{at}: default_group {g:?} is not one of the groups defined under [{at}.groups]"
            )),
        },
    }
    if out.groups.is_empty() {
        out.groups
            .push(TenantRules::unconfigured(id).groups.remove(0));
    }

    // Departments and employees.
    for (name, d) in &t.departments {
        if name.is_empty() || name.len() > 64 {
            p.push(format!(
                "{at}.departments: name {name:?} must be 1 to 64 characters"
            ));
        }
        if let Some(s) = &d.supervisor {
            if s.is_empty() || s.len() > 128 {
                p.push(format!(
                    "{at}.departments.{name}: supervisor must be an employee id of 1 to 128 bytes"
                ));
            }
        }
    }
    // Department and supervisor names are shared by many employees: one
    // allocation each, and records point at it.
    let mut interned: FastMap<String, Arc<str>> = FastMap::default();
    let mut intern = |s: &str| -> Arc<str> {
        interned
            .entry(s.to_owned())
            .or_insert_with(|| s.into())
            .clone()
    };
    for (eid, e) in &t.employees {
        let eat = format!("{at}.employees.{eid:?}");
        if eid.is_empty() || eid.len() > 128 {
            p.push(format!("{eat}: an employee id is 1 to 128 bytes"));
        }
        let group = match &e.group {
            Some(g) => match group_index.get(g.as_str()) {
                Some(&i) => i,
                None => {
                    p.push(format!(
                        "{eat}: group {g:?} is not defined under [{at}.groups]"
                    ));
                    out.default_group
                }
            },
            None => out.default_group,
        };
        let dept = e.department.as_deref();
        if let Some(d) = dept {
            if !t.departments.contains_key(d) {
                p.push(format!(
                    "{eat}: department {d:?} is not defined under [{at}.departments]"
                ));
            }
        }
        let supervisor = e.supervisor.as_deref().or_else(|| {
            dept.and_then(|d| t.departments.get(d))
                .and_then(|d| d.supervisor.as_deref())
        });
        for d in &e.devices {
            if d.is_empty() || d.len() > 128 {
                p.push(format!("{eat}: device id {d:?} must be 1 to 128 bytes"));
            }
        }
        out.employees.insert(
            eid.as_str().into(),
            Employee {
                group,
                department: dept.map(&mut intern),
                supervisor: supervisor.map(&mut intern),
                devices: e.devices.iter().map(|d| d.as_str().into()).collect(),
            },
        );
    }

    // Sites: Wi-Fi, QR, terminals.
    let mut bssid_owner: FastMap<u64, &str> = FastMap::default();
    for (name, s) in &t.sites {
        let sat = format!("{at}.sites.{name}");
        if !valid_name(name) {
            p.push(format!(
                "{sat}: the name must be 1 to 64 characters of a-z, 0-9, '-' or '_' (it appears in QR codes)"
            ));
        }
        let idx = out.sites.len() as u16;
        for b in &s.wifi {
            match parse_bssid(b) {
                Some(bytes) => {
                    let k = bssid_key(bytes);
                    if let Some(other) = bssid_owner.insert(k, name) {
                        p.push(format!(
                            "{sat}: BSSID {b} is also registered for site '{other}'; an access point belongs to one site"
                        ));
                    }
                    out.wifi.insert(k, idx);
                }
                None => p.push(format!(
                    "{sat}: wifi entry {b:?} is not a BSSID; write the access point's MAC as aa:bb:cc:dd:ee:ff"
                )),
            }
        }
        for term in &s.terminals {
            if term.is_empty() || term.len() > 128 {
                p.push(format!(
                    "{sat}: terminal id {term:?} must be 1 to 128 bytes"
                ));
            }
            if out.terminals.insert(term.as_str().into(), idx).is_some() {
                p.push(format!(
                    "{sat}: terminal {term:?} is bound to more than one site; list it under one site only"
                ));
            }
        }
        // The ids become a key path under the data directory: only valid ones
        // (an invalid tenant id is already reported above or by `compile`).
        let qr = if s.qr && valid_name(name) && crate::config::valid_tenant_id(id) {
            match (ctx.qr_key)(id, name) {
                Ok(k) => Some(QrKeyed(QrKey::new(&k))),
                Err(e) => {
                    p.push(format!("{sat}: QR key: {e}"));
                    None
                }
            }
        } else {
            None
        };
        out.sites.push(Site {
            name: name.as_str().into(),
            tag: xxhash_rust::xxh3::xxh3_64(name.as_bytes()),
            qr,
        });
    }
    if t.sites.len() > usize::from(u16::MAX) {
        p.push(format!("{at}: at most 65535 sites"));
    }
    out
}

/// Compiles raw rules, collecting every problem. `known_tenants` are the
/// tenants the node serves: a section for any other tenant is a mistake.
pub fn compile(
    raw: &RawRules,
    source: &str,
    known_tenants: &[&str],
    ctx: &mut CompileContext<'_>,
) -> Result<Rules, RulesErrors> {
    let mut p = Vec::new();
    let mut tenants = Vec::new();
    for (id, t) in &raw.tenants {
        if !known_tenants.is_empty() && !known_tenants.contains(&id.as_str()) {
            p.push(format!(
                "tenants.{id}: this node serves no tenant '{id}' (it serves {}); add a [[tenants]] block to fencegate.toml or remove the section",
                known_tenants.join(", ")
            ));
        }
        tenants.push(compile_tenant(id, t, ctx, &mut p));
    }
    if !p.is_empty() {
        return Err(RulesErrors {
            source: source.into(),
            problems: p,
        });
    }
    Ok(Rules::new(tenants, ctx.settings.clone()))
}

/// The folder a rules file is in (its default calendar folder is
/// `holidays/` there).
pub fn base_dir_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A QR key source for compiling without a data directory (checks, tests):
/// every site gets a key derived from a fixed seed and its names.
pub fn fixed_qr_keys(seed: u8) -> impl FnMut(&str, &str) -> Result<[u8; 32], String> {
    move |tenant, site| {
        let mut k = [seed; 32];
        let h = xxhash_rust::xxh3::xxh3_128(format!("{tenant}/{site}").as_bytes()).to_le_bytes();
        k[..16].copy_from_slice(&h);
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_str(text: &str) -> Result<Rules, RulesErrors> {
        let mut keys = fixed_qr_keys(1);
        let mut ctx = CompileContext {
            calendars: Calendars::default(),
            settings: AttendanceSettings::default(),
            qr_key: &mut keys,
        };
        compile_text(text, "t.toml", &["acme", "globex"], &mut ctx)
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = compile_str(
            r#"
            [tenants.acme]
            timezone = "Mars/Olympus"
            out_of_range = "maybe"
            default_group = "nope"
            [tenants.acme.groups.office]
            schedule = "fixed"
            workdays = ["mon", "funday"]
            slots = [{ name = "day", start = "9am", end = "18:00" }]
            [tenants.acme.groups.guards]
            schedule = "shift"
            shifts = [{ name = "night", start = "22:00", end = "06:00" }]
            rotation = ["night", "day"]
            [tenants.acme.employees.e1]
            group = "ghosts"
            department = "nowhere"
            [tenants.acme.sites.hq]
            wifi = ["not-a-mac"]
            [tenants.initech]
            timezone = "UTC"
            "#,
        )
        .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "Mars/Olympus",
            "out_of_range",
            "default_group \"nope\"",
            "funday",
            "9am",
            "\"day\" is neither",
            "rotation_start",
            "group \"ghosts\"",
            "department \"nowhere\"",
            "not-a-mac",
            "no tenant 'initech'",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn correction_policies_compile_with_defaults_and_name_every_mistake() {
        let rules = compile_str(
            r#"
            [tenants.acme]
            timezone = "Asia/Shanghai"
            default_group = "office"
            [tenants.acme.groups.office]
            schedule = "fixed"
            workdays = ["mon"]
            slots = [{ name = "day", start = "09:00", end = "18:00" }]
            [tenants.acme.groups.travel]
            schedule = "fixed"
            workdays = ["mon"]
            slots = [{ name = "day", start = "09:00", end = "18:00" }]
            [tenants.acme.groups.travel.corrections]
            days_back = 7
            monthly_quota = 2
            evidence = "required"
            evidence_within_h = 4
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let acme = rules.tenant("acme");
        let by_name = |n: &str| {
            acme.groups
                .iter()
                .find(|g| &*g.name == n)
                .unwrap()
                .corrections
        };
        assert_eq!(by_name("office"), CorrectionPolicy::default());
        assert_eq!(
            by_name("travel"),
            CorrectionPolicy {
                days_back: 7,
                monthly_quota: 2,
                evidence: EvidencePolicy::Required,
                evidence_within_ms: 4 * 3_600_000,
            }
        );

        let err = compile_str(
            r#"
            [tenants.acme]
            timezone = "UTC"
            default_group = "a"
            [tenants.acme.groups.a]
            schedule = "free"
            [tenants.acme.groups.a.corrections]
            days_back = 400
            monthly_quota = 101
            evidence = "maybe"
            [tenants.acme.groups.b]
            schedule = "free"
            [tenants.acme.groups.b.corrections]
            evidence_within_h = 4
            [tenants.acme.groups.c]
            schedule = "free"
            [tenants.acme.groups.c.corrections]
            evidence = "required"
            evidence_within_h = 0
            "#,
        )
        .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "tenants.acme.groups.a.corrections: days_back = 400 is above 366; use 0",
            "tenants.acme.groups.a.corrections: monthly_quota = 101",
            "tenants.acme.groups.a.corrections: evidence = \"maybe\" is unknown",
            "tenants.acme.groups.b.corrections: evidence_within_h applies only to evidence = \"required\"",
            "tenants.acme.groups.c.corrections: evidence_within_h = 0 is out of range",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(err.problems.len(), 5, "{all}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = compile_str("[tenants.acme]\ntimezone = \"UTC\"\ngrace = 5\n").unwrap_err();
        assert!(err.to_string().contains("grace"), "{err}");
    }

    #[test]
    fn bssids_parse_in_both_notations() {
        assert_eq!(
            parse_bssid("ac:84:c6:01:02:0f"),
            Some([0xac, 0x84, 0xc6, 1, 2, 0x0f])
        );
        assert_eq!(
            parse_bssid("AC-84-C6-01-02-0F"),
            Some([0xac, 0x84, 0xc6, 1, 2, 0x0f])
        );
        assert_eq!(parse_bssid("ac:84:c6:01:02"), None);
        assert_eq!(parse_bssid("ac:84:c6:01:02:03:04"), None);
    }

    #[test]
    fn the_example_rules_file_compiles() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut keys = fixed_qr_keys(1);
        let mut ctx = CompileContext {
            calendars: Calendars::load(&base_dir_of(&path).join("holidays")),
            settings: AttendanceSettings::default(),
            qr_key: &mut keys,
        };
        let rules = compile_text(&text, "config/rules.toml", &["acme", "globex"], &mut ctx)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(rules.has_tenant("acme") && rules.has_tenant("globex"));
        let acme = rules.tenant("acme");
        assert!(acme.holidays.len().0 > 20, "the China calendar is loaded");
        assert!(acme.holidays.len().1 > 3, "with its make-up workdays");
    }
}
