//! Shared fixtures for fencegate's criterion benches (see `benches/benches/`).
