//! Resolution: an intent type, the project context and a target → exactly one capability, or a loud
//! error; then its `depends_on` expanded into an ordered list of runbooks, each with its inputs.
//!
//! The candidates are the capability named like the intent and those whose `intent` is it (or the one
//! named by `capability`). Those whose `when` fails against the context are dropped, each with why;
//! none left is `no_match` (with every reason), more than one is `ambiguous` (with what tells them
//! apart and how to pick one). There is never a silent tie-break. A runbook's inputs come from the
//! intent's inputs, then `map` (`context.*`, `target.*`, `state.*`, `project.repo_root`), then
//! `defaults`; missing required inputs are all listed at once, as `capability.input`.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{Capabilities, Capability, Effects, Kind, When};
use crate::catalog::Catalog;
use crate::context::Context;

/// What `map` sources may start with.
pub const SOURCES: &[&str] = &["context", "target", "state", "project"];

/// What resolution reads besides the capabilities: the context, the target and state.
pub struct Facts<'a> {
    pub context: &'a Context,
    /// The target as `target.*` reads it (its name and public fields), if one was given.
    pub target: Option<Value>,
    /// `state.<key>`.
    pub state: &'a dyn Fn(&str) -> Option<Value>,
}

impl std::fmt::Debug for Facts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts")
            .field("context", &self.context.root)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// What is asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The intent type (`repo.snapshot`, `k8s.diff`).
    pub intent: String,
    /// A capability picked by name (must serve the intent).
    pub capability: Option<String>,
    /// Inputs given explicitly.
    pub inputs: Map<String, Value>,
}

/// Why an intent has no one capability.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ResolveError {
    /// `not_found` (no capability serves the intent), `no_match` (none whose `when` holds),
    /// `ambiguous`, `invalid_config` (a `depends_on` circle).
    pub kind: &'static str,
    pub message: String,
    pub hint: String,
    /// The candidates and why each failed, or what tells them apart.
    pub candidates: Vec<Value>,
}

/// One runbook of a resolved plan.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub capability: String,
    pub runbook: Option<String>,
    /// The inputs the runbook gets.
    pub inputs: Map<String, Value>,
    /// Where each input came from: `input`, `map: <source>`, `default`.
    pub sources: Map<String, Value>,
    /// Required inputs with no value.
    pub missing: Vec<String>,
    /// Given inputs the runbook does not take (not passed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    pub effects: Effects,
}

/// An intent resolved: the capability chosen and why, and its plan of runbooks in order.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    pub intent: String,
    pub capability: String,
    pub why: String,
    /// `depends_on` first, the chosen capability last.
    pub steps: Vec<Step>,
    /// The worst of the steps' effects.
    pub effects: Effects,
    /// Every missing input, as `capability.input`.
    pub missing: Vec<String>,
}

/// Whether `when` holds for the context; `Err` says why not.
pub fn matches(when: &When, ctx: &Context) -> Result<(), String> {
    if let Some(t) = &when.tags_any
        && !t.iter().any(|x| ctx.has(x))
    {
        return Err(format!(
            "`tags_any` {t:?}: none in the context ({})",
            tags_of(ctx)
        ));
    }
    if let Some(t) = &when.tags_all {
        let lacking: Vec<&String> = t.iter().filter(|x| !ctx.has(x)).collect();
        if !lacking.is_empty() {
            return Err(format!(
                "`tags_all`: the context lacks {lacking:?} ({})",
                tags_of(ctx)
            ));
        }
    }
    let exists = |f: &String| ctx.root.join(f).exists();
    if let Some(f) = &when.files_any
        && !f.iter().any(exists)
    {
        return Err(format!(
            "`files_any` {f:?}: none under `{}`",
            ctx.root.display()
        ));
    }
    if let Some(f) = &when.files_all {
        let lacking: Vec<&String> = f.iter().filter(|x| !exists(x)).collect();
        if !lacking.is_empty() {
            return Err(format!(
                "`files_all`: {lacking:?} not under `{}`",
                ctx.root.display()
            ));
        }
    }
    if let Some(r) = &when.root
        && !root_matches(r, &ctx.root)
    {
        return Err(format!(
            "`root` `{r}`: the context root is `{}`",
            ctx.root.display()
        ));
    }
    if let Some(all) = &when.all_of {
        for (i, w) in all.iter().enumerate() {
            matches(w, ctx).map_err(|e| format!("`all_of[{i}]`: {e}"))?;
        }
    }
    if let Some(any) = &when.any_of {
        let mut why = Vec::new();
        for w in any {
            match matches(w, ctx) {
                Ok(()) => {
                    why.clear();
                    break;
                }
                Err(e) => why.push(e),
            }
        }
        if !why.is_empty() || any.is_empty() {
            return Err(format!("`any_of`: none holds ({})", why.join("; ")));
        }
    }
    if let Some(n) = &when.not
        && matches(n, ctx).is_ok()
    {
        return Err(format!(
            "`not`: {} holds",
            serde_json::to_string(n).unwrap_or_default()
        ));
    }
    Ok(())
}

