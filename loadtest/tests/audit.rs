//! The audit catches what it is for: a lost ack, a record that should not
//! exist, and a record that differs from its ack. (The smoke runs show it
//! passing; this shows it can fail.)

use std::time::Duration;

use fencegate::client::{Connector, PunchReply};
use fencegate::config::{Config, RawConfig, RawTenant};
use fencegate::edge::tls::Trust;
use fencegate::log::Lsn;
use fencegate_load::audit::{Book, audit_log};
use fencegate_schema::{
    Position, PunchAckMsg, PunchKind, PunchMethod, PunchMsg, Reason, TerminalAuth, Verdict,
};

const FENCES: &str = r#"{"type":"FeatureCollection","features":[
 {"type":"Feature","geometry":{"type":"Point","coordinates":[121.4737,31.2304]},"properties":{"id":"hq","tenant":"loadtest","radius_m":200}}
]}"#;

fn punch(id: [u8; 16], employee: &str) -> PunchMsg {
    PunchMsg {
        punch_id: id,
        employee_id: employee.into(),
        kind: PunchKind::In,
        method: PunchMethod::Gps,
        device_time_ms: fencegate_load::clock::unix_ms(),
        position: Some(Position::new(31.2304, 121.4737, 5.0)),
        bssids: vec![],
        ssid: None,
        qr_payload: None,
        terminal_auth: TerminalAuth::None,
        offline: false,
        mock_location: false,
    }
}

fn id(n: u8) -> [u8; 16] {
    let mut x = [0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    x[15] = n;
    x
}

#[test]
fn audit_finds_lost_duplicated_and_mismatched_records() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fences.geojson"), FENCES).unwrap();
    let mut raw = RawConfig::default();
    raw.node.data_dir = dir.path().join("data");
    raw.quic.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.fences.path = dir.path().join("fences.geojson");
    raw.tenants = vec![RawTenant {
        id: "loadtest".into(),
        key_file: None,
    }];
    let cfg = Config::compile(raw, "audit test").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = rt.block_on(fencegate::serve::start(&cfg)).unwrap();
    let ring = fencegate::serve::keyring(&cfg).unwrap();
    let token = ring
        .issue(
            "loadtest",
            "lt-aabbccdd-p1",
            fencegate_load::clock::unix_ms() / 1000 + 600,
        )
        .unwrap();
    let acks: Vec<PunchAckMsg> = rt.block_on(async {
        let c = Connector::new(
            running.quic_addr,
            "localhost",
            Trust::Pinned(running.fingerprint.clone()),
            false,
        )
        .unwrap();
        let client = c.connect(&token, "lt-aabbccdd-p1").await.unwrap();
        let mut out = Vec::new();
        for (n, e) in [(1, "e1"), (3, "e3"), (4, "e4")] {
            match client.punch(&punch(id(n), e)).await.unwrap() {
                PunchReply::Ack(a) => out.push(a),
                other => panic!("{other:?}"),
            }
        }
        client.close();
        out
    });
    assert!(
        acks.iter().all(|a| a.verdict == Verdict::Accepted),
        "{acks:?}"
    );

    let book = Book::default();
    // 1: told the truth.
    book.acked(id(1), &acks[0]).unwrap();
    // 2: an ack the log never saw (lost).
    let mut phantom = acks[0].clone();
    phantom.record_id = Some([9; 16]);
    book.acked(id(2), &phantom).unwrap();
    // 3: the client was told "refused" but a record exists (duplicated).
    let refused = PunchAckMsg {
        punch_id: None,
        record_id: None,
        verdict: Verdict::Rejected,
        reason: Reason::MissingField,
        fence_id: None,
        nearest_fence_id: None,
        distance_m: 0.0,
        server_time_ms: 0,
    };
    book.acked(id(3), &refused).unwrap();
    // 4: acked with another verdict than stored (mismatched).
    let mut other = acks[2].clone();
    other.verdict = Verdict::OutOfRange;
    book.acked(id(4), &other).unwrap();
    // A resend answered differently is caught when noted.
    assert!(book.acked(id(4), &acks[2]).is_err());
    book.acked(id(4), &other).unwrap();

    let r = audit_log(
        &cfg.log.dir,
        Lsn(0),
        &book,
        [0xaa, 0xbb, 0xcc, 0xdd],
        "lt-aabbccdd-",
    )
    .unwrap();
    assert_eq!(r.acked_punches, 4, "{r:?}");
    assert_eq!(r.lost, 1, "{r:?}");
    assert_eq!(r.duplicated, 1, "{r:?}");
    assert_eq!(r.mismatched, 1, "{r:?}");
    assert_eq!(r.refused_punches, 1, "{r:?}");
    assert!(!r.passed());
    rt.block_on(running.shutdown(Duration::from_secs(2)));
}
