//! Shape checking: a runbook's JSON form against `runbook.schema.json`, with each error mapped back to the
//! YAML node it is about.
//!
//! Steps are checked one at a time. A step with only the common keys in their plainest form is read
//! straight from its node (`plain_step`); every other step, and every step with an error, goes
//! through the JSON Schema and serde, which make all the diagnostics. Each half of the schema is
//! compiled when first needed (a runbook of plain steps needs no step validator), and a list of
//! 2,048 steps or more is checked in two halves at once, joined in order.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind as K};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use crate::diagnostic::{Code, Diagnostic, suggestion};
use crate::parse::{Node, NodeValue};
use crate::raw::{
    BoolOrTemplate, Effect, RawArgs, RawRetry, RawRunbook, RawStep, RetryOn, runbook_file_schema,
};
use crate::source::SourceFile;

/// The runbook schema split in two, so a runbook is checked one step at a time (a small working set, even
/// for 10,000 steps): its head (every key, with `steps` and `finally` items unchecked) and one step.
/// Each is compiled when first needed: a runbook whose steps are all plain needs no step validator.
struct Compiled {
    schema: Value,
    validator: Validator,
}

/// The keys whose items are steps.
const STEP_LISTS: [&str; 2] = ["steps", "finally"];

/// The validator of a runbook's head.
fn head() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let schema = runbook_file_schema();
        let mut defs = schema["$defs"].clone();
        for list in STEP_LISTS {
            if let Some(p) = defs.pointer_mut(&format!("/Runbook/properties/{list}")) {
                p["items"] = Value::Bool(true);
            }
        }
        let head_schema = serde_json::json!({
            "$schema": schema["$schema"],
            "$ref": "#/$defs/Runbook",
            "$defs": defs,
        });
        let validator =
            jsonschema::draft202012::new(&head_schema).expect("the runbook schema is valid");
        Compiled {
            schema: head_schema,
            validator,
        }
    })
}

/// The validator of one step.
fn step() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let schema = runbook_file_schema();
        let step_schema = serde_json::json!({
            "$schema": schema["$schema"],
            "$ref": "#/$defs/Step",
            "$defs": schema["$defs"],
        });
        let validator =
            jsonschema::draft202012::new(&step_schema).expect("the step schema is valid");
        Compiled {
            schema: step_schema,
            validator,
        }
    })
}

/// Checks one runbook's shape and reads it. `base` is the runbook's JSON pointer in its file. Every shape
/// error is reported, each located at its YAML node.
pub fn check_runbook(
    file: &SourceFile,
    node: &Node,
    base: &str,
) -> Result<RawRunbook, Vec<Diagnostic>> {
    let c = head();
    let mut out = Vec::new();
    // The head: step lists stand in as lists of nulls of the same length, checked one by one below.
    let mut head = serde_json::Map::new();
    for (k, v) in node.entries() {
        let value = match (&v.value, STEP_LISTS.contains(&k.name.as_str())) {
            (NodeValue::Seq(items), true) => Value::Array(vec![Value::Null; items.len()]),
            _ => v.to_json(),
        };
        head.insert(k.name.clone(), value);
    }
    let mut head = Value::Object(head);
    // `is_valid` stops at the first failure and builds no error; only an invalid value is walked again
    // for every error
    if !c.validator.is_valid(&head) {
        for err in c.validator.iter_errors(&head) {
            convert(file, node, base, &c.schema, &err, &mut out);
        }
    }
    let mut lists: Vec<Vec<RawStep>> = Vec::new();
    for list in STEP_LISTS {
        let items = node.get(list).map_or(&[][..], Node::items);
        let (steps, errors) = check_steps(file, items, &format!("{base}/{list}"));
        out.extend(errors);
        if let Some(slot) = head.get_mut(list) {
            *slot = Value::Array(Vec::new());
        }
        lists.push(steps);
    }
    if !out.is_empty() {
        return Err(out);
    }
    let mut raw: RawRunbook = serde_json::from_value(head).map_err(|e| {
        vec![Diagnostic::error(Code::SchemaViolation, e.to_string()).at(file, node.span)]
    })?;
    raw.finally = lists.pop().unwrap_or_default();
    raw.steps = lists.pop().unwrap_or_default();
    Ok(raw)
}

