//! A throwaway PostgreSQL cluster on 127.0.0.1 for tests: `initdb` into a temporary directory (SCRAM
//! password authentication, UTF-8, `C.UTF-8` locale), then `pg_ctl start` on a free port with
//! durability switched off (`fsync`, `synchronous_commit`, `full_page_writes`), the Unix socket in the
//! temporary directory and the server log in a file.
//!
//! The server binaries are taken from the highest `/usr/lib/postgresql/<version>/bin` (Debian package
//! `postgresql`), else from the directory of `initdb` on `PATH`. PostgreSQL refuses to run as root, so
//! as root the directory is handed to the `postgres` system user and `initdb` / `pg_ctl` run as that
//! user (`runuser -u postgres --`); `psql` runs as the current user over TCP.
//!
//! [`Postgres::stop`] (also on drop) shuts the cluster down with `pg_ctl stop -m fast`; if that fails it
//! kills the postmaster recorded in `data/postmaster.pid`, after checking that it is a postgres process
//! serving this data directory.

use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where Debian installs the server binaries, one directory per major version.
const PG_LIB: &str = "/usr/lib/postgresql";
/// System user that owns and runs the cluster when the tests run as root.
const OWNER: &str = "postgres";
/// Seconds `pg_ctl` waits for start-up or shut-down (`-t`).
const PG_CTL_TIMEOUT_SECS: u32 = 30;
/// Attempts with a fresh port when another process took the port chosen by [`super::free_port`].
const PORT_ATTEMPTS: usize = 5;
/// How long [`Postgres::stop`]'s fallback waits for the postmaster to exit after SIGQUIT.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// A running (or stopped, see [`Postgres::stop`]) throwaway cluster; stopped on drop, its directory
/// removed after.
pub struct Postgres {
    /// Holds `data/` (the cluster), `sock/` (the Unix socket), `postgres.log` and `pwfile`; owned by
    /// the `postgres` user when running as root.
    pub dir: tempfile::TempDir,
    /// Port on 127.0.0.1 that the server listens on (kept across [`Postgres::start_again`]).
    pub port: u16,
    /// Superuser to connect as: `postgres`.
    pub user: String,
    /// Password of [`Postgres::user`]: 16 random-looking ASCII letters and digits (no URL escaping needed).
    pub password: String,
    /// Database to connect to: `postgres`.
    pub database: String,
    bin: PathBuf,
    data: PathBuf,
    log_path: PathBuf,
    as_owner: bool,
    running: bool,
}

impl fmt::Debug for Postgres {
    /// Everything but the password, so that a test's own debug output never contains it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .field("bin", &self.bin)
            .field("running", &self.running)
            .finish()
    }
}

