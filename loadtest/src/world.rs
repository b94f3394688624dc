//! The synthetic world a scenario runs in, all drawn from the seed: fences
//! around a city centre, employees with an office fence and a punch plan,
//! and devices that random-walk or drive routes through fences.
//!
//! Against a remote gateway the world can instead take the fences the
//! gateway really has (`--fences FILE`), so inside/outside punches aim at
//! real geometry.

use std::fmt::Write as _;

use fencegate_spatial::{FenceIndex, FenceSet, IndexOptions, LoadOptions, Point, TenantKey};

use crate::rng::Rng;
use crate::scenario::{PunchMix, Scenario};

/// Metres per degree of latitude (and of longitude at the equator).
const M_PER_DEG: f64 = 111_320.0;

/// Stream ids for [`Rng::derive`]: each kind of thing draws from its own
/// stream, so changing the number of fences does not reshuffle employees.
pub(crate) mod stream {
    pub const FENCE: u64 = 1;
    pub const EMPLOYEE: u64 = 2;
    pub const DEVICE: u64 = 3;
    /// Which target an employee punches first (`spread.rs`).
    pub const SPREAD_EMPLOYEE: u64 = 11;
    /// Whether, and where, an employee moves for later punches.
    pub const SPREAD_MOVE: u64 = 12;
    /// Which target a fleet device uses.
    pub const SPREAD_DEVICE: u64 = 13;
}

/// Fences of the load tenant, indexed for inside/outside checks.
#[derive(Debug)]
pub struct World {
    /// The tenant every device of the run belongs to.
    pub tenant: String,
    index: FenceIndex,
    tenant_key: TenantKey,
    /// The tenant's fences (positions in `index.fences()`).
    fences: Vec<usize>,
    /// A fence's centre or, for polygons, the middle of its bounding box.
    anchors: Vec<(f64, f64)>,
}

/// Writes the scenario's synthetic fences as a GeoJSON FeatureCollection,
/// in the form `fencegate serve` loads (`fences.path`).
pub fn synthetic_geojson(s: &Scenario) -> String {
    let w = &s.world;
    let mut out = String::from("{\"type\":\"FeatureCollection\",\"features\":[\n");
    for i in 0..w.fences {
        let mut r = Rng::derive(s.seed, stream::FENCE, i as u64);
        let dist = w.spread_km * 1_000.0 * r.f64().sqrt();
        let bearing = r.range(0.0, std::f64::consts::TAU);
        let (lat, lon) = offset(w.center[0], w.center[1], dist, bearing);
        let size = r.range(w.radius_m[0], w.radius_m[1]);
        if i > 0 {
            out.push_str(",\n");
        }
        if r.chance(w.polygon_share) {
            // A rotated rectangle, size × (0.5..1)·size half-extents.
            let (a, b) = (size, size * r.range(0.5, 1.0));
            let rot = r.range(0.0, std::f64::consts::PI);
            let corners = [(a, b), (-a, b), (-a, -b), (a, -b), (a, b)];
            let ring: Vec<String> = corners
                .iter()
                .map(|&(x, y)| {
                    let (dx, dy) = (x * rot.cos() - y * rot.sin(), x * rot.sin() + y * rot.cos());
                    let (plat, plon) = shift(lat, lon, dx, dy);
                    format!("[{plon:.7},{plat:.7}]")
                })
                .collect();
            let _ = write!(
                out,
                "{{\"type\":\"Feature\",\"geometry\":{{\"type\":\"Polygon\",\"coordinates\":[[{}]]}},\"properties\":{{\"id\":\"lt-f{i}\",\"tenant\":\"{}\",\"site\":\"lt-f{i}\"}}}}",
                ring.join(","),
                w.tenant
            );
        } else {
            let _ = write!(
                out,
                "{{\"type\":\"Feature\",\"geometry\":{{\"type\":\"Point\",\"coordinates\":[{lon:.7},{lat:.7}]}},\"properties\":{{\"id\":\"lt-f{i}\",\"tenant\":\"{}\",\"site\":\"lt-f{i}\",\"radius_m\":{size:.1}}}}}",
                w.tenant
            );
        }
    }
    out.push_str("\n]}\n");
    out
}

