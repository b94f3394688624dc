//! GeoJSON fence files: parsing and validation that reports every problem at once.

use std::collections::HashMap;
use std::fmt;

use geo::kernels::Orientation;
use geojson::{Feature, GeometryValue, JsonObject, Position};

use crate::fence::{Circle, Fence, FenceKind, Shape, TenantKey};
use crate::geom::{LonLat, PolygonPart, RingPos, orient, ring_position, segments_intersect};
use crate::point::Point;

/// Limits applied while loading fences.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// Smallest circle radius accepted, in metres. Below GPS accuracy a circle only produces
    /// out-of-range punches.
    ///
    /// 50 m unless set, the smallest radius WeCom/DingTalk attendance allow.
    pub min_radius_m: f64,
    /// Largest circle radius accepted, in metres.
    ///
    /// 5000 m unless set.
    pub max_radius_m: f64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            min_radius_m: 50.0,
            max_radius_m: 5000.0,
        }
    }
}

/// A problem with one feature of a fence file.
#[derive(Clone, Debug, PartialEq)]
pub struct FenceError {
    /// Zero-based index of the feature in the `features` array.
    pub feature: usize,
    /// The fence id, when the feature has a usable one.
    pub fence_id: Option<String>,
    /// What is wrong.
    pub kind: FenceErrorKind,
}

impl fmt::Display for FenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fence_id {
            Some(id) => write!(
                f,
                "feature {} (fence '{}'): {}",
                self.feature, id, self.kind
            ),
            None => write!(f, "feature {}: {}", self.feature, self.kind),
        }
    }
}

impl std::error::Error for FenceError {}

/// What is wrong with a feature. Rings are numbered per polygon part: ring 0 is the shell,
/// ring 1.. the holes; parts are numbered for MultiPolygons.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FenceErrorKind {
    /// The feature is not valid GeoJSON.
    #[error("not a valid GeoJSON Feature: {0}")]
    BadFeature(String),
    /// `properties.id` is absent or empty.
    #[error("missing property 'id' (a string, unique within the tenant)")]
    MissingId,
    /// `properties.tenant` is absent or empty.
    #[error("missing property 'tenant' (the tenant that owns the fence)")]
    MissingTenant,
    /// A property has the wrong JSON type.
    #[error("property '{name}' must be {expected}")]
    BadProperty {
        /// The property name.
        name: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// Another feature of the same tenant already uses this id.
    #[error("duplicate id in tenant '{tenant}' (first used by feature {first_feature})")]
    DuplicateId {
        /// The tenant.
        tenant: String,
        /// The feature that used the id first.
        first_feature: usize,
    },
    /// The feature has no geometry.
    #[error("has no geometry; use a Polygon, a MultiPolygon or a Point with 'radius_m'")]
    MissingGeometry,
    /// The geometry type cannot be a fence.
    #[error(
        "geometry type {0} cannot be a fence; use a Polygon, a MultiPolygon or a Point with 'radius_m'"
    )]
    UnsupportedGeometry(&'static str),
    /// A `Point` without `radius_m`.
    #[error("a Point fence needs a numeric 'radius_m' property (metres)")]
    MissingRadius,
    /// `radius_m` on a polygon, where it would be silently ignored.
    #[error("'radius_m' only applies to Point features; remove it from this polygon")]
    RadiusOnPolygon,
    /// Radius below the configured minimum.
    #[error("radius {radius} m is below the minimum {min} m")]
    RadiusTooSmall {
        /// The radius given.
        radius: f64,
        /// The configured minimum.
        min: f64,
    },
    /// Radius above the configured maximum.
    #[error("radius {radius} m is above the maximum {max} m")]
    RadiusTooLarge {
        /// The radius given.
        radius: f64,
        /// The configured maximum.
        max: f64,
    },
    /// A position is not finite or out of range.
    #[error("{at}: position [{lon}, {lat}] is out of range (lon -180..=180, lat -90..=90)")]
    CoordinateOutOfRange {
        /// Where, e.g. "ring 0 position 3".
        at: String,
        /// The longitude given.
        lon: f64,
        /// The latitude given.
        lat: f64,
    },
    /// A position has fewer than two numbers.
    #[error("{at}: a position needs [lon, lat]")]
    ShortPosition {
        /// Where.
        at: String,
    },
    /// A polygon or MultiPolygon with nothing in it.
    #[error("has no rings")]
    EmptyPolygon,
    /// A ring with fewer than 4 positions (a triangle needs 3 + the closing one).
    #[error(
        "{at} has {positions} positions; a ring needs at least 4 (the last repeating the first)"
    )]
    RingTooShort {
        /// Which ring.
        at: String,
        /// How many positions it has.
        positions: usize,
    },
    /// A ring whose last position differs from its first.
    #[error("{at} is not closed: its last position must repeat the first")]
    RingNotClosed {
        /// Which ring.
        at: String,
    },
    /// A ring that folds back on itself or crosses itself or another ring.
    #[error("{at}: edges intersect near [{lon}, {lat}]; fences must not self-intersect")]
    SelfIntersection {
        /// Which edges, e.g. "ring 0 edges 1 and 4".
        at: String,
        /// Longitude near the intersection.
        lon: f64,
        /// Latitude near the intersection.
        lat: f64,
    },
    /// A hole that lies outside its shell: it cuts nothing, and its edges would count as the
    /// fence's boundary where the fence is not.
    #[error("{at} is a hole outside its shell; move it inside the shell (ring 0) or remove it")]
    HoleOutsideShell {
        /// Which ring.
        at: String,
    },
    /// An edge spans more than 180° of longitude.
    #[error(
        "{at} crosses the antimeridian (edge from lon {from} to lon {to}); split it at ±180° into a MultiPolygon (RFC 7946 §3.1.9)"
    )]
    CrossesAntimeridian {
        /// Which ring.
        at: String,
        /// Longitude of the edge start.
        from: f64,
        /// Longitude of the edge end.
        to: f64,
    },
}

