//! The original product's runbook syntax, translated into ours before the shape check, so an existing
//! `runbooks.json` loads unchanged. Each translation is a `deprecated-syntax` warning at the old key,
//! whose help shows the new form; what has no equivalent is a `deprecated-syntax` error saying what
//! to write instead. [`fix`] writes the translated file back (the caller does the writing).
//!
//! Runbook keys: `stop_on_error` (`false`: `continue_on_error: true` on every step),
//! `template_missing` (`empty`/`null`: every `{{ path }}` gets a `default`), `seed_state` (a `state
//! set` step per key, first). Step keys: `when` and `retry.until` as condition objects (`cond.rs`),
//! `foreach: {items, as}`, `retry.{max_attempts, base_delay_ms, backoff_factor, retry_on_error}`,
//! `output: {path}` (reads of `steps.<id>` gain the path), `store_as`/`store_scope` (a `state set`
//! step after the step), `name` for `id`. Templates: `{{ ?x }}`, `a.0`, `trace_id` (`path.rs`).
//!
//! New nodes carry the span of the original node they replace, so later diagnostics point at it.
//!
//! `surely_current` looks first, in one walk that allocates nothing: a file with none of the
//! original's keys or shapes and no template the rewrite would touch is left as it is, unwalked.
//!
//! Decided differently from the original: a step reading a skipped step's result is skipped (the
//! original evaluated `exists: false` as true); `--fix` does not rewrite YAML files with comments.

mod cond;
mod fix;
mod path;

use std::collections::HashSet;

use serde_json::Value;

pub use fix::{Fixed, fix};
use path::{Cx, Missing, Renames, Seg};

use crate::diagnostic::{Code, Diagnostic};
use crate::parse::{Key, Node, NodeValue};
use crate::source::{SourceFile, Span};

/// What translation found in one file.
#[derive(Debug, Default)]
pub struct Translated {
    /// One `deprecated-syntax` warning per translation, an error per construct it cannot translate.
    pub diagnostics: Vec<Diagnostic>,
    /// JSON pointers of the runbooks with such an error (not checked further).
    pub broken: Vec<String>,
}

/// Whether a file is JSON (its name, else its first character).
pub(crate) fn is_json(file: &SourceFile) -> bool {
    file.name().ends_with(".json") || file.text().trim_start().starts_with('{')
}

/// Translates every runbook in `root` in place: the whole file when `map_form` is false, else each value.
pub fn translate(file: &SourceFile, root: &mut Node, map_form: bool) -> Translated {
    if surely_current(root) {
        return Translated::default();
    }
    translate_all(file, root, map_form)
}

/// [`translate`] without its first look.
fn translate_all(file: &SourceFile, root: &mut Node, map_form: bool) -> Translated {
    let mut out = Translated::default();
    let json = is_json(file);
    if map_form {
        if let NodeValue::Map(entries) = &mut root.value {
            for (k, v) in entries.iter_mut() {
                if !runbook(file, v, json, &mut out.diagnostics) {
                    out.broken
                        .push(format!("/{}", k.name.replace('~', "~0").replace('/', "~1")));
                }
            }
        }
    } else if !runbook(file, root, json, &mut out.diagnostics) {
        out.broken.push(String::new());
    }
    out
}

/// Whether translation surely changes nothing in `root`, found by one walk that allocates nothing:
/// no key of the original's (runbook, step, `args` or `retry` keys, wherever they are), no
/// `foreach` as a mapping, no `when` or `until` as a mapping or list, no list item with a `name` and no `id` (a
/// step named the original's way), and every string's `{{ … }}` blocks
/// [`path::plainly_unchanged_blocks`]. With none of these every step's rewrite context is plain, and
/// each part of [`runbook`] leaves the tree as it is and reports nothing. `false`: not sure.
fn surely_current(root: &Node) -> bool {
    let mut stack = vec![(root, false)];
    while let Some((n, item)) = stack.pop() {
        match &n.value {
            NodeValue::Str(s) if !path::plainly_unchanged_blocks(s) => return false,
            NodeValue::Seq(items) => stack.extend(items.iter().map(|i| (i, true))),
            NodeValue::Map(entries) => {
                if item
                    && entries.iter().any(|(k, _)| k.name == "name")
                    && !entries.iter().any(|(k, _)| k.name == "id")
                {
                    return false;
                }
                for (k, v) in entries {
                    let map = matches!(v.value, NodeValue::Map(_));
                    let collection = map || matches!(v.value, NodeValue::Seq(_));
                    match k.name.as_str() {
                        "stop_on_error" | "template_missing" | "seed_state" | "output"
                        | "store_as" | "store_scope" | "max_attempts" | "base_delay_ms"
                        | "backoff_factor" | "retry_on_error" => return false,
                        "foreach" if map => return false,
                        "when" | "until" if collection => return false,
                        _ => {}
                    }
                    stack.push((v, false));
                }
            }
            _ => {}
        }
    }
    true
}

