//! What one line from an MCP client is, decided before the protocol library sees it, so that every
//! request gets exactly one answer: JSON-RPC 2.0's error codes for what cannot be a request, with the
//! request's id whenever it can be read, even from a line that is not valid JSON.
//!
//! No rmcp type here: `classify` works on bytes and `serde_json` values; `mod.rs` turns a `Verdict::Pass`
//! into rmcp's message types (and answers `-32602` when a known method's `params` do not fit).
//!
//! Known limits: the id of a damaged line is read up to the first damage (`scan_envelope`), else
//! `null`; an oversized line with a `method` but no id is answered; a last line without a newline is
//! dropped; a bad `cursor` is ignored.

use serde_json::{Map, Value};

/// JSON-RPC 2.0: the line is not JSON (or not JSON this server can read: a lone surrogate, a number
/// beyond `f64`, nesting deeper than 128 levels).
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0: the JSON is not a valid request.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC 2.0: the method's parameters are not what it takes.
pub const INVALID_PARAMS: i64 = -32602;

/// How much of an oversized line is kept to find its `id`.
pub const KEPT_PREFIX: usize = 64 * 1024;

/// An error answer the framing writes itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub code: i64,
    /// The request's id; `Value::Null` when it could not be read.
    pub id: Value,
    pub message: String,
}

impl Fault {
    pub fn new(code: i64, id: Value, message: impl Into<String>) -> Self {
        Fault {
            code,
            id,
            message: message.into(),
        }
    }

    /// The error response, one line with its newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(&serde_json::json!({
            "jsonrpc": "2.0", "id": self.id, "error": {"code": self.code, "message": self.message}
        }))
        .unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// What to do with one line.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Nothing: a blank line, or a notification or response that cannot be used (neither is answered).
    Ignore,
    /// Answer with this error.
    Answer(Fault),
    /// A well-formed message for the protocol layer. `id` is the request's id (normalised) when it is a
    /// request; `None` for a notification or a response.
    Pass { message: Value, id: Option<Value> },
}

/// The id a request may carry: a string, or an integer (`1.0` and `1e3` are integers written as floats;
/// JSON numbers above 2^53 in float form are refused since they cannot say which integer was meant).
/// Returns the id as it will be echoed.
pub fn request_id(v: &Value) -> Option<Value> {
    match v {
        Value::String(_) => Some(v.clone()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i.into())
            } else if n.as_u64().is_some() {
                None
            } else {
                const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
                let f = n.as_f64()?;
                (f.fract() == 0.0 && f.abs() < MAX_EXACT).then(|| (f as i64).into())
            }
        }
        _ => None,
    }
}

/// Decides what one line (without its newline) is.
pub fn classify(line: &[u8]) -> Verdict {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Ignore;
    }
    match serde_json::from_slice::<Value>(line) {
        Ok(v) => shape(v),
        Err(e) => unreadable(line, &e),
    }
}

/// An oversized line: only its first [`KEPT_PREFIX`] bytes were kept.
pub fn oversized(prefix: &[u8], limit: usize) -> Verdict {
    let prefix = prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(prefix);
    let message = format!(
        "the message is longer than {} MiB; it was skipped",
        limit / (1024 * 1024)
    );
    answer_unread(&scan_envelope(prefix), INVALID_REQUEST, message, false)
}

/// The answer to a line that could not be read whole: with its id when that was read, none for a
/// response (never answered). A line with a `method` and no `id` is a notification, and not answered
/// either, when the whole line was seen (`whole`); the part of an oversized line that was not kept may
/// hold the id, so that one is answered, with a null id.
fn answer_unread(env: &Envelope, code: i64, message: String, whole: bool) -> Verdict {
    if env.is_response() {
        return Verdict::Ignore;
    }
    match &env.id {
        Some(Some(id)) => Verdict::Answer(Fault::new(code, id.clone(), message)),
        None if env.method && whole => Verdict::Ignore,
        _ => Verdict::Answer(Fault::new(code, Value::Null, message)),
    }
}

fn unreadable(line: &[u8], e: &serde_json::Error) -> Verdict {
    let env = scan_envelope(line);
    let what = e.to_string();
    let message = if what.starts_with("recursion limit exceeded") {
        format!(
            "parse error: nested deeper than 128 levels ({})",
            what.trim_start_matches("recursion limit exceeded ")
        )
    } else {
        format!("parse error: {what}")
    };
    answer_unread(&env, PARSE_ERROR, message, true)
}

