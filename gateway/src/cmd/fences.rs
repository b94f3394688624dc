//! `fencegate fences check`: validate a fence file, summarise it and list every problem.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use fencegate_spatial::{FenceSet, LoadOptions, LoadReport};

/// Arguments of `fencegate fences check`.
#[derive(Debug, clap::Args)]
pub struct FencesCheckArgs {
    /// The GeoJSON FeatureCollection to check.
    pub file: PathBuf,
    /// Smallest circle radius accepted, in metres.
    #[arg(long, default_value_t = LoadOptions::default().min_radius_m)]
    pub min_radius_m: f64,
    /// Largest circle radius accepted, in metres.
    #[arg(long, default_value_t = LoadOptions::default().max_radius_m)]
    pub max_radius_m: f64,
}

impl FencesCheckArgs {
    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            min_radius_m: self.min_radius_m,
            max_radius_m: self.max_radius_m,
        }
    }
}

/// Validates the file and prints a summary (counts by type and by tenant) and every error to
/// stdout. Returns failure when any feature is invalid; an unreadable file or one that is not
/// a FeatureCollection is an `Err`.
pub fn fences_check(args: &FencesCheckArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading fence file {}", args.file.display()))?;
    let report = FenceSet::check_geojson_str(&text, &args.load_options())
        .with_context(|| format!("{}", args.file.display()))?;
    let mut stdout = std::io::stdout().lock();
    write_report(&mut stdout, &args.file.display().to_string(), &report)?;
    stdout.flush()?;
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The text `fences check` prints, separated out so it can be tested.
pub fn write_report(w: &mut impl Write, name: &str, report: &LoadReport) -> std::io::Result<()> {
    let valid = report.set.len();
    let invalid = report.features - valid;
    writeln!(
        w,
        "{name}: {} feature(s), {valid} valid fence(s), {invalid} invalid",
        report.features
    )?;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut tenants: BTreeMap<&str, usize> = BTreeMap::new();
    for f in report.set.fences() {
        *kinds.entry(f.kind().as_str()).or_default() += 1;
        *tenants.entry(f.tenant_name()).or_default() += 1;
    }
    let list = |m: &BTreeMap<&str, usize>| {
        m.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if valid > 0 {
        writeln!(w, "  by type:   {}", list(&kinds))?;
        writeln!(w, "  by tenant: {}", list(&tenants))?;
    }
    if !report.errors.is_empty() {
        writeln!(w, "{} error(s):", report.errors.len())?;
        for e in &report.errors {
            writeln!(w, "  {e}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(text: &str) -> String {
        let r = FenceSet::check_geojson_str(text, &LoadOptions::default()).unwrap();
        let mut out = Vec::new();
        write_report(&mut out, "f.geojson", &r).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn summarises_the_sample_file() {
        let out = report(include_str!("../../../config/fences.geojson"));
        assert_eq!(
            out,
            "f.geojson: 8 feature(s), 8 valid fence(s), 0 invalid\n  by type:   circle 4, multipolygon 1, polygon 3\n  by tenant: acme 4, globex 4\n"
        );
    }

    #[test]
    fn lists_every_error() {
        let text = r#"{"type":"FeatureCollection","features":[
            {"type":"Feature","geometry":{"type":"Point","coordinates":[121.47,31.23]},"properties":{"id":"hq-north","tenant":"acme","radius_m":12}},
            {"type":"Feature","geometry":{"type":"Point","coordinates":[121.47,31.23]},"properties":{"id":"ok","tenant":"acme","radius_m":120}},
            {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]},"properties":{"id":"open","tenant":"globex"}}
        ]}"#;
        let out = report(text);
        assert_eq!(
            out,
            "f.geojson: 3 feature(s), 1 valid fence(s), 2 invalid\n  by type:   circle 1\n  by tenant: acme 1\n2 error(s):\n  feature 0 (fence 'hq-north'): radius 12 m is below the minimum 50 m\n  feature 2 (fence 'open'): ring 0 is not closed: its last position must repeat the first\n"
        );
    }
}
