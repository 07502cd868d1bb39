//! `infra runs list|show`, `infra artifacts list|get|tail`.

use engine::record::artifacts::From;
use engine::record::evidence::Record;

use super::{FAILED, OK, USAGE, engine};
use crate::render;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Recent runs, newest first.
    List {
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One run's journal (by id or id prefix).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ArtifactsCommand {
    /// Artifacts, newest first.
    List {
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Only runs of this runbook (or single calls named so, e.g. `state.get`).
        #[arg(long)]
        runbook: Option<String>,
        /// Only the run with this id (or id prefix).
        #[arg(long)]
        run: Option<String>,
    },
    /// Read an artifact (bounded).
    Get {
        uri: String,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long, default_value_t = 65536)]
        max_bytes: u64,
    },
    /// The end of an artifact.
    Tail {
        uri: String,
        #[arg(long, default_value_t = 4096)]
        max_bytes: u64,
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
        Command::List { limit, json } => match store.runs(limit) {
            Ok(runs) => {
                if json {
                    render::json(&serde_json::Value::Array(runs));
                } else {
                    let mut out = String::new();
                    for r in runs {
                        let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                        out.push_str(&format!(
                            "{}  {:24}  {:10}  {}\n",
                            &s("id")[..8.min(s("id").len())],
                            s("runbook"),
                            s("status"),
                            s("started_at")
                        ));
                    }
                    render::out(&out);
                }
                OK
            }
            Err(e) => {
                render::err(&format!("error: {e}\n"));
                FAILED
            }
        },
        Command::Show { id, json } => {
            let Ok(Some(run)) = store.run(&id) else {
                render::err(&format!(
                    "error: no run `{id}` (or the prefix is not unique); see `infra runs list`\n"
                ));
                return USAGE;
            };
            let at = engine::store::JournalAt::of(&run);
            let back = match at.read() {
                Ok(b) => b,
                Err(e) => {
                    render::err(&format!(
                        "error: cannot read the journal `{}`: {e}\n",
                        at.path.display()
                    ));
                    return FAILED;
                }
            };
            // the store decides a run's state (the same word `runs list` and MCP `evidence` show)
            let state = run["state"].as_str().unwrap_or("").to_owned();
            let shown = match state.as_str() {
                "finished" => format!("finished, {}", run["status"].as_str().unwrap_or("")),
                "interrupted" => "interrupted (the process that ran it is gone and the journal has no run_finished record: it was killed)".to_owned(),
                other => other.to_owned(),
            };
            if json {
                render::json(&serde_json::json!({
                    "run": run, "state": state,
                    "torn": back.torn, "records": back.records,
                }));
            } else {
                let mut out = format!(
                    "run {} of {} — {shown}\n",
                    run["id"].as_str().unwrap_or(""),
                    run["runbook"].as_str().unwrap_or("")
                );
                if back.torn {
                    out.push_str("the journal's last line is torn (cut off mid-write)\n");
                }
                for r in &back.records {
                    out.push_str(&match r {
                        Record::RunStarted {
                            ts,
                            runbook,
                            plan_digest,
                            ..
                        } => format!(
                            "{ts}  started {runbook} (plan {})\n",
                            &plan_digest[..12.min(plan_digest.len())]
                        ),
                        Record::NodeStarted {
                            ts, step, attempt, ..
                        } => format!("{ts}  {step} attempt {attempt} started\n"),
                        Record::NodeFinished {
                            ts,
                            step,
                            status,
                            duration_ms,
                            error,
                            ..
                        } => format!(
                            "{ts}  {step} {} in {duration_ms} ms{}\n",
                            status.as_str(),
                            error
                                .as_ref()
                                .map(|e| format!(" — {}: {}", e.kind, e.message))
                                .unwrap_or_default()
                        ),
                        Record::NodeSkipped {
                            ts, step, reason, ..
                        } => format!("{ts}  {step} skipped: {reason}\n"),
                        Record::RunFinished {
                            ts,
                            status,
                            duration_ms,
                            outputs,
                            ..
                        } => {
                            let mut line =
                                format!("{ts}  finished {} in {duration_ms} ms\n", status.as_str());
                            // whole values here: the run's summary points at this for the rest
                            if let Some(o) = outputs.as_object().filter(|o| !o.is_empty()) {
                                line.push_str("outputs:\n");
                                for (k, v) in o {
                                    line.push_str(&format!("  {k}: {v}\n"));
                                }
                            }
                            line
                        }
                    });
                }
                render::out(&out);
            }
            OK
        }
    }
}

pub fn artifacts(cmd: ArtifactsCommand) -> u8 {
    let engine = engine();
    let result = match cmd {
        ArtifactsCommand::List {
            limit,
            runbook,
            run,
        } => engine
            .list_artifacts(
                engine::run::ArtifactFilter {
                    runbook: runbook.as_deref(),
                    run: run.as_deref(),
                },
                limit,
            )
            .map(serde_json::Value::Array)
            .map_err(|e| e.to_string()),
        ArtifactsCommand::Get {
            uri,
            offset,
            max_bytes,
        } => engine
            .read_artifact(&uri, From::Offset(offset), max_bytes)
            .map_err(|e| e.to_string()),
        ArtifactsCommand::Tail { uri, max_bytes } => engine
            .read_artifact(&uri, From::Tail, max_bytes)
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(v) => {
            match v.get("text").and_then(|t| t.as_str()) {
                Some(text) => render::out(text),
                None => render::json(&v),
            }
            OK
        }
        Err(e) => {
            render::err(&format!("error: {e}\n"));
            USAGE
        }
    }
}
