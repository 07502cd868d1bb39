//! Running a local process: its own process group (killed whole on timeout or cancel), stdin fed from a
//! thread, stdout and stderr drained to artifacts past any capture cap (the child never blocks on a full
//! pipe) with bounded memory whatever the output size.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::cancel::CancelToken;
use crate::actions::ActionError;
use crate::record::Redactor;
use crate::record::artifacts::{ArtifactRef, ArtifactWriter};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
}

/// Where and how much to keep.
#[derive(Debug, Clone)]
pub struct Capture {
    pub dir: PathBuf,
    pub uri_base: String,
    /// Bytes of each stream kept in memory (and in the result); the rest is only in the artifact.
    pub cap: usize,
    pub redactor: Arc<Redactor>,
}

/// SHA-256 of no bytes.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// How long a finished process's pipes may stay open (held by a background child) before its group is
/// killed.
const LINGER: Duration = Duration::from_secs(2);

struct Drained {
    kept: Vec<u8>,
    truncated: bool,
    /// `None` when the stream was empty (no file is made for nothing).
    artifact: Option<std::io::Result<ArtifactRef>>,
}

/// Reads a pipe to its end: the first `cap` bytes in memory, everything into an artifact made on the
/// first byte.
fn drain(
    mut from: impl Read,
    make: impl FnOnce() -> std::io::Result<ArtifactWriter>,
    cap: usize,
) -> Drained {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut make = Some(make);
    let mut to: Option<std::io::Result<ArtifactWriter>> = None;
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let chunk = &buf[..n];
                if kept.len() < cap {
                    let take = (cap - kept.len()).min(n);
                    kept.extend_from_slice(&chunk[..take]);
                    truncated |= take < n;
                } else {
                    truncated = true;
                }
                if let Some(m) = make.take() {
                    to = Some(m());
                }
                // after a write error, keep draining so the child never blocks
                if let Some(Ok(w)) = &mut to
                    && let Err(e) = w.write_all(chunk)
                {
                    to = Some(Err(e));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Drained {
        kept,
        truncated,
        artifact: to.map(|w| w.and_then(ArtifactWriter::finish)),
    }
}

fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// Runs a process to completion, timeout or cancellation. Output beyond `cap` is only in the artifacts.
pub fn run(
    spec: &ProcessSpec,
    deadline: Option<Instant>,
    cancel: &CancelToken,
    cap: &Capture,
) -> Result<Value, ActionError> {
    let started = Instant::now();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .process_group(0)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| {
        ActionError::new(
            "spawn_failed",
            format!("cannot start `{}`: {e}", spec.program),
        )
        .hint("check the program name and PATH, and `cwd`")
    })?;
    let pgid = child.id() as i32;
    let out_w = || ArtifactWriter::create(&cap.dir, &cap.uri_base, "stdout", cap.redactor.clone());
    let err_w = || ArtifactWriter::create(&cap.dir, &cap.uri_base, "stderr", cap.redactor.clone());
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stdin = child.stdin.take();
    let (tx, rx) = mpsc::channel::<(&'static str, Drained)>();
    let limit = cap.cap;
    std::thread::scope(|s| {
        if let (Some(mut w), Some(data)) = (stdin, spec.stdin.as_ref()) {
            s.spawn(move || {
                let _ = w.write_all(data);
                // dropping `w` closes the child's stdin
            });
        }
        if let Some(o) = stdout {
            let tx = tx.clone();
            s.spawn(move || {
                let _ = tx.send(("stdout", drain(o, out_w, limit)));
            });
        }
        if let Some(e) = stderr {
            let tx = tx.clone();
            s.spawn(move || {
                let _ = tx.send(("stderr", drain(e, err_w, limit)));
            });
        }
        drop(tx);

        // a waiter thread blocks in wait(); this thread wakes on its message, a cancel or the deadline
        let (done_tx, done_rx) = mpsc::channel();
        s.spawn(move || {
            // wait for the exit without reaping, so the group id cannot be reused yet; then end every
            // process left in the group (background children of the command): a call leaves nothing behind
            let _ = waitid(
                Id::Pid(Pid::from_raw(pgid)),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            );
            kill_group(pgid);
            let _ = done_tx.send(child.wait());
        });
        let mut ended: Option<&'static str> = None;
        let status = loop {
            let tick = deadline.map_or(Duration::from_millis(20), |d| {
                d.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(20))
            });
            match done_rx.recv_timeout(tick) {
                Ok(st) => break st.ok(),
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if cancel.is_cancelled() {
                ended = Some("cancelled");
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                ended = Some("timeout");
            }
            if ended.is_some() {
                kill_group(pgid);
                break done_rx.recv().ok().and_then(Result::ok);
            }
        };
        // the pipes close when every process holding them ends: give background children a moment,
        // then end the whole group so nothing outlives the call
        let mut streams: Vec<(&'static str, Drained)> = Vec::new();
        let linger_until = Instant::now() + LINGER;
        while streams.len() < 2 {
            let wait = linger_until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(d) => streams.push(d),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    kill_group(pgid);
                    if let Ok(d) = rx.recv() {
                        streams.push(d);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        // no unconditional kill here: once the child is reaped and its pipes are closed, its group id may
        // belong to another process
        finish(spec, started, status, ended, streams, cap)
    })
}

fn finish(
    spec: &ProcessSpec,
    started: Instant,
    status: Option<std::process::ExitStatus>,
    ended: Option<&'static str>,
    streams: Vec<(&'static str, Drained)>,
    cap: &Capture,
) -> Result<Value, ActionError> {
    let mut result = json!({
        "program": spec.program,
        "exit_code": status.and_then(|s| s.code()),
        "signal": status.and_then(|s| s.signal()),
        "duration_ms": started.elapsed().as_millis() as u64,
    });
    let mut artifacts = Vec::new();
    let mut streams = streams;
    // stdout, then stderr, whichever pipe closed first
    streams.sort_by_key(|(name, _)| *name != "stdout");
    for (name, d) in streams {
        let text = String::from_utf8_lossy(&d.kept).into_owned();
        result[name] = cap.redactor.redact(&text).into_owned().into();
        result[format!("{name}_truncated")] = d.truncated.into();
        match d.artifact {
            Some(Ok(a)) => {
                result[format!("{name}_bytes")] = a.bytes.into();
                result[format!("{name}_sha256")] = a.sha256.clone().into();
                result[format!("{name}_uri")] = a.uri.clone().into();
                artifacts.push(a.to_json());
            }
            Some(Err(e)) => result[format!("{name}_error")] = e.to_string().into(),
            None => {
                result[format!("{name}_bytes")] = 0.into();
                result[format!("{name}_sha256")] = EMPTY_SHA256.into();
            }
        }
    }
    result["artifacts"] = Value::Array(artifacts);
    let ok = status.is_some_and(|s| s.success()) && ended.is_none();
    result["ok"] = ok.into();
    match ended {
        Some("timeout") => Err(ActionError::new(
            "timeout",
            "the command ran past its timeout; its process group was killed",
        )
        .with_result(result)),
        Some(_) => Err(ActionError::new(
            "cancelled",
            "the command was cancelled; its process group was killed",
        )
        .with_result(result)),
        None if ok => Ok(result),
        None => {
            let code = result["exit_code"].clone();
            let msg = match status.and_then(|s| s.signal()) {
                Some(sig) => format!("the command was killed by signal {sig}"),
                None => format!("the command exited with status {code}"),
            };
            Err(ActionError::new("nonzero_exit", msg).with_result(result))
        }
    }
}

/// `sh -c <line>`.
pub fn shell(line: &str) -> ProcessSpec {
    ProcessSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), line.into()],
        ..ProcessSpec::default()
    }
}
