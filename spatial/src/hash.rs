//! A fast hasher for the index's integer cell keys and short tenant names,
//! also used by the gateway's attendance-rule maps.
//!
//! SipHash (std's default) costs ~20 ns per u64 key, a tenth of a lookup budget; the keys are
//! not attacker-chosen in a way that matters (cells come from the operator's own fences), so a
//! folded multiply is enough.

use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// Folded-multiply hasher (as in foldhash/ahash's fallback).
#[derive(Default, Clone, Copy)]
pub struct FoldHasher(u64);

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

impl Hasher for FoldHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = fold(self.0 ^ x, K);
    }

    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }

    #[inline]
    fn write_u8(&mut self, x: u8) {
        self.write_u64(u64::from(x));
    }

    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
}

/// Builds [`FoldHasher`]s.
pub type FastBuild = BuildHasherDefault<FoldHasher>;
/// A map with [`FoldHasher`].
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
}