fn tags_of(ctx: &Context) -> String {
    if ctx.tags.is_empty() {
        "it has no tags".into()
    } else {
        format!("it has {}", ctx.tags.join(", "))
    }
}

fn root_matches(r: &str, root: &Path) -> bool {
    if !r.contains('/') {
        return root
            .ancestors()
            .any(|a| a.file_name().is_some_and(|n| n == r));
    }
    let want = PathBuf::from(r);
    let want = want.canonicalize().unwrap_or(want);
    root.starts_with(&want)
}

/// What the `when` of a capability asks for, in one line (for ambiguity reports).
fn when_line(c: &Capability) -> String {
    c.when.as_ref().map_or_else(
        || "always (no `when`)".into(),
        |w| serde_json::to_string(w).unwrap_or_default(),
    )
}

/// The one capability for a request, and why.
pub fn choose(
    caps: &Capabilities,
    req: &Request,
    ctx: &Context,
) -> Result<(String, String), ResolveError> {
    let candidates: Vec<(&String, &Capability)> = match &req.capability {
        Some(name) => match caps.get(name) {
            Some(e)
                if req.intent.is_empty()
                    || e.cap.intent_of(name) == req.intent
                    || *name == req.intent =>
            {
                vec![(&e.name, &e.cap)]
            }
            Some(e) => {
                return Err(ResolveError {
                    kind: "invalid_args",
                    message: format!(
                        "capability `{name}` serves intent `{}`, not `{}`",
                        e.cap.intent_of(name),
                        req.intent
                    ),
                    hint: format!(
                        "leave `capability` out, or use intent `{}`",
                        e.cap.intent_of(name)
                    ),
                    candidates: Vec::new(),
                });
            }
            None => {
                return Err(ResolveError {
                    kind: "not_found",
                    message: format!("there is no capability `{name}`"),
                    hint: dsl::diagnostic::suggestion(
                        name,
                        caps.entries.keys().map(String::as_str),
                    )
                    .unwrap_or_else(|| "`capability {action: list}` shows them".into()),
                    candidates: Vec::new(),
                });
            }
        },
        None => caps
            .entries
            .values()
            .filter(|e| e.name == req.intent || e.cap.intent_of(&e.name) == req.intent)
            .map(|e| (&e.name, &e.cap))
            .collect(),
    };
    if candidates.is_empty() {
        let intents: Vec<&str> = caps
            .entries
            .values()
            .map(|e| e.cap.intent_of(&e.name))
            .collect();
        return Err(ResolveError {
            kind: "not_found",
            message: format!("no capability serves intent `{}`", req.intent),
            hint: dsl::diagnostic::suggestion(&req.intent, intents.iter().copied()).unwrap_or_else(
                || "`capability {action: suggest}` shows what can be done here; add one to capabilities.json".into(),
            ),
            candidates: Vec::new(),
        });
    }
    let mut matched = Vec::new();
    let mut failed = Vec::new();
    for (name, cap) in &candidates {
        match cap.when.as_ref().map_or(Ok(()), |w| matches(w, ctx)) {
            Ok(()) => matched.push((*name, *cap)),
            Err(why) => failed.push(json!({"name": name, "when": cap.when, "failed": why})),
        }
    }
    match matched.as_slice() {
        [] => Err(ResolveError {
            kind: "no_match",
            message: format!(
                "no capability for intent `{}` applies to `{}`: {}",
                req.intent,
                ctx.root.display(),
                failed
                    .iter()
                    .map(|f| format!(
                        "`{}`: {}",
                        f["name"].as_str().unwrap_or(""),
                        f["failed"].as_str().unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            hint: "give `repo_root` (the project's directory), or adjust the capability's `when`"
                .into(),
            candidates: failed,
        }),
        [(name, cap)] => {
            let why = match &cap.when {
                None if req.capability.is_some() => format!("`{name}` was named"),
                None => format!(
                    "`{name}` is the only capability for intent `{}`",
                    req.intent
                ),
                Some(w) => format!(
                    "`{name}` serves intent `{}` and its `when` {} holds for `{}`",
                    req.intent,
                    serde_json::to_string(w).unwrap_or_default(),
                    ctx.root.display()
                ),
            };
            Ok(((*name).clone(), why))
        }
        many => {
            let names: Vec<&str> = many.iter().map(|(n, _)| n.as_str()).collect();
            let candidates = many
                .iter()
                .map(|(n, c)| json!({"name": n, "runbook": c.runbook, "when": when_line(c), "tags": c.tags}))
                .collect();
            Err(ResolveError {
                kind: "ambiguous",
                message: format!(
                    "intent `{}` matches {} capabilities here: {}",
                    req.intent,
                    many.len(),
                    many.iter()
                        .map(|(n, c)| format!("`{n}` (when {})", when_line(c)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                hint: format!(
                    "pick one with `capability: \"{}\"`, or make their `when` tell this context apart (e.g. by tags)",
                    names.join("\"` or `capability: \"")
                ),
                candidates,
            })
        }
    }
}

/// A circle through `depends_on` from `start`, as the path that closes it.
pub fn cycle_from(all: &IndexMap<String, Capability>, start: &str) -> Option<Vec<String>> {
    // depth-first with an explicit stack of (name, next dependency index)
    let mut path: Vec<(String, usize)> = vec![(start.to_owned(), 0)];
    let mut done: Vec<String> = Vec::new();
    while let Some((name, i)) = path.last().cloned() {
        let deps = all
            .get(&name)
            .map(|c| c.depends_on.as_slice())
            .unwrap_or_default();
        if let Some(d) = deps.get(i) {
            path.last_mut().expect("non-empty").1 += 1;
            if let Some(pos) = path.iter().position(|(n, _)| n == d) {
                let mut p: Vec<String> = path[pos..].iter().map(|(n, _)| n.clone()).collect();
                p.push(d.clone());
                return Some(p);
            }
            if !done.contains(d) {
                path.push((d.clone(), 0));
            }
        } else {
            done.push(name);
            path.pop();
        }
    }
    None
}

/// `root` and its `depends_on`, dependencies first, each once.
pub fn expand(caps: &Capabilities, root: &str) -> Result<Vec<String>, ResolveError> {
    let all: IndexMap<String, Capability> = caps
        .entries
        .iter()
        .map(|(n, e)| (n.clone(), e.cap.clone()))
        .collect();
    if let Some(path) = cycle_from(&all, root) {
        return Err(ResolveError {
            kind: "invalid_config",
            message: format!(
                "capability `{root}` depends on itself: {}",
                path.join(" → ")
            ),
            hint: "remove one `depends_on` entry of the circle".into(),
            candidates: Vec::new(),
        });
    }
    let mut order = Vec::new();
    let mut stack = vec![(root.to_owned(), 0usize)];
    while let Some((name, i)) = stack.last().cloned() {
        let deps = all
            .get(&name)
            .map(|c| c.depends_on.as_slice())
            .unwrap_or_default();
        if let Some(d) = deps.get(i) {
            stack.last_mut().expect("non-empty").1 += 1;
            if !order.contains(d) {
                stack.push((d.clone(), 0));
            }
        } else {
            stack.pop();
            if !order.contains(&name) {
                order.push(name);
            }
        }
    }
    Ok(order)
}

/// A `map` source's value.
fn source_value(source: &str, facts: &Facts<'_>) -> Option<Value> {
    let (head, rest) = source.split_once('.')?;
    let from_json = |v: &Value| {
        let mut cur = v;
        for part in rest.split('.') {
            cur = cur.get(part)?;
        }
        (!cur.is_null()).then(|| cur.clone())
    };
    match head {
        "context" => from_json(&facts.context.to_json()),
        "project" if rest == "repo_root" || rest == "root" => {
            Some(facts.context.root.to_string_lossy().into_owned().into())
        }
        "target" => facts.target.as_ref().and_then(from_json),
        "state" => (facts.state)(rest),
        _ => None,
    }
}

fn is_missing(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        _ => false,
    }
}

/// One capability's runbook inputs: explicit, then `map`, then `defaults`.
pub fn step(
    name: &str,
    cap: &Capability,
    catalog: &Catalog,
    explicit: &Map<String, Value>,
    facts: &Facts<'_>,
) -> Step {
    let rb = cap
        .runbook
        .as_deref()
        .and_then(|r| catalog.get(r))
        .map(|e| e.runbook.clone());
    let declared = |k: &str| rb.as_ref().is_none_or(|rb| rb.inputs.contains_key(k));
    let mut inputs = Map::new();
    let mut sources = Map::new();
    let mut ignored = Vec::new();
    let pass = cap.inputs.pass_through.unwrap_or(true);
    for (k, v) in explicit {
        let named = cap.inputs.required.contains(k)
            || cap.inputs.map.contains_key(k)
            || cap.inputs.defaults.contains_key(k);
        if declared(k) && (pass || named) {
            inputs.insert(k.clone(), v.clone());
            sources.insert(k.clone(), "input".into());
        } else {
            ignored.push(k.clone());
        }
    }
    for (k, src) in &cap.inputs.map {
        if is_missing(inputs.get(k))
            && let Some(v) = source_value(src, facts)
        {
            inputs.insert(k.clone(), v);
            sources.insert(k.clone(), format!("map: {src}").into());
        }
    }
    for (k, v) in &cap.inputs.defaults {
        if is_missing(inputs.get(k)) && declared(k) {
            inputs.insert(k.clone(), v.clone());
            sources.insert(k.clone(), "default".into());
        }
    }
    let mut missing: Vec<String> = cap
        .inputs
        .required
        .iter()
        .filter(|k| is_missing(inputs.get(*k)))
        .cloned()
        .collect();
    if let Some(rb) = &rb {
        for (k, i) in &rb.inputs {
            if i.required
                && i.default.is_none()
                && is_missing(inputs.get(k))
                && !missing.contains(k)
            {
                missing.push(k.clone());
            }
        }
    }
    Step {
        capability: name.to_owned(),
        runbook: cap.runbook.clone(),
        inputs,
        sources,
        missing,
        ignored,
        effects: cap.effects,
    }
}

/// The worst of several effects.
pub fn worst(effects: impl IntoIterator<Item = Effects>) -> Effects {
    effects
        .into_iter()
        .fold(Effects::default(), |a, b| Effects {
            kind: if a.kind == Kind::Read {
                b.kind
            } else if b.kind == Kind::Read || a.kind == b.kind {
                a.kind
            } else {
                a.kind.max(b.kind).max(Kind::Mixed)
            },
            requires_apply: a.requires_apply || b.requires_apply,
            irreversible: a.irreversible || b.irreversible,
        })
}

/// An intent resolved into one capability and its ordered runbooks with inputs.
pub fn resolve(
    caps: &Capabilities,
    catalog: &Catalog,
    req: &Request,
    facts: &Facts<'_>,
) -> Result<Resolution, ResolveError> {
    let (name, why) = choose(caps, req, facts.context)?;
    let order = expand(caps, &name)?;
    let steps: Vec<Step> = order
        .iter()
        .filter_map(|n| caps.get(n))
        .map(|e| step(&e.name, &e.cap, catalog, &req.inputs, facts))
        .collect();
    let missing = steps
        .iter()
        .flat_map(|s| {
            s.missing
                .iter()
                .map(move |m| format!("{}.{m}", s.capability))
        })
        .collect();
    Ok(Resolution {
        intent: if req.intent.is_empty() {
            caps.get(&name)
                .map_or(name.clone(), |e| e.cap.intent_of(&name).to_owned())
        } else {
            req.intent.clone()
        },
        capability: name,
        why,
        effects: worst(steps.iter().map(|s| s.effects)),
        steps,
        missing,
    })
}

/// The capabilities whose `when` holds here, best first (those that need the context most: more
/// matched tags, then reads before writes), each with why.
pub fn suggest(caps: &Capabilities, ctx: &Context) -> Vec<Value> {
    let mut out: Vec<(usize, Kind, Value)> = Vec::new();
    for e in caps.entries.values() {
        let Some(w) = &e.cap.when else { continue };
        if matches(w, ctx).is_err() {
            continue;
        }
        let tags: Vec<&String> = w
            .tags_any
            .iter()
            .chain(w.tags_all.iter())
            .flatten()
            .filter(|t| ctx.has(t))
            .collect();
        let reason = if tags.is_empty() {
            format!(
                "its `when` holds: {}",
                serde_json::to_string(w).unwrap_or_default()
            )
        } else {
            format!(
                "the context has {}",
                tags.iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        out.push((tags.len(), e.cap.effects.kind, json!({
            "name": e.name, "intent": e.cap.intent_of(&e.name), "description": e.cap.description,
            "effects": e.cap.effects.kind, "reason": reason,
        })));
    }
    out.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2["name"].as_str().cmp(&b.2["name"].as_str()))
    });
    out.into_iter().map(|(_, _, v)| v).collect()
}
