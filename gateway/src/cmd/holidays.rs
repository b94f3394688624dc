//! `fencegate holidays import`: turns a downloaded file of a maintained
//! public source into a calendar file of the operator's calendar folder, so
//! next year's calendar is one download and one command, not hand typing.
//!
//! Sources (docs/ATTENDANCE.md, "Holiday calendars"):
//! - `holiday-cn`: <https://github.com/NateScarlet/holiday-cn>, one
//!   `<year>.json` per year, scraped daily from the State Council's notices:
//!   `{"year": 2026, "papers": [...], "days": [{"name", "date", "isOffDay"}]}`.
//!   A day with `isOffDay = false` is a make-up workday (调休).
//! - `feiertage-api`: <https://feiertage-api.de>, `?jahr=<year>&nur_land=<state>`:
//!   `{"Neujahrstag": {"datum": "2027-01-01", "hinweis": ""}, ...}`, all
//!   days off.
//!
//! The gateway never downloads anything itself: the operator fetches the file
//! (curl) and this command checks and converts it, refusing a year the
//! source does not list yet.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::rules::holidays::{Holidays, valid_calendar_name};

/// Arguments of `fencegate holidays import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Source format: `holiday-cn` (NateScarlet/holiday-cn `<year>.json`) or
    /// `feiertage-api` (feiertage-api.de JSON for one state and year).
    #[arg(long)]
    pub format: String,
    /// The downloaded file.
    #[arg(long)]
    pub input: PathBuf,
    /// Calendar name, e.g. `cn-2027`: the file written is `<dir>/<name>.toml`
    /// and rules name it in a tenant's `holidays`.
    #[arg(long)]
    pub name: String,
    /// The calendar folder (`[attendance] holidays_dir`, by default
    /// `holidays/` beside the rules file).
    #[arg(long)]
    pub dir: PathBuf,
    /// Replace an existing calendar of that name (e.g. a provisional one).
    #[arg(long)]
    pub force: bool,
}

#[derive(Deserialize)]
struct HolidayCn {
    year: i32,
    #[serde(default)]
    papers: Vec<String>,
    days: Vec<HolidayCnDay>,
}

#[derive(Deserialize)]
struct HolidayCnDay {
    name: String,
    date: String,
    #[serde(rename = "isOffDay")]
    is_off_day: bool,
}

#[derive(Deserialize)]
struct FeiertagDay {
    datum: String,
}

/// Converts a source file's text into calendar TOML named `name`. Errors
/// name the problem and the fix.
pub fn convert(format: &str, text: &str, name: &str) -> Result<String, String> {
    let (year, source, off, workdays) = match format {
        "holiday-cn" => {
            let doc: HolidayCn = serde_json::from_str(text).map_err(|e| {
                format!("not a holiday-cn year file ({e}); download https://raw.githubusercontent.com/NateScarlet/holiday-cn/master/<year>.json")
            })?;
            if doc.days.is_empty() {
                return Err(format!(
                    "holiday-cn lists no days for {}: the State Council has not published that year's arrangement yet; keep the provisional calendar and import again once it is out",
                    doc.year
                ));
            }
            let mut off = Vec::new();
            let mut work = Vec::new();
            for d in doc.days {
                let line = format!("  \"{}\",   # {}", d.date, d.name.replace('\n', " "));
                if d.is_off_day {
                    off.push((d.date, line));
                } else {
                    work.push((d.date, line));
                }
            }
            let papers = doc
                .papers
                .iter()
                .map(|p| format!("#   {p}\n"))
                .collect::<String>();
            (
                doc.year,
                format!(
                    "holiday-cn (NateScarlet/holiday-cn), from the State Council's notices:\n{papers}"
                ),
                off,
                work,
            )
        }
        "feiertage-api" => {
            let doc: BTreeMap<String, FeiertagDay> = serde_json::from_str(text).map_err(|e| {
                format!("not a feiertage-api answer ({e}); download https://feiertage-api.de/api/?jahr=<year>&nur_land=<state>")
            })?;
            if doc.is_empty() {
                return Err(
                    "the feiertage-api answer lists no days; check the year and state asked for"
                        .into(),
                );
            }
            let mut off: Vec<(String, String)> = doc
                .into_iter()
                .map(|(n, d)| {
                    let line = format!("  \"{}\",   # {}", d.datum, n.replace('\n', " "));
                    (d.datum, line)
                })
                .collect();
            off.sort();
            let year = off[0].0.get(..4).and_then(|y| y.parse().ok()).unwrap_or(0);
            (year, "feiertage-api.de\n".to_owned(), off, Vec::new())
        }
        other => {
            return Err(format!(
                "--format {other:?} is unknown; use holiday-cn or feiertage-api"
            ));
        }
    };
    let mut out = format!(
        "# Imported by `fencegate holidays import --format {format}` from\n# {source}name = \"{name}\"\nyears = [{year}]\n\noff = [\n"
    );
    let sorted = |mut v: Vec<(String, String)>| {
        v.sort();
        v.into_iter().map(|(_, l)| l + "\n").collect::<String>()
    };
    out.push_str(&sorted(off));
    out.push_str("]\n\nworkdays = [\n");
    out.push_str(&sorted(workdays));
    out.push_str("]\n");
    // Check the result the way the gateway will read it.
    let mut problems = Vec::new();
    let h = Holidays::parse_toml(&out, name, &mut problems);
    if !problems.is_empty() {
        return Err(format!(
            "the source has dates the gateway cannot use: {}",
            problems.join("; ")
        ));
    }
    for d in h.days() {
        let (y, _, _) = crate::rules::schedule::civil_from_day(d);
        if y != year {
            return Err(format!(
                "the source mixes years ({y} in a {year} file); import one year per calendar"
            ));
        }
    }
    Ok(out)
}

/// Runs `fencegate holidays import`.
pub fn import(args: &ImportArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        valid_calendar_name(&args.name),
        "--name {:?} is not a calendar name; use 1 to 64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit, e.g. cn-2027",
        args.name
    );
    let text = std::fs::read_to_string(&args.input).map_err(|e| {
        anyhow::anyhow!(
            "cannot read --input {}: {e}; download the source file first (docs/ATTENDANCE.md, \"Holiday calendars\")",
            args.input.display()
        )
    })?;
    let toml = convert(&args.format, &text, &args.name).map_err(anyhow::Error::msg)?;
    let path = args.dir.join(format!("{}.toml", args.name));
    let csv = args.dir.join(format!("{}.csv", args.name));
    anyhow::ensure!(
        !csv.exists(),
        "{} exists; a calendar name is one file, remove the CSV first",
        csv.display()
    );
    if args.force {
        crate::persist::atomic_replace(&path, toml.as_bytes(), crate::persist::SHARED)?;
    } else {
        anyhow::ensure!(
            crate::persist::create_new(&path, toml.as_bytes(), crate::persist::SHARED)?,
            "{} exists; pass --force to replace it (e.g. a provisional calendar)",
            path.display()
        );
    }
    eprintln!(
        "wrote {}; name \"{}\" in a tenant's `holidays` and reload the rules (PUT /v1/rules or restart)",
        path.display(),
        args.name
    );
    Ok(())
}
