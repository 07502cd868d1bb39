//! Resume: a new run of a failed run's runbook that takes the results of the steps that succeeded
//! from the failed run's journal instead of running them again (`infra run --resume <id> [--from
//! <step>] [--force]`, MCP `runbook {action: resume, run_id, from, force}`).
//!
//! **What is kept.** Every main step that succeeds has a `node_result` record with its whole result
//! (redacted; over `RESULT_INLINE` as the artifact `<step>/result.json` with its SHA-256). A result
//! the redactor would change (it held a secret) is not kept (`unkept` says why): a resume that would
//! reuse it is refused, naming the step (`resume.result_unkept`), and `--from <step>` re-runs it
//! instead. So is a step that succeeded in a run recorded before results were kept (its
//! `node_finished` records say it succeeded, and there is no `node_result`): it is never run a
//! second time silently. A kept artifact whose digest no longer matches is refused
//! (`resume.result_missing`).
//!
//! **Which run.** An id or a unique prefix. Refused (each with an audit `refused` record whose
//! `policy.rule` is the rule below, and nothing run): no such run (`resume.unknown_run`); a prefix of
//! several (`resume.ambiguous_id`, naming them); a single call rather than a runbook's run
//! (`resume.not_a_runbook`); a run still going (`resume.running`); a run that succeeded, unless
//! `--from` is given (`resume.succeeded`); a journal that cannot be read (`resume.no_journal`).
//! Runs that failed, timed out, were cancelled, refused or interrupted (killed) can be resumed.
//!
//! **Which runbook.** The one the run recorded: its file again when it was read from a file that is
//! still there, else the catalog's runbook of that name. None (`resume.runbook_gone`), or one that no
//! longer compiles (`resume.runbook_invalid`), is refused.
//!
//! **Inputs.** The recorded ones, with the given ones over them. Secret inputs are never recorded, so
//! they must be given again (`resume.secret_inputs`, naming them); they are not compared.
//!
//! **"The runbook changed"** means the plan the resume would run is not the one the run ran: the
//! runbook's digest, or the rendered plan's digest (steps, arguments as the inputs render them,
//! inputs), differs from the run's `run_started` record. The refusal (`resume.changed`) says what
//! differs: the runbook's text, each input (was, now), each step added, removed or changed (and which
//! of its fields), read against the run's `plan.json`. `--force` runs it anyway: then a changed or
//! added step is re-run like a failed one, and what follows it too.
//!
//! **What runs.** A main step is reused when it succeeded in the run (it has a `node_result`) and its
//! rollback did not run there (a failed run rolls back what succeeded: that effect is undone, so the
//! step runs again). Every other main step runs: the failed one, those skipped (a `when` is judged
//! again), those the run never reached; and so does everything downstream of a step that runs
//! (`Plan::dependencies`, transitively), even when it succeeded. `--from <step>` adds that step (it
//! must be a main step of the plan; an unknown id is refused with a "did you mean",
//! `resume.unknown_step`): it and everything downstream run again. `finally` steps always run, as in
//! every run; if the resumed run fails, the rollbacks of its succeeded steps run, reused ones
//! included (their effect is in place from the earlier run).
//!
//! **Nested runbooks.** A `runbook.run` step is one step here: reused whole when it succeeded, else
//! run again as a new child run from its start (never a silent no-op; the child's own steps are not
//! resumed inside it, so a child's steps that succeeded run again: keep children idempotent, or
//! resume the child's own run). A child known when the plan is compiled is in its parent's plan by
//! its definition digest (`nested_digest`), so a changed child is a changed step here (`--force`
//! runs it again as it reads now); one named by a template is not compared.
//!
//! Two resumes of one run at once are not kept apart: each is its own run.
//!
//! **The new run** is an ordinary run (the policy gate, approvals of its plan's digest, audit,
//! journal), linked to the old one: `resumed_from` in its `run_started` record, in the run index and
//! in the outcome. A reused step is not run: its journal has one `node_result` with `reused_from`
//! naming the run that ran it (resuming a resumed run follows the chain to that run), and its outcome
//! says `reused from run <id>`.
//!
//! Not kept apart: two resumes of one run at once (each is its own run). An inline MCP runbook's run
//! cannot be resumed (its text is not found again: `runbook_gone`).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value, json};

use super::*;
use crate::ctx::now_rfc3339;
use crate::plan::{Plan, PlanNode};
use crate::record::evidence::{KeptArtifact, RESULT_INLINE, Record, Status};
use crate::record::{AuditKind, AuditRecord};
use crate::store::{IdKind, JournalAt};

