//! A rebuild's days computed from memory ([`super::Materializer::rebuild`]
//! into an empty store).
//!
//! Reading the month back out of the store to compute its days cost most
//! of a rebuild: every punch came back through the database a second
//! time, a row at a time, and every closed day was noted for downstream
//! only to be forgotten again. A rebuild into an empty store reads every
//! punch from the log anyway, so it keeps each one here as the pure day
//! computation takes it ([`DayPunch`]), by tenant and employee, and when
//! the log is read computes each employee day once from memory: the days
//! its punches touch and, for each group, the roster's days that the close
//! at the same time would write. The rows go to the store in key order
//! (date, then employee), which is append order for its B-tree, and the
//! dashboard's aggregates move once at the end.
//!
//! The store stays the source for employees an HR record touches (leave,
//! decisions, make-up punches) or with a punch waiting for a decision:
//! those records change what the store holds about their days, so their
//! days are computed from it ([`batch::recompute_many`]) as any other
//! rebuild's. Either way the rows are the node's: `tests/rebuild_memory.rs`
//! holds this path equal to the node's on seeded random logs.
//!
//! The log is read and parsed a batch ahead of the one being written
//! ([`read_in_bulk`]): the parsing runs on the rebuild's task while the
//! database works on the previous batch's statements in its own thread.
//!
//! A bulk rebuild marks the store ([`REBUILD_RUNNING`]) before it writes
//! anything and unmarks it in the transaction that ends its bulk part. A
//! node whose materializer starts on a marked store empties it and
//! rebuilds from its log (a rebuild stopped halfway has applied HR records
//! whose days it never wrote, and owes the aggregates).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use fencegate_schema::{HrView, RecordBodyView, parse_record};
use fencegate_spatial::hash::FastMap;

use super::batch;
use super::hr::{self, Touched};
use super::materialize::{
    Applied, Days as Recomputed, Mark, MaterializeError, Materializer, apply_hr_record, due_days,
    leave_due_to_close, note_start, punch_row, read_batch,
};
use super::store::{DayRow, PunchRow, REBUILD_RUNNING, ResultsStore, StatsDelta, rows_of};
use crate::log::{LogError, LogReader};
use crate::rules::day::{self, DayPunch};
use crate::rules::schedule::midnight_ms;
use crate::rules::{Rules, TenantRules};

/// Log entries read ahead at most (as the materializer's batches).
const BATCH: usize = 4_096;

/// Entries parsed between two chances for the writer to go on.
const YIELD_EVERY: usize = 256;

/// One employee's punches as a bulk rebuild read them.
#[derive(Debug, Default)]
struct Employee {
    /// In log order until [`finish`] sorts them.
    punches: Vec<DayPunch>,
    /// The days they are attributed to (repeats in a row dropped).
    days: Vec<i32>,
}

/// The punches a bulk rebuild has read, kept for computing their days.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    /// Tenant → employee → punches.
    punches: FastMap<String, FastMap<String, Employee>>,
    /// Tenant → employees whose days are computed from the store.
    from_store: HashMap<String, HashSet<String>>,
    /// Record ids of the punches read so far: a repeated record is stored
    /// once.
    seen: HashSet<[u8; 16], fencegate_spatial::hash::FastBuild>,
}

impl Memory {
    /// Whether record `id` is new to this rebuild (and notes it).
    pub(crate) fn first_seen(&mut self, id: [u8; 16]) -> bool {
        self.seen.insert(id)
    }

    /// Keeps a punch to be stored, attributed to day `d`. One waiting for
    /// a decision sends its employee's days to the store, where decisions
    /// are.
    fn add(&mut self, p: &PunchRow, d: i32) {
        if p.needs_approval {
            self.via_store(&p.tenant, &p.employee);
        }
        let by_employee = match self.punches.get_mut(&p.tenant) {
            Some(m) => m,
            None => self.punches.entry(p.tenant.clone()).or_default(),
        };
        let mine = match by_employee.get_mut(&p.employee) {
            Some(v) => v,
            None => by_employee.entry(p.employee.clone()).or_default(),
        };
        mine.punches.push(DayPunch {
            kind: p.kind,
            at_ms: p.at_ms,
            verdict: p.verdict,
            status: p.status,
            needs_approval: p.needs_approval,
            decision: None,
        });
        if mine.days.last() != Some(&d) {
            mine.days.push(d);
        }
    }

