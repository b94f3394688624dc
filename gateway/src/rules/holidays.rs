//! Holiday calendars: days off and make-up workdays (调休), per tenant,
//! imported from TOML or CSV files.
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

use std::path::Path;

use serde::Deserialize;

#[cfg(test)]
use super::schedule::day_number;
use super::schedule::day_of;

/// A compiled calendar: sorted day numbers, looked up by binary search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holidays {
    off: Vec<i32>,
    make_up: Vec<i32>,
}

impl Holidays {
    /// Whether `day` (see [`day_number`]) is a holiday.
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
        self.finish();
    }

    fn finish(&mut self) {
        self.off.sort_unstable();
        self.off.dedup();
        self.make_up.sort_unstable();
        self.make_up.dedup();
    }

    /// Builds a calendar from date strings (`YYYY-MM-DD` or an inclusive
    /// `YYYY-MM-DD..YYYY-MM-DD` range); every bad entry is reported, named
    /// with `what`.
    pub fn from_lists(
        off: &[String],
        make_up: &[String],
        what: &str,
        problems: &mut Vec<String>,
    ) -> Self {
        let mut h = Holidays::default();
        for (list, out, field) in [
            (off, &mut h.off, "off"),
            (make_up, &mut h.make_up, "workdays"),
        ] {
            for entry in list {
                match parse_days(entry) {
                    Ok((a, b)) => out.extend(a..=b),
                    Err(e) => problems.push(format!("{what}: {field} entry {entry:?}: {e}")),
                }
            }
        }
        for d in &h.make_up {
            if h.off.contains(d) {
                let (y, m, dd) = super::schedule::civil_from_day(*d);
                problems.push(format!(
                    "{what}: {y:04}-{m:02}-{dd:02} is listed both as a holiday and as a make-up workday"
                ));
            }
        }
        h.finish();
        h
    }

    /// Reads a calendar file (`.toml` or `.csv`); problems are collected,
    /// each naming the file and the line or entry.
    pub fn load(path: &Path, problems: &mut Vec<String>) -> Self {
        let what = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("holiday calendar {what}: cannot read it: {e}"));
                return Self::default();
            }
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Self::parse_toml(&text, &what, problems),
            Some("csv") => Self::parse_csv(&text, &what, problems),
            _ => {
                problems.push(format!(
                    "holiday calendar {what}: use a .toml or .csv file (see docs/ATTENDANCE.md)"
                ));
                Self::default()
            }
        }
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
        }
        match toml::from_str::<Raw>(text) {
            Ok(raw) => Self::from_lists(
                &raw.off,
                &raw.workdays,
                &format!("holiday calendar {what}"),
                problems,
            ),
            Err(e) => {
                problems.push(format!(
                    "holiday calendar {what}: {}",
                    e.to_string().trim_end().replace('\n', "\n    ")
                ));
                Self::default()
            }
        }
    }

    /// Parses the CSV form.
    pub fn parse_csv(text: &str, what: &str, problems: &mut Vec<String>) -> Self {
        let mut off = Vec::new();
        let mut make_up = Vec::new();
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
                    problems.push(format!("holiday calendar {what}: {e}"));
                    continue;
                }
            };
            let line = rec.position().map_or(0, csv::Position::line);
            let date = rec.get(0).unwrap_or("").to_owned();
            match rec.get(1).unwrap_or("") {
                "off" => off.push(date),
                "workday" => make_up.push(date),
                other => problems.push(format!(
                    "holiday calendar {what}: line {line}: type {other:?} is not `off` or `workday`"
                )),
            }
        }
        Self::from_lists(
            &off,
            &make_up,
            &format!("holiday calendar {what}"),
            problems,
        )
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
        assert!(p[0].contains("line 5") && p[0].contains("holiday"), "{p:?}");
        assert!(p[1].contains("2025-13-01"), "{p:?}");
    }

    #[test]
    fn a_day_both_off_and_worked_is_refused() {
        let mut p = Vec::new();
        Holidays::from_lists(&["2025-10-01".into()], &["2025-10-01".into()], "x", &mut p);
        assert_eq!(p.len(), 1);
    }
}
