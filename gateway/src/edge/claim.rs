//! The punch path's cross-node claims (docs/SCALING.md, "What nodes
//! share"): after the pipeline decided a new punch and before its record
//! is appended, its punch id and its (tenant, employee, kind) repeat window
//! are claimed in JetStream at once. What the answers mean:
//!
//! - both won: append and ack as a lone node would;
//! - punch id held, durable: a resend of a punch another node (or this
//!   one before a restart) acknowledged: answer with its ack, append
//!   nothing;
//! - punch id held, in flight: answer `Busy`, unless the holder is this
//!   node (its earlier attempt failed) or the claim is older than
//!   `cluster.takeover_ms` (its node died before the record was durable):
//!   then take it over with a compare-and-set and append;
//! - repeat window held by another punch within the window: merge into it
//!   (the pipeline decides the punch again, as its local repeat merge
//!   would);
//! - no answer in time: the tenant's `on_unreachable` policy.
//!
//! After the commit the punch id's stake is settled (durable, with the
//! final ack) off the ack path; after a failed append the claims are
//! released so the resend wins them afresh.

use std::sync::Arc;

use fencegate_schema::{PunchView, Reason, Verdict};

use crate::cluster::{CLAIM_UNCHECKED, Claim, OnUnreachable, PunchClaims, Stake};
use crate::log::Pending;
use crate::pipeline::{AckInfo, ClaimOutcome, PendingPunch, PunchDecision, Session};

use super::{Answer, EdgeContext, OVERLOAD_RETRY_MS, SCRATCH, log_busy};

/// Retry-after for a resend whose first copy is in flight on another node.
const HELD_IN_FLIGHT_RETRY_MS: u32 = 200;

/// What to do with the claims once the record's commit is known.
pub(super) struct Claimed {
    cluster: Arc<PunchClaims>,
    tenant: Arc<str>,
    punch_id: [u8; 16],
    /// The punch id's stake, settled after the commit.
    stake: Stake,
    /// Whether this node holds the punch id (won or taken over).
    own_punch: bool,
    /// The repeat window this punch holds or should hold: (employee, kind,
    /// stake, whether it still has to be written).
    repeat: Option<(Box<str>, u8, Stake, bool)>,
    /// Whether this attempt created the repeat window's key. A window held
    /// under this punch's record id was written by whichever node holds
    /// the punch id: released on a failure only by that holder, or a
    /// resend answered here with another node's ack would delete the
    /// window that node's punch opened (and the employee's next repeat
    /// would be accepted as new).
    repeat_won: bool,
}

impl Claimed {
    /// The record is durable: settle the punch id with its ack (and write
    /// the repeat window if another's stale one was in the way).
    pub(super) fn durable(mut self, ctx: &EdgeContext, ack: &AckInfo) {
        self.stake.durable = true;
        self.stake.verdict = ack.verdict.0;
        self.stake.reason = ack.reason.0;
        self.stake.record_id = ack.record_id;
        ctx.tasks.spawn(async move {
            let Some(c) = self.cluster.buckets() else {
                return;
            };
            c.settle_punch(&self.tenant, &self.punch_id, &self.stake)
                .await;
            if let Some((employee, kind, stake, true)) = &self.repeat {
                c.put_repeat(&self.tenant, employee, *kind, stake).await;
            }
        });
    }

    /// The record could not be written: give the claims back.
    pub(super) fn failed(self, ctx: &EdgeContext) {
        ctx.tasks.spawn(async move {
            let ours = self.repeat_won || self.own_punch;
            release(
                &self.cluster,
                &self.tenant,
                &self.punch_id,
                self.own_punch,
                self.repeat.as_ref().filter(|_| ours),
            )
            .await;
        });
    }
}

async fn release(
    cluster: &PunchClaims,
    tenant: &str,
    punch_id: &[u8; 16],
    own_punch: bool,
    repeat: Option<&(Box<str>, u8, Stake, bool)>,
) {
    let Some(c) = cluster.buckets() else {
        return;
    };
    if own_punch {
        c.release_punch(tenant, punch_id).await;
    }
    if let Some((employee, kind, _, false)) = repeat {
        c.release_repeat(tenant, employee, *kind).await;
    }
}

