//! Day results: what one employee's day amounted to, from the punches the
//! log holds for them. Pure: handed the tenant's rules, the day and the
//! punches; no clock, no I/O (the results store in `crate::results` feeds
//! it and keeps the answers).
//!
//! A punch counts for the slot the schedule attributes it to
//! ([`TimeRules::judge`](super::schedule::TimeRules::judge), the same
//! windows the record was judged by), so a day result never disagrees with
//! its records. The day of a cross-midnight shift is the shift's start
//! date. Statuses, minutes and the close time are documented in
//! docs/ATTENDANCE.md ("Day results").

use fencegate_schema::{AttendanceStatus, PunchKind, Verdict};

use super::schedule::{midnight_ms, slot_instants};
use super::{Group, TenantRules};

const MINUTE_MS: i64 = 60_000;

/// A punch as day results need it, read from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayPunch {
    /// Clock-in or clock-out.
    pub kind: PunchKind,
    /// Attendance time (device time of an accepted offline punch).
    pub at_ms: i64,
    /// The record's verdict.
    pub verdict: Verdict,
    /// The record's status.
    pub status: AttendanceStatus,
    /// The record waits for a supervisor.
    pub needs_approval: bool,
    /// A supervisor's decision on it: approved (`Some(true)`) or rejected.
    pub decision: Option<bool>,
}

impl DayPunch {
    /// Whether the punch counts for attendance: accepted (field punches
    /// too), or out of range and not rejected by a supervisor. Rejected
    /// records and merged repeats never count.
    pub fn counts(&self) -> bool {
        match self.verdict {
            Verdict::Accepted => self.status != AttendanceStatus::RepeatMerged,
            Verdict::OutOfRange => self.decision != Some(false),
            _ => false,
        }
    }

    /// Whether it still waits for a decision.
    pub fn pending(&self) -> bool {
        self.needs_approval && self.decision.is_none()
    }
}

/// The status of a slot or a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DayStatus {
    /// Clocked in and out on time.
    Normal,
    /// Clocked in after the start's grace (`late_min`).
    Late,
    /// Clocked out before the end's grace (`early_min`).
    EarlyLeave,
    /// No clock-in for a slot (缺卡), or one at least `late_missing_min`
    /// late.
    MissingIn,
    /// No clock-out for a slot (缺卡).
    MissingOut,
    /// No punch at all for the slot (a day: for any slot).
    Absent,
    /// No slot that day (rotation rest, weekend, free schedule unpunched).
    RestDay,
    /// A holiday of the tenant's calendar that the group observes.
    Holiday,
    /// Covered by leave (`POST /v1/leave`): a slot that would be missing
    /// or absent on a day of an approved leave entry.
    OnLeave,
    /// Covered by a business trip (a leave entry of type `business_trip`).
    BusinessTrip,
    /// Accepted outside every fence under the `field` policy.
    Field,
    /// A punch of the slot waits for a supervisor's decision.
    PendingApproval,
}

impl DayStatus {
    /// Every status, for docs and parsing.
    pub const ALL: [DayStatus; 12] = [
        DayStatus::Normal,
        DayStatus::Late,
        DayStatus::EarlyLeave,
        DayStatus::MissingIn,
        DayStatus::MissingOut,
        DayStatus::Absent,
        DayStatus::RestDay,
        DayStatus::Holiday,
        DayStatus::OnLeave,
        DayStatus::BusinessTrip,
        DayStatus::Field,
        DayStatus::PendingApproval,
    ];

    /// The name used in the API and the results store.
    pub fn as_str(self) -> &'static str {
        match self {
            DayStatus::Normal => "normal",
            DayStatus::Late => "late",
            DayStatus::EarlyLeave => "early_leave",
            DayStatus::MissingIn => "missing_in",
            DayStatus::MissingOut => "missing_out",
            DayStatus::Absent => "absent",
            DayStatus::RestDay => "rest_day",
            DayStatus::Holiday => "holiday",
            DayStatus::OnLeave => "on_leave",
            DayStatus::BusinessTrip => "business_trip",
            DayStatus::Field => "field",
            DayStatus::PendingApproval => "pending_approval",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// How much a slot status weighs in its day's status (higher wins).
    fn weight(self) -> u8 {
        match self {
            DayStatus::MissingIn | DayStatus::Absent => 8,
            DayStatus::MissingOut => 7,
            DayStatus::PendingApproval => 6,
            DayStatus::Late => 5,
            DayStatus::EarlyLeave => 4,
            DayStatus::Field => 3,
            DayStatus::OnLeave | DayStatus::BusinessTrip => 2,
            _ => 1,
        }
    }
}

/// One slot's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotResult {
    /// Slot name.
    pub name: String,
    /// Status.
    pub status: DayStatus,
    /// Minutes late, counted from the start (0 unless late).
    pub late_min: i32,
    /// Minutes left early, counted to the end (0 unless early).
    pub early_min: i32,
    /// Minutes worked inside the slot.
    pub worked_min: i32,
    /// Minutes after the slot's end (the day's last slot only).
    pub overtime_min: i32,
    /// The earliest clock-in counted, unix ms.
    pub in_ms: Option<i64>,
    /// The latest clock-out counted, unix ms.
    pub out_ms: Option<i64>,
    /// The slot's start and end, unix ms.
    pub start_ms: i64,
    /// See `start_ms`.
    pub end_ms: i64,
}

