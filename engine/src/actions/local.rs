//! `local`: processes and files on the infra host. Refused unless `INFRA_UNSAFE_LOCAL=1`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ActionSpec, ToolSpec, args_schema};
use dsl::Effect;
use dsl::template::Mode;

/// Run a program: `command` alone is a shell command line; `command` with `args` (or `argv`) runs the
/// program directly, without a shell.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecArgs {
    /// A shell command line, or the program when `args` is given.
    pub command: Option<String>,
    /// Arguments of `command` (no shell).
    pub args: Option<Vec<String>>,
    /// Program and arguments (no shell).
    pub argv: Option<Vec<String>>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Extra environment variables.
    pub env: Option<BTreeMap<String, String>>,
    /// Text written to standard input.
    pub stdin: Option<String>,
    /// Bytes (base64) written to standard input.
    pub stdin_base64: Option<String>,
    /// A local file streamed to standard input.
    pub stdin_file: Option<String>,
    /// An artifact (`artifact://…`) streamed to standard input.
    pub stdin_ref: Option<String>,
    /// Close standard input after writing (default true).
    pub stdin_eof: Option<bool>,
    /// Return output in the result as well as in artifacts (default true).
    pub inline: Option<bool>,
    /// Largest output kept in the result, per stream, in bytes.
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    pub path: String,
    #[schemars(range(min = 0))]
    pub offset: Option<u64>,
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteArgs {
    pub path: String,
    /// Text to write.
    pub content: Option<String>,
    /// Bytes (base64) to write.
    pub content_base64: Option<String>,
    /// Append instead of replacing.
    pub append: Option<bool>,
    /// Create missing parent directories.
    pub create_dirs: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathArgs {
    pub path: String,
}

fn exec_modes(args: &Map<String, Value>) -> Vec<(&'static str, Mode)> {
    if args.contains_key("args") || args.contains_key("argv") {
        Vec::new()
    } else {
        vec![("command", Mode::Shell)]
    }
}

fn plain(_: &Map<String, Value>) -> Vec<(&'static str, Mode)> {
    Vec::new()
}

pub(super) fn tool() -> ToolSpec {
    let a = |name, title, description, effect, schema_fn: fn() -> Value, example: fn() -> Value| {
        ActionSpec {
            tool: "local",
            name,
            title,
            description,
            effect,
            unsafe_local: true,
            schema_fn,
            modes: plain,
            example,
        }
    };
    let mut exec = a(
        "exec",
        "Run a local command",
        "Runs a program or shell command on the infra host (needs INFRA_UNSAFE_LOCAL=1).",
        Effect::Write,
        || {
            args_schema::<ExecArgs>(
                "local",
                "exec",
                "Runs a program or shell command on the infra host (needs INFRA_UNSAFE_LOCAL=1).",
            )
        },
        || json!({"action": "exec", "command": "uname", "args": ["-a"]}),
    );
    exec.modes = exec_modes;
    ToolSpec {
        name: "local",
        title: "Local host",
        description: "Processes and files on the infra host. Listed and allowed only with INFRA_UNSAFE_LOCAL=1.",
        aliases: &["mcp_local"],
        actions: vec![
            exec,
            a(
                "read",
                "Read a local file",
                "Reads a file (bounded).",
                Effect::Read,
                || args_schema::<ReadArgs>("local", "read", "Reads a file (bounded)."),
                || json!({"action": "read", "path": "README.md", "max_bytes": 4096}),
            ),
            a(
                "write",
                "Write a local file",
                "Writes or appends to a file.",
                Effect::Write,
                || args_schema::<WriteArgs>("local", "write", "Writes or appends to a file."),
                || json!({"action": "write", "path": "notes.txt", "content": "hello\n"}),
            ),
            a(
                "list",
                "List a local directory",
                "Lists a directory's entries.",
                Effect::Read,
                || args_schema::<PathArgs>("local", "list", "Lists a directory's entries."),
                || json!({"action": "list", "path": "."}),
            ),
            a(
                "stat",
                "Stat a local path",
                "Type, size, mode and times of a path.",
                Effect::Read,
                || {
                    args_schema::<PathArgs>(
                        "local",
                        "stat",
                        "Type, size, mode and times of a path.",
                    )
                },
                || json!({"action": "stat", "path": "."}),
            ),
        ],
    }
}
