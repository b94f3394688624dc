//! Planar lon/lat primitives (RFC 7946 edges are straight in lon/lat) and spherical caps.
//!
//! Every containment decision goes through the robust orientation predicate, so a point is
//! classified the same way by the index and by the brute-force scan.

use geo::Coord;
use geo::kernels::{Kernel, Orientation, RobustKernel};

use crate::point::{EARTH_RADIUS_M, Point, haversine_m};

/// A `[lon, lat]` position in degrees, the GeoJSON axis order.
pub type LonLat = [f64; 2];

/// A closed lon/lat rectangle (`min <= max` on both axes; never wraps the antimeridian).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    /// Western edge, degrees.
    pub min_lon: f64,
    /// Southern edge, degrees.
    pub min_lat: f64,
    /// Eastern edge, degrees.
    pub max_lon: f64,
    /// Northern edge, degrees.
    pub max_lat: f64,
}

impl Rect {
    pub(crate) const EMPTY: Rect = Rect {
        min_lon: f64::INFINITY,
        min_lat: f64::INFINITY,
        max_lon: f64::NEG_INFINITY,
        max_lat: f64::NEG_INFINITY,
    };

    pub(crate) fn extend(&mut self, p: LonLat) {
        self.min_lon = self.min_lon.min(p[0]);
        self.max_lon = self.max_lon.max(p[0]);
        self.min_lat = self.min_lat.min(p[1]);
        self.max_lat = self.max_lat.max(p[1]);
    }

    pub(crate) fn union(&mut self, o: &Rect) {
        self.min_lon = self.min_lon.min(o.min_lon);
        self.max_lon = self.max_lon.max(o.max_lon);
        self.min_lat = self.min_lat.min(o.min_lat);
        self.max_lat = self.max_lat.max(o.max_lat);
    }

    /// Whether the closed rectangle contains the position.
    #[inline]
    pub fn contains(&self, lon: f64, lat: f64) -> bool {
        lon >= self.min_lon && lon <= self.max_lon && lat >= self.min_lat && lat <= self.max_lat
    }

    #[inline]
    pub(crate) fn intersects(&self, o: &Rect) -> bool {
        self.min_lon <= o.max_lon
            && o.min_lon <= self.max_lon
            && self.min_lat <= o.max_lat
            && o.min_lat <= self.max_lat
    }

    pub(crate) fn expand(&self, eps: f64) -> Rect {
        Rect {
            min_lon: self.min_lon - eps,
            min_lat: self.min_lat - eps,
            max_lon: self.max_lon + eps,
            max_lat: self.max_lat + eps,
        }
    }

    pub(crate) fn center(&self) -> LonLat {
        [
            (self.min_lon + self.max_lon) * 0.5,
            (self.min_lat + self.max_lat) * 0.5,
        ]
    }

    pub(crate) fn corners(&self) -> [LonLat; 4] {
        [
            [self.min_lon, self.min_lat],
            [self.max_lon, self.min_lat],
            [self.max_lon, self.max_lat],
            [self.min_lon, self.max_lat],
        ]
    }
}

#[inline]
fn c(p: LonLat) -> Coord<f64> {
    Coord { x: p[0], y: p[1] }
}

#[inline]
pub(crate) fn orient(a: LonLat, b: LonLat, p: LonLat) -> Orientation {
    RobustKernel::orient2d(c(a), c(b), c(p))
}

/// Where a position lies relative to a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RingPos {
    Inside,
    Boundary,
    Outside,
}

/// Crossing-number test with an exact on-edge check. `ring` is closed (first == last).
#[inline]
pub(crate) fn ring_position(ring: &[LonLat], p: LonLat) -> RingPos {
    let [x, y] = p;
    let mut inside = false;
    for w in ring.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (ylo, yhi) = if a[1] <= b[1] {
            (a[1], b[1])
        } else {
            (b[1], a[1])
        };
        if y < ylo || y > yhi {
            continue;
        }
        let (xlo, xhi) = if a[0] <= b[0] {
            (a[0], b[0])
        } else {
            (b[0], a[0])
        };
        if x > xhi {
            // Wholly left of p: p is not on it and any crossing is not to p's right.
            continue;
        }
        let straddles = (a[1] > y) != (b[1] > y);
        if x < xlo {
            // Wholly right of p: p is not on it, and a straddling edge crosses to p's right.
            inside ^= straddles;
            continue;
        }
        let o = orient(a, b, p);
        if o == Orientation::Collinear && x >= xlo && x <= xhi {
            return RingPos::Boundary;
        }
        if straddles {
            let left = if a[1] < b[1] {
                o == Orientation::CounterClockwise
            } else {
                o == Orientation::Clockwise
            };
            if left {
                inside = !inside;
            }
        }
    }
    if inside {
        RingPos::Inside
    } else {
        RingPos::Outside
    }
}

