//! Tests of `mod.rs` (the rmcp adapter): in-process protocol round trips and the framing's checks.

use super::*;
use rmcp::model::CallToolRequestParams;

#[test]
fn the_instructions_name_every_registered_tool_but_local() {
    let text = instructions();
    for t in engine::actions::registry() {
        assert_eq!(
            text.contains(t.name),
            t.name != "local",
            "{}: {text}",
            t.name
        );
    }
}

/// The framing's idea of a valid id is rmcp's, so what it lets through rmcp answers with that id.
#[test]
fn request_ids_agree_with_rmcp() {
    for raw in [
        "1",
        "-1",
        "0",
        "1.0",
        "1e3",
        "-0",
        "\"\"",
        "\"x\"",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "1.5",
        "9007199254740992.0",
        "null",
        "true",
        "[]",
        "{}",
    ] {
        let v: Value = serde_json::from_str(raw).expect(raw);
        let ours = wire::request_id(&v);
        let theirs = serde_json::from_value::<rmcp::model::RequestId>(v)
            .ok()
            .map(rmcp::model::NumberOrString::into_json_value);
        assert_eq!(ours, theirs, "{raw}");
    }
}

#[test]
fn bad_params_of_a_served_method_are_invalid_params() {
    let fault = |line: &str| {
        let v: Value = serde_json::from_str(line).expect("json");
        let id = wire::request_id(&v["id"]);
        typed(v, id).err().map(|f| (f.code, f.id))
    };
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"help","arguments":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":[]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
    ] {
        assert_eq!(
            fault(line),
            Some((wire::INVALID_PARAMS, serde_json::json!(1))),
            "{line}"
        );
    }
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"help"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"no/such/method","params":{}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{}}}"#,
    ] {
        assert_eq!(fault(line), None, "{line}");
    }
}

/// The server and an rmcp client in one process, over an in-memory pipe.
#[tokio::test(flavor = "multi_thread")]
async fn in_process_list_and_call() {
    let dir = tempfile::tempdir().expect("tmp");
    let engine = Engine::new(
        engine::ctx::Config::at(dir.path()),
        Arc::new(engine::Catalog::builtin()),
    );
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(async move {
        let running = Server::new(engine).serve(server_io).await.expect("serve");
        running.waiting().await.expect("wait")
    });
    let client = ().serve(client_io).await.expect("initialize");
    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(tools.first().map(|t| t.name.as_ref()), Some("help"));
    assert!(
        tools.iter().all(|t| t.name != "local"),
        "local needs the opt-in"
    );
    let args = serde_json::json!({"action": "set", "key": "k", "value": [1, 2]});
    let r = client
        .call_tool(
            CallToolRequestParams::new("state")
                .with_arguments(args.as_object().cloned().unwrap_or_default()),
        )
        .await
        .expect("tools/call");
    assert_eq!(r.is_error, Some(false));
    let body = r.structured_content.expect("structured");
    assert_eq!(body["result"]["value"], serde_json::json!([1, 2]));
    // the same JSON is in the text content
    let text = r
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()));
    assert_eq!(
        text.and_then(|t| serde_json::from_str::<Value>(&t).ok()),
        Some(body)
    );
    client.cancel().await.expect("close");
    assert!(matches!(
        server.await.expect("join"),
        QuitReason::Closed | QuitReason::Cancelled
    ));
}
