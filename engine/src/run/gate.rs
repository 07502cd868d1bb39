//! The one place a run is let through or refused before anything runs: the policy's decision on the
//! plan (`policy::Policy::decide`, over every node and rollback, with the target each names and that
//! target's labels), and for `approve` an approval of the rendered plan's digest
//! (`approval::consume`; a nested run is covered by its parent's when the parent's approved plan
//! carried the nested plan's definition digest, else it needs its own). A refusal carries the error
//! the run ends with and, for a missing approval, what a person needs to approve it (the rendered
//! plan, its effects and digest), which is also kept in the store as an approval request.
//!
//! An approval given in the MCP client (elicitation, only with the policy's `elicitation: true`) is
//! held here, in this engine's memory, never in the store: the MCP front end, after the person
//! accepted the plan in the client, hands it over with [`Engine::approve_elicited`], which audits it
//! (`approved`, `via: elicitation`). It is bound to one digest, used once, and good for
//! [`ELICITED_TTL_SECS`]; nothing an agent sends can make one, since no argument reaches this function.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::Engine;
use crate::approval::{self, Grant};
use crate::plan::{Plan, PlanNode, RenderedPlan};
use crate::policy::{Decision, Level, Subject, Verdict};
use crate::record::evidence::ErrorInfo;

/// How long an approval given in the MCP client waits for its run (the same call, made again at once).
pub const ELICITED_TTL_SECS: i64 = 120;

/// An approval a person gave in the MCP client for one digest.
#[derive(Debug)]
pub(crate) struct Elicited {
    id: String,
    approver: String,
    expires: chrono::DateTime<chrono::Utc>,
}

/// What the gate decided.
#[derive(Debug)]
pub(super) struct Gate {
    pub verdict: Verdict,
    /// The approval the run uses (its own, or its parent's).
    pub grant: Option<Grant>,
    /// Why the run does not start.
    pub refusal: Option<ErrorInfo>,
    /// For `approval_required`: the plan to approve.
    pub approval: Option<Value>,
}

/// The target a call names literally (`target`, or `profile_name` for `psql`).
fn target_of(args: &Value) -> Option<&str> {
    args.get("target")
        .or_else(|| args.get("profile_name"))
        .and_then(Value::as_str)
}

/// Which target a step reaches, as far as the plan can tell.
enum Reach<'a> {
    /// The one it names, or none.
    Named(Option<&'a str>),
    /// A value known only when it runs (a template of `state` or `steps`, a secret input): any.
    Any,
    /// `psql` with no target and no connection: the only target with a `postgres` section.
    OnlyPostgres,
}

fn reach<'a>(tool: &str, args: &'a Value) -> Reach<'a> {
    match target_of(args) {
        Some(t) if t.contains("{{") || t.starts_with("[secret:") => Reach::Any,
        Some(t) => Reach::Named(Some(t)),
        None if tool == "psql" && args.get("connection").is_none_or(Value::is_null) => {
            Reach::OnlyPostgres
        }
        None => Reach::Named(None),
    }
}

