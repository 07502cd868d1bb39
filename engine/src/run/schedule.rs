//! The scheduler: the main steps in dependency order (ready steps start in plan order, up to
//! `max_parallel` at once), then `finally`, then the rollbacks of the steps that succeeded, newest
//! first; a failure, a cancel or the run's timeout stops new starts.
//!
//! `run_all` is generic over `Visit` (unit-tested with a recording fake) and runs on
//! `std::thread::scope`: Kahn's algorithm with a count of unfinished dependencies per step and a
//! ready heap in plan order; `max_parallel` is the runbook's, else 1 for `flow: sequence` and 4 for
//! `dag`. Finished steps come back over a channel; the loop wakes at least every 100 ms to check
//! the run's `timeout_ms` (passing it cancels the token). A step whose `needs` or referenced step
//! was skipped or failed is skipped. After a failure (unless `continue_on_error`), a cancel or the
//! timeout, running steps finish (their processes killed on cancel) and pending ones are skipped.
//! The run's timeout does not bound `finally` or rollbacks, which see how the main steps ended
//! (`Visit::main_ended`: `run.status`, `run.error`, `run.failed_steps`). A resumed run's reused step
//! (`Visit::reused`) is done as soon as it is ready, with its recorded result, and counts as
//! succeeded (its rollback runs if the resumed run fails). Each step is looked at a constant
//! number of times (O(steps + edges) per run). A step that is the only work there is, in a run with
//! no timeout, runs on the scheduler's own thread (no thread per step in a chain).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dsl::Flow;
use serde_json::{Value, json};

use super::*;
use crate::plan::{Plan, PlanNode};
use crate::record::evidence::{ErrorInfo, Status};

/// What the scheduler asks of a run, node by node. The run implements it with real actions, evidence
/// and audit (`RunCx`); the tests below with a recording fake.
pub(super) trait Visit: Sync {
    /// A node's rendered work.
    type Work: Send;
    /// Renders `when`, `foreach` and the arguments: `Ok(None)` when `when` is false.
    fn prepare(
        &self,
        node: &PlanNode,
        results: &HashMap<String, Value>,
    ) -> Result<Option<Self::Work>, ActionError>;
    fn skip(&self, node: &PlanNode, reason: String) -> StepOutcome;
    fn failed_before_start(&self, node: &PlanNode, e: ActionError) -> StepOutcome;
    fn run_node(
        &self,
        node: &PlanNode,
        work: Self::Work,
        cancel: &CancelToken,
        max_parallel: usize,
    ) -> StepOutcome;
    /// A main step a resumed run does not run: it takes the step's result from the run it resumes.
    fn reused(&self, _node: &PlanNode) -> Option<StepOutcome> {
        None
    }
    /// The main steps have ended so (`failed`: the ids of those that failed or timed out), before
    /// `finally` and the rollbacks run.
    fn main_ended(&self, _status: Status, _error: Option<&ErrorInfo>, _failed: Vec<String>) {}
}

impl Visit for RunCx<'_> {
    type Work = Prepared;
    fn prepare(
        &self,
        node: &PlanNode,
        results: &HashMap<String, Value>,
    ) -> Result<Option<Prepared>, ActionError> {
        RunCx::prepare(self, node, results)
    }
    fn skip(&self, node: &PlanNode, reason: String) -> StepOutcome {
        RunCx::skip(self, node, reason)
    }
    fn failed_before_start(&self, node: &PlanNode, e: ActionError) -> StepOutcome {
        RunCx::failed_before_start(self, node, e)
    }
    fn run_node(
        &self,
        node: &PlanNode,
        work: Prepared,
        cancel: &CancelToken,
        max_parallel: usize,
    ) -> StepOutcome {
        RunCx::run_node(self, node, work, cancel, max_parallel)
    }
    fn reused(&self, node: &PlanNode) -> Option<StepOutcome> {
        RunCx::reused(self, node)
    }
    fn main_ended(&self, status: Status, error: Option<&ErrorInfo>, failed: Vec<String>) {
        let mut run = self.run_info.clone();
        run["status"] = status.as_str().into();
        // a message is for people, and a `finally` step may send it out: redacted, unlike results
        run["error"] = error.map_or(
            Value::Null,
            |e| json!({"kind": e.kind, "message": self.engine.redactor.redact(&e.message)}),
        );
        run["failed_steps"] = failed.into();
        let _ = self.ended.set(run);
    }
}

