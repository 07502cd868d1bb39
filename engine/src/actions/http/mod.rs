//! `http`: requests and health checks, through the egress guard. Redirects are followed here, one
//! hop at a time, so every hop's address is checked again; idempotent requests are retried on
//! connect errors, 408, 429 and 5xx, honouring `Retry-After`; bodies stream into the result up to a
//! budget and into an artifact past it.
//!
//! `Agents` keeps one ureq agent per egress policy and trusted `ca_file` (kept-alive connections,
//! redirects off, native-tls with a target's private CA added to the system's). ureq 2 is used for
//! its stable `Resolver` hook (the guard resolves and checks the addresses ureq connects to) and
//! native-tls for one TLS stack shared with ssh2. `prepare` builds the URL (or a target's
//! `base_url` + `path`), query, headers and credentials from `Vars`, registered with the redactor;
//! a target's headers and credentials are dropped unless the URL has its `base_url`'s origin.
//! `request` retries with a doubling delay bounded by the deadline; `timeout_ms` bounds each
//! attempt's connection and transfer through ureq's overall timeout, and a cancel is seen between
//! body chunks and retries, not during connect or while waiting for headers. `save_to` (a host
//! file) needs `INFRA_UNSAFE_LOCAL=1`.

pub mod guard;
mod transfer;

use crate::error::ErrorKind;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ActionError, ActionSpec, Call, ToolSpec, args_schema};
use crate::record::artifacts::ArtifactWriter;
pub use crate::targets::{Basic, HttpTarget};
use dsl::Effect;
use guard::Policy;
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
    pub headers: Option<BTreeMap<String, String>>,
    /// Query parameters, added to the URL.
    pub query: Option<BTreeMap<String, String>>,
    /// A JSON body (sent with `Content-Type: application/json`).
    pub json: Option<Value>,
    /// A text body.
    pub body: Option<String>,
    /// A binary body, base64.
    pub body_base64: Option<String>,
    /// A form body (`application/x-www-form-urlencoded`).
    pub form: Option<BTreeMap<String, String>>,
    /// The environment variable holding a bearer token (`token_env` is the same).
    pub bearer_env: Option<String>,
    pub token_env: Option<String>,
    pub basic: Option<Basic>,
    pub retry: Option<Retry>,
    /// Status codes that count as success (default: below 400).
    pub expect_status: Option<Expect>,
    /// The largest response body accepted (default 256 MiB); a larger one fails the call.
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
    /// Write the body to this file on the infra host (needs INFRA_UNSAFE_LOCAL=1).
    pub save_to: Option<String>,
}

/// Check an endpoint: status (and optionally the body), with the latency.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckArgs {
    pub url: Option<String>,
    pub target: Option<String>,
    pub path: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
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

/// Whether a header of this name carries a credential (any case).
fn is_credential_header(name: &str) -> bool {
    let k = name.to_ascii_lowercase();
    SECRET_HEADERS.contains(&k.as_str()) || k.contains("token") || k.contains("secret")
}

