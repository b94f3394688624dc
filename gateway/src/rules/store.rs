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
use super::holidays::Calendars;
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
    /// The operator's calendar folder (`None`: `holidays/` beside the rules
    /// file). Rules name calendars; names are looked up only here.
    pub holidays_dir: Option<PathBuf>,
    /// Data directory (QR keys, audit log).
    pub data_dir: PathBuf,
    /// Node-wide settings.
    pub settings: AttendanceSettings,
    /// Tenants this node serves.
    pub tenants: Vec<String>,
}

/// Rules compiled without side effects, ready to be applied with
/// [`RulesSource::apply_keys`].
#[derive(Debug)]
pub struct Compiled {
    /// The compiled rules; a QR site whose key does not exist yet carries a
    /// placeholder key until the keys are created.
    pub rules: Rules,
    /// `(tenant, site)` of QR sites whose key file does not exist yet.
    pub missing_keys: Vec<(String, String)>,
}

impl RulesSource {
    /// The audit log of rule changes.
    pub fn audit_path(&self) -> PathBuf {
        self.data_dir.join("audit").join("rules.jsonl")
    }

    /// The calendar folder calendar names are looked up in.
    pub fn calendar_dir(&self) -> PathBuf {
        self.holidays_dir.clone().unwrap_or_else(|| {
            self.path
                .as_deref()
                .map_or_else(|| PathBuf::from("."), config::base_dir_of)
                .join("holidays")
        })
    }

    /// Compiles `text` (every problem at once). Reads the calendar folder
    /// and existing QR keys, and writes nothing: a refused change leaves no
    /// trace on disk. QR keys still missing are listed in the result.
    pub fn compile(&self, text: &str, source: &str) -> Result<Compiled, RulesErrors> {
        let tenants: Vec<&str> = self.tenants.iter().map(String::as_str).collect();
        let missing = std::cell::RefCell::new(Vec::new());
        let dir = self.data_dir.clone();
        let mut keys = |tenant: &str, site: &str| -> Result<[u8; 32], String> {
            match super::qr::read_key(&dir, tenant, site) {
                Ok(Some(k)) => Ok(k),
                Ok(None) => {
                    missing
                        .borrow_mut()
                        .push((tenant.to_owned(), site.to_owned()));
                    // Never used to judge a punch: apply_keys recompiles once
                    // the real key exists.
                    Ok([0; 32])
                }
                Err(e) => Err(format!("{e:#}")),
            }
        };
        let mut ctx = CompileContext {
            calendars: Calendars::load(&self.calendar_dir()),
            settings: self.settings.clone(),
            qr_key: &mut keys,
        };
        let rules = config::compile_text(text, source, &tenants, &mut ctx)?;
        let missing_keys = std::mem::take(&mut *missing.borrow_mut());
        Ok(Compiled {
            rules,
            missing_keys,
        })
    }

    /// Makes compiled rules live-ready: creates the QR keys they still miss
    /// (the only write a rules change makes besides the rules file and the
    /// audit log) and, when it did, compiles `text` again with the real keys.
    /// Call it only for a change that is being applied.
    pub fn apply_keys(
        &self,
        compiled: Compiled,
        text: &str,
        source: &str,
    ) -> anyhow::Result<Rules> {
        if compiled.missing_keys.is_empty() {
            return Ok(compiled.rules);
        }
        for (tenant, site) in &compiled.missing_keys {
            super::qr::load_or_create_key(&self.data_dir, tenant, site)?;
        }
        let again = self
            .compile(text, source)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            again.missing_keys.is_empty(),
            "QR keys under {} vanished while the rules were applied; check what else writes there",
            self.data_dir.display()
        );
        Ok(again.rules)
    }

    /// Loads and compiles the rules file (or the defaults without one),
    /// creating missing QR keys: loading at start applies the file.
    pub fn load(&self) -> anyhow::Result<(Rules, String)> {
        let Some(path) = &self.path else {
            return Ok((Rules::unconfigured(self.settings.clone()), String::new()));
        };
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "{source}: cannot read the rules file: {e}; point attendance.rules at a rules file (see config/rules.toml)"
            )
        })?;
        let compiled = self
            .compile(&text, &source)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let rules = self.apply_keys(compiled, &text, &source)?;
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

