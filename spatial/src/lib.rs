//! fencegate geofence engine.
