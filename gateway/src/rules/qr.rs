//! Dynamic QR codes: a code per site that rotates every step (30 s by
//! default), shown on a screen and scanned by the employee's phone.
//!
//! A code is the text `FGQR1:<site>:<step>:<tag>`, where `step` is
//! `unix seconds / step length` and `tag` is the first 16 bytes of
//! HMAC-SHA256(site key, `"fencegate-qr/1" ‖ tenant ‖ 0 ‖ site ‖ 0 ‖ step`)
//! in hex. Each site of each tenant has its own random key, generated under
//! the data directory like the tenant token keys
//! (`<data_dir>/keys/qr/<tenant>/<site>.key`), so a code of one tenant's
//! site means nothing to another tenant, even for a site of the same name.
//!
//! A code is valid for its own step and `skew_steps` steps after it, and
//! once per employee: the pipeline remembers `(tenant, employee, site,
//! step)` for as long as the code is valid and refuses a second use with
//! `QrReplay`.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The fixed first field of every code, naming the format's version.
pub const PREFIX: &str = "FGQR1";
const DOMAIN: &[u8] = b"fencegate-qr/1";

/// A site's QR key, with the HMAC state keyed once so each check only
/// clones it (no allocation, no key schedule per punch).
#[derive(Clone)]
pub struct QrKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for QrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QrKey(..)")
    }
}

impl PartialEq for QrKey {
    fn eq(&self, other: &Self) -> bool {
        // Keys are compared by what they produce, never by exposing them.
        self.tag("", "", 0) == other.tag("", "", 0)
    }
}

impl QrKey {
    /// A key from raw bytes.
    pub fn new(key: &[u8]) -> Self {
        Self {
            mac: HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"),
        }
    }

    /// The tag of `site`'s code for `step`.
    pub fn tag(&self, tenant: &str, site: &str, step: i64) -> [u8; 16] {
        let mut m = self.mac.clone();
        m.update(DOMAIN);
        m.update(tenant.as_bytes());
        m.update(&[0]);
        m.update(site.as_bytes());
        m.update(&[0]);
        m.update(&step.to_be_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// The code text for `step`.
    pub fn code(&self, tenant: &str, site: &str, step: i64) -> String {
        format!(
            "{PREFIX}:{site}:{step}:{}",
            hex::encode(self.tag(tenant, site, step))
        )
    }
}

/// The step a time falls in.
pub fn step_of(at_ms: i64, step_ms: i64) -> i64 {
    at_ms.div_euclid(step_ms)
}

/// The fields of a scanned code, borrowed from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedCode<'a> {
    /// Site named by the code.
    pub site: &'a str,
    /// Its step.
    pub step: i64,
    /// Its tag.
    pub tag: [u8; 16],
}

/// Splits a scanned payload into its fields; `None` when it is not a code
/// in this format. Allocates nothing.
pub fn parse(payload: &str) -> Option<ScannedCode<'_>> {
    let mut parts = payload.trim().split(':');
    if parts.next()? != PREFIX {
        return None;
    }
    let site = parts.next()?;
    let step: i64 = parts.next()?.parse().ok()?;
    let tag_hex = parts.next()?;
    if parts.next().is_some() || site.is_empty() || tag_hex.len() != 32 {
        return None;
    }
    let mut tag = [0u8; 16];
    hex::decode_to_slice(tag_hex, &mut tag).ok()?;
    Some(ScannedCode { site, step, tag })
}

/// Compares two tags without an early exit.
pub fn tags_equal(a: &[u8; 16], b: &[u8; 16]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// Where a site's QR key lives under the data directory.
pub fn key_path(data_dir: &Path, tenant: &str, site: &str) -> PathBuf {
    data_dir
        .join("keys")
        .join("qr")
        .join(tenant)
        .join(format!("{site}.key"))
}

/// Reads a site's QR key if its file exists (`None` when it does not);
/// creates nothing, so compiling rules to check them has no side effects.
pub fn read_key(data_dir: &Path, tenant: &str, site: &str) -> anyhow::Result<Option<[u8; 32]>> {
    let path = key_path(data_dir, tenant, site);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("QR key {}: {e}", path.display())),
    };
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|e| {
        anyhow::anyhow!(
            "QR key {}: not 64 hex characters ({e}); delete it to have a new one generated",
            path.display()
        )
    })?;
    Ok(Some(key))
}

