//! `infra runs list|show|logs`.

use engine::record::evidence::Record;

use super::{FAILED, OK, engine};
use crate::render;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Recent runs, newest first.
    List {
        /// How many to show.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One run's journal: every step's start and end, errors and outputs.
    Show {
        /// The run's id, or any unique prefix of it (`infra runs list` shows them).
        id: String,
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A run's step output (stdout and stderr), as `tail` shows several files.
    Logs(super::logs::Args),
}

/// A run's row as the CLI shows it in JSON: its id under `run_id`, the key `infra run --json` and
/// MCP results use.
pub fn run_json(row: serde_json::Value) -> serde_json::Value {
    match row {
        serde_json::Value::Object(o) => o
            .into_iter()
            .map(|(k, v)| (if k == "id" { "run_id".to_owned() } else { k }, v))
            .collect(),
        other => other,
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
        Command::List { limit, json } => match store.runs(limit) {
            Ok(runs) => {
                if json {
                    render::json(&serde_json::Value::Array(
                        runs.into_iter().map(run_json).collect(),
                    ));
                } else {
                    let mut out = String::new();
                    for r in runs {
                        let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                        out.push_str(&format!(
                            "{}  {:24}  {:11}  {}\n",
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
        Command::Logs(args) => super::logs::run(store, args),
        Command::Show { id, json } => {
            let run = match super::ids::run_row(store, &id) {
                Ok(run) => run,
                Err(code) => return code,
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
                    "run": run_json(run), "state": state,
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
                            resumed_from,
                            ..
                        } => format!(
                            "{ts}  started {runbook} (plan {}){}\n",
                            &plan_digest[..12.min(plan_digest.len())],
                            resumed_from
                                .as_ref()
                                .map(|f| format!(", resuming run {f}"))
                                .unwrap_or_default()
                        ),
                        Record::NodeResult {
                            ts,
                            step,
                            reused_from: Some(from),
                            ..
                        } => format!("{ts}  {step} reused from run {from} (not run again)\n"),
                        Record::NodeResult { .. } => String::new(),
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
