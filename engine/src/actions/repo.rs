//! `repo`: views of a git repository and writes to it through git2, no shell (no opt-in needed).
//!
//! Reads: `snapshot`, `status`, `log`, `diff` (work tree, staged, or against any `rev`, with stats) and
//! `assert_clean` (fails listing the changed paths, untracked included). Writes (`write.rs`, `remote.rs`),
//! each refused or failed without changing anything:
//! - `branch`: creates `name` at `from` (default HEAD) and switches to it (`switch: false` does not); an
//!   existing branch is switched to, and moved to `from` only with `force` (destructive). Switching is a
//!   safe checkout: local changes it would overwrite refuse it.
//! - `apply_patch`: a unified diff (`Diff::from_buffer`) applied to the work tree (not the index) with
//!   `Repository::apply` after a check pass of the whole patch, so all of it applies or none; a patch
//!   touching `.git`, an absolute path, `..` or a path behind a symlink is refused first; a hunk that
//!   does not apply names its file. The result has the files changed with +/- counts.
//! - `commit`: `paths` (files, as they are in the work tree; HEAD's tree plus just those) or every change
//!   to tracked files, on HEAD; an empty commit is refused. The author and committer are `author`
//!   (`Name <email>`), else the repository's git config, else an error saying so. Returns the sha.
//! - `revert`: the commit `rev` undone by a new commit on HEAD, merged in memory: a conflict refuses it
//!   and touches nothing; the work tree must be clean first.
//! - `fetch`, `push`: see `remote.rs` (credentials, host keys, non-fast-forward refusal).
//!
//! Effects: `branch` and `push` are destructive with `force` (or a `+` refspec), writes otherwise;
//! `fetch` is a write (it moves remote-tracking refs); policy and approvals apply by effect and every
//! call is audited by the executor. The repository written to is contained (`root.rs`): inside the
//! project, or named by its root; and no write changes infra's own files (policy, targets, audit,
//! store, runs) when they are in the work tree.

mod remote;
mod root;
mod write;