impl Postgres {
    /// Creates a cluster in a new temporary directory, starts it on a free port (retrying with a new
    /// port if the chosen one was taken meanwhile) and waits until it accepts connections
    /// (`pg_ctl -w`). Panics (with the `initdb` output or the server log) on failure.
    pub fn start() -> Postgres {
        let bin = find_bin();
        let as_owner = is_root();
        let dir = tempfile::Builder::new()
            .prefix("pgtest.")
            .tempdir()
            .expect("create postgres temp dir");
        let d = dir.path();
        let mut pg = Postgres {
            port: 0,
            user: "postgres".to_owned(),
            password: random_password(),
            database: "postgres".to_owned(),
            data: d.join("data"),
            log_path: d.join("postgres.log"),
            bin,
            as_owner,
            running: false,
            dir,
        };
        let d = pg.dir.path();
        fs::create_dir(d.join("sock")).expect("create postgres socket dir");
        let pwfile = d.join("pwfile");
        fs::write(&pwfile, format!("{}\n", pg.password)).expect("write postgres pwfile");
        if as_owner {
            run(Command::new("chown")
                .args(["-R", &format!("{OWNER}:{OWNER}")])
                .arg(d));
        }

        let mut initdb = pg.owner_cmd("initdb");
        initdb
            .arg("-D")
            .arg(&pg.data)
            .args(["-U", &pg.user, "--auth=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]);
        let out = initdb
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {initdb:?}: {e}"));
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The password stays in the cluster (as a SCRAM verifier) and in `self.password`.
        let _ = fs::remove_file(&pwfile);

        for attempt in 1..=PORT_ATTEMPTS {
            pg.port = super::free_port();
            let log_from = pg.log().len();
            match pg.pg_ctl_start() {
                Ok(()) => return pg,
                Err(why) => {
                    let log = pg.log();
                    let port_taken = log
                        .get(log_from..)
                        .is_some_and(|run| run.contains("Address already in use"));
                    if !(port_taken && attempt < PORT_ATTEMPTS) {
                        panic!("postgres did not start: {why}\n--- postgres log ---\n{log}");
                    }
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `postgres://user:password@127.0.0.1:port/database`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            self.user, self.password, self.port, self.database
        )
    }

    /// Runs one SQL command string with `psql` (unaligned, tuples only, stop on the first error) over
    /// TCP and returns its stdout without the final newline: `psql("select 1+1")` is `"2"`, rows are
    /// separated by `\n` and columns by `|`. Panics with psql's stderr (and the server log) on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql).unwrap_or_else(|err| {
            panic!(
                "psql -c {sql:?} on port {} failed: {err}\n--- postgres log ---\n{}",
                self.port,
                self.log()
            )
        })
    }

    /// Like [`Postgres::psql`], but returns psql's exit status and stderr as the error instead of
    /// panicking (for example while the cluster is stopped).
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(self.psql_bin());
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", &self.user])
            .args(["-d", &self.database, "-c", sql]);
        clear_pg_env(&mut cmd);
        let out = cmd
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.psql_bin().display()));
        if !out.status.success() {
            return Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ));
        }
        let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if stdout.ends_with('\n') {
            stdout.pop();
        }
        Ok(stdout)
    }

    /// `psql` from the server's bin directory if it is there, else `psql` (looked up on `PATH`).
    pub fn psql_bin(&self) -> PathBuf {
        let psql = self.bin.join("psql");
        if psql.is_file() {
            psql
        } else {
            PathBuf::from("psql")
        }
    }

    /// Shuts the cluster down (`pg_ctl stop -m fast -w`, as the cluster owner), closing every
    /// connection. If that fails, the postmaster from `data/postmaster.pid` is sent SIGQUIT and then
    /// SIGKILL. Does nothing when the cluster is not running.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let mut cmd = self.owner_cmd("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", &PG_CTL_TIMEOUT_SECS.to_string()])
            .arg("stop");
        let stopped = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            self.kill_postmaster();
        }
    }

    /// Starts the cluster again after [`Postgres::stop`], on the same port with the same data (e.g. to
    /// test "database down" and then back). Panics (with the server log) on failure; does nothing when
    /// it is running.
    pub fn start_again(&mut self) {
        if self.running {
            return;
        }
        if let Err(why) = self.pg_ctl_start() {
            panic!(
                "postgres did not restart on port {}: {why}\n--- postgres log ---\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// Contents of the server log (all runs, including restarts); empty if there is none yet.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `pg_ctl start -w` on [`Postgres::port`], appending to the log. On error the cluster is stopped
    /// (if anything runs) and the reason returned.
    fn pg_ctl_start(&mut self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off",
            self.port,
            self.dir.path().join("sock").display()
        );
        let mut cmd = self.owner_cmd("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log_path)
            .args(["-w", "-t", &PG_CTL_TIMEOUT_SECS.to_string(), "-o", &options])
            .arg("start");
        // With `-l`, the postmaster's stdout and stderr go to the log, so pg_ctl's pipes close when
        // pg_ctl exits.
        self.running = true;
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {cmd:?}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        self.stop();
        Err(format!(
            "pg_ctl start on port {} failed ({}): {}",
            self.port,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }

    /// A command running `program` from the server's bin directory, as the cluster owner when we are
    /// root, in the temporary directory (the caller's directory may be unreadable for `postgres`),
    /// without `PG*` variables from the environment.
    fn owner_cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_owner {
            let mut c = Command::new("runuser");
            c.args(["-u", OWNER, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.current_dir(self.dir.path());
        clear_pg_env(&mut cmd);
        cmd
    }

    /// Fallback of [`Postgres::stop`]: SIGQUIT (immediate shutdown: the postmaster makes its children
    /// quit too) to the postmaster of this data directory, then, if it has not exited within
    /// [`KILL_GRACE`], SIGKILL to it and its child processes.
    fn kill_postmaster(&self) {
        let Some(pid) = fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        else {
            return;
        };
        if !self.is_our_postmaster(pid) {
            return;
        }
        signal("-QUIT", &[pid.to_string()]);
        let deadline = Instant::now() + KILL_GRACE;
        while self.is_our_postmaster(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.is_our_postmaster(pid) {
            // Server processes call `setsid()`, so they are not in the postmaster's process group:
            // kill its children by parent pid, the postmaster first so that it forks no more.
            let children = postgres_children(pid);
            signal("-KILL", &[pid.to_string()]);
            signal(
                "-KILL",
                &children.iter().map(u32::to_string).collect::<Vec<_>>(),
            );
            // SIGKILL takes effect asynchronously: wait (briefly) until they are dead, so the port and
            // the data directory are free when `stop` returns.
            let deadline = Instant::now() + KILL_GRACE;
            while std::iter::once(&pid).chain(&children).any(|&p| alive(p))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Whether `pid` is a live `postgres` process whose working directory is this cluster's data
    /// directory (the postmaster `chdir`s there), so a recycled pid is never signalled.
    fn is_our_postmaster(&self, pid: u32) -> bool {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let comm_ok = fs::read_to_string(proc.join("comm")).is_ok_and(|c| c.trim() == "postgres");
        let cwd_ok = fs::read_link(proc.join("cwd")).is_ok_and(|cwd| {
            fs::canonicalize(&self.data).is_ok_and(|data| cwd == data) || cwd == self.data
        });
        comm_ok && cwd_ok && alive(pid)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory with `initdb`, `pg_ctl` and `psql`: the highest `/usr/lib/postgresql/<ver>/bin`
/// holding `initdb`, else the (symlink-resolved) directory of `initdb` on `PATH`.
fn find_bin() -> PathBuf {
    let mut versions: Vec<(Vec<u64>, PathBuf)> = fs::read_dir(PG_LIB)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_owned();
                    let version = name
                        .split('.')
                        .map(|p| p.parse::<u64>().ok())
                        .collect::<Option<Vec<u64>>>()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").is_file().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("initdb"))
        .find(|p| p.is_file());
    let initdb = on_path.unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries in {PG_LIB}/*/bin or PATH: apt-get install -y postgresql"
        )
    });
    fs::canonicalize(&initdb)
        .unwrap_or(initdb)
        .parent()
        .expect("initdb has a parent directory")
        .to_path_buf()
}

/// 16 ASCII letters and digits, starting with a letter, from a randomly keyed std hasher fed with the
/// clock and the pid (no `rand` crate needed; unpredictable enough for a throwaway test cluster).
fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut out = String::with_capacity(16);
    let mut round = 0u64;
    while out.len() < 16 {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(round);
        let mut x = h.finish();
        for _ in 0..8 {
            // The 52 letters come first, so `x % 52` picks a letter for the first character.
            let modulus = if out.is_empty() {
                52
            } else {
                ALPHABET.len() as u64
            };
            out.push(char::from(ALPHABET[(x % modulus) as usize]));
            x /= modulus;
            if out.len() == 16 {
                break;
            }
        }
        round += 1;
    }
    out
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Pids of the live `postgres` processes whose parent is `parent` (from `/proc/<pid>/stat`).
fn postgres_children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?.parse::<u32>().ok()?;
            (ppid == parent && comm == "postgres" && !matches!(state, "Z" | "X")).then_some(pid)
        })
        .collect()
}

/// Removes every `PG*` variable (PGHOST, PGPORT, PGDATA, PGSERVICE, …) from a command's environment,
/// so the caller's environment cannot redirect a connection or the data directory.
fn clear_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(&key);
        }
    }
}

/// Whether the tests run as root (`id -u` is 0).
fn is_root() -> bool {
    let out = run(Command::new("id").arg("-u"));
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Runs a command to completion; panics with its stderr unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Sends `sig` (e.g. `-KILL`) to pids / negated pgids with `kill`; errors (processes already gone) are
/// ignored.
fn signal(sig: &str, targets: &[String]) {
    let _ = Command::new("kill")
        .arg(sig)
        .arg("--")
        .args(targets.iter().map(OsStr::new))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
