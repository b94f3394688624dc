//! Attendance over a real node: the admin API's role boundaries (one test
//! per boundary), rule changes through `PUT /v1/rules` (validation, atomic
//! swap, audit), QR codes served to a screen and by `fencegate qr` and
//! punched with, `GET /v1/records` and `fencegate export` reading the log
//! through the per-segment time index, approval copies on a real
//! `nats-server`, and error messages that name the thing and the fix.
//!
//! The node's rules use a free schedule, so verdicts do not depend on the
//! wall-clock time the test runs at.

mod common;
mod sink_rig;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{HQ, Node, now_ms, punch};
use fencegate::client::PunchReply;
use fencegate::config::Config;
use fencegate::sink::RawSink;
use fencegate_schema::{PunchAckMsg, PunchMethod, PunchMsg, Reason, TerminalAuth, Verdict};
use fencegate_testkit::NatsServer;
use serde_json::Value;
use sink_rig::{config_with, nats_sink, read_stream, wait_until};

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

# globex has a department of the same name as acme's, and an employee with
# the same id as acme's E1001: neither may ever show through acme's tokens.
[tenants.globex.departments.ops]
supervisor = "G0100"

[tenants.globex.employees.G1]
department = "ops"

[tenants.globex.employees.E1001]
department = "ops"

[tenants.globex.sites.berlin]
qr = true
"#;

/// (name, role line, secret)
const TOKENS: [(&str, &str, &str); 7] = [
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
        "globex-ops-lead",
        "role = \"supervisor\"\ntenant = \"globex\"\ndepartment = \"ops\"",
        "globex-ops-lead-secret-0123456789",
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
    write_config_with(dir, "")
}

/// [`write_config`] with extra `[admin]` settings.
fn write_config_with(dir: &Path, admin: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("fences.geojson"), common::FENCES).unwrap();
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    let mut text = format!(
        "[node]\ndata_dir = {:?}\n[quic]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n",
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

/// A request to the admin API of `node` with the named token (`None`: no
/// `Authorization` header).
async fn http(
    node: &Node,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {}", secret(t)));
    http_at(node.running.admin_addr, method, path, auth.as_deref(), body).await
}

/// A minimal HTTP/1.1 client, enough for the admin API; `auth` is the
/// whole `Authorization` header value.
async fn http_at(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = addr.to_string();
    let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
    let body = body.unwrap_or("");
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
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
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        common::dechunk(body)
    } else {
        body.to_owned()
    };
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

/// Punches for the role tests: acme's E1001 normal, E1001 from a strange
/// phone (flagged), E2001 (security) and E3001 (ops) out of range (pending
/// approval); globex's G1 and its own E1001, both in globex's department
/// "ops", out of range (pending approval).
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
    let g_away = (common::GLOBEX.0 + 0.01, common::GLOBEX.1);
    for (id, e) in [(5, "G1"), (6, "E1001")] {
        let a = ack(g.punch(&punch(id, e, g_away)).await.unwrap());
        assert_eq!(a.verdict, Verdict::OutOfRange);
    }
}

fn window() -> String {
    format!("from=0&to={}", now_ms() + 3_600_000)
}

/// (tenant, employee) of every record in a `GET /v1/records` answer, sorted.
fn owners(v: &Value) -> Vec<(String, String)> {
    let mut o: Vec<(String, String)> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["tenant"].as_str().unwrap().to_owned(),
                r["employee_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    o.sort();
    o
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(t, e)| ((*t).to_owned(), (*e).to_owned()))
        .collect()
}

