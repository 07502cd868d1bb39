//! Retention: what of `<profiles>/runs` and the store goes once the policy's `retention` says so.
//!
//! [`prune`] takes the runs of the index past the cutoffs (`Store::expired_runs`: succeeded runs
//! older than `max_age_days`, the others older than `keep_failed_days`, and any beyond the newest
//! `max_runs`), oldest first, in pages, and never one whose owner is alive (`ProcessRef::alive`),
//! whatever its age. For each page it deletes the rows first, in one transaction
//! (`Store::delete_runs`, which answers the rows this call deleted, so of two pruners only one removes
//! a run's files), then the directories of the runs it deleted: a reader never finds a row whose
//! directory was removed before it; one that read the row just before finds no journal and says so. A
//! directory is removed only when it is a real directory exactly two levels under `runs/`
//! (`runs/<runbook>/<name>`); a row naming anything else loses its row only (`dirs_left`).
//!
//! A calls journal (`runs/.calls/*.jsonl`, one per process) goes once no row points into it and its
//! writer is gone: the writer holds a shared lock on it while it lives (`SessionJournal::create`), so
//! an exclusive `try_lock` that succeeds means no process writes it any more; a journal younger than
//! an hour is left alone (its writer may not have locked it yet). A bounded pass (`Limit::Auto`)
//! looks only at the journals of the runs it pruned; a full one at all of them. Finished jobs made
//! before `max_age_days`, approval requests older than that and approvals that expired before it go
//! too. A full pass also removes run directories that no row names and that nothing touched for
//! `keep_failed_days` (`orphans`: left by a prune that stopped between a row and its directory, or
//! by a store deleted or replaced). A dry run deletes nothing and counts what would go.
//!
//! Nothing here reads the policy, the clock or the environment: the engine passes the retention, the
//! time and the directories (`Engine::prune_runs`, `Engine::auto_prune`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::policy::Retention;
use crate::store::{Cutoffs, Store, StoreError};

/// How many runs one page of [`prune`] reads and deletes.
const PAGE: usize = 500;
/// A calls journal younger than this is never removed.
const JOURNAL_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// How much one pass may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// At most this many runs, and only the calls journals they were in (the automatic pass).
    Auto(usize),
    /// Everything past the policy (`infra runs prune`).
    All,
}

/// What [`prune`] removed (or, dry, would remove).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Pruned {
    pub dry_run: bool,
    /// Rows of the run index.
    pub runs: u64,
    /// Run directories.
    pub dirs: u64,
    /// Rows removed whose directory was not under `runs/` and was left.
    pub dirs_left: u64,
    /// Run directories no row named, older than `keep_failed_days` (full passes only).
    pub orphans: u64,
    /// Calls journals.
    pub journals: u64,
    /// Finished jobs.
    pub jobs: u64,
    /// Approval requests and expired approvals.
    pub approvals: u64,
    /// Bytes of the directories and journals removed.
    pub bytes: u64,
    /// Whether the pass stopped at its limit with more to do.
    pub more: bool,
}

impl Pruned {
    /// Whether anything was (or would be) removed.
    pub fn any(&self) -> bool {
        self.runs + self.journals + self.jobs + self.approvals > 0
    }
}

/// Where the runs are.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// `<artifacts root>/runs`.
    pub runs: PathBuf,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The cutoffs of `r` at `now`.
pub fn cutoffs(r: &Retention, now: DateTime<Utc>) -> Cutoffs {
    // a number of days past the calendar keeps everything
    let back = |days: u32| {
        stamp(
            now.checked_sub_signed(Duration::days(i64::from(days)))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        )
    };
    Cutoffs {
        succeeded_before: back(r.max_age_days),
        failed_before: back(r.keep_failed_days),
        max_runs: r.max_runs,
    }
}