struct W<'a> {
    file: &'a SourceFile,
    json: bool,
    diags: &'a mut Vec<Diagnostic>,
    ok: bool,
}

impl W<'_> {
    fn warn(&mut self, span: Span, message: String, help: String) {
        self.diags.push(
            Diagnostic::warning(Code::DeprecatedSyntax, message)
                .at(self.file, span)
                .label("the original's syntax")
                .help(help),
        );
    }

    fn error(&mut self, span: Span, message: String, help: &str) {
        self.ok = false;
        self.diags.push(
            Diagnostic::error(Code::DeprecatedSyntax, message)
                .at(self.file, span)
                .help(help.to_owned()),
        );
    }

    /// `write "key": value` in the file's own syntax (JSON, or YAML flow style).
    fn form(&self, key: &str, v: &Value) -> String {
        let v = serde_json::to_string(v).unwrap_or_default();
        if self.json {
            format!("write `\"{key}\": {v}`")
        } else {
            format!("write `{key}: {v}`")
        }
    }
}

fn take(entries: &mut Vec<(Key, Node)>, name: &str) -> Option<(Key, Node)> {
    let i = entries.iter().position(|(k, _)| k.name == name)?;
    Some(entries.remove(i))
}

fn put(entries: &mut Vec<(Key, Node)>, name: &str, node: Node, span: Span) {
    match entries.iter_mut().find(|(k, _)| k.name == name) {
        Some(slot) => slot.1 = node,
        None => entries.push((
            Key {
                name: name.to_owned(),
                span,
            },
            node,
        )),
    }
}

/// Replaces the entry `old` by `name: node`, where `old` was.
fn rename(entries: &mut [(Key, Node)], old: &str, name: &str, node: Node) {
    if let Some(slot) = entries.iter_mut().find(|(k, _)| k.name == old) {
        slot.0.name = name.to_owned();
        slot.1 = node;
    }
}

fn get<'a>(entries: &'a [(Key, Node)], name: &str) -> Option<&'a Node> {
    entries.iter().find(|(k, _)| k.name == name).map(|(_, v)| v)
}

/// A JSON value as a node located at `span`.
fn node(v: &Value, span: Span) -> Node {
    let value = match v {
        Value::Null => NodeValue::Null,
        Value::Bool(b) => NodeValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), ..) => NodeValue::Int(i),
            (_, Some(u), _) => NodeValue::UInt(u),
            (.., f) => NodeValue::Float(f.unwrap_or_default()),
        },
        Value::String(s) => NodeValue::Str(s.clone()),
        Value::Array(a) => NodeValue::Seq(a.iter().map(|x| node(x, span)).collect()),
        Value::Object(o) => NodeValue::Map(
            o.iter()
                .map(|(k, x)| {
                    (
                        Key {
                            name: k.clone(),
                            span,
                        },
                        node(x, span),
                    )
                })
                .collect(),
        ),
    };
    Node { span, value }
}

/// A step id made from `base` that is not taken yet (a set: a file of many `store_as` steps makes one
/// id each, and each is looked up among all).
fn fresh(base: &str, taken: &mut HashSet<String>) -> String {
    let mut id = base.to_owned();
    let mut n = 2;
    while taken.contains(&id) {
        id = format!("{base}_{n}");
        n += 1;
    }
    taken.insert(id.clone());
    id
}

