//! Attendance rules through the pipeline, table-driven: one scenario per
//! rule, each a list of punches at fixed times in a fixed time zone (never
//! the wall clock), with the verdict, reason, status, slot and anomaly
//! flags each must get.
//!
//! The rules are `RULES` below, with the China 2025 holiday calendar from
//! `config/holidays/`. Every scenario runs on a fresh pipeline.

use std::path::Path;
use std::sync::Arc;

use fencegate::fences::Fences;
use fencegate::log::Lsn;
use fencegate::pipeline::{Pipeline, PipelineConfig, PunchDecision, Scratch, Session};
use fencegate::rules::config::{CompileContext, compile_text, fixed_qr_keys};
use fencegate::rules::holidays::Calendars;
use fencegate::rules::{AttendanceSettings, Rules, RulesHandle};
use fencegate::sink::{Batch, Offered};
use fencegate_schema::{
    AttendanceStatus as S, Channel, Limits, Position, PunchKind, PunchMethod, PunchMsg, Reason,
    RecordBodyView, Request, TerminalAuth, Verdict, anomaly, parse_frame, parse_record,
};
use fencegate_spatial::{FenceIndex, FenceSet, FenceSpec, IndexOptions, LoadOptions, Point};
use flatbuffers::FlatBufferBuilder;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
/// acme's Shanghai office (200 m circle) and Shenzhen campus (300 m).
const HQ: (f64, f64) = (31.2304, 121.4737);
const SZ: (f64, f64) = (22.5405, 113.9495);
/// globex's Berlin office (150 m circle).
const BERLIN: (f64, f64) = (52.5096, 13.3760);

const RULES: &str = r#"
[tenants.acme]
timezone = "Asia/Shanghai"
holidays = ["cn-2025"]
default_group = "office"
out_of_range = "approval"
accuracy = { policy = "tolerant", max_m = 150.0 }
min_interval_min = 30
impossible_speed_kmh = 300.0

[tenants.acme.groups.office]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri"]
slots = [{ name = "day", start = "09:00", end = "18:00" }]
late_grace_min = 10

[tenants.acme.groups.guards]
schedule = "shift"
shifts = [{ name = "night", start = "22:00", end = "06:00" }]
rotation = ["night", "night", "rest", "rest"]
rotation_start = "2025-01-06"
late_grace_min = 5

[tenants.acme.groups.lab]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri"]
slots = [{ name = "day", start = "08:30", end = "17:30" }]
dual = { first = "gps", second = "fingerprint", within_min = 15 }

[tenants.acme.departments.ops]
supervisor = "E0100"

[tenants.acme.employees.E1001]
department = "ops"
devices = ["phone-e1001"]

[tenants.acme.employees.E1002]
# Routed to their own approver, not the department's.
department = "ops"
supervisor = "E0999"

[tenants.acme.employees.E2001]
group = "guards"

[tenants.acme.employees.E3001]
group = "lab"
department = "ops"

[tenants.acme.sites.shanghai]
wifi = ["ac:84:c6:01:02:03"]
qr = true
terminals = ["term-sh-lab"]

[tenants.globex]
timezone = "Europe/Berlin"
default_group = "office"
out_of_range = "field"
accuracy = { policy = "strict", max_m = 100.0 }

[tenants.globex.groups.office]
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri"]
slots = [{ name = "day", start = "08:00", end = "16:30" }]
late_grace_min = 15
early_grace_min = 10

[tenants.globex.groups.depot]
schedule = "shift"
shifts = [
  { name = "early", start = "06:00", end = "14:00" },
  { name = "late", start = "14:00", end = "22:00" },
  { name = "night", start = "22:00", end = "06:00" },
]
rotation = ["early", "early", "late", "late", "night", "night", "rest"]
rotation_start = "2025-01-06"

[tenants.globex.groups.nightowls]
# A slot that starts inside the hour the spring DST change skips.
schedule = "fixed"
workdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
slots = [{ name = "owl", start = "02:30", end = "07:00" }]

[tenants.globex.employees.G1]
group = "depot"

[tenants.globex.employees.G2]
group = "nightowls"

[tenants.globex.sites.berlin]
qr = true
terminals = ["term-berlin-depot"]
"#;

fn rules() -> Rules {
    let mut keys = fixed_qr_keys(7);
    let mut ctx = CompileContext {
        calendars: Calendars::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/holidays"),
        ),
        settings: AttendanceSettings::default(),
        qr_key: &mut keys,
    };
    compile_text(RULES, "tests/rules.rs", &["acme", "globex"], &mut ctx)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn pipeline(t0: i64) -> Pipeline {
    let mut shanghai =
        FenceSpec::circle("hq-north", "acme", Point::new(HQ.0, HQ.1).unwrap(), 200.0);
    shanghai.site = Some("shanghai".into());
    let mut shenzhen =
        FenceSpec::circle("sz-campus", "acme", Point::new(SZ.0, SZ.1).unwrap(), 300.0);
    shenzhen.site = Some("shenzhen".into());
    let mut berlin = FenceSpec::circle(
        "berlin-office",
        "globex",
        Point::new(BERLIN.0, BERLIN.1).unwrap(),
        150.0,
    );
    berlin.site = Some("berlin".into());
    let index = FenceIndex::build(
        FenceSet::from_parts([shanghai, shenzhen, berlin]),
        &IndexOptions::default(),
    );
    let cfg = PipelineConfig {
        node: "test".into(),
        repeat_window_ms: 5 * MIN,
        idempotency_horizon_ms: 86_400_000,
        heartbeat_ms: 5 * MIN,
        cell_resolution: h3o::Resolution::Nine,
        max_punch_keys: 10_000,
        max_employees: 1_000_000,
        max_devices: 1_000,
    };
    let fences = Arc::new(Fences::new(index, LoadOptions::default()));
    let rules = Arc::new(RulesHandle::new(rules(), RULES.into()));
    Pipeline::with_rules(cfg, fences, rules, t0)
}

