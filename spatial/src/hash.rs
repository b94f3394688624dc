//! The hasher for the index's integer cell keys and the gateway's maps keyed by tenant names and
//! device-chosen ids.
//!
//! SipHash (std's default) costs ~20 ns per u64 key, a tenth of a lookup budget. foldhash's
//! folded multiply costs a few, and its per-process random seed means a device cannot pick ids
//! that collide on every node (employee ids and punch ids in the gateway's maps are chosen by
//! devices). It also mixes in the length of byte strings, so `"ab"` and `"ab\0"` differ.

/// Builds hashers with a per-process random seed.
pub type FastBuild = foldhash::fast::RandomState;
/// A `HashMap` with [`FastBuild`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn spreads_adjacent_keys() {
        let b = FastBuild::default();
        let mut buckets = [0u32; 64];
        for k in 0..64_000u64 {
            buckets[(b.hash_one(k) >> 58) as usize] += 1;
            buckets[(b.hash_one(k << 32) & 63) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 1_500), "{buckets:?}");
    }

    #[test]
    fn strings_that_differ_only_by_trailing_zeros_hash_apart() {
        let b = FastBuild::default();
        assert_ne!(b.hash_one("ab"), b.hash_one("ab\0"));
        assert_ne!(
            b.hash_one(b"ab".as_slice()),
            b.hash_one(b"ab\0\0".as_slice())
        );
    }
}
