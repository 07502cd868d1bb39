//! Read-only views of a git repository (status, log, diff, snapshot) as JSON values.
//!
//! Everything here only reads: no index refresh is written back, no refs move. Lists are bounded
//! ([`MAX_FILES`] file entries) so a huge work tree cannot produce an unbounded answer; a patch past
//! `max_bytes` is cut, with no artifact (`patch_bytes` says its full size). `diff` compares
//! against any revision (`rev`) too. The writes (`actions::repo::write`) reuse `open`, `dirty_paths`
//! and `diff_stat`.

use std::path::{Path, PathBuf};

use git2::{Diff, DiffFormat, DiffOptions, ErrorCode, Patch, Repository, Status, StatusOptions};
use serde_json::{Map, Value, json};

/// At most this many file entries in a status or diffstat list.
pub const MAX_FILES: usize = 10_000;

/// A failure to read a repository.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("`{path}` is not inside a git repository (searched upwards from it)")]
    NotARepo { path: String },
    #[error("git: {0}")]
    Git(String),
}

impl From<git2::Error> for GitError {
    fn from(e: git2::Error) -> Self {
        GitError::Git(e.message().to_string())
    }
}

/// Open the repository containing `repo_path`, searching upwards.
pub(crate) fn open(repo_path: &Path) -> Result<Repository, GitError> {
    let not_a_repo = || GitError::NotARepo {
        path: repo_path.display().to_string(),
    };
    Repository::discover(repo_path).map_err(|e| match e.code() {
        ErrorCode::NotFound => not_a_repo(),
        _ => e.into(),
    })
}

/// The work tree (or, for a bare repository, the git dir), without a trailing slash.
fn root(repo: &Repository) -> String {
    let p = repo.workdir().unwrap_or_else(|| repo.path());
    p.components().collect::<PathBuf>().display().to_string()
}

pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// HEAD's commit, or `None` while HEAD is unborn.
pub(crate) fn head_commit(repo: &Repository) -> Result<Option<git2::Commit<'_>>, GitError> {
    match repo.head() {
        Ok(r) => Ok(Some(r.peel_to_commit()?)),
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Where HEAD is: branch, detachment, commit and upstream tracking.
#[derive(Default)]
struct HeadInfo {
    branch: Option<String>,
    detached: bool,
    head: Option<git2::Oid>,
    upstream: Option<String>,
    ahead: usize,
    behind: usize,
}

fn head_info(repo: &Repository) -> Result<HeadInfo, GitError> {
    let mut info = HeadInfo::default();
    let Some(commit) = head_commit(repo)? else {
        return Ok(info);
    };
    info.head = Some(commit.id());
    info.detached = repo.head_detached()?;
    let reference = repo.head()?;
    if info.detached || !reference.is_branch() {
        return Ok(info);
    }
    info.branch = Some(lossy(reference.shorthand_bytes()));
    let upstream = match git2::Branch::wrap(reference).upstream() {
        Ok(u) => u,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(info),
        Err(e) => return Err(e.into()),
    };
    info.upstream = Some(lossy(upstream.name_bytes()?));
    if let Some(remote) = upstream.get().target() {
        (info.ahead, info.behind) = repo.graph_ahead_behind(commit.id(), remote)?;
    }
    Ok(info)
}

/// One changed file, on the index side (`staged`) or the work-tree side.
struct FileEntry {
    path: String,
    old_path: Option<String>,
    status: &'static str,
    staged: bool,
}

impl FileEntry {
    fn to_json(&self) -> Value {
        let mut v = json!({ "path": self.path, "status": self.status, "staged": self.staged });
        if let (Some(old), Some(map)) = (&self.old_path, v.as_object_mut()) {
            map.insert("old_path".into(), Value::String(old.clone()));
        }
        v
    }
}

const INDEX_KINDS: [(Status, &str); 5] = [
    (Status::INDEX_NEW, "new"),
    (Status::INDEX_MODIFIED, "modified"),
    (Status::INDEX_DELETED, "deleted"),
    (Status::INDEX_RENAMED, "renamed"),
    (Status::INDEX_TYPECHANGE, "typechange"),
];
const WORKTREE_KINDS: [(Status, &str); 6] = [
    (Status::CONFLICTED, "conflicted"),
    (Status::WT_NEW, "untracked"),
    (Status::WT_MODIFIED, "modified"),
    (Status::WT_DELETED, "deleted"),
    (Status::WT_RENAMED, "renamed"),
    (Status::WT_TYPECHANGE, "typechange"),
];

/// All changed files (index and work tree, untracked included, ignored excluded), sorted by path
/// then `staged` (work-tree entry first), at most [`MAX_FILES`]. The flag says the list was cut.
fn file_entries(repo: &Repository) -> Result<(Vec<FileEntry>, bool), GitError> {
    if repo.is_bare() {
        return Ok((Vec::new(), false));
    }
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .renames_head_to_index(true);
    let statuses = repo.statuses(Some(&mut opts))?;
    let mut out = Vec::new();
    for entry in statuses.iter() {
        let st = entry.status();
        let sides = [
            (&INDEX_KINDS[..], entry.head_to_index(), true),
            (&WORKTREE_KINDS[..], entry.index_to_workdir(), false),
        ];
        for (kinds, delta, staged) in sides {
            let Some(&(flag, status)) = kinds.iter().find(|(f, _)| st.contains(*f)) else {
                continue;
            };
            let file_path = |f: git2::DiffFile<'_>| f.path_bytes().map(lossy);
            let path = delta.as_ref().and_then(|d| file_path(d.new_file()));
            let renamed = flag.intersects(Status::INDEX_RENAMED | Status::WT_RENAMED);
            let old_path = delta.as_ref().and_then(|d| file_path(d.old_file()));
            out.push(FileEntry {
                path: path.unwrap_or_else(|| lossy(entry.path_bytes())),
                old_path: old_path.filter(|_| renamed),
                status,
                staged,
            });
        }
    }
    out.sort_by(|a, b| (&a.path, a.staged).cmp(&(&b.path, b.staged)));
    let truncated = out.len() > MAX_FILES;
    out.truncate(MAX_FILES);
    Ok((out, truncated))
}

/// The changed paths (untracked included, ignored excluded), each once, sorted, at most [`MAX_FILES`].
pub(crate) fn dirty_paths(repo: &Repository) -> Result<Vec<String>, GitError> {
    let (files, _) = file_entries(repo)?;
    let mut paths: Vec<String> = files.into_iter().map(|f| f.path).collect();
    paths.dedup();
    Ok(paths)
}

/// The fields shared by `status` and `snapshot`.
fn state(repo: &Repository) -> Result<Map<String, Value>, GitError> {
    let info = head_info(repo)?;
    let (files, files_truncated) = file_entries(repo)?;
    let v = json!({
        "root": root(repo),
        "branch": info.branch,
        "detached": info.detached,
        "head": info.head.map(|o| o.to_string()),
        "upstream": info.upstream,
        "ahead": info.ahead,
        "behind": info.behind,
        "clean": files.is_empty(),
        "files": files.iter().map(FileEntry::to_json).collect::<Vec<_>>(),
        "files_truncated": files_truncated,
    });
    Ok(match v {
        Value::Object(map) => map,
        _ => Map::new(),
    })
}

/// The working state: HEAD, upstream tracking and changed files.
pub fn status(repo_path: &Path) -> Result<Value, GitError> {
    Ok(Value::Object(state(&open(repo_path)?)?))
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in small ranges (see above), so the conversions cannot fail.
    let small = |n: i64| u32::try_from(n).unwrap_or(1);
    (year, small(month), small(day))
}

/// Seconds since the epoch as RFC 3339 in UTC, e.g. `2023-11-14T22:13:20Z`.
fn rfc3339_utc(seconds: i64) -> String {
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let secs = seconds.rem_euclid(86_400);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

fn commit_json(c: &git2::Commit<'_>) -> Value {
    let id = c.id().to_string();
    let author = c.author();
    json!({
        "short_id": id.get(..7).unwrap_or(&id),
        "id": id,
        "author": lossy(author.name_bytes()),
        "email": lossy(author.email_bytes()),
        "time": rfc3339_utc(c.time().seconds()),
        "summary": c.summary_bytes().map(lossy).unwrap_or_default(),
    })
}

/// Up to `limit` commits, newest first, and whether there were more.
fn commits(
    repo: &Repository,
    limit: usize,
    rev: Option<&str>,
) -> Result<(Vec<Value>, bool), GitError> {
    let start = match rev {
        Some(spec) => repo.revparse_single(spec)?.peel_to_commit()?.id(),
        None => match head_commit(repo)? {
            Some(c) => c.id(),
            None => return Ok((Vec::new(), false)),
        },
    };
    let mut walk = repo.revwalk()?;
    walk.push(start)?;
    let mut out = Vec::new();
    for oid in walk {
        let oid = oid?;
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(commit_json(&repo.find_commit(oid)?));
    }
    Ok((out, false))
}

/// The history from HEAD (or `rev`), newest first, at most `limit` commits.
pub fn log(repo_path: &Path, limit: usize, rev: Option<&str>) -> Result<Value, GitError> {
    let repo = open(repo_path)?;
    let (commits, truncated) = commits(&repo, limit, rev)?;
    Ok(json!({ "commits": commits, "truncated": truncated }))
}

/// The diff selected by `staged` and `rev`, or `None` for a bare repository (it has no work tree or
/// index). With `rev`, its tree is the old side: against the index (`staged`) or the work tree.
fn make_diff<'r>(
    repo: &'r Repository,
    staged: bool,
    rev: Option<&str>,
) -> Result<Option<Diff<'r>>, GitError> {
    if repo.is_bare() {
        return Ok(None);
    }
    let mut opts = DiffOptions::new();
    if let Some(spec) = rev {
        let tree = repo.revparse_single(spec)?.peel_to_tree()?;
        let diff = if staged {
            repo.diff_tree_to_index(Some(&tree), None, Some(&mut opts))?
        } else {
            repo.diff_tree_to_workdir_with_index(Some(&tree), Some(&mut opts))?
        };
        Ok(Some(diff))
    } else if staged {
        let tree = head_commit(repo)?.map(|c| c.tree()).transpose()?;
        let diff = repo.diff_tree_to_index(tree.as_ref(), None, Some(&mut opts))?;
        Ok(Some(diff))
    } else {
        opts.include_untracked(true)
            .recurse_untracked_dirs(true)
            .show_untracked_content(true);
        Ok(Some(repo.diff_index_to_workdir(None, Some(&mut opts))?))
    }
}

