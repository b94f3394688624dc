//! Cross-node claims on a JetStream key-value bucket: the piece of the
//! scale-out design that makes the punch contract hold across nodes
//! (DESIGN.md, Scale-out). A punch id, and a (tenant, employee, kind)
//! repeat key, is claimed by creating its key; JetStream's create is
//! "only if absent", so of two nodes claiming the same key exactly one wins,
//! and the loser reads the winner's record id to answer with the same ack
//! (a resend) or to merge into it (a repeat).
//!
//! Each kind of key has its own bucket whose `max_age` is the window
//! (`dedup.idempotency_horizon_s` for punch ids, `dedup.repeat_window_s`
//! for repeat keys): an expired key is gone from the stream, so a later
//! claim wins again. Nothing home-made: the bucket is replicated by the
//! cluster like the records stream.

use std::time::Duration;

use async_nats::jetstream::{self, kv};

use base64::Engine as _;

/// How a bucket is set up.
#[derive(Debug, Clone)]
pub struct ClaimsConfig {
    /// Bucket name prefix; buckets are `<prefix>_punch_ids` and
    /// `<prefix>_repeats`.
    pub prefix: String,
    /// How long a punch id stays claimed (the idempotency horizon).
    pub idempotency_ttl: Duration,
    /// How long a repeat key stays claimed (the five-minute window).
    pub repeat_ttl: Duration,
    /// Bucket replicas (3 on a 3-node cluster, 1 on a single server).
    pub replicas: usize,
    /// How long one claim may take before it counts as unreachable.
    pub timeout: Duration,
}

impl Default for ClaimsConfig {
    fn default() -> Self {
        Self {
            prefix: "fencegate".into(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            repeat_ttl: Duration::from_secs(300),
            replicas: 1,
            timeout: Duration::from_millis(500),
        }
    }
}

/// What a claim's key holds: who claimed it, for which record, and the
/// ack that record got. 36 bytes, little-endian:
///
/// | bytes | field |
/// |---|---|
/// | 0 | state: 1 in flight (claimed, record not yet durable), 2 durable |
/// | 1 | verdict of the ack |
/// | 2..4 | reason of the ack |
/// | 4..20 | record id the ack carries (for a repeat key: the punch's own) |
/// | 20..28 | claiming node (xxh3 of `node.name`) |
/// | 28..36 | milliseconds since the epoch: when the punch id was claimed, or the repeat's attendance time |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stake {
    /// Whether the claimed record is durable in the claiming node's log.
    pub durable: bool,
    /// The ack's verdict (`fencegate_schema::Verdict` as its byte).
    pub verdict: u8,
    /// The ack's reason (`fencegate_schema::Reason` as its number).
    pub reason: u16,
    /// The record id.
    pub record_id: [u8; 16],
    /// The claiming node.
    pub node: u64,
    /// See the table above.
    pub at_ms: i64,
}

/// The encoded length of a [`Stake`].
pub const STAKE_BYTES: usize = 36;

impl Stake {
    /// The key's value.
    pub fn encode(&self) -> [u8; STAKE_BYTES] {
        let mut b = [0u8; STAKE_BYTES];
        b[0] = if self.durable { 2 } else { 1 };
        b[1] = self.verdict;
        b[2..4].copy_from_slice(&self.reason.to_le_bytes());
        b[4..20].copy_from_slice(&self.record_id);
        b[20..28].copy_from_slice(&self.node.to_le_bytes());
        b[28..36].copy_from_slice(&self.at_ms.to_le_bytes());
        b
    }

    /// Reads a key's value; `None` for anything this version did not write.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != STAKE_BYTES || !matches!(b[0], 1 | 2) {
            return None;
        }
        let mut record_id = [0u8; 16];
        record_id.copy_from_slice(&b[4..20]);
        Some(Self {
            durable: b[0] == 2,
            verdict: b[1],
            reason: u16::from_le_bytes([b[2], b[3]]),
            record_id,
            node: u64::from_le_bytes(b[20..28].try_into().ok()?),
            at_ms: i64::from_le_bytes(b[28..36].try_into().ok()?),
        })
    }
}

/// The answer to one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This node created the key: it owns the punch (or the repeat window).
    Won,
    /// Another node (or an earlier attempt of this one) holds the key.
    Held {
        /// What the holder wrote.
        stake: Stake,
        /// The key's revision, for a compare-and-set take-over.
        revision: u64,
    },
    /// The bucket did not answer within the timeout (NATS down, no
    /// quorum). The caller applies the tenant's policy: accept and mark the
    /// record unclaimed, or answer Busy.
    Unreachable,
}

