//! The action registry: every tool, its actions, their argument schemas and effects.
//!
//! MCP tools, `help`, the committed schemas in `schemas/actions/` and plan validation are all generated
//! from this one table, so an action added here appears everywhere.

pub mod host;
pub mod http;
pub mod k8s;
pub mod local;
pub mod pipeline;
pub mod psql;
pub mod repo;
pub mod runbook;
pub mod ssh;
pub mod state;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use dsl::Effect;
use dsl::template::Mode;
use schemars::JsonSchema;
use serde_json::{Map, Value};

pub use crate::error::{ActionError, ErrorKind};
pub use host::{Host, Nested, NestedOutcome, Pools};

/// Which top-level argument fields are shell command lines or SQL text, given the arguments.
pub type ModesFn = fn(&Map<String, Value>) -> Vec<(&'static str, Mode)>;

/// The effect of a call from its arguments, when they say.
pub type ClassifyFn = fn(&Map<String, Value>) -> Option<Effect>;

/// The credential values among a call's arguments.
pub type SecretsFn = fn(&Map<String, Value>) -> Vec<String>;

/// One action of one tool.
#[derive(Debug)]
pub struct ActionSpec {
    pub tool: &'static str,
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// The effect of every call of this action (a step may raise it).
    pub effect: Effect,
    /// Needs `INFRA_UNSAFE_LOCAL=1`.
    pub unsafe_local: bool,
    pub(crate) schema_fn: fn() -> Value,
    /// How templates in top-level argument fields are written (shell-quoted, SQL-checked).
    pub modes: ModesFn,
    /// The effect of one call given its literal arguments (templated ones are `null`), when it depends on
    /// them (an HTTP method, an SQL statement); `None` (or a `None` answer) means `effect`.
    pub classify: Option<ClassifyFn>,
    /// Argument values that are credentials (a connection URL, an `Authorization` header): the
    /// executor registers them with the redactor before the call is recorded anywhere.
    pub secret_args: Option<SecretsFn>,
    /// An example call's arguments (`action` included).
    pub example: fn() -> Value,
}

impl ActionSpec {
    /// The effect of a call with these arguments: what `classify` says, never above `effect`.
    pub fn effect_of(&self, args: &Map<String, Value>) -> Effect {
        self.classify
            .and_then(|f| f(args))
            .map_or(self.effect, |e| e.min(self.effect))
    }

    /// `tool.action`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.tool, self.name)
    }

    /// The JSON Schema (draft 2020-12) of this action's arguments, `action` included.
    pub fn schema(&self) -> &'static Value {
        &compiled(self).0
    }

    /// The file name of the committed schema, under `schemas/actions/`.
    pub fn schema_file(&self) -> String {
        format!("{}.{}.schema.json", self.tool, self.name)
    }
}

/// One tool: a group of actions chosen by the `action` argument.
#[derive(Debug)]
pub struct ToolSpec {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// Names of the original product that mean this tool.
    pub aliases: &'static [&'static str],
    /// Reaches hosts outside this machine (targets), so results depend on the world.
    pub open_world: bool,
    pub actions: Vec<ActionSpec>,
}

/// No template in any field needs special quoting.
pub(crate) fn no_modes(_: &Map<String, Value>) -> Vec<(&'static str, Mode)> {
    Vec::new()
}

/// Builds an action's schema from its argument type: the derived schema, with the `action` constant and
/// the common `timeout_ms` added.
pub(crate) fn args_schema<T: JsonSchema>(tool: &str, action: &str, description: &str) -> Value {
    let mut s = schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::draft2020_12())
        .into_root_schema_for::<T>()
        .to_value();
    let obj = s.as_object_mut().expect("schemas of structs are objects");
    obj.insert(
        "$id".into(),
        format!("https://infra.invalid/schemas/actions/{tool}.{action}.schema.json").into(),
    );
    obj.insert("title".into(), format!("{tool}.{action}").into());
    obj.insert("description".into(), description.into());
    let props = obj
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("properties is an object");
    let mut with_action = Map::new();
    with_action.insert("action".into(), serde_json::json!({ "const": action }));
    with_action.extend(std::mem::take(props));
    with_action.insert(
        "timeout_ms".into(),
        serde_json::json!({ "type": "integer", "minimum": 1, "description": "Timeout of this call, in milliseconds." }),
    );
    *props = with_action;
    let required = obj
        .entry("required")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(r) = required {
        r.insert(0, "action".into());
    }
    s
}

