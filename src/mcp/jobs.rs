//! Jobs: calls started with `async: true`, each made on a named thread of its own while the caller gets
//! its `job_id` at once.
//!
//! A job lives in the store (`Store::job_started` with this process's id, then `Store::job_finished`
//! with `succeeded`, `failed` or `cancelled` and the reply), so `jobs` here, in another server, or the
//! CLI's `infra jobs` sees it. What only this process can know is kept in [`Jobs`]: each running job's
//! cancel token (for `jobs cancel` and for the server's exit) and, once it has started a run, that run's
//! id, directory and artifact URI base (heard as `Progress::RunStarted`), so `jobs logs` can show the
//! output of a job still running. An entry is removed after the job's end is in the store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use engine::run::{CancelToken, Engine, Progress};
use serde_json::json;

use super::reply::Reply;

/// The jobs this process runs, by id.
#[derive(Debug, Default)]
pub struct Jobs {
    running: Mutex<HashMap<String, Running>>,
}

/// What this process knows of one of its running jobs.
#[derive(Debug)]
struct Running {
    cancel: CancelToken,
    run: Option<JobRun>,
}

/// The run a job is in: its id, directory and artifact URI base.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub run_id: String,
    pub dir: PathBuf,
    pub uri_base: String,
}

impl Jobs {
    fn running(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `work` (a call of `tool`'s `action`, given the job's cancel token and where its progress
    /// goes) as a job, and answers its id at once.
    pub fn start(
        self: &Arc<Self>,
        engine: &Arc<Engine>,
        tool: &str,
        action: &str,
        work: impl FnOnce(&CancelToken, &(dyn Fn(&Progress) + Sync)) -> Reply + Send + 'static,
    ) -> Reply {
        let store = match engine.store() {
            Ok(s) => s,
            Err(e) => return Reply::error("store_unavailable", e.to_string(), None, None),
        };
        let id = engine::ctx::new_id();
        if let Err(e) = store.job_started(&id, tool, action) {
            return Reply::error("store_unavailable", e.to_string(), None, None);
        }
        let token = CancelToken::new();
        self.running().insert(
            id.clone(),
            Running {
                cancel: token.clone(),
                run: None,
            },
        );
        let (jobs, engine, job) = (Arc::clone(self), Arc::clone(engine), id.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("job-{}", &id[..8]))
            .spawn(move || {
                // the run's directory, as soon as it has one, so `jobs logs` can show output while it runs
                let record_run = |p: &Progress| {
                    if let Progress::RunStarted {
                        run_id,
                        dir,
                        uri_base,
                    } = p
                        && let Some(r) = jobs.running().get_mut(&job)
                    {
                        r.run = Some(JobRun {
                            run_id: run_id.clone(),
                            dir: dir.clone(),
                            uri_base: uri_base.clone(),
                        });
                    }
                };
                let reply = work(&token, &record_run);
                let status = if token.is_cancelled() {
                    "cancelled"
                } else if reply.is_error {
                    "failed"
                } else {
                    "succeeded"
                };
                if let Ok(store) = engine.store() {
                    let _ = store.job_finished(&job, status, &reply.body);
                }
                jobs.running().remove(&job);
            });
        if let Err(e) = spawned {
            self.running().remove(&id);
            return Reply::error("failed", format!("cannot start the job: {e}"), None, None);
        }
        Reply::ok(
            format!("job {id} started: `jobs {{action: wait, job_id}}` waits for it"),
            json!({"job_id": id, "status": "running", "tool": tool, "action": action}),
        )
    }

    /// Cancels job `id`; `false` when it is not running in this process.
    pub fn cancel(&self, id: &str) -> bool {
        match self.running().get(id) {
            Some(r) => {
                r.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// The run job `id` is in, while it runs in this process.
    pub fn run_of(&self, id: &str) -> Option<JobRun> {
        self.running().get(id).and_then(|r| r.run.clone())
    }

    /// Cancels every job this process runs and waits up to `grace` for them to record how they ended (the
    /// server is exiting; their processes must not outlive it).
    pub fn cancel_all(&self, grace: Duration) {
        self.running().values().for_each(|r| r.cancel.cancel());
        let until = Instant::now() + grace;
        while Instant::now() < until && !self.running().is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
