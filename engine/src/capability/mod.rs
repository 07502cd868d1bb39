//! Capabilities: what an intent (`k8s.diff`, `repo.snapshot`, `gitops.release`) means here, which
//! runbook does it, with which inputs, and when it applies.
//!
//! The built-ins (`builtin.json`, one per built-in runbook that has an intent) load first, then the
//! project's file (`MCP_CAPABILITIES_PATH`, else `<profiles>/capabilities.json|yaml|yml`), later
//! replacing earlier by name. The original product's shape loads as is:
//! `{version, capabilities: {name: {intent, description, runbook, tags, when, inputs: {required,
//! defaults, map, pass_through}, effects: {kind, requires_apply, irreversible}, depends_on}}}`.
//! Loading is `dsl::parse` (YAML or JSON, located) → the JSON Schema ([`schema`], errors located at
//! the YAML node, "did you mean" for unknown keys) → the checks against the catalog, at load and not
//! at run: a `runbook` that does not exist, a `map` key that is not an input of that runbook, a `map`
//! source that is not `context.*`, `target.*`, `state.*` or `project.*`, a `depends_on` that names no
//! capability or goes round in a circle. A file with errors contributes nothing, and says where.
//! `resolve.rs` turns an intent into one capability and a plan of runbooks.

pub mod resolve;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dsl::{Code, Diagnostic, SourceFile};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::catalog::{Catalog, Origin};
use crate::ctx::Config;

/// A capabilities file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesFile {
    /// The format's version: 1.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// Capability name to capability.
    #[serde(default)]
    pub capabilities: IndexMap<String, Capability>,
}

/// One capability.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Capability {
    /// The intent type it serves (its name when left out). Several capabilities may serve one intent;
    /// `when` must then tell them apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The runbook that does it (left out only when `depends_on` does the work).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// When it applies, against the project context (always, when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    #[serde(default)]
    pub inputs: Inputs,
    #[serde(default)]
    pub effects: Effects,
    /// Capabilities that run first, in this order, in the same plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

impl Capability {
    /// The intent type it serves.
    pub fn intent_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.intent.as_deref().unwrap_or(name)
    }
}

/// Where a capability's runbook inputs come from: the intent's inputs, then `map`, then `defaults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    /// Inputs that must have a value once resolved.
    #[serde(default)]
    pub required: Vec<String>,
    /// Values used when neither the intent nor `map` gives one.
    #[serde(default)]
    pub defaults: Map<String, Value>,
    /// Runbook input to a source: `context.root`, `context.tags`, `target.name`, `target.host`,
    /// `state.<key>`, `project.repo_root`.
    #[serde(default)]
    pub map: IndexMap<String, String>,
    /// Pass the intent's other inputs to the runbook when it declares them (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_through: Option<bool>,
}

/// A `when` matcher: every key given must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// At least one of these context tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_any: Option<Vec<String>>,
    /// All of these context tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_all: Option<Vec<String>>,
    /// At least one of these paths exists under the context root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_any: Option<Vec<String>>,
    /// All of these paths exist under the context root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_all: Option<Vec<String>>,
    /// The context root is this directory or inside it (an absolute path), or, without a
    /// `/`, a directory of that name is the root or one of its parents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// At least one of these matchers holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_of: Option<Vec<When>>,
    /// Every one of these matchers holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_of: Option<Vec<When>>,
    /// This matcher does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<When>>,
}

/// What a capability does.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Effects {
    #[serde(default)]
    pub kind: Kind,
    /// `execute` needs `apply: true` (always so for `write`, `mixed` and `destructive`).
    #[serde(default)]
    pub requires_apply: bool,
    /// Cannot be undone automatically: `execute` needs `confirm: true` as well.
    #[serde(default)]
    pub irreversible: bool,
}

impl Effects {
    /// Whether `execute` needs `apply: true`.
    pub fn needs_apply(&self) -> bool {
        self.requires_apply || self.irreversible || self.kind != Kind::Read
    }
}

/// A capability's kind of effect.
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Read,
    Write,
    Mixed,
    Destructive,
}

/// One loaded capability and where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub cap: Capability,
    pub origin: Origin,
}

impl Entry {
    /// The capability as results show it.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.cap).unwrap_or(Value::Null);
        v["name"] = self.name.clone().into();
        v["intent"] = self.cap.intent_of(&self.name).into();
        v["source"] = json!(self.origin);
        v
    }
}