/// Translates one runbook; false when something could not be translated.
fn runbook(file: &SourceFile, rb: &mut Node, json: bool, diags: &mut Vec<Diagnostic>) -> bool {
    let NodeValue::Map(entries) = &mut rb.value else {
        return true;
    };
    let mut w = W {
        file,
        json,
        diags,
        ok: true,
    };
    let mut missing = Missing::Error;
    if let Some((k, v)) = take(entries, "template_missing") {
        match v.as_str() {
            Some("error") => w.warn(
                k.span,
                "`template_missing: error` is the original's syntax".into(),
                "remove it: a reference to a missing value fails the step by default".into(),
            ),
            Some(m @ ("empty" | "null" | "undefined")) => {
                let (mode, d) = if m == "empty" {
                    (Missing::Empty, "\"\"")
                } else {
                    (Missing::Null, "none")
                };
                missing = mode;
                w.warn(
                    k.span,
                    format!("`template_missing: {m}` is the original's syntax"),
                    format!("remove it and give each reference that may be missing a default: `{{{{ x | default(value={d}) }}}}` (translated so)"),
                );
            }
            _ => w.error(
                v.span,
                "`template_missing` takes `error`, `empty` or `null`".into(),
                "remove it, and give references that may be missing `| default(value=…)`",
            ),
        }
    }
    let mut keep_going = false;
    if let Some((k, v)) = take(entries, "stop_on_error") {
        match v.value {
            NodeValue::Bool(true) => w.warn(
                k.span,
                "`stop_on_error` is the original's syntax".into(),
                "remove it: a failing step stops the run by default".into(),
            ),
            NodeValue::Bool(false) => {
                keep_going = true;
                w.warn(
                    k.span,
                    "`stop_on_error: false` is the original's syntax".into(),
                    "remove it and write `continue_on_error: true` on the steps whose failure the run may survive (translated so on every step)".into(),
                );
            }
            _ => w.error(
                v.span,
                "`stop_on_error` must be `true` or `false`".into(),
                "remove it, or write `continue_on_error: true` on steps",
            ),
        }
    }
    let seed = take(entries, "seed_state");
    let dag = get(entries, "flow").and_then(Node::as_str) == Some("dag");

    // Pass 1: ids, outputs and store_as (which rename references everywhere).
    let mut taken: HashSet<String> = HashSet::new();
    for list in ["steps", "finally"] {
        for s in get(entries, list).map_or(&[][..], Node::items) {
            if let Some(id) = s.get("id").or_else(|| s.get("name")).and_then(Node::as_str) {
                taken.insert(id.to_owned());
            }
        }
    }
    let mut renames = Renames::default();
    for list in ["steps", "finally"] {
        let Some(NodeValue::Seq(steps)) = entries
            .iter_mut()
            .find(|(k, _)| k.name == list)
            .map(|(_, v)| &mut v.value)
        else {
            continue;
        };
        let mut inserts = Vec::new();
        for (i, s) in steps.iter_mut().enumerate() {
            if let Some(store) = outputs(&mut w, s, &mut renames, &mut taken) {
                inserts.push((i + 1, store));
            }
        }
        for (at, s) in inserts.into_iter().rev() {
            steps.insert(at, s);
        }
    }
    // Pass 2: each step's own keys and templates.
    let base = Cx { renames, missing };
    for list in ["steps", "finally"] {
        if let Some(NodeValue::Seq(steps)) = entries
            .iter_mut()
            .find(|(k, _)| k.name == list)
            .map(|(_, v)| &mut v.value)
        {
            for s in steps.iter_mut() {
                step(&mut w, s, &base, keep_going);
            }
        }
    }
    if let Some(NodeValue::Map(outs)) = entries
        .iter_mut()
        .find(|(k, _)| k.name == "outputs")
        .map(|(_, v)| &mut v.value)
    {
        for (_, v) in outs.iter_mut() {
            strings(&mut w, v, &base);
        }
    }
    if let Some((k, v)) = seed {
        seed_state(&mut w, entries, &k, &v, dag, &mut taken);
    }
    w.ok
}

