//! The webhook sink: the "push to the ERP every 5 minutes" integration.
//!
//! Each batch (by count, `max_batch`, or by time, `batch_interval_ms`) is
//! one `POST` of a JSON document:
//!
//! ```json
//! {"node": "fencegate-1", "idempotency_key": "…", "count": 2, "records": [{…}, {…}]}
//! ```
//!
//! with the records in the form of `fencegate log tail --json`, and these
//! headers:
//!
//! - `Content-Type: application/json`
//! - `Idempotency-Key`: 32 hex digits of SHA-256 over the batch's record
//!   ids. A retried batch has the same records and so the same key; a
//!   receiver that stores keys drops the copy. (After a gateway restart a
//!   batch may be cut differently; the record ids in it still identify each
//!   record.)
//! - `Fencegate-Signature: t=<unix seconds>,v1=<hex>` where `v1` is
//!   HMAC-SHA256 with the shared secret over `"<t>.<body>"`. The receiver
//!   recomputes it, compares in constant time and refuses old `t` values
//!   (replays).
//!
//! Any 2xx confirms the batch. Everything else (5xx, 4xx, a timeout, a
//! refused connection) is retried with backoff, honouring `Retry-After`:
//! records are never dropped, so a receiver that refuses a batch for good
//! holds this sink (and shows up in `/readyz` and the error metrics) until
//! it is fixed.

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use sha2::{Digest, Sha256};

use super::config::{Secret, WebhookConfig};
use super::{Batch, Delivered, Sink, SinkError};
use crate::{clock, record_json};

/// Header carrying the batch's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Header carrying the HMAC signature.
pub const SIGNATURE_HEADER: &str = "Fencegate-Signature";

/// The idempotency key of a batch: the first 32 hex digits of SHA-256 over
/// the record ids in order.
pub fn idempotency_key<'a>(record_ids: impl IntoIterator<Item = &'a [u8; 16]>) -> String {
    let mut h = Sha256::new();
    for id in record_ids {
        h.update(id);
    }
    hex::encode(&h.finalize()[..16])
}

/// The `Fencegate-Signature` value for `body` signed at `t` (unix seconds).
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a `Fencegate-Signature` header against `body` (for receivers and
/// tests): the MAC must match and `t` must be within `max_age_s` of
/// `now_s`.
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_s: i64,
    max_age_s: i64,
) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now_s - t).abs() > max_age_s {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

/// Reads a webhook secret; at least 16 bytes.
pub fn resolve_secret(secret: &Secret) -> anyhow::Result<Vec<u8>> {
    let s = match secret {
        Secret::Env(var) => std::env::var(var)
            .map_err(|_| anyhow::anyhow!("secret_env: environment variable {var} is not set"))?,
        Secret::File(f) => std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("secret_file {}: cannot read it: {e}", f.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        Secret::Inline(s) => s.clone(),
    };
    anyhow::ensure!(
        s.len() >= 16,
        "the webhook signing secret must be at least 16 characters"
    );
    Ok(s.into_bytes())
}

/// POSTs batches to an HTTP receiver; see the module docs.
pub struct WebhookSink {
    cfg: WebhookConfig,
    node: String,
    secret: Vec<u8>,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.cfg.url)
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// A sink for `cfg`; reads the secret now so a missing one stops the
    /// node at start.
    pub fn new(cfg: WebhookConfig, node: &str) -> anyhow::Result<Self> {
        let secret = resolve_secret(&cfg.secret)?;
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("fencegate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            cfg,
            node: node.to_owned(),
            secret,
            client,
        })
    }

    /// The request body and idempotency key of `batch`.
    pub fn body(&self, batch: &Batch) -> Result<(Vec<u8>, String), SinkError> {
        let key = idempotency_key(
            batch
                .records()
                .map(|r| r.record_id())
                .collect::<Vec<_>>()
                .iter(),
        );
        let mut records = Vec::with_capacity(batch.len());
        for r in batch.records() {
            let view = fencegate_schema::parse_record(r.payload())
                .map_err(|e| SinkError::Other(format!("record re-parse failed: {e:?}")))?;
            records.push(record_json::record_json(&view));
        }
        let doc = serde_json::json!({
            "node": self.node,
            "idempotency_key": key,
            "count": records.len(),
            "records": records,
        });
        let body = serde_json::to_vec(&doc).map_err(|e| SinkError::Other(e.to_string()))?;
        Ok((body, key))
    }
}

impl Sink for WebhookSink {
    async fn deliver(&mut self, batch: &Batch) -> Result<Delivered, SinkError> {
        let (body, key) = self.body(batch)?;
        let sig = signature(&self.secret, clock::unix_ms() / 1000, &body);
        let resp = self
            .client
            .post(&self.cfg.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(IDEMPOTENCY_HEADER, key)
            .header(SIGNATURE_HEADER, sig)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    SinkError::Timeout {
                        what: "webhook response",
                        after_ms: self.cfg.timeout.as_millis() as u64,
                    }
                } else {
                    SinkError::Connect {
                        target: self.cfg.url.clone(),
                        message: e.to_string(),
                    }
                }
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Delivered::default());
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(600)));
        let text = resp.text().await.unwrap_or_default();
        Err(SinkError::Http {
            status: status.as_u16(),
            retry_after,
            body: text.chars().take(200).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_deterministic_and_order_sensitive() {
        let a = [[1u8; 16], [2u8; 16]];
        let b = [[2u8; 16], [1u8; 16]];
        assert_eq!(idempotency_key(a.iter()), idempotency_key(a.iter()));
        assert_ne!(idempotency_key(a.iter()), idempotency_key(b.iter()));
        assert_eq!(idempotency_key(a.iter()).len(), 32);
    }

    #[test]
    fn signatures_verify_and_expire() {
        let s = b"0123456789abcdef";
        let h = signature(s, 1_700_000_000, b"{}");
        assert!(h.starts_with("t=1700000000,v1="));
        assert!(verify_signature(s, &h, b"{}", 1_700_000_010, 300));
        assert!(!verify_signature(s, &h, b"{ }", 1_700_000_010, 300));
        assert!(!verify_signature(
            b"another-secret!!",
            &h,
            b"{}",
            1_700_000_010,
            300
        ));
        assert!(!verify_signature(s, &h, b"{}", 1_700_001_000, 300));
        assert!(!verify_signature(s, "garbage", b"{}", 1_700_000_000, 300));
    }

    #[test]
    fn short_or_missing_secrets_are_refused() {
        assert!(resolve_secret(&Secret::Inline("short".into())).is_err());
        assert!(resolve_secret(&Secret::Env("FENCEGATE_TEST_NO_SUCH_VAR_9".into())).is_err());
        assert_eq!(
            resolve_secret(&Secret::Inline("0123456789abcdef".into())).unwrap(),
            b"0123456789abcdef"
        );
    }
}