/// Replaces tenant `tenant`'s section of `current` with the one in
/// `incoming`, which must contain that tenant's section and nothing else.
///
/// The file is edited in place (`toml_edit`): every other line, the
/// operator's comments and the other tenants' sections stay byte for byte,
/// and the new section takes the old one's place (with the comment above its
/// header), or goes at the end when the tenant had none.
pub fn merge_tenant_section(current: &str, incoming: &str, tenant: &str) -> Result<String, String> {
    use toml_edit::{DocumentMut, Item};
    let mut cur: DocumentMut = parse_document(current).map_err(|e| {
        format!("the current rules file does not parse ({e}); a super admin must fix it")
    })?;
    let inc: DocumentMut =
        parse_document(incoming).map_err(|e| format!("the body is not TOML: {e}"))?;
    let only_own = || {
        format!("a '{tenant}' token may only submit a [tenants.{tenant}] section, and nothing else")
    };
    let tenants_in = inc
        .get("tenants")
        .and_then(Item::as_table_like)
        .ok_or_else(only_own)?;
    if inc.len() != 1 || tenants_in.len() != 1 {
        return Err(only_own());
    }
    let section = tenants_in.get(tenant).ok_or_else(only_own)?.clone();
    if !section.is_table_like() {
        return Err(only_own());
    }

    let prefix = [Step::Key("tenants".into()), Step::Key(tenant.into())];
    let in_section = |p: &[Step]| p.starts_with(&prefix);
    let before = table_order(cur.as_item());
    let incoming_order: Vec<Vec<Step>> = table_order(inc.as_item())
        .into_iter()
        .filter(|p| in_section(p))
        .collect();

    let all = cur
        .entry("tenants")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_like_mut()
        .ok_or("the current rules file's `tenants` is not a table; a super admin must fix it")?;
    // The comment above the old section's header is the operator's; keep it.
    let old_prefix = all
        .get(tenant)
        .and_then(Item::as_table)
        .and_then(|t| t.decor().prefix())
        .and_then(|p| p.as_str())
        .map(str::to_owned);
    let _replaced = all.insert(tenant, section);
    if let (Some(p), Some(t)) = (old_prefix, all.get_mut(tenant).and_then(Item::as_table_mut)) {
        t.decor_mut().set_prefix(p);
    }

    // Tables are written in position order: renumber them so the new
    // section's tables sit where the old section's first table was.
    let at = before.iter().position(|p| in_section(p));
    let mut order: Vec<Vec<Step>> = before.into_iter().filter(|p| !in_section(p)).collect();
    let at = at.map_or(order.len(), |i| i.min(order.len()));
    order.splice(at..at, incoming_order);
    for (pos, path) in order.iter().enumerate() {
        if let Some(t) = table_at_mut(cur.as_table_mut(), path) {
            t.set_position(pos as isize);
        }
    }
    Ok(cur.to_string())
}

/// Parses text as an editable TOML document. toml_edit 0.23.10 panics
/// ("all items have spans") on some malformed input instead of failing,
/// e.g. `=={` then a line `.` (found by the `tenant_rules` fuzz target);
/// the text is a tenant's request body, so the panic is caught and
/// answered as the parse error it should have been.
fn parse_document(text: &str) -> Result<toml_edit::DocumentMut, String> {
    match std::panic::catch_unwind(|| text.parse::<toml_edit::DocumentMut>()) {
        Ok(parsed) => parsed.map_err(|e| e.to_string()),
        Err(_) => Err("the TOML parser gave up on it (malformed TOML)".to_owned()),
    }
}

