//! Shared fixtures for the schema tests: a fixed clock, valid sample
//! messages, and proptest strategies that generate only valid messages.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use fencegate_schema::{
    AttendanceStatus, BusyMsg, FenceEventMsg, Fix, HelloAckMsg, HelloMsg, LAT_E7_MAX, LON_E7_MAX,
    PingBatchMsg, PingRecordMsg, Position, PunchAckMsg, PunchKind, PunchMethod, PunchMsg,
    PunchRecordMsg, Reason, RecordBodyMsg, RecordMsg, TerminalAuth, Transition, Verdict,
};
use proptest::prelude::*;

/// The gateway clock every test runs at: 2025-06-15T15:06:40Z.
pub const NOW: i64 = 1_750_000_000_000;

pub fn hello() -> HelloMsg {
    HelloMsg {
        token: "fgt1.acme.dev-17.sig".to_owned(),
        device_id: "dev-17".to_owned(),
        client: Some("fencegate-android/1.4.2".to_owned()),
    }
}

pub fn punch() -> PunchMsg {
    PunchMsg {
        punch_id: core::array::from_fn(|i| i as u8 + 1),
        employee_id: "E1001".to_owned(),
        kind: PunchKind::In,
        method: PunchMethod::Gps,
        device_time_ms: NOW - 1_000,
        position: Some(Position::new(31.2304, 121.4737, 8.5)),
        bssids: Vec::new(),
        ssid: None,
        qr_payload: None,
        terminal_auth: TerminalAuth::None,
        offline: false,
        mock_location: false,
    }
}

pub fn batch(n: usize) -> PingBatchMsg {
    PingBatchMsg {
        device_seq: 7,
        base_time_ms: NOW - 60_000,
        fixes: (0..n)
            .map(|i| {
                Fix::new(
                    312_304_000 + i as i32,
                    1_214_737_000 - i as i32,
                    i as u32 * 10,
                    50,
                    0,
                )
            })
            .collect(),
    }
}

pub fn arb_uuid() -> impl Strategy<Value = [u8; 16]> {
    any::<[u8; 16]>().prop_filter("all-zero ids are invalid", |u| *u != [0; 16])
}

/// Identifiers of 1..=40 characters, some multi-byte, so at most 120 bytes.
pub fn arb_id() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._é中-]{1,40}"
}

pub fn arb_opt_id() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[a-zA-Z0-9._é中 -]{0,40}")
}

pub fn arb_position() -> impl Strategy<Value = Position> {
    (-90.0f64..=90.0, -180.0f64..=180.0, 0.0f32..5_000.0)
        .prop_map(|(lat, lon, acc)| Position::new(lat, lon, acc))
}

pub fn arb_device_time() -> impl Strategy<Value = i64> {
    // From 30 days back up to the edge of the allowed future skew.
    (NOW - 30 * 86_400_000)..=(NOW + 300_000)
}

pub fn arb_hello() -> impl Strategy<Value = HelloMsg> {
    ("[!-~]{1,1024}", arb_id(), arb_opt_id()).prop_map(|(token, device_id, client)| HelloMsg {
        token,
        device_id,
        client,
    })
}

pub fn arb_punch() -> impl Strategy<Value = PunchMsg> {
    (
        arb_uuid(),
        arb_id(),
        prop_oneof![Just(PunchKind::In), Just(PunchKind::Out)],
        prop_oneof![
            Just(PunchMethod::Gps),
            Just(PunchMethod::Wifi),
            Just(PunchMethod::Qr),
            Just(PunchMethod::Terminal)
        ],
        arb_device_time(),
        proptest::option::of(arb_position()),
        proptest::collection::vec(any::<[u8; 6]>(), 0..=32),
        arb_opt_id(),
        proptest::option::of("[ -~]{1,512}"),
        (0u8..=3, any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                punch_id,
                employee_id,
                kind,
                method,
                device_time_ms,
                position,
                bssids,
                ssid,
                qr,
                rest,
            )| {
                let (auth, offline, mock_location) = rest;
                let mut p = PunchMsg {
                    punch_id,
                    employee_id,
                    kind,
                    method,
                    device_time_ms,
                    position,
                    bssids,
                    ssid,
                    qr_payload: qr,
                    terminal_auth: TerminalAuth(auth),
                    offline,
                    mock_location,
                };
                // Make the method's evidence present, as a valid client does.
                match method {
                    PunchMethod::Gps if p.position.is_none() => {
                        p.position = Some(Position::new(0.0, 0.0, 0.0));
                    }
                    PunchMethod::Wifi if p.bssids.is_empty() => p.bssids.push([2, 0, 0, 0, 0, 1]),
                    PunchMethod::Qr if p.qr_payload.is_none() => p.qr_payload = Some("q".into()),
                    _ => {}
                }
                p
            },
        )
}

pub fn arb_fix() -> impl Strategy<Value = Fix> {
    (
        -LAT_E7_MAX..=LAT_E7_MAX,
        -LON_E7_MAX..=LON_E7_MAX,
        0u32..=600_000,
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(lat, lon, off, acc, flags)| Fix::new(lat, lon, off, acc, flags))
}