/// Writes attendance rules (`[attendance] rules`) for the scenario's
/// tenant: UTC, no fixed hours, out-of-range punches to approval, and one
/// site per synthetic fence (`lt-f<i>`, as the fences' `site` property)
/// with that fence's synthetic access points, so Wi-Fi punches verify.
pub fn synthetic_rules(s: &Scenario) -> String {
    let t = &s.world.tenant;
    let mut out = format!(
        "# Attendance rules for the load tenant, written by fencegate-load.\n[tenants.{t}]\ntimezone = \"UTC\"\nout_of_range = \"approval\"\n"
    );
    for i in 0..s.world.fences {
        let aps: Vec<String> = bssids(i)
            .iter()
            .map(|b| {
                let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
                format!("\"{}\"", hex.join(":"))
            })
            .collect();
        let _ = write!(
            out,
            "\n[tenants.{t}.sites.lt-f{i}]\nwifi = [{}]\n",
            aps.join(", ")
        );
    }
    out
}

/// Synthetic BSSIDs of fence `n`'s office access points (locally
/// administered addresses, unique per fence).
pub fn bssids(n: usize) -> Vec<[u8; 6]> {
    let b = (n as u32).to_be_bytes();
    (0..3u8)
        .map(|j| [0x02, 0x4c, b[1], b[2], b[3], j])
        .collect()
}

/// Moves `dist_m` from (lat, lon) on `bearing` (radians from north).
fn offset(lat: f64, lon: f64, dist_m: f64, bearing: f64) -> (f64, f64) {
    shift(lat, lon, dist_m * bearing.sin(), dist_m * bearing.cos())
}

/// Moves east `dx` and north `dy` metres (flat-earth, fine at city scale).
fn shift(lat: f64, lon: f64, dx: f64, dy: f64) -> (f64, f64) {
    let lat2 = lat + dy / M_PER_DEG;
    let lon2 = lon + dx / (M_PER_DEG * lat.to_radians().cos());
    (lat2, lon2)
}

impl World {
    /// The world of `s`, with fences from `geojson` (the synthetic ones, or
    /// the target's own file).
    pub fn build(s: &Scenario, geojson: &str) -> anyhow::Result<Self> {
        let set = FenceSet::from_geojson_str(geojson, &LoadOptions::default())
            .map_err(|e| anyhow::anyhow!("fences: {e}"))?;
        let index = FenceIndex::build(set, &IndexOptions::default());
        let tenant = s.world.tenant.clone();
        let Some(tenant_key) = index.tenant(&tenant) else {
            anyhow::bail!(
                "fences: none belongs to tenant '{tenant}'; give the tenant's fences (--fences) or set world.tenant"
            );
        };
        let mut fences = Vec::new();
        let mut anchors = Vec::new();
        for (i, f) in index.fences().iter().enumerate() {
            if f.tenant() != tenant_key {
                continue;
            }
            let (r, _) = f.bounding_rects();
            let anchor = match f.shape() {
                fencegate_spatial::Shape::Circle(c) => (c.center().lat(), c.center().lon()),
                _ => ((r.min_lat + r.max_lat) / 2.0, (r.min_lon + r.max_lon) / 2.0),
            };
            fences.push(i);
            anchors.push(anchor);
        }
        Ok(Self {
            tenant,
            index,
            tenant_key,
            fences,
            anchors,
        })
    }

    /// Number of the tenant's fences.
    pub fn fence_count(&self) -> usize {
        self.fences.len()
    }

    /// Whether any of the tenant's fences contains the point.
    pub fn inside_any(&self, lat: f64, lon: f64) -> bool {
        Point::new(lat, lon)
            .ok()
            .and_then(|p| self.index.contains_any(p, Some(self.tenant_key)))
            .is_some()
    }

    /// A point inside fence `n` (rejection sampling in its bounding box;
    /// the anchor if the shape is too thin to hit).
    pub fn point_inside(&self, n: usize, r: &mut Rng) -> (f64, f64) {
        let f = &self.index.fences()[self.fences[n]];
        let (b, _) = f.bounding_rects();
        for _ in 0..64 {
            let lat = r.range(b.min_lat, b.max_lat);
            let lon = r.range(b.min_lon, b.max_lon);
            if Point::new(lat, lon).is_ok_and(|p| f.contains(p)) {
                return (lat, lon);
            }
        }
        self.anchors[n]
    }

