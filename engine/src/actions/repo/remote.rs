//! `fetch` and `push` through git2's remote callbacks.
//!
//! The remote is a configured remote's name (default `origin`) or a URL (`ssh://`,
//! `user@host:path`, `https://`, or, with `INFRA_UNSAFE_LOCAL=1`, `file://` or a path).
//! Credentials: for ssh, the `key_file` argument (a host path: only a key that a target of the
//! remote's host names, unless `INFRA_UNSAFE_LOCAL=1`) or the `target`'s `key_file` (its
//! `passphrase_env` read through the redactor), else the ssh-agent when the target says `agent:
//! true`; the user is the URL's, else the target's `username`, else `git`. The host key is checked
//! like the `ssh` tool's (`ssh::auth::check_key`): the target's `fingerprint` pin or `known_hosts`
//! file, else `~/.ssh/known_hosts` and `<profiles>/known_hosts`; an unknown host is refused unless
//! the target says `host_key: accept_new`, a changed key always. For https, `token_env` names the
//! variable holding a token (sent as the password; the user is the URL's, the target's `username`
//! or `x-access-token`), registered with the redactor when read; a target must name the variable
//! and be the remote's host (its `host` or its `http.base_url`'s), unless
//! `INFRA_ALLOW_SECRET_EXPORT=1`. Push: `refspecs`, default the current branch to the same name;
//! `force: true` (or a `+` refspec) is destructive. A non-fast-forward push without force is
//! refused by libgit2 before anything is sent. The result names each remote ref updated with its
//! old and new sha.

use std::cell::RefCell;
use std::path::PathBuf;

use git2::{
    CertificateCheckStatus, Cred, CredentialType, ErrorCode, FetchOptions, PushOptions, Remote,
    RemoteCallbacks, Repository,
};
use serde_json::{Value, json};
use sha2::Digest;

use crate::actions::ssh::auth::{Endpoint, check_key};
use crate::actions::{ActionError, Call, ErrorKind, Host};

/// Credentials and host checking settings of one call.
pub(super) struct Access {
    ep: Endpoint,
    token_env: Option<String>,
    /// The key file is the call's `key_file` argument, not the target's.
    key_from_call: bool,
}

impl Access {
    pub(super) fn new(
        host: &dyn Host,
        target: Option<&str>,
        key_file: Option<&str>,
        token_env: Option<&str>,
        remote: &str,
    ) -> Result<Access, ActionError> {
        let config = host.config();
        // a runbook passes "" for what it was not given
        fn given(v: Option<&str>) -> Option<&str> {
            v.filter(|v| !v.is_empty())
        }
        let (target, key_file, token_env) = (given(target), given(key_file), given(token_env));
        let mut ep = match target {
            Some(name) => {
                let targets = crate::targets::Targets::load_checked(&config.profiles_dir)?;
                let t = targets.find(name, &config.profiles_dir)?.clone();
                Endpoint {
                    name: name.to_owned(),
                    target: t,
                }
            }
            None => Endpoint {
                name: format!("remote {remote}"),
                target: Default::default(),
            },
        };
        if let Some(k) = key_file {
            ep.target.key_file = Some(k.to_owned());
        }
        Ok(Access {
            ep,
            token_env: token_env.map(str::to_owned),
            key_from_call: key_file.is_some(),
        })
    }
}

/// Refuses to send `var`, named by the call, to the server at `url` unless a target that names it
/// is that host: its `host`, or its `http.base_url`'s (`actions::call_credential`).
fn token_goes_home(config: &crate::ctx::Config, var: &str, url: &str) -> Result<(), ActionError> {
    fn bare(h: &str) -> String {
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase()
    }
    let dest = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(bare))
        .ok_or_else(|| {
            ActionError::new(
                ErrorKind::Refused,
                format!("cannot tell which host `{url}` is, to send it a token"),
            )
        })?;
    crate::actions::call_credential(
        config,
        var,
        &dest,
        |t| {
            t.host.as_deref().is_some_and(|h| bare(h) == dest)
                || t.http
                    .as_ref()
                    .and_then(|h| h.base_url.as_deref())
                    .and_then(|b| url::Url::parse(b).ok())
                    .is_some_and(|b| b.host_str().map(bare).as_deref() == Some(dest.as_str()))
        },
        |name| format!("fetch or push a remote on the host of target `{name}`"),
    )
}

