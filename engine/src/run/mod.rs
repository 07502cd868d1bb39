//! The executor: runs a sealed [`Plan`] node by node in dependency order, with bounded parallelism,
//! `when`, `foreach`, `retry`, timeouts, `continue_on_error`, `finally`, `rollback` and cancellation;
//! records every transition in the run's evidence journal and every call in the audit log.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use dsl::template::{Mode, renderer};
use dsl::{Effect, Flow, Runbook};
use serde_json::{Map, Value, json};

pub use crate::exec::CancelToken;

use crate::actions::state::Session;
use crate::actions::{self, ActionError, Call, Host, Nested, NestedOutcome, Pools};
use crate::catalog::Catalog;
use crate::ctx::{Config, new_id, now_rfc3339, now_stamp};
use crate::plan::{CompileOptions, Plan, PlanNode};
use crate::record::evidence::{ErrorInfo, Record, Status};
use crate::record::{Audit, Journal, Redactor};
use crate::store::{LazyStore, Store, StoreError};

/// One engine per process: configuration, runbooks, the audit log, the store and the redactor.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    catalog: std::sync::RwLock<Arc<Catalog>>,
    audit: Audit,
    redactor: Arc<Redactor>,
    session: Session,
    store: Arc<LazyStore>,
    pools: Pools,
}

/// A step of a run, as it ended.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub id: String,
    pub status: Status,
    pub attempts: u32,
    pub duration_ms: u64,
    /// The step's result (a list for `foreach`), whole.
    pub result: Option<Value>,
    pub error: Option<ActionError>,
    /// Why it did not run (skipped steps).
    pub reason: Option<String>,
}

/// A whole run, as it ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: String,
    pub runbook: String,
    pub status: Status,
    pub dir: PathBuf,
    pub uri_base: String,
    pub duration_ms: u64,
    /// Main and `finally` steps in plan order, then rollbacks.
    pub steps: Vec<StepOutcome>,
    pub outputs: Value,
    pub error: Option<ErrorInfo>,
}

impl RunOutcome {
    pub fn ok(&self) -> bool {
        self.status == Status::Succeeded
    }
}

/// What a progress callback hears.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A top-level run has its id and directory (once, before its first step): where its journal and
    /// its steps' output artifacts are being written.
    RunStarted {
        run_id: String,
        dir: PathBuf,
        uri_base: String,
    },
    Started {
        step: String,
    },
    Finished {
        step: String,
        status: Status,
        duration_ms: u64,
        error: Option<String>,
    },
}

/// Options of one run.
#[derive(Default)]
pub struct RunOptions<'a> {
    pub cancel: CancelToken,
    /// Nesting depth (0 for a top-level run).
    pub depth: usize,
    pub progress: Option<&'a (dyn Fn(&Progress) + Sync)>,
}

impl std::fmt::Debug for RunOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("depth", &self.depth)
            .finish()
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty() && s != "false",
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The work of one node, rendered by the scheduler: one set of arguments, or one per `foreach` item.
struct Prepared {
    items: Vec<(Option<usize>, Value, Map<String, Value>)>,
    foreach: bool,
}

/// Shared by the scheduler and its workers during one run.
struct RunCx<'a> {
    engine: &'a Engine,
    rb: &'a Runbook,
    journal: &'a Journal,
    run_id: &'a str,
    dir: PathBuf,
    uri_base: String,
    inputs: Value,
    run_info: Value,
    depth: usize,
    progress: Option<&'a (dyn Fn(&Progress) + Sync)>,
}

