//! Day results: every status from the pure computation (`rules::day`), and
//! the materializer over a real durable log into SQLite: days closing with
//! the roster's absentees, a late offline punch reopening a closed day, and
//! a rebuild from the log equal to the incremental result. The
//! materializer's tests run twice: on SQLite (the embedded default) and on
//! a real PostgreSQL (the store several nodes share).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fencegate::log::{LogConfig, LogHandle, LogReader, Lsn};
use fencegate::results::{DayRow, Materializer, ResultsStore};
use fencegate::rules::config::{CompileContext, compile_text, fixed_qr_keys};
use fencegate::rules::day::{DayPunch, DayResult, DayStatus, compute};
use fencegate::rules::holidays::Calendars;
use fencegate::rules::schedule::day_number;
use fencegate::rules::{AttendanceSettings, Rules, RulesHandle};
use fencegate_schema::{
    AttendanceRef, AttendanceStatus as S, PunchKind, PunchMethod, PunchRecordRef, Reason,
    RecordBodyRef, RecordRef, Verdict,
};
use flatbuffers::FlatBufferBuilder;

mod results_rig;
use results_rig::{Stores, aggregates};

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
close_after_min = 240

[tenants.acme.groups.lab]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri"]
slots = [
  { name = "morning", start = "08:30", end = "12:00" },
  { name = "afternoon", start = "13:00", end = "17:30" },
]
late_grace_min = 5
late_missing_min = 120

[tenants.acme.groups.guards]
schedule = "shift"
shifts = [{ name = "night", start = "22:00", end = "06:00" }]
rotation = ["night", "night", "rest", "rest"]
rotation_start = "2025-01-06"
late_grace_min = 5

[tenants.acme.departments.ops]
supervisor = "E0100"

[tenants.acme.employees.E1]
department = "ops"
[tenants.acme.employees.E2]
department = "ops"
[tenants.acme.employees.L1]
group = "lab"
[tenants.acme.employees.G1]
group = "guards"

[tenants.globex]
timezone = "Europe/Berlin"
default_group = "night"

[tenants.globex.groups.night]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
slots = [{ name = "night", start = "22:00", end = "06:00" }]
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
    compile_text(RULES, "tests/day_results.rs", &["acme", "globex"], &mut ctx)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn t(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .as_millisecond()
}

/// A Shanghai wall-clock time.
fn sh(s: &str) -> i64 {
    t(&format!("{s}+08:00"))
}

fn ok(kind: PunchKind, at: i64) -> DayPunch {
    DayPunch {
        kind,
        at_ms: at,
        verdict: Verdict::Accepted,
        status: S::Normal,
        needs_approval: false,
        decision: None,
    }
}

const IN: PunchKind = PunchKind::In;
const OUT: PunchKind = PunchKind::Out;

fn day_of(
    rules: &Rules,
    tenant: &str,
    group: &str,
    date: (i32, i32, i32),
    p: &[DayPunch],
) -> DayResult {
    let t = rules.tenant(tenant);
    let g = t.groups.iter().find(|g| &*g.name == group).unwrap();
    compute(t, g, day_number(date.0, date.1, date.2), p)
}

