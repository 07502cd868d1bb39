//! `artifacts`: run outputs by `artifact://` URI: `list` (the newest run first, each run's journal then
//! its files; `runbook` and `run` filter), `get` and `head` (from an offset), `tail` (the end). A run's
//! URI reads as what it holds, and its `journal.jsonl` as its records (`Engine::read_artifact`). Every
//! read is bounded (`max_bytes`, 4 KiB by default, at most `artifacts::MAX_READ`), redacted, and goes
//! through the URI, so no link in a run's directory is followed.
//! `include_secrets: true` reads without masking, only when `INFRA_ALLOW_SECRET_EXPORT=1` (refused
//! otherwise); the call is audited like any other, its arguments included.

use engine::record::artifacts::From;
use engine::run::{ArtifactFilter, Engine};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::mcp::reply::Reply;
use crate::mcp::schema::{ToolParams, opt_u64};

/// What `artifacts` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    pub action: Action,
    /// The artifact (`get`, `head`, `tail`).
    #[serde(default)]
    pub uri: String,
    /// `get`, `head`: the first byte to read (0 by default).
    #[serde(default, deserialize_with = "opt_u64")]
    pub offset: Option<u64>,
    /// How many bytes to read (4 KiB by default).
    #[serde(default, deserialize_with = "opt_u64")]
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
    /// `list`: at most this many (20 by default).
    #[serde(default, deserialize_with = "opt_u64")]
    #[schemars(range(min = 1))]
    pub limit: Option<u64>,
    /// `list`: one runbook's runs.
    #[serde(default)]
    pub runbook: Option<String>,
    /// `list`: one run (id prefix).
    #[serde(default)]
    pub run: Option<String>,
    /// `get`, `head`, `tail`: read without masking secrets; needs `INFRA_ALLOW_SECRET_EXPORT=1`.
    #[serde(default)]
    pub include_secrets: bool,
}

/// What `artifacts` does.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    List,
    Get,
    Head,
    Tail,
}

impl ToolParams for Params {
    const TOOL: &'static str = "artifacts";
}

/// Runs one `artifacts` action.
pub fn call(engine: &Engine, p: &Params) -> Reply {
    let uri = p.uri.as_str();
    let max = p.max_bytes.unwrap_or(4096);
    if p.include_secrets && !engine.config().allow_secret_export {
        return Reply::error(
            "refused",
            "`include_secrets` needs secret export, which is off",
            Some("start the server with `INFRA_ALLOW_SECRET_EXPORT=1` to allow it, or leave `include_secrets` out for a masked read".into()),
            Some("/include_secrets".into()),
        );
    }
    let none = engine::record::redact::Redactor::new();
    let redactor = if p.include_secrets {
        &none
    } else {
        engine.redactor()
    };
    let read = |from: From| match engine.read_artifact_with(uri, from, max, redactor) {
        Ok(v) => {
            let mut r = Reply::ok(format!("{} of {} bytes", v["bytes"], v["total_bytes"]), v);
            r.links.push(uri.to_owned());
            if p.include_secrets {
                r.raw_result = Some(r.body["result"].clone());
            }
            r
        }
        Err(e) => Reply::error(
            "not_found",
            e.to_string(),
            Some("`artifacts {action: list}` shows the URIs".into()),
            Some("/uri".into()),
        ),
    };
    match p.action {
        Action::List => match engine.list_artifacts(
            ArtifactFilter {
                runbook: p.runbook.as_deref(),
                run: p.run.as_deref(),
            },
            p.limit.unwrap_or(20) as usize,
        ) {
            Ok(v) => Reply::ok(format!("{} artifacts", v.len()), json!({"artifacts": v})),
            Err(e) => Reply::error("failed", e.to_string(), None, None),
        },
        Action::Get | Action::Head => read(From::Offset(p.offset.unwrap_or(0))),
        Action::Tail => read(From::Tail),
    }
}
