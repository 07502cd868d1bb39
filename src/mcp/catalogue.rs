//! The MCP tool catalogue, free of any MCP library type: tool descriptions generated from the engine's
//! action registry (plus the front end's own tools), and calls turned into engine runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use engine::actions::{self, ToolSpec};
use engine::record::artifacts::{self, From};
use engine::run::{CancelToken, Engine, Progress, RunOptions, RunOutcome};
use serde_json::{Map, Value, json};

/// The most text a result carries; the rest is in an artifact.
pub const RESULT_BUDGET: usize = 16 * 1024;

/// One listed tool.
#[derive(Debug, Clone)]
pub struct ToolDesc {
    pub name: String,
    pub title: String,
    pub description: String,
    pub input_schema: Value,
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

/// What a call returns: the result object, whether it is an error, and artifact links.
#[derive(Debug, Clone)]
pub struct Reply {
    pub body: Value,
    pub is_error: bool,
    pub links: Vec<String>,
}

impl Reply {
    fn error(
        kind: &str,
        message: impl Into<String>,
        hint: Option<String>,
        path: Option<String>,
    ) -> Self {
        let mut e = json!({"kind": kind, "message": message.into()});
        if let Some(h) = hint {
            e["hint"] = h.into();
        }
        if let Some(p) = path {
            e["path"] = p.into();
        }
        Reply {
            body: json!({"ok": false, "summary": e["message"].clone(), "error": e}),
            is_error: true,
            links: Vec::new(),
        }
    }
}

/// The shape of every tool's result (`outputSchema`): kept small, since every tool repeats it.
pub fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "effects": {"enum": ["read", "write", "destructive"]},
            "summary": {"type": "string"},
            "result": {},
            "run_id": {"type": "string"},
            "artifacts": {"type": "array"},
            "error": {"type": "object"}
        },
        "required": ["ok", "summary"]
    })
}

/// A tool made from the registry: a flat object with the `action` enum and the union of its actions'
/// properties (no top-level `oneOf`: many clients reject it). Each call is validated against its action's
/// own schema by the engine.
fn registry_tool(t: &ToolSpec) -> ToolDesc {
    let mut props = Map::new();
    let names: Vec<&str> = t.actions.iter().map(|a| a.name).collect();
    props.insert("action".into(), json!({"type": "string", "enum": names}));
    props.insert("async".into(), json!({"type": "boolean"}));
    for a in &t.actions {
        if let Some(p) = a.schema().get("properties").and_then(Value::as_object) {
            for (k, v) in p {
                if k != "action" && !props.contains_key(k) {
                    props.insert(k.clone(), strip_schema_keys(v));
                }
            }
        }
    }
    let read_only = t.actions.iter().all(|a| a.effect == dsl::Effect::Read);
    let lines: Vec<String> = t
        .actions
        .iter()
        .map(|a| {
            // an action whose effect depends on its arguments says so, with its worst
            let effect = match a.classify {
                Some(_) => format!("{} at most, by its arguments", a.effect),
                None => a.effect.to_string(),
            };
            format!("`{}`: {} ({effect})", a.name, first_sentence(a.description))
        })
        .collect();
    ToolDesc {
        name: t.name.into(),
        title: t.title.into(),
        description: format!(
            "{} Actions: {}. `help` with `tool` and `action` gives the exact arguments and an example.",
            t.description,
            lines.join("; ")
        ),
        input_schema: json!({"type": "object", "properties": props, "required": ["action"]}),
        read_only,
        destructive: t
            .actions
            .iter()
            .any(|a| a.effect == dsl::Effect::Destructive),
        idempotent: read_only,
        open_world: t.open_world,
    }
}