/// Arguments as an action's own type. `action` and the common `timeout_ms` are the executor's and are
/// left out; everything else must fit `T`, whose schema is the one the call was validated against, so a
/// mismatch here means the schema and the type drifted apart.
pub fn parse_args<T: serde::de::DeserializeOwned>(
    args: &Map<String, Value>,
) -> Result<T, ActionError> {
    let fields = args
        .iter()
        .filter(|(k, _)| k.as_str() != "action" && k.as_str() != "timeout_ms")
        .map(|(k, v)| (k.as_str(), v));
    let de = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(fields);
    T::deserialize(de).map_err(|e| {
        let action = args.get("action").and_then(Value::as_str).unwrap_or("?");
        ActionError::new(
            ErrorKind::InvalidArgs,
            format!("arguments of `{action}`: {e}"),
        )
    })
}

/// One call of one action, as the executor hands it over: rendered arguments and the run's context.
#[derive(Debug)]
pub struct Call<'a> {
    /// What the action may use of the engine that runs it.
    pub host: &'a dyn Host,
    /// Rendered and validated arguments, `action` included.
    pub args: &'a Map<String, Value>,
    pub cancel: &'a crate::exec::CancelToken,
    /// When this attempt must end.
    pub deadline: Option<Instant>,
    /// The step's artifact directory and its URI.
    pub dir: PathBuf,
    pub uri_base: String,
    /// How deep in nested runbooks this call is.
    pub depth: usize,
    /// The approval the run was granted, if it needed one (passed on to nested runs).
    pub grant: Option<&'a crate::approval::Grant>,
    /// Where a long action says how far it is (`Progress::Advanced` of its step), if anyone listens.
    pub progress: Option<Advance<'a>>,
}

/// Where an action reports how far it is: a message for whoever follows the run.
#[derive(Clone, Copy)]
pub struct Advance<'a>(pub &'a (dyn Fn(&str) + Sync));

impl std::fmt::Debug for Advance<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Advance")
    }
}

impl Call<'_> {
    /// The arguments as the action's own type (see [`parse_args`]).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ActionError> {
        parse_args(self.args)
    }
}

/// A credential from the environment variable a target or call names (`password_env`, `bearer_env`, …),
/// read when it is needed and registered with the redactor at once. The audit log's key is never one.
pub(crate) fn credential(
    config: &crate::ctx::Config,
    redactor: &crate::record::Redactor,
    var: &str,
    what: &str,
) -> Result<String, ActionError> {
    if var == crate::ctx::AUDIT_KEY_VAR {
        return Err(ActionError::new(
            ErrorKind::Refused,
            format!("`{var}` seals infra's audit log; it is never sent as a {what}"),
        )
        .hint("name the variable that holds the credential"));
    }
    let v = config.vars.get(var).ok_or_else(|| {
        ActionError::new(
            ErrorKind::InvalidConfig,
            format!("the {what} variable `{var}` is not set"),
        )
        .hint(format!("export {var} in the environment infra runs in"))
    })?;
    redactor.add(&v);
    Ok(v)
}

