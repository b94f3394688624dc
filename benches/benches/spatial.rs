//! Geofence index benches: lookups per second for the chosen strategy and the losing ones
//! (R-tree only, H3 only, brute force) at 1k, 10k and 100k fences; build time; nearest,
//! classify and `cell_of`.
//!
//! `cargo bench -p fencegate-benches --bench spatial` runs them all (minutes on 2 cores);
//! `cargo bench -p fencegate-benches --bench spatial -- memory` prints the memory report of a
//! 100k-fence build instead.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};
use fencegate_benches::{
    Probe, synthetic_fences, synthetic_fences_geojson, synthetic_points, tenant_name,
};
use fencegate_spatial::{
    FenceIndex, FenceKey, FenceSet, IndexOptions, LoadOptions, Resolution, Strategy, TenantKey,
    cell_of,
};

/// mimalloc with live/peak byte counters, for the memory report.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every method forwards its arguments unchanged to mimalloc, which upholds the
// `GlobalAlloc` contract; the counters only observe sizes. `memory_report` exercises it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout contract is passed on as is.
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator (so by mimalloc) with `layout`.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` is the caller's valid new size.
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SEED: u64 = 42;

fn variants() -> Vec<(&'static str, IndexOptions)> {
    let with = |strategy| IndexOptions {
        strategy,
        ..IndexOptions::default()
    };
    vec![
        ("grid+rtree (chosen)", IndexOptions::default()),
        ("rtree only", with(Strategy::RTree)),
        (
            "h3 only (res 8)",
            with(Strategy::H3 {
                resolution: Resolution::Eight,
            }),
        ),
        ("brute force", with(Strategy::BruteForce)),
    ]
}

fn tenants(index: &FenceIndex, probes: &[Probe]) -> Vec<Option<TenantKey>> {
    let keys: Vec<Option<TenantKey>> = (0..fencegate_benches::TENANTS)
        .map(|i| index.tenant(&tenant_name(i)))
        .collect();
    probes.iter().map(|p| keys[p.tenant]).collect()
}

fn run(
    index: &FenceIndex,
    probes: &[Probe],
    tenants: &[Option<TenantKey>],
    out: &mut Vec<FenceKey>,
) -> usize {
    let mut hits = 0;
    for (p, &t) in probes.iter().zip(tenants) {
        index.locate(p.point, t, out);
        hits += out.len();
    }
    hits
}

/// Thread CPU time (from `/proc/thread-self/schedstat`, Linux): lookups per second *per
/// core*, unaffected by other processes taking the CPU of this shared 2-core VM, which makes
/// wall time undercount. Reported with criterion's usual time units.
struct CpuTime;

static WALL: WallTime = WallTime;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }

    fn end(&self, i: u64) -> u64 {
        thread_cpu_ns().saturating_sub(i)
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

fn locate(c: &mut Criterion) {
    locate_sizes(c, "spatial/locate", &[1_000, 10_000, 100_000]);
}

fn locate_cpu(c: &mut Criterion<CpuTime>) {
    locate_sizes(c, "spatial/locate-cpu", &[100_000]);
}

fn locate_sizes<M: Measurement>(c: &mut Criterion<M>, prefix: &str, sizes: &[usize]) {
    for &n in sizes {
        let set = synthetic_fences(n, SEED);
        // 200k probes touch far more cells than the caches hold, as a gateway's many devices
        // do; a few thousand repeated probes would measure cache-resident lookups.
        let probes = synthetic_points(200_000, SEED + 1, &set);
        let mut group = c.benchmark_group(format!("{prefix}/{n}"));
        group.sample_size(10);
        for (name, opts) in variants() {
            let index = FenceIndex::build(set.clone(), &opts);
            // Brute force would take minutes per sample; a few hundred probes are plenty to
            // measure it.
            let probes = if matches!(opts.strategy, Strategy::BruteForce) {
                &probes[..if n >= 10_000 { 500 } else { 5_000 }]
            } else {
                &probes[..]
            };
            let ts = tenants(&index, probes);
            let mut out = Vec::with_capacity(64);
            if matches!(opts.strategy, Strategy::Grid) {
                let all = vec![None; probes.len()];
                println!(
                    "{n} fences: {:.2} matching fences per probe for its tenant, {:.2} over all tenants",
                    run(&index, probes, &ts, &mut out) as f64 / probes.len() as f64,
                    run(&index, probes, &all, &mut out) as f64 / probes.len() as f64
                );
            }
            group.throughput(Throughput::Elements(probes.len() as u64));
            group.bench_function(name, |b| {
                b.iter(|| black_box(run(&index, probes, &ts, &mut out)))
            });
            if matches!(opts.strategy, Strategy::Grid) {
                let queries: Vec<_> = probes.iter().zip(&ts).map(|(p, &t)| (p.point, t)).collect();
                group.bench_function(format!("{name}, batched"), |b| {
                    b.iter(|| {
                        let mut hits = 0usize;
                        index.locate_batch(&queries, |_, _| hits += 1);
                        black_box(hits)
                    })
                });
            }
            if n == 100_000 && matches!(opts.strategy, Strategy::Grid | Strategy::BruteForce) {
                // Without a tenant, as `fencegate locate` does by default (which builds the
                // all-tenant lists).
                let all = vec![None; probes.len()];
                let index = FenceIndex::build(
                    set.clone(),
                    &IndexOptions {
                        all_tenant_lists: true,
                        ..opts.clone()
                    },
                );
                group.bench_function(format!("{name}, all tenants"), |b| {
                    b.iter(|| black_box(run(&index, probes, &all, &mut out)))
                });
            }
        }
        group.finish();
    }
}

/// The grid resolution behind the default: lookups/s and build time against cells per degree.
fn grid_resolution(c: &mut Criterion) {
    let set = synthetic_fences(100_000, SEED);
    let probes = synthetic_points(200_000, SEED + 1, &set);
    let mut group = c.benchmark_group("spatial/grid_cells_per_degree/100000");
    group.sample_size(10);
    group.throughput(Throughput::Elements(probes.len() as u64));
    for cpd in [64u32, 128, 256, 512] {
        let index = FenceIndex::build(
            set.clone(),
            &IndexOptions {
                grid_cells_per_degree: cpd,
                ..IndexOptions::default()
            },
        );
        let ts = tenants(&index, &probes);
        let mut out = Vec::with_capacity(64);
        let st = index.stats();
        println!(
            "cells per degree {cpd}: {} cells, {} full + {} partial items, {} oversize, ~{} MiB",
            st.cells,
            st.full_items,
            st.partial_items,
            st.oversize,
            st.memory_bytes >> 20
        );
        group.bench_function(BenchmarkId::new("locate", cpd), |b| {
            b.iter(|| black_box(run(&index, &probes, &ts, &mut out)))
        });
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("spatial/build");
    group.sample_size(10);
    for n in [10_000usize, 100_000] {
        let set = synthetic_fences(n, SEED);
        for (name, opts) in variants() {
            if matches!(opts.strategy, Strategy::BruteForce)
                || (n == 100_000 && matches!(opts.strategy, Strategy::H3 { .. }))
            {
                continue;
            }
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_batched(
                    || set.clone(),
                    |s| FenceIndex::build(s, &opts),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    let text = synthetic_fences_geojson(100_000, SEED);
    group.bench_function(BenchmarkId::new("parse+validate geojson", 100_000), |b| {
        b.iter(|| {
            FenceSet::from_geojson_str(black_box(&text), &LoadOptions::default()).map(|s| s.len())
        })
    });
    group.finish();
}

fn queries(c: &mut Criterion) {
    let set = synthetic_fences(100_000, SEED);
    let probes = synthetic_points(10_000, SEED + 1, &set);
    let index = FenceIndex::build(set, &IndexOptions::default());
    let ts = tenants(&index, &probes);
    let mut group = c.benchmark_group("spatial/query/100000");
    group.sample_size(10);
    group.throughput(Throughput::Elements(probes.len() as u64));
    group.bench_function("nearest", |b| {
        b.iter(|| {
            probes
                .iter()
                .zip(&ts)
                .filter_map(|(p, &t)| index.nearest(p.point, t))
                .map(|(_, d)| d)
                .sum::<f64>()
        })
    });
    group.bench_function("classify (30 m accuracy)", |b| {
        b.iter(|| {
            probes
                .iter()
                .zip(&ts)
                .filter(|&(p, &t)| {
                    matches!(
                        index.classify(p.point, 30.0, t),
                        fencegate_spatial::Classification::Inside { .. }
                    )
                })
                .count()
        })
    });
    group.bench_function("cell_of (h3o, res 9)", |b| {
        b.iter(|| {
            probes
                .iter()
                .map(|p| u64::from(cell_of(p.point, Resolution::Nine)))
                .fold(0, |a, c| a ^ c)
        })
    });
    group.finish();
}

/// Heap of a 100k-fence build, from the counting allocator: the fence set, the peak while
/// building, and what the finished index (fences included) holds; plus the index's estimate.
fn memory_report() {
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    for (name, opts) in variants() {
        if matches!(opts.strategy, Strategy::BruteForce) {
            continue;
        }
        let baseline = LIVE.load(Ordering::Relaxed);
        let set = synthetic_fences(100_000, SEED);
        let with_set = LIVE.load(Ordering::Relaxed);
        PEAK.store(with_set, Ordering::Relaxed);
        let index = FenceIndex::build(set, &opts);
        let peak = PEAK.load(Ordering::Relaxed);
        let after = LIVE.load(Ordering::Relaxed);
        let stats = index.stats();
        println!(
            "memory {name} 100k: fence set {:.0} MiB; build peak {:.0} MiB; index (fences included) {:.0} MiB; index estimate {:.0} MiB; cells {}, full items {}, partial items {}, oversize {}",
            mib(with_set - baseline),
            mib(peak - baseline),
            mib(after - baseline),
            mib(stats.memory_bytes),
            stats.cells,
            stats.full_items,
            stats.partial_items,
            stats.oversize
        );
        drop(index);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = locate, grid_resolution, build, queries
}

criterion_group! {
    name = cpu_benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = locate_cpu
}

fn main() {
    if std::env::args().skip(1).any(|a| a == "memory") {
        memory_report();
        return;
    }
    benches();
    cpu_benches();
    Criterion::default().configure_from_args().final_summary();
}