pub fn arb_batch(max_fixes: usize) -> impl Strategy<Value = PingBatchMsg> {
    (
        any::<u64>(),
        (NOW - 86_400_000)..=(NOW - 300_000),
        proptest::collection::vec(arb_fix(), 1..=max_fixes),
    )
        .prop_map(|(device_seq, base_time_ms, fixes)| PingBatchMsg {
            device_seq,
            base_time_ms,
            fixes,
        })
}

pub fn arb_reason() -> impl Strategy<Value = Reason> {
    proptest::sample::select(Reason::ENUM_VALUES.to_vec())
}

pub fn arb_verdict() -> impl Strategy<Value = Verdict> {
    proptest::sample::select(Verdict::ENUM_VALUES.to_vec())
}

pub fn arb_hello_ack() -> impl Strategy<Value = HelloAckMsg> {
    (
        any::<i64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        0.0f32..10_000.0,
    )
        .prop_map(|(t, f, b, w, m)| HelloAckMsg {
            server_time_ms: t,
            max_batch_fixes: f,
            max_frame_bytes: b,
            repeat_window_s: w,
            max_accuracy_m: m,
        })
}

pub fn arb_punch_ack() -> impl Strategy<Value = PunchAckMsg> {
    (
        proptest::option::of(arb_uuid()),
        proptest::option::of(arb_uuid()),
        arb_verdict(),
        arb_reason(),
        arb_opt_id(),
        arb_opt_id(),
        0.0f32..1.0e7,
        any::<i64>(),
    )
        .prop_map(
            |(punch_id, record_id, verdict, reason, fence_id, nearest, distance_m, t)| {
                PunchAckMsg {
                    punch_id,
                    record_id,
                    verdict,
                    reason,
                    fence_id,
                    nearest_fence_id: nearest,
                    distance_m,
                    server_time_ms: t,
                }
            },
        )
}

pub fn arb_busy() -> impl Strategy<Value = BusyMsg> {
    (any::<u32>(), arb_reason()).prop_map(|(retry_after_ms, reason)| BusyMsg {
        retry_after_ms,
        reason,
    })
}

fn arb_fence_ids() -> impl Strategy<Value = Vec<String>> {
    // Past 16 entries the encoder switches from its stack buffer to a Vec.
    proptest::collection::vec(arb_id(), 0..=20)
}

pub fn arb_punch_record() -> impl Strategy<Value = PunchRecordMsg> {
    (
        (arb_uuid(), arb_id(), arb_id(), arb_punch()),
        (
            arb_verdict(),
            arb_reason(),
            arb_fence_ids(),
            arb_opt_id(),
            0.0f32..1.0e6,
        ),
        (
            0u8..=7,
            any::<u64>(),
            arb_opt_id(),
            proptest::option::of(arb_uuid()),
        ),
    )
        .prop_map(|(a, b, c)| {
            let (punch_id, employee_id, device_id, p) = a;
            let (verdict, reason, fence_ids, nearest_fence_id, distance_m) = b;
            let (status, anomaly_flags, slot, merged_into) = c;
            PunchRecordMsg {
                punch_id,
                employee_id,
                device_id,
                kind: p.kind,
                method: p.method,
                device_time_ms: p.device_time_ms,
                position: p.position,
                verdict,
                reason,
                fence_ids,
                nearest_fence_id,
                distance_m,
                offline: p.offline,
                mock_location: p.mock_location,
                status: AttendanceStatus(status),
                anomaly_flags,
                slot,
                merged_into,
            }
        })
}

pub fn arb_ping_record() -> impl Strategy<Value = PingRecordMsg> {
    (
        arb_id(),
        any::<i64>(),
        arb_position(),
        any::<u64>(),
        arb_fence_ids(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(device_id, time_ms, p, h3_cell, fence_ids, heartbeat, late)| PingRecordMsg {
                device_id,
                time_ms,
                lat: p.lat(),
                lon: p.lon(),
                accuracy_m: p.accuracy_m(),
                h3_cell,
                fence_ids,
                heartbeat,
                late,
            },
        )
}

pub fn arb_fence_event() -> impl Strategy<Value = FenceEventMsg> {
    (
        arb_id(),
        arb_id(),
        prop_oneof![
            Just(Transition::Enter),
            Just(Transition::Exit),
            Just(Transition::Inside)
        ],
        any::<i64>(),
        arb_position(),
    )
        .prop_map(
            |(device_id, fence_id, transition, time_ms, p)| FenceEventMsg {
                device_id,
                fence_id,
                transition,
                time_ms,
                lat: p.lat(),
                lon: p.lon(),
            },
        )
}

pub fn arb_record() -> impl Strategy<Value = RecordMsg> {
    (
        arb_uuid(),
        arb_id(),
        any::<i64>(),
        arb_opt_id(),
        prop_oneof![
            arb_punch_record().prop_map(RecordBodyMsg::Punch),
            arb_ping_record().prop_map(RecordBodyMsg::Ping),
            arb_fence_event().prop_map(RecordBodyMsg::FenceEvent),
        ],
    )
        .prop_map(
            |(record_id, tenant, gateway_time_ms, node, body)| RecordMsg {
                record_id,
                tenant,
                gateway_time_ms,
                node,
                body,
            },
        )
}
