//! The two cheap proofs the ping path relies on to skip work for a fix:
//! a point in a [`CellBox`] is in that H3 cell (checked against
//! [`cell_of`]), and a point in a uniform lookup-grid cell has the same
//! fences as any other point of that cell (checked against `locate`).

use fencegate_spatial::{
    CellBox, CellShape, FenceIndex, FenceKey, FenceSet, FenceSpec, GridCell, IndexOptions, Point,
    Resolution, cell_of,
};
use proptest::prelude::*;

fn resolution() -> impl Strategy<Value = Resolution> {
    (0u8..=15).prop_map(|r| Resolution::try_from(r).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Every corner, edge midpoint and random point of a cell's box maps to that cell.
    #[test]
    fn cell_box_lies_inside_its_cell(
        lat in -89.9..89.9f64,
        lon in -180.0..180.0f64,
        res in resolution(),
        t in prop::collection::vec((0.0..=1.0f64, 0.0..=1.0f64), 8),
    ) {
        let p = Point::new(lat, lon).unwrap();
        let cell = cell_of(p, res);
        let b = CellBox::of(cell);
        let mut pts: Vec<(f64, f64)> = b.probes().to_vec();
        if !b.is_empty() {
            let [(la, oa), .., (lb, ob), _, _, _, _, _] = b.probes();
            pts.extend(t.iter().map(|&(u, v)| (la + (lb - la) * u, oa + (ob - oa) * v)));
        }
        for (la, lo) in pts {
            let Ok(q) = Point::new(la, lo) else { continue };
            if b.contains(la, lo) {
                prop_assert_eq!(cell_of(q, res), cell, "({}, {}) in the box of {}", la, lo, cell);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Points hugging a cell's edges from both sides, and near its
    /// vertices: every one the shape contains maps to the cell. Red if the
    /// edge normals pointed the wrong way or the margin were dropped.
    #[test]
    fn cell_shape_contains_only_its_cell(
        lat in -89.9..89.9f64,
        lon in -180.0..180.0f64,
        res in resolution(),
        ts in prop::collection::vec((0usize..10, 0.0..=1.0f64, 0.97..1.03f64), 24),
    ) {
        let p = Point::new(lat, lon).unwrap();
        let cell = cell_of(p, res);
        let shape = CellShape::of(cell);
        let c = h3o::LatLng::from(cell);
        let verts: Vec<(f64, f64)> = cell.boundary().iter().map(|v| (v.lat(), v.lng())).collect();
        let mut inside = 0u32;
        for &(k, u, t) in &ts {
            let (a, b) = (verts[k % verts.len()], verts[(k + 1) % verts.len()]);
            if (a.1 - b.1).abs() > 180.0 || (a.1 - c.lng()).abs() > 180.0 {
                continue; // across the antimeridian: lon/lat interpolation is meaningless
            }
            // A point on the edge a–b, then pulled toward or pushed away from the centre.
            let (el, eo) = (a.0 + (b.0 - a.0) * u, a.1 + (b.1 - a.1) * u);
            let (ql, qo) = (c.lat() + (el - c.lat()) * t, c.lng() + (eo - c.lng()) * t);
            let Ok(q) = Point::new(ql, qo) else { continue };
            if shape.contains(ql, qo) {
                inside += 1;
                prop_assert_eq!(cell_of(q, res), cell, "({}, {}) in the shape of {}", ql, qo, cell);
            }
        }
        let _ = inside;
    }
}

#[test]
fn cell_shape_covers_nearly_all_of_a_cell() {
    // The point of the shape: a fix anywhere but the outer 1 % of a cell
    // keeps the cell without a conversion.
    let cell = cell_of(Point::new(31.2304, 121.4737).unwrap(), Resolution::Nine);
    let shape = CellShape::of(cell);
    let c = h3o::LatLng::from(cell);
    let verts: Vec<h3o::LatLng> = cell.boundary().iter().copied().collect();
    for v in &verts {
        let (l, o) = (
            c.lat() + (v.lat() - c.lat()) * 0.97,
            c.lng() + (v.lng() - c.lng()) * 0.97,
        );
        assert!(shape.contains(l, o), "near vertex {v:?}");
        let (l, o) = (
            c.lat() + (v.lat() - c.lat()) * 1.03,
            c.lng() + (v.lng() - c.lng()) * 1.03,
        );
        assert!(!shape.contains(l, o), "beyond vertex {v:?}");
    }
}

#[test]
fn cell_box_is_not_trivial_away_from_the_poles() {
    // The box must cover a useful share of a resolution-9 cell, or the
    // ping path would convert nearly every fix anyway.
    let p = Point::new(31.2304, 121.4737).unwrap();
    let cell = cell_of(p, Resolution::Nine);
    let b = CellBox::of(cell);
    assert!(!b.is_empty());
    let [(la, oa), _, _, (lb, ob), ..] = b.probes();
    let (h, w) = (
        (lb - la) * 111_195.0,
        (ob - oa) * 111_195.0 * 31.23f64.to_radians().cos(),
    );
    // A res-9 hexagon has an inscribed radius of about 150 m.
    assert!(h > 150.0 && w > 150.0, "box {h:.0} m × {w:.0} m");
    assert!(CellBox::EMPTY.is_empty() && !CellBox::EMPTY.contains(0.0, 0.0));
    // Near a pole the box gives up rather than wrap.
    let polar = CellBox::of(cell_of(Point::new(89.99, 0.0).unwrap(), Resolution::Two));
    assert!(polar.is_empty());
}

/// Fences around one spot: circles from 30 m to 8 km and small squares,
/// two tenants, so grid cells come full, partial and empty.
fn fences(specs: &[(f64, f64, f64, bool, u8)]) -> FenceSet {
    let (lat0, lon0): (f64, f64) = (52.52, 13.405);
    let m_lat = 1.0 / 111_195.0;
    let m_lon = m_lat / lat0.to_radians().cos();
    FenceSet::from_parts(
        specs
            .iter()
            .enumerate()
            .map(|(i, &(dx, dy, r, circle, t))| {
                let (lat, lon) = (lat0 + dy * m_lat, lon0 + dx * m_lon);
                let (id, tenant) = (format!("f{i}"), format!("t{t}"));
                if circle {
                    FenceSpec::circle(id, tenant, Point::new(lat, lon).unwrap(), r)
                } else {
                    let (a, b) = (r * m_lat, r * m_lon);
                    let ring = vec![
                        [lon - b, lat - a],
                        [lon + b, lat - a],
                        [lon + b, lat + a],
                        [lon - b, lat + a],
                        [lon - b, lat - a],
                    ];
                    FenceSpec::polygons(id, tenant, vec![vec![ring]])
                }
            }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whenever `locate_batch_cells` calls a cell uniform, every other
    /// point of that grid cell gets the same fences from `locate`. Red if
    /// a cell with a partial fence or an oversize fence were called uniform.
    #[test]
    fn uniform_grid_cells_have_one_answer(
        specs in prop::collection::vec(
            (-9_000.0..9_000.0f64, -9_000.0..9_000.0f64, 30.0..8_000.0f64, any::<bool>(), 0u8..2),
            1..40,
        ),
        queries in prop::collection::vec((-12_000.0..12_000.0f64, -12_000.0..12_000.0f64), 64),
        others in prop::collection::vec((0.0..1.0f64, 0.0..1.0f64), 16),
        oversize in any::<bool>(),
    ) {
        let opts = IndexOptions {
            // Some runs push the big fences out of the grid into the R-tree.
            max_cells_per_fence: if oversize { 200 } else { 16_384 },
            ..IndexOptions::default()
        };
        let idx = FenceIndex::build(fences(&specs), &opts);
        let s = f64::from(opts.grid_cells_per_degree);
        let m_lat = 1.0 / 111_195.0;
        let m_lon = m_lat / 52.52f64.to_radians().cos();
        for tenant in ["t0", "t1"] {
            let Some(t) = idx.tenant(tenant) else { continue };
            let qs: Vec<(Point, _)> = queries
                .iter()
                .map(|&(dx, dy)| (Point::new(52.52 + dy * m_lat, 13.405 + dx * m_lon).unwrap(), Some(t)))
                .collect();
            let mut hits: Vec<Vec<FenceKey>> = vec![Vec::new(); qs.len()];
            let mut cells = vec![GridCell::default(); qs.len()];
            idx.locate_batch_cells(&qs, |i, k| hits[i].push(k), |i, c| cells[i] = c);
            let mut out = Vec::new();
            for (i, (p, _)) in qs.iter().enumerate() {
                idx.locate(*p, Some(t), &mut out);
                prop_assert_eq!(&out, &hits[i]);
                prop_assert_eq!(cells[i].key, idx.grid_cell_key(*p));
                if !cells[i].uniform {
                    continue;
                }
                // Other points of the same grid cell.
                let (row, col) = ((p.lat() + 90.0) * s, (p.lon() + 180.0) * s);
                for &(u, v) in &others {
                    let q = Point::new(
                        (row.floor() + u) / s - 90.0,
                        (col.floor() + v) / s - 180.0,
                    ).unwrap();
                    if idx.grid_cell_key(q) != cells[i].key {
                        continue;
                    }
                    idx.locate(q, Some(t), &mut out);
                    prop_assert_eq!(&out, &hits[i], "uniform cell {} answered differently", cells[i].key);
                }
            }
        }
    }
}
