//! `http`: requests and health checks, through the egress guard. Redirects are followed here, one
//! hop at a time, so every hop's address is checked again; idempotent requests are retried on
//! connect errors, 408, 429 and 5xx, honouring `Retry-After`; bodies stream into the result up to a
//! budget and into an artifact past it.
//!
//! `Agents` keeps one ureq agent per egress policy and trusted `ca_file` (kept-alive connections,
//! redirects off, native-tls with a target's private CA added to the system's), and one more for
//! calls without a deadline, whose reads and writes each wait at most `Config::http_idle`. ureq 2
//! is used for its stable `Resolver` hook (the guard resolves and checks the addresses ureq
//! connects to) and native-tls for one TLS stack shared with ssh2. `prepare` builds the URL (or a
//! target's `base_url` + `path`), query, headers and credentials from `Vars`, registered with the
//! redactor; a target's headers and credentials are dropped unless the URL has its `base_url`'s
//! origin, and a call's own credential variable must be one a target of the URL's origin names.
//! `request` retries with a doubling delay bounded by the deadline; `timeout_ms` bounds each
//! attempt's connection and transfer through ureq's overall timeout; without one, a server silent
//! for `http_idle` ends the call (`timeout`). A cancel is seen between body chunks and retries, not
//! during connect or while waiting for headers. `save_to` (a host file) needs
//! `INFRA_UNSAFE_LOCAL=1`.

pub mod guard;
mod open;
mod pages;
mod transfer;

use crate::error::ErrorKind;
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ActionError, ActionSpec, Call, ToolSpec, args_schema};
use crate::record::artifacts::ArtifactWriter;
pub use crate::targets::{Basic, HttpTarget};
use dsl::Effect;
use guard::Policy;
pub(crate) use open::{Get, Put, get_stream, send_batches, send_stream};
pub use pages::Paginate;

/// Walks a paginated GET for a pipeline (`pages::walk`).
pub(crate) fn walk_pages(
    call: &Call<'_>,
    at: Get<'_>,
    p: &Paginate,
    each: &mut dyn FnMut(Vec<Value>) -> Result<(), ActionError>,
) -> Result<pages::Walked, ActionError> {
    pages::walk(call, at.endpoint(), p, each)
}
use transfer::{body_of, read_body, retry_after, retryable_status, send};

/// Retries of idempotent requests.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all (1 = no retry).
    #[schemars(range(min = 1, max = 10))]
    pub attempts: Option<u32>,
    /// First delay, doubled after each attempt (default 200); a `Retry-After` answer wins.
    #[schemars(range(min = 0))]
    pub delay_ms: Option<u64>,
}

/// Expected status: one code or a list.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Expect {
    One(u16),
    Any(Vec<u16>),
}

/// Names and values in the order given (headers, query parameters, form fields).
pub type Pairs = IndexMap<String, String>;

/// A field that counts as given even when it is `null` (`Some(null)`), as opposed to left out (`None`,
/// by `#[serde(default)]`): a given body, `basic` or `save_to` matters even when it is `null` (an empty
/// body is sent, the target's `basic` is not used, a host path needs INFRA_UNSAFE_LOCAL=1).
/// (`#[schemars(skip_serializing_if)]` on such a field keeps a `"default": null` out of its schema.)
fn given<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Send an HTTP request: `url`, or a target's `base_url` with `path`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestArgs {
    /// GET (default), HEAD, POST, PUT, PATCH, DELETE or OPTIONS.
    #[schemars(regex(pattern = r"^(?i)(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$"))]
    pub method: Option<String>,
    /// An absolute http(s) URL.
    pub url: Option<String>,
    /// A target with an `http` section; `path` is joined to its `base_url`.
    pub target: Option<String>,
    pub path: Option<String>,
    /// Request headers.
    pub headers: Option<Pairs>,
    /// Query parameters, added to the URL.
    pub query: Option<Pairs>,
    /// A JSON body (sent with `Content-Type: application/json`).
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<Value>", skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// A text body.
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<String>", skip_serializing_if = "Option::is_none")]
    pub body: Option<Option<String>>,
    /// A binary body, base64.
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<String>", skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<Option<String>>,
    /// A form body (`application/x-www-form-urlencoded`).
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<Pairs>", skip_serializing_if = "Option::is_none")]
    pub form: Option<Option<Pairs>>,
    /// The environment variable holding a bearer token (`token_env` is the same): one a target of
    /// the URL's origin names (any other needs `INFRA_ALLOW_SECRET_EXPORT=1`).
    pub bearer_env: Option<String>,
    pub token_env: Option<String>,
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<Basic>", skip_serializing_if = "Option::is_none")]
    pub basic: Option<Option<Basic>>,
    pub retry: Option<Retry>,
    /// Status codes that count as success (default: below 400).
    pub expect_status: Option<Expect>,
    /// The largest response body accepted (default 256 MiB); a larger one fails the call.
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
    /// Write the body to this file on the infra host (needs INFRA_UNSAFE_LOCAL=1).
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<String>", skip_serializing_if = "Option::is_none")]
    pub save_to: Option<Option<String>>,
    /// GET every page of a list API (page, offset, cursor or Link styles); the items are gathered.
    pub paginate: Option<Paginate>,
}

