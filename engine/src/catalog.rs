//! The runbook catalog: built-in runbooks (embedded) and the project's, found by name.
//!
//! Later sources override earlier ones by name: built-in, then `<profiles>/runbooks.json`, then
//! `<profiles>/runbooks/*.{yaml,yml,json}` (or `MCP_RUNBOOKS_PATH`, a file or a directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dsl::{Code, Diagnostic, Runbook, SourceFile};
use indexmap::IndexMap;
use serde::Serialize;

use crate::plan::Resolve;

include!(concat!(env!("OUT_DIR"), "/builtin_runbooks.rs"));

/// Where a runbook came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Builtin,
    Project,
}

/// One runbook in the catalog.
#[derive(Clone, Debug)]
pub struct Entry {
    pub runbook: Arc<Runbook>,
    pub origin: Origin,
}

/// Where project runbooks live.
#[derive(Clone, Debug, Default)]
pub struct CatalogOptions {
    /// The profiles directory (`runbooks/` and `runbooks.json` inside it).
    pub profiles_dir: Option<PathBuf>,
    /// `MCP_RUNBOOKS_PATH`: a file or directory used instead of the profiles directory's.
    pub runbooks_path: Option<PathBuf>,
}

/// All runbooks known to this process, and the problems found loading them.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: IndexMap<String, Entry>,
    diagnostics: Vec<Diagnostic>,
}

impl Catalog {
    /// Built-in runbooks only.
    pub fn builtin() -> Self {
        let mut c = Catalog::default();
        for (name, text) in BUILTIN_RUNBOOKS {
            let file = SourceFile::new(format!("<builtin>/{name}"), *text);
            c.add_file(&file, stem(name), Origin::Builtin);
        }
        c
    }

    /// Built-in runbooks, then the project's.
    pub fn load(opts: &CatalogOptions) -> Self {
        let mut c = Catalog::builtin();
        let sources: Vec<PathBuf> = match (&opts.runbooks_path, &opts.profiles_dir) {
            (Some(p), _) => vec![p.clone()],
            (None, Some(dir)) => vec![dir.join("runbooks.json"), dir.join("runbooks")],
            (None, None) => Vec::new(),
        };
        for src in sources {
            c.add_path(&src);
        }
        c
    }

    fn add_path(&mut self, path: &Path) {
        if path.is_dir() {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(path) {
                Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
                Err(e) => {
                    self.diagnostics.push(io_error(path, &e));
                    return;
                }
            };
            files.retain(|p| is_runbook_file(p));
            files.sort();
            for f in files {
                self.add_file_path(&f);
            }
        } else if path.is_file() {
            self.add_file_path(path);
        }
    }

    fn add_file_path(&mut self, path: &Path) {
        match read_source(path) {
            Ok(file) => {
                let stem = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned);
                self.add_file(&file, stem.as_deref(), Origin::Project);
            }
            Err(d) => self.diagnostics.push(d),
        }
    }

    /// Loads the runbooks of one file; a later runbook overrides an earlier one of the same name.
    pub fn add_file(&mut self, file: &SourceFile, stem: Option<&str>, origin: Origin) {
        let loaded = dsl::load(file, stem);
        self.diagnostics.extend(loaded.diagnostics);
        for rb in loaded.runbooks {
            self.entries.insert(
                rb.name.clone(),
                Entry {
                    runbook: Arc::new(rb),
                    origin,
                },
            );
        }
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// Entries sorted by name.
    pub fn entries(&self) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self.entries.values().collect();
        v.sort_by(|a, b| a.runbook.name.cmp(&b.runbook.name));
        v
    }

    /// Problems in runbook files (a file with errors contributes no runbooks).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Names, for suggestions.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

impl Resolve for Catalog {
    fn resolve(&self, name: &str) -> Option<Arc<Runbook>> {
        self.get(name).map(|e| e.runbook.clone())
    }
}

fn stem(file_name: &str) -> Option<&str> {
    Path::new(file_name).file_stem().and_then(|s| s.to_str())
}

/// Whether a path names a runbook file by its extension.
pub fn is_runbook_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn io_error(path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic::error(
        Code::YamlSyntax,
        format!("cannot read `{}`: {e}", path.display()),
    )
}

/// Reads a runbook file as a source (refusing files above the size limit before reading them whole).
pub fn read_source(path: &Path) -> Result<SourceFile, Diagnostic> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, &e))?;
    if meta.len() > dsl::parse::MAX_FILE_BYTES as u64 {
        return Err(Diagnostic::error(
            Code::InputTooLarge,
            format!(
                "`{}` is {} bytes; the limit is {}",
                path.display(),
                meta.len(),
                dsl::parse::MAX_FILE_BYTES
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, &e))?;
    Ok(SourceFile::new(path.display().to_string(), text))
}
