//! Atomic publication of index snapshots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};

use crate::index::FenceIndex;

/// The current [`FenceIndex`] snapshot, swapped atomically when fences change.
///
/// Readers call [`load`](Self::load) per batch or per record: lock-free and allocation-free.
/// A writer builds a new index off the hot path and [`store`](Self::store)s it; readers that
/// still hold the old snapshot finish with it.
pub struct SharedIndex {
    current: ArcSwap<FenceIndex>,
    next_version: AtomicU64,
}

impl SharedIndex {
    /// Publishes `index` as version 1.
    pub fn new(mut index: FenceIndex) -> Self {
        index.set_version(1);
        Self {
            current: ArcSwap::from_pointee(index),
            next_version: AtomicU64::new(2),
        }
    }

    /// The current snapshot; cheap, for the hot path. Do not hold it across an await.
    pub fn load(&self) -> Guard<Arc<FenceIndex>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for holding it longer.
    pub fn load_full(&self) -> Arc<FenceIndex> {
        self.current.load_full()
    }

    /// Publishes `index` as the next version and returns that version.
    pub fn store(&self, mut index: FenceIndex) -> u64 {
        let v = self.next_version.fetch_add(1, Ordering::Relaxed);
        index.set_version(v);
        self.current.store(Arc::new(index));
        v
    }

    /// Version of the current snapshot.
    pub fn version(&self) -> u64 {
        self.current.load().version()
    }
}

impl std::fmt::Debug for SharedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedIndex")
            .field("current", &*self.current.load())
            .finish()
    }
}