/// Download a GET's body whole into an artifact, or a host file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadArgs {
    pub url: Option<String>,
    pub target: Option<String>,
    pub path: Option<String>,
    pub headers: Option<Pairs>,
    pub query: Option<Pairs>,
    pub bearer_env: Option<String>,
    pub token_env: Option<String>,
    /// The artifact's file name (default: the URL's last segment).
    pub name: Option<String>,
    /// Write to this file on the infra host instead (needs INFRA_UNSAFE_LOCAL=1).
    pub save_to: Option<String>,
    /// The largest body accepted (default 4 GiB).
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
}

/// Check an endpoint: status (and optionally the body), with the latency.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckArgs {
    pub url: Option<String>,
    pub target: Option<String>,
    pub path: Option<String>,
    pub headers: Option<Pairs>,
    /// Status codes that count as healthy (default 200–399).
    pub expect_status: Option<Expect>,
    /// Text the body must contain.
    pub body_contains: Option<String>,
    pub bearer_env: Option<String>,
    pub token_env: Option<String>,
}

fn method_of(args: &Map<String, Value>) -> Option<String> {
    match args.get("method") {
        None => Some("GET".into()),
        Some(Value::String(m)) => Some(m.to_ascii_uppercase()),
        _ => None,
    }
}

/// GET, HEAD and OPTIONS only read.
fn classify_request(args: &Map<String, Value>) -> Option<Effect> {
    let m = method_of(args)?;
    Some(match m.as_str() {
        "GET" | "HEAD" | "OPTIONS" => Effect::Read,
        "DELETE" => Effect::Destructive,
        _ => Effect::Write,
    })
}

/// Headers that carry credentials: their values are masked before the call is recorded.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
];

/// Words in a header's name that say it carries a credential (`DD-API-KEY`, `X-Goog-Api-Key`,
/// `apikey`, `Ocp-Apim-Subscription-Key`, `X-Session-Id`, `X-Signature`, …).
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "key",
    "auth",
    "session",
    "signature",
    "password",
    "credential",
];

/// Whether a header of this name carries a credential (any case): masked when recorded, and not sent
/// on after a redirect to another origin.
fn is_credential_header(name: &str) -> bool {
    let k = name.to_ascii_lowercase();
    SECRET_HEADERS.contains(&k.as_str()) || SECRET_WORDS.iter().any(|w| k.contains(w))
}

pub(crate) fn header_secrets(args: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    // a password in the URL (`https://user:pw@host/`), as written and decoded
    if let Some(pw) = args
        .get("url")
        .and_then(Value::as_str)
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.password().map(str::to_owned))
    {
        out.push(String::from_utf8_lossy(&crate::ctx::percent_decoded(&pw)).into_owned());
        out.push(pw);
    }
    if let Some(h) = args.get("headers").and_then(Value::as_object) {
        for (k, v) in h {
            if is_credential_header(k)
                && let Some(v) = v.as_str()
            {
                out.push(v.to_owned());
                // the credential without its scheme (`Bearer …`, `Basic …`)
                if let Some((_, cred)) = v.split_once(' ') {
                    out.push(cred.trim().to_owned());
                }
            }
        }
    }
    out
}