/// From this many steps, a list is checked in two halves at once, the second on a scoped thread.
const SPLIT_STEPS: usize = 2048;

/// Checks and reads a list of steps: in two halves at once when it is long (the steps and the
/// diagnostics come out in the list's order either way).
fn check_steps(file: &SourceFile, items: &[Node], base: &str) -> (Vec<RawStep>, Vec<Diagnostic>) {
    if items.len() < SPLIT_STEPS {
        return check_step_range(file, items, 0, base);
    }
    let mid = items.len() / 2;
    let (first, second) = std::thread::scope(|s| {
        let second = s.spawn(|| check_step_range(file, &items[mid..], mid, base));
        let first = check_step_range(file, &items[..mid], 0, base);
        (first, second.join())
    });
    // a panic in the thread is a panic here, as it would have been in one pass
    let second = second.unwrap_or_else(|p| std::panic::resume_unwind(p));
    let (mut steps, mut out) = first;
    steps.extend(second.0);
    out.extend(second.1);
    (steps, out)
}

/// Checks and reads a list of steps, one at a time. `offset` is the index of the first in its list.
fn check_step_range(
    file: &SourceFile,
    items: &[Node],
    offset: usize,
    base: &str,
) -> (Vec<RawStep>, Vec<Diagnostic>) {
    let mut steps = Vec::with_capacity(items.len());
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(step) = plain_step(item) {
            steps.push(step);
            continue;
        }
        let json = item.to_json();
        let before = out.len();
        let c = step();
        if !c.validator.is_valid(&json) {
            let at = format!("{base}/{}", offset + i);
            for err in c.validator.iter_errors(&json) {
                convert(file, item, &at, &c.schema, &err, &mut out);
            }
        }
        if out.len() == before {
            // `args` (valid: an object) is moved into the step, not read again entry by entry
            let mut json = json;
            let args = match json.get_mut("args") {
                Some(Value::Object(a)) => std::mem::take(a),
                _ => serde_json::Map::new(),
            };
            match serde_json::from_value::<RawStep>(json) {
                Ok(mut step) => {
                    step.args = RawArgs(args);
                    steps.push(step);
                }
                Err(e) => out.push(
                    Diagnostic::error(Code::SchemaViolation, e.to_string()).at(file, item.span),
                ),
            }
        }
    }
    (steps, out)
}

