//! What runs hold, by `artifact://` URI, for every front end: `Engine::read_artifact` and
//! `Engine::list_artifacts`.
//!
//! Three kinds of URI read:
//! - a file of a run (`runs/<runbook>/<run>/<step>/<name>`, or a run's own `journal.jsonl`): the
//!   contained, bounded read of `record::artifacts`;
//! - the journal of a single call (`runs/<runbook>/<run>/journal.jsonl`), whose records are kept with
//!   the other calls of its process (`runs/.calls/`): its records, found through the run index, as
//!   JSON Lines;
//! - the run itself (`runs/<runbook>/<run>`, the `evidence` URI a run returns): what it holds, as
//!   JSON: its id, runbook, status, its journal's URI and its artifacts'.
//!
//! The listing is the run index's, newest run first: each run's journal, then its files. Single
//! calls that wrote no artifact are listed only when the filter names their runbook (`state.get`)
//! or their run, so the calls that read the list do not crowd it.

use std::io;
use std::path::Path;

use serde_json::{Value, json};

use super::Engine;
use crate::record::Redactor;
use crate::record::artifacts::{self, ArtifactError, From, SCHEME};
use crate::store::JournalAt;

/// Which artifacts a listing shows.
#[derive(Debug, Default, Clone, Copy)]
pub struct ArtifactFilter<'a> {
    /// Only runs of this runbook (or single calls named so, e.g. `state.get`).
    pub runbook: Option<&'a str>,
    /// Only the run with this id, or id prefix.
    pub run: Option<&'a str>,
}

impl Engine {
    /// A bounded, redacted read of what `uri` names: a file of a run, a single call's journal, or a
    /// run's listing.
    pub fn read_artifact(&self, uri: &str, from: From, max: u64) -> Result<Value, ArtifactError> {
        self.read_artifact_with(uri, from, max, &self.redactor)
    }

    /// [`Engine::read_artifact`], masking what `redactor` knows (an empty one for a read with secret
    /// export allowed; what was masked as it was written stays masked).
    pub fn read_artifact_with(
        &self,
        uri: &str,
        from: From,
        max: u64,
        redactor: &Redactor,
    ) -> Result<Value, ArtifactError> {
        let root = &self.config.artifacts_root;
        match artifacts::read(root, uri, from, max, redactor) {
            Err(ArtifactError::NotFound(_)) => {}
            other => return other,
        }
        let not_found = || ArtifactError::NotFound(uri.to_owned());
        let rel = artifacts::relative(uri)?;
        let (runbook, name, journal) = match rel.split('/').collect::<Vec<_>>().as_slice() {
            ["runs", runbook, name] => (*runbook, *name, false),
            ["runs", runbook, name, "journal.jsonl"] => (*runbook, *name, true),
            _ => return Err(not_found()),
        };
        let run = self
            .store()
            .ok()
            .and_then(|s| s.run_named(runbook, name).ok().flatten())
            .ok_or_else(not_found)?;
        let text = if journal {
            journal_text(&run).map_err(|source| ArtifactError::Io {
                uri: uri.to_owned(),
                source,
            })?
        } else {
            let listing = self.run_listing(&run, &format!("{SCHEME}{rel}"));
            serde_json::to_vec_pretty(&listing).unwrap_or_default()
        };
        Ok(artifacts::read_text(uri, &text, from, max, redactor))
    }

    /// Artifacts of recent runs, newest run first: each run's journal, then its files (see the module
    /// header for which single calls are listed).
    pub fn list_artifacts(
        &self,
        filter: ArtifactFilter<'_>,
        limit: usize,
    ) -> io::Result<Vec<Value>> {
        let root = &self.config.artifacts_root;
        let Ok(store) = self.store() else {
            return artifacts::list(root, limit);
        };
        let named = filter.runbook.is_some() || filter.run.is_some();
        let mut out = Vec::new();
        let mut seen = 0;
        // a page of runs at a time, until the list is full or the runs run out
        loop {
            let page = limit.max(20);
            let runs = store
                .runs_of(filter.runbook, filter.run.unwrap_or(""), seen + page)
                .map_err(io::Error::other)?;
            let fetched = runs.len();
            for run in runs.into_iter().skip(seen) {
                let Some(base) = run_uri(&run) else { continue };
                let files = files_of(root, &base);
                let call = run.get("journal").is_some();
                if call && files.is_empty() && !named {
                    continue;
                }
                let (id, runbook) = (&run["id"], &run["runbook"]);
                let journal_bytes = if call {
                    journal_text(&run).map_or(0, |t| t.len() as u64)
                } else {
                    std::fs::metadata(
                        Path::new(run["dir"].as_str().unwrap_or("")).join("journal.jsonl"),
                    )
                    .map_or(0, |m| m.len())
                };
                let entry = |uri: String, bytes: u64| json!({"uri": uri, "bytes": bytes, "run_id": id, "runbook": runbook});
                out.push(entry(format!("{base}/journal.jsonl"), journal_bytes));
                out.extend(files.into_iter().map(|(uri, bytes)| entry(uri, bytes)));
                if out.len() >= limit {
                    out.truncate(limit);
                    return Ok(out);
                }
            }
            if fetched < seen + page {
                return Ok(out);
            }
            seen = fetched;
        }
    }

    /// What a run holds: its journal and its artifacts, by URI.
    fn run_listing(&self, run: &Value, base: &str) -> Value {
        let files = files_of(&self.config.artifacts_root, base);
        json!({
            "uri": base,
            "run_id": run["id"],
            "runbook": run["runbook"],
            "status": run["status"],
            "state": run["state"],
            "started_at": run["started_at"],
            "finished_at": run["finished_at"],
            "journal": format!("{base}/journal.jsonl"),
            "artifacts": files
                .into_iter()
                .map(|(uri, bytes)| json!({"uri": uri, "bytes": bytes}))
                .collect::<Vec<_>>(),
        })
    }
}

/// A run's URI (`artifact://runs/<runbook>/<run>`), from the last three parts of its directory.
fn run_uri(run: &Value) -> Option<String> {
    let dir = Path::new(run.get("dir")?.as_str()?);
    let mut parts = dir.iter().rev().take(3).map(|p| p.to_str());
    let (name, runbook, runs) = (parts.next()??, parts.next()??, parts.next()??);
    (runs == "runs").then(|| format!("{SCHEME}runs/{runbook}/{name}"))
}

/// The files below a run's directory (its journal aside), by URI and size, in path order. Nothing is
/// followed through a link: entries are read with `symlink_metadata`, and only plain files count.
fn files_of(root: &Path, base: &str) -> Vec<(String, u64)> {
    let Some(rel) = base.strip_prefix(SCHEME) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut stack = vec![(root.join(rel), base.to_owned())];
    while let Some((dir, uri)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let (Ok(meta), Some(name)) = (
                e.path().symlink_metadata(),
                e.file_name().to_str().map(str::to_owned),
            ) else {
                continue;
            };
            let child = format!("{uri}/{name}");
            if meta.is_dir() {
                stack.push((e.path(), child));
            } else if meta.is_file() && !(uri == base && name == "journal.jsonl") {
                found.push((child, meta.len()));
            }
        }
    }
    found.sort();
    found
}

/// A run's records as JSON Lines, read from whichever journal holds them.
fn journal_text(run: &Value) -> io::Result<Vec<u8>> {
    let back = JournalAt::of(run).read()?;
    let mut out = Vec::new();
    for r in &back.records {
        serde_json::to_writer(&mut out, r).map_err(io::Error::other)?;
        out.push(b'\n');
    }
    Ok(out)
}
