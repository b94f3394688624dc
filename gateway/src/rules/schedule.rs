//! Schedules: which slot a punch belongs to and whether it was on time.
//!
//! A punch is judged in the tenant's time zone (jiff, with the bundled tz
//! database). The slot is chosen in civil (wall-clock) minutes, which is
//! cheap integer arithmetic; only the chosen slot's start and end are turned
//! into instants with the time zone, so lateness is measured in real time
//! even across a DST change (a 22:00–06:00 shift over the spring change is
//! seven hours long, over the autumn change nine).
//!
//! Nothing here allocates: the slot label is written into a caller's buffer.

use std::fmt::Write as _;

use fencegate_schema::{AttendanceStatus, PunchKind};
use jiff::Timestamp;
use jiff::civil::DateTime;

use jiff::tz::TimeZone;

// Calendar arithmetic lives below both schedules and holiday calendars;
// re-exported here, where callers have always found it.
pub use super::calendar::{civil_from_day, day_number, day_of};
use super::holidays::Holidays;

/// Minutes in a day.
pub const DAY_MIN: i32 = 24 * 60;
/// How long before a slot's start a clock-in counts for it, unless the
/// group sets `in_before_min` (DingTalk's example setting: 4 hours).
pub const DEFAULT_IN_BEFORE_MIN: i32 = 4 * 60;
/// How long after a slot's end a clock-out counts for it, unless the group
/// sets `out_after_min` (DingTalk's limit when none is set: 12 hours).
pub const DEFAULT_OUT_AFTER_MIN: i32 = 12 * 60;

/// One working slot: a start and an end in wall-clock minutes after
/// midnight. An end at or before the start ends on the next day
/// (a cross-midnight shift such as 22:00–06:00).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Name used in the record's slot label, e.g. `day` or `night`.
    pub name: Box<str>,
    /// Start, minutes after midnight.
    pub start_min: i32,
    /// End, minutes after midnight (on the next day when `<= start_min`).
    pub end_min: i32,
}

impl Slot {
    /// Length in wall-clock minutes.
    pub fn len_min(&self) -> i32 {
        if self.end_min > self.start_min {
            self.end_min - self.start_min
        } else {
            self.end_min + DAY_MIN - self.start_min
        }
    }
}

/// What an attendance group's days look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// The same slots on fixed weekdays (Monday = index 0), holidays off and
    /// make-up workdays on when the group observes the calendar.
    Fixed {
        /// Which weekdays are workdays, Monday first.
        workdays: [bool; 7],
        /// The day's slots, in start order.
        slots: Box<[Slot]>,
    },
    /// A rotation of shifts: day `n` after `anchor` works
    /// `rotation[n % len]`, an index into `shifts`, or rests (`None`).
    Shift {
        /// The shifts worked.
        shifts: Box<[Slot]>,
        /// One entry per day of the cycle.
        rotation: Box<[Option<u8>]>,
        /// Day number (see [`day_number`]) of the cycle's first day.
        anchor: i32,
    },
    /// No fixed hours: every punch is on time.
    Free,
}

/// How one group judges time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeRules {
    /// The days and slots.
    pub schedule: Schedule,
    /// Minutes after the start a clock-in still counts as on time.
    pub late_grace_min: i32,
    /// Minutes before the end a clock-out still counts as on time.
    pub early_grace_min: i32,
    /// Whether the tenant's holiday calendar applies (holidays off, make-up
    /// workdays on).
    pub observe_holidays: bool,
    /// Minutes before a slot's start from which a clock-in counts for it
    /// (never before the previous slot's end). At most 720.
    pub in_before_min: i32,
    /// Minutes after a slot's end until which a clock-out counts for it
    /// (never after the next slot's start). At most 720.
    pub out_after_min: i32,
    /// A clock-in this many minutes or more after its slot's start is late
    /// on the record but counts as a missing clock-in in the day results
    /// (DingTalk's 旷工迟到). `None`: it is only late.
    pub late_missing_min: Option<i32>,
    /// Minutes after the day's last slot ends at which its results close.
    pub close_after_min: i32,
}

