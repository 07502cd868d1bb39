//! The executor: runs a sealed [`Plan`] node by node in dependency order, with bounded parallelism,
//! `when`, `foreach`, `retry`, timeouts, `continue_on_error`, `finally`, `rollback` and cancellation;
//! records every transition in the run's evidence journal and every call in the audit log.
//! `resume.rs` resumes a failed run: a new run that takes the recorded results of the steps that
//! succeeded instead of running them (`Engine::resume`).

use std::path::PathBuf;
use std::time::Duration;

use dsl::Runbook;
use serde_json::{Map, Value};

mod artifacts;
mod attempt;
mod engine;
mod execute;
mod gate;
mod node;
mod render;
mod report;
mod resume;
mod retention;
mod schedule;

pub use crate::exec::CancelToken;
pub use artifacts::ArtifactFilter;
pub use engine::Engine;
pub use report::ReportOptions;
pub use resume::{ResumeRefusal, ResumeRequest};
pub use retention::PruneBy;

use crate::actions::ActionError;
use crate::record::Journal;
use crate::record::evidence::{ErrorInfo, Status};

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
    /// When the run was refused for want of an approval (`error.kind` is `approval_required`): the
    /// rendered plan, its effects and digest, the policy rule, and how a person approves it.
    pub approval: Option<Value>,
    /// The run this one resumed (`Engine::resume`).
    pub resumed_from: Option<String>,
    /// The plan's effects (its highest step's).
    pub effects: dsl::Effect,
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
    /// An action's own word on how far it is inside a step (a pipeline's records and bytes): at its
    /// first data, then at most about once a second.
    Advanced {
        step: String,
        message: String,
    },
}

/// Options of one run.
#[derive(Default)]
pub struct RunOptions<'a> {
    pub cancel: CancelToken,
    /// Nesting depth (0 for a top-level run).
    pub depth: usize,
    pub progress: Option<&'a (dyn Fn(&Progress) + Sync)>,
    /// Someone outside this process follows the run while it runs (a job's worker): it is indexed
    /// when it starts, even a single read (which is otherwise indexed once, at its end).
    pub followed: bool,
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
    /// The approval this run was let through with.
    grant: Option<crate::approval::Grant>,
    /// Whether main steps' results are kept in the journal (`node_result`): a runbook's run, not a
    /// single call.
    keep_results: bool,
    /// The steps a resumed run takes from the run it resumes instead of running them.
    reuse: Option<&'a resume::Reuse>,
    /// How the main steps ended (`run.status`, `run.error`, `run.failed_steps`), set once they have:
    /// what `finally` steps, rollbacks and outputs read.
    ended: std::sync::OnceLock<Value>,
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