pub(super) fn tool() -> ToolSpec {
    let request_desc = "Sends an HTTP request (url, or a target's base_url + path) through the egress guard; retries idempotent requests; JSON bodies parsed; large bodies in an artifact.";
    let check_desc =
        "Checks an endpoint: status, latency and optionally a text in the body. Read-only.";
    let download_desc = "Downloads a body into an artifact (or a host file: save_to, INFRA_UNSAFE_LOCAL=1), streamed, with its SHA-256; a failed one leaves nothing.";
    ToolSpec {
        name: "http",
        title: "HTTP",
        description: "HTTP requests and checks. Link-local and cloud metadata addresses are refused unless a target allows them; redirects are checked hop by hop.",
        aliases: &["mcp_api_client", "api"],
        open_world: true,
        actions: vec![
            ActionSpec {
                tool: "http",
                name: "request",
                title: "Send an HTTP request",
                description: request_desc,
                effect: Effect::Destructive,
                unsafe_local: false,
                schema_fn: || {
                    args_schema::<RequestArgs>(
                        "http",
                        "request",
                        "Sends an HTTP request (url, or a target's base_url + path) through the egress guard; retries idempotent requests; JSON bodies parsed; large bodies in an artifact.",
                    )
                },
                modes: super::no_modes,
                classify: Some(classify_request),
                secret_args: Some(header_secrets),
                example: || json!({"action": "request", "method": "GET", "url": "https://example.com/health"}),
            },
            ActionSpec {
                tool: "http",
                name: "download",
                title: "Download a body",
                description: download_desc,
                effect: Effect::Write,
                unsafe_local: false,
                schema_fn: || {
                    args_schema::<DownloadArgs>(
                        "http",
                        "download",
                        "Downloads a body into an artifact (or a host file: save_to, INFRA_UNSAFE_LOCAL=1), streamed, with its SHA-256; a failed one leaves nothing.",
                    )
                },
                modes: super::no_modes,
                classify: Some(classify_download),
                secret_args: Some(header_secrets),
                example: || json!({"action": "download", "url": "https://example.com/releases/app.tar.gz"}),
            },
            ActionSpec {
                tool: "http",
                name: "check",
                title: "Check an endpoint",
                description: check_desc,
                effect: Effect::Read,
                unsafe_local: false,
                schema_fn: || {
                    args_schema::<CheckArgs>(
                        "http",
                        "check",
                        "Checks an endpoint: status, latency and optionally a text in the body. Read-only.",
                    )
                },
                modes: super::no_modes,
                classify: None,
                secret_args: Some(header_secrets),
                example: || json!({"action": "check", "url": "https://example.com/health", "expect_status": 200}),
            },
        ],
    }
}

/// Agents by guard policy, trusted CA file and whether connections are kept, shared by every call of
/// an engine (so connections are kept alive).
#[derive(Debug, Default)]
pub struct Agents {
    by_policy: Mutex<HashMap<AgentKey, ureq::Agent>>,
}

/// An agent's guard policy, trusted CA file, and idle timeout (`None`: connections kept alive).
type AgentKey = (Policy, Option<std::path::PathBuf>, Option<Duration>);

impl Agents {
    /// The agent for a policy and CA. `idle`: the call has no deadline, so every read and write waits
    /// at most this long, on a connection of its own. A kept-alive connection would not do: ureq 2
    /// sets the idle timeout when it connects and clears it when the connection goes back to its
    /// pool, so a reused one would wait for an answer for ever.
    fn get(
        &self,
        policy: Policy,
        ca_file: Option<&std::path::Path>,
        idle: Option<Duration>,
    ) -> Result<ureq::Agent, ActionError> {
        let key = (policy, ca_file.map(std::path::Path::to_path_buf), idle);
        let mut m = self.by_policy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = m.get(&key) {
            return Ok(a.clone());
        }
        let mut builder = native_tls::TlsConnector::builder();
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                ActionError::new(
                    ErrorKind::InvalidConfig,
                    format!("cannot read `ca_file` {}: {e}", path.display()),
                )
            })?;
            let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| {
                ActionError::new(
                    ErrorKind::InvalidConfig,
                    format!("`ca_file` {} is not a PEM certificate: {e}", path.display()),
                )
            })?;
            builder.add_root_certificate(cert);
        }
        let tls = builder
            .build()
            .map_err(|e| ActionError::new(ErrorKind::Failed, format!("TLS setup failed: {e}")))?;
        let mut agent = ureq::AgentBuilder::new()
            .redirects(0)
            .resolver(guard::Guarded(policy))
            .tls_connector(Arc::new(tls))
            .timeout_connect(Duration::from_secs(10))
            .user_agent(concat!("infra/", env!("CARGO_PKG_VERSION")));
        if let Some(idle) = idle {
            agent = agent
                .timeout_read(idle)
                .timeout_write(idle)
                .max_idle_connections(0);
        }
        let agent = agent.build();
        m.insert(key, agent.clone());
        Ok(agent)
    }
}

