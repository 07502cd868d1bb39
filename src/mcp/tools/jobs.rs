//! `jobs`: the calls started with `async: true`, each run by a worker process (`mcp::jobs`), so any
//! server or the CLI reads and cancels them: `list`, `status`, `wait` (polls the store every 25 ms,
//! 30 s by default, at most 300 s), `logs` (the run's journal, through `evidence get`; while the job
//! runs, also the end of each output artifact written so far), `cancel` (asks the worker through the
//! store; a job whose worker is gone is refused, `mcp::jobs::cancel`).

use std::time::{Duration, Instant};

use engine::record::artifacts::{self, From};
use engine::run::Engine;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::evidence;
use crate::mcp::jobs;
use crate::mcp::reply::Reply;
use crate::mcp::schema::{ToolParams, opt_u64};

/// What `jobs` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    pub action: Action,
    /// The job (all but `list`).
    #[serde(default)]
    pub job_id: String,
    /// `wait`: how long, in milliseconds (30 s by default, at most 300 s).
    #[serde(default, deserialize_with = "opt_u64")]
    #[schemars(range(min = 1))]
    pub timeout_ms: Option<u64>,
    /// `list`: at most this many (20 by default).
    #[serde(default, deserialize_with = "opt_u64")]
    #[schemars(range(min = 1))]
    pub limit: Option<u64>,
}

/// What `jobs` does.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    List,
    Status,
    Wait,
    Logs,
    Cancel,
}

impl ToolParams for Params {
    const TOOL: &'static str = "jobs";
}

/// The end of every output artifact a running run has written so far (`<step>/stdout`, `<step>/stderr`,
/// per target under `ssh.batch`): size, URI and the last 4 KiB, redacted. Each is read through its URI,
/// like any artifact read, so no link in the run's directory is followed.
pub(crate) fn live_output(engine: &Engine, dir: &std::path::Path, uri_base: &str) -> Value {
    const TAIL: u64 = 4096;
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && depth < 3 {
                stack.push((p, depth + 1));
            } else if matches!(
                p.file_name().and_then(|n| n.to_str()),
                Some("stdout" | "stderr")
            ) && found.len() < 16
            {
                found.push(p);
            }
        }
    }
    found.sort();
    let root = &engine.config().artifacts_root;
    let streams: Vec<Value> = found
        .iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(dir).ok()?.to_str()?;
            let uri = format!("{uri_base}/{rel}");
            let v = artifacts::read(root, &uri, From::Tail, TAIL, engine.redactor()).ok()?;
            Some(json!({"uri": uri, "bytes": v["total_bytes"], "tail": v["text"]}))
        })
        .collect();
    Value::Array(streams)
}

/// Runs one `jobs` action.
pub fn call(engine: &Engine, p: &Params) -> Reply {
    let store = match engine.store() {
        Ok(s) => s,
        Err(e) => return Reply::error("store_unavailable", e.to_string(), None, None),
    };
    let id = p.job_id.as_str();
    let get = || match store.job(id) {
        Ok(Some(j)) => Ok(jobs::refresh(engine, id, j)),
        Ok(None) => Err(Reply::error(
            "not_found",
            format!("no job `{id}`"),
            Some("`jobs {action: list}` shows them".into()),
            Some("/job_id".into()),
        )),
        Err(e) => Err(Reply::error("store_unavailable", e.to_string(), None, None)),
    };
    match p.action {
        Action::List => match store.jobs(p.limit.unwrap_or(20) as usize) {
            Ok(j) => Reply::ok(format!("{} jobs", j.len()), json!({"jobs": j})),
            Err(e) => Reply::error("store_unavailable", e.to_string(), None, None),
        },
        Action::Status => match get() {
            Ok(j) => Reply::ok(
                format!("job {id} {}", j["status"].as_str().unwrap_or("")),
                j,
            ),
            Err(r) => r,
        },
        Action::Wait => {
            let limit = Duration::from_millis(p.timeout_ms.unwrap_or(30_000).min(300_000));
            let until = Instant::now() + limit;
            loop {
                match get() {
                    Ok(j) if j["status"] != "running" || Instant::now() >= until => {
                        let done = j["status"] != "running";
                        let mut r = Reply::ok(
                            format!("job {id} {}", j["status"].as_str().unwrap_or("")),
                            j,
                        );
                        if !done {
                            r.body["summary"] =
                                format!("job {id} is still running after {} ms", limit.as_millis())
                                    .into();
                        }
                        return r;
                    }
                    // a detached remote command is asked over SSH: less often
                    Ok(j) => {
                        std::thread::sleep(Duration::from_millis(if j.get("remote").is_some() {
                            250
                        } else {
                            25
                        }))
                    }
                    Err(r) => return r,
                }
            }
        }
        Action::Logs => match get() {
            Ok(j) if j.get("remote").is_some() => {
                jobs::remote_logs(engine, &j).unwrap_or_else(|| Reply::ok(String::new(), j))
            }
            Ok(j) => {
                let live = jobs::run_of(&j);
                let run_id = j["result"]["run_id"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| live.as_ref().map(|r| r.0.clone()));
                match run_id {
                    Some(run) => {
                        let mut reply = evidence::get(engine, &run);
                        // a running job also shows the end of its output so far
                        if let Some((_, dir, uri_base)) = &live
                            && j["status"] == "running"
                            && !reply.is_error
                        {
                            reply.body["result"]["output"] = live_output(engine, dir, uri_base);
                            reply.body["result"]["job_status"] = j["status"].clone();
                            reply.body["summary"] = format!("job {id} is running").into();
                        }
                        reply
                    }
                    None => Reply::ok(
                        format!("job {id} has no run yet"),
                        json!({"job": j, "records": []}),
                    ),
                }
            }
            Err(r) => r,
        },
        Action::Cancel => match get() {
            Ok(j) => jobs::cancel(engine, id, &j),
            Err(r) => r,
        },
    }
}
