//! Fences: the validated shapes the index answers about.

use crate::geom::{LonLat, PolygonPart, Rect, cap_rects};
use crate::point::{Point, chord2, chord2_of_m, haversine_m};

/// Handle of a fence inside one [`FenceIndex`](crate::FenceIndex) snapshot (its position in
/// load order). Only meaningful for the snapshot that returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FenceKey(pub(crate) u32);

impl FenceKey {
    /// Position of the fence in load order (the order of the GeoJSON features that passed
    /// validation).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Interned tenant name, resolved once with [`FenceIndex::tenant`](crate::FenceIndex::tenant)
/// so queries compare integers, not strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantKey(pub(crate) u32);

impl TenantKey {
    /// Position of the tenant in first-seen order.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A circle fence: every point within `radius_m` great-circle metres of `center`.
#[derive(Clone, Debug, PartialEq)]
pub struct Circle {
    center: Point,
    radius_m: f64,
    unit: [f64; 3],
    chord2_max: f64,
}

impl Circle {
    /// Builds a circle; `radius_m` has already been checked against the configured bounds.
    pub fn new(center: Point, radius_m: f64) -> Self {
        Self {
            center,
            radius_m,
            unit: center.unit(),
            chord2_max: chord2_of_m(radius_m),
        }
    }

    /// Centre of the circle.
    pub fn center(&self) -> Point {
        self.center
    }

    /// Radius in metres.
    pub fn radius_m(&self) -> f64 {
        self.radius_m
    }

    /// `haversine(center, p) <= radius`, evaluated as a chord comparison on unit vectors.
    #[inline]
    pub(crate) fn contains_unit(&self, p: &[f64; 3]) -> bool {
        chord2(&self.unit, p) <= self.chord2_max
    }

    pub(crate) fn unit(&self) -> &[f64; 3] {
        &self.unit
    }

    pub(crate) fn chord2_max(&self) -> f64 {
        self.chord2_max
    }
}

/// The shape of a fence.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// A circle (GeoJSON `Point` with a `radius_m` property).
    Circle(Circle),
    /// One or more polygons with holes (GeoJSON `Polygon` or `MultiPolygon`); a point inside
    /// any part is inside the fence.
    Polygons(Vec<PolygonPart>),
}

/// Which GeoJSON geometry a fence came from, for summaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FenceKind {
    /// A `Point` with `radius_m`.
    Circle,
    /// A `Polygon`.
    Polygon,
    /// A `MultiPolygon`.
    MultiPolygon,
}

impl FenceKind {
    /// The GeoJSON-ish name shown in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            FenceKind::Circle => "circle",
            FenceKind::Polygon => "polygon",
            FenceKind::MultiPolygon => "multipolygon",
        }
    }
}

/// One geofence of one tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct Fence {
    pub(crate) id: Box<str>,
    pub(crate) tenant: TenantKey,
    pub(crate) tenant_name: Box<str>,
    pub(crate) site: Option<Box<str>>,
    pub(crate) name: Option<Box<str>>,
    pub(crate) kind: FenceKind,
    pub(crate) shape: Shape,
    /// Bounding boxes (two when a circle wraps the antimeridian).
    pub(crate) rects: (Rect, Option<Rect>),
}

impl Fence {
    pub(crate) fn rects_of(shape: &Shape) -> (Rect, Option<Rect>) {
        match shape {
            Shape::Circle(c) => cap_rects(c.center, c.radius_m),
            Shape::Polygons(parts) => {
                let mut r = Rect::EMPTY;
                for p in parts {
                    r.union(&p.bbox);
                }
                (r, None)
            }
        }
    }

    /// The fence id, unique within its tenant (e.g. `hq-north`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The owning tenant.
    pub fn tenant(&self) -> TenantKey {
        self.tenant
    }

    /// The owning tenant's name as written in the fence file.
    pub fn tenant_name(&self) -> &str {
        &self.tenant_name
    }

    /// The site the fence belongs to, if given.
    pub fn site(&self) -> Option<&str> {
        self.site.as_deref()
    }

    /// A human-readable name, if given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Which GeoJSON geometry the fence came from.
    pub fn kind(&self) -> FenceKind {
        self.kind
    }

    /// The fence geometry.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Bounding rectangle(s); a circle across the antimeridian has two.
    pub fn bounding_rects(&self) -> (Rect, Option<Rect>) {
        self.rects
    }

    /// Whether the fence contains `p` (boundary inclusive). This is the reference predicate:
    /// the index gives exactly the same answer, only faster.
    pub fn contains(&self, p: Point) -> bool {
        match &self.shape {
            Shape::Circle(c) => c.contains_unit(&p.unit()),
            Shape::Polygons(parts) => {
                let ll: LonLat = [p.lon(), p.lat()];
                parts.iter().any(|part| part.contains(ll))
            }
        }
    }

    /// Great-circle metres from `p` to the nearest point of the fence's boundary, whichever
    /// side `p` is on.
    pub fn boundary_distance_m(&self, p: Point) -> f64 {
        match &self.shape {
            Shape::Circle(c) => (haversine_m(c.center, p) - c.radius_m).abs(),
            Shape::Polygons(parts) => parts
                .iter()
                .map(|part| part.boundary_distance_m(p))
                .fold(f64::INFINITY, f64::min),
        }
    }

    /// Metres from `p` to the fence: 0 when `p` is inside, else the distance to its edge.
    pub fn distance_m(&self, p: Point) -> f64 {
        if self.contains(p) {
            0.0
        } else {
            self.boundary_distance_m(p)
        }
    }

    /// Approximate heap bytes owned by this fence.
    pub(crate) fn heap_bytes(&self) -> usize {
        let strings = self.id.len()
            + self.tenant_name.len()
            + self.site.as_ref().map_or(0, |s| s.len())
            + self.name.as_ref().map_or(0, |s| s.len());
        let shape = match &self.shape {
            Shape::Circle(_) => 0,
            Shape::Polygons(parts) => {
                parts.capacity() * std::mem::size_of::<PolygonPart>()
                    + parts
                        .iter()
                        .map(|p| {
                            p.rings.capacity() * std::mem::size_of::<Vec<LonLat>>()
                                + p.rings
                                    .iter()
                                    .map(|r| r.capacity() * std::mem::size_of::<LonLat>())
                                    .sum::<usize>()
                        })
                        .sum::<usize>()
            }
        };
        strings + shape
    }
}