/// One step of the path to a table in a `toml_edit` document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The paths of every `[table]` and `[[array]]` element, in the order
/// `toml_edit` writes them (by position; an unpositioned table follows the
/// one before it).
fn table_order(root: &toml_edit::Item) -> Vec<Vec<Step>> {
    fn walk(
        t: &toml_edit::Table,
        path: &mut Vec<Step>,
        last: &mut isize,
        out: &mut Vec<(isize, Vec<Step>)>,
    ) {
        if !t.is_dotted() {
            if let Some(p) = t.position() {
                *last = p;
            }
            out.push((*last, path.clone()));
        }
        for (k, v) in t.iter() {
            path.push(Step::Key(k.to_owned()));
            match v {
                toml_edit::Item::Table(sub) => walk(sub, path, last, out),
                toml_edit::Item::ArrayOfTables(a) => {
                    for (i, sub) in a.iter().enumerate() {
                        path.push(Step::Index(i));
                        walk(sub, path, last, out);
                        path.pop();
                    }
                }
                _ => {}
            }
            path.pop();
        }
    }
    let mut out = Vec::new();
    if let Some(t) = root.as_table() {
        walk(t, &mut Vec::new(), &mut 0, &mut out);
    }
    out.sort_by_key(|(p, _)| *p);
    out.into_iter().map(|(_, path)| path).collect()
}

/// The table at `path` under `t` (see [`table_order`]).
fn table_at_mut<'a>(
    t: &'a mut toml_edit::Table,
    path: &[Step],
) -> Option<&'a mut toml_edit::Table> {
    let Some((step, rest)) = path.split_first() else {
        return Some(t);
    };
    let Step::Key(k) = step else {
        return None;
    };
    match t.get_mut(k)? {
        toml_edit::Item::Table(sub) => table_at_mut(sub, rest),
        toml_edit::Item::ArrayOfTables(a) => match rest.split_first() {
            Some((Step::Index(i), rest)) => table_at_mut(a.get_mut(*i)?, rest),
            _ => None,
        },
        _ => None,
    }
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
    fn a_tenant_merge_keeps_the_rest_of_the_file_byte_for_byte() {
        let cur = "# operator: do not remove\n\n# acme's section\n[tenants.acme]\ntimezone = \"Asia/Shanghai\" # local\n\n[tenants.acme.sites.hq]\nqr = true\n\n# globex, managed by ops\n[tenants.globex]\ntimezone = \"Europe/Berlin\"\n\n[tenants.globex.groups.office]\nschedule = \"free\"\n";
        let merged = merge_tenant_section(
            cur,
            "[tenants.acme]\ntimezone = \"UTC\"\n\n[tenants.acme.groups.day]\nschedule = \"free\"\n",
            "acme",
        )
        .unwrap();
        let globex = &cur[cur.find("# globex").unwrap()..];
        assert!(merged.starts_with("# operator: do not remove\n\n# acme's section\n[tenants.acme]\ntimezone = \"UTC\"\n"), "{merged}");
        assert!(
            merged.ends_with(globex),
            "globex and its comment kept:\n{merged}"
        );
        assert!(
            merged.contains("[tenants.acme.groups.day]") && !merged.contains("qr = true"),
            "{merged}"
        );
        // A tenant with no section yet is appended.
        let added = merge_tenant_section(cur, "[tenants.initech]\ntimezone = \"UTC\"\n", "initech")
            .unwrap();
        assert!(added.starts_with(cur), "{added}");
    }

    /// Regression (fuzzing, `tenant_rules`): this body made toml_edit panic
    /// inside `merge_tenant_section`, so a tenant's PUT killed its request
    /// task instead of getting a 403 that names the problem.
    #[test]
    fn a_body_that_crashes_the_toml_parser_is_refused_not_a_panic() {
        let cur = "[tenants.acme]\ntimezone = \"UTC\"\n";
        for body in ["=={\n.", "=={\n .", "=={\n .n.n"] {
            let e = merge_tenant_section(cur, body, "acme").unwrap_err();
            assert!(e.starts_with("the body is not TOML"), "{e}");
        }
        // The same text as a whole (super admin) file goes through `toml`,
        // which refuses it without panicking.
        assert!(toml::from_str::<RawRules>("=={\n.").is_err());
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
