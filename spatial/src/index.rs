//! The immutable fence index snapshot and its query strategies.

use std::collections::VecDeque;

use h3o::{CellIndex, LatLng, Resolution};
use rayon::prelude::*;
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree};

use crate::cover::{
    ALL_TENANTS, CIRCLE, CellCover, CellTable, Entry, FULL, FlatPolygons, FlatRing, POLYGON,
};
use crate::fence::{Fence, FenceKey, Shape, TenantKey};
use crate::geom::{Cover, Rect, RingPos, cap_rects, ring_position};
use crate::hash::FastMap;
use crate::load::FenceSet;
use crate::point::{EARTH_RADIUS_M, Point, chord2, haversine_m, m_of_chord2, unit};

/// How [`FenceIndex::locate`] finds candidate fences. All strategies give identical answers;
/// they differ only in speed, build time and memory (see `docs/GEOMETRY.md` and the
/// `spatial` bench, which measures each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Chosen: a lon/lat grid (a few ns to find the cell) whose cells list the fences that
    /// cover them entirely (no exact test) and the fences whose edge crosses them (exact test);
    /// fences too large for the grid go to an R-tree. `nearest` uses per-tenant R-trees.
    Grid,
    /// H3 cells at one resolution, with the same full/partial cell lists as `Grid`. Finding a
    /// point's H3 cell costs more than the whole lookup budget, so this loses.
    H3 {
        /// The H3 resolution of the cover.
        resolution: Resolution,
    },
    /// An R-tree over fence envelopes, then an exact test of every envelope hit.
    RTree,
    /// Exact test of every fence of the tenant (the reference; for tests and benches).
    BruteForce,
}

/// Build-time settings of a [`FenceIndex`].
#[derive(Clone, Debug, PartialEq)]
pub struct IndexOptions {
    /// The lookup strategy.
    ///
    /// [`Strategy::Grid`] unless set.
    pub strategy: Strategy,
    /// Grid cells per degree of latitude and longitude for [`Strategy::Grid`].
    ///
    /// 128 unless set (a cell of about 870 m × 870·cos(lat) m): fine enough that most 50 m
    /// fences share a cell with few others, coarse enough that a 5 km fence covers ~150 cells.
    pub grid_cells_per_degree: u32,
    /// A fence needing more cells than this goes to the R-tree instead of the cell map.
    ///
    /// 16384 unless set (about 1° × 1° at 128 cells per degree).
    pub max_cells_per_fence: usize,
    /// Also build per-cell lists of every tenant's fences, for fast all-tenant (`None`)
    /// queries. Without them an all-tenant query probes the cell once per tenant.
    ///
    /// Off unless set: the gateway always queries one tenant, and the lists double the cell
    /// memory. `fencegate locate` without `--tenant` turns it on.
    pub all_tenant_lists: bool,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            strategy: Strategy::Grid,
            grid_cells_per_degree: 128,
            max_cells_per_fence: 16_384,
            all_tenant_lists: false,
        }
    }
}

/// The answer of [`FenceIndex::classify`] for a point with an accuracy radius.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Classification {
    /// The whole accuracy disc is inside `fence` (the containing fence with the widest margin).
    Inside {
        /// The fence.
        fence: FenceKey,
        /// Metres from the disc's edge to the fence's boundary.
        margin_m: f64,
    },
    /// The accuracy disc misses every fence of the tenant.
    Outside {
        /// The nearest fence.
        nearest: FenceKey,
        /// Metres from the point to that fence's edge ("230 m outside hq-north").
        distance_m: f64,
    },
    /// The disc straddles a fence boundary.
    Uncertain {
        /// The containing fence with the widest margin when `inside`, else the nearest fence.
        fence: FenceKey,
        /// Whether the reported point itself is inside `fence`.
        inside: bool,
        /// Metres from the point to `fence`'s boundary.
        distance_m: f64,
    },
    /// The tenant has no fences.
    NoFences,
}

type TreeEntry = GeomWithData<Rectangle<[f64; 2]>, Item>;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Item {
    fence: u32,
    tenant: u32,
}

/// Per-query scratch: the query's unit vector is computed only if a circle needs it.
struct Query {
    p: Point,
    unit: Option<[f64; 3]>,
}

impl Query {
    #[inline]
    fn unit(&mut self) -> &[f64; 3] {
        let p = self.p;
        self.unit.get_or_insert_with(|| p.unit())
    }
}

/// A point's cell of the lookup grid, as reported by [`FenceIndex::locate_batch_cells`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GridCell {
    /// The cell's key ([`FenceIndex::grid_cell_key`]).
    pub key: u64,
    /// Every point with this key has the same fences (of the queried tenant) as the queried
    /// point: the cell's list holds only fences covering all of it.
    pub uniform: bool,
}

