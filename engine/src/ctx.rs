//! The one door to the environment and the clock: configuration is read once, here, from an
//! environment snapshot the caller provides; times come from [`now_rfc3339`].
//!
//! `Config::from_env(env, cwd)` takes the environment as a closure (`Config::at(dir)` is every
//! switch off, rooted at one directory): the profiles directory (`profiles_dir`),
//! `MCP_RUNBOOKS_PATH`, `MCP_CAPABILITIES_PATH`, `MCP_CONTEXT_REPO_ROOT` (`artifacts_root`, where
//! `runs/` lives; the profiles directory by default), `INFRA_UNSAFE_LOCAL`,
//! `INFRA_ALLOW_SECRET_EXPORT`, `INFRA_HTTP_DENY_PRIVATE`, `INFRA_READ_ONLY` (`1`, `true` or
//! `yes`), `INFRA_HTTP_IDLE_TIMEOUT_MS` (milliseconds; else `HTTP_IDLE`), `INFRA_MAX_JOBS` (else
//! `MAX_JOBS`); `INFRA_AUDIT_KEY` (`AUDIT_KEY_VAR`) becomes an `AuditKey`, whose `Debug` shows no byte.
//! `INFRA_ALLOW_SECRET_EXPORT` allows unmasked artifact reads and an HTTP call's credential from
//! any variable. `Vars` reads one variable when a connection asks (`Vars::process()` in the binary,
//! `Vars::none()`/`from_pairs` in tests); `expand_home` expands `~` with it. `read_source` reads a
//! runbook file, refusing one over the size limit before reading it. `connect_tcp` opens SSH's TCP
//! connections (each resolved address in turn, with a timeout); ureq and the PostgreSQL driver open
//! their own. `now_stamp` names run directories, `new_id` is 32 hex chars (SHA-256 of clock, pid
//! and a counter), `ProcessRef` tells whether a recorded process still lives. Durations use
//! `Instant` directly; the clock cannot be faked.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dsl::{Code, Diagnostic, SourceFile};

/// What this process may do and where it keeps its files.
#[derive(Debug, Clone)]
pub struct Config {
    /// The profiles directory (runbooks, store, runs, audit).
    pub profiles_dir: PathBuf,
    /// `MCP_RUNBOOKS_PATH`: a runbook file or directory used instead of the profiles directory's.
    pub runbooks_path: Option<PathBuf>,
    /// `MCP_CAPABILITIES_PATH`.
    pub capabilities_path: Option<PathBuf>,
    /// `MCP_CONTEXT_REPO_ROOT`: where `runs/` (evidence and artifacts) live; the profiles directory by default.
    pub artifacts_root: PathBuf,
    /// `INFRA_UNSAFE_LOCAL=1`: local processes and files, and host paths in any action.
    pub unsafe_local: bool,
    /// `INFRA_ALLOW_SECRET_EXPORT=1`: unredacted artifact reads and credential values.
    pub allow_secret_export: bool,
    /// `INFRA_HTTP_DENY_PRIVATE=1`: HTTP calls may not reach loopback-free private ranges (10/8,
    /// 172.16/12, 192.168/16, 100.64/10, fc00::/7), whatever the target says.
    pub http_deny_private: bool,
    /// `INFRA_HTTP_IDLE_TIMEOUT_MS` (120 s by default): how long an HTTP call without a deadline waits
    /// for the server's next byte (its answer, or more of a body) or to take more of an upload.
    pub http_idle: Duration,
    /// `INFRA_MAX_JOBS` (16 by default): how many background jobs (`async: true` calls) of this
    /// profiles directory may run at once; another is refused until one ends.
    pub max_jobs: usize,
    /// `INFRA_READ_ONLY=1`: every write is refused before it is sent, whatever the tool (see `policy`).
    pub read_only: bool,
    /// Environment variables read when an action needs them (credentials that targets name, `HOME`).
    pub vars: Vars,
    /// `INFRA_AUDIT_KEY`: seals each audit record with an HMAC (`mac`) and checks the seals in `verify`.
    /// Never shown, and not passed on to the processes infra starts.
    pub audit_key: Option<AuditKey>,
    /// The working directory infra was started in: `repo` writes stay in its project (see `actions::repo`).
    pub cwd: PathBuf,
}

