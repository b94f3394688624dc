//! The gateway's view of the fence snapshot: the spatial index plus a table
//! of shared fence ids, swapped atomically (arc-swap) when fences change.
//!
//! The id table exists so acks, dedup entries and ping state can hold a
//! fence id as an `Arc<str>` (a reference-count increment) instead of
//! copying the string on the hot path.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::Guard;
use fencegate_spatial::{
    Fence, FenceIndex, FenceKey, FenceSet, IndexOptions, LoadError, LoadOptions, SharedIndex,
    TenantKey, Versioned,
};

/// The sample fences bundled into the binary, used by `fencegate serve` on
/// embedded defaults when `config/fences.geojson` is not at hand.
pub const SAMPLE_FENCES: &str = include_str!("../../config/fences.geojson");

/// One immutable fence snapshot.
#[derive(Debug)]
pub struct FenceSnapshot {
    index: FenceIndex,
    ids: Vec<Arc<str>>,
    /// Per tenant (by [`TenantKey::index`]): fence id → position in load
    /// order. Ping state remembers fences by id across snapshot swaps; the
    /// exit margin needs the geometry of a fence the device was last inside.
    by_id: Vec<HashMap<Arc<str>, u32>>,
}

impl Versioned for FenceSnapshot {
    fn version(&self) -> u64 {
        self.index.version()
    }

    fn set_version(&mut self, v: u64) {
        Versioned::set_version(&mut self.index, v);
    }
}

impl FenceSnapshot {
    fn new(index: FenceIndex) -> Self {
        let ids: Vec<Arc<str>> = index.fences().iter().map(|f| Arc::from(f.id())).collect();
        let mut by_id = vec![HashMap::new(); index.tenants().len()];
        for (i, (f, id)) in index.fences().iter().zip(&ids).enumerate() {
            by_id[f.tenant().index()].insert(id.clone(), i as u32);
        }
        Self { index, ids, by_id }
    }

    /// The fence of `tenant` with id `id` in this snapshot, if it exists.
    pub fn fence_by_id(&self, tenant: TenantKey, id: &str) -> Option<&Fence> {
        let i = *self.by_id.get(tenant.index())?.get(id)?;
        Some(&self.index.fences()[i as usize])
    }

    /// The spatial index.
    pub fn index(&self) -> &FenceIndex {
        &self.index
    }

    /// The shared id of a fence of this snapshot.
    pub fn id(&self, key: FenceKey) -> &Arc<str> {
        &self.ids[key.index()]
    }

    /// The interned key of `tenant`, if it has any fence.
    pub fn tenant(&self, tenant: &str) -> Option<TenantKey> {
        self.index.tenant(tenant)
    }

    /// The snapshot's version: 1 for the first, one more for each swap.
    pub fn version(&self) -> u64 {
        self.index.version()
    }
}

/// The current snapshot, readable without locks from every task: the
/// spatial crate's [`SharedIndex`] publishing the gateway's snapshot.
#[derive(Debug)]
pub struct Fences {
    current: SharedIndex<FenceSnapshot>,
    opts: LoadOptions,
}

impl Fences {
    /// Publishes `index` as version 1.
    pub fn new(index: FenceIndex, opts: LoadOptions) -> Self {
        Self {
            current: SharedIndex::new(FenceSnapshot::new(index)),
            opts,
        }
    }

    /// The current snapshot (cheap; do not hold it across an await).
    pub fn load(&self) -> Guard<Arc<FenceSnapshot>> {
        self.current.load()
    }

    /// Validates GeoJSON, builds an index off the hot path and swaps it in.
    /// Returns the new version, or every problem in the file.
    pub fn replace_geojson(&self, text: &str) -> Result<u64, LoadError> {
        let index = build_index(text, &self.opts)?;
        Ok(self.store(index))
    }

    /// Swaps in a built index; returns its version.
    pub fn store(&self, index: FenceIndex) -> u64 {
        let v = self.current.store(FenceSnapshot::new(index));
        metrics::gauge!("fencegate_fence_snapshot_version").set(v as f64);
        metrics::gauge!("fencegate_fences").set(self.load().index.len() as f64);
        v
    }

    /// The load options fences are validated with.
    pub fn options(&self) -> &LoadOptions {
        &self.opts
    }
}

/// Validates GeoJSON text and builds an index from it.
pub fn build_index(text: &str, opts: &LoadOptions) -> Result<FenceIndex, LoadError> {
    let set = FenceSet::from_geojson_str(text, opts)?;
    Ok(FenceIndex::build(set, &IndexOptions::default()))
}
