//! Loading a node's rules at start: where the rules file is (from the node
//! configuration), seeding the bundled example on embedded defaults, and
//! compiling it — applied by `serve` and the CLI, checked without applying
//! by `check-config`. The admin routes that change rules at run time are in
//! `crate::admin::rules`.

use std::sync::Arc;

use super::store::{RulesHandle, RulesSource};
use crate::config::Config;

/// The example rules bundled into the binary, seeding `<data_dir>/rules.toml`
/// on embedded defaults.
pub const SAMPLE_RULES: &str = include_str!("../../../config/rules.toml");
/// The holiday calendars the example rules refer to, by file name.
pub const SAMPLE_HOLIDAYS: [(&str, &str); 6] = [
    (
        "cn-2025.toml",
        include_str!("../../../config/holidays/cn-2025.toml"),
    ),
    (
        "cn-2026.toml",
        include_str!("../../../config/holidays/cn-2026.toml"),
    ),
    (
        "cn-2027.toml",
        include_str!("../../../config/holidays/cn-2027.toml"),
    ),
    (
        "de-be-2025.csv",
        include_str!("../../../config/holidays/de-be-2025.csv"),
    ),
    (
        "de-be-2026.csv",
        include_str!("../../../config/holidays/de-be-2026.csv"),
    ),
    (
        "de-be-2027.csv",
        include_str!("../../../config/holidays/de-be-2027.csv"),
    ),
];

/// Loads the rules of a configuration at start: seeds the example on
/// embedded defaults, compiles (every problem reported), and publishes.
pub fn load(cfg: &Config) -> anyhow::Result<(Arc<RulesHandle>, RulesSource)> {
    let source = source(cfg);
    if let (Some(path), true) = (&source.path, cfg.attendance.seed_sample_rules) {
        if !path.exists() {
            let dir = source.calendar_dir();
            for (name, text) in SAMPLE_HOLIDAYS {
                crate::persist::create_new(
                    &dir.join(name),
                    text.as_bytes(),
                    crate::persist::SHARED,
                )?;
            }
            crate::persist::create_new(path, SAMPLE_RULES.as_bytes(), crate::persist::SHARED)?;
        }
    }
    let (rules, text) = source.load()?;
    Ok((Arc::new(RulesHandle::new(rules, text)), source))
}

/// Where a node's rules live and what compiling them needs.
pub fn source(cfg: &Config) -> RulesSource {
    RulesSource {
        path: cfg.attendance.rules_path.clone(),
        holidays_dir: cfg.attendance.holidays_dir.clone(),
        data_dir: cfg.data_dir.clone(),
        settings: cfg.attendance.settings.clone(),
        tenants: cfg.tenants.iter().map(|(t, _)| t.clone()).collect(),
    }
}

/// Compiles the rules file without applying it (no QR key is created):
/// `check-config` and the start of `serve` both call it, so a file `serve`
/// would refuse is refused by `check-config` too. A missing file that
/// start-up would seed from the bundled example is fine.
pub fn check(cfg: &Config) -> Result<(), Vec<String>> {
    let source = source(cfg);
    let Some(path) = &source.path else {
        return Ok(());
    };
    if !path.exists() && cfg.attendance.seed_sample_rules {
        return Ok(());
    }
    let at = format!("attendance.rules {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![format!(
            "{at}: cannot read the rules file: {e}; point attendance.rules at a rules file (see config/rules.toml)"
        )]
    })?;
    source
        .compile(&text, &path.display().to_string())
        .map(|_| ())
        .map_err(|e| e.problems.iter().map(|p| format!("{at}: {p}")).collect())
}
