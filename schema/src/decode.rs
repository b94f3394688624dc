//! Verified decoding of gateway replies (for devices and the load harness)
//! and downstream records (for forwarders, sinks and tests).
//!
//! These buffers come from a gateway rather than from an untrusted device,
//! but they still cross a network or a disk, so they are verified once with
//! bounded options before any field is read.

use flatbuffers::VerifierOptions;

use crate::encode::{
    AttendanceRef, BusyMsg, FenceEventMsg, HelloAckMsg, PingRecordMsg, PunchAckMsg, PunchRecordMsg,
    RecordBodyMsg, RecordMsg, ReplyMsg,
};
use crate::generated::{
    Busy, FenceEvent, HelloAck, PingRecord, PunchAck, PunchRecord, RECORD_IDENTIFIER,
    REPLY_IDENTIFIER, Reason, Record, RecordBody, ReplyBody, root_as_record_with_opts,
    root_as_reply_with_opts,
};
use crate::parse::{check_identifier, verifier_reason};

/// Verifier bounds for replies and records: both nest 2 tables deep and
/// hold 2 tables; the size bound allows records with long fence lists.
const DECODE_OPTIONS: VerifierOptions = VerifierOptions {
    max_depth: 16,
    max_tables: 64,
    max_apparent_size: 1 << 22,
    ignore_missing_null_terminator: false,
};

/// A verified gateway reply.
#[derive(Debug, Clone, Copy)]
pub enum ReplyView<'a> {
    /// Answer to Hello.
    HelloAck(HelloAck<'a>),
    /// Answer to a Punch.
    PunchAck(PunchAck<'a>),
    /// Request not processed; resend later.
    Busy(Busy<'a>),
}

/// Verifies a `Reply` buffer (identifier `FGR1`).
///
/// # Errors
///
/// `Malformed` if verification fails, `MissingField` if a required field
/// is absent, `UnknownBody` for a missing or unknown body type.
pub fn parse_reply(buf: &[u8]) -> Result<ReplyView<'_>, Reason> {
    check_identifier(buf, REPLY_IDENTIFIER)?;
    let reply = root_as_reply_with_opts(&DECODE_OPTIONS, buf).map_err(verifier_reason)?;
    let view = match reply.body_type() {
        ReplyBody::HelloAck => reply.body_as_hello_ack().map(ReplyView::HelloAck),
        ReplyBody::PunchAck => reply.body_as_punch_ack().map(ReplyView::PunchAck),
        ReplyBody::Busy => reply.body_as_busy().map(ReplyView::Busy),
        _ => return Err(Reason::UnknownBody),
    };
    view.ok_or(Reason::Malformed)
}

impl ReplyView<'_> {
    /// Copies the verified reply into an owned message.
    #[must_use]
    pub fn to_msg(&self) -> ReplyMsg {
        match self {
            ReplyView::HelloAck(a) => ReplyMsg::HelloAck(HelloAckMsg {
                server_time_ms: a.server_time_ms(),
                max_batch_fixes: a.max_batch_fixes(),
                max_frame_bytes: a.max_frame_bytes(),
                repeat_window_s: a.repeat_window_s(),
                max_accuracy_m: a.max_accuracy_m(),
            }),
            ReplyView::PunchAck(a) => ReplyMsg::PunchAck(PunchAckMsg {
                punch_id: a.punch_id().map(|u| u.0),
                record_id: a.record_id().map(|u| u.0),
                verdict: a.verdict(),
                reason: a.reason(),
                fence_id: a.fence_id().map(str::to_owned),
                nearest_fence_id: a.nearest_fence_id().map(str::to_owned),
                distance_m: a.distance_m(),
                server_time_ms: a.server_time_ms(),
            }),
            ReplyView::Busy(b) => ReplyMsg::Busy(BusyMsg {
                retry_after_ms: b.retry_after_ms(),
                reason: b.reason(),
            }),
        }
    }
}

/// A verified downstream record.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    record: Record<'a>,
    body: RecordBodyView<'a>,
}

