//! Parse YAML or JSON text into a spanned tree ([`Node`]): every value and every mapping key knows where it
//! was written, so later stages (schema, analysis, compilation) can point at the exact YAML node.
//!
//! JSON is parsed as YAML (flow style), so both forms get the same locations and the same limits.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::diagnostic::{Code, Diagnostic};
use crate::source::{SourceFile, Span};

/// The largest runbook file accepted (bytes).
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// The most YAML nodes one file may hold, aliases expanded.
pub const MAX_NODES: usize = 2_000_000;
/// The most events replayed by aliases; a YAML alias bomb trips this early.
pub const MAX_ALIAS_REPLAY: usize = 100_000;

/// A mapping key and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

/// One YAML value with its location.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: NodeValue,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Node {
    /// The same value as JSON.
    pub fn to_json(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::from(*i),
            NodeValue::UInt(u) => Value::from(*u),
            NodeValue::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            NodeValue::Str(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(Key, Node)] {
        match &self.value {
            NodeValue::Map(e) => e,
            _ => &[],
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            NodeValue::Seq(i) => i,
            _ => &[],
        }
    }

    /// The value under a mapping key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key and value under a mapping key.
    pub fn entry(&self, key: &str) -> Option<(&Key, &Node)> {
        self.entries()
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, v)| (k, v))
    }

    /// The node at a JSON pointer (`/steps/0/args`), with the key that holds it when its parent is a map.
    pub fn pointer(&self, pointer: &str) -> Option<(&Node, Option<&Key>)> {
        let mut node = self;
        let mut key = None;
        if pointer.is_empty() {
            return Some((node, None));
        }
        for raw in pointer.strip_prefix('/')?.split('/') {
            let part = raw.replace("~1", "/").replace("~0", "~");
            match &node.value {
                NodeValue::Map(entries) => {
                    let (k, v) = entries.iter().find(|(k, _)| k.name == part)?;
                    key = Some(k);
                    node = v;
                }
                NodeValue::Seq(items) => {
                    node = items.get(part.parse::<usize>().ok()?)?;
                    key = None;
                }
                _ => return None,
            }
        }
        Some((node, key))
    }

    /// The best span to point at for this node: a key's span when the node is a collection (whose own span
    /// is only its first token), else the node's own.
    pub fn focus(&self, key: Option<&Key>) -> Span {
        match (&self.value, key) {
            (NodeValue::Map(_) | NodeValue::Seq(_), Some(k)) => k.span,
            _ => self.span,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The span is attached by the `Spanned` wrapper around every node (see `SpannedNode`).
        let value = d.deserialize_any(NodeVisitor)?;
        Ok(Node {
            span: Span::default(),
            value,
        })
    }
}

struct SpannedNode(Node);

impl<'de> Deserialize<'de> for SpannedNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Node>::deserialize(d)?;
        let mut node = s.value;
        node.span = span_of(&s.defined);
        Ok(SpannedNode(node))
    }
}

