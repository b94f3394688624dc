//! The worked punch frame in docs/PROTOCOL.md is these exact bytes.
//!
//! The document's dump lives between `<!-- punch-hex:begin -->` and
//! `<!-- punch-hex:end -->`, one field per line as
//! `offset | hex bytes | annotation`. If the encoding changes, this test
//! fails and prints the new bytes; re-annotate the dump from them.

mod common;

use common::NOW;
use fencegate_schema::{
    Channel, Limits, Position, PunchKind, PunchMethod, PunchMsg, Request, TerminalAuth, parse_frame,
};
use flatbuffers::FlatBufferBuilder;

/// The punch the protocol document walks through.
fn example() -> PunchMsg {
    PunchMsg {
        punch_id: [
            0x01, 0x97, 0x6e, 0x2a, 0x5b, 0x3c, 0x7d, 0x10, 0x8e, 0x4f, 0x2a, 0x61, 0x9b, 0x0c,
            0xd3, 0x55,
        ],
        employee_id: "E1001".to_owned(),
        kind: PunchKind::Out,
        method: PunchMethod::Gps,
        device_time_ms: NOW,
        position: Some(Position::new(31.2304, 121.4737, 8.5)),
        bssids: Vec::new(),
        ssid: None,
        qr_payload: None,
        terminal_auth: TerminalAuth::None,
        offline: false,
        mock_location: false,
    }
}

/// Bytes of the dump in docs/PROTOCOL.md, checking that each line's offset
/// is where the previous lines end.
fn documented_bytes() -> Vec<u8> {
    let doc = include_str!("../../docs/PROTOCOL.md");
    let start = doc
        .find("<!-- punch-hex:begin -->")
        .expect("begin marker in PROTOCOL.md");
    let end = doc
        .find("<!-- punch-hex:end -->")
        .expect("end marker in PROTOCOL.md");
    let mut bytes = Vec::new();
    for line in doc[start..end].lines() {
        let mut parts = line.split('|');
        let (Some(offset), Some(hex), Some(_note)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(offset) = usize::from_str_radix(offset.trim(), 16) else {
            continue;
        };
        assert_eq!(
            offset,
            bytes.len(),
            "dump line {line:?}: offset should be {:04x}",
            bytes.len()
        );
        for b in hex.split_whitespace() {
            bytes.push(
                u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("bad hex {b:?} in {line:?}")),
            );
        }
    }
    bytes
}

fn dump(buf: &[u8]) -> String {
    buf.chunks(16)
        .enumerate()
        .map(|(i, l)| {
            let hex: Vec<String> = l.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x} | {} |\n", i * 16, hex.join(" "))
        })
        .collect()
}

#[test]
fn documented_punch_frame_matches_the_encoder() {
    let mut fbb = FlatBufferBuilder::new();
    let actual = example().encode_into(&mut fbb).to_vec();
    let documented = documented_bytes();
    assert!(
        documented == actual,
        "docs/PROTOCOL.md's punch dump is stale. The encoder now writes {} bytes:\n{}",
        actual.len(),
        dump(&actual)
    );
}

#[test]
fn documented_punch_frame_parses_to_the_example() {
    let documented = documented_bytes();
    let Ok(Request::Punch(p)) = parse_frame(&documented, Channel::Stream, NOW, &Limits::default())
    else {
        panic!("the documented frame must parse as a punch");
    };
    assert_eq!(p.to_msg(), example());
    assert_eq!(p.position(), Some((31.2304, 121.4737, 8.5)));
}
