//! Serde mirrors of the runbook file format. Their derived JSON Schema is `schemas/runbook.schema.json`.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The pattern of runbook names.
pub const NAME_PATTERN: &str = r"^[a-z0-9][a-z0-9_.-]*$";
/// The pattern of step ids.
pub const STEP_ID_PATTERN: &str = r"^[a-z0-9_][a-z0-9_-]*$";

/// What an action (or a whole runbook) may do, from least to most dangerous.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Reads only.
    Read,
    /// Changes state that can be changed back.
    Write,
    /// Deletes or overwrites; may not be undoable.
    Destructive,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Read => "read",
            Effect::Write => "write",
            Effect::Destructive => "destructive",
        }
    }
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How steps depend on each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    /// Each step depends on the one before it.
    #[default]
    Sequence,
    /// A step depends only on its `needs` and on the steps its templates reference.
    Dag,
}

/// # infra runbook
/// A named, declarative workflow: typed inputs, steps that call actions, and outputs.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Runbook")]
pub struct RawRunbook {
    /// The JSON Schema of this file (for editors); ignored by infra.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Unique name; defaults to the file stem.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_.-]*$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Shown by list, help and plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Searched by list and help.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// A list of names (required strings), or a map of name to input spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<RawInputs>,
    /// The declared ceiling; inferred from the steps when absent. A step above it is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects: Option<Effect>,
    /// `sequence` (default) or `dag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Flow>,
    /// Bound on nodes running at once (dag flow and foreach).
    #[schemars(range(min = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Timeout of the whole run, in milliseconds.
    #[schemars(range(min = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The steps, at least one.
    #[schemars(length(min = 1))]
    pub steps: Vec<RawStep>,
    /// Steps that always run after `steps`, whatever happened, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<RawStep>,
    /// The run's result: name to template (or any value holding templates).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub outputs: IndexMap<String, Value>,
}

/// Runbook inputs: the original list form (required strings) or a map of name to spec.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawInputs {
    /// Names of required string inputs.
    List(Vec<String>),
    /// Name to input spec.
    Map(IndexMap<String, RawInputSpec>),
}

/// The type of an input value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
            InputType::Object => "object",
        }
    }
}

/// One input of a runbook.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "InputSpec")]
pub struct RawInputSpec {
    /// The value's type; `string` when absent.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<InputType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Used when the input is not given; makes the input optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Defaults to true unless a default is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// The allowed values.
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
    /// A regular expression a string value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// The value is redacted everywhere it would be shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<bool>,
}

/// A boolean, or a template that renders to one.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum BoolOrTemplate {
    Bool(bool),
    Template(String),
}

/// A literal list, or a template that renders to one.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ListOrTemplate {
    List(Vec<Value>),
    Template(String),
}

/// What a retry reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    Error,
    Timeout,
    NonzeroExit,
}

/// Retry policy of one step.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Retry")]
pub struct RawRetry {
    /// Total attempts, the first included.
    #[schemars(range(min = 1, max = 100))]
    pub attempts: u32,
    /// Delay before the second attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Multiplier applied to the delay after each attempt.
    #[schemars(range(min = 1.0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<f64>,
    /// Upper bound of the delay, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    /// Randomise each delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
    /// Template over `result`: retry until it renders truthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// What triggers a retry; `error` and `timeout` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<RetryOn>>,
}

/// One step: a call of one action of one tool.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Step")]
pub struct RawStep {
    /// Unique in the runbook.
    #[schemars(regex(pattern = r"^[a-z0-9_][a-z0-9_-]*$"))]
    pub id: String,
    /// An action group (`ssh`, `http`, `psql`, `repo`, `state`, `local`, `runbook`, …) or an original alias.
    pub tool: String,
    /// The tool's arguments, `action` included; validated against that action's schema.
    pub args: RawArgs,
    /// Steps this one runs after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Runs only when this renders truthy; else the step is `skipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<BoolOrTemplate>,
    /// Runs once per element, with `item` and `index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreach: Option<ListOrTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RawRetry>,
    /// Timeout of one attempt, in milliseconds.
    #[schemars(range(min = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The run goes on when this step fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_on_error: Option<bool>,
    /// Runs if the run fails after this step succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Box<RawRollback>>,
    /// Raises (never lowers) the effect of this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects: Option<Effect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The step run to undo a step when the run fails after it.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Rollback")]
pub struct RawRollback {
    /// Defaults to `<step id>-rollback`.
    #[schemars(regex(pattern = r"^[a-z0-9_][a-z0-9_-]*$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub tool: String,
    pub args: RawArgs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RawRetry>,
    #[schemars(range(min = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects: Option<Effect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Action arguments: an object with `action`; the rest is checked against the action's own schema.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RawArgs(pub serde_json::Map<String, Value>);

impl JsonSchema for RawArgs {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Args".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "The tool's arguments, `action` included; validated against `schemas/actions/<tool>.<action>.schema.json`.",
            "required": ["action"],
            "properties": { "action": { "type": "string", "description": "The action of the tool." } }
        })
    }
}

/// The `$id` of the runbook schema.
pub const RUNBOOK_SCHEMA_ID: &str = "https://infra.invalid/schemas/runbook.schema.json";

/// The JSON Schema of a runbook file: one runbook, or a map of name to runbook.
pub fn runbook_file_schema() -> Value {
    let mut root =
        schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::draft2020_12())
            .into_root_schema_for::<RawRunbook>()
            .to_value();
    let obj = root.as_object_mut().expect("a root schema is an object");
    let schema_uri = obj.remove("$schema").unwrap_or(Value::Null);
    let mut defs = match obj.remove("$defs") {
        Some(Value::Object(d)) => d,
        _ => serde_json::Map::new(),
    };
    let mut runbook = std::mem::take(obj);
    runbook.remove("title");
    defs.insert("Runbook".into(), Value::Object(runbook));
    defs.sort_keys();
    serde_json::json!({
        "$schema": schema_uri,
        "$id": RUNBOOK_SCHEMA_ID,
        "title": "infra runbook file",
        "description": "One runbook, or a map of runbook name to runbook (the `runbooks.json` form).",
        "anyOf": [
            { "$ref": "#/$defs/Runbook" },
            {
                "type": "object",
                "propertyNames": { "pattern": NAME_PATTERN },
                "additionalProperties": { "$ref": "#/$defs/Runbook" }
            }
        ],
        "$defs": defs
    })
}
