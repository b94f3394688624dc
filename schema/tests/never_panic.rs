//! No input makes the parsers panic, and whatever they accept can be read
//! in full: arbitrary bytes, bytes behind a valid header, and valid frames
//! with flipped bytes or cut short.

mod common;

use common::*;
use fencegate_schema::{
    Channel, FrameMsg, Limits, ReplyMsg, Request, parse_frame, parse_record, parse_reply,
};
use flatbuffers::FlatBufferBuilder;
use proptest::prelude::*;

/// Parses `buf` every way there is and, when a parse succeeds, reads every
/// field through the views (this is where an unchecked read would panic).
fn parse_everything(buf: &[u8]) {
    let limits = Limits::default();
    for channel in [Channel::Stream, Channel::Datagram, Channel::Backlog] {
        if let Ok(req) = parse_frame(buf, channel, NOW, &limits) {
            let _ = req.to_msg();
            match req {
                Request::Hello(h) => {
                    let _ = (h.token().len(), h.device_id().len(), h.client());
                }
                Request::Punch(p) => {
                    let _ = (p.position(), p.bssids().count(), p.punch_id());
                }
                Request::PingBatch(b) => {
                    let n = b
                        .fixes()
                        .map(|f| f.time_ms)
                        .filter(|t| *t >= b.base_time_ms())
                        .count();
                    assert_eq!(n, b.len(), "a fix time before base_time_ms");
                }
            }
        }
    }
    if let Ok(reply) = parse_reply(buf) {
        let _ = reply.to_msg();
    }
    if let Ok(record) = parse_record(buf) {
        let _ = record.to_msg();
    }
}

fn mutate(mut buf: Vec<u8>, flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    if buf.is_empty() {
        return buf;
    }
    for &(at, xor) in flips {
        let i = at % buf.len();
        buf[i] ^= xor;
    }
    if let Some(cut) = cut {
        buf.truncate(cut % (buf.len() + 1));
    }
    buf
}

fn arb_frame() -> impl Strategy<Value = FrameMsg> {
    prop_oneof![
        arb_hello().prop_map(FrameMsg::Hello),
        arb_punch().prop_map(FrameMsg::Punch),
        arb_batch(80).prop_map(FrameMsg::PingBatch),
    ]
}

fn arb_reply() -> impl Strategy<Value = ReplyMsg> {
    prop_oneof![
        arb_hello_ack().prop_map(ReplyMsg::HelloAck),
        arb_punch_ack().prop_map(ReplyMsg::PunchAck),
        arb_busy().prop_map(ReplyMsg::Busy),
    ]
}

fn arb_flips() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), 1u8..=255), 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..2048)) {
        parse_everything(&buf);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_never_panic(
        root in 8u32..256,
        ident in prop_oneof![Just(*b"FGD1"), Just(*b"FGR1"), Just(*b"FGK1")],
        rest in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let mut buf = root.to_le_bytes().to_vec();
        buf.extend_from_slice(&ident);
        buf.extend_from_slice(&rest);
        parse_everything(&buf);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_frames_never_panic(
        msg in arb_frame(),
        flips in arb_flips(),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let buf = msg.encode_into(&mut FlatBufferBuilder::new()).to_vec();
        parse_everything(&mutate(buf, &flips, cut));
    }

    #[test]
    fn truncated_frames_never_panic(msg in arb_frame(), cut in any::<usize>()) {
        let buf = msg.encode_into(&mut FlatBufferBuilder::new()).to_vec();
        let cut = cut % buf.len();
        parse_everything(&buf[..cut]);
        parse_everything(&buf[buf.len() - cut..]);
    }

    #[test]
    fn mutated_replies_and_records_never_panic(
        reply in arb_reply(),
        record in arb_record(),
        flips in arb_flips(),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut fbb = FlatBufferBuilder::new();
        let buf = reply.encode_into(&mut fbb).to_vec();
        parse_everything(&mutate(buf, &flips, cut));
        let buf = record.encode_into(&mut fbb).to_vec();
        parse_everything(&mutate(buf, &flips, cut));
    }
}
