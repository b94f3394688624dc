//! Builders: owned messages for clients, tests and the load harness, and
//! borrowed ones for the gateway's hot path.
//!
//! Every `encode_into` resets the builder it is handed, writes one finished
//! buffer with the root's file identifier and returns it; reusing one
//! builder per task keeps encoding allocation-free once the builder has
//! grown to its working size. The borrowed `*Ref` forms take `&str` (and
//! `&[S]` for fence id lists), so the gateway can encode a [`PunchAckRef`]
//! or a [`RecordRef`] without building owned strings.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

use crate::generated::{
    ApprovalDecision, ApprovalDecisionArgs, AttendanceStatus, Body, Bssid, Busy, BusyArgs,
    Correction, CorrectionArgs, CorrectionDecision, CorrectionDecisionArgs, CorrectionEvidence,
    CorrectionEvidenceArgs, DayResult, DayResultArgs, DaySlotResult, DaySlotResultArgs, FenceEvent,
    FenceEventArgs, Fix, Frame, FrameArgs, Hello, HelloAck, HelloAckArgs, HelloArgs, LeaveEntry,
    LeaveEntryArgs, MonthArchive, MonthArchiveArgs, PingBatch, PingBatchArgs, PingRecord,
    PingRecordArgs, Position, Punch, PunchAck, PunchAckArgs, PunchArgs, PunchKind, PunchMethod,
    PunchRecord, PunchRecordArgs, Reason, Record, RecordArgs, RecordBody, Reply, ReplyArgs,
    ReplyBody, TerminalAuth, Transition, Uuid, Verdict, finish_frame_buffer, finish_record_buffer,
    finish_reply_buffer,
};
use crate::parse::{HelloView, PingBatchView, PunchView, Request};

/// `Hello`: authenticates a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloMsg {
    /// Credential from `fencegate token issue`.
    pub token: String,
    /// Stable device id.
    pub device_id: String,
    /// App name and version.
    pub client: Option<String>,
}

/// `Punch`: one clock-in or clock-out.
#[derive(Debug, Clone, PartialEq)]
pub struct PunchMsg {
    /// Random, non-zero; reuse it when resending the same punch.
    pub punch_id: [u8; 16],
    /// Employee within the tenant.
    pub employee_id: String,
    /// In or out.
    pub kind: PunchKind,
    /// How the punch was made.
    pub method: PunchMethod,
    /// Device clock at the punch, unix ms.
    pub device_time_ms: i64,
    /// Required for `Gps`.
    pub position: Option<Position>,
    /// BSSIDs seen; required for `Wifi`. Empty encodes as absent.
    pub bssids: Vec<[u8; 6]>,
    /// Network name, informational.
    pub ssid: Option<String>,
    /// Scanned QR payload; required for `Qr`.
    pub qr_payload: Option<String>,
    /// How a terminal identified the employee.
    pub terminal_auth: TerminalAuth,
    /// Taken offline, uploaded later.
    pub offline: bool,
    /// The OS reported a mock location provider.
    pub mock_location: bool,
}

/// `PingBatch`: positions from one device.
#[derive(Debug, Clone, PartialEq)]
pub struct PingBatchMsg {
    /// Per-device batch number, 0 if unnumbered.
    pub device_seq: u64,
    /// Unix ms that each fix's `offset_ms` is added to.
    pub base_time_ms: i64,
    /// The fixes, in wire form (`Fix::new(lat_e7, lon_e7, offset_ms,
    /// accuracy_dm, flags)`).
    pub fixes: Vec<Fix>,
}

/// Any device-to-gateway frame, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameMsg {
    /// See [`HelloMsg`].
    Hello(HelloMsg),
    /// See [`PunchMsg`].
    Punch(PunchMsg),
    /// See [`PingBatchMsg`].
    PingBatch(PingBatchMsg),
}

fn opt_str<'f>(fbb: &mut FlatBufferBuilder<'f>, s: Option<&str>) -> Option<WIPOffset<&'f str>> {
    s.map(|s| fbb.create_string(s))
}

/// How many string offsets [`create_strings`] keeps on the stack; a longer
/// list (a point inside more than this many fences) allocates once.
const INLINE_STRINGS: usize = 16;

type StringVector<'f> = WIPOffset<Vector<'f, ForwardsUOffset<&'f str>>>;

fn create_strings<'f, S: AsRef<str>>(
    fbb: &mut FlatBufferBuilder<'f>,
    items: &[S],
) -> Option<StringVector<'f>> {
    if items.is_empty() {
        return None;
    }
    if items.len() <= INLINE_STRINGS {
        let mut offsets = [WIPOffset::new(0); INLINE_STRINGS];
        for (slot, s) in offsets.iter_mut().zip(items) {
            *slot = fbb.create_string(s.as_ref());
        }
        Some(fbb.create_vector(&offsets[..items.len()]))
    } else {
        let offsets: Vec<_> = items
            .iter()
            .map(|s| fbb.create_string(s.as_ref()))
            .collect();
        Some(fbb.create_vector(&offsets))
    }
}

fn finish_frame<'f>(
    fbb: &'f mut FlatBufferBuilder<'_>,
    body_type: Body,
    body: WIPOffset<flatbuffers::UnionWIPOffset>,
) -> &'f [u8] {
    let frame = Frame::create(
        fbb,
        &FrameArgs {
            body_type,
            body: Some(body),
        },
    );
    finish_frame_buffer(fbb, frame);
    fbb.finished_data()
}