    /// Every employee day the punches kept touch.
    fn touched(&self) -> Touched {
        let mut out = Touched::new();
        for (tenant, by_employee) in &self.punches {
            for (employee, mine) in by_employee {
                for &d in &mine.days {
                    out.insert((tenant.clone(), employee.clone(), d));
                }
            }
        }
        out
    }

    /// Sends `employee`'s days to the store: an HR record touched them.
    pub(crate) fn via_store(&mut self, tenant: &str, employee: &str) {
        self.from_store
            .entry(tenant.to_owned())
            .or_default()
            .insert(employee.to_owned());
    }
}

impl Materializer {
    /// Rebuilds the results from `reader` (`fencegate results rebuild`):
    /// applies every entry it has, then closes every day due by `now_ms`.
    /// The same rows as [`Materializer::drain`] then
    /// [`Materializer::close_due`], each employee day computed about once
    /// instead of once per batch and again at the close; revisions count
    /// the changes made here, not the node's. Returns the entries applied
    /// and the employee days closed.
    ///
    /// Into a store without punches (the CLI empties it first) the log is
    /// read in bulk ([`read_in_bulk`]) and the days are computed from
    /// memory at its end ([`finish`]); see the module's documentation.
    /// Until then the stored log position stays 0, so a rebuild stopped
    /// halfway is completed by the node, which reads the log again from
    /// its start (storing a punch twice changes nothing) and builds the
    /// missing indexes when it opens the store. A month archive in the log
    /// ends the bulk part: its snapshot reads the days from the store, so
    /// from there on the log is applied as the node does, except that the
    /// days the closing pass recomputes anyway are left to it.
    pub async fn rebuild(
        &self,
        reader: &mut LogReader,
        now_ms: i64,
    ) -> Result<(Applied, usize), MaterializeError> {
        let waiting = self.store.day_outbox().await?;
        let mut kept = Touched::new();
        let mut total = Applied::default();
        let mut closed = 0;
        let mut archive = None;
        let bulk = self.store.is_empty_view().await?;
        if bulk {
            let mut tx = self.store.begin().await?;
            ResultsStore::set_meta(&mut tx, REBUILD_RUNNING, 1).await?;
            tx.commit().await?;
            self.store.drop_bulk_indexes().await?;
            self.store.set_bulk_cache(true).await?;
            let rules = self.rules.load();
            let phase = Phase::start();
            match read_in_bulk(&self.store, &rules, reader, now_ms, &mut kept, &mut total).await? {
                Ended::Log(mem) => {
                    phase.done("log read, punches stored", total.punches);
                    // The punches' indexes first (the HR-touched
                    // employees' days are read from the store);
                    // `day_results`' read-only indexes are built once
                    // after its rows, as the punches' were.
                    let phase = Phase::start();
                    self.store.set_bulk_cache(false).await?;
                    self.store.restore_indexes().await?;
                    self.store.drop_bulk_day_indexes().await?;
                    self.store.set_bulk_cache(true).await?;
                    phase.done("punches' indexes built", total.punches);
                    let next = reader.position().0;
                    let (days, roster_closed) = finish(
                        &self.store,
                        &rules,
                        mem,
                        &mut kept,
                        now_ms,
                        next,
                        self.rebuild_part,
                    )
                    .await?;
                    total.days += days;
                    closed += roster_closed;
                }
                Ended::Archive(batch) => {
                    self.end_bulk(&mut kept, now_ms).await?;
                    archive = Some(batch);
                }
            }
        }
        // The rest of the log (from a month archive's batch, or all of it
        // into a store that holds punches already).
        loop {
            let batch = match archive.take() {
                Some(b) => b,
                None => read_batch(reader)?,
            };
            if batch.is_empty() {
                break;
            }
            let next = reader.position().0;
            let a = self
                .apply_with(
                    &batch,
                    Mark::Log { next },
                    now_ms,
                    Recomputed::LeaveDueToClose,
                )
                .await?;
            total.entries += a.entries;
            total.punches += a.punches;
            total.days += a.days;
        }
        closed += self.close_due(now_ms).await?;
        if bulk {
            let phase = Phase::start();
            self.store.set_bulk_cache(false).await?;
            self.store.restore_indexes().await?;
            phase.done("day results' indexes built", total.days);
        }
        // A rebuild re-derives what was sent when each day closed: it
        // sends nothing downstream itself, and what was waiting to be
        // sent before it still goes (docs/ATTENDANCE.md, "Day results
        // downstream").
        self.store.reset_day_outbox(&waiting).await?;
        Ok((total, closed))
    }
}