/// A step read straight from its node when it is surely valid: only the common keys, each with a
/// value of its plainest form (no `null`, no `foreach` or `rollback`, integers written as integers).
/// `None` is not an error: the step then goes through the JSON Schema, which finds and locates every
/// error, and serde. What this accepts the schema accepts and serde reads the same (a test holds
/// both); it exists because the JSON round trip was a tenth of a large runbook's load.
fn plain_step(node: &Node) -> Option<RawStep> {
    let mut step = RawStep {
        id: String::new(),
        tool: String::new(),
        args: RawArgs(serde_json::Map::new()),
        needs: Vec::new(),
        when: None,
        foreach: None,
        retry: None,
        timeout_ms: None,
        continue_on_error: None,
        rollback: None,
        effects: None,
        description: None,
    };
    let (mut id, mut tool, mut args) = (false, false, false);
    for (k, v) in node.entries() {
        match (k.name.as_str(), &v.value) {
            ("id", NodeValue::Str(s)) if is_step_id(s) => {
                step.id.clone_from(s);
                id = true;
            }
            ("tool", NodeValue::Str(s)) => {
                step.tool.clone_from(s);
                tool = true;
            }
            ("args", NodeValue::Map(_)) if v.get("action").and_then(Node::as_str).is_some() => {
                match v.to_json() {
                    Value::Object(m) => step.args = RawArgs(m),
                    _ => return None,
                }
                args = true;
            }
            ("needs", NodeValue::Seq(items)) => {
                step.needs = items
                    .iter()
                    .map(|n| n.as_str().map(str::to_owned))
                    .collect::<Option<_>>()?;
            }
            ("when", NodeValue::Bool(b)) => step.when = Some(BoolOrTemplate::Bool(*b)),
            ("when", NodeValue::Str(s)) => step.when = Some(BoolOrTemplate::Template(s.clone())),
            ("retry", NodeValue::Map(_)) => step.retry = Some(plain_retry(v)?),
            ("timeout_ms", value) => step.timeout_ms = Some(uint(value).filter(|t| *t >= 1)?),
            ("continue_on_error", NodeValue::Bool(b)) => step.continue_on_error = Some(*b),
            ("effects", NodeValue::Str(s)) => {
                step.effects = Some(match s.as_str() {
                    "read" => Effect::Read,
                    "write" => Effect::Write,
                    "destructive" => Effect::Destructive,
                    _ => return None,
                });
            }
            ("description", NodeValue::Str(s)) => step.description = Some(s.clone()),
            _ => return None,
        }
    }
    (id && tool && args).then_some(step)
}

