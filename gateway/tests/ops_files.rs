//! The deployment files under `ops/`, each checked by a tool that
//! understands it, the way an operator meets them: `systemd-analyze verify`
//! and `security` for the unit, the Kubernetes schemas
//! (`kubernetes-validate`) for the manifests, `nats-server -t` for the NATS
//! config, and for the Containerfile (no container engine runs here) its
//! instructions parsed and the config it rewrites compiled by
//! `fencegate check-config`. `.ci/test` installs the checkers when missing.
//! (No container engine runs on the CI machine, so the image is not built
//! here; the build stage itself runs `fencegate check-config` on the
//! rewritten config, so a broken rewrite fails the image build too.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("gateway/ has a parent")
        .to_path_buf()
}

fn tool(name: &str, install: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/bin",
    ]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} is not installed: run the tests with `bash .ci/test` (it installs it) or {install}"
    );
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("the checker runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The unit with its binary paths pointed at the binary under test, so
/// `systemd-analyze verify` checks an executable that exists.
fn unit_copy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("ops/systemd/fencegate.service")).unwrap();
    assert!(
        text.contains("ExecStart=/usr/bin/fencegate serve --config /etc/fencegate/fencegate.toml")
    );
    let p = dir.join("fencegate.service");
    std::fs::write(
        &p,
        text.replace("/usr/bin/fencegate", env!("CARGO_BIN_EXE_fencegate")),
    )
    .unwrap();
    p
}

#[test]
fn systemd_unit_verifies_cleanly() {
    let sa = tool("systemd-analyze", "`apt-get install systemd`");
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let (ok, out) = run(Command::new(&sa).arg("verify").arg(&unit));
    // verify exits 0 on unknown keys and misplaced settings; they are
    // warnings on stderr, which a correct unit does not produce.
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");
}

#[test]
fn systemd_unit_is_hardened() {
    let sa = tool("systemd-analyze", "`apt-get install systemd`");
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let (_, out) = run(Command::new(&sa)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    let level: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for ")
                .nth(1)?
                .split(": ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no exposure level in: {out}"));
    // 0 is a fully sandboxed unit, 10 none at all; systemd calls < 2 "OK".
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{out}");
    let text = std::fs::read_to_string(root().join("ops/systemd/fencegate.service")).unwrap();
    for must in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=fencegate",
        "CapabilityBoundingSet=",
        "LimitNOFILE=",
        "Restart=on-failure",
    ] {
        assert!(text.contains(must), "the unit lacks {must}");
    }
    // The drain (10 s in-flight, 2 s idle, 5 s forwarders) fits the stop timeout.
    let stop: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec is set")
        .parse()
        .unwrap();
    assert!(stop >= 20, "TimeoutStopSec={stop} does not cover the drain");
}

/// A checker that fails on a bad file: a broken copy of the unit is
/// flagged, so the clean verdict above means something.
#[test]
fn systemd_verify_flags_a_broken_unit() {
    let sa = tool("systemd-analyze", "`apt-get install systemd`");
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let text = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("TimeoutStopSec=", "TimeoutStopSecs=");
    std::fs::write(&unit, text).unwrap();
    let (_, out) = run(Command::new(&sa).arg("verify").arg(&unit));
    assert!(out.contains("TimeoutStopSecs"), "{out}");
}

fn k8s_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("ops/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn kubernetes_manifests_match_the_schemas() {
    let kv = || {
        let mut c = Command::new("python3");
        c.args(["-m", "kubernetes_validate"]);
        c
    };
    let (ok, out) = run(kv().arg("--version"));
    assert!(
        ok,
        "kubernetes-validate is not installed: run the tests with `bash .ci/test` (it installs it) or `python3 -m pip install kubernetes-validate`: {out}"
    );
    let files = k8s_files();
    for kind in ["statefulset", "services", "pdb", "configmap", "secret"] {
        assert!(
            files.iter().any(|f| f.ends_with(format!("{kind}.yaml"))),
            "ops/k8s/{kind}.yaml is missing"
        );
    }
    let (ok, out) = run(kv().arg("--strict").args(&files));
    assert!(ok, "kubernetes-validate --strict ops/k8s/*.yaml:\n{out}");
    // Every manifest the kustomization lists exists, and every one is listed.
    let k = std::fs::read_to_string(root().join("ops/k8s/kustomization.yaml")).unwrap();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(
            k.contains(&format!("- {name}")),
            "kustomization.yaml does not list {name}"
        );
    }
    // And the checker does fail on a wrong field.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let sts = std::fs::read_to_string(root().join("ops/k8s/statefulset.yaml")).unwrap();
    std::fs::write(
        &bad,
        sts.replace("containerPort: 4433", "containerPort: \"4433x\""),
    )
    .unwrap();
    let (ok, _) = run(kv().arg("--strict").arg(&bad));
    assert!(!ok, "kubernetes-validate accepted a string port");
}

