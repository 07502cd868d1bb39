//! `ssh`: commands and file transfers on the targets of `targets.json|yaml`, over one pooled,
//! host-key-checked session per target.
//!
//! `exec` and `batch` write, `upload` writes, `health`, `info` and `download` read. `invoke` loads
//! the targets for each call and builds a `session::Cx`. `with_channel` takes a permit, the pooled
//! session and a channel; a session that fails to open a channel, or does not answer within the
//! target's connect timeout (a peer gone silent), is discarded and replaced once, before any
//! command is sent. `batch` runs a bounded pool of threads over the targets, with per-target
//! artifacts under the step's directory. `health` uses a fresh, unpooled connection; `info` runs
//! `INFO_SCRIPT` in one round trip, typed by `parse_info`. Arguments naming host paths
//! (`stdin_file`, `local_path`) are refused without `INFRA_UNSAFE_LOCAL=1` before anything connects
//! (`refuse_local`). A download into an artifact is redacted like every artifact, so its `sha256`
//! is that of what was stored.

pub mod exec;
pub mod session;
pub mod sftp;

use crate::error::ErrorKind;
use std::collections::BTreeMap;
use std::io::Read;
use std::time::Instant;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ActionError, ActionSpec, Call, ToolSpec, args_schema};
use crate::exec::process::Capture;
use dsl::Effect;
use dsl::template::Mode;
use exec::RemoteCommand;
use session::{Conn, Cx, Limits, Stop};

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
    pub env: Option<BTreeMap<String, String>>,
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
    pub env: Option<BTreeMap<String, String>>,
    pub stdin: Option<String>,
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
            modes: super::no_modes,
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
        description: "Commands and SFTP transfers on the targets of targets.json|yaml: one host-key-checked session per target, reused across calls.",
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

/// How long a pooled session may take to open a channel before it is taken for dead (a target's
/// `connect_timeout_ms` replaces it).
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Bytes of each stream kept in the result by default.
const EXEC_CAP: usize = 1024 * 1024;
const BATCH_CAP: usize = 64 * 1024;

fn refuse_local(call: &Call<'_>, key: &str) -> Result<(), ActionError> {
    if call.args.contains_key(key) && !call.host.config().unsafe_local {
        return Err(ActionError::new(
            ErrorKind::Refused,
            format!("`{key}` names a path on the infra host, which needs INFRA_UNSAFE_LOCAL=1"),
        )
        .hint("use an artifact instead, or start infra with INFRA_UNSAFE_LOCAL=1"));
    }
    Ok(())
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect()
    })
}

fn open_artifact(call: &Call<'_>, uri: &str) -> Result<std::fs::File, ActionError> {
    crate::record::artifacts::open(&call.host.config().artifacts_root, uri)
        .map_err(|e| ActionError::new(ErrorKind::NotFound, e.to_string()))
}

fn open_local(path: &str) -> Result<std::fs::File, ActionError> {
    std::fs::File::open(path)
        .map_err(|e| ActionError::new(ErrorKind::NotFound, format!("cannot read `{path}`: {e}")))
}