/// `seed_state: {key: value}`: a `state set` step per key, before every other step.
fn seed_state(
    w: &mut W<'_>,
    entries: &mut [(Key, Node)],
    k: &Key,
    v: &Node,
    dag: bool,
    taken: &mut HashSet<String>,
) {
    let NodeValue::Map(seeds) = &v.value else {
        w.error(
            v.span,
            "`seed_state` must map state keys to values".into(),
            "write a first step `{\"id\": \"seed\", \"tool\": \"state\", \"args\": {\"action\": \"set\", \"key\": …, \"value\": …}}`",
        );
        return;
    };
    let mut new = Vec::new();
    for (key, val) in seeds {
        let id = fresh(
            &format!(
                "seed_{}",
                key.name
                    .to_ascii_lowercase()
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_")
            ),
            taken,
        );
        let s = serde_json::json!({
            "id": id,
            "tool": "state",
            "args": {"action": "set", "key": key.name, "value": val.to_json(), "scope": "session"}
        });
        new.push(node(&s, key.span));
    }
    let shown: Vec<Value> = new.iter().map(Node::to_json).collect();
    w.warn(
        k.span,
        "`seed_state` is an argument of the original's `runbook_run`, not a runbook key".into(),
        format!(
            "remove it and start `steps` with {} (translated so)",
            serde_json::to_string(&shown).unwrap_or_default()
        ),
    );
    let ids: Vec<Value> = shown.iter().map(|s| s["id"].clone()).collect();
    if let Some((
        _,
        Node {
            value: NodeValue::Seq(steps),
            ..
        },
    )) = entries.iter_mut().find(|(k, _)| k.name == "steps")
    {
        if dag {
            for s in steps.iter_mut() {
                if let NodeValue::Map(e) = &mut s.value {
                    let mut needs = get(e, "needs")
                        .map(Node::to_json)
                        .unwrap_or(Value::Array(vec![]));
                    if let Value::Array(n) = &mut needs {
                        n.extend(ids.iter().cloned());
                    }
                    put(e, "needs", node(&needs, k.span), k.span);
                }
            }
        }
        steps.splice(0..0, new);
    }
}

