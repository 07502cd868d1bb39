//! `state`: small named values, in the session (memory) or persisted in the store.
//!
//! The original's defaults: `set` writes `persistent` (the store, across processes); `get`, `list`
//! and `unset` look at `any` scope, the session first, then the store. Each result says which scope
//! answered (`get`) or was touched (`set`, `unset`). Templates see the same `any` view as `state`
//! (`Session::with_persistent`).

use crate::error::ErrorKind;
use std::collections::BTreeMap;
use std::sync::Mutex;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ActionSpec, ToolSpec, args_schema, no_modes};
use dsl::Effect;

/// In-memory `state` of this process (`scope: session`).
#[derive(Debug, Default)]
pub struct Session {
    values: Mutex<BTreeMap<String, Value>>,
}

impl Session {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Value>> {
        self.values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    pub fn get(&self, key: &str) -> Option<Value> {
        self.map().get(key).cloned()
    }
    pub fn set(&self, key: &str, v: Value) {
        self.map().insert(key.to_owned(), v);
    }
    pub fn unset(&self, key: &str) -> bool {
        self.map().remove(key).is_some()
    }
    pub fn list(&self, prefix: &str, limit: usize) -> Vec<(String, Value)> {
        self.map()
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    /// Every value, as one JSON object (what templates see as `state`).
    pub fn snapshot(&self) -> Value {
        Value::Object(
            self.map()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

/// Where a value is written.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// In memory, for this server process.
    Session,
    /// In the store, across processes and restarts.
    Persistent,
}

/// Where a value is looked for.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadScope {
    /// In memory, for this server process.
    Session,
    /// In the store, across processes and restarts.
    Persistent,
    /// The session first, then the store.
    Any,
}

impl ReadScope {
    /// Whether it looks in the session, and in the store.
    fn looks(self) -> (bool, bool) {
        match self {
            ReadScope::Session => (true, false),
            ReadScope::Persistent => (false, true),
            ReadScope::Any => (true, true),
        }
    }

    fn name(self) -> &'static str {
        match self {
            ReadScope::Session => "session",
            ReadScope::Persistent => "persistent",
            ReadScope::Any => "any",
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetArgs {
    /// The key.
    #[schemars(length(min = 1, max = 256))]
    pub key: String,
    /// Any JSON value.
    pub value: Value,
    /// `persistent` (default) or `session`.
    pub scope: Option<Scope>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyArgs {
    /// The key.
    #[schemars(length(min = 1, max = 256))]
    pub key: String,
    /// `any` (default: the session, then the store), `session` or `persistent`.
    pub scope: Option<ReadScope>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// `any` (default: both, the session's value where a key is in both), `session` or `persistent`.
    pub scope: Option<ReadScope>,
    /// At most this many keys.
    #[schemars(range(min = 1, max = 10000))]
    pub limit: Option<u32>,
}

pub(super) fn tool() -> ToolSpec {
    ToolSpec {
        name: "state",
        title: "State",
        description: "Small named values shared between calls and runbook steps: in the session or persisted.",
        aliases: &["mcp_state"],
        open_world: false,
        actions: vec![
            ActionSpec {
                tool: "state",
                name: "set",
                title: "Set a state value",
                description: "Stores a JSON value under a key.",
                effect: Effect::Write,
                unsafe_local: false,
                schema_fn: || {
                    args_schema::<SetArgs>("state", "set", "Stores a JSON value under a key.")
                },
                modes: no_modes,
                classify: None,
                secret_args: None,
                example: || json!({"action": "set", "key": "hello", "value": "world"}),
            },
            ActionSpec {
                tool: "state",
                name: "get",
                title: "Get a state value",
                description: "Reads the value under a key.",
                effect: Effect::Read,
                unsafe_local: false,
                schema_fn: || {
                    args_schema::<KeyArgs>("state", "get", "Reads the value under a key.")
                },
                modes: no_modes,
                classify: None,
                secret_args: None,
                example: || json!({"action": "get", "key": "hello"}),
            },
            ActionSpec {
                tool: "state",
                name: "list",
                title: "List state keys",
                description: "Lists keys and values, optionally by prefix.",
                effect: Effect::Read,
                unsafe_local: false,
                schema_fn: || {
                    args_schema::<ListArgs>(
                        "state",
                        "list",
                        "Lists keys and values, optionally by prefix.",
                    )
                },
                modes: no_modes,
                classify: None,
                secret_args: None,
                example: || json!({"action": "list", "prefix": "deploy."}),
            },
            ActionSpec {
                tool: "state",
                name: "unset",
                title: "Remove a state value",
                description: "Removes the value under a key.",
                effect: Effect::Write,
                unsafe_local: false,
                schema_fn: || {
                    args_schema::<KeyArgs>("state", "unset", "Removes the value under a key.")
                },
                modes: no_modes,
                classify: None,
                secret_args: None,
                example: || json!({"action": "unset", "key": "hello"}),
            },
        ],
    }
}

fn store_err(e: crate::store::StoreError) -> super::ActionError {
    super::ActionError::new(ErrorKind::StoreUnavailable, e.to_string())
}

pub(super) fn invoke(action: &str, call: &super::Call<'_>) -> Result<Value, super::ActionError> {
    let host = call.host;
    let store = || host.store().map_err(store_err);
    match action {
        "set" => {
            let SetArgs { key, value, scope } = call.parse()?;
            let scope = match scope.unwrap_or(Scope::Persistent) {
                Scope::Persistent => {
                    // the store outlives the redactor that knows this run's secrets: they are masked
                    // first
                    store()?
                        .state_set(&key, &host.redactor().redact_value(&value))
                        .map_err(store_err)?;
                    "persistent"
                }
                Scope::Session => {
                    host.session().set(&key, value.clone());
                    "session"
                }
            };
            Ok(json!({"key": key, "value": value, "scope": scope, "ok": true}))
        }
        "get" => {
            let KeyArgs { key, scope } = call.parse()?;
            let scope = scope.unwrap_or(ReadScope::Any);
            let (in_session, in_store) = scope.looks();
            let mut found = None;
            if in_session && let Some(v) = host.session().get(&key) {
                found = Some((v, "session"));
            }
            if found.is_none()
                && in_store
                && let Some(v) = store()?.state_get(&key).map_err(store_err)?
            {
                found = Some((v, "persistent"));
            }
            Ok(match found {
                Some((value, from)) => {
                    json!({"key": key, "found": true, "value": value, "scope": from, "ok": true})
                }
                None => {
                    json!({"key": key, "found": false, "value": null, "scope": scope.name(), "ok": true})
                }
            })
        }
        "unset" => {
            let KeyArgs { key, scope } = call.parse()?;
            let scope = scope.unwrap_or(ReadScope::Any);
            let (in_session, in_store) = scope.looks();
            let mut removed = Vec::new();
            if in_session && host.session().unset(&key) {
                removed.push("session");
            }
            if in_store && store()?.state_unset(&key).map_err(store_err)? {
                removed.push("persistent");
            }
            Ok(json!({
                "key": key,
                "existed": !removed.is_empty(),
                "removed_from": removed,
                "scope": scope.name(),
                "ok": true,
            }))
        }
        "list" => {
            let ListArgs {
                prefix,
                scope,
                limit,
            } = call.parse()?;
            let scope = scope.unwrap_or(ReadScope::Any);
            let (in_session, in_store) = scope.looks();
            let prefix = prefix.unwrap_or_default();
            let limit = limit.unwrap_or(1000) as usize;
            let mut items: BTreeMap<String, Value> = BTreeMap::new();
            if in_store {
                items.extend(store()?.state_list(&prefix, limit + 1).map_err(store_err)?);
            }
            if in_session {
                // where a key is in both, the session's value is the one `get` gives
                items.extend(host.session().list(&prefix, limit + 1));
            }
            let truncated = items.len() > limit;
            let items: serde_json::Map<String, Value> = items.into_iter().take(limit).collect();
            Ok(
                json!({"items": items, "count": items.len(), "truncated": truncated, "scope": scope.name(), "ok": true}),
            )
        }
        other => Err(super::ActionError::new(
            ErrorKind::NotAvailable,
            format!("state has no action `{other}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::parse_args;

    #[test]
    fn examples_parse_into_their_types() {
        crate::actions::examples_parse(tool(), |action, args| match action {
            "set" => parse_args::<SetArgs>(args).map(drop),
            "list" => parse_args::<ListArgs>(args).map(drop),
            _ => parse_args::<KeyArgs>(args).map(drop),
        });
        let bad = json!({"action": "get", "key": "k", "nope": 1});
        let e = parse_args::<KeyArgs>(bad.as_object().expect("object")).expect_err("unknown field");
        assert_eq!(e.kind, ErrorKind::InvalidArgs);
        assert!(e.message.contains("nope"), "{}", e.message);
    }
}
