//! A call's answer in plain data (`Reply`), before `mod.rs` turns it into rmcp's `CallToolResult`.
//!
//! Every tool answers with the same body, whose shape is [`output_schema`]: `ok`, `effects`, `summary`,
//! `result`, `run_id` and `artifacts`, or `error: {kind, message, hint?, path?}` when it failed. The
//! constructors here are the only places that shape is made: [`Reply::ok`] for a read that succeeded,
//! [`Reply::error`] for a refusal or failure, and [`Reply::diagnostics`] for diagnostics from `dsl` or the
//! engine, the first error of which becomes `error`.

use serde_json::{Value, json};

/// What a call returns: the result object, whether it is an error, and artifact links.
#[derive(Debug, Clone)]
pub struct Reply {
    pub body: Value,
    pub is_error: bool,
    pub links: Vec<String>,
    /// The run a reply answers for, whose directory holds the whole result when the budget cuts it
    /// (`catalogue::call` applies the budget once, after `output` shaped the result).
    pub run: Option<RunRef>,
    /// A result the caller may see unmasked (`artifacts` with `include_secrets`, behind
    /// `INFRA_ALLOW_SECRET_EXPORT=1`): put back after the reply is redacted.
    pub raw_result: Option<Value>,
    /// Warnings for the client's log (`notifications/message`, when it set a level): a runbook's
    /// deprecated syntax, a project runbook that overrides a built-in. Not part of the body.
    pub warnings: Vec<String>,
}

/// Where a run's records are: its directory and the `artifact://` base of its URIs.
#[derive(Debug, Clone)]
pub struct RunRef {
    pub dir: std::path::PathBuf,
    pub uri_base: String,
}

impl Reply {
    /// The answer of a run (`body` made by the caller), whose directory holds its whole result.
    pub fn of_run(
        body: Value,
        ok: bool,
        links: Vec<String>,
        outcome: &engine::run::RunOutcome,
    ) -> Self {
        Reply {
            body,
            is_error: !ok,
            links,
            run: Some(RunRef {
                dir: outcome.dir.clone(),
                uri_base: outcome.uri_base.clone(),
            }),
            raw_result: None,
            warnings: Vec::new(),
        }
    }

    /// A successful call that changed nothing (`effects: read`).
    pub fn ok(summary: String, result: Value) -> Self {
        Reply {
            body: json!({"ok": true, "effects": "read", "summary": summary, "result": result}),
            is_error: false,
            links: Vec::new(),
            run: None,
            raw_result: None,
            warnings: Vec::new(),
        }
    }

    /// A failed or refused call: `kind` is a stable word (`invalid_args`, `not_found`, `refused`, …);
    /// `path` is the JSON pointer of the argument at fault.
    pub fn error(
        kind: &str,
        message: impl Into<String>,
        hint: Option<String>,
        path: Option<String>,
    ) -> Self {
        let mut e = json!({"kind": kind, "message": message.into()});
        if let Some(h) = hint {
            e["hint"] = h.into();
        }
        if let Some(p) = path {
            e["path"] = p.into();
        }
        Reply {
            body: json!({"ok": false, "summary": e["message"].clone(), "error": e}),
            is_error: true,
            links: Vec::new(),
            run: None,
            raw_result: None,
            warnings: Vec::new(),
        }
    }

    /// The first error of `diags` as the reply's error (its path without the prefix `strip`), with every
    /// diagnostic under `error.diagnostics`.
    pub fn diagnostics(diags: &[dsl::Diagnostic], strip: &str) -> Self {
        let Some(d) = diags.iter().find(|d| d.is_error()) else {
            return Reply::error("invalid_args", "the call was not accepted", None, None);
        };
        let kind = match d.code {
            dsl::Code::UnknownAction => "unknown_action",
            dsl::Code::UnknownTool => "unknown_tool",
            dsl::Code::InvalidInput => "invalid_input",
            _ => "invalid_args",
        };
        let path = d
            .path
            .as_deref()
            .map(|p| p.strip_prefix(strip).unwrap_or(p).to_owned());
        let mut r = Reply::error(kind, d.message.clone(), d.help.clone(), path);
        r.body["error"]["diagnostics"] =
            Value::Array(diags.iter().map(dsl::Diagnostic::to_json).collect());
        r
    }
}

/// The shape of every tool's result (`outputSchema`): kept small, since every tool repeats it; the
/// fields are described by the module's header and by `help`.
pub fn output_schema() -> Value {
    // types only where a client needs them: every tool lists this, and `tools/list` has a budget
    json!({
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "effects": {},
            "summary": {},
            "result": {},
            "run_id": {},
            "artifacts": {},
            "error": {}
        },
        "required": ["ok", "summary"]
    })
}