/// The command line and its settings, from `command`, `command` + `args`, or `argv`.
fn remote_command(call: &Call<'_>) -> Result<RemoteCommand, ActionError> {
    let a = call.args;
    let line = if let Some(argv) = strings(a.get("argv")) {
        if argv.is_empty() {
            return Err(ActionError::new(ErrorKind::InvalidArgs, "`argv` is empty")
                .hint("give the program and its arguments"));
        }
        exec::join_argv(&argv)
    } else if let Some(command) = call.str_arg("command") {
        match strings(a.get("args")) {
            Some(args) => {
                let mut argv = vec![command.to_owned()];
                argv.extend(args);
                exec::join_argv(&argv)
            }
            None => command.to_owned(),
        }
    } else {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "give `command` (a shell line, or a program with `args`) or `argv`",
        ));
    };
    let mut env = Vec::new();
    if let Some(map) = a.get("env").and_then(Value::as_object) {
        for (k, v) in map {
            if !exec::valid_env_name(k) {
                return Err(ActionError::new(
                    ErrorKind::InvalidArgs,
                    format!("`env` key `{k}` is not a variable name"),
                )
                .hint("use letters, digits and `_`, not starting with a digit"));
            }
            let v = v.as_str().unwrap_or_default();
            if v.contains('\0') {
                return Err(ActionError::new(
                    ErrorKind::InvalidArgs,
                    format!("`env` value of `{k}` holds a NUL byte, which no environment can hold"),
                ));
            }
            env.push((k.clone(), v.to_owned()));
        }
    }
    if !env.is_empty() && call.bool_arg("pty").unwrap_or(false) {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "`env` with `pty: true`: the values travel on standard input, which a terminal would echo back",
        )
        .hint("drop `pty`, or set the variables in the command itself"));
    }
    let stdin: Option<Box<dyn Read + Send>> = if let Some(s) = call.str_arg("stdin") {
        Some(Box::new(std::io::Cursor::new(s.as_bytes().to_vec())))
    } else if let Some(b) = call.str_arg("stdin_base64") {
        Some(Box::new(std::io::Cursor::new(super::local::base64_decode(
            b,
        )?)))
    } else if let Some(uri) = call.str_arg("stdin_ref") {
        Some(Box::new(open_artifact(call, uri)?))
    } else if let Some(path) = call.str_arg("stdin_file") {
        Some(Box::new(open_local(path)?))
    } else {
        None
    };
    Ok(RemoteCommand {
        line,
        cwd: call.str_arg("cwd").map(str::to_owned),
        env,
        pty: call.bool_arg("pty").unwrap_or(false),
        stdin,
        stdin_eof: call.bool_arg("stdin_eof").unwrap_or(true),
    })
}

fn capture(call: &Call<'_>, default: usize, sub: Option<&str>) -> Capture {
    let (dir, uri_base) = match sub {
        Some(s) => (call.dir.join(s), format!("{}/{s}", call.uri_base)),
        None => (call.dir.clone(), call.uri_base.clone()),
    };
    Capture {
        dir,
        uri_base,
        cap: call
            .u64_arg("max_bytes")
            .map_or(default, |m| m as usize)
            .min(16 * EXEC_CAP),
        redactor: call.host.redactor().clone(),
    }
}

/// The target's pooled session and one channel permit; a session that died is replaced once.
fn with_channel<T>(
    call: &Call<'_>,
    cx: &Cx<'_>,
    name: &str,
    f: impl FnOnce(&Conn, ssh2::Channel) -> Result<T, ActionError>,
) -> Result<T, ActionError> {
    let pool = &call.host.pools().ssh;
    let ep = cx.endpoint(name)?;
    let _permit = pool
        .permit(&ep, cx.limits)
        .map_err(|s| s.into_error("waiting for a channel"))?;
    let mut conn = pool.conn(cx, &ep)?;
    // a pooled session whose peer vanished without a word (a dropped NAT entry) never answers: opening
    // a channel is bounded, and a session that does not answer in time is replaced like a dead one
    let bound = Instant::now()
        + ep.target
            .connect_timeout_ms
            .map_or(OPEN_TIMEOUT, std::time::Duration::from_millis);
    let open_limits = Limits {
        deadline: Some(cx.limits.deadline.map_or(bound, |d| d.min(bound))),
        cancel: cx.limits.cancel,
    };
    let ch = match exec::open(&conn, open_limits) {
        Ok(ch) => ch,
        Err(Stop::Ssh(_) | Stop::Io(_)) => {
            pool.discard(name, &conn);
            conn = pool.conn(cx, &ep)?;
            exec::open(&conn, cx.limits).map_err(|s| s.into_error("opening a channel"))?
        }
        Err(Stop::Timeout) if cx.limits.check().is_ok() => {
            pool.discard(name, &conn);
            conn = pool.conn(cx, &ep)?;
            exec::open(&conn, cx.limits).map_err(|s| s.into_error("opening a channel"))?
        }
        Err(s) => return Err(s.into_error("opening a channel")),
    };
    f(&conn, ch)
}

/// The target's pooled session (for SFTP), replaced once if it died.
fn with_conn<T>(
    call: &Call<'_>,
    cx: &Cx<'_>,
    name: &str,
    f: impl Fn(&Conn) -> Result<T, ActionError>,
) -> Result<T, ActionError> {
    with_channel(call, cx, name, |conn, ch| {
        // the channel proved the session alive; SFTP opens its own
        drop(ch);
        f(conn)
    })
}

fn run_on(
    call: &Call<'_>,
    cx: &Cx<'_>,
    name: &str,
    cmd: RemoteCommand,
    cap: &Capture,
) -> Result<Value, ActionError> {
    let head = json!({"target": name, "command": cmd.line});
    with_channel(call, cx, name, |conn, ch| {
        exec::run(conn, ch, cmd, cx.limits, cap, head)
    })
}

