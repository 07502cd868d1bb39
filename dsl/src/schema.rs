//! Shape checking: a runbook's JSON form against `runbook.schema.json`, with each error mapped back to the
//! YAML node it is about.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind as K};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use crate::diagnostic::{Code, Diagnostic, suggestion};
use crate::parse::{Node, NodeValue};
use crate::raw::{RawArgs, RawRunbook, RawStep, runbook_file_schema};
use crate::source::SourceFile;

/// The runbook schema split in two, so a runbook is checked one step at a time (a small working set, even
/// for 10,000 steps): its head (every key, with `steps` and `finally` items unchecked) and one step.
struct Compiled {
    head_schema: Value,
    head: Validator,
    step_schema: Value,
    step: Validator,
}

/// The keys whose items are steps.
const STEP_LISTS: [&str; 2] = ["steps", "finally"];

fn compiled() -> &'static Compiled {
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
        let step_schema = serde_json::json!({
            "$schema": schema["$schema"],
            "$ref": "#/$defs/Step",
            "$defs": schema["$defs"],
        });
        let head = jsonschema::draft202012::new(&head_schema).expect("the runbook schema is valid");
        let step = jsonschema::draft202012::new(&step_schema).expect("the step schema is valid");
        Compiled {
            head_schema,
            head,
            step_schema,
            step,
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
    let c = compiled();
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
    if !c.head.is_valid(&head) {
        for err in c.head.iter_errors(&head) {
            convert(file, node, base, &c.head_schema, &err, &mut out);
        }
    }
    let mut lists: Vec<Vec<RawStep>> = Vec::new();
    for list in STEP_LISTS {
        let items = node.get(list).map_or(&[][..], Node::items);
        let (steps, errors) = check_step_range(file, items, 0, &format!("{base}/{list}"));
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

/// Checks and reads a list of steps, one at a time. `offset` is the index of the first in its list.
fn check_step_range(
    file: &SourceFile,
    items: &[Node],
    offset: usize,
    base: &str,
) -> (Vec<RawStep>, Vec<Diagnostic>) {
    let c = compiled();
    let mut steps = Vec::with_capacity(items.len());
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let json = item.to_json();
        let before = out.len();
        if !c.step.is_valid(&json) {
            let at = format!("{base}/{}", offset + i);
            for err in c.step.iter_errors(&json) {
                convert(file, item, &at, &c.step_schema, &err, &mut out);
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