/// Unix ms of an RFC 3339 time (with its offset, so the zone is explicit).
fn t(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .as_millisecond()
}

/// The QR code of a site at a time, as the screen would show it.
fn qr(tenant: &str, site: &str, at: i64) -> String {
    let rules = rules();
    let key = rules
        .tenant(tenant)
        .sites
        .iter()
        .find(|s| &*s.name == site)
        .and_then(|s| s.qr.clone())
        .unwrap();
    key.0.code(tenant, site, at / 30_000)
}

/// How a punch proves presence.
#[derive(Clone)]
enum How {
    Gps((f64, f64), f32),
    Wifi([u8; 6]),
    Qr(String),
    Terminal(TerminalAuth),
}

/// One punch of a scenario and what it must get.
#[derive(Clone)]
struct Step {
    /// Gateway time.
    now: i64,
    tenant: &'static str,
    device: &'static str,
    employee: &'static str,
    kind: PunchKind,
    how: How,
    /// Device time (gateway time when `None`).
    device_time: Option<i64>,
    offline: bool,
    mock: bool,
    want: (Verdict, Reason, S),
    /// Expected slot label, if checked.
    slot: Option<&'static str>,
    /// Flags that must be set, and flags that must not be.
    flags: u64,
    not_flags: u64,
    /// A position sent with a Wi-Fi, QR or terminal punch (and accuracy).
    extra_position: Option<((f64, f64), f32)>,
}

fn step(now: i64, employee: &'static str, kind: PunchKind, how: How) -> Step {
    Step {
        now,
        tenant: "acme",
        device: "phone-e1001",
        employee,
        kind,
        how,
        device_time: None,
        offline: false,
        mock: false,
        want: (Verdict::Accepted, Reason::None, S::Normal),
        slot: None,
        flags: 0,
        not_flags: 0,
        extra_position: None,
    }
}

impl Step {
    fn want(mut self, v: Verdict, r: Reason, s: S) -> Self {
        self.want = (v, r, s);
        self
    }
    fn status(mut self, s: S) -> Self {
        self.want.2 = s;
        self
    }
    fn slot(mut self, slot: &'static str) -> Self {
        self.slot = Some(slot);
        self
    }
    fn flags(mut self, f: u64) -> Self {
        self.flags = f;
        self
    }
    fn not_flags(mut self, f: u64) -> Self {
        self.not_flags = f;
        self
    }
    fn from(mut self, tenant: &'static str, device: &'static str) -> Self {
        self.tenant = tenant;
        self.device = device;
        self
    }
    fn device_time(mut self, at: i64, offline: bool) -> Self {
        self.device_time = Some(at);
        self.offline = offline;
        self
    }
    fn mock(mut self) -> Self {
        self.mock = true;
        self
    }
    fn with_position(mut self, at: (f64, f64), accuracy_m: f32) -> Self {
        self.extra_position = Some((at, accuracy_m));
        self
    }
}

struct Outcome {
    verdict: Verdict,
    reason: Reason,
    record_id: [u8; 16],
    record: Option<Vec<u8>>,
}

fn run_step(p: &Pipeline, id: u128, s: &Step) -> Outcome {
    let mut msg = PunchMsg {
        punch_id: id.to_be_bytes(),
        employee_id: s.employee.into(),
        kind: s.kind,
        method: PunchMethod::Gps,
        device_time_ms: s.device_time.unwrap_or(s.now),
        position: None,
        bssids: vec![],
        ssid: None,
        qr_payload: None,
        terminal_auth: TerminalAuth::None,
        offline: s.offline,
        mock_location: s.mock,
    };
    match &s.how {
        How::Gps(at, acc) => msg.position = Some(Position::new(at.0, at.1, *acc)),
        How::Wifi(b) => {
            msg.method = PunchMethod::Wifi;
            msg.bssids = vec![*b];
            msg.ssid = Some("Office".into());
        }
        How::Qr(code) => {
            msg.method = PunchMethod::Qr;
            msg.qr_payload = Some(code.clone());
        }
        How::Terminal(auth) => {
            msg.method = PunchMethod::Terminal;
            msg.terminal_auth = *auth;
        }
    }
    if let Some((at, acc)) = s.extra_position {
        msg.position = Some(Position::new(at.0, at.1, acc));
    }
    let mut fbb = FlatBufferBuilder::new();
    let bytes = msg.encode_into(&mut fbb).to_vec();
    let Ok(Request::Punch(view)) = parse_frame(&bytes, Channel::Stream, s.now, &Limits::default())
    else {
        panic!("test frame must parse");
    };
    let session = Session::new(s.tenant, s.device);
    match p.punch(s.now, &session, &view, &mut Scratch::default()) {
        PunchDecision::Record {
            record,
            ack,
            pending,
        } => {
            let record = record.to_vec();
            p.settle(
                &pending,
                fencegate::pipeline::Settled::Committed(ack.verdict),
            );
            Outcome {
                verdict: ack.verdict,
                reason: ack.reason,
                record_id: ack.record_id,
                record: Some(record),
            }
        }
        PunchDecision::Known(ack) => Outcome {
            verdict: ack.verdict,
            reason: ack.reason,
            record_id: ack.record_id,
            record: None,
        },
        other => panic!("unexpected {other:?}"),
    }
}

/// Runs every step of a scenario on a fresh pipeline and checks each.
fn scenario(name: &str, steps: &[Step]) -> Vec<Outcome> {
    let p = pipeline(steps[0].now);
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let o = run_step(&p, (i + 1) as u128, s);
        let at = format!("{name}, punch {}", i + 1);
        assert_eq!(
            (o.verdict, o.reason),
            (s.want.0, s.want.1),
            "{at}: verdict and reason"
        );
        let rec = o
            .record
            .as_ref()
            .unwrap_or_else(|| panic!("{at}: a record"));
        let view = parse_record(rec).unwrap();
        let RecordBodyView::Punch(pr) = view.body() else {
            panic!("{at}: a punch record")
        };
        assert_eq!(pr.status(), s.want.2, "{at}: status");
        assert_eq!(
            pr.verdict(),
            s.want.0,
            "{at}: the record's verdict is the ack's"
        );
        if let Some(slot) = s.slot {
            assert_eq!(pr.slot(), Some(slot), "{at}: slot");
        }
        assert_eq!(
            pr.anomaly_flags() & s.flags,
            s.flags,
            "{at}: flags {:#b} must include {:#b}",
            pr.anomaly_flags(),
            s.flags
        );
        assert_eq!(
            pr.anomaly_flags() & s.not_flags,
            0,
            "{at}: flags {:#b} must not include {:#b}",
            pr.anomaly_flags(),
            s.not_flags
        );
        out.push(o);
    }
    out
}

