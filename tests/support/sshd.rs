//! A throwaway OpenSSH server (`/usr/sbin/sshd`) on 127.0.0.1 for tests: fresh ed25519 host and client
//! keys in a temporary directory, key-only login as the current user, verbose log to a file.
//!
//! sshd runs in the foreground (`-D -e`) in its own process group, so [`Sshd::stop`] kills the listener
//! and every per-connection child at once.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The sshd binary (Debian package openssh-server).
const SSHD_BIN: &str = "/usr/sbin/sshd";
/// How long [`Sshd::start`] waits for the port to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a fresh port when another process took the port chosen by [`super::free_port`].
const PORT_ATTEMPTS: usize = 5;

/// A running throwaway sshd; stopped (process group killed) on drop, its directory removed after.
#[derive(Debug)]
pub struct Sshd {
    /// Holds the keys, `sshd_config`, `authorized_keys`, `known_hosts` and `sshd.log`.
    pub dir: tempfile::TempDir,
    /// Port on 127.0.0.1 that sshd listens on (kept across [`Sshd::restart`] and [`Sshd::new_host_key`]).
    pub port: u16,
    /// User to log in as: the user running the tests.
    pub user: String,
    /// Authorized client private key (ed25519, no passphrase, OpenSSH format).
    pub key: PathBuf,
    /// A second client private key that is not authorized.
    pub wrong_key: PathBuf,
    /// One line, `[127.0.0.1]:PORT ssh-ed25519 AAAA…`, for the host key sshd was first started with.
    pub known_hosts: PathBuf,
    host_key: PathBuf,
    config: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Sshd {
    /// Generates keys and a config in a new temporary directory, starts sshd on a free port and waits
    /// until it accepts TCP connections. Panics (with the sshd log) on failure.
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD_BIN).exists(),
            "{SSHD_BIN} missing: apt-get install -y openssh-server"
        );
        ensure_privsep_dir();
        let dir = tempfile::Builder::new()
            .prefix("sshdtest.")
            .tempdir()
            .expect("create sshd temp dir");
        let d = dir.path();
        let mut sshd = Sshd {
            port: 0,
            user: current_user(),
            key: d.join("client_ed25519"),
            wrong_key: d.join("wrong_ed25519"),
            known_hosts: d.join("known_hosts"),
            host_key: d.join("host_ed25519"),
            config: d.join("sshd_config"),
            log_path: d.join("sshd.log"),
            child: None,
            dir,
        };
        keygen(&sshd.host_key, "sshdtest-host");
        keygen(&sshd.key, "sshdtest-client");
        keygen(&sshd.wrong_key, "sshdtest-wrong");
        let authorized = sshd.dir.path().join("authorized_keys");
        fs::copy(pub_path(&sshd.key), &authorized).expect("write authorized_keys");
        fs::set_permissions(&authorized, fs::Permissions::from_mode(0o600))
            .expect("chmod authorized_keys");

        for attempt in 1..=PORT_ATTEMPTS {
            // Each attempt's log stands alone, so a stale "Address already in use" is not re-read.
            let _ = fs::remove_file(&sshd.log_path);
            sshd.port = super::free_port();
            sshd.write_config();
            sshd.write_known_hosts();
            match sshd.spawn_and_wait() {
                Ok(()) => return sshd,
                Err(why) => {
                    let log = sshd.log();
                    let port_taken = log.contains("Address already in use");
                    if !(port_taken && attempt < PORT_ATTEMPTS) {
                        panic!("sshd did not start: {why}\n--- sshd log ---\n{log}");
                    }
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `SHA256:…` fingerprint of the current host key (`ssh-keygen -l -E sha256`).
    pub fn host_fingerprint(&self) -> String {
        let out = run(Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(pub_path(&self.host_key)));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .expect("fingerprint field in ssh-keygen -l output")
            .to_owned()
    }

    /// Stops sshd (killing existing connections) and starts it again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops sshd, replaces the host key with a newly generated one and starts again on the same port.
    /// `known_hosts` still holds the old key, so clients using it must now fail host key verification.
    pub fn new_host_key(&mut self) {
        self.stop();
        for p in [self.host_key.clone(), pub_path(&self.host_key)] {
            fs::remove_file(&p).unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
        }
        keygen(&self.host_key, "sshdtest-host-new");
        self.start_again();
    }

    /// Arguments for the OpenSSH `ssh` client to log in with [`Sshd::key`], checking the host against
    /// [`Sshd::known_hosts`] non-interactively; ends with `user@127.0.0.1`, so append the remote command.
    pub fn openssh_args(&self) -> Vec<String> {
        let mut args = vec![
            "-F".to_owned(),
            "/dev/null".to_owned(),
            "-i".to_owned(),
            self.key.display().to_string(),
        ];
        for opt in [
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "StrictHostKeyChecking=yes".to_owned(),
            "BatchMode=yes".to_owned(),
            "IdentitiesOnly=yes".to_owned(),
            "ConnectTimeout=10".to_owned(),
        ] {
            args.push("-o".to_owned());
            args.push(opt);
        }
        args.push("-p".to_owned());
        args.push(self.port.to_string());
        args.push(format!("{}@127.0.0.1", self.user));
        args
    }

    /// Contents of the sshd log (all runs, including restarts); empty if there is none yet.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Kills sshd with SIGKILL: the listener's process group and every descendant (per-connection
    /// sshd processes call `setsid()`, so they and the sessions they run are in other process groups),
    /// then reaps the listener. Does nothing when it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            // Still our unreaped child, so its pid (also its pgid: `process_group(0)`) is not reused.
            kill_tree(child.id());
        }
        let _ = child.wait();
    }

    /// Starts sshd again with the current files and port (after [`Sshd::stop`]); panics on failure.
    fn start_again(&mut self) {
        if let Err(why) = self.spawn_and_wait() {
            panic!(
                "sshd did not restart on port {}: {why}\n--- sshd log ---\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// Validates the config, spawns `sshd -D -e` in a new process group and waits until the port
    /// accepts connections. On error the child (if any) is stopped and the reason returned.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let check = Command::new(SSHD_BIN)
            .arg("-t")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {SSHD_BIN} -t: {e}"))?;
        if !check.status.success() {
            panic!(
                "{SSHD_BIN} -t rejected {}: {}\n{}",
                self.config.display(),
                String::from_utf8_lossy(&check.stderr),
                fs::read_to_string(&self.config).unwrap_or_default()
            );
        }

        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open sshd log");
        let log_out = log.try_clone().expect("clone sshd log handle");
        let child = Command::new(SSHD_BIN)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log_out)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn {SSHD_BIN}: {e}"))?;
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .expect("child just spawned")
                .try_wait()
                .map_err(|e| format!("wait for sshd: {e}"))?;
            if let Some(status) = exited {
                self.child = None;
                return Err(format!("sshd exited early with {status}"));
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "port {} not accepting connections after {READY_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes `sshd_config` for the current port.
    fn write_config(&self) {
        let d = self.dir.path();
        let mut cfg = String::new();
        for line in [
            "ListenAddress 127.0.0.1".to_owned(),
            format!("Port {}", self.port),
            format!("HostKey {}", self.host_key.display()),
            format!("PidFile {}", d.join("sshd.pid").display()),
            format!("AuthorizedKeysFile {}", d.join("authorized_keys").display()),
            "PubkeyAuthentication yes".to_owned(),
            "PasswordAuthentication no".to_owned(),
            "KbdInteractiveAuthentication no".to_owned(),
            "PermitRootLogin prohibit-password".to_owned(),
            "UsePAM no".to_owned(),
            "StrictModes no".to_owned(),
            "PrintMotd no".to_owned(),
            format!("AllowUsers {}", self.user),
            "LogLevel VERBOSE".to_owned(),
            "Subsystem sftp internal-sftp".to_owned(),
            "MaxSessions 64".to_owned(),
            "MaxStartups 64:30:128".to_owned(),
            "AllowTcpForwarding yes".to_owned(),
        ] {
            writeln!(cfg, "{line}").expect("format sshd_config");
        }
        fs::write(&self.config, cfg).expect("write sshd_config");
    }

    /// Writes `known_hosts` with the current host key for `[127.0.0.1]:PORT`.
    fn write_known_hosts(&self) {
        let host_pub = fs::read_to_string(pub_path(&self.host_key)).expect("read host public key");
        let key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        assert_eq!(key.len(), 2, "malformed host public key: {host_pub}");
        fs::write(
            &self.known_hosts,
            format!("[127.0.0.1]:{} {} {}\n", self.port, key[0], key[1]),
        )
        .expect("write known_hosts");
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `path` with `.pub` appended (the public half written by ssh-keygen).
fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Generates an ed25519 key pair without passphrase at `path` (and `path.pub`).
fn keygen(path: &Path, comment: &str) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path));
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

/// SIGKILLs process group `root` (led by `root`) and all descendants of `root`. The tree is frozen
/// with SIGSTOP first, level by level until a rescan of `/proc` finds nothing new, so that nothing
/// forks a process that escapes; a fork with a pending signal is restarted by the kernel, so once a
/// process has been sent SIGSTOP all its children are visible.
fn kill_tree(root: u32) {
    let pgid = format!("-{root}");
    signal("-STOP", std::slice::from_ref(&pgid));
    let mut stopped = vec![root];
    loop {
        let fresh: Vec<u32> = descendants(root)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if fresh.is_empty() {
            break;
        }
        signal(
            "-STOP",
            &fresh.iter().map(u32::to_string).collect::<Vec<_>>(),
        );
        stopped.extend(fresh);
    }
    let mut targets = vec![pgid];
    targets.extend(stopped.iter().map(u32::to_string));
    signal("-KILL", &targets);
    // SIGKILL takes effect asynchronously: wait (briefly) until the descendants are dead, so that
    // connections and remote commands are really gone when `stop` returns. `root` is reaped by the
    // caller; the others are orphans now, left as zombies if nothing reaps them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stopped[1..].iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Sends `sig` (e.g. `-KILL`) to pids / negated pgids with `kill`; errors (processes already gone) are
/// ignored.
fn signal(sig: &str, targets: &[String]) {
    let _ = Command::new("kill")
        .arg(sig)
        .arg("--")
        .args(targets)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Pids of all live descendants of `root`, from the parent pids in `/proc/<pid>/stat`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|s| s.parse::<u32>().ok());
            if let (Some(state), Some(ppid)) = (state, ppid)
                && state != "Z"
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for &(pid, ppid) in &parent_of {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

/// Output of `id <flag>`, trimmed, if it ran.
fn id(flag: &str) -> Option<String> {
    let out = Command::new("id")
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The user running the tests (`id -un`, else `$USER`).
fn current_user() -> String {
    id("-un")
        .or_else(|| std::env::var("USER").ok())
        .expect("current user name (id -un or USER)")
}

/// As root, sshd needs its privilege-separation directory `/run/sshd`; creates it (mode 755) if missing.
fn ensure_privsep_dir() {
    if id("-u").as_deref() != Some("0") {
        return;
    }
    let dir = Path::new("/run/sshd");
    if dir.is_dir() {
        return;
    }
    match fs::create_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => panic!("create {}: {e}", dir.display()),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod 755 /run/sshd");
}