/// Bytes of a body kept in the result; the whole body is in an artifact past this.
const INLINE: usize = 64 * 1024;
const DEFAULT_MAX: u64 = 256 * 1024 * 1024;
const MAX_REDIRECTS: usize = 10;

/// What a call resolved to: the URL, the target's settings and the credentials.
#[derive(Clone)]
struct Prepared {
    url: url::Url,
    headers: Vec<(String, String)>,
    policy: Policy,
    ca_file: Option<std::path::PathBuf>,
    /// Whose credentials go with the request: `target`, `call`, `none`, or `withheld` (the target's
    /// were left out because the URL is not the target's origin).
    credentials: &'static str,
    /// Names of the headers that came from the target: dropped with `Authorization` and `Cookie` when
    /// a redirect leaves the origin.
    target_headers: Vec<String>,
}

fn invalid(msg: impl Into<String>) -> ActionError {
    ActionError::new(ErrorKind::InvalidArgs, msg)
}

/// Refuses to send `var`, named by a call, to `url` unless a target that names it is an HTTP one of
/// `url`'s origin (`actions::call_credential`).
fn credential_stays_home(call: &Call<'_>, var: &str, url: &url::Url) -> Result<(), ActionError> {
    let origin = url.origin();
    super::call_credential(
        call.host.config(),
        var,
        &origin.ascii_serialization(),
        |t| {
            t.http
                .as_ref()
                .and_then(|h| h.base_url.as_deref())
                .and_then(|b| url::Url::parse(b).ok())
                .is_some_and(|b| b.origin() == origin)
        },
        |name| format!("call with `target: {name}` (and a `path`)"),
    )
}

fn env_secret(call: &Call<'_>, var: &str, what: &str) -> Result<String, ActionError> {
    super::credential(call.host.config(), call.host.redactor(), var, what)
}

/// Where a request goes and with which credentials: what `prepare` reads of the `request` and `check`
/// arguments.
#[derive(Debug, Clone, Copy)]
struct Endpoint<'a> {
    url: Option<&'a str>,
    target: Option<&'a str>,
    path: Option<&'a str>,
    headers: Option<&'a Pairs>,
    query: Option<&'a Pairs>,
    /// `bearer_env`, else `token_env`.
    bearer_env: Option<&'a str>,
    /// `basic` as given (`Some(None)`: given as `null`).
    basic: Option<Option<&'a Basic>>,
}

impl RequestArgs {
    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            url: self.url.as_deref(),
            target: self.target.as_deref(),
            path: self.path.as_deref(),
            headers: self.headers.as_ref(),
            query: self.query.as_ref(),
            bearer_env: self.bearer_env.as_deref().or(self.token_env.as_deref()),
            basic: self.basic.as_ref().map(Option::as_ref),
        }
    }
}

impl DownloadArgs {
    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            url: self.url.as_deref(),
            target: self.target.as_deref(),
            path: self.path.as_deref(),
            headers: self.headers.as_ref(),
            query: self.query.as_ref(),
            bearer_env: self.bearer_env.as_deref().or(self.token_env.as_deref()),
            basic: None,
        }
    }
}

/// A download that writes a host file writes; one into an artifact only reads.
fn classify_download(args: &Map<String, Value>) -> Option<Effect> {
    Some(match args.get("save_to") {
        None | Some(Value::Null) => Effect::Read,
        _ => Effect::Write,
    })
}