/// An immutable snapshot of every tenant's fences with a lookup structure. Build it off the
/// hot path ([`FenceIndex::build`]) and publish it with [`SharedIndex`](crate::SharedIndex).
///
/// Queries take `&self`, never allocate (given an output vector with capacity) and never lock.
pub struct FenceIndex {
    fences: Vec<Fence>,
    tenants: Vec<Box<str>>,
    tenant_map: FastMap<Box<str>, TenantKey>,
    /// The exact test of each fence, by fence index.
    cands: Vec<Entry>,
    polys: FlatPolygons,
    by_tenant: Vec<Vec<u32>>,
    rtree_all: RTree<TreeEntry>,
    rtree_tenant: Vec<RTree<TreeEntry>>,
    cover: CellCover,
    /// Fences not in `cover` (too many cells); probed on every cell-based lookup.
    oversize: RTree<TreeEntry>,
    /// By tenant: whether any of its fences is in `oversize`, which a grid cell's run does not
    /// list, so no grid cell of that tenant is [`GridCell::uniform`].
    oversize_tenant: Vec<bool>,
    strategy: Strategy,
    all_tenant_lists: bool,
    cells_per_degree: f64,
    grid_cols: u64,
    grid_rows: u64,
    version: u64,
}

impl std::fmt::Debug for FenceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FenceIndex")
            .field("fences", &self.fences.len())
            .field("tenants", &self.tenants.len())
            .field("strategy", &self.strategy)
            .field("cells", &self.cover.cells)
            .field("runs", &self.cover.table.len())
            .field("oversize", &self.oversize.size())
            .field("version", &self.version)
            .finish()
    }
}

/// Counts that describe an index, for logs and docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexStats {
    /// Fences indexed.
    pub fences: usize,
    /// Cells in the cell map (grid or H3).
    pub cells: usize,
    /// (cell, fence) pairs where the fence covers the whole cell.
    pub full_items: usize,
    /// (cell, fence) pairs that need an exact test.
    pub partial_items: usize,
    /// Fences kept in the R-tree because they need too many cells.
    pub oversize: usize,
    /// Approximate heap bytes.
    pub memory_bytes: usize,
}

fn entry(r: &Rect, item: Item) -> TreeEntry {
    GeomWithData::new(
        Rectangle::from_corners([r.min_lon, r.min_lat], [r.max_lon, r.max_lat]),
        item,
    )
}

fn entries(fence: &Fence, item: Item) -> impl Iterator<Item = TreeEntry> {
    let (a, b) = fence.rects;
    std::iter::once(entry(&a, item)).chain(b.map(|b| entry(&b, item)))
}

impl FenceIndex {
    /// An index with no fences (what a gateway serves before its first fence file loads).
    pub fn empty() -> Self {
        Self::build(FenceSet::default(), &IndexOptions::default())
    }

