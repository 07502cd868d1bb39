//! `kill -9` of a server in the middle of a stream of calls: every write that reached the store has
//! its intent in the audit log, the chain verifies against the store's head, and every finished call
//! reads back from the calls journal, whatever moment the kill hit.

use serde_json::{Value, json};

use super::{call, start};

/// One round: a server making `state set` (a write) and `state get` (a read) calls back to back,
/// killed after `after_ms`. Returns how many writes it made.
async fn killed_mid_stream(dir: &std::path::Path, round: usize, after_ms: u64) -> usize {
    let s = start(dir, false).await;
    let session = std::sync::Arc::new(s);
    let calls = {
        let s = std::sync::Arc::clone(&session);
        tokio::spawn(async move {
            let mut made = 0usize;
            loop {
                let key = format!("r{round}.k{made}");
                call(
                    &s,
                    "state",
                    json!({"action": "set", "key": key, "value": made}),
                )
                .await;
                made += 1;
                call(&s, "state", json!({"action": "get", "key": key})).await;
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
    let pid = session.child.id().expect("the server's pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    // the calls task fails on the dead server; it is not awaited for a result
    calls.abort();
    let _ = calls.await;
    match std::sync::Arc::try_unwrap(session) {
        Ok(mut s) => {
            let _ = s.child.wait().await;
        }
        Err(_) => panic!("the session is still shared"),
    }
    round
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_at_any_moment_loses_no_write_intent_and_leaves_a_verifiable_chain() {
    let dir = tempfile::tempdir().expect("tmp");
    let cli = |args: &[&str]| {
        let out = crate::infra_in(dir.path(), dir.path())
            .args(args)
            .output()
            .expect("infra");
        (out.status.success(), out)
    };
    // kills at different depths of the stream: at start-up, after a few calls, after many
    for (round, after_ms) in [5u64, 40, 120, 300, 650].into_iter().enumerate() {
        killed_mid_stream(dir.path(), round, after_ms).await;

        let (ok, out) = cli(&["audit", "verify", "--json"]);
        assert!(
            ok,
            "round {round}: the chain does not verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // every key in the store was written by a call whose intent is in the log
        let (ok, out) = cli(&["state", "list", "--json", "-n", "10000"]);
        assert!(ok, "{}", String::from_utf8_lossy(&out.stderr));
        let listed = crate::stdout_json(&out);
        let keys: Vec<String> = listed["items"]
            .as_object()
            .expect("items")
            .keys()
            .cloned()
            .collect();
        let (ok, out) = cli(&["audit", "tail", "--json", "-n", "1000000"]);
        assert!(ok, "{}", String::from_utf8_lossy(&out.stderr));
        let intents: std::collections::HashSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["kind"] == "intent" && r["action"] == "set")
            .filter_map(|r| r["args"]["key"].as_str().map(str::to_owned))
            .collect();
        for k in &keys {
            assert!(
                intents.contains(k),
                "round {round}: `{k}` is in the store with no intent in the audit log"
            );
        }
        // every run the index says finished reads back whole from its journal
        let (ok, out) = cli(&["runs", "list", "--json", "-n", "100000"]);
        assert!(ok, "{}", String::from_utf8_lossy(&out.stderr));
        let runs = crate::stdout_json(&out);
        let finished: Vec<&Value> = runs
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["state"] == "finished")
            .collect();
        if let Some(last) = finished.first() {
            let id = last["run_id"].as_str().expect("run id");
            let (ok, out) = cli(&["runs", "show", id, "--json"]);
            assert!(ok, "{}", String::from_utf8_lossy(&out.stderr));
            let shown = crate::stdout_json(&out);
            let records = shown["records"].as_array().expect("records");
            assert_eq!(
                records.last().map(|r| r["event"].clone()),
                Some(json!("run_finished")),
                "round {round}: {shown}"
            );
        }
    }
    // the rounds together made writes (the kills did not all land before the first call)
    let (_, out) = cli(&["state", "list", "--json", "-n", "10000"]);
    let listed = crate::stdout_json(&out);
    let n = listed["items"].as_object().map_or(0, |o| o.len());
    assert!(n > 0, "no write got through in any round: {listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_writes_the_index_rows_of_reads_it_still_held() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = start(dir.path(), false).await;
    // the store exists (a write made it, durably)
    call(
        &s,
        "state",
        json!({"action": "set", "key": "k", "value": 1}),
    )
    .await;
    // another process holds the store's write lock: the read's index row waits in the server
    let store = rusqlite::Connection::open(dir.path().join("store.sqlite3")).expect("store");
    store.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let r = call(&s, "state", json!({"action": "get", "key": "k"})).await;
    let run_id = super::body(&r)["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    let pid = s.child.id().expect("pid");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    // the server waits on the lock to write what it holds, then exits
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    store.execute_batch("COMMIT").expect("unlock");
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), s.child.wait())
        .await
        .expect("it exits")
        .expect("status");
    assert_eq!(status.code(), Some(143));
    let found: i64 = store
        .query_row("SELECT count(*) FROM runs WHERE id = ?1", [&run_id], |r| {
            r.get(0)
        })
        .expect("query");
    assert_eq!(found, 1, "the read's run is in the index");
}
