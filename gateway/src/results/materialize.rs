//! The materializer: log records in, day results out.
//!
//! It reads the durable log from its own position, which is committed in
//! the same transaction as the rows those records produced, so a crash
//! re-reads at most one batch and re-reading is harmless (a punch already
//! stored is skipped, and a day is always recomputed from every punch the
//! store holds for it, never adjusted). A `results` cursor in the log
//! follows that position so retention never deletes what is not yet
//! materialized.
//!
//! Each punch touches the day its slot belongs to ([`day::attributed_day`]);
//! that day is recomputed with the pure [`day::compute`]. Days also *close*:
//! at `close_after_min` after a group's last slot of the day,
//! [`Materializer::close_due`] writes a row for every employee the rules
//! list in the group (the roster), so someone who never punched is
//! `absent`, and marks the rows closed. A punch that arrives after that (an
//! offline upload) recomputes the closed day again and bumps its
//! `revision`. Closing starts at the day of a tenant's first punch in the
//! log, so a rebuild from the same log produces the same rows.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fencegate_schema::{HrView, RecordBodyView, parse_record};
use tokio_util::sync::CancellationToken;

use super::batch;
use super::hr::{self, Touched};
use super::store::{PunchRow, ResultsStore, Tx, date_string, rows_of};
use crate::log::{CursorStart, LogError, LogHandle, LogReader, Lsn};
use crate::rules::day;
use crate::rules::schedule::midnight_ms;
use crate::rules::{Group, Rules, RulesHandle, TenantRules};

/// Most log entries applied in one transaction.
const BATCH: usize = 4_096;

/// The `results_meta` key of the last stream sequence applied.
pub(crate) const STREAM_SEQ: &str = "stream_seq";

/// Where a batch of entries came from, and the position to store with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// The node's own log: read on from `next`.
    Log {
        /// The next LSN to read.
        next: u64,
    },
    /// The JetStream stream: entries are `(stream sequence, bytes)` and
    /// `last` is the batch's last sequence (entries outside the consumer's
    /// subjects leave gaps).
    Stream {
        /// The last stream sequence of the batch.
        last: u64,
        /// The stored sequence the consumer's position was taken from (or
        /// last committed); another one means the store was rebuilt or
        /// restored under the consumer, which must start again.
        after: Option<u64>,
    },
}

/// A failure of the materializer: the store, or the log.
#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    /// The results database refused a statement.
    #[error("results store: {0}")]
    Store(#[from] sqlx::Error),
    /// The log could not be read.
    #[error("durable log: {0}")]
    Log(#[from] LogError),
    /// The stored stream position is not the one the consumer went on
    /// from: the store was rebuilt or restored meanwhile.
    #[error(
        "the results store's stream position moved from {expected} to {stored} (rebuilt or restored); reading the stream again from it"
    )]
    Moved {
        /// The position the consumer went on from.
        expected: u64,
        /// The position the store holds.
        stored: u64,
    },
}

/// What one call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Log entries read.
    pub entries: usize,
    /// Punch records stored (new ones).
    pub punches: usize,
    /// Employee days recomputed.
    pub days: usize,
}

/// How the materializer recomputes many employee days (a batch's touched
/// days, a day's close).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Recompute {
    /// Up to 500 employees' days per set query, computed in memory,
    /// written in multi-row statements: what the node does.
    #[default]
    Batched,
    /// One employee day at a time: three selects and a statement per row,
    /// as before batching. The node never uses it: it is the oracle the
    /// batched path is tested against and the baseline of its bench.
    PerEmployee,
}

/// Employee days a bulk rebuild writes per transaction
/// ([`Materializer::with_rebuild_part`]): a transaction's pages stay a few
/// megabytes of the WAL.
const REBUILD_PART_DAYS: usize = 50_000;

/// Turns log records into day results in a [`ResultsStore`].
#[derive(Debug, Clone)]
pub struct Materializer {
    pub(super) store: ResultsStore,
    pub(super) rules: Arc<RulesHandle>,
    /// Employee days a bulk rebuild computes and writes per transaction
    /// (`results/bulk.rs`).
    pub(super) rebuild_part: usize,
}

impl Materializer {
    /// A materializer writing to `store`, judging by the live `rules`.
    pub fn new(store: ResultsStore, rules: Arc<RulesHandle>) -> Self {
        Self {
            store,
            rules,
            rebuild_part: REBUILD_PART_DAYS,
        }
    }

    /// Makes a bulk rebuild compute and write `days` employee days per
    /// transaction instead of 50,000 (at least 1). The rows do not depend
    /// on it; tests make it small so that a small log crosses parts, each
    /// computed while the one before is written.
    #[must_use]
    pub fn with_rebuild_part(mut self, days: usize) -> Self {
        self.rebuild_part = days.max(1);
        self
    }

    /// The store it writes.
    pub fn store(&self) -> &ResultsStore {
        &self.store
    }

