//! Parse YAML or JSON text into a spanned tree ([`Node`]): every value and every mapping key knows
//! where it was written, so later stages (schema, analysis, compilation) can point at the exact
//! YAML node.
//!
//! JSON is parsed as YAML (flow style), so both forms get the same locations and the same limits.
//!
//! The tree is built straight from the events of granit-parser (the parser under serde-saphyr, used
//! through its re-export), each event carrying its byte span, by `Builder`, an explicit stack:
//! nothing recurses per level. serde-saphyr replaces serde_yaml (archived, RUSTSEC-2024-0320);
//! going through serde with a `Spanned<T>` on every node was 2.5× slower, and building the tree
//! here keeps duplicate keys (`Builder::place`), the alias and node budgets (an alias bomb stops
//! before it expands), `<<` merge keys (`apply_merges`) and the YAML 1.2 core schema
//! (`resolve_plain`: only `true`/`false` are booleans; `yes`, `on` and `0777` stay strings or
//! decimal) in one file. A mapping past 32 keys finds duplicates through a set of its names. Syntax errors, duplicate keys, a second document and exceeded budgets
//! become one diagnostic (`yaml-syntax`, `duplicate-key`, `input-too-large`) and stop the file.
//! `Node::pointer` resolves a JSON pointer to a node; `Node::focus` picks a collection's key span,
//! since its own span is only its first token.
//!
//! A file of 256 KiB or more whose `steps` are a block list is parsed in two pieces at once
//! (`split.rs`, the same `build` on each); what the pieces do not vouch for, every error included,
//! is parsed whole, so the tree and every diagnostic are those of one parse.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::Value;
use serde_saphyr::granit_parser::{self as granit, Event, Parser, ScalarStyle};

use crate::diagnostic::{Code, Diagnostic};
use crate::source::{SourceFile, Span};

mod split;

/// The largest runbook file accepted (bytes).
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// The most YAML nodes one file may hold, aliases expanded.
pub const MAX_NODES: usize = 2_000_000;
/// The most nodes copied by aliases; a YAML alias bomb trips this early.
pub const MAX_ALIAS_REPLAY: usize = 100_000;
/// The deepest nesting of collections.
pub const MAX_DEPTH: usize = 128;

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
            // unescaped only when it has escapes: most segments are plain keys and indexes
            let part: Cow<'_, str> = if raw.contains('~') {
                raw.replace("~1", "/").replace("~0", "~").into()
            } else {
                raw.into()
            };
            match &node.value {
                NodeValue::Map(entries) => {
                    let (k, v) = entries.iter().find(|(k, _)| k.name == *part)?;
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

/// Where a collection is being built.
enum Frame {
    Seq {
        span: Span,
        anchor: usize,
        first_node: usize,
        items: Vec<Node>,
    },
    Map {
        span: Span,
        anchor: usize,
        first_node: usize,
        entries: Vec<(Key, Node)>,
        key: Option<Key>,
        /// Merge keys (`<<: *defaults`), applied when the mapping ends.
        merges: Vec<Node>,
        /// The names in `entries`, once there are [`SCAN_KEYS`] of them: a duplicate is then found
        /// without a scan, so a large mapping costs its size, not its size squared.
        names: Option<HashSet<String>>,
    },
}

struct Builder<'f> {
    file: &'f SourceFile,
    stack: Vec<Frame>,
    /// The deepest the stack has been.
    depth: usize,
    /// The end of the last node's span.
    end: usize,
    /// Whether the top collection had `<<` merge keys.
    root_merges: bool,
    /// Anchored nodes by anchor id, with their size in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes made so far, aliases expanded.
    nodes: usize,
    /// Nodes copied by aliases.
    replayed: usize,
    root: Option<Node>,
}

/// Up to this many keys, a mapping's duplicate keys are found by a scan of its entries.
const SCAN_KEYS: usize = 32;

fn byte_span(sp: &granit::Span, base: usize) -> Span {
    sp.byte_range()
        .map_or_else(Span::default, |r| Span::new(base + r.start, base + r.end))
}

impl Builder<'_> {
    fn too_large(&self, span: Span, what: String) -> Diagnostic {
        Diagnostic::error(
            Code::InputTooLarge,
            format!("the document is too large: {what}"),
        )
        .at(self.file, widen(self.file.text(), span))
        .help("write the values out, or use fewer aliases")
    }

    fn count(&mut self, n: usize, span: Span) -> Result<(), Diagnostic> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(self.too_large(span, format!("more than {MAX_NODES} nodes")));
        }
        Ok(())
    }

    /// Places a finished node: in the enclosing collection, or as the root.
    fn place(&mut self, node: Node, anchor: usize, size: usize) -> Result<(), Diagnostic> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        let file = self.file;
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                key,
                merges,
                names,
                ..
            }) => match key.take() {
                None => {
                    let name = match node.value {
                        NodeValue::Str(s) => s,
                        NodeValue::Int(i) => i.to_string(),
                        NodeValue::UInt(u) => u.to_string(),
                        NodeValue::Bool(b) => b.to_string(),
                        NodeValue::Float(f) => f.to_string(),
                        NodeValue::Null => "null".to_owned(),
                        NodeValue::Seq(_) | NodeValue::Map(_) => {
                            return Err(Diagnostic::error(
                                Code::YamlSyntax,
                                "mapping keys must be scalars",
                            )
                            .at(file, widen(file.text(), node.span)));
                        }
                    };
                    let dup = if entries.len() < SCAN_KEYS {
                        entries.iter().any(|(k, _)| k.name == name)
                    } else {
                        names
                            .get_or_insert_with(|| {
                                entries.iter().map(|(k, _)| k.name.clone()).collect()
                            })
                            .contains(&name)
                    };
                    if dup {
                        return Err(Diagnostic::error(
                            Code::DuplicateKey,
                            format!("duplicate key `{name}`"),
                        )
                        .at(file, node.span)
                        .help("remove one of the two entries"));
                    }
                    *key = Some(Key {
                        name,
                        span: node.span,
                    });
                }
                Some(k) if k.name == "<<" && is_mergeable(&node) => merges.push(node),
                Some(k) => {
                    if let Some(names) = names {
                        names.insert(k.name.clone());
                    }
                    entries.push((k, node));
                }
            },
        }
        Ok(())
    }
}

