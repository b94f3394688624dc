//! The body of the schema's fuzz target: the verify-once parsers,
//! `parse_frame` on every channel, plus `parse_reply` and `parse_record`.
//! Whatever a parser accepts is read in full, so an unchecked read of a bad
//! buffer would crash here, and must re-verify after a round trip; and
//! `punch_id_of`, which reads the id of a refused punch, runs on every
//! stream input.
//!
//! The same file is compiled into `schema/tests/fuzz_corpus.rs` (through
//! `#[path]`), so CI runs exactly this body over the committed seeds and
//! random inputs without cargo-fuzz. It therefore uses only the schema's own
//! dependencies and no crate-level attributes.

use fencegate_schema::{
    Channel, Fix, Limits, PingBatchMsg, PingRecordMsg, Position, PunchKind, PunchMethod, PunchMsg,
    Reason, RecordBodyMsg, RecordMsg, Request, TerminalAuth, parse_frame, parse_record,
    parse_reply, punch_id_of,
};

/// The gateway clock the parsers run at, unix ms.
pub const NOW: i64 = 1_750_000_000_000;

/// A valid encoding to mutate: a punch, a ping batch or a record.
fn base(which: u8) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    match which % 3 {
        0 => PunchMsg {
            punch_id: [7; 16],
            employee_id: "E1001".into(),
            kind: PunchKind::In,
            method: PunchMethod::Wifi,
            device_time_ms: NOW,
            position: Some(Position::new(31.2, 121.4, 8.5)),
            bssids: vec![[1, 2, 3, 4, 5, 6]; 3],
            ssid: Some("office".into()),
            qr_payload: Some("fgqr:1".into()),
            terminal_auth: TerminalAuth::Face,
            offline: true,
            mock_location: true,
        }
        .encode_into(&mut fbb)
        .to_vec(),
        1 => PingBatchMsg {
            device_seq: 9,
            base_time_ms: NOW - 10_000,
            fixes: (0..8)
                .map(|i| Fix::new(i * 1000, -i * 1000, i as u32, 5, 1))
                .collect(),
        }
        .encode_into(&mut fbb)
        .to_vec(),
        _ => RecordMsg {
            record_id: [3; 16],
            tenant: "acme".into(),
            gateway_time_ms: NOW,
            node: Some("gw-1".into()),
            body: RecordBodyMsg::Ping(PingRecordMsg {
                device_id: "truck-4".into(),
                time_ms: NOW,
                lat: 1.0,
                lon: 2.0,
                accuracy_m: 3.0,
                h3_cell: 42,
                fence_ids: vec!["a".into(), "bb".into()],
                heartbeat: true,
                late: true,
            }),
        }
        .encode_into(&mut fbb)
        .to_vec(),
    }
}

/// Parses `buf` every way there is; whatever a parser accepts is read in
/// full and must survive a round trip: copied out, encoded again and parsed
/// again, it is accepted and encodes to the same bytes. Returns whether
/// `parse_frame` accepted it.
fn exercise(buf: &[u8], channel: Channel) -> bool {
    let limits = Limits::default();
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let mut accepted = false;
    let parsed = parse_frame(buf, channel, NOW, &limits);
    if channel == Channel::Stream {
        // The id a rejection's ack echoes is read from a frame that failed
        // validation, so it must hold up on any bytes, and agree with the
        // parser: the punch's own id when accepted, none when the frame
        // failed the structural checks.
        let id = punch_id_of(buf, &limits);
        match parsed {
            Ok(Request::Punch(p)) => assert_eq!(id, Some(p.punch_id())),
            Ok(_) | Err(Reason::Oversize | Reason::Malformed | Reason::UnknownBody) => {
                assert_eq!(id, None, "an id echoed for a frame that is no punch")
            }
            Err(_) => {}
        }
    }
    if let Ok(req) = parsed {
        accepted = true;
        if let Request::PingBatch(b) = req {
            assert_eq!(b.fixes().count(), b.len());
        }
        let msg = req.to_msg();
        let once = msg.encode_into(&mut fbb).to_vec();
        let again = parse_frame(&once, channel, NOW, &limits)
            .unwrap_or_else(|r| panic!("a parsed frame does not re-verify: {r:?} ({msg:?})"));
        let twice = again.to_msg().encode_into(&mut fbb).to_vec();
        assert_eq!(once, twice, "a frame changed on its round trip");
    }
    if let Ok(reply) = parse_reply(buf) {
        let msg = reply.to_msg();
        let once = msg.encode_into(&mut fbb).to_vec();
        let again = parse_reply(&once)
            .unwrap_or_else(|e| panic!("a parsed reply does not re-verify: {e:?} ({msg:?})"));
        assert_eq!(once, again.to_msg().encode_into(&mut fbb).to_vec());
    }
    if let Ok(record) = parse_record(buf) {
        let msg = record.to_msg();
        let once = msg.encode_into(&mut fbb).to_vec();
        let again = parse_record(&once)
            .unwrap_or_else(|e| panic!("a parsed record does not re-verify: {e:?} ({msg:?})"));
        assert_eq!(once, again.to_msg().encode_into(&mut fbb).to_vec());
    }
    accepted
}

/// The `parse_frame` fuzz target's body.
///
/// Input: byte 0 picks the mode; bits 0-1 the channel (0 stream, 1
/// datagram, else backlog). Bit 2 clear: bytes 1.. are parsed as they are.
/// Bit 2 set: a valid encoding (byte 0 >> 3: a punch, a ping batch or a
/// record) is taken as the base and bytes 1.. are applied to it as
/// (position, xor) pairs, an odd trailing byte cutting it short, so the
/// fuzzer starts from deep inside the format without a seed corpus.
/// Returns whether `parse_frame` accepted the buffer.
pub fn parse_frame_target(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let channel = match mode & 3 {
        0 => Channel::Stream,
        1 => Channel::Datagram,
        _ => Channel::Backlog,
    };
    if mode & 4 == 0 {
        return exercise(rest, channel);
    }
    let mut buf = base(mode >> 3);
    for pair in rest.chunks_exact(2) {
        let len = buf.len();
        buf[usize::from(pair[0]) % len] ^= pair[1];
    }
    // An odd trailing byte truncates the buffer, to reach the bounds checks.
    if rest.len() % 2 == 1 {
        let cut = usize::from(rest[rest.len() - 1]) % (buf.len() + 1);
        buf.truncate(cut);
    }
    exercise(&buf, channel)
}
