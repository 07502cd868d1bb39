//! A GET whose body is streamed to a pipeline: the URL (or a target's `base_url` + `path`) and
//! credentials prepared as for `request`, through the egress guard, redirects checked hop by hop;
//! a status of 400 or more is an error before any byte is passed on.

use std::io::Read;

use super::{Endpoint, Pairs, prepare, send};
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

/// The body of a GET, as a reader; the final URL beside it.
pub(crate) fn get_stream(
    call: &Call<'_>,
    at: Get<'_>,
) -> Result<(Box<dyn Read + Send>, String), ActionError> {
    let prepared = prepare(
        call,
        Endpoint {
            url: at.url,
            target: at.target,
            path: at.path,
            headers: at.headers,
            query: None,
            bearer_env: None,
            basic: None,
        },
    )?;
    let agent = call
        .host
        .pools()
        .http
        .get(prepared.policy, prepared.ca_file.as_deref())?;
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
    fn prepared(&self, call: &Call<'_>) -> Result<(super::Prepared, ureq::Agent), ActionError> {
        let prepared = prepare(
            call,
            Endpoint {
                url: self.url,
                target: self.target,
                path: self.path,
                headers: self.headers,
                query: None,
                bearer_env: None,
                basic: None,
            },
        )?;
        let agent = call
            .host
            .pools()
            .http
            .get(prepared.policy, prepared.ca_file.as_deref())?;
        Ok((prepared, agent))
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
    let (prepared, agent) = at.prepared(call)?;
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

/// Sends JSON batches (each one request, redirects checked as for `request`), one after another;
/// `next` gives each batch's bytes until it answers `None`. Answers the batches sent, or the error
/// with how many were accepted before it.
pub(crate) fn send_batches(
    call: &Call<'_>,
    at: Put<'_>,
    next: &mut dyn FnMut() -> Result<Option<(Vec<u8>, u64)>, ActionError>,
) -> Result<(u64, String), ActionError> {
    let (prepared, agent) = at.prepared(call)?;
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
            call.deadline,
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
