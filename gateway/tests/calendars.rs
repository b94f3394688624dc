//! Holiday calendars that do not silently run out: coverage and its
//! warnings, the shipped calendars, and `fencegate holidays import`.

use std::path::Path;

use fencegate::cmd::holidays::convert;
use fencegate::rules::AttendanceSettings;
use fencegate::rules::config::{CompileContext, base_dir_of, compile_text, fixed_qr_keys};
use fencegate::rules::holidays::{Calendars, Coverage, Holidays, calendar_reports};
use fencegate::rules::schedule::day_number;

fn t(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

#[test]
fn coverage_runs_through_consecutive_years_and_notes_provisional_ones() {
    let mut p = Vec::new();
    let y2026 = Holidays::parse_toml("years = [2026]\noff = [\"2026-10-01\"]", "cn-2026", &mut p);
    let y2027 = Holidays::parse_toml(
        "years = [2027]\nprovisional = true\noff = [\"2027-10-01\"]",
        "cn-2027",
        &mut p,
    );
    let csv = Holidays::parse_csv("date,type\n2025-12-25,off\n", "de", &mut p);
    assert!(p.is_empty(), "{p:?}");
    let mut h = Holidays::default();
    assert!(!h.has_calendar());
    h.merge(&csv);
    // 2025 only (a CSV covers the years it lists): 31 days of December.
    assert_eq!(
        h.coverage(day_number(2025, 12, 1), 60),
        Coverage {
            covered_days: 31,
            provisional_from: None
        }
    );
    h.merge(&y2026);
    h.merge(&y2027);
    let nov1 = day_number(2026, 11, 1);
    let c = h.coverage(nov1, 90);
    assert_eq!(c.covered_days, day_number(2028, 1, 1) - nov1);
    assert_eq!(c.provisional_from, Some(day_number(2027, 1, 1)));
    // Beyond the horizon a provisional year is not reported yet.
    assert_eq!(
        h.coverage(day_number(2026, 6, 1), 60).provisional_from,
        None
    );
    // A gap year ends the coverage.
    let mut gap = Holidays::default();
    gap.merge(&csv);
    gap.merge(&y2027);
    assert_eq!(gap.coverage(day_number(2025, 12, 1), 60).covered_days, 31);
    // Inline dates cover nothing.
    let inline = Holidays::from_lists(&["2030-01-01".into()], &[], "inline", &mut p);
    assert!(!inline.has_calendar());
    // A year covered for good is not provisional.
    let mut both = y2027.clone();
    both.merge(&Holidays::parse_toml("years = [2027]", "x", &mut p));
    assert_eq!(
        both.coverage(day_number(2027, 1, 1), 60).provisional_from,
        None
    );
}

/// The shipped example rules with the shipped calendars.
fn sample(text: &str) -> fencegate::rules::Rules {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules.toml");
    let mut keys = fixed_qr_keys(1);
    let mut ctx = CompileContext {
        calendars: Calendars::load(&base_dir_of(&path).join("holidays")),
        settings: AttendanceSettings::default(),
        qr_key: &mut keys,
    };
    compile_text(text, "config/rules.toml", &["acme", "globex"], &mut ctx)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_shipped_calendars_cover_2025_to_2027_and_say_2027_is_provisional() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules.toml"))
            .unwrap();
    let rules = sample(&text);
    let acme = rules.tenant("acme");
    // 2026's arrangement: Spring Festival 9 days, a Saturday make-up day.
    assert!(acme.holidays.is_off(day_number(2026, 2, 23)));
    assert!(acme.holidays.is_make_up(day_number(2026, 2, 28)));
    assert!(acme.holidays.is_off(day_number(2027, 2, 5)));
    // Mid-year 2026: everything covered, nothing provisional within 60 days.
    let reports = calendar_reports(&rules, t("2026-06-01T00:00:00Z"), 60);
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.warning.is_none()), "{reports:?}");
    // December 2026: acme's 2027 is provisional; globex's Berlin 2027 is law.
    let reports = calendar_reports(&rules, t("2026-12-02T00:00:00Z"), 60);
    let acme = reports.iter().find(|r| r.tenant == "acme").unwrap();
    assert!(
        acme.warning.as_deref().unwrap().contains("provisional"),
        "{acme:?}"
    );
    let globex = reports.iter().find(|r| r.tenant == "globex").unwrap();
    assert_eq!(globex.warning, None);
    // With only 2025 named, the calendar has run out: a warning naming the fix.
    let old = text.replace(r#"["cn-2025", "cn-2026", "cn-2027"]"#, r#"["cn-2025"]"#);
    let reports = calendar_reports(&sample(&old), t("2025-11-15T00:00:00Z"), 60);
    let acme = reports.iter().find(|r| r.tenant == "acme").unwrap();
    assert_eq!(acme.coverage.covered_days, 47);
    let w = acme.warning.as_deref().unwrap();
    assert!(
        w.contains("2025-12-31") && w.contains("holidays import"),
        "{w}"
    );
    let reports = calendar_reports(&sample(&old), t("2026-12-02T00:00:00Z"), 60);
    let acme = reports.iter().find(|r| r.tenant == "acme").unwrap();
    assert_eq!(acme.coverage.covered_days, 0);
}

#[test]
fn holiday_cn_imports_with_make_up_days() {
    let src = r#"{"year": 2026, "papers": ["https://www.gov.cn/x.htm"], "days": [
        {"name": "元旦", "date": "2026-01-01", "isOffDay": true},
        {"name": "元旦", "date": "2026-01-04", "isOffDay": false},
        {"name": "春节", "date": "2026-02-15", "isOffDay": true}]}"#;
    let out = convert("holiday-cn", src, "cn-2026").unwrap();
    let mut p = Vec::new();
    let h = Holidays::parse_toml(&out, "t", &mut p);
    assert!(p.is_empty(), "{p:?}\n{out}");
    assert_eq!(h.len(), (2, 1), "{out}");
    assert!(h.is_make_up(day_number(2026, 1, 4)));
    assert_eq!(h.coverage(day_number(2026, 1, 1), 60).covered_days, 365);
}

#[test]
fn an_unpublished_year_and_bad_sources_are_refused() {
    let e = convert(
        "holiday-cn",
        r#"{"year": 2027, "papers": [], "days": []}"#,
        "cn-2027",
    )
    .unwrap_err();
    assert!(e.contains("not published"), "{e}");
    let e = convert(
        "holiday-cn",
        r#"{"year": 2027, "days": [{"name": "x", "date": "2027-13-01", "isOffDay": true}]}"#,
        "cn-2027",
    )
    .unwrap_err();
    assert!(e.contains("cannot use"), "{e}");
    let e = convert(
        "holiday-cn",
        r#"{"year": 2027, "days": [{"name": "x", "date": "2028-01-01", "isOffDay": true}]}"#,
        "cn-2027",
    )
    .unwrap_err();
    assert!(e.contains("mixes years"), "{e}");
    assert!(
        convert("ics", "{}", "x")
            .unwrap_err()
            .contains("holiday-cn or feiertage-api")
    );
}

#[test]
fn feiertage_api_days_are_all_off() {
    let src = r#"{"Neujahrstag": {"datum": "2027-01-01", "hinweis": ""},
                  "Karfreitag": {"datum": "2027-03-26", "hinweis": ""}}"#;
    let out = convert("feiertage-api", src, "de-be-2027").unwrap();
    let mut p = Vec::new();
    assert_eq!(Holidays::parse_toml(&out, "t", &mut p).len(), (2, 0));
}
