//! The per-punch decision: how (method evidence), where (fence, Wi-Fi, QR
//! or terminal site) and when (schedule) an employee punched, against the
//! tenant's rules. Pure and allocation-free: the pipeline hands in the time,
//! the punch, the outcome of the GPS lookup and a reusable label buffer.
//!
//! The first failing check decides the reason, in this order: offline punch
//! too old; the method's evidence (untrusted terminal, unknown Wi-Fi,
//! invalid or expired QR code, GPS accuracy); the out-of-range policy. QR
//! replays are caught by the pipeline afterwards, because they need its
//! memory of used codes.

use fencegate_schema::{
    AttendanceStatus, PunchKind, PunchMethod, PunchView, Reason, Verdict, anomaly,
};

use super::qr;
use super::schedule::Timing;
use super::{AccuracyPolicy, AttendanceSettings, Employee, Group, OutOfRangePolicy, TenantRules};

/// The outcome of the GPS lookup, computed by the pipeline with the fence
/// index according to [`TenantRules::accuracy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The punch carries no position, or its method does not rely on one.
    NotUsed,
    /// Inside a fence of the tenant.
    Inside,
    /// Outside every fence of the tenant.
    Outside,
    /// The tenant has no fences.
    NoFences,
    /// Strict policy: the accuracy disc crosses a fence edge.
    Uncertain,
    /// The accuracy radius is above the tenant's cap (not looked up).
    TooInaccurate,
}

/// What [`judge`] decided.
#[derive(Debug, Clone, Copy)]
pub struct Judgement<'r> {
    /// The verdict (before repeat merging and QR replay checks).
    pub verdict: Verdict,
    /// Why, for anything but a plain accept.
    pub reason: Reason,
    /// The attendance status.
    pub status: AttendanceStatus,
    /// Anomaly flags found without memory (mock location, offline, clock
    /// skew, unusual device).
    pub flags: u64,
    /// The time the rules judged by: the device time of an offline punch
    /// within the window, the gateway time otherwise.
    pub at_ms: i64,
    /// Index of the site the method's evidence names (Wi-Fi, QR, terminal).
    pub site: Option<u16>,
    /// The employee's entry in the rules, if listed.
    pub employee: Option<&'r Employee>,
    /// The group whose schedule judged the punch.
    pub group: &'r Group,
    /// For a valid QR code: its site tag and step, for replay protection.
    pub qr_use: Option<(u64, i64)>,
    /// The schedule's verdict on the time (absent for rejected punches).
    pub timing: Option<Timing>,
    /// The record waits for the supervisor's approval.
    pub needs_approval: bool,
}

impl Judgement<'_> {
    /// Whether the punch was refused by the rules (recorded as `Rejected`).
    pub fn rejected(&self) -> bool {
        self.verdict == Verdict::Rejected
    }
}

fn reject<'r>(mut j: Judgement<'r>, reason: Reason) -> Judgement<'r> {
    j.verdict = Verdict::Rejected;
    j.reason = reason;
    j.status = AttendanceStatus::Rejected;
    j.needs_approval = false;
    j
}

/// Judges one punch from `device` of `tenant` at gateway time `now_ms`.
/// `location` is the GPS lookup's outcome (see [`Location`]); the slot
/// label (`2025-03-04/day`) is written into `label` (cleared when there is
/// none).
pub fn judge<'r>(
    now_ms: i64,
    settings: &AttendanceSettings,
    tenant: &'r TenantRules,
    device: &str,
    punch: &PunchView<'_>,
    location: Location,
    label: &mut String,
) -> Judgement<'r> {
    label.clear();
    let employee = tenant.employee(punch.employee_id());
    let group = tenant.group_of(employee);
    let mut flags = 0;
    if punch.mock_location() {
        flags |= anomaly::MOCK_LOCATION;
    }
    let device_time = punch.device_time_ms();
    let offline = punch.offline();
    if offline {
        flags |= anomaly::OFFLINE;
        // An offline punch cannot have been taken after it was uploaded.
        if device_time > now_ms {
            flags |= anomaly::CLOCK_SKEW;
        }
    } else if (now_ms - device_time).abs() > settings.clock_skew_ms {
        flags |= anomaly::CLOCK_SKEW;
    }
    // The terminal registry is only consulted when it can matter: for a
    // terminal punch, or to exempt a terminal from the unusual-device flag.
    if let Some(e) = employee {
        if !e.devices.is_empty()
            && !e.devices.iter().any(|d| &**d == device)
            && tenant.terminal_site(device).is_none()
        {
            flags |= anomaly::UNUSUAL_DEVICE;
        }
    }
    let mut j = Judgement {
        verdict: Verdict::Accepted,
        reason: Reason::None,
        status: AttendanceStatus::Normal,
        flags,
        at_ms: now_ms,
        site: None,
        employee,
        group,
        qr_use: None,
        timing: None,
        needs_approval: false,
    };

    // When: an offline punch is judged by its device time, within the window.
    if offline {
        if now_ms - device_time > settings.offline_window_ms {
            return reject(j, Reason::OfflineTooOld);
        }
        j.at_ms = device_time.min(now_ms);
    }

    // How: the method's evidence.
    match punch.method() {
        PunchMethod::Terminal => match tenant.terminal_site(device) {
            Some(s) => j.site = Some(s),
            None => return reject(j, Reason::TerminalUntrusted),
        },
        PunchMethod::Wifi => match tenant.wifi_site(punch.bssids()) {
            Some(s) => j.site = Some(s),
            None => return reject(j, Reason::WifiUnknown),
        },
        PunchMethod::Qr => {
            let payload = punch.qr_payload().unwrap_or("");
            match check_qr(tenant, settings, payload, j.at_ms) {
                Ok((site, step)) => {
                    j.site = Some(site);
                    j.qr_use = Some((tenant.sites[usize::from(site)].tag, step));
                }
                Err(r) => return reject(j, r),
            }
        }
        _ => {}
    }

    // Where: a GPS punch's fence, by the tenant's policies.
    match location {
        Location::NotUsed | Location::Inside => {}
        Location::TooInaccurate | Location::Uncertain => {
            return reject(j, Reason::AccuracyTooLow);
        }
        Location::Outside | Location::NoFences => {
            let reason = if location == Location::NoFences {
                Reason::NoFences
            } else {
                Reason::OutOfRange
            };
            match tenant.out_of_range {
                OutOfRangePolicy::Reject => return reject(j, reason),
                OutOfRangePolicy::Field => {
                    j.reason = reason;
                    j.status = AttendanceStatus::Field;
                }
                OutOfRangePolicy::Approval => {
                    j.verdict = Verdict::OutOfRange;
                    j.reason = reason;
                    j.status = AttendanceStatus::OutOfRangePendingApproval;
                    j.needs_approval = true;
                }
            }
        }
    }

    // When: the schedule. Field and pending punches keep their status but
    // still get their slot.
    let timing = group.time.judge(
        &tenant.tz,
        &tenant.tz_table,
        &tenant.holidays,
        punch.kind(),
        j.at_ms,
    );
    group.time.write_label(&timing, label);
    if j.status == AttendanceStatus::Normal {
        j.status = timing.status;
    }
    j.timing = Some(timing);
    j
}