/// The `stat` object: totals over every file, per-file counts for at most [`MAX_FILES`].
pub(crate) fn diff_stat(diff: Option<&Diff<'_>>) -> Result<Value, GitError> {
    let Some(diff) = diff else {
        return Ok(json!({
            "files_changed": 0, "insertions": 0, "deletions": 0, "files": [], "files_truncated": false,
        }));
    };
    let stats = diff.stats()?;
    let mut files = Vec::new();
    for (idx, delta) in diff.deltas().enumerate().take(MAX_FILES) {
        let path = delta.new_file().path_bytes().map(lossy);
        let counts = Patch::from_diff(diff, idx)?
            .map(|p| p.line_stats())
            .transpose()?;
        let (_, insertions, deletions) = counts.unwrap_or((0, 0, 0));
        files.push(json!({ "path": path, "insertions": insertions, "deletions": deletions }));
    }
    Ok(json!({
        "files_changed": stats.files_changed(),
        "insertions": stats.insertions(),
        "deletions": stats.deletions(),
        "files": files,
        "files_truncated": diff.deltas().len() > MAX_FILES,
    }))
}

/// The unified patch text cut to `max_bytes` (on a char boundary), its full size in bytes, and
/// whether it was cut. With `keep == false` only the size is measured.
fn patch_text(
    diff: &Diff<'_>,
    keep: bool,
    max_bytes: usize,
) -> Result<(String, usize, bool), GitError> {
    // Keep a few bytes past the limit so a char straddling it is whole before the cut.
    let cap = if keep { max_bytes.saturating_add(4) } else { 0 };
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut push = |bytes: &[u8]| {
        total = total.saturating_add(bytes.len());
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    };
    diff.print(DiffFormat::Patch, |_delta, _hunk, line| {
        let origin = line.origin();
        if matches!(origin, '+' | '-' | ' ') {
            let mut c = [0u8; 4];
            push(origin.encode_utf8(&mut c).as_bytes());
        }
        push(line.content());
        true
    })?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    let mut truncated = false;
    if keep && (total > max_bytes || text.len() > max_bytes) {
        text.truncate(text.floor_char_boundary(max_bytes));
        truncated = true;
    }
    Ok((text, total, truncated))
}

