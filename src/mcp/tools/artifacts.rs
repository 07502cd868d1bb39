//! `artifacts`: run outputs by `artifact://` URI: `list` (the newest first), `get` and `head` (from an
//! offset), `tail` (the end). Every read is bounded (`max_bytes`, 4 KiB by default, at most
//! `artifacts::MAX_READ`), redacted, and goes through the URI, so no link in a run's directory is followed.

use engine::record::artifacts::{self, From};
use engine::run::Engine;
use serde_json::{Map, Value, json};

use crate::mcp::reply::Reply;

/// Runs one `artifacts` action.
pub fn call(engine: &Engine, action: &str, args: &Map<String, Value>) -> Reply {
    let root = &engine.config().artifacts_root;
    let uri = args.get("uri").and_then(Value::as_str).unwrap_or("");
    let max = args
        .get("max_bytes")
        .and_then(Value::as_u64)
        .unwrap_or(4096);
    let read = |from: From| match artifacts::read(root, uri, from, max, engine.redactor()) {
        Ok(v) => {
            let mut r = Reply::ok(format!("{} of {} bytes", v["bytes"], v["total_bytes"]), v);
            r.links.push(uri.to_owned());
            r
        }
        Err(e) => Reply::error(
            "not_found",
            e.to_string(),
            Some("`artifacts {action: list}` shows the URIs".into()),
            Some("/uri".into()),
        ),
    };
    match action {
        "list" => match artifacts::list(
            root,
            args.get("limit").and_then(Value::as_u64).unwrap_or(20) as usize,
        ) {
            Ok(v) => Reply::ok(format!("{} artifacts", v.len()), json!({"artifacts": v})),
            Err(e) => Reply::error("failed", e.to_string(), None, None),
        },
        "get" | "head" => read(From::Offset(
            args.get("offset").and_then(Value::as_u64).unwrap_or(0),
        )),
        "tail" => read(From::Tail),
        other => Reply::unknown_action("artifacts", other),
    }
}
