use super::*;

#[test]
fn state_round_trips_and_lists_by_prefix() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Store::open(&dir.path().join("store.sqlite3")).expect("open");
    s.state_set("deploy.a", &json!({"n": 1})).expect("set");
    s.state_set("deploy.b", &json!("x")).expect("set");
    s.state_set("other", &json!(true)).expect("set");
    assert_eq!(s.state_get("deploy.a").expect("get"), Some(json!({"n": 1})));
    let l = s.state_list("deploy.", 10).expect("list");
    assert_eq!(
        l.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["deploy.a", "deploy.b"]
    );
    assert!(s.state_unset("deploy.a").expect("unset"));
    assert!(!s.state_unset("deploy.a").expect("unset twice"));
    assert_eq!(s.state_get("deploy.a").expect("get"), None);
}

#[test]
fn a_running_run_whose_process_is_gone_is_decided_by_its_journal() {
    use crate::record::evidence::{Journal, Record, Status};
    let dir = tempfile::tempdir().expect("tmp");
    let s = Store::open(&dir.path().join("store.sqlite3")).expect("open");
    let started = |id: &str| {
        let run_dir = dir.path().join(id);
        let journal = Journal::create(&run_dir).expect("journal");
        s.run_started(id, "rb", &run_dir, None, "2026-01-01T00:00:00.000Z", true)
            .expect("row");
        journal
    };
    let finished = |j: &Journal, status| {
        j.append(
            &Record::RunFinished {
                run_id: "x".into(),
                ts: "t".into(),
                status,
                duration_ms: 1,
                outputs: Value::Null,
                error: None,
            },
            false,
        )
        .expect("append")
    };
    let state = |id: &str| {
        let r = s.run(id).expect("read").expect("row");
        (r["status"].clone(), r["state"].clone())
    };
    // this process runs it: running, whatever the journal says so far
    let _live = started("live");
    assert_eq!(state("live"), (json!("running"), json!("running")));
    // another process ran them and is gone (a start time no process has)
    let killed = started("killed");
    let lost = started("lost");
    finished(&lost, Status::Failed);
    let done = started("done");
    finished(&done, Status::Succeeded);
    s.run_finished("done", "succeeded", true).expect("finish");
    s.with(|c| {
        c.execute(
            "UPDATE runs SET owner_start = -1 WHERE id IN ('killed', 'lost')",
            [],
        )
    })
    .expect("update");
    drop(killed);
    assert_eq!(
        state("killed"),
        (json!("interrupted"), json!("interrupted"))
    );
    assert_eq!(state("lost"), (json!("failed"), json!("finished")));
    assert_eq!(state("done"), (json!("succeeded"), json!("finished")));
    // a row from before owners were recorded: the journal alone
    s.with(|c| c.execute("UPDATE runs SET owner_pid = NULL WHERE id = 'live'", []))
        .expect("update");
    assert_eq!(state("live"), (json!("interrupted"), json!("interrupted")));
    let listed: Vec<Value> = s.runs(10).expect("runs");
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|r| r.get("state").is_some()));
}

#[test]
fn calls_sharing_a_journal_are_decided_by_their_own_records() {
    use crate::record::evidence::{Record, SessionJournal, Status};
    let dir = tempfile::tempdir().expect("tmp");
    let s = Store::open(&dir.path().join("store.sqlite3")).expect("open");
    let calls = SessionJournal::create(&dir.path().join("runs/.calls")).expect("calls");
    let mut journals = Vec::new();
    for id in ["ended", "killed"] {
        let j = calls.journal().expect("journal");
        let run_dir = dir.path().join("runs/x").join(id);
        s.run_started(id, "x", &run_dir, Some(&j), "2026-01-01", false)
            .expect("row");
        journals.push(j);
    }
    journals[0]
        .append(
            &Record::RunFinished {
                run_id: "ended".into(),
                ts: "t".into(),
                status: Status::Failed,
                duration_ms: 1,
                outputs: Value::Null,
                error: None,
            },
            false,
        )
        .expect("append");
    s.with(|c| c.execute("UPDATE runs SET owner_start = -1", []))
        .expect("update");
    let ended = s.run("ended").expect("read").expect("row");
    assert_eq!(ended["status"], "failed", "its own run_finished");
    assert_eq!(ended["journal"], calls.path().display().to_string());
    let killed = s.run("killed").expect("read").expect("row");
    assert_eq!(killed["status"], "interrupted", "not the other call's end");
    let back = JournalAt::of(&ended).read().expect("records");
    assert_eq!(back.records.len(), 1);
    assert!(!dir.path().join("runs/x").exists(), "no directory per call");
}