fn exec_action(call: &Call<'_>, cx: &Cx<'_>) -> Result<Value, ActionError> {
    refuse_local(call, "stdin_file")?;
    let name = call.str_arg("target").unwrap_or_default();
    cx.endpoint(name)?;
    let cmd = remote_command(call)?;
    run_on(call, cx, name, cmd, &capture(call, EXEC_CAP, None))
}

fn batch(call: &Call<'_>, cx: &Cx<'_>) -> Result<Value, ActionError> {
    let mut names: Vec<String> = strings(call.args.get("targets")).unwrap_or_default();
    if let Some(label) = call.str_arg("label") {
        for (n, t) in &cx.targets.targets {
            if t.labels.iter().any(|l| l == label) && !names.contains(n) {
                names.push(n.clone());
            }
        }
        if names.is_empty() {
            return Err(ActionError::new(
                ErrorKind::NotFound,
                format!("no target has the label `{label}`"),
            )
            .hint("`context {action: targets}` lists targets and their labels"));
        }
    }
    if names.is_empty() {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "give `targets` (names) or `label`",
        ));
    }
    for n in &names {
        cx.endpoint(n)?;
    }
    remote_command(call)?;
    let parallel = call.u64_arg("parallel").unwrap_or(4).clamp(1, 32) as usize;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Value>>> =
        std::sync::Mutex::new(vec![None; names.len()]);
    std::thread::scope(|s| {
        for _ in 0..parallel.min(names.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    let cap = capture(call, BATCH_CAP, Some(name));
                    let r = remote_command(call).and_then(|cmd| run_on(call, cx, name, cmd, &cap));
                    let v = match r {
                        Ok(v) => v,
                        Err(e) => {
                            let mut v = e.result.clone().unwrap_or_else(|| json!({}));
                            v["target"] = name.as_str().into();
                            v["ok"] = false.into();
                            v["error"] = e.to_json();
                            v
                        }
                    };
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(v);
                }
            });
        }
    });
    let results: Vec<Value> = results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect();
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r["ok"] != true)
        .filter_map(|r| r["target"].as_str())
        .collect();
    let artifacts: Vec<Value> = results
        .iter()
        .flat_map(|r| r["artifacts"].as_array().cloned().unwrap_or_default())
        .collect();
    let out = json!({
        "targets": names,
        "succeeded": results.len() - failed.len(),
        "failed": failed,
        "results": results,
        "artifacts": artifacts,
        "ok": failed.is_empty(),
    });
    if failed.is_empty() {
        Ok(out)
    } else {
        Err(ActionError::new(
            ErrorKind::PartialFailure,
            format!(
                "{} of {} targets failed: {}",
                failed.len(),
                names.len(),
                failed.join(", ")
            ),
        )
        .hint("see `results` for each target's error and output")
        .with_result(out))
    }
}

fn health(call: &Call<'_>, cx: &Cx<'_>) -> Result<Value, ActionError> {
    let name = call.str_arg("target").unwrap_or_default();
    let ep = cx.endpoint(name)?;
    let started = Instant::now();
    let conn = call.host.pools().ssh.fresh(cx, &ep)?;
    let exec_started = Instant::now();
    let code =
        exec::run_quiet(&conn, cx.limits, "true").map_err(|s| s.into_error("running `true`"))?;
    let mut out = conn.facts();
    out["target"] = name.into();
    out["connect_ms"] = conn.connect_ms.into();
    out["exec_ms"] = (exec_started.elapsed().as_millis() as u64).into();
    out["latency_ms"] = (started.elapsed().as_millis() as u64).into();
    out["exit_code"] = code.into();
    out["ok"] = (code == Some(0)).into();
    if code == Some(0) {
        Ok(out)
    } else {
        Err(ActionError::new(
            ErrorKind::NonzeroExit,
            "`true` did not succeed on the target",
        )
        .with_result(out))
    }
}

