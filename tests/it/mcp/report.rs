//! A runbook run over MCP leaves `report.html` in its run directory, readable as a resource.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_runs_report_is_a_resource() {
    let p = Project::new().unsafe_local().runbook(
        "fails",
        "flow: dag\nsteps:\n  - {id: ok, tool: local, args: {action: exec, command: 'echo fine'}}\n  - {id: bad, tool: local, args: {action: exec, command: 'echo \"<b>broken</b>\" >&2; exit 4'}}\n",
    );
    let s = p.mcp().await;
    let r = call(&s, "runbook", json!({"action": "run", "name": "fails"})).await;
    let evidence = body(&r)["result"]["evidence"]
        .as_str()
        .unwrap_or_else(|| panic!("{:?}", body(&r)))
        .to_owned();
    let uri = format!("{evidence}/report.html");
    let read = s
        .client
        .read_resource(ReadResourceRequestParams::new(uri.clone()))
        .await
        .expect("resources/read");
    let text = serde_json::to_value(&read.contents[0]).expect("json");
    let html = text["text"].as_str().expect("text");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html:.200}");
    assert!(html.contains("&lt;b&gt;broken&lt;/b&gt;"));
    assert!(!html.contains("<script"));
    // listed with the run's other files
    let listed = s.client.list_all_resources().await.expect("resources/list");
    assert!(listed.iter().any(|r| r.uri == uri), "{uri} not listed");
}