/// Errors setting the buckets up.
#[derive(Debug, thiserror::Error)]
pub enum ClaimsError {
    /// The bucket could not be created or opened.
    #[error(
        "claims bucket '{bucket}': {source}; check that JetStream is enabled and the user may create key-value buckets"
    )]
    Bucket {
        /// The bucket's name.
        bucket: String,
        /// What JetStream answered.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The two claim buckets of a cluster.
pub struct Claims {
    punch_ids: kv::Store,
    repeats: kv::Store,
    timeout: Duration,
}

impl Claims {
    /// Creates (or opens, when they exist) the buckets on `js`.
    ///
    /// The bucket's stream is created here with the settings of a
    /// key-value bucket (one message per key, rollups, no deletes, direct
    /// gets) rather than through `create_key_value`, which first reads the
    /// account info in a shape nats-server 2.9 (Debian bookworm's) does not
    /// answer; then the store is opened as usual.
    pub async fn open(js: &jetstream::Context, cfg: &ClaimsConfig) -> Result<Self, ClaimsError> {
        let open = |suffix: &'static str, ttl: Duration, what: &'static str| async move {
            let bucket = format!("{}_{suffix}", cfg.prefix);
            let err = |e: Box<dyn std::error::Error + Send + Sync>| ClaimsError::Bucket {
                bucket: bucket.clone(),
                source: e,
            };
            let stream = jetstream::stream::Config {
                name: format!("KV_{bucket}"),
                description: Some(format!("fencegate cross-node claims: {what}")),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age: ttl,
                // Subject and headers count too; a claim is ~120 bytes.
                max_message_size: 1024,
                storage: jetstream::stream::StorageType::File,
                num_replicas: cfg.replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: jetstream::stream::DiscardPolicy::New,
                ..Default::default()
            };
            js.get_or_create_stream(stream)
                .await
                .map_err(|e| err(Box::new(e)))?;
            js.get_key_value(bucket.clone())
                .await
                .map_err(|e| err(Box::new(e)))
        };
        Ok(Self {
            punch_ids: open("punch_ids", cfg.idempotency_ttl, "punch ids").await?,
            repeats: open("repeats", cfg.repeat_ttl, "repeat windows").await?,
            timeout: cfg.timeout,
        })
    }

    /// Claims a punch id of `tenant` with `stake`.
    pub async fn claim_punch(&self, tenant: &str, punch_id: &[u8; 16], stake: &Stake) -> Claim {
        let key = punch_key(tenant, punch_id);
        self.claim(&self.punch_ids, &key, stake).await
    }

    /// Claims the repeat window of (`tenant`, `employee`, `kind`) for the
    /// accepted punch of `stake`.
    pub async fn claim_repeat(
        &self,
        tenant: &str,
        employee: &str,
        kind: u8,
        stake: &Stake,
    ) -> Claim {
        let key = repeat_key(tenant, employee, kind);
        self.claim(&self.repeats, &key, stake).await
    }

    /// Replaces a held punch id's stake if its revision is still
    /// `revision` (the holder died in flight); true when it did.
    pub async fn take_over_punch(
        &self,
        tenant: &str,
        punch_id: &[u8; 16],
        stake: &Stake,
        revision: u64,
    ) -> bool {
        let key = punch_key(tenant, punch_id);
        let value = bytes::Bytes::copy_from_slice(&stake.encode());
        matches!(
            tokio::time::timeout(self.timeout, self.punch_ids.update(&key, value, revision)).await,
            Ok(Ok(_))
        )
    }

    /// Writes a claimed punch id's final stake (durable, with the ack it
    /// got), so other nodes answer its resends with that ack.
    pub async fn settle_punch(&self, tenant: &str, punch_id: &[u8; 16], stake: &Stake) -> bool {
        let key = punch_key(tenant, punch_id);
        self.put(&self.punch_ids, &key, stake).await
    }

    /// Makes a repeat window this punch's, whoever held it (the holder's
    /// punch was outside the window by attendance time).
    pub async fn put_repeat(&self, tenant: &str, employee: &str, kind: u8, stake: &Stake) -> bool {
        let key = repeat_key(tenant, employee, kind);
        self.put(&self.repeats, &key, stake).await
    }

    /// Gives up a claimed punch id (its record could not be written), so
    /// the resend wins it afresh.
    pub async fn release_punch(&self, tenant: &str, punch_id: &[u8; 16]) {
        let key = punch_key(tenant, punch_id);
        let _ = tokio::time::timeout(self.timeout, self.punch_ids.delete(&key)).await;
    }

    /// Gives up a claimed repeat window.
    pub async fn release_repeat(&self, tenant: &str, employee: &str, kind: u8) {
        let key = repeat_key(tenant, employee, kind);
        let _ = tokio::time::timeout(self.timeout, self.repeats.delete(&key)).await;
    }

    async fn put(&self, store: &kv::Store, key: &str, stake: &Stake) -> bool {
        let value = bytes::Bytes::copy_from_slice(&stake.encode());
        matches!(
            tokio::time::timeout(self.timeout, store.put(key, value)).await,
            Ok(Ok(_))
        )
    }

    /// Create-if-absent in one round trip when the key is free (an update
    /// expecting revision 0); a held key costs a second, to read the
    /// holder's stake. A key whose last entry is a delete marker (a
    /// released claim) is taken with a compare-and-set on that marker.
    async fn claim(&self, store: &kv::Store, key: &str, stake: &Stake) -> Claim {
        let value = bytes::Bytes::copy_from_slice(&stake.encode());
        let t = self.timeout;
        // Twice at most: a key may expire or be released between the failed
        // create and the read.
        for _ in 0..2 {
            match tokio::time::timeout(t, store.update(key, value.clone(), 0)).await {
                Ok(Ok(_)) => return Claim::Won,
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                other => {
                    tracing::debug!(key, ?other, "claim failed");
                    return Claim::Unreachable;
                }
            }
            match tokio::time::timeout(t, store.entry(key)).await {
                Ok(Ok(Some(e))) if e.operation == kv::Operation::Put => {
                    return match Stake::decode(&e.value) {
                        Some(stake) => Claim::Held {
                            stake,
                            revision: e.revision,
                        },
                        None => {
                            tracing::warn!(key, "claim key holds a value this version cannot read");
                            Claim::Unreachable
                        }
                    };
                }
                Ok(Ok(Some(e))) => {
                    match tokio::time::timeout(t, store.update(key, value.clone(), e.revision))
                        .await
                    {
                        Ok(Ok(_)) => return Claim::Won,
                        Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                        _ => return Claim::Unreachable,
                    }
                }
                Ok(Ok(None)) => {}
                _ => return Claim::Unreachable,
            }
        }
        Claim::Unreachable
    }
}

/// A punch id's key: `p.<tenant>.<32 hex digits>`. Tenant ids are
/// `[a-z0-9_-]` (validated at config), which KV keys allow as they are.
pub fn punch_key(tenant: &str, punch_id: &[u8; 16]) -> String {
    format!("p.{tenant}.{}", hex::encode(punch_id))
}

/// A repeat window's key: `r.<tenant>.<kind>.e<employee, base64url>`.
/// Employee ids are chosen by devices and may hold any character, so they
/// are encoded; base64url's alphabet is within what KV keys allow, and the
/// `e` keeps an empty id from ending the key with a dot.
pub fn repeat_key(tenant: &str, employee: &str, kind: u8) -> String {
    format!(
        "r.{tenant}.{kind}.e{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(employee.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The characters JetStream allows in a key.
    fn valid_key(k: &str) -> bool {
        !k.is_empty()
            && !k.starts_with('.')
            && !k.ends_with('.')
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_/=.".contains(&b))
    }

    #[test]
    fn stakes_round_trip_and_foreign_values_are_refused() {
        let s = Stake {
            durable: true,
            verdict: 3,
            reason: 201,
            record_id: [9; 16],
            node: u64::MAX - 1,
            at_ms: -5,
        };
        assert_eq!(Stake::decode(&s.encode()), Some(s));
        let pending = Stake {
            durable: false,
            ..s
        };
        assert_eq!(Stake::decode(&pending.encode()), Some(pending));
        // The 16-byte record ids of the first claims, and unknown states.
        assert_eq!(Stake::decode(&[9; 16]), None);
        let mut b = s.encode();
        b[0] = 7;
        assert_eq!(Stake::decode(&b), None);
    }

    #[test]
    fn keys_are_valid_for_any_employee_id() {
        for e in ["E1001", "张三", "a.b*c>d e", "", "../x", "x\0y"] {
            let k = repeat_key("acme", e, 1);
            assert!(valid_key(&k), "{e:?} -> {k}");
        }
        assert!(valid_key(&punch_key("acme", &[0xab; 16])));
        // Distinct employees never share a key.
        assert_ne!(repeat_key("acme", "ab", 0), repeat_key("acme", "ab\0", 0));
        assert_ne!(repeat_key("acme", "a", 0), repeat_key("acme", "a", 1));
        assert_ne!(repeat_key("acme", "a", 0), repeat_key("globex", "a", 0));
    }
}
