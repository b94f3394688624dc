//! Which slot a punch belongs to, against the peers' documented behaviour.
//!
//! WeCom (打卡), DingTalk (考勤) and Feishu attendance all attribute a punch
//! by *time windows*, not by the nearest slot: a clock-in may be made from a
//! set time before a slot's start (DingTalk's example: 4 hours; Feishu's
//! 上班最早可提前打卡) until the slot ends, a clock-out from the slot's start
//! until a set time after its end (DingTalk: 12 hours when nothing is set;
//! Feishu's 下班最晚可延后打卡), and with several slots a day the windows are
//! split between them, so an arrival after the start is *late* for its slot
//! (or, past a threshold, 旷工迟到: counted as a missing punch), never on
//! time for a later slot. fencegate's defaults are 240 minutes before and
//! 720 after (`in_before_min`, `out_after_min`).
//!
//! Two tests: a table of cases written from that behaviour (the issue's
//! case first: a `lab` clock-in at 11:00 is late for the morning, not on
//! time for the afternoon), and a sweep of every minute of three days
//! against a slow oracle that builds the windows from real instants.

use std::path::Path;

use fencegate::rules::config::{CompileContext, compile_text, fixed_qr_keys};
use fencegate::rules::holidays::Calendars;
use fencegate::rules::schedule::{TimeRules, Timing};
use fencegate::rules::{AttendanceSettings, Rules, TenantRules};
use fencegate_schema::{AttendanceStatus as S, PunchKind};

const MIN: i64 = 60_000;

const RULES: &str = r#"
[tenants.acme]
timezone = "Asia/Shanghai"
holidays = ["cn-2025"]
default_group = "office"

[tenants.acme.groups.office]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri"]
slots = [{ name = "day", start = "09:00", end = "18:00" }]
late_grace_min = 10

[tenants.acme.groups.lab]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri"]
slots = [
  { name = "morning", start = "08:30", end = "12:00" },
  { name = "afternoon", start = "13:00", end = "17:30" },
]
late_grace_min = 5

[tenants.acme.groups.guards]
schedule = "shift"
shifts = [{ name = "night", start = "22:00", end = "06:00" }]
rotation = ["night", "night", "rest", "rest"]
rotation_start = "2025-01-06"
late_grace_min = 5

[tenants.acme.groups.tight]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri"]
slots = [
  { name = "early", start = "06:00", end = "14:00" },
  { name = "late", start = "14:00", end = "22:00" },
]
in_before_min = 60
out_after_min = 120
"#;

fn rules() -> Rules {
    let mut keys = fixed_qr_keys(7);
    let mut ctx = CompileContext {
        calendars: Calendars::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/holidays"),
        ),
        settings: AttendanceSettings::default(),
        qr_key: &mut keys,
    };
    compile_text(RULES, "tests/slot_attribution.rs", &["acme"], &mut ctx)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn t(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .as_millisecond()
}

fn group<'a>(tenant: &'a TenantRules, name: &str) -> &'a TimeRules {
    &tenant
        .groups
        .iter()
        .find(|g| &*g.name == name)
        .unwrap_or_else(|| panic!("no group {name}"))
        .time
}

fn judge(tenant: &TenantRules, g: &TimeRules, kind: PunchKind, at: i64) -> (Timing, String) {
    let timing = g.judge(&tenant.tz, &tenant.tz_table, &tenant.holidays, kind, at);
    let mut label = String::new();
    g.write_label(&timing, &mut label);
    (timing, label)
}

const IN: PunchKind = PunchKind::In;
const OUT: PunchKind = PunchKind::Out;

