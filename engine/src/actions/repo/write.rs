//! The local writes of `repo`: `branch`, `apply_patch`, `commit`, `revert`, and the `assert_clean`
//! check. Each opens its repository through `root::open` (contained in the project) and checks before
//! it changes anything, so a refused or failed call leaves the repository as it was.

use std::path::Path;

use git2::build::CheckoutBuilder;
use git2::{
    ApplyLocation, ApplyOptions, BranchType, Diff, ErrorCode, Index, Oid, Repository, Signature,
};
use serde_json::{Value, json};

use super::root;
use crate::actions::{ActionError, ErrorKind};
use crate::ctx::Config;

fn git_err(what: &str, e: &git2::Error) -> ActionError {
    ActionError::new(ErrorKind::Failed, format!("{what}: {}", e.message()))
}

fn to_action(e: crate::git::GitError) -> ActionError {
    ActionError::new(ErrorKind::Failed, e.to_string())
}

fn head(repo: &Repository) -> Result<Option<git2::Commit<'_>>, ActionError> {
    crate::git::head_commit(repo).map_err(to_action)
}

fn commit_of<'r>(repo: &'r Repository, rev: &str) -> Result<git2::Commit<'r>, ActionError> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| {
            ActionError::new(
                ErrorKind::NotFound,
                format!("no commit `{rev}`: {}", e.message()),
            )
            .hint("give a branch, tag or commit id (`repo` `log` lists commits)")
        })
}

/// Refuses a checkout from HEAD to `new` that would change one of infra's own files.
fn guard_checkout(
    config: &Config,
    repo: &Repository,
    root: &Path,
    new: &git2::Tree<'_>,
) -> Result<(), ActionError> {
    let old = head(repo)?
        .map(|c| c.tree())
        .transpose()
        .map_err(|e| git_err("HEAD", &e))?;
    let diff = repo
        .diff_tree_to_tree(old.as_ref(), Some(new), None)
        .map_err(|e| git_err("diff", &e))?;
    let paths: Vec<String> = diff
        .deltas()
        .flat_map(|d| [d.old_file().path(), d.new_file().path()])
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    root::check_paths(
        config,
        root,
        paths.iter().map(String::as_str),
        "the checkout",
    )
}

/// Checks out `commit`'s tree safely: local changes it would overwrite make it fail, naming them.
fn checkout(repo: &Repository, commit: &git2::Commit<'_>) -> Result<(), ActionError> {
    let mut conflicts = Vec::new();
    let mut opts = CheckoutBuilder::new();
    opts.safe()
        .notify_on(git2::CheckoutNotificationType::CONFLICT)
        .notify(|_, path, _, _, _| {
            if let Some(p) = path {
                conflicts.push(p.display().to_string());
            }
            true
        });
    let r = repo.checkout_tree(commit.as_object(), Some(&mut opts));
    drop(opts);
    r.map_err(|e| {
        ActionError::new(
            ErrorKind::Refused,
            format!(
                "local changes would be overwritten{}: {}; nothing was changed",
                if conflicts.is_empty() {
                    String::new()
                } else {
                    format!(" in {}", conflicts.join(", "))
                },
                e.message()
            ),
        )
        .hint("commit or discard the local changes first (`repo` `status` lists them)")
    })
}

