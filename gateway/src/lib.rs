//! fencegate gateway library.