    /// A point outside every fence of the tenant, a few hundred metres to a
    /// few kilometres from fence `n` (the employee is at home, or lost).
    pub fn point_outside(&self, n: usize, r: &mut Rng) -> Option<(f64, f64)> {
        let (lat, lon) = self.anchors[n];
        for attempt in 0..64 {
            let dist = r.range(600.0, 3_000.0) * (1.0 + attempt as f64 / 8.0);
            let (plat, plon) = offset(lat, lon, dist, r.range(0.0, std::f64::consts::TAU));
            if !self.inside_any(plat, plon) {
                return Some((plat, plon));
            }
        }
        None
    }

    /// The anchor (centre) of fence `n`.
    pub fn anchor(&self, n: usize) -> (f64, f64) {
        self.anchors[n]
    }

    /// The access points of fence `n`'s office: the synthetic ones of
    /// the fence it was made as (`lt-f<i>`), else those of its position.
    pub fn bssids(&self, n: usize) -> Vec<[u8; 6]> {
        let id = self.index.fences()[self.fences[n]].id();
        let i = id
            .strip_prefix("lt-f")
            .and_then(|x| x.parse().ok())
            .unwrap_or(n);
        bssids(i)
    }
}

/// What kind of punch an employee makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PunchClass {
    /// GPS inside the office fence.
    Inside,
    /// GPS outside every fence.
    Outside,
    /// Wi-Fi with the office's BSSIDs.
    Wifi,
    /// Device clock an hour ahead: refused as `FutureTimestamp`.
    FutureClock,
    /// Wi-Fi without BSSIDs: refused as `MissingField`.
    NoBssids,
}

impl PunchClass {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Inside => "inside",
            Self::Outside => "outside",
            Self::Wifi => "wifi",
            Self::FutureClock => "invalid-future-clock",
            Self::NoBssids => "invalid-no-bssids",
        }
    }

    /// Whether the gateway must refuse it and keep no record.
    pub fn is_invalid(self) -> bool {
        matches!(self, Self::FutureClock | Self::NoBssids)
    }
}

/// Everything one employee does, drawn from the seed.
#[derive(Debug, Clone)]
pub struct EmployeePlan {
    /// Which punch.
    pub class: PunchClass,
    /// Office fence (index into the tenant's fences).
    pub fence: usize,
    /// GPS position, for GPS punches.
    pub position: Option<(f64, f64)>,
    /// Reported accuracy, metres.
    pub accuracy_m: f32,
    /// Simulated seconds after the first punch's ack that the employee
    /// punches again, if they do.
    pub repeat_after_s: Option<f64>,
    /// Simulated seconds after a lost ack before the resend, if the ack of
    /// the first attempt is lost.
    pub lost_ack_resend_s: Option<f64>,
    /// Randomness for ids and jitter.
    pub rng: Rng,
}

/// Draws employee `i`'s plan.
pub fn employee(world: &World, seed: u64, mix: &PunchMix, i: u64) -> EmployeePlan {
    let mut r = Rng::derive(seed, stream::EMPLOYEE, i);
    let fence = r.below(world.fence_count() as u64) as usize;
    let x = r.f64();
    let mut class = if x < mix.inside {
        PunchClass::Inside
    } else if x < mix.inside + mix.outside {
        PunchClass::Outside
    } else if x < mix.inside + mix.outside + mix.wifi {
        PunchClass::Wifi
    } else if r.chance(0.5) {
        PunchClass::FutureClock
    } else {
        PunchClass::NoBssids
    };
    let position = match class {
        PunchClass::Inside | PunchClass::FutureClock => Some(world.point_inside(fence, &mut r)),
        PunchClass::Outside => match world.point_outside(fence, &mut r) {
            Some(p) => Some(p),
            None => {
                // The fences blanket the area: nowhere is outside.
                class = PunchClass::Inside;
                Some(world.point_inside(fence, &mut r))
            }
        },
        PunchClass::Wifi | PunchClass::NoBssids => None,
    };
    let accuracy_m = r.range(3.0, 25.0) as f32;
    let valid = !class.is_invalid();
    let repeat_after_s = (valid && r.chance(mix.repeat)).then(|| r.range(20.0, 240.0));
    let lost_ack_resend_s = (valid && r.chance(mix.lost_ack)).then(|| r.range(1.0, 3.0));
    EmployeePlan {
        class,
        fence,
        position,
        accuracy_m,
        repeat_after_s,
        lost_ack_resend_s,
        rng: r,
    }
}

