//! The dispatcher: `call` is the one entry of a tool call, and `finish` records and audits it.
//!
//! `call` starts a job for `async: true` (`jobs::Jobs::start`: a worker process makes the same call
//! without `async`). Otherwise it makes the call canonical once, before anything
//! validates it (`normalize::normalize`: the tool's, action's and arguments' original names, and the
//! per-call `output` and `store_as` taken off), reads a front-end tool's arguments into its parameters
//! (`schema::parse`, which refuses any key or value that does not fit the tool's listed schema) and
//! hands them to that tool (`tools::*`), or hands the call to `registry::call`. A reply that succeeded
//! is then shaped by `output` and stored by `store_as` (`shape.rs`), and a run's result is cut to the
//! budget (`budget::budget`). Every reply goes through `finish`: the `normalized` notes; for a call that
//! did not become a run, its result cut to the budget, a one-node run recorded by `Engine::record_call`
//! (its `run_id` goes into the reply) and a `call` or `rejected` audit record with its arguments
//! (redacted); then the whole body is redacted (but for an `include_secrets` read's `raw_result`).
//! `catalog_warnings` and `runbook_warnings` are what the client's log is sent.

use engine::record::{AuditKind, AuditRecord};
use std::sync::Arc;

use engine::actions;
use engine::run::{CancelToken, Engine, Progress, RunOptions};
use serde_json::{Map, Value, json};

use super::budget::{budget, cut_front_end};
use super::jobs::Jobs;
use super::normalize::normalize;
use super::reply::Reply;
use super::schema::parse;
use super::shape::{Output, StoreAs};
use super::{listing, registry, tools};

/// Original names that mean a front-end tool.
fn canonical(name: &str) -> (&str, bool) {
    let c = match name {
        "mcp_runbook" => "runbook",
        "mcp_artifacts" => "artifacts",
        "mcp_audit" => "audit",
        "mcp_jobs" | "job" => "jobs",
        // the capability and workspace actions are listed under `intent` and `context`
        "capability" | "mcp_capability" => "intent",
        "workspace" | "mcp_workspace" => "context",
        other => actions::canonical_tool(other),
    };
    (c, c != name)
}

/// How a call is run: its cancel token and where step progress goes.
pub struct CallCx<'a> {
    pub cancel: CancelToken,
    pub progress: Option<&'a (dyn Fn(&Progress) + Sync)>,
    /// Another process follows the call while it runs (a job's worker): `RunOptions::followed`.
    pub followed: bool,
}

impl CallCx<'_> {
    fn options(&self) -> RunOptions<'_> {
        RunOptions {
            cancel: self.cancel.clone(),
            depth: 0,
            progress: self.progress,
            followed: self.followed,
        }
    }
}

/// Starts a call in the background (`async: true`) and returns its job id at once. The job lives in the
/// store and in a worker process of its own, so `jobs` (here or in another process) sees it and it
/// outlives this server.
fn start_job(
    engine: &Arc<Engine>,
    jobs: &Arc<Jobs>,
    name: &str,
    mut args: Map<String, Value>,
) -> Reply {
    args.shift_remove("async");
    let (tool, _) = canonical(name);
    let given = args.get("action").and_then(Value::as_str).unwrap_or("");
    // the job row names the action by our name (the call itself is normalized when it runs)
    let action = super::normalize::action_alias(tool, given)
        .unwrap_or(given)
        .to_owned();
    let shown = Value::Object(args.clone());
    let reply = jobs.start(engine, tool, &action, name, args);
    // a job that started is audited by its worker; one that did not is audited here
    if reply.body["ok"] == false {
        return finish(engine, tool, &action, &shown, reply, &[]);
    }
    reply
}

