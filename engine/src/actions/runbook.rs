//! `runbook`: the nested run of another runbook (`runbook.run`).

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ActionSpec, ToolSpec, args_schema, no_modes};
use dsl::Effect;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    /// The runbook to run, by name.
    pub name: Option<String>,
    /// An inline runbook (instead of `name`).
    pub runbook: Option<Value>,
    /// Its inputs.
    pub input: Option<Map<String, Value>>,
    /// Compile and show the plan; run nothing.
    pub dry_run: Option<bool>,
}

pub(super) fn tool() -> ToolSpec {
    ToolSpec {
        name: "runbook",
        title: "Runbooks",
        description: "Named, checked workflows: run one (nested in a runbook, depth-limited).",
        aliases: &["mcp_runbook"],
        actions: vec![ActionSpec {
            tool: "runbook",
            name: "run",
            title: "Run a runbook",
            description: "Runs a runbook by name (or inline) with inputs; its effect is the nested runbook's.",
            effect: Effect::Write,
            unsafe_local: false,
            schema_fn: || {
                args_schema::<RunArgs>(
                    "runbook",
                    "run",
                    "Runs a runbook by name (or inline) with inputs; its effect is the nested runbook's.",
                )
            },
            modes: no_modes,
            example: || json!({"action": "run", "name": "repo.snapshot", "input": {"repo_path": "."}}),
        }],
    }
}
