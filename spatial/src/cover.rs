//! The cell table behind cell-based lookups: `(cell, tenant)` → a run of entries in one flat
//! array, each entry carrying its fence's exact test inline.
//!
//! One lookup is one probe of an open-addressing table with 16-byte slots (usually one cache
//! miss) and a read of a contiguous run of 56-byte entries (usually one more), plus the
//! vertices of a polygon candidate. A std `HashMap` costs a miss for its control bytes and one
//! for its slot, and separate full/partial arrays one more.

use std::hash::BuildHasher as _;

use crate::geom::LonLat;

/// Tenant value of the slot that lists every tenant's fences of a cell.
pub(crate) const ALL_TENANTS: u32 = u32::MAX - 1;
const EMPTY: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Slot {
    cell: u64,
    tenant: u32,
    start: u32,
}

/// Open addressing with linear probing, at most half full.
pub(crate) struct CellTable {
    slots: Box<[Slot]>,
    shift: u32,
    len: usize,
    /// Seeded per table: which cells share a probe chain is not predictable from outside.
    hasher: crate::hash::FastBuild,
}

impl Default for CellTable {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl CellTable {
    pub(crate) fn with_capacity(n: usize) -> Self {
        let cap = (n.max(8) * 2).next_power_of_two();
        Self {
            slots: vec![
                Slot {
                    cell: 0,
                    tenant: EMPTY,
                    start: 0
                };
                cap
            ]
            .into_boxed_slice(),
            shift: 64 - cap.trailing_zeros(),
            len: 0,
            hasher: Default::default(),
        }
    }

    #[inline]
    fn home(&self, cell: u64, tenant: u32) -> usize {
        (self.hasher.hash_one((cell, tenant)) >> self.shift) as usize
    }

    /// Adds a key that is not present yet. The caller sized the table for every key.
    pub(crate) fn insert(&mut self, cell: u64, tenant: u32, start: u32) {
        assert!(
            self.len * 2 < self.slots.len(),
            "cell table sized too small"
        );
        let mask = self.slots.len() - 1;
        let mut i = self.home(cell, tenant);
        while self.slots[i].tenant != EMPTY {
            debug_assert!(!(self.slots[i].cell == cell && self.slots[i].tenant == tenant));
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot {
            cell,
            tenant,
            start,
        };
        self.len += 1;
    }

    /// Where the run of `(cell, tenant)` starts, if the cell has fences of that tenant.
    #[inline]
    pub(crate) fn get(&self, cell: u64, tenant: u32) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(cell, tenant);
        loop {
            let s = &self.slots[i];
            if s.tenant == tenant && s.cell == cell {
                return Some(s.start);
            }
            if s.tenant == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }
}

/// The fence contains the whole cell: no test.
pub(crate) const FULL: u8 = 0;
/// Circle: `a` = unit vector of the centre and the squared chord of the radius.
pub(crate) const CIRCLE: u8 = 1;
/// Polygon: `a` = bounding box; `rings` in the index's ring table; `single` = the vertex run
/// of a one-ring polygon (len 0 otherwise).
pub(crate) const POLYGON: u8 = 2;

/// One fence in a cell's run, with its exact test.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) fence: u32,
    pub(crate) kind: u8,
    /// Ends the run.
    pub(crate) last: bool,
    pub(crate) a: [f64; 4],
    pub(crate) rings: (u32, u32),
    pub(crate) single: (u32, u32),
}

impl Entry {
    pub(crate) fn full(fence: u32) -> Self {
        Self {
            fence,
            kind: FULL,
            last: false,
            a: [0.0; 4],
            rings: (0, 0),
            single: (0, 0),
        }
    }
}

/// A ring in the index's vertex array; `shell` starts a new polygon part.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlatRing {
    pub(crate) start: u32,
    pub(crate) len: u32,
    pub(crate) shell: bool,
}

/// Cell runs and their table.
#[derive(Default)]
pub(crate) struct CellCover {
    pub(crate) table: CellTable,
    pub(crate) entries: Vec<Entry>,
    /// Distinct cells.
    pub(crate) cells: usize,
    pub(crate) full: usize,
    pub(crate) partial: usize,
}

/// Polygon vertices, flat, for the exact tests.
#[derive(Default)]
pub(crate) struct FlatPolygons {
    pub(crate) rings: Vec<FlatRing>,
    pub(crate) verts: Vec<LonLat>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_finds_what_it_holds_and_nothing_else() {
        let mut t = CellTable::with_capacity(1000);
        for k in 0..1000u64 {
            t.insert(k << 32 | (k * 7), (k % 3) as u32, k as u32);
        }
        t.insert(5, ALL_TENANTS, 77);
        for k in 0..1000u64 {
            assert_eq!(t.get(k << 32 | (k * 7), (k % 3) as u32), Some(k as u32));
            assert_eq!(t.get(k << 32 | (k * 7), 3), None);
        }
        assert_eq!(t.get(5, ALL_TENANTS), Some(77));
        assert_eq!(t.get(5, 0), None);
        assert_eq!(t.len(), 1001);
    }
}
