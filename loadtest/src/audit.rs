//! The audit: after the run, reconcile what clients saw acknowledged with
//! what the gateway stored in its log.
//!
//! - Every acknowledged punch (`Accepted`, `OutOfRange`, `RepeatMerged`)
//!   has exactly one record with its punch id, carrying the verdict it was
//!   acknowledged with; the record id is the one the ack carried, or for a
//!   repeat, `merged_into` is, and the record merged into exists.
//! - A refused punch (an ack without a record id: the frame was invalid)
//!   has no record. A punch rejected by policy (`Rejected` with a record
//!   id, e.g. an unknown Wi-Fi) is recorded like any other.
//! - No ping record of the run appears twice.
//!
//! `lost` counts acknowledged punches without their record; `duplicated`
//! counts extra records (a second record of a punch, any record of a
//! refused punch, a repeated ping); `mismatched` counts records whose
//! verdict or id differ from the ack.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use fencegate::log::{LogReader, Lsn};
use fencegate_schema::{PunchAckMsg, RecordBodyView, Verdict, parse_record};
use serde::Serialize;

/// What a client was told about one punch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The record id the ack carried.
    pub record_id: Option<[u8; 16]>,
    /// The verdict.
    pub verdict: Verdict,
}

/// Every ack the clients received, by punch id.
#[derive(Debug, Default)]
pub struct Book {
    acked: Mutex<HashMap<[u8; 16], Acked>>,
}

impl Book {
    /// Notes the ack of `punch_id`. A different ack for a punch already
    /// noted (a resend answered differently) is a contract breach: the
    /// first ack is kept for the audit and returned as the error.
    pub fn acked(&self, punch_id: [u8; 16], ack: &PunchAckMsg) -> Result<(), Acked> {
        let new = Acked {
            record_id: ack.record_id,
            verdict: ack.verdict,
        };
        let mut m = self.acked.lock().unwrap_or_else(|p| p.into_inner());
        match m.entry(punch_id) {
            std::collections::hash_map::Entry::Occupied(e) if *e.get() != new => Err(*e.get()),
            std::collections::hash_map::Entry::Occupied(_) => Ok(()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(new);
                Ok(())
            }
        }
    }

    /// Number of acknowledged punches.
    pub fn len(&self) -> usize {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no punch was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The audit's findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    /// What was read.
    pub source: String,
    /// Log entries read.
    pub records_scanned: u64,
    /// Acknowledged punches checked.
    pub acked_punches: u64,
    /// Of those, refused ones (must have no record).
    pub refused_punches: u64,
    /// Punch records of this run found.
    pub punch_records: u64,
    /// Ping records of this run found.
    pub ping_records: u64,
    /// Enter/exit events of this run found.
    pub fence_events: u64,
    /// Acknowledged punches whose record is missing.
    pub lost: u64,
    /// Records that should not exist (second copies, records of refused
    /// punches, repeated pings).
    pub duplicated: u64,
    /// Records whose verdict or id differ from the ack.
    pub mismatched: u64,
    /// Ping records older than an earlier record of the same device (not a
    /// contract breach: reported for diagnosis).
    pub pings_out_of_order: u64,
    /// The first few problems, for a human.
    pub examples: Vec<String>,
}

impl AuditReport {
    /// Whether the contract held.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.mismatched == 0
    }

    fn example(&mut self, s: String) {
        if self.examples.len() < 10 {
            self.examples.push(s);
        }
    }
}

/// The first LSN of the newest segment in a log folder: every record
/// appended from now on is at or after it. `Lsn(0)` for an empty folder.
pub fn log_start(dir: &Path) -> Lsn {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Lsn(0);
    };
    rd.filter_map(|e| {
        let name = e.ok()?.file_name();
        let name = name.to_str()?;
        name.strip_suffix(".seg")?.parse::<u64>().ok()
    })
    .max()
    .map_or(Lsn(0), Lsn)
}