/// Why a fence file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The text is not JSON.
    #[error("fence file is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is not a GeoJSON FeatureCollection.
    #[error("fence file must be a GeoJSON FeatureCollection with a 'features' array")]
    NotFeatureCollection,
    /// One or more features are invalid; every problem is listed.
    #[error("{} invalid fence(s):\n{}", .0.len(), DisplayList(.0))]
    Invalid(Vec<FenceError>),
}

struct DisplayList<'a>(&'a [FenceError]);

impl fmt::Display for DisplayList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Everything learnt from a fence file: the valid fences and every problem found.
#[derive(Debug)]
pub struct LoadReport {
    /// Number of features in the file.
    pub features: usize,
    /// The features that passed validation.
    pub set: FenceSet,
    /// Every problem, in feature order.
    pub errors: Vec<FenceError>,
}

/// Validated fences, ready to be indexed with [`FenceIndex::build`](crate::FenceIndex::build).
#[derive(Clone, Debug, Default)]
pub struct FenceSet {
    pub(crate) fences: Vec<Fence>,
    pub(crate) tenants: Vec<Box<str>>,
}

impl FenceSet {
    /// Parses and validates a GeoJSON FeatureCollection; fails with every problem listed if any
    /// feature is invalid.
    pub fn from_geojson_str(text: &str, opts: &LoadOptions) -> Result<Self, LoadError> {
        let report = Self::check_geojson_str(text, opts)?;
        if report.errors.is_empty() {
            Ok(report.set)
        } else {
            Err(LoadError::Invalid(report.errors))
        }
    }

    /// Parses and validates a GeoJSON FeatureCollection, keeping the valid fences and listing
    /// every problem (for `fencegate fences check`). Fails only when the file as a whole is
    /// not a FeatureCollection.
    pub fn check_geojson_str(text: &str, opts: &LoadOptions) -> Result<LoadReport, LoadError> {
        let root: serde_json::Value = serde_json::from_str(text)?;
        let serde_json::Value::Object(mut root) = root else {
            return Err(LoadError::NotFeatureCollection);
        };
        if root.get("type").and_then(|t| t.as_str()) != Some("FeatureCollection") {
            return Err(LoadError::NotFeatureCollection);
        }
        let Some(serde_json::Value::Array(features)) = root.remove("features") else {
            return Err(LoadError::NotFeatureCollection);
        };
        let mut b = Builder {
            opts,
            set: FenceSet::default(),
            errors: Vec::new(),
            tenant_keys: HashMap::new(),
            ids: HashMap::new(),
        };
        let n = features.len();
        for (i, v) in features.into_iter().enumerate() {
            b.feature(i, v);
        }
        Ok(LoadReport {
            features: n,
            set: b.set,
            errors: b.errors,
        })
    }

