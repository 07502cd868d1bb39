//! The runbook catalog: built-in runbooks (embedded) and the project's, found by name.
//!
//! Later sources override earlier ones by name: built-in, then `<profiles>/runbooks.json`, then
//! `<profiles>/runbooks/*.{yaml,yml,json}` (or `MCP_RUNBOOKS_PATH`, a file or a directory). An
//! entry that replaced another says so (`Entry::overrides`: `builtin` when it shadows a built-in,
//! even through another project runbook), so listings can show it. `is_builtin_name` is what
//! `runbook upsert` checks: a built-in's name needs `override: true` there, while a project file
//! written by hand is only marked. `Catalog` implements `Resolve` for nested runbooks.
//!
//! Project files are parsed lazily: `index` (a cache under the profiles directory) says which names
//! a file defines as long as the file is unchanged, so `get` parses only the file of the runbook
//! asked for, once (`Slot::entry`, `LazyFile::loaded`); `entries` (list, validate) parses them all.
//! Files the index does not know, or knew with errors, are parsed at load.

mod index;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use dsl::{Diagnostic, Runbook, SourceFile};
use indexmap::IndexMap;
use serde::Serialize;

use crate::ctx::{io_error, read_source};
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
    /// The source of the runbook of the same name this one replaced: `Builtin` when it shadows a
    /// built-in (even through another project runbook), `Project` when only a project runbook.
    pub overrides: Option<Origin>,
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
    entries: IndexMap<String, Slot>,
    files: Vec<LazyFile>,
    diagnostics: Vec<Diagnostic>,
}

/// One name: where it came from and its entry, loaded now or on first use.
#[derive(Debug)]
struct Slot {
    origin: Origin,
    overrides: Option<Origin>,
    /// The lazy file that defines it (none: `entry` was set at load).
    file: Option<usize>,
    entry: OnceLock<Option<Entry>>,
}

/// A project file the index vouched for, parsed on first use.
#[derive(Debug)]
struct LazyFile {
    path: PathBuf,
    stem: Option<String>,
    loaded: OnceLock<Vec<Arc<Runbook>>>,
}