/// How a plan is bounded: steps at once and the run's timeout.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub max_parallel: usize,
    pub timeout_ms: Option<u64>,
}

impl Bounds {
    /// A runbook's: `max_parallel` (4 in a dag, 1 in a sequence, by default) and `timeout_ms`.
    pub fn of(rb: &Runbook) -> Bounds {
        Bounds {
            max_parallel: rb
                .max_parallel
                .map_or(if rb.flow == Flow::Dag { 4 } else { 1 }, |m| m as usize)
                .max(1),
            timeout_ms: rb.timeout_ms,
        }
    }
}

/// Runs the main steps, then `finally`, then rollbacks when the run failed.
pub(super) fn run_all<V: Visit>(
    v: &V,
    plan: &Plan,
    bounds: Bounds,
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
    let max_parallel = bounds.max_parallel;
    let run_deadline = bounds
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
                // a resumed run's step that succeeded before: its result, not a second run
                if let Some(o) = v.reused(node) {
                    if let Some(r) = &o.result {
                        results.insert(o.id.clone(), r.clone());
                    }
                    outcomes.push(o);
                    state[i] = NodeState::Done(Status::Succeeded);
                    completed.push(i);
                    release(i, &mut waiting_on, &mut ready);
                    continue;
                }
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
                    outcomes.push(v.skip(node, reason));
                    state[i] = NodeState::Done(Status::Skipped);
                    release(i, &mut waiting_on, &mut ready);
                    continue;
                }
                match v.prepare(node, &results) {
                    Ok(None) => {
                        outcomes.push(v.skip(node, "`when` was false".into()));
                        state[i] = NodeState::Done(Status::Skipped);
                        release(i, &mut waiting_on, &mut ready);
                    }
                    Err(e) => {
                        let o = v.failed_before_start(node, e);
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
                        if running == 1 && ready.is_empty() && run_deadline.is_none() {
                            // the only work there is, and no run timeout to watch: no thread for it
                            // (the node still sees `cancel`, and its own deadline)
                            let o = v.run_node(node, work, cancel, max_parallel);
                            let _ = tx.send((i, o));
                            continue;
                        }
                        let tx = tx.clone();
                        s.spawn(move || {
                            let o = v.run_node(node, work, cancel, max_parallel);
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
                                .map_or("step_failed".into(), |e| e.kind.to_string()),
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
            outcomes.push(v.skip(nodes[i], "the run stopped before it".into()));
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
                bounds.timeout_ms.unwrap_or(0)
            ),
        });
    } else if status == Status::Cancelled && error.is_none() {
        error = Some(ErrorInfo {
            kind: "cancelled".into(),
            message: "the run was cancelled".into(),
        });
    }

    v.main_ended(
        status,
        error.as_ref(),
        outcomes
            .iter()
            .filter(|o| matches!(o.status, Status::Failed | Status::TimedOut))
            .map(|o| o.id.clone())
            .collect(),
    );

    // finally: always, in order, with a fresh token (cleanup must not be cut short by the cancel)
    let cleanup = CancelToken::new();
    for n in nodes.iter().filter(|n| n.phase() == dsl::Phase::Finally) {
        let o = match v.prepare(n, &results) {
            Ok(None) => v.skip(n, "`when` was false".into()),
            Ok(Some(work)) => v.run_node(n, work, &cleanup, 1),
            Err(e) => v.failed_before_start(n, e),
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
            let o = match v.prepare(rb_node, &results) {
                Ok(None) => v.skip(rb_node, "`when` was false".into()),
                Ok(Some(work)) => v.run_node(rb_node, work, &cleanup, 1),
                Err(e) => v.failed_before_start(rb_node, e),
            };
            outcomes.push(o);
        }
    }
    (status, outcomes, results, error)
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorKind;
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn plan(yaml: &str) -> Plan {
        let file = dsl::SourceFile::new("t.yaml", yaml);
        let loaded = dsl::load(&file, None);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let rb = loaded.runbooks.into_iter().next().expect("a runbook");
        crate::plan::compile(Arc::new(rb), &crate::plan::CompileOptions::default())
            .expect("compiles")
    }

    /// `n` steps of `state get` (never run: the fake only records), with `extra` YAML per step.
    fn steps(ids: &[(&str, &str)]) -> String {
        ids.iter()
            .map(|(id, extra)| {
                format!("  - id: {id}\n    tool: state\n    args: {{action: get, key: k}}\n{extra}")
            })
            .collect()
    }

    /// Records what the scheduler asks, and how many nodes ran at once.
    #[derive(Default)]
    struct Fake {
        log: Mutex<Vec<String>>,
        running: AtomicUsize,
        peak: AtomicUsize,
        fail: Vec<&'static str>,
        /// The node that cancels the run when it runs.
        cancels: Option<&'static str>,
        /// Nodes a resumed run takes from an earlier run.
        reuse: Vec<&'static str>,
        hold: Duration,
    }

    fn outcome(node: &PlanNode, status: Status) -> StepOutcome {
        StepOutcome {
            id: node.step.id.to_string(),
            status,
            attempts: 1,
            duration_ms: 0,
            result: Some(Value::Null),
            error: (status != Status::Succeeded && status != Status::Skipped)
                .then(|| ActionError::new(ErrorKind::Failed, "it failed")),
            reason: None,
        }
    }

    impl Fake {
        fn say(&self, what: String) {
            self.log.lock().expect("log").push(what);
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().expect("log").clone()
        }
    }

    impl Visit for Fake {
        type Work = ();
        fn prepare(
            &self,
            node: &PlanNode,
            _: &HashMap<String, Value>,
        ) -> Result<Option<()>, ActionError> {
            // the scheduler prepares a node right before it starts it, on its own thread
            self.say(format!("ready {}", node.step.id));
            Ok(match &node.step.when {
                Some(dsl::raw::BoolOrTemplate::Bool(false)) => None,
                _ => Some(()),
            })
        }
        fn skip(&self, node: &PlanNode, reason: String) -> StepOutcome {
            self.say(format!("skip {} ({reason})", node.step.id));
            outcome(node, Status::Skipped)
        }
        fn failed_before_start(&self, node: &PlanNode, _: ActionError) -> StepOutcome {
            outcome(node, Status::Failed)
        }
        fn run_node(&self, node: &PlanNode, (): (), cancel: &CancelToken, _: usize) -> StepOutcome {
            let id = node.step.id.to_string();
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            self.say(format!("start {id}"));
            // wait (a while at most) for company, so a bound above one is reached whatever the timing
            let until = Instant::now() + self.hold;
            while self.peak.load(Ordering::SeqCst) < 2 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            if self.cancels == Some(id.as_str()) {
                cancel.cancel();
            }
            self.say(format!("end {id}"));
            self.running.fetch_sub(1, Ordering::SeqCst);
            let failed = self.fail.contains(&id.as_str());
            outcome(
                node,
                if failed {
                    Status::Failed
                } else {
                    Status::Succeeded
                },
            )
        }
        fn reused(&self, node: &PlanNode) -> Option<StepOutcome> {
            let id = node.step.id.as_str();
            self.reuse.contains(&id).then(|| {
                self.say(format!("reuse {id}"));
                StepOutcome {
                    result: Some(Value::String(format!("kept {id}"))),
                    ..outcome(node, Status::Succeeded)
                }
            })
        }
    }

    fn bounds(max_parallel: usize) -> Bounds {
        Bounds {
            max_parallel,
            timeout_ms: None,
        }
    }

    #[test]
    fn a_sequence_runs_one_step_at_a_time_in_order() {
        let p = plan(&format!(
            "name: t\nsteps:\n{}",
            steps(&[("a", ""), ("b", ""), ("c", "")])
        ));
        let f = Fake::default();
        let (status, outcomes, ..) = run_all(&f, &p, Bounds::of(p.runbook()), &CancelToken::new());
        assert_eq!(status, Status::Succeeded);
        assert_eq!(
            f.log(),
            [
                "ready a", "start a", "end a", "ready b", "start b", "end b", "ready c", "start c",
                "end c"
            ]
        );
        assert_eq!(f.peak.load(Ordering::SeqCst), 1);
        assert_eq!(outcomes.len(), 3);
    }

    #[test]
    fn a_dag_runs_ready_steps_up_to_max_parallel_and_waits_for_needs() {
        let p = plan(&format!(
            "name: t\nflow: dag\nsteps:\n{}",
            steps(&[
                ("a", ""),
                ("b", ""),
                ("c", ""),
                ("d", "    needs: [a, b, c]\n")
            ])
        ));
        let f = Fake {
            hold: Duration::from_secs(2),
            ..Fake::default()
        };
        let (status, ..) = run_all(&f, &p, bounds(2), &CancelToken::new());
        assert_eq!(status, Status::Succeeded);
        assert_eq!(f.peak.load(Ordering::SeqCst), 2, "{:?}", f.log());
        let log = f.log();
        let at = |s: &str| log.iter().position(|l| l == s).expect(s);
        for need in ["end a", "end b", "end c"] {
            assert!(at(need) < at("start d"), "{log:?}");
        }
        // ready steps start in plan order
        assert!(at("ready a") < at("ready b") && at("ready b") < at("ready c"));
    }

    #[test]
    fn a_failure_stops_new_starts_then_finally_then_rollbacks_newest_first() {
        let rollback = "    rollback: {tool: state, args: {action: get, key: k}}\n";
        let p = plan(&format!(
            "name: t\nsteps:\n{}finally:\n{}",
            steps(&[
                ("one", rollback),
                ("two", rollback),
                ("three", rollback),
                ("four", "")
            ]),
            steps(&[("always", "")])
        ));
        let f = Fake {
            fail: vec!["three"],
            ..Fake::default()
        };
        let (status, outcomes, ..) = run_all(&f, &p, bounds(1), &CancelToken::new());
        assert_eq!(status, Status::Failed);
        let starts: Vec<String> = f
            .log()
            .into_iter()
            .filter_map(|l| l.strip_prefix("start ").map(str::to_owned))
            .collect();
        // the rollbacks of `two` and `one`, newest first, after `finally`; none for the failed step
        assert_eq!(starts.len(), 6, "{starts:?}");
        assert_eq!(&starts[..4], ["one", "two", "three", "always"]);
        assert!(
            starts[4].contains("two") && starts[5].contains("one"),
            "{starts:?}"
        );
        assert!(
            f.log()
                .iter()
                .any(|l| l.starts_with("skip four (the run stopped before it")),
            "{:?}",
            f.log()
        );
        assert_eq!(outcomes.len(), 7);
    }

    #[test]
    fn a_cancel_stops_new_starts_but_finally_still_runs() {
        let p = plan(&format!(
            "name: t\nsteps:\n{}finally:\n{}",
            steps(&[("a", ""), ("b", ""), ("c", "")]),
            steps(&[("cleanup", "")])
        ));
        let f = Fake {
            cancels: Some("a"),
            ..Fake::default()
        };
        let cancel = CancelToken::new();
        let (status, ..) = run_all(&f, &p, bounds(1), &cancel);
        assert_eq!(status, Status::Cancelled);
        let log = f.log();
        assert!(log.contains(&"start cleanup".to_owned()), "{log:?}");
        assert!(!log.contains(&"start b".to_owned()), "{log:?}");
        assert!(log.iter().any(|l| l.starts_with("skip b")), "{log:?}");
    }

    #[test]
    fn a_false_when_skips_without_running() {
        let p = plan(&format!(
            "name: t\nsteps:\n{}",
            steps(&[("a", "    when: false\n"), ("b", "")])
        ));
        let f = Fake::default();
        let (status, ..) = run_all(&f, &p, bounds(1), &CancelToken::new());
        assert_eq!(status, Status::Succeeded);
        assert_eq!(
            f.log(),
            [
                "ready a",
                "skip a (`when` was false)",
                "ready b",
                "start b",
                "end b"
            ]
        );
    }

    #[test]
    fn a_reused_step_is_not_run_its_result_is_seen_and_it_is_rolled_back_on_failure() {
        let rollback = "    rollback: {tool: state, args: {action: get, key: k}}\n";
        let p = plan(&format!(
            "name: t\nsteps:\n{}",
            steps(&[("a", rollback), ("b", ""), ("c", "")])
        ));
        let f = Fake {
            reuse: vec!["a"],
            fail: vec!["c"],
            ..Fake::default()
        };
        let (status, outcomes, results, _) = run_all(&f, &p, bounds(1), &CancelToken::new());
        assert_eq!(status, Status::Failed);
        let log = f.log();
        assert_eq!(
            &log[..4],
            ["reuse a", "ready b", "start b", "end b"],
            "{log:?}"
        );
        assert!(!log.contains(&"start a".to_owned()), "{log:?}");
        assert_eq!(results["a"], "kept a");
        // the resumed run failed: the reused step's rollback runs, as a step of this run's
        assert!(
            log.iter().any(|l| l.starts_with("start a-rollback")),
            "{log:?}"
        );
        assert_eq!(outcomes[0].id, "a");
    }
}
