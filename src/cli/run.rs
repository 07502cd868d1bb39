//! `infra run <runbook> [--input k=v …] [--input-file f] [--json] [--dry-run]`, and
//! `infra run --resume <run-id> [--from <step>] [--force] [--input k=v …]`: a new run of a failed
//! run's runbook that reuses what succeeded (`Engine::resume`; its header says what runs again and
//! what is refused). A refused resume prints why and exits 2 (no such run, a bad step or input) or 1.
//!
//! A Ctrl-C handler cancels the run's token (a second Ctrl-C exits with 130). Progress goes to stderr
//! unless `--json` or `-q`: short coloured lines on a terminal, else one plain line per step start and
//! end, each naming the runbook (CI logs, `| tee`). The summary (or JSON) has every step result and
//! error redacted through `Engine::redactor`; a failed step's last lines of stderr and stdout (read
//! from its artifacts, redacted when they were written) follow its line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use engine::record::evidence::Status;
use engine::run::{CancelToken, Progress, RunOptions};
use serde_json::json;

use super::{FAILED, INTERRUPTED, OK, USAGE, engine, report};
use crate::render;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A runbook name, or a file (`path[#name]`).
    #[arg(required_unless_present = "resume")]
    runbook: Option<String>,
    /// An input, `name=value` (repeatable). Non-string inputs are read as YAML (`n=3`, `l=[a, b]`).
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    /// A YAML or JSON file with a mapping of inputs (`--input` wins over it).
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    input_file: Option<PathBuf>,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Show the plan (as `infra plan --json` does) and run nothing.
    #[arg(long, conflicts_with = "resume")]
    dry_run: bool,
    /// Resume a run that failed (its id or a unique prefix): a new run that reuses the results of
    /// the steps that succeeded and runs the rest. Its inputs are the run's; secret ones must be
    /// given again with `--input`.
    #[arg(long, value_name = "RUN_ID", conflicts_with = "runbook")]
    resume: Option<String>,
    /// With `--resume`: run this step and everything downstream of it again, even if they succeeded.
    #[arg(long, value_name = "STEP", requires = "resume")]
    from: Option<String>,
    /// With `--resume`: resume although the runbook or its inputs changed since the run.
    #[arg(long, requires = "resume")]
    force: bool,
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
    let prepared = match (&args.resume, &args.runbook) {
        (Some(_), _) => None,
        (None, runbook) => {
            let target = super::plan::Target {
                runbook: runbook.clone().unwrap_or_default(),
                inputs: args.inputs.clone(),
                input_file: args.input_file.clone(),
            };
            match super::plan::prepare_as(&engine.catalog(), &target, args.json) {
                Ok(p) => Some(p),
                Err((code, message)) => {
                    // refused before it could run: audited with the inputs' names, never their values
                    let mut names: Vec<String> = args
                        .inputs
                        .iter()
                        .map(|kv| kv.split('=').next().unwrap_or_default().to_owned())
                        .collect();
                    if let Some(f) = &args.input_file {
                        names.push(format!("--input-file {}", f.display()));
                    }
                    let args = json!({"name": target.runbook, "inputs": names});
                    let error = engine::record::evidence::ErrorInfo {
                        kind: "invalid".into(),
                        message: message.clone(),
                    };
                    let run_id = engine
                        .record_call(
                            "runbook",
                            "run",
                            &args,
                            &serde_json::Value::Null,
                            Some(error),
                        )
                        .ok();
                    let rec = engine::record::AuditRecord {
                        tool: Some("runbook".into()),
                        action: Some("run".into()),
                        front_end: Some("cli".into()),
                        run_id,
                        args: Some(args),
                        error: Some(
                            json!({"kind": "invalid", "message": engine.redactor().redact(&message)}),
                        ),
                        ..engine::record::AuditRecord::new(engine::record::AuditKind::Rejected)
                    };
                    if let Err(e) = engine.audit().record(&rec, false) {
                        render::err(&format!("error: the audit log cannot be written: {e}\n"));
                    }
                    return code;
                }
            }
        }
    };
    if let Some((plan, inputs)) = &prepared
        && args.dry_run
    {
        return match plan.render(inputs) {
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
    // what progress lines name: the runbook (a resumed run's, as the run index has it)
    let name = match (&prepared, &args.resume) {
        (Some((plan, _)), _) => plan.runbook().name.clone(),
        (None, Some(id)) => engine
            .store()
            .ok()
            .and_then(|s| s.run(id).ok().flatten())
            .and_then(|r| r["runbook"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("resume {id}")),
        (None, None) => String::new(),
    };
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
    let steps = prepared.as_ref().map(|(plan, _)| plan.len());
    match (live, steps) {
        (Live::Off, _) => {}
        (Live::Terminal, Some(n)) => render::err(&format!("run {name} ({n} steps)\n")),
        (Live::Plain, Some(n)) => render::err(&format!("[{name}] run started: {n} steps\n")),
        (Live::Terminal, None) => render::err(&format!("resume {name}\n")),
        (Live::Plain, None) => render::err(&format!("[{name}] resumed run started\n")),
    }
    let opts = RunOptions {
        cancel,
        depth: 0,
        progress: if live == Live::Off {
            None
        } else {
            Some(&progress)
        },
        followed: false,
    };
    let outcome = match (prepared, &args.resume) {
        (Some((plan, inputs)), _) => engine.execute(&plan, inputs, &opts),
        (None, resume) => {
            let given = args
                .inputs
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => Ok((k.to_owned(), serde_json::Value::String(v.to_owned()))),
                    None => Err(kv),
                })
                .collect::<Result<serde_json::Map<_, _>, _>>();
            let given = match given {
                Ok(g) => g,
                Err(kv) => {
                    render::err(&format!(
                        "error: `--input {kv}` has no `=`\n  help: write `--input name=value`\n"
                    ));
                    return USAGE;
                }
            };
            let req = engine::run::ResumeRequest {
                run: resume.as_deref().unwrap_or_default(),
                from: args.from.as_deref(),
                force: args.force,
                given,
                text_inputs: true,
                front_end: "cli",
            };
            match engine.resume(&req, &opts) {
                Ok(o) => o,
                Err(r) => {
                    if args.json {
                        render::json(&json!({
                            "ok": false, "run_id": null, "resumed_from": r.run_id,
                            "error": {"kind": r.kind, "rule": r.rule, "message": r.message, "hint": r.hint},
                        }));
                    }
                    render::err(&format!("error: {}\n", redactor.redact(&r.message)));
                    if let Some(h) = &r.hint {
                        render::err(&format!("  help: {h}\n"));
                    }
                    return if matches!(r.kind, "not_found" | "invalid_args") {
                        USAGE
                    } else {
                        FAILED
                    };
                }
            }
        }
    };
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
            "resumed_from": outcome.resumed_from,
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
            "\n{} {} in {} ms — run {}{}\n",
            outcome.runbook,
            render::status(outcome.status, render::Stream::Out),
            outcome.duration_ms,
            outcome.run_id,
            outcome
                .resumed_from
                .as_ref()
                .map(|f| format!(", resuming run {f}"))
                .unwrap_or_default()
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
