//! Day results downstream (docs/ATTENDANCE.md, "Day results downstream"):
//! when a day's result is written closed (the day closed, or a late
//! offline punch, a decision, leave or a make-up changed it afterwards),
//! the employee day is noted in `day_outbox` in the same transaction as
//! the rows. A publisher task reads the noted days, appends each day's
//! current result to the durable log as a `DayResult` record (so the
//! forwarders deliver it at least once, like every record), and only then
//! forgets the note. A crash between the append and the forgetting sends
//! the day again; its record id is derived from the note (its `seq`) and
//! the content, so the downstream drops the copy (JetStream's
//! `Nats-Msg-Id`), while a later note of the same content (a day changed
//! and changed back) is a new id.
//!
//! The outbox pattern, instead of appending from inside the materializer's
//! transaction: the log append and the store commit cannot be one atomic
//! step, and a result must never reach the downstream without being in
//! the store (or be in the store and never reach it).

use std::time::Duration;

use fencegate_schema::{DayResultMsg, DaySlotResultMsg, RecordBodyMsg, RecordMsg};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::store::ResultsStore;
use crate::log::{LogError, LogHandle, RecordBatch};

/// Employee days a publisher round sends at most.
const ROUND: i64 = 500;

/// Why a publisher round stopped.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The results store failed.
    #[error("results store: {0}")]
    Store(#[from] sqlx::Error),
    /// The durable log refused or did not commit the records.
    #[error("durable log: {0}")]
    Log(#[from] LogError),
}

/// The record id of a day result: a hash of the note it answers (`seq`)
/// and everything it says but its time, so the same note sent twice (a
/// crash after the append) has the same id, and a changed result, or the
/// same result noted again later, a new one.
pub fn day_result_record_id(tenant: &str, seq: i64, d: &DayResultMsg) -> [u8; 16] {
    let mut h = Sha256::new();
    let mut part = |s: &str| {
        h.update(s.as_bytes());
        h.update([0]);
    };
    part("fencegate-day");
    part(tenant);
    part(&seq.to_string());
    part(&d.revision.to_string());
    part(&d.employee_id);
    part(&d.date);
    part(d.department.as_deref().unwrap_or(""));
    part(d.group.as_deref().unwrap_or(""));
    part(&d.status);
    for v in [
        d.late_min,
        d.early_min,
        d.worked_min,
        d.overtime_min,
        d.in_ms,
        d.out_ms,
    ] {
        part(&v.to_string());
    }
    for s in &d.slots {
        part(&s.slot);
        part(&s.status);
        for v in [s.late_min, s.early_min, s.in_ms, s.out_ms] {
            part(&v.to_string());
        }
    }
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// A noted employee day as read back: its key, its note's `seq`, and its
/// result (`None`: the day has no day row any more).
struct Noted {
    tenant: String,
    date: String,
    employee: String,
    seq: i64,
    result: Option<DayResultMsg>,
}

/// Reads up to [`ROUND`] noted days with their current rows.
async fn read_noted(store: &ResultsStore) -> Result<Vec<Noted>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT o.tenant, o.date, o.employee, o.seq, d.slot, d.department, d.grp, d.status, \
         d.late_min, d.early_min, d.worked_min, d.overtime_min, d.in_ms, d.out_ms, d.revision \
         FROM (SELECT tenant, date, employee, seq FROM day_outbox ORDER BY tenant, date, employee LIMIT $1) o \
         LEFT JOIN day_results d ON d.tenant = o.tenant AND d.date = o.date AND d.employee = o.employee \
         ORDER BY o.tenant, o.date, o.employee, d.slot",
    )
    .bind(ROUND)
    .fetch_all(store.pool())
    .await?;
    let mut out: Vec<Noted> = Vec::new();
    for r in &rows {
        let tenant: String = r.try_get("tenant")?;
        let date: String = r.try_get("date")?;
        let employee: String = r.try_get("employee")?;
        let same = out
            .last()
            .is_some_and(|n| n.tenant == tenant && n.date == date && n.employee == employee);
        if !same {
            out.push(Noted {
                tenant,
                date,
                employee,
                seq: r.try_get("seq")?,
                result: None,
            });
        }
        let Some(slot) = r.try_get::<Option<String>, _>("slot")? else {
            continue;
        };
        let n = out.last_mut().expect("pushed above");
        let status: String = r.try_get("status")?;
        let late_min: i64 = r.try_get("late_min")?;
        let early_min: i64 = r.try_get("early_min")?;
        let in_ms = r.try_get::<Option<i64>, _>("in_ms")?.unwrap_or(0);
        let out_ms = r.try_get::<Option<i64>, _>("out_ms")?.unwrap_or(0);
        if slot.is_empty() {
            // The day row sorts first (''): the slots follow it.
            n.result = Some(DayResultMsg {
                employee_id: n.employee.clone(),
                date: n.date.clone(),
                department: r.try_get("department")?,
                group: Some(r.try_get("grp")?),
                status,
                late_min,
                early_min,
                worked_min: r.try_get("worked_min")?,
                overtime_min: r.try_get("overtime_min")?,
                in_ms,
                out_ms,
                revision: r.try_get("revision")?,
                slots: Vec::new(),
            });
        } else if let Some(day) = &mut n.result {
            day.slots.push(DaySlotResultMsg {
                slot,
                status,
                late_min,
                early_min,
                in_ms,
                out_ms,
            });
        }
    }
    Ok(out)
}

