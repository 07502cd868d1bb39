//! A call of one of the registry's tools (`ssh`, `http`, `psql`, `repo`, `state`, `local`): compiled by
//! `engine::compile_call` as a one-step runbook, like any other (so a bad argument is a diagnostic, its
//! JSON path made relative to the arguments), executed by `Engine::execute` with the call's cancel token
//! and progress, and answered with the step's result and the run's id (`catalogue::call` applies the
//! budget). The engine records and audits the run itself.

use engine::run::{Engine, RunOptions};
use serde_json::{Map, Value, json};

use super::reply::Reply;

/// Runs `tool` with `args` as a one-step plan.
pub fn call(engine: &Engine, tool: &str, args: &Value, options: &RunOptions<'_>) -> Reply {
    let plan = match engine::compile_call(tool, args, &engine::CompileOptions::default()) {
        Ok(p) => p,
        Err(d) => return Reply::diagnostics(&d, "/steps/0/args"),
    };
    let outcome = engine.execute(&plan, Map::new(), options);
    let node = plan.nodes().next();
    let effects = plan.effects();
    let step = outcome.steps.first();
    let qualified = node.map(|n| n.action.qualified()).unwrap_or_default();
    // refused for want of an approval: the plan to approve (digest, effects, rendered plan) is the result
    let result = match &outcome.approval {
        Some(a) => json!({ "approval": a }),
        None => step.and_then(|s| s.result.clone()).unwrap_or(Value::Null),
    };
    let error = step.and_then(|s| s.error.clone());
    let (ok, summary) = match (&error, &outcome.error) {
        (None, None) => (
            true,
            format!("{qualified} succeeded in {} ms", outcome.duration_ms),
        ),
        (Some(e), _) => (false, format!("{qualified} failed: {}", e.message)),
        (None, Some(e)) => (false, format!("{qualified} did not run: {}", e.message)),
    };
    let mut body = json!({"ok": ok, "effects": effects, "summary": summary, "result": result, "run_id": outcome.run_id});
    let links: Vec<String> = result
        .get("artifacts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x["uri"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(e) = error.as_ref().map(|e| e.to_json()).or_else(|| {
        outcome
            .error
            .as_ref()
            .map(|e| json!({"kind": e.kind, "message": e.message}))
    }) {
        body["error"] = e;
    }
    Reply::of_run(body, ok, links, &outcome)
}
