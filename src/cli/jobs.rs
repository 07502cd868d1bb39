//! `infra jobs list|status <id>`: background calls started over MCP with `async: true`.

use engine::store::IdKind;

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
            let id = match super::ids::resolve(store, IdKind::Job, &id) {
                Ok(id) => id,
                Err(msg) => {
                    render::err(&format!("error: {msg}\n"));
                    return USAGE;
                }
            };
            match store.job(&id) {
                Ok(Some(j)) if json => {
                    render::json(&j);
                    OK
                }
                Ok(Some(j)) => {
                    render::out(&human(&j));
                    OK
                }
                Ok(None) => {
                    render::err(&format!(
                        "error: the job `{id}` is gone from the store; see `infra jobs list`\n"
                    ));
                    FAILED
                }
                Err(e) => {
                    render::err(&format!("error: {e}\n"));
                    FAILED
                }
            }
        }
    }
}

/// A job as lines of `key: value`, its result pretty-printed below.
fn human(j: &serde_json::Value) -> String {
    let s = |k: &str| j[k].as_str().unwrap_or("-").to_owned();
    let mut out = format!(
        "job {}\n  call:     {}.{}\n  status:   {}\n  created:  {}\n  finished: {}\n",
        s("job_id"),
        s("tool"),
        s("action"),
        s("status"),
        s("created_at"),
        s("finished_at"),
    );
    if !j["result"].is_null() {
        let pretty = serde_json::to_string_pretty(&j["result"]).unwrap_or_default();
        out.push_str("result:\n");
        for line in pretty.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}
