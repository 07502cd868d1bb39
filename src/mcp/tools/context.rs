//! `context`: what the project is and what can be done in it. `get`: the git repository (root, branch,
//! clean) around `path` (or `repo_root`) and the project's tags with the files that show them
//! (`engine::context`: bounded, cached per root until something under it changes); `refresh` walks
//! again. `targets`: the project's targets as results may show them, never a credential. `summary`
//! (also the unlisted `workspace {action: summary}`): context tags, targets, the capabilities that
//! apply here, runbooks, recent runs and failed jobs, in under 4 KB.

use std::path::Path;

use engine::run::Engine;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::mcp::reply::Reply;
use crate::mcp::schema::ToolParams;

/// What `context` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    pub action: Action,
    /// `get`, `refresh`, `summary`: where to look (the working directory by default).
    pub path: Option<String>,
    /// The same as `path`.
    pub repo_root: Option<String>,
}

/// What `context` does.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Get,
    Refresh,
    Targets,
    Summary,
}

impl ToolParams for Params {
    const TOOL: &'static str = "context";
}

/// Runs one `context` action.
pub fn call(engine: &Engine, p: &Params) -> Reply {
    let dir = p.repo_root.as_deref().or(p.path.as_deref()).unwrap_or(".");
    match p.action {
        Action::Get => project(engine, Path::new(dir), false),
        Action::Refresh => project(engine, Path::new(dir), true),
        Action::Targets => targets(engine),
        Action::Summary => super::workspace::summary(engine, Path::new(dir)),
    }
}

/// The project's targets as results may show them.
fn targets(engine: &Engine) -> Reply {
    let t = engine::targets::Targets::load(&engine.config().profiles_dir);
    if !t.diagnostics.is_empty() {
        let mut r = Reply::diagnostics(&t.diagnostics, "");
        r.body["error"]["hint"] =
            "fix the targets file (`targets.json` or `targets.yaml` in the profiles directory)"
                .into();
        return r;
    }
    let list = t.public();
    Reply::ok(format!("{} targets", list.len()), json!({"targets": list}))
}

/// What kind of project `path` is in: git, tags with their evidence files.
fn project(engine: &Engine, path: &Path, refresh: bool) -> Reply {
    let ctx = match engine::intent::context_of(Some(path), refresh) {
        Ok(c) => c,
        Err(e) => {
            let arg = if path == Path::new(".") {
                None
            } else {
                Some("/path".to_owned())
            };
            return Reply::error("invalid_args", e.message, Some(e.hint), arg.or(e.path));
        }
    };
    let repo = engine::git::status(&ctx.root)
        .ok()
        .map(|s| json!({"root": s["root"], "branch": s["branch"], "clean": s["clean"]}));
    let tags = if ctx.tags.is_empty() {
        "no tags".to_owned()
    } else {
        ctx.tags.join(", ")
    };
    let mut summary = format!("{} ({tags})", ctx.root.display());
    if let Some(s) = &ctx.stopped {
        summary += &format!("; the scan {s}");
    }
    let mut body = ctx.to_json();
    body["path"] = json!(ctx.root);
    body["repo"] = repo.unwrap_or(Value::Null);
    body["markers"] = json!(ctx.tags);
    body["profiles_dir"] = json!(engine.config().profiles_dir);
    body["unsafe_local"] = engine.config().unsafe_local.into();
    Reply::ok(summary, body)
}
