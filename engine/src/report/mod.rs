//! Pictures of plans and runs, as text: a layered SVG of the step graph (`svg`, over `layout`) and
//! one self-contained HTML report of a run (`html`). Pure functions of what a run recorded — its
//! plan (`plan.json`, the form of [`Plan::to_json`](crate::plan::Plan::to_json)), its journal's
//! records, and the tails of artifacts the caller read — so the same run always gives the same bytes.
//!
//! [`View`] is the model both draw from: one [`StepView`] per plan node (and per rollback), with the
//! status the journal records, every attempt, a skipped step's reason, errors and artifacts. A run
//! without `plan.json` (it was killed before its end) is drawn from its journal alone, without edges.
//!
//! Imports only `record` (the journal's types); `run` writes `report.html` at a run's end with it.

pub mod html;
pub mod layout;
pub mod svg;

use std::collections::HashMap;

use serde_json::Value;

use crate::record::evidence::{ErrorInfo, Record, Status};

/// How a step is shown: a recorded status, or none yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// A plan, before any run.
    Plan,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Refused,
    Skipped,
    /// Started, not finished (the run was killed, or is still going).
    Running,
    /// The run ended before this step was reached.
    NotRun,
}

impl Shown {
    pub fn word(self) -> &'static str {
        match self {
            Shown::Plan => "planned",
            Shown::Succeeded => "succeeded",
            Shown::Failed => "failed",
            Shown::TimedOut => "timed out",
            Shown::Cancelled => "cancelled",
            Shown::Refused => "refused",
            Shown::Skipped => "skipped",
            Shown::Running => "running",
            Shown::NotRun => "not run",
        }
    }

    /// The CSS class suffix (also the icon's id).
    pub fn class(self) -> &'static str {
        match self {
            Shown::Plan => "plan",
            Shown::Succeeded => "ok",
            Shown::Failed => "failed",
            Shown::TimedOut => "timeout",
            Shown::Cancelled => "cancelled",
            Shown::Refused => "refused",
            Shown::Skipped => "skipped",
            Shown::Running => "running",
            Shown::NotRun => "notrun",
        }
    }

    /// A failure the "why it ended" section shows.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Shown::Failed | Shown::TimedOut | Shown::Cancelled | Shown::Refused
        )
    }

    fn of(s: Status) -> Shown {
        match s {
            Status::Succeeded => Shown::Succeeded,
            Status::Failed => Shown::Failed,
            Status::Skipped => Shown::Skipped,
            Status::Cancelled => Shown::Cancelled,
            Status::TimedOut => Shown::TimedOut,
            Status::Refused => Shown::Refused,
        }
    }

    /// Which of two statuses a step of several items (`foreach`) shows: the worse.
    fn worse(self, other: Shown) -> Shown {
        let rank = |s: Shown| match s {
            Shown::Failed | Shown::TimedOut | Shown::Refused => 5,
            Shown::Cancelled => 4,
            Shown::Running => 3,
            Shown::Succeeded => 2,
            Shown::Skipped => 1,
            Shown::NotRun | Shown::Plan => 0,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// Which part of the runbook a step is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Main,
    Finally,
    Rollback,
}

/// One attempt of a step, on the run's time axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub attempt: u32,
    pub index: Option<usize>,
    /// Milliseconds from the run's start.
    pub start_ms: u64,
    pub duration_ms: Option<u64>,
    pub status: Shown,
}

/// One node of the picture.
#[derive(Clone, Debug)]
pub struct StepView {
    pub id: String,
    /// `tool.action`.
    pub action: String,
    pub kind: Kind,
    /// A rollback's step.
    pub rollback_of: Option<String>,
    pub status: Shown,
    pub attempts: Vec<Attempt>,
    /// Why it was skipped.
    pub reason: Option<String>,
    pub error: Option<ErrorInfo>,
    pub exit_code: Option<i64>,
    /// Artifact URIs, as the journal names them.
    pub artifacts: Vec<String>,
}

