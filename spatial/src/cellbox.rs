//! A lon/lat box proven to lie inside one H3 cell: four comparisons that
//! answer "is this point still in that cell?" without an H3 conversion.
//!
//! Ping suppression asks, for every fix, whether the device left its H3
//! cell. Converting a position to a cell costs a few hundred nanoseconds
//! (see docs/PERFORMANCE.md), more than everything else a standing or
//! slowly moving fix needs. A device mostly stays in its cell, so the
//! gateway remembers the box of its last cell and converts only fixes
//! outside it. The box is conservative: a point in it is in the cell; a
//! point outside it may still be, and is then converted.

use h3o::{CellIndex, LatLng};

use crate::point::unit;

/// Most vertices of an H3 cell's boundary (a pentagon or hexagon with
/// distortion vertices where it crosses an icosahedron edge).
const MAX_VERTS: usize = 10;

/// How much of the cell's inscribed radius the box may use. The rest is a
/// margin for rounding in H3's own assignment of points near an edge and
/// in the conversions here; `tests/cellbox.rs` checks points on the box's
/// edges against [`cell_of`](crate::cell_of).
const SAFETY: f64 = 0.995;

/// A lon/lat rectangle, in degrees, that lies inside one H3 cell. Empty
/// (containing nothing) for cells it cannot describe, such as a cell
/// around a pole.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CellBox {
    min_lat: f64,
    max_lat: f64,
    min_lon: f64,
    max_lon: f64,
}

impl Default for CellBox {
    fn default() -> Self {
        Self::EMPTY
    }
}

fn cross(a: &[f64; 3], b: &[f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// `sin²(x / 2)`: the haversine, monotonic on `0..=π`.
fn hav(x: f64) -> f64 {
    let s = (x * 0.5).sin();
    s * s
}

impl CellBox {
    /// The box that contains no point.
    pub const EMPTY: Self = Self {
        min_lat: f64::INFINITY,
        max_lat: f64::NEG_INFINITY,
        min_lon: f64::INFINITY,
        max_lon: f64::NEG_INFINITY,
    };

    /// A box inside `cell`. Costs about as much as one H3 conversion
    /// (the cell's boundary), so compute it when a device lingers in a
    /// cell, not per fix.
    ///
    /// Why it is inside: the cell is bounded by great-circle arcs between
    /// its boundary vertices, so a cap around the centre whose radius is
    /// at most the centre's distance to every arc's great circle lies in
    /// the cell. The box is then sized by the haversine formula so that
    /// every point of it is within that radius of the centre.
    pub fn of(cell: CellIndex) -> Self {
        CellShape::of(cell).cell_box
    }

    /// The box for a cell whose centre is `centre` and inscribed radius
    /// (radians) is `r`.
    fn around(centre: LatLng, r: f64) -> Self {
        let r = r * SAFETY;
        // Latitude half-extent; the longitude half-extent gets the rest of
        // the radius (0.7 keeps the box near square at the centre).
        let a = 0.7 * r;
        let phi0 = centre.lat_radians();
        // `r > 0` is false for NaN too: no box then.
        if r.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            || phi0.abs() + a >= std::f64::consts::FRAC_PI_2
        {
            return Self::EMPTY;
        }
        // Largest cos(latitude) over the box's latitudes.
        let (lo, hi) = (phi0 - a, phi0 + a);
        let cmax = if lo <= 0.0 && hi >= 0.0 {
            1.0
        } else {
            lo.abs().min(hi.abs()).cos()
        };
        // hav(d) = hav(Δφ) + cos φ cos φ0 hav(Δλ) ≤ hav(a) + cmax cos φ0 hav(b) ≤ hav(r).
        let room = (hav(r) - hav(a)) / (cmax * phi0.cos());
        if room.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Self::EMPTY;
        }
        let b = 2.0 * room.min(1.0).sqrt().asin();
        let (a_deg, b_deg) = (a.to_degrees(), b.to_degrees());
        Self {
            min_lat: centre.lat() - a_deg,
            max_lat: centre.lat() + a_deg,
            min_lon: centre.lng() - b_deg,
            max_lon: centre.lng() + b_deg,
        }
    }

    /// Whether the point (degrees) is in the box, and therefore in its cell.
    #[inline]
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        lat >= self.min_lat && lat <= self.max_lat && lon >= self.min_lon && lon <= self.max_lon
    }

    /// Whether the box contains no point.
    pub fn is_empty(&self) -> bool {
        self.min_lat > self.max_lat || self.min_lon > self.max_lon
    }

    /// The corners and edge midpoints, then the centre: points a test can
    /// check against the cell.
    pub fn probes(&self) -> [(f64, f64); 9] {
        let (la, lb) = (self.min_lat, self.max_lat);
        let (oa, ob) = (self.min_lon, self.max_lon);
        let (lm, om) = ((la + lb) / 2.0, (oa + ob) / 2.0);
        [
            (la, oa),
            (la, ob),
            (lb, oa),
            (lb, ob),
            (la, om),
            (lb, om),
            (lm, oa),
            (lm, ob),
            (lm, om),
        ]
    }
}

