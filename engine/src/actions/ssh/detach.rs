//! `ssh exec` with `detach: true`: a command that outlives the call, the SSH session and infra itself.
//!
//! `start` runs a launcher through the usual wrapper (environment from standard input, `cwd`): it
//! makes the job's directory on the target, `$HOME/.infra/jobs/<id>` (mode 0700, refused if it
//! exists), and starts `sh -c <command>` in a session of its own (`setsid`, else `nohup`; SIGHUP
//! ignored, standard input `/dev/null`) whose leader writes its pid (the process group) to `pid`, the
//! command's output to `log` and, once it ends, its status to `exit`. The launcher answers the pid
//! and the directory and ends at once; the call records a job (`Store::job_remote_started`: the
//! target, directory and pid, no owner process) and answers its `job_id`. Every value the shell sees
//! is one quoted word (`shell_quote`); the job id is hex.
//!
//! `probe` reads such a job later, from any infra process, over a pooled session: `Status` (`exit`
//! holds the code; the group's leader still the job's runner (`/proc/<pid>/cmdline` names its
//! directory; without `/proc`, the group exists): running; a `cancelled` mark: cancelled; else the command
//! is gone: interrupted), `Logs` (the same, and the end of `log`, at most `LOG_TAIL` bytes) and
//! `Cancel` (marks `cancelled`, then kills the process group).

use serde_json::{Value, json};

use super::exec::{self, RemoteCommand};
use super::session::{Cx, Limits};
use super::{ExecArgs, capture, remote_command, run_on, with_channel_in};
use crate::actions::{ActionError, Call, Pools};
use crate::ctx::Config;
use crate::error::ErrorKind;
use crate::record::redact::Redactor;

/// The most of a detached command's log `Logs` reads.
pub const LOG_TAIL: usize = 3072;

/// Where a job's files are on the target, as the remote shell sees it (`$HOME` expanded there).
fn remote_dir(id: &str) -> String {
    format!("\"$HOME\"/.infra/jobs/{id}")
}

/// The launcher of `line` as job `id`: prints the pid of the detached command's group and its
/// directory, one a line.
fn launcher(id: &str, line: &str) -> String {
    use dsl::template::shell_quote as q;
    let runner = "trap '' HUP; echo $$ > \"$1/pid\"; /bin/sh -c \"$2\" > \"$1/log\" 2>&1 < /dev/null; \
                  echo $? > \"$1/exit.tmp\"; mv \"$1/exit.tmp\" \"$1/exit\"";
    format!(
        "umask 077; d={dir}; mkdir -p \"$HOME/.infra/jobs\" && mkdir \"$d\" || exit 124; \
         if command -v setsid > /dev/null 2>&1; then s=setsid; else s=nohup; fi; \
         $s /bin/sh -c {runner} infra-job \"$d\" {line} > /dev/null 2>&1 < /dev/null & \
         i=0; while [ ! -s \"$d/pid\" ] && [ $i -lt 200 ]; do sleep 0.05 2>/dev/null || sleep 1; i=$((i+1)); done; \
         cat \"$d/pid\" && printf '%s\\n' \"$d\"",
        dir = remote_dir(id),
        runner = q(runner),
        line = q(line),
    )
}

/// Starts `args`' command detached on its target, records it as a job and answers the job's id.
pub(super) fn start(call: &Call<'_>, cx: &Cx<'_>, args: &ExecArgs) -> Result<Value, ActionError> {
    let refuse = |what: &str| {
        Err(ActionError::new(
            ErrorKind::InvalidArgs,
            format!("`detach: true` with `{what}`: a detached command has no terminal and reads no standard input"),
        )
        .hint("drop it, or run the command without `detach`"))
    };
    if args.pty == Some(true) {
        return refuse("pty");
    }
    if args.stdin.is_some()
        || args.stdin_base64.is_some()
        || args.stdin_ref.is_some()
        || args.stdin_file.is_some()
    {
        return refuse("stdin");
    }
    let name = args.target.as_str();
    cx.endpoint(name)?;
    let store = call
        .host
        .store()
        .map_err(|e| ActionError::new(ErrorKind::NotAvailable, e.to_string()))?;
    let id = crate::ctx::new_id();
    let mut cmd: RemoteCommand = remote_command(call, &args.command_args())?;
    let line = std::mem::take(&mut cmd.line);
    cmd.line = launcher(&id, &line);
    cmd.ok_exit_codes = Vec::new();
    let r = run_on(call, cx, name, cmd, &capture(call, None, 4096, None))?;
    let out = r["stdout"].as_str().unwrap_or_default();
    let mut lines = out.lines().map(str::trim);
    let (Some(pid), Some(dir)) = (
        lines.next().and_then(|p| p.parse::<u32>().ok()),
        lines.next(),
    ) else {
        return Err(ActionError::new(
            ErrorKind::Failed,
            "the detached command did not say its pid: it may not have started",
        )
        .with_result(r));
    };
    let remote = json!({"target": name, "dir": dir, "pid": pid});
    store
        .job_remote_started(&id, "ssh", "exec", &remote)
        .map_err(|e| ActionError::new(ErrorKind::NotAvailable, e.to_string()))?;
    Ok(json!({
        "detached": true,
        "job_id": id,
        "target": name,
        "command": line,
        "pid": pid,
        "dir": dir,
    }))
}

