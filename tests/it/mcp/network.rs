//! Targets over MCP, and the SSH, HTTP and PostgreSQL tools against real servers.

use super::*;

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
