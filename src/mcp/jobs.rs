//! Jobs: calls started with `async: true`, each made by a detached `infra` worker process of its own
//! while the caller gets its `job_id` at once. A job outlives the server that started it.
//!
//! The server (`Jobs::start`) refuses a job past `INFRA_MAX_JOBS` running ones (`too_many_jobs`,
//! audited as a refused call), writes the job row (`Store::job_started`), spawns `infra __worker <id>`
//! (the same executable, environment and working directory as the server, stdout and stderr to
//! `/dev/null`) and writes the request on the worker's stdin, a pipe it then closes: the call's name
//! and arguments and the configuration the server runs with. The request never touches the disk, so
//! a secret among the arguments is in no file. The server names the worker as the job's owner
//! (`Store::job_owner`) and reaps it on a thread; it never waits for it, and neither its exit nor a
//! `kill -9` reaches the worker.
//!
//! The worker (`worker::work`) starts a session of its own (`setsid`: no terminal, no signal sent to the
//! server's group), reads the request, builds its engine from the environment it inherited, claims
//! the row (`Store::job_claim`: once, and only a job its starter gave it; a worker started by hand
//! takes nothing over) and refuses to run (`refused`, audited) when its configuration is not the one
//! the server sent (profiles directory, opt-ins, audit key): a worker never has a power the server
//! lacked. It makes the call through `catalogue::call`, the path of every call (policy gate, approvals,
//! audit, evidence, redaction): a call that needs an approval answers `approval_required` in the
//! job's result and runs nothing. A beat thread writes its heartbeat every 2 s and polls every 200 ms
//! for a cancel asked by any process (`Store::job_request_cancel`), which it turns into the call's
//! `CancelToken`. The run the call starts is recorded in the row (`Store::job_run`), so any process
//! can show its output while it runs. The worker writes how the job ended (`Store::job_finished`) and
//! exits; a worker that dies reads back as `interrupted` (`store` decides, on read).
//!
//! A detached remote command (`ssh exec` with `detach: true`) is a job with no worker: `refresh` asks
//! its target how it is (and writes how it ended), `remote_logs` reads the end of its log, and
//! `cancel` kills its process group there (`engine::actions::ssh::detach`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use engine::actions::ssh::detach::{self, Probe};
use engine::ctx::{Config, ProcessRef};
use engine::run::Engine;
use engine::store::Store;
use serde_json::{Map, Value, json};

use super::reply::Reply;

/// The hidden subcommand a worker runs as.
pub const WORKER_COMMAND: &str = "__worker";

/// Starts the jobs of a server. A job lives in the store and its worker; this holds only the lock
/// that makes counting the running jobs and starting one a single step for this server's calls.
#[derive(Debug, Default)]
pub struct Jobs {
    starting: std::sync::Mutex<()>,
}

/// What of a configuration a worker must share with the server that started it: where it keeps its
/// records and every opt-in.
pub(super) fn powers(c: &Config) -> Value {
    json!({
        "profiles_dir": c.profiles_dir,
        "artifacts_root": c.artifacts_root,
        "runbooks_path": c.runbooks_path,
        "capabilities_path": c.capabilities_path,
        "unsafe_local": c.unsafe_local,
        "allow_secret_export": c.allow_secret_export,
        "http_deny_private": c.http_deny_private,
        "read_only": c.read_only,
        "audit_key": c.audit_key.is_some(),
    })
}

impl Jobs {
    /// Starts the call `name` with `args` (its tool `tool` and action `action`, as the job row names
    /// them) in a worker, and answers its job id at once.
    pub fn start(
        &self,
        engine: &Arc<Engine>,
        tool: &str,
        action: &str,
        name: &str,
        args: Map<String, Value>,
    ) -> Reply {
        let store = match engine.store() {
            Ok(s) => s,
            Err(e) => return Reply::error("store_unavailable", e.to_string(), None, None),
        };
        // counted and started under one lock: calls of this server cannot start more than the most
        // (servers of one profiles directory at once can pass it by the calls they start together)
        let _one = self
            .starting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let most = engine.config().max_jobs;
        match store.jobs_running() {
            Ok(n) if n >= most => {
                return Reply::error(
                    "too_many_jobs",
                    format!(
                        "{n} jobs are running, the most this profiles directory runs at once \
                         (INFRA_MAX_JOBS={most}); nothing was started"
                    ),
                    Some(
                        "wait for one to end (`jobs {action: wait}`), cancel one (`jobs {action: \
                         cancel}`), or make the call without `async`"
                            .into(),
                    ),
                    None,
                );
            }
            Ok(_) => {}
            Err(e) => return Reply::error("store_unavailable", e.to_string(), None, None),
        }
        let id = engine::ctx::new_id();
        if let Err(e) = store.job_started(&id, tool, action) {
            return Reply::error("store_unavailable", e.to_string(), None, None);
        }
        let request =
            json!({"job_id": id, "name": name, "args": args, "config": powers(engine.config())});
        if let Err(e) = spawn_worker(store, &id, &request) {
            let reply = Reply::error(
                "spawn_failed",
                format!("cannot start the job's worker: {e}"),
                None,
                None,
            );
            let _ = store.job_finished(&id, "failed", &reply.body);
            return reply;
        }
        Reply::ok(
            format!("job {id} started: `jobs {{action: wait, job_id}}` waits for it"),
            json!({"job_id": id, "status": "running", "tool": tool, "action": action}),
        )
    }
}

