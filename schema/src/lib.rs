//! fencegate wire schema: the FlatBuffers messages devices, the gateway and
//! downstream consumers exchange, a verify-once parser for untrusted frames,
//! and builders.
//!
//! - [`parse_frame`] turns bytes from a device into a verified [`Request`]
//!   or the one [`Reason`] it is refused for.
//! - `*Msg` types build frames, replies and records ([`PunchMsg`],
//!   [`PingBatchMsg`], [`ReplyMsg`], [`RecordMsg`], ...); the borrowed
//!   [`PunchAckRef`] and [`RecordRef`] encode without owned strings.
//! - [`parse_reply`] and [`parse_record`] verify gateway replies and
//!   downstream records.
//! - [`close`] holds the QUIC application close codes.
//!
//! The protocol is specified in `docs/PROTOCOL.md`; the schema is in
//! `schema/fbs/`, and the generated code in [`generated`] is re-exported
//! here.

#[path = "gen/mod.rs"]
pub mod generated;

pub mod close;
mod decode;
mod encode;
mod limits;
mod parse;
mod reason;

pub use decode::{HrView, RecordBodyView, RecordView, ReplyView, parse_record, parse_reply};
pub use encode::{
    ApprovalDecisionMsg, AttendanceRef, BusyMsg, CorrectionDecisionMsg, CorrectionEvidenceMsg,
    CorrectionMsg, DayResultMsg, DaySlotResultMsg, FenceEventMsg, FenceEventRef, FrameMsg,
    HelloAckMsg, HelloMsg, HrMsg, LeaveEntryMsg, MonthArchiveMsg, PingBatchMsg, PingRecordMsg,
    PingRecordRef, PunchAckMsg, PunchAckRef, PunchMsg, PunchRecordMsg, PunchRecordRef,
    RecordBodyMsg, RecordBodyRef, RecordMsg, RecordRef, ReplyMsg,
};
pub use generated::*;
pub use limits::{Channel, Limits};
pub use parse::{
    FIX_FLAG_MOCK, FixIter, FixReading, HelloView, LAT_E7_MAX, LON_E7_MAX, PingBatchView,
    PunchView, Request, parse_frame, punch_id_of,
};
pub use reason::ClientAction;

/// Bits of `PunchRecord.anomaly_flags` (positions from the schema's
/// `AnomalyBit` enum), so callers can test and set them without shifting.
pub mod anomaly {
    use crate::AnomalyBit;

    /// The device reported a mock location provider.
    pub const MOCK_LOCATION: u64 = 1 << AnomalyBit::MockLocation.0;
    /// Implied speed from the previous punch or ping is not physically possible.
    pub const IMPOSSIBLE_SPEED: u64 = 1 << AnomalyBit::ImpossibleSpeed.0;
    /// Repeated fixes with exactly zero accuracy.
    pub const ZERO_ACCURACY_REPEAT: u64 = 1 << AnomalyBit::ZeroAccuracyRepeat.0;
    /// The employee punched from a device not seen for them before.
    pub const UNUSUAL_DEVICE: u64 = 1 << AnomalyBit::UnusualDevice.0;
    /// Device and gateway clocks disagree by more than the allowed skew.
    pub const CLOCK_SKEW: u64 = 1 << AnomalyBit::ClockSkew.0;
    /// Taken offline and uploaded later.
    pub const OFFLINE: u64 = 1 << AnomalyBit::Offline.0;
    /// Dual verification: the second factor came too long after the first,
    /// or without one.
    pub const DUAL_VERIFICATION_GAP: u64 = 1 << AnomalyBit::DualVerificationGap.0;
    /// A Wi-Fi, QR or terminal punch carried a GPS position far from the
    /// site its evidence verified.
    pub const EVIDENCE_MISMATCH: u64 = 1 << AnomalyBit::EvidenceMismatch.0;
}
