//! `audit`: the hash-chained audit log: `tail` (the last records), `verify` (the chain, the log's end
//! against the head kept in the store, and, with `against`, a checkpoint kept elsewhere; one engine
//! function for the CLI, MCP and doctor), `checkpoint` (the head, `<seq>:<hash>`, to keep elsewhere).

use engine::run::Engine;
use serde_json::{Map, Value, json};

use crate::mcp::reply::Reply;

/// Runs one `audit` action.
pub fn call(engine: &Engine, action: &str, args: &Map<String, Value>) -> Reply {
    match action {
        "tail" => match engine
            .audit()
            .tail(args.get("limit").and_then(Value::as_u64).unwrap_or(20) as usize)
        {
            Ok(v) => Reply::ok(format!("{} records", v.len()), json!({"records": v})),
            Err(e) => Reply::error("failed", e.to_string(), None, None),
        },
        "checkpoint" => match engine.audit_checkpoint() {
            Ok(head) => Reply::ok(
                format!("record {}: {}", head.seq, head.checkpoint()),
                head.to_json(),
            ),
            Err(e) => Reply::error("failed", e, None, None),
        },
        "verify" => {
            let against = args.get("against").and_then(Value::as_str);
            let checkpoint = match against.map(engine::record::audit::Head::parse_checkpoint) {
                None => None,
                Some(Ok(h)) => Some(h),
                Some(Err(e)) => {
                    return Reply::error("invalid_args", e, None, Some("/against".into()));
                }
            };
            verify(engine, checkpoint)
        }
        other => Reply::unknown_action("audit", other),
    }
}

/// `Engine::verify_audit`, as the CLI's `audit verify` does, optionally against a checkpoint.
fn verify(engine: &Engine, checkpoint: Option<engine::record::audit::Head>) -> Reply {
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