/// Spawns the worker of job `id`, hands it `request` through its stdin, names it the job's owner and
/// reaps it on a thread of its own.
fn spawn_worker(store: &Store, id: &str, request: &Value) -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg(WORKER_COMMAND)
        .arg(id)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let written = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))
        .and_then(|mut w| w.write_all(request.to_string().as_bytes()));
    let pid = i64::from(child.id());
    if let Err(e) = written {
        // it never got its request, so it runs nothing
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    // from here the worker has its job: what follows is best effort (the worker claims the job as
    // its starter's child anyway; a worker not reaped stays a zombie until this server exits)
    let _ = store.job_owner(id, &ProcessRef::of(pid));
    let _ = std::thread::Builder::new()
        .name(format!("job-{}", id.get(..8).unwrap_or(id)))
        .spawn(move || child.wait());
    Ok(())
}

/// A detached remote command's job (`ssh exec` with `detach: true`) as its target says it is now: a
/// running one is asked over SSH (`detach::probe`), and how it ended is written to the store. Any
/// other job, and a remote one that cannot be reached (`remote_error` says why), is `row` as it is.
pub fn refresh(engine: &Engine, id: &str, mut row: Value) -> Value {
    if row["status"] != "running" || row.get("remote").is_none() {
        return row;
    }
    let c = engine.config();
    match detach::probe(
        c,
        engine.redactor(),
        engine.pools(),
        &row["remote"],
        Probe::Status,
    ) {
        Ok(v) if v["status"] != "running" => {
            if let Ok(store) = engine.store() {
                let _ =
                    store.job_finished(id, v["status"].as_str().unwrap_or("failed"), &ended(&v));
                if let Ok(Some(r)) = store.job(id) {
                    return r;
                }
            }
            row
        }
        Ok(_) => row,
        Err(e) => {
            row["remote_error"] = e.message.into();
            row
        }
    }
}

/// What a detached command's job returned, once it ended: its exit code and where its files are.
fn ended(v: &Value) -> Value {
    let ok = v["status"] == "succeeded";
    json!({
        "ok": ok,
        "summary": format!("the detached command {} (exit code {})", v["status"].as_str().unwrap_or(""), v["exit_code"]),
        "result": v,
    })
}

/// The end of a detached remote command's log (at most `detach::LOG_TAIL` bytes, redacted) and its
/// status, read over SSH; `None` for any other job.
pub fn remote_logs(engine: &Engine, row: &Value) -> Option<Reply> {
    let remote = row.get("remote")?;
    let id = row["job_id"].as_str().unwrap_or("");
    Some(
        match detach::probe(
            engine.config(),
            engine.redactor(),
            engine.pools(),
            remote,
            Probe::Logs,
        ) {
            Ok(v) => Reply::ok(
                format!(
                    "job {id}: the end of its detached command's log ({})",
                    v["status"].as_str().unwrap_or("")
                ),
                v,
            ),
            Err(e) => Reply::error(e.kind.as_str(), e.message, e.hint, None),
        },
    )
}

/// Asks job `id` (as `row`, read from the store) to stop, from any process: a worker's job through
/// the store (its worker cancels it), a detached remote command by killing its process group on the
/// target. A job that ended is left as it is; one whose worker or remote command is gone is refused,
/// with why.
pub fn cancel(engine: &Engine, id: &str, row: &Value) -> Reply {
    let store = match engine.store() {
        Ok(s) => s,
        Err(e) => return Reply::error("store_unavailable", e.to_string(), None, None),
    };
    let status = row["status"].as_str().unwrap_or("");
    let remote = row.get("remote");
    match (status, remote) {
        ("running", Some(remote)) => {
            let c = engine.config();
            match detach::probe(c, engine.redactor(), engine.pools(), remote, Probe::Cancel) {
                Ok(v) => {
                    let _ = store.job_finished(
                        id,
                        v["status"].as_str().unwrap_or("cancelled"),
                        &ended(&v),
                    );
                    Reply::ok(
                        format!("job {id}: its detached command's process group was killed"),
                        json!({"job_id": id, "status": v["status"], "remote": v}),
                    )
                }
                Err(e) => Reply::error(e.kind.as_str(), e.message, e.hint, None),
            }
        }
        ("running", None) => match store.job_request_cancel(id) {
            Ok(true) => Reply::ok(
                format!("job {id}: cancel requested; its worker stops it"),
                json!({"job_id": id, "status": "cancelling", "pid": row["pid"]}),
            ),
            // it ended between the read and the request
            Ok(false) => Reply::ok(format!("job {id} already ended"), row.clone()),
            Err(e) => Reply::error("store_unavailable", e.to_string(), None, None),
        },
        ("interrupted", _) => {
            let gone = match remote {
                Some(r) => format!(
                    "its detached command (process group {} on `{}`) is gone",
                    r["pid"],
                    r["target"].as_str().unwrap_or("")
                ),
                None => format!("its worker (pid {}) is gone", row["pid"]),
            };
            Reply::error(
                "refused",
                format!("job `{id}` cannot be cancelled: {gone}, so the job was interrupted and nothing of infra runs it any more"),
                Some(
                    "processes the job started may still run: its run's evidence (`jobs {action: logs}`) names them; start the call again if it must finish".into(),
                ),
                Some("/job_id".into()),
            )
        }
        (other, _) => Reply::ok(format!("job {id} already ended: {other}"), row.clone()),
    }
}

/// Where a job's run keeps its files, once its worker started one: the run's id, directory and
/// artifact URI base.
pub fn run_of(row: &Value) -> Option<(String, PathBuf, String)> {
    let run = row.get("run")?;
    Some((
        run["run_id"].as_str()?.to_owned(),
        PathBuf::from(run["dir"].as_str()?),
        run["uri_base"].as_str()?.to_owned(),
    ))
}
