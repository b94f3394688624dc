//! A batch of log entries on their way to one sink: the payloads packed in
//! one buffer (one allocation per batch, none per record) and a small index
//! saying what each record is and where it goes.

use bytes::{Bytes, BytesMut};
use fencegate_schema::{AttendanceStatus, RecordBodyView, Verdict, parse_record};

use crate::log::Lsn;

/// What kind of record an entry holds; decides its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A punch record (`fencegate.<tenant>.punch`).
    Punch,
    /// A forwarded ping (`fencegate.<tenant>.ping`).
    Ping,
    /// A fence enter/exit event (`fencegate.<tenant>.event`).
    Event,
}

impl RecordKind {
    /// The last subject token for this kind.
    pub fn token(self) -> &'static str {
        match self {
            Self::Punch => "punch",
            Self::Ping => "ping",
            Self::Event => "event",
        }
    }
}

/// What happened to one entry offered to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// The record is in the batch and will be delivered.
    Added,
    /// A punch merged into an earlier one as a repeat: not forwarded as a
    /// new record (contract 3), but the batch still covers its LSN.
    Merged,
    /// The payload is not a valid record; skipped and counted.
    Invalid,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    lsn: Lsn,
    time_ms: u64,
    start: u32,
    len: u32,
    tenant_start: u32,
    tenant_len: u32,
    record_id: [u8; 16],
    kind: RecordKind,
    approval: bool,
}

/// The entries `first_lsn .. end_lsn` of the log, with the records among
/// them that are to be delivered, in LSN order.
///
/// A sink gets a sealed batch and must deliver every record in it before
/// the forwarder moves the sink's cursor to [`Batch::end_lsn`].
#[derive(Debug)]
pub struct Batch {
    building: BytesMut,
    sealed: Bytes,
    metas: Vec<Meta>,
    first_lsn: Lsn,
    end_lsn: Lsn,
    first_time_ms: Option<u64>,
    payload_bytes: usize,
    merged: u32,
    invalid: u32,
}

impl Batch {
    /// An empty batch starting at `first`, with room for about
    /// `records` records.
    pub fn new(first: Lsn, records: usize) -> Self {
        Self {
            building: BytesMut::with_capacity(records * 256),
            sealed: Bytes::new(),
            metas: Vec::with_capacity(records),
            first_lsn: first,
            end_lsn: first,
            first_time_ms: None,
            payload_bytes: 0,
            merged: 0,
            invalid: 0,
        }
    }

    /// Empties the batch so it starts at `first` (keeps its allocations
    /// where it can: the sealed buffer may still be shared with a sink).
    pub fn reset(&mut self, first: Lsn) {
        self.building.clear();
        self.sealed = Bytes::new();
        self.metas.clear();
        self.first_lsn = first;
        self.end_lsn = first;
        self.first_time_ms = None;
        self.payload_bytes = 0;
        self.merged = 0;
        self.invalid = 0;
    }

    /// Offers the log entry `lsn` (which must be the batch's next LSN): the
    /// record is parsed once (the verifier runs here), classified, and
    /// copied into the batch buffer if it is to be forwarded.
    ///
    /// # Panics
    ///
    /// If `lsn` is not [`Batch::end_lsn`] (entries must come in order).
    pub fn offer(&mut self, lsn: Lsn, time_ms: u64, payload: &[u8]) -> Offered {
        assert_eq!(lsn, self.end_lsn, "batch entries must be contiguous");
        self.end_lsn = Lsn(lsn.0 + 1);
        self.first_time_ms.get_or_insert(time_ms);
        let Ok(rec) = parse_record(payload) else {
            self.invalid += 1;
            return Offered::Invalid;
        };
        let (kind, approval) = match rec.body() {
            RecordBodyView::Punch(p) => {
                if p.verdict() == Verdict::RepeatMerged
                    || p.status() == AttendanceStatus::RepeatMerged
                {
                    self.merged += 1;
                    return Offered::Merged;
                }
                (
                    RecordKind::Punch,
                    p.status() == AttendanceStatus::OutOfRangePendingApproval,
                )
            }
            RecordBodyView::Ping(_) => (RecordKind::Ping, false),
            RecordBodyView::FenceEvent(_) => (RecordKind::Event, false),
            // HR records (decisions, make-ups, leave, archives) are
            // attendance records: they travel with the punches.
            RecordBodyView::Hr(_) => (RecordKind::Punch, false),
            // Day results too (docs/ATTENDANCE.md, "Day results downstream").
            RecordBodyView::DayResult(_) => (RecordKind::Punch, false),
        };
        let tenant = rec.tenant();
        if !crate::config::valid_tenant_id(tenant) {
            // Not routable as a subject token; the edge never writes such a
            // tenant (config validates them), so this is foreign data.
            self.invalid += 1;
            return Offered::Invalid;
        }
        // The tenant string lives inside the payload; keep its offset so a
        // sink can route without parsing again.
        let tenant_start = (tenant.as_ptr() as usize).wrapping_sub(payload.as_ptr() as usize);
        debug_assert!(tenant_start + tenant.len() <= payload.len());
        // Offsets are into the sealed buffer, which is everything sealed so
        // far followed by what is being built.
        let start = self.sealed.len() + self.building.len();
        self.building.extend_from_slice(payload);
        self.payload_bytes += payload.len();
        self.metas.push(Meta {
            lsn,
            time_ms,
            start: start as u32,
            len: payload.len() as u32,
            tenant_start: tenant_start as u32,
            tenant_len: tenant.len() as u32,
            record_id: rec.record_id(),
            kind,
            approval,
        });
        Offered::Added
    }

