//! Shared fixtures for fencegate's criterion benches (see `benches/benches/`).
//!
//! Synthetic fence sets clustered around real city centres, and probe points mostly near
//! fences, both deterministic for a seed so runs compare like with like.

pub mod clock;

use std::fmt::Write as _;

use fencegate_spatial::{FenceSet, LoadOptions, Point};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Metres per degree of latitude on the fencegate sphere.
const M_PER_DEG: f64 = 111_195.08;

/// City centres (lat, lon) the synthetic fences cluster around: where attendance-system
/// tenants actually have offices, factories and depots.
pub const CITIES: &[(&str, f64, f64)] = &[
    ("Shanghai", 31.2304, 121.4737),
    ("Beijing", 39.9042, 116.4074),
    ("Shenzhen", 22.5431, 114.0579),
    ("Guangzhou", 23.1291, 113.2644),
    ("Hangzhou", 30.2741, 120.1551),
    ("Chengdu", 30.5728, 104.0668),
    ("Wuhan", 30.5928, 114.3055),
    ("Nanjing", 32.0603, 118.7969),
    ("Suzhou", 31.2990, 120.5853),
    ("Tianjin", 39.3434, 117.3616),
    ("Chongqing", 29.4316, 106.9123),
    ("Xi'an", 34.3416, 108.9398),
    ("Hong Kong", 22.3193, 114.1694),
    ("Taipei", 25.0330, 121.5654),
    ("Singapore", 1.3521, 103.8198),
    ("Tokyo", 35.6762, 139.6503),
    ("Osaka", 34.6937, 135.5023),
    ("Seoul", 37.5665, 126.9780),
    ("Bangkok", 13.7563, 100.5018),
    ("Jakarta", -6.2088, 106.8456),
    ("Manila", 14.5995, 120.9842),
    ("Ho Chi Minh City", 10.8231, 106.6297),
    ("Kuala Lumpur", 3.1390, 101.6869),
    ("Mumbai", 19.0760, 72.8777),
    ("Bengaluru", 12.9716, 77.5946),
    ("Delhi", 28.7041, 77.1025),
    ("Dubai", 25.2048, 55.2708),
    ("Istanbul", 41.0082, 28.9784),
    ("Berlin", 52.5200, 13.4050),
    ("Munich", 48.1351, 11.5820),
    ("Frankfurt", 50.1109, 8.6821),
    ("Paris", 48.8566, 2.3522),
    ("London", 51.5074, -0.1278),
    ("Amsterdam", 52.3676, 4.9041),
    ("Madrid", 40.4168, -3.7038),
    ("Milan", 45.4642, 9.1900),
    ("Warsaw", 52.2297, 21.0122),
    ("Stockholm", 59.3293, 18.0686),
    ("Helsinki", 60.1699, 24.9384),
    ("Moscow", 55.7558, 37.6173),
    ("Cairo", 30.0444, 31.2357),
    ("Lagos", 6.5244, 3.3792),
    ("Nairobi", -1.2921, 36.8219),
    ("Johannesburg", -26.2041, 28.0473),
    ("New York", 40.7128, -74.0060),
    ("Chicago", 41.8781, -87.6298),
    ("Los Angeles", 34.0522, -118.2437),
    ("San Francisco", 37.7749, -122.4194),
    ("Seattle", 47.6062, -122.3321),
    ("Toronto", 43.6532, -79.3832),
    ("Mexico City", 19.4326, -99.1332),
    ("São Paulo", -23.5505, -46.6333),
    ("Buenos Aires", -34.6037, -58.3816),
    ("Santiago", -33.4489, -70.6693),
    ("Sydney", -33.8688, 151.2093),
    ("Melbourne", -37.8136, 144.9631),
    ("Auckland", -36.8485, 174.7633),
    ("Anchorage", 61.2181, -149.9003),
    ("Reykjavík", 64.1466, -21.9426),
    ("Suva", -18.1248, 178.4501),
];

/// Number of tenants in a synthetic set: fences are dealt to `tenant-0 .. tenant-9` in turn.
pub const TENANTS: usize = 10;

/// Name of synthetic tenant `i`.
pub fn tenant_name(i: usize) -> String {
    format!("tenant-{i}")
}

/// Log-uniform size in metres between 50 and 5000: most fences are a building or a campus,
/// a few are an industrial park.
fn size_m(rng: &mut StdRng) -> f64 {
    (50f64.ln() + rng.random::<f64>() * (5000f64.ln() - 50f64.ln())).exp()
}

/// A fence centre: a city centre plus a roughly normal offset with a ~20 km standard deviation (a metro area).
fn centre(rng: &mut StdRng) -> (f64, f64) {
    let (_, lat, lon) = CITIES[rng.random_range(0..CITIES.len())];
    let g = |rng: &mut StdRng| (0..4).map(|_| rng.random::<f64>() - 0.5).sum::<f64>() * 35_000.0;
    let (north, east) = (g(rng), g(rng));
    (
        lat + north / M_PER_DEG,
        lon + east / (M_PER_DEG * lat.to_radians().cos()),
    )
}