#[test]
fn every_day_status_from_the_punches() {
    let r = rules();
    let tue = (2025, 3, 4);
    let office = |p: &[DayPunch]| day_of(&r, "acme", "office", tue, p);

    let d = office(&[
        ok(IN, sh("2025-03-04T08:55:00")),
        ok(OUT, sh("2025-03-04T18:05:00")),
    ]);
    assert_eq!(
        (d.status, d.worked_min, d.overtime_min),
        (DayStatus::Normal, 540, 5)
    );
    // The seed's 9:10 grace: 09:10:59 is on time, 09:11 is 11 minutes late.
    let d = office(&[
        ok(IN, sh("2025-03-04T09:10:59")),
        ok(OUT, sh("2025-03-04T18:00:00")),
    ]);
    assert_eq!((d.status, d.late_min), (DayStatus::Normal, 0));
    let d = office(&[
        ok(IN, sh("2025-03-04T09:11:00")),
        ok(OUT, sh("2025-03-04T18:00:00")),
    ]);
    assert_eq!(
        (d.status, d.late_min, d.worked_min),
        (DayStatus::Late, 11, 529)
    );
    let d = office(&[
        ok(IN, sh("2025-03-04T09:00:00")),
        ok(OUT, sh("2025-03-04T17:29:30")),
    ]);
    assert_eq!((d.status, d.early_min), (DayStatus::EarlyLeave, 31));
    let d = office(&[ok(IN, sh("2025-03-04T09:00:00"))]);
    assert_eq!(d.status, DayStatus::MissingOut);
    let d = office(&[ok(OUT, sh("2025-03-04T18:00:00"))]);
    assert_eq!(d.status, DayStatus::MissingIn);
    assert_eq!(office(&[]).status, DayStatus::Absent);
    // Punches of other days do not count for this one.
    assert_eq!(
        office(&[ok(IN, sh("2025-03-05T09:00:00"))]).status,
        DayStatus::Absent
    );
    // Field punches, and a pending out-of-range one.
    let field = DayPunch {
        status: S::Field,
        ..ok(IN, sh("2025-03-04T09:00:00"))
    };
    let d = office(&[field, ok(OUT, sh("2025-03-04T18:00:00"))]);
    assert_eq!(d.status, DayStatus::Field);
    let pending = DayPunch {
        verdict: Verdict::OutOfRange,
        status: S::OutOfRangePendingApproval,
        needs_approval: true,
        ..ok(IN, sh("2025-03-04T09:00:00"))
    };
    let out = ok(OUT, sh("2025-03-04T18:00:00"));
    assert_eq!(office(&[pending, out]).status, DayStatus::PendingApproval);
    let approved = DayPunch {
        decision: Some(true),
        ..pending
    };
    assert_eq!(office(&[approved, out]).status, DayStatus::Normal);
    let rejected = DayPunch {
        decision: Some(false),
        ..pending
    };
    assert_eq!(office(&[rejected, out]).status, DayStatus::MissingIn);
    // Rejected records and merged repeats never count.
    let refused = DayPunch {
        verdict: Verdict::Rejected,
        status: S::Rejected,
        ..ok(IN, sh("2025-03-04T09:00:00"))
    };
    assert_eq!(office(&[refused, out]).status, DayStatus::MissingIn);
    // Saturday: a rest day; time worked on it is overtime.
    let sat = day_of(
        &r,
        "acme",
        "office",
        (2025, 3, 8),
        &[
            ok(IN, sh("2025-03-08T10:00:00")),
            ok(OUT, sh("2025-03-08T14:00:00")),
        ],
    );
    assert_eq!((sat.status, sat.overtime_min), (DayStatus::RestDay, 240));
    // National Day.
    let hol = day_of(&r, "acme", "office", (2025, 10, 1), &[]);
    assert_eq!(hol.status, DayStatus::Holiday);
    // Every status has a name that parses back.
    for s in DayStatus::ALL {
        assert_eq!(DayStatus::parse(s.as_str()), Some(s));
    }
}

#[test]
fn lab_slots_late_missing_threshold_and_a_missing_afternoon() {
    let r = rules();
    let lab = |p: &[DayPunch]| day_of(&r, "acme", "lab", (2025, 3, 4), p);
    let full = [
        ok(IN, sh("2025-03-04T08:40:00")),
        ok(OUT, sh("2025-03-04T12:00:00")),
        ok(IN, sh("2025-03-04T12:55:00")),
        ok(OUT, sh("2025-03-04T17:30:00")),
    ];
    let d = lab(&full);
    assert_eq!(d.status, DayStatus::Late, "{d:?}");
    assert_eq!((d.slots[0].late_min, d.worked_min), (10, 200 + 270));
    // The issue's case: 11:00 is late for the morning by 150 minutes, past
    // the 120-minute threshold: a missing clock-in, the afternoon untouched.
    let d = lab(&[
        ok(IN, sh("2025-03-04T11:00:00")),
        ok(OUT, sh("2025-03-04T12:00:00")),
        ok(IN, sh("2025-03-04T13:00:00")),
        ok(OUT, sh("2025-03-04T17:30:00")),
    ]);
    assert_eq!(d.slots[0].status, DayStatus::MissingIn);
    assert_eq!(d.slots[0].late_min, 150);
    assert_eq!(d.slots[1].status, DayStatus::Normal);
    assert_eq!(d.status, DayStatus::MissingIn);
    // Only the morning worked: the afternoon is absent, the day missing.
    let d = lab(&full[..2]);
    assert_eq!(d.slots[1].status, DayStatus::Absent);
    assert_eq!(d.status, DayStatus::MissingIn);
}