impl Engine {
    pub fn new(config: Config, catalog: Arc<Catalog>) -> Self {
        let store = Arc::new(LazyStore::new(config.store_path()));
        let audit = Audit::new(config.audit_path())
            .with_keeper(store.clone())
            .with_key(config.audit_key.clone());
        let redactor = Arc::new(Redactor::new());
        if let Some(key) = &config.audit_key {
            redactor.add(&key.as_text());
        }
        Engine {
            config,
            catalog: std::sync::RwLock::new(catalog),
            audit,
            redactor,
            session: Session::default(),
            store,
            pools: Pools::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The runbooks as of the last load (a snapshot: later reloads do not change it).
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(
            &self
                .catalog
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Reloads the runbooks from the configured places (after a project runbook was written or removed).
    pub fn reload_catalog(&self) {
        let fresh = Arc::new(Catalog::load(&crate::catalog::CatalogOptions {
            profiles_dir: Some(self.config.profiles_dir.clone()),
            runbooks_path: self.config.runbooks_path.clone(),
        }));
        *self
            .catalog
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    }
    pub fn audit(&self) -> &Audit {
        &self.audit
    }
    /// SSH sessions, HTTP agents and PostgreSQL clients, shared by every call and step of this engine.
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    pub fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Creates the profiles directory with a `.gitignore` for what infra writes there (evidence, audit,
    /// store), so a project's `.infra/` shows only its runbooks and configuration to git.
    fn prepare_profiles_dir(&self) {
        let dir = &self.config.profiles_dir;
        let ignore = dir.join(".gitignore");
        if !ignore.exists() && std::fs::create_dir_all(dir).is_ok() {
            let _ = std::fs::write(
                &ignore,
                "# written by infra: run evidence, the audit log and the store stay out of git
/runs/
/audit.jsonl
/store.sqlite3*
/.gitignore
",
            );
        }
    }

    /// The store, opened on first use.
    pub fn store(&self) -> Result<&Store, StoreError> {
        self.store.get()
    }

    /// Checks the audit log: its chain, and its end against the head the store kept (a log cut back,
    /// emptied or deleted is reported). The store is not created when there is none.
    /// With a `checkpoint` (`infra audit checkpoint`), the log must also still hold that record with
    /// that hash.
    pub fn verify_audit(
        &self,
        checkpoint: Option<crate::record::audit::Head>,
    ) -> std::io::Result<crate::record::audit::Verified> {
        use crate::record::audit::{Anchor, VerifyOptions};
        let anchor = if !self.store.path().exists() {
            Anchor::NoStore
        } else {
            let read = self
                .store()
                .and_then(|s| Ok((s.audit_head()?, s.runs_count()?)));
            match read {
                Ok((head, runs)) => Anchor::Store { head, runs },
                Err(e) => Anchor::Unreadable(e.to_string()),
            }
        };
        self.audit
            .verify_with(&VerifyOptions { anchor, checkpoint })
    }

    /// The audit log's head, to keep elsewhere: its last record, once the whole log verifies.
    pub fn audit_checkpoint(&self) -> Result<crate::record::audit::Head, String> {
        let v = self.verify_audit(None).map_err(|e| {
            format!(
                "cannot read the audit log `{}`: {e}",
                self.audit.path().display()
            )
        })?;
        if let Some(p) = v.problem {
            return Err(format!(
                "the audit log does not verify, so it has no head to keep: record {} (line {}): {}",
                p.seq, p.line, p.message
            ));
        }
        v.last
            .ok_or_else(|| "the audit log has no records yet: there is no head to keep".into())
    }

    /// Compiles a runbook, checks its inputs and runs it. `Err` carries the diagnostics as text.
    pub fn run_runbook(
        &self,
        rb: Arc<Runbook>,
        given: &Map<String, Value>,
        cancel: &CancelToken,
        depth: usize,
    ) -> Result<RunOutcome, String> {
        let catalog = self.catalog();
        let opts = CompileOptions {
            resolver: Some(&*catalog),
            stack: Vec::new(),
        };
        let plan = crate::plan::compile(rb.clone(), &opts).map_err(|d| join(&d))?;
        let inputs = dsl::resolve_inputs(&rb, given).map_err(|d| join(&d))?;
        Ok(self.execute(
            &plan,
            inputs,
            &RunOptions {
                cancel: cancel.clone(),
                depth,
                progress: None,
            },
        ))
    }

    /// The runbook a nested run names: from the catalog, or given whole.
    fn nested_runbook(&self, which: Nested<'_>) -> Result<Arc<Runbook>, ActionError> {
        match which {
            Nested::Name(name) => self
                .catalog()
                .get(name)
                .map(|e| e.runbook.clone())
                .ok_or_else(|| {
                    ActionError::new("not_found", format!("there is no runbook `{name}`"))
                }),
            Nested::Inline(inline) => {
                let text = serde_json::to_string(inline).unwrap_or_default();
                let file = dsl::SourceFile::new("<inline runbook>", text);
                let loaded = dsl::load(&file, Some("inline"));
                if loaded.has_errors() {
                    let msgs: Vec<String> =
                        loaded.diagnostics.iter().map(ToString::to_string).collect();
                    return Err(ActionError::new("invalid_args", msgs.join("; ")));
                }
                loaded
                    .runbooks
                    .into_iter()
                    .next()
                    .map(Arc::new)
                    .ok_or_else(|| {
                        ActionError::new("invalid_args", "the inline runbook holds no runbook")
                    })
            }
        }
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
        let rel = format!("runs/call/{}-{}", now_stamp(), &run_id[..8]);
        let dir = self.config.artifacts_root.join(&rel);
        self.prepare_profiles_dir();
        let journal = Journal::create(&dir)?;
        let ts = now_rfc3339();
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
                runbook: "call".into(),
                source: format!("<call {tool}>"),
                runbook_digest: String::new(),
                plan_digest: String::new(),
                inputs: Value::Object(Map::new()),
                effects: "read".into(),
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
            let _ = store.run_started(&run_id, "call", &dir, &ts);
            let word = serde_json::to_value(status).unwrap_or_default();
            let _ = store.run_finished(&run_id, word.as_str().unwrap_or("unknown"));
        }
        Ok(run_id)
    }

    /// Runs a plan with resolved inputs. Never panics on a failing step: failures are in the outcome.
    pub fn execute(
        &self,
        plan: &Plan,
        inputs: Map<String, Value>,
        opts: &RunOptions<'_>,
    ) -> RunOutcome {
        let started = Instant::now();
        let rb = plan.runbook();
        let run_id = new_id();
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
        };
        let audit_start = json!({
            "kind": "run_started", "run_id": run_id, "runbook": rb.name, "effects": plan.effects(),
            "plan_digest": plan.digest(), "inputs": shown_inputs, "depth": opts.depth,
        });
        self.prepare_profiles_dir();
        // a run that can change something has its start and end on disk (fsync'd) before and after the
        // change; a read-only run's records are written the same way but not forced to disk
        let durable = plan.effects() >= Effect::Write;
        if let Err(e) = self.audit.append(&audit_start, durable) {
            outcome.error = Some(ErrorInfo {
                kind: "audit_unavailable".into(),
                message: format!("{e}; nothing was run"),
            });
            return outcome;
        }
        let journal = match Journal::create(&dir) {
            Ok(j) => j,
            Err(e) => {
                outcome.error = Some(ErrorInfo {
                    kind: "evidence_unavailable".into(),
                    message: format!(
                        "cannot create the run directory `{}`: {e}; nothing was run",
                        dir.display()
                    ),
                });
                let _ = self.audit.append(
                    &json!({"kind": "run_finished", "run_id": run_id, "status": "refused"}),
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
                plan_digest: plan.digest().to_owned(),
                inputs: shown_inputs,
                effects: plan.effects().as_str().to_owned(),
            },
            durable,
        );
        if let Ok(store) = self.store() {
            let _ = store.run_started(&run_id, &rb.name, &dir, &ts);
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
            run_info: json!({"id": run_id, "runbook": rb.name, "started_at": ts}),
            depth: opts.depth,
            progress: opts.progress,
        };
        let (status, mut steps, results, error) = cx.run_all(plan, &opts.cancel);
        let outputs = cx.outputs(&results);
        steps.sort_by_key(|s| plan_position(plan, &s.id));
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
        let _ = self.audit.append(
            &json!({"kind": "run_finished", "run_id": run_id, "runbook": rb.name, "status": status}),
            false,
        );
        if let Ok(store) = self.store() {
            let word = serde_json::to_value(status).unwrap_or_default();
            let _ = store.run_finished(&run_id, word.as_str().unwrap_or("unknown"));
        }
        outcome
    }
}

fn plan_position(plan: &Plan, id: &str) -> usize {
    plan.nodes()
        .position(|n| n.step.id.as_str() == id)
        .unwrap_or(usize::MAX)
}

fn join(d: &[dsl::Diagnostic]) -> String {
    d.iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

enum NodeState {
    Pending,
    Running,
    Done(Status),
}

impl RunCx<'_> {
    /// The context templates of `node` see: inputs, run, the results of the steps it references, state.
    fn context(
        &self,
        node: &PlanNode,
        results: &HashMap<String, Value>,
        item: Option<(&Value, usize)>,
    ) -> Value {
        let mut steps = Map::new();
        for (id, _) in node.step.refs.iter().chain(node.step.needs.iter()) {
            if let Some(r) = results.get(id.as_str()) {
                steps.insert(id.to_string(), r.clone());
            }
        }
        let mut ctx = json!({"input": self.inputs, "run": self.run_info, "steps": steps});
        let uses_state = node
            .step
            .templates
            .iter()
            .any(|t| t.scan.references.iter().any(|r| r.root == "state"));
        if uses_state {
            ctx["state"] = self.engine.session.snapshot();
        }
        if let Some((item, index)) = item {
            ctx["item"] = item.clone();
            ctx["index"] = index.into();
        }
        ctx
    }

    /// Renders a node's `when`, `foreach` and arguments. `Ok(None)`: `when` is false.
    fn prepare(
        &self,
        node: &PlanNode,
        results: &HashMap<String, Value>,
    ) -> Result<Option<Prepared>, ActionError> {
        let base = self.context(node, results, None);
        let template_err = |e: dsl::template::RenderError| ActionError::new("template", e.message);
        if let Some(w) = &node.step.when {
            let v = match w {
                dsl::raw::BoolOrTemplate::Bool(b) => Value::Bool(*b),
                dsl::raw::BoolOrTemplate::Template(t) => renderer()
                    .render(t, Mode::Plain, &base)
                    .map_err(template_err)?,
            };
            if !truthy(&v) {
                return Ok(None);
            }
        }
        let (items, foreach): (Vec<(Option<usize>, Value)>, bool) = match &node.step.foreach {
            None => (vec![(None, Value::Null)], false),
            Some(f) => {
                let list = match f {
                    dsl::raw::ListOrTemplate::List(l) => Value::Array(l.clone()),
                    dsl::raw::ListOrTemplate::Template(t) => renderer()
                        .render(t, Mode::Plain, &base)
                        .map_err(template_err)?,
                };
                let Value::Array(list) = list else {
                    return Err(ActionError::new(
                        "template",
                        "`foreach` did not render to a list",
                    ));
                };
                (
                    list.into_iter()
                        .enumerate()
                        .map(|(i, v)| (Some(i), v))
                        .collect(),
                    true,
                )
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items {
            let ctx = match index {
                Some(i) => self.context(node, results, Some((&item, i))),
                None => base.clone(),
            };
            let args = render_args(node, &ctx)?;
            out.push((index, item, args));
        }
        Ok(Some(Prepared {
            items: out,
            foreach,
        }))
    }

    fn skip(&self, node: &PlanNode, reason: String) -> StepOutcome {
        let _ = self.journal.append(
            &Record::NodeSkipped {
                run_id: self.run_id.to_owned(),
                ts: now_rfc3339(),
                step: node.step.id.to_string(),
                reason: reason.clone(),
            },
            false,
        );
        StepOutcome {
            id: node.step.id.to_string(),
            status: Status::Skipped,
            attempts: 0,
            duration_ms: 0,
            result: None,
            error: None,
            reason: Some(reason),
        }
    }

    fn failed_before_start(&self, node: &PlanNode, e: ActionError) -> StepOutcome {
        let shown = self.engine.redactor.redact_value(&e.to_json());
        // the journal below keeps it too; a failure to audit it cannot make this step fail harder
        let _ = self.engine.audit.append(
            &json!({
                "kind": "rejected", "run_id": self.run_id, "step": node.step.id, "tool": node.action.tool,
                "action": node.action.name, "error": shown,
            }),
            false,
        );
        let _ = self.journal.append(
            &Record::NodeFinished {
                run_id: self.run_id.to_owned(),
                ts: now_rfc3339(),
                step: node.step.id.to_string(),
                attempt: 0,
                index: None,
                status: Status::Failed,
                duration_ms: 0,
                exit_code: None,
                outputs: Value::Null,
                artifacts: Vec::new(),
                error: Some(ErrorInfo {
                    kind: e.kind.clone(),
                    message: self.engine.redactor.redact(&e.message).into_owned(),
                }),
            },
            false,
        );
        StepOutcome {
            id: node.step.id.to_string(),
            status: Status::Failed,
            attempts: 0,
            duration_ms: 0,
            result: None,
            error: Some(e),
            reason: None,
        }
    }

    /// Runs the main steps, then `finally`, then rollbacks when the run failed.
    fn run_all(
        &self,
        plan: &Plan,
        cancel: &CancelToken,
    ) -> (
        Status,
        Vec<StepOutcome>,
        HashMap<String, Value>,
        Option<ErrorInfo>,
    ) {
        let nodes: Vec<&PlanNode> = plan.nodes().collect();
        let main: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].phase() == dsl::Phase::Main)
            .collect();
        let position: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.step.id.as_str(), i))
            .collect();
        let deps: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                plan.dependencies(&n.step.id)
                    .iter()
                    .filter_map(|d| position.get(d.as_str()).copied())
                    .collect()
            })
            .collect();
        let max_parallel = self
            .rb
            .max_parallel
            .map_or(if self.rb.flow == Flow::Dag { 4 } else { 1 }, |m| {
                m as usize
            })
            .max(1);
        let run_deadline = self
            .rb
            .timeout_ms
            .map(|t| Instant::now() + Duration::from_millis(t));

