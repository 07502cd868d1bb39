//! `help`: finds tools, actions, runbooks, intents (capabilities) and targets by words, and shows one action's schema and an
//! example.
//!
//! With `tool` (and `action`) it answers from the registry: the tool's actions, or one action's
//! description, effect, JSON Schema and example. Otherwise it scores every listed tool, every action
//! (`local`'s only with `INFRA_UNSAFE_LOCAL=1`), every runbook of the catalog, every capability and every target by how many
//! words of `query` (`q` is normalized to it) each contains (`matches_query`, also used by `runbook
//! list`) and answers the best `limit` (10 by default) of each.

use engine::actions;
use engine::run::Engine;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::mcp::reply::Reply;
use crate::mcp::schema::{ToolDesc, ToolParams, opt_u64};

/// What `help` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    /// Words to look for.
    pub query: Option<String>,
    /// A tool of the registry: its actions, or with `action`, one action.
    pub tool: Option<String>,
    /// An action of `tool`: its schema and an example.
    pub action: Option<String>,
    /// At most this many matches of each kind (10 by default).
    #[serde(default, deserialize_with = "opt_u64")]
    #[schemars(range(min = 1))]
    pub limit: Option<u64>,
}

impl ToolParams for Params {
    const TOOL: &'static str = "help";
}

/// The words of a search query, lower-cased (none for no query).
pub fn query_words(query: Option<&str>) -> Vec<String> {
    query
        .unwrap_or("")
        .to_lowercase()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// How many of the query words `q` occur in `fields` (case-insensitive).
pub fn matches_query(q: &[String], fields: &[&str]) -> usize {
    let hay = fields.join(" ").to_lowercase();
    q.iter().filter(|t| hay.contains(t.as_str())).count()
}

/// Searches `listed` (the tool listing), the registry's actions, the catalog's runbooks and the targets
/// by `query`; with `tool` (and `action`), answers that action's schema and an example.
pub fn call(engine: &Engine, listed: &[ToolDesc], p: &Params) -> Reply {
    if let Some(tool) = p.tool.as_deref() {
        let Some(t) = actions::find_tool(tool) else {
            return Reply::error(
                "unknown_tool",
                format!("there is no tool `{tool}` with actions"),
                None,
                None,
            );
        };
        let body = match p.action.as_deref() {
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
        let mut body = body;
        body["options"] = crate::mcp::shape::OPTIONS
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        return Reply::ok(format!("help for `{tool}`"), body);
    }
    let q = query_words(p.query.as_deref());
    let mut found_tools = Vec::new();
    for t in listed {
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
            // among runbooks matching as many words, those whose names hold them come first
            let rank = 2 * n + matches_query(&q, &[&rb.name]);
            found_runbooks.push((rank, json!({"name": rb.name, "description": rb.description, "tags": rb.tags, "source": e.origin})));
        }
    }
    let limit = p.limit.unwrap_or(10) as usize;
    let best = |mut v: Vec<(usize, Value)>| -> Vec<Value> {
        v.sort_by_key(|x| std::cmp::Reverse(x.0));
        v.into_iter().take(limit).map(|(_, x)| x).collect()
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
    // intents: the capabilities (an intent type is what `intent` takes)
    let mut found_intents = Vec::new();
    for e in engine::intent::capabilities(engine).entries.values() {
        let c = &e.cap;
        let n = matches_query(
            &q,
            &[
                &e.name,
                c.intent_of(&e.name),
                c.description.as_deref().unwrap_or(""),
                &c.tags.join(" "),
                c.runbook.as_deref().unwrap_or(""),
            ],
        );
        if q.is_empty() || n > 0 {
            found_intents.push((n, json!({"intent": c.intent_of(&e.name), "capability": e.name, "description": c.description, "effects": c.effects.kind})));
        }
    }
    let body = json!({"tools": best(found_tools), "actions": best(found_actions), "runbooks": best(found_runbooks), "intents": best(found_intents), "targets": best(found_targets),
        "next": "call help with {tool, action} for an action's schema and an example"});
    Reply::ok(format!("matches for `{}`", q.join(" ")), body)
}
