//! The `ssh` actions' argument types and specs: one struct per argument shape (`ExecArgs`,
//! `BatchArgs`, `TargetArgs` for `health` and `info`, `UploadArgs`, `DownloadArgs`), whose derived
//! schemas are the committed ones and into which `invoke` parses every call, and `tool()`, the
//! table of the six actions. `env` is an `IndexMap`, so the variables keep the caller's order.
//! `CommandArgs` is what `exec` and `batch` say about the command (`batch` has neither `pty` nor a
//! standard input but `stdin`); `Source` is where a standard input or an upload's content comes
//! from.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::actions::{ActionSpec, ToolSpec, args_schema, no_modes};
use dsl::Effect;
use dsl::template::Mode;

/// Run a command on a target: `command` is a shell line (run by `/bin/sh -c`); `argv` (or `command` with
/// `args`) is joined with each argument quoted.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecArgs {
    /// The target's name in targets.json|yaml.
    pub target: String,
    /// A shell command line, or the program when `args` is given.
    pub command: Option<String>,
    /// Arguments of `command`, each passed as one word.
    pub args: Option<Vec<String>>,
    /// Program and arguments, each passed as one word.
    pub argv: Option<Vec<String>>,
    /// Remote working directory.
    pub cwd: Option<String>,
    /// Environment variables for the command.
    pub env: Option<IndexMap<String, String>>,
    /// Allocate a pseudo-terminal (off by default; stderr then arrives on stdout).
    pub pty: Option<bool>,
    /// Text written to standard input.
    pub stdin: Option<String>,
    /// Bytes (base64) written to standard input.
    pub stdin_base64: Option<String>,
    /// An artifact (`artifact://…`) streamed to standard input.
    pub stdin_ref: Option<String>,
    /// A file on the infra host streamed to standard input (needs INFRA_UNSAFE_LOCAL=1).
    pub stdin_file: Option<String>,
    /// Close standard input after writing (default true).
    pub stdin_eof: Option<bool>,
    /// Largest output kept in the result, per stream, in bytes (the rest is in artifacts).
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
    /// Exit codes that count as success (default `[0]`): e.g. `[0, 1]` for `diff` or `grep`. The
    /// result always carries `exit_code`.
    #[schemars(length(min = 1, max = 256))]
    pub ok_exit_codes: Option<Vec<i32>>,
    /// Start the command to outlive the call and answer a `job_id` at once (`jobs` reads, waits for
    /// and cancels it); its output is in a file on the target.
    pub detach: Option<bool>,
}

/// One command on several targets.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchArgs {
    /// Target names.
    pub targets: Option<Vec<String>>,
    /// Every target with this label.
    pub label: Option<String>,
    pub command: Option<String>,
    pub args: Option<Vec<String>>,
    pub argv: Option<Vec<String>>,
    pub cwd: Option<String>,
    pub env: Option<IndexMap<String, String>>,
    pub stdin: Option<String>,
    /// Exit codes that count as success (default `[0]`): e.g. `[0, 1]` for `diff` or `grep`. The
    /// result always carries `exit_code`.
    #[schemars(length(min = 1, max = 256))]
    pub ok_exit_codes: Option<Vec<i32>>,
    /// Targets worked on at once (default 4).
    #[schemars(range(min = 1, max = 32))]
    pub parallel: Option<u32>,
    /// Largest output kept in the result, per target and stream (default 64 KiB).
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetArgs {
    /// The target's name in targets.json|yaml.
    pub target: String,
}

/// Send a file to a target. The source is one of `content`, `content_base64`, `artifact`, or
/// `local_path` (needs INFRA_UNSAFE_LOCAL=1).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadArgs {
    pub target: String,
    /// Where the file goes on the target (replaced whole, never half-written).
    pub remote_path: String,
    pub content: Option<String>,
    pub content_base64: Option<String>,
    /// An artifact (`artifact://…`) to send.
    pub artifact: Option<String>,
    /// A file on the infra host to send (needs INFRA_UNSAFE_LOCAL=1).
    pub local_path: Option<String>,
    /// File mode, e.g. 420 (0644, the default).
    #[schemars(range(min = 0, max = 4095))]
    pub mode: Option<u32>,
}

