//! SSH connections: connect (directly or through a bastion), check the host key, authenticate, and
//! keep one session per target in a pool, shared by every call and step, with a per-target channel
//! limit.
//!
//! `Pool` holds, per target name, one `Conn` keyed by the target's settings (an edited target gets
//! a new session) and a counting permit of the target's `max_sessions` channels
//! (`CHANNELS_PER_TARGET`, 8, by default). The limit is per process. `connect`: TCP through
//! `ctx::connect_tcp`, or through the `jump` target's pooled session (a `direct-tcpip` channel
//! pumped to a socket pair by two threads: `tunnel`); then handshake, `check_host_key`,
//! `authenticate` (both in `auth.rs`, before anything else is sent), all blocking and bounded by
//! the connect timeout (10 s by default).
//!
//! `ssh2` is blocking by default and one session's calls share one lock, so a session is switched
//! to non-blocking mode once authenticated: every operation is retried on `EAGAIN` (`Conn::again`,
//! `again_io`) after `wait` polls a duplicate of the socket for at most 10 ms, then checks cancel
//! and deadline (`Limits`; `Limits::cleanup` gives a few seconds no cancel cuts short, for killing,
//! closing and removing). libssh2 takes a reply off the wire before checking which channel it is
//! for, so every request that waits for a reply (channel open, `exec`, `pty`, `sftp`,
//! `direct-tcpip`) goes through `Conn::request`, which holds the session's request lock; reads and
//! writes on open channels run side by side.
//!
//! `ssh2` frees a channel without taking its session's lock, and freeing one sends its close over
//! the connection and unlinks it from the session's lists: done beside another thread's use of the
//! session, that corrupts the encrypted stream every channel of the session shares. So infra holds
//! its own lock (`Locked`) around every call into libssh2 on a shared session, and a session's
//! objects (channels, SFTP, SFTP files) are `Held`: reached only with that lock in hand, and freed
//! under it. The session itself is reached only through `Locked::session`. `Stop` says why an
//! operation stopped; `Stop::into_error` makes the `timeout`, `cancelled` and `ssh_failed` errors.
//! All of this runs on the engine's step threads, never on an async runtime.

use crate::error::ErrorKind;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::{Value, json};
use ssh2::{BlockDirections, ErrorCode, Session};

pub use super::auth::Endpoint;
use super::auth::{authenticate, check_host_key};
use crate::actions::ActionError;
use crate::ctx::Config;
use crate::exec::CancelToken;
use crate::record::Redactor;
use crate::targets::Target;

/// `LIBSSH2_ERROR_EAGAIN`.
const EAGAIN: i32 = -37;
/// How long one wait on the socket may last before deadlines and cancels are checked again.
const TICK: Duration = Duration::from_millis(10);
/// Connect timeout when a target sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Channels open at once on one target's session unless the target says (OpenSSH allows 10 per
/// connection by default).
pub const CHANNELS_PER_TARGET: usize = 8;

/// Why an operation on a session stopped.
#[derive(Debug)]
pub enum Stop {
    Timeout,
    Cancelled,
    Ssh(ssh2::Error),
    Io(std::io::Error),
}

impl Stop {
    /// The action error for this stop, `what` saying what was being done.
    pub fn into_error(self, what: &str) -> ActionError {
        match self {
            Stop::Timeout => ActionError::new(ErrorKind::Timeout, format!("{what}: timed out"))
                .hint("raise `timeout_ms`, or check that the host answers"),
            Stop::Cancelled => ActionError::new(ErrorKind::Cancelled, format!("{what}: cancelled")),
            Stop::Ssh(e) => ActionError::new(
                ErrorKind::SshFailed,
                format!("{what}: {} ({})", e.message(), e.code()),
            ),
            Stop::Io(e) => ActionError::new(ErrorKind::SshFailed, format!("{what}: {e}")),
        }
    }
}

/// When an operation must give up.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    pub deadline: Option<Instant>,
    pub cancel: &'a CancelToken,
}

/// A token nobody cancels, for work that must run even after a cancel.
fn never_cancelled() -> &'static CancelToken {
    static NEVER: std::sync::OnceLock<CancelToken> = std::sync::OnceLock::new();
    NEVER.get_or_init(CancelToken::new)
}