/// The capabilities in effect: built-ins, then the project's.
#[derive(Debug, Default, Clone)]
pub struct Capabilities {
    pub entries: IndexMap<String, Entry>,
    /// The project file's diagnostics (errors mean it contributed nothing).
    pub diagnostics: Vec<Diagnostic>,
    /// The project file read, if any.
    pub file: Option<PathBuf>,
}

impl Capabilities {
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// The JSON Schema of a capabilities file (`schemas/capabilities.schema.json`).
pub fn schema() -> Value {
    let mut s = schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::draft2020_12())
        .into_root_schema_for::<CapabilitiesFile>()
        .to_value();
    if let Some(o) = s.as_object_mut() {
        o.insert(
            "$id".into(),
            "https://infra.invalid/schemas/capabilities.schema.json".into(),
        );
        o.insert("title".into(), "infra capabilities".into());
    }
    s
}

fn validator() -> &'static (Value, jsonschema::Validator) {
    static V: OnceLock<(Value, jsonschema::Validator)> = OnceLock::new();
    V.get_or_init(|| {
        let s = schema();
        let v = jsonschema::draft202012::new(&s).expect("the capabilities schema is valid");
        (s, v)
    })
}

/// The project's capabilities file: `MCP_CAPABILITIES_PATH`, else the first of
/// `capabilities.json`, `.yaml`, `.yml` in the profiles directory.
pub fn file_path(config: &Config) -> Option<PathBuf> {
    if let Some(p) = &config.capabilities_path {
        return Some(p.clone());
    }
    ["capabilities.json", "capabilities.yaml", "capabilities.yml"]
        .iter()
        .map(|n| config.profiles_dir.join(n))
        .find(|p| p.is_file())
}

/// The built-ins, then the project's file, checked against `catalog`.
pub fn load(config: &Config, catalog: &Catalog) -> Capabilities {
    let mut out = Capabilities::default();
    let builtin = SourceFile::new("<built-in capabilities>", include_str!("builtin.json"));
    let (caps, _) = parse(&builtin, catalog, &IndexMap::new());
    for (name, cap) in caps {
        out.entries.insert(
            name.clone(),
            Entry {
                name,
                cap,
                origin: Origin::Builtin,
            },
        );
    }
    let Some(path) = file_path(config) else {
        return out;
    };
    let file = match crate::ctx::read_source(&path) {
        Ok(f) => f,
        Err(d) => {
            out.diagnostics.push(d);
            out.file = Some(path);
            return out;
        }
    };
    let known: IndexMap<String, Capability> = out
        .entries
        .iter()
        .map(|(n, e)| (n.clone(), e.cap.clone()))
        .collect();
    let (caps, diags) = parse(&file, catalog, &known);
    out.diagnostics = diags;
    out.file = Some(path);
    for (name, cap) in caps {
        out.entries.insert(
            name.clone(),
            Entry {
                name,
                cap,
                origin: Origin::Project,
            },
        );
    }
    out
}

/// Loads one capabilities file: parse, shape, then the checks against `catalog` (with `known`, the
/// capabilities already loaded, for `depends_on`). Errors leave the capabilities empty.
pub fn parse(
    file: &SourceFile,
    catalog: &Catalog,
    known: &IndexMap<String, Capability>,
) -> (IndexMap<String, Capability>, Vec<Diagnostic>) {
    let node = match dsl::parse::parse(file) {
        Ok(n) => n,
        Err(d) => return (IndexMap::new(), vec![d]),
    };
    let json = node.to_json();
    let (schema, v) = validator();
    let diags = dsl::schema::check_value(file, &node, &json, "", v, schema, Code::SchemaViolation);
    if !diags.is_empty() {
        return (IndexMap::new(), diags);
    }
    let parsed: CapabilitiesFile = match serde_json::from_value(json) {
        Ok(c) => c,
        Err(e) => {
            return (
                IndexMap::new(),
                vec![Diagnostic::error(Code::SchemaViolation, e.to_string()).in_file(file)],
            );
        }
    };
    let at = |pointer: &str, key: bool| {
        node.pointer(pointer)
            .map_or(node.span, |(n, k)| match (key, k) {
                (true, Some(k)) => k.span,
                _ => n.span,
            })
    };
    let mut diags = Vec::new();
    let mut all = known.clone();
    for (n, c) in &parsed.capabilities {
        all.insert(n.clone(), c.clone());
    }
    for (name, cap) in &parsed.capabilities {
        let base = format!("/capabilities/{}", escape(name));
        check_one(file, catalog, &all, name, cap, &base, &at, &mut diags);
    }
    // circles through `depends_on`, each reported once, at its first capability in the file
    for name in parsed.capabilities.keys() {
        if let Some(path) = resolve::cycle_from(&all, name)
            && path.first() == Some(name)
            && !diags.iter().any(|d: &Diagnostic| {
                d.code == Code::DependencyCycle && d.message.contains(&format!("`{name}`"))
            })
        {
            diags.push(
                Diagnostic::error(
                    Code::DependencyCycle,
                    format!(
                        "capability `{name}` depends on itself: {}",
                        path.join(" → ")
                    ),
                )
                .at(
                    file,
                    at(&format!("/capabilities/{}/depends_on", escape(name)), false),
                )
                .help("remove one `depends_on` entry of the circle"),
            );
        }
    }
    if diags.iter().any(Diagnostic::is_error) {
        return (IndexMap::new(), diags);
    }
    (parsed.capabilities, diags)
}