/// Weekday of a day number, Monday = 0.
fn weekday(day: i32) -> usize {
    // 1970-01-01 was a Thursday (index 3).
    (day + 3).rem_euclid(7) as usize
}

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// The table covers 1970 to 2100; times outside it ask jiff directly.
const TABLE_END_MS: i64 = 4_102_444_800_000;

/// A time zone's UTC offsets as a sorted table of transitions, so a punch's
/// conversions are a binary search over a few hundred integers instead of a
/// tz-database lookup (which, past the last explicit transition, evaluates
/// the zone's POSIX rule for the year). Only times near a transition fall
/// back to jiff, which resolves gaps and folds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TzTable {
    /// Start of each interval, unix ms; the first is the table's start.
    starts: Box<[i64]>,
    /// UTC offset in each interval, ms.
    offsets: Box<[i64]>,
}

impl TzTable {
    /// The table of `tz` from 1970 to 2100.
    pub fn new(tz: &TimeZone) -> Self {
        let first = Timestamp::UNIX_EPOCH;
        let mut starts = vec![0];
        let mut offsets = vec![i64::from(tz.to_offset(first).seconds()) * 1_000];
        for t in tz.following(first) {
            let at = t.timestamp().as_millisecond();
            if at >= TABLE_END_MS {
                break;
            }
            let off = i64::from(t.offset().seconds()) * 1_000;
            if offsets.last() != Some(&off) {
                starts.push(at);
                offsets.push(off);
            }
        }
        Self {
            starts: starts.into(),
            offsets: offsets.into(),
        }
    }

    fn covers(&self, t: i64) -> bool {
        (0..TABLE_END_MS).contains(&t)
    }

    fn index(&self, t: i64) -> usize {
        self.starts.partition_point(|s| *s <= t).saturating_sub(1)
    }

    /// The UTC offset at instant `t`, ms.
    pub fn offset_ms(&self, tz: &TimeZone, t: i64) -> i64 {
        if self.covers(t) {
            self.offsets[self.index(t)]
        } else {
            Timestamp::from_millisecond(t)
                .map_or(0, |ts| i64::from(tz.to_offset(ts).seconds()) * 1_000)
        }
    }

    /// The instant of local wall-clock time `local_ms` (unix ms as if the
    /// wall clock were UTC). A time a DST change skips resolves to the later
    /// offset, a repeated one to the earlier ("compatible").
    pub fn local_to_instant(&self, tz: &TimeZone, local_ms: i64) -> i64 {
        let guess = local_ms - self.offset_ms(tz, local_ms);
        if self.covers(guess - DAY_MS) && self.covers(guess + DAY_MS) {
            let i = self.index(guess);
            let off = self.offsets[i];
            let t = local_ms - off;
            let start = self.starts[i];
            let end = self.starts.get(i + 1).copied().unwrap_or(TABLE_END_MS);
            // No transition within a day either side: the mapping is unique.
            if t - start > DAY_MS && end - t > DAY_MS {
                return t;
            }
        }
        let day = local_ms.div_euclid(DAY_MS) as i32;
        instant_ms(tz, day, (local_ms.rem_euclid(DAY_MS) / 60_000) as i32)
    }
}

/// The verdict on a punch's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Normal, late or early leave.
    pub status: AttendanceStatus,
    /// Day number of the slot's (start) date.
    pub day: i32,
    /// The slot's index in its schedule (`None`: rest day, free schedule,
    /// or a workday punch outside every slot's window).
    pub slot: Option<u8>,
    /// A punch on a workday that falls in no slot's window (label
    /// `<date>/outside`): recorded as normal, attributed to no slot.
    pub outside: bool,
    /// The slot's start and end as unix ms (0 when there is no slot).
    pub start_ms: i64,
    /// See `start_ms`.
    pub end_ms: i64,
}