    /// Builds a set from fences made in code (tests, benches). Tenants are interned in
    /// first-seen order; ids are not checked for uniqueness.
    pub fn from_parts<I>(parts: I) -> Self
    where
        I: IntoIterator<Item = FenceSpec>,
    {
        let mut set = FenceSet::default();
        let mut keys: HashMap<String, TenantKey> = HashMap::new();
        for spec in parts {
            let tenant = *keys.entry(spec.tenant.clone()).or_insert_with(|| {
                set.tenants.push(spec.tenant.clone().into());
                TenantKey(set.tenants.len() as u32 - 1)
            });
            let rects = Fence::rects_of(&spec.shape);
            set.fences.push(Fence {
                id: spec.id.into(),
                tenant,
                tenant_name: spec.tenant.into(),
                site: spec.site.map(Into::into),
                name: None,
                kind: spec.kind,
                shape: spec.shape,
                rects,
            });
        }
        set
    }

    /// The fences, in load order.
    pub fn fences(&self) -> &[Fence] {
        &self.fences
    }

    /// Tenant names in first-seen order ([`TenantKey::index`] indexes this).
    pub fn tenants(&self) -> &[Box<str>] {
        &self.tenants
    }

    /// Number of fences.
    pub fn len(&self) -> usize {
        self.fences.len()
    }

    /// Whether there are no fences.
    pub fn is_empty(&self) -> bool {
        self.fences.is_empty()
    }
}

/// A fence described in code, for [`FenceSet::from_parts`].
#[derive(Clone, Debug)]
pub struct FenceSpec {
    /// Fence id.
    pub id: String,
    /// Tenant name.
    pub tenant: String,
    /// Optional site.
    pub site: Option<String>,
    /// Geometry kind, for summaries.
    pub kind: FenceKind,
    /// The shape.
    pub shape: Shape,
}

impl FenceSpec {
    /// A circle fence.
    pub fn circle(
        id: impl Into<String>,
        tenant: impl Into<String>,
        center: Point,
        radius_m: f64,
    ) -> Self {
        Self {
            id: id.into(),
            tenant: tenant.into(),
            site: None,
            kind: FenceKind::Circle,
            shape: Shape::Circle(Circle::new(center, radius_m)),
        }
    }

    /// A polygon (or multipolygon when `parts.len() > 1`) from closed `[lon, lat]` rings:
    /// `parts[i][0]` is a shell, the rest its holes. Not validated.
    pub fn polygons(
        id: impl Into<String>,
        tenant: impl Into<String>,
        parts: Vec<Vec<Vec<LonLat>>>,
    ) -> Self {
        let kind = if parts.len() > 1 {
            FenceKind::MultiPolygon
        } else {
            FenceKind::Polygon
        };
        Self {
            id: id.into(),
            tenant: tenant.into(),
            site: None,
            kind,
            shape: Shape::Polygons(parts.into_iter().map(PolygonPart::new).collect()),
        }
    }
}

struct Builder<'a> {
    opts: &'a LoadOptions,
    set: FenceSet,
    errors: Vec<FenceError>,
    tenant_keys: HashMap<String, TenantKey>,
    ids: HashMap<(TenantKey, String), usize>,
}

