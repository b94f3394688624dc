//! Atomic publication of index snapshots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};

use crate::index::FenceIndex;

/// A snapshot a [`SharedIndex`] can publish: it carries the version it was
/// published as. [`FenceIndex`] is one; a service wraps the index with what
/// it derives from it (interned ids, lookup tables) and publishes that.
pub trait Versioned {
    /// The version this snapshot was published as (0 before publication).
    fn version(&self) -> u64;
    /// Stamps the version; [`SharedIndex`] calls it once, before publishing.
    fn set_version(&mut self, v: u64);
}

impl Versioned for FenceIndex {
    fn version(&self) -> u64 {
        FenceIndex::version(self)
    }

    fn set_version(&mut self, v: u64) {
        FenceIndex::set_version(self, v);
    }
}

/// The current snapshot (a [`FenceIndex`], or a service's wrapper of one),
/// swapped atomically when fences change.
///
/// Readers call [`load`](Self::load) per batch or per record: lock-free and allocation-free.
/// A writer builds a new snapshot off the hot path and [`store`](Self::store)s it; readers that
/// still hold the old snapshot finish with it.
pub struct SharedIndex<T: Versioned = FenceIndex> {
    current: ArcSwap<T>,
    next_version: AtomicU64,
}

impl<T: Versioned> SharedIndex<T> {
    /// Publishes `snapshot` as version 1.
    pub fn new(mut snapshot: T) -> Self {
        snapshot.set_version(1);
        Self {
            current: ArcSwap::from_pointee(snapshot),
            next_version: AtomicU64::new(2),
        }
    }

    /// The current snapshot; cheap, for the hot path. Do not hold it across an await.
    pub fn load(&self) -> Guard<Arc<T>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for holding it longer.
    pub fn load_full(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Publishes `snapshot` as the next version and returns that version.
    pub fn store(&self, mut snapshot: T) -> u64 {
        let v = self.next_version.fetch_add(1, Ordering::Relaxed);
        snapshot.set_version(v);
        self.current.store(Arc::new(snapshot));
        v
    }

    /// Version of the current snapshot.
    pub fn version(&self) -> u64 {
        self.current.load().version()
    }
}

impl<T: Versioned + std::fmt::Debug> std::fmt::Debug for SharedIndex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedIndex")
            .field("current", &*self.current.load())
            .finish()
    }
}