/// One polygon: a shell and its holes, each ring closed, with its bounding box.
#[derive(Clone, Debug, PartialEq)]
pub struct PolygonPart {
    pub(crate) bbox: Rect,
    pub(crate) rings: Vec<Vec<LonLat>>,
}

impl PolygonPart {
    pub(crate) fn new(rings: Vec<Vec<LonLat>>) -> Self {
        let mut bbox = Rect::EMPTY;
        for p in &rings[0] {
            bbox.extend(*p);
        }
        Self { bbox, rings }
    }

    /// The outer ring, closed, as `[lon, lat]` positions.
    pub fn shell(&self) -> &[LonLat] {
        &self.rings[0]
    }

    /// The holes, each closed.
    pub fn holes(&self) -> &[Vec<LonLat>] {
        &self.rings[1..]
    }

    /// Bounding box of the shell.
    pub fn bbox(&self) -> Rect {
        self.bbox
    }

    /// Boundary-inclusive containment: inside the shell and not strictly inside any hole.
    #[inline]
    pub fn contains(&self, p: LonLat) -> bool {
        if !self.bbox.contains(p[0], p[1]) {
            return false;
        }
        if ring_position(&self.rings[0], p) == RingPos::Outside {
            return false;
        }
        self.rings[1..]
            .iter()
            .all(|h| ring_position(h, p) != RingPos::Inside)
    }

    fn edges(&self) -> impl Iterator<Item = (LonLat, LonLat)> + '_ {
        self.rings
            .iter()
            .flat_map(|r| r.windows(2).map(|w| (w[0], w[1])))
    }

    /// How a closed rectangle relates to this polygon. Exact: uses robust orientation only.
    pub(crate) fn classify_rect(&self, r: &Rect) -> Cover {
        if !self.bbox.intersects(r) {
            return Cover::Outside;
        }
        if self.edges().any(|(a, b)| segment_touches_rect(a, b, r)) {
            return Cover::Partial;
        }
        // No edge meets the rectangle, so it lies wholly on one side of the boundary.
        if self.contains(r.center()) {
            Cover::Full
        } else {
            Cover::Outside
        }
    }

    /// Distance in metres from `p` to the nearest edge of any ring.
    pub(crate) fn boundary_distance_m(&self, p: Point) -> f64 {
        let mut best = f64::INFINITY;
        let proj = LocalProj::new(p);
        for (a, b) in self.edges() {
            best = best.min(proj.segment_distance_m(a, b));
        }
        best
    }
}

/// How a cell relates to a fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cover {
    /// Every point of the cell is inside the fence.
    Full,
    /// The fence boundary may pass through the cell: test points exactly.
    Partial,
    /// No point of the cell is inside the fence.
    Outside,
}

/// Whether the closed segment `a-b` meets the closed rectangle `r` (exact).
pub(crate) fn segment_touches_rect(a: LonLat, b: LonLat, r: &Rect) -> bool {
    let (xlo, xhi) = if a[0] <= b[0] {
        (a[0], b[0])
    } else {
        (b[0], a[0])
    };
    let (ylo, yhi) = if a[1] <= b[1] {
        (a[1], b[1])
    } else {
        (b[1], a[1])
    };
    if xhi < r.min_lon || xlo > r.max_lon || yhi < r.min_lat || ylo > r.max_lat {
        return false;
    }
    if r.contains(a[0], a[1]) || r.contains(b[0], b[1]) {
        return true;
    }
    // The bounding boxes overlap and neither end is inside: the segment meets the rectangle
    // exactly when the corners are not all strictly on one side of its line.
    let mut pos = false;
    let mut neg = false;
    for k in r.corners() {
        match orient(a, b, k) {
            Orientation::CounterClockwise => pos = true,
            Orientation::Clockwise => neg = true,
            Orientation::Collinear => return true,
        }
    }
    pos && neg
}