fn is_mergeable(node: &Node) -> bool {
    match &node.value {
        NodeValue::Map(_) => true,
        NodeValue::Seq(items) => items.iter().all(|i| matches!(i.value, NodeValue::Map(_))),
        _ => false,
    }
}

/// Applies `<<` merge keys: merged entries never replace the mapping's own keys, and earlier merges win.
fn apply_merges(entries: &mut Vec<(Key, Node)>, merges: Vec<Node>) {
    for m in merges {
        let maps = match m.value {
            NodeValue::Map(e) => vec![e],
            NodeValue::Seq(items) => items
                .into_iter()
                .filter_map(|i| match i.value {
                    NodeValue::Map(e) => Some(e),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        for (k, v) in maps.into_iter().flatten() {
            if !entries.iter().any(|(e, _)| e.name == k.name) {
                entries.push((k, v));
            }
        }
    }
}

/// YAML 1.2 core schema resolution of a plain scalar (`yes`, `on` and `0777` stay strings). A string
/// keeps the parser's own buffer when it made one.
fn resolve_plain(value: Cow<'_, str>) -> NodeValue {
    let text: &str = &value;
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return NodeValue::Null,
        "true" | "True" | "TRUE" => return NodeValue::Bool(true),
        "false" | "False" | "FALSE" => return NodeValue::Bool(false),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return NodeValue::Str(value.into_owned());
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return NodeValue::Int(i);
        }
        if let Ok(u) = text.trim_start_matches('+').parse::<u64>() {
            return NodeValue::UInt(u);
        }
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(u) = u64::from_str_radix(hex, 16)
    {
        return NodeValue::UInt(u);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(u) = u64::from_str_radix(oct, 8)
    {
        return NodeValue::UInt(u);
    }
    let float_chars = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if float_chars
        && digits.bytes().any(|b| b.is_ascii_digit())
        && let Ok(f) = text.parse::<f64>()
        && f.is_finite()
    {
        return NodeValue::Float(f);
    }
    NodeValue::Str(value.into_owned())
}

fn scalar_value(text: Cow<'_, str>, style: ScalarStyle, tag: Option<&granit::Tag>) -> NodeValue {
    match tag.and_then(granit::Tag::core_suffix) {
        Some("str") => return NodeValue::Str(text.into_owned()),
        Some("null" | "bool" | "int" | "float") => return resolve_plain(text),
        _ => {}
    }
    match style {
        ScalarStyle::Plain => resolve_plain(text),
        _ => NodeValue::Str(text.into_owned()),
    }
}

/// Parses a whole file (one YAML document) into a tree. Syntax errors, duplicate keys and exceeded limits
/// are diagnostics. Builds the tree straight from parser events, with an explicit stack (no recursion).
/// A large file whose `steps` are a plain block sequence is parsed in two pieces at once (`split`);
/// anything that piece does not vouch for, every error included, is parsed whole.
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
    if text.len() >= split::MIN_BYTES
        && let Some(root) = split::parse(file)
    {
        return Ok(root);
    }
    build(file, 0, text).map(|b| b.root)
}

/// A tree built from one piece of text, with what [`split`] needs to join pieces.
struct Built {
    root: Node,
    /// Nodes made, aliases expanded.
    nodes: usize,
    /// Nodes copied by aliases.
    replayed: usize,
    /// The deepest nesting of collections.
    depth: usize,
    /// Whether the top collection had `<<` merge keys (applied to its own entries only).
    root_merges: bool,
    /// The end of the span that ends last (a block scalar at the end of a piece ends at the piece's
    /// end, not where it ends in the file).
    end: usize,
}

/// Builds the tree of `text`, which starts at byte `base` of `file` (0 and the whole text, but for
/// the pieces of `split`, whose errors are never shown).
fn build(file: &SourceFile, base: usize, text: &str) -> Result<Built, Diagnostic> {
    let mut opts = granit::Options::default();
    opts.set_emit_comments(false);
    opts.flow_nesting_limit = MAX_DEPTH;
    opts.block_nesting_limit = MAX_DEPTH;
    let mut b = Builder {
        file,
        stack: Vec::new(),
        depth: 0,
        end: 0,
        root_merges: false,
        anchors: HashMap::new(),
        nodes: 0,
        replayed: 0,
        root: None,
    };
    let mut documents = 0;
    for item in Parser::new_from_str_with_options(text, opts) {
        let (event, sp) = match item {
            Ok(e) => e,
            Err(e) if base == 0 && text.len() == file.text().len() => {
                return Err(scan_error(file, &e));
            }
            // a piece's markers are not the file's: its errors are made again on the whole file
            Err(_) => return Err(Diagnostic::error(Code::YamlSyntax, "in a piece")),
        };
        let span = byte_span(&sp, base);
        if matches!(
            event,
            Event::Scalar(..)
                | Event::Alias(_)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
        ) {
            b.end = b.end.max(span.end);
        }
        match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(Diagnostic::error(
                        Code::YamlSyntax,
                        "a runbook file holds one YAML document",
                    )
                    .at(file, widen(file.text(), span))
                    .help("remove the `---` and what follows, or move it to its own file"));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                b.count(1, span)?;
                let node = Node {
                    span,
                    value: scalar_value(value, style, tag.as_deref()),
                };
                b.place(node, anchor, 1)?;
            }
            Event::SequenceStart(_, anchor, _) => {
                b.count(1, span)?;
                let first_node = b.nodes;
                b.stack.push(Frame::Seq {
                    span,
                    anchor,
                    first_node,
                    items: Vec::new(),
                });
                b.depth = b.depth.max(b.stack.len());
            }
            Event::MappingStart(_, anchor, _) => {
                b.count(1, span)?;
                let first_node = b.nodes;
                b.stack.push(Frame::Map {
                    span,
                    anchor,
                    first_node,
                    entries: Vec::new(),
                    key: None,
                    merges: Vec::new(),
                    names: None,
                });
                b.depth = b.depth.max(b.stack.len());
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor, first) = match b.stack.pop() {
                    Some(Frame::Seq {
                        span,
                        anchor,
                        first_node,
                        items,
                    }) => (
                        Node {
                            span,
                            value: NodeValue::Seq(items),
                        },
                        anchor,
                        first_node,
                    ),
                    Some(Frame::Map {
                        span,
                        anchor,
                        first_node,
                        mut entries,
                        merges,
                        ..
                    }) => {
                        if b.stack.is_empty() && !merges.is_empty() {
                            b.root_merges = true;
                        }
                        apply_merges(&mut entries, merges);
                        (
                            Node {
                                span,
                                value: NodeValue::Map(entries),
                            },
                            anchor,
                            first_node,
                        )
                    }
                    None => continue,
                };
                let size = b.nodes - first + 1;
                b.place(node, anchor, size)?;
            }
            Event::Alias(id) => {
                let Some((node, size)) = b.anchors.get(&id).cloned() else {
                    return Err(
                        Diagnostic::error(Code::YamlSyntax, "alias of an unknown anchor")
                            .at(file, widen(file.text(), span)),
                    );
                };
                b.replayed += size;
                if b.replayed > MAX_ALIAS_REPLAY {
                    return Err(b.too_large(
                        span,
                        format!("aliases expand to more than {MAX_ALIAS_REPLAY} nodes"),
                    ));
                }
                b.count(size, span)?;
                let mut node = node;
                node.span = span;
                b.place(node, 0, size)?;
            }
            _ => {}
        }
    }
    Ok(Built {
        root: b.root.unwrap_or(Node {
            span: Span::default(),
            value: NodeValue::Null,
        }),
        nodes: b.nodes,
        replayed: b.replayed,
        depth: b.depth,
        root_merges: b.root_merges,
        end: b.end,
    })
}

