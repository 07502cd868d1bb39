//! `infra state get|set|list|unset` (the persistent scope, shared with the MCP server and runbooks; a
//! CLI process has no session of its own to speak of).

use super::{FAILED, OK, USAGE, engine};
use crate::render;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print a value.
    Get { key: String },
    /// Store a value (read as YAML: `3`, `true`, `[a, b]`, or a string).
    Set { key: String, value: String },
    /// List keys and values by prefix.
    List {
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Remove a value.
    Unset { key: String },
}

pub fn run(cmd: Command) -> u8 {
    let call = match &cmd {
        Command::Get { key } => {
            serde_json::json!({"action": "get", "key": key, "scope": "persistent"})
        }
        Command::Set { key, value } => serde_json::json!({
            "action": "set", "key": key, "scope": "persistent",
            "value": dsl::coerce_input(dsl::InputType::Object, value),
        }),
        Command::List { prefix } => {
            serde_json::json!({"action": "list", "prefix": prefix, "scope": "persistent"})
        }
        Command::Unset { key } => {
            serde_json::json!({"action": "unset", "key": key, "scope": "persistent"})
        }
    };
    let engine = engine();
    let plan = match engine::compile_call("state", &call, &engine::CompileOptions::default()) {
        Ok(p) => p,
        Err(d) => {
            render::diagnostics(&d);
            return USAGE;
        }
    };
    let outcome = engine.execute(
        &plan,
        serde_json::Map::new(),
        &engine::run::RunOptions::default(),
    );
    match outcome.steps.first().and_then(|s| s.result.clone()) {
        Some(r) if outcome.ok() => {
            let shown = engine.redactor().redact_value(&r);
            match cmd {
                Command::Get { key } if shown["found"] != true => {
                    render::err(&format!(
                        "error: no value `{key}`; `infra state list` shows the keys there are\n"
                    ));
                    return FAILED;
                }
                Command::Get { .. } => render::json(&shown["value"]),
                Command::Set { .. } => {}
                Command::List { .. } => render::json(&shown["items"]),
                Command::Unset { key } if shown["existed"] != true => {
                    render::err(&format!("no value `{key}` to remove\n"));
                }
                Command::Unset { .. } => {}
            }
            OK
        }
        _ => {
            let msg = outcome
                .steps
                .first()
                .and_then(|s| s.error.as_ref().map(ToString::to_string))
                .or(outcome.error.map(|e| e.message))
                .unwrap_or_default();
            render::err(&format!("error: {msg}\n"));
            FAILED
        }
    }
}
