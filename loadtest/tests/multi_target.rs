//! The harness against three gateway nodes of one deployment: in-process
//! nodes with `[cluster]` claims on one `nats-server -js`, each forwarding
//! to the one stream. Employees and devices spread over the three
//! (`--target` three times); half the employees send their repeat and
//! their lost-ack resend to another node. Every node must get its share,
//! the per-target counts must add up to the run's, repeats moved to another
//! node must still merge, and the audit over the three logs and over the
//! stream must find every acknowledged punch exactly once.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fencegate::cluster::RawCluster;
use fencegate::config::{Config, RawConfig, RawTenant};
use fencegate::serve::Running;
use fencegate_load::Options;
use fencegate_load::audit::{Book, JetStreamSpec, audit_log};
use fencegate_load::scenario::{Overrides, Scenario};
use fencegate_load::target::RemoteSpec;

const NODES: usize = 3;

/// Node `i`'s configuration: the scenario's fences and rules, the shared
/// tenant key, claims and a NATS sink on `nats`.
fn node_config(s: &Scenario, dir: &Path, i: usize, key: &Path, nats: &str) -> Config {
    let d = dir.join(format!("node{i}"));
    std::fs::create_dir_all(&d).unwrap();
    let fences = d.join("fences.geojson");
    std::fs::write(&fences, fencegate_load::world::synthetic_geojson(s)).unwrap();
    let rules = d.join("rules.toml");
    std::fs::write(&rules, fencegate_load::world::synthetic_rules(s)).unwrap();
    let mut raw = RawConfig::default();
    raw.node.name = format!("gw-{i}");
    raw.node.data_dir = d.join("data");
    raw.quic.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.fences.path = fences;
    raw.attendance.rules = Some(rules);
    raw.tenants = vec![RawTenant {
        id: s.world.tenant.clone(),
        key_file: Some(key.to_owned()),
    }];
    raw.sinks = vec![fencegate::sink::RawSink {
        name: "js".into(),
        kind: "nats".into(),
        url: Some(nats.into()),
        retry_initial_ms: Some(50),
        retry_max_ms: Some(500),
        ..Default::default()
    }];
    raw.cluster = RawCluster {
        enabled: true,
        urls: vec![nats.into()],
        // One server: the buckets have one replica.
        replicas: 1,
        // Fences and rules are the same file on every node here.
        shared_config: false,
        // A claim that times out fails open and accepts a moved repeat as
        // new; a loaded 2-core box must not turn that into a red test (the
        // timeout's own behaviour is gateway/tests/multi_node.rs's).
        timeout_ms: 2_000,
        ..RawCluster::default()
    };
    Config::compile(raw, "multi-target").unwrap()
}

