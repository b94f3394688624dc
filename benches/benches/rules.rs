//! The attendance rules (the pipeline's classify step): the per-punch
//! decision alone for each schedule kind and evidence, the per-employee
//! memory, and a whole punch through the pipeline with and without rules in
//! the same run. Target: rule evaluation adds at most 300 ns per punch.
//!
//! `cargo bench -p fencegate-benches --bench rules`

use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fencegate::fences::Fences;
use fencegate::pipeline::{Pipeline, PipelineConfig, PunchDecision, Scratch, Session};
use fencegate::rules::config::{CompileContext, compile_text, fixed_qr_keys};
use fencegate::rules::holidays::Calendars;
use fencegate::rules::judge::{Location, judge};
use fencegate::rules::state::{EmployeeState, Observed};
use fencegate::rules::{AttendanceSettings, Rules, RulesHandle};
use fencegate_benches::{synthetic_fences, synthetic_points, tenant_name};
use fencegate_schema::{
    Channel, Limits, Position, PunchKind, PunchMethod, PunchMsg, PunchView, Request, TerminalAuth,
    parse_frame,
};
use fencegate_spatial::{FenceIndex, IndexOptions, LoadOptions};
use flatbuffers::FlatBufferBuilder;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tuesday 2025-03-04 09:05 in Shanghai.
const T0: i64 = 1_741_050_300_000;
const EMPLOYEES: usize = 10_000;

/// A tenant section with the three schedule kinds, the China holiday
/// calendar, a site with Wi-Fi and QR, and `EMPLOYEES` listed employees.
fn tenant_rules(id: &str) -> String {
    let mut s = format!(
        r#"
[tenants.{id}]
timezone = "Asia/Shanghai"
holidays = ["cn-2025"]
default_group = "office"
min_interval_min = 30
[tenants.{id}.groups.office]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri"]
slots = [{{ name = "day", start = "09:00", end = "18:00" }}]
late_grace_min = 10
[tenants.{id}.groups.guards]
schedule = "shift"
shifts = [{{ name = "night", start = "22:00", end = "06:00" }}]
rotation = ["night", "night", "rest", "rest"]
rotation_start = "2025-01-06"
[tenants.{id}.groups.sales]
schedule = "free"
[tenants.{id}.departments.ops]
supervisor = "E0"
[tenants.{id}.sites.hq]
wifi = ["ac:84:c6:01:02:03", "ac:84:c6:01:02:04"]
qr = true
terminals = ["term-1"]
"#
    );
    for e in 0..EMPLOYEES {
        let group = ["office", "guards", "sales"][e % 3];
        s.push_str(&format!(
            "[tenants.{id}.employees.E{e}]\ngroup = \"{group}\"\ndepartment = \"ops\"\ndevices = [\"phone-{e}\"]\n"
        ));
    }
    s
}

fn compile(text: &str, tenants: &[&str]) -> Rules {
    let mut keys = fixed_qr_keys(1);
    let mut ctx = CompileContext {
        calendars: Calendars::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/holidays"),
        ),
        settings: AttendanceSettings::default(),
        qr_key: &mut keys,
    };
    compile_text(text, "bench", tenants, &mut ctx).unwrap_or_else(|e| panic!("{e}"))
}

fn punch(i: usize, employee: String, method: PunchMethod, qr: Option<String>) -> PunchMsg {
    PunchMsg {
        punch_id: (i as u128 + 1).to_be_bytes(),
        employee_id: employee,
        kind: if i % 2 == 0 {
            PunchKind::In
        } else {
            PunchKind::Out
        },
        method,
        device_time_ms: T0,
        position: (method == PunchMethod::Gps).then(|| Position::new(31.2304, 121.4737, 10.0)),
        bssids: if method == PunchMethod::Wifi {
            vec![[0x11; 6], [0xac, 0x84, 0xc6, 1, 2, 4]]
        } else {
            vec![]
        },
        ssid: None,
        qr_payload: qr,
        terminal_auth: TerminalAuth::None,
        offline: false,
        mock_location: false,
    }
}

