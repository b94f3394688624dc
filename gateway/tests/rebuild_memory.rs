//! A rebuild into an empty store computes its days from the punches it
//! read, held in memory (`results/bulk.rs`), and the store stays the
//! source only for employees an HR record touches. Checked here against
//! the node's own path over the same log (every batch's touched days
//! recomputed as it commits, then the close), on seeded random logs: a
//! roster in three groups (one a cross-midnight shift), employees the
//! rules do not list, a tenant without a section, punches of every verdict,
//! offline uploads, repeated records, leave and decisions, and a rebuild
//! time that leaves the last days open. Every row must say the same, and
//! the dashboard's aggregates must be equal and equal their definition
//! (`recount_stats`). SQLite and PostgreSQL.
//!
//! Also: a rebuild stopped halfway leaves its marker, and the node's
//! materializer starts it over when it starts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fencegate::log::{LogConfig, LogHandle, LogReader, Lsn};
use fencegate::results::{Materializer, ResultsStore};
use fencegate::rules::config::{CompileContext, compile_text, fixed_qr_keys};
use fencegate::rules::holidays::Calendars;
use fencegate::rules::schedule::{civil_from_day, day_number};
use fencegate::rules::{AttendanceSettings, RulesHandle};
use fencegate_schema::{
    ApprovalDecisionMsg, AttendanceRef, AttendanceStatus as S, HrMsg, LeaveEntryMsg, PunchKind,
    PunchMethod, PunchRecordRef, Reason, RecordBodyMsg, RecordBodyRef, RecordMsg, RecordRef,
    Verdict,
};
use flatbuffers::FlatBufferBuilder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod results_rig;
use results_rig::{Stores, aggregates};

const ROSTER: usize = 300;
/// 2025-03-03T00:00+08:00, a Monday.
const MON_MS: i64 = 1_740_931_200_000;
const DAY_MS: i64 = 86_400_000;
const MIN_MS: i64 = 60_000;
/// Days of punches.
const DAYS: i64 = 12;

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

/// Rules listing the first `roster` employees (the log's others are
/// not listed).
fn rules_handle(rng: &mut StdRng, roster: usize) -> Arc<RulesHandle> {
    compile(rules_text(rng, roster))
}

/// The rules `text` compiled for tenant acme.
fn compile(text: String) -> Arc<RulesHandle> {
    let mut keys = fixed_qr_keys(7);
    let mut ctx = CompileContext {
        calendars: Calendars::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/holidays"),
        ),
        settings: AttendanceSettings::default(),
        qr_key: &mut keys,
    };
    let rules = compile_text(&text, "tests/rebuild_memory.rs", &["acme"], &mut ctx)
        .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(RulesHandle::new(rules, text))
}

/// The rules file: [`GROUPS`] and a roster of `roster` employees.
fn rules_text(rng: &mut StdRng, roster: usize) -> String {
    let mut text = String::from(GROUPS);
    for i in 0..roster {
        text.push_str(&format!("[tenants.acme.employees.E{i}]\n"));
        match rng.random_range(0..10) {
            0..=5 => {}
            6 | 7 => text.push_str("group = \"lab\"\n"),
            _ => text.push_str("group = \"guards\"\n"),
        }
        if rng.random_bool(0.7) {
            let d = ["ops", "lab"][rng.random_range(0..2)];
            text.push_str(&format!("department = \"{d}\"\n"));
        }
    }
    text
}