/// Runs one call; `jobs` are the jobs this server runs. Blocking: call it off the async runtime.
pub fn call(
    engine: &Arc<Engine>,
    jobs: &Arc<Jobs>,
    name: &str,
    args: Map<String, Value>,
    cx: &CallCx<'_>,
) -> Reply {
    if args.get("async").and_then(Value::as_bool) == Some(true) {
        return start_job(engine, jobs, name, args);
    }
    let mut args = args;
    args.shift_remove("async");
    let (tool, aliased) = canonical(name);
    let mut notes = Vec::new();
    if aliased {
        notes.push(json!({"from": name, "to": tool, "kind": "tool"}));
    }
    // the original's names become ours, once, before anything validates the arguments
    let front_schema = listing::front_end_schema(tool);
    let given = Value::Object(args.clone());
    let n = match normalize(tool, args, front_schema.as_ref()) {
        Ok(n) => n,
        Err(refused) => return finish(engine, tool, "", &given, refused, &notes),
    };
    notes.extend(n.notes);
    let args = Value::Object(n.args);
    // a front-end tool's arguments are read into its parameters, or refused
    let front_end = match tool {
        "help" => {
            Some(parse(&args).map(|p| tools::help::call(engine, &listing::tools(engine), &p)))
        }
        "runbook" => Some(parse(&args).map(|p| tools::runbook::call(engine, &p, &cx.options()))),
        "evidence" => Some(parse(&args).map(|p| tools::evidence::call(engine, &p))),
        "jobs" => Some(parse(&args).map(|p| tools::jobs::call(engine, &p))),
        "context" => Some(parse(&args).map(|p| tools::context::call(engine, &p))),
        "intent" => Some(parse(&args).map(|p| tools::intent::call(engine, &p, &cx.options()))),
        "artifacts" => Some(parse(&args).map(|p| tools::artifacts::call(engine, &p))),
        "audit" => Some(parse(&args).map(|p| tools::audit::call(engine, &p))),
        _ => None,
    };
    let mut reply = match front_end {
        Some(Ok(reply)) => reply,
        Some(Err(refused)) => return finish(engine, tool, "", &args, refused, &notes),
        None if actions::find_tool(tool).is_some() => {
            registry::call(engine, tool, &args, &cx.options())
        }
        None => {
            let mut names: Vec<String> =
                listing::tools(engine).into_iter().map(|t| t.name).collect();
            names.sort();
            Reply::error(
                "unknown_tool",
                format!("there is no tool `{name}`"),
                Some(
                    dsl::diagnostic::suggestion(name, names.iter().map(String::as_str))
                        .unwrap_or_else(|| format!("tools: {}", names.join(", "))),
                ),
                None,
            )
        }
    };
    if !reply.is_error {
        if let Some(o) = &n.output {
            shape(&mut reply, o);
            if let Some(raw) = reply.raw_result.as_mut()
                && let Ok(v) = o.apply(raw)
            {
                *raw = v;
            }
        }
        if let Some(s) = &n.store_as
            && !reply.is_error
        {
            store(engine, &mut reply, s, cx);
        }
    }
    if tool == "runbook"
        && args.get("runbook").is_none()
        && let Some(name) = args.get("name").and_then(Value::as_str)
    {
        reply.warnings = runbook_warnings(engine, Some(name));
    }
    // the budget, once the result has its final shape
    if let Some(run) = reply.run.take() {
        budget(engine, &run, &mut reply.body, &mut reply.links);
        reply.body["artifacts"] = reply.links.iter().cloned().map(Value::String).collect();
    }
    let action = args.get("action").and_then(Value::as_str).unwrap_or("");
    finish(engine, tool, action, &args, reply, &notes)
}

/// Shapes the reply's result with `output`; a result without what `output` asks for makes the reply a
/// refusal (the call itself ran: its `run_id`, if any, stays).
fn shape(reply: &mut Reply, output: &Output) {
    match output.apply(&reply.body["result"]) {
        Ok(v) => reply.body["result"] = v,
        Err(why) => {
            let message =
                format!("the call succeeded, but `output` cannot shape its result: {why}");
            reply.body["ok"] = false.into();
            reply.body["summary"] = message.clone().into();
            reply.body["error"] = json!({
                "kind": "invalid_args", "message": message, "path": "/output",
                "hint": "fix `output.path`, or add `missing: \"null\"` (or `empty`, or a `default`) to accept a missing value",
            });
            reply.is_error = true;
        }
    }
}