/// Pass 1 for one step: `name` as `id`, `output` (a rename) and `store_as` (a new step, returned).
fn outputs(
    w: &mut W<'_>,
    s: &mut Node,
    renames: &mut Renames,
    taken: &mut HashSet<String>,
) -> Option<Node> {
    let NodeValue::Map(e) = &mut s.value else {
        return None;
    };
    if get(e, "id").is_none()
        && let Some((k, v)) = take(e, "name")
    {
        w.warn(
            k.span,
            "a step's `name` is the original's syntax".into(),
            w.form("id", &v.to_json()),
        );
        e.insert(
            0,
            (
                Key {
                    name: "id".into(),
                    span: k.span,
                },
                v,
            ),
        );
    }
    // one pass over the keys first: most steps have none of these, and are left at that
    let shaping = |entries: &[(Key, Node)]| {
        entries
            .iter()
            .any(|(k, _)| matches!(k.name.as_str(), "output" | "store_as" | "store_scope"))
    };
    if !shaping(e) && !get(e, "args").is_some_and(|a| shaping(a.entries())) {
        return None;
    }
    let id = get(e, "id")
        .and_then(Node::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut found: Vec<(Key, Node)> = Vec::new();
    for key in ["output", "store_as", "store_scope"] {
        found.extend(take(e, key));
        if let Some(NodeValue::Map(args)) = e
            .iter_mut()
            .find(|(k, _)| k.name == "args")
            .map(|(_, v)| &mut v.value)
        {
            found.extend(take(args, key));
        }
    }
    let mut store: Option<(String, String, Span)> = None;
    let mut scope: Option<String> = None;
    for (k, v) in &found {
        match k.name.as_str() {
            "output" => {
                let path = match &v.value {
                    NodeValue::Map(o) if o.len() == 1 => get(o, "path").and_then(Node::as_str),
                    _ => None,
                };
                match path.and_then(path::parse_relative) {
                    Some(segs) => {
                        let shown: Vec<String> = segs.iter().map(seg_text).collect();
                        w.warn(
                            k.span,
                            "`output` (shaping a step's result) is the original's syntax".into(),
                            format!(
                                "remove it and read `steps.{id}.{}` where the value is used (translated so)",
                                shown.join(".")
                            ),
                        );
                        std::sync::Arc::make_mut(&mut renames.outputs).insert(id.clone(), segs);
                    }
                    None => w.error(
                        k.span,
                        "this `output` has no equivalent: a step's result is kept whole".into(),
                        "remove `output` and read the fields you need where they are used: `{{ steps.<id>.field }}`",
                    ),
                }
            }
            "store_as" => match &v.value {
                NodeValue::Str(key) => store = Some((key.clone(), String::new(), k.span)),
                NodeValue::Map(o) if get(o, "key").and_then(Node::as_str).is_some() => {
                    let key = get(o, "key").and_then(Node::as_str).unwrap_or_default();
                    let sc = get(o, "scope").and_then(Node::as_str).unwrap_or_default();
                    store = Some((key.to_owned(), sc.to_owned(), k.span));
                }
                _ => w.error(
                    v.span,
                    "`store_as` must be a state key or `{key, scope}`".into(),
                    "add a `state` step with `action: set` after this step",
                ),
            },
            _ => scope = v.as_str().map(str::to_owned),
        }
    }
    let (key, sc, span) = store?;
    let sc = if sc.is_empty() {
        scope.unwrap_or_else(|| "session".into())
    } else {
        sc
    };
    let new_id = fresh(&format!("{id}_store"), taken);
    let s = serde_json::json!({
        "id": new_id,
        "tool": "state",
        "args": {"action": "set", "key": key, "value": format!("{{{{ steps.{id} }}}}"), "scope": sc}
    });
    let mut shown = s.clone();
    let cx = Cx {
        renames: renames.clone(),
        missing: Missing::Error,
    };
    if let Ok(Some((v, _))) = path::rewrite(&format!("{{{{ steps.{id} }}}}"), &cx) {
        shown["args"]["value"] = Value::String(v);
    }
    w.warn(
        span,
        "`store_as` is the original's syntax".into(),
        format!(
            "remove it and add after this step {} (translated so)",
            serde_json::to_string(&shown).unwrap_or_default()
        ),
    );
    Some(node(&s, span))
}

fn seg_text(s: &Seg) -> String {
    match s {
        Seg::Key(k) => k.clone(),
        Seg::Index(i) => i.to_string(),
    }
}

/// Pass 2 for one step.
fn step(w: &mut W<'_>, s: &mut Node, base: &Cx, keep_going: bool) {
    let NodeValue::Map(e) = &mut s.value else {
        return;
    };
    let id = get(e, "id")
        .and_then(Node::as_str)
        .unwrap_or_default()
        .to_owned();
    if keep_going && get(e, "continue_on_error").is_none() {
        let span = e.first().map_or(s.span, |(k, _)| k.span);
        put(e, "continue_on_error", node(&Value::Bool(true), span), span);
    }
    let mut cx = base.clone();
    if let Some((k, v)) = e.iter().find(|(k, _)| k.name == "foreach").cloned() {
        let (items, name) = foreach(w, &k, v);
        cx.renames.item = name.filter(|n| n != "item");
        rename(e, "foreach", "foreach", items);
    }
    for (k, v) in e.iter_mut() {
        match k.name.as_str() {
            "args" | "foreach" => strings(w, v, &cx),
            "when" if v.as_str().is_some() => strings(w, v, base),
            _ => {}
        }
    }
    if let Some((k, v)) = e.iter_mut().find(|(k, _)| k.name == "when")
        && matches!(v.value, NodeValue::Map(_) | NodeValue::Seq(_))
    {
        to_template(w, k, v, base, "when");
    }
    if let Some((_, v)) = e.iter_mut().find(|(k, _)| k.name == "retry") {
        let mut until_cx = cx.clone();
        until_cx.renames.result = base.renames.outputs.get(&id).cloned();
        retry(w, v, &until_cx);
    }
}

/// A condition object as `"{{ expr }}"`, in place.
fn to_template(w: &mut W<'_>, k: &Key, v: &mut Node, cx: &Cx, what: &str) {
    match cond::condition(&v.to_json(), cx) {
        Ok(expr) => {
            let t = Value::String(format!("{{{{ {expr} }}}}"));
            w.warn(
                k.span,
                format!("`{what}` as a condition object is the original's syntax"),
                w.form(&k.name, &t),
            );
            *v = node(&t, v.span);
        }
        Err(m) => w.error(v.span, m, "write the condition as a `{{ … }}` expression"),
    }
}

/// `foreach: {items, as, parallel}` → the items, and the name items had.
fn foreach(w: &mut W<'_>, k: &Key, v: Node) -> (Node, Option<String>) {
    let NodeValue::Map(f) = &v.value else {
        return (v, None);
    };
    let Some(items) = get(f, "items").cloned() else {
        w.error(
            v.span,
            "`foreach` as a mapping needs `items`".into(),
            "write `foreach` as a list or a template that renders to one",
        );
        return (v, None);
    };
    let name = get(f, "as").and_then(Node::as_str).map(str::to_owned);
    for (fk, fv) in f {
        let fine = match fk.name.as_str() {
            "items" => true,
            "as" => name
                .as_deref()
                .is_some_and(|n| path::parse(n).is_some_and(|p| p.len() == 1)),
            "parallel" => matches!(fv.value, NodeValue::Bool(_)),
            _ => false,
        };
        if !fine {
            w.error(
                fk.span,
                format!("`foreach.{}` has no equivalent", fk.name),
                "write `foreach` as a list or a template; each element is `item`, its position `index`",
            );
        }
    }
    let mut help = w.form("foreach", &items.to_json());
    if let Some(n) = name.as_deref().filter(|n| *n != "item") {
        help.push_str(&format!(
            " and read each element as `item`, not `{n}` (translated so)"
        ));
    }
    if get(f, "parallel").is_some() {
        help.push_str("; items run one at a time unless the runbook sets `max_parallel`");
    }
    w.warn(
        k.span,
        "`foreach` as `{items, as}` is the original's syntax".into(),
        help,
    );
    (items, name)
}

/// The original's retry keys, in place.
fn retry(w: &mut W<'_>, v: &mut Node, cx: &Cx) {
    let NodeValue::Map(r) = &mut v.value else {
        return;
    };
    let legacy = [
        "max_attempts",
        "base_delay_ms",
        "backoff_factor",
        "retry_on_error",
    ];
    let mut changed = false;
    let ok_before = w.ok;
    let mut first: Option<Span> = None;
    for name in legacy {
        let Some((k, val)) = r.iter().find(|(k, _)| k.name == name).cloned() else {
            continue;
        };
        first.get_or_insert(k.span);
        changed = true;
        match name {
            "max_attempts" => match val.to_json().as_u64() {
                Some(n) => rename(r, name, "attempts", node(&Value::from(n.clamp(1, 50)), val.span)),
                None => w.error(
                    val.span,
                    "`max_attempts` must be a number here".into(),
                    "write `attempts: <number>`: the number of attempts is fixed when the runbook is checked",
                ),
            },
            "base_delay_ms" => rename(r, name, "delay_ms", val),
            "backoff_factor" => {
                let b = val.to_json().as_f64().unwrap_or(1.0).max(1.0);
                rename(r, name, "backoff", node(&Value::from(b), val.span));
            }
            _ if matches!(val.value, NodeValue::Bool(false)) => {
                rename(r, name, "on", node(&Value::Array(vec![]), val.span));
            }
            _ => {
                take(r, name);
            }
        }
    }
    if let Some((k, u)) = r.iter_mut().find(|(k, _)| k.name == "until") {
        if matches!(u.value, NodeValue::Map(_) | NodeValue::Seq(_)) {
            match cond::condition(&u.to_json(), cx) {
                Ok(expr) => {
                    *u = node(&Value::String(format!("{{{{ {expr} }}}}")), u.span);
                    first.get_or_insert(k.span);
                    changed = true;
                }
                Err(m) => w.error(
                    u.span,
                    m,
                    "write `until` as a `{{ … }}` expression over `result`",
                ),
            }
        } else {
            strings(w, u, cx);
        }
    }
    if changed
        && w.ok == ok_before
        && let Some(span) = first
    {
        let new = Value::Object(
            r.iter()
                .map(|(k, v)| (k.name.clone(), v.to_json()))
                .collect(),
        );
        w.warn(
            span,
            "this `retry` uses the original's syntax".into(),
            w.form("retry", &new),
        );
    }
}

/// Rewrites the original's templates in every string under `n`.
fn strings(w: &mut W<'_>, n: &mut Node, cx: &Cx) {
    let mut stack = vec![n];
    while let Some(n) = stack.pop() {
        let span = n.span;
        match &mut n.value {
            NodeValue::Str(s) => match path::rewrite(s, cx) {
                Ok(Some((new, why))) => {
                    if !why.is_empty() {
                        let says: Vec<&str> = why.iter().map(|y| y.says()).collect();
                        w.warn(
                            span,
                            format!("this template uses the original's {}", says.join(" and ")),
                            format!("write `{new}`"),
                        );
                    }
                    *s = new;
                }
                Ok(None) => {}
                Err(m) => w.error(span, m, "read the renamed value by its new path"),
            },
            NodeValue::Seq(items) => stack.extend(items.iter_mut()),
            NodeValue::Map(e) => stack.extend(e.iter_mut().map(|(_, v)| v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