impl HelloMsg {
    /// Encodes this as a complete `Frame` buffer (identifier `FGD1`).
    pub fn encode_into<'f>(&self, fbb: &'f mut FlatBufferBuilder<'_>) -> &'f [u8] {
        fbb.reset();
        let token = fbb.create_string(&self.token);
        let device_id = fbb.create_string(&self.device_id);
        let client = opt_str(fbb, self.client.as_deref());
        let hello = Hello::create(
            fbb,
            &HelloArgs {
                token: Some(token),
                device_id: Some(device_id),
                client,
            },
        );
        finish_frame(fbb, Body::Hello, hello.as_union_value())
    }
}

impl PunchMsg {
    /// Encodes this as a complete `Frame` buffer (identifier `FGD1`).
    pub fn encode_into<'f>(&self, fbb: &'f mut FlatBufferBuilder<'_>) -> &'f [u8] {
        fbb.reset();
        let employee_id = fbb.create_string(&self.employee_id);
        let bssids = (!self.bssids.is_empty())
            .then(|| fbb.create_vector_from_iter(self.bssids.iter().map(|b| Bssid(*b))));
        let ssid = opt_str(fbb, self.ssid.as_deref());
        let qr_payload = opt_str(fbb, self.qr_payload.as_deref());
        let punch_id = Uuid(self.punch_id);
        let punch = Punch::create(
            fbb,
            &PunchArgs {
                punch_id: Some(&punch_id),
                employee_id: Some(employee_id),
                kind: self.kind,
                method: self.method,
                device_time_ms: self.device_time_ms,
                position: self.position.as_ref(),
                bssids,
                ssid,
                qr_payload,
                terminal_auth: self.terminal_auth,
                offline: self.offline,
                mock_location: self.mock_location,
            },
        );
        finish_frame(fbb, Body::Punch, punch.as_union_value())
    }
}

impl PingBatchMsg {
    /// Encodes this as a complete `Frame` buffer (identifier `FGD1`).
    pub fn encode_into<'f>(&self, fbb: &'f mut FlatBufferBuilder<'_>) -> &'f [u8] {
        fbb.reset();
        let fixes = fbb.create_vector(&self.fixes);
        let batch = PingBatch::create(
            fbb,
            &PingBatchArgs {
                device_seq: self.device_seq,
                base_time_ms: self.base_time_ms,
                fixes: Some(fixes),
            },
        );
        finish_frame(fbb, Body::PingBatch, batch.as_union_value())
    }
}

impl FrameMsg {
    /// Encodes this as a complete `Frame` buffer (identifier `FGD1`).
    pub fn encode_into<'f>(&self, fbb: &'f mut FlatBufferBuilder<'_>) -> &'f [u8] {
        match self {
            FrameMsg::Hello(m) => m.encode_into(fbb),
            FrameMsg::Punch(m) => m.encode_into(fbb),
            FrameMsg::PingBatch(m) => m.encode_into(fbb),
        }
    }
}

impl HelloView<'_> {
    /// Copies the verified frame into an owned message.
    #[must_use]
    pub fn to_msg(&self) -> HelloMsg {
        HelloMsg {
            token: self.token().to_owned(),
            device_id: self.device_id().to_owned(),
            client: self.client().map(str::to_owned),
        }
    }
}

impl PunchView<'_> {
    /// Copies the verified frame into an owned message.
    #[must_use]
    pub fn to_msg(&self) -> PunchMsg {
        let raw = self.raw();
        PunchMsg {
            punch_id: self.punch_id(),
            employee_id: self.employee_id().to_owned(),
            kind: self.kind(),
            method: self.method(),
            device_time_ms: self.device_time_ms(),
            position: raw.position().copied(),
            bssids: self.bssids().collect(),
            ssid: self.ssid().map(str::to_owned),
            qr_payload: self.qr_payload().map(str::to_owned),
            terminal_auth: self.terminal_auth(),
            offline: self.offline(),
            mock_location: self.mock_location(),
        }
    }
}

impl PingBatchView<'_> {
    /// Copies the verified frame into an owned message.
    #[must_use]
    pub fn to_msg(&self) -> PingBatchMsg {
        PingBatchMsg {
            device_seq: self.device_seq(),
            base_time_ms: self.base_time_ms(),
            fixes: self.raw_fixes().iter().copied().collect(),
        }
    }
}

impl Request<'_> {
    /// Copies the verified frame into an owned message.
    #[must_use]
    pub fn to_msg(&self) -> FrameMsg {
        match self {
            Request::Hello(v) => FrameMsg::Hello(v.to_msg()),
            Request::Punch(v) => FrameMsg::Punch(v.to_msg()),
            Request::PingBatch(v) => FrameMsg::PingBatch(v.to_msg()),
        }
    }
}

// ---------------------------------------------------------------- replies

/// `HelloAck`: the connection is authenticated.
#[derive(Debug, Clone, PartialEq)]
pub struct HelloAckMsg {
    /// Gateway clock, unix ms.
    pub server_time_ms: i64,
    /// Most fixes per datagram ping batch.
    pub max_batch_fixes: u32,
    /// Largest punch frame, bytes.
    pub max_frame_bytes: u32,
    /// Repeat-merge window, seconds.
    pub repeat_window_s: u32,
    /// The tenant's GPS accuracy cap, metres (a worse fix is refused as
    /// `AccuracyTooLow`); 0 = no cap.
    pub max_accuracy_m: f32,
}

