//! nearest, classify (accuracy-aware) and snapshot publication.

use std::sync::Arc;

use fencegate_spatial::{
    Classification, EARTH_RADIUS_M, FenceIndex, FenceSet, FenceSpec, IndexOptions, Point,
    SharedIndex, haversine_m,
};

/// `m` metres due north of `p`.
fn north(p: Point, m: f64) -> Point {
    Point::new(p.lat() + (m / EARTH_RADIUS_M).to_degrees(), p.lon()).unwrap()
}

const BERLIN: (f64, f64) = (52.52, 13.405);

fn index() -> FenceIndex {
    let c = Point::new(BERLIN.0, BERLIN.1).unwrap();
    // A 200 m circle, and a 0.01° square whose south-west corner is 1 km east.
    let (lat, lon) = (
        BERLIN.0,
        BERLIN.1 + 1_000.0 / (EARTH_RADIUS_M.to_radians() * BERLIN.0.to_radians().cos()),
    );
    let square = vec![vec![vec![
        [lon, lat],
        [lon + 0.01, lat],
        [lon + 0.01, lat + 0.01],
        [lon, lat + 0.01],
        [lon, lat],
    ]]];
    FenceIndex::build(
        FenceSet::from_parts([
            FenceSpec::circle("office", "acme", c, 200.0),
            FenceSpec::polygons("yard", "acme", square),
            FenceSpec::circle("other", "globex", north(c, 50.0), 100.0),
        ]),
        &IndexOptions::default(),
    )
}

#[test]
fn nearest_reports_metres_to_the_edge() {
    let idx = index();
    let acme = idx.tenant("acme");
    let c = Point::new(BERLIN.0, BERLIN.1).unwrap();
    // Inside: distance 0.
    assert_eq!(
        idx.nearest(c, acme).map(|(k, d)| (idx.fence(k).id(), d)),
        Some(("office", 0.0))
    );
    // 430 m north of the centre is 230 m outside the circle.
    let (k, d) = idx.nearest(north(c, 430.0), acme).unwrap();
    assert_eq!(idx.fence(k).id(), "office");
    assert!((d - 230.0).abs() < 1e-6, "{d}");
    // 500 m south of the yard's south edge, below its middle.
    let yard = idx.fences().iter().position(|f| f.id() == "yard").unwrap();
    let (r, _) = idx.fences()[yard].bounding_rects();
    let below = Point::new(
        r.min_lat - (500.0 / EARTH_RADIUS_M).to_degrees(),
        (r.min_lon + r.max_lon) / 2.0,
    )
    .unwrap();
    let (k, d) = idx.nearest(below, acme).unwrap();
    assert_eq!(idx.fence(k).id(), "yard");
    assert!((d - 500.0).abs() < 0.01, "{d}");
    // Far away (another continent) still finds the nearest, whichever it is.
    let sydney = Point::new(-33.87, 151.21).unwrap();
    let (k, d) = idx.nearest(sydney, acme).unwrap();
    let want = idx.fences()[..2]
        .iter()
        .map(|f| f.distance_m(sydney))
        .fold(f64::INFINITY, f64::min);
    assert_eq!(d, want);
    assert!((d - haversine_m(c, sydney)).abs() < 5_000.0);
    assert_eq!(idx.fence(k).tenant_name(), "acme");
    // Tenants are isolated.
    let (k, _) = idx.nearest(c, idx.tenant("globex")).unwrap();
    assert_eq!(idx.fence(k).id(), "other");
    assert_eq!(idx.tenant("initech"), None);
    assert_eq!(FenceIndex::empty().nearest(c, None), None);
}

#[test]
fn classify_uses_the_accuracy_disc() {
    let idx = index();
    let acme = idx.tenant("acme");
    let c = Point::new(BERLIN.0, BERLIN.1).unwrap();
    let office = |idx: &FenceIndex, k| idx.fence(k).id() == "office";
    match idx.classify(c, 50.0, acme) {
        Classification::Inside { fence, margin_m } => {
            assert!(office(&idx, fence));
            assert!((margin_m - 150.0).abs() < 1e-6);
        }
        other => panic!("{other:?}"),
    }
    // 180 m out with 50 m accuracy: the disc pokes out of the circle.
    match idx.classify(north(c, 180.0), 50.0, acme) {
        Classification::Uncertain {
            fence,
            inside,
            distance_m,
        } => {
            assert!(office(&idx, fence) && inside);
            assert!((distance_m - 20.0).abs() < 1e-6);
        }
        other => panic!("{other:?}"),
    }
    // 300 m out: 100 m outside; 50 m accuracy misses, 150 m accuracy straddles.
    let p = north(c, 300.0);
    assert!(
        matches!(idx.classify(p, 50.0, acme), Classification::Outside { distance_m, .. } if (distance_m - 100.0).abs() < 1e-6)
    );
    assert!(matches!(
        idx.classify(p, 150.0, acme),
        Classification::Uncertain { inside: false, .. }
    ));
    // Zero accuracy degenerates to plain containment; NaN counts as zero.
    assert!(matches!(
        idx.classify(north(c, 199.0), 0.0, acme),
        Classification::Inside { .. }
    ));
    assert!(matches!(
        idx.classify(north(c, 199.0), f64::NAN, acme),
        Classification::Inside { .. }
    ));
    // Note: `None` means every tenant, so resolve unknown tenants before querying.
    assert_eq!(idx.tenant("nobody"), None);
    assert_eq!(
        FenceIndex::empty().classify(c, 10.0, None),
        Classification::NoFences
    );
}

#[test]
fn shared_index_swaps_atomically() {
    let shared = Arc::new(SharedIndex::new(FenceIndex::empty()));
    assert_eq!(shared.version(), 1);
    let c = Point::new(BERLIN.0, BERLIN.1).unwrap();
    let reader = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let mut out = Vec::with_capacity(4);
            let mut seen_fence = false;
            for _ in 0..20_000 {
                let snap = shared.load();
                snap.locate(c, None, &mut out);
                // Versions 1 and 5 are the empty index, 2..=4 the three-fence one. A
                // snapshot's version and contents must belong to the same store: a torn
                // swap (new version, old index, or a half-built one) fails here.
                let v = snap.version();
                match v {
                    1 | 5 => assert_eq!((snap.len(), out.len()), (0, 0), "version {v}"),
                    2..=4 => assert_eq!((snap.len(), out.len()), (3, 2), "version {v}"),
                    _ => panic!("version {v} was never stored"),
                }
                seen_fence |= !out.is_empty();
            }
            seen_fence
        })
    };
    for _ in 0..3 {
        shared.store(index());
    }
    assert_eq!(shared.version(), 4);
    let held = shared.load_full();
    shared.store(FenceIndex::empty());
    assert_eq!((held.version(), held.len()), (4, 3));
    assert_eq!(shared.load().len(), 0);
    reader.join().unwrap();
}