impl TimeRules {
    /// A free schedule with no grace: every punch is normal.
    pub fn free() -> Self {
        Self {
            schedule: Schedule::Free,
            late_grace_min: 0,
            early_grace_min: 0,
            observe_holidays: false,
            in_before_min: DEFAULT_IN_BEFORE_MIN,
            out_after_min: DEFAULT_OUT_AFTER_MIN,
            late_missing_min: None,
            close_after_min: DEFAULT_OUT_AFTER_MIN,
        }
    }

    /// The slots worked on `day` (a day number), empty on a rest day or a
    /// holiday; the slot indices of day results come from
    /// [`TimeRules::slot_index`].
    pub fn slots_on(&self, day: i32, holidays: &Holidays) -> &[Slot] {
        match &self.schedule {
            Schedule::Free => &[],
            Schedule::Fixed { workdays, slots } => {
                let mut work = workdays[weekday(day)];
                if self.observe_holidays {
                    if holidays.is_off(day) {
                        work = false;
                    } else if holidays.is_make_up(day) {
                        work = true;
                    }
                }
                if work { slots } else { &[] }
            }
            Schedule::Shift {
                shifts,
                rotation,
                anchor,
            } => {
                if self.observe_holidays && holidays.is_off(day) && !holidays.is_make_up(day) {
                    return &[];
                }
                let i = (day - anchor).rem_euclid(rotation.len() as i32) as usize;
                match rotation[i] {
                    Some(s) => std::slice::from_ref(&shifts[usize::from(s)]),
                    None => &[],
                }
            }
        }
    }

    /// The index, as in [`Timing::slot`], of the `within_day`-th slot of
    /// [`TimeRules::slots_on`]`(day)`.
    pub fn slot_index(&self, day: i32, within_day: usize) -> u8 {
        match &self.schedule {
            Schedule::Shift {
                rotation, anchor, ..
            } => {
                let i = (day - anchor).rem_euclid(rotation.len() as i32) as usize;
                rotation[i].unwrap_or(0)
            }
            _ => within_day as u8,
        }
    }

    /// The name of slot `index` (as in [`Timing::slot`]).
    pub fn slot_name(&self, index: u8) -> &str {
        match &self.schedule {
            Schedule::Fixed { slots, .. } => &slots[usize::from(index)].name,
            Schedule::Shift { shifts, .. } => &shifts[usize::from(index)].name,
            Schedule::Free => "free",
        }
    }

