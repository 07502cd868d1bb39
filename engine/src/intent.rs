//! Intents: an outcome asked for (`repo.snapshot`, `k8s.diff`) becomes one capability, one plan and,
//! when told, one run.
//!
//! `resolve` reads the target, the project context (`context::get` on `repo_root`, else the
//! target's `repo_root`, else the working directory) and the capabilities (`capability::load`,
//! refused whole when the project's file has errors), and picks one capability
//! (`capability::resolve`). `compile` builds the plan an agent can show a person: a runbook named
//! `intent.<type>` whose steps are `runbook.run` calls, one per capability of the `depends_on`
//! expansion, in order, each with its resolved inputs (as an input of its own, secret when its
//! runbook takes a secret); it is compiled against the catalog like any runbook, so its effects and
//! digest are the engine's, and every nested runbook is rendered too. `execute` gates the plan
//! (`write` needs `apply`, `irreversible` needs `confirm` as well; missing inputs stop it) and runs
//! it through `Engine::execute` as one run with nested runs per runbook, so evidence, audit and
//! policy are those of any run; a refusal is an audit record of its own and runs nothing.
//!
//! This is the top of the engine's layers: it imports `run` and `capability`, nothing imports it.

use std::path::PathBuf;

use dsl::{Diagnostic, Effect};
use serde_json::{Map, Value, json};

use crate::capability::resolve::{Facts, Request, Resolution};
use crate::capability::{self, Capabilities};
use crate::context::{self, Context, Limits};
use crate::plan::Plan;
use crate::record::{AuditKind, AuditRecord};
use crate::run::{Engine, RunOptions, RunOutcome};

/// What an intent call asks.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// The intent type.
    pub intent: String,
    /// A capability picked by name.
    pub capability: Option<String>,
    /// Explicit inputs.
    pub inputs: Map<String, Value>,
    /// A target by name (`target.*` in `map`).
    pub target: Option<String>,
    /// The project directory (the working directory when `None`).
    pub repo_root: Option<PathBuf>,
    /// `execute` of a `write` intent needs it.
    pub apply: bool,
    /// `execute` of an `irreversible` intent needs it as well.
    pub confirm: bool,
    /// The front end, for the audit record of a refusal (`mcp`, `cli`).
    pub front_end: &'static str,
}

/// Why an intent cannot be explained, compiled or executed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct IntentError {
    /// `invalid_config`, `invalid_args`, `not_found`, `no_match`, `ambiguous`, `missing_inputs`,
    /// `refused`.
    pub kind: &'static str,
    pub message: String,
    pub hint: String,
    /// The argument at fault, as a JSON pointer.
    pub path: Option<String>,
    /// Candidates, missing inputs, the chosen capability…
    pub details: Value,
    pub diagnostics: Vec<Diagnostic>,
}

impl IntentError {
    fn new(kind: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        IntentError {
            kind,
            message: message.into(),
            hint: hint.into(),
            path: None,
            details: Value::Null,
            diagnostics: Vec::new(),
        }
    }
}

/// The capabilities in effect for an engine: built-ins and the project's file, checked.
pub fn capabilities(engine: &Engine) -> Capabilities {
    capability::load(engine.config(), &engine.catalog())
}

/// The project context of `dir` (the working directory when `None`).
pub fn context_of(dir: Option<&std::path::Path>, refresh: bool) -> Result<Context, IntentError> {
    let dir = dir.unwrap_or(std::path::Path::new("."));
    let r = if refresh {
        context::refresh(dir, Limits::default())
    } else {
        context::get(dir, Limits::default())
    };
    r.map_err(|e| IntentError {
        path: Some("/repo_root".into()),
        ..IntentError::new("invalid_args", e.message, e.hint)
    })
}

/// A target as `target.*` reads it: its public fields, its name and its HTTP base URL.
fn target_value(engine: &Engine, name: &str) -> Result<Value, IntentError> {
    let dir = &engine.config().profiles_dir;
    let err = |e: crate::targets::TargetError| IntentError {
        path: Some("/target".into()),
        ..IntentError::new(
            if e.kind == crate::error::ErrorKind::NotFound {
                "not_found"
            } else {
                "invalid_config"
            },
            e.message,
            e.hint,
        )
    };
    let t = crate::targets::Targets::load_checked(dir).map_err(err)?;
    let target = t.find(name, dir).map_err(err)?;
    let mut v = target.public(name);
    v["base_url"] = json!(target.http.as_ref().and_then(|h| h.base_url.clone()));
    Ok(v)
}