/// Fetch a file from a target into an artifact, or to `local_path` (needs INFRA_UNSAFE_LOCAL=1).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadArgs {
    pub target: String,
    pub remote_path: String,
    /// A file on the infra host to write (needs INFRA_UNSAFE_LOCAL=1).
    pub local_path: Option<String>,
    /// Refuse files larger than this (default 1 GiB).
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
}

/// Where bytes come from: a command's standard input, an upload's content.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source<'a> {
    Text(&'a str),
    Base64(&'a str),
    /// An artifact URI.
    Artifact(&'a str),
    /// A file on the infra host.
    HostFile(&'a str),
}

/// What `exec` and `batch` say about the command, which `remote_command` makes a
/// `RemoteCommand` of.
#[derive(Debug)]
pub(super) struct CommandArgs<'a> {
    pub command: Option<&'a str>,
    pub args: Option<&'a [String]>,
    pub argv: Option<&'a [String]>,
    pub cwd: Option<&'a str>,
    pub env: Option<&'a IndexMap<String, String>>,
    pub pty: bool,
    pub stdin: Option<Source<'a>>,
    pub stdin_eof: bool,
    pub ok_exit_codes: &'a [i32],
}

impl ExecArgs {
    pub(super) fn command_args(&self) -> CommandArgs<'_> {
        // the first of the standard inputs given
        let stdin = [
            self.stdin.as_deref().map(Source::Text),
            self.stdin_base64.as_deref().map(Source::Base64),
            self.stdin_ref.as_deref().map(Source::Artifact),
            self.stdin_file.as_deref().map(Source::HostFile),
        ]
        .into_iter()
        .flatten()
        .next();
        CommandArgs {
            command: self.command.as_deref(),
            args: self.args.as_deref(),
            argv: self.argv.as_deref(),
            cwd: self.cwd.as_deref(),
            env: self.env.as_ref(),
            pty: self.pty.unwrap_or(false),
            stdin,
            stdin_eof: self.stdin_eof.unwrap_or(true),
            ok_exit_codes: self.ok_exit_codes.as_deref().unwrap_or_default(),
        }
    }
}

impl BatchArgs {
    pub(super) fn command_args(&self) -> CommandArgs<'_> {
        CommandArgs {
            command: self.command.as_deref(),
            args: self.args.as_deref(),
            argv: self.argv.as_deref(),
            cwd: self.cwd.as_deref(),
            env: self.env.as_ref(),
            pty: false,
            stdin: self.stdin.as_deref().map(Source::Text),
            stdin_eof: true,
            ok_exit_codes: self.ok_exit_codes.as_deref().unwrap_or_default(),
        }
    }
}

fn exec_modes(args: &Map<String, Value>) -> Vec<(&'static str, Mode)> {
    if args.contains_key("args") || args.contains_key("argv") {
        Vec::new()
    } else {
        vec![("command", Mode::Shell)]
    }
}