impl LazyFile {
    fn runbooks(&self) -> &[Arc<Runbook>] {
        self.loaded.get_or_init(|| match read_source(&self.path) {
            Ok(file) => {
                let loaded = dsl::load(&file, self.stem.as_deref());
                if loaded.has_errors() {
                    Vec::new()
                } else {
                    loaded.runbooks.into_iter().map(Arc::new).collect()
                }
            }
            Err(_) => Vec::new(),
        })
    }
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
        let mut index = index::Index::open(opts.profiles_dir.as_deref());
        for src in sources {
            c.add_path(&src, &mut index);
        }
        index.save();
        c
    }

    fn add_path(&mut self, path: &Path, index: &mut index::Index) {
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
                self.add_file_path(&f, index);
            }
        } else if path.is_file() {
            self.add_file_path(path, index);
        }
    }

    fn add_file_path(&mut self, path: &Path, index: &mut index::Index) {
        let stem = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned);
        let stamp = index::Stamp::of(path);
        if let Some(names) = stamp.and_then(|st| index.lookup(path, st)) {
            let file = self.files.len();
            self.files.push(LazyFile {
                path: path.to_owned(),
                stem,
                loaded: OnceLock::new(),
            });
            for name in names {
                self.insert(name, Origin::Project, Some(file), None);
            }
            return;
        }
        match read_source(path) {
            Ok(file) => {
                let before = self.diagnostics.len();
                let names = self.add_file(&file, stem.as_deref(), Origin::Project);
                if let Some(stamp) = stamp {
                    // warnings too: a file with any diagnostic is parsed every time, so they are shown every time
                    let has_errors = self.diagnostics.len() > before;
                    index.learn(
                        path,
                        index::FileNames {
                            stamp,
                            names,
                            has_errors,
                        },
                    );
                }
            }
            Err(d) => self.diagnostics.push(d),
        }
    }

    /// Loads the runbooks of one file; a later runbook overrides an earlier one of the same name.
    /// Returns their names.
    pub fn add_file(
        &mut self,
        file: &SourceFile,
        stem: Option<&str>,
        origin: Origin,
    ) -> Vec<String> {
        let loaded = dsl::load(file, stem);
        self.diagnostics.extend(loaded.diagnostics);
        let mut names = Vec::with_capacity(loaded.runbooks.len());
        for rb in loaded.runbooks {
            names.push(rb.name.clone());
            self.insert(rb.name.clone(), origin, None, Some(Arc::new(rb)));
        }
        names
    }

    fn insert(
        &mut self,
        name: String,
        origin: Origin,
        file: Option<usize>,
        runbook: Option<Arc<Runbook>>,
    ) {
        let overrides = self
            .entries
            .get(&name)
            .map(|old| old.overrides.unwrap_or(old.origin));
        let entry = OnceLock::new();
        if let Some(runbook) = runbook {
            let _ = entry.set(Some(Entry {
                runbook,
                origin,
                overrides,
            }));
        }
        self.entries.insert(
            name,
            Slot {
                origin,
                overrides,
                file,
                entry,
            },
        );
    }

    /// The runbook of this name, its file parsed now if it was not yet.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        let slot = self.entries.get(name)?;
        slot.entry
            .get_or_init(|| {
                let file = &self.files[slot.file?];
                let runbook = file.runbooks().iter().find(|r| r.name == name)?.clone();
                Some(Entry {
                    runbook,
                    origin: slot.origin,
                    overrides: slot.overrides,
                })
            })
            .as_ref()
    }

    /// Whether a built-in runbook has this name (whether or not a project runbook replaces it).
    pub fn is_builtin_name(&self, name: &str) -> bool {
        self.entries
            .get(name)
            .is_some_and(|e| e.origin == Origin::Builtin || e.overrides == Some(Origin::Builtin))
    }

    /// Entries sorted by name (every file parsed).
    pub fn entries(&self) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self.entries.keys().filter_map(|n| self.get(n)).collect();
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

    /// How many project files the index vouched for are not parsed yet.
    pub fn unparsed_files(&self) -> usize {
        self.files
            .iter()
            .filter(|f| f.loaded.get().is_none())
            .count()
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

/// Where project runbooks are written: `MCP_RUNBOOKS_PATH` when it is a directory, else
/// `<profiles>/runbooks`.
pub fn project_dir(config: &crate::ctx::Config) -> PathBuf {
    match &config.runbooks_path {
        Some(p) if p.is_dir() => p.clone(),
        _ => config.profiles_dir.join("runbooks"),
    }
}

/// Why a project runbook file was not written or removed; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// `MCP_RUNBOOKS_PATH` names a file: the catalog would not read a runbook written elsewhere.
    #[error(
        "MCP_RUNBOOKS_PATH names a file: runbooks are read only from it, so an upserted runbook would not be found"
    )]
    RunbooksPathIsAFile,
    /// Read-only mode (policy `read_only`, `INFRA_READ_ONLY`) refuses every write, this one too.
    #[error("{0}")]
    ReadOnly(String),
    /// The audit intent could not be written first.
    #[error("{0}")]
    Audit(crate::record::AuditError),
    #[error("cannot {what} `{}`: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The fsync'd audit intent of a write to a project runbook file, before the write.
fn write_intent(
    audit: &crate::record::Audit,
    action: &str,
    name: &str,
    path: &Path,
    front_end: &str,
) -> Result<(), WriteError> {
    let rec = crate::record::AuditRecord {
        tool: Some("runbook".into()),
        action: Some(action.to_owned()),
        front_end: Some(front_end.to_owned()),
        effect: Some("write".into()),
        args: Some(serde_json::json!({"name": name, "path": path})),
        ..crate::record::AuditRecord::new(crate::record::AuditKind::Intent)
    };
    audit
        .record(&rec, true)
        .map(|_| ())
        .map_err(WriteError::Audit)
}

/// Saves `text` (an already checked runbook) as `<name>.json` among the project's runbooks: the audit
/// intent first, then a temporary file renamed over the old one, so a failure leaves nothing half
/// written. Returns the file's path.
pub fn save_project_runbook(
    config: &crate::ctx::Config,
    audit: &crate::record::Audit,
    name: &str,
    text: &str,
    front_end: &str,
) -> Result<PathBuf, WriteError> {
    if config.runbooks_path.as_ref().is_some_and(|p| !p.is_dir()) {
        return Err(WriteError::RunbooksPathIsAFile);
    }
    let dir = project_dir(config);
    let path = dir.join(format!("{name}.json"));
    let tmp = dir.join(format!(".{name}.json.infra-tmp"));
    write_intent(audit, "upsert", name, &path, front_end)?;
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&tmp, text))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(WriteError::Io {
            what: "write",
            path,
            source,
        });
    }
    Ok(path)
}