const IN: PunchKind = PunchKind::In;
const OUT: PunchKind = PunchKind::Out;

fn gps(at: (f64, f64)) -> How {
    How::Gps(at, 10.0)
}

#[test]
fn seed_grace_minutes_9_10_is_normal_and_9_11_is_late() {
    // Tuesday 2025-03-04, Shanghai (UTC+8), start 09:00 with 10 minutes of grace.
    scenario(
        "grace",
        &[
            step(t("2025-03-04T09:10:00+08:00"), "E1001", IN, gps(HQ)).slot("2025-03-04/day"),
            step(t("2025-03-04T09:11:00+08:00"), "E5001", IN, gps(HQ))
                .status(S::Late)
                .slot("2025-03-04/day"),
            step(t("2025-03-04T09:10:59+08:00"), "E5002", IN, gps(HQ)),
            step(t("2025-03-04T08:40:00+08:00"), "E5003", IN, gps(HQ)),
            step(t("2025-03-04T17:59:00+08:00"), "E5003", OUT, gps(HQ)).status(S::EarlyLeave),
            step(t("2025-03-04T18:00:00+08:00"), "E5004", OUT, gps(HQ)),
        ],
    );
}

#[test]
fn seed_guard_shift_22_to_06_crosses_midnight() {
    // E2001's rotation puts a night shift on 2025-03-04 (day 57 of a
    // 4-day cycle from 2025-01-06) and a rest day on 2025-03-05.
    scenario(
        "guard shift",
        &[
            step(t("2025-03-04T21:55:00+08:00"), "E2001", IN, gps(HQ)).slot("2025-03-04/night"),
            step(t("2025-03-05T05:30:00+08:00"), "E2001", OUT, gps(HQ))
                .status(S::EarlyLeave)
                .slot("2025-03-04/night"),
            step(t("2025-03-05T06:00:00+08:00"), "E2001", OUT, gps(HQ))
                .want(Verdict::Accepted, Reason::None, S::Normal)
                .slot("2025-03-04/night"),
        ],
    );
    scenario(
        "guard shift, late",
        &[step(t("2025-03-04T22:06:00+08:00"), "E2001", IN, gps(HQ))
            .status(S::Late)
            .slot("2025-03-04/night")],
    );
    // Two days later the rotation rests: any punch is off-schedule.
    scenario(
        "guard rest day",
        &[step(t("2025-03-06T23:00:00+08:00"), "E2001", IN, gps(HQ)).slot("2025-03-06/rest")],
    );
}

#[test]
fn seed_holiday_excluded_and_make_up_workday_included() {
    scenario(
        "holidays",
        &[
            // National Day, a Wednesday: no schedule, so 09:30 is not late.
            step(t("2025-10-01T09:30:00+08:00"), "E1001", IN, gps(HQ)).slot("2025-10-01/rest"),
            // Sunday 2025-09-28 is a make-up workday: 09:30 is late.
            step(t("2025-09-28T09:30:00+08:00"), "E5001", IN, gps(HQ))
                .status(S::Late)
                .slot("2025-09-28/day"),
            // An ordinary Sunday is off.
            step(t("2025-09-21T09:30:00+08:00"), "E5002", IN, gps(HQ)).slot("2025-09-21/rest"),
        ],
    );
}

#[test]
fn seed_repeat_within_five_minutes_is_merged() {
    let out = scenario(
        "repeat",
        &[
            step(t("2025-03-04T08:55:00+08:00"), "E1001", IN, gps(HQ)),
            step(t("2025-03-04T08:59:59+08:00"), "E1001", IN, gps(HQ)).want(
                Verdict::RepeatMerged,
                Reason::None,
                S::RepeatMerged,
            ),
            step(t("2025-03-04T09:00:00+08:00"), "E1001", IN, gps(HQ)),
        ],
    );
    assert_eq!(out[1].record_id, out[0].record_id, "merged into the first");
    let rec = parse_record(out[1].record.as_ref().unwrap()).unwrap();
    let RecordBodyView::Punch(pr) = rec.body() else {
        panic!()
    };
    assert_eq!(pr.merged_into().map(|u| u.0), Some(out[0].record_id));
}

#[test]
fn seed_out_of_range_punch_goes_to_approval_with_routing() {
    let away = (HQ.0 + 0.01, HQ.1); // ~1.1 km north
    let out = scenario(
        "out of range",
        &[
            step(t("2025-03-04T09:00:00+08:00"), "E1001", IN, gps(away)).want(
                Verdict::OutOfRange,
                Reason::OutOfRange,
                S::OutOfRangePendingApproval,
            ),
        ],
    );
    let rec = parse_record(out[0].record.as_ref().unwrap()).unwrap();
    let a = rec.attendance().unwrap();
    assert!(a.needs_approval);
    assert_eq!(a.department, Some("ops"));
    assert_eq!(a.supervisor, Some("E0100"), "the department's supervisor");
    assert_eq!(a.group, Some("office"));
    let RecordBodyView::Punch(pr) = rec.body() else {
        panic!()
    };
    assert_eq!(pr.nearest_fence_id(), Some("hq-north"));
    assert!(pr.distance_m() > 800.0, "{}", pr.distance_m());
    assert_eq!(
        pr.slot(),
        Some("2025-03-04/day"),
        "still judged for its slot"
    );
}