/// An H3 cell as the intersection of the hemispheres its edges bound:
/// a sound "is this point in the cell?" (exact for a convex cell, less a
/// thin margin), at the cost of
/// a unit vector (two `sin_cos`) and a dot product per edge instead of an
/// H3 conversion. It also carries the cell's [`CellBox`], checked first.
/// Too big to keep per device (the box is what a device's state keeps);
/// made for a batch of fixes.
#[derive(Clone, Copy, Debug)]
pub struct CellShape {
    /// The cell's box, checked first (no trigonometry).
    pub cell_box: CellBox,
    /// Inward edge normals, unit length; `n` of them are used (0: the
    /// cell is not described, only the box answers).
    normals: [[f64; 3]; MAX_VERTS],
    n: usize,
    /// How far inside every edge (sine of the angle) a point must be.
    margin: f64,
}

impl CellShape {
    /// A shape that contains nothing.
    pub const EMPTY: Self = Self {
        cell_box: CellBox::EMPTY,
        normals: [[0.0; 3]; MAX_VERTS],
        n: 0,
        margin: 0.0,
    };

    /// The shape of `cell`: its boundary's great-circle edges.
    ///
    /// Why the test is sound: between consecutive boundary vertices a
    /// cell's edge is a straight line in H3's gnomonic projection, that is
    /// a great-circle arc, and the points on the inner side of every edge
    /// (the polygon's kernel) lie inside the polygon, convex or not; for a
    /// convex cell they are the whole cell. A point must be inside every edge by a
    /// margin of 0.5 % of the cell's inscribed radius, for rounding in
    /// H3's own assignment (`tests/cells.rs` checks against `cell_of`).
    pub fn of(cell: CellIndex) -> Self {
        let centre = LatLng::from(cell);
        let c = unit(centre.lat(), centre.lng());
        let boundary = cell.boundary();
        let nv = boundary.len();
        if !(3..=MAX_VERTS).contains(&nv) {
            return Self::EMPTY;
        }
        let mut verts = [[0.0; 3]; MAX_VERTS];
        for (v, ll) in verts.iter_mut().zip(boundary.iter()) {
            *v = unit(ll.lat(), ll.lng());
        }
        let mut normals = [[0.0; 3]; MAX_VERTS];
        let mut r = f64::INFINITY;
        for k in 0..nv {
            // a × (b − a) = a × b, but from the short difference vector, so
            // the normal of a centimetre edge keeps full precision (a × b
            // of two nearly equal unit vectors loses it to cancellation).
            let (a, b) = (&verts[k], &verts[(k + 1) % nv]);
            let mut n = cross(a, &[b[0] - a[0], b[1] - a[1], b[2] - a[2]]);
            let len = dot(&n, &n).sqrt();
            if len == 0.0 || !len.is_finite() {
                return Self::EMPTY;
            }
            n = n.map(|x| x / len);
            normals[k] = n;
            r = r.min(dot(&c, &n).abs().min(1.0).asin());
        }
        let cell_box = CellBox::around(centre, r);
        // The boundary winds one way, so every edge's normal points to the
        // same side; inward is the centre's side. A point inside every edge
        // is in the polygon's kernel, which lies inside the polygon even if
        // a distortion vertex makes it concave. A centre on the wrong side
        // of some edge leaves only the box.
        let inward = if dot(&c, &normals[0]) < 0.0 {
            -1.0
        } else {
            1.0
        };
        for n in &mut normals[..nv] {
            *n = n.map(|x| x * inward);
        }
        let consistent = normals[..nv].iter().all(|n| dot(&c, n) > 0.0);
        Self {
            cell_box,
            normals,
            n: if consistent && r > 0.0 { nv } else { 0 },
            margin: (r * (1.0 - SAFETY)).sin(),
        }
    }

    /// Whether the point (degrees) is in the shape, and therefore in its
    /// cell.
    #[inline]
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        if self.cell_box.contains(lat, lon) {
            return true;
        }
        if self.n == 0 {
            return false;
        }
        let p = unit(lat, lon);
        self.normals[..self.n]
            .iter()
            .all(|n| dot(&p, n) >= self.margin)
    }

    /// A shape that is only `cell_box` (what a device's state keeps).
    pub fn from_box(cell_box: CellBox) -> Self {
        Self {
            cell_box,
            ..Self::EMPTY
        }
    }
}
