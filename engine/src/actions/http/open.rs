//! A GET whose body is streamed to a pipeline: the URL (or a target's `base_url` + `path`) and
//! credentials prepared as for `request`, through the egress guard, redirects checked hop by hop;
//! a status of 400 or more is an error before any byte is passed on.

use std::io::Read;

use super::{Endpoint, Pairs, bounded_deadline, connect, connect_as, send};
use crate::actions::{ActionError, Call};
use crate::error::ErrorKind;

/// Where a streamed GET goes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Get<'a> {
    pub url: Option<&'a str>,
    pub target: Option<&'a str>,
    pub path: Option<&'a str>,
    pub headers: Option<&'a Pairs>,
}

impl Get<'_> {
    pub(super) fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            url: self.url,
            target: self.target,
            path: self.path,
            headers: self.headers,
            query: None,
            bearer_env: None,
            basic: None,
        }
    }
}

/// The body of a GET, as a reader; the final URL beside it.
pub(crate) fn get_stream(
    call: &Call<'_>,
    at: Get<'_>,
) -> Result<(Box<dyn Read + Send>, String), ActionError> {
    let (prepared, agent) = connect(call, at.endpoint())?;
    let (resp, url, _) = send(&agent, "GET".into(), &prepared, None, call.deadline)?;
    let status = resp.status();
    if status >= 400 {
        return Err(ActionError::new(
            ErrorKind::UnexpectedStatus,
            format!("{url} answered {status}; nothing was read"),
        ));
    }
    Ok((Box::new(resp.into_reader()), url.to_string()))
}

/// Where a streamed upload goes, and how.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Put<'a> {
    pub url: Option<&'a str>,
    pub target: Option<&'a str>,
    pub path: Option<&'a str>,
    pub headers: Option<&'a Pairs>,
    /// `POST` or `PUT`.
    pub method: &'a str,
}

impl Put<'_> {
    /// The prepared endpoint and its agent (`connect_as`): pooled when `pooled`.
    fn prepared(
        &self,
        call: &Call<'_>,
        pooled: bool,
    ) -> Result<(super::Prepared, ureq::Agent), ActionError> {
        let at = Get {
            url: self.url,
            target: self.target,
            path: self.path,
            headers: self.headers,
        };
        connect_as(call, at.endpoint(), pooled)
    }
}

/// The first KiB of an answer's body, for an error.
fn snippet(resp: ureq::Response) -> String {
    let mut b = Vec::new();
    let _ = resp.into_reader().take(1024).read_to_end(&mut b);
    String::from_utf8_lossy(&b).into_owned()
}

/// A refusal by the server: its status and the start of its body.
fn refused(url: &str, status: u16, body: &str) -> ActionError {
    ActionError::new(
        ErrorKind::UnexpectedStatus,
        format!("{url} answered {status}: {}", body.trim()),
    )
}

/// Sends `body` as one request (chunked, streamed as it is read; no redirect is followed, since a
/// stream cannot be sent twice). A body that fails while it is read aborts the request, so the
/// server never sees it end. Answers the status and the final URL.
pub(crate) fn send_stream(
    call: &Call<'_>,
    at: Put<'_>,
    content_type: &str,
    body: &mut dyn Read,
) -> Result<(u16, String), ActionError> {
    let (prepared, agent) = at.prepared(call, call.deadline.is_some())?;
    let url = prepared.url.clone();
    let mut req = agent.request_url(at.method, &url);
    let mut typed = false;
    for (k, v) in &prepared.headers {
        typed |= k.eq_ignore_ascii_case("content-type");
        req = req.set(k, v);
    }
    if !typed {
        req = req.set("Content-Type", content_type);
    }
    if let Some(d) = call.deadline {
        req = req.timeout(d.saturating_duration_since(std::time::Instant::now()));
    }
    let resp = match req.send(body) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Err(super::transfer::transport_error(&t, &url)),
    };
    let status = resp.status();
    if status >= 300 {
        let body = snippet(resp);
        return Err(refused(url.as_str(), status, &body));
    }
    let _ = std::io::copy(
        &mut resp.into_reader().take(64 * 1024),
        &mut std::io::sink(),
    );
    Ok((status, url.to_string()))
}

