//! Leave, monthly summaries, month archives and the payroll export through
//! a real node. March 2025 (weekdays Mon 3 .. Mon 31: 21 workdays) for the
//! `office` group: leave covers absences (`on_leave`, `business_trip`);
//! archiving closes the month (the roster's absentees) and freezes it; a
//! later change to a March day leaves March as it was and shows as an
//! adjustment in April's summary and payroll; the payroll CSV is UTF-8 with
//! a BOM and the documented columns, from the route and the CLI alike. A
//! rebuild from the log equals the incremental store, HR records included.

mod hr_rig;

use fencegate::results::summary::PAYROLL_COLUMNS;
use hr_rig::{http, json, start};

use serde_json::Value;

fn leave(source: &str, employee: &str, from: &str, to: &str, ty: &str) -> String {
    format!(
        r#"{{"source_id": "{source}", "employee": "{employee}", "from": "{from}", "to": "{to}", "type": "{ty}"}}"#
    )
}

fn employee<'a>(summary: &'a Value, id: &str) -> &'a Value {
    summary["employees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["employee"] == id)
        .unwrap_or_else(|| panic!("no {id} in {summary:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_summary_archive_adjustments_and_payroll() {
    scenario(&start().await).await;
}

/// The same suite with the results in a real PostgreSQL (the multi-node
/// store): one schema, one set of queries, the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_summary_archive_adjustments_and_payroll_postgres() {
    let pg_dir = tempfile::tempdir().unwrap();
    let pg = fencegate_testkit::Postgres::start(pg_dir.path());
    scenario(&hr_rig::start_with(Some(&pg.url())).await).await;
}

async fn scenario(node: &hr_rig::Node) {
    let post_leave = |body: String, token: &'static str| async move {
        http(
            node,
            "POST",
            "/v1/leave?tenant=acme",
            Some(token),
            Some(&body),
        )
        .await
    };
    // Leave and a trip, pushed by the HR system (a tenant token).
    let (code, body) = post_leave(
        leave("hr-1", "O1", "2025-03-03", "2025-03-04", "annual"),
        "acme-admin",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = post_leave(
        leave("hr-2", "O2", "2025-03-05", "2025-03-05", "business_trip"),
        "acme-admin",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // Resent: the same answer; the id reused for other leave: 409.
    let (code, again) = post_leave(
        leave("hr-1", "O1", "2025-03-03", "2025-03-04", "annual"),
        "super",
    )
    .await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(json(&again)["entered_by"], "acme-admin");
    let (code, body) = post_leave(
        leave("hr-1", "O1", "2025-03-03", "2025-03-07", "annual"),
        "acme-admin",
    )
    .await;
    assert!(
        code == 409 && body.contains("new source_id"),
        "{code} {body}"
    );
    // Bad input names the field; a supervisor only reads.
    let (code, body) = post_leave(
        leave("hr-9", "O1", "2025-3-3", "2025-03-04", "annual"),
        "acme-admin",
    )
    .await;
    assert!(code == 422 && body.contains("YYYY-MM-DD"), "{code} {body}");
    let (code, body) = post_leave(
        leave("hr-9", "O1", "2025-03-04", "2025-03-03", "annual"),
        "acme-admin",
    )
    .await;
    assert!(code == 422 && body.contains("before from"), "{code} {body}");
    let (code, body) = post_leave(r#"{"source_id": "hr-9"}"#.into(), "acme-admin").await;
    assert!(
        code == 422 && body.contains("employee is required"),
        "{code} {body}"
    );
    let (code, _) = post_leave(
        leave("hr-9", "O1", "2025-03-03", "2025-03-03", "annual"),
        "ops-lead",
    )
    .await;
    assert_eq!(code, 403);
    let (code, body) = http(node, "GET", "/v1/leave", Some("ops-lead"), None).await;
    assert_eq!(code, 200, "{body}");
    let listed = json(&body);
    assert_eq!(listed["leave"].as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(listed["leave"][0]["employee"], "O1");

    // Leave covers the days it names.
    let day = |e: &str, d: &str| format!("/v1/days?tenant=acme&employee={e}&date={d}");
    let (_, body) = http(node, "GET", &day("O1", "2025-03-04"), Some("super"), None).await;
    assert_eq!(json(&body)["days"][0]["status"], "on_leave", "{body}");
    assert_eq!(
        json(&body)["days"][0]["slots"][0]["status"],
        "on_leave",
        "{body}"
    );
    let (_, body) = http(node, "GET", &day("O2", "2025-03-05"), Some("super"), None).await;
    assert_eq!(json(&body)["days"][0]["status"], "business_trip", "{body}");

    // A month that is not over cannot be frozen: 409, naming when it is.
    // (Next month: always ahead, in every zone.)
    let this_month = jiff::Zoned::now()
        .date()
        .last_of_month()
        .tomorrow()
        .unwrap()
        .strftime("%Y-%m")
        .to_string();
    let (code, body) = http(
        node,
        "POST",
        &format!("/v1/summary/{this_month}/archive?tenant=acme"),
        Some("acme-admin"),
        None,
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("is not over"), "{body}");

    // Archive March: its days close (the roster's absentees), then freeze.
    let (code, body) = http(
        node,
        "POST",
        "/v1/summary/2025-03/archive",
        Some("ops-lead"),
        None,
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = http(
        node,
        "POST",
        "/v1/summary/2025-03/archive?tenant=acme",
        Some("acme-admin"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let march = json(&body);
    assert_eq!(march["archived"], true, "{march:#}");
    let o1 = employee(&march, "O1");
    assert_eq!(o1["workdays_due"], 21, "{o1:#}");
    assert_eq!(o1["days_worked"], 0);
    assert_eq!(o1["absences"], 19);
    assert_eq!(o1["leave_days"]["annual"], 2);
    let o2 = employee(&march, "O2");
    assert_eq!(
        (
            o2["absences"].clone(),
            o2["leave_days"]["business_trip"].clone()
        ),
        (20.into(), 1.into()),
        "{o2:#}"
    );
    let (_, body) = http(node, "GET", &day("O2", "2025-03-31"), Some("super"), None).await;
    assert_eq!(json(&body)["days"][0]["status"], "absent", "{body}");
    assert_eq!(json(&body)["days"][0]["closed"], true, "{body}");

    // A later change to a March day: March stays frozen, April adjusts.
    let (code, body) = post_leave(
        leave("hr-3", "O1", "2025-03-10", "2025-03-10", "sick"),
        "acme-admin",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (_, body) = http(node, "GET", &day("O1", "2025-03-10"), Some("super"), None).await;
    assert_eq!(json(&body)["days"][0]["status"], "on_leave", "{body}");
    let (code, body) = http(
        node,
        "GET",
        "/v1/summary?tenant=acme&month=2025-03",
        Some("acme-admin"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        json(&body),
        march,
        "an archived month answers from its snapshot"
    );
    let (code, body) = http(
        node,
        "POST",
        "/v1/summary/2025-03/archive?tenant=acme",
        Some("super"),
        None,
    )
    .await;
    assert_eq!(
        (code, json(&body)),
        (200, march.clone()),
        "archiving again changes nothing"
    );
    let (_, body) = http(
        node,
        "GET",
        "/v1/summary?tenant=acme&month=2025-04",
        Some("super"),
        None,
    )
    .await;
    let april = json(&body);
    assert_eq!(april["archived"], false);
    assert_eq!(april["adjustments"]["month"], "2025-03");
    let adj = &april["adjustments"]["employees"];
    assert_eq!(adj.as_array().unwrap().len(), 1, "{april:#}");
    assert_eq!(adj[0]["employee"], "O1");
    assert_eq!(adj[0]["absences"], -1);
    assert_eq!(adj[0]["leave_days"]["sick"], 1);
    assert_eq!(adj[0]["workdays_due"], 0);

    // A supervisor's summary: its department only.
    let (code, body) = http(
        node,
        "GET",
        "/v1/summary?month=2025-03",
        Some("ops-lead"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let mine: Vec<String> = json(&body)["employees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["employee"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        mine.iter().any(|e| e == "O1") && !mine.iter().any(|e| e == "O2"),
        "{mine:?}"
    );
    let (code, body) = http(
        node,
        "GET",
        "/v1/summary?tenant=acme&month=2025-13",
        Some("super"),
        None,
    )
    .await;
    assert!(code == 400 && body.contains("YYYY-MM"), "{code} {body}");
    let (code, body) = http(node, "GET", "/v1/summary?tenant=acme", Some("super"), None).await;
    assert!(
        code == 400 && body.contains("month is required"),
        "{code} {body}"
    );
    let (code, _) = http(
        node,
        "GET",
        "/v1/summary?tenant=acme&month=2025-03",
        Some("e1001"),
        None,
    )
    .await;
    assert_eq!(code, 403);

    // Payroll CSV: BOM, the documented header, March's frozen figures.
    let (code, csv) = http(
        node,
        "GET",
        "/v1/export/payroll?tenant=acme&month=2025-03",
        Some("acme-admin"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let csv = csv
        .strip_prefix('\u{feff}')
        .unwrap_or_else(|| panic!("no BOM: {csv:?}"));
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), PAYROLL_COLUMNS.join(","));
    let o1 = lines.find(|l| l.starts_with("acme,2025-03,O1,")).unwrap();
    assert_eq!(
        o1,
        "acme,2025-03,O1,ops,true,21,0,0,0,0,0,0,19,2,annual:2,0.00,0,"
    );
    // April's: O1's row carries the adjustment to March. April itself is
    // closed here first: the node's tick (every 60 s) closes it anyway, and
    // on a slow machine it did before this export.
    hr_rig::close_due(node, hr_rig::now_ms()).await;
    let (_, csv) = http(
        node,
        "GET",
        "/v1/export/payroll?tenant=acme&month=2025-04",
        Some("acme-admin"),
        None,
    )
    .await;
    assert!(
        csv.contains("acme,2025-04,O1,ops,false,22,0,0,0,0,0,0,22,0,,0.00,0,\"2025-03: absences -1, leave:sick +1\""),
        "{csv}"
    );
    let (_, body) = http(
        node,
        "GET",
        "/v1/export/payroll?tenant=acme&month=2025-03&format=json",
        Some("super"),
        None,
    )
    .await;
    let j = json(&body);
    assert_eq!(
        j["columns"].as_array().unwrap().len(),
        PAYROLL_COLUMNS.len()
    );
    assert!(
        j["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["employee"] == "O1" && r["absences"] == "19")
    );
    let (code, body) = http(
        node,
        "GET",
        "/v1/export/payroll?tenant=acme&month=2025-03&format=xlsx",
        Some("super"),
        None,
    )
    .await;
    assert!(code == 400 && body.contains("csv or json"), "{code} {body}");

    // The CLI writes the same bytes.
    let out = node.dir.path().join("payroll.csv");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_fencegate"))
        .args([
            "export", "payroll", "--month", "2025-03", "--tenant", "acme", "--config",
        ])
        .arg(node.dir.path().join("fencegate.toml"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let (_, from_route) = http(
        node,
        "GET",
        "/v1/export/payroll?tenant=acme&month=2025-03",
        Some("super"),
        None,
    )
    .await;
    assert_eq!(std::fs::read_to_string(&out).unwrap(), from_route);

    hr_rig::assert_rebuild_equals_incremental(node).await;
}
