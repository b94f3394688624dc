//! One test per reason the parser can produce, plus checks that the
//! parser/gateway split covers every reason in the schema and that each one
//! is documented in docs/PROTOCOL.md.

mod common;

use common::*;
use fencegate_schema::{
    Body, BusyMsg, Channel, ClientAction, Fix, Frame, FrameArgs, Hello, HelloArgs, Limits,
    PingBatch, PingRecord, Position, Punch, PunchKind, PunchMethod, PunchMsg, Reason, Record,
    RecordArgs, RecordBody, ReplyMsg, TerminalAuth, Uuid, finish_frame_buffer,
    finish_record_buffer, parse_frame, parse_record, parse_reply,
};
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

struct Case {
    name: &'static str,
    reason: Reason,
    buf: Vec<u8>,
    channel: Channel,
    limits: Limits,
}

fn case(name: &'static str, reason: Reason, buf: Vec<u8>, channel: Channel) -> Case {
    Case {
        name,
        reason,
        buf,
        channel,
        limits: Limits::default(),
    }
}

fn enc_punch(f: impl FnOnce(&mut PunchMsg)) -> Vec<u8> {
    let mut p = punch();
    f(&mut p);
    p.encode_into(&mut FlatBufferBuilder::new()).to_vec()
}

fn enc_batch(f: impl FnOnce(&mut fencegate_schema::PingBatchMsg)) -> Vec<u8> {
    let mut b = batch(4);
    f(&mut b);
    b.encode_into(&mut FlatBufferBuilder::new()).to_vec()
}

fn enc_hello(f: impl FnOnce(&mut fencegate_schema::HelloMsg)) -> Vec<u8> {
    let mut h = hello();
    f(&mut h);
    h.encode_into(&mut FlatBufferBuilder::new()).to_vec()
}

