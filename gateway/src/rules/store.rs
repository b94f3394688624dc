//! The live rules: a snapshot swapped atomically (arc-swap) when the rules
//! change, the text it was compiled from, the file it is persisted to, and
//! an append-only audit log of every change.
//!
//! A change is all or nothing: the new text is compiled first (every
//! problem reported), then written to a temporary file, synced and renamed
//! over the rules file, then swapped in, then audited. A crash leaves the
//! old or the new file, never a mix; a punch sees the old or the new
//! snapshot, never a mix.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{self, CompileContext, RawRules, RulesErrors};
use super::{AttendanceSettings, Rules};

/// The current rules, readable without locks from every task.
#[derive(Debug)]
pub struct RulesHandle {
    current: ArcSwap<Rules>,
    text: ArcSwap<String>,
    version: AtomicU64,
}

impl RulesHandle {
    /// Publishes `rules`, compiled from `text`, as version 1.
    pub fn new(rules: Rules, text: String) -> Self {
        Self {
            current: ArcSwap::from_pointee(rules),
            text: ArcSwap::from_pointee(text),
            version: AtomicU64::new(1),
        }
    }

    /// Rules with no tenant configured (every tenant on the defaults).
    pub fn unconfigured(settings: AttendanceSettings) -> Self {
        Self::new(Rules::unconfigured(settings), String::new())
    }

    /// The current snapshot (cheap; do not hold it across an await).
    pub fn load(&self) -> Guard<Arc<Rules>> {
        self.current.load()
    }

    /// The text the current snapshot was compiled from.
    pub fn text(&self) -> Arc<String> {
        self.text.load_full()
    }

