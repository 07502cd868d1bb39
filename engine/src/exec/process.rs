//! Running a local process: its own process group (killed whole on timeout or cancel, and any
//! process that left the group but holds the output killed too), stdin fed without blocking, stdout
//! and stderr drained to artifacts past any capture cap (the child never blocks on a full pipe)
//! with bounded memory whatever the output size.
//!
//! `OutputSink` is one output stream: masked as it streams (a `StreamRedactor` of its own), then
//! the first `cap` masked bytes kept and every one streamed to an artifact created on the first
//! byte, so what the result keeps is the artifact's start and a cap inside a secret keeps none of
//! it. `outcome` is the result of any process, local or remote (`ssh` uses it too): `exit_code`,
//! `signal`, `stdout`, `*_truncated`, `*_bytes`, `*_sha256`, `*_uri`, and the error for a timeout,
//! cancel or failure.
//!
//! `run(spec, deadline, cancel, capture)`: the child in its own process group (`process_group(0)`;
//! std spawns it with `posix_spawn`, a `vfork`-like clone, as long as no `pre_exec` is added and
//! the environment is only copied when it changes: `INFRA_AUDIT_KEY` removed when set, the step's
//! `env`), stdin written at once as far as the pipe takes it (`feed_stdin`; a detached thread only
//! for a rest), stdout and stderr read on the calling thread with `poll` (short ticks for cancel
//! and deadline; a stream past 1 MiB gets a 1 MiB pipe and 256 KiB reads into buffers of its own,
//! handed to its artifact, whose hashing thread gives them back, without a copy: `record::digest`),
//! and `ExitWatch`, which hears the exit without reaping (a pidfd polled on the same thread; a
//! `waitid` thread where pidfds are missing), kills what is left of the group (background
//! children), then reaps. At a deadline or cancel the group is `killpg`'d with SIGKILL; after exit
//! the pipes get up to `LINGER` (2 s, never past the deadline), and a deadline or cancel then only
//! ends the linger: the command is not a timeout, and its group, gone with its reaped leader, is
//! not signalled. Then `kill_holders` kills every process still holding the output pipes (found by
//! `pipe:[inode]` in `/proc/<pid>/fd`, Linux only) and reports those outside the group as
//! `escaped`; reading stops `GRACE` (0.5 s) later whatever is left (`output_incomplete`). With a
//! controlling terminal (`has_terminal`), the group is looked at every `STOP_CHECK` for a process
//! the terminal stopped (one that asked it for input, in a group that is not its foreground): the
//! group is killed and the step fails naming it (`stopped`), where it would wait for ever. A
//! process that left the group and let go of the output is not seen. Nothing of this runs for a
//! command whose output reached its end: the pipes are named (`pipe_name`, from `fstat`) and
//! `/proc` scanned only for streams still open at that point.

use crate::error::ErrorKind;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::cancel::CancelToken;
use crate::error::ActionError;
use crate::record::Redactor;
use crate::record::artifacts::{ArtifactRef, ArtifactWriter};
use crate::record::redact::StreamRedactor;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    /// Exit codes that count as success (none given: only 0).
    pub ok_exit_codes: Vec<i32>,
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

/// Bytes read from a pipe at once: a whole default pipe buffer.
const READ_BUF_LEN: usize = 64 * 1024;
/// Once a stream has passed `WIDEN_AFTER` bytes its pipe is widened to `WIDE_PIPE` (the most an
/// unprivileged process may ask for by default) and reads take up to `WIDE_READ_LEN` at once: a large
/// output then costs fewer wake-ups and system calls, while small ones keep the default pipe.
const WIDEN_AFTER: u64 = 1 << 20;
const WIDE_PIPE: i32 = 1 << 20;
const WIDE_READ_LEN: usize = 256 * 1024;

thread_local! {
    /// Each thread's read buffer for [`run`], kept between processes.
    static READ_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

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
    /// Bytes taken so far.
    taken: u64,
    /// Masks the stream before anything keeps it: the kept bytes are the artifact's first bytes, so a
    /// cap that falls inside a secret keeps none of it.
    redact: StreamRedactor,
}

