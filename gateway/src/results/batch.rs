//! Many employee days recomputed at once: the materializer's flush (the
//! days a batch of records touched) and a day's close (a group's whole
//! roster). For a chunk of up to [`IN_CHUNK`] employees it reads their
//! punches, leave and stored rows with one set query each, computes every
//! day in memory with the pure [`day::compute_with`], and writes the
//! changed rows and the dashboard's aggregates in multi-row statements.
//!
//! One employee day at a time cost three selects and an upsert per row,
//! about 130 µs an employee day on SQLite, so closing a day for 100,000
//! employees took ~26 s (docs/PERFORMANCE.md, "Attendance results"). The
//! answers are the same: every day is still computed from every punch the
//! store holds within a day either side of it, and a row is rewritten
//! (its revision bumped) only when it changed; `tests/batched_results.rs`
//! holds both paths equal on random rosters, SQLite and PostgreSQL.

use super::store::{DATES_IN, DayRow, IN_CHUNK, ResultsStore, Tx, date_string, rows_of};
use crate::rules::Rules;
use crate::rules::day::{self, Cover, DayPunch};
use crate::rules::schedule::midnight_ms;

/// Days a chunk's reads span at most. A chunk reads every punch its
/// employees have in its span (and a day either side): employee days far
/// apart (an offline upload months late) go to different chunks instead of
/// one read of everything in between.
const SPAN: i32 = DATES_IN as i32;

/// Recomputes `tenant`'s employee days `(employee, day number)` (sorted
/// and deduplicated here) and writes the rows that changed, bumping their
/// revision, as [`super::materialize`]'s per-employee `recompute` does for
/// each. Returns the number of employee days recomputed.
pub(crate) async fn recompute_many(
    tx: &mut Tx,
    rules: &Rules,
    tenant: &str,
    days: &mut Vec<(&str, i32)>,
    now_ms: i64,
) -> Result<usize, sqlx::Error> {
    days.sort_unstable_by_key(|&(e, d)| (d.div_euclid(SPAN), e, d));
    days.dedup();
    let mut rest = &days[..];
    while let Some(&(_, d0)) = rest.first() {
        // Up to IN_CHUNK employees of one span, each with all its days.
        let block = d0.div_euclid(SPAN);
        let (mut end, mut employees, mut last) = (0, 0, None);
        while let Some(&(e, d)) = rest.get(end) {
            if d.div_euclid(SPAN) != block {
                break;
            }
            if last != Some(e) {
                if employees == IN_CHUNK {
                    break;
                }
                employees += 1;
                last = Some(e);
            }
            end += 1;
        }
        let (now, later) = rest.split_at(end);
        chunk(tx, rules, tenant, now, now_ms).await?;
        rest = later;
    }
    Ok(days.len())
}

/// What covers `employee` on `date` among a chunk's leave entries `(employee,
/// from, to, type)`: a business trip wins over other leave, as
/// `hr::cover_of` decides for one employee day.
fn cover_of(
    leave: &[(String, String, String, String)],
    employee: &str,
    date: &str,
) -> Option<Cover> {
    let mut cover = None;
    for (e, from, to, kind) in leave {
        if e != employee || from.as_str() > date || to.as_str() < date {
            continue;
        }
        if kind == "business_trip" {
            return Some(Cover::BusinessTrip);
        }
        cover = Some(Cover::Leave);
    }
    cover
}

/// Recomputes one chunk: `days` sorted by employee, at most [`IN_CHUNK`]
/// employees.
async fn chunk(
    tx: &mut Tx,
    rules: &Rules,
    tenant: &str,
    days: &[(&str, i32)],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let t = rules.tenant(tenant);
    let mut employees: Vec<&str> = days.iter().map(|&(e, _)| e).collect();
    employees.dedup();
    let first = days.iter().map(|&(_, d)| d).min().unwrap_or_default();
    let last = days.iter().map(|&(_, d)| d).max().unwrap_or_default();
    // The window each day reads (see `materialize::recompute`), for the
    // whole chunk at once.
    let from = midnight_ms(&t.tz, &t.tz_table, first - 1);
    let to = midnight_ms(&t.tz, &t.tz_table, last + 2);
    let mut keyed: Vec<(usize, DayPunch)> =
        ResultsStore::punches_of_many(tx, tenant, &employees, from, to)
            .await?
            .into_iter()
            .filter_map(|(e, p)| employees.binary_search(&e.as_str()).ok().map(|i| (i, p)))
            .collect();
    keyed.sort_unstable_by_key(|(i, p)| (*i, p.at_ms));
    // starts[i]..starts[i + 1]: employee i's punches, by time.
    let mut starts = vec![0; employees.len() + 1];
    for (i, _) in &keyed {
        starts[i + 1] += 1;
    }
    for i in 0..employees.len() {
        starts[i + 1] += starts[i];
    }
    let punches: Vec<DayPunch> = keyed.into_iter().map(|(_, p)| p).collect();
    let (first_date, last_date) = (date_string(first), date_string(last));
    let leave =
        ResultsStore::leave_of_many(tx, tenant, &employees, &first_date, &last_date).await?;
    let mut old = ResultsStore::rows_of_many(tx, tenant, &employees, first, last).await?;
    old.sort_unstable_by(|a, b| (&a.employee, &a.date).cmp(&(&b.employee, &b.date)));
    let mut writes: Vec<(Option<DayRow>, DayRow)> = Vec::with_capacity(days.len() * 2);
    let mut gone: Vec<DayRow> = Vec::new();
    for &(employee, d) in days {
        let i = employees.binary_search(&employee).unwrap_or_default();
        let mine = &punches[starts[i]..starts[i + 1]];
        let lo = midnight_ms(&t.tz, &t.tz_table, d - 1);
        let hi = midnight_ms(&t.tz, &t.tz_table, d + 2);
        let near =
            &mine[mine.partition_point(|p| p.at_ms < lo)..mine.partition_point(|p| p.at_ms < hi)];
        let date = date_string(d);
        let listed = t.employee(employee);
        let group = t.group_of(listed);
        let result = day::compute_with(t, group, d, near, cover_of(&leave, employee, &date));
        let closed = now_ms >= result.close_ms;
        let department = listed
            .and_then(|e| e.department.as_deref())
            .map(str::to_owned);
        let key = (employee, date.as_str());
        let was_rows = &old[old.partition_point(|r| (r.employee.as_str(), r.date.as_str()) < key)
            ..old.partition_point(|r| (r.employee.as_str(), r.date.as_str()) <= key)];
        for mut row in rows_of(tenant, employee, &group.name, &result, closed, department) {
            let was = was_rows.iter().find(|o| o.slot == row.slot);
            if let Some(o) = was {
                if o.same_result(&row) {
                    continue;
                }
                row.revision = o.revision + 1;
            }
            writes.push((was.cloned(), row));
        }
        for o in was_rows {
            if o.slot.is_empty() || result.slots.iter().any(|s| s.name == o.slot) {
                continue;
            }
            gone.push(o.clone());
        }
    }
    ResultsStore::upsert_rows(tx, &writes).await?;
    for o in &gone {
        ResultsStore::delete_row(tx, o).await?;
    }
    Ok(())
}
