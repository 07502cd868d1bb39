//! The engine's retention: `prune_runs` (`infra runs prune`, MCP `evidence prune`) and
//! `auto_prune`, the bounded pass at the end of a run, both over `crate::retention::prune`.
//!
//! `auto_prune` costs a clock read when it is not due: each process asks the store at most once a
//! minute, and the store (`Store::claim_pass`) lets one pass start per minute whichever process asks,
//! so at most one pass a minute runs across all processes. A pass removes at most
//! [`AUTO_RUNS`] runs; the rest wait for the next pass or `infra runs prune`. It does nothing when
//! the policy file has errors or in read-only mode, or when nothing is past the retention
//! (`retention::due`). Otherwise, like a manual prune, it writes a durable `intent` audit record
//! (`front_end: auto`) before it deletes anything, and deletes nothing when that cannot be written;
//! then a `pruned` record with the counts. It never fails the run and reports to no one: why a pass
//! removed nothing is `auto_pass`'s answer, which `auto_prune` drops (the next pass, a minute later,
//! tries again; an unwritable log refuses the next run anyway).
//!
//! `prune_runs` is refused, and the refusal audited, when the policy file has errors (its retention
//! cannot be trusted), in read-only mode, and, when `gate` (MCP), unless the policy allows the
//! `destructive` effect of `evidence.prune` (a rule or `effects.destructive: allow`; by default it needs
//! an approval, which a front-end call cannot carry). A dry run is never refused. A prune writes a
//! durable `intent` audit record before it deletes anything, and a `pruned` record with the counts
//! after.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use super::Engine;
use crate::policy::{Decision, Level, Subject};
use crate::record::{AuditKind, AuditRecord};
use crate::retention::{Dirs, Limit, Pruned};

/// The most runs one automatic pass removes.
pub const AUTO_RUNS: usize = 200;
/// The least time between two automatic passes.
pub const AUTO_INTERVAL: Duration = Duration::from_secs(60);

/// Who asked for a prune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneBy {
    /// `infra runs prune`.
    Cli,
    /// MCP `evidence {action: prune}`: gated by the policy.
    Mcp,
}

impl PruneBy {
    fn as_str(self) -> &'static str {
        match self {
            PruneBy::Cli => "cli",
            PruneBy::Mcp => "mcp",
        }
    }
}

impl Engine {
    fn retention_dirs(&self) -> Dirs {
        Dirs {
            runs: self.config.runs_dir(),
        }
    }

    /// Removes (or with `dry_run` counts) every run and record past the policy's retention. Refused,
    /// and audited, as the module's header says.
    pub fn prune_runs(&self, dry_run: bool, by: PruneBy) -> Result<Pruned, String> {
        let base = AuditRecord {
            tool: Some("evidence".into()),
            action: Some("prune".into()),
            front_end: Some(by.as_str().into()),
            effect: Some("destructive".into()),
            ..AuditRecord::new(AuditKind::Intent)
        };
        let Some(retention) = self.policy.retention().cloned() else {
            let reason = format!(
                "the policy file `{}` has errors, so its retention is not known: fix it (`infra doctor` shows them) before pruning",
                self.policy.path.as_deref().unwrap_or("policy")
            );
            return Err(self.refuse_prune(&base, "policy_invalid", reason));
        };
        if !dry_run {
            let verdict = self.policy.decide_node(
                &Subject {
                    step: "prune",
                    tool: "evidence",
                    action: "prune",
                    effect: Level::Destructive,
                    target: None,
                    labels: &[],
                },
                crate::ctx::now_utc(),
            );
            let read_only = matches!(
                verdict.rule.as_str(),
                "INFRA_READ_ONLY" | "read_only" | "policy_invalid"
            );
            let gated = by == PruneBy::Mcp && verdict.decision != Decision::Allow;
            if (read_only && verdict.decision == Decision::Deny) || gated {
                let reason = if verdict.decision == Decision::Approve {
                    format!(
                        "{}; an MCP prune cannot carry an approval: allow it in the policy (`rules: [{{tool: evidence, action: prune, decision: allow}}]`), or run `infra runs prune`",
                        verdict.reason
                    )
                } else {
                    verdict.reason.clone()
                };
                return Err(self.refuse_prune(&base, &verdict.rule, reason));
            }
            return self.prune_audited(&base, &retention, crate::ctx::now_utc(), Limit::All);
        }
        let store = self.store().map_err(|e| e.to_string())?;
        crate::retention::prune(
            store,
            &self.retention_dirs(),
            &retention,
            crate::ctx::now_utc(),
            Limit::All,
            true,
        )
        .map_err(|e| e.to_string())
    }