/// `PunchAck`, owned. Encode on the hot path with [`PunchAckRef`].
#[derive(Debug, Clone, PartialEq)]
pub struct PunchAckMsg {
    /// The punch answered; `None` when the frame could not be read.
    pub punch_id: Option<[u8; 16]>,
    /// The durable record; `None` when nothing was recorded.
    pub record_id: Option<[u8; 16]>,
    /// The decision.
    pub verdict: Verdict,
    /// Why, for anything but a plain accept.
    pub reason: Reason,
    /// A fence containing the position.
    pub fence_id: Option<String>,
    /// The nearest fence.
    pub nearest_fence_id: Option<String>,
    /// Metres to the nearest fence's edge, 0 inside.
    pub distance_m: f32,
    /// Gateway clock, unix ms.
    pub server_time_ms: i64,
}

/// `PunchAck`, borrowed: what the gateway encodes per punch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PunchAckRef<'a> {
    /// See [`PunchAckMsg::punch_id`].
    pub punch_id: Option<[u8; 16]>,
    /// See [`PunchAckMsg::record_id`].
    pub record_id: Option<[u8; 16]>,
    /// See [`PunchAckMsg::verdict`].
    pub verdict: Verdict,
    /// See [`PunchAckMsg::reason`].
    pub reason: Reason,
    /// See [`PunchAckMsg::fence_id`].
    pub fence_id: Option<&'a str>,
    /// See [`PunchAckMsg::nearest_fence_id`].
    pub nearest_fence_id: Option<&'a str>,
    /// See [`PunchAckMsg::distance_m`].
    pub distance_m: f32,
    /// See [`PunchAckMsg::server_time_ms`].
    pub server_time_ms: i64,
}

/// `Busy`: not processed; resend the same request after `retry_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyMsg {
    /// Milliseconds to wait before resending (add jitter).
    pub retry_after_ms: u32,
    /// `Overloaded`, `LogFull`, `ShuttingDown`, `InternalError` or `RateLimited`.
    pub reason: Reason,
}

/// Any gateway-to-device reply, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyMsg {
    /// See [`HelloAckMsg`].
    HelloAck(HelloAckMsg),
    /// See [`PunchAckMsg`].
    PunchAck(PunchAckMsg),
    /// See [`BusyMsg`].
    Busy(BusyMsg),
}

fn finish_reply<'f>(
    fbb: &'f mut FlatBufferBuilder<'_>,
    body_type: ReplyBody,
    body: WIPOffset<flatbuffers::UnionWIPOffset>,
) -> &'f [u8] {
    let reply = Reply::create(
        fbb,
        &ReplyArgs {
            body_type,
            body: Some(body),
        },
    );
    finish_reply_buffer(fbb, reply);
    fbb.finished_data()
}

impl HelloAckMsg {
    /// Encodes this as a complete `Reply` buffer (identifier `FGR1`).
    pub fn encode_into<'f>(&self, fbb: &'f mut FlatBufferBuilder<'_>) -> &'f [u8] {
        fbb.reset();
        let ack = HelloAck::create(
            fbb,
            &HelloAckArgs {
                server_time_ms: self.server_time_ms,
                max_batch_fixes: self.max_batch_fixes,
                max_frame_bytes: self.max_frame_bytes,
                repeat_window_s: self.repeat_window_s,
                max_accuracy_m: self.max_accuracy_m,
            },
        );
        finish_reply(fbb, ReplyBody::HelloAck, ack.as_union_value())
    }
}

impl PunchAckRef<'_> {
    /// Encodes this as a complete `Reply` buffer (identifier `FGR1`);
    /// allocates nothing beyond the builder's own buffer.
    pub fn encode_into<'f>(&self, fbb: &'f mut FlatBufferBuilder<'_>) -> &'f [u8] {
        fbb.reset();
        let fence_id = opt_str(fbb, self.fence_id);
        let nearest_fence_id = opt_str(fbb, self.nearest_fence_id);
        let punch_id = self.punch_id.map(Uuid);
        let record_id = self.record_id.map(Uuid);
        let ack = PunchAck::create(
            fbb,
            &PunchAckArgs {
                punch_id: punch_id.as_ref(),
                record_id: record_id.as_ref(),
                verdict: self.verdict,
                reason: self.reason,
                fence_id,
                nearest_fence_id,
                distance_m: self.distance_m,
                server_time_ms: self.server_time_ms,
            },
        );
        finish_reply(fbb, ReplyBody::PunchAck, ack.as_union_value())
    }
}

impl PunchAckMsg {
    /// This message as its borrowed form.
    #[must_use]
    pub fn borrowed(&self) -> PunchAckRef<'_> {
        PunchAckRef {
            punch_id: self.punch_id,
            record_id: self.record_id,
            verdict: self.verdict,
            reason: self.reason,
            fence_id: self.fence_id.as_deref(),
            nearest_fence_id: self.nearest_fence_id.as_deref(),
            distance_m: self.distance_m,
            server_time_ms: self.server_time_ms,
        }
    }

    /// Encodes this as a complete `Reply` buffer (identifier `FGR1`).
    pub fn encode_into<'f>(&self, fbb: &'f mut FlatBufferBuilder<'_>) -> &'f [u8] {
        self.borrowed().encode_into(fbb)
    }
}

impl BusyMsg {
    /// Encodes this as a complete `Reply` buffer (identifier `FGR1`).
    pub fn encode_into<'f>(&self, fbb: &'f mut FlatBufferBuilder<'_>) -> &'f [u8] {
        fbb.reset();
        let busy = Busy::create(
            fbb,
            &BusyArgs {
                retry_after_ms: self.retry_after_ms,
                reason: self.reason,
            },
        );
        finish_reply(fbb, ReplyBody::Busy, busy.as_union_value())
    }
}