/// Whether a pass at `now` would remove anything: a run past the cutoffs whose owner is gone, or
/// expired jobs or approvals (counted, nothing deleted). What the automatic pass asks before it
/// audits its intent.
pub fn due(store: &Store, r: &Retention, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let cut = cutoffs(r, now);
    let mut after = None;
    loop {
        let (runs, next) = store.expired_runs(&cut, after.as_ref(), 64)?;
        if !runs.is_empty() {
            return Ok(true);
        }
        if next.is_none() {
            break;
        }
        after = next;
    }
    let before = &cut.succeeded_before;
    Ok(store.expired_jobs(before, false)? > 0 || crate::approval::prune(store, before, false)? > 0)
}

/// Removes (or with `dry_run` counts) what `r` lets go at `now`; see the module's header.
pub fn prune(
    store: &Store,
    dirs: &Dirs,
    r: &Retention,
    now: DateTime<Utc>,
    limit: Limit,
    dry_run: bool,
) -> Result<Pruned, StoreError> {
    let cut = cutoffs(r, now);
    let mut out = Pruned {
        dry_run,
        ..Pruned::default()
    };
    // calls journals the pruned runs were in, and (dry) how many of their runs would go
    let mut touched: BTreeMap<String, u64> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = match limit {
            Limit::Auto(n) => {
                let left = n.saturating_sub(out.runs as usize);
                if left == 0 {
                    out.more = !store.expired_runs(&cut, after.as_ref(), 1)?.0.is_empty();
                    break;
                }
                left.min(PAGE)
            }
            Limit::All => PAGE,
        };
        let (runs, next) = store.expired_runs(&cut, after.as_ref(), page)?;
        if next.is_none() {
            break;
        }
        after = next;
        let gone: BTreeSet<String> = if dry_run {
            runs.iter().map(|r| r.id.clone()).collect()
        } else {
            let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
            store.delete_runs(&ids)?.into_iter().collect()
        };
        for run in runs.iter().filter(|r| gone.contains(&r.id)) {
            out.runs += 1;
            if let Some(j) = &run.journal {
                *touched.entry(j.clone()).or_default() += 1;
            }
            match run_dir(&dirs.runs, Path::new(&run.dir)) {
                Some(dir) => {
                    if let Some(bytes) = size_of_dir(&dir)
                        && (dry_run || std::fs::remove_dir_all(&dir).is_ok())
                    {
                        out.dirs += 1;
                        out.bytes += bytes;
                    }
                }
                None => out.dirs_left += 1,
            }
        }
    }
    let journals: Vec<(String, u64)> = match limit {
        Limit::Auto(_) => touched.into_iter().collect(),
        Limit::All => {
            let mut all = calls_journals(&dirs.runs);
            for (path, n) in &mut all {
                *n = touched.get(path).copied().unwrap_or(0);
            }
            all
        }
    };
    for (journal, pruned) in journals {
        // a dry run has deleted no row: the journal goes when all the rows in it would
        let left = if dry_run {
            store.journal_runs(&journal)? > pruned
        } else {
            store.journal_referenced(&journal)?
        };
        if left {
            continue;
        }
        // the writer's lock is checked, and held by this open file until the file is removed
        if let Some((bytes, _held)) = idle_journal(&dirs.runs, Path::new(&journal))
            && (dry_run || std::fs::remove_file(&journal).is_ok())
        {
            out.journals += 1;
            out.bytes += bytes;
        }
    }
    if limit == Limit::All {
        orphans(store, dirs, &cut.failed_before, dry_run, &mut out)?;
    }
    let before = cut.succeeded_before;
    out.jobs = store.expired_jobs(&before, !dry_run)?;
    out.approvals = crate::approval::prune(store, &before, !dry_run)?;
    Ok(out)
}