/// Whether closed segments `a-b` and `c-d` share a point (exact).
pub(crate) fn segments_intersect(a: LonLat, b: LonLat, c: LonLat, d: LonLat) -> bool {
    let o1 = orient(a, b, c);
    let o2 = orient(a, b, d);
    let o3 = orient(c, d, a);
    let o4 = orient(c, d, b);
    let col = Orientation::Collinear;
    if o1 != o2 && o3 != o4 && o1 != col && o2 != col && o3 != col && o4 != col {
        return true;
    }
    (o1 == col && on_segment(a, b, c))
        || (o2 == col && on_segment(a, b, d))
        || (o3 == col && on_segment(c, d, a))
        || (o4 == col && on_segment(c, d, b))
}

/// `p` is known collinear with `a-b`; is it within the segment's extent?
fn on_segment(a: LonLat, b: LonLat, p: LonLat) -> bool {
    p[0] >= a[0].min(b[0])
        && p[0] <= a[0].max(b[0])
        && p[1] >= a[1].min(b[1])
        && p[1] <= a[1].max(b[1])
}

/// Equirectangular projection centred on a query point, used to find the closest point of a
/// lon/lat segment; the distance reported is the great-circle distance to that point.
///
/// The projection is affine in lon/lat, so RFC 7946 straight edges stay straight; its scale
/// error grows with the latitude difference (about 0.1 % at 5 km and 60° N).
pub(crate) struct LocalProj {
    p: Point,
    kx: f64,
}

impl LocalProj {
    pub(crate) fn new(p: Point) -> Self {
        Self {
            p,
            kx: p.lat().to_radians().cos().max(1e-9),
        }
    }