/// [`Config::http_idle`] when `INFRA_HTTP_IDLE_TIMEOUT_MS` does not set it (a positive number).
pub const HTTP_IDLE: Duration = Duration::from_secs(120);

/// [`Config::max_jobs`] when `INFRA_MAX_JOBS` does not set it (a positive number).
pub const MAX_JOBS: usize = 16;

/// The variable that holds the audit log's key.
pub const AUDIT_KEY_VAR: &str = "INFRA_AUDIT_KEY";

/// Reads one environment variable at the moment it is needed, so a credential is read only by the call
/// that uses it and a changed variable is seen by the next call.
#[derive(Clone)]
pub struct Vars(Arc<VarFn>);

type VarFn = dyn Fn(&str) -> Option<String> + Send + Sync;

impl Vars {
    /// This process's environment.
    pub fn process() -> Self {
        Vars(Arc::new(|k: &str| std::env::var(k).ok()))
    }

    /// No variables at all.
    pub fn none() -> Self {
        Vars(Arc::new(|_: &str| None))
    }

    /// A fixed set (tests and embedding).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let map: std::collections::BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Vars(Arc::new(move |k: &str| map.get(k).cloned()))
    }

    /// The variable's value, when it is set and not empty.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.is_empty())
    }
}

impl std::fmt::Debug for Vars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vars(..)")
    }
}

