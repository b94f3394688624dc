//! The binary as SREs script it: flags, exit codes, `--json` fields and a
//! self-contained `--html` page, against its own built-in gateway.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fencegate-load"))
}

fn scenario(name: &str) -> String {
    format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn json_and_html_reports_with_audit_and_resumption() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let html = dir.path().join("r.html");
    let out = bin()
        .args(["--scenario", &scenario("peak-0900")])
        .args(["--duration", "2", "--employees", "80", "--audit", "--quiet"])
        .args(["--handshake", "resumed"])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("audit    PASSED"), "{stdout}");

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for f in [
        "scenario",
        "duration_s",
        "offered",
        "acked",
        "achieved_rate",
        "latency_ms",
        "errors",
        "lost",
        "duplicated",
    ] {
        assert!(r.get(f).is_some(), "missing {f}");
    }
    for p in ["p50", "p90", "p99", "p999", "max"] {
        assert!(r["latency_ms"][p].is_number(), "latency_ms.{p}");
        assert!(
            r["punches"]["admitted_latency_ms"][p].is_number(),
            "punches.admitted_latency_ms.{p}"
        );
    }
    // Every punch was acked once, by one admitted attempt, while offered
    // or after: goodput is acked-while-offered per offered second.
    assert_eq!(
        r["punches"]["admitted_latency_ms"]["count"], r["punches"]["acked"],
        "one admitted attempt per acked punch"
    );
    assert!(r["punches"]["goodput_rate"].as_f64().unwrap() > 0.0);
    assert_eq!(r["scenario"], "peak-0900");
    assert_eq!(r["lost"], 0);
    assert_eq!(r["duplicated"], 0);
    assert!(r["acked"].as_u64().unwrap() >= 80);
    assert!(r["baseline_ratio"].is_null(), "no baseline was asked for");
    // Phones with tickets resumed: the gateway counted resumed handshakes.
    let resumed = r["gateway"]["handshakes"]["resumed"].as_u64().unwrap_or(0);
    assert!(resumed > 0, "{}", r["gateway"]);

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.matches("<svg").count() >= 3, "three charts per load");
    assert!(
        !page.contains("<script") && !page.contains("src=\"http"),
        "self-contained"
    );
}

