//! `repo`: read-only views of a git repository (no opt-in needed).

use crate::error::ErrorKind;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

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
    /// Only the diffstat, no patch text.
    pub stat_only: Option<bool>,
    /// Largest patch text kept in the result, in bytes (the rest goes to an artifact).
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
}

fn action(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    schema_fn: fn() -> serde_json::Value,
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
    ToolSpec {
        name: "repo",
        title: "Git repository",
        description: "Read-only views of a git repository: snapshot, status, log, diff.",
        aliases: &["mcp_repo"],
        open_world: false,
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
        ],
    }
}

pub(super) fn invoke(
    action: &str,
    call: &super::Call<'_>,
) -> Result<serde_json::Value, super::ActionError> {
    let at = |p: &str| std::path::PathBuf::from(p);
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
                a.stat_only.unwrap_or(false),
                a.max_bytes.map_or(256 * 1024, |m| m as usize),
            )
        }
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
