//! `audit`: the hash-chained audit log: `tail` (the last records), `verify` (the chain, the log's end
//! against the head kept in the store, and, with `against`, a checkpoint kept elsewhere; one engine
//! function for the CLI, MCP and doctor), `checkpoint` (the head, `<seq>:<hash>`, to keep elsewhere).

use engine::record::audit::Head;
use engine::run::Engine;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::mcp::reply::Reply;
use crate::mcp::schema::{ToolParams, opt_u64};

/// What `audit` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    pub action: Action,
    /// `tail`: at most this many records (20 by default).
    #[serde(default, deserialize_with = "opt_u64")]
    #[schemars(range(min = 1))]
    pub limit: Option<u64>,
    /// `verify`: a checkpoint (`<seq>:<hash>`) the log must still hold.
    pub against: Option<String>,
}

/// What `audit` does.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Tail,
    Verify,
    Checkpoint,
}

impl ToolParams for Params {
    const TOOL: &'static str = "audit";
}

/// Runs one `audit` action.
pub fn call(engine: &Engine, p: &Params) -> Reply {
    match p.action {
        Action::Tail => match engine.audit().tail(p.limit.unwrap_or(20) as usize) {
            Ok(v) => Reply::ok(format!("{} records", v.len()), json!({"records": v})),
            Err(e) => Reply::error("failed", e.to_string(), None, None),
        },
        Action::Checkpoint => match engine.audit_checkpoint() {
            Ok(head) => Reply::ok(
                format!("record {}: {}", head.seq, head.checkpoint()),
                head.to_json(),
            ),
            Err(e) => Reply::error("failed", e, None, None),
        },
        Action::Verify => {
            let checkpoint = match p.against.as_deref().map(Head::parse_checkpoint) {
                None => None,
                Some(Ok(h)) => Some(h),
                Some(Err(e)) => {
                    return Reply::error("invalid_args", e, None, Some("/against".into()));
                }
            };
            verify(engine, checkpoint)
        }
    }
}

/// `Engine::verify_audit`, as the CLI's `audit verify` does, optionally against a checkpoint.
fn verify(engine: &Engine, checkpoint: Option<Head>) -> Reply {
    match engine.verify_audit(checkpoint) {
        Ok(v) => Reply::ok(
            match &v.problem {
                None => format!("{} records, chain intact", v.records),
                Some(p) => format!("the log is broken at record {}", p.seq),
            },
            v.to_json(),
        ),
        Err(e) => Reply::error("failed", e.to_string(), None, None),
    }
}