use crate::error::ErrorKind;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ActionSpec, ToolSpec, args_schema, no_modes};
use dsl::Effect;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotArgs {
    /// A path inside the repository; the repository is found from it upwards.
    pub repo_path: String,
    /// How many recent commits to include (default 10).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {
    /// A path inside the repository.
    pub repo_path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogArgs {
    /// A path inside the repository.
    pub repo_path: String,
    /// How many commits (default 20).
    #[schemars(range(min = 1, max = 10000))]
    pub limit: Option<u32>,
    /// Start from this revision instead of `HEAD`.
    pub rev: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffArgs {
    /// A path inside the repository.
    pub repo_path: String,
    /// Compare the index with `HEAD` instead of the work tree with the index.
    pub staged: Option<bool>,
    /// Diff against this revision's tree (the work tree's tracked files, or the index with `staged`).
    pub rev: Option<String>,
    /// Only the diffstat, no patch text.
    pub stat_only: Option<bool>,
    /// Largest patch text kept in the result, in bytes (the rest goes to an artifact).
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchArgs {
    /// A path inside the repository.
    pub repo_path: String,
    /// The branch.
    pub name: String,
    /// Where a new branch starts (default `HEAD`); for an existing one, where `force` moves it.
    pub from: Option<String>,
    /// Switch to the branch (default true).
    pub switch: Option<bool>,
    /// Move an existing branch to `from` (destructive); with `push`, a forced push (destructive).
    pub force: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyPatchArgs {
    /// A path inside the repository.
    pub repo_path: String,
    /// A unified diff, as `git diff` writes it.
    pub patch: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitArgs {
    /// A path inside the repository.
    pub repo_path: String,
    pub message: String,
    /// Only these files (relative to the root); default every change to tracked files.
    pub paths: Option<Vec<String>>,
    /// `Name <email>`; default user.name and user.email of the git config.
    pub author: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevertArgs {
    /// A path inside the repository.
    pub repo_path: String,
    /// The commit to revert.
    pub rev: String,
    /// `Name <email>`; default the git config's.
    pub author: Option<String>,
    /// A merge commit: the parent it is reverted to (1: the branch merged into). A commit with one
    /// parent takes 1 or nothing.
    #[schemars(range(min = 1))]
    pub mainline: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteArgs {
    /// A path inside the repository.
    pub repo_path: String,
    /// A remote's name (default `origin`) or a URL (a host path or `file://` only with
    /// `INFRA_UNSAFE_LOCAL=1`).
    pub remote: Option<String>,
    /// Refspecs (fetch: the remote's own by default; push: the current branch).
    pub refspecs: Option<Vec<String>>,
    /// A target whose `key_file`, `agent`, `username`, `known_hosts`, `fingerprint`, `host_key` apply (ssh).
    pub target: Option<String>,
    /// An ssh private key file: one a target of the remote's host names as its `key_file` (any host
    /// file only with `INFRA_UNSAFE_LOCAL=1`).
    pub key_file: Option<String>,
    /// The variable holding an https token: one a target of the remote's host names (its `host` or
    /// `http.base_url`), any other only with `INFRA_ALLOW_SECRET_EXPORT=1`.
    pub token_env: Option<String>,
    /// Push: overwrite the remote's refs (destructive).
    pub force: Option<bool>,
}

/// `force: true` (or a `+` refspec) is destructive, a literal `false` or none a write; a templated
/// `force` is left at the worst.
fn classify_force(args: &Map<String, Value>) -> Option<Effect> {
    let plus = args
        .get("refspecs")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|s| s.as_str().is_some_and(|s| s.starts_with('+')))
        });
    match args.get("force") {
        _ if plus => Some(Effect::Destructive),
        Some(Value::Bool(true)) => Some(Effect::Destructive),
        None | Some(Value::Bool(false)) => Some(Effect::Write),
        _ => None,
    }
}

fn action(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    schema_fn: fn() -> Value,
) -> ActionSpec {
    ActionSpec {
        tool: "repo",
        name,
        title,
        description,
        effect: Effect::Read,
        unsafe_local: false,
        schema_fn,
        modes: no_modes,
        classify: None,
        secret_args: None,
        example: || json!({"action": "status", "repo_path": "."}),
    }
}

pub(super) fn tool() -> ToolSpec {
    let mut snapshot = action(
        "snapshot",
        "Repository snapshot",
        "Root, branch, status, diffstat and recent commits in one call.",
        || {
            args_schema::<SnapshotArgs>(
                "repo",
                "snapshot",
                "Root, branch, status, diffstat and recent commits in one call.",
            )
        },
    );
    snapshot.example = || json!({"action": "snapshot", "repo_path": "."});
    let mut log = action(
        "log",
        "Commit log",
        "Recent commits: id, author, time, summary.",
        || args_schema::<LogArgs>("repo", "log", "Recent commits: id, author, time, summary."),
    );
    log.example = || json!({"action": "log", "repo_path": ".", "limit": 5});
    let mut diff = action(
        "diff",
        "Diff",
        "Work tree (or staged) changes: diffstat and patch.",
        || {
            args_schema::<DiffArgs>(
                "repo",
                "diff",
                "Work tree (or staged) changes: diffstat and patch.",
            )
        },
    );
    diff.example = || json!({"action": "diff", "repo_path": ".", "stat_only": true});
    let writes = write_actions();
    ToolSpec {
        name: "repo",
        title: "Git repository",
        description: "Git repository views and writes (git2).",
        aliases: &["mcp_repo"],
        // fetch and push reach remotes
        open_world: true,
        actions: vec![
            snapshot,
            action(
                "status",
                "Status",
                "Branch, upstream, and changed files.",
                || {
                    args_schema::<StatusArgs>(
                        "repo",
                        "status",
                        "Branch, upstream, and changed files.",
                    )
                },
            ),
            log,
            diff,
        ]
        .into_iter()
        .chain(writes)
        .collect(),
    }
}

fn write_actions() -> Vec<ActionSpec> {
    let mut branch = action(
        "branch",
        "Branch",
        "Create or switch a branch (moving one needs `force`).",
        || {
            args_schema::<BranchArgs>(
                "repo",
                "branch",
                "Create or switch a branch (moving one needs `force`).",
            )
        },
    );
    branch.effect = Effect::Destructive;
    branch.classify = Some(classify_force);
    branch.example =
        || json!({"action": "branch", "repo_path": ".", "name": "fix", "from": "main"});
    let mut apply = action(
        "apply_patch",
        "Apply a patch",
        "Apply a unified diff (all or nothing).",
        || {
            args_schema::<ApplyPatchArgs>(
                "repo",
                "apply_patch",
                "Apply a unified diff (all or nothing).",
            )
        },
    );
    apply.effect = Effect::Write;
    apply.example =
        || json!({"action": "apply_patch", "repo_path": ".", "patch": "diff --git a/x b/x\n"});
    let mut commit = action(
        "commit",
        "Commit",
        "Commit paths or tracked changes.",
        || args_schema::<CommitArgs>("repo", "commit", "Commit paths or tracked changes."),
    );
    commit.effect = Effect::Write;
    commit.example =
        || json!({"action": "commit", "repo_path": ".", "message": "Fix", "paths": ["a.txt"]});
    let mut revert = action("revert", "Revert", "Commit undoing `rev`.", || {
        args_schema::<RevertArgs>("repo", "revert", "Commit undoing `rev`.")
    });
    revert.effect = Effect::Write;
    revert.example = || json!({"action": "revert", "repo_path": ".", "rev": "HEAD"});
    let mut fetch = action("fetch", "Fetch", "Fetch from a remote.", || {
        args_schema::<RemoteArgs>("repo", "fetch", "Fetch from a remote.")
    });
    fetch.effect = Effect::Write;
    fetch.example = || json!({"action": "fetch", "repo_path": ".", "remote": "origin"});
    let mut push = action("push", "Push", "Push to a remote.", || {
        args_schema::<RemoteArgs>("repo", "push", "Push to a remote.")
    });
    push.effect = Effect::Destructive;
    push.classify = Some(classify_force);
    push.example = || json!({"action": "push", "repo_path": ".", "remote": "origin"});
    let mut clean = action(
        "assert_clean",
        "Assert clean",
        "Fail listing changed paths.",
        || args_schema::<StatusArgs>("repo", "assert_clean", "Fail listing changed paths."),
    );
    clean.example = || json!({"action": "assert_clean", "repo_path": "."});
    vec![branch, apply, commit, revert, fetch, push, clean]
}

pub(super) fn invoke(action: &str, call: &super::Call<'_>) -> Result<Value, super::ActionError> {
    // relative to the directory infra was started in (the process's own, in the binary)
    let at = |p: &str| call.host.config().cwd.join(p);
    let result = match action {
        "snapshot" => {
            let a: SnapshotArgs = call.parse()?;
            crate::git::snapshot(&at(&a.repo_path), a.limit.map_or(10, |l| l as usize))
        }
        "status" => {
            let a: StatusArgs = call.parse()?;
            crate::git::status(&at(&a.repo_path))
        }
        "log" => {
            let a: LogArgs = call.parse()?;
            crate::git::log(
                &at(&a.repo_path),
                a.limit.map_or(20, |l| l as usize),
                a.rev.as_deref(),
            )
        }
        "diff" => {
            let a: DiffArgs = call.parse()?;
            crate::git::diff(
                &at(&a.repo_path),
                a.staged.unwrap_or(false),
                a.rev.as_deref(),
                a.stat_only.unwrap_or(false),
                a.max_bytes.map_or(256 * 1024, |m| m as usize),
            )
        }
        "branch" => return done(write::branch(call.host.config(), &call.parse()?)),
        "apply_patch" => return done(write::apply_patch(call.host.config(), &call.parse()?)),
        "commit" => return done(write::commit(call.host.config(), &call.parse()?)),
        "revert" => return done(write::revert(call.host.config(), &call.parse()?)),
        "assert_clean" => {
            let a: StatusArgs = call.parse()?;
            return done(write::assert_clean(call.host.config(), &a.repo_path));
        }
        "fetch" | "push" => return done(transfer(action, call)),
        other => {
            return Err(super::ActionError::new(
                ErrorKind::NotAvailable,
                format!("repo has no action `{other}`"),
            ));
        }
    };
    result
        .map(|mut v| {
            v["ok"] = true.into();
            v
        })
        .map_err(|e| match e {
            crate::git::GitError::NotARepo { .. } => {
                super::ActionError::new(ErrorKind::NotFound, e.to_string())
                    .hint("pass `repo_path` inside a git work tree")
            }
            crate::git::GitError::Git(_) => {
                super::ActionError::new(ErrorKind::Failed, e.to_string())
            }
        })
}

fn done(r: Result<Value, super::ActionError>) -> Result<Value, super::ActionError> {
    r.map(|mut v| {
        v["ok"] = true.into();
        v
    })
}

fn transfer(action: &str, call: &super::Call<'_>) -> Result<Value, super::ActionError> {
    let a: RemoteArgs = call.parse()?;
    let (repo, root) = root::open(call.host.config(), &a.repo_path)?;
    let name = a.remote.as_deref().unwrap_or("origin");
    let access = remote::Access::new(
        call.host,
        a.target.as_deref(),
        a.key_file.as_deref(),
        a.token_env.as_deref(),
        name,
    )?;
    let specs = a.refspecs.unwrap_or_default();
    let mut v = if action == "fetch" {
        remote::fetch(call, &repo, name, &specs, &access)?
    } else {
        remote::push(call, &repo, name, &specs, a.force.unwrap_or(false), &access)?
    };
    v["root"] = root.display().to_string().into();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(args: Value) -> Effect {
        let spec = |name: &str| {
            tool()
                .actions
                .into_iter()
                .find(|a| a.name == name)
                .expect("action")
        };
        let name = args["action"].as_str().expect("action").to_owned();
        spec(&name).effect_of(args.as_object().expect("object"))
    }

    #[test]
    fn force_and_plus_refspecs_are_destructive_templated_force_is_the_worst() {
        let cases = [
            (json!({"action": "push"}), Effect::Write),
            (json!({"action": "push", "force": false}), Effect::Write),
            (
                json!({"action": "push", "force": true}),
                Effect::Destructive,
            ),
            (
                json!({"action": "push", "refspecs": ["+main:main"]}),
                Effect::Destructive,
            ),
            (
                json!({"action": "push", "force": null}),
                Effect::Destructive,
            ),
            (json!({"action": "branch", "name": "x"}), Effect::Write),
            (
                json!({"action": "branch", "name": "x", "force": true}),
                Effect::Destructive,
            ),
            (json!({"action": "fetch"}), Effect::Write),
            (json!({"action": "commit", "message": "m"}), Effect::Write),
            (json!({"action": "assert_clean"}), Effect::Read),
        ];
        for (args, want) in cases {
            assert_eq!(effect(args.clone()), want, "{args}");
        }
    }
}