#[test]
fn peer_table_of_slot_attribution() {
    let rules = rules();
    let acme = rules.tenant("acme");
    // (group, kind, time in Shanghai, expected label, expected status).
    // 2025-03-04 is a Tuesday; the guard rotation works the nights of
    // 2025-03-03 and 2025-03-04 and rests on the 5th and 6th.
    let cases: &[(&str, PunchKind, &str, &str, S)] = &[
        // The issue's case: 11:00 is 2.5 hours late for the morning slot.
        (
            "lab",
            IN,
            "2025-03-04T11:00:00",
            "2025-03-04/morning",
            S::Late,
        ),
        (
            "lab",
            IN,
            "2025-03-04T08:00:00",
            "2025-03-04/morning",
            S::Normal,
        ),
        (
            "lab",
            IN,
            "2025-03-04T08:35:59",
            "2025-03-04/morning",
            S::Normal,
        ),
        (
            "lab",
            IN,
            "2025-03-04T08:36:00",
            "2025-03-04/morning",
            S::Late,
        ),
        (
            "lab",
            IN,
            "2025-03-04T11:59:59",
            "2025-03-04/morning",
            S::Late,
        ),
        // The afternoon's clock-in window opens when the morning ends.
        (
            "lab",
            IN,
            "2025-03-04T12:00:00",
            "2025-03-04/afternoon",
            S::Normal,
        ),
        (
            "lab",
            IN,
            "2025-03-04T12:40:00",
            "2025-03-04/afternoon",
            S::Normal,
        ),
        (
            "lab",
            IN,
            "2025-03-04T13:06:00",
            "2025-03-04/afternoon",
            S::Late,
        ),
        // Before the first window (08:30 - 4 h) or after the last slot ends.
        (
            "lab",
            IN,
            "2025-03-04T04:29:00",
            "2025-03-04/outside",
            S::Normal,
        ),
        (
            "lab",
            IN,
            "2025-03-04T17:30:00",
            "2025-03-04/outside",
            S::Normal,
        ),
        // Clock-outs: the morning's window ends where the afternoon starts.
        (
            "lab",
            OUT,
            "2025-03-04T11:00:00",
            "2025-03-04/morning",
            S::EarlyLeave,
        ),
        (
            "lab",
            OUT,
            "2025-03-04T12:00:00",
            "2025-03-04/morning",
            S::Normal,
        ),
        (
            "lab",
            OUT,
            "2025-03-04T13:00:00",
            "2025-03-04/morning",
            S::Normal,
        ),
        (
            "lab",
            OUT,
            "2025-03-04T13:01:00",
            "2025-03-04/afternoon",
            S::EarlyLeave,
        ),
        (
            "lab",
            OUT,
            "2025-03-04T17:30:00",
            "2025-03-04/afternoon",
            S::Normal,
        ),
        (
            "lab",
            OUT,
            "2025-03-04T21:00:00",
            "2025-03-04/afternoon",
            S::Normal,
        ),
        (
            "lab",
            OUT,
            "2025-03-04T08:00:00",
            "2025-03-04/outside",
            S::Normal,
        ),
        // The seed's 9:10 grace, and a late arrival stays in its slot.
        (
            "office",
            IN,
            "2025-03-04T09:10:59",
            "2025-03-04/day",
            S::Normal,
        ),
        (
            "office",
            IN,
            "2025-03-04T09:11:00",
            "2025-03-04/day",
            S::Late,
        ),
        (
            "office",
            IN,
            "2025-03-04T15:00:00",
            "2025-03-04/day",
            S::Late,
        ),
        (
            "office",
            IN,
            "2025-03-04T18:30:00",
            "2025-03-04/outside",
            S::Normal,
        ),
        (
            "office",
            OUT,
            "2025-03-04T17:59:00",
            "2025-03-04/day",
            S::EarlyLeave,
        ),
        // A clock-out after midnight is the previous workday's (12 h).
        (
            "office",
            OUT,
            "2025-03-05T02:00:00",
            "2025-03-04/day",
            S::Normal,
        ),
        (
            "office",
            OUT,
            "2025-03-05T06:01:00",
            "2025-03-05/outside",
            S::Normal,
        ),
        // Saturday and National Day: rest.
        (
            "office",
            IN,
            "2025-03-08T10:00:00",
            "2025-03-08/rest",
            S::Normal,
        ),
        (
            "office",
            IN,
            "2025-10-01T09:30:00",
            "2025-10-01/rest",
            S::Normal,
        ),
        // The guard's cross-midnight shift: the date is the shift's start.
        (
            "guards",
            IN,
            "2025-03-04T21:55:00",
            "2025-03-04/night",
            S::Normal,
        ),
        (
            "guards",
            IN,
            "2025-03-05T01:00:00",
            "2025-03-04/night",
            S::Late,
        ),
        (
            "guards",
            OUT,
            "2025-03-05T05:30:00",
            "2025-03-04/night",
            S::EarlyLeave,
        ),
        (
            "guards",
            OUT,
            "2025-03-05T07:00:00",
            "2025-03-04/night",
            S::Normal,
        ),
        (
            "guards",
            IN,
            "2025-03-06T23:00:00",
            "2025-03-06/rest",
            S::Normal,
        ),
        // Back-to-back slots with narrow windows.
        (
            "tight",
            IN,
            "2025-03-04T04:59:00",
            "2025-03-04/outside",
            S::Normal,
        ),
        (
            "tight",
            IN,
            "2025-03-04T05:00:00",
            "2025-03-04/early",
            S::Normal,
        ),
        (
            "tight",
            IN,
            "2025-03-04T13:59:00",
            "2025-03-04/early",
            S::Late,
        ),
        (
            "tight",
            IN,
            "2025-03-04T14:00:00",
            "2025-03-04/late",
            S::Normal,
        ),
        (
            "tight",
            OUT,
            "2025-03-04T14:00:00",
            "2025-03-04/early",
            S::Normal,
        ),
        (
            "tight",
            OUT,
            "2025-03-04T14:01:00",
            "2025-03-04/late",
            S::EarlyLeave,
        ),
        (
            "tight",
            OUT,
            "2025-03-05T00:00:00",
            "2025-03-04/late",
            S::Normal,
        ),
        (
            "tight",
            OUT,
            "2025-03-05T00:01:00",
            "2025-03-05/outside",
            S::Normal,
        ),
    ];
    let mut bad = Vec::new();
    for &(g, kind, at, label, status) in cases {
        let (timing, got) = judge(acme, group(acme, g), kind, t(&format!("{at}+08:00")));
        if got != label || timing.status != status {
            bad.push(format!(
                "{g} {kind:?} at {at}: want {label} {status:?}, got {got} {:?}",
                timing.status
            ));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

/// One slot occurrence in real time.
struct Instance {
    day: i32,
    index: u8,
    start: i64,
    end: i64,
}

/// The slow oracle: every slot instance from four days before to four
/// after, from jiff directly, windows in real instants, first match wins.
fn oracle(tenant: &TenantRules, g: &TimeRules, kind: PunchKind, at: i64) -> (Option<(i32, u8)>, S) {
    let zoned = jiff::Timestamp::from_millisecond(at)
        .unwrap()
        .to_zoned(tenant.tz.clone());
    let today = fencegate::rules::schedule::day_of(zoned.date());
    let instant = |day: i32, minute: i32| {
        let (y, m, d) = fencegate::rules::schedule::civil_from_day(day);
        jiff::civil::date(y as i16, m as i8, d as i8)
            .at((minute / 60) as i8, (minute % 60) as i8, 0, 0)
            .to_zoned(tenant.tz.clone())
            .unwrap()
            .timestamp()
            .as_millisecond()
    };
    let mut all = Vec::new();
    for day in today - 4..=today + 4 {
        for (i, s) in g.slots_on(day, &tenant.holidays).iter().enumerate() {
            let end_day = if s.end_min > s.start_min {
                day
            } else {
                day + 1
            };
            all.push(Instance {
                day,
                index: g.slot_index(day, i),
                start: instant(day, s.start_min),
                end: instant(end_day, s.end_min),
            });
        }
    }
    for (k, x) in all.iter().enumerate() {
        let prev_end = if k > 0 { all[k - 1].end } else { i64::MIN };
        let next_start = all.get(k + 1).map_or(i64::MAX, |n| n.start);
        let hit = match kind {
            PunchKind::Out => {
                at > x.start && at <= (x.end + i64::from(g.out_after_min) * MIN).min(next_start)
            }
            _ => at >= (x.start - i64::from(g.in_before_min) * MIN).max(prev_end) && at < x.end,
        };
        if hit {
            let status = match kind {
                PunchKind::Out if at < x.end - i64::from(g.early_grace_min) * MIN => S::EarlyLeave,
                PunchKind::Out => S::Normal,
                _ if at >= x.start + (i64::from(g.late_grace_min) + 1) * MIN => S::Late,
                _ => S::Normal,
            };
            return (Some((x.day, x.index)), status);
        }
    }
    (None, S::Normal)
}

#[test]
fn every_minute_of_three_days_matches_the_window_oracle() {
    let rules = rules();
    let acme = rules.tenant("acme");
    // Monday 2025-03-03 00:00 to Thursday 00:00 in Shanghai (no DST there,
    // so wall-clock windows and real-time windows agree), a holiday
    // stretch around National Day, and a weekend.
    let starts = [
        t("2025-03-03T00:00:00+08:00"),
        t("2025-09-30T00:00:00+08:00"),
        t("2025-03-07T00:00:00+08:00"),
    ];
    let mut checked = 0;
    for g in ["office", "lab", "guards", "tight"] {
        let time = group(acme, g);
        for &start in &starts {
            for m in 0..3 * 24 * 60 {
                let at = start + m * MIN;
                for kind in [IN, OUT] {
                    let (timing, _) = judge(acme, time, kind, at);
                    let got = timing.slot.map(|s| (timing.day, s));
                    let (want, status) = oracle(acme, time, kind, at);
                    assert_eq!(
                        (got, timing.status),
                        (want, status),
                        "{g} {kind:?} at minute {m} after {start}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 4 * 3 * 3 * 24 * 60 * 2);
}