/// Employee days `(day, employee)`.
type Days<'a> = Vec<(i32, &'a str)>;

/// A step of a bulk rebuild, logged with its duration when it ends: at
/// 100,000 employees a rebuild takes minutes, and its operator sees
/// where they go.
struct Phase(std::time::Instant);

impl Phase {
    fn start() -> Self {
        Self(crate::clock::instant())
    }

    /// Logs the step `what` (over `count` items) as done.
    fn done(self, what: &str, count: usize) {
        tracing::info!(
            step = what,
            count,
            seconds = format_args!("{:.1}", self.0.elapsed().as_secs_f64()),
            "results rebuild"
        );
    }
}

/// Computes and writes every employee day the rebuild owes when its log is
/// read: every day the punches in `mem` touch, the days in `kept` (those
/// HR records touched that no close recomputes), and each group's roster
/// on its due days by `now_ms`, as [`super::Materializer::close_due`]
/// would. Records each
/// group's last closed day and the log position `next` last, and unmarks
/// the store ([`REBUILD_RUNNING`]). Returns the employee days computed,
/// and of them the roster's days closed (the node's close also counts days
/// of employees off the roster who have a row). Writes `part_days`
/// employee days per transaction.
pub(crate) async fn finish(
    store: &ResultsStore,
    rules: &Rules,
    mut mem: Memory,
    kept: &mut Touched,
    now_ms: i64,
    next: u64,
    part_days: usize,
) -> Result<(usize, usize), sqlx::Error> {
    let phase = Phase::start();
    for mine in mem.punches.values_mut().flat_map(FastMap::values_mut) {
        mine.punches.sort_by_key(|p| (p.at_ms, p.kind.0));
    }
    let mut tenants: BTreeSet<String> = rules.tenant_ids().map(str::to_owned).collect();
    tenants.extend(kept.iter().map(|(t, _, _)| t.clone()));
    tenants.extend(mem.punches.keys().cloned());
    let configured: HashSet<&str> = rules.tenant_ids().collect();
    let mut stats = StatsDelta::default();
    let mut metas: Vec<(String, i64)> = Vec::new();
    let (mut closed, mut computed_days) = (0, 0);
    for tenant in &tenants {
        let tenant = tenant.as_str();
        let t = rules.tenant(tenant);
        // (day, employee): sorted, the rows' key order.
        let mut days: Days<'_> = kept
            .iter()
            .filter(|(tn, _, _)| tn == tenant)
            .map(|(_, e, d)| (*d, e.as_str()))
            .collect();
        if let Some(by_employee) = mem.punches.get(tenant) {
            for (e, mine) in by_employee {
                days.extend(mine.days.iter().map(|&d| (d, e.as_str())));
            }
        }
        let mut tx = store.begin().await?;
        let start = ResultsStore::meta(&mut tx, &format!("start:{tenant}")).await?;
        if let (true, Some(start)) = (configured.contains(tenant), start) {
            let local = now_ms + t.tz_table.offset_ms(&t.tz, now_ms);
            let today = local.div_euclid(86_400_000) as i32;
            let mut rosters: Vec<Vec<&str>> = vec![Vec::new(); t.groups.len()];
            for (id, e) in &t.employees {
                if let Some(r) = rosters.get_mut(usize::from(e.group)) {
                    r.push(id);
                }
            }
            for (group, roster) in t.groups.iter().zip(&rosters) {
                let key = format!("closed:{tenant}:{}", group.name);
                let next = ResultsStore::meta(&mut tx, &key)
                    .await?
                    .map_or(start as i32, |c| c as i32 + 1);
                let due = due_days(t, group, next, today, now_ms);
                if let Some(&last) = due.last() {
                    metas.push((key, i64::from(last)));
                }
                closed += due.len() * roster.len();
                for &d in &due {
                    days.extend(roster.iter().map(|&e| (d, e)));
                }
            }
        }
        tx.commit().await?;
        days.sort_unstable();
        days.dedup();
        computed_days += days.len();
        let no_one = HashSet::new();
        let via_store = mem.from_store.get(tenant).unwrap_or(&no_one);
        let (mut stored, computed): (Days<'_>, Days<'_>) =
            days.into_iter().partition(|(_, e)| via_store.contains(*e));
        // The HR-touched employees' days, from the store (it notes them for
        // downstream as any recompute does; the rebuild forgets the notes).
        if !stored.is_empty() {
            let mut tx = store.begin().await?;
            let mut days: Vec<(&str, i32)> = stored.drain(..).map(|(d, e)| (e, d)).collect();
            batch::recompute_many(&mut tx, rules, tenant, &mut days, now_ms).await?;
            tx.commit().await?;
        }
        let none: FastMap<String, Employee> = FastMap::default();
        let punches = mem.punches.get(tenant).unwrap_or(&none);
        let mut window = (i32::MIN, 0, 0);
        // Each part's rows are computed while the part before is written
        // (the database works in its own thread).
        let mut ready: Vec<DayRow> = Vec::new();
        for part in computed.chunks(part_days) {
            let (written, rows) = tokio::join!(
                write_rows(store, std::mem::take(&mut ready), &mut stats),
                compute_rows(t, tenant, punches, part, now_ms, &mut window)
            );
            written?;
            ready = rows;
        }
        write_rows(store, ready, &mut stats).await?;
    }
    phase.done("days computed and written", computed_days);
    let phase = Phase::start();
    let mut tx = store.begin().await?;
    stats.write(&mut tx).await?;
    for (key, last) in metas {
        ResultsStore::set_meta(&mut tx, &key, last).await?;
    }
    ResultsStore::set_meta(&mut tx, "next_lsn", next as i64).await?;
    ResultsStore::delete_meta(&mut tx, REBUILD_RUNNING).await?;
    tx.commit().await?;
    phase.done("aggregates written", computed_days);
    kept.clear();
    Ok((computed_days, closed))
}