/// The arrival curve: maps a quantile to a simulated second by inverting
/// the piecewise-linear CDF.
#[derive(Debug, Clone)]
pub struct Curve {
    points: Vec<[f64; 2]>,
}

impl Curve {
    /// The scenario's curve (uniform over `window_s` when none is given).
    pub fn new(cdf: &[[f64; 2]], window_s: f64) -> Self {
        let points = if cdf.is_empty() {
            vec![[0.0, 0.0], [window_s, 1.0]]
        } else {
            cdf.to_vec()
        };
        Self { points }
    }

    /// The simulated second by which a share `q` (0..=1) of punches has
    /// arrived.
    pub fn at(&self, q: f64) -> f64 {
        for w in self.points.windows(2) {
            let ([t0, c0], [t1, c1]) = (w[0], w[1]);
            if q <= c1 {
                if c1 <= c0 {
                    return t0;
                }
                return t0 + (t1 - t0) * (q - c0) / (c1 - c0);
            }
        }
        self.points.last().map_or(0.0, |p| p[0])
    }

    /// Employee `i` of `n`'s intended simulated send second: stratified
    /// quantiles, so the curve is followed closely even for small `n`, and
    /// employees arrive in index order.
    pub fn employee_time(&self, i: u64, n: u64, seed: u64) -> f64 {
        let jitter = Rng::derive(seed, 99, i).f64();
        self.at((i as f64 + jitter) / n as f64)
    }
}

/// How a device moves.
#[derive(Debug, Clone)]
enum Motion {
    /// Wanders around `home`, turning back beyond `roam_m`.
    Walk {
        home: (f64, f64),
        roam_m: f64,
        heading: f64,
    },
    /// Drives back and forth between `a` and `b`, through a fence.
    Route {
        a: (f64, f64),
        b: (f64, f64),
        len_m: f64,
        at_m: f64,
        forward: bool,
    },
}

/// A device's position over time.
#[derive(Debug, Clone)]
pub struct Mover {
    /// Current latitude.
    pub lat: f64,
    /// Current longitude.
    pub lon: f64,
    speed: f64,
    motion: Motion,
}

/// Draws device `i`'s motion.
pub fn device(world: &World, seed: u64, route_share: f64, speed: [f64; 2], i: u64) -> Mover {
    let mut r = Rng::derive(seed, stream::DEVICE, i);
    let fence = r.below(world.fence_count() as u64) as usize;
    let (clat, clon) = world.anchor(fence);
    let v = r.range(speed[0], speed[1].max(speed[0] + f64::EPSILON));
    if r.chance(route_share) {
        // A straight road through the fence's centre, 1.5 km each side.
        let bearing = r.range(0.0, std::f64::consts::PI);
        let a = offset(clat, clon, 1_500.0, bearing);
        let b = offset(clat, clon, 1_500.0, bearing + std::f64::consts::PI);
        let at = r.range(0.0, 3_000.0);
        let mut m = Mover {
            lat: a.0,
            lon: a.1,
            speed: v,
            motion: Motion::Route {
                a,
                b,
                len_m: 3_000.0,
                at_m: at,
                forward: r.chance(0.5),
            },
        };
        m.place_on_route();
        m
    } else {
        let (lat, lon) = offset(clat, clon, r.range(0.0, 1_500.0), r.range(0.0, 6.3));
        Mover {
            lat,
            lon,
            speed: v,
            motion: Motion::Walk {
                home: (clat, clon),
                roam_m: 2_000.0,
                heading: r.range(0.0, std::f64::consts::TAU),
            },
        }
    }
}

impl Mover {
    fn place_on_route(&mut self) {
        if let Motion::Route {
            a, b, len_m, at_m, ..
        } = &self.motion
        {
            let f = at_m / len_m;
            self.lat = a.0 + (b.0 - a.0) * f;
            self.lon = a.1 + (b.1 - a.1) * f;
        }
    }