/// A GeoJSON FeatureCollection of `n` valid fences: 70 % circles of 50–5000 m, 30 % star-shaped
/// (generally concave) polygons of 4–64 vertices of the same sizes, clustered around
/// [`CITIES`], dealt to [`TENANTS`] tenants.
pub fn synthetic_fences_geojson(n: usize, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut s = String::with_capacity(n * 400);
    s.push_str("{\"type\":\"FeatureCollection\",\"features\":[\n");
    for i in 0..n {
        if i > 0 {
            s.push_str(",\n");
        }
        let (lat, lon) = centre(&mut rng);
        let size = size_m(&mut rng);
        let tenant = tenant_name(i % TENANTS);
        if rng.random_bool(0.7) {
            let _ = write!(
                s,
                "{{\"type\":\"Feature\",\"geometry\":{{\"type\":\"Point\",\"coordinates\":[{lon:.7},{lat:.7}]}},\"properties\":{{\"id\":\"f{i}\",\"tenant\":\"{tenant}\",\"site\":\"site-{}\",\"radius_m\":{size:.1}}}}}",
                i / 7
            );
        } else {
            let k = rng.random_range(4..=64usize);
            let kx = M_PER_DEG * lat.to_radians().cos();
            let _ = write!(
                s,
                "{{\"type\":\"Feature\",\"geometry\":{{\"type\":\"Polygon\",\"coordinates\":[["
            );
            let mut first = String::new();
            for v in 0..k {
                // Sorted angles around the centre keep the ring simple; radii vary for concavity.
                let ang = std::f64::consts::TAU * (v as f64 + 0.3 * rng.random::<f64>()) / k as f64;
                let r = size * (0.45 + 0.55 * rng.random::<f64>());
                let pos = format!(
                    "[{:.7},{:.7}]",
                    lon + r * ang.cos() / kx,
                    lat + r * ang.sin() / M_PER_DEG
                );
                if v == 0 {
                    first.clone_from(&pos);
                }
                s.push_str(&pos);
                s.push(',');
            }
            s.push_str(&first);
            let _ = write!(
                s,
                "]]}},\"properties\":{{\"id\":\"f{i}\",\"tenant\":\"{tenant}\",\"site\":\"site-{}\"}}}}",
                i / 7
            );
        }
    }
    s.push_str("\n]}\n");
    s
}

/// [`synthetic_fences_geojson`] loaded and validated with the default limits.
pub fn synthetic_fences(n: usize, seed: u64) -> FenceSet {
    FenceSet::from_geojson_str(&synthetic_fences_geojson(n, seed), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("synthetic fences must be valid: {e}"))
}

/// A query: a position and the tenant (index into [`tenant_name`]) asking.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    /// Where the device is.
    pub point: Point,
    /// The tenant whose fences to test.
    pub tenant: usize,
}

/// `n` probes: 80 % within 1.5 fence sizes of a random fence (the tenant is that fence's),
/// 20 % anywhere within ~10 km of a city (random tenant).
pub fn synthetic_points(n: usize, seed: u64, fences: &FenceSet) -> Vec<Probe> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_9e37_79b9_7f4a);
    let tenant_of = |name: &str| {
        name.strip_prefix("tenant-")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    (0..n)
        .map(|_| {
            if !fences.is_empty() && rng.random_bool(0.8) {
                let f = &fences.fences()[rng.random_range(0..fences.len())];
                let (r, _) = f.bounding_rects();
                let (clat, clon) = ((r.min_lat + r.max_lat) / 2.0, (r.min_lon + r.max_lon) / 2.0);
                let (hlat, hlon) = (
                    (r.max_lat - r.min_lat) * 0.75,
                    (r.max_lon - r.min_lon) * 0.75,
                );
                let lat = clat + (rng.random::<f64>() * 2.0 - 1.0) * hlat;
                let lon = clon + (rng.random::<f64>() * 2.0 - 1.0) * hlon;
                Probe {
                    point: Point::new(lat.clamp(-90.0, 90.0), lon.clamp(-180.0, 180.0))
                        .expect("in range"),
                    tenant: tenant_of(f.tenant_name()),
                }
            } else {
                let (_, lat, lon) = CITIES[rng.random_range(0..CITIES.len())];
                let (n, e) = (
                    (rng.random::<f64>() - 0.5) * 20_000.0,
                    (rng.random::<f64>() - 0.5) * 20_000.0,
                );
                Probe {
                    point: Point::new(
                        lat + n / M_PER_DEG,
                        lon + e / (M_PER_DEG * lat.to_radians().cos()),
                    )
                    .expect("in range"),
                    tenant: rng.random_range(0..TENANTS),
                }
            }
        })
        .collect()
}

/// The probes as the `fencegate locate` input CSV (`id,lat,lon`).
pub fn points_csv(probes: &[Probe]) -> String {
    let mut s = String::with_capacity(probes.len() * 32 + 16);
    s.push_str("id,lat,lon\n");
    for (i, p) in probes.iter().enumerate() {
        let _ = writeln!(s, "p{i},{:.7},{:.7}", p.point.lat(), p.point.lon());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_sets_are_valid_deterministic_and_mixed() {
        let a = synthetic_fences(2_000, 7);
        assert_eq!(a.len(), 2_000);
        assert_eq!(
            synthetic_fences_geojson(50, 7),
            synthetic_fences_geojson(50, 7)
        );
        let circles = a
            .fences()
            .iter()
            .filter(|f| f.kind() == fencegate_spatial::FenceKind::Circle)
            .count();
        assert!((1_250..1_550).contains(&circles), "{circles}");
        assert_eq!(a.tenants().len(), TENANTS);
        let pts = synthetic_points(1_000, 7, &a);
        assert_eq!(pts.len(), 1_000);
        let csv = points_csv(&pts[..2]);
        assert!(csv.starts_with("id,lat,lon\np0,"));
    }
}
