//! `runbook`: the catalog's runbooks and inline ones: `list`, `get`, `validate`, `plan`, `graph`, `run`,
//! `resume` (of a failed run: `run_id`, `from`, `force`, secret `input`s again; `Engine::resume`, whose
//! refusals come back as errors naming their `rule`), and `upsert` and `delete` of project runbook
//! files.
//!
//! `plan` and `run` take the catalog's runbook or an inline one (loaded from its JSON by `dsl::load`),
//! compile it with the catalog as resolver and resolve its inputs; `plan` (or `run` with `dry_run`)
//! renders it, `run` executes it with the call's cancel token and progress, and its result is budgeted
//! by `catalogue::call` like a registry call's; a failed run reads as one error (`one_error`). `upsert`
//! and `delete` write only after an fsync'd audit `intent` (refused if it cannot be written), then
//! reload the engine's catalog.

use std::sync::Arc;

use engine::run::{Engine, RunOptions};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::help::matches_query;
use crate::mcp::reply::Reply;
use crate::mcp::schema::{ToolParams, opt_u64};

/// What `runbook` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    pub action: Action,
    /// A runbook of the catalog (`upsert`, `delete`: of the project).
    pub name: Option<String>,
    /// An inline runbook (the same keys as a runbook file).
    pub runbook: Option<Map<String, Value>>,
    /// The runbook's inputs (`plan`, `run`).
    pub input: Option<Map<String, Value>>,
    /// `list`: words to look for in names, descriptions and tags.
    pub query: Option<String>,
    /// `list`: only runbooks with all of these tags.
    pub tags: Option<Vec<String>>,
    /// `list`: at most this many (20 by default).
    #[serde(default, deserialize_with = "opt_u64")]
    #[schemars(range(min = 1))]
    pub limit: Option<u64>,
    /// `run`: render the plan instead, running nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// `resume`: its id (or a prefix).
    pub run_id: Option<String>,
    /// `resume`: re-run from this step.
    pub from: Option<String>,
    /// `resume` a changed runbook.
    #[serde(default)]
    pub force: bool,
    /// `upsert` of a built-in's name: replace the built-in with this project runbook.
    #[serde(default, rename = "override")]
    pub override_builtin: bool,
    /// `run` as a job: returns its `job_id` at once. `catalogue::call` takes it before the parameters
    /// are read, as it does for every tool.
    #[serde(default, rename = "async")]
    #[expect(
        dead_code,
        reason = "listed; taken off the arguments before they are read"
    )]
    pub in_background: bool,
}

/// What `runbook` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    List,
    Get,
    Run,
    Plan,
    Validate,
    Graph,
    Upsert,
    Delete,
    Resume,
}

impl ToolParams for Params {
    const TOOL: &'static str = "runbook";
}

/// The runbook a call names (`name`, from the catalog) or gives inline (`runbook`, loaded from its JSON).
fn find_or_inline(engine: &Engine, p: &Params) -> Result<Arc<dsl::Runbook>, Reply> {
    use engine::request::Which;
    let inline = p.runbook.clone().map(Value::Object);
    let which = match (p.name.as_deref(), inline.as_ref()) {
        (Some(name), None) => Which::Name(name),
        (name, Some(inline)) => Which::Inline(inline, name),
        _ => {
            return Err(Reply::error(
                "invalid_args",
                "give `name` or an inline `runbook`",
                None,
                Some("/name".into()),
            ));
        }
    };
    engine::request::find(&engine.catalog(), which).map_err(|d| match (which, d.first()) {
        // an unknown name is the call's own mistake, pointed at its `name`
        (Which::Name(name), Some(first)) if first.code == dsl::Code::UnknownRunbook => {
            if let Some((_, file, diags)) = broken(&engine.catalog())
                .into_iter()
                .find(|(n, _, _)| n == name)
            {
                // the runbook is there but does not load: say where and why
                let mut r = Reply::diagnostics(&diags, "");
                r.body["error"]["message"] = format!(
                    "runbook `{name}` in `{file}` has errors: {}",
                    diags[0].message
                )
                .into();
                return r;
            }
            Reply::error(
                "not_found",
                first.message.clone(),
                dsl::diagnostic::suggestion(name, engine.catalog().names())
                    .or(Some("`runbook {action: list}` shows them".into())),
                Some("/name".into()),
            )
        }
        _ => Reply::diagnostics(&d, ""),
    })
}

/// Project runbook files that did not load, by the name their file gives (`deploy` for
/// `runbooks/deploy.yaml`), with their file and diagnostics: a broken runbook is shown, not dropped.
fn broken(catalog: &engine::Catalog) -> Vec<(String, String, Vec<dsl::Diagnostic>)> {
    let mut out: Vec<(String, String, Vec<dsl::Diagnostic>)> = Vec::new();
    for d in catalog.diagnostics().iter().filter(|d| d.is_error()) {
        let Some(file) = d.file.as_ref().map(dsl::SourceFile::name) else {
            continue;
        };
        match out.iter_mut().find(|(_, f, _)| f == file) {
            Some((_, _, ds)) => ds.push(d.clone()),
            None => {
                let name = std::path::Path::new(file)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or(file)
                    .to_owned();
                out.push((name, file.to_owned(), vec![d.clone()]));
            }
        }
    }
    out
}

