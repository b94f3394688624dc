//! CI smoke runs: every bundled scenario for a few seconds with small
//! numbers against an in-process gateway on port 0, reached the way a
//! remote one is (address, pinned fingerprint, tenant key file, log
//! folder), with the audit on. Nothing acknowledged may be lost or
//! duplicated, and every punch must get the verdict it was built for.

use std::path::Path;
use std::time::Duration;

use fencegate::config::{Config, RawConfig, RawTenant};
use fencegate::serve::Running;
use fencegate_load::scenario::{Overrides, Scenario};
use fencegate_load::target::RemoteSpec;
use fencegate_load::{Options, report::Report};

struct Gateway {
    _dir: tempfile::TempDir,
    cfg: Config,
    rt: tokio::runtime::Runtime,
    running: Option<Running>,
    fences: std::path::PathBuf,
}

impl Gateway {
    /// A gateway on loopback port 0 serving tenant `loadtest` with the
    /// scenario's synthetic fences.
    fn start(s: &Scenario) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fences = dir.path().join("fences.geojson");
        std::fs::write(&fences, fencegate_load::world::synthetic_geojson(s)).unwrap();
        let mut raw = RawConfig::default();
        raw.node.data_dir = dir.path().join("data");
        raw.quic.listen = "127.0.0.1:0".into();
        raw.admin.listen = "127.0.0.1:0".into();
        raw.fences.path = fences.clone();
        // What an operator would configure on a remote gateway for this
        // scenario (the built-in gateway applies `[gateway]` itself).
        if let Some(r) = s.gateway.ping_cell_resolution {
            raw.dedup.ping_cell_resolution = r;
        }
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, fencegate_load::world::synthetic_rules(s)).unwrap();
        raw.attendance.rules = Some(rules);
        raw.tenants = vec![RawTenant {
            id: s.world.tenant.clone(),
            key_file: None,
        }];
        let cfg = Config::compile(raw, "smoke").unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let running = rt.block_on(fencegate::serve::start(&cfg)).unwrap();
        Self {
            _dir: dir,
            cfg,
            rt,
            running: Some(running),
            fences,
        }
    }

    fn options(&self) -> Options {
        let running = self.running.as_ref().unwrap();
        let (tenant, key) = self.cfg.tenants[0].clone();
        Options {
            remotes: vec![RemoteSpec {
                server_name: Some("localhost".into()),
                fingerprint: Some(running.fingerprint.clone()),
                tenant: Some(tenant),
                tenant_key_file: Some(key),
                log_dir: Some(self.cfg.log.dir.clone()),
                ..RemoteSpec::new(running.quic_addr.to_string())
            }],
            fences: Some(self.fences.clone()),
            audit: true,
            client_endpoints: Some(2),
            ..Options::default()
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown(Duration::from_secs(2)));
        }
    }
}

fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"));
    let ov = Overrides {
        duration_s: Some(3.0),
        employees: Some(150),
        devices: Some(40),
        ..Overrides::default()
    };
    let mut s = Scenario::load(&path, &ov).unwrap();
    s.drain_s = 20.0;
    s
}

fn run(name: &str) -> Report {
    let s = scenario(name);
    let gw = Gateway::start(&s);
    let r = fencegate_load::run(&s, &gw.options()).unwrap();
    let audit = r.audit.as_ref().expect("the audit ran");
    assert_eq!(r.lost, Some(0), "{}", r.summary());
    assert_eq!(r.duplicated, Some(0), "{}", r.summary());
    assert!(audit.passed(), "{}", r.summary());
    r
}

fn check_punches(r: &Report) {
    let p = r.punches.as_ref().expect("a punch load");
    let o = &p.outcomes;
    assert_eq!(o.unacked, 0, "{}", r.summary());
    assert_eq!(o.unfinished, 0, "{}", r.summary());
    assert!(
        o.unexpected_verdicts.is_empty(),
        "every punch gets the verdict it was built for: {:?}\n{}",
        o.unexpected_verdicts,
        r.summary()
    );
    assert_eq!(p.acked, p.offered, "{}", r.summary());
    let audit = r.audit.as_ref().unwrap();
    assert_eq!(audit.acked_punches, p.acked, "every ack was audited");
    assert!(o.verdicts.get("Accepted").copied().unwrap_or(0) > 0);
}

#[test]
fn peak_0900_smoke() {
    let r = run("peak-0900");
    check_punches(&r);
    let p = r.punches.as_ref().unwrap();
    let o = &p.outcomes;
    // The mix reached the gateway: refused frames, out-of-range punches,
    // repeats merged and resends after lost acks all happened and audited.
    assert!(
        o.verdicts.get("Rejected").copied().unwrap_or(0) > 0,
        "{:?}",
        o.verdicts
    );
    assert!(
        o.verdicts.get("OutOfRange").copied().unwrap_or(0) > 0,
        "{:?}",
        o.verdicts
    );
    assert!(
        o.verdicts.get("RepeatMerged").copied().unwrap_or(0) > 0,
        "{:?}",
        o.verdicts
    );
    assert!(o.lost_acks > 0);
    assert!(r.audit.as_ref().unwrap().refused_punches > 0);
}

#[test]
fn fleet_smoke() {
    let r = run("fleet");
    let p = r.pings.as_ref().expect("a fleet load");
    assert_eq!(p.sent.connected, 40, "{}", r.summary());
    assert!(p.sent.fixes_sent > 0);
    assert!(
        p.logged.unwrap() > 0,
        "pings reached the log: {}",
        r.summary()
    );
    assert!(p.latency_ms.unwrap().count > 0);
    let audit = r.audit.as_ref().unwrap();
    assert_eq!(
        audit.ping_records,
        p.logged.unwrap(),
        "the tail and the audit agree"
    );
}

#[test]
fn mixed_smoke() {
    let r = run("mixed");
    check_punches(&r);
    assert!(r.pings.as_ref().unwrap().logged.unwrap() > 0);
}

#[test]
fn soak_smoke() {
    let r = run("soak");
    check_punches(&r);
    assert!(r.pings.as_ref().unwrap().logged.unwrap() > 0);
}

#[test]
fn punch_steady_smoke() {
    let r = run("punch-steady");
    check_punches(&r);
}

#[test]
fn fleet_breadcrumbs_smoke() {
    let r = run("fleet-breadcrumbs");
    let p = r.pings.as_ref().expect("a fleet load");
    let logged = p.logged.unwrap();
    // At resolution 15 a device moving 20-40 m/s leaves its cell with
    // nearly every fix: most fixes become records, unlike `fleet`.
    assert!(
        logged * 2 > p.sent.fixes_sent,
        "{logged} of {} fixes logged\n{}",
        p.sent.fixes_sent,
        r.summary()
    );
}

#[test]
fn idle_smoke() {
    let r = run("idle");
    let p = r.pings.as_ref().expect("a fleet load");
    assert_eq!(p.sent.connected, 40, "{}", r.summary());
    let m = r
        .memory
        .as_ref()
        .expect("memory is sampled after the connect phase");
    assert!(m.connections >= 40, "{}", r.summary());
}