#[test]
fn baseline_ratio_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = bin()
        .args(["--scenario", &scenario("fleet")])
        .args([
            "--duration",
            "2",
            "--devices",
            "20",
            "--quiet",
            "--baseline",
            "raw-udp",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ratio = r["baseline_ratio"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");
    assert!(r["baseline"]["datagrams_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["lost"].is_null(), "no audit was asked for");
}

#[test]
fn bad_input_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\nduration_s = 1\n[punch]\nemployees = 0\nwindow_s = 10\n",
    )
    .unwrap();
    let out = bin().arg("--scenario").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("punch.employees must be at least 1"), "{err}");

    // A remote target without credentials: every missing piece at once.
    let out = bin()
        .args([
            "--scenario",
            &scenario("fleet"),
            "--target",
            "127.0.0.1:4433",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--ca-file") && err.contains("--tenant-key-file"),
        "{err}"
    );
}

#[test]
fn writes_fences_and_rules_for_a_remote_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let fences = dir.path().join("f.geojson");
    let rules = dir.path().join("r.toml");
    for (flag, path) in [("--write-fences", &fences), ("--write-rules", &rules)] {
        let out = bin()
            .args(["--scenario", &scenario("peak-0900"), flag])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&fences).unwrap();
    fencegate_spatial::FenceSet::from_geojson_str(
        &text,
        &fencegate_spatial::LoadOptions::default(),
    )
    .unwrap();
    assert!(
        std::fs::read_to_string(&rules)
            .unwrap()
            .contains("[tenants.loadtest.sites.lt-f0]")
    );
}

#[test]
fn per_target_flags_name_the_problem() {
    // A per-target flag given neither once nor once per --target.
    let out = bin()
        .args(["--scenario", &scenario("fleet")])
        .args(["--target", "127.0.0.1:4433", "--target", "127.0.0.1:4434"])
        .args([
            "--fingerprint",
            "aa",
            "--fingerprint",
            "bb",
            "--fingerprint",
            "cc",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--fingerprint is given 3 times for 2 --target(s)")
            && err.contains("once per --target"),
        "{err}"
    );

    // One log folder for two nodes.
    let out = bin()
        .args(["--scenario", &scenario("fleet")])
        .args(["--target", "127.0.0.1:4433", "--target", "127.0.0.1:4434"])
        .args(["--log-dir", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("each node has its own log folder"), "{err}");

    // Moving employees needs somewhere to move to.
    let out = bin()
        .args(["--scenario", &scenario("peak-0900")])
        .args(["--target", "127.0.0.1:4433", "--move-share", "0.5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--move-share needs at least two --target"),
        "{err}"
    );
}

/// Two gateways as one deployment, from the command line: `--target`,
/// `--fingerprint` and `--log-dir` once per node, one tenant key. Each
/// node gets punches, the JSON has a `targets` entry per node adding up to
/// the run, and the audit reads both logs.
#[test]
fn two_targets_from_the_command_line() {
    use std::os::unix::fs::OpenOptionsExt as _;

    use fencegate::config::{Config, RawConfig, RawTenant};

    let dir = tempfile::tempdir().unwrap();
    let s = fencegate_load::scenario::Scenario::load(
        std::path::Path::new(&scenario("peak-0900")),
        &fencegate_load::scenario::Overrides::default(),
    )
    .unwrap();
    let key = dir.path().join("loadtest.key");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .and_then(|mut f| std::io::Write::write_all(&mut f, "7e".repeat(32).as_bytes()))
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut nodes = Vec::new();
    for i in 0..2 {
        let d = dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let fences = d.join("fences.geojson");
        std::fs::write(&fences, fencegate_load::world::synthetic_geojson(&s)).unwrap();
        let rules = d.join("rules.toml");
        std::fs::write(&rules, fencegate_load::world::synthetic_rules(&s)).unwrap();
        let mut raw = RawConfig::default();
        raw.node.data_dir = d.join("data");
        raw.quic.listen = "127.0.0.1:0".into();
        raw.admin.listen = "127.0.0.1:0".into();
        raw.fences.path = fences;
        raw.attendance.rules = Some(rules);
        raw.tenants = vec![RawTenant {
            id: s.world.tenant.clone(),
            key_file: Some(key.clone()),
        }];
        let cfg = Config::compile(raw, "cli").unwrap();
        let running = rt.block_on(fencegate::serve::start(&cfg)).unwrap();
        nodes.push((cfg, running));
    }
    let json = dir.path().join("r.json");
    let html = dir.path().join("r.html");
    let mut cmd = bin();
    cmd.args(["--scenario", &scenario("peak-0900")])
        .args(["--duration", "2", "--employees", "80", "--audit", "--quiet"])
        .arg("--tenant-key-file")
        .arg(&key)
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html);
    for (cfg, running) in &nodes {
        cmd.args(["--target", &running.quic_addr.to_string()])
            .args(["--fingerprint", &running.fingerprint])
            .arg("--log-dir")
            .arg(&cfg.log.dir);
    }
    let out = cmd.output().unwrap();
    for (_, running) in nodes {
        rt.block_on(running.shutdown(std::time::Duration::from_secs(2)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("audit    PASSED"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let targets = r["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{stdout}");
    let acked: u64 = targets
        .iter()
        .map(|t| t["punches_acked"].as_u64().unwrap())
        .sum();
    assert_eq!(acked, r["punches"]["acked"].as_u64().unwrap(), "{stdout}");
    assert!(
        targets
            .iter()
            .all(|t| t["punches_acked"].as_u64().unwrap() * 4 >= acked),
        "a node got less than a quarter of the punches: {stdout}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<h2>Targets</h2>"), "no per-target table");
    let source = r["audit"]["source"].as_str().unwrap();
    assert!(
        source.contains("node0") && source.contains("node1"),
        "{source}"
    );
}

/// The nice value in a `/proc/.../stat` line (field 19; the name in
/// parentheses may hold spaces, so fields are counted after its `)`).
#[cfg(target_os = "linux")]
fn nice_of(stat: &str) -> i32 {
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(16).unwrap().parse().unwrap()
}

/// A quiet 10 s `punch-steady` run of the harness with `extra` flags, for
/// tests that look at the running process from outside.
#[cfg(target_os = "linux")]
fn small_run(extra: &[&str]) -> std::process::Child {
    bin()
        .args(["--scenario", &scenario("punch-steady")])
        .args(["--duration", "10", "--employees", "500", "--quiet"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// `--client-nice` lowers the harness's client threads and leaves the
/// built-in gateway's at the process's priority, as `ps` shows them while
/// the run goes on.
#[cfg(target_os = "linux")]
#[test]
fn client_nice_lowers_the_clients_and_not_the_gateway() {
    let mut child = small_run(&["--client-nice", "7"]);
    let pid = child.id();
    let mut seen: Vec<(String, i32)> = Vec::new();
    // A thread is named before its start hook lowers it: look until every
    // client thread is lowered and the gateway's threads are up, at most
    // 30 s (or until the run ends), then judge the last look.
    for _ in 0..600 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            break; // the run ended
        };
        let mut now = Vec::new();
        for t in tasks {
            let t = t.unwrap().path();
            if let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(t.join("comm")),
                std::fs::read_to_string(t.join("stat")),
            ) {
                now.push((comm.trim().to_owned(), nice_of(&stat)));
            }
        }
        if now.is_empty() {
            break;
        }
        seen = now;
        let load: Vec<i32> = seen
            .iter()
            .filter(|(n, _)| n == "load")
            .map(|(_, v)| *v)
            .collect();
        if !load.is_empty()
            && load.iter().all(|&v| v == 7)
            && seen.iter().any(|(n, _)| n == "gateway")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let of = |name: &str| -> Vec<i32> {
        seen.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .collect()
    };
    let (load, gateway) = (of("load"), of("gateway"));
    assert!(!load.is_empty() && !gateway.is_empty(), "threads: {seen:?}");
    assert!(load.iter().all(|&v| v == 7), "client threads: {seen:?}");
    assert!(gateway.iter().all(|&v| v == 0), "gateway threads: {seen:?}");
}

/// The harness turns transparent huge pages off for itself
/// (`fencegate::hugepages`: its crowd of connection set-ups re-faulted
/// huge pages and lost two thirds of 3× overload goodput), as
/// `/proc/PID/status` shows while a run goes on. Red if `main` does not.
#[cfg(target_os = "linux")]
#[test]
fn the_harness_runs_without_transparent_huge_pages() {
    let mut child = small_run(&[]);
    let pid = child.id();
    // `main`'s first statement; allow the process a moment to reach it.
    let mut thp = None;
    for _ in 0..100 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        thp = status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        if thp == Some(0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(thp, Some(0), "THP_enabled of the running harness");
}