/// Writes a part of the rebuilt rows in one transaction (nothing when
/// `rows` is empty), their aggregates' moves summed into `stats`.
async fn write_rows(
    store: &ResultsStore,
    rows: Vec<DayRow>,
    stats: &mut StatsDelta,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    ResultsStore::insert_rebuilt_rows(&mut tx, &rows, stats).await?;
    tx.commit().await
}

/// Computes the rows of the employee days `part` of `tenant` from the
/// punches kept in memory, letting the writer go on every
/// [`YIELD_EVERY`] days. `window` caches the punch window of the last day
/// seen: `part` is sorted by day.
async fn compute_rows(
    t: &TenantRules,
    tenant: &str,
    punches: &FastMap<String, Employee>,
    part: &[(i32, &str)],
    now_ms: i64,
    window: &mut (i32, i64, i64),
) -> Vec<DayRow> {
    let mut rows = Vec::with_capacity(part.len() * 3);
    for (i, &(d, employee)) in part.iter().enumerate() {
        if window.0 != d {
            // Punches that can count for day d lie within a day of it
            // either side (as `materialize::recompute` reads).
            *window = (
                d,
                midnight_ms(&t.tz, &t.tz_table, d - 1),
                midnight_ms(&t.tz, &t.tz_table, d + 2),
            );
        }
        let (_, lo, hi) = *window;
        let mine = punches
            .get(employee)
            .map_or(&[][..], |m| m.punches.as_slice());
        let near =
            &mine[mine.partition_point(|p| p.at_ms < lo)..mine.partition_point(|p| p.at_ms < hi)];
        let listed = t.employee(employee);
        let group = t.group_of(listed);
        let result = day::compute_with(t, group, d, near, None);
        let department = listed
            .and_then(|e| e.department.as_deref())
            .map(str::to_owned);
        rows.extend(rows_of(
            tenant,
            employee,
            &group.name,
            &result,
            now_ms >= result.close_ms,
            department,
        ));
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
    }
    rows
}

