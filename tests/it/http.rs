//! `http` against a real HTTP server on loopback (tests/support/http.rs): bodies, retries and
//! Retry-After, timeouts, redirects checked hop by hop (metadata refused), body limits, artifacts, the
//! egress guard, secrets in headers, and the `api.check` runbook.

use std::sync::Arc;

use engine::ctx::{Config, Vars};
use engine::run::{Engine, StepOutcome};
use serde_json::{Value, json};

use crate::support::http::{HttpServer, pattern};

fn engine_at(dir: &std::path::Path, targets: Value, vars: Vars, unsafe_local: bool) -> Engine {
    std::fs::write(dir.join("targets.json"), targets.to_string()).expect("targets");
    let mut c = Config::at(dir).with_vars(vars);
    c.unsafe_local = unsafe_local;
    Engine::new(c, Arc::new(engine::Catalog::builtin()))
}

fn call(e: &Engine, args: Value) -> StepOutcome {
    crate::call_tool(e, "http", args, &engine::run::CancelToken::new())
}

fn ok(s: &StepOutcome) -> &Value {
    assert!(s.error.is_none(), "{:?}", s.error);
    s.result.as_ref().expect("a result")
}

fn err(s: &StepOutcome) -> (String, Value) {
    let e = s
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("expected an error, got {:?}", s.result));
    (e.kind.to_string(), e.result.clone().unwrap_or(Value::Null))
}

fn sha256_of(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("b");
    std::fs::write(&f, bytes).expect("write");
    crate::sha256_file(&f)
}

#[test]
fn requests_send_bodies_and_parse_json() {
    let srv = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_at(dir.path(), json!({}), Vars::none(), false);

    let r = call(&e, json!({"action": "request", "url": srv.url("/json")}));
    let v = ok(&r);
    assert_eq!(v["status"], 200);
    assert_eq!(v["json"], json!({"ok": true, "items": [1, 2, 3]}));
    assert_eq!(v["method"], "GET");

    let r = call(
        &e,
        json!({"action": "request", "method": "post", "url": srv.url("/echo"), "query": {"q": "a b&c"},
               "headers": {"X-Trace": "t-1"}, "json": {"name": "it's", "n": 1}}),
    );
    let echo = &ok(&r)["json"];
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["query"], "q=a+b%26c");
    assert_eq!(echo["headers"]["x-trace"], "t-1");
    assert_eq!(echo["headers"]["content-type"], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(echo["body"].as_str().expect("body")).expect("json"),
        json!({"name": "it's", "n": 1})
    );

    let r = call(
        &e,
        json!({"action": "request", "method": "PUT", "url": srv.url("/echo"), "form": {"a": "1 2", "b": "é"}}),
    );
    assert_eq!(ok(&r)["json"]["body"], "a=1+2&b=%C3%A9");
    let r = call(
        &e,
        json!({"action": "request", "method": "POST", "url": srv.url("/echo"), "body_base64": "aGk="}),
    );
    assert_eq!(ok(&r)["json"]["body"], "hi");

    // a status of 400 and above fails, unless expected
    let (kind, v) = err(&call(
        &e,
        json!({"action": "request", "url": srv.url("/status/404")}),
    ));
    assert_eq!(kind, "unexpected_status");
    assert_eq!(v["status"], 404);
    assert_eq!(v["body"], "status 404");
    let r = call(
        &e,
        json!({"action": "request", "url": srv.url("/status/404"), "expect_status": [404, 410]}),
    );
    assert_eq!(ok(&r)["status"], 404);
    let (kind, _) = err(&call(
        &e,
        json!({"action": "request", "url": srv.url("/json"), "expect_status": 201}),
    ));
    assert_eq!(kind, "unexpected_status");
}