/// Refuses the call's own `key_file` (a host path) for the server at `url` unless a target whose host
/// that is names the same key file (compared after `~` and symbolic links are resolved), or
/// `INFRA_UNSAFE_LOCAL=1` lets calls use host files: a call may not sign in with any key it finds on
/// the host, where it chooses.
fn key_goes_home(config: &crate::ctx::Config, key: &str, url: &str) -> Result<(), ActionError> {
    if config.unsafe_local {
        return Ok(());
    }
    let wanted = config.real_path(key);
    let dest = ssh_host_port(url).map(|(h, _)| h.to_ascii_lowercase());
    let targets = crate::targets::Targets::load(&config.profiles_dir);
    let home = targets.targets.values().any(|t| {
        t.key_file
            .as_deref()
            .is_some_and(|k| config.real_path(k) == wanted)
            && t.host
                .as_deref()
                .is_some_and(|h| Some(h.to_ascii_lowercase()) == dest)
    });
    if home {
        return Ok(());
    }
    Err(ActionError::new(
        ErrorKind::Refused,
        format!(
            "the key file `{key}` is no target's key for {}: a call signs in only with a key a target gives for that host",
            dest.as_deref().unwrap_or(url)
        ),
    )
    .hint(
        "pass the `target` whose `key_file` it is, or set it as `key_file` of a target with that          `host`, or start infra with INFRA_UNSAFE_LOCAL=1 to let calls use any host file",
    ))
}

/// `host` and port of an ssh URL (`ssh://[user@]host[:port]/path` or `[user@]host:path`).
fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    let rest = if let Some(r) = url
        .strip_prefix("ssh://")
        .or(url.strip_prefix("git+ssh://"))
    {
        r.split('/').next()?
    } else if !url.contains("://") && !url.starts_with('/') {
        url.split(':').next()?
    } else {
        return None;
    };
    let hostport = rest.rsplit('@').next()?;
    if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once(']')?;
        let port = p
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(22);
        return Some((h.to_owned(), port));
    }
    match hostport.split_once(':') {
        Some((h, p)) if url.contains("://") => Some((h.to_owned(), p.parse().ok()?)),
        _ => Some((hostport.to_owned(), 22)),
    }
}

/// The remote named `name`, or an anonymous one for a URL or path. A URL or path the call gives that
/// is on this host (a path, `file://`) reads or writes a repository anywhere infra may: only with
/// `INFRA_UNSAFE_LOCAL=1` (a remote the repository's own config names is the project's).
fn find_remote<'r>(
    call: &Call<'_>,
    repo: &'r Repository,
    name: &str,
) -> Result<Remote<'r>, ActionError> {
    match repo.find_remote(name) {
        Ok(r) => Ok(r),
        Err(_) if name.contains("://") || name.contains(':') || name.starts_with('/') => {
            let on_host = name.starts_with('/') || name.to_ascii_lowercase().starts_with("file:");
            if on_host && !call.host.config().unsafe_local {
                return Err(ActionError::new(
                    ErrorKind::Refused,
                    format!(
                        "remote `{name}` is a repository on the infra host, a path the call names"
                    ),
                )
                .hint(
                    "add it as a remote of the repository (its config is the project's), or start \
                     infra with INFRA_UNSAFE_LOCAL=1 to let calls name host paths",
                ));
            }
            repo.remote_anonymous(name).map_err(|e| {
                ActionError::new(
                    ErrorKind::InvalidArgs,
                    format!("remote `{name}`: {}", e.message()),
                )
            })
        }
        Err(e) => {
            let known: Vec<String> = repo
                .remotes()
                .map(|r| r.iter().flatten().flatten().map(str::to_owned).collect())
                .unwrap_or_default();
            Err(ActionError::new(
                ErrorKind::NotFound,
                format!("no remote `{name}` ({})", e.message()),
            )
            .hint(if known.is_empty() {
                "give a URL as `remote`, or add a remote to the repository".to_owned()
            } else {
                format!("known remotes: {}", known.join(", "))
            }))
        }
    }
}

/// Whether the call was cancelled or ran past its deadline (a transfer then stops at its next
/// progress report).
fn stopped(call: &Call<'_>) -> Option<ErrorKind> {
    if call.cancel.is_cancelled() {
        Some(ErrorKind::Cancelled)
    } else if call
        .deadline
        .is_some_and(|d| std::time::Instant::now() >= d)
    {
        Some(ErrorKind::Timeout)
    } else {
        None
    }
}

