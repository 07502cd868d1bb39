//! The agent's path over MCP: `workspace summary` → `intent explain` → `intent execute` on a real
//! repository, without naming a runbook; refusals are results with the flag named, and audited.

use serde_json::{Value, json};

use super::{body, call, stop};
use crate::project::Project;

#[tokio::test(flavor = "multi_thread")]
async fn summary_then_explain_then_execute_on_a_repository() {
    let d = tempfile::tempdir().expect("tmp");
    let root = crate::intent::repo(&d.path().join("web"), &[("package.json", "{}\n")]);
    let root_s = root.to_str().expect("utf-8");
    let p = Project::new()
        .file("capabilities.yaml", crate::intent::GATED)
        .targets(&json!({"prod": {"host": "prod.example.invalid", "username": "deploy", "password_env": "SECRET_PW"}}));
    let s = p.mcp().await;

    // one call orients the agent, in under 4 KB, with no credential
    let r = call(
        &s,
        "workspace",
        json!({"action": "summary", "repo_root": root_s}),
    )
    .await;
    let b = body(&r);
    assert_ne!(r.is_error, Some(true), "{b}");
    assert!(b["result"].to_string().len() < 4096, "{b}");
    assert_eq!(b["result"]["tags"], json!(["git", "node"]), "{b}");
    let caps: Vec<&str> = b["result"]["capabilities"]
        .as_array()
        .expect("caps")
        .iter()
        .filter_map(|c| c["intent"].as_str())
        .collect();
    assert!(caps.contains(&"repo.snapshot"), "{b}");
    assert_eq!(b["result"]["targets"][0]["name"], "prod");
    assert!(!b.to_string().contains("SECRET_PW"), "{b}");
    assert_eq!(b["normalized"][0]["to"], "context", "{b}");

    // explain: the capability, why, and the inputs with their sources
    let r = call(
        &s,
        "intent",
        json!({"action": "explain", "intent": "repo.snapshot", "repo_root": root_s}),
    )
    .await;
    let b = body(&r);
    assert_eq!(b["result"]["capability"], "repo.snapshot", "{b}");
    assert_eq!(
        b["result"]["steps"][0]["inputs"]["repo_path"],
        json!(root),
        "{b}"
    );
    assert_eq!(
        b["result"]["steps"][0]["sources"]["repo_path"],
        "map: context.root"
    );

    // dry run: every step rendered, nothing that would change
    let r = call(
        &s,
        "intent",
        json!({"action": "dry_run", "intent": {"type": "repo.snapshot"}, "repo_root": root_s}),
    )
    .await;
    let b = body(&r);
    assert_eq!(b["result"]["preview"]["would_change"], json!([]), "{b}");
    assert_eq!(
        b["result"]["preview"]["would_read"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{b}"
    );
    assert!(b["result"]["digest"].is_string());

    // execute a read intent: one run, its evidence under runs/intent.repo.snapshot/
    let r = call(
        &s,
        "intent",
        json!({"action": "execute", "intent": "repo.snapshot", "repo_root": root_s}),
    )
    .await;
    let b = body(&r);
    assert_ne!(r.is_error, Some(true), "{b}");
    assert_eq!(
        b["result"]["outputs"]["repo.snapshot"]["root"]
            .as_str()
            .map(|x| x.trim_end_matches('/')),
        root.to_str(),
        "{b}"
    );
    assert!(
        b["result"]["evidence"]
            .as_str()
            .expect("uri")
            .starts_with("artifact://runs/intent.repo.snapshot/"),
        "{b}"
    );
    assert!(b["run_id"].is_string());

    // a write intent without `apply`: refused, named, nothing run, audited
    let r = call(
        &s,
        "intent",
        json!({"action": "execute", "intent": "greet", "inputs": {"message": "hi"}}),
    )
    .await;
    let b = body(&r);
    assert_eq!(r.is_error, Some(true));
    assert_eq!(
        (b["error"]["kind"].as_str(), b["error"]["path"].as_str()),
        (Some("refused"), Some("/apply")),
        "{b}"
    );
    let r = call(&s, "intent", json!({"action": "execute", "intent": "greet.forever", "inputs": {"message": "hi"}, "apply": true})).await;
    let b = body(&r);
    assert_eq!(b["error"]["path"], "/confirm", "{b}");
    assert!(!p.path().join("runs/intent.greet").exists());
    let audit = super::audit_records(p.path());
    assert_eq!(
        audit
            .iter()
            .filter(|r| r["kind"] == "refused" && r["tool"] == "intent")
            .count(),
        2
    );

    // the capability actions, by the unlisted `capability` name too; help finds intents
    let r = call(
        &s,
        "capability",
        json!({"action": "get", "capability": "greet"}),
    )
    .await;
    assert_eq!(body(&r)["result"]["runbook"], "hello.world");
    let r = call(&s, "help", json!({"query": "snapshot"})).await;
    let found: Vec<Value> = body(&r)["result"]["intents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        found.iter().any(|i| i["intent"] == "repo.snapshot"),
        "{found:?}"
    );
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_intent_calls_secret_inputs_stay_out_of_the_records() {
    let p = Project::new()
        .runbook(
            "login",
            "inputs:\n  token: {type: string, secret: true}\n  user: {type: string}\nsteps:\n  - {id: s, tool: state, args: {action: set, key: who, value: '{{ input.user }}', scope: session}}\n",
        )
        .file("capabilities.yaml", "version: 1\ncapabilities:\n  login: {runbook: login}\n");
    let s = p.mcp().await;
    let secret = "s3cr3t-t0ken-value";
    for args in [
        json!({"action": "explain", "intent": "login", "inputs": {"token": secret, "user": "bob"}}),
        json!({"action": "execute", "intent": {"type": "login", "inputs": {"token": secret, "user": "bob"}}}),
        json!({"action": "execute", "intent": "login", "inputs": {"token": secret, "user": "bob"}, "apply": true}),
    ] {
        let r = call(&s, "intent", args).await;
        assert!(!body(&r).to_string().contains(secret), "{}", body(&r));
    }
    stop(s).await;
    assert!(
        crate::files_containing(p.path(), &[secret]).is_empty(),
        "the secret was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_workspace_summary_stays_under_4_kb() {
    let d = tempfile::tempdir().expect("tmp");
    let root = crate::intent::repo(&d.path().join("svc"), &[("go.mod", "module svc\n")]);
    let mut caps = String::from("version: 1\ncapabilities:\n");
    for i in 0..60 {
        caps += &format!(
            "  inspect.part{i:02}:\n    description: Inspect part {i} of the service with a long description to fill the summary up quickly.\n    runbook: repo.snapshot\n    when: {{tags_any: [go]}}\n"
        );
    }
    let targets: serde_json::Map<String, Value> = (0..40)
        .map(|i| {
            (
                format!("host{i:02}"),
                json!({"host": format!("h{i}.example.invalid"), "labels": ["web", "prod"]}),
            )
        })
        .collect();
    let p = Project::new()
        .file("capabilities.yaml", &caps)
        .targets(&Value::Object(targets));
    let s = p.mcp().await;
    let r = call(
        &s,
        "context",
        json!({"action": "summary", "path": root.to_str().expect("utf-8")}),
    )
    .await;
    let b = body(&r);
    assert_ne!(r.is_error, Some(true), "{b}");
    assert!(
        b["result"].to_string().len() <= 4000,
        "{}",
        b["result"].to_string().len()
    );
    assert_eq!(b["result"]["totals"]["capabilities"], 61, "{b}");
    assert_eq!(b["result"]["totals"]["targets"], 40, "{b}");
    assert!(
        !b["result"]["capabilities"]
            .as_array()
            .expect("caps")
            .is_empty()
    );
    stop(s).await;
}