/// Offers one record to a sink batch, as a forwarder does, and returns
/// whether the sinks send it to the tenant's approval subject as well.
fn routed_to_approval(record: &[u8]) -> (bool, String) {
    let mut b = Batch::new(Lsn(0), 4);
    assert_eq!(b.offer(Lsn(0), 0, record), Offered::Added);
    b.seal();
    let r = b.records().next().unwrap();
    (r.needs_approval(), r.tenant().to_owned())
}

#[test]
fn seed_approval_records_are_routed_with_department_and_supervisor() {
    let away = (HQ.0 + 0.01, HQ.1);
    let now = t("2025-03-04T09:00:00+08:00");
    let out = scenario(
        "approval routing",
        &[
            // The department's supervisor approves E1001...
            step(now, "E1001", IN, gps(away)).want(
                Verdict::OutOfRange,
                Reason::OutOfRange,
                S::OutOfRangePendingApproval,
            ),
            // ...E1002 has an approver of their own...
            step(now, "E1002", IN, gps(away)).want(
                Verdict::OutOfRange,
                Reason::OutOfRange,
                S::OutOfRangePendingApproval,
            ),
            // ...and a punch inside the fence needs nobody.
            step(now, "E5001", IN, gps(HQ)).from("acme", "phone-5001"),
        ],
    );
    for (o, supervisor) in out[..2].iter().zip(["E0100", "E0999"]) {
        let rec = o.record.as_deref().unwrap();
        assert_eq!(
            routed_to_approval(rec),
            (true, "acme".to_owned()),
            "to fencegate.acme.approval"
        );
        // Both encodings the sinks send carry the routing.
        let view = parse_record(rec).unwrap();
        let a = view.attendance().unwrap();
        assert_eq!(
            (a.department, a.supervisor),
            (Some("ops"), Some(supervisor))
        );
        let j = fencegate::record_json::record_json(&view);
        assert_eq!(j["department"], "ops");
        assert_eq!(j["supervisor"], supervisor);
        assert_eq!(j["needs_approval"], true);
    }
    assert!(
        !routed_to_approval(out[2].record.as_deref().unwrap()).0,
        "a normal punch is not sent for approval"
    );
    // A field punch (globex's policy) is accepted, not sent for approval.
    let field = scenario(
        "field is not approval",
        &[step(
            t("2025-03-04T08:00:00+01:00"),
            "G9",
            IN,
            How::Gps((BERLIN.0 + 0.01, BERLIN.1), 10.0),
        )
        .from("globex", "phone-g9")
        .want(Verdict::Accepted, Reason::OutOfRange, S::Field)],
    );
    assert_eq!(
        routed_to_approval(field[0].record.as_deref().unwrap()),
        (false, "globex".to_owned())
    );
}

#[test]
fn seed_gps_then_fingerprint_16_minutes_apart_is_flagged_15_is_not() {
    let fp = How::Terminal(TerminalAuth::Fingerprint);
    let out = scenario(
        "dual 15",
        &[
            step(t("2025-03-04T08:10:00+08:00"), "E3001", IN, gps(HQ)).from("acme", "phone-3001"),
            step(t("2025-03-04T08:25:00+08:00"), "E3001", IN, fp.clone())
                .from("acme", "term-sh-lab")
                .not_flags(anomaly::DUAL_VERIFICATION_GAP),
        ],
    );
    let rec = parse_record(out[1].record.as_ref().unwrap()).unwrap();
    assert_eq!(
        rec.attendance().unwrap().paired_with,
        Some(out[0].record_id),
        "the second factor links the first"
    );
    assert_eq!(
        rec.attendance().unwrap().terminal_auth,
        TerminalAuth::Fingerprint
    );
    scenario(
        "dual 16",
        &[
            step(t("2025-03-04T08:10:00+08:00"), "E3001", IN, gps(HQ)).from("acme", "phone-3001"),
            step(t("2025-03-04T08:26:00+08:00"), "E3001", IN, fp.clone())
                .from("acme", "term-sh-lab")
                .flags(anomaly::DUAL_VERIFICATION_GAP),
        ],
    );
    scenario(
        "dual, no first factor",
        &[step(t("2025-03-04T08:26:00+08:00"), "E3001", IN, fp)
            .from("acme", "term-sh-lab")
            .flags(anomaly::DUAL_VERIFICATION_GAP)],
    );
}

/// Runs each step on its own fresh pipeline (checks of one employee's
/// punches that would otherwise merge as repeats).
fn each(name: &str, steps: &[Step]) {
    for (i, s) in steps.iter().enumerate() {
        scenario(&format!("{name} #{}", i + 1), std::slice::from_ref(s));
    }
}

#[test]
fn dst_spring_forward_in_berlin_moves_the_utc_start() {
    // Office 08:00 with 15 minutes of grace. Friday 2025-03-28 is CET (UTC+1),
    // Monday 2025-03-31 CEST (UTC+2): the same wall clock, an hour apart in UTC.
    let office = |now| {
        step(now, "G9", IN, How::Terminal(TerminalAuth::Face)).from("globex", "term-berlin-depot")
    };
    each(
        "dst office",
        &[
            office(t("2025-03-28T07:15:00Z")).slot("2025-03-28/day"),
            office(t("2025-03-28T07:16:00Z")).status(S::Late),
            office(t("2025-03-31T06:15:00Z")).slot("2025-03-31/day"),
            office(t("2025-03-31T06:16:00Z")).status(S::Late),
        ],
    );
}