    /// Builds the lookup structures. Runs on the rayon pool; takes about a second for 100k
    /// fences (see docs/PERFORMANCE.md). The version is 0 until published through
    /// [`SharedIndex`](crate::SharedIndex).
    pub fn build(set: FenceSet, opts: &IndexOptions) -> Self {
        let FenceSet { fences, tenants } = set;
        let item = |i: usize, f: &Fence| Item {
            fence: i as u32,
            tenant: f.tenant.0,
        };
        let mut polys = FlatPolygons::default();
        let cands = fences
            .iter()
            .enumerate()
            .map(|(i, f)| match &f.shape {
                Shape::Circle(c) => {
                    let u = c.unit();
                    Entry {
                        kind: CIRCLE,
                        a: [u[0], u[1], u[2], c.chord2_max()],
                        ..Entry::full(i as u32)
                    }
                }
                Shape::Polygons(parts) => {
                    let first = polys.rings.len() as u32;
                    for part in parts {
                        for (k, ring) in part.rings.iter().enumerate() {
                            polys.rings.push(FlatRing {
                                start: polys.verts.len() as u32,
                                len: ring.len() as u32,
                                shell: k == 0,
                            });
                            polys.verts.extend_from_slice(ring);
                        }
                    }
                    let n = polys.rings.len() as u32 - first;
                    let r = f.rects.0;
                    let only = polys.rings[first as usize];
                    Entry {
                        kind: POLYGON,
                        a: [r.min_lon, r.min_lat, r.max_lon, r.max_lat],
                        rings: (first, n),
                        single: if n == 1 {
                            (only.start, only.len)
                        } else {
                            (0, 0)
                        },
                        ..Entry::full(i as u32)
                    }
                }
            })
            .collect();
        let mut by_tenant: Vec<Vec<u32>> = vec![Vec::new(); tenants.len()];
        for (i, f) in fences.iter().enumerate() {
            by_tenant[f.tenant.index()].push(i as u32);
        }
        let rtree_tenant = by_tenant
            .par_iter()
            .map(|keys| {
                RTree::bulk_load(
                    keys.iter()
                        .flat_map(|&k| {
                            entries(&fences[k as usize], item(k as usize, &fences[k as usize]))
                        })
                        .collect(),
                )
            })
            .collect();
        let rtree_all = RTree::bulk_load(
            fences
                .iter()
                .enumerate()
                .flat_map(|(i, f)| entries(f, item(i, f)))
                .collect(),
        );
        let tenant_map = tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), TenantKey(i as u32)))
            .collect();
        let s = f64::from(opts.grid_cells_per_degree.max(1));
        let mut index = Self {
            fences,
            tenants,
            tenant_map,
            cands,
            polys,
            by_tenant,
            rtree_all,
            rtree_tenant,
            cover: CellCover::default(),
            oversize: RTree::new(),
            oversize_tenant: Vec::new(),
            strategy: opts.strategy,
            all_tenant_lists: opts.all_tenant_lists,
            cells_per_degree: s,
            grid_cols: (360.0 * s) as u64,
            grid_rows: (180.0 * s) as u64,
            version: 0,
        };
        match opts.strategy {
            Strategy::Grid => index.build_cover(opts.all_tenant_lists, |idx, f, out| {
                idx.grid_pairs(f, opts.max_cells_per_fence, out)
            }),
            Strategy::H3 { resolution } => index.build_cover(opts.all_tenant_lists, |_, f, out| {
                h3_pairs(f, resolution, opts.max_cells_per_fence, out)
            }),
            Strategy::RTree | Strategy::BruteForce => {}
        }
        index
    }

    /// Fills `cover` from per-fence (cell, full) pairs; fences whose pair function gives up
    /// (returns false) go to the oversize R-tree.
    fn build_cover<F>(&mut self, all_tenant_lists: bool, pairs: F)
    where
        F: Fn(&Self, &Fence, &mut Vec<(u64, bool)>) -> bool + Sync,
    {
        let this = &*self;
        let per_fence: Vec<(Vec<(u64, bool)>, bool)> = this
            .fences
            .par_iter()
            .map(|f| {
                let mut out = Vec::new();
                let ok = pairs(this, f, &mut out);
                if !ok {
                    out = Vec::new();
                }
                (out, ok)
            })
            .collect();
        let mut oversize = Vec::new();
        let mut all: Vec<(u64, bool, u32)> =
            Vec::with_capacity(per_fence.iter().map(|p| p.0.len()).sum());
        for (i, (pairs, ok)) in per_fence.into_iter().enumerate() {
            if ok {
                all.extend(pairs.into_iter().map(|(k, full)| (k, full, i as u32)));
            } else {
                let f = &self.fences[i];
                oversize.extend(entries(
                    f,
                    Item {
                        fence: i as u32,
                        tenant: f.tenant.0,
                    },
                ));
            }
        }
        // Sort by cell, then tenant, full fences first, so every (cell, tenant) list and every
        // cell's list is one contiguous span.
        let tenant_of = |f: u32| self.fences[f as usize].tenant.0;
        all.par_sort_unstable_by_key(|&(k, full, f)| (k, tenant_of(f), !full, f));
        all.dedup_by_key(|&mut (k, _, f)| (k, f));
        // Count runs first so the table is sized once.
        let mut runs = 0;
        let mut cells = 0;
        for (i, e) in all.iter().enumerate() {
            let prev = i.checked_sub(1).map(|j| &all[j]);
            if prev.is_none_or(|p| p.0 != e.0) {
                cells += 1;
                runs += usize::from(all_tenant_lists);
            }
            if prev.is_none_or(|p| p.0 != e.0 || tenant_of(p.2) != tenant_of(e.2)) {
                runs += 1;
            }
        }
        let mut table = CellTable::with_capacity(runs);
        let mut entries: Vec<Entry> = Vec::with_capacity(all.len() * 2);
        let (mut full, mut partial) = (0, 0);
        let entry = |&(_, is_full, f): &(u64, bool, u32)| {
            if is_full {
                Entry::full(f)
            } else {
                self.cands[f as usize]
            }
        };
        let mut i = 0;
        while i < all.len() {
            let key = all[i].0;
            let group_end = all[i..]
                .iter()
                .position(|e| e.0 != key)
                .map_or(all.len(), |n| i + n);
            let group = &all[i..group_end];
            // One run per tenant (full fences first: sorted so), then one for all tenants.
            let mut t0 = 0;
            while t0 < group.len() {
                let tenant = tenant_of(group[t0].2);
                let t1 = group[t0..]
                    .iter()
                    .position(|e| tenant_of(e.2) != tenant)
                    .map_or(group.len(), |n| t0 + n);
                table.insert(key, tenant, entries.len() as u32);
                entries.extend(group[t0..t1].iter().map(entry));
                if let Some(last) = entries.last_mut() {
                    last.last = true;
                }
                t0 = t1;
            }
            if all_tenant_lists {
                table.insert(key, ALL_TENANTS, entries.len() as u32);
                entries.extend(group.iter().filter(|e| e.1).map(entry));
                entries.extend(group.iter().filter(|e| !e.1).map(entry));
                if let Some(last) = entries.last_mut() {
                    last.last = true;
                }
            }
            full += group.iter().filter(|e| e.1).count();
            partial += group.iter().filter(|e| !e.1).count();
            i = group_end;
        }
        entries.shrink_to_fit();
        self.cover = CellCover {
            table,
            entries,
            cells,
            full,
            partial,
        };
        let mut oversize_tenant = vec![false; self.tenants.len()];
        for e in &oversize {
            oversize_tenant[e.data.tenant as usize] = true;
        }
        self.oversize_tenant = oversize_tenant;
        self.oversize = RTree::bulk_load(oversize);
    }

    #[inline]
    fn grid_col(&self, lon: f64) -> u64 {
        (((lon + 180.0) * self.cells_per_degree) as u64).min(self.grid_cols - 1)
    }

    #[inline]
    fn grid_row(&self, lat: f64) -> u64 {
        (((lat + 90.0) * self.cells_per_degree) as u64).min(self.grid_rows - 1)
    }

    #[inline]
    fn grid_key(&self, p: Point) -> u64 {
        (self.grid_row(p.lat()) << 32) | self.grid_col(p.lon())
    }

    fn grid_lon(&self, col: u64) -> f64 {
        col as f64 / self.cells_per_degree - 180.0
    }

    fn grid_lat(&self, row: u64) -> f64 {
        (row as f64 / self.cells_per_degree - 90.0).min(90.0)
    }

    /// Cells of one fence on the lon/lat grid, classified full or partial.
    fn grid_pairs(&self, f: &Fence, max_cells: usize, out: &mut Vec<(u64, bool)>) -> bool {
        const EPS: f64 = 1e-9;
        let (a, b) = f.rects;
        let ranges: Vec<(u64, u64, u64, u64)> = std::iter::once(a)
            .chain(b)
            .map(|r| {
                (
                    self.grid_col(r.min_lon - EPS),
                    self.grid_col(r.max_lon + EPS),
                    self.grid_row(r.min_lat - EPS),
                    self.grid_row(r.max_lat + EPS),
                )
            })
            .collect();
        let total: u64 = ranges
            .iter()
            .map(|&(c0, c1, r0, r1)| (c1 - c0 + 1) * (r1 - r0 + 1))
            .sum();
        if total > max_cells as u64 {
            return false;
        }
        for (c0, c1, r0, r1) in ranges {
            match &f.shape {
                Shape::Circle(circle) => {
                    // Unit vectors of the grid corners, shared by neighbouring cells.
                    let w = (c1 - c0 + 2) as usize;
                    let corners: Vec<[f64; 3]> = (r0..=r1 + 1)
                        .flat_map(|r| (c0..=c1 + 1).map(move |c| (r, c)))
                        .map(|(r, c)| unit(self.grid_lat(r), self.grid_lon(c)))
                        .collect();
                    let c2max = circle.chord2_max();
                    let cu = circle.unit();
                    for r in r0..=r1 {
                        for c in c0..=c1 {
                            let (i, j) = ((r - r0) as usize, (c - c0) as usize);
                            let ks = [
                                &corners[i * w + j],
                                &corners[i * w + j + 1],
                                &corners[(i + 1) * w + j],
                                &corners[(i + 1) * w + j + 1],
                            ];
                            let d2: [f64; 4] = ks.map(|k| chord2(cu, k));
                            // The farthest point of a lon/lat rectangle from any point is a
                            // corner, so four corners inside (with a rounding margin) means
                            // the whole cell is inside.
                            let cover = if d2.iter().all(|&d| d <= c2max * (1.0 - 1e-8)) {
                                Cover::Full
                            } else {
                                let mid = unit(
                                    (self.grid_lat(r) + self.grid_lat(r + 1)) * 0.5,
                                    (self.grid_lon(c) + self.grid_lon(c + 1)) * 0.5,
                                );
                                let rho = ks
                                    .iter()
                                    .map(|k| m_of_chord2(chord2(&mid, k)))
                                    .fold(0.0, f64::max);
                                let d = m_of_chord2(chord2(cu, &mid));
                                if d - rho * (1.0 + 1e-9) > circle.radius_m() * (1.0 + 1e-9) + 1e-6
                                {
                                    Cover::Outside
                                } else {
                                    Cover::Partial
                                }
                            };
                            if cover != Cover::Outside {
                                out.push(((r << 32) | c, cover == Cover::Full));
                            }
                        }
                    }
                }
                Shape::Polygons(parts) => {
                    for r in r0..=r1 {
                        for c in c0..=c1 {
                            let rect = Rect {
                                min_lon: self.grid_lon(c),
                                min_lat: self.grid_lat(r),
                                max_lon: self.grid_lon(c + 1),
                                max_lat: self.grid_lat(r + 1),
                            }
                            .expand(EPS);
                            let cover = combine(parts.iter().map(|p| p.classify_rect(&rect)));
                            if cover != Cover::Outside {
                                out.push(((r << 32) | c, cover == Cover::Full));
                            }
                        }
                    }
                }
            }
        }
        true
    }

    /// The version this snapshot was published as (0 before publication).
    pub fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn set_version(&mut self, v: u64) {
        self.version = v;
    }

    /// Number of fences.
    pub fn len(&self) -> usize {
        self.fences.len()
    }

    /// Whether the index has no fences.
    pub fn is_empty(&self) -> bool {
        self.fences.is_empty()
    }

    /// The strategy this index was built with.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Resolves a tenant name to its key; `None` when the tenant has no fences. A hash of a
    /// short string: resolve once per connection, not per ping.
    pub fn tenant(&self, name: &str) -> Option<TenantKey> {
        self.tenant_map.get(name).copied()
    }

    /// The name of a tenant key from this snapshot.
    pub fn tenant_name(&self, key: TenantKey) -> &str {
        &self.tenants[key.index()]
    }

    /// Tenant names, indexed by [`TenantKey::index`].
    pub fn tenants(&self) -> &[Box<str>] {
        &self.tenants
    }

    /// The fence behind a key from this snapshot.
    pub fn fence(&self, key: FenceKey) -> &Fence {
        &self.fences[key.index()]
    }

    /// Every fence, in load order.
    pub fn fences(&self) -> &[Fence] {
        &self.fences
    }

    /// Size figures and approximate memory.
    pub fn stats(&self) -> IndexStats {
        IndexStats {
            fences: self.fences.len(),
            cells: self.cover.cells,
            full_items: self.cover.full,
            partial_items: self.cover.partial,
            oversize: self.oversize.size(),
            memory_bytes: self.memory_bytes(),
        }
    }

    /// Approximate heap bytes held by the snapshot.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let fences = self.fences.capacity() * size_of::<Fence>()
            + self.fences.iter().map(Fence::heap_bytes).sum::<usize>();
        let map = self.cover.table.bytes();
        let items = self.cover.entries.capacity() * size_of::<Entry>();
        // An R-tree holds its leaves plus roughly a sixth more in inner nodes.
        let tree = |t: &RTree<TreeEntry>| t.size() * (size_of::<TreeEntry>() * 7 / 6 + 8);
        let trees = tree(&self.rtree_all)
            + self.rtree_tenant.iter().map(tree).sum::<usize>()
            + tree(&self.oversize);
        let hot = self.cands.capacity() * size_of::<Entry>()
            + self.polys.rings.capacity() * size_of::<FlatRing>()
            + self.polys.verts.capacity() * size_of::<crate::geom::LonLat>();
        let by_tenant = self
            .by_tenant
            .iter()
            .map(|v| v.capacity() * 4)
            .sum::<usize>();
        fences + map + items + trees + hot + by_tenant
    }

    #[inline]
    fn exact(&self, f: u32, q: &mut Query) -> bool {
        self.test(&self.cands[f as usize], q)
    }

    /// The exact containment test, on the flat copies of the fence geometry. Same predicates
    /// as [`Fence::contains`].
    #[inline]
    fn test(&self, e: &Entry, q: &mut Query) -> bool {
        match e.kind {
            FULL => true,
            CIRCLE => chord2(&[e.a[0], e.a[1], e.a[2]], q.unit()) <= e.a[3],
            _ => {
                let ll = [q.p.lon(), q.p.lat()];
                let b = &e.a;
                if ll[0] < b[0] || ll[1] < b[1] || ll[0] > b[2] || ll[1] > b[3] {
                    return false;
                }
                let verts = &self.polys.verts;
                if e.single.1 > 0 {
                    let ring = &verts[e.single.0 as usize..(e.single.0 + e.single.1) as usize];
                    return ring_position(ring, ll) != RingPos::Outside;
                }
                let rings = &self.polys.rings[e.rings.0 as usize..(e.rings.0 + e.rings.1) as usize];
                let slice = |r: &FlatRing| &verts[r.start as usize..(r.start + r.len) as usize];
                let mut k = 0;
                while k < rings.len() {
                    // One part: a shell and the holes after it.
                    let end = rings[k + 1..]
                        .iter()
                        .position(|r| r.shell)
                        .map_or(rings.len(), |n| k + 1 + n);
                    if ring_position(slice(&rings[k]), ll) != RingPos::Outside
                        && rings[k + 1..end]
                            .iter()
                            .all(|h| ring_position(slice(h), ll) != RingPos::Inside)
                    {
                        return true;
                    }
                    k = end;
                }
                false
            }
        }
    }

    /// Visits the containing fences of one (cell, tenant) run; false when `visit` stopped.
    #[inline]
    fn run_cell(
        &self,
        key: u64,
        tenant: u32,
        q: &mut Query,
        visit: &mut impl FnMut(u32) -> bool,
    ) -> bool {
        if let Some(start) = self.cover.table.get(key, tenant) {
            for e in &self.cover.entries[start as usize..] {
                if self.test(e, q) && !visit(e.fence) {
                    return false;
                }
                if e.last {
                    break;
                }
            }
        }
        true
    }

    /// The key of the lookup grid cell `p` falls in: two multiplications, no memory access.
    /// Two points with the same key and a [`GridCell::uniform`] cell have the same answer.
    #[inline]
    pub fn grid_cell_key(&self, p: Point) -> u64 {
        self.grid_key(p)
    }

    /// Calls `visit` with every fence containing `p` (of `tenant`, or of every tenant when
    /// `None`) until it returns false.
    #[inline]
    fn visit(&self, p: Point, tenant: Option<TenantKey>, mut visit: impl FnMut(u32) -> bool) {
        let mut q = Query { p, unit: None };
        let wanted = |it: &Item| tenant.is_none_or(|t| t.0 == it.tenant);
        match self.strategy {
            Strategy::Grid | Strategy::H3 { .. } => {
                let key = match self.strategy {
                    Strategy::H3 { resolution } => {
                        u64::from(LatLng::new(p.lat(), p.lon()).map_or_else(
                            |_| unreachable!("Point is finite"),
                            |ll| ll.to_cell(resolution),
                        ))
                    }
                    _ => self.grid_key(p),
                };
                match tenant {
                    Some(t) => {
                        if !self.run_cell(key, t.0, &mut q, &mut visit) {
                            return;
                        }
                    }
                    None if self.all_tenant_lists => {
                        if !self.run_cell(key, ALL_TENANTS, &mut q, &mut visit) {
                            return;
                        }
                    }
                    None => {
                        for t in 0..self.tenants.len() as u32 {
                            if !self.run_cell(key, t, &mut q, &mut visit) {
                                return;
                            }
                        }
                    }
                }
                if self.oversize.size() > 0 {
                    for e in self.oversize.locate_all_at_point(&[p.lon(), p.lat()]) {
                        if wanted(&e.data)
                            && self.exact(e.data.fence, &mut q)
                            && !visit(e.data.fence)
                        {
                            return;
                        }
                    }
                }
            }
            Strategy::RTree => {
                let tree = match tenant {
                    Some(t) => match self.rtree_tenant.get(t.index()) {
                        Some(tree) => tree,
                        None => return,
                    },
                    None => &self.rtree_all,
                };
                for e in tree.locate_all_at_point(&[p.lon(), p.lat()]) {
                    if self.exact(e.data.fence, &mut q) && !visit(e.data.fence) {
                        return;
                    }
                }
            }
            Strategy::BruteForce => {
                let (lon, lat) = (p.lon(), p.lat());
                let mut scan = |keys: &[u32]| {
                    for &k in keys {
                        let (a, b) = self.fences[k as usize].rects;
                        let in_box =
                            a.contains(lon, lat) || b.is_some_and(|b| b.contains(lon, lat));
                        if in_box && self.exact(k, &mut q) && !visit(k) {
                            return false;
                        }
                    }
                    true
                };
                match tenant {
                    Some(t) => {
                        if let Some(keys) = self.by_tenant.get(t.index()) {
                            scan(keys);
                        }
                    }
                    None => {
                        for keys in &self.by_tenant {
                            if !scan(keys) {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Every fence of `tenant` (every tenant's when `None`) that contains `p`, boundary
    /// inclusive, written to `out` (cleared first). Does not allocate when `out` has room.
    ///
    /// `None` is for admin tools and backtests. On the ingest path, resolve the tenant with
    /// [`tenant`](Self::tenant) and treat an unknown tenant as "no fences", never as `None`,
    /// or one tenant would see another's fences.
    #[inline]
    pub fn locate(&self, p: Point, tenant: Option<TenantKey>, out: &mut Vec<FenceKey>) {
        out.clear();
        self.visit(p, tenant, |f| {
            out.push(FenceKey(f));
            true
        });
    }

    /// [`locate`](Self::locate) for many points: calls `hit(i, fence)` for every fence
    /// containing `queries[i].0` (of tenant `queries[i].1`), points in order. Same answers,
    /// but the cell-table probes of a group of points are issued together so their cache
    /// misses overlap: for datagram batches and `fencegate locate`. Does not allocate.
    pub fn locate_batch(
        &self,
        queries: &[(Point, Option<TenantKey>)],
        hit: impl FnMut(usize, FenceKey),
    ) {
        self.locate_batch_cells(queries, hit, |_, _| {});
    }

    /// [`locate_batch`](Self::locate_batch), also telling for each query (in order, after its
    /// hits) the lookup grid cell its point fell in and whether that cell is uniform: every
    /// point of it has the same answer as this one. The ping path uses it to skip the lookup
    /// of a device's next fix in the same cell. Never uniform for strategies other than
    /// [`Strategy::Grid`], for all-tenant queries, or for a tenant with oversize fences.
    pub fn locate_batch_cells(
        &self,
        queries: &[(Point, Option<TenantKey>)],
        mut hit: impl FnMut(usize, FenceKey),
        mut cell: impl FnMut(usize, GridCell),
    ) {
        const GROUP: usize = 16;
        const SLOW: u32 = u32::MAX;
        const NONE: u32 = u32::MAX - 1;
        if self.strategy != Strategy::Grid {
            for (i, &(p, t)) in queries.iter().enumerate() {
                self.visit(p, t, |f| {
                    hit(i, FenceKey(f));
                    true
                });
                cell(
                    i,
                    GridCell {
                        key: self.grid_key(p),
                        uniform: false,
                    },
                );
            }
            return;
        }
        let oversize = self.oversize.size() > 0;
        for (g, group) in queries.chunks(GROUP).enumerate() {
            let mut starts = [NONE; GROUP];
            for (j, &(p, t)) in group.iter().enumerate() {
                let t = match t {
                    Some(t) => t.0,
                    None if self.all_tenant_lists => ALL_TENANTS,
                    None => {
                        starts[j] = SLOW;
                        continue;
                    }
                };
                starts[j] = self.cover.table.get(self.grid_key(p), t).unwrap_or(NONE);
            }
            // Read the first entry of every run before testing any, so those misses overlap
            // too (black_box keeps the otherwise unused loads).
            let mut touch = 0u32;
            for &s in &starts[..group.len()] {
                if s < NONE {
                    touch ^= self.cover.entries[s as usize].fence;
                }
            }
            std::hint::black_box(touch);
            for (j, &(p, t)) in group.iter().enumerate() {
                let i = g * GROUP + j;
                let key = self.grid_key(p);
                if starts[j] == SLOW {
                    self.visit(p, t, |f| {
                        hit(i, FenceKey(f));
                        true
                    });
                    cell(
                        i,
                        GridCell {
                            key,
                            uniform: false,
                        },
                    );
                    continue;
                }
                let mut q = Query { p, unit: None };
                // Uniform: the run lists only fences covering the whole cell (no exact test
                // decides anything), and no oversize fence of the tenant can add one.
                let mut uniform =
                    t.is_some_and(|t| self.oversize_tenant.get(t.index()) == Some(&false));
                if starts[j] != NONE {
                    for e in &self.cover.entries[starts[j] as usize..] {
                        uniform &= e.kind == FULL;
                        if self.test(e, &mut q) {
                            hit(i, FenceKey(e.fence));
                        }
                        if e.last {
                            break;
                        }
                    }
                }
                if oversize {
                    for e in self.oversize.locate_all_at_point(&[p.lon(), p.lat()]) {
                        if t.is_none_or(|t| t.0 == e.data.tenant)
                            && self.exact(e.data.fence, &mut q)
                        {
                            hit(i, FenceKey(e.data.fence));
                        }
                    }
                }
                cell(i, GridCell { key, uniform });
            }
        }
    }

    /// Whether any fence of `tenant` (any tenant's when `None`) contains `p`; stops at the
    /// first hit.
    #[inline]
    pub fn contains_any(&self, p: Point, tenant: Option<TenantKey>) -> Option<FenceKey> {
        let mut found = None;
        self.visit(p, tenant, |f| {
            found = Some(FenceKey(f));
            false
        });
        found
    }

    /// The fence of `tenant` (every tenant's when `None`) nearest to `p`, with the metres from
    /// `p` to its edge (0 when `p` is inside it). `None` when there are no such fences.
    pub fn nearest(&self, p: Point, tenant: Option<TenantKey>) -> Option<(FenceKey, f64)> {
        if let Some(f) = self.contains_any(p, tenant) {
            return Some((f, 0.0));
        }
        let tree = match tenant {
            Some(t) => self.rtree_tenant.get(t.index())?,
            None => &self.rtree_all,
        };
        if tree.size() == 0 {
            return None;
        }
        // Grow a search cap until the best fence found lies within it: any fence nearer than
        // the cap radius has a point in the cap, so its envelope meets the cap's rectangles.
        let mut radius = 1_000.0;
        loop {
            let mut best: Option<(FenceKey, f64)> = None;
            let (a, b) = cap_rects(p, radius);
            for r in std::iter::once(a).chain(b) {
                let env = AABB::from_corners([r.min_lon, r.min_lat], [r.max_lon, r.max_lat]);
                for e in tree.locate_in_envelope_intersecting(&env) {
                    let d = self.fences[e.data.fence as usize].boundary_distance_m(p);
                    if best.is_none_or(|(k, bd)| d < bd || (d == bd && e.data.fence < k.0)) {
                        best = Some((FenceKey(e.data.fence), d));
                    }
                }
            }
            let whole_world = radius >= std::f64::consts::PI * EARTH_RADIUS_M;
            match best {
                Some((_, d)) if d <= radius || whole_world => return best,
                _ if whole_world => return None,
                _ => radius *= 8.0,
            }
        }
    }

    /// Accuracy-aware containment: `Inside` when the whole disc of `accuracy_m` around `p` is
    /// inside one fence, `Outside` when it misses every fence of the tenant, else `Uncertain`.
    /// A negative or NaN accuracy counts as 0.
    ///
    /// Boundary distances come from a local projection accurate to about 0.1 % within a few
    /// km; `Inside`/`Outside` require a 1 % (+1 cm) clearance so that error never turns an
    /// uncertain point into a certain one.
    pub fn classify(&self, p: Point, accuracy_m: f64, tenant: Option<TenantKey>) -> Classification {
        let acc = accuracy_m.max(0.0);
        let need = acc * 1.01 + 0.01;
        let mut best_inside: Option<(FenceKey, f64)> = None;
        self.visit(p, tenant, |f| {
            let d = self.fences[f as usize].boundary_distance_m(p);
            if best_inside.is_none_or(|(k, bd)| d > bd || (d == bd && f < k.0)) {
                best_inside = Some((FenceKey(f), d));
            }
            true
        });
        if let Some((fence, d)) = best_inside {
            if acc == 0.0 || d >= need {
                return Classification::Inside {
                    fence,
                    margin_m: d - acc,
                };
            }
            return Classification::Uncertain {
                fence,
                inside: true,
                distance_m: d,
            };
        }
        match self.nearest(p, tenant) {
            None => Classification::NoFences,
            Some((nearest, distance_m)) if acc == 0.0 || distance_m >= need => {
                Classification::Outside {
                    nearest,
                    distance_m,
                }
            }
            Some((fence, distance_m)) => Classification::Uncertain {
                fence,
                inside: false,
                distance_m,
            },
        }
    }
}

fn combine(covers: impl Iterator<Item = Cover>) -> Cover {
    let mut out = Cover::Outside;
    for c in covers {
        match c {
            Cover::Full => return Cover::Full,
            Cover::Partial => out = Cover::Partial,
            Cover::Outside => {}
        }
    }
    out
}

/// Cells of one fence at an H3 resolution, found by a breadth-first walk from a cell inside
/// the fence's envelope over neighbours whose bounding cap meets the envelope.
fn h3_pairs(f: &Fence, res: Resolution, max_cells: usize, out: &mut Vec<(u64, bool)>) -> bool {
    let (fa, fb) = f.rects;
    let start_ll = match &f.shape {
        Shape::Circle(c) => c.center(),
        Shape::Polygons(parts) => {
            let v = parts[0].shell()[0];
            Point::new(v[1], v[0]).unwrap_or_else(|_| unreachable!("validated"))
        }
    };
    let start = crate::point::cell_of(start_ll, res);
    let mut seen: crate::hash::FastMap<u64, ()> = Default::default();
    let mut queue = VecDeque::from([start]);
    seen.insert(u64::from(start), ());
    while let Some(cell) = queue.pop_front() {
        if seen.len() > max_cells * 4 {
            return false;
        }
        let (center, rho) = cell_cap(cell);
        let (ca, cb) = cap_rects(center, rho);
        let meets = |r: &Rect| r.intersects(&fa) || fb.is_some_and(|b| r.intersects(&b));
        if !meets(&ca) && !cb.is_some_and(|b| meets(&b)) {
            continue;
        }
        let cover = match &f.shape {
            Shape::Circle(c) => {
                let d = haversine_m(c.center(), center);
                if d + rho <= c.radius_m() * (1.0 - 1e-9) - 1e-6 {
                    Cover::Full
                } else if d - rho > c.radius_m() * (1.0 + 1e-9) + 1e-6 {
                    Cover::Outside
                } else {
                    Cover::Partial
                }
            }
            Shape::Polygons(parts) => match cb {
                None => combine(parts.iter().map(|p| p.classify_rect(&ca))),
                Some(cb) => {
                    let touches = parts.iter().any(|p| {
                        p.classify_rect(&ca) != Cover::Outside
                            || p.classify_rect(&cb) != Cover::Outside
                    });
                    if touches {
                        Cover::Partial
                    } else {
                        Cover::Outside
                    }
                }
            },
        };
        if cover != Cover::Outside {
            if out.len() >= max_cells {
                return false;
            }
            out.push((u64::from(cell), cover == Cover::Full));
        }
        for n in cell.grid_disk::<Vec<CellIndex>>(1) {
            if seen.insert(u64::from(n), ()).is_none() {
                queue.push_back(n);
            }
        }
    }
    true
}

/// A cap that contains an H3 cell: its centre and the farthest boundary vertex, enlarged
/// slightly against rounding.
fn cell_cap(cell: CellIndex) -> (Point, f64) {
    let ll = LatLng::from(cell);
    let center = Point::new(ll.lat(), ll.lng())
        .unwrap_or_else(|_| unreachable!("h3o returns valid coordinates"));
    let rho = cell
        .boundary()
        .iter()
        .filter_map(|v| Point::new(v.lat(), v.lng()).ok())
        .map(|v| haversine_m(center, v))
        .fold(0.0, f64::max);
    (center, rho * (1.0 + 1e-6) + 0.01)
}