/// How [`read_in_bulk`] ended.
pub(crate) enum Ended {
    /// At the log's end: the punches read, for [`finish`].
    Log(Memory),
    /// At a batch holding a month archive, returned unapplied: its
    /// snapshot reads the days so far from the store, so the rebuild goes
    /// on the store's way from there. The days the punches so far touched
    /// are in `kept`, as [`super::Materializer::rebuild`]'s batches keep
    /// them.
    Archive(Vec<(u64, Vec<u8>)>),
}

/// One log batch, parsed.
struct Parsed {
    /// The entries as read.
    raw: Vec<(u64, Vec<u8>)>,
    /// Punches to store and HR records to apply, in log order.
    items: Vec<Item>,
    /// Whether a month archive is among them.
    archive: bool,
    /// Per tenant, the earliest day its punches here are attributed to.
    starts: BTreeMap<String, i32>,
}

/// A parsed entry to apply.
enum Item {
    /// A punch seen for the first time in this rebuild.
    Punch(PunchRow),
    /// An HR record (not a month archive): its index in `raw`.
    Hr(usize),
}

/// Reads `reader` to its end into an empty store, each batch parsed (and
/// its punches kept in memory) while the previous one is written: the
/// punches in multi-row statements with no row back per punch, HR records
/// applied as the node applies them, the days they touch kept in `kept`
/// (those no close recomputes, as [`super::Materializer::rebuild`] keeps
/// them). The stored log position stays 0, so a rebuild stopped here is
/// read again from the start by the node. Adds what it applied to `total`.
pub(crate) async fn read_in_bulk(
    store: &ResultsStore,
    rules: &Rules,
    reader: &mut LogReader,
    now_ms: i64,
    kept: &mut Touched,
    total: &mut Applied,
) -> Result<Ended, MaterializeError> {
    let mut mem = Memory::default();
    let mut via: Vec<(String, String)> = Vec::new();
    let mut ahead = read_ahead(reader, rules, &mut mem).await?;
    while !ahead.raw.is_empty() {
        if ahead.archive {
            let mut days = mem.touched();
            let mut tx = store.begin().await?;
            leave_due_to_close(&mut tx, rules, &mut days, now_ms).await?;
            tx.commit().await?;
            kept.append(&mut days);
            return Ok(Ended::Archive(ahead.raw));
        }
        let (written, next) = tokio::join!(
            write_parsed(store, rules, ahead, now_ms, kept, &mut via),
            read_ahead(reader, rules, &mut mem)
        );
        let a = written?;
        total.entries += a.entries;
        total.punches += a.punches;
        total.days += a.days;
        ahead = next?;
    }
    for (tenant, employee) in via {
        mem.via_store(&tenant, &employee);
    }
    Ok(Ended::Log(mem))
}