/// Verifies a scanned QR payload at `at_ms`: the site must be one of the
/// tenant's QR sites, the tag its key's, and the step current (or at most
/// `qr_skew_steps` old).
pub fn check_qr(
    tenant: &TenantRules,
    settings: &AttendanceSettings,
    payload: &str,
    at_ms: i64,
) -> Result<(u16, i64), Reason> {
    let code = qr::parse(payload).ok_or(Reason::QrInvalid)?;
    let (idx, key) = tenant
        .sites
        .iter()
        .enumerate()
        .find_map(|(i, s)| (&*s.name == code.site).then_some((i, s.qr.as_ref()?)))
        .ok_or(Reason::QrInvalid)?;
    if !qr::tags_equal(&key.0.tag(&tenant.id, code.site, code.step), &code.tag) {
        return Err(Reason::QrInvalid);
    }
    let now_step = qr::step_of(at_ms, settings.qr_step_ms);
    if code.step > now_step {
        // Signed by our key but not shown yet: nobody scanned that honestly.
        return Err(Reason::QrInvalid);
    }
    if code.step < now_step - settings.qr_skew_steps {
        return Err(Reason::QrExpired);
    }
    Ok((idx as u16, code.step))
}

/// How the pipeline looks up a GPS punch under `policy`: whether to look up
/// at all (a radius above the cap is refused without a lookup), and whether
/// the strict accuracy-aware classification is needed.
pub fn gps_lookup(policy: AccuracyPolicy, method: PunchMethod, accuracy_m: f32) -> GpsLookup {
    if method != PunchMethod::Gps {
        return GpsLookup::Informational;
    }
    let (max, strict) = match policy {
        AccuracyPolicy::Tolerant { max_m } => (max_m, false),
        AccuracyPolicy::Strict { max_m } => (max_m, true),
    };
    if max.is_some_and(|m| accuracy_m > m) {
        return GpsLookup::TooInaccurate;
    }
    if strict {
        GpsLookup::Strict
    } else {
        GpsLookup::Point
    }
}

/// See [`gps_lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpsLookup {
    /// Not a GPS punch: a position, if any, is looked up for the record only.
    Informational,
    /// Refused as `AccuracyTooLow` without a lookup.
    TooInaccurate,
    /// The point decides.
    Point,
    /// The accuracy disc must be wholly inside or outside.
    Strict,
}

/// Whether the GPS position a Wi-Fi, QR or terminal punch carried
/// disagrees with the site its evidence verified (`EvidenceMismatch`).
/// `located` is the position's lookup in the tenant's fences (before the
/// pipeline discards it as informational), `at_site` whether any fence
/// containing it belongs to the verified site, `distance_m` the distance to
/// the tenant's nearest fence when outside all of them.
///
/// Outside every fence, the distance to the tenant's *nearest* fence is a
/// lower bound of the distance to the verified site's fences, so a flag is
/// never raised for a position within the threshold of the site; inside
/// fences that all belong to other sites is a disagreement whatever the
/// distance (the position names another site). No lookup (a tenant with no
/// fences) raises nothing.
pub fn evidence_disagrees(
    tenant: &TenantRules,
    located: Location,
    at_site: bool,
    distance_m: f32,
    accuracy_m: f32,
) -> bool {
    let max = tenant.evidence_max_distance_m;
    if max <= 0.0 {
        return false;
    }
    match located {
        Location::Inside => !at_site,
        Location::Outside => f64::from(distance_m) - f64::from(accuracy_m.max(0.0)) > max,
        _ => false,
    }
}

/// Whether a punch kind is a clock-out.
pub fn is_out(kind: PunchKind) -> bool {
    kind == PunchKind::Out
}