impl StepView {
    /// Total time of its attempts.
    pub fn duration_ms(&self) -> Option<u64> {
        let d: Vec<u64> = self.attempts.iter().filter_map(|a| a.duration_ms).collect();
        (!d.is_empty()).then(|| d.iter().sum())
    }

    /// How many attempts, counting each item of a `foreach` once.
    pub fn retries(&self) -> u32 {
        self.attempts.iter().map(|a| a.attempt).max().unwrap_or(0)
    }

    /// The artifact whose name ends `/<name>` (`stderr`, `stdout`).
    pub fn artifact(&self, name: &str) -> Option<&str> {
        let suffix = format!("/{name}");
        self.artifacts
            .iter()
            .rev()
            .find(|u| u.ends_with(&suffix))
            .map(String::as_str)
    }
}

/// A run (or a plan) as drawn.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub runbook: String,
    pub run_id: String,
    /// The run's status, when it finished.
    pub status: Option<Status>,
    pub started: String,
    pub duration_ms: Option<u64>,
    pub plan_digest: String,
    pub error: Option<ErrorInfo>,
    pub steps: Vec<StepView>,
    /// (from, to) by index into `steps`; rollback edges go from a step to its rollback.
    pub edges: Vec<(usize, usize)>,
    /// The journal's last line was torn.
    pub torn: bool,
    /// Whether the steps carry statuses (a run) or not (a plan).
    pub is_run: bool,
}

impl View {
    /// A plan before any run, from its JSON form.
    pub fn of_plan(plan: &Value) -> View {
        let mut v = View {
            runbook: plan["runbook"].as_str().unwrap_or("").to_owned(),
            ..View::default()
        };
        v.add_plan(plan, Shown::Plan);
        v
    }

