//! Paginated GETs: the pages of a list API fetched one after another, each page's items handed on
//! as they come (a pipeline writes them as JSON Lines; `request` gathers them into its result).
//!
//! Styles: `page` (a page number in `param`, from `start`, default 1), `offset` (an offset in
//! `param`, from `start`, default 0, advanced by the items a page held), `cursor` (the value at the
//! `cursor` JSON pointer of a page, sent in `param`), and `link` (the URL of the `Link` header's
//! `rel="next"`, which must keep the first URL's origin, so credentials never go elsewhere). `size`
//! (in `size_param`) asks for that many items a page. The items of a page are the page itself when
//! it is an array, else the array at the `items` JSON pointer. It stops at an empty page, a page
//! shorter than `size`, a missing or repeated cursor, or no next link; past `max_pages` (default
//! 100, at most 10,000) it says so (`complete: false`) and a pipeline fails with nothing written. A
//! page is at most 64 MiB, and has the call's deadline, else `Config::http_idle` from its request:
//! pages share kept-alive connections.

use std::io::Read;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{Endpoint, bounded_deadline, connect_as, send};
use crate::actions::{ActionError, Call};
use crate::error::ErrorKind;

/// The largest page read.
const MAX_PAGE: u64 = 64 * 1024 * 1024;

/// How to walk a paginated list.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Paginate {
    /// `page`, `offset`, `cursor` or `link`.
    #[schemars(regex(pattern = "^(page|offset|cursor|link)$"))]
    pub style: String,
    /// The query parameter of the page, offset or cursor (default: the style's name).
    pub param: Option<String>,
    /// Items asked for per page, sent in `size_param` (default `limit`).
    #[schemars(range(min = 1))]
    pub size: Option<u64>,
    pub size_param: Option<String>,
    /// The first page number (default 1) or offset (default 0).
    pub start: Option<u64>,
    /// JSON pointer to a page's items (default: the page, an array).
    pub items: Option<String>,
    /// JSON pointer to the next cursor in a page (`cursor` style; default `/next_cursor`).
    pub cursor: Option<String>,
    /// Most pages fetched (default 100).
    #[schemars(range(min = 1, max = 10000))]
    pub max_pages: Option<u32>,
}

/// What a walk did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Walked {
    pub pages: u64,
    pub items: u64,
    /// False when `max_pages` stopped it with pages left.
    pub complete: bool,
}

/// `url` with the query parameter `name` set to `value` (replacing any).
fn with_param(url: &url::Url, name: &str, value: &str) -> url::Url {
    let mut u = url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        q.append_pair(name, value);
    }
    u
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().to_ascii_lowercase();
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| target.trim().trim_start_matches('<').trim_end_matches('>'))
    })
}