impl Limits<'static> {
    /// A few seconds, whatever the call's cancel says: for cleanup that must happen anyway (killing the
    /// remote group, closing a channel, removing a temporary file).
    pub fn cleanup() -> Self {
        Limits {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            cancel: never_cancelled(),
        }
    }

    /// No deadline and no cancel: for the relay threads of a tunnel, which end with its sockets.
    fn unbounded() -> Self {
        Limits {
            deadline: None,
            cancel: never_cancelled(),
        }
    }
}

impl Limits<'_> {
    /// Why to stop now, if at all.
    pub fn check(&self) -> Result<(), Stop> {
        if self.cancel.is_cancelled() {
            Err(Stop::Cancelled)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Err(Stop::Timeout)
        } else {
            Ok(())
        }
    }
}

/// An authenticated session and what is known about its peer.
pub struct Conn {
    session: Session,
    /// A duplicate of the session's socket, to wait on.
    socket: OwnedFd,
    /// `SHA256:…` of the host key.
    pub fingerprint: String,
    pub key_type: &'static str,
    /// The server's identification string.
    pub banner: Option<String>,
    /// How long connecting, the handshake and authentication took.
    pub connect_ms: u64,
    /// Held while a channel is opened or sent a request: libssh2 matches a reply to its channel only
    /// after it has taken the reply off the wire, so two requests waiting at once can take each other's
    /// reply and fail.
    setup: Mutex<()>,
    /// Held around every call into libssh2 on this session and while one of its objects is freed.
    lock: Mutex<()>,
    /// The bastion connection this one runs through, kept alive as long as this one.
    _via: Option<Arc<Conn>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The session's lock, held: the only way to reach the session and its [`Held`] objects.
pub struct Locked<'a> {
    _guard: MutexGuard<'a, ()>,
    session: &'a Session,
}

impl std::fmt::Debug for Locked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Locked")
    }
}

impl Locked<'_> {
    pub fn session(&self) -> &Session {
        self.session
    }
}

/// An object of one session (a channel, SFTP, an SFTP file): reached only under the session's lock
/// ([`Held::get`]) and freed under it.
pub struct Held<'c, T> {
    conn: &'c Conn,
    item: Option<T>,
}

impl<T> std::fmt::Debug for Held<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

impl<'c, T> Held<'c, T> {
    /// Takes `item`, an object of `conn`'s session.
    pub fn new(conn: &'c Conn, item: T) -> Self {
        Held {
            conn,
            item: Some(item),
        }
    }

    /// The object, while `lock` (the session's lock) is held.
    pub fn get<'a>(&'a mut self, lock: &'a Locked<'_>) -> &'a mut T {
        debug_assert!(std::ptr::eq(lock.session, &self.conn.session));
        self.item
            .as_mut()
            .expect("a held object is present until dropped")
    }
}

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            let _lock = self.conn.lock();
            drop(item);
        }
    }
}