/// Claims a punch the pipeline decided as a new record (`record`, `ack`,
/// `pending`), then appends its record (or the record decided again with
/// what the claims found). `Err` is the answer when nothing is appended.
#[expect(
    clippy::too_many_arguments,
    reason = "the punch path's state, passed once per punch"
)]
pub(super) async fn claim_and_append(
    ctx: &EdgeContext,
    cluster: &Arc<PunchClaims>,
    session: &Session,
    punch: &PunchView<'_>,
    now_ms: i64,
    record: Vec<u8>,
    ack: AckInfo,
    pending: PendingPunch,
) -> Result<(Pending, AckInfo, PendingPunch, Claimed), Answer> {
    let tenant = &*session.tenant;
    let punch_id = punch.punch_id();
    let employee = punch.employee_id();
    let stake = Stake {
        durable: false,
        verdict: ack.verdict.0,
        reason: ack.reason.0,
        record_id: ack.record_id,
        node: cluster.node(),
        at_ms: now_ms,
    };
    let rstake = Stake {
        record_id: pending.record_id(),
        at_ms: pending.at_ms(),
        ..stake
    };
    let kind = pending.repeat_kind();
    let (pc, rc) = cluster
        .claim(
            tenant,
            &punch_id,
            &stake,
            kind.map(|k| (employee, k, &rstake)),
        )
        .await;

    let mut claimed = Claimed {
        cluster: cluster.clone(),
        tenant: session.tenant.clone(),
        punch_id,
        stake,
        own_punch: pc == Claim::Won,
        repeat: None,
        repeat_won: rc == Some(Claim::Won),
    };
    let mut outcome = ClaimOutcome::default();
    let mut unreachable = pc == Claim::Unreachable;
    if let (Some(k), Some(rc)) = (kind, rc) {
        // (held by us, still to write) for a window this punch ends up with.
        let mine = match rc {
            Claim::Won => Some(false),
            Claim::Unreachable => {
                unreachable = true;
                None
            }
            // Our own earlier attempt at this punch.
            Claim::Held { stake: h, .. } if h.record_id == pending.record_id() => Some(false),
            Claim::Held { stake: h, .. } if cluster.repeats(&h, pending.at_ms()) => {
                outcome.merged_into = Some(h.record_id);
                None
            }
            // Another punch's window, but this punch is not within it (an
            // offline punch from before it, or its key outlived the window
            // by claim time): this punch opens its own.
            Claim::Held { .. } => Some(true),
        };
        if let Some(to_write) = mine {
            claimed.repeat = Some((employee.into(), k, rstake, to_write));
        }
    }

    if let Claim::Held { stake: h, revision } = pc {
        let answer = if h.durable {
            // A resend of a punch already acknowledged in the cluster.
            Some(Answer::Ack(
                Some(punch_id),
                AckInfo {
                    record_id: h.record_id,
                    verdict: Verdict(h.verdict),
                    reason: Reason(h.reason),
                    ..ack.clone()
                },
            ))
        } else if cluster.stale(&h, now_ms)
            && match cluster.buckets() {
                Some(c) => c.take_over_punch(tenant, &punch_id, &stake, revision).await,
                None => false,
            }
        {
            claimed.own_punch = true;
            None
        } else {
            Some(Answer::Busy(HELD_IN_FLIGHT_RETRY_MS, Reason::Overloaded))
        };
        if let Some(answer) = answer {
            ctx.pipeline
                .settle(&pending, crate::pipeline::Settled::Failed);
            claimed.failed(ctx);
            return Err(answer);
        }
    }
    if unreachable {
        cluster.count_unreachable();
        match cluster.policy(tenant) {
            OnUnreachable::Busy => {
                ctx.pipeline
                    .settle(&pending, crate::pipeline::Settled::Failed);
                let retry = cluster.busy_retry_after_ms();
                claimed.failed(ctx);
                return Err(Answer::Busy(retry, Reason::Overloaded));
            }
            OnUnreachable::FailOpen => outcome.flags |= CLAIM_UNCHECKED,
        }
    }

    let appended = if outcome == ClaimOutcome::default() {
        match ctx.log.append(&record, now_ms.max(0) as u64) {
            Ok(p) => Ok((p, ack, pending)),
            Err(e) => Err(log_busy(&e)),
        }
    } else {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            match ctx
                .pipeline
                .punch_claimed(now_ms, session, punch, &mut s, &pending, outcome)
            {
                PunchDecision::Record {
                    record,
                    ack,
                    pending,
                } => match ctx.log.append(record, now_ms.max(0) as u64) {
                    Ok(p) => Ok((p, ack, pending)),
                    Err(e) => Err(log_busy(&e)),
                },
                _ => Err(Answer::Busy(OVERLOAD_RETRY_MS, Reason::Overloaded)),
            }
        })
    };
    match appended {
        Ok((p, ack, pending)) => Ok((p, ack, pending, claimed)),
        Err(answer) => {
            ctx.pipeline
                .settle(&pending, crate::pipeline::Settled::Failed);
            claimed.failed(ctx);
            Err(answer)
        }
    }
}