/// One publisher round: appends the current result of up to [`ROUND`]
/// noted days to `log` (one batch, waited for until durable), then forgets
/// the notes that did not move meanwhile. Returns the days handled (sent,
/// or forgotten for having no result any more).
pub async fn publish_round(
    store: &ResultsStore,
    log: &LogHandle,
    node: Option<&str>,
    now_ms: i64,
) -> Result<usize, OutboxError> {
    let noted = read_noted(store).await?;
    if noted.is_empty() {
        return Ok(0);
    }
    let mut batch = RecordBatch::new();
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    for n in &noted {
        let Some(day) = &n.result else { continue };
        let msg = RecordMsg {
            record_id: day_result_record_id(&n.tenant, n.seq, day),
            tenant: n.tenant.clone(),
            gateway_time_ms: now_ms,
            node: node.map(str::to_owned),
            body: RecordBodyMsg::DayResult(day.clone()),
        };
        fbb.reset();
        batch.push(msg.encode_into(&mut fbb), now_ms.max(0) as u64);
    }
    if !batch.is_empty() {
        log.append_batch(batch)?.await?;
    }
    let mut tx = store.begin().await?;
    for n in &noted {
        sqlx::query(
            "DELETE FROM day_outbox WHERE tenant = $1 AND date = $2 AND employee = $3 AND seq = $4",
        )
        .bind(&n.tenant)
        .bind(&n.date)
        .bind(&n.employee)
        .bind(n.seq)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let sent = noted.iter().filter(|n| n.result.is_some()).count();
    metrics::counter!("fencegate_day_results_sent_total").increment(sent as u64);
    Ok(noted.len())
}

/// Sends noted days until `stop`: rounds back to back while there are
/// more, else one every `tick`. Errors are logged and retried after a
/// pause; nothing is forgotten that was not appended.
pub async fn run(
    store: ResultsStore,
    log: LogHandle,
    node: Option<String>,
    stop: CancellationToken,
    tick: Duration,
) {
    loop {
        let wait = match publish_round(&store, &log, node.as_deref(), crate::clock::unix_ms()).await
        {
            Ok(n) if n as i64 == ROUND => Duration::ZERO,
            Ok(_) => tick,
            Err(OutboxError::Log(LogError::Closed)) => return,
            Err(e) => {
                tracing::warn!(error = %e, "day results not sent downstream yet; retrying");
                Duration::from_secs(5).max(tick)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}