impl Conn {
    /// Takes the session's lock (for one call into libssh2, not for a wait).
    pub fn lock(&self) -> Locked<'_> {
        Locked {
            _guard: self.lock.lock().unwrap_or_else(|p| p.into_inner()),
            session: &self.session,
        }
    }

    /// Runs a request that waits for its reply (a channel open, `exec`, a subsystem) alone.
    pub fn request<T>(
        &self,
        limits: Limits<'_>,
        op: impl FnMut(&Locked<'_>) -> Result<T, ssh2::Error>,
    ) -> Result<T, Stop> {
        let _alone = self.setup.lock().unwrap_or_else(|p| p.into_inner());
        self.again(limits, op)
    }

    /// Waits (at most one tick) until the socket is ready in the direction the session is blocked on.
    pub fn wait(&self) {
        let directions = self.lock().session.block_directions();
        let flags = match directions {
            BlockDirections::Outbound => PollFlags::POLLOUT,
            BlockDirections::Both => PollFlags::POLLIN | PollFlags::POLLOUT,
            _ => PollFlags::POLLIN,
        };
        let mut fds = [PollFd::new(self.socket.as_fd(), flags)];
        let ms = u16::try_from(TICK.as_millis()).unwrap_or(10);
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }

    /// Runs `op` under the session's lock until it does not return `EAGAIN`, waiting on the socket
    /// (without the lock) in between.
    pub fn again<T>(
        &self,
        limits: Limits<'_>,
        mut op: impl FnMut(&Locked<'_>) -> Result<T, ssh2::Error>,
    ) -> Result<T, Stop> {
        loop {
            let done = op(&self.lock());
            match done {
                Ok(v) => return Ok(v),
                Err(e) if e.code() == ErrorCode::Session(EAGAIN) => {
                    limits.check()?;
                    self.wait();
                }
                Err(e) => return Err(Stop::Ssh(e)),
            }
        }
    }

    /// Like [`Conn::again`] for `std::io` operations on channels and files (`WouldBlock`).
    pub fn again_io<T>(
        &self,
        limits: Limits<'_>,
        mut op: impl FnMut(&Locked<'_>) -> std::io::Result<T>,
    ) -> Result<T, Stop> {
        loop {
            let done = op(&self.lock());
            match done {
                Ok(v) => return Ok(v),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    limits.check()?;
                    self.wait();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Stop::Io(e)),
            }
        }
    }

    /// Writes all of `data` to a channel stream or file.
    pub fn write_all(
        &self,
        limits: Limits<'_>,
        to: &mut Held<'_, impl Write>,
        mut data: &[u8],
    ) -> Result<(), Stop> {
        while !data.is_empty() {
            let n = self.again_io(limits, |l| to.get(l).write(data))?;
            if n == 0 {
                return Err(Stop::Io(std::io::ErrorKind::WriteZero.into()));
            }
            data = &data[n..];
        }
        Ok(())
    }

    /// The public facts about this connection.
    pub fn facts(&self) -> Value {
        json!({
            "host_key_fingerprint": self.fingerprint,
            "host_key_type": self.key_type,
            "server": self.banner,
        })
    }
}

/// What a pooled connection is keyed by: the settings that make it (a changed target gets a new one).
fn settings_key(t: &Target) -> String {
    serde_json::to_string(t).unwrap_or_default()
}

/// A socket end for a session that runs through a bastion's `direct-tcpip` channel: two threads copy
/// bytes between the channel and a local socket pair.
fn tunnel(
    via: &Arc<Conn>,
    host: &str,
    port: u16,
    limits: Limits<'_>,
) -> Result<std::os::unix::net::UnixStream, ActionError> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| {
        ActionError::new(ErrorKind::Failed, format!("cannot make a socket pair: {e}"))
    })?;
    let mut to_local = ours
        .try_clone()
        .map_err(|e| ActionError::new(ErrorKind::Failed, e.to_string()))?;
    let mut from_local = ours;
    let channel = via
        .request(limits, |l| {
            l.session().channel_direct_tcpip(host, port, None)
        })
        .map_err(|s| match s {
            Stop::Ssh(e) => ActionError::new(
                ErrorKind::ConnectFailed,
                format!(
                    "the bastion could not reach {host}:{port}: {}",
                    e.message()
                ),
            )
            .hint("check the target's host and port as seen from the bastion, and that it allows TCP forwarding"),
            s => s.into_error("opening the tunnel"),
        })?;
    // each thread holds the channel (a clone shares it); the last to end frees it, under the lock
    let other = channel.clone();
    // channel → local
    {
        let via = Arc::clone(via);
        let ch = other;
        std::thread::spawn(move || {
            let mut ch = Held::new(&via, ch);
            let limits = Limits::unbounded();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match via.again_io(limits, |l| ch.get(l).read(&mut buf)) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to_local.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to_local.shutdown(std::net::Shutdown::Both);
        });
    }
    // local → channel
    {
        let via = Arc::clone(via);
        let ch = channel;
        std::thread::spawn(move || {
            let mut ch = Held::new(&via, ch);
            let limits = Limits::unbounded();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match from_local.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if via.write_all(limits, &mut ch, &buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = via.again(limits, |l| ch.get(l).send_eof());
            let _ = via.again(limits, |l| ch.get(l).close());
            let _ = from_local.shutdown(std::net::Shutdown::Both);
        });
    }
    Ok(theirs)
}