impl ReplyMsg {
    /// Encodes this as a complete `Reply` buffer (identifier `FGR1`).
    pub fn encode_into<'f>(&self, fbb: &'f mut FlatBufferBuilder<'_>) -> &'f [u8] {
        match self {
            ReplyMsg::HelloAck(m) => m.encode_into(fbb),
            ReplyMsg::PunchAck(m) => m.encode_into(fbb),
            ReplyMsg::Busy(m) => m.encode_into(fbb),
        }
    }
}

// ---------------------------------------------------------------- records

/// A downstream `Record`, owned. Encode on the hot path with [`RecordRef`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecordMsg {
    /// Deterministic record id (downstream dedup key).
    pub record_id: [u8; 16],
    /// Tenant the record belongs to.
    pub tenant: String,
    /// Gateway clock when the record was made, unix ms.
    pub gateway_time_ms: i64,
    /// Gateway node that made it.
    pub node: Option<String>,
    /// What happened.
    pub body: RecordBodyMsg,
}

/// The body of a [`RecordMsg`].
#[derive(Debug, Clone, PartialEq)]
pub enum RecordBodyMsg {
    /// See [`PunchRecordMsg`].
    Punch(PunchRecordMsg),
    /// See [`PingRecordMsg`].
    Ping(PingRecordMsg),
    /// See [`FenceEventMsg`].
    FenceEvent(FenceEventMsg),
    /// See [`HrMsg`].
    Hr(HrMsg),
    /// See [`DayResultMsg`].
    DayResult(DayResultMsg),
}

/// An employee's day result, closed or changed after closing, as the
/// results materializer sends it downstream (docs/ATTENDANCE.md, "Day
/// results downstream"). Rare next to punches, so owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayResultMsg {
    /// Employee within the tenant.
    pub employee_id: String,
    /// `YYYY-MM-DD` in the tenant's zone.
    pub date: String,
    /// Department, if the rules or the punch name one.
    pub department: Option<String>,
    /// Attendance group.
    pub group: Option<String>,
    /// Status of the day.
    pub status: String,
    /// Minutes late.
    pub late_min: i64,
    /// Minutes left early.
    pub early_min: i64,
    /// Minutes worked.
    pub worked_min: i64,
    /// Minutes of overtime.
    pub overtime_min: i64,
    /// First clock-in counted, unix ms (0: none).
    pub in_ms: i64,
    /// Last clock-out counted, unix ms (0: none).
    pub out_ms: i64,
    /// Changes after the day was first written.
    pub revision: i64,
    /// The day's slots, in schedule order.
    pub slots: Vec<DaySlotResultMsg>,
}

/// One slot of a [`DayResultMsg`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaySlotResultMsg {
    /// Slot name.
    pub slot: String,
    /// Status of the slot.
    pub status: String,
    /// Minutes late.
    pub late_min: i64,
    /// Minutes left early.
    pub early_min: i64,
    /// Clock-in counted, unix ms (0: none).
    pub in_ms: i64,
    /// Clock-out counted, unix ms (0: none).
    pub out_ms: i64,
}

impl DayResultMsg {
    /// Writes the body table and returns its union type and offset.
    fn create<'f>(
        &self,
        fbb: &mut FlatBufferBuilder<'f>,
    ) -> (RecordBody, WIPOffset<flatbuffers::UnionWIPOffset>) {
        let slots: Vec<_> = self
            .slots
            .iter()
            .map(|s| {
                let slot = fbb.create_string(&s.slot);
                let status = fbb.create_string(&s.status);
                DaySlotResult::create(
                    fbb,
                    &DaySlotResultArgs {
                        slot: Some(slot),
                        status: Some(status),
                        late_min: s.late_min,
                        early_min: s.early_min,
                        in_ms: s.in_ms,
                        out_ms: s.out_ms,
                    },
                )
            })
            .collect();
        let slots = fbb.create_vector(&slots);
        let employee_id = fbb.create_string(&self.employee_id);
        let date = fbb.create_string(&self.date);
        let department = opt_str(fbb, self.department.as_deref());
        let group = opt_str(fbb, self.group.as_deref());
        let status = fbb.create_string(&self.status);
        let t = DayResult::create(
            fbb,
            &DayResultArgs {
                employee_id: Some(employee_id),
                date: Some(date),
                department,
                group,
                status: Some(status),
                late_min: self.late_min,
                early_min: self.early_min,
                worked_min: self.worked_min,
                overtime_min: self.overtime_min,
                in_ms: self.in_ms,
                out_ms: self.out_ms,
                revision: self.revision,
                slots: Some(slots),
            },
        );
        (RecordBody::DayResult, t.as_union_value())
    }
}

/// An HR record: what an HR user or system decided, appended to the log
/// before it is answered so the attendance results can be rebuilt from the
/// log alone (docs/ATTENDANCE.md). Rare, so owned even on the encode path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HrMsg {
    /// See [`ApprovalDecisionMsg`].
    Decision(ApprovalDecisionMsg),
    /// See [`CorrectionMsg`].
    Correction(CorrectionMsg),
    /// See [`CorrectionDecisionMsg`].
    CorrectionDecision(CorrectionDecisionMsg),
    /// See [`LeaveEntryMsg`].
    Leave(LeaveEntryMsg),
    /// See [`MonthArchiveMsg`].
    MonthArchive(MonthArchiveMsg),
    /// See [`CorrectionEvidenceMsg`].
    CorrectionEvidence(CorrectionEvidenceMsg),
}

/// A decision on a punch record waiting for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalDecisionMsg {
    /// The punch record decided.
    pub target_record_id: [u8; 16],
    /// Client-supplied idempotency key.
    pub decision_id: String,
    /// Approved, or rejected.
    pub approve: bool,
    /// Admin token name of the decider.
    pub decider: Option<String>,
    /// The decider's role name.
    pub role: Option<String>,
    /// Free-text comment.
    pub comment: Option<String>,
    /// The punch's employee.
    pub employee_id: Option<String>,
    /// The punch's department.
    pub department: Option<String>,
}