/// The checks of one capability against the catalog and the other capabilities.
#[expect(
    clippy::too_many_arguments,
    reason = "one place for one capability's checks"
)]
fn check_one(
    file: &SourceFile,
    catalog: &Catalog,
    all: &IndexMap<String, Capability>,
    name: &str,
    cap: &Capability,
    base: &str,
    at: &dyn Fn(&str, bool) -> dsl::Span,
    diags: &mut Vec<Diagnostic>,
) {
    let rb = match cap.runbook.as_deref() {
        Some(r) => match catalog.get(r) {
            Some(e) => Some(e.runbook.clone()),
            None => {
                diags.push(
                    Diagnostic::error(
                        Code::UnknownRunbook,
                        format!(
                            "capability `{name}` names the runbook `{r}`, which does not exist"
                        ),
                    )
                    .at(file, at(&format!("{base}/runbook"), false))
                    .path(format!("{base}/runbook"))
                    .help(
                        dsl::diagnostic::suggestion(r, catalog.names())
                            .unwrap_or_else(|| "`infra list` shows the runbooks there are".into()),
                    ),
                );
                None
            }
        },
        None if cap.depends_on.is_empty() => {
            diags.push(
                Diagnostic::error(
                    Code::MissingKey,
                    format!("capability `{name}` has neither `runbook` nor `depends_on`"),
                )
                .at(file, at(base, true))
                .help("name the runbook that does it: `\"runbook\": \"<name>\"`"),
            );
            None
        }
        None => None,
    };
    for (input, source) in &cap.inputs.map {
        let p = format!("{base}/inputs/map/{}", escape(input));
        if let Some(rb) = &rb
            && !rb.inputs.contains_key(input)
        {
            let names: Vec<&str> = rb.inputs.keys().map(String::as_str).collect();
            diags.push(
                Diagnostic::error(
                    Code::UndefinedInput,
                    format!(
                        "capability `{name}` maps `{input}`, which is not an input of runbook `{}`",
                        rb.name
                    ),
                )
                .at(file, at(&p, true))
                .path(p.clone())
                .help(
                    dsl::diagnostic::suggestion(input, names.iter().copied()).unwrap_or_else(
                        || {
                            format!(
                                "its inputs: {}",
                                if names.is_empty() {
                                    "none".into()
                                } else {
                                    names.join(", ")
                                }
                            )
                        },
                    ),
                ),
            );
        }
        if !resolve::SOURCES.iter().any(|s| {
            source
                .strip_prefix(s)
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|r| !r.is_empty())
        }) {
            diags.push(
                Diagnostic::error(
                    Code::SchemaViolation,
                    format!("`{source}` is not a source `map` can read"),
                )
                .at(file, at(&p, false))
                .path(p)
                .help("use `context.<key>` (root, tags…), `target.<key>` (name, host…), `state.<key>` or `project.repo_root`"),
            );
        }
    }
    for (i, dep) in cap.depends_on.iter().enumerate() {
        if !all.contains_key(dep) {
            let p = format!("{base}/depends_on/{i}");
            diags.push(
                Diagnostic::error(
                    Code::SchemaViolation,
                    format!("capability `{name}` depends on `{dep}`, which is not a capability"),
                )
                .at(file, at(&p, false))
                .path(p)
                .help_opt(dsl::diagnostic::suggestion(
                    dep,
                    all.keys().map(String::as_str),
                )),
            );
        }
    }
}

/// A key as a JSON pointer token.
fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// Whether a path is where a capabilities file is looked for (for `infra validate`).
pub fn is_capabilities_file(p: &Path) -> bool {
    p.file_stem().and_then(|s| s.to_str()) == Some("capabilities")
}

#[cfg(test)]
mod tests;