/// `branch`: creates `name` at `from` (default HEAD) if it does not exist, moves it there when it does
/// and `force` is set, and switches to it unless `switch` is false.
pub(super) fn branch(config: &Config, a: &super::BranchArgs) -> Result<Value, ActionError> {
    let (repo, root) = root::open(config, &a.repo_path)?;
    if !git2::Branch::name_is_valid(&a.name).unwrap_or(false) {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            format!("`{}` is not a valid branch name", a.name),
        )
        .hint("use letters, digits, `-`, `_`, `.` and `/`, as git allows"));
    }
    let mut target = match &a.from {
        Some(rev) => commit_of(&repo, rev)?,
        None => match head(&repo)? {
            Some(c) => c,
            None => commit_of(&repo, &a.name)?,
        },
    };
    let previous = repo
        .head()
        .ok()
        .and_then(|h| h.shorthand().ok().map(str::to_owned));
    let current = repo
        .head()
        .ok()
        .filter(|h| h.is_branch())
        .and_then(|h| h.name().ok().map(str::to_owned));
    let refname = format!("refs/heads/{}", a.name);
    let switch = a.switch.unwrap_or(true);
    let (created, moved) = match repo.find_branch(&a.name, BranchType::Local) {
        Ok(mut b) => {
            let at = b.get().target();
            if a.from.is_none() || at == Some(target.id()) {
                // switching to it as it is: its own tip is what is checked out
                let tip = b
                    .get()
                    .peel_to_commit()
                    .map_err(|e| git_err("branch", &e))?;
                target = tip;
                (false, None)
            } else if !a.force.unwrap_or(false) {
                return Err(ActionError::new(
                    ErrorKind::Refused,
                    format!(
                        "branch `{}` exists at {}; moving it to {} needs `force: true` (destructive); nothing was changed",
                        a.name,
                        at.map(|o| o.to_string()).unwrap_or_default(),
                        target.id()
                    ),
                )
                .hint("leave `from` out to switch to it as it is, or pick another name"));
            } else {
                if current.as_deref() == Some(refname.as_str()) {
                    let tree = target.tree().map_err(|e| git_err("tree", &e))?;
                    guard_checkout(config, &repo, &root, &tree)?;
                    checkout(&repo, &target)?;
                }
                b.get_mut()
                    .set_target(target.id(), "infra: branch moved")
                    .map_err(|e| git_err("cannot move the branch", &e))?;
                (false, at)
            }
        }
        Err(e) if e.code() == ErrorCode::NotFound => {
            if switch {
                let tree = target.tree().map_err(|e| git_err("tree", &e))?;
                guard_checkout(config, &repo, &root, &tree)?;
            }
            repo.branch(&a.name, &target, false)
                .map_err(|e| git_err("cannot create the branch", &e))?;
            (true, None)
        }
        Err(e) => return Err(git_err("cannot read the branch", &e)),
    };
    if switch && current.as_deref() != Some(refname.as_str()) {
        let tree = target.tree().map_err(|e| git_err("tree", &e))?;
        guard_checkout(config, &repo, &root, &tree)?;
        checkout(&repo, &target)?;
        repo.set_head(&refname)
            .map_err(|e| git_err("cannot switch HEAD", &e))?;
    }
    Ok(json!({
        "root": root.display().to_string(),
        "branch": a.name,
        "sha": target.id().to_string(),
        "created": created,
        "moved_from": moved.map(|o| o.to_string()),
        "switched": switch,
        "previous": previous,
    }))
}

/// Why each file of a patch fails to apply, checking one file at a time (for the error).
fn failing_files(repo: &Repository, diff: &Diff<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, delta) in diff.deltas().enumerate() {
        let mut n = 0usize;
        let mut opts = ApplyOptions::new();
        opts.check(true).delta_callback(move |_| {
            let mine = n == i;
            n += 1;
            mine
        });
        if let Err(e) = repo.apply(diff, ApplyLocation::WorkDir, Some(&mut opts)) {
            let path = delta
                .new_file()
                .path()
                .or(delta.old_file().path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.push(format!("`{path}` ({})", e.message()));
        }
    }
    out
}

