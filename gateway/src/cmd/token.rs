//! `fencegate token issue`: mint a device token with a tenant's key.

use std::path::PathBuf;

use crate::auth::parse_ttl;
use crate::clock;
use crate::config::Config;

/// Arguments of `fencegate token issue`.
#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// Tenant the device belongs to.
    #[arg(long)]
    pub tenant: String,
    /// Device id the token is bound to (the device sends it in its Hello).
    #[arg(long)]
    pub device: String,
    /// Lifetime, e.g. 30d, 12h, 45m.
    #[arg(long, default_value = "30d")]
    pub ttl: String,
    /// Configuration file whose tenant keys to use (embedded defaults if omitted).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Prints a token for the device on stdout.
pub fn issue(args: &IssueArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_defaults(),
    };
    let ttl = parse_ttl(&args.ttl).map_err(anyhow::Error::msg)?;
    let ring = crate::serve::keyring(&cfg)?;
    let exp = clock::unix_ms() / 1_000 + ttl;
    println!("{}", ring.issue(&args.tenant, &args.device, exp)?);
    Ok(())
}
