//! Attendance over a real node: the admin API's role boundaries (one test
//! per boundary), rule changes through `PUT /v1/rules` (validation, atomic
//! swap, audit), QR codes served to a screen and punched with, and
//! `fencegate export` reading the log through the per-segment time index.
//!
//! The node's rules use a free schedule, so verdicts do not depend on the
//! wall-clock time the test runs at.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{HQ, Node, now_ms, punch};
use fencegate::client::PunchReply;
use fencegate::config::Config;
use fencegate_schema::{PunchAckMsg, PunchMethod, PunchMsg, Reason, TerminalAuth, Verdict};
use serde_json::Value;

const RULES: &str = r#"
[tenants.acme]
timezone = "Asia/Shanghai"
default_group = "flex"
out_of_range = "approval"

[tenants.acme.groups.flex]
schedule = "free"

[tenants.acme.departments.ops]
supervisor = "E0100"

[tenants.acme.departments.security]
supervisor = "E0200"

[tenants.acme.employees.E1001]
department = "ops"
devices = ["phone-e1001"]

[tenants.acme.employees.E2001]
department = "security"

[tenants.acme.employees.E3001]
department = "ops"

[tenants.acme.sites.sh]
wifi = ["ac:84:c6:01:02:03"]
qr = true
terminals = ["term-sh"]

[tenants.globex]
timezone = "Europe/Berlin"

[tenants.globex.sites.berlin]
qr = true
"#;

/// (name, role line, secret)
const TOKENS: [(&str, &str, &str); 6] = [
    ("ops", "role = \"super\"", "super-secret-0123456789"),
    (
        "acme-admin",
        "role = \"tenant\"\ntenant = \"acme\"",
        "acme-admin-secret-0123456789",
    ),
    (
        "globex-admin",
        "role = \"tenant\"\ntenant = \"globex\"",
        "globex-admin-secret-0123456789",
    ),
    (
        "ops-lead",
        "role = \"supervisor\"\ntenant = \"acme\"\ndepartment = \"ops\"",
        "ops-lead-secret-0123456789",
    ),
    (
        "e1001",
        "role = \"employee\"\ntenant = \"acme\"\nemployee = \"E1001\"",
        "e1001-secret-0123456789",
    ),
    (
        "e2001",
        "role = \"employee\"\ntenant = \"acme\"\nemployee = \"E2001\"",
        "e2001-secret-0123456789",
    ),
];

fn secret(name: &str) -> &'static str {
    TOKENS.iter().find(|t| t.0 == name).unwrap().2
}

/// Writes a configuration file (fences, rules, tokens) into `dir`.
fn write_config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("fences.geojson"), common::FENCES).unwrap();
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    let mut text = format!(
        "[node]\ndata_dir = {:?}\n[quic]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("data")
    );
    for (name, role, secret) in TOKENS {
        let f = dir.join(format!("{name}.token"));
        std::fs::write(&f, secret).unwrap();
        text.push_str(&format!(
            "[[admin.tokens]]\nname = {name:?}\n{role}\ntoken_file = {f:?}\n"
        ));
    }
    text.push_str(&format!(
        "[fences]\npath = {:?}\n[attendance]\nrules = {:?}\n[[tenants]]\nid = \"acme\"\n[[tenants]]\nid = \"globex\"\n",
        dir.join("fences.geojson"),
        dir.join("rules.toml")
    ));
    let path = dir.join("fencegate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn node() -> (Node, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    (Node::start_with(dir, cfg).await, path)
}

