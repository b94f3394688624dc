//! The claims as the punch path uses them: the buckets opened in the
//! background (a node starts while NATS is down and answers by its policy
//! meanwhile), each tenant's unreachable policy, and the claim metrics.
//! The edge (`crate::edge::claim`) decides what a punch gets from the
//! answers.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use tokio_util::sync::CancellationToken;

use super::claims::{Claim, Claims, ClaimsConfig, Stake};
use super::settings::{ClusterSettings, OnUnreachable};

/// Set in a punch record's `anomaly_flags` when the cluster's claims could
/// not be made and the tenant's policy is `fail_open`: the punch was
/// accepted as a lone node would, so a repeat of it on another node in the
/// same spell may be a second accepted record. Bit 32: bits 0 to 31 are
/// kept for `AnomalyBit` (schema/fbs/record.fbs); bits from 32 up are the
/// gateway's operational marks.
pub const CLAIM_UNCHECKED: u64 = 1 << 32;

/// The claims of one node, shared by every punch.
pub struct PunchClaims {
    claims: OnceLock<Claims>,
    /// xxh3 of `node.name`: whose a stake is.
    node: u64,
    policy: OnUnreachable,
    tenants: HashMap<Box<str>, OnUnreachable>,
    busy_retry_after_ms: u32,
    takeover_ms: i64,
    repeat_window_ms: i64,
    seconds: Histogram,
    unreachable: Counter,
}

impl std::fmt::Debug for PunchClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PunchClaims")
            .field("open", &self.claims.get().is_some())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl PunchClaims {
    /// Claims for node `node`; `open` must be run (spawned) to open the
    /// buckets, and until it has every claim is `Unreachable`.
    pub fn new(s: &ClusterSettings, node: &str, repeat_window_ms: i64) -> Self {
        Self {
            claims: OnceLock::new(),
            node: xxhash_rust::xxh3::xxh3_64(node.as_bytes()),
            policy: s.on_unreachable,
            tenants: s
                .tenants
                .iter()
                .map(|(t, p)| (t.as_str().into(), *p))
                .collect(),
            busy_retry_after_ms: s.busy_retry_after_ms,
            takeover_ms: s.takeover_ms,
            repeat_window_ms,
            seconds: metrics::histogram!("fencegate_claim_seconds"),
            unreachable: metrics::counter!("fencegate_claims_unreachable_total"),
        }
    }

    /// Opens the buckets on `client`, retrying every second until it can
    /// or `shutdown`.
    pub async fn open(
        self: Arc<Self>,
        client: async_nats::Client,
        cfg: ClaimsConfig,
        shutdown: CancellationToken,
    ) {
        let js = async_nats::jetstream::new(client);
        let mut warned = false;
        loop {
            let wait = cfg.timeout.max(Duration::from_secs(2));
            match tokio::time::timeout(wait, Claims::open(&js, &cfg)).await {
                Ok(Ok(c)) => {
                    let _ = self.claims.set(c);
                    tracing::info!(prefix = %cfg.prefix, "cluster claims buckets open");
                    return;
                }
                Ok(Err(e)) if !warned => {
                    tracing::warn!(error = %e, "cluster claims: cannot open the buckets yet; punches follow cluster.on_unreachable meanwhile");
                    warned = true;
                }
                Err(_) if !warned => {
                    tracing::warn!(
                        "cluster claims: NATS does not answer; punches follow cluster.on_unreachable meanwhile"
                    );
                    warned = true;
                }
                _ => {}
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// The open buckets, once they are.
    pub fn buckets(&self) -> Option<&Claims> {
        self.claims.get()
    }

    /// This node's tag in stakes.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// `tenant`'s policy when the claims do not answer.
    pub fn policy(&self, tenant: &str) -> OnUnreachable {
        if self.tenants.is_empty() {
            return self.policy;
        }
        self.tenants.get(tenant).copied().unwrap_or(self.policy)
    }

    /// Busy retry-after under the `busy` policy.
    pub fn busy_retry_after_ms(&self) -> u32 {
        self.busy_retry_after_ms
    }

    /// Whether a stake still in flight is old enough to take over.
    pub fn stale(&self, stake: &Stake, now_ms: i64) -> bool {
        stake.node == self.node || now_ms.saturating_sub(stake.at_ms) > self.takeover_ms
    }

    /// Whether a punch at attendance time `at_ms` repeats the holder's.
    pub fn repeats(&self, holder: &Stake, at_ms: i64) -> bool {
        at_ms >= holder.at_ms && at_ms - holder.at_ms < self.repeat_window_ms
    }

    /// Claims a punch id (and, with `repeat`, the employee's repeat window)
    /// at once; counts the wait in `fencegate_claim_seconds`.
    pub async fn claim(
        &self,
        tenant: &str,
        punch_id: &[u8; 16],
        stake: &Stake,
        repeat: Option<(&str, u8, &Stake)>,
    ) -> (Claim, Option<Claim>) {
        let Some(c) = self.claims.get() else {
            return (Claim::Unreachable, repeat.map(|_| Claim::Unreachable));
        };
        let t0 = crate::clock::instant();
        let out = match repeat {
            Some((employee, kind, rstake)) => {
                let (p, r) = tokio::join!(
                    c.claim_punch(tenant, punch_id, stake),
                    c.claim_repeat(tenant, employee, kind, rstake)
                );
                (p, Some(r))
            }
            None => (c.claim_punch(tenant, punch_id, stake).await, None),
        };
        self.seconds.record(t0.elapsed());
        out
    }

    /// Counts a punch the claims could not answer for.
    pub fn count_unreachable(&self) {
        self.unreachable.increment(1);
    }
}