/// The ConfigMap's files are what the gateway accepts: the config compiles
/// (paths rewritten into a temp dir holding the Secret's files), the rules
/// and fences load.
#[test]
fn kubernetes_configmap_holds_a_config_the_gateway_accepts() {
    let cm = std::fs::read_to_string(root().join("ops/k8s/configmap.yaml")).unwrap();
    let block = |key: &str| -> String {
        let start = cm
            .find(&format!("  {key}: |\n"))
            .unwrap_or_else(|| panic!("configmap.yaml has no {key}"));
        cm[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["config", "secrets", "tls", "data"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("config/fences.geojson"), block("fences.geojson")).unwrap();
    std::fs::write(d.join("data/rules.toml"), block("rules.toml")).unwrap();
    std::fs::write(d.join("secrets/admin-token"), "a".repeat(64)).unwrap();
    std::fs::write(d.join("secrets/tenant-acme.key"), "ab".repeat(32)).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(d.join("tls/tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(d.join("tls/tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let holidays = root().join("config/holidays");
    let toml = block("fencegate.toml")
        .replace("/var/lib/fencegate", &d.join("data").to_string_lossy())
        .replace("/etc/fencegate/holidays", &holidays.to_string_lossy())
        .replace("/etc/fencegate", &d.to_string_lossy());
    let path = d.join("fencegate.toml");
    std::fs::write(&path, toml).unwrap();
    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_fencegate"))
        .arg("check-config")
        .arg(&path));
    assert!(ok, "check-config on the ConfigMap's fencegate.toml: {out}");
    // check-config compiled the rules too; loading them applies them (QR
    // keys) the way start-up does.
    let cfg = fencegate::config::Config::load(&path).unwrap();
    if let Err(e) = fencegate::rules::load::load(&cfg) {
        panic!("the ConfigMap's rules.toml does not load: {e:#}");
    }
}

/// The Containerfile's instructions, continuation lines joined.
fn containerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("ops/container/Containerfile")).unwrap();
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (ins, args) = cur.split_once(' ').unwrap_or((&cur, ""));
        out.push((ins.to_uppercase(), args.trim().to_string()));
        cur.clear();
    }
    out
}

#[test]
fn containerfile_is_multi_stage_non_root_with_ports_volume_and_health() {
    let ins = containerfile();
    let froms: Vec<_> = ins.iter().filter(|(i, _)| i == "FROM").collect();
    assert!(froms.len() >= 2, "not multi-stage: {froms:?}");
    assert!(froms[0].1.contains(" AS build"), "{froms:?}");
    // The builder's toolchain is the workspace's MSRV.
    let ws = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let msrv = ws
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        froms[0].1.contains(&format!("rust:{msrv}")),
        "{froms:?} vs MSRV {msrv}"
    );
    let last_from = ins.iter().rposition(|(i, _)| i == "FROM").unwrap();
    let runtime = &ins[last_from..];
    let user = runtime
        .iter()
        .find(|(i, _)| i == "USER")
        .map(|(_, a)| a.clone())
        .expect("the runtime stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric uid");
    assert_ne!(uid, 0, "runs as root");
    let has = |i: &str, needle: &str| runtime.iter().any(|(x, a)| x == i && a.contains(needle));
    assert!(has("EXPOSE", "4433/udp"), "QUIC port");
    assert!(has("EXPOSE", "9464/tcp"), "admin port");
    assert!(has("VOLUME", "/var/lib/fencegate"), "data volume");
    assert!(has("HEALTHCHECK", "\"health\""), "health check");
    assert!(has("ENTRYPOINT", "/usr/bin/fencegate"), "entrypoint");
    assert!(has("CMD", "\"serve\""), "serve by default");
}

