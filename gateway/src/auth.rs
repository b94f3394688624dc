//! Device credentials: tenant-scoped HMAC tokens, verified without a database.
//!
//! A token is `fg1.<payload>.<tag>`, both parts base64url without padding.
//! The payload is `tenant \n device \n expiry-unix-seconds`; the tag is the
//! first 16 bytes of HMAC-SHA256 over `fg1.<payload>` with the tenant's key.
//! Anyone holding a tenant's key can mint tokens for that tenant only, so a
//! leaked key never exposes another tenant. A device presents its token once
//! per connection, in its Hello.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "fg1.";
const TAG_LEN: usize = 16;
/// Shortest tenant key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// Why a credential was refused. Each maps to a documented QUIC application
/// close code (see `docs/PROTOCOL.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is not well formed or its signature does not verify.
    #[error("the device token is malformed or its signature is wrong")]
    BadToken,
    /// The token was valid but its expiry has passed.
    #[error("the device token has expired; issue a new one")]
    Expired,
    /// The token names a tenant this gateway does not serve.
    #[error("the device token names a tenant this gateway does not serve")]
    WrongTenant,
    /// The Hello's device id differs from the one the token was issued for.
    #[error("the Hello's device id does not match the token's device")]
    DeviceMismatch,
}

/// Who a connection belongs to, once its token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The tenant every message on the connection is confined to.
    pub tenant: String,
    /// The device the token was issued to.
    pub device: String,
    /// Token expiry, unix seconds.
    pub expires_unix_s: i64,
}

/// A tenant's signing key. Debug output never shows the secret.
#[derive(Clone)]
pub struct TenantKey(Vec<u8>);

impl fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TenantKey(..)")
    }
}

impl TenantKey {
    /// Wraps raw key bytes; refuses keys shorter than [`MIN_KEY_LEN`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(format!(
                "key is {} bytes; use at least {MIN_KEY_LEN} random bytes",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    /// Reads a key file (hex, surrounding whitespace ignored). When the file
    /// does not exist and `create` is set, writes a fresh random key there
    /// first (mode 0600), which is how dev setups get keys with no secrets in
    /// the repository.
    pub fn load_or_create(path: &Path, create: bool) -> anyhow::Result<Self> {
        if !path.exists() && create {
            let mut key = [0u8; 32];
            rand::fill(&mut key);
            // Linked into place whole: a second process starting at the same
            // moment reads this key or keeps its own, never an empty file.
            if crate::persist::create_new(
                path,
                hex::encode(key).as_bytes(),
                crate::persist::PRIVATE,
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "tenant key file {}: cannot create it: {e}; check that the folder is writable",
                    path.display()
                )
            })? {
                tracing::warn!(path = %path.display(), "generated a new tenant key");
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "tenant key file {}: {e}; create it with 64 hex characters (32 random bytes)",
                path.display()
            )
        })?;
        let bytes = hex::decode(text.trim()).map_err(|e| {
            anyhow::anyhow!(
                "tenant key file {}: not hex ({e}); write 64 hex characters",
                path.display()
            )
        })?;
        Self::new(bytes).map_err(|e| anyhow::anyhow!("tenant key file {}: {e}", path.display()))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

/// Every tenant's key: verifies tokens for any tenant, issues for one.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: HashMap<String, TenantKey>,
}

impl Keyring {
    /// Adds or replaces a tenant's key.
    pub fn insert(&mut self, tenant: impl Into<String>, key: TenantKey) {
        self.keys.insert(tenant.into(), key);
    }

    /// Whether the keyring holds a key for `tenant`.
    pub fn serves(&self, tenant: &str) -> bool {
        self.keys.contains_key(tenant)
    }

    /// Issues a token for `device` of `tenant`, valid until `expires_unix_s`.
    pub fn issue(&self, tenant: &str, device: &str, expires_unix_s: i64) -> anyhow::Result<String> {
        let key = self.keys.get(tenant).ok_or_else(|| {
            anyhow::anyhow!("tenant '{tenant}' is not configured; add a [[tenants]] block for it")
        })?;
        anyhow::ensure!(
            !device.is_empty() && device.len() <= 128 && !device.contains('\n'),
            "device id must be 1 to 128 characters without newlines"
        );
        let payload = B64.encode(format!("{tenant}\n{device}\n{expires_unix_s}"));
        let signed = format!("{PREFIX}{payload}");
        let mut mac = key.mac();
        mac.update(signed.as_bytes());
        let tag = mac.finalize().into_bytes();
        Ok(format!("{signed}.{}", B64.encode(&tag[..TAG_LEN])))
    }