/// The capability an intent resolves to here, with its ordered runbooks and inputs.
pub fn resolve(engine: &Engine, ask: &Ask) -> Result<(Context, Resolution), IntentError> {
    let caps = capabilities(engine);
    if caps.has_errors() {
        let first = caps.diagnostics.iter().find(|d| d.is_error()).cloned();
        return Err(IntentError {
            diagnostics: caps.diagnostics.clone(),
            ..IntentError::new(
                "invalid_config",
                format!(
                    "the capabilities file has errors: {}",
                    first.as_ref().map_or("", |d| d.message.as_str())
                ),
                format!(
                    "fix it{}; `infra validate {}` shows every error",
                    first
                        .and_then(|d| d.location())
                        .map(|l| format!(" at {l}"))
                        .unwrap_or_default(),
                    caps.file
                        .as_ref()
                        .map_or(String::new(), |f| f.display().to_string())
                ),
            )
        });
    }
    let target = ask
        .target
        .as_deref()
        .map(|t| target_value(engine, t))
        .transpose()?;
    // the project: `repo_root`, else the target's, else the working directory
    let target_root = target
        .as_ref()
        .and_then(|t| t["repo_root"].as_str())
        .map(|r| engine.config().expand_home(r));
    let ctx = context_of(ask.repo_root.as_deref().or(target_root.as_deref()), false)?;
    let state = |k: &str| -> Option<Value> {
        engine
            .session()
            .get(k)
            .or_else(|| engine.store().ok()?.state_get(k).ok().flatten())
    };
    let facts = Facts {
        context: &ctx,
        target,
        state: &state,
    };
    let req = Request {
        intent: ask.intent.clone(),
        capability: ask.capability.clone(),
        inputs: ask.inputs.clone(),
    };
    let res =
        capability::resolve::resolve(&caps, &engine.catalog(), &req, &facts).map_err(|e| {
            IntentError {
                details: json!({"candidates": e.candidates}),
                path: Some(
                    if e.kind == "not_found" && ask.capability.is_some() {
                        "/capability"
                    } else {
                        "/intent"
                    }
                    .into(),
                ),
                ..IntentError::new(e.kind, e.message, e.hint)
            }
        })?;
    Ok((ctx, res))
}

/// A resolution as results show it: the inputs a runbook declares secret masked, known secrets
/// redacted.
pub fn shown(engine: &Engine, r: &Resolution) -> Value {
    let catalog = engine.catalog();
    let mut v = json!(r);
    for (i, s) in r.steps.iter().enumerate() {
        let rb = s.runbook.as_deref().and_then(|n| catalog.get(n));
        for k in s.inputs.keys() {
            if rb.is_some_and(|e| e.runbook.inputs.get(k).is_some_and(|x| x.secret)) {
                v["steps"][i]["inputs"][k] = crate::record::redact::MASK.into();
            }
        }
    }
    engine.redactor().redact_value(&v)
}

/// An intent's whole plan.
#[derive(Debug)]
pub struct Compiled {
    pub context: Context,
    pub resolution: Resolution,
    /// The `intent.<type>` runbook, compiled (its nested runs are the capabilities' runbooks).
    pub plan: Plan,
    /// Its inputs: one object per step.
    pub inputs: Map<String, Value>,
    /// Each runbook's plan, rendered with its inputs (unrendered where inputs are missing).
    pub runbooks: Vec<Value>,
    /// The rendered plan's digest (`None` while inputs are missing).
    pub digest: Option<String>,
}

impl Compiled {
    /// The worst effect of the plan: the engine's classification, raised by the capabilities'.
    pub fn effect(&self) -> Effect {
        let declared = match self.resolution.effects.kind {
            capability::Kind::Read => Effect::Read,
            capability::Kind::Destructive => Effect::Destructive,
            _ => Effect::Write,
        };
        declared.max(self.plan.effects())
    }

    /// The plan as results show it.
    pub fn to_json(&self) -> Value {
        json!({
            "intent": self.resolution.intent,
            "capability": self.resolution.capability,
            "why": self.resolution.why,
            "root": self.context.root,
            "effects": self.effect(),
            "capability_effects": self.resolution.effects,
            "digest": self.digest,
            "missing": self.resolution.missing,
            "runbooks": self.runbooks,
        })
    }
}

/// A step id for a capability.
fn step_id(i: usize, cap: &str) -> String {
    let s: String = cap
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("s{i}_{s}")
}

