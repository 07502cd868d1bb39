//! `infra validate --fix`: files in the original product's runbook syntax rewritten into the current
//! one by `dsl::legacy::fix`, each through a temporary sibling and a rename.

use std::path::{Path, PathBuf};

use engine::Catalog;
use engine::Origin;
use serde_json::{Value, json};

use crate::cli::{USAGE, looks_like_path};
use crate::render;

/// Rewrites the files behind `targets` (paths, or names of project runbooks; none: every project
/// file). Returns what changed per file and whether a file was left unfixed; `Err` with an exit code
/// when a target cannot be fixed at all.
pub(super) fn files(catalog: &Catalog, targets: &[String]) -> Result<(Vec<Value>, bool), u8> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut refused = false;
    for t in targets {
        if looks_like_path(t) && !t.contains('#') {
            paths.push(PathBuf::from(t));
        } else if let Some(e) = catalog.get(t) {
            if e.origin == Origin::Builtin {
                render::err(&format!(
                    "error: `{t}` is a built-in runbook, which `--fix` never rewrites\n  = help: copy it into the project's `runbooks/` to change it\n"
                ));
                refused = true;
            } else {
                paths.push(PathBuf::from(e.runbook.file.name()));
            }
        }
    }
    if targets.is_empty() {
        for e in catalog.entries() {
            if e.origin == Origin::Project {
                paths.push(PathBuf::from(e.runbook.file.name()));
            }
        }
        for d in catalog.diagnostics() {
            if let Some(f) = &d.file {
                paths.push(PathBuf::from(f.name()));
            }
        }
    }
    if refused {
        return Err(USAGE);
    }
    paths.sort();
    paths.dedup();
    let mut out = Vec::new();
    let mut left = false;
    for p in paths {
        match one(&p) {
            Ok(Some(v)) => out.push(v),
            Ok(None) => {}
            Err(()) => left = true,
        }
    }
    Ok((out, left))
}

/// One file: `None` when there was nothing to do, `Err` when it could not be rewritten (said here, or
/// by the validation that follows).
fn one(path: &Path) -> Result<Option<Value>, ()> {
    let Ok(file) = engine::ctx::read_source(path) else {
        return Err(());
    };
    let stem = path.file_stem().and_then(|s| s.to_str());
    let fixed = match dsl::legacy::fix(&file, stem) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        Err(diags) => {
            let refusal = diags
                .iter()
                .find(|d| d.code == dsl::Code::DeprecatedSyntax && d.span.is_none());
            match refusal {
                Some(d) => render::err(&format!(
                    "not fixed: `{}`: {}\n  = help: {}\n",
                    path.display(),
                    d.message,
                    d.help.as_deref().unwrap_or_default()
                )),
                None => render::err(&format!(
                    "not fixed: `{}`: it has errors, reported below\n",
                    path.display()
                )),
            }
            return Err(());
        }
    };
    if let Err(e) = write_atomically(path, &fixed.text) {
        render::err(&format!("not fixed: `{}`: {e}\n", path.display()));
        return Err(());
    }
    let changes: Vec<Value> = fixed
        .changes
        .iter()
        .map(|d| {
            let at = d
                .file
                .as_ref()
                .zip(d.span)
                .map(|(f, s)| f.line_col(s.start).to_string());
            json!({"at": at, "was": d.message, "now": d.help})
        })
        .collect();
    Ok(Some(
        json!({"source": path.display().to_string(), "changes": changes}),
    ))
}

/// Writes `text` beside `path`, then renames it over `path`, keeping its permissions.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("runbooks");
    let tmp = path.with_file_name(format!(".{name}.infra-fix"));
    let perms = std::fs::metadata(path)?.permissions();
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, perms)?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// What `files` changed, for people.
pub(super) fn print(fixed: &[Value], left: bool) {
    if fixed.is_empty() && !left {
        render::out("nothing to fix\n");
        return;
    }
    let mut text = String::new();
    for f in fixed {
        let changes = f["changes"].as_array().map_or(&[][..], Vec::as_slice);
        let source = f["source"].as_str().unwrap_or_default();
        text.push_str(&format!(
            "fixed {source}: {} change{}\n",
            changes.len(),
            if changes.len() == 1 { "" } else { "s" }
        ));
        for c in changes {
            text.push_str(&format!(
                "  {source}:{}: {}\n    {}\n",
                c["at"].as_str().unwrap_or("?"),
                c["was"].as_str().unwrap_or_default(),
                c["now"].as_str().unwrap_or_default()
            ));
        }
    }
    render::out(&text);
}
