//! `infra jobs list|status <id>`: background calls started over MCP with `async: true`.

use super::{FAILED, OK, USAGE, engine};
use crate::render;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Recent jobs, newest first.
    List {
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One job and, once it has ended, its result.
    Status { id: String },
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
                for j in jobs {
                    let s = |k: &str| j[k].as_str().unwrap_or("").to_owned();
                    out.push_str(&format!(
                        "{}  {}.{:12} {:12} {}\n",
                        s("job_id"),
                        s("tool"),
                        s("action"),
                        s("status"),
                        s("created_at")
                    ));
                }
                render::out(&out);
                OK
            }
            Err(e) => {
                render::err(&format!("error: {e}\n"));
                FAILED
            }
        },
        Command::Status { id } => match store.job(&id) {
            Ok(Some(j)) => {
                render::json(&j);
                OK
            }
            Ok(None) => {
                render::err(&format!("error: no job `{id}`; see `infra jobs list`\n"));
                USAGE
            }
            Err(e) => {
                render::err(&format!("error: {e}\n"));
                FAILED
            }
        },
    }
}
