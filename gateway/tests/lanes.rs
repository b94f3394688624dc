//! The lanes' thread priorities, seen from outside as an operator's `ps`
//! would see them: the real `fencegate serve` with `quic.punch_listen`
//! runs the shared lane's workers at `quic.shared_lane_nice` and the punch
//! lane and the log writer at the process's own priority; without
//! `punch_listen` every thread keeps the process's. Linux only: elsewhere
//! a nice value is the whole process's and the setting does nothing.
//! Also the process's transparent huge pages, off (`fencegate::hugepages`).
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::process::Child;

/// A configuration with or without a punch address.
fn write_config(dir: &Path, punch_listen: bool) -> std::path::PathBuf {
    std::fs::write(dir.join("fences.geojson"), common::FENCES).unwrap();
    let punch = if punch_listen {
        "punch_listen = \"127.0.0.1:0\"\nshared_lane_nice = 10"
    } else {
        ""
    };
    let cfg = format!(
        r#"
[node]
data_dir = "{d}/data"
[quic]
listen = "127.0.0.1:0"
{punch}
[admin]
listen = "127.0.0.1:0"
[fences]
path = "{d}/fences.geojson"
[[tenants]]
id = "acme"
"#,
        d = dir.display()
    );
    let path = dir.join("fencegate.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Starts the binary and waits for its banner (every lane started).
fn spawn(config: &Path) -> Child {
    common::serve_binary(config).child
}

/// The nice value in a `/proc/.../stat` line (field 19; the name in
/// parentheses may hold spaces, so fields are counted after its `)`).
fn nice_of(stat: &str) -> i32 {
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(16).unwrap().parse().unwrap()
}

/// Every thread of `pid`: (name, nice).
fn threads(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("stat")),
        ) else {
            continue; // a thread that ended meanwhile
        };
        out.push((comm.trim().to_owned(), nice_of(&stat)));
    }
    out
}

/// The nice values of the threads named `name` (at least one).
fn nice_of_named(threads: &[(String, i32)], name: &str) -> Vec<i32> {
    let v: Vec<i32> = threads
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .collect();
    assert!(!v.is_empty(), "no thread named {name:?} in {threads:?}");
    v
}

#[test]
fn the_shared_lane_runs_nicer_than_the_punch_lane_and_the_log() {
    let own = nice_of(&std::fs::read_to_string("/proc/self/stat").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(&write_config(dir.path(), true));
    let all = threads(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let shared = own.clamp(10, 19);
    // The results store's SQLite connection thread is the shared lane's
    // too: sqlx starts it from the thread that opens the connection.
    for name in ["shared-lane", "sqlx-sqlite-wor"] {
        for n in nice_of_named(&all, name) {
            assert_eq!(n, shared, "{name} is on the shared lane: {all:?}");
        }
    }
    for name in ["punch-lane", "fencegate-log"] {
        for n in nice_of_named(&all, name) {
            assert_eq!(n, own, "{name} keeps the process's priority: {all:?}");
        }
    }
}

#[test]
fn without_a_punch_address_every_thread_keeps_the_process_priority() {
    let own = nice_of(&std::fs::read_to_string("/proc/self/stat").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(&write_config(dir.path(), false));
    let all = threads(child.id());
    let _ = child.kill();
    let _ = child.wait();
    for n in nice_of_named(&all, "shared-lane") {
        assert_eq!(n, own, "{all:?}");
    }
}

/// `THP_enabled` of a `/proc/PID/status` text.
fn thp_enabled(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The node turns transparent huge pages off for itself, as
/// `/proc/PID/status` shows while it serves: red if `main` does not (the
/// child inherits this test's setting, which is on).
#[test]
fn the_node_runs_without_transparent_huge_pages() {
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(&write_config(dir.path(), false));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    let status = status.unwrap();
    if thp_enabled(&own) == Some(0) {
        eprintln!("this test's own process already runs without huge pages: nothing to tell apart");
    }
    assert_eq!(thp_enabled(&status), Some(0), "{status}");
}