impl OutputSink {
    pub fn new(name: &'static str, capture: &Capture) -> Self {
        OutputSink {
            name,
            capture: capture.clone(),
            kept: Vec::new(),
            truncated: false,
            to: None,
            taken: 0,
            redact: StreamRedactor::new(capture.redactor.clone()),
        }
    }

    /// Bytes taken so far.
    pub fn bytes(&self) -> u64 {
        self.taken
    }

    /// Takes the next bytes of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.taken += chunk.len() as u64;
        let safe = self.redact.push(chunk);
        self.pass(safe);
    }

    /// As [`OutputSink::push`], for bytes the caller gives up: they go on to the artifact without a
    /// copy while no secret is known.
    pub fn push_owned(&mut self, chunk: Vec<u8>) {
        self.taken += chunk.len() as u64;
        let safe = self.redact.push_owned(chunk);
        self.pass(safe);
    }

    /// Keeps and writes masked bytes.
    fn pass(&mut self, safe: Vec<u8>) {
        if self.keep(&safe) {
            self.write(|w| w.write_owned(safe));
        }
    }

    /// A buffer the artifact is done with, to read the next bytes into (see `StreamDigest::spare`).
    pub fn spare(&mut self) -> Option<Vec<u8>> {
        match &mut self.to {
            Some(Ok(w)) => w.spare(),
            _ => None,
        }
    }

    /// Keeps what fits under the cap of a masked chunk; false for an empty one.
    fn keep(&mut self, chunk: &[u8]) -> bool {
        if chunk.is_empty() {
            return false;
        }
        let cap = self.capture.cap;
        if self.kept.len() < cap {
            let take = (cap - self.kept.len()).min(chunk.len());
            self.kept.extend_from_slice(&chunk[..take]);
            self.truncated |= take < chunk.len();
        } else {
            self.truncated = true;
        }
        true
    }

    /// Writes to the artifact, made on the first byte.
    fn write(&mut self, with: impl FnOnce(&mut ArtifactWriter) -> std::io::Result<()>) {
        if self.to.is_none() {
            let c = &self.capture;
            self.to = Some(ArtifactWriter::create_masked(
                &c.dir,
                &c.uri_base,
                self.name,
            ));
        }
        // after a write error, keep taking bytes so the producer never blocks; the part written
        // goes (no artifact is left that its result does not describe)
        if let Some(Ok(w)) = &mut self.to
            && let Err(e) = with(w)
        {
            if let Some(Ok(w)) = self.to.take() {
                w.abandon();
            }
            self.to = Some(Err(e));
        }
    }

    /// Ends the stream: what the redactor held back, then closes its artifact.
    pub fn finish(mut self) -> Drained {
        let rest = self.redact.finish();
        self.pass(rest);
        Drained {
            name: self.name,
            kept: self.kept,
            truncated: self.truncated,
            artifact: self.to.map(|w| w.and_then(ArtifactWriter::finish)),
        }
    }
}

fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// How long reading may go on after a timeout or cancel killed the group, or after the processes that
/// still held the output were killed: the bound on what a call adds to its timeout.
const GRACE: Duration = Duration::from_millis(500);

/// `pipe:[<inode>]`, as `/proc/<pid>/fd/<n>` names the pipe behind `file` (from its `fstat`).
fn pipe_name(file: &std::fs::File) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = file.metadata().ok()?;
    m.file_type()
        .is_fifo()
        .then(|| format!("pipe:[{}]", m.ino()))
}

/// Writes `data` to a child's stdin and closes it. What the pipe takes at once is written here (the
/// pipe made non-blocking); only a rest that does not fit goes to a detached thread, which ends when
/// the data is written, the last reader of the pipe is gone, or the call has ended (the flag it
/// returns, set by the caller: a process that left the group holding stdin unread keeps no thread).
/// A call with no or little input so starts no thread.
fn feed_stdin(mut w: std::process::ChildStdin, data: &[u8]) -> Option<Arc<AtomicBool>> {
    let nonblocking = rustix::io::ioctl_fionbio(&w, true).is_ok();
    let mut done = 0;
    while nonblocking && done < data.len() {
        match w.write(&data[done..]) {
            Ok(0) => return None,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // full: the rest goes to the thread
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // gone (`EPIPE`): nobody reads it
            Err(_) => return None,
        }
    }
    if done == data.len() {
        return None;
    }
    let rest = data[done..].to_vec();
    let ended = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&ended);
    let _ = std::thread::Builder::new()
        .name("infra-stdin".into())
        .spawn(move || {
            let mut done = 0;
            while done < rest.len() && !stop.load(Ordering::Acquire) {
                match w.write(&rest[done..]) {
                    Ok(0) => return,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // until the reader takes some, is gone (the write fails), or the call ends
                        let mut fds = [PollFd::new(w.as_fd(), PollFlags::POLLOUT)];
                        let _ = poll(&mut fds, PollTimeout::from(100u8));
                    }
                    Err(_) => return,
                }
            }
        });
    Some(ended)
}