/// Run directories no row names (a prune that stopped between a row and its directory, a store
/// deleted or replaced), untouched since before `before` (the longest a run is kept by age): a run
/// that is starting has a new directory and is not among them.
fn orphans(
    store: &Store,
    dirs: &Dirs,
    before: &str,
    dry_run: bool,
    out: &mut Pruned,
) -> Result<(), StoreError> {
    let Ok(runbooks) = std::fs::read_dir(&dirs.runs) else {
        return Ok(());
    };
    let known = store.run_dirs()?;
    for rb in runbooks.flatten() {
        if rb.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(runs) = std::fs::read_dir(rb.path()) else {
            continue;
        };
        for run in runs.flatten() {
            let dir = run.path();
            if known.contains(&dir.display().to_string()) || run_dir(&dirs.runs, &dir).is_none() {
                continue;
            }
            let old = std::fs::symlink_metadata(&dir)
                .ok()
                .filter(std::fs::Metadata::is_dir)
                .and_then(|m| m.modified().ok())
                .is_some_and(|t| stamp(DateTime::<Utc>::from(t)).as_str() < before);
            if !old {
                continue;
            }
            if let Some(bytes) = size_of_dir(&dir)
                && (dry_run || std::fs::remove_dir_all(&dir).is_ok())
            {
                out.orphans += 1;
                out.bytes += bytes;
            }
        }
    }
    Ok(())
}

/// `dir` when it is a run's directory: a real directory exactly two levels under `runs`
/// (`runs/<runbook>/<name>`, neither part hidden). `None` for anything else, which is never removed.
fn run_dir(runs: &Path, dir: &Path) -> Option<PathBuf> {
    let rel = dir.strip_prefix(runs).ok()?;
    let parts: Vec<_> = rel.components().collect();
    let plain = parts.iter().all(|c| match c {
        Component::Normal(s) => !s.to_string_lossy().starts_with('.'),
        _ => false,
    });
    (parts.len() == 2 && plain).then(|| dir.to_owned())
}

/// The bytes under a directory (links not followed), or `None` when it is missing or not a real
/// directory. An explicit stack, no recursion.
fn size_of_dir(dir: &Path) -> Option<u64> {
    if !std::fs::symlink_metadata(dir).ok()?.is_dir() {
        return None;
    }
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    Some(total)
}

/// Every calls journal under `runs/.calls/` (with a zero count).
fn calls_journals(runs: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(runs.join(".calls")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| (p.display().to_string(), 0))
        .collect();
    out.sort();
    out
}

/// A calls journal's size, when it is one (`runs/.calls/<name>.jsonl`, a plain file), is older than
/// [`JOURNAL_GRACE`], and no process holds it (its writer's shared lock); with the file, locked.
fn idle_journal(runs: &Path, path: &Path) -> Option<(u64, File)> {
    if path.parent()? != runs.join(".calls") {
        return None;
    }
    let m = std::fs::symlink_metadata(path).ok()?;
    let old = m
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= JOURNAL_GRACE);
    if !m.is_file() || !old {
        return None;
    }
    let f = File::open(path).ok()?;
    f.try_lock().ok()?;
    Some((m.len(), f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_are_days_back_and_never_overflow() {
        let now = DateTime::parse_from_rfc3339("2026-03-31T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let c = cutoffs(&Retention::default(), now);
        assert_eq!(c.succeeded_before, "2026-03-01T12:00:00.000Z");
        assert_eq!(c.failed_before, "2025-12-31T12:00:00.000Z");
        assert_eq!(c.max_runs, 10_000);
        let huge = Retention {
            max_age_days: u32::MAX,
            keep_failed_days: u32::MAX,
            max_runs: u64::MAX,
        };
        // before any run's start: nothing goes by age
        assert!(cutoffs(&huge, now).succeeded_before.as_str() < "0000");
    }

    #[test]
    fn only_directories_two_levels_under_runs_are_run_directories() {
        let runs = Path::new("/p/runs");
        assert!(run_dir(runs, Path::new("/p/runs/deploy/2026-x-12345678")).is_some());
        for bad in [
            "/p/runs/deploy",
            "/p/runs",
            "/p/runs/a/b/c",
            "/p/runs/.calls/x",
            "/p/runs/a/../../etc",
            "/etc/passwd",
            "/p/other/deploy/x",
        ] {
            assert!(run_dir(runs, Path::new(bad)).is_none(), "{bad}");
        }
    }
}
