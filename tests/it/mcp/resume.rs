//! `runbook {action: resume}`: a failed run resumed over MCP reuses what succeeded; a refusal is an
//! error naming its rule, in the audit log.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_resumes_over_mcp_and_a_refusal_names_its_rule() {
    let p = Project::new().unsafe_local();
    let d = p.path().display().to_string();
    let p = p.runbook(
        "pipe",
        &format!("name: pipe\nsteps:\n  - id: a\n    tool: local\n    args: {{action: exec, command: 'echo x >> {d}/count-a; echo from-a'}}\n  - id: b\n    tool: local\n    args: {{action: exec, command: 'test -f {d}/ok-b && echo {{{{ steps.a.stdout | trim }}}} > {d}/b-saw'}}\n"),
    );
    let dir = p.path().to_owned();
    let s = p.mcp().await;
    let first = call(&s, "runbook", json!({"action": "run", "name": "pipe"})).await;
    assert_eq!(first.is_error, Some(true));
    let id = body(&first)["run_id"].as_str().expect("id").to_owned();

    // refused: the step to start from is not there
    let bad = call(
        &s,
        "runbook",
        json!({"action": "resume", "run_id": id, "from": "c"}),
    )
    .await;
    assert_eq!(bad.is_error, Some(true));
    let b = body(&bad);
    assert_eq!(b["error"]["kind"], "invalid_args", "{b}");
    assert_eq!(b["error"]["rule"], "resume.unknown_step", "{b}");

    // refused: a single call is not a runbook's run
    let single = call(&s, "state", json!({"action": "get", "key": "k"})).await;
    let single = body(&single)["run_id"].as_str().expect("id").to_owned();
    let bad = call(&s, "runbook", json!({"action": "resume", "run_id": single})).await;
    assert_eq!(
        body(&bad)["error"]["rule"],
        "resume.not_a_runbook",
        "{}",
        body(&bad)
    );

    std::fs::write(dir.join("ok-b"), "").expect("marker");
    let r = call(
        &s,
        "runbook",
        json!({"action": "resume", "run_id": &id[..12]}),
    )
    .await;
    let r = body(&r);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["resumed_from"], id.as_str());
    assert_eq!(
        r["result"]["steps"][0]["reason"],
        format!("reused from run {id}").as_str()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("count-a"))
            .expect("a ran")
            .lines()
            .count(),
        1
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("b-saw")).expect("b ran"),
        "from-a\n"
    );

    // the resumed run's evidence names the run it resumed
    let ev = call(
        &s,
        "evidence",
        json!({"action": "get", "run_id": r["run_id"]}),
    )
    .await;
    assert!(body(&ev).to_string().contains(&id), "{}", body(&ev));
    stop(s).await;

    let refused = crate::resume::resume_refusals(&dir);
    let rules: Vec<&Value> = refused.iter().map(|r| &r["policy"]["rule"]).collect();
    assert_eq!(
        rules,
        ["resume.unknown_step", "resume.not_a_runbook"],
        "{refused:?}"
    );
    assert!(refused.iter().all(|r| r["front_end"] == "mcp"));
}