#[test]
fn idempotent_requests_retry_and_honour_retry_after() {
    let srv = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_at(dir.path(), json!({}), Vars::none(), false);

    let r = call(
        &e,
        json!({"action": "request", "url": srv.url("/flaky/a?fail=2&status=503"), "retry": {"attempts": 3, "delay_ms": 10}}),
    );
    assert_eq!(ok(&r)["attempts"], 3);
    assert_eq!(ok(&r)["retry_waits_ms"], json!([10, 20]));
    assert_eq!(srv.hits("/flaky/a"), 3);

    let r = call(
        &e,
        json!({"action": "request", "url": srv.url("/flaky/b?fail=1&status=429&retry_after=1"), "retry": {"attempts": 2, "delay_ms": 10}}),
    );
    assert_eq!(ok(&r)["retry_waits_ms"], json!([1000]), "Retry-After wins");

    // attempts run out: the last answer is the result
    let (kind, v) = err(&call(
        &e,
        json!({"action": "request", "url": srv.url("/flaky/c?fail=5&status=500"), "retry": {"attempts": 2, "delay_ms": 1}}),
    ));
    assert_eq!(
        (kind.as_str(), v["status"].clone()),
        ("unexpected_status", json!(500))
    );
    assert_eq!(srv.hits("/flaky/c"), 2);

    // POST is not idempotent: one attempt only
    let (kind, _) = err(&call(
        &e,
        json!({"action": "request", "method": "POST", "url": srv.url("/flaky/d?fail=1"), "retry": {"attempts": 3}}),
    ));
    assert_eq!(kind, "unexpected_status");
    assert_eq!(srv.hits("/flaky/d"), 1);

    // a 404 is not retried
    let _ = call(
        &e,
        json!({"action": "request", "url": srv.url("/status/404"), "retry": {"attempts": 3}}),
    );
    assert_eq!(srv.hits("/status/404"), 1);
}

#[test]
fn timeouts_and_connection_errors() {
    let srv = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_at(dir.path(), json!({}), Vars::none(), false);
    let (kind, _) = err(&call(
        &e,
        json!({"action": "request", "url": srv.url("/slow?ms=5000"), "timeout_ms": 300}),
    ));
    assert_eq!(kind, "timeout");
    let port = crate::support::free_port();
    let (kind, _) = err(&call(
        &e,
        json!({"action": "request", "url": format!("http://127.0.0.1:{port}/")}),
    ));
    assert_eq!(kind, "connect_failed");
}

