//! `local`: processes and files on the infra host. Refused unless `INFRA_UNSAFE_LOCAL=1`.
//!
//! The opt-in is enforced per attempt at run time (`local` steps still compile and plan).
//! `exec_modes` makes `command` a shell field unless `args`/`argv` is given; `exec` builds a
//! `ProcessSpec` (`stdin`, `stdin_base64`, `stdin_file`, or `stdin_ref`, a contained artifact read)
//! and calls `exec::process::run`; children inherit infra's whole environment plus the step's
//! `env`. `write` replaces a file through a sibling and a rename. `protected` refuses infra's own
//! records by path (audit log, store, `runs/`), and `protected_file` by device and inode (the audit
//! log, the store and its `-wal`/`-shm`/`-journal`, and, for a file with more than one link, any
//! file under `runs/`, which costs a walk), so a hard link is refused; an append checks the
//! descriptor it opened. `local.exec` is a shell and cannot be confined.

use crate::error::ErrorKind;
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
    /// Exit codes that count as success (default `[0]`): e.g. `[0, 1]` for `diff` or `grep`. The
    /// result always carries `exit_code`.
    #[schemars(length(min = 1, max = 256))]
    pub ok_exit_codes: Option<Vec<i32>>,
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
            classify: None,
            secret_args: None,
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
        open_world: false,
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

/// Bytes kept in memory (and in the result) per output stream; the rest is in the artifact.
pub const CAPTURE_CAP: usize = 1024 * 1024;
/// The most bytes `local.read` returns.
const MAX_READ: u64 = 1024 * 1024;

fn decode_base64(s: &str) -> Result<Vec<u8>, super::ActionError> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => {
                return Err(super::ActionError::new(
                    ErrorKind::InvalidArgs,
                    "`stdin_base64`/`content_base64` is not base64",
                ));
            }
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// Decodes base64 text (standard or URL-safe, padding optional).
pub fn base64_decode(s: &str) -> Result<Vec<u8>, super::ActionError> {
    decode_base64(s)
}

fn exec(call: &super::Call<'_>) -> Result<Value, super::ActionError> {
    use crate::exec::process::{Capture, ProcessSpec, run, shell};
    let a: ExecArgs = call.parse()?;
    let mut spec = if let Some(argv) = a.argv {
        let Some((program, rest)) = argv.split_first() else {
            return Err(
                super::ActionError::new(ErrorKind::InvalidArgs, "`argv` is empty")
                    .hint("give the program and its arguments"),
            );
        };
        ProcessSpec {
            program: program.clone(),
            args: rest.to_vec(),
            ..ProcessSpec::default()
        }
    } else if let Some(command) = a.command {
        match a.args {
            Some(args) => ProcessSpec {
                program: command,
                args,
                ..ProcessSpec::default()
            },
            None => shell(&command),
        }
    } else {
        return Err(super::ActionError::new(
            ErrorKind::InvalidArgs,
            "give `command` (a shell line, or a program with `args`) or `argv`",
        ));
    };
    spec.cwd = a.cwd.map(std::path::PathBuf::from);
    spec.ok_exit_codes = a.ok_exit_codes.unwrap_or_default();
    if let Some(env) = a.env {
        spec.env = env.into_iter().collect();
    }
    let stdin_eof = a.stdin_eof.unwrap_or(true);
    spec.stdin = if let Some(s) = a.stdin {
        Some(s.into_bytes())
    } else if let Some(b) = &a.stdin_base64 {
        Some(decode_base64(b)?)
    } else if let Some(path) = &a.stdin_file {
        Some(std::fs::read(path).map_err(|e| {
            super::ActionError::new(
                ErrorKind::NotFound,
                format!("cannot read `stdin_file` `{path}`: {e}"),
            )
        })?)
    } else if let Some(uri) = &a.stdin_ref {
        use std::io::Read;
        let mut bytes = Vec::new();
        crate::record::artifacts::open(&call.host.config().artifacts_root, uri)
            .map_err(|e| super::ActionError::new(ErrorKind::NotFound, e.to_string()))?
            .read_to_end(&mut bytes)
            .map_err(|e| {
                super::ActionError::new(ErrorKind::NotFound, format!("cannot read `{uri}`: {e}"))
            })?;
        Some(bytes)
    } else {
        None
    };
    if !stdin_eof && spec.stdin.is_none() {
        spec.stdin = Some(Vec::new());
    }
    let cap = Capture {
        dir: call.dir.clone(),
        uri_base: call.uri_base.clone(),
        cap: a
            .max_bytes
            .map_or(CAPTURE_CAP, |m| m as usize)
            .min(16 * CAPTURE_CAP),
        redactor: call.host.redactor().clone(),
    };
    run(&spec, call.deadline, call.cancel, &cap)
}