    /// Freezes the buffer so sinks can hand out zero-copy payload slices.
    /// Offering more entries afterwards is allowed (they go into a new
    /// buffer) but must be followed by another `seal`.
    pub fn seal(&mut self) {
        if self.building.is_empty() {
            return;
        }
        if self.sealed.is_empty() {
            self.sealed = self.building.split().freeze();
        } else {
            // Entries were added after an earlier seal: rejoin both parts
            // (rare: a lingering batch that was sealed to deliver and then
            // grew).
            let mut all = BytesMut::with_capacity(self.sealed.len() + self.building.len());
            all.extend_from_slice(&self.sealed);
            all.extend_from_slice(&self.building);
            self.building.clear();
            self.sealed = all.freeze();
        }
    }

    /// LSN of the first entry the batch covers.
    pub fn first_lsn(&self) -> Lsn {
        self.first_lsn
    }

    /// LSN after the last entry the batch covers: where the cursor moves
    /// once the batch is delivered.
    pub fn end_lsn(&self) -> Lsn {
        self.end_lsn
    }

    /// Log entries covered (delivered, merged and invalid).
    pub fn entries(&self) -> u64 {
        self.end_lsn.0 - self.first_lsn.0
    }

    /// Records to deliver.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether no record is to be delivered (the batch may still cover
    /// skipped entries).
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// Payload bytes of the records to deliver.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Log time (ms since the Unix epoch) of the first covered entry: the
    /// oldest entry not yet delivered while this batch is pending.
    pub fn first_time_ms(&self) -> Option<u64> {
        self.first_time_ms
    }

    /// Repeat punches skipped (not forwarded).
    pub fn merged(&self) -> u32 {
        self.merged
    }

    /// Invalid payloads skipped.
    pub fn invalid(&self) -> u32 {
        self.invalid
    }

    /// The records to deliver, in LSN order. Call [`Batch::seal`] first.
    pub fn records(&self) -> impl ExactSizeIterator<Item = BatchRecord<'_>> + '_ {
        debug_assert!(self.building.is_empty() || self.metas.is_empty());
        self.metas.iter().map(|m| BatchRecord {
            buf: &self.sealed,
            meta: m,
        })
    }
}

/// One record of a sealed [`Batch`].
#[derive(Debug, Clone, Copy)]
pub struct BatchRecord<'a> {
    buf: &'a Bytes,
    meta: &'a Meta,
}

impl<'a> BatchRecord<'a> {
    /// Its LSN.
    pub fn lsn(&self) -> Lsn {
        self.meta.lsn
    }

    /// Log time, ms since the Unix epoch.
    pub fn time_ms(&self) -> u64 {
        self.meta.time_ms
    }

    /// The deterministic record id (the downstream's dedup key).
    pub fn record_id(&self) -> [u8; 16] {
        self.meta.record_id
    }

    /// Punch, ping or fence event.
    pub fn kind(&self) -> RecordKind {
        self.meta.kind
    }

    /// A punch out of range that waits for a supervisor's approval: it also
    /// goes to the `.approval` subject.
    pub fn needs_approval(&self) -> bool {
        self.meta.approval
    }