#[test]
fn dst_night_shift_across_both_changes_is_measured_in_real_time() {
    let depot = |now, kind| {
        step(now, "G1", kind, How::Terminal(TerminalAuth::Nfc)).from("globex", "term-berlin-depot")
    };
    // 2025-03-29 is a night in G1's rotation: 22:00 CET (21:00Z) to 06:00
    // CEST (04:00Z), seven hours.
    each(
        "dst spring night",
        &[
            depot(t("2025-03-29T21:00:00Z"), IN).slot("2025-03-29/night"),
            depot(t("2025-03-29T21:01:00Z"), IN).status(S::Late),
            depot(t("2025-03-30T03:59:00Z"), OUT)
                .status(S::EarlyLeave)
                .slot("2025-03-29/night"),
            depot(t("2025-03-30T04:00:00Z"), OUT).slot("2025-03-29/night"),
        ],
    );
    // 2025-10-25: 22:00 CEST (20:00Z) to 06:00 CET (05:00Z), nine hours.
    each(
        "dst autumn night",
        &[
            depot(t("2025-10-25T20:00:00Z"), IN).slot("2025-10-25/night"),
            depot(t("2025-10-26T04:59:00Z"), OUT).status(S::EarlyLeave),
            depot(t("2025-10-26T05:00:00Z"), OUT).slot("2025-10-25/night"),
        ],
    );
}

#[test]
fn dst_a_start_inside_the_skipped_hour_resolves_to_the_later_offset() {
    // 02:30 does not exist in Berlin on 2025-03-30; the slot starts at 03:30
    // CEST (01:30Z). On the day after it is 02:30 CEST (00:30Z).
    let owl = |now| {
        step(now, "G2", IN, How::Terminal(TerminalAuth::Face)).from("globex", "term-berlin-depot")
    };
    each(
        "dst gap",
        &[
            owl(t("2025-03-30T01:30:00Z")).slot("2025-03-30/owl"),
            owl(t("2025-03-30T01:31:00Z")).status(S::Late),
            owl(t("2025-03-31T00:30:00Z")).slot("2025-03-31/owl"),
            owl(t("2025-03-31T00:31:00Z")).status(S::Late),
        ],
    );
}

#[test]
fn qr_codes_are_good_once_per_employee_and_only_while_current() {
    let now = t("2025-03-04T08:59:40+08:00");
    let code = qr("acme", "shanghai", now);
    let out = scenario(
        "qr",
        &[
            step(now, "E1001", IN, How::Qr(code.clone())),
            // The same employee scanning the same code again: a replay.
            step(now + 20_000, "E1001", OUT, How::Qr(code.clone())).want(
                Verdict::Rejected,
                Reason::QrReplay,
                S::Rejected,
            ),
            // Another employee may scan it (one screen, many people), within
            // its step and one step of skew...
            step(now + 40_000, "E5001", IN, How::Qr(code.clone())).from("acme", "phone-5001"),
            // ...but not two steps later.
            step(now + 70_000, "E5002", IN, How::Qr(code.clone()))
                .from("acme", "phone-5002")
                .want(Verdict::Rejected, Reason::QrExpired, S::Rejected),
        ],
    );
    let rec = parse_record(out[0].record.as_ref().unwrap()).unwrap();
    assert_eq!(rec.attendance().unwrap().site, Some("shanghai"));

    let mut forged = code.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    scenario(
        "qr forged and foreign",
        &[
            step(now, "E1001", IN, How::Qr(forged)).want(
                Verdict::Rejected,
                Reason::QrInvalid,
                S::Rejected,
            ),
            step(now, "E1001", IN, How::Qr("https://example.com/".into())).want(
                Verdict::Rejected,
                Reason::QrInvalid,
                S::Rejected,
            ),
            // globex's code means nothing to acme, even for a site of the same name.
            step(now, "E1001", IN, How::Qr(qr("globex", "berlin", now))).want(
                Verdict::Rejected,
                Reason::QrInvalid,
                S::Rejected,
            ),
            // A code from a step not shown yet.
            step(
                now,
                "E1001",
                IN,
                How::Qr(qr("acme", "shanghai", now + 60_000)),
            )
            .want(Verdict::Rejected, Reason::QrInvalid, S::Rejected),
        ],
    );
}

#[test]
fn a_qr_use_is_released_when_its_record_cannot_be_written() {
    let now = t("2025-03-04T09:00:00+08:00");
    let p = pipeline(now);
    let msg = PunchMsg {
        punch_id: [9; 16],
        employee_id: "E1001".into(),
        kind: IN,
        method: PunchMethod::Qr,
        device_time_ms: now,
        position: None,
        bssids: vec![],
        ssid: None,
        qr_payload: Some(qr("acme", "shanghai", now)),
        terminal_auth: TerminalAuth::None,
        offline: false,
        mock_location: false,
    };
    let mut fbb = FlatBufferBuilder::new();
    let bytes = msg.encode_into(&mut fbb).to_vec();
    let Ok(Request::Punch(view)) = parse_frame(&bytes, Channel::Stream, now, &Limits::default())
    else {
        panic!()
    };
    let s = Session::new("acme", "phone-e1001");
    let PunchDecision::Record { pending, .. } = p.punch(now, &s, &view, &mut Scratch::default())
    else {
        panic!()
    };
    p.settle(&pending, fencegate::pipeline::Settled::Failed);
    // The client's retry of the same punch is decided afresh and accepted,
    // not refused as a replay of its own first attempt.
    let PunchDecision::Record { ack, .. } = p.punch(now + 500, &s, &view, &mut Scratch::default())
    else {
        panic!()
    };
    assert_eq!((ack.verdict, ack.reason), (Verdict::Accepted, Reason::None));
}

#[test]
fn offline_punches_are_judged_by_device_time_within_72_hours() {
    let now = t("2025-03-07T08:00:00+08:00");
    scenario(
        "offline",
        &[
            // Taken 73 hours ago: too old.
            step(now, "E1001", IN, gps(HQ))
                .device_time(now - 73 * HOUR, true)
                .want(Verdict::Rejected, Reason::OfflineTooOld, S::Rejected)
                .flags(anomaly::OFFLINE),
            // 70 h 48 min ago (Tuesday 09:12): judged by that time, late.
            step(now, "E5001", IN, gps(HQ))
                .from("acme", "phone-5001")
                .device_time(t("2025-03-04T09:12:00+08:00"), true)
                .status(S::Late)
                .slot("2025-03-04/day")
                .flags(anomaly::OFFLINE)
                .not_flags(anomaly::CLOCK_SKEW),
        ],
    );
}

