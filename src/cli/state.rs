//! `infra state get|set|list|unset` (the persistent scope, shared with the MCP server and runbooks; a
//! CLI process has no session of its own to speak of).

use super::{FAILED, OK, USAGE, engine};
use crate::render;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print a value (a string as it is, anything else as JSON).
    Get {
        /// The key.
        key: String,
        /// Print the result as JSON on stdout (the value, and the scope that answered).
        #[arg(long)]
        json: bool,
    },
    /// Store a value (read as YAML: `3`, `true`, `[a, b]`, or a string).
    Set {
        /// The key.
        key: String,
        /// The value, read as YAML.
        value: String,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List keys and values by prefix, in key order.
    List {
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
        /// How many to show (1000 when not given).
        #[arg(short = 'n', long)]
        limit: Option<u32>,
        /// Print JSON on stdout (an object of keys and values) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a value.
    Unset {
        /// The key.
        key: String,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: Command) -> u8 {
    let call = match &cmd {
        Command::Get { key, .. } => {
            serde_json::json!({"action": "get", "key": key, "scope": "persistent"})
        }
        Command::Set { key, value, .. } => serde_json::json!({
            "action": "set", "key": key, "scope": "persistent",
            "value": dsl::coerce_input(dsl::InputType::Object, value),
        }),
        Command::List { prefix, limit, .. } => {
            let mut c =
                serde_json::json!({"action": "list", "prefix": prefix, "scope": "persistent"});
            if let Some(n) = limit {
                c["limit"] = (*n).into();
            }
            c
        }
        Command::Unset { key, .. } => {
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
                Command::Get { key, .. } if shown["found"] != true => {
                    render::err(&format!(
                        "error: no value `{key}`; `infra state list` shows the keys there are\n"
                    ));
                    return FAILED;
                }
                Command::Get { json: true, .. }
                | Command::Set { json: true, .. }
                | Command::Unset { json: true, .. }
                | Command::List { json: true, .. } => render::json(&shown),
                Command::Get { .. } => render::out(&scalar(&shown["value"])),
                Command::Set { .. } => {}
                Command::List { .. } => {
                    let mut out = String::new();
                    for (k, v) in shown["items"].as_object().into_iter().flatten() {
                        out.push_str(&format!("{k} = {v}\n"));
                    }
                    render::out(&out);
                    if shown["truncated"] == true {
                        render::note(&format!(
                            "… more keys than the {} shown; `-n` shows more, a longer prefix fewer\n",
                            shown["count"]
                        ));
                    }
                }
                Command::Unset { key, .. } if shown["existed"] != true => {
                    render::note(&format!("no value `{key}` to remove\n"));
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

/// A value for a person: a string as it is, anything else as pretty JSON; one final newline.
fn scalar(v: &serde_json::Value) -> String {
    let mut text = match v {
        serde_json::Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}