/// `apply_patch`: a unified diff applied to the work tree, all of it or nothing.
pub(super) fn apply_patch(
    config: &Config,
    a: &super::ApplyPatchArgs,
) -> Result<Value, ActionError> {
    let (repo, root) = root::open(config, &a.repo_path)?;
    let diff = Diff::from_buffer(a.patch.as_bytes()).map_err(|e| {
        ActionError::new(
            ErrorKind::InvalidArgs,
            format!(
                "`patch` is not a unified diff git can read: {}",
                e.message()
            ),
        )
        .hint("give the output of `git diff` (headers `diff --git`, `---`, `+++`, then hunks)")
    })?;
    if diff.deltas().len() == 0 {
        return Err(
            ActionError::new(ErrorKind::InvalidArgs, "`patch` changes no file")
                .hint("give the output of `git diff`"),
        );
    }
    let mut paths = Vec::new();
    for d in diff.deltas() {
        for f in [d.old_file(), d.new_file()] {
            if let Some(p) = f.path_bytes() {
                let p = String::from_utf8_lossy(p).into_owned();
                if p != "/dev/null" && !paths.contains(&p) {
                    paths.push(p);
                }
            }
        }
    }
    root::check_paths(config, &root, paths.iter().map(String::as_str), "the patch")?;
    let mut check = ApplyOptions::new();
    check.check(true);
    if let Err(e) = repo.apply(&diff, ApplyLocation::WorkDir, Some(&mut check)) {
        let files = failing_files(&repo, &diff);
        return Err(ActionError::new(
            ErrorKind::CheckFailed,
            format!(
                "the patch does not apply{}: {}; nothing was changed",
                if files.is_empty() {
                    String::new()
                } else {
                    format!(" to {}", files.join(", "))
                },
                e.message()
            ),
        )
        .hint(
            "make the patch against the current work tree (`repo` `diff`), then apply it again",
        ));
    }
    repo.apply(&diff, ApplyLocation::WorkDir, None)
        .map_err(|e| git_err("applying the checked patch failed", &e))?;
    let stat = crate::git::diff_stat(Some(&diff)).map_err(to_action)?;
    Ok(json!({ "root": root.display().to_string(), "stat": stat }))
}

/// `Name <email>` as a signature now.
fn signature(repo: &Repository, author: Option<&str>) -> Result<Signature<'static>, ActionError> {
    if let Some(a) = author {
        let parsed = a
            .trim()
            .strip_suffix('>')
            .and_then(|s| s.split_once('<'))
            .map(|(n, e)| (n.trim(), e.trim()))
            .filter(|(n, e)| !n.is_empty() && e.contains('@'));
        let Some((name, email)) = parsed else {
            return Err(ActionError::new(
                ErrorKind::InvalidArgs,
                format!("`author` `{a}` is not `Name <email>`"),
            ));
        };
        return Signature::now(name, email).map_err(|e| {
            ActionError::new(ErrorKind::InvalidArgs, format!("`author`: {}", e.message()))
        });
    }
    repo.signature().map_err(|_| {
        ActionError::new(
            ErrorKind::InvalidConfig,
            "no author: `author` is not given and git config has no user.name and user.email",
        )
        .hint("pass `author: \"Name <email>\"`, or set user.name and user.email in the repository's git config")
    })
}