impl Builder<'_> {
    fn feature(&mut self, i: usize, v: serde_json::Value) {
        let feature: Feature = match serde_json::from_value(v) {
            Ok(f) => f,
            Err(e) => {
                self.errors.push(FenceError {
                    feature: i,
                    fence_id: None,
                    kind: FenceErrorKind::BadFeature(e.to_string()),
                });
                return;
            }
        };
        let mut errs = Vec::new();
        let empty = JsonObject::new();
        let props = feature.properties.as_ref().unwrap_or(&empty);
        let id = string_prop(props, "id", &mut errs);
        let tenant = string_prop(props, "tenant", &mut errs);
        let site = string_prop(props, "site", &mut errs);
        let name = string_prop(props, "name", &mut errs);
        if id.is_none()
            && !errs
                .iter()
                .any(|e| matches!(e, FenceErrorKind::BadProperty { name: "id", .. }))
        {
            errs.push(FenceErrorKind::MissingId);
        }
        if tenant.is_none()
            && !errs
                .iter()
                .any(|e| matches!(e, FenceErrorKind::BadProperty { name: "tenant", .. }))
        {
            errs.push(FenceErrorKind::MissingTenant);
        }
        let radius = match props.get("radius_m") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(r) => Some(r),
                None => {
                    errs.push(FenceErrorKind::BadProperty {
                        name: "radius_m",
                        expected: "a number of metres",
                    });
                    None
                }
            },
        };
        let shape = match feature.geometry.as_ref().map(|g| &g.value) {
            None => {
                errs.push(FenceErrorKind::MissingGeometry);
                None
            }
            Some(GeometryValue::Point { coordinates }) => {
                let center = position(coordinates, "centre".into(), &mut errs);
                let radius_ok = match radius {
                    None => {
                        if !errs.iter().any(|e| {
                            matches!(
                                e,
                                FenceErrorKind::BadProperty {
                                    name: "radius_m",
                                    ..
                                }
                            )
                        }) {
                            errs.push(FenceErrorKind::MissingRadius);
                        }
                        false
                    }
                    Some(r) if r.is_nan() || r < self.opts.min_radius_m => {
                        errs.push(FenceErrorKind::RadiusTooSmall {
                            radius: r,
                            min: self.opts.min_radius_m,
                        });
                        false
                    }
                    Some(r) if r > self.opts.max_radius_m => {
                        errs.push(FenceErrorKind::RadiusTooLarge {
                            radius: r,
                            max: self.opts.max_radius_m,
                        });
                        false
                    }
                    Some(_) => true,
                };
                match (center, radius) {
                    (Some(c), Some(r)) if radius_ok => {
                        Some((FenceKind::Circle, Shape::Circle(Circle::new(c, r))))
                    }
                    _ => None,
                }
            }
            Some(GeometryValue::Polygon { coordinates }) => {
                if radius.is_some() {
                    errs.push(FenceErrorKind::RadiusOnPolygon);
                }
                polygon(coordinates, None, &mut errs)
                    .map(|p| (FenceKind::Polygon, Shape::Polygons(vec![p])))
            }
            Some(GeometryValue::MultiPolygon { coordinates }) => {
                if radius.is_some() {
                    errs.push(FenceErrorKind::RadiusOnPolygon);
                }
                if coordinates.is_empty() {
                    errs.push(FenceErrorKind::EmptyPolygon);
                }
                let parts: Vec<Option<PolygonPart>> = coordinates
                    .iter()
                    .enumerate()
                    .map(|(k, p)| polygon(p, Some(k), &mut errs))
                    .collect();
                if parts.iter().all(Option::is_some) && !parts.is_empty() {
                    Some((
                        FenceKind::MultiPolygon,
                        Shape::Polygons(parts.into_iter().flatten().collect()),
                    ))
                } else {
                    None
                }
            }
            Some(other) => {
                errs.push(FenceErrorKind::UnsupportedGeometry(other.type_name()));
                None
            }
        };
        // Intern the tenant and claim the id even for invalid features, so a later duplicate
        // is still reported against the first use.
        let tenant_key = tenant.as_ref().map(|t| {
            let set = &mut self.set;
            *self.tenant_keys.entry(t.clone()).or_insert_with(|| {
                set.tenants.push(t.as_str().into());
                TenantKey(set.tenants.len() as u32 - 1)
            })
        });
        if let (Some(t), Some(id)) = (tenant_key, id.as_ref()) {
            match self.ids.get(&(t, id.clone())) {
                Some(&first) => errs.push(FenceErrorKind::DuplicateId {
                    tenant: tenant.clone().unwrap_or_default(),
                    first_feature: first,
                }),
                None => {
                    self.ids.insert((t, id.clone()), i);
                }
            }
        }
        if errs.is_empty() {
            if let (Some(id), Some(t), Some(tenant), Some((kind, shape))) =
                (id, tenant_key, tenant, shape)
            {
                let rects = Fence::rects_of(&shape);
                self.set.fences.push(Fence {
                    id: id.into(),
                    tenant: t,
                    tenant_name: tenant.into(),
                    site: site.map(Into::into),
                    name: name.map(Into::into),
                    kind,
                    shape,
                    rects,
                });
            }
        } else {
            for kind in errs {
                self.errors.push(FenceError {
                    feature: i,
                    fence_id: id.clone(),
                    kind,
                });
            }
        }
    }
}