    /// Advances `dt_s` seconds.
    pub fn step(&mut self, dt_s: f64, r: &mut Rng) {
        let d = self.speed * dt_s;
        match &mut self.motion {
            Motion::Walk {
                home,
                roam_m,
                heading,
            } => {
                *heading += r.range(-0.3, 0.3);
                let (dx, dy) = (d * heading.sin(), d * heading.cos());
                let (lat, lon) = shift(self.lat, self.lon, dx, dy);
                self.lat = lat;
                self.lon = lon;
                let north = (home.0 - self.lat) * M_PER_DEG;
                let east = (home.1 - self.lon) * M_PER_DEG * self.lat.to_radians().cos();
                if north.hypot(east) > *roam_m {
                    *heading = east.atan2(north) + r.range(-0.5, 0.5);
                }
            }
            Motion::Route {
                len_m,
                at_m,
                forward,
                ..
            } => {
                let mut at = *at_m + if *forward { d } else { -d };
                if at > *len_m {
                    at = 2.0 * *len_m - at;
                    *forward = false;
                } else if at < 0.0 {
                    at = -at;
                    *forward = true;
                }
                *at_m = at.clamp(0.0, *len_m);
                self.place_on_route();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Overrides;

    fn scenario(fences: usize) -> Scenario {
        let text = format!(
            "name = \"w\"\nduration_s = 5\n[world]\nfences = {fences}\n[punch]\nemployees = 10\nwindow_s = 100\n"
        );
        Scenario::parse(&text, "w.toml", &Overrides::default()).unwrap()
    }

    #[test]
    fn synthetic_fences_load_and_are_seeded() {
        let s = scenario(50);
        let g = synthetic_geojson(&s);
        assert_eq!(g, synthetic_geojson(&s), "same seed, same fences");
        let w = World::build(&s, &g).unwrap();
        assert_eq!(w.fence_count(), 50);
    }

    #[test]
    fn inside_and_outside_points_are_what_they_claim() {
        let s = scenario(40);
        let w = World::build(&s, &synthetic_geojson(&s)).unwrap();
        let mut r = Rng::new(3);
        for n in 0..40 {
            let (lat, lon) = w.point_inside(n, &mut r);
            assert!(w.inside_any(lat, lon), "fence {n}");
            let (lat, lon) = w.point_outside(n, &mut r).unwrap();
            assert!(!w.inside_any(lat, lon), "fence {n}");
        }
    }

    #[test]
    fn employee_mix_follows_the_shares() {
        let s = scenario(40);
        let w = World::build(&s, &synthetic_geojson(&s)).unwrap();
        let mix = PunchMix::default();
        let n = 4_000;
        let mut inside = 0;
        let mut invalid = 0;
        for i in 0..n {
            let e = employee(&w, 7, &mix, i);
            inside += u32::from(e.class == PunchClass::Inside);
            invalid += u32::from(e.class.is_invalid());
            assert_eq!(
                e.position.is_some(),
                !matches!(e.class, PunchClass::Wifi | PunchClass::NoBssids)
            );
        }
        let share = f64::from(inside) / n as f64;
        assert!((share - mix.inside).abs() < 0.03, "inside share {share}");
        let share = f64::from(invalid) / n as f64;
        assert!((share - mix.invalid).abs() < 0.01, "invalid share {share}");
    }

    #[test]
    fn curve_inverts_the_cdf() {
        let c = Curve::new(&[[0.0, 0.0], [100.0, 0.5], [110.0, 1.0]], 110.0);
        assert_eq!(c.at(0.0), 0.0);
        assert!((c.at(0.25) - 50.0).abs() < 1e-9);
        assert!((c.at(0.75) - 105.0).abs() < 1e-9);
        assert_eq!(c.at(1.0), 110.0);
        let times: Vec<f64> = (0..100).map(|i| c.employee_time(i, 100, 1)).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "index order is time order"
        );
    }

    #[test]
    fn route_devices_cross_their_fence() {
        let s = scenario(20);
        let w = World::build(&s, &synthetic_geojson(&s)).unwrap();
        let mut m = device(&w, 1, 1.0, [20.0, 20.0], 0);
        let mut r = Rng::new(1);
        let mut changes = 0;
        let mut was = w.inside_any(m.lat, m.lon);
        for _ in 0..2_000 {
            m.step(1.0, &mut r);
            let now = w.inside_any(m.lat, m.lon);
            changes += u32::from(now != was);
            was = now;
        }
        assert!(
            changes >= 4,
            "a route through a fence enters and leaves it ({changes})"
        );
    }
}