    /// Verifies a token at `now_unix_s` and, when `device` is given, that it
    /// was issued to that device.
    pub fn verify(
        &self,
        token: &str,
        device: Option<&str>,
        now_unix_s: i64,
    ) -> Result<Identity, AuthError> {
        let rest = token.strip_prefix(PREFIX).ok_or(AuthError::BadToken)?;
        let (payload_b64, tag_b64) = rest.split_once('.').ok_or(AuthError::BadToken)?;
        let payload = B64.decode(payload_b64).map_err(|_| AuthError::BadToken)?;
        let tag = B64.decode(tag_b64).map_err(|_| AuthError::BadToken)?;
        let payload = std::str::from_utf8(&payload).map_err(|_| AuthError::BadToken)?;
        let mut parts = payload.splitn(3, '\n');
        let (Some(tenant), Some(dev), Some(exp)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::BadToken);
        };
        let key = self.keys.get(tenant).ok_or(AuthError::WrongTenant)?;
        let mut mac = key.mac();
        mac.update(&token.as_bytes()[..PREFIX.len() + payload_b64.len()]);
        if tag.len() != TAG_LEN {
            return Err(AuthError::BadToken);
        }
        mac.verify_truncated_left(&tag)
            .map_err(|_| AuthError::BadToken)?;
        let expires_unix_s: i64 = exp.parse().map_err(|_| AuthError::BadToken)?;
        if expires_unix_s <= now_unix_s {
            return Err(AuthError::Expired);
        }
        if let Some(d) = device {
            if d != dev {
                return Err(AuthError::DeviceMismatch);
            }
        }
        Ok(Identity {
            tenant: tenant.to_owned(),
            device: dev.to_owned(),
            expires_unix_s,
        })
    }
}

/// Parses a token lifetime such as `30d`, `12h`, `45m` or `90s` into seconds.
pub fn parse_ttl(s: &str) -> Result<i64, String> {
    let err = || format!("ttl {s:?} is not a duration; write it like 30d, 12h, 45m or 90s");
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?);
    let n: i64 = num.parse().map_err(|_| err())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(err()),
    };
    if n == 0 {
        return Err(format!("ttl {s:?} must be longer than zero"));
    }
    n.checked_mul(mult).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        let mut r = Keyring::default();
        r.insert("acme", TenantKey::new(vec![7; 32]).unwrap());
        r.insert("globex", TenantKey::new(vec![9; 32]).unwrap());
        r
    }

    #[test]
    fn issued_token_verifies_for_its_device() {
        let r = ring();
        let t = r.issue("acme", "phone-1", 2_000).unwrap();
        let id = r.verify(&t, Some("phone-1"), 1_000).unwrap();
        assert_eq!(id.tenant, "acme");
        assert_eq!(id.device, "phone-1");
        assert_eq!(id.expires_unix_s, 2_000);
    }

    #[test]
    fn expired_token_is_refused() {
        let r = ring();
        let t = r.issue("acme", "phone-1", 2_000).unwrap();
        assert_eq!(r.verify(&t, None, 2_000), Err(AuthError::Expired));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let r = ring();
        let t = r.issue("acme", "phone-1", 2_000).unwrap();
        // Re-sign the payload for globex's tenant name with acme's tag.
        let forged_payload = B64.encode("globex\nphone-1\n2000");
        let tag = t.rsplit('.').next().unwrap();
        let forged = format!("{PREFIX}{forged_payload}.{tag}");
        assert_eq!(r.verify(&forged, None, 1_000), Err(AuthError::BadToken));
    }

    #[test]
    fn one_tenants_key_cannot_mint_for_another() {
        let mut only_acme = Keyring::default();
        only_acme.insert("globex", TenantKey::new(vec![7; 32]).unwrap()); // acme's key, wrong name
        let forged = only_acme.issue("globex", "phone-1", 2_000).unwrap();
        assert_eq!(
            ring().verify(&forged, None, 1_000),
            Err(AuthError::BadToken)
        );
    }

    #[test]
    fn unknown_tenant_and_device_mismatch() {
        let mut other = Keyring::default();
        other.insert("initech", TenantKey::new(vec![1; 32]).unwrap());
        let t = other.issue("initech", "d", 2_000).unwrap();
        assert_eq!(ring().verify(&t, None, 1_000), Err(AuthError::WrongTenant));
        let t = ring().issue("acme", "phone-1", 2_000).unwrap();
        assert_eq!(
            ring().verify(&t, Some("phone-2"), 1_000),
            Err(AuthError::DeviceMismatch)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let r = ring();
        for t in [
            "",
            "fg1.",
            "fg1..",
            "fg1.%%%.###",
            "xyz",
            "fg1.YQ.YQ",
            "fg1.YWNtZQ.AAAA",
        ] {
            assert!(r.verify(t, None, 0).is_err(), "{t}");
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(TenantKey::new(vec![0; 31]).is_err());
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/acme.key");
        let a = TenantKey::load_or_create(&path, true).unwrap();
        let b = TenantKey::load_or_create(&path, true).unwrap();
        assert_eq!(a.0, b.0);
        assert!(TenantKey::load_or_create(&dir.path().join("missing.key"), false).is_err());
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("30d"), Ok(30 * 86_400));
        assert_eq!(parse_ttl("12h"), Ok(12 * 3_600));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("30").is_err());
        assert!(parse_ttl("d").is_err());
        assert!(parse_ttl("5w").is_err());
    }
}
