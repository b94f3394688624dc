//! fencegate wire schema.
