//! Fences and rules with one source of truth for a cluster: the
//! `<prefix>_config` key-value bucket, keys `fences` (the GeoJSON) and
//! `rules` (the TOML), each value the whole document and its version the
//! key's revision.
//!
//! A change through any node's admin API is validated there exactly as a
//! local change is, then written to the bucket with a compare-and-set on
//! the revision that node serves (a change made meanwhile through another
//! node is a conflict, not lost), then applied locally. Every node watches
//! the bucket and swaps in each new revision (validated again, written to
//! its own file so a restart without NATS serves it). A document that fails
//! validation is refused by the writer and never stored. A node starts from
//! its files and needs no NATS to serve; the first node to reach an empty
//! bucket seeds it with its files.
//!
//! Size: one value is one NATS message, so a document must fit the
//! server's `max_payload` (1 MiB unless raised; the bucket itself allows
//! 64 MiB). The writer refuses a larger one with a named fix.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

/// Largest value the bucket's stream accepts; the server's `max_payload`
/// is usually the lower bound.
pub const BUCKET_MAX_BYTES: i32 = 64 * 1024 * 1024;

/// A shared document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    /// The fences (GeoJSON), key `fences`.
    Fences,
    /// The attendance rules (TOML), key `rules`.
    Rules,
}

impl Doc {
    /// The document's key in the bucket.
    pub fn key(self) -> &'static str {
        match self {
            Self::Fences => "fences",
            Self::Rules => "rules",
        }
    }

    fn of(key: &str) -> Option<Self> {
        match key {
            "fences" => Some(Self::Fences),
            "rules" => Some(Self::Rules),
            _ => None,
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Why a change could not be shared.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// Another node changed the document since the revision this node serves.
    #[error(
        "the {doc} changed through another node (this node serves revision {served}); fetch them again and retry"
    )]
    Conflict {
        /// `fences` or `rules`.
        doc: &'static str,
        /// The revision this node serves.
        served: u64,
    },
    /// Over the NATS server's message size.
    #[error(
        "the {doc} document is {len} bytes, over the NATS server's max_payload of {max} bytes; raise max_payload in the NATS server configuration (at most 64 MiB) or split the fences"
    )]
    TooLarge {
        /// `fences` or `rules`.
        doc: &'static str,
        /// The document's length.
        len: usize,
        /// The server's limit.
        max: usize,
    },
    /// NATS or the bucket did not answer.
    #[error(
        "the cluster's config bucket is unreachable ({0}); nothing was changed: retry when NATS is back"
    )]
    Unreachable(String),
}

/// Applies a document a node received from the bucket at a revision:
/// under the document's update lock, skip it unless the revision is above
/// [`SharedConfig::served`], validate, apply, then
/// [`SharedConfig::set_served`]. The error says why it was not applied (it
/// is logged, and the node keeps serving what it has).
pub type Apply = Arc<
    dyn Fn(Doc, u64, String) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// A node's handle on the shared documents.
pub struct SharedConfig {
    store: OnceLock<kv::Store>,
    client: async_nats::Client,
    /// The revision each document was last applied at (0: the local file).
    served: [AtomicU64; 2],
    timeout: Duration,
}

impl std::fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConfig")
            .field("open", &self.store.get().is_some())
            .field("fences", &self.served(Doc::Fences))
            .field("rules", &self.served(Doc::Rules))
            .finish()
    }
}

impl SharedConfig {
    /// A handle on `client`; [`SharedConfig::run`] opens and watches the
    /// bucket.
    pub fn new(client: async_nats::Client, timeout: Duration) -> Self {
        Self {
            store: OnceLock::new(),
            client,
            served: [AtomicU64::new(0), AtomicU64::new(0)],
            timeout: timeout.max(Duration::from_secs(2)),
        }
    }

    /// The revision of `doc` this node serves (0: its own file, never
    /// shared).
    pub fn served(&self, doc: Doc) -> u64 {
        self.served[doc.slot()].load(Ordering::Acquire)
    }

    /// Records that `doc` at `revision` is now served. Callers hold the
    /// document's update lock.
    pub fn set_served(&self, doc: Doc, revision: u64) {
        self.served[doc.slot()].fetch_max(revision, Ordering::AcqRel);
    }

