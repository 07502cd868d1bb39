//! The tool listing (`tools/list`): which tools there are, in a fixed order, with their descriptions,
//! input schemas and annotations.
//!
//! The order is `help`, `runbook` and `intent` (which lists the capability actions too), then one tool per registry tool, then `artifacts`, `jobs`, `audit`,
//! `evidence`, `context`, and `local` last (listed only with `INFRA_UNSAFE_LOCAL=1`). A registry tool
//! ([`registry_tool`]) is a flat object with the `action` enum, `async` and the union of its actions'
//! properties, each kept small (`schema::compact`), with no top-level `oneOf` (many clients reject it);
//! its annotations come from its actions' effects. The registry's own `runbook` tool is replaced by the
//! front end's. A front-end tool ([`front_end`]) has its title, description and annotations here and its
//! input schema generated from its parameters struct (`tools::<tool>::Params`, `schema::input_schema`).
//! Every tool also lists `output` and `store_as` (`with_common`; `shape.rs` says what they do). Each
//! annotation is the worst case of the tool's actions: a tool that can write is `destructiveHint`, since
//! an `exec`, a request or a `set` may destroy or overwrite. The whole listing stays under 20 KiB (a test
//! holds it there, `local` included), so descriptions are short and properties carry none.

use engine::actions::{self, ToolSpec};
use engine::run::Engine;
use serde_json::{Map, Value, json};

use super::schema::{ToolDesc, ToolParams, compact, input_schema};
use super::tools::{artifacts, audit, context, evidence, help, intent, jobs, runbook};

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
                    props.insert(k.clone(), compact(v));
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
                Some(_) => format!("{} at most", a.effect),
                None => a.effect.to_string(),
            };
            format!("`{}`: {} ({effect})", a.name, first_sentence(a.description))
        })
        .collect();
    ToolDesc {
        name: t.name.into(),
        title: t.title.into(),
        description: format!("{} Actions: {}.", t.description, lines.join("; ")),
        input_schema: json!({"type": "object", "properties": props, "required": ["action"]}),
        read_only,
        // the worst case of its actions: an `exec` or a request can destroy whatever its command or
        // method says, and an action that writes may overwrite
        destructive: !read_only,
        idempotent: read_only,
        open_world: t.open_world,
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

/// A front-end tool, its input schema generated from its parameters struct `P`.
fn front_end<P: ToolParams>(title: &str, description: &str, read_only: bool) -> ToolDesc {
    ToolDesc {
        name: P::TOOL.into(),
        title: title.into(),
        description: description.into(),
        input_schema: input_schema::<P>(),
        read_only,
        // the worst case: a job's `cancel` stops a call midway; a run does whatever its steps do
        destructive: !read_only,
        idempotent: read_only,
        // a runbook's steps reach targets (SSH, HTTP, PostgreSQL)
        open_world: matches!(P::TOOL, "runbook" | "intent"),
    }
}

/// Adds the options every tool takes (`output`, `store_as`; `help` and the instructions say what they
/// do) to a listed input schema.
fn with_common(mut t: ToolDesc) -> ToolDesc {
    if let Some(props) = t.input_schema["properties"].as_object_mut() {
        props.insert("output".into(), json!({"type": "object"}));
        props.insert("store_as".into(), json!({"type": ["string", "object"]}));
    }
    t
}

/// A front-end tool's listed input schema (`None` for a registry tool): what `normalize` may rename to
/// and what `schema::parse` accepts.
pub fn front_end_schema(tool: &str) -> Option<Value> {
    Some(match tool {
        "help" => input_schema::<help::Params>(),
        "runbook" => input_schema::<runbook::Params>(),
        "artifacts" => input_schema::<artifacts::Params>(),
        "jobs" => input_schema::<jobs::Params>(),
        "audit" => input_schema::<audit::Params>(),
        "evidence" => input_schema::<evidence::Params>(),
        "context" => input_schema::<context::Params>(),
        "intent" => input_schema::<intent::Params>(),
        _ => return None,
    })
}

/// Every listed tool, in a fixed order. `local` only with `INFRA_UNSAFE_LOCAL=1`.
pub fn tools(engine: &Engine) -> Vec<ToolDesc> {
    let mut out = vec![
        front_end::<help::Params>(
            "Help",
            "Searches tools, actions and runbooks by `query`; with `tool` (and `action`), returns that action's schema and an example. Cheap, read-only.",
            true,
        ),
        front_end::<runbook::Params>(
            "Runbooks",
            "Runbooks: `list` (query, tags, limit), `get`, `run` (name or inline `runbook`, `input`, `dry_run`), `resume` (a failed run, reusing what succeeded), `plan` (runs nothing), `validate`, `graph`, `upsert` (a built-in needs `override: true`), `delete`.",
            false,
        ),
        front_end::<intent::Params>(
            "Intents and capabilities",
            "Ask for an outcome (`intent`: a type such as `repo.snapshot`), not a runbook. `explain` (capability, why, inputs), `compile` (rendered steps, effects, digest), `dry_run` (+ reads/changes), `execute` (write: `apply: true`; irreversible: `confirm: true` too). `list`, `get`, `resolve`, `suggest` (what applies here).",
            false,
        ),
    ];
    for t in actions::registry() {
        if t.name == "runbook" || (t.name == "local" && !engine.config().unsafe_local) {
            continue;
        }
        out.push(registry_tool(t));
    }
    out.push(front_end::<artifacts::Params>(
        "Artifacts",
        "Run outputs by `artifact://` URI: `list`, `get` (offset, max_bytes), `head`, `tail`. Bounded, masked reads.",
        true,
    ));
    out.push(front_end::<jobs::Params>(
        "Jobs",
        "Background calls (`async: true`, any tool; `ssh exec` `detach: true`): a `job_id` at once, outliving the server. `list`, `status`, `wait` (timeout_ms), `logs`, `cancel`.",
        false,
    ));
    out.push(front_end::<audit::Params>(
        "Audit log",
        "The hash-chained record of every call: `tail`, `list` (tool, status, since, limit, offset, reverse), `verify` (against a checkpoint), `checkpoint`.",
        true,
    ));
    out.push(front_end::<evidence::Params>(
        "Evidence",
        "Recorded runs: `list` (limit, runbook), `get` (run_id): its journal; finished or interrupted. `prune` (dry_run): by retention, if policy allows.",
        false,
    ));
    out.push(front_end::<context::Params>(
        "Project context",
        "`get`/`refresh`: root, git, tags (k8s, helm, argocd, flux, languages…) and their files under `path` (default: cwd). `targets` (no credentials). `summary`: tags, targets, capabilities, runbooks, recent runs, failed jobs.",
        true,
    ));
    // `local` goes last, as the spec's order has it
    if let Some(pos) = out.iter().position(|t| t.name == "local") {
        let l = out.remove(pos);
        out.push(l);
    }
    out.into_iter().map(with_common).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every front-end tool's listed schema compiles, so `schema::parse` checks its calls against it.
    #[test]
    fn front_end_schemas_compile() {
        for s in [
            input_schema::<help::Params>(),
            input_schema::<runbook::Params>(),
            input_schema::<artifacts::Params>(),
            input_schema::<jobs::Params>(),
            input_schema::<audit::Params>(),
            input_schema::<evidence::Params>(),
            input_schema::<context::Params>(),
            input_schema::<intent::Params>(),
        ] {
            assert!(jsonschema::draft202012::new(&s).is_ok(), "{s}");
        }
    }
}