#[test]
fn clocks_that_cannot_be_right_are_flagged() {
    let now = t("2025-03-04T09:00:00+08:00");
    scenario(
        "clock skew",
        &[
            // An online punch whose device clock is 10 minutes behind.
            step(now, "E1001", IN, gps(HQ))
                .device_time(now - 10 * MIN, false)
                .flags(anomaly::CLOCK_SKEW),
            // An offline punch "taken" after it was uploaded.
            step(now, "E5001", IN, gps(HQ))
                .from("acme", "phone-5001")
                .device_time(now + 2 * MIN, true)
                .flags(anomaly::CLOCK_SKEW | anomaly::OFFLINE),
        ],
    );
}

#[test]
fn unusual_device_is_flagged_but_terminals_and_bound_devices_are_not() {
    let now = t("2025-03-04T09:00:00+08:00");
    scenario(
        "devices",
        &[
            step(now, "E1001", IN, gps(HQ))
                .from("acme", "phone-stranger")
                .flags(anomaly::UNUSUAL_DEVICE),
            step(now + 6 * MIN, "E1001", IN, gps(HQ)).not_flags(anomaly::UNUSUAL_DEVICE),
            step(
                now + 12 * MIN,
                "E1001",
                IN,
                How::Terminal(TerminalAuth::Face),
            )
            .from("acme", "term-sh-lab")
            .status(S::Late)
            .not_flags(anomaly::UNUSUAL_DEVICE),
            // An employee with no bound devices is never flagged.
            step(now, "E5001", IN, gps(HQ))
                .from("acme", "any-phone")
                .not_flags(anomaly::UNUSUAL_DEVICE),
        ],
    );
}

#[test]
fn wifi_needs_a_registered_bssid_and_terminals_must_be_trusted() {
    let now = t("2025-03-04T09:00:00+08:00");
    let out = scenario(
        "wifi and terminals",
        &[
            step(now, "E1001", IN, How::Wifi([0xac, 0x84, 0xc6, 1, 2, 3])),
            step(now, "E5001", IN, How::Wifi([0xac, 0x84, 0xc6, 9, 9, 9])).want(
                Verdict::Rejected,
                Reason::WifiUnknown,
                S::Rejected,
            ),
            step(now, "E5002", IN, How::Terminal(TerminalAuth::Nfc))
                .from("acme", "term-unknown")
                .want(Verdict::Rejected, Reason::TerminalUntrusted, S::Rejected),
            // A trusted terminal of another tenant is not trusted here.
            step(now, "E5003", IN, How::Terminal(TerminalAuth::Nfc))
                .from("acme", "term-berlin-depot")
                .want(Verdict::Rejected, Reason::TerminalUntrusted, S::Rejected),
        ],
    );
    let rec = parse_record(out[0].record.as_ref().unwrap()).unwrap();
    assert_eq!(rec.attendance().unwrap().site, Some("shanghai"));
}

#[test]
fn anti_cheat_flags_mock_location_speed_and_zero_accuracy_repeats() {
    let now = t("2025-03-04T09:00:00+08:00");
    scenario(
        "anti-cheat",
        &[
            step(now, "E5001", IN, How::Gps(HQ, 0.0))
                .from("acme", "p")
                .mock()
                .flags(anomaly::MOCK_LOCATION),
            // 1200 km in forty minutes.
            step(now + 40 * MIN, "E5001", OUT, How::Gps(SZ, 0.0))
                .from("acme", "p")
                .status(S::EarlyLeave)
                .flags(anomaly::IMPOSSIBLE_SPEED)
                .not_flags(anomaly::ZERO_ACCURACY_REPEAT),
            // The same coordinates to the last bit, again with 0 m accuracy.
            step(now + 80 * MIN, "E5001", OUT, How::Gps(SZ, 0.0))
                .from("acme", "p")
                .status(S::EarlyLeave)
                .flags(anomaly::ZERO_ACCURACY_REPEAT)
                .not_flags(anomaly::IMPOSSIBLE_SPEED),
        ],
    );
}

#[test]
fn a_clock_out_within_the_minimum_interval_is_merged_into_the_clock_in() {
    let now = t("2025-03-04T09:00:00+08:00");
    let out = scenario(
        "min interval",
        &[
            step(now, "E1001", IN, gps(HQ)),
            step(now + 10 * MIN, "E1001", OUT, gps(HQ)).want(
                Verdict::RepeatMerged,
                Reason::None,
                S::RepeatMerged,
            ),
            step(now + 31 * MIN, "E1001", OUT, gps(HQ)).status(S::EarlyLeave),
        ],
    );
    assert_eq!(out[1].record_id, out[0].record_id);
}

#[test]
fn out_of_range_policies_field_and_strict_accuracy() {
    // globex: outside → a field punch; strict accuracy with a 100 m cap.
    let now = t("2025-03-04T08:00:00+01:00");
    let g = |at, acc| step(now, "G9", IN, How::Gps(at, acc)).from("globex", "phone-g9");
    scenario(
        "globex",
        &[
            g((BERLIN.0 + 0.01, BERLIN.1), 10.0).want(
                Verdict::Accepted,
                Reason::OutOfRange,
                S::Field,
            ),
            // 0.0012° ≈ 133 m from the centre: the 60 m disc crosses the edge.
            g((BERLIN.0 + 0.0012, BERLIN.1), 60.0).want(
                Verdict::Rejected,
                Reason::AccuracyTooLow,
                S::Rejected,
            ),
            g(BERLIN, 120.0).want(Verdict::Rejected, Reason::AccuracyTooLow, S::Rejected),
        ],
    );
    scenario(
        "globex inside",
        &[step(now + MIN, "G9", IN, How::Gps(BERLIN, 20.0)).from("globex", "phone-g9")],
    );
}

