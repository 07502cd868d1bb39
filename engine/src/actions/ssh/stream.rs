//! SFTP for pipelines: a remote file streamed out of a target, or into one through a temporary
//! sibling renamed over it (`sftp::upload`), on the target's pooled session.

use std::io::{Read, Write};

use serde_json::Value;

use super::session::{Cx, Limits};
use super::{sftp, with_channel};
use crate::actions::{ActionError, Call};

fn with_target<T>(
    call: &Call<'_>,
    target: &str,
    f: impl FnOnce(&super::session::Conn, Limits<'_>) -> Result<T, ActionError>,
) -> Result<T, ActionError> {
    let host = call.host;
    let targets = crate::targets::Targets::load_checked(&host.config().profiles_dir)?;
    let cx = Cx {
        config: host.config(),
        redactor: host.redactor(),
        targets: &targets,
        limits: Limits {
            deadline: call.deadline,
            cancel: call.cancel,
        },
    };
    cx.endpoint(target)?;
    with_channel(call, &cx, target, |conn, ch| {
        // the channel proved the session alive; SFTP opens its own
        drop(ch);
        f(conn, cx.limits)
    })
}

/// Streams remote `path` of `target` into `to`; returns the bytes read.
pub(crate) fn download(
    call: &Call<'_>,
    target: &str,
    path: &str,
    to: &mut dyn Write,
) -> Result<u64, ActionError> {
    with_target(call, target, |conn, limits| {
        sftp::download(conn, limits, path, to, u64::MAX)
    })
}

/// Streams `from` into remote `path` of `target`, replacing it whole or not at all.
pub(crate) fn upload(
    call: &Call<'_>,
    target: &str,
    from: &mut dyn Read,
    path: &str,
    mode: i32,
) -> Result<Value, ActionError> {
    with_target(call, target, |conn, limits| {
        sftp::upload(conn, limits, from, path, mode)
    })
}