    /// Writes `intent` (durable), then prunes, then audits what went (`pruned`, ok or failed). When
    /// the intent cannot be written, nothing is deleted.
    fn prune_audited(
        &self,
        intent: &AuditRecord,
        retention: &crate::policy::Retention,
        now: chrono::DateTime<chrono::Utc>,
        limit: Limit,
    ) -> Result<Pruned, String> {
        self.audit
            .record(intent, true)
            .map_err(|e| format!("{e}; nothing was pruned"))?;
        let store = self.store().map_err(|e| e.to_string())?;
        let out =
            crate::retention::prune(store, &self.retention_dirs(), retention, now, limit, false);
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                let _ = self.audit.record(
                    &AuditRecord {
                        ok: Some(false),
                        error: Some(json!({"kind": "failed", "message": e.to_string()})),
                        ..intent.as_kind(AuditKind::Pruned)
                    },
                    true,
                );
                return Err(e.to_string());
            }
        };
        let _ = self.audit.record(
            &AuditRecord {
                ok: Some(true),
                pruned: serde_json::to_value(&out).ok(),
                ..intent.as_kind(AuditKind::Pruned)
            },
            true,
        );
        Ok(out)
    }

    /// Audits a refused prune and gives its message.
    fn refuse_prune(&self, base: &AuditRecord, rule: &str, reason: String) -> String {
        let message = format!("{reason}; nothing was pruned");
        let rec = AuditRecord {
            policy: Some(json!({"decision": "deny", "rule": rule, "reason": reason})),
            error: Some(json!({"kind": "refused", "message": message})),
            ..base.as_kind(AuditKind::Refused)
        };
        match self.audit.record(&rec, true) {
            Ok(_) => message,
            Err(e) => format!("{message} ({e})"),
        }
    }

    /// The automatic pass, at the end of a run: see the module's header. Never fails the run.
    pub(super) fn auto_prune(&self) {
        static ASKED: Mutex<Option<Instant>> = Mutex::new(None);
        {
            let mut asked = ASKED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if asked.is_some_and(|t| t.elapsed() < AUTO_INTERVAL) {
                return;
            }
            *asked = Some(Instant::now());
        }
        // why a pass removed nothing goes to no one: a run does not fail for it (module header)
        let _ = self.auto_pass();
    }

    /// One automatic pass, once this process's minute is up: what it removed (`None`: not due, or
    /// nothing past the retention), or why it removed nothing.
    fn auto_pass(&self) -> Result<Option<Pruned>, String> {
        let Some(retention) = self.policy.retention().cloned() else {
            return Ok(None);
        };
        if self.policy.read_only() {
            return Ok(None);
        }
        let store = self.store().map_err(|e| e.to_string())?;
        let now = crate::ctx::now_utc();
        let stamp = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let due_before = now
            - chrono::Duration::from_std(AUTO_INTERVAL)
                .unwrap_or_else(|_| chrono::Duration::zero());
        if !store
            .claim_pass(&stamp(now), &stamp(due_before))
            .map_err(|e| e.to_string())?
        {
            return Ok(None);
        }
        if !crate::retention::due(store, &retention, now).map_err(|e| e.to_string())? {
            return Ok(None);
        }
        let intent = AuditRecord {
            tool: Some("evidence".into()),
            action: Some("prune".into()),
            front_end: Some("auto".into()),
            effect: Some("destructive".into()),
            ..AuditRecord::new(AuditKind::Intent)
        };
        self.prune_audited(&intent, &retention, now, Limit::Auto(AUTO_RUNS))
            .map(Some)
    }
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
