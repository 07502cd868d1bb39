//! The result budget: no reply carries more than [`RESULT_BUDGET`] bytes of serialized `result`.
//!
//! A run's result over the budget ([`budget`]) is written whole to `result.json` in the run's directory
//! (linked, named by `result_uri`), marked `truncated`, and cut in place. A front-end tool's own result
//! over the budget ([`cut_front_end`]: a journal, audit records, an artifact's bytes, data infra keeps and
//! can page through) is cut in place with no artifact. Cutting in place ([`shrink`]) shortens long strings
//! and long arrays, halving the caps until the result fits, so every small field (an exit code, a status,
//! the URIs of the output's own artifacts) stays where it was; each cut says how much it left out.

use std::sync::Arc;

use engine::record::Redactor;
use engine::record::artifacts;
use engine::run::Engine;

use super::reply::RunRef;
use serde_json::{Value, json};

/// The most text a result carries; the rest is in an artifact.
pub const RESULT_BUDGET: usize = 16 * 1024;

/// Keeps a result under [`RESULT_BUDGET`]. A larger one is written whole to an artifact (linked, and
/// named by `result_uri`), marked `truncated`, and cut in place: its long strings (stdout, bodies) and
/// long arrays (rows) are shortened until it fits, so every small field (exit code, status, URIs of the
/// output's own artifacts) stays where it was. A result that cannot be cut that way becomes an excerpt.
pub fn budget(engine: &Engine, outcome: &RunRef, body: &mut Value, links: &mut Vec<String>) {
    if body["result"].to_string().len() <= RESULT_BUDGET {
        return;
    }
    let redactor = Arc::clone(engine.redactor());
    // masked before any cut: a cut inside a secret would leave a part no later mask recognises
    body["result"] = redactor.redact_value(&body["result"]);
    let text = body["result"].to_string();
    body["truncated"] = true.into();
    match artifacts::write_json(
        &outcome.dir,
        &outcome.uri_base,
        "result.json",
        &body["result"],
        redactor,
    ) {
        Ok(a) => {
            body["result_uri"] = a.uri.clone().into();
            body["result_bytes"] = text.len().into();
            links.push(a.uri.clone());
            if let Some(cut) = shrink(&body["result"], RESULT_BUDGET - 1024) {
                body["result"] = cut;
                return;
            }
            // the excerpt is a string inside the result, so it is escaped again: size it after escaping
            let room = RESULT_BUDGET - 2048;
            let mut cut = room.min(text.len());
            loop {
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                if serde_json::to_string(&text[..cut]).map_or(0, |e| e.len()) <= room {
                    break;
                }
                cut = cut * 9 / 10;
            }
            body["result"] = json!({"excerpt": &text[..cut], "bytes": text.len(), "uri": a.uri});
        }
        Err(e) => {
            body["result"] = json!({"excerpt": "", "error": format!("the result was too large and could not be stored: {e}")});
        }
    }
}

/// Keeps a front-end tool's own result (a journal, audit records, an artifact's bytes: data infra keeps
/// and can page through) under [`RESULT_BUDGET`], cut in place like a run's, masked with `mask` first
/// (`None` only for a result the operator let out unmasked).
pub fn cut_front_end(body: &mut Value, mask: Option<&Redactor>) {
    if body["result"].to_string().len() <= RESULT_BUDGET {
        return;
    }
    if let Some(r) = mask {
        body["result"] = r.redact_value(&body["result"]);
    }
    let len = body["result"].to_string().len();
    body["truncated"] = true.into();
    body["result_bytes"] = len.into();
    body["result"] = shrink(&body["result"], RESULT_BUDGET - 1024).unwrap_or_else(|| {
        json!({"excerpt": "", "bytes": len, "hint": "ask for less: a smaller `limit` or `max_bytes`"})
    });
}

/// `v` with strings cut to at most `cap` bytes and arrays to at most `items` elements (each cut says how
/// much it left out).
fn cut_to(v: &Value, cap: usize, items: usize) -> Value {
    match v {
        Value::String(s) if s.len() > cap => {
            let mut end = cap;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… [{} more bytes cut]", &s[..end], s.len() - end).into()
        }
        Value::Array(a) => {
            let mut out: Vec<Value> = a
                .iter()
                .take(items)
                .map(|x| cut_to(x, cap, items))
                .collect();
            if a.len() > items {
                out.push(format!("… [{} more items cut]", a.len() - items).into());
            }
            Value::Array(out)
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), cut_to(x, cap, items)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The largest cut of `v` (halving the caps each time) that fits `budget` bytes of JSON, if one does
/// while strings keep at least 128 bytes and arrays 4 items.
fn shrink(v: &Value, budget: usize) -> Option<Value> {
    if !v.is_object() && !v.is_array() {
        return None;
    }
    let (mut cap, mut items) = (budget / 2, 256usize);
    while cap >= 128 {
        let cut = cut_to(v, cap, items);
        if cut.to_string().len() <= budget {
            return Some(cut);
        }
        cap /= 2;
        items = (items / 2).max(4);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_result_is_cut_in_place() {
        let rows: Vec<Value> = (0..5000)
            .map(|i| json!({"n": i, "name": format!("row {i}")}))
            .collect();
        let v = json!({"exit_code": 0, "stdout": "x".repeat(200_000), "stdout_uri": "artifact://runs/a/b/c/stdout", "rows": rows});
        let cut = shrink(&v, RESULT_BUDGET - 1024).expect("fits");
        assert!(cut.to_string().len() <= RESULT_BUDGET - 1024);
        assert_eq!(cut["exit_code"], 0);
        assert_eq!(cut["stdout_uri"], "artifact://runs/a/b/c/stdout");
        let out = cut["stdout"].as_str().expect("stdout");
        assert!(
            out.starts_with("xxx") && out.ends_with("more bytes cut]"),
            "{out:.40}"
        );
        let kept = cut["rows"].as_array().expect("rows");
        assert_eq!(kept[0], json!({"n": 0, "name": "row 0"}));
        assert!(
            kept.last()
                .and_then(Value::as_str)
                .is_some_and(|s| s.contains("more items"))
        );
        // a lone string cannot be cut in place
        assert!(shrink(&json!("y".repeat(100_000)), 1000).is_none());
    }
}
