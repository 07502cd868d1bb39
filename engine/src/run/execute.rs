//! Runs as wholes: ids, directories, the start and finish records, nested runs, and the one-node
//! runs that record a front end's own calls.
//!
//! `execute` starts a run: the values of `secret` inputs join the redactor; a run id (`new_id`) and
//! the run directory `<artifacts root>/runs/<runbook>/<stamp>-<first 8 of the id>`, whose
//! `artifact://` URI is the base of every artifact of the run; the profiles directory's
//! `.gitignore`; an audit `run_started`, fsync'd when the plan can write (unwritable: the run ends
//! `refused` with `audit_unavailable` and nothing runs); the journal (if the directory cannot be
//! made, nothing runs: `evidence_unavailable`) and its `run_started`; the run in the store's index
//! (with `resumed_from` for a resumed run, whose reused steps `RunCx::reused` gives the scheduler;
//! a single call that only reads is indexed once, at its end, `Store::run_whole`, unless another
//! process follows it, `RunOptions::followed`: a job's worker, so it can be looked up while it runs).
//! Then the scheduler (`schedule.rs`); each main step that succeeds has its result kept
//! (`RunCx::keep_result`, a `node_result` record) for a later resume. At the end: `finally` steps with a fresh cancel token (a
//! failing one fails a run that had succeeded); if the run did not succeed, the rollbacks of the
//! steps that succeeded, newest completion first; `outputs` rendered and redacted; journal and
//! audit `run_finished`; the store's index. The journal and index are best effort once the run has
//! started; the audit log fails closed.
//!
//! `run_runbook` (compile + inputs + execute) and `nested_runbook` serve `runbook.run`, one level
//! deeper; the nested run gets the cancel token but not the deadline. `record_call` records a front
//! end's own call as a finished one-node run under `runs/<tool>.<action>/`.

use crate::error::ErrorKind;
use std::sync::Arc;
use std::time::Instant;

use dsl::{Effect, Runbook};
use serde_json::{Map, Value, json};

use super::*;
use crate::actions::{ActionError, Nested};
use crate::approval::Grant;
use crate::ctx::{new_id, now_rfc3339, now_stamp};
use crate::plan::Plan;
use crate::record::Journal;
use crate::record::evidence::{ErrorInfo, Record, Status};
use crate::record::{AuditKind, AuditRecord};

impl Engine {
    /// Compiles a runbook, checks its inputs and runs it. `Err` carries the diagnostics as text.
    pub fn run_runbook(
        &self,
        rb: Arc<Runbook>,
        given: &Map<String, Value>,
        cancel: &CancelToken,
        depth: usize,
        grant: Option<&Grant>,
    ) -> Result<RunOutcome, String> {
        let (plan, inputs) =
            crate::request::prepare(&self.catalog(), &rb, given).map_err(|d| join(&d))?;
        Ok(self.execute_as(
            &plan,
            inputs,
            &RunOptions {
                cancel: cancel.clone(),
                depth,
                progress: None,
                followed: false,
            },
            grant,
            false,
            None,
        ))
    }

