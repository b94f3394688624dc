//! Loading fence files: every validation rule, all problems reported at once, and the sample
//! fence file shipped in `config/`.

use fencegate_spatial::{
    Classification, FenceIndex, FenceKind, FenceSet, IndexOptions, LoadError, LoadOptions, Point,
};

fn collection(features: &[&str]) -> String {
    format!(
        r#"{{"type":"FeatureCollection","features":[{}]}}"#,
        features.join(",")
    )
}

fn circle(id: &str, tenant: &str, lon: f64, lat: f64, r: f64) -> String {
    format!(
        r#"{{"type":"Feature","geometry":{{"type":"Point","coordinates":[{lon},{lat}]}},"properties":{{"id":"{id}","tenant":"{tenant}","radius_m":{r}}}}}"#
    )
}

fn polygon(id: &str, rings: &str) -> String {
    format!(
        r#"{{"type":"Feature","geometry":{{"type":"Polygon","coordinates":{rings}}},"properties":{{"id":"{id}","tenant":"acme"}}}}"#
    )
}

fn errors(text: &str) -> Vec<String> {
    match FenceSet::from_geojson_str(text, &LoadOptions::default()) {
        Err(LoadError::Invalid(errs)) => errs.iter().map(ToString::to_string).collect(),
        Err(e) => vec![e.to_string()],
        Ok(set) => panic!("expected errors, loaded {} fences", set.len()),
    }
}

const SQUARE: &str = "[[[0,0],[1,0],[1,1],[0,1],[0,0]]]";

#[test]
fn radius_bounds_name_feature_and_fence() {
    let errs = errors(&collection(&[
        &circle("ok", "acme", 121.0, 31.0, 100.0),
        &circle("hq-north", "acme", 121.0, 31.0, 12.0),
        &circle("too-big", "acme", 121.0, 31.0, 9000.0),
    ]));
    assert_eq!(
        errs,
        [
            "feature 1 (fence 'hq-north'): radius 12 m is below the minimum 50 m",
            "feature 2 (fence 'too-big'): radius 9000 m is above the maximum 5000 m",
        ]
    );
    // The bounds are configurable.
    let opts = LoadOptions {
        min_radius_m: 10.0,
        max_radius_m: 10_000.0,
    };
    let text = collection(&[&circle("hq-north", "acme", 121.0, 31.0, 12.0)]);
    assert_eq!(FenceSet::from_geojson_str(&text, &opts).unwrap().len(), 1);
}

#[test]
fn duplicate_ids_are_per_tenant() {
    let errs = errors(&collection(&[
        &circle("a", "acme", 121.0, 31.0, 100.0),
        &circle("a", "globex", 121.0, 31.0, 100.0),
        &circle("a", "acme", 121.1, 31.0, 100.0),
    ]));
    assert_eq!(
        errs,
        ["feature 2 (fence 'a'): duplicate id in tenant 'acme' (first used by feature 0)"]
    );
}

#[test]
fn ring_problems() {
    let errs = errors(&collection(&[
        &polygon("short", "[[[0,0],[1,0],[0,0]]]"),
        &polygon("open", "[[[0,0],[1,0],[1,1],[0,1]]]"),
        &polygon("bowtie", "[[[0,0],[1,1],[1,0],[0,1],[0,0]]]"),
        &polygon("spike", "[[[0,0],[2,0],[1,0],[1,1],[0,0]]]"),
        &polygon(
            "hole-crosses",
            "[[[0,0],[2,0],[2,2],[0,2],[0,0]],[[1,1],[3,1],[3,1.5],[1,1.5],[1,1]]]",
        ),
        &polygon("repeats", "[[[0,0],[0,0],[1,0],[1,0],[0,0]]]"),
    ]));
    assert_eq!(errs.len(), 6, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            "feature 0 (fence 'short'): ring 0 has 3 positions; a ring needs at least 4"
        )
    );
    assert!(errs[1].starts_with("feature 1 (fence 'open'): ring 0 is not closed"));
    assert!(
        errs[2].starts_with(
            "feature 2 (fence 'bowtie'): ring 0 edges 0 and 2: edges intersect near [0.5, 0.5]"
        ),
        "{}",
        errs[2]
    );
    assert!(errs[3].contains("fold back"), "{}", errs[3]);
    assert!(
        errs[4].contains("ring 0 edge 1 and ring 1 edge 0"),
        "{}",
        errs[4]
    );
    assert!(
        errs[5].contains("after removing repeated positions"),
        "{}",
        errs[5]
    );
}

