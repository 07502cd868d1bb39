//! An in-process HTTP/1.1 test server on 127.0.0.1 (std only): a background accept thread and a
//! thread per connection, keep-alive (closing on `Connection: close`, and by default for HTTP/1.0),
//! `Content-Length` and chunked request bodies, `Expect: 100-continue`. Every request is recorded.
//!
//! Endpoints (the path decides, the query string tunes):
//!
//! | path | answer |
//! |------|--------|
//! | `/echo` (any method) | 200 JSON `{"method","path","query","headers":{name: value},"body"}` |
//! | `/headers` | 200 JSON `{"headers":{name: value}}` |
//! | `/json` | 200 JSON `{"ok":true,"items":[1,2,3]}` |
//! | `/status/<code>` | that status (200–599), body `status <code>` |
//! | `/slow?ms=N` | 200 `slow` after N ms (other connections are served meanwhile) |
//! | `/redirect?to=<url-encoded>&code=C` | C (default 302) with `Location: <to>` |
//! | `/redirect/chain/<n>` | 302 to `/redirect/chain/<n-1>`; `/redirect/chain/0` is 200 `end` |
//! | `/bytes/<n>` | 200, n bytes of `application/octet-stream`, byte i = `i % 251` ([`pattern`]), streamed |
//! | `/flaky/<key>?fail=N&status=S&retry_after=R` | the first N requests for `key` answer S (default 503, with `Retry-After: R` if given), later ones 200 `ok after N` |
//! | `/jsonl/<n>?bad=K&cut=B` | 200, n JSON Lines `{"id": i, "name": "row i", "note": …}` (i from 1; notes are hostile text); record K has `"id": "bad"`; with `cut`, only the first B bytes are sent (the full length announced) and the connection closes |
//! | `/array/<n>` | 200, the same n records as one pretty-printed JSON array (spaces and line breaks between tokens) |
//! | `/pages/<n>?style=S&limit=L` | n of those records in pages of L (default 10): `page` (`page=1…`), `offset` (`offset=0…`), `cursor` (`cursor=` the previous page's `next_cursor`), `link` (`page=` and a `Link: <…>; rel="next"` header); each page is `{"data": [...], "next_cursor": …}`, or the bare array with `bare=1` |
//! | `/accept/<key>?n=N` | the first N requests for `key` answer 200 `accepted`, later ones 500 |
//! | anything else | 404 |
//!
//! [`HttpServer::with`] puts a handler in front of these: what it answers wins, what it passes on
//! (`None`) gets the table above. The stand-ins of `forge.rs` are such handlers.
//!
//! Header names are lowercased (in [`Recorded`] and in the JSON); repeated headers are joined with
//! `, ` in the JSON. A malformed request gets a 400 and the connection is closed; neither that nor a
//! client going away affects other connections or the server.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request line or header line accepted.
const MAX_LINE: u64 = 64 * 1024;
/// Most header lines accepted in one request.
const MAX_HEADERS: usize = 200;
/// Largest request body accepted (kept in memory and recorded).
const MAX_BODY: u64 = 256 * 1024 * 1024;
/// Size of one write of a `/bytes` body: a multiple of 251, so every chunk starts the pattern afresh.
const CHUNK: usize = 251 * 256;
/// Step in which `/slow` sleeps, checking whether the server is stopping.
const SLOW_STEP: Duration = Duration::from_millis(10);

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Method as sent, e.g. `GET`.
    pub method: String,
    /// Request target as sent: path with query string, e.g. `/flaky/k?fail=2`.
    pub path: String,
    /// Headers in order, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Request body (decoded if it was chunked).
    pub body: Vec<u8>,
    /// Which connection it came on (numbered as accepted, from 0).
    pub connection: u64,
}

impl Recorded {
    /// Value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer from a [`Handler`]: a status and a JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub json: serde_json::Value,
}