/// Keeps a property schema small in the tool list: its type (with item and value types) and enum.
/// Descriptions, bounds and formats are in the action's own schema (`help` shows it), which every call
/// is validated against.
fn strip_schema_keys(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| {
                    matches!(
                        k.as_str(),
                        "type" | "enum" | "const" | "items" | "additionalProperties"
                    )
                })
                .map(|(k, x)| match (k.as_str(), x) {
                    // an optional argument: `["string", "null"]` is listed as `"string"`
                    ("type", Value::Array(ts)) => {
                        let real: Vec<&Value> = ts.iter().filter(|t| *t != "null").collect();
                        match real.as_slice() {
                            [one] => (k.clone(), (*one).clone()),
                            _ => (k.clone(), x.clone()),
                        }
                    }
                    _ => (k.clone(), strip_schema_keys(x)),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A description's first sentence (up to its first `. `, `(` or `:` after some words).
fn first_sentence(d: &str) -> &str {
    let cut = [". ", " (", ": ", "; "]
        .iter()
        .filter_map(|p| d.find(p))
        .filter(|i| *i >= 12)
        .min()
        .unwrap_or(d.len());
    d[..cut].trim_end_matches('.')
}

fn meta_tool(
    name: &str,
    title: &str,
    description: &str,
    actions: &[&str],
    props: Value,
    read_only: bool,
) -> ToolDesc {
    let mut p = props.as_object().cloned().unwrap_or_default();
    let mut required = Vec::new();
    if !actions.is_empty() {
        let mut with_action = Map::new();
        with_action.insert("action".into(), json!({"type": "string", "enum": actions}));
        with_action.extend(p);
        p = with_action;
        required.push("action");
    }
    ToolDesc {
        name: name.into(),
        title: title.into(),
        description: description.into(),
        input_schema: json!({"type": "object", "properties": p, "required": required}),
        read_only,
        destructive: false,
        idempotent: read_only,
        open_world: false,
    }
}

/// Every listed tool, in a fixed order. `local` only with `INFRA_UNSAFE_LOCAL=1`.
pub fn tools(engine: &Engine) -> Vec<ToolDesc> {
    let mut out = vec![
        meta_tool(
            "help",
            "Help",
            "Searches tools, actions and runbooks by `query`; with `tool` (and `action`), returns that action's schema and an example. Cheap, read-only.",
            &[],
            json!({"query": {"type": "string"}, "tool": {"type": "string"}, "action": {"type": "string"}}),
            true,
        ),
        meta_tool(
            "runbook",
            "Runbooks",
            "Named, checked workflows. `list` (query, tags, limit), `get`, `run` (name or inline `runbook`, `input`, `dry_run`), `plan` (rendered, runs nothing), `validate` (diagnostics), `graph` (mermaid), `upsert` (checked, then saved as one project file; a built-in's name needs `override: true`), `delete` (project runbooks only). A run costs what its steps cost; see its effects first with `plan`.",
            &[
                "list", "get", "run", "plan", "validate", "graph", "upsert", "delete",
            ],
            json!({
                "name": {"type": "string"},
                "runbook": {"type": "object", "description": "An inline runbook (the same keys as a runbook file)."},
                "input": {"type": "object"},
                "query": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "limit": {"type": "integer", "minimum": 1},
                "dry_run": {"type": "boolean"},
                "override": {"type": "boolean", "description": "`upsert` of a built-in's name: replace the built-in with this project runbook."},
                "async": {"type": "boolean", "description": "`run` as a job: returns its `job_id` at once."}
            }),
            false,
        ),
    ];
    for t in actions::registry() {
        if t.name == "runbook" || (t.name == "local" && !engine.config().unsafe_local) {
            continue;
        }
        out.push(registry_tool(t));
    }
    out.push(meta_tool(
        "artifacts",
        "Artifacts",
        "Run outputs by `artifact://` URI: `list` (limit), `get` (offset, max_bytes), `head`, `tail`. Reads are bounded.",
        &["list", "get", "head", "tail"],
        json!({"uri": {"type": "string"}, "offset": {"type": "integer", "minimum": 0}, "max_bytes": {"type": "integer", "minimum": 1}, "limit": {"type": "integer", "minimum": 1}}),
        true,
    ));
    out.push(meta_tool(
        "jobs",
        "Jobs",
        "Calls started with `async: true` (any tool; the call returns a `job_id` at once): `list`, `status`, `wait` (timeout_ms), `logs` (the journal; while running, the output so far), `cancel`. Jobs live in the store: the CLI sees them too.",
        &["list", "status", "wait", "logs", "cancel"],
        json!({"job_id": {"type": "string"}, "timeout_ms": {"type": "integer", "minimum": 1}, "limit": {"type": "integer", "minimum": 1}}),
        false,
    ));
    out.push(meta_tool(
        "audit",
        "Audit log",
        "The hash-chained record of every call: `tail` (limit), `verify` (against: a checkpoint), `checkpoint` (the head to keep elsewhere).",
        &["tail", "verify", "checkpoint"],
        json!({"limit": {"type": "integer", "minimum": 1}, "against": {"type": "string"}}),
        true,
    ));
    out.push(meta_tool(
        "evidence",
        "Evidence",
        "Recorded runs: `list` (limit, runbook), `get` (run_id): the run's journal, and whether it finished or was interrupted.",
        &["list", "get"],
        json!({"run_id": {"type": "string"}, "runbook": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}}),
        true,
    ));
    out.push(meta_tool(
        "context",
        "Project context",
        "`get`: the git repository (root, branch, clean) and project markers (kustomize, helm, k8s, flux, argocd, languages) under `path` (default: the working directory). `targets`: the project's targets (names, hosts, labels; never credentials).",
        &["get", "targets"],
        json!({"path": {"type": "string"}}),
        true,
    ));
    // `local` goes last, as the spec's order has it
    if let Some(pos) = out.iter().position(|t| t.name == "local") {
        let l = out.remove(pos);
        out.push(l);
    }
    out
}

/// Original names that mean a front-end tool.
fn canonical(name: &str) -> (&str, bool) {
    let c = match name {
        "mcp_runbook" => "runbook",
        "mcp_artifacts" => "artifacts",
        "mcp_audit" => "audit",
        "mcp_jobs" | "job" => "jobs",
        other => actions::canonical_tool(other),
    };
    (c, c != name)
}

/// Runs one call. Blocking: call it off the async runtime.
/// How a call is run: its cancel token and where step progress goes.
pub struct CallCx<'a> {
    pub cancel: CancelToken,
    pub progress: Option<&'a (dyn Fn(&Progress) + Sync)>,
}

impl CallCx<'_> {
    fn options(&self) -> RunOptions<'_> {
        RunOptions {
            cancel: self.cancel.clone(),
            depth: 0,
            progress: self.progress,
        }
    }
}

/// Cancel tokens of the jobs this process runs.
/// A running job's run: its id, directory and artifact URI base.
type JobRun = (String, std::path::PathBuf, String);

/// The run each running job of this process is in.
fn job_runs() -> &'static Mutex<HashMap<String, JobRun>> {
    static R: OnceLock<Mutex<HashMap<String, JobRun>>> = OnceLock::new();
    R.get_or_init(Mutex::default)
}

/// The end of every output artifact a running run has written so far (`<step>/stdout`, `<step>/stderr`,
/// per target under `ssh.batch`): size, URI and the last 4 KiB, redacted. Each is read through its URI,
/// like any artifact read, so no link in the run's directory is followed.
fn live_output(engine: &Engine, dir: &std::path::Path, uri_base: &str) -> Value {
    const TAIL: u64 = 4096;
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && depth < 3 {
                stack.push((p, depth + 1));
            } else if matches!(
                p.file_name().and_then(|n| n.to_str()),
                Some("stdout" | "stderr")
            ) && found.len() < 16
            {
                found.push(p);
            }
        }
    }
    found.sort();
    let root = &engine.config().artifacts_root;
    let streams: Vec<Value> = found
        .iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(dir).ok()?.to_str()?;
            let uri = format!("{uri_base}/{rel}");
            let v = artifacts::read(root, &uri, From::Tail, TAIL, engine.redactor()).ok()?;
            Some(json!({"uri": uri, "bytes": v["total_bytes"], "tail": v["text"]}))
        })
        .collect();
    Value::Array(streams)
}

fn job_tokens() -> &'static Mutex<HashMap<String, CancelToken>> {
    static J: OnceLock<Mutex<HashMap<String, CancelToken>>> = OnceLock::new();
    J.get_or_init(Mutex::default)
}