/// A request to resume a run.
#[derive(Debug, Default)]
pub struct ResumeRequest<'a> {
    /// The run: its id or a unique prefix.
    pub run: &'a str,
    /// Re-run this step and everything downstream of it, even if they succeeded.
    pub from: Option<&'a str>,
    /// Resume although the runbook or the inputs changed.
    pub force: bool,
    /// Inputs given again (secret ones must be); over the recorded ones.
    pub given: Map<String, Value>,
    /// `given` holds text (`--input k=v`), typed by the runbook's declarations.
    pub text_inputs: bool,
    /// `cli` or `mcp`, for the audit record of a refusal.
    pub front_end: &'a str,
}

/// Why a resume was refused; nothing ran. It is in the audit log with its `rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRefusal {
    /// `resume.unknown_run`, `resume.changed`, … (see the module header).
    pub rule: &'static str,
    /// The error kind a front end reports: `not_found`, `invalid_args`, `refused`, `failed`.
    pub kind: &'static str,
    pub message: String,
    pub hint: Option<String>,
    /// The whole id of the run, when the prefix named one.
    pub run_id: Option<String>,
}

impl ResumeRefusal {
    fn new(rule: &'static str, kind: &'static str, message: impl Into<String>) -> Self {
        ResumeRefusal {
            rule,
            kind,
            message: message.into(),
            hint: None,
            run_id: None,
        }
    }

    fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }
}

/// What a resumed run takes from the run it resumes.
#[derive(Debug)]
pub(super) struct Reuse {
    /// The run resumed.
    pub from_run: String,
    steps: HashMap<String, Kept>,
}

/// A step's recorded result, and the run that ran the step.
#[derive(Debug)]
struct Kept {
    result: Value,
    artifact: Option<KeptArtifact>,
    producer: String,
}

/// A `node_result` as read back.
struct Recorded {
    result: Option<Value>,
    artifact: Option<KeptArtifact>,
    unkept: Option<String>,
    producer: String,
}

fn short(s: &str) -> &str {
    &s[..12.min(s.len())]
}

impl Engine {
    /// Resumes a run (see the module header). `Err`: refused before anything ran, and audited.
    pub fn resume(
        &self,
        req: &ResumeRequest<'_>,
        opts: &RunOptions<'_>,
    ) -> Result<RunOutcome, ResumeRefusal> {
        let mut runbook = None;
        match self.prepare_resume(req, &mut runbook) {
            Ok((plan, inputs, reuse)) => {
                Ok(self.execute_as(&plan, inputs, opts, None, false, Some(&reuse)))
            }
            Err(mut refusal) => {
                let rec = AuditRecord {
                    runbook,
                    action: Some("resume".into()),
                    front_end: Some(req.front_end.to_owned()),
                    args: Some(self.redactor.redact_value(&json!({
                        "run": refusal.run_id.as_deref().unwrap_or(req.run),
                        "from": req.from,
                        "force": req.force,
                    }))),
                    policy: Some(json!({
                        "decision": "deny",
                        "rule": refusal.rule,
                        "reason": self.redactor.redact(&refusal.message),
                    })),
                    error: Some(json!({
                        "kind": refusal.kind,
                        "message": self.redactor.redact(&refusal.message),
                    })),
                    ..AuditRecord::new(AuditKind::Refused)
                };
                if let Err(e) = self.audit.record(&rec, true) {
                    refusal.message = format!(
                        "{}; and the refusal could not be audited: {e}",
                        refusal.message
                    );
                }
                Err(refusal)
            }
        }
    }

