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

/// The answer to one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This node created the key: it owns the punch (or the repeat window).
    Won,
    /// Another node (or an earlier attempt of this one) holds the key; its
    /// record id is here.
    Held {
        /// The record the key was claimed for.
        record_id: [u8; 16],
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

    /// Claims a punch id of `tenant` for `record_id`.
    pub async fn claim_punch(
        &self,
        tenant: &str,
        punch_id: &[u8; 16],
        record_id: [u8; 16],
    ) -> Claim {
        let key = punch_key(tenant, punch_id);
        self.claim(&self.punch_ids, &key, record_id).await
    }

    /// Claims the repeat window of (`tenant`, `employee`, `kind`) for the
    /// accepted punch `record_id`.
    pub async fn claim_repeat(
        &self,
        tenant: &str,
        employee: &str,
        kind: u8,
        record_id: [u8; 16],
    ) -> Claim {
        let key = repeat_key(tenant, employee, kind);
        self.claim(&self.repeats, &key, record_id).await
    }

    async fn claim(&self, store: &kv::Store, key: &str, record_id: [u8; 16]) -> Claim {
        let value = bytes::Bytes::copy_from_slice(&record_id);
        let created = tokio::time::timeout(self.timeout, store.create(key, value)).await;
        match created {
            Ok(Ok(_)) => Claim::Won,
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match tokio::time::timeout(self.timeout, store.get(key)).await {
                    Ok(Ok(Some(v))) if v.len() == 16 => {
                        let mut id = [0u8; 16];
                        id.copy_from_slice(&v);
                        Claim::Held { record_id: id }
                    }
                    // Expired between the create and the read: the window
                    // just ended, so claim again (once).
                    Ok(Ok(None)) => match tokio::time::timeout(
                        self.timeout,
                        store.create(key, bytes::Bytes::copy_from_slice(&record_id)),
                    )
                    .await
                    {
                        Ok(Ok(_)) => Claim::Won,
                        _ => Claim::Unreachable,
                    },
                    _ => Claim::Unreachable,
                }
            }
            other => {
                tracing::debug!(key, ?other, "claim failed");
                Claim::Unreachable
            }
        }
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