/// A server on loopback that answers `GET /answer` (kept alive), sends half of `/stall`'s body and
/// then nothing, and never answers anything else; it holds its connections until dropped.
struct Stubborn {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Connections accepted.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Stubborn {
    fn start() -> Self {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (st, acc) = (Arc::clone(&stop), Arc::clone(&accepted));
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                let st = Arc::clone(&st);
                std::thread::spawn(move || {
                    conn.set_nonblocking(false).expect("blocking");
                    conn.set_read_timeout(Some(std::time::Duration::from_millis(50)))
                        .expect("timeout");
                    let mut w = conn.try_clone().expect("clone");
                    let mut r = BufReader::new(conn);
                    let mut line = String::new();
                    while !st.load(Ordering::SeqCst) {
                        match r.read_line(&mut line) {
                            Ok(0) => return,
                            Ok(_) if line.ends_with('\n') => {}
                            _ => continue,
                        }
                        let done = std::mem::take(&mut line);
                        // a list of three pages, then an empty one; `/halt` answers its first only
                        let page = done
                            .split_once("page=")
                            .and_then(|(_, n)| n.split(|c: char| !c.is_ascii_digit()).next())
                            .and_then(|n| n.parse::<u32>().ok());
                        let listed = match page {
                            Some(n) if done.starts_with("GET /pages") && n <= 3 => {
                                Some(format!("[{n}]"))
                            }
                            Some(_) if done.starts_with("GET /pages") => Some("[]".to_owned()),
                            Some(1) if done.starts_with("GET /halt") => Some("[1]".to_owned()),
                            _ => None,
                        };
                        if let Some(body) = listed {
                            let _ = w.write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            );
                        } else if done.starts_with("GET /answer") {
                            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                        } else if done.starts_with("GET /stall") {
                            let _ =
                                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf.");
                        }
                    }
                });
            }
        });
        Stubborn {
            port,
            stop,
            accepted,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Stubborn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_call_without_a_deadline_ends_when_the_server_goes_silent() {
    let srv = Stubborn::start();
    let dir = tempfile::tempdir().expect("tmp");
    let mut c = Config::at(dir.path());
    c.http_idle = std::time::Duration::from_millis(400);
    let e = Engine::new(c, Arc::new(engine::Catalog::builtin()));
    let first = call(&e, json!({"action": "request", "url": srv.url("/answer")}));
    assert_eq!(ok(&first)["body"], "ok", "{:?}", first.result);
    // the same server, silent: no answer (on the connection the last call used, were it kept), and
    // half a body
    let e = Arc::new(e);
    for path in ["/silent", "/stall"] {
        let (tx, rx) = std::sync::mpsc::channel();
        let (e2, url) = (Arc::clone(&e), srv.url(path));
        std::thread::spawn(move || {
            let _ = tx.send(call(&e2, json!({"action": "request", "url": url})));
        });
        let s = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{path}: the call still waits for the silent server"));
        let (kind, _) = err(&s);
        assert_eq!(kind, "timeout", "{path}: {:?}", s.error);
        let hint = s
            .error
            .as_ref()
            .and_then(|e| e.hint.clone())
            .unwrap_or_default();
        assert!(
            hint.contains("INFRA_HTTP_IDLE_TIMEOUT_MS"),
            "{path}: {hint}"
        );
    }
    // with a deadline, connections are kept alive: one more for the first of these two calls only
    let before = srv.accepted.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..2 {
        let s = call(
            &e,
            json!({"action": "request", "url": srv.url("/answer"), "timeout_ms": 5000}),
        );
        assert_eq!(ok(&s)["body"], "ok");
    }
    assert_eq!(
        srv.accepted.load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );
    // and their deadline holds on a kept-alive connection
    let s = call(
        &e,
        json!({"action": "request", "url": srv.url("/silent"), "timeout_ms": 300}),
    );
    assert_eq!(err(&s).0, "timeout", "{:?}", s.error);

    // the pages of a paginated GET without a deadline share one connection, each page bounded: a
    // page that never comes ends the walk
    let before = srv.accepted.load(std::sync::atomic::Ordering::SeqCst);
    let paged =
        json!({"action": "request", "url": srv.url("/pages"), "paginate": {"style": "page"}});
    let walked = call(&e, paged);
    assert_eq!(
        ok(&walked)["items"],
        json!([1, 2, 3]),
        "{:?}",
        walked.result
    );
    assert_eq!(
        srv.accepted.load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let (e2, url) = (Arc::clone(&e), srv.url("/halt"));
    std::thread::spawn(move || {
        let _ = tx.send(call(
            &e2,
            json!({"action": "request", "url": url, "paginate": {"style": "page"}}),
        ));
    });
    let halted = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the walk still waits for its second page"));
    assert_eq!(err(&halted).0, "timeout", "{:?}", halted.error);
}

#[test]
fn redirects_are_checked_hop_by_hop() {
    let srv = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_at(dir.path(), json!({}), Vars::none(), false);

    let r = call(
        &e,
        json!({"action": "request", "url": srv.url("/redirect/chain/3")}),
    );
    let v = ok(&r);
    assert_eq!(v["body"], "end");
    assert_eq!(v["redirects"].as_array().map(Vec::len), Some(3));
    assert!(
        v["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/redirect/chain/0"))
    );

    for to in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[64:ff9b::169.254.169.254]/",
        "http://0.0.0.0:80/",
        "file:///etc/passwd",
    ] {
        let target = format!("/redirect?to={}", url_encode(to));
        let (kind, _) = err(&call(
            &e,
            json!({"action": "request", "url": srv.url(&target)}),
        ));
        assert_eq!(kind, "refused", "{to}");
    }
    for direct in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "http://[2002:a9fe:a9fe::1]/",
        "gopher://127.0.0.1/",
    ] {
        let r = call(&e, json!({"action": "request", "url": direct}));
        let msg = r
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        assert_eq!(err(&r).0, "refused", "{direct}");
        assert!(msg.contains("egress refused"), "{msg}");
    }

    // a target may allow link-local, or deny loopback
    let e = engine_at(
        dir.path(),
        json!({"closed": {"http": {"base_url": srv.url("/"), "deny_loopback": true}},
               "api": {"http": {"base_url": srv.url("/"), "headers": {"X-From": "target"}}}}),
        Vars::none(),
        false,
    );
    let (kind, _) = err(&call(
        &e,
        json!({"action": "request", "target": "closed", "path": "/json"}),
    ));
    assert_eq!(kind, "refused");
    let r = call(
        &e,
        json!({"action": "request", "target": "api", "path": "/echo"}),
    );
    assert_eq!(ok(&r)["json"]["headers"]["x-from"], "target");
    assert_eq!(ok(&r)["json"]["path"], "/echo");
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn bodies_are_bounded_and_large_ones_go_to_artifacts() {
    let srv = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_at(dir.path(), json!({}), Vars::none(), false);
    let (kind, _) = err(&call(
        &e,
        json!({"action": "request", "url": srv.url("/bytes/100000"), "max_bytes": 90000}),
    ));
    assert_eq!(kind, "too_large");
    let bodies = crate::files_under(dir.path())
        .into_iter()
        .filter(|f| f.ends_with("/body"))
        .count();
    assert_eq!(bodies, 0, "a refused body leaves no partial artifact");

    let n = 5_000_000;
    let r = call(
        &e,
        json!({"action": "request", "url": srv.url(&format!("/bytes/{n}"))}),
    );
    let v = ok(&r);
    assert_eq!(v["body_bytes"], n);
    assert_eq!(v["body_truncated"], true);
    let want = sha256_of(&pattern(n));
    assert_eq!(v["body_sha256"], want.as_str());
    let uri = v["body_uri"].as_str().expect("an artifact");
    assert_eq!(
        crate::sha256_reader(crate::open_artifact(dir.path(), uri)),
        want
    );

    // a host path needs the opt-in
    let out = dir.path().join("download.bin");
    let args = json!({"action": "request", "url": srv.url("/bytes/70000"), "save_to": out});
    assert_eq!(err(&call(&e, args.clone())).0, "refused");
    assert!(!out.exists());
    let e = engine_at(dir.path(), json!({}), Vars::none(), true);
    let r = call(&e, args);
    assert_eq!(ok(&r)["saved_to"], json!(out));
    assert_eq!(std::fs::read(&out).expect("saved"), pattern(70000));
}