/// One round trip: `key=value` lines, parsed by [`parse_info`].
const INFO_SCRIPT: &str = r#"printf 'hostname=%s\n' "$(uname -n)"
printf 'kernel=%s\n' "$(uname -sr)"
printf 'arch=%s\n' "$(uname -m)"
[ -r /etc/os-release ] && (. /etc/os-release; printf 'os=%s\n' "${PRETTY_NAME:-$NAME}")
[ -r /proc/uptime ] && printf 'uptime=%s\n' "$(cut -d' ' -f1 /proc/uptime)"
[ -r /proc/loadavg ] && printf 'load=%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
[ -r /proc/meminfo ] && awk '/^MemTotal:/{print "mem_total_kib=" $2} /^MemAvailable:/{print "mem_available_kib=" $2}' /proc/meminfo
df -Pk / 2>/dev/null | awk 'NR==2{print "disk=" $1 " " $2 " " $3 " " $4 " " $6}'
printf 'cpus=%s\n' "$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)"
true"#;

/// The facts of [`INFO_SCRIPT`]'s output, typed.
pub fn parse_info(text: &str) -> Value {
    let mut v = json!({});
    let num = |s: &str| s.trim().parse::<f64>().ok();
    let int = |s: &str| s.trim().parse::<u64>().ok();
    for line in text.lines() {
        let Some((k, val)) = line.split_once('=') else {
            continue;
        };
        match k {
            "hostname" | "kernel" | "arch" | "os" => v[k] = val.trim().into(),
            "uptime" => v["uptime_s"] = num(val).map(|f| f as u64).into(),
            "cpus" => v["cpus"] = int(val).into(),
            "load" => {
                let l: Vec<f64> = val.split_whitespace().filter_map(num).collect();
                v["load"] = json!(l);
            }
            "mem_total_kib" => v["memory"]["total_kib"] = int(val).into(),
            "mem_available_kib" => v["memory"]["available_kib"] = int(val).into(),
            "disk" => {
                let f: Vec<&str> = val.split_whitespace().collect();
                if f.len() == 5 {
                    v["disk"] = json!({
                        "filesystem": f[0],
                        "size_kib": int(f[1]),
                        "used_kib": int(f[2]),
                        "available_kib": int(f[3]),
                        "mount": f[4],
                    });
                }
            }
            _ => {}
        }
    }
    v
}

fn info(call: &Call<'_>, cx: &Cx<'_>) -> Result<Value, ActionError> {
    let name = call.str_arg("target").unwrap_or_default();
    cx.endpoint(name)?;
    let cmd = RemoteCommand {
        line: INFO_SCRIPT.into(),
        cwd: None,
        env: Vec::new(),
        pty: false,
        stdin: None,
        stdin_eof: true,
    };
    let r = run_on(call, cx, name, cmd, &capture(call, 64 * 1024, None))?;
    let mut out = parse_info(r["stdout"].as_str().unwrap_or_default());
    out["target"] = name.into();
    out["duration_ms"] = r["duration_ms"].clone();
    out["ok"] = true.into();
    Ok(out)
}

fn upload(call: &Call<'_>, cx: &Cx<'_>) -> Result<Value, ActionError> {
    refuse_local(call, "local_path")?;
    let name = call.str_arg("target").unwrap_or_default();
    cx.endpoint(name)?;
    let remote = call.str_arg("remote_path").unwrap_or_default();
    let sources = ["content", "content_base64", "artifact", "local_path"];
    let given: Vec<&str> = sources
        .iter()
        .copied()
        .filter(|k| call.args.contains_key(*k))
        .collect();
    if given.len() != 1 {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "give exactly one of `content`, `content_base64`, `artifact` and `local_path`",
        ));
    }
    let mode = call.u64_arg("mode").unwrap_or(0o644) as i32;
    let source = || -> Result<Box<dyn Read>, ActionError> {
        Ok(match given[0] {
            "content" => Box::new(std::io::Cursor::new(
                call.str_arg("content")
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec(),
            )),
            "content_base64" => Box::new(std::io::Cursor::new(super::local::base64_decode(
                call.str_arg("content_base64").unwrap_or_default(),
            )?)),
            "artifact" => Box::new(open_artifact(
                call,
                call.str_arg("artifact").unwrap_or_default(),
            )?),
            _ => Box::new(open_local(call.str_arg("local_path").unwrap_or_default())?),
        })
    };
    let mut out = with_conn(call, cx, name, |conn| {
        sftp::upload(conn, cx.limits, source()?, remote, mode)
    })?;
    out["target"] = name.into();
    Ok(out)
}