impl Engine {
    /// Records that a person approved the plan with `digest` in the MCP client (`approver` names the
    /// client and how), for this engine's next run of that plan only. Audited before it counts;
    /// refused when the policy does not allow approvals in the client. Answers the approval's id.
    pub fn approve_elicited(
        &self,
        digest: &str,
        effects: &str,
        approver: &str,
        note: &str,
    ) -> Result<String, String> {
        if !self.policy.elicitation() {
            return Err(
                "the policy does not let a person approve in the MCP client (`elicitation: true`)"
                    .into(),
            );
        }
        let now = crate::ctx::now_utc();
        let expires = now + chrono::Duration::seconds(ELICITED_TTL_SECS);
        let id = crate::ctx::new_id();
        let rec = crate::record::AuditRecord {
            front_end: Some("mcp".into()),
            plan_digest: Some(digest.to_owned()),
            effects: Some(effects.to_owned()),
            approval: Some(json!({
                "id": id, "approver": approver, "digest": digest, "via": "elicitation",
                "created_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "note": note,
            })),
            ..crate::record::AuditRecord::new(crate::record::AuditKind::Approved)
        };
        // not audited, not valid
        self.audit.record(&rec, true).map_err(|e| e.to_string())?;
        self.elicited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                digest.to_owned(),
                Elicited {
                    id: id.clone(),
                    approver: approver.to_owned(),
                    expires,
                },
            );
        Ok(id)
    }

    /// The approval given in the MCP client for `digest`, taken (used once) if it has not expired.
    fn take_elicited(&self, digest: &str) -> Option<Grant> {
        let e = self
            .elicited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(digest)?;
        (e.expires > crate::ctx::now_utc()).then_some(Grant {
            id: e.id,
            approver: e.approver,
            covers: Vec::new(),
        })
    }

    /// What the policy says of a rendered plan now (nothing is consumed or recorded): `infra plan`
    /// shows it, and the gate acts on it. `irreversible`: its steps above `read` are judged at that
    /// level (an irreversible intent).
    pub fn verdict(&self, plan: &Plan, rendered: &RenderedPlan, irreversible: bool) -> Verdict {
        let policy = &self.policy;
        // each node's rendered arguments, by step id (looked up once per node, not scanned)
        let by_id: std::collections::HashMap<&str, &Value> = rendered.json["nodes"]
            .as_array()
            .map(|ns| {
                ns.iter()
                    .filter_map(|n| Some((n["id"].as_str()?, &n["args"])))
                    .collect()
            })
            .unwrap_or_default();
        let rendered_args = |id: &str| -> Cow<'_, Value> {
            by_id
                .get(id)
                .map_or(Cow::Owned(Value::Null), |v| Cow::Borrowed(*v))
        };
        // rendered arguments are borrowed; a rollback's (not rendered) are read as written
        let mut nodes: Vec<(&PlanNode, Cow<'_, Value>)> = Vec::new();
        for n in plan.nodes() {
            nodes.push((n, rendered_args(n.step.id.as_str())));
            if let Some(rb) = &n.rollback {
                nodes.push((rb, Cow::Owned(Value::Object(rb.step.args_map().clone()))));
            }
        }
        // targets are read when a rule asks for a label, or a step's target is not in the plan
        let reaches: Vec<Reach<'_>> = nodes
            .iter()
            .map(|(n, args)| reach(n.action.tool, args))
            .collect();
        let targets = (policy.wants_labels()
            || reaches.iter().any(|r| !matches!(r, Reach::Named(_))))
        .then(|| crate::targets::Targets::load(&self.config.profiles_dir));
        let names: Vec<&str> = targets
            .iter()
            .flat_map(|t| t.targets.keys().map(String::as_str))
            .collect();
        let only_postgres = targets.as_ref().and_then(|t| {
            let mut with = t.targets.iter().filter(|(_, x)| x.postgres.is_some());
            match (with.next(), with.next()) {
                (Some((n, _)), None) => Some(n.as_str()),
                _ => None,
            }
        });
        let no_labels: Vec<String> = Vec::new();
        // a step whose target is known only when it runs is judged as reaching each target (and
        // none): the strictest of those decides
        let subjects = nodes.iter().zip(&reaches).flat_map(|((n, _), r)| {
            let reached: Vec<Option<&str>> = match r {
                Reach::Named(t) => vec![*t],
                Reach::OnlyPostgres => vec![only_postgres],
                Reach::Any => names.iter().map(|t| Some(*t)).chain([None]).collect(),
            };
            reached.into_iter().map(|target| Subject {
                step: n.step.id.as_str(),
                tool: n.action.tool,
                action: n.action.name,
                effect: match Level::from(n.effect) {
                    l if irreversible && l > Level::Read => Level::Irreversible,
                    l => l,
                },
                target,
                labels: target
                    .and_then(|t| targets.as_ref()?.targets.get(t))
                    .map_or(&no_labels, |t| &t.labels),
            })
        });
        policy.decide(subjects, crate::ctx::now_utc())
    }

    pub(super) fn gate(
        &self,
        plan: &Plan,
        rendered: &RenderedPlan,
        run_id: &str,
        parent: Option<&Grant>,
        irreversible: bool,
    ) -> Gate {
        let policy = &self.policy;
        let verdict = self.verdict(plan, rendered, irreversible);
        let mut gate = Gate {
            verdict,
            grant: None,
            refusal: None,
            approval: None,
        };
        let v = &gate.verdict;
        match v.decision {
            Decision::Allow => {}
            Decision::Deny => {
                gate.refusal = Some(ErrorInfo {
                    kind: "refused".into(),
                    message: format!("{} (policy rule `{}`); nothing was run", v.reason, v.rule),
                });
            }
            // the parent's approval, for a nested plan it carried (and so what that plan nests)
            Decision::Approve if parent.is_some_and(|p| p.covers(plan.definition_digest())) => {
                gate.grant = parent.map(|p| Grant {
                    covers: plan.nested_digests(),
                    ..p.clone()
                });
            }
            Decision::Approve => {
                let digest = &rendered.digest;
                let used = match self.take_elicited(digest) {
                    Some(g) => Ok(g),
                    None => self.store().map_err(|e| e.to_string()).and_then(|s| {
                        approval::consume(
                            s,
                            policy.approvers(),
                            digest,
                            run_id,
                            crate::ctx::now_utc(),
                        )
                    }),
                };
                // an approval this engine already used is refused even if the store forgot it
                let used = used.and_then(|g| {
                    let mut seen = self
                        .used_approvals
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if seen.insert(g.id.clone()) {
                        Ok(g)
                    } else {
                        Err(format!(
                            "approval {} was already used by this process",
                            &g.id[..8.min(g.id.len())]
                        ))
                    }
                });
                match used {
                    Ok(g) => {
                        gate.grant = Some(Grant {
                            covers: plan.nested_digests(),
                            ..g
                        })
                    }
                    Err(why) => {
                        let why = match parent {
                            Some(_) => format!(
                                "{why}; the approval of the run that nests it does not cover it: this runbook's text changed since that plan was approved, or the plan named it by a template"
                            ),
                            None => why,
                        };
                        let mut how = if policy.approvers().is_empty() {
                            "no approver is set up: a person runs `infra approvals keygen` and adds the key to the policy's `approvers`, then `infra approve <digest>`".to_owned()
                        } else {
                            format!(
                                "a person approves it at a terminal with `infra approve {digest}`, then the same call or run is made again"
                            )
                        };
                        if policy.elicitation() {
                            how.push_str("; or the person confirms it when an MCP client that supports elicitation asks");
                        }
                        gate.refusal = Some(ErrorInfo {
                            kind: "approval_required".into(),
                            message: format!(
                                "{} (policy rule `{}`): this plan needs an approval of digest {digest} ({why}); nothing was run",
                                v.reason, v.rule
                            ),
                        });
                        let request = approval::Request {
                            digest: digest.clone(),
                            plan: rendered.json.clone(),
                            effects: plan.effects().to_string(),
                            rule: v.rule.clone(),
                            reason: v.reason.clone(),
                            run_id: Some(run_id.to_owned()),
                            requested_at: crate::ctx::now_rfc3339(),
                        };
                        if let Ok(s) = self.store() {
                            let _ = approval::request(s, &request);
                        }
                        gate.approval = Some(json!({
                            "digest": digest,
                            "effects": plan.effects(),
                            "rule": v.rule,
                            "reason": v.reason,
                            "why": why,
                            "how": how,
                            "plan": rendered.json,
                        }));
                    }
                }
            }
        }
        gate
    }
}