/// Sends JSON batches (each one request, redirects checked as for `request`), one after another on
/// kept-alive connections, each within the call's deadline or `http_idle`; `next` gives each batch's
/// bytes until it answers `None`. Answers the batches sent, or the error
/// with how many were accepted before it.
pub(crate) fn send_batches(
    call: &Call<'_>,
    at: Put<'_>,
    next: &mut dyn FnMut() -> Result<Option<(Vec<u8>, u64)>, ActionError>,
) -> Result<(u64, String), ActionError> {
    // batches are bounded, so each has a deadline (the call's, else `http_idle` from its request)
    // and they share kept-alive connections
    let (prepared, agent) = at.prepared(call, true)?;
    let mut sent = 0u64;
    let mut records = 0u64;
    while let Some((bytes, n)) = next()? {
        if call.cancel.is_cancelled() {
            return Err(ActionError::new(ErrorKind::Cancelled, "cancelled"));
        }
        let accepted = |e: ActionError| {
            let mut e = e;
            e.message = format!(
                "batch {} (records {}–{}) failed: {}; the {sent} batch(es) before it ({records} records) were accepted and an HTTP sink cannot take them back",
                sent + 1,
                records + 1,
                records + n,
                e.message
            );
            e.with_result(
                serde_json::json!({"batches_accepted": sent, "records_accepted": records}),
            )
        };
        let (resp, url, _) = send(
            &agent,
            at.method.to_owned(),
            &prepared,
            Some((bytes, Some("application/json"))),
            Some(bounded_deadline(call)),
        )
        .map_err(accepted)?;
        let status = resp.status();
        if status >= 300 {
            let body = snippet(resp);
            return Err(accepted(refused(url.as_str(), status, &body)));
        }
        let _ = std::io::copy(
            &mut resp.into_reader().take(64 * 1024),
            &mut std::io::sink(),
        );
        sent += 1;
        records += n;
    }
    Ok((sent, prepared.url.to_string()))
}

/// The default `max_bytes` of a download.
const DOWNLOAD_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// `http download`: a GET's body streamed whole into an artifact (or a host file, written beside it
/// and renamed), with its size and SHA-256; a failed download leaves nothing behind.
pub(super) fn download(call: &Call<'_>) -> Result<serde_json::Value, ActionError> {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    let args: super::DownloadArgs = call.parse()?;
    if args.save_to.is_some() && !call.host.config().unsafe_local {
        return Err(ActionError::new(
            ErrorKind::Refused,
            "`save_to` names a path on the infra host, which needs INFRA_UNSAFE_LOCAL=1",
        )
        .hint("leave it out: the body goes to an artifact"));
    }
    let started = std::time::Instant::now();
    let (prepared, agent) = connect(call, args.endpoint())?;
    let name = match args.name.as_deref() {
        Some(n) => n.to_owned(),
        None => prepared
            .url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|s| !s.is_empty())
            .map_or_else(|| "download".to_owned(), str::to_owned),
    };
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            format!("`name` `{name}` must be a plain file name"),
        ));
    }
    let (resp, url, _) = send(&agent, "GET".into(), &prepared, None, call.deadline)?;
    let status = resp.status();
    if status >= 400 {
        let body = snippet(resp);
        return Err(refused(url.as_str(), status, &body).hint("nothing was written"));
    }
    let max = args.max_bytes.unwrap_or(DOWNLOAD_MAX);
    let io = |e: std::io::Error| ActionError::new(ErrorKind::Failed, format!("writing: {e}"));
    enum To {
        Artifact(crate::record::artifacts::ArtifactWriter),
        File(std::fs::File, std::path::PathBuf),
    }
    let mut to = match &args.save_to {
        None => To::Artifact(
            crate::record::artifacts::ArtifactWriter::create(
                &call.dir,
                &call.uri_base,
                &name,
                call.host.redactor().clone(),
            )
            .map_err(io)?,
        ),
        Some(p) => {
            let tmp = crate::actions::temp_sibling(std::path::Path::new(p));
            To::File(std::fs::File::create(&tmp).map_err(io)?, tmp)
        }
    };
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let copied = (|| loop {
        if call.cancel.is_cancelled() {
            return Err(ActionError::new(
                ErrorKind::Cancelled,
                "the download was cancelled",
            ));
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ActionError::new(
                    ErrorKind::HttpFailed,
                    format!("{url}: reading the body: {e}"),
                ));
            }
        };
        bytes += n as u64;
        if bytes > max {
            return Err(ActionError::new(
                ErrorKind::TooLarge,
                format!("the body is larger than `max_bytes` ({max})"),
            )
            .hint("raise `max_bytes`"));
        }
        hasher.update(&buf[..n]);
        match &mut to {
            To::Artifact(w) => w.write_all(&buf[..n]).map_err(io)?,
            To::File(f, _) => f.write_all(&buf[..n]).map_err(io)?,
        }
    })();
    let sha256 = dsl::analyze::hex(&hasher.finalize());
    let mut out = serde_json::json!({
        "url": url.as_str(), "status": status, "bytes": bytes, "sha256": sha256,
        "duration_ms": started.elapsed().as_millis() as u64, "ok": true,
    });
    match (to, copied) {
        (To::Artifact(w), Ok(())) => {
            let a = w.finish().map_err(io)?;
            out["uri"] = a.uri.clone().into();
            out["artifacts"] = serde_json::json!([a.to_json()]);
            Ok(out)
        }
        (To::File(f, tmp), Ok(())) => {
            let path = args.save_to.as_deref().unwrap_or_default();
            let done = f
                .sync_all()
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(io);
            if let Err(e) = done {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            out["saved_to"] = path.into();
            out["artifacts"] = serde_json::json!([]);
            Ok(out)
        }
        (To::Artifact(w), Err(e)) => {
            drop(w);
            let _ = std::fs::remove_file(call.dir.join(&name));
            Err(e)
        }
        (To::File(f, tmp), Err(e)) => {
            drop(f);
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