    /// Judges a punch of `kind` at `at_ms` in time zone `tz` (with its
    /// offset table `table`).
    pub fn judge(
        &self,
        tz: &TimeZone,
        table: &TzTable,
        holidays: &Holidays,
        kind: PunchKind,
        at_ms: i64,
    ) -> Timing {
        let local_ms = at_ms + table.offset_ms(tz, at_ms);
        let today = local_ms.div_euclid(DAY_MS) as i32;
        let now_min = (local_ms.rem_euclid(DAY_MS) / 60_000) as i32;
        let rest = Timing {
            status: AttendanceStatus::Normal,
            day: today,
            slot: None,
            outside: false,
            start_ms: 0,
            end_ms: 0,
        };
        if matches!(self.schedule, Schedule::Free) {
            return rest;
        }
        // Attribution by window, as the peers do: a clock-in belongs to the
        // slot whose window [start - in_before, end) contains it, a clock-out
        // to the slot whose window (start, end + out_after] does. Windows
        // never reach over a neighbouring slot: a clock-in window starts no
        // earlier than the previous slot's end, a clock-out window ends no
        // later than the next slot's start. So a late arrival is late for
        // its own slot, never early for a later one. Slot instances of
        // yesterday, today and tomorrow are visited in time order (slots
        // are sorted by start, and windows are at most 12 hours).
        let is_out = kind == PunchKind::Out;
        let fits = |prev_end: i32, s: i32, e: i32, next_start: i32| {
            if is_out {
                now_min > s && now_min <= (e + self.out_after_min).min(next_start)
            } else {
                now_min >= (s - self.in_before_min).max(prev_end) && now_min < e
            }
        };
        let mut found: Option<(i32, usize, &Slot)> = None;
        let mut workday = false;
        // (day, index, slot, start, end) of the instance under test, and the
        // end of the one before it.
        let mut cur: Option<(i32, usize, &Slot, i32, i32)> = None;
        let mut prev_end = i32::MIN;
        'days: for offset in -1..=1 {
            let day = today + offset;
            let slots = self.slots_on(day, holidays);
            workday |= offset == 0 && !slots.is_empty();
            for (i, slot) in slots.iter().enumerate() {
                let s = offset * DAY_MIN + slot.start_min;
                if let Some((cd, ci, cs, cstart, cend)) = cur {
                    if fits(prev_end, cstart, cend, s) {
                        found = Some((cd, ci, cs));
                        break 'days;
                    }
                    prev_end = cend;
                }
                cur = Some((day, i, slot, s, s + slot.len_min()));
            }
        }
        if found.is_none() {
            if let Some((cd, ci, cs, cstart, cend)) = cur {
                if fits(prev_end, cstart, cend, i32::MAX) {
                    found = Some((cd, ci, cs));
                }
            }
        }
        let Some((day, i, slot)) = found else {
            return Timing {
                outside: workday,
                ..rest
            };
        };
        let (start_ms, end_ms) = slot_instants(tz, table, day, slot);
        let status = match kind {
            PunchKind::Out => {
                if at_ms >= end_ms - i64::from(self.early_grace_min) * 60_000 {
                    AttendanceStatus::Normal
                } else {
                    AttendanceStatus::EarlyLeave
                }
            }
            _ => {
                // Grace is inclusive to the minute: with 10 minutes of grace a
                // 9:00 start still accepts 9:10:59.
                if at_ms < start_ms + (i64::from(self.late_grace_min) + 1) * 60_000 {
                    AttendanceStatus::Normal
                } else {
                    AttendanceStatus::Late
                }
            }
        };
        Timing {
            status,
            day,
            slot: Some(self.slot_index(day, i)),
            outside: false,
            start_ms,
            end_ms,
        }
    }

    /// Writes the record's slot label, `YYYY-MM-DD/<slot>` (`/rest` on a
    /// day off, `/outside` for a workday punch in no slot's window, `/free`
    /// for a free schedule), into `out`.
    pub fn write_label(&self, timing: &Timing, out: &mut String) {
        out.clear();
        let (y, m, d) = civil_from_day(timing.day);
        let name = match (timing.slot, &self.schedule) {
            (_, Schedule::Free) => "free",
            (Some(i), _) => self.slot_name(i),
            (None, _) if timing.outside => "outside",
            (None, _) => "rest",
        };
        if (0..=9_999).contains(&y) {
            // Digits by hand: the formatting machinery costs more than the
            // rest of the schedule check.
            let mut buf = *b"0000-00-00/";
            for (i, n) in [
                (0, y / 1_000),
                (1, y / 100),
                (2, y / 10),
                (3, y),
                (5, m / 10),
                (6, m),
                (8, d / 10),
                (9, d),
            ] {
                buf[i] = b'0' + (n % 10) as u8;
            }
            out.push_str(std::str::from_utf8(&buf).unwrap_or("0000-00-00/"));
            out.push_str(name);
        } else {
            let _ = write!(out, "{y:04}-{m:02}-{d:02}/{name}");
        }
    }
}

