//! `ssh`: commands and file transfers on the targets of `targets.json|yaml`, over one pooled,
//! host-key-checked session per target.
//!
//! `exec` and `batch` write, `upload` writes, `health`, `info` and `download` read. The argument
//! types and the action specs are in `args.rs`. `invoke` loads the targets for each call, builds a
//! `session::Cx` and parses the arguments into the action's type, which is all the action reads.
//! `with_channel` takes a permit, the pooled session and a channel; a session that fails to open a
//! channel, or does not answer within the target's connect timeout (a peer gone silent), is
//! discarded and replaced once, before any command is sent. `remote_command` makes the command
//! line, environment and standard input of `exec` and `batch`; `batch` (`batch.rs`) runs a bounded
//! pool of threads over the targets, with per-target artifacts under the step's directory.
//! `exec` with `detach: true` starts the command to outlive the call and answers a job (`detach.rs`).
//! `health` uses a fresh, unpooled connection; `info` runs `INFO_SCRIPT` in one round trip, typed
//! by `parse_info`. Arguments naming host paths (`stdin_file`, `local_path`) are refused without
//! `INFRA_UNSAFE_LOCAL=1` before anything connects (`refuse_local`). A download into an artifact
//! is redacted like every artifact, so its `sha256` is that of what was stored.

mod args;
pub(crate) mod auth;
mod batch;
pub mod detach;
pub mod exec;
pub mod session;
pub mod sftp;
pub(crate) mod stream;

pub use args::{BatchArgs, DownloadArgs, ExecArgs, TargetArgs, UploadArgs};

use crate::error::ErrorKind;
use std::io::Read;
use std::time::Instant;

use serde_json::{Value, json};

use super::{ActionError, Call, ToolSpec};
use crate::exec::process::Capture;
use args::{CommandArgs, Source};
use exec::RemoteCommand;
use session::{Conn, Cx, Held, Limits, Stop};

pub(super) fn tool() -> ToolSpec {
    args::tool()
}

/// How long a pooled session may take to open a channel before it is taken for dead (a target's
/// `connect_timeout_ms` replaces it).
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Bytes of each stream kept in the result by default.
const EXEC_CAP: usize = 1024 * 1024;
const BATCH_CAP: usize = 64 * 1024;

