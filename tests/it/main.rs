//! Integration tests of the `infra` binary and of the language + compiler on data files.
//!
//! `tests/data/err/<code>.yaml` must produce a diagnostic with that code; its rendered diagnostics are
//! compared with `<code>.stderr` (written when missing, or regenerated with `UPDATE_EXPECT=1`).
//! `tests/data/ok/*` must load and compile with no error.

mod cli;
mod cli_run;
mod golden;
mod limits;
mod run;
mod schemas;

use std::path::PathBuf;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Loads and compiles every runbook of a file; returns runbooks compiled and all diagnostics, sorted.
pub fn check_file(path: &std::path::Path) -> (usize, Vec<dsl::Diagnostic>) {
    let text = std::fs::read_to_string(path).expect("read data file");
    let rel = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path);
    let file = dsl::SourceFile::new(rel.display().to_string(), text);
    check_source(&file, path.file_stem().and_then(|s| s.to_str()))
}

pub fn check_source(file: &dsl::SourceFile, stem: Option<&str>) -> (usize, Vec<dsl::Diagnostic>) {
    let loaded = dsl::load(file, stem);
    let mut all = dsl::Diagnostics::new();
    all.extend(loaded.diagnostics);
    let catalog = engine::Catalog::builtin();
    let opts = engine::CompileOptions {
        resolver: Some(&catalog),
        stack: Vec::new(),
    };
    let mut compiled = 0;
    for rb in loaded.runbooks {
        match engine::compile(std::sync::Arc::new(rb), &opts) {
            Ok(p) => {
                compiled += 1;
                all.extend(p.warnings().iter().cloned());
            }
            Err(d) => all.extend(d),
        }
    }
    (compiled, all.into_sorted())
}
