//! The MCP server end to end: the built binary, spawned, driven by the rmcp client over its stdio.

use std::path::Path;
use std::process::Stdio;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ReadResourceRequestParams};
use rmcp::service::{RoleClient, RunningService};
use serde_json::{Value, json};

struct Session {
    client: RunningService<RoleClient, ()>,
    child: tokio::process::Child,
}

async fn start(profiles: &Path, unsafe_local: bool) -> Session {
    start_with(profiles, unsafe_local, &[]).await
}

async fn start_with(profiles: &Path, unsafe_local: bool, env: &[(&str, &str)]) -> Session {
    let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("infra"));
    cmd.env_clear()
        .env("MCP_PROFILES_DIR", profiles)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(profiles)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if unsafe_local {
        cmd.env("INFRA_UNSAFE_LOCAL", "1");
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn infra");
    let stdout = child.stdout.take().expect("stdout");
    let stdin = child.stdin.take().expect("stdin");
    let client = ().serve((stdout, stdin)).await.expect("initialize");
    Session { client, child }
}

async fn call(s: &Session, tool: &str, args: Value) -> CallToolResult {
    let args = args.as_object().cloned().unwrap_or_default();
    s.client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .expect("tools/call")
}

/// The pid a test command wrote, once it is there.
async fn wait_for_pid(pidfile: &Path) -> String {
    for _ in 0..500 {
        if let Ok(t) = std::fs::read_to_string(pidfile)
            && !t.trim().is_empty()
        {
            return t.trim().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{} never appeared", pidfile.display());
}

fn body(r: &CallToolResult) -> Value {
    r.structured_content.clone().expect("structuredContent")
}

async fn stop(s: Session) {
    let Session { client, mut child } = s;
    let _ = client.cancel().await;
    // stdin closed: the server exits by itself, with status 0
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await;
    assert!(matches!(status, Ok(Ok(st)) if st.success()), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_are_generated_from_the_registry_and_local_is_opt_in() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path(), false).await;
    let info = s.client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("infra")
    );
    let tools = s.client.list_all_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "help",
            "runbook",
            "ssh",
            "http",
            "psql",
            "repo",
            "state",
            "artifacts",
            "jobs",
            "audit",
            "evidence",
            "context"
        ]
    );
    let text = serde_json::to_string(&tools).expect("json");
    assert!(text.len() < 16 * 1024, "tools/list is {} bytes", text.len());
    let state = tools.iter().find(|t| t.name == "state").expect("state");
    assert_eq!(
        state.input_schema["properties"]["action"]["enum"],
        json!(["set", "get", "list", "unset"])
    );
    assert!(state.input_schema.get("oneOf").is_none());
    let repo = tools.iter().find(|t| t.name == "repo").expect("repo");
    assert_eq!(
        repo.annotations.as_ref().and_then(|a| a.read_only_hint),
        Some(true)
    );
    stop(s).await;

    let s = start(dir.path(), true).await;
    let tools = s.client.list_all_tools().await.expect("tools/list");
    assert_eq!(tools.last().map(|t| t.name.as_ref()), Some("local"));
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_run_through_the_engine_with_audit_and_errors_as_results() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path(), false).await;
    let r = call(
        &s,
        "state",
        json!({"action": "set", "key": "k", "value": {"n": 1}}),
    )
    .await;
    assert_eq!(r.is_error, Some(false));
    let b = body(&r);
    assert_eq!(b["ok"], true);
    assert_eq!(b["effects"], "write");
    assert!(b["run_id"].as_str().is_some_and(|id| id.len() == 32));
    let r = call(&s, "mcp_state", json!({"action": "get", "key": "k"})).await;
    assert_eq!(body(&r)["result"]["value"], json!({"n": 1}));
    assert_eq!(body(&r)["normalized"], "`mcp_state` is `state`");

    // bad calls are results with isError, a kind, a message and a JSON path
    let r = call(&s, "state", json!({"action": "sett", "key": "k"})).await;
    assert_eq!(r.is_error, Some(true));
    assert_eq!(body(&r)["error"]["kind"], "unknown_action");
    assert_eq!(body(&r)["error"]["hint"], "did you mean `set`?");
    let r = call(&s, "state", json!({"action": "set", "key": 5, "value": 1})).await;
    assert_eq!(body(&r)["error"]["kind"], "invalid_args");
    assert_eq!(body(&r)["error"]["path"], "/key");
    let r = call(&s, "nope", json!({})).await;
    assert_eq!(body(&r)["error"]["kind"], "unknown_tool");
    // a refused call has evidence too: a one-node run that failed
    let id = body(&r)["run_id"].as_str().expect("run id").to_owned();
    let ev = call(&s, "evidence", json!({"action": "get", "run_id": id})).await;
    assert_eq!(body(&ev)["result"]["state"], "finished");
    assert_eq!(body(&ev)["result"]["records"][3]["status"], "failed");
    // local is not listed, and a call to it is refused (and audited), nothing spawned
    let marker = dir.path().join("spawned");
    let r = call(
        &s,
        "local",
        json!({"action": "exec", "command": format!("touch {}", marker.display())}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    assert_eq!(body(&r)["error"]["kind"], "refused");
    assert!(!marker.exists());

    let audit = call(&s, "audit", json!({"action": "tail", "limit": 50})).await;
    let records = body(&audit)["result"]["records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for kind in ["intent", "outcome", "rejected", "refused"] {
        assert!(
            records.iter().any(|r| r["kind"] == kind),
            "no `{kind}` record in {records:?}"
        );
    }
    let v = call(&s, "audit", json!({"action": "verify"})).await;
    assert_eq!(body(&v)["result"]["intact"], true);
    let cp = call(&s, "audit", json!({"action": "checkpoint"})).await;
    let word = body(&cp)["result"]["checkpoint"]
        .as_str()
        .expect("a checkpoint")
        .to_owned();
    let v = call(&s, "audit", json!({"action": "verify", "against": word})).await;
    assert_eq!(body(&v)["result"]["intact"], true, "{:?}", body(&v));
    let (seq, _) = word.split_once(':').expect("<seq>:<hash>");
    let forged = format!("{seq}:{}", "0".repeat(64));
    let v = call(&s, "audit", json!({"action": "verify", "against": forged})).await;
    assert_eq!(body(&v)["result"]["intact"], false);
    let v = call(
        &s,
        "audit",
        json!({"action": "verify", "against": "nothing"}),
    )
    .await;
    assert_eq!(body(&v)["error"]["path"], "/against");
    // the same check as `infra audit verify`: a log cut at a record boundary is found
    let log = dir.path().join("audit.jsonl");
    let whole = std::fs::read_to_string(&log).expect("audit");
    let n = whole.lines().count();
    let cut: String = whole
        .lines()
        .take(n - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&log, cut).expect("cut");
    let v = call(&s, "audit", json!({"action": "verify"})).await;
    assert_eq!(body(&v)["result"]["intact"], false);
    let message = body(&v)["result"]["problem"]["message"].to_string();
    assert!(
        message.contains(&format!("record {n} is missing")),
        "{message}"
    );
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_an_audit_key_records_are_sealed_and_the_key_never_shows() {
    const KEY: &str = "mcp-side-audit-key-9f8e7d6c5b4a";
    let dir = tempfile::tempdir().expect("tmp");
    let s = start_with(dir.path(), true, &[("INFRA_AUDIT_KEY", KEY)]).await;
    let mut seen = Vec::new();
    let r = call(
        &s,
        "local",
        json!({"action": "exec", "command": "echo \"key=$INFRA_AUDIT_KEY\"; env"}),
    )
    .await;
    assert_eq!(
        body(&r)["result"]["stdout"]
            .as_str()
            .map(|o| o.starts_with("key=\n")),
        Some(true)
    );
    seen.push(body(&r));
    let tail = call(&s, "audit", json!({"action": "tail", "limit": 50})).await;
    let records = body(&tail)["result"]["records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !records.is_empty() && records.iter().all(|r| r["mac"].is_string()),
        "{records:?}"
    );
    seen.push(body(&tail));
    let v = call(&s, "audit", json!({"action": "verify"})).await;
    assert_eq!(body(&v)["result"]["intact"], true);
    assert_eq!(body(&v)["result"]["macs"]["checked"], true);
    seen.push(body(&v));
    for b in seen {
        assert!(!b.to_string().contains(KEY), "the key was shown: {b}");
    }
    stop(s).await;
    assert_eq!(
        crate::files_containing(dir.path(), &[KEY]),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runbooks_help_and_artifacts_as_resources() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("runbooks")).expect("dir");
    std::fs::write(
        dir.path().join("runbooks/deploy.staging.yaml"),
        "description: Deploy a service to staging.\ntags: [deploy]\ninputs: [service]\nsteps:\n  - {id: mark, tool: state, args: {action: set, key: deployed, value: '{{ input.service }}'}}\n",
    )
    .expect("write");
    let s = start(dir.path(), true).await;
    let h = call(&s, "help", json!({"query": "deploy runbook"})).await;
    assert_eq!(body(&h)["result"]["runbooks"][0]["name"], "deploy.staging");
    let l = call(
        &s,
        "runbook",
        json!({"action": "list", "query": "repo", "limit": 5}),
    )
    .await;
    assert_eq!(body(&l)["result"]["runbooks"][0]["name"], "repo.snapshot");
    let r = call(
        &s,
        "runbook",
        json!({"action": "run", "name": "deploy.staging", "input": {"service": "api"}}),
    )
    .await;
    assert_eq!(body(&r)["ok"], true, "{:?}", body(&r));
    let g = call(&s, "state", json!({"action": "get", "key": "deployed"})).await;
    assert_eq!(body(&g)["result"]["value"], "api");
    let bad = call(
        &s,
        "runbook",
        json!({"action": "run", "name": "deploy.staging"}),
    )
    .await;
    assert_eq!(body(&bad)["error"]["kind"], "invalid_input");

    // a command's output is an artifact, linked from the result and readable as a resource
    let e = call(
        &s,
        "local",
        json!({"action": "exec", "command": "echo hello from infra"}),
    )
    .await;
    assert_eq!(e.is_error, Some(false), "{:?}", body(&e));
    let link = e
        .content
        .iter()
        .find_map(|c| c.as_resource_link().map(|l| l.uri.clone()))
        .expect("a resource_link");
    assert!(link.starts_with("artifact://runs/call/"), "{link}");
    let read = s
        .client
        .read_resource(ReadResourceRequestParams::new(link.clone()))
        .await
        .expect("resources/read");
    let text = serde_json::to_value(&read.contents[0]).expect("json");
    assert_eq!(text["text"], "hello from infra\n");
    let listed = s.client.list_all_resources().await.expect("resources/list");
    assert!(listed.iter().any(|r| r.uri == link));
    let tail = call(
        &s,
        "mcp_artifacts",
        json!({"action": "tail", "uri": link, "max_bytes": 5}),
    )
    .await;
    assert_eq!(body(&tail)["result"]["text"], "nfra\n");
    // a link in an artifact's place is not followed, even to another artifact
    let rel = link.strip_prefix("artifact://").expect("scheme");
    let alias = format!("{link}-alias");
    std::os::unix::fs::symlink(
        dir.path().join(rel),
        dir.path().join(format!("{rel}-alias")),
    )
    .expect("symlink");
    let refused = s
        .client
        .read_resource(ReadResourceRequestParams::new(alias.clone()))
        .await
        .expect_err("a link is refused");
    assert!(refused.to_string().contains("symbolic link"), "{refused}");
    let get = call(&s, "artifacts", json!({"action": "get", "uri": alias})).await;
    assert_eq!(get.is_error, Some(true));
    assert_eq!(body(&get)["error"]["kind"], "not_found");
    stop(s).await;
}

#[test]
fn a_probe_that_closes_stdin_at_once_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("infra"))
        .env("MCP_PROFILES_DIR", dir.path())
        .arg("mcp")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// A client that keeps the progress messages it hears.
#[derive(Clone, Default)]
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl rmcp::ClientHandler for Recorder {
    async fn on_progress(
        &self,
        p: rmcp::model::ProgressNotificationParam,
        _cx: rmcp::service::NotificationContext<RoleClient>,
    ) {
        if let Ok(mut v) = self.0.lock() {
            v.push(p.message.unwrap_or_default());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_then_run_with_progress_then_delete() {
    use rmcp::model::RequestParamsMeta;
    let dir = tempfile::tempdir().expect("tmp");
    let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("infra"));
    cmd.env_clear()
        .env("MCP_PROFILES_DIR", dir.path())
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn");
    let (stdout, stdin) = (
        child.stdout.take().expect("out"),
        child.stdin.take().expect("in"),
    );
    let recorder = Recorder::default();
    let client = recorder
        .clone()
        .serve((stdout, stdin))
        .await
        .expect("initialize");
    let call = |tool: &str, args: Value| {
        let mut p = CallToolRequestParams::new(tool.to_owned())
            .with_arguments(args.as_object().cloned().unwrap_or_default());
        p.set_progress_token(rmcp::model::ProgressToken(
            rmcp::model::NumberOrString::Number(7),
        ));
        client.call_tool(p)
    };
    // an invalid runbook is refused before anything is written
    let bad = call(
        "runbook",
        json!({"action": "upsert", "name": "two.steps", "runbook": {"stpes": []}}),
    )
    .await
    .expect("call");
    assert_eq!(bad.is_error, Some(true));
    assert!(!dir.path().join("runbooks/two.steps.json").exists());
    let up = call(
        "runbook",
        json!({"action": "upsert", "name": "two.steps", "runbook": {
            "description": "two state steps", "tags": ["test"],
            "steps": [
                {"id": "a", "tool": "state", "args": {"action": "set", "key": "a", "value": 1}},
                {"id": "b", "tool": "state", "args": {"action": "set", "key": "b", "value": "{{ steps.a.value }}"}}
            ]
        }}),
    )
    .await
    .expect("upsert");
    assert_eq!(up.is_error, Some(false), "{:?}", up.structured_content);
    assert!(dir.path().join("runbooks/two.steps.json").exists());
    assert_eq!(
        up.structured_content.as_ref().map(|b| b["effects"].clone()),
        Some(json!("write"))
    );
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"intent\"") && l.contains("\"upsert\"")),
        "the write's intent is audited first"
    );
    let run = call("runbook", json!({"action": "run", "name": "two.steps"}))
        .await
        .expect("run");
    assert_eq!(
        run.structured_content.as_ref().map(|b| b["ok"].clone()),
        Some(json!(true))
    );
    let heard = recorder.0.lock().map(|v| v.clone()).unwrap_or_default();
    for m in ["a started", "b started"] {
        assert!(heard.iter().any(|h| h == m), "no `{m}` in {heard:?}");
    }
    let ev = call(
        "evidence",
        json!({"action": "list", "runbook": "two.steps"}),
    )
    .await
    .expect("evidence");
    let id = ev
        .structured_content
        .as_ref()
        .and_then(|b| b["result"]["runs"][0]["id"].as_str().map(str::to_owned))
        .expect("id");
    let got = call("evidence", json!({"action": "get", "run_id": id}))
        .await
        .expect("get");
    assert_eq!(
        got.structured_content
            .as_ref()
            .map(|b| b["result"]["state"].clone()),
        Some(json!("finished"))
    );
    let builtin = call(
        "runbook",
        json!({"action": "delete", "name": "hello.world"}),
    )
    .await
    .expect("delete");
    assert_eq!(
        builtin
            .structured_content
            .as_ref()
            .map(|b| b["error"]["kind"].clone()),
        Some(json!("refused"))
    );
    let del = call("runbook", json!({"action": "delete", "name": "two.steps"}))
        .await
        .expect("delete");
    assert_eq!(del.is_error, Some(false));
    assert!(!dir.path().join("runbooks/two.steps.json").exists());
    let gone = call("runbook", json!({"action": "get", "name": "two.steps"}))
        .await
        .expect("get");
    assert_eq!(gone.is_error, Some(true));
    let _ = client.cancel().await;
    let _ = child.wait().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn async_calls_become_jobs_that_can_be_waited_for_and_cancelled() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path(), true).await;
    let quick = call(
        &s,
        "state",
        json!({"action": "set", "key": "j", "value": 3, "async": true}),
    )
    .await;
    let id = body(&quick)["result"]["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let waited = call(
        &s,
        "jobs",
        json!({"action": "wait", "job_id": id, "timeout_ms": 10000}),
    )
    .await;
    assert_eq!(body(&waited)["result"]["status"], "succeeded");
    assert_eq!(body(&waited)["result"]["result"]["result"]["value"], 3);

    let pidfile = dir.path().join("pid");
    let slow = call(
        &s,
        "local",
        json!({"action": "exec", "command": format!("echo $$ > {}; exec sleep 1000", pidfile.display()), "async": true}),
    )
    .await;
    let id = body(&slow)["result"]["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let pid = wait_for_pid(&pidfile).await;
    let st = call(&s, "jobs", json!({"action": "status", "job_id": id})).await;
    assert_eq!(body(&st)["result"]["status"], "running");
    let c = call(&s, "jobs", json!({"action": "cancel", "job_id": id})).await;
    assert_eq!(c.is_error, Some(false), "{:?}", body(&c));
    let waited = call(
        &s,
        "jobs",
        json!({"action": "wait", "job_id": id, "timeout_ms": 10000}),
    )
    .await;
    assert_eq!(body(&waited)["result"]["status"], "cancelled");
    let gone = !crate::alive(&pid);
    assert!(gone, "sleep {pid} survived the cancel");
    let listed = call(&s, "jobs", json!({"action": "list"})).await;
    assert_eq!(
        body(&listed)["result"]["jobs"].as_array().map(Vec::len),
        Some(2)
    );
    stop(s).await;
}

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
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let v = serde_json::from_str(&line).unwrap_or_else(|_| json!({"not_json": line}));
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
        use std::io::Write;
        self.stdin.write_all(line.as_bytes()).expect("write");
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
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if let Ok(v) = self
                .lines
                .recv_timeout(std::time::Duration::from_millis(100))
                && v["id"] == id
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
    let too_long = r.error_with_null_id();
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