/// What `probe` does with a detached job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Status,
    Logs,
    Cancel,
}

/// Reads or cancels the detached command `remote` (as `start` recorded it) over the target's pooled
/// session: `{status, exit_code?, log?}`, `status` one of `running`, `succeeded`, `failed`,
/// `cancelled` and `interrupted`. The log is redacted.
pub fn probe(
    config: &Config,
    redactor: &Redactor,
    pools: &Pools,
    remote: &Value,
    what: Probe,
) -> Result<Value, ActionError> {
    let bad = || {
        ActionError::new(
            ErrorKind::InvalidConfig,
            "the job's record of its remote command is damaged",
        )
    };
    let target = remote["target"].as_str().ok_or_else(bad)?;
    let dir = remote["dir"].as_str().ok_or_else(bad)?;
    let pid = remote["pid"].as_u64().ok_or_else(bad)?;
    let q = dsl::template::shell_quote(dir);
    // the group is the job's while its leader is the job's runner (its command line names the job's
    // directory), so a pid the system gave to another process since is never signalled; without
    // `/proc`, the group's existence is all there is to go by
    let mut script = format!(
        "exec 2>/dev/null; d={q}; ours() {{ if [ -d /proc/self ]; then tr '\\000' ' ' < /proc/{pid}/cmdline | grep -qF -- \"$d\"; \
         else kill -0 -- -{pid}; fi; }}; "
    );
    if what == Probe::Cancel {
        script.push_str(&format!(
            "[ -f \"$d/exit\" ] || ! ours || {{ : > \"$d/cancelled\"; kill -KILL -- -{pid} 2>/dev/null; }}; \
             i=0; while kill -0 -- -{pid} 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i+1)); done; "
        ));
    }
    script.push_str(
        "if [ -f \"$d/exit\" ]; then echo \"exit $(cat \"$d/exit\")\"; \
         elif ours; then echo running; \
         elif [ -f \"$d/cancelled\" ]; then echo cancelled; else echo gone; fi",
    );
    if what == Probe::Logs {
        script.push_str(&format!("; tail -c {LOG_TAIL} \"$d/log\" 2>/dev/null"));
    }
    let targets = crate::targets::Targets::load_checked(&config.profiles_dir)?;
    let cancel = crate::exec::CancelToken::new();
    let cx = Cx {
        config,
        redactor,
        targets: &targets,
        limits: Limits {
            deadline: Some(std::time::Instant::now() + std::time::Duration::from_secs(30)),
            cancel: &cancel,
        },
    };
    let (code, out) = with_channel_in(&pools.ssh, &cx, target, |conn, ch| {
        drop(ch);
        exec::run_collect(conn, cx.limits, &script)
            .map_err(|s| s.into_error("reading the detached command"))
    })?;
    if code != Some(0) {
        return Err(ActionError::new(
            ErrorKind::Failed,
            format!("reading the detached command's files on `{target}` failed (exit {code:?})"),
        ));
    }
    let (first, log) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    let mut v = match first.trim().split_once(' ') {
        Some(("exit", c)) => {
            let c: Option<i64> = c.trim().parse().ok();
            json!({"status": if c == Some(0) { "succeeded" } else { "failed" }, "exit_code": c})
        }
        _ => match first.trim() {
            "running" => json!({"status": "running"}),
            "cancelled" => json!({"status": "cancelled"}),
            _ => json!({"status": "interrupted"}),
        },
    };
    v["target"] = target.into();
    v["dir"] = dir.into();
    v["pid"] = pid.into();
    if what == Probe::Logs {
        v["log"] = redactor.redact(log).into_owned().into();
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_one_quoted_word_of_the_launcher() {
        let hostile = "echo 'a'; rm -rf \"$HOME\" `x` $(y) \\";
        let l = launcher("abc123", hostile);
        let quoted = dsl::template::shell_quote(hostile);
        assert!(l.contains(&format!("\"$d\" {quoted} >")), "{l}");
        assert!(
            l.starts_with("umask 077; d=\"$HOME\"/.infra/jobs/abc123;"),
            "{l}"
        );
    }
}
