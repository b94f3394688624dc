//! The JetStream audit against a real `nats-server -js`: the built-in
//! gateway forwards to the stream through its NATS sink, and the audit
//! finds every acknowledged punch there exactly once.

use std::path::Path;
use std::time::Duration;

use fencegate_load::Options;
use fencegate_load::audit::JetStreamSpec;
use fencegate_load::scenario::{Overrides, Scenario};

#[test]
fn every_acked_punch_reaches_jetstream_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = fencegate_testkit::NatsServer::start(dir.path());
    let url = nats.url();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/mixed.toml");
    let ov = Overrides {
        duration_s: Some(3.0),
        employees: Some(120),
        devices: Some(20),
        ..Overrides::default()
    };
    let s = Scenario::load(&path, &ov).unwrap();
    let spec = JetStreamSpec {
        url,
        stream: "FENCEGATE".into(),
        subject_prefix: "fencegate".into(),
        tenant: s.world.tenant.clone(),
        wait: Duration::from_secs(20),
    };
    let opts = Options {
        audit: true,
        jetstream: Some(spec),
        client_endpoints: Some(2),
        ..Options::default()
    };
    let r = fencegate_load::run(&s, &opts);
    let r = r.unwrap();
    let js = r.audit_jetstream.as_ref().expect("the JetStream audit ran");
    assert!(js.passed(), "{}", r.summary());
    assert!(r.audit.as_ref().unwrap().passed(), "{}", r.summary());
    let p = r.punches.as_ref().unwrap();
    assert_eq!(js.acked_punches, p.acked);
    assert!(js.punch_records > 0 && js.ping_records > 0, "{js:?}");
    assert_eq!(r.lost, Some(0));
    assert_eq!(r.duplicated, Some(0));
}