/// Reads a site's QR key (64 hex characters), creating a random one first
/// when the file does not exist. Two processes creating it at once agree:
/// the file is linked into place whole and exclusively, and the loser reads
/// the winner's key (never a half-written one).
pub fn load_or_create_key(data_dir: &Path, tenant: &str, site: &str) -> anyhow::Result<[u8; 32]> {
    let path = key_path(data_dir, tenant, site);
    if !path.exists() {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        match crate::persist::create_new(
            &path,
            hex::encode(key).as_bytes(),
            crate::persist::PRIVATE,
        ) {
            Ok(true) => tracing::info!(path = %path.display(), "generated a QR key"),
            Ok(false) => {}
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "QR key {}: cannot create it: {e}; check that the data directory is writable",
                    path.display()
                ));
            }
        }
    }
    read_key(data_dir, tenant, site)?.ok_or_else(|| {
        anyhow::anyhow!(
            "QR key {}: vanished right after it was created; check what else writes there",
            path.display()
        )
    })
}

/// Renders a code as a QR symbol in Unicode half blocks, for a terminal.
pub fn render_terminal(code: &str) -> anyhow::Result<String> {
    let q = qrcode::QrCode::new(code.as_bytes())?;
    Ok(q.render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Renders a code as an SVG image, for a screen served by the admin API.
pub fn render_svg(code: &str) -> anyhow::Result<String> {
    let q = qrcode::QrCode::new(code.as_bytes())?;
    Ok(q.render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(320, 320)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_back_and_tags_depend_on_every_input() {
        let k = QrKey::new(&[7; 32]);
        let code = k.code("acme", "shanghai", 59_000_000);
        let c = parse(&code).unwrap();
        assert_eq!((c.site, c.step), ("shanghai", 59_000_000));
        assert!(tags_equal(&c.tag, &k.tag("acme", "shanghai", 59_000_000)));
        assert_ne!(c.tag, k.tag("globex", "shanghai", 59_000_000));
        assert_ne!(c.tag, k.tag("acme", "shenzhen", 59_000_000));
        assert_ne!(c.tag, k.tag("acme", "shanghai", 59_000_001));
        assert_ne!(
            c.tag,
            QrKey::new(&[8; 32]).tag("acme", "shanghai", 59_000_000)
        );
    }

    #[test]
    fn malformed_payloads_are_not_codes() {
        for bad in [
            "",
            "hello",
            "FGQR1:site:1",
            "FGQR2:site:1:00000000000000000000000000000000",
            "FGQR1::1:00000000000000000000000000000000",
            "FGQR1:site:x:00000000000000000000000000000000",
            "FGQR1:site:1:0000",
            "FGQR1:site:1:zz000000000000000000000000000000",
            "FGQR1:site:1:00000000000000000000000000000000:extra",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn steps_floor_toward_the_past() {
        assert_eq!(step_of(59_999, 30_000), 1);
        assert_eq!(step_of(60_000, 30_000), 2);
        assert_eq!(step_of(-1, 30_000), -1);
    }

    #[test]
    fn keys_are_created_once_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_key(dir.path(), "acme", "sh").unwrap();
        let b = load_or_create_key(dir.path(), "acme", "sh").unwrap();
        assert_eq!(a, b);
        let c = load_or_create_key(dir.path(), "globex", "sh").unwrap();
        assert_ne!(a, c, "each tenant's site has its own key");
    }

    #[test]
    fn codes_render_for_terminal_and_screen() {
        let code = QrKey::new(&[1; 32]).code("acme", "sh", 1);
        assert!(render_terminal(&code).unwrap().lines().count() > 10);
        assert!(render_svg(&code).unwrap().starts_with("<?xml"));
    }
}
