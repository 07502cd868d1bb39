//! One node of a run: skipped or failed before it started, or run with its `foreach` fan-out (up to
//! `max_parallel` items at once) and each item's retries.
//!
//! Items run in parallel when `max_parallel` is above 1, else in order, stopping at the first
//! failure. `attempts` applies the retry policy: `delay_ms`, multiplied by `backoff` after each
//! attempt, capped by `max_delay_ms`, times 0.5–1.5 with `jitter`; `until` rendered over `result`
//! (false: `until_not_met`, retried); `on` says which failures are retried (by default `error` and
//! `timeout`; `nonzero_exit` only when listed; `refused`, `cancelled`, `invalid_args`, `template`
//! and `audit_unavailable` never).

use crate::error::ErrorKind;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::*;
use crate::actions::ActionError;
use crate::ctx::{new_id, now_rfc3339};
use crate::plan::PlanNode;
use crate::record::evidence::{ErrorInfo, Record, Status};
use crate::record::{AuditKind, AuditRecord};

impl RunCx<'_> {
    pub(super) fn skip(&self, node: &PlanNode, reason: String) -> StepOutcome {
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

    pub(super) fn failed_before_start(&self, node: &PlanNode, e: ActionError) -> StepOutcome {
        let shown = self.engine.redactor.redact_value(&e.to_json());
        // the journal below keeps it too; a failure to audit it cannot make this step fail harder
        let _ = self.engine.audit.record(
            &AuditRecord {
                run_id: Some(self.run_id.to_owned()),
                step: Some(node.step.id.to_string()),
                tool: Some(node.action.tool.to_owned()),
                action: Some(node.action.name.to_owned()),
                error: Some(shown),
                ..AuditRecord::new(AuditKind::Rejected)
            },
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
                    kind: e.kind.to_string(),
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

    /// Runs one node: every `foreach` item (up to `max_parallel` at once), each with its retries.
    pub(super) fn run_node(
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
        let status = first_error
            .as_ref()
            .map_or(Status::Succeeded, ActionError::status);
        let duration_ms = ms(started.elapsed());
        if let Some(p) = self.progress {
            p(&Progress::Finished {
                step: id.clone(),
                status,
                duration_ms,
                error: first_error.as_ref().map(ToString::to_string),
            });
        }
        if status == Status::Succeeded
            && self.keep_results
            && node.phase() == dsl::Phase::Main
            && let Some(r) = &result
        {
            self.keep_result(node, r);
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
    pub(super) fn attempts(
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
            let mut r = self.attempt(node, args, index, item, attempt, cancel);
            let retryable = match &r {
                Ok(_) => false,
                Err(e) => match e.kind {
                    ErrorKind::UntilNotMet => true,
                    ErrorKind::Timeout => on.contains(&dsl::raw::RetryOn::Timeout),
                    ErrorKind::NonzeroExit => on.contains(&dsl::raw::RetryOn::NonzeroExit),
                    ErrorKind::Refused
                    | ErrorKind::Cancelled
                    | ErrorKind::AuditUnavailable
                    | ErrorKind::InvalidArgs
                    | ErrorKind::Template => false,
                    _ => on.contains(&dsl::raw::RetryOn::Error),
                },
            };
            if !retryable || attempt >= max || cancel.is_cancelled() {
                if let Err(e) = &mut r
                    && e.kind == ErrorKind::UntilNotMet
                    && let Some(until) = retry.and_then(|r| r.until.as_ref())
                {
                    e.message = format!("`until` stayed false after {attempt} attempt(s): {until}");
                }
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
}
