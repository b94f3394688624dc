//! A tiny saturation ramp (`fleet-saturation` with a few devices and three
//! short steps) against a real gateway on loopback, reached the way a
//! remote one is, with its `/metrics` scraped: every step and the knee
//! have their figures, the raw-UDP baseline of the same run is beside the
//! knee, and every datagram sent is reconciled with the gateway's
//! counters (0 unexplained). Its own test binary: the gateway's metric
//! recorder is process-wide, and no other test may add to it.

use std::path::Path;
use std::time::Duration;

use fencegate::config::{Config, RawConfig, RawTenant};
use fencegate::serve::Running;
use fencegate_load::scenario::{Overrides, Scenario};
use fencegate_load::target::RemoteSpec;
use fencegate_load::{BaselineKind, Options};

#[test]
fn a_tiny_ramp_reports_its_knee_and_balances() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/fleet-saturation.toml");
    let ov = Overrides {
        devices: Some(20),
        ..Overrides::default()
    };
    let mut s = Scenario::load(&path, &ov).unwrap();
    {
        let f = s.fleet.as_mut().unwrap();
        f.ping_interval_s = 0.5;
        f.connect_rate = 200.0;
        let r = s.ramp.as_mut().unwrap();
        r.max_steps = 3;
        r.step_s = 1.5;
        r.factor = 1.5;
        // Bounds a loaded CI machine never reaches at 20 devices: the test
        // is about the figures, not this machine's knee.
        r.max_p99_ms = 10_000.0;
        r.max_drop_share = 0.5;
    }
    s.drain_s = 5.0;

    let dir = tempfile::tempdir().unwrap();
    let fences = dir.path().join("fences.geojson");
    std::fs::write(&fences, fencegate_load::world::synthetic_geojson(&s)).unwrap();
    let mut raw = RawConfig::default();
    raw.node.data_dir = dir.path().join("data");
    raw.quic.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.fences.path = fences.clone();
    // What the scenario's [gateway] asks of a gateway started apart.
    raw.quic.ping_datagrams_per_s = s.gateway.ping_datagrams_per_s.unwrap();
    raw.quic.ping_burst = s.gateway.ping_burst.unwrap();
    raw.tenants = vec![RawTenant {
        id: s.world.tenant.clone(),
        key_file: None,
    }];
    let cfg = Config::compile(raw, "saturation").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let running: Running = rt.block_on(fencegate::serve::start(&cfg)).unwrap();
    let (tenant, key) = cfg.tenants[0].clone();
    let opts = Options {
        remotes: vec![RemoteSpec {
            server_name: Some("localhost".into()),
            fingerprint: Some(running.fingerprint.clone()),
            tenant: Some(tenant),
            tenant_key_file: Some(key),
            log_dir: Some(cfg.log.dir.clone()),
            metrics_url: Some(format!("http://{}/metrics", running.admin_addr)),
            ..RemoteSpec::new(running.quic_addr.to_string())
        }],
        // This process: harness and gateway together, but measured.
        gateway_pid: Some(std::process::id()),
        fences: Some(fences),
        baseline: Some(BaselineKind::RawUdp),
        client_endpoints: Some(2),
        ..Options::default()
    };
    let r = fencegate_load::run(&s, &opts).unwrap();
    rt.block_on(running.shutdown(Duration::from_secs(2)));
    let summary = r.summary();

    let ramp = r.ramp.as_ref().expect("a ramp report");
    assert_eq!(ramp.steps.len(), 3, "{summary}");
    for st in &ramp.steps {
        assert!(
            st.passed,
            "step {} within the loose bounds: {}\n{summary}",
            st.step, st.why
        );
        assert!(
            st.offered_fixes_per_s > 0.0 && st.processed_fixes_per_s > 0.0,
            "{summary}"
        );
        assert!(st.datagrams_per_s > 0.0, "{summary}");
        assert!(st.p99_ms.is_some(), "fix→log latency measured: {summary}");
        assert!(
            st.send_late_p99_ms.is_some(),
            "the harness's own lateness measured: {summary}"
        );
        assert!(st.gateway_cpu_cores.is_some_and(|c| c > 0.0), "{summary}");
        assert_eq!(st.unexplained, Some(0), "{summary}");
    }
    // Each step offers `factor` times the last.
    let (a, b) = (&ramp.steps[0], &ramp.steps[2]);
    let rise = b.offered_fixes_per_s / a.offered_fixes_per_s;
    assert!((rise - 2.25).abs() < 0.1, "×1.5 twice: ×{rise}\n{summary}");
    let knee = ramp.knee.as_ref().expect("a knee");
    assert_eq!(knee.step, 2, "the last passing step: {summary}");
    assert!(
        ramp.knee_baseline_ratio.is_some_and(|x| x > 0.0),
        "{summary}"
    );
    assert!(
        r.baseline.is_some(),
        "the raw-UDP baseline ran in the same run"
    );
    assert!(summary.contains("knee"), "{summary}");

    // The knee's own run: every datagram handed to QUIC accounted for.
    let p = r.pings.as_ref().unwrap();
    let c = p.reconciliation.as_ref().expect("reconciled with /metrics");
    assert_eq!(c.unexplained, 0, "{}", c.line());
    assert_eq!(c.handed_to_quic, p.sent.datagrams_sent);
    assert_eq!(
        p.send_late_ms.count, p.sent.datagrams_sent,
        "every datagram handed to QUIC has its lateness"
    );
    assert!(c.gateway_received > 0 && c.processed > 0, "{}", c.line());
    assert_eq!(
        c.on_wire,
        c.gateway_received + c.lost_before_quinn,
        "{}",
        c.line()
    );
    assert_eq!(
        c.read,
        c.rate_limit + c.refused + c.processed,
        "{}",
        c.line()
    );
    let html = fencegate_load::html::render(&r);
    assert!(html.contains("Saturation ramp") && html.contains("Where the datagrams went"));
}
