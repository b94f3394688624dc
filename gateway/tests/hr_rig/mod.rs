//! What the HR route tests share: a node with two tenants, departments and
//! one token per role, a minimal HTTP client, and the rebuild check (a
//! fresh store fed the node's log equals the node's incremental store,
//! HR records included).

#![allow(dead_code, reason = "each test file uses part of the rig")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fencegate::config::Config;
use fencegate::log::{LogReader, Lsn};
use fencegate::results::{Materializer, ResultsStore};

#[path = "../common/mod.rs"]
pub mod common;

#[allow(unused_imports, reason = "each test file uses part of the rig")]
pub use common::{HQ, Node, now_ms, punch};

/// Far from every test fence: an out-of-range punch (pending approval by
/// the default policy).
pub const FAR: (f64, f64) = (31.40, 121.80);

pub const RULES: &str = r#"
[tenants.acme]
timezone = "Asia/Shanghai"
default_group = "flex"
[tenants.acme.groups.flex]
schedule = "free"
[tenants.acme.groups.office]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri"]
slots = [{ name = "day", start = "09:00", end = "18:00" }]
late_grace_min = 10
[tenants.acme.departments.ops]
supervisor = "E0100"
[tenants.acme.departments.security]
supervisor = "E0200"
[tenants.acme.employees.E1001]
department = "ops"
[tenants.acme.employees.E2001]
department = "security"
[tenants.acme.employees.E3001]
department = "ops"
[tenants.acme.employees.O1]
department = "ops"
group = "office"
[tenants.acme.employees.O2]
department = "security"
group = "office"

[tenants.globex]
timezone = "Asia/Shanghai"
[tenants.globex.departments.ops]
supervisor = "G0100"
[tenants.globex.employees.E1001]
department = "ops"
"#;

pub const TOKENS: [(&str, &str); 5] = [
    ("super", "role = \"super\""),
    ("acme-admin", "role = \"tenant\"\ntenant = \"acme\""),
    (
        "ops-lead",
        "role = \"supervisor\"\ntenant = \"acme\"\ndepartment = \"ops\"",
    ),
    (
        "globex-ops-lead",
        "role = \"supervisor\"\ntenant = \"globex\"\ndepartment = \"ops\"",
    ),
    (
        "e1001",
        "role = \"employee\"\ntenant = \"acme\"\nemployee = \"E1001\"",
    ),
];

pub fn secret(name: &str) -> String {
    format!("{name}-secret-0123456789")
}

pub fn write_config(dir: &Path) -> std::path::PathBuf {
    write_config_with(dir, None)
}

/// The config, with the results store at `results` (a `postgres://` URL)
/// instead of the SQLite default.
pub fn write_config_with(dir: &Path, results: Option<&str>) -> std::path::PathBuf {
    std::fs::write(dir.join("fences.geojson"), common::FENCES).unwrap();
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    let mut text = format!(
        "[node]\ndata_dir = {:?}\n[quic]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("data")
    );
    for (name, role) in TOKENS {
        let f = dir.join(format!("{name}.token"));
        std::fs::write(&f, secret(name)).unwrap();
        text.push_str(&format!(
            "[[admin.tokens]]\nname = {name:?}\n{role}\ntoken_file = {f:?}\n"
        ));
    }
    text.push_str(&format!(
        "[fences]\npath = {:?}\n[attendance]\nrules = {:?}\n{}[[tenants]]\nid = \"acme\"\n[[tenants]]\nid = \"globex\"\n",
        dir.join("fences.geojson"),
        dir.join("rules.toml"),
        results.map_or(String::new(), |u| format!("results = {u:?}\n")),
    ));
    let path = dir.join("fencegate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub async fn start() -> Node {
    start_with(None).await
}

/// A node whose results store is at `results` (SQLite when `None`).
pub async fn start_with(results: Option<&str>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        Config::load(&write_config_with(dir.path(), results)).unwrap_or_else(|e| panic!("{e}"));
    Node::start_with(dir, cfg).await
}

/// A node whose attendance rules are `rules` instead of [`RULES`] (the
/// same tenants and tokens), for tests that need their own groups; its
/// results store at `results` (a `postgres://` URL) or SQLite when `None`.
pub async fn start_with_rules(rules: &str, results: Option<&str>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config_with(dir.path(), results);
    std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    Node::start_with(dir, cfg).await
}

/// One HTTP/1.1 request; the status and the body (raw bytes as text).
pub async fn http(
    node: &Node,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = node.running.admin_addr.to_string();
    let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {}\r\n", secret(t)))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        common::dechunk(body)
    } else {
        body.to_owned()
    };
    (code, body)
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Polls `GET path` (super) until `done` holds for its JSON; bounded.
pub async fn wait_for(
    node: &Node,
    path: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..400 {
        let (code, body) = http(node, "GET", path, Some("super"), None).await;
        assert_eq!(code, 200, "{path}: {body}");
        last = json(&body);
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path}: condition not reached; last answer {last:#}");
}

/// Closes every day due by `now` on the node's store, as the node's
/// materializer does on its tick (every 60 s): a test whose answers depend
/// on which days are closed makes them the same however long it ran.
pub async fn close_due(node: &Node, now: i64) {
    let (rules, _) = fencegate::rules::load::load(&node.cfg).unwrap();
    let live = ResultsStore::open(&node.cfg.attendance.results_url)
        .await
        .unwrap();
    Materializer::new(live, rules).close_due(now).await.unwrap();
}

/// Rebuilds a fresh store from the node's log (as `fencegate results
/// rebuild` does) and checks it says what the node's incremental store
/// says: every day row (revisions aside) and every HR row.
pub async fn assert_rebuild_equals_incremental(node: &Node) {
    let (rules, _) = fencegate::rules::load::load(&node.cfg).unwrap();
    let live = ResultsStore::open(&node.cfg.attendance.results_url)
        .await
        .unwrap();
    // The rebuild goes to a fresh SQLite file whatever the node uses: the
    // same log must say the same thing in either engine.
    let dir = tempfile::tempdir().unwrap();
    let fresh = ResultsStore::open_sqlite(&dir.path().join("rebuilt.sqlite"))
        .await
        .unwrap();
    let m = Materializer::new(fresh.clone(), Arc::clone(&rules));
    let mut reader =
        LogReader::open_dir(node.log_dir(), Lsn(0), Duration::from_millis(50)).unwrap();
    let now = now_ms();
    m.rebuild(&mut reader, now).await.unwrap();
    // The node closes due days on its own tick; close them on the live
    // store as of the same time, as that tick would.
    close_due(node, now).await;
    let (a, b) = (
        live.all_rows().await.unwrap(),
        fresh.all_rows().await.unwrap(),
    );
    assert_eq!(a.len(), b.len(), "day rows: live {a:#?}\nrebuilt {b:#?}");
    for (x, y) in a.iter().zip(&b) {
        assert!(x.same_result(y), "live {x:#?}\nrebuilt {y:#?}");
    }
    assert_eq!(live.all_hr().await.unwrap(), fresh.all_hr().await.unwrap());
}
