//! Running a command on a target: one channel of the target's pooled session, output streamed to
//! artifacts with bounded memory, and on timeout or cancel the remote process group killed, not just the
//! channel closed.
//!
//! sshd starts every session command in a new session (`setsid`), so the remote shell is the leader of
//! its own process group. The wrapper prints that id on the first stdout line (which infra consumes),
//! then `exec`s `/bin/sh -c <command>` in the same process; on timeout or cancel a second channel runs
//! `kill -KILL -- -<pgid>`, which ends the command and everything it started.

use crate::error::ErrorKind;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ssh2::Channel;

use super::session::{Conn, Held, Limits, Stop};
use crate::actions::ActionError;
use crate::exec::process::{Capture, Exit, OutputSink, outcome};

/// What to run on the remote side.
pub struct RemoteCommand {
    /// A shell command line (run by `/bin/sh -c`).
    pub line: String,
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    pub pty: bool,
    /// Streamed to the command's standard input.
    pub stdin: Option<Box<dyn Read + Send>>,
    /// Close standard input after `stdin` (or at once when there is none).
    pub stdin_eof: bool,
    /// Exit codes that count as success (none given: only 0).
    pub ok_exit_codes: Vec<i32>,
}

impl std::fmt::Debug for RemoteCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCommand")
            .field("line", &self.line)
            .field("pty", &self.pty)
            .finish_non_exhaustive()
    }
}

/// Whether `name` may be an environment variable name.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The script sent to the remote login shell: report the process group, read the environment's values
/// from standard input (so they never stand in a command line, where any user of the host could read
/// them in `/proc`), set the directory, then become `/bin/sh -c <line>`. Every value is one quoted word.
pub fn wrap(cmd: &RemoteCommand) -> String {
    use dsl::template::shell_quote as q;
    let mut s = String::from("printf '%s\\n' \"$$\"; ");
    for (k, _) in &cmd.env {
        // one line per value (see `env_lines`); the `x` keeps trailing newlines through `$(…)`
        s.push_str(&format!(
            "IFS= read -r {k} || exit 125; {k}=$(printf '%bx' \"${k}\"); {k}=${{{k}%x}}; export {k}; "
        ));
    }
    if let Some(cwd) = &cmd.cwd {
        s.push_str(&format!("cd -- {} || exit 126; ", q(cwd)));
    }
    s.push_str("exec /bin/sh -c ");
    s.push_str(&q(&cmd.line));
    s
}

/// The environment's values as the wrapper reads them, one line each: letters and digits as they are,
/// every other byte as a `\0ooo` escape that `printf %b` turns back into it.
pub fn env_lines(env: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, v) in env {
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() {
                out.push(b);
            } else {
                out.extend_from_slice(format!("\\0{b:03o}").as_bytes());
            }
        }
        out.push(b'\n');
    }
    out
}

/// Joins an argument vector into one command line, each argument one quoted word.
pub fn join_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| dsl::template::shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits the process-group line off the front of stdout.
#[derive(Debug, Default)]
struct PgidLine {
    buf: Vec<u8>,
    done: bool,
    pgid: Option<u32>,
}

impl PgidLine {
    /// Takes stdout bytes; returns those that belong to the command's output.
    fn feed<'a>(&mut self, chunk: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if self.done {
            return chunk.into();
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => {
                self.buf.extend_from_slice(&chunk[..i]);
                self.done = true;
                let text = String::from_utf8_lossy(&self.buf);
                self.pgid = text.trim_end_matches('\r').trim().parse().ok();
                if self.pgid.is_none() {
                    // not our line (a login shell that printed first): keep it as output
                    let mut all = std::mem::take(&mut self.buf);
                    all.extend_from_slice(&chunk[i..]);
                    return all.into();
                }
                chunk[i + 1..].into()
            }
            None if self.buf.len() + chunk.len() > 64 => {
                self.done = true;
                let mut all = std::mem::take(&mut self.buf);
                all.extend_from_slice(chunk);
                all.into()
            }
            None => {
                self.buf.extend_from_slice(chunk);
                Vec::new().into()
            }
        }
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

/// Runs a short command whose output is not wanted on a new channel; its exit status.
pub fn run_quiet(conn: &Conn, limits: Limits<'_>, command: &str) -> Result<Option<i32>, Stop> {
    run_collect(conn, limits, command).map(|(code, _)| code)
}