    pub(crate) fn segment_distance_m(&self, a: LonLat, b: LonLat) -> f64 {
        let (px, py) = (self.p.lon(), self.p.lat());
        let ax = (a[0] - px) * self.kx;
        let ay = a[1] - py;
        let bx = (b[0] - px) * self.kx;
        let by = b[1] - py;
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = dx * dx + dy * dy;
        let t = if len2 > 0.0 {
            (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let lon = (a[0] + t * (b[0] - a[0])).clamp(-180.0, 180.0);
        let lat = (a[1] + t * (b[1] - a[1])).clamp(-90.0, 90.0);
        match Point::new(lat, lon) {
            Ok(q) => haversine_m(self.p, q),
            Err(_) => f64::INFINITY,
        }
    }
}

/// Bounding rectangles of the spherical cap of `radius_m` around `center`: one, or two when it
/// wraps the antimeridian. Conservative (slightly enlarged against rounding).
pub(crate) fn cap_rects(center: Point, radius_m: f64) -> (Rect, Option<Rect>) {
    const EPS: f64 = 1e-9;
    let ang = radius_m / EARTH_RADIUS_M * (1.0 + 1e-9);
    let dlat = ang.to_degrees() + EPS;
    let (lat, lon) = (center.lat(), center.lon());
    let min_lat = (lat - dlat).max(-90.0);
    let max_lat = (lat + dlat).min(90.0);
    if lat + dlat >= 90.0 || lat - dlat <= -90.0 || ang >= std::f64::consts::FRAC_PI_2 {
        // The cap holds a pole: every longitude is reached.
        return (
            Rect {
                min_lon: -180.0,
                min_lat,
                max_lon: 180.0,
                max_lat,
            },
            None,
        );
    }
    let s = ang.sin() / lat.to_radians().cos();
    let dlon = if s >= 1.0 {
        180.0
    } else {
        s.asin().to_degrees() + EPS
    };
    let (lo, hi) = (lon - dlon, lon + dlon);
    if hi - lo >= 360.0 {
        return (
            Rect {
                min_lon: -180.0,
                min_lat,
                max_lon: 180.0,
                max_lat,
            },
            None,
        );
    }
    let rect = |a: f64, b: f64| Rect {
        min_lon: a,
        min_lat,
        max_lon: b,
        max_lat,
    };
    if lo < -180.0 {
        (rect(-180.0, hi), Some(rect(lo + 360.0, 180.0)))
    } else if hi > 180.0 {
        (rect(lo, 180.0), Some(rect(-180.0, hi - 360.0)))
    } else {
        (rect(lo, hi), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square() -> Vec<LonLat> {
        vec![[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [0.0, 0.0]]
    }

    #[test]
    fn ring_position_counts_boundary_as_boundary() {
        let r = square();
        assert_eq!(ring_position(&r, [1.0, 1.0]), RingPos::Inside);
        assert_eq!(ring_position(&r, [0.0, 1.0]), RingPos::Boundary);
        assert_eq!(ring_position(&r, [2.0, 2.0]), RingPos::Boundary);
        assert_eq!(ring_position(&r, [1.0, 0.0]), RingPos::Boundary);
        assert_eq!(ring_position(&r, [3.0, 1.0]), RingPos::Outside);
        assert_eq!(ring_position(&r, [-1.0, 0.0]), RingPos::Outside);
        assert_eq!(ring_position(&r, [1.0, 2.5]), RingPos::Outside);
    }

    #[test]
    fn hole_boundary_is_inside_and_hole_interior_is_not() {
        let hole = vec![[0.5, 0.5], [1.5, 0.5], [1.5, 1.5], [0.5, 1.5], [0.5, 0.5]];
        let p = PolygonPart::new(vec![square(), hole]);
        assert!(p.contains([0.25, 0.25]));
        assert!(!p.contains([1.0, 1.0]));
        assert!(p.contains([0.5, 1.0]));
    }

    #[test]
    fn classify_rect_cases() {
        let p = PolygonPart::new(vec![square()]);
        let r = |a, b, c, d| Rect {
            min_lon: a,
            min_lat: b,
            max_lon: c,
            max_lat: d,
        };
        assert_eq!(p.classify_rect(&r(0.5, 0.5, 1.0, 1.0)), Cover::Full);
        assert_eq!(p.classify_rect(&r(1.5, 1.5, 2.5, 2.5)), Cover::Partial);
        assert_eq!(p.classify_rect(&r(2.0, 0.5, 3.0, 1.0)), Cover::Partial);
        assert_eq!(p.classify_rect(&r(2.1, 0.5, 3.0, 1.0)), Cover::Outside);
        // A rectangle enclosing the whole polygon touches its edges.
        assert_eq!(p.classify_rect(&r(-1.0, -1.0, 3.0, 3.0)), Cover::Partial);
    }

    #[test]
    fn segment_intersection_cases() {
        assert!(segments_intersect(
            [0.0, 0.0],
            [2.0, 2.0],
            [0.0, 2.0],
            [2.0, 0.0]
        ));
        assert!(segments_intersect(
            [0.0, 0.0],
            [2.0, 0.0],
            [1.0, 0.0],
            [1.0, 1.0]
        ));
        assert!(!segments_intersect(
            [0.0, 0.0],
            [1.0, 0.0],
            [2.0, 0.0],
            [3.0, 0.0]
        ));
        assert!(segments_intersect(
            [0.0, 0.0],
            [2.0, 0.0],
            [1.0, 0.0],
            [3.0, 0.0]
        ));
    }

    #[test]
    fn cap_rects_wrap_and_poles() {
        let (a, b) = cap_rects(Point::new(10.0, 179.99).unwrap(), 5_000.0);
        let b = b.unwrap();
        assert_eq!(a.max_lon, 180.0);
        assert_eq!(b.min_lon, -180.0);
        assert!(b.max_lon > -180.0 && b.max_lon < -179.9);
        let (a, b) = cap_rects(Point::new(89.99, 0.0).unwrap(), 5_000.0);
        assert!(b.is_none());
        assert_eq!((a.min_lon, a.max_lon, a.max_lat), (-180.0, 180.0, 90.0));
    }

    #[test]
    fn segment_distance_is_metric() {
        let p = Point::new(0.0, 0.0).unwrap();
        let d = LocalProj::new(p).segment_distance_m([0.01, -1.0], [0.01, 1.0]);
        assert!(
            (d - 0.01f64.to_radians() * EARTH_RADIUS_M).abs() < 0.01,
            "{d}"
        );
    }
}
