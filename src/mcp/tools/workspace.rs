//! `context {action: summary}` (and the unlisted `workspace {action: summary}`): one call that orients
//! an agent in a project: the context's tags, the targets (no credentials), the capabilities that apply
//! here (ranked, with why), the runbooks whose tags meet the context, recent runs and failed jobs.
//! Lists are cut until the result is under [`MAX_SUMMARY`] bytes, and say how many there were.

use std::path::Path;

use engine::run::Engine;
use serde_json::{Value, json};

use crate::mcp::reply::Reply;

/// The most a summary's result takes, in bytes of JSON.
pub const MAX_SUMMARY: usize = 4000;

/// Calls that are a front end's own reads, not work done in the project.
fn is_front_end_call(name: &str) -> bool {
    let head = name.split('.').next().unwrap_or("");
    matches!(
        head,
        "help" | "context" | "artifacts" | "jobs" | "audit" | "evidence" | "runbook"
    ) || matches!(
        name,
        "intent.list"
            | "intent.get"
            | "intent.explain"
            | "intent.compile"
            | "intent.dry_run"
            | "intent.execute"
            | "intent.resolve"
            | "intent.suggest"
    )
}

/// The summary of the project at `dir`.
pub fn summary(engine: &Engine, dir: &Path) -> Reply {
    let ctx = match engine::intent::context_of(Some(dir), false) {
        Ok(c) => c,
        Err(e) => {
            return Reply::error(
                "invalid_args",
                e.message,
                Some(e.hint),
                Some("/path".into()),
            );
        }
    };
    let caps = engine::intent::capabilities(engine);
    let suggested = engine::capability::resolve::suggest(&caps, &ctx);
    let targets = engine::targets::Targets::load(&engine.config().profiles_dir);
    let targets: Vec<Value> = targets
        .targets
        .iter()
        .map(|(n, t)| {
            let p = t.public(n);
            json!({"name": n, "host": p["host"], "labels": p["labels"], "postgres": p["postgres"], "http": p["http"]})
        })
        .collect();
    let catalog = engine.catalog();
    let runbooks: Vec<Value> = catalog
        .entries()
        .iter()
        .filter(|e| e.runbook.tags.iter().any(|t| ctx.has(t)))
        .map(|e| json!(e.runbook.name))
        .collect();
    let store = engine.store().ok();
    let runs: Vec<Value> = store
        .and_then(|s| s.runs(100).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| !is_front_end_call(r["runbook"].as_str().unwrap_or("")))
        .map(|r| json!({"run_id": r["id"], "runbook": r["runbook"], "status": r["status"], "started_at": r["started_at"]}))
        .collect();
    let failed_jobs: Vec<Value> = store
        .and_then(|s| s.jobs(50).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|j| matches!(j["status"].as_str(), Some("failed" | "interrupted" | "cancelled")))
        .map(|j| json!({"job_id": j["id"], "tool": j["tool"], "action": j["action"], "status": j["status"]}))
        .collect();
    let mut lists = [
        ("capabilities", suggested),
        ("targets", targets),
        ("runbooks", runbooks),
        ("recent_runs", runs),
        ("failed_jobs", failed_jobs),
    ];
    let totals: Vec<(&str, usize)> = lists.iter().map(|(k, v)| (*k, v.len())).collect();
    for (_, v) in &mut lists {
        v.truncate(8);
    }
    let make = |lists: &[(&str, Vec<Value>)]| {
        let mut body = json!({
            "root": ctx.root, "tags": ctx.tags, "truncated_scan": ctx.truncated,
            "capabilities_file_errors": caps.diagnostics.iter().filter(|d| d.is_error()).count(),
            "next": "intent {action: explain, intent: <a capability's intent>}, then dry_run, then execute",
        });
        for (k, v) in lists {
            body[*k] = Value::Array(v.clone());
        }
        let total: serde_json::Map<String, Value> = totals
            .iter()
            .map(|(k, n)| ((*k).to_owned(), (*n).into()))
            .collect();
        body["totals"] = Value::Object(total);
        body
    };
    let mut body = make(&lists);
    // cut the longest list, one item at a time, until the summary fits
    while serde_json::to_string(&body).map_or(0, |s| s.len()) > MAX_SUMMARY {
        let Some((_, v)) = lists
            .iter_mut()
            .filter(|(_, v)| !v.is_empty())
            .max_by_key(|(_, v)| serde_json::to_string(v).map_or(0, |s| s.len()))
        else {
            break;
        };
        v.pop();
        body = make(&lists);
    }
    let tags = if ctx.tags.is_empty() {
        "no tags".to_owned()
    } else {
        ctx.tags.join(", ")
    };
    Reply::ok(
        format!(
            "{} ({tags}): {} capabilities apply here, {} targets",
            ctx.root.display(),
            totals[0].1,
            totals[1].1
        ),
        body,
    )
}
