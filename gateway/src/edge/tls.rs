//! TLS for the QUIC edge: certificates (operator-supplied or a self-signed
//! dev certificate made at first start), ALPN, session resumption and 0-RTT.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use sha2::Digest as _;

/// The one ALPN protocol id the gateway speaks.
pub const ALPN: &[u8] = b"fencegate/1";

/// A certificate chain and key ready to serve, plus where they came from.
#[derive(Debug)]
pub struct ServerIdentity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate (DER), for clients that pin it.
    pub fingerprint: String,
    /// Whether this is a self-signed dev certificate.
    pub dev: bool,
}

/// SHA-256 of a DER certificate as 64 lowercase hex digits, the form
/// docs/PROTOCOL.md §2 specifies for pinning (and `sha256sum` prints).
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(der))
}

/// A fingerprint as a user may paste it (any case, colons optional, as
/// `openssl x509 -fingerprint -sha256` prints it) in the canonical form of
/// [`fingerprint`], or `None` when it is not 64 hex digits.
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Loads a PEM chain and key from the operator's files.
pub fn load_identity(cert: &Path, key: &Path) -> anyhow::Result<ServerIdentity> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("quic.cert {}: cannot read it", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("quic.cert {}: not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "quic.cert {}: holds no certificate; give a PEM chain, leaf first",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("quic.key {}: not a PEM private key", key.display()))?;
    Ok(ServerIdentity {
        fingerprint: fingerprint(&chain[0]),
        chain,
        key,
        dev: false,
    })
}

/// Loads the dev certificate under `dir`, making a self-signed one for
/// `names` first if none exists. The key file is written with mode 0600.
pub fn dev_identity(dir: &Path, names: &[String]) -> anyhow::Result<ServerIdentity> {
    let cert_path: PathBuf = dir.join("dev-cert.pem");
    let key_path: PathBuf = dir.join("dev-key.pem");
    if !cert_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the TLS directory {}", dir.display()))?;
        let ck = rcgen::generate_simple_self_signed(names.to_vec())
            .context("cannot generate a dev certificate")?;
        // Key first, certificate last, each replaced whole and durably: once
        // the certificate exists, a matching key is on disk, so a crash
        // between the two (or a torn write) never leaves a pair that fails
        // to load or does not match.
        crate::persist::atomic_replace(
            &key_path,
            ck.signing_key.serialize_pem().as_bytes(),
            crate::persist::PRIVATE,
        )
        .with_context(|| format!("cannot write {}", key_path.display()))?;
        crate::persist::atomic_replace(
            &cert_path,
            ck.cert.pem().as_bytes(),
            crate::persist::SHARED,
        )
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
        tracing::info!(path = %cert_path.display(), "made a self-signed dev certificate");
    }
    let mut id = load_identity(&cert_path, &key_path)?;
    id.dev = true;
    Ok(id)
}

/// The crypto provider of both sides: ring, with TLS 1.3's SHA-256 suites
/// first. The TLS 1.3 key schedule runs a few dozen HMACs per handshake;
/// SHA-256 has instructions on current x86 and ARM cores and SHA-384 does
/// not, and a profile of the 9:00 peak showed the software SHA-512 block
/// function as the hottest single function of the whole handshake.
/// AES-128-GCM is one of TLS 1.3's mandatory suites.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 1,
        _ => 2,
    });
    Arc::new(p)
}

/// Builds the rustls server configuration: TLS 1.3 only (QUIC requires it),
/// ALPN `fencegate/1`, session resumption, and 0-RTT when `zero_rtt` is set.
///
/// With `zero_rtt`, resumption is stateful: tickets are ids into a server
/// cache of at most `session_cache` sessions (`quic.session_cache`), each
/// taken out on use. RFC 8446 §8.1 allows early data only that way (a
/// stateless ticket can be replayed any number of times), and rustls
/// refuses 0-RTT with stateless tickets, logging a warning for every
/// ticket it issues. Without `zero_rtt`, tickets are stateless (encrypted
/// with a rotating key, no memory per client).
pub fn server_crypto(
    id: &ServerIdentity,
    zero_rtt: bool,
    session_cache: usize,
) -> anyhow::Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is unavailable")?
        .with_no_client_auth()
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .context("the certificate and key do not match, or the key type is unsupported")?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    // Old or foreign clients may list SHA-384 first; the server's order wins.
    cfg.ignore_client_order = true;
    if zero_rtt {
        // The builder's ticketer never produces tickets, so rustls issues
        // ids into `session_storage`: the stateful resumption 0-RTT needs.
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(session_cache.max(1));
        // One ticket per connection: each resumption takes its ticket out
        // of the cache and the new connection brings the next one, so a
        // second ticket would only halve the phones the cache holds.
        cfg.send_tls13_tickets = 1;
        // quinn requires exactly u32::MAX here to enable 0-RTT.
        cfg.max_early_data_size = u32::MAX;
    } else {
        cfg.ticketer =
            rustls::crypto::ring::Ticketer::new().context("cannot make a session ticketer")?;
        cfg.send_tls13_tickets = 2;
    }
    Ok(cfg)
}

