//! `fencegate qr`: print a site's current dynamic QR code, for a screen at
//! the site (or a check of what the gateway accepts right now).

use std::path::PathBuf;

use crate::clock;
use crate::config::Config;
use crate::rules::qr::{render_terminal, step_of};

/// Arguments of `fencegate qr`.
#[derive(Debug, clap::Args)]
pub struct QrArgs {
    /// Tenant the site belongs to.
    #[arg(long)]
    pub tenant: String,
    /// Site name (a `[tenants.<id>.sites.<name>]` with `qr = true`).
    #[arg(long)]
    pub site: String,
    /// Render the code as a QR symbol in the terminal as well.
    #[arg(long)]
    pub render: bool,
    /// Configuration file (embedded defaults if omitted); its rules file and
    /// data directory (QR keys) are used.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The code text and when it stops being shown and accepted, for `now_ms`.
pub fn current_code(
    cfg: &Config,
    tenant: &str,
    site: &str,
    now_ms: i64,
) -> anyhow::Result<(String, i64, i64)> {
    let (rules, _) = crate::rules::api::load(cfg)?;
    let rules = rules.load();
    anyhow::ensure!(
        rules.has_tenant(tenant),
        "tenant '{tenant}' has no section in the rules file{}",
        cfg.attendance
            .rules_path
            .as_ref()
            .map(|p| format!(" {}", p.display()))
            .unwrap_or_default()
    );
    let key = rules
        .tenant(tenant)
        .sites
        .iter()
        .find(|s| &*s.name == site)
        .ok_or_else(|| anyhow::anyhow!("tenant '{tenant}' has no site '{site}' in its rules"))?
        .qr
        .clone()
        .ok_or_else(|| {
            anyhow::anyhow!("site '{site}' shows no QR codes; set qr = true under [tenants.{tenant}.sites.{site}]")
        })?;
    let s = &rules.settings;
    let step = step_of(now_ms, s.qr_step_ms);
    let shown_until = (step + 1) * s.qr_step_ms;
    Ok((
        key.0.code(tenant, site, step),
        shown_until,
        shown_until + s.qr_skew_steps * s.qr_step_ms,
    ))
}

/// Prints the code (and its validity on stderr).
pub fn qr(args: &QrArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_defaults(),
    };
    let now = clock::unix_ms();
    let (code, shown_until, valid_until) = current_code(&cfg, &args.tenant, &args.site, now)?;
    if args.render {
        print!("{}", render_terminal(&code)?);
    }
    println!("{code}");
    eprintln!(
        "shown for {} s more, accepted for {} s more; a screen can poll GET /v1/qr/{}?format=svg",
        (shown_until - now + 999) / 1_000,
        (valid_until - now + 999) / 1_000,
        args.site
    );
    Ok(())
}