#[test]
fn hole_outside_its_shell() {
    let errs = errors(&collection(&[
        &polygon(
            "stray-hole",
            "[[[0,0],[2,0],[2,2],[0,2],[0,0]],[[0.5,0.5],[1,0.5],[1,1],[0.5,0.5]],[[3,3],[4,3],[4,4],[3,3]]]",
        ),
        &polygon(
            "ok-hole",
            "[[[0,0],[2,0],[2,2],[0,2],[0,0]],[[0.5,0.5],[1,0.5],[1,1],[0.5,0.5]]]",
        ),
    ]));
    assert_eq!(
        errs,
        [
            "feature 0 (fence 'stray-hole'): ring 2 is a hole outside its shell; move it inside the shell (ring 0) or remove it"
        ]
    );
}

#[test]
fn coordinates_and_antimeridian() {
    let errs = errors(&collection(&[
        &polygon("lat", "[[[0,0],[1,0],[1,91],[0,1],[0,0]]]"),
        &circle("lon", "acme", 181.0, 0.0, 100.0),
        &polygon(
            "wrap",
            "[[[179.9,0],[-179.9,0],[-179.9,1],[179.9,1],[179.9,0]]]",
        ),
    ]));
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(
        errs[0],
        "feature 0 (fence 'lat'): ring 0 position 2: position [1, 91] is out of range (lon -180..=180, lat -90..=90)"
    );
    assert!(
        errs[1].starts_with("feature 1 (fence 'lon'): centre: position [181, 0] is out of range")
    );
    assert!(
        errs[2].contains("crosses the antimeridian (edge from lon 179.9 to lon -179.9); split it"),
        "{}",
        errs[2]
    );
    // Split into a MultiPolygon at ±180°, the same area loads.
    let split = r#"{"type":"Feature","geometry":{"type":"MultiPolygon","coordinates":[
        [[[179.9,0],[180,0],[180,1],[179.9,1],[179.9,0]]],
        [[[-180,0],[-179.9,0],[-179.9,1],[-180,1],[-180,0]]]]},"properties":{"id":"split","tenant":"acme"}}"#;
    let set = FenceSet::from_geojson_str(&collection(&[split]), &LoadOptions::default()).unwrap();
    let idx = FenceIndex::build(set, &IndexOptions::default());
    let mut out = Vec::new();
    for lon in [179.95, -179.95, 180.0, -180.0] {
        idx.locate(Point::new(0.5, lon).unwrap(), None, &mut out);
        assert_eq!(out.len(), 1, "lon {lon}");
    }
}

#[test]
fn properties_and_geometry_kinds() {
    let line = r#"{"type":"Feature","geometry":{"type":"LineString","coordinates":[[0,0],[1,1]]},"properties":{"id":"l","tenant":"acme"}}"#;
    let no_geom = r#"{"type":"Feature","geometry":null,"properties":{"id":"g","tenant":"acme"}}"#;
    let no_props =
        r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[0,0]},"properties":{}}"#;
    let bad_types = r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[0,0]},"properties":{"id":7,"tenant":"acme","radius_m":"big"}}"#;
    let radius_on_poly = r#"{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]},"properties":{"id":"p","tenant":"acme","radius_m":100}}"#;
    let not_feature = r#"{"type":"Feature","geometry":{"type":"Polygon","coordinates":7}}"#;
    let errs = errors(&collection(&[
        line,
        no_geom,
        no_props,
        bad_types,
        radius_on_poly,
        not_feature,
    ]));
    assert_eq!(
        errs,
        [
            "feature 0 (fence 'l'): geometry type LineString cannot be a fence; use a Polygon, a MultiPolygon or a Point with 'radius_m'",
            "feature 1 (fence 'g'): has no geometry; use a Polygon, a MultiPolygon or a Point with 'radius_m'",
            "feature 2: missing property 'id' (a string, unique within the tenant)",
            "feature 2: missing property 'tenant' (the tenant that owns the fence)",
            "feature 2: a Point fence needs a numeric 'radius_m' property (metres)",
            "feature 3: property 'id' must be a string",
            "feature 3: property 'radius_m' must be a number of metres",
            "feature 4 (fence 'p'): 'radius_m' only applies to Point features; remove it from this polygon",
            errs[8].as_str(),
        ]
    );
    assert!(
        errs[8].starts_with("feature 5: not a valid GeoJSON Feature"),
        "{}",
        errs[8]
    );
}