/// Refuses an argument naming a path on the infra host (`key`, given as `path`) without the opt-in.
fn refuse_local(call: &Call<'_>, key: &str, path: Option<&str>) -> Result<(), ActionError> {
    if path.is_some() && !call.host.config().unsafe_local {
        return Err(ActionError::new(
            ErrorKind::Refused,
            format!("`{key}` names a path on the infra host, which needs INFRA_UNSAFE_LOCAL=1"),
        )
        .hint("use an artifact instead, or start infra with INFRA_UNSAFE_LOCAL=1"));
    }
    Ok(())
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
fn remote_command(call: &Call<'_>, a: &CommandArgs<'_>) -> Result<RemoteCommand, ActionError> {
    let line = if let Some(argv) = a.argv {
        if argv.is_empty() {
            return Err(ActionError::new(ErrorKind::InvalidArgs, "`argv` is empty")
                .hint("give the program and its arguments"));
        }
        exec::join_argv(argv)
    } else if let Some(command) = a.command {
        match a.args {
            Some(args) => {
                let mut argv = vec![command.to_owned()];
                argv.extend_from_slice(args);
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
    for (k, v) in a.env.into_iter().flatten() {
        if !exec::valid_env_name(k) {
            return Err(ActionError::new(
                ErrorKind::InvalidArgs,
                format!("`env` key `{k}` is not a variable name"),
            )
            .hint("use letters, digits and `_`, not starting with a digit"));
        }
        if v.contains('\0') {
            return Err(ActionError::new(
                ErrorKind::InvalidArgs,
                format!("`env` value of `{k}` holds a NUL byte, which no environment can hold"),
            ));
        }
        env.push((k.clone(), v.clone()));
    }
    if !env.is_empty() && a.pty {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "`env` with `pty: true`: the values travel on standard input, which a terminal would echo back",
        )
        .hint("drop `pty`, or set the variables in the command itself"));
    }
    let stdin: Option<Box<dyn Read + Send>> = match a.stdin {
        Some(Source::Text(s)) => Some(Box::new(std::io::Cursor::new(s.as_bytes().to_vec()))),
        Some(Source::Base64(b)) => Some(Box::new(std::io::Cursor::new(
            super::local::base64_decode(b)?,
        ))),
        Some(Source::Artifact(uri)) => Some(Box::new(open_artifact(call, uri)?)),
        Some(Source::HostFile(path)) => Some(Box::new(open_local(path)?)),
        None => None,
    };
    Ok(RemoteCommand {
        line,
        cwd: a.cwd.map(str::to_owned),
        env,
        pty: a.pty,
        stdin,
        stdin_eof: a.stdin_eof,
        ok_exit_codes: a.ok_exit_codes.to_vec(),
    })
}

/// Where a command's output goes: the step's directory (or `sub` in it), at most `max_bytes` (else
/// `default`) of each stream in the result.
fn capture(call: &Call<'_>, max_bytes: Option<u64>, default: usize, sub: Option<&str>) -> Capture {
    let (dir, uri_base) = match sub {
        Some(s) => (call.dir.join(s), format!("{}/{s}", call.uri_base)),
        None => (call.dir.clone(), call.uri_base.clone()),
    };
    Capture {
        dir,
        uri_base,
        cap: max_bytes.map_or(default, |m| m as usize).min(16 * EXEC_CAP),
        redactor: call.host.redactor().clone(),
    }
}

/// The target's pooled session and one channel permit; a session that died is replaced once.
fn with_channel<T>(
    call: &Call<'_>,
    cx: &Cx<'_>,
    name: &str,
    f: impl for<'c> FnOnce(&'c Conn, Held<'c, ssh2::Channel>) -> Result<T, ActionError>,
) -> Result<T, ActionError> {
    with_channel_in(&call.host.pools().ssh, cx, name, f)
}

/// [`with_channel`] of `pool`, outside a call (`detach::probe`).
fn with_channel_in<T>(
    pool: &session::Pool,
    cx: &Cx<'_>,
    name: &str,
    f: impl for<'c> FnOnce(&'c Conn, Held<'c, ssh2::Channel>) -> Result<T, ActionError>,
) -> Result<T, ActionError> {
    let ep = cx.endpoint(name)?;
    let _permit = pool
        .permit(&ep, cx.limits)
        .map_err(|s| s.into_error("waiting for a channel"))?;
    let conn = pool.conn(cx, &ep)?;
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
    match exec::open(&conn, open_limits) {
        Ok(ch) => return f(&conn, ch),
        Err(Stop::Ssh(_) | Stop::Io(_)) => {}
        Err(Stop::Timeout) if cx.limits.check().is_ok() => {}
        Err(s) => return Err(s.into_error("opening a channel")),
    }
    pool.discard(name, &conn);
    let conn = pool.conn(cx, &ep)?;
    let ch = exec::open(&conn, cx.limits).map_err(|s| s.into_error("opening a channel"))?;
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

fn exec_action(call: &Call<'_>, cx: &Cx<'_>, args: &ExecArgs) -> Result<Value, ActionError> {
    refuse_local(call, "stdin_file", args.stdin_file.as_deref())?;
    if args.detach == Some(true) {
        return detach::start(call, cx, args);
    }
    let name = args.target.as_str();
    cx.endpoint(name)?;
    let cmd = remote_command(call, &args.command_args())?;
    run_on(
        call,
        cx,
        name,
        cmd,
        &capture(call, args.max_bytes, EXEC_CAP, None),
    )
}

fn health(call: &Call<'_>, cx: &Cx<'_>, args: &TargetArgs) -> Result<Value, ActionError> {
    let name = args.target.as_str();
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

fn info(call: &Call<'_>, cx: &Cx<'_>, args: &TargetArgs) -> Result<Value, ActionError> {
    let name = args.target.as_str();
    cx.endpoint(name)?;
    let cmd = RemoteCommand {
        line: INFO_SCRIPT.into(),
        cwd: None,
        env: Vec::new(),
        pty: false,
        stdin: None,
        stdin_eof: true,
        ok_exit_codes: Vec::new(),
    };
    let r = run_on(call, cx, name, cmd, &capture(call, None, 64 * 1024, None))?;
    let mut out = parse_info(r["stdout"].as_str().unwrap_or_default());
    out["target"] = name.into();
    out["duration_ms"] = r["duration_ms"].clone();
    out["ok"] = true.into();
    Ok(out)
}

fn upload(call: &Call<'_>, cx: &Cx<'_>, args: &UploadArgs) -> Result<Value, ActionError> {
    refuse_local(call, "local_path", args.local_path.as_deref())?;
    let name = args.target.as_str();
    cx.endpoint(name)?;
    let remote = args.remote_path.as_str();
    let mut given = [
        args.content.as_deref().map(Source::Text),
        args.content_base64.as_deref().map(Source::Base64),
        args.artifact.as_deref().map(Source::Artifact),
        args.local_path.as_deref().map(Source::HostFile),
    ]
    .into_iter()
    .flatten();
    let (Some(given), None) = (given.next(), given.next()) else {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "give exactly one of `content`, `content_base64`, `artifact` and `local_path`",
        ));
    };
    let mode = args.mode.unwrap_or(0o644) as i32;
    let source = || -> Result<Box<dyn Read>, ActionError> {
        Ok(match given {
            Source::Text(s) => Box::new(std::io::Cursor::new(s.as_bytes().to_vec())),
            Source::Base64(b) => Box::new(std::io::Cursor::new(super::local::base64_decode(b)?)),
            Source::Artifact(uri) => Box::new(open_artifact(call, uri)?),
            Source::HostFile(path) => Box::new(open_local(path)?),
        })
    };
    let mut out = with_conn(call, cx, name, |conn| {
        sftp::upload(conn, cx.limits, source()?, remote, mode)
    })?;
    out["target"] = name.into();
    Ok(out)
}

fn download(call: &Call<'_>, cx: &Cx<'_>, args: &DownloadArgs) -> Result<Value, ActionError> {
    refuse_local(call, "local_path", args.local_path.as_deref())?;
    let name = args.target.as_str();
    cx.endpoint(name)?;
    let remote = args.remote_path.as_str();
    let max = args.max_bytes.unwrap_or(1 << 30);
    let base = std::path::Path::new(remote)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.starts_with('.'))
        .unwrap_or("download")
        .to_owned();
    let mut out = if let Some(local) = args.local_path.as_deref() {
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
        "exec" => exec_action(call, &cx, &call.parse()?),
        "batch" => batch::batch(call, &cx, &call.parse()?),
        "health" => health(call, &cx, &call.parse()?),
        "info" => info(call, &cx, &call.parse()?),
        "upload" => upload(call, &cx, &call.parse()?),
        "download" => download(call, &cx, &call.parse()?),
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