/// A make-up punch request (补卡).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrectionMsg {
    /// Client-supplied request id.
    pub correction_id: String,
    /// Employee the make-up is for.
    pub employee_id: String,
    /// The day, `YYYY-MM-DD`.
    pub date: String,
    /// Slot name.
    pub slot: Option<String>,
    /// Clock-in or clock-out.
    pub kind: PunchKind,
    /// The time the make-up punch stands for, unix ms.
    pub at_ms: i64,
    /// Why the punch is missing.
    pub reason: Option<String>,
    /// Evidence reference.
    pub evidence_ref: Option<String>,
    /// Admin token name that filed it.
    pub requested_by: Option<String>,
    /// The employee's department.
    pub department: Option<String>,
    /// When the request lapses for want of evidence, unix ms (0 = none owed).
    pub evidence_due_ms: i64,
}

/// A decision on a make-up request; approved, it is the make-up punch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrectionDecisionMsg {
    /// The request decided.
    pub correction_id: String,
    /// Client-supplied idempotency key.
    pub decision_id: String,
    /// Approved, or rejected.
    pub approve: bool,
    /// Admin token name of the decider.
    pub decider: Option<String>,
    /// The decider's role name.
    pub role: Option<String>,
    /// Free-text comment.
    pub comment: Option<String>,
    /// The request's employee.
    pub employee_id: Option<String>,
    /// The make-up punch's kind.
    pub kind: PunchKind,
    /// The make-up punch's time, unix ms.
    pub at_ms: i64,
    /// The slot it makes up.
    pub slot: Option<String>,
}

/// Approved leave or a business trip, whole days inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveEntryMsg {
    /// The HR system's id (idempotency key).
    pub source_id: String,
    /// Employee on leave.
    pub employee_id: String,
    /// First day, `YYYY-MM-DD`.
    pub from_date: String,
    /// Last day, `YYYY-MM-DD`, inclusive.
    pub to_date: String,
    /// Leave type (`business_trip` for a trip).
    pub leave_type: String,
    /// Admin token name that pushed it.
    pub entered_by: Option<String>,
}

/// Evidence attached to a pending make-up request after it was filed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrectionEvidenceMsg {
    /// The request the evidence is for.
    pub correction_id: String,
    /// Reference to the evidence (a boarding pass's file id).
    pub evidence_ref: String,
    /// Admin token name that attached it.
    pub attached_by: Option<String>,
    /// The request's employee.
    pub employee_id: Option<String>,
}

/// A month frozen by its archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthArchiveMsg {
    /// `YYYY-MM`.
    pub month: String,
    /// Admin token name that archived it.
    pub archived_by: Option<String>,
}

/// A verified punch, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct PunchRecordMsg {
    /// The device's punch id.
    pub punch_id: [u8; 16],
    /// Employee within the tenant.
    pub employee_id: String,
    /// Device that sent the punch.
    pub device_id: String,
    /// In or out.
    pub kind: PunchKind,
    /// How the punch was made.
    pub method: PunchMethod,
    /// Device clock at the punch, unix ms.
    pub device_time_ms: i64,
    /// Position, if the punch carried one.
    pub position: Option<Position>,
    /// The gateway's decision.
    pub verdict: Verdict,
    /// Why, for anything but a plain accept.
    pub reason: Reason,
    /// Every fence containing the position.
    pub fence_ids: Vec<String>,
    /// Nearest fence.
    pub nearest_fence_id: Option<String>,
    /// Metres to the nearest fence's edge, 0 inside.
    pub distance_m: f32,
    /// Taken offline.
    pub offline: bool,
    /// Mock location reported.
    pub mock_location: bool,
    /// Attendance classification.
    pub status: AttendanceStatus,
    /// Bitset of [`anomaly`](crate::anomaly) flags.
    pub anomaly_flags: u64,
    /// Shift slot.
    pub slot: Option<String>,
    /// For repeats: the record merged into.
    pub merged_into: Option<[u8; 16]>,
}

/// A forwarded position, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct PingRecordMsg {
    /// Device the position came from.
    pub device_id: String,
    /// Fix time, unix ms.
    pub time_ms: i64,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Accuracy radius, metres.
    pub accuracy_m: f32,
    /// H3 cell index.
    pub h3_cell: u64,
    /// Every fence containing the position.
    pub fence_ids: Vec<String>,
    /// Sent because the heartbeat interval elapsed.
    pub heartbeat: bool,
    /// A fix at or before the device's newest (offline history uploaded
    /// later): recorded as history only, it never moved live state or
    /// emitted a fence event.
    pub late: bool,
}

/// A fence transition, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct FenceEventMsg {
    /// Device that crossed.
    pub device_id: String,
    /// Fence crossed.
    pub fence_id: String,
    /// Enter or exit, or `Inside` for a device's starting state.
    pub transition: Transition,
    /// Time of the fix that showed the crossing, unix ms.
    pub time_ms: i64,
    /// Latitude of that fix, degrees.
    pub lat: f64,
    /// Longitude of that fix, degrees.
    pub lon: f64,
}

/// A downstream `Record`, borrowed. `S` is whatever the caller keeps fence
/// ids in (`&str`, `String`, `Arc<str>`, ...).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordRef<'a, S: AsRef<str> = &'a str> {
    /// See [`RecordMsg::record_id`].
    pub record_id: [u8; 16],
    /// See [`RecordMsg::tenant`].
    pub tenant: &'a str,
    /// See [`RecordMsg::gateway_time_ms`].
    pub gateway_time_ms: i64,
    /// See [`RecordMsg::node`].
    pub node: Option<&'a str>,
    /// See [`RecordMsg::body`].
    pub body: RecordBodyRef<'a, S>,
}

