//! The catalog's name index: which runbooks each project file defines, kept between processes in
//! `<profiles>/.infra-cache/catalog.json` so a process that needs one runbook parses only its file.
//!
//! A file's entry is keyed by its absolute path and stamped with its length, modification time (ns),
//! change time (ns) and inode; any difference and the file is parsed again. An entry records the names
//! the file defines, in order, and whether it had errors (a file with errors is always parsed, so its
//! diagnostics are shown). The index is a cache: a missing, unreadable or foreign one is rebuilt, and
//! one that cannot be written is skipped.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's identity as far as the cache is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stamp {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

impl Stamp {
    pub(super) fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(Stamp {
            len: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
        })
    }
}

/// What the index knows of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FileNames {
    pub stamp: Stamp,
    pub names: Vec<String>,
    /// It had diagnostics (errors or warnings): it is parsed every time.
    pub has_errors: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    files: BTreeMap<PathBuf, FileNames>,
}

const VERSION: u32 = 1;

/// The index as read at load, and what this load learnt.
#[derive(Debug, Default)]
pub(super) struct Index {
    path: Option<PathBuf>,
    read: BTreeMap<PathBuf, FileNames>,
    now: BTreeMap<PathBuf, FileNames>,
}

impl Index {
    /// The index of a profiles directory (none: nothing is cached).
    pub(super) fn open(profiles_dir: Option<&Path>) -> Index {
        let Some(dir) = profiles_dir else {
            return Index::default();
        };
        let path = dir.join(".infra-cache").join("catalog.json");
        let read = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<OnDisk>(&b).ok())
            .filter(|d| d.version == VERSION)
            .map(|d| d.files)
            .unwrap_or_default();
        Index {
            path: Some(path),
            read,
            now: BTreeMap::new(),
        }
    }

    /// The names `path` defines, when the index holds the file as it is now and it had no diagnostics.
    pub(super) fn lookup(&mut self, path: &Path, stamp: Stamp) -> Option<Vec<String>> {
        let key = absolute(path);
        let known = self.read.get(&key)?;
        if known.stamp != stamp || known.has_errors {
            return None;
        }
        let names = known.names.clone();
        self.now.insert(key, known.clone());
        Some(names)
    }

    /// Records what a parse of `path` found.
    pub(super) fn learn(&mut self, path: &Path, entry: FileNames) {
        self.now.insert(absolute(path), entry);
    }

    /// Writes the index when it changed (files added, changed or gone), through a temporary file and
    /// a rename. Best effort.
    pub(super) fn save(self) {
        let Some(path) = self.path else { return };
        if self.now == self.read {
            return;
        }
        let Some(dir) = path.parent() else { return };
        // the cache never creates a profiles directory
        if !dir.parent().is_some_and(Path::is_dir) {
            return;
        }
        let body = OnDisk {
            version: VERSION,
            files: self.now,
        };
        let Ok(bytes) = serde_json::to_vec(&body) else {
            return;
        };
        let tmp = dir.join(format!("catalog.json.{}.tmp", std::process::id()));
        let ok = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if ok.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
