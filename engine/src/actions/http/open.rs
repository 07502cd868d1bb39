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
