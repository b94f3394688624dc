//! Points on the sphere, great-circle distances and the H3 cell of a point.

use h3o::{CellIndex, LatLng, Resolution};

/// Mean Earth radius in metres (IUGG R1), the sphere every distance in this crate is measured on.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A validated WGS 84 position: latitude in `-90..=90`, longitude in `-180..=180`, both finite.
///
/// Construction is the only place coordinates are checked, so every query on a `Point` can
/// skip the checks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    lat: f64,
    lon: f64,
}

/// Why a coordinate pair is not a [`Point`]. Does not allocate, so it is fine on the hot path.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum PointError {
    /// Latitude or longitude is NaN or infinite.
    #[error("coordinates ({lat}, {lon}) are not finite numbers")]
    NotFinite {
        /// The latitude given.
        lat: f64,
        /// The longitude given.
        lon: f64,
    },
    /// Latitude is outside `-90..=90` degrees.
    #[error("latitude {0} is outside -90..=90 degrees")]
    Latitude(f64),
    /// Longitude is outside `-180..=180` degrees.
    #[error("longitude {0} is outside -180..=180 degrees")]
    Longitude(f64),
}

impl Point {
    /// Checks and builds a point from degrees (latitude first, as devices report it).
    pub fn new(lat: f64, lon: f64) -> Result<Self, PointError> {
        if !lat.is_finite() || !lon.is_finite() {
            return Err(PointError::NotFinite { lat, lon });
        }
        if !(-90.0..=90.0).contains(&lat) {
            return Err(PointError::Latitude(lat));
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(PointError::Longitude(lon));
        }
        Ok(Self { lat, lon })
    }

    /// Latitude in degrees.
    #[inline]
    pub fn lat(self) -> f64 {
        self.lat
    }

    /// Longitude in degrees.
    #[inline]
    pub fn lon(self) -> f64 {
        self.lon
    }

    /// Unit vector of the point on the sphere; chord lengths between unit vectors give
    /// great-circle containment tests without per-fence trigonometry.
    #[inline]
    pub(crate) fn unit(self) -> [f64; 3] {
        unit(self.lat, self.lon)
    }
}

#[inline]
pub(crate) fn unit(lat: f64, lon: f64) -> [f64; 3] {
    let (sp, cp) = lat.to_radians().sin_cos();
    let (sl, cl) = lon.to_radians().sin_cos();
    [cp * cl, cp * sl, sp]
}

#[inline]
pub(crate) fn chord2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let dx = a[0] - b[0];
    let dy = a[1] - b[1];
    let dz = a[2] - b[2];
    dx * dx + dy * dy + dz * dz
}

/// Squared chord (on the unit sphere) that subtends a great-circle distance of `m` metres.
///
/// `chord = 2 sin(d / 2R)` is monotonic in `d` on `0..=πR`, so `chord² <= chord2_of(r)` is the
/// same predicate as `haversine <= r`, only cheaper and better conditioned for small `r`.
#[inline]
pub(crate) fn chord2_of_m(m: f64) -> f64 {
    let half = (m / EARTH_RADIUS_M * 0.5).min(std::f64::consts::FRAC_PI_2);
    let c = 2.0 * half.sin();
    c * c
}

/// Great-circle distance in metres from a squared unit chord.
#[inline]
pub(crate) fn m_of_chord2(c2: f64) -> f64 {
    2.0 * EARTH_RADIUS_M * (c2.sqrt() * 0.5).min(1.0).asin()
}

/// Great-circle (haversine) distance in metres between two points on the
/// [`EARTH_RADIUS_M`] sphere.
pub fn haversine_m(a: Point, b: Point) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dp = p2 - p1;
    let dl = (b.lon - a.lon).to_radians();
    let h = (dp * 0.5).sin().powi(2) + p1.cos() * p2.cos() * (dl * 0.5).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// The H3 cell that contains `point` at `resolution`, for repeat suppression ("has the device
/// left its cell?"). Costs about half a microsecond, so compute it once per ping.
pub fn cell_of(point: Point, resolution: Resolution) -> CellIndex {
    // A validated Point is always finite, the only thing LatLng::new rejects.
    LatLng::new(point.lat, point.lon)
        .map(|ll| ll.to_cell(resolution))
        .unwrap_or_else(|_| unreachable!("Point coordinates are finite by construction"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_coordinates() {
        assert!(matches!(
            Point::new(f64::NAN, 0.0),
            Err(PointError::NotFinite { .. })
        ));
        assert_eq!(Point::new(90.5, 0.0), Err(PointError::Latitude(90.5)));
        assert_eq!(Point::new(0.0, -180.1), Err(PointError::Longitude(-180.1)));
        assert!(Point::new(-90.0, 180.0).is_ok());
    }

    #[test]
    fn haversine_matches_known_distance() {
        // A quarter of the equator, and equator to pole, are both πR/2.
        let quarter = std::f64::consts::FRAC_PI_2 * EARTH_RADIUS_M;
        let o = Point::new(0.0, 0.0).unwrap();
        assert!((haversine_m(o, Point::new(0.0, 90.0).unwrap()) - quarter).abs() < 1e-6);
        assert!((haversine_m(o, Point::new(90.0, 0.0).unwrap()) - quarter).abs() < 1e-6);
        // Across the antimeridian the short way round.
        let d = haversine_m(
            Point::new(0.0, 179.9).unwrap(),
            Point::new(0.0, -179.9).unwrap(),
        );
        assert!(
            (d - 0.2f64.to_radians() * EARTH_RADIUS_M).abs() < 1e-6,
            "{d}"
        );
        // One degree of latitude on this sphere.
        let d = haversine_m(Point::new(0.0, 0.0).unwrap(), Point::new(1.0, 0.0).unwrap());
        assert!((d - EARTH_RADIUS_M.to_radians()).abs() < 1e-6);
    }

    #[test]
    fn chord_round_trips_distance() {
        for m in [0.5, 50.0, 5_000.0, 1.0e6] {
            assert!((m_of_chord2(chord2_of_m(m)) - m).abs() < 1e-6 * m.max(1.0));
        }
        let a = Point::new(31.23, 121.47).unwrap();
        let b = Point::new(31.24, 121.48).unwrap();
        let via_chord = m_of_chord2(chord2(&a.unit(), &b.unit()));
        assert!((via_chord - haversine_m(a, b)).abs() < 1e-6);
    }

    #[test]
    fn cell_of_is_stable_and_contains_point() {
        let p = Point::new(31.2304, 121.4737).unwrap();
        let c = cell_of(p, Resolution::Nine);
        assert_eq!(c.resolution(), Resolution::Nine);
        assert_eq!(c, cell_of(p, Resolution::Nine));
        assert_eq!(
            c.parent(Resolution::Five),
            Some(cell_of(p, Resolution::Five))
        );
    }
}