/// Cancels every job this process runs and waits up to `grace` for them to record how they ended (the
/// server is exiting; their processes must not outlive it).
pub fn cancel_all_jobs(grace: std::time::Duration) {
    if let Ok(t) = job_tokens().lock() {
        t.values().for_each(CancelToken::cancel);
    }
    let until = std::time::Instant::now() + grace;
    while std::time::Instant::now() < until
        && job_tokens().lock().map(|t| !t.is_empty()).unwrap_or(false)
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Starts a call in the background (`async: true`) and returns its job id at once. The job lives in the
/// store, so `jobs` (here or in another process) sees it.
fn start_job(engine: &Arc<Engine>, name: &str, mut args: Map<String, Value>) -> Reply {
    args.shift_remove("async");
    let (tool, _) = canonical(name);
    let action = args
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let store = match engine.store() {
        Ok(s) => s,
        Err(e) => return Reply::error("store_unavailable", e.to_string(), None, None),
    };
    let id = engine::ctx::new_id();
    if let Err(e) = store.job_started(&id, tool, &action) {
        return Reply::error("store_unavailable", e.to_string(), None, None);
    }
    let token = CancelToken::new();
    if let Ok(mut t) = job_tokens().lock() {
        t.insert(id.clone(), token.clone());
    }
    let (engine2, name2, id2) = (Arc::clone(engine), name.to_owned(), id.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("job-{}", &id[..8]))
        .spawn(move || {
            // the run's directory, as soon as it has one, so `jobs logs` can show output while it runs
            let job = id2.clone();
            let record_run = move |p: &Progress| {
                if let Progress::RunStarted {
                    run_id,
                    dir,
                    uri_base,
                } = p
                    && let Ok(mut r) = job_runs().lock()
                {
                    r.insert(job.clone(), (run_id.clone(), dir.clone(), uri_base.clone()));
                }
            };
            let reply = call(
                &engine2,
                &name2,
                args,
                &CallCx {
                    cancel: token.clone(),
                    progress: Some(&record_run),
                },
            );
            let status = if token.is_cancelled() {
                "cancelled"
            } else if reply.is_error {
                "failed"
            } else {
                "succeeded"
            };
            if let Ok(store) = engine2.store() {
                let _ = store.job_finished(&id2, status, &reply.body);
            }
            if let Ok(mut t) = job_tokens().lock() {
                t.remove(&id2);
            }
            if let Ok(mut r) = job_runs().lock() {
                r.remove(&id2);
            }
        });
    if let Err(e) = spawned {
        return Reply::error("failed", format!("cannot start the job: {e}"), None, None);
    }
    ok_reply(
        format!("job {id} started: `jobs {{action: wait, job_id}}` waits for it"),
        json!({"job_id": id, "status": "running", "tool": tool, "action": action}),
    )
}

fn jobs_tool(engine: &Engine, action: &str, args: &Map<String, Value>) -> Reply {
    let store = match engine.store() {
        Ok(s) => s,
        Err(e) => return Reply::error("store_unavailable", e.to_string(), None, None),
    };
    let id = args.get("job_id").and_then(Value::as_str).unwrap_or("");
    let get = || match store.job(id) {
        Ok(Some(j)) => Ok(j),
        Ok(None) => Err(Reply::error(
            "not_found",
            format!("no job `{id}`"),
            Some("`jobs {action: list}` shows them".into()),
            Some("/job_id".into()),
        )),
        Err(e) => Err(Reply::error("store_unavailable", e.to_string(), None, None)),
    };
    match action {
        "list" => {
            match store.jobs(args.get("limit").and_then(Value::as_u64).unwrap_or(20) as usize) {
                Ok(j) => ok_reply(format!("{} jobs", j.len()), json!({"jobs": j})),
                Err(e) => Reply::error("store_unavailable", e.to_string(), None, None),
            }
        }
        "status" => match get() {
            Ok(j) => ok_reply(
                format!("job {id} {}", j["status"].as_str().unwrap_or("")),
                j,
            ),
            Err(r) => r,
        },
        "wait" => {
            let limit = std::time::Duration::from_millis(
                args.get("timeout_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(30_000)
                    .min(300_000),
            );
            let until = std::time::Instant::now() + limit;
            loop {
                match get() {
                    Ok(j) if j["status"] != "running" || std::time::Instant::now() >= until => {
                        let done = j["status"] != "running";
                        let mut r = ok_reply(
                            format!("job {id} {}", j["status"].as_str().unwrap_or("")),
                            j,
                        );
                        if !done {
                            r.body["summary"] =
                                format!("job {id} is still running after {} ms", limit.as_millis())
                                    .into();
                        }
                        return r;
                    }
                    Ok(_) => std::thread::sleep(std::time::Duration::from_millis(25)),
                    Err(r) => return r,
                }
            }
        }
        "logs" => match get() {
            Ok(j) => {
                let live = job_runs().lock().ok().and_then(|r| r.get(id).cloned());
                let run_id = j["result"]["run_id"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| live.as_ref().map(|(run, _, _)| run.clone()));
                match run_id {
                    Some(run) => {
                        let mut a = Map::new();
                        a.insert("run_id".into(), run.into());
                        let mut reply = evidence_tool(engine, "get", &a);
                        // a running job also shows the end of its output so far
                        if let Some((_, dir, uri_base)) = &live
                            && !reply.is_error
                        {
                            reply.body["result"]["output"] = live_output(engine, dir, uri_base);
                            reply.body["result"]["job_status"] = j["status"].clone();
                            reply.body["summary"] = format!("job {id} is running").into();
                        }
                        reply
                    }
                    None => ok_reply(
                        format!("job {id} has no run yet"),
                        json!({"job": j, "records": []}),
                    ),
                }
            }
            Err(r) => r,
        },
        "cancel" => match get() {
            Ok(j) if j["status"] != "running" => ok_reply(
                format!(
                    "job {id} already ended: {}",
                    j["status"].as_str().unwrap_or("")
                ),
                j,
            ),
            Ok(_) => match job_tokens().lock().ok().and_then(|t| t.get(id).cloned()) {
                Some(t) => {
                    t.cancel();
                    ok_reply(
                        format!("job {id}: cancel requested"),
                        json!({"job_id": id, "status": "cancelling"}),
                    )
                }
                None => Reply::error(
                    "refused",
                    format!("job `{id}` runs in another infra process; cancel it there"),
                    None,
                    Some("/job_id".into()),
                ),
            },
            Err(r) => r,
        },
        other => unknown_action("jobs", other),
    }
}

pub fn call(engine: &Arc<Engine>, name: &str, args: Map<String, Value>, cx: &CallCx<'_>) -> Reply {
    if args.get("async").and_then(Value::as_bool) == Some(true) {
        return start_job(engine, name, args);
    }
    let mut args = args;
    args.shift_remove("async");
    let (tool, aliased) = canonical(name);
    if let Some(bad) = check_front_end_args(engine, tool, &args) {
        return finish(engine, tool, "", &Value::Object(args), bad, aliased, name);
    }
    let action = args
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let reply = match tool {
        "help" => help(engine, &args),
        "runbook" => runbook(engine, &action, &args, cx),
        "evidence" => evidence_tool(engine, &action, &args),
        "jobs" => jobs_tool(engine, &action, &args),
        "context" => context_tool(engine, &action, &args),
        "artifacts" => artifacts_tool(engine, &action, &args),
        "audit" => audit_tool(engine, &action, &args),
        _ if actions::find_tool(tool).is_some() => registry_call(engine, tool, args.clone(), cx),
        _ => {
            let mut names: Vec<String> = tools(engine).into_iter().map(|t| t.name).collect();
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
    finish(
        engine,
        tool,
        &action,
        &Value::Object(args),
        reply,
        aliased,
        name,
    )
}

/// Notes an alias, records and audits a call that did not become a run, and masks secrets.
fn finish(
    engine: &Engine,
    tool: &str,
    action: &str,
    args: &Value,
    mut reply: Reply,
    aliased: bool,
    name: &str,
) -> Reply {
    if aliased {
        reply.body["normalized"] = format!("`{name}` is `{tool}`").into();
    }
    // a call that became a run has its evidence and audit records from the engine; every other call gets
    // a one-node run recorded here, and an audit record
    if reply.body.get("run_id").is_none() {
        cut_front_end(&mut reply.body);
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
        let rec = json!({
            "kind": if reply.is_error { "rejected" } else { "call" },
            "tool": tool, "action": action, "front_end": "mcp", "run_id": reply.body["run_id"],
            "error": reply.body.get("error").cloned().unwrap_or(Value::Null),
        });
        if let Err(e) = engine
            .audit()
            .append(&engine.redactor().redact_value(&rec), false)
        {
            return Reply::error(
                "audit_unavailable",
                format!("{e}; the call was refused"),
                None,
                None,
            );
        }
    }
    reply.body = engine.redactor().redact_value(&reply.body);
    reply
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

/// The front end's own tools are checked against their input schemas (the registry's tools are checked by
/// the engine against each action's schema).
fn check_front_end_args(engine: &Engine, tool: &str, args: &Map<String, Value>) -> Option<Reply> {
    static V: OnceLock<Vec<(String, jsonschema::Validator)>> = OnceLock::new();
    let all = V.get_or_init(|| {
        tools(engine)
            .into_iter()
            .filter(|t| t.name == "runbook" || actions::find_tool(&t.name).is_none())
            .filter_map(|t| {
                jsonschema::draft202012::new(&t.input_schema)
                    .ok()
                    .map(|v| (t.name, v))
            })
            .collect()
    });
    let (_, v) = all.iter().find(|(n, _)| n == tool)?;
    let value = Value::Object(args.clone());
    let e = v.iter_errors(&value).next()?;
    let path = e.instance_path().as_str().to_owned();
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path
    };
    if path == "/action"
        && let jsonschema::error::ValidationErrorKind::Enum { options } = e.kind()
    {
        let given = args.get("action").and_then(Value::as_str).unwrap_or("");
        let names: Vec<&str> = options
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let hint = dsl::diagnostic::suggestion(given, names.iter().copied())
            .unwrap_or_else(|| format!("`{tool}` has actions: {}", names.join(", ")));
        return Some(Reply::error(
            "unknown_action",
            format!("`{tool}` has no action `{given}`"),
            Some(hint),
            Some(path),
        ));
    }
    Some(Reply::error(
        "invalid_args",
        format!("{}: {}", path, e.masked()),
        Some(format!(
            "`help {{tool: \"{tool}\"}}` shows what `{tool}` takes"
        )),
        Some(path),
    ))
}

fn diag_reply(diags: &[dsl::Diagnostic], strip: &str) -> Reply {
    let Some(d) = diags.iter().find(|d| d.is_error()) else {
        return Reply::error("invalid_args", "the call was not accepted", None, None);
    };
    let kind = match d.code {
        dsl::Code::UnknownAction => "unknown_action",
        dsl::Code::UnknownTool => "unknown_tool",
        dsl::Code::InvalidInput => "invalid_input",
        _ => "invalid_args",
    };
    let path = d
        .path
        .as_deref()
        .map(|p| p.strip_prefix(strip).unwrap_or(p).to_owned());
    let mut r = Reply::error(kind, d.message.clone(), d.help.clone(), path);
    r.body["error"]["diagnostics"] =
        Value::Array(diags.iter().map(dsl::Diagnostic::to_json).collect());
    r
}

fn registry_call(engine: &Engine, tool: &str, args: Map<String, Value>, cx: &CallCx<'_>) -> Reply {
    let plan = match engine::compile_call(
        tool,
        &Value::Object(args),
        &engine::CompileOptions::default(),
    ) {
        Ok(p) => p,
        Err(d) => return diag_reply(&d, "/steps/0/args"),
    };
    let outcome = engine.execute(&plan, Map::new(), &cx.options());
    let node = plan.nodes().next();
    let effects = plan.effects();
    let step = outcome.steps.first();
    let qualified = node.map(|n| n.action.qualified()).unwrap_or_default();
    let result = step.and_then(|s| s.result.clone()).unwrap_or(Value::Null);
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
    let mut links: Vec<String> = result
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
    budget(engine, &outcome, &mut body, &mut links);
    body["artifacts"] = links.iter().cloned().map(Value::String).collect();
    Reply {
        body,
        is_error: !ok,
        links,
    }
}

/// Keeps a result under [`RESULT_BUDGET`]. A larger one is written whole to an artifact (linked, and
/// named by `result_uri`), marked `truncated`, and cut in place: its long strings (stdout, bodies) and
/// long arrays (rows) are shortened until it fits, so every small field (exit code, status, URIs of the
/// output's own artifacts) stays where it was. A result that cannot be cut that way becomes an excerpt.
fn budget(engine: &Engine, outcome: &RunOutcome, body: &mut Value, links: &mut Vec<String>) {
    let text = body["result"].to_string();
    if text.len() <= RESULT_BUDGET {
        return;
    }
    let redactor = Arc::clone(engine.redactor());
    body["truncated"] = true.into();
    match artifacts::write_json(
        &outcome.dir,
        &outcome.uri_base,
        "result.json",
        &body["result"],
        redactor,
    ) {
        Ok(a) => {
            body["result_uri"] = a.uri.clone().into();
            body["result_bytes"] = text.len().into();
            links.push(a.uri.clone());
            if let Some(cut) = shrink(&body["result"], RESULT_BUDGET - 1024) {
                body["result"] = cut;
                return;
            }
            // the excerpt is a string inside the result, so it is escaped again: size it after escaping
            let room = RESULT_BUDGET - 2048;
            let mut cut = room.min(text.len());
            loop {
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                if serde_json::to_string(&text[..cut]).map_or(0, |e| e.len()) <= room {
                    break;
                }
                cut = cut * 9 / 10;
            }
            body["result"] = json!({"excerpt": &text[..cut], "bytes": text.len(), "uri": a.uri});
        }
        Err(e) => {
            body["result"] = json!({"excerpt": "", "error": format!("the result was too large and could not be stored: {e}")});
        }
    }
}

/// Keeps a front-end tool's own result (a journal, audit records, an artifact's bytes: data infra keeps
/// and can page through) under [`RESULT_BUDGET`], cut in place like a run's.
fn cut_front_end(body: &mut Value) {
    let len = body["result"].to_string().len();
    if len <= RESULT_BUDGET {
        return;
    }
    body["truncated"] = true.into();
    body["result_bytes"] = len.into();
    body["result"] = shrink(&body["result"], RESULT_BUDGET - 1024).unwrap_or_else(|| {
        json!({"excerpt": "", "bytes": len, "hint": "ask for less: a smaller `limit` or `max_bytes`"})
    });
}

/// `v` with strings cut to at most `cap` bytes and arrays to at most `items` elements (each cut says how
/// much it left out).
fn cut_to(v: &Value, cap: usize, items: usize) -> Value {
    match v {
        Value::String(s) if s.len() > cap => {
            let mut end = cap;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… [{} more bytes cut]", &s[..end], s.len() - end).into()
        }
        Value::Array(a) => {
            let mut out: Vec<Value> = a
                .iter()
                .take(items)
                .map(|x| cut_to(x, cap, items))
                .collect();
            if a.len() > items {
                out.push(format!("… [{} more items cut]", a.len() - items).into());
            }
            Value::Array(out)
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), cut_to(x, cap, items)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The largest cut of `v` (halving the caps each time) that fits `budget` bytes of JSON, if one does
/// while strings keep at least 128 bytes and arrays 4 items.
fn shrink(v: &Value, budget: usize) -> Option<Value> {
    if !v.is_object() && !v.is_array() {
        return None;
    }
    let (mut cap, mut items) = (budget / 2, 256usize);
    while cap >= 128 {
        let cut = cut_to(v, cap, items);
        if cut.to_string().len() <= budget {
            return Some(cut);
        }
        cap /= 2;
        items = (items / 2).max(4);
    }
    None
}

fn matches_query(q: &[String], fields: &[&str]) -> usize {
    let hay = fields.join(" ").to_lowercase();
    q.iter().filter(|t| hay.contains(t.as_str())).count()
}

fn help(engine: &Engine, args: &Map<String, Value>) -> Reply {
    let s = |k: &str| args.get(k).and_then(Value::as_str);
    if let Some(tool) = s("tool") {
        let Some(t) = actions::find_tool(tool) else {
            return Reply::error(
                "unknown_tool",
                format!("there is no tool `{tool}` with actions"),
                None,
                None,
            );
        };
        let body = match s("action") {
            Some(a) => match t.actions.iter().find(|x| x.name == a) {
                Some(spec) => {
                    json!({"tool": t.name, "action": a, "description": spec.description, "effects": spec.effect, "schema": spec.schema(), "example": {"tool": t.name, "args": (spec.example)()}})
                }
                None => {
                    return Reply::error(
                        "unknown_action",
                        format!("`{}` has no action `{a}`", t.name),
                        dsl::diagnostic::suggestion(a, t.actions.iter().map(|x| x.name)),
                        None,
                    );
                }
            },
            None => {
                json!({"tool": t.name, "description": t.description, "actions": t.actions.iter().map(|a| json!({"action": a.name, "description": a.description, "effects": a.effect})).collect::<Vec<_>>()})
            }
        };
        return ok_reply(format!("help for `{tool}`"), body);
    }
    let q: Vec<String> = s("query")
        .unwrap_or("")
        .to_lowercase()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut found_tools = Vec::new();
    for t in tools(engine) {
        let n = matches_query(&q, &[&t.name, &t.title, &t.description]);
        if q.is_empty() || n > 0 {
            found_tools.push((n, json!({"tool": t.name, "title": t.title})));
        }
    }
    let mut found_actions = Vec::new();
    for a in actions::all_actions().filter(|a| !a.unsafe_local || engine.config().unsafe_local) {
        let n = matches_query(&q, &[a.tool, a.name, a.title, a.description]);
        if n > 0 {
            found_actions.push((
                n,
                json!({"tool": a.tool, "action": a.name, "description": a.description}),
            ));
        }
    }
    let mut found_runbooks = Vec::new();
    for e in engine.catalog().entries() {
        let rb = &e.runbook;
        let tags = rb.tags.join(" ");
        let n = matches_query(
            &q,
            &[&rb.name, rb.description.as_deref().unwrap_or(""), &tags],
        );
        if q.is_empty() || n > 0 {
            found_runbooks.push((n, json!({"name": rb.name, "description": rb.description, "tags": rb.tags, "source": e.origin})));
        }
    }
    let best = |mut v: Vec<(usize, Value)>| -> Vec<Value> {
        v.sort_by_key(|x| std::cmp::Reverse(x.0));
        v.into_iter().take(10).map(|(_, x)| x).collect()
    };
    let mut found_targets = Vec::new();
    for t in engine::targets::Targets::load(&engine.config().profiles_dir).public() {
        let labels = t["labels"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let n = matches_query(
            &q,
            &[
                t["name"].as_str().unwrap_or(""),
                t["description"].as_str().unwrap_or(""),
                &labels,
            ],
        );
        if q.is_empty() || n > 0 {
            found_targets.push((n, json!({"name": t["name"], "labels": t["labels"]})));
        }
    }
    let body = json!({"tools": best(found_tools), "actions": best(found_actions), "runbooks": best(found_runbooks), "targets": best(found_targets),
        "next": "call help with {tool, action} for an action's schema and an example"});
    ok_reply(format!("matches for `{}`", q.join(" ")), body)
}

fn ok_reply(summary: String, result: Value) -> Reply {
    Reply {
        body: json!({"ok": true, "effects": "read", "summary": summary, "result": result}),
        is_error: false,
        links: Vec::new(),
    }
}

fn find_or_inline(engine: &Engine, args: &Map<String, Value>) -> Result<Arc<dsl::Runbook>, Reply> {
    match (
        args.get("name").and_then(Value::as_str),
        args.get("runbook"),
    ) {
        (Some(name), None) => engine
            .catalog()
            .get(name)
            .map(|e| e.runbook.clone())
            .ok_or_else(|| {
                Reply::error(
                    "not_found",
                    format!("there is no runbook `{name}`"),
                    dsl::diagnostic::suggestion(name, engine.catalog().names())
                        .or(Some("`runbook {action: list}` shows them".into())),
                    Some("/name".into()),
                )
            }),
        (name, Some(inline)) => {
            let text = serde_json::to_string_pretty(inline).unwrap_or_default();
            let file = dsl::SourceFile::new("<inline runbook>", text);
            let loaded = dsl::load(&file, Some(name.unwrap_or("inline")));
            if loaded.has_errors() {
                return Err(diag_reply(&loaded.diagnostics, ""));
            }
            loaded
                .runbooks
                .into_iter()
                .next()
                .map(Arc::new)
                .ok_or_else(|| {
                    Reply::error(
                        "invalid_args",
                        "the inline runbook is empty",
                        None,
                        Some("/runbook".into()),
                    )
                })
        }
        _ => Err(Reply::error(
            "invalid_args",
            "give `name` or an inline `runbook`",
            None,
            Some("/name".into()),
        )),
    }
}

fn runbook(engine: &Engine, action: &str, args: &Map<String, Value>, cx: &CallCx<'_>) -> Reply {
    let catalog = engine.catalog();
    let opts = engine::CompileOptions {
        resolver: Some(&*catalog),
        stack: Vec::new(),
    };
    match action {
        "list" => {
            let q: Vec<String> = args
                .get("query")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            let tags: Vec<&str> = args
                .get("tags")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(20) as usize;
            let mut items = Vec::new();
            for e in engine.catalog().entries() {
                let rb = &e.runbook;
                let t = rb.tags.join(" ");
                if (!q.is_empty()
                    && matches_query(&q, &[&rb.name, rb.description.as_deref().unwrap_or(""), &t])
                        == 0)
                    || !tags.iter().all(|x| rb.tags.iter().any(|y| y == x))
                {
                    continue;
                }
                let effects = rb
                    .effects
                    .map(|(e, _)| e)
                    .or_else(|| engine::compile(rb.clone(), &opts).ok().map(|p| p.effects()));
                let mut item = json!({"name": rb.name, "description": rb.description, "tags": rb.tags, "source": e.origin, "effects": effects, "digest": rb.digest});
                if let Some(o) = e.overrides {
                    item["overrides"] = json!(o);
                }
                items.push(item);
            }
            let total = items.len();
            items.truncate(limit);
            ok_reply(
                format!("{} of {total} runbooks", items.len()),
                json!({"runbooks": items, "total": total}),
            )
        }
        "get" => match find_or_inline(engine, args) {
            Ok(rb) => {
                let mut body = json!({"name": rb.name, "source": rb.file.name(), "digest": rb.digest, "runbook": rb.raw, "input_schema": rb.input_schema()});
                // a runbook from the catalog says where it came from and what it replaced
                let catalog = engine.catalog();
                if args.get("runbook").is_none()
                    && let Some(e) = catalog.get(&rb.name)
                {
                    body["origin"] = json!(e.origin);
                    if let Some(o) = e.overrides {
                        body["overrides"] = json!(o);
                    }
                }
                let summary = match body.get("overrides") {
                    Some(o) => format!(
                        "runbook `{}` (overrides the {} one)",
                        rb.name,
                        o.as_str().unwrap_or("")
                    ),
                    None => format!("runbook `{}`", rb.name),
                };
                ok_reply(summary, body)
            }
            Err(r) => r,
        },
        "validate" => match find_or_inline(engine, args) {
            Ok(rb) => match engine::compile(rb.clone(), &opts) {
                Ok(p) => ok_reply(
                    format!("`{}` is valid", rb.name),
                    json!({"valid": true, "effects": p.effects(), "diagnostics": p.warnings().iter().map(dsl::Diagnostic::to_json).collect::<Vec<_>>()}),
                ),
                Err(d) => {
                    let mut r = diag_reply(&d, "");
                    r.body["result"] = json!({"valid": false, "diagnostics": d.iter().map(dsl::Diagnostic::to_json).collect::<Vec<_>>()});
                    r
                }
            },
            Err(r) => r,
        },
        "plan" | "graph" | "run" => {
            let rb = match find_or_inline(engine, args) {
                Ok(rb) => rb,
                Err(r) => return r,
            };
            let plan = match engine::compile(rb.clone(), &opts) {
                Ok(p) => p,
                Err(d) => return diag_reply(&d, ""),
            };
            if action == "graph" {
                return ok_reply(
                    format!("graph of `{}`", rb.name),
                    json!({"mermaid": plan.to_mermaid()}),
                );
            }
            let given = args
                .get("input")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let inputs = match dsl::resolve_inputs(&rb, &given) {
                Ok(i) => i,
                Err(d) => return diag_reply(&d, ""),
            };
            if action == "plan" || args.get("dry_run").and_then(Value::as_bool) == Some(true) {
                return match plan.render(&inputs) {
                    Ok(r) => ok_reply(
                        format!("plan of `{}`, effects {}", rb.name, plan.effects()),
                        r.json,
                    ),
                    Err(d) => diag_reply(&d, ""),
                };
            }
            let outcome = engine.execute(&plan, inputs, &cx.options());
            let steps: Vec<Value> = outcome
                .steps
                .iter()
                .map(|s| json!({"id": s.id, "status": s.status, "duration_ms": s.duration_ms, "error": s.error.as_ref().map(|e| e.to_json()), "reason": s.reason}))
                .collect();
            let ok = outcome.ok();
            let mut body = json!({
                "ok": ok, "effects": plan.effects(),
                "summary": format!("{} {:?} in {} ms", rb.name, outcome.status, outcome.duration_ms).to_lowercase(),
                "result": {"status": outcome.status, "outputs": outcome.outputs, "steps": steps, "evidence": outcome.uri_base},
                "run_id": outcome.run_id,
            });
            if let Some(e) = &outcome.error {
                body["error"] = json!({"kind": e.kind, "message": e.message});
            }
            let mut links = Vec::new();
            budget(engine, &outcome, &mut body, &mut links);
            body["artifacts"] = links.iter().cloned().map(Value::String).collect();
            Reply {
                body,
                is_error: !ok,
                links,
            }
        }
        "upsert" => upsert(engine, args),
        "delete" => delete(engine, args),
        other => Reply::error(
            "unknown_action",
            format!("`runbook` has no action `{other}`"),
            dsl::diagnostic::suggestion(other, ["list", "get", "run", "plan", "validate", "graph"]),
            Some("/action".into()),
        ),
    }
}

fn artifacts_tool(engine: &Engine, action: &str, args: &Map<String, Value>) -> Reply {
    let root = &engine.config().artifacts_root;
    let uri = args.get("uri").and_then(Value::as_str).unwrap_or("");
    let max = args
        .get("max_bytes")
        .and_then(Value::as_u64)
        .unwrap_or(4096);
    let read = |from: From| match artifacts::read(root, uri, from, max, engine.redactor()) {
        Ok(v) => {
            let mut r = ok_reply(format!("{} of {} bytes", v["bytes"], v["total_bytes"]), v);
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
            Ok(v) => ok_reply(format!("{} artifacts", v.len()), json!({"artifacts": v})),
            Err(e) => Reply::error("failed", e.to_string(), None, None),
        },
        "get" | "head" => read(From::Offset(
            args.get("offset").and_then(Value::as_u64).unwrap_or(0),
        )),
        "tail" => read(From::Tail),
        other => unknown_action("artifacts", other),
    }
}

/// An action a front-end tool does not have (its schema check normally answers first).
fn unknown_action(tool: &str, action: &str) -> Reply {
    Reply::error(
        "unknown_action",
        format!("`{tool}` has no action `{action}`"),
        None,
        Some("/action".into()),
    )
}

fn audit_tool(engine: &Engine, action: &str, args: &Map<String, Value>) -> Reply {
    match action {
        "tail" => match engine
            .audit()
            .tail(args.get("limit").and_then(Value::as_u64).unwrap_or(20) as usize)
        {
            Ok(v) => ok_reply(format!("{} records", v.len()), json!({"records": v})),
            Err(e) => Reply::error("failed", e.to_string(), None, None),
        },
        "checkpoint" => match engine.audit_checkpoint() {
            Ok(head) => ok_reply(
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
            audit_verify(engine, checkpoint)
        }
        other => unknown_action("audit", other),
    }
}

fn audit_verify(engine: &Engine, checkpoint: Option<engine::record::audit::Head>) -> Reply {
    match engine.verify_audit(checkpoint) {
        Ok(v) => ok_reply(
            match &v.problem {
                None => format!("{} records, chain intact", v.records),
                Some(p) => format!("the log is broken at record {}", p.seq),
            },
            v.to_json(),
        ),
        Err(e) => Reply::error("failed", e.to_string(), None, None),
    }
}

fn evidence_tool(engine: &Engine, action: &str, args: &Map<String, Value>) -> Reply {
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
                    ok_reply(format!("{} runs", runs.len()), json!({"runs": runs}))
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
                    ok_reply(
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
        other => unknown_action("evidence", other),
    }
}

/// What kind of project the working directory is: git, Kubernetes manifests, Flux or Argo CD markers.
fn context_tool(engine: &Engine, action: &str, args: &Map<String, Value>) -> Reply {
    if action == "targets" {
        let t = engine::targets::Targets::load(&engine.config().profiles_dir);
        if !t.diagnostics.is_empty() {
            let mut r = diag_reply(&t.diagnostics, "");
            r.body["error"]["hint"] =
                "fix the targets file (`targets.json` or `targets.yaml` in the profiles directory)"
                    .into();
            return r;
        }
        let list = t.public();
        return ok_reply(format!("{} targets", list.len()), json!({"targets": list}));
    }
    if action != "get" {
        return Reply::error(
            "unknown_action",
            format!("`context` has no action `{action}`"),
            Some("use `get`".into()),
            Some("/action".into()),
        );
    }
    let path = std::path::PathBuf::from(args.get("path").and_then(Value::as_str).unwrap_or("."));
    let repo = engine::git::status(&path)
        .ok()
        .map(|s| json!({"root": s["root"], "branch": s["branch"], "clean": s["clean"]}));
    let root = repo
        .as_ref()
        .and_then(|r| r["root"].as_str().map(std::path::PathBuf::from))
        .unwrap_or_else(|| path.clone());
    let mut markers = Vec::new();
    let mut stack = vec![(root.clone(), 0usize)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > 20_000 {
                break;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if p.is_dir() {
                if depth < 4 && !name.starts_with('.') && name != "target" && name != "node_modules"
                {
                    if name == "flux-system" {
                        markers.push("flux");
                    }
                    stack.push((p, depth + 1));
                }
                continue;
            }
            match name.as_str() {
                "kustomization.yaml" | "kustomization.yml" => markers.push("kustomize"),
                "Chart.yaml" => markers.push("helm"),
                "gotk-components.yaml" => markers.push("flux"),
                "Cargo.toml" => markers.push("rust"),
                "package.json" => markers.push("node"),
                "go.mod" => markers.push("go"),
                "pyproject.toml" | "requirements.txt" => markers.push("python"),
                "Dockerfile" => markers.push("docker"),
                _ if name.ends_with(".yaml") && depth < 3 => {
                    if let Ok(text) = std::fs::read_to_string(&p) {
                        if text.contains("kind: Application") && text.contains("argoproj.io") {
                            markers.push("argocd");
                        } else if text.contains("apiVersion:") && text.contains("kind:") {
                            markers.push("k8s");
                        }
                    }
                }
                _ => {}
            }
        }
    }
    markers.sort_unstable();
    markers.dedup();
    ok_reply(
        format!(
            "{} ({})",
            root.display(),
            if markers.is_empty() {
                "no markers".to_owned()
            } else {
                markers.join(", ")
            }
        ),
        json!({"path": root, "repo": repo, "markers": markers, "profiles_dir": engine.config().profiles_dir, "unsafe_local": engine.config().unsafe_local}),
    )
}

/// Where `runbook upsert` writes: `MCP_RUNBOOKS_PATH` when it is a directory, else `<profiles>/runbooks`.
fn project_runbooks_dir(engine: &Engine) -> std::path::PathBuf {
    match &engine.config().runbooks_path {
        Some(p) if p.is_dir() => p.clone(),
        _ => engine.config().profiles_dir.join("runbooks"),
    }
}

fn upsert(engine: &Engine, args: &Map<String, Value>) -> Reply {
    let Some(name) = args.get("name").and_then(Value::as_str) else {
        return Reply::error(
            "invalid_args",
            "`upsert` needs `name`",
            None,
            Some("/name".into()),
        );
    };
    let Some(Value::Object(body)) = args.get("runbook") else {
        return Reply::error(
            "invalid_args",
            "`upsert` needs `runbook` (an object)",
            None,
            Some("/runbook".into()),
        );
    };
    let replaces_builtin = engine.catalog().is_builtin_name(name);
    if replaces_builtin && args.get("override").and_then(Value::as_bool) != Some(true) {
        return Reply::error(
            "refused",
            format!(
                "`{name}` is a built-in runbook; saving this one would replace it for every run of `{name}`, and nothing was written"
            ),
            Some(format!(
                "to replace the built-in, call `upsert` again with `override: true` (`delete` of `{name}` restores it); otherwise choose another name"
            )),
            Some("/name".into()),
        );
    }
    let mut body = body.clone();
    body.shift_remove("name");
    let mut doc = Map::new();
    doc.insert("name".into(), name.into());
    doc.extend(body);
    let text = serde_json::to_string_pretty(&Value::Object(doc)).unwrap_or_default() + "\n";
    // check everything before anything is written
    let file = dsl::SourceFile::new(format!("<upsert {name}>"), text.clone());
    let loaded = dsl::load(&file, Some(name));
    if loaded.has_errors() {
        return diag_reply(&loaded.diagnostics, "");
    }
    let Some(rb) = loaded.runbooks.into_iter().next() else {
        return Reply::error(
            "invalid_args",
            "the runbook is empty",
            None,
            Some("/runbook".into()),
        );
    };
    let catalog = engine.catalog();
    let opts = engine::CompileOptions {
        resolver: Some(&*catalog),
        stack: Vec::new(),
    };
    let plan = match engine::compile(Arc::new(rb), &opts) {
        Ok(p) => p,
        Err(d) => return diag_reply(&d, ""),
    };
    if engine
        .config()
        .runbooks_path
        .as_ref()
        .is_some_and(|p| !p.is_dir())
    {
        return Reply::error(
            "refused",
            "MCP_RUNBOOKS_PATH names a file: runbooks are read only from it, so an upserted runbook would not be found",
            Some("point MCP_RUNBOOKS_PATH at a directory, or unset it".into()),
            None,
        );
    }
    let dir = project_runbooks_dir(engine);
    let path = dir.join(format!("{name}.json"));
    let tmp = dir.join(format!(".{name}.json.infra-tmp"));
    if let Some(refused) = intent(engine, "upsert", name, &path) {
        return refused;
    }
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&tmp, &text))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Reply::error(
            "failed",
            format!("cannot write `{}`: {e}", path.display()),
            None,
            None,
        );
    }
    engine.reload_catalog();
    let mut r = ok_reply(
        format!(
            "runbook `{name}` saved ({} steps, effects {})",
            plan.len(),
            plan.effects()
        ),
        json!({"name": name, "path": path, "effects": plan.effects(), "digest": plan.runbook().digest}),
    );
    if replaces_builtin {
        r.body["result"]["overrides"] = "builtin".into();
        r.body["summary"] = format!(
            "{}; it overrides the built-in `{name}`",
            r.body["summary"].as_str().unwrap_or("")
        )
        .into();
    }
    r.body["effects"] = "write".into();
    r
}

/// The audit intent of a front-end write (a project runbook file), fsync'd before the write; `Some` is the
/// refusal when it cannot be written.
fn intent(engine: &Engine, action: &str, name: &str, path: &std::path::Path) -> Option<Reply> {
    let rec = json!({"kind": "intent", "tool": "runbook", "action": action, "front_end": "mcp",
        "effect": "write", "args": {"name": name, "path": path}});
    engine.audit().append(&rec, true).err().map(|e| {
        Reply::error(
            "audit_unavailable",
            format!("{e}; nothing was written"),
            None,
            None,
        )
    })
}

fn delete(engine: &Engine, args: &Map<String, Value>) -> Reply {
    let Some(name) = args.get("name").and_then(Value::as_str) else {
        return Reply::error(
            "invalid_args",
            "`delete` needs `name`",
            None,
            Some("/name".into()),
        );
    };
    let catalog = engine.catalog();
    let Some(entry) = catalog.get(name) else {
        return Reply::error(
            "not_found",
            format!("there is no runbook `{name}`"),
            None,
            Some("/name".into()),
        );
    };
    if entry.origin == engine::Origin::Builtin {
        return Reply::error(
            "refused",
            format!("`{name}` is built in; only project runbooks can be deleted"),
            None,
            Some("/name".into()),
        );
    }
    let path = std::path::PathBuf::from(entry.runbook.file.name());
    let own_file = path.file_stem().and_then(|s| s.to_str()) == Some(name)
        && path
            .parent()
            .is_some_and(|p| p == project_runbooks_dir(engine));
    if !own_file {
        return Reply::error(
            "refused",
            format!(
                "`{name}` lives in `{}` with other runbooks; edit that file instead",
                path.display()
            ),
            None,
            Some("/name".into()),
        );
    }
    if let Some(refused) = intent(engine, "delete", name, &path) {
        return refused;
    }
    if let Err(e) = std::fs::remove_file(&path) {
        return Reply::error(
            "failed",
            format!("cannot delete `{}`: {e}", path.display()),
            None,
            None,
        );
    }
    let restores = entry.overrides;
    engine.reload_catalog();
    let mut r = ok_reply(
        format!("runbook `{name}` deleted"),
        json!({"name": name, "path": path}),
    );
    if restores == Some(engine::Origin::Builtin) {
        r.body["result"]["restores"] = "builtin".into();
        r.body["summary"] =
            format!("runbook `{name}` deleted; the built-in `{name}` is used again").into();
    }
    r.body["effects"] = "write".into();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_result_is_cut_in_place() {
        let rows: Vec<Value> = (0..5000)
            .map(|i| json!({"n": i, "name": format!("row {i}")}))
            .collect();
        let v = json!({"exit_code": 0, "stdout": "x".repeat(200_000), "stdout_uri": "artifact://runs/a/b/c/stdout", "rows": rows});
        let cut = shrink(&v, RESULT_BUDGET - 1024).expect("fits");
        assert!(cut.to_string().len() <= RESULT_BUDGET - 1024);
        assert_eq!(cut["exit_code"], 0);
        assert_eq!(cut["stdout_uri"], "artifact://runs/a/b/c/stdout");
        let out = cut["stdout"].as_str().expect("stdout");
        assert!(
            out.starts_with("xxx") && out.ends_with("more bytes cut]"),
            "{out:.40}"
        );
        let kept = cut["rows"].as_array().expect("rows");
        assert_eq!(kept[0], json!({"n": 0, "name": "row 0"}));
        assert!(
            kept.last()
                .and_then(Value::as_str)
                .is_some_and(|s| s.contains("more items"))
        );
        // a lone string cannot be cut in place
        assert!(shrink(&json!("y".repeat(100_000)), 1000).is_none());
    }
}
