//! The repository keeps two promises a reader relies on without running
//! anything: ARCHITECTURE.md names every source file (so the map never
//! drifts from the code), and clock reads live only in `clock.rs` files (so
//! a reader finds every one in one place, and `clippy.toml`'s bans are not
//! quietly switched off elsewhere).

use std::path::{Path, PathBuf};

/// The crates whose `src/` folders ARCHITECTURE.md maps, by section.
const CRATES: &[&str] = &[
    "schema",
    "spatial",
    "gateway",
    "gateway/testkit",
    "loadtest",
    "benches",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("gateway/ has a parent")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let path = e.expect("readable dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// One table row of a crate's section: its first cell (a path relative to
/// the crate, backticks removed) and the whole row's text.
struct Row {
    first: String,
    text: String,
}

/// The rows of each `## \`crate/\`` section of ARCHITECTURE.md.
fn sections(map: &str) -> Vec<(String, Vec<Row>)> {
    let mut out: Vec<(String, Vec<Row>)> = Vec::new();
    for line in map.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            let name = h.trim().trim_matches('`').trim_end_matches('/').to_string();
            out.push((name, Vec::new()));
        } else if let (Some(rest), Some((_, rows))) = (line.strip_prefix('|'), out.last_mut()) {
            let first = rest.split('|').next().unwrap_or("").trim();
            // A first cell may name several paths: "`a.rs`, `b.rs`".
            for cell in first.split(',') {
                rows.push(Row {
                    first: cell.trim().trim_matches('`').to_string(),
                    text: line.to_string(),
                });
            }
        }
    }
    out
}

/// Whether `rel` (a path under the crate such as `src/log/format.rs`) is
/// named: by a row of its own, or by a folder row of its parent that names
/// the file in backticks, or by a folder row marked as generated code.
fn named(rows: &[Row], rel: &str) -> bool {
    let (parent, file) = rel.rsplit_once('/').expect("under src/");
    rows.iter().any(|r| {
        r.first == rel
            || (r.first == format!("{parent}/") && r.text.contains(&format!("`{file}`")))
            || (r.first.ends_with('/') && rel.starts_with(&r.first) && r.text.contains("generated"))
    })
}

#[test]
fn architecture_md_names_every_source_file() {
    let root = repo_root();
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let sections = sections(&map);
    let mut missing = Vec::new();
    for krate in CRATES {
        let rows = sections
            .iter()
            .find(|(name, _)| name == krate)
            .map(|(_, rows)| rows.as_slice())
            .unwrap_or_else(|| panic!("ARCHITECTURE.md has no \"## `{krate}/`\" section"));
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files);
        assert!(!files.is_empty(), "{krate}/src has no .rs files");
        for f in files {
            let rel = f
                .strip_prefix(root.join(krate))
                .expect("under the crate")
                .to_string_lossy()
                .replace('\\', "/");
            if !named(rows, &rel) {
                missing.push(format!("{krate}/{rel}"));
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name these source files; add a row (or name the file \
         in its folder's row) saying what each is for:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_map_check_fails_on_an_unnamed_file() {
    let rows = &sections(
        "## `gateway/`\n| `src/log/` | the log: `format.rs`, `writer.rs` |\n\
         | `src/gen/` | generated Rust |\n| `src/a.rs`, `src/b.rs` | two |\n",
    )[0]
    .1;
    assert!(named(rows, "src/log/format.rs"));
    assert!(!named(rows, "src/log/reader.rs"));
    assert!(named(rows, "src/gen/record_generated.rs"));
    assert!(named(rows, "src/b.rs"));
    assert!(!named(rows, "src/c.rs"));
}

/// Every allow of clippy's disallowed-methods lint sits in a file named
/// `clock.rs`: the bans in clippy.toml cover the rest of the code.
#[test]
fn clock_reads_only_in_clock_rs() {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in CRATES {
        rust_files(&root.join(dir), &mut files);
    }
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "clock.rs"))
        .filter(|f| !f.components().any(|c| c.as_os_str() == "target"))
        .filter(|f| {
            std::fs::read_to_string(f)
                .map(|t| t.contains(concat!("clippy::", "disallowed_methods")))
                .unwrap_or(false)
        })
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "clock reads outside clock.rs (move them into the crate's clock.rs and call that): {offenders:?}"
    );
}
