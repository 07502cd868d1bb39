//! One attempt of one item of one node: the opt-in policy, argument validation, the audit intent,
//! the action itself, the audit outcome and the evidence record.
//!
//! In order: credential arguments (`ActionSpec::secret_args`) join the redactor; journal
//! `node_started` (arguments redacted); a `local` action without `INFRA_UNSAFE_LOCAL` is refused
//! (audit `refused`, fsync'd); the rendered arguments are validated against the action's schema
//! again (audit `rejected` on error); audit `intent`, fsync'd when the node's effect is `write` or
//! above (if it cannot be written the call is refused); `actions::invoke` with a deadline from the
//! step's `timeout_ms` (or the call's `timeout_ms` argument) and the step's artifact directory and
//! URI (`<step>` or `<step>/<index>`); audit `outcome` (unwritable: `audit_incomplete`, the action
//! did run); the step's `retry.until` over the result (false: this attempt ends `until_not_met`
//! with the result kept, and so the journal says so); journal `node_finished` with status, duration, exit code, only the
//! `*_bytes`/`*_sha256`/`*_truncated` fields of the result, the artifact URIs and the redacted
//! error. A retry writes its artifacts under `<step>/attempt-<n>/`, so no attempt overwrites
//! another's and the journal's digests always match the files.

use crate::error::ErrorKind;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use dsl::Effect;
use dsl::template::{Mode, renderer};
use serde_json::{Map, Value};

use super::*;
use crate::actions::{self, ActionError, Call};
use crate::ctx::now_rfc3339;
use crate::plan::PlanNode;
use crate::record::evidence::{ErrorInfo, Record, Status};
use crate::record::{AuditKind, AuditRecord};

