//! `infra run <runbook> [--input k=v …] [--input-file f] [--json] [--dry-run]`.
//!
//! A Ctrl-C handler cancels the run's token (a second Ctrl-C exits with 130); progress lines go to
//! stderr when it is a terminal and `--json` is off; the summary (or JSON) has every step result
//! and error redacted through `Engine::redactor`.

use std::io::IsTerminal;
use std::sync::Arc;

use engine::record::evidence::Status;
use engine::run::{CancelToken, Progress, RunOptions};
use serde_json::json;

use super::{FAILED, INTERRUPTED, OK, engine, report};
use crate::render;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: super::plan::Target,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Show the plan (as `infra plan --json` does) and run nothing.
    #[arg(long)]
    dry_run: bool,
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Succeeded => "ok",
        Status::Failed => "FAILED",
        Status::Skipped => "skipped",
        Status::Cancelled => "cancelled",
        Status::TimedOut => "TIMED OUT",
        Status::Refused => "REFUSED",
    }
}

pub fn run(args: Args) -> u8 {
    let engine = engine();
    let (plan, inputs) = match super::plan::prepare(&engine.catalog(), &args.target) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let rb = plan.runbook().clone();
    if args.dry_run {
        return match plan.render(&inputs) {
            Ok(r) => {
                render::json(&r.json);
                OK
            }
            Err(d) => report(&d),
        };
    }
    let cancel = CancelToken::new();
    {
        let c = cancel.clone();
        // a second Ctrl-C while stopping falls through to the default (the process ends)
        let _ = ctrlc::set_handler(move || {
            if c.is_cancelled() {
                std::process::exit(i32::from(INTERRUPTED));
            }
            c.cancel();
        });
    }
    let live = std::io::stderr().is_terminal() && !args.json;
    let progress = |p: &Progress| match p {
        Progress::RunStarted { .. } => {}
        Progress::Started { step } => render::err(&format!("  … {step}\n")),
        Progress::Finished {
            step,
            status,
            duration_ms,
            error,
        } => {
            let tail = error
                .as_deref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default();
            render::err(&format!(
                "  {} {step} ({duration_ms} ms){tail}\n",
                status_word(*status)
            ));
        }
    };
    if live {
        render::err(&format!("run {} ({} steps)\n", rb.name, plan.len()));
    }
    let outcome = engine.execute(
        &plan,
        inputs,
        &RunOptions {
            cancel,
            depth: 0,
            progress: if live { Some(&progress) } else { None },
        },
    );
    let redactor = Arc::clone(engine.redactor());
    if args.json {
        let steps: Vec<serde_json::Value> = outcome
            .steps
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "status": s.status, "attempts": s.attempts, "duration_ms": s.duration_ms,
                    "result": s.result.as_ref().map(|r| redactor.redact_value(r)),
                    "error": s.error.as_ref().map(|e| redactor.redact_value(&e.to_json())),
                    "reason": s.reason,
                })
            })
            .collect();
        render::json(&json!({
            "ok": outcome.ok(),
            "run_id": outcome.run_id,
            "runbook": outcome.runbook,
            "status": outcome.status,
            "duration_ms": outcome.duration_ms,
            "outputs": outcome.outputs,
            "steps": steps,
            "error": outcome.error,
            "evidence": outcome.uri_base,
        }));
    } else {
        let mut out = String::new();
        for s in &outcome.steps {
            let note = match (&s.error, &s.reason) {
                (Some(e), _) => format!("  {}", redactor.redact(&e.to_string())),
                (None, Some(r)) => format!("  ({r})"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "{:10} {:24} {:>7} ms{}\n",
                status_word(s.status),
                s.id,
                s.duration_ms,
                note
            ));
        }
        out.push_str(&format!(
            "\n{} {} in {} ms — run {}\n",
            rb.name,
            status_word(outcome.status),
            outcome.duration_ms,
            outcome.run_id
        ));
        if let Some(o) = outcome.outputs.as_object()
            && !o.is_empty()
        {
            out.push_str("outputs:\n");
            for (k, v) in o {
                let mut text = v.to_string();
                if text.len() > 400 {
                    let mut cut = 400;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text = format!(
                        "{}… (`infra runs show {}` for the rest)",
                        &text[..cut],
                        &outcome.run_id[..8]
                    );
                }
                out.push_str(&format!("  {k}: {text}\n"));
            }
        }
        out.push_str(&format!("evidence: {}\n", outcome.uri_base));
        render::out(&out);
        if let Some(e) = &outcome.error {
            render::err(&format!("error: {}\n", redactor.redact(&e.message)));
        }
    }
    match outcome.status {
        // stopped by Ctrl-C (the only cancel here): the shell convention for SIGINT
        Status::Cancelled => INTERRUPTED,
        _ if outcome.ok() => OK,
        _ => FAILED,
    }
}
