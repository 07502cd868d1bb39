//! `state`: small named values, in the session (memory) or persisted in the store.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ActionSpec, ToolSpec, args_schema, no_modes};
use dsl::Effect;

/// Where a value lives.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// In memory, for this server process.
    Session,
    /// In the store, across processes and restarts.
    Persistent,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetArgs {
    /// The key.
    #[schemars(length(min = 1, max = 256))]
    pub key: String,
    /// Any JSON value.
    pub value: Value,
    /// `session` (default) or `persistent`.
    pub scope: Option<Scope>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyArgs {
    /// The key.
    #[schemars(length(min = 1, max = 256))]
    pub key: String,
    /// `session` (default) or `persistent`.
    pub scope: Option<Scope>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// `session` (default) or `persistent`.
    pub scope: Option<Scope>,
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
                example: || json!({"action": "unset", "key": "hello"}),
            },
        ],
    }
}
