//! The promises of docs/PROTOCOL.md and docs/ATTENDANCE.md that a client or
//! integrator written from the documents alone relies on, checked against a
//! real node: what `HelloAck` carries, which rejections are recorded, the
//! field policy's verdict, what a repeat leaves in the log, the refusal
//! metrics, the QR code layout (computed here from the document with the
//! hmac and sha2 crates, not the gateway's code), and the shapes of
//! `GET /v1/qr` and `GET /v1/records`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{GLOBEX, HQ, Node, now_ms, punch};
use fencegate::client::PunchReply;
use fencegate::config::Config;
use fencegate_schema::{
    Fix, PingBatchMsg, Position, PunchAckMsg, PunchMethod, PunchMsg, Reason, RecordBodyMsg, Verdict,
};
use flatbuffers::FlatBufferBuilder;
use hmac::Mac as _;
use serde_json::Value;

const RULES: &str = r#"
[tenants.acme]
timezone = "Asia/Shanghai"
out_of_range = "approval"
accuracy = { policy = "tolerant", max_m = 50.0 }

[tenants.acme.sites.sh]
qr = true

[tenants.globex]
timezone = "Europe/Berlin"
out_of_range = "field"
"#;

const SUPER: &str = "super-secret-0123456789";

fn write_config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("fences.geojson"), common::FENCES).unwrap();
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    std::fs::write(dir.join("super.token"), format!("{SUPER}\n")).unwrap();
    let text = format!(
        "[node]\ndata_dir = {:?}\n[quic]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[admin.tokens]]\nname = \"ops\"\nrole = \"super\"\ntoken_file = {:?}\n\
         [fences]\npath = {:?}\n[attendance]\nrules = {:?}\n\
         [[tenants]]\nid = \"acme\"\n[[tenants]]\nid = \"globex\"\n",
        dir.join("data"),
        dir.join("super.token"),
        dir.join("fences.geojson"),
        dir.join("rules.toml")
    );
    let path = dir.join("fencegate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    Node::start_with(dir, cfg).await
}