#[test]
fn a_store_made_before_owners_were_recorded_is_upgraded() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("store.sqlite3");
    {
        let c = Connection::open(&path).expect("open");
        c.execute_batch(
            "CREATE TABLE runs (id TEXT PRIMARY KEY NOT NULL, runbook TEXT NOT NULL, dir TEXT NOT NULL,
               started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL);
             INSERT INTO runs VALUES ('old', 'rb', '/nonexistent', '2020-01-01', NULL, 'running');
             CREATE TABLE jobs (id TEXT PRIMARY KEY NOT NULL, tool TEXT NOT NULL, action TEXT NOT NULL,
               status TEXT NOT NULL, owner_pid INTEGER NOT NULL, created_at TEXT NOT NULL,
               finished_at TEXT, result TEXT);",
        )
        .expect("old schema");
    }
    let s = Store::open(&path).expect("upgrade");
    assert_eq!(
        s.run("old").expect("read").expect("row")["status"],
        "interrupted"
    );
    s.run_started("new", "rb", dir.path(), None, "2026-01-01", false)
        .expect("insert");
    assert_eq!(
        s.run("new").expect("read").expect("row")["status"],
        "running"
    );
    s.job_started("j", "state", "get").expect("job");
    assert_eq!(s.job("j").expect("read").expect("row")["status"], "running");
    drop(s);
    Store::open(&path).expect("opens again");
}

#[test]
fn two_connections_lose_no_writes() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("store.sqlite3");
    std::thread::scope(|sc| {
        for t in 0..2 {
            let path = path.clone();
            sc.spawn(move || {
                let s = Store::open(&path).expect("open");
                for i in 0..100 {
                    s.state_set(&format!("k.{t}.{i}"), &json!(i)).expect("set");
                }
            });
        }
    });
    let s = Store::open(&path).expect("open");
    assert_eq!(s.state_list("k.", 1000).expect("list").len(), 200);
}

#[test]
fn the_audit_head_only_moves_forward() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Store::open(&dir.path().join("store.sqlite3")).expect("open");
    assert_eq!(s.audit_head().expect("head"), None);
    let head = |seq: u64| Head {
        seq,
        hash: format!("h{seq}"),
        ts: "2026-01-01T00:00:00.000Z".into(),
    };
    s.audit_head_keep(&head(5)).expect("keep");
    s.audit_head_keep(&head(3)).expect("keep");
    assert_eq!(s.audit_head().expect("head"), Some(head(5)));
    s.audit_head_keep(&head(6)).expect("keep");
    assert_eq!(s.audit_head().expect("head"), Some(head(6)));
    // another connection sees it; a durable write raises the synchronous setting to FULL for its
    // own transaction only, and the connection is back at NORMAL after it
    let again = Store::open(&dir.path().join("store.sqlite3")).expect("open");
    assert_eq!(again.audit_head().expect("head"), Some(head(6)));
    let sync = |s: &Store| -> i64 {
        s.with(|c| c.query_row("PRAGMA synchronous", [], |r| r.get(0)))
            .expect("pragma")
    };
    assert_eq!(sync(&s), 1);
    let seen = s
        .with_sync(true, |c| {
            c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
        })
        .expect("durable");
    assert_eq!(seen, 2);
    s.state_set("k", &json!(1)).expect("set");
    assert_eq!(sync(&s), 1);
}