#[tokio::test(flavor = "multi_thread")]
async fn jobs_do_not_outlive_the_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path(), true).await;
    let pidfile = dir.path().join("pid");
    let r = call(
        &s,
        "local",
        json!({"action": "exec", "command": format!("echo $$ > {}; exec sleep 1000", pidfile.display()), "async": true}),
    )
    .await;
    assert_eq!(r.is_error, Some(false));
    let pid = wait_for_pid(&pidfile).await;
    stop(s).await;
    let gone = !crate::alive(&pid);
    assert!(gone, "the job's process {pid} outlived the server");
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
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !pidfile.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .to_owned();
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

#[tokio::test(flavor = "multi_thread")]
async fn targets_are_listed_without_credentials() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("targets.json"),
        r#"{ "prod": { "host": "prod.example.com", "port": 22, "username": "deploy", "key_file": "~/.ssh/id_ed25519", "labels": ["web"] },
             "db": { "host": "10.0.0.9", "username": "ops", "password_env": "DB_SECRET_PASSWORD" } }"#,
    )
    .expect("targets");
    let s = start(dir.path(), false).await;
    let t = call(&s, "context", json!({"action": "targets"})).await;
    let b = body(&t);
    assert_eq!(b["result"]["targets"][0]["name"], "prod");
    assert_eq!(b["result"]["targets"][0]["labels"], json!(["web"]));
    let text = b.to_string();
    assert!(
        !text.contains("id_ed25519") && !text.contains("DB_SECRET_PASSWORD"),
        "{text}"
    );
    let h = call(&s, "help", json!({"query": "web"})).await;
    assert_eq!(body(&h)["result"]["targets"][0]["name"], "prod");
    stop(s).await;

    std::fs::write(
        dir.path().join("targets.json"),
        r#"{"prod": {"hots": "x"}}"#,
    )
    .expect("bad targets");
    let s = start(dir.path(), false).await;
    let t = call(&s, "context", json!({"action": "targets"})).await;
    assert_eq!(t.is_error, Some(true));
    assert_eq!(body(&t)["error"]["kind"], "invalid_args");
    assert!(
        body(&t)["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("hots"))
    );
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_over_mcp_runs_commands_and_a_cancelled_job_stops_the_remote_process() {
    let sshd = crate::support::sshd::Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("targets.json"),
        json!({"prod": crate::ssh::target(&sshd)}).to_string(),
    )
    .expect("targets");
    let s = start(dir.path(), false).await;
    let tools = s.client.list_all_tools().await.expect("tools/list");
    let ssh = tools.iter().find(|t| t.name == "ssh").expect("ssh listed");
    let hints = ssh.annotations.as_ref().expect("annotations");
    assert_eq!(hints.open_world_hint, Some(true), "ssh reaches other hosts");
    assert_eq!(hints.read_only_hint, Some(false));
    // the example of the original, verbatim
    let r = call(
        &s,
        "ssh",
        json!({"action": "exec", "target": "prod", "command": "uptime"}),
    )
    .await;
    assert_eq!(r.is_error, Some(false), "{:?}", body(&r));
    assert!(
        body(&r)["result"]["stdout"]
            .as_str()
            .is_some_and(|o| o.contains("load average")),
        "{:?}",
        body(&r)
    );
    let r = call(
        &s,
        "mcp_ssh_manager",
        json!({"action": "exec", "target": "prod", "command": "exit 3"}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    assert_eq!(body(&r)["error"]["kind"], "nonzero_exit");

    let pidfile = dir.path().join("remote.pid");
    let job = call(
        &s,
        "ssh",
        json!({"action": "exec", "target": "prod", "async": true,
               "command": format!("for i in 1 2 3; do echo line$i; done; sleep 1000 & echo $! > {}; wait", pidfile.display())}),
    )
    .await;
    let id = body(&job)["result"]["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let pid = wait_for_pid(&pidfile).await;
    let st = call(&s, "jobs", json!({"action": "status", "job_id": id})).await;
    assert_eq!(body(&st)["result"]["status"], "running");
    // the output so far, while it runs
    let mut seen = Value::Null;
    for _ in 0..250 {
        let logs = call(&s, "jobs", json!({"action": "logs", "job_id": id})).await;
        seen = body(&logs)["result"].clone();
        if seen["output"][0]["tail"] == "line1\nline2\nline3\n" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen["output"][0]["tail"], "line1\nline2\nline3\n", "{seen}");
    assert_eq!(seen["job_status"], "running");
    assert_eq!(seen["state"], "running");
    assert!(
        seen["output"][0]["uri"]
            .as_str()
            .is_some_and(|u| u.ends_with("/call/stdout")),
        "{seen}"
    );
    call(&s, "jobs", json!({"action": "cancel", "job_id": id})).await;
    let waited = call(
        &s,
        "jobs",
        json!({"action": "wait", "job_id": id, "timeout_ms": 10000}),
    )
    .await;
    assert_eq!(body(&waited)["result"]["status"], "cancelled");
    let mut gone = false;
    for _ in 0..250 {
        gone = !crate::alive(&pid);
        if gone {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "the remote sleep {pid} survived the cancel");

    let r = call(
        &s,
        "runbook",
        json!({"action": "run", "name": "ssh.health", "input": {"target": "prod"}}),
    )
    .await;
    assert_eq!(r.is_error, Some(false), "{:?}", body(&r));
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_and_psql_over_mcp() {
    let srv = crate::support::http::HttpServer::start();
    let pg = crate::support::postgres::Postgres::start();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("targets.json"),
        json!({"db": {"postgres": {"host": "127.0.0.1", "port": pg.port, "user": pg.user,
                                   "database": pg.database, "password_env": "DB_PASSWORD", "sslmode": "disable"}},
               "api": {"http": {"base_url": srv.url("/")}}})
        .to_string(),
    )
    .expect("targets");
    let s = start_with(dir.path(), false, &[("DB_PASSWORD", pg.password.as_str())]).await;
    let tools = s.client.list_all_tools().await.expect("tools/list");
    for name in ["http", "psql"] {
        let t = tools.iter().find(|t| t.name == name).expect("listed");
        let hints = t.annotations.as_ref().expect("annotations");
        assert_eq!(hints.open_world_hint, Some(true), "{name}");
    }
    // the examples of the original, verbatim (the only database target serves `psql` without one)
    let r = call(
        &s,
        "http",
        json!({"action": "request", "method": "GET", "url": srv.url("/json")}),
    )
    .await;
    assert_eq!(r.is_error, Some(false), "{:?}", body(&r));
    assert_eq!(body(&r)["effects"], "read");
    assert_eq!(body(&r)["result"]["json"]["items"], json!([1, 2, 3]));
    let r = call(
        &s,
        "psql",
        json!({"action": "query", "sql": "select now()"}),
    )
    .await;
    assert_eq!(r.is_error, Some(false), "{:?}", body(&r));
    assert_eq!(body(&r)["result"]["columns"][0]["type"], "timestamptz");
    let r = call(
        &s,
        "sql",
        json!({"action": "query", "sql": "select 1; select 2"}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    assert_eq!(body(&r)["error"]["kind"], "refused");
    let r = call(
        &s,
        "api",
        json!({"action": "request", "url": "http://169.254.169.254/latest/meta-data/"}),
    )
    .await;
    assert_eq!(body(&r)["error"]["kind"], "refused");
    let r = call(
        &s,
        "runbook",
        json!({"action": "run", "name": "api.check", "input": {"target": "api", "path": "/json"}}),
    )
    .await;
    assert_eq!(r.is_error, Some(false), "{:?}", body(&r));
    let text = serde_json::to_string(&body(&r)).expect("json");
    assert!(!text.contains(&pg.password));
    stop(s).await;
}
