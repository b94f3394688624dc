//! Build → parse → equal, for every message type.

mod common;

use common::*;
use fencegate_schema::{
    Channel, FrameMsg, Limits, ReplyMsg, Request, parse_frame, parse_record, parse_reply,
};
use flatbuffers::FlatBufferBuilder;
use proptest::prelude::*;

fn frame_round_trip(msg: FrameMsg, channel: Channel) -> Result<(), TestCaseError> {
    let mut fbb = FlatBufferBuilder::new();
    let buf = msg.encode_into(&mut fbb);
    let parsed = parse_frame(buf, channel, NOW, &Limits::default())
        .map_err(|r| TestCaseError::fail(format!("valid frame refused: {r}")))?;
    prop_assert_eq!(parsed.to_msg(), msg);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hello_round_trips(msg in arb_hello()) {
        frame_round_trip(FrameMsg::Hello(msg), Channel::Stream)?;
    }

    #[test]
    fn punch_round_trips(msg in arb_punch()) {
        frame_round_trip(FrameMsg::Punch(msg), Channel::Stream)?;
    }

    #[test]
    fn ping_batch_round_trips_in_a_datagram(msg in arb_batch(64)) {
        frame_round_trip(FrameMsg::PingBatch(msg), Channel::Datagram)?;
    }

    #[test]
    fn ping_batch_round_trips_on_a_backlog_stream(msg in arb_batch(1_000)) {
        frame_round_trip(FrameMsg::PingBatch(msg), Channel::Backlog)?;
    }

    #[test]
    fn fixes_decode_to_degrees_metres_and_absolute_times(msg in arb_batch(64)) {
        let mut fbb = FlatBufferBuilder::new();
        let buf = msg.encode_into(&mut fbb);
        let Ok(Request::PingBatch(view)) = parse_frame(buf, Channel::Datagram, NOW, &Limits::default()) else {
            return Err(TestCaseError::fail("valid batch refused"));
        };
        prop_assert_eq!(view.fixes().len(), msg.fixes.len());
        for (got, fix) in view.fixes().zip(&msg.fixes) {
            prop_assert_eq!(got.lat, f64::from(fix.lat_e7()) * 1e-7);
            prop_assert_eq!(got.lon, f64::from(fix.lon_e7()) * 1e-7);
            prop_assert_eq!(got.accuracy_m, f32::from(fix.accuracy_dm()) * 0.1);
            prop_assert_eq!(got.time_ms, msg.base_time_ms + i64::from(fix.offset_ms()));
            prop_assert_eq!(got.mock_location, fix.flags() & 1 == 1);
        }
    }

    #[test]
    fn hello_ack_round_trips(msg in arb_hello_ack()) {
        let msg = ReplyMsg::HelloAck(msg);
        let mut fbb = FlatBufferBuilder::new();
        prop_assert_eq!(parse_reply(msg.encode_into(&mut fbb)).unwrap().to_msg(), msg);
    }

    #[test]
    fn punch_ack_round_trips(msg in arb_punch_ack()) {
        let msg = ReplyMsg::PunchAck(msg);
        let mut fbb = FlatBufferBuilder::new();
        prop_assert_eq!(parse_reply(msg.encode_into(&mut fbb)).unwrap().to_msg(), msg);
    }

    #[test]
    fn busy_round_trips(msg in arb_busy()) {
        let msg = ReplyMsg::Busy(msg);
        let mut fbb = FlatBufferBuilder::new();
        prop_assert_eq!(parse_reply(msg.encode_into(&mut fbb)).unwrap().to_msg(), msg);
    }

    #[test]
    fn record_round_trips(msg in arb_record()) {
        let mut fbb = FlatBufferBuilder::new();
        prop_assert_eq!(parse_record(msg.encode_into(&mut fbb)).unwrap().to_msg(), msg);
    }

    #[test]
    fn a_reused_builder_encodes_the_same_bytes_as_a_fresh_one(a in arb_punch(), b in arb_record()) {
        let mut reused = FlatBufferBuilder::new();
        let _ = b.encode_into(&mut reused);
        let again = a.encode_into(&mut reused).to_vec();
        let mut fresh = FlatBufferBuilder::new();
        prop_assert_eq!(again, a.encode_into(&mut fresh).to_vec());
    }
}

#[test]
fn borrowed_record_with_str_fence_ids_encodes_like_the_owned_one() {
    use fencegate_schema::{
        PingRecordMsg, PingRecordRef, RecordBodyMsg, RecordBodyRef, RecordMsg, RecordRef,
    };
    let fences = ["hq-north", "hq-campus"];
    let borrowed: RecordRef<'_, &str> = RecordRef {
        record_id: [9; 16],
        tenant: "acme",
        gateway_time_ms: NOW,
        node: Some("gw-1"),
        body: RecordBodyRef::Ping(PingRecordRef {
            device_id: "truck-4",
            time_ms: NOW - 5,
            lat: 31.0,
            lon: 121.0,
            accuracy_m: 4.0,
            h3_cell: 0x08a2_a107_2b59_ffff,
            fence_ids: &fences,
            heartbeat: false,
            late: true,
        }),
    };
    let owned = RecordMsg {
        record_id: [9; 16],
        tenant: "acme".into(),
        gateway_time_ms: NOW,
        node: Some("gw-1".into()),
        body: RecordBodyMsg::Ping(PingRecordMsg {
            device_id: "truck-4".into(),
            time_ms: NOW - 5,
            lat: 31.0,
            lon: 121.0,
            accuracy_m: 4.0,
            h3_cell: 0x08a2_a107_2b59_ffff,
            fence_ids: fences.iter().map(|s| (*s).to_owned()).collect(),
            heartbeat: false,
            late: true,
        }),
    };
    let mut a = FlatBufferBuilder::new();
    let mut b = FlatBufferBuilder::new();
    assert_eq!(owned.encode_into(&mut a), borrowed.encode_into(&mut b));
    assert_eq!(
        parse_record(borrowed.encode_into(&mut b)).unwrap().to_msg(),
        owned
    );
}