/// Connects to a target (through its bastion, if any), checks the host key, authenticates.
fn connect(pool: &Pool, cx: &Cx<'_>, ep: &Endpoint, depth: usize) -> Result<Conn, ActionError> {
    let started = Instant::now();
    let t = &ep.target;
    let name = &ep.name;
    let host = t.host.clone().ok_or_else(|| {
        ActionError::new(
            ErrorKind::InvalidConfig,
            format!("target `{name}` has no `host`"),
        )
        .hint("set `host` for this target in targets")
    })?;
    let port = t.port.unwrap_or(22);
    let user = t
        .username
        .clone()
        .or_else(|| cx.config.vars.get("USER"))
        .ok_or_else(|| {
            ActionError::new(
                ErrorKind::InvalidConfig,
                format!("target `{name}` has no `username`"),
            )
        })?;
    let timeout = t
        .connect_timeout_ms
        .map_or(CONNECT_TIMEOUT, Duration::from_millis);
    let mut session = Session::new()
        .map_err(|e| ActionError::new(ErrorKind::SshFailed, e.message().to_owned()))?;
    let (socket, via) = match &t.jump {
        Some(j) => {
            if depth > 4 {
                return Err(ActionError::new(
                    ErrorKind::InvalidConfig,
                    format!("target `{name}`: jump hosts nest too deep (a loop?)"),
                ));
            }
            let bastion = cx.endpoint(j)?;
            let via = pool.conn_at(cx, &bastion, depth + 1)?;
            let stream = tunnel(&via, &host, port, cx.limits)?;
            let fd = stream
                .try_clone()
                .map_err(|e| ActionError::new(ErrorKind::Failed, e.to_string()))?;
            session.set_tcp_stream(stream);
            (OwnedFd::from(fd), Some(via))
        }
        None => {
            let stream = crate::ctx::connect_tcp(&host, port, timeout).map_err(|e| {
                let kind = if e.kind() == std::io::ErrorKind::TimedOut {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::ConnectFailed
                };
                ActionError::new(
                    kind,
                    format!("target `{name}`: cannot connect to {host}:{port}: {e}"),
                )
                .hint("check that the host is up, the port is right and sshd is listening")
            })?;
            let _ = stream.set_nodelay(true);
            let fd = stream
                .try_clone()
                .map_err(|e| ActionError::new(ErrorKind::Failed, e.to_string()))?;
            session.set_tcp_stream(stream);
            (OwnedFd::from(fd), None)
        }
    };
    // blocking, bounded by the connect timeout, until the session is ours alone to share
    session.set_blocking(true);
    session.set_timeout(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
    session.handshake().map_err(|e| {
        ActionError::new(
            ErrorKind::ConnectFailed,
            format!(
                "target `{name}`: SSH handshake with {host}:{port} failed: {}",
                e.message()
            ),
        )
        .hint("check that the port is an SSH server")
    })?;
    let (fingerprint, key_type) = check_host_key(cx.config, ep, &host, port, &session)?;
    authenticate(cx.config, cx.redactor, ep, &user, &session)?;
    session.set_timeout(0);
    session.set_blocking(false);
    Ok(Conn {
        banner: session.banner().map(str::to_owned),
        session,
        socket,
        fingerprint,
        key_type,
        connect_ms: started.elapsed().as_millis() as u64,
        setup: Mutex::new(()),
        lock: Mutex::new(()),
        _via: via,
    })
}

/// What connecting needs from the call.
#[derive(Debug, Clone, Copy)]
pub struct Cx<'a> {
    pub config: &'a Config,
    pub redactor: &'a Redactor,
    pub targets: &'a crate::targets::Targets,
    pub limits: Limits<'a>,
}

impl Cx<'_> {
    /// The named target, or an error naming the known ones.
    pub fn endpoint(&self, name: &str) -> Result<Endpoint, ActionError> {
        let t = self.targets.find(name, &self.config.profiles_dir)?;
        Ok(Endpoint {
            name: name.to_owned(),
            target: t.clone(),
        })
    }
}

/// One target's pooled session and its channel permits.
#[derive(Debug, Default)]
struct Slot {
    conn: Mutex<Option<(String, Arc<Conn>)>>,
    in_use: Mutex<usize>,
    freed: Condvar,
}

/// A channel permit: released on drop.
#[derive(Debug)]
pub struct Permit {
    slot: Arc<Slot>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut n = self.slot.in_use.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.slot.freed.notify_one();
    }
}