/// Opens a TCP connection to the first address of `host:port` that answers within `timeout` (each).
pub fn connect_tcp(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{host}` has no address"),
        )
    }))
}

fn flag(env: &dyn Fn(&str) -> Option<String>, name: &str) -> bool {
    matches!(
        env(name).as_deref().map(str::trim),
        Some("1" | "true" | "yes")
    )
}

/// A positive whole number a variable holds; `None` for anything else (its default applies).
fn positive(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<u64> {
    env(name)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
}

impl Config {
    /// Reads the configuration from an environment (`env` returns one variable) and a working directory.
    /// Paths are made absolute against `cwd` (and `.` dropped): the store records runs, directories and
    /// journals by path, so another process, in another directory, finds the same ones.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> Self {
        let absolute = |p: PathBuf| cwd.join(p).components().collect::<PathBuf>();
        let profiles_dir = absolute(crate::profiles::profiles_dir(env, cwd));
        let path = |k: &str| {
            env(k)
                .filter(|p| !p.is_empty())
                .map(|p| absolute(PathBuf::from(p)))
        };
        Config {
            artifacts_root: path("MCP_CONTEXT_REPO_ROOT").unwrap_or_else(|| profiles_dir.clone()),
            runbooks_path: path("MCP_RUNBOOKS_PATH"),
            capabilities_path: path("MCP_CAPABILITIES_PATH"),
            unsafe_local: flag(env, "INFRA_UNSAFE_LOCAL"),
            allow_secret_export: flag(env, "INFRA_ALLOW_SECRET_EXPORT"),
            http_deny_private: flag(env, "INFRA_HTTP_DENY_PRIVATE"),
            http_idle: positive(env, "INFRA_HTTP_IDLE_TIMEOUT_MS")
                .map_or(HTTP_IDLE, Duration::from_millis),
            max_jobs: positive(env, "INFRA_MAX_JOBS")
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(MAX_JOBS),
            read_only: flag(env, "INFRA_READ_ONLY"),
            vars: Vars::none(),
            audit_key: env(AUDIT_KEY_VAR)
                .filter(|k| !k.is_empty())
                .map(AuditKey::new),
            profiles_dir,
            cwd: cwd.to_path_buf(),
        }
    }

    /// A configuration rooted at one directory, with every switch off (tests and embedding).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Config {
            artifacts_root: dir.clone(),
            cwd: dir.clone(),
            profiles_dir: dir,
            runbooks_path: None,
            capabilities_path: None,
            unsafe_local: false,
            allow_secret_export: false,
            http_deny_private: false,
            http_idle: HTTP_IDLE,
            max_jobs: MAX_JOBS,
            read_only: false,
            vars: Vars::none(),
            audit_key: None,
        }
    }

    /// The same configuration, reading credentials from `vars`.
    pub fn with_vars(mut self, vars: Vars) -> Self {
        self.vars = vars;
        self
    }

    /// `~` and `~/…` expanded with `HOME`.
    pub fn expand_home(&self, path: &str) -> PathBuf {
        match (path.strip_prefix('~'), self.vars.get("HOME")) {
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                PathBuf::from(format!("{home}{rest}"))
            }
            _ => PathBuf::from(path),
        }
    }

    /// The file `path` names, `~` expanded and symbolic links resolved (as written when it does not
    /// resolve): what two names of one credential file compare by.
    pub fn real_path(&self, path: &str) -> PathBuf {
        let p = self.expand_home(path);
        std::fs::canonicalize(&p).unwrap_or(p)
    }

    pub fn audit_path(&self) -> PathBuf {
        self.profiles_dir.join("audit.jsonl")
    }

    pub fn store_path(&self) -> PathBuf {
        self.profiles_dir.join("store.sqlite3")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.artifacts_root.join("runs")
    }
}

/// The current time, RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The current time (policy's freeze windows, approvals' expiry).
pub fn now_utc() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// The current time as a run directory stamp: `2026-11-28T013000Z`.
pub fn now_stamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H%M%SZ").to_string()
}

/// A new random-enough id (32 hex chars) from the clock, the process id and a counter.
pub fn new_id() -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(
        chrono::Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or(0)
            .to_le_bytes(),
    );
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let addr = &h as *const _ as usize;
    h.update(addr.to_le_bytes());
    dsl::analyze::hex(&h.finalize()[..16])
}

/// A process, named so that a later reader can tell whether it still runs: its pid, and its start time
/// (clock ticks after boot, from `/proc/<pid>/stat`) so that a reused pid is not taken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessRef {
    pub pid: i64,
    /// `None` where `/proc` cannot say (not Linux); then the pid alone is checked.
    pub start: Option<i64>,
}

impl ProcessRef {
    /// This process (its start time read once).
    pub fn current() -> Self {
        static ME: std::sync::OnceLock<ProcessRef> = std::sync::OnceLock::new();
        let pid = i64::from(std::process::id());
        let me = ME.get_or_init(|| ProcessRef {
            pid,
            start: proc_stat(pid).map(|(_, start)| start),
        });
        if me.pid == pid {
            return *me;
        }
        // a forked child is another process
        ProcessRef {
            pid,
            start: proc_stat(pid).map(|(_, start)| start),
        }
    }

    /// Process `pid` as it is now (its start time read from `/proc`, `None` where it cannot be).
    pub fn of(pid: i64) -> Self {
        ProcessRef {
            pid,
            start: proc_stat(pid).map(|(_, start)| start),
        }
    }

    /// Whether `/proc` can tell which processes live (Linux); elsewhere [`ProcessRef::alive`] says no.
    pub fn observable() -> bool {
        Path::new("/proc/self/stat").exists()
    }

    /// Whether the process still runs: `/proc/<pid>` exists, it is not a zombie (killed and waiting to
    /// be reaped), and it started when this one did. Linux only: elsewhere nothing is alive.
    pub fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((state, start)) => state != 'Z' && self.start.is_none_or(|s| s == start),
            None => false,
        }
    }
}

/// A process's state letter and start time, from `/proc/<pid>/stat`.
fn proc_stat(pid: i64) -> Option<(char, i64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) is in parentheses and may hold anything; the rest follows its last `)`
    let mut rest = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    // field 22, `starttime`, is the 20th after the state (field 3)
    let start = rest.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The key audit records are sealed with (`INFRA_AUDIT_KEY`). It is never shown: `Debug` prints no
/// byte of it.
#[derive(Clone)]
pub struct AuditKey(Arc<[u8]>);

impl AuditKey {
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        AuditKey(Arc::from(secret.as_ref()))
    }

    /// The key as text, to register with the redactor (it is read from an environment variable).
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// The key's bytes, for the audit log's seal.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

pub(crate) fn io_error(path: &Path, e: &std::io::Error) -> Diagnostic {
    if e.kind() == std::io::ErrorKind::NotFound {
        return Diagnostic::error(
            Code::FileNotFound,
            format!("there is no file `{}`", path.display()),
        )
        .help("check the path; runbooks by name are listed by `infra list`");
    }
    Diagnostic::error(
        Code::FileUnreadable,
        format!("cannot read `{}`: {e}", path.display()),
    )
}

/// Reads a runbook file as a source (refusing files above the size limit before reading them whole).
pub fn read_source(path: &Path) -> Result<SourceFile, Diagnostic> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, &e))?;
    if meta.len() > dsl::parse::MAX_FILE_BYTES as u64 {
        return Err(Diagnostic::error(
            Code::InputTooLarge,
            format!(
                "`{}` is {} bytes; the limit is {}",
                path.display(),
                meta.len(),
                dsl::parse::MAX_FILE_BYTES
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, &e))?;
    Ok(SourceFile::new(path.display().to_string(), text))
}

/// `%XX` escapes decoded into bytes (an invalid escape is kept as it is): a `file://` URI's path, a
/// URL's password.
pub fn percent_decoded(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod process_tests {
    use super::ProcessRef;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_it() {
        let me = ProcessRef::current();
        assert!(me.start.is_some(), "/proc/self/stat has a start time");
        assert!(me.alive());
        let other = ProcessRef {
            start: me.start.map(|s| s + 1),
            ..me
        };
        assert!(!other.alive(), "same pid, another start time");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = i64::from(child.id());
        let _ = child.wait();
        assert!(!ProcessRef { pid, start: None }.alive());
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn relative_paths_are_made_absolute_against_the_working_directory() {
        let cwd = Path::new("/proj/sub");
        let env = |k: &str| match k {
            "MCP_PROFILES_DIR" => Some("./.infra".to_owned()),
            "MCP_RUNBOOKS_PATH" => Some("books".to_owned()),
            "MCP_CONTEXT_REPO_ROOT" => Some("/abs/./root".to_owned()),
            _ => None,
        };
        let c = Config::from_env(&env, cwd);
        assert_eq!(c.profiles_dir, Path::new("/proj/sub/.infra"));
        assert_eq!(
            c.runbooks_path.as_deref(),
            Some(Path::new("/proj/sub/books"))
        );
        assert_eq!(c.artifacts_root, Path::new("/abs/root"));
    }

    #[test]
    fn numeric_settings_are_positive_numbers_else_their_defaults() {
        let with = |name: &'static str, v: &str| {
            let v = v.to_owned();
            Config::from_env(&|k: &str| (k == name).then(|| v.clone()), Path::new("/"))
        };
        let idle = |v: &str| with("INFRA_HTTP_IDLE_TIMEOUT_MS", v).http_idle;
        let jobs = |v: &str| with("INFRA_MAX_JOBS", v).max_jobs;
        assert_eq!(idle(" 2500 "), Duration::from_millis(2500));
        assert_eq!(jobs("3"), 3);
        for bad in ["0", "-1", "2s", ""] {
            assert_eq!(idle(bad), HTTP_IDLE, "{bad:?}");
            assert_eq!(jobs(bad), MAX_JOBS, "{bad:?}");
        }
        assert_eq!(Config::at("/").http_idle, HTTP_IDLE);
        assert_eq!(Config::at("/").max_jobs, MAX_JOBS);
    }
}
