//! Verified decoding of gateway replies (for devices and the load harness)
//! and downstream records (for forwarders, sinks and tests).
//!
//! These buffers come from a gateway rather than from an untrusted device,
//! but they still cross a network or a disk, so they are verified once with
//! bounded options before any field is read.

use flatbuffers::VerifierOptions;

use crate::encode::{
    ApprovalDecisionMsg, AttendanceRef, BusyMsg, CorrectionDecisionMsg, CorrectionEvidenceMsg,
    CorrectionMsg, DayResultMsg, DaySlotResultMsg, FenceEventMsg, HelloAckMsg, HrMsg,
    LeaveEntryMsg, MonthArchiveMsg, PingRecordMsg, PunchAckMsg, PunchRecordMsg, RecordBodyMsg,
    RecordMsg, ReplyMsg,
};
use crate::generated::{
    ApprovalDecision, Busy, Correction, CorrectionDecision, CorrectionEvidence, DayResult,
    FenceEvent, HelloAck, LeaveEntry, MonthArchive, PingRecord, PunchAck, PunchRecord,
    RECORD_IDENTIFIER, REPLY_IDENTIFIER, Reason, Record, RecordBody, ReplyBody,
    root_as_record_with_opts, root_as_reply_with_opts,
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
    /// What an HR user or system decided (see [`HrView`]).
    Hr(HrView<'a>),
    /// An employee's day result, written by the results materializer.
    DayResult(DayResult<'a>),
}

/// The body of a verified HR record.
#[derive(Debug, Clone, Copy)]
pub enum HrView<'a> {
    /// A decision on a punch waiting for approval.
    Decision(ApprovalDecision<'a>),
    /// A make-up punch request.
    Correction(Correction<'a>),
    /// A decision on a make-up request.
    CorrectionDecision(CorrectionDecision<'a>),
    /// Leave or a business trip.
    Leave(LeaveEntry<'a>),
    /// A month archived.
    MonthArchive(MonthArchive<'a>),
    /// Evidence attached to a pending make-up request.
    CorrectionEvidence(CorrectionEvidence<'a>),
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

impl HrView<'_> {
    /// Copies the verified body into an owned message.
    #[must_use]
    pub fn to_msg(&self) -> HrMsg {
        match *self {
            HrView::Decision(d) => HrMsg::Decision(ApprovalDecisionMsg {
                target_record_id: d.target_record_id().0,
                decision_id: d.decision_id().to_owned(),
                approve: d.approve(),
                decider: owned(d.decider()),
                role: owned(d.role()),
                comment: owned(d.comment()),
                employee_id: owned(d.employee_id()),
                department: owned(d.department()),
            }),
            HrView::Correction(c) => HrMsg::Correction(CorrectionMsg {
                correction_id: c.correction_id().to_owned(),
                employee_id: c.employee_id().to_owned(),
                date: c.date().to_owned(),
                slot: owned(c.slot()),
                kind: c.kind(),
                at_ms: c.at_ms(),
                reason: owned(c.reason()),
                evidence_ref: owned(c.evidence_ref()),
                requested_by: owned(c.requested_by()),
                department: owned(c.department()),
                evidence_due_ms: c.evidence_due_ms(),
            }),
            HrView::CorrectionDecision(d) => HrMsg::CorrectionDecision(CorrectionDecisionMsg {
                correction_id: d.correction_id().to_owned(),
                decision_id: d.decision_id().to_owned(),
                approve: d.approve(),
                decider: owned(d.decider()),
                role: owned(d.role()),
                comment: owned(d.comment()),
                employee_id: owned(d.employee_id()),
                kind: d.kind(),
                at_ms: d.at_ms(),
                slot: owned(d.slot()),
            }),
            HrView::Leave(l) => HrMsg::Leave(LeaveEntryMsg {
                source_id: l.source_id().to_owned(),
                employee_id: l.employee_id().to_owned(),
                from_date: l.from_date().to_owned(),
                to_date: l.to_date().to_owned(),
                leave_type: l.leave_type().to_owned(),
                entered_by: owned(l.entered_by()),
            }),
            HrView::MonthArchive(m) => HrMsg::MonthArchive(MonthArchiveMsg {
                month: m.month().to_owned(),
                archived_by: owned(m.archived_by()),
            }),
            HrView::CorrectionEvidence(e) => HrMsg::CorrectionEvidence(CorrectionEvidenceMsg {
                correction_id: e.correction_id().to_owned(),
                evidence_ref: e.evidence_ref().to_owned(),
                attached_by: owned(e.attached_by()),
                employee_id: owned(e.employee_id()),
            }),
        }
    }
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
        RecordBody::ApprovalDecision => record
            .body_as_approval_decision()
            .map(|b| RecordBodyView::Hr(HrView::Decision(b))),
        RecordBody::Correction => record
            .body_as_correction()
            .map(|b| RecordBodyView::Hr(HrView::Correction(b))),
        RecordBody::CorrectionDecision => record
            .body_as_correction_decision()
            .map(|b| RecordBodyView::Hr(HrView::CorrectionDecision(b))),
        RecordBody::LeaveEntry => record
            .body_as_leave_entry()
            .map(|b| RecordBodyView::Hr(HrView::Leave(b))),
        RecordBody::MonthArchive => record
            .body_as_month_archive()
            .map(|b| RecordBodyView::Hr(HrView::MonthArchive(b))),
        RecordBody::CorrectionEvidence => record
            .body_as_correction_evidence()
            .map(|b| RecordBodyView::Hr(HrView::CorrectionEvidence(b))),
        RecordBody::DayResult => record.body_as_day_result().map(RecordBodyView::DayResult),
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
            RecordBodyView::Hr(h) => RecordBodyMsg::Hr(h.to_msg()),
            RecordBodyView::DayResult(d) => RecordBodyMsg::DayResult(DayResultMsg {
                employee_id: d.employee_id().to_owned(),
                date: d.date().to_owned(),
                department: owned(d.department()),
                group: owned(d.group()),
                status: d.status().to_owned(),
                late_min: d.late_min(),
                early_min: d.early_min(),
                worked_min: d.worked_min(),
                overtime_min: d.overtime_min(),
                in_ms: d.in_ms(),
                out_ms: d.out_ms(),
                revision: d.revision(),
                slots: d
                    .slots()
                    .map(|v| {
                        v.iter()
                            .map(|s| DaySlotResultMsg {
                                slot: s.slot().to_owned(),
                                status: s.status().to_owned(),
                                late_min: s.late_min(),
                                early_min: s.early_min(),
                                in_ms: s.in_ms(),
                                out_ms: s.out_ms(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
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

    #[test]
    fn hr_records_round_trip() {
        let bodies = [
            HrMsg::Decision(ApprovalDecisionMsg {
                target_record_id: [7; 16],
                decision_id: "d-1".into(),
                approve: true,
                decider: Some("ops-lead".into()),
                role: Some("supervisor".into()),
                comment: Some("client site".into()),
                employee_id: Some("E1".into()),
                department: Some("ops".into()),
            }),
            HrMsg::Correction(CorrectionMsg {
                correction_id: "c-1".into(),
                employee_id: "E1".into(),
                date: "2025-03-04".into(),
                slot: Some("day".into()),
                kind: PunchKind::Out,
                at_ms: 1_741_082_400_000,
                reason: Some("phone died".into()),
                evidence_ref: None,
                requested_by: Some("e1".into()),
                department: None,
                evidence_due_ms: 1_741_096_800_000,
            }),
            HrMsg::CorrectionDecision(CorrectionDecisionMsg {
                correction_id: "c-1".into(),
                decision_id: "cd-1".into(),
                approve: false,
                decider: None,
                role: None,
                comment: None,
                employee_id: Some("E1".into()),
                kind: PunchKind::Out,
                at_ms: 5,
                slot: Some("day".into()),
            }),
            HrMsg::Leave(LeaveEntryMsg {
                source_id: "hr-9".into(),
                employee_id: "E1".into(),
                from_date: "2025-03-04".into(),
                to_date: "2025-03-06".into(),
                leave_type: "annual".into(),
                entered_by: None,
            }),
            HrMsg::MonthArchive(MonthArchiveMsg {
                month: "2025-03".into(),
                archived_by: Some("acme-admin".into()),
            }),
            HrMsg::CorrectionEvidence(CorrectionEvidenceMsg {
                correction_id: "c-1".into(),
                evidence_ref: "boarding-pass-MU5101".into(),
                attached_by: Some("e1".into()),
                employee_id: Some("E1".into()),
            }),
        ];
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        for body in bodies {
            let msg = RecordMsg {
                record_id: [9; 16],
                tenant: "acme".into(),
                gateway_time_ms: 1_741_000_000_000,
                node: None,
                body: RecordBodyMsg::Hr(body),
            };
            let bytes = msg.encode_into(&mut fbb).to_vec();
            let view = parse_record(&bytes).unwrap();
            assert!(matches!(view.body(), RecordBodyView::Hr(_)));
            assert_eq!(view.to_msg(), msg);
            assert_eq!(view.attendance(), None, "no punch fields on an HR record");
        }
    }

    #[test]
    fn day_results_round_trip_with_their_slots() {
        let msg = RecordMsg {
            record_id: [7; 16],
            tenant: "acme".into(),
            gateway_time_ms: 1_741_000_000_000,
            node: Some("edge-1".into()),
            body: RecordBodyMsg::DayResult(DayResultMsg {
                employee_id: "E1".into(),
                date: "2025-03-05".into(),
                department: Some("ops".into()),
                group: Some("office".into()),
                status: "late".into(),
                late_min: 12,
                early_min: 0,
                worked_min: 528,
                overtime_min: 0,
                in_ms: 1_741_165_920_000,
                out_ms: 1_741_197_600_000,
                revision: 2,
                slots: vec![DaySlotResultMsg {
                    slot: "day".into(),
                    status: "late".into(),
                    late_min: 12,
                    early_min: 0,
                    in_ms: 1_741_165_920_000,
                    out_ms: 1_741_197_600_000,
                }],
            }),
        };
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let bytes = msg.encode_into(&mut fbb).to_vec();
        let view = parse_record(&bytes).unwrap();
        assert!(matches!(view.body(), RecordBodyView::DayResult(_)));
        assert_eq!(view.to_msg(), msg);
    }
}