/// One employee's day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayResult {
    /// Day number (see [`super::schedule::day_number`]) in the tenant's zone.
    pub day: i32,
    /// The day's status: rest day or holiday without slots, absent when
    /// every slot is, else the weightiest slot status (missing beats
    /// pending approval beats late beats early leave beats field).
    pub status: DayStatus,
    /// Per slot, in start order (empty on a rest day or holiday).
    pub slots: Vec<SlotResult>,
    /// Sums over the slots; on a day without slots, the time between the
    /// first clock-in and the last clock-out is worked and overtime.
    pub late_min: i32,
    /// See `late_min`.
    pub early_min: i32,
    /// See `late_min`.
    pub worked_min: i32,
    /// See `late_min`.
    pub overtime_min: i32,
    /// When the day closes (missing and absent become final), unix ms.
    pub close_ms: i64,
}

/// The day (number) a punch counts for: its slot's start date, or its own
/// date in the tenant's zone when it is in no slot.
pub fn attributed_day(tenant: &TenantRules, group: &Group, kind: PunchKind, at_ms: i64) -> i32 {
    group
        .time
        .judge(&tenant.tz, &tenant.tz_table, &tenant.holidays, kind, at_ms)
        .day
}

/// When `day`'s results close for `group`: `close_after_min` after the
/// end of its last slot, or after the midnight ending it when it has none.
pub fn close_ms(tenant: &TenantRules, group: &Group, day: i32) -> i64 {
    let t = &group.time;
    let end = t
        .slots_on(day, &tenant.holidays)
        .iter()
        .map(|s| slot_instants(&tenant.tz, &tenant.tz_table, day, s).1)
        .max()
        .unwrap_or_else(|| midnight_ms(&tenant.tz, &tenant.tz_table, day + 1));
    end + i64::from(t.close_after_min) * MINUTE_MS
}

fn minutes(ms: i64) -> i32 {
    (ms.max(0) / MINUTE_MS) as i32
}

/// What covers a day on which punches are not expected: approved leave or
/// a business trip (a leave entry of type `business_trip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    /// Leave of any other type.
    Leave,
    /// A business trip.
    BusinessTrip,
}

/// Computes `day` for an employee of `group` from their punches (any
/// order; those of other days are ignored).
pub fn compute(tenant: &TenantRules, group: &Group, day: i32, punches: &[DayPunch]) -> DayResult {
    compute_with(tenant, group, day, punches, None)
}