fn download(call: &Call<'_>, cx: &Cx<'_>) -> Result<Value, ActionError> {
    refuse_local(call, "local_path")?;
    let name = call.str_arg("target").unwrap_or_default();
    cx.endpoint(name)?;
    let remote = call.str_arg("remote_path").unwrap_or_default();
    let max = call.u64_arg("max_bytes").unwrap_or(1 << 30);
    let base = std::path::Path::new(remote)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.starts_with('.'))
        .unwrap_or("download")
        .to_owned();
    let mut out = if let Some(local) = call.str_arg("local_path") {
        let p = std::path::Path::new(local);
        let tmp = super::temp_sibling(p);
        let r = with_conn(call, cx, name, |conn| {
            let mut f = std::fs::File::create(&tmp).map_err(|e| {
                ActionError::new(ErrorKind::Failed, format!("cannot write `{local}`: {e}"))
            })?;
            let mut w = HashingWriter::new(&mut f);
            let bytes = sftp::download(conn, cx.limits, remote, &mut w, max)?;
            let sha = w.finish();
            f.sync_all()
                .map_err(|e| ActionError::new(ErrorKind::Failed, e.to_string()))?;
            Ok(json!({"local_path": local, "bytes": bytes, "sha256": sha}))
        });
        match r {
            Ok(v) => {
                std::fs::rename(&tmp, p).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    ActionError::new(ErrorKind::Failed, format!("cannot replace `{local}`: {e}"))
                })?;
                v
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
    } else {
        let a = with_conn(call, cx, name, |conn| {
            let mut w = crate::record::artifacts::ArtifactWriter::create(
                &call.dir,
                &call.uri_base,
                &base,
                call.host.redactor().clone(),
            )
            .map_err(|e| {
                ActionError::new(ErrorKind::Failed, format!("cannot make the artifact: {e}"))
            })?;
            if let Err(e) = sftp::download(conn, cx.limits, remote, &mut w, max) {
                // nothing half-written is left behind
                drop(w);
                let _ = std::fs::remove_file(call.dir.join(&base));
                return Err(e);
            }
            w.finish().map_err(|e| {
                ActionError::new(ErrorKind::Failed, format!("cannot write the artifact: {e}"))
            })
        })?;
        json!({"uri": a.uri, "bytes": a.bytes, "sha256": a.sha256, "artifacts": [a.to_json()]})
    };
    out["target"] = name.into();
    out["remote_path"] = remote.into();
    out["ok"] = true.into();
    Ok(out)
}

/// Counts and hashes what passes through to a file.
struct HashingWriter<'a> {
    to: &'a mut std::fs::File,
    hasher: sha2::Sha256,
}

impl<'a> HashingWriter<'a> {
    fn new(to: &'a mut std::fs::File) -> Self {
        use sha2::Digest;
        HashingWriter {
            to,
            hasher: sha2::Sha256::new(),
        }
    }

    fn finish(self) -> String {
        use sha2::Digest;
        dsl::analyze::hex(&self.hasher.finalize())
    }
}

impl std::io::Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.to.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.to.flush()
    }
}

pub(super) fn invoke(action: &str, call: &Call<'_>) -> Result<Value, ActionError> {
    let host = call.host;
    let targets = crate::targets::Targets::load_checked(&host.config().profiles_dir)?;
    let cx = Cx {
        config: host.config(),
        redactor: host.redactor(),
        targets: &targets,
        limits: Limits {
            deadline: call.deadline,
            cancel: call.cancel,
        },
    };
    match action {
        "exec" => exec_action(call, &cx),
        "batch" => batch(call, &cx),
        "health" => health(call, &cx),
        "info" => info(call, &cx),
        "upload" => upload(call, &cx),
        "download" => download(call, &cx),
        other => Err(ActionError::new(
            ErrorKind::NotAvailable,
            format!("ssh has no action `{other}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_output_is_typed() {
        let v = parse_info(
            "hostname=h1\nkernel=Linux 6.1.0\narch=x86_64\nos=Debian GNU/Linux 12 (bookworm)\nuptime=1234.56\nload=0.10 0.20 0.30\nmem_total_kib=2048\nmem_available_kib=1024\ndisk=/dev/sda1 100 40 60 /\ncpus=2\n",
        );
        assert_eq!(v["hostname"], "h1");
        assert_eq!(v["uptime_s"], 1234);
        assert_eq!(v["load"], json!([0.1, 0.2, 0.3]));
        assert_eq!(v["memory"]["available_kib"], 1024);
        assert_eq!(v["disk"]["mount"], "/");
        assert_eq!(v["cpus"], 2);
    }
}