/// Wraps a hand-built body table in a Frame; for bodies the generated
/// builders refuse to make (missing required fields, unknown body types).
fn raw_frame(
    body_type: Body,
    body: impl FnOnce(&mut FlatBufferBuilder<'static>) -> Option<WIPOffset<UnionWIPOffset>>,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let body = body(&mut fbb);
    let frame = Frame::create(&mut fbb, &FrameArgs { body_type, body });
    finish_frame_buffer(&mut fbb, frame);
    fbb.finished_data().to_vec()
}

fn punch_without_employee_id(
    fbb: &mut FlatBufferBuilder<'static>,
) -> Option<WIPOffset<UnionWIPOffset>> {
    let start = fbb.start_table();
    fbb.push_slot_always::<&Uuid>(Punch::VT_PUNCH_ID, &Uuid([1; 16]));
    fbb.push_slot::<i64>(Punch::VT_DEVICE_TIME_MS, NOW, 0);
    fbb.push_slot_always::<&Position>(Punch::VT_POSITION, &Position::new(1.0, 2.0, 3.0));
    Some(WIPOffset::new(fbb.end_table(start).value()))
}

fn punch_without_id(fbb: &mut FlatBufferBuilder<'static>) -> Option<WIPOffset<UnionWIPOffset>> {
    let employee = fbb.create_string("E1");
    let start = fbb.start_table();
    fbb.push_slot_always(Punch::VT_EMPLOYEE_ID, employee);
    fbb.push_slot::<i64>(Punch::VT_DEVICE_TIME_MS, NOW, 0);
    fbb.push_slot_always::<&Position>(Punch::VT_POSITION, &Position::new(1.0, 2.0, 3.0));
    Some(WIPOffset::new(fbb.end_table(start).value()))
}

fn batch_without_fixes(fbb: &mut FlatBufferBuilder<'static>) -> Option<WIPOffset<UnionWIPOffset>> {
    let start = fbb.start_table();
    fbb.push_slot::<i64>(PingBatch::VT_BASE_TIME_MS, NOW, 0);
    Some(WIPOffset::new(fbb.end_table(start).value()))
}

fn hello_without_token(fbb: &mut FlatBufferBuilder<'static>) -> Option<WIPOffset<UnionWIPOffset>> {
    let device = fbb.create_string("dev-1");
    let start = fbb.start_table();
    fbb.push_slot_always(Hello::VT_DEVICE_ID, device);
    Some(WIPOffset::new(fbb.end_table(start).value()))
}

fn some_hello(fbb: &mut FlatBufferBuilder<'static>) -> Option<WIPOffset<UnionWIPOffset>> {
    let token = fbb.create_string("t");
    let device_id = fbb.create_string("d");
    let h = Hello::create(
        fbb,
        &HelloArgs {
            token: Some(token),
            device_id: Some(device_id),
            client: None,
        },
    );
    Some(h.as_union_value())
}

fn with_limits(mut c: Case, f: impl FnOnce(&mut Limits)) -> Case {
    f(&mut c.limits);
    c
}

fn fix(lat_e7: i32, lon_e7: i32, offset_ms: u32) -> Fix {
    Fix::new(lat_e7, lon_e7, offset_ms, 30, 0)
}

/// Every way the parser refuses input, each with the one reason it maps to.
fn cases() -> Vec<Case> {
    use Channel::{Backlog, Datagram, Stream};
    let reply = ReplyMsg::Busy(BusyMsg {
        retry_after_ms: 5,
        reason: Reason::Overloaded,
    })
    .encode_into(&mut FlatBufferBuilder::new())
    .to_vec();
    let mut bad_root = enc_punch(|_| {});
    bad_root[0..4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let mut bad_utf8 = enc_punch(|p| p.employee_id = "EMPLOYEE".into());
    let at = bad_utf8.windows(8).position(|w| w == b"EMPLOYEE").unwrap();
    bad_utf8[at] = 0xff;
    vec![
        // Malformed
        case("empty buffer", Reason::Malformed, vec![], Stream),
        case(
            "shorter than a root offset and identifier",
            Reason::Malformed,
            b"\x08\0\0\0FG".to_vec(),
            Stream,
        ),
        case(
            "a Reply sent as a Frame (identifier FGR1)",
            Reason::Malformed,
            reply,
            Stream,
        ),
        case(
            "root offset outside the buffer",
            Reason::Malformed,
            bad_root,
            Stream,
        ),
        case(
            "string that is not UTF-8",
            Reason::Malformed,
            bad_utf8,
            Stream,
        ),
        case(
            "truncated punch",
            Reason::Malformed,
            enc_punch(|_| {})[..40].to_vec(),
            Stream,
        ),
        // UnknownBody
        case(
            "frame without a body",
            Reason::UnknownBody,
            raw_frame(Body::NONE, |_| None),
            Stream,
        ),
        case(
            "body type 9",
            Reason::UnknownBody,
            raw_frame(Body(9), some_hello),
            Stream,
        ),
        // WrongChannel
        case(
            "punch in a datagram",
            Reason::WrongChannel,
            enc_punch(|_| {}),
            Datagram,
        ),
        case(
            "punch on a backlog stream",
            Reason::WrongChannel,
            enc_punch(|_| {}),
            Backlog,
        ),
        case(
            "hello in a datagram",
            Reason::WrongChannel,
            enc_hello(|_| {}),
            Datagram,
        ),
        case(
            "ping batch on a bidirectional stream",
            Reason::WrongChannel,
            enc_batch(|_| {}),
            Stream,
        ),
        // Oversize
        case(
            "punch over 4096 bytes",
            Reason::Oversize,
            enc_punch(|p| p.ssid = Some("s".repeat(5000))),
            Stream,
        ),
        case(
            "datagram over 1452 bytes",
            Reason::Oversize,
            batch(100)
                .encode_into(&mut FlatBufferBuilder::new())
                .to_vec(),
            Datagram,
        ),
        case(
            "backlog frame over 65536 bytes",
            Reason::Oversize,
            batch(4096)
                .encode_into(&mut FlatBufferBuilder::new())
                .to_vec(),
            Backlog,
        ),
        // MissingField
        case(
            "punch without employee_id",
            Reason::MissingField,
            raw_frame(Body::Punch, punch_without_employee_id),
            Stream,
        ),
        case(
            "punch without punch_id",
            Reason::MissingField,
            raw_frame(Body::Punch, punch_without_id),
            Stream,
        ),
        case(
            "empty employee_id",
            Reason::MissingField,
            enc_punch(|p| p.employee_id.clear()),
            Stream,
        ),
        case(
            "wifi punch without bssids",
            Reason::MissingField,
            enc_punch(|p| p.method = PunchMethod::Wifi),
            Stream,
        ),
        case(
            "qr punch without payload",
            Reason::MissingField,
            enc_punch(|p| p.method = PunchMethod::Qr),
            Stream,
        ),
        case(
            "qr punch with empty payload",
            Reason::MissingField,
            enc_punch(|p| {
                p.method = PunchMethod::Qr;
                p.qr_payload = Some(String::new());
            }),
            Stream,
        ),
        case(
            "hello without token",
            Reason::MissingField,
            raw_frame(Body::Hello, hello_without_token),
            Stream,
        ),
        case(
            "hello with empty device_id",
            Reason::MissingField,
            enc_hello(|h| h.device_id.clear()),
            Stream,
        ),
        case(
            "ping batch without fixes",
            Reason::MissingField,
            raw_frame(Body::PingBatch, batch_without_fixes),
            Datagram,
        ),
        // FieldTooLong
        case(
            "employee_id of 129 bytes",
            Reason::FieldTooLong,
            enc_punch(|p| p.employee_id = "e".repeat(129)),
            Stream,
        ),
        case(
            "33 bssids",
            Reason::FieldTooLong,
            enc_punch(|p| p.bssids = vec![[1, 2, 3, 4, 5, 6]; 33]),
            Stream,
        ),
        case(
            "ssid of 129 bytes",
            Reason::FieldTooLong,
            enc_punch(|p| p.ssid = Some("s".repeat(129))),
            Stream,
        ),
        case(
            "qr payload of 513 bytes",
            Reason::FieldTooLong,
            enc_punch(|p| p.qr_payload = Some("q".repeat(513))),
            Stream,
        ),
        case(
            "token of 1025 bytes",
            Reason::FieldTooLong,
            enc_hello(|h| h.token = "t".repeat(1025)),
            Stream,
        ),
        case(
            "client of 129 bytes",
            Reason::FieldTooLong,
            enc_hello(|h| h.client = Some("c".repeat(129))),
            Stream,
        ),
        // BatchTooLarge
        case(
            "65 fixes in a datagram",
            Reason::BatchTooLarge,
            batch(65)
                .encode_into(&mut FlatBufferBuilder::new())
                .to_vec(),
            Datagram,
        ),
        with_limits(
            case(
                "backlog frame over max_backlog_fixes",
                Reason::BatchTooLarge,
                batch(101)
                    .encode_into(&mut FlatBufferBuilder::new())
                    .to_vec(),
                Backlog,
            ),
            |l| l.max_backlog_fixes = 100,
        ),
        // EmptyBatch
        case(
            "zero fixes",
            Reason::EmptyBatch,
            enc_batch(|b| b.fixes.clear()),
            Datagram,
        ),
        // NotFinite
        case(
            "NaN latitude",
            Reason::NotFinite,
            enc_punch(|p| p.position = Some(Position::new(f64::NAN, 1.0, 1.0))),
            Stream,
        ),
        case(
            "infinite longitude",
            Reason::NotFinite,
            enc_punch(|p| p.position = Some(Position::new(1.0, f64::NEG_INFINITY, 1.0))),
            Stream,
        ),
        case(
            "NaN accuracy",
            Reason::NotFinite,
            enc_punch(|p| p.position = Some(Position::new(1.0, 1.0, f32::NAN))),
            Stream,
        ),
        // LatitudeOutOfRange
        case(
            "punch latitude 90.000001",
            Reason::LatitudeOutOfRange,
            enc_punch(|p| p.position = Some(Position::new(90.000_001, 1.0, 1.0))),
            Stream,
        ),
        case(
            "fix latitude -90.0000001",
            Reason::LatitudeOutOfRange,
            enc_batch(|b| b.fixes[3] = fix(-900_000_001, 0, 0)),
            Datagram,
        ),
        case(
            "latitude wins over longitude",
            Reason::LatitudeOutOfRange,
            enc_batch(|b| {
                b.fixes[0] = fix(0, i32::MAX, 0);
                b.fixes[1] = fix(i32::MIN, 0, 0);
            }),
            Datagram,
        ),
        // LongitudeOutOfRange
        case(
            "punch longitude -180.5",
            Reason::LongitudeOutOfRange,
            enc_punch(|p| p.position = Some(Position::new(1.0, -180.5, 1.0))),
            Stream,
        ),
        case(
            "fix longitude 180.0000001",
            Reason::LongitudeOutOfRange,
            enc_batch(|b| b.fixes[0] = fix(0, 1_800_000_001, 0)),
            Backlog,
        ),
        // NegativeAccuracy
        case(
            "accuracy -1 m",
            Reason::NegativeAccuracy,
            enc_punch(|p| p.position = Some(Position::new(1.0, 1.0, -1.0))),
            Stream,
        ),
        // FutureTimestamp
        case(
            "punch 300.001 s ahead",
            Reason::FutureTimestamp,
            enc_punch(|p| p.device_time_ms = NOW + 300_001),
            Stream,
        ),
        case(
            "batch whose last fix is 300.001 s ahead",
            Reason::FutureTimestamp,
            enc_batch(|b| {
                b.base_time_ms = NOW;
                b.fixes[2] = fix(0, 0, 300_001);
            }),
            Datagram,
        ),
        case(
            "batch whose base + offset overflows",
            Reason::FutureTimestamp,
            enc_batch(|b| {
                b.base_time_ms = i64::MAX - 10;
                b.fixes[0] = fix(0, 0, 11);
            }),
            Datagram,
        ),
        case(
            "punch at i64::MAX",
            Reason::FutureTimestamp,
            enc_punch(|p| p.device_time_ms = i64::MAX),
            Stream,
        ),
        // StaleTimestamp
        case(
            "punch at 1970",
            Reason::StaleTimestamp,
            enc_punch(|p| p.device_time_ms = 0),
            Stream,
        ),
        case(
            "punch at i64::MIN",
            Reason::StaleTimestamp,
            enc_punch(|p| p.device_time_ms = i64::MIN),
            Stream,
        ),
        case(
            "batch based in 1970",
            Reason::StaleTimestamp,
            enc_batch(|b| b.base_time_ms = 5_000),
            Datagram,
        ),
        // InvalidPunchId
        case(
            "all-zero punch id",
            Reason::InvalidPunchId,
            enc_punch(|p| p.punch_id = [0; 16]),
            Stream,
        ),
        // UnknownEnumValue
        case(
            "kind 2",
            Reason::UnknownEnumValue,
            enc_punch(|p| p.kind = PunchKind(2)),
            Stream,
        ),
        case(
            "method 4",
            Reason::UnknownEnumValue,
            enc_punch(|p| p.method = PunchMethod(4)),
            Stream,
        ),
        case(
            "terminal_auth 200",
            Reason::UnknownEnumValue,
            enc_punch(|p| p.terminal_auth = TerminalAuth(200)),
            Stream,
        ),
        // PositionRequired
        case(
            "gps punch without position",
            Reason::PositionRequired,
            enc_punch(|p| p.position = None),
            Stream,
        ),
        case(
            "gps punch with bssids but no position",
            Reason::PositionRequired,
            enc_punch(|p| {
                p.position = None;
                p.bssids = vec![[1; 6]];
            }),
            Stream,
        ),
    ]
}

fn check(reason: Reason) {
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.reason == reason).collect();
    assert!(!cases.is_empty(), "no test case produces {reason:?}");
    for c in cases {
        let got = parse_frame(&c.buf, c.channel, NOW, &c.limits).map(|_| ());
        assert_eq!(
            got,
            Err(reason),
            "case '{}' ({} bytes on {:?})",
            c.name,
            c.buf.len(),
            c.channel
        );
    }
}

#[test]
fn malformed() {
    check(Reason::Malformed);
}
#[test]
fn unknown_body() {
    check(Reason::UnknownBody);
}
#[test]
fn wrong_channel() {
    check(Reason::WrongChannel);
}
#[test]
fn oversize() {
    check(Reason::Oversize);
}
#[test]
fn missing_field() {
    check(Reason::MissingField);
}
#[test]
fn field_too_long() {
    check(Reason::FieldTooLong);
}
#[test]
fn batch_too_large() {
    check(Reason::BatchTooLarge);
}
#[test]
fn empty_batch() {
    check(Reason::EmptyBatch);
}
#[test]
fn not_finite() {
    check(Reason::NotFinite);
}
#[test]
fn latitude_out_of_range() {
    check(Reason::LatitudeOutOfRange);
}
#[test]
fn longitude_out_of_range() {
    check(Reason::LongitudeOutOfRange);
}
#[test]
fn negative_accuracy() {
    check(Reason::NegativeAccuracy);
}
#[test]
fn future_timestamp() {
    check(Reason::FutureTimestamp);
}
#[test]
fn stale_timestamp() {
    check(Reason::StaleTimestamp);
}
#[test]
fn invalid_punch_id() {
    check(Reason::InvalidPunchId);
}
#[test]
fn unknown_enum_value() {
    check(Reason::UnknownEnumValue);
}
#[test]
fn position_required() {
    check(Reason::PositionRequired);
}

#[test]
fn every_parser_reason_has_a_case_and_every_case_is_a_parser_reason() {
    let cases = cases();
    for r in Reason::PARSER_REASONS {
        assert!(cases.iter().any(|c| c.reason == *r), "{r:?} has no case");
    }
    for c in &cases {
        assert!(
            Reason::PARSER_REASONS.contains(&c.reason),
            "case '{}' expects non-parser {:?}",
            c.name,
            c.reason
        );
    }
}

#[test]
fn parser_and_gateway_reasons_partition_the_schema_enum() {
    let mut all: Vec<Reason> = Reason::PARSER_REASONS
        .iter()
        .chain(Reason::GATEWAY_REASONS)
        .copied()
        .collect();
    all.push(Reason::None);
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a reason is listed twice");
    let mut schema = Reason::ENUM_VALUES.to_vec();
    schema.sort();
    assert_eq!(
        all, schema,
        "PARSER_REASONS + GATEWAY_REASONS + None must equal the schema's Reason enum"
    );
}

#[test]
fn every_reason_is_documented_in_protocol_md_with_its_value() {
    let doc = include_str!("../../docs/PROTOCOL.md");
    for r in Reason::ENUM_VALUES {
        let name = r.variant_name().unwrap();
        let row = format!("| {} | `{}` |", r.0, name);
        assert!(
            doc.contains(&row),
            "docs/PROTOCOL.md lacks the reason table row starting {row:?}"
        );
    }
}

#[test]
fn reason_ranges_give_the_documented_client_actions() {
    assert_eq!(Reason::None.action(), ClientAction::Nothing);
    for r in Reason::PARSER_REASONS {
        assert_eq!(r.action(), ClientAction::Fix, "{r:?}");
    }
    for (r, want) in [
        (Reason::BadToken, ClientAction::Reauthenticate),
        (Reason::UnknownDevice, ClientAction::Reauthenticate),
        (Reason::OutOfRange, ClientAction::InformUser),
        (Reason::QrExpired, ClientAction::InformUser),
        (Reason::Overloaded, ClientAction::RetrySame),
        (Reason::InternalError, ClientAction::RetrySame),
        (Reason(150), ClientAction::Reauthenticate),
        (Reason(399), ClientAction::RetrySame),
        (Reason(9_999), ClientAction::Fix),
    ] {
        assert_eq!(r.action(), want, "{r:?}");
    }
    for r in Reason::ENUM_VALUES {
        assert_ne!(
            r.describe(),
            "reason code not known to this version",
            "{r:?} lacks a description"
        );
    }
    assert_eq!(
        Reason::LatitudeOutOfRange.to_string(),
        "LatitudeOutOfRange (10): latitude is outside [-90, 90] degrees"
    );
}

#[test]
fn boundaries_are_accepted() {
    let limits = Limits::default();
    let ok = |buf: Vec<u8>, ch| parse_frame(&buf, ch, NOW, &limits).map(|_| ());
    for pos in [
        Position::new(90.0, 180.0, 0.0),
        Position::new(-90.0, -180.0, 0.0),
        Position::new(0.0, 0.0, -0.0),
    ] {
        assert_eq!(
            ok(enc_punch(|p| p.position = Some(pos)), Channel::Stream),
            Ok(()),
            "{pos:?}"
        );
    }
    assert_eq!(
        ok(
            enc_punch(|p| p.device_time_ms = NOW + 300_000),
            Channel::Stream
        ),
        Ok(())
    );
    assert_eq!(
        ok(
            enc_punch(|p| p.device_time_ms = limits.min_time_ms),
            Channel::Stream
        ),
        Ok(())
    );
    assert_eq!(
        ok(
            enc_punch(|p| p.employee_id = "e".repeat(128)),
            Channel::Stream
        ),
        Ok(())
    );
    assert_eq!(
        ok(enc_punch(|p| p.bssids = vec![[7; 6]; 32]), Channel::Stream),
        Ok(())
    );
    assert_eq!(
        ok(enc_hello(|h| h.token = "t".repeat(1024)), Channel::Stream),
        Ok(())
    );
    assert_eq!(
        ok(
            enc_batch(|b| {
                b.base_time_ms = NOW;
                b.fixes = vec![
                    fix(900_000_000, 1_800_000_000, 300_000),
                    fix(-900_000_000, -1_800_000_000, 0),
                ];
            }),
            Channel::Datagram
        ),
        Ok(())
    );
    // Methods other than Gps need no position.
    for method in [PunchMethod::Terminal, PunchMethod::Qr, PunchMethod::Wifi] {
        let buf = enc_punch(|p| {
            p.method = method;
            p.position = None;
            p.qr_payload = Some("fgqr:1:abc".into());
            p.bssids = vec![[0xac, 0x84, 0xc6, 0x01, 0x02, 0x03]];
        });
        assert_eq!(ok(buf, Channel::Stream), Ok(()), "{method:?}");
    }
}

#[test]
fn the_largest_legitimate_frames_pass_the_bounded_verifier() {
    let limits = Limits::default();
    let dgram = batch(64)
        .encode_into(&mut FlatBufferBuilder::new())
        .to_vec();
    assert!(
        dgram.len() <= 1200,
        "64 fixes take {} bytes; they must fit a 1200-byte datagram",
        dgram.len()
    );
    assert!(parse_frame(&dgram, Channel::Datagram, NOW, &limits).is_ok());

    // The most fixes that fit in one 65536-byte backlog frame.
    let mut n = 4096;
    let backlog = loop {
        let buf = batch(n).encode_into(&mut FlatBufferBuilder::new()).to_vec();
        if buf.len() <= limits.max_backlog_frame_bytes {
            break buf;
        }
        n -= 1;
    };
    assert!(n > 4_000, "only {n} fixes fit a backlog frame");
    assert_eq!(
        parse_frame(&backlog, Channel::Backlog, NOW, &limits).map(|_| ()),
        Ok(())
    );

    let big_punch = enc_punch(|p| {
        p.employee_id = "e".repeat(128);
        p.bssids = vec![[9; 6]; 32];
        p.ssid = Some("s".repeat(128));
        p.qr_payload = Some("q".repeat(512));
    });
    assert!(big_punch.len() <= limits.max_frame_bytes);
    assert_eq!(
        parse_frame(&big_punch, Channel::Stream, NOW, &limits).map(|_| ()),
        Ok(())
    );
}

#[test]
fn replies_and_records_refuse_the_wrong_identifier_missing_fields_and_unknown_bodies() {
    let punch = enc_punch(|_| {});
    assert_eq!(parse_reply(&punch).map(|_| ()), Err(Reason::Malformed));
    assert_eq!(parse_record(&punch).map(|_| ()), Err(Reason::Malformed));
    assert_eq!(parse_reply(&[]).map(|_| ()), Err(Reason::Malformed));

    let mut fbb = FlatBufferBuilder::new();
    let tenant = fbb.create_string("acme");
    let rec = Record::create(
        &mut fbb,
        &RecordArgs {
            record_id: Some(&Uuid([1; 16])),
            tenant: Some(tenant),
            body_type: RecordBody::NONE,
            ..Default::default()
        },
    );
    finish_record_buffer(&mut fbb, rec);
    assert_eq!(
        parse_record(fbb.finished_data()).map(|_| ()),
        Err(Reason::UnknownBody)
    );

    let mut fbb = FlatBufferBuilder::new();
    let start = fbb.start_table();
    fbb.push_slot::<i64>(PingRecord::VT_TIME_MS, NOW, 0);
    let ping = WIPOffset::<UnionWIPOffset>::new(fbb.end_table(start).value());
    let tenant = fbb.create_string("acme");
    let rec = Record::create(
        &mut fbb,
        &RecordArgs {
            record_id: Some(&Uuid([1; 16])),
            tenant: Some(tenant),
            body_type: RecordBody::PingRecord,
            body: Some(ping),
            ..Default::default()
        },
    );
    finish_record_buffer(&mut fbb, rec);
    assert_eq!(
        parse_record(fbb.finished_data()).map(|_| ()),
        Err(Reason::MissingField),
        "PingRecord.device_id is required"
    );
}

/// PROTOCOL §5.5: a rejected punch's ack echoes its `punch_id` whenever the
/// frame could be read far enough to find it. Red if the gateway's helper
/// gives up on semantic rejections, or reads an id out of a frame the
/// verifier refused.
#[test]
fn rejected_punches_echo_their_id_when_it_can_be_read() {
    use fencegate_schema::punch_id_of;
    let id = punch().punch_id;
    let semantic = [
        Reason::MissingField,
        Reason::FieldTooLong,
        Reason::NotFinite,
        Reason::LatitudeOutOfRange,
        Reason::LongitudeOutOfRange,
        Reason::NegativeAccuracy,
        Reason::FutureTimestamp,
        Reason::StaleTimestamp,
        Reason::UnknownEnumValue,
        Reason::PositionRequired,
    ];
    let mut echoed = Vec::new();
    for c in cases().into_iter().filter(|c| c.channel == Channel::Stream) {
        let got = punch_id_of(&c.buf, &c.limits);
        if let Some(g) = got {
            assert_eq!(g, id, "case '{}' echoed another id", c.name);
            echoed.push(c.reason);
        }
        if matches!(
            c.reason,
            Reason::Oversize | Reason::Malformed | Reason::UnknownBody | Reason::InvalidPunchId
        ) {
            assert_eq!(got, None, "case '{}': nothing readable to echo", c.name);
        }
    }
    for r in semantic {
        assert!(
            echoed.contains(&r),
            "no {r:?} punch case echoed its id: {echoed:?}"
        );
    }
}

/// Every close code is a row of PROTOCOL §8's table, value and name. Red
/// when a code is added to `close` without documenting it.
#[test]
fn every_close_code_is_documented() {
    let doc = include_str!("../../docs/PROTOCOL.md");
    for (code, name) in fencegate_schema::close::ALL {
        let row = format!("| 0x{code:02x} | `{name}` |");
        assert!(
            doc.contains(&row),
            "docs/PROTOCOL.md lacks the close code row starting {row:?}"
        );
    }
}

/// Every field of the reply tables is a row of PROTOCOL §5.5. Red when a
/// field is appended to `reply.fbs` (as `HelloAck.max_accuracy_m` was)
/// without telling client authors what it means.
#[test]
fn every_reply_field_is_documented() {
    let doc = include_str!("../../docs/PROTOCOL.md");
    let fbs = include_str!("../fbs/reply.fbs");
    let mut fields = 0;
    for table in ["HelloAck", "PunchAck", "Busy"] {
        let start = fbs
            .find(&format!("table {table} {{"))
            .unwrap_or_else(|| panic!("table {table} in reply.fbs"));
        let body = &fbs[start..start + fbs[start..].find('}').unwrap()];
        for line in body.lines().skip(1) {
            let line = line.trim();
            if line.starts_with("//") || line.is_empty() {
                continue;
            }
            let name = line.split(':').next().unwrap().trim();
            let row = format!("| `{name}` |");
            assert!(
                doc.contains(&row),
                "docs/PROTOCOL.md lacks a row for {table}.{name}"
            );
            fields += 1;
        }
    }
    assert!(fields >= 15, "parsed only {fields} fields of reply.fbs");
}