    /// The runbook a nested run names: from the catalog, or given whole.
    pub(super) fn nested_runbook(&self, which: Nested<'_>) -> Result<Arc<Runbook>, ActionError> {
        let which = match which {
            Nested::Name(n) => crate::request::Which::Name(n),
            Nested::Inline(v) => crate::request::Which::Inline(v, None),
        };
        crate::request::find(&self.catalog(), which).map_err(|d| {
            match d.first() {
                // the name alone, as a nested call has always said it
                Some(first)
                    if first.code == dsl::Code::UnknownRunbook
                        && matches!(which, crate::request::Which::Name(_)) =>
                {
                    ActionError::new(ErrorKind::NotFound, first.message.clone())
                }
                _ => ActionError::new(
                    ErrorKind::InvalidArgs,
                    d.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            }
        })
    }

    /// Records a front end's own call (one that reads infra's own data, or was refused before it could
    /// become a plan) as a one-node run with evidence: its journal and its place in the run index. Returns
    /// the run id. `result` and `error` are redacted here.
    pub fn record_call(
        &self,
        tool: &str,
        action: &str,
        args: &Value,
        result: &Value,
        error: Option<ErrorInfo>,
    ) -> std::io::Result<String> {
        let run_id = new_id();
        let name = format!("{tool}.{action}");
        let rel = format!("runs/{name}/{}-{}", now_stamp(), &run_id[..8]);
        let dir = self.config.artifacts_root.join(&rel);
        self.prepare_profiles_dir();
        let journal = self.call_journal()?;
        let ts = now_rfc3339();
        // credentials among the arguments (a connection URL's password, an `Authorization` header)
        // are masked as a run masks them, also in a call refused before it became one: every action
        // of the tool says which it holds (the action itself may be what was wrong)
        if let (Some(t), Some(map)) = (crate::actions::find_tool(tool), args.as_object()) {
            for secrets in t.actions.iter().filter_map(|a| a.secret_args) {
                for s in secrets(map) {
                    self.redactor.add(&s);
                }
            }
        }
        let args = self.redactor.redact_value(args);
        let error = error.map(|e| ErrorInfo {
            message: self.redactor.redact(&e.message).into_owned(),
            ..e
        });
        let status = if error.is_some() {
            Status::Failed
        } else {
            Status::Succeeded
        };
        let records = [
            Record::RunStarted {
                run_id: run_id.clone(),
                ts: ts.clone(),
                runbook: name.clone(),
                source: format!("<call {tool}>"),
                runbook_digest: String::new(),
                plan_digest: String::new(),
                inputs: Value::Object(Map::new()),
                effects: "read".into(),
                resumed_from: None,
            },
            Record::NodeStarted {
                run_id: run_id.clone(),
                ts: ts.clone(),
                step: "call".into(),
                attempt: 1,
                index: None,
                tool: tool.into(),
                action: action.into(),
                args,
            },
            Record::NodeFinished {
                run_id: run_id.clone(),
                ts: now_rfc3339(),
                step: "call".into(),
                attempt: 1,
                index: None,
                status,
                duration_ms: 0,
                exit_code: None,
                outputs: Value::Null,
                artifacts: Vec::new(),
                error: error.clone(),
            },
            Record::RunFinished {
                run_id: run_id.clone(),
                ts: now_rfc3339(),
                status,
                duration_ms: 0,
                outputs: self.redactor.redact_value(result),
                error,
            },
        ];
        for r in &records {
            journal.append(r, false)?;
        }
        if let Ok(store) = self.store() {
            let _ = store.run_started(&run_id, &name, &dir, Some(&journal), &ts, false);
            let _ = store.run_finished(&run_id, status.as_str(), false);
        }
        self.auto_prune();
        Ok(run_id)
    }

    /// Runs a plan with resolved inputs. Never panics on a failing step: failures are in the outcome.
    /// What policy refuses (or what needs an approval that was not given) does not start at all.
    pub fn execute(
        &self,
        plan: &Plan,
        inputs: Map<String, Value>,
        opts: &RunOptions<'_>,
    ) -> RunOutcome {
        self.execute_as(plan, inputs, opts, None, false, None)
    }

    /// [`Engine::execute`] of a plan whose changes cannot be undone (an intent whose capability says
    /// `irreversible`): the policy judges its steps above `read` at the `irreversible` level.
    pub fn execute_irreversible(
        &self,
        plan: &Plan,
        inputs: Map<String, Value>,
        opts: &RunOptions<'_>,
    ) -> RunOutcome {
        self.execute_as(plan, inputs, opts, None, true, None)
    }

    /// [`Engine::execute`], for a nested run under its parent's approval (`parent`, which covers the
    /// nested plans its approved plan carried), an
    /// irreversible plan, or a run that resumes another (`resume`: the steps it reuses).
    pub(super) fn execute_as(
        &self,
        plan: &Plan,
        inputs: Map<String, Value>,
        opts: &RunOptions<'_>,
        parent: Option<&Grant>,
        irreversible: bool,
        resume: Option<&resume::Reuse>,
    ) -> RunOutcome {
        let started = Instant::now();
        let rb = plan.runbook();
        let run_id = new_id();
        // the one digest (rendered plan), and the policy's word on it, before anything is recorded
        let rendered = plan.rendered_for_run(&inputs);
        let gate = self.gate(plan, &rendered, &run_id, parent, irreversible);
        let rel = format!("runs/{}/{}-{}", rb.name, now_stamp(), &run_id[..8]);
        let dir = self.config.artifacts_root.join(&rel);
        let uri_base = format!("artifact://{rel}");
        for (name, input) in &rb.inputs {
            if input.secret
                && let Some(v) = inputs.get(name)
            {
                self.redactor.add_value(v);
            }
        }
        let inputs = Value::Object(inputs);
        let shown_inputs = self.redactor.redact_value(&inputs);
        let ts = now_rfc3339();
        let mut outcome = RunOutcome {
            run_id: run_id.clone(),
            runbook: rb.name.clone(),
            status: Status::Refused,
            dir: dir.clone(),
            uri_base: uri_base.clone(),
            duration_ms: 0,
            steps: Vec::new(),
            outputs: Value::Null,
            error: None,
            approval: gate.approval.clone(),
            resumed_from: resume.map(|r| r.from_run.clone()),
            effects: plan.effects(),
        };
        let audit_start = AuditRecord {
            run_id: Some(run_id.clone()),
            runbook: Some(rb.name.clone()),
            effects: Some(plan.effects().to_string()),
            plan_digest: Some(rendered.digest.clone()),
            inputs: Some(shown_inputs.clone()),
            depth: Some(opts.depth),
            resumed_from: resume.map(|r| r.from_run.clone()),
            policy: Some(gate.verdict.to_json()),
            approval: gate.grant.as_ref().map(Grant::to_json),
            ..AuditRecord::new(AuditKind::RunStarted)
        };
        self.prepare_profiles_dir();
        // a run that can change something has its start and end on disk (fsync'd) before and after the
        // change; a read-only run's records are written the same way but not forced to disk
        let durable = plan.effects() >= Effect::Write;
        if let Err(e) = self.audit.record(&audit_start, durable) {
            outcome.error = Some(ErrorInfo {
                kind: "audit_unavailable".into(),
                message: format!("{e}; nothing was run"),
            });
            return outcome;
        }
        let journal = if plan.is_call() {
            self.call_journal()
        } else {
            Journal::create(&dir).map(Journal::keeping_outlines)
        };
        let journal = match journal {
            Ok(j) => j,
            Err(e) => {
                outcome.error = Some(ErrorInfo {
                    kind: "evidence_unavailable".into(),
                    message: format!(
                        "cannot create the run's journal in `{}`: {e}; nothing was run",
                        if plan.is_call() {
                            self.config.artifacts_root.join("runs/.calls")
                        } else {
                            dir.clone()
                        }
                        .display()
                    ),
                });
                let _ = self.audit.record(
                    &AuditRecord {
                        run_id: Some(run_id.clone()),
                        status: Some("refused".into()),
                        ..AuditRecord::new(AuditKind::RunFinished)
                    },
                    false,
                );
                return outcome;
            }
        };
        let _ = journal.append(
            &Record::RunStarted {
                run_id: run_id.clone(),
                ts: ts.clone(),
                runbook: rb.name.clone(),
                source: rb.file.name().to_owned(),
                runbook_digest: rb.digest.clone(),
                plan_digest: rendered.digest.clone(),
                inputs: shown_inputs,
                effects: plan.effects().as_str().to_owned(),
                resumed_from: resume.map(|r| r.from_run.clone()),
            },
            durable,
        );
        if !plan.is_call() {
            // streamed through the redactor as it is written (no redacted copy of a big plan)
            let _ = crate::record::artifacts::write_json(
                &dir,
                &uri_base,
                "plan.json",
                &rendered.json,
                Arc::clone(&self.redactor),
            );
        }
        // from here on only the digest and, for the report, the picture of the plan's steps are
        // needed: a big plan's rendered form is not held for the run
        let plan_view = (!plan.is_call()).then(|| self.run_plan_view(&rendered.json));
        // the whole rendered plan is taken into the arm and dropped there: a pattern binding only
        // `digest` would leave the rest of it in `rendered` until the run returns
        let plan_digest = match rendered {
            std::borrow::Cow::Owned(r) => r.digest,
            std::borrow::Cow::Borrowed(r) => r.digest.clone(),
        };
        // a single call that only reads is indexed once, at its end (one transaction, not two),
        // unless another process follows it (a job's worker): then it can be looked up while it
        // runs, and reads back `interrupted` if its process dies
        let indexed_at_end = plan.is_call() && !durable && resume.is_none() && !opts.followed;
        if !indexed_at_end && let Ok(store) = self.store() {
            let shared = plan.is_call().then_some(&journal);
            let _ = store.run_started(&run_id, &rb.name, &dir, shared, &ts, durable);
            if let Some(r) = resume {
                let _ = store.run_resumed(&run_id, &r.from_run, durable);
            }
        }
        if opts.depth == 0
            && let Some(p) = opts.progress
        {
            p(&Progress::RunStarted {
                run_id: run_id.clone(),
                dir: dir.clone(),
                uri_base: uri_base.clone(),
            });
        }
        let cx = RunCx {
            engine: self,
            rb,
            journal: &journal,
            run_id: &run_id,
            dir: dir.clone(),
            uri_base: uri_base.clone(),
            inputs,
            run_info: json!({"id": run_id, "runbook": rb.name, "started_at": ts, "status": "running", "error": null, "failed_steps": []}),
            depth: opts.depth,
            progress: opts.progress,
            grant: gate.grant.clone(),
            keep_results: !plan.is_call(),
            reuse: resume,
            ended: std::sync::OnceLock::new(),
        };
        let (status, mut steps, results, error) = match gate.refusal {
            Some(refusal) => {
                // refused before anything ran: the decision and its rule in the audit log (fsync'd)
                let rec = AuditRecord {
                    run_id: Some(run_id.clone()),
                    runbook: Some(rb.name.clone()),
                    effects: Some(plan.effects().to_string()),
                    plan_digest: Some(plan_digest.clone()),
                    policy: Some(gate.verdict.to_json()),
                    error: Some(json!({"kind": refusal.kind, "message": refusal.message})),
                    ..AuditRecord::new(AuditKind::Refused)
                };
                let error = match self.audit.record(&rec, true) {
                    Ok(_) => refusal,
                    Err(e) => ErrorInfo {
                        kind: "audit_unavailable".into(),
                        message: format!(
                            "{}; and the refusal could not be audited: {e}",
                            refusal.message
                        ),
                    },
                };
                (Status::Refused, Vec::new(), Default::default(), Some(error))
            }
            None => schedule::run_all(&cx, plan, schedule::Bounds::of(cx.rb), &opts.cancel),
        };
        let outputs = cx.outputs(&results);
        // the plan's order: positions looked up once, not scanned per comparison
        let position: std::collections::HashMap<&str, usize> = plan
            .nodes()
            .enumerate()
            .map(|(i, n)| (n.step.id.as_str(), i))
            .collect();
        steps.sort_by_cached_key(|s| position.get(s.id.as_str()).copied().unwrap_or(usize::MAX));
        outcome.status = status;
        outcome.steps = steps;
        outcome.outputs = self.redactor.redact_value(&outputs);
        let error = error.map(|e| ErrorInfo {
            message: self.redactor.redact(&e.message).into_owned(),
            ..e
        });
        outcome.error = error.clone();
        outcome.duration_ms = ms(started.elapsed());
        let _ = journal.append(
            &Record::RunFinished {
                run_id: run_id.clone(),
                ts: now_rfc3339(),
                status,
                duration_ms: outcome.duration_ms,
                outputs: outcome.outputs.clone(),
                error,
            },
            durable,
        );
        let _ = self.audit.record(
            &AuditRecord {
                run_id: Some(run_id.clone()),
                runbook: Some(rb.name.clone()),
                status: Some(status.as_str().to_owned()),
                ..AuditRecord::new(AuditKind::RunFinished)
            },
            false,
        );
        if let Ok(store) = self.store() {
            let _ = if indexed_at_end {
                store.run_whole(&run_id, &rb.name, &dir, &journal, &ts, status.as_str())
            } else {
                store.run_finished(&run_id, status.as_str(), durable)
            };
        }
        self.auto_prune();
        // best effort, never changes the run: plan.json and report.html in its directory
        self.write_report(plan, &outcome, plan_view, journal.take_outlines());
        outcome
    }
}
