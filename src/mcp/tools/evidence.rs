//! `evidence`: recorded runs: `list` (the store's run index, newest first, optionally of one runbook) and
//! `get` (a run by id or unique prefix: its journal, read back, and its state as the store decides it,
//! the same word `infra runs` shows: finished, running or interrupted). Run directories are not shown.

use engine::run::Engine;
use serde_json::{Map, Value, json};

use crate::mcp::reply::Reply;

/// Runs one `evidence` action.
pub fn call(engine: &Engine, action: &str, args: &Map<String, Value>) -> Reply {
    let store = match engine.store() {
        Ok(s) => s,
        Err(e) => return Reply::error("store_unavailable", e.to_string(), None, None),
    };
    match action {
        "list" => {
            let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(20) as usize;
            let runbook = args.get("runbook").and_then(Value::as_str);
            match store.runs(if runbook.is_some() { 1000 } else { limit }) {
                Ok(mut runs) => {
                    if let Some(rb) = runbook {
                        runs.retain(|r| r["runbook"] == rb);
                        runs.truncate(limit);
                    }
                    for r in &mut runs {
                        if let Some(o) = r.as_object_mut() {
                            o.shift_remove("dir");
                        }
                    }
                    Reply::ok(format!("{} runs", runs.len()), json!({"runs": runs}))
                }
                Err(e) => Reply::error("store_unavailable", e.to_string(), None, None),
            }
        }
        "get" => {
            let id = args.get("run_id").and_then(Value::as_str).unwrap_or("");
            let Ok(Some(run)) = store.run(id) else {
                return Reply::error(
                    "not_found",
                    format!("no run `{id}` (or the prefix is not unique)"),
                    Some("`evidence {action: list}` shows run ids".into()),
                    Some("/run_id".into()),
                );
            };
            let dir = std::path::PathBuf::from(run["dir"].as_str().unwrap_or_default());
            match engine::record::evidence::read(&dir.join("journal.jsonl")) {
                Ok(back) => {
                    // the store decides a run's state (the same word `infra runs` shows)
                    let mut run = run;
                    let state = run["state"].clone();
                    if let Some(o) = run.as_object_mut() {
                        o.shift_remove("dir");
                    }
                    Reply::ok(
                        format!(
                            "{} records, {}",
                            back.records.len(),
                            state.as_str().unwrap_or("")
                        ),
                        json!({"run": run, "state": state, "torn": back.torn, "records": back.records}),
                    )
                }
                Err(e) => Reply::error(
                    "not_found",
                    format!("cannot read the journal: {e}"),
                    None,
                    None,
                ),
            }
        }
        other => Reply::unknown_action("evidence", other),
    }
}