/// The callbacks of one call: credentials, host key check, and a stop on cancel or timeout; a failure
/// of ours is kept in `failure`.
fn callbacks<'a>(
    call: &'a Call<'a>,
    access: &'a Access,
    url: &str,
    failure: &'a RefCell<Option<ActionError>>,
) -> RemoteCallbacks<'a> {
    let host: &dyn Host = call.host;
    let mut cb = RemoteCallbacks::new();
    cb.transfer_progress(move |_| stopped(call).is_none());
    cb.sideband_progress(move |_| stopped(call).is_none());
    let port = ssh_host_port(url).map_or(22, |(_, p)| p);
    let mut tries = 0u32;
    cb.credentials(move |asking, user_from_url, allowed| {
        tries += 1;
        let config = host.config();
        let t = &access.ep.target;
        // ssh logs in as `git` by default; a token is sent with the user `x-access-token`
        let https = allowed.contains(CredentialType::USER_PASS_PLAINTEXT);
        let user = user_from_url
            .map(str::to_owned)
            .or_else(|| t.username.clone())
            .unwrap_or_else(|| if https { "x-access-token" } else { "git" }.to_owned());
        let fail = |e: ActionError| {
            let msg = e.message.clone();
            *failure.borrow_mut() = Some(e);
            git2::Error::from_str(&msg)
        };
        if tries > 2 {
            return Err(fail(
                ActionError::new(
                    ErrorKind::AuthFailed,
                    format!(
                        "{}: the server refused the credentials offered for user `{user}`",
                        access.ep.name
                    ),
                )
                .hint("check the key (or token) and that the server accepts it"),
            ));
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(&user);
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            if let Some(key) = &t.key_file {
                let path: PathBuf = config.expand_home(key);
                if access.key_from_call {
                    key_goes_home(config, key, asking).map_err(fail)?;
                }
                if !path.is_file() {
                    return Err(fail(ActionError::new(
                        ErrorKind::InvalidConfig,
                        format!("the key file `{key}` does not exist"),
                    )));
                }
                let passphrase = match &t.passphrase_env {
                    Some(var) => Some(
                        crate::actions::credential(config, host.redactor(), var, "passphrase")
                            .map_err(fail)?,
                    ),
                    None => None,
                };
                return Cred::ssh_key(&user, None, &path, passphrase.as_deref());
            }
            if t.agent == Some(true) {
                return Cred::ssh_key_from_agent(&user);
            }
            return Err(fail(
                ActionError::new(
                    ErrorKind::InvalidConfig,
                    "no ssh credentials for the remote",
                )
                .hint("pass `key_file`, or a `target` with `key_file` or `agent: true`"),
            ));
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let Some(var) = &access.token_env else {
                return Err(fail(
                    ActionError::new(
                        ErrorKind::InvalidConfig,
                        "the remote asks for a password and no `token_env` is given",
                    )
                    .hint("pass `token_env`: the variable that holds an access token"),
                ));
            };
            token_goes_home(config, var, asking).map_err(fail)?;
            let token =
                crate::actions::credential(config, host.redactor(), var, "token").map_err(fail)?;
            return Cred::userpass_plaintext(&user, &token);
        }
        Err(fail(ActionError::new(
            ErrorKind::AuthFailed,
            "the remote asks for credentials of a kind infra does not offer",
        )))
    });
    cb.certificate_check(move |cert, hostname| {
        let Some(hk) = cert.as_hostkey() else {
            // TLS: libgit2 has verified the chain against the system's CAs already.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let checked = match (hk.hostkey(), hk.hostkey_type()) {
            (Some(key), Some(kt)) => {
                let fp = format!(
                    "SHA256:{}",
                    crate::record::redact::base64(&sha2::Sha256::digest(key), false)
                );
                check_key(
                    host.config(),
                    &access.ep,
                    (hostname, port),
                    key,
                    kt.name(),
                    fp,
                )
            }
            _ => Err(ActionError::new(
                ErrorKind::SshFailed,
                format!("{hostname} sent no host key infra can check"),
            )),
        };
        match checked {
            Ok(_) => Ok(CertificateCheckStatus::CertificateOk),
            Err(e) => {
                let msg = e.message.clone();
                *failure.borrow_mut() = Some(e);
                Err(git2::Error::from_str(&msg))
            }
        }
    });
    cb
}

fn transfer_err(
    call: &Call<'_>,
    what: &str,
    e: &git2::Error,
    failure: &RefCell<Option<ActionError>>,
) -> ActionError {
    if let Some(mine) = failure.borrow_mut().take() {
        return mine;
    }
    if let Some(kind) = stopped(call) {
        return ActionError::new(kind, format!("{what} stopped: {}", e.message()));
    }
    if e.code() == ErrorCode::NotFastForward {
        return ActionError::new(
            ErrorKind::Refused,
            format!("{what} refused: not a fast-forward ({}); nothing was pushed", e.message()),
        )
        .hint("fetch and integrate the remote's commits first, or push with `force: true` (destructive)");
    }
    let kind = match e.class() {
        git2::ErrorClass::Ssh => ErrorKind::SshFailed,
        git2::ErrorClass::Net | git2::ErrorClass::Http => ErrorKind::ConnectFailed,
        _ => ErrorKind::Failed,
    };
    ActionError::new(kind, format!("{what}: {}", e.message()))
}

