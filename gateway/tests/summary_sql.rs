//! The monthly summary is computed by the database (`GROUP BY` in
//! `summary.rs`), not by fetching every day row; `summary::summarize` over
//! the rows is its definition. Random months (statuses, slots, departments
//! that change mid-month, days with and without punches, leave entries
//! that overlap) on SQLite and PostgreSQL: the store's live summary equals
//! `summarize` over the stored rows, for the tenant and for each
//! department.

use fencegate::results::ResultsStore;
use fencegate::results::store::DayRow;
use fencegate::results::summary::{EmployeeSummary, summarize};

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const DAY_STATUSES: [&str; 9] = [
    "normal",
    "late",
    "absent",
    "rest_day",
    "holiday",
    "on_leave",
    "business_trip",
    "field",
    "missing_out",
];
const SLOT_STATUSES: [&str; 8] = [
    "normal",
    "late",
    "early_leave",
    "absent",
    "missing_in",
    "missing_out",
    "field",
    "normal",
];
const DEPARTMENTS: [&str; 3] = ["d1", "d2", "d3"];

/// Random rows of March 2025 (and a few of February and April, which the
/// summary must leave out), and leave entries `(source, employee, from,
/// to, type)`.
#[allow(clippy::type_complexity)]
fn month(seed: u64) -> (Vec<DayRow>, Vec<(String, String, String, String, String)>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut rows = Vec::new();
    for e in 0..12 {
        let employee = format!("E{e:02}");
        let mut department = if rng.below(5) == 0 {
            None
        } else {
            Some(rng.pick(&DEPARTMENTS).to_owned())
        };
        for (m, last) in [("02", 28), ("03", 31), ("04", 30)] {
            for d in 1..=last {
                if m != "03" && rng.below(4) != 0 || rng.below(6) == 0 {
                    continue;
                }
                if rng.below(10) == 0 {
                    // Moved department (or lost it) mid-month.
                    department = match rng.below(3) {
                        0 => None,
                        _ => Some(rng.pick(&DEPARTMENTS).to_owned()),
                    };
                }
                let date = format!("2025-{m}-{d:02}");
                let status = rng.pick(&DAY_STATUSES);
                let punched = rng.below(3) != 0;
                let day = DayRow {
                    tenant: "acme".into(),
                    employee: employee.clone(),
                    date: date.clone(),
                    slot: String::new(),
                    department: department.clone(),
                    group: "office".into(),
                    status: status.into(),
                    late_min: rng.below(3) as i64 * 7,
                    early_min: rng.below(3) as i64 * 5,
                    worked_min: 480,
                    overtime_min: rng.below(4) as i64 * 30,
                    in_ms: punched.then_some(1_000),
                    out_ms: (punched && rng.below(2) == 0).then_some(2_000),
                    closed: rng.below(2) == 0,
                    revision: 0,
                };
                // Now and then slot rows without their day row.
                if rng.below(15) != 0 {
                    rows.push(day.clone());
                }
                for slot in ["am", "pm"].iter().take(rng.below(3) as usize) {
                    rows.push(DayRow {
                        slot: (*slot).into(),
                        status: rng.pick(&SLOT_STATUSES).into(),
                        late_min: rng.below(3) as i64 * 4,
                        early_min: rng.below(3) as i64 * 6,
                        overtime_min: rng.below(3) as i64 * 15,
                        ..day.clone()
                    });
                }
            }
        }
    }
    let mut leave = Vec::new();
    for k in 0..10 {
        let from = 1 + rng.below(31);
        let to = (from + rng.below(6)).min(31);
        leave.push((
            format!("hr-{k:02}"),
            format!("E{:02}", rng.below(12)),
            format!("2025-03-{from:02}"),
            format!("2025-03-{to:02}"),
            rng.pick(&["annual", "sick", "business_trip", "personal"])
                .to_owned(),
        ));
    }
    (rows, leave)
}

async fn check(store: &ResultsStore, seed: u64) {
    let (rows, leave) = month(seed);
    let mut tx = store.begin().await.unwrap();
    for r in &rows {
        ResultsStore::upsert_row(&mut tx, None, r).await.unwrap();
    }
    for (source, employee, from, to, ty) in &leave {
        sqlx::query(
            "INSERT INTO leave_entries (tenant, source_id, employee, from_date, to_date, leave_type, entered_by, at_ms) \
             VALUES ('acme', $1, $2, $3, $4, $5, NULL, 0)",
        )
        .bind(source)
        .bind(employee)
        .bind(from)
        .bind(to)
        .bind(ty)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    // The oracle: the rows in the order the old query read them, and the
    // first covering entry by source id that is not a trip.
    let mut stored = store.all_rows().await.unwrap();
    stored.sort_by(|a, b| (&a.employee, &a.date, &a.slot).cmp(&(&b.employee, &b.date, &b.slot)));
    let leave_type = |employee: &str, date: &str| {
        leave
            .iter()
            .find(|(_, e, f, t, ty)| {
                e == employee && f.as_str() <= date && t.as_str() >= date && ty != "business_trip"
            })
            .map(|(_, _, _, _, ty)| ty.clone())
    };
    for department in [None, Some("d1"), Some("d2"), Some("d3"), Some("none")] {
        let mine: Vec<DayRow> = stored
            .iter()
            .filter(|r| r.date.starts_with("2025-03"))
            .filter(|r| department.is_none() || r.department.as_deref() == department)
            .cloned()
            .collect();
        let want: Vec<EmployeeSummary> = summarize(&mine, leave_type);
        let got = store
            .month_summary("acme", "2025-03", department)
            .await
            .unwrap()
            .employees;
        assert_eq!(got, want, "seed {seed}, department {department:?}");
    }
}

#[tokio::test]
async fn the_databases_summary_equals_summarize_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 1..=6 {
        let store = ResultsStore::open_sqlite(&dir.path().join(format!("s{seed}.sqlite")))
            .await
            .unwrap();
        check(&store, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_databases_summary_equals_summarize_postgres() {
    let pg_dir = tempfile::tempdir().unwrap();
    let pg = fencegate_testkit::Postgres::start(pg_dir.path());
    for seed in 1..=6 {
        let store = ResultsStore::open(&pg.url()).await.unwrap();
        store.clear().await.unwrap();
        check(&store, seed).await;
    }
}
