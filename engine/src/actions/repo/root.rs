//! Where a `repo` write may act: the repository `repo_path` names, contained in the project.
//!
//! The project is the git work tree that holds the working directory infra was started in
//! (`Config::cwd`), or that directory itself. `repo_path` may not hold `..`; it is resolved (symlinks
//! followed) and the repository is found upwards from it. A repository whose work tree is inside the
//! project is writable; one outside it only when `repo_path` names its root exactly, with no symlink on
//! the way (named explicitly, not reached by a search upwards or a link). Paths inside the repository
//! (a patch's files, a commit's `paths`) are relative, without `..`, outside `.git`, and no symlink on
//! the way may lead out of the work tree. Nor may a write change infra's own files when the profiles
//! directory is in the work tree (`guarded`: `policy.*`, `targets.*`, `known_hosts`, `audit.*`,
//! `store.sqlite3*` in it, anything under `runs/`): a patch, a revert or a branch switch that would
//! is refused, so no call can loosen the policy that governs it.

use std::path::{Component, Path, PathBuf};

use git2::Repository;

use crate::actions::{ActionError, ErrorKind};
use crate::ctx::Config;

fn refused(message: String, hint: String) -> ActionError {
    ActionError::new(ErrorKind::Refused, message).hint(hint)
}

/// The project directory: the work tree holding `cwd`, or `cwd` (both resolved).
fn project(config: &Config) -> PathBuf {
    let cwd = config
        .cwd
        .canonicalize()
        .unwrap_or_else(|_| config.cwd.clone());
    Repository::discover(&cwd)
        .ok()
        .and_then(|r| r.workdir().and_then(|w| w.canonicalize().ok()))
        .unwrap_or(cwd)
}

/// Opens the repository at `repo_path` for a write, refusing one outside the project that is not named
/// by its root, and a bare one. Returns it with its work tree's resolved root.
pub(super) fn open(config: &Config, repo_path: &str) -> Result<(Repository, PathBuf), ActionError> {
    let given = Path::new(repo_path);
    if given.components().any(|c| c == Component::ParentDir) {
        return Err(refused(
            format!("`repo_path` `{repo_path}` holds `..`; a repository to write to is named without it"),
            "give the repository's directory without `..`, relative to the working directory or absolute".into(),
        ));
    }
    let abs: PathBuf = config.cwd.join(given).components().collect();
    let resolved = abs.canonicalize().map_err(|e| {
        ActionError::new(
            ErrorKind::NotFound,
            format!("`repo_path` `{repo_path}`: {e}"),
        )
        .hint("pass `repo_path` inside a git work tree")
    })?;
    let repo = crate::git::open(&resolved).map_err(|e| {
        ActionError::new(ErrorKind::NotFound, e.to_string())
            .hint("pass `repo_path` inside a git work tree")
    })?;
    let Some(root) = repo.workdir().and_then(|w| w.canonicalize().ok()) else {
        return Err(refused(
            format!(
                "`{}` is a bare repository: it has no work tree to write to",
                resolved.display()
            ),
            "use a clone with a work tree, and push to the bare repository".into(),
        ));
    };
    let project = project(config);
    if !root.starts_with(&project) && abs != root {
        return Err(refused(
            format!(
                "the repository `{}` is outside the project `{}`; a write there must name it",
                root.display(),
                project.display()
            ),
            format!(
                "pass its root itself, `repo_path: {}` (no symlink), to write there",
                root.display()
            ),
        ));
    }
    Ok((repo, root))
}

/// Why `rel` may not be written in the work tree at `root`, if it may not.
pub(super) fn outside(root: &Path, rel: &str) -> Option<&'static str> {
    let p = Path::new(rel);
    if rel.is_empty() || p.is_absolute() {
        return Some("an absolute path");
    }
    for c in p.components() {
        match c {
            Component::ParentDir => return Some("a path with `..`"),
            Component::Normal(n) if n.eq_ignore_ascii_case(".git") => {
                return Some("inside `.git`");
            }
            Component::Normal(_) | Component::CurDir => {}
            _ => return Some("not a relative path"),
        }
    }
    // No symlink on the way may leave the work tree: resolve the deepest existing ancestor.
    let full = root.join(p);
    if let Ok(meta) = full.symlink_metadata()
        && meta.file_type().is_symlink()
    {
        return Some("a symlink");
    }
    let mut dir = full.parent();
    while let Some(d) = dir {
        if let Ok(r) = d.canonicalize() {
            return (!r.starts_with(root)).then_some("behind a symlink out of the work tree");
        }
        dir = d.parent();
    }
    Some("not under the work tree")
}

/// Whether `rel` in the work tree at `root` is one of infra's own files (see the module header).
pub(super) fn guarded(config: &Config, root: &Path, rel: &str) -> bool {
    let full = root.join(rel);
    let Some(name) = full.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let canon = |p: &Path| p.canonicalize().ok();
    let dir = full.parent().and_then(canon);
    let runs = canon(&config.runs_dir());
    if let Some(runs) = &runs
        && dir.as_ref().is_some_and(|d| d.starts_with(runs))
    {
        return true;
    }
    let own = [
        "policy.",
        "targets.",
        "known_hosts",
        "audit.",
        "store.sqlite3",
    ];
    dir.is_some() && dir == canon(&config.profiles_dir) && own.iter().any(|o| name.starts_with(o))
}

/// Every path of `paths` that may not be written, with the reason, as one refusal.
pub(super) fn check_paths<'a>(
    config: &Config,
    root: &Path,
    paths: impl IntoIterator<Item = &'a str>,
    what: &str,
) -> Result<(), ActionError> {
    let bad: Vec<String> = paths
        .into_iter()
        .filter_map(|p| {
            let why = outside(root, p)
                .or_else(|| guarded(config, root, p).then_some("one of infra's own files"));
            why.map(|why| format!("`{p}` ({why})"))
        })
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(refused(
        format!(
            "{what} reaches outside the work tree `{}`: {}; nothing was changed",
            root.display(),
            bad.join(", ")
        ),
        "paths are relative to the repository's root, without `..`, and never in `.git`".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_work_tree_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().canonicalize().expect("root");
        std::fs::create_dir(root.join("sub")).expect("sub");
        std::os::unix::fs::symlink("/tmp", root.join("out")).expect("link");
        assert_eq!(outside(&root, "a.txt"), None);
        assert_eq!(outside(&root, "sub/new/deep.txt"), None);
        assert_eq!(outside(&root, "../x"), Some("a path with `..`"));
        assert_eq!(outside(&root, "/etc/passwd"), Some("an absolute path"));
        assert_eq!(outside(&root, ".git/config"), Some("inside `.git`"));
        assert_eq!(outside(&root, "sub/.GIT/hooks/x"), Some("inside `.git`"));
        assert_eq!(outside(&root, "out"), Some("a symlink"));
        assert_eq!(
            outside(&root, "out/x.txt"),
            Some("behind a symlink out of the work tree")
        );
    }
}
