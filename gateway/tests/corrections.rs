//! Make-up punches (补卡) through a real node: `POST /v1/corrections`,
//! `POST /v1/corrections/{id}/evidence`, `POST /v1/corrections/{id}/decision`
//! and `GET /v1/corrections`, under each group's policy
//! (`[tenants.<id>.groups.<name>.corrections]`).
//!
//! - the window: a day further back than `days_back` is 422;
//! - the quota: the request past `monthly_quota` in a month is 422, and a
//!   rejected one stops counting;
//! - the evidence deadline: a request owing evidence lapses at its deadline
//!   (watched live with a 3.6 s deadline, and for the seed's traveller's
//!   4 h one with a request filed five hours ago); evidence attached in time
//!   makes it decidable;
//! - idempotency: the same request or decision id again is the same answer,
//!   a different one under a used id is 409;
//! - scope: another department's supervisor and another tenant's admin get
//!   404, employees file for themselves only;
//! - the day result: an approved make-up turns a missing clock-in into a
//!   normal slot marked `made_up`; a rejected one leaves it missing;
//! - every step is a record of the log (what the sinks forward), and a
//!   rebuild from the log equals the incremental store.
//!
//! The seed's traveller (E1001, group `travel`): flying back on a delayed
//! flight she missed yesterday's clock-in; her phone took the 18:05
//! clock-out offline and uploaded it on landing. She asks for a make-up of
//! the clock-in; her group requires a boarding pass within 4 hours of the
//! request, or the request lapses.

mod hr_rig;

use std::time::Duration;

use fencegate::client::PunchReply;
use fencegate_schema::{
    CorrectionDecisionMsg, CorrectionEvidenceMsg, CorrectionMsg, HrMsg, PunchKind, RecordBodyMsg,
    RecordMsg,
};
use hr_rig::common::Node;
use hr_rig::{HQ, http, json, now_ms, punch, wait_for};
use serde_json::Value;

const RULES: &str = r#"
[tenants.acme]
timezone = "Asia/Shanghai"
default_group = "office"
[tenants.acme.groups.office]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
slots = [{ name = "day", start = "09:00", end = "18:00" }]
observe_holidays = false
close_after_min = 0
[tenants.acme.groups.office.corrections]
days_back = 3
monthly_quota = 1
# The seed's traveller: a boarding pass within 4 hours, or the request lapses.
[tenants.acme.groups.travel]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
slots = [{ name = "day", start = "09:00", end = "18:00" }]
observe_holidays = false
close_after_min = 0
[tenants.acme.groups.travel.corrections]
evidence = "required"
evidence_within_h = 4
# Evidence due within 3.6 s, so the test can watch a request lapse.
[tenants.acme.groups.hurry]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
slots = [{ name = "day", start = "09:00", end = "18:00" }]
observe_holidays = false
[tenants.acme.groups.hurry.corrections]
evidence = "required"
evidence_within_h = 0.001
[tenants.acme.departments.ops]
supervisor = "E0100"
[tenants.acme.departments.security]
supervisor = "E0200"
[tenants.acme.employees.E1001]
department = "ops"
group = "travel"
[tenants.acme.employees.E1002]
department = "ops"
[tenants.acme.employees.E2001]
department = "security"
[tenants.acme.employees.E3001]
department = "ops"
group = "hurry"

[tenants.globex]
timezone = "Asia/Shanghai"
default_group = "office"
[tenants.globex.groups.office]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
slots = [{ name = "day", start = "09:00", end = "18:00" }]
observe_holidays = false
[tenants.globex.departments.ops]
supervisor = "G0100"
[tenants.globex.employees.G1]
department = "ops"
"#;

fn shanghai() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Asia/Shanghai").unwrap()
}

/// The date `days` before today in Shanghai, `YYYY-MM-DD`.
fn days_ago(days: i64) -> jiff::civil::Date {
    jiff::Timestamp::from_millisecond(now_ms())
        .unwrap()
        .to_zoned(shanghai())
        .date()
        .checked_sub(jiff::Span::new().days(days))
        .unwrap()
}

