//! The MCP server end to end: the built binary, spawned, driven by the rmcp client over its stdio.

use std::path::Path;
use std::process::Stdio;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ReadResourceRequestParams};
use rmcp::service::{RoleClient, RunningService};
use serde_json::{Value, json};

use crate::project::Project;

pub(crate) struct Session {
    client: RunningService<RoleClient, ()>,
    child: tokio::process::Child,
}

async fn start(profiles: &Path, unsafe_local: bool) -> Session {
    start_with(profiles, unsafe_local, &[]).await
}

pub(crate) async fn start_with(
    profiles: &Path,
    unsafe_local: bool,
    env: &[(&str, &str)],
) -> Session {
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
    let p = Project::new();
    let s = p.mcp().await;
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

    let s = start(p.path(), true).await;
    let tools = s.client.list_all_tools().await.expect("tools/list");
    assert_eq!(tools.last().map(|t| t.name.as_ref()), Some("local"));
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_run_through_the_engine_with_audit_and_errors_as_results() {
    let p = Project::new();
    let s = p.mcp().await;
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
    let marker = p.path().join("spawned");
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
    let log = p.path().join("audit.jsonl");
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
    let p = Project::new().unsafe_local().env("INFRA_AUDIT_KEY", KEY);
    let s = p.mcp().await;
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
        crate::files_containing(p.path(), &[KEY]),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runbooks_help_and_artifacts_as_resources() {
    let p = Project::new().unsafe_local().runbook(
        "deploy.staging",
        "description: Deploy a service to staging.\ntags: [deploy]\ninputs: [service]\nsteps:\n  - {id: mark, tool: state, args: {action: set, key: deployed, value: '{{ input.service }}'}}\n",
    );
    let s = p.mcp().await;
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
    std::os::unix::fs::symlink(p.path().join(rel), p.path().join(format!("{rel}-alias")))
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
    let p = Project::new().unsafe_local();
    let s = p.mcp().await;
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

    let pidfile = p.path().join("pid");
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

#[tokio::test(flavor = "multi_thread")]
async fn jobs_do_not_outlive_the_server() {
    let p = Project::new().unsafe_local();
    let s = p.mcp().await;
    let pidfile = p.path().join("pid");
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
    let p = Project::new().targets(&json!({"prod": crate::ssh::target(&sshd)}));
    let s = p.mcp().await;
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

    let pidfile = p.path().join("remote.pid");
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
    let p = Project::new()
        .targets(&json!({"db": {"postgres": {"host": "127.0.0.1", "port": pg.port, "user": pg.user,
                                   "database": pg.database, "password_env": "DB_PASSWORD", "sslmode": "disable"}},
               "api": {"http": {"base_url": srv.url("/")}}}))
        .env("DB_PASSWORD", &pg.password);
    let s = p.mcp().await;
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

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_input_of_a_refused_runbook_call_is_never_recorded() {
    let p = Project::new().runbook(
        "with.secret",
        "name: with.secret\ninputs:\n  token: {type: string, secret: true, pattern: '^[a-z]+$'}\n  who: {type: string}\nsteps:\n  - id: s\n    tool: state\n    args: {action: set, key: who, value: '{{ input.who }}'}\n",
    );
    let canary = "Sekret-Canary-4d3c2b1a";
    let s = p.mcp().await;
    let calls = [
        // a value its pattern refuses, a missing input, a misspelt name, an unknown runbook, inline
        json!({"action": "run", "name": "with.secret", "input": {"token": canary, "who": "x"}}),
        json!({"action": "run", "name": "with.secret", "input": {"token": canary}}),
        json!({"action": "plan", "name": "with.secret", "input": {"tokn": canary, "who": "x"}}),
        json!({"action": "run", "name": "no.such.runbook", "input": {"token": canary}}),
        json!({"action": "plan", "name": "no.such.runbook", "input": {"token": canary}}),
        json!({"action": "run", "runbook": {"name": "inline", "inputs": {"t": {"type": "integer"}}, "steps": []}, "input": {"t": canary}}),
    ];
    for args in calls {
        let r = call(&s, "runbook", args.clone()).await;
        assert_eq!(r.is_error, Some(true), "{args}: {:?}", body(&r));
    }
    // a declared, non-secret input is still recorded as given
    let r = call(
        &s,
        "runbook",
        json!({"action": "run", "name": "with.secret", "input": {"who": "visible-name"}}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    stop(s).await;
    let leaks = crate::files_containing(p.path(), &[canary]);
    assert!(leaks.is_empty(), "the secret was written to {leaks:?}");
    assert!(
        !crate::files_containing(p.path().join("runs").as_path(), &["visible-name"]).is_empty(),
        "a public input is kept in the record"
    );

    // the CLI's refusal does not print it either
    let out = crate::infra_in(p.path(), p.path())
        .args(["run", "with.secret", "--input"])
        .arg(format!("token={canary}"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(canary), "{all}");
    assert!(crate::files_containing(p.path(), &[canary]).is_empty());
}

/// Audit records, parsed.
fn audit_records(profiles: &Path) -> Vec<Value> {
    std::fs::read_to_string(profiles.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn upserting_a_builtin_name_needs_override_and_is_marked_everywhere() {
    let p = Project::new();
    let s = p.mcp().await;
    let tools = s.client.list_all_tools().await.expect("tools/list");
    let rb = tools.iter().find(|t| t.name == "runbook").expect("runbook");
    assert_eq!(rb.input_schema["properties"]["override"]["type"], "boolean");
    assert!(
        rb.description
            .as_deref()
            .is_some_and(|d| d.contains("`override: true`")),
        "{:?}",
        rb.description
    );
    // a runbook that writes, under the name of the read-only health check
    let writing = json!({"description": "not the health check", "steps": [
        {"id": "w", "tool": "state", "args": {"action": "set", "key": "shadow", "value": 1}}]});
    let refused = call(
        &s,
        "runbook",
        json!({"action": "upsert", "name": "ssh.health", "runbook": writing}),
    )
    .await;
    assert_eq!(refused.is_error, Some(true));
    let err = &body(&refused)["error"];
    assert_eq!(err["kind"], "refused", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("built-in") && m.contains("nothing was written")),
        "{err}"
    );
    assert!(
        err["hint"]
            .as_str()
            .is_some_and(|h| h.contains("override: true")),
        "{err}"
    );
    assert!(
        crate::files_under(&p.path().join("runbooks")).is_empty(),
        "nothing is written"
    );
    let audit = audit_records(p.path());
    assert!(
        audit.iter().any(|r| r["kind"] == "rejected"
            && r["tool"] == "runbook"
            && r["action"] == "upsert"
            && r["error"]["kind"] == "refused"),
        "{audit:?}"
    );
    assert!(
        !audit
            .iter()
            .any(|r| r["kind"] == "intent" && r["action"] == "upsert"),
        "no write was intended: {audit:?}"
    );
    let bad = call(
        &s,
        "runbook",
        json!({"action": "upsert", "name": "ssh.health", "runbook": writing, "override": "yes"}),
    )
    .await;
    assert_eq!(body(&bad)["error"]["kind"], "invalid_args");
    assert_eq!(body(&bad)["error"]["path"], "/override");
    let get = call(
        &s,
        "runbook",
        json!({"action": "get", "name": "ssh.health"}),
    )
    .await;
    assert_eq!(body(&get)["result"]["origin"], "builtin");
    assert!(body(&get)["result"].get("overrides").is_none());

    // with the override it is saved, and marked in list and get
    let saved = call(
        &s,
        "runbook",
        json!({"action": "upsert", "name": "ssh.health", "runbook": writing, "override": true}),
    )
    .await;
    assert_eq!(saved.is_error, Some(false), "{:?}", body(&saved));
    assert_eq!(body(&saved)["result"]["overrides"], "builtin");
    assert!(p.path().join("runbooks/ssh.health.json").exists());
    let list = call(
        &s,
        "runbook",
        json!({"action": "list", "query": "health", "limit": 50}),
    )
    .await;
    let listed = body(&list)["result"]["runbooks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let row = listed
        .iter()
        .find(|r| r["name"] == "ssh.health")
        .expect("listed");
    assert_eq!(row["source"], "project", "{row}");
    assert_eq!(row["overrides"], "builtin", "{row}");
    assert!(
        listed
            .iter()
            .filter(|r| r["name"] != "ssh.health")
            .all(|r| r.get("overrides").is_none()),
        "{listed:?}"
    );
    let get = call(
        &s,
        "runbook",
        json!({"action": "get", "name": "ssh.health"}),
    )
    .await;
    assert_eq!(body(&get)["result"]["origin"], "project");
    assert_eq!(body(&get)["result"]["overrides"], "builtin");
    assert_eq!(
        body(&get)["result"]["runbook"]["description"],
        "not the health check"
    );
    // updating an override needs the flag again; a name that is not built in needs none
    let again = call(
        &s,
        "runbook",
        json!({"action": "upsert", "name": "ssh.health", "runbook": writing}),
    )
    .await;
    assert_eq!(body(&again)["error"]["kind"], "refused");
    let own = call(
        &s,
        "runbook",
        json!({"action": "upsert", "name": "my.health", "runbook": writing}),
    )
    .await;
    assert_eq!(own.is_error, Some(false), "{:?}", body(&own));
    assert!(body(&own)["result"].get("overrides").is_none());
    // deleting the override brings the built-in back
    let del = call(
        &s,
        "runbook",
        json!({"action": "delete", "name": "ssh.health"}),
    )
    .await;
    assert_eq!(del.is_error, Some(false), "{:?}", body(&del));
    assert_eq!(body(&del)["result"]["restores"], "builtin");
    let get = call(
        &s,
        "runbook",
        json!({"action": "get", "name": "ssh.health"}),
    )
    .await;
    assert_eq!(body(&get)["result"]["origin"], "builtin");
    assert!(body(&get)["result"].get("overrides").is_none());
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_run_is_interrupted_in_the_cli_and_over_mcp() {
    let dir = tempfile::tempdir().expect("tmp");
    let pidfile = dir.path().join("child.pid");
    let rb = dir.path().join("slow.yaml");
    std::fs::write(
        &rb,
        format!(
            "name: slow\nsteps:\n  - {{id: wait, tool: local, args: {{action: exec, command: 'echo $$ > {}; exec sleep 30'}}}}\n",
            pidfile.display()
        ),
    )
    .expect("write");
    let mut run = std::process::Command::new(assert_cmd::cargo::cargo_bin("infra"))
        .env_clear()
        .env("MCP_PROFILES_DIR", dir.path())
        .env("INFRA_UNSAFE_LOCAL", "1")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .arg("run")
        .arg(&rb)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let sleeper = wait_for_pid(&pidfile).await;
    let cli = |args: &[&str]| {
        crate::infra_in(dir.path(), dir.path())
            .args(args)
            .output()
            .expect("infra")
    };
    let slow_row = |listed: &Value| {
        listed
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["runbook"] == "slow"))
            .cloned()
            .unwrap_or_else(|| panic!("no `slow` run in {listed}"))
    };
    // while it runs, every view says so
    let row = slow_row(&crate::stdout_json(&cli(&["runs", "list", "--json"])));
    let id = row["id"].as_str().expect("id").to_owned();
    assert_eq!(row["status"], "running", "{row}");
    let shown = crate::stdout_json(&cli(&["runs", "show", &id, "--json"]));
    assert_eq!(shown["state"], "running", "{shown}");

    // kill -9 the run (the process this test started, by its id), then the sleep it leaves behind in its
    // own process group
    run.kill().expect("kill -9");
    let _ = run.wait();
    let _ = std::process::Command::new("kill")
        .args(["-9", &sleeper])
        .status();

    let row = slow_row(&crate::stdout_json(&cli(&["runs", "list", "--json"])));
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["status"], "interrupted", "{row}");
    assert_eq!(row["state"], "interrupted", "{row}");
    let human = cli(&["runs", "list"]);
    let text = String::from_utf8_lossy(&human.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&id[..8]))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("interrupted") && !line.contains("running"),
        "{line}"
    );
    let shown = crate::stdout_json(&cli(&["runs", "show", &id, "--json"]));
    assert_eq!(shown["state"], "interrupted", "{shown}");
    assert_eq!(shown["run"]["status"], "interrupted", "{shown}");
    let human = cli(&["runs", "show", &id]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.contains("interrupted")),
        "{text}"
    );

    let s = start(dir.path(), false).await;
    let ev = call(&s, "evidence", json!({"action": "list", "runbook": "slow"})).await;
    let listed = &body(&ev)["result"]["runs"];
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed[0]["status"], "interrupted", "{listed}");
    assert_eq!(listed[0]["state"], "interrupted", "{listed}");
    let got = call(&s, "evidence", json!({"action": "get", "run_id": id})).await;
    assert_eq!(body(&got)["result"]["state"], "interrupted");
    assert_eq!(body(&got)["result"]["run"]["status"], "interrupted");
    // the MCP server's own calls finished, and say so
    let ev = call(&s, "evidence", json!({"action": "list", "runbook": "call"})).await;
    assert_eq!(body(&ev)["result"]["runs"][0]["state"], "finished");
    stop(s).await;
}

/// What one line sent to the server must get back.
#[derive(Debug, Clone)]
enum Expect {
    /// One error with this code and id (`Value::Null`: the id could not be read).
    Error(i64, Value),
    /// One result for this id.
    Result(Value),
    /// No answer at all (a notification, a client's response, a blank line).
    Nothing,
}

/// One line of the battery: its bytes, its answer, and whether it is malformed.
struct Case {
    line: Vec<u8>,
    expect: Expect,
    malformed: bool,
}

/// Lines an attacker (or a broken client) might send, each with the one answer JSON-RPC 2.0 asks for.
/// Ids are unique, so every answer can be matched to its line.
fn battery() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut n = 100_000i64;
    // a fresh id, alternating numbers and strings
    let mut next_id = move || {
        n += 1;
        if n % 2 == 0 {
            json!(n)
        } else {
            json!(format!("c{n}"))
        }
    };
    let bad = |cases: &mut Vec<Case>, line: Vec<u8>, expect: Expect| {
        cases.push(Case {
            line,
            expect,
            malformed: true,
        })
    };
    let req = |id: &Value, method: &str, params: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
            .into_bytes()
    };
    let call_with = |id: &Value, args: &[u8]| {
        let mut l = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"state","arguments":"#
        )
        .into_bytes();
        l.extend_from_slice(args);
        l.extend_from_slice(b"}}");
        l
    };
    let parse = |id: &Value| Expect::Error(-32700, id.clone());
    let null = |code| Expect::Error(code, Value::Null);

    // not JSON at all
    for g in [
        "{this is not json",
        "hello",
        "}",
        r#"{"a":}"#,
        "nul",
        "tru",
        "[1,2",
        r#"{"jsonrpc""#,
        "'single'",
        "{'id':1}",
        r#""unterminated"#,
        "{,}",
        "::",
        "\u{1}",
        r#"{"id"}"#,
        r#"{"id" 1}"#,
        r#"{"id":}"#,
        "{{}}",
    ] {
        bad(&mut cases, g.into(), null(-32700));
    }
    // truncated requests: cut after the id, the id is known; cut inside it, it is not
    for cut in (0..24).map(|i| 0.3 + f64::from(i) * 0.028) {
        let id = next_id();
        let full = format!(
            r#"{{"id":{id},"jsonrpc":"2.0","method":"tools/call","params":{{"name":"state","arguments":{{"action":"get","key":"k"}}}}}}"#
        );
        let at = (full.len() as f64 * cut) as usize;
        let head = format!(r#"{{"id":{id},"#);
        assert!(at >= head.len() && at < full.len());
        bad(&mut cases, full.as_bytes()[..at].to_vec(), parse(&id));
    }
    for t in [
        r#"{"id":42"#,
        r#"{"id":"ab"#,
        r#"{"id"#,
        "{",
        r#"{"jsonrpc":"2.0","method":"ping","id":"#,
        r#"{"jsonrpc":"2.0","method":"ping","id":-"#,
    ] {
        bad(&mut cases, t.into(), null(-32700));
    }
    // lone surrogates, in values, keys, the method and the tool name
    for sur in [
        r"\ud800",
        r"\udc00",
        r"\udfff",
        r"\ud800\u0041",
        r"\ud800\ud800",
        r"x\udbff",
    ] {
        let id = next_id();
        bad(
            &mut cases,
            call_with(
                &id,
                format!(r#"{{"action":"get","key":"{sur}"}}"#).as_bytes(),
            ),
            parse(&id),
        );
        let id = next_id();
        bad(
            &mut cases,
            call_with(&id, format!(r#"{{"{sur}":1}}"#).as_bytes()),
            parse(&id),
        );
        let id = next_id();
        bad(
            &mut cases,
            req(&id, &format!("ping{sur}"), "{}"),
            parse(&id),
        );
    }
    let id = next_id();
    bad(
        &mut cases,
        req(&id, "tools/call", r#"{"name":"st\udc00ate"}"#),
        parse(&id),
    );
    bad(
        &mut cases,
        r#"{"jsonrpc":"2.0","id":"\ud800","method":"ping"}"#.into(),
        null(-32700),
    );
    // numbers beyond f64
    for num in [
        "1e400",
        "-1e400",
        "1e309",
        "2e308",
        "123e99999",
        "0.1e99999999999999999999",
        "-9e999999",
    ] {
        let id = next_id();
        bad(
            &mut cases,
            call_with(
                &id,
                format!(r#"{{"action":"set","key":"k","value":{num}}}"#).as_bytes(),
            ),
            parse(&id),
        );
        let id = next_id();
        bad(
            &mut cases,
            req(&id, "ping", &format!(r#"{{"n":[{num}]}}"#)),
            parse(&id),
        );
    }
    bad(
        &mut cases,
        r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#.into(),
        null(-32700),
    );
    bad(
        &mut cases,
        r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#.into(),
        null(-32600),
    );
    // invalid UTF-8 inside strings, in the tool name, and between tokens
    for bytes in [
        &b"\xff"[..],
        b"\xfe",
        b"\xc3\x28",
        b"\xa0\xa1",
        b"\xe2\x28\xa1",
        b"\xf0\x28\x8c\xbc",
        b"\xed\xa0\x80",
        b"\xc0\xaf",
        b"\xf8\x88\x80\x80\x80",
        b"\x80",
    ] {
        let id = next_id();
        let mut args = br#"{"action":"get","key":"a"#.to_vec();
        args.extend_from_slice(bytes);
        args.extend_from_slice(br#"b"}"#);
        bad(&mut cases, call_with(&id, &args), parse(&id));
    }
    for bytes in [&b"\xff\xfe"[..], b"\xc3"] {
        let id = next_id();
        let mut l =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"st"#)
                .into_bytes();
        l.extend_from_slice(bytes);
        l.extend_from_slice(br#"ate"}}"#);
        bad(&mut cases, l, parse(&id));
        let id = next_id();
        let mut l = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping","#).into_bytes();
        l.extend_from_slice(bytes);
        l.extend_from_slice(br#""params":{}}"#);
        bad(&mut cases, l, parse(&id));
    }
    // nesting deeper than 128 levels: arrays, objects, both, unclosed, with the id before or after
    for depth in [129, 130, 200, 1_000, 100_000, 1_000_000] {
        let id = next_id();
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        bad(
            &mut cases,
            req(&id, "ping", &format!(r#"{{"d":{deep}}}"#)),
            parse(&id),
        );
    }
    for depth in [129, 1_000, 50_000] {
        let id = next_id();
        let deep = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        bad(
            &mut cases,
            format!(r#"{{"jsonrpc":"2.0","method":"ping","params":{deep},"id":{id}}}"#)
                .into_bytes(),
            parse(&id),
        );
    }
    let id = next_id();
    bad(
        &mut cases,
        req(
            &id,
            "ping",
            &format!(r#"{{"m":{}}}"#, r#"[{"a":"#.repeat(500)),
        ),
        parse(&id),
    );
    let id = next_id();
    bad(
        &mut cases,
        call_with(&id, "[".repeat(10_000).as_bytes()),
        parse(&id),
    );
    // byte order marks: one at the start is allowed; elsewhere it is an error
    let id = next_id();
    cases.push(Case {
        line: [b"\xEF\xBB\xBF".as_slice(), &req(&id, "ping", "{}")].concat(),
        expect: Expect::Result(id),
        malformed: false,
    });
    bad(&mut cases, b"\xEF\xBB\xBFgarbage".to_vec(), null(-32700));
    let id = next_id();
    bad(
        &mut cases,
        [
            b"\xEF\xBB\xBF\xEF\xBB\xBF".as_slice(),
            &req(&id, "ping", "{}"),
        ]
        .concat(),
        null(-32700),
    );
    let id = next_id();
    bad(
        &mut cases,
        format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\u{feff}\"method\":\"ping\"}}").into_bytes(),
        parse(&id),
    );
    // NUL bytes
    let id = next_id();
    bad(
        &mut cases,
        call_with(&id, b"{\"action\":\"get\",\"key\":\"a\x00b\"}"),
        parse(&id),
    );
    let id = next_id();
    bad(
        &mut cases,
        format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\0\"method\":\"ping\"}}").into_bytes(),
        parse(&id),
    );
    bad(&mut cases, b"\x00".to_vec(), null(-32700));
    bad(&mut cases, b"\x00\x00\x00".to_vec(), null(-32700));
    bad(
        &mut cases,
        b"\x00{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"ping\"}".to_vec(),
        null(-32700),
    );
    // ids of the wrong type, or numbers that are not integers an id can be
    for id in [
        "{}",
        "[]",
        "[1]",
        "true",
        "false",
        "null",
        "1.5",
        "-0.5",
        r#"{"a":1}"#,
        "9223372036854775808",
        "-9223372036854775809",
        "9007199254740993.0",
    ] {
        bad(
            &mut cases,
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#).into_bytes(),
            null(-32600),
        );
    }
    // batches (not in MCP any more): one error for the whole array
    for b in [
        "[]",
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
        "[1]",
        "[[]]",
        "[{}]",
        "[null]",
        "  [ ]  ",
        r#"[{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"state","arguments":{"action":"set","key":"batch","value":1}}}]"#,
    ] {
        bad(&mut cases, b.into(), null(-32600));
    }
    bad(
        &mut cases,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},"#.into(),
        null(-32700),
    );
    bad(&mut cases, r#"[{"id":5"#.into(), null(-32700));
    // JSON that is not an object
    for v in [
        "1",
        r#""x""#,
        "null",
        "true",
        "false",
        "-0",
        "1e5",
        r#""{\"id\":1}""#,
    ] {
        bad(&mut cases, v.into(), null(-32600));
    }
    // the envelope: jsonrpc, method, result/error, params
    for jsonrpc in [
        None,
        Some(r#""1.0""#),
        Some("2.0"),
        Some(r#""2.0 ""#),
        Some("null"),
        Some(r#"["2.0"]"#),
    ] {
        let id = next_id();
        let line = match jsonrpc {
            Some(v) => format!(r#"{{"jsonrpc":{v},"id":{id},"method":"ping"}}"#),
            None => format!(r#"{{"id":{id},"method":"ping"}}"#),
        };
        bad(&mut cases, line.into_bytes(), Expect::Error(-32600, id));
    }
    for method in [
        None,
        Some("5"),
        Some("null"),
        Some("{}"),
        Some("[]"),
        Some("true"),
    ] {
        let id = next_id();
        let line = match method {
            Some(m) => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{m}}}"#),
            None => format!(r#"{{"jsonrpc":"2.0","id":{id}}}"#),
        };
        bad(&mut cases, line.into_bytes(), Expect::Error(-32600, id));
    }
    for extra in [r#""result":{}"#, r#""error":{"code":1,"message":"x"}"#] {
        let id = next_id();
        bad(
            &mut cases,
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping",{extra}}}"#).into_bytes(),
            Expect::Error(-32600, id),
        );
    }
    for params in ["[]", r#"["state"]"#, r#""x""#, "5", "true"] {
        let id = next_id();
        bad(
            &mut cases,
            req(&id, "tools/call", params),
            Expect::Error(-32602, id),
        );
    }
    // params that do not fit a served method
    for params in [
        None,
        Some("{}"),
        Some("null"),
        Some(r#"{"name":5}"#),
        Some(r#"{"name":null}"#),
        Some(r#"{"name":{}}"#),
        Some(r#"{"name":[]}"#),
        Some(r#"{"name":true}"#),
        Some(r#"{"name":"state","arguments":"x"}"#),
        Some(r#"{"name":"state","arguments":[1]}"#),
        Some(r#"{"name":"state","arguments":5}"#),
        Some(r#"{"name":"state","arguments":true}"#),
        Some(r#"{"name":"state","_meta":5}"#),
    ] {
        let id = next_id();
        let line = match params {
            Some(p) => req(&id, "tools/call", p),
            None => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call"}}"#).into_bytes(),
        };
        bad(&mut cases, line, Expect::Error(-32602, id));
    }
    for params in [
        None,
        Some("{}"),
        Some(r#"{"uri":5}"#),
        Some(r#"{"uri":null}"#),
        Some(r#"{"uri":{}}"#),
        Some(r#"{"uri":[]}"#),
    ] {
        let id = next_id();
        let line = match params {
            Some(p) => req(&id, "resources/read", p),
            None => {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"resources/read"}}"#).into_bytes()
            }
        };
        bad(&mut cases, line, Expect::Error(-32602, id));
    }
    for (method, params) in [
        ("initialize", "{}"),
        ("initialize", r#"{"protocolVersion":5}"#),
        ("resources/list", "[]"),
        ("tools/list", "7"),
    ] {
        let id = next_id();
        bad(
            &mut cases,
            req(&id, method, params),
            Expect::Error(-32602, id),
        );
    }
    // methods this server does not have
    for method in [
        "no/such",
        "",
        "tools/calls",
        "TOOLS/CALL",
        "tools/call ",
        "rpc.discover",
        r"\u0000",
    ] {
        let id = next_id();
        cases.push(Case {
            line: req(&id, method, "{}"),
            expect: Expect::Error(-32601, id),
            malformed: false,
        });
    }
    let id = next_id();
    cases.push(Case {
        line: req(&id, "prompts/get", r#"{"name":"x"}"#),
        expect: Expect::Error(-32601, id),
        malformed: false,
    });
    // broken notifications: never answered
    for note in [
        &br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{}}}"#[..],
        br#"{"jsonrpc":"1.0","method":"notifications/initialized"}"#,
        br#"{"method":5}"#,
        br#"{"jsonrpc":"2.0","method":"notifications/initialized""#,
        br#"{"jsonrpc":"2.0","method":"notifications/x","params":{"s":"\ud800"}}"#,
        b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\",\"params\":{\"s\":\"\xff\"}}",
        br#"{"jsonrpc":"2.0","method":"notifications/x","params":{"n":1e400}}"#,
        br#"{"jsonrpc":"2.0","method":"notifications/progress","params":[1]}"#,
        br#"{"jsonrpc":"2.0","method":"notifications/nope"}"#,
        br#"{"jsonrpc":"2.0","method":"x/y","params":{}}"#,
        br#"{"jsonrpc":"2.0","method":"notifications/cancelled"}"#,
    ] {
        bad(&mut cases, note.to_vec(), Expect::Nothing);
    }
    bad(
        &mut cases,
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/x","params":{}{}}}"#,
            "[".repeat(5_000),
            "]".repeat(5_000)
        )
        .into_bytes(),
        Expect::Nothing,
    );
    // responses from the client to nothing it was asked: never answered
    for resp in [
        r#"{"jsonrpc":"2.0","id":"r1","result":{}}"#,
        r#"{"jsonrpc":"2.0","id":"r2","error":{"code":1,"message":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":"r3","error":5}"#,
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":"r4","result":{"n":1e400}}"#,
    ] {
        bad(&mut cases, resp.into(), Expect::Nothing);
    }
    // blank lines
    for blank in ["", " ", "\t", "\r", "   \t  "] {
        bad(&mut cases, blank.into(), Expect::Nothing);
    }
    // objects with neither an id nor a method
    for o in [
        "{}",
        r#"{"jsonrpc":"2.0"}"#,
        r#"{"params":{}}"#,
        r#"{"jsonrpc":"2.0","params":{"id":1}}"#,
    ] {
        bad(&mut cases, o.into(), null(-32600));
    }
    // something after the object
    for tail in [
        " x",
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ",",
        "]",
    ] {
        let id = next_id();
        bad(
            &mut cases,
            [req(&id, "ping", "{}"), tail.as_bytes().to_vec()].concat(),
            parse(&id),
        );
    }
    // bad escapes and raw control characters in strings
    for s in [r"\x", r"\u12", r"\u12G4", r"\'", "\t", "\u{1}", "\u{1f}"] {
        let id = next_id();
        bad(
            &mut cases,
            call_with(&id, format!(r#"{{"action":"get","key":"{s}"}}"#).as_bytes()),
            parse(&id),
        );
    }
    // numbers and literals JSON does not have
    for v in [
        "01",
        "+1",
        ".5",
        "1.",
        "NaN",
        "Infinity",
        "-Infinity",
        "0x10",
        "1e",
        "-",
        "1_000",
        "tru",
        "nul",
        "True",
        "None",
        "undefined",
    ] {
        let id = next_id();
        bad(
            &mut cases,
            call_with(
                &id,
                format!(r#"{{"action":"set","key":"k","value":{v}}}"#).as_bytes(),
            ),
            parse(&id),
        );
    }
    // longer than 16 MiB: the id is read from the start of the line when it is there
    let pad = "x".repeat(17 * 1024 * 1024);
    let id = next_id();
    bad(
        &mut cases,
        req(&id, "ping", &format!(r#"{{"pad":"{pad}"}}"#)),
        Expect::Error(-32600, id),
    );
    bad(
        &mut cases,
        format!(r#"{{"jsonrpc":"2.0","method":"ping","params":{{"pad":"{pad}"}},"id":7}}"#)
            .into_bytes(),
        null(-32600),
    );

    // well-formed requests, some of them odd
    let good = |cases: &mut Vec<Case>, line: Vec<u8>, id: Value| {
        cases.push(Case {
            line,
            expect: Expect::Result(id),
            malformed: false,
        })
    };
    let id = next_id();
    good(
        &mut cases,
        req(
            &id,
            "ping",
            &format!(r#"{{"pad":"{}"}}"#, "y".repeat(15 * 1024 * 1024)),
        ),
        id,
    );
    for (raw, echoed) in [
        ("0", json!(0)),
        ("-42", json!(-42)),
        ("5001.0", json!(5001)),
        ("7e3", json!(7000)),
        ("9223372036854775807", json!(i64::MAX)),
        ("-9223372036854775808", json!(i64::MIN)),
        (r#""""#, json!("")),
        (r#""ид-😀""#, json!("ид-😀")),
        (r#""a\u0062""#, json!("ab")),
    ] {
        good(
            &mut cases,
            format!(r#"{{"jsonrpc":"2.0","id":{raw},"method":"ping"}}"#).into_bytes(),
            echoed,
        );
    }
    let long = "L".repeat(10_000);
    good(
        &mut cases,
        format!(r#"{{"jsonrpc":"2.0","id":"{long}","method":"ping"}}"#).into_bytes(),
        json!(long),
    );
    let id = next_id();
    good(
        &mut cases,
        format!("  \t{{ \"jsonrpc\" : \"2.0\" , \"id\" : {id} , \"method\" : \"ping\" }}  \r")
            .into_bytes(),
        id,
    );
    let id = next_id();
    good(
        &mut cases,
        req(
            &id,
            "ping",
            &format!(r#"{{"d":{}{}}}"#, "[".repeat(100), "]".repeat(100)),
        ),
        id,
    );
    for value in [
        "1e-400",
        "1234567890123456789012345678901234567890",
        r#""\u0000""#,
        "\"\u{feff}\"",
        r#""\ud83d\ude00""#,
    ] {
        let id = next_id();
        good(
            &mut cases,
            call_with(
                &id,
                format!(r#"{{"action":"set","key":"k","value":{value}}}"#).as_bytes(),
            ),
            id,
        );
    }
    for (method, params) in [
        ("tools/list", "{}"),
        ("tools/list", "null"),
        ("resources/templates/list", "{}"),
        ("resources/list", "{}"),
        (
            "tools/call",
            r#"{"name":"state","arguments":{"action":"get","key":"k"}}"#,
        ),
        ("tools/call", r#"{"name":"nope"}"#),
        ("tools/call", r#"{"name":"help","arguments":null}"#),
    ] {
        let id = next_id();
        good(&mut cases, req(&id, method, params), id);
    }
    let id = next_id();
    cases.push(Case {
        line: req(&id, "resources/read", r#"{"uri":"artifact://nope"}"#),
        expect: Expect::Error(-32002, id),
        malformed: false,
    });
    cases
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

/// Every form of `secret` the README says is masked: raw, each line, hex (both cases), base64 (the
/// characters that do not depend on what surrounds it, standard and URL-safe), percent-encoded (both
/// cases of hex digits), JSON-escaped.
fn masked_forms(secret: &str) -> Vec<String> {
    fn b64(bytes: &[u8], url: bool) -> String {
        let alphabet: &[u8] = if url {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        } else {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        };
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..=c.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
    let mut parts: Vec<String> = vec![secret.to_owned()];
    parts.extend(secret.lines().map(str::to_owned));
    let mut forms = Vec::new();
    for p in &parts {
        forms.push(p.clone());
        let hex: String = p.bytes().map(|b| format!("{b:02x}")).collect();
        forms.push(hex.to_uppercase());
        forms.push(hex);
        let pct: String = p
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let b = pct.as_bytes();
        let lower: String = (0..b.len())
            .map(|i| {
                let hex_digit = (i >= 1 && b[i - 1] == b'%') || (i >= 2 && b[i - 2] == b'%');
                if hex_digit {
                    (b[i] as char).to_ascii_lowercase()
                } else {
                    b[i] as char
                }
            })
            .collect();
        forms.push(lower);
        forms.push(pct);
        forms.push(
            serde_json::to_string(p)
                .expect("json")
                .trim_matches('"')
                .to_owned(),
        );
        for url in [false, true] {
            // the middle of the encoding, whatever the alignment
            let e = b64(p.as_bytes(), url);
            if e.len() > 8 {
                forms.push(e[4..e.len() - 4].to_owned());
            }
        }
    }
    forms.retain(|f| f.len() >= 8);
    forms
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_input_is_masked_in_every_channel_and_form() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("runbooks")).expect("mkdir");
    // each step shows the secret in a form: the encodings, a failing step's stderr and error, state
    let script = "import sys, json, base64, urllib.parse as u\nt = sys.argv[1]\nb = t.encode()\nprint(t)\nprint(b.hex(), b.hex().upper())\nprint(base64.b64encode(b).decode(), base64.urlsafe_b64encode(b).decode())\nq = u.quote(t, safe='')\nprint(q, ''.join(c.lower() if i and q[i-1] == '%' or i > 1 and q[i-2] == '%' else c for i, c in enumerate(q)))\nprint(json.dumps(t))\nfor l in t.splitlines(): print(base64.b64encode(l.encode()).decode())\n";
    std::fs::write(dir.path().join("show.py"), script).expect("script");
    std::fs::write(
        dir.path().join("runbooks/canary.yaml"),
        format!(
            "name: canary.all\ninputs:\n  token: {{type: string, secret: true}}\nsteps:\n  - id: show\n    tool: local\n    args: {{action: exec, command: 'python3 {py} {{{{ input.token }}}}'}}\n  - id: fail\n    tool: local\n    continue_on_error: true\n    args: {{action: exec, command: 'echo {{{{ input.token }}}} >&2; exit 3'}}\n  - id: keep\n    tool: state\n    args: {{action: set, scope: persistent, key: tok, value: '{{{{ input.token }}}}'}}\noutputs:\n  said: '{{{{ steps.show.stdout }}}}'\n",
            py = dir.path().join("show.py").display()
        ),
    )
    .expect("runbook");
    let secret = "Canary-Line-One-4f2a9e\nCanary\"Two\\x /9b8c7d";
    let s = start(dir.path(), true).await;
    let r = call(
        &s,
        "runbook",
        json!({"action": "run", "name": "canary.all", "input": {"token": secret}}),
    )
    .await;
    let shown = body(&r).to_string();
    // the script ran and printed each form, each one masked
    assert!(shown.matches("[REDACTED]").count() >= 8, "{shown}");
    // the same as a job, read back through jobs
    let j = call(
        &s,
        "runbook",
        json!({"action": "run", "name": "canary.all", "input": {"token": secret}, "async": true}),
    )
    .await;
    let id = body(&j)["result"]["job_id"]
        .as_str()
        .expect("job")
        .to_owned();
    let waited = call(
        &s,
        "jobs",
        json!({"action": "wait", "job_id": id, "timeout_ms": 20000}),
    )
    .await;
    let mut seen = vec![shown, body(&waited).to_string()];
    for (tool, args) in [
        (
            "state",
            json!({"action": "get", "scope": "persistent", "key": "tok"}),
        ),
        ("audit", json!({"action": "tail", "limit": 50})),
        ("evidence", json!({"action": "list"})),
        ("jobs", json!({"action": "list"})),
    ] {
        seen.push(body(&call(&s, tool, args).await).to_string());
    }
    stop(s).await;
    // a new process, with an empty redactor, reads persistent state
    let out = crate::infra_in(dir.path(), dir.path())
        .args(["state", "get", "tok"])
        .output()
        .expect("state get");
    seen.push(String::from_utf8_lossy(&out.stdout).into_owned());
    seen.push(String::from_utf8_lossy(&out.stderr).into_owned());

    let forms = masked_forms(secret);
    for text in &seen {
        for f in &forms {
            assert!(!text.contains(f.as_str()), "{f:?} shown in {text}");
        }
    }
    let refs: Vec<&str> = forms.iter().map(String::as_str).collect();
    let leaks: Vec<String> = crate::files_containing(dir.path(), &refs)
        .into_iter()
        .filter(|p| !p.ends_with("show.py"))
        .collect();
    assert!(
        leaks.is_empty(),
        "a form of the secret was written to {leaks:?}"
    );
}
