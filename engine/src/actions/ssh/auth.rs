//! A new session's host key check and authentication, both before anything else is sent.
//!
//! `check_host_key` runs before any credential is offered or command sent: a pinned `fingerprint`,
//! else the known_hosts files (`strict`: unknown is refused with the fingerprint and an
//! `ssh-keyscan` hint; `accept_new`: the line is appended, without a lock, to
//! `<profiles>/known_hosts` or the target's file; a mismatch is always refused). `authenticate`
//! tries agent, key file, password, registering passphrase and password with the redactor as they
//! are read.

use crate::error::ErrorKind;
use std::io::Write;
use std::path::PathBuf;

use ssh2::{CheckResult, HashType, HostKeyType, Session};

use crate::actions::ActionError;
use crate::ctx::Config;
use crate::record::Redactor;
use crate::targets::{HostKeyPolicy, Target};

/// A target chosen for connecting: its name and settings.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub target: Target,
}

fn key_type_name(t: HostKeyType) -> &'static str {
    match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// How a host is named in known_hosts: `host`, or `[host]:port` off port 22.
fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

fn refused(kind: ErrorKind, message: String, hint: String) -> ActionError {
    ActionError::new(kind, message).hint(hint)
}

/// The known_hosts files a target is checked against, and the one a new key is recorded in.
fn known_hosts_files(config: &Config, t: &Target) -> (Vec<PathBuf>, PathBuf) {
    match &t.known_hosts {
        Some(p) => {
            let p = config.expand_home(p);
            (vec![p.clone()], p)
        }
        None => {
            let own = config.profiles_dir.join("known_hosts");
            let mut files = Vec::new();
            if let Some(home) = config.vars.get("HOME") {
                files.push(PathBuf::from(home).join(".ssh/known_hosts"));
            }
            files.push(own.clone());
            (files, own)
        }
    }
}

/// Checks the server's host key against the target's policy; nothing is sent before it passes.
pub(super) fn check_host_key(
    config: &Config,
    ep: &Endpoint,
    host: &str,
    port: u16,
    session: &Session,
) -> Result<(String, &'static str), ActionError> {
    let (key, ktype) = session
        .host_key()
        .ok_or_else(|| ActionError::new(ErrorKind::SshFailed, "the server sent no host key"))?;
    let fingerprint = format!(
        "SHA256:{}",
        crate::record::redact::base64(
            session.host_key_hash(HashType::Sha256).unwrap_or_default(),
            false
        )
    );
    check_key(
        config,
        ep,
        (host, port),
        key,
        key_type_name(ktype),
        fingerprint,
    )
}

/// Checks a host key (`key` as sent, of type `type_name`, SHA-256 `fingerprint`) against the target's
/// pin or known_hosts files and policy: the session's check, and git's over ssh (`repo` fetch/push).
pub(crate) fn check_key(
    config: &Config,
    ep: &Endpoint,
    (host, port): (&str, u16),
    key: &[u8],
    type_name: &'static str,
    fingerprint: String,
) -> Result<(String, &'static str), ActionError> {
    let t = &ep.target;
    let name = &ep.name;
    if let Some(pin) = &t.fingerprint {
        if pin.trim_end_matches('=') != fingerprint {
            return Err(refused(
                ErrorKind::HostKeyMismatch,
                format!(
                    "target `{name}`: the host key of {host}:{port} is {fingerprint}, not the pinned {pin}; nothing was sent"
                ),
                "if the host was rebuilt, check the new key out of band and update `fingerprint` in targets".into(),
            ));
        }
        return Ok((fingerprint, type_name));
    }
    let (files, own) = known_hosts_files(config, t);
    let mut kh = Session::new()
        .and_then(|s| s.known_hosts())
        .map_err(|e| ActionError::new(ErrorKind::SshFailed, e.message().to_owned()))?;
    for f in &files {
        if f.is_file() {
            kh.read_file(f, ssh2::KnownHostFileKind::OpenSSH)
                .map_err(|e| {
                    ActionError::new(
                        ErrorKind::InvalidConfig,
                        format!("cannot read known_hosts `{}`: {}", f.display(), e.message()),
                    )
                })?;
        }
    }
    let policy = t.host_key.unwrap_or_default();
    match kh.check_port(host, port, key) {
        CheckResult::Match => Ok((fingerprint, type_name)),
        CheckResult::Mismatch => Err(refused(
            ErrorKind::HostKeyChanged,
            format!(
                "target `{name}`: the host key of {host}:{port} has changed (now {type_name} {fingerprint}); nothing was sent"
            ),
            "this may be an attack; if the host was rebuilt, check the key out of band and replace its known_hosts line".into(),
        )),
        CheckResult::NotFound if policy == HostKeyPolicy::AcceptNew => {
            let line = format!(
                "{} {type_name} {}\n",
                known_hosts_name(host, port),
                crate::record::redact::base64_padded(key)
            );
            append_line(&own, &line).map_err(|e| {
                ActionError::new(
                    ErrorKind::Failed,
                    format!("cannot record the new host key in `{}`: {e}", own.display()),
                )
            })?;
            Ok((fingerprint, type_name))
        }
        CheckResult::NotFound => Err(refused(
            ErrorKind::HostKeyUnknown,
            format!(
                "target `{name}`: {host}:{port} is not in known_hosts ({}); its key is {type_name} {fingerprint}; nothing was sent",
                files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
            format!(
                "check the fingerprint out of band, then add the host with `ssh-keyscan -p {port} {host} >> {}`, pin it with `fingerprint: {fingerprint}`, or set `host_key: accept_new`",
                own.display()
            ),
        )),
        CheckResult::Failure => Err(ActionError::new(
            ErrorKind::SshFailed,
            format!("target `{name}`: the host key check failed"),
        )),
    }
}

fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.sync_all()
}

