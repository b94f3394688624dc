//! `fencegate check-config` refuses exactly what `fencegate serve` refuses.
//!
//! Found from outside: `check-config` passed a `log.max_bytes` that `serve`
//! then rejected when it opened the log, and it never compiled the rules
//! file, read the fences, the keys, the admin token files or the TLS
//! certificate that start-up needs. An operator's `ExecStartPre` (see
//! ops/systemd) is only worth something if the two agree. These tests run
//! the binary the way an operator does: a configuration with a problem of
//! each kind must be refused by both commands, naming every problem. (The
//! TOML is checked first; the files it names are checked once it compiles,
//! since a wrong setting may be the wrong path.)

use std::path::Path;
use std::process::{Command, Output};

fn fencegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fencegate"))
        .args(args)
        .env("FENCEGATE_LOG", "error")
        .output()
        .expect("run fencegate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A node configuration in `dir`, with `extra` TOML appended to `[log]`
/// and the files it names under `dir`.
fn config(dir: &Path, log: &str, extra: &str) -> std::path::PathBuf {
    let d = dir.display();
    let toml = format!(
        r#"
[node]
name = "check-1"
data_dir = "{d}/data"

[quic]
listen = "127.0.0.1:0"
{extra_quic}

[admin]
listen = "127.0.0.1:0"

[[admin.tokens]]
name = "ops"
role = "super"
token_file = "{d}/admin.token"

[fences]
path = "{d}/fences.geojson"

[[tenants]]
id = "acme"
key_file = "{d}/acme.key"

[[tenants]]
id = "globex"
key_file = "{d}/globex.key"

[attendance]
rules = "{d}/rules.toml"
holidays_dir = "{holidays}"

[log]
{log}
"#,
        holidays = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/holidays")
            .display(),
        extra_quic = extra,
    );
    let path = dir.join("fencegate.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The files a good configuration names.
fn good_files(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::write(dir.join("admin.token"), "s".repeat(32)).unwrap();
    std::fs::write(dir.join("acme.key"), "ab".repeat(32)).unwrap();
    std::fs::write(dir.join("globex.key"), "cd".repeat(32)).unwrap();
    std::fs::copy(
        root.join("config/fences.geojson"),
        dir.join("fences.geojson"),
    )
    .unwrap();
    std::fs::copy(root.join("config/rules.toml"), dir.join("rules.toml")).unwrap();
}

#[test]
fn check_config_accepts_a_good_configuration_and_its_files() {
    let dir = tempfile::tempdir().unwrap();
    good_files(dir.path());
    let cfg = config(dir.path(), "", "");
    let out = fencegate(&["check-config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(": ok ("), "{}", text(&out));
    // Checking changes nothing: no data dir, no generated key or token.
    assert!(
        !dir.path().join("data").exists(),
        "check-config wrote files"
    );
}

/// Runs `serve` on a configuration expected to be refused and returns what
/// it said.
fn serve_refuses(cfg: &Path) -> String {
    let served = Command::new(env!("CARGO_BIN_EXE_fencegate"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("FENCEGATE_LOG", "error")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = text(&served);
    assert!(!served.status.success(), "serve started: {said}");
    said
}

#[test]
fn check_config_refuses_the_log_size_serve_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    good_files(d);
    // Four segments of 1 MiB, but not two write batches (4 MiB each):
    // check-config said ok and serve's log refused it at open.
    let cfg = config(d, "segment_bytes = 1048576\nmax_bytes = 4194304", "");
    let checked = fencegate(&["check-config", cfg.to_str().unwrap()]);
    let said = text(&checked);
    assert!(
        !checked.status.success(),
        "check-config accepted it: {said}"
    );
    assert!(said.contains("log.max_bytes = 4194304"), "{said}");
    let said = serve_refuses(&cfg);
    assert!(said.contains("log.max_bytes = 4194304"), "{said}");
    // --toml-only (an image build, files mounted later) refuses it too.
    let toml_only = fencegate(&["check-config", "--toml-only", cfg.to_str().unwrap()]);
    assert!(!toml_only.status.success(), "{}", text(&toml_only));
}

#[test]
fn check_config_refuses_every_file_problem_serve_refuses_and_serve_names_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    good_files(d);
    // One problem of each kind, each in a different file.
    // The rules: a tenant in a zone that does not exist.
    let rules = std::fs::read_to_string(d.join("rules.toml"))
        .unwrap()
        .replacen(
            "timezone = \"Asia/Shanghai\"",
            "timezone = \"Mars/Olympus\"",
            1,
        );
    std::fs::write(d.join("rules.toml"), rules).unwrap();
    // The fences: not GeoJSON.
    std::fs::write(d.join("fences.geojson"), "{\"type\": \"Nope\"}").unwrap();
    // The admin token file: missing.
    std::fs::remove_file(d.join("admin.token")).unwrap();
    // The tenant key: not hex.
    std::fs::write(d.join("acme.key"), "not a key").unwrap();
    // TLS: a certificate that is not there.
    let tls = format!(
        "cert = \"{0}/missing.crt\"\nkey = \"{0}/missing.key\"",
        d.display()
    );
    let cfg = config(d, "", &tls);
    let wants = [
        "Mars/Olympus",
        "fences.path",
        "admin token 'ops'",
        "acme.key",
        "quic.cert",
    ];

    let checked = fencegate(&["check-config", cfg.to_str().unwrap()]);
    let said = text(&checked);
    assert!(
        !checked.status.success(),
        "check-config accepted it: {said}"
    );
    for want in wants {
        assert!(
            said.contains(want),
            "check-config did not name {want:?}: {said}"
        );
    }
    assert!(
        said.contains("5 problem(s)"),
        "one line per problem: {said}"
    );

    // `serve` refuses the same configuration for the same reasons, all at
    // once, before it opens the log.
    let said = serve_refuses(&cfg);
    for want in wants {
        assert!(said.contains(want), "serve did not name {want:?}: {said}");
    }
    assert!(
        !d.join("data/log").exists(),
        "serve opened the log before refusing the configuration"
    );

    // --toml-only checks the text alone: these are all file problems.
    let toml_only = fencegate(&["check-config", "--toml-only", cfg.to_str().unwrap()]);
    assert!(toml_only.status.success(), "{}", text(&toml_only));
}
