//! The repository keeps three promises a reader relies on without running
//! anything: ARCHITECTURE.md names every source file (so the map never
//! drifts from the code), clock reads live only in `clock.rs` files (so
//! a reader finds every one in one place, and `clippy.toml`'s bans are not
//! quietly switched off elsewhere), and `gateway/src` has no import circles
//! beyond a shrinking list (so the layers read top-down).

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

/// Import circles in `gateway/src` tolerated for now: none. Each entry would be
/// one circle's modules, sorted; the test fails when a circle appears that is
/// not listed, and when a listed one is gone (so the list only shrinks).
const KNOWN_CIRCLES: &[&[&str]] = &[];

/// Module path (`a::b`) of a source file relative to `src/`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file as the module graph sees it: line comments removed
/// (doc links are not imports) and the unit-test module at the end cut off.
fn code_of(text: &str) -> String {
    let body = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    body.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module `code` (the code of module `cur`) refers to through a
/// `crate::`, `super::` or `self::` path, resolved to the longest known
/// module prefix; parents and itself excluded.
fn references(cur: &str, code: &str, modules: &[String]) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(root).map(|i| i + from) {
            from = i + root.len();
            if i > 0 && (ident(bytes[i - 1] as char) || bytes[i - 1] == b':') {
                continue;
            }
            let path: String = code[i..]
                .chars()
                .take_while(|&c| ident(c) || c == ':')
                .collect();
            let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let mut base: Vec<&str> = if cur.is_empty() {
                Vec::new()
            } else {
                cur.split("::").collect()
            };
            match segs.first().copied() {
                Some("crate") => base.clear(),
                Some("self") => {}
                _ => {
                    base.pop();
                }
            }
            segs.remove(0);
            while segs.first() == Some(&"super") {
                base.pop();
                segs.remove(0);
            }
            let mut best = None;
            for n in 0..=segs.len() {
                let mut m = base.clone();
                m.extend_from_slice(&segs[..n]);
                let m = m.join("::");
                if modules.contains(&m) {
                    best = Some(m);
                }
            }
            if let Some(m) = best {
                let is_parent = m.is_empty() || cur.starts_with(&format!("{m}::"));
                if m != cur && !is_parent && !out.contains(&m) {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// The strongly connected components with more than one module (Tarjan).
fn circles(modules: &[String], edges: &[Vec<usize>]) -> Vec<Vec<String>> {
    struct S<'a> {
        edges: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on: Vec<bool>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut S<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for &w in &s.edges[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().expect("v is on the stack");
                s.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.out.push(comp);
            }
        }
    }
    let n = modules.len();
    let mut s = S {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        stack: Vec::new(),
        on: vec![false; n],
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    let mut out: Vec<Vec<String>> = s
        .out
        .into_iter()
        .map(|c| {
            let mut c: Vec<String> = c.into_iter().map(|i| modules[i].clone()).collect();
            c.sort();
            c
        })
        .collect();
    out.sort();
    out
}

/// The import circles among `files` (module path, code).
fn import_circles(files: &[(String, String)]) -> Vec<Vec<String>> {
    let modules: Vec<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let edges: Vec<Vec<usize>> = files
        .iter()
        .map(|(m, code)| {
            references(m, &code_of(code), &modules)
                .iter()
                .filter_map(|r| modules.iter().position(|x| x == r))
                .collect()
        })
        .collect();
    circles(&modules, &edges)
}

#[test]
fn gateway_src_has_no_unlisted_import_circle() {
    let src = repo_root().join("gateway/src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<(String, String)> = paths
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).expect("under src");
            (
                module_of(rel),
                std::fs::read_to_string(p).expect("readable source"),
            )
        })
        .collect();
    let found = import_circles(&files);
    let known: Vec<Vec<String>> = KNOWN_CIRCLES
        .iter()
        .map(|c| c.iter().map(|s| (*s).to_owned()).collect())
        .collect();
    let new: Vec<_> = found.iter().filter(|c| !known.contains(c)).collect();
    assert!(
        new.is_empty(),
        "import circles in gateway/src: {new:?}. Layers import downwards only: move the shared \
         piece into a module below both (as log/shared.rs and rules/calendar.rs do)"
    );
    let gone: Vec<_> = known.iter().filter(|c| !found.contains(c)).collect();
    assert!(
        gone.is_empty(),
        "these circles are gone (or changed): remove them from KNOWN_CIRCLES: {gone:?}"
    );
}

#[test]
fn the_circle_check_finds_a_circle_through_super_and_crate_paths() {
    let files = vec![
        ("".to_owned(), "mod a; mod b;".to_owned()),
        (
            "a".to_owned(),
            "use crate::b::Thing; // crate::c in a comment is no import".to_owned(),
        ),
        ("b".to_owned(), "use super::c::Other;".to_owned()),
        (
            "c".to_owned(),
            "fn f() -> crate::a::X { todo!() }\n#[cfg(test)]\nmod tests { use crate::b; }"
                .to_owned(),
        ),
        ("d".to_owned(), "use crate::a;".to_owned()),
    ];
    assert_eq!(
        import_circles(&files),
        vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
    );
    let broken: Vec<(String, String)> = files
        .into_iter()
        .map(|(m, c)| if m == "c" { (m, String::new()) } else { (m, c) })
        .collect();
    assert!(import_circles(&broken).is_empty());
}
