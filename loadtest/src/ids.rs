//! Identifiers of one run. Every employee, phone, device and punch id of a
//! run carries the run's salt, so runs against the same gateway never
//! collide in its dedup windows, and the audit can pick the run's records
//! out of a shared log.

use crate::rng::Rng;

/// The run's salt and the id forms derived from it.
#[derive(Debug, Clone)]
pub struct RunIds {
    /// Four random bytes; the first four bytes of every punch id.
    pub salt: [u8; 4],
    /// `lt-<salt hex>-`: the prefix of every employee and device id.
    pub prefix: String,
}

impl RunIds {
    /// Ids for a run salted with `salt`.
    pub fn new(salt: u32) -> Self {
        Self {
            salt: salt.to_be_bytes(),
            prefix: format!("lt-{salt:08x}-"),
        }
    }

    /// Employee `i`'s id.
    pub fn employee(&self, i: u64) -> String {
        format!("{}e{i}", self.prefix)
    }

    /// Employee `i`'s phone (device id).
    pub fn phone(&self, i: u64) -> String {
        format!("{}p{i}", self.prefix)
    }

    /// Fleet device `i`'s id.
    pub fn device(&self, i: u64) -> String {
        format!("{}d{i}", self.prefix)
    }

    /// The index of a fleet device id of this run.
    pub fn device_index(&self, id: &str) -> Option<usize> {
        id.strip_prefix(self.prefix.as_str())?
            .strip_prefix('d')?
            .parse()
            .ok()
    }

    /// A fresh punch id: the salt, then 12 bytes from `r`.
    pub fn punch_id(&self, r: &mut Rng) -> [u8; 16] {
        let mut id = r.id16();
        id[..4].copy_from_slice(&self.salt);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_salt_and_round_trip() {
        let ids = RunIds::new(0xdead_beef);
        assert_eq!(ids.device(42), "lt-deadbeef-d42");
        assert_eq!(ids.device_index("lt-deadbeef-d42"), Some(42));
        assert_eq!(ids.device_index("lt-deadbeef-p42"), None);
        assert_eq!(ids.device_index("lt-00000000-d42"), None);
        let p = ids.punch_id(&mut Rng::new(1));
        assert_eq!(p[..4], [0xde, 0xad, 0xbe, 0xef]);
    }
}