/// A process that held a step's output after its group was ended: it left the group (`setsid`, a
/// double fork), so the group kill missed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escaped {
    pub pid: i32,
    pub command: String,
}

/// The process group of `pid`, from `/proc/<pid>/stat` (the fifth field, after the command in
/// parentheses).
fn group_of(pid: i32) -> Option<i32> {
    stat_of(pid).map(|(_, group)| group)
}

/// A process's state letter and process group, from `/proc/<pid>/stat`.
fn stat_of(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.nth(1)?.parse().ok()?))
}

/// How often a running command's group is looked at for a process stopped by the terminal.
const STOP_CHECK: Duration = Duration::from_secs(1);

/// Whether this process has a controlling terminal: only then can a command's process (in a group of
/// its own, so never the terminal's foreground) be stopped by reading or writing it (`SIGTTIN`,
/// `SIGTTOU`). Asked once.
fn has_terminal() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| std::fs::File::open("/dev/tty").is_ok())
}

/// A process of group `pgid` that is stopped (state `T`), if there is one: with a terminal, one that
/// asked it for input (`sudo`, `ssh` asking for a password), which would wait for ever.
fn stopped_in_group(pgid: i32) -> Option<Escaped> {
    processes()
        .find(|&pid| stat_of(pid) == Some(('T', pgid)))
        .map(|pid| Escaped {
            pid,
            command: command_of(pid),
        })
}

/// The ids of the processes `/proc` lists.
fn processes() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
}

/// A process's command name (`/proc/<pid>/comm`; empty when it cannot be read).
fn command_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_default()
}

/// Kills every other process that holds one of `pipes` open (found through `/proc/<pid>/fd`, Linux
/// only), and says which of them had left the group `pgid`.
fn kill_holders(pipes: &[String], pgid: i32) -> Vec<Escaped> {
    if pipes.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for pid in processes() {
        if pid == me {
            continue;
        }
        let holds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|l| pipes.iter().any(|p| l.as_os_str() == p.as_str()))
            });
        if holds {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            if group_of(pid) == Some(pgid) {
                // a member of the group on its way out, not one that left it
                continue;
            }
            found.push(Escaped {
                pid,
                command: command_of(pid),
            });
        }
    }
    found
}