/// `GET /v1/records?<query>` as `token`: (status, body).
async fn records(node: &Node, token: &str, query: &str) -> (u16, String) {
    http(
        node,
        "GET",
        &format!("/v1/records?{query}&{}", window()),
        Some(token),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn super_and_tenant_admins_read_their_scope() {
    let (node, _) = node().await;
    punch_some(&node).await;

    // Super: every tenant, or one, filtered by employee and status.
    let (code, body) = records(&node, "ops", "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        owners(&json(&body)),
        pairs(&[
            ("acme", "E1001"),
            ("acme", "E1001"),
            ("acme", "E2001"),
            ("acme", "E3001"),
            ("globex", "E1001"),
            ("globex", "G1"),
        ])
    );
    let (_, body) = records(&node, "ops", "tenant=globex").await;
    assert_eq!(
        owners(&json(&body)),
        pairs(&[("globex", "E1001"), ("globex", "G1")])
    );
    let (_, body) = records(&node, "ops", "tenant=acme&employee=E1001").await;
    assert_eq!(
        owners(&json(&body)),
        pairs(&[("acme", "E1001"), ("acme", "E1001")])
    );
    let (_, body) = records(&node, "ops", "status=out_of_range_pending_approval").await;
    assert_eq!(employees(&json(&body)), ["E1001", "E2001", "E3001", "G1"]);

    // Tenant admin: its own tenant; another tenant's is refused.
    let (code, body) = records(&node, "acme-admin", "").await;
    assert_eq!(code, 200);
    assert_eq!(
        owners(&json(&body)),
        pairs(&[
            ("acme", "E1001"),
            ("acme", "E1001"),
            ("acme", "E2001"),
            ("acme", "E3001"),
        ])
    );
    for (token, other) in [("acme-admin", "globex"), ("globex-admin", "acme")] {
        let (code, _) = records(&node, token, &format!("tenant={other}")).await;
        assert_eq!(code, 403, "{token} reading {other}");
    }
    let (_, body) = records(&node, "globex-admin", "").await;
    assert_eq!(
        owners(&json(&body)),
        pairs(&[("globex", "E1001"), ("globex", "G1")])
    );

    // Status filter and CSV.
    let (code, body) = records(
        &node,
        "acme-admin",
        "status=out_of_range_pending_approval&format=csv",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body.lines().count(), 3, "header and two rows:\n{body}");
    assert!(body.starts_with("record_id,tenant,employee_id"));
    assert!(!body.contains("globex"), "{body}");
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_reads_only_their_departments_exceptions_in_their_tenant() {
    let (node, _) = node().await;
    punch_some(&node).await;

    // acme's ops lead: ops' anomalies and pending approvals only: not
    // E1001's normal punch, not security's E2001, and not globex's "ops"
    // department (same name, other tenant) nor globex's own E1001.
    let (code, body) = records(&node, "ops-lead", "").await;
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    assert_eq!(owners(&v), pairs(&[("acme", "E1001"), ("acme", "E3001")]));
    for r in v["records"].as_array().unwrap() {
        assert_eq!(r["department"], "ops");
        let flagged = !r["anomalies"].as_array().unwrap().is_empty();
        assert!(flagged || r["needs_approval"] == true, "{r}");
    }
    let flagged = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["employee_id"] == "E1001")
        .unwrap();
    assert_eq!(flagged["anomalies"], serde_json::json!(["unusual_device"]));
    let pending = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["employee_id"] == "E3001")
        .unwrap();
    assert_eq!(pending["status"], "out_of_range_pending_approval");
    assert_eq!(pending["supervisor"], "E0100");

    // Narrowing inside the scope works; widening it is refused, never
    // answered with an empty list the caller could take for "no records".
    let (_, body) = records(&node, "ops-lead", "status=out_of_range_pending_approval").await;
    assert_eq!(owners(&json(&body)), pairs(&[("acme", "E3001")]));
    let (code, other_dept) = records(&node, "ops-lead", "employee=E2001").await;
    assert_eq!(code, 403, "another department: {other_dept}");
    assert_eq!(
        message(&other_dept),
        "this supervisor token reads department 'ops' of tenant 'acme' only, and employee \"E2001\" is not in it; drop employee= or ask for an employee of 'ops'"
    );
    // An employee unknown to the rules is refused alike: the answer does not
    // tell whether the id exists.
    let (code, unknown) = records(&node, "ops-lead", "employee=E2002").await;
    assert_eq!(code, 403);
    assert_eq!(
        message(&unknown),
        message(&other_dept).replace("E2001", "E2002")
    );
    let (code, body) = records(&node, "ops-lead", "employee=E3001").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(owners(&json(&body)), pairs(&[("acme", "E3001")]));
    let (code, body) = records(&node, "ops-lead", "status=normal&employee=E1001").await;
    assert_eq!(code, 200);
    assert_eq!(
        owners(&json(&body)),
        pairs(&[("acme", "E1001")]),
        "the flagged punch only, never the plain one"
    );
    let (code, _) = records(&node, "ops-lead", "tenant=globex").await;
    assert_eq!(code, 403, "a supervisor never reads another tenant");

    // globex's ops lead sees globex's ops department and nothing of acme's.
    let (code, body) = records(&node, "globex-ops-lead", "").await;
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    assert_eq!(owners(&v), pairs(&[("globex", "E1001"), ("globex", "G1")]));
    for r in v["records"].as_array().unwrap() {
        assert_eq!(r["supervisor"], "G0100");
    }
    let (code, _) = records(&node, "globex-ops-lead", "tenant=acme").await;
    assert_eq!(code, 403);
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_employee_reads_only_their_own_records_in_their_tenant() {
    let (node, _) = node().await;
    punch_some(&node).await;

    // acme's E1001: both of their punches, never globex's E1001 (same id).
    let (code, body) = records(&node, "e1001", "").await;
    assert_eq!(code, 200);
    assert_eq!(
        owners(&json(&body)),
        pairs(&[("acme", "E1001"), ("acme", "E1001")])
    );
    let (code, body) = records(&node, "e1001", "employee=E1001&tenant=acme").await;
    assert_eq!(code, 200);
    assert_eq!(owners(&json(&body)).len(), 2);
    let (code, _) = records(&node, "e1001", "employee=E2001").await;
    assert_eq!(code, 403, "an employee never reads a colleague's records");
    let (code, _) = records(&node, "e1001", "tenant=globex").await;
    assert_eq!(code, 403, "nor another tenant's");
    let (code, body) = records(&node, "e2001", "").await;
    assert_eq!(code, 200);
    assert_eq!(owners(&json(&body)), pairs(&[("acme", "E2001")]));
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_are_refused_everywhere() {
    let (node, cfg_path) = node().await;
    punch_some(&node).await;
    let rules_path = cfg_path.with_file_name("rules.toml");
    let w = window();
    let routes = [
        ("GET", format!("/v1/records?{w}")),
        ("GET", "/v1/rules".to_owned()),
        ("PUT", "/v1/rules".to_owned()),
        ("GET", "/v1/rules/audit".to_owned()),
        ("GET", "/v1/qr/sh?tenant=acme".to_owned()),
        ("GET", "/v1/fences".to_owned()),
        ("PUT", "/v1/fences".to_owned()),
    ];
    let body = "[tenants.acme]\ntimezone = \"UTC\"\n";
    for auth in [
        None,
        Some("Bearer not-a-token".to_owned()),
        // A real secret, but not as a bearer token.
        Some(format!("Basic {}", secret("ops"))),
        Some(format!("Bearer {}x", secret("ops"))),
    ] {
        for (method, path) in &routes {
            let (code, answer) = http_at(
                node.running.admin_addr,
                method,
                path,
                auth.as_deref(),
                Some(body),
            )
            .await;
            assert_eq!(code, 401, "{method} {path} with {auth:?}: {answer}");
            assert!(!answer.contains("E1001"), "{answer}");
        }
    }
    assert_eq!(
        std::fs::read_to_string(&rules_path).unwrap(),
        RULES,
        "nothing changed"
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_can_edit_a_record_and_readers_cannot_configure() {
    let (node, _) = node().await;
    punch_some(&node).await;
    let before = node.records();
    let id = fencegate::record_json::uuid(&before[0].record_id);
    // There is no route that changes a record, for any role, the super
    // admin included: not the collection, not one record by id.
    let edit = r#"{"status":"normal","verdict":"accepted","needs_approval":false}"#;
    for token in ["ops", "acme-admin", "ops-lead", "e1001"] {
        for method in ["PUT", "POST", "PATCH", "DELETE"] {
            let (code, _) = http(&node, method, "/v1/records", Some(token), Some(edit)).await;
            assert_eq!(code, 405, "{method} /v1/records as {token}");
            let path = format!("/v1/records/{id}");
            let (code, _) = http(&node, method, &path, Some(token), Some(edit)).await;
            assert_eq!(code, 404, "{method} {path} as {token}");
        }
    }
    let after = node.records();
    assert_eq!(after, before, "the log is exactly as it was");
    // Supervisors and employees read records only.
    for token in ["ops-lead", "globex-ops-lead", "e1001"] {
        for (method, path) in [
            ("GET", "/v1/rules"),
            ("PUT", "/v1/rules"),
            ("GET", "/v1/rules/audit"),
            ("GET", "/v1/fences"),
            ("PUT", "/v1/fences"),
            ("GET", "/v1/qr/sh"),
            ("GET", "/v1/qr/sh?tenant=acme"),
        ] {
            let (code, body) = http(&node, method, path, Some(token), Some("")).await;
            assert_eq!(code, 403, "{method} {path} as {token}: {body}");
        }
    }
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_super_admin_configures_every_tenant() {
    let (node, cfg_path) = node().await;
    let rules_path = cfg_path.with_file_name("rules.toml");
    // The whole rules file: globex's out-of-range punches become field
    // punches, acme's section is untouched.
    let changed = RULES.replace(
        "[tenants.globex]\ntimezone = \"Europe/Berlin\"\n",
        "[tenants.globex]\ntimezone = \"Europe/Berlin\"\nout_of_range = \"field\"\n",
    );
    assert_ne!(changed, RULES);
    let (code, body) = http(&node, "PUT", "/v1/rules", Some("ops"), Some(&changed)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json(&body)["tenants_changed"],
        serde_json::json!(["globex"])
    );
    assert_eq!(std::fs::read_to_string(&rules_path).unwrap(), changed);
    let g = node.client("globex", "g-phone").await;
    let away = (common::GLOBEX.0 + 0.01, common::GLOBEX.1);
    let a = ack(g.punch(&punch(1, "G1", away)).await.unwrap());
    assert_eq!(
        (a.verdict, a.reason),
        (Verdict::Accepted, Reason::OutOfRange),
        "a field punch now"
    );
    let (_, body) = http(&node, "GET", "/v1/rules/audit", Some("ops"), None).await;
    let entries = json(&body)["entries"].clone();
    assert_eq!(entries[0]["actor"], "ops");
    assert_eq!(entries[0]["scope"], "all");

    // QR codes of any tenant's site, naming the tenant.
    for (tenant, site) in [("acme", "sh"), ("globex", "berlin")] {
        let (code, body) = http(
            &node,
            "GET",
            &format!("/v1/qr/{site}?tenant={tenant}"),
            Some("ops"),
            None,
        )
        .await;
        assert_eq!(code, 200, "{body}");
        assert!(
            json(&body)["code"]
                .as_str()
                .unwrap()
                .starts_with(&format!("FGQR1:{site}:"))
        );
    }
    // Every tenant's fences; a tenant admin sees only its own.
    let (code, body) = http(&node, "GET", "/v1/fences", Some("ops"), None).await;
    assert_eq!(code, 200);
    assert!(
        body.contains("hq-north") && body.contains("globex-1"),
        "{body}"
    );
    let (_, body) = http(&node, "GET", "/v1/fences", Some("globex-admin"), None).await;
    assert!(
        body.contains("globex-1") && !body.contains("hq-north"),
        "{body}"
    );
    // A tenant admin never reads another tenant's QR codes.
    let (code, _) = http(
        &node,
        "GET",
        "/v1/qr/sh?tenant=acme",
        Some("globex-admin"),
        None,
    )
    .await;
    assert_eq!(code, 403);
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
    let (node, cfg_path) = node().await;
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

    // `fencegate qr` prints the code the node accepts (the same key, from
    // the node's data directory), and renders it for a terminal.
    let out = Command::new(env!("CARGO_BIN_EXE_fencegate"))
        .args(["qr", "--config"])
        .arg(&cfg_path)
        .args(["--tenant", "acme", "--site", "sh", "--render"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let printed = stdout.lines().last().unwrap().to_owned();
    assert!(printed.starts_with("FGQR1:sh:"), "{stdout}");
    assert!(
        stdout.lines().count() > 10 && stdout.contains('█'),
        "a QR symbol above the code:\n{stdout}"
    );
    let cli_punch = PunchMsg {
        qr_payload: Some(printed),
        ..qr_punch(5, "E2001")
    };
    let a = ack(c.punch(&cli_punch).await.unwrap());
    assert_eq!((a.verdict, a.reason), (Verdict::Accepted, Reason::None));
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

    // Every JSON form carries how the terminal identified the employee and
    // the time the rules judged by (docs/ATTENDANCE.md), from the one
    // record_json: the admin API, `export --format json`, `log tail --json`.
    let (code, body) = records(&node, "ops", "tenant=acme&employee=E5007").await;
    assert_eq!(code, 200, "{body}");
    let api = json(&body)["records"][0].clone();
    node.running.shutdown(Duration::from_secs(2)).await;
    let cfg_path = node.dir.path().join("fencegate.toml");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_fencegate"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let log_dir = dir.to_str().unwrap().to_owned();
    let tailed = run(&["log", "tail", "--json", "--dir", &log_dir]);
    let from = "1970-01-01T00:00:00Z".to_owned();
    let to = format!("{}", now_ms() + 3_600_000);
    let exported = run(&[
        "export",
        "--config",
        cfg_path.to_str().unwrap(),
        "--tenant",
        "acme",
        "--from",
        &from,
        "--to",
        &to,
        "--format",
        "json",
        "--employee",
        "E5007",
    ]);
    let tail_rec = tailed
        .lines()
        .map(json)
        .find(|r| r["employee_id"] == "E5007")
        .expect("log tail --json prints the punch");
    let export_rec = json(exported.lines().next().expect("export prints the punch"));
    for (form, r) in [
        ("api", &api),
        ("log tail", &tail_rec),
        ("export", &export_rec),
    ] {
        assert_eq!(r["terminal_auth"], "face", "{form}: {r}");
        let at = r["attendance_time_ms"]
            .as_i64()
            .unwrap_or_else(|| panic!("{form}: {r}"));
        assert!(at > 0, "{form}: {r}");
        assert_eq!(r["attendance_time_ms"], api["attendance_time_ms"], "{form}");
    }
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
    // The running node serves GET /v1/records through the same index: the
    // first run's sealed segment is skipped, the live one read.
    let auth = format!("Bearer {}", secret("acme-admin"));
    let query = |from: i64| {
        format!(
            "/v1/records?tenant=acme&from={from}&to={}",
            now_ms() + 60_000
        )
    };
    let (code, body) = http_at(second.admin_addr, "GET", &query(between), Some(&auth), None).await;
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    assert_eq!(employees(&v), ["E2001"]);
    assert_eq!(
        (
            v["stats"]["segments"].as_u64(),
            v["stats"]["segments_read"].as_u64()
        ),
        (Some(2), Some(1)),
        "{body}"
    );
    let (_, body) = http_at(second.admin_addr, "GET", &query(0), Some(&auth), None).await;
    let v = json(&body);
    assert_eq!(employees(&v), ["E1001", "E2001", "E3001"]);
    assert_eq!(v["stats"]["segments_read"].as_u64(), Some(2), "{body}");
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

/// The text of a JSON error answer (`error` and every `problems` line),
/// unescaped, so messages can be checked as a person reads them.
fn message(answer: &str) -> String {
    let v = json(answer);
    let mut out = v["error"].as_str().unwrap_or_default().to_owned();
    for p in v["problems"].as_array().into_iter().flatten() {
        out.push('\n');
        out.push_str(p.as_str().unwrap_or_default());
    }
    out
}

/// (token, method, path, body, status, words the message must contain)
type ApiCase<'a> = (&'a str, &'a str, String, &'a str, u16, Vec<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_thing_and_the_fix() {
    let (node, _) = node().await;
    let w = window();
    let cases: Vec<ApiCase<'_>> = vec![
        (
            "ops",
            "GET",
            format!("/v1/records?status=late-ish&{w}"),
            "",
            400,
            vec!["\"late-ish\"", "use normal, late"],
        ),
        (
            "ops",
            "GET",
            "/v1/records?from=0".into(),
            "",
            400,
            vec!["from and to are required", "RFC 3339"],
        ),
        (
            "ops",
            "GET",
            "/v1/records?from=2025-03-05&to=2025-03-04T00:00:00Z".into(),
            "",
            400,
            vec!["to (2025-03-04T00:00:00Z) must be after from (2025-03-05)"],
        ),
        (
            "ops",
            "GET",
            "/v1/records?from=yesterday&to=1".into(),
            "",
            400,
            vec!["from:", "\"yesterday\"", "unix milliseconds"],
        ),
        (
            "ops",
            "GET",
            format!("/v1/records?employe=E1&{w}"),
            "",
            400,
            vec!["\"employe\"", "use tenant, from, to, employee"],
        ),
        (
            "ops",
            "GET",
            format!("/v1/records?limit=0&{w}"),
            "",
            400,
            vec!["limit must be 1 to 100000"],
        ),
        (
            "acme-admin",
            "GET",
            format!("/v1/records?tenant=globex&{w}"),
            "",
            403,
            vec!["tenant 'acme' only", "drop tenant="],
        ),
        (
            "e1001",
            "GET",
            format!("/v1/records?employee=E2001&{w}"),
            "",
            403,
            vec!["its own records only", "employee=E1001"],
        ),
        (
            "ops-lead",
            "GET",
            "/v1/rules".into(),
            "",
            403,
            vec!["a supervisor token", "needs a super or tenant token"],
        ),
        (
            "acme-admin",
            "GET",
            "/v1/qr/lobby".into(),
            "",
            404,
            vec![
                "no QR site 'lobby'",
                "qr = true under [tenants.acme.sites.lobby]",
            ],
        ),
        (
            "ops",
            "GET",
            "/v1/qr/sh".into(),
            "",
            400,
            vec!["?tenant=<id>"],
        ),
        (
            "acme-admin",
            "PUT",
            "/v1/rules".into(),
            "[tenants.globex]\ntimezone = \"UTC\"\n",
            403,
            vec!["may only submit a [tenants.acme] section"],
        ),
        (
            "ops",
            "PUT",
            "/v1/rules".into(),
            "[tenants.acme]\ntimezone = \"Asia/Shanghi\"\nmin_interval_min = 900\n",
            422,
            vec![
                "tenants.acme: timezone \"Asia/Shanghi\" is not an IANA time zone",
                "write it like \"Asia/Shanghai\"",
                "min_interval_min = 900",
                "use 0 (off) to 720",
                "nothing was changed",
            ],
        ),
    ];
    for (token, method, path, body, status, words) in &cases {
        let (code, answer) = http(&node, method, path, Some(token), Some(body)).await;
        assert_eq!(code, *status, "{method} {path} as {token}: {answer}");
        let answer = message(&answer);
        for w in words {
            assert!(
                answer.contains(w),
                "{method} {path}: {w:?} missing in {answer}"
            );
        }
    }
    let (code, answer) = http_at(
        node.running.admin_addr,
        "GET",
        "/v1/rules",
        Some("Bearer wrong"),
        None,
    )
    .await;
    assert_eq!(code, 401);
    let answer = message(&answer);
    assert!(
        answer.contains("unknown bearer token") && answer.contains("[[admin.tokens]]"),
        "{answer}"
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[test]
fn command_line_errors_name_the_thing_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_fencegate"))
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        String::from_utf8(out.stderr).unwrap()
    };
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["qr", "--site", "sh"],
            &["serves 2 tenants (acme, globex)", "name one with --tenant"],
        ),
        (
            &["export", "--tenant", "initech", "--from", "0", "--to", "1"],
            &[
                "tenant 'initech'",
                "it serves acme, globex",
                "pass --config",
            ],
        ),
        (
            &[
                "export", "--tenant", "acme", "--from", "0", "--to", "1", "--format", "xml",
            ],
            &["--format \"xml\"", "use csv or json"],
        ),
        (
            &["export", "--tenant", "acme", "--from", "5", "--to", "1"],
            &["--to (1) must be after --from (5)"],
        ),
        (
            &[
                "export", "--tenant", "acme", "--from", "0", "--to", "1", "--status", "tardy",
            ],
            &["--status \"tardy\"", "use normal, late"],
        ),
        (
            &["qr", "--tenant", "acme", "--site", "lobby"],
            &["no site 'lobby'", "its QR sites are: sh"],
        ),
        (
            &["qr", "--tenant", "initech", "--site", "sh"],
            &["tenant 'initech' has no section", "add [tenants.initech]"],
        ),
    ];
    for (args, words) in cases {
        let err = run(args);
        for w in words {
            assert!(err.contains(w), "{args:?}: {w:?} missing in {err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_reach_the_tenants_approval_subject_with_routing() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(&dir.path().join("nats"));
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let json_sink = RawSink {
        stream: Some("FENCEGATE_JSON".into()),
        subject_prefix: Some("fgjson".into()),
        encoding: Some("json".into()),
        ..nats_sink("js-json", &nats.url())
    };
    let cfg = config_with(
        dir.path(),
        vec![nats_sink("js", &nats.url()), json_sink],
        |raw| raw.attendance.rules = Some(rules.clone()),
    );
    let node = Node::start_with(dir, cfg).await;

    // acme: E3001 (ops) out of range, E1001 inside; globex: G1 (its ops) out of range.
    let c = node.client("acme", "phone-e1001").await;
    let a = ack(c
        .punch(&punch(1, "E3001", (HQ.0 + 0.01, HQ.1)))
        .await
        .unwrap());
    assert_eq!(a.verdict, Verdict::OutOfRange);
    let e3001 = fencegate::record_json::uuid(&a.record_id.unwrap());
    let a = ack(c.punch(&punch(2, "E1001", HQ)).await.unwrap());
    assert_eq!(a.verdict, Verdict::Accepted);
    let g = node.client("globex", "g-phone").await;
    let away = (common::GLOBEX.0 + 0.01, common::GLOBEX.1);
    let a = ack(g.punch(&punch(3, "G1", away)).await.unwrap());
    assert_eq!(a.verdict, Verdict::OutOfRange);
    let g1 = fencegate::record_json::uuid(&a.record_id.unwrap());
    assert!(
        wait_until(Duration::from_secs(20), || {
            let end = node.running.committed();
            node.running.sinks().iter().all(|h| h.position() == end)
        })
        .await,
        "the sinks did not drain"
    );

    // (subject, msg id, department, supervisor) of every approval copy.
    let flat: Vec<_> = read_stream(&nats.url(), "FENCEGATE")
        .await
        .into_iter()
        .filter(|s| s.subject.ends_with(".approval"))
        .map(|s| {
            let r = fencegate_schema::parse_record(&s.payload).unwrap();
            let a = r.attendance().unwrap();
            (
                s.subject.clone(),
                s.msg_id.clone(),
                a.department.map(str::to_owned),
                a.supervisor.map(str::to_owned),
            )
        })
        .collect();
    let want = |prefix: &str| {
        vec![
            (
                format!("{prefix}.acme.approval"),
                format!("{e3001}:approval"),
                Some("ops".to_owned()),
                Some("E0100".to_owned()),
            ),
            (
                format!("{prefix}.globex.approval"),
                format!("{g1}:approval"),
                Some("ops".to_owned()),
                Some("G0100".to_owned()),
            ),
        ]
    };
    assert_eq!(flat, want("fencegate"));
    let as_json: Vec<_> = read_stream(&nats.url(), "FENCEGATE_JSON")
        .await
        .into_iter()
        .filter(|s| s.subject.ends_with(".approval"))
        .map(|s| {
            let v: Value = serde_json::from_slice(&s.payload).unwrap();
            assert_eq!(v["needs_approval"], true, "{v}");
            (
                s.subject.clone(),
                s.msg_id.clone(),
                v["department"].as_str().map(str::to_owned),
                v["supervisor"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(as_json, want("fgjson"));
    node.running.shutdown(Duration::from_secs(5)).await;
    nats.stop();
}

/// Hostile calendar references from a tenant admin (issue 12): a path
/// outside the calendar folder, `../`, or a name that is a symlink in the
/// folder. Each is refused with 422, the answer shows no byte of the file,
/// and it is byte-identical whether the file exists or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_calendars_are_named_never_pathed() {
    let (node, cfg_path) = node().await;
    let dir = cfg_path.parent().unwrap().to_owned();
    let rules_path = dir.join("rules.toml");
    // The operator's folder (holidays/ beside the rules file) with one real
    // calendar and a symlink to a file the gateway may read but must not show.
    let calendars = dir.join("holidays");
    std::fs::create_dir_all(&calendars).unwrap();
    std::fs::write(
        calendars.join("cn-2025.toml"),
        include_str!("../../config/holidays/cn-2025.toml"),
    )
    .unwrap();
    let secret = dir.join("secret.csv");
    let write_secret =
        || std::fs::write(&secret, "date,type,name\n2025-01-01,TOPSECRET,hunter2\n").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&secret, calendars.join("evil.csv")).unwrap();

    let section = |holidays: &str| {
        format!("[tenants.acme]\ntimezone = \"Asia/Shanghai\"\nholidays = [{holidays:?}]\n")
    };
    let hostile = [
        secret.to_str().unwrap().to_owned(),
        "../secret".to_owned(),
        "../secret.csv".to_owned(),
        "holidays/../../secret".to_owned(),
        "evil".to_owned(),
    ];
    for name in &hostile {
        write_secret();
        let (code, present) = http(
            &node,
            "PUT",
            "/v1/rules",
            Some("acme-admin"),
            Some(&section(name)),
        )
        .await;
        assert_eq!(code, 422, "{name}: {present}");
        for leaked in ["TOPSECRET", "hunter2", "No such file", "cannot read"] {
            assert!(
                !present.contains(leaked),
                "{name} shows {leaked:?}: {present}"
            );
        }
        std::fs::remove_file(&secret).unwrap();
        let (code, missing) = http(
            &node,
            "PUT",
            "/v1/rules",
            Some("acme-admin"),
            Some(&section(name)),
        )
        .await;
        assert_eq!(code, 422, "{name}: {missing}");
        assert_eq!(
            present, missing,
            "{name}: existing and missing files answer alike"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&rules_path).unwrap(),
        RULES,
        "refused changes leave the file alone"
    );
    // What the tenant is told: the name is not a calendar, and which are.
    let (_, body) = http(
        &node,
        "PUT",
        "/v1/rules",
        Some("acme-admin"),
        Some(&section("evil")),
    )
    .await;
    assert_eq!(
        message(&body),
        "1 problem(s) in the rules; nothing was changed\ntenants.acme.holidays: there is no calendar named \"evil\"; the operator's calendars are: cn-2025"
    );
    let (_, body) = http(
        &node,
        "PUT",
        "/v1/rules",
        Some("acme-admin"),
        Some(&section("../secret")),
    )
    .await;
    assert!(
        message(&body).contains("calendars are named, not pathed"),
        "{body}"
    );

    // A name from the folder works, and inline dates join it.
    let ok = format!(
        "{}holiday_dates = {{ off = [\"2025-12-24\"] }}\n",
        section("cn-2025")
    );
    let (code, body) = http(&node, "PUT", "/v1/rules", Some("acme-admin"), Some(&ok)).await;
    assert_eq!(code, 200, "{body}");
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// Compiling rules has no side effects: a refused PUT creates no QR key
/// file; the same site in a valid PUT gets its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rules_change_creates_no_qr_key() {
    let (node, cfg_path) = node().await;
    let key = cfg_path
        .parent()
        .unwrap()
        .join("data/keys/qr/acme/gate-2.key");
    let section = |tz: &str| {
        format!("[tenants.acme]\ntimezone = {tz:?}\n\n[tenants.acme.sites.gate-2]\nqr = true\n")
    };
    for who in ["acme-admin", "ops"] {
        let body = if who == "ops" {
            format!(
                "{}\n{}",
                section("Mars/Base"),
                "[tenants.globex]\ntimezone = \"UTC\"\n"
            )
        } else {
            section("Mars/Base")
        };
        let (code, answer) = http(&node, "PUT", "/v1/rules", Some(who), Some(&body)).await;
        assert_eq!(code, 422, "{who}: {answer}");
        assert!(
            !key.exists(),
            "{who}: a refused change created {}",
            key.display()
        );
        let mut left: Vec<_> = std::fs::read_dir(key.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["sh.key"], "{who}: only the applied file's key");
    }
    let (code, answer) = http(
        &node,
        "PUT",
        "/v1/rules",
        Some("acme-admin"),
        Some(&section("Asia/Shanghai")),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert!(key.exists(), "an applied change creates the key");
    let (code, body) = http(&node, "GET", "/v1/qr/gate-2", Some("acme-admin"), None).await;
    assert_eq!(code, 200, "{body}");
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// A tenant PUT edits its own section in place: the operator's comments
/// and every other tenant's section stay byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_change_keeps_the_rest_of_the_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path());
    let rules_path = cfg_path.with_file_name("rules.toml");
    let header = "# Rules of this node. Owner: ops@example.com. Do not reorder.\n";
    std::fs::write(&rules_path, format!("{header}{RULES}")).unwrap();
    let cfg = Config::load(&cfg_path).unwrap_or_else(|e| panic!("{e}"));
    let node = Node::start_with(dir, cfg).await;
    let section = "[tenants.acme]\ntimezone = \"Asia/Shanghai\"\nout_of_range = \"reject\"\n";
    let (code, body) = http(&node, "PUT", "/v1/rules", Some("acme-admin"), Some(section)).await;
    assert_eq!(code, 200, "{body}");
    let on_disk = std::fs::read_to_string(&rules_path).unwrap();
    assert!(
        on_disk.starts_with(header),
        "the operator's header comment:\n{on_disk}"
    );
    let globex = &RULES[RULES.find("[tenants.globex]").unwrap()..];
    assert!(
        on_disk.ends_with(globex),
        "globex's section, comment included, byte for byte:\n{on_disk}"
    );
    assert!(on_disk.contains("out_of_range = \"reject\""), "{on_disk}");
    assert!(
        !on_disk.contains("E3001"),
        "acme's old section is replaced: {on_disk}"
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_query_from_zero_is_bounded_and_pages_to_the_whole_answer() {
    let dir = tempfile::tempdir().unwrap();
    // One terminal sends 90 punches back to back: no device punch rate.
    let path = write_config_with(
        dir.path(),
        "max_scan_records = 25\n[budgets]\ndevice_punches_per_s = 0",
    );
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let node = Node::start_with(dir, cfg).await;
    // 90 punches of others, then E1001's two.
    let c = node.client("acme", "terminal-1").await;
    for i in 0..90u128 {
        ack(c
            .punch(&punch(100 + i, &format!("X{i}"), HQ))
            .await
            .unwrap());
    }
    punch_some(&node).await;

    // An employee asks for everything since 1970: each answer reads at
    // most 25 records and says where to resume; paging ends with exactly
    // their own two records, each once.
    let mut after: Option<u64> = None;
    let mut mine = Vec::new();
    let mut pages = 0;
    loop {
        let q = after.map_or(String::new(), |a| format!("after={a}"));
        let (code, body) = records(&node, "e1001", &q).await;
        assert_eq!(code, 200, "{body}");
        let v = json(&body);
        let stats = &v["stats"];
        assert!(
            stats["records_read"].as_u64().unwrap() <= 25,
            "one query read more than admin.max_scan_records: {stats}"
        );
        for r in v["records"].as_array().unwrap() {
            mine.push(r["record_id"].as_str().unwrap().to_owned());
        }
        pages += 1;
        assert!(pages < 20, "paging does not end: {stats}");
        if stats["truncated"] == false {
            break;
        }
        assert_eq!(stats["cut"], "scan");
        let next = stats["next_after"]
            .as_u64()
            .expect("a cut answer says where to resume");
        assert!(
            after.is_none_or(|a| next > a),
            "paging must advance: {stats}"
        );
        after = Some(next);
    }
    assert!(
        pages >= 4,
        "98 records at 25 a query take at least 4 queries"
    );
    let mut uniq = mine.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!((mine.len(), uniq.len()), (2, 2), "{mine:?}");

    // The same bounds hold for CSV, whose end says where to resume.
    let (code, body) = records(&node, "e1001", "format=csv").await;
    assert_eq!(code, 200);
    let last = body.lines().last().unwrap();
    assert!(
        last.starts_with("#truncated,cut=scan,next_after="),
        "{last}"
    );
    // A bad resume point is a clear error.
    let (code, body) = records(&node, "e1001", "after=soon").await;
    assert_eq!(code, 400);
    assert!(body.contains("after"), "{body}");
    node.running.shutdown(Duration::from_secs(2)).await;
}