/// The body of a verified record.
#[derive(Debug, Clone, Copy)]
pub enum RecordBodyView<'a> {
    /// A verified punch.
    Punch(PunchRecord<'a>),
    /// A forwarded position.
    Ping(PingRecord<'a>),
    /// A fence transition.
    FenceEvent(FenceEvent<'a>),
}

/// Verifies a `Record` buffer (identifier `FGK1`).
///
/// # Errors
///
/// `Malformed` if verification fails, `MissingField` if a required field
/// is absent, `UnknownBody` for a missing or unknown body type.
pub fn parse_record(buf: &[u8]) -> Result<RecordView<'_>, Reason> {
    check_identifier(buf, RECORD_IDENTIFIER)?;
    let record = root_as_record_with_opts(&DECODE_OPTIONS, buf).map_err(verifier_reason)?;
    let body = match record.body_type() {
        RecordBody::PunchRecord => record.body_as_punch_record().map(RecordBodyView::Punch),
        RecordBody::PingRecord => record.body_as_ping_record().map(RecordBodyView::Ping),
        RecordBody::FenceEvent => record.body_as_fence_event().map(RecordBodyView::FenceEvent),
        _ => return Err(Reason::UnknownBody),
    };
    Ok(RecordView {
        record,
        body: body.ok_or(Reason::Malformed)?,
    })
}

fn strings(v: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<&str>>>) -> Vec<String> {
    v.map(|v| v.iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

impl<'a> RecordView<'a> {
    /// Deterministic record id.
    #[must_use]
    pub fn record_id(&self) -> [u8; 16] {
        self.record.record_id().0
    }
    /// Tenant the record belongs to.
    #[must_use]
    pub fn tenant(&self) -> &'a str {
        self.record.tenant()
    }
    /// Gateway clock when the record was made, unix ms.
    #[must_use]
    pub fn gateway_time_ms(&self) -> i64 {
        self.record.gateway_time_ms()
    }
    /// Gateway node that made it.
    #[must_use]
    pub fn node(&self) -> Option<&'a str> {
        self.record.node()
    }
    /// The body, already matched on its type.
    #[must_use]
    pub fn body(&self) -> RecordBodyView<'a> {
        self.body
    }
    /// The generated table.
    #[must_use]
    pub fn raw(&self) -> Record<'a> {
        self.record
    }

    /// The attendance fields of a punch record (`None` for other bodies);
    /// absent fields of records written before they existed read as
    /// defaults.
    #[must_use]
    pub fn attendance(&self) -> Option<AttendanceRef<'a>> {
        let RecordBodyView::Punch(p) = self.body else {
            return None;
        };
        Some(AttendanceRef {
            site: p.site(),
            department: p.department(),
            supervisor: p.supervisor(),
            needs_approval: p.needs_approval(),
            paired_with: p.paired_with().map(|u| u.0),
            attendance_time_ms: p.attendance_time_ms(),
            group: p.group(),
            terminal_auth: p.terminal_auth(),
        })
    }

    /// Copies the verified record into an owned message.
    #[must_use]
    pub fn to_msg(&self) -> RecordMsg {
        let body = match self.body {
            RecordBodyView::Punch(p) => RecordBodyMsg::Punch(PunchRecordMsg {
                punch_id: p.punch_id().0,
                employee_id: p.employee_id().to_owned(),
                device_id: p.device_id().to_owned(),
                kind: p.kind(),
                method: p.method(),
                device_time_ms: p.device_time_ms(),
                position: p.position().copied(),
                verdict: p.verdict(),
                reason: p.reason(),
                fence_ids: strings(p.fence_ids()),
                nearest_fence_id: p.nearest_fence_id().map(str::to_owned),
                distance_m: p.distance_m(),
                offline: p.offline(),
                mock_location: p.mock_location(),
                status: p.status(),
                anomaly_flags: p.anomaly_flags(),
                slot: p.slot().map(str::to_owned),
                merged_into: p.merged_into().map(|u| u.0),
            }),
            RecordBodyView::Ping(p) => RecordBodyMsg::Ping(PingRecordMsg {
                device_id: p.device_id().to_owned(),
                time_ms: p.time_ms(),
                lat: p.lat(),
                lon: p.lon(),
                accuracy_m: p.accuracy_m(),
                h3_cell: p.h3_cell(),
                fence_ids: strings(p.fence_ids()),
                heartbeat: p.heartbeat(),
                late: p.late(),
            }),
            RecordBodyView::FenceEvent(e) => RecordBodyMsg::FenceEvent(FenceEventMsg {
                device_id: e.device_id().to_owned(),
                fence_id: e.fence_id().to_owned(),
                transition: e.transition(),
                time_ms: e.time_ms(),
                lat: e.lat(),
                lon: e.lon(),
            }),
        };
        RecordMsg {
            record_id: self.record_id(),
            tenant: self.tenant().to_owned(),
            gateway_time_ms: self.gateway_time_ms(),
            node: self.node().map(str::to_owned),
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{PunchRecordRef, RecordBodyRef, RecordRef};
    use crate::generated::{AttendanceStatus, PunchKind, PunchMethod, Verdict};

    fn record() -> RecordRef<'static> {
        RecordRef {
            record_id: [1; 16],
            tenant: "acme",
            gateway_time_ms: 1_750_000_000_000,
            node: None,
            body: RecordBodyRef::Punch(PunchRecordRef {
                punch_id: [2; 16],
                employee_id: "e-1",
                device_id: "d-1",
                kind: PunchKind::In,
                method: PunchMethod::Qr,
                device_time_ms: 1_750_000_000_000,
                position: None,
                verdict: Verdict::Accepted,
                reason: Reason::None,
                fence_ids: &[],
                nearest_fence_id: None,
                distance_m: 0.0,
                offline: false,
                mock_location: false,
                status: AttendanceStatus::Late,
                anomaly_flags: 0,
                slot: Some("2025-06-15/day"),
                merged_into: None,
            }),
        }
    }

    #[test]
    fn attendance_fields_round_trip_and_default_when_absent() {
        let att = AttendanceRef {
            site: Some("shanghai"),
            department: Some("ops"),
            supervisor: Some("e-100"),
            needs_approval: true,
            paired_with: Some([3; 16]),
            attendance_time_ms: 1_749_999_000_000,
            group: Some("office"),
            terminal_auth: crate::generated::TerminalAuth::Fingerprint,
        };
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let bytes = record().encode_with_attendance(&att, &mut fbb).to_vec();
        let view = parse_record(&bytes).unwrap();
        assert_eq!(view.attendance(), Some(att));
        // The first-version fields are untouched by the appended ones.
        let RecordBodyMsg::Punch(p) = view.to_msg().body else {
            panic!("punch")
        };
        assert_eq!(p.status, AttendanceStatus::Late);
        assert_eq!(p.slot.as_deref(), Some("2025-06-15/day"));

        // A record written without them reads as defaults.
        let bytes = record().encode_into(&mut fbb).to_vec();
        let view = parse_record(&bytes).unwrap();
        assert_eq!(view.attendance(), Some(AttendanceRef::default()));
    }
}