fn date(day: i32) -> String {
    let (y, m, d) = civil_from_day(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A punch record of `tenant`'s `employee` at `at`, received at `received`.
#[allow(clippy::too_many_arguments)]
fn punch(
    id: u128,
    tenant: &str,
    employee: &str,
    kind: PunchKind,
    at: i64,
    received: i64,
    verdict: Verdict,
    status: S,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let r = RecordRef {
        record_id: id.to_be_bytes(),
        tenant,
        gateway_time_ms: received,
        node: Some("n1"),
        body: RecordBodyRef::Punch(PunchRecordRef {
            punch_id: id.to_be_bytes(),
            employee_id: employee,
            device_id: "phone",
            kind,
            method: PunchMethod::Gps,
            device_time_ms: at,
            position: None,
            verdict,
            reason: Reason::None,
            fence_ids: &[] as &[&str],
            nearest_fence_id: None,
            distance_m: 0.0,
            offline: received != at,
            mock_location: false,
            status,
            anomaly_flags: 0,
            slot: None,
            merged_into: None,
        }),
    };
    let att = AttendanceRef {
        attendance_time_ms: at,
        department: Some("ops"),
        needs_approval: verdict == Verdict::OutOfRange,
        ..AttendanceRef::default()
    };
    r.encode_with_attendance(&att, &mut fbb).to_vec()
}

fn hr(id: u128, at: i64, body: HrMsg) -> Vec<u8> {
    let msg = RecordMsg {
        record_id: id.to_be_bytes(),
        tenant: "acme".into(),
        gateway_time_ms: at,
        node: None,
        body: RecordBodyMsg::Hr(body),
    };
    msg.encode_into(&mut FlatBufferBuilder::new()).to_vec()
}

/// A seeded month's log: `(gateway time, record)` in append order.
fn random_log(rng: &mut StdRng) -> Vec<(i64, Vec<u8>)> {
    let mut out: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut pending = Vec::new();
    let mut id = 0u128;
    // 08:30, 09:00, 12:00, 13:00, 17:30, 18:00, 22:00, 06:00 (next day).
    let edges = [510, 540, 720, 780, 1050, 1080, 1320, 1800];
    for _ in 0..180 {
        let (tenant, who) = match rng.random_range(0..20) {
            0 => ("acme", format!("X{}", rng.random_range(0..6))),
            1 => ("ghost", format!("G{}", rng.random_range(0..4))),
            _ => ("acme", format!("E{}", rng.random_range(0..ROSTER))),
        };
        for d in 0..DAYS {
            if !rng.random_bool(0.6) {
                continue;
            }
            for _ in 0..rng.random_range(1..4) {
                id += 1;
                let minute = edges[rng.random_range(0..edges.len())] + rng.random_range(-90..150);
                let at = MON_MS + d * DAY_MS + minute * MIN_MS;
                let (verdict, status) = match rng.random_range(0..8) {
                    0 => (Verdict::OutOfRange, S::OutOfRangePendingApproval),
                    1 => (Verdict::RepeatMerged, S::RepeatMerged),
                    2 => (Verdict::Rejected, S::Normal),
                    3 => (Verdict::Accepted, S::Field),
                    4 => (Verdict::Accepted, S::Late),
                    _ => (Verdict::Accepted, S::Normal),
                };
                // Some punches are uploaded a day or two late (offline).
                let received = if rng.random_bool(0.05) {
                    at + rng.random_range(1..3) * DAY_MS
                } else {
                    at
                };
                let kind = if rng.random_bool(0.5) {
                    PunchKind::In
                } else {
                    PunchKind::Out
                };
                let bytes = punch(id, tenant, &who, kind, at, received, verdict, status);
                if verdict == Verdict::OutOfRange && tenant == "acme" {
                    pending.push((id, who.clone(), received));
                }
                // A record forwarded twice lies in the log twice.
                if rng.random_bool(0.02) {
                    out.push((received, bytes.clone()));
                }
                out.push((received, bytes));
            }
        }
    }
    // Decisions on half of the pending punches, after them.
    for (target, who, at) in pending {
        if rng.random_bool(0.5) {
            id += 1;
            let body = HrMsg::Decision(ApprovalDecisionMsg {
                target_record_id: target.to_be_bytes(),
                decision_id: format!("d-{id}"),
                approve: rng.random_bool(0.5),
                decider: Some("boss".into()),
                role: Some("tenant_admin".into()),
                comment: None,
                employee_id: Some(who),
                department: Some("ops".into()),
            });
            out.push((at + 3_600_000, hr(id, at + 3_600_000, body)));
        }
    }
    // Leave and business trips for a few roster employees.
    let monday = day_number(2025, 3, 3);
    for i in 0..25 {
        id += 1;
        let from = monday + rng.random_range(-2..10);
        let to = from + rng.random_range(0..4);
        let at = MON_MS + rng.random_range(0..DAYS) * DAY_MS;
        let body = HrMsg::Leave(LeaveEntryMsg {
            source_id: format!("l-{i}"),
            employee_id: format!("E{}", rng.random_range(0..ROSTER)),
            from_date: date(from),
            to_date: date(to),
            leave_type: ["annual", "sick", "business_trip"][i % 3].into(),
            entered_by: Some("hr".into()),
        });
        out.push((at, hr(id, at, body)));
    }
    // In the order the node appended them: by gateway time.
    out.sort_by_key(|(at, _)| *at);
    out
}

async fn run(seed: u64, dir: &Path, stores: &Stores) {
    let mut rng = StdRng::seed_from_u64(seed);
    let rules = rules_handle(&mut rng, ROSTER);
    let log_dir = dir.join(format!("log-{seed}"));
    let (log, _) = LogHandle::open(LogConfig::new(&log_dir)).unwrap();
    for (at, bytes) in random_log(&mut rng) {
        log.append(&bytes, at as u64).unwrap().await.unwrap();
    }
    log.close();
    // Wednesday of the second week at noon: the first week and a half
    // closed, the rest open (or not begun).
    let now = MON_MS + 9 * DAY_MS + 4 * 3_600_000;
    let reader = || LogReader::open_dir(&log_dir, Lsn(0), Duration::from_millis(10)).unwrap();

    let node = Materializer::new(
        stores.open(dir, &format!("node{seed}")).await,
        rules.clone(),
    );
    node.drain(&mut reader(), now).await.unwrap();
    node.close_due(now).await.unwrap();
    // Parts of every size: one part for the whole log, and parts of 7, 1
    // and 13 employee days, each computed while the one before is written.
    let part = [50_000, 7, 1, 13][(seed as usize - 1) % 4];
    let rebuilt = Materializer::new(
        stores.open_rebuild(dir, &format!("rebuilt{seed}")).await,
        rules,
    )
    .with_rebuild_part(part);
    let (_, closed) = rebuilt.rebuild(&mut reader(), now).await.unwrap();
    assert!(
        closed >= ROSTER,
        "seed {seed}: {closed} employee days closed"
    );

    let (a, b) = (
        node.store().all_rows().await.unwrap(),
        rebuilt.store().all_rows().await.unwrap(),
    );
    assert!(a.len() > 3 * ROSTER, "seed {seed}: {} rows", a.len());
    let open = b.iter().filter(|r| !r.closed).count();
    assert!(open > 0, "seed {seed}: the rebuild time leaves days open");
    assert_eq!(a.len(), b.len(), "seed {seed}: row count, node vs rebuild");
    for (x, y) in a.iter().zip(&b) {
        assert!(x.same_result(y), "seed {seed}: node {x:#?}\nrebuilt {y:#?}");
    }
    assert_eq!(
        node.store().all_hr().await.unwrap(),
        rebuilt.store().all_hr().await.unwrap(),
        "seed {seed}: HR tables"
    );
    let (x, y) = (
        aggregates(node.store()).await,
        aggregates(rebuilt.store()).await,
    );
    assert!(!y.is_empty());
    assert_eq!(x, y, "seed {seed}: aggregates, node vs rebuild");
    rebuilt.store().recount_stats().await.unwrap();
    assert_eq!(
        y,
        aggregates(rebuilt.store()).await,
        "seed {seed}: the rebuild's aggregates vs their definition"
    );
    // Nothing of a rebuild goes downstream.
    assert!(rebuilt.store().day_outbox().await.unwrap().is_empty());
    // The CLI's scratch file, sealed, opens as an ordinary store with the
    // same rows.
    if let Stores::Sqlite = stores {
        rebuilt.store().clone().seal().await.unwrap();
        let path = dir.join(format!("rebuilt{seed}.sqlite"));
        let sealed = ResultsStore::open_sqlite(&path).await.unwrap();
        let c = sealed.all_rows().await.unwrap();
        assert_eq!(b.len(), c.len(), "seed {seed}: rows after the seal");
        for (x, y) in b.iter().zip(&c) {
            assert!(x.same_result(y), "seed {seed}: sealed {y:#?}");
        }
        assert_eq!(y, aggregates(&sealed).await, "seed {seed}: sealed");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(sealed.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal", "seed {seed}: the sealed file's journal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_memory_equals_the_nodes_path_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [1, 2, 3] {
        run(seed, dir.path(), &Stores::Sqlite).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_memory_equals_the_nodes_path_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::postgres(dir.path());
    run(4, dir.path(), &stores).await;
}

/// A rebuild stopped halfway (its marker still in the store, rows and
/// aggregates missing, the log position past the end) is started over by
/// the node's materializer when it starts: the store ends as a rebuild
/// that ran to its end leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_over_a_rebuild_that_stopped_halfway() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    // Rebuilt at today's date, every day since March 2025 closes for
    // the roster: a small one.
    let rules = rules_handle(&mut rng, 20);
    let log_dir = dir.path().join("log");
    let (log, _) = LogHandle::open(LogConfig::new(&log_dir)).unwrap();
    for (at, bytes) in random_log(&mut rng) {
        log.append(&bytes, at as u64).unwrap().await.unwrap();
    }
    let reader = || LogReader::open_dir(&log_dir, Lsn(0), Duration::from_millis(10)).unwrap();
    // What a stop leaves, made from a whole rebuild: a third of the rows
    // and the aggregates gone, the marker back.
    let store = ResultsStore::open_sqlite(&dir.path().join("results.sqlite"))
        .await
        .unwrap();
    let node = Materializer::new(store.clone(), rules.clone());
    let now = fencegate::clock::unix_ms();
    node.rebuild(&mut reader(), now).await.unwrap();
    let whole = store.all_rows().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    sqlx::query("DELETE FROM day_results WHERE employee LIKE 'E1%'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM day_stats")
        .execute(&mut *tx)
        .await
        .unwrap();
    ResultsStore::set_meta(&mut tx, "rebuild_running", 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(store.rebuild_stopped().await.unwrap());
    assert!(store.all_rows().await.unwrap().len() < whole.len());

    // The node's materializer, on its log.
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(
        node.clone()
            .run(log.clone(), stop.clone(), Duration::from_millis(50)),
    );
    let mut waited = 0;
    while store.rebuild_stopped().await.unwrap()
        || store.all_rows().await.unwrap().len() < whole.len()
    {
        waited += 1;
        assert!(
            waited < 600,
            "the node did not start the rebuild over within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await.unwrap();
    log.close();

    let fresh = ResultsStore::open_sqlite(&dir.path().join("fresh.sqlite"))
        .await
        .unwrap();
    let oracle = Materializer::new(fresh.clone(), rules);
    oracle
        .rebuild(&mut reader(), fencegate::clock::unix_ms())
        .await
        .unwrap();
    let (a, b) = (
        store.all_rows().await.unwrap(),
        fresh.all_rows().await.unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(x.same_result(y), "started over {x:#?}\nrebuilt {y:#?}");
    }
    assert_eq!(aggregates(&store).await, aggregates(&fresh).await);
    assert!(!aggregates(&store).await.is_empty());
}

/// `fencegate results rebuild` on a SQLite store builds a new file beside
/// the live one and renames it into place: the live store's rows, and a
/// WAL a killed node left beside it, are gone, not mixed in; the new file
/// is an ordinary WAL-mode store, whole (`integrity_check`); a half-built
/// file a stopped rebuild left is deleted first. While a node runs on the
/// log (its lock held), or a write transaction is open on the live store,
/// the rebuild fails and the live store stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_rebuilds_a_sqlite_store_beside_it_and_renames_it_into_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = StdRng::seed_from_u64(12);
    let text = rules_text(&mut rng, 20);
    std::fs::write(d.join("rules.toml"), &text).unwrap();
    let config = d.join("fencegate.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\n[[tenants]]\nid = \"acme\"\n[attendance]\nrules = {:?}\nholidays_dir = {:?}\n",
            d.join("data"),
            d.join("rules.toml"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/holidays"),
        ),
    )
    .unwrap();
    let log_dir = d.join("data/log");
    let (log, _) = LogHandle::open(LogConfig::new(&log_dir)).unwrap();
    for (at, bytes) in random_log(&mut rng) {
        log.append(&bytes, at as u64).unwrap().await.unwrap();
    }
    log.close();

    // The live store as a killed node leaves it: a row only it has, still
    // in its WAL (the files copied while the connection is open).
    let live = d.join("data/results.sqlite");
    let wal = d.join("data/results.sqlite-wal");
    let node = ResultsStore::open_sqlite(&d.join("node.sqlite"))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO day_results (tenant, employee, date, slot, grp, status, late_min, early_min, \
         worked_min, overtime_min, closed, revision) \
         VALUES ('acme', 'ghost', '2025-03-03', '', 'office', 'normal', 0, 0, 0, 0, 1, 0)",
    )
    .execute(node.pool())
    .await
    .unwrap();
    let crashed = d.join("crashed");
    std::fs::create_dir(&crashed).unwrap();
    std::fs::copy(d.join("node.sqlite"), crashed.join("db")).unwrap();
    std::fs::copy(d.join("node.sqlite-wal"), crashed.join("wal")).unwrap();
    node.pool().close().await;
    assert!(std::fs::metadata(crashed.join("wal")).unwrap().len() > 0);
    // Puts the killed node's files in place (each check below opens the
    // store, which folds the WAL into the file: the next check gets the
    // WAL back).
    let install = || {
        let _ = std::fs::remove_file(d.join("data/results.sqlite-shm"));
        std::fs::copy(crashed.join("db"), &live).unwrap();
        std::fs::copy(crashed.join("wal"), &wal).unwrap();
    };
    install();
    let ghosts = |store: ResultsStore| async move {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM day_results WHERE employee = 'ghost'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        store.pool().close().await;
        n
    };
    // What a rebuild that stopped halfway left (a node warns of it at
    // start).
    std::fs::write(d.join("data/results.sqlite.rebuild"), b"half a file").unwrap();
    let url = fencegate::results::store::sqlite_url(&live);
    assert_eq!(
        fencegate::results::store::leftover_rebuild(&url),
        Some(d.join("data/results.sqlite.rebuild"))
    );

    // The CLI, off the runtime's threads: it blocks until the process ends.
    let rebuild = |config: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_fencegate"))
                .args(["results", "rebuild", "--config"])
                .arg(config)
                .output()
                .unwrap()
        })
    };
    // A node running on the log (it holds the log's lock).
    let (running, _) = LogHandle::open(LogConfig::new(&log_dir)).unwrap();
    let out = rebuild(config.clone()).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the rebuild ran beside a node");
    assert!(err.contains("is held by a running node: stop it"), "{err}");
    running.close();
    drop(running);
    assert_eq!(
        ghosts(ResultsStore::open_sqlite(&live).await.unwrap()).await,
        1
    );

    // In use: another process's write transaction is open on the live
    // store (a reader that needs no WAL frame does not stop the rebuild:
    // it goes on reading the old file).
    install();
    let reader_store = ResultsStore::open_sqlite(&live).await.unwrap();
    let mut held = reader_store.begin().await.unwrap();
    sqlx::query("DELETE FROM day_outbox")
        .execute(&mut *held)
        .await
        .unwrap();
    let out = rebuild(config.clone()).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the rebuild replaced a store in use: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(err.contains("is in use: stop the node"), "{err}");
    held.rollback().await.unwrap();
    reader_store.pool().close().await;
    assert_eq!(
        ghosts(ResultsStore::open_sqlite(&live).await.unwrap()).await,
        1
    );

    // Stopped: the killed node's files replaced.
    install();
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    let out = rebuild(config.clone()).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!d.join("data/results.sqlite.rebuild").exists());
    assert_eq!(fencegate::results::store::leftover_rebuild(&url), None);
    let store = ResultsStore::open_sqlite(&live).await.unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let rows = store.all_rows().await.unwrap();
    assert_eq!(
        ghosts(store).await,
        0,
        "the old store's WAL was replayed into the new file"
    );

    // The same log rebuilt here, into an ordinary store.
    let rules = compile(text);
    let oracle = Materializer::new(
        ResultsStore::open_sqlite(&d.join("oracle.sqlite"))
            .await
            .unwrap(),
        rules,
    );
    let mut reader = LogReader::open_dir(&log_dir, Lsn(0), Duration::from_millis(10)).unwrap();
    oracle
        .rebuild(&mut reader, fencegate::clock::unix_ms())
        .await
        .unwrap();
    let want = oracle.store().all_rows().await.unwrap();
    assert!(!want.is_empty());
    assert_eq!(rows.len(), want.len());
    for (x, y) in rows.iter().zip(&want) {
        assert!(x.same_result(y), "CLI {x:#?}\nhere {y:#?}");
    }
}