#[test]
fn heads_of_records_that_change_nothing_are_due_in_groups() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("store.sqlite3");
    let head = |seq: u64| Head {
        seq,
        hash: format!("h{seq}"),
        ts: "2026-01-01T00:00:00.000Z".into(),
    };
    let kept = || {
        Store::open(&path)
            .expect("open")
            .audit_head()
            .expect("head")
    };
    // an interval no test outlasts, then none at all
    let mut lazy = LazyStore::new(&path);
    lazy.interval = Duration::from_secs(3600);
    assert!(lazy.due(), "the first head is due at once");
    lazy.keep(&head(1));
    assert_eq!(kept(), Some(head(1)));
    assert!(!lazy.due(), "the next waits for its group");
    // a durable record's head is kept whether or not one is due
    lazy.keep(&head(3));
    assert_eq!(kept(), Some(head(3)));
    lazy.keep(&head(2));
    assert_eq!(kept(), Some(head(3)), "the head only moves forward");
    drop(lazy);
    let mut eager = LazyStore::new(&path);
    eager.interval = Duration::ZERO;
    assert!(eager.due());
    eager.keep(&head(7));
    assert!(eager.due(), "past the interval the next group is due");
    assert_eq!(kept(), Some(head(7)));
}

#[test]
fn a_job_is_claimed_once_by_its_worker_and_cancelled_through_the_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Store::open(&dir.path().join("store.sqlite3")).expect("open");
    s.job_started("j", "local", "exec").expect("job");
    // the job's owner is process 1 (its starter): a process that is neither it nor its child
    // cannot claim it
    s.job_owner(
        "j",
        &ProcessRef {
            pid: 1,
            start: None,
        },
    )
    .expect("owner");
    assert!(
        !s.job_claim("j", 2).expect("claim"),
        "not this process's job"
    );
    assert!(s.job_claim("j", 1).expect("claim"));
    assert!(!s.job_claim("j", 1).expect("claim"), "claimed twice");
    // once claimed, the starter cannot hand it on
    s.job_owner(
        "j",
        &ProcessRef {
            pid: 1,
            start: None,
        },
    )
    .expect("owner");
    assert_eq!(
        s.job("j").expect("read").expect("row")["pid"],
        ProcessRef::current().pid
    );
    let row = s.job("j").expect("read").expect("row");
    assert_eq!(row["status"], "running");
    assert!(row["heartbeat_at"].is_string(), "{row}");
    assert!(!s.job_beat("j", true).expect("beat"));
    assert!(s.job_request_cancel("j").expect("cancel"));
    assert!(
        s.job_beat("j", false).expect("beat"),
        "the worker sees the cancel"
    );
    s.job_finished("j", "cancelled", &json!({})).expect("end");
    assert!(!s.job_request_cancel("j").expect("cancel"), "an ended job");
}

#[test]
fn a_detached_remote_job_is_not_interrupted_by_its_starter_s_exit() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Store::open(&dir.path().join("store.sqlite3")).expect("open");
    s.job_started("local", "local", "exec").expect("job");
    s.job_remote_started(
        "remote",
        "ssh",
        "exec",
        &json!({"target": "t", "dir": "/d", "pid": 7}),
    )
    .expect("remote job");
    // both rows now name a process that is gone
    s.with(|c| c.execute("UPDATE jobs SET owner_pid = 999999999, owner_start = 1", []))
        .expect("owner gone");
    assert_eq!(
        s.job("local").expect("read").expect("row")["status"],
        "interrupted"
    );
    let remote = s.job("remote").expect("read").expect("row");
    assert_eq!(remote["status"], "running");
    assert_eq!(remote["remote"]["pid"], 7);
}

#[test]
fn a_read_s_index_row_is_seen_at_once_here_and_written_by_drop_at_the_latest() {
    use crate::record::evidence::SessionJournal;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("store.sqlite3");
    let calls = SessionJournal::create(&dir.path().join("runs/.calls")).expect("calls");
    let s = Store::open(&path).expect("open");
    let other = Store::open(&path).expect("a second connection");
    let read = |i: usize| {
        let j = calls.journal().expect("journal");
        let id = format!("read{i}");
        s.run_whole(
            &id,
            "state.get",
            &dir.path().join(&id),
            &j,
            "2026-01-01",
            "succeeded",
        )
        .expect("queued");
        id
    };
    for i in 0..50 {
        let id = read(i);
        // this process reads its own rows at once, whether or not the writer wrote them yet
        let row = s.run(&id).expect("read").expect("row");
        assert_eq!(row["runbook"], "state.get");
        assert_eq!(row["journal"], calls.path().display().to_string());
    }
    for i in 50..60 {
        read(i);
    }
    drop(s);
    // every queued row is in the table once the store is dropped: another connection sees them all
    assert_eq!(other.runs_count().expect("count"), 60);
    assert!(other.run("read59").expect("read").is_some());
}