/// The work tree against the index (`staged == false`, untracked files included) or the index
/// against HEAD (`staged == true`; an unborn HEAD diffs against the empty tree); with `rev`, that
/// revision's tree against the work tree (tracked files) or the index.
pub fn diff(
    repo_path: &Path,
    staged: bool,
    rev: Option<&str>,
    stat_only: bool,
    max_bytes: usize,
) -> Result<Value, GitError> {
    let repo = open(repo_path)?;
    let diff = make_diff(&repo, staged, rev)?;
    let stat = diff_stat(diff.as_ref())?;
    let (patch, patch_bytes, truncated) = match &diff {
        Some(d) => patch_text(d, !stat_only, max_bytes)?,
        None => (String::new(), 0, false),
    };
    Ok(json!({
        "stat": stat,
        "patch": if stat_only { None } else { Some(patch) },
        "patch_bytes": patch_bytes,
        "truncated": truncated,
    }))
}

/// Status, work-tree diffstat and the last `limit` commits in one answer.
pub fn snapshot(repo_path: &Path, limit: usize) -> Result<Value, GitError> {
    let repo = open(repo_path)?;
    let mut map = state(&repo)?;
    let diff = make_diff(&repo, false, None)?;
    map.insert("diffstat".into(), diff_stat(diff.as_ref())?);
    let (commits, commits_truncated) = commits(&repo, limit, None)?;
    map.insert("commits".into(), Value::Array(commits));
    map.insert("commits_truncated".into(), Value::Bool(commits_truncated));
    Ok(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::{BranchType, IndexAddOption, Oid, RepositoryInitOptions, Signature, Time};
    use std::fs;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn text(v: &Value) -> &str {
        v.as_str().unwrap_or("<not a string>")
    }

    fn len(v: &Value) -> usize {
        v.as_array().map_or(usize::MAX, Vec::len)
    }

    fn sig(secs: i64) -> Result<Signature<'static>, git2::Error> {
        Signature::new("Test", "test@example.com", &Time::new(secs, 0))
    }

    fn init(dir: &Path) -> Result<Repository, git2::Error> {
        Repository::init_opts(dir, RepositoryInitOptions::new().initial_head("main"))
    }

    fn write(dir: &Path, rel: &str, content: &str) -> std::io::Result<()> {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap_or(dir))?;
        fs::write(p, content)
    }

    /// Stage `paths` and commit them on HEAD at the given time.
    fn commit(repo: &Repository, paths: &[&str], msg: &str, secs: i64) -> Result<Oid, git2::Error> {
        let mut index = repo.index()?;
        index.add_all(paths.iter(), IndexAddOption::DEFAULT, None)?;
        index.write()?;
        let tree = repo.find_tree(index.write_tree()?)?;
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig(secs)?, &sig(secs)?, msg, &tree, &parents)
    }

    /// A repo on `main` with two commits: `a.txt` then `b.txt`.
    fn two_commits(dir: &Path) -> Result<(Repository, Oid, Oid), Box<dyn std::error::Error>> {
        let repo = init(dir)?;
        write(dir, "a.txt", "one\ntwo\nthree\n")?;
        let first = commit(&repo, &["a.txt"], "first\n\nbody", 1_700_000_000)?;
        write(dir, "b.txt", "b\n")?;
        let second = commit(&repo, &["b.txt"], "second", 951_782_400)?;
        Ok((repo, first, second))
    }

    /// On top of `two_commits`: `a.txt` edited (unstaged), `new.txt` staged, `b.txt` staged then
    /// edited again, untracked `.gitignore` and `sub/dir/u.txt`, and an ignored `ignored.log`.
    fn dirty(dir: &Path) -> Result<Repository, Box<dyn std::error::Error>> {
        let (repo, _, _) = two_commits(dir)?;
        write(dir, "a.txt", "one\nTWO\nthree\nnew line\n")?;
        write(dir, "new.txt", "fresh\n")?;
        write(dir, "b.txt", "b2\n")?;
        let mut index = repo.index()?;
        index.add_path(Path::new("new.txt"))?;
        index.add_path(Path::new("b.txt"))?;
        index.write()?;
        write(dir, "b.txt", "b3\n")?;
        write(dir, "sub/dir/u.txt", "u\n")?;
        write(dir, ".gitignore", "*.log\n")?;
        write(dir, "ignored.log", "noise\n")?;
        Ok(repo)
    }

    fn same_dir(a: &Value, b: &Path) -> std::io::Result<bool> {
        Ok(Path::new(text(a)).canonicalize()? == b.canonicalize()?)
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339_utc(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn unborn_repo() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = init(dir.path())?;
        let s = status(dir.path())?;
        assert!(same_dir(&s["root"], dir.path())?);
        assert!(!text(&s["root"]).ends_with('/'));
        let expected = json!({"branch": null, "detached": false, "head": null, "upstream": null,
            "ahead": 0, "behind": 0, "clean": true, "files": [], "files_truncated": false});
        for (key, value) in expected.as_object().into_iter().flatten() {
            assert_eq!(&s[key], value, "{key}");
        }
        let empty = json!({"commits": [], "truncated": false});
        assert_eq!(log(dir.path(), 10, None)?, empty);

        // A staged file in an unborn repo diffs against the empty tree.
        write(dir.path(), "x.txt", "x\n")?;
        let mut index = repo.index()?;
        index.add_path(Path::new("x.txt"))?;
        index.write()?;
        let d = diff(dir.path(), true, None, true, 1000)?;
        assert_eq!(d["stat"]["files_changed"], 1);
        assert_eq!(d["stat"]["insertions"], 1);
        assert_eq!(d["patch"], Value::Null);
        assert_eq!(d["truncated"], false);
        Ok(())
    }

    #[test]
    fn two_commits_status_and_log() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_repo, first, second) = two_commits(dir.path())?;
        let s = status(dir.path())?;
        assert_eq!(s["branch"], "main");
        assert_eq!(s["detached"], false);
        assert_eq!(s["head"], second.to_string());
        assert_eq!(s["upstream"], Value::Null);
        assert_eq!(s["files"], json!([]));
        assert_eq!(s["clean"], true);

        let l = log(dir.path(), 10, None)?;
        assert_eq!(l["truncated"], false);
        assert_eq!(len(&l["commits"]), 2);
        let id = second.to_string();
        assert_eq!(
            l["commits"][0],
            json!({"id": id, "short_id": id[..7], "author": "Test", "email": "test@example.com",
                "time": "2000-02-29T00:00:00Z", "summary": "second"})
        );
        assert_eq!(l["commits"][1]["id"], first.to_string());
        assert_eq!(l["commits"][1]["summary"], "first");
        assert_eq!(l["commits"][1]["time"], "2023-11-14T22:13:20Z");
        Ok(())
    }

    #[test]
    fn log_limit_truncated_and_rev() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_repo, first, second) = two_commits(dir.path())?;
        let l = log(dir.path(), 1, None)?;
        assert_eq!((len(&l["commits"]), &l["truncated"]), (1, &json!(true)));
        assert_eq!(l["commits"][0]["id"], second.to_string());
        assert_eq!(log(dir.path(), 2, None)?["truncated"], false);
        let none = json!({"commits": [], "truncated": true});
        assert_eq!(log(dir.path(), 0, None)?, none);
        let l = log(dir.path(), 5, Some("HEAD~1"))?;
        assert_eq!((len(&l["commits"]), &l["truncated"]), (1, &json!(false)));
        assert_eq!(l["commits"][0]["id"], first.to_string());
        let bad = log(dir.path(), 5, Some("nope"));
        assert!(matches!(bad, Err(GitError::Git(_))));
        Ok(())
    }

    #[test]
    fn status_of_changes() -> TestResult {
        let dir = tempfile::tempdir()?;
        dirty(dir.path())?;
        let s = status(dir.path())?;
        assert_eq!(s["clean"], false);
        assert_eq!(
            s["files"],
            json!([
                {"path": ".gitignore", "status": "untracked", "staged": false},
                {"path": "a.txt", "status": "modified", "staged": false},
                {"path": "b.txt", "status": "modified", "staged": false},
                {"path": "b.txt", "status": "modified", "staged": true},
                {"path": "new.txt", "status": "new", "staged": true},
                {"path": "sub/dir/u.txt", "status": "untracked", "staged": false},
            ])
        );
        Ok(())
    }

    #[test]
    fn staged_rename_and_delete() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (repo, _, _) = two_commits(dir.path())?;
        fs::rename(dir.path().join("a.txt"), dir.path().join("c.txt"))?;
        fs::remove_file(dir.path().join("b.txt"))?;
        let mut index = repo.index()?;
        index.remove_path(Path::new("a.txt"))?;
        index.add_path(Path::new("c.txt"))?;
        index.write()?;
        assert_eq!(
            status(dir.path())?["files"],
            json!([
                {"path": "b.txt", "status": "deleted", "staged": false},
                {"path": "c.txt", "status": "renamed", "staged": true, "old_path": "a.txt"},
            ])
        );
        Ok(())
    }

    #[test]
    fn discovered_from_subdirectory_and_not_a_repo() -> TestResult {
        let dir = tempfile::tempdir()?;
        dirty(dir.path())?;
        let s = status(&dir.path().join("sub/dir"))?;
        assert!(same_dir(&s["root"], dir.path())?);
        assert_eq!(len(&s["files"]), 6);

        let plain = tempfile::tempdir()?;
        let err = status(plain.path()).err();
        let want = plain.path().display().to_string();
        assert!(matches!(&err, Some(GitError::NotARepo { path }) if *path == want));
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            msg,
            format!("`{want}` is not inside a git repository (searched upwards from it)")
        );
        let snap = snapshot(plain.path(), 3);
        assert!(matches!(snap, Err(GitError::NotARepo { .. })));
        Ok(())
    }

    #[test]
    fn diff_work_tree_and_staged() -> TestResult {
        let dir = tempfile::tempdir()?;
        dirty(dir.path())?;
        let d = diff(dir.path(), false, None, false, 1 << 20)?;
        assert_eq!(
            d["stat"],
            json!({
                "files_changed": 4, "insertions": 5, "deletions": 2,
                "files": [
                    {"path": ".gitignore", "insertions": 1, "deletions": 0},
                    {"path": "a.txt", "insertions": 2, "deletions": 1},
                    {"path": "b.txt", "insertions": 1, "deletions": 1},
                    {"path": "sub/dir/u.txt", "insertions": 1, "deletions": 0},
                ],
                "files_truncated": false,
            })
        );
        let patch = text(&d["patch"]);
        assert!(patch.contains("diff --git a/a.txt b/a.txt\n"));
        assert!(patch.contains("@@ -1,3 +1,4 @@\n one\n-two\n+TWO\n three\n+new line\n"));
        assert!(patch.contains("+++ b/sub/dir/u.txt\n@@ -0,0 +1 @@\n+u\n"));
        assert_eq!(d["patch_bytes"], patch.len());
        assert_eq!(d["truncated"], false);

        let d = diff(dir.path(), true, None, false, 1 << 20)?;
        let files = json!([{"path": "b.txt", "insertions": 1, "deletions": 1},
            {"path": "new.txt", "insertions": 1, "deletions": 0}]);
        assert_eq!(d["stat"]["files"], files);
        let totals = (
            &d["stat"]["files_changed"],
            &d["stat"]["insertions"],
            &d["stat"]["deletions"],
        );
        assert_eq!(totals, (&json!(2), &json!(2), &json!(1)));
        assert!(text(&d["patch"]).contains("\n-b\n+b2\n"));
        Ok(())
    }

    #[test]
    fn diff_truncation() -> TestResult {
        let dir = tempfile::tempdir()?;
        two_commits(dir.path())?;
        write(dir.path(), "a.txt", "one\ntwo\nthree\nnew line ééé\n")?;
        let full = diff(dir.path(), false, None, false, 1 << 20)?;
        let whole = text(&full["patch"]).to_string();
        assert_eq!(full["patch_bytes"], whole.len());
        assert!(whole.ends_with("+new line ééé\n"));

        let d = diff(dir.path(), false, None, false, 20)?;
        assert_eq!(d["truncated"], true);
        assert_eq!(d["patch_bytes"], whole.len());
        assert_eq!(d["patch"], whole[..20]);
        assert_eq!(d["stat"]["insertions"], 1);

        // A cut inside the two-byte final `é` backs off to the char boundary before it.
        let cut = whole.len() - 2;
        assert!(!whole.is_char_boundary(cut));
        let d = diff(dir.path(), false, None, false, cut)?;
        assert_eq!(d["patch"], whole[..cut - 1]);
        assert_eq!(d["truncated"], true);

        let d = diff(dir.path(), false, None, true, 20)?;
        assert_eq!(d["patch"], Value::Null);
        assert_eq!(d["truncated"], false);
        assert_eq!(d["patch_bytes"], whole.len());
        Ok(())
    }

    #[test]
    fn detached_head() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (repo, first, _) = two_commits(dir.path())?;
        repo.set_head_detached(first)?;
        let s = status(dir.path())?;
        assert_eq!((&s["branch"], &s["detached"]), (&Value::Null, &json!(true)));
        assert_eq!(s["head"], first.to_string());
        assert_eq!(s["upstream"], Value::Null);
        assert_eq!(len(&log(dir.path(), 10, None)?["commits"]), 1);
        Ok(())
    }

    #[test]
    fn upstream_ahead_behind() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (repo, first, _) = two_commits(dir.path())?;
        repo.remote("origin", "https://example.invalid/repo.git")?;
        repo.reference("refs/remotes/origin/main", first, false, "test")?;
        repo.find_branch("main", BranchType::Local)?
            .set_upstream(Some("origin/main"))?;
        let s = status(dir.path())?;
        assert_eq!(s["upstream"], "origin/main");
        assert_eq!((&s["ahead"], &s["behind"]), (&json!(1), &json!(0)));

        // Move the remote to a commit the local branch lacks: one ahead, one behind.
        let base = repo.find_commit(first)?;
        let other = repo.commit(None, &sig(1)?, &sig(1)?, "remote", &base.tree()?, &[&base])?;
        repo.reference("refs/remotes/origin/main", other, true, "test")?;
        let s = status(dir.path())?;
        assert_eq!((&s["ahead"], &s["behind"]), (&json!(1), &json!(1)));
        Ok(())
    }

    #[test]
    fn snapshot_combines_views() -> TestResult {
        let dir = tempfile::tempdir()?;
        dirty(dir.path())?;
        let snap = snapshot(dir.path(), 1)?;
        let st = status(dir.path())?;
        for (key, value) in st.as_object().into_iter().flatten() {
            assert_eq!(&snap[key], value, "{key}");
        }
        assert_eq!(
            snap["diffstat"],
            diff(dir.path(), false, None, true, 0)?["stat"]
        );
        assert_eq!(snap["commits"], log(dir.path(), 1, None)?["commits"]);
        assert_eq!(snap["commits_truncated"], true);
        let keys: Vec<&str> = snap
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        let want = "root branch detached head upstream ahead behind clean files files_truncated \
            diffstat commits commits_truncated";
        assert_eq!(keys.join(" "), want);
        Ok(())
    }

    #[test]
    fn bare_repo() -> TestResult {
        let dir = tempfile::tempdir()?;
        Repository::init_bare(dir.path())?;
        let s = snapshot(dir.path(), 5)?;
        assert!(same_dir(&s["root"], dir.path())?);
        assert_eq!((&s["files"], &s["clean"]), (&json!([]), &json!(true)));
        assert_eq!(s["diffstat"]["files_changed"], 0);
        assert_eq!(s["commits"], json!([]));
        Ok(())
    }
}
