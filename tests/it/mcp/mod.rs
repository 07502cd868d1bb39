//! The MCP server end to end: the built binary, spawned, driven by the rmcp client over its stdio.
//! This file holds the session helpers and the tool listing and call tests; `runbooks` the runbook
//! tool, progress and jobs; `jobs` jobs that outlive their server; `protocol` raw JSON-RPC lines and cancellation; `battery` the malformed
//! line battery; `network` targets, SSH, HTTP and PostgreSQL over MCP; `secrets` masking; `crash` a
//! server killed mid-stream; `intents` the workspace, intent and capability flow; `resume` a failed
//! run resumed; `retention` `evidence prune`.

mod battery;
mod crash;
mod elicitation;
mod intents;
mod jobs;
mod network;
mod pipeline;
mod protocol;
mod report;
mod resume;
mod retention;
mod runbooks;
mod secrets;

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

pub(crate) async fn call(s: &Session, tool: &str, args: Value) -> CallToolResult {
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

pub(crate) fn body(r: &CallToolResult) -> Value {
    r.structured_content.clone().expect("structuredContent")
}

pub(crate) async fn stop(s: Session) {
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
            "intent",
            "k8s",
            "ssh",
            "http",
            "psql",
            "repo",
            "pipeline",
            "state",
            "artifacts",
            "jobs",
            "audit",
            "evidence",
            "context"
        ]
    );
    let text = serde_json::to_string(&tools).expect("json");
    assert!(text.len() < 20 * 1024, "tools/list is {} bytes", text.len());
    let state = tools.iter().find(|t| t.name == "state").expect("state");
    assert_eq!(
        state.input_schema["properties"]["action"]["enum"],
        json!(["set", "get", "list", "unset"])
    );
    assert!(state.input_schema.get("oneOf").is_none());
    let repo = tools.iter().find(|t| t.name == "repo").expect("repo");
    // repo writes (branch, commit, push…): not read-only, and destructive at worst (force)
    assert_eq!(
        repo.annotations.as_ref().and_then(|a| a.read_only_hint),
        Some(false)
    );
    assert!(
        repo.input_schema["properties"]["action"]["enum"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("push")))
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
    assert_eq!(
        body(&r)["normalized"],
        json!([{"from": "mcp_state", "to": "state", "kind": "tool"}])
    );

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

/// Audit records, parsed.
fn audit_records(profiles: &Path) -> Vec<Value> {
    std::fs::read_to_string(profiles.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