impl Reply {
    pub fn new(status: u16, json: serde_json::Value) -> Reply {
        Reply { status, json }
    }
}

/// Answers some requests in place of the built-in endpoints; `None` passes the request on to them.
pub type Handler = dyn Fn(&Recorded) -> Option<Reply> + Send + Sync;

/// The handler of a server started with [`HttpServer::with`].
#[derive(Default)]
struct Hook(Option<Box<Handler>>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Hook(..)"
        } else {
            "Hook(none)"
        })
    }
}

/// A running test server; stopped on drop (accept loop ended, open connections shut down, every
/// thread joined).
#[derive(Debug)]
pub struct HttpServer {
    /// Port on 127.0.0.1 that the server listens on.
    pub port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// State shared by the accept thread, the connection threads and the [`HttpServer`] handle.
#[derive(Debug, Default)]
struct Shared {
    stopping: AtomicBool,
    requests: Mutex<Vec<Recorded>>,
    /// Requests seen so far per `/flaky/<key>`.
    flaky: Mutex<HashMap<String, u64>>,
    /// Open connections by id (clones, to shut them down on stop).
    open: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    hook: Hook,
}

impl HttpServer {
    /// Binds 127.0.0.1 on a port chosen by the kernel and serves in background threads.
    pub fn start() -> HttpServer {
        Self::serve(Shared::default())
    }

    /// Like [`HttpServer::start`], with `handler` asked first about every request.
    pub fn with(
        handler: impl Fn(&Recorded) -> Option<Reply> + Send + Sync + 'static,
    ) -> HttpServer {
        Self::serve(Shared {
            hook: Hook(Some(Box::new(handler))),
            ..Shared::default()
        })
    }

