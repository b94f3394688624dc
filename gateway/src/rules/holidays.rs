//! Holiday calendars: days off and make-up workdays (调休), per tenant.
//!
//! Calendars are **named, not pathed**: the operator keeps calendar files in
//! one folder (`[attendance] holidays_dir` in fencegate.toml, by default
//! `holidays/` beside the rules file), and a tenant's rules refer to them by
//! name (`holidays = ["cn-2025"]` is `cn-2025.toml` or `cn-2025.csv` there),
//! plus optional inline dates. A name is checked against
//! `^[a-z0-9][a-z0-9_-]{0,63}$` and looked up in the folder's listing, so no
//! string from a rules file or a `PUT /v1/rules` body ever becomes a path.
//! Only regular files are listed (a symlink in the folder is not a
//! calendar), and problems in a file name its line or entry, never its
//! content, so an error answer tells a tenant nothing about files.
//!
//! TOML:
//!
//! ```toml
//! name = "cn-2025"
//! off = ["2025-01-01", "2025-10-01..2025-10-08"]   # a range is inclusive
//! workdays = ["2025-09-28", "2025-10-11"]           # make-up workdays
//! ```
//!
//! CSV (a header line, then one date per line; `#` starts a comment line):
//!
//! ```text
//! date,type,name
//! 2025-10-03,off,Tag der Deutschen Einheit
//! ```
//!
//! `type` is `off` (a holiday) or `workday` (a make-up workday).
//!
//! A calendar covers the years it lists a day of, or those its TOML
//! `years = [...]` names; `provisional = true` marks a year whose official
//! arrangement was not published yet. [`calendar_reports`] tells
//! `/readyz` and the metrics how far each tenant's calendars reach, so a
//! calendar never runs out silently.

use std::path::Path;

use serde::Deserialize;

#[cfg(test)]
use super::calendar::day_number;
use super::calendar::day_of;

/// A compiled calendar: sorted day numbers, looked up by binary search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holidays {
    off: Vec<i32>,
    make_up: Vec<i32>,
    /// Years a calendar *file* covers (its `years`, or every year it lists
    /// a day of), sorted. Inline dates cover nothing: a tenant's one extra
    /// day does not make a year's statutory calendar present.
    years: Vec<i32>,
    /// Years covered only provisionally (`provisional = true`: the official
    /// arrangement was not published when the file was written).
    provisional: Vec<i32>,
}

/// How far a tenant's holiday calendars reach from a given day: what
/// `/readyz` and the `fencegate_holiday_calendar_*` metrics report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    /// Days from today (inclusive) that the calendars cover without a gap;
    /// 0 when today's year has no calendar.
    pub covered_days: i32,
    /// The first day within the horizon whose year is covered only by a
    /// provisional calendar.
    pub provisional_from: Option<i32>,
}

impl Holidays {
    /// Whether `day` (see [`day_number`](super::calendar::day_number)) is a holiday.
    pub fn is_off(&self, day: i32) -> bool {
        self.off.binary_search(&day).is_ok()
    }

    /// Whether `day` is a make-up workday.
    pub fn is_make_up(&self, day: i32) -> bool {
        self.make_up.binary_search(&day).is_ok()
    }

    /// Number of holidays and make-up workdays.
    pub fn len(&self) -> (usize, usize) {
        (self.off.len(), self.make_up.len())
    }

    /// Adds `other`'s days (several calendars may apply to one tenant).
    pub fn merge(&mut self, other: &Holidays) {
        self.off.extend_from_slice(&other.off);
        self.make_up.extend_from_slice(&other.make_up);
        self.years.extend_from_slice(&other.years);
        self.provisional.extend_from_slice(&other.provisional);
        self.finish();
    }

    fn finish(&mut self) {
        for v in [
            &mut self.off,
            &mut self.make_up,
            &mut self.years,
            &mut self.provisional,
        ] {
            v.sort_unstable();
            v.dedup();
        }
        // A year some calendar covers for good is not provisional.
        let (years, provisional) = (&self.years, &mut self.provisional);
        provisional.retain(|y| !years.contains(y));
    }

