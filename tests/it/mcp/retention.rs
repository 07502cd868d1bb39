//! `evidence {action: prune}`: refused unless the policy allows it (and the refusal audited), a dry
//! run always answered, a prune that the policy allows removes what retention lets go.

use serde_json::{Value, json};

use super::{audit_records, body, call, stop};
use crate::project::Project;

/// Two finished runs, 40 days old.
fn old_runs(p: &Project) -> engine::store::Store {
    let s = engine::store::Store::open(&p.path().join("store.sqlite3")).expect("store");
    let ago = (chrono::Utc::now() - chrono::Duration::days(40))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for _ in 0..2 {
        let id = engine::ctx::new_id();
        let dir = p.path().join("runs/old").join(&id);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("journal.jsonl"), "{}\n").expect("write");
        s.run_started(&id, "old", &dir, None, &ago, false)
            .expect("row");
        s.run_finished(&id, "succeeded", false).expect("end");
    }
    s
}

fn old_count(s: &engine::store::Store) -> usize {
    s.runs_of(Some("old"), "", 100).expect("runs").len()
}

#[tokio::test(flavor = "multi_thread")]
async fn evidence_prune_is_refused_by_default_and_audited() {
    let p = Project::new();
    let s = old_runs(&p);
    // an automatic pass just ran, so the calls below start none (it would prune the old runs)
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert!(s.claim_pass(&now, &now).expect("claim"));
    let session = p.mcp().await;
    let r = call(&session, "evidence", json!({"action": "prune"})).await;
    assert_eq!(r.is_error, Some(true));
    let b = body(&r);
    assert_eq!(b["error"]["kind"], "refused", "{b}");
    let message = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("approval") && message.contains("nothing was pruned"),
        "{message}"
    );
    assert_eq!(old_count(&s), 2, "nothing was pruned");
    let dry = call(
        &session,
        "evidence",
        json!({"action": "prune", "dry_run": true}),
    )
    .await;
    assert_eq!(body(&dry)["result"]["runs"], 2, "{}", body(&dry));
    assert_eq!(old_count(&s), 2);
    stop(session).await;
    let refused: Vec<Value> = audit_records(p.path())
        .into_iter()
        .filter(|r| r["kind"] == "refused" && r["tool"] == "evidence")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["front_end"], "mcp");
    assert_eq!(refused[0]["policy"]["rule"], "default.destructive");
}

#[tokio::test(flavor = "multi_thread")]
async fn evidence_prune_removes_old_runs_when_the_policy_allows_it() {
    let p = Project::new().file(
        "policy.yaml",
        "rules:\n  - {tool: evidence, action: prune, decision: allow}\n",
    );
    let s = old_runs(&p);
    let session = p.mcp().await;
    let r = call(&session, "evidence", json!({"action": "prune"})).await;
    let b = body(&r);
    assert_eq!(b["ok"], true, "{b}");
    assert_eq!(b["result"]["runs"], 2, "{b}");
    assert_eq!(old_count(&s), 0);
    assert!(
        !p.path()
            .join("runs/old")
            .read_dir()
            .expect("dir")
            .any(|_| true)
    );
    stop(session).await;
    assert!(
        audit_records(p.path())
            .iter()
            .any(|r| r["kind"] == "pruned" && r["front_end"] == "mcp" && r["pruned"]["runs"] == 2)
    );
}