/// Runs a process to completion, timeout or cancellation. Output beyond `cap` is only in the artifacts.
///
/// The call returns within its deadline plus [`GRACE`] (twice, at worst) whatever the process's children
/// do: at the deadline the group is killed; a process that left the group but still holds the output is
/// found through the output's pipe and killed too, and named in the result (`escaped`). Without a
/// deadline, background children may hold the output for [`LINGER`] after the command exits.
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
    // the audit key seals records; a process that could read it could forge them. Removing a
    // variable makes the spawn copy the whole environment, so only when there is one to remove.
    if std::env::var_os(crate::ctx::AUDIT_KEY_VAR).is_some() {
        cmd.env_remove(crate::ctx::AUDIT_KEY_VAR);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| {
        ActionError::new(
            ErrorKind::SpawnFailed,
            format!("cannot start `{}`: {e}", spec.program),
        )
        .hint("check the program name and PATH, and `cwd`")
    })?;
    let pgid = child.id() as i32;
    let mut streams: Vec<(Option<std::fs::File>, OutputSink)> = Vec::new();
    if let Some(o) = child.stdout.take() {
        streams.push((
            Some(std::fs::File::from(std::os::fd::OwnedFd::from(o))),
            OutputSink::new("stdout", cap),
        ));
    }
    if let Some(e) = child.stderr.take() {
        streams.push((
            Some(std::fs::File::from(std::os::fd::OwnedFd::from(e))),
            OutputSink::new("stderr", cap),
        ));
    }
    let mut feeding = None;
    if let (Some(w), Some(data)) = (child.stdin.take(), spec.stdin.as_deref()) {
        feeding = feed_stdin(w, data);
    }
    let mut exit_watch = ExitWatch::new(child, pgid);
    let mut ended: Option<&'static str> = None;
    let mut status: Option<Option<std::process::ExitStatus>> = None;
    // once the command is done: when the processes still holding the output are killed, and when
    // reading stops whatever is left
    let mut kill_holders_at: Option<Instant> = None;
    let mut stop_at: Option<Instant> = None;
    let mut escaped = Vec::new();
    let mut incomplete = false;
    // with a terminal, a process of the group stopped by it is looked for now and then
    let mut stop_check = has_terminal().then(|| started + STOP_CHECK);
    let mut stopped: Option<Escaped> = None;
    // the thread's read buffer, made once, not zeroed again per process
    let mut buf = READ_BUF.take();
    buf.resize(READ_BUF_LEN, 0);
    loop {
        let open: Vec<usize> = (0..streams.len())
            .filter(|&i| streams[i].0.is_some())
            .collect();
        if open.is_empty() && status.is_some() {
            break;
        }
        if !open.is_empty() {
            let mut fds: Vec<PollFd<'_>> = open
                .iter()
                .filter_map(|&i| streams[i].0.as_ref())
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            let _ = poll(&mut fds, PollTimeout::from(20u8));
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            for (k, &i) in open.iter().enumerate() {
                if !ready[k] {
                    continue;
                }
                let (file, sink) = &mut streams[i];
                let wide = sink.bytes() >= WIDEN_AFTER;
                // a large stream reads into a buffer of its own, handed on without a copy and
                // given back once hashed; a small one into the thread's buffer
                let mut own = if wide {
                    let mut b = sink.spare().unwrap_or_default();
                    b.resize(WIDE_READ_LEN, 0);
                    Some(b)
                } else {
                    None
                };
                let into = own.as_deref_mut().unwrap_or(&mut buf);
                let n = match file.as_mut().map(|f| f.read(into)) {
                    Some(Ok(n)) => n,
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    _ => 0,
                };
                if n == 0 {
                    *file = None;
                } else if let Some(mut b) = own {
                    b.truncate(n);
                    sink.push_owned(b);
                } else {
                    sink.push(&buf[..n]);
                    if sink.bytes() >= WIDEN_AFTER
                        && let Some(f) = file.as_ref()
                    {
                        // best effort: a pipe that stays narrow is only slower
                        let _ = nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_SETPIPE_SZ(WIDE_PIPE));
                    }
                }
            }
        } else if status.is_none() {
            // the output is closed: wait for the exit itself (or the next tick)
            status = exit_watch.status(Duration::from_millis(20));
        }
        if status.is_none() {
            status = exit_watch.status(Duration::ZERO);
        }
        let now = Instant::now();
        // once the exit is heard the group is gone (killed, then its leader reaped: its id may name
        // another group by now), so a deadline or cancel after it only cuts the linger short
        if status.is_some() && ended.is_none() && stop_at.is_none() && cancel.is_cancelled() {
            kill_holders_at = Some(now);
        }
        if ended.is_none() && status.is_none() {
            if cancel.is_cancelled() {
                ended = Some("cancelled");
            } else if deadline.is_some_and(|d| now >= d) {
                ended = Some("timeout");
            } else if let Some(at) = stop_check.filter(|&at| now >= at) {
                stop_check = Some(at + STOP_CHECK);
                stopped = stopped_in_group(pgid);
                if stopped.is_some() {
                    ended = Some("stopped");
                }
            }
            if ended.is_some() {
                kill_group(pgid);
                // what the group kill missed is found by its hold on the output, a moment later
                kill_holders_at = Some(now + Duration::from_millis(50));
            }
        }
        if status.is_some() && kill_holders_at.is_none() {
            // the pipes close when every process holding them ends: background children of a finished
            // command get a moment (never past the deadline)
            let linger = deadline.map_or(now + LINGER, |d| (now + LINGER).min(d.max(now)));
            kill_holders_at = Some(linger);
        }
        if kill_holders_at.is_some_and(|t| now >= t) && stop_at.is_none() {
            // only a stream still open can have a holder (one at its end has no writer left)
            let pipes: Vec<String> = streams
                .iter()
                .filter_map(|s| s.0.as_ref().and_then(pipe_name))
                .collect();
            if !pipes.is_empty() {
                escaped = kill_holders(&pipes, pgid);
            }
            stop_at = Some(now + GRACE);
        }
        if stop_at.is_some_and(|t| now >= t) {
            if status.is_none() {
                // the group was killed: its leader's exit is on its way
                status = Some(exit_watch.status(GRACE).flatten());
            }
            incomplete = streams.iter().any(|s| s.0.is_some());
            break;
        }
    }
    READ_BUF.set(buf);
    if let Some(ended) = feeding {
        ended.store(true, Ordering::Release);
    }
    let status = status.flatten();
    let exit = Exit {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()).map(Value::from),
    };
    let drained = streams.into_iter().map(|(_, s)| s.finish()).collect();
    let mut head = json!({"program": spec.program});
    if !escaped.is_empty() {
        head["escaped"] = escaped
            .iter()
            .map(|e| json!({"pid": e.pid, "command": e.command}))
            .collect();
    }
    if incomplete {
        head["output_incomplete"] = true.into();
    }
    if let Some(p) = &stopped {
        head["stopped"] = json!({"pid": p.pid, "command": p.command});
    }
    let result = outcome(
        head,
        started,
        &exit,
        &spec.ok_exit_codes,
        ended,
        drained,
        cap,
    );
    match (escaped.is_empty(), result) {
        (false, Err(mut e)) => {
            e.message.push_str(&escaped_note(&escaped));
            Err(e)
        }
        (_, r) => r,
    }
}