    /// Everything a resume checks, in order; the plan, its inputs and what to reuse.
    fn prepare_resume(
        &self,
        req: &ResumeRequest<'_>,
        runbook: &mut Option<String>,
    ) -> Result<(Plan, Map<String, Value>, Reuse), ResumeRefusal> {
        let store = self.store().map_err(|e| {
            ResumeRefusal::new(
                "resume.store",
                "failed",
                format!("cannot read the run index: {e}"),
            )
        })?;
        let id = resolve_run(store, req.run)?;
        let with_id = |r: ResumeRefusal| ResumeRefusal {
            run_id: Some(id.clone()),
            ..r
        };
        let row = store
            .run(&id)
            .map_err(|e| {
                ResumeRefusal::new(
                    "resume.store",
                    "failed",
                    format!("cannot read the run index: {e}"),
                )
            })?
            .ok_or_else(|| {
                ResumeRefusal::new(
                    "resume.unknown_run",
                    "not_found",
                    format!("the run `{id}` is gone from the run index"),
                )
            })
            .map_err(with_id)?;
        *runbook = row["runbook"].as_str().map(str::to_owned);
        let name = runbook.clone().unwrap_or_default();
        if row.get("journal").is_some() {
            return Err(with_id(
                ResumeRefusal::new(
                    "resume.not_a_runbook",
                    "invalid_args",
                    format!("run `{id}` is a single call (`{name}`), not a runbook's run: there is nothing to resume"),
                )
                .hint("make the call again"),
            ));
        }
        let status = row["status"].as_str().unwrap_or_default();
        if status == "running" {
            return Err(with_id(
                ResumeRefusal::new(
                    "resume.running",
                    "refused",
                    format!("run `{id}` of `{name}` is still running"),
                )
                .hint(format!(
                    "wait for it to end (`infra runs show {}`), then resume it",
                    short(&id)
                )),
            ));
        }
        if status == "succeeded" && req.from.is_none() {
            return Err(with_id(
                ResumeRefusal::new(
                    "resume.succeeded",
                    "refused",
                    format!("run `{id}` of `{name}` succeeded: there is nothing to resume"),
                )
                .hint("to run steps of it again, give the first of them with `--from <step>` (MCP: `from`)"),
            ));
        }
        let back = JournalAt::of(&row).read().map_err(|e| {
            with_id(ResumeRefusal::new(
                "resume.no_journal",
                "failed",
                format!("cannot read the journal of run `{id}`: {e}"),
            ))
        })?;
        let Some(Record::RunStarted {
            source,
            runbook_digest,
            plan_digest,
            inputs: recorded_inputs,
            ..
        }) = back.records.first().cloned()
        else {
            return Err(with_id(ResumeRefusal::new(
                "resume.no_journal",
                "failed",
                format!("the journal of run `{id}` has no `run_started` record"),
            )));
        };

        // the runbook: the file it was read from, when that is still there, else the catalog's
        let catalog = self.catalog();
        let from_file = !source.starts_with('<') && Path::new(&source).is_file();
        let found = match catalog.get(&name) {
            Some(e) if !from_file || e.runbook.file.name() == source => Ok(e.runbook.clone()),
            _ if from_file => crate::request::find(
                &catalog,
                crate::request::Which::File(&format!("{source}#{name}")),
            ),
            _ => crate::request::find(&catalog, crate::request::Which::Name(&name)),
        };
        let rb = found.map_err(|d| {
            with_id(
                ResumeRefusal::new(
                    "resume.runbook_gone",
                    "not_found",
                    format!(
                        "run `{id}` ran the runbook `{name}` from `{source}`, which cannot be found now: {}",
                        join(&d)
                    ),
                )
                .hint("restore the runbook, or start a new run"),
            )
        })?;
        let plan = crate::request::compile(&catalog, &rb).map_err(|d| {
            with_id(ResumeRefusal::new(
                "resume.runbook_invalid",
                "invalid_args",
                format!("the runbook `{name}` no longer compiles: {}", join(&d)),
            ))
        })?;

        // inputs: the recorded ones, the given ones over them; secrets given again
        let recorded = recorded_inputs.as_object().cloned().unwrap_or_default();
        let secret = |k: &str| rb.inputs.get(k).is_some_and(|i| i.secret);
        let mut changes: Vec<String> = Vec::new();
        let mut merged = Map::new();
        let mut missing_secrets = Vec::new();
        for (k, v) in &recorded {
            if !rb.inputs.contains_key(k) {
                changes.push(format!("the input `{k}` is gone from the runbook"));
            } else if secret(k) {
                if !req.given.contains_key(k) {
                    missing_secrets.push(format!("`{k}`"));
                }
            } else {
                merged.insert(k.clone(), v.clone());
            }
        }
        if !missing_secrets.is_empty() {
            return Err(with_id(
                ResumeRefusal::new(
                    "resume.secret_inputs",
                    "invalid_args",
                    format!(
                        "run `{id}` had the secret input(s) {}, and secrets are never recorded",
                        missing_secrets.join(", ")
                    ),
                )
                .hint("give them again (`--input name=…`, MCP: `input`)"),
            ));
        }
        for (k, v) in &req.given {
            let v = match (req.text_inputs, v) {
                (true, Value::String(t)) => {
                    dsl::coerce_input(rb.inputs.get(k).map_or(dsl::InputType::String, |i| i.ty), t)
                }
                _ => v.clone(),
            };
            if !secret(k)
                && let Some(old) = recorded.get(k)
                && *old != v
            {
                changes.push(format!("the input `{k}` was {old}, now {v}"));
            }
            merged.insert(k.clone(), v);
        }
        let inputs = dsl::resolve_inputs(&rb, &merged).map_err(|d| {
            with_id(ResumeRefusal::new(
                "resume.inputs",
                "invalid_args",
                format!(
                    "the inputs of run `{id}` do not fit the runbook now: {}",
                    join(&d)
                ),
            ))
        })?;

        // the plan as it would run now, against the one the run ran
        let rendered = plan.render_for_run(&inputs);
        let mut changed_steps: HashSet<String> = HashSet::new();
        if rb.digest != runbook_digest {
            changes.push(format!(
                "the runbook's text changed (digest {} then, {} now)",
                short(&runbook_digest),
                short(&rb.digest)
            ));
        }
        if rendered.digest != plan_digest {
            let dir = row["dir"].as_str().unwrap_or_default();
            let before = std::fs::read(Path::new(dir).join("plan.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            let now = self.redactor.redact_value(&rendered.json);
            let found = before
                .as_ref()
                .map(|b| plan_changes(b, &now, &mut changed_steps))
                .unwrap_or_default();
            for c in found {
                if !changes.contains(&c) {
                    changes.push(c);
                }
            }
            if changes.is_empty() {
                changes.push(format!(
                    "the plan changed (digest {} then, {} now)",
                    short(&plan_digest),
                    short(&rendered.digest)
                ));
            }
        }
        if !changes.is_empty() && !req.force {
            return Err(with_id(
                ResumeRefusal::new(
                    "resume.changed",
                    "refused",
                    format!(
                        "run `{id}` of `{name}` cannot be resumed as it is: since it ran, {}",
                        changes.join("; ")
                    ),
                )
                .hint("resume anyway with `--force` (MCP: `force: true`): changed steps, and what follows them, run again; or start a new run"),
            ));
        }

        // what succeeded in the run, and which rollbacks ran there
        let mut kept: HashMap<String, Recorded> = HashMap::new();
        let mut started: HashSet<String> = HashSet::new();
        // each step's last status per `foreach` item, to tell a step that succeeded without a
        // `node_result` (a run recorded before results were kept) from one that failed
        let mut ended: HashMap<&str, HashMap<Option<usize>, Status>> = HashMap::new();
        for r in &back.records {
            match r {
                Record::NodeResult {
                    step,
                    result,
                    artifact,
                    unkept,
                    reused_from,
                    ..
                } => {
                    kept.insert(
                        step.clone(),
                        Recorded {
                            result: result.clone(),
                            artifact: artifact.clone(),
                            unkept: unkept.clone(),
                            producer: reused_from.clone().unwrap_or_else(|| id.clone()),
                        },
                    );
                }
                Record::NodeFinished {
                    step,
                    index,
                    status,
                    ..
                } => {
                    started.insert(step.clone());
                    ended.entry(step).or_default().insert(*index, *status);
                }
                Record::NodeStarted { step, .. } => {
                    started.insert(step.clone());
                }
                _ => {}
            }
        }
        let main: Vec<&PlanNode> = plan
            .nodes()
            .filter(|n| n.phase() == dsl::Phase::Main)
            .collect();
        if let Some(from) = req.from
            && !main.iter().any(|n| n.step.id.as_str() == from)
        {
            let finally = plan
                .nodes()
                .any(|n| n.step.id.as_str() == from && n.phase() == dsl::Phase::Finally);
            let mut r = ResumeRefusal::new(
                "resume.unknown_step",
                "invalid_args",
                if finally {
                    format!(
                        "`{from}` is a `finally` step of `{name}`; those run in every run, resumed or not"
                    )
                } else {
                    format!("the runbook `{name}` has no step `{from}`")
                },
            );
            r.hint = dsl::diagnostic::suggestion(from, main.iter().map(|n| n.step.id.as_str()))
                .or_else(|| {
                    Some(format!(
                        "its steps are: {}",
                        main.iter()
                            .map(|n| n.step.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                });
            return Err(with_id(r));
        }
        // a step runs again when it did not succeed (or was rolled back), when `--from` names it,
        // when it changed (`--force`), or when a step it follows runs again; nodes are in
        // topological order, so one pass sees every step's dependencies first
        let mut rerun: HashSet<&str> = HashSet::new();
        for n in &main {
            let id_ = n.step.id.as_str();
            let rolled_back = n
                .rollback
                .as_ref()
                .is_some_and(|r| started.contains(r.step.id.as_str()));
            let succeeded = kept.contains_key(id_)
                || ended
                    .get(id_)
                    .is_some_and(|e| e.values().all(|s| *s == Status::Succeeded));
            let seed =
                !succeeded || rolled_back || req.from == Some(id_) || changed_steps.contains(id_);
            if seed
                || plan
                    .dependencies(&n.step.id)
                    .iter()
                    .any(|d| rerun.contains(d.as_str()))
            {
                rerun.insert(id_);
            }
        }
        let mut steps = HashMap::new();
        for n in main.iter().filter(|n| !rerun.contains(n.step.id.as_str())) {
            let step = n.step.id.as_str();
            // it succeeded, but without a `node_result`: it cannot be reused, nor run twice silently
            let Some(rec) = kept.remove(step) else {
                return Err(with_id(
                    ResumeRefusal::new(
                        "resume.result_unkept",
                        "refused",
                        format!("step `{step}` succeeded in run `{id}`, but its result was not recorded (the run was made before infra kept results), so it cannot be reused"),
                    )
                    .hint(format!("run it again with the rest: `--from {step}` (MCP: `from: \"{step}\"`)")),
                ));
            };
            if let Some(why) = rec.unkept {
                return Err(with_id(
                    ResumeRefusal::new(
                        "resume.result_unkept",
                        "refused",
                        format!("step `{step}` succeeded in run `{}`, but its result was not recorded ({why}), so it cannot be reused", rec.producer),
                    )
                    .hint(format!("run it again with the rest: `--from {step}` (MCP: `from: \"{step}\"`)")),
                ));
            }
            let result = match (&rec.artifact, rec.result) {
                (Some(a), _) => self.read_kept(a).map_err(|why| {
                    with_id(
                        ResumeRefusal::new(
                            "resume.result_missing",
                            "failed",
                            format!(
                                "the recorded result of step `{step}` (`{}`) cannot be used: {why}",
                                a.uri
                            ),
                        )
                        .hint(format!("run it again with the rest: `--from {step}`")),
                    )
                })?,
                (None, Some(v)) => v,
                (None, None) => Value::Null,
            };
            steps.insert(
                step.to_owned(),
                Kept {
                    result,
                    artifact: rec.artifact,
                    producer: rec.producer,
                },
            );
        }
        Ok((
            plan,
            inputs,
            Reuse {
                from_run: id,
                steps,
            },
        ))
    }

    /// A result kept as an artifact, checked against its recorded digest.
    fn read_kept(&self, a: &KeptArtifact) -> Result<Value, String> {
        use sha2::Digest;
        let mut f = crate::record::artifacts::open(&self.config.artifacts_root, &a.uri)
            .map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        let sha = dsl::analyze::hex(&sha2::Sha256::digest(&bytes));
        if sha != a.sha256 {
            return Err(format!(
                "its SHA-256 is {} now, {} when it was written",
                short(&sha),
                short(&a.sha256)
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

/// The run an id or a unique prefix names.
fn resolve_run(store: &crate::store::Store, arg: &str) -> Result<String, ResumeRefusal> {
    let unknown = || {
        ResumeRefusal::new(
            "resume.unknown_run",
            "not_found",
            format!("no run has an id starting with `{arg}`"),
        )
        .hint("`infra runs list` (MCP: `evidence`) shows the runs")
    };
    if arg.is_empty() {
        return Err(unknown());
    }
    let found = store.ids_with_prefix(IdKind::Run, arg, 11).map_err(|e| {
        ResumeRefusal::new(
            "resume.store",
            "failed",
            format!("cannot read the run index: {e}"),
        )
    })?;
    match found.as_slice() {
        [] => Err(unknown()),
        [(id, ..)] => Ok(id.clone()),
        many => {
            if let Some((id, ..)) = many.iter().find(|(id, ..)| id == arg) {
                return Ok(id.clone());
            }
            let listed: Vec<String> = many
                .iter()
                .take(10)
                .map(|(id, rb, at)| format!("{id} ({rb}, {at})"))
                .collect();
            Err(ResumeRefusal::new(
                "resume.ambiguous_id",
                "invalid_args",
                format!(
                    "the run id prefix `{arg}` is ambiguous: {}{}",
                    listed.join(", "),
                    if many.len() > 10 { ", …" } else { "" }
                ),
            )
            .hint("give more characters of the id"))
        }
    }
}

/// What differs between the plan a run recorded (`plan.json`) and the plan now: inputs, and steps
/// added, removed or changed (with the fields that changed). Changed and added steps go to `steps`.
fn plan_changes(before: &Value, now: &Value, steps: &mut HashSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let empty = Map::new();
    let (bi, ni) = (
        before["inputs"].as_object().unwrap_or(&empty),
        now["inputs"].as_object().unwrap_or(&empty),
    );
    for (k, v) in ni {
        match bi.get(k) {
            Some(old) if old != v => out.push(format!("the input `{k}` was {old}, now {v}")),
            None => out.push(format!("the input `{k}` is new ({v})")),
            _ => {}
        }
    }
    let nodes = |p: &Value| -> Vec<(String, Value)> {
        p["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| (n["id"].as_str().unwrap_or_default().to_owned(), n.clone()))
            .collect()
    };
    let (bn, nn) = (nodes(before), nodes(now));
    for (id, n) in &nn {
        match bn.iter().find(|(b, _)| b == id) {
            None => {
                out.push(format!("the step `{id}` was added"));
                steps.insert(id.clone());
            }
            Some((_, old)) if old != n => {
                let mut fields: Vec<&str> = n
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| old.get(k.as_str()) != Some(*v))
                    .map(|(k, _)| k.as_str())
                    .chain(
                        old.as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(k, _)| n.get(k.as_str()).is_none())
                            .map(|(k, _)| k.as_str()),
                    )
                    .collect();
                fields.dedup();
                out.push(format!("the step `{id}` changed ({})", fields.join(", ")));
                steps.insert(id.clone());
            }
            _ => {}
        }
    }
    for (id, _) in &bn {
        if !nn.iter().any(|(n, _)| n == id) {
            out.push(format!("the step `{id}` was removed"));
        }
    }
    out
}

impl RunCx<'_> {
    /// Records a main step's whole result (`node_result`), for a later resume.
    pub(super) fn keep_result(&self, node: &PlanNode, result: &Value) {
        let step = node.step.id.to_string();
        let shown = self.engine.redactor.redact_value(result);
        let (kept, artifact, unkept) = if shown != *result {
            (
                None,
                None,
                Some("it held a secret, and secrets are never recorded".to_owned()),
            )
        } else if serde_json::to_vec(&shown).map_or(usize::MAX, |b| b.len()) <= RESULT_INLINE {
            (Some(shown), None, None)
        } else {
            match crate::record::artifacts::write_json(
                &self.dir.join(&step),
                &format!("{}/{step}", self.uri_base),
                "result.json",
                &shown,
                std::sync::Arc::clone(&self.engine.redactor),
            ) {
                Ok(a) => (
                    None,
                    Some(KeptArtifact {
                        uri: a.uri,
                        bytes: a.bytes,
                        sha256: a.sha256,
                    }),
                    None,
                ),
                Err(e) => (None, None, Some(format!("it could not be written: {e}"))),
            }
        };
        let _ = self.journal.append(
            &Record::NodeResult {
                run_id: self.run_id.to_owned(),
                ts: now_rfc3339(),
                step,
                result: kept,
                artifact,
                unkept,
                reused_from: None,
            },
            false,
        );
    }

    /// A step a resumed run takes from the run it resumes: its `node_result` (naming the run that ran
    /// it) and its outcome, without running it.
    pub(super) fn reused(&self, node: &PlanNode) -> Option<StepOutcome> {
        let k = self.reuse?.steps.get(node.step.id.as_str())?;
        let step = node.step.id.to_string();
        let _ = self.journal.append(
            &Record::NodeResult {
                run_id: self.run_id.to_owned(),
                ts: now_rfc3339(),
                step: step.clone(),
                result: k.artifact.is_none().then(|| k.result.clone()),
                artifact: k.artifact.clone(),
                unkept: None,
                reused_from: Some(k.producer.clone()),
            },
            false,
        );
        Some(StepOutcome {
            id: step,
            status: Status::Succeeded,
            attempts: 0,
            duration_ms: 0,
            result: Some(k.result.clone()),
            error: None,
            reason: Some(format!("reused from run {}", k.producer)),
        })
    }
}