#[test]
fn secrets_in_headers_never_show() {
    let srv = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let token = "tk_live_5f4e3d2c1b0a9988";
    let password = "pw-77a1b2c3d4e5";
    let e = engine_at(
        dir.path(),
        json!({"api": {"http": {"base_url": srv.url("/"), "basic": {"username": "ops", "password_env": "API_PASSWORD"}}},
               "tok": {"http": {"base_url": srv.url("/"), "bearer_env": "API_TOKEN"}}}),
        Vars::from_pairs([("API_TOKEN", token), ("API_PASSWORD", password)]),
        false,
    );
    let r = call(
        &e,
        json!({"action": "request", "url": srv.url("/echo"), "bearer_env": "API_TOKEN"}),
    );
    let shown = e.redactor().redact_value(ok(&r));
    assert_eq!(
        shown["json"]["headers"]["authorization"],
        "Bearer [REDACTED]"
    );
    let r = call(
        &e,
        json!({"action": "request", "target": "api", "path": "/headers"}),
    );
    let sent = srv
        .requests()
        .last()
        .and_then(|q| q.header("authorization").map(str::to_owned))
        .expect("sent");
    assert!(sent.starts_with("Basic "));
    let shown = e.redactor().redact_value(ok(&r));
    assert!(!shown.to_string().contains(&sent[6..]), "{shown}");

    // a secret input in a header, through a runbook
    let file = dsl::SourceFile::new(
        "h.yaml",
        "name: h\ninputs:\n  key: {type: string, secret: true}\n  url: {type: string}\nsteps:\n  - id: call\n    tool: http\n    args: {action: request, url: '{{ input.url }}', headers: {X-Api-Key: '{{ input.key }}'}}\n",
    );
    let rb = Arc::new(
        dsl::load(&file, None)
            .runbooks
            .into_iter()
            .next()
            .expect("rb"),
    );
    let plan = engine::compile(rb.clone(), &engine::CompileOptions::default()).expect("compiles");
    let key = "key-0f1e2d3c4b5a";
    let mut given = serde_json::Map::new();
    given.insert("key".into(), key.into());
    given.insert("url".into(), srv.url("/echo").into());
    let inputs = dsl::resolve_inputs(&rb, &given).expect("inputs");
    let o = e.execute(&plan, inputs, &engine::run::RunOptions::default());
    assert!(o.ok(), "{:?}", o.steps);
    assert_eq!(
        srv.requests()
            .last()
            .and_then(|q| q.header("x-api-key").map(str::to_owned)),
        Some(key.to_owned()),
        "the real value was sent"
    );
    let leaks = crate::files_containing(dir.path(), &[token, password, &sent[6..], key]);
    assert!(leaks.is_empty(), "a secret was written to {leaks:?}");
}