#[test]
fn a_rejected_punch_is_recorded_once_and_a_resend_gets_the_same_ack() {
    let now = t("2025-03-04T09:00:00+08:00");
    let p = pipeline(now);
    let s = step(now, "E1001", IN, How::Wifi([1, 2, 3, 4, 5, 6])).want(
        Verdict::Rejected,
        Reason::WifiUnknown,
        S::Rejected,
    );
    let first = run_step(&p, 77, &s);
    assert!(first.record.is_some(), "the refusal is on record");
    let again = run_step(
        &p,
        77,
        &step(now + MIN, "E1001", IN, How::Wifi([1, 2, 3, 4, 5, 6])),
    );
    assert!(again.record.is_none(), "a resend is never recorded twice");
    assert_eq!(
        (again.verdict, again.reason, again.record_id),
        (first.verdict, first.reason, first.record_id)
    );
}

#[test]
fn tenants_without_rules_keep_the_defaults() {
    let now = t("2025-03-04T09:00:00+08:00");
    let p = pipeline(now);
    let o = run_step(&p, 1, &step(now, "e", IN, gps(HQ)).from("initech", "d"));
    // initech has neither rules nor fences: pending approval, NoFences.
    assert_eq!(
        (o.verdict, o.reason),
        (Verdict::OutOfRange, Reason::NoFences)
    );
}

#[test]
fn a_swap_of_the_rules_applies_to_the_next_punch() {
    let now = t("2025-03-04T09:30:00+08:00");
    let p = pipeline(now);
    let late = run_step(&p, 1, &step(now, "E5001", IN, gps(HQ)));
    let rec = parse_record(late.record.as_ref().unwrap()).unwrap();
    let RecordBodyView::Punch(pr) = rec.body() else {
        panic!()
    };
    assert_eq!(pr.status(), S::Late);
    let text = RULES.replace("late_grace_min = 10", "late_grace_min = 45");
    let mut keys = fixed_qr_keys(7);
    let mut ctx = CompileContext {
        calendars: Calendars::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/holidays"),
        ),
        settings: AttendanceSettings::default(),
        qr_key: &mut keys,
    };
    let rules = compile_text(&text, "swap", &["acme", "globex"], &mut ctx).unwrap();
    assert_eq!(p.rules().store(rules, text), 2);
    let on_time = run_step(&p, 2, &step(now, "E5002", IN, gps(HQ)));
    let rec = parse_record(on_time.record.as_ref().unwrap()).unwrap();
    let RecordBodyView::Punch(pr) = rec.body() else {
        panic!()
    };
    assert_eq!(pr.status(), S::Normal);
}

#[test]
fn wifi_ssid_alone_is_never_trusted() {
    let now = t("2025-03-04T09:00:00+08:00");
    // A Wi-Fi punch naming only the network: the parser refuses it before
    // any rule sees it (no BSSID, nothing to verify).
    let msg = PunchMsg {
        punch_id: [3; 16],
        employee_id: "E1001".into(),
        kind: IN,
        method: PunchMethod::Wifi,
        device_time_ms: now,
        position: None,
        bssids: vec![],
        ssid: Some("Office".into()),
        qr_payload: None,
        terminal_auth: TerminalAuth::None,
        offline: false,
        mock_location: false,
    };
    let mut fbb = FlatBufferBuilder::new();
    let bytes = msg.encode_into(&mut fbb).to_vec();
    assert_eq!(
        parse_frame(&bytes, Channel::Stream, now, &Limits::default()).err(),
        Some(Reason::MissingField)
    );
    // The office's SSID with an access point that is not registered.
    scenario(
        "ssid with a foreign bssid",
        &[
            step(now, "E1001", IN, How::Wifi([0xac, 0x84, 0xc6, 1, 2, 4])).want(
                Verdict::Rejected,
                Reason::WifiUnknown,
                S::Rejected,
            ),
        ],
    );
    // And there is no way to register an SSID: the rules refuse the key.
    let text = RULES.replace(
        "wifi = [\"ac:84:c6:01:02:03\"]",
        "wifi = [\"ac:84:c6:01:02:03\"]\nssid = \"Office\"",
    );
    let mut keys = fixed_qr_keys(7);
    let mut ctx = CompileContext {
        calendars: Calendars::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/holidays"),
        ),
        settings: AttendanceSettings::default(),
        qr_key: &mut keys,
    };
    let err = compile_text(&text, "ssid.toml", &["acme", "globex"], &mut ctx).unwrap_err();
    assert!(err.to_string().contains("ssid"), "{err}");
}

#[test]
fn early_leave_grace_counts_whole_minutes_before_the_end() {
    // globex office ends 16:30 with 10 minutes of early-leave grace;
    // 2025-03-04 is CET (UTC+1).
    let out = |now| {
        step(now, "G9", OUT, How::Terminal(TerminalAuth::Face)).from("globex", "term-berlin-depot")
    };
    each(
        "early grace",
        &[
            out(t("2025-03-04T16:20:00+01:00")).slot("2025-03-04/day"),
            out(t("2025-03-04T16:19:59+01:00")).status(S::EarlyLeave),
            out(t("2025-03-04T16:45:00+01:00")),
        ],
    );
}

#[test]
fn tolerant_accuracy_lets_the_point_decide_up_to_the_cap() {
    // acme: tolerant, 150 m cap. 0.00135° north is ~150 m from the centre
    // of the 200 m fence, so a 140 m disc crosses its edge.
    let now = t("2025-03-04T09:00:00+08:00");
    let near_edge = (HQ.0 + 0.00135, HQ.1);
    each(
        "tolerant",
        &[
            step(now, "E5001", IN, How::Gps(near_edge, 140.0)).from("acme", "p"),
            step(now, "E5001", IN, How::Gps(near_edge, 150.0)).from("acme", "p"),
            step(now, "E5001", IN, How::Gps(HQ, 151.0))
                .from("acme", "p")
                .want(Verdict::Rejected, Reason::AccuracyTooLow, S::Rejected),
        ],
    );
}