fn io_err(what: &str, path: &str, e: &std::io::Error) -> super::ActionError {
    let kind = if e.kind() == std::io::ErrorKind::NotFound {
        ErrorKind::NotFound
    } else {
        ErrorKind::Failed
    };
    super::ActionError::new(kind, format!("cannot {what} `{path}`: {e}"))
}

fn read(call: &super::Call<'_>) -> Result<Value, super::ActionError> {
    use std::io::{Read, Seek, SeekFrom};
    let ReadArgs {
        path,
        offset,
        max_bytes,
    } = call.parse()?;
    let path = path.as_str();
    let mut f = std::fs::File::open(path).map_err(|e| io_err("open", path, &e))?;
    let total = f.metadata().map_err(|e| io_err("stat", path, &e))?.len();
    let offset = offset.unwrap_or(0).min(total);
    let max = max_bytes.unwrap_or(64 * 1024).clamp(1, MAX_READ);
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| io_err("seek", path, &e))?;
    let mut buf = Vec::new();
    f.take(max)
        .read_to_end(&mut buf)
        .map_err(|e| io_err("read", path, &e))?;
    let end = offset + buf.len() as u64;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(json!({
        "path": path,
        "offset": offset,
        "bytes": buf.len(),
        "total_bytes": total,
        "truncated": end < total || offset > 0,
        "next_offset": (end < total).then_some(end),
        "content": call.host.redactor().redact(&text),
        "ok": true,
    }))
}

/// The files that decide what infra may do: the policy (its rules and approvers) and the targets.
fn control_files(c: &crate::ctx::Config) -> Vec<std::path::PathBuf> {
    [
        "policy.yaml",
        "policy.yml",
        "policy.json",
        "targets.json",
        "targets.yaml",
        "targets.yml",
    ]
    .iter()
    .map(|n| c.profiles_dir.join(n))
    .collect()
}

/// Whether a path is one of infra's own records (the audit log, the store, run evidence) or the files
/// that decide what it may do (policy, targets), which no action may rewrite.
fn protected(call: &super::Call<'_>, path: &std::path::Path) -> bool {
    let canonical = |p: &std::path::Path| -> Option<std::path::PathBuf> {
        match p.canonicalize() {
            Ok(c) => Some(c),
            // a file not yet there: its directory's canonical path and its name
            Err(_) => Some(p.parent()?.canonicalize().ok()?.join(p.file_name()?)),
        }
    };
    let Some(target) = canonical(path) else {
        return false;
    };
    let c = call.host.config();
    let mut guarded = vec![c.audit_path(), c.store_path(), c.runs_dir()];
    guarded.extend(control_files(c));
    guarded.iter().filter_map(|g| canonical(g)).any(|g| {
        target == g
            || target.starts_with(&g)
            || target
                .to_string_lossy()
                .starts_with(&format!("{}-", g.to_string_lossy()))
    })
}

/// Whether a file (by its device and inode, so through any hard or symbolic link) is one of infra's
/// own records: the audit log, the policy and targets, the store and its `-wal`, `-shm` and
/// `-journal` files, or, when it has more than one link, a file under `runs/` (a run's journal or an
/// artifact).
fn protected_file(call: &super::Call<'_>, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = (meta.dev(), meta.ino());
    let same = |m: &std::fs::Metadata| (m.dev(), m.ino()) == id;
    let c = call.host.config();
    let store = c.store_path().into_os_string();
    let mut files = vec![c.audit_path()];
    files.extend(control_files(c));
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = store.clone();
        p.push(suffix);
        files.push(p.into());
    }
    if files
        .iter()
        .any(|f| std::fs::metadata(f).is_ok_and(|m| same(&m)))
    {
        return true;
    }
    if meta.nlink() < 2 {
        // a file with one name is under `runs/` only by that name, which `protected` checks
        return false;
    }
    // explicit stack, no link followed: an entry's own metadata
    let mut stack = vec![c.runs_dir()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && m.nlink() > 1 && same(&m) {
                return true;
            }
        }
    }
    false
}