/// Runs one `runbook` action; `options` (the call's cancel token and progress) are used by `run`.
pub fn call(engine: &Engine, p: &Params, options: &RunOptions<'_>) -> Reply {
    let catalog = engine.catalog();
    match p.action {
        Action::List => {
            let q = super::help::query_words(p.query.as_deref());
            let tags = p.tags.as_deref().unwrap_or_default();
            let limit = p.limit.unwrap_or(20) as usize;
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
                let effects = rb.effects.map(|(e, _)| e).or_else(|| {
                    engine::request::compile(&catalog, rb)
                        .ok()
                        .map(|p| p.effects())
                });
                let mut item = json!({"name": rb.name, "description": rb.description, "tags": rb.tags, "source": e.origin, "effects": effects, "digest": rb.digest});
                if let Some(o) = e.overrides {
                    item["overrides"] = json!(o);
                }
                // the runbooks whose names hold the query's words come first
                items.push((matches_query(&q, &[&rb.name]), item));
            }
            items.sort_by_key(|(in_name, _)| std::cmp::Reverse(*in_name));
            let mut items: Vec<Value> = items.into_iter().map(|(_, item)| item).collect();
            if tags.is_empty() {
                for (name, file, diags) in broken(&catalog) {
                    if q.is_empty() || matches_query(&q, &[&name, &file]) > 0 {
                        items.push(json!({
                            "name": name, "description": null, "tags": [], "source": "project",
                            "effects": null, "file": file, "broken": true,
                            "diagnostics": diags.iter().map(dsl::Diagnostic::to_json).collect::<Vec<_>>(),
                        }));
                    }
                }
            }
            let total = items.len();
            items.truncate(limit);
            Reply::ok(
                format!("{} of {total} runbooks", items.len()),
                json!({"runbooks": items, "total": total}),
            )
        }
        Action::Get => match find_or_inline(engine, p) {
            Ok(rb) => {
                let mut body = json!({"name": rb.name, "source": rb.file.name(), "digest": rb.digest, "runbook": rb.raw, "input_schema": rb.input_schema()});
                // a runbook from the catalog says where it came from and what it replaced
                let catalog = engine.catalog();
                if p.runbook.is_none()
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
                Reply::ok(summary, body)
            }
            Err(r) => r,
        },
        Action::Validate => match find_or_inline(engine, p) {
            Ok(rb) => match engine::request::compile(&catalog, &rb) {
                Ok(p) => Reply::ok(
                    format!("`{}` is valid", rb.name),
                    json!({"valid": true, "effects": p.effects(), "diagnostics": p.warnings().iter().map(dsl::Diagnostic::to_json).collect::<Vec<_>>()}),
                ),
                Err(d) => {
                    let mut r = Reply::diagnostics(&d, "");
                    r.body["result"] = json!({"valid": false, "diagnostics": d.iter().map(dsl::Diagnostic::to_json).collect::<Vec<_>>()});
                    r
                }
            },
            Err(r) => r,
        },
        Action::Plan | Action::Graph | Action::Run => {
            let rb = match find_or_inline(engine, p) {
                Ok(rb) => rb,
                Err(r) => return r,
            };
            let plan = match engine::request::compile(&catalog, &rb) {
                Ok(p) => p,
                Err(d) => return Reply::diagnostics(&d, ""),
            };
            if p.action == Action::Graph {
                return Reply::ok(
                    format!("graph of `{}`", rb.name),
                    json!({"mermaid": plan.to_mermaid()}),
                );
            }
            let given = p.input.clone().unwrap_or_default();
            let inputs = match dsl::resolve_inputs(&rb, &given) {
                Ok(i) => i,
                Err(d) => return Reply::diagnostics(&d, ""),
            };
            if p.action == Action::Plan || p.dry_run {
                return match plan.render(&inputs) {
                    Ok(r) => Reply::ok(
                        format!("plan of `{}`, effects {}", rb.name, plan.effects()),
                        r.json,
                    ),
                    Err(d) => Reply::diagnostics(&d, ""),
                };
            }
            run_reply(engine.execute(&plan, inputs, options))
        }
        Action::Resume => {
            let Some(run) = p.run_id.as_deref() else {
                return Reply::error(
                    "invalid_args",
                    "`resume` needs `run_id` (a failed run's id, or a unique prefix of it)",
                    Some("`evidence {action: list}` shows the runs".into()),
                    Some("/run_id".into()),
                );
            };
            let req = engine::run::ResumeRequest {
                run,
                from: p.from.as_deref(),
                force: p.force,
                given: p.input.clone().unwrap_or_default(),
                text_inputs: false,
                front_end: "mcp",
            };
            match engine.resume(&req, options) {
                Ok(outcome) => run_reply(outcome),
                Err(r) => {
                    let mut reply = Reply::error(r.kind, r.message, r.hint, None);
                    reply.body["error"]["rule"] = r.rule.into();
                    if let Some(id) = r.run_id {
                        reply.body["error"]["resumed_from"] = id.into();
                    }
                    reply
                }
            }
        }
        Action::Upsert => upsert(engine, p),
        Action::Delete => delete(engine, p),
    }
}

