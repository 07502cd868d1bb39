//! The runbook tool over MCP: help, upsert, run with progress, delete, built-in overrides, jobs, and
//! a killed run.

use super::*;

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
    assert!(link.starts_with("artifact://runs/local.exec/"), "{link}");
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
pub(super) struct Recorder(pub(super) std::sync::Arc<std::sync::Mutex<Vec<String>>>);

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
    let id = row["run_id"].as_str().expect("run_id").to_owned();
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
    assert_eq!(row["run_id"], id.as_str());
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
    let ev = call(
        &s,
        "evidence",
        json!({"action": "list", "runbook": "evidence.get"}),
    )
    .await;
    assert_eq!(body(&ev)["result"]["runs"][0]["state"], "finished");
    stop(s).await;
}