    /// The current version: 1 at start, one more per swap.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Swaps in new rules; returns the new version.
    pub fn store(&self, rules: Rules, text: String) -> u64 {
        self.current.store(Arc::new(rules));
        self.text.store(Arc::new(text));
        self.version.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// Where the rules live and what compiling them needs.
#[derive(Debug, Clone)]
pub struct RulesSource {
    /// The rules file (`None`: no file; every tenant on the defaults, and
    /// `PUT /v1/rules` is refused).
    pub path: Option<PathBuf>,
    /// Data directory (QR keys, audit log).
    pub data_dir: PathBuf,
    /// Node-wide settings.
    pub settings: AttendanceSettings,
    /// Tenants this node serves.
    pub tenants: Vec<String>,
}

impl RulesSource {
    /// The audit log of rule changes.
    pub fn audit_path(&self) -> PathBuf {
        self.data_dir.join("audit").join("rules.jsonl")
    }

    /// Compiles `text` (every problem at once), loading or creating the QR
    /// keys of QR sites under the data directory.
    pub fn compile(&self, text: &str, source: &str) -> Result<Rules, RulesErrors> {
        let tenants: Vec<&str> = self.tenants.iter().map(String::as_str).collect();
        let mut keys = config::data_dir_qr_keys(&self.data_dir);
        let mut ctx = CompileContext {
            base_dir: self
                .path
                .as_deref()
                .map_or_else(|| PathBuf::from("."), config::base_dir_of),
            settings: self.settings.clone(),
            qr_key: &mut keys,
        };
        config::compile_text(text, source, &tenants, &mut ctx)
    }

    /// Loads and compiles the rules file (or the defaults without one).
    pub fn load(&self) -> Result<(Rules, String), RulesErrors> {
        let Some(path) = &self.path else {
            return Ok((Rules::unconfigured(self.settings.clone()), String::new()));
        };
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RulesErrors {
            source: source.clone(),
            problems: vec![format!(
                "cannot read the rules file: {e}; point attendance.rules at a rules file (see config/rules.toml)"
            )],
        })?;
        let rules = self.compile(&text, &source)?;
        Ok((rules, text))
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Gateway time of the change, unix ms.
    pub time_ms: i64,
    /// Name of the admin token that made it (never its secret).
    pub actor: String,
    /// The token's role.
    pub role: String,
    /// `"all"` for a whole-file change, or the tenant a tenant admin changed.
    pub scope: String,
    /// The rules version the change produced.
    pub version: u64,
    /// Tenants whose section changed, was added or was removed.
    pub tenants_changed: Vec<String>,
    /// SHA-256 of the file before and after, hex.
    pub sha256_before: String,
    /// See `sha256_before`.
    pub sha256_after: String,
}

/// SHA-256 of text, hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Tenants whose sections differ between two rule texts.
pub fn tenants_changed(before: &str, after: &str) -> Vec<String> {
    let a: RawRules = toml::from_str(before).unwrap_or_default();
    let b: RawRules = toml::from_str(after).unwrap_or_default();
    let mut out = Vec::new();
    for id in a.tenants.keys().chain(b.tenants.keys()) {
        if out.contains(id) {
            continue;
        }
        let sa = a
            .tenants
            .get(id)
            .map(|t| toml::to_string(t).unwrap_or_default());
        let sb = b
            .tenants
            .get(id)
            .map(|t| toml::to_string(t).unwrap_or_default());
        if sa != sb {
            out.push(id.clone());
        }
    }
    out.sort();
    out
}

/// Appends one entry to the audit log and syncs it.
pub fn append_audit(path: &Path, entry: &AuditEntry) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
    line.push('\n');
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

/// Reads the audit log (a missing file is an empty log).
pub fn read_audit(path: &Path) -> std::io::Result<Vec<AuditEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Writes a file atomically: a temporary file, synced, renamed over.
pub fn persist(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("toml.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Replaces tenant `tenant`'s section of `current` with the one in
/// `incoming`, which must contain that tenant's section and nothing else.
pub fn merge_tenant_section(current: &str, incoming: &str, tenant: &str) -> Result<String, String> {
    let mut cur: toml::Table = toml::from_str(current).map_err(|e| {
        format!("the current rules file does not parse ({e}); a super admin must fix it")
    })?;
    let inc: toml::Table =
        toml::from_str(incoming).map_err(|e| format!("the body is not TOML: {e}"))?;
    let Some(toml::Value::Table(tenants)) = inc.get("tenants") else {
        return Err(format!(
            "the body must hold one [tenants.{tenant}] section and nothing else"
        ));
    };
    if inc.len() != 1 || tenants.len() != 1 || !tenants.contains_key(tenant) {
        return Err(format!(
            "a '{tenant}' token may only submit a [tenants.{tenant}] section"
        ));
    }
    let section = tenants[tenant].clone();
    let all = cur
        .entry("tenants")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(all) = all else {
        return Err("the current rules file's `tenants` is not a table".into());
    };
    all.insert(tenant.to_owned(), section);
    toml::to_string(&cur).map_err(|e| format!("cannot write the merged rules: {e}"))
}

/// The section of one tenant, as TOML text (empty when it has none).
pub fn tenant_section(text: &str, tenant: &str) -> String {
    let Ok(raw) = toml::from_str::<RawRules>(text) else {
        return String::new();
    };
    let mut only = RawRules::default();
    if let Some(t) = raw.tenants.get(tenant) {
        only.tenants.insert(tenant.to_owned(), t.clone());
    }
    toml::to_string(&only).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_sections_merge_and_changes_are_named() {
        let cur = "[tenants.acme]\ntimezone = \"Asia/Shanghai\"\n\n[tenants.globex]\ntimezone = \"Europe/Berlin\"\n";
        let merged = merge_tenant_section(
            cur,
            "[tenants.acme]\ntimezone = \"UTC\"\nmin_interval_min = 30\n",
            "acme",
        )
        .unwrap();
        assert!(merged.contains("Europe/Berlin"), "globex kept: {merged}");
        assert!(merged.contains("min_interval_min = 30"), "{merged}");
        assert_eq!(tenants_changed(cur, &merged), ["acme"]);
        assert!(
            merge_tenant_section(cur, "[tenants.globex]\ntimezone = \"UTC\"\n", "acme").is_err()
        );
        assert!(merge_tenant_section(cur, "x = 1\n", "acme").is_err());
        let only = tenant_section(&merged, "globex");
        assert!(
            only.contains("Europe/Berlin") && !only.contains("acme"),
            "{only}"
        );
    }

    #[test]
    fn audit_log_appends_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/rules.jsonl");
        assert!(read_audit(&path).unwrap().is_empty());
        let e = AuditEntry {
            time_ms: 1,
            actor: "ops".into(),
            role: "super".into(),
            scope: "all".into(),
            version: 2,
            tenants_changed: vec!["acme".into()],
            sha256_before: sha256_hex(""),
            sha256_after: sha256_hex("x"),
        };
        append_audit(&path, &e).unwrap();
        append_audit(&path, &e).unwrap();
        assert_eq!(read_audit(&path).unwrap(), vec![e.clone(), e]);
    }
}