fn string_prop(
    props: &JsonObject,
    name: &'static str,
    errs: &mut Vec<FenceErrorKind>,
) -> Option<String> {
    match props.get(name) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errs.push(FenceErrorKind::BadProperty {
                name,
                expected: "a string",
            });
            None
        }
    }
}

fn position(p: &Position, at: String, errs: &mut Vec<FenceErrorKind>) -> Option<Point> {
    let s = p.as_slice();
    if s.len() < 2 {
        errs.push(FenceErrorKind::ShortPosition { at });
        return None;
    }
    match Point::new(s[1], s[0]) {
        Ok(pt) => Some(pt),
        Err(_) => {
            errs.push(FenceErrorKind::CoordinateOutOfRange {
                at,
                lon: s[0],
                lat: s[1],
            });
            None
        }
    }
}

fn ring_name(part: Option<usize>, ring: usize) -> String {
    match part {
        Some(p) => format!("polygon {p} ring {ring}"),
        None => format!("ring {ring}"),
    }
}

/// Validates one polygon's rings; returns it only when it is entirely valid.
fn polygon(
    rings: &[Vec<Position>],
    part: Option<usize>,
    errs: &mut Vec<FenceErrorKind>,
) -> Option<PolygonPart> {
    if rings.is_empty() {
        errs.push(FenceErrorKind::EmptyPolygon);
        return None;
    }
    let before = errs.len();
    let mut out: Vec<Vec<LonLat>> = Vec::with_capacity(rings.len());
    for (r, ring) in rings.iter().enumerate() {
        let name = ring_name(part, r);
        let mut pts: Vec<LonLat> = Vec::with_capacity(ring.len());
        let mut coords_ok = true;
        for (k, p) in ring.iter().enumerate() {
            match position(p, format!("{name} position {k}"), errs) {
                Some(pt) => pts.push([pt.lon(), pt.lat()]),
                None => coords_ok = false,
            }
        }
        if !coords_ok {
            continue;
        }
        if pts.len() < 4 {
            errs.push(FenceErrorKind::RingTooShort {
                at: name,
                positions: pts.len(),
            });
            continue;
        }
        if pts.first() != pts.last() {
            errs.push(FenceErrorKind::RingNotClosed { at: name });
            continue;
        }
        if let Some(w) = pts.windows(2).find(|w| (w[1][0] - w[0][0]).abs() > 180.0) {
            errs.push(FenceErrorKind::CrossesAntimeridian {
                at: name,
                from: w[0][0],
                to: w[1][0],
            });
            continue;
        }
        // Repeated consecutive positions are harmless zero-length edges; drop them so the
        // intersection check only sees real edges.
        pts.dedup();
        if pts.len() < 4 {
            errs.push(FenceErrorKind::RingTooShort {
                at: format!("{name} (after removing repeated positions)"),
                positions: pts.len(),
            });
            continue;
        }
        out.push(pts);
    }
    if errs.len() > before {
        return None;
    }
    if let Some((at, near)) = first_intersection(&out) {
        errs.push(FenceErrorKind::SelfIntersection {
            at: match part {
                Some(p) => format!("polygon {p} {at}"),
                None => at,
            },
            lon: near[0],
            lat: near[1],
        });
        return None;
    }
    // No ring touches another (checked above), so one vertex tells which side a hole is on.
    for (r, hole) in out.iter().enumerate().skip(1) {
        if ring_position(&out[0], hole[0]) != RingPos::Inside {
            errs.push(FenceErrorKind::HoleOutsideShell {
                at: ring_name(part, r),
            });
        }
    }
    if errs.len() > before {
        return None;
    }
    Some(PolygonPart::new(out))
}