#[test]
fn the_guards_night_shift_counts_for_its_start_date() {
    let r = rules();
    let punches = [
        ok(IN, sh("2025-03-04T21:55:00")),
        ok(OUT, sh("2025-03-05T06:02:00")),
    ];
    let d = day_of(&r, "acme", "guards", (2025, 3, 4), &punches);
    assert_eq!(
        (d.status, d.worked_min, d.overtime_min),
        (DayStatus::Normal, 480, 2)
    );
    // The morning it ends on is the rotation's rest day, with nothing on it.
    let d = day_of(&r, "acme", "guards", (2025, 3, 5), &punches);
    assert_eq!((d.status, d.worked_min), (DayStatus::RestDay, 0));
    // 01:00 is late for the night that began at 22:00 the day before.
    let d = day_of(
        &r,
        "acme",
        "guards",
        (2025, 3, 4),
        &[
            ok(IN, sh("2025-03-05T01:00:00")),
            ok(OUT, sh("2025-03-05T06:00:00")),
        ],
    );
    assert_eq!((d.status, d.late_min), (DayStatus::Late, 180));
}

#[test]
fn a_night_across_the_spring_dst_change_is_seven_hours() {
    let r = rules();
    // Berlin, 2025-03-30 02:00 -> 03:00.
    let d = day_of(
        &r,
        "globex",
        "night",
        (2025, 3, 29),
        &[
            ok(IN, t("2025-03-29T22:00:00+01:00")),
            ok(OUT, t("2025-03-30T06:00:00+02:00")),
        ],
    );
    assert_eq!((d.status, d.worked_min), (DayStatus::Normal, 7 * 60));
    let d = day_of(
        &r,
        "globex",
        "night",
        (2025, 10, 25),
        &[
            ok(IN, t("2025-10-25T22:00:00+02:00")),
            ok(OUT, t("2025-10-26T06:00:00+01:00")),
        ],
    );
    assert_eq!((d.status, d.worked_min), (DayStatus::Normal, 9 * 60));
}

// ---- The materializer over a real log and SQLite ----

struct Punch<'a> {
    id: u128,
    employee: &'a str,
    kind: PunchKind,
    at: i64,
    /// Gateway time (later than `at` for an offline upload).
    received: i64,
}

fn record(p: &Punch<'_>) -> Vec<u8> {
    record_in("acme", p)
}

fn record_in(tenant: &str, p: &Punch<'_>) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let offline = p.received != p.at;
    let r = RecordRef {
        record_id: p.id.to_be_bytes(),
        tenant,
        gateway_time_ms: p.received,
        node: Some("n1"),
        body: RecordBodyRef::Punch(PunchRecordRef {
            punch_id: p.id.to_be_bytes(),
            employee_id: p.employee,
            device_id: "phone",
            kind: p.kind,
            method: PunchMethod::Gps,
            device_time_ms: p.at,
            position: None,
            verdict: Verdict::Accepted,
            reason: Reason::None,
            fence_ids: &[] as &[&str],
            nearest_fence_id: None,
            distance_m: 0.0,
            offline,
            mock_location: false,
            status: S::Normal,
            anomaly_flags: 0,
            slot: None,
            merged_into: None,
        }),
    };
    let att = AttendanceRef {
        attendance_time_ms: p.at,
        department: Some("ops"),
        ..AttendanceRef::default()
    };
    r.encode_with_attendance(&att, &mut fbb).to_vec()
}

fn handle() -> Arc<RulesHandle> {
    Arc::new(RulesHandle::new(rules(), RULES.into()))
}

