//! The batched recompute (set reads per chunk of employees, multi-row
//! writes) against the per-employee path it replaced, on seeded random
//! rosters: two stores are filled identically (punches of every verdict,
//! decisions, leave and business trips, stale rows of another group or of
//! a slot that no longer exists, employees the rules do not list), then
//! the same touched days are recomputed and the same days closed, one
//! store each way. Every row (revision included) and every aggregate row
//! must be equal, and the aggregates equal their definition
//! (`recount_stats`). The roster (1,050) spans three chunks of 500, and
//! the touched days cross a span boundary. SQLite and PostgreSQL.

use std::path::Path;
use std::sync::Arc;

use fencegate::results::store::PunchRow;
use fencegate::results::{DayRow, Materializer, Recompute, ResultsStore};
use fencegate::rules::config::{CompileContext, compile_text, fixed_qr_keys};
use fencegate::rules::holidays::Calendars;
use fencegate::rules::schedule::{civil_from_day, day_number};
use fencegate::rules::{AttendanceSettings, Rules, RulesHandle};
use fencegate_schema::{AttendanceStatus, PunchKind, Verdict};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod results_rig;
use results_rig::aggregates;

const ROSTER: usize = 1_050;
/// 2025-03-03T00:00+08:00, a Monday.
const MON_MS: i64 = 1_740_931_200_000;
const DAY_MS: i64 = 86_400_000;
const MIN_MS: i64 = 60_000;

const GROUPS: &str = r#"
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
workdays = ["mon", "tue", "wed", "thu", "fri", "sat"]
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
supervisor = "E0"
[tenants.acme.departments.lab]
supervisor = "E1"
"#;

fn employee(i: usize) -> String {
    format!("E{i}")
}

/// The roster: groups and departments drawn from `rng`.
fn rules_text(rng: &mut StdRng) -> String {
    let mut s = String::from(GROUPS);
    for i in 0..ROSTER {
        s.push_str(&format!("[tenants.acme.employees.{}]\n", employee(i)));
        match rng.random_range(0..10) {
            0..=5 => {}
            6 | 7 => s.push_str("group = \"lab\"\n"),
            _ => s.push_str("group = \"guards\"\n"),
        }
        match rng.random_range(0..3) {
            0 => s.push_str("department = \"ops\"\n"),
            1 => s.push_str("department = \"lab\"\n"),
            _ => {}
        }
    }
    s
}