/// Hears a child's exit. It waits for the exit without reaping (`waitid` with `WNOWAIT`), so the
/// group id cannot be reused yet, ends every process left in the group (background children of the
/// command: a call leaves nothing behind), then reaps. With a pidfd (Linux 5.3+) the exit is polled
/// on the calling thread; without one, a waiter thread blocks in `waitid` and sends the status.
enum ExitWatch {
    Pidfd {
        fd: std::os::fd::OwnedFd,
        child: std::process::Child,
        pgid: i32,
        /// Its exit was heard and it was reaped.
        reaped: bool,
    },
    Thread(mpsc::Receiver<std::io::Result<std::process::ExitStatus>>),
}

impl ExitWatch {
    fn new(child: std::process::Child, pgid: i32) -> ExitWatch {
        let pid = rustix::process::Pid::from_child(&child);
        match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => ExitWatch::Pidfd {
                fd,
                child,
                pgid,
                reaped: false,
            },
            Err(_) => ExitWatch::thread(child, pgid),
        }
    }

    fn thread(mut child: std::process::Child, pgid: i32) -> ExitWatch {
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = waitid(
                Id::Pid(Pid::from_raw(pgid)),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            );
            kill_group(pgid);
            let _ = done_tx.send(child.wait());
        });
        ExitWatch::Thread(done_rx)
    }

    /// The exit status once the child has exited (waiting up to `wait` for it): `Some(None)` when
    /// it is gone but its status could not be read.
    fn status(&mut self, wait: Duration) -> Option<Option<std::process::ExitStatus>> {
        match self {
            ExitWatch::Thread(rx) => match rx.recv_timeout(wait) {
                Ok(st) => Some(st.ok()),
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(None),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
            },
            ExitWatch::Pidfd {
                fd,
                child,
                pgid,
                reaped,
            } => {
                let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(ms));
                if fds[0].revents().is_none_or(|r| r.is_empty()) {
                    return None;
                }
                // exited: not reaped yet, so the group id is still ours while the group is ended
                kill_group(*pgid);
                *reaped = true;
                Some(child.wait().ok())
            }
        }
    }
}