    fn serve(shared: Shared) -> HttpServer {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind http test server");
        let port = listener
            .local_addr()
            .expect("local addr of http test server")
            .port();
        let shared = Arc::new(shared);
        let accept = std::thread::Builder::new()
            .name(format!("http-test-{port}"))
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept_loop(&listener, &shared)
            })
            .expect("spawn http accept thread");
        HttpServer {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT/path` (a missing leading `/` is added).
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://127.0.0.1:{}{slash}{path}", self.port)
    }

    /// How many requests so far had a target (path with query) starting with `path_prefix`.
    pub fn hits(&self, path_prefix: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .count()
    }

    /// Every request received so far, in arrival order (recorded before it is answered).
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Ends the accept loop, shuts down open connections (also interrupting `/slow` and `/bytes`) and
    /// joins all threads. Idempotent; also on drop.
    pub fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); it sees the flag and returns.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        let _ = accept.join();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The byte at offset `i` of every `/bytes/<n>` body.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// The first `len` bytes of the `/bytes/<n>` pattern, to compare small bodies with.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64).map(pattern_byte).collect()
}

/// The guarded value, also after a panic elsewhere poisoned the lock.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Accepts until stopping, one thread per connection; then shuts down the connections still open and
/// joins their threads.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                if e.kind() != ErrorKind::Interrupted && e.kind() != ErrorKind::ConnectionAborted {
                    // E.g. out of file descriptors: back off instead of spinning.
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
        };
        workers.retain(|w| !w.is_finished());
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.open).insert(id, clone);
        }
        let spawned = std::thread::Builder::new()
            .name(format!("http-test-conn-{id}"))
            .spawn({
                let shared = Arc::clone(shared);
                move || {
                    serve_connection(stream, &shared, id);
                    lock(&shared.open).remove(&id);
                }
            });
        match spawned {
            Ok(w) => workers.push(w),
            Err(_) => {
                lock(&shared.open).remove(&id);
            }
        }
    }
    for (_, conn) in lock(&shared.open).drain() {
        let _ = conn.shutdown(Shutdown::Both);
    }
    for w in workers {
        let _ = w.join();
    }
}

/// A parsed request.
struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection stays open after this request's response.
    fn keep_alive(&self) -> bool {
        let connection = self.header("connection").map(str::to_ascii_lowercase);
        let has = |token: &str| {
            connection
                .as_deref()
                .is_some_and(|c| c.split(',').any(|t| t.trim() == token))
        };
        if self.version == "HTTP/1.0" {
            has("keep-alive")
        } else {
            !has("close")
        }
    }
}

/// Why reading a request stopped.
enum ReadError {
    /// The client closed (or reset) the connection, possibly between requests.
    Gone,
    /// A malformed request: answer 400 and close.
    Bad(String),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Gone
    }
}

/// Serves requests on one connection until it closes, a request asks for `Connection: close`, a
/// request is malformed or the server stops.
fn serve_connection(stream: TcpStream, shared: &Shared, connection: u64) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let req = match read_request(&mut reader, &mut writer) {
            Ok(Some(req)) => req,
            Ok(None) | Err(ReadError::Gone) => return,
            Err(ReadError::Bad(why)) => {
                let resp = Response::text(400, format!("bad request: {why}"));
                let _ = write_response(&mut writer, &resp, false, false);
                let _ = writer.shutdown(Shutdown::Write);
                return;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let recorded = Recorded {
            method: req.method.clone(),
            path: req.target.clone(),
            headers: req.headers.clone(),
            body: req.body.clone(),
            connection,
        };
        lock(&shared.requests).push(recorded.clone());
        let keep_alive = req.keep_alive();
        let hooked = shared.hook.0.as_ref().and_then(|h| h(&recorded));
        let resp = match hooked {
            Some(reply) => Response {
                status: reply.status,
                ..Response::json(&reply.json)
            },
            None => match respond(&req, shared) {
                Some(resp) => resp,
                None => return, // stopping during /slow
            },
        };
        let head_only = req.method.eq_ignore_ascii_case("HEAD");
        if write_response(&mut writer, &resp, keep_alive, head_only).is_err() || !keep_alive {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Reads one line ending in `\n` (at most [`MAX_LINE`] bytes) without it and a preceding `\r`.
/// `Ok(None)` at end of stream before any byte.
fn read_line(reader: &mut BufReader<TcpStream>) -> Result<Option<String>, ReadError> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return if n as u64 >= MAX_LINE {
            Err(ReadError::Bad("line too long".to_owned()))
        } else {
            Err(ReadError::Gone) // closed mid-line
        };
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| ReadError::Bad("line is not UTF-8".to_owned()))
}

/// Reads the next request; `Ok(None)` when the client closed the connection between requests.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> Result<Option<Request>, ReadError> {
    // Tolerate empty lines before a request line (RFC 9112 §2.2).
    let line = loop {
        match read_line(reader)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(format!("request line {line:?}")));
    };
    if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad(format!("request line {line:?}")));
    }

    let mut headers = Vec::new();
    loop {
        let Some(h) = read_line(reader)? else {
            return Err(ReadError::Gone);
        };
        if h.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ReadError::Bad("too many headers".to_owned()));
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(ReadError::Bad(format!("header line {h:?}")));
        };
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(ReadError::Bad(format!("header name {name:?}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut req = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
        body: Vec::new(),
    };

    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let length = match req.header("content-length") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ReadError::Bad(format!("content-length {v:?}")))?,
        ),
    };
    if length.is_some_and(|n| n > MAX_BODY) {
        return Err(ReadError::Bad("body too large".to_owned()));
    }
    let has_body = chunked || length.is_some_and(|n| n > 0);
    if has_body
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if chunked {
        req.body = read_chunked(reader)?;
    } else if let Some(n) = length {
        let mut body = Vec::new();
        reader.by_ref().take(n).read_to_end(&mut body)?;
        if body.len() as u64 != n {
            return Err(ReadError::Gone);
        }
        req.body = body;
    }
    Ok(Some(req))
}

/// Reads a chunked body (chunk extensions and trailers are ignored).
fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let Some(size_line) = read_line(reader)? else {
            return Err(ReadError::Gone);
        };
        let hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(hex, 16)
            .map_err(|_| ReadError::Bad(format!("chunk size {size_line:?}")))?;
        if size == 0 {
            // Trailers up to the empty line.
            loop {
                match read_line(reader)? {
                    None => return Err(ReadError::Gone),
                    Some(l) if l.is_empty() => return Ok(body),
                    Some(_) => {}
                }
            }
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err(ReadError::Bad("body too large".to_owned()));
        }
        let before = body.len();
        reader.by_ref().take(size).read_to_end(&mut body)?;
        if (body.len() - before) as u64 != size {
            return Err(ReadError::Gone);
        }
        match read_line(reader)? {
            Some(l) if l.is_empty() => {}
            Some(l) => return Err(ReadError::Bad(format!("after chunk: {l:?}"))),
            None => return Err(ReadError::Gone),
        }
    }
}

/// A response body: bytes in memory, or `n` bytes of [`pattern`] generated while writing.
enum Body {
    Bytes(Vec<u8>),
    Pattern(u64),
    /// Bytes of which only the first `.1` are sent, the whole length announced.
    Cut(Vec<u8>, u64),
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![(
                "Content-Type".to_owned(),
                "text/plain; charset=utf-8".to_owned(),
            )],
            body: Body::Bytes(body.into().into_bytes()),
        }
    }

    fn json(value: &serde_json::Value) -> Response {
        Response {
            status: 200,
            headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
            body: Body::Bytes(serde_json::to_vec(value).expect("serialize JSON response")),
        }
    }

    fn redirect(status: u16, location: &str) -> Response {
        let mut r = Response::text(status, format!("redirect to {location}"));
        r.headers.push(("Location".to_owned(), location.to_owned()));
        r
    }
}

/// Computes the answer to a request; `None` when the server started stopping during `/slow`.
fn respond(req: &Request, shared: &Shared) -> Option<Response> {
    let (path, query) = req
        .target
        .split_once('?')
        .unwrap_or((req.target.as_str(), ""));
    let params = parse_query(query);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let resp = match segments.as_slice() {
        ["echo"] => {
            let mut v = headers_json(req);
            let obj = v.as_object_mut().expect("headers_json returns an object");
            obj.insert("method".to_owned(), req.method.clone().into());
            obj.insert("path".to_owned(), path.into());
            obj.insert("query".to_owned(), query.into());
            obj.insert(
                "body".to_owned(),
                String::from_utf8_lossy(&req.body).into_owned().into(),
            );
            // Keys in the documented order.
            let ordered: serde_json::Map<String, serde_json::Value> =
                ["method", "path", "query", "headers", "body"]
                    .into_iter()
                    .filter_map(|k| obj.remove(k).map(|x| (k.to_owned(), x)))
                    .collect();
            Response::json(&serde_json::Value::Object(ordered))
        }
        ["headers"] => Response::json(&headers_json(req)),
        ["json"] => Response::json(&serde_json::json!({"ok": true, "items": [1, 2, 3]})),
        ["status", code] => match code.parse::<u16>() {
            Ok(c) if (200..=599).contains(&c) => Response::text(c, format!("status {c}")),
            _ => Response::text(400, format!("bad status {code:?}")),
        },
        ["slow"] => {
            let ms = param("ms").and_then(|m| m.parse::<u64>().ok()).unwrap_or(0);
            let until = Instant::now() + Duration::from_millis(ms);
            loop {
                if shared.stopping.load(Ordering::SeqCst) {
                    return None;
                }
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(SLOW_STEP));
            }
            Response::text(200, "slow")
        }
        ["redirect"] => {
            let code = param("code").map_or(Ok(302), str::parse::<u16>);
            match (param("to"), code) {
                (Some(to), Ok(code)) if (300..=399).contains(&code) => Response::redirect(code, to),
                _ => Response::text(400, "redirect needs to=<url> and a 3xx code"),
            }
        }
        ["redirect", "chain", n] => match n.parse::<u64>() {
            Ok(0) => Response::text(200, "end"),
            Ok(n) => Response::redirect(302, &format!("/redirect/chain/{}", n - 1)),
            Err(_) => Response::text(400, format!("bad chain length {n:?}")),
        },
        ["bytes", n] => match n.parse::<u64>() {
            Ok(n) => Response {
                status: 200,
                headers: vec![(
                    "Content-Type".to_owned(),
                    "application/octet-stream".to_owned(),
                )],
                body: Body::Pattern(n),
            },
            Err(_) => Response::text(400, format!("bad length {n:?}")),
        },
        ["jsonl", n] => match n.parse::<u64>() {
            Ok(n) => {
                let bad = param("bad").and_then(|b| b.parse::<u64>().ok());
                let body = jsonl(n, bad);
                let body = match param("cut").and_then(|c| c.parse::<u64>().ok()) {
                    Some(c) => Body::Cut(body, c),
                    None => Body::Bytes(body),
                };
                Response {
                    status: 200,
                    headers: vec![("Content-Type".to_owned(), "application/x-ndjson".to_owned())],
                    body,
                }
            }
            Err(_) => Response::text(400, format!("bad count {n:?}")),
        },
        ["array", n] => match n.parse::<u64>() {
            Ok(n) => {
                let mut body = b"[\n".to_vec();
                for i in 1..=n {
                    if i > 1 {
                        body.extend_from_slice(b" ,\n");
                    }
                    let pretty = serde_json::to_string_pretty(&record(i, false)).expect("json");
                    body.extend_from_slice(pretty.as_bytes());
                }
                body.extend_from_slice(b"\n]\n");
                Response {
                    status: 200,
                    headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
                    body: Body::Bytes(body),
                }
            }
            Err(_) => Response::text(400, format!("bad count {n:?}")),
        },
        ["pages", n] => match n.parse::<u64>() {
            Ok(n) => pages(n, &params),
            Err(_) => Response::text(400, format!("bad count {n:?}")),
        },
        ["accept", key] => {
            let n = param("n").and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            let seen = {
                let mut counters = lock(&shared.flaky);
                let count = counters.entry(format!("accept/{key}")).or_insert(0);
                *count += 1;
                *count
            };
            if seen <= n {
                Response::text(200, "accepted")
            } else {
                Response::text(500, format!("refused request {seen}"))
            }
        }
        ["flaky", key] => {
            let fail = param("fail")
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
            let status = param("status")
                .and_then(|s| s.parse::<u16>().ok())
                .filter(|s| (200..=599).contains(s))
                .unwrap_or(503);
            let seen = {
                let mut counters = lock(&shared.flaky);
                let count = counters.entry((*key).to_owned()).or_insert(0);
                *count += 1;
                *count
            };
            if seen <= fail {
                let mut r = Response::text(status, format!("flaky {seen}/{fail}"));
                if let Some(after) = param("retry_after") {
                    r.headers.push(("Retry-After".to_owned(), after.to_owned()));
                }
                r
            } else {
                Response::text(200, format!("ok after {fail}"))
            }
        }
        _ => Response::text(404, format!("not found: {path}")),
    };
    Some(resp)
}

/// One page of `/pages/<n>` (see the endpoint table).
fn pages(n: u64, params: &[(String, String)]) -> Response {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let style = param("style").unwrap_or("page");
    let limit = param("limit")
        .and_then(|l| l.parse::<u64>().ok())
        .unwrap_or(10)
        .max(1);
    let num = |k: &str, d: u64| param(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(d);
    let start = match style {
        "page" | "link" => (num("page", 1).max(1) - 1) * limit,
        "offset" => num("offset", 0),
        "cursor" => param("cursor")
            .and_then(|c| c.strip_prefix("at-"))
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0),
        _ => return Response::text(400, format!("bad style {style:?}")),
    };
    let end = (start + limit).min(n);
    let items: Vec<serde_json::Value> = (start + 1..=end).map(|i| record(i, false)).collect();
    let more = end < n;
    let body = if param("bare") == Some("1") {
        serde_json::Value::Array(items)
    } else {
        serde_json::json!({
            "data": items,
            "next_cursor": if more { serde_json::Value::from(format!("at-{end}")) } else { serde_json::Value::Null },
        })
    };
    let mut r = Response::json(&body);
    if style == "link" && more {
        let next = format!(
            "/pages/{n}?style=link&limit={limit}&page={}",
            start / limit + 2
        );
        r.headers
            .push(("Link".to_owned(), format!("<{next}>; rel=\"next\"")));
    }
    r
}

/// Notes of the `/jsonl` records, in turn.
pub const JSONL_NOTES: &[&str] = &[
    "plain",
    "'; DROP TABLE t; --",
    "comma, \"quote\" and\nnewline",
    "\\.",
    "tab\there \\ back",
    "",
    "😀 ünï",
];

/// Record `i` of `/jsonl` (see the endpoint table); with `bad`, a non-numeric id.
pub fn record(i: u64, bad: bool) -> serde_json::Value {
    let note = JSONL_NOTES[(i % JSONL_NOTES.len() as u64) as usize];
    let id = if bad {
        serde_json::Value::from("bad")
    } else {
        serde_json::Value::from(i)
    };
    serde_json::json!({"id": id, "name": format!("row {i}"), "note": note})
}

/// `n` JSON Lines records (see the endpoint table); record `bad` has a non-numeric id.
pub fn jsonl(n: u64, bad: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize * 48);
    for i in 1..=n {
        out.extend_from_slice(record(i, Some(i) == bad).to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// `{"headers": {name: value}}`, repeated names joined with `, `.
fn headers_json(req: &Request) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (name, value) in &req.headers {
        match map.get_mut(name) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(value);
            }
            _ => {
                map.insert(name.clone(), value.clone().into());
            }
        }
    }
    serde_json::json!({ "headers": map })
}

/// `a=1&b=x%20y` as decoded pairs (`+` is a space; a key without `=` has an empty value).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept as they are, invalid UTF-8 replaced.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_digit(b[i + 1]), hex_digit(b[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Value of an ASCII hex digit.
fn hex_digit(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).map(|d| d as u8)
}

/// Standard reason phrase of a status code (`Status` for the unusual ones).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Writes status line, headers (`Content-Length` and, unless `keep_alive`, `Connection: close`) and
/// the body (none for HEAD, 204 and 304). `/bytes` bodies are written in [`CHUNK`]-sized pieces.
fn write_response(
    w: &mut TcpStream,
    resp: &Response,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let no_body = matches!(resp.status, 204 | 304);
    let len = match &resp.body {
        Body::Bytes(b) | Body::Cut(b, _) => b.len() as u64,
        Body::Pattern(n) => *n,
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (name, value) in &resp.headers {
        write!(head, "{name}: {value}\r\n").expect("format response header");
    }
    if !no_body {
        write!(head, "Content-Length: {len}\r\n").expect("format response header");
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if head_only || no_body {
        return w.flush();
    }
    match &resp.body {
        Body::Bytes(b) => w.write_all(b)?,
        Body::Cut(b, cut) => {
            w.write_all(&b[..(*cut as usize).min(b.len())])?;
            w.flush()?;
            let _ = w.shutdown(Shutdown::Both);
            return Err(io::Error::other("cut short on purpose"));
        }
        Body::Pattern(n) => {
            let chunk = pattern(CHUNK);
            let mut left = *n;
            while left > 0 {
                let take = left.min(CHUNK as u64) as usize;
                w.write_all(&chunk[..take])?;
                left -= take as u64;
            }
        }
    }
    w.flush()
}
