//! `fencegate cert fingerprint`: print the SHA-256 fingerprint clients pin,
//! on demand, without starting the gateway (docs/PROTOCOL.md §2).

use std::path::PathBuf;

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, pem::PemObject as _};

use crate::config::Config;
use crate::edge::tls::fingerprint;

/// Arguments of `fencegate cert fingerprint`.
#[derive(Debug, clap::Args)]
pub struct FingerprintArgs {
    /// Configuration file naming the certificate (`quic.cert`) or the data
    /// dir holding the dev certificate (embedded defaults if omitted).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Prints the served leaf certificate's SHA-256 as 64 lowercase hex digits
/// on stdout: `quic.cert` when set, else the dev certificate under
/// `<data_dir>/tls/`. Never makes a certificate: a missing one is an error
/// naming how to get it.
pub fn fingerprint_cmd(args: &FingerprintArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_defaults(),
    };
    let path = match &cfg.quic.identity {
        Some((c, _)) => c.clone(),
        None => cfg.data_dir.join("tls").join("dev-cert.pem"),
    };
    if cfg.quic.identity.is_none() && !path.exists() {
        anyhow::bail!(
            "no dev certificate at {}: `fencegate serve` makes it at first start (with the same --config), or set quic.cert to your certificate",
            path.display()
        );
    }
    let leaf = CertificateDer::pem_file_iter(&path)
        .with_context(|| format!("certificate {}: cannot read it", path.display()))?
        .next()
        .with_context(|| {
            format!(
                "certificate {}: holds no PEM certificate; give a PEM chain, leaf first",
                path.display()
            )
        })?
        .with_context(|| format!("certificate {}: not a PEM certificate", path.display()))?;
    println!("{}", fingerprint(&leaf));
    Ok(())
}
