//! `pipeline` over MCP: listed, callable by name and its alias, found by `help`, its effect the
//! sink's, and audited; its progress told as notifications.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_is_listed_callable_found_by_help_and_audited() {
    let p = Project::new()
        .unsafe_local()
        .file("in.csv", "id,\"we\"\"ird, name\"\n1,\"a,b\"\n2,\n");
    let s = p.mcp().await;
    let listed = s.client.list_all_tools().await.expect("tools/list");
    let listed = listed
        .iter()
        .find(|t| t.name == "pipeline")
        .expect("pipeline is listed");
    assert_eq!(
        listed.input_schema["properties"]["action"]["enum"],
        json!(["run"])
    );

    let src = p.path().join("in.csv");
    let r = call(
        &s,
        "pipeline",
        json!({"action": "run", "from": {"type": "file", "path": src}, "to": {"type": "artifact"}}),
    )
    .await;
    let b = body(&r);
    assert_eq!(b["ok"], true, "{b}");
    assert_eq!(b["effects"], "read", "{b}");
    assert_eq!(b["result"]["records_read"], 2, "{b}");
    assert_eq!(b["result"]["committed"], true);
    let out = p.path().join("out.csv");
    let r = call(
        &s,
        "mcp_pipeline",
        json!({"action": "run", "from": {"type": "artifact", "uri": b["result"]["uri"]},
               "to": {"type": "file", "path": out}}),
    )
    .await;
    assert_eq!(body(&r)["effects"], "write", "{:?}", body(&r));
    assert_eq!(
        std::fs::read_to_string(&out).expect("written"),
        "id,\"we\"\"ird, name\"\n1,\"a,b\"\n2,\n"
    );

    let h = call(
        &s,
        "help",
        json!({"query": "pipeline stream postgres sftp"}),
    )
    .await;
    assert!(body(&h).to_string().contains("pipeline"), "{:?}", body(&h));
    let h = call(&s, "help", json!({"tool": "pipeline", "action": "run"})).await;
    assert!(
        body(&h).to_string().contains("truncate_first"),
        "{:?}",
        body(&h)
    );
    stop(s).await;
    let audited = audit_records(p.path())
        .iter()
        .filter(|r| r.to_string().contains("pipeline"))
        .count();
    assert!(audited >= 2, "every call is audited");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_tells_its_records_as_progress() {
    let p = Project::new()
        .unsafe_local()
        .file("in.csv", "id,name\n1,a\n2,b\n3,c\n");
    let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("infra"));
    cmd.env_clear()
        .env("MCP_PROFILES_DIR", p.path())
        .env("INFRA_UNSAFE_LOCAL", "1")
        .current_dir(p.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn");
    let (stdout, stdin) = (
        child.stdout.take().expect("out"),
        child.stdin.take().expect("in"),
    );
    let heard = runbooks::Recorder::default();
    let client = heard
        .clone()
        .serve((stdout, stdin))
        .await
        .expect("initialize");
    let mut params = CallToolRequestParams::new("pipeline").with_arguments(
        json!({"action": "run", "from": {"type": "file", "path": p.path().join("in.csv")},
               "to": {"type": "artifact"}})
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    params.set_progress_token(rmcp::model::ProgressToken(
        rmcp::model::NumberOrString::Number(3),
    ));
    use rmcp::model::RequestParamsMeta;
    let r = client.call_tool(params).await.expect("call");
    assert_eq!(r.is_error, Some(false), "{:?}", r.structured_content);
    let messages = heard.0.lock().expect("lock").clone();
    assert!(
        messages
            .iter()
            .any(|m| m.ends_with(": 3 records, 20 bytes read")),
        "{messages:?}"
    );
    let _ = client.cancel().await;
}
