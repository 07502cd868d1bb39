//! Smoke tests of the throwaway PostgreSQL cluster (`tests/support/postgres.rs`) and the in-process
//! HTTP server (`tests/support/http.rs`), driven with `psql`, raw HTTP/1.1 over `TcpStream` and, when
//! it is installed, `curl`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::http::{self, HttpServer};
use crate::support::postgres::Postgres;

#[test]
fn postgres_starts_answers_stops_and_starts_again() {
    let mut pg = Postgres::start();
    assert_eq!(pg.psql("select 1+1"), "2", "{}", pg.log());
    assert_eq!(pg.user, "postgres");
    assert_eq!(pg.database, "postgres");
    assert_eq!(pg.password.len(), 16);
    assert!(
        pg.password.chars().all(|c| c.is_ascii_alphanumeric()),
        "password must need no URL escaping"
    );
    assert_eq!(
        pg.url(),
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            pg.password, pg.port
        )
    );
    assert!(
        !format!("{pg:?}").contains(&pg.password),
        "Debug shows the password"
    );
    // Multi-row, multi-column output; and the server really is UTF-8 with the settings applied.
    assert_eq!(
        pg.psql("select x, x * 2 from generate_series(1, 3) x"),
        "1|2\n2|4\n3|6"
    );
    assert_eq!(pg.psql("show server_encoding"), "UTF8");
    assert_eq!(pg.psql("show fsync"), "off");
    pg.psql("create table t (v text); insert into t values ('kept')");

    // A wrong password is refused (SCRAM auth is on).
    let out = Command::new(pg.psql_bin())
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
        ])
        .args(["-U", "postgres", "-d", "postgres", "-c", "select 1"])
        .env("PGPASSWORD", "wrong")
        .stdin(Stdio::null())
        .output()
        .expect("run psql");
    assert!(!out.status.success(), "wrong password accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Down: connections fail; stop is idempotent.
    let port = pg.port;
    pg.stop();
    pg.stop();
    let err = pg
        .try_psql("select 1")
        .expect_err("psql succeeded on a stopped cluster");
    assert!(err.contains("Connection refused"), "{err}");

    // Back up on the same port with the same data.
    pg.start_again();
    assert_eq!(pg.port, port);
    assert_eq!(pg.psql("select v from t"), "kept");

    let dir = pg.dir.path().to_path_buf();
    drop(pg);
    assert!(!dir.exists(), "temp dir left behind: {}", dir.display());
}

/// A response read off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes one request (with `Content-Length` if there is a body).
fn send(stream: &mut TcpStream, method: &str, target: &str, headers: &[&str], body: &[u8]) {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("write request");
    stream.write_all(body).expect("write request body");
}

