//! What a tool takes: `ToolDesc` (a listed tool in plain data, which `mod.rs` turns into rmcp's `Tool`),
//! and the parameters of the front end's own tools.
//!
//! Each front-end tool reads its arguments into a `#[derive(Deserialize, JsonSchema)]` struct
//! ([`ToolParams`]). The struct is the one source of the tool's listed input schema ([`input_schema`]:
//! schemars' schema, inlined and kept small) and of the check a call's arguments pass before they are
//! read ([`parse`]: the listed schema, compiled once per tool by `jsonschema`). The check answers with
//! the errors clients rely on: an action outside the enum is `unknown_action` with a "did you mean",
//! anything else `invalid_args` with the JSON path of the first error. The registry's tools are listed
//! from their actions' schemas ([`compact`]) and checked by the engine against each action's own schema.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_json::{Map, Value, json};

use super::reply::Reply;

/// One listed tool.
#[derive(Debug, Clone)]
pub struct ToolDesc {
    pub name: String,
    pub title: String,
    pub description: String,
    pub input_schema: Value,
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

/// The parameters of a front-end tool: its listed input schema, and what a call's arguments are read
/// into once they fit it. A key the struct does not name is refused (`parse`).
pub trait ToolParams: DeserializeOwned + JsonSchema {
    /// The tool's name.
    const TOOL: &'static str;
}

/// Keeps a property schema small in the tool list: its type (with item and value types) and enum.
/// Descriptions, bounds and formats are in the action's own schema (`help` shows it), which every call
/// is validated against.
pub fn compact(v: &Value) -> Value {
    keep(
        v,
        &["type", "enum", "const", "items", "additionalProperties"],
    )
}

/// The listed input schema of a front-end tool, generated from its parameters struct `P`: an object
/// with each property's type, enum, item type and minimum (no descriptions, defaults or formats, to keep
/// the listing small), and the properties that have no default as `required`. An optional property may be
/// left out but is not `null`.
pub fn input_schema<P: JsonSchema>() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    let root = SchemaGenerator::new(settings)
        .into_root_schema_for::<P>()
        .to_value();
    let props: Map<String, Value> = root
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.clone(), keep(v, &["type", "enum", "items", "minimum"])))
                .collect()
        })
        .unwrap_or_default();
    let required = root.get("required").cloned().unwrap_or_else(|| json!([]));
    json!({"type": "object", "properties": props, "required": required})
}