fn scan_error(file: &SourceFile, e: &granit::ScanError) -> Diagnostic {
    let m = e.marker();
    let offset = m
        .byte_offset()
        .unwrap_or_else(|| file.offset_of(m.line().saturating_sub(1), m.col()));
    let message = strip_location(&e.info());
    Diagnostic::error(Code::YamlSyntax, message)
        .at(file, widen(file.text(), Span::new(offset, offset)))
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
        // past the keys found by a scan: the first key, a late one, and merge keys (never duplicates)
        let mut big: String = (0..100).map(|i| format!("k{i}: {i}\n")).collect();
        big.push_str("<<: {x: 1}\n<<: {y: 2}\n");
        assert_eq!(p(&big).expect("merges").to_json()["y"], 2);
        for (dup, line) in [("k0", 103), ("k99", 103), ("x", 0)] {
            let text = format!("{big}{dup}: again\n");
            match p(&text) {
                Err(d) => {
                    assert_eq!(d.code, Code::DuplicateKey);
                    assert_eq!(d.location(), Some(format!("t.yaml:{line}:1")));
                }
                Ok(n) => assert_eq!((dup, n.to_json()[dup].as_str()), ("x", Some("again"))),
            }
        }
    }

    #[test]
    fn syntax_errors_are_located() {
        let d = p("a: [1, 2\nb: 3\n").expect_err("syntax");
        assert_eq!(d.code, Code::YamlSyntax);
        assert!(d.span.is_some());
    }

    #[test]
    fn plain_scalars_resolve_by_the_yaml_1_2_core_schema() {
        let v = p("[yes, on, 0777, 12, -3, 0x1f, 0o17, 1.5, 2e3, ~, null, true, False, .inf, '12', !!str 7, 1_000]")
            .expect("parse")
            .to_json();
        assert_eq!(
            v,
            serde_json::json!([
                "yes", "on", 777, 12, -3, 31, 15, 1.5, 2000.0, null, null, true, false, ".inf",
                "12", "7", "1_000"
            ])
        );
    }

    #[test]
    fn merge_keys_fill_in_without_overriding() {
        let v = p("base: &b {tool: state, timeout_ms: 5}
step:
  <<: *b
  timeout_ms: 9
")
        .expect("parse")
        .to_json();
        assert_eq!(
            v["step"],
            serde_json::json!({"timeout_ms": 9, "tool": "state"})
        );
    }

    #[test]
    fn one_document_only_and_scalar_keys_only() {
        assert_eq!(
            p("a: 1\n---\nb: 2\n").expect_err("two docs").code,
            Code::YamlSyntax
        );
        assert_eq!(
            p("? [a]\n: 1\n").expect_err("seq key").code,
            Code::YamlSyntax
        );
        assert_eq!(p("").expect("empty").value, NodeValue::Null);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(p(&deep).expect_err("deep").code, Code::YamlSyntax);
    }
}