/// `commit`: the given `paths` (as they are in the work tree) or every change to tracked files,
/// committed on HEAD. An empty commit is refused.
pub(super) fn commit(config: &Config, a: &super::CommitArgs) -> Result<Value, ActionError> {
    let (repo, root) = root::open(config, &a.repo_path)?;
    if a.message.trim().is_empty() {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "`message` is empty",
        ));
    }
    let sig = signature(&repo, a.author.as_deref())?;
    let parent = head(&repo)?;
    let old_tree = parent
        .as_ref()
        .map(|c| c.tree())
        .transpose()
        .map_err(|e| git_err("HEAD", &e))?;
    let mut index = repo
        .index()
        .map_err(|e| git_err("cannot read the index", &e))?;
    let tree_id = match &a.paths {
        Some(paths) => {
            root::check_paths(config, &root, paths.iter().map(String::as_str), "`paths`")?;
            for p in paths {
                let full = root.join(p);
                let in_tree = full.symlink_metadata().is_ok();
                if full.is_dir() {
                    return Err(ActionError::new(
                        ErrorKind::InvalidArgs,
                        format!("`{p}` is a directory; `paths` names files"),
                    ));
                }
                if !in_tree && index.get_path(Path::new(p), 0).is_none() {
                    return Err(ActionError::new(
                        ErrorKind::InvalidArgs,
                        format!("`{p}` is neither in the work tree nor in the index"),
                    ));
                }
            }
            for p in paths {
                let r = if root.join(p).symlink_metadata().is_ok() {
                    index.add_path(Path::new(p))
                } else {
                    index.remove_path(Path::new(p))
                };
                r.map_err(|e| git_err(&format!("cannot stage `{p}`"), &e))?;
            }
            // Only these paths: HEAD's tree with their new entries, whatever else is staged.
            let mut only = Index::new().map_err(|e| git_err("index", &e))?;
            if let Some(t) = &old_tree {
                only.read_tree(t).map_err(|e| git_err("index", &e))?;
            }
            for p in paths {
                let r = match index.get_path(Path::new(p), 0) {
                    Some(entry) => only.add(&entry),
                    None => only.remove_path(Path::new(p)),
                };
                r.map_err(|e| git_err("index", &e))?;
            }
            only.write_tree_to(&repo)
        }
        None => index
            .update_all(["*"], None)
            .and_then(|()| index.write_tree()),
    }
    .map_err(|e| git_err("cannot build the commit's tree", &e))?;
    let empty_tree = Oid::from_str("4b825dc642cb6eb9a060e54bf8d69288fbee4904").ok();
    let unchanged = match &old_tree {
        Some(t) => t.id() == tree_id,
        None => Some(tree_id) == empty_tree,
    };
    if unchanged {
        return Err(ActionError::new(
            ErrorKind::Refused,
            "nothing to commit: the tree is the same as HEAD's",
        )
        .hint("change files first, or name untracked files in `paths` (without `paths` only tracked files are committed)"));
    }
    index
        .write()
        .map_err(|e| git_err("cannot write the index", &e))?;
    let tree = repo.find_tree(tree_id).map_err(|e| git_err("tree", &e))?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let oid = repo
        .commit(Some("HEAD"), &sig, &sig, &a.message, &tree, &parents)
        .map_err(|e| git_err("cannot commit", &e))?;
    let diff = repo
        .diff_tree_to_tree(old_tree.as_ref(), Some(&tree), None)
        .map_err(|e| git_err("diff", &e))?;
    let stat = crate::git::diff_stat(Some(&diff)).map_err(to_action)?;
    Ok(json!({
        "root": root.display().to_string(),
        "sha": oid.to_string(),
        "branch": repo.head().ok().and_then(|h| h.shorthand().ok().map(str::to_owned)),
        "author": format!("{} <{}>", sig.name().unwrap_or_default(), sig.email().unwrap_or_default()),
        "stat": stat,
    }))
}

/// A refusal listing the changed paths, when there are any.
fn require_clean(repo: &Repository, root: &Path, what: &str) -> Result<(), ActionError> {
    let dirty = crate::git::dirty_paths(repo).map_err(to_action)?;
    if dirty.is_empty() {
        return Ok(());
    }
    Err(ActionError::new(
        ErrorKind::CheckFailed,
        format!(
            "{what}: the work tree `{}` has changes: {}",
            root.display(),
            dirty.join(", ")
        ),
    )
    .hint("commit or discard them (`repo` `status` shows each)"))
}