impl CheckArgs {
    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            url: self.url.as_deref(),
            target: self.target.as_deref(),
            path: self.path.as_deref(),
            headers: self.headers.as_ref(),
            query: None,
            bearer_env: self.bearer_env.as_deref().or(self.token_env.as_deref()),
            basic: None,
        }
    }
}

fn prepare(call: &Call<'_>, at: Endpoint<'_>) -> Result<Prepared, ActionError> {
    let mut target = HttpTarget::default();
    if let Some(name) = at.target {
        let dir = &call.host.config().profiles_dir;
        let targets = crate::targets::Targets::load_checked(dir)?;
        let t = targets.find(name, dir)?;
        target = t.http.clone().ok_or_else(|| {
            ActionError::new(
                ErrorKind::InvalidConfig,
                format!("target `{name}` has no `http` section"),
            )
            .hint("add `http: {base_url: …}` to the target")
        })?;
    }
    let url_text = match (at.url, &target.base_url) {
        (Some(u), _) => u.to_owned(),
        (None, Some(base)) => {
            let path = at.path.unwrap_or("");
            format!(
                "{}/{}",
                base.trim_end_matches('/'),
                path.trim_start_matches('/')
            )
        }
        (None, None) => {
            return Err(invalid(
                "give `url`, or `target` (with a base_url) and `path`",
            ));
        }
    };
    let mut url = url::Url::parse(&url_text)
        .map_err(|e| invalid(format!("`{url_text}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ActionError::new(
            ErrorKind::Refused,
            format!(
                "{}: scheme `{}` is not http or https",
                guard::REFUSED,
                url.scheme()
            ),
        ));
    }
    if let Some(q) = at.query {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in q {
            pairs.append_pair(k, v);
        }
    }
    // a target's headers and credentials belong to its own origin (scheme, host, port of base_url)
    let target_has_credentials = !target.headers.is_empty()
        || target.bearer_env.is_some()
        || target.token_env.is_some()
        || target.basic.is_some();
    let own_origin = target
        .base_url
        .as_deref()
        .and_then(|b| url::Url::parse(b).ok())
        .is_some_and(|b| b.origin() == url.origin());
    let withheld = target_has_credentials && !own_origin;
    if withheld {
        target.headers.clear();
        target.bearer_env = None;
        target.token_env = None;
        target.basic = None;
    }
    let mut headers: Vec<(String, String)> = target
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let target_headers: Vec<String> = target.headers.keys().cloned().collect();
    if let Some(h) = at.headers {
        for (k, v) in h {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
            headers.push((k.clone(), v.clone()));
        }
    }
    // a variable a target names is that target's credential: it goes only to its own origin
    for var in at
        .bearer_env
        .into_iter()
        .chain(at.basic.flatten().map(|b| b.password_env.as_str()))
    {
        credential_stays_home(call, var, &url)?;
    }
    let call_bearer = at.bearer_env.map(str::to_owned);
    let credentials = if withheld {
        "withheld"
    } else if call_bearer.is_some() || at.basic.is_some() {
        "call"
    } else if target_has_credentials {
        "target"
    } else {
        "none"
    };
    // with credentials, the virtual host is the URL's: a `Host` of the call's could hand them to
    // another site behind the same address (a shared proxy or ingress)
    if matches!(credentials, "target" | "call")
        && at
            .headers
            .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("host")))
    {
        return Err(ActionError::new(
            ErrorKind::Refused,
            format!(
                "a `Host` header with credentials attached: they go only to {}",
                url.host_str().unwrap_or_default()
            ),
        )
        .hint("put the host in `url`, or leave `Host` out"));
    }
    let bearer = call_bearer.or_else(|| target.bearer_env.clone().or(target.token_env.clone()));
    let basic: Option<Basic> = match at.basic {
        Some(b) => b.cloned(),
        None => target.basic.clone(),
    };
    if let Some(var) = bearer {
        let token = env_secret(call, &var, "bearer token")?;
        headers.push(("Authorization".into(), format!("Bearer {token}")));
    } else if let Some(b) = basic {
        let pw = env_secret(call, &b.password_env, "password")?;
        let encoded =
            crate::record::redact::base64_padded(format!("{}:{pw}", b.username).as_bytes());
        call.host.redactor().add(&encoded);
        headers.push(("Authorization".into(), format!("Basic {encoded}")));
    }
    Ok(Prepared {
        url,
        headers,
        ca_file: target
            .ca_file
            .as_deref()
            .map(|p| call.host.config().expand_home(p)),
        policy: Policy {
            allow_link_local: target.allow_link_local.unwrap_or(false),
            deny_loopback: target.deny_loopback.unwrap_or(false),
            deny_private: target.deny_private.unwrap_or(false)
                || call.host.config().http_deny_private,
        },
        credentials,
        target_headers,
    })
}

