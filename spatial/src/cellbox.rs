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
    /// (the cell's boundary), so compute it when a device enters a new
    /// cell, not per fix.
    ///
    /// Why it is inside: the cell is bounded by great-circle arcs between
    /// its boundary vertices, so a cap around the centre whose radius is
    /// at most the centre's distance to every arc's great circle lies in
    /// the cell. The box is then sized by the haversine formula so that
    /// every point of it is within that radius of the centre.
    pub fn of(cell: CellIndex) -> Self {
        let centre = LatLng::from(cell);
        let c = unit(centre.lat(), centre.lng());
        let verts: Vec<[f64; 3]> = cell
            .boundary()
            .iter()
            .map(|v| unit(v.lat(), v.lng()))
            .collect();
        if verts.len() < 3 {
            return Self::EMPTY;
        }
        let mut r = f64::INFINITY;
        for (k, a) in verts.iter().enumerate() {
            let b = &verts[(k + 1) % verts.len()];
            let n = cross(a, b);
            let len = dot(&n, &n).sqrt();
            if len == 0.0 || !len.is_finite() {
                return Self::EMPTY;
            }
            r = r.min((dot(&c, &n) / len).abs().min(1.0).asin());
        }
        let r = r * SAFETY;
        // Latitude half-extent; the longitude half-extent gets the rest of
        // the radius (0.7 keeps the box near square at the centre).
        let a = 0.7 * r;
        let phi0 = centre.lat_radians();
        if !(r > 0.0) || phi0.abs() + a >= std::f64::consts::FRAC_PI_2 {
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
        if !(room > 0.0) {
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
        !(self.min_lat <= self.max_lat && self.min_lon <= self.max_lon)
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