/// Like [`run_quiet`], keeping the first 4 KiB of stdout.
pub(super) fn run_collect(
    conn: &Conn,
    limits: Limits<'_>,
    command: &str,
) -> Result<(Option<i32>, String), Stop> {
    let mut ch = open(conn, limits)?;
    conn.request(limits, |l| ch.get(l).exec(command))?;
    let mut sink = [0u8; 1024];
    let mut kept = Vec::new();
    while !ch.get(&conn.lock()).eof() {
        let read = match ch.get(&conn.lock()).read(&mut sink) {
            Ok(0) => Err(std::io::ErrorKind::WouldBlock.into()),
            other => other,
        };
        match read {
            Ok(n) => {
                let room = 4096usize.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&sink[..room]);
            }
            Err(e) if would_block(&e) => {
                // stderr is drained and dropped, so a command that writes there cannot stall the
                // channel (its window) while stdout has nothing
                let drained = ch.get(&conn.lock()).stderr().read(&mut sink);
                match drained {
                    Ok(n) if n > 0 => continue,
                    Err(e) if !would_block(&e) => return Err(Stop::Io(e)),
                    _ => {}
                }
                limits.check()?;
                conn.wait();
            }
            Err(e) => return Err(Stop::Io(e)),
        }
    }
    conn.again(limits, |l| ch.get(l).wait_close())?;
    let code = ch.get(&conn.lock()).exit_status().ok();
    Ok((code, String::from_utf8_lossy(&kept).into_owned()))
}