/// [`compute`] for a day that `cover` may cover: a slot that would be
/// missing a punch or absent is `on_leave` (or `business_trip`) instead;
/// punches that were made still count as usual.
pub fn compute_with(
    tenant: &TenantRules,
    group: &Group,
    day: i32,
    punches: &[DayPunch],
    cover: Option<Cover>,
) -> DayResult {
    let t = &group.time;
    let slots = t.slots_on(day, &tenant.holidays);
    let judged = punches.iter().filter(|p| p.counts()).map(|p| {
        let timing = t.judge(
            &tenant.tz,
            &tenant.tz_table,
            &tenant.holidays,
            p.kind,
            p.at_ms,
        );
        (p, timing)
    });
    let mut result = DayResult {
        day,
        status: DayStatus::RestDay,
        slots: Vec::with_capacity(slots.len()),
        late_min: 0,
        early_min: 0,
        worked_min: 0,
        overtime_min: 0,
        close_ms: close_ms(tenant, group, day),
    };
    if slots.is_empty() {
        // A rest day, a holiday or a free schedule: time worked is overtime
        // (free schedules: worked only).
        let mine: Vec<_> = judged.filter(|(_, tm)| tm.day == day).collect();
        let first_in = mine
            .iter()
            .filter(|(p, _)| p.kind != PunchKind::Out)
            .map(|(p, _)| p.at_ms)
            .min();
        let last_out = mine
            .iter()
            .filter(|(p, _)| p.kind == PunchKind::Out)
            .map(|(p, _)| p.at_ms)
            .max();
        if let (Some(a), Some(b)) = (first_in, last_out) {
            result.worked_min = minutes(b - a);
        }
        let free = matches!(t.schedule, super::Schedule::Free);
        if !free {
            result.overtime_min = result.worked_min;
        }
        result.status = if free && !mine.is_empty() {
            DayStatus::Normal
        } else if t.observe_holidays && tenant.holidays.is_off(day) {
            DayStatus::Holiday
        } else {
            DayStatus::RestDay
        };
        return result;
    }
    let judged: Vec<_> = judged.filter(|(_, tm)| tm.day == day).collect();
    let last = slots.len() - 1;
    for (i, slot) in slots.iter().enumerate() {
        let index = t.slot_index(day, i);
        let (start_ms, end_ms) = slot_instants(&tenant.tz, &tenant.tz_table, day, slot);
        let mine = judged.iter().filter(|(_, tm)| tm.slot == Some(index));
        let mut in_ms: Option<i64> = None;
        let mut out_ms: Option<i64> = None;
        let (mut pending, mut field) = (false, false);
        for (p, _) in mine {
            pending |= p.pending();
            field |= p.status == AttendanceStatus::Field;
            if p.kind == PunchKind::Out {
                out_ms = Some(out_ms.map_or(p.at_ms, |o| o.max(p.at_ms)));
            } else {
                in_ms = Some(in_ms.map_or(p.at_ms, |o| o.min(p.at_ms)));
            }
        }
        let mut r = SlotResult {
            name: slot.name.to_string(),
            status: DayStatus::Normal,
            late_min: 0,
            early_min: 0,
            worked_min: 0,
            overtime_min: 0,
            in_ms,
            out_ms,
            start_ms,
            end_ms,
        };
        // Grace is inclusive to the minute, as on the record.
        let late =
            in_ms.is_some_and(|a| a >= start_ms + i64::from(t.late_grace_min + 1) * MINUTE_MS);
        let early = out_ms.is_some_and(|b| b < end_ms - i64::from(t.early_grace_min) * MINUTE_MS);
        if late {
            r.late_min = minutes(in_ms.unwrap_or(start_ms) - start_ms);
        }
        if early {
            // Whole minutes short of the end, rounded up.
            let short = end_ms - out_ms.unwrap_or(end_ms);
            r.early_min = ((short + MINUTE_MS - 1) / MINUTE_MS) as i32;
        }
        if let (Some(a), Some(b)) = (in_ms, out_ms) {
            r.worked_min = minutes(b.min(end_ms) - a.max(start_ms));
        }
        if i == last {
            if let Some(b) = out_ms {
                r.overtime_min = minutes(b - end_ms);
            }
        }
        let missing_late = t
            .late_missing_min
            .zip(in_ms)
            .is_some_and(|(m, a)| a - start_ms >= i64::from(m) * MINUTE_MS);
        r.status = match (in_ms, out_ms) {
            (None, None) => DayStatus::Absent,
            (None, Some(_)) => DayStatus::MissingIn,
            _ if missing_late => DayStatus::MissingIn,
            (Some(_), None) => DayStatus::MissingOut,
            _ if pending => DayStatus::PendingApproval,
            _ if late => DayStatus::Late,
            _ if early => DayStatus::EarlyLeave,
            _ if field => DayStatus::Field,
            _ => DayStatus::Normal,
        };
        if let Some(c) = cover {
            if matches!(
                r.status,
                DayStatus::Absent | DayStatus::MissingIn | DayStatus::MissingOut
            ) {
                r.status = match c {
                    Cover::Leave => DayStatus::OnLeave,
                    Cover::BusinessTrip => DayStatus::BusinessTrip,
                };
            }
        }
        result.late_min += r.late_min;
        result.early_min += r.early_min;
        result.worked_min += r.worked_min;
        result.overtime_min += r.overtime_min;
        result.slots.push(r);
    }
    result.status = if result.slots.iter().all(|s| s.status == DayStatus::Absent) {
        DayStatus::Absent
    } else {
        let worst = result
            .slots
            .iter()
            .map(|s| s.status)
            .max_by_key(|s| s.weight())
            .unwrap_or(DayStatus::Normal);
        // A slot without any punch on a day otherwise worked is a missing
        // clock-in for the day.
        if worst == DayStatus::Absent {
            DayStatus::MissingIn
        } else {
            worst
        }
    };
    result
}
