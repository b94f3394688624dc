//! The JetStream audit against a real `nats-server -js`: the built-in
//! gateway forwards to the stream through its NATS sink, and the audit
//! finds every acknowledged punch there exactly once.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fencegate_load::Options;
use fencegate_load::audit::JetStreamSpec;
use fencegate_load::scenario::{Overrides, Scenario};

struct Nats(Child);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/bin",
    ]) {
        let p = Path::new(dir).join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "nats-server is not installed: this test needs it. Run the tests with `bash .ci/test` (it installs Debian's nats-server) or `apt-get install nats-server`"
    );
}

fn start_nats(store: &Path) -> (Nats, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(nats_server())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (Nats(child), format!("nats://127.0.0.1:{port}"))
}

#[test]
fn every_acked_punch_reaches_jetstream_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_nats, url) = start_nats(dir.path());
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