#[test]
fn multi_node_three_targets_share_the_load_and_the_audit_finds_every_ack_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = fencegate_testkit::NatsServer::start(&dir.path().join("nats"));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/mixed.toml");
    let ov = Overrides {
        duration_s: Some(3.0),
        employees: Some(150),
        devices: Some(30),
        ..Overrides::default()
    };
    let mut s = Scenario::load(&path, &ov).unwrap();
    s.drain_s = 20.0;
    {
        // Enough repeats and lost acks that moved ones happen at 150.
        let mix = &mut s.punch.as_mut().unwrap().mix;
        mix.repeat = 0.3;
        mix.lost_ack = 0.1;
    }
    let key: PathBuf = dir.path().join("loadtest.key");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .and_then(|mut f| std::io::Write::write_all(&mut f, "3c".repeat(32).as_bytes()))
        .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfgs: Vec<Config> = (0..NODES)
        .map(|i| node_config(&s, dir.path(), i, &key, &nats.url()))
        .collect();
    let nodes: Vec<Running> = cfgs
        .iter()
        .map(|c| rt.block_on(fencegate::serve::start(c)).unwrap())
        .collect();
    // The claims must answer before the run: a node that fails open would
    // accept a moved repeat as new.
    for n in &nodes {
        let c = n.edge.cluster.clone().expect("claims configured");
        let mut open = false;
        for _ in 0..400 {
            if c.buckets().is_some() {
                open = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(open, "the claims buckets did not open within 20 s");
    }

    let remotes = nodes
        .iter()
        .zip(&cfgs)
        .map(|(n, c)| RemoteSpec {
            server_name: Some("localhost".into()),
            fingerprint: Some(n.fingerprint.clone()),
            tenant: Some(s.world.tenant.clone()),
            tenant_key_file: Some(key.clone()),
            log_dir: Some(c.log.dir.clone()),
            ..RemoteSpec::new(n.quic_addr.to_string())
        })
        .collect();
    let spec = JetStreamSpec {
        url: nats.url(),
        stream: "FENCEGATE".into(),
        subject_prefix: "fencegate".into(),
        tenant: s.world.tenant.clone(),
        wait: Duration::from_secs(20),
    };
    // The audit reads the stream's position before the run; the sinks
    // would create it only with their first delivery.
    rt.block_on(fencegate_load::audit::ensure_stream(&spec))
        .unwrap();
    let opts = Options {
        remotes,
        move_share: 0.5,
        audit: true,
        jetstream: Some(spec),
        client_endpoints: Some(1),
        ..Options::default()
    };
    let r = fencegate_load::run(&s, &opts).unwrap();
    let summary = r.summary();
    for n in nodes {
        rt.block_on(n.shutdown(Duration::from_secs(2)));
    }

    // Every acknowledged punch once, across the three logs and the stream.
    let log = r.audit.as_ref().expect("the audit of the three logs ran");
    let js = r.audit_jetstream.as_ref().expect("the stream audit ran");
    assert!(log.passed(), "{summary}");
    assert!(js.passed(), "{summary}");
    assert_eq!(r.lost, Some(0), "{summary}");
    assert_eq!(r.duplicated, Some(0), "{summary}");
    let p = r.punches.as_ref().unwrap();
    assert_eq!(log.acked_punches, p.acked, "{summary}");
    assert_eq!(js.acked_punches, p.acked, "{summary}");
    assert_eq!(p.outcomes.unacked, 0, "{summary}");

    // Each node got its share, and the shares add up to the run.
    assert_eq!(r.targets.len(), NODES, "{summary}");
    let sum = |f: fn(&fencegate_load::spread::TargetReport) -> u64| -> u64 {
        r.targets.iter().map(f).sum()
    };
    assert_eq!(sum(|t| t.punches_offered), p.offered, "{summary}");
    assert_eq!(sum(|t| t.punches_acked), p.acked, "{summary}");
    let pings = r.pings.as_ref().unwrap();
    assert_eq!(sum(|t| t.devices_connected), pings.sent.connected);
    assert_eq!(sum(|t| t.datagrams_sent), pings.sent.datagrams_sent);
    for t in &r.targets {
        assert!(
            t.punches_acked * 6 >= p.acked && t.devices_connected * 6 >= pings.sent.connected,
            "target {} got less than a sixth of the load (a third expected):\n{summary}",
            t.target
        );
    }
    // ... and it is really there: each node's own log has records.
    for c in &cfgs {
        let own = audit_log(
            &c.log.dir,
            fencegate::log::Lsn(0),
            &Book::default(),
            [0; 4],
            "-",
        )
        .unwrap();
        assert!(
            own.records_scanned > 0,
            "{} holds no record:\n{summary}",
            c.log.dir.display()
        );
    }

    // Moved repeats and resends happened, and the claims merged them.
    let o = &p.outcomes;
    assert!(o.moved > 0, "nobody moved:\n{summary}");
    assert_eq!(sum(|t| t.punches_moved_in), o.moved, "{summary}");
    assert!(
        o.verdicts.get("RepeatMerged").copied().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(
        o.unexpected_verdicts.is_empty(),
        "a repeat on another node was not merged: {:?}\n{summary}",
        o.unexpected_verdicts
    );
    assert!(summary.contains("targets"), "{summary}");
}