/// Refuses `var`, named by a call as the credential to send to `dest`, unless the operator gave it
/// for `dest`: a target that names `var` (in any `*_env`, so an SSH or database password too) is
/// `at_home` there. A variable no target names is infra's own environment, not a credential the
/// operator gave out: sending it anywhere is a secret export (`INFRA_ALLOW_SECRET_EXPORT=1`).
/// `home_hint` says how to reach the owning target's home, given its name.
pub(crate) fn call_credential(
    config: &crate::ctx::Config,
    var: &str,
    dest: &str,
    at_home: impl Fn(&crate::targets::Target) -> bool,
    home_hint: impl Fn(&str) -> String,
) -> Result<(), ActionError> {
    let targets = crate::targets::Targets::load(&config.profiles_dir);
    let owners: Vec<(&String, &crate::targets::Target)> = targets
        .targets
        .iter()
        .filter(|(_, t)| serde_json::to_value(t).is_ok_and(|v| names_var(&v, var)))
        .collect();
    if owners.is_empty() {
        if config.allow_secret_export {
            return Ok(());
        }
        return Err(ActionError::new(
            ErrorKind::Refused,
            format!(
                "`{var}` is no target's credential: a call sends only a target's own credential, to \
                 that target ({dest})"
            ),
        )
        .hint(
            "name the variable in the target of that host in targets (e.g. `http: {base_url, \
             bearer_env}`), or start infra with INFRA_ALLOW_SECRET_EXPORT=1 to let calls send any \
             variable",
        ));
    }
    if owners.iter().any(|(_, t)| at_home(t)) {
        return Ok(());
    }
    let names: Vec<String> = owners.iter().map(|(n, _)| format!("`{n}`")).collect();
    Err(ActionError::new(
        ErrorKind::Refused,
        format!(
            "`{var}` is the credential of target {}; it is sent only to that target, not to {dest}",
            names.join(", ")
        ),
    )
    .hint(home_hint(owners[0].0)))
}

/// Whether a configuration names `var` in one of its `*_env` fields, at any depth.
fn names_var(v: &Value, var: &str) -> bool {
    match v {
        Value::Object(o) => o
            .iter()
            .any(|(k, x)| (k.ends_with("_env") && x.as_str() == Some(var)) || names_var(x, var)),
        Value::Array(a) => a.iter().any(|x| names_var(x, var)),
        _ => false,
    }
}

/// Where a host file is written before it is renamed over `path`, so a failure leaves the old file whole.
pub(crate) fn temp_sibling(path: &std::path::Path) -> PathBuf {
    path.with_file_name(format!(
        ".{}.infra-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ))
}

/// Runs one action. The executor has already checked the policy (opt-ins) and the arguments.
pub fn invoke(spec: &ActionSpec, call: &Call<'_>) -> Result<Value, ActionError> {
    match spec.tool {
        "state" => state::invoke(spec.name, call),
        "local" => local::invoke(spec.name, call),
        "repo" => repo::invoke(spec.name, call),
        "runbook" => runbook::invoke(spec.name, call),
        "ssh" => ssh::invoke(spec.name, call),
        "http" => http::invoke(spec.name, call),
        "psql" => psql::invoke(spec.name, call),
        "pipeline" => pipeline::invoke(spec.name, call),
        "k8s" => k8s::invoke(spec.name, call),
        other => Err(ActionError::new(
            ErrorKind::NotAvailable,
            format!("tool `{other}` has no implementation in this build"),
        )),
    }
}

/// Every tool, in the fixed order the front ends list them.
pub fn registry() -> &'static [ToolSpec] {
    static R: OnceLock<Vec<ToolSpec>> = OnceLock::new();
    R.get_or_init(|| {
        vec![
            runbook::tool(),
            k8s::tool(),
            ssh::tool(),
            http::tool(),
            psql::tool(),
            repo::tool(),
            pipeline::tool(),
            state::tool(),
            local::tool(),
        ]
    })
}

/// Aliases that are not a tool's own (the original `mcp_*` names are on each tool).
const EXTRA_ALIASES: &[(&str, &str)] = &[
    ("mcp_artifacts", "artifacts"),
    ("mcp_jobs", "jobs"),
    ("job", "jobs"),
    ("mcp_audit", "audit"),
    ("mcp_evidence", "evidence"),
    ("mcp_intent", "intent"),
    ("mcp_pipeline", "pipeline"),
    ("mcp_context", "context"),
];

/// The canonical tool name for a name or alias (`mcp_state` → `state`), whether or not it is registered.
pub fn canonical_tool(name: &str) -> &str {
    for t in registry() {
        if t.name == name || t.aliases.contains(&name) {
            return t.name;
        }
    }
    EXTRA_ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map_or(name, |(_, t)| t)
}

/// The tool for a name or alias.
pub fn find_tool(name: &str) -> Option<&'static ToolSpec> {
    let name = canonical_tool(name);
    registry().iter().find(|t| t.name == name)
}