/// `v` with only the keywords in `keys`, at every level; a type list with `null` in it (an `Option`)
/// becomes the one other type.
fn keep(v: &Value, keys: &[&str]) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| keys.contains(&k.as_str()))
                .map(|(k, x)| match (k.as_str(), x) {
                    // an optional argument: `["string", "null"]` is listed as `"string"`
                    ("type", Value::Array(ts)) => {
                        let real: Vec<&Value> = ts.iter().filter(|t| *t != "null").collect();
                        match real.as_slice() {
                            [one] => (k.clone(), (*one).clone()),
                            _ => (k.clone(), x.clone()),
                        }
                    }
                    _ => (k.clone(), keep(x, keys)),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The compiled input schema of the front-end tool `P`, made on its first call.
fn validator<P: ToolParams>() -> Option<Arc<jsonschema::Validator>> {
    static V: OnceLock<Mutex<HashMap<&'static str, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let mut all = V
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(v) = all.get(P::TOOL) {
        return Some(Arc::clone(v));
    }
    let v = Arc::new(jsonschema::draft202012::new(&input_schema::<P>()).ok()?);
    all.insert(P::TOOL, Arc::clone(&v));
    Some(v)
}

/// Reads a call's arguments (an object) into the front-end tool's parameters, once they fit its listed
/// input schema (no key it does not list); when they do not, the reply is the refusal.
pub fn parse<P: ToolParams>(args: &Value) -> Result<P, Reply> {
    let tool = P::TOOL;
    let help = || format!("`help {{tool: \"{tool}\"}}` shows what `{tool}` takes");
    // a key the tool does not take is refused, as the registry's tools refuse one
    if let Value::Object(given) = args {
        let listed = input_schema::<P>();
        let keys: Vec<&str> = listed["properties"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        if let Some(k) = given.keys().find(|k| !keys.contains(&k.as_str())) {
            let hint = dsl::diagnostic::suggestion(k, keys.iter().copied())
                .map(|s| format!("{s} "))
                .unwrap_or_default()
                + &format!("`{tool}` takes: {}", keys.join(", "));
            return Err(Reply::error(
                "invalid_args",
                format!("unknown key `{k}`: `{tool}` does not take it"),
                Some(hint),
                Some(format!("/{k}")),
            ));
        }
    }
    let checked = validator::<P>();
    if let Some(e) = checked.as_ref().and_then(|v| v.iter_errors(args).next()) {
        let path = match e.instance_path().as_str() {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        if path == "/action"
            && let jsonschema::error::ValidationErrorKind::Enum { options } = e.kind()
        {
            let given = args.get("action").and_then(Value::as_str).unwrap_or("");
            let names: Vec<&str> = options
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let hint = dsl::diagnostic::suggestion(given, names.iter().copied())
                .unwrap_or_else(|| format!("`{tool}` has actions: {}", names.join(", ")));
            return Err(Reply::error(
                "unknown_action",
                format!("`{tool}` has no action `{given}`"),
                Some(hint),
                Some(path),
            ));
        }
        return Err(Reply::error(
            "invalid_args",
            format!("{}: {}", path, e.masked()),
            Some(help()),
            Some(path),
        ));
    }
    P::deserialize(args).map_err(|e| {
        Reply::error(
            "invalid_args",
            format!("/: {e}"),
            Some(help()),
            Some("/".into()),
        )
    })
}

/// Reads an optional unsigned integer as the front-end tools always have: a number the schema check let
/// through (an integer, possibly written `5.0`) is taken when it is a `u64`, and otherwise left to the
/// tool's default.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?
        .as_ref()
        .and_then(Value::as_u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, JsonSchema)]
    struct Probe {
        action: Kind,
        #[serde(default, deserialize_with = "opt_u64")]
        #[schemars(range(min = 1))]
        limit: Option<u64>,
        tags: Option<Vec<String>>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        List,
        Status,
    }

    impl ToolParams for Probe {
        const TOOL: &'static str = "probe";
    }

    #[test]
    fn the_listed_schema_is_small_and_has_no_null() {
        assert_eq!(
            input_schema::<Probe>(),
            json!({"type": "object", "properties": {
                "action": {"type": "string", "enum": ["list", "status"]},
                "limit": {"type": "integer", "minimum": 1},
                "tags": {"type": "array", "items": {"type": "string"}},
            }, "required": ["action"]})
        );
    }

    #[test]
    fn arguments_are_checked_then_read() {
        let err = |v: Value| parse::<Probe>(&v).err().map(|r| r.body["error"].clone());
        let e = err(json!({"action": "stauts"})).expect("refused");
        assert_eq!(
            (e["kind"].as_str(), e["path"].as_str()),
            (Some("unknown_action"), Some("/action"))
        );
        assert_eq!(e["hint"], "did you mean `status`?");
        let e = err(json!({"action": "zzz"})).expect("refused");
        assert_eq!(e["hint"], "`probe` has actions: list, status");
        for (bad, path) in [
            (json!({"action": "list", "limit": 0}), "/limit"),
            (json!({"action": "list", "limit": "x"}), "/limit"),
            (json!({"action": "list", "limit": null}), "/limit"),
            (json!({"action": "list", "tags": [1]}), "/tags/0"),
            (json!({"limit": 1}), "/"),
        ] {
            let e = err(bad.clone()).expect("refused");
            assert_eq!(e["kind"], "invalid_args", "{bad}");
            assert_eq!(e["path"], path, "{bad}");
        }
        // an unknown argument is refused, named, with the keys the tool takes
        let e = err(json!({"action": "status", "limt": 5})).expect("refused");
        assert_eq!(e["path"], "/limt");
        assert_eq!(
            e["hint"],
            "did you mean `limit`? `probe` takes: action, limit, tags"
        );
        // an integer written as a float is left to the default
        let p = parse::<Probe>(&json!({"action": "status", "limit": 5.0})).expect("read");
        assert_eq!((p.action, p.limit), (Kind::Status, None));
        let p =
            parse::<Probe>(&json!({"action": "list", "limit": 5, "tags": ["a"]})).expect("read");
        assert_eq!((p.limit, p.tags), (Some(5), Some(vec!["a".to_owned()])));
    }
}