/// The classify step alone, per case; frames are parsed outside the loop.
fn bench_judge(c: &mut Criterion) {
    let rules = compile(&tenant_rules("acme"), &["acme"]);
    let acme = rules.tenant("acme");
    let settings = rules.settings.clone();
    let qr_code = acme.sites[0]
        .qr
        .as_ref()
        .unwrap()
        .0
        .code("acme", "hq", T0 / 30_000);
    let cases: [(&str, &str, PunchMethod, Option<String>, usize); 6] = [
        (
            "fixed schedule, listed employee",
            "acme",
            PunchMethod::Gps,
            None,
            0,
        ),
        ("shift across midnight", "acme", PunchMethod::Gps, None, 1),
        ("free schedule", "acme", PunchMethod::Gps, None, 2),
        ("unconfigured tenant", "initech", PunchMethod::Gps, None, 0),
        ("wifi (BSSID lookup)", "acme", PunchMethod::Wifi, None, 0),
        ("qr (HMAC check)", "acme", PunchMethod::Qr, Some(qr_code), 0),
    ];
    let mut group = c.benchmark_group("rules/judge");
    group.throughput(Throughput::Elements(1));
    let limits = Limits::default();
    for (name, tenant, method, qr, offset) in cases {
        let frames: Vec<Vec<u8>> = (0..1_024)
            .map(|i| {
                let e = (i * 3 + offset) % EMPLOYEES;
                let mut fbb = FlatBufferBuilder::new();
                punch(i, format!("E{e}"), method, qr.clone())
                    .encode_into(&mut fbb)
                    .to_vec()
            })
            .collect();
        let views: Vec<PunchView<'_>> = frames
            .iter()
            .map(|f| match parse_frame(f, Channel::Stream, T0, &limits) {
                Ok(Request::Punch(v)) => v,
                other => panic!("{other:?}"),
            })
            .collect();
        let tr = rules.tenant(tenant);
        let mut label = String::with_capacity(96);
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new(name, "10k employees"), |b| {
            b.iter(|| {
                i = (i + 1) % views.len();
                let j = judge(
                    T0,
                    &settings,
                    tr,
                    "phone-x",
                    &views[i],
                    Location::Inside,
                    &mut label,
                );
                black_box((j.status, j.flags, label.len()))
            });
        });
    }
    group.finish();
}

/// The per-employee memory: compare with the last punch and remember this one.
fn bench_observe(c: &mut Criterion) {
    let rules = compile(&tenant_rules("acme"), &["acme"]);
    let acme = rules.tenant("acme");
    let mut group = c.benchmark_group("rules/observe");
    group.throughput(Throughput::Elements(1));
    let mut state = EmployeeState::default();
    let mut t = T0;
    group.bench_function("gps punch, speed and repeat checks", |b| {
        b.iter(|| {
            t += 60_000;
            let o = state.observe(
                acme,
                None,
                &Observed {
                    at_ms: t,
                    kind: PunchKind::In,
                    method: PunchMethod::Gps,
                    auth: TerminalAuth::None,
                    fix: Some((31.2304, 121.4737 + (t % 7) as f64 * 1e-4, 10.0)),
                    record_id: [1; 16],
                },
                true,
            );
            black_box(o)
        });
    });
    group.finish();
}

/// A new punch through the whole pipeline (100k fences), once with rules
/// for every tenant and once with none: the difference is what the rules add.
fn bench_pipeline(c: &mut Criterion) {
    let n = 100_000;
    let set = synthetic_fences(n, 42);
    let probes = synthetic_points(4_096, 9, &set);
    let tenants: BTreeSet<String> = probes.iter().map(|p| tenant_name(p.tenant)).collect();
    let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let text: String = names.iter().map(|t| tenant_rules(t)).collect();
    let rules = compile(&text, &names);
    let index = FenceIndex::build(set, &IndexOptions::default());
    let fences = Arc::new(Fences::new(index, LoadOptions::default()));
    let cfg = PipelineConfig {
        node: "bench".into(),
        repeat_window_ms: 300_000,
        idempotency_horizon_ms: 86_400_000,
        heartbeat_ms: 300_000,
        cell_resolution: h3o::Resolution::Nine,
        max_punch_keys: 50_000_000,
        max_employees: 1_000_000,
        max_devices: 10_000_000,
    };
    let limits = Limits::default();
    let mut group = c.benchmark_group("rules/pipeline punch");
    group.throughput(Throughput::Elements(1));
    for with_rules in [false, true] {
        let p = if with_rules {
            let handle = Arc::new(RulesHandle::new(rules.clone(), String::new()));
            Pipeline::with_rules(cfg.clone(), fences.clone(), handle, T0)
        } else {
            Pipeline::new(cfg.clone(), fences.clone(), T0)
        };
        let name = if with_rules {
            "with rules (10k employees per tenant)"
        } else {
            "without rules"
        };
        let mut scratch = Scratch::default();
        let mut fbb = FlatBufferBuilder::new();
        let mut i: usize = 0;
        group.bench_function(BenchmarkId::new(name, "100k fences"), |b| {
            b.iter_batched(
                || {
                    i += 1;
                    let pr = probes[i % probes.len()];
                    let mut msg = punch(i, format!("E{}", i % EMPLOYEES), PunchMethod::Gps, None);
                    msg.kind = PunchKind::In;
                    msg.position = Some(Position::new(pr.point.lat(), pr.point.lon(), 10.0));
                    (
                        Session::new(&tenant_name(pr.tenant), "phone"),
                        msg.encode_into(&mut fbb).to_vec(),
                    )
                },
                |(s, bytes)| {
                    let Ok(Request::Punch(view)) =
                        parse_frame(&bytes, Channel::Stream, T0, &limits)
                    else {
                        unreachable!()
                    };
                    match p.punch(T0, &s, &view, &mut scratch) {
                        PunchDecision::Record {
                            record,
                            ack,
                            pending,
                        } => {
                            black_box(record.len());
                            p.settle(
                                &pending,
                                fencegate::pipeline::Settled::Committed(ack.verdict),
                            );
                        }
                        other => {
                            black_box(&other);
                        }
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench_judge, bench_observe, bench_pipeline
}
criterion_main!(benches);
