//! The architecture map names only what exists: every file path it gives in backticks is a file or
//! folder of this repository (relative to the root or to a crate's `src/`), or a file infra writes at run
//! time.

use std::path::{Path, PathBuf};

/// Files and folders infra writes in a profiles directory or a run, named in the docs.
const RUNTIME: &[&str] = &[
    "runs/",
    "audit.jsonl",
    "store.sqlite3",
    "journal.jsonl",
    "plan.json",
    "result.json",
    "runbooks.json",
    "targets.json",
    "known_hosts",
    "rows.jsonl",
];

fn names_under(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            names_under(&p, out);
        } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
            out.push(n.to_owned());
        }
    }
}

/// Backticked words that look like paths: with a file extension we keep, or ending in `/`.
fn paths_named(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 0 || part.contains(char::is_whitespace) || part.is_empty() {
            continue;
        }
        if part.contains(['{', '}', '*', '<', '>', '…', '(', ')', ':', '|', ',', '#']) {
            continue;
        }
        let ext_ok = [".rs", ".md", ".json", ".yaml", ".toml", ".py", ".sh"]
            .iter()
            .any(|e| part.ends_with(e));
        if ext_ok || (part.ends_with('/') && part.len() > 1) {
            out.push(part.to_owned());
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_path_the_architecture_map_names_exists() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docs/architecture.md")).expect("docs");
    let bases = [
        "",
        "engine/src",
        "engine",
        "src",
        "dsl/src",
        "tests",
        "tests/it",
        "tests/support",
        "benches",
        "schemas",
    ];
    let mut names = Vec::new();
    for d in ["engine/src", "src", "dsl/src", "tests", "benches"] {
        names_under(&root.join(d), &mut names);
    }
    let missing: Vec<String> = paths_named(&text)
        .into_iter()
        .filter(|p| !RUNTIME.contains(&p.as_str()))
        .filter(|p| !bases.iter().any(|b| root.join(b).join(p).exists()))
        // a bare file name, given under its module's heading
        .filter(|p| p.contains('/') || !names.contains(p))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names paths that do not exist: {missing:?}"
    );
}