    /// What of a plan's JSON form a picture draws (`add_plan`): its runbook and digest, and each
    /// node's id, tool, action, phase, needs and rollback. A run masks this and makes its picture
    /// from it when it starts ([`View::of_run_plan`]).
    pub fn plan_outline(plan: &Value) -> Value {
        let pick = |n: &Value, keys: &[&str]| -> Value {
            keys.iter()
                .filter_map(|k| n.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let nodes: Vec<Value> = plan["nodes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|n| {
                let mut o = pick(n, &["id", "tool", "action", "phase", "needs"]);
                if n.get("rollback").is_some() {
                    o["rollback"] = pick(&n["rollback"], &["id", "tool", "action"]);
                }
                o
            })
            .collect();
        let mut o = pick(plan, &["runbook", "digest"]);
        o["nodes"] = nodes.into();
        o
    }

    /// A run: its plan (if recorded) and its journal's records.
    pub fn of_run(plan: Option<&Value>, records: &[Record], torn: bool) -> View {
        let mut v = View::of_run_plan(plan, torn);
        v.add_records(records);
        v
    }

    /// A run's picture before its records: its plan's steps and edges, none run yet. A run builds this
    /// when it starts (from the outline, `plan_outline`) and holds it, not its plan, for the report
    /// at its end ([`View::add_records`]).
    pub fn of_run_plan(plan: Option<&Value>, torn: bool) -> View {
        let mut v = View {
            torn,
            is_run: true,
            ..View::default()
        };
        if let Some(p) = plan {
            v.runbook = p["runbook"].as_str().unwrap_or("").to_owned();
            v.add_plan(p, Shown::NotRun);
        }
        v
    }

    /// Adds a run's journal records to the picture of its plan ([`View::of_run_plan`]).
    pub fn add_records(&mut self, records: &[Record]) {
        let v = self;
        let mut at: HashMap<String, usize> = v
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let mut t0: Option<chrono::DateTime<chrono::FixedOffset>> = None;
        let offset = |t0: &Option<chrono::DateTime<chrono::FixedOffset>>, ts: &str| -> u64 {
            match (t0, chrono::DateTime::parse_from_rfc3339(ts)) {
                (Some(a), Ok(b)) => (b - *a).num_milliseconds().max(0) as u64,
                _ => 0,
            }
        };
        // each (step, index) keeps its last status; a step shows the worse over its items
        let mut last: HashMap<(usize, Option<usize>), Shown> = HashMap::new();
        for r in records {
            match r {
                Record::RunStarted {
                    run_id,
                    ts,
                    runbook,
                    plan_digest,
                    ..
                } => {
                    v.run_id.clone_from(run_id);
                    v.started.clone_from(ts);
                    v.runbook.clone_from(runbook);
                    v.plan_digest.clone_from(plan_digest);
                    t0 = chrono::DateTime::parse_from_rfc3339(ts).ok();
                }
                Record::NodeStarted {
                    ts,
                    step,
                    attempt,
                    index,
                    tool,
                    action,
                    ..
                } => {
                    let i = v.step_index(&mut at, step, &format!("{tool}.{action}"));
                    v.steps[i].attempts.push(Attempt {
                        attempt: *attempt,
                        index: *index,
                        start_ms: offset(&t0, ts),
                        duration_ms: None,
                        status: Shown::Running,
                    });
                    last.insert((i, *index), Shown::Running);
                }
                Record::NodeFinished {
                    ts,
                    step,
                    attempt,
                    index,
                    status,
                    duration_ms,
                    exit_code,
                    artifacts,
                    error,
                    ..
                } => {
                    let i = v.step_index(&mut at, step, "");
                    let s = &mut v.steps[i];
                    let shown = Shown::of(*status);
                    match s
                        .attempts
                        .iter_mut()
                        .rev()
                        .find(|a| a.attempt == *attempt && a.index == *index)
                    {
                        Some(a) => {
                            a.duration_ms = Some(*duration_ms);
                            a.status = shown;
                        }
                        // failed before it started (its arguments did not render): a point in time
                        None => s.attempts.push(Attempt {
                            attempt: *attempt,
                            index: *index,
                            start_ms: offset(&t0, ts).saturating_sub(*duration_ms),
                            duration_ms: Some(*duration_ms),
                            status: shown,
                        }),
                    }
                    for a in artifacts {
                        if !s.artifacts.contains(a) {
                            s.artifacts.push(a.clone());
                        }
                    }
                    if error.is_some() {
                        s.error.clone_from(error);
                        s.exit_code = *exit_code;
                    }
                    last.insert((i, *index), shown);
                }
                // a resumed run's step taken from an earlier run: succeeded, not run here
                Record::NodeResult {
                    step,
                    reused_from: Some(from),
                    ..
                } => {
                    let i = v.step_index(&mut at, step, "");
                    v.steps[i].reason = Some(format!("reused from run {from}"));
                    last.insert((i, None), Shown::Succeeded);
                }
                Record::NodeResult { .. } => {}
                Record::NodeSkipped { step, reason, .. } => {
                    let i = v.step_index(&mut at, step, "");
                    v.steps[i].reason = Some(reason.clone());
                    last.insert((i, None), Shown::Skipped);
                }
                Record::RunFinished {
                    status,
                    duration_ms,
                    error,
                    ..
                } => {
                    v.status = Some(*status);
                    v.duration_ms = Some(*duration_ms);
                    v.error.clone_from(error);
                }
            }
        }
        let mut shown: Vec<Option<Shown>> = vec![None; v.steps.len()];
        let mut keys: Vec<_> = last.into_iter().collect();
        keys.sort_by_key(|((i, ix), _)| (*i, *ix));
        for ((i, _), s) in keys {
            shown[i] = Some(shown[i].map_or(s, |old| old.worse(s)));
        }
        for (s, st) in v.steps.iter_mut().zip(shown) {
            s.status = st.unwrap_or(Shown::NotRun);
        }
    }

    fn add_plan(&mut self, plan: &Value, status: Shown) {
        self.plan_digest = plan["digest"].as_str().unwrap_or("").to_owned();
        let nodes = plan["nodes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let node = |id: &str, action: String, kind: Kind, rollback_of: Option<String>| StepView {
            id: id.to_owned(),
            action,
            kind,
            rollback_of,
            status,
            attempts: Vec::new(),
            reason: None,
            error: None,
            exit_code: None,
            artifacts: Vec::new(),
        };
        let action = |n: &Value| {
            format!(
                "{}.{}",
                n["tool"].as_str().unwrap_or(""),
                n["action"].as_str().unwrap_or("")
            )
        };
        let mut at: HashMap<String, usize> = HashMap::new();
        for n in nodes {
            let id = n["id"].as_str().unwrap_or("");
            let kind = if n["phase"] == "finally" {
                Kind::Finally
            } else {
                Kind::Main
            };
            at.insert(id.to_owned(), self.steps.len());
            self.steps.push(node(id, action(n), kind, None));
        }
        for (b, n) in nodes.iter().enumerate() {
            for need in n["needs"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                if let Some(&a) = need.as_str().and_then(|s| at.get(s)) {
                    self.edges.push((a, b));
                }
            }
        }
        // rollbacks after every node, each below its step
        for (a, n) in nodes.iter().enumerate() {
            let rb = &n["rollback"];
            if let Some(id) = rb["id"].as_str() {
                let parent = n["id"].as_str().map(str::to_owned);
                self.edges.push((a, self.steps.len()));
                self.steps
                    .push(node(id, action(rb), Kind::Rollback, parent));
            }
        }
    }

    /// The step named `id`, added (after the plan's, without edges) if the plan does not have it.
    fn step_index(&mut self, at: &mut HashMap<String, usize>, id: &str, action: &str) -> usize {
        if let Some(&i) = at.get(id) {
            if self.steps[i].action.is_empty() {
                self.steps[i].action = action.to_owned();
            }
            return i;
        }
        let i = self.steps.len();
        at.insert(id.to_owned(), i);
        self.steps.push(StepView {
            id: id.to_owned(),
            action: action.to_owned(),
            kind: Kind::Main,
            rollback_of: None,
            status: Shown::NotRun,
            attempts: Vec::new(),
            reason: None,
            error: None,
            exit_code: None,
            artifacts: Vec::new(),
        });
        i
    }

    /// Steps that failed (failed, timed out, cancelled, refused), earliest first.
    pub fn failures(&self) -> Vec<usize> {
        let mut f: Vec<usize> = (0..self.steps.len())
            .filter(|&i| self.steps[i].status.is_failure())
            .collect();
        f.sort_by_key(|&i| {
            let s = &self.steps[i];
            (
                s.attempts
                    .last()
                    .map_or(u64::MAX, |a| a.start_ms + a.duration_ms.unwrap_or(0)),
                i,
            )
        });
        f
    }

    /// How many steps show each status, in a fixed order.
    pub fn counts(&self) -> Vec<(Shown, usize)> {
        let all = [
            Shown::Succeeded,
            Shown::Failed,
            Shown::TimedOut,
            Shown::Cancelled,
            Shown::Refused,
            Shown::Skipped,
            Shown::Running,
            Shown::NotRun,
            Shown::Plan,
        ];
        all.iter()
            .map(|&s| (s, self.steps.iter().filter(|x| x.status == s).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The steps within `hops` edges of a failure (either direction), in order; `None` when there is
    /// no failure to centre on.
    pub fn neighbourhood(&self, hops: usize) -> Option<Vec<usize>> {
        let focus = self.failures();
        if focus.is_empty() {
            return None;
        }
        let mut adj: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for &(a, b) in &self.edges {
            adj[a].push(b);
            adj[b].push(a);
        }
        let mut dist = vec![usize::MAX; self.steps.len()];
        let mut queue = std::collections::VecDeque::new();
        for f in focus {
            dist[f] = 0;
            queue.push_back(f);
        }
        while let Some(v) = queue.pop_front() {
            if dist[v] == hops {
                continue;
            }
            for &u in &adj[v] {
                if dist[u] == usize::MAX {
                    dist[u] = dist[v] + 1;
                    queue.push_back(u);
                }
            }
        }
        Some(
            (0..self.steps.len())
                .filter(|&i| dist[i] != usize::MAX)
                .collect(),
        )
    }
}

/// Escapes text for HTML and XML: `& < > " '`. `]]>` cannot survive it, since `>` is escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // control characters XML 1.0 does not allow
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
