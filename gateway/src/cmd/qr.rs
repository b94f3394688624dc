//! `fencegate qr`: print a site's current dynamic QR code, for a screen at
//! the site (or a check of what the gateway accepts right now).

use std::path::PathBuf;

use crate::clock;
use crate::config::Config;
use crate::rules::qr::{render_terminal, step_of};

/// Arguments of `fencegate qr`.
#[derive(Debug, clap::Args)]
pub struct QrArgs {
    /// Tenant the site belongs to; may be left out when the configuration
    /// serves one tenant.
    #[arg(long)]
    pub tenant: Option<String>,
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
    let (rules, _) = crate::rules::load::load(cfg)?;
    let rules = rules.load();
    anyhow::ensure!(
        rules.has_tenant(tenant),
        "tenant '{tenant}' has no section in the rules file{}; add [tenants.{tenant}] with a site that has qr = true (see config/rules.toml), or pass --config with the node's configuration",
        cfg.attendance
            .rules_path
            .as_ref()
            .map(|p| format!(" {}", p.display()))
            .unwrap_or_default()
    );
    let t = rules.tenant(tenant);
    let key = t
        .sites
        .iter()
        .find(|s| &*s.name == site)
        .ok_or_else(|| {
            let qr_sites: Vec<&str> = t
                .sites
                .iter()
                .filter(|s| s.qr.is_some())
                .map(|s| &*s.name)
                .collect();
            anyhow::anyhow!(
                "tenant '{tenant}' has no site '{site}' in its rules; its QR sites are: {}",
                if qr_sites.is_empty() {
                    "none (set qr = true under a site)".to_owned()
                } else {
                    qr_sites.join(", ")
                }
            )
        })?
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

/// The tenant of a configuration that serves exactly one, so
/// `fencegate qr --site S` needs no `--tenant` there.
fn only_tenant(cfg: &Config) -> anyhow::Result<String> {
    match cfg.tenants.as_slice() {
        [(t, _)] => Ok(t.clone()),
        many => anyhow::bail!(
            "this configuration serves {} tenants ({}); name one with --tenant",
            many.len(),
            many.iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Prints the code (and its validity on stderr).
pub fn qr(args: &QrArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_defaults(),
    };
    let tenant = match &args.tenant {
        Some(t) => t.clone(),
        None => only_tenant(&cfg)?,
    };
    let now = clock::unix_ms();
    let (code, shown_until, valid_until) = current_code(&cfg, &tenant, &args.site, now)?;
    if args.render {
        // The symbol does not end in a newline; the code goes on its own line.
        println!("{}", render_terminal(&code)?);
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