/// Reads and parses up to [`BATCH`] entries, keeping each new punch in
/// `mem`; lets the writer go on every [`YIELD_EVERY`] entries.
async fn read_ahead(
    reader: &mut LogReader,
    rules: &Rules,
    mem: &mut Memory,
) -> Result<Parsed, LogError> {
    let mut out = Parsed {
        raw: Vec::new(),
        items: Vec::new(),
        archive: false,
        starts: BTreeMap::new(),
    };
    // Each punch's attributed day, in `items` order.
    let mut days = Vec::new();
    while out.raw.len() < BATCH {
        let Some(e) = reader.next_entry()? else {
            break;
        };
        out.raw.push((e.lsn.0, e.payload.to_vec()));
        let i = out.raw.len() - 1;
        let (lsn, bytes) = &out.raw[i];
        if let Ok(view) = parse_record(bytes) {
            match view.body() {
                RecordBodyView::Punch(p) if mem.first_seen(view.record_id()) => {
                    let row = punch_row(&view, &p, *lsn);
                    let t = rules.tenant(&row.tenant);
                    let group = t.group_of(t.employee(&row.employee));
                    let d = day::attributed_day(t, group, row.kind, row.at_ms);
                    match out.starts.get_mut(&row.tenant) {
                        Some(s) => *s = (*s).min(d),
                        None => {
                            out.starts.insert(row.tenant.clone(), d);
                        }
                    }
                    days.push(d);
                    out.items.push(Item::Punch(row));
                }
                RecordBodyView::Hr(HrView::MonthArchive(_)) => out.archive = true,
                RecordBodyView::Hr(_) => out.items.push(Item::Hr(i)),
                _ => {}
            }
        }
        if out.raw.len() % YIELD_EVERY == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Kept only from a batch without a month archive: the one with it is
    // applied the store's way, after the days of the batches before it
    // (and none of its own) are written.
    if !out.archive {
        let punches = out.items.iter().filter_map(|i| match i {
            Item::Punch(row) => Some(row),
            Item::Hr(_) => None,
        });
        for (row, d) in punches.zip(days) {
            mem.add(row, d);
        }
    }
    Ok(out)
}

/// Writes one parsed batch in one transaction (see [`read_in_bulk`]);
/// notes in `via` the employees its HR records touched.
async fn write_parsed(
    store: &ResultsStore,
    rules: &Rules,
    batch: Parsed,
    now_ms: i64,
    kept: &mut Touched,
    via: &mut Vec<(String, String)>,
) -> Result<Applied, MaterializeError> {
    let mut out = Applied {
        entries: batch.raw.len(),
        ..Applied::default()
    };
    let mut touched = Touched::new();
    let mut tx = store.begin().await?;
    let mut punches: Vec<PunchRow> = Vec::new();
    for item in batch.items {
        match item {
            Item::Punch(row) => punches.push(row),
            Item::Hr(i) => {
                out.punches += store_fresh(&mut tx, &mut punches).await?;
                let (lsn, bytes) = &batch.raw[i];
                let Ok(view) = parse_record(bytes) else {
                    continue;
                };
                let RecordBodyView::Hr(h) = view.body() else {
                    continue;
                };
                let mine = apply_hr_record(&mut tx, rules, &view, h, *lsn).await?;
                via.extend(mine.iter().map(|(t, e, _)| (t.clone(), e.clone())));
                out.days += mine.len();
                touched.extend(mine);
            }
        }
    }
    out.punches += store_fresh(&mut tx, &mut punches).await?;
    for (tenant, d) in &batch.starts {
        note_start(&mut tx, tenant, *d).await?;
    }
    leave_due_to_close(&mut tx, rules, &mut touched, now_ms).await?;
    kept.append(&mut touched);
    ResultsStore::set_meta(&mut tx, "next_lsn", 0).await?;
    tx.commit().await?;
    Ok(out)
}

/// Stores `punches` (none of them stored before) and empties it; returns
/// how many. A punch waiting for a decision takes one already stored (from
/// the stream a decision can come before its punch).
async fn store_fresh(
    tx: &mut super::store::Tx,
    punches: &mut Vec<PunchRow>,
) -> Result<usize, sqlx::Error> {
    if punches.is_empty() {
        return Ok(0);
    }
    ResultsStore::insert_fresh_punches(tx, punches).await?;
    for p in punches.iter().filter(|p| p.needs_approval) {
        hr::adopt_decision(tx, &p.tenant, &p.record_id).await?;
    }
    let n = punches.len();
    punches.clear();
    Ok(n)
}