/// `revert`: a new commit on HEAD undoing `rev`, made in memory; a conflict refuses it and nothing is
/// touched. The work tree must be clean first.
pub(super) fn revert(config: &Config, a: &super::RevertArgs) -> Result<Value, ActionError> {
    let (repo, root) = root::open(config, &a.repo_path)?;
    let target = commit_of(&repo, &a.rev)?;
    let parents = target.parent_count();
    // libgit2 takes 0 for a commit with one parent, and the parent's number for a merge
    let mainline = match (parents, a.mainline) {
        (1, None | Some(1)) => 0,
        (n, Some(m)) if n > 1 && m >= 1 && m as usize <= n => m,
        (0, _) => {
            return Err(ActionError::new(
                ErrorKind::InvalidArgs,
                format!(
                    "`{}` is a root commit (no parent); there is nothing to revert it to",
                    a.rev
                ),
            ));
        }
        (n, None) => {
            return Err(ActionError::new(
                ErrorKind::InvalidArgs,
                format!("`{}` is a merge of {n} parents; nothing was changed", a.rev),
            )
            .hint("give `mainline: 1` to undo what the merge brought into the branch it was merged into"));
        }
        (n, Some(m)) => {
            return Err(ActionError::new(
                ErrorKind::InvalidArgs,
                format!(
                    "`mainline: {m}` does not name a parent of `{}`, which has {n}",
                    a.rev
                ),
            ));
        }
    };
    let Some(head_commit) = head(&repo)? else {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "HEAD has no commit",
        ));
    };
    require_clean(&repo, &root, "revert refused")?;
    let sig = signature(&repo, a.author.as_deref())?;
    let mut merged = repo
        .revert_commit(&target, &head_commit, mainline, None)
        .map_err(|e| git_err("cannot revert", &e))?;
    if merged.has_conflicts() {
        let mut paths: Vec<String> = merged
            .conflicts()
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|c| c.our.or(c.their).or(c.ancestor))
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect();
        paths.dedup();
        return Err(ActionError::new(
            ErrorKind::CheckFailed,
            format!(
                "reverting {} conflicts with HEAD in {}; nothing was changed",
                target.id(),
                paths.join(", ")
            ),
        )
        .hint("revert by hand with a patch (`apply_patch`), or revert the later commits first"));
    }
    let tree_id = merged
        .write_tree_to(&repo)
        .map_err(|e| git_err("cannot write the tree", &e))?;
    let tree = repo.find_tree(tree_id).map_err(|e| git_err("tree", &e))?;
    guard_checkout(config, &repo, &root, &tree)?;
    let message = format!(
        "Revert \"{}\"\n\nThis reverts commit {}.\n",
        target.summary().ok().flatten().unwrap_or_default(),
        target.id()
    );
    let oid = repo
        .commit(None, &sig, &sig, &message, &tree, &[&head_commit])
        .map_err(|e| git_err("cannot commit", &e))?;
    let new = repo.find_commit(oid).map_err(|e| git_err("commit", &e))?;
    checkout(&repo, &new)?;
    let mut head_ref = repo.head().map_err(|e| git_err("HEAD", &e))?;
    if head_ref.is_branch() {
        head_ref
            .set_target(oid, "infra: revert")
            .map_err(|e| git_err("cannot move the branch", &e))?;
    } else {
        repo.set_head_detached(oid)
            .map_err(|e| git_err("cannot move HEAD", &e))?;
    }
    let diff = repo
        .diff_tree_to_tree(
            Some(&head_commit.tree().map_err(|e| git_err("tree", &e))?),
            Some(&tree),
            None,
        )
        .map_err(|e| git_err("diff", &e))?;
    Ok(json!({
        "root": root.display().to_string(),
        "sha": oid.to_string(),
        "reverted": target.id().to_string(),
        "stat": crate::git::diff_stat(Some(&diff)).map_err(to_action)?,
    }))
}

/// `assert_clean`: fails listing the changed paths (untracked included, ignored not).
pub(super) fn assert_clean(config: &Config, repo_path: &str) -> Result<Value, ActionError> {
    let repo = crate::git::open(&config.cwd.join(repo_path)).map_err(|e| {
        ActionError::new(ErrorKind::NotFound, e.to_string())
            .hint("pass `repo_path` inside a git work tree")
    })?;
    let root = repo.workdir().unwrap_or(repo.path()).to_path_buf();
    require_clean(&repo, &root, "not clean")?;
    Ok(json!({ "root": root.display().to_string(), "clean": true }))
}