    /// Whether the bucket is open.
    pub fn is_open(&self) -> bool {
        self.store.get().is_some()
    }

    /// Stores a validated `text` as the new `doc`, if the bucket still holds
    /// the revision this node serves; returns the new revision. Callers
    /// hold the document's update lock and apply it locally after.
    pub async fn publish(&self, doc: Doc, text: &str) -> Result<u64, ShareError> {
        let Some(store) = self.store.get() else {
            return Err(ShareError::Unreachable("the bucket is not open yet".into()));
        };
        let max = self.client.server_info().max_payload;
        // Key, headers and the protocol line ride in the same message.
        if max > 0 && text.len() + 512 > max {
            return Err(ShareError::TooLarge {
                doc: doc.key(),
                len: text.len(),
                max,
            });
        }
        let served = self.served(doc);
        let value = bytes::Bytes::copy_from_slice(text.as_bytes());
        match tokio::time::timeout(self.timeout, store.update(doc.key(), value, served)).await {
            Ok(Ok(rev)) => Ok(rev),
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(ShareError::Conflict {
                    doc: doc.key(),
                    served,
                })
            }
            Ok(Err(e)) => Err(ShareError::Unreachable(e.to_string())),
            Err(_) => Err(ShareError::Unreachable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Opens the bucket (retrying until it can), seeds empty keys with
    /// `seed`, then applies every new revision through `apply` until
    /// `shutdown`, re-watching after an outage.
    pub async fn run(
        self: Arc<Self>,
        prefix: String,
        replicas: usize,
        seed: Vec<(Doc, String)>,
        apply: Apply,
        shutdown: CancellationToken,
    ) {
        let js = jetstream::new(self.client.clone());
        let bucket = format!("{prefix}_config");
        let store = loop {
            match tokio::time::timeout(self.timeout, open(&js, &bucket, replicas)).await {
                Ok(Ok(s)) => break s,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, bucket, "cluster config: cannot open the bucket yet; serving the local files")
                }
                Err(_) => tracing::debug!(bucket, "cluster config: NATS does not answer yet"),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
        };
        for (doc, text) in seed {
            let v = bytes::Bytes::from(text.into_bytes());
            // Only into an empty key: the bucket, once seeded, is the truth.
            let _ = tokio::time::timeout(self.timeout, store.create(doc.key(), v)).await;
        }
        let _ = self.store.set(store.clone());
        loop {
            match store.watch_with_history(">").await {
                Ok(mut w) => loop {
                    let next = tokio::select! {
                        n = w.next() => n,
                        () = shutdown.cancelled() => return,
                    };
                    let Some(Ok(e)) = next else { break };
                    let Some(doc) = Doc::of(&e.key) else { continue };
                    if e.operation != kv::Operation::Put || e.revision <= self.served(doc) {
                        continue;
                    }
                    let text = match String::from_utf8(e.value.to_vec()) {
                        Ok(t) => t,
                        Err(_) => {
                            tracing::error!(
                                doc = doc.key(),
                                revision = e.revision,
                                "cluster config: the shared document is not UTF-8; keeping the current one"
                            );
                            continue;
                        }
                    };
                    match apply(doc, e.revision, text).await {
                        Ok(()) => {
                            tracing::info!(
                                doc = doc.key(),
                                revision = e.revision,
                                "cluster config: applied a shared change"
                            );
                        }
                        Err(why) => {
                            tracing::error!(doc = doc.key(), revision = e.revision, %why, "cluster config: a shared change failed validation here; keeping the current one")
                        }
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "cluster config: cannot watch the bucket yet")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// Creates (or opens) the bucket with a key-value bucket's stream settings,
/// as `claims.rs` does (nats-server 2.9 cannot answer `create_key_value`).
async fn open(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, Box<dyn std::error::Error + Send + Sync>> {
    let stream = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("fencegate cluster configuration: fences and rules".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_message_size: BUCKET_MAX_BYTES,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.get_or_create_stream(stream).await?;
    Ok(js.get_key_value(bucket.to_owned()).await?)
}