fn refuse_record(path: &str) -> super::ActionError {
    super::ActionError::new(
        ErrorKind::Refused,
        format!(
            "`{path}` is one of infra's own records (audit log, store or run evidence), or a link to one; no action may write it"
        ),
    )
}

fn write(call: &super::Call<'_>) -> Result<Value, super::ActionError> {
    use std::io::Write;
    let WriteArgs {
        path,
        content,
        content_base64,
        append,
        create_dirs,
    } = call.parse()?;
    let path = path.as_str();
    if protected(call, std::path::Path::new(path)) {
        return Err(refuse_record(path));
    }
    let bytes = match (content, content_base64) {
        (Some(c), None) => c.into_bytes(),
        (None, Some(b)) => decode_base64(&b)?,
        _ => {
            return Err(super::ActionError::new(
                ErrorKind::InvalidArgs,
                "give exactly one of `content` and `content_base64`",
            ));
        }
    };
    let p = std::path::Path::new(path);
    if create_dirs.unwrap_or(false)
        && let Some(parent) = p.parent()
    {
        std::fs::create_dir_all(parent).map_err(|e| io_err("create the directory of", path, &e))?;
    }
    let append = append.unwrap_or(false);
    if append {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| io_err("open", path, &e))?;
        // the file opened, whatever name led to it: a hard link to the audit log is the audit log
        let meta = f.metadata().map_err(|e| io_err("stat", path, &e))?;
        if protected_file(call, &meta) {
            return Err(refuse_record(path));
        }
        f.write_all(&bytes).map_err(|e| io_err("write", path, &e))?;
    } else {
        // renaming over a link replaces the link, not the file it shares; refused all the same
        if let Ok(meta) = std::fs::metadata(p)
            && protected_file(call, &meta)
        {
            return Err(refuse_record(path));
        }
        // write a sibling and rename it over, so a failure leaves the old file whole
        let tmp = super::temp_sibling(p);
        std::fs::write(&tmp, &bytes).map_err(|e| io_err("write", path, &e))?;
        std::fs::rename(&tmp, p).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err("replace", path, &e)
        })?;
    }
    Ok(json!({"path": path, "bytes": bytes.len(), "appended": append, "ok": true}))
}

fn file_type(m: &std::fs::Metadata) -> &'static str {
    if m.is_dir() {
        "dir"
    } else if m.is_symlink() {
        "symlink"
    } else if m.is_file() {
        "file"
    } else {
        "other"
    }
}

fn list(call: &super::Call<'_>) -> Result<Value, super::ActionError> {
    let PathArgs { path } = call.parse()?;
    let path = path.as_str();
    let mut entries: Vec<Value> = Vec::new();
    let mut total = 0usize;
    for e in std::fs::read_dir(path)
        .map_err(|e| io_err("list", path, &e))?
        .flatten()
    {
        total += 1;
        if entries.len() >= 10_000 {
            continue;
        }
        let meta = e.path().symlink_metadata().ok();
        entries.push(json!({
            "name": e.file_name().to_string_lossy(),
            "type": meta.as_ref().map_or("other", file_type),
            "bytes": meta.as_ref().map(std::fs::Metadata::len),
        }));
    }
    entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(
        json!({"path": path, "entries": entries, "count": total, "truncated": total > 10_000, "ok": true}),
    )
}

fn stat(call: &super::Call<'_>) -> Result<Value, super::ActionError> {
    use std::os::unix::fs::MetadataExt;
    let PathArgs { path } = call.parse()?;
    let path = path.as_str();
    let m = std::fs::symlink_metadata(path).map_err(|e| io_err("stat", path, &e))?;
    let time = |t: std::io::Result<std::time::SystemTime>| {
        t.ok().map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
    };
    Ok(json!({
        "path": path,
        "type": file_type(&m),
        "bytes": m.len(),
        "mode": format!("{:o}", m.mode() & 0o7777),
        "modified": time(m.modified()),
        "ok": true,
    }))
}

pub(super) fn invoke(action: &str, call: &super::Call<'_>) -> Result<Value, super::ActionError> {
    match action {
        "exec" => exec(call),
        "read" => read(call),
        "write" => write(call),
        "list" => list(call),
        "stat" => stat(call),
        other => Err(super::ActionError::new(
            ErrorKind::NotAvailable,
            format!("local has no action `{other}`"),
        )),
    }
}
