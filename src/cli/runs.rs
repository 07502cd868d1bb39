//! `infra runs list|show|logs|prune`. `prune [--dry-run] [--json]` removes what the policy's
//! `retention` lets go (`Engine::prune_runs`): it prints what it removed, or with `--dry-run` what it
//! would remove (counts and bytes); a refusal says why, and is in the audit log.

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
    /// Remove runs past the policy's `retention` (age, count; failed runs kept longer), their
    /// directories and calls journals, old finished jobs and approval requests. Live runs stay.
    Prune {
        /// Say what would go, and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
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
    if let Command::Prune { dry_run, json } = cmd {
        return prune(&engine, dry_run, json);
    }
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
        Command::Prune { .. } => OK,
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
                        // a poll that goes on: not a failure of the step
                        Record::NodeFinished {
                            ts,
                            step,
                            attempt,
                            duration_ms,
                            error: Some(e),
                            ..
                        } if e.kind == "until_not_met"
                            && e.message.starts_with("`until` is false after attempt") =>
                        {
                            format!(
                                "{ts}  {step} attempt {attempt}: `until` not met yet in {duration_ms} ms\n"
                            )
                        }
                        Record::NodeFinished {
                            ts,
                            step,
                            status,
                            duration_ms,
                            error,
                            outputs,
                            ..
                        } => format!(
                            "{ts}  {step} {} in {duration_ms} ms{}{}\n",
                            status.as_str(),
                            // a nested run: where its own story is
                            match (outputs["runbook"].as_str(), outputs["run_id"].as_str()) {
                                (Some(rb), Some(id)) => {
                                    format!(" (run {} of {rb})", id.get(..8).unwrap_or(id))
                                }
                                _ => String::new(),
                            },
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

/// `infra runs prune`.
fn prune(engine: &engine::run::Engine, dry_run: bool, json: bool) -> u8 {
    match engine.prune_runs(dry_run, engine::run::PruneBy::Cli) {
        Ok(p) => {
            if json {
                render::json(&serde_json::to_value(&p).unwrap_or_default());
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                render::out(&format!(
                    "{verb} {} runs ({} directories), {} directories without a run, {} calls journals, {} jobs, {} approval records: {} bytes\n",
                    p.runs, p.dirs, p.orphans, p.journals, p.jobs, p.approvals, p.bytes
                ));
                if p.dirs_left > 0 {
                    render::note(&format!(
                        "{} runs were recorded outside this `runs/` directory: their rows went, their directories were left\n",
                        p.dirs_left
                    ));
                }
            }
            OK
        }
        Err(e) => {
            render::err(&format!("error: {e}\n"));
            FAILED
        }
    }
}