fn header_secrets(args: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
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

/// Agents by guard policy and trusted CA file, shared by every call of an engine (so connections are
/// kept alive).
#[derive(Debug, Default)]
pub struct Agents {
    by_policy: Mutex<HashMap<(Policy, Option<std::path::PathBuf>), ureq::Agent>>,
}

impl Agents {
    fn get(
        &self,
        policy: Policy,
        ca_file: Option<&std::path::Path>,
    ) -> Result<ureq::Agent, ActionError> {
        let key = (policy, ca_file.map(std::path::Path::to_path_buf));
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
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .resolver(guard::Guarded(policy))
            .tls_connector(Arc::new(tls))
            .timeout_connect(Duration::from_secs(10))
            .user_agent(concat!("infra/", env!("CARGO_PKG_VERSION")))
            .build();
        m.insert(key, agent.clone());
        Ok(agent)
    }
}

/// Bytes of a body kept in the result; the whole body is in an artifact past this.
const INLINE: usize = 64 * 1024;
const DEFAULT_MAX: u64 = 256 * 1024 * 1024;
const MAX_REDIRECTS: usize = 10;

/// What a call resolved to: the URL, the target's settings and the credentials.
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

fn env_secret(call: &Call<'_>, var: &str, what: &str) -> Result<String, ActionError> {
    super::credential(call.host.config(), call.host.redactor(), var, what)
}

fn prepare(call: &Call<'_>) -> Result<Prepared, ActionError> {
    let a = call.args;
    let mut target = HttpTarget::default();
    if let Some(name) = call.str_arg("target") {
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
    let url_text = match (call.str_arg("url"), &target.base_url) {
        (Some(u), _) => u.to_owned(),
        (None, Some(base)) => {
            let path = call.str_arg("path").unwrap_or("");
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
    if let Some(q) = a.get("query").and_then(Value::as_object) {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in q {
            pairs.append_pair(k, v.as_str().unwrap_or_default());
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
    if let Some(h) = a.get("headers").and_then(Value::as_object) {
        for (k, v) in h {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
            headers.push((k.clone(), v.as_str().unwrap_or_default().to_owned()));
        }
    }
    let call_bearer = call
        .str_arg("bearer_env")
        .or_else(|| call.str_arg("token_env"))
        .map(str::to_owned);
    let credentials = if withheld {
        "withheld"
    } else if call_bearer.is_some() || a.contains_key("basic") {
        "call"
    } else if target_has_credentials {
        "target"
    } else {
        "none"
    };
    let bearer = call_bearer.or_else(|| target.bearer_env.clone().or(target.token_env.clone()));
    let basic: Option<Basic> = match a.get("basic") {
        Some(b) => serde_json::from_value(b.clone()).ok(),
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

fn expected(expect: Option<&Value>, status: u16, default: fn(u16) -> bool) -> bool {
    match expect {
        Some(Value::Number(n)) => n.as_u64() == Some(u64::from(status)),
        Some(Value::Array(a)) => a.iter().any(|v| v.as_u64() == Some(u64::from(status))),
        _ => default(status),
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

fn request(call: &Call<'_>) -> Result<Value, ActionError> {
    if call.args.contains_key("save_to") && !call.host.config().unsafe_local {
        return Err(ActionError::new(
            ErrorKind::Refused,
            "`save_to` names a path on the infra host, which needs INFRA_UNSAFE_LOCAL=1",
        )
        .hint("leave it out: a large body goes to an artifact"));
    }
    let started = Instant::now();
    let method = method_of(call.args).unwrap_or_else(|| "GET".into());
    let prepared = prepare(call)?;
    let body = body_of(call)?;
    let agent = call
        .host
        .pools()
        .http
        .get(prepared.policy, prepared.ca_file.as_deref())?;
    let idempotent = matches!(
        method.as_str(),
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS"
    );
    let retry = call.args.get("retry");
    let attempts = retry
        .and_then(|r| r.get("attempts"))
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 10) as u32;
    let mut delay = Duration::from_millis(
        retry
            .and_then(|r| r.get("delay_ms"))
            .and_then(Value::as_u64)
            .unwrap_or(200),
    );
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
    let max = call.u64_arg("max_bytes").unwrap_or(DEFAULT_MAX);
    let b = read_body(call, resp, max, call.str_arg("save_to")).inspect_err(|_| {
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
    if call.str_arg("save_to").is_none() {
        out["body"] = String::from_utf8_lossy(&b.kept).into_owned().into();
    } else {
        out["saved_to"] = call.str_arg("save_to").into();
    }
    match &b.artifact {
        Some(a) => {
            out["body_uri"] = a.uri.clone().into();
            out["artifacts"] = json!([a.to_json()]);
        }
        None => out["artifacts"] = json!([]),
    }
    let ok = expected(call.args.get("expect_status"), status, |s| s < 400);
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
    let started = Instant::now();
    let prepared = prepare(call)?;
    let agent = call
        .host
        .pools()
        .http
        .get(prepared.policy, prepared.ca_file.as_deref())?;
    let (resp, url, hops) = send(&agent, "GET".into(), &prepared, None, call.deadline)?;
    let status = resp.status();
    let latency = started.elapsed().as_millis() as u64;
    let b = read_body(call, resp, 16 * 1024 * 1024, None)?;
    let status_ok = expected(call.args.get("expect_status"), status, |s| {
        (200..400).contains(&s)
    });
    let matched = call
        .str_arg("body_contains")
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
}