fn shape(v: Value) -> Verdict {
    let o = match v {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Verdict::Answer(Fault::new(
                INVALID_REQUEST,
                Value::Null,
                "batches are not supported (MCP removed JSON-RPC batching): send one message per line",
            ));
        }
        _ => {
            return Verdict::Answer(Fault::new(
                INVALID_REQUEST,
                Value::Null,
                "a message is a JSON object",
            ));
        }
    };
    let has = |k: &str| o.contains_key(k);
    let is_response = !has("method") && (has("result") || has("error"));
    if is_response {
        return Verdict::Pass {
            message: Value::Object(o),
            id: None,
        };
    }
    let Some(raw_id) = o.get("id") else {
        if has("method") {
            // a notification, well-formed or not: never answered
            return Verdict::Pass {
                message: Value::Object(o),
                id: None,
            };
        }
        return Verdict::Answer(Fault::new(
            INVALID_REQUEST,
            Value::Null,
            "not a request, notification or response: there is no `method`",
        ));
    };
    let Some(id) = request_id(raw_id) else {
        return Verdict::Answer(Fault::new(
            INVALID_REQUEST,
            Value::Null,
            "`id` must be a string or an integer",
        ));
    };
    if let Some(fault) = envelope_fault(&o) {
        return Verdict::Answer(Fault { id, ..fault });
    }
    Verdict::Pass {
        message: Value::Object(o),
        id: Some(id),
    }
}

/// What is wrong with a request's envelope (the id is filled in by the caller).
fn envelope_fault(o: &Map<String, Value>) -> Option<Fault> {
    let bad = |code, m: &str| Some(Fault::new(code, Value::Null, m));
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return bad(INVALID_REQUEST, "`jsonrpc` must be \"2.0\"");
    }
    match o.get("method") {
        None => return bad(INVALID_REQUEST, "a request needs a `method`"),
        Some(Value::String(_)) => {}
        Some(_) => return bad(INVALID_REQUEST, "`method` must be a string"),
    }
    if o.contains_key("result") || o.contains_key("error") {
        return bad(
            INVALID_REQUEST,
            "a request has no `result` or `error` (those are for responses)",
        );
    }
    match o.get("params") {
        None | Some(Value::Object(_) | Value::Null) => None,
        Some(_) => bad(INVALID_PARAMS, "`params` must be an object"),
    }
}

/// The top-level members of a line that may not be JSON, as far as they can be read.
#[derive(Debug, Default)]
struct Envelope {
    /// `None`: no `id` member seen; `Some(None)`: one whose value cannot be used.
    id: Option<Option<Value>>,
    method: bool,
    result_or_error: bool,
}

impl Envelope {
    fn is_response(&self) -> bool {
        !self.method && self.result_or_error
    }
}

