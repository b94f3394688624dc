//! What the results-store tests share: where their stores live (SQLite
//! files or databases of one PostgreSQL server) and the dashboard's
//! aggregate rows as comparable text.

#![allow(dead_code, reason = "each test file uses part of the rig")]

use std::path::Path;

use fencegate::results::ResultsStore;
use sqlx::Row;

/// Where a test's results stores live: SQLite files in its folder, or
/// databases of one PostgreSQL server.
pub enum Stores {
    Sqlite,
    Postgres(fencegate_testkit::Postgres),
}

impl Stores {
    /// A PostgreSQL server of its own, in `dir/pg`.
    pub fn postgres(dir: &Path) -> Self {
        Self::Postgres(fencegate_testkit::Postgres::start(&dir.join("pg")))
    }

    /// A new, empty store called `name`.
    pub async fn open(&self, dir: &Path, name: &str) -> ResultsStore {
        match self {
            Self::Sqlite => ResultsStore::open_sqlite(&dir.join(format!("{name}.sqlite")))
                .await
                .unwrap(),
            Self::Postgres(pg) => ResultsStore::open(&pg.database(name)).await.unwrap(),
        }
    }

    /// A new, empty store called `name` as `fencegate results rebuild`
    /// fills it: on SQLite a scratch file ([`ResultsStore::open_scratch`]),
    /// on PostgreSQL an ordinary database.
    pub async fn open_rebuild(&self, dir: &Path, name: &str) -> ResultsStore {
        match self {
            Self::Sqlite => ResultsStore::open_scratch(&dir.join(format!("{name}.sqlite")))
                .await
                .unwrap(),
            Self::Postgres(_) => self.open(dir, name).await,
        }
    }
}

/// The dashboard's aggregate rows (`day_stats`, `employee_months` with its
/// running sums, `punch_stats`) with something in them, as text, sorted:
/// two stores, or a store before and after `recount_stats`, compare equal
/// when these do.
pub async fn aggregates(store: &ResultsStore) -> Vec<String> {
    let mut out = Vec::new();
    for (table, nk) in [("day_stats", 3), ("employee_months", 4), ("punch_stats", 3)] {
        let rows = sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(store.pool())
            .await
            .unwrap();
        for r in &rows {
            let vals: Vec<i64> = (nk..r.len()).map(|i| r.try_get(i).unwrap()).collect();
            if vals.iter().all(|v| *v == 0) {
                continue;
            }
            let keys: Vec<String> = (0..nk)
                .map(|i| {
                    r.try_get::<String, _>(i)
                        .or_else(|_| r.try_get::<i64, _>(i).map(|v| v.to_string()))
                        .unwrap()
                })
                .collect();
            out.push(format!("{table} {keys:?} {vals:?}"));
        }
    }
    out.sort();
    out
}