#[test]
fn whole_file_errors() {
    assert!(matches!(
        FenceSet::from_geojson_str("{", &LoadOptions::default()),
        Err(LoadError::Json(_))
    ));
    assert!(matches!(
        FenceSet::from_geojson_str(r#"{"type":"Feature"}"#, &LoadOptions::default()),
        Err(LoadError::NotFeatureCollection)
    ));
    // The report keeps valid fences next to the errors.
    let report = FenceSet::check_geojson_str(
        &collection(&[
            &circle("a", "acme", 1.0, 1.0, 100.0),
            &polygon("b", "[[[0,0],[1,0],[0,0]]]"),
            &polygon("c", SQUARE),
        ]),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (report.features, report.set.len(), report.errors.len()),
        (3, 2, 1)
    );
}

#[test]
fn sample_fence_file_loads_and_answers() {
    let text = include_str!("../../config/fences.geojson");
    let set = FenceSet::from_geojson_str(text, &LoadOptions::default()).unwrap();
    let kinds = |k| set.fences().iter().filter(|f| f.kind() == k).count();
    assert_eq!(
        (
            kinds(FenceKind::Circle),
            kinds(FenceKind::Polygon),
            kinds(FenceKind::MultiPolygon)
        ),
        (4, 3, 1)
    );
    assert_eq!(
        set.tenants(),
        &["acme".into(), "globex".into()] as &[Box<str>]
    );
    let idx = FenceIndex::build(set, &IndexOptions::default());
    let acme = idx.tenant("acme").unwrap();
    let globex = idx.tenant("globex").unwrap();
    let mut out = Vec::new();
    let id = |out: &Vec<_>| {
        out.iter()
            .map(|&k| idx.fence(k).id().to_owned())
            .collect::<Vec<_>>()
    };

    idx.locate(Point::new(31.2304, 121.4737).unwrap(), Some(acme), &mut out);
    assert_eq!(id(&out), ["hq-north"]);
    // Tenants do not see each other's fences.
    idx.locate(
        Point::new(31.2304, 121.4737).unwrap(),
        Some(globex),
        &mut out,
    );
    assert!(out.is_empty());
    // The Lujiazui courtyard is a hole; its edge counts as inside.
    idx.locate(Point::new(31.2397, 121.5005).unwrap(), Some(acme), &mut out);
    assert!(out.is_empty());
    idx.locate(Point::new(31.2397, 121.4995).unwrap(), Some(acme), &mut out);
    assert_eq!(id(&out), ["lujiazui-tower"]);
    // Both buildings of the multipolygon, not the gap between them.
    for (lat, lon, n) in [
        (22.5395, 113.9460, 1),
        (22.5410, 113.9530, 1),
        (22.5400, 113.9495, 0),
    ] {
        idx.locate(Point::new(lat, lon).unwrap(), Some(acme), &mut out);
        assert_eq!(out.len(), n, "{lat},{lon}");
    }
    // The L-shaped yard: inside the foot, outside the notch.
    idx.locate(Point::new(31.3495, 121.4500).unwrap(), Some(acme), &mut out);
    assert_eq!(id(&out), ["baoshan-warehouse"]);
    idx.locate(Point::new(31.3540, 121.4500).unwrap(), Some(acme), &mut out);
    assert!(out.is_empty());
    // Same id in two tenants.
    idx.locate(
        Point::new(52.5251, 13.3695).unwrap(),
        Some(globex),
        &mut out,
    );
    assert_eq!(id(&out), ["hq-north"]);
    assert_eq!(idx.fence(out[0]).tenant_name(), "globex");

    // About 230 m outside hq-north, due east.
    let p = Point::new(
        31.2304,
        121.4737 + 430.0 / (111_195.08 * 31.2304f64.to_radians().cos()),
    )
    .unwrap();
    let (k, d) = idx.nearest(p, Some(acme)).unwrap();
    assert_eq!(idx.fence(k).id(), "hq-north");
    assert!((d - 230.0).abs() < 0.5, "{d}");
    match idx.classify(p, 20.0, Some(acme)) {
        Classification::Outside {
            nearest,
            distance_m,
        } => {
            assert_eq!(nearest, k);
            assert_eq!(distance_m, d);
        }
        other => panic!("{other:?}"),
    }
}