/// A child whose exit was never heard (still running after its group was killed and the grace
/// passed: stuck in the kernel, or moved to another group) is killed again and reaped by a thread of
/// its own once it ends, so no call leaves a zombie behind. Its group id is still ours to signal: the
/// child is not reaped yet.
impl Drop for ExitWatch {
    fn drop(&mut self) {
        let ExitWatch::Pidfd {
            pgid,
            reaped: false,
            ..
        } = self
        else {
            // reaped, or the waiter thread reaps it whenever it ends
            return;
        };
        // not reaped, so both ids are still ours, whether it has exited or not
        kill_group(*pgid);
        let pid = Pid::from_raw(*pgid);
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = std::thread::Builder::new()
            .name("infra-reap".into())
            .spawn(move || {
                let _ = nix::sys::wait::waitpid(pid, None);
            });
    }
}

/// How a message names the processes that left the group.
fn escaped_note(escaped: &[Escaped]) -> String {
    let named: Vec<String> = escaped
        .iter()
        .map(|e| format!("{} ({})", e.pid, e.command))
        .collect();
    format!(
        "; {} process(es) that left the command's process group still held its output and were killed: {}",
        escaped.len(),
        named.join(", ")
    )
}

/// How a process ended, if it did.
#[derive(Debug, Clone, Default)]
pub struct Exit {
    pub code: Option<i32>,
    /// The signal that killed it: a number locally, a name (`KILL`) remotely.
    pub signal: Option<Value>,
}

impl Exit {
    /// Whether it exited (no signal) with an accepted code: one of `ok_codes`, or 0 when none given.
    pub fn accepted(&self, ok_codes: &[i32]) -> bool {
        self.signal.is_none()
            && self.code.is_some_and(|c| {
                if ok_codes.is_empty() {
                    c == 0
                } else {
                    ok_codes.contains(&c)
                }
            })
    }
}