        let mut state: Vec<NodeState> = nodes.iter().map(|_| NodeState::Pending).collect();
        let mut results: HashMap<String, Value> = HashMap::new();
        let mut outcomes: Vec<StepOutcome> = Vec::new();
        let mut completed: Vec<usize> = Vec::new();
        let mut failed: Option<ErrorInfo> = None;
        let mut timed_out = false;
        let (tx, rx) = mpsc::channel::<(usize, StepOutcome)>();

        // Kahn's algorithm over the main steps: a node is ready when all it runs after are done; ready
        // nodes start in plan order. Each node is looked at a constant number of times.
        let is_main: Vec<bool> = nodes
            .iter()
            .map(|n| n.phase() == dsl::Phase::Main)
            .collect();
        let mut waiting_on: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> = main
            .iter()
            .copied()
            .filter(|&i| waiting_on[i] == 0)
            .map(Reverse)
            .collect();
        let release =
            |i: usize, waiting_on: &mut Vec<usize>, ready: &mut BinaryHeap<Reverse<usize>>| {
                for &d in &dependents[i] {
                    waiting_on[d] -= 1;
                    if waiting_on[d] == 0 && is_main[d] {
                        ready.push(Reverse(d));
                    }
                }
            };

        std::thread::scope(|s| {
            let mut running = 0usize;
            loop {
                while running < max_parallel
                    && failed.is_none()
                    && !cancel.is_cancelled()
                    && !timed_out
                    && let Some(Reverse(i)) = ready.pop()
                {
                    let node = nodes[i];
                    let blocked = node
                        .step
                        .needs
                        .iter()
                        .chain(node.step.refs.iter())
                        .find_map(|(id, _)| match state[*position.get(id.as_str())?] {
                            NodeState::Done(Status::Succeeded) => None,
                            NodeState::Done(Status::Skipped) => {
                                Some(format!("it needs `{id}`, which was skipped"))
                            }
                            NodeState::Done(_) => Some(format!("it needs `{id}`, which failed")),
                            _ => None,
                        });
                    if let Some(reason) = blocked {
                        outcomes.push(self.skip(node, reason));
                        state[i] = NodeState::Done(Status::Skipped);
                        release(i, &mut waiting_on, &mut ready);
                        continue;
                    }
                    match self.prepare(node, &results) {
                        Ok(None) => {
                            outcomes.push(self.skip(node, "`when` was false".into()));
                            state[i] = NodeState::Done(Status::Skipped);
                            release(i, &mut waiting_on, &mut ready);
                        }
                        Err(e) => {
                            let o = self.failed_before_start(node, e);
                            if !node.step.continue_on_error {
                                failed = Some(ErrorInfo {
                                    kind: "step_failed".into(),
                                    message: format!(
                                        "step `{}` failed: {}",
                                        node.step.id,
                                        o.error
                                            .as_ref()
                                            .map(ToString::to_string)
                                            .unwrap_or_default()
                                    ),
                                });
                            }
                            outcomes.push(o);
                            state[i] = NodeState::Done(Status::Failed);
                            release(i, &mut waiting_on, &mut ready);
                        }
                        Ok(Some(work)) => {
                            state[i] = NodeState::Running;
                            running += 1;
                            let tx = tx.clone();
                            s.spawn(move || {
                                let o = self.run_node(node, work, cancel, max_parallel);
                                let _ = tx.send((i, o));
                            });
                        }
                    }
                }
                if running == 0 {
                    break;
                }
                let wait = run_deadline.map_or(Duration::from_millis(100), |d| {
                    d.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(100))
                });
                match rx.recv_timeout(wait) {
                    Ok((i, o)) => {
                        running -= 1;
                        let node = nodes[i];
                        state[i] = NodeState::Done(o.status);
                        release(i, &mut waiting_on, &mut ready);
                        if o.status == Status::Succeeded {
                            completed.push(i);
                        } else if !node.step.continue_on_error && failed.is_none() {
                            failed = Some(ErrorInfo {
                                kind: o
                                    .error
                                    .as_ref()
                                    .map_or("step_failed".into(), |e| e.kind.clone()),
                                message: format!(
                                    "step `{}` {}: {}",
                                    node.step.id,
                                    match o.status {
                                        Status::TimedOut => "timed out",
                                        Status::Cancelled => "was cancelled",
                                        Status::Refused => "was refused",
                                        _ => "failed",
                                    },
                                    o.error
                                        .as_ref()
                                        .map(|e| e.message.clone())
                                        .unwrap_or_default()
                                ),
                            });
                        }
                        if let Some(r) = &o.result {
                            results.insert(o.id.clone(), r.clone());
                        }
                        outcomes.push(o);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if run_deadline.is_some_and(|d| Instant::now() >= d) && !timed_out {
                            timed_out = true;
                            cancel.cancel();
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        for &i in &main {
            if matches!(state[i], NodeState::Pending) {
                outcomes.push(self.skip(nodes[i], "the run stopped before it".into()));
            }
        }

        let mut status = if timed_out {
            Status::TimedOut
        } else if cancel.is_cancelled() {
            Status::Cancelled
        } else if failed.is_some() {
            Status::Failed
        } else {
            Status::Succeeded
        };
        let mut error = failed;
        if timed_out {
            error = Some(ErrorInfo {
                kind: "timeout".into(),
                message: format!(
                    "the run passed its timeout of {} ms",
                    self.rb.timeout_ms.unwrap_or(0)
                ),
            });
        } else if status == Status::Cancelled && error.is_none() {
            error = Some(ErrorInfo {
                kind: "cancelled".into(),
                message: "the run was cancelled".into(),
            });
        }

        // finally: always, in order, with a fresh token (cleanup must not be cut short by the cancel)
        let cleanup = CancelToken::new();
        for n in nodes.iter().filter(|n| n.phase() == dsl::Phase::Finally) {
            let o = match self.prepare(n, &results) {
                Ok(None) => self.skip(n, "`when` was false".into()),
                Ok(Some(work)) => self.run_node(n, work, &cleanup, 1),
                Err(e) => self.failed_before_start(n, e),
            };
            if let Some(r) = &o.result {
                results.insert(o.id.clone(), r.clone());
            }
            if o.status != Status::Succeeded
                && o.status != Status::Skipped
                && !n.step.continue_on_error
                && status == Status::Succeeded
            {
                status = Status::Failed;
                error = Some(ErrorInfo {
                    kind: "step_failed".into(),
                    message: format!("`finally` step `{}` failed", n.step.id),
                });
            }
            outcomes.push(o);
        }

        // rollback: the steps that succeeded, newest first
        if status != Status::Succeeded {
            for &i in completed.iter().rev() {
                let Some(rb_node) = nodes[i].rollback.as_deref() else {
                    continue;
                };
                let o = match self.prepare(rb_node, &results) {
                    Ok(None) => self.skip(rb_node, "`when` was false".into()),
                    Ok(Some(work)) => self.run_node(rb_node, work, &cleanup, 1),
                    Err(e) => self.failed_before_start(rb_node, e),
                };
                outcomes.push(o);
            }
        }
        (status, outcomes, results, error)
    }

    /// Runs one node: every `foreach` item (up to `max_parallel` at once), each with its retries.
    fn run_node(
        &self,
        node: &PlanNode,
        work: Prepared,
        cancel: &CancelToken,
        max_parallel: usize,
    ) -> StepOutcome {
        let started = Instant::now();
        let id = node.step.id.to_string();
        if let Some(p) = self.progress {
            p(&Progress::Started { step: id.clone() });
        }
        let n = work.items.len();
        let mut per_item: Vec<Option<(Result<Value, ActionError>, u32)>> =
            (0..n).map(|_| None).collect();
        if work.foreach && n > 1 && max_parallel > 1 {
            let slots = Mutex::new(per_item);
            let next = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..max_parallel.min(n) {
                    s.spawn(|| {
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let Some((index, item, args)) = work.items.get(k) else {
                                break;
                            };
                            let r = self.attempts(node, args, *index, item, cancel);
                            if let Ok(mut sl) = slots.lock() {
                                sl[k] = Some(r);
                            }
                        }
                    });
                }
            });
            per_item = slots.into_inner().unwrap_or_default();
        } else {
            for (k, (index, item, args)) in work.items.iter().enumerate() {
                let r = self.attempts(node, args, *index, item, cancel);
                let stop = r.0.is_err();
                per_item[k] = Some(r);
                if stop {
                    break;
                }
            }
        }
        let mut results = Vec::with_capacity(n);
        let mut first_error: Option<ActionError> = None;
        let mut attempts = 0;
        for r in per_item.into_iter().flatten() {
            attempts = attempts.max(r.1);
            match r.0 {
                Ok(v) => results.push(v),
                Err(e) => {
                    results.push(
                        e.result
                            .clone()
                            .unwrap_or_else(|| json!({"ok": false, "error": e.to_json()})),
                    );
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }
        let result = if work.foreach {
            Some(Value::Array(results))
        } else {
            results.into_iter().next()
        };
        let status = match first_error.as_ref().map(|e| e.kind.as_str()) {
            None => Status::Succeeded,
            Some("timeout") => Status::TimedOut,
            Some("cancelled") => Status::Cancelled,
            Some("refused" | "audit_unavailable") => Status::Refused,
            Some(_) => Status::Failed,
        };
        let duration_ms = ms(started.elapsed());
        if let Some(p) = self.progress {
            p(&Progress::Finished {
                step: id.clone(),
                status,
                duration_ms,
                error: first_error.as_ref().map(ToString::to_string),
            });
        }
        StepOutcome {
            id,
            status,
            attempts,
            duration_ms,
            result,
            error: first_error,
            reason: None,
        }
    }

    /// One item of one node, with its retry policy. Returns the last result and the attempts made.
    fn attempts(
        &self,
        node: &PlanNode,
        args: &Map<String, Value>,
        index: Option<usize>,
        item: &Value,
        cancel: &CancelToken,
    ) -> (Result<Value, ActionError>, u32) {
        let retry = node.step.retry.as_ref();
        let max = retry.map_or(1, |r| r.attempts.max(1));
        let on: Vec<dsl::raw::RetryOn> = retry
            .and_then(|r| r.on.clone())
            .unwrap_or_else(|| vec![dsl::raw::RetryOn::Error, dsl::raw::RetryOn::Timeout]);
        let mut delay = retry.and_then(|r| r.delay_ms).unwrap_or(0) as f64;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut r = self.attempt(node, args, index, attempt, cancel);
            if let (Ok(v), Some(until)) = (&r, retry.and_then(|r| r.until.as_ref())) {
                let mut ctx = self.context(node, &HashMap::new(), index.map(|i| (item, i)));
                ctx["result"] = v.clone();
                match renderer().render(until, Mode::Plain, &ctx) {
                    Ok(t) if truthy(&t) => {}
                    Ok(_) => {
                        r = Err(ActionError::new(
                            "until_not_met",
                            format!("`until` stayed false after {attempt} attempt(s)"),
                        )
                        .with_result(v.clone()));
                    }
                    Err(e) => return (Err(ActionError::new("template", e.message)), attempt),
                }
            }
            let retryable = match &r {
                Ok(_) => false,
                Err(e) => match e.kind.as_str() {
                    "until_not_met" => true,
                    "timeout" => on.contains(&dsl::raw::RetryOn::Timeout),
                    "nonzero_exit" => on.contains(&dsl::raw::RetryOn::NonzeroExit),
                    "refused" | "cancelled" | "audit_unavailable" | "invalid_args" | "template" => {
                        false
                    }
                    _ => on.contains(&dsl::raw::RetryOn::Error),
                },
            };
            if !retryable || attempt >= max || cancel.is_cancelled() {
                return (r, attempt);
            }
            let mut wait = delay;
            if let Some(maxd) = retry.and_then(|r| r.max_delay_ms) {
                wait = wait.min(maxd as f64);
            }
            if retry.and_then(|r| r.jitter).unwrap_or(false) {
                let noise = u64::from_str_radix(&new_id()[..8], 16).unwrap_or(0) as f64
                    / f64::from(u32::MAX);
                wait *= 0.5 + noise;
            }
            if !cancel.sleep(Duration::from_millis(wait as u64)) {
                return (r, attempt);
            }
            delay *= retry.and_then(|r| r.backoff).unwrap_or(1.0);
        }
    }

    /// One attempt: policy, argument validation, audit intent, the action, audit outcome, evidence.
    fn attempt(
        &self,
        node: &PlanNode,
        args: &Map<String, Value>,
        index: Option<usize>,
        attempt: u32,
        cancel: &CancelToken,
    ) -> Result<Value, ActionError> {
        let engine = self.engine;
        let spec = node.action;
        let step = node.step.id.to_string();
        let started = Instant::now();
        if let Some(secrets) = spec.secret_args {
            for s in secrets(args) {
                engine.redactor.add(&s);
            }
        }
        let shown_args = engine.redactor.redact_value(&Value::Object(args.clone()));
        let _ = self.journal.append(
            &Record::NodeStarted {
                run_id: self.run_id.to_owned(),
                ts: now_rfc3339(),
                step: step.clone(),
                attempt,
                index,
                tool: spec.tool.to_owned(),
                action: spec.name.to_owned(),
                args: shown_args.clone(),
            },
            false,
        );
        let audit_base = json!({
            "run_id": self.run_id, "step": step, "attempt": attempt, "tool": spec.tool, "action": spec.name,
            "effect": node.effect, "args": shown_args,
        });
        let result = (|| {
            if spec.unsafe_local && !engine.config.unsafe_local {
                let e = ActionError::new(
                    "refused",
                    format!("`{}` is off: local processes and files need INFRA_UNSAFE_LOCAL=1", spec.qualified()),
                )
                .hint("set INFRA_UNSAFE_LOCAL=1 in the environment of infra to allow it; nothing was run");
                let mut rec = audit_base.clone();
                rec["kind"] = "refused".into();
                rec["error"] = engine.redactor.redact_value(&e.to_json());
                engine
                    .audit
                    .append(&rec, true)
                    .map_err(|a| ActionError::new("audit_unavailable", a.to_string()))?;
                return Err(e);
            }
            let value = Value::Object(args.clone());
            let errors: Vec<String> = actions::validator(spec)
                .iter_errors(&value)
                .map(|e| {
                    format!(
                        "{}: {}",
                        if e.instance_path().as_str().is_empty() {
                            "/"
                        } else {
                            e.instance_path().as_str()
                        },
                        e.masked()
                    )
                })
                .collect();
            if !errors.is_empty() {
                let e = ActionError::new(
                    "invalid_args",
                    format!(
                        "rendered arguments of `{}` are invalid: {}",
                        spec.qualified(),
                        errors.join("; ")
                    ),
                );
                let mut rec = audit_base.clone();
                rec["kind"] = "rejected".into();
                rec["error"] = engine.redactor.redact_value(&e.to_json());
                engine
                    .audit
                    .append(&rec, false)
                    .map_err(|a| ActionError::new("audit_unavailable", a.to_string()))?;
                return Err(e);
            }
            let mut intent = audit_base.clone();
            intent["kind"] = "intent".into();
            engine
                .audit
                .append(&intent, node.effect >= Effect::Write)
                .map_err(|a| {
                    ActionError::new("audit_unavailable", format!("{a}; the call was refused"))
                })?;
            let timeout = node
                .step
                .timeout_ms
                .or_else(|| args.get("timeout_ms").and_then(Value::as_u64));
            let step_dir_name = match index {
                Some(i) => format!("{step}/{i}"),
                None => step.clone(),
            };
            let call = Call {
                host: engine,
                args,
                cancel,
                deadline: timeout.map(|t| Instant::now() + Duration::from_millis(t)),
                dir: self.dir.join(&step_dir_name),
                uri_base: format!("{}/{}", self.uri_base, step_dir_name),
                depth: self.depth,
            };
            let r = actions::invoke(spec, &call);
            let mut outcome = audit_base.clone();
            outcome["kind"] = "outcome".into();
            outcome["ok"] = r.is_ok().into();
            if let Err(e) = &r {
                outcome["error"] = engine.redactor.redact_value(&e.to_json());
            }
            outcome["duration_ms"] = ms(started.elapsed()).into();
            // the effect happened; a failure to record its outcome is kept in the evidence
            if let Err(a) = engine.audit.append(&outcome, false) {
                return Err(ActionError::new(
                    "audit_incomplete",
                    format!("the call ran but its outcome could not be audited: {a}"),
                ));
            }
            r
        })();
        let (status, error, outputs, artifacts, exit_code) = match &result {
            Ok(v) => (
                Status::Succeeded,
                None,
                v,
                artifact_uris(v),
                v.get("exit_code").and_then(Value::as_i64),
            ),
            Err(e) => {
                let st = match e.kind.as_str() {
                    "timeout" => Status::TimedOut,
                    "cancelled" => Status::Cancelled,
                    "refused" | "audit_unavailable" => Status::Refused,
                    _ => Status::Failed,
                };
                let empty = &Value::Null;
                let v = e.result.as_ref().unwrap_or(empty);
                (
                    st,
                    Some(ErrorInfo {
                        kind: e.kind.clone(),
                        message: engine.redactor.redact(&e.message).into_owned(),
                    }),
                    v,
                    artifact_uris(v),
                    v.get("exit_code").and_then(Value::as_i64),
                )
            }
        };
        let _ = self.journal.append(
            &Record::NodeFinished {
                run_id: self.run_id.to_owned(),
                ts: now_rfc3339(),
                step,
                attempt,
                index,
                status,
                duration_ms: ms(started.elapsed()),
                exit_code,
                outputs: output_summary(outputs),
                artifacts,
                error,
            },
            false,
        );
        result
    }

    /// The runbook's `outputs`, rendered with every step's result.
    fn outputs(&self, results: &HashMap<String, Value>) -> Value {
        if self.rb.outputs.is_empty() {
            return Value::Object(Map::new());
        }
        let steps: Map<String, Value> = results
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let ctx = json!({"input": self.inputs, "run": self.run_info, "steps": steps, "state": self.engine.session.snapshot()});
        Value::Object(
            self.rb
                .outputs
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        render_value(v, &ctx).unwrap_or_else(|e| json!({"error": e})),
                    )
                })
                .collect(),
        )
    }
}