/// `date` at `h:m` in Shanghai, unix ms.
fn at(date: jiff::civil::Date, h: i8, m: i8) -> i64 {
    date.at(h, m, 0, 0)
        .to_zoned(shanghai())
        .unwrap()
        .timestamp()
        .as_millisecond()
}

fn request(id: &str, employee: Option<&str>, date: &str, kind: &str, reason: &str) -> String {
    let mut v = serde_json::json!({
        "correction_id": id, "date": date, "kind": kind, "reason": reason,
    });
    if let Some(e) = employee {
        v["employee"] = e.into();
    }
    v.to_string()
}

fn decide(decision_id: &str, decision: &str) -> String {
    format!(r#"{{"decision_id": "{decision_id}", "decision": "{decision}", "comment": "ok"}}"#)
}

async fn post(node: &Node, path: &str, token: &str, body: &str) -> (u16, Value) {
    let (code, text) = http(node, "POST", path, Some(token), Some(body)).await;
    (code, json(&text))
}

/// A clock-out taken offline at `when` and uploaded now.
async fn offline_clock_out(node: &Node, id: u128, employee: &str, when: i64) {
    let c = node.client("acme", &format!("phone-{employee}")).await;
    let mut p = punch(id, employee, HQ);
    p.kind = PunchKind::Out;
    p.offline = true;
    p.device_time_ms = when;
    assert!(matches!(c.punch(&p).await.unwrap(), PunchReply::Ack(_)));
}

/// Appends an HR record at `time_ms` straight to the node's log, as the
/// routes (or another node) write them; returns its LSN.
async fn append(node: &Node, kind: &str, id: &str, time_ms: i64, body: HrMsg) -> u64 {
    let rec = RecordMsg {
        record_id: fencegate::results::hr::hr_record_id("acme", kind, id),
        tenant: "acme".into(),
        gateway_time_ms: time_ms,
        node: None,
        body: RecordBodyMsg::Hr(body),
    };
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let bytes = rec.encode_into(&mut fbb).to_vec();
    node.running
        .edge
        .log
        .append(&bytes, time_ms as u64)
        .unwrap()
        .await
        .unwrap()
        .first
        .0
}

/// Waits until the materializer has applied the record at `lsn`, then
/// lists acme's requests.
async fn wait_until_applied(node: &Node, lsn: u64) -> (u16, Value) {
    let store = fencegate::results::ResultsStore::open(&node.cfg.attendance.results_url)
        .await
        .unwrap();
    assert!(
        store.wait_applied(lsn, Duration::from_secs(10)).await,
        "the materializer did not reach record {lsn}"
    );
    let (code, body) = http(
        node,
        "GET",
        "/v1/corrections?tenant=acme",
        Some("super"),
        None,
    )
    .await;
    (code, json(&body))
}

fn err(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("")
}

fn correction_records(node: &Node) -> Vec<(String, HrMsg)> {
    node.records()
        .into_iter()
        .filter_map(|r| match r.body {
            RecordBodyMsg::Hr(
                h @ (HrMsg::Correction(_)
                | HrMsg::CorrectionEvidence(_)
                | HrMsg::CorrectionDecision(_)),
            ) => Some((r.tenant, h)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_ups_follow_the_policy_lapse_without_evidence_and_fill_the_day() {
    scenario(&hr_rig::start_with_rules(RULES, None).await).await;
}

/// The same suite with the results in a real PostgreSQL (the multi-node
/// store): one schema, one set of queries, the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_ups_follow_the_policy_lapse_without_evidence_and_fill_the_day_postgres() {
    let pg_dir = tempfile::tempdir().unwrap();
    let pg = fencegate_testkit::Postgres::start(pg_dir.path());
    scenario(&hr_rig::start_with_rules(RULES, Some(&pg.url())).await).await;
}

async fn scenario(node: &Node) {
    let yesterday = days_ago(1);
    let y = yesterday.to_string();

    // --- The seed's traveller: offline clock-out, then a make-up clock-in.
    offline_clock_out(node, 1, "E1001", at(yesterday, 18, 5)).await;
    let day = format!("/v1/days?tenant=acme&employee=E1001&date={y}");
    let missing = wait_for(node, &day, |v| v["days"][0]["status"] == "missing_in").await;
    assert!(missing["days"][0].get("made_up").is_none(), "{missing:#}");

    // She files it herself (the employee token), without the boarding pass.
    let (code, filed) = post(
        node,
        "/v1/corrections",
        "e1001",
        &request(
            "trip-1",
            None,
            &y,
            "in",
            "flight MU5101 delayed; landed 10:40",
        ),
    )
    .await;
    assert_eq!(code, 200, "{filed:#}");
    assert_eq!(filed["status"], "pending");
    assert_eq!(filed["employee"], "E1001");
    assert_eq!(filed["slot"], "day");
    assert_eq!(filed["at_ms"], at(yesterday, 9, 0), "the slot's start");
    let due = filed["evidence_due_ms"].as_i64().unwrap();
    let requested = filed["requested_ms"].as_i64().unwrap();
    assert_eq!(due - requested, 4 * 3_600_000, "{filed:#}");
    // Resent as it was: the same answer; the id for another request: 409.
    let (code, again) = post(
        node,
        "/v1/corrections",
        "e1001",
        &request(
            "trip-1",
            None,
            &y,
            "in",
            "flight MU5101 delayed; landed 10:40",
        ),
    )
    .await;
    assert_eq!((code, &again), (200, &filed));
    let (code, body) = post(
        node,
        "/v1/corrections",
        "e1001",
        &request("trip-1", None, &y, "out", "another thing"),
    )
    .await;
    assert!(
        code == 409 && err(&body).contains("use a new correction_id"),
        "{body}"
    );
    // An employee files for itself only.
    let (code, body) = post(
        node,
        "/v1/corrections",
        "e1001",
        &request("x-1", Some("E1002"), &y, "in", "x"),
    )
    .await;
    assert!(
        code == 403 && err(&body).contains("for itself only"),
        "{body}"
    );

    // Approving while the boarding pass is owed: 409 naming the deadline.
    let decision = "/v1/corrections/trip-1/decision";
    let (code, body) = post(node, decision, "ops-lead", &decide("trip-d1", "approve")).await;
    assert!(
        code == 409
            && err(&body).contains("still owes its evidence")
            && err(&body).contains(filed["evidence_due"].as_str().unwrap()),
        "{body}"
    );
    // Attached in time: decidable.
    let (code, with) = post(
        node,
        "/v1/corrections/trip-1/evidence",
        "e1001",
        r#"{"evidence_ref": "boarding-pass MU5101 2026"}"#,
    )
    .await;
    assert_eq!(code, 200, "{with:#}");
    assert_eq!(with["evidence"], "boarding-pass MU5101 2026");
    assert_eq!(with["status"], "pending");
    let (code, approved) = post(node, decision, "ops-lead", &decide("trip-d1", "approve")).await;
    assert_eq!(code, 200, "{approved:#}");
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["decision"]["decider"], "ops-lead");
    // The same decision again: the same answer; the id reused, or a second
    // decision: 409.
    let (code, again) = post(node, decision, "ops-lead", &decide("trip-d1", "approve")).await;
    assert_eq!((code, &again), (200, &approved));
    let (code, body) = post(node, decision, "ops-lead", &decide("trip-d1", "reject")).await;
    assert!(code == 409 && err(&body).contains("already used"), "{body}");
    let (code, body) = post(node, decision, "acme-admin", &decide("trip-d2", "reject")).await;
    assert!(
        code == 409 && err(&body).contains("already approved"),
        "{body}"
    );

    // The day follows: the missing clock-in is made up, the slot normal.
    let made = wait_for(node, &day, |v| v["days"][0]["status"] == "normal").await;
    let slot = &made["days"][0]["slots"][0];
    assert_eq!(slot["status"], "normal", "{made:#}");
    assert_eq!(slot["in_ms"], at(yesterday, 9, 0), "{made:#}");
    assert_eq!(slot["made_up"][0]["kind"], "in", "{made:#}");
    assert_eq!(slot["made_up"][0]["correction_id"], "trip-1", "{made:#}");
    assert_eq!(made["days"][0]["made_up"][0]["correction_id"], "trip-1");

    // --- A request the traveller filed five hours ago, owing its boarding
    // pass within 4 h: it lapsed an hour ago (the record written as the
    // route writes it, at that time).
    let five_h_ago = now_ms() - 5 * 3_600_000;
    append(
        node,
        "correction",
        "trip-0",
        five_h_ago,
        HrMsg::Correction(CorrectionMsg {
            correction_id: "trip-0".into(),
            employee_id: "E1001".into(),
            date: days_ago(2).to_string(),
            slot: Some("day".into()),
            kind: PunchKind::Out,
            at_ms: at(days_ago(2), 18, 0),
            reason: Some("flight".into()),
            evidence_ref: None,
            requested_by: Some("e1001".into()),
            department: Some("ops".into()),
            evidence_due_ms: five_h_ago + 4 * 3_600_000,
        }),
    )
    .await;
    let listed = wait_for(node, "/v1/corrections?tenant=acme&status=lapsed", |v| {
        v["corrections"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let lapsed = &listed["corrections"][0];
    assert_eq!(lapsed["correction_id"], "trip-0", "{listed:#}");
    let deadline = lapsed["evidence_due"].as_str().unwrap().to_owned();
    let (code, body) = post(
        node,
        "/v1/corrections/trip-0/decision",
        "ops-lead",
        &decide("trip-d0", "approve"),
    )
    .await;
    assert!(
        code == 409 && err(&body).contains("lapsed") && err(&body).contains(&deadline),
        "{body}"
    );
    let (code, body) = post(
        node,
        "/v1/corrections/trip-0/evidence",
        "e1001",
        r#"{"evidence_ref": "too late"}"#,
    )
    .await;
    assert!(code == 409 && err(&body).contains(&deadline), "{body}");
    // Records after the deadline (another node's, or a rebuild) change
    // nothing either: the materializer judges them at their own time.
    let now = now_ms();
    append(
        node,
        "correction-evidence",
        "trip-0",
        now,
        HrMsg::CorrectionEvidence(CorrectionEvidenceMsg {
            correction_id: "trip-0".into(),
            evidence_ref: "too late".into(),
            attached_by: Some("e1001".into()),
            employee_id: Some("E1001".into()),
        }),
    )
    .await;
    let last = append(
        node,
        "correction-decision",
        "trip-d0",
        now,
        HrMsg::CorrectionDecision(CorrectionDecisionMsg {
            correction_id: "trip-0".into(),
            decision_id: "trip-d0".into(),
            approve: false,
            decider: Some("ops-lead".into()),
            role: Some("supervisor".into()),
            comment: None,
            employee_id: Some("E1001".into()),
            kind: PunchKind::Out,
            at_ms: at(days_ago(2), 18, 0),
            slot: Some("day".into()),
        }),
    )
    .await;
    let (_, body) = wait_until_applied(node, last).await;
    let t0 = body["corrections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["correction_id"] == "trip-0")
        .unwrap()
        .clone();
    assert_eq!(
        (&t0["status"], &t0["evidence"], &t0["decision"]),
        (&Value::from("lapsed"), &Value::Null, &Value::Null),
        "{t0:#}"
    );

    // --- Watched live: E3001's group gives 3.6 s for the evidence.
    let (code, hurry) = post(
        node,
        "/v1/corrections",
        "ops-lead",
        &request("h-1", Some("E3001"), &y, "out", "phone died"),
    )
    .await;
    assert_eq!(code, 200, "{hurry:#}");
    assert_eq!(hurry["status"], "pending");
    let wait = hurry["evidence_due_ms"].as_i64().unwrap() - now_ms() + 300;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let (_, body) = http(
        node,
        "GET",
        "/v1/corrections?tenant=acme&employee=E3001",
        Some("ops-lead"),
        None,
    )
    .await;
    assert_eq!(json(&body)["corrections"][0]["status"], "lapsed", "{body}");
    let (code, body) = post(
        node,
        "/v1/corrections/h-1/decision",
        "acme-admin",
        &decide("h-d1", "reject"),
    )
    .await;
    assert!(code == 409 && err(&body).contains("lapsed"), "{body}");
    // A lapsed request does not hold the slot: the employee files again.
    let (code, body) = post(
        node,
        "/v1/corrections",
        "ops-lead",
        &request("h-2", Some("E3001"), &y, "out", "phone died"),
    )
    .await;
    assert_eq!(code, 200, "{body:#}");

    // --- The window and the quota (group office: 3 days back, 1 a month).
    let (code, body) = post(
        node,
        "/v1/corrections",
        "acme-admin",
        &request("w-1", Some("E1002"), &days_ago(4).to_string(), "in", "x"),
    )
    .await;
    assert!(
        code == 422
            && err(&body)
                .contains("is 4 days back; group 'office' allows 3 (corrections.days_back)"),
        "{body}"
    );
    let (code, q1) = post(
        node,
        "/v1/corrections",
        "acme-admin",
        &request("q-1", Some("E1002"), &y, "in", "forgot"),
    )
    .await;
    assert_eq!(code, 200, "{q1:#}");
    let (code, body) = post(
        node,
        "/v1/corrections",
        "acme-admin",
        &request("q-2", Some("E1002"), &y, "out", "forgot"),
    )
    .await;
    assert!(
        code == 422
            && err(&body).contains("group 'office' allows 1 a month (corrections.monthly_quota"),
        "{body}"
    );
    // Rejected requests do not count.
    let (code, body) = post(
        node,
        "/v1/corrections/q-1/decision",
        "acme-admin",
        &decide("q-d1", "reject"),
    )
    .await;
    assert_eq!(
        (code, &body["status"]),
        (200, &Value::from("rejected")),
        "{body}"
    );
    let (code, body) = post(
        node,
        "/v1/corrections",
        "acme-admin",
        &request("q-2", Some("E1002"), &y, "out", "forgot"),
    )
    .await;
    assert_eq!(code, 200, "{body}");

    // --- A rejected make-up leaves the slot missing.
    offline_clock_out(node, 2, "E2001", at(yesterday, 18, 2)).await;
    let sec_day = format!("/v1/days?tenant=acme&employee=E2001&date={y}");
    wait_for(node, &sec_day, |v| v["days"][0]["status"] == "missing_in").await;
    let (code, body) = post(
        node,
        "/v1/corrections",
        "super",
        &format!(
            r#"{{"correction_id": "s-1", "employee": "E2001", "date": "{y}", "kind": "in", "reason": "badge at home", "evidence_ref": "gate log 7"}}"#
        ),
    )
    .await;
    // Super names the tenant.
    assert!(
        code == 400 && err(&body).contains("tenant is required"),
        "{body}"
    );
    let (code, body) = post(
        node,
        "/v1/corrections?tenant=acme",
        "super",
        &format!(
            r#"{{"correction_id": "s-1", "employee": "E2001", "date": "{y}", "kind": "in", "reason": "badge at home", "evidence_ref": "gate log 7"}}"#
        ),
    )
    .await;
    assert_eq!(code, 200, "{body:#}");
    // globex's own request, for the scope checks.
    let (code, body) = post(
        node,
        "/v1/corrections?tenant=globex",
        "super",
        &request("g-1", Some("G1"), &y, "in", "x"),
    )
    .await;
    assert_eq!(code, 200, "{body:#}");

    // Scope: another department's supervisor, another tenant's admin or
    // supervisor: 404 (ids do not leak); an employee cannot decide.
    for (token, path) in [
        ("ops-lead", "/v1/corrections/s-1/decision"),
        ("globex-ops-lead", "/v1/corrections/q-2/decision"),
        ("acme-admin", "/v1/corrections/g-1/decision"),
        ("acme-admin", "/v1/corrections/no-such/decision"),
    ] {
        let (code, body) = post(node, path, token, &decide("z", "approve")).await;
        assert_eq!(code, 404, "{token} {path}: {body}");
    }
    let (code, _) = post(
        node,
        "/v1/corrections/trip-1/decision",
        "e1001",
        &decide("z", "approve"),
    )
    .await;
    assert_eq!(code, 403);
    let (code, body) = post(
        node,
        "/v1/corrections",
        "ops-lead",
        &request("o-1", Some("E2001"), &y, "in", "x"),
    )
    .await;
    assert_eq!(
        code, 404,
        "a supervisor files for its department only: {body}"
    );
    // Listing is scoped too.
    let (_, body) = http(node, "GET", "/v1/corrections", Some("e1001"), None).await;
    let mine = json(&body);
    assert!(
        mine["corrections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["employee"] == "E1001"),
        "{mine:#}"
    );
    let (_, body) = http(node, "GET", "/v1/corrections", Some("ops-lead"), None).await;
    let ops = json(&body);
    assert!(
        ops["corrections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["department"] == "ops"),
        "{ops:#}"
    );
    let (code, body) = post(
        node,
        "/v1/corrections/s-1/decision",
        "acme-admin",
        &decide("s-d1", "reject"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let still = wait_for(node, &sec_day, |v| v["days"][0]["status"] == "missing_in").await;
    assert_eq!(still["days"][0]["slots"][0]["status"], "missing_in");
    assert!(still["days"][0].get("made_up").is_none(), "{still:#}");

    // Bad input names the field and the fix.
    for (body, needle) in [
        (
            request("b-1", Some("E1002"), &y, "sideways", "x"),
            "\\\"in\\\"",
        ),
        (
            format!(
                r#"{{"correction_id": "b-1", "employee": "E1002", "date": "{y}", "kind": "in"}}"#
            ),
            "reason is required",
        ),
        (
            request("b-1", Some("E1002"), "2026-13-01", "in", "x"),
            "YYYY-MM-DD",
        ),
        (
            request("b-1", Some("E1002"), &days_ago(-1).to_string(), "in", "x"),
            "in the future",
        ),
        (
            format!(
                r#"{{"correction_id": "b-1", "employee": "E1002", "date": "{y}", "kind": "in", "reason": "x", "slot": "night"}}"#
            ),
            "use one of day",
        ),
    ] {
        let (code, text) = http(
            node,
            "POST",
            "/v1/corrections",
            Some("acme-admin"),
            Some(&body),
        )
        .await;
        assert!(
            code == 422 && text.contains(needle),
            "{body}: {code} {text}"
        );
    }

    // Every step is a record of the log, as the sinks forward it.
    let records = correction_records(node);
    let kinds: Vec<&str> = records
        .iter()
        .map(|(_, h)| match h {
            HrMsg::Correction(c) => c.correction_id.as_str(),
            HrMsg::CorrectionEvidence(_) => "evidence",
            HrMsg::CorrectionDecision(_) => "decision",
            _ => "",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "trip-1", "evidence", "decision", "trip-0", "evidence", "decision", "h-1", "h-2",
            "q-1", "decision", "q-2", "s-1", "g-1", "decision"
        ],
        "{records:#?}"
    );
    let approved_record = records
        .iter()
        .find_map(|(_, h)| match h {
            HrMsg::CorrectionDecision(d) if d.approve => Some(d.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(approved_record.correction_id, "trip-1");
    assert_eq!(approved_record.employee_id.as_deref(), Some("E1001"));
    assert_eq!(approved_record.at_ms, at(yesterday, 9, 0));
    assert_eq!(approved_record.kind, PunchKind::In);
    assert_eq!(records.iter().filter(|(t, _)| t == "globex").count(), 1);

    hr_rig::assert_rebuild_equals_incremental(node).await;
}