#[test]
fn dst_a_start_in_the_repeated_hour_resolves_to_the_earlier_offset() {
    // 02:30 happens twice in Berlin on 2025-10-26: 00:30Z (CEST) and 01:30Z
    // (CET). The slot starts at the first; the second is an hour late.
    let owl = |now| {
        step(now, "G2", IN, How::Terminal(TerminalAuth::Face)).from("globex", "term-berlin-depot")
    };
    each(
        "dst fold",
        &[
            owl(t("2025-10-26T00:30:00Z")).slot("2025-10-26/owl"),
            owl(t("2025-10-26T00:31:00Z")).status(S::Late),
            owl(t("2025-10-26T01:30:00Z"))
                .status(S::Late)
                .slot("2025-10-26/owl"),
        ],
    );
}

#[test]
fn an_offline_punch_exactly_72_hours_old_is_still_accepted() {
    let now = t("2025-03-07T08:00:00+08:00");
    each(
        "offline window edge",
        &[
            step(now, "E5009", IN, gps(HQ))
                .from("acme", "phone-5009")
                .device_time(now - 72 * HOUR, true)
                .slot("2025-03-04/day")
                .flags(anomaly::OFFLINE),
            step(now, "E5009", IN, gps(HQ))
                .from("acme", "phone-5009")
                .device_time(now - 72 * HOUR - 1, true)
                .want(Verdict::Rejected, Reason::OfflineTooOld, S::Rejected),
        ],
    );
}

#[test]
fn a_plausible_journey_is_not_impossible_speed() {
    // Shanghai to Shenzhen (~1,200 km) in five hours is 240 km/h, under
    // acme's 300 km/h; the same trip in four hours (300+ km/h) is flagged.
    let now = t("2025-03-04T09:00:00+08:00");
    for (hours, flagged) in [(5, false), (4, true)] {
        let second = step(now + hours * HOUR, "E5005", OUT, gps(SZ))
            .from("acme", "p5")
            .status(S::EarlyLeave);
        let second = if flagged {
            second.flags(anomaly::IMPOSSIBLE_SPEED)
        } else {
            second.not_flags(anomaly::IMPOSSIBLE_SPEED)
        };
        scenario(
            &format!("journey in {hours} h"),
            &[step(now, "E5005", IN, gps(HQ)).from("acme", "p5"), second],
        );
    }
}

#[test]
fn a_qr_code_stays_used_across_a_restart() {
    let now = t("2025-03-04T08:59:40+08:00");
    let code = qr("acme", "shanghai", now);
    let first = scenario(
        "qr before the restart",
        &[step(now, "E1001", IN, How::Qr(code.clone()))],
    );
    // A restarted node rebuilds its memory from the log, then sees the
    // same employee scan the same code again.
    let p = pipeline(now + 10_000);
    let bytes = first[0].record.as_deref().unwrap();
    let rec = parse_record(bytes).unwrap();
    let RecordBodyView::Punch(pr) = rec.body() else {
        panic!("a punch record")
    };
    p.replay_punch(
        now + 10_000,
        "acme",
        &pr,
        rec.gateway_time_ms(),
        rec.record_id(),
    )
    .unwrap();
    let again = run_step(
        &p,
        2,
        &step(now + 20_000, "E1001", OUT, How::Qr(code.clone())),
    );
    assert_eq!(
        (again.verdict, again.reason),
        (Verdict::Rejected, Reason::QrReplay)
    );
    // Another employee with the same code is unaffected.
    let other = run_step(
        &p,
        3,
        &step(now + 20_000, "E5001", IN, How::Qr(code)).from("acme", "phone-5001"),
    );
    assert_eq!(
        (other.verdict, other.reason),
        (Verdict::Accepted, Reason::None)
    );
}

#[test]
fn evidence_far_from_the_verified_site_is_flagged() {
    // The Shanghai access point and terminal verify site "shanghai"; a GPS
    // position sent along is compared with that site (threshold 1000 m,
    // after the fix's accuracy).
    let now = t("2025-03-04T09:00:00+08:00");
    let ap = [0xac, 0x84, 0xc6, 1, 2, 3];
    // About 50 km west of the office, and about 700 m north of it.
    let far = (HQ.0, HQ.1 - 0.52);
    let near = (HQ.0 + 0.0063, HQ.1);
    scenario(
        "evidence",
        &[
            step(now, "E5001", IN, How::Wifi(ap))
                .with_position(HQ, 10.0)
                .not_flags(anomaly::EVIDENCE_MISMATCH),
            step(now, "E5002", IN, How::Wifi(ap))
                .with_position(far, 10.0)
                .flags(anomaly::EVIDENCE_MISMATCH),
            step(now, "E5003", IN, How::Wifi(ap))
                .with_position(near, 10.0)
                .not_flags(anomaly::EVIDENCE_MISMATCH),
            // Inside the Shenzhen campus: the position names another site.
            step(now, "E5004", IN, How::Wifi(ap))
                .with_position(SZ, 10.0)
                .flags(anomaly::EVIDENCE_MISMATCH),
            step(now, "E5005", IN, How::Terminal(TerminalAuth::Face))
                .from("acme", "term-sh-lab")
                .with_position(far, 10.0)
                .flags(anomaly::EVIDENCE_MISMATCH),
            step(now, "E5006", IN, How::Qr(qr("acme", "shanghai", now)))
                .with_position(far, 10.0)
                .flags(anomaly::EVIDENCE_MISMATCH),
            // A poor fix whose accuracy disc reaches the site is not flagged.
            step(now, "E5007", IN, How::Wifi(ap))
                .with_position((HQ.0 + 0.018, HQ.1), 1_500.0)
                .not_flags(anomaly::EVIDENCE_MISMATCH),
            // No position at all: nothing to compare.
            step(now, "E5008", IN, How::Wifi(ap)).not_flags(anomaly::EVIDENCE_MISMATCH),
        ],
    );
    // A GPS punch is judged by its fence, never by this flag.
    scenario(
        "gps is not evidence-checked",
        &[step(now, "E5009", IN, gps(far))
            .want(
                Verdict::OutOfRange,
                Reason::OutOfRange,
                S::OutOfRangePendingApproval,
            )
            .not_flags(anomaly::EVIDENCE_MISMATCH)],
    );
}