/// A run's outcome as a reply (`run`, `resume`).
fn run_reply(outcome: engine::run::RunOutcome) -> Reply {
    let ok = outcome.ok();
    let (steps, outputs, unavailable) = one_error(&outcome, ok);
    let mut body = json!({
        "ok": ok, "effects": outcome.effects,
        "summary": format!("{} {:?} in {} ms", outcome.runbook, outcome.status, outcome.duration_ms).to_lowercase(),
        "result": {"status": outcome.status, "outputs": outputs, "steps": steps, "evidence": outcome.uri_base},
        "run_id": outcome.run_id,
    });
    if !unavailable.is_empty() {
        body["result"]["outputs_unavailable"] = unavailable.into();
    }
    if let Some(a) = &outcome.approval {
        body["result"]["approval"] = a.clone();
    }
    if let Some(from) = &outcome.resumed_from {
        body["result"]["resumed_from"] = from.clone().into();
    }
    if let Some(e) = &outcome.error {
        body["error"] = json!({"kind": e.kind, "message": e.message});
    }
    Reply::of_run(body, ok, Vec::new(), &outcome)
}

/// A run's steps and outputs as a reply shows them, so a failure reads as one error: a step that failed
/// with the same message as an earlier one says `same_as` that step, and when the run failed, the outputs
/// that could not be rendered (they read what a failed step never produced) are left out and named in
/// the third list instead.
fn one_error(outcome: &engine::run::RunOutcome, ok: bool) -> (Vec<Value>, Value, Vec<String>) {
    let mut seen: Vec<(String, String)> = Vec::new();
    let steps = outcome
        .steps
        .iter()
        .map(|s| {
            let mut error = s.error.as_ref().map(|e| e.to_json());
            if let Some(e) = &s.error {
                match seen.iter().find(|(_, m)| *m == e.message) {
                    Some((first, _)) => error = Some(json!({"kind": e.kind, "same_as": first})),
                    None => seen.push((s.id.to_string(), e.message.clone())),
                }
            }
            json!({"id": s.id, "status": s.status, "duration_ms": s.duration_ms, "error": error, "reason": s.reason})
        })
        .collect();
    let mut outputs = outcome.outputs.clone();
    let mut unavailable = Vec::new();
    if let (false, Value::Object(o)) = (ok, &mut outputs) {
        o.retain(|k, v| {
            let failed = v.get("error").is_some() && v.as_object().is_some_and(|m| m.len() == 1);
            if failed {
                unavailable.push(k.clone());
            }
            !failed
        });
    }
    (steps, outputs, unavailable)
}

/// Checks a runbook completely (load, compile), then saves it as `<name>.json` among the project's
/// runbooks, through a temporary file and a rename; a built-in's name needs `override: true`.
fn upsert(engine: &Engine, p: &Params) -> Reply {
    let Some(name) = p.name.as_deref() else {
        return Reply::error(
            "invalid_args",
            "`upsert` needs `name`",
            None,
            Some("/name".into()),
        );
    };
    let Some(body) = &p.runbook else {
        return Reply::error(
            "invalid_args",
            "`upsert` needs `runbook` (an object)",
            None,
            Some("/runbook".into()),
        );
    };
    let replaces_builtin = engine.catalog().is_builtin_name(name);
    if replaces_builtin && !p.override_builtin {
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
        return Reply::diagnostics(&loaded.diagnostics, "");
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
        Err(d) => return Reply::diagnostics(&d, ""),
    };
    let path = match engine.save_runbook(name, &text, "mcp") {
        Ok(path) => path,
        Err(e) => return write_refused(e),
    };
    let mut r = Reply::ok(
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

/// A project runbook file that was not written or removed, as a reply; nothing was changed.
fn write_refused(e: engine::catalog::WriteError) -> Reply {
    use engine::catalog::WriteError;
    match e {
        WriteError::RunbooksPathIsAFile => Reply::error(
            "refused",
            e.to_string(),
            Some("point MCP_RUNBOOKS_PATH at a directory, or unset it".into()),
            None,
        ),
        WriteError::Audit(a) => Reply::error(
            "audit_unavailable",
            format!("{a}; nothing was written"),
            None,
            None,
        ),
        WriteError::Io { .. } => Reply::error("failed", e.to_string(), None, None),
        WriteError::ReadOnly(m) => Reply::error("refused", m, None, None),
    }
}

/// Deletes a project runbook that is alone in its own file; a built-in it replaced is used again.
fn delete(engine: &Engine, p: &Params) -> Reply {
    let Some(name) = p.name.as_deref() else {
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
            .is_some_and(|p| p == engine::catalog::project_dir(engine.config()));
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
    let restores = entry.overrides;
    if let Err(e) = engine.delete_runbook(name, &path, "mcp") {
        return write_refused(e);
    }
    let mut r = Reply::ok(
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