#[test]
fn checks_and_the_api_check_runbook() {
    let srv = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let targets = json!({"api": {"http": {"base_url": srv.url("/")}}});
    let e = engine_at(dir.path(), targets.clone(), Vars::none(), false);
    let r = call(
        &e,
        json!({"action": "check", "url": srv.url("/json"), "body_contains": "items"}),
    );
    let v = ok(&r);
    assert_eq!(
        (v["status"].clone(), v["matched"].clone()),
        (json!(200), json!(true))
    );
    assert!(v["latency_ms"].is_u64());
    let (kind, v) = err(&call(
        &e,
        json!({"action": "check", "url": srv.url("/status/503")}),
    ));
    assert_eq!(
        (kind.as_str(), v["status"].clone()),
        ("check_failed", json!(503))
    );
    let (kind, _) = err(&call(
        &e,
        json!({"action": "check", "url": srv.url("/json"), "body_contains": "nope"}),
    ));
    assert_eq!(kind, "check_failed");

    let run = |extra: &[&str]| {
        let out = crate::infra_in(dir.path(), dir.path())
            .args(["run", "api.check", "--json", "--input", "target=api"])
            .args(extra)
            .output()
            .expect("infra run");
        (out.status.code(), crate::stdout_json(&out))
    };
    let (code, v) = run(&["--input", "path=/json"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["outputs"]["status"], 200);
    let (code, v) = run(&["--input", "path=/status/500"]);
    assert_eq!(code, Some(1), "{v}");
    let (code, v) = run(&[
        "--input",
        "path=/status/204",
        "--input",
        "expect_status=204",
    ]);
    assert_eq!(code, Some(0), "{v}");
}

#[test]
fn a_get_plans_as_a_read_and_a_post_as_a_write() {
    let plan = |args: Value| {
        engine::compile_call("http", &args, &engine::CompileOptions::default())
            .expect("compiles")
            .effects()
    };
    assert_eq!(
        plan(json!({"action": "request", "url": "http://127.0.0.1/"})),
        dsl::Effect::Read
    );
    assert_eq!(
        plan(json!({"action": "request", "method": "POST", "url": "http://127.0.0.1/"})),
        dsl::Effect::Write
    );
    assert_eq!(
        plan(json!({"action": "request", "method": "DELETE", "url": "http://127.0.0.1/"})),
        dsl::Effect::Destructive
    );
}

/// An HTTPS server (Python's `ssl` over `http.server`) with a certificate for 127.0.0.1 signed by a
/// throwaway CA, made with the `openssl` command; killed on drop.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=infra test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let script = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"tls": true}'
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain('server.pem', 'server.key')
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .current_dir(d)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("port");
        let port = line.trim().parse().expect("a port");
        TlsServer {
            child,
            port,
            ca: d.join("ca.pem"),
            _dir: dir,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_with_a_private_ca() {
    let tls = TlsServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let base = format!("https://127.0.0.1:{}/", tls.port);
    let e = engine_at(
        dir.path(),
        json!({"private": {"http": {"base_url": base, "ca_file": tls.ca}}, "public": {"http": {"base_url": base}}}),
        Vars::none(),
        false,
    );
    let r = call(
        &e,
        json!({"action": "request", "target": "private", "path": "/x"}),
    );
    assert_eq!(ok(&r)["json"], json!({"tls": true}));
    // without the CA the certificate is not trusted
    let r = call(
        &e,
        json!({"action": "request", "target": "public", "path": "/x"}),
    );
    let (kind, _) = err(&r);
    assert_eq!(kind, "tls_failed", "{:?}", r.error);
    assert!(
        r.error
            .as_ref()
            .and_then(|e| e.hint.as_deref())
            .is_some_and(|h| h.contains("ca_file"))
    );
}

#[test]
fn a_targets_credentials_go_only_to_its_own_origin() {
    let own = HttpServer::start();
    let other = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let token = "tk_origin_9a8b7c6d5e4f";
    let key = "hk_origin_1a2b3c4d5e6f";
    let e = engine_at(
        dir.path(),
        json!({"api": {"http": {"base_url": own.url("/"), "bearer_env": "API_TOKEN", "headers": {"X-Api-Key": key}}}}),
        Vars::from_pairs([("API_TOKEN", token)]),
        false,
    );
    let port = other
        .url("/")
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let sent_creds = |srv: &HttpServer| {
        srv.requests().last().map(|q| {
            (
                q.header("authorization").map(str::to_owned),
                q.header("x-api-key").map(str::to_owned),
            )
        })
    };

    // its own origin gets them
    let r = call(
        &e,
        json!({"action": "request", "target": "api", "path": "/echo"}),
    );
    assert_eq!(ok(&r)["credentials"], "target");
    assert_eq!(
        sent_creds(&own),
        Some((Some(format!("Bearer {token}")), Some(key.to_owned())))
    );

    // another origin (another port, another name for the same host) does not
    for url in [
        other.url("/echo"),
        other.url("/echo").replace("127.0.0.1", "localhost"),
        own.url("/echo").replace("127.0.0.1", "localhost"),
    ] {
        let (n_own, n_other) = (own.requests().len(), other.requests().len());
        for action in ["request", "check"] {
            let r = call(&e, json!({"action": action, "target": "api", "url": url}));
            assert_eq!(ok(&r)["credentials"], "withheld", "{action} {url}");
        }
        let new: Vec<_> = own.requests()[n_own..]
            .iter()
            .chain(&other.requests()[n_other..])
            .cloned()
            .collect();
        assert_eq!(new.len(), 2, "{url}");
        for q in &new {
            assert!(q.header("authorization").is_none(), "{url}");
            assert!(q.header("x-api-key").is_none(), "{url}");
        }
    }
    assert!(
        other
            .requests()
            .iter()
            .all(|q| q.header("authorization").is_none() && q.header("x-api-key").is_none()),
        "the other origin saw a credential"
    );
    // nor does a redirect from its own origin carry them to another
    let n = other.requests().len();
    let r = call(
        &e,
        json!({"action": "request", "target": "api", "path": format!("/redirect?to={}", url_encode(&other.url("/echo")))}),
    );
    assert_eq!(ok(&r)["status"], 200);
    let q = other.requests()[n..].to_vec();
    assert_eq!(q.len(), 1);
    assert!(q[0].header("authorization").is_none());
    assert!(q[0].header("x-api-key").is_none(), "{:?}", q[0].headers);
    // a path cannot move the request to another origin
    for path in [
        format!("/@127.0.0.1:{port}/echo"),
        format!("//127.0.0.1:{port}/echo"),
        format!("\\\\127.0.0.1:{port}/echo"),
    ] {
        let n = other.requests().len();
        let _ = call(
            &e,
            json!({"action": "request", "target": "api", "path": path}),
        );
        assert_eq!(other.requests().len(), n, "{path} reached the other server");
    }

    // a literal credential header in a check is masked in what is recorded, like in a request
    let literal = "Bearer lit_check_0c1d2e3f4a5b";
    let r = call(
        &e,
        json!({"action": "check", "url": own.url("/echo"), "headers": {"Authorization": literal}}),
    );
    ok(&r);
    let leaks: Vec<_> =
        crate::files_containing(dir.path(), &[token, key, "lit_check_0c1d2e3f4a5b"])
            .into_iter()
            .filter(|p| !p.ends_with("targets.json"))
            .collect();
    assert!(leaks.is_empty(), "a credential was written to {leaks:?}");
}

#[test]
fn downloads_stream_whole_into_an_artifact_or_a_host_file_and_leave_nothing_when_they_fail() {
    let srv = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_at(dir.path(), json!({}), Vars::none(), false);
    let want = pattern(3_000_000);

    let r = call(
        &e,
        json!({"action": "download", "url": srv.url("/bytes/3000000")}),
    );
    let v = ok(&r);
    assert_eq!(v["bytes"], 3_000_000, "{v}");
    assert_eq!(v["sha256"], sha256_of(&want));
    let uri = v["uri"].as_str().expect("uri");
    assert!(uri.ends_with("/3000000"), "{uri}");
    assert_eq!(
        crate::sha256_reader(crate::open_artifact(dir.path(), uri)),
        sha256_of(&want)
    );

    // too large, or refused by the server: an error, and no artifact left
    for (url, kind) in [
        (srv.url("/bytes/3000000"), "too_large"),
        (srv.url("/status/404"), "unexpected_status"),
    ] {
        let r = call(
            &e,
            json!({"action": "download", "url": url, "name": "part.bin", "max_bytes": 1_000_000}),
        );
        assert_eq!(err(&r).0, kind, "{url}");
        let left: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "part.bin"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    // a name that is a path is refused
    let r = call(
        &e,
        json!({"action": "download", "url": srv.url("/bytes/10"), "name": "../x"}),
    );
    assert_eq!(err(&r).0, "invalid_args");

    // a host file needs the opt-in, then is written whole
    let host = dir.path().join("out.bin");
    let r = call(
        &e,
        json!({"action": "download", "url": srv.url("/bytes/70000"), "save_to": host.to_str()}),
    );
    assert_eq!(err(&r).0, "refused");
    assert!(!host.exists());
    let e = engine_at(dir.path(), json!({}), Vars::none(), true);
    let r = call(
        &e,
        json!({"action": "download", "url": srv.url("/bytes/70000"), "save_to": host.to_str()}),
    );
    ok(&r);
    assert_eq!(std::fs::read(&host).expect("file"), pattern(70_000));
    // into an artifact it reads; into a host file it writes
    let plan = |args: Value| {
        engine::compile_call("http", &args, &engine::CompileOptions::default())
            .expect("compiles")
            .effects()
    };
    assert_eq!(
        plan(json!({"action": "download", "url": "http://127.0.0.1/x"})),
        dsl::Effect::Read
    );
    assert_eq!(
        plan(json!({"action": "download", "url": "http://127.0.0.1/x", "save_to": "/tmp/x"})),
        dsl::Effect::Write
    );
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn a_targets_credential_named_by_a_call_goes_only_to_that_targets_origin() {
    let (own, other) = (HttpServer::start(), HttpServer::start());
    let dir = tempfile::tempdir().expect("tmp");
    let token = "tk_target_9a8b7c6d5e";
    let e = engine_at(
        dir.path(),
        json!({"api": {"http": {"base_url": own.url("/"), "bearer_env": "API_TOKEN"}},
               "db": {"postgres": {"host": "127.0.0.1", "user": "u", "database": "d", "password_env": "DB_PASSWORD"}}}),
        Vars::from_pairs([
            ("API_TOKEN", token),
            ("DB_PASSWORD", "db-pw-31f0"),
            ("INFRA_AUDIT_KEY", "audit-key-77aa"),
            ("FREE_TOKEN", "free-tk-5c"),
        ]),
        false,
    );
    // a target's variable, the database's password and the audit key, to another origin: refused
    for args in [
        json!({"action": "request", "url": other.url("/echo"), "bearer_env": "API_TOKEN"}),
        json!({"action": "request", "url": other.url("/echo"), "basic": {"username": "x", "password_env": "API_TOKEN"}}),
        json!({"action": "request", "url": other.url("/echo"), "bearer_env": "DB_PASSWORD"}),
        json!({"action": "check", "url": other.url("/echo"), "bearer_env": "API_TOKEN"}),
        json!({"action": "request", "url": own.url("/echo"), "bearer_env": "INFRA_AUDIT_KEY"}),
    ] {
        let (kind, e_) = err(&call(&e, args.clone()));
        assert_eq!(kind, "refused", "{args}: {e_}");
    }
    assert!(
        other.requests().is_empty(),
        "nothing reached the other origin"
    );
    assert!(own.requests().is_empty(), "the audit key was not sent");
    // to the target's own origin it goes, named by the call or by the target
    let r = call(
        &e,
        json!({"action": "request", "url": own.url("/echo"), "bearer_env": "API_TOKEN"}),
    );
    ok(&r);
    let sent = own
        .requests()
        .last()
        .and_then(|q| q.header("authorization").map(str::to_owned))
        .expect("sent");
    assert_eq!(sent, format!("Bearer {token}"));
    // nor to another virtual host behind the target's address
    for args in [
        json!({"action": "request", "target": "api", "path": "/echo", "headers": {"host": "evil.example"}}),
        json!({"action": "request", "url": own.url("/echo"), "bearer_env": "API_TOKEN", "headers": {"HOST": "evil.example"}}),
    ] {
        let before = own.requests().len();
        let r = call(&e, args.clone());
        assert_eq!(
            r.error.as_ref().map(|e| e.kind.to_string()).as_deref(),
            Some("refused"),
            "{args}"
        );
        assert_eq!(own.requests().len(), before, "{args}: nothing was sent");
    }
    // without credentials, a `Host` of the call's goes out as given
    ok(&call(
        &e,
        json!({"action": "request", "url": own.url("/echo"), "headers": {"Host": "vhost.example"}}),
    ));
    let host = own
        .requests()
        .last()
        .and_then(|q| q.header("host").map(str::to_owned));
    assert_eq!(host.as_deref(), Some("vhost.example"));
    // a variable no target names is infra's environment: sent nowhere, unless the operator allows
    // secret export
    let free = json!({"action": "request", "url": other.url("/echo"), "bearer_env": "FREE_TOKEN"});
    let refused = call(&e, free.clone());
    let why = refused.error.as_ref().expect("refused");
    assert_eq!(why.kind.to_string(), "refused", "{why:?}");
    assert!(
        why.hint
            .as_deref()
            .is_some_and(|h| h.contains("INFRA_ALLOW_SECRET_EXPORT")),
        "{why:?}"
    );
    assert!(
        other.requests().is_empty(),
        "nothing reached the other origin"
    );
    let mut c = Config::at(dir.path()).with_vars(Vars::from_pairs([("FREE_TOKEN", "free-tk-5c")]));
    c.allow_secret_export = true;
    let exporting = Engine::new(c, Arc::new(engine::Catalog::builtin()));
    ok(&call(&exporting, free));
    let sent = other
        .requests()
        .last()
        .and_then(|q| q.header("authorization").map(str::to_owned));
    assert_eq!(sent.as_deref(), Some("Bearer free-tk-5c"));
}

#[test]
fn a_password_in_the_url_and_a_key_header_of_any_name_stay_secret() {
    let (own, other) = (HttpServer::start(), HttpServer::start());
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_at(dir.path(), json!({}), Vars::from_pairs([("X", "y")]), false);
    let password = "S3cr!t-pw-99";
    let with_userinfo = |path: &str| {
        own.url(path)
            .replacen("http://", "http://ops:S3cr%21t-pw-99@", 1)
    };
    // the URL is shown in the result and in an error's message: the password in neither
    let ok_call = call(
        &e,
        json!({"action": "request", "url": with_userinfo("/echo")}),
    );
    let failed = call(
        &e,
        json!({"action": "request", "url": with_userinfo("/status/500")}),
    );
    for o in [&ok_call, &failed] {
        let shown = e
            .redactor()
            .redact_value(&serde_json::to_value(o.result.clone()).expect("json"));
        let message = o
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        let all = format!("{shown}{}", e.redactor().redact(&message));
        assert!(!all.contains("S3cr"), "{all}");
    }
    assert!(
        crate::files_containing(dir.path(), &[password, "S3cr%21t-pw-99"]).is_empty(),
        "recorded unmasked"
    );
    // a header whose name says it holds a key is not sent on to another origin, and is masked
    let to = format!(
        "/redirect?to={}",
        other.url("/echo").replace(':', "%3A").replace('/', "%2F")
    );
    let r = call(
        &e,
        json!({"action": "request", "url": own.url(&to), "headers": {"DD-API-KEY": "dd-key-4b3a2918"}}),
    );
    ok(&r);
    let reached = other.requests();
    let last = reached.last().expect("the redirect was followed");
    assert!(
        last.header("dd-api-key").is_none(),
        "the key went to another origin"
    );
    assert!(crate::files_containing(dir.path(), &["dd-key-4b3a2918"]).is_empty());
}