/// Removes the project runbook file `path` (the caller checked it is `name`'s own), after its audit
/// intent.
pub fn delete_project_runbook(
    audit: &crate::record::Audit,
    name: &str,
    path: &Path,
    front_end: &str,
) -> Result<(), WriteError> {
    write_intent(audit, "delete", name, path, front_end)?;
    std::fs::remove_file(path).map_err(|source| WriteError::Io {
        what: "delete",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_says_what_it_replaced() {
        let dir = tempfile::tempdir().expect("tmp");
        let step = r#"{"id": "s", "tool": "state", "args": {"action": "get", "key": "k"}}"#;
        std::fs::write(
            dir.path().join("runbooks.json"),
            format!(r#"{{"hello.world": {{"steps": [{step}]}}, "mine": {{"steps": [{step}]}}}}"#),
        )
        .expect("write");
        std::fs::create_dir(dir.path().join("runbooks")).expect("dir");
        std::fs::write(
            dir.path().join("runbooks/hello.world.json"),
            format!(r#"{{"steps": [{step}]}}"#),
        )
        .expect("write");
        std::fs::write(
            dir.path().join("runbooks/mine.json"),
            format!(r#"{{"steps": [{step}]}}"#),
        )
        .expect("write");
        let c = Catalog::load(&CatalogOptions {
            profiles_dir: Some(dir.path().to_owned()),
            runbooks_path: None,
        });
        assert!(c.diagnostics().is_empty(), "{:?}", c.diagnostics());
        // replaced twice, and still a built-in's name
        let hello = c.get("hello.world").expect("hello.world");
        assert_eq!(
            (hello.origin, hello.overrides),
            (Origin::Project, Some(Origin::Builtin))
        );
        assert!(c.is_builtin_name("hello.world"));
        let mine = c.get("mine").expect("mine");
        assert_eq!(mine.overrides, Some(Origin::Project));
        assert!(!c.is_builtin_name("mine"));
        let health = c.get("ssh.health").expect("ssh.health");
        assert_eq!((health.origin, health.overrides), (Origin::Builtin, None));
        assert!(c.is_builtin_name("ssh.health"));
    }

    #[test]
    fn project_files_are_parsed_when_a_runbook_of_theirs_is_needed() {
        let dir = tempfile::tempdir().expect("tmp");
        let step = r#"{"id": "s", "tool": "state", "args": {"action": "get", "key": "k"}}"#;
        let rbs = dir.path().join("runbooks");
        std::fs::create_dir(&rbs).expect("dir");
        for name in ["aaa", "bbb", "ccc"] {
            std::fs::write(
                rbs.join(format!("{name}.json")),
                format!(r#"{{"steps": [{step}]}}"#),
            )
            .expect("write");
        }
        std::fs::write(rbs.join("broken.yaml"), "steps: [").expect("write");
        let opts = CatalogOptions {
            profiles_dir: Some(dir.path().to_owned()),
            runbooks_path: None,
        };
        // the first load parses everything and remembers who defines what
        let first = Catalog::load(&opts);
        assert_eq!(first.unparsed_files(), 0);
        assert!(dir.path().join(".infra-cache/catalog.json").is_file());
        // the next parses nothing it need not, but the file with errors, which it shows
        let c = Catalog::load(&opts);
        assert_eq!(c.unparsed_files(), 3);
        assert!(
            c.diagnostics().iter().any(|d| d.is_error()),
            "the broken file's errors"
        );
        assert_eq!(c.get("bbb").expect("bbb").runbook.name, "bbb");
        assert_eq!(c.unparsed_files(), 2);
        assert!(c.get("nope").is_none());
        assert_eq!(
            c.entries()
                .iter()
                .filter(|e| e.origin == Origin::Project)
                .count(),
            3
        );
        assert_eq!(c.unparsed_files(), 0);
        // a changed file is read again: same length, another name inside
        std::fs::write(
            rbs.join("ccc.json"),
            format!(r#"{{"name": "ddd", "steps": [{step}]}}"#),
        )
        .expect("rewrite");
        let c = Catalog::load(&opts);
        assert!(c.get("ccc").is_none());
        assert_eq!(c.get("ddd").expect("ddd").runbook.name, "ddd");
        // a removed file is gone, whatever the index said
        std::fs::remove_file(rbs.join("aaa.json")).expect("rm");
        let c = Catalog::load(&opts);
        assert!(c.get("aaa").is_none());
        assert!(c.names().all(|n| n != "aaa"));
        // an index that is garbage is rebuilt
        std::fs::write(dir.path().join(".infra-cache/catalog.json"), "{").expect("garbage");
        let c = Catalog::load(&opts);
        assert_eq!(c.get("bbb").expect("bbb").runbook.name, "bbb");
    }
}