/// Saves the (shaped, redacted) result with `state set`, a run of its own, and says so in `stored_as`.
fn store(engine: &Engine, reply: &mut Reply, s: &StoreAs, cx: &CallCx<'_>) {
    let value = engine.redactor().redact_value(&reply.body["result"]);
    let set = json!({"action": "set", "key": s.key, "value": value, "scope": s.scope});
    let r = registry::call(engine, "state", &set, &cx.options());
    let mut stored = json!({"key": s.key, "scope": s.scope, "run_id": r.body["run_id"]});
    if r.is_error {
        let message = format!(
            "the call succeeded, but its result was not stored as `{}`: {}",
            s.key,
            r.body["error"]["message"]
                .as_str()
                .unwrap_or("state set failed")
        );
        stored["error"] = r.body["error"].clone();
        reply.body["ok"] = false.into();
        reply.body["summary"] = message.clone().into();
        reply.body["error"] =
            json!({"kind": r.body["error"]["kind"], "message": message, "path": "/store_as"});
        reply.is_error = true;
    }
    reply.body["stored_as"] = stored;
}

/// Notes what was normalized, records and audits a call that did not become a run, and masks secrets.
fn finish(
    engine: &Engine,
    tool: &str,
    action: &str,
    args: &Value,
    mut reply: Reply,
    notes: &[Value],
) -> Reply {
    if !notes.is_empty() {
        reply.body["normalized"] = Value::Array(notes.to_vec());
    }
    // a call that became a run has its evidence and audit records from the engine; every other call gets
    // a one-node run recorded here, and an audit record
    if reply.body.get("run_id").is_none() {
        cut_front_end(&mut reply.body, Some(engine.redactor()));
        let error = reply
            .body
            .get("error")
            .map(|e| engine::record::evidence::ErrorInfo {
                kind: e["kind"].as_str().unwrap_or("failed").to_owned(),
                message: e["message"].as_str().unwrap_or("").to_owned(),
            });
        let shown = json!({"summary": reply.body["summary"], "ok": reply.body["ok"]});
        let recorded = if tool == "runbook" {
            recorded_runbook_args(engine, args)
        } else if tool == "intent" {
            recorded_intent_args(engine, args)
        } else {
            args.clone()
        };
        match engine.record_call(tool, action, &recorded, &shown, error) {
            Ok(id) => reply.body["run_id"] = id.into(),
            Err(e) => {
                return Reply::error(
                    "evidence_unavailable",
                    format!("cannot record the call: {e}"),
                    None,
                    None,
                );
            }
        }
        let rec = AuditRecord {
            tool: Some(tool.to_owned()),
            action: Some(action.to_owned()),
            front_end: Some("mcp".into()),
            run_id: reply.body["run_id"].as_str().map(str::to_owned),
            // a front-end tool's arguments (a runbook's inputs masked as recorded); a registry tool's
            // may hold a credential its action would have masked, so they stay in the evidence only
            args: matches!(
                tool,
                "help"
                    | "runbook"
                    | "artifacts"
                    | "jobs"
                    | "audit"
                    | "evidence"
                    | "context"
                    | "intent"
            )
            .then(|| engine.redactor().redact_value(&recorded)),
            error: Some(
                engine
                    .redactor()
                    .redact_value(reply.body.get("error").unwrap_or(&Value::Null)),
            ),
            ..AuditRecord::new(if reply.is_error {
                AuditKind::Rejected
            } else {
                AuditKind::Call
            })
        };
        if let Err(e) = engine.audit().record(&rec, false) {
            return Reply::error(
                "audit_unavailable",
                format!("{e}; the call was refused"),
                None,
                None,
            );
        }
    }
    reply.body = engine.redactor().redact_value(&reply.body);
    if let Some(raw) = reply.raw_result.take() {
        let mut whole = json!({"result": raw});
        cut_front_end(&mut whole, None);
        reply.body["result"] = whole["result"].take();
    }
    reply
}

