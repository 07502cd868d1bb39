//! Raw JSON-RPC lines: bad input answered, the newest protocol, cancelled requests, jobs that die
//! with the server, and every line of the malformed-line battery answered exactly once.

use super::battery::{Expect, battery};
use super::*;

/// Raw JSON-RPC over the binary's stdio, for what a well-behaved SDK client never sends.
struct Raw {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Raw {
    fn start(profiles: &Path) -> Raw {
        Raw::start_with(profiles, false)
    }

    fn start_with(profiles: &Path, unsafe_local: bool) -> Raw {
        use std::io::BufRead;
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("infra"))
            .env_clear()
            .env("MCP_PROFILES_DIR", profiles)
            .env("INFRA_UNSAFE_LOCAL", if unsafe_local { "1" } else { "0" })
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(profiles)
            .arg("mcp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        // every stdout line, as JSON; a line that is not (or not UTF-8) arrives as `{"not_json": …}`
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .split(b'\n')
                .map_while(Result::ok)
            {
                let v = serde_json::from_slice(&line)
                    .unwrap_or_else(|_| json!({"not_json": String::from_utf8_lossy(&line)}));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Raw {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, line: &str) {
        self.send_bytes(line.as_bytes());
    }

    /// One line of any bytes, with its newline.
    fn send_bytes(&mut self, line: &[u8]) {
        use std::io::Write;
        self.stdin.write_all(line).expect("write");
        self.stdin.write_all(b"\n").expect("write");
        self.stdin.flush().expect("flush");
    }

    /// The next error response whose id is null (other messages are skipped).
    fn error_with_null_id(&self) -> Value {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if let Ok(v) = self
                .lines
                .recv_timeout(std::time::Duration::from_millis(100))
                && v["id"].is_null()
                && v.get("error").is_some()
            {
                return v;
            }
        }
        panic!("no error response with a null id");
    }

    /// The response to request `id` (other messages are skipped).
    fn response(&self, id: i64) -> Value {
        self.response_to(&json!(id))
    }

    /// The response to the request with this id, of any type (other messages are skipped).
    fn response_to(&self, id: &Value) -> Value {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if let Ok(v) = self
                .lines
                .recv_timeout(std::time::Duration::from_millis(100))
                && v["id"] == *id
            {
                return v;
            }
        }
        panic!("no response to request {id}");
    }
}

#[test]
fn bad_protocol_input_is_answered_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut r = Raw::start(dir.path());
    r.send(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#);
    assert_eq!(r.response(1)["result"]["protocolVersion"], "2025-06-18");
    r.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    r.send("{this is not json");
    let parse = r.error_with_null_id();
    assert_eq!(parse["error"]["code"], -32700, "{parse}");
    r.send(&format!(
        r#"{{"jsonrpc":"2.0","id":99,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(17 * 1024 * 1024)
    ));
    // the id is read from the start of the line, so the client can match the error to its request
    let too_long = r.response(99);
    assert_eq!(too_long["error"]["code"], -32600, "{too_long}");
    r.send(r#"[{"jsonrpc":"2.0","id":3,"method":"ping"}]"#);
    let batch = r.error_with_null_id();
    assert_eq!(batch["error"]["code"], -32600, "{batch}");
    r.send(r#"{"jsonrpc":"2.0","id":2,"method":"no/such/method"}"#);
    assert_eq!(r.response(2)["error"]["code"], -32601);
    r.send(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"state","arguments":{"action":"get"}}}"#);
    let missing = r.response(4);
    assert_eq!(missing["result"]["isError"], true);
    assert_eq!(
        missing["result"]["structuredContent"]["error"]["kind"],
        "invalid_args"
    );
    r.send(r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#);
    assert!(
        r.response(5)["result"].is_object(),
        "still serving after bad input"
    );
    // closing stdin ends the server cleanly
    drop(r.stdin);
    let status = r.child.wait().expect("wait");
    assert!(status.success());
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit");
    assert!(
        audit.contains("\"rejected\""),
        "the refused call is audited"
    );
}

#[test]
fn the_newest_protocol_is_served_without_a_handshake() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut r = Raw::start(dir.path());
    r.send(r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#);
    let d = r.response(1);
    let versions = d["result"]["supportedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for v in [
        "2024-11-05",
        "2025-03-26",
        "2025-06-18",
        "2025-11-25",
        "2026-07-28",
    ] {
        assert!(versions.contains(&json!(v)), "{v} missing from {d}");
    }
    r.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#);
    let tools = r.response(2);
    assert_eq!(tools["result"]["tools"][0]["name"], "help", "{tools}");
    r.send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"state","arguments":{"action":"set","key":"k","value":1},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#);
    assert_eq!(r.response(3)["result"]["structuredContent"]["ok"], true);
    drop(r.stdin);
    assert!(r.child.wait().expect("wait").success());
}

#[test]
fn a_cancelled_request_gets_no_answer_and_its_process_is_killed() {
    let dir = tempfile::tempdir().expect("tmp");
    let pidfile = dir.path().join("pid");
    let mut r = Raw::start_with(dir.path(), true);
    r.send(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#);
    r.response(1);
    r.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "local", "arguments": {
        "action": "exec", "command": format!("echo $$ > {}; exec sleep 1000", pidfile.display())}}});
    r.send(&call.to_string());
    let pid = crate::pid_written(&pidfile, 10);
    assert!(!pid.is_empty(), "the command never started");
    r.send(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7,"reason":"test"}}"#);
    std::thread::sleep(std::time::Duration::from_millis(500));
    r.send(r#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#);
    let mut seen_7 = false;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut got_8 = false;
    while std::time::Instant::now() < until {
        if let Ok(v) = r.lines.recv_timeout(std::time::Duration::from_millis(100)) {
            seen_7 |= v["id"] == 7;
            got_8 |= v["id"] == 8;
        }
    }
    assert!(got_8, "the server stopped serving");
    assert!(!seen_7, "a cancelled request was answered");
    let gone = !crate::alive(&pid);
    assert!(gone, "the cancelled call's process {pid} is still running");
    drop(r.stdin);
    assert!(r.child.wait().expect("wait").success());
}

#[test]
fn every_line_with_an_id_gets_exactly_one_answer() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut r = Raw::start(dir.path());
    r.send(r#"{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#);
    let init = r
        .lines
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("initialize");
    assert_eq!(init["id"], "init", "{init}");
    r.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let cases = battery();
    let malformed = cases.iter().filter(|c| c.malformed).count();
    assert!(malformed >= 200, "only {malformed} malformed lines");

    // each line is followed by a ping; what the framing answers for the line (an error with a null id
    // above all) comes before the ping's answer, so it can be told apart from the next line's
    let mut seen: Vec<(usize, Value)> = Vec::new();
    let wait = std::time::Duration::from_secs(20);
    for (i, case) in cases.iter().enumerate() {
        r.send_bytes(&case.line);
        let mark = format!("mark-{i}");
        r.send(&format!(
            r#"{{"jsonrpc":"2.0","id":"{mark}","method":"ping"}}"#
        ));
        loop {
            let v = r.lines.recv_timeout(wait).unwrap_or_else(|_| {
                panic!(
                    "no answer to the ping after line {i}: {:.200}",
                    String::from_utf8_lossy(&case.line)
                )
            });
            if v["id"] == mark.as_str() {
                assert!(v["result"].is_object(), "{v}");
                break;
            }
            seen.push((i, v));
        }
    }
    // answers of calls still running arrive by their ids
    let by_id =
        |seen: &[(usize, Value)], id: &Value| seen.iter().filter(|(_, v)| v["id"] == *id).count();
    let until = std::time::Instant::now() + wait;
    while cases.iter().any(|c| match &c.expect {
        Expect::Result(id) => by_id(&seen, id) == 0,
        Expect::Error(_, id) if !id.is_null() => by_id(&seen, id) == 0,
        _ => false,
    }) && std::time::Instant::now() < until
    {
        if let Ok(v) = r.lines.recv_timeout(std::time::Duration::from_millis(100)) {
            seen.push((usize::MAX, v));
        }
    }
    // still serving: a real call after all that
    r.send(r#"{"jsonrpc":"2.0","id":"last","method":"tools/call","params":{"name":"state","arguments":{"action":"set","key":"after","value":"still here"}}}"#);
    let last = r.response_to(&json!("last"));
    assert_eq!(last["result"]["structuredContent"]["ok"], true, "{last}");
    // nothing late
    while let Ok(v) = r.lines.recv_timeout(std::time::Duration::from_millis(300)) {
        seen.push((usize::MAX, v));
    }

    for (_, v) in &seen {
        assert!(
            v.get("not_json").is_none(),
            "stdout had a line that is not JSON: {v}"
        );
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        assert!(
            v.get("result").is_some() != v.get("error").is_some(),
            "a response has a result or an error: {v}"
        );
    }
    let mut answered = 0;
    let mut accounted = 0;
    for (i, case) in cases.iter().enumerate() {
        let shown = String::from_utf8_lossy(&case.line[..case.line.len().min(160)]).into_owned();
        let nulls: Vec<&Value> = seen
            .iter()
            .filter(|(at, v)| *at == i && v["id"].is_null())
            .map(|(_, v)| v)
            .collect();
        match &case.expect {
            Expect::Error(code, id) if id.is_null() => {
                assert_eq!(nulls.len(), 1, "line {i} `{shown}`: {nulls:?}");
                assert_eq!(
                    nulls[0]["error"]["code"], *code,
                    "line {i} `{shown}`: {}",
                    nulls[0]
                );
                accounted += 1;
            }
            Expect::Error(code, id) => {
                let got: Vec<&Value> = seen
                    .iter()
                    .filter(|(_, v)| v["id"] == *id)
                    .map(|(_, v)| v)
                    .collect();
                assert_eq!(got.len(), 1, "line {i} `{shown}`: {got:?}");
                assert_eq!(
                    got[0]["error"]["code"], *code,
                    "line {i} `{shown}`: {}",
                    got[0]
                );
                assert!(nulls.is_empty(), "line {i} `{shown}`: {nulls:?}");
                accounted += 1;
            }
            Expect::Result(id) => {
                let got: Vec<&Value> = seen
                    .iter()
                    .filter(|(_, v)| v["id"] == *id)
                    .map(|(_, v)| v)
                    .collect();
                assert_eq!(got.len(), 1, "line {i} `{shown}`: {got:?}");
                assert!(
                    got[0]["result"].is_object(),
                    "line {i} `{shown}`: {}",
                    got[0]
                );
                assert!(nulls.is_empty(), "line {i} `{shown}`: {nulls:?}");
                accounted += 1;
            }
            Expect::Nothing => {
                assert!(
                    nulls.is_empty(),
                    "line {i} `{shown}` was answered: {nulls:?}"
                );
            }
        }
        if case.malformed && !matches!(case.expect, Expect::Nothing) {
            answered += 1;
        }
    }
    // and no answer that no line asked for (the responses' ids "r1"… included)
    assert_eq!(seen.len(), accounted, "unexpected answers: {seen:?}");
    assert!(answered >= 150, "{answered} malformed lines answered");
    drop(r.stdin);
    assert!(r.child.wait().expect("wait").success());
}