    /// Applies log entries `(lsn, record bytes)` and records `next` as the
    /// position to read from afterwards, in one transaction. Entries that
    /// are not punch records are skipped.
    pub async fn apply(
        &self,
        entries: &[(u64, Vec<u8>)],
        next: u64,
        now_ms: i64,
    ) -> Result<Applied, MaterializeError> {
        self.apply_marked(entries, Mark::Log { next }, now_ms).await
    }

    /// [`Materializer::apply`] with the position kept as `mark` says: the
    /// log's next LSN, or the last stream sequence applied. Stream entries
    /// at or below the stored sequence were applied before (a batch
    /// redelivered after a crash between commit and ack, or another node's
    /// turn) and are skipped, read in the same transaction that writes.
    pub(crate) async fn apply_marked(
        &self,
        entries: &[(u64, Vec<u8>)],
        mark: Mark,
        now_ms: i64,
    ) -> Result<Applied, MaterializeError> {
        self.apply_with(entries, mark, now_ms, Days::Recompute)
            .await
    }

    /// [`Materializer::apply_marked`], with the touched days recomputed as
    /// `days` says.
    pub(super) async fn apply_with(
        &self,
        entries: &[(u64, Vec<u8>)],
        mark: Mark,
        now_ms: i64,
        days: Days,
    ) -> Result<Applied, MaterializeError> {
        let rules = self.rules.load();
        let mut tx = self.store.begin().await?;
        let mut entries = entries;
        if let Mark::Stream { last, after } = mark {
            if self.store.is_postgres() {
                ResultsStore::lock_xact(&mut tx, super::store::lock_key::APPLY).await?;
            }
            let done = ResultsStore::meta(&mut tx, STREAM_SEQ).await?.unwrap_or(0);
            if let Some(expected) = after
                && done != expected as i64
            {
                return Err(MaterializeError::Moved {
                    expected,
                    stored: done.max(0) as u64,
                });
            }
            let fresh = entries.partition_point(|(seq, _)| *seq as i64 <= done);
            entries = &entries[fresh..];
            if entries.is_empty() && last as i64 <= done {
                return Ok(Applied::default());
            }
        }
        let mut touched = Touched::new();
        let mut out = Applied {
            entries: entries.len(),
            ..Applied::default()
        };
        // Punches wait here to be stored in multi-row statements; an HR
        // record is applied only after the punches before it are stored
        // (a decision on a punch of the same batch finds it).
        let mut punches: Vec<PunchRow> = Vec::new();
        for (lsn, bytes) in entries {
            let Ok(view) = parse_record(bytes) else {
                continue;
            };
            let p = match view.body() {
                RecordBodyView::Punch(p) => p,
                RecordBodyView::Hr(HrView::MonthArchive(m)) => {
                    // The snapshot must see every day the log so far
                    // decides, closed as of the record's time, whether
                    // this runs live or in a rebuild.
                    let tenant = view.tenant();
                    out.punches +=
                        store_punches(&mut tx, &rules, &mut punches, &mut touched).await?;
                    days.flush(&mut tx, &rules, &mut touched, now_ms).await?;
                    let last = super::summary::last_day_of(m.month());
                    close_tenant(&mut tx, &rules, tenant, view.gateway_time_ms(), last).await?;
                    super::summary::archive(
                        &mut tx,
                        tenant,
                        m.month(),
                        view.gateway_time_ms(),
                        m.archived_by(),
                    )
                    .await?;
                    continue;
                }
                RecordBodyView::Hr(h) => {
                    out.punches +=
                        store_punches(&mut tx, &rules, &mut punches, &mut touched).await?;
                    let mine = apply_hr_record(&mut tx, &rules, &view, h, *lsn).await?;
                    out.days += mine.len();
                    touched.extend(mine);
                    continue;
                }
                _ => continue,
            };
            punches.push(punch_row(&view, &p, *lsn));
        }
        out.punches += store_punches(&mut tx, &rules, &mut punches, &mut touched).await?;
        out.days += touched.len();
        days.flush(&mut tx, &rules, &mut touched, now_ms).await?;
        match mark {
            Mark::Log { next } => ResultsStore::set_meta(&mut tx, "next_lsn", next as i64).await?,
            Mark::Stream { last, .. } => {
                ResultsStore::set_meta(&mut tx, STREAM_SEQ, last as i64).await?;
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Closes every day whose close time has passed by `now_ms`: each
    /// employee of the group's roster (and anyone with a row that day) gets
    /// the day recomputed as closed. Returns the employee days written.
    pub async fn close_due(&self, now_ms: i64) -> Result<usize, MaterializeError> {
        self.close_due_with(now_ms, Recompute::Batched).await
    }

    /// [`close_due`](Self::close_due), recomputing the days as `how` says.
    pub async fn close_due_with(
        &self,
        now_ms: i64,
        how: Recompute,
    ) -> Result<usize, MaterializeError> {
        let rules = self.rules.load();
        let mut written = 0;
        let mut tenants: Vec<&str> = rules.tenant_ids().collect();
        tenants.sort_unstable();
        for tenant in tenants {
            let mut tx = self.store.begin().await?;
            if self.store.is_postgres() {
                // Beside a stream materializer's batches on another node.
                ResultsStore::lock_xact(&mut tx, super::store::lock_key::APPLY).await?;
            }
            written += match how {
                Recompute::Batched => close_tenant(&mut tx, &rules, tenant, now_ms, None).await?,
                Recompute::PerEmployee => {
                    close_tenant_each(&mut tx, &rules, tenant, now_ms, None).await?
                }
            };
            tx.commit().await?;
        }
        Ok(written)
    }

    /// Recomputes employee days `(tenant, employee, day number)` in one
    /// transaction, as records touching them would, and returns how many.
    /// For comparing the two ways (`how`) on the same store state: the
    /// node recomputes the days its records touch itself.
    pub async fn recompute_days(
        &self,
        days: &[(String, String, i32)],
        now_ms: i64,
        how: Recompute,
    ) -> Result<usize, MaterializeError> {
        let rules = self.rules.load();
        let mut touched: Touched = days.iter().cloned().collect();
        let n = touched.len();
        let mut tx = self.store.begin().await?;
        match how {
            Recompute::Batched => flush(&mut tx, &rules, &mut touched, now_ms).await?,
            Recompute::PerEmployee => flush_each(&mut tx, &rules, &mut touched, now_ms).await?,
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Reads every entry `reader` has and applies it, batch by batch;
    /// returns the totals (for `fencegate results rebuild`).
    pub async fn drain(
        &self,
        reader: &mut LogReader,
        now_ms: i64,
    ) -> Result<Applied, MaterializeError> {
        let mut total = Applied::default();
        loop {
            let batch = read_batch(reader)?;
            if batch.is_empty() {
                return Ok(total);
            }
            let a = self.apply(&batch, reader.position().0, now_ms).await?;
            total.entries += a.entries;
            total.punches += a.punches;
            total.days += a.days;
        }
    }

    /// Ends a rebuild's bulk part at a month archive: builds the dropped
    /// indexes and recomputes the days kept (the next batch stores the log
    /// position).
    pub(super) async fn end_bulk(
        &self,
        kept: &mut Touched,
        now_ms: i64,
    ) -> Result<(), MaterializeError> {
        // Index builds sort faster with the usual cache (`restore_indexes`).
        self.store.set_bulk_cache(false).await?;
        self.store.restore_indexes().await?;
        let rules = self.rules.load();
        let mut tx = self.store.begin().await?;
        flush(&mut tx, &rules, kept, now_ms).await?;
        // What the bulk part owed is written: from here the log position
        // is stored with every batch, as the node stores it.
        ResultsStore::delete_meta(&mut tx, super::store::REBUILD_RUNNING).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Follows the log of a running node until `stop`: applies new records
    /// as they commit and closes due days every `tick`. Errors are logged
    /// and retried after a pause; results are a view, so the node keeps
    /// acknowledging punches whatever happens here.
    pub async fn run(self, log: LogHandle, stop: CancellationToken, tick: Duration) {
        loop {
            match self.follow(&log, &stop, tick).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, "results materializer failed; retrying in 5 s (results lag, punches are unaffected)");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    async fn follow(
        &self,
        log: &LogHandle,
        stop: &CancellationToken,
        tick: Duration,
    ) -> Result<(), MaterializeError> {
        // The log cursor holds retention back; the position committed with
        // the rows decides where to read.
        let cursor = log.cursor("results", CursorStart::Oldest)?;
        if self.store.rebuild_stopped().await? {
            tracing::warn!(
                "a `fencegate results rebuild` stopped halfway in the results store; emptying it and rebuilding from the log"
            );
            self.store.clear().await?;
            let mut reader = log.reader(log.oldest())?;
            self.rebuild(&mut reader, crate::clock::unix_ms()).await?;
        }
        let mut from = Lsn(self.store.position().await?);
        if from < log.oldest() {
            if from.0 > 0 {
                tracing::warn!(
                    position = from.0,
                    oldest = log.oldest().0,
                    "results are behind the oldest log entry; the missing records cannot be materialized (run `fencegate results rebuild` to start over)"
                );
            }
            from = log.oldest();
        }
        let mut reader = log.reader(from)?;
        // Days close only once the log is read up to its end: a store
        // filled from the start (a new schema, a rebuild stopped halfway)
        // would otherwise close days, and send them downstream, as absent
        // before their punches are read. The first close comes as soon as
        // that is so, not a tick later.
        let mut last_close: Option<tokio::time::Instant> = None;
        let mut held = CursorHold::new(cursor);
        let mut skipped = Skipped::default();
        loop {
            let batch = off_the_reactor(|| read_batch(&mut reader))?;
            if !batch.is_empty() {
                let next = reader.position();
                let now = crate::clock::tokio_now();
                if batch.iter().any(|(_, bytes)| materializes(bytes)) {
                    self.apply(&batch, next.0, crate::clock::unix_ms()).await?;
                    skipped.applied();
                    held.advance(next, now).await?;
                } else if let Some(due) = skipped.skip(next, now) {
                    self.apply(&[], due.0, crate::clock::unix_ms()).await?;
                    held.advance(due, now).await?;
                }
            }
            let caught_up = batch.len() < BATCH;
            if caught_up && last_close.is_none_or(|t| t.elapsed() >= tick) {
                self.close_due(crate::clock::unix_ms()).await?;
                last_close = Some(crate::clock::tokio_now());
            }
            if batch.len() == BATCH {
                continue;
            }
            tokio::select! {
                r = reader.wait() => match r {
                    Ok(()) => {}
                    Err(LogError::Closed) => return Ok(()),
                    Err(e) => return Err(e.into()),
                },
                () = tokio::time::sleep(tick.min(CURSOR_EVERY)) => {
                    self.settle(&mut skipped, &mut held).await?;
                }
                () = stop.cancelled() => {
                    // Best effort: a position or cursor left a second
                    // behind only means rereading a second of skipped
                    // entries, and retention held back a little longer.
                    if let Err(e) = self.settle(&mut skipped, &mut held).await {
                        tracing::debug!(error = %e, "results position or cursor not stored at stop");
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Idle or stopping: commits the position past skipped entries, if
    /// any, and persists the log cursor up to what is committed.
    async fn settle(
        &self,
        skipped: &mut Skipped,
        held: &mut CursorHold,
    ) -> Result<(), MaterializeError> {
        let now = crate::clock::tokio_now();
        if let Some(due) = skipped.take() {
            self.apply(&[], due.0, crate::clock::unix_ms()).await?;
            held.advance(due, now).await?;
        }
        held.flush(now).await?;
        Ok(())
    }
}

/// How often the materializer's log cursor is persisted while it moves.
///
/// The cursor only holds retention back: where reading resumes is the
/// position committed with the rows. So it may lag. Persisting it after
/// every applied batch cost two fsyncs each time; with pings arriving
/// that was hundreds a second, competing with the log's own commits for
/// the disk (a fleet at its saturation knee measured 330 a second).
pub const CURSOR_EVERY: Duration = Duration::from_secs(1);

/// Whether a log entry changes day results: punch and HR records do;
/// pings, fence events and the day results sent downstream do not (the
/// batch loop of [`Materializer::apply_with`] skips them).
fn materializes(bytes: &[u8]) -> bool {
    parse_record(bytes)
        .is_ok_and(|v| matches!(v.body(), RecordBodyView::Punch(_) | RecordBodyView::Hr(_)))
}

/// A log position past entries that change nothing ([`materializes`]),
/// not yet committed to the store. Committing it alone costs a
/// transaction, and under a fleet's pings that was one per log commit
/// (about 220 a second at the knee). It is committed at most
/// [`CURSOR_EVERY`] after the first position it holds while skipping goes
/// on, within one of going idle, and at stop; the next applied batch
/// commits a later position anyway. Until then a restart rereads the
/// skipped entries, which changes nothing. The log cursor follows only
/// committed positions, so retention never passes the store's position.
#[derive(Debug, Default)]
struct Skipped {
    next: Option<Lsn>,
    since: Option<tokio::time::Instant>,
}

impl Skipped {
    /// Notes `next` as skipped at `now`; returns the position to commit
    /// when the oldest one held is [`CURSOR_EVERY`] old.
    fn skip(&mut self, next: Lsn, now: tokio::time::Instant) -> Option<Lsn> {
        self.next = Some(next);
        let since = *self.since.get_or_insert(now);
        if now.saturating_duration_since(since) >= CURSOR_EVERY {
            self.take()
        } else {
            None
        }
    }

    /// An applied batch committed a later position.
    fn applied(&mut self) {
        (self.next, self.since) = (None, None);
    }

    /// The position held, to commit now.
    fn take(&mut self) -> Option<Lsn> {
        self.since = None;
        self.next.take()
    }
}

/// The materializer's log cursor, persisted at most once per
/// [`CURSOR_EVERY`] while the materializer keeps moving, within one
/// [`CURSOR_EVERY`] of it going idle, and when it stops.
struct CursorHold {
    cursor: crate::log::Cursor,
    /// The position applied and not yet persisted, if any.
    pending: Option<Lsn>,
    /// When the cursor was last persisted.
    last: Option<tokio::time::Instant>,
}

impl CursorHold {
    fn new(cursor: crate::log::Cursor) -> Self {
        Self {
            cursor,
            pending: None,
            last: None,
        }
    }

    /// Notes `next` as applied at `now`; persists it when the last store
    /// is [`CURSOR_EVERY`] old.
    async fn advance(&mut self, next: Lsn, now: tokio::time::Instant) -> Result<(), LogError> {
        self.pending = Some(next);
        if self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= CURSOR_EVERY)
        {
            self.flush(now).await?;
        }
        Ok(())
    }

    /// Persists the pending position, if there is one.
    async fn flush(&mut self, now: tokio::time::Instant) -> Result<(), LogError> {
        if let Some(next) = self.pending.take() {
            self.cursor.store_async(next).await?;
            self.last = Some(now);
        }
        Ok(())
    }
}

/// Stores the waiting `punches` (multi-row statements) and notes the days
/// they touch; returns how many were new. Each tenant's closing start is
/// moved once, to its earliest day among them, as one [`note_start`] per
/// punch would.
async fn store_punches(
    tx: &mut Tx,
    rules: &Rules,
    punches: &mut Vec<PunchRow>,
    touched: &mut Touched,
) -> Result<usize, sqlx::Error> {
    if punches.is_empty() {
        return Ok(0);
    }
    let new = ResultsStore::insert_punches(tx, punches).await?;
    let mut starts: std::collections::BTreeMap<&str, i32> = std::collections::BTreeMap::new();
    let mut days = Vec::with_capacity(punches.len());
    for (row, &is_new) in punches.iter().zip(&new) {
        if is_new && row.needs_approval {
            // From the stream a decision can come before its punch
            // (decided through one node while the punch's node was still
            // forwarding): the first decision stored applies.
            hr::adopt_decision(tx, &row.tenant, &row.record_id).await?;
        }
        let t = rules.tenant(&row.tenant);
        let group = t.group_of(t.employee(&row.employee));
        let d = day::attributed_day(t, group, row.kind, row.at_ms);
        let start = starts.entry(&row.tenant).or_insert(d);
        *start = (*start).min(d);
        days.push(d);
    }
    for (tenant, d) in starts {
        note_start(tx, tenant, d).await?;
    }
    for (row, d) in std::mem::take(punches).into_iter().zip(days) {
        touched.insert((row.tenant, row.employee, d));
    }
    Ok(new.iter().filter(|n| **n).count())
}

/// The row a punch record `view` (body `p`) at `lsn` is stored as.
pub(super) fn punch_row(
    view: &fencegate_schema::RecordView<'_>,
    p: &fencegate_schema::PunchRecord<'_>,
    lsn: u64,
) -> PunchRow {
    let att = view.attendance().unwrap_or_default();
    let at_ms = if att.attendance_time_ms != 0 {
        att.attendance_time_ms
    } else {
        view.gateway_time_ms()
    };
    PunchRow {
        record_id: crate::record_json::uuid(&view.record_id()),
        lsn: lsn as i64,
        tenant: view.tenant().to_owned(),
        employee: p.employee_id().to_owned(),
        kind: p.kind(),
        at_ms,
        verdict: p.verdict(),
        status: p.status(),
        needs_approval: att.needs_approval,
        flags: p.anomaly_flags() as i64,
        department: att.department.map(str::to_owned),
        slot: p.slot().map(str::to_owned),
    }
}

/// Applies HR record `view` (body `h`, not a month archive) at `lsn`:
/// notes it applied, folds it in, moves the closing start back to its
/// days. Returns the employee days it touched. The punches before it must
/// be stored (a decision finds its punch).
pub(super) async fn apply_hr_record(
    tx: &mut Tx,
    rules: &Rules,
    view: &fencegate_schema::RecordView<'_>,
    h: HrView<'_>,
    lsn: u64,
) -> Result<Touched, sqlx::Error> {
    ResultsStore::note_hr_record(
        tx,
        &crate::record_json::uuid(&view.record_id()),
        view.tenant(),
        view.gateway_time_ms(),
    )
    .await?;
    let mut mine = Touched::new();
    hr::apply_hr(tx, rules, view, h, lsn, &mut mine).await?;
    for (tenant, _, d) in &mine {
        note_start(tx, tenant, *d).await?;
    }
    Ok(mine)
}

/// When a batch's touched employee days are recomputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Days {
    /// In the batch's transaction: what a node does, so every record's day
    /// is current when its batch commits.
    Recompute,
    /// As [`Days::Recompute`], except the days the closing pass that
    /// follows ([`Materializer::close_due`] at the same time) recomputes
    /// anyway: a rostered employee's day from the group's next day to
    /// close on, whose close time has passed. A rebuild reads a whole
    /// month of punches whose days are all due: each would otherwise be
    /// computed once per batch that touches it and again when it closes.
    LeaveDueToClose,
}

impl Days {
    /// Recomputes `touched`: all of it, or what the close leaves.
    async fn flush(
        self,
        tx: &mut Tx,
        rules: &Rules,
        touched: &mut Touched,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        if self == Days::LeaveDueToClose {
            leave_due_to_close(tx, rules, touched, now_ms).await?;
        }
        flush(tx, rules, touched, now_ms).await
    }
}

/// Removes from `touched` the days [`close_tenant`] at `now_ms` will
/// recompute: the employee is on its group's roster, and the day lies
/// among the group's [`due_days`] (from the next day to close, as the
/// store says now, to today; close times only grow with the day).
pub(super) async fn leave_due_to_close(
    tx: &mut Tx,
    rules: &Rules,
    touched: &mut Touched,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    // Per (tenant, group): the first day the close recomputes (None: it
    // closes nothing), and the tenant's today.
    let mut next: std::collections::HashMap<(String, u16), Option<(i32, i32)>> =
        std::collections::HashMap::new();
    let mut keep = Touched::new();
    for (tenant, employee, d) in std::mem::take(touched) {
        let t = rules.tenant(&tenant);
        let Some(listed) = t.employee(&employee) else {
            keep.insert((tenant, employee, d));
            continue;
        };
        let gi = listed.group;
        let group = t.group_of(Some(listed));
        let key = (tenant.clone(), gi);
        let from = match next.get(&key) {
            Some(v) => *v,
            None => {
                let closed =
                    ResultsStore::meta(tx, &format!("closed:{tenant}:{}", group.name)).await?;
                let start = ResultsStore::meta(tx, &format!("start:{tenant}")).await?;
                let first = closed.map(|c| c as i32 + 1).or(start.map(|s| s as i32));
                let local = now_ms + t.tz_table.offset_ms(&t.tz, now_ms);
                let v = first.map(|f| (f, local.div_euclid(86_400_000) as i32));
                next.insert(key, v);
                v
            }
        };
        let closes = from.is_some_and(|(first, today)| {
            d >= first && d <= today && day::close_ms(t, group, d) <= now_ms
        });
        if !closes {
            keep.insert((tenant, employee, d));
        }
    }
    *touched = keep;
    Ok(())
}

/// Notes that `tenant` has a day `d`: closing starts at the tenant's first
/// day seen; an earlier day (an old offline punch, leave entered late)
/// moves the start back and re-closes.
pub(super) async fn note_start(tx: &mut Tx, tenant: &str, d: i32) -> Result<(), sqlx::Error> {
    let key = format!("start:{tenant}");
    match ResultsStore::meta(tx, &key).await? {
        Some(s) if s <= i64::from(d) => {}
        Some(_) => {
            ResultsStore::set_meta(tx, &key, i64::from(d)).await?;
            ResultsStore::lower_closed(tx, tenant, i64::from(d) - 1).await?;
        }
        None => ResultsStore::set_meta(tx, &key, i64::from(d)).await?,
    }
    Ok(())
}

/// Recomputes every touched employee day and forgets them, tenant by
/// tenant in set queries ([`batch::recompute_many`]).
async fn flush(
    tx: &mut Tx,
    rules: &Rules,
    touched: &mut Touched,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let all = std::mem::take(touched);
    let mut days: Vec<(&str, i32)> = Vec::new();
    let mut it = all.iter().peekable();
    while let Some((tenant, e, d)) = it.next() {
        days.push((e, *d));
        if it.peek().is_none_or(|(next, _, _)| next != tenant) {
            batch::recompute_many(tx, rules, tenant, &mut days, now_ms).await?;
            days.clear();
        }
    }
    Ok(())
}

/// [`flush`] one employee day at a time ([`Recompute::PerEmployee`]).
async fn flush_each(
    tx: &mut Tx,
    rules: &Rules,
    touched: &mut Touched,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    for (tenant, employee, d) in std::mem::take(touched) {
        recompute(tx, rules, &tenant, &employee, d, now_ms).await?;
    }
    Ok(())
}

/// The days of `group` that close by `now_ms`: from `next` on, none after
/// `today`, stopping at the first whose close time has not passed.
pub(super) fn due_days(
    t: &TenantRules,
    group: &Group,
    mut next: i32,
    today: i32,
    now_ms: i64,
) -> Vec<i32> {
    let mut out = Vec::new();
    while next <= today && day::close_ms(t, group, next) <= now_ms {
        out.push(next);
        next += 1;
    }
    out
}

/// Closes `tenant`'s days whose close time has passed by `now_ms`: each
/// employee of the group's roster (and anyone with a row that day) gets
/// the day recomputed as closed; no day after `until` (a month archive
/// closes its month only). Returns the employee days written.
///
/// Every due day of a group is closed at once: the roster's days and
/// those of employees with a row in the group go to
/// [`batch::recompute_many`], which reads and writes them in set queries.
async fn close_tenant(
    tx: &mut Tx,
    rules: &Rules,
    tenant: &str,
    now_ms: i64,
    until: Option<i32>,
) -> Result<usize, sqlx::Error> {
    let t = rules.tenant(tenant);
    let mut written = 0;
    let Some(start) = ResultsStore::meta(tx, &format!("start:{tenant}")).await? else {
        return Ok(0);
    };
    let local = now_ms + t.tz_table.offset_ms(&t.tz, now_ms);
    let today = (local.div_euclid(86_400_000) as i32).min(until.unwrap_or(i32::MAX));
    for (gi, group) in t.groups.iter().enumerate() {
        let key = format!("closed:{tenant}:{}", group.name);
        let next = ResultsStore::meta(tx, &key)
            .await?
            .map_or(start as i32, |c| c as i32 + 1);
        let due = due_days(t, group, next, today, now_ms);
        let (Some(&first), Some(&last)) = (due.first(), due.last()) else {
            continue;
        };
        // Employees the rules do not list in the group but who have a row
        // in it (left the roster, or never on it).
        let dates: std::collections::HashMap<String, i32> =
            due.iter().map(|&d| (date_string(d), d)).collect();
        let extra = ResultsStore::employees_between(
            tx,
            tenant,
            &group.name,
            &date_string(first),
            &date_string(last),
        )
        .await?;
        let roster = t
            .employees
            .iter()
            .filter(|(_, e)| usize::from(e.group) == gi)
            .map(|(id, _)| &**id);
        let mut days: Vec<(&str, i32)> = Vec::with_capacity(due.len() * t.employees.len());
        for e in roster {
            days.extend(due.iter().map(|&d| (e, d)));
        }
        days.extend(
            extra
                .iter()
                .filter_map(|(e, date)| dates.get(date).map(|&d| (e.as_str(), d))),
        );
        written += batch::recompute_many(tx, rules, tenant, &mut days, now_ms).await?;
        ResultsStore::set_meta(tx, &key, i64::from(last)).await?;
    }
    Ok(written)
}

/// [`close_tenant`] one employee day at a time ([`Recompute::PerEmployee`]).
async fn close_tenant_each(
    tx: &mut Tx,
    rules: &Rules,
    tenant: &str,
    now_ms: i64,
    until: Option<i32>,
) -> Result<usize, sqlx::Error> {
    let t = rules.tenant(tenant);
    let mut written = 0;
    let Some(start) = ResultsStore::meta(tx, &format!("start:{tenant}")).await? else {
        return Ok(0);
    };
    let local = now_ms + t.tz_table.offset_ms(&t.tz, now_ms);
    let today = (local.div_euclid(86_400_000) as i32).min(until.unwrap_or(i32::MAX));
    for (gi, group) in t.groups.iter().enumerate() {
        let key = format!("closed:{tenant}:{}", group.name);
        let mut next = ResultsStore::meta(tx, &key)
            .await?
            .map_or(start as i32, |c| c as i32 + 1);
        let mut roster: Vec<&str> = t
            .employees
            .iter()
            .filter(|(_, e)| usize::from(e.group) == gi)
            .map(|(id, _)| &**id)
            .collect();
        roster.sort_unstable();
        while next <= today && day::close_ms(t, group, next) <= now_ms {
            let date = date_string(next);
            let mut who: BTreeSet<String> = roster.iter().map(|s| (*s).to_owned()).collect();
            who.extend(ResultsStore::employees_on(tx, tenant, &date, &group.name).await?);
            for e in &who {
                recompute(tx, rules, tenant, e, next, now_ms).await?;
                written += 1;
            }
            ResultsStore::set_meta(tx, &key, i64::from(next)).await?;
            next += 1;
        }
    }
    Ok(written)
}

/// Up to [`BATCH`] entries the reader has now, copied out.
pub(super) fn read_batch(reader: &mut LogReader) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
    let mut out = Vec::new();
    while out.len() < BATCH {
        match reader.next_entry()? {
            Some(e) => out.push((e.lsn.0, e.payload.to_vec())),
            None => break,
        }
    }
    Ok(out)
}

/// Runs blocking log reads off the async worker on a multi-thread runtime
/// (as the sink forwarders do).
fn off_the_reactor<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Recomputes one employee's day from every punch the store holds near it
/// and writes its rows, bumping the revision of rows that changed: three
/// selects and a statement per row, the per-employee path
/// ([`Recompute::PerEmployee`]) that [`batch::recompute_many`] must equal.
async fn recompute(
    tx: &mut Tx,
    rules: &Rules,
    tenant: &str,
    employee: &str,
    d: i32,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let t = rules.tenant(tenant);
    let listed = t.employee(employee);
    let group = t.group_of(listed);
    // Punches that can count for day d lie within a day of it either side
    // (windows reach at most 12 hours past a slot).
    let from = midnight_ms(&t.tz, &t.tz_table, d - 1);
    let to = midnight_ms(&t.tz, &t.tz_table, d + 2);
    let punches = ResultsStore::punches_of(tx, tenant, employee, from, to).await?;
    let cover = hr::cover_of(tx, tenant, employee, &date_string(d)).await?;
    let result = day::compute_with(t, group, d, &punches, cover);
    let closed = now_ms >= result.close_ms;
    let department = listed
        .and_then(|e| e.department.as_deref())
        .map(str::to_owned);
    // The tenant as the record names it: a tenant without a section in the
    // rules is judged by the defaults, whose id is empty.
    let rows = rows_of(tenant, employee, &group.name, &result, closed, department);
    let old = ResultsStore::rows_of_day(tx, tenant, employee, &date_string(d)).await?;
    for mut row in rows {
        let was = old.iter().find(|o| o.slot == row.slot);
        if let Some(o) = was {
            if o.same_result(&row) {
                continue;
            }
            row.revision = o.revision + 1;
        }
        ResultsStore::upsert_row(tx, was, &row).await?;
    }
    for o in &old {
        if o.slot.is_empty() || result.slots.iter().any(|s| s.name == o.slot) {
            continue;
        }
        ResultsStore::delete_row(tx, o).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;

    #[tokio::test]
    async fn the_cursor_is_persisted_once_a_second_while_it_moves_and_at_once_when_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = LogHandle::open(LogConfig::new(dir.path())).unwrap();
        for _ in 0..8 {
            log.append(&[7u8; 32], 0).unwrap().await.unwrap();
        }
        let cursor = log.cursor("results", CursorStart::Oldest).unwrap();
        let start = cursor.position().0;
        let mut held = CursorHold::new(cursor.clone());
        let t0 = crate::clock::tokio_now();

        assert_eq!(CURSOR_EVERY, Duration::from_secs(1), "the steps assume it");
        // (applied position, at ms after t0, flush after, persisted position, why)
        let steps: [(u64, u64, bool, u64, &str); 6] = [
            (1, 0, false, 1, "the first position is stored"),
            (2, 100, false, 1, "within a second nothing more is stored"),
            (4, 900, false, 1, "within a second nothing more is stored"),
            (5, 1_000, false, 5, "a second on, the newest is stored"),
            (6, 1_000, false, 5, "the second after that starts now"),
            (6, 1_000, true, 6, "idle or stopping stores what is pending"),
        ];
        for (applied, at_ms, flush, persisted, why) in steps {
            let at = t0 + Duration::from_millis(at_ms);
            held.advance(Lsn(start + applied), at).await.unwrap();
            if flush {
                held.flush(at).await.unwrap();
            }
            assert_eq!(cursor.position(), Lsn(start + persisted), "{why}");
        }

        // The position is the persisted one: a reopened log has it.
        drop((held, cursor));
        log.close();
        let (log, _) = LogHandle::open(LogConfig::new(dir.path())).unwrap();
        let cursors = log.cursors();
        assert!(
            cursors.contains(&("results".to_string(), Lsn(start + 6))),
            "{cursors:?}"
        );
    }

    #[test]
    fn skipped_positions_are_committed_a_second_after_the_first_or_when_taken() {
        let t0 = crate::clock::tokio_now();
        let mut s = Skipped::default();
        assert_eq!(CURSOR_EVERY, Duration::from_secs(1), "the steps assume it");
        // (skipped position, at ms after t0, due to commit, why)
        let steps: [(u64, u64, Option<u64>, &str); 5] = [
            (10, 0, None, "the first skip only starts the second"),
            (20, 600, None, "within the second nothing is committed"),
            (30, 1_000, Some(30), "a second after the first, the newest"),
            (40, 1_100, None, "a new second starts at the next skip"),
            (50, 2_099, None, "still within it"),
        ];
        for (next, at_ms, due, why) in steps {
            let at = t0 + Duration::from_millis(at_ms);
            assert_eq!(s.skip(Lsn(next), at), due.map(Lsn), "{why}");
        }
        assert_eq!(s.take(), Some(Lsn(50)), "idle or stopping commits it");
        assert_eq!(s.take(), None, "and only once");
        s.skip(Lsn(60), t0);
        s.applied();
        assert_eq!(s.take(), None, "an applied batch committed past it");
    }

    #[test]
    fn only_punch_records_and_hr_records_are_materialized() {
        use fencegate_schema::{
            AttendanceStatus, FenceEventMsg, PingRecordMsg, PunchKind, PunchMethod, PunchRecordMsg,
            Reason, RecordBodyMsg, RecordMsg, Transition, Verdict,
        };
        let encode = |body: RecordBodyMsg| {
            let msg = RecordMsg {
                record_id: [1; 16],
                tenant: "acme".into(),
                gateway_time_ms: 1_000,
                node: None,
                body,
            };
            let mut fbb = flatbuffers::FlatBufferBuilder::new();
            msg.encode_into(&mut fbb).to_vec()
        };
        let ping = encode(RecordBodyMsg::Ping(PingRecordMsg {
            device_id: "d".into(),
            time_ms: 5,
            lat: 1.0,
            lon: 2.0,
            accuracy_m: 5.0,
            h3_cell: 0,
            fence_ids: vec![],
            heartbeat: false,
            late: false,
        }));
        let event = encode(RecordBodyMsg::FenceEvent(FenceEventMsg {
            device_id: "d".into(),
            fence_id: "f".into(),
            transition: Transition::Enter,
            time_ms: 5,
            lat: 1.0,
            lon: 2.0,
        }));
        let punch = encode(RecordBodyMsg::Punch(PunchRecordMsg {
            punch_id: [2; 16],
            employee_id: "e".into(),
            device_id: "d".into(),
            kind: PunchKind::In,
            method: PunchMethod::Gps,
            device_time_ms: 1_000,
            position: None,
            verdict: Verdict::Accepted,
            reason: Reason::None,
            fence_ids: vec![],
            nearest_fence_id: None,
            distance_m: 0.0,
            offline: false,
            mock_location: false,
            status: AttendanceStatus::Normal,
            anomaly_flags: 0,
            slot: None,
            merged_into: None,
        }));
        assert!(materializes(&punch));
        assert!(!materializes(&ping));
        assert!(!materializes(&event));
        assert!(!materializes(b"not a record"));
    }
}
