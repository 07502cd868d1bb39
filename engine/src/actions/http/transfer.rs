//! Moving the bytes of an HTTP call: the request body from the arguments, sending with retries and
//! redirects followed here (each hop checked again, credentials dropped when the origin changes), and
//! the response body read to its end or to `max_bytes` (the first `INLINE` bytes in memory, all of it
//! in an artifact or a host file past that).

use crate::error::ErrorKind;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;
use crate::actions::{ActionError, Call};

/// A request body and its content type, if the body sets one.
pub(super) type Payload = (Vec<u8>, Option<&'static str>);

/// The request body of a call: at most one of `json`, `body`, `body_base64` and `form`; one given as
/// `null` is still the body (`null`, or empty).
pub(super) fn body_of(args: &RequestArgs) -> Result<Option<Payload>, ActionError> {
    let given: Vec<&str> = [
        ("json", args.json.is_some()),
        ("body", args.body.is_some()),
        ("body_base64", args.body_base64.is_some()),
        ("form", args.form.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, is)| is.then_some(k))
    .collect();
    if given.len() > 1 {
        return Err(invalid(format!(
            "give one body, not {}",
            given.join(" and ")
        )));
    }
    Ok(if let Some(json) = &args.json {
        Some((
            serde_json::to_vec(json).unwrap_or_default(),
            Some("application/json"),
        ))
    } else if let Some(body) = &args.body {
        Some((
            body.as_deref().unwrap_or_default().as_bytes().to_vec(),
            None,
        ))
    } else if let Some(b64) = &args.body_base64 {
        Some((
            crate::actions::local::base64_decode(b64.as_deref().unwrap_or_default())?,
            None,
        ))
    } else if let Some(form) = &args.form {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in form.iter().flatten() {
            ser.append_pair(k, v);
        }
        Some((
            ser.finish().into_bytes(),
            Some("application/x-www-form-urlencoded"),
        ))
    } else {
        None
    })
}

/// What a timed-out call is told.
pub(super) fn timeout_hint() -> String {
    format!(
        "raise `timeout_ms` (a call without one waits `INFRA_HTTP_IDLE_TIMEOUT_MS`, {} s by default, for each answer and each part of a body), or check that the server answers",
        crate::ctx::HTTP_IDLE.as_secs()
    )
}

/// One network failure, told apart from a refusal and a timeout.
pub(super) fn transport_error(e: &ureq::Transport, url: &url::Url) -> ActionError {
    let text = e.to_string();
    if text.contains(guard::REFUSED) {
        let why = text
            .find(guard::REFUSED)
            .map_or(text.as_str(), |i| &text[i..])
            .to_owned();
        return ActionError::new(ErrorKind::Refused, format!("{url}: {why}"))
            .hint("nothing was sent; an operator can allow the range on a target");
    }
    if text.contains("timed out") || text.contains("WouldBlock") {
        return ActionError::new(ErrorKind::Timeout, format!("{url}: timed out"))
            .hint(timeout_hint());
    }
    if text.contains("certificate") || text.contains("handshake") {
        return ActionError::new(ErrorKind::TlsFailed, format!("{url}: {text}")).hint(
            "for a private CA, set `ca_file` on the target (a PEM file of the CA certificates)",
        );
    }
    let kind = match e.kind() {
        ureq::ErrorKind::Dns => ErrorKind::DnsFailed,
        ureq::ErrorKind::ConnectionFailed => ErrorKind::ConnectFailed,
        _ => ErrorKind::HttpFailed,
    };
    ActionError::new(kind, format!("{url}: {text}"))
}

pub(super) fn retryable_status(s: u16) -> bool {
    s == 408 || s == 429 || (500..600).contains(&s)
}

/// Seconds of a `Retry-After` answer (the number form), bounded.
pub(super) fn retry_after(resp: &ureq::Response) -> Option<Duration> {
    resp.header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(300)))
}

/// Sends one request and follows redirects, checking each hop; returns the last response and the hops.
pub(super) fn send(
    agent: &ureq::Agent,
    mut method: String,
    prepared: &Prepared,
    mut body: Option<Payload>,
    deadline: Option<Instant>,
) -> Result<(ureq::Response, url::Url, Vec<Value>), ActionError> {
    let mut url = prepared.url.clone();
    let mut headers = prepared.headers.clone();
    let origin = url.origin();
    let mut hops = Vec::new();
    loop {
        let mut req = agent.request_url(&method, &url);
        for (k, v) in &headers {
            req = req.set(k, v);
        }
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ActionError::new(
                    ErrorKind::Timeout,
                    format!("{url}: timed out"),
                ));
            }
            req = req.timeout(left);
        }
        let sent = match &body {
            Some((bytes, ctype)) => {
                if let Some(ct) = ctype
                    && !headers
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    req = req.set("Content-Type", ct);
                }
                req.send_bytes(bytes)
            }
            None => req.call(),
        };
        let resp = match sent {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(transport_error(&t, &url)),
        };
        let status = resp.status();
        let location = resp.header("location").map(str::to_owned);
        match (status, location) {
            (301 | 302 | 303 | 307 | 308, Some(loc)) => {
                if hops.len() >= MAX_REDIRECTS {
                    return Err(ActionError::new(
                        ErrorKind::TooManyRedirects,
                        format!("{url}: more than {MAX_REDIRECTS} redirects"),
                    ));
                }
                let next = url.join(&loc).map_err(|e| {
                    ActionError::new(
                        ErrorKind::HttpFailed,
                        format!("{url}: bad Location `{loc}`: {e}"),
                    )
                })?;
                if !matches!(next.scheme(), "http" | "https") {
                    return Err(ActionError::new(
                        ErrorKind::Refused,
                        format!(
                            "{url}: redirect to `{next}`: {}: scheme `{}` is not http or https",
                            guard::REFUSED,
                            next.scheme()
                        ),
                    ));
                }
                hops.push(json!({"status": status, "from": url.as_str(), "to": next.as_str()}));
                // drain what is left of the redirect's body so the connection can be reused
                let _ = std::io::copy(
                    &mut resp.into_reader().take(64 * 1024),
                    &mut std::io::sink(),
                );
                if status == 303
                    || ((status == 301 || status == 302) && method != "GET" && method != "HEAD")
                {
                    method = "GET".into();
                    body = None;
                }
                if next.origin() != origin {
                    // credentials are for the origin they were given for: the target's own headers
                    // and any credential header go no further
                    headers.retain(|(k, _)| {
                        !is_credential_header(k)
                            && !prepared
                                .target_headers
                                .iter()
                                .any(|t| t.eq_ignore_ascii_case(k))
                    });
                }
                url = next;
            }
            _ => return Ok((resp, url, hops)),
        }
    }
}