impl RunCx<'_> {
    /// One attempt: policy, argument validation, audit intent, the action, audit outcome, evidence.
    pub(super) fn attempt(
        &self,
        node: &PlanNode,
        args: &Map<String, Value>,
        index: Option<usize>,
        item: &Value,
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
        let audit_base = AuditRecord {
            run_id: Some(self.run_id.to_owned()),
            step: Some(step.clone()),
            attempt: Some(attempt),
            tool: Some(spec.tool.to_owned()),
            action: Some(spec.name.to_owned()),
            effect: Some(node.effect.to_string()),
            args: Some(shown_args.clone()),
            ..AuditRecord::new(AuditKind::Intent)
        };
        let result = (|| {
            if spec.unsafe_local && !engine.config.unsafe_local {
                let e = ActionError::new(
                    ErrorKind::Refused,
                    format!("`{}` is off: local processes and files need INFRA_UNSAFE_LOCAL=1", spec.qualified()),
                )
                .hint("set INFRA_UNSAFE_LOCAL=1 in the environment of infra to allow it; nothing was run");
                let mut rec = audit_base.as_kind(AuditKind::Refused);
                rec.error = Some(engine.redactor.redact_value(&e.to_json()));
                rec.policy =
                    Some(serde_json::json!({"decision": "deny", "rule": "INFRA_UNSAFE_LOCAL"}));
                engine
                    .audit
                    .record(&rec, true)
                    .map_err(|a| ActionError::new(ErrorKind::AuditUnavailable, a.to_string()))?;
                return Err(e);
            }
            let value = Value::Object(args.clone());
            let validator = actions::validator(spec);
            // the errors are gathered only for arguments that are invalid (`is_valid` stops early)
            let valid = validator.is_valid(&value);
            let errors: Vec<String> = (!valid)
                .then(|| validator.iter_errors(&value))
                .into_iter()
                .flatten()
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
                    ErrorKind::InvalidArgs,
                    format!(
                        "rendered arguments of `{}` are invalid: {}",
                        spec.qualified(),
                        errors.join("; ")
                    ),
                );
                let mut rec = audit_base.as_kind(AuditKind::Rejected);
                rec.error = Some(engine.redactor.redact_value(&e.to_json()));
                engine
                    .audit
                    .record(&rec, false)
                    .map_err(|a| ActionError::new(ErrorKind::AuditUnavailable, a.to_string()))?;
                return Err(e);
            }
            engine
                .audit
                .record(&audit_base, node.effect >= Effect::Write)
                .map_err(|a| {
                    ActionError::new(
                        ErrorKind::AuditUnavailable,
                        format!("{a}; the call was refused"),
                    )
                })?;
            let timeout = node
                .step
                .timeout_ms
                .or_else(|| args.get("timeout_ms").and_then(Value::as_u64));
            // each attempt has its own artifacts: the first at `<step>[/<index>]`, a retry beside
            // them at `<step>[/<index>]/attempt-<n>`, so every recorded digest matches its bytes
            let mut step_dir_name = match index {
                Some(i) => format!("{step}/{i}"),
                None => step.clone(),
            };
            if attempt > 1 {
                step_dir_name = format!("{step_dir_name}/attempt-{attempt}");
            }
            let advanced = |message: &str| {
                if let Some(p) = self.progress {
                    p(&Progress::Advanced {
                        step: step.clone(),
                        message: message.to_owned(),
                    });
                }
            };
            let call = Call {
                host: engine,
                args,
                cancel,
                deadline: timeout.map(|t| Instant::now() + Duration::from_millis(t)),
                dir: self.dir.join(&step_dir_name),
                uri_base: format!("{}/{}", self.uri_base, step_dir_name),
                depth: self.depth,
                grant: self.grant.as_ref(),
                progress: self
                    .progress
                    .is_some()
                    .then_some(actions::Advance(&advanced)),
            };
            let r = actions::invoke(spec, &call);
            let mut outcome = audit_base.as_kind(AuditKind::Outcome);
            outcome.ok = Some(r.is_ok());
            if let Err(e) = &r {
                outcome.error = Some(engine.redactor.redact_value(&e.to_json()));
            }
            outcome.duration_ms = Some(ms(started.elapsed()));
            // the effect happened; a failure to record its outcome is kept in the evidence
            if let Err(a) = engine.audit.record(&outcome, false) {
                return Err(ActionError::new(
                    ErrorKind::AuditIncomplete,
                    format!("the call ran but its outcome could not be audited: {a}"),
                ));
            }
            r
        })();
        let result = match (
            result,
            node.step.retry.as_ref().and_then(|r| r.until.as_ref()),
        ) {
            (Ok(v), Some(until)) => {
                let mut ctx = self.context(node, &HashMap::new(), index.map(|i| (item, i)));
                ctx["result"] = v.clone();
                match renderer().render(until, Mode::Plain, &ctx) {
                    Ok(t) if truthy(&t) => Ok(v),
                    Ok(_) => {
                        let last = node.step.retry.as_ref().map_or(1, |r| r.attempts.max(1));
                        Err(ActionError::new(
                            ErrorKind::UntilNotMet,
                            if attempt >= last {
                                format!("`until` stayed false after {attempt} attempt(s): {until}")
                            } else {
                                format!("`until` is false after attempt {attempt}")
                            },
                        )
                        .with_result(v))
                    }
                    Err(e) => Err(ActionError::new(ErrorKind::Template, e.message)),
                }
            }
            (r, _) => r,
        };
        let (status, error, outputs, artifacts, exit_code) = match &result {
            Ok(v) => (
                Status::Succeeded,
                None,
                v,
                artifact_uris(v),
                v.get("exit_code").and_then(Value::as_i64),
            ),
            Err(e) => {
                let st = e.status();
                let empty = &Value::Null;
                let v = e.result.as_ref().unwrap_or(empty);
                (
                    st,
                    Some(ErrorInfo {
                        kind: e.kind.to_string(),
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
}

/// Byte counts and digests from a result, and a nested run's `run_id` and `runbook`, for the
/// evidence (never the output itself).
pub(super) fn output_summary(v: &Value) -> Value {
    let Some(o) = v.as_object() else {
        return Value::Null;
    };
    let nested = o.contains_key("run_id") && o.contains_key("runbook");
    let kept: Map<String, Value> = o
        .iter()
        .filter(|(k, _)| {
            k.ends_with("_bytes")
                || k.ends_with("_sha256")
                || k.ends_with("_truncated")
                || (nested && matches!(k.as_str(), "run_id" | "runbook"))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if kept.is_empty() {
        Value::Null
    } else {
        Value::Object(kept)
    }
}

pub(super) fn artifact_uris(v: &Value) -> Vec<String> {
    v.get("artifacts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.get("uri").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