/// `^[a-z0-9_][a-z0-9_-]*$`, the pattern of step ids.
fn is_step_id(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// A non-negative integer written as one.
fn uint(v: &NodeValue) -> Option<u64> {
    match v {
        NodeValue::Int(i) => u64::try_from(*i).ok(),
        NodeValue::UInt(u) => Some(*u),
        _ => None,
    }
}

/// `retry` of [`plain_step`].
fn plain_retry(node: &Node) -> Option<RawRetry> {
    let mut attempts = None;
    let mut r = RawRetry {
        attempts: 0,
        delay_ms: None,
        backoff: None,
        max_delay_ms: None,
        jitter: None,
        until: None,
        on: None,
    };
    for (k, v) in node.entries() {
        match (k.name.as_str(), &v.value) {
            ("attempts", value) => {
                attempts = Some(
                    uint(value)
                        .filter(|a| (1..=100).contains(a))
                        .and_then(|a| u32::try_from(a).ok())?,
                );
            }
            ("delay_ms", value) => r.delay_ms = Some(uint(value)?),
            ("max_delay_ms", value) => r.max_delay_ms = Some(uint(value)?),
            ("backoff", NodeValue::Float(f)) if *f >= 1.0 => r.backoff = Some(*f),
            ("backoff", value) => {
                r.backoff = Some(uint(value).filter(|b| *b >= 1 && *b < 1 << 53)? as f64);
            }
            ("jitter", NodeValue::Bool(b)) => r.jitter = Some(*b),
            ("until", NodeValue::Str(s)) => r.until = Some(s.clone()),
            ("on", NodeValue::Seq(items)) => {
                r.on = Some(
                    items
                        .iter()
                        .map(|n| match n.as_str()? {
                            "error" => Some(RetryOn::Error),
                            "timeout" => Some(RetryOn::Timeout),
                            "nonzero_exit" => Some(RetryOn::NonzeroExit),
                            _ => None,
                        })
                        .collect::<Option<_>>()?,
                );
            }
            _ => return None,
        }
    }
    r.attempts = attempts?;
    Some(r)
}

/// Validates any JSON value against any compiled schema and maps errors to spans in `node` (which must be
/// the node `json` was made from). `schema` is the document `schema_path`s point into.
pub fn check_value(
    file: &SourceFile,
    node: &Node,
    json: &Value,
    base: &str,
    validator: &Validator,
    schema: &Value,
    code: Code,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for err in validator.iter_errors(json) {
        convert(file, node, base, schema, &err, &mut out);
    }
    for d in &mut out {
        if d.code == Code::SchemaViolation {
            d.code = code;
        }
    }
    out
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A JSON type as a YAML author would say it.
fn friendly(t: &str) -> &'static str {
    match t {
        "array" => "a list",
        "object" => "a mapping",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        _ => "null",
    }
}

/// A value outside an enumeration, with the nearest allowed value (or the list) as help.
fn unknown_value(what: &str, given: &Value, allowed: &[String]) -> Diagnostic {
    let given = given.as_str().unwrap_or_default();
    let help = suggestion(given, allowed.iter().map(String::as_str))
        .unwrap_or_else(|| format!("use one of: {}", allowed.join(", ")));
    Diagnostic::error(
        Code::SchemaViolation,
        format!("{what} has an unknown value `{given}`"),
    )
    .label("not an allowed value")
    .help(help)
}

/// When every branch of a `oneOf`/`anyOf` is a `const` (a documented enum), the allowed values.
fn one_of_constants(context: &[Vec<ValidationError<'static>>]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for branch in context {
        match branch.as_slice() {
            [e] => match e.kind() {
                K::Constant { expected_value } => out.push(expected_value.as_str()?.to_owned()),
                _ => return None,
            },
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

fn last_key(pointer: &str) -> Option<String> {
    let seg = pointer.rsplit('/').next()?;
    if seg.is_empty() || seg.parse::<usize>().is_ok() {
        return None;
    }
    Some(seg.replace("~1", "/").replace("~0", "~"))
}

/// The properties the schema allows at the object whose keyword produced an error.
fn allowed_properties(schema: &Value, schema_path: &str) -> Vec<String> {
    let parent = schema_path.rsplit_once('/').map_or("", |(p, _)| p);
    schema
        .pointer(parent)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn convert(
    file: &SourceFile,
    node: &Node,
    base: &str,
    schema: &Value,
    err: &ValidationError<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let ptr = err.instance_path().as_str();
    let full = format!("{base}{ptr}");
    let Some((target, key)) = node.pointer(ptr) else {
        out.push(
            Diagnostic::error(Code::SchemaViolation, err.to_string())
                .in_file(file)
                .path(full),
        );
        return;
    };
    let what = match last_key(ptr) {
        Some(k) => format!("`{k}`"),
        None => "the value".to_owned(),
    };
    let d = match err.kind() {
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => {
            let allowed = allowed_properties(schema, err.schema_path().as_str());
            for name in unexpected {
                let span = target.entry(name).map_or(target.span, |(k, _)| k.span);
                let mut d = Diagnostic::error(Code::UnknownKey, format!("unknown key `{name}`"))
                    .at(file, span)
                    .path(format!("{full}/{name}"))
                    .label("not allowed here");
                d = match suggestion(name, allowed.iter().map(String::as_str)) {
                    Some(s) => d.help(s),
                    None if !allowed.is_empty() => {
                        d.help(format!("allowed keys: {}", allowed.join(", ")))
                    }
                    None => d,
                };
                out.push(d);
            }
            return;
        }
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            Diagnostic::error(Code::MissingKey, format!("missing key `{name}`"))
                .at(file, target.focus(key))
                .label(format!("this mapping needs `{name}`"))
                .path(format!("{full}/{name}"))
        }
        K::Type { kind } => {
            let names: Vec<String> = match kind {
                TypeKind::Single(t) => vec![t.to_string()],
                TypeKind::Multiple(ts) => ts.iter().map(|t| t.to_string()).collect(),
            };
            let expected = names
                .iter()
                .filter(|n| *n != "null")
                .map(|n| friendly(n))
                .collect::<Vec<_>>()
                .join(" or ");
            Diagnostic::error(
                Code::SchemaViolation,
                format!(
                    "{what} must be {expected}, not {}",
                    describe(err.instance())
                ),
            )
            .at(file, target.focus(key))
            .label(format!("expected {expected}"))
            .path(full)
        }
        K::Enum { options } => {
            let opts: Vec<String> = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            unknown_value(&what, err.instance(), &opts)
                .at(file, target.focus(key))
                .path(full)
        }
        K::AnyOf { context } | K::OneOfNotValid { context }
            if let Some(opts) = one_of_constants(context) =>
        {
            unknown_value(&what, err.instance(), &opts)
                .at(file, target.focus(key))
                .path(full)
        }
        K::AnyOf { context } | K::OneOfNotValid { context } => {
            // Report the branch that fits the value's type: its errors say more than "matches nothing".
            let instance_type = describe(err.instance());
            let best = context.iter().find(|branch| {
                !branch.iter().any(|e| {
                    e.instance_path().as_str() == ptr && matches!(e.kind(), K::Type { .. })
                })
            });
            if let Some(branch) = best
                && !branch.is_empty()
            {
                for e in branch {
                    convert(file, node, base, schema, e, out);
                }
                return;
            }
            let kinds: Vec<&str> = context
                .iter()
                .filter_map(|b| match b.first().map(ValidationError::kind) {
                    Some(K::Type {
                        kind: TypeKind::Single(t),
                    }) => Some(friendly(t.as_str())),
                    _ => None,
                })
                .collect();
            let expected = if kinds.is_empty() {
                "another shape".to_owned()
            } else {
                kinds.join(" or ")
            };
            Diagnostic::error(
                Code::SchemaViolation,
                format!("{what} must be {expected}, not {instance_type}"),
            )
            .at(file, target.focus(key))
            .path(full)
        }
        _ => {
            let mut msg = err.masked().to_string();
            if msg.len() > 200 {
                msg.truncate(200);
                msg.push('…');
            }
            let msg = format!("{what}: {msg}");
            Diagnostic::error(Code::SchemaViolation, msg)
                .at(file, target.focus(key))
                .path(full)
        }
    };
    out.push(d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    /// What the JSON Schema and serde make of a step, as JSON (`None`: the schema refuses it).
    fn slow(node: &Node) -> Option<Value> {
        let json = node.to_json();
        if !step().validator.is_valid(&json) {
            return None;
        }
        let step: RawStep = serde_json::from_value(json).ok()?;
        serde_json::to_value(step).ok()
    }

    #[test]
    fn a_long_list_checked_in_halves_is_checked_as_in_one_pass() {
        let mut text = String::from("[");
        for i in 0..SPLIT_STEPS + 3 {
            // plain steps, steps left to the schema, and errors on either side of the middle
            text.push_str(&match i % 5 {
                0 => format!("{{id: s{i}, tool: t, args: {{action: a}}}},"),
                1 => format!("{{id: s{i}, tool: t, args: {{action: a}}, foreach: [1]}},"),
                2 => format!("{{id: s{i}, tool: t, args: {{action: a}}, nope: 1}},"),
                3 => format!("{{id: S{i}, tool: t, args: {{action: a}}}},"),
                _ => format!("{{id: s{i}, args: {{action: a}}, retry: {{attempts: 0}}}},"),
            });
        }
        text.push(']');
        let file = SourceFile::new("t.yaml", text);
        let node = parse(&file).expect("parse");
        let items = node.items();
        let (steps, diags) = check_steps(&file, items, "/steps");
        let (one_steps, one_diags) = check_step_range(&file, items, 0, "/steps");
        let json = |s: &[RawStep]| serde_json::to_value(s).expect("json");
        assert_eq!(json(&steps), json(&one_steps));
        assert_eq!(format!("{diags:?}"), format!("{one_diags:?}"));
        assert_eq!(steps.len(), (SPLIT_STEPS + 3).div_ceil(5) * 2 - 1);
        assert!(
            diags
                .iter()
                .any(|d| d.path.as_deref() == Some("/steps/2/nope"))
        );
        assert!(
            diags
                .iter()
                .any(|d| d.path.as_deref() == Some("/steps/2047/nope"))
        );
    }

    #[test]
    fn a_plain_step_is_read_as_the_schema_and_serde_read_it() {
        let accepted = [
            "{id: a, tool: state, args: {action: get, key: k}}",
            "{id: a_1-b, tool: local, args: {action: exec, command: 'echo {{ input.x }}', env: {A: 1}}, needs: [x, y], when: '{{ true }}', retry: {attempts: 2, delay_ms: 0, backoff: 1.5, max_delay_ms: 9, jitter: true, until: '{{ result }}', on: [error, timeout, nonzero_exit]}, timeout_ms: 1, continue_on_error: false, effects: write, description: d}",
            "{id: '_', tool: t, args: {action: ''}, needs: [], when: false, retry: {attempts: 100, backoff: 1}, effects: destructive}",
            "{id: '9', tool: t, args: {action: x}, retry: {attempts: 1, on: []}, effects: read}",
        ];
        for text in accepted {
            let node = parse(&SourceFile::new("t.yaml", text)).expect("parse");
            let fast = plain_step(&node).map(|s| serde_json::to_value(s).expect("json"));
            assert!(fast.is_some(), "{text}");
            assert_eq!(fast, slow(&node), "{text}");
        }
        // each of these is either refused by the schema or left to it (an unusual form)
        let left = [
            "{id: A, tool: t, args: {action: x}}",
            "{id: a b, tool: t, args: {action: x}}",
            "{id: '', tool: t, args: {action: x}}",
            "{id: -a, tool: t, args: {action: x}}",
            "{id: é, tool: t, args: {action: x}}",
            "{id: a, tool: 5, args: {action: x}}",
            "{id: a, args: {action: x}}",
            "{id: a, tool: t}",
            "{id: a, tool: t, args: {key: x}}",
            "{id: a, tool: t, args: {action: 5}}",
            "{id: a, tool: t, args: [action]}",
            "{id: a, tool: t, args: {action: x}, needs: [1]}",
            "{id: a, tool: t, args: {action: x}, needs: b}",
            "{id: a, tool: t, args: {action: x}, when: null}",
            "{id: a, tool: t, args: {action: x}, when: 1}",
            "{id: a, tool: t, args: {action: x}, retry: {attempts: 0}}",
            "{id: a, tool: t, args: {action: x}, retry: {attempts: 101}}",
            "{id: a, tool: t, args: {action: x}, retry: {attempts: 2.0}}",
            "{id: a, tool: t, args: {action: x}, retry: {delay_ms: 1}}",
            "{id: a, tool: t, args: {action: x}, retry: {attempts: 2, delay_ms: -1}}",
            "{id: a, tool: t, args: {action: x}, retry: {attempts: 2, backoff: 0.5}}",
            "{id: a, tool: t, args: {action: x}, retry: {attempts: 2, backoff: 0}}",
            "{id: a, tool: t, args: {action: x}, retry: {attempts: 2, on: [never]}}",
            "{id: a, tool: t, args: {action: x}, retry: {attempts: 2, extra: 1}}",
            "{id: a, tool: t, args: {action: x}, retry: null}",
            "{id: a, tool: t, args: {action: x}, timeout_ms: 0}",
            "{id: a, tool: t, args: {action: x}, timeout_ms: 1.0}",
            "{id: a, tool: t, args: {action: x}, continue_on_error: yes}",
            "{id: a, tool: t, args: {action: x}, effects: none}",
            "{id: a, tool: t, args: {action: x}, description: null}",
            "{id: a, tool: t, args: {action: x}, foreach: [1]}",
            "{id: a, tool: t, args: {action: x}, rollback: {tool: t, args: {action: y}}}",
            "{id: a, tool: t, args: {action: x}, name: n}",
            "[id]",
        ];
        for text in left {
            let node = parse(&SourceFile::new("t.yaml", text)).expect("parse");
            assert!(plain_step(&node).is_none(), "{text}");
        }
    }
}