/// A call's endpoint prepared (`prepare`) and the agent for its egress policy and CA: the pooled one
/// when the call has a deadline, else one that waits at most `Config::http_idle` for each read or
/// write, on fresh connections.
fn connect(call: &Call<'_>, at: Endpoint<'_>) -> Result<(Prepared, ureq::Agent), ActionError> {
    connect_as(call, at, call.deadline.is_some())
}

/// The deadline of one bounded request (a page of a walk, a batch of a sink) on the pooled agent:
/// the call's, else `Config::http_idle` from now.
fn bounded_deadline(call: &Call<'_>) -> Instant {
    call.deadline
        .unwrap_or_else(|| Instant::now() + call.host.config().http_idle)
}

/// [`connect`], with the pooled agent when `pooled` (the caller then gives every request a deadline:
/// `bounded_deadline`).
fn connect_as(
    call: &Call<'_>,
    at: Endpoint<'_>,
    pooled: bool,
) -> Result<(Prepared, ureq::Agent), ActionError> {
    let prepared = prepare(call, at)?;
    let idle = (!pooled).then(|| call.host.config().http_idle);
    let agent = call
        .host
        .pools()
        .http
        .get(prepared.policy, prepared.ca_file.as_deref(), idle)?;
    Ok((prepared, agent))
}

fn expected(expect: Option<&Expect>, status: u16, default: fn(u16) -> bool) -> bool {
    match expect {
        Some(Expect::One(s)) => *s == status,
        Some(Expect::Any(a)) => a.contains(&status),
        None => default(status),
    }
}

fn headers_json(resp: &ureq::Response) -> Value {
    let mut m = Map::new();
    for name in resp.headers_names() {
        if let Some(v) = resp.header(&name) {
            m.insert(name.to_ascii_lowercase(), v.into());
        }
    }
    Value::Object(m)
}

/// A paginated GET: every page's items gathered, up to `max_bytes` of them.
fn paginated(call: &Call<'_>, args: &RequestArgs, p: &Paginate) -> Result<Value, ActionError> {
    let method = args.method.as_deref().unwrap_or("GET");
    if !method.eq_ignore_ascii_case("GET") || body_of(args)?.is_some() || args.save_to.is_some() {
        return Err(invalid(
            "`paginate` walks GET pages: leave out `method` (or give GET), bodies and `save_to`",
        ));
    }
    let started = Instant::now();
    let max = args.max_bytes.unwrap_or(DEFAULT_MAX);
    let (mut items, mut bytes) = (Vec::new(), 0u64);
    let walked = pages::walk(call, args.endpoint(), p, &mut |page| {
        for item in page {
            bytes += serde_json::to_vec(&item).map_or(0, |v| v.len() as u64);
            if bytes > max {
                return Err(ActionError::new(
                    ErrorKind::TooLarge,
                    format!("the pages' items are over `max_bytes` ({max} bytes)"),
                )
                .hint(
                    "raise `max_bytes`, or move them with `pipeline` (http source with `paginate`)",
                ));
            }
            items.push(item);
        }
        Ok(())
    })?;
    Ok(json!({
        "method": "GET",
        "pages": walked.pages,
        "count": walked.items,
        "complete": walked.complete,
        "items": items,
        "duration_ms": started.elapsed().as_millis() as u64,
        "artifacts": [],
        "ok": true,
    }))
}

