//! The bounded, CI-sized run of the gateway's fuzz targets: cargo-fuzz
//! needs nightly flags, so CI cannot run it, but it can run the targets'
//! bodies (the very file `gateway/fuzz/src/lib.rs`) over the committed seeds
//! and a few thousand deterministic pseudo-random mutations of them. A panic
//! here is a crash the fuzzer would have found; the long runs are
//! `gateway/fuzz/run.sh` (docs/PERFORMANCE.md, "Fuzzing").

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::PathBuf;

/// Mutations run per target on top of the seeds.
const CASES: usize = 3_000;

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

// Each test also asserts that some seeds reach the accepting path: a target
// whose seeds all bounce off the first check would pass while testing
// nothing.

#[test]
fn backlog_stream_survives_seeds_and_mutants() {
    let (seeds, _) = run("backlog_stream", harness::backlog_stream);
    assert!(seeds > 0, "no backlog seed carries a ping batch");
}

#[test]
fn device_token_survives_seeds_and_mutants() {
    let (seeds, mutants) = run("device_token", harness::device_token);
    assert!(seeds > 0, "no token seed verifies");
    assert!(mutants > 0);
}

#[test]
fn qr_payload_survives_seeds_and_mutants() {
    let (seeds, mutants) = run("qr_payload", harness::qr_payload);
    assert!(seeds > 0, "no QR seed parses");
    assert!(mutants > 0);
}

#[test]
fn tenant_rules_survive_seeds_and_mutants() {
    let (seeds, _) = run("tenant_rules", harness::tenant_rules);
    assert!(seeds > 0, "no rules seed compiles");
}

#[test]
fn fences_geojson_survives_seeds_and_mutants() {
    let (seeds, mutants) = run("fences_geojson", harness::fences_geojson);
    assert!(seeds > 0, "no fences seed loads");
    assert!(mutants > 0);
}

#[test]
fn records_params_survive_seeds_and_mutants() {
    let (seeds, _) = run("records_params", harness::records_params);
    assert!(seeds > 0, "no time seed parses");
}

/// The harness's own checks must be able to fire: a stream whose prefix
/// announces more than the cap is refused as `Oversize`, and the re-encoding
/// check holds for a hand-made stream.
#[test]
fn the_backlog_harness_sees_frames() {
    let mut stream = vec![0u8];
    fencegate::backlog::push_frame(&mut stream, b"not a flatbuffer");
    assert!(!harness::backlog_stream(&stream));
    // Structured mode: the unmodified base stream is three valid batches.
    assert!(harness::backlog_stream(&[2]));
}