    /// Every holiday and make-up workday, as day numbers.
    pub fn days(&self) -> impl Iterator<Item = i32> + '_ {
        self.off.iter().chain(&self.make_up).copied()
    }

    /// Whether any calendar file applies (inline dates alone do not count).
    pub fn has_calendar(&self) -> bool {
        !self.years.is_empty() || !self.provisional.is_empty()
    }

    /// How far the calendars reach from `today` (a day number), looking
    /// `horizon_days` ahead for provisional years.
    pub fn coverage(&self, today: i32, horizon_days: i32) -> Coverage {
        let covered = |y: i32| self.years.contains(&y) || self.provisional.contains(&y);
        let (mut y, _, _) = super::calendar::civil_from_day(today);
        let mut covered_days = 0;
        if covered(y) {
            while covered(y + 1) {
                y += 1;
            }
            covered_days = super::calendar::day_number(y + 1, 1, 1) - today;
        }
        let end = today + horizon_days.min(covered_days);
        let mut provisional_from = None;
        for &p in &self.provisional {
            let first = super::calendar::day_number(p, 1, 1).max(today);
            if first < end && provisional_from.is_none_or(|d| first < d) {
                provisional_from = Some(first);
            }
        }
        Coverage {
            covered_days,
            provisional_from,
        }
    }

    /// Marks every year this calendar lists a day of as covered (a file
    /// without an explicit `years`).
    fn cover_own_years(&mut self) {
        for &d in self.off.iter().chain(&self.make_up) {
            self.years.push(super::calendar::civil_from_day(d).0);
        }
        self.finish();
    }

    /// Builds a calendar from date strings (`YYYY-MM-DD` or an inclusive
    /// `YYYY-MM-DD..YYYY-MM-DD` range) written by the rules' author (inline
    /// dates); every bad entry is reported, quoted, named with `what`.
    pub fn from_lists(
        off: &[String],
        make_up: &[String],
        what: &str,
        problems: &mut Vec<String>,
    ) -> Self {
        let quoted = |field: &str, list: &[String]| -> Vec<(String, String)> {
            list.iter()
                .map(|d| (format!("{field} entry {d:?}"), d.clone()))
                .collect()
        };
        Self::build(
            quoted("off", off),
            quoted("workdays", make_up),
            what,
            true,
            problems,
        )
    }

    /// Builds a calendar from `(where, date)` entries. `quote_dates`: whether
    /// a problem may show a date; false for files, whose content is never
    /// shown (`where` names the line or list position instead).
    fn build(
        off: Vec<(String, String)>,
        make_up: Vec<(String, String)>,
        what: &str,
        quote_dates: bool,
        problems: &mut Vec<String>,
    ) -> Self {
        let mut h = Holidays::default();
        for (list, out) in [(&off, &mut h.off), (&make_up, &mut h.make_up)] {
            for (at, entry) in list {
                match parse_days(entry) {
                    Ok((a, b)) => out.extend(a..=b),
                    Err(e) => problems.push(format!("{what}: {at}: {e}")),
                }
            }
        }
        let both: Vec<i32> = h
            .make_up
            .iter()
            .copied()
            .filter(|d| h.off.contains(d))
            .collect();
        if quote_dates {
            for d in &both {
                let (y, m, dd) = super::calendar::civil_from_day(*d);
                problems.push(format!(
                    "{what}: {y:04}-{m:02}-{dd:02} is listed both as a holiday and as a make-up workday"
                ));
            }
        } else if !both.is_empty() {
            problems.push(format!(
                "{what}: {} day(s) are listed both as a holiday and as a make-up workday; list each day once",
                both.len()
            ));
        }
        h.finish();
        h
    }

    /// Parses the TOML form.
    pub fn parse_toml(text: &str, what: &str, problems: &mut Vec<String>) -> Self {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            #[allow(dead_code, reason = "documentation for people reading the file")]
            name: Option<String>,
            #[serde(default)]
            off: Vec<String>,
            #[serde(default)]
            workdays: Vec<String>,
            /// Years the file covers; every year it lists a day of unless set.
            #[serde(default)]
            years: Option<Vec<i32>>,
            /// The official arrangement was not published yet: the days are
            /// the statutory ones only, and readiness says so.
            #[serde(default)]
            provisional: bool,
        }
        match toml::from_str::<Raw>(text) {
            Ok(raw) => {
                let mut h = Self::toml_days(&raw.off, &raw.workdays, what, problems);
                match &raw.years {
                    Some(years) => {
                        for &y in years {
                            if (1970..=9999).contains(&y) {
                                h.years.push(y);
                            } else {
                                problems.push(format!(
                                    "holiday calendar {what}: years has an entry outside 1970 to 9999"
                                ));
                            }
                        }
                        h.finish();
                    }
                    None => h.cover_own_years(),
                }
                if raw.provisional {
                    h.provisional = std::mem::take(&mut h.years);
                }
                h
            }
            Err(e) => {
                // The parser's message quotes the file; only the line is reported.
                let line = e.span().map_or(0, |r| {
                    text.as_bytes()[..r.start.min(text.len())]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                        + 1
                });
                problems.push(format!(
                    "holiday calendar {what}: line {line} is not valid; a calendar has `off` and `workdays` lists of \"YYYY-MM-DD\" dates (see docs/ATTENDANCE.md)"
                ));
                Self::default()
            }
        }
    }

    /// The days of a TOML calendar, problems named by list position.
    fn toml_days(
        off: &[String],
        workdays: &[String],
        what: &str,
        problems: &mut Vec<String>,
    ) -> Self {
        let label = |field: &str, list: &[String]| -> Vec<(String, String)> {
            list.iter()
                .enumerate()
                .map(|(i, d)| (format!("{field}[{i}]"), d.clone()))
                .collect()
        };
        Self::build(
            label("off", off),
            label("workdays", workdays),
            &format!("holiday calendar {what}"),
            false,
            problems,
        )
    }

    /// Parses the CSV form.
    pub fn parse_csv(text: &str, what: &str, problems: &mut Vec<String>) -> Self {
        let mut off: Vec<(String, String)> = Vec::new();
        let mut make_up: Vec<(String, String)> = Vec::new();
        let mut rdr = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header_ok = rdr
            .headers()
            .map(|h| h.get(0) == Some("date") && h.get(1) == Some("type"))
            .unwrap_or(false);
        if !header_ok {
            problems.push(format!(
                "holiday calendar {what}: the first line must be the header `date,type[,name]`"
            ));
            return Self::default();
        }
        for rec in rdr.records() {
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map_or(0, csv::Position::line);
                    problems.push(format!(
                        "holiday calendar {what}: line {line} cannot be read as CSV"
                    ));
                    continue;
                }
            };
            let line = rec.position().map_or(0, csv::Position::line);
            let date = rec.get(0).unwrap_or("").to_owned();
            match rec.get(1).unwrap_or("") {
                "off" => off.push((format!("line {line}"), date)),
                "workday" => make_up.push((format!("line {line}"), date)),
                _ => problems.push(format!(
                    "holiday calendar {what}: line {line}: the type is not `off` or `workday`"
                )),
            }
        }
        let mut h = Self::build(
            off,
            make_up,
            &format!("holiday calendar {what}"),
            false,
            problems,
        );
        h.cover_own_years();
        h
    }
}