struct Edge {
    min_x: f64,
    max_x: f64,
    ring: usize,
    idx: usize,
    a: LonLat,
    b: LonLat,
}

/// Finds one pair of intersecting edges among a polygon's rings (within a ring: any contact
/// between non-adjacent edges or adjacent edges folding back; between rings: any contact).
/// A sweep over x keeps this near O(n log n) for ordinary fences.
fn first_intersection(rings: &[Vec<LonLat>]) -> Option<(String, LonLat)> {
    let mut edges: Vec<Edge> = Vec::new();
    for (r, ring) in rings.iter().enumerate() {
        for (idx, w) in ring.windows(2).enumerate() {
            edges.push(Edge {
                min_x: w[0][0].min(w[1][0]),
                max_x: w[0][0].max(w[1][0]),
                ring: r,
                idx,
                a: w[0],
                b: w[1],
            });
        }
    }
    edges.sort_by(|a, b| a.min_x.total_cmp(&b.min_x));
    for i in 0..edges.len() {
        let e = &edges[i];
        for f in &edges[i + 1..] {
            if f.min_x > e.max_x {
                break;
            }
            if e.a[1].max(e.b[1]) < f.a[1].min(f.b[1]) || f.a[1].max(f.b[1]) < e.a[1].min(e.b[1]) {
                continue;
            }
            let (e1, e2) = if e.ring < f.ring || (e.ring == f.ring && e.idx < f.idx) {
                (e, f)
            } else {
                (f, e)
            };
            if e1.ring == e2.ring {
                let n = rings[e1.ring].len() - 1;
                let (shared, p, q) = if e2.idx == e1.idx + 1 {
                    (e1.b, e1.a, e2.b)
                } else if e1.idx == 0 && e2.idx == n - 1 {
                    (e1.a, e2.a, e1.b)
                } else {
                    if segments_intersect(e1.a, e1.b, e2.a, e2.b) {
                        return Some((
                            format!("ring {} edges {} and {}", e1.ring, e1.idx, e2.idx),
                            nearest_common(e1, e2),
                        ));
                    }
                    continue;
                };
                // Adjacent edges meet at `shared`; they overlap only if they fold back.
                let dot = (p[0] - shared[0]) * (q[0] - shared[0])
                    + (p[1] - shared[1]) * (q[1] - shared[1]);
                if orient(p, shared, q) == Orientation::Collinear && dot > 0.0 {
                    return Some((
                        format!(
                            "ring {} edges {} and {} fold back on each other",
                            e1.ring, e1.idx, e2.idx
                        ),
                        shared,
                    ));
                }
            } else if segments_intersect(e1.a, e1.b, e2.a, e2.b) {
                return Some((
                    format!(
                        "ring {} edge {} and ring {} edge {} (rings must not touch or cross)",
                        e1.ring, e1.idx, e2.ring, e2.idx
                    ),
                    nearest_common(e1, e2),
                ));
            }
        }
    }
    None
}

/// A point to show the user near where two intersecting edges meet.
fn nearest_common(e: &Edge, f: &Edge) -> LonLat {
    let (p, r) = (e.a, [e.b[0] - e.a[0], e.b[1] - e.a[1]]);
    let (q, s) = (f.a, [f.b[0] - f.a[0], f.b[1] - f.a[1]]);
    let denom = r[0] * s[1] - r[1] * s[0];
    if denom != 0.0 {
        let t = ((q[0] - p[0]) * s[1] - (q[1] - p[1]) * s[0]) / denom;
        let t = t.clamp(0.0, 1.0);
        [p[0] + t * r[0], p[1] + t * r[1]]
    } else {
        f.a
    }
}
