//! `GET /v1/days` over a real node: punches go through the edge into the
//! log, the node's materializer turns them into day results in its SQLite
//! store, and each role reads exactly its scope (as `/v1/records`): super
//! any tenant, a tenant admin its tenant, a supervisor its department, an
//! employee itself; outside the scope is 403, never narrowed.
//!
//! The rules use a free schedule, so the results do not depend on the
//! wall-clock time the test runs at.

mod hr_rig;

use std::time::Duration;

use fencegate::client::PunchReply;
use hr_rig::common::{self, HQ, Node, now_ms, punch};
use serde_json::Value;

const RULES: &str = r#"
[tenants.acme]
timezone = "Asia/Shanghai"
default_group = "flex"
[tenants.acme.groups.flex]
schedule = "free"
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

[tenants.globex]
timezone = "Asia/Shanghai"
[tenants.globex.departments.ops]
supervisor = "G0100"
[tenants.globex.employees.E1001]
department = "ops"
"#;

/// `GET path` with `token` (a name of the rig's tokens).
async fn get(node: &Node, path: &str, token: Option<&str>) -> (u16, String) {
    hr_rig::http(node, "GET", path, token, None).await
}

fn employees(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let mut e: Vec<String> = v["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["employee"].as_str().unwrap().to_owned())
        .collect();
    e.sort();
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_results_are_scoped_by_role_like_records() {
    scenario(None).await;
}

/// The same suite with the results in a real PostgreSQL (the multi-node
/// store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_results_are_scoped_by_role_like_records_postgres() {
    let pg_dir = tempfile::tempdir().unwrap();
    let pg = fencegate_testkit::Postgres::start(pg_dir.path());
    scenario(Some(&pg.url())).await;
}

async fn scenario(results: Option<&str>) {
    // The HR rig's node (its tenants and one token per role) with this
    // test's rules.
    let node = hr_rig::start_with_rules(RULES, results).await;
    let c = node.client("acme", "phone-a").await;
    for (id, e) in [(1, "E1001"), (2, "E2001"), (3, "E3001")] {
        assert!(matches!(
            c.punch(&punch(id, e, HQ)).await.unwrap(),
            PunchReply::Ack(_)
        ));
    }
    let g = node.client("globex", "phone-g").await;
    assert!(matches!(
        g.punch(&punch(4, "E1001", common::GLOBEX)).await.unwrap(),
        PunchReply::Ack(_)
    ));
    // Today in the tenants' zone (both Shanghai).
    let date = jiff::Timestamp::from_millisecond(now_ms())
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .date()
        .to_string();
    let q = |rest: &str| format!("/v1/days?date={date}{rest}");
    // The materializer follows the log's commits; wait for all four punches
    // (acme's three and globex's one, which may land in a later batch).
    let mut all = Vec::new();
    for _ in 0..400 {
        let (code, body) = get(&node, &q("&tenant=acme"), Some("super")).await;
        assert_eq!(code, 200, "{body}");
        all = employees(&body);
        let (code, body) = get(&node, &q("&tenant=globex"), Some("super")).await;
        assert_eq!(code, 200, "{body}");
        if all.len() == 3 && employees(&body).len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(all, ["E1001", "E2001", "E3001"]);
    let (_, body) = get(&node, &q("&tenant=acme&employee=E1001"), Some("super")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["days"][0]["status"], "normal", "{body}");
    assert_eq!(v["days"][0]["department"], "ops", "{body}");

    // A tenant admin: its tenant, tenant= optional, another tenant 403.
    let (code, body) = get(&node, &q(""), Some("acme-admin")).await;
    assert_eq!((code, employees(&body).len()), (200, 3), "{body}");
    let (code, _) = get(&node, &q("&tenant=globex"), Some("acme-admin")).await;
    assert_eq!(code, 403);

    // A supervisor: its department only.
    let (code, body) = get(&node, &q(""), Some("ops-lead")).await;
    assert_eq!(
        (code, employees(&body)),
        (200, vec!["E1001".to_owned(), "E3001".to_owned()])
    );
    let (code, body) = get(&node, &q("&department=security"), Some("ops-lead")).await;
    assert_eq!(code, 403, "{body}");
    let (code, _) = get(&node, &q("&employee=E2001"), Some("ops-lead")).await;
    assert_eq!(code, 403, "an employee outside the department");
    // globex's "ops" never shows acme's, and acme is another tenant.
    let (code, body) = get(&node, &q(""), Some("globex-ops-lead")).await;
    assert_eq!((code, employees(&body)), (200, vec!["E1001".to_owned()]));
    let (code, _) = get(&node, &q("&tenant=acme"), Some("globex-ops-lead")).await;
    assert_eq!(code, 403);

    // An employee: itself in its own tenant only.
    let (code, body) = get(&node, &q(""), Some("e1001")).await;
    assert_eq!((code, employees(&body)), (200, vec!["E1001".to_owned()]));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tenant"], "acme");
    let (code, _) = get(&node, &q("&employee=E2001"), Some("e1001")).await;
    assert_eq!(code, 403);

    // Bad requests name the parameter and the fix.
    let (code, body) = get(&node, &q(""), Some("super")).await;
    assert!(code == 400 && body.contains("tenant=<id>"), "{code} {body}");
    let (code, body) = get(&node, "/v1/days?tenant=acme&date=2025-3-4", Some("super")).await;
    assert!(code == 400 && body.contains("YYYY-MM-DD"), "{code} {body}");
    let (code, body) = get(&node, "/v1/days?tenant=acme", Some("super")).await;
    assert!(
        code == 400 && body.contains("date is required"),
        "{code} {body}"
    );
    let (code, body) = get(&node, &q("&tenant=acme&month=3"), Some("super")).await;
    assert!(
        code == 400 && body.contains("unknown parameter"),
        "{code} {body}"
    );
    let (code, _) = get(&node, &q("&tenant=acme"), None).await;
    assert_eq!(code, 401);
}
