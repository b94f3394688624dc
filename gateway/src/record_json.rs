//! The one JSON form of a downstream record, used by `fencegate log tail
//! --json`, the JSON-lines, webhook and NATS (`encoding = "json"`) sinks,
//! `GET /v1/records` and `fencegate export --format json`. Field names follow
//! `schema/fbs/record.fbs` in snake case; ids are UUID-formatted hex. Every
//! punch carries `attendance_time_ms` and `terminal_auth`, as
//! docs/ATTENDANCE.md promises.

use fencegate_schema::{HrView, RecordBodyView, RecordView};
use serde_json::{Value, json};

/// Formats a 16-byte id as a UUID string (8-4-4-4-12 lower-case hex).
pub fn uuid(id: &[u8; 16]) -> String {
    // Written byte by byte into one allocation: a rebuild formats 6 M of
    // these, and hex-encoding then `format!` was two allocations and a
    // char-by-char collect each.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, b) in id.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0x0f)];
        at += 2;
    }
    // Hex digits and dashes: ASCII.
    String::from_utf8_lossy(&out).into_owned()
}

fn snake(name: Option<&str>) -> String {
    let name = name.unwrap_or("unknown");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The time the rules judged a punch by, unix ms: its recorded
/// `attendance_time_ms`, or the gateway time for records written before that
/// field existed (it reads as 0 there).
pub fn attendance_time_ms(r: &RecordView<'_>) -> i64 {
    match r.attendance() {
        Some(a) if a.attendance_time_ms != 0 => a.attendance_time_ms,
        _ => r.gateway_time_ms(),
    }
}

/// The record as a JSON object.
pub fn record_json(r: &RecordView<'_>) -> Value {
    let mut v = json!({
        "record_id": uuid(&r.record_id()),
        "tenant": r.tenant(),
        "gateway_time_ms": r.gateway_time_ms(),
        "node": r.node(),
    });
    let obj = v.as_object_mut().expect("an object");
    match r.body() {
        RecordBodyView::Punch(p) => {
            obj.insert("type".into(), "punch".into());
            obj.insert("punch_id".into(), uuid(&p.punch_id().0).into());
            obj.insert("employee_id".into(), p.employee_id().into());
            obj.insert("device_id".into(), p.device_id().into());
            obj.insert("kind".into(), snake(p.kind().variant_name()).into());
            obj.insert("method".into(), snake(p.method().variant_name()).into());
            obj.insert("device_time_ms".into(), p.device_time_ms().into());
            obj.insert("attendance_time_ms".into(), attendance_time_ms(r).into());
            obj.insert(
                "terminal_auth".into(),
                snake(p.terminal_auth().variant_name()).into(),
            );
            if let Some(pos) = p.position() {
                obj.insert("lat".into(), pos.lat().into());
                obj.insert("lon".into(), pos.lon().into());
                obj.insert("accuracy_m".into(), pos.accuracy_m().into());
            }
            obj.insert("verdict".into(), snake(p.verdict().variant_name()).into());
            obj.insert("reason".into(), snake(p.reason().variant_name()).into());
            let fences: Vec<&str> = p
                .fence_ids()
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            obj.insert("fence_ids".into(), fences.into());
            obj.insert("nearest_fence_id".into(), p.nearest_fence_id().into());
            obj.insert("distance_m".into(), p.distance_m().into());
            obj.insert("offline".into(), p.offline().into());
            obj.insert("mock_location".into(), p.mock_location().into());
            obj.insert("status".into(), snake(p.status().variant_name()).into());
            obj.insert("anomaly_flags".into(), p.anomaly_flags().into());
            obj.insert("slot".into(), p.slot().into());
            obj.insert(
                "merged_into".into(),
                p.merged_into().map(|u| uuid(&u.0)).into(),
            );
            // The attendance fields: downstream approval routing reads
            // department and supervisor from every encoding, JSON included.
            if let Some(a) = r.attendance() {
                obj.insert("site".into(), a.site.into());
                obj.insert("department".into(), a.department.into());
                obj.insert("supervisor".into(), a.supervisor.into());
                obj.insert("group".into(), a.group.into());
                obj.insert("needs_approval".into(), a.needs_approval.into());
                obj.insert("paired_with".into(), a.paired_with.map(|u| uuid(&u)).into());
            }
        }
        RecordBodyView::Ping(p) => {
            obj.insert("type".into(), "ping".into());
            obj.insert("device_id".into(), p.device_id().into());
            obj.insert("time_ms".into(), p.time_ms().into());
            obj.insert("lat".into(), p.lat().into());
            obj.insert("lon".into(), p.lon().into());
            obj.insert("accuracy_m".into(), p.accuracy_m().into());
            obj.insert("h3_cell".into(), format!("{:x}", p.h3_cell()).into());
            let fences: Vec<&str> = p
                .fence_ids()
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            obj.insert("fence_ids".into(), fences.into());
            obj.insert("heartbeat".into(), p.heartbeat().into());
            obj.insert("late".into(), p.late().into());
        }
        RecordBodyView::FenceEvent(e) => {
            obj.insert("type".into(), "event".into());
            obj.insert("device_id".into(), e.device_id().into());
            obj.insert("fence_id".into(), e.fence_id().into());
            obj.insert(
                "transition".into(),
                snake(e.transition().variant_name()).into(),
            );
            obj.insert("time_ms".into(), e.time_ms().into());
            obj.insert("lat".into(), e.lat().into());
            obj.insert("lon".into(), e.lon().into());
        }
        RecordBodyView::Hr(h) => hr_json(h, obj),
        RecordBodyView::DayResult(d) => {
            // docs/ATTENDANCE.md, "Day results downstream". Times of 0 are
            // "none" in the record and null here, as in `/v1/days`.
            let ms = |v: i64| (v != 0).then_some(v);
            obj.insert("type".into(), "day_result".into());
            obj.insert("employee_id".into(), d.employee_id().into());
            obj.insert("date".into(), d.date().into());
            obj.insert("department".into(), d.department().into());
            obj.insert("group".into(), d.group().into());
            obj.insert("status".into(), d.status().into());
            obj.insert("late_min".into(), d.late_min().into());
            obj.insert("early_min".into(), d.early_min().into());
            obj.insert("worked_min".into(), d.worked_min().into());
            obj.insert("overtime_min".into(), d.overtime_min().into());
            obj.insert("in_ms".into(), ms(d.in_ms()).into());
            obj.insert("out_ms".into(), ms(d.out_ms()).into());
            obj.insert("revision".into(), d.revision().into());
            let slots: Vec<Value> = d
                .slots()
                .map(|v| {
                    v.iter()
                        .map(|s| {
                            json!({
                                "slot": s.slot(),
                                "status": s.status(),
                                "late_min": s.late_min(),
                                "early_min": s.early_min(),
                                "in_ms": ms(s.in_ms()),
                                "out_ms": ms(s.out_ms()),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            obj.insert("slots".into(), slots.into());
        }
    }
    v
}

/// The fields of an HR record (docs/ATTENDANCE.md, "HR records"); `type`
/// tells them apart downstream.
fn hr_json(h: HrView<'_>, obj: &mut serde_json::Map<String, Value>) {
    match h {
        HrView::Decision(d) => {
            obj.insert("type".into(), "approval_decision".into());
            obj.insert(
                "target_record_id".into(),
                uuid(&d.target_record_id().0).into(),
            );
            obj.insert("decision_id".into(), d.decision_id().into());
            obj.insert(
                "decision".into(),
                if d.approve() { "approve" } else { "reject" }.into(),
            );
            obj.insert("decider".into(), d.decider().into());
            obj.insert("role".into(), d.role().into());
            obj.insert("comment".into(), d.comment().into());
            obj.insert("employee_id".into(), d.employee_id().into());
            obj.insert("department".into(), d.department().into());
        }
        HrView::Correction(c) => {
            obj.insert("type".into(), "correction".into());
            obj.insert("correction_id".into(), c.correction_id().into());
            obj.insert("employee_id".into(), c.employee_id().into());
            obj.insert("date".into(), c.date().into());
            obj.insert("slot".into(), c.slot().into());
            obj.insert("kind".into(), snake(c.kind().variant_name()).into());
            obj.insert("at_ms".into(), c.at_ms().into());
            obj.insert("reason".into(), c.reason().into());
            obj.insert("evidence_ref".into(), c.evidence_ref().into());
            obj.insert("requested_by".into(), c.requested_by().into());
            obj.insert("department".into(), c.department().into());
            obj.insert("evidence_due_ms".into(), c.evidence_due_ms().into());
        }
        HrView::CorrectionDecision(d) => {
            obj.insert("type".into(), "correction_decision".into());
            obj.insert("correction_id".into(), d.correction_id().into());
            obj.insert("decision_id".into(), d.decision_id().into());
            obj.insert(
                "decision".into(),
                if d.approve() { "approve" } else { "reject" }.into(),
            );
            obj.insert("decider".into(), d.decider().into());
            obj.insert("role".into(), d.role().into());
            obj.insert("comment".into(), d.comment().into());
            obj.insert("employee_id".into(), d.employee_id().into());
            obj.insert("kind".into(), snake(d.kind().variant_name()).into());
            obj.insert("at_ms".into(), d.at_ms().into());
            obj.insert("slot".into(), d.slot().into());
        }
        HrView::Leave(l) => {
            obj.insert("type".into(), "leave".into());
            obj.insert("source_id".into(), l.source_id().into());
            obj.insert("employee_id".into(), l.employee_id().into());
            obj.insert("from".into(), l.from_date().into());
            obj.insert("to".into(), l.to_date().into());
            obj.insert("leave_type".into(), l.leave_type().into());
            obj.insert("entered_by".into(), l.entered_by().into());
        }
        HrView::MonthArchive(m) => {
            obj.insert("type".into(), "month_archive".into());
            obj.insert("month".into(), m.month().into());
            obj.insert("archived_by".into(), m.archived_by().into());
        }
        HrView::CorrectionEvidence(e) => {
            obj.insert("type".into(), "correction_evidence".into());
            obj.insert("correction_id".into(), e.correction_id().into());
            obj.insert("evidence_ref".into(), e.evidence_ref().into());
            obj.insert("attached_by".into(), e.attached_by().into());
            obj.insert("employee_id".into(), e.employee_id().into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_format() {
        let id: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(uuid(&id), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        let id: [u8; 16] = std::array::from_fn(|i| 0xff - 17 * i as u8);
        assert_eq!(uuid(&id), "ffeeddcc-bbaa-9988-7766-554433221100");
    }

    #[test]
    fn snake_case_of_enum_names() {
        assert_eq!(snake(Some("RepeatMerged")), "repeat_merged");
        assert_eq!(
            snake(Some("OutOfRangePendingApproval")),
            "out_of_range_pending_approval"
        );
        assert_eq!(snake(Some("In")), "in");
        assert_eq!(snake(None), "unknown");
    }
}