/// The body of a [`RecordRef`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecordBodyRef<'a, S: AsRef<str> = &'a str> {
    /// See [`PunchRecordRef`].
    Punch(PunchRecordRef<'a, S>),
    /// See [`PingRecordRef`].
    Ping(PingRecordRef<'a, S>),
    /// See [`FenceEventRef`].
    FenceEvent(FenceEventRef<'a>),
    /// See [`HrMsg`] (HR records are rare; they have no borrowed form).
    Hr(&'a HrMsg),
    /// See [`DayResultMsg`] (no borrowed form either).
    DayResult(&'a DayResultMsg),
}

/// A verified punch, borrowed; fields as in [`PunchRecordMsg`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PunchRecordRef<'a, S: AsRef<str> = &'a str> {
    /// See [`PunchRecordMsg::punch_id`].
    pub punch_id: [u8; 16],
    /// See [`PunchRecordMsg::employee_id`].
    pub employee_id: &'a str,
    /// See [`PunchRecordMsg::device_id`].
    pub device_id: &'a str,
    /// See [`PunchRecordMsg::kind`].
    pub kind: PunchKind,
    /// See [`PunchRecordMsg::method`].
    pub method: PunchMethod,
    /// See [`PunchRecordMsg::device_time_ms`].
    pub device_time_ms: i64,
    /// See [`PunchRecordMsg::position`].
    pub position: Option<Position>,
    /// See [`PunchRecordMsg::verdict`].
    pub verdict: Verdict,
    /// See [`PunchRecordMsg::reason`].
    pub reason: Reason,
    /// See [`PunchRecordMsg::fence_ids`].
    pub fence_ids: &'a [S],
    /// See [`PunchRecordMsg::nearest_fence_id`].
    pub nearest_fence_id: Option<&'a str>,
    /// See [`PunchRecordMsg::distance_m`].
    pub distance_m: f32,
    /// See [`PunchRecordMsg::offline`].
    pub offline: bool,
    /// See [`PunchRecordMsg::mock_location`].
    pub mock_location: bool,
    /// See [`PunchRecordMsg::status`].
    pub status: AttendanceStatus,
    /// See [`PunchRecordMsg::anomaly_flags`].
    pub anomaly_flags: u64,
    /// See [`PunchRecordMsg::slot`].
    pub slot: Option<&'a str>,
    /// See [`PunchRecordMsg::merged_into`].
    pub merged_into: Option<[u8; 16]>,
}

/// A forwarded position, borrowed; fields as in [`PingRecordMsg`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingRecordRef<'a, S: AsRef<str> = &'a str> {
    /// See [`PingRecordMsg::device_id`].
    pub device_id: &'a str,
    /// See [`PingRecordMsg::time_ms`].
    pub time_ms: i64,
    /// See [`PingRecordMsg::lat`].
    pub lat: f64,
    /// See [`PingRecordMsg::lon`].
    pub lon: f64,
    /// See [`PingRecordMsg::accuracy_m`].
    pub accuracy_m: f32,
    /// See [`PingRecordMsg::h3_cell`].
    pub h3_cell: u64,
    /// See [`PingRecordMsg::fence_ids`].
    pub fence_ids: &'a [S],
    /// See [`PingRecordMsg::heartbeat`].
    pub heartbeat: bool,
    /// See [`PingRecordMsg::late`].
    pub late: bool,
}

/// A fence transition, borrowed; fields as in [`FenceEventMsg`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FenceEventRef<'a> {
    /// See [`FenceEventMsg::device_id`].
    pub device_id: &'a str,
    /// See [`FenceEventMsg::fence_id`].
    pub fence_id: &'a str,
    /// See [`FenceEventMsg::transition`].
    pub transition: Transition,
    /// See [`FenceEventMsg::time_ms`].
    pub time_ms: i64,
    /// See [`FenceEventMsg::lat`].
    pub lat: f64,
    /// See [`FenceEventMsg::lon`].
    pub lon: f64,
}

/// The attendance fields of a punch record that were appended to
/// `PunchRecord` after its first version (site, routing, dual verification,
/// the time the rules judged by, the group). Kept apart from
/// [`PunchRecordRef`] so code that builds records without them is unchanged;
/// encode them with [`RecordRef::encode_with_attendance`] and read them back
/// with [`RecordView::attendance`](crate::RecordView::attendance).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AttendanceRef<'a> {
    /// Site the punch was verified at.
    pub site: Option<&'a str>,
    /// The employee's department.
    pub department: Option<&'a str>,
    /// The employee's supervisor.
    pub supervisor: Option<&'a str>,
    /// The record waits for the supervisor's approval.
    pub needs_approval: bool,
    /// Dual verification: the first factor's record.
    pub paired_with: Option<[u8; 16]>,
    /// Time the rules judged the punch by, unix ms (0 when not recorded).
    pub attendance_time_ms: i64,
    /// Attendance group whose schedule judged the punch.
    pub group: Option<&'a str>,
    /// For terminal punches: how the terminal identified the employee.
    pub terminal_auth: TerminalAuth,
}