/// The action `tool.action`, the tool given by name or alias.
pub fn find_action(tool: &str, action: &str) -> Option<&'static ActionSpec> {
    find_tool(tool)?.actions.iter().find(|a| a.name == action)
}

/// Every action of every tool.
pub fn all_actions() -> impl Iterator<Item = &'static ActionSpec> {
    registry().iter().flat_map(|t| t.actions.iter())
}

/// An action's schema and its compiled validator, built once per process, when the action is first
/// checked (a runbook uses a few of them).
fn compiled(spec: &ActionSpec) -> &'static (Value, jsonschema::Validator) {
    type Slot = OnceLock<(Value, jsonschema::Validator)>;
    static V: OnceLock<Vec<(&'static ActionSpec, Slot)>> = OnceLock::new();
    let all = V.get_or_init(|| all_actions().map(|a| (a, OnceLock::new())).collect());
    let (a, slot) = all
        .iter()
        .find(|(a, _)| (a.tool, a.name) == (spec.tool, spec.name))
        .expect("every action has a validator");
    slot.get_or_init(|| {
        let schema = (a.schema_fn)();
        let v = jsonschema::draft202012::new(&schema).expect("action schemas are valid");
        (schema, v)
    })
}

/// The compiled validator of an action's schema.
pub fn validator(spec: &ActionSpec) -> &'static jsonschema::Validator {
    &compiled(spec).1
}

/// Every tool name and alias (for suggestions).
pub fn tool_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = registry().iter().map(|t| t.name).collect();
    v.extend(registry().iter().flat_map(|t| t.aliases.iter().copied()));
    v
}

/// Every example of `tool` parses into the type `parse` picks for its action (a test helper).
#[cfg(test)]
pub(crate) fn examples_parse(
    tool: ToolSpec,
    parse: fn(&str, &Map<String, Value>) -> Result<(), ActionError>,
) {
    for a in &tool.actions {
        let ex = (a.example)();
        let r = parse(a.name, ex.as_object().expect("an object"));
        assert!(r.is_ok(), "{}.{}: {r:?}", tool.name, a.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_repo_and_runbook_examples_parse_into_their_types() {
        examples_parse(local::tool(), |action, args| match action {
            "exec" => parse_args::<local::ExecArgs>(args).map(drop),
            "read" => parse_args::<local::ReadArgs>(args).map(drop),
            "write" => parse_args::<local::WriteArgs>(args).map(drop),
            _ => parse_args::<local::PathArgs>(args).map(drop),
        });
        examples_parse(repo::tool(), |action, args| match action {
            "snapshot" => parse_args::<repo::SnapshotArgs>(args).map(drop),
            "status" => parse_args::<repo::StatusArgs>(args).map(drop),
            "log" => parse_args::<repo::LogArgs>(args).map(drop),
            "diff" => parse_args::<repo::DiffArgs>(args).map(drop),
            "branch" => parse_args::<repo::BranchArgs>(args).map(drop),
            "apply_patch" => parse_args::<repo::ApplyPatchArgs>(args).map(drop),
            "commit" => parse_args::<repo::CommitArgs>(args).map(drop),
            "revert" => parse_args::<repo::RevertArgs>(args).map(drop),
            "fetch" | "push" => parse_args::<repo::RemoteArgs>(args).map(drop),
            _ => parse_args::<repo::StatusArgs>(args).map(drop),
        });
        examples_parse(runbook::tool(), |_, args| {
            parse_args::<runbook::RunArgs>(args).map(drop)
        });
    }

    #[test]
    fn a_value_of_the_wrong_type_is_invalid_args_naming_the_action() {
        let args = serde_json::json!({"action": "read", "path": 7});
        let e = parse_args::<local::ReadArgs>(args.as_object().expect("object"))
            .expect_err("a number is not a path");
        assert_eq!(e.kind, ErrorKind::InvalidArgs);
        assert!(e.message.contains("`read`"), "{}", e.message);
    }
}