/// Byte counts and digests from a result, for the evidence (never the output itself).
fn output_summary(v: &Value) -> Value {
    let Some(o) = v.as_object() else {
        return Value::Null;
    };
    let kept: Map<String, Value> = o
        .iter()
        .filter(|(k, _)| {
            k.ends_with("_bytes") || k.ends_with("_sha256") || k.ends_with("_truncated")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if kept.is_empty() {
        Value::Null
    } else {
        Value::Object(kept)
    }
}

fn artifact_uris(v: &Value) -> Vec<String> {
    v.get("artifacts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.get("uri").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Renders every template in a node's arguments.
fn render_args(node: &PlanNode, ctx: &Value) -> Result<Map<String, Value>, ActionError> {
    let (args, failed) = node.render_args(ctx, |_| true);
    if let Some((t, why)) = failed.first() {
        return Err(ActionError::new("template", format!("`{}`: {why}", t.text)));
    }
    match args {
        Value::Object(m) => Ok(m),
        _ => Err(ActionError::new(
            "invalid_args",
            "arguments must be a mapping",
        )),
    }
}

/// Renders every string of a value that is a template (outputs).
fn render_value(v: &Value, ctx: &Value) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => renderer()
            .render(s, Mode::Plain, ctx)
            .map_err(|e| e.message)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_value(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| render_value(x, ctx).map(|r| (k.clone(), r)))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

impl Host for Engine {
    fn config(&self) -> &Config {
        &self.config
    }
    fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }
    fn session(&self) -> &Session {
        &self.session
    }
    fn store(&self) -> Result<&Store, StoreError> {
        self.store.get()
    }
    fn pools(&self) -> &Pools {
        &self.pools
    }
    fn run_nested(
        &self,
        runbook: Nested<'_>,
        input: &Map<String, Value>,
        cancel: &CancelToken,
        depth: usize,
    ) -> Result<NestedOutcome, ActionError> {
        let rb = self.nested_runbook(runbook)?;
        let o = self
            .run_runbook(rb, input, cancel, depth)
            .map_err(|e| ActionError::new("invalid_args", e))?;
        Ok(NestedOutcome {
            run_id: o.run_id,
            runbook: o.runbook,
            status: o.status,
            outputs: o.outputs,
        })
    }
}