    /// The FlatBuffers `Record` bytes.
    pub fn payload(&self) -> &'a [u8] {
        let s = self.meta.start as usize;
        &self.buf[s..s + self.meta.len as usize]
    }

    /// The FlatBuffers `Record` bytes as a shared slice of the batch buffer
    /// (no copy).
    pub fn payload_bytes(&self) -> Bytes {
        let s = self.meta.start as usize;
        self.buf.slice(s..s + self.meta.len as usize)
    }

    /// The tenant the record belongs to.
    pub fn tenant(&self) -> &'a str {
        let p = self.payload();
        let s = self.meta.tenant_start as usize;
        // The range was a verified `&str` when the batch was built.
        std::str::from_utf8(&p[s..s + self.meta.tenant_len as usize]).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fencegate_schema::{
        FenceEventMsg, PunchKind, PunchMethod, PunchRecordMsg, Reason, RecordBodyMsg, RecordMsg,
        Transition,
    };

    fn punch(id: u8, tenant: &str, verdict: Verdict, status: AttendanceStatus) -> Vec<u8> {
        let msg = RecordMsg {
            record_id: [id; 16],
            tenant: tenant.into(),
            gateway_time_ms: 1_000,
            node: Some("n1".into()),
            body: RecordBodyMsg::Punch(PunchRecordMsg {
                punch_id: [id; 16],
                employee_id: "e".into(),
                device_id: "d".into(),
                kind: PunchKind::In,
                method: PunchMethod::Gps,
                device_time_ms: 1_000,
                position: None,
                verdict,
                reason: Reason::None,
                fence_ids: vec![],
                nearest_fence_id: None,
                distance_m: 0.0,
                offline: false,
                mock_location: false,
                status,
                anomaly_flags: 0,
                slot: None,
                merged_into: None,
            }),
        };
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        msg.encode_into(&mut fbb).to_vec()
    }

    fn event(id: u8, tenant: &str) -> Vec<u8> {
        let msg = RecordMsg {
            record_id: [id; 16],
            tenant: tenant.into(),
            gateway_time_ms: 1_000,
            node: None,
            body: RecordBodyMsg::FenceEvent(FenceEventMsg {
                device_id: "d".into(),
                fence_id: "f".into(),
                transition: Transition::Exit,
                time_ms: 5,
                lat: 1.0,
                lon: 2.0,
            }),
        };
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        msg.encode_into(&mut fbb).to_vec()
    }

    #[test]
    fn classifies_and_skips() {
        let mut b = Batch::new(Lsn(10), 8);
        let ok = punch(1, "acme", Verdict::Accepted, AttendanceStatus::Normal);
        let merged = punch(
            2,
            "acme",
            Verdict::RepeatMerged,
            AttendanceStatus::RepeatMerged,
        );
        let approval = punch(
            3,
            "globex",
            Verdict::OutOfRange,
            AttendanceStatus::OutOfRangePendingApproval,
        );
        assert_eq!(b.offer(Lsn(10), 100, &ok), Offered::Added);
        assert_eq!(b.offer(Lsn(11), 101, &merged), Offered::Merged);
        assert_eq!(b.offer(Lsn(12), 102, b"not a record"), Offered::Invalid);
        assert_eq!(b.offer(Lsn(13), 103, &approval), Offered::Added);
        assert_eq!(b.offer(Lsn(14), 104, &event(4, "acme")), Offered::Added);
        b.seal();
        assert_eq!(
            (b.first_lsn(), b.end_lsn(), b.entries()),
            (Lsn(10), Lsn(15), 5)
        );
        assert_eq!((b.len(), b.merged(), b.invalid()), (3, 1, 1));
        assert_eq!(b.first_time_ms(), Some(100));
        let recs: Vec<_> = b.records().collect();
        assert_eq!(recs[0].tenant(), "acme");
        assert_eq!(recs[0].kind(), RecordKind::Punch);
        assert!(!recs[0].needs_approval());
        assert_eq!(recs[0].payload(), &ok[..]);
        assert_eq!(recs[1].tenant(), "globex");
        assert!(recs[1].needs_approval());
        assert_eq!(recs[1].lsn(), Lsn(13));
        assert_eq!(recs[1].record_id(), [3; 16]);
        assert_eq!(&recs[1].payload_bytes()[..], &approval[..]);
        assert_eq!(recs[2].kind(), RecordKind::Event);
        assert_eq!(recs[2].time_ms(), 104);
    }

    #[test]
    fn seal_twice_keeps_every_payload() {
        let a = punch(1, "acme", Verdict::Accepted, AttendanceStatus::Normal);
        let c = event(2, "acme");
        let mut b = Batch::new(Lsn(0), 2);
        b.offer(Lsn(0), 1, &a);
        b.seal();
        b.offer(Lsn(1), 2, &c);
        b.seal();
        let p: Vec<_> = b.records().map(|r| r.payload().to_vec()).collect();
        assert_eq!(p, vec![a, c]);
        b.reset(Lsn(2));
        assert!(b.is_empty());
        assert_eq!(b.entries(), 0);
    }

    #[test]
    #[should_panic(expected = "contiguous")]
    fn gaps_are_refused() {
        let mut b = Batch::new(Lsn(0), 1);
        b.offer(Lsn(1), 0, b"x");
    }
}