impl<S: AsRef<str>> RecordRef<'_, S> {
    /// Encodes this as a complete `Record` buffer (identifier `FGK1`);
    /// allocates nothing beyond the builder's own buffer unless a fence id
    /// list is longer than 16.
    pub fn encode_into<'f>(&self, fbb: &'f mut FlatBufferBuilder<'_>) -> &'f [u8] {
        self.encode_with_attendance(&AttendanceRef::default(), fbb)
    }

    /// Like [`RecordRef::encode_into`], with the attendance fields of a
    /// punch record (ignored for other bodies).
    pub fn encode_with_attendance<'f>(
        &self,
        attendance: &AttendanceRef<'_>,
        fbb: &'f mut FlatBufferBuilder<'_>,
    ) -> &'f [u8] {
        fbb.reset();
        let (body_type, body) = match &self.body {
            RecordBodyRef::Punch(p) => {
                let employee_id = fbb.create_string(p.employee_id);
                let device_id = fbb.create_string(p.device_id);
                let fence_ids = create_strings(fbb, p.fence_ids);
                let nearest_fence_id = opt_str(fbb, p.nearest_fence_id);
                let slot = opt_str(fbb, p.slot);
                let site = opt_str(fbb, attendance.site);
                let department = opt_str(fbb, attendance.department);
                let supervisor = opt_str(fbb, attendance.supervisor);
                let group = opt_str(fbb, attendance.group);
                let punch_id = Uuid(p.punch_id);
                let merged_into = p.merged_into.map(Uuid);
                let paired_with = attendance.paired_with.map(Uuid);
                let rec = PunchRecord::create(
                    fbb,
                    &PunchRecordArgs {
                        punch_id: Some(&punch_id),
                        employee_id: Some(employee_id),
                        device_id: Some(device_id),
                        kind: p.kind,
                        method: p.method,
                        device_time_ms: p.device_time_ms,
                        position: p.position.as_ref(),
                        verdict: p.verdict,
                        reason: p.reason,
                        fence_ids,
                        nearest_fence_id,
                        distance_m: p.distance_m,
                        offline: p.offline,
                        mock_location: p.mock_location,
                        status: p.status,
                        anomaly_flags: p.anomaly_flags,
                        slot,
                        merged_into: merged_into.as_ref(),
                        site,
                        department,
                        supervisor,
                        needs_approval: attendance.needs_approval,
                        paired_with: paired_with.as_ref(),
                        attendance_time_ms: attendance.attendance_time_ms,
                        group,
                        terminal_auth: attendance.terminal_auth,
                    },
                );
                (RecordBody::PunchRecord, rec.as_union_value())
            }
            RecordBodyRef::Ping(p) => {
                let device_id = fbb.create_string(p.device_id);
                let fence_ids = create_strings(fbb, p.fence_ids);
                let rec = PingRecord::create(
                    fbb,
                    &PingRecordArgs {
                        device_id: Some(device_id),
                        time_ms: p.time_ms,
                        lat: p.lat,
                        lon: p.lon,
                        accuracy_m: p.accuracy_m,
                        h3_cell: p.h3_cell,
                        fence_ids,
                        heartbeat: p.heartbeat,
                        late: p.late,
                    },
                );
                (RecordBody::PingRecord, rec.as_union_value())
            }
            RecordBodyRef::FenceEvent(e) => {
                let device_id = fbb.create_string(e.device_id);
                let fence_id = fbb.create_string(e.fence_id);
                let rec = FenceEvent::create(
                    fbb,
                    &FenceEventArgs {
                        device_id: Some(device_id),
                        fence_id: Some(fence_id),
                        transition: e.transition,
                        time_ms: e.time_ms,
                        lat: e.lat,
                        lon: e.lon,
                    },
                );
                (RecordBody::FenceEvent, rec.as_union_value())
            }
            RecordBodyRef::Hr(h) => h.create(fbb),
            RecordBodyRef::DayResult(d) => d.create(fbb),
        };
        let tenant = fbb.create_string(self.tenant);
        let node = opt_str(fbb, self.node);
        let record_id = Uuid(self.record_id);
        let record = Record::create(
            fbb,
            &RecordArgs {
                record_id: Some(&record_id),
                tenant: Some(tenant),
                gateway_time_ms: self.gateway_time_ms,
                node,
                body_type,
                body: Some(body),
            },
        );
        finish_record_buffer(fbb, record);
        fbb.finished_data()
    }
}

impl RecordMsg {
    /// This message as its borrowed form.
    #[must_use]
    pub fn borrowed(&self) -> RecordRef<'_, String> {
        let body = match &self.body {
            RecordBodyMsg::Punch(p) => RecordBodyRef::Punch(PunchRecordRef {
                punch_id: p.punch_id,
                employee_id: &p.employee_id,
                device_id: &p.device_id,
                kind: p.kind,
                method: p.method,
                device_time_ms: p.device_time_ms,
                position: p.position,
                verdict: p.verdict,
                reason: p.reason,
                fence_ids: &p.fence_ids,
                nearest_fence_id: p.nearest_fence_id.as_deref(),
                distance_m: p.distance_m,
                offline: p.offline,
                mock_location: p.mock_location,
                status: p.status,
                anomaly_flags: p.anomaly_flags,
                slot: p.slot.as_deref(),
                merged_into: p.merged_into,
            }),
            RecordBodyMsg::Ping(p) => RecordBodyRef::Ping(PingRecordRef {
                device_id: &p.device_id,
                time_ms: p.time_ms,
                lat: p.lat,
                lon: p.lon,
                accuracy_m: p.accuracy_m,
                h3_cell: p.h3_cell,
                fence_ids: &p.fence_ids,
                heartbeat: p.heartbeat,
                late: p.late,
            }),
            RecordBodyMsg::FenceEvent(e) => RecordBodyRef::FenceEvent(FenceEventRef {
                device_id: &e.device_id,
                fence_id: &e.fence_id,
                transition: e.transition,
                time_ms: e.time_ms,
                lat: e.lat,
                lon: e.lon,
            }),
            RecordBodyMsg::Hr(h) => RecordBodyRef::Hr(h),
            RecordBodyMsg::DayResult(d) => RecordBodyRef::DayResult(d),
        };
        RecordRef {
            record_id: self.record_id,
            tenant: &self.tenant,
            gateway_time_ms: self.gateway_time_ms,
            node: self.node.as_deref(),
            body,
        }
    }

    /// Encodes this as a complete `Record` buffer (identifier `FGK1`).
    pub fn encode_into<'f>(&self, fbb: &'f mut FlatBufferBuilder<'_>) -> &'f [u8] {
        self.borrowed().encode_into(fbb)
    }
}

