//! `intent`: ask for an outcome, not a runbook. `explain` (the capability chosen here, why, and the
//! resolved inputs with where each came from), `compile` (every step of every runbook, rendered, with
//! effects and digest; missing inputs listed), `dry_run` (compile + what would be read and changed),
//! `execute` (a `write` intent needs `apply: true`, an irreversible one `confirm: true` as well; one run
//! with nested runs, its evidence under `artifact://runs/intent.<type>/…`). The capability actions are
//! here too (listed once for the tool budget; the unlisted `capability` tool is the same): `list`,
//! `get`, `resolve` (which capability, and why), `suggest` (what applies in this project, best first).
//! `intent` is a type name or the original's object `{type, inputs, apply, target, capability}`.

use std::path::PathBuf;

use engine::intent::{Ask, IntentError};
use engine::run::{Engine, RunOptions};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::help::{matches_query, query_words};
use crate::mcp::reply::Reply;
use crate::mcp::schema::ToolParams;

/// What `intent` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    pub action: Action,
    /// The intent type (`repo.snapshot`), or `{type, inputs, apply, target, capability}`.
    pub intent: Option<IntentArg>,
    /// Pick this capability (`get`: the one shown).
    pub capability: Option<String>,
    /// Explicit inputs (they win over `map` and `defaults`).
    pub inputs: Option<Map<String, Value>>,
    /// A target by name, read by `map` as `target.*`.
    pub target: Option<String>,
    /// The project directory (default: the working directory).
    pub repo_root: Option<String>,
    /// `execute` of a `write` intent.
    #[serde(default)]
    pub apply: bool,
    /// `execute` of an irreversible intent (with `apply`).
    #[serde(default)]
    pub confirm: bool,
    /// `list`: words to look for.
    pub query: Option<String>,
}

/// An intent by type name, or the original's object form.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum IntentArg {
    Name(String),
    Object(IntentObject),
}

/// The original's `intent` object.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntentObject {
    #[serde(rename = "type")]
    pub ty: String,
    pub inputs: Option<Map<String, Value>>,
    pub apply: Option<bool>,
    pub confirm: Option<bool>,
    pub target: Option<String>,
    pub capability: Option<String>,
    pub repo_root: Option<String>,
}

/// What `intent` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    List,
    Get,
    Explain,
    Compile,
    DryRun,
    Execute,
    Resolve,
    Suggest,
}

impl ToolParams for Params {
    const TOOL: &'static str = "intent";
}

/// The call's question in the engine's terms: the object form's fields, the flat ones winning.
fn ask(p: &Params) -> Ask {
    let (ty, obj) = match &p.intent {
        Some(IntentArg::Name(n)) => (n.clone(), None),
        Some(IntentArg::Object(o)) => (o.ty.clone(), Some(o)),
        None => (String::new(), None),
    };
    let mut inputs = obj.and_then(|o| o.inputs.clone()).unwrap_or_default();
    inputs.extend(p.inputs.clone().unwrap_or_default());
    Ask {
        intent: ty,
        capability: p
            .capability
            .clone()
            .or_else(|| obj.and_then(|o| o.capability.clone())),
        inputs,
        target: p
            .target
            .clone()
            .or_else(|| obj.and_then(|o| o.target.clone())),
        repo_root: p
            .repo_root
            .clone()
            .or_else(|| obj.and_then(|o| o.repo_root.clone()))
            .map(PathBuf::from),
        apply: p.apply || obj.and_then(|o| o.apply) == Some(true),
        confirm: p.confirm || obj.and_then(|o| o.confirm) == Some(true),
        front_end: "mcp",
    }
}

/// An engine error as a reply.
fn refused(e: IntentError) -> Reply {
    if !e.diagnostics.is_empty() && e.kind == "invalid_config" {
        let mut r = Reply::diagnostics(&e.diagnostics, "");
        r.body["error"]["kind"] = "invalid_config".into();
        r.body["error"]["message"] = e.message.clone().into();
        r.body["summary"] = e.message.into();
        r.body["error"]["hint"] = e.hint.into();
        return r;
    }
    let mut r = Reply::error(e.kind, e.message, Some(e.hint), e.path);
    if let Value::Object(d) = e.details {
        for (k, v) in d {
            r.body["error"][k] = v;
        }
    }
    r
}