/// The body, read to its end or to `max_bytes`: the first `INLINE` bytes in memory, all of it in an
/// artifact (or a host file) past that.
pub(super) struct Body {
    pub(super) kept: Vec<u8>,
    pub(super) bytes: u64,
    pub(super) sha256: String,
    pub(super) artifact: Option<crate::record::artifacts::ArtifactRef>,
}

pub(super) fn read_body(
    call: &Call<'_>,
    resp: ureq::Response,
    max_bytes: u64,
    save_to: Option<&str>,
) -> Result<Body, ActionError> {
    let mut reader = resp.into_reader();
    let mut kept = Vec::new();
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut spill: Option<ArtifactWriter> = None;
    let mut file: Option<(std::fs::File, std::path::PathBuf)> = None;
    if let Some(path) = save_to {
        let tmp = crate::actions::temp_sibling(std::path::Path::new(path));
        let f = std::fs::File::create(&tmp).map_err(|e| {
            ActionError::new(ErrorKind::Failed, format!("cannot write `{path}`: {e}"))
        })?;
        file = Some((f, tmp));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let failed = |e: String, file: &Option<(std::fs::File, std::path::PathBuf)>| {
        if let Some((_, tmp)) = file {
            let _ = std::fs::remove_file(tmp);
        }
        e
    };
    loop {
        if call.cancel.is_cancelled() {
            return Err(ActionError::new(
                ErrorKind::Cancelled,
                failed("the request was cancelled".into(), &file),
            ));
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let kind = if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::HttpFailed
                };
                let err = ActionError::new(kind, failed(format!("reading the body: {e}"), &file));
                return Err(if kind == ErrorKind::Timeout {
                    err.hint(timeout_hint())
                } else {
                    err
                });
            }
        };
        let chunk = &buf[..n];
        bytes += n as u64;
        if bytes > max_bytes {
            return Err(ActionError::new(
                ErrorKind::TooLarge,
                failed(
                    format!("the response body is larger than `max_bytes` ({max_bytes})"),
                    &file,
                ),
            )
            .hint("raise `max_bytes`, or ask for less"));
        }
        hasher.update(chunk);
        if let Some((f, _)) = &mut file {
            f.write_all(chunk).map_err(|e| {
                ActionError::new(
                    ErrorKind::Failed,
                    failed(format!("writing the body: {e}"), &file),
                )
            })?;
        }
        if kept.len() < INLINE {
            let take = (INLINE - kept.len()).min(n);
            kept.extend_from_slice(&chunk[..take]);
        }
        if spill.is_none() && file.is_none() && bytes > INLINE as u64 {
            let mut w = ArtifactWriter::create(
                &call.dir,
                &call.uri_base,
                "body",
                call.host.redactor().clone(),
            )
            .map_err(|e| {
                ActionError::new(ErrorKind::Failed, format!("cannot make the artifact: {e}"))
            })?;
            // what was kept so far, then this chunk's rest
            let before = (bytes - n as u64) as usize;
            let w_res = w
                .write_all(&kept[..before.min(kept.len())])
                .and_then(|()| w.write_all(chunk));
            w_res.map_err(|e| {
                ActionError::new(ErrorKind::Failed, format!("writing the artifact: {e}"))
            })?;
            spill = Some(w);
        } else if let Some(w) = &mut spill {
            w.write_all(chunk).map_err(|e| {
                ActionError::new(ErrorKind::Failed, format!("writing the artifact: {e}"))
            })?;
        }
    }
    if let Some((f, tmp)) = file {
        let path = save_to.unwrap_or_default();
        f.sync_all()
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                ActionError::new(ErrorKind::Failed, format!("cannot write `{path}`: {e}"))
            })?;
    }
    let artifact = match spill {
        Some(w) => Some(w.finish().map_err(|e| {
            ActionError::new(ErrorKind::Failed, format!("writing the artifact: {e}"))
        })?),
        None => None,
    };
    Ok(Body {
        kept,
        bytes,
        sha256: dsl::analyze::hex(&hasher.finalize()),
        artifact,
    })
}