/// How many days ahead every tenant's holiday calendars must reach before
/// `/readyz` stops warning.
pub const CALENDAR_HORIZON_DAYS: i32 = 60;

/// One tenant's calendar coverage, with a warning when it runs out within
/// the horizon or is provisional there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarReport {
    /// Tenant id.
    pub tenant: String,
    /// How far its calendars reach.
    pub coverage: Coverage,
    /// What an operator should do, when anything.
    pub warning: Option<String>,
}

fn date_string(day: i32) -> String {
    let (y, m, d) = super::calendar::civil_from_day(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The calendar coverage of every tenant that names at least one calendar
/// file, at `now_ms` (each tenant's "today" in its own zone), looking
/// `horizon_days` ahead. Tenants without calendars observe none and are
/// not reported.
pub fn calendar_reports(
    rules: &super::Rules,
    now_ms: i64,
    horizon_days: i32,
) -> Vec<CalendarReport> {
    let mut out = Vec::new();
    let mut ids: Vec<&str> = rules.tenant_ids().collect();
    ids.sort_unstable();
    for id in ids {
        let t = rules.tenant(id);
        if !t.holidays.has_calendar() {
            continue;
        }
        let local = now_ms + t.tz_table.offset_ms(&t.tz, now_ms);
        let today = local.div_euclid(86_400_000) as i32;
        let coverage = t.holidays.coverage(today, horizon_days);
        let warning = if coverage.covered_days < horizon_days {
            Some(if coverage.covered_days == 0 {
                format!(
                    "tenant {id}: no holiday calendar covers today ({}); add this year's calendar to the calendar folder ([attendance] holidays_dir; `fencegate holidays import`, docs/ATTENDANCE.md) and name it in the tenant's `holidays`",
                    date_string(today)
                )
            } else {
                format!(
                    "tenant {id}: the holiday calendars end on {}, in {} day(s); add next year's calendar to the calendar folder ([attendance] holidays_dir; `fencegate holidays import`, docs/ATTENDANCE.md) and name it in the tenant's `holidays`",
                    date_string(today + coverage.covered_days - 1),
                    coverage.covered_days
                )
            })
        } else {
            coverage.provisional_from.map(|d| {
                format!(
                    "tenant {id}: the holiday calendar from {} is provisional (statutory days only, no make-up workdays); import the official arrangement when it is published (`fencegate holidays import`, docs/ATTENDANCE.md)",
                    date_string(d)
                )
            })
        };
        out.push(CalendarReport {
            tenant: id.to_owned(),
            coverage,
            warning,
        });
    }
    out
}

/// Whether `name` is a calendar name: `^[a-z0-9][a-z0-9_-]{0,63}$`. No
/// dots and no slashes, so a name can never leave the calendar folder.
pub fn valid_calendar_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

/// One calendar of the operator's folder, compiled once per rules compile.
#[derive(Debug, Clone)]
struct Calendar {
    /// File name in the folder, for the operator's messages.
    file: String,
    days: Holidays,
    /// Problems in the file (content-free: lines and positions only).
    problems: Vec<String>,
}

/// The operator's calendars: every regular `<name>.toml` / `<name>.csv` file
/// of the calendar folder whose name is valid, looked up by name.
#[derive(Debug, Clone, Default)]
pub struct Calendars {
    by_name: std::collections::BTreeMap<String, Calendar>,
}

impl Calendars {
    /// Lists and parses the calendars in `dir`. A missing folder is an empty
    /// catalogue (any name used is then unknown); symlinks, folders, other
    /// extensions and invalid names are skipped, and a name present both as
    /// `.toml` and `.csv` is a problem the operator must resolve.
    pub fn load(dir: &Path) -> Self {
        let mut by_name = std::collections::BTreeMap::new();
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Self { by_name };
        };
        let mut files: Vec<(String, String, &'static str)> = Vec::new();
        for ent in rd.flatten() {
            // `file_type` does not follow symlinks: a link is never a calendar,
            // so the folder cannot be made to point elsewhere.
            if !ent.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let file = ent.file_name();
            let Some(file) = file.to_str() else { continue };
            let Some((name, ext)) = file.rsplit_once('.') else {
                continue;
            };
            let ext = match ext {
                "toml" => "toml",
                "csv" => "csv",
                _ => continue,
            };
            if valid_calendar_name(name) {
                files.push((name.to_owned(), file.to_owned(), ext));
            }
        }
        files.sort();
        for (name, file, ext) in files {
            let mut problems = Vec::new();
            let what = format!("{name} ({file})");
            let days = match std::fs::read_to_string(dir.join(&file)) {
                Ok(text) if ext == "toml" => Holidays::parse_toml(&text, &what, &mut problems),
                Ok(text) => Holidays::parse_csv(&text, &what, &mut problems),
                Err(e) => {
                    problems.push(format!(
                        "holiday calendar {what}: cannot read it ({}); the operator must fix the file's permissions",
                        e.kind()
                    ));
                    Holidays::default()
                }
            };
            if let Some(first) = by_name.get(&name).map(|c: &Calendar| c.file.clone()) {
                problems.push(format!(
                    "holiday calendar {name}: both {first} and {file} exist; the operator must remove one"
                ));
            }
            by_name.insert(
                name,
                Calendar {
                    file,
                    days,
                    problems,
                },
            );
        }
        Self { by_name }
    }

    /// The names of the calendars, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The calendar called `name`. The error names only `name`'s validity
    /// and the catalogue, never a file, so it reads the same whether or not
    /// a file of that name exists anywhere else.
    pub fn get(&self, name: &str, problems: &mut Vec<String>) -> Option<&Holidays> {
        if !valid_calendar_name(name) {
            problems.push(format!(
                "{name:?} is not a calendar name; calendars are named, not pathed: 1 to 64 characters of a-z, 0-9, '-' or '_', e.g. \"cn-2025\""
            ));
            return None;
        }
        let Some(c) = self.by_name.get(name) else {
            let known: Vec<&str> = self.names().collect();
            problems.push(format!(
                "there is no calendar named {name:?}; the operator's calendars are: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
            return None;
        };
        if !c.problems.is_empty() {
            problems.extend(c.problems.iter().cloned());
            return None;
        }
        Some(&c.days)
    }
}

/// Parses `YYYY-MM-DD` or an inclusive range `A..B` to day numbers.
fn parse_days(s: &str) -> Result<(i32, i32), String> {
    let one = |s: &str| -> Result<i32, String> {
        let d: jiff::civil::Date = s
            .trim()
            .parse()
            .map_err(|_| "not a date; write it as YYYY-MM-DD".to_owned())?;
        Ok(day_of(d))
    };
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if b < a {
                return Err("the range ends before it starts; write the earlier date first".into());
            }
            if b - a > 366 {
                return Err(
                    "the range is longer than a year; split it into ranges of at most a year"
                        .into(),
                );
            }
            Ok((a, b))
        }
        None => one(s).map(|d| (d, d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_ranges_and_make_up_days() {
        let mut p = Vec::new();
        let h = Holidays::parse_toml(
            "off = [\"2025-10-01..2025-10-08\"]\nworkdays = [\"2025-09-28\"]\n",
            "t",
            &mut p,
        );
        assert!(p.is_empty(), "{p:?}");
        assert!(h.is_off(day_number(2025, 10, 1)));
        assert!(h.is_off(day_number(2025, 10, 8)));
        assert!(!h.is_off(day_number(2025, 10, 9)));
        assert!(h.is_make_up(day_number(2025, 9, 28)));
        assert_eq!(h.len(), (8, 1));
    }

    #[test]
    fn csv_with_comments_and_every_bad_line_reported() {
        let mut p = Vec::new();
        let h = Holidays::parse_csv(
            "date,type,name\n# Berlin\n2025-10-03,off,Einheit\n2025-13-01,off,x\n2025-05-01,holiday,x\n",
            "b.csv",
            &mut p,
        );
        assert!(h.is_off(day_number(2025, 10, 3)));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("line 5"), "{p:?}");
        assert!(p[1].contains("line 4"), "{p:?}");
        // A file's content is never quoted back (a tenant could read files).
        for shown in ["\"holiday\"", "2025-13-01", "Einheit"] {
            assert!(!p.join("\n").contains(shown), "{shown} in {p:?}");
        }
    }

    #[test]
    fn calendars_are_named_regular_files_of_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("cn-2025.toml"), "off = [\"2025-10-01\"]\n").unwrap();
        std::fs::write(d.join("Bad.csv"), "date,type\n").unwrap();
        std::fs::write(d.join("notes.txt"), "x").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("s.csv"), "date,type\n2025-01-01,off\n").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path().join("s.csv"), d.join("evil.csv")).unwrap();
        let c = Calendars::load(d);
        assert_eq!(c.names().collect::<Vec<_>>(), ["cn-2025"]);
        let mut p = Vec::new();
        assert!(
            c.get("cn-2025", &mut p)
                .unwrap()
                .is_off(day_number(2025, 10, 1))
        );
        for bad in [
            "../s",
            "/etc/passwd",
            "Bad",
            "evil",
            "cn-2025.toml",
            "",
            "-x",
        ] {
            assert!(c.get(bad, &mut p).is_none(), "{bad}");
        }
        assert_eq!(p.len(), 7, "{p:?}");
        assert!(valid_calendar_name("a") && valid_calendar_name(&"a".repeat(64)));
        assert!(!valid_calendar_name(&"a".repeat(65)) && !valid_calendar_name("_a"));
    }

    #[test]
    fn a_day_both_off_and_worked_is_refused() {
        let mut p = Vec::new();
        Holidays::from_lists(&["2025-10-01".into()], &["2025-10-01".into()], "x", &mut p);
        assert_eq!(p.len(), 1);
    }
}
