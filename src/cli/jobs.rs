//! `infra jobs list|status|wait|logs|cancel`: background calls started over MCP with `async: true`,
//! each run by a worker process of its own (`mcp::jobs`), so they are read and cancelled here as from
//! any server. `cancel` asks the worker through the store and is audited (`call`, or `rejected` when
//! refused: a job whose worker is gone). The hidden `infra __worker <id>` is a job's worker.

use std::time::{Duration, Instant};

use engine::record::{AuditKind, AuditRecord};
use engine::store::IdKind;
use serde_json::json;

use super::{FAILED, OK, USAGE, engine};
use crate::render;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Recent jobs, newest first.
    List {
        /// How many to show.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One job and, once it has ended, its result.
    Status {
        /// The job's id, or any unique prefix of it (`infra jobs list` shows them).
        id: String,
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Wait for a job to end and show it (exit 0 when it succeeded, 1 otherwise or when still running).
    Wait {
        /// The job's id, or any unique prefix of it.
        id: String,
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The end of a job's output (each stream of its run, or a detached command's log), running or
    /// ended.
    Logs {
        /// The job's id, or any unique prefix of it.
        id: String,
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a running job: its worker stops it (processes killed, `finally` steps still run); a
    /// detached command's process group is killed on its target.
    Cancel {
        /// The job's id, or any unique prefix of it.
        id: String,
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Prints a reply of `mcp::jobs` (its result as JSON, or its summary and error as text) and answers
/// the exit status.
fn print_reply(r: &crate::mcp::reply::Reply, json: bool) -> u8 {
    if json {
        render::json(&r.body);
    } else if r.is_error {
        let e = &r.body["error"];
        render::err(&format!("error: {}\n", e["message"].as_str().unwrap_or("")));
        if let Some(h) = e["hint"].as_str() {
            render::note(&format!("hint: {h}\n"));
        }
    } else {
        render::out(&format!("{}\n", r.body["summary"].as_str().unwrap_or("")));
    }
    if r.is_error { FAILED } else { OK }
}

/// `infra __worker <id>`: runs job `id` as its worker (started by the server that took the call).
pub fn work(id: &str) -> u8 {
    if crate::mcp::worker::work(id, engine) {
        OK
    } else {
        FAILED
    }
}

pub fn run(cmd: Command) -> u8 {
    let engine = engine();
    let store = match engine.store() {
        Ok(s) => s,
        Err(e) => {
            render::err(&format!("error: {e}\n"));
            return FAILED;
        }
    };
    match cmd {
        Command::List { limit, json } => match store.jobs(limit) {
            Ok(jobs) if json => {
                render::json(&serde_json::Value::Array(jobs));
                OK
            }
            Ok(jobs) => {
                let mut out = String::new();
                for j in &jobs {
                    let s = |k: &str| j[k].as_str().unwrap_or("").to_owned();
                    out.push_str(&format!(
                        "{}  {:20} {:11} {}\n",
                        s("job_id"),
                        format!("{}.{}", s("tool"), s("action")),
                        s("status"),
                        s("created_at")
                    ));
                }
                render::out(&out);
                if jobs.is_empty() {
                    render::note(
                        "no jobs: an MCP call with `async: true` starts one, and they are listed here\n",
                    );
                }
                OK
            }
            Err(e) => {
                render::err(&format!("error: {e}\n"));
                FAILED
            }
        },
        Command::Status { id, json } => {
            let (_, j) = match one(&engine, store, &id) {
                Ok(found) => found,
                Err(code) => return code,
            };
            if json {
                render::json(&j);
            } else {
                render::out(&human(&j));
            }
            OK
        }
        Command::Wait { id, timeout, json } => {
            let (id, mut j) = match one(&engine, store, &id) {
                Ok(found) => found,
                Err(code) => return code,
            };
            let until = Instant::now() + Duration::from_secs(timeout);
            while j["status"] == "running" && Instant::now() < until {
                let remote = j.get("remote").is_some();
                std::thread::sleep(Duration::from_millis(if remote { 250 } else { 50 }));
                j = match one(&engine, store, &id) {
                    Ok((_, j)) => j,
                    Err(code) => return code,
                };
            }
            if json {
                render::json(&j);
            } else {
                render::out(&human(&j));
            }
            if j["status"] == "running" {
                render::note(&format!(
                    "job {id} is still running after {timeout} s; `infra jobs wait {id}` waits again\n"
                ));
            }
            if j["status"] == "succeeded" {
                OK
            } else {
                FAILED
            }
        }
        Command::Logs { id, json } => {
            let (id, j) = match one(&engine, store, &id) {
                Ok(found) => found,
                Err(code) => return code,
            };
            if let Some(r) = crate::mcp::jobs::remote_logs(&engine, &j) {
                if json || r.is_error {
                    return print_reply(&r, json);
                }
                render::out(r.body["result"]["log"].as_str().unwrap_or(""));
                render::note(&format!("{}\n", r.body["summary"].as_str().unwrap_or("")));
                return OK;
            }
            let Some((run_id, dir, uri_base)) = crate::mcp::jobs::run_of(&j) else {
                render::note(&format!(
                    "job {id} has no run yet ({})\n",
                    j["status"].as_str().unwrap_or("")
                ));
                return OK;
            };
            let streams = crate::mcp::tools::jobs::live_output(&engine, &dir, &uri_base);
            if json {
                render::json(
                    &json!({"job_id": id, "status": j["status"], "run_id": run_id, "output": streams}),
                );
                return OK;
            }
            let mut out = String::new();
            for s in streams.as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "==> {} ({} bytes) <==\n{}",
                    s["uri"].as_str().unwrap_or(""),
                    s["bytes"],
                    s["tail"].as_str().unwrap_or("")
                ));
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            render::out(&out);
            render::note(&format!(
                "job {id} is {}; its run is {run_id} (`infra runs show {run_id}`)\n",
                j["status"].as_str().unwrap_or("")
            ));
            OK
        }
        Command::Cancel { id, json } => {
            let (id, j) = match one(&engine, store, &id) {
                Ok(found) => found,
                Err(code) => return code,
            };
            let reply = crate::mcp::jobs::cancel(&engine, &id, &j);
            let rec = AuditRecord {
                tool: Some("jobs".into()),
                action: Some("cancel".into()),
                front_end: Some("cli".into()),
                args: Some(json!({"job_id": id})),
                ok: Some(!reply.is_error),
                error: reply.body.get("error").cloned(),
                ..AuditRecord::new(if reply.is_error {
                    AuditKind::Rejected
                } else {
                    AuditKind::Call
                })
            };
            if let Err(e) = engine.audit().record(&rec, !reply.is_error) {
                render::err(&format!("error: {e}\n"));
                return FAILED;
            }
            print_reply(&reply, json)
        }
    }
}

/// Job `arg` (an id or unique prefix) as the store has it, or the exit status of why not (said on
/// stderr).
fn one(
    engine: &engine::run::Engine,
    store: &engine::store::Store,
    arg: &str,
) -> Result<(String, serde_json::Value), u8> {
    let id = match super::ids::resolve(store, IdKind::Job, arg) {
        Ok(id) => id,
        Err(msg) => {
            render::err(&format!("error: {msg}\n"));
            return Err(USAGE);
        }
    };
    match store.job(&id) {
        Ok(Some(j)) => {
            let j = crate::mcp::jobs::refresh(engine, &id, j);
            Ok((id, j))
        }
        Ok(None) => {
            render::err(&format!(
                "error: the job `{id}` is gone from the store; see `infra jobs list`\n"
            ));
            Err(FAILED)
        }
        Err(e) => {
            render::err(&format!("error: {e}\n"));
            Err(FAILED)
        }
    }
}

/// A job as lines of `key: value`, its result pretty-printed below.
fn human(j: &serde_json::Value) -> String {
    let s = |k: &str| j[k].as_str().unwrap_or("-").to_owned();
    let mut out = format!(
        "job {}\n  call:     {}.{}\n  status:   {}\n  created:  {}\n  finished: {}\n  pid:      {}\n",
        s("job_id"),
        s("tool"),
        s("action"),
        s("status"),
        s("created_at"),
        s("finished_at"),
        j["pid"],
    );
    if let Some(run) = j["run"]["run_id"].as_str() {
        out.push_str(&format!("  run:      {run}\n"));
    }
    if !j["result"].is_null() {
        let pretty = serde_json::to_string_pretty(&j["result"]).unwrap_or_default();
        out.push_str("result:\n");
        for line in pretty.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}
