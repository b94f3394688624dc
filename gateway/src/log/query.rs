//! Attendance records read back from the durable log, for
//! `GET /v1/records` and `fencegate export`.
//!
//! Queries are by *attendance time* (the time the rules judged a punch by:
//! the device time of an offline punch, the gateway time otherwise). A
//! per-segment time index keeps a day's query from reading the whole log:
//! for every sealed segment (one that a later segment follows, so it never
//! changes again) the smallest and largest attendance time of its punch
//! records and the tenants it holds are computed once and cached as a small
//! JSON file under `<data_dir>/index/records/`, checked against the
//! segment's size on every use. A query reads only segments whose range
//! meets the requested one, plus the segment being written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fencegate_schema::{AttendanceStatus, RecordBodyView, RecordView, anomaly, parse_record};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{LogError, LogHandle, LogReader, Lsn};
use crate::record_json::{record_json, uuid};

/// Anomaly bits that make a record an exception for its supervisor
/// (an offline punch alone is not one).
pub const EXCEPTION_FLAGS: u64 = !anomaly::OFFLINE;

/// What to return.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordQuery {
    /// Only this tenant (`None`: every tenant; super admins only).
    pub tenant: Option<String>,
    /// Attendance time from (inclusive), unix ms.
    pub from_ms: i64,
    /// Attendance time to (exclusive), unix ms.
    pub to_ms: i64,
    /// Only this employee.
    pub employee: Option<String>,
    /// Only this status.
    pub status: Option<AttendanceStatus>,
    /// Only this department.
    pub department: Option<String>,
    /// Only exceptions: any status but normal and repeat-merged, or any
    /// anomaly flag but `Offline` (what a supervisor reviews).
    pub exceptions_only: bool,
    /// Stop after this many matches.
    pub limit: usize,
    /// Resume after this LSN (the `next_after` of a cut answer): records
    /// at or below it are skipped.
    pub after_lsn: Option<u64>,
    /// Stop after reading this many records (matching or not), so one
    /// query cannot read the whole log. `0`: no bound (tools).
    pub max_scan: u64,
    /// Stop at this instant. Checked every few thousand records, so the
    /// clock is not read per record.
    pub deadline: Option<std::time::Instant>,
}

/// Why a query stopped before the end of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cut {
    /// `limit` matches were returned.
    Limit,
    /// `max_scan` records were read.
    Scan,
    /// The deadline passed.
    Time,
    /// The receiver of the answer went away.
    Closed,
}

impl Cut {
    /// The name in answers (`cut` of the stats).
    pub fn name(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Scan => "scan",
            Self::Time => "time",
            Self::Closed => "closed",
        }
    }
}

/// How a query went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueryStats {
    /// Segments in the log.
    pub segments: usize,
    /// Segments read (the others were skipped by the time index).
    pub segments_read: usize,
    /// Records read.
    pub records_read: u64,
    /// Records returned.
    pub matched: usize,
    /// Whether the answer was cut before the end of the range.
    pub truncated: bool,
    /// Why it was cut.
    pub cut: Option<Cut>,
    /// When cut: pass this as `after` to get the rest.
    pub next_after: Option<u64>,
}

/// The cached summary of one sealed segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentSummary {
    /// First LSN (the segment's name).
    pub first_lsn: u64,
    /// Size of the segment file when summarised.
    pub file_bytes: u64,
    /// Smallest attendance time of a punch record in it.
    pub min_at_ms: Option<i64>,
    /// Largest attendance time of a punch record in it.
    pub max_at_ms: Option<i64>,
    /// Punch records in it.
    pub punches: u64,
    /// Tenants with punch records in it.
    pub tenants: Vec<String>,
}

/// Where records are read from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The running node's log: only committed records.
    Handle(&'a LogHandle),
    /// A log folder, for tools (every intact record on disk).
    Dir(&'a Path),
}

impl Source<'_> {
    fn dir(&self) -> PathBuf {
        match self {
            Source::Handle(h) => h.config().dir.clone(),
            Source::Dir(d) => d.to_path_buf(),
        }
    }

    fn reader(&self, from: Lsn) -> Result<LogReader, LogError> {
        match self {
            Source::Handle(h) => h.reader(from),
            Source::Dir(d) => LogReader::open_dir(*d, from, Duration::from_millis(100)),
        }
    }
}

/// The attendance time of a punch record (its gateway time for records
/// written before the field existed).
pub fn attendance_time(rec: &RecordView<'_>) -> i64 {
    crate::record_json::attendance_time_ms(rec)
}

fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        // Segment files are `<first LSN, 20 digits>.seg` (see log/mod.rs).
        let Some(digits) = name.strip_suffix(".seg") else {
            continue;
        };
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(first) = digits.parse::<u64>() else {
            continue;
        };
        let bytes = ent.metadata().map(|m| m.len()).unwrap_or(0);
        out.push((first, bytes));
    }
    out.sort_unstable();
    Ok(out)
}

/// Reads the records of the segment starting at `first` (up to `end`, the
/// next segment's first LSN), calling `f` for each.
fn scan_segment(
    src: Source<'_>,
    first: u64,
    end: Option<u64>,
    f: &mut dyn FnMut(Lsn, &[u8]) -> bool,
) -> Result<(), LogError> {
    let mut reader = match src.reader(Lsn(first)) {
        Ok(r) => r,
        // Deleted by retention since it was listed: nothing to read.
        Err(LogError::Trimmed { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    loop {
        let entry = match reader.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(()),
            Err(LogError::Trimmed { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if end.is_some_and(|e| entry.lsn.0 >= e) {
            return Ok(());
        }
        if !f(entry.lsn, entry.payload) {
            return Ok(());
        }
    }
}

fn summarise(
    src: Source<'_>,
    first: u64,
    end: u64,
    bytes: u64,
) -> Result<SegmentSummary, LogError> {
    let mut s = SegmentSummary {
        first_lsn: first,
        file_bytes: bytes,
        min_at_ms: None,
        max_at_ms: None,
        punches: 0,
        tenants: Vec::new(),
    };
    scan_segment(src, first, Some(end), &mut |_, payload| {
        if let Ok(rec) = parse_record(payload) {
            if matches!(rec.body(), RecordBodyView::Punch(_)) {
                let at = attendance_time(&rec);
                s.min_at_ms = Some(s.min_at_ms.map_or(at, |m| m.min(at)));
                s.max_at_ms = Some(s.max_at_ms.map_or(at, |m| m.max(at)));
                s.punches += 1;
                if !s.tenants.iter().any(|t| t == rec.tenant()) {
                    s.tenants.push(rec.tenant().to_owned());
                }
            }
        }
        true
    })?;
    Ok(s)
}

/// The summary of a sealed segment, from the cache when it is current.
fn summary(
    src: Source<'_>,
    index_dir: &Path,
    first: u64,
    end: u64,
    bytes: u64,
) -> Result<SegmentSummary, LogError> {
    let path = index_dir.join(format!("{first:020}.json"));
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(s) = serde_json::from_str::<SegmentSummary>(&text) {
            if s.first_lsn == first && s.file_bytes == bytes {
                return Ok(s);
            }
        }
    }
    let s = summarise(src, first, end, bytes)?;
    // The cache is an optimisation: a read-only data dir only costs speed.
    // Replaced whole, so a concurrent reader never parses half a summary.
    if let Ok(bytes) = serde_json::to_vec(&s) {
        let _ = crate::persist::atomic_replace(&path, &bytes, crate::persist::SHARED);
    }
    Ok(s)
}

/// Removes cached summaries of segments that no longer exist.
fn prune_index(index_dir: &Path, live: &[(u64, u64)]) {
    let Ok(rd) = std::fs::read_dir(index_dir) else {
        return;
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|d| d.parse::<u64>().ok())
        else {
            continue;
        };
        if !live.iter().any(|(f, _)| *f == first) {
            let _ = std::fs::remove_file(ent.path());
        }
    }
}

/// Whether a record matches the query's filters.
pub fn matches(q: &RecordQuery, rec: &RecordView<'_>) -> bool {
    let RecordBodyView::Punch(p) = rec.body() else {
        return false;
    };
    if q.tenant.as_deref().is_some_and(|t| t != rec.tenant()) {
        return false;
    }
    let at = attendance_time(rec);
    if at < q.from_ms || at >= q.to_ms {
        return false;
    }
    if q.employee.as_deref().is_some_and(|e| e != p.employee_id()) {
        return false;
    }
    if q.status.is_some_and(|s| s != p.status()) {
        return false;
    }
    if let Some(d) = &q.department {
        if p.department() != Some(d.as_str()) {
            return false;
        }
    }
    if q.exceptions_only {
        let plain = matches!(
            p.status(),
            AttendanceStatus::Normal | AttendanceStatus::RepeatMerged
        );
        if plain && p.anomaly_flags() & EXCEPTION_FLAGS == 0 && !p.needs_approval() {
            return false;
        }
    }
    true
}

/// How many records are read between two looks at the deadline.
const DEADLINE_EVERY: u64 = 4_096;

/// Runs a query, calling `out` with each matching record and its LSN in
/// log order; `out` returns false to stop (its receiver went away). Stops
/// early at `limit` matches, `max_scan` records read or the deadline, and
/// then says where to resume (`next_after`).
pub fn query(
    src: Source<'_>,
    index_dir: &Path,
    q: &RecordQuery,
    out: &mut dyn FnMut(Lsn, &RecordView<'_>) -> bool,
) -> Result<QueryStats, LogError> {
    let dir = src.dir();
    let segs = list_segments(&dir).map_err(|e| LogError::io("list", &dir, e))?;
    prune_index(index_dir, &segs);
    let mut stats = QueryStats {
        segments: segs.len(),
        ..QueryStats::default()
    };
    let after = q.after_lsn;
    for (i, &(first, bytes)) in segs.iter().enumerate() {
        let next = segs.get(i + 1).map(|s| s.0);
        if next.is_some_and(|end| after.is_some_and(|a| end <= a + 1)) {
            continue; // wholly at or before `after`
        }
        if let Some(end) = next {
            let s = summary(src, index_dir, first, end, bytes)?;
            let overlaps = match (s.min_at_ms, s.max_at_ms) {
                (Some(lo), Some(hi)) => hi >= q.from_ms && lo < q.to_ms,
                _ => false,
            };
            let tenant_ok = q
                .tenant
                .as_deref()
                .is_none_or(|t| s.tenants.iter().any(|x| x == t));
            if !overlaps || !tenant_ok {
                continue;
            }
        }
        stats.segments_read += 1;
        let start = after.map_or(first, |a| first.max(a + 1));
        let mut last = None;
        scan_segment(src, start, next, &mut |lsn, payload| {
            if q.max_scan > 0 && stats.records_read >= q.max_scan {
                stats.cut = Some(Cut::Scan);
                return false;
            }
            if stats.records_read % DEADLINE_EVERY == DEADLINE_EVERY - 1
                && q.deadline.is_some_and(|d| crate::clock::instant() >= d)
            {
                stats.cut = Some(Cut::Time);
                return false;
            }
            stats.records_read += 1;
            if let Ok(rec) = parse_record(payload) {
                if matches(q, &rec) {
                    if stats.matched >= q.limit {
                        stats.cut = Some(Cut::Limit);
                        return false;
                    }
                    stats.matched += 1;
                    if !out(lsn, &rec) {
                        stats.cut = Some(Cut::Closed);
                        last = Some(lsn.0);
                        return false;
                    }
                }
            }
            last = Some(lsn.0);
            true
        })?;
        if stats.cut.is_some() {
            stats.truncated = true;
            // Resume after the last record handled in full; when nothing of
            // this segment was, after whatever preceded it.
            // (None only when cut before LSN 0: resume without `after`.)
            stats.next_after = last.or(after).or(first.checked_sub(1));
            break;
        }
    }
    Ok(stats)
}

fn flag_names(flags: u64) -> Vec<&'static str> {
    let mut out = Vec::new();
    for b in fencegate_schema::AnomalyBit::ENUM_VALUES {
        if flags & (1 << b.0) != 0 {
            out.push(match b.variant_name() {
                Some("MockLocation") => "mock_location",
                Some("ImpossibleSpeed") => "impossible_speed",
                Some("ZeroAccuracyRepeat") => "zero_accuracy_repeat",
                Some("UnusualDevice") => "unusual_device",
                Some("ClockSkew") => "clock_skew",
                Some("Offline") => "offline",
                Some("DualVerificationGap") => "dual_verification_gap",
                Some("EvidenceMismatch") => "evidence_mismatch",
                _ => "unknown",
            });
        }
    }
    out
}

/// The record as JSON: the `record_json` fields (attendance fields,
/// `attendance_time_ms` and `terminal_auth` included) plus the anomaly flag
/// names and the LSN.
pub fn to_json(lsn: Lsn, rec: &RecordView<'_>) -> Value {
    let mut v = record_json(rec);
    if let (RecordBodyView::Punch(p), Some(obj)) = (rec.body(), v.as_object_mut()) {
        obj.insert("lsn".into(), lsn.0.into());
        obj.insert("anomalies".into(), flag_names(p.anomaly_flags()).into());
    }
    v
}

/// CSV header of [`csv_row`].
pub const CSV_HEADER: [&str; 24] = [
    "record_id",
    "tenant",
    "employee_id",
    "device_id",
    "kind",
    "method",
    "attendance_time",
    "attendance_time_ms",
    "gateway_time_ms",
    "offline",
    "verdict",
    "reason",
    "status",
    "slot",
    "group",
    "site",
    "fence_id",
    "distance_m",
    "anomalies",
    "department",
    "supervisor",
    "needs_approval",
    "merged_into",
    "paired_with",
];

/// One CSV row (columns as [`CSV_HEADER`]); `attendance_time` is RFC 3339
/// in `tz`.
pub fn csv_row(rec: &RecordView<'_>, tz: &jiff::tz::TimeZone) -> Option<Vec<String>> {
    let RecordBodyView::Punch(p) = rec.body() else {
        return None;
    };
    let a = rec.attendance().unwrap_or_default();
    let at = attendance_time(rec);
    let at_text = jiff::Timestamp::from_millisecond(at)
        .map(|t| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        })
        .unwrap_or_default();
    let j = record_json(rec);
    let s = |k: &str| -> String {
        match &j[k] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    };
    Some(vec![
        uuid(&rec.record_id()),
        rec.tenant().to_owned(),
        p.employee_id().to_owned(),
        p.device_id().to_owned(),
        s("kind"),
        s("method"),
        at_text,
        at.to_string(),
        rec.gateway_time_ms().to_string(),
        p.offline().to_string(),
        s("verdict"),
        s("reason"),
        s("status"),
        p.slot().unwrap_or("").to_owned(),
        a.group.unwrap_or("").to_owned(),
        a.site.unwrap_or("").to_owned(),
        p.fence_ids()
            .and_then(|f| f.iter().next())
            .unwrap_or("")
            .to_owned(),
        format!("{:.1}", p.distance_m()),
        flag_names(p.anomaly_flags()).join("|"),
        a.department.unwrap_or("").to_owned(),
        a.supervisor.unwrap_or("").to_owned(),
        a.needs_approval.to_string(),
        p.merged_into().map(|u| uuid(&u.0)).unwrap_or_default(),
        a.paired_with.map(|u| uuid(&u)).unwrap_or_default(),
    ])
}

/// Parses a status name as written in records (`late`, `early_leave`, ...).
pub fn parse_status(s: &str) -> Option<AttendanceStatus> {
    Some(match s {
        "unclassified" => AttendanceStatus::Unclassified,
        "normal" => AttendanceStatus::Normal,
        "late" => AttendanceStatus::Late,
        "early_leave" => AttendanceStatus::EarlyLeave,
        "out_of_range_pending_approval" => AttendanceStatus::OutOfRangePendingApproval,
        "field" => AttendanceStatus::Field,
        "repeat_merged" => AttendanceStatus::RepeatMerged,
        "rejected" => AttendanceStatus::Rejected,
        _ => return None,
    })
}

/// Parses a query bound: unix milliseconds, an RFC 3339 timestamp, or a
/// date (`YYYY-MM-DD`, midnight in `tz`; with `end_of_day`, the next
/// midnight, so `to=2025-03-04` includes that whole day).
pub fn parse_time(s: &str, tz: &jiff::tz::TimeZone, end_of_day: bool) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        let d = if end_of_day {
            d.tomorrow().map_err(|e| e.to_string())?
        } else {
            d
        };
        return d
            .to_zoned(tz.clone())
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| e.to_string());
    }
    Err(format!(
        "{s:?} is not a time; use unix milliseconds, an RFC 3339 timestamp (2025-03-04T09:00:00+08:00) or a date (2025-03-04)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_form() {
        let sh = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap_or_else(|_| {
            jiff::tz::TimeZoneDatabase::bundled()
                .get("Asia/Shanghai")
                .unwrap()
        });
        assert_eq!(parse_time("1000", &sh, false), Ok(1000));
        // 2025-03-04 00:00 in Shanghai is 2025-03-03T16:00Z.
        let from = parse_time("2025-03-04", &sh, false).unwrap();
        assert_eq!(
            from,
            parse_time("2025-03-03T16:00:00Z", &sh, false).unwrap()
        );
        let to = parse_time("2025-03-04", &sh, true).unwrap();
        assert_eq!(to - from, 86_400_000);
        assert!(parse_time("yesterday", &sh, false).is_err());
    }

    #[test]
    fn status_names_round_trip() {
        for s in AttendanceStatus::ENUM_VALUES {
            let name = record_status_name(*s);
            assert_eq!(parse_status(&name), Some(*s), "{name}");
        }
    }

    fn record_status_name(s: AttendanceStatus) -> String {
        let n = s.variant_name().unwrap();
        let mut out = String::new();
        for (i, c) in n.chars().enumerate() {
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
}