fn compile(text: &str) -> Rules {
    let mut keys = fixed_qr_keys(7);
    let mut ctx = CompileContext {
        calendars: Calendars::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/holidays"),
        ),
        settings: AttendanceSettings::default(),
        qr_key: &mut keys,
    };
    compile_text(text, "tests/batched_results.rs", &["acme"], &mut ctx)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn date(day: i32) -> String {
    let (y, m, d) = civil_from_day(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Someone who punches: mostly the roster, sometimes an employee the rules
/// do not list.
fn someone(rng: &mut StdRng) -> String {
    if rng.random_bool(0.05) {
        format!("X{}", rng.random_range(0..8))
    } else {
        employee(rng.random_range(0..ROSTER))
    }
}

/// A punch near a slot edge of day `d` (days from Monday), of any verdict.
fn random_punch(rng: &mut StdRng, n: usize, who: &str, d: i64) -> (PunchRow, Option<bool>) {
    // 08:30, 09:00, 12:00, 13:00, 17:30, 18:00, 22:00, 06:00 (next day).
    let edges = [510, 540, 720, 780, 1050, 1080, 1320, 1800];
    let minute = edges[rng.random_range(0..edges.len())] + rng.random_range(-90..150);
    let verdicts = [
        Verdict::Accepted,
        Verdict::Accepted,
        Verdict::Accepted,
        Verdict::OutOfRange,
        Verdict::RepeatMerged,
        Verdict::Rejected,
    ];
    let verdict = verdicts[rng.random_range(0..verdicts.len())];
    let status = match verdict {
        Verdict::OutOfRange => AttendanceStatus::OutOfRangePendingApproval,
        Verdict::RepeatMerged => AttendanceStatus::RepeatMerged,
        _ if rng.random_bool(0.1) => AttendanceStatus::Field,
        _ => AttendanceStatus::Normal,
    };
    let needs_approval = verdict == Verdict::OutOfRange;
    let decision = if needs_approval && rng.random_bool(0.5) {
        Some(rng.random_bool(0.5))
    } else {
        None
    };
    let row = PunchRow {
        record_id: format!("p-{n:06}"),
        lsn: n as i64,
        tenant: "acme".into(),
        employee: who.into(),
        kind: if rng.random_bool(0.5) {
            PunchKind::In
        } else {
            PunchKind::Out
        },
        at_ms: MON_MS + d * DAY_MS + minute * MIN_MS,
        verdict,
        status,
        needs_approval,
        flags: 0,
        department: None,
        slot: None,
    };
    (row, decision)
}

/// What both stores are given: punches (with decisions), leave, stale rows.
struct World {
    punches: Vec<(PunchRow, Option<bool>)>,
    leave: Vec<(String, String, String, &'static str)>,
    stale: Vec<DayRow>,
}

fn world(rng: &mut StdRng, monday: i32) -> World {
    let mut punches = Vec::new();
    // 200 people punch on random days of the fortnight, a few times a day.
    for _ in 0..200 {
        let who = someone(rng);
        for d in 0..10 {
            if rng.random_bool(0.6) {
                for _ in 0..rng.random_range(1..5) {
                    let n = punches.len();
                    punches.push(random_punch(rng, n, &who, d));
                }
            }
        }
    }
    let kinds = ["annual", "sick", "business_trip"];
    let leave = (0..60)
        .map(|i| {
            let from = monday + rng.random_range(-3..9);
            let to = from + rng.random_range(0..4);
            (someone(rng), date(from), date(to), kinds[i % kinds.len()])
        })
        .collect();
    let mut stale = Vec::new();
    for _ in 0..80 {
        let who = someone(rng);
        let d = date(monday + rng.random_range(0..9));
        let base = DayRow {
            tenant: "acme".into(),
            employee: who,
            date: d,
            slot: String::new(),
            department: Some("old".into()),
            // Rows of another group than the rules say, some of it one
            // that no longer exists.
            group: ["office", "lab", "guards", "gone"][rng.random_range(0..4)].into(),
            status: "normal".into(),
            late_min: rng.random_range(0..3) * 7,
            early_min: 0,
            worked_min: 480,
            overtime_min: rng.random_range(0..2) * 30,
            in_ms: None,
            out_ms: None,
            closed: rng.random_bool(0.5),
            revision: rng.random_range(0..3),
        };
        // A slot of the rules (rewritten) or one that no longer exists
        // (deleted).
        let slot = ["day", "morning", "ghost"][rng.random_range(0..3)];
        stale.push(DayRow {
            slot: slot.into(),
            ..base.clone()
        });
        stale.push(base);
    }
    stale.sort_by(|a, b| (&a.employee, &a.date, &a.slot).cmp(&(&b.employee, &b.date, &b.slot)));
    stale.dedup_by(|a, b| (&a.employee, &a.date, &a.slot) == (&b.employee, &b.date, &b.slot));
    World {
        punches,
        leave,
        stale,
    }
}

async fn fill(store: &ResultsStore, w: &World, punches: std::ops::Range<usize>, monday: i32) {
    let mut tx = store.begin().await.unwrap();
    for (p, decision) in &w.punches[punches.clone()] {
        ResultsStore::insert_punch(&mut tx, p).await.unwrap();
        if let Some(a) = decision {
            sqlx::query("UPDATE punches SET decision = $1 WHERE record_id = $2")
                .bind(i64::from(*a))
                .bind(&p.record_id)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
    }
    if punches.start == 0 {
        for (i, (e, from, to, kind)) in w.leave.iter().enumerate() {
            sqlx::query(
                "INSERT INTO leave_entries (tenant, source_id, employee, from_date, to_date, leave_type, entered_by, at_ms) \
                 VALUES ('acme', $1, $2, $3, $4, $5, NULL, 0)",
            )
            .bind(format!("l-{i}"))
            .bind(e)
            .bind(from)
            .bind(to)
            .bind(*kind)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        for r in &w.stale {
            ResultsStore::upsert_row(&mut tx, None, r).await.unwrap();
        }
        ResultsStore::set_meta(&mut tx, "start:acme", i64::from(monday))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

/// Every row and aggregate of the two stores equal, after `what`.
async fn same(a: &ResultsStore, b: &ResultsStore, what: &str) {
    let (x, y) = (a.all_rows().await.unwrap(), b.all_rows().await.unwrap());
    assert_eq!(
        x.len(),
        y.len(),
        "{what}: row count, batched vs per employee"
    );
    for (r, s) in x.iter().zip(&y) {
        assert_eq!(r, s, "{what}: batched vs per employee");
    }
    assert_eq!(
        aggregates(a).await,
        aggregates(b).await,
        "{what}: aggregates, batched vs per employee"
    );
}

/// One seed: the touched days, a late upload's days, then the close.
async fn run(seed: u64, open: impl AsyncFn(&str) -> ResultsStore) {
    let mut rng = StdRng::seed_from_u64(seed);
    let text = rules_text(&mut rng);
    let handle = || Arc::new(RulesHandle::new(compile(&text), text.clone()));
    let monday = day_number(2025, 3, 3);
    let w = world(&mut rng, monday);
    let batched = Materializer::new(open("batched").await, handle());
    let each = Materializer::new(open("each").await, handle());
    let split = w.punches.len() * 3 / 4;
    for m in [&batched, &each] {
        fill(m.store(), &w, 0..split, monday).await;
    }
    // Touched during the week: every punched day, and a few far ones (a
    // span boundary lies between day -40 and day +40).
    let mut touched: Vec<(String, String, i32)> = w.punches[..split]
        .iter()
        .map(|(p, _)| {
            let d = monday + ((p.at_ms - MON_MS).div_euclid(DAY_MS)) as i32;
            ("acme".to_owned(), p.employee.clone(), d)
        })
        .collect();
    for i in 0..30 {
        touched.push(("acme".into(), employee(i * 31), monday - 40 + i as i32 * 3));
    }
    let wednesday = MON_MS + 2 * DAY_MS + 12 * 60 * MIN_MS;
    let a = batched
        .recompute_days(&touched, wednesday, Recompute::Batched)
        .await
        .unwrap();
    let b = each
        .recompute_days(&touched, wednesday, Recompute::PerEmployee)
        .await
        .unwrap();
    assert_eq!(a, b);
    same(batched.store(), each.store(), "touched days").await;

    // Late uploads: the rest of the punches reopen their days.
    for m in [&batched, &each] {
        fill(m.store(), &w, split..w.punches.len(), monday).await;
    }
    let late: Vec<(String, String, i32)> = w.punches[split..]
        .iter()
        .map(|(p, _)| {
            let d = monday + ((p.at_ms - MON_MS).div_euclid(DAY_MS)) as i32;
            ("acme".to_owned(), p.employee.clone(), d)
        })
        .collect();
    batched
        .recompute_days(&late, wednesday, Recompute::Batched)
        .await
        .unwrap();
    each.recompute_days(&late, wednesday, Recompute::PerEmployee)
        .await
        .unwrap();
    same(batched.store(), each.store(), "late uploads").await;

    // Closing: Wednesday evening, then the next Wednesday (every day of
    // the fortnight so far, the roster's absentees included).
    for now in [
        MON_MS + 2 * DAY_MS + 23 * 60 * MIN_MS,
        MON_MS + 9 * DAY_MS + 12 * 60 * MIN_MS,
    ] {
        let a = batched
            .close_due_with(now, Recompute::Batched)
            .await
            .unwrap();
        let b = each
            .close_due_with(now, Recompute::PerEmployee)
            .await
            .unwrap();
        assert_eq!(a, b, "employee days closed");
        assert!(a > ROSTER, "{a} employee days closed");
        same(batched.store(), each.store(), "closed").await;
    }
    let rows = batched.store().all_rows().await.unwrap();
    for status in ["absent", "on_leave", "business_trip", "rest_day", "normal"] {
        assert!(
            rows.iter().any(|r| r.status == status),
            "seed {seed}: no {status} row: the world does not reach every path"
        );
    }
    assert!(
        rows.iter().all(|r| r.slot != "ghost"),
        "stale slots deleted"
    );
    // Both equal the aggregates' definition.
    let kept = aggregates(batched.store()).await;
    batched.store().recount_stats().await.unwrap();
    assert_eq!(aggregates(batched.store()).await, kept, "kept vs recounted");
}

#[tokio::test]
async fn batched_recompute_equals_per_employee_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [1, 2, 3] {
        let open = async |name: &str| {
            ResultsStore::open_sqlite(&dir.path().join(format!("{name}-{seed}.sqlite")))
                .await
                .unwrap()
        };
        run(seed, open).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_recompute_equals_per_employee_postgres() {
    let pg_dir = tempfile::tempdir().unwrap();
    let pg = fencegate_testkit::Postgres::start(pg_dir.path());
    let admin = ResultsStore::open(&pg.url()).await.unwrap();
    // Two databases on one server: one store each way.
    for name in ["batched", "each"] {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(admin.pool())
            .await
            .unwrap();
    }
    let base = pg.url();
    let open = async |name: &str| {
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("no database in {base}"),
        };
        ResultsStore::open(&url).await.unwrap()
    };
    run(4, open).await;
}