/// The build stage rewrites config/fencegate.toml with sed for the image's
/// paths; run the same expressions here and compile the result, so a change
/// to the example config that the expressions no longer match is caught.
#[test]
fn containerfile_config_rewrite_still_applies() {
    let ins = containerfile();
    let run_step = ins
        .iter()
        .find(|(i, a)| i == "RUN" && a.contains("sed -i"))
        .map(|(_, a)| a.clone())
        .expect("the build stage rewrites the config with sed");
    let exprs: Vec<String> = run_step
        .split(" -e ")
        .skip(1)
        .map(|e| {
            e.trim()
                .split('\'')
                .nth(1)
                .expect("quoted sed expression")
                .to_string()
        })
        .collect();
    assert!(exprs.len() >= 4, "{exprs:?}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fencegate.toml");
    std::fs::copy(root().join("config/fencegate.toml"), &cfg).unwrap();
    let mut sed = Command::new("sed");
    sed.arg("-i");
    for e in &exprs {
        sed.arg("-e").arg(e);
    }
    assert!(sed.arg(&cfg).status().unwrap().success());
    let text = std::fs::read_to_string(&cfg).unwrap();
    for want in [
        "data_dir = \"/var/lib/fencegate\"",
        "listen = \"0.0.0.0:4433\"",
        "listen = \"0.0.0.0:9464\"",
        "path = \"/etc/fencegate/fences.geojson\"",
        "rules = \"/var/lib/fencegate/rules.toml\"",
        "holidays_dir = \"/etc/fencegate/holidays\"",
    ] {
        assert!(text.contains(want), "the image's config lacks {want}");
    }
    assert!(
        !text.contains("\"config/"),
        "a path still points at config/"
    );
    // Compile it with the image's files where the image puts them.
    let d = dir.path();
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::copy(root().join("config/rules.toml"), d.join("data/rules.toml")).unwrap();
    std::fs::copy(
        root().join("config/fences.geojson"),
        d.join("fences.geojson"),
    )
    .unwrap();
    let text = text
        .replace("/var/lib/fencegate", &d.join("data").to_string_lossy())
        .replace(
            "/etc/fencegate/holidays",
            &root().join("config/holidays").to_string_lossy(),
        )
        .replace("/etc/fencegate", &d.to_string_lossy());
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_fencegate"))
        .arg("check-config")
        .arg(&cfg));
    assert!(ok, "check-config on the image's config: {out}");
}

#[test]
fn nats_config_is_valid_and_syncs_before_puback() {
    let conf = root().join("ops/nats/nats-server.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.lines().any(|l| l.trim() == "sync_interval: always"),
        "ops/nats/nats-server.conf must fsync before a PubAck (sync_interval: always)"
    );
    let bin = fencegate_testkit::nats_server_binary();
    let (_, version) = run(Command::new(&bin).arg("--version"));
    // Debian bookworm ships 2.9.10, which predates sync_interval (2.10):
    // check the rest of the file there, as the file's comment tells operators.
    let checked = if version.contains("v2.9.") {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nats-server.conf");
        std::fs::write(
            &p,
            text.lines()
                .filter(|l| l.trim() != "sync_interval: always")
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .unwrap();
        let r = run(Command::new(&bin).arg("-c").arg(&p).arg("-t"));
        drop(dir);
        r
    } else {
        run(Command::new(&bin).arg("-c").arg(&conf).arg("-t"))
    };
    assert!(checked.0, "nats-server -t: {}", checked.1);
    let stream: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("ops/nats/stream.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stream["num_replicas"], 3);
    assert_eq!(stream["storage"], "file");
    assert!(stream["duplicate_window"].as_u64().unwrap() >= 300_000_000_000);
}