/// Kills a remote process group from a second channel (bounded to a few seconds), and first every
/// process of the user that left the group but holds the leader's output (Linux `/proc`; shell
/// builtins only, no process per candidate). Returns the pids of those that had left the group.
fn kill_group(conn: &Conn, pgid: u32) -> Vec<u32> {
    let script = format!(
        "g={pgid}; for p in /proc/[0-9]*; do [ \"$p\" = /proc/$g ] && continue; \
         {{ [ $p/fd/1 -ef /proc/$g/fd/1 ] || [ $p/fd/2 -ef /proc/$g/fd/2 ]; }} 2>/dev/null || continue; \
         s=; read -r s < $p/stat 2>/dev/null; kill -KILL ${{p#/proc/}} 2>/dev/null || continue; \
         set -- ${{s##*) }}; [ \"$3\" = \"$g\" ] || echo ${{p#/proc/}}; done; \
         kill -KILL -- -$g 2>/dev/null; kill -KILL $g 2>/dev/null; true"
    );
    run_collect(conn, Limits::cleanup(), &script)
        .map(|(_, out)| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Opens a session channel (the caller holds a permit).
pub fn open<'c>(conn: &'c Conn, limits: Limits<'_>) -> Result<Held<'c, Channel>, Stop> {
    conn.request(limits, |l| l.session().channel_session())
        .map(|ch| Held::new(conn, ch))
}

/// Runs one command on an open channel to its end, its timeout or its cancel.
pub fn run(
    conn: &Conn,
    mut ch: Held<'_, Channel>,
    mut cmd: RemoteCommand,
    limits: Limits<'_>,
    cap: &Capture,
    head: Value,
) -> Result<Value, ActionError> {
    let started = Instant::now();
    let ok_codes = std::mem::take(&mut cmd.ok_exit_codes);
    let script = wrap(&cmd);
    if !cmd.env.is_empty() {
        // the values go first on standard input, ahead of the command's own
        let rest = cmd
            .stdin
            .take()
            .unwrap_or_else(|| Box::new(std::io::empty()));
        cmd.stdin = Some(Box::new(
            std::io::Cursor::new(env_lines(&cmd.env)).chain(rest),
        ));
    }
    let setup = |ch: &mut Held<'_, Channel>| -> Result<(), Stop> {
        if cmd.pty {
            conn.request(limits, |l| {
                ch.get(l).request_pty("xterm", None, Some((200, 50, 0, 0)))
            })?;
        }
        conn.request(limits, |l| ch.get(l).exec(&script))
    };
    if let Err(s) = setup(&mut ch) {
        return Err(s.into_error("starting the remote command"));
    }
    let mut out = OutputSink::new("stdout", cap);
    let mut err = OutputSink::new("stderr", cap);
    let mut pgid = PgidLine::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    let mut stdin_done = cmd.stdin.is_none();
    let mut eof_sent = !cmd.stdin_eof;
    let mut ended: Option<&'static str> = None;
    let mut drain_until: Option<Instant> = None;
    let mut failure: Option<std::io::Error> = None;
    let mut escaped: Vec<u32> = Vec::new();
    loop {
        let mut progressed = false;
        for id in [0, 1] {
            loop {
                let read = ch.get(&conn.lock()).stream(id).read(&mut buf);
                match read {
                    Ok(0) => break,
                    Ok(n) => {
                        progressed = true;
                        if id == 0 {
                            let data = pgid.feed(&buf[..n]);
                            out.push(&data);
                        } else {
                            err.push(&buf[..n]);
                        }
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        if failure.is_some() {
            break;
        }
        if !stdin_done && ended.is_none() {
            if pos == pending.len()
                && let Some(r) = cmd.stdin.as_mut()
            {
                pending.resize(64 * 1024, 0);
                match r.read(&mut pending) {
                    Ok(0) | Err(_) => {
                        pending.clear();
                        stdin_done = true;
                    }
                    Ok(n) => pending.truncate(n),
                }
                pos = 0;
            }
            if pos < pending.len() {
                let wrote = ch.get(&conn.lock()).write(&pending[pos..]);
                match wrote {
                    Ok(n) => {
                        pos += n;
                        progressed |= n > 0;
                    }
                    Err(e) if would_block(&e) => {}
                    // the command closed its stdin: the rest is not wanted
                    Err(_) => stdin_done = true,
                }
            }
        }
        if stdin_done && !eof_sent {
            let sent = ch.get(&conn.lock()).send_eof();
            match sent {
                Err(e) if e.code() == ssh2::ErrorCode::Session(-37) => {}
                _ => eof_sent = true,
            }
        }
        if ch.get(&conn.lock()).eof() {
            break;
        }
        if ended.is_none()
            && let Err(stop) = limits.check()
        {
            ended = Some(match stop {
                Stop::Cancelled => "cancelled",
                _ => "timeout",
            });
            match pgid.pgid {
                Some(g) => escaped = kill_group(conn, g),
                None => {
                    let _ = ch.get(&conn.lock()).close();
                }
            }
            // the channel ends once the group is gone; a process that still holds it is not waited for
            drain_until = Some(Instant::now() + GRACE);
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if !progressed {
            conn.wait();
        }
    }
    let mut exit = Exit::default();
    let ended_clean = failure.is_none() && ch.get(&conn.lock()).eof();
    if ended_clean
        && conn
            .again(Limits::cleanup(), |l| ch.get(l).wait_close())
            .is_ok()
    {
        let (signal, code) = {
            let lock = conn.lock();
            let c = ch.get(&lock);
            (
                c.exit_signal().ok().and_then(|s| s.exit_signal),
                c.exit_status().ok(),
            )
        };
        exit = Exit {
            code: if signal.is_some() { None } else { code },
            signal: signal.map(Value::from),
        };
    }
    let streams = vec![out.finish(), err.finish()];
    let mut head = head;
    if !escaped.is_empty() {
        head["escaped"] = escaped.iter().map(|p| json!({"pid": p})).collect();
    }
    if ended.is_some() && !ch.get(&conn.lock()).eof() {
        // still held open after the kill and the grace: by a process infra could not see or kill
        head["output_incomplete"] = true.into();
        let _ = ch.get(&conn.lock()).close();
    }
    if let Some(e) = failure {
        let result = outcome(head, started, &exit, &ok_codes, ended, streams, cap)
            .unwrap_or_else(|e| e.result.unwrap_or(Value::Null));
        return Err(ActionError::new(
            ErrorKind::SshFailed,
            format!("the connection failed while the command ran: {e}"),
        )
        .hint("the command may still be running on the host; check before running it again")
        .with_result(result));
    }
    outcome(head, started, &exit, &ok_codes, ended, streams, cap).map_err(|mut e| {
        if !escaped.is_empty() {
            e.message.push_str(&format!(
                "; {} process(es) that left the command's process group still held its output and were killed: {}",
                escaped.len(),
                escaped.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ));
        }
        e
    })
}

/// How long the channel may stay open after a timeout or cancel killed the remote group.
const GRACE: Duration = Duration::from_millis(750);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pgid_line_is_split_off_across_chunks() {
        let mut p = PgidLine::default();
        assert!(p.feed(b"12").is_empty());
        assert_eq!(&*p.feed(b"34\nhello\n"), b"hello\n");
        assert_eq!(p.pgid, Some(1234));
        assert_eq!(&*p.feed(b"more"), b"more");

        let mut q = PgidLine::default();
        assert_eq!(&*q.feed(b"motd text\nout"), b"motd text\nout");
        assert_eq!(q.pgid, None);
    }

    #[test]
    fn every_value_is_one_quoted_word() {
        let cmd = RemoteCommand {
            line: "echo 'a b' $HOME".into(),
            cwd: Some("/tmp/it's".into()),
            env: vec![("X".into(), "$(rm -rf /)".into())],
            pty: false,
            stdin: None,
            stdin_eof: true,
            ok_exit_codes: Vec::new(),
        };
        assert_eq!(
            wrap(&cmd),
            r#"printf '%s\n' "$$"; IFS= read -r X || exit 125; X=$(printf '%bx' "$X"); X=${X%x}; export X; cd -- '/tmp/it'\''s' || exit 126; exec /bin/sh -c 'echo '\''a b'\'' $HOME'"#
        );
        assert!(
            !wrap(&cmd).contains("rm -rf"),
            "values are not in the script"
        );
        assert_eq!(
            String::from_utf8(env_lines(&cmd.env)).expect("ascii"),
            "\\0044\\0050rm\\0040\\0055rf\\0040\\0057\\0051\n"
        );
        assert_eq!(join_argv(&["a b".into(), "-x".into()]), "'a b' '-x'");
        assert!(valid_env_name("_A1") && !valid_env_name("1A") && !valid_env_name("A-B"));
    }
}