/// The whole plan of an intent: every runbook, rendered, with effects and digest.
pub fn compile(engine: &Engine, ask: &Ask) -> Result<Compiled, IntentError> {
    let (context, resolution) = resolve(engine, ask)?;
    let catalog = engine.catalog();
    let name: String = format!("intent.{}", resolution.intent)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut steps = Vec::new();
    let mut inputs_decl = Map::new();
    let mut outputs = Map::new();
    let mut inputs = Map::new();
    let mut runbooks = Vec::new();
    for (i, s) in resolution.steps.iter().enumerate() {
        let Some(rb_name) = &s.runbook else { continue };
        let Some(entry) = catalog.get(rb_name) else {
            return Err(IntentError::new(
                "not_found",
                format!(
                    "runbook `{rb_name}` of capability `{}` is gone",
                    s.capability
                ),
                "`infra validate` checks the capabilities file",
            ));
        };
        let rb = entry.runbook.clone();
        let id = step_id(i, &s.capability);
        let secret = rb.inputs.values().any(|x| x.secret);
        inputs_decl.insert(id.clone(), json!({"type": "object", "secret": secret, "description": format!("inputs of `{rb_name}` for capability `{}`", s.capability)}));
        steps.push(json!({"id": id, "tool": "runbook", "args": {"action": "run", "name": rb_name, "input": format!("{{{{ input.{id} }}}}")}}));
        outputs.insert(
            s.capability.clone(),
            format!("{{{{ steps.{id}.outputs }}}}").into(),
        );
        inputs.insert(id.clone(), Value::Object(s.inputs.clone()));
        let masked: Map<String, Value> = s
            .inputs
            .iter()
            .map(|(k, v)| match rb.inputs.get(k) {
                Some(x) if x.secret => (k.clone(), crate::record::redact::MASK.into()),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        let mut shown = json!({"capability": s.capability, "runbook": rb_name, "inputs": engine.redactor().redact_value(&Value::Object(masked)), "sources": s.sources, "effects": s.effects});
        if !s.ignored.is_empty() {
            shown["ignored_inputs"] = json!(s.ignored);
        }
        match crate::request::compile(&catalog, &rb) {
            Err(d) => {
                return Err(IntentError {
                    diagnostics: d.clone(),
                    ..IntentError::new(
                        "invalid_config",
                        format!(
                            "runbook `{rb_name}` does not compile: {}",
                            d.first().map_or("", |x| x.message.as_str())
                        ),
                        "`infra validate` shows every error",
                    )
                });
            }
            Ok(p) if s.missing.is_empty() => {
                match dsl::resolve_inputs(&rb, &s.inputs).map(|i| p.render(&i)) {
                    Ok(Ok(r)) => shown["plan"] = r.json,
                    Ok(Err(d)) | Err(d) => {
                        return Err(IntentError {
                            diagnostics: d.clone(),
                            path: Some("/inputs".into()),
                            ..IntentError::new(
                                "invalid_input",
                                format!(
                                    "capability `{}`: {}",
                                    s.capability,
                                    d.first().map_or("", |x| x.message.as_str())
                                ),
                                "fix the input named, or the capability's `map`/`defaults`",
                            )
                        });
                    }
                }
            }
            Ok(p) => {
                shown["plan"] = p.to_json();
                shown["missing"] = json!(s.missing);
            }
        }
        runbooks.push(shown);
    }
    let wrapper = json!({
        "name": name,
        "description": format!("intent `{}` through capability `{}`", resolution.intent, resolution.capability),
        "tags": ["intent"],
        "inputs": inputs_decl,
        "steps": steps,
        "outputs": outputs,
    });
    let rb = crate::request::find(
        &catalog,
        crate::request::Which::Inline(&wrapper, Some(&name)),
    )
    .map_err(|d| IntentError {
        diagnostics: d.clone(),
        ..IntentError::new(
            "invalid_config",
            format!(
                "the intent's plan does not load: {}",
                d.first().map_or("", |x| x.message.as_str())
            ),
            "report this: the plan is made by infra",
        )
    })?;
    let plan = crate::request::compile(&catalog, &rb).map_err(|d| IntentError {
        diagnostics: d.clone(),
        ..IntentError::new(
            "invalid_config",
            format!(
                "the intent's plan does not compile: {}",
                d.first().map_or("", |x| x.message.as_str())
            ),
            "`infra validate` shows every error",
        )
    })?;
    let digest = if resolution.missing.is_empty() {
        plan.render(&inputs).ok().map(|r| r.digest)
    } else {
        None
    };
    Ok(Compiled {
        context,
        resolution,
        plan,
        inputs,
        runbooks,
        digest,
    })
}

/// What a dry run shows: the plan, and for each runbook what it would read and what it would change.
pub fn preview(c: &Compiled) -> Value {
    let mut reads = Vec::new();
    let mut changes = Vec::new();
    for rb in &c.runbooks {
        for n in rb["plan"]["nodes"].as_array().into_iter().flatten() {
            let line = json!({"runbook": rb["runbook"], "step": n["id"], "tool": n["tool"], "action": n["action"], "effect": n["effect"], "command": n.get("command")});
            if n["effect"] == "read" {
                reads.push(line);
            } else {
                changes.push(line);
            }
        }
    }
    json!({"would_read": reads, "would_change": changes})
}

/// Records a refused or rejected `intent execute` in the audit log.
fn audit_refusal(
    engine: &Engine,
    ask: &Ask,
    kind: AuditKind,
    e: &IntentError,
    digest: Option<&str>,
) {
    let rec = AuditRecord {
        tool: Some("intent".into()),
        action: Some("execute".into()),
        front_end: Some(ask.front_end.into()),
        plan_digest: digest.map(str::to_owned),
        args: Some(engine.redactor().redact_value(&json!({"intent": ask.intent, "capability": ask.capability, "apply": ask.apply, "confirm": ask.confirm, "target": ask.target}))),
        error: Some(json!({"kind": e.kind, "message": e.message})),
        ok: Some(false),
        ..AuditRecord::new(kind)
    };
    let _ = engine.audit().record(&rec, false);
}

/// Runs an intent: the gates, then the plan as one run. A refusal runs nothing and is audited.
pub fn execute(
    engine: &Engine,
    ask: &Ask,
    opts: &RunOptions<'_>,
) -> Result<(Compiled, RunOutcome), IntentError> {
    let c = match compile(engine, ask) {
        Ok(c) => c,
        Err(e) => {
            audit_refusal(engine, ask, AuditKind::Rejected, &e, None);
            return Err(e);
        }
    };
    if !c.resolution.missing.is_empty() {
        let e = IntentError {
            path: Some("/inputs".into()),
            details: json!({"missing": c.resolution.missing}),
            ..IntentError::new(
                "missing_inputs",
                format!("missing inputs: {}", c.resolution.missing.join(", ")),
                "give them in `inputs` (or a `target` the capability maps them from), then call again",
            )
        };
        audit_refusal(engine, ask, AuditKind::Rejected, &e, None);
        return Err(e);
    }
    let effect = c.effect();
    let gate = if (effect > Effect::Read || c.resolution.effects.needs_apply()) && !ask.apply {
        Some((
            "apply",
            format!(
                "intent `{}` is a `{effect}` intent: it changes things, so `execute` needs `apply: true`; nothing was run",
                c.resolution.intent
            ),
        ))
    } else if c.resolution.effects.irreversible && !ask.confirm {
        Some((
            "confirm",
            format!(
                "intent `{}` is irreversible: `execute` needs `confirm: true` as well as `apply: true`; nothing was run",
                c.resolution.intent
            ),
        ))
    } else {
        None
    };
    if let Some((flag, message)) = gate {
        let cli = ask.front_end == "cli";
        let given = if cli {
            format!("--{flag}")
        } else {
            format!("{flag}: true")
        };
        let message = if cli {
            message
                .replace("`apply: true`", "`--apply`")
                .replace("`confirm: true`", "`--confirm`")
        } else {
            message
        };
        let e = IntentError {
            path: Some(format!("/{flag}")),
            details: json!({"flag": flag, "effects": effect, "digest": c.digest}),
            ..IntentError::new(
                "refused",
                message,
                format!(
                    "look at the plan first (`intent {{action: dry_run}}`), then call again with `{given}`"
                ),
            )
        };
        audit_refusal(engine, ask, AuditKind::Refused, &e, c.digest.as_deref());
        return Err(e);
    }
    // the policy judges an irreversible intent at that level (by default it needs an approval)
    let outcome = if c.resolution.effects.irreversible {
        engine.execute_irreversible(&c.plan, c.inputs.clone(), opts)
    } else {
        engine.execute(&c.plan, c.inputs.clone(), opts)
    };
    Ok((c, outcome))
}