/// Reads one response; the body is `Content-Length` bytes (the server always sends it).
fn receive(reader: &mut BufReader<TcpStream>) -> Resp {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("read header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header has a colon");
        headers.push((n.to_owned(), v.trim().to_owned()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    let len: u64 = resp
        .header("content-length")
        .map_or(0, |v| v.parse().expect("numeric content-length"));
    reader
        .by_ref()
        .take(len)
        .read_to_end(&mut resp.body)
        .expect("read body");
    assert_eq!(resp.body.len() as u64, len, "short body");
    resp
}

/// One request on a fresh connection, closed after the response.
fn request(server: &HttpServer, method: &str, target: &str, body: &[u8]) -> Resp {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set read timeout");
    send(&mut stream, method, target, &["Connection: close"], body);
    receive(&mut BufReader::new(stream))
}

fn get(server: &HttpServer, target: &str) -> Resp {
    request(server, "GET", target, b"")
}

#[test]
fn http_server_endpoints() {
    let server = HttpServer::start();
    assert_eq!(
        server.url("/echo"),
        format!("http://127.0.0.1:{}/echo", server.port)
    );

    // Echo: method, path, query, lowercased headers and body as JSON.
    let resp = request(&server, "POST", "/echo?a=1&b=two", b"{\"hello\":\"world\"}");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("echo is JSON");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/echo");
    assert_eq!(v["query"], "a=1&b=two");
    assert_eq!(v["headers"]["host"], "127.0.0.1");
    assert_eq!(v["headers"]["content-length"], "17");
    assert_eq!(v["body"], "{\"hello\":\"world\"}");
    let rec = server.requests();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].method, "POST");
    assert_eq!(rec[0].path, "/echo?a=1&b=two");
    assert_eq!(rec[0].header("Connection"), Some("close"));
    assert_eq!(rec[0].body, b"{\"hello\":\"world\"}");

    let v: serde_json::Value =
        serde_json::from_slice(&get(&server, "/headers").body).expect("headers is JSON");
    assert_eq!(v["headers"]["connection"], "close");
    assert!(v.get("method").is_none(), "{v}");
    let v: serde_json::Value =
        serde_json::from_slice(&get(&server, "/json").body).expect("json is JSON");
    assert_eq!(v, serde_json::json!({"ok": true, "items": [1, 2, 3]}));

    let resp = get(&server, "/status/418");
    assert_eq!((resp.status, resp.text().as_str()), (418, "status 418"));
    assert_eq!(get(&server, "/nope").status, 404);

    // Flaky: two failures with Retry-After, then success; counters are per key.
    let statuses: Vec<u16> = (0..3)
        .map(|_| get(&server, "/flaky/k?fail=2").status)
        .collect();
    assert_eq!(statuses, [503, 503, 200]);
    let resp = get(&server, "/flaky/other?fail=1&status=429&retry_after=7");
    assert_eq!((resp.status, resp.header("retry-after")), (429, Some("7")));
    let resp = get(&server, "/flaky/other?fail=1&status=429&retry_after=7");
    assert_eq!((resp.status, resp.text().as_str()), (200, "ok after 1"));
    assert_eq!(server.hits("/flaky/k"), 3);
    assert_eq!(server.hits("/flaky/"), 5);

    // Bytes: exact length and pattern, also across chunk boundaries.
    let resp = get(&server, "/bytes/1000");
    assert_eq!(
        resp.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(resp.body, http::pattern(1000));
    let big = 5 * 1024 * 1024 + 7;
    assert_eq!(
        get(&server, &format!("/bytes/{big}")).body,
        http::pattern(big)
    );

    // Redirects.
    let to = "http://example.invalid/a?b=c";
    let resp = get(
        &server,
        "/redirect?to=http%3A%2F%2Fexample.invalid%2Fa%3Fb%3Dc",
    );
    assert_eq!((resp.status, resp.header("location")), (302, Some(to)));
    let resp = get(&server, "/redirect?to=%2Fjson&code=307");
    assert_eq!((resp.status, resp.header("location")), (307, Some("/json")));
    let resp = get(&server, "/redirect/chain/2");
    assert_eq!(
        (resp.status, resp.header("location")),
        (302, Some("/redirect/chain/1"))
    );
    let resp = get(&server, "/redirect/chain/0");
    assert_eq!((resp.status, resp.text().as_str()), (200, "end"));

    // HEAD: headers only.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    send(
        &mut stream,
        "HEAD",
        "/bytes/10",
        &["Connection: close"],
        b"",
    );
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read HEAD response");
    let raw = String::from_utf8_lossy(&raw);
    assert!(
        raw.contains("Content-Length: 10\r\n") && raw.ends_with("\r\n\r\n"),
        "{raw}"
    );

    // Keep-alive: three requests on one connection, the last one closes it.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    send(&mut stream, "PUT", "/echo", &[], b"first");
    let v: serde_json::Value = serde_json::from_slice(&receive(&mut reader).body).expect("JSON");
    assert_eq!(v["body"], "first");
    send(&mut stream, "GET", "/status/201", &[], b"");
    assert_eq!(receive(&mut reader).status, 201);
    send(&mut stream, "GET", "/json", &["Connection: close"], b"");
    let last = receive(&mut reader);
    assert_eq!(
        (last.status, last.header("connection")),
        (200, Some("close"))
    );
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("read to EOF");
    assert!(rest.is_empty(), "data after Connection: close");

    // A slow request does not block other connections.
    let slow_server_port = server.port;
    let started = Instant::now();
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", slow_server_port)).expect("connect");
        send(&mut s, "GET", "/slow?ms=1500", &["Connection: close"], b"");
        receive(&mut BufReader::new(s))
    });
    while server.hits("/slow") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/slow never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(get(&server, "/json").status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "blocked by /slow"
    );
    let resp = slow.join().expect("slow client thread");
    assert_eq!((resp.status, resp.text().as_str()), (200, "slow"));
    assert!(started.elapsed() >= Duration::from_millis(1500));

    // Garbage and a client vanishing mid-request do not hurt the server.
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    s.write_all(b"this is not http\r\n\r\n")
        .expect("write garbage");
    let resp = receive(&mut BufReader::new(s));
    assert_eq!(resp.status, 400);
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    s.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort")
        .expect("write partial request");
    drop(s);
    assert_eq!(get(&server, "/json").status, 200);

    // With curl, when installed: follows the redirect chain to its end.
    let curl = Command::new("curl").arg("--version").output();
    if curl.is_ok_and(|o| o.status.success()) {
        let out = Command::new("curl")
            .args(["-sS", "-L", "--max-time", "10"])
            .arg(server.url("/redirect/chain/3"))
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"end");
        assert_eq!(server.hits("/redirect/chain/"), 2 + 4);

        // A chunked request body is decoded.
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-H",
                "Transfer-Encoding: chunked",
            ])
            .args(["--data-binary", "chunked body"])
            .arg(server.url("/echo"))
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(v["body"], "chunked body");
        assert_eq!(v["headers"]["transfer-encoding"], "chunked");

        // curl sends `Expect: 100-continue` for large bodies: answered at once (curl would wait 1 s).
        let started = Instant::now();
        let body = "x".repeat(2 * 1024 * 1024);
        let mut child = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(["-H", "Expect: 100-continue", "--data-binary", "@-"])
            .arg(server.url("/status/201"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn curl");
        child
            .stdin
            .take()
            .expect("curl stdin")
            .write_all(body.as_bytes())
            .expect("write curl stdin");
        let out = child.wait_with_output().expect("wait for curl");
        assert_eq!(out.stdout, b"201");
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
        let last = server.requests().pop().expect("recorded");
        assert_eq!(last.header("expect"), Some("100-continue"));
        assert_eq!(last.body.len(), body.len());
    }
}

#[test]
fn http_server_stops_with_open_and_busy_connections() {
    let server = HttpServer::start();
    let port = server.port;
    // An idle keep-alive connection and a request sleeping far longer than the test.
    let idle = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut busy = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    send(&mut busy, "GET", "/slow?ms=600000", &[], b"");
    while server.hits("/slow") == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    drop(server);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        started.elapsed()
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening"
    );
    let mut buf = [0u8; 1];
    for mut s in [idle, busy] {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set read timeout");
        assert_eq!(s.read(&mut buf).expect("read after stop"), 0);
    }
}