/// One warning as a log line: `warning[code]: message (file)`, and its help.
fn warning_line(d: &dsl::Diagnostic) -> String {
    let mut line = format!("warning[{}]: {}", d.code.as_str(), d.message);
    if let Some(f) = &d.file {
        line += &format!(" ({})", f.name());
    }
    if let Some(h) = &d.help {
        line += &format!("; {h}");
    }
    line
}

/// The catalog's warnings for the client's log: warnings in runbook files (deprecated syntax…) and
/// project runbooks that override a built-in. Only those of runbook `only`, when given.
pub fn catalog_warnings(engine: &Engine) -> Vec<String> {
    runbook_warnings(engine, None)
}

/// [`catalog_warnings`], of runbook `only` (its file's warnings and whether it overrides a built-in)
/// when given.
pub fn runbook_warnings(engine: &Engine, only: Option<&str>) -> Vec<String> {
    let catalog = engine.catalog();
    let file = only.map(|n| catalog.get(n).map(|e| e.runbook.file.name().to_owned()));
    if let Some(None) = file {
        return Vec::new();
    }
    let file = file.flatten();
    let mut out: Vec<String> = catalog
        .diagnostics()
        .iter()
        .filter(|d| !d.is_error())
        .filter(|d| {
            file.as_deref()
                .is_none_or(|f| d.file.as_ref().is_some_and(|x| x.name() == f))
        })
        .map(warning_line)
        .collect();
    for e in catalog.entries() {
        if e.overrides == Some(engine::Origin::Builtin) && only.is_none_or(|n| n == e.runbook.name)
        {
            out.push(format!(
                "warning[overridden-builtin]: the project runbook `{}` ({}) replaces the built-in `{}`; `runbook {{action: delete, name: \"{}\"}}` restores it",
                e.runbook.name,
                e.runbook.file.name(),
                e.runbook.name,
                e.runbook.name
            ));
        }
    }
    out
}

/// An intent call's arguments as recorded: an input's value is kept only when some runbook declares
/// an input of that name and none declares it secret (the call may have stopped before its
/// capability, and so its runbook, was known).
fn recorded_intent_args(engine: &Engine, args: &Value) -> Value {
    let catalog = engine.catalog();
    let entries = catalog.entries();
    let public = |k: &str| {
        let decl: Vec<bool> = entries
            .iter()
            .filter_map(|e| e.runbook.inputs.get(k).map(|i| i.secret))
            .collect();
        !decl.is_empty() && !decl.contains(&true)
    };
    let mut recorded = args.clone();
    for at in ["/inputs", "/intent/inputs"] {
        if let Some(Value::Object(given)) = recorded.pointer_mut(at) {
            for (k, v) in given.iter_mut() {
                if !public(k) {
                    *v = Value::String(engine::record::redact::MASK.into());
                }
            }
        }
    }
    recorded
}

/// A runbook call's arguments as recorded: an input's value is kept only when the named runbook
/// declares that input and not as secret. Every other value (a secret, a misspelt name, an unknown or
/// inline runbook's input) is masked, since the call may have stopped before its secrets were known.
fn recorded_runbook_args(engine: &Engine, args: &Value) -> Value {
    let declared = match (
        args.get("name").and_then(Value::as_str),
        args.get("runbook"),
    ) {
        (Some(n), None) => engine.catalog().get(n).map(|e| e.runbook.clone()),
        _ => None,
    };
    let mut recorded = args.clone();
    if let Some(Value::Object(given)) = recorded.get_mut("input") {
        for (k, v) in given.iter_mut() {
            let public = declared
                .as_ref()
                .and_then(|rb| rb.inputs.get(k))
                .is_some_and(|i| !i.secret);
            if !public {
                *v = Value::String(engine::record::redact::MASK.into());
            }
        }
    }
    recorded
}
