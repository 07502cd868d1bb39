//! `infra __worker <id>`: the process that runs one job, outside the server that started it (what
//! it does and why is in `jobs.rs`). It makes the call through `catalogue::call`, so it sits above
//! both `catalogue` and `jobs`.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use engine::run::{CancelToken, Engine, Progress};
use serde_json::{Map, Value};

use super::catalogue::{CallCx, call};
use super::jobs::{Jobs, powers};
use super::reply::Reply;

/// The largest request a worker reads (an MCP line is at most 16 MiB).
const MAX_REQUEST: u64 = 32 << 20;

/// How often a worker looks for a cancel, and writes its heartbeat.
const POLL: Duration = Duration::from_millis(200);
const BEAT_EVERY: u32 = 10;

/// `infra __worker <id>`: runs job `id` as its worker, with `engine` made from the environment the
/// server handed down. The exit status says only whether the job was this process's to run: how it
/// ended is in the store.
pub fn work(id: &str, engine: impl FnOnce() -> Engine) -> bool {
    // a session of its own: the server's group, its terminal and their signals are not the worker's
    if nix::unistd::setsid().is_err() {
        let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    }
    let mut text = String::new();
    if std::io::stdin()
        .take(MAX_REQUEST)
        .read_to_string(&mut text)
        .is_err()
    {
        return false;
    }
    let Ok(request) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    drop(text);
    if request["job_id"] != id {
        return false;
    }
    let engine = Arc::new(engine());
    let Ok(store) = engine.store() else {
        return false;
    };
    let starter = i64::from(nix::unistd::getppid().as_raw());
    if !matches!(store.job_claim(id, starter), Ok(true)) {
        return false;
    }
    if powers(engine.config()) != request["config"] {
        let reply = Reply::error(
            "refused",
            "the job's worker does not run with the configuration of the server that started it (profiles directory or opt-ins differ); nothing ran",
            Some("start the job again".into()),
            None,
        );
        let rec = engine::record::AuditRecord {
            tool: Some(request["name"].as_str().unwrap_or("").to_owned()),
            front_end: Some("mcp".into()),
            error: reply.body.get("error").cloned(),
            ..engine::record::AuditRecord::new(engine::record::AuditKind::Refused)
        };
        let _ = engine.audit().record(&rec, true);
        let _ = store.job_finished(id, "failed", &reply.body);
        return true;
    }
    let name = request["name"].as_str().unwrap_or("").to_owned();
    let args = match request.get("args") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    drop(request);

    let token = CancelToken::new();
    let done = Arc::new(AtomicBool::new(false));
    let beat = {
        let (engine, token, done, id) = (
            Arc::clone(&engine),
            token.clone(),
            Arc::clone(&done),
            id.to_owned(),
        );
        std::thread::Builder::new()
            .name("job-beat".into())
            .spawn(move || {
                let mut n = 0u32;
                while !done.load(Ordering::Acquire) {
                    if let Ok(store) = engine.store()
                        && matches!(store.job_beat(&id, n.is_multiple_of(BEAT_EVERY)), Ok(true))
                    {
                        token.cancel();
                    }
                    n = n.wrapping_add(1);
                    std::thread::sleep(POLL);
                }
            })
    };
    // a cancel asked before the worker started is seen before anything runs
    if matches!(store.job_beat(id, false), Ok(true)) {
        token.cancel();
    }
    let recorded = AtomicBool::new(false);
    let record_run = |p: &Progress| {
        if let Progress::RunStarted {
            run_id,
            dir,
            uri_base,
        } = p
            && !recorded.swap(true, Ordering::AcqRel)
        {
            let _ = store.job_run(id, run_id, dir, uri_base);
        }
    };
    let jobs = Arc::new(Jobs::default());
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        call(
            &engine,
            &jobs,
            &name,
            args,
            &CallCx {
                cancel: token.clone(),
                progress: Some(&record_run),
                followed: true,
            },
        )
    }));
    let reply = ran.unwrap_or_else(|_| {
        Reply::error(
            "failed",
            "the job's worker failed unexpectedly; its run's evidence says how far it got",
            None,
            None,
        )
    });
    let status = if token.is_cancelled() {
        "cancelled"
    } else if reply.is_error {
        "failed"
    } else {
        "succeeded"
    };
    let _ = store.job_finished(id, status, &reply.body);
    done.store(true, Ordering::Release);
    if let Ok(b) = beat {
        let _ = b.join();
    }
    true
}