/// Reads the members of a top-level object leniently: values are skipped by their brackets and quotes
/// (never recursing, so any depth is fine), and the scan stops at the first thing that does not fit, so
/// a truncated or damaged line still yields the members before the damage. A later `id` wins, as in
/// a parsed object.
fn scan_envelope(b: &[u8]) -> Envelope {
    let mut env = Envelope::default();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return env;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        if b.get(i) != Some(&b'"') {
            return env;
        }
        let Some(key_end) = skip_string(b, i) else {
            return env;
        };
        let key = &b[i + 1..key_end - 1];
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return env;
        }
        i = skip_ws(b, i + 1);
        let start = i;
        let end = skip_value(b, i);
        match key {
            b"id" => {
                env.id = Some(
                    end.and_then(|e| serde_json::from_slice::<Value>(&b[start..e]).ok())
                        .and_then(|v| request_id(&v)),
                );
            }
            b"method" => env.method = true,
            b"result" | b"error" => env.result_or_error = true,
            _ => {}
        }
        let Some(end) = end else {
            return env;
        };
        i = skip_ws(b, end);
        if b.get(i) != Some(&b',') {
            return env;
        }
        i += 1;
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The end (one past the closing quote) of the string starting at `i`; `None` when it is cut off.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The end of the value starting at `i`; `None` when it is cut off (a scalar must be followed by
/// something, or it may have been cut mid-token).
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let len = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))?;
            Some(i + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(line: &[u8]) -> (i64, Value) {
        match classify(line) {
            Verdict::Answer(f) => (f.code, f.id),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(line)),
        }
    }

    #[test]
    fn unreadable_lines_keep_their_id_when_it_can_be_read() {
        let cases: &[(&[u8], Value)] = &[
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"s":"\ud800"}}"#,
                json!(1),
            ),
            (
                br#"{"jsonrpc":"2.0","id":"a","method":"x","params":{"n":1e400}}"#,
                json!("a"),
            ),
            (
                b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"x\",\"params\":{\"s\":\"\xff\"}}",
                json!(3),
            ),
            (
                br#"{"params":{"s":"\ud800"},"id":4,"method":"x"}"#,
                json!(4),
            ),
            (br#"{"id":5,"jsonrpc":"2.0","method":"tools/ca"#, json!(5)),
            (
                br#"{"jsonrpc":"2.0","id":6,"method":"ping"} trailing"#,
                json!(6),
            ),
            (
                br#"{"id":7.0,"method":"x","params":{"n":-1e999}}"#,
                json!(7),
            ),
            (br#"{"id":12"#, Value::Null),
            (br#"{"id":"\ud800","method":"x"}"#, Value::Null),
            (br#"{"id":{},"method":"x","params":[1e400]}"#, Value::Null),
            (b"{this is not json", Value::Null),
            (b"\x00", Value::Null),
            (
                b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"},",
                Value::Null,
            ),
        ];
        for (line, id) in cases {
            assert_eq!(
                answer(line),
                (PARSE_ERROR, id.clone()),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let deep = format!(
            r#"{{"jsonrpc":"2.0","method":"x","params":{{"a":{}{}}},"id":"deep"}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(answer(deep.as_bytes()), (PARSE_ERROR, json!("deep")));
        let Verdict::Answer(f) = classify(deep.as_bytes()) else {
            panic!()
        };
        assert!(f.message.contains("128"), "{}", f.message);
    }

    #[test]
    fn notifications_and_responses_are_never_answered() {
        for line in [
            &br#"{"jsonrpc":"2.0","method":"notifications/x","params":{"s":"\ud800"}}"#[..],
            br#"{"jsonrpc":"2.0","method":"notifications/initialized""#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"n":1e400}}"#,
            b"",
            b"   \t",
            b"\r",
        ] {
            assert_eq!(
                classify(line),
                Verdict::Ignore,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        for line in [
            &br#"{"jsonrpc":"1.0","method":"x"}"#[..],
            br#"{"method":5,"params":[]}"#,
            br#"{"jsonrpc":"2.0","id":2,"error":5}"#,
        ] {
            assert!(
                matches!(classify(line), Verdict::Pass { id: None, .. }),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn well_formed_json_that_is_not_a_request() {
        let cases: &[(&str, i64, Value)] = &[
            ("[]", INVALID_REQUEST, Value::Null),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            ("5", INVALID_REQUEST, Value::Null),
            ("{}", INVALID_REQUEST, Value::Null),
            (
                r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","id":9223372036854775808,"method":"ping"}"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                INVALID_REQUEST,
                json!(1),
            ),
            (r#"{"jsonrpc":"2.0","id":"x"}"#, INVALID_REQUEST, json!("x")),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":7}"#,
                INVALID_REQUEST,
                json!(2),
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"ping","result":{}}"#,
                INVALID_REQUEST,
                json!(3),
            ),
            (
                r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":[1]}"#,
                INVALID_PARAMS,
                json!(4),
            ),
        ];
        for (line, code, id) in cases {
            assert_eq!(answer(line.as_bytes()), (*code, id.clone()), "{line}");
        }
        // a leading byte order mark is allowed, and float-form integer ids are integers
        let bom = b"\xEF\xBB\xBF{\"jsonrpc\":\"2.0\",\"id\":1e3,\"method\":\"ping\"}\r";
        assert!(matches!(classify(bom), Verdict::Pass { id: Some(id), .. } if id == json!(1000)));
    }

    #[test]
    fn an_oversized_line_is_answered_with_its_id_when_the_prefix_has_it() {
        let mut line = br#"{"jsonrpc":"2.0","id":"big","method":"ping","params":{"pad":""#.to_vec();
        line.extend(std::iter::repeat_n(b'x', KEPT_PREFIX));
        let cut = &line[..KEPT_PREFIX];
        assert!(matches!(oversized(cut, 16 << 20),
            Verdict::Answer(f) if f.code == INVALID_REQUEST && f.id == json!("big") && f.message.contains("16 MiB")));
        let late = br#"{"jsonrpc":"2.0","params":{"pad":"xxxxxxxx"#;
        assert!(matches!(oversized(late, 16 << 20),
            Verdict::Answer(f) if f.id.is_null()));
        // the id may be in the part that was not kept
        let late = br#"{"jsonrpc":"2.0","method":"ping","params":{"pad":"xxx"#;
        assert!(matches!(oversized(late, 16 << 20), Verdict::Answer(f) if f.id.is_null()));
        let response = br#"{"jsonrpc":"2.0","result":{"pad":"xxx"#;
        assert_eq!(oversized(response, 16 << 20), Verdict::Ignore);
    }
}