fn span_of(loc: &serde_saphyr::Location) -> Span {
    let sp = loc.span();
    match (sp.byte_offset(), sp.byte_len()) {
        (Some(o), Some(l)) => Span::new(o as usize, (o + l) as usize),
        _ => Span::default(),
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NodeValue, E> {
        Ok(NodeValue::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NodeValue, E> {
        Ok(NodeValue::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<NodeValue, E> {
        i64::try_from(v)
            .map(NodeValue::Int)
            .map_err(|_| E::custom(format!("integer {v} is out of range")))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<NodeValue, E> {
        u64::try_from(v)
            .map(NodeValue::UInt)
            .map_err(|_| E::custom(format!("integer {v} is out of range")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NodeValue, E> {
        Ok(NodeValue::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::with_capacity(a.size_hint().unwrap_or(0));
        while let Some(SpannedNode(n)) = a.next_element()? {
            items.push(n);
        }
        Ok(NodeValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<NodeValue, A::Error> {
        let mut entries = Vec::with_capacity(a.size_hint().unwrap_or(0));
        while let Some(k) = a.next_key::<Spanned<KeyText>>()? {
            let SpannedNode(v) = a.next_value()?;
            entries.push((
                Key {
                    name: k.value.0,
                    span: span_of(&k.defined),
                },
                v,
            ));
        }
        Ok(NodeValue::Map(entries))
    }
}

/// A mapping key as text: scalar keys of any type are accepted and written as they read (`1`, `true`).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(NodeVisitor)? {
            NodeValue::Str(s) => Ok(KeyText(s)),
            NodeValue::Int(i) => Ok(KeyText(i.to_string())),
            NodeValue::UInt(u) => Ok(KeyText(u.to_string())),
            NodeValue::Bool(b) => Ok(KeyText(b.to_string())),
            NodeValue::Float(f) => Ok(KeyText(f.to_string())),
            NodeValue::Null => Ok(KeyText("null".into())),
            _ => Err(de::Error::custom("mapping keys must be scalars")),
        }
    }
}

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = MAX_NODES;
    budget.max_events = MAX_NODES * 2;
    let mut opts = serde_saphyr::Options::default();
    opts.budget = Some(budget);
    opts.alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAY;
    opts.strict_booleans = true;
    opts.with_snippet = false;
    opts
}

/// Parses a whole file into a tree. Syntax errors, duplicate keys and exceeded limits are diagnostics.
pub fn parse(file: &SourceFile) -> Result<Node, Diagnostic> {
    let text = file.text();
    if text.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::error(
            Code::InputTooLarge,
            format!(
                "file is {} bytes; the limit is {MAX_FILE_BYTES}",
                text.len()
            ),
        )
        .in_file(file)
        .help("split it into several runbooks"));
    }
    match serde_saphyr::from_str_with_options::<SpannedNode>(text, options()) {
        Ok(SpannedNode(node)) => Ok(node),
        Err(e) => Err(convert_error(file, &e)),
    }
}

fn convert_error(file: &SourceFile, e: &serde_saphyr::Error) -> Diagnostic {
    use serde_saphyr::Error as E;
    let inner = e.without_snippet();
    let message = strip_location(&inner.to_string());
    let (code, message, help) = match inner {
        E::DuplicateMappingKey { key, .. } => (
            Code::DuplicateKey,
            match key {
                Some(k) => format!("duplicate key `{k}`"),
                None => "duplicate mapping key".to_owned(),
            },
            Some("remove one of the two entries".to_owned()),
        ),
        _ if is_limit(&message) => (
            Code::InputTooLarge,
            format!("the document is too large once aliases are expanded ({message})"),
            Some("write the values out, or use fewer aliases".to_owned()),
        ),
        _ => (Code::YamlSyntax, message, None),
    };
    let mut d = Diagnostic::error(code, message).in_file(file);
    if let Some(loc) = inner.location() {
        let sp = span_of(&loc);
        let span = if sp == Span::default() && loc.line() > 0 {
            let start = file.offset_of(
                loc.line() as usize - 1,
                loc.column().saturating_sub(1) as usize,
            );
            Span::new(start, start)
        } else {
            sp
        };
        d = d.at(file, widen(file.text(), span));
    }
    d.help_opt(help)
}

fn is_limit(message: &str) -> bool {
    [
        "budget breached",
        "alias replay",
        "alias expansion",
        "replay stack depth",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Drops a trailing ` at line L, column C` (the diagnostic carries the location itself).
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) if msg[i..].contains("column") => msg[..i].to_owned(),
        _ => msg.to_owned(),
    }
}

/// An empty span grows to cover the word it starts, so a caret has something to underline.
pub fn widen(text: &str, span: Span) -> Span {
    if !span.is_empty() || span.start >= text.len() {
        return span;
    }
    let rest = &text[span.start..];
    let len = rest
        .find(|c: char| c.is_whitespace() || c == ':' || c == ',')
        .unwrap_or(rest.len())
        .max(rest.chars().next().map_or(0, char::len_utf8));
    Span::new(span.start, span.start + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Node, Diagnostic> {
        parse(&SourceFile::new("t.yaml", text))
    }

    #[test]
    fn nodes_and_keys_carry_spans() {
        let text = "name: a\nsteps:\n  - id: x\n    tool: \"state\"\n";
        let n = p(text).expect("parse");
        let (tool, key) = n.pointer("/steps/0/tool").expect("tool");
        assert_eq!(&text[tool.span.start..tool.span.end], "\"state\"");
        assert_eq!(key.map(|k| &text[k.span.start..k.span.end]), Some("tool"));
        assert_eq!(n.to_json()["steps"][0]["id"], "x");
    }

    #[test]
    fn json_is_yaml() {
        let n = p(r#"{"a": {"b": [1, true, null, "x"]}}"#).expect("parse");
        assert_eq!(
            n.to_json(),
            serde_json::json!({"a": {"b": [1, true, null, "x"]}})
        );
        let (b, _) = n.pointer("/a/b/3").expect("x");
        assert_eq!(b.as_str(), Some("x"));
    }

    #[test]
    fn duplicate_keys_are_located() {
        let d = p("a: 1\nb: 2\na: 3\n").expect_err("dup");
        assert_eq!(d.code, Code::DuplicateKey);
        assert_eq!(d.location().as_deref(), Some("t.yaml:3:1"));
    }

    #[test]
    fn syntax_errors_are_located() {
        let d = p("a: [1, 2\nb: 3\n").expect_err("syntax");
        assert_eq!(d.code, Code::YamlSyntax);
        assert!(d.span.is_some());
    }

    #[test]
    fn yes_is_a_string() {
        assert_eq!(p("a: yes").expect("parse").to_json()["a"], "yes");
    }
}