/// Offers each identity of the ssh-agent at `SSH_AUTH_SOCK` (read through `Vars`).
fn agent_auth(config: &Config, session: &Session, user: &str) -> Result<bool, String> {
    let sock = config
        .vars
        .get("SSH_AUTH_SOCK")
        .ok_or("SSH_AUTH_SOCK is not set, so there is no agent to ask")?;
    let msg = |e: ssh2::Error| e.message().to_owned();
    let mut agent = session.agent().map_err(msg)?;
    agent
        .set_identity_path(std::path::Path::new(&sock))
        .map_err(msg)?;
    agent
        .connect()
        .map_err(|e| format!("cannot reach the agent at {sock}: {}", e.message()))?;
    agent.list_identities().map_err(msg)?;
    let ids = agent.identities().map_err(msg)?;
    let mut ok = false;
    for id in &ids {
        if agent.userauth(user, id).is_ok() && session.authenticated() {
            ok = true;
            break;
        }
    }
    let _ = agent.disconnect();
    if ids.is_empty() {
        return Err("the agent holds no keys".into());
    }
    Ok(ok)
}

/// Tries the target's credentials in order: agent, key file, password.
pub(super) fn authenticate(
    config: &Config,
    redactor: &Redactor,
    ep: &Endpoint,
    user: &str,
    session: &Session,
) -> Result<(), ActionError> {
    let t = &ep.target;
    let name = &ep.name;
    let secret = |var: &str, what: &str| {
        crate::actions::credential(config, redactor, var, what).map_err(|mut e| {
            e.message = format!("target `{name}`: {}", e.message);
            e
        })
    };
    let mut tried = Vec::new();
    let mut last_err = None;
    if t.agent == Some(true) {
        tried.push("agent");
        match agent_auth(config, session, user) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
    }
    if let Some(key) = &t.key_file {
        tried.push("key");
        let path = config.expand_home(key);
        if !path.is_file() {
            let hint = if key.starts_with('~') && config.vars.get("HOME").is_none() {
                "HOME is not set in infra's environment, so `~` cannot be expanded: pass HOME (or an absolute path)"
            } else {
                "fix `key_file` in targets"
            };
            return Err(ActionError::new(
                ErrorKind::InvalidConfig,
                format!("target `{name}`: the key file `{key}` does not exist"),
            )
            .hint(hint));
        }
        let passphrase = match &t.passphrase_env {
            Some(var) => Some(secret(var, "passphrase")?),
            None => None,
        };
        match session.userauth_pubkey_file(user, None, &path, passphrase.as_deref()) {
            Ok(()) if session.authenticated() => return Ok(()),
            Ok(()) => {}
            Err(e) => last_err = Some(e.message().to_owned()),
        }
    }
    if let Some(var) = &t.password_env {
        tried.push("password");
        let password = secret(var, "password")?;
        match session.userauth_password(user, &password) {
            Ok(()) if session.authenticated() => return Ok(()),
            Ok(()) => {}
            Err(e) => last_err = Some(e.message().to_owned()),
        }
    }
    if tried.is_empty() {
        return Err(ActionError::new(
            ErrorKind::InvalidConfig,
            format!("target `{name}` has no credentials"),
        )
        .hint("set `key_file`, `password_env` or `agent: true` in targets"));
    }
    Err(ActionError::new(
        ErrorKind::AuthFailed,
        format!(
            "target `{name}`: {user}@{} refused {} authentication{}",
            t.host.as_deref().unwrap_or_default(),
            tried.join(", "),
            last_err.map(|e| format!(" ({e})")).unwrap_or_default()
        ),
    )
    .hint("check the user name, and that the key is in the server's authorized_keys"))
}
