//! fencegate geofence engine: GeoJSON fences, an immutable lookup index, exact containment.
//!
//! Pure code: no async, no I/O, no clock. Load fences with [`FenceSet::from_geojson_str`],
//! build a [`FenceIndex`] off the hot path, publish it through [`SharedIndex`], and query it
//! with [`FenceIndex::locate`], [`FenceIndex::nearest`] and [`FenceIndex::classify`].
//!
//! Semantics (see `docs/GEOMETRY.md`): a circle contains a point when the great-circle distance
//! from its centre is at most its radius on a sphere of [`EARTH_RADIUS_M`]; polygon edges are
//! straight lines in lon/lat (RFC 7946); a point on a boundary is inside.

mod cellbox;
mod cover;
mod fence;
mod geom;
pub mod hash;
mod index;
mod load;
mod point;
mod shared;

pub use cellbox::{CellBox, CellShape};
pub use fence::{Circle, Fence, FenceKey, FenceKind, Shape, TenantKey};
pub use geom::{LonLat, PolygonPart, Rect};
pub use h3o::{CellIndex, Resolution};
pub use index::{Classification, FenceIndex, GridCell, IndexOptions, IndexStats, Strategy};
pub use load::{
    FenceError, FenceErrorKind, FenceSet, FenceSpec, LoadError, LoadOptions, LoadReport,
};
pub use point::{EARTH_RADIUS_M, Point, PointError, cell_of, haversine_m};
pub use shared::{SharedIndex, Versioned};
