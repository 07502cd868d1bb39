//! Checked runbooks: what analysis produces and the engine compiles.

use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::parse::Node;
use crate::raw::{BoolOrTemplate, Effect, Flow, InputType, ListOrTemplate, RawRetry, RawRunbook};
use crate::source::{SourceFile, Span};
use crate::template::Scan;

/// A step id, unique within a runbook.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct StepId(String);

impl StepId {
    pub fn new(id: impl Into<String>) -> Self {
        StepId(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One declared input.
#[derive(Clone, Debug)]
pub struct Input {
    pub name: String,
    pub ty: InputType,
    pub description: Option<String>,
    pub default: Option<Value>,
    pub required: bool,
    pub allowed: Option<Vec<Value>>,
    pub pattern: Option<String>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub secret: bool,
}

impl Input {
    /// The JSON Schema of this input's value.
    pub fn schema(&self) -> Value {
        let mut s = serde_json::json!({ "type": self.ty.as_str() });
        if let Some(d) = &self.description {
            s["description"] = d.as_str().into();
        }
        if let Some(a) = &self.allowed {
            s["enum"] = Value::Array(a.clone());
        }
        if let Some(p) = &self.pattern {
            s["pattern"] = p.as_str().into();
        }
        if let Some(m) = self.minimum {
            s["minimum"] = bound(m);
        }
        if let Some(m) = self.maximum {
            s["maximum"] = bound(m);
        }
        if let Some(d) = &self.default {
            s["default"] = d.clone();
        }
        if self.secret {
            s["writeOnly"] = true.into();
        }
        s
    }
}

/// Which part of the runbook a step belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Main,
    Finally,
    Rollback,
}

/// A template found in a step or an output, with where it is.
#[derive(Clone, Debug)]
pub struct TemplateUse {
    /// JSON pointer relative to its step (`/args/command`, `/when`) or to `outputs`.
    pub at: String,
    pub span: Span,
    pub text: String,
    pub scan: Scan,
}

/// One checked step.
#[derive(Clone, Debug)]
pub struct Step {
    pub id: StepId,
    pub span: Span,
    pub phase: Phase,
    /// JSON pointer of the step in its file (`/steps/3`).
    pub pointer: String,
    pub tool: String,
    pub tool_span: Span,
    pub action: String,
    pub action_span: Span,
    /// The arguments (a JSON object, `action` included), as written (templates unrendered).
    pub args: Value,
    pub needs: Vec<(StepId, Span)>,
    /// Steps whose results this step's templates read.
    pub refs: Vec<(StepId, Span)>,
    pub when: Option<BoolOrTemplate>,
    pub foreach: Option<ListOrTemplate>,
    pub retry: Option<RawRetry>,
    pub timeout_ms: Option<u64>,
    pub continue_on_error: bool,
    pub rollback: Option<Arc<Step>>,
    pub effects: Option<Effect>,
    pub description: Option<String>,
    pub templates: Vec<TemplateUse>,
}

impl Step {
    /// The arguments as a map.
    pub fn args_map(&self) -> &serde_json::Map<String, Value> {
        static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> =
            std::sync::OnceLock::new();
        self.args
            .as_object()
            .unwrap_or_else(|| EMPTY.get_or_init(serde_json::Map::new))
    }
}

/// A runbook that passed every check of the language.
#[derive(Clone, Debug)]
pub struct Runbook {
    pub name: String,
    pub file: SourceFile,
    /// Where the runbook starts (its name, or its first key).
    pub span: Span,
    /// JSON pointer of the runbook in its file (`""`, or `/hello.world` in the map form).
    pub pointer: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub inputs: IndexMap<String, Input>,
    pub effects: Option<(Effect, Span)>,
    pub flow: Flow,
    pub max_parallel: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub steps: Vec<Arc<Step>>,
    pub finally: Vec<Arc<Step>>,
    pub outputs: IndexMap<String, Value>,
    pub output_templates: Vec<TemplateUse>,
    /// SHA-256 of the runbook's canonical JSON form.
    pub digest: String,
    /// The runbook as written (for `get` and re-serialisation).
    pub raw: RawRunbook,
    /// The spanned tree of the whole file, to locate errors found after analysis.
    pub root: Arc<Node>,
}

impl Runbook {
    /// The JSON Schema of this runbook's inputs object.
    pub fn input_schema(&self) -> Value {
        let props: serde_json::Map<String, Value> = self
            .inputs
            .iter()
            .map(|(k, i)| (k.clone(), i.schema()))
            .collect();
        let required: Vec<&str> = self
            .inputs
            .values()
            .filter(|i| i.required && i.default.is_none())
            .map(|i| i.name.as_str())
            .collect();
        serde_json::json!({
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        })
    }

    /// The spanned tree of a step's arguments (a null node if it has none).
    pub fn args_node(&self, step: &Step) -> &Node {
        static NULL: Node = Node {
            span: Span { start: 0, end: 0 },
            value: crate::parse::NodeValue::Null,
        };
        self.root
            .pointer(&format!("{}/args", step.pointer))
            .map_or(&NULL, |(n, _)| n)
    }

    /// All steps: main, then finally.
    pub fn all_steps(&self) -> impl Iterator<Item = &Arc<Step>> {
        self.steps.iter().chain(self.finally.iter())
    }
}

/// A bound as JSON: a whole number as an integer, so messages say `1`, not `1.0`.
fn bound(m: f64) -> Value {
    if m.fract() == 0.0 && m.abs() < 9.0e15 {
        Value::from(m as i64)
    } else {
        m.into()
    }
}
