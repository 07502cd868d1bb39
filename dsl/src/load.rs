//! The front door of the language: text in, checked runbooks and diagnostics out.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::analyze::{Located, analyze};
use crate::diagnostic::{Code, Diagnostic, Diagnostics, suggestion};
use crate::parse::{Node, NodeValue, parse};
use crate::raw::InputType;
use crate::runbook::Runbook;
use crate::schema::check_runbook;
use crate::source::{SourceFile, Span};

/// What one file yielded.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Runbooks without errors.
    pub runbooks: Vec<Runbook>,
    /// Every problem found, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Loads a runbook given whole as a JSON value (an inline runbook of an MCP call or of a nested
/// `runbook.run` step), named `name` when it has no `name` of its own. Its diagnostics point into the
/// value's pretty-printed text, `<inline runbook>`.
pub fn load_value(v: &Value, name: &str) -> Result<Runbook, Vec<Diagnostic>> {
    // pretty, so a diagnostic's line and column point at one field
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    let file = SourceFile::new("<inline runbook>", text);
    let loaded = load(&file, Some(name));
    if loaded.has_errors() {
        return Err(loaded.diagnostics);
    }
    loaded.runbooks.into_iter().next().ok_or_else(|| {
        vec![Diagnostic::error(
            Code::UnknownRunbook,
            "the inline runbook holds no runbook",
        )]
    })
}

/// Loads every runbook in a file: one runbook, or a map of name to runbook. `stem` names a single runbook
/// that has no `name` key (the file stem).
pub fn load(file: &SourceFile, stem: Option<&str>) -> Loaded {
    let mut diags = Diagnostics::new();
    let mut runbooks = Vec::new();
    let mut root = match parse(file) {
        Ok(n) => n,
        Err(d) => {
            return Loaded {
                runbooks,
                diagnostics: vec![d],
            };
        }
    };
    if !matches!(root.value, NodeValue::Map(_)) {
        diags.push(
            Diagnostic::error(Code::SchemaViolation, "a runbook file must hold a mapping")
                .at(file, crate::parse::widen(file.text(), root.span))
                .help("write `name:`, `steps:` … or a map of runbook name to runbook"),
        );
        return Loaded {
            runbooks,
            diagnostics: diags.into_sorted(),
        };
    }
    let map_form = is_map_form(&root);
    let legacy = crate::legacy::translate(file, &mut root, map_form);
    diags.extend(legacy.diagnostics);
    let root = Arc::new(root);
    if map_form {
        for (key, node) in root.entries() {
            let pointer = format!("/{}", key.name.replace('~', "~0").replace('/', "~1"));
            if legacy.broken.contains(&pointer) {
                continue;
            }
            let name = key.name.clone();
            one(
                file,
                &root,
                node,
                &pointer,
                name,
                key.span,
                &mut runbooks,
                &mut diags,
            );
        }
    } else {
        let (name, span) = match root.get("name") {
            Some(n) => (n.as_str().unwrap_or_default().to_owned(), n.span),
            None => (
                stem.unwrap_or_default().to_owned(),
                root.entries().first().map_or(root.span, |(k, _)| k.span),
            ),
        };
        if legacy.broken.iter().any(String::is_empty) {
            return Loaded {
                runbooks,
                diagnostics: diags.into_sorted(),
            };
        }
        if name.is_empty() && root.get("name").is_none() {
            diags.push(
                Diagnostic::error(Code::MissingKey, "missing key `name`")
                    .at(file, span)
                    .help("a runbook given without a file name needs `name:`"),
            );
        }
        one(
            file,
            &root,
            &root,
            "",
            name,
            span,
            &mut runbooks,
            &mut diags,
        );
    }
    Loaded {
        runbooks,
        diagnostics: diags.into_sorted(),
    }
}

/// The map form: no `steps` key at the top and every value a mapping.
pub(crate) fn is_map_form(root: &Node) -> bool {
    let entries = root.entries();
    !entries.is_empty()
        && root.get("steps").is_none()
        && entries
            .iter()
            .all(|(_, v)| matches!(v.value, NodeValue::Map(_)))
        && !entries
            .iter()
            .any(|(k, _)| matches!(k.name.as_str(), "inputs" | "outputs" | "retry"))
}

#[allow(clippy::too_many_arguments)]
fn one(
    file: &SourceFile,
    root: &Arc<Node>,
    node: &Node,
    pointer: &str,
    name: String,
    name_span: Span,
    out: &mut Vec<Runbook>,
    diags: &mut Diagnostics,
) {
    let raw = match check_runbook(file, node, pointer) {
        Ok(raw) => raw,
        Err(shape) => {
            diags.extend(shape);
            return;
        }
    };
    let at = Located {
        file,
        root: Arc::clone(root),
        node,
        pointer,
        name,
        name_span,
    };
    let (rb, d) = analyze(&at, raw);
    diags.extend(d);
    out.extend(rb);
}

/// Turns `--input k=v` text into a value of the input's type (`v` is read as YAML for non-string inputs).
pub fn coerce_input(ty: InputType, text: &str) -> Value {
    if ty == InputType::String {
        return Value::String(text.to_owned());
    }
    match parse(&SourceFile::new("<input>", text)) {
        Ok(n) => n.to_json(),
        Err(_) => Value::String(text.to_owned()),
    }
}

/// Checks given inputs against a runbook's declarations and fills in defaults. Every problem is reported.
pub fn resolve_inputs(
    rb: &Runbook,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut out = Map::new();
    for key in given.keys() {
        if !rb.inputs.contains_key(key) {
            let mut d = Diagnostic::error(
                Code::InvalidInput,
                format!("runbook `{}` has no input `{key}`", rb.name),
            )
            .path(format!("/input/{key}"));
            d = match suggestion(key, rb.inputs.keys().map(String::as_str)) {
                Some(s) => d.help(s),
                None if rb.inputs.is_empty() => d.help("this runbook takes no inputs"),
                None => d.help(format!(
                    "its inputs are: {}",
                    rb.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
            };
            diags.push(d);
        }
    }
    for (name, input) in &rb.inputs {
        let value = match given.get(name) {
            Some(v) => v.clone(),
            None => match &input.default {
                Some(d) => d.clone(),
                None if input.required => {
                    diags.push(
                        Diagnostic::error(Code::InvalidInput, format!("missing input `{name}`"))
                            .path(format!("/input/{name}"))
                            .help(format!(
                                "pass it with `--input {name}=…` (or `input: {{{name}: …}}`)"
                            )),
                    );
                    continue;
                }
                None => continue,
            },
        };
        match jsonschema::draft202012::new(&input.schema()) {
            Ok(v) => {
                for e in v.iter_errors(&value) {
                    let shown = if input.secret {
                        e.masked().to_string()
                    } else {
                        e.to_string()
                    };
                    diags.push(
                        Diagnostic::error(Code::InvalidInput, format!("input `{name}`: {shown}"))
                            .path(format!("/input/{name}")),
                    );
                }
            }
            Err(e) => diags.push(Diagnostic::error(
                Code::InvalidInput,
                format!("input `{name}` has an invalid constraint: {}", e.masked()),
            )),
        }
        out.insert(name.clone(), value);
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}