/// How a client decides to trust the gateway's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Trust certificates signed by these roots (PEM file of a CA).
    Roots(Vec<CertificateDer<'static>>),
    /// Trust exactly the certificate with this SHA-256 fingerprint.
    Pinned(String),
}

/// Builds a client configuration for tests, tools and the load harness,
/// with resumption and (optionally) 0-RTT enabled.
pub fn client_crypto(trust: Trust, zero_rtt: bool) -> anyhow::Result<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is unavailable")?;
    let mut cfg = match trust {
        Trust::Roots(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for r in roots {
                store.add(r).context("a root certificate is not valid")?;
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
        Trust::Pinned(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                // An unparsable pin matches no certificate, so the
                // handshake fails with the verifier's message.
                fingerprint: normalize_fingerprint(&fp).unwrap_or(fp),
                provider,
            }))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.enable_early_data = zero_rtt;
    cfg.resumption = rustls::client::Resumption::in_memory_sessions(4_096);
    Ok(cfg)
}

/// Accepts exactly one certificate, identified by its SHA-256 fingerprint,
/// while still checking the handshake signatures.
#[derive(Debug)]
struct PinnedVerifier {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.fingerprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "server certificate does not match the pinned SHA-256 fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificate_is_made_once_and_pinnable() {
        let dir = tempfile::tempdir().unwrap();
        let a = dev_identity(dir.path(), &["localhost".into()]).unwrap();
        let b = dev_identity(dir.path(), &["localhost".into()]).unwrap();
        assert!(a.dev);
        assert_eq!(
            a.fingerprint, b.fingerprint,
            "second start reuses the certificate"
        );
        assert_eq!(a.fingerprint.len(), 64);
        server_crypto(&a, true, 16).unwrap();
        client_crypto(Trust::Pinned(a.fingerprint.clone()), true).unwrap();
    }

    #[test]
    fn sha256_suites_come_first_and_the_server_order_wins() {
        let p = provider();
        let names: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(names[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(
            names[1],
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        );
        assert!(names.contains(&rustls::CipherSuite::TLS13_AES_256_GCM_SHA384));
        let dir = tempfile::tempdir().unwrap();
        let id = dev_identity(dir.path(), &["localhost".to_string()]).unwrap();
        assert!(server_crypto(&id, false, 16).unwrap().ignore_client_order);
    }

    #[test]
    fn fingerprint_format() {
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let colons = "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55";
        assert_eq!(normalize_fingerprint(colons), Some(fingerprint(b"")));
        assert_eq!(normalize_fingerprint("e3b0"), None);
    }

    /// rustls refuses early data with stateless tickets and logs a warning
    /// for every ticket it issues; 0-RTT needs the stateful cache.
    #[test]
    fn zero_rtt_uses_stateful_tickets_and_stateless_tickets_offer_no_early_data() {
        let dir = tempfile::tempdir().unwrap();
        let id = dev_identity(dir.path(), &["localhost".to_string()]).unwrap();
        let on = server_crypto(&id, true, 16).unwrap();
        assert!(!on.ticketer.enabled(), "0-RTT needs stateful resumption");
        assert!(on.session_storage.can_cache());
        assert_eq!(on.max_early_data_size, u32::MAX, "quinn's 0-RTT value");
        let off = server_crypto(&id, false, 16).unwrap();
        assert!(off.ticketer.enabled());
        assert_eq!(off.max_early_data_size, 0);
    }

    #[test]
    fn missing_cert_file_names_the_setting() {
        let err = load_identity(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("quic.cert"), "{err:#}");
    }
}