/// The start and end instants (unix ms) of `slot` worked on `day` (the
/// start's date) in `tz`, with its offset table `table`.
pub fn slot_instants(tz: &TimeZone, table: &TzTable, day: i32, slot: &Slot) -> (i64, i64) {
    let local = |day: i32, minute: i32| i64::from(day) * DAY_MS + i64::from(minute) * 60_000;
    let start_ms = table.local_to_instant(tz, local(day, slot.start_min));
    let end_day = if slot.end_min > slot.start_min {
        day
    } else {
        day + 1
    };
    (
        start_ms,
        table.local_to_instant(tz, local(end_day, slot.end_min)),
    )
}

/// The instant (unix ms) of local midnight starting `day` in `tz`.
pub fn midnight_ms(tz: &TimeZone, table: &TzTable, day: i32) -> i64 {
    table.local_to_instant(tz, i64::from(day) * DAY_MS)
}

/// The instant of wall-clock `minute` on `day` in `tz`. A time skipped by a
/// DST change resolves to the later offset (so 02:30 on the spring change
/// is 03:30), a repeated one to the earlier ("compatible", as RFC 9557 and
/// most calendars do).
fn instant_ms(tz: &TimeZone, day: i32, minute: i32) -> i64 {
    let (y, m, d) = civil_from_day(day);
    let dt = DateTime::new(
        y as i16,
        m as i8,
        d as i8,
        (minute / 60) as i8,
        (minute % 60) as i8,
        0,
        0,
    );
    match dt.map(|dt| tz.to_ambiguous_timestamp(dt).compatible()) {
        Ok(Ok(ts)) => ts.as_millisecond(),
        // Only dates outside jiff's range (years beyond ±9999) get here.
        _ => i64::from(day) * 86_400_000 + i64::from(minute) * 60_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_round_trip_and_match_jiff() {
        for day in [-800_000, -1, 0, 1, 10_957, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_day(day);
            assert_eq!(day_number(y, m, d), day);
        }
        let date = jiff::civil::date(2025, 3, 30);
        assert_eq!(day_of(date), day_number(2025, 3, 30));
        assert_eq!(
            weekday(day_of(date)),
            date.weekday().to_monday_zero_offset() as usize
        );
    }

    #[test]
    fn the_offset_table_agrees_with_jiff_around_every_change() {
        let db = jiff::tz::TimeZoneDatabase::bundled();
        for name in [
            "Europe/Berlin",
            "Asia/Shanghai",
            "America/New_York",
            "Australia/Lord_Howe",
            "UTC",
        ] {
            let tz = db.get(name).unwrap();
            let table = TzTable::new(&tz);
            // Every 20 minutes of 2025, instants and wall-clock times both ways.
            let start = day_number(2025, 1, 1);
            for step in 0..(365 * 72) {
                let t = i64::from(start) * DAY_MS + step * 1_200_000;
                let ts = Timestamp::from_millisecond(t).unwrap();
                let want = i64::from(tz.to_offset(ts).seconds()) * 1_000;
                assert_eq!(table.offset_ms(&tz, t), want, "{name} at {ts}");
                let local = t;
                let day = local.div_euclid(DAY_MS) as i32;
                let minute = (local.rem_euclid(DAY_MS) / 60_000) as i32;
                assert_eq!(
                    table.local_to_instant(&tz, local),
                    instant_ms(&tz, day, minute),
                    "{name} wall clock {day}/{minute}"
                );
            }
        }
    }

    #[test]
    fn labels_are_zero_padded() {
        let t = TimeRules::free();
        let mut s = String::new();
        let timing = Timing {
            status: AttendanceStatus::Normal,
            day: day_number(2025, 3, 4),
            slot: None,
            outside: false,
            start_ms: 0,
            end_ms: 0,
        };
        t.write_label(&timing, &mut s);
        assert_eq!(s, "2025-03-04/free");
    }

    #[test]
    fn slot_length_wraps_midnight() {
        let s = Slot {
            name: "night".into(),
            start_min: 22 * 60,
            end_min: 6 * 60,
        };
        assert_eq!(s.len_min(), 8 * 60);
    }
}
