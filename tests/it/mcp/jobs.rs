//! Durable jobs: an `async` call runs in a worker process of its own, which outlives the server that
//! started it (a clean exit or `kill -9`); a new server or the CLI reads, waits for and cancels it; a
//! worker that dies reads back as `interrupted`, and its cancel is refused and audited.

use std::path::Path;

use serde_json::{Value, json};

use super::{body, call, start, stop, wait_for_pid};
use crate::project::Project;

/// Starts `command` as a `local exec` job and answers its id.
async fn start_job(s: &super::Session, command: &str) -> String {
    let r = call(
        s,
        "local",
        json!({"action": "exec", "command": command, "async": true}),
    )
    .await;
    assert_eq!(r.is_error, Some(false), "{:?}", body(&r));
    body(&r)["result"]["job_id"]
        .as_str()
        .expect("job id")
        .to_owned()
}

async fn job(s: &super::Session, action: &str, id: &str) -> Value {
    body(
        &call(
            s,
            "jobs",
            json!({"action": action, "job_id": id, "timeout_ms": 30000}),
        )
        .await,
    )
}

/// Kills a process the test's job started and left behind.
fn kill(pid: &str) {
    let _ = std::process::Command::new("kill")
        .args(["-9", pid])
        .status();
}

/// The audit log's records.
fn audit(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_survives_kill_9_of_its_server_and_a_new_server_reads_and_cancels_it() {
    let p = Project::new().unsafe_local();
    let (pidfile, go) = (p.path().join("pid"), p.path().join("go"));
    let mut s = p.mcp().await;
    let finishing = start_job(
        &s,
        &format!(
            "echo $$ > {}; while [ ! -e {} ]; do sleep 0.05; done; echo finished-after-the-server",
            pidfile.display(),
            go.display()
        ),
    )
    .await;
    let pid = wait_for_pid(&pidfile).await;
    let pidfile2 = p.path().join("pid2");
    let endless = start_job(
        &s,
        &format!("echo $$ > {}; exec sleep 1000", pidfile2.display()),
    )
    .await;
    let pid2 = wait_for_pid(&pidfile2).await;
    s.child.kill().await.expect("kill -9 the server");
    assert!(crate::alive(&pid), "the job's process died with its server");

    // a new server reads both, still running, lets one finish and cancels the other
    let s = start(p.path(), true).await;
    assert_eq!(
        job(&s, "status", &finishing).await["result"]["status"],
        "running"
    );
    assert_eq!(
        job(&s, "status", &endless).await["result"]["status"],
        "running"
    );
    std::fs::write(&go, "").expect("go");
    let done = job(&s, "wait", &finishing).await;
    assert_eq!(done["result"]["status"], "succeeded", "{done}");
    let stdout = done["result"]["result"]["result"]["stdout"]
        .as_str()
        .unwrap_or("");
    assert!(stdout.contains("finished-after-the-server"), "{done}");
    let c = call(&s, "jobs", json!({"action": "cancel", "job_id": endless})).await;
    assert_eq!(c.is_error, Some(false), "{:?}", body(&c));
    assert_eq!(body(&c)["result"]["status"], "cancelling");
    let cancelled = job(&s, "wait", &endless).await;
    assert_eq!(cancelled["result"]["status"], "cancelled", "{cancelled}");
    assert!(!crate::alive(&pid2), "sleep {pid2} survived the cancel");
    // the worker ran the call as any call is run: its run is in the evidence and the audit log
    let run = cancelled["result"]["result"]["run_id"]
        .as_str()
        .expect("run id");
    assert!(
        audit(p.path())
            .iter()
            .any(|r| r["run_id"] == run && r["kind"] == "run_started"),
        "the job's run is not audited"
    );
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_with_9_reads_back_interrupted_and_its_cancel_is_refused() {
    let p = Project::new().unsafe_local();
    let pidfile = p.path().join("pid");
    let s = p.mcp().await;
    let id = start_job(
        &s,
        &format!("echo $$ > {}; exec sleep 1000", pidfile.display()),
    )
    .await;
    let child = wait_for_pid(&pidfile).await;
    let worker = job(&s, "status", &id).await["result"]["pid"].to_string();
    kill(&worker);
    let waited = job(&s, "wait", &id).await;
    assert_eq!(waited["result"]["status"], "interrupted", "{waited}");

    // over MCP: refused, with why, and audited as rejected
    let c = call(&s, "jobs", json!({"action": "cancel", "job_id": id})).await;
    assert_eq!(c.is_error, Some(true));
    let e = &body(&c)["error"];
    assert_eq!(e["kind"], "refused", "{e}");
    let message = e["message"].as_str().unwrap_or("");
    assert!(
        message.contains("worker") && message.contains("gone"),
        "{message}"
    );
    stop(s).await;
    // from the CLI: the same refusal, exit 1, audited with the CLI as its front end
    let out = p
        .infra()
        .args(["jobs", "cancel", &id])
        .output()
        .expect("cancel");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker") && err.contains("gone"), "{err}");
    let records = audit(p.path());
    let refusals: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "rejected" && r["tool"] == "jobs" && r["action"] == "cancel")
        .collect();
    assert_eq!(refusals.len(), 2, "{records:#?}");
    assert!(refusals.iter().any(|r| r["front_end"] == "cli"));
    kill(&child);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_reads_waits_for_shows_the_output_of_and_cancels_a_worker_job() {
    let p = Project::new().unsafe_local();
    let pidfile = p.path().join("pid");
    let s = p.mcp().await;
    let id = start_job(
        &s,
        &format!(
            "echo $$ > {}; echo hello-from-the-job; exec sleep 1000",
            pidfile.display()
        ),
    )
    .await;
    let pid = wait_for_pid(&pidfile).await;
    // the server exits cleanly; its job goes on
    stop(s).await;
    assert!(crate::alive(&pid), "the job ended with its server");

    let prefix = &id[..10];
    let st = crate::stdout_json(
        &p.infra()
            .args(["jobs", "status", prefix, "--json"])
            .output()
            .expect("status"),
    );
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["job_id"], id.as_str());
    // its output so far, from the run the worker recorded
    let mut shown = String::new();
    for _ in 0..250 {
        let out = p
            .infra()
            .args(["jobs", "logs", prefix])
            .output()
            .expect("logs");
        assert!(out.status.success());
        shown = String::from_utf8_lossy(&out.stdout).into_owned();
        if shown.contains("hello-from-the-job") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(shown.contains("hello-from-the-job"), "{shown}");
    let early = p
        .infra()
        .args(["jobs", "wait", prefix, "--timeout", "0"])
        .output()
        .expect("wait");
    assert_eq!(
        early.status.code(),
        Some(1),
        "a running job is not a success"
    );
    assert!(String::from_utf8_lossy(&early.stderr).contains("still running"));

    let c = p
        .infra()
        .args(["jobs", "cancel", prefix])
        .output()
        .expect("cancel");
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let ended = p
        .infra()
        .args(["jobs", "wait", prefix, "--json"])
        .output()
        .expect("wait");
    let ended = crate::stdout_json(&ended);
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert!(!crate::alive(&pid), "sleep {pid} survived the cancel");
    assert!(
        audit(p.path()).iter().any(|r| r["kind"] == "call"
            && r["front_end"] == "cli"
            && r["action"] == "cancel"
            && r["args"]["job_id"] == id.as_str()),
        "the CLI's cancel is not audited"
    );
    // cancelling it again changes nothing
    let again = p
        .infra()
        .args(["jobs", "cancel", prefix])
        .output()
        .expect("cancel");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already ended"));
    // a worker started by hand cannot take a job over: it is not its starter's to give
    let marker = p.path().join("hijacked");
    let request = json!({"job_id": id, "name": "local", "config": {},
        "args": {"action": "exec", "command": format!("touch {}", marker.display())}});
    let hijack = p
        .infra()
        .args(["__worker", &id])
        .write_stdin(request.to_string())
        .output()
        .expect("worker");
    assert_eq!(hijack.status.code(), Some(1));
    assert!(!marker.exists(), "a hand-started worker ran a call");
    let st = crate::stdout_json(
        &p.infra()
            .args(["jobs", "status", &id, "--json"])
            .output()
            .expect("status"),
    );
    assert_eq!(st["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_only_reads_can_be_looked_up_while_it_runs() {
    let srv = crate::support::http::HttpServer::start();
    let p = Project::new();
    let s = p.mcp().await;
    let r = call(
        &s,
        "http",
        json!({"action": "request", "method": "GET", "url": srv.url("/slow?ms=6000"), "async": true}),
    )
    .await;
    assert_eq!(r.is_error, Some(false), "{:?}", body(&r));
    let id = body(&r)["result"]["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();
    // while the GET waits on the server: the job names its run, and the run is there to read
    let mut seen = Value::Null;
    for _ in 0..200 {
        seen = job(&s, "logs", &id).await;
        if seen.get("error").is_none() && seen["result"]["run"]["id"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(seen.get("error").is_none(), "{seen}");
    assert_eq!(job(&s, "status", &id).await["result"]["status"], "running");
    assert_eq!(seen["result"]["run"]["status"], "running", "{seen}");
    let run_id = seen["result"]["run"]["id"]
        .as_str()
        .expect("run")
        .to_owned();
    let ev = body(&call(&s, "evidence", json!({"action": "get", "run_id": run_id})).await);
    assert!(ev.get("error").is_none(), "{ev}");
    let done = job(&s, "wait", &id).await;
    assert_eq!(done["result"]["status"], "succeeded", "{done}");
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_needs_an_approval_answers_approval_required_and_runs_nothing() {
    let p = Project::new().unsafe_local().file(
        "policy.yaml",
        "rules:\n  - {tool: local, decision: approve}\n",
    );
    let marker = p.path().join("ran");
    let s = p.mcp().await;
    let id = start_job(&s, &format!("touch {}", marker.display())).await;
    let done = job(&s, "wait", &id).await;
    assert_eq!(done["result"]["status"], "failed", "{done}");
    assert_eq!(
        done["result"]["result"]["error"]["kind"], "approval_required",
        "{done}"
    );
    assert!(!marker.exists(), "the job ran without its approval");
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_detached_ssh_command_outlives_its_session_and_server_and_is_read_and_cancelled() {
    let sshd = crate::support::sshd::Sshd::start();
    let p = Project::new().targets(&json!({"prod": crate::ssh::target(&sshd)}));
    // the remote side's home, where the job's files go
    let home = p.path().join("remote-home");
    std::fs::create_dir(&home).expect("home");
    let detach = |command: String| json!({"action": "exec", "target": "prod", "detach": true, "env": {"HOME": home}, "command": command});
    let pidfile = p.path().join("remote.pid");
    let mut s = p.mcp().await;
    // quotes, `;`, substitutions: the command is one word to every shell on the way
    let hostile = format!(
        "echo \"it's\" 'a; b' $(echo sub) `echo tick`; echo $$ > {}; exec sleep 1000",
        pidfile.display()
    );
    let r = call(&s, "ssh", detach(hostile)).await;
    assert_eq!(r.is_error, Some(false), "{:?}", body(&r));
    let started = body(&r)["result"].clone();
    assert_eq!(started["detached"], true, "{started}");
    let id = started["job_id"].as_str().expect("job id").to_owned();
    let pid = wait_for_pid(&pidfile).await;
    let dir = std::path::PathBuf::from(started["dir"].as_str().expect("dir"));
    assert!(dir.starts_with(&home), "{started}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir)
            .expect("job dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "the job's directory is private");
    }
    // the server, and so its SSH session, dies; the command goes on
    s.child.kill().await.expect("kill -9 the server");
    assert!(
        crate::alive(&pid),
        "the detached command died with the session"
    );

    let s = start(p.path(), false).await;
    assert_eq!(job(&s, "status", &id).await["result"]["status"], "running");
    let mut log = String::new();
    for _ in 0..250 {
        let l = job(&s, "logs", &id).await;
        log = l["result"]["log"].as_str().unwrap_or("").to_owned();
        if !log.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(log, "it's a; b sub tick\n");
    let c = call(&s, "jobs", json!({"action": "cancel", "job_id": id})).await;
    assert_eq!(c.is_error, Some(false), "{:?}", body(&c));
    assert_eq!(body(&c)["result"]["status"], "cancelled", "{:?}", body(&c));
    assert!(
        !crate::alive(&pid),
        "the detached command {pid} survived the cancel"
    );
    assert_eq!(
        job(&s, "status", &id).await["result"]["status"],
        "cancelled"
    );

    // one that ends by itself: its exit code, read through the CLI as well
    let r = call(&s, "ssh", detach("echo done; exit 3".into())).await;
    let done = body(&r)["result"]["job_id"]
        .as_str()
        .expect("job")
        .to_owned();
    let waited = job(&s, "wait", &done).await;
    assert_eq!(waited["result"]["status"], "failed", "{waited}");
    assert_eq!(
        waited["result"]["result"]["result"]["exit_code"], 3,
        "{waited}"
    );
    let logs = p
        .infra()
        .args(["jobs", "logs", &done])
        .output()
        .expect("logs");
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "done\n");

    // one whose process group is killed behind infra's back: interrupted, and its cancel refused
    let pidfile = p.path().join("gone.pid");
    let r = call(
        &s,
        "ssh",
        detach(format!("echo $$ > {}; exec sleep 1000", pidfile.display())),
    )
    .await;
    let gone = body(&r)["result"].clone();
    let gone_id = gone["job_id"].as_str().expect("job").to_owned();
    wait_for_pid(&pidfile).await;
    let _ = std::process::Command::new("kill")
        .args(["-9", "--", &format!("-{}", gone["pid"])])
        .status();
    let st = job(&s, "wait", &gone_id).await;
    assert_eq!(st["result"]["status"], "interrupted", "{st}");
    let c = call(&s, "jobs", json!({"action": "cancel", "job_id": gone_id})).await;
    assert_eq!(c.is_error, Some(true));
    assert!(
        body(&c)["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is gone")),
        "{:?}",
        body(&c)
    );
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_past_the_most_that_run_at_once_are_refused_and_audited() {
    let p = Project::new().unsafe_local().env("INFRA_MAX_JOBS", "2");
    let s = p.mcp().await;
    let mut ids = Vec::new();
    // the sleeps are killed however the test ends
    let mut pids = Reap(Vec::new());
    for i in 0..2 {
        let pidfile = p.path().join(format!("pid{i}"));
        ids.push(
            start_job(
                &s,
                &format!("echo $$ > {}; exec sleep 1000", pidfile.display()),
            )
            .await,
        );
        pids.0.push(wait_for_pid(&pidfile).await);
    }
    let third = p.path().join("pid-third");
    let r = call(
        &s,
        "local",
        json!({"action": "exec", "command": format!("touch {}", third.display()), "async": true}),
    )
    .await;
    assert_eq!(r.is_error, Some(true), "{:?}", body(&r));
    let e = &body(&r)["error"];
    assert_eq!(e["kind"], "too_many_jobs", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("INFRA_MAX_JOBS=2"),
        "{e}"
    );
    assert!(
        body(&r)["run_id"].is_string(),
        "the refusal is a recorded call"
    );
    assert!(
        audit(p.path())
            .iter()
            .any(|r| r["tool"] == "local" && r["error"]["kind"] == "too_many_jobs"),
        "the refusal is audited"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!third.exists(), "nothing ran");

    // a job whose worker died holds no place: it reads back interrupted, and another starts
    let worker = job(&s, "status", &ids[0]).await["result"]["pid"].to_string();
    kill(&worker);
    kill(&pids.0[0]);
    let waited = job(&s, "wait", &ids[0]).await;
    assert_eq!(waited["result"]["status"], "interrupted", "{waited}");
    let next = start_job(&s, &format!("touch {}", third.display())).await;
    let done = job(&s, "wait", &next).await;
    assert_eq!(done["result"]["status"], "succeeded", "{done}");
    assert!(third.exists());

    let _ = call(&s, "jobs", json!({"action": "cancel", "job_id": ids[1]})).await;
    let _ = job(&s, "wait", &ids[1]).await;
    stop(s).await;
}

/// Processes a test started, killed when it ends (passed or not).
struct Reap(Vec<String>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in &self.0 {
            kill(pid);
        }
    }
}
