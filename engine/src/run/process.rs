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

/// A captured output stream, once it has ended.
#[derive(Debug)]
pub struct Drained {
    name: &'static str,
    kept: Vec<u8>,
    truncated: bool,
    /// `None` when the stream was empty (no file is made for nothing).
    artifact: Option<std::io::Result<ArtifactRef>>,
}

/// One output stream being captured: the first `cap` bytes in memory, every byte in an artifact made on
/// the first byte. Memory stays bounded whatever the output size.
#[derive(Debug)]
pub struct OutputSink {
    name: &'static str,
    capture: Capture,
    kept: Vec<u8>,
    truncated: bool,
    to: Option<std::io::Result<ArtifactWriter>>,
}

impl OutputSink {
    pub fn new(name: &'static str, capture: &Capture) -> Self {
        OutputSink {
            name,
            capture: capture.clone(),
            kept: Vec::new(),
            truncated: false,
            to: None,
        }
    }

    /// Takes the next bytes of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        let cap = self.capture.cap;
        if self.kept.len() < cap {
            let take = (cap - self.kept.len()).min(chunk.len());
            self.kept.extend_from_slice(&chunk[..take]);
            self.truncated |= take < chunk.len();
        } else {
            self.truncated = true;
        }
        if self.to.is_none() {
            let c = &self.capture;
            self.to = Some(ArtifactWriter::create(
                &c.dir,
                &c.uri_base,
                self.name,
                c.redactor.clone(),
            ));
        }
        // after a write error, keep taking bytes so the producer never blocks
        if let Some(Ok(w)) = &mut self.to
            && let Err(e) = w.write_all(chunk)
        {
            self.to = Some(Err(e));
        }
    }

    /// Ends the stream: closes its artifact.
    pub fn finish(self) -> Drained {
        Drained {
            name: self.name,
            kept: self.kept,
            truncated: self.truncated,
            artifact: self.to.map(|w| w.and_then(ArtifactWriter::finish)),
        }
    }
}

/// Reads a pipe to its end into a sink.
fn drain(mut from: impl Read, name: &'static str, capture: &Capture) -> Drained {
    let mut sink = OutputSink::new(name, capture);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => sink.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    sink.finish()
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
    // the audit key seals records; a process that could read it could forge them
    cmd.env_remove(crate::ctx::AUDIT_KEY_VAR);
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
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stdin = child.stdin.take();
    let (tx, rx) = mpsc::channel::<Drained>();
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
                let _ = tx.send(drain(o, "stdout", cap));
            });
        }
        if let Some(e) = stderr {
            let tx = tx.clone();
            s.spawn(move || {
                let _ = tx.send(drain(e, "stderr", cap));
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
        let mut streams: Vec<Drained> = Vec::new();
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
        let exit = Exit {
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()).map(Value::from),
            success: status.is_some_and(|s| s.success()),
        };
        outcome(
            json!({"program": spec.program}),
            started,
            &exit,
            ended,
            streams,
            cap,
        )
    })
}

/// How a process ended, if it did.
#[derive(Debug, Clone, Default)]
pub struct Exit {
    pub code: Option<i32>,
    /// The signal that killed it: a number locally, a name (`KILL`) remotely.
    pub signal: Option<Value>,
    pub success: bool,
}

/// The result of a process run: `head` (what ran) with its exit, timing and captured streams; an error
/// (with this result) when it timed out, was cancelled or did not succeed.
pub fn outcome(
    head: Value,
    started: Instant,
    exit: &Exit,
    ended: Option<&'static str>,
    streams: Vec<Drained>,
    cap: &Capture,
) -> Result<Value, ActionError> {
    let mut result = head;
    result["exit_code"] = exit.code.into();
    result["signal"] = exit.signal.clone().unwrap_or(Value::Null);
    result["duration_ms"] = (started.elapsed().as_millis() as u64).into();
    let mut artifacts = Vec::new();
    let mut streams = streams;
    // stdout, then stderr, whichever ended first
    streams.sort_by_key(|d| d.name != "stdout");
    for d in streams {
        let name = d.name;
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
    let ok = exit.success && ended.is_none();
    result["ok"] = ok.into();
    match ended {
        Some("timeout") => Err(ActionError::new(
            "timeout",
            "the command ran past its timeout; its process group was killed",
        )
        .hint("raise `timeout_ms`, or make the command finish sooner")
        .with_result(result)),
        Some(_) => Err(ActionError::new(
            "cancelled",
            "the command was cancelled; its process group was killed",
        )
        .with_result(result)),
        None if ok => Ok(result),
        None => {
            let msg = match &exit.signal {
                Some(sig) => format!("the command was killed by signal {sig}"),
                None => format!(
                    "the command exited with status {}",
                    exit.code.map_or("unknown".to_owned(), |c| c.to_string())
                ),
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