pub(super) fn tool() -> ToolSpec {
    let a = |name, title, description, effect, schema_fn: fn() -> Value, example: fn() -> Value| {
        ActionSpec {
            tool: "ssh",
            name,
            title,
            description,
            effect,
            unsafe_local: false,
            schema_fn,
            modes: no_modes,
            classify: None,
            secret_args: None,
            example,
        }
    };
    let mut exec = a(
        "exec",
        "Run a command on a target",
        "Runs a command on a target over its pooled SSH session; output streamed to artifacts; timeout or cancel kills the remote process group.",
        Effect::Write,
        || {
            args_schema::<ExecArgs>(
                "ssh",
                "exec",
                "Runs a command on a target over its pooled SSH session; output streamed to artifacts; timeout or cancel kills the remote process group.",
            )
        },
        || json!({"action": "exec", "target": "prod", "command": "uptime"}),
    );
    exec.modes = exec_modes;
    let mut batch = a(
        "batch",
        "Run a command on many targets",
        "Runs one command on several targets (by name or label), a bounded number at once; one result per target.",
        Effect::Write,
        || {
            args_schema::<BatchArgs>(
                "ssh",
                "batch",
                "Runs one command on several targets (by name or label), a bounded number at once; one result per target.",
            )
        },
        || json!({"action": "batch", "label": "web", "command": "uptime", "parallel": 4}),
    );
    batch.modes = exec_modes;
    ToolSpec {
        name: "ssh",
        title: "SSH",
        description: "Commands and SFTP on the targets of targets.json|yaml, one host-key-checked session each, reused.",
        aliases: &["mcp_ssh_manager"],
        open_world: true,
        actions: vec![
            exec,
            batch,
            a(
                "health",
                "Check a target",
                "Connects afresh, authenticates, runs `true`; reports latency and the host key fingerprint.",
                Effect::Read,
                || {
                    args_schema::<TargetArgs>(
                        "ssh",
                        "health",
                        "Connects afresh, authenticates, runs `true`; reports latency and the host key fingerprint.",
                    )
                },
                || json!({"action": "health", "target": "prod"}),
            ),
            a(
                "info",
                "Describe a target",
                "OS, kernel, uptime, load, memory and disk of a target, in one round trip.",
                Effect::Read,
                || {
                    args_schema::<TargetArgs>(
                        "ssh",
                        "info",
                        "OS, kernel, uptime, load, memory and disk of a target, in one round trip.",
                    )
                },
                || json!({"action": "info", "target": "prod"}),
            ),
            a(
                "upload",
                "Upload a file",
                "Sends content, an artifact, or a host file (with INFRA_UNSAFE_LOCAL=1) to a target over SFTP; replaced whole, with its SHA-256.",
                Effect::Write,
                || {
                    args_schema::<UploadArgs>(
                        "ssh",
                        "upload",
                        "Sends content, an artifact, or a host file (with INFRA_UNSAFE_LOCAL=1) to a target over SFTP; replaced whole, with its SHA-256.",
                    )
                },
                || json!({"action": "upload", "target": "prod", "remote_path": "/tmp/motd", "content": "hello\n"}),
            ),
            a(
                "download",
                "Download a file",
                "Fetches a file from a target over SFTP into an artifact (or, with INFRA_UNSAFE_LOCAL=1, a host file), with its SHA-256.",
                Effect::Read,
                || {
                    args_schema::<DownloadArgs>(
                        "ssh",
                        "download",
                        "Fetches a file from a target over SFTP into an artifact (or, with INFRA_UNSAFE_LOCAL=1, a host file), with its SHA-256.",
                    )
                },
                || json!({"action": "download", "target": "prod", "remote_path": "/etc/os-release"}),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::parse_args;
    use crate::error::ErrorKind;

    #[test]
    fn examples_parse_into_their_types() {
        assert_eq!(tool().actions.len(), 6);
        crate::actions::examples_parse(tool(), |action, args| match action {
            "exec" => parse_args::<ExecArgs>(args).map(drop),
            "batch" => parse_args::<BatchArgs>(args).map(drop),
            "health" | "info" => parse_args::<TargetArgs>(args).map(drop),
            "upload" => parse_args::<UploadArgs>(args).map(drop),
            "download" => parse_args::<DownloadArgs>(args).map(drop),
            other => panic!("no argument type for `{other}`"),
        });
        // `batch` has no `pty` (nor any standard input but `stdin`)
        let bad = json!({"action": "batch", "label": "web", "command": "true", "pty": true});
        let e =
            parse_args::<BatchArgs>(bad.as_object().expect("object")).expect_err("unknown field");
        assert_eq!(e.kind, ErrorKind::InvalidArgs);
        assert!(e.message.contains("pty"), "{}", e.message);
    }

    #[test]
    fn env_keeps_the_callers_order() {
        let v = json!({"action": "exec", "target": "t", "command": "true", "env": {"Z": "1", "A": "2"}, "stdin_ref": "artifact://x", "stdin": "s", "timeout_ms": 5});
        let a = parse_args::<ExecArgs>(v.as_object().expect("object")).expect("parses");
        let c = a.command_args();
        let keys: Vec<&str> = c
            .env
            .into_iter()
            .flat_map(|e| e.keys())
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["Z", "A"]);
        assert!(matches!(c.stdin, Some(Source::Text("s"))), "{:?}", c.stdin);
        assert!(c.stdin_eof && !c.pty);
    }
}