/// Holds the aggregates the materializer kept row by row equal to their
/// definition (`recount_stats`), and returns them.
async fn aggregates_hold(store: &ResultsStore) -> Vec<String> {
    let kept = aggregates(store).await;
    assert!(!kept.is_empty());
    store.recount_stats().await.unwrap();
    assert_eq!(
        aggregates(store).await,
        kept,
        "kept row by row vs recounted"
    );
    kept
}

fn row<'a>(rows: &'a [DayRow], employee: &str, slot: &str) -> &'a DayRow {
    rows.iter()
        .find(|r| r.employee == employee && r.slot == slot)
        .unwrap_or_else(|| panic!("no row for {employee}/{slot:?} in {rows:#?}"))
}

async fn append(log: &LogHandle, punches: &[Punch<'_>]) {
    for p in punches {
        log.append(&record(p), p.received as u64)
            .unwrap()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_day_closes_with_the_rosters_absentees_and_a_late_offline_punch_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    closes_and_reopens(&dir, &Stores::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_closes_with_the_rosters_absentees_and_a_late_offline_punch_reopens_it_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::postgres(dir.path());
    closes_and_reopens(&dir, &stores).await;
}

async fn closes_and_reopens(dir: &tempfile::TempDir, stores: &Stores) {
    let (log, _) = LogHandle::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let m = Materializer::new(stores.open(dir.path(), "results").await, handle());
    let mut reader = log.reader(Lsn(0)).unwrap();
    append(
        &log,
        &[Punch {
            id: 1,
            employee: "E1",
            kind: IN,
            at: sh("2025-03-04T09:00:00"),
            received: sh("2025-03-04T09:00:00"),
        }],
    )
    .await;
    // During the day: open, E1 has clocked in (missing_out is not final).
    m.drain(&mut reader, sh("2025-03-04T12:00:00"))
        .await
        .unwrap();
    m.close_due(sh("2025-03-04T12:00:00")).await.unwrap();
    let rows = m
        .store()
        .days("acme", "2025-03-04", None, None)
        .await
        .unwrap();
    let e1 = row(&rows, "E1", "");
    assert_eq!((e1.status.as_str(), e1.closed), ("missing_out", false));
    assert!(
        rows.iter().all(|r| r.employee != "E2"),
        "E2 has no row before the close"
    );
    // 22:00 is 18:00 + close_after_min (240): the day closes. E2, on the
    // roster, never punched: absent.
    m.close_due(sh("2025-03-04T22:00:00")).await.unwrap();
    let rows = m
        .store()
        .days("acme", "2025-03-04", None, None)
        .await
        .unwrap();
    let e1 = row(&rows, "E1", "");
    assert_eq!(
        (e1.status.as_str(), e1.closed, e1.revision),
        ("missing_out", true, 1)
    );
    let e2 = row(&rows, "E2", "");
    assert_eq!((e2.status.as_str(), e2.closed), ("absent", true));
    assert_eq!(e2.department.as_deref(), Some("ops"));
    assert_eq!(row(&rows, "E2", "day").status, "absent");
    // Two days later E1's phone uploads the 18:05 clock-out it took offline.
    append(
        &log,
        &[Punch {
            id: 2,
            employee: "E1",
            kind: OUT,
            at: sh("2025-03-04T18:05:00"),
            received: sh("2025-03-06T08:00:00"),
        }],
    )
    .await;
    m.drain(&mut reader, sh("2025-03-06T08:00:00"))
        .await
        .unwrap();
    let rows = m
        .store()
        .days("acme", "2025-03-04", None, Some("E1"))
        .await
        .unwrap();
    let e1 = row(&rows, "E1", "");
    assert_eq!((e1.status.as_str(), e1.closed), ("normal", true));
    assert_eq!((e1.worked_min, e1.overtime_min, e1.revision), (540, 5, 2));
    // Filters: department and employee.
    assert_eq!(
        m.store()
            .days("acme", "2025-03-04", Some("ops"), None)
            .await
            .unwrap()
            .len(),
        4
    );
    assert!(
        m.store()
            .days("acme", "2025-03-04", Some("hr"), None)
            .await
            .unwrap()
            .is_empty()
    );
    // Re-reading the same records (a crash before the position moved)
    // changes nothing.
    let before = m.store().all_rows().await.unwrap();
    // The reopened day moved the dashboard's aggregates with it.
    let kept = aggregates_hold(m.store()).await;
    let mut again = log.reader(Lsn(0)).unwrap();
    m.drain(&mut again, sh("2025-03-06T08:00:00"))
        .await
        .unwrap();
    assert_eq!(m.store().all_rows().await.unwrap(), before);
    assert_eq!(aggregates(m.store()).await, kept);
    log.close();
}

#[tokio::test]
async fn a_rebuild_from_the_log_equals_the_incremental_results() {
    let dir = tempfile::tempdir().unwrap();
    rebuild_equals_incremental(&dir, &Stores::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_the_log_equals_the_incremental_results_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::postgres(dir.path());
    rebuild_equals_incremental(&dir, &stores).await;
}

async fn rebuild_equals_incremental(dir: &tempfile::TempDir, stores: &Stores) {
    let (log, _) = LogHandle::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let inc = Materializer::new(stores.open(dir.path(), "incremental").await, handle());
    let mut reader = log.reader(Lsn(0)).unwrap();
    // A week of punches by E1 (office), L1 (lab) and G1 (guard), fed a day
    // at a time with the day's closes in between, plus an offline upload.
    let mut id = 0;
    let mut next = |employee, kind, at: String, late: Option<String>| {
        id += 1;
        let at = sh(&at);
        Punch {
            id,
            employee,
            kind,
            at,
            received: late.map_or(at, |l| sh(&l)),
        }
    };
    for day in 3..=7 {
        let d = format!("2025-03-{day:02}");
        let mut punches = vec![
            next("E1", IN, format!("{d}T09:0{}:00", day % 3 * 4), None),
            next("L1", IN, format!("{d}T08:2{day}:00"), None),
            next("L1", OUT, format!("{d}T12:00:00"), None),
            next("L1", IN, format!("{d}T12:5{day}:00"), None),
            next("G1", IN, format!("{d}T21:5{day}:00"), None),
        ];
        if day != 5 {
            punches.push(next("E1", OUT, format!("{d}T18:0{day}:00"), None));
        }
        if day == 6 {
            // Wednesday's forgotten clock-out, uploaded on Thursday.
            punches.push(next(
                "E1",
                OUT,
                "2025-03-05T18:30:00".into(),
                Some(format!("{d}T09:30:00")),
            ));
        }
        append(&log, &punches).await;
        let evening = sh(&format!("{d}T23:00:00"));
        inc.drain(&mut reader, evening).await.unwrap();
        inc.close_due(evening).await.unwrap();
    }
    let end = sh("2025-03-10T12:00:00");
    inc.drain(&mut reader, end).await.unwrap();
    inc.close_due(end).await.unwrap();

    // The rebuild reads the log's folder from the start, as the CLI does.
    let rebuilt = Materializer::new(stores.open(dir.path(), "rebuilt").await, handle());
    let mut from_dir =
        LogReader::open_dir(dir.path().join("log"), Lsn(0), Duration::from_millis(10)).unwrap();
    rebuilt.rebuild(&mut from_dir, end).await.unwrap();

    let a = inc.store().all_rows().await.unwrap();
    let b = rebuilt.store().all_rows().await.unwrap();
    assert!(a.len() > 40, "{} rows", a.len());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(x.same_result(y), "incremental {x:#?}\nrebuilt {y:#?}");
    }
    // The dashboard's aggregates too, and both equal their definition.
    assert_eq!(
        aggregates(inc.store()).await,
        aggregates_hold(rebuilt.store()).await
    );
    aggregates_hold(inc.store()).await;
    // The offline clock-out made Wednesday whole; its revision says it
    // changed after being written.
    let wed = inc
        .store()
        .days("acme", "2025-03-05", None, Some("E1"))
        .await
        .unwrap();
    let e1 = row(&wed, "E1", "");
    assert_eq!(e1.status, "normal");
    assert!(e1.revision >= 1, "{e1:?}");
    // E2 (roster, never punched) is absent on each workday, and the
    // weekend is a rest day.
    let e2 = rebuilt
        .store()
        .days("acme", "2025-03-07", None, Some("E2"))
        .await
        .unwrap();
    assert_eq!(row(&e2, "E2", "").status, "absent");
    let sat = rebuilt
        .store()
        .days("acme", "2025-03-08", None, Some("E2"))
        .await
        .unwrap();
    assert_eq!(row(&sat, "E2", "").status, "rest_day");
    log.close();
}

#[tokio::test]
async fn a_tenant_without_rules_keeps_its_own_name_in_the_results() {
    let dir = tempfile::tempdir().unwrap();
    tenant_without_rules(&dir, &Stores::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_without_rules_keeps_its_own_name_in_the_results_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::postgres(dir.path());
    tenant_without_rules(&dir, &stores).await;
}

async fn tenant_without_rules(dir: &tempfile::TempDir, stores: &Stores) {
    let m = Materializer::new(stores.open(dir.path(), "r").await, handle());
    let at = t("2025-03-04T09:00:00Z");
    let p = Punch {
        id: 9,
        employee: "X1",
        kind: IN,
        at,
        received: at,
    };
    m.apply(&[(0, record_in("initech", &p))], 1, at)
        .await
        .unwrap();
    let rows = m
        .store()
        .days("initech", "2025-03-04", None, None)
        .await
        .unwrap();
    // Judged by the defaults (UTC, free schedule): a normal day.
    assert_eq!(row(&rows, "X1", "").status, "normal");
    assert!(
        m.store()
            .days("", "2025-03-04", None, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(m.store().position().await.unwrap(), 1);
}

/// The `DayResult` records in `log` from `from` on, as the JSON a sink
/// sends, and the position after them.
fn day_records(log: &LogHandle, from: Lsn) -> (Vec<serde_json::Value>, Lsn) {
    let mut reader = log.reader(from).unwrap();
    let mut out = Vec::new();
    while let Some(e) = reader.next_entry().unwrap() {
        let view = fencegate_schema::parse_record(e.payload).unwrap();
        let json = fencegate::record_json::record_json(&view);
        if json["type"] == "day_result" {
            out.push(json);
        }
    }
    (out, reader.position())
}

#[tokio::test]
async fn closed_days_and_their_changes_go_downstream_as_records() {
    let dir = tempfile::tempdir().unwrap();
    days_go_downstream(&dir, &Stores::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_days_and_their_changes_go_downstream_as_records_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::postgres(dir.path());
    days_go_downstream(&dir, &stores).await;
}

/// docs/ATTENDANCE.md, "Day results downstream": a day's result is a
/// record in the log (and so downstream) once it closes, and again after
/// each change; never while it is open, never twice for one write, with an
/// id that follows the content; a rebuild sends nothing of its own.
async fn days_go_downstream(dir: &tempfile::TempDir, stores: &Stores) {
    use fencegate::results::outbox::publish_round;
    let (log, _) = LogHandle::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let m = Materializer::new(stores.open(dir.path(), "results").await, handle());
    let store = m.store().clone();
    let mut reader = log.reader(Lsn(0)).unwrap();
    let send = |at: &str| {
        let (store, log) = (store.clone(), log.clone());
        let now = sh(at);
        async move {
            publish_round(&store, &log, Some("edge-1"), now)
                .await
                .unwrap()
        }
    };
    append(
        &log,
        &[Punch {
            id: 1,
            employee: "E1",
            kind: IN,
            at: sh("2025-03-04T09:00:00"),
            received: sh("2025-03-04T09:00:00"),
        }],
    )
    .await;
    m.drain(&mut reader, sh("2025-03-04T12:00:00"))
        .await
        .unwrap();
    m.close_due(sh("2025-03-04T12:00:00")).await.unwrap();
    // Open: E1's missing_out is not final, nothing goes.
    assert_eq!(send("2025-03-04T12:00:00").await, 0);
    let (none, mut seen) = day_records(&log, Lsn(0));
    assert!(none.is_empty(), "{none:#?}");

    // 22:00: the day closes; every closed day row goes, absentees too,
    // each once, saying what the store says.
    m.close_due(sh("2025-03-04T22:00:00")).await.unwrap();
    let sent = send("2025-03-04T22:00:00").await;
    let (records, next) = day_records(&log, seen);
    seen = next;
    let rows = store.all_rows().await.unwrap();
    let closed_days: Vec<&DayRow> = rows
        .iter()
        .filter(|r| r.slot.is_empty() && r.closed)
        .collect();
    assert!(closed_days.len() >= 2, "{rows:#?}");
    assert_eq!(
        (sent, records.len()),
        (closed_days.len(), closed_days.len())
    );
    for day in &closed_days {
        let r = records
            .iter()
            .find(|r| {
                r["tenant"] == day.tenant.as_str()
                    && r["employee_id"] == day.employee.as_str()
                    && r["date"] == day.date.as_str()
            })
            .unwrap_or_else(|| panic!("no record for {day:#?} in {records:#?}"));
        assert_eq!(r["status"], day.status.as_str(), "{r}");
        assert_eq!(r["node"], "edge-1");
        let slots: Vec<(&str, &str)> = rows
            .iter()
            .filter(|s| s.employee == day.employee && s.date == day.date && !s.slot.is_empty())
            .map(|s| (s.slot.as_str(), s.status.as_str()))
            .collect();
        let sent_slots: Vec<(&str, &str)> = r["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["slot"].as_str().unwrap(), s["status"].as_str().unwrap()))
            .collect();
        assert_eq!(sent_slots, slots, "{r}");
    }
    let e1_closed = records
        .iter()
        .find(|r| r["employee_id"] == "E1")
        .unwrap()
        .clone();
    assert_eq!(e1_closed["status"], "missing_out");
    assert!(
        records
            .iter()
            .any(|r| r["employee_id"] == "E2" && r["status"] == "absent")
    );
    // Sent is sent: nothing goes twice.
    assert_eq!(send("2025-03-04T22:01:00").await, 0);

    // Two days later E1's offline clock-out reopens the closed day: the
    // change goes, E1's day alone, under a new id. The materializer reads
    // past the day records in the log.
    append(
        &log,
        &[Punch {
            id: 2,
            employee: "E1",
            kind: OUT,
            at: sh("2025-03-04T18:05:00"),
            received: sh("2025-03-06T08:00:00"),
        }],
    )
    .await;
    m.drain(&mut reader, sh("2025-03-06T08:00:00"))
        .await
        .unwrap();
    // 03-05 closed meanwhile too (its roster went absent): only 03-04's
    // change is looked at here.
    send("2025-03-06T08:00:00").await;
    let (changed, next) = day_records(&log, seen);
    seen = next;
    let e1: Vec<_> = changed
        .iter()
        .filter(|r| r["date"] == "2025-03-04")
        .collect();
    assert_eq!(e1.len(), 1, "{changed:#?}");
    assert_eq!(
        (
            e1[0]["employee_id"].as_str(),
            e1[0]["status"].as_str(),
            e1[0]["revision"].as_i64()
        ),
        (Some("E1"), Some("normal"), Some(2))
    );
    assert_ne!(e1[0]["record_id"], e1_closed["record_id"]);

    // The same day noted again later (a day changed and changed back) is
    // a new record: it must not be dropped as a copy of the first.
    let key = |e: &str| ("acme".to_owned(), "2025-03-04".to_owned(), e.to_owned());
    store.reset_day_outbox(&[key("E1")]).await.unwrap();
    assert_eq!(send("2025-03-06T08:01:00").await, 1);
    let (again, next) = day_records(&log, seen);
    seen = next;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["status"], e1[0]["status"]);
    assert_ne!(again[0]["record_id"], e1[0]["record_id"]);
    // One note sent twice (a crash after the append, before the note was
    // forgotten) is one id: the downstream drops the copy.
    let msg = fencegate_schema::DayResultMsg {
        employee_id: "E1".into(),
        date: "2025-03-04".into(),
        department: None,
        group: Some("office".into()),
        status: "normal".into(),
        late_min: 0,
        early_min: 0,
        worked_min: 540,
        overtime_min: 5,
        in_ms: 1,
        out_ms: 2,
        revision: 2,
        slots: Vec::new(),
    };
    use fencegate::results::outbox::day_result_record_id as id;
    assert_eq!(id("acme", 7, &msg), id("acme", 7, &msg.clone()));
    assert_ne!(id("acme", 7, &msg), id("acme", 8, &msg));
    assert_ne!(id("acme", 7, &msg), id("globex", 7, &msg));

    // A rebuild re-derives days that were sent: it sends none, and a day
    // waiting to be sent before it still goes.
    store.reset_day_outbox(&[key("E2")]).await.unwrap();
    store.clear().await.unwrap();
    let mut from_start = log.reader(Lsn(0)).unwrap();
    m.rebuild(&mut from_start, sh("2025-03-06T08:02:00"))
        .await
        .unwrap();
    assert_eq!(store.day_outbox().await.unwrap(), vec![key("E2")]);
    assert_eq!(send("2025-03-06T08:03:00").await, 1);
    let (after, _) = day_records(&log, seen);
    assert_eq!(after.len(), 1);
    assert_eq!(
        (
            after[0]["employee_id"].as_str(),
            after[0]["status"].as_str()
        ),
        (Some("E2"), Some("absent"))
    );
    log.close();
}

/// A fleet's pings change no day result, so the materializer no longer
/// commits a transaction for each batch of them (hundreds a second at a
/// fleet's knee); the position past them is committed once a second while
/// they come and when the log goes idle, and the log cursor, which holds
/// retention back, follows only committed positions. Red when a skipped
/// position is never committed (a restart would reread every ping since
/// the last punch) or when the cursor runs ahead of the store's position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_results_position_passes_a_stretch_of_pings_once_the_log_is_idle() {
    use fencegate_schema::{PingRecordMsg, RecordBodyMsg, RecordMsg};
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = LogHandle::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let m = Materializer::new(Stores::Sqlite.open(dir.path(), "results").await, handle());
    let store = m.store().clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(m.run(log.clone(), stop.clone(), Duration::from_millis(50)));

    let at = sh("2025-03-04T09:00:00");
    append(
        &log,
        &[Punch {
            id: 1,
            employee: "E1",
            kind: IN,
            at,
            received: at,
        }],
    )
    .await;
    let mut fbb = FlatBufferBuilder::new();
    for i in 0..200 {
        let ping = RecordMsg {
            record_id: [i as u8; 16],
            tenant: "acme".into(),
            gateway_time_ms: at + i,
            node: None,
            body: RecordBodyMsg::Ping(PingRecordMsg {
                device_id: "truck-1".into(),
                time_ms: at + i,
                lat: 31.2,
                lon: 121.4,
                accuracy_m: 5.0,
                h3_cell: 0,
                fence_ids: vec![],
                heartbeat: false,
                late: false,
            }),
        };
        let bytes = ping.encode_into(&mut fbb).to_vec();
        log.append(&bytes, at as u64).unwrap().await.unwrap();
    }
    let end = log.committed().0;

    // Idle now: within a second or so, the position passes every ping.
    let deadline = fencegate::clock::tokio_now() + Duration::from_secs(10);
    while store.position().await.unwrap() != end {
        assert!(
            fencegate::clock::tokio_now() < deadline,
            "the results position stayed at {} with the log's end at {end}",
            store.position().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The punch was applied, and the cursor follows the committed position.
    let rows = store.days("acme", "2025-03-04", None, None).await.unwrap();
    assert!(rows.iter().any(|r| r.employee == "E1"), "{rows:#?}");
    let deadline = fencegate::clock::tokio_now() + Duration::from_secs(10);
    loop {
        let cursor = log
            .cursors()
            .into_iter()
            .find(|(name, _)| name == "results")
            .map(|(_, at)| at.0);
        let position = store.position().await.unwrap();
        assert!(
            cursor.is_some_and(|c| c <= position),
            "cursor {cursor:?} ahead of the store's position {position}"
        );
        if cursor == Some(end) {
            break;
        }
        assert!(
            fencegate::clock::tokio_now() < deadline,
            "cursor {cursor:?}, end {end}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    run.await.unwrap();
}