/// Runs one `intent` action.
pub fn call(engine: &Engine, p: &Params, options: &RunOptions<'_>) -> Reply {
    let a = ask(p);
    let needs_intent = matches!(
        p.action,
        Action::Explain | Action::Compile | Action::DryRun | Action::Execute | Action::Resolve
    );
    if needs_intent && a.intent.is_empty() && a.capability.is_none() {
        return Reply::error(
            "invalid_args",
            format!(
                "`{}` needs `intent` (a type such as `repo.snapshot`) or `capability`",
                action_name(p.action)
            ),
            Some("`intent {action: suggest}` shows what applies here".into()),
            Some("/intent".into()),
        );
    }
    match p.action {
        Action::List => list(engine, p),
        Action::Get => get(engine, p, &a),
        Action::Suggest => match engine::intent::context_of(a.repo_root.as_deref(), false) {
            Ok(ctx) => {
                let caps = engine::intent::capabilities(engine);
                let s = engine::capability::resolve::suggest(&caps, &ctx);
                Reply::ok(
                    format!(
                        "{} capabilities apply to {} ({})",
                        s.len(),
                        ctx.root.display(),
                        ctx.tags.join(", ")
                    ),
                    json!({"root": ctx.root, "tags": ctx.tags, "suggestions": s}),
                )
            }
            Err(e) => refused(e),
        },
        Action::Explain | Action::Resolve => match engine::intent::resolve(engine, &a) {
            Ok((ctx, r)) => {
                let summary = format!(
                    "intent `{}` → capability `{}`: {}",
                    r.intent, r.capability, r.why
                );
                let mut body = engine::intent::shown(engine, &r);
                body["root"] = json!(ctx.root);
                body["tags"] = json!(ctx.tags);
                Reply::ok(summary, body)
            }
            Err(e) => refused(e),
        },
        Action::Compile | Action::DryRun => match engine::intent::compile(engine, &a) {
            Ok(c) => {
                let mut body = c.to_json();
                if p.action == Action::DryRun {
                    body["preview"] = engine::intent::preview(&c);
                }
                let missing = if c.resolution.missing.is_empty() {
                    String::new()
                } else {
                    format!("; missing inputs: {}", c.resolution.missing.join(", "))
                };
                let mut r = Reply::ok(
                    format!(
                        "intent `{}` → {} runbook(s), effects {}{missing}",
                        c.resolution.intent,
                        c.runbooks.len(),
                        c.effect()
                    ),
                    body,
                );
                r.body["effects"] = json!(c.effect());
                r
            }
            Err(e) => refused(e),
        },
        Action::Execute => match engine::intent::execute(engine, &a, options) {
            Ok((c, outcome)) => {
                let ok = outcome.ok();
                let mut body = json!({
                    "ok": ok, "effects": c.effect(),
                    "summary": format!("intent {} ({}) {:?} in {} ms", c.resolution.intent, c.resolution.capability, outcome.status, outcome.duration_ms).to_lowercase(),
                    "result": {"intent": c.resolution.intent, "capability": c.resolution.capability, "status": outcome.status, "outputs": outcome.outputs, "digest": c.digest,
                               "steps": outcome.steps.iter().map(|s| json!({"id": s.id, "status": s.status, "error": s.error.as_ref().map(|e| e.to_json())})).collect::<Vec<_>>(),
                               "evidence": outcome.uri_base},
                    "run_id": outcome.run_id,
                });
                if let Some(e) = &outcome.error {
                    body["error"] = json!({"kind": e.kind, "message": e.message});
                }
                if let Some(a) = &outcome.approval {
                    body["result"]["approval"] = a.clone();
                }
                Reply::of_run(body, ok, Vec::new(), &outcome)
            }
            Err(e) => refused(e),
        },
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::List => "list",
        Action::Get => "get",
        Action::Explain => "explain",
        Action::Compile => "compile",
        Action::DryRun => "dry_run",
        Action::Execute => "execute",
        Action::Resolve => "resolve",
        Action::Suggest => "suggest",
    }
}

/// The capabilities (every intent there is), filtered by `query`.
fn list(engine: &Engine, p: &Params) -> Reply {
    let caps = engine::intent::capabilities(engine);
    let q = query_words(p.query.as_deref());
    let items: Vec<Value> = caps
        .entries
        .values()
        .filter(|e| q.is_empty() || matches_query(&q, &[&e.name, e.cap.intent_of(&e.name), e.cap.description.as_deref().unwrap_or(""), &e.cap.tags.join(" ")]) > 0)
        .map(|e| json!({"name": e.name, "intent": e.cap.intent_of(&e.name), "description": e.cap.description, "runbook": e.cap.runbook, "effects": e.cap.effects, "when": e.cap.when, "source": e.origin}))
        .collect();
    let mut body = json!({"capabilities": items, "file": caps.file});
    if !caps.diagnostics.is_empty() {
        body["diagnostics"] = caps
            .diagnostics
            .iter()
            .map(dsl::Diagnostic::to_json)
            .collect();
    }
    let errors = if caps.has_errors() {
        " (the capabilities file has errors: see `diagnostics`)"
    } else {
        ""
    };
    Reply::ok(format!("{} capabilities{errors}", items_len(&body)), body)
}

fn items_len(body: &Value) -> usize {
    body["capabilities"].as_array().map_or(0, Vec::len)
}

/// One capability by name (`capability`, else the intent's name).
fn get(engine: &Engine, p: &Params, a: &Ask) -> Reply {
    let caps = engine::intent::capabilities(engine);
    let name = p.capability.clone().unwrap_or_else(|| a.intent.clone());
    if name.is_empty() {
        return Reply::error(
            "invalid_args",
            "`get` needs `capability` (a name)",
            Some("`intent {action: list}` shows them".into()),
            Some("/capability".into()),
        );
    }
    match caps.get(&name).or_else(|| {
        // an intent served by exactly one capability
        let mut it = caps
            .entries
            .values()
            .filter(|e| e.cap.intent_of(&e.name) == name);
        match (it.next(), it.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }) {
        Some(e) => Reply::ok(format!("capability `{}`", e.name), e.to_json()),
        None => Reply::error(
            "not_found",
            format!("there is no capability `{name}`"),
            Some(
                dsl::diagnostic::suggestion(&name, caps.entries.keys().map(String::as_str))
                    .unwrap_or_else(|| "`intent {action: list}` shows them".into()),
            ),
            Some("/capability".into()),
        ),
    }
}
