//! `infra run <runbook> [--input k=v …] [--input-file f] [--json] [--dry-run]`.
//!
//! A Ctrl-C handler cancels the run's token (a second Ctrl-C exits with 130). Progress goes to stderr
//! unless `--json` or `-q`: short coloured lines on a terminal, else one plain line per step start and
//! end, each naming the runbook (CI logs, `| tee`). The summary (or JSON) has every step result and
//! error redacted through `Engine::redactor`; a failed step's last lines of stderr and stdout (read
//! from its artifacts, redacted when they were written) follow its line.

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

/// Lines of a failing step's output shown in the summary (more with `-v`).
const TAIL_LINES: usize = 20;
const TAIL_LINES_VERBOSE: usize = 100;
/// The most bytes read from the end of an output to find those lines.
const TAIL_BYTES: u64 = 16 * 1024;

/// A status padded to its column, then coloured (escape codes do not count towards the width).
fn status_cell(s: Status, width: usize) -> String {
    let padded = format!("{:width$}", s.as_str());
    let word = render::status(s, render::Stream::Out);
    padded.replacen(s.as_str(), &word, 1)
}

/// How progress is shown on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Live {
    /// None (`-q`, `--json`).
    Off,
    /// A terminal: short lines, coloured.
    Terminal,
    /// A file, a pipe or a CI log: one plain line per event, each naming the runbook.
    Plain,
}

/// The last `n` lines of a step's `stdout` or `stderr` artifact (redacted as every artifact is), when
/// it wrote any.
fn output_tail(uri_base: &str, step: &str, stream: &str, n: usize) -> Option<Vec<String>> {
    let root = super::config().artifacts_root;
    let uri = format!("{uri_base}/{step}/{stream}");
    let read = engine::record::artifacts::read(
        &root,
        &uri,
        engine::record::artifacts::From::Tail,
        TAIL_BYTES,
        &engine::record::Redactor::new(),
    )
    .ok()?;
    let text = read["text"].as_str()?;
    let mut lines: Vec<&str> = text.lines().collect();
    // a cut first line is not a line
    if read["truncated"] == true && lines.len() > 1 {
        lines.remove(0);
    }
    let lines: Vec<String> = lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
    (!lines.is_empty()).then_some(lines)
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
    let live = if args.json || render::quiet() {
        Live::Off
    } else if std::io::stderr().is_terminal() {
        Live::Terminal
    } else {
        Live::Plain
    };
    let name = rb.name.clone();
    let redactor = Arc::clone(engine.redactor());
    let progress = |p: &Progress| match (p, live) {
        (_, Live::Off) => {}
        (
            Progress::RunStarted {
                run_id, uri_base, ..
            },
            _,
        ) => {
            if render::verbose() {
                render::err(&format!("run {run_id}: evidence in {uri_base}\n"));
            }
        }
        (Progress::Started { step }, Live::Terminal) => render::err(&format!("  … {step}\n")),
        (Progress::Advanced { step, message }, Live::Terminal) => {
            render::err(&format!("  … {step}: {message}\n"));
        }
        (Progress::Advanced { step, message }, _) => {
            render::err(&format!("[{name}] {step}: {message}\n"));
        }
        (Progress::Started { step }, _) => render::err(&format!("[{name}] {step} started\n")),
        (
            Progress::Finished {
                step,
                status,
                duration_ms,
                error,
            },
            _,
        ) => {
            let tail = error
                .as_deref()
                .map(|e| format!(" — {}", redactor.redact(e)))
                .unwrap_or_default();
            if live == Live::Terminal {
                render::err(&format!(
                    "  {} {step} ({duration_ms} ms){tail}\n",
                    render::status(*status, render::Stream::Err)
                ));
            } else {
                render::err(&format!(
                    "[{name}] {step} {} in {duration_ms} ms{tail}\n",
                    status.as_str()
                ));
            }
        }
    };
    match live {
        Live::Off => {}
        Live::Terminal => render::err(&format!("run {} ({} steps)\n", rb.name, plan.len())),
        Live::Plain => render::err(&format!(
            "[{}] run started: {} steps\n",
            rb.name,
            plan.len()
        )),
    }
    let outcome = engine.execute(
        &plan,
        inputs,
        &RunOptions {
            cancel,
            depth: 0,
            progress: if live == Live::Off {
                None
            } else {
                Some(&progress)
            },
        },
    );
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
            "approval": outcome.approval,
            "evidence": outcome.uri_base,
            "report": outcome.dir.join("report.html").is_file()
                .then(|| format!("{}/report.html", outcome.uri_base)),
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
                "{} {:24} {:>7} ms{}\n",
                status_cell(s.status, 10),
                s.id,
                s.duration_ms,
                note
            ));
            if matches!(s.status, Status::Failed | Status::TimedOut) {
                let n = if render::verbose() {
                    TAIL_LINES_VERBOSE
                } else {
                    TAIL_LINES
                };
                // a retried step's last attempt has its own artifacts
                let step_dir = if s.attempts > 1 {
                    format!("{}/attempt-{}", s.id, s.attempts)
                } else {
                    s.id.clone()
                };
                for stream in ["stderr", "stdout"] {
                    if let Some(lines) = output_tail(&outcome.uri_base, &step_dir, stream, n) {
                        out.push_str(&format!(
                            "           {stream}, last {} line{}:\n",
                            lines.len(),
                            if lines.len() == 1 { "" } else { "s" }
                        ));
                        for l in lines {
                            out.push_str(&format!("           | {}\n", redactor.redact(&l)));
                        }
                    }
                }
            }
        }
        out.push_str(&format!(
            "\n{} {} in {} ms — run {}\n",
            rb.name,
            render::status(outcome.status, render::Stream::Out),
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
        let report = outcome.dir.join("report.html");
        if report.is_file() {
            out.push_str(&format!("report: {}\n", report.display()));
        }
        if !outcome.ok() && outcome.steps.iter().any(|s| s.status == Status::Failed) {
            out.push_str(&format!(
                "logs: `infra runs logs {}`\n",
                &outcome.run_id[..8.min(outcome.run_id.len())]
            ));
        }
        render::out(&out);
        if let Some(e) = &outcome.error {
            render::err(&format!("error: {}\n", redactor.redact(&e.message)));
        }
        if let Some(a) = &outcome.approval {
            render::err(&format!(
                "approval required: plan digest {}\n  {}\n",
                a["digest"].as_str().unwrap_or_default(),
                a["how"].as_str().unwrap_or_default()
            ));
        }
    }
    match outcome.status {
        // stopped by Ctrl-C (the only cancel here): the shell convention for SIGINT
        Status::Cancelled => INTERRUPTED,
        _ if outcome.ok() => OK,
        _ => FAILED,
    }
}
