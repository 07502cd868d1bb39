//! The original's condition objects (`when`, `retry.until`) as one Tera expression.
//!
//! `{path, exists|equals|not_equals|in|contains|gt|gte|lt|lte}`, `{value, …}`, `{and: […]}`,
//! `{or: […]}`, `{not: …}`, booleans and `{{ path }}` strings. A path that is missing reads as
//! `none` (the original's `null`), never as an error; `exists` means "present and not null".
//! Numbers compare as floats, as the original did.

use serde_json::Value;

use super::path::{self, Cx, quote, value_or_none};

/// The operators of a condition object, in the order the original tried them.
const OPS: &[&str] = &[
    "exists",
    "equals",
    "not_equals",
    "in",
    "contains",
    "gt",
    "gte",
    "lt",
    "lte",
];

/// A condition as a Tera expression (without `{{ }}`).
pub(super) fn condition(c: &Value, cx: &Cx) -> Result<String, String> {
    match c {
        Value::Null => Ok("true".into()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::String(s) => match single_path(s, cx)? {
            Some(v) => Ok(truthy(&v)),
            None if s.contains("{{") => Err(format!(
                "the condition `{s}` mixes text and templates; write one `{{{{ … }}}}` expression"
            )),
            None => Ok((!s.is_empty()).to_string()),
        },
        Value::Object(o) => {
            if let Some(list) = o.get("and") {
                return all(list, " and ", "true", cx);
            }
            if let Some(list) = o.get("or") {
                return all(list, " or ", "false", cx);
            }
            if let Some(inner) = o.get("not") {
                return Ok(format!("not ({})", condition(inner, cx)?));
            }
            for k in o.keys() {
                if k != "path" && k != "value" && !OPS.contains(&k.as_str()) {
                    return Err(format!(
                        "a condition has no key `{k}`; it takes `path` or `value` and one of {}, or `and`, `or`, `not`",
                        OPS.join(", ")
                    ));
                }
            }
            let v = match (o.get("path"), o.get("value")) {
                (Some(Value::String(p)), _) => {
                    if p.contains("{{") {
                        return Err(format!(
                            "the condition path `{p}` is a template; write the condition as a `{{{{ … }}}}` expression"
                        ));
                    }
                    let segs = path::parse(p)
                        .ok_or_else(|| format!("`{p}` is not a data path like `steps.id.field`"))?;
                    value_or_none(&cx.renames.apply(segs))
                }
                (Some(other), _) => {
                    return Err(format!("a condition path must be a string, not `{other}`"));
                }
                (None, Some(v)) => literal(v, cx)?,
                (None, None) => "none".into(),
            };
            let Some(op) = OPS.iter().find(|k| o.contains_key(**k)) else {
                return Ok(truthy(&v));
            };
            let x = &o[*op];
            Ok(match *op {
                "exists" => match x {
                    Value::Bool(false) => format!("{v} is none"),
                    _ => format!("{v} is not none"),
                },
                "equals" => format!("{v} == {}", literal(x, cx)?),
                "not_equals" => format!("{v} != {}", literal(x, cx)?),
                "in" => match x {
                    Value::Array(_) => format!("{v} in {}", literal(x, cx)?),
                    _ => {
                        let l = literal(x, cx)?;
                        format!("(({l}) is array and {v} in ({l}))")
                    }
                },
                "contains" => {
                    let l = literal(x, cx)?;
                    format!("(({v} is string or {v} is array) and ({l}) in {v})")
                }
                cmp => {
                    let sym = match cmp {
                        "gt" => ">",
                        "gte" => ">=",
                        "lt" => "<",
                        _ => "<=",
                    };
                    let l = literal(x, cx)?;
                    let l = match x {
                        Value::Number(_) => l,
                        _ => format!("(0 if ({l}) is none else (({l}) | float))"),
                    };
                    format!("((0 if {v} is none else ({v} | float)) {sym} {l})")
                }
            })
        }
        Value::Array(_) | Value::Number(_) => Err(format!(
            "`{c}` is not a condition; write a `{{{{ … }}}}` expression or a condition object"
        )),
    }
}

fn all(list: &Value, join: &str, empty: &str, cx: &Cx) -> Result<String, String> {
    let Value::Array(items) = list else {
        return Err("`and` and `or` take a list of conditions".into());
    };
    if items.is_empty() {
        return Ok(empty.into());
    }
    let parts = items
        .iter()
        .map(|c| condition(c, cx).map(|e| format!("({e})")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(parts.join(join))
}

/// The original's truthiness: present, not null and not `false`.
fn truthy(v: &str) -> String {
    format!("({v} is not none and {v} != false)")
}

/// A string that is exactly one original `{{ path }}`, as `value_or_none`.
fn single_path(s: &str, cx: &Cx) -> Result<Option<String>, String> {
    let t = s.trim();
    let Some(inner) = t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) else {
        return Ok(None);
    };
    if inner.contains("{{") || inner.contains("}}") {
        return Ok(None);
    }
    let body = inner.trim().trim_start_matches('?');
    Ok(path::parse(body).map(|segs| value_or_none(&cx.renames.apply(segs))))
}

/// A value the original resolved as a template and compared: literals as Tera literals, a string of
/// templates as an expression (one path: its value; text and paths: their concatenation).
pub(super) fn literal(v: &Value, cx: &Cx) -> Result<String, String> {
    Ok(match v {
        Value::Null => "none".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.contains("{{") => template_expr(s, cx)?,
        Value::String(s) => quote(s),
        Value::Array(a) => format!(
            "[{}]",
            a.iter()
                .map(|x| literal(x, cx))
                .collect::<Result<Vec<_>, _>>()?
                .join(", ")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, x)| literal(x, cx).map(|l| format!("{}: {l}", quote(k))))
                .collect::<Result<Vec<_>, _>>()?
                .join(", ")
        ),
    })
}

fn template_expr(s: &str, cx: &Cx) -> Result<String, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    let mut whole = None;
    while let Some(open) = rest.find("{{") {
        let close = rest[open..]
            .find("}}")
            .map(|c| open + c)
            .ok_or_else(|| format!("`{s}` has an unclosed `{{{{`"))?;
        if !rest[..open].is_empty() {
            parts.push(quote(&rest[..open]));
        }
        let mut why = Vec::new();
        let e = path::expression(&rest[open + 2..close], cx, &mut why)
            .ok_or_else(|| format!("`{s}` is not a template of data paths"))?;
        if open == 0 && close + 2 == rest.len() && parts.is_empty() {
            whole = Some(e.clone());
        }
        parts.push(format!("({e})"));
        rest = &rest[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(quote(rest));
    }
    Ok(match whole {
        Some(e) => format!("({e})"),
        None => format!("({})", parts.join(" ~ ")),
    })
}