/// Reconciles `book` with the log in `dir` from `from`. The run's punch
/// ids start with `punch_prefix`; its devices' ids with `device_prefix`.
pub fn audit_log(
    dir: &Path,
    from: Lsn,
    book: &Book,
    punch_prefix: [u8; 4],
    device_prefix: &str,
) -> anyhow::Result<AuditReport> {
    let acked = book.acked.lock().unwrap_or_else(|p| p.into_inner());
    let mut r = AuditReport {
        source: format!("log {} from LSN {}", dir.display(), from.0),
        acked_punches: acked.len() as u64,
        ..AuditReport::default()
    };
    let mut reader = LogReader::open_dir(dir, from, Duration::from_millis(10))
        .map_err(|e| anyhow::anyhow!("audit: cannot read the log {}: {e}", dir.display()))?;
    let mut copies: HashMap<[u8; 16], u32> = HashMap::with_capacity(acked.len());
    let mut record_ids: HashSet<[u8; 16]> = HashSet::with_capacity(acked.len());
    let mut last_ping: HashMap<Box<str>, i64> = HashMap::new();
    while let Some(e) = reader
        .next_entry()
        .map_err(|e| anyhow::anyhow!("audit: reading {}: {e}", dir.display()))?
    {
        r.records_scanned += 1;
        let Ok(rec) = parse_record(e.payload) else {
            continue;
        };
        match rec.body() {
            RecordBodyView::Punch(p) => {
                let pid = p.punch_id().0;
                if pid[..4] == punch_prefix {
                    // Any punch of the run, acked or not, can be merged into.
                    record_ids.insert(rec.record_id());
                }
                let Some(a) = acked.get(&pid) else { continue };
                r.punch_records += 1;
                let n = copies.entry(pid).or_default();
                *n += 1;
                if *n > 1 {
                    continue;
                }
                let ok = match (a.record_id, a.verdict) {
                    (None, _) => true, // refused: counted as duplicated below
                    (Some(_), Verdict::RepeatMerged) => {
                        p.verdict() == Verdict::RepeatMerged
                            && p.merged_into().map(|u| u.0) == a.record_id
                    }
                    (Some(id), v) => p.verdict() == v && rec.record_id() == id,
                };
                if !ok {
                    r.mismatched += 1;
                    r.example(format!(
                        "punch {}: acked {:?} record {}, stored {:?} record {} merged_into {}",
                        hex::encode(pid),
                        a.verdict,
                        a.record_id.map(hex::encode).unwrap_or_default(),
                        p.verdict(),
                        hex::encode(rec.record_id()),
                        p.merged_into()
                            .map(|u| hex::encode(u.0))
                            .unwrap_or_default(),
                    ));
                }
            }
            RecordBodyView::Ping(p) => {
                if !p.device_id().starts_with(device_prefix) {
                    continue;
                }
                r.ping_records += 1;
                let t = p.time_ms();
                match last_ping.get_mut(p.device_id()) {
                    Some(last) if t == *last => {
                        r.duplicated += 1;
                        r.example(format!("ping of {} at {t} stored twice", p.device_id()));
                    }
                    Some(last) if t < *last => r.pings_out_of_order += 1,
                    Some(last) => *last = t,
                    None => {
                        last_ping.insert(p.device_id().into(), t);
                    }
                }
            }
            RecordBodyView::FenceEvent(ev) => {
                if ev.device_id().starts_with(device_prefix) {
                    r.fence_events += 1;
                }
            }
        }
    }
    for (pid, a) in acked.iter() {
        let n = u64::from(copies.get(pid).copied().unwrap_or(0));
        if a.record_id.is_none() {
            r.refused_punches += 1;
            if n > 0 {
                r.duplicated += n;
                r.example(format!(
                    "punch {} was refused but left {n} record(s)",
                    hex::encode(pid)
                ));
            }
            continue;
        }
        if n == 0 {
            r.lost += 1;
            r.example(format!(
                "punch {} acked {:?} (record {}) has no record",
                hex::encode(pid),
                a.verdict,
                a.record_id.map(hex::encode).unwrap_or_default()
            ));
        } else if n > 1 {
            r.duplicated += n - 1;
            r.example(format!("punch {} stored {n} times", hex::encode(pid)));
        }
        if a.verdict == Verdict::RepeatMerged {
            if let Some(target) = a.record_id {
                if !record_ids.contains(&target) {
                    r.lost += 1;
                    r.example(format!(
                        "punch {} was merged into record {}, which is missing",
                        hex::encode(pid),
                        hex::encode(target)
                    ));
                }
            }
        }
    }
    Ok(r)
}
