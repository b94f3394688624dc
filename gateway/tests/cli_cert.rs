//! `fencegate cert fingerprint` run as an operator would, through the
//! binary: the value printed is what docs/PROTOCOL.md §2 tells a client to
//! pin (64 lowercase hex digits, SHA-256 of the leaf certificate's DER).

use std::process::Command;

use rustls::pki_types::{CertificateDer, pem::PemObject as _};
use sha2::Digest as _;

fn fencegate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fencegate"))
        .args(args)
        .output()
        .expect("run fencegate")
}

/// Red if the command prints another format (colon pairs, upper case), the
/// digest of something other than the leaf's DER, or makes a certificate
/// instead of reporting that there is none.
#[test]
fn cert_fingerprint_prints_64_lowercase_hex_digits_of_the_dev_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("fencegate.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\n[[tenants]]\nid = \"acme\"\n",
            data.to_str().expect("temp paths are UTF-8")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // No certificate yet: an error that says how to get one, and no file made.
    let out = fencegate(&["cert", "fingerprint", "--config", config]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("dev-cert.pem") && stderr.contains("fencegate serve"),
        "{stderr}"
    );
    assert!(!data.join("tls").join("dev-cert.pem").exists());

    // The certificate `fencegate serve` would make at first start.
    let id = fencegate::edge::tls::dev_identity(&data.join("tls"), &["localhost".into()]).unwrap();
    let out = fencegate(&["cert", "fingerprint", "--config", config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let printed = printed.trim_end();

    // Computed here, independently of the gateway's formatting code.
    let pem = std::fs::read(data.join("tls").join("dev-cert.pem")).unwrap();
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    let expected: String = sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(printed, expected);
    assert_eq!(printed.len(), 64);
    assert!(
        printed
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    // The gateway prints and pins the same value at start.
    assert_eq!(id.fingerprint, expected);
}