fn request(call: &Call<'_>) -> Result<Value, ActionError> {
    let args: RequestArgs = call.parse()?;
    if let Some(p) = &args.paginate {
        return paginated(call, &args, p);
    }
    if args.save_to.is_some() && !call.host.config().unsafe_local {
        return Err(ActionError::new(
            ErrorKind::Refused,
            "`save_to` names a path on the infra host, which needs INFRA_UNSAFE_LOCAL=1",
        )
        .hint("leave it out: a large body goes to an artifact"));
    }
    let started = Instant::now();
    let method = args
        .method
        .as_deref()
        .map_or_else(|| "GET".into(), str::to_ascii_uppercase);
    let (prepared, agent) = connect(call, args.endpoint())?;
    let body = body_of(&args)?;

    let idempotent = matches!(
        method.as_str(),
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS"
    );
    let retry = args.retry.as_ref();
    let attempts = retry.and_then(|r| r.attempts).unwrap_or(1).clamp(1, 10);
    let mut delay = Duration::from_millis(retry.and_then(|r| r.delay_ms).unwrap_or(200));
    let mut attempt = 0u32;
    let mut waited = Vec::new();
    let (resp, url, hops) = loop {
        attempt += 1;
        let last = attempt >= attempts || !idempotent;
        let wait = match send(
            &agent,
            method.clone(),
            &prepared,
            body.clone(),
            call.deadline,
        ) {
            Ok((resp, url, hops)) => {
                if last || !retryable_status(resp.status()) {
                    break (resp, url, hops);
                }
                let w = retry_after(&resp).unwrap_or(delay);
                let _ = std::io::copy(
                    &mut resp.into_reader().take(64 * 1024),
                    &mut std::io::sink(),
                );
                w
            }
            Err(e)
                if !last && matches!(e.kind, ErrorKind::ConnectFailed | ErrorKind::HttpFailed) =>
            {
                delay
            }
            Err(e) => return Err(e),
        };
        if call.deadline.is_some_and(|d| Instant::now() + wait >= d) {
            return Err(ActionError::new(
                ErrorKind::Timeout,
                format!(
                    "{}: no success before the timeout ({attempt} attempts)",
                    prepared.url
                ),
            ));
        }
        waited.push(wait.as_millis() as u64);
        if !call.cancel.sleep(wait) {
            return Err(ActionError::new(
                ErrorKind::Cancelled,
                "the request was cancelled",
            ));
        }
        delay = delay.saturating_mul(2);
    };
    let status = resp.status();
    let content_type = resp.header("content-type").unwrap_or("").to_owned();
    let headers = headers_json(&resp);
    let max = args.max_bytes.unwrap_or(DEFAULT_MAX);
    let save_to = args.save_to.as_ref().and_then(Option::as_deref);
    let b = read_body(call, resp, max, save_to).inspect_err(|_| {
        // nothing half-written is left behind
        let _ = std::fs::remove_file(call.dir.join("body"));
    })?;
    let mut out = json!({
        "method": method,
        "url": url.as_str(),
        "credentials": prepared.credentials,
        "status": status,
        "headers": headers,
        "attempts": attempt,
        "duration_ms": started.elapsed().as_millis() as u64,
        "body_bytes": b.bytes,
        "body_sha256": b.sha256,
        "body_truncated": b.bytes > b.kept.len() as u64,
    });
    if !hops.is_empty() {
        out["redirects"] = Value::Array(hops);
    }
    if !waited.is_empty() {
        out["retry_waits_ms"] = json!(waited);
    }
    let whole = b.bytes == b.kept.len() as u64;
    if whole
        && content_type.contains("json")
        && let Ok(v) = serde_json::from_slice::<Value>(&b.kept)
    {
        out["json"] = v;
    }
    match save_to {
        None => out["body"] = String::from_utf8_lossy(&b.kept).into_owned().into(),
        Some(p) => out["saved_to"] = p.into(),
    }
    match &b.artifact {
        Some(a) => {
            out["body_uri"] = a.uri.clone().into();
            out["artifacts"] = json!([a.to_json()]);
        }
        None => out["artifacts"] = json!([]),
    }
    let ok = expected(args.expect_status.as_ref(), status, |s| s < 400);
    out["ok"] = ok.into();
    if ok {
        Ok(out)
    } else {
        Err(ActionError::new(
            ErrorKind::UnexpectedStatus,
            format!("{url} answered {status}"),
        )
        .hint("see `body`; set `expect_status` if this status is expected")
        .with_result(out))
    }
}

