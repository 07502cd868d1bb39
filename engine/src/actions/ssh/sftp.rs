//! SFTP transfers over a target's pooled session. An upload is written to a temporary name beside the
//! destination and renamed over it, so a failed transfer never leaves a half-written file; a download
//! streams into an artifact (or a host file, written the same way) with its SHA-256.

use crate::error::ErrorKind;
use std::io::{Read, Write};
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use ssh2::{OpenFlags, OpenType, RenameFlags, Sftp};

use super::session::{Conn, Held, Limits, Stop};
use crate::actions::ActionError;

const CHUNK: usize = 256 * 1024;

fn sftp<'c>(conn: &'c Conn, limits: Limits<'_>) -> Result<Held<'c, Sftp>, ActionError> {
    conn.request(limits, |l| l.session().sftp())
        .map(|s| Held::new(conn, s))
        .map_err(|s| s.into_error("starting SFTP"))
}

fn remote_err(what: &str, path: &str, s: Stop) -> ActionError {
    match s {
        Stop::Ssh(e) => {
            // LIBSSH2_FX_NO_SUCH_FILE (2), LIBSSH2_FX_PERMISSION_DENIED (3)
            let kind = match e.code() {
                ssh2::ErrorCode::SFTP(2) => ErrorKind::NotFound,
                ssh2::ErrorCode::SFTP(3) => ErrorKind::Refused,
                _ => ErrorKind::SshFailed,
            };
            ActionError::new(
                kind,
                format!("cannot {what} remote `{path}`: {}", e.message()),
            )
        }
        s => s.into_error(&format!("{what} remote `{path}`")),
    }
}

/// Streams `from` to `remote_path`; returns bytes and SHA-256 of what was sent.
pub fn upload(
    conn: &Conn,
    limits: Limits<'_>,
    mut from: impl Read,
    remote_path: &str,
    mode: i32,
) -> Result<Value, ActionError> {
    let mut sftp = sftp(conn, limits)?;
    let dst = Path::new(remote_path);
    let name = dst.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        ActionError::new(
            ErrorKind::InvalidArgs,
            format!("`remote_path` `{remote_path}` names no file"),
        )
    })?;
    let tmp = dst.with_file_name(format!(".{name}.infra-{}", crate::ctx::new_id()));
    let tmp_s = tmp.to_string_lossy().into_owned();
    let mut file = conn
        .again(limits, |l| {
            sftp.get(l).open_mode(
                &tmp,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
                mode,
                OpenType::File,
            )
        })
        .map(|f| Held::new(conn, f))
        .map_err(|s| remote_err("create", &tmp_s, s))?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; CHUNK];
    let sent: Result<(), ActionError> = (|| {
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ActionError::new(
                        ErrorKind::Failed,
                        format!("cannot read the upload's source: {e}"),
                    ));
                }
            };
            conn.write_all(limits, &mut file, &buf[..n])
                .map_err(|s| remote_err("write", &tmp_s, s))?;
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        conn.again(limits, |l| file.get(l).fsync()).ok();
        conn.again(limits, |l| file.get(l).close())
            .map_err(|s| remote_err("close", &tmp_s, s))?;
        // OpenSSH's SFTP v3 rename refuses an existing destination: replace it in two steps
        let renamed = conn.again(limits, |l| {
            sftp.get(l).rename(
                &tmp,
                dst,
                Some(RenameFlags::OVERWRITE | RenameFlags::ATOMIC | RenameFlags::NATIVE),
            )
        });
        if renamed.is_err() {
            let _ = conn.again(limits, |l| sftp.get(l).unlink(dst));
            conn.again(limits, |l| sftp.get(l).rename(&tmp, dst, None))
                .map_err(|s| remote_err("rename into", remote_path, s))?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        drop(file);
        let _ = conn.again(Limits::cleanup(), |l| sftp.get(l).unlink(&tmp));
        return Err(e);
    }
    Ok(json!({
        "remote_path": remote_path,
        "bytes": bytes,
        "sha256": dsl::analyze::hex(&hasher.finalize()),
        "ok": true,
    }))
}

/// Streams `remote_path` into `to`, stopping with an error past `max_bytes`; returns the bytes read.
pub fn download(
    conn: &Conn,
    limits: Limits<'_>,
    remote_path: &str,
    to: &mut dyn Write,
    max_bytes: u64,
) -> Result<u64, ActionError> {
    let mut sftp = sftp(conn, limits)?;
    let mut file = conn
        .again(limits, |l| sftp.get(l).open(Path::new(remote_path)))
        .map(|f| Held::new(conn, f))
        .map_err(|s| remote_err("open", remote_path, s))?;
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = conn
            .again_io(limits, |l| file.get(l).read(&mut buf))
            .map_err(|s| remote_err("read", remote_path, s))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        if bytes > max_bytes {
            return Err(ActionError::new(
                ErrorKind::TooLarge,
                format!("remote `{remote_path}` is larger than `max_bytes` ({max_bytes})"),
            )
            .hint("raise `max_bytes`"));
        }
        to.write_all(&buf[..n]).map_err(|e| {
            ActionError::new(ErrorKind::Failed, format!("cannot write the download: {e}"))
        })?;
    }
    let _ = conn.again(limits, |l| file.get(l).close());
    Ok(bytes)
}