impl HrMsg {
    /// Writes the body table and returns its union type and offset.
    fn create<'f>(
        &self,
        fbb: &mut FlatBufferBuilder<'f>,
    ) -> (RecordBody, WIPOffset<flatbuffers::UnionWIPOffset>) {
        match self {
            HrMsg::Decision(d) => {
                let decision_id = fbb.create_string(&d.decision_id);
                let decider = opt_str(fbb, d.decider.as_deref());
                let role = opt_str(fbb, d.role.as_deref());
                let comment = opt_str(fbb, d.comment.as_deref());
                let employee_id = opt_str(fbb, d.employee_id.as_deref());
                let department = opt_str(fbb, d.department.as_deref());
                let target = Uuid(d.target_record_id);
                let t = ApprovalDecision::create(
                    fbb,
                    &ApprovalDecisionArgs {
                        target_record_id: Some(&target),
                        decision_id: Some(decision_id),
                        approve: d.approve,
                        decider,
                        role,
                        comment,
                        employee_id,
                        department,
                    },
                );
                (RecordBody::ApprovalDecision, t.as_union_value())
            }
            HrMsg::Correction(c) => {
                let correction_id = fbb.create_string(&c.correction_id);
                let employee_id = fbb.create_string(&c.employee_id);
                let date = fbb.create_string(&c.date);
                let slot = opt_str(fbb, c.slot.as_deref());
                let reason = opt_str(fbb, c.reason.as_deref());
                let evidence_ref = opt_str(fbb, c.evidence_ref.as_deref());
                let requested_by = opt_str(fbb, c.requested_by.as_deref());
                let department = opt_str(fbb, c.department.as_deref());
                let t = Correction::create(
                    fbb,
                    &CorrectionArgs {
                        correction_id: Some(correction_id),
                        employee_id: Some(employee_id),
                        date: Some(date),
                        slot,
                        kind: c.kind,
                        at_ms: c.at_ms,
                        reason,
                        evidence_ref,
                        requested_by,
                        department,
                        evidence_due_ms: c.evidence_due_ms,
                    },
                );
                (RecordBody::Correction, t.as_union_value())
            }
            HrMsg::CorrectionDecision(d) => {
                let correction_id = fbb.create_string(&d.correction_id);
                let decision_id = fbb.create_string(&d.decision_id);
                let decider = opt_str(fbb, d.decider.as_deref());
                let role = opt_str(fbb, d.role.as_deref());
                let comment = opt_str(fbb, d.comment.as_deref());
                let employee_id = opt_str(fbb, d.employee_id.as_deref());
                let slot = opt_str(fbb, d.slot.as_deref());
                let t = CorrectionDecision::create(
                    fbb,
                    &CorrectionDecisionArgs {
                        correction_id: Some(correction_id),
                        decision_id: Some(decision_id),
                        approve: d.approve,
                        decider,
                        role,
                        comment,
                        employee_id,
                        kind: d.kind,
                        at_ms: d.at_ms,
                        slot,
                    },
                );
                (RecordBody::CorrectionDecision, t.as_union_value())
            }
            HrMsg::Leave(l) => {
                let source_id = fbb.create_string(&l.source_id);
                let employee_id = fbb.create_string(&l.employee_id);
                let from_date = fbb.create_string(&l.from_date);
                let to_date = fbb.create_string(&l.to_date);
                let leave_type = fbb.create_string(&l.leave_type);
                let entered_by = opt_str(fbb, l.entered_by.as_deref());
                let t = LeaveEntry::create(
                    fbb,
                    &LeaveEntryArgs {
                        source_id: Some(source_id),
                        employee_id: Some(employee_id),
                        from_date: Some(from_date),
                        to_date: Some(to_date),
                        leave_type: Some(leave_type),
                        entered_by,
                    },
                );
                (RecordBody::LeaveEntry, t.as_union_value())
            }
            HrMsg::MonthArchive(m) => {
                let month = fbb.create_string(&m.month);
                let archived_by = opt_str(fbb, m.archived_by.as_deref());
                let t = MonthArchive::create(
                    fbb,
                    &MonthArchiveArgs {
                        month: Some(month),
                        archived_by,
                    },
                );
                (RecordBody::MonthArchive, t.as_union_value())
            }
            HrMsg::CorrectionEvidence(e) => {
                let correction_id = fbb.create_string(&e.correction_id);
                let evidence_ref = fbb.create_string(&e.evidence_ref);
                let attached_by = opt_str(fbb, e.attached_by.as_deref());
                let employee_id = opt_str(fbb, e.employee_id.as_deref());
                let t = CorrectionEvidence::create(
                    fbb,
                    &CorrectionEvidenceArgs {
                        correction_id: Some(correction_id),
                        evidence_ref: Some(evidence_ref),
                        attached_by,
                        employee_id,
                    },
                );
                (RecordBody::CorrectionEvidence, t.as_union_value())
            }
        }
    }
}