fn check(call: &Call<'_>) -> Result<Value, ActionError> {
    let args: CheckArgs = call.parse()?;
    let started = Instant::now();
    let (prepared, agent) = connect(call, args.endpoint())?;

    let (resp, url, hops) = send(&agent, "GET".into(), &prepared, None, call.deadline)?;
    let status = resp.status();
    let latency = started.elapsed().as_millis() as u64;
    let b = read_body(call, resp, 16 * 1024 * 1024, None)?;
    let status_ok = expected(args.expect_status.as_ref(), status, |s| {
        (200..400).contains(&s)
    });
    let matched = args
        .body_contains
        .as_deref()
        .map(|needle| String::from_utf8_lossy(&b.kept).contains(needle));
    let ok = status_ok && matched != Some(false);
    let out = json!({
        "url": url.as_str(),
        "credentials": prepared.credentials,
        "status": status,
        "latency_ms": latency,
        "redirects": hops.len(),
        "body_bytes": b.bytes,
        "matched": matched,
        "ok": ok,
    });
    if ok {
        Ok(out)
    } else {
        let why = if status_ok {
            "the body does not contain `body_contains`".to_owned()
        } else {
            format!("status {status} is not the expected one")
        };
        Err(ActionError::new(ErrorKind::CheckFailed, format!("{url}: {why}")).with_result(out))
    }
}

pub(super) fn invoke(action: &str, call: &Call<'_>) -> Result<Value, ActionError> {
    match action {
        "request" => request(call),
        "download" => open::download(call),
        "check" => check(call),
        other => Err(ActionError::new(
            ErrorKind::NotAvailable,
            format!("http has no action `{other}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_sets_the_effect() {
        let m = |v: Value| v.as_object().cloned().expect("object");
        assert_eq!(classify_request(&m(json!({}))), Some(Effect::Read));
        assert_eq!(
            classify_request(&m(json!({"method": "head"}))),
            Some(Effect::Read)
        );
        assert_eq!(
            classify_request(&m(json!({"method": "POST"}))),
            Some(Effect::Write)
        );
        assert_eq!(
            classify_request(&m(json!({"method": "DELETE"}))),
            Some(Effect::Destructive)
        );
        // a templated method is unknown until rendered
        assert_eq!(classify_request(&m(json!({"method": null}))), None);
    }

    #[test]
    fn examples_parse_into_their_types() {
        use crate::actions::parse_args;
        crate::actions::examples_parse(tool(), |action, args| match action {
            "request" => parse_args::<RequestArgs>(args).map(drop),
            "download" => parse_args::<DownloadArgs>(args).map(drop),
            "check" => parse_args::<CheckArgs>(args).map(drop),
            other => panic!("no argument type for http.{other}"),
        });
        let m = |v: Value| v.as_object().cloned().expect("object");
        // a field given as `null` is told from one left out; maps keep their order
        let r: RequestArgs = parse_args(&m(json!({"action": "request", "timeout_ms": 5,
            "json": null, "basic": null, "save_to": null, "query": {"z": "1", "a": "2"},
            "expect_status": [200, 204]})))
        .expect("parses");
        assert_eq!(r.json, Some(Value::Null));
        assert!(matches!(r.basic, Some(None)) && r.save_to == Some(None));
        assert!(r.body.is_none() && r.form.is_none() && r.body_base64.is_none());
        let keys: Vec<&str> = r.query.iter().flatten().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a"]);
        assert!(expected(r.expect_status.as_ref(), 204, |_| false));
        assert!(!expected(r.expect_status.as_ref(), 201, |_| true));
        assert_eq!(
            body_of(&r).expect("one body"),
            Some((b"null".to_vec(), Some("application/json")))
        );
        let two = m(json!({"action": "request", "body": null, "form": {"a": "1"}}));
        let e = body_of(&parse_args(&two).expect("parses")).expect_err("two bodies");
        assert_eq!(e.message, "give one body, not body and form");
        let e = parse_args::<CheckArgs>(&m(json!({"action": "check", "method": "GET"})))
            .expect_err("unknown field");
        assert_eq!(e.kind, ErrorKind::InvalidArgs);
        assert!(e.message.contains("method"), "{}", e.message);
    }
}
