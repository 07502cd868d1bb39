//! `runbook`: the nested run of another runbook (`runbook.run`).

use crate::error::ErrorKind;
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
        open_world: false,
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
            classify: None,
            secret_args: None,
            example: || json!({"action": "run", "name": "repo.snapshot", "input": {"repo_path": "."}}),
        }],
    }
}

/// How deep runbooks may nest (`runbook.run` inside `runbook.run` …), checked when a plan is compiled
/// and again when a nested run starts.
pub const MAX_NESTING: usize = 8;

pub(super) fn invoke(action: &str, call: &super::Call<'_>) -> Result<Value, super::ActionError> {
    if action != "run" {
        return Err(super::ActionError::new(
            ErrorKind::NotAvailable,
            format!("runbook has no action `{action}`"),
        ));
    }
    if call.depth >= MAX_NESTING {
        return Err(super::ActionError::new(
            ErrorKind::Refused,
            format!("runbooks nest deeper than {MAX_NESTING}"),
        ));
    }
    let RunArgs {
        name,
        runbook,
        input,
        dry_run,
    } = call.parse()?;
    let which = match (&name, &runbook) {
        (Some(name), None) => super::Nested::Name(name),
        (None, Some(inline)) => super::Nested::Inline(inline),
        _ => {
            return Err(super::ActionError::new(
                ErrorKind::InvalidArgs,
                "give exactly one of `name` and `runbook`",
            ));
        }
    };
    let given = input.unwrap_or_default();
    if dry_run == Some(true) {
        let plan = call.host.plan_nested(which, &given)?;
        return Ok(serde_json::json!({"dry_run": true, "plan": plan, "ok": true}));
    }
    let outcome = call
        .host
        .run_nested(which, &given, call.cancel, call.depth + 1, call.grant)?;
    let ok = outcome.status == crate::record::evidence::Status::Succeeded;
    let result = serde_json::json!({
        "run_id": outcome.run_id,
        "runbook": outcome.runbook,
        "status": outcome.status,
        "outputs": outcome.outputs,
        "ok": ok,
    });
    if ok {
        Ok(result)
    } else {
        Err(super::ActionError::new(
            ErrorKind::Failed,
            match &outcome.error {
                Some(e) => format!(
                    "nested runbook `{}` ended {}: {e}",
                    outcome.runbook,
                    outcome.status.as_str(),
                ),
                None => format!(
                    "nested runbook `{}` ended {}",
                    outcome.runbook,
                    outcome.status.as_str()
                ),
            },
        )
        .with_result(result))
    }
}