/// Sessions by target name, shared by every call of the engine.
#[derive(Debug, Default)]
pub struct Pool {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Pool {
    fn slot(&self, name: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(name.to_owned()).or_default())
    }

    /// Waits for one of the target's channel permits (`max_sessions`, 8 by default).
    pub fn permit(&self, ep: &Endpoint, limits: Limits<'_>) -> Result<Permit, Stop> {
        let most = ep
            .target
            .max_sessions
            .map_or(CHANNELS_PER_TARGET, |m| m.max(1) as usize);
        let slot = self.slot(&ep.name);
        let mut n = slot.in_use.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= most {
            limits.check()?;
            n = slot
                .freed
                .wait_timeout(n, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *n += 1;
        drop(n);
        Ok(Permit { slot })
    }

    /// The target's session: the pooled one if its settings are unchanged, else a new one.
    pub fn conn(&self, cx: &Cx<'_>, ep: &Endpoint) -> Result<Arc<Conn>, ActionError> {
        self.conn_at(cx, ep, 0)
    }

    fn conn_at(&self, cx: &Cx<'_>, ep: &Endpoint, depth: usize) -> Result<Arc<Conn>, ActionError> {
        let slot = self.slot(&ep.name);
        let key = settings_key(&ep.target);
        // held while connecting, so concurrent callers share one new session
        let mut held = slot.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, c)) = held.as_ref()
            && *k == key
        {
            return Ok(Arc::clone(c));
        }
        let conn = Arc::new(connect(self, cx, ep, depth)?);
        *held = Some((key, Arc::clone(&conn)));
        Ok(conn)
    }

    /// Forgets a session that failed, so the next call reconnects (only if it is still the pooled one).
    pub fn discard(&self, name: &str, conn: &Arc<Conn>) {
        let slot = self.slot(name);
        let mut held = slot.conn.lock().unwrap_or_else(|p| p.into_inner());
        if held.as_ref().is_some_and(|(_, c)| Arc::ptr_eq(c, conn)) {
            *held = None;
        }
    }

    /// A new session that is not pooled (health checks measure a real connect).
    pub fn fresh(&self, cx: &Cx<'_>, ep: &Endpoint) -> Result<Conn, ActionError> {
        connect(self, cx, ep, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session object that records, when freed, whether its session's lock was held.
    struct Probe<'a> {
        lock: &'a Mutex<()>,
        freed_locked: &'a std::sync::atomic::AtomicU8,
    }

    impl Drop for Probe<'_> {
        fn drop(&mut self) {
            let locked = self.lock.try_lock().is_err();
            self.freed_locked
                .store(1 + u8::from(locked), std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn unconnected() -> Conn {
        Conn {
            session: Session::new().expect("session"),
            socket: std::fs::File::open("/dev/null").expect("fd").into(),
            fingerprint: String::new(),
            key_type: "",
            banner: None,
            connect_ms: 0,
            setup: Mutex::new(()),
            lock: Mutex::new(()),
            _via: None,
        }
    }

    #[test]
    fn a_held_object_is_freed_under_the_sessions_lock() {
        let conn = unconnected();
        let freed = std::sync::atomic::AtomicU8::new(0);
        let held = Held::new(
            &conn,
            Probe {
                lock: &conn.lock,
                freed_locked: &freed,
            },
        );
        // another thread holds the lock: the free waits for it, then happens under it
        let lock = conn.lock();
        std::thread::scope(|sc| {
            sc.spawn(move || drop(held));
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(freed.load(std::sync::atomic::Ordering::SeqCst), 0);
            drop(lock);
        });
        assert_eq!(freed.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn every_attempt_runs_under_the_lock_which_is_free_after() {
        let conn = unconnected();
        let cancel = CancelToken::new();
        let limits = Limits {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            cancel: &cancel,
        };
        let mut attempts = 0;
        let r = conn.again(limits, |_| {
            attempts += 1;
            assert!(conn.lock.try_lock().is_err(), "an attempt ran unlocked");
            if attempts < 3 {
                Err(ssh2::Error::new(ErrorCode::Session(EAGAIN), "again"))
            } else {
                Ok(attempts)
            }
        });
        assert_eq!(r.expect("done"), 3);
        assert!(conn.lock.try_lock().is_ok());
    }
}
