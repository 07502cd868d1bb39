//! `pipeline` over MCP: callable by name and found by `help` though the listing leaves it out (the
//! listing is at its budget), its effect the sink's, and audited.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_is_callable_found_by_help_and_audited_though_unlisted() {
    let p = Project::new()
        .unsafe_local()
        .file("in.csv", "id,\"we\"\"ird, name\"\n1,\"a,b\"\n2,\n");
    let s = p.mcp().await;
    let listed = s.client.list_all_tools().await.expect("tools/list");
    assert!(listed.iter().all(|t| t.name != "pipeline"));

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