fn ack(r: PunchReply) -> PunchAckMsg {
    match r {
        PunchReply::Ack(a) => a,
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// A minimal HTTP/1.1 client, enough for the admin API.
async fn http(
    node: &Node,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = node.running.admin_addr.to_string();
    let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {}\r\n", secret(t)))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn employees(v: &Value) -> Vec<String> {
    let mut e: Vec<String> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["employee_id"].as_str().unwrap().to_owned())
        .collect();
    e.sort();
    e
}

/// Punches for the role tests: E1001 normal, E1001 from a strange phone
/// (flagged), E2001 and E3001 out of range (pending approval), a globex one.
async fn punch_some(node: &Node) {
    let away = (HQ.0 + 0.01, HQ.1);
    let c = node.client("acme", "phone-e1001").await;
    assert_eq!(
        ack(c.punch(&punch(1, "E1001", HQ)).await.unwrap()).verdict,
        Verdict::Accepted
    );
    let stranger = node.client("acme", "phone-x").await;
    let mut out = punch(2, "E1001", HQ);
    out.kind = fencegate_schema::PunchKind::Out;
    assert_eq!(
        ack(stranger.punch(&out).await.unwrap()).verdict,
        Verdict::Accepted
    );
    for (id, e) in [(3, "E2001"), (4, "E3001")] {
        let a = ack(c.punch(&punch(id, e, away)).await.unwrap());
        assert_eq!(a.verdict, Verdict::OutOfRange);
    }
    let g = node.client("globex", "g-phone").await;
    ack(g.punch(&punch(5, "G1", common::GLOBEX)).await.unwrap());
}

fn window() -> String {
    format!("from=0&to={}", now_ms() + 3_600_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_scoped_by_role() {
    let (node, _) = node().await;
    punch_some(&node).await;
    let w = window();

    // Super: every tenant, or one.
    let (code, body) = http(&node, "GET", &format!("/v1/records?{w}"), Some("ops"), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        employees(&json(&body)),
        ["E1001", "E1001", "E2001", "E3001", "G1"]
    );

    // Tenant admin: its own tenant; another tenant's is refused.
    let (code, body) = http(
        &node,
        "GET",
        &format!("/v1/records?{w}"),
        Some("acme-admin"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        employees(&json(&body)),
        ["E1001", "E1001", "E2001", "E3001"]
    );
    let (code, _) = http(
        &node,
        "GET",
        &format!("/v1/records?tenant=globex&{w}"),
        Some("acme-admin"),
        None,
    )
    .await;
    assert_eq!(code, 403);

    // Supervisor of ops: ops' anomalies and pending approvals only (not
    // E1001's normal punch, not security's E2001).
    let (code, body) = http(
        &node,
        "GET",
        &format!("/v1/records?{w}"),
        Some("ops-lead"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    assert_eq!(employees(&v), ["E1001", "E3001"]);
    for r in v["records"].as_array().unwrap() {
        assert_eq!(r["department"], "ops");
        let flagged = !r["anomalies"].as_array().unwrap().is_empty();
        assert!(flagged || r["needs_approval"] == true, "{r}");
    }
    let pending = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["employee_id"] == "E3001")
        .unwrap();
    assert_eq!(pending["status"], "out_of_range_pending_approval");
    assert_eq!(pending["supervisor"], "E0100");
    let (code, _) = http(
        &node,
        "GET",
        &format!("/v1/records?tenant=globex&{w}"),
        Some("ops-lead"),
        None,
    )
    .await;
    assert_eq!(code, 403, "a supervisor never reads another tenant");

    // Employee: their own records only.
    let (code, body) = http(
        &node,
        "GET",
        &format!("/v1/records?{w}"),
        Some("e1001"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(employees(&json(&body)), ["E1001", "E1001"]);
    let (code, _) = http(
        &node,
        "GET",
        &format!("/v1/records?employee=E2001&{w}"),
        Some("e1001"),
        None,
    )
    .await;
    assert_eq!(code, 403, "an employee never reads a colleague's records");
    let (code, body) = http(
        &node,
        "GET",
        &format!("/v1/records?{w}"),
        Some("e2001"),
        None,
    )
    .await;
    assert_eq!(employees(&json(&body)), ["E2001"], "{code}");

    // Status filter and CSV.
    let (code, body) = http(
        &node,
        "GET",
        &format!("/v1/records?status=out_of_range_pending_approval&format=csv&{w}"),
        Some("acme-admin"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body.lines().count(), 3, "header and two rows:\n{body}");
    assert!(body.starts_with("record_id,tenant,employee_id"));

    // No token, or a bad one.
    let (code, _) = http(&node, "GET", &format!("/v1/records?{w}"), None, None).await;
    assert_eq!(code, 401);
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_can_edit_a_record_and_readers_cannot_configure() {
    let (node, _) = node().await;
    punch_some(&node).await;
    // There is no route that changes a record, for any role, the super
    // admin included.
    for token in ["ops", "acme-admin", "ops-lead", "e1001"] {
        for method in ["PUT", "POST", "PATCH", "DELETE"] {
            let (code, _) = http(&node, method, "/v1/records", Some(token), Some("{}")).await;
            assert_eq!(code, 405, "{method} /v1/records as {token}");
        }
    }
    // Supervisors and employees read records only.
    for token in ["ops-lead", "e1001"] {
        for (method, path) in [
            ("GET", "/v1/rules"),
            ("PUT", "/v1/rules"),
            ("GET", "/v1/rules/audit"),
            ("GET", "/v1/fences"),
            ("PUT", "/v1/fences"),
            ("GET", "/v1/qr/sh"),
        ] {
            let (code, body) = http(&node, method, path, Some(token), Some("")).await;
            assert_eq!(code, 403, "{method} {path} as {token}: {body}");
        }
    }
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_changes_are_validated_swapped_atomically_and_audited() {
    let (node, cfg_path) = node().await;
    let rules_path = cfg_path.with_file_name("rules.toml");

    // Invalid rules: every problem listed, nothing changed.
    let bad = RULES
        .replace("Asia/Shanghai", "Mars/Base")
        .replace("\"free\"", "\"sometimes\"");
    let (code, body) = http(&node, "PUT", "/v1/rules", Some("ops"), Some(&bad)).await;
    assert_eq!(code, 422, "{body}");
    let problems = json(&body)["problems"].as_array().unwrap().len();
    assert_eq!(problems, 2, "{body}");
    assert_eq!(std::fs::read_to_string(&rules_path).unwrap(), RULES);

    // A tenant admin changes its own section: out-of-range is now refused.
    let section = "[tenants.acme]\ntimezone = \"Asia/Shanghai\"\nout_of_range = \"reject\"\n";
    let (code, body) = http(&node, "PUT", "/v1/rules", Some("acme-admin"), Some(section)).await;
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["version"], 2);
    assert_eq!(v["tenants_changed"], serde_json::json!(["acme"]));
    let c = node.client("acme", "phone-1").await;
    let a = ack(c
        .punch(&punch(10, "E9", (HQ.0 + 0.01, HQ.1)))
        .await
        .unwrap());
    assert_eq!(
        (a.verdict, a.reason),
        (Verdict::Rejected, Reason::OutOfRange)
    );
    assert!(a.record_id.is_some(), "a rule refusal is on record");
    // The file was rewritten; globex's section is untouched.
    let on_disk = std::fs::read_to_string(&rules_path).unwrap();
    assert!(
        on_disk.contains("reject") && on_disk.contains("Europe/Berlin"),
        "{on_disk}"
    );

    // ...but never another tenant's.
    let (code, _) = http(
        &node,
        "PUT",
        "/v1/rules",
        Some("acme-admin"),
        Some("[tenants.globex]\ntimezone = \"UTC\"\n"),
    )
    .await;
    assert_eq!(code, 403);

    // Reading: a tenant admin sees its own section only.
    let (code, body) = http(&node, "GET", "/v1/rules", Some("globex-admin"), None).await;
    assert_eq!(code, 200);
    assert!(
        body.contains("Europe/Berlin") && !body.contains("acme"),
        "{body}"
    );
    let (_, body) = http(&node, "GET", "/v1/rules", Some("ops"), None).await;
    assert!(body.contains("[tenants.acme]") && body.contains("[tenants.globex]"));

    // The audit log names who changed what; a tenant sees its own changes.
    let (_, body) = http(&node, "GET", "/v1/rules/audit", Some("ops"), None).await;
    let entries = json(&body)["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "refused changes are not changes: {body}");
    assert_eq!(entries[0]["actor"], "acme-admin");
    assert_eq!(entries[0]["scope"], "acme");
    assert_eq!(entries[0]["version"], 2);
    let (_, body) = http(&node, "GET", "/v1/rules/audit", Some("acme-admin"), None).await;
    assert_eq!(json(&body)["entries"].as_array().unwrap().len(), 1);
    let (_, body) = http(&node, "GET", "/v1/rules/audit", Some("globex-admin"), None).await;
    assert_eq!(json(&body)["entries"].as_array().unwrap().len(), 0);
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_codes_served_to_a_screen_punch_once_per_employee() {
    let (node, _) = node().await;
    let (code, body) = http(&node, "GET", "/v1/qr/sh", Some("acme-admin"), None).await;
    assert_eq!(code, 200, "{body}");
    let qr = json(&body)["code"].as_str().unwrap().to_owned();
    let (code, svg) = http(
        &node,
        "GET",
        "/v1/qr/sh?format=svg",
        Some("acme-admin"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert!(svg.contains("<svg"));
    // A super token names the tenant; globex has no site "sh".
    let (code, _) = http(&node, "GET", "/v1/qr/sh", Some("ops"), None).await;
    assert_eq!(code, 400);
    let (code, _) = http(&node, "GET", "/v1/qr/sh", Some("globex-admin"), None).await;
    assert_eq!(code, 404, "a tenant never sees another tenant's QR sites");

    let qr_punch = |id: u128, employee: &str| PunchMsg {
        method: PunchMethod::Qr,
        position: None,
        qr_payload: Some(qr.clone()),
        ..punch(id, employee, HQ)
    };
    let c = node.client("acme", "phone-e1001").await;
    let a = ack(c.punch(&qr_punch(1, "E1001")).await.unwrap());
    assert_eq!((a.verdict, a.reason), (Verdict::Accepted, Reason::None));
    let mut again = qr_punch(2, "E1001");
    again.kind = fencegate_schema::PunchKind::Out;
    let a = ack(c.punch(&again).await.unwrap());
    assert_eq!((a.verdict, a.reason), (Verdict::Rejected, Reason::QrReplay));
    let a = ack(c.punch(&qr_punch(3, "E3001")).await.unwrap());
    assert_eq!(
        a.verdict,
        Verdict::Accepted,
        "another employee, the same screen"
    );
    // globex's devices cannot use acme's code.
    let g = node.client("globex", "g-phone").await;
    let a = ack(g.punch(&qr_punch(4, "G1")).await.unwrap());
    assert_eq!(
        (a.verdict, a.reason),
        (Verdict::Rejected, Reason::QrInvalid)
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_punches_for_many_employees_concurrently() {
    let (node, _) = node().await;
    let term = node.client("acme", "term-sh").await;
    let punches: Vec<PunchMsg> = (0..40u128)
        .map(|i| PunchMsg {
            method: PunchMethod::Terminal,
            terminal_auth: TerminalAuth::Face,
            position: None,
            ..punch(100 + i, &format!("E{}", 5000 + i), HQ)
        })
        .collect();
    // Several punch streams in flight at once on one connection.
    let acks = futures::future::join_all(punches.iter().map(|p| term.punch(p))).await;
    for a in acks {
        let a = ack(a.unwrap());
        assert_eq!((a.verdict, a.reason), (Verdict::Accepted, Reason::None));
    }
    let recs = node.records();
    assert_eq!(recs.len(), 40);
    let dir = node.log_dir();
    let mut reader = fencegate::log::LogReader::open_dir(
        &dir,
        fencegate::log::Lsn(0),
        Duration::from_millis(10),
    )
    .unwrap();
    while let Some(e) = reader.next_entry().unwrap() {
        let rec = fencegate_schema::parse_record(e.payload).unwrap();
        let fencegate_schema::RecordBodyView::Punch(p) = rec.body() else {
            panic!()
        };
        assert_eq!(
            p.anomaly_flags() & fencegate_schema::anomaly::UNUSUAL_DEVICE,
            0
        );
        assert_eq!(rec.attendance().unwrap().site, Some("sh"));
    }
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_reads_the_log_through_the_time_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    // Two runs of the node: each opens a new segment.
    let cfg = Config::load(&path).unwrap();
    let first = fencegate::serve::start(&cfg).await.unwrap();
    let connector = fencegate::client::Connector::new(
        first.quic_addr,
        "localhost",
        fencegate::edge::tls::Trust::Pinned(first.fingerprint.clone()),
        true,
    )
    .unwrap();
    let ring = fencegate::serve::keyring(&cfg).unwrap();
    let token = ring
        .issue("acme", "phone-1", now_ms() / 1000 + 600)
        .unwrap();
    let c = connector.connect(&token, "phone-1").await.unwrap();
    ack(c.punch(&punch(1, "E1001", HQ)).await.unwrap());
    ack(c.punch(&punch(2, "E3001", HQ)).await.unwrap());
    first.shutdown(Duration::from_secs(2)).await;
    let between = now_ms() + 1;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let second = fencegate::serve::start(&cfg).await.unwrap();
    let connector = fencegate::client::Connector::new(
        second.quic_addr,
        "localhost",
        fencegate::edge::tls::Trust::Pinned(second.fingerprint.clone()),
        true,
    )
    .unwrap();
    let c = connector.connect(&token, "phone-1").await.unwrap();
    ack(c.punch(&punch(3, "E2001", HQ)).await.unwrap());
    second.shutdown(Duration::from_secs(2)).await;

    let export = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_fencegate"))
            .args(["export", "--config"])
            .arg(&path)
            .args(["--tenant", "acme"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let to = (now_ms() + 60_000).to_string();
    let (csv, summary) = export(&["--from", "0", "--to", &to]);
    assert_eq!(csv.lines().count(), 4, "header and three rows:\n{csv}");
    assert!(summary.contains("exported 3 record(s)"), "{summary}");
    // Only the second run's punch: the first segment is skipped by its index.
    let (json_lines, summary) = export(&[
        "--from",
        &between.to_string(),
        "--to",
        &to,
        "--format",
        "json",
    ]);
    let rows: Vec<Value> = json_lines.lines().map(json).collect();
    assert_eq!(rows.len(), 1, "{json_lines}");
    assert_eq!(rows[0]["employee_id"], "E2001");
    assert_eq!(rows[0]["group"], "flex");
    assert!(summary.contains("read 1 of 2 log segment(s)"), "{summary}");
    let index = dir.path().join("data/index/records");
    assert_eq!(
        std::fs::read_dir(&index).unwrap().count(),
        1,
        "the sealed segment's summary is cached"
    );
    // A filter by employee.
    let (csv, _) = export(&["--from", "0", "--to", &to, "--employee", "E3001"]);
    assert_eq!(csv.lines().count(), 2, "{csv}");
}
