//! Approval decisions through a real node: out-of-range punches go through
//! the edge into the log as pending; `POST /v1/approvals/{id}/decision`
//! decides them. Scoped (a supervisor its department, another tenant's or
//! department's record is 404, an employee 403), idempotent by decision id
//! (same id: same answer; a second decision: 409 naming the first), a
//! record of its own in the log (forwarded downstream), and the day result
//! follows (a rejected punch no longer counts). A rebuild from the log
//! equals the incremental store, decisions included.

mod hr_rig;

use fencegate::client::PunchReply;
use fencegate_schema::{HrMsg, RecordBodyMsg};
use hr_rig::{FAR, HQ, http, json, punch, start, wait_for};
use serde_json::Value;

fn record_of(v: &Value, employee: &str) -> String {
    v["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["employee"] == employee)
        .unwrap_or_else(|| panic!("no approval of {employee} in {v:#}"))["record_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn decide(decision_id: &str, decision: &str) -> String {
    format!(
        r#"{{"decision_id": "{decision_id}", "decision": "{decision}", "comment": "client site"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_scoped_idempotent_durable_and_change_the_day() {
    scenario(start().await).await;
}

/// The same suite with the results in a real PostgreSQL (the multi-node
/// store): one schema, one set of queries, the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_scoped_idempotent_durable_and_change_the_day_postgres() {
    let pg_dir = tempfile::tempdir().unwrap();
    let pg = fencegate_testkit::Postgres::start(pg_dir.path());
    scenario(hr_rig::start_with(Some(&pg.url())).await).await;
}

async fn scenario(node: hr_rig::Node) {
    let c = node.client("acme", "phone-a").await;
    for (id, e, at) in [(1, "E1001", FAR), (2, "E2001", FAR), (3, "E3001", HQ)] {
        assert!(matches!(
            c.punch(&punch(id, e, at)).await.unwrap(),
            PunchReply::Ack(_)
        ));
    }
    let g = node.client("globex", "phone-g").await;
    assert!(matches!(
        g.punch(&punch(4, "E1001", FAR)).await.unwrap(),
        PunchReply::Ack(_)
    ));
    let pending = wait_for(&node, "/v1/approvals?tenant=acme", |v| {
        v["approvals"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let ops = record_of(&pending, "E1001");
    let sec = record_of(&pending, "E2001");
    let globex = record_of(
        &wait_for(&node, "/v1/approvals?tenant=globex", |v| {
            v["approvals"].as_array().is_some_and(|a| a.len() == 1)
        })
        .await,
        "E1001",
    );
    let post = |rec: &str| format!("/v1/approvals/{rec}/decision");

    // Listing is scoped: the supervisor sees its department's only.
    let (code, body) = http(&node, "GET", "/v1/approvals", Some("ops-lead"), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(record_of(&json(&body), "E1001"), ops);

    // Outside the scope: 404, never 403 (ids do not leak); employees 403.
    for (token, rec) in [
        ("ops-lead", &sec),
        ("ops-lead", &globex),
        ("globex-ops-lead", &ops),
        ("acme-admin", &globex),
    ] {
        let (code, body) = http(
            &node,
            "POST",
            &post(rec),
            Some(token),
            Some(&decide("x", "approve")),
        )
        .await;
        assert_eq!(code, 404, "{token} on {rec}: {body}");
    }
    let (code, _) = http(
        &node,
        "POST",
        &post(&ops),
        Some("e1001"),
        Some(&decide("x", "approve")),
    )
    .await;
    assert_eq!(code, 403);

    // Before the decision: E2001's out-of-range punch counts (a free
    // schedule: a day with a counted punch is normal).
    let date = json(
        &http(
            &node,
            "GET",
            "/v1/days?tenant=acme&employee=E2001&date=2000-01-01",
            Some("super"),
            None,
        )
        .await
        .1,
    );
    assert_eq!(date["days"].as_array().unwrap().len(), 0);
    let today = jiff::Timestamp::from_millisecond(hr_rig::now_ms())
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .date()
        .to_string();
    let day_of = |e: &str| format!("/v1/days?tenant=acme&employee={e}&date={today}");
    let before = wait_for(&node, &day_of("E2001"), |v| {
        v["days"][0]["status"] == "normal"
    })
    .await;
    assert_eq!(before["days"][0]["revision"], 0, "{before:#}");

    // A decision: 200 once durable; the same id again, the same answer.
    let (code, first) = http(
        &node,
        "POST",
        &post(&ops),
        Some("ops-lead"),
        Some(&decide("d-1", "approve")),
    )
    .await;
    assert_eq!(code, 200, "{first}");
    let first = json(&first);
    assert_eq!(first["decision"], "approve");
    assert_eq!(first["decider"], "ops-lead");
    let (code, again) = http(
        &node,
        "POST",
        &post(&ops),
        Some("ops-lead"),
        Some(&decide("d-1", "approve")),
    )
    .await;
    assert_eq!((code, json(&again)), (200, first.clone()));
    // The id reused for another decision, or a second decision: 409.
    let (code, body) = http(
        &node,
        "POST",
        &post(&ops),
        Some("ops-lead"),
        Some(&decide("d-1", "reject")),
    )
    .await;
    assert!(
        code == 409 && body.contains("already used"),
        "{code} {body}"
    );
    let (code, body) = http(
        &node,
        "POST",
        &post(&ops),
        Some("acme-admin"),
        Some(&decide("d-2", "reject")),
    )
    .await;
    assert!(code == 409 && body.contains("\\\"d-1\\\""), "{code} {body}");
    // Decided records leave the pending list.
    let (_, body) = http(
        &node,
        "GET",
        "/v1/approvals?tenant=acme&status=decided",
        Some("super"),
        None,
    )
    .await;
    let decided = json(&body);
    assert_eq!(
        decided["approvals"][0]["decision"]["decision_id"], "d-1",
        "{decided:#}"
    );

    // A tenant admin rejects the other: the punch no longer counts.
    let (code, body) = http(
        &node,
        "POST",
        &post(&sec),
        Some("acme-admin"),
        Some(&decide("d-3", "reject")),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (_, body) = http(&node, "GET", &day_of("E2001"), Some("super"), None).await;
    let after = json(&body);
    assert_eq!(after["days"][0]["status"], "rest_day", "{after:#}");
    assert_eq!(after["days"][0]["revision"], 1, "{after:#}");

    // Each decision is a record of the log (forwarded like every record).
    let decisions: Vec<_> = node
        .records()
        .into_iter()
        .filter_map(|r| match r.body {
            RecordBodyMsg::Hr(HrMsg::Decision(d)) => Some((r.tenant, d)),
            _ => None,
        })
        .collect();
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    assert!(decisions.iter().all(|(t, _)| t == "acme"));
    assert_eq!(decisions[0].1.decision_id, "d-1");
    assert!(decisions[0].1.approve);
    assert_eq!(decisions[1].1.decider.as_deref(), Some("acme-admin"));

    // Bad input names the field and the fix.
    let (code, body) = http(
        &node,
        "POST",
        &post(&globex),
        Some("super"),
        Some(r#"{"decision": "approve"}"#),
    )
    .await;
    assert!(
        code == 422 && body.contains("decision_id is required"),
        "{code} {body}"
    );
    let (code, body) = http(
        &node,
        "POST",
        &post(&globex),
        Some("super"),
        Some(&decide("g-1", "maybe")),
    )
    .await;
    assert!(
        code == 422 && body.contains("\\\"approve\\\" or \\\"reject\\\""),
        "{code} {body}"
    );
    let (code, body) = http(
        &node,
        "POST",
        "/v1/approvals/not-an-id/decision",
        Some("super"),
        Some(&decide("g-1", "approve")),
    )
    .await;
    assert!(code == 400 && body.contains("8-4-4-4-12"), "{code} {body}");
    let (code, body) = http(&node, "POST", &post(&globex), Some("super"), Some("{")).await;
    assert!(code == 400 && body.contains("not JSON"), "{code} {body}");
    let (code, body) = http(
        &node,
        "GET",
        "/v1/approvals?tenant=acme&status=open",
        Some("super"),
        None,
    )
    .await;
    assert!(code == 400 && body.contains("pending"), "{code} {body}");
    // A punch that never waited for approval cannot be decided.
    let all = wait_for(&node, &day_of("E3001"), |v| {
        v["days"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    assert_eq!(all["days"][0]["status"], "normal");
    let in_range = node
        .records()
        .into_iter()
        .find_map(|r| match &r.body {
            RecordBodyMsg::Punch(p) if p.employee_id == "E3001" => {
                Some(fencegate::record_json::uuid(&r.record_id))
            }
            _ => None,
        })
        .unwrap();
    let (code, body) = http(
        &node,
        "POST",
        &post(&in_range),
        Some("super"),
        Some(&decide("g-2", "approve")),
    )
    .await;
    assert!(
        code == 422 && body.contains("does not wait for approval"),
        "{code} {body}"
    );

    hr_rig::assert_rebuild_equals_incremental(&node).await;
}