/// `fetch`: the remote's refs (its refspecs, or `refspecs`) into the repository.
pub(super) fn fetch(
    call: &Call<'_>,
    repo: &Repository,
    remote_name: &str,
    refspecs: &[String],
    access: &Access,
) -> Result<Value, ActionError> {
    let mut remote = find_remote(call, repo, remote_name)?;
    let url = remote.url().unwrap_or_default().to_owned();
    let failure = RefCell::new(None);
    let updated = RefCell::new(Vec::new());
    let mut cb = callbacks(call, access, &url, &failure);
    cb.update_tips(|name, old, new| {
        updated.borrow_mut().push(json!({
            "ref": name,
            "old": (!old.is_zero()).then(|| old.to_string()),
            "new": new.to_string(),
        }));
        true
    });
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(cb);
    remote
        .fetch(refspecs, Some(&mut opts), Some("infra: fetch"))
        .map_err(|e| transfer_err(call, &format!("fetch from `{remote_name}`"), &e, &failure))?;
    drop(opts);
    Ok(json!({ "remote": remote_name, "updated": updated.into_inner() }))
}

/// `push`: `refspecs` (default the current branch) to the remote; `force` prefixes each with `+`.
pub(super) fn push(
    call: &Call<'_>,
    repo: &Repository,
    remote_name: &str,
    refspecs: &[String],
    force: bool,
    access: &Access,
) -> Result<Value, ActionError> {
    let mut specs: Vec<String> = if refspecs.is_empty() {
        let head = repo
            .head()
            .ok()
            .filter(|h| h.is_branch())
            .and_then(|h| h.name().ok().map(str::to_owned));
        let Some(b) = head else {
            return Err(ActionError::new(
                ErrorKind::InvalidArgs,
                "HEAD is not on a branch, so there is nothing to push by default",
            )
            .hint("give `refspecs`, e.g. [\"HEAD:refs/heads/main\"]"));
        };
        vec![format!("{b}:{b}")]
    } else {
        refspecs.to_vec()
    };
    if force {
        for s in &mut specs {
            if !s.starts_with('+') {
                s.insert(0, '+');
            }
        }
    }
    let mut remote = find_remote(call, repo, remote_name)?;
    let url = remote.url().unwrap_or_default().to_owned();
    let failure = RefCell::new(None);
    let updates = RefCell::new(Vec::new());
    let rejected = RefCell::new(Vec::new());
    let mut cb = callbacks(call, access, &url, &failure);
    cb.push_negotiation(|list| {
        for u in list {
            updates.borrow_mut().push(json!({
                "ref": String::from_utf8_lossy(u.dst_refname_bytes()),
                "old": (!u.src().is_zero()).then(|| u.src().to_string()),
                "new": u.dst().to_string(),
            }));
        }
        Ok(())
    });
    cb.push_update_reference(|name, status| {
        if let Some(s) = status {
            rejected.borrow_mut().push(format!("`{name}` ({s})"));
        }
        Ok(())
    });
    let mut opts = PushOptions::new();
    opts.remote_callbacks(cb);
    remote
        .push(&specs, Some(&mut opts))
        .map_err(|e| transfer_err(call, &format!("push to `{remote_name}`"), &e, &failure))?;
    drop(opts);
    let rejected = rejected.into_inner();
    if !rejected.is_empty() {
        return Err(ActionError::new(
            ErrorKind::Refused,
            format!(
                "the remote `{remote_name}` rejected {}",
                rejected.join(", ")
            ),
        )
        .hint(
            "fetch and integrate the remote's commits, or check the remote's rules for these refs",
        ));
    }
    Ok(json!({ "remote": remote_name, "forced": force, "updated": updates.into_inner() }))
}

#[cfg(test)]
mod tests {
    use super::ssh_host_port;

    #[test]
    fn ssh_urls_give_host_and_port() {
        let hp = |u: &str| ssh_host_port(u);
        assert_eq!(
            hp("ssh://me@127.0.0.1:2222/srv/r.git"),
            Some(("127.0.0.1".into(), 2222))
        );
        assert_eq!(hp("ssh://host/srv/r.git"), Some(("host".into(), 22)));
        assert_eq!(
            hp("git@github.com:o/r.git"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(hp("ssh://[::1]:2200/r"), Some(("::1".into(), 2200)));
        assert_eq!(hp("file:///srv/r.git"), None);
        assert_eq!(hp("/srv/r.git"), None);
    }
}