fn ack(r: PunchReply) -> PunchAckMsg {
    match r {
        PunchReply::Ack(a) => a,
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// GET `path` on the admin API with the super token (or none): (status,
/// content type, body).
async fn get(node: &Node, path: &str, auth: bool) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = node.running.admin_addr.to_string();
    let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
    let auth = if auth {
        format!("Authorization: Bearer {SUPER}\r\n")
    } else {
        String::new()
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    // Records answers stream (chunked); others have a length.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        common::dechunk(body)
    } else {
        body.to_owned()
    };
    (code, ctype, body)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The value of the first series of `name` whose labels contain every one
/// of `labels` (label order in the exposition is not part of the contract).
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// §3/§5.5: `HelloAck.max_accuracy_m` is the tenant's accuracy cap, 0 when
/// it has none. Red if the field is not filled from the tenant's rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_ack_carries_the_tenants_accuracy_cap() {
    let node = node().await;
    let c = node.connector.handshake().await.unwrap();
    let a = c
        .hello(&node.token("acme", "phone-1"), "phone-1")
        .await
        .unwrap();
    assert_eq!(a.max_accuracy_m, 50.0);
    assert_eq!(a.max_frame_bytes, 4096);
    assert_eq!(a.repeat_window_s, 300);
    let g = node.connector.handshake().await.unwrap();
    let a = g.hello(&node.token("globex", "g-1"), "g-1").await.unwrap();
    assert_eq!(a.max_accuracy_m, 0.0, "no cap");
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// §5.5: a policy rejection is recorded (record id in the ack, a record in
/// the log); a validation rejection is not. Both echo the punch id and
/// both count in `fencegate_punches_total{verdict="rejected"}`; refusals
/// count in `fencegate_refused_total{channel, reason}`. Red if the
/// validation path skips the verdict counter or the channel label, or
/// if a policy rejection stops being recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_rejections_are_recorded_validation_rejections_are_not_and_both_are_counted() {
    let node = node().await;
    let (_, _, before) = get(&node, "/metrics", false).await;
    let c = node.client("acme", "phone-1").await;

    let mut blurry = punch(1, "E1", HQ);
    blurry.position = Some(Position::new(HQ.0, HQ.1, 80.0));
    let a = ack(c.punch(&blurry).await.unwrap());
    assert_eq!(
        (a.verdict, a.reason),
        (Verdict::Rejected, Reason::AccuracyTooLow)
    );
    assert_eq!(a.punch_id, Some(blurry.punch_id));
    let rid = a.record_id.expect("a policy rejection is recorded");
    let recs = node.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].record_id, rid);
    match &recs[0].body {
        RecordBodyMsg::Punch(p) => assert_eq!(
            (p.verdict, p.reason),
            (Verdict::Rejected, Reason::AccuracyTooLow)
        ),
        other => panic!("{other:?}"),
    }

    let mut future = punch(2, "E1", HQ);
    future.device_time_ms = now_ms() + 3_600_000;
    let a = ack(c.punch(&future).await.unwrap());
    assert_eq!(
        (a.verdict, a.reason),
        (Verdict::Rejected, Reason::FutureTimestamp)
    );
    assert_eq!(a.punch_id, Some(future.punch_id));
    assert_eq!(a.record_id, None, "a validation rejection is not recorded");
    assert_eq!(node.records().len(), 1);

    // A datagram refused by validation: counted under its own channel.
    let mut fbb = FlatBufferBuilder::new();
    c.ping(
        &PingBatchMsg {
            device_seq: 1,
            base_time_ms: now_ms() + 3_600_000,
            fixes: vec![Fix::new(312_304_000, 1_214_737_000, 0, 50, 0)],
        },
        &mut fbb,
    )
    .unwrap();
    let mut after = String::new();
    for _ in 0..100 {
        after = get(&node, "/metrics", false).await.2;
        let d = ["channel=\"datagram\"", "reason=\"FutureTimestamp\""];
        if metric(&after, "fencegate_refused_total", &d)
            > metric(&before, "fencegate_refused_total", &d)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The recorder is process-wide and other tests run alongside: at least ours.
    let delta =
        |name: &str, labels: &[&str]| metric(&after, name, labels) - metric(&before, name, labels);
    assert!(
        delta("fencegate_punches_total", &["verdict=\"rejected\""]) >= 2.0,
        "policy and validation rejections both count:\n{after}"
    );
    assert!(
        delta(
            "fencegate_refused_total",
            &["channel=\"punch\"", "reason=\"FutureTimestamp\""]
        ) >= 1.0,
        "{after}"
    );
    assert!(
        delta(
            "fencegate_refused_total",
            &["channel=\"datagram\"", "reason=\"FutureTimestamp\""]
        ) >= 1.0,
        "{after}"
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// §5.5/§7: under `out_of_range = "field"` a punch outside every fence is
/// `Accepted` with reason `OutOfRange`; §9: a repeat is acked
/// `RepeatMerged` with the first record's id and the first punch's reason,
/// and leaves its own record with `merged_into`. Red if either
/// combination changes without the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_punch_is_accepted_out_of_range_and_its_repeat_is_logged_with_merged_into() {
    let node = node().await;
    let g = node.client("globex", "g-1").await;
    // HQ is 2 km from globex's only fence.
    let first = ack(g.punch(&punch(1, "G1", HQ)).await.unwrap());
    assert_eq!(
        (first.verdict, first.reason),
        (Verdict::Accepted, Reason::OutOfRange)
    );
    let repeat = ack(g.punch(&punch(2, "G1", HQ)).await.unwrap());
    assert_eq!(
        (repeat.verdict, repeat.reason),
        (Verdict::RepeatMerged, Reason::OutOfRange)
    );
    assert_eq!(repeat.record_id, first.record_id);
    let recs = node.records();
    assert_eq!(recs.len(), 2, "the repeat is logged as its own record");
    let own = &recs[1];
    assert_ne!(Some(own.record_id), first.record_id);
    match &own.body {
        RecordBodyMsg::Punch(p) => {
            assert_eq!(p.verdict, Verdict::RepeatMerged);
            assert_eq!(p.merged_into, first.record_id);
            assert_eq!(p.punch_id, punch(2, "G1", HQ).punch_id);
        }
        other => panic!("{other:?}"),
    }
    // Inside globex's fence: a plain accept, reason None.
    let a = ack(g.punch(&punch(3, "G2", GLOBEX)).await.unwrap());
    assert_eq!((a.verdict, a.reason), (Verdict::Accepted, Reason::None));
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// The QR code exactly as docs/ATTENDANCE.md lays it out, computed here:
/// `FGQR1:<site>:<step>:<hex of the first 16 bytes of HMAC-SHA256(key,
/// "fencegate-qr/1" ‖ tenant ‖ 0x00 ‖ site ‖ 0x00 ‖ step as i64 BE)>`.
fn documented_code(key: &[u8], tenant: &str, site: &str, step: i64) -> String {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(b"fencegate-qr/1");
    m.update(tenant.as_bytes());
    m.update(&[0]);
    m.update(site.as_bytes());
    m.update(&[0]);
    m.update(&step.to_be_bytes());
    let tag = m.finalize().into_bytes();
    format!("FGQR1:{site}:{step}:{}", hex::encode(&tag[..16]))
}

/// A third party renders codes on its own screen from the documented
/// layout and key file, and the gateway accepts them; `GET /v1/qr` answers
/// with the documented fields. Red if the layout, the key file format or
/// the step definition drift from the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_code_computed_from_the_documented_layout_is_accepted() {
    let node = node().await;
    let key_hex = std::fs::read_to_string(node.cfg.data_dir.join("keys/qr/acme/sh.key")).unwrap();
    let key = hex::decode(key_hex.trim()).unwrap();
    assert_eq!(key.len(), 32);

    let (code, ctype, body) = get(&node, "/v1/qr/sh?tenant=acme", true).await;
    assert_eq!(code, 200, "{body}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let v = json(&body);
    let step = v["step"].as_i64().unwrap();
    let step_ms = 30_000;
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["site"], "sh");
    assert_eq!(v["shown_until_ms"].as_i64().unwrap(), (step + 1) * step_ms);
    assert_eq!(
        v["valid_until_ms"].as_i64().unwrap(),
        (step + 2) * step_ms,
        "qr_skew_steps = 1 by default"
    );
    assert_eq!(v["code"], documented_code(&key, "acme", "sh", step));
    let (code, _, _) = get(&node, "/v1/qr/sh", true).await;
    assert_eq!(code, 400, "a super token names the tenant");

    // Our own screen, our own clock: the current step.
    let now_step = now_ms().div_euclid(step_ms);
    let qr = PunchMsg {
        method: PunchMethod::Qr,
        position: None,
        qr_payload: Some(documented_code(&key, "acme", "sh", now_step)),
        ..punch(1, "E1", HQ)
    };
    let c = node.client("acme", "phone-1").await;
    let a = ack(c.punch(&qr).await.unwrap());
    assert_eq!((a.verdict, a.reason), (Verdict::Accepted, Reason::None));
    // A step not shown yet is invalid, even with the right key.
    let early = PunchMsg {
        qr_payload: Some(documented_code(&key, "acme", "sh", now_step + 5)),
        ..punch(2, "E2", HQ)
    };
    let early = PunchMsg {
        method: PunchMethod::Qr,
        position: None,
        ..early
    };
    let a = ack(c.punch(&early).await.unwrap());
    assert_eq!(
        (a.verdict, a.reason),
        (Verdict::Rejected, Reason::QrInvalid)
    );
    node.running.shutdown(Duration::from_secs(2)).await;
}

/// `GET /v1/records`: `from` and `to` are required (400), a super token
/// without `tenant=` reads every tenant, and the JSON and CSV shapes are
/// as documented. Red if a documented field or column disappears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_api_shapes_are_as_documented() {
    let node = node().await;
    let c = node.client("acme", "phone-1").await;
    ack(c.punch(&punch(1, "E1", HQ)).await.unwrap());
    let g = node.client("globex", "g-1").await;
    ack(g.punch(&punch(2, "G1", GLOBEX)).await.unwrap());

    let (code, _, body) = get(&node, "/v1/records", true).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("from and to")
    );

    let window = format!("from=0&to={}", now_ms() + 3_600_000);
    let (code, _, body) = get(&node, &format!("/v1/records?{window}"), true).await;
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    let recs = v["records"].as_array().unwrap();
    let mut tenants: Vec<&str> = recs.iter().map(|r| r["tenant"].as_str().unwrap()).collect();
    tenants.sort_unstable();
    assert_eq!(
        tenants,
        ["acme", "globex"],
        "super without tenant= reads all"
    );
    for k in [
        "segments",
        "segments_read",
        "records_read",
        "matched",
        "truncated",
    ] {
        assert!(v["stats"].get(k).is_some(), "stats.{k} in {body}");
    }
    let r = &recs[0];
    for k in [
        "record_id",
        "tenant",
        "gateway_time_ms",
        "node",
        "type",
        "punch_id",
        "employee_id",
        "device_id",
        "kind",
        "method",
        "device_time_ms",
        "lat",
        "lon",
        "accuracy_m",
        "verdict",
        "reason",
        "fence_ids",
        "nearest_fence_id",
        "distance_m",
        "offline",
        "mock_location",
        "status",
        "anomaly_flags",
        "slot",
        "merged_into",
        "lsn",
        "attendance_time_ms",
        "anomalies",
    ] {
        assert!(r.get(k).is_some(), "field {k} in {r}");
    }
    assert_eq!(r["type"], "punch");
    assert_eq!(r["kind"], "in");
    assert_eq!(r["method"], "gps");
    assert_eq!(r["verdict"], "accepted");
    assert_eq!(r["reason"], "none");
    assert!(r["anomalies"].is_array());

    let (code, ctype, body) = get(
        &node,
        &format!("/v1/records?tenant=acme&format=csv&{window}"),
        true,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    assert_eq!(
        body.lines().next().unwrap(),
        "record_id,tenant,employee_id,device_id,kind,method,attendance_time,attendance_time_ms,gateway_time_ms,offline,verdict,reason,status,slot,group,site,fence_id,distance_m,anomalies,department,supervisor,needs_approval,merged_into,paired_with"
    );
    assert_eq!(body.lines().count(), 2, "acme's one punch:\n{body}");
    node.running.shutdown(Duration::from_secs(2)).await;
}
