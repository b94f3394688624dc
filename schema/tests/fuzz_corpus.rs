//! The bounded, CI-sized run of the schema's fuzz target: cargo-fuzz needs
//! nightly flags, so CI cannot run it, but it can run the target's body
//! (the very file `schema/fuzz/src/lib.rs`) over the committed seeds and a
//! few thousand deterministic pseudo-random mutations of them. A panic here
//! is a crash the fuzzer would have found; the long runs are
//! `schema/fuzz/run.sh` (docs/PERFORMANCE.md, "Fuzzing").

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::PathBuf;

/// Mutations run per target on top of the seeds.
const CASES: usize = 20_000;

/// The committed seeds of `target`, each file one input.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    let out: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("a seed file"))
        .collect();
    assert!(!out.is_empty(), "{} has no seeds", dir.display());
    out
}

/// splitmix64: a fixed sequence, so a failure here reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A libFuzzer-like mutation of a seed: flip, insert, delete or overwrite a
/// few bytes, splice in part of another seed, or pure random bytes.
fn mutant(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].clone();
    if rng.below(10) == 0 {
        return (0..rng.below(300)).map(|_| rng.next() as u8).collect();
    }
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if at < v.len() => v[at] ^= 1 << rng.below(8),
            1 => v.insert(at, rng.next() as u8),
            2 if at < v.len() => {
                v.remove(at);
            }
            3 if at < v.len() => v[at] = b"\"'{}[],.:=\n\\0-+9eE"[rng.below(18)],
            4 => v.truncate(at),
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let to = from + rng.below(other.len() - from + 1);
                v.splice(at..at, other[from..to].iter().copied());
            }
        }
    }
    v
}

/// Runs `body` over the seeds of `target` and [`CASES`] mutants; returns
/// how many seeds and mutants it accepted.
fn run(target: &str, body: fn(&[u8]) -> bool) -> (usize, usize) {
    let seeds = seeds(target);
    let seeds_ok = seeds.iter().filter(|s| body(s)).count();
    let mut rng = Rng(0x5eed ^ target.len() as u64);
    let mutants_ok = (0..CASES)
        .filter(|_| body(&mutant(&mut rng, &seeds)))
        .count();
    (seeds_ok, mutants_ok)
}

#[test]
fn parse_frame_survives_seeds_and_mutants() {
    let (seeds, mutants) = run("parse_frame", harness::parse_frame_target);
    // A target whose seeds all bounce off the first check would pass while
    // testing nothing.
    assert!(seeds >= 3, "the punch and batch seeds no longer parse");
    assert!(mutants > 0);
}