/// The result of a process run: `head` (what ran) with its exit, timing and captured streams; an error
/// (with this result) when it timed out, was cancelled or did not succeed.
pub fn outcome(
    head: Value,
    started: Instant,
    exit: &Exit,
    ok_codes: &[i32],
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
    // an output that could not be recorded whole: the command ran, but its evidence is not whole
    let unrecorded: Vec<String> = ["stdout", "stderr"]
        .iter()
        .filter_map(|n| {
            let e = result.get(format!("{n}_error"))?.as_str()?;
            Some(format!("its {n} could not be recorded: {e}"))
        })
        .collect();
    let ok = exit.accepted(ok_codes) && ended.is_none();
    result["ok"] = (ok && unrecorded.is_empty()).into();
    if ok && !unrecorded.is_empty() {
        return Err(ActionError::new(
            ErrorKind::Failed,
            format!(
                "the command ran and exited {}, but {}",
                exit.code.map_or("unknown".to_owned(), |c| c.to_string()),
                unrecorded.join("; ")
            ),
        )
        .hint("free space (or lift the quota) where the run's directory is; its effects, if any, happened")
        .with_result(result));
    }
    match ended {
        Some("timeout") => Err(ActionError::new(
            ErrorKind::Timeout,
            "the command ran past its timeout; its process group was killed",
        )
        .hint("raise `timeout_ms`, or make the command finish sooner")
        .with_result(result)),
        Some("stopped") => Err(ActionError::new(
            ErrorKind::Failed,
            format!(
                "the command stopped waiting for the terminal (`{}`, pid {}): a step has no terminal to answer a prompt; its process group was killed",
                result["stopped"]["command"].as_str().unwrap_or("?"),
                result["stopped"]["pid"]
            ),
        )
        .hint("give it what it asks for on `stdin`, or run it without a prompt (`sudo -n`, `ssh -o BatchMode=yes`)")
        .with_result(result)),
        Some(_) => Err(ActionError::new(
            ErrorKind::Cancelled,
            "the command was cancelled; its process group was killed",
        )
        .with_result(result)),
        None if ok => Ok(result),
        None => {
            let msg = match &exit.signal {
                Some(sig) => format!("the command was killed by signal {sig}"),
                None => format!(
                    "the command exited with status {}{}",
                    exit.code.map_or("unknown".to_owned(), |c| c.to_string()),
                    if ok_codes.is_empty() {
                        String::new()
                    } else {
                        format!(", not one of `ok_exit_codes` {ok_codes:?}")
                    }
                ),
            };
            let e = ActionError::new(ErrorKind::NonzeroExit, msg).with_result(result);
            Err(if ok_codes.is_empty() {
                e.hint("a command whose non-zero status means something else (`grep`, `diff`) can list it in `ok_exit_codes`")
            } else {
                e
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::redact::MASK;

    /// A shell in its own group that leaves a background child behind and exits 3.
    fn leaver(pidfile: &std::path::Path) -> (std::process::Child, i32) {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sleep 1000 & echo $! > {}; exit 3",
                pidfile.display()
            ))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        let pgid = child.id() as i32;
        (child, pgid)
    }

    fn gone(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    fn capture(dir: &std::path::Path) -> Capture {
        Capture {
            dir: dir.join("out"),
            uri_base: "artifact://runs/t".into(),
            cap: 1 << 20,
            redactor: Arc::new(Redactor::new()),
        }
    }

    #[test]
    fn stdin_reaches_the_child_whole_whether_the_pipe_takes_it_at_once_or_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let cancel = CancelToken::new();
        // nothing, a little (written at once), and 1 MiB (more than a pipe holds: the rest from a thread)
        for size in [0usize, 10, 1 << 20] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let spec = ProcessSpec {
                stdin: Some(data.clone()),
                ..shell("wc -c")
            };
            let r = run(&spec, None, &cancel, &capture(dir.path())).expect("wc");
            let counted = r["stdout"].as_str().expect("stdout").trim().to_owned();
            assert_eq!(counted, size.to_string(), "{size} bytes in");
        }
    }

    #[test]
    fn a_cap_that_falls_inside_a_secret_keeps_none_of_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let secret = "hunter2-Zq8x-secret";
        let redactor = Arc::new(Redactor::new());
        redactor.add(secret);
        let line = format!("token={secret} hex={} end", hex(secret));
        let masked = format!("token={MASK} hex={MASK} end");
        // every cap from before the first secret to past the second, so each of its bytes is a cut
        for cap in 1..line.len() + 2 {
            let c = Capture {
                cap,
                redactor: redactor.clone(),
                ..capture(&dir.path().join(cap.to_string()))
            };
            // written in two pieces, the secret split across them
            let spec = ProcessSpec {
                stdin: Some(line.clone().into_bytes()),
                ..shell("head -c 10; sleep 0.01; cat")
            };
            let r = run(&spec, None, &CancelToken::new(), &c).expect("run");
            let kept = r["stdout"].as_str().expect("stdout");
            // what the result keeps is the start of what the artifact holds, masked alike
            let whole = &masked[..cap.min(masked.len())];
            assert_eq!(kept, whole, "cap {cap}");
            assert_eq!(r["stdout_truncated"], cap < masked.len(), "cap {cap}");
            let file = std::fs::read_to_string(c.dir.join("stdout")).expect("artifact");
            assert_eq!(file, masked, "cap {cap}");
            assert_eq!(r["stdout_bytes"], masked.len(), "cap {cap}");
        }
    }

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_command_that_exited_is_not_a_timeout_when_what_it_left_holds_the_output() {
        let dir = tempfile::tempdir().expect("tmp");
        // exits once a process in a session of its own (so the group kill misses it) holds stdout,
        // which it keeps open past the deadline
        let pidfile = dir.path().join("holder");
        let spec = shell(&format!(
            "setsid sh -c 'echo $$ > {p}; exec sleep 100' & while [ ! -s {p} ]; do sleep 0.01; done; echo ok",
            p = pidfile.display()
        ));
        // before the end of the linger (`LINGER`, 2 s), with room for a slow start
        let deadline = Instant::now() + Duration::from_millis(1500);
        let r = run(
            &spec,
            Some(deadline),
            &CancelToken::new(),
            &capture(dir.path()),
        )
        .expect("it exited 0: not a timeout");
        assert_eq!(r["exit_code"], 0);
        assert_eq!(r["stdout"], "ok\n");
        let escaped = r["escaped"].as_array().expect("the holder is named");
        assert_eq!(escaped.len(), 1, "{r}");
        let pid = escaped[0]["pid"].to_string();
        for _ in 0..100 {
            if gone(&pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone(&pid), "the holder was killed");
    }

    #[test]
    fn an_output_that_cannot_be_recorded_fails_the_step() {
        let dir = tempfile::tempdir().expect("tmp");
        // the artifact's directory cannot be made: a file is where it would go
        std::fs::write(dir.path().join("out"), "a file").expect("file");
        let e = run(
            &shell("echo hi"),
            None,
            &CancelToken::new(),
            &capture(dir.path()),
        )
        .expect_err("its stdout was not recorded");
        assert_eq!(e.kind, ErrorKind::Failed);
        assert!(e.message.contains("exited 0"), "{}", e.message);
        assert!(
            e.message.contains("stdout could not be recorded"),
            "{}",
            e.message
        );
        let r = e.result.expect("the result");
        assert_eq!(r["ok"], false);
        assert_eq!(r["stdout"], "hi\n");
    }

    #[test]
    fn a_child_whose_exit_was_never_heard_is_killed_and_reaped_when_its_watch_ends() {
        let child = Command::new("sleep")
            .arg("100")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pid = child.id().to_string();
        let pgid = child.id() as i32;
        let w = ExitWatch::new(child, pgid);
        drop(w);
        for _ in 0..200 {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "neither running nor a zombie"
        );
    }

    #[test]
    fn stdin_held_unread_by_a_process_that_left_keeps_no_thread_after_the_call() {
        let dir = tempfile::tempdir().expect("tmp");
        let pidfile = dir.path().join("holder");
        // a process in a session of its own keeps stdin open and never reads it (given it through fd 3:
        // a background command's stdin is otherwise /dev/null); the command exits
        let spec = ProcessSpec {
            stdin: Some(vec![b'x'; 4 << 20]),
            ..shell(&format!(
                "exec 3<&0; setsid sh -c 'echo $$ > {p}; exec sleep 100' <&3 >/dev/null 2>&1 & while [ ! -s {p} ]; do sleep 0.01; done",
                p = pidfile.display()
            ))
        };
        let r = run(&spec, None, &CancelToken::new(), &capture(dir.path())).expect("run");
        assert_eq!(r["exit_code"], 0);
        let holder = std::fs::read_to_string(&pidfile).expect("pid");
        let feeders = || {
            std::fs::read_dir("/proc/self/task")
                .into_iter()
                .flatten()
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "infra-stdin")
                })
                .count()
        };
        let mut left = feeders();
        for _ in 0..100 {
            if left == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            left = feeders();
        }
        let _ = Command::new("kill").args(["-9", holder.trim()]).status();
        assert_eq!(left, 0, "the stdin thread ended with the call");
    }

    #[test]
    fn stdin_nobody_reads_does_not_hold_the_call() {
        let dir = tempfile::tempdir().expect("tmp");
        let spec = ProcessSpec {
            stdin: Some(vec![b'x'; 4 << 20]),
            ..shell("exit 0")
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let r = run(
            &spec,
            Some(deadline),
            &CancelToken::new(),
            &capture(dir.path()),
        );
        assert_eq!(r.expect("exit 0")["exit_code"], 0);
    }

    #[test]
    fn a_pipe_is_named_as_proc_names_it() {
        let (r, _w) = std::io::pipe().expect("pipe");
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(r));
        let by_proc = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ))
        .expect("link");
        assert_eq!(pipe_name(&file), Some(by_proc.display().to_string()));
        let regular = tempfile::tempfile().expect("file");
        assert_eq!(pipe_name(&regular), None);
    }

    #[test]
    fn both_watchers_give_the_status_and_end_the_group() {
        let dir = tempfile::tempdir().expect("tmp");
        for (k, threaded) in [false, true].into_iter().enumerate() {
            let pidfile = dir.path().join(format!("bg{k}"));
            let (child, pgid) = leaver(&pidfile);
            // a pidfd where the kernel has them, and the waiter thread either way
            let mut w = if threaded {
                ExitWatch::thread(child, pgid)
            } else {
                ExitWatch::new(child, pgid)
            };
            let mut status = None;
            for _ in 0..500 {
                status = w.status(Duration::from_millis(20));
                if status.is_some() {
                    break;
                }
            }
            let code = status.flatten().and_then(|s| s.code());
            assert_eq!(code, Some(3), "threaded: {threaded}");
            let bg = std::fs::read_to_string(&pidfile).expect("pid");
            let bg = bg.trim();
            for _ in 0..100 {
                if gone(bg) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(
                gone(bg),
                "the background child {bg} was ended (threaded: {threaded})"
            );
        }
    }
}