/// Walks the pages of `at`, handing each page's items to `each`.
pub(crate) fn walk(
    call: &Call<'_>,
    at: Endpoint<'_>,
    p: &Paginate,
    each: &mut dyn FnMut(Vec<Value>) -> Result<(), ActionError>,
) -> Result<Walked, ActionError> {
    let invalid = |m: String| ActionError::new(ErrorKind::InvalidArgs, m);
    let style = p.style.as_str();
    if !matches!(style, "page" | "offset" | "cursor" | "link") {
        return Err(invalid(format!(
            "`paginate.style` `{style}` is not one of page, offset, cursor, link"
        )));
    }
    for ptr in [&p.items, &p.cursor].into_iter().flatten() {
        if !ptr.is_empty() && !ptr.starts_with('/') {
            return Err(invalid(format!(
                "`{ptr}` is not a JSON pointer: it starts with `/` (e.g. `/data`)"
            )));
        }
    }
    // pages are bounded, so each has a deadline (the call's, else `http_idle` from its request) and
    // they share kept-alive connections
    let (prepared, agent) = connect_as(call, at, true)?;
    let param = p.param.clone().unwrap_or_else(|| style.to_owned());
    let max_pages = u64::from(p.max_pages.unwrap_or(100).clamp(1, 10_000));
    let mut base = prepared.url.clone();
    if let Some(size) = p.size {
        base = with_param(
            &base,
            p.size_param.as_deref().unwrap_or("limit"),
            &size.to_string(),
        );
    }
    let origin = base.origin();
    let mut walked = Walked::default();
    let mut number = p.start.unwrap_or(if style == "page" { 1 } else { 0 });
    let mut cursor: Option<String> = None;
    let mut next: Option<url::Url> = Some(match style {
        "page" | "offset" => with_param(&base, &param, &number.to_string()),
        _ => base.clone(),
    });
    while let Some(url) = next.take() {
        if walked.pages >= max_pages {
            return Ok(walked);
        }
        if call.cancel.is_cancelled() {
            return Err(ActionError::new(ErrorKind::Cancelled, "cancelled"));
        }
        let mut page_at = prepared.clone();
        page_at.url = url;
        let deadline = bounded_deadline(call);
        let (resp, url, _) = send(&agent, "GET".into(), &page_at, None, Some(deadline))?;
        let status = resp.status();
        let link = resp.header("link").map(str::to_owned);
        if status >= 400 {
            return Err(ActionError::new(
                ErrorKind::UnexpectedStatus,
                format!("{url} answered {status} (page {})", walked.pages + 1),
            ));
        }
        let mut body = Vec::new();
        resp.into_reader()
            .take(MAX_PAGE + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                let timed_out = matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                );
                let kind = if timed_out {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::HttpFailed
                };
                ActionError::new(kind, format!("{url}: reading a page: {e}"))
            })?;
        if body.len() as u64 > MAX_PAGE {
            return Err(ActionError::new(
                ErrorKind::TooLarge,
                format!("{url}: a page is over {MAX_PAGE} bytes"),
            ));
        }
        let page: Value = serde_json::from_slice(&body).map_err(|e| {
            ActionError::new(
                ErrorKind::HttpFailed,
                format!("{url}: page {} is not JSON: {e}", walked.pages + 1),
            )
        })?;
        let items = match p.items.as_deref() {
            None | Some("") => page.as_array().cloned(),
            Some(ptr) => page.pointer(ptr).and_then(Value::as_array).cloned(),
        }
        .ok_or_else(|| {
            ActionError::new(
                ErrorKind::HttpFailed,
                format!(
                    "{url}: page {} has no array at `{}`",
                    walked.pages + 1,
                    p.items.as_deref().unwrap_or("")
                ),
            )
            .hint("set `paginate.items` to the JSON pointer of the items, e.g. `/data`")
        })?;
        let n = items.len() as u64;
        walked.pages += 1;
        walked.items += n;
        let cursor_now = (style == "cursor")
            .then(|| {
                page.pointer(p.cursor.as_deref().unwrap_or("/next_cursor"))
                    .and_then(|c| match c {
                        Value::String(s) if !s.is_empty() => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
            })
            .flatten();
        each(items)?;
        let short = n == 0 || p.size.is_some_and(|s| n < s);
        next = match style {
            "page" if !short => {
                number += 1;
                Some(with_param(&base, &param, &number.to_string()))
            }
            "offset" if !short => {
                number += n;
                Some(with_param(&base, &param, &number.to_string()))
            }
            "cursor" => match cursor_now {
                Some(c) if n > 0 && cursor.as_deref() != Some(c.as_str()) => {
                    let u = with_param(&base, &param, &c);
                    cursor = Some(c);
                    Some(u)
                }
                _ => None,
            },
            "link" => match link.as_deref().and_then(next_link) {
                Some(l) => {
                    let u = url.join(l).map_err(|e| {
                        ActionError::new(
                            ErrorKind::HttpFailed,
                            format!("{url}: bad next link `{l}`: {e}"),
                        )
                    })?;
                    if u.origin() != origin {
                        return Err(ActionError::new(
                            ErrorKind::Refused,
                            format!(
                                "{url}: the next page `{u}` is on another origin; it is not followed"
                            ),
                        ));
                    }
                    Some(u)
                }
                None => None,
            },
            _ => None,
        };
    }
    walked.complete = true;
    Ok(walked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_param_is_replaced_not_repeated() {
        let u = url::Url::parse("http://h/x?page=3&q=a%20b").expect("url");
        let v = with_param(&u, "page", "4");
        assert_eq!(v.as_str(), "http://h/x?q=a+b&page=4");
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let h = r#"<http://h/x?page=1>; rel="prev", <http://h/x?page=3>; rel="next"; title="n""#;
        assert_eq!(next_link(h), Some("http://h/x?page=3"));
        assert_eq!(next_link(r#"<http://h/x?page=1>; rel="last""#), None);
        assert_eq!(next_link("</p2>; rel=next"), Some("/p2"));
    }
}
